import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
import HydraCore
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
    public init(method: String, path: String, query: [String: String], headers: [String: String], body: Data, remoteAddress: String) {
        self.method = method; self.path = path; self.query = query; self.headers = headers; self.body = body; self.remoteAddress = remoteAddress
    }
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

/// What one MiniHTTPServer accepts. Every limit is enforced before the handler
/// runs, so a client can cost at most `maxConnections` threads, each for at most
/// `requestTimeoutS` plus the handler's own time, and `maxHeaderBytes` +
/// `maxBodyBytes` of memory.
public struct HTTPServerLimits: Sendable {
    /// Connections served at once; one more is answered 503 and closed by the accept thread.
    public var maxConnections: Int
    /// Request line and headers together.
    public var maxHeaderBytes: Int
    public var maxHeaderCount: Int
    /// Default body cap, checked against Content-Length before any body byte is read.
    public var maxBodyBytes: Int
    /// A route's own cap (method, path) → bytes, or nil for `maxBodyBytes`.
    public var bodyLimit: (@Sendable (_ method: String, _ path: String) -> Int?)?
    /// From accept to the end of the body, in total: a client that trickles bytes is cut off, whatever the pace.
    public var requestTimeoutS: Double
    /// Per send(): a client that stops reading the response does not pin a thread.
    public var writeTimeoutS: Double

    public init(maxConnections: Int = 64, maxHeaderBytes: Int = 16 << 10, maxHeaderCount: Int = 100, maxBodyBytes: Int = 1 << 20,
                bodyLimit: (@Sendable (_ method: String, _ path: String) -> Int?)? = nil,
                requestTimeoutS: Double = 10, writeTimeoutS: Double = 30) {
        self.maxConnections = max(1, maxConnections); self.maxHeaderBytes = max(256, maxHeaderBytes)
        self.maxHeaderCount = max(1, maxHeaderCount); self.maxBodyBytes = max(0, maxBodyBytes); self.bodyLimit = bodyLimit
        self.requestTimeoutS = max(0.05, requestTimeoutS); self.writeTimeoutS = max(0.05, writeTimeoutS)
    }

    /// `HYDRA_HTTP_MAX_CONNECTIONS`, `HYDRA_HTTP_MAX_BODY_BYTES`, `HYDRA_HTTP_MAX_HEADER_BYTES` and
    /// `HYDRA_HTTP_REQUEST_TIMEOUT_S` override the given defaults; unparsable values are ignored with the defaults kept.
    public static func fromEnvironment(_ base: HTTPServerLimits = HTTPServerLimits(),
                                       environment: [String: String] = ProcessInfo.processInfo.environment) -> HTTPServerLimits {
        var l = base
        if let v = environment["HYDRA_HTTP_MAX_CONNECTIONS"].flatMap({ Int($0) }), v > 0 { l.maxConnections = v }
        if let v = environment["HYDRA_HTTP_MAX_BODY_BYTES"].flatMap({ Int($0) }), v >= 0 { l.maxBodyBytes = v }
        if let v = environment["HYDRA_HTTP_MAX_HEADER_BYTES"].flatMap({ Int($0) }), v >= 256 { l.maxHeaderBytes = v }
        if let v = environment["HYDRA_HTTP_REQUEST_TIMEOUT_S"].flatMap({ Double($0) }), v > 0, v.isFinite { l.requestTimeoutS = v }
        return l
    }
}

/// Why the server answered a request itself instead of passing it to the handler.
public enum HTTPRejection: String, Sendable, CaseIterable {
    case tooManyConnections = "connections"
    case headerTooLarge = "header_too_large"
    case bodyTooLarge = "body_too_large"
    case lengthRequired = "length_required"
    case timeout
    case badRequest = "bad_request"

    var status: Int {
        switch self {
        case .tooManyConnections: return 503
        case .headerTooLarge: return 431
        case .bodyTooLarge: return 413
        case .lengthRequired: return 411
        case .timeout: return 408
        case .badRequest: return 400
        }
    }
}

