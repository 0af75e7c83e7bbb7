import XCTest
import Foundation
import Synchronization
@testable import HydraCore

/// Deep nesting in any input file is an input error (exit 2), never a stack overflow: Yams recurses
/// once per level while it parses, before the loader can count levels.
final class ConfigNestingTests: XCTestCase {
    /// Parses on a thread with a 512 KiB stack, as small as a job thread's or a task's.
    func parseOnSmallStack(_ text: String) -> Result<JSONValue, any Error> {
        let out = ParseResultBox()
        let done = DispatchSemaphore(value: 0)
        let t = Thread { out.set(Result { try ConfigLoader.parseDocument(text, file: "deep.yaml") }); done.signal() }
        t.stackSize = 512 << 10
        t.start()
        done.wait()
        return out.get()
    }

    func testEveryShapeOfDeepNestingIsRefusedByName() {
        for depth in [1, 30, 63, 64, 65, 300, 5_000, 200_000] {
            let shapes: [(String, String)] = [
                ("flow list", String(repeating: "[", count: depth) + String(repeating: "]", count: depth)),
                ("json objects", String(repeating: "{\"a\":", count: depth) + "1" + String(repeating: "}", count: depth)),
                ("block lists on one line", String(repeating: "- ", count: depth) + "x\n"),
                ("block maps", (0..<min(depth, 3_000)).map { String(repeating: " ", count: $0) + "k:" }.joined(separator: "\n") + " 1\n"),
                ("pretty json", (0..<min(depth, 3_000)).map { String(repeating: " ", count: $0) + "[" }.joined(separator: "\n")
                    + String(repeating: "]", count: min(depth, 3_000))),
            ]
            for (name, text) in shapes {
                switch parseOnSmallStack(text) {
                case .success:
                    XCTAssertLessThanOrEqual(min(depth, 3_000), 64, "\(name) × \(depth) was accepted")
                case .failure(let e):
                    XCTAssertTrue(e is InputError, "\(name) × \(depth): \(e)")
                    if depth < 64 { XCTFail("\(name) × \(depth) refused: \(e)") }
                    XCTAssertTrue("\(e)".contains("nested more than 64 levels deep"), "\(name) × \(depth): \(e)")
                }
            }
        }
    }

    func testARepeatedKeyIsRefusedWithItsLine() {
        for (text, line) in [("name: n\njobs:\n  - name: a\n    kind: sleep\n    kind: command\n", 5),
                             ("{\"until\": \"06:00\", \"until\": \"07:00\"}", 1), ("a: 1\n\"a\": 2\n", 2)] {
            XCTAssertThrowsError(try ConfigLoader.parseDocument(text, file: "dup.yaml")) { e in
                XCTAssertTrue("\(e)".contains("appears twice in one map (line \(line))"), "\(e)")
            }
        }
        // The same key in two maps, and YAML's merge key, are fine.
        XCTAssertNoThrow(try ConfigLoader.parseDocument("a: {k: 1}\nb: {k: 2}\n", file: "ok.yaml"))
        XCTAssertNoThrow(try ConfigLoader.parseDocument("base: &b {k: 1}\nc:\n  <<: *b\n  j: 2\n", file: "ok.yaml"))
    }

    /// The bound read from the text is never below the levels the parser will go down, for random
    /// documents written as block YAML (Yams), compact JSON and pretty JSON.
    func testTheTextBoundIsNeverBelowTheRealDepth() throws {
        var rng = SplitMix64(seed: UInt64.random(in: 1...UInt64.max))
        // One child of each container goes deeper (a spine), the others are scalars: documents
        // from a few levels to past 64, of bounded size.
        func value(_ d: Int) -> (JSONValue, Int) {
            let leaf: JSONValue = [.string("a [b] #c 'd' \"e\""), .number(1), .null][Int(rng.next() % 3)]
            if d >= 80 || rng.next() % 12 == 0 { return (leaf, 0) }
            let n = 1 + Int(rng.next() % 3), deep = Int(rng.next() % UInt64(n))
            let (inner, k) = value(d + 1)
            let items = (0..<n).map { $0 == deep ? inner : leaf }
            if rng.next() % 2 == 0 { return (.array(items), k + 1) }
            return (.object(Dictionary(uniqueKeysWithValues: items.enumerated().map { ("k\($0.offset)", $0.element) })), k + 1)
        }
        for _ in 0..<300 {
            let (v, depth) = value(0)
            let texts = [block(v, indent: 0), try JSONCoding.encodeString(v), try JSONCoding.encodeString(v, pretty: true)]
            for t in texts {
                XCTAssertGreaterThanOrEqual(ConfigLoader.nestingBound(t), depth, t)
                if depth < 64 { XCTAssertNoThrow(try ConfigLoader.parseDocument(t, file: "ok.yaml"), t) }
            }
        }
    }
}

/// `v` as block YAML: maps and lists one entry per line, nested ones indented two more columns.
private func block(_ v: JSONValue, indent: Int) -> String {
    let pad = String(repeating: " ", count: indent)
    func scalar(_ v: JSONValue) -> String? {
        switch v {
        case .array(let a) where a.isEmpty: return "[]"
        case .object(let o) where o.isEmpty: return "{}"
        case .array, .object: return nil
        default: return (try? JSONCoding.encodeString(v)) ?? "null"
        }
    }
    if let s = scalar(v) { return pad + s + "\n" }
    var out = ""
    switch v {
    case .array(let a):
        for x in a { out += scalar(x).map { pad + "- " + $0 + "\n" } ?? (pad + "-\n" + block(x, indent: indent + 2)) }
    case .object(let o):
        for (k, x) in o.sorted(by: { $0.key < $1.key }) {
            out += scalar(x).map { pad + k + ": " + $0 + "\n" } ?? (pad + k + ":\n" + block(x, indent: indent + 2))
        }
    default: break
    }
    return out
}

/// The parse thread's result, handed back under a lock.
private final class ParseResultBox: Sendable {
    private let value = Mutex<Result<JSONValue, any Error>?>(nil)
    func set(_ r: Result<JSONValue, any Error>) { value.withLock { $0 = r } }
    func get() -> Result<JSONValue, any Error> { value.withLock { $0! } }
}
