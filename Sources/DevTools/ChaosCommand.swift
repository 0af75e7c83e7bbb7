import ArgumentParser
import Foundation
import Synchronization
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraTestSupport
import HydraCoordinator

/// Set by SIGINT/SIGTERM: the run stops at the next check and still cleans up after itself.
private let chaosInterrupted = Atomic<Bool>(false)

struct ChaosCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chaos",
        abstract: "Run a local cluster, break it on purpose while it works through sleep jobs, and count what was lost.",
        discussion: """
        Starts the local instance NAME (deploy/local/services.sh, default 'chaos'), two coordinators (one \
        standby), three agents with simulated GPUs behind one TCP proxy each (the partition switch), all \
        with signed envelopes. Submits --jobs sleep jobs in chunks and, between chunks, SIGKILLs agents \
        and the leading coordinator, restarts Redis (append-only file; once wiped) and PostgreSQL, and cuts \
        one agent off Redis for longer than --node-timeout. Every fault kind happens at least once.
        The last line is `chaos: submitted=N succeeded=N lost=0 duplicated=0 dead=0 max_requeue_s=X`; \
        exit 1 on any lost or duplicated job. Everything it started is stopped at the end. See docs/chaos.md.
        """
    )

    @Option(help: "Sleep jobs to submit.") var jobs = 2000
    @Option(help: "Seed of the fault schedule and the jobs (default: random; printed, to replay a run).") var seed: UInt64?
    @Flag(help: "Print the full report as JSON before the last line.") var json = false
    @Option(help: "Local instance name (deploy/local/services.sh).") var instance = "chaos"
    @Option(name: .customLong("node-timeout"), help: "Coordinators' --node-timeout (seconds).") var nodeTimeout = 4.0
    @Option(help: "Coordinators' --lease (seconds).") var lease = 3.0
    @Option(name: .customLong("partition-seconds"), help: "How long the partition lasts (default: node timeout + 4 s).") var partitionSeconds: Double?
    @Option(help: "Give up (and count what is unfinished as lost) after this many seconds.") var timeout: Double?
    @Flag(help: "Leave the instance's Redis and PostgreSQL running and the run's database in place.") var keep = false
    @Flag(help: """
        Also send hostile traffic: a rogue node answering with NULs, broken UTF-8, unstorable and broken results, results         and heartbeats forged for other nodes, replayed and misrouted envelopes, a skewed clock, cancel/retry races.
        """)
    var hostile = false
    @Option(name: .customLong("stall-seconds"), help: "With --hostile: a window this long with jobs waiting and none finishing, outside faults, is a stall.")
    var stallSeconds = 15.0

    func validate() throws {
        if jobs < 1 { throw ValidationError("--jobs must be ≥ 1") }
        if let m = OptionCheck.first(OptionCheck.seconds(nodeTimeout, "--node-timeout", min: 0, max: 86_400),
                                     OptionCheck.seconds(lease, "--lease", min: 0, max: 86_400),
                                     partitionSeconds.flatMap { OptionCheck.seconds($0, "--partition-seconds", min: 0, max: 86_400) },
                                     timeout.flatMap { OptionCheck.seconds($0, "--timeout", min: 0, max: 1e9) },
                                     OptionCheck.seconds(stallSeconds, "--stall-seconds", min: 0, max: 86_400)) {
            throw ValidationError(m)
        }
    }

    func run() throws {
        // A proxied peer that goes away must not kill the run with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let signals = [SIGINT, SIGTERM].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { chaosInterrupted.store(true, ordering: .relaxed) }
            s.resume()
            return s
        }
        defer { withExtendedLifetime(signals) {} }
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let run = try ChaosRun(options: self, seed: seed)
        let outcome: ChaosRun.Outcome
        do { outcome = try run.execute() } catch {
            run.cleanup(success: false)
            fail("chaos: \(error)")
        }
        run.cleanup(success: outcome.ok)
        if json { print(try JSONCoding.encodeString(outcome.summary, pretty: true)) }
        print(outcome.report.line + (outcome.hostileLine.map { " " + $0 } ?? ""))
        if !outcome.ok { throw ExitCode(1) }
    }
}

