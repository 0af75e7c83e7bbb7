import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A parsed HTTP/1.1 request.
public struct HTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    /// Header names lower-cased.
    public var headers: [String: String]
    public var body: Data
    public var remoteAddress: String
}

/// Writes a streamed (chunked) response body. Returns false once the client has gone.
public final class HTTPChunkWriter: Sendable {
    private let fd: Int32
    private let alive = Atomic<Bool>(true)
    init(fd: Int32) { self.fd = fd }

    @discardableResult
    public func write(_ data: Data) -> Bool {
        guard alive.load(ordering: .relaxed), !data.isEmpty else { return alive.load(ordering: .relaxed) }
        var chunk = Data(String(data.count, radix: 16).utf8)
        chunk.append(contentsOf: [13, 10])
        chunk.append(data)
        chunk.append(contentsOf: [13, 10])
        if !MiniHTTPServer.sendAll(fd, chunk) { alive.store(false, ordering: .relaxed) }
        return alive.load(ordering: .relaxed)
    }

    @discardableResult
    public func write(_ text: String) -> Bool { write(Data(text.utf8)) }

    /// Drops the connection without the terminating chunk (simulates a cut stream).
    public func abort() { alive.store(false, ordering: .relaxed); shutdown(fd, Int32(SHUT_RDWR)) }
    var isAlive: Bool { alive.load(ordering: .relaxed) }
}

public enum HTTPResponse: Sendable {
    case full(status: Int, headers: [String: String], body: Data)
    /// Chunked body produced by the closure on the connection's thread.
    case stream(status: Int, headers: [String: String], body: @Sendable (HTTPChunkWriter) -> Void)
    /// Close the connection without answering (fault injection).
    case drop

    public static func text(_ s: String, status: Int = 200, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        .full(status: status, headers: ["Content-Type": contentType], body: Data(s.utf8))
    }
    public static func json(_ s: String, status: Int = 200) -> HTTPResponse {
        .full(status: status, headers: ["Content-Type": "application/json"], body: Data(s.utf8))
    }
    public static func json<T: Encodable>(encoding value: T, status: Int = 200) -> HTTPResponse {
        let s = (try? JSONCoding.encodeString(value)) ?? "{}"
        return json(s, status: status)
    }
}

public typealias HTTPHandler = @Sendable (HTTPRequest) -> HTTPResponse

/// A small blocking HTTP/1.1 server for /metrics, /healthz, the fakes and the
/// console: one accept thread, one thread per connection, `Connection: close`.
/// Loopback traffic and a handful of clients do not need an event loop, and it
/// keeps swift-nio out of the agent's footprint and the build.
public final class MiniHTTPServer: Sendable {
    public let host: String
    private let requestedPort: Int
    private let handler: HTTPHandler
    private let maxBodyBytes: Int
    private let state = Mutex<(fd: Int32, port: Int, stopped: Bool)>((-1, 0, false))

    public init(host: String = "127.0.0.1", port: Int, maxBodyBytes: Int = 64 << 20, handler: @escaping HTTPHandler) {
        self.host = host; self.requestedPort = port; self.handler = handler; self.maxBodyBytes = maxBodyBytes
    }

    /// `host:port` → (host, port). Accepts `:9101` and `9101` as loopback.
    public static func parseListen(_ s: String) throws -> (String, Int) {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        let hostPart = parts.count > 1 ? parts.dropLast().joined(separator: ":") : "127.0.0.1"
        guard let port = Int(parts.last ?? ""), (0...65535).contains(port) else {
            throw InputError(file: "--listen", problem: "'\(s)' is not host:port")
        }
        return (hostPart.isEmpty ? "127.0.0.1" : hostPart, port)
    }

    public var port: Int { state.withLock { $0.port } }

    /// Binds and starts serving; returns the bound port (useful with port 0).
    @discardableResult
    public func start() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw HTTPServerError("socket(): \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(requestedPort).bigEndian)
        let h = host == "localhost" ? "127.0.0.1" : host
        guard inet_pton(AF_INET, h, &addr.sin_addr) == 1 else {
            close(fd)
            throw HTTPServerError("cannot listen on '\(host)': not an IPv4 address")
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let msg = String(cString: strerror(errno))
            close(fd)
            throw HTTPServerError("cannot listen on \(host):\(requestedPort): \(msg)")
        }
        listen(fd, 128)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        let port = Int(UInt16(bigEndian: bound.sin_port))
        state.withLock { $0 = (fd, port, false) }
        let t = Thread { [self] in self.acceptLoop(fd) }
        t.name = "http-accept-\(port)"
        t.start()
        return port
    }

