import Foundation
import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraExecutors

/// Seeded mutation fuzzing of the parsers that read what other machines or people wrote:
/// nvidia-smi CSV, node messages from Redis, JSON (and the message decoders), batch files. Each target runs for
/// HYDRA_FUZZ_SECONDS (default 3; CI's fuzz job uses 60) or HYDRA_FUZZ_ITERATIONS, whichever
/// ends first. A crash fails the run; every rejection must be the parser's typed error with a
/// message that says what was wrong. HYDRA_FUZZ_SEED replays a run (the seed is printed).
final class FuzzTests: XCTestCase {
    var seconds: Double { ProcessInfo.processInfo.environment["HYDRA_FUZZ_SECONDS"].flatMap(Double.init) ?? 3 }
    var maxIterations: Int { ProcessInfo.processInfo.environment["HYDRA_FUZZ_ITERATIONS"].flatMap(Int.init) ?? 1_000_000 }

    /// Runs `body` on mutants of `seeds` until the time or iteration budget is spent; returns the count.
    @discardableResult
    func fuzz(_ name: String, seeds: [String], _ body: (String) throws -> Void) rethrows -> Int {
        let seed = ProcessInfo.processInfo.environment["HYDRA_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
        // Printed first: a crash ends the process, and the seed replays it.
        print("fuzz \(name): HYDRA_FUZZ_SEED=\(seed)")
        var m = Mutator(seed: seed, corpus: seeds.map { Array($0.utf8) })
        let deadline = Date().addingTimeInterval(seconds)
        var n = 0
        let t0 = Date()
        while n < maxIterations && Date() < deadline {
            let input = m.next()
            try body(String(decoding: input, as: UTF8.self))
            n += 1
        }
        print("fuzz \(name): \(n) inputs in \(String(format: "%.1f", Date().timeIntervalSince(t0))) s (HYDRA_FUZZ_SEED=\(seed))")
        return n
    }

    func assertClear(_ message: String, _ input: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertFalse(message.trimmingCharacters(in: .whitespaces).isEmpty, "empty error message for input \(input.debugDescription.prefix(200))",
                       file: file, line: line)
        // A message that repeats a whole mangled input is no longer a clear message.
        XCTAssertLessThan(message.count, 4096, "error message too long: \(message.prefix(300))…", file: file, line: line)
    }

    // MARK: nvidia-smi CSV

    func testNvidiaSMICSVParserNeverCrashesAndRejectsWithUnparsable() throws {
        let dir = SMIFixtures.directory
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".csv") }.sorted()
        XCTAssertFalse(files.isEmpty)
        let seeds = try files.map { try String(contentsOf: dir.appendingPathComponent($0), encoding: .utf8) }
        var accepted = 0, rejected = 0
        fuzz("nvidia-smi CSV", seeds: seeds) { text in
            for parse in [{ _ = try NvidiaSMICSV.parseGPUs($0) }, { _ = try NvidiaSMICSV.parseProcesses($0) }] as [(String) throws -> Void] {
                do { try parse(text); accepted += 1 } catch let e as NvidiaSMIError {
                    guard case .unparsable(let why) = e else { return XCTFail("parser threw \(e), not .unparsable") }
                    assertClear(why, text)
                    rejected += 1
                } catch { XCTFail("untyped error \(type(of: error)): \(error)") }
            }
        }
        XCTAssertGreaterThan(accepted, 0, "the fuzzer should keep some inputs valid")
        XCTAssertGreaterThan(rejected, 0)
    }

    // MARK: node messages

    func testNodeMessageDecoderRefusesEveryTamperedMessageWithAReason() throws {
        let keys = SigningKeys(current: Array("fuzzing-key-of-at-least-32-characters!".utf8))
        let env = Envelope(jobID: "0b7c2d3e-1111-4222-8333-944455556666", attempt: 3, kind: "sleep", spec: ["duration_s": 0.5, "tags": ["a", "b"]],
                           gpuUUIDs: ["GPU-1", "GPU-2"], vramBytes: 8 << 30, deadline: 1900, issuedAt: 1000, expiresAt: 2000)
        let originals = [try NodeMessage.job(env).fields(keys: keys), try NodeMessage.cancel(jobID: env.jobID, attempt: 3, issuedAt: 1000).fields(keys: keys)]
            .map { f in Dictionary(uniqueKeysWithValues: stride(from: 0, to: f.count, by: 2).map { (f[$0], f[$0 + 1]) }) }
        // Seeds are the field values; each mutant replaces one field (or drops/adds one) of one original message.
        let seeds = originals.flatMap { $0.values }
        var rng = SplitMix64(seed: 42)
        var rejected: [MessageRejection: Int] = [:]
        fuzz("node messages", seeds: seeds) { mutant in
            var f = originals[Int(rng.next() % 2)]
            let names = ["type", "body", "sig", "kid", "extra"]
            let name = names[Int(rng.next() % UInt64(names.count))]
            if rng.next() % 10 == 0 { f.removeValue(forKey: name) } else { f[name] = mutant }
            for k in [keys, nil] as [SigningKeys?] {
                do {
                    let msg = try NodeMessage.decode(f, keys: k, now: 1500)
                    if k != nil {
                        // A signed message can only be accepted if what the signature covers is untouched.
                        let same = originals.contains { $0["type"] == f["type"] && $0["body"] == f["body"] }
                        XCTAssertTrue(same, "accepted a tampered message: \(f) → \(msg)")
                    }
                } catch let r as MessageRejection {
                    assertClear(r.description, mutant)
                    rejected[r, default: 0] += 1
                } catch { XCTFail("untyped error \(type(of: error)): \(error)") }
            }
        }
        XCTAssertGreaterThanOrEqual(rejected.count, 4, "expected several kinds of rejection, got \(rejected)")
    }

    // MARK: JSON

    /// Foundation reads bytes that start with a NUL (or have one second) as UTF-16/32; the
    /// hand-written reader takes UTF-8 only.
    static func foundationSeesUTF16(_ text: String) -> Bool {
        let u = Array(text.utf8.prefix(2))
        return u.contains(0)
    }

    static var jsonSeeds: [String] {
        var g = JSONGen(seed: 77)
        var seeds = (0..<12).map { _ in try! g.value().serialized() }
        seeds += (0..<4).map { _ in try! g.envelope().jsonString() } + (0..<4).map { _ in try! g.result().jsonString() }
        seeds += [#"{"a": [1, -2.5e-3, 1E+20, true, false, null], "b": {"c": "\u00e9\ud83d\udca5\n\"\\\/"}, "d": [], "e": {}}"#,
                  "[0, -0, 0.0, 123456789012345678901234567890, 1.7976931348623157e308, 5e-324, 0.1]", " \t\r\n\"x\" ", "[[[[[]]]]]"]
        return seeds
    }

    /// The hand-written JSON reader against JSONDecoder: no crash, a JSONParseError with an
    /// offset inside the input for every refusal, and the same verdict and value as Foundation,
    /// except that we accept some zeros with exponents Foundation refuses (FastJSONTests).
    func testJSONParserNeverCrashesAndAgreesWithFoundation() throws {
        var accepted = 0, rejected = 0
        fuzz("JSON", seeds: Self.jsonSeeds) { text in
            let theirs = try? Reference.decode(JSONValue.self, text)
            let ours: Result<JSONValue, JSONParseError> = Result { () throws(JSONParseError) in try JSONValue.parse(text) }
            switch ours {
            case .success(let v):
                accepted += 1
                if let theirs {
                    XCTAssertEqual(v, theirs, "\(text.debugDescription.prefix(300))")
                } else if !Self.foundationSeesUTF16(text) {
                    XCTAssertTrue(FastJSONTests.foundationRefusesZeroWithExponent(text), "we accept what Foundation refuses: \(text.debugDescription.prefix(300))")
                }
                // What was read is written back as JSONEncoder writes it (or refused by both, when nested 512 deep).
                XCTAssertEqual(try? v.serialized(), try? Reference.encode(v))
            case .failure(let e):
                rejected += 1
                XCTAssertTrue((0...text.utf8.count).contains(e.offset), "offset \(e.offset) outside the input")
                assertClear(e.message, text)
                if let theirs, !Self.foundationSeesUTF16(text) {
                    XCTFail("Foundation accepts \(text.debugDescription.prefix(300)) as \(theirs); we refuse: \(e)")
                }
            }
        }
        XCTAssertGreaterThan(accepted, 0)
        XCTAssertGreaterThan(rejected, 0)
    }

    /// Envelope.parse and AttemptResult.parse against the synthesized Decodable. Where Foundation
    /// accepts and we refuse, it must be an integer field it reads through rounding (9.2e18).
    func testMessageDecodersAgreeWithTheCodableDecoders() throws {
        var accepted = 0
        func check<T: Decodable & Equatable>(_ text: String, _ parse: (String) throws(JSONParseError) -> T) {
            let theirs = try? Reference.decode(T.self, text)
            let ours = Result { () throws(JSONParseError) in try parse(text) }
            switch (ours, theirs) {
            case (.success(let a), let b?):
                accepted += 1
                XCTAssertEqual(a, b, "\(text.debugDescription.prefix(300))")
            case (.success, nil):
                XCTAssertTrue(Self.foundationSeesUTF16(text) || FastJSONTests.foundationRefusesZeroWithExponent(text),
                              "we accept what Foundation refuses: \(text.debugDescription.prefix(300))")
            case (.failure(let e), _?):
                XCTAssertTrue(Self.foundationSeesUTF16(text) || e.message.contains("integer"),
                              "Foundation accepts \(text.debugDescription.prefix(300)); we refuse: \(e)")
            case (.failure(let e), nil):
                XCTAssertTrue((0...text.utf8.count).contains(e.offset))
                assertClear(e.message, text)
            }
        }
        var g = JSONGen(seed: 5)
        let seeds = (0..<6).map { _ in try! g.envelope().jsonString() } + (0..<6).map { _ in try! g.result().jsonString() }
        fuzz("message decoders", seeds: seeds) { text in
            check(text) { (s) throws(JSONParseError) in try Envelope.parse(s) }
            check(text) { (s) throws(JSONParseError) in try AttemptResult.parse(s) }
        }
        XCTAssertGreaterThan(accepted, 0)
    }

    // MARK: batch files

    /// What the fuzzer found: YAML that made Yams trap (non-string keys), and inputs that would
    /// exhaust the stack or memory.
    func testYAMLThatCrashedOrExplodedIsAnInputError() {
        var laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1...9 { laughs += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        let cases: [(String, String)] = [
            ("name: x\njobs:\n  - {[a]: 1}\n", "keys must be plain strings"),
            ("? [a, b]\n: c\n", "keys must be plain strings"),
            ("name: x\njobs: !!set {? {a: 1}}\n", "keys must be plain strings"),
            (String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000), "nested more than 64 levels"),
            (laughs, "too large"),
        ]
        for (text, expected) in cases {
            XCTAssertThrowsError(try BatchFile.parse(text: text, file: "bad.yaml", cluster: nil), expected) { e in
                XCTAssertTrue("\(e)".contains(expected), "\(e)")
                XCTAssertTrue(e is InputError)
            }
        }
    }

    func testBatchFileLoaderRejectsEveryBadFileWithAnInputError() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let cluster = try ClusterConfig.load(path: root.appendingPathComponent("deploy/cluster.yaml").path)
        let seeds = [
            try String(contentsOf: root.appendingPathComponent("deploy/examples/sample-batch.yaml"), encoding: .utf8),
            """
            name: night-of-the-lanterns
            priority: 5
            max_attempts: 3
            jobs:
              - name: lantern-portrait
                kind: sleep
                count: 12
                vram: 8GiB
                gpus: 1
                priority: 7
                deadline_s: 600
                constraints: {}
                spec: {duration_s: 0.5}
              - name: style-sweep
                kind: sleep
                matrix: {seed: [1, 2, 3], style: [ink, watercolor]}
                vram: 10GiB
                after: lantern-portrait
                spec: {duration_s: 1}
              - name: archive
                kind: command
                after: [style-sweep]
                spec: {argv: ["/usr/bin/rsync", "-a", "out/", "archive/"], timeout_s: 600}
            """,
            #"{"name": "j", "jobs": [{"name": "a", "kind": "sleep", "vram": "2GiB", "count": 3}, {"name": "b", "kind": "sleep", "after": ["a"]}]}"#,
            "name: x\njobs:\n  - {name: a, kind: sleep, gpus: 2, vram: 4GiB, count: 2}\n  - {name: b, kind: sleep, after: a}\n",
        ]
        var accepted = 0, rejected = 0
        fuzz("batch files", seeds: seeds) { text in
            do {
                let plan = try BatchFile.parse(text: text, file: "fuzz.yaml", cluster: cluster)
                XCTAssertFalse(plan.jobs.isEmpty)
                XCTAssertNil(plan.dependencyCycle(), "an accepted plan has no cycle")
                accepted += 1
            } catch let e as InputError {
                XCTAssertEqual(e.file, "fuzz.yaml")
                assertClear(e.problem, text)
                rejected += 1
            } catch { XCTFail("untyped error \(type(of: error)): \(error) for \(text.debugDescription.prefix(300))") }
        }
        XCTAssertGreaterThan(accepted, 0)
        XCTAssertGreaterThan(rejected, 0)
    }
}

