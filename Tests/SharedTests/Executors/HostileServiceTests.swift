import XCTest
import Foundation
import Synchronization
@testable import HydraCore
@testable import HydraIO
@testable import HydraExecutors
@testable import HydraTestSupport

/// What the AI services answer is input too. Each executor runs against its fake with most replies
/// mangled on the way out (bytes flipped, cut, numbers made extreme, JSON values swapped for other
/// types, statuses changed, streams cut or re-chunked, connections dropped), and must, every time:
/// return within its deadline and a few seconds; either succeed with an output the wire can carry
/// (and, for scores, numbers where numbers belong) or throw an `ExecutionFailure` with a short,
/// non-empty message; never trap. HYDRA_FUZZ_SEED replays a run (the seed is printed).
final class HostileServiceTests: XCTestCase {
    static let deadlineS = 3.0
    var seed: UInt64 { ProcessInfo.processInfo.environment["HYDRA_FUZZ_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max) }

    /// Runs `trials` attempts of `execute`, each behind a freshly seeded mangler; returns (succeeded, failed).
    @discardableResult
    func hammer(_ name: String, fake: @escaping HTTPHandler, trials: Int, rate: Double = 0.7,
                execute: (_ base: String) throws -> ExecutionResult,
                checkOutput: (JSONValue) -> String? = { _ in nil }) throws -> (ok: Int, failed: Int) {
        let seed = self.seed
        print("hostile \(name): HYDRA_FUZZ_SEED=\(seed)")
        let mangler = Mangler(seed: seed, rate: rate)
        let host = FakeHTTPHost()
        let port = try host.start(host: "127.0.0.1", port: 0) { mangler.answer(fake($0)) }
        defer { host.stop() }
        var ok = 0, failed = 0
        var classes: [String: Int] = [:]
        for i in 0..<trials {
            let t0 = Date()
            let what = "\(name) trial \(i) (HYDRA_FUZZ_SEED=\(seed))"
            do {
                let r = try execute("http://127.0.0.1:\(port)")
                XCTAssertNoThrow(try JSONCoding.encodeString(r.output), "\(what): the output cannot be encoded: \(r.output)")
                if let bad = checkOutput(r.output) { XCTFail("\(what): \(bad)") }
                ok += 1
            } catch let f as ExecutionFailure {
                XCTAssertFalse(f.message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(what): empty failure message")
                XCTAssertLessThan(f.message.count, 4096, "\(what): failure message too long: \(f.message.prefix(300))…")
                classes[f.failureClass.rawValue, default: 0] += 1
                if ProcessInfo.processInfo.environment["HYDRA_HOSTILE_VERBOSE"] != nil { print("  \(i): \(f.failureClass.rawValue): \(f.message.prefix(240))") }
                failed += 1
            } catch {
                XCTFail("\(what): untyped error \(type(of: error)): \(error)")
            }
            let took = Date().timeIntervalSince(t0)
            XCTAssertLessThan(took, Self.deadlineS + 4, "\(what): took \(took) s against a \(Self.deadlineS) s deadline")
        }
        print("hostile \(name): \(ok) succeeded, \(failed) failed \(classes.sorted { $0.key < $1.key }), \(mangler.count) replies mangled")
        // Both outcomes must occur, or the mangling is either too weak or too strong to test anything.
        XCTAssertGreaterThan(ok, 0, "\(name): no trial succeeded (seed \(seed))")
        XCTAssertGreaterThan(failed, 0, "\(name): no trial failed (seed \(seed))")
        return (ok, failed)
    }

    func context(_ spec: JSONValue, kind: String) -> ExecutionContext { TestEnv.context(spec, kind: kind, deadlineIn: Self.deadlineS) }

    func testLLMReplies() throws {
        let tabby = FakeLLM(flavor: .tabby, apiKey: "sk-fictional-tabby")
        let specs: [JSONValue] = [
            ["prompt": "Describe a quiet harbor.", "stream": true, "max_tokens": 20],
            ["prompt": "Describe a quiet harbor.", "stream": false, "max_tokens": 20],
            ["api": "completions", "prompt": "Once upon a fictional tide", "max_tokens": 5, "stream": .bool(true)],
            ["expand": ["count": 3, "idea": "a paper lantern over a fictional harbor"], "stream": false],
        ]
        var n = 0
        try hammer("tabbyapi", fake: tabby.handle, trials: 160) { base in
            let ex = LLMExecutor(backends: ["tabbyapi": .openAI(ServiceEndpoint(url: base, apiKey: "sk-fictional-tabby"), flavor: .tabby)])
            n += 1
            return try ex.execute(context(specs[n % specs.count], kind: "llm"))
        }
        let ollama = FakeLLM(flavor: .ollama)
        let ospecs: [JSONValue] = [
            ["endpoint": "ollama", "model": "atlas-chat:8b", "prompt": "Name a fictional river.", "stream": true],
            ["endpoint": "ollama", "model": "atlas-chat:8b", "prompt": "Name a fictional river.", "stream": false],
            ["endpoint": "ollama", "api": "generate", "model": "atlas-chat:8b", "prompt": "Once", "max_tokens": 3],
            ["endpoint": "ollama", "model": "atlas-chat:8b", "expand": ["count": 2, "idea": "a copper fox"]],
        ]
        try hammer("ollama", fake: ollama.handle, trials: 160) { base in
            let ex = LLMExecutor(backends: ["ollama": .ollama(ServiceEndpoint(url: base))])
            n += 1
            return try ex.execute(context(ospecs[n % ospecs.count], kind: "llm"))
        }
    }

    func testComfyUIReplies() throws {
        let fake = FakeComfyUI(settings: FakeSettings(latencyMs: 0, vramBytes: 4 << 30))
        try fake.start()   // its queue worker runs the prompts; the executor talks to it through the mangler
        defer { fake.stop() }
        let spec: JSONValue = ["template": "txt2img-basic", "prompt": "a copper lighthouse in fog, fictional coast", "seed": 42,
                               "width": 512, "height": 512, "steps": 2]
        // A job makes several requests (queue, history polls, one download per image): fewer are mangled each.
        try hammer("comfyui", fake: fake.handle, trials: 120, rate: 0.3) { base in
            let ex = ComfyUIExecutor(endpoint: ServiceEndpoint(url: base), workflowsDirectory: ComfyUIExecutorTests.workflows, pollInterval: 0.01)
            return try ex.execute(context(spec, kind: "image"))
        }
    }

    func testTTSReplies() throws {
        let fake = FakeTTS()
        let spec: JSONValue = ["text": "The lighthouse keeper counts the boats.", "text_lang": "en",
                               "ref_audio_path": "refs/narrator-a.wav", "prompt_text": "A fictional reference line."]
        try hammer("gpt-sovits", fake: fake.handle, trials: 120) { base in
            try GPTSoVITSExecutor(endpoint: ServiceEndpoint(url: base)).execute(context(spec, kind: "tts"))
        }
    }

    func testScorerReplies() throws {
        let root = TestEnv.tempDir()
        let png = PNGEncoder.rgb(width: 4, height: 4) { x, y in (UInt8(x * 60), UInt8(y * 60), 128) }
        try png.write(to: URL(fileURLWithPath: root + "/img.png"))
        let fake = FakeScorer(imageRoot: root)
        try hammer("scorer", fake: fake.handle, trials: 160, execute: { base in
            try ScorerExecutor(endpoint: ServiceEndpoint(url: base)).execute(context(["image_path": "img.png"], kind: "score"))
        }, checkOutput: { out in
            // The quality gates compare these: a score that is not a finite number (or null) must not pass as one.
            for k in ["aesthetic", "musiq", "face_similarity"] {
                guard let v = out[k] else { continue }
                switch v {
                case .null: continue
                case .number(let d) where d.isFinite: continue
                default: return "\(k) recorded as \(v), not a number"
                }
            }
            return nil
        })
    }
}

/// Mangles a share of a fake's replies. Thread-safe: the fake's server answers on many threads.
final class Mangler: Sendable {
    private let state: Mutex<(rng: SplitMix64, count: Int)>
    let rate: Double
    init(seed: UInt64, rate: Double) { state = Mutex((SplitMix64(seed: seed), 0)); self.rate = rate }

    var count: Int { state.withLock { $0.count } }

    private func roll(_ n: Int) -> Int { state.withLock { Int($0.rng.next() % UInt64(max(1, n))) } }
    private func chance(_ p: Double) -> Bool { Double(roll(1_000_000)) / 1_000_000 < p }

    func answer(_ r: HTTPResponse) -> HTTPResponse {
        guard chance(rate) else { return r }
        state.withLock { $0.count += 1 }
        switch r {
        case .drop: return r
        case .full(let status, let headers, let body):
            switch roll(10) {
            case 0: return .drop
            case 1: return .full(status: [200, 204, 301, 400, 401, 404, 408, 422, 429, 500, 502, 503][roll(12)], headers: headers, body: body)
            case 2: return .full(status: status, headers: ["Content-Type": ["text/html", "application/json", "image/png", "x/y"][roll(4)]], body: body)
            case 3: return .full(status: status, headers: headers, body: Data((0..<roll(4096)).map { _ in UInt8(truncatingIfNeeded: roll(256)) }))
            case 4, 5: return .full(status: status, headers: headers, body: swapJSONValue(body) ?? bytes(body))
            default: return .full(status: status, headers: headers, body: bytes(body))
            }
        case .stream(let status, let headers, let body):
            let text = Self.capture(body)
            if roll(8) == 0 { return .full(status: status, headers: headers, body: bytes(text)) }
            let mangled = roll(3) == 0 ? lines(text) : bytes(text)
            let cutAt = roll(4) == 0 ? roll(mangled.count + 1) : nil
            let pieces = splits(mangled.count)
            return .stream(status: status, headers: headers) { w in
                for (a, b) in pieces {
                    if let c = cutAt, c < b { _ = w.write(mangled.subdata(in: a..<max(a, c))); w.abort(); return }
                    guard w.write(mangled.subdata(in: a..<b)) else { return }
                }
            }
        }
    }

    /// Byte mutations as the parsers' fuzzer makes them (flips, tokens, cuts, extreme numbers).
    private func bytes(_ d: Data) -> Data {
        state.withLock { s in
            var m = Mutator(seed: s.rng.next(), corpus: [Array(d)])
            var b = Array(d)
            for _ in 0..<(1 + m.int(4)) { m.mutate(&b) }
            return Data(b)
        }
    }

    /// Line-level damage to an SSE or NDJSON stream: a line dropped, repeated, swapped for another
    /// JSON type, or the stream's end marker removed.
    private func lines(_ d: Data) -> Data {
        var ls = String(decoding: d, as: UTF8.self).components(separatedBy: "\n")
        for _ in 0..<(1 + roll(3)) where !ls.isEmpty {
            let i = roll(ls.count)
            switch roll(5) {
            case 0: ls.remove(at: i)
            case 1: ls.insert(ls[i], at: i)
            case 2: ls = ls.filter { !$0.contains("[DONE]") && !$0.contains("\"done\":true") }
            default:
                let prefix = ls[i].hasPrefix("data: ") ? "data: " : ""
                let payload = Data(ls[i].dropFirst(prefix.count).utf8)
                ls[i] = prefix + String(decoding: swapJSONValue(payload) ?? Data(randomJSON(depth: 0).utf8), as: UTF8.self)
            }
        }
        return Data(ls.joined(separator: "\n").utf8)
    }

    /// The body with one JSON value (anywhere in the tree) replaced by a random one of any type; nil if not JSON.
    private func swapJSONValue(_ d: Data) -> Data? {
        guard let v = try? JSONDecoder().decode(JSONValue.self, from: d) else { return nil }
        var paths: [[String]] = []
        func walk(_ v: JSONValue, _ p: [String]) {
            paths.append(p)
            switch v {
            case .object(let o): for (k, x) in o { walk(x, p + [k]) }
            case .array(let a): for (i, x) in a.enumerated() { walk(x, p + ["#\(i)"]) }
            default: break
            }
        }
        walk(v, [])
        let target = paths[roll(paths.count)]
        // The new value goes in as text, so numbers JSONValue cannot hold (1e400, 2^64) and bad escapes reach the client.
        let hole = "@@hydra-hole@@"
        func replace(_ v: JSONValue, _ p: ArraySlice<String>) -> JSONValue {
            guard let k = p.first else { return .string(hole) }
            switch v {
            case .object(var o): o[k] = replace(o[k] ?? .null, p.dropFirst()); return .object(o)
            case .array(var a):
                if let i = Int(k.dropFirst()), a.indices.contains(i) { a[i] = replace(a[i], p.dropFirst()) }
                return .array(a)
            default: return v
            }
        }
        guard let s = try? JSONCoding.encodeString(replace(v, target[...])) else { return nil }
        return Data(s.replacingOccurrences(of: "\"\(hole)\"", with: randomJSON(depth: 0)).utf8)
    }

    private func randomJSON(depth: Int) -> String {
        switch roll(depth > 3 ? 9 : 12) {
        case 0: return "null"
        case 1: return ["true", "false"][roll(2)]
        case 2: return ["0", "-1", "1e308", "-0", "0.5", "4294967296", "9007199254740993"][roll(7)]
        case 3: return "1e400"
        case 4: return "18446744073709551616"
        case 5: return "\"\""
        case 6: return "\"\\u0000 NUL \\ud800 lone surrogate\""
        case 7: return "\"" + String(repeating: "é💥", count: roll(2000)) + "\""
        case 8: return "\"CUDA out of memory. Tried to allocate 2.00 GiB\""
        case 9: return "[" + (0..<roll(4)).map { _ in randomJSON(depth: depth + 1) }.joined(separator: ",") + "]"
        case 10: return "{" + (0..<roll(4)).map { i in "\"k\(i)\":" + randomJSON(depth: depth + 1) }.joined(separator: ",") + "}"
        default: return String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        }
    }

    /// Cut points for re-chunking `n` bytes into pieces of random size.
    private func splits(_ n: Int) -> [(Int, Int)] {
        var out: [(Int, Int)] = []
        var a = 0
        while a < n { let b = min(n, a + 1 + roll(300)); out.append((a, b)); a = b }
        return out
    }

    /// The bytes a streamed reply writes, captured through a socket pair (the fakes write streams
    /// straight to their connection).
    static func capture(_ body: @Sendable (HTTPChunkWriter) -> Void) -> Data {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { return Data() }
        let reader = fds[1]
        let collected = Mutex(Data())
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(reader, &buf, buf.count)
                if n <= 0 { break }
                collected.withLock { $0.append(contentsOf: buf[0..<n]) }
            }
            done.signal()
        }
        body(HTTPChunkWriter(fd: fds[0]))
        close(fds[0])
        done.wait()
        close(reader)
        return dechunk(collected.withLock { $0 })
    }

    /// The payload of a chunked transfer encoding (as `HTTPChunkWriter` writes it).
    static func dechunk(_ d: Data) -> Data {
        let b = [UInt8](d)
        var out = Data()
        var i = 0
        while i < b.count {
            guard let crlf = (i..<b.count - 1).first(where: { b[$0] == 13 && b[$0 + 1] == 10 }),
                  let size = Int(String(decoding: b[i..<crlf], as: UTF8.self), radix: 16), size > 0 else { break }
            let start = crlf + 2
            guard start + size <= b.count else { break }
            out.append(contentsOf: b[start..<start + size])
            i = start + size + 2
        }
        return out
    }
}
