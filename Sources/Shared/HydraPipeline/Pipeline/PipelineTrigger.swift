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
    /// The runner this process started, while it lives (kept so Foundation can reap it), and whether a start
    /// is under way: checked and set under one lock, so of parallel requests exactly one spawns a runner.
    private let runner = Mutex<(starting: Bool, next: Int, children: [Int: Process])>((false, 0, [:]))

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
        if let k = JSONBody.duplicateKey(text) {
            return .failure(Refusal(status: 400, message: "the key '\(String(k.prefix(64)))' appears twice in the body"))
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
        // One runner at a time from this process: refused while the one it started is alive or being started.
        let busy = runner.withLock { r -> Int32? in
            if r.starting { return 0 }
            if let p = r.children.values.first { return p.processIdentifier }
            r.starting = true
            return nil
        }
        if let pid = busy {
            return .json(encoding: ["error": "a night started by this coordinator is still running" + (pid > 0 ? " (pid \(pid))" : "")], status: 409)
        }
        var spawned = false
        defer { if !spawned { runner.withLock { $0.starting = false } } }
        let db = PGConnection(url: databaseURL)
        defer { db.close() }
        let store = PipelineStore(jobs: JobStore(db: db))
        do {
            try db.connect()
            if let n = try store.liveNight(staleAfter: 120) {
                return .json(encoding: ["error": "the night \(n) is already running"], status: 409)
            }
            // A runner started elsewhere (the timer, a person) holds this lock for its whole night.
            if try db.exec("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = \(PipelineRunner.advisoryLock) AND objsubid = 1) AS held")[0].bool("held") == true {
                return .json(encoding: ["error": PipelineRunError.busy.description], status: 409)
            }
            // The URL goes in the environment, not argv: a password in it would show in `ps`.
            var args = ["pipeline", "run", "--config", configPath, "--triggered-by", "http:\(req.remoteAddress)"]
            if let until { args += ["--until", until] }
            var env = ProcessInfo.processInfo.environment
            env["HYDRA_DATABASE_URL"] = databaseURL
            let p = Process()
            p.executableURL = URL(fileURLWithPath: executable)
            p.arguments = args
            p.environment = env
            let key = runner.withLock { r -> Int in r.next += 1; r.children[r.next] = p; return r.next }
            p.terminationHandler = { [weak self] proc in
                Log(component: "pipeline-trigger").info("runner exited", [("pid", String(proc.processIdentifier)), ("status", String(proc.terminationStatus))])
                _ = self?.runner.withLock { $0.children.removeValue(forKey: key) }
            }
            do { try p.run() } catch {
                _ = runner.withLock { $0.children.removeValue(forKey: key) }
                throw error
            }
            spawned = true
            runner.withLock { $0.starting = false }
            try store.jobs.audit(actor: "http:\(req.remoteAddress)", action: "pipeline_trigger", target: configPath,
                                 detail: .object(["pid": .number(Double(p.processIdentifier)), "until": until.map { .string($0) } ?? .null]))
            Log(component: "pipeline-trigger").info("night started by HTTP", [("pid", String(p.processIdentifier)), ("from", req.remoteAddress)])
            return .json(encoding: ["started": JSONValue.bool(true), "pid": .number(Double(p.processIdentifier)),
                                    "night": .string(NightClock.night(at: Date(), timeZone: .current))], status: 202)
        } catch {
            return .json(encoding: ["error": "\(error)"], status: 500)
        }
    }

    /// Whether a runner started by this process is still alive.
    public var runnerAlive: Bool { runner.withLock { !$0.children.isEmpty } }
}