/// One chaos run: its services, processes, proxies and the record of what it broke.
final class ChaosRun {
    struct Outcome {
        var report: ChaosReport
        var summary: JSONValue
        /// With --hostile: its figures, appended to the last line, and whether they are all as they must be.
        var hostileLine: String?
        var hostileOK = true
        var ok: Bool { report.ok && hostileOK }
    }

    let options: ChaosCommand
    let seed: UInt64
    let nodes = ["hydra-ai", "hydra-compute", "hydra-storage"]
    let repo: URL
    let binDir: URL
    var work: URL!
    var env: [String: String] = [:]
    var baseDB = ""
    var dbURL = ""
    var redisURL = ""
    var redisPort = 0
    var dbName = ""
    var proxies: [String: TCPProxy] = [:]
    var agents: [String: SpawnedProcess] = [:]
    var coordinators: [String: SpawnedProcess] = [:]
    var incarnation: [String: Int] = [:]
    var faults: [ChaosFaultRecord] = []
    var takeovers: [Double] = []
    var servicesStarted = false
    let t0 = Date()

    init(options: ChaosCommand, seed: UInt64) throws {
        self.options = options
        self.seed = seed
        binDir = URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
        guard let r = Self.findRepo(from: [URL(fileURLWithPath: FileManager.default.currentDirectoryPath), binDir]) else {
            throw ValidationError("cannot find deploy/local/services.sh above the current directory or the hydra binary; run from the repository")
        }
        repo = r
    }

    static func findRepo(from starts: [URL]) -> URL? {
        for s in starts {
            var d = s.standardizedFileURL
            while d.path != "/" {
                if FileManager.default.isExecutableFile(atPath: d.appendingPathComponent("deploy/local/services.sh").path) { return d }
                d.deleteLastPathComponent()
            }
        }
        return nil
    }

    func say(_ s: String) {
        FileHandle.standardError.write(Data(String(format: "chaos [%6.1f s] %@\n", Date().timeIntervalSince(t0), s).utf8))
    }

    // MARK: setup

    func script(_ name: String, _ args: [String], timeout: Double = 180) throws {
        let rc = try SpawnedProcess.run([repo.appendingPathComponent("deploy/local/\(name)").path] + args,
                                      environment: ProcessInfo.processInfo.environment, log: work.appendingPathComponent("services.log").path,
                                      timeout: timeout)
        guard rc == 0 else { throw ChaosError("deploy/local/\(name) \(args.joined(separator: " ")) failed (exit \(rc)); see \(work.appendingPathComponent("services.log").path)") }
    }

