import Foundation
import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraIO
@testable import HydraStore
@testable import HydraTestSupport

/// What crosses from jobs and agents into the coordinator: stored safely, signed per node, fenced.
final class StoredTextTests: XCTestCase {
    func testCleanRemovesEveryNULAndKeepsEverythingElse() {
        var h = HostileText(seed: 11)
        for i in 0..<3000 {
            let s = h.text(i % 300)
            let c = StoredText.clean(s, maxBytes: 256)
            XCTAssertFalse(c.utf8.contains(0), "NUL left in \(c.debugDescription)")
            if !s.utf8.contains(0) && s.utf8.count <= 256 { XCTAssertEqual(c, s) }
            // Every scalar kept is the input's, NUL replaced, in order.
            let expected = s.unicodeScalars.map { $0 == "\u{0}" ? StoredText.nulReplacement : $0 }
            XCTAssertEqual(Array(c.unicodeScalars.prefix(while: { $0 != "…" })), Array(expected.prefix(c.unicodeScalars.prefix(while: { $0 != "…" }).count)))
            XCTAssertLessThanOrEqual(c.utf8.count, 256 + 64)
            XCTAssertEqual(StoredText.clean(c, maxBytes: 400), c, "cleaning is idempotent")
        }
    }

    func testStorableJSONHasNoNULEscapesAndParsesBack() throws {
        var h = HostileText(seed: 12)
        for _ in 0..<2000 {
            let v = h.value()
            let text = try v.storable().serialized()
            XCTAssertFalse(text.contains("\\u0000"), text)
            XCTAssertFalse(text.utf8.contains(0))
            XCTAssertEqual(try JSONValue.parse(text), v.storable())
        }
        // Deep nesting is cut (PostgreSQL and the codecs stop at some depth).
        var deep: JSONValue = .string("x")
        for _ in 0..<200 { deep = .array([deep]) }
        XCTAssertTrue(try deep.storable(maxDepth: 64).serialized().contains("nested deeper than 64"))
    }

    func testABatchFileWithANULIsRefusedWithItsPlace() {
        let text = "name: nul\njobs:\n  - {name: a, kind: sleep, spec: {duration_s: 0, prompt: \"x\\0y\"}}\n"
        XCTAssertThrowsError(try BatchFile.parse(text: text, file: "b.yaml", cluster: nil)) { e in
            XCTAssertEqual("\(e)", "b.yaml: jobs[0].spec.prompt: contains a NUL character (\\0), which cannot be stored; remove it")
        }
    }

    func testOversizedResultsKeepTheirSizeAndAnExcerpt() throws {
        let big = JSONValue.object(["output": .array((0..<20_000).map { .string("line \($0) of a very chatty job") })])
        let stored = try JobStore.cappedResult(big)
        XCTAssertLessThanOrEqual(stored.utf8.count, 8 * 1024)
        let v = try JSONValue.parse(stored)
        XCTAssertEqual(v["truncated"], .bool(true))
        XCTAssertEqual(v["bytes"]?.intValue, try big.serialized().utf8.count)
    }
}

final class SeenAttemptsTests: XCTestCase {
    func testAnAttemptRunsOnceAndOlderAttemptsAreRefusedAcrossRestarts() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("seen-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("seen").path
        let a = UUID().uuidString.lowercased(), b = UUID().uuidString.lowercased()
        var s: SeenAttempts? = try SeenAttempts(path: path, now: 1000)
        XCTAssertEqual(s!.take(jobID: a, attempt: 1, expiresAt: 2000, now: 1000), .new)
        XCTAssertEqual(s!.take(jobID: a, attempt: 1, expiresAt: 2000, now: 1001), .seen)
        XCTAssertEqual(s!.take(jobID: a, attempt: 2, expiresAt: 2000, now: 1002), .new)
        XCTAssertEqual(s!.take(jobID: a, attempt: 1, expiresAt: 2000, now: 1003), .older)
        XCTAssertEqual(s!.take(jobID: b, attempt: 3, expiresAt: 1100, now: 1004), .new)
        s = nil
        // A restart remembers; garbage lines are skipped; what expired is forgotten.
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        h.seekToEndOfFile()
        h.write(Data("not a line\n\u{0}\u{1}\nx y z\n".utf8))
        try h.close()
        let again = try SeenAttempts(path: path, now: 1500)
        XCTAssertEqual(again.take(jobID: a, attempt: 2, expiresAt: 2000, now: 1500), .seen)
        XCTAssertEqual(again.take(jobID: a, attempt: 1, expiresAt: 2000, now: 1500), .older)
        XCTAssertEqual(again.take(jobID: b, attempt: 3, expiresAt: 3000, now: 1500), .new, "b's entry expired at 1100")
        XCTAssertEqual(again.count, 2)
    }
}

