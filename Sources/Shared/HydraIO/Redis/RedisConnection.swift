import CHiredis
import Foundation

/// A decoded Redis reply (RESP2).
public indirect enum RedisReply: Sendable, Equatable {
    case string(String)
    case status(String)
    case integer(Int64)
    case array([RedisReply])
    case null
    case error(String)

    public var string: String? {
        switch self {
        case .string(let s), .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }
    public var array: [RedisReply]? { if case .array(let a) = self { return a }; return nil }
    public var integer: Int64? {
        switch self {
        case .integer(let i): return i
        case .string(let s): return Int64(s)
        default: return nil
        }
    }
    public var isNull: Bool { self == .null }
}

public struct RedisError: Error, CustomStringConvertible, Sendable {
    /// `tooLarge`: a reply went past the connection's byte ceiling (`maxReplyBytes`); the
    /// connection was dropped, and the command itself did run on the server.
    public enum Code: Sendable { case connect, io, protocolError, server, tooLarge }
    public var code: Code
    public var message: String
    public var description: String { message }
}

/// Where to find Redis: `redis://[user:password@]host:port[/db]` or `unix:///path/redis.sock[?db=N]`.
public struct RedisEndpoint: Sendable, Equatable {
    public var host: String?
    public var port: Int
    public var socketPath: String?
    public var db: Int
    public var user: String?
    public var password: String?

    public init(url: String) throws {
        guard let u = URLComponents(string: url), let scheme = u.scheme else {
            throw RedisError(code: .connect, message: "HYDRA_REDIS_URL '\(Self.redacted(url))' is not a URL (expected redis://host:port/db)")
        }
        user = u.user.flatMap { $0.isEmpty ? nil : $0 }
        password = u.password
        switch scheme {
        case "redis":
            host = u.host ?? "127.0.0.1"
            port = u.port ?? 6379
            socketPath = nil
            let p = u.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            db = p.isEmpty ? 0 : (Int(p) ?? 0)
        case "unix":
            host = nil; port = 0
            socketPath = u.path
            db = u.queryItems?.first { $0.name == "db" }?.value.flatMap(Int.init) ?? 0
        default:
            throw RedisError(code: .connect, message: "HYDRA_REDIS_URL scheme '\(scheme)' is not supported (use redis:// or unix://)")
        }
    }

    /// The URL with any password replaced, for messages and logs.
    public static func redacted(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "****"
        return u.string ?? "redis://****"
    }

    public var display: String { socketPath ?? "\(host ?? "?"):\(port)" }
}

// Interpolating an endpoint into a message must never print its password.
extension RedisEndpoint: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { (user.map { "\($0)@" } ?? "") + display + "/\(db)" }
    public var debugDescription: String { description }
}

/// One blocking hiredis connection. Not thread-safe: each thread or service loop
/// owns its own connection. Reconnects lazily after an I/O error.
public final class RedisConnection {
    public let endpoint: RedisEndpoint
    private var ctx: UnsafeMutablePointer<redisContext>?
    private let timeout: Double
    /// The most bytes one reply may take (protocol included). Keys an agent writes can hold anything
    /// Redis takes (512 MB a value, any number of entries); a connection that reads them lowers this.
    public var maxReplyBytes: Int

    public static let defaultMaxReplyBytes = 1 << 30

    public init(endpoint: RedisEndpoint, timeout: Double = 5, maxReplyBytes: Int = RedisConnection.defaultMaxReplyBytes) {
        self.endpoint = endpoint
        self.timeout = timeout
        self.maxReplyBytes = maxReplyBytes
    }

    public convenience init(url: String, timeout: Double = 5) throws {
        self.init(endpoint: try RedisEndpoint(url: url), timeout: timeout)
    }

    deinit { close() }

    public func close() {
        if let ctx { redisFree(ctx) }
        ctx = nil
    }

    public var isConnected: Bool { ctx != nil }

    public func connect() throws {
        if ctx != nil { return }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        let c: UnsafeMutablePointer<redisContext>?
        if let path = endpoint.socketPath {
            c = redisConnectUnixWithTimeout(path, tv)
        } else {
            c = redisConnectWithTimeout(endpoint.host ?? "127.0.0.1", Int32(endpoint.port), tv)
        }
        guard let c else { throw RedisError(code: .connect, message: "cannot allocate a Redis context") }
        if c.pointee.err != 0 {
            let msg = Self.errString(c)
            redisFree(c)
            throw RedisError(code: .connect, message: "cannot connect to Redis at \(endpoint.display): \(msg)")
        }
        // Commands block at most this long, except XREADGROUP BLOCK which adds its own time.
        tv = timeval(tv_sec: Int(timeout) + 30, tv_usec: 0)
        redisSetTimeout(c, tv)
        ctx = c
        if let password = endpoint.password {
            var args = ["AUTH"]
            if let user = endpoint.user { args.append(user) }
            args.append(password)
            if case .error(let e) = try rawCommand(args) {
                close()
                throw RedisError(code: .connect, message: "Redis at \(endpoint.display) refused the credentials: \(e)")
            }
        }
        if endpoint.db != 0 {
            if case .error(let e) = try rawCommand(["SELECT", String(endpoint.db)]) {
                close()
                throw RedisError(code: .connect, message: "Redis SELECT \(endpoint.db) failed: \(e)")
            }
        }
    }