/// Byte-level mutations plus splices and a few tokens that parsers tend to trip on.
struct Mutator {
    var rng: SplitMix64
    let corpus: [[UInt8]]
    static let tokens: [[UInt8]] = [
        ",", "\"", "\n", "\r\n", "\t", " ", ":", "- ", "[", "]", "{", "}", "#", "&a", "*a", "!!str ", "|", ">", "%", "@", "`", "\0",
        "-1", "0", "1e309", "NaN", "-0", "18446744073709551616", "99999999999", "0x1F", "1.5", "[N/A]", "[Not Supported]", "MiB", "W", "%",
        "GiB", "TiB", "count: 200001", "vram: 64GiB", "gpus: 17", "after: [nope]", "kind: teleport", "max_attempts: 0", "é", "\u{FEFF}", "💥",
    ].map { Array($0.utf8) }

    init(seed: UInt64, corpus: [[UInt8]]) { rng = SplitMix64(seed: seed); self.corpus = corpus }

    mutating func int(_ n: Int) -> Int { n <= 0 ? 0 : Int(rng.next() % UInt64(n)) }

    mutating func next() -> [UInt8] {
        var b = corpus[int(corpus.count)]
        // Sometimes the seed itself: the parsers must keep accepting what is valid.
        if int(8) == 0 { return b }
        for _ in 0..<(1 + int(4)) { mutate(&b) }
        return b
    }

