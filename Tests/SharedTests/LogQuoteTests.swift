import XCTest
import Foundation
@testable import HydraCore
@testable import HydraIO

/// Log values come from requests, job names and service answers: none may start a line of its own.
final class LogQuoteTests: XCTestCase {
    /// Reads back a value as `Log.quote` wrote it (the test's own logfmt reader).
    func unquote(_ q: String) -> String? {
        guard q.hasPrefix("\""), q.hasSuffix("\""), q.count >= 2 else { return q }
        var out = String.UnicodeScalarView()
        var it = Array(q.unicodeScalars.dropFirst().dropLast()).makeIterator()
        while let s = it.next() {
            guard s == "\\" else { out.append(s); continue }
            switch it.next() {
            case "\\"?: out.append("\\")
            case "\""?: out.append("\"")
            case "n"?: out.append("\n")
            case "r"?: out.append("\r")
            case "t"?: out.append("\t")
            case "u"?:
                guard it.next() == "{" else { return nil }
                var hex = ""
                while let h = it.next(), h != "}" { hex.unicodeScalars.append(h) }
                guard let v = UInt32(hex, radix: 16), let u = Unicode.Scalar(v) else { return nil }
                out.append(u)
            default: return nil
            }
        }
        return String(out)
    }

    func testTheForgedLineOfTheAuditIsOneQuotedValue() {
        let path = "/x\u{0}\r\nts=2026-12-06T00:00:00Z level=error msg=FORGED"
        let q = Log.quote(path)
        XCTAssertEqual(q, "\"/x\\u{0}\\r\\nts=2026-12-06T00:00:00Z level=error msg=FORGED\"")
        XCTAssertEqual(unquote(q), path)
        XCTAssertEqual(Log.quote("job-42"), "job-42", "plain values stay bare")
        XCTAssertEqual(Log.quote("a\\b"), "\"a\\\\b\"")
        XCTAssertEqual(Log.quote("bell\u{7}"), "\"bell\\u{7}\"")
        XCTAssertEqual(Log.quote("c1\u{85}"), "\"c1\\u{85}\"", "NEL, a C1 control some terminals take as a line break")
        XCTAssertEqual(Log.quote("héllo"), "héllo")
    }

    func testRandomValuesNeverBreakTheLineAndReadBack() {
        var rng = SplitMix64(seed: UInt64.random(in: 1...UInt64.max))
        let pool: [Unicode.Scalar] = ["a", "Z", "0", " ", "=", "\"", "\\", "\n", "\r", "\t", "\u{0}", "\u{1B}", "\u{7F}", "\u{85}",
                                      "\u{2028}", "é", "💥", "{", "}", "u"]
        for _ in 0..<20_000 {
            var v = String.UnicodeScalarView()
            for _ in 0..<Int(rng.next() % 24) { v.append(pool[Int(rng.next() % UInt64(pool.count))]) }
            let s = String(v), q = Log.quote(s)
            XCTAssertFalse(q.unicodeScalars.contains { $0.properties.generalCategory == .control }, q.debugDescription)
            XCTAssertEqual(unquote(q), s, q.debugDescription)
            XCTAssertEqual(q == s, !s.isEmpty && !s.unicodeScalars.contains { " \"=\\".unicodeScalars.contains($0) || $0.properties.generalCategory == .control },
                           "bare exactly when nothing needs quoting: \(q.debugDescription)")
        }
    }
}

/// Repeated warnings: the first of a kind at once, then one line a window with how many were left out.
final class LogThrottleTests: XCTestCase {
    func testAFloodBecomesOneLineAWindowWithItsCount() {
        let t = LogThrottle(every: 60, maxKeys: 4)
        XCTAssertEqual(t.admit("results bad_signature", now: 1000), 0, "the first is logged")
        for i in 1...33_000 { XCTAssertNil(t.admit("results bad_signature", now: 1000 + Double(i) / 1000), "\(i)") }
        XCTAssertEqual(t.admit("results malformed", now: 1010), 0, "another reason is its own line")
        XCTAssertEqual(t.admit("results bad_signature", now: 1060), 33_000, "the next window says how many were left out")
        XCTAssertNil(t.admit("results bad_signature", now: 1061))
        XCTAssertEqual(t.admit("results bad_signature", now: 900), 1, "a clock that went back logs rather than going quiet")
        for k in 0..<10 { XCTAssertNotNil(t.admit("k\(k)", now: 2000), "new keys are logged even past the bound") }
    }

    func testTheLeftOutFieldAppearsOnlyWhenLinesWereLeftOut() {
        XCTAssertTrue(LogThrottle.leftOut("refused", 0).isEmpty)
        XCTAssertEqual(LogThrottle.leftOut("refused", 33_000).map { "\($0.0)=\($0.1)" }, ["more_refused_since_last_line=33000"])
    }
}
