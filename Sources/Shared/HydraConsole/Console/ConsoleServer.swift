import Foundation
import Synchronization
import HydraCore
import HydraIO
import HydraStore

extension HTTPRequest {
    /// For benchmarks and tests that call a handler without a socket.
    public static func local(_ method: String, _ path: String, query: [String: String] = [:], headers: [String: String] = [:],
                             body: Data = Data(), remoteAddress: String = "127.0.0.1") -> HTTPRequest {
        HTTPRequest(method: method, path: path, query: query, headers: headers, body: body, remoteAddress: remoteAddress)
    }
}

public struct ConsoleSettings: Sendable {
    /// nil: no token; the console then only answers on loopback (enforced by the caller and by the Host check).
    public var token: String?
    public var outputDirs: [String]
    public var reportsDir: String?
    public var pageSize: Int
    /// Which Host headers are answered (`--console-host` names and the listen address besides the loopback names).
    public var hosts: ConsoleHostPolicy
    public init(token: String? = nil, outputDirs: [String] = [], reportsDir: String? = nil, pageSize: Int = 100,
                hosts: ConsoleHostPolicy = ConsoleHostPolicy()) {
        self.token = token; self.outputDirs = outputDirs; self.reportsDir = reportsDir; self.pageSize = pageSize; self.hosts = hosts
    }
}

/// The web console: routes, checks, and the glue between the store and the pages.
/// `handle` is a MiniHTTPServer handler; it runs on the connection's thread and
/// takes a pooled PostgreSQL connection for the duration of one request.
public final class ConsoleServer: Sendable {
    public let settings: ConsoleSettings
    public let pool: PGPool
    public let sessions = ConsoleSessions()
    let files: OutputFileGuard
    let thumbnails = ThumbnailCache()
    /// The aggregate reads every open tab polls (cluster counts, batch progress: each scans a batch's
    /// or all jobs): at most one per key per second, however many tabs ask. Cleared by any POST, so
    /// the page an action redirects to shows its effect.
    let reads: ReadCache

    /// `pool`: the connections its requests share (default: `PGPool`'s limit of 6 at once).
    /// `readCacheTTL`: how long one aggregate read serves every tab (0: every request reads; the
    /// console benchmark times the queries that way).
    public init(databaseURL: String, settings: ConsoleSettings, pool: PGPool? = nil, readCacheTTL: Double = 1) {
        self.settings = settings
        self.reads = ReadCache(ttl: readCacheTTL)
        self.pool = pool ?? PGPool(url: databaseURL)
        self.files = OutputFileGuard(roots: settings.outputDirs)
    }

    public var handler: HTTPHandler { { [self] req in self.handle(req) } }

    static let securityHeaders: [String: String] = [
        // No inline script anywhere; inline style attributes carry the bar widths only.
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    ]

    struct Reply {
        var status = 200
        var headers: [String: String] = [:]
        var body = Data()
        static func html(_ h: HTML, status: Int = 200) -> Reply {
            Reply(status: status, headers: ["Content-Type": "text/html; charset=utf-8"], body: Data(h.text.utf8))
        }
        static func json<T: Encodable>(_ v: T, status: Int = 200) -> Reply {
            Reply(status: status, headers: ["Content-Type": "application/json"], body: Data(((try? JSONCoding.encodeString(v)) ?? "{}").utf8))
        }
        static func redirect(_ to: String, status: Int = 303) -> Reply { Reply(status: status, headers: ["Location": to]) }
        static func text(_ s: String, status: Int) -> Reply {
            Reply(status: status, headers: ["Content-Type": "text/plain; charset=utf-8"], body: Data((s + "\n").utf8))
        }
    }

