import Foundation
import Synchronization

/// A loopback TCP proxy that a chaos run can cut and heal: the "port block" between one
/// agent and Redis. Cut: every open connection is shut down and new ones are closed on
/// accept, which an agent sees as Redis being unreachable. One thread per connection;
/// the few connections of one agent make that cheap.
public final class TCPProxy: Sendable {
    public let upstreamHost: String
    public let upstreamPort: Int
    private let listener = Atomic<Int32>(-1)
    private let boundPort = Atomic<Int>(0)
    private let cutFlag = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    /// Open client/upstream sockets. A pump thread removes its pair under this lock before
    /// closing them, so `cut()` never shuts down a descriptor number that was reused.
    private let open = Mutex<[Int32: Int32]>([:])

    public init(upstreamHost: String = "127.0.0.1", upstreamPort: Int) {
        self.upstreamHost = upstreamHost
        self.upstreamPort = upstreamPort
    }

    public var port: Int { boundPort.load(ordering: .relaxed) }
    public var isCut: Bool { cutFlag.load(ordering: .relaxed) }

    /// Listens on 127.0.0.1 (port 0 picks one) and returns the port.
    @discardableResult
    public func start(port: Int = 0) throws -> Int {
        // CLOEXEC everywhere: a child spawned meanwhile (redis-server, an agent) would otherwise hold
        // the sockets open, and closing them here would no longer tell the other side.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ProxyError("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = Self.loopback(port: port)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(fd, 128) == 0 else {
            let e = String(cString: strerror(errno))
            close(fd)
            throw ProxyError("bind/listen 127.0.0.1:\(port): \(e)")
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        boundPort.store(Int(UInt16(bigEndian: bound.sin_port)), ordering: .relaxed)
        listener.store(fd, ordering: .relaxed)
        let t = Thread { self.acceptLoop(fd) }
        t.name = "proxy-accept"
        t.start()
        return port == 0 ? self.port : port
    }

    /// Drops every connection and refuses new ones until `heal()`.
    public func cut() {
        cutFlag.store(true, ordering: .relaxed)
        open.withLock { pairs in
            for (a, b) in pairs { shutdown(a, Int32(SHUT_RDWR)); shutdown(b, Int32(SHUT_RDWR)) }
        }
    }

    public func heal() { cutFlag.store(false, ordering: .relaxed) }

    /// Stops forwarding without closing anything, like a host that vanished from the network: both ends
    /// keep their sockets and hear nothing, so only timeouts and leases can tell. `thaw()` resumes.
    public func freeze() { frozenFlag.store(true, ordering: .relaxed) }
    public func thaw() { frozenFlag.store(false, ordering: .relaxed) }
    public var isFrozen: Bool { frozenFlag.load(ordering: .relaxed) }
    private let frozenFlag = Atomic<Bool>(false)

    public func stop() {
        stopped.store(true, ordering: .relaxed)
        cut()
        let fd = listener.exchange(-1, ordering: .relaxed)
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)); close(fd) }
    }

    private func acceptLoop(_ fd: Int32) {
        while !stopped.load(ordering: .relaxed) {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, 200) <= 0 { continue }
            let client = accept(fd, nil, nil)
            if client >= 0 { _ = fcntl(client, F_SETFD, FD_CLOEXEC) }
            if client < 0 { if stopped.load(ordering: .relaxed) { return }; continue }
            if isCut { close(client); continue }
            let upstream = connectUpstream()
            guard upstream >= 0 else { close(client); continue }
            open.withLock { $0[client] = upstream }
            let t = Thread { self.pump(client, upstream) }
            t.name = "proxy-pump"
            t.start()
        }
    }

    private func connectUpstream() -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return -1 }
        var addr = Self.loopback(port: upstreamPort)
        if upstreamHost != "127.0.0.1" { inet_pton(AF_INET, upstreamHost, &addr.sin_addr) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 { close(fd); return -1 }
        return fd
    }

    /// Copies both ways until either side closes or the proxy is cut.
    private func pump(_ a: Int32, _ b: Int32) {
        var buf = [UInt8](repeating: 0, count: 64 * 1024)
        var fds = [pollfd(fd: a, events: Int16(POLLIN), revents: 0), pollfd(fd: b, events: Int16(POLLIN), revents: 0)]
        loop: while !isCut && !stopped.load(ordering: .relaxed) {
            if isFrozen { usleep(20_000); continue }
            fds[0].revents = 0; fds[1].revents = 0
            let n = poll(&fds, 2, 200)
            if n < 0 && errno != EINTR { break }
            if n <= 0 { continue }
            for (i, p) in fds.enumerated() where p.revents != 0 {
                let from = i == 0 ? a : b, to = i == 0 ? b : a
                let r = buf.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                if r <= 0 { break loop }
                var off = 0
                while off < r {
                    // MSG_NOSIGNAL: a peer gone mid-write must not SIGPIPE the whole chaos process.
                    let w = buf.withUnsafeBytes { send(to, $0.baseAddress! + off, r - off, Int32(MSG_NOSIGNAL)) }
                    if w <= 0 { break loop }
                    off += w
                }
            }
        }
        open.withLock { pairs in
            pairs.removeValue(forKey: a)
            close(a); close(b)
        }
    }

    static func loopback(port: Int) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }
}

public struct ProxyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}
