import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
import HydraCore
import HydraIO
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
        host == "localhost" || ConsoleHostPolicy.strictIPv4(host).map { $0[0] == 127 } == true
    }
}

/// The Host header values the console answers to, compared exactly: a web page
/// whose own name resolves to 127.0.0.1 (DNS rebinding) sends its own name, and a
/// prefix test such as "starts with 127." lets `127.1.evil.example` through.
public struct ConsoleHostPolicy: Sendable, Equatable {
    /// Extra names (lower-cased, no port), e.g. the name a TLS proxy forwards.
    public var names: Set<String>
    /// The listen address when it is a specific IPv4 address (not 0.0.0.0).
    public var boundAddress: String?

    public init(names: [String] = [], boundAddress: String? = nil) {
        self.names = Set(names.map { $0.lowercased() }.filter { !$0.isEmpty })
        self.boundAddress = boundAddress.flatMap { a in Self.strictIPv4(a).flatMap { $0 == [0, 0, 0, 0] ? nil : a } }
    }

    /// A configured name must be a plain DNS name or IPv4 address, so it can only ever match itself.
    public static func isValidName(_ n: String) -> Bool {
        guard !n.isEmpty, n.utf8.count <= 253, !n.hasPrefix("."), !n.hasSuffix("."), !n.contains("..") else { return false }
        return n.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D || $0 == 0x2E }
    }

    /// Four decimal octets 0…255, no leading zeros (which inet_aton reads as octal), nothing else.
    public static func strictIPv4<S: StringProtocol>(_ s: S) -> [UInt8]? {
        let parts = s.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard (1...3).contains(p.utf8.count), p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  p.utf8.count == 1 || p.utf8.first != 0x30, let v = Int(p), v <= 255 else { return nil }
            out.append(UInt8(v))
        }
        return out
    }

    /// Whether a Host header value is exactly one of: `localhost`, an IPv4 address in
    /// 127.0.0.0/8, `[::1]`, the bound address or a configured name — each with an
    /// optional `:port` of digits only.
    public func allows(_ header: String?) -> Bool {
        guard let header, !header.isEmpty, header.utf8.count <= 260,
              header.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return false }
        var name = Substring(header)
        if let colon = header.lastIndex(of: ":"), !header.hasSuffix("]") {
            let port = header[header.index(after: colon)...]
            guard (1...5).contains(port.utf8.count), port.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let p = Int(port), p <= 65535 else { return false }
            name = header[..<colon]
        }
        let lower = name.lowercased()
        if lower == "[::1]" { return true }
        if lower.contains(":") || lower.contains("[") || lower.contains("]") { return false }
        if lower == "localhost" || names.contains(lower) { return true }
        if let ip = Self.strictIPv4(lower) { return ip[0] == 127 || lower == boundAddress }
        return false
    }

    /// The refusal text; the offending value is cut short, it is only there to help someone debug a proxy.
    public func refusal(_ header: String?) -> String {
        let shown = String((header ?? "").unicodeScalars.prefix(80).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
        var accepted = ["localhost", "127.0.0.1", "[::1]"]
        if let boundAddress, !accepted.contains(boundAddress) { accepted.append(boundAddress) }
        accepted += names.sorted()
        return "this console does not answer to Host '\(shown)' (accepted: \(accepted.joined(separator: ", ")), with an optional :port; "
            + "add names with --console-host)"
    }
}

