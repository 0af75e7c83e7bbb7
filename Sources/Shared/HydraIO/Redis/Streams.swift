import Foundation
import HydraCore

/// One stream entry: its ID and its field/value pairs (nil fields = entry deleted or trimmed).
public struct StreamEntry: Sendable, Equatable {
    public var id: String
    public var fields: [String: String]?

    public init(id: String, fields: [String: String]?) { self.id = id; self.fields = fields }
}

extension RedisConnection {
    /// Creates the consumer group (and the stream); an existing group is fine.
    public func ensureGroup(stream: String, group: String, startID: String = "0") throws {
        let r = try command(["XGROUP", "CREATE", stream, group, startID, "MKSTREAM"])
        if case .error(let e) = r, !e.hasPrefix("BUSYGROUP") {
            throw RedisError(code: .server, message: "XGROUP CREATE \(stream) \(group): \(e)")
        }
    }

    /// XREADGROUP on one stream. `id` is `>` for new entries or `0` for this consumer's pending ones.
    /// A missing group (Redis restarted without persistence) is re-created and the read retried once.
    public func readGroup(stream: String, group: String, consumer: String, id: String, count: Int, blockMillis: Int?) throws -> [StreamEntry] {
        try readGroup(streams: [stream], group: group, consumer: consumer, id: id, count: count, blockMillis: blockMillis).map(\.entry)
    }

    /// XREADGROUP over several streams at once (one id for all); entries come with their stream.
    /// A missing group on any of them is created and the read retried once.
    public func readGroup(streams: [String], group: String, consumer: String, id: String, count: Int,
                          blockMillis: Int?) throws -> [(stream: String, entry: StreamEntry)] {
        if streams.isEmpty { return [] }
        var args = ["XREADGROUP", "GROUP", group, consumer, "COUNT", String(count)]
        if let blockMillis { args += ["BLOCK", String(blockMillis)] }
        args += ["STREAMS"] + streams + Array(repeating: id, count: streams.count)
        var reply = try command(args)
        if case .error(let e) = reply, e.hasPrefix("NOGROUP") {
            for s in streams { try ensureGroup(stream: s, group: group) }
            reply = try command(args)
        }
        if case .error(let e) = reply { throw RedisError(code: .server, message: "XREADGROUP \(streams.joined(separator: " ")): \(e)") }
        // The `[[key, [entry...]]]` shape of XREADGROUP (nil = nothing).
        var out: [(String, StreamEntry)] = []
        for s in reply.array ?? [] {
            guard let pair = s.array, pair.count == 2, let key = pair[0].string, let entries = pair[1].array else { continue }
            for e in Self.parseEntries(entries) { out.append((key, e)) }
        }
        return out
    }

    /// The ids `consumer` holds unacknowledged on `stream` (XPENDING, oldest first): no payloads.
    public func pendingIDs(stream: String, group: String, consumer: String, count: Int) throws -> [String] {
        let r = try command(["XPENDING", stream, group, "-", "+", String(count), consumer])
        if case .error(let e) = r { throw RedisError(code: .server, message: "XPENDING \(stream): \(e)") }
        return (r.array ?? []).compactMap { $0.array?.first?.string }
    }

    /// One entry by id, its reply under `maxReplyBytes` (else `tooLarge`); nil when it is gone.
    public func entry(stream: String, id: String, maxReplyBytes: Int) throws -> StreamEntry? {
        let r = try command(["XRANGE", stream, id, id], maxReplyBytes: maxReplyBytes)
        if case .error(let e) = r { throw RedisError(code: .server, message: "XRANGE \(stream): \(e)") }
        return Self.parseEntries(r.array ?? []).first
    }

