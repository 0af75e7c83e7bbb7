import Foundation
import HydraCore
import HydraWire

/// Checks an agent makes on an envelope after its signature and node are verified, before anything
/// uses its fields: a job id becomes a directory name, a line of `seen-attempts.<node>` and a log
/// field; `vram_bytes` is summed per GPU. Pure, so the bounds are tested without Redis.
public enum EnvelopeCheck {
    /// More VRAM than any GPU has (1 PiB): a number beyond it is a forgery or a bug, never a job.
    public static let maxVRAMBytes: UInt64 = 1 << 50

    /// Why the envelope cannot be taken at all (it is dead-lettered), or nil.
    public static func refusal(_ env: Envelope) -> String? {
        if !JobID.isCanonical(env.jobID) {
            return "job_id is not a lower-case UUID: \(Excerpt.of(env.jobID, limit: 80))"
        }
        if env.attempt < 1 { return "attempt \(env.attempt) is below 1" }
        return nil
    }

    /// Why the job must fail without running (its id is sound, so a failed result can name it), or nil.
    public static func failure(_ env: Envelope) -> String? {
        if env.vramBytes > maxVRAMBytes {
            return "vram_bytes \(env.vramBytes) is more than \(maxVRAMBytes) (1 PiB): refused without running"
        }
        return nil
    }
}

/// One attempt of one job, as an agent holds it: attempts of the same job are different entries.
public struct AttemptKey: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var jobID: String
    public var attempt: Int
    public init(_ jobID: String, _ attempt: Int) { self.jobID = jobID; self.attempt = attempt }
    public static func < (a: AttemptKey, b: AttemptKey) -> Bool { (a.jobID, a.attempt) < (b.jobID, b.attempt) }
    public var description: String { "\(jobID)/\(attempt)" }
}

/// The attempts an agent holds, by (job, attempt), with the attempts of each job indexed: a new
/// envelope asks which older attempts of its job are still held, and scanning every held key for that
/// (up to the prefetch, 256 by default) under the jobs lock cost each envelope on the hot path.
public struct HeldAttempts<Value: Sendable>: Sendable {
    public private(set) var byKey: [AttemptKey: Value] = [:]
    /// Job id → its attempts held (almost always one).
    private var attempts: [String: [Int]] = [:]

    public init() {}

    public var count: Int { byKey.count }
    public var isEmpty: Bool { byKey.isEmpty }
    public var keys: Dictionary<AttemptKey, Value>.Keys { byKey.keys }
    public var values: Dictionary<AttemptKey, Value>.Values { byKey.values }
    public subscript(key: AttemptKey) -> Value? { byKey[key] }

    public mutating func insert(_ key: AttemptKey, _ value: Value) {
        if byKey.updateValue(value, forKey: key) == nil { attempts[key.jobID, default: []].append(key.attempt) }
    }

    @discardableResult
    public mutating func removeValue(forKey key: AttemptKey) -> Value? {
        guard let v = byKey.removeValue(forKey: key) else { return nil }
        if var a = attempts[key.jobID] {
            a.removeAll { $0 == key.attempt }
            attempts[key.jobID] = a.isEmpty ? nil : a
        }
        return v
    }

    /// What `AgentDecisions.superseded` says for `key` over the held keys, from the index.
    public func superseded(by key: AttemptKey) -> [AttemptKey] {
        guard let a = attempts[key.jobID] else { return [] }
        return a.filter { $0 < key.attempt }.sorted().map { AttemptKey(key.jobID, $0) }
    }
}

/// Pure decisions of the agent's heartbeat and intake.
public enum AgentDecisions {
    /// Older attempts of `key`'s job that this node still holds: the newer attempt supersedes them.
    /// The coordinator only sends a newer attempt once it has given the older one up (lease expired,
    /// agent restarted, retried): the older one's result is fenced and changes nothing, and running
    /// both would run the job twice at once on the same GPUs. So the older ones are stopped, and the
    /// newer one starts only once they have ended (refusing the newer one instead would leave the job
    /// with no attempt the coordinator counts).
    public static func superseded(by key: AttemptKey, held: some Sequence<AttemptKey>) -> [AttemptKey] {
        held.filter { $0.jobID == key.jobID && $0.attempt < key.attempt }.sorted()
    }

    /// The heartbeat's `state` and `capacity`. `stopping` is the one state the coordinator places
    /// nothing on (the wire format has no other): sent while draining for a shutdown, and while this
    /// node's job stream cannot be read, since jobs placed here then would only burn attempts.
    public static func heartbeatState(draining: Bool, streamFailing: Bool, prefetch: Int) -> (state: String, capacity: Int) {
        if streamFailing { return ("stopping", 0) }
        if draining { return ("stopping", prefetch) }
        return ("ready", prefetch)
    }

    /// Whether the latest GPU sample is too old to describe the node (nvidia-smi slow or hung).
    public static func sampleIsStale(sampledAt: Date?, startedAt: Date, now: Date, interval: Double) -> Bool {
        let limit = max(3 * interval, 15)
        return now.timeIntervalSince(sampledAt ?? startedAt) > limit
    }
}

/// Overflow-free arithmetic for byte counts read from other programs and messages.
public enum Saturating {
    public static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, o) = a.addingReportingOverflow(b)
        return o ? .max : s
    }
}