/// Random hex from the system CSPRNG (getrandom on Linux).
public func randomHex(bytes: Int = 32) -> String {
    var g = SystemRandomNumberGenerator()
    return Hex.encode((0..<bytes).map { _ in UInt8.random(in: 0...255, using: &g) })
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
    /// Sessions made for visitors (a CSRF token for a form, before any login): anyone can create these, so
    /// they live apart from `loggedIn` and a flood of them only ever evicts its own kind.
    private let visitors = Mutex<[String: Session]>([:])
    /// Sessions made by a successful login (which takes the console token): anonymous traffic never adds here.
    private let loggedIn = Mutex<[String: Session]>([:])
    private let maxSessions: Int
    private let idleSeconds: Double

    /// `maxSessions` bounds each of the two stores (visitors, logged in).
    public init(maxSessions: Int = 10_000, idleSeconds: Double = 12 * 3600) {
        self.maxSessions = maxSessions; self.idleSeconds = idleSeconds
    }

    public func find(_ id: String?, now: Double = Date().timeIntervalSince1970) -> Session? {
        guard let id, id.count == 64 else { return nil }
        let idle = idleSeconds
        let look = { (s: inout [String: Session]) -> Session? in
            guard let old = s[id] else { return nil }
            guard now - old.lastUsed < idle else { s[id] = nil; return nil }
            var found = old
            found.lastUsed = now
            s[id] = found
            return found
        }
        if let hit = loggedIn.withLock({ look(&$0) }) { return hit }
        return visitors.withLock { look(&$0) }
    }

    /// A visitor's session (`byLogin: false`, the default) or one made by a successful login.
    public func create(authenticated: Bool, byLogin: Bool = false, now: Double = Date().timeIntervalSince1970) -> Session {
        let new = Session(id: randomHex(), csrf: randomHex(), authenticated: authenticated, lastUsed: now)
        let cap = maxSessions
        let insert = { (s: inout [String: Session]) in
            if s.count >= cap {
                // Evict the least recently used tenth instead of growing without bound.
                for (k, _) in s.sorted(by: { $0.value.lastUsed < $1.value.lastUsed }).prefix(max(1, cap / 10)) { s[k] = nil }
            }
            s[new.id] = new
        }
        if byLogin { loggedIn.withLock { insert(&$0) } } else { visitors.withLock { insert(&$0) } }
        return new
    }

    /// Sessions held now: (visitors, logged in).
    public var counts: (visitors: Int, loggedIn: Int) { (visitors.withLock { $0.count }, loggedIn.withLock { $0.count }) }

    public func remove(_ id: String) {
        visitors.withLock { _ = $0.removeValue(forKey: id) }
        loggedIn.withLock { _ = $0.removeValue(forKey: id) }
    }

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
        ConsoleHostPolicy().allows(host)
    }

    /// The Host check: always without a token; with a token only when names are
    /// configured (a token-protected console behind a proxy may be reached by any
    /// name, and a rebound page has neither the token nor the cookie).
    public static func checkHost(_ req: HTTPRequest, token: String?, hosts: ConsoleHostPolicy) -> Verdict {
        guard token == nil || !hosts.names.isEmpty else { return .allow }
        return hosts.allows(req.headers["host"]) ? .allow : .forbidden(hosts.refusal(req.headers["host"]))
    }

    /// `scheme://host[:port]` of an Origin or Referer, compared with the Host header.
    public static func sameOrigin(_ value: String, host: String) -> Bool {
        guard let u = URLComponents(string: value), let h = u.host, let scheme = u.scheme, scheme == "http" || scheme == "https" else { return false }
        let hostPort = u.port.map { "\(h):\($0)" } ?? h
        return hostPort.lowercased() == host.lowercased()
    }

    /// Reads: with a token configured, a logged-in session or the token in a header;
    /// without one (loopback only), any request whose Host is a loopback name.
    public static func checkRead(_ req: HTTPRequest, token: String?, session: ConsoleSessions.Session?,
                                 hosts: ConsoleHostPolicy = ConsoleHostPolicy()) -> Verdict {
        if case .forbidden(let why) = checkHost(req, token: token, hosts: hosts) { return .forbidden(why) }
        guard let token else { return .allow }
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
                                  requireAuth: Bool = true, hosts: ConsoleHostPolicy = ConsoleHostPolicy()) -> Verdict {
        guard req.method == "POST" else { return .forbidden("state changes need POST") }
        if case .forbidden(let why) = checkHost(req, token: token, hosts: hosts) { return .forbidden(why) }
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

    /// A POST body read as fields: `json` holds the JSON values when the body was JSON (so an endpoint can ask
    /// for a real boolean), `fields` their text (strings as they are, booleans as "true"/"false").
    public struct Form: Sendable, Equatable {
        public var fields: [String: String] = [:]
        public var json: [String: JSONValue]?
        public init(fields: [String: String] = [:], json: [String: JSONValue]? = nil) { self.fields = fields; self.json = json }
    }

    /// Why a body cannot be read; answered 400 (415 for a content type that is neither form nor JSON).
    public struct FormProblem: Error, Equatable, Sendable {
        public var status: Int = 400
        public var message: String
    }

    /// Fields every state-changing form may carry besides its own.
    public static let commonFields: Set<String> = ["csrf", "token", "next"]

    /// `application/x-www-form-urlencoded` (also assumed without a Content-Type) or a JSON object, strictly: a
    /// body that is not what its Content-Type says (JSON sent as a form, truncated JSON, `[[[[`), a malformed
    /// percent-escape, a field given twice, a JSON value other than a string or boolean, or a field this
    /// endpoint does not take (`allowed` plus `commonFields`; nil: any) is refused rather than read as "no
    /// fields" — an empty reading turns "undrain" into "drain".
    public static func parseForm(_ req: HTTPRequest, allowed: Set<String>?) throws(FormProblem) -> Form {
        let type = (req.headers["content-type"] ?? "").lowercased()
        let mediaType = type.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        let text = String(decoding: req.body, as: UTF8.self)
        func check(_ name: String) throws(FormProblem) {
            guard let allowed, !allowed.contains(name), !commonFields.contains(name) else { return }
            let shown = String(name.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
            let takes = allowed.union(commonFields).sorted().joined(separator: ", ")
            throw FormProblem(message: "unknown field '\(shown)' (this endpoint takes: \(takes))")
        }
        if mediaType == "application/json" {
            if text.allSatisfy(\.isWhitespace) { return Form(json: [:]) }
            let o: [String: JSONValue]
            switch JSONBody.object(text) {
            case .success(let v): o = v
            case .failure(let p): throw FormProblem(message: p.message + #" (send a JSON object such as {"undo": true})"#)
            }
            var out = Form(json: o)
            for (k, v) in o.sorted(by: { $0.key < $1.key }) {
                try check(k)
                switch v {
                case .string(let x): out.fields[k] = x
                case .bool(let b): out.fields[k] = b ? "true" : "false"
                default: throw FormProblem(message: "field '\(String(k.prefix(64)))' must be a string or true/false")
                }
            }
            return out
        }
        guard mediaType.isEmpty || mediaType == "application/x-www-form-urlencoded" else {
            throw FormProblem(status: 415, message: "send the body as application/json or application/x-www-form-urlencoded, not \(String(mediaType.prefix(64)))")
        }
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("{") || trimmed.hasPrefix("[") {
            throw FormProblem(message: "the body looks like JSON but was sent as a form; send it with Content-Type: application/json")
        }
        var out = Form()
        for pair in text.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func dec(_ s: Substring) throws(FormProblem) -> String {
                guard let d = MiniHTTPServer.percentDecode(s.replacingOccurrences(of: "+", with: " ")) else {
                    throw FormProblem(message: "the form body has a malformed percent-escape (or one that is not UTF-8, or NUL)")
                }
                return d
            }
            let name = try dec(kv[0])
            try check(name)
            guard out.fields[name] == nil else { throw FormProblem(message: "field '\(String(name.prefix(64)))' is given twice") }
            out.fields[name] = kv.count > 1 ? try dec(kv[1]) : ""
        }
        return out
    }

    /// A boolean field: a JSON `true`/`false`, or in a form `true`, `false`, `1` or `0`; absent: nil.
    public static func boolField(_ form: Form, _ name: String) throws(FormProblem) -> Bool? {
        if let json = form.json {
            guard let v = json[name] else { return nil }
            guard case .bool(let b) = v else { throw FormProblem(message: "'\(name)' must be true or false (a JSON boolean)") }
            return b
        }
        guard let v = form.fields[name] else { return nil }
        switch v.lowercased() {
        case "true", "1": return true
        case "false", "0": return false
        default: throw FormProblem(message: "'\(name)' must be true, false, 1 or 0, not '\(String(v.prefix(32)))'")
        }
    }

    /// The fields of a form or JSON body, or none when it cannot be read (for checks and tests; the server
    /// itself uses `parseForm`, which refuses such bodies).
    public static func formFields(_ req: HTTPRequest) -> [String: String] {
        (try? parseForm(req, allowed: nil).fields) ?? [:]
    }
}
