import Foundation
import XCTest
import HydraCore
import HydraWire
import HydraIO
import HydraStore

/// The agent keeps its node alive and honest: heartbeats on time whatever nvidia-smi does, through a
/// graceful shutdown's grace period, and says "place nothing here" while its job stream is unusable.
final class AgentResilienceTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    func heartbeat(_ node: String, _ r: RedisConnection) -> HeartbeatMessage? {
        guard let body = try? r.command(["HGET", RedisKeys.heartbeat(node), "body"]).string else { return nil }
        return try? JSONCoding.decode(HeartbeatMessage.self, from: body)
    }

    /// Finding A: nvidia-smi taking 3 s a call made each heartbeat take 6 s (node timeout 5 s, key TTL 3×interval).
    func testHeartbeatsStayOnScheduleWhileNvidiaSMIIsSlow() throws {
        let smi = cluster.dir.appendingPathComponent("slow-smi").path
        try """
        #!/bin/sh
        sleep 3
        case "$1" in
          --query-gpu=*) echo "index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]"
                         echo "0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA GeForce RTX 4090, 24564 MiB, 1000 MiB, 23564 MiB, 3 %, 40, 30.00 W" ;;
          *) echo "gpu_uuid, pid, used_memory [MiB], process_name" ;;
        esac
        """.write(toFile: smi, atomically: true, encoding: .utf8)
        chmod(smi, 0o755)
        let node = "hydra-ai"
        let (env, auth) = cluster.redisAuth(RedisACL.agentUser(node))
        try cluster.start(node, binary: "hydra-agent", ["run", "--node", node, "--nvidia-smi", smi, "--listen", "127.0.0.1:0",
                                                       "--output-dir", cluster.dir.appendingPathComponent("out").path,
                                                       "--heartbeat-interval", "0.5", "--hmac-key", try cluster.nodeKeyFile(node)] + auth, env: env)
        let r = try RedisConnection(url: cluster.redisURL)
        try waitUntil("first heartbeat", timeout: 20) { heartbeat(node, r) != nil }
        // The first heartbeat already carries the GPU: a node never announces itself without the GPUs it
        // has (`hydra submit` without a cluster file checks VRAM against them; the runbook test did).
        XCTAssertEqual(heartbeat(node, r)?.inventory.gpus.count, 1, "the first heartbeat lists the node's GPU")
        let first = heartbeat(node, r)!.seq
        let t0 = Date()
        // Every 0.5 s: 6 more within 4.5 s, while each GPU sample takes 6 s.
        try waitUntil("6 more heartbeats", timeout: 4.5, poll: 0.05) { (heartbeat(node, r)?.seq ?? 0) >= first + 6 }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 4.5)
        // And every one of them still lists it, with how old that reading is (each sample takes 6 s, so
        // it is seconds old, never negative, and grows between samples).
        let hb = try XCTUnwrap(heartbeat(node, r))
        XCTAssertEqual(hb.inventory.gpus.count, 1)
        let age = try XCTUnwrap(hb.sampleAgeS, "the heartbeat says how old its GPU reading is")
        XCTAssertGreaterThanOrEqual(age, 0)
        XCTAssertLessThan(age, 60)
    }

    /// Finding C: SIGTERM stopped the heartbeat at once, so the coordinator declared the still-finishing job
    /// lost and ran it again after attempt 1 had succeeded.
    func testAGracefulStopKeepsHeartbeatingUntilItsJobsHaveFinished() throws {
        try cluster.startWithOneNode("hydra-ai", coordinator: ["--node-timeout", "2"])
        let batch = try cluster.submit("""
        name: graceful
        jobs:
          - {name: g, kind: sleep, constraints: {node: hydra-ai}, spec: {duration_s: 5}}
        """)
        let r = try RedisConnection(url: cluster.redisURL)
        try waitUntil("job held", timeout: 30) { !(heartbeat("hydra-ai", r)?.held.isEmpty ?? true) }
        guard let agent = cluster.processes["hydra-ai"] else { return XCTFail("no agent") }
        kill(agent.processIdentifier, SIGTERM)
        var sawStopping = false
        // Until the agent exits, its heartbeat is there (it goes at exit), says `stopping`, and keeps changing.
        var lastSeq: UInt64 = 0, lastChange = Date()
        var goneAt: Date?
        try waitUntil("agent exits", timeout: 20, poll: 0.1) {
            if !agent.isRunning { return true }
            if let hb = heartbeat("hydra-ai", r) {
                if hb.stopping { sawStopping = true }
                if hb.seq != lastSeq { lastSeq = hb.seq; lastChange = Date() }
                goneAt = nil
                // Once nothing is held, the loops end and the last heartbeat may sit until the DEL.
                if hb.held.isEmpty { lastChange = Date() }
            } else {
                // The agent deletes its heartbeat as its last act, so the key can go a moment before the
                // process is reaped; gone for long while it still runs is the failure.
                let since = goneAt ?? Date()
                goneAt = since
                if Date().timeIntervalSince(since) > 3 { throw TestFailure("heartbeat gone while the agent still drains") }
                return false
            }
            XCTAssertLessThan(Date().timeIntervalSince(lastChange), 1.9, "heartbeat stalled during the grace period")
            return false
        }
        XCTAssertTrue(sawStopping)
        try waitUntil("batch done", timeout: 20, poll: 0.2) { (try? cluster.summary(batch).count(.succeeded)) == 1 }
        let job = try XCTUnwrap(try cluster.store().jobs(JobStore.JobFilter(batchID: batch)).first)
        XCTAssertEqual(job.attempt, 1, "ran again after a graceful stop")
    }

    /// Finding F: with its job stream unusable (WRONGTYPE) the agent kept heartbeating `ready`.
    func testAnUnreadableJobStreamTakesTheNodeOutOfPlacementUntilItReadsAgain() throws {
        try cluster.startAgent("hydra-ai")
        let r = try RedisConnection(url: cluster.redisURL)
        try waitUntil("ready", timeout: 30) { heartbeat("hydra-ai", r).map { !$0.stopping && $0.capacity > 0 } ?? false }
        let jobs = RedisKeys.jobs("hydra-ai")
        _ = try r.pipeline([["DEL", jobs], ["HSET", jobs, "x", "y"]])
        try waitUntil("not ready while the stream is a hash", timeout: 10) { heartbeat("hydra-ai", r).map { $0.stopping && $0.capacity == 0 } ?? false }
        _ = try r.command(["DEL", jobs])
        try waitUntil("ready again", timeout: 10) { heartbeat("hydra-ai", r).map { !$0.stopping && $0.capacity > 0 } ?? false }
    }

    /// A cancel Redis refuses (the node's job stream turned into a hash) was marked sent and lost: the
    /// job ran on. Now it stays due and is sent once the stream is repaired, and the agent stops the job.
    func testACancelTheJobStreamRefusesIsSentAgainOnceItIsRepaired() throws {
        try cluster.startWithOneNode("hydra-ai")
        let batch = try cluster.submit("""
        name: cancel-later
        jobs:
          - {name: long, kind: sleep, constraints: {node: hydra-ai}, spec: {duration_s: 120}}
        """)
        let store = try cluster.store()
        try waitUntil("running", timeout: 30) { try store.jobs(.init(batchID: batch)).first?.state == .running }
        let job = try XCTUnwrap(try store.jobs(.init(batchID: batch)).first)
        let r = try RedisConnection(url: cluster.redisURL)
        let jobs = RedisKeys.jobs("hydra-ai")
        _ = try r.pipeline([["DEL", jobs], ["HSET", jobs, "x", "y"]])
        XCTAssertEqual(try store.cancel(jobIDs: [job.id]), 1)
        func cancelSent() throws -> Bool? { try store.db.exec("SELECT cancel_sent FROM jobs WHERE id = $1::uuid", [job.id]).all.first?.bool("cancel_sent") }
        try waitUntil("the refused cancel is logged", timeout: 20) { cluster.log("coordinator").contains("cannot send a cancel") }
        XCTAssertEqual(try cancelSent(), false, "a cancel Redis refused is not marked sent")
        XCTAssertFalse(cluster.log("hydra-ai").contains("cancel requested"), "nothing can have reached the agent yet")
        _ = try r.command(["DEL", jobs])
        try waitUntil("cancel sent, and the agent stopped the job", timeout: 30) {
            try cancelSent() == true && cluster.log("hydra-ai").contains("cancel requested")
        }
        try waitUntil("the node holds nothing", timeout: 30) { heartbeat("hydra-ai", r).map { $0.held.isEmpty && !$0.stopping } ?? false }
    }
}