    public func stop() {
        let fd = state.withLock { s -> Int32 in
            let fd = s.fd
            s.stopped = true
            s.fd = -1
            return fd
        }
        // Only shut down here: the accept thread closes the fd when it leaves. Closing
        // it here would let the next socket() reuse the number while that thread is
        // between accept() calls, and it would then serve another server's clients.
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop(_ fd: Int32) {
        defer { close(fd) }
        while true {
            if state.withLock({ $0.stopped }) { return }
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let c = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(fd, $0, &len) }
            }
            if c < 0 {
                if errno == EINTR { continue }
                if state.withLock({ $0.stopped }) { return }
                if errno == EMFILE || errno == ENFILE { Thread.sleep(forTimeInterval: 0.05); continue }
                return
            }
            var ip = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &addr.sin_addr, &ip, socklen_t(INET_ADDRSTRLEN))
            let remote = String(cString: ip)
            let t = Thread { [self] in
                self.serve(c, remote: remote)
                close(c)
            }
            t.start()
        }
    }

    private func serve(_ fd: Int32, remote: String) {
        var tv = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard let req = readRequest(fd, remote: remote) else {
            _ = Self.sendAll(fd, Self.head(400, ["Content-Type": "text/plain"], length: 12) + Data("bad request\n".utf8))
            return
        }
        switch handler(req) {
        case .drop:
            return
        case .full(let status, let headers, let body):
            var out = Self.head(status, headers, length: body.count)
            if req.method != "HEAD" { out.append(body) }
            _ = Self.sendAll(fd, out)
        case .stream(let status, let headers, let body):
            var h = headers
            h["Transfer-Encoding"] = "chunked"
            guard Self.sendAll(fd, Self.head(status, h, length: nil)) else { return }
            let writer = HTTPChunkWriter(fd: fd)
            body(writer)
            if writer.isAlive { _ = Self.sendAll(fd, Data("0\r\n\r\n".utf8)) }
        }
    }

    private func readRequest(_ fd: Int32, remote: String) -> HTTPRequest? {
        var buf = Data()
        var tmp = [UInt8](repeating: 0, count: 16384)
        var headerEnd: Int?
        while headerEnd == nil {
            let n = recv(fd, &tmp, tmp.count, 0)
            if n <= 0 { return nil }
            buf.append(contentsOf: tmp[0..<n])
            if let r = buf.range(of: Data([13, 10, 13, 10])) { headerEnd = r.upperBound }
            if buf.count > 1 << 20 && headerEnd == nil { return nil }
        }
        let headText = String(decoding: buf[buf.startIndex..<(buf.startIndex + headerEnd! - 4)], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        var headers: [String: String] = [:]
        for l in lines {
            guard let colon = l.firstIndex(of: ":") else { continue }
            headers[l[..<colon].lowercased()] = l[l.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(buf[(buf.startIndex + headerEnd!)...])
        let length = Int(headers["content-length"] ?? "0") ?? 0
        guard length <= maxBodyBytes else { return nil }
        while body.count < length {
            let n = recv(fd, &tmp, min(tmp.count, length - body.count), 0)
            if n <= 0 { return nil }
            body.append(contentsOf: tmp[0..<n])
        }
        let target = String(requestLine[1])
        let comps = URLComponents(string: target)
        var query: [String: String] = [:]
        for item in comps?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        return HTTPRequest(method: String(requestLine[0]), path: comps?.path ?? target, query: query,
                           headers: headers, body: body, remoteAddress: remote)
    }

    static func head(_ status: Int, _ headers: [String: String], length: Int?) -> Data {
        var s = "HTTP/1.1 \(status) \(reason(status))\r\n"
        for (k, v) in headers.sorted(by: { $0.key < $1.key }) { s += "\(k): \(v)\r\n" }
        if let length { s += "Content-Length: \(length)\r\n" }
        s += "Connection: close\r\n\r\n"
        return Data(s.utf8)
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 422: return "Unprocessable Entity"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }

    static func sendAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL))
                if n <= 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return true
        }
    }
}

public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}
