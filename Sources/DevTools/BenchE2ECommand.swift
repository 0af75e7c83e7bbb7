import ArgumentParser
import Foundation
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraCoordinator

/// A throwaway Hydra cluster for the end-to-end benchmarks: a fresh PostgreSQL database,
/// an emptied Redis DB, and real `hydra coordinator` / `hydra-agent --simulate` processes
/// from this binary's directory, so the whole path is measured, not a model of it.
final class BenchCluster {
    let dbURL: String
    let redisURL: String
    let dir: URL
    let binDir: URL
    let clusterFile: String
    let keyFile: String
    private let adminURL: String
    private let dbName: String
    private var processes: [(name: String, process: Process)] = []

    init(baseDatabaseURL: String, redisURL: String, flushRedis: Bool, clusterYAML: String) throws {
        binDir = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for b in ["hydra", "hydra-agent"] where !FileManager.default.isExecutableFile(atPath: binDir.appendingPathComponent(b).path) {
            throw ValidationError("\(b) not found next to this binary in \(binDir.path) (swift build -c release builds both)")
        }
        let redis = try RedisConnection(url: redisURL)
        let size = try redis.run(["DBSIZE"]).integer ?? 0
        if size > 0 && !flushRedis {
            throw ValidationError("Redis DB \(RedisEndpoint.redacted(redisURL)) holds \(size) keys; the benchmark needs an empty one (--flush-redis empties it)")
        }
        if size > 0 { try redis.run(["FLUSHDB"]) }
        self.redisURL = redisURL
        // A database of its own: the measured tables start empty and nothing of the operator's is touched.
        dbName = "hydra_bench_\(UUID().uuidString.prefix(8).lowercased())"
        adminURL = baseDatabaseURL
        dbURL = try PGConnection.createDatabase(dbName, adminURL: baseDatabaseURL)
        let db = PGConnection(url: dbURL)
        _ = try Migrations.migrate(db)
        db.close()

        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-bench-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        clusterFile = dir.appendingPathComponent("cluster.yaml").path
        try clusterYAML.write(toFile: clusterFile, atomically: true, encoding: .utf8)
        keyFile = dir.appendingPathComponent("hmac.key").path
        // Envelopes are signed as in production: the HMAC is part of the measured path.
        let fd = open(keyFile, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = (SigningKeys.generateHex() + "\n").withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }

    private func start(_ name: String, binary: String, _ args: [String]) throws {
        var env = ProcessInfo.processInfo.environment
        env["HYDRA_DATABASE_URL"] = dbURL
        env["HYDRA_REDIS_URL"] = redisURL
        let p = try Process.startLogged(binDir.appendingPathComponent(binary), args, environment: env,
                                        log: dir.appendingPathComponent("\(name).log"))
        processes.append((name, p))
    }

    func startCoordinator() throws {
        try start("coordinator", binary: "hydra", ["coordinator", "--cluster", clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                   "--hmac-key", keyFile])
    }

    /// Each agent signs with its own node key, as in production.
    func nodeKey(_ node: String) throws -> String {
        let path = dir.appendingPathComponent("\(node).key").path
        let keys = try SigningKeys.load(current: keyFile, previous: nil)!
        FileManager.default.createFile(atPath: path, contents: Data(keys.nodeKeyFile(node: node).utf8), attributes: [.posixPermissions: 0o600])
        return path
    }

    func startAgent(_ node: String, prefetch: Int) throws {
        try start(node, binary: "hydra-agent", ["run", "--node", node, "--cluster", clusterFile, "--simulate", "--listen", "127.0.0.1:0",
                                                "--output-dir", dir.appendingPathComponent("out").path, "--hmac-key", try nodeKey(node),
                                                "--prefetch", String(prefetch), "--grace", "2"])
    }

    /// Until every node heartbeats and the coordinator has recorded it.
    func waitForNodes(_ names: [String], timeout: Double = 30) throws {
        let db = PGConnection(url: dbURL)
        defer { db.close() }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let up = try db.exec("SELECT count(*) AS n FROM nodes WHERE up AND name = ANY($1::text[])", [PGConnection.textArray(names)])
            if up[0].int("n") == names.count { return }
            if let dead = processes.first(where: { !$0.process.isRunning }) {
                throw ValidationError("\(dead.name) exited early; its log: \(dir.appendingPathComponent("\(dead.name).log").path)")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw ValidationError("nodes did not come up within \(Int(timeout)) s; logs in \(dir.path)")
    }

    /// Until every job of the batch is in a final state; returns the counts by state.
    func waitForBatch(_ batch: String, jobs: Int, timeout: Double) throws -> [String: Int] {
        let db = PGConnection(url: dbURL)
        defer { db.close() }
        let deadline = Date().addingTimeInterval(timeout)
        var counts: [String: Int] = [:]
        while Date() < deadline {
            // Coarse polling on purpose: the rates come from the jobs' own timestamps, not from this loop,
            // and a tight poll would take CPU from the system under test.
            Thread.sleep(forTimeInterval: 0.25)
            // Stops at the first unfinished job (index on batch_id, state): counting the whole batch on
            // every poll cost the system under test ~30 ms of PostgreSQL time each time.
            let open = try db.exec("""
                SELECT EXISTS (SELECT 1 FROM jobs WHERE batch_id = $1::uuid
                               AND state IN ('pending', 'placed', 'dispatched', 'running', 'retry_wait')) AS open
                """, [batch])
            if open.all.first?.bool("open") == true { continue }
            counts = [:]
            for r in try db.exec("SELECT state, count(*) AS n FROM jobs WHERE batch_id = $1::uuid GROUP BY state", [batch]).all {
                counts[r["state"] ?? "?"] = r.int("n") ?? 0
            }
            let done = ["succeeded", "failed", "dead", "cancelled"].reduce(0) { $0 + (counts[$1] ?? 0) }
            if done == jobs { return counts }
        }
        throw ValidationError("the batch did not finish within \(Int(timeout)) s (\(counts)); logs in \(dir.path)")
    }

    func stop() {
        for (_, p) in processes.reversed() where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(10)
        for (_, p) in processes {
            while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        processes = []
        let admin = PGConnection(url: adminURL)
        _ = try? admin.exec("DROP DATABASE IF EXISTS \(dbName) WITH (FORCE)")
        admin.close()
        try? FileManager.default.removeItem(at: dir)
    }

    func submit(_ plan: BatchPlan) throws -> (batch: String, seconds: Double) {
        let store = JobStore(db: PGConnection(url: dbURL))
        defer { store.db.close() }
        let t0 = Date()
        let id = try store.submit(plan, submittedBy: "bench")
        return (id, Date().timeIntervalSince(t0))
    }

    func query(_ sql: String, _ params: [String?]) throws -> PGRow {
        let db = PGConnection(url: dbURL)
        defer { db.close() }
        return try db.exec(sql, params)[0]
    }
}

/// `hydra-dev bench e2e`: no-op jobs through the whole path on a local cluster.
struct BenchE2ECommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2e",
        abstract: "No-op jobs through the whole path: submit → PostgreSQL → router → Redis → agent → result → PostgreSQL.",
        discussion: """
        Creates a fresh database on $HYDRA_DATABASE_URL's server, empties the Redis DB of $HYDRA_REDIS_URL
        (only with --flush-redis when it holds keys), starts a coordinator and --agents simulated agents from this
        binary's directory, submits --jobs `sleep` jobs of 0 s as one batch and waits for all to finish.
        Prints jobs/s (jobs over the time from the batch's submission to the last job's end) and the
        submit-to-done latency p50/p99 of the jobs, from their own timestamps in PostgreSQL.
        Build with -c release. bench/e2e runs it beside Celery and Ray.
        """)

    @Option(help: "Jobs in the batch.") var jobs = 20_000
    @Option(help: "Simulated nodes, one agent each.") var agents = 3
    @Option(name: .customLong("cpu-slots"), help: "CPU-only jobs each node runs at once (the cluster file's cpu_slots).") var cpuSlots = 256
    @Option(help: "Jobs each agent holds at once (its --prefetch).") var prefetch = 256
    @Flag(name: .customLong("flush-redis"), help: "Empty the Redis DB first if it holds keys.") var flushRedis = false
    @Flag(help: "Two entries of half the jobs each, the second after the first (every job of it waits on every job of the first).")
    var after = false
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var conn: ConnectionOptions

    func validate() throws {
        guard !after || jobs >= 2 else { throw ValidationError("--after needs --jobs ≥ 2") }
        guard jobs >= 1, jobs <= BatchFile.maxJobs else { throw ValidationError("--jobs must be between 1 and \(BatchFile.maxJobs)") }
        guard agents >= 1, agents <= 64 else { throw ValidationError("--agents must be between 1 and 64") }
        guard cpuSlots >= 1, prefetch >= 1 else { throw ValidationError("--cpu-slots and --prefetch must be ≥ 1") }
    }

    func run() throws {
        let names = (1...agents).map { "bench-\($0)" }
        let yaml = "nodes:\n" + names.map { "  - name: \($0)\n    cpu_slots: \(cpuSlots)\n    gpus: []\n" }.joined()
        let cluster = try BenchCluster(baseDatabaseURL: conn.database, redisURL: conn.redis, flushRedis: flushRedis, clusterYAML: yaml)
        defer { cluster.stop() }
        try cluster.startCoordinator()
        for n in names { try cluster.startAgent(n, prefetch: prefetch) }
        try cluster.waitForNodes(names)

        let noop = NewJob(name: "noop", kind: "sleep", spec: .object(["duration_s": .number(0)]), vramBytes: 0, gpus: 0)
        var plan = BatchPlan(name: "bench-e2e", jobs: Array(repeating: noop, count: jobs))
        if after {
            plan.groups = [JobGroup(name: "first", jobs: 0..<jobs / 2), JobGroup(name: "second", jobs: jobs / 2..<jobs, after: [0])]
        }
        let (batch, submitS) = try cluster.submit(plan)
        let counts = try cluster.waitForBatch(batch, jobs: jobs, timeout: max(120, Double(jobs) / 50))
        // From the batch's submission (the transaction's start) to each job's end, as PostgreSQL recorded them.
        let r = try cluster.query("""
            WITH d AS (SELECT extract(epoch from j.finished_at - b.submitted_at) AS s
                       FROM jobs j JOIN batches b ON b.id = j.batch_id WHERE j.batch_id = $1::uuid AND j.state = 'succeeded')
            SELECT max(s) AS wall, percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99 FROM d
            """, [batch])
        let wall = r.double("wall") ?? 0
        let succeeded = counts["succeeded"] ?? 0
        let rate = wall > 0 ? Double(succeeded) / wall : 0
        if json {
            struct Out: Encodable {
                var jobs: Int, agents: Int, succeeded: Int, submit_s: Double, wall_s: Double
                var hydra_jobs_per_s: Double, hydra_p50_ms: Double, hydra_p99_ms: Double
            }
            print(try JSONCoding.encodeString(Out(jobs: jobs, agents: agents, succeeded: succeeded, submit_s: submitS, wall_s: wall,
                                                  hydra_jobs_per_s: rate, hydra_p50_ms: (r.double("p50") ?? 0) * 1000,
                                                  hydra_p99_ms: (r.double("p99") ?? 0) * 1000)))
            return
        }
        print(String(format: "hydra e2e: %d no-op jobs on %d agents: %d succeeded in %.2f s (submit %.2f s): %.0f jobs/s",
                     jobs, agents, succeeded, wall, submitS, rate))
        print(String(format: "submit-to-done latency: p50 %.0f ms, p99 %.0f ms", (r.double("p50") ?? 0) * 1000, (r.double("p99") ?? 0) * 1000))
        if succeeded != jobs { print("not succeeded: \(counts.filter { $0.key != "succeeded" })") }
    }
}

/// `hydra-dev bench gap`: the dispatch gap with every GPU saturated by short jobs.
struct BenchGapCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gap",
        abstract: "Dispatch gap: time from a job's end on a GPU to the next job running on it, GPUs saturated.",
        discussion: """
        Starts a coordinator and --agents simulated agents with --gpus GPUs each, submits enough short GPU jobs
        (--duration seconds, each needing most of a GPU's VRAM so one runs per GPU) to keep every GPU busy
        for --per-gpu jobs, and computes per GPU the gaps between one job's end and the next one's start from
        the agents' own timestamps (one clock per GPU). The coordinator exports the same quantity live as the
        histogram hydra_dispatch_gap_seconds.
        """)

    @Option(help: "Simulated nodes, one agent each.") var agents = 3
    @Option(help: "GPUs per node.") var gpus = 2
    @Option(name: .customLong("per-gpu"), help: "Jobs per GPU.") var perGPU = 50
    @Option(help: "Seconds each job runs.") var duration = 0.05
    @Option(help: "Jobs each agent holds at once (its --prefetch); default one per GPU.") var prefetch: Int?
    @Flag(name: .customLong("flush-redis"), help: "Empty the Redis DB first if it holds keys.") var flushRedis = false
    @Flag(help: "Print JSON.") var json = false
    @OptionGroup var conn: ConnectionOptions

    func run() throws {
        let names = (1...agents).map { "bench-\($0)" }
        let gpuLines = (0..<gpus).map { _ in "      - {model: \"NVIDIA GeForce RTX 4090\", memory: 24GiB, weight: 8}\n" }.joined()
        let yaml = "headroom: 0\nnodes:\n" + names.map { "  - name: \($0)\n    cpu_slots: 0\n    gpus:\n" + gpuLines }.joined()
        let cluster = try BenchCluster(baseDatabaseURL: conn.database, redisURL: conn.redis, flushRedis: flushRedis, clusterYAML: yaml)
        defer { cluster.stop() }
        try cluster.startCoordinator()
        for n in names { try cluster.startAgent(n, prefetch: prefetch ?? gpus) }
        try cluster.waitForNodes(names)
        // Wait for the first inventories so that the first pass already sees every GPU.
        Thread.sleep(forTimeInterval: 1.5)

        let total = agents * gpus * perGPU
        // 16 GiB of a 24 GiB GPU: exactly one job per GPU at a time.
        let job = NewJob(name: "short", kind: "sleep", spec: .object(["duration_s": .number(duration)]), vramBytes: 16 << 30, gpus: 1)
        let (batch, _) = try cluster.submit(BatchPlan(name: "bench-gap", jobs: Array(repeating: job, count: total)))
        let counts = try cluster.waitForBatch(batch, jobs: total, timeout: max(120, Double(perGPU) * duration * 20))
        let r = try cluster.query("""
            WITH t AS (SELECT gpu_uuids[1] AS g, extract(epoch from started_at) AS s,
                              extract(epoch from started_at) + (result->>'duration_s')::float8 AS e
                       FROM jobs WHERE batch_id = $1::uuid AND state = 'succeeded'),
                 gaps AS (SELECT s - lag(e) OVER (PARTITION BY g ORDER BY s) AS gap FROM t),
                 span AS (SELECT extract(epoch from max(finished_at) - min(dispatched_at)) AS wall FROM jobs WHERE batch_id = $1::uuid)
            SELECT count(gap) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY gap) AS p50,
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY gap) AS p99, max(gap) AS max,
                   (SELECT wall FROM span) AS wall
            FROM gaps WHERE gap IS NOT NULL
            """, [batch])
        let ms = { (c: String) in (r.double(c) ?? 0) * 1000 }
        let busy = Double(total) * duration / (Double(agents * gpus) * max(r.double("wall") ?? 1, 1e-9))
        if json {
            struct Out: Encodable {
                var gpus: Int, jobs: Int, duration_s: Double, gaps: Int, succeeded: Int
                var gap_p50_ms: Double, gap_p99_ms: Double, gap_max_ms: Double, gpu_busy_ratio: Double
            }
            print(try JSONCoding.encodeString(Out(gpus: agents * gpus, jobs: total, duration_s: duration, gaps: r.int("n") ?? 0,
                                                  succeeded: counts["succeeded"] ?? 0, gap_p50_ms: ms("p50"), gap_p99_ms: ms("p99"),
                                                  gap_max_ms: ms("max"), gpu_busy_ratio: busy)))
            return
        }
        print(String(format: "dispatch gap: %d GPUs, %d jobs of %.0f ms: %d gaps, p50 %.1f ms, p99 %.1f ms, max %.1f ms; GPUs busy %.0f%%",
                     agents * gpus, total, duration * 1000, r.int("n") ?? 0, ms("p50"), ms("p99"), ms("max"), busy * 100))
        if (counts["succeeded"] ?? 0) != total { print("not succeeded: \(counts.filter { $0.key != "succeeded" })") }
    }
}
