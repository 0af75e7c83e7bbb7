import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct ConsoleConfigError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The console's token: a file given on the command line, else the systemd
/// credential `console.token`. A file readable by group or others is refused,
/// like ssh does with keys: a leaked token hands out approve/cancel/drain.
public enum ConsoleToken {
    public static func load(path: String?, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String? {
        var file = path
        if file == nil, let creds = environment["CREDENTIALS_DIRECTORY"], !creds.isEmpty {
            let p = creds + "/console.token"
            if FileManager.default.fileExists(atPath: p) { file = p }
        }
        guard let file else { return nil }
        var st = stat()
        guard stat(file, &st) == 0 else {
            throw ConsoleConfigError("console token file \(file): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw ConsoleConfigError("console token file \(file) is not a regular file") }
        if st.st_mode & 0o077 != 0 {
            throw ConsoleConfigError(String(format: "console token file %@ has mode %o; it must not be readable by group or others (chmod 600)", file, st.st_mode & 0o777))
        }
        guard let data = FileManager.default.contents(atPath: file),
              let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines) else {
            throw ConsoleConfigError("console token file \(file) cannot be read as UTF-8")
        }
        guard text.count >= 16 else { throw ConsoleConfigError("console token in \(file) is shorter than 16 characters") }
        return text
    }

    /// Whether an IPv4 listen host only accepts local connections.
    public static func isLoopback(host: String) -> Bool {
        host == "localhost" || host.hasPrefix("127.")
    }
}

/// Compares secrets without an early exit, so timing does not reveal a prefix.
public func constantTimeEquals(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
    return diff == 0
}

/// Random hex from the system CSPRNG (getrandom on Linux).
public func randomHex(bytes: Int = 32) -> String {
    var g = SystemRandomNumberGenerator()
    return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &g)) }.joined()
}

/// Files the console may send: only regular image/audio files whose real path
/// (symlinks resolved) lies inside one of the configured output directories.
public struct OutputFileGuard: Sendable {
    public let roots: [String]
    public let maxBytes: Int

    public init(roots: [String], maxBytes: Int = 64 << 20) {
        // Roots are resolved once too, so a root that is itself a symlink still works.
        self.roots = roots.compactMap { Self.realPath($0) }
        self.maxBytes = maxBytes
    }

    public enum Refusal: Error, Equatable, Sendable { case notAllowed, notFound, notMedia, tooLarge }

    /// The resolved path, or why not. Relative paths are taken relative to each root in turn.
    public func resolve(_ requested: String) -> Result<String, Refusal> {
        guard !requested.isEmpty, !requested.contains("\0"), !roots.isEmpty else { return .failure(.notAllowed) }
        let candidates = requested.hasPrefix("/") ? [requested] : roots.map { $0 + "/" + requested }
        var sawFile = false
        for c in candidates {
            guard let real = Self.realPath(c) else { continue }
            sawFile = true
            guard roots.contains(where: { real.hasPrefix($0 == "/" ? "/" : $0 + "/") }) else { continue }
            var st = stat()
            guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return .failure(.notFound) }
            guard Self.contentType(real) != nil else { return .failure(.notMedia) }
            guard Int(st.st_size) <= maxBytes else { return .failure(.tooLarge) }
            return .success(real)
        }
        return .failure(sawFile ? .notAllowed : .notFound)
    }

    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// No SVG or HTML: those can carry script when opened directly.
    public static func contentType(_ path: String) -> String? {
        switch (path as NSString).pathExtension.lowercased() {
        case "png": return "image/png"
        case "jpg", "jpeg": return "image/jpeg"
        case "gif": return "image/gif"
        case "webp": return "image/webp"
        case "wav": return "audio/wav"
        case "mp3": return "audio/mpeg"
        case "ogg", "opus": return "audio/ogg"
        case "flac": return "audio/flac"
        case "m4a": return "audio/mp4"
        default: return nil
        }
    }
}