final class NodeLivenessTests: XCTestCase {
    func testLivenessIsMeasuredOnTheCoordinatorsClockAlone() {
        var l = NodeLiveness(timeout: 5)
        XCTAssertFalse(l.settled(now: 100))
        l.observe(node: "hydra-ai", instance: "i1", seq: 1, now: 100)
        l.tick(now: 100)
        XCTAssertTrue(l.isLive("hydra-ai", now: 104))
        // The same heartbeat read again (the agent stopped writing): dead after the timeout, whatever its TTL.
        l.observe(node: "hydra-ai", instance: "i1", seq: 1, now: 104)
        XCTAssertFalse(l.isLive("hydra-ai", now: 105.5))
        // A new sequence number, or a restarted instance, is a sign of life.
        l.observe(node: "hydra-ai", instance: "i1", seq: 2, now: 106)
        XCTAssertTrue(l.isLive("hydra-ai", now: 110))
        l.observe(node: "hydra-ai", instance: "i2", seq: 1, now: 112)
        XCTAssertTrue(l.isLive("hydra-ai", now: 116))
        XCTAssertFalse(l.isLive("hydra-compute", now: 116), "never seen")
        XCTAssertTrue(l.settled(now: 105))
        XCTAssertEqual(l.live(now: 116), ["hydra-ai"])
    }
}

final class NodeSigningTests: XCTestCase {
    let cluster = SigningKeys(current: Array("0123456789abcdef0123456789abcdef-cluster".utf8))

    func testNodeKeysAreDistinctAndBoundToTheirNode() throws {
        let ai = cluster.node("hydra-ai"), compute = cluster.node("hydra-compute")
        XCTAssertNotEqual(ai.current.bytes, compute.current.bytes)
        XCTAssertNotEqual(ai.current.bytes, cluster.current.bytes)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("ai.key").path
        FileManager.default.createFile(atPath: file, contents: Data(cluster.nodeKeyFile(node: "hydra-ai").utf8), attributes: [.posixPermissions: 0o600])
        let loaded = try XCTUnwrap(try SigningKeys.loadForNode("hydra-ai", current: file, previous: nil))
        XCTAssertFalse(loaded.clusterKey)
        XCTAssertEqual(loaded.keys.current.bytes, ai.current.bytes)
        XCTAssertThrowsError(try SigningKeys.loadForNode("hydra-compute", current: file, previous: nil)) { e in
            XCTAssertTrue("\(e)".contains("belongs to node 'hydra-ai'"), "\(e)")
        }
        XCTAssertThrowsError(try SigningKeys.readKey(file)) { e in XCTAssertTrue("\(e)".contains("needs the cluster key"), "\(e)") }
    }

