import XCTest
@testable import HydraCore
@testable import HydraIO
@testable import HydraPipeline

/// `POST /api/v1/pipeline/run`: what the body may say, checked before a night starts.
final class PipelineTriggerTests: XCTestCase {
    let token = "fictional-token-0123456789abcdef"
    let now = ISO8601DateFormatter().date(from: "2031-03-02T22:00:00Z")!

    func post(_ body: String) -> HTTPRequest {
        HTTPRequest(method: "POST", path: "/api/v1/pipeline/run", query: [:], headers: ["authorization": "Bearer \(token)"],
                    body: Data(body.utf8), remoteAddress: "127.0.0.1:5000")
    }

    /// `{"until":"06:00","until":"07:00"}` meant whichever the decoder kept; now a 400 naming the key.
    func testADuplicateKeyIsRefused() {
        let r = PipelineTrigger.check(post(#"{"until":"06:00","until":"07:00"}"#), token: token, now: now)
        XCTAssertEqual(r?.0, 400)
        XCTAssertTrue(r?.1.contains("'until' appears twice") == true, "\(String(describing: r))")
        XCTAssertEqual(JSONBody.duplicateKey(#"{"a":{"b":1,"b":2}}"#), "b")
        XCTAssertEqual(JSONBody.duplicateKey(#"{"a":"\"a\"","b":[{"a":1},{"a":2}],"c":{"a":1}}"#), nil)
        XCTAssertEqual(JSONBody.duplicateKey(#"{"\u0061":1,"a":2}"#), "a")
        XCTAssertNil(PipelineTrigger.check(post(#"{"until":"06:00"}"#), token: token, now: now))
    }

    func testABodyIsAJSONObjectWithAtMostAStringUntilThatEndsLater() {
        for ok in ["", "  \n", "{}", #"{"until": "06:00"}"#, #"{"until": "23:59:59"}"#, #"{"until": "2031-03-03T06:00:00Z"}"#] {
            XCTAssertNil(PipelineTrigger.check(post(ok), token: token, now: now), ok)
        }
        let refused: [(String, String)] = [
            (#"{"until": "25:00"}"#, "'until' '25:00': expected HH:MM, HH:MM:SS or an ISO-8601 time"),
            (#"{"until": "2030-01-01T06:00:00Z"}"#, "'until' '2030-01-01T06:00:00Z': 2030-01-01T06:00:00Z is not after now (2031-03-02T22:00:00Z)"),
            (#"{"until": 6}"#, #"'until' must be a string, e.g. "06:00""#),
            (#"{"until": null}"#, #"'until' must be a string, e.g. "06:00""#),
            (#"{"untill": "06:00"}"#, "unknown field 'untill' (the body takes only 'until')"),
            (#"["06:00"]"#, #"the body must be a JSON object, e.g. {"until": "06:00"}"#),
            ("until=06:00", #"the body must be a JSON object, e.g. {"until": "06:00"}"#),
            (#"{"until": "06:00""#, #"the body must be a JSON object, e.g. {"until": "06:00"}"#),
        ]
        for (body, message) in refused {
            let r = PipelineTrigger.check(post(body), token: token, now: now)
            XCTAssertEqual(r?.0, 400, body)
            XCTAssertEqual(r?.1, message, body)
        }
        // The token is checked before the body: a stranger learns nothing from it.
        var stranger = post("until=06:00")
        stranger.headers["authorization"] = "Bearer wrong"
        XCTAssertEqual(PipelineTrigger.check(stranger, token: token, now: now)?.0, 401)
    }

    /// Random bodies (bytes, JSON of every shape, `until` values of every type): the check never
    /// traps, answers 400 or allows, allows only bodies whose `until` (if any) is a time after now,
    /// and a refusal is one line of at most a few hundred characters, whatever the body held.
    func testRandomBodiesAreAllowedOnlyWhenTheyNameAUsableUntil() {
        var rng = SplitMix64(seed: 0x7216_6E12)
        let untils: [JSONValue] = [.string("06:00"), .string("24:00"), .string("2030-01-01T00:00:00Z"), .string("2031-03-03T01:00:00Z"),
                                   .string(""), .string("\u{0}06:00"), .string(String(repeating: "9", count: 5000)), .number(6), .bool(true),
                                   .null, .array([.string("06:00")]), .object(["h": .number(6)])]
        var allowed = 0
        for _ in 0..<3000 {
            let body: String
            switch rng.next() % 3 {
            case 0:
                body = String(decoding: (0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, as: UTF8.self)
            case 1:
                var o: [String: JSONValue] = [:]
                if rng.next() % 4 != 0 { o["until"] = untils[Int(rng.next() % UInt64(untils.count))] }
                if rng.next() % 5 == 0 { o[["x", "Until", "until ", "\u{1}"][Int(rng.next() % 4)]] = .number(1) }
                body = (try? JSONCoding.encodeString(JSONValue.object(o))) ?? "{}"
            default:
                body = (try? JSONCoding.encodeString(untils[Int(rng.next() % UInt64(untils.count))])) ?? "1"
            }
            let r = PipelineTrigger.check(post(body), token: token, now: now)
            if let (status, message) = r {
                XCTAssertEqual(status, 400, body)
                XCTAssertFalse(message.contains("\n"), message)
                XCTAssertLessThan(message.count, 300, message)
                continue
            }
            allowed += 1
            // Allowed: empty, or an object whose only key is a usable `until`.
            if body.allSatisfy(\.isWhitespace) { continue }
            guard let v = try? JSONCoding.decode(JSONValue.self, from: body), let o = v.objectValue else { return XCTFail("allowed: \(body)") }
            XCTAssertTrue(Set(o.keys).isSubset(of: ["until"]), body)
            if let u = o["until"] {
                let d = u.stringValue.flatMap { NightClock.parseUntil($0, now: now, timeZone: .current) }
                XCTAssertNotNil(d, body)
                XCTAssertGreaterThan(d ?? now, now, body)
            }
        }
        XCTAssertGreaterThan(allowed, 50)
    }

    func testUntilOnTheCommandLineMustEndAfterNow() throws {
        let utc = TimeZone(identifier: "UTC")!
        let iso = ISO8601DateFormatter()
        func problem(_ s: String) -> String? {
            if case .failure(let e) = NightClock.until(s, now: now, timeZone: utc) { return e.message }
            return nil
        }
        XCTAssertEqual(try NightClock.until("06:00", now: now, timeZone: utc).get(), iso.date(from: "2031-03-03T06:00:00Z"))
        XCTAssertEqual(try NightClock.until("22:00", now: now, timeZone: utc).get(), iso.date(from: "2031-03-03T22:00:00Z"))   // tomorrow's
        XCTAssertNil(problem("2031-03-02T22:00:01Z"))
        XCTAssertEqual(problem("2031-03-02T22:00:00Z"), "2031-03-02T22:00:00Z is not after now (2031-03-02T22:00:00Z)")
        XCTAssertEqual(problem("1999-01-01T00:00:00Z"), "1999-01-01T00:00:00Z is not after now (2031-03-02T22:00:00Z)")
        XCTAssertEqual(problem("noon"), "expected HH:MM, HH:MM:SS or an ISO-8601 time")
    }
}