    func setUp() throws {
        let localRoot = ProcessInfo.processInfo.environment["HYDRA_LOCAL_ROOT"].map { URL(fileURLWithPath: $0) } ?? repo.appendingPathComponent(".hydra-local")
        let state = localRoot.appendingPathComponent(options.instance)
        let stamp = ISO8601DateFormatter().string(from: Date()).replacingOccurrences(of: ":", with: "")
        work = state.appendingPathComponent("runs/\(stamp)-\(seed)")
        for d in ["markers", "out", "logs"] {
            try FileManager.default.createDirectory(at: work.appendingPathComponent(d), withIntermediateDirectories: true)
        }
        say("seed \(seed), \(options.jobs) jobs; files in \(work.path)")
        try script("services.sh", ["start", options.instance])
        servicesStarted = true
        let envText = try String(contentsOf: state.appendingPathComponent("env"), encoding: .utf8)
        for line in envText.split(separator: "\n") where line.hasPrefix("export ") {
            let kv = line.dropFirst("export ".count).split(separator: "=", maxSplits: 1)
            if kv.count == 2 { env[String(kv[0])] = String(kv[1]).trimmingCharacters(in: CharacterSet(charactersIn: "'\"")) }
        }
        guard let db = env["HYDRA_DATABASE_URL"], let redis = env["HYDRA_REDIS_URL"], let port = env["HYDRA_LOCAL_REDIS_PORT"].flatMap(Int.init) else {
            throw ChaosError("\(state.path)/env lacks HYDRA_DATABASE_URL, HYDRA_REDIS_URL or HYDRA_LOCAL_REDIS_PORT")
        }
        baseDB = db
        redisPort = port
        redisURL = redis
        // A fresh database per run; the instance's Redis is this run's alone.
        dbName = "hydra_chaos_\(stamp.lowercased().filter { $0.isLetter || $0.isNumber })"
        dbURL = try PGConnection.createDatabase(dbName, adminURL: baseDB)
        try RedisConnection(url: redisURL).run(["FLUSHALL"])
        _ = try Migrations.migrate(PGConnection(url: dbURL))

        let keyPath = work.appendingPathComponent("hmac.key").path
        let fd = open(keyPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw ChaosError("cannot write \(keyPath)") }
        let key = SigningKeys.generateHex() + "\n"
        _ = key.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        // Each agent gets its node's own key, as installed nodes do.
        let clusterKeys = try SigningKeys.load(current: keyPath, previous: nil)!
        for n in nodes {
            let path = work.appendingPathComponent("\(n).key").path
            FileManager.default.createFile(atPath: path, contents: Data(clusterKeys.nodeKeyFile(node: n).utf8), attributes: [.posixPermissions: 0o600])
        }
        var yaml = Self.clusterYAML
        if options.hostile {
            yaml += "\n  - name: \(HostileDriver.rogueNode)\n    gpus:\n      - {model: \"NVIDIA GeForce RTX 3060\", memory: 12GiB, weight: 3}\n"
        }
        try yaml.write(to: work.appendingPathComponent("cluster.yaml"), atomically: true, encoding: .utf8)

        for n in nodes {
            let p = TCPProxy(upstreamPort: redisPort)
            try p.start()
            proxies[n] = p
        }
        for c in ["coord-a", "coord-b"] {
            try startCoordinator(c)
            if c == "coord-a" { try waitFor("coord-a leads", timeout: 30) { self.leader() == "coord-a" } }
        }
        for n in nodes { try startAgent(n) }
        try waitFor("3 nodes up", timeout: 60) { (try? self.upNodes()) == 3 }
    }

    var childEnvironment: [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["HYDRA_DATABASE_URL"] = dbURL
        e["HYDRA_REDIS_URL"] = redisURL
        e["HYDRA_LOG_LEVEL"] = e["HYDRA_CHAOS_LOG_LEVEL"] ?? "info"
        e.removeValue(forKey: "HYDRA_CLUSTER")
        return e
    }

    func logPath(_ name: String) -> String {
        work.appendingPathComponent("logs/\(name).\(incarnation[name, default: 0]).log").path
    }

    func startCoordinator(_ name: String) throws {
        incarnation[name, default: 0] += 1
        coordinators[name] = try SpawnedProcess(name: name, argv: [
            binDir.appendingPathComponent("hydra").path, "coordinator", "--cluster", work.appendingPathComponent("cluster.yaml").path,
            "--metrics-listen", "127.0.0.1:0", "--lease", String(options.lease), "--node-timeout", String(options.nodeTimeout),
            "--hmac-key", work.appendingPathComponent("hmac.key").path,
        ], environment: childEnvironment, log: logPath(name))
    }

    func startAgent(_ node: String) throws {
        incarnation[node, default: 0] += 1
        var e = childEnvironment
        e["HYDRA_REDIS_URL"] = "redis://127.0.0.1:\(proxies[node]!.port)/0"
        agents[node] = try SpawnedProcess(name: node, argv: [
            binDir.appendingPathComponent("hydra-agent").path, "run", "--node", node, "--cluster", work.appendingPathComponent("cluster.yaml").path,
            "--simulate", "--listen", "127.0.0.1:0", "--output-dir", work.appendingPathComponent("out").path,
            "--marker-dir", work.appendingPathComponent("markers").path, "--heartbeat-interval", "0.5", "--grace", "2",
            "--hmac-key", work.appendingPathComponent("\(node).key").path,
        ], environment: e, log: logPath(node))
    }

