import Foundation
import HydraCore
import HydraIO
import HydraStore

/// Pending rows the coordinator has already read and decoded. PostgreSQL still decides which jobs
/// are pending and in which order (each pass reads the ids); only the rows come from here, since a
/// pending job's row does not change until the coordinator itself places it.
public struct PendingCache: Sendable {
    public private(set) var rows: [String: JobRow] = [:]
    public private(set) var jobs: [String: RouterJob] = [:]
    /// Jobs about to be ready (`JobStore.upcomingRows`), re-read at `upcomingNextRead` (epoch
    /// seconds), about once a second: the router only weighs them, so a list a second old costs
    /// nothing that matters.
    public var upcoming: [RouterJob] = []
    public var upcomingNextRead: Double = -.infinity

    public init() {}

    public mutating func add(_ new: [JobRow]) {
        for r in new where r.state == .pending {
            rows[r.id] = r
            jobs[r.id] = RouterJob(row: r)
        }
    }

    /// Drops rows no longer in the pending list (placed, cancelled, or pushed out of the window).
    public mutating func keep(only ids: [String]) {
        let set = Set(ids)
        if rows.keys.allSatisfy(set.contains) { return }
        rows = rows.filter { set.contains($0.key) }
        jobs = jobs.filter { set.contains($0.key) }
    }

    public mutating func remove(_ ids: [String]) {
        for id in ids { rows[id] = nil; jobs[id] = nil }
    }

    public mutating func removeAll() {
        rows.removeAll(keepingCapacity: true)
        jobs.removeAll(keepingCapacity: true)
    }

    public var count: Int { rows.count }
}

/// The coordinator's view of jobs on nodes (placed, dispatched, running), kept between placement
/// passes instead of re-read on each. Its errors only ever go one way: a job that has in fact ended
/// may linger until the next re-read, which makes the router more careful, never less; a dispatched
/// job is added before its envelope exists, so it cannot be missing.
public struct ActiveJobsView: Sendable {
    public private(set) var jobs: [String: JobRow] = [:]
    /// (job, attempt) pairs that ended lately: a re-read taken just before they ended must not bring them back.
    private var endedRecently: Set<String> = []
    private var endedBefore: Set<String> = []
    private var rotatedAt: Double = 0

    public init() {}

    static func key(_ id: String, _ attempt: Int) -> String { "\(id)/\(attempt)" }

    public mutating func dispatched(_ rows: [JobRow]) {
        for r in rows { jobs[r.id] = r }
    }

    /// Applies transitions from results or lease expiry.
    public mutating func apply(_ transitions: [AppliedTransition], now: Double) {
        rotate(now)
        for t in transitions {
            guard var row = jobs[t.jobID], row.attempt == t.attempt else {
                if t.to != .running { endedRecently.insert(Self.key(t.jobID, t.attempt)) }
                continue
            }
            if t.to == .running {
                row.state = .running
                if row.startedAt == nil { row.startedAt = t.startedAt ?? now }
                jobs[t.jobID] = row
            } else {
                jobs[t.jobID] = nil
                endedRecently.insert(Self.key(t.jobID, t.attempt))
            }
        }
    }

    /// Replaces the view with a fresh read, minus attempts that ended while it was being taken.
    /// Call it from the thread that dispatches, so that no dispatch falls between the read and this.
    public mutating func resync(_ rows: [JobRow], now: Double) {
        rotate(now)
        var next: [String: JobRow] = [:]
        next.reserveCapacity(rows.count)
        for r in rows {
            let k = Self.key(r.id, r.attempt)
            if endedRecently.contains(k) || endedBefore.contains(k) { continue }
            next[r.id] = r
        }
        jobs = next
    }

    /// Two generations of a few seconds each: old enough entries fall out without a sweep.
    private mutating func rotate(_ now: Double) {
        if now - rotatedAt >= 5 {
            endedBefore = endedRecently
            endedRecently = []
            rotatedAt = now
        }
    }

    public var all: [JobRow] { Array(jobs.values) }
}

/// A Redis stream entry id, `<milliseconds>-<sequence>`.
public struct StreamID: Sendable, Equatable, Comparable, CustomStringConvertible {
    public var ms: UInt64
    public var seq: UInt64

    public init(ms: UInt64, seq: UInt64) { self.ms = ms; self.seq = seq }

    public init?(_ s: String) {
        let parts = s.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        self.ms = ms; self.seq = seq
    }

    public var description: String { "\(ms)-\(seq)" }
    public static func < (a: StreamID, b: StreamID) -> Bool { (a.ms, a.seq) < (b.ms, b.seq) }
}

/// Chooses the ids of the coordinator's XADDs to node streams itself, so that a job's stream id is
/// known before the envelope is written and goes into the same UPDATE that marks it dispatched
/// (one row version per dispatch instead of two). Redis requires ids to grow per stream; the
/// allocator only proposes ids above the last one it saw for that stream. A stream it has not seen
/// yet (after a takeover, or one someone else wrote to) gets `nil`: that XADD uses `*` and the
/// reply teaches the allocator.
public struct StreamIDAllocator: Sendable {
    private var last: [String: StreamID] = [:]

    public init() {}

    /// nil also when no id is left above the last one (see `exhausted`): the caller checks that first.
    public mutating func next(stream: String, nowMillis: UInt64) -> String? {
        guard let l = last[stream] else { return nil }
        let id: StreamID
        if nowMillis > l.ms { id = StreamID(ms: nowMillis, seq: 0) } else if l.seq < .max { id = StreamID(ms: l.ms, seq: l.seq + 1) } else { return nil }
        last[stream] = id
        return id.description
    }

