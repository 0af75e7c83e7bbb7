import Foundation
import HydraCore
import HydraWire
import HydraIO

/// An agent that says what it likes: the hostile half of `hydra-dev chaos --hostile` and of the trust
/// tests. It heartbeats as its node (with a skewed clock if asked), takes envelopes from its stream,
/// and answers with whatever a test wants, signed or not: outputs full of NULs, control codes and
/// broken escapes, results for other nodes' jobs, results no database could store, silence.
/// Everything here goes through the same Redis keys a real agent writes; nothing is mocked.
public final class RogueAgent {
    public let node: String
    public let keys: SigningKeys?
    public let redis: RedisConnection
    /// Added to the clock in everything it sends (`sent_at`, `started_at`).
    public var clockSkew: Double = 0
    public var capacity: Int = 64
    public let instance = "rogue-\(UUID().uuidString.prefix(8))"
    private var seq: UInt64 = 0

    public init(node: String, redis: RedisEndpoint, keys: SigningKeys?) {
        self.node = node; self.keys = keys; self.redis = RedisConnection(endpoint: redis)
    }

    var now: Double { Date().timeIntervalSince1970 + clockSkew }

    /// One heartbeat listing `held`, signed with `keys` (default: its own); `forNode` writes under another
    /// node's key (which ACLs forbid a real agent; the coordinator must refuse it without them too).
    public func heartbeat(held: [HeldJob] = [], inventory: Inventory = Inventory(), signWith: SigningKeys?? = nil,
                          forNode: String? = nil, state: String = "ready", sampleAgeS: Double? = nil) throws {
        seq += 1
        let target = forNode ?? node
        let hb = HeartbeatMessage(node: target, instance: instance, seq: seq, sentAt: now, state: state, version: "rogue",
                                  capacity: capacity, inventory: inventory, held: held, sampleAgeS: sampleAgeS)
        let key = RedisKeys.heartbeat(target)
        _ = try redis.pipeline([["DEL", key], ["HSET", key] + (try hb.fields(keys: signWith ?? keys)), ["EXPIRE", key, "30"],
                                ["SADD", RedisKeys.nodes, target]])
    }

    /// Envelopes waiting on its stream (acknowledged and deleted at once, as a real agent would after its result).
    public func take(max: Int = 100) throws -> [Envelope] {
        let stream = RedisKeys.jobs(node)
        try redis.ensureGroup(stream: stream, group: RedisKeys.agentsGroup)
        let entries = try redis.readGroup(stream: stream, group: RedisKeys.agentsGroup, consumer: instance, id: ">", count: max, blockMillis: nil)
        if !entries.isEmpty {
            let ids = entries.map(\.id)
            _ = try redis.pipeline([["XACK", stream, RedisKeys.agentsGroup] + ids, ["XDEL", stream] + ids])
        }
        return entries.compactMap { e in
            guard let f = e.fields, case .job(let env)? = try? NodeMessage.decode(f, keys: keys, now: Date().timeIntervalSince1970) else { return nil }
            return env
        }
    }

    /// A result as its agent would send it, signed with `signWith` (default: its own keys), on `stream`
    /// (default: its own results stream).
    public func send(_ r: AttemptResult, signWith: SigningKeys?? = nil, stream: String? = nil) throws {
        try sendRaw(try r.jsonString(), signWith: signWith, stream: stream)
    }

    /// Any text as a result body: broken JSON, lone surrogate escapes, what a fuzzer makes.
    public func sendRaw(_ body: String, signWith: SigningKeys?? = nil, stream: String? = nil) throws {
        var f = ["result", body]
        if let k = signWith ?? keys {
            let (sig, kid) = k.sign("result", body)
            f += ["sig", sig, "kid", kid]
        }
        try redis.run(["XADD", stream ?? RedisKeys.results(node), "*"] + f)
    }

    public func started(_ e: Envelope) -> AttemptResult {
        AttemptResult(jobID: e.jobID, attempt: e.attempt, node: node, outcome: .started, startedAt: now)
    }

    public func succeeded(_ e: Envelope, output: JSONValue) -> AttemptResult {
        AttemptResult(jobID: e.jobID, attempt: e.attempt, node: node, outcome: .succeeded, result: output, startedAt: now,
                      finishedAt: now, durationSeconds: 0.01, peakVRAMBytes: e.vramBytes)
    }
}

/// Hostile text for job outputs: NULs, control codes, invalid UTF-8 (decoded the way an agent decodes a
/// process's output), lone surrogate escapes, very long strings. Deterministic per seed.
public struct HostileText {
    var rng: SplitMix64
    public init(seed: UInt64) { rng = SplitMix64(seed: seed) }

    /// Raw bytes as an agent would turn them into text (lossy UTF-8: what it reads from a process).
    public mutating func bytes(_ n: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(n)
        let specials: [UInt8] = [0, 0, 0x1b, 0x7f, 0x0a, 0x0d, 0x22, 0x5c, 0xc0, 0xed, 0xa0, 0x80, 0xff, 0xfe, 0xf4, 0x90]
        for _ in 0..<n {
            let r = rng.next()
            out.append(r % 3 == 0 ? specials[Int((r >> 8) % UInt64(specials.count))] : UInt8(truncatingIfNeeded: r >> 16))
        }
        return out
    }

    public mutating func text(_ n: Int) -> String { String(decoding: bytes(n), as: UTF8.self) }

    /// A JSON value whose strings (and keys) carry hostile text, nested a little.
    public mutating func value(depth: Int = 0) -> JSONValue {
        switch rng.next() % (depth > 3 ? 3 : 5) {
        case 0: return .string(text(Int(rng.next() % 64)))
        case 1: return .number(Double(Int64(bitPattern: rng.next()) % 1_000_000) / 7)
        case 2: return .string(String(repeating: "\u{0}", count: Int(rng.next() % 4) + 1))
        case 3: return .array((0..<Int(rng.next() % 4)).map { _ in value(depth: depth + 1) })
        default:
            var o: [String: JSONValue] = [:]
            for _ in 0..<Int(rng.next() % 4) { o[text(Int(rng.next() % 12))] = value(depth: depth + 1) }
            return .object(o)
        }
    }

    /// Result bodies no honest agent writes: broken JSON, lone surrogates, wrong types, absurd numbers.
    public mutating func brokenBody(jobID: String, attempt: Int, node: String) -> String {
        let head = #"{"attempt":\#(attempt),"job_id":"\#(jobID)","node":"\#(node)","outcome":"succeeded""#
        switch rng.next() % 6 {
        case 0: return head + #","result":{"output":"\ud800 lone"}}"#
        case 1: return head + #","result":"# + String(repeating: "[", count: 600) + "}"
        case 2: return head.replacingOccurrences(of: "\"succeeded\"", with: "\"exploded\"") + "}"
        case 3: return head + #","started_at":1e999}"#
        case 4: return String(decoding: bytes(200), as: UTF8.self)
        default: return head.replacingOccurrences(of: "\(attempt)", with: "\"\(attempt)\"") + "}"
        }
    }
}