/// A small blocking HTTP/1.1 server for /metrics, /healthz, the fakes and the
/// console: one accept thread, one thread per connection up to
/// `limits.maxConnections`, `Connection: close` (no keep-alive, so no idle
/// connection outlives its request deadline). Loopback traffic and a handful of
/// clients do not need an event loop, and it keeps swift-nio out of the agent's
/// footprint and the build.
public final class MiniHTTPServer: Sendable {
    public let host: String
    public let limits: HTTPServerLimits
    private let requestedPort: Int
    private let handler: HTTPHandler
    private let onReject: (@Sendable (HTTPRejection) -> Void)?
    private let state = Mutex<(fd: Int32, port: Int, stopped: Bool)>((-1, 0, false))
    private let active = Atomic<Int>(0)
    private let peak = Atomic<Int>(0)
    private let rejected = Mutex<[HTTPRejection: Int]>([:])

    /// `onReject` runs on the accept or connection thread for every request the server refused itself (a metrics hook).
    public init(host: String = "127.0.0.1", port: Int, limits: HTTPServerLimits = HTTPServerLimits(),
                onReject: (@Sendable (HTTPRejection) -> Void)? = nil, handler: @escaping HTTPHandler) {
        self.host = host; self.requestedPort = port; self.handler = handler; self.limits = limits; self.onReject = onReject
    }

