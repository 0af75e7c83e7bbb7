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

    public mutating func next(stream: String, nowMillis: UInt64) -> String? {
        guard let l = last[stream] else { return nil }
        let id = nowMillis > l.ms ? StreamID(ms: nowMillis, seq: 0) : StreamID(ms: l.ms, seq: l.seq + 1)
        last[stream] = id
        return id.description
    }

    /// An id Redis accepted (or generated) on `stream`.
    public mutating func learned(stream: String, id: String) {
        guard let s = StreamID(id) else { return }
        if let l = last[stream], l >= s { return }
        last[stream] = s
    }

    public func knows(stream: String) -> Bool { last[stream] != nil }

    /// What `XINFO STREAM` said: its `last-generated-id`, or an error for a stream that does not exist
    /// yet (then any id is above its last).
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
