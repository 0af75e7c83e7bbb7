import Foundation
import Synchronization
import HydraCore
import HydraIO
import HydraStore

/// `POST /api/v1/pipeline/run` on the coordinator: starts a night now by spawning
/// `hydra pipeline run --config FILE` (the runner takes PostgreSQL's advisory lock, so a
/// second start while one runs is refused there too). Bearer token required.
public final class PipelineTrigger: Sendable {
    public static let path = "/api/v1/pipeline/run"
    let token: String
    let configPath: String
    let executable: String
    let databaseURL: String
    /// Children are kept so Foundation can reap them; the set only grows by one per accepted request.
    private let children = Mutex<[Int32: Process]>([:])

    public init(token: String, configPath: String, executable: String, databaseURL: String) {
        self.token = token; self.configPath = configPath; self.executable = executable; self.databaseURL = databaseURL
    }

    /// Reads a token file; refuses one readable by group or others, or shorter than 16 characters.
    public static func loadToken(path: String) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { throw InputError(file: path, problem: "cannot read the pipeline token file: \(String(cString: strerror(errno)))") }
        guard st.st_mode & 0o077 == 0 else {
            throw InputError(file: path, problem: String(format: "the pipeline token file has mode %o; it must not be readable by group or others (chmod 600)", st.st_mode & 0o777))
        }
        let t = try ConfigLoader.readFile(path).trimmingCharacters(in: .whitespacesAndNewlines)
        guard t.count >= 16 else { throw InputError(file: path, problem: "the pipeline token is shorter than 16 characters") }
        return t
    }

    /// Why a request may not start a night: its HTTP status and message.
    struct Refusal: Error { var status: Int; var message: String }

    /// Pure request checks: (status, message) when refused, nil when allowed. Body: optional `{"until": "06:00"}`.
    public static func check(_ req: HTTPRequest, token: String, now: Date = Date()) -> (Int, String)? {
        if case .failure(let r) = admit(req, token: token, now: now) { return (r.status, r.message) }
        return nil
    }

    /// The request's `until` (nil without one) when it may start a night. The token is checked before
    /// the body, so a stranger learns nothing from it. A body that is not a JSON object with at most a
    /// string `until` is refused, not ignored: a night started with a deadline other than the one asked
    /// for runs until the config's night end.
    static func admit(_ req: HTTPRequest, token: String, now: Date) -> Result<String?, Refusal> {
        guard req.method == "POST" else { return .failure(Refusal(status: 405, message: "use POST")) }
        let presented = req.headers["authorization"].flatMap { h -> String? in
            h.lowercased().hasPrefix("bearer ") ? String(h.dropFirst(7)).trimmingCharacters(in: .whitespaces) : nil
        }
        guard let presented, constantTimeEquals(presented, token) else {
            return .failure(Refusal(status: 401, message: "missing or wrong bearer token"))
        }
        let text = String(decoding: req.body, as: UTF8.self)
        if text.allSatisfy(\.isWhitespace) { return .success(nil) }
        guard let v = try? JSONCoding.decode(JSONValue.self, from: text), let o = v.objectValue else {
            return .failure(Refusal(status: 400, message: #"the body must be a JSON object, e.g. {"until": "06:00"}"#))
        }
        if let k = o.keys.sorted().first(where: { $0 != "until" }) {
            return .failure(Refusal(status: 400, message: "unknown field '\(String(k.prefix(64)))' (the body takes only 'until')"))
        }
        guard let u = o["until"] else { return .success(nil) }
        guard let s = u.stringValue else { return .failure(Refusal(status: 400, message: #"'until' must be a string, e.g. "06:00""#)) }
        if case .failure(let e) = NightClock.until(s, now: now, timeZone: .current) {
            return .failure(Refusal(status: 400, message: "'until' '\(String(s.prefix(64)))': \(e.message)"))
        }
        return .success(s)
    }

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        let until: String?
        switch Self.admit(req, token: token, now: Date()) {
        case .success(let u): until = u
        case .failure(let r): return .json(encoding: ["error": r.message], status: r.status)
        }
        let db = PGConnection(url: databaseURL)
        defer { db.close() }
        let store = PipelineStore(jobs: JobStore(db: db))
        do {
            try db.connect()
            if let n = try store.liveNight(staleAfter: 120) {
                return .json(encoding: ["error": "the night \(n) is already running"], status: 409)
            }
            var args = ["pipeline", "run", "--config", configPath, "--database-url", databaseURL, "--triggered-by", "http:\(req.remoteAddress)"]
            if let until { args += ["--until", until] }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = args
            p.terminationHandler = { [weak self] proc in
                Log(component: "pipeline-trigger").info("runner exited", [("pid", String(proc.processIdentifier)), ("status", String(proc.terminationStatus))])
                _ = self?.children.withLock { $0.removeValue(forKey: proc.processIdentifier) }
            }
            try p.run()
            children.withLock { $0[p.processIdentifier] = p }
            try store.jobs.audit(actor: "http:\(req.remoteAddress)", action: "pipeline_trigger", target: configPath,
                                 detail: .object(["pid": .number(Double(p.processIdentifier)), "until": until.map { .string($0) } ?? .null]))
            Log(component: "pipeline-trigger").info("night started by HTTP", [("pid", String(p.processIdentifier)), ("from", req.remoteAddress)])
            return .json(encoding: ["started": JSONValue.bool(true), "pid": .number(Double(p.processIdentifier)),
                                    "night": .string(NightClock.night(at: Date(), timeZone: .current))], status: 202)
        } catch {
            return .json(encoding: ["error": "\(error)"], status: 500)
        }
    }
}
