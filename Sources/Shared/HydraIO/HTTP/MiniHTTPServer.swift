import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
import HydraCore
#endif

/// A parsed HTTP/1.1 request.
public struct HTTPRequest: Sendable {
    public var method: String
    /// The path, percent-decoded (the server refuses malformed escapes, non-UTF-8 and NUL with 400).
    public var path: String
    /// The path as sent, still percent-encoded: split this on "/" before decoding, so an encoded "/" stays inside its segment.
    public var rawPath: String
    /// Query parameters, percent-decoded strictly (like `path`); the last of repeated names wins.
    public var query: [String: String]
    /// Header names lower-cased.
    public var headers: [String: String]
    public var body: Data
    public var remoteAddress: String
    public init(method: String, path: String, query: [String: String], headers: [String: String], body: Data, remoteAddress: String,
                rawPath: String? = nil) {
        self.method = method; self.path = path; self.query = query; self.headers = headers; self.body = body; self.remoteAddress = remoteAddress
        self.rawPath = rawPath ?? path
    }
}

/// Writes a streamed (chunked) response body. Returns false once the client has gone.
public final class HTTPChunkWriter: Sendable {
    private let fd: Int32
    private let alive = Atomic<Bool>(true)
    private let writeTimeoutS: Double
    init(fd: Int32, writeTimeoutS: Double = 30) { self.fd = fd; self.writeTimeoutS = writeTimeoutS }

    @discardableResult
    public func write(_ data: Data) -> Bool {
        guard alive.load(ordering: .relaxed), !data.isEmpty else { return alive.load(ordering: .relaxed) }
        var chunk = Data(String(data.count, radix: 16).utf8)
        chunk.append(contentsOf: [13, 10])
        chunk.append(data)
        chunk.append(contentsOf: [13, 10])
        // Each chunk must be taken by the client within the write budget, however it paces its reads.
        if MiniHTTPServer.sendAll(fd, chunk, deadline: MiniHTTPServer.deadline(after: writeTimeoutS)) != .sent { alive.store(false, ordering: .relaxed) }
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
    /// The whole response, in total, from its first byte written (for a streamed body: each chunk): a
    /// client that reads slowly, however it paces its reads, is cut off (and counted as `write_timeout`).
    public var writeTimeoutS: Double
    /// Connections one remote (non-loopback) address may hold at once; one more is answered 503 by the accept
    /// thread. Loopback addresses are not capped: a local TLS proxy brings every client from 127.0.0.1.
    public var maxConnectionsPerClient: Int
    /// Apply `maxConnectionsPerClient` to loopback clients too (tests; a host with no local proxy).
    public var capLoopbackClients: Bool

    public init(maxConnections: Int = 64, maxHeaderBytes: Int = 16 << 10, maxHeaderCount: Int = 100, maxBodyBytes: Int = 1 << 20,
                bodyLimit: (@Sendable (_ method: String, _ path: String) -> Int?)? = nil,
                requestTimeoutS: Double = 10, writeTimeoutS: Double = 30, maxConnectionsPerClient: Int? = nil,
                capLoopbackClients: Bool = false) {
        self.maxConnections = max(1, maxConnections); self.maxHeaderBytes = max(256, maxHeaderBytes)
        self.maxHeaderCount = max(1, maxHeaderCount); self.maxBodyBytes = max(0, maxBodyBytes); self.bodyLimit = bodyLimit
        self.requestTimeoutS = max(0.05, requestTimeoutS); self.writeTimeoutS = max(0.05, writeTimeoutS)
        self.maxConnectionsPerClient = max(1, maxConnectionsPerClient ?? max(1, self.maxConnections / 2))
        self.capLoopbackClients = capLoopbackClients
    }

    /// `HYDRA_HTTP_MAX_CONNECTIONS`, `HYDRA_HTTP_MAX_CONNECTIONS_PER_CLIENT`, `HYDRA_HTTP_MAX_BODY_BYTES`,
    /// `HYDRA_HTTP_MAX_HEADER_BYTES`, `HYDRA_HTTP_REQUEST_TIMEOUT_S` and `HYDRA_HTTP_WRITE_TIMEOUT_S` override the
    /// given defaults; unparsable values are ignored with the defaults kept. Without a per-client value, a changed
    /// `HYDRA_HTTP_MAX_CONNECTIONS` brings the per-client cap to half of it.
    public static func fromEnvironment(_ base: HTTPServerLimits = HTTPServerLimits(),
                                       environment: [String: String] = ProcessInfo.processInfo.environment) -> HTTPServerLimits {
        var l = base
        if let v = environment["HYDRA_HTTP_MAX_CONNECTIONS"].flatMap({ Int($0) }), v > 0 {
            if l.maxConnectionsPerClient == max(1, l.maxConnections / 2) { l.maxConnectionsPerClient = max(1, v / 2) }
            l.maxConnections = v
        }
        if let v = environment["HYDRA_HTTP_MAX_CONNECTIONS_PER_CLIENT"].flatMap({ Int($0) }), v > 0 { l.maxConnectionsPerClient = v }
        if let v = environment["HYDRA_HTTP_WRITE_TIMEOUT_S"].flatMap({ Double($0) }), v > 0, v.isFinite { l.writeTimeoutS = v }
        if let v = environment["HYDRA_HTTP_MAX_BODY_BYTES"].flatMap({ Int($0) }), v >= 0 { l.maxBodyBytes = v }
        if let v = environment["HYDRA_HTTP_MAX_HEADER_BYTES"].flatMap({ Int($0) }), v >= 256 { l.maxHeaderBytes = v }
        if let v = environment["HYDRA_HTTP_REQUEST_TIMEOUT_S"].flatMap({ Double($0) }), v > 0, v.isFinite { l.requestTimeoutS = v }
        return l
    }
}

/// Why the server answered a request itself instead of passing it to the handler.
public enum HTTPRejection: String, Sendable, CaseIterable {
    case tooManyConnections = "connections"
    /// One remote address already holds `maxConnectionsPerClient` connections.
    case clientConnections = "client_connections"
    case headerTooLarge = "header_too_large"
    case bodyTooLarge = "body_too_large"
    case lengthRequired = "length_required"
    case timeout
    case badRequest = "bad_request"
    /// The response was not taken by the client within `writeTimeoutS`; the connection was closed.
    case writeTimeout = "write_timeout"