    /// The coordinator that leads now: its latest leadership line is "leading", not a failed loop
    /// (after which it gives up the lock) or "standing by". A Redis or PostgreSQL restart makes
    /// the leader let go, and the other one may take over.
    func leader() -> String? {
        coordinators.keys.sorted().first { name in
            guard coordinators[name]!.isRunning, let log = try? String(contentsOfFile: logPath(name), encoding: .utf8),
                  let lead = log.range(of: "msg=leading", options: .backwards) else { return false }
            let lost = ["coordinator loop failed", "standing by"].compactMap { log.range(of: $0, options: .backwards)?.lowerBound }.max()
            return lost.map { lead.lowerBound > $0 } ?? true
        }
    }

    lazy var monitor = PGConnection(url: dbURL)

    func upNodes() throws -> Int {
        Int(try monitor.exec("SELECT count(*) AS n FROM nodes WHERE up AND last_seen > now() - interval '3 seconds'")[0]["n"] ?? "0") ?? 0
    }

    /// Jobs by state; nil while PostgreSQL is away.
    func counts() -> [String: Int]? {
        guard let rows = try? monitor.exec("SELECT state, count(*) AS n FROM jobs GROUP BY state") else { return nil }
        var out: [String: Int] = [:]
        for r in rows.all { out[r["state"] ?? ""] = r.int("n") ?? 0 }
        return out
    }

    static let terminal = Set(JobStateMachine.terminal.map(\.rawValue))

    func finishedCount(_ c: [String: Int]) -> Int { c.filter { Self.terminal.contains($0.key) }.values.reduce(0, +) }