    private static func errString(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Sends one command and returns its reply. Server errors come back as `.error`,
    /// I/O errors throw (and the connection is dropped, to be re-made next call).
    @discardableResult
    public func command(_ args: [String], maxReplyBytes cap: Int? = nil) throws -> RedisReply {
        try connect()
        return try rawCommand(args, cap: cap)
    }

    /// Like `command`, but a server error reply throws.
    @discardableResult
    public func run(_ args: [String]) throws -> RedisReply {
        let r = try command(args)
        if case .error(let e) = r { throw RedisError(code: .server, message: "Redis \(args.first ?? ""): \(e)") }
        return r
    }

    private func rawCommand(_ args: [String], cap: Int? = nil) throws -> RedisReply {
        try pipeline([args], maxReplyBytes: cap)[0]
    }

    /// Sends many commands in one round trip (pipelining) and returns every reply in order. Each
    /// reply may take up to `maxReplyBytes` (default: the connection's); one that goes past drops the
    /// connection and throws `tooLarge` (every command was sent and has run).
    public func pipeline(_ commands: [[String]], maxReplyBytes cap: Int? = nil) throws -> [RedisReply] {
        if commands.isEmpty { return [] }
        try connect()
        guard let ctx else { throw RedisError(code: .io, message: "not connected") }
        for args in commands {
            let rc = withArgv(args) { argc, argv, lens in redisAppendCommandArgv(ctx, argc, argv, lens) }
            if rc != REDIS_OK {
                close()
                throw RedisError(code: .io, message: "Redis pipeline append failed")
            }
        }
        let limit = UInt64(max(cap ?? maxReplyBytes, 0))
        var out: [RedisReply] = []
        out.reserveCapacity(commands.count)
        for args in commands {
            var raw: UnsafeMutableRawPointer?
            var tooLarge: Int32 = 0
            if hydra_get_reply_capped(ctx, &raw, limit, &tooLarge) != REDIS_OK || raw == nil {
                let msg = Self.errString(ctx)
                close()
                if tooLarge != 0 {
                    throw RedisError(code: .tooLarge, message: "Redis at \(endpoint.display): the reply to \(args.first ?? "?") \(args.dropFirst().first ?? "") is over \(limit) bytes (this connection's limit); connection dropped")
                }
                throw RedisError(code: .io, message: "Redis at \(endpoint.display): \(msg.isEmpty ? "connection lost" : msg)")
            }
            out.append(Self.decode(raw!.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return out
    }

    private func withArgv<R>(_ args: [String], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        var cstrings: [UnsafeMutablePointer<CChar>?] = []
        var lens: [Int] = []
        cstrings.reserveCapacity(args.count)
        for a in args {
            let bytes = Array(a.utf8)
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBufferPointer { b in
                if let base = b.baseAddress { memcpy(p, base, b.count) }
            }
            cstrings.append(p)
            lens.append(bytes.count)
        }
        defer { for p in cstrings { p?.deallocate() } }
        var constPtrs: [UnsafePointer<CChar>?] = cstrings.map { UnsafePointer($0) }
        return constPtrs.withUnsafeMutableBufferPointer { argv in
            lens.withUnsafeBufferPointer { l in
                body(Int32(args.count), argv.baseAddress!, l.baseAddress!)
            }
        }
    }

    static func decode(_ r: UnsafeMutablePointer<redisReply>) -> RedisReply {
        let reply = r.pointee
        switch reply.type {
        case REDIS_REPLY_STRING:
            return .string(bytes(reply.str, reply.len))
        case REDIS_REPLY_STATUS:
            return .status(bytes(reply.str, reply.len))
        case REDIS_REPLY_ERROR:
            return .error(bytes(reply.str, reply.len))
        case REDIS_REPLY_INTEGER:
            return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL:
            return .null
        case REDIS_REPLY_ARRAY:
            var items: [RedisReply] = []
            items.reserveCapacity(Int(reply.elements))
            for i in 0..<Int(reply.elements) {
                if let e = reply.element[i] { items.append(decode(e)) } else { items.append(.null) }
            }
            return .array(items)
        default:
            return .null
        }
    }

    private static func bytes(_ p: UnsafeMutablePointer<CChar>?, _ len: Int) -> String {
        guard let p else { return "" }
        return p.withMemoryRebound(to: UInt8.self, capacity: len) {
            String(decoding: UnsafeBufferPointer(start: $0, count: len), as: UTF8.self)
        }
    }
}
