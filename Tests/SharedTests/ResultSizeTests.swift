import Foundation
import XCTest
import HydraCore
import HydraWire

/// A genuine agent never sends a result the coordinator refuses as oversize: `ResultMessage.fields`
/// shrinks a large one to what the coordinator would keep anyway, signed, and leaves the rest untouched.
final class ResultSizeTests: XCTestCase {
    let keys = SigningKeys(current: Array("a-result-size-test-key-of-32-characters!".utf8))

    /// A document of random shape and size (about `budget` bytes at most): wide arrays, deep nesting,
    /// long strings with NULs, control codes and multi-byte characters.
    func document(_ rng: inout SplitMix64, budget: inout Int, depth: Int = 0) -> JSONValue {
        let pick = depth > 6 || budget <= 0 ? rng.next() % 4 : rng.next() % 7
        switch pick {
        case 0: return .number(Double(rng.next() % 1_000_000) / 7)
        case 1: return .bool(rng.next() % 2 == 0)
        case 2, 3:
            let n = min(max(budget, 0), rng.next() % 10 == 0 ? Int(rng.next() % 400_000) : Int(rng.next() % 200))
            budget -= n
            let pieces = ["a", "\u{0}", "\u{1b}", "\"", "\\", "é", "😀", "\n", "xyz"]
            let unit = (0..<8).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined()
            return .string(String(repeating: unit, count: n / unit.utf8.count + 1))
        case 4, 5:
            let n = rng.next() % 8 == 0 ? Int(rng.next() % 5000) : Int(rng.next() % 6)
            return .array((0..<n).map { _ in document(&rng, budget: &budget, depth: depth + 1) })
        default:
            var o: [String: JSONValue] = [:]
            for i in 0..<Int(rng.next() % 6) { o["k\(i)"] = document(&rng, budget: &budget, depth: depth + 1) }
            return .object(o)
        }
    }

    func testEveryResultAnAgentSendsFitsTheEntryLimitAndSmallOnesGoUnchanged() throws {
        var rng = SplitMix64(seed: 0x5E2D)
        var shrunk = 0, unchanged = 0
        for round in 0..<300 {
            var budget = rng.next() % 3 == 0 ? Int(rng.next() % 1_500_000) : Int(rng.next() % 4000)
            let errorBytes = rng.next() % 5 == 0 ? Int(rng.next() % 200_000) : Int(rng.next() % 100)
            let r = AttemptResult(jobID: UUID().uuidString.lowercased(), attempt: 1, node: "hydra-ai", outcome: .succeeded,
                                  error: String(repeating: "\u{0}e", count: errorBytes / 2), result: document(&rng, budget: &budget),
                                  startedAt: 1, finishedAt: 2, durationSeconds: 1, peakVRAMBytes: 3)
            let plain = try r.jsonString()
            let f = try ResultMessage.fields(r, keys: keys)
            let size = stride(from: 0, to: f.count, by: 2).reduce(0) { $0 + f[$1].utf8.count + f[$1 + 1].utf8.count }
            XCTAssertLessThanOrEqual(size, MessageLimits.resultEntryBytes, "round \(round): \(plain.utf8.count) bytes became \(size)")
            var fields: [String: String] = [:]
            for i in stride(from: 0, to: f.count, by: 2) { fields[f[i]] = f[i + 1] }
            let back = try ResultMessage.decode(fields, node: "hydra-ai", keys: keys)
            XCTAssertEqual(back.jobID, r.jobID)
            XCTAssertEqual(back.outcome, r.outcome)
            if plain.utf8.count <= MessageLimits.resultSendBytes {
                XCTAssertEqual(fields["result"], plain, "round \(round): a result under the send limit must go as it is")
                unchanged += 1
            } else {
                shrunk += 1
                XCTAssertLessThanOrEqual((back.error ?? "").utf8.count, 16 * 1024 + 64)
                if let doc = r.result, try doc.serialized().utf8.count > StoredText.maxDocumentBytes {
                    guard case .object(let o)? = back.result else { return XCTFail("round \(round): \(String(describing: back.result))") }
                    XCTAssertEqual(o["truncated"], JSONValue.bool(true))
                    XCTAssertEqual(o["bytes"], JSONValue.number(Double(try doc.serialized().utf8.count)))
                } else {
                    XCTAssertEqual(back.result, r.result?.storable(), "round \(round): a document under the store's limit keeps its content")
                }
            }
        }
        XCTAssertGreaterThan(shrunk, 20)
        XCTAssertGreaterThan(unchanged, 100)
    }
}