    func waitFor(_ what: String, timeout: Double, _ cond: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            try checkInterrupted()
            if (try? cond()) == true { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ChaosError("timed out after \(Int(timeout)) s waiting for: \(what)")
    }

    func checkInterrupted() throws {
        if chaosInterrupted.load(ordering: .relaxed) { throw ChaosError("interrupted; stopping everything this run started") }
    }

    /// Restarts any agent or coordinator that died without being told to (and says so).
    func reviveUnexpectedExits() throws {
        for (n, a) in agents where !a.isRunning {
            say("agent \(n) exited by itself (code \(a.exitCode ?? -1)); restarting it (see \(logPath(n)))")
            try startAgent(n)
        }
        for (n, c) in coordinators where !c.isRunning {
            say("coordinator \(n) exited by itself (code \(c.exitCode ?? -1)); restarting it (see \(logPath(n)))")
            try startCoordinator(n)
        }
    }

    // MARK: the run

    func execute() throws -> Outcome {
        try setUp()
        let plan = ChaosPlan.make(seed: seed, jobs: options.jobs, nodes: nodes)
        say("faults: \(plan.faults.map(\.description).joined(separator: ", "))")
        var rng = SplitMix64(seed: seed ^ 0xC4A0_5C4A_05)
        let store = JobStore(db: PGConnection(url: dbURL))
        var submitted = 0
        let deadline = Date().addingTimeInterval(options.timeout ?? max(600, Double(options.jobs) * 0.3))
        let sampler = ProgressSampler()
        sampler.start(dbURL: dbURL)
        var driver: HostileDriver?
        if options.hostile {
            driver = try HostileDriver(redisURL: redisURL, dbURL: dbURL, nodes: nodes,
                                       clusterKeys: try SigningKeys.load(current: work.appendingPathComponent("hmac.key").path, previous: nil)!, seed: seed)
            driver!.start()
            say("hostile traffic on: rogue node \(HostileDriver.rogueNode), forged messages, replays, cancel/retry races")
        }
        var hostileText = HostileText(seed: seed ^ 0x0E7)
        for (i, size) in plan.chunks.enumerated() {
            if size > 0 {
                var batch = ChaosWorkload.batch(name: "chaos-\(i)", jobs: size, seed: seed &+ UInt64(i))
                if options.hostile {
                    // One job in four prints hostile bytes through a real agent.
                    for k in stride(from: 0, to: batch.jobs.count, by: 4) {
                        if case .object(var o) = batch.jobs[k].spec {
                            o["output_hex"] = .string(Hex.encode(hostileText.bytes(64)))
                            batch.jobs[k].spec = .object(o)
                        }
                    }
                }
                try retrying("submit chunk \(i)") { _ = try store.submit(batch, submittedBy: "chaos") }
                submitted += size
            }
            guard i < plan.faults.count else { break }
            // Strike while this chunk is in flight: once a random share of it (10–50 %) is done.
            let share = 0.1 + Double(rng.next() % 40) / 100
            let target = submitted - Int(Double(size) * (1 - share))
            try waitFor("progress before fault \(i + 1)", timeout: 300) {
                try reviveUnexpectedExits()
                return finishedCount(counts() ?? [:]) >= target
            }
            try inject(plan.faults[i], &rng)
            say("fault \(i + 1)/\(plan.faults.count) \(plan.faults[i]) done (\(finishedCount(counts() ?? [:]))/\(submitted) finished)")
        }
        var lastReport = Date()
        while Date() < deadline {
            try checkInterrupted()
            try reviveUnexpectedExits()
            if let c = counts(), finishedCount(c) >= submitted { break }
            if Date().timeIntervalSince(lastReport) > 10, let c = counts() {
                say("\(finishedCount(c))/\(submitted) finished: \(c.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")
                lastReport = Date()
            }
            Thread.sleep(forTimeInterval: 0.25)
        }
        let elapsed = Date().timeIntervalSince(t0)
        let hostile = driver?.stop()
        sampler.stop()
        // Anything still running a stale attempt would write its marker now: give it a moment.
        Thread.sleep(forTimeInterval: 2)
        var outcome = try account(submitted: submitted, elapsed: elapsed)
        if let hostile { try judgeHostile(hostile, sampler: sampler, &outcome) }
        return outcome
    }

    /// With --hostile: lost, duplicated and dead are already in the report; here the stalls, the jobs that
    /// failed although the rogue did not poison them, cancels never sent, and what the coordinator refused.
    func judgeHostile(_ h: HostileDriver.Stats, sampler: ProgressSampler, _ outcome: inout Outcome) throws {
        var failedUnexpected = 0, quarantined = 0, cancelsUnsent = 0
        var refused: [String: Int] = [:]
        try retrying("read the hostile figures") {
            let failed = try monitor.exec("SELECT id, failure_class FROM jobs WHERE state = 'failed'").all
            quarantined = failed.filter { $0["failure_class"] == "bad_result" }.count
            failedUnexpected = failed.filter { !h.unstorable.contains($0["id"] ?? "") }.count
            cancelsUnsent = try monitor.exec("SELECT count(*) AS n FROM cancel_requests WHERE sent_at IS NULL")[0].int("n") ?? 0
            refused = [:]
            let redis = try RedisConnection(url: redisURL)
            for e in RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter, "-", "+"]).array ?? []) {
                refused["coordinator:\(e.fields?["reason"] ?? "?")", default: 0] += 1
            }
            for n in nodes {
                for e in RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter(n), "-", "+"]).array ?? []) {
                    refused["agent:\(e.fields?["reason"] ?? "?")", default: 0] += 1
                }
            }
        }
        let (stalls, longest) = sampler.stalls(threshold: options.stallSeconds, faults: faults, grace: options.nodeTimeout + options.lease + 5)
        let r = outcome.report
        outcome.hostileOK = r.dead == 0 && failedUnexpected == 0 && stalls == 0 && cancelsUnsent == 0
        outcome.hostileLine = "quarantined=\(quarantined) failed_unexpected=\(failedUnexpected) stalls=\(stalls) "
            + "forged=\(h.forgedResults + h.forgedHeartbeats) replayed=\(h.replays + h.misrouted) refused=\(refused.values.reduce(0, +)) "
            + "cancel_races=\(h.cancelRaces) cancels_unsent=\(cancelsUnsent)"
        say("hostile: rogue took \(h.rogueJobs) jobs (\(h.hostileOutputs) hostile outputs, \(h.unstorable.count) unstorable, \(h.brokenBodies) broken, "
            + "\(h.silent) silent, \(h.duplicates) doubled, \(h.oversize) oversize); refused: \(refused.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")); "
            + String(format: "longest pause outside faults %.1f s", longest))
        if case .object(var o) = outcome.summary {
            o["hostile"] = .object([
                "rogue_jobs": .number(Double(h.rogueJobs)), "hostile_outputs": .number(Double(h.hostileOutputs)),
                "unstorable_sent": .number(Double(h.unstorable.count)), "quarantined": .number(Double(quarantined)),
                "broken_bodies": .number(Double(h.brokenBodies)), "silent": .number(Double(h.silent)), "doubled": .number(Double(h.duplicates)),
                "oversize": .number(Double(h.oversize)),
                "forged_results": .number(Double(h.forgedResults)), "forged_heartbeats": .number(Double(h.forgedHeartbeats)),
                "replays": .number(Double(h.replays)), "misrouted": .number(Double(h.misrouted)), "cancel_races": .number(Double(h.cancelRaces)),
                "cancels_unsent": .number(Double(cancelsUnsent)), "failed_unexpected": .number(Double(failedUnexpected)),
                "stalls": .number(Double(stalls)), "longest_pause_s": .number((longest * 10).rounded() / 10),
                "refused": .object(refused.mapValues { .number(Double($0)) }),
            ])
            outcome.summary = .object(o)
        }
    }

    func retrying(_ what: String, _ body: () throws -> Void) throws {
        var lastError: (any Error)?
        for _ in 0..<60 {
            do { try body(); return } catch { lastError = error; Thread.sleep(forTimeInterval: 0.5) }
        }
        throw ChaosError("\(what): \(lastError.map { "\($0)" } ?? "failed")")
    }

    func inject(_ fault: ChaosFault, _ rng: inout SplitMix64) throws {
        let start = Date().timeIntervalSince1970
        var affected: [String]? = nil
        say("fault: \(fault)")
        switch fault {
        case .killAgent(let n):
            affected = [n]
            agents[n]?.signal(SIGKILL)
            agents[n]?.wait(timeout: 10)
            Thread.sleep(forTimeInterval: 0.5 + Double(rng.next() % 150) / 100)
            try startAgent(n)
        case .killCoordinator:
            // Right after a Redis or PostgreSQL restart the lead may be changing hands: wait for it to settle.
            try waitFor("a coordinator leads before the coordinator kill", timeout: 30) { self.leader() != nil }
            guard let l = leader() else { throw ChaosError("no coordinator leads before the coordinator kill") }
            coordinators[l]!.signal(SIGKILL)
            coordinators[l]!.wait(timeout: 10)
            let killed = Date()
            try startCoordinator(l)
            try waitFor("a coordinator takes over", timeout: 30) { self.leader() != nil }
            takeovers.append(Date().timeIntervalSince(killed))
            say(String(format: "takeover after %.2f s", takeovers.last!))
        case .restartRedis(let persistence):
            try script("redis-restart.sh", [options.instance] + (persistence ? [] : ["--no-persistence"]) + ["--down", "1"])
        case .restartPostgreSQL:
            try script("pg-restart.sh", [options.instance, "--down", "2"])
            monitor.close()
        case .partition(let n):
            affected = [n]
            proxies[n]!.cut()
            let healAt = Date().addingTimeInterval(options.partitionSeconds ?? options.nodeTimeout + 4)
            while Date() < healAt && !chaosInterrupted.load(ordering: .relaxed) { Thread.sleep(forTimeInterval: 0.05) }
            proxies[n]!.heal()
        }
        faults.append(ChaosFaultRecord(fault: fault, nodes: affected, start: start, end: Date().timeIntervalSince1970))
    }

    func account(submitted: Int, elapsed: Double) throws -> Outcome {
        var states: [String: String] = [:]
        var events: [ChaosEvent] = []
        try retrying("read the final state") {
            states = [:]
            for r in try monitor.exec("SELECT id, state FROM jobs").all { states[r["id"] ?? ""] = r["state"] ?? "" }
            events = try monitor.exec("""
                SELECT job_id, attempt, from_state, to_state, extract(epoch FROM at) AS at, detail FROM job_events ORDER BY id
                """).all.map { r in
                ChaosEvent(jobID: r["job_id"] ?? "", attempt: r.int("attempt") ?? 0, from: r["from_state"], to: r["to_state"] ?? "",
                           at: r.double("at") ?? 0, detail: r.json("detail"))
            }
        }
        let markers = (try? FileManager.default.contentsOfDirectory(atPath: work.appendingPathComponent("markers").path)) ?? []
        let report = ChaosAccounting.report(submitted: submitted, states: states, events: events, markers: markers, faults: faults)
        let faultList: [JSONValue] = faults.map { f in
            .object(["fault": .string(f.fault.description), "at_s": .number(((f.start - t0.timeIntervalSince1970) * 10).rounded() / 10),
                     "duration_s": .number(((f.end - f.start) * 10).rounded() / 10)])
        }
        let reportJSON = try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(report))
        let summary = JSONValue.object([
            "seed": .string(String(seed)), "report": reportJSON, "faults": .array(faultList),
            "duration_s": .number((elapsed * 10).rounded() / 10), "jobs_per_s": .number((Double(submitted) / elapsed * 10).rounded() / 10),
            "max_takeover_s": .number(((takeovers.max() ?? 0) * 100).rounded() / 100),
            "attempts_total": .number(Double(markers.filter { !$0.contains(".dup.") }.count)),
            "work_dir": .string(work.path),
        ])
        say(String(format: "done in %.1f s (%.1f jobs/s); %d requeues; coordinator takeover max %.2f s", elapsed, Double(submitted) / elapsed,
                   report.requeues, takeovers.max() ?? 0))
        return Outcome(report: report, summary: summary)
    }

    /// Stops everything this run started, whatever happened.
    func cleanup(success: Bool) {
        for (_, a) in agents { a.signal(SIGTERM) }
        for (_, c) in coordinators { c.signal(SIGTERM) }
        for (_, a) in agents { a.stop(grace: 5) }
        for (_, c) in coordinators { c.stop(grace: 5) }
        for (_, p) in proxies { p.stop() }
        monitor.close()
        if success && !options.keep && !dbName.isEmpty {
            _ = try? PGConnection(url: baseDB).exec("DROP DATABASE IF EXISTS \(dbName)")
        }
        if servicesStarted && !options.keep { try? script("services.sh", ["stop", options.instance]) }
    }

    static let clusterYAML = """
    headroom: 0
    nodes:
      - name: hydra-ai
        gpus:
          - {model: "NVIDIA GeForce RTX 5090", memory: 32GiB, weight: 10}
          - {model: "NVIDIA GeForce RTX 4090", memory: 24GiB, weight: 8}
      - name: hydra-compute
        gpus:
          - {model: "NVIDIA GeForce RTX 5070 Ti", memory: 16GiB, weight: 6}
          - {model: "NVIDIA GeForce RTX 3060", memory: 12GiB, weight: 3}
      - name: hydra-storage
        gpus: []
    """
}

struct ChaosError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
