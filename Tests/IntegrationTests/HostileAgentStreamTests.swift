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

    /// An agent may write anything Redis takes into its own keys: results of 4 MiB and more, 70 MiB of
    /// them at once, a 17 MiB heartbeat. The coordinator reads none of it whole (`MessageLimits`),
    /// refuses it as `oversize`, and applies the genuine results written between the big ones.
    func testResultsAndAHeartbeatOverTheLimitsAreRefusedUnreadAndCostOnlyThatNode() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-compute")
        let ai = try rogue("hydra-ai")
        try ai.heartbeat()
        let batch = try cluster.submit("""
        name: oversize
        jobs:
          - {name: compute, kind: sleep, count: 6, constraints: {node: hydra-compute}, spec: {duration_s: 0}}
          - {name: pinned, kind: sleep, count: 4, constraints: {node: hydra-ai}, spec: {duration_s: 0}}
        """)
        var envelopes: [Envelope] = []
        try waitUntil("the rogue node holds its 4 envelopes", timeout: 30) {
            try ai.heartbeat(held: envelopes.map { HeldJob(id: $0.jobID, attempt: $0.attempt) })
            envelopes += try ai.take()
            return envelopes.count == 4
        }
        // In one transaction, so that one read meets them all (78 MB, past a read's limit): two entries
        // past the entry limit, twenty under it, and the genuine results between them.
        let keys = try XCTUnwrap(ai.keys)
        func xadd(_ body: String) -> [String] {
            let (sig, kid) = keys.sign("result", body)
            return ["XADD", RedisKeys.results("hydra-ai"), "*", "result", body, "sig", sig, "kid", kid]
        }
        let huge = String(repeating: "x", count: MessageLimits.resultEntryBytes + 1)
        let bulky = String(repeating: "y", count: 3_500_000)
        var tx = [["MULTI"], xadd(huge)]
        for i in 0..<20 {
            tx.append(xadd(bulky))
            if i % 5 == 0 { tx.append(xadd(try ai.succeeded(envelopes[i / 5], output: .string("done")).jsonString())) }
        }
        tx += [xadd(huge), ["EXEC"]]
        let writer = try RedisConnection(url: cluster.redisURL)
        XCTAssertEqual(try writer.pipeline(tx).last?.array?.count, 26, "the transaction ran")
        // Held until their results are applied, as a genuine agent does: the leases do not run out meanwhile.
        try waitUntil("every job done", timeout: 60) {
            try ai.heartbeat(held: envelopes.map { HeldJob(id: $0.jobID, attempt: $0.attempt) })
            return try jobs(batch).filter { $0.state == .succeeded }.count == 10
        }
        XCTAssertTrue(try jobs(batch).allSatisfy { $0.attempt == 1 }, "no attempt was lost while the big entries were read")
        // And one alone, which a read takes whole: the entry limit holds on that path too.
        try writer.run(xadd(huge))
        let redis = try RedisConnection(url: cluster.redisURL)
        func deadLetters() throws -> [[String: String]] {
            RedisConnection.parseEntries(try redis.run(["XRANGE", RedisKeys.deadLetter, "-", "+"]).array ?? []).compactMap(\.fields)
        }
        try waitUntil("the results stream emptied", timeout: 30) { try redis.run(["XLEN", RedisKeys.results("hydra-ai")]).integer == 0 }
        let results = try deadLetters().filter { $0["source"] == "result" && $0["stream"] == RedisKeys.results("hydra-ai") }
        XCTAssertEqual(results.filter { $0["reason"] == "oversize" }.count, 3, "\(results.map { $0["reason"] ?? "" })")
        XCTAssertEqual(results.filter { $0["reason"] == "malformed" }.count, 20)
        XCTAssertTrue(results.allSatisfy { ($0["raw"]?.utf8.count ?? 0) < 8192 }, "the dead-letter stream keeps an excerpt, never the entry")
        XCTAssertTrue(cluster.log("coordinator").contains("a read of results went past its limit"), "the transaction's read took the entry-by-entry path")

        // A heartbeat over its limit: refused unread, the node counts as silent, the others work on.
        try redis.run(["HSET", RedisKeys.heartbeat("hydra-ai"), "body", String(repeating: "z", count: MessageLimits.heartbeatBytes + 1)])
        try waitUntil("the heartbeat refused as oversize", timeout: 30) {
            try deadLetters().contains { $0["source"] == "heartbeat" && $0["node"] == "hydra-ai" && $0["reason"] == "oversize" }
        }
        let more = try cluster.submit("name: after\njobs:\n  - {name: any, kind: sleep, count: 4, spec: {duration_s: 0}}\n")
        try waitUntil("jobs after the heartbeat done", timeout: 30) { try jobs(more).filter { $0.state == .succeeded }.count == 4 }
        XCTAssertTrue(try jobs(more).allSatisfy { $0.node == "hydra-compute" }, "the silent node took none")
        XCTAssertEqual(cluster.processes["coordinator"]?.isRunning, true, "the coordinator died")
    }

    /// With Redis ACLs on (as production runs), a results stream its node turned into a hash makes the
    /// coordinator's read fail; it finds that stream with XINFO GROUPS. Its Redis user lacked that
    /// subcommand, so every stream looked at fault and every node's results waited 5 s each time.
    func testUnderACLsAResultsStreamTurnedIntoAHashLeavesOnlyThatNodesResultsOut() throws {
        try cluster.enableACL()
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-compute")
        let admin = try RedisConnection(url: cluster.redisURL)
        let key = RedisKeys.results("hydra-ai")
        try waitUntil("the coordinator reads hydra-ai's results stream", timeout: 30) {
            (try admin.command(["XINFO", "GROUPS", key]).array ?? []).count == 1
        }
        try admin.run(["DEL", key])
        try admin.run(["HSET", key, "body", "x"])
        let batch = try cluster.submit("name: acl\njobs:\n  - {name: any, kind: sleep, count: 6, constraints: {node: hydra-compute}, spec: {duration_s: 0}}\n")
        try waitUntil("every job done", timeout: 30) { try jobs(batch).filter { $0.state == .succeeded }.count == 6 }
        try waitUntil("the hash named", timeout: 30) { self.cluster.log("coordinator").contains("not_a_stream") }
        let unreadable = cluster.log("coordinator").split(separator: "\n").filter { $0.contains("results stream unreadable") }
        XCTAssertFalse(unreadable.isEmpty)
        XCTAssertTrue(unreadable.allSatisfy { $0.contains("hydra-ai") }, "only the node that broke its stream is left out:\n\(unreadable.joined(separator: "\n"))")
        XCTAssertFalse(cluster.log("coordinator").contains("refused the heartbeat read script"), "the coordinator's ACL user runs the heartbeat script")
        XCTAssertFalse(cluster.log("coordinator").contains("NOPERM"))
    }
}
