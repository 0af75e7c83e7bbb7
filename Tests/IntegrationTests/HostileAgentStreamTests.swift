import Foundation
import Synchronization
import XCTest
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraTestSupport

/// What one agent can do with its own keys and its own signature (heartbeats with numbers PostgreSQL
/// cannot store, the maximum id on its job stream, its results stream deleted or turned into a hash)
/// costs that node alone: the coordinator keeps leading and every other node keeps working.
/// Real coordinator and agent, real Redis and PostgreSQL; the hostile node is a `RogueAgent`.
final class HostileAgentStreamTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    func rogue(_ node: String) throws -> RogueAgent {
        let keys = try XCTUnwrap(try SigningKeys.load(current: cluster.keyFile, previous: nil))
        return RogueAgent(node: node, redis: try RedisEndpoint(url: cluster.redisURL), keys: keys.node(node))
    }

    func jobs(_ batch: String) throws -> [JobRow] { try cluster.store().jobs(.init(batchID: batch)) }

    func testTheMaximumIDOnItsJobStreamAndAHashForItsResultsCostOnlyThatNode() throws {
        let redis = try RedisConnection(url: cluster.redisURL)
        // Both allowed by the agent's ACL on its own keys; both survive coordinator restarts.
        try redis.run(["XADD", RedisKeys.jobs("hydra-ai"), "18446744073709551615-18446744073709551615", "x", "y"])
        try redis.run(["HSET", RedisKeys.results("hydra-ai"), "body", "x"])
        let ai = try rogue("hydra-ai")
        try ai.heartbeat()
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-compute")
        let batch = try cluster.submit("""
        name: maxid
        jobs:
          - {name: any, kind: sleep, count: 6, spec: {duration_s: 0}}
          - {name: pinned, kind: sleep, constraints: {node: hydra-ai}, spec: {duration_s: 0}}
        """)
        try waitUntil("every job that may run elsewhere done", timeout: 30) {
            try ai.heartbeat()
            return try jobs(batch).filter { $0.state == .succeeded }.count == 6
        }
        XCTAssertEqual(cluster.processes["coordinator"]?.isRunning, true, "the coordinator died")
        let pinned = try XCTUnwrap(try jobs(batch).first { $0.name.hasPrefix("pinned") })
        XCTAssertEqual(pinned.state, .pending, "a job for the blocked node must wait, not burn attempts")
        XCTAssertEqual(pinned.attempt, 0)
        // Its reason says why (it read "draining", which the operator had not done).
        try waitUntil("the pinned job's reason names the stream", timeout: 20) {
            try ai.heartbeat()
            return try jobs(batch).first { $0.name.hasPrefix("pinned") }?.pendingReason?.contains("takes no envelopes (its job stream: stream_id_exhausted)") ?? false
        }
        let log = cluster.log("coordinator")
        XCTAssertTrue(log.contains("stream_id_exhausted"), "the blocked node is named with its reason")
        XCTAssertTrue(log.contains("not_a_stream"), "the unreadable results stream is named with its reason")
    }

    func testAHeldAttemptPostgreSQLCannotStoreAndAResultsStreamDeletedAllTheTimeCostOnlyThatNode() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-compute")
        let ai = try rogue("hydra-ai")
        try ai.heartbeat()
        final class Stop: Sendable { let flag = Mutex(false) }
        let stop = Stop()
        let url = cluster.redisURL
        let deleter = Thread {
            guard let r = try? RedisConnection(url: url) else { return }
            // The attack's own pace, as in the audit: DEL every 100 ms.
            while !stop.flag.withLock({ $0 }) {
                _ = try? r.command(["DEL", RedisKeys.results("hydra-ai")])
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        deleter.start()
        defer { stop.flag.withLock { $0 = true } }
        let batch = try cluster.submit("name: held\njobs:\n  - {name: any, kind: sleep, count: 6, spec: {duration_s: 0}}\n")
        try waitUntil("every job done", timeout: 30) {
            try ai.heartbeat(held: [HeldJob(id: UUID().uuidString.lowercased(), attempt: 9_999_999_999)])
            return try jobs(batch).filter { $0.state == .succeeded }.count == 6
        }
        XCTAssertEqual(cluster.processes["coordinator"]?.isRunning, true, "the coordinator died")
        XCTAssertTrue(cluster.log("coordinator").contains("implausible"))
        // The refused heartbeat is on the dead-letter stream, with its reason.
        let redis = try RedisConnection(url: cluster.redisURL)
        let dead = RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter, "-", "+"]).array ?? [])
        XCTAssertTrue(dead.contains { $0.fields?["source"] == "heartbeat" && $0.fields?["reason"] == "implausible" && $0.fields?["node"] == "hydra-ai" })
    }
}
