import ArgumentParser
import Foundation
import HydraCore
import HydraIO
import HydraStore
import HydraCoordinator

/// `hydra-dev bench deps`: what a batch where every job of one entry waits on every job of another
/// (`after:` a whole entry) costs the coordinator's dependency reads, from parse to the last ready job.
struct BenchDepsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deps",
        abstract: "Time an `after:` batch: --first jobs, then --second jobs that each wait on all of them.",
        discussion: """
        Creates a fresh database on $HYDRA_DATABASE_URL's server (dropped at the end), parses the batch file
        text, submits it, and times the reads the coordinator makes on every pass and every sweep: the
        ready list (`pendingIDs`), the upcoming hint (`upcomingRows`, its 250 ms timeout lifted so the
        real cost shows), the dependency sweep (`settleDependencies`). Then it marks every job of the
        first entry succeeded and times the ready list again (now the second entry's jobs). Prints
        seconds per step and the size of the jobs table. No coordinator or agent runs.
        """)

    @Option(help: "Jobs in the first entry.") var first = 10_000
    @Option(help: "Jobs in the second entry, each after the whole first entry.") var second = 10_000
    @Option(help: "Split both into this many entry pairs, each second entry after its first (many small entries instead of two big ones).")
    var pairs = 1
    @Option(help: "Finished jobs already in the table (one old batch), as on a coordinator that has run for a while.") var history = 0
    @Option(name: .customLong("stale-entries"), help: "Old entries whose one job failed for good (their dependents long cancelled), as failures pile up over months.")
    var staleEntries = 0
    @Flag(help: "Print JSON.") var json = false
    @Flag(name: .customLong("keep-database"), help: "Keep the database for a look with psql (its name is printed).") var keepDatabase = false
    @OptionGroup var conn: ConnectionOptions

    func validate() throws {
        guard first >= 1, second >= 1, first + second <= BatchFile.maxJobs else {
            throw ValidationError("--first and --second must be ≥ 1 and together at most \(BatchFile.maxJobs)")
        }
        guard pairs >= 1, pairs <= min(first, second) else { throw ValidationError("--pairs must be between 1 and min(--first, --second)") }
        guard history >= 0, history <= 10_000_000 else { throw ValidationError("--history must be between 0 and 10000000") }
    }

    func run() throws {
        let name = "hydra_bench_\(UUID().uuidString.prefix(8).lowercased())"
        let url = try PGConnection.createDatabase(name, adminURL: conn.database)
        defer {
            if keepDatabase {
                FileHandle.standardError.write(Data("kept database \(name)\n".utf8))
            } else {
                let admin = PGConnection(url: conn.database)
                _ = try? admin.exec("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
                admin.close()
            }
        }
        let db = PGConnection(url: url)
        defer { db.close() }
        _ = try Migrations.migrate(db)
        let store = JobStore(db: db)
        // An old batch of `count` jobs in `state`, each its own waited-on entry when `entries`.
        func oldBatch(_ name: String, count: Int, state: String, entries: Bool) throws {
            guard count > 0 else { return }
            let old = UUID().uuidString.lowercased()
            _ = try db.exec("INSERT INTO batches (id, name, spec) VALUES ($1::uuid, $2, '{}')", [old, name])
            _ = try db.exec("""
                INSERT INTO jobs (id, batch_id, name, kind, spec, state, idempotency_key, finished_at, dep_group)
                SELECT gen_random_uuid(), $1::uuid, $2 || '-' || i, 'sleep', '{}', $3, $1 || ':' || i, now(),
                       CASE WHEN $4 THEN gen_random_uuid() END
                FROM generate_series(1, $5::int) AS i
                """, [old, name, state, entries ? "true" : "false", String(count)])
        }
        try oldBatch("history", count: history, state: "succeeded", entries: false)
        try oldBatch("stale", count: staleEntries, state: "failed", entries: true)
        if history > 0 || staleEntries > 0 { _ = try db.exec("ANALYZE jobs") }
        func time<T>(_ body: () throws -> T) rethrows -> (T, Double) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let v = try body()
            return (v, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        var yaml = "name: bench-deps\njobs:\n"
        for p in 0..<pairs {
            let a = first / pairs + (p < first % pairs ? 1 : 0), b = second / pairs + (p < second % pairs ? 1 : 0)
            yaml += "  - {name: first-\(p), kind: sleep, count: \(a), spec: {duration_s: 0}}\n"
            yaml += "  - {name: second-\(p), kind: sleep, count: \(b), after: first-\(p), spec: {duration_s: 0}}\n"
        }
        let (plan, parseS) = try time { try BatchFile.parse(text: yaml, file: "bench-deps.yaml", cluster: nil) }
        let (_, submitS) = try time { try store.submit(plan, submittedBy: "bench") }
        let (ready1, ready1S) = try time { try store.pendingIDs() }
        let (upcoming, upcomingS) = try time { try store.upcomingRows(timeoutMS: 600_000) }
        let (_, settleS) = try time { try store.settleDependencies() }
        _ = try db.exec("UPDATE jobs SET state = 'succeeded', finished_at = now() WHERE name LIKE 'first%'")
        let (ready2, ready2S) = try time { try store.pendingIDs() }
        let (_, settle2S) = try time { try store.settleDependencies() }
        let bytes = try db.exec("SELECT pg_total_relation_size('jobs') AS b").all.first?.double("b") ?? 0
        struct Out: Encodable {
            var first: Int, second: Int, pairs: Int, history: Int, stale_entries: Int, parse_s: Double, submit_s: Double
            var ready_s: Double, ready_jobs: Int, upcoming_s: Double, upcoming_jobs: Int, settle_s: Double
            var ready_after_first_s: Double, ready_after_first_jobs: Int, settle_after_first_s: Double, jobs_table_mib: Double
        }
        let out = Out(first: first, second: second, pairs: pairs, history: history, stale_entries: staleEntries, parse_s: parseS, submit_s: submitS, ready_s: ready1S, ready_jobs: ready1.count,
                      upcoming_s: upcomingS, upcoming_jobs: upcoming?.count ?? -1, settle_s: settleS,
                      ready_after_first_s: ready2S, ready_after_first_jobs: ready2.count, settle_after_first_s: settle2S,
                      jobs_table_mib: bytes / 1_048_576)
        if json { print(try JSONCoding.encodeString(out)); return }
        print(String(format: "bench deps: %d jobs, then %d jobs each after all of them, in %d entry pairs (%d finished jobs before, %d stale entries)",
                     first, second, pairs, history, staleEntries))
        print(String(format: "  parse %.2f s, submit %.2f s, jobs table %.0f MiB", parseS, submitS, out.jobs_table_mib))
        print(String(format: "  ready list %.3f s (%d jobs), upcoming %.3f s (%d), dependency sweep %.3f s",
                     ready1S, ready1.count, upcomingS, out.upcoming_jobs, settleS))
        print(String(format: "  first entry done: ready list %.3f s (%d jobs), dependency sweep %.3f s", ready2S, ready2.count, settle2S))
    }
}
