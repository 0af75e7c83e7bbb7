import XCTest
@testable import HydraWire

final class SigningTests: XCTestCase {
    let oldKey = SigningKeys(current: Array("an-old-key-of-at-least-32-characters!".utf8))
    let newKey = Array("a-brand-new-key-of-at-least-32-characters".utf8)
    let env = Envelope(jobID: "j1", attempt: 2, kind: "sleep", spec: ["duration_s": 1], gpuUUIDs: ["GPU-a"], vramBytes: 1 << 30,
                       deadline: nil, issuedAt: 1000, expiresAt: 2000)

    func fields(_ f: [String]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < f.count { out[f[i]] = f[i + 1]; i += 2 }
        return out
    }

    func rejection(_ f: [String: String], keys: SigningKeys?, now: Double = 1500) -> MessageRejection? {
        do { _ = try NodeMessage.decode(f, keys: keys, now: now); return nil } catch { return error as? MessageRejection }
    }

    func testSignedEnvelopeRoundTripsAndRotationAcceptsThePreviousKey() throws {
        let f = fields(try NodeMessage.job(env).fields(keys: oldKey))
        XCTAssertEqual(try NodeMessage.decode(f, keys: oldKey, now: 1500), .job(env))
        let rotated = SigningKeys(current: newKey, previous: Array("an-old-key-of-at-least-32-characters!".utf8))
        XCTAssertEqual(try NodeMessage.decode(f, keys: rotated, now: 1500), .job(env), "during a rotation the old key still verifies")
        let done = SigningKeys(current: newKey)
        XCTAssertEqual(rejection(f, keys: done), .unknownKey, "after the rotation it does not")
    }

    func testEveryKindOfBadMessageIsRefusedWithItsReason() throws {
        var f = fields(try NodeMessage.job(env).fields(keys: oldKey))
        XCTAssertEqual(rejection(f, keys: oldKey, now: 2001), .expired)
        f["body"] = f["body"]!.replacingOccurrences(of: "GPU-a", with: "GPU-b")
        XCTAssertEqual(rejection(f, keys: oldKey), .badSignature)
        XCTAssertEqual(rejection(fields(try NodeMessage.job(env).fields(keys: nil)), keys: oldKey), .unsigned)
        XCTAssertEqual(rejection(["type": "job"], keys: oldKey), .missingBody)
        XCTAssertEqual(rejection(["body": "{}"], keys: oldKey), .malformed)
        let weird = fields(try NodeMessage.cancel(jobID: "j", attempt: 1, issuedAt: 1).fields(keys: oldKey))
        XCTAssertEqual(try NodeMessage.decode(weird, keys: oldKey, now: 5), .cancel(jobID: "j", attempt: 1, issuedAt: 1))
        var unknown = weird
        unknown["type"] = "reboot"
        XCTAssertEqual(rejection(unknown, keys: oldKey), .badSignature, "the type is covered by the MAC")
        XCTAssertEqual(rejection(["type": "job", "body": "{oops"], keys: nil), .malformed)
        XCTAssertEqual(rejection(["type": "reboot", "body": "{}"], keys: nil), .unknownType)
    }

    func testKeyFilesMustBePrivate() throws {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("k-\(UUID())").path
        try String(repeating: "k", count: 40).write(toFile: f, atomically: true, encoding: .utf8)
        chmod(f, 0o644)
        XCTAssertThrowsError(try SigningKeys.load(current: f, previous: nil)) { e in XCTAssertTrue("\(e)".contains("chmod 600"), "\(e)") }
        chmod(f, 0o600)
        XCTAssertNotNil(try SigningKeys.load(current: f, previous: nil))
        try "short".write(toFile: f, atomically: true, encoding: .utf8)
        chmod(f, 0o600)
        XCTAssertThrowsError(try SigningKeys.load(current: f, previous: nil))
        XCTAssertEqual(SigningKeys.generateHex().count, 64)
    }
}
