import Foundation
import XCTest
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraTestSupport

/// Nothing a job, an agent or a load sends stops the coordinator, burns attempts or escapes its node.
/// Real coordinator, real agents, real Redis and PostgreSQL; the hostile side is `RogueAgent`, which
/// writes the same keys an agent writes.
final class TrustTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    func clusterKeys() throws -> SigningKeys { try XCTUnwrap(try SigningKeys.load(current: cluster.keyFile, previous: nil)) }

    func rogue(_ node: String, keys: SigningKeys? = nil) throws -> RogueAgent {
        RogueAgent(node: node, redis: try RedisEndpoint(url: cluster.redisURL), keys: try keys ?? clusterKeys().node(node))
    }

    func job(_ batch: String, name: String) throws -> JobRow {
        let s = cluster.store()
        return try XCTUnwrap(try s.jobs(.init(batchID: batch)).first { $0.name.hasPrefix(name) }, "no job \(name)")
    }

    func events(_ jobID: String) throws -> [String] {
        try cluster.store().events(job: jobID).compactMap { $0.detail?["event"]?.stringValue }
    }

    // MARK: what jobs print

    func testOutputsWithNULsControlCodesAndBrokenUTF8AreStoredAndNeverHoldUpOtherResults() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try cluster.startAgent("hydra-compute")
        try waitUntil("2 nodes up", timeout: 30) { cluster.nodeCount() == 2 }
        var h = HostileText(seed: 3)
        var jobs = ""
        for i in 0..<12 {
            // The first bytes are always the worst: NUL, ESC, a lone UTF-8 continuation byte, a surrogate's encoding.
            let hex = "00" + "1b" + "80" + "eda080" + Hex.encode(h.bytes(40 + i * 30))
            jobs += "  - {name: hostile-\(i), kind: sleep, spec: {duration_s: 0, output_hex: \"\(hex)\"}}\n"
        }
        let batch = try cluster.submit("name: hostile-output\njobs:\n" + jobs + "  - {name: plain, kind: sleep, count: 30, spec: {duration_s: 0.05}}\n")
        try waitUntil("batch done", timeout: 60, poll: 0.2) { (try? cluster.summary(batch).isDone) ?? false }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.count(.succeeded), 42, "\(s.byState)")
        let j = try job(batch, name: "hostile-0")
        let text = try XCTUnwrap(j.result?["output"]?["text"]?.stringValue)
        XCTAssertTrue(text.hasPrefix("\u{FFFD}\u{1b}"), text.debugDescription)
        XCTAssertFalse(text.utf8.contains(0))
        // The CLI shows them, as JSON and as a table.
        let r = try cluster.hydra(["jobs", "--batch", batch, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertNoThrow(try JSONValue.parse(r.stdout))
        // Streams hold nothing of the finished work: results and envelopes are deleted once applied.
        let redis = try RedisConnection(url: cluster.redisURL)
        try waitUntil("streams trimmed", timeout: 20) {
            try ["hydra-storage", "hydra-compute"].allSatisfy { n in
                let results = try redis.run(["XLEN", RedisKeys.results(n)]).integer ?? -1
                let jobs = try redis.run(["XLEN", RedisKeys.jobs(n)]).integer ?? -1
                return results == 0 && jobs == 0
            }
        }
    }

    func testAResultNoDatabaseCanStoreIsQuarantinedAndTheRestOfItsBatchIsApplied() throws {
        try cluster.startCoordinator()
        let r = try rogue("hydra-storage")
        try r.heartbeat()
        let batch = try cluster.submit("""
        name: poison
        jobs:
          - {name: cpu, kind: sleep, count: 4, spec: {duration_s: 0}}
        """)
        var envs: [Envelope] = []
        try waitUntil("4 envelopes", timeout: 30) {
            try r.heartbeat(held: envs.map { HeldJob(id: $0.jobID, attempt: $0.attempt) })
            envs += try r.take()
            return envs.count == 4
        }
        // One result whose start time PostgreSQL cannot represent (to_timestamp out of range), sent together with three good ones.
        var bad = r.succeeded(envs[0], output: ["ok": true])
        bad.startedAt = 1e300
        try r.send(bad)
        for e in envs.dropFirst() { try r.send(r.succeeded(e, output: ["ok": true, "nul": "a\u{0}b"])) }
        try waitUntil("batch done", timeout: 30, poll: 0.2) { (try? cluster.summary(batch).isDone) ?? false }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.count(.succeeded), 3, "\(s.byState)")
        XCTAssertEqual(s.count(.failed), 1, "\(s.byState)")
        let failed = try XCTUnwrap(try cluster.store().job(envs[0].jobID))
        XCTAssertEqual(failed.failureClass, "bad_result")
        XCTAssertTrue(try events(envs[0].jobID).contains("result_quarantined"))
        XCTAssertEqual(failed.attempt, 1, "quarantined once, never retried in a loop")
        let redis = try RedisConnection(url: cluster.redisURL)
        let dead = RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter, "-", "+"]).array ?? [])
        XCTAssertTrue(dead.contains { $0.fields?["job"] == envs[0].jobID && $0.fields?["reason"] == "unstorable" && ($0.fields?["error"] ?? "").contains("out of range") }, "\(dead)")
        // And the coordinator carries on.
        try r.heartbeat()
        let next = try cluster.submit("name: after\njobs:\n  - {name: cpu, kind: sleep, spec: {duration_s: 0}}\n")
        try waitUntil("next envelope", timeout: 20) { try r.heartbeat(); envs = try r.take(); return !envs.isEmpty }
        try r.send(r.succeeded(envs[0], output: [:]))
        try waitUntil("next done", timeout: 20) { (try? cluster.summary(next).isDone) ?? false }
    }

    // MARK: agents that lie

    func testForgedResultsAndHeartbeatsChangeNothingAndALeaseIsRenewedOnlyByItsHolder() throws {
        try cluster.startCoordinator(lease: 3)
        let storage = try rogue("hydra-storage")
        let ai = try rogue("hydra-ai")
        try storage.heartbeat()
        let batch = try cluster.submit("name: forged\njobs:\n  - {name: cpu, kind: sleep, spec: {duration_s: 0}}\n")
        var envs: [Envelope] = []
        try waitUntil("envelope", timeout: 20) { try storage.heartbeat(); envs = try storage.take(); return !envs.isEmpty }
        let e = envs[0]
        let held = [HeldJob(id: e.jobID, attempt: e.attempt)]
        try storage.heartbeat(held: held)
        try storage.send(storage.started(e))
        try waitUntil("running", timeout: 10) { try cluster.store().job(e.jobID)?.state == .running }
        // hydra-ai claims the job on its own stream (its key, another node's job) and on hydra-storage's
        // stream (wrong key); someone sends it unsigned; a heartbeat for hydra-storage signed by hydra-ai.
        var claim = storage.succeeded(e, output: ["forged": true])
        claim.node = "hydra-ai"
        try ai.send(claim)
        try ai.send(storage.succeeded(e, output: ["forged": true]), stream: RedisKeys.results("hydra-storage"))
        try storage.send(storage.succeeded(e, output: ["forged": true]), signWith: .some(nil))
        try ai.heartbeat(held: held, signWith: .some(ai.keys), forNode: "hydra-storage", state: "stopping")
        let redis = try RedisConnection(url: cluster.redisURL)
        // The two that are not signed by their stream's node are refused outright; hydra-ai's claim on its own
        // stream is a valid message about a job hydra-ai does not hold: fenced by the node the job is on.
        try waitUntil("2 results refused", timeout: 10) { (try redis.run(["XLEN", RedisKeys.deadLetter]).integer ?? 0) >= 2 }
        let reasons = RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter, "-", "+"]).array ?? []).compactMap { $0.fields?["reason"] }
        XCTAssertEqual(Set(reasons), ["unknown_key", "unsigned"])
        try waitUntil("the claim read", timeout: 10) { (try redis.run(["XLEN", RedisKeys.results("hydra-ai")]).integer ?? -1) == 0 }
        XCTAssertEqual(try cluster.store().job(e.jobID)?.state, .running, "a forged result changed the job")
        // hydra-ai keeps listing the job as held in its own (valid) heartbeats; hydra-storage has fallen silent.
        // Only the holder renews a lease: the job is lost and requeued.
        try waitUntil("requeued", timeout: 20, poll: 0.2) {
            // "stopping": nothing is placed on the rogue itself, so the requeued job waits for a real agent.
            try ai.heartbeat(held: held, state: "stopping")
            return try events(e.jobID).contains("lease_expired")
        }
        XCTAssertEqual(try cluster.store().job(e.jobID)?.state, .pending)
        try cluster.startAgent("hydra-storage")
        try waitUntil("batch done", timeout: 30) { (try? cluster.summary(batch).isDone) ?? false }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 1)
    }

    func testAnAgentWhoseClockIsAnHourOffStaysAlive() throws {
        try cluster.startCoordinator(lease: 3)
        let r = try rogue("hydra-storage")
        r.clockSkew = -3600
        try r.heartbeat()
        let batch = try cluster.submit("name: skew\njobs:\n  - {name: cpu, kind: sleep, spec: {duration_s: 0}}\n")
        var envs: [Envelope] = []
        try waitUntil("envelope", timeout: 20) { try r.heartbeat(); envs = try r.take(); return !envs.isEmpty }
        let held = [HeldJob(id: envs[0].jobID, attempt: envs[0].attempt)]
        try r.send(r.started(envs[0]))
        // Three node timeouts (5 s) of heartbeats stamped an hour ago: the node stays up and keeps its job.
        let until = Date().addingTimeInterval(12)
        while Date() < until {
            try r.heartbeat(held: held)
            Thread.sleep(forTimeInterval: 0.3)
        }
        XCTAssertFalse(try events(envs[0].jobID).contains("lease_expired"))
        XCTAssertEqual(cluster.nodeCount(), 1)
        try r.send(r.succeeded(envs[0], output: [:]))
        try waitUntil("done", timeout: 20) { (try? cluster.summary(batch).isDone) ?? false }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 1)
    }

    // MARK: load

    func testANodeIsNeverSentMoreJobsThanItReadsWithinTheirLease() throws {
        // 40 jobs fit in hydra-compute's VRAM at once, its agent reads 4 ahead, leases are 3 s and jobs take 1 s:
        // without backpressure, envelopes would sit unread past their lease and be requeued as lost. The node
        // may hold its 4 plus what it finished in the last half lease (1.5 s: at most 4 × 2.5).
        try cluster.startCoordinator(lease: 3)
        try cluster.startAgent("hydra-compute", extra: ["--prefetch", "4"])
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("""
        name: backpressure
        jobs:
          - {name: small, kind: sleep, count: 40, vram: 128MiB, spec: {duration_s: 1}}
        """)
        var maxHeld = 0
        try waitUntil("batch done", timeout: 90, poll: 0.1) {
            let onNode = try cluster.store().jobs(.init(batchID: batch, states: [.dispatched, .running])).count
            maxHeld = max(maxHeld, onNode)
            return (try? cluster.summary(batch).isDone) ?? false
        }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 40)
        XCTAssertLessThanOrEqual(maxHeld, 14, "backpressure let \(maxHeld) jobs onto a node that reads 4 ahead")
        let lost = try cluster.store().jobs(.init(batchID: batch)).filter { (try? events($0.id).contains("lease_expired")) ?? true }
        XCTAssertEqual(lost.count, 0, "jobs lost on a healthy node")
    }

    // MARK: operators

    func testCancelFollowedAtOnceByRetryStillStopsTheOldAttempt() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("name: race\njobs:\n  - {name: long, kind: sleep, spec: {duration_s: 20}}\n")
        let j = try job(batch, name: "long")
        try waitUntil("running", timeout: 20) { try cluster.store().job(j.id)?.state == .running }
        XCTAssertEqual(try cluster.hydra(["cancel", j.id]).status, 0)
        XCTAssertEqual(try cluster.hydra(["retry", j.id]).status, 0)
        // The old attempt hears its cancel although the job is pending (then running) again.
        try waitUntil("attempt 1 cancelled on the agent", timeout: 15) {
            cluster.log("hydra-storage").contains("msg=\"cancel requested\"") && cluster.log("hydra-storage").contains(j.id)
        }
        let db = PGConnection(url: cluster.dbURL)
        XCTAssertEqual(try db.exec("SELECT count(*) AS n FROM cancel_requests WHERE job_id = $1::uuid AND attempt = 1 AND sent_at IS NOT NULL",
                                   [j.id])[0].int("n"), 1)
        try waitUntil("attempt 2 on the node", timeout: 20) { (try cluster.store().job(j.id)?.attempt ?? 0) >= 2 }
        let ev = try cluster.store().events(job: j.id)
        XCTAssertTrue(ev.contains { $0.from == "running" && $0.to == "cancelled" }, "cancel logs its from_state: \(ev)")
        XCTAssertTrue(ev.contains { $0.from == "cancelled" && $0.to == "pending" }, "retry logs its from_state: \(ev)")
    }

    // MARK: leadership

    func testAStandbyTakesOverFromALeaderCutOffFromPostgreSQLAndTheOldLeaderStepsDown() throws {
        // Leader A reaches PostgreSQL through a proxy that then goes silent (no FIN, no RST: a dead host).
        var pg = URLComponents(string: cluster.dbURL)!
        let proxy = TCPProxy(upstreamHost: "127.0.0.1", upstreamPort: pg.port!)
        let port = try proxy.start()
        defer { proxy.stop() }
        pg.port = port
        try cluster.start("coordinator-a", binary: "hydra", ["coordinator", "--cluster", cluster.clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                             "--hmac-key", cluster.keyFile, "--leader-ttl", "3"],
                          env: ["HYDRA_DATABASE_URL": pg.string!])
        let db = PGConnection(url: cluster.dbURL)
        try waitUntil("A leads", timeout: 30) { try Leadership.current(db).holder?.hasSuffix("/\(cluster.processes["coordinator-a"]!.processIdentifier)") == true }
        let epochA = try Leadership.current(db).epoch
        try cluster.start("coordinator-b", binary: "hydra", ["coordinator", "--cluster", cluster.clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                             "--hmac-key", cluster.keyFile, "--leader-ttl", "3"])
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let cutAt = Date()
        proxy.freeze()
        let pidB = cluster.processes["coordinator-b"]!.processIdentifier
        try waitUntil("B leads", timeout: 30, poll: 0.1) { try Leadership.current(db).holder?.hasSuffix("/\(pidB)") == true }
        let took = Date().timeIntervalSince(cutAt)
        XCTAssertLessThan(took, 15, "takeover took \(took) s")
        XCTAssertGreaterThan(try Leadership.current(db).epoch, epochA)
        let batch = try cluster.submit("name: after-cut\njobs:\n  - {name: cpu, kind: sleep, count: 5, spec: {duration_s: 0}}\n")
        try waitUntil("B runs the batch", timeout: 30) { (try? cluster.summary(batch).isDone) ?? false }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 5)
        // A stopped acting on its own clock, and on reconnecting finds the epoch moved: it stands by.
        try waitUntil("A steps down on its own clock", timeout: 15) { cluster.log("coordinator-a").contains("lease not renewed") }
        proxy.thaw()
        try waitUntil("A stands by", timeout: 30) { cluster.log("coordinator-a").contains("another coordinator leads; standing by") }
        XCTAssertTrue(try Leadership.current(db).holder?.hasSuffix("/\(pidB)") == true)
    }

    // MARK: all of it at once

    /// `hydra-dev chaos --hostile`, short and seeded: faults plus hostile traffic, and nothing lost, duplicated,
    /// dead, stalled or failed but what the rogue poisoned. Runs in its own local instance (services.sh).
    func testChaosWithHostileTrafficLosesNothing() throws {
        let r = try cluster.hydra(["chaos", "--jobs", "150", "--hostile", "--seed", "20261204", "--instance", "it-hostile", "--json"], binary: "hydra-dev")
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        XCTAssertEqual(r.status, 0, "\(last)\n\(r.stderr.suffix(3000))")
        for field in ["lost=0", "duplicated=0", "dead=0", "failed_unexpected=0", "stalls=0", "cancels_unsent=0"] {
            XCTAssertTrue(last.contains(" \(field)"), "\(field) missing from: \(last)")
        }
        let json = try JSONValue.parse(String(r.stdout.dropLast(last.utf8.count + 1)))
        let h = try XCTUnwrap(json["hostile"])
        XCTAssertGreaterThan(h["forged_results"]?.intValue ?? 0, 0, "\(h)")
        XCTAssertGreaterThan(h["rogue_jobs"]?.intValue ?? 0, 0, "\(h)")
        // A poisoned result can be lost with the rest of a Redis wiped by a fault; then its job runs elsewhere.
        XCTAssertLessThanOrEqual(h["quarantined"]?.intValue ?? 0, h["unstorable_sent"]?.intValue ?? 0, "\(h)")
    }

    /// Names are data: a node or GPU model with quotes and backslashes (and a NUL in a GPU name an agent
    /// reports) is stored as given, never spliced into JSON or array literals.
    func testPlacementsWithHostileNamesAreStoredAsData() throws {
        let batch = try cluster.submit("name: names\njobs:\n  - {name: a, kind: sleep, count: 3, spec: {duration_s: 0}}\n")
        let store = cluster.store()
        let jobs = try store.jobs(.init(batchID: batch))
        let nodes = ["node \"quoted\"", "back\\slash\\", "{\"json\": [1]}"]
        let models = ["RTX \"5090\"\\", "GPU\u{0}name", "\\"]
        let placed = try store.markDispatched(jobs.enumerated().map { i, j in
            JobStore.Placement(jobID: j.id, node: nodes[i], gpuUUIDs: ["GPU-\(i)\\\""], gpuModel: models[i])
        }, leaseSeconds: 5)
        XCTAssertEqual(Set(placed.map(\.node)), Set(nodes))
        for (i, j) in jobs.enumerated() {
            let row = try XCTUnwrap(try store.job(j.id))
            XCTAssertEqual(row.node, nodes[i])
            XCTAssertEqual(row.gpuModel, StoredText.clean(models[i]))
            let ev = try store.events(job: j.id).last { $0.to == "dispatched" }
            XCTAssertEqual(ev?.detail?["node"]?.stringValue, nodes[i])
        }
    }
}