    func testResultsAreAcceptedOnlyFromTheirOwnNodeWithItsKey() throws {
        let ai = cluster.node("hydra-ai"), compute = cluster.node("hydra-compute")
        let r = AttemptResult(jobID: UUID().uuidString.lowercased(), attempt: 2, node: "hydra-ai", outcome: .succeeded, result: ["x": 1])
        func fields(_ f: [String]) -> [String: String] { Dictionary(uniqueKeysWithValues: stride(from: 0, to: f.count, by: 2).map { (f[$0], f[$0 + 1]) }) }
        XCTAssertEqual(try ResultMessage.decode(fields(try ResultMessage.fields(r, keys: ai)), node: "hydra-ai", keys: ai), r)
        func refused(_ f: [String: String]?, node: String, keys: SigningKeys?, _ why: MessageRejection, line: UInt = #line) {
            XCTAssertThrowsError(try ResultMessage.decode(f, node: node, keys: keys), line: line) { e in
                XCTAssertEqual(e as? MessageRejection, why, line: line)
            }
        }
        refused(fields(try ResultMessage.fields(r, keys: nil)), node: "hydra-ai", keys: ai, .unsigned)
        refused(fields(try ResultMessage.fields(r, keys: compute)), node: "hydra-ai", keys: ai, .unknownKey)
        // hydra-compute signs a result that claims hydra-ai's job, on its own stream: its key, wrong node.
        refused(fields(try ResultMessage.fields(r, keys: compute)), node: "hydra-compute", keys: compute, .wrongNode)
        refused(nil, node: "hydra-ai", keys: ai, .missingBody)
        // Every single-byte change of a signed body is refused.
        let good = try ResultMessage.fields(r, keys: ai)
        var rng = SplitMix64(seed: 5)
        for _ in 0..<500 {
            var body = Array(good[1].utf8)
            let i = Int(rng.next() % UInt64(body.count))
            body[i] = body[i] ^ UInt8(truncatingIfNeeded: rng.next() | 1)
            var f = fields(good)
            f["result"] = String(decoding: body, as: UTF8.self)
            if f["result"] == good[1] { continue }
            XCTAssertThrowsError(try ResultMessage.decode(f, node: "hydra-ai", keys: ai))
        }
    }

    func testHeartbeatsAndEnvelopesNameTheirNode() throws {
        let ai = cluster.node("hydra-ai")
        let hb = HeartbeatMessage(node: "hydra-ai", instance: "i", seq: 3, sentAt: 1, state: "ready", version: "t", capacity: 8,
                                  inventory: Inventory(), held: [HeldJob(id: "0b7c2d3e-1111-4222-8333-944455556666", attempt: 1)])
        let f = try hb.fields(keys: ai)
        let dict = Dictionary(uniqueKeysWithValues: stride(from: 0, to: f.count, by: 2).map { (f[$0], f[$0 + 1]) })
        XCTAssertEqual(try HeartbeatMessage.decode(dict, node: "hydra-ai", keys: ai), hb)
        // The same signed hash copied under another node's key is refused there (other key, other node).
        XCTAssertThrowsError(try HeartbeatMessage.decode(dict, node: "hydra-compute", keys: cluster.node("hydra-compute")))
        XCTAssertThrowsError(try HeartbeatMessage.decode(dict, node: "hydra-compute", keys: nil)) { e in
            XCTAssertEqual(e as? MessageRejection, .wrongNode)
        }

        let env = Envelope(jobID: "j", attempt: 1, kind: "sleep", spec: [:], gpuUUIDs: [], vramBytes: 0, deadline: nil,
                           issuedAt: 10, expiresAt: 100, node: "hydra-ai")
        let ef = try NodeMessage.job(env).fields(keys: ai)
        let ed = Dictionary(uniqueKeysWithValues: stride(from: 0, to: ef.count, by: 2).map { (ef[$0], ef[$0 + 1]) })
        XCTAssertEqual(try NodeMessage.decode(ed, keys: ai, now: 50, node: "hydra-ai"), .job(env))
        XCTAssertThrowsError(try NodeMessage.decode(ed, keys: ai, now: 50, node: "hydra-compute")) { e in
            XCTAssertEqual(e as? MessageRejection, .wrongNode)
        }
        let cancel = NodeMessage.cancel(jobID: "j", attempt: 1, issuedAt: 10, node: "hydra-ai", expiresAt: 20)
        let cf = try cancel.fields(keys: ai)
        let cd = Dictionary(uniqueKeysWithValues: stride(from: 0, to: cf.count, by: 2).map { (cf[$0], cf[$0 + 1]) })
        XCTAssertEqual(try NodeMessage.decode(cd, keys: ai, now: 15, node: "hydra-ai"), cancel)
        XCTAssertThrowsError(try NodeMessage.decode(cd, keys: ai, now: 25, node: "hydra-ai")) { e in
            XCTAssertEqual(e as? MessageRejection, .expired)
        }
    }
}
