import Foundation
import HydraCore

/// A job an agent holds, as its heartbeat lists it: a lease is renewed only for this node, this
/// job and this attempt, never for a job id alone.
public struct HeldJob: Codable, Sendable, Hashable {
    public var id: String
    public var attempt: Int
    public init(id: String, attempt: Int) { self.id = id; self.attempt = attempt }
}

/// What an agent writes into `hydra:node:<node>:heartbeat` (fields `body`, `sig`, `kid`), written
/// by `Agent` and read by the coordinator: one type for both ends.
public struct HeartbeatMessage: Codable, Sendable, Equatable {
    public var node: String
    /// The agent process (changes on restart).
    public var instance: String
    /// Increases with every heartbeat of the instance: the coordinator measures liveness by when it
    /// last saw this change, on its own clock, never by the agent's `sentAt`.
    public var seq: UInt64
    /// The agent's clock; shown to people, never compared with another clock.
    public var sentAt: Double
    /// `ready`, or `stopping` (a graceful shutdown: place nothing more here).
    public var state: String
    public var version: String
    /// How many envelopes the agent reads ahead (its prefetch): the coordinator keeps at most this many
    /// jobs dispatched to the node, so that every job it dispatched is held, listed and leased.
    public var capacity: Int
    public var inventory: Inventory
    public var held: [HeldJob]
    /// The agent's command allowlist as it runs (the cluster file's `command_allowlist` plus its
    /// `--allow-command` flags), one template's elements per entry: the router places a `command` job
    /// only where its argv matches. nil (an agent from before it was sent): not known, not filtered.
    public var commands: [[String]]?
    /// How old the GPU reading in `inventory` is, in seconds on the agent's own clock (a difference,
    /// never compared with another clock). The GPUs are read on their own loop; a slow or hung
    /// nvidia-smi leaves the last reading in place, and the router stops trusting it when it is old.
    /// nil: never read yet, or an agent from before it was sent.
    public var sampleAgeS: Double?
    /// A reading older than this places no GPU job on the node (the coordinator's default).
    public static let staleSampleSeconds: Double = 30

    public init(node: String, instance: String, seq: UInt64, sentAt: Double, state: String, version: String, capacity: Int,
                inventory: Inventory, held: [HeldJob], commands: [[String]]? = nil, sampleAgeS: Double? = nil) {
        self.node = node; self.instance = instance; self.seq = seq; self.sentAt = sentAt; self.state = state
        self.version = version; self.capacity = capacity; self.inventory = inventory; self.held = held; self.commands = commands
        self.sampleAgeS = sampleAgeS
    }

    enum CodingKeys: String, CodingKey {
        case node, instance, seq, state, version, capacity, inventory, held, commands
        case sentAt = "sent_at"
        case sampleAgeS = "sample_age_s"
    }

    public var stopping: Bool { state == "stopping" }

    /// HSET field/value pairs.
    public func fields(keys: SigningKeys?) throws -> [String] {
        let body = try JSONCoding.encodeString(self)
        var f = ["body", body]
        if let keys {
            let (sig, kid) = keys.sign("heartbeat", body)
            f += ["sig", sig, "kid", kid]
        }
        return f
    }

    /// Checks and decodes a heartbeat hash read from `node`'s key. With keys (the node's), anything
    /// unsigned, forged or naming another node is refused (`MessageRejection`), and so is a signed one
    /// with numbers no node reports (`ImplausibleHeartbeat`, see `checkPlausible`).
    public static func decode(_ fields: [String: String], node: String, keys: SigningKeys?) throws -> HeartbeatMessage {
        guard let body = fields["body"] else { throw MessageRejection.missingBody }
        if let keys { try keys.verify("heartbeat", body, signature: fields["sig"], keyID: fields["kid"]) }
        guard let hb = try? JSONCoding.decode(HeartbeatMessage.self, from: body) else { throw MessageRejection.malformed }
        guard hb.node == node else { throw MessageRejection.wrongNode }
        try hb.checkPlausible()
        return hb
    }
}

/// How much of what an agent writes the coordinator reads. An agent may put anything Redis takes
/// into its own keys (512 MB a value, any number of stream entries); reading it whole would put the
/// coordinator's memory in the agent's hands. A genuine agent stays far below (it caps what it sends:
/// `ResultMessage.fields`).
public enum MessageLimits {
    /// One result entry. A genuine one carries at most a 256 KiB result document and 16 KiB of error.
    public static let resultEntryBytes = 4 << 20
    /// One read of every node's results stream (up to 1 000 entries each); past it, the entries read
    /// are taken one at a time, each under `resultEntryBytes`.
    public static let resultReadBytes = 64 << 20
    /// One heartbeat's body, signature and key id together. A genuine one is kilobytes; one listing
    /// 100 000 held jobs (the largest `--prefetch`) about 7 MiB.
    public static let heartbeatBytes = 16 << 20
    /// `XINFO STREAM` of a job stream, read only where Redis refuses the script that leaves out its
    /// entries (`RedisConnection.lastGeneratedIDs`): an envelope is the coordinator's, at most a batch
    /// entry's spec, but the node can append its own.
    public static let streamInfoBytes = 64 << 20
    /// Above this an agent shrinks a result before sending it (see `ResultMessage.fields`).
    public static let resultSendBytes = 512 << 10
}

