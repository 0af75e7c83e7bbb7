import Foundation
import XCTest
import HydraCore
import HydraIO
import HydraTestSupport

/// Reads of what agents wrote stay under their byte limits against a real Redis: a reply over the
/// connection's ceiling is refused (and the connection recovers), and `boundedHMGET` leaves any hash
/// over its limit unread. Values are random in size and content (NUL, CR LF, multi-byte characters).
final class BoundedReadTests: XCTestCase {
    var url = ""

    override func setUpWithError() throws {
        guard let base = ProcessInfo.processInfo.environment["HYDRA_TEST_REDIS_URL"] else {
            throw XCTSkip("needs HYDRA_TEST_REDIS_URL: run `make test`")
        }
        var c = URLComponents(string: base)!
        c.path = "/\(Int.random(in: 1...63))"
        url = c.string!
        try RedisConnection(url: url).run(["FLUSHDB"])
    }

    /// A connection as a Redis user without EVAL, as a coordinator's user from before the scripts is;
    /// the user is removed when the test ends.
    func connectionWithoutEVAL() throws -> RedisConnection {
        let admin = try RedisConnection(url: url)
        let user = "hydra-test-noeval-\(UInt32.random(in: 0...UInt32.max))"
        try admin.run(["ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-eval"])
        addTeardownBlock { _ = try? admin.command(["ACL", "DELUSER", user]) }
        var c = URLComponents(string: url)!
        c.user = user; c.password = "pw"
        return try RedisConnection(url: c.string!)
    }

    /// Text of exactly `bytes` UTF-8 bytes, with the characters that break naive protocol code.
    func text(_ bytes: Int, _ rng: inout SplitMix64) -> String {
        let pieces = ["\r\n", "\u{0}", "$", "*", "é", "€", "😀", "a", "b", "\n"]
        var s = ""
        var n = 0
        while n < bytes {
            let p = pieces[Int(rng.next() % UInt64(pieces.count))]
            if n + p.utf8.count > bytes { s += String(repeating: "x", count: bytes - n); break }
            s += p
            n += p.utf8.count
        }
        return s
    }

    func testAReplyIsRefusedExactlyWhenItIsOverTheCeilingAndTheConnectionRecovers() throws {
        var rng = SplitMix64(seed: 0xB0D)
        let redis = try RedisConnection(url: url)
        let admin = try RedisConnection(url: url)
        var refused = 0
        for round in 0..<300 {
            let cap = 64 + Int(rng.next() % 100_000)
            // Around the ceiling most of the time, anywhere below 3× it otherwise.
            let size = rng.next() % 4 == 0 ? Int(rng.next() % UInt64(3 * cap)) : max(0, cap - 16 + Int(rng.next() % 32))
            let value = text(size, &rng)
            try admin.run(["SET", "k", value])
            // A bulk reply is `$<len>\r\n<bytes>\r\n`.
            let replyBytes = "$\(size)\r\n".utf8.count + size + 2
            do {
                let r = try redis.command(["GET", "k"], maxReplyBytes: cap)
                XCTAssertLessThanOrEqual(replyBytes, cap, "round \(round): a \(replyBytes)-byte reply came through a \(cap)-byte ceiling")
                XCTAssertEqual(r.string, value, "round \(round): the value changed on the way")
            } catch let e as RedisError where e.code == .tooLarge {
                refused += 1
                XCTAssertGreaterThan(replyBytes, cap, "round \(round): a \(replyBytes)-byte reply was refused under a \(cap)-byte ceiling")
                XCTAssertFalse(redis.isConnected, "a connection left mid-reply must be dropped")
            }
            // Whatever happened, the next command on the same connection works.
            XCTAssertEqual(try redis.command(["PING"]).string, "PONG", "round \(round)")
        }
        XCTAssertGreaterThan(refused, 30, "the rounds must exercise both sides of the ceiling")
        XCTAssertLessThan(refused, 270)
    }

    func testOneReplyOverTheCeilingInAPipelineStopsItAndTheConnectionRecovers() throws {
        let redis = try RedisConnection(url: url)
        try redis.run(["SET", "small", "x"])
        try redis.run(["SET", "big", String(repeating: "y", count: 100_000)])
        XCTAssertThrowsError(try redis.pipeline([["GET", "small"], ["GET", "big"], ["GET", "small"]], maxReplyBytes: 50_000)) { e in
            XCTAssertEqual((e as? RedisError)?.code, .tooLarge)
            XCTAssertTrue("\(e)".contains("GET big") || "\(e)".contains("GET"), "\(e)")
        }
        XCTAssertEqual(try redis.pipeline([["GET", "small"], ["GET", "small"]], maxReplyBytes: 50_000).map(\.string), ["x", "x"])
        // The connection's own ceiling applies when a call names none.
        redis.maxReplyBytes = 1000
        XCTAssertThrowsError(try redis.command(["GET", "big"]))
        XCTAssertEqual(try redis.command(["GET", "small"]).string, "x")
    }

    /// What `boundedHMGET` must say about a key, from what the test wrote.
    enum Written { case none, notAHash, hash([String: String]) }

    func expected(_ w: Written, fields: [String], maxBytes: Int) -> BoundedHashRead {
        switch w {
        case .none, .notAHash: return .absent
        case .hash(let h):
            let size = fields.reduce(0) { $0 + (h[$1]?.utf8.count ?? 0) }
            if size > maxBytes { return .oversize(size) }
            guard h[fields[0]] != nil else { return .absent }
            return .fields(fields.map { h[$0] })
        }
    }

