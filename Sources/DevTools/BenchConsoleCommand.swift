import ArgumentParser
import Foundation
import HydraCore
import HydraIO
import HydraStore
import HydraConsole
import HydraCoordinator

/// Fills a scratch database with a realistic population and times each console
/// page server-side (query + render, no socket), printing p50/p99.
struct BenchConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Time every console page on a scratch database with N jobs; prints p50/p99 in ms.",
        discussion: """
        Creates a scratch database next to the one in HYDRA_DATABASE_URL (hydra_bench_<random>, needs CREATEDB),
        fills it, renders each page --iterations times and drops it again (--keep leaves it).
        """)
    @OptionGroup var conn: ConnectionOptions
    @Option(help: "Jobs in the database.") var jobs = 10_000
    @Option(help: "Jobs per batch.") var batchSize = 500
    @Option(help: "Renders per page.") var iterations = 100
    @Flag(help: "Keep the scratch database afterwards (its URL is printed).") var keep = false

    func run() throws {
        guard jobs > 0, batchSize > 0, iterations > 0 else { throw ValidationError("--jobs, --batch-size and --iterations must be > 0") }
        let name = "hydra_bench_\(UUID().uuidString.prefix(8).lowercased())"
        guard var comps = URLComponents(string: conn.database) else { throw ValidationError("HYDRA_DATABASE_URL is not a URL") }
        let admin = PGConnection(url: conn.database)
        do { try admin.exec("CREATE DATABASE \(name)") } catch { fail("cannot create the scratch database: \(error)") }
        comps.path = "/" + name
        let url = comps.string!
        let reports = FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        defer {
            try? FileManager.default.removeItem(atPath: reports)
            if keep { print("scratch database kept: \(PGConnection.redacted(url))") }
            else { _ = try? admin.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)") }
            admin.close()
        }
        let db = PGConnection(url: url)
        try Migrations.migrate(db)
        let started = Date()
        let fixture = try populate(JobStore(db: db), reportsDir: reports)
        print(String(format: "populated %d jobs in %d batches, %d events, in %.1f s", jobs, fixture.batches.count,
                     try db.exec("SELECT count(*) AS n FROM job_events")[0].int("n") ?? 0, Date().timeIntervalSince(started)))
        db.close()

        // No shared reads: each render runs its queries, which is what this times.
        let console = ConsoleServer(databaseURL: url, settings: ConsoleSettings(outputDirs: [reports], reportsDir: reports), readCacheTTL: 0)
        let b = fixture.batches[fixture.batches.count / 2]
        let pages: [(String, String, [String: String])] = [
            ("cluster", "/cluster", [:]), ("batches", "/batches", [:]), ("batch", "/batches/\(b)", [:]),
            ("batch ?state=pending", "/batches/\(b)", ["state": "pending"]), ("batch page 4", "/batches/\(b)", ["page": "4"]),
            ("job", "/jobs/\(fixture.job)", [:]), ("approvals", "/approvals", [:]), ("nights", "/nights", [:]),
            ("api nodes", "/api/v1/nodes", [:]), ("api batches", "/api/v1/batches", [:]), ("api batch", "/api/v1/batches/\(b)", [:]),
            ("api jobs (200)", "/api/v1/jobs", ["batch": b]), ("api job", "/api/v1/jobs/\(fixture.job)", [:]),
            ("api approvals", "/api/v1/approvals", [:]),
        ]
        print("page                      p50 ms   p99 ms   max ms    bytes")
        for (label, path, query) in pages {
            let req = HTTPRequest.local("GET", path, query: query, headers: ["host": "127.0.0.1:8480"])
            var times: [Double] = []
            var size = 0
            for i in 0..<(iterations + 3) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                let resp = console.handle(req)
                let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
                guard case .full(let status, _, let body) = resp, status == 200 else {
                    if case .full(let status, _, let body) = resp { fail("\(label): HTTP \(status): \(String(decoding: body.prefix(300), as: UTF8.self))") }
                    fail("\(label): unexpected response")
                }
                size = body.count
                if i >= 3 { times.append(ms) }  // the first renders warm the pool and PostgreSQL's caches
            }
            times.sort()
            func pct(_ p: Double) -> Double { times[min(times.count - 1, Int((Double(times.count) * p).rounded(.up)) - 1)] }
            print(label.padding(toLength: 24, withPad: " ", startingAt: 0) + String(format: " %8.2f %8.2f %8.2f %8d", pct(0.5), pct(0.99), times.last!, size))
        }
        console.pool.closeAll()
    }

    struct Fixture { var batches: [String]; var job: String }

    func populate(_ store: JobStore, reportsDir: String) throws -> Fixture {
        let gib: UInt64 = 1 << 30
        func gpu(_ i: Int, _ node: String, _ name: String, _ mem: UInt64, used: UInt64, util: Double, temp: Double) -> GPUInfo {
            GPUInfo(index: i, uuid: "GPU-\(node)-\(i)", name: name, memoryTotalBytes: mem * gib, memoryUsedBytes: used * gib,
                    memoryFreeBytes: (mem - used) * gib, utilizationGPUPercent: util, temperatureCelsius: temp)
        }
        let now = Date().timeIntervalSince1970
        try store.upsertNodes([
            NodeRow(name: "hydra-ai", lastSeen: now, up: true, draining: false, agentVersion: hydraVersion, inventory: Inventory(gpus: [
                gpu(0, "hydra-ai", "NVIDIA GeForce RTX 5090", 32, used: 20, util: 87, temp: 71), gpu(1, "hydra-ai", "NVIDIA GeForce RTX 4090", 24, used: 9, util: 40, temp: 58)]), running: []),
            NodeRow(name: "hydra-compute", lastSeen: now, up: true, draining: false, agentVersion: hydraVersion, inventory: Inventory(gpus: [
                gpu(0, "hydra-compute", "NVIDIA GeForce RTX 5070 Ti", 16, used: 8, util: 65, temp: 63), gpu(1, "hydra-compute", "NVIDIA GeForce RTX 3060", 12, used: 2, util: 5, temp: 41)]), running: []),
            NodeRow(name: "hydra-storage", lastSeen: now, up: true, draining: false, agentVersion: hydraVersion, inventory: Inventory(), running: []),
        ])
        var batches: [String] = []
        var left = jobs
        var k = 0
        while left > 0 {
            let n = min(batchSize, left)
            let plan = try BatchFile.parse(text: """
                name: bench-night-\(k)
                priority: \(k % 7)
                jobs:
                  - {name: render-tidepool, kind: sleep, count: \(n), vram: 8GiB, spec: {duration_s: 2, prompt: "a lighthouse at dusk"}}
                """, file: "bench", cluster: nil)
            batches.append(try store.submit(plan, submittedBy: "bench"))
            left -= n; k += 1
        }
        // States by position: 70% succeeded, 5% failed, 3% dead, 2% cancelled, the rest pending; 8 running.
        try store.db.exec("""
            UPDATE jobs SET state = CASE WHEN seq % 100 < 70 THEN 'succeeded' WHEN seq % 100 < 75 THEN 'failed'
                                         WHEN seq % 100 < 78 THEN 'dead' WHEN seq % 100 < 80 THEN 'cancelled' ELSE 'pending' END,
                   attempt = CASE WHEN seq % 100 < 80 THEN 1 + (seq % 100 >= 70)::int ELSE 0 END
            """)
        try store.db.exec("""
            UPDATE jobs SET started_at = now() - make_interval(secs => (seq % 3600) + 5), finished_at = now() - make_interval(secs => seq % 3600),
                   node = 'hydra-compute', gpu_uuids = '{GPU-hydra-compute-0}',
                   result = jsonb_build_object('output', jsonb_build_object('images', jsonb_build_array('\(reportsDir)/img-' || seq || '.png'), 'caption', 'tidepool ' || seq),
                                               'duration_s', 5, 'peak_vram_bytes', 7516192768, 'node', 'hydra-compute')
            WHERE state = 'succeeded'
            """)
        try store.db.exec("""
            UPDATE jobs SET finished_at = now() - make_interval(secs => seq % 3600), failure_class = 'oom',
                   error = jsonb_build_array(jsonb_build_object('attempt', 1, 'class', 'transient', 'message', 'connection reset by ComfyUI', 'node', 'hydra-compute', 'at', extract(epoch from now()) - 100),
                                             jsonb_build_object('attempt', 2, 'class', 'oom', 'message', 'CUDA out of memory (tried to allocate 2.0 GiB)', 'node', 'hydra-ai', 'at', extract(epoch from now()) - 50))
            WHERE state IN ('failed', 'dead')
            """)
        try store.db.exec("UPDATE jobs SET pending_reason = 'needs 8.0 GiB on one GPU; most free is 4.0 GiB (hydra-compute #0 NVIDIA GeForce RTX 5070 Ti)' WHERE state = 'pending'")
        try store.db.exec("""
            UPDATE jobs SET state = 'running', attempt = 1, node = v.node, gpu_uuids = ARRAY[v.gpu], started_at = now(), pending_reason = NULL
            FROM (SELECT id, (ARRAY['hydra-ai','hydra-ai','hydra-compute','hydra-compute'])[1 + (row_number() OVER () % 4)::int] AS node,
                         (ARRAY['GPU-hydra-ai-0','GPU-hydra-ai-1','GPU-hydra-compute-0','GPU-hydra-compute-1'])[1 + (row_number() OVER () % 4)::int] AS gpu
                  FROM jobs WHERE state = 'pending' LIMIT 8) AS v
            WHERE jobs.id = v.id
            """)
        try store.db.exec("""
            INSERT INTO job_events (job_id, attempt, from_state, to_state, detail)
            SELECT id, 1, s.f, s.t, jsonb_build_object('node', 'hydra-compute')
            FROM jobs, (VALUES ('pending', 'dispatched'), ('dispatched', 'running')) AS s(f, t) WHERE state <> 'pending'
            """)
        try store.db.exec("""
            INSERT INTO job_events (job_id, attempt, from_state, to_state, detail)
            SELECT id, attempt, 'running', state, jsonb_build_object('outcome', state) FROM jobs WHERE state IN ('succeeded', 'failed', 'dead')
            """)
        try store.db.exec("ANALYZE jobs"); try store.db.exec("ANALYZE job_events")
        for i in 0..<40 {
            let id = try store.requestApproval(action: i % 2 == 0 ? "train_lora" : "delete_assets", tier: 2, title: "LoRA from night \(i): harbor-festival style",
                                               detail: .object(["images": .array((0..<6).map { .string("\(reportsDir)/img-\(i * 6 + $0).png") }),
                                                                "dataset": .string("harbor-festival-\(i)")]))
            if i >= 20 { _ = try store.decide(approval: id, i % 3 == 0 ? .rejected : .approved, by: "bench", reason: "fictional reviewer note \(i)") }
        }
        try FileManager.default.createDirectory(atPath: reportsDir, withIntermediateDirectories: true)
        for d in 1...14 {
            let md = """
            # Overnight report 2031-03-\(String(format: "%02d", d))

            ## Summary
            - \(jobs) jobs, \(jobs * 7 / 10) succeeded
            - GPU hours: **41.5**

            | node | jobs | busy |
            |---|---:|---:|
            | hydra-ai | 4100 | 92% |
            | hydra-compute | 3800 | 88% |

            ```
            hydra status --summary bench-night-\(d)
            ```
            """
            try md.write(toFile: "\(reportsDir)/2031-03-\(String(format: "%02d", d))_overnight_report.md", atomically: true, encoding: .utf8)
        }
        let job = try store.db.exec("SELECT id FROM jobs WHERE state = 'dead' ORDER BY seq LIMIT 1")[0]["id"] ?? ""
        return Fixture(batches: batches, job: job)
    }
}