/// Results on `hydra:node:<node>:results`: field `result` (the AttemptResult JSON), with keys
/// `sig` and `kid`, signed with the node's own key.
public enum ResultMessage {
    /// The stream entry's fields. A result over `MessageLimits.resultSendBytes` goes with its document
    /// cut the way the coordinator would store it (size and excerpt, `JSONValue.cappedDocument`) and its error
    /// to 16 KiB: the coordinator refuses entries over `resultEntryBytes` unread.
    public static func fields(_ r: AttemptResult, keys: SigningKeys?) throws -> [String] {
        var body = try r.jsonString()
        if body.utf8.count > MessageLimits.resultSendBytes { body = try r.withCappedDocument().storable().jsonString() }
        var f = ["result", body]
        if let keys {
            let (sig, kid) = keys.sign("result", body)
            f += ["sig", sig, "kid", kid]
        }
        return f
    }

    /// Verifies and parses a result read from `node`'s stream. The stream's node is the only node a
    /// result can speak for: the agent's own `node` field must agree.
    public static func decode(_ fields: [String: String]?, node: String, keys: SigningKeys?) throws -> AttemptResult {
        guard let fields, let body = fields["result"] else { throw MessageRejection.missingBody }
        if let keys { try keys.verify("result", body, signature: fields["sig"], keyID: fields["kid"]) }
        guard let r = try? AttemptResult.parse(body) else { throw MessageRejection.malformed }
        guard r.node == node else { throw MessageRejection.wrongNode }
        guard UUID(uuidString: r.jobID) != nil, r.attempt >= 1 else { throw MessageRejection.malformed }
        return r
    }
}

/// When each node was last heard from, on the coordinator's own clock: a node is live while its
/// heartbeat's (instance, seq) keeps changing. An agent whose clock runs minutes behind or ahead is
/// as live as any other; one that stops changing its heartbeat is dead after `timeout` seconds,
/// whatever its key's TTL or its `sent_at` say.
public struct NodeLiveness: Sendable {
    public let timeout: Double
    /// When this tracker first looked: nodes never seen since are only called dead after `timeout`.
    public private(set) var startedAt: Double?
    private var seen: [String: (instance: String, seq: UInt64, changedAt: Double)] = [:]

    public init(timeout: Double) { self.timeout = timeout }

    public mutating func observe(node: String, instance: String, seq: UInt64, now: Double) {
        if startedAt == nil { startedAt = now }
        if let s = seen[node], s.instance == instance, s.seq == seq { return }
        seen[node] = (instance, seq, now)
    }

    /// Records a look at the cluster even when no heartbeat was there.
    public mutating func tick(now: Double) { if startedAt == nil { startedAt = now } }

    public func lastChange(_ node: String) -> Double? { seen[node]?.changedAt }

    public func isLive(_ node: String, now: Double) -> Bool {
        guard let s = seen[node] else { return false }
        return now - s.changedAt <= timeout
    }

    /// Whether a node that was never seen can be called dead yet (the tracker has watched long enough).
    public func settled(now: Double) -> Bool { startedAt.map { now - $0 >= timeout } ?? false }

    /// Nodes seen lately, by name.
    public func live(now: Double) -> [String] { seen.keys.filter { isLive($0, now: now) }.sorted() }
}

/// How many jobs each node finished lately, for backpressure: a node may hold what its agent reads
/// ahead plus what it drained in the last `window` seconds, so that a job queued behind the others
/// is read well within its lease at the node's current pace, and a node that runs many short jobs
/// is never starved of work by a fixed cap.
public struct NodeDrain: Sendable {
    public let window: Double
    /// Per node: (bucket start, jobs) in quarter-second buckets, oldest first.
    private var buckets: [String: [(t: Double, n: Int)]] = [:]

    public init(window: Double) { self.window = window }

    public mutating func record(node: String, count: Int = 1, now: Double) {
        let b = (now * 4).rounded(.down) / 4
        var list = buckets[node] ?? []
        if let last = list.last, last.t == b { list[list.count - 1].n += count } else { list.append((b, count)) }
        if let first = list.first, first.t < now - window { list.removeAll { $0.t < now - window } }
        buckets[node] = list
    }

    public func drained(node: String, now: Double) -> Int {
        (buckets[node] ?? []).reduce(0) { $1.t >= now - window ? $0 + $1.n : $0 }
    }

    /// The most jobs `node` may hold: its agent's read-ahead plus what it drained within the window.
    /// Saturates: `capacity` comes from a heartbeat, and no count an agent sends may trap the leader.
    public func limit(node: String, capacity: Int, now: Double) -> Int {
        let (sum, overflow) = capacity.addingReportingOverflow(drained(node: node, now: now))
        return overflow ? (capacity < 0 ? Int.min : Int.max) : sum
    }
}
