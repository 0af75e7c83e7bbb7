import Foundation
import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraTestSupport

/// Foundation is the reference here: JSONCoding now routes JSONValue to the fast codec,
/// so these helpers call JSONEncoder/JSONDecoder directly.
enum Reference {
    static func encode<T: Encodable>(_ v: T) throws -> String { String(decoding: try JSONCoding.encoder().encode(v), as: UTF8.self) }
    static func decode<T: Decodable>(_ t: T.Type, _ s: String) throws -> T { try JSONDecoder().decode(t, from: Data(s.utf8)) }
    static func decode<T: Decodable>(_ t: T.Type, bytes: [UInt8]) throws -> T { try JSONDecoder().decode(t, from: Data(bytes)) }
}

/// Random JSON values, envelopes and results from a seed.
struct JSONGen {
    var rng: SplitMix64
    init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    mutating func int(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
    mutating func pick<T>(_ a: [T]) -> T { a[int(a.count)] }

    static let specialDoubles: [Double] = [
        0, -0.0, 1, -1, 0.1, 0.5, 1.5, -2.25, 1e-7, 1e-5, 1e-4, 0.001, 1e15, 1e15 + 0.5, 9e15, 9e15 - 1, 9e15 + 2,
        9_007_199_254_740_992, 9_007_199_254_740_994, 1e16, 1e17, 1e21, 1e22, 1e23, 1.5e300, Double.leastNonzeroMagnitude, 2.2250738585072014e-308,
        Double.greatestFiniteMagnitude, -Double.greatestFiniteMagnitude, Double.leastNormalMagnitude, 123456789.123,
        1_736_112_345.123_456_7, 1_736_112_345, 0.30000000000000004, 100.25, -0.000001, 4.35, 2.675, 1e-300,
        Double(Int64.max), Double(Int64.min), 8.999999999999998e15, 1e14, 123456789012345.0, 999_999_999_999_999,
    ]

    mutating func double() -> Double {
        switch int(6) {
        case 0: return pick(Self.specialDoubles)
        case 1: return Double(int(2001) - 1000)
        case 2: return Double(int(1_000_000)) / 1000
        case 3: return 1_700_000_000 + Double(rng.next() >> 11) / Double(1 << 53) * 100_000_000
        case 4: return (Double(rng.next() >> 11) / Double(1 << 53) - 0.5) * pow(10, Double(int(600) - 300))
        default:
            // Any finite bit pattern, subnormals included.
            while true {
                let d = Double(bitPattern: rng.next())
                if d.isFinite { return d }
            }
        }
    }

    static let pieces: [String] = [
        "a", "B", "z", "Z", "_", "-", "job", "GPU-1", " ", "/", "\\", "\"", "\n", "\r", "\t", "\u{8}", "\u{c}", "\u{0}",
        "\u{1}", "\u{1f}", "\u{7f}", "é", "e\u{301}", "ß", "ﬀ", "Ω", "日本", "💥", "👩‍👩‍👧", "\u{2028}", "\u{feff}", "\u{ffff}",
        "\u{10ffff}", "0", "1e5", "null", "{", "]", ":", ",", "</script>", "%s", "\u{a0}", "A", "aa", "",
    ]

    mutating func string(max: Int = 6) -> String { (0..<int(max + 1)).map { _ in pick(Self.pieces) }.joined() }

    mutating func value(depth: Int = 0) -> JSONValue {
        switch int(depth >= 4 ? 4 : 7) {
        case 0: return .null
        case 1: return .bool(int(2) == 0)
        case 2: return .number(double())
        case 3: return .string(string())
        case 4, 5:
            return .array((0..<int(5)).map { _ in value(depth: depth + 1) })
        default:
            var o: [String: JSONValue] = [:]
            for _ in 0..<int(6) { o[string(max: 3)] = value(depth: depth + 1) }
            return .object(o)
        }
    }

    mutating func maybe<T>(_ make: (inout JSONGen) -> T) -> T? { int(3) == 0 ? nil : make(&self) }

    mutating func envelope() -> Envelope {
        Envelope(v: pick([1, 2, 0, -1, Int.max, Int.min]), jobID: pick([UUID().uuidString.lowercased(), string()]),
                 attempt: int(5), kind: pick(["sleep", "image", string()]), spec: value(),
                 gpuUUIDs: (0..<int(4)).map { _ in pick(["GPU-\(int(100))", string()]) },
                 vramBytes: pick([0, 1 << 30, UInt64.max, rng.next(), UInt64(1) << 53 + 1]),
                 deadline: maybe { $0.double() }, issuedAt: double(), expiresAt: maybe { $0.double() })
    }

    mutating func result() -> AttemptResult {
        AttemptResult(jobID: pick([UUID().uuidString.lowercased(), string()]), attempt: int(4) - 1, node: pick(["n1", string()]),
                      outcome: pick([.succeeded, .failed, .released, .started]),
                      failureClass: maybe { $0.pick(FailureClass.allCases) }, error: maybe { $0.string(max: 10) },
                      result: maybe { $0.value() }, startedAt: maybe { $0.double() }, finishedAt: maybe { $0.double() },
                      durationSeconds: maybe { $0.double() }, peakVRAMBytes: maybe { $0.pick([0, 1 << 33, UInt64.max, $0.rng.next()]) })
    }
}

final class FastJSONTests: XCTestCase {
    /// Both accept and agree, or both refuse.
    func assertSameAsFoundation(_ text: String, file: StaticString = #filePath, line: UInt = #line) {
        let ours = Result { try JSONValue.parse(text) }
        let theirs = Result { try Reference.decode(JSONValue.self, text) }
        switch (ours, theirs) {
        case (.success(let a), .success(let b)): XCTAssertEqual(a, b, "\(text.debugDescription)", file: file, line: line)
        case (.failure, .failure): break
        case (.success(let a), .failure): XCTFail("we accept \(text.debugDescription) as \(a); Foundation refuses", file: file, line: line)
        case (.failure(let e), .success(let b)): XCTFail("Foundation accepts \(text.debugDescription) as \(b); we refuse: \(e)", file: file, line: line)
        }
    }