    var status: Int {
        switch self {
        case .tooManyConnections, .clientConnections: return 503
        case .writeTimeout: return 408
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
    /// Open connections per remote address (only addresses with at least one; loopback is not tracked).
    private let perClient = Mutex<[String: Int]>([:])
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
                          help: "HTTP requests refused by the listener (connection caps, header/body size, request deadline, malformed, response not read in time).",
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

    /// Gives back the slot reserved for `c`, counts the refusal and answers it at once. Non-blocking:
    /// the accept thread must never wait on a client.
    private func refuseAtAccept(_ c: Int32, _ reason: HTTPRejection, _ message: String) {
        active.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        count(reason)
        let reply = Self.errorReply(reason, message)
        reply.withUnsafeBytes { raw in _ = send(c, raw.baseAddress!, raw.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        shutdown(c, Int32(SHUT_WR))
        close(c)
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
                refuseAtAccept(c, .tooManyConnections, "too many connections; try again shortly\n")
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
            // One address may not take every slot (loopback is exempt: a local proxy is every client at once).
            let tracked = limits.capLoopbackClients || !remote.hasPrefix("127.")
            if tracked {
                let admitted = perClient.withLock { m -> Bool in
                    let n = m[remote, default: 0]
                    guard n < limits.maxConnectionsPerClient else { return false }
                    m[remote] = n + 1
                    return true
                }
                if !admitted {
                    refuseAtAccept(c, .clientConnections, "too many connections from \(remote); try again shortly\n")
                    continue
                }
            }
            let t = Thread { [self] in
                self.serve(c, remote: remote, deadline: accepted + UInt64(limits.requestTimeoutS * 1e9))
                close(c)
                if tracked {
                    perClient.withLock { m in
                        let n = m[remote, default: 1] - 1
                        m[remote] = n > 0 ? n : nil
                    }
                }
                active.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            }
            t.start()
        }
    }

    static func errorReply(_ r: HTTPRejection, _ message: String) -> Data {
        head(r.status, ["Content-Type": "text/plain; charset=utf-8"], length: message.utf8.count) + Data(message.utf8)
    }

    /// Uptime nanoseconds `seconds` from now.
    static func deadline(after seconds: Double) -> UInt64 {
        DispatchTime.now().uptimeNanoseconds + UInt64(max(0, seconds) * 1e9)
    }

    /// Sends a response part within the write budget; on a timeout the connection is reset (no thread, no
    /// kernel buffer left waiting on the reader) and counted. True when it was sent.
    private func respond(_ fd: Int32, _ data: Data, deadline: UInt64) -> Bool {
        switch Self.sendAll(fd, data, deadline: deadline) {
        case .sent: return true
        case .gone: return false
        case .timedOut:
            count(.writeTimeout)
            var l = linger(l_onoff: 1, l_linger: 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, socklen_t(MemoryLayout<linger>.size))
            shutdown(fd, Int32(SHUT_RDWR))
            return false
        }
    }

    private func serve(_ fd: Int32, remote: String, deadline: UInt64) {
        let req: HTTPRequest
        switch readRequest(fd, remote: remote, deadline: deadline) {
        case .success(let r): req = r
        case .failure(let refusal):
            if let reason = refusal.reason {
                count(reason)
                guard respond(fd, Self.errorReply(reason, refusal.message + "\n"), deadline: Self.deadline(after: limits.writeTimeoutS)) else { return }
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
            // One budget for the whole response, from its first byte: a client reading a byte now and then
            // cannot hold the thread (SO_SNDTIMEO would restart on every partial send).
            _ = respond(fd, out, deadline: Self.deadline(after: limits.writeTimeoutS))
        case .stream(let status, let headers, let body):
            var h = headers
            h["Transfer-Encoding"] = "chunked"
            guard respond(fd, Self.head(status, h, length: nil), deadline: Self.deadline(after: limits.writeTimeoutS)) else { return }
            let writer = HTTPChunkWriter(fd: fd, writeTimeoutS: limits.writeTimeoutS)
            body(writer)
            if writer.isAlive { _ = respond(fd, Data("0\r\n\r\n".utf8), deadline: Self.deadline(after: limits.writeTimeoutS)) }
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
            if let end = Self.findHeaderEnd(buf, from: scanFrom) { headerEnd = end } else {
                // A head ended by LF LF alone never ends for this parser: refused now, not after holding the
                // connection (and one of its slots) until the request timeout.
                if Self.hasBareLFBlankLine(buf, from: scanFrom) {
                    return .failure(Refusal(reason: .badRequest, message: "bad request: header lines end in LF alone (HTTP/1.1 needs CR LF)"))
                }
                scanFrom = max(0, buf.count - 3)
            }
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
        let method = String(requestLine[0])
        let target: Target
        switch Self.parseTarget(String(requestLine[1])) {
        case .success(let t): target = t
        case .failure(let why): return bad(why.message)
        }
        let path = target.path
        let cap = limits.bodyLimit?(method, path) ?? limits.maxBodyBytes
        guard length <= cap else {
            return .failure(Refusal(reason: .bodyTooLarge, message: "request body of \(length) bytes is larger than the \(cap) bytes this server accepts"))
        }
        var body = Data(buf[headerEnd!...])
        guard body.count <= length else { return bad("more bytes than Content-Length (pipelining is not supported)") }
        if body.count < length, headers["expect"]?.lowercased() == "100-continue" {
            guard Self.sendAll(fd, Data("HTTP/1.1 100 Continue\r\n\r\n".utf8), deadline: min(deadline, Self.deadline(after: limits.writeTimeoutS))) == .sent else {
                return .failure(.gone)
            }
        }
        while body.count < length {
            guard let n = Self.recvBefore(fd, &tmp, max: min(tmp.count, length - body.count), deadline: deadline) else {
                return .failure(Refusal(reason: .timeout, message: "request body not complete within \(limits.requestTimeoutS) s"))
            }
            if n == 0 { return .failure(.gone) }
            body.append(contentsOf: tmp[0..<n])
        }
        return .success(HTTPRequest(method: method, path: path, query: target.query, headers: headers, body: body, remoteAddress: remote,
                                    rawPath: target.rawPath))
    }

    struct Target: Equatable {
        var path: String
        var rawPath: String
        var query: [String: String]
    }

    struct TargetError: Error, Equatable { var message: String }

    /// Splits a request target into its path and query and percent-decodes both strictly: a `%` not followed
    /// by two hex digits, an escape that does not decode to UTF-8, or a NUL byte is a 400 naming the part,
    /// never an empty or truncated value (which would quietly drop a filter). `+` stays `+`.
    static func parseTarget(_ target: String) -> Result<Target, TargetError> {
        var t = Substring(target)
        if let hash = t.firstIndex(of: "#") { t = t[..<hash] }
        let rawPath: Substring, rawQuery: Substring?
        if let q = t.firstIndex(of: "?") { rawPath = t[..<q]; rawQuery = t[t.index(after: q)...] } else { rawPath = t; rawQuery = nil }
        guard let path = percentDecode(rawPath) else {
            return .failure(TargetError(message: "the path has a malformed percent-escape, or one that is not UTF-8 or is NUL"))
        }
        var query: [String: String] = [:]
        for pair in (rawQuery ?? "").split(separator: "&", omittingEmptySubsequences: true) {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecode(kv[0]) else {
                return .failure(TargetError(message: "a query parameter name has a malformed percent-escape, or one that is not UTF-8 or is NUL"))
            }
            guard let value = kv.count > 1 ? percentDecode(kv[1]) : "" else {
                let shown = String(name.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
                return .failure(TargetError(message: "query parameter '\(shown)' has a malformed percent-escape, or one that is not UTF-8 or is NUL"))
            }
            query[name] = value
        }
        return .success(Target(path: path, rawPath: String(rawPath), query: query))
    }

    /// Strict percent-decoding: nil for `%` without two hex digits, bytes that are not UTF-8, or NUL.
    public static func percentDecode<S: StringProtocol>(_ s: S) -> String? {
        var out = [UInt8]()
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        func hex(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x41...0x46: return c - 0x41 + 10
            case 0x61...0x66: return c - 0x61 + 10
            default: return nil
            }
        }
        while let c = it.next() {
            if c == 0x25 {
                guard let h = it.next().flatMap(hex), let l = it.next().flatMap(hex) else { return nil }
                out.append(h << 4 | l)
            } else {
                out.append(c)
            }
        }
        guard !out.contains(0), let text = String(validating: out, as: UTF8.self) else { return nil }
        return text
    }

    /// Index just past the first CRLFCRLF at or after `from`.
    /// Whether `b` holds an empty line ended by a bare LF (LF LF) from `from` on.
    static func hasBareLFBlankLine(_ b: [UInt8], from: Int) -> Bool {
        var i = max(0, from)
        while i + 1 < b.count {
            if b[i] == 10 && b[i + 1] == 10 { return true }
            i += 1
        }
        return false
    }

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
        case 100: return "Continue"
        case 200: return "OK"
        case 201: return "Created"
        case 202: return "Accepted"
        case 204: return "No Content"
        case 301: return "Moved Permanently"
        case 302: return "Found"
        case 303: return "See Other"
        case 304: return "Not Modified"
        case 307: return "Temporary Redirect"
        case 308: return "Permanent Redirect"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 409: return "Conflict"
        case 411: return "Length Required"
        case 413: return "Content Too Large"
        case 421: return "Misdirected Request"
        case 415: return "Unsupported Media Type"
        case 422: return "Unprocessable Entity"
        case 429: return "Too Many Requests"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 502: return "Bad Gateway"
        case 503: return "Service Unavailable"
        case 504: return "Gateway Timeout"
        default: return "Status"
        }
    }

    enum SendResult: Equatable { case sent, gone, timedOut }

    /// Sends all of `data` before `deadline` (uptime ns), in total, with non-blocking sends and poll():
    /// however little the client reads at a time, the budget does not restart.
    static func sendAll(_ fd: Int32, _ data: Data, deadline: UInt64) -> SendResult {
        data.withUnsafeBytes { raw -> SendResult in
            var off = 0
            while off < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if n > 0 { off += n; continue }
                if n == 0 { return .gone }
                if errno == EINTR { continue }
                guard errno == EAGAIN || errno == EWOULDBLOCK else { return .gone }
                while true {
                    let now = DispatchTime.now().uptimeNanoseconds
                    guard now < deadline else { return .timedOut }
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    let r = poll(&p, 1, Int32(clamping: (deadline - now + 999_999) / 1_000_000))
                    if r < 0 { if errno == EINTR { continue }; return .gone }
                    if r > 0 { break }
                }
            }
            return .sent
        }
    }
}

public struct HTTPServerError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ d: String) { description = d }
}