    /// Whether no id above the last one is left on `stream` (an agent may XADD the maximum id to its own
    /// stream; Redis then refuses every later entry, `*` included, even after that entry is deleted).
    public func exhausted(stream: String, nowMillis: UInt64) -> Bool {
        guard let l = last[stream] else { return false }
        return l.seq == .max && l.ms >= nowMillis
    }

    /// An id Redis accepted (or generated) on `stream`.
    public mutating func learned(stream: String, id: String) {
        guard let s = StreamID(id) else { return }
        if let l = last[stream], l >= s { return }
        last[stream] = s
    }

    public func knows(stream: String) -> Bool { last[stream] != nil }

    /// What `XINFO STREAM` said: its `last-generated-id`, or an error for a stream that does not exist
    /// yet (then any id is above its last). Any other error (a key that is not a stream) teaches nothing.
    public mutating func learned(stream: String, xinfo: RedisReply) {
        switch xinfo {
        case .error(let e) where e.contains("no such key"):
            learned(stream: stream, id: "0-0")
        case .array(let kv):
            var i = 0
            while i + 1 < kv.count {
                if kv[i].string == "last-generated-id", let id = kv[i + 1].string { learned(stream: stream, id: id); return }
                i += 2
            }
        default:
            return
        }
    }

    /// Redis refused a proposed id (someone else wrote a later one): ask again with `*`.
    public mutating func forget(stream: String) { last[stream] = nil }
}

/// Nodes the dispatcher sends nothing to for now, with why: their job stream cannot take an entry
/// (its last id is the maximum, or the key is not a stream). What an agent does to its own keys
/// must cost that node alone: the router sees it as draining, so its jobs go elsewhere or wait,
/// and the stream is looked at again every `recheckAfter` seconds, so the node comes back by
/// itself once the key is repaired (`DEL hydra:node:<node>:jobs`).
public struct BlockedNodes: Sendable {
    public let recheckAfter: Double
    public private(set) var blocked: [String: (reason: String, recheckAt: Double)] = [:]

    public init(recheckAfter: Double = 10) { self.recheckAfter = recheckAfter }

    public var isEmpty: Bool { blocked.isEmpty }
    public func contains(_ node: String) -> Bool { blocked[node] != nil }
    public func reason(_ node: String) -> String? { blocked[node]?.reason }

    /// Returns whether this is news (a node not blocked before, or for another reason): log and count it then only.
    @discardableResult
    public mutating func block(_ node: String, reason: String, now: Double) -> Bool {
        let news = blocked[node]?.reason != reason
        blocked[node] = (reason, now + recheckAfter)
        return news
    }

    /// Blocked nodes whose stream is due for another look; they stay blocked until `unblock`.
    public mutating func due(now: Double) -> [String] {
        var out: [String] = []
        for (n, b) in blocked where b.recheckAt <= now {
            out.append(n)
            blocked[n] = (b.reason, now + recheckAfter)
        }
        return out.sorted()
    }

    /// Returns the reason it was blocked for, nil if it was not.
    @discardableResult
    public mutating func unblock(_ node: String) -> String? { blocked.removeValue(forKey: node)?.reason }

    /// Why XADD or XINFO on a node's job stream failed, as a short label (nil: not about the stream itself).
    public static func reason(streamError e: String) -> String? {
        if e.contains("exhausted") { return "stream_id_exhausted" }
        if e.hasPrefix("WRONGTYPE") { return "not_a_stream" }
        // Only where Redis refused the script that keeps entries inside it (`lastGeneratedIDs`).
        if e.hasPrefix("OVERSIZE") { return "oversize_entry" }
        return nil
    }
}

/// Result streams the results loop leaves out for now, per stream, with why. One XREADGROUP reads
/// every node's results stream, and Redis fails it whole when one key is wrong (a hash where the
/// stream was, a stream deleted while the read blocked, a group gone): that stream is left out and
/// tried again after `retryAfter` seconds, while every other node's results keep flowing. A fault
/// is logged once per stream and reason, then at most every `logEvery` seconds.
public struct StreamFaults: Sendable {
    public let retryAfter: Double
    public let logEvery: Double
    private var faults: [String: Double] = [:]
    private var logged: [String: (reason: String, at: Double)] = [:]

    public init(retryAfter: Double = 5, logEvery: Double = 60) { self.retryAfter = retryAfter; self.logEvery = logEvery }

    /// Records a fault; returns whether to log it.
    public mutating func fault(_ stream: String, reason: String, now: Double) -> Bool {
        faults[stream] = now + retryAfter
        if let l = logged[stream], l.reason == reason, now - l.at < logEvery { return false }
        logged[stream] = (reason, now)
        return true
    }

    /// Whether `stream` is left out now (faulted, and not yet due for another try).
    public func skips(_ stream: String, now: Double) -> Bool { faults[stream].map { now < $0 } ?? false }

    /// The stream works again (its group was created): read it with the others.
    public mutating func cleared(_ stream: String) { faults[stream] = nil }

    public var faulted: [String] { faults.keys.sorted() }

    /// A short label for a Redis error about one stream.
    public static func reason(_ message: String) -> String {
        if message.contains("WRONGTYPE") { return "not_a_stream" }
        if message.contains("NOGROUP") { return "no_group" }
        if message.contains("UNBLOCKED") || message.contains("no longer exists") || message.contains("no such key") { return "deleted" }
        return "error"
    }
}