    /// What `XINFO STREAM` says of each stream's `last-generated-id`, as `["last-generated-id", id]`
    /// (errors as Redis gave them). XINFO STREAM itself also returns the stream's first and last
    /// entries, which a node can make as large as Redis takes; the script keeps them inside Redis.
    /// Where Redis refuses the script, each stream's XINFO is read alone under `maxReplyBytes`, and
    /// one over it reads as the error `OVERSIZE …`.
    public func lastGeneratedIDs(streams: [String], maxReplyBytes: Int) throws -> [RedisReply] {
        if streams.isEmpty { return [] }
        let r = try command(["EVAL", Self.lastIDScript, String(streams.count)] + streams)
        if let items = r.array, items.count == streams.count { return items }
        return try streams.map { s in
            do {
                return try command(["XINFO", "STREAM", s], maxReplyBytes: maxReplyBytes)
            } catch let e as RedisError where e.code == .tooLarge {
                return .error("OVERSIZE the stream's first or last entry takes more than \(maxReplyBytes) bytes")
            }
        }
    }

    static let lastIDScript = """
    local out = {}
    for i, k in ipairs(KEYS) do
      local r = redis.pcall('XINFO', 'STREAM', k)
      if r.err then
        out[i] = r
      else
        local id = false
        for j = 1, #r, 2 do if r[j] == 'last-generated-id' then id = r[j + 1] end end
        out[i] = {'last-generated-id', id}
      end
    end
    return out
    """

    public static func parseEntries(_ entries: [RedisReply]) -> [StreamEntry] {
        var out: [StreamEntry] = []
        for e in entries {
            guard let parts = e.array, parts.count == 2, let id = parts[0].string else { continue }
            guard let kv = parts[1].array else { out.append(StreamEntry(id: id, fields: nil)); continue }
            var fields: [String: String] = [:]
            var i = 0
            while i + 1 < kv.count {
                if let k = kv[i].string { fields[k] = kv[i + 1].string ?? "" }
                i += 2
            }
            out.append(StreamEntry(id: id, fields: fields))
        }
        return out
    }

    /// XAUTOCLAIM until the cursor wraps; returns claimed entries and IDs whose payload was deleted.
    public func autoClaim(stream: String, group: String, consumer: String, minIdleMillis: Int, count: Int = 100) throws -> (claimed: [StreamEntry], deleted: [String]) {
        var cursor = "0-0"
        var claimed: [StreamEntry] = []
        var deleted: [String] = []
        repeat {
            let r = try command(["XAUTOCLAIM", stream, group, consumer, String(minIdleMillis), cursor, "COUNT", String(count)])
            if case .error(let e) = r {
                if e.hasPrefix("NOGROUP") { return ([], []) }
                throw RedisError(code: .server, message: "XAUTOCLAIM \(stream): \(e)")
            }
            guard let parts = r.array, parts.count >= 2 else { break }
            cursor = parts[0].string ?? "0-0"
            claimed += Self.parseEntries(parts[1].array ?? [])
            if parts.count >= 3 { deleted += (parts[2].array ?? []).compactMap(\.string) }
        } while cursor != "0-0"
        return (claimed, deleted)
    }
}

extension RedisConnection {
    /// For each (stream, entry id, job id): whether that entry is still in the stream and is the
    /// job's envelope. A stream id recorded for a job is not proof: the coordinator chooses ids
    /// before its XADD, and one Redis refused may be another entry's; acknowledging or deleting by
    /// it unchecked could drop someone else's message.
    public func entriesBelongToJobs(_ items: [(stream: String, id: String, jobID: String)]) throws -> [Bool] {
        if items.isEmpty { return [] }
        let replies = try pipeline(items.map { ["XRANGE", $0.stream, $0.id, $0.id] })
        return zip(items, replies).map { item, reply in
            guard let entries = reply.array, let entry = Self.parseEntries(entries).first, entry.id == item.id,
                  let fields = entry.fields, fields["type"] == "job", let body = fields["body"],
                  let v = try? JSONValue.parse(body) else { return false }
            return v["job_id"]?.stringValue == item.jobID
        }
    }
}
