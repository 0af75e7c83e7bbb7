import XCTest
import Foundation
import HydraCore
@testable import HydraStore

/// The coordinator's dependency reads (ready list, upcoming hint, dependency sweep) against a
/// job-by-job model of `after:`, on a real PostgreSQL. Dependencies are stored per entry; the
/// model spells every dependency out per job, as the rows used to, so the two are written apart.
final class DependencyGroupTests: XCTestCase {
    var db: PGConnection!
    var dbName = ""
    var adminURL = ""

    override func setUpWithError() throws {
        let env = ProcessInfo.processInfo.environment
        guard let base = env["HYDRA_TEST_DATABASE_URL"] else {
            throw XCTSkip("integration tests need HYDRA_TEST_DATABASE_URL: run `make test`")
        }
        adminURL = base
        dbName = "hydra_test_\(UUID().uuidString.prefix(8).lowercased())"
        db = PGConnection(url: try PGConnection.createDatabase(dbName, adminURL: base))
    }

    override func tearDown() {
        db?.close()
        // Kept when a test failed, as evidence (the cluster harness does the same).
        if testRun?.hasSucceeded == true {
            let admin = PGConnection(url: adminURL)
            _ = try? admin.exec("DROP DATABASE IF EXISTS \(dbName) WITH (FORCE)")
            admin.close()
        }
    }

    /// What the store says about one job, and what the model says it should.
    struct Job {
        var id: String, name: String, state: String, seq: Int
        var deps: [Int]          // indexes into the model's jobs, spelled out
        var entrySizes: Int      // jobs in the entries it is after, in all (the upcoming cap counts these)
    }

    static let near: Set<String> = ["placed", "dispatched", "running", "retry_wait"]
    static let awkward = ["", ",", "\"", "{x}", "\\", " a b", "ü", "'", "NULL", ": x", "a,\"b\"}"]
    static let unsuccessful = Set(JobStateMachine.unsuccessful.map(\.rawValue))

    func ready(_ j: Job, _ all: [Job]) -> Bool { j.state == "pending" && j.deps.allSatisfy { all[$0].state == "succeeded" } }