    public convenience init(host: String = "127.0.0.1", port: Int, maxBodyBytes: Int, handler: @escaping HTTPHandler) {
        self.init(host: host, port: port, limits: HTTPServerLimits(maxBodyBytes: maxBodyBytes), handler: handler)
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
    /// Connections being served now.
    public var activeConnections: Int { active.load(ordering: .relaxed) }
    /// The most connections ever served at once (never above `limits.maxConnections`).
    public var peakConnections: Int { peak.load(ordering: .relaxed) }
    /// Requests refused by the server itself, by reason.
    public var rejections: [HTTPRejection: Int] { rejected.withLock { $0 } }

    /// Registers `hydra_http_rejected_total{server,reason}` and returns an `onReject` hook that counts into it.
    public static func rejectionCounter(_ registry: MetricsRegistry, server: String) -> @Sendable (HTTPRejection) -> Void {
        registry.register("hydra_http_rejected_total", .counter,
                          help: "HTTP requests refused before the handler (connection cap, header/body size, request deadline, malformed).",
                          labels: ["server", "reason"])
        for r in HTTPRejection.allCases { registry.add("hydra_http_rejected_total", [server, r.rawValue], 0) }
        return { registry.add("hydra_http_rejected_total", [server, $0.rawValue]) }
    }

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

    private func count(_ r: HTTPRejection) {
        rejected.withLock { $0[r, default: 0] += 1 }
        onReject?(r)
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
                if errno == EINTR || errno == ECONNABORTED { continue }
                if state.withLock({ $0.stopped }) { return }
                if errno == EMFILE || errno == ENFILE { Thread.sleep(forTimeInterval: 0.05); continue }
                return
            }
            let accepted = DispatchTime.now().uptimeNanoseconds
            // Reserve the slot before the thread exists, so the count can never run ahead of the cap.
            let now = active.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
            if now > limits.maxConnections {
                active.wrappingSubtract(1, ordering: .acquiringAndReleasing)
                count(.tooManyConnections)
                // Non-blocking: the accept thread must never wait on a client.
                let reply = Self.errorReply(.tooManyConnections, "too many connections; try again shortly\n")
                reply.withUnsafeBytes { raw in _ = send(c, raw.baseAddress!, raw.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                shutdown(c, Int32(SHUT_WR))
                close(c)
                continue
            }
            var seen = peak.load(ordering: .relaxed)
            while now > seen {
                let (exchanged, original) = peak.compareExchange(expected: seen, desired: now, ordering: .relaxed)
                if exchanged { break }
                seen = original
            }
            var ip = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            inet_ntop(AF_INET, &addr.sin_addr, &ip, socklen_t(INET_ADDRSTRLEN))
            let remote = String(cString: ip)
            let t = Thread { [self] in
                self.serve(c, remote: remote, deadline: accepted + UInt64(limits.requestTimeoutS * 1e9))
                close(c)
                active.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            }
            t.start()
        }
    }

    static func errorReply(_ r: HTTPRejection, _ message: String) -> Data {
        head(r.status, ["Content-Type": "text/plain; charset=utf-8"], length: message.utf8.count) + Data(message.utf8)
    }

    private func serve(_ fd: Int32, remote: String, deadline: UInt64) {
        let whole = limits.writeTimeoutS.rounded(.down)
        var tv = timeval(tv_sec: .init(whole), tv_usec: .init((limits.writeTimeoutS - whole) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let req: HTTPRequest
        switch readRequest(fd, remote: remote, deadline: deadline) {
        case .success(let r): req = r
        case .failure(let refusal):
            if let reason = refusal.reason {
                count(reason)
                _ = Self.sendAll(fd, Self.errorReply(reason, refusal.message + "\n"))
                // Reads what the client is still sending for a moment, so the close is a FIN and the reply is not lost to a reset.
                Self.drain(fd, until: min(deadline, DispatchTime.now().uptimeNanoseconds + 200_000_000))
            }
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

    struct Refusal: Error {
        /// nil: the client went away; nothing to answer.
        var reason: HTTPRejection?
        var message: String
        static let gone = Refusal(reason: nil, message: "")
    }

    /// Waits for data until `deadline` (uptime ns) and reads it; nil on timeout, 0 when the peer closed.
    static func recvBefore(_ fd: Int32, _ buf: inout [UInt8], max: Int, deadline: UInt64) -> Int? {
        while true {
            let now = DispatchTime.now().uptimeNanoseconds
            guard now < deadline else { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ms = Int32(clamping: (deadline - now + 999_999) / 1_000_000)
            let r = poll(&p, 1, ms)
            if r < 0 { if errno == EINTR { continue }; return 0 }
            if r == 0 { continue }
            let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, Swift.min(max, $0.count), Int32(MSG_DONTWAIT)) }
            if n < 0 { if errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK { continue }; return 0 }
            return n
        }
    }

    static func drain(_ fd: Int32, until deadline: UInt64) {
        var tmp = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<256 {
            guard let n = recvBefore(fd, &tmp, max: tmp.count, deadline: deadline), n > 0 else { return }
        }
    }

    private func readRequest(_ fd: Int32, remote: String, deadline: UInt64) -> Result<HTTPRequest, Refusal> {
        var buf = [UInt8]()
        var tmp = [UInt8](repeating: 0, count: 16384)
        var headerEnd: Int?
        var scanFrom = 0
        while headerEnd == nil {
            guard let n = Self.recvBefore(fd, &tmp, max: tmp.count, deadline: deadline) else {
                return .failure(Refusal(reason: .timeout, message: "request not complete within \(limits.requestTimeoutS) s"))
            }
            if n == 0 { return .failure(.gone) }
            buf.append(contentsOf: tmp[0..<n])
            if let end = Self.findHeaderEnd(buf, from: scanFrom) { headerEnd = end } else { scanFrom = max(0, buf.count - 3) }
            if (headerEnd ?? buf.count) > limits.maxHeaderBytes {
                return .failure(Refusal(reason: .headerTooLarge, message: "request headers larger than \(limits.maxHeaderBytes) bytes"))
            }
        }
        let bad = { (why: String) in Result<HTTPRequest, Refusal>.failure(Refusal(reason: .badRequest, message: "bad request: " + why)) }
        let headBytes = buf[0..<(headerEnd! - 4)]
        // Control bytes (NUL among them) have no place in a request head; refusing them here keeps every handler's view clean.
        if headBytes.contains(where: { ($0 < 0x20 && $0 != 0x0D && $0 != 0x0A && $0 != 0x09) || $0 == 0x7F }) { return bad("control character in the request head") }
        let headText = String(decoding: headBytes, as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let first = lines.removeFirst()
        guard !first.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }) else { return bad("bare CR or LF in the request head") }
        let requestLine = first.split(separator: " ", omittingEmptySubsequences: false)
        guard requestLine.count == 3, !requestLine[0].isEmpty, requestLine[0].allSatisfy({ $0.isASCII && $0.isLetter }),
              requestLine[1].hasPrefix("/") || requestLine[1] == "*", requestLine[2].hasPrefix("HTTP/1.") else {
            return bad("malformed request line")
        }
        guard lines.count <= limits.maxHeaderCount else {
            return .failure(Refusal(reason: .headerTooLarge, message: "more than \(limits.maxHeaderCount) header fields"))
        }
        var headers: [String: String] = [:]
        for l in lines {
            guard !l.unicodeScalars.contains(where: { $0 == "\r" || $0 == "\n" }) else { return bad("bare CR or LF in the request head") }
            guard let colon = l.firstIndex(of: ":"), colon != l.startIndex, !l.hasPrefix(" "), !l.hasPrefix("\t") else { return bad("malformed header line") }
            let name = l[..<colon]
            guard !name.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }) else { return bad("space in a header name") }
            let key = name.lowercased()
            let value = l[l.index(after: colon)...].trimmingCharacters(in: CharacterSet(charactersIn: " \t"))
            if let old = headers[key] {
                // Two Hosts or two lengths are how requests get smuggled past a proxy or a Host check.
                if key == "host" || key == "content-length" || key == "transfer-encoding" { return bad("duplicate \(key) header") }
                headers[key] = old + ", " + value
            } else {
                headers[key] = value
            }
        }
        if headers["transfer-encoding"] != nil {
            return .failure(Refusal(reason: .lengthRequired, message: "request bodies need Content-Length (Transfer-Encoding is not accepted)"))
        }
        var length = 0
        if let cl = headers["content-length"] {
            guard !cl.isEmpty, cl.count <= 18, cl.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(cl) else { return bad("invalid Content-Length") }
            length = n
        }
        let target = String(requestLine[1])
        let comps = URLComponents(string: target)
        let method = String(requestLine[0])
        let path = comps?.path ?? target
        let cap = limits.bodyLimit?(method, path) ?? limits.maxBodyBytes
        guard length <= cap else {
            return .failure(Refusal(reason: .bodyTooLarge, message: "request body of \(length) bytes is larger than the \(cap) bytes this server accepts"))
        }
        var body = Data(buf[headerEnd!...])
        guard body.count <= length else { return bad("more bytes than Content-Length (pipelining is not supported)") }
        if body.count < length, headers["expect"]?.lowercased() == "100-continue" {
            guard Self.sendAll(fd, Data("HTTP/1.1 100 Continue\r\n\r\n".utf8)) else { return .failure(.gone) }
        }
        while body.count < length {
            guard let n = Self.recvBefore(fd, &tmp, max: min(tmp.count, length - body.count), deadline: deadline) else {
                return .failure(Refusal(reason: .timeout, message: "request body not complete within \(limits.requestTimeoutS) s"))
            }
            if n == 0 { return .failure(.gone) }
            body.append(contentsOf: tmp[0..<n])
        }
        var query: [String: String] = [:]
        for item in comps?.queryItems ?? [] { query[item.name] = item.value ?? "" }
        return .success(HTTPRequest(method: method, path: path, query: query, headers: headers, body: body, remoteAddress: remote))
    }

    /// Index just past the first CRLFCRLF at or after `from`.
    static func findHeaderEnd(_ b: [UInt8], from: Int) -> Int? {
        var i = max(0, from)
        while i + 3 < b.count {
            if b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 { return i + 4 }
            i += 1
        }
        return nil
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
        case 408: return "Request Timeout"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 421: return "Misdirected Request"
        case 422: return "Unprocessable Entity"
        case 431: return "Request Header Fields Too Large"
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
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return false }
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