    struct Failure: Error { var status: Int; var message: String }

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        let started = DispatchTime.now().uptimeNanoseconds
        // Before anything else, static files and login included: a rebound page must not even get a session.
        if case .forbidden(let why) = ConsoleGuard.checkHost(req, token: settings.token, hosts: settings.hosts) {
            let reply = errorReply(req, 403, why, session: nil)
            return .full(status: reply.status, headers: Self.securityHeaders.merging(reply.headers) { _, new in new }, body: reply.body)
        }
        var newCookie: String?
        var session = sessions.find(ConsoleSessions.cookieValue(req.headers["cookie"]))
        let isAPI = req.path.hasPrefix("/api/")
        // Browsers get a session (it carries the CSRF token); API clients with a header token do not need one.
        if session == nil, !isAPI, !req.path.hasPrefix("/static/"), req.method == "GET" || req.path == "/login" {
            let s = sessions.create(authenticated: settings.token == nil)
            session = s
            newCookie = ConsoleSessions.cookie(s)
        }
        var reply: Reply
        do {
            reply = try route(req, session: session, newCookie: &newCookie)
        } catch let f as Failure {
            reply = errorReply(req, f.status, f.message, session: session)
        } catch let e as StoreError {
            reply = errorReply(req, 404, e.description, session: session)
        } catch let busy as PGPool.PoolBusy {
            reply = errorReply(req, 503, busy.description, session: session)
            reply.headers["Retry-After"] = "1"
        } catch {
            Log(component: "console").warning("request failed", [("path", req.path), ("error", "\(error)")])
            reply = errorReply(req, 503, "the database is not reachable right now: \(error)", session: session)
        }
        if req.method != "GET" && req.method != "HEAD" { reads.clear() }
        var headers = Self.securityHeaders.merging(reply.headers) { _, new in new }
        if let newCookie { headers["Set-Cookie"] = newCookie }
        let ms = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e6
        headers["Server-Timing"] = String(format: "app;dur=%.2f", ms)
        return .full(status: reply.status, headers: headers, body: reply.body)
    }

    func cluster() throws -> ConsoleClusterView { try reads.value("cluster") { try pool.withStore { try $0.consoleCluster() } } }

    func batchProgress(_ id: String) throws -> BatchProgress? {
        try reads.value("batch:\(id)") { try pool.withStore { try $0.batchProgress(ids: [id], limit: 1).first } }
    }

    func errorReply(_ req: HTTPRequest, _ status: Int, _ message: String, session: ConsoleSessions.Session?) -> Reply {
        if req.path.hasPrefix("/api/") || wantsJSON(req) { return .json(["error": message], status: status) }
        return .html(ConsolePages.error(status, message, ctx: context(req, session)), status: status)
    }

    func wantsJSON(_ req: HTTPRequest) -> Bool {
        let type = req.headers["content-type"]?.lowercased() ?? ""
        return req.method == "POST" && !type.hasPrefix("application/x-www-form-urlencoded")
    }

    func context(_ req: HTTPRequest, _ session: ConsoleSessions.Session?) -> PageContext {
        PageContext(csrf: session?.csrf ?? "", flash: req.query["flash"].map { String($0.prefix(300)) }, tokenConfigured: settings.token != nil)
    }

    // MARK: routing

    /// The path's segments, each percent-decoded once (from the raw path, so `%2F` stays inside its segment);
    /// a malformed escape or a NUL is a 400, never a different page.
    static func segments(_ req: HTTPRequest) throws -> [String] {
        try req.rawPath.split(separator: "/", omittingEmptySubsequences: true).map { raw in
            guard let s = MiniHTTPServer.percentDecode(raw) else {
                throw Failure(status: 400, message: "the path has a malformed percent-escape (or one that is not UTF-8, or NUL)")
            }
            return s
        }
    }

    /// The fields each POST endpoint takes besides `csrf`, `token` and `next` (nil: unknown endpoint, not read).
    static func allowedFields(_ parts: [String]) -> Set<String>? {
        guard parts.count >= 2 else { return parts == ["logout"] || parts == ["login"] ? [] : nil }
        let a = parts.count >= 2 && parts[0] == "api" && parts[1] == "v1" ? Array(parts.dropFirst(2)) : []
        switch (a.first ?? "", a.count, a.last ?? "") {
        case ("approvals", 3, "decide"): return ["decision", "reason"]
        case ("jobs", 3, "cancel"), ("jobs", 3, "retry"), ("batches", 3, "cancel"), ("batches", 3, "retry"): return []
        case ("nodes", 3, "drain"): return ["undo"]
        default: return nil
        }
    }

    /// The POST body read strictly for this endpoint; what cannot be read is a 400 (415), never "no fields".
    static func form(_ req: HTTPRequest, _ parts: [String]) throws -> ConsoleGuard.Form {
        do { return try ConsoleGuard.parseForm(req, allowed: allowedFields(parts)) } catch { throw Failure(status: error.status, message: error.message) }
    }

    /// A whole-number query parameter: absent or empty → `defaultValue`; not a number or below `min` → 400
    /// naming it; above `max` → `max`.
    static func intParam(_ req: HTTPRequest, _ name: String, default defaultValue: Int, min lo: Int, max hi: Int) throws -> Int {
        guard let raw = req.query[name], !raw.isEmpty else { return defaultValue }
        guard raw.utf8.count <= 19, let v = Int(raw) else {
            throw Failure(status: 400, message: "query parameter '\(name)' must be a whole number, not '\(shown(raw))'")
        }
        guard v >= lo else { throw Failure(status: 400, message: "query parameter '\(name)' must be at least \(lo), not \(v)") }
        return Swift.min(v, hi)
    }

    /// A positive, finite number query parameter (NaN and infinities refused).
    static func numberParam(_ req: HTTPRequest, _ name: String, default defaultValue: Double) throws -> Double {
        guard let raw = req.query[name], !raw.isEmpty else { return defaultValue }
        guard raw.utf8.count <= 32, let v = Double(raw), v.isFinite, v > 0 else {
            throw Failure(status: 400, message: "query parameter '\(name)' must be a positive number, not '\(shown(raw))'")
        }
        return v
    }

    static func shown(_ s: String) -> String {
        String(s.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? Character($0) : "?" })
    }

    func route(_ req: HTTPRequest, session: ConsoleSessions.Session?, newCookie: inout String?) throws -> Reply {
        let parts = try Self.segments(req)
        // The listener refuses these already; a handler called directly (benchmarks, tests) must not pass them to PostgreSQL either.
        if let bad = req.query.first(where: { $0.key.contains("\0") || $0.value.contains("\0") }) {
            throw Failure(status: 400, message: "query parameter '\(Self.shown(bad.key))' contains a NUL byte")
        }
        switch (req.method, parts.first ?? "") {
        case ("GET", "static"), ("HEAD", "static"):
            if parts == ["static", "console.css"] { return Reply(headers: ["Content-Type": "text/css; charset=utf-8", "Cache-Control": "max-age=300"], body: Data(ConsoleAssets.css.utf8)) }
            if parts == ["static", "console.js"] { return Reply(headers: ["Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "max-age=300"], body: Data(ConsoleAssets.js.utf8)) }
            throw Failure(status: 404, message: "no such file")
        case (_, "login"):
            return try login(req, session: session, newCookie: &newCookie)
        case ("POST", "logout"):
            let form = try Self.form(req, parts).fields
            if case .forbidden(let why) = ConsoleGuard.checkWrite(req, form: form, token: settings.token, session: session, requireAuth: false,
                                                                  hosts: settings.hosts) {
                throw Failure(status: 403, message: why)
            }
            if let s = session { sessions.remove(s.id) }
            newCookie = "\(ConsoleSessions.cookieName)=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
            return .redirect("/login")
        default: break
        }

        if req.method == "GET" || req.method == "HEAD" {
            switch ConsoleGuard.checkRead(req, token: settings.token, session: session, hosts: settings.hosts) {
            case .allow: break
            case .unauthenticated:
                if parts.first == "api" { throw Failure(status: 401, message: "this console needs its token (Authorization: Bearer TOKEN)") }
                return .redirect("/login")
            case .forbidden(let why): throw Failure(status: 403, message: why)
            }
            return try get(req, parts, session: session)
        }
        if req.method == "POST" {
            let body = try Self.form(req, parts)
            let form = body.fields
            switch ConsoleGuard.checkWrite(req, form: form, token: settings.token, session: session, hosts: settings.hosts) {
            case .allow: break
            case .unauthenticated: throw Failure(status: 401, message: "this console needs its token (log in, or send Authorization: Bearer TOKEN)")
            case .forbidden(let why): throw Failure(status: 403, message: why)
            }
            return try post(req, parts, body: body)
        }
        throw Failure(status: 405, message: "method \(req.method) not allowed")
    }

    func login(_ req: HTTPRequest, session: ConsoleSessions.Session?, newCookie: inout String?) throws -> Reply {
        let ctx = context(req, session)
        guard let token = settings.token else { return .redirect("/cluster") }
        if req.method == "GET" { return .html(ConsolePages.login(ctx: ctx)) }
        guard req.method == "POST" else { throw Failure(status: 405, message: "GET or POST") }
        let form = try Self.form(req, ["login"]).fields
        if case .forbidden(let why) = ConsoleGuard.checkLogin(req, form: form, session: session) { throw Failure(status: 403, message: why) }
        guard let given = form["token"], constantTimeEquals(given, token) else {
            return .html(ConsolePages.login(ctx: ctx, error: "That is not the console token."), status: 401)
        }
        // A fresh session id on login, so a session id planted before login is worth nothing.
        if let s = session { sessions.remove(s.id) }
        // In the logged-in store, which visitors' sessions (anyone can make those) never evict.
        let s = sessions.create(authenticated: true, byLogin: true)
        newCookie = ConsoleSessions.cookie(s)
        return .redirect("/cluster")
    }

    // MARK: reads

    func parseStates(_ s: String?) throws -> [JobState] {
        guard let s, !s.isEmpty else { return [] }
        return try s.split(separator: ",").map { raw in
            guard let st = JobState(rawValue: String(raw)) else {
                throw Failure(status: 400, message: "unknown state '\(raw)' (states: \(JobState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            return st
        }
    }

    func get(_ req: HTTPRequest, _ p: [String], session: ConsoleSessions.Session?) throws -> Reply {
        let ctx = context(req, session)
        switch p.first ?? "" {
        case "": return .redirect("/cluster", status: 302)
        case "cluster" where p.count == 1:
            return .html(ConsolePages.cluster(try cluster(), ctx: ctx))
        case "cluster" where p.count == 2 && p[1] == "occupancy.svg":
            return try occupancySVG(hours: Self.numberParam(req, "hours", default: 1))
        case "batches" where p.count == 3 && p[2] == "rate.svg":
            return try batchRateSVG(p[1].lowercased())
        case "batches" where p.count == 1:
            return .html(ConsolePages.batches(try reads.value("batches:50") { try pool.withStore { try $0.batchProgress() } }, ctx: ctx))
        case "batches" where p.count == 2:
            let states = try parseStates(req.query["state"])
            let page = try Self.intParam(req, "page", default: 1, min: 1, max: 1_000_000)
            let id = p[1].lowercased()
            let progress = UUID(uuidString: id) == nil ? nil : try batchProgress(id)
            guard let progress, let d = try pool.withStore({ try $0.consoleBatchPage(progress: progress, states: states, page: page, pageSize: settings.pageSize) }) else {
                throw Failure(status: 404, message: "no batch \(p[1])")
            }
            return .html(ConsolePages.batchPage(d, ctx: ctx))
        case "jobs" where p.count == 2:
            guard let d = try pool.withStore({ try $0.consoleJobPage(id: p[1]) }) else { throw Failure(status: 404, message: "no job \(p[1])") }
            return .html(ConsolePages.jobPage(d, ctx: ctx))
        case "approvals" where p.count == 1:
            return .html(ConsolePages.approvals(try pool.withStore { try $0.consoleApprovals() }, ctx: ctx))
        case "nights" where p.count == 1:
            let reports = settings.reportsDir.map { NightReports.list(dir: $0) } ?? []
            return .html(ConsolePages.nights(reports, configured: settings.reportsDir != nil, ctx: ctx))
        case "nights" where p.count == 2:
            guard let dir = settings.reportsDir, let md = NightReports.read(dir: dir, name: p[1]) else { throw Failure(status: 404, message: "no report \(p[1])") }
            let date = String(p[1].dropLast(NightReports.suffix.count))
            return .html(ConsolePages.night(NightReport(name: p[1], date: date, markdown: md), ctx: ctx,
                                            images: try pool.withStore { try $0.consoleNightImages(night: date) }))
        case "thumb" where p.count == 1:
            return try file(req.query["path"] ?? "", thumbnail: true)
        case "media" where p.count == 1:
            return try file(req.query["path"] ?? "")
        case "api" where p.count >= 2 && p[1] == "v1":
            return try apiGet(req, Array(p.dropFirst(2)))
        default:
            throw Failure(status: 404, message: "no page \(req.path)")
        }
    }

    /// Only files under the output directories are sent. Thumbnails of PNGs are made here (at most
    /// 256 px a side, `PNGThumbnail`) and kept for the file as it is; other formats go as they are.
    func file(_ path: String, thumbnail: Bool = false) throws -> Reply {
        switch files.resolve(path) {
        case .success(let real):
            guard let data = FileManager.default.contents(atPath: real) else { throw Failure(status: 404, message: "cannot read the file") }
            var body = data
            if thumbnail, OutputFileGuard.contentType(real) == "image/png" {
                body = thumbnails.get(real, data) ?? data
            }
            return Reply(headers: ["Content-Type": OutputFileGuard.contentType(real) ?? "application/octet-stream",
                                   "Cache-Control": "private, max-age=300", "Content-Disposition": "inline"], body: body)
        case .failure(.notAllowed): throw Failure(status: 403, message: "only files inside the configured output directories are served")
        case .failure(.notMedia): throw Failure(status: 415, message: "only images and audio are served")
        case .failure(.tooLarge): throw Failure(status: 413, message: "file too large")
        case .failure(.notFound): throw Failure(status: 404, message: "no such file")
        }
    }

    static func json<T: Encodable>(_ v: T) throws -> JSONValue { try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(v)) }

    /// A BatchSummary (the CLI's shape) plus the console's pace fields.
    static func batchJSON(_ b: BatchProgress) throws -> JSONValue {
        guard case .object(var o) = try json(b.summary) else { return .null }
        o["rate_per_minute"] = b.ratePerMinute.map { .number($0) } ?? .null
        o["expected_finish"] = b.expectedFinish.map { .number($0) } ?? .null
        o["finished"] = .number(Double(b.summary.finished))
        return .object(o)
    }

    func apiGet(_ req: HTTPRequest, _ p: [String]) throws -> Reply {
        switch (p.first ?? "", p.count) {
        case ("nodes", 1):
            let snap = try cluster()
            return .json(JSONValue.object(["nodes": try Self.json(snap.nodes), "reserved_bytes": try Self.json(snap.reserved),
                                           "active": try Self.json(snap.active)]))
        case ("batches", 1):
            let limit = try Self.intParam(req, "limit", default: 50, min: 0, max: 500)
            let list = try reads.value("batches:\(limit)") { try pool.withStore { try $0.batchProgress(limit: limit) } }
            return .json(JSONValue.object(["batches": .array(try list.map(Self.batchJSON))]))
        case ("batches", 2):
            guard let b = try batchProgress(try pool.withStore { try $0.resolveBatch(p[1]) }) else {
                throw Failure(status: 404, message: "no batch \(p[1])")
            }
            return .json(try Self.batchJSON(b))
        case ("jobs", 1):
            let states = try parseStates(req.query["state"])
            let limit = max(try Self.intParam(req, "limit", default: 200, min: 0, max: 1000), 1)
            let offset = try Self.intParam(req, "offset", default: 0, min: 0, max: Int(Int32.max))
            let jobs = try pool.withStore { s -> [JobRow] in
                let batch = try req.query["batch"].flatMap { $0.isEmpty ? nil : $0 }.map { try s.resolveBatch($0) }
                return try s.consoleJobs(batchID: batch, states: states, node: req.query["node"], offset: offset, limit: limit)
            }
            return .json(["jobs": jobs])
        case ("jobs", 2):
            guard let d = try pool.withStore({ try $0.consoleJobPage(id: p[1]) }) else { throw Failure(status: 404, message: "no job \(p[1])") }
            return .json(JSONValue.object(["job": try Self.json(d.job), "events": try Self.json(d.events)]))
        case ("approvals", 1):
            let states = (req.query["state"] ?? "awaiting_approval").split(separator: ",").map(String.init)
            return .json(["approvals": try pool.withStore { try $0.approvals(states: states) }])
        case ("approvals", 2):
            guard let a = try pool.withStore({ try $0.approval(id: p[1].lowercased()) }) else { throw Failure(status: 404, message: "no approval \(p[1])") }
            return .json(a)
        case ("audit", 1):
            let limit = try Self.intParam(req, "limit", default: 100, min: 0, max: 1000)
            let entries = try pool.withStore { try $0.auditLog(limit: limit) }
            return .json(["audit": entries.map { AuditEntry(at: $0.at, actor: $0.actor, action: $0.action, target: $0.target, detail: $0.detail) }])
        case ("nights", 1):
            let reports = settings.reportsDir.map { NightReports.list(dir: $0, load: 0) } ?? []
            return .json(JSONValue.object(["reports": .array(reports.map { r in
                .object(["name": .string(r.name), "date": .string(r.date), "title": Markdown.title(r.markdown).map { .string($0) } ?? .null])
            })]))
        case ("nights", 2):
            guard let dir = settings.reportsDir, let md = NightReports.read(dir: dir, name: p[1]) else { throw Failure(status: 404, message: "no report \(p[1])") }
            return .json(["name": p[1], "markdown": md])
        default:
            throw Failure(status: 404, message: "no API endpoint \(req.path)")
        }
    }

    // MARK: writes

    func post(_ req: HTTPRequest, _ p: [String], body: ConsoleGuard.Form) throws -> Reply {
        let form = body.fields
        guard p.count >= 2, p[0] == "api", p[1] == "v1" else { throw Failure(status: 404, message: "no endpoint \(req.path)") }
        let a = Array(p.dropFirst(2))
        let actor = "console@\(req.remoteAddress)"
        var result: JSONValue
        var message: String
        switch (a.first ?? "", a.count, a.last ?? "") {
        case ("approvals", 3, "decide"):
            let raw = (form["decision"] ?? "").lowercased()
            let decision: ApprovalDecision
            switch raw {
            case "approve", "approved": decision = .approved
            case "reject", "rejected": decision = .rejected
            default: throw Failure(status: 422, message: "decision must be approve or reject")
            }
            let reason = form["reason"].map { String($0.trimmingCharacters(in: .whitespacesAndNewlines).prefix(2000)) }.flatMap { $0.isEmpty ? nil : $0 }
            if decision == .rejected && reason == nil { throw Failure(status: 422, message: "a rejection needs a reason") }
            let (ok, approval) = try pool.withStore { s in
                (try s.decide(approval: a[1].lowercased(), decision, by: actor, reason: reason), try s.approval(id: a[1].lowercased()))
            }
            guard let approval else { throw Failure(status: 404, message: "no approval \(a[1])") }
            guard ok else { throw Failure(status: 409, message: "'\(approval.title)' was already \(approval.state)") }
            result = .object(["ok": .bool(true), "approval": try Self.json(approval)])
            message = "\(decision == .approved ? "Approved" : "Rejected") '\(approval.title)'."
        case ("jobs", 3, "cancel"), ("jobs", 3, "retry"):
            guard UUID(uuidString: a[1]) != nil else { throw Failure(status: 404, message: "no job \(a[1])") }
            let id = a[1].lowercased()
            let n = try pool.withStore { s -> Int in
                let n = a[2] == "cancel" ? try s.cancel(jobIDs: [id]) : try s.retry(jobIDs: [id])
                try s.audit(actor: actor, action: a[2], target: id, detail: .object(["jobs": .number(Double(n))]))
                return n
            }
            result = .object(["ok": .bool(true), "changed": .number(Double(n))])
            message = a[2] == "cancel" ? (n == 1 ? "Cancelled the job." : "Nothing to cancel (already finished).")
                                       : (n == 1 ? "Requeued the job." : "Nothing to retry (only failed, dead or cancelled jobs).")
        case ("batches", 3, "cancel"), ("batches", 3, "retry"):
            let n = try pool.withStore { s -> Int in
                let id = try s.resolveBatch(a[1])
                let ids = try s.jobIDs(batch: id)
                let n = a[2] == "cancel" ? try s.cancel(jobIDs: ids) : try s.retry(jobIDs: ids)
                try s.audit(actor: actor, action: "batch_" + a[2], target: id, detail: .object(["jobs": .number(Double(n))]))
                return n
            }
            result = .object(["ok": .bool(true), "changed": .number(Double(n))])
            message = a[2] == "cancel" ? "Cancelled \(n) job\(n == 1 ? "" : "s")." : "Requeued \(n) job\(n == 1 ? "" : "s")."
        case ("nodes", 3, "drain"):
            // Absent: drain. Anything but a boolean is a 400: guessing turned {"undo": 1} into a drain.
            let undo: Bool
            do { undo = try ConsoleGuard.boolField(body, "undo") ?? false } catch { throw Failure(status: error.status, message: error.message) }
            let ok = try pool.withStore { s -> Bool in
                let ok = try s.setDraining(node: a[1], !undo)
                if ok { try s.audit(actor: actor, action: undo ? "undrain" : "drain", target: a[1], detail: .object([:])) }
                return ok
            }
            guard ok else { throw Failure(status: 404, message: "no node \(a[1])") }
            result = .object(["ok": .bool(true), "node": .string(a[1]), "draining": .bool(!undo)])
            message = undo ? "\(a[1]): placing jobs again." : "\(a[1]): draining (no new jobs; running ones finish)."
        default:
            throw Failure(status: 404, message: "no endpoint POST \(req.path)")
        }
        if (req.headers["content-type"] ?? "").lowercased().hasPrefix("application/x-www-form-urlencoded") {
            return .redirect(Self.localRedirect(form["next"], flash: message))
        }
        return .json(result)
    }

    /// Only same-site paths: `next=//elsewhere` or `https://...` would be an open redirect.
    static func localRedirect(_ next: String?, flash: String) -> String {
        var target = next ?? "/cluster"
        if !target.hasPrefix("/") || target.hasPrefix("//") || target.hasPrefix("/\\") || target.contains("\r") || target.contains("\n") { target = "/cluster" }
        return target + (target.contains("?") ? "&" : "?") + "flash=" + HTML.urlComponent(flash)
    }
}

/// Values computed at most once per `ttl` seconds per key, shared by every request thread. Requests
/// for a key whose value is being computed wait for it instead of computing it again: on a 100 000-job
/// batch one read takes longer than the ttl under load, and without that every tab's request ran its own.
/// Keys come from request paths, so the table is emptied when it grows past `maxKeys`.
final class ReadCache: Sendable {
    let ttl: Double
    let maxKeys: Int
    let clock: @Sendable () -> Double
    /// One per key: held while the key's value is computed.
    private final class Entry: Sendable {
        let lock = NSLock()
        let value = Mutex<(at: Double, value: any Sendable)?>(nil)
    }
    private let entries = Mutex<[String: Entry]>([:])

    init(ttl: Double, maxKeys: Int = 256, clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.ttl = ttl; self.maxKeys = maxKeys; self.clock = clock
    }

    private func fresh<T>(_ e: Entry) -> T? {
        guard let v = e.value.withLock({ $0 }) else { return nil }
        let now = clock()
        return now - v.at < ttl && now >= v.at ? v.value as? T : nil
    }

    func value<T: Sendable>(_ key: String, _ compute: () throws -> T) throws -> T {
        let e = entries.withLock { m -> Entry in
            if let e = m[key] { return e }
            if m.count >= maxKeys { m.removeAll() }
            let e = Entry()
            m[key] = e
            return e
        }
        if let v: T = fresh(e) { return v }
        e.lock.lock()
        defer { e.lock.unlock() }
        // Whoever held the lock may have just computed it.
        if let v: T = fresh(e) { return v }
        let v = try compute()
        e.value.withLock { $0 = (clock(), v) }
        return v
    }

    func clear() { entries.withLock { $0.removeAll() } }
    var count: Int { entries.withLock { $0.count } }
}
