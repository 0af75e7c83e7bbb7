import Foundation

/// One hash's fields as read under a size limit.
public enum BoundedHashRead: Sendable, Equatable {
    /// No such key, not a hash, or the first field missing.
    case absent
    /// The fields asked for, in order (nil: that field is missing).
    case fields([String?])
    /// Larger than the limit, in bytes when Redis said (the fields were not read).
    case oversize(Int?)
}

extension RedisConnection {
    /// Every key's `fields`, in one round trip, leaving unread any hash whose fields together pass
    /// `maxBytes`: HSTRLEN costs Redis nothing, and nothing over the limit leaves it. A key of
    /// another type reads as absent.
    static let boundedHMGET = """
    local out = {}
    local cap = tonumber(ARGV[1])
    for i, k in ipairs(KEYS) do
      local n = redis.pcall('HSTRLEN', k, ARGV[2])
      if type(n) ~= 'number' then
        out[i] = false
      else
        for j = 3, #ARGV do n = n + redis.call('HSTRLEN', k, ARGV[j]) end
        if n > cap then out[i] = n else out[i] = redis.call('HMGET', k, unpack(ARGV, 2)) end
      end
    end
    return out
    """

    /// HMGET of `fields` on each of `keys`, none larger than `maxBytes` (the fields' values together).
    /// `scripted` is false when Redis refused the script (a Redis user whose rules predate it, or
    /// scripting turned off): the hashes were then read one per round trip, each reply under the
    /// limit, which costs more and reads up to `maxBytes` of an oversize one before dropping it.
    public func boundedHMGET(keys: [String], fields: [String], maxBytes: Int) throws -> (reads: [BoundedHashRead], scripted: Bool) {
        precondition(!fields.isEmpty)
        if keys.isEmpty { return ([], true) }
        let r = try command(["EVAL", Self.boundedHMGET, String(keys.count)] + keys + [String(maxBytes)] + fields)
        if let items = r.array, items.count == keys.count {
            return (items.map { Self.boundedRead($0, fields.count) }, true)
        }
        var out: [BoundedHashRead] = []
        for k in keys {
            do {
                // Protocol framing on top of the values: a few bytes a field.
                out.append(Self.boundedRead(try command(["HMGET", k] + fields, maxReplyBytes: maxBytes + 64 * fields.count + 64), fields.count))
            } catch let e as RedisError where e.code == .tooLarge {
                out.append(.oversize(nil))
            }
        }
        return (out, false)
    }

    private static func boundedRead(_ r: RedisReply, _ n: Int) -> BoundedHashRead {
        switch r {
        case .integer(let size): return .oversize(Int(size))
        case .array(let v) where v.count == n && v[0].string != nil: return .fields(v.map(\.string))
        default: return .absent
        }
    }
}