    func testDependencyReadsMatchAJobByJobModelOnRandomBatches() throws {
        _ = try Migrations.migrate(db)
        let store = JobStore(db: db)
        var rng = SplitMix64(seed: 20261206)
        let states = ["pending", "pending", "pending", "placed", "running", "retry_wait", "succeeded", "succeeded", "succeeded",
                      "failed", "cancelled", "dead"]
        var all: [Job] = []
        for round in 0..<40 {
            // A random batch: entries of 1–4 jobs, each after a random set of earlier entries (or a repeated name).
            let entries = Int.random(in: 1...6, using: &rng)
            var yaml = "name: round-\(round)\njobs:\n"
            // Entry names with what breaks hand-written array or CSV parsing, quoted for YAML.
            let names = (0..<entries).map { e in "e\(e)" + Self.awkward[Int.random(in: 0..<Self.awkward.count, using: &rng)] }
            func quoted(_ n: String) -> String { "\"" + n.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            for e in 0..<entries {
                let count = Int.random(in: 1...4, using: &rng)
                var after = (0..<e).filter { _ in Int.random(in: 0..<3, using: &rng) == 0 }.map { quoted(names[$0]) }
                if let first = after.first, Bool.random(using: &rng) { after.append(first) }
                yaml += "  - {name: \(quoted(names[e])), kind: sleep, count: \(count)\(after.isEmpty ? "" : ", after: [\(after.joined(separator: ", "))]")}\n"
            }
            let plan = try BatchFile.parse(text: yaml, file: "round-\(round).yaml", cluster: nil)
            let batch = try store.submit(plan, submittedBy: "test")
            let rows = try store.jobs(.init(batchID: batch, limit: 1000))
            XCTAssertEqual(rows.map(\.name), plan.jobs.map(\.name))
            let offset = all.count
            let groupOf = plan.groupOfJob()
            for (i, r) in rows.enumerated() {
                let g = groupOf[i].map { plan.groups[$0] }
                let sizesAfter = Set(g?.after ?? []).map { plan.groups[$0].jobs.count }.reduce(0, +)
                all.append(Job(id: r.id, name: r.name, state: "pending", seq: offset + i,
                               deps: plan.dependencies(of: i).map { offset + $0 }, entrySizes: sizesAfter))
                // The listing names the entries a job is after.
                XCTAssertEqual(r.after, (g?.after ?? []).map { plan.groups[$0].name }.sorted(), "\(r.name) in\n\(yaml)")
            }
            // Random states for this batch's jobs and a few earlier ones, written as the coordinator's writes would leave them.
            for k in all.indices where k >= offset || Int.random(in: 0..<10, using: &rng) == 0 {
                all[k].state = states[Int.random(in: 0..<states.count, using: &rng)]
                _ = try db.exec("UPDATE jobs SET state = $1 WHERE id = $2::uuid", [all[k].state, all[k].id])
            }
            let context = "round \(round), batch:\n\(yaml)"

            // Ready list: pending with every dependency succeeded, in submission order (one priority).
            XCTAssertEqual(try store.pendingIDs(), all.filter { ready($0, all) }.map(\.id), context)

            // Upcoming: pending, not ready, within the cap, every unfinished dependency near.
            let cap = Int.random(in: 1...8, using: &rng)
            let upcoming = try XCTUnwrap(try store.upcomingRows(maxDependencies: cap, timeoutMS: 10_000))
            let expected = all.filter { j in
                j.state == "pending" && !ready(j, all) && j.entrySizes <= cap
                    && j.deps.allSatisfy { d in all[d].state == "succeeded" || Self.near.contains(all[d].state) || ready(all[d], all) }
            }
            XCTAssertEqual(upcoming.map(\.id), expected.map(\.id), "cap \(cap), \(context)")
            for (u, e) in zip(upcoming, expected) {
                XCTAssertEqual(Set(u.waitsOn), Set(e.deps.filter { all[$0].state != "succeeded" }.map { all[$0].id }), context)
            }

            // Dependency sweep: a job behind one that did not succeed is cancelled, saying which (first three by
            // submission); every other waiting job says how many of its dependencies it still waits for.
            let before = all
            let cancelled = try store.settleDependencies()
            var expectCancelled = 0
            for k in all.indices where before[k].state == "pending" {
                let failed = Array(Set(before[k].deps)).sorted().filter { Self.unsuccessful.contains(before[$0].state) }
                if !failed.isEmpty {
                    all[k].state = "cancelled"
                    expectCancelled += 1
                    let named = failed.prefix(3).map { "\(before[$0].name) \(before[$0].state)" }.joined(separator: ", ")
                    let reason = "a dependency did not succeed: " + named + (failed.count > 3 ? " and \(failed.count - 3) more" : "")
                    XCTAssertEqual(try store.job(all[k].id)?.pendingReason, reason, "\(all[k].name), \(context)")
                }
            }
            XCTAssertEqual(cancelled, expectCancelled, context)
            for k in all.indices where all[k].state == "pending" {
                let deps = Array(Set(all[k].deps))
                let open = deps.filter { all[$0].state != "succeeded" }
                guard !open.isEmpty else { continue }
                let example = open.map { "\(all[$0].name) \(all[$0].state)" }.min()!
                XCTAssertEqual(try store.job(all[k].id)?.pendingReason,
                               "waits for \(open.count) of \(deps.count) dependencies (e.g. \(example))", "\(all[k].name), \(context)")
            }
            for k in all.indices { XCTAssertEqual(try store.job(all[k].id)?.state.rawValue, all[k].state, context) }
        }
    }

    /// A migrated database holding one batch: `first` (n jobs), then `second` (n jobs) after it.
    func storeWithEntryAfterEntry(_ n: Int) throws -> (store: JobStore, batch: String) {
        _ = try Migrations.migrate(db)
        let store = JobStore(db: db)
        let plan = try BatchFile.parse(text: """
            name: wide
            jobs:
              - {name: first, kind: sleep, count: \(n)}
              - {name: second, kind: sleep, count: \(n), after: first}
            """, file: "wide.yaml", cluster: nil)
        return (store, try store.submit(plan, submittedBy: "test"))
    }

    /// An entry after an entry is one row per entry: 300 jobs after 300 store 300 entry IDs, not 90 000 job IDs.
    func testAnEntryAfterAnEntryIsStoredOncePerEntryNotOncePerPair() throws {
        let store = try storeWithEntryAfterEntry(300).store
        let r = try XCTUnwrap(try db.exec("""
            SELECT (SELECT sum(cardinality(after_groups)) FROM jobs) AS listed, (SELECT count(*) FROM job_groups) AS groups,
                   (SELECT max(size) FROM job_groups) AS size, (SELECT count(*) FROM jobs WHERE dep_group IS NOT NULL) AS members
            """).all.first)
        XCTAssertEqual(r.int("listed"), 300)
        XCTAssertEqual(r.int("groups"), 1)
        XCTAssertEqual(r.int("size"), 300)
        XCTAssertEqual(r.int("members"), 300)
        let first = try db.exec("SELECT id FROM jobs WHERE name LIKE 'first%' ORDER BY seq").all.compactMap { $0["id"] }
        XCTAssertEqual(try store.pendingIDs(), first)
        // All but the last of the first entry done: that one is the only ready job, and once it runs, none is.
        _ = try db.exec("UPDATE jobs SET state = 'succeeded' WHERE name LIKE 'first%' AND id <> $1::uuid", [first[299]])
        XCTAssertEqual(try store.pendingIDs(), [first[299]])
        _ = try db.exec("UPDATE jobs SET state = 'running' WHERE id = $1::uuid", [first[299]])
        XCTAssertEqual(try store.pendingIDs(), [])
        _ = try db.exec("UPDATE jobs SET state = 'succeeded' WHERE id = $1::uuid", [first[299]])
        XCTAssertEqual(try store.pendingIDs().count, 300)
    }

    /// A job after an entry ages from when the coordinator first reads it ready, not from the batch's
    /// submission (the simulator, where the router was tuned, always aged it so); a job without
    /// dependencies ages from submission and is never written for it.
    func testAJobAfterAnEntryAgesFromWhenItIsFirstReadReady() throws {
        let (store, batch) = try storeWithEntryAfterEntry(2)
        // The batch went in an hour ago (so the two times cannot coincide by accident).
        _ = try db.exec("UPDATE jobs SET submitted_at = now() - interval '1 hour' WHERE batch_id = $1::uuid", [batch])
        let first = try db.exec("SELECT id FROM jobs WHERE name LIKE 'first%' ORDER BY seq").all.compactMap { $0["id"] }
        let second = try db.exec("SELECT id FROM jobs WHERE name LIKE 'second%' ORDER BY seq").all.compactMap { $0["id"] }
        // Waiting: reading its row marks nothing; the first entry, ready from the start, is not written either.
        XCTAssertEqual(try store.pendingRows(ids: first + second).compactMap(\.readyAt), [])
        XCTAssertEqual(try store.readyRows(ids: try store.pendingIDs()).compactMap(\.readyAt), [])
        _ = try db.exec("UPDATE jobs SET state = 'succeeded' WHERE id = ANY($1::uuid[])", [PGConnection.textArray(first)])
        let ready = try store.pendingIDs()
        XCTAssertEqual(ready, second)
        let before = Date().timeIntervalSince1970
        let rows = try store.readyRows(ids: ready)
        XCTAssertEqual(rows.count, 2)
        for r in rows {
            let at = try XCTUnwrap(r.readyAt, "a job after an entry is marked when first read ready")
            XCTAssertGreaterThan(at, r.submittedAt + 3_000)
            XCTAssertEqual(at, before, accuracy: 60)
            XCTAssertEqual(RouterJob(row: r).submittedAt.timeIntervalSince1970, at, "the router ages it from there")
        }
        // Marked once: a later read keeps the first time.
        _ = try db.exec("UPDATE jobs SET ready_at = ready_at - interval '5 minutes' WHERE id = ANY($1::uuid[])", [PGConnection.textArray(second)])
        let again = try store.readyRows(ids: second)
        XCTAssertEqual(again.map { $0.readyAt! }, rows.map { $0.readyAt! - 300 })
        // Without dependencies: never written, aged from submission.
        let plain = try store.submit(try BatchFile.parse(text: "name: plain\njobs:\n  - {name: solo, kind: sleep}\n", file: "plain.yaml", cluster: nil),
                                     submittedBy: "test")
        let solo = try XCTUnwrap(try store.jobs(.init(batchID: plain)).first)
        let read = try XCTUnwrap(try store.readyRows(ids: [solo.id]).first)
        XCTAssertNil(read.readyAt)
        XCTAssertEqual(RouterJob(row: read).submittedAt.timeIntervalSince1970, read.submittedAt)
    }

    /// A job after an entry ages from when that entry's last job ended, however late a pass first reads
    /// it: behind a full pass window (here one job) or after the coordinator was down (here: 20 minutes).
    func testAJobReadLateAgesFromWhenTheEntryItIsAfterEnded() throws {
        let (store, batch) = try storeWithEntryAfterEntry(3)
        _ = try db.exec("UPDATE jobs SET submitted_at = now() - interval '2 hours' WHERE batch_id = $1::uuid", [batch])
        let first = try db.exec("SELECT id FROM jobs WHERE name LIKE 'first%' ORDER BY seq").all.compactMap { $0["id"] }
        let second = try db.exec("SELECT id FROM jobs WHERE name LIKE 'second%' ORDER BY seq").all.compactMap { $0["id"] }
        // The entry's three jobs ended 50, 30 and 20 minutes ago: it was done 20 minutes ago.
        for (id, minutes) in zip(first, [50, 20, 30]) {
            _ = try db.exec("UPDATE jobs SET state = 'succeeded', finished_at = now() - make_interval(mins => $2::int) WHERE id = $1::uuid",
                            [id, String(minutes)])
        }
        let ended = try XCTUnwrap(try db.exec("SELECT extract(epoch from now() - interval '20 minutes') AS t").all.first?.double("t"))
        // A window of one job: the pass reads one now and the others on later passes; all age from the entry's end.
        let window = try store.pendingIDs(limit: 1)
        XCTAssertEqual(window, [second[0]])
        var marked = try store.readyRows(ids: window)
        marked += try store.readyRows(ids: try store.pendingIDs(limit: 3).filter { !window.contains($0) })
        XCTAssertEqual(marked.map(\.id).sorted(), second.sorted())
        for r in marked {
            let at = try XCTUnwrap(r.readyAt, r.name)
            XCTAssertEqual(at, ended, accuracy: 1, "\(r.name): ready when the entry ended, not when read")
            XCTAssertEqual(RouterJob(row: r).submittedAt.timeIntervalSince1970, at)
        }
        // A job after two entries is ready when the later one ended; an end recorded in the future (another
        // clock) counts as now.
        let two = try store.submit(try BatchFile.parse(text: """
            name: two
            jobs:
              - {name: a, kind: sleep}
              - {name: b, kind: sleep}
              - {name: c, kind: sleep, after: [a, b]}
            """, file: "two.yaml", cluster: nil), submittedBy: "test")
        let rows = try store.jobs(.init(batchID: two))
        let ids = Dictionary(uniqueKeysWithValues: rows.map { ($0.name, $0.id) })
        _ = try db.exec("UPDATE jobs SET state = 'succeeded', finished_at = now() - interval '40 minutes' WHERE id = $1::uuid", [ids["a"]!])
        _ = try db.exec("UPDATE jobs SET state = 'succeeded', finished_at = now() - interval '10 minutes' WHERE id = $1::uuid", [ids["b"]!])
        let c = try XCTUnwrap(try store.readyRows(ids: [ids["c"]!]).first?.readyAt)
        let tenAgo = try XCTUnwrap(try db.exec("SELECT extract(epoch from now() - interval '10 minutes') AS t").all.first?.double("t"))
        XCTAssertEqual(c, tenAgo, accuracy: 1)
        _ = try db.exec("UPDATE jobs SET ready_at = NULL WHERE id = $1::uuid", [ids["c"]!])
        _ = try db.exec("UPDATE jobs SET finished_at = now() + interval '1 hour' WHERE id = $1::uuid", [ids["b"]!])
        let future = try XCTUnwrap(try store.readyRows(ids: [ids["c"]!]).first?.readyAt)
        XCTAssertEqual(future, Date().timeIntervalSince1970, accuracy: 60)
    }

    /// Against a model, on random entries: each job's mark is the latest end among the entries it is
    /// after (an entry's end: its last job's), however the jobs share or mix entries.
    func testReadyTimesMatchTheLatestEndOfTheirEntriesOnRandomBatches() throws {
        _ = try Migrations.migrate(db)
        let store = JobStore(db: db)
        var rng = SplitMix64(seed: 23)
        for round in 0..<4 {
            let firsts = 3 + Int(rng.next() % 8), seconds = 4 + Int(rng.next() % 12)
            var yaml = "name: random-\(round)\njobs:\n"
            for a in 0..<firsts { yaml += "  - {name: a\(a), kind: sleep, count: \(1 + rng.next() % 3)}\n" }
            var afters: [String: [String]] = [:]
            for b in 0..<seconds {
                let picked = Array(Set((0..<(1 + Int(rng.next() % 3))).map { _ in "a\(Int(rng.next() % UInt64(firsts)))" })).sorted()
                afters["b\(b)"] = picked
                yaml += "  - {name: b\(b), kind: sleep, after: [\(picked.joined(separator: ", "))]}\n"
            }
            let batch = try store.submit(try BatchFile.parse(text: yaml, file: "random.yaml", cluster: nil), submittedBy: "test")
            // Every job of the first entries ends at a random time in the last two hours.
            var ends: [String: Double] = [:]
            for j in try store.jobs(.init(batchID: batch)) where j.name.hasPrefix("a") {
                let r = try XCTUnwrap(try db.exec("""
                    UPDATE jobs SET state = 'succeeded', finished_at = now() - make_interval(secs => $2::int)
                    WHERE id = $1::uuid RETURNING extract(epoch from finished_at) AS t
                    """, [j.id, String(rng.next() % 7200)]).all.first?.double("t"))
                let entry = String(j.name.split(separator: "-").first ?? Substring(j.name))
                ends[entry] = max(ends[entry] ?? 0, r)
            }
            let marked = try store.readyRows(ids: try store.pendingIDs())
            XCTAssertEqual(marked.count, seconds, "round \(round)")
            for r in marked {
                let want = try XCTUnwrap(afters[r.name]).map { ends[$0]! }.max()!
                XCTAssertEqual(try XCTUnwrap(r.readyAt), want, accuracy: 0.001, "round \(round) \(r.name) after \(afters[r.name]!)")
            }
            _ = try db.exec("UPDATE jobs SET state = 'succeeded' WHERE batch_id = $1::uuid", [batch])
        }
    }

    /// The entry's end can be one index probe (`jobs_group_finished`): the lookup per job and entry, as
    /// `readyRows` writes it (a correlated `dep_group = entry`), matches the partial index. Seq scans are
    /// switched off so that a table this small still shows whether the index can serve the query at all.
    func testTheEntryEndIsReadFromItsIndex() throws {
        _ = try storeWithEntryAfterEntry(1)
        let plan = try db.transaction { tx in
            try tx.exec("SET LOCAL enable_seqscan = off")
            return try tx.exec("""
                EXPLAIN SELECT m.id, \(JobStore.entriesEnd(of: "m")) FROM jobs m WHERE cardinality(m.after_groups) > 0
                """).all.compactMap { $0["QUERY PLAN"] }.joined(separator: "\n")
        }
        XCTAssertTrue(plan.contains("jobs_group_finished"), plan)
    }

    /// Rows written before entries existed (`depends_on`, one job ID per dependency) keep their meaning
    /// after `hydra migrate`: each job another one waited on becomes an entry of its own.
    func testRowsWrittenWithPerJobDependenciesKeepTheirMeaningAfterTheMigration() throws {
        _ = try Migrations.migrate(db, through: 8)
        let ids = (0..<4).map { _ in UUID().uuidString.lowercased() }
        let batch = UUID().uuidString.lowercased()
        _ = try db.exec("INSERT INTO batches (id, name, spec) VALUES ($1::uuid, 'old', '{}')", [batch])
        // a, b; c after a and b; d after c. a has succeeded, b runs.
        let rows: [(String, String, [Int])] = [("a", "succeeded", []), ("b", "running", []), ("c", "pending", [0, 1]), ("d", "pending", [2])]
        for (k, (name, state, deps)) in rows.enumerated() {
            _ = try db.exec("""
                INSERT INTO jobs (id, batch_id, name, kind, spec, state, idempotency_key, depends_on)
                VALUES ($1::uuid, $2::uuid, $3, 'sleep', '{}', $4, $5, $6::uuid[])
                """, [ids[k], batch, name, state, "\(batch):\(k)", PGConnection.textArray(deps.map { ids[$0] })])
        }
        XCTAssertEqual(try Migrations.migrate(db), Array(9...Migrations.latest))
        let store = JobStore(db: db)
        XCTAssertEqual(try store.pendingIDs(), [])
        XCTAssertEqual(try XCTUnwrap(try store.upcomingRows(timeoutMS: 10_000)).map(\.name), ["c"])
        try store.settleDependencies()
        XCTAssertEqual(try store.job(ids[2])?.pendingReason, "waits for 1 of 2 dependencies (e.g. b running)")
        XCTAssertEqual(try store.job(ids[3])?.pendingReason, "waits for 1 of 1 dependencies (e.g. c pending)")
        XCTAssertEqual(try store.jobs(.init(batchID: batch)).map(\.after), [[], [], ["a", "b"], ["c"]])
        _ = try db.exec("UPDATE jobs SET state = 'succeeded' WHERE id = $1::uuid", [ids[1]])
        XCTAssertEqual(try store.pendingIDs(), [ids[2]])
        _ = try db.exec("UPDATE jobs SET state = 'failed' WHERE id = $1::uuid", [ids[2]])
        XCTAssertEqual(try store.settleDependencies(), 1)
        XCTAssertEqual(try store.job(ids[3])?.pendingReason, "a dependency did not succeed: c failed")
    }
}