/// Browser sessions: a cookie holding a random id, server-side state holding the
/// CSRF token and whether the session has given the console token. In memory
/// only: a coordinator restart logs everyone out, which is fine for a console.
public final class ConsoleSessions: Sendable {
    public struct Session: Sendable, Equatable {
        public var id: String
        public var csrf: String
        public var authenticated: Bool
        public var lastUsed: Double
    }

    public static let cookieName = "hydra_console"
    private let sessions = Mutex<[String: Session]>([:])
    private let maxSessions: Int
    private let idleSeconds: Double

    public init(maxSessions: Int = 10_000, idleSeconds: Double = 12 * 3600) {
        self.maxSessions = maxSessions; self.idleSeconds = idleSeconds
    }

    public func find(_ id: String?, now: Double = Date().timeIntervalSince1970) -> Session? {
        guard let id, id.count == 64 else { return nil }
        return sessions.withLock { s in
            guard var found = s[id], now - found.lastUsed < idleSeconds else { s[id] = nil; return nil }
            found.lastUsed = now
            s[id] = found
            return found
        }
    }

    public func create(authenticated: Bool, now: Double = Date().timeIntervalSince1970) -> Session {
        let new = Session(id: randomHex(), csrf: randomHex(), authenticated: authenticated, lastUsed: now)
        sessions.withLock { s in
            if s.count >= maxSessions {
                // Evict the least recently used tenth instead of growing without bound.
                for (k, _) in s.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }).prefix(max(1, maxSessions / 10)) { s[k] = nil }
            }
            s[new.id] = new
        }
        return new
    }

    public func remove(_ id: String) { sessions.withLock { _ = $0.removeValue(forKey: id) } }

    public static func cookie(_ s: Session) -> String {
        "\(cookieName)=\(s.id); Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
    }

    public static func cookieValue(_ header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let kv = part.trimmingCharacters(in: .whitespaces)
            if kv.hasPrefix(cookieName + "=") { return String(kv.dropFirst(cookieName.count + 1)) }
        }
        return nil
    }
}

/// The request checks, as pure functions of the request and the configuration.
public enum ConsoleGuard {
    public enum Verdict: Equatable, Sendable {
        case allow
        /// Not logged in (a token is configured and none was presented).
        case unauthenticated
        case forbidden(String)
    }

    /// The token as presented by a non-browser client: `Authorization: Bearer` or `X-Hydra-Token`.
    public static func headerToken(_ req: HTTPRequest) -> String? {
        if let a = req.headers["authorization"], a.lowercased().hasPrefix("bearer ") { return String(a.dropFirst(7)).trimmingCharacters(in: .whitespaces) }
        return req.headers["x-hydra-token"]
    }

    /// Host names a loopback-only console answers to. Checking the Host header stops
    /// DNS rebinding (a web page whose name resolves to 127.0.0.1 is a different host).
    public static func isLoopbackHostHeader(_ host: String?) -> Bool {
        guard let host, !host.isEmpty else { return false }
        var name = host
        if name.hasPrefix("[") { return name.hasPrefix("[::1]") }
        if let colon = name.lastIndex(of: ":") { name = String(name[..<colon]) }
        return name == "localhost" || name.hasPrefix("127.")
    }

    /// `scheme://host[:port]` of an Origin or Referer, compared with the Host header.
    public static func sameOrigin(_ value: String, host: String) -> Bool {
        guard let u = URLComponents(string: value), let h = u.host, let scheme = u.scheme, scheme == "http" || scheme == "https" else { return false }
        let hostPort = u.port.map { "\(h):\($0)" } ?? h
        return hostPort.lowercased() == host.lowercased()
    }

    /// Reads: with a token configured, a logged-in session or the token in a header;
    /// without one (loopback only), any request whose Host is a loopback name.
    public static func checkRead(_ req: HTTPRequest, token: String?, session: ConsoleSessions.Session?) -> Verdict {
        guard let token else {
            return isLoopbackHostHeader(req.headers["host"]) ? .allow : .forbidden("this console only answers to localhost / 127.0.0.1 (Host header)")
        }
        if session?.authenticated == true { return .allow }
        if let t = headerToken(req), constantTimeEquals(t, token) { return .allow }
        return .unauthenticated
    }

