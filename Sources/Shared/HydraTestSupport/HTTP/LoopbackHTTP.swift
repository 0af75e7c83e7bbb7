import Foundation
import Glibc

/// A blocking HTTP/1.1 client on 127.0.0.1 that sends exactly the bytes it is given (malformed
/// heads, bare LFs, slow trickles): what the server-hardening tests need and URLSession refuses.
public enum LoopbackHTTP {
    public static func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        precondition(fd >= 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { close(fd); return -1 }
        return fd
    }

    @discardableResult
    public static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 { return false }
                off += n
            }
            return true
        }
    }

    @discardableResult
    public static func send(_ fd: Int32, _ s: String) -> Bool { send(fd, Array(s.utf8)) }

    /// Reads until the server closes or the deadline passes; `closed` says which.
    public static func readReply(_ fd: Int32, timeout: Double, maxBytes: Int = 1 << 20) -> (text: String, closed: Bool) {
        let end = Date().addingTimeInterval(timeout)
        var out = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 8192)
        while Date() < end && out.count < maxBytes {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&p, 1, Int32(max(1, end.timeIntervalSinceNow * 1000)))
            if r <= 0 { continue }
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { return (String(decoding: out, as: UTF8.self), true) }
            out.append(contentsOf: buf[0..<n])
        }
        return (String(decoding: out, as: UTF8.self), false)
    }

    public static func request(_ port: Int, _ raw: String, timeout: Double = 10) -> String {
        let fd = connect(port)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        send(fd, raw)
        return readReply(fd, timeout: timeout).text
    }
}