    func testBoundedHMGETAgreesWithWhatWasWrittenWithAndWithoutTheScript() throws {
        var rng = SplitMix64(seed: 0x4EA7)
        let admin = try RedisConnection(url: url)
        let scripted = try RedisConnection(url: url)
        let unscripted = try connectionWithoutEVAL()
        let fields = ["body", "sig", "kid"]
        var kinds: [String: Int] = [:]
        for round in 0..<60 {
            let maxBytes = 100 + Int(rng.next() % 50_000)
            var keys: [String] = []
            var written: [Written] = []
            for i in 0..<Int(1 + rng.next() % 8) {
                let k = "hb:\(round):\(i)"
                keys.append(k)
                switch rng.next() % 6 {
                case 0: written.append(.none)
                case 1:
                    try admin.run(["SET", k, "not a hash"])
                    written.append(.notAHash)
                default:
                    var h: [String: String] = [:]
                    for f in fields where rng.next() % 5 != 0 {
                        // Mostly small; sometimes near or over the limit alone.
                        let n = rng.next() % 3 == 0 ? Int(rng.next() % UInt64(maxBytes + maxBytes / 2)) : Int(rng.next() % 200)
                        h[f] = text(n, &rng)
                    }
                    h["other"] = text(Int(rng.next() % 2000), &rng)  // not asked for: never counted
                    try admin.run(["HSET", k] + h.flatMap { [$0.key, $0.value] })
                    written.append(.hash(h))
                }
            }
            let a = try scripted.boundedHMGET(keys: keys, fields: fields, maxBytes: maxBytes)
            XCTAssertTrue(a.scripted)
            let b = try unscripted.boundedHMGET(keys: keys, fields: fields, maxBytes: maxBytes)
            XCTAssertFalse(b.scripted, "the user without EVAL must take the fallback")
            for (i, w) in written.enumerated() {
                let want = expected(w, fields: fields, maxBytes: maxBytes)
                XCTAssertEqual(a.reads[i], want, "round \(round) key \(i) (scripted)")
                kinds["\(want)".prefix(5).description, default: 0] += 1
                // Without the script the limit is on the reply (framing included), and sizes are unknown.
                switch (want, b.reads[i]) {
                case (.oversize, .oversize(nil)), (.absent, .absent): break
                case (.fields(let x), .fields(let y)): XCTAssertEqual(x, y, "round \(round) key \(i) (unscripted)")
                // Within the framing allowance, a hash just over the limit can come through.
                case (.oversize(let n?), .fields), (.oversize(let n?), .absent): XCTAssertLessThanOrEqual(n, maxBytes + 64 * 4, "round \(round) key \(i)")
                default: XCTFail("round \(round) key \(i): unscripted read \(b.reads[i]), expected \(want)")
                }
            }
        }
        XCTAssertGreaterThan(kinds["overs"] ?? 0, 5, "\(kinds)")
        XCTAssertGreaterThan(kinds["field"] ?? 0, 20, "\(kinds)")
        XCTAssertGreaterThan(kinds["absen"] ?? 0, 10, "\(kinds)")
    }

    /// XINFO STREAM brings a stream's first and last entries along; a node can make them 20 MB. The
    /// coordinator learns a job stream's last id without them crossing (here: under a 64 KiB ceiling).
    func testTheLastIDOfAJobStreamIsLearnedWithoutItsEntries() throws {
        let admin = try RedisConnection(url: url)
        try admin.run(["XADD", "small", "5-1", "f", "v"])
        try admin.run(["XADD", "big", "7-0", "f", "v"])
        try admin.run(["XADD", "big", "9-3", "f", String(repeating: "x", count: 20 << 20)])
        try admin.run(["HSET", "hash", "f", "v"])
        let streams = ["small", "big", "missing", "hash"]
        let tight = try RedisConnection(url: url)
        tight.maxReplyBytes = 64 << 10
        let r = try tight.lastGeneratedIDs(streams: streams, maxReplyBytes: 1 << 20)
        XCTAssertEqual(r[0], .array([.string("last-generated-id"), .string("5-1")]))
        XCTAssertEqual(r[1], .array([.string("last-generated-id"), .string("9-3")]))
        // Errors as XINFO STREAM gives them: the allocator and the blocked-node labels read these.
        XCTAssertEqual(r[2], try admin.command(["XINFO", "STREAM", "missing"]))
        XCTAssertEqual(r[3], try admin.command(["XINFO", "STREAM", "hash"]))
        guard case .error(let wrong) = r[3] else { return XCTFail("\(r[3])") }
        XCTAssertTrue(wrong.hasPrefix("WRONGTYPE"), wrong)

        // A Redis user without EVAL: each stream alone, the oversize one as an error of its own.
        let old = try connectionWithoutEVAL()
        let f = try old.lastGeneratedIDs(streams: streams, maxReplyBytes: 1 << 20)
        guard case .error(let e) = f[1] else { return XCTFail("\(f[1])") }
        XCTAssertTrue(e.hasPrefix("OVERSIZE"), e)
        XCTAssertEqual(f[3], r[3])
        XCTAssertEqual(f[2], r[2])
        guard case .array(let kv) = f[0] else { return XCTFail("\(f[0])") }
        XCTAssertTrue(kv.contains(.string("5-1")))
    }
}