    mutating func mutate(_ b: inout [UInt8]) {
        if b.isEmpty { b = Self.tokens[int(Self.tokens.count)]; return }
        let i = int(b.count)
        switch int(9) {
        case 0: b[i] ^= UInt8(1 << int(8))
        case 1: b[i] = UInt8(truncatingIfNeeded: rng.next())
        case 2: b.insert(contentsOf: Self.tokens[int(Self.tokens.count)], at: i)
        case 3: b.removeSubrange(i..<min(b.count, i + 1 + int(16)))
        case 4: let j = min(b.count, i + 1 + int(64)); b.insert(contentsOf: b[i..<j], at: int(b.count))
        case 5: b.removeSubrange(i...)
        case 6:
            let other = corpus[int(corpus.count)]
            let s = int(other.count)
            b.insert(contentsOf: other[s..<min(other.count, s + 1 + int(128))], at: i)
        case 7:
            // Replace a run of digits with an extreme number.
            var j = i
            while j < b.count, (48...57).contains(b[j]) { j += 1 }
            b.replaceSubrange(i..<j, with: Array(["0", "-1", "4294967296", "1e400", "00000000000000000000001"][int(5)].utf8))
        default:
            // Swap two lines.
            let lines = b.split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
            guard lines.count > 1 else { return }
            var l = lines
            l.swapAt(int(l.count), int(l.count))
            b = Array(l.joined(separator: [10]))
        }
    }
}