    // MARK: writing

    func testSerializationIsByteIdenticalToJSONEncoderForGeneratedValues() throws {
        var g = JSONGen(seed: 0x5EED)
        for n in 0..<3000 {
            let v = g.value()
            let fast = try v.serialized()
            XCTAssertEqual(fast, try Reference.encode(v), "value #\(n): \(v)")
            XCTAssertEqual(try JSONValue.parse(fast), v, "round trip #\(n)")
            XCTAssertEqual(try Reference.decode(JSONValue.self, fast), v)
            // Foundation's pretty output (other whitespace, same values) reads back too.
            let pretty = String(decoding: try JSONCoding.encoder(pretty: true).encode(v), as: UTF8.self)
            XCTAssertEqual(try JSONValue.parse(pretty), v)
        }
    }

    func testNumbersStringsAndKeysAreWrittenAsJSONEncoderWritesThem() throws {
        // The subtleties, spelled out: Int64 for integral values below 9e15 (so -0.0 is "0"),
        // otherwise Double.description without ".0": exponents with a sign and two digits.
        let cases: [(JSONValue, String)] = [
            (.number(-0.0), "0"), (.number(0.1), "0.1"), (.number(1e-7), "1e-07"), (.number(1e21), "1e+21"),
            (.number(1.5e300), "1.5e+300"), (.number(123456789.123), "123456789.123"), (.number(9e15), "9000000000000000"),
            (.number(1e16), "1e+16"), (.number(.leastNonzeroMagnitude), "5e-324"), (.number(-1.5), "-1.5"),
            (.string("a\u{8}\u{c}\n\r\t\"\\/\u{0}\u{1f}\u{7f}é💥\u{2028}\u{b}"),
             #""a\b\f\n\r\t\"\\/\u0000\u001f"# + "\u{7f}é💥\u{2028}" + #"\u000b""#),
            (["b": nil, "a": nil, "B": nil, "é": nil, "aa": nil, "": nil, "\u{7f}": nil, "ﬀ": nil, "💥": nil, "_": nil],
             "{" + ["", "B", "_", "a", "aa", "b", "\u{7f}", "é", "ﬀ", "💥"].map { "\"\($0)\":null" }.joined(separator: ",") + "}"),
            (.object([:]), "{}"), (.array([]), "[]"), (.string(""), #""""#), (true, "true"), (nil, "null"),
        ]
        for (v, expected) in cases {
            XCTAssertEqual(try v.serialized(), expected)
            XCTAssertEqual(try Reference.encode(v), expected)
        }
        // A plain Double field (not through JSONValue) keeps -0 and writes integral values as they are.
        let e = Envelope(jobID: "j", attempt: 1, kind: "k", spec: nil, gpuUUIDs: [], vramBytes: 0, deadline: -0.0, issuedAt: 1e15)
        XCTAssertEqual(try e.jsonString(), try Reference.encode(e))
        XCTAssertTrue(try e.jsonString().contains(#""deadline":-0,"#))
    }

    func testEveryDoubleFormatMatches() throws {
        var g = JSONGen(seed: 7)
        var doubles = JSONGen.specialDoubles
        for _ in 0..<20_000 { doubles.append(g.double()) }
        for e in -30...30 { doubles.append(pow(10, Double(e))); doubles.append(-pow(2, Double(e * 2))) }
        for d in doubles {
            var fast: [UInt8] = []
            try FastJSON.double(d, into: &fast)
            // JSONEncoder's format for a Double, read off an array of one.
            let ref = try Reference.encode([d])
            XCTAssertEqual("[" + String(decoding: fast, as: UTF8.self) + "]", ref, "\(d)")
            XCTAssertEqual(try JSONValue.number(d).serialized(), try Reference.encode(JSONValue.number(d)), "\(d)")
        }
    }

    func testWhatJSONEncoderRefusesIsRefused() throws {
        for d in [Double.nan, .infinity, -.infinity] {
            XCTAssertThrowsError(try JSONValue.array([.number(d)]).serialized())
            XCTAssertThrowsError(try Reference.encode(JSONValue.array([.number(d)])))
            let e = Envelope(jobID: "j", attempt: 1, kind: "k", spec: nil, gpuUUIDs: [], vramBytes: 0, deadline: nil, issuedAt: d)
            XCTAssertThrowsError(try e.jsonString())
            XCTAssertThrowsError(try Reference.encode(e))
        }
        // Nesting: JSONEncoder writes 511 levels and refuses 512; a spec sits one level down.
        func nested(_ n: Int) -> JSONValue { (0..<n).reduce(JSONValue.null) { v, i in i % 2 == 0 ? .array([v]) : .object(["k": v]) } }
        for n in [510, 511, 512] {
            XCTAssertEqual((try? nested(n).serialized()) != nil, (try? Reference.encode(nested(n))) != nil, "depth \(n)")
            let e = Envelope(jobID: "j", attempt: 1, kind: "k", spec: nested(n), gpuUUIDs: [], vramBytes: 0, deadline: nil, issuedAt: 1)
            XCTAssertEqual(try? e.jsonString(), try? Reference.encode(e), "envelope with a spec \(n) deep")
        }
        XCTAssertNotNil(try? nested(511).serialized())
        XCTAssertNil(try? nested(512).serialized())
    }

    func testJSONCodingRoutesJSONValueToTheFastCodec() throws {
        var g = JSONGen(seed: 99)
        for _ in 0..<200 {
            let v = g.value()
            let s = try JSONCoding.encodeString(v)
            XCTAssertEqual(s, try Reference.encode(v))
            XCTAssertEqual(try JSONCoding.decode(JSONValue.self, from: s), v)
        }
        // Pretty output and other types still go through Foundation.
        XCTAssertEqual(try JSONCoding.encodeString(["a": 1] as JSONValue, pretty: true), "{\n  \"a\" : 1\n}")
        XCTAssertEqual(try JSONCoding.decode([Int].self, from: "[1,2]"), [1, 2])
    }

    // MARK: reading

    func testParserAgreesWithJSONDecoderOnEdgeCases() {
        let cases = [
            "1e400", "-1e400", "1e-400", "2e-324", "3e-324", "5e-324", "2.4703282292062328e-324", "2.4703282292062327e-324",
            "1.7976931348623158e308", "1.7976931348623159e308", "18446744073709551616", "12345678901234567890123",
            "9007199254740993", "0.1", "1736112345.1234567", "82.8000000000001", "4.9406564584124654e-324", "1e-323",
            "0." + String(repeating: "0", count: 400) + "1", "1" + String(repeating: "0", count: 400), "-" + String(repeating: "9", count: 30) + ".5e-3",
            "01", "-01", "00.0", "-0", "-0.0", "+1", "1.", ".5", "1e", "1.e5", "1.0e", "-", "[-]", "[-a]", "0x10", "NaN", "Infinity", "-Infinity",
            "1E5", "1e+5", "2.5E-3", "0e0", "-0e-0", "1E+0", "0.0", "0.00", "-0.000", "0.0e-5", "0e+5", "0.0e+0", "-0E-0",
            #""\ud800""#, #""\udc00""#, #""\ud83d\udca5""#, #""\ud83d\u0041""#, #""\u00e9""#, #""\U00e9""#, #""\x""#, "\"a\tb\"",
            "\"a\u{1}b\"", "\"\u{7f}\"", #""\ud800\ud800""#, #""\uDBFF\uDFFF""#, #""\uD800x""#, #""\u00""#, #""\uzzzz""#, #""\u0000""#,
            #""\/\b\f\n\r\t\"\\""#, "\"unterminated", "\"", #""\"#,
            #"{"a":1,"a":2}"#, #"{"a":1,"b":2,"a":3}"#, #"{"a":{"x":1},"a":[2]}"#, #"{"é":1,"e\u0301":2}"#,
            #"{"a":1,}"#, "[1,]", "[,]", "[1,,]", "{,}", #"{"a":1,,}"#, " [1 , ] ", "[1,\n]", #"{"a":1 , }"#, "[[1,],]",
            " [1] ", "\u{feff}[1]", " \u{feff}1", "\u{feff}\u{feff}1", "\u{feff} 1", "[\u{feff}1]", "[1] x", "", " ", "true", "tru",
            "nul", "null", "false", "falsey", "[true false]", #"{"a" : 1}"#, "{1:2}", #"{"a"}"#, #"{"a":}"#, #"{"a" 1}"#, "[1 2]",
            "\u{a0}1", "\r\n\t1", "\u{c}1", #"{"a":{"b":[true,false,null,"x",-1.5e3]}}"#, "[", "]", "{", "}", "[[]]", "{}",
            #"{"":""}"#, "[\"\u{2028}\"]", "\"\u{10ffff}\"", "1\u{0}1",
            // The value of a repeated key is only scanned by Foundation, never decoded.
            #"{"a":1,"a":01}"#, #"{"a":1,"a":1.2.3}"#, #"{"a":1,"a":-}"#, #"{"a":1,"a":"\x"}"#, "{\"a\":1,\"a\":\"a\nb\"}",
            #"{"a":1,"a":[1,2,--e]}"#, #"{"a":1,"a":{"k":1e999}}"#, #"{"a":1,"a":"\u12"}"#, #"{"a":1,"a":"\u12345"}"#, #"{"a":1,"a":tru}"#,
            #"{"a":1,"a":[1,}"#, #"{"a":1,"a":{"k"}}"#, #"{"a":1,"a":"\"#, #"{"a":1,"a":"\ud800"}"#, #"{"a":[1,2],"a":"\u00zz"}"#,
            "{\"a\":1,\"a\":" + String(repeating: "[", count: 511) + String(repeating: "]", count: 511) + "}",
            "{\"a\":1,\"a\":" + String(repeating: "[", count: 512) + String(repeating: "]", count: 512) + "}",
        ]
        for c in cases where !FastJSONTests.foundationRefusesZeroWithExponent(c) { assertSameAsFoundation(c) }
    }

    /// Foundation refuses some zeros written with an exponent (0e1, 0E5, -0.0e1, 0.000e5 — but
    /// not -0e1 or 0.0e1), which looks like a bug in its "did it round to zero" check. We accept them.
    static func foundationRefusesZeroWithExponent(_ s: String) -> Bool {
        let u = Array(s.utf8)
        for (k, c) in u.enumerated() where c == UInt8(ascii: "e") || c == UInt8(ascii: "E") {
            var j = k
            var sawDigit = false
            while j > 0, [UInt8(ascii: "0"), UInt8(ascii: ".")].contains(u[j - 1]) {
                if u[j - 1] == UInt8(ascii: "0") { sawDigit = true }
                j -= 1
            }
            if sawDigit && (j == 0 || !(UInt8(ascii: "1")...UInt8(ascii: "9")).contains(u[j - 1])) { return true }
        }
        return false
    }

    func testExactDecimalToDoubleMatchesStrtod() {
        var rng = SplitMix64(seed: 0xD0B1E)
        var cases: [(UInt64, Int)] = []
        for _ in 0..<100_000 {
            let m = max(1, rng.next() >> (rng.next() % 64))
            cases.append((m, Int(rng.next() % 39) - 19))
        }
        // Halfway cases (2^53 + 1 is a tie), scaled by powers of ten so the division sees them too.
        for base: UInt64 in [9_007_199_254_740_993, 9_007_199_254_740_995, 18_014_398_509_481_985, 17_361_123_451_234_567, .max, 1 << 63] {
            var m = base
            for _ in 0..<4 {
                for e in -19...19 { cases += [(m, e), (m &+ 1, e), (m &- 1, e)] }
                let (next, overflow) = m.multipliedReportingOverflow(by: 10)
                if overflow { break }
                m = next
            }
        }
        for (m, e) in cases {
            if m == 0 { continue }
            XCTAssertEqual(FastJSON.exactDouble(m, e), Double("\(m)e\(e)"), "\(m)e\(e)")
        }
        XCTAssertNil(FastJSON.exactDouble(1, 20))
        XCTAssertNil(FastJSON.exactDouble(0, 1))
    }

    func testZerosWithExponentsAreZero() throws {
        for s in ["0e1", "0E5", "-0.0e1", "0.000e5", "-0e1", "0.0e1", "0e-999999", "-0e400"] {
            let v = try JSONValue.parse(s)
            XCTAssertEqual(v, .number(0), s)
            XCTAssertEqual(v.doubleValue?.sign, s.hasPrefix("-") ? .minus : .plus, s)
        }
    }

    func testNestingLimitIsJSONDecoders() {
        for n in [512, 513] {
            assertSameAsFoundation(String(repeating: "[", count: n) + String(repeating: "]", count: n))
            assertSameAsFoundation(String(repeating: #"{"a":"#, count: n) + "1" + String(repeating: "}", count: n))
        }
        XCTAssertNoThrow(try JSONValue.parse(String(repeating: "[", count: 512) + String(repeating: "]", count: 512)))
        // Hostile depth is an error, not a stack overflow.
        XCTAssertThrowsError(try JSONValue.parse(String(repeating: "[", count: 1_000_000))) { e in
            XCTAssertTrue("\(e)".contains("nested more than 512"), "\(e)")
        }
    }

    func testErrorsNameTheOffset() {
        let cases: [(String, Int)] = [("[1,x]", 3), (#"{"a" 1}"#, 5), ("[1] x", 4), ("01", 0), (#"["\q"]"#, 2), ("  ", 2), (#"{"a":"#, 5),
                                      (#"["abc"#, 1), ("1e400", 0)]
        for (text, offset) in cases {
            XCTAssertThrowsError(try JSONValue.parse(text), text) { e in
                guard let e = e as? JSONParseError else { return XCTFail("\(type(of: e))") }
                XCTAssertEqual(e.offset, offset, "\(text): \(e)")
                XCTAssertFalse(e.message.isEmpty)
            }
        }
    }

    func testByteInputRefusesInvalidUTF8LikeFoundation() {
        let cases: [[UInt8]] = [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC0, 0x80, 0x22],
                                [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x5B, 0xFF, 0x5D], [0x22, 0x5C, 0x6E, 0xFF, 0x22]]
        for b in cases {
            XCTAssertThrowsError(try JSONValue.parse(b), "\(b)")
            XCTAssertThrowsError(try Reference.decode(JSONValue.self, bytes: b), "\(b)")
        }
        XCTAssertEqual(try JSONValue.parse([0x22, 0xC3, 0xA9, 0x22]), "é")
        XCTAssertEqual(try JSONValue.parse([0xEF, 0xBB, 0xBF, 0x31]), 1)
    }

    func testGeneratedTextAgreesWithFoundation() throws {
        // Random documents, written by hand with random whitespace and escapes, so the reader
        // sees text JSONEncoder never writes.
        var g = JSONGen(seed: 31337)
        func ws() -> String { g.pick(["", "", " ", "\n", "\t ", "\r\n  "]) }
        func text(_ v: JSONValue) -> String {
            switch v {
            case .array(let a): return "[" + ws() + a.map { text($0) + ws() }.joined(separator: "," + ws()) + "]"
            case .object(let o): return "{" + ws() + o.map { try! JSONValue.string($0.key).serialized() + ws() + ":" + ws() + text($0.value) }.joined(separator: "," + ws()) + "}"
            case .string(let s):
                // Escape some scalars as \u, astral ones as surrogate pairs.
                var out = "\""
                for u in s.unicodeScalars {
                    if g.int(3) == 0 || u.value < 0x20 || u == "\"" || u == "\\" {
                        for c in String(u).utf16 { out += String(format: g.int(2) == 0 ? "\\u%04x" : "\\u%04X", c) }
                    } else { out.unicodeScalars.append(u) }
                }
                return out + "\""
            default: return try! v.serialized()
            }
        }
        for _ in 0..<2000 {
            let v = g.value()
            let t = ws() + text(v) + ws()
            XCTAssertEqual(try JSONValue.parse(t), v, t)
            assertSameAsFoundation(t)
        }
    }

    // MARK: messages

    func testEnvelopesAndResultsAreByteIdenticalAndRoundTrip() throws {
        var g = JSONGen(seed: 2024)
        for n in 0..<2000 {
            let e = g.envelope()
            let s = try e.jsonString()
            XCTAssertEqual(s, try Reference.encode(e), "envelope #\(n)")
            XCTAssertEqual(try Envelope.parse(s), e)
            XCTAssertEqual(try Envelope.parse(s), try Reference.decode(Envelope.self, s))

            let r = g.result()
            let rs = try r.jsonString()
            XCTAssertEqual(rs, try Reference.encode(r), "result #\(n)")
            // `result: .null` is written as null and read back as nil, by Foundation too.
            var expected = r
            if expected.result == .null { expected.result = nil }
            XCTAssertEqual(try AttemptResult.parse(rs), expected)
            XCTAssertEqual(try AttemptResult.parse(rs), try Reference.decode(AttemptResult.self, rs))
        }
    }

    func testMessagesDecodeWhatTheCodableDecoderDecodes() throws {
        let envelopes = [
            #"{"v":1,"job_id":"j","attempt":2,"kind":"sleep","spec":null,"gpu_uuids":[],"vram_bytes":0,"issued_at":5}"#,
            #"{"v":1,"job_id":"j","attempt":2.0,"kind":"sleep","spec":{},"gpu_uuids":["a",],"vram_bytes":1e3,"issued_at":5,"deadline":null,"extra":[1,{"x":2}],}"#,
            #" {"issued_at":-0,"vram_bytes":18446744073709551615,"gpu_uuids":["\u0041"],"spec":[1],"kind":"","attempt":-3,"job_id":"\ud83d\udca5","v":-9223372036854775808,"expires_at":1e21} "#,
            #"{"v":1,"v":"x","job_id":"j","attempt":2,"kind":"k","spec":1,"gpu_uuids":[],"vram_bytes":0,"issued_at":5,"deadline":1,"deadline":null}"#,
            "\u{feff}" + #"{"v":1,"job_id":"j","attempt":2,"kind":"k","spec":1,"gpu_uuids":[],"vram_bytes":0,"issued_at":5}"#,
        ]
        for s in envelopes {
            XCTAssertEqual(try Envelope.parse(s), try Reference.decode(Envelope.self, s), s)
        }
        let results = [
            #"{"job_id":"j","attempt":1,"node":"n","outcome":"succeeded","result":null,"error":null,"failure_class":null,"peak_vram_bytes":null}"#,
            #"{"job_id":"j","attempt":1,"node":"n","outcome":"failed","failure_class":"oom","error":"x\ny","duration_s":1.5,"started_at":1,"finished_at":2.5,"peak_vram_bytes":8589934592,"result":{"a":[1]}}"#,
            #"{"job_id":"j","attempt":1,"node":"n","outcome":"released","outcome":"bogus"}"#,
        ]
        for s in results {
            XCTAssertEqual(try AttemptResult.parse(s), try Reference.decode(AttemptResult.self, s), s)
        }
    }

    func testMalformedMessagesAreRefused() throws {
        let good = try Envelope(jobID: "j", attempt: 1, kind: "k", spec: ["a": 1], gpuUUIDs: ["g"], vramBytes: 1, deadline: 3, issuedAt: 2).jsonString()
        var bad = [
            "", "null", "[]", "{}", "\"x\"", "{", good + "x", good + "}",
            good.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":"1""#),
            good.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":1.5"#),
            good.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":9223372036854775808"#),
            good.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":null"#),
            good.replacingOccurrences(of: #""vram_bytes":1"#, with: #""vram_bytes":-1"#),
            good.replacingOccurrences(of: #""vram_bytes":1"#, with: #""vram_bytes":18446744073709551616"#),
            good.replacingOccurrences(of: #""gpu_uuids":["g"]"#, with: #""gpu_uuids":"g""#),
            good.replacingOccurrences(of: #""gpu_uuids":["g"]"#, with: #""gpu_uuids":[1]"#),
            good.replacingOccurrences(of: #""gpu_uuids":["g"]"#, with: #""gpu_uuids":null"#),
            good.replacingOccurrences(of: #""job_id":"j""#, with: #""job_id":7"#),
            good.replacingOccurrences(of: #""deadline":3"#, with: #""deadline":"3""#),
            good.replacingOccurrences(of: #""issued_at":2"#, with: #""issued_at":null"#),
            good.replacingOccurrences(of: #""issued_at":2"#, with: #""issued_at":1e999"#),
            good.replacingOccurrences(of: #""spec":{"a":1}"#, with: #""spec":{"a":1e999}"#),
        ]
        for key in ["v", "job_id", "attempt", "kind", "spec", "gpu_uuids", "vram_bytes", "issued_at"] {
            bad.append(good.replacingOccurrences(of: "\"\(key)\":", with: "\"\(key)_\":"))
        }
        for cut in stride(from: 0, to: good.utf8.count - 1, by: 3) { bad.append(String(decoding: Array(good.utf8)[0..<cut], as: UTF8.self)) }
        for s in bad {
            XCTAssertThrowsError(try Envelope.parse(s), s)
            XCTAssertThrowsError(try Reference.decode(Envelope.self, s), "Foundation should refuse \(s) too")
        }

        let goodResult = try AttemptResult(jobID: "j", attempt: 1, node: "n", outcome: .failed, failureClass: .oom).jsonString()
        var badResults = [
            goodResult.replacingOccurrences(of: #""outcome":"failed""#, with: #""outcome":"exploded""#),
            goodResult.replacingOccurrences(of: #""failure_class":"oom""#, with: #""failure_class":"meteor""#),
            goodResult.replacingOccurrences(of: #""failure_class":"oom""#, with: #""failure_class":1"#),
            goodResult.replacingOccurrences(of: #""node":"n""#, with: #""node":["n"]"#),
            goodResult.replacingOccurrences(of: #""attempt":1"#, with: #""attempt":true"#),
            goodResult.replacingOccurrences(of: #"}"#, with: #","peak_vram_bytes":-5}"#),
            goodResult.replacingOccurrences(of: #"}"#, with: #","result":[1,}"#),
        ]
        for key in ["job_id", "attempt", "node", "outcome"] {
            badResults.append(goodResult.replacingOccurrences(of: "\"\(key)\":", with: "\"x\(key)\":"))
        }
        for cut in 0..<(goodResult.utf8.count - 1) { badResults.append(String(decoding: Array(goodResult.utf8)[0..<cut], as: UTF8.self)) }
        for s in badResults {
            XCTAssertThrowsError(try AttemptResult.parse(s), s)
            XCTAssertThrowsError(try Reference.decode(AttemptResult.self, s), "Foundation should refuse \(s) too")
        }
    }

    func testCancelBodiesKeepTheirBytes() throws {
        for (id, attempt, at) in [("j", 1, 1000.0), ("0b7c", 3, 1_736_112_345.123_456_7), ("x\"y", 0, 1e16), ("é", 2, -0.0)] {
            let f = try NodeMessage.cancel(jobID: id, attempt: attempt, issuedAt: at).fields(keys: nil)
            let old = try Reference.encode(JSONValue.object(["job_id": .string(id), "attempt": .number(Double(attempt)), "issued_at": .number(at)]))
            XCTAssertEqual(f[3], old)
            XCTAssertEqual(try NodeMessage.decode(["type": "cancel", "body": old], keys: nil, now: 0), .cancel(jobID: id, attempt: attempt, issuedAt: at))
        }
    }

    // MARK: hex

    func testHexMatchesStringFormat() {
        let all = (0...255).map { UInt8($0) }
        XCTAssertEqual(Hex.encode(all), all.map { String(format: "%02x", $0) }.joined())
        XCTAssertEqual(Hex.decode(Hex.encode(all)), all)
        XCTAssertEqual(Hex.decode("00FFaB"), [0, 255, 0xAB])
        XCTAssertEqual(Hex.decode(""), [])
        for bad in ["0", "0g", "+f", "-0", " 0", "é0", "0x"] { XCTAssertNil(Hex.decode(bad), bad) }
        XCTAssertEqual(SigningKeys.generateHex().utf8.count, 64)
        XCTAssertTrue(SigningKeys.generateHex().allSatisfy { "0123456789abcdef".contains($0) })
    }

    // MARK: speed

    /// Prints ns/op, Foundation vs this codec. Off by default (debug builds make the numbers
    /// meaningless); HYDRA_FASTJSON_BENCH=<iterations> runs it (`swift test -c release` for real figures).
    func testMicroBenchmark() throws {
        guard let n = ProcessInfo.processInfo.environment["HYDRA_FASTJSON_BENCH"].flatMap(Int.init) else {
            throw XCTSkip("set HYDRA_FASTJSON_BENCH=<iterations>")
        }
        for line in FastJSONBenchmark.run(iterations: n) { print(line) }
    }
}