    /// Writes (approve, reject, cancel, retry, drain, login): POST only; Origin or
    /// Referer, when sent, must be this host; then a proof that the request is not
    /// cross-site: the session's CSRF token (form field `csrf` or header
    /// `X-CSRF-Token`), or the console token in a header or the `token` form field
    /// (a foreign page cannot know it), or, with no token configured, the custom
    /// header `X-Hydra-Client` (a cross-site page cannot send it without a CORS
    /// preflight, which this server never grants). With a token configured the
    /// request must also be authenticated (session or token).
    public static func checkWrite(_ req: HTTPRequest, form: [String: String], token: String?, session: ConsoleSessions.Session?,
                                  requireAuth: Bool = true) -> Verdict {
        guard req.method == "POST" else { return .forbidden("state changes need POST") }
        let host = req.headers["host"] ?? ""
        if token == nil && !isLoopbackHostHeader(host) { return .forbidden("this console only answers to localhost / 127.0.0.1 (Host header)") }
        if let why = crossSiteRefusal(req) { return .forbidden(why) }
        let presented = headerToken(req) ?? form["token"]
        let tokenOK = token.map { t in presented.map { constantTimeEquals($0, t) } ?? false } ?? false
        let csrfPresented = form["csrf"] ?? req.headers["x-csrf-token"]
        let csrfOK = session.map { s in csrfPresented.map { constantTimeEquals($0, s.csrf) } ?? false } ?? false
        let clientHeaderOK = token == nil && req.headers["x-hydra-client"] != nil
        guard csrfOK || tokenOK || clientHeaderOK else {
            return .forbidden("missing or wrong CSRF token (reload the page and try again)")
        }
        if requireAuth, token != nil, !(tokenOK || session?.authenticated == true) { return .unauthenticated }
        return .allow
    }

    /// Why the request's Origin (or, without one, its Referer) is not this host; nil when it is or when neither is sent.
    public static func crossSiteRefusal(_ req: HTTPRequest) -> String? {
        let host = req.headers["host"] ?? ""
        if let origin = req.headers["origin"] {
            return sameOrigin(origin, host: host) ? nil : "cross-site request refused (Origin \(origin) is not \(host))"
        }
        if let referer = req.headers["referer"] {
            return sameOrigin(referer, host: host) ? nil : "cross-site request refused (Referer is not \(host))"
        }
        return nil
    }

    /// Login: POST, same origin, and the CSRF token of the (pre-login) session that
    /// rendered the form, so a foreign page cannot log a browser into its own session.
    public static func checkLogin(_ req: HTTPRequest, form: [String: String], session: ConsoleSessions.Session?) -> Verdict {
        guard req.method == "POST" else { return .forbidden("log in with POST") }
        if let why = crossSiteRefusal(req) { return .forbidden(why) }
        guard let s = session, let c = form["csrf"], constantTimeEquals(c, s.csrf) else {
            return .forbidden("missing or wrong CSRF token (reload the login page and try again)")
        }
        return .allow
    }

    /// `application/x-www-form-urlencoded` or JSON object bodies, as string fields.
    public static func formFields(_ req: HTTPRequest) -> [String: String] {
        let type = req.headers["content-type"]?.lowercased() ?? ""
        if type.hasPrefix("application/json") {
            guard let v = try? JSONCoding.decode(JSONValue.self, from: String(decoding: req.body, as: UTF8.self)), let o = v.objectValue else { return [:] }
            var out: [String: String] = [:]
            for (k, x) in o { if let s = x.stringValue { out[k] = s } else if let b = x.boolValue { out[k] = b ? "true" : "false" } }
            return out
        }
        var out: [String: String] = [:]
        for pair in String(decoding: req.body, as: UTF8.self).split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func dec(_ s: Substring) -> String { String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String(s) }
            out[dec(kv[0])] = kv.count > 1 ? dec(kv[1]) : ""
        }
        return out
    }
}
