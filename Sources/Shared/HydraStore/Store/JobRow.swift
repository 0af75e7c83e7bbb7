import Foundation
import HydraCore
import HydraWire

/// A job as stored in PostgreSQL.
public struct JobRow: Sendable, Equatable, Codable {
    public var id: String
    public var batchID: String
    public var name: String
    public var kind: String
    public var spec: JSONValue
    public var state: JobState
    public var priority: Int
    public var vramBytes: UInt64
    public var gpus: Int
    public var constraints: JSONValue
    public var attempt: Int
    public var maxAttempts: Int
    public var node: String?
    public var gpuUUIDs: [String]
    public var streamID: String?
    public var submittedAt: Double
    /// When a job with dependencies was first read as ready to run (they had all succeeded); nil for a
    /// job without dependencies (ready at `submittedAt`) or one still waiting. The router ages from it.
    public var readyAt: Double?
    public var dispatchedAt: Double?
    public var startedAt: Double?
    public var finishedAt: Double?
    public var deadlineSeconds: Double?
    public var pendingReason: String?
    public var failureClass: String?
    public var result: JSONValue?
    public var errors: JSONValue?
    /// Names of the batch file entries this job waits on (`after:`); read by the operator's listing only.
    public var after: [String] = []
    /// IDs of the unfinished jobs this job waits on; set only on upcoming jobs (`JobStore.upcomingRows`).
    public var waitsOn: [String] = []
    /// VRAM per GPU the router reserved for the current attempt (may exceed the request: defaults, OOM escalation).
    public var reservedBytes: UInt64?
    public var gpuModel: String?
    /// Seconds of work waiting on this job (`DependencyTails`), set at submit.
    public var tailS: Double = 0

    enum CodingKeys: String, CodingKey {
        case id, name, kind, spec, state, priority, attempt, node, result
        case batchID = "batch_id"
        case vramBytes = "vram_request_bytes"
        case gpus = "gpus_requested"
        case constraints = "placement_constraints"
        case maxAttempts = "max_attempts"
        case gpuUUIDs = "gpu_uuids"
        case streamID = "stream_id"
        case submittedAt = "submitted_at"
        case readyAt = "ready_at"
        case dispatchedAt = "dispatched_at"
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case deadlineSeconds = "deadline_s"
        case pendingReason = "pending_reason"
        case failureClass = "failure_class"
        case errors = "error"
        case after
        case reservedBytes = "reserved_bytes"
        case gpuModel = "gpu_model"
        case tailS = "tail_s"
    }

    public static let columns = """
    id, batch_id, name, kind, spec, state, priority, vram_request_bytes, gpus_requested, placement_constraints,
    attempt, max_attempts, node, gpu_uuids, stream_id,
    extract(epoch from submitted_at) AS submitted_at, extract(epoch from ready_at) AS ready_at, extract(epoch from dispatched_at) AS dispatched_at,
    extract(epoch from started_at) AS started_at, extract(epoch from finished_at) AS finished_at,
    deadline_s, pending_reason, failure_class, result, error, reserved_bytes, gpu_model, tail_s
    """

    public init(row r: PGRow) {
        id = r["id"] ?? ""
        batchID = r["batch_id"] ?? ""
        name = r["name"] ?? ""
        kind = r["kind"] ?? ""
        spec = r.json("spec") ?? .object([:])
        state = JobState(rawValue: r["state"] ?? "") ?? .pending
        priority = r.int("priority") ?? 0
        vramBytes = UInt64(r.int64("vram_request_bytes") ?? 0)
        gpus = r.int("gpus_requested") ?? 0
        constraints = r.json("placement_constraints") ?? .object([:])
        attempt = r.int("attempt") ?? 0
        maxAttempts = r.int("max_attempts") ?? 3
        node = r["node"]
        gpuUUIDs = r.textArray("gpu_uuids")
        streamID = r["stream_id"]
        submittedAt = r.double("submitted_at") ?? 0
        readyAt = r.double("ready_at")
        dispatchedAt = r.double("dispatched_at")
        startedAt = r.double("started_at")
        finishedAt = r.double("finished_at")
        deadlineSeconds = r.double("deadline_s")
        pendingReason = r["pending_reason"]
        failureClass = r["failure_class"]
        result = r.json("result")
        errors = r.json("error")
        after = r.json("after")?.arrayValue?.compactMap(\.stringValue) ?? []
        reservedBytes = r.int64("reserved_bytes").map { UInt64($0) }
        gpuModel = r["gpu_model"]
        tailS = r.double("tail_s") ?? 0
    }
    public init(id: String, batchID: String, name: String, kind: String, spec: JSONValue, state: JobState, priority: Int, vramBytes: UInt64, gpus: Int, constraints: JSONValue, attempt: Int, maxAttempts: Int, node: String? = nil, gpuUUIDs: [String], streamID: String? = nil, submittedAt: Double, dispatchedAt: Double? = nil, startedAt: Double? = nil, finishedAt: Double? = nil, deadlineSeconds: Double? = nil, pendingReason: String? = nil, failureClass: String? = nil, result: JSONValue? = nil, errors: JSONValue? = nil, after: [String] = [], reservedBytes: UInt64? = nil, gpuModel: String? = nil) {
        self.id = id; self.batchID = batchID; self.name = name; self.kind = kind; self.spec = spec; self.state = state; self.priority = priority; self.vramBytes = vramBytes; self.gpus = gpus; self.constraints = constraints; self.attempt = attempt; self.maxAttempts = maxAttempts; self.node = node; self.gpuUUIDs = gpuUUIDs; self.streamID = streamID; self.submittedAt = submittedAt; self.dispatchedAt = dispatchedAt; self.startedAt = startedAt; self.finishedAt = finishedAt; self.deadlineSeconds = deadlineSeconds; self.pendingReason = pendingReason; self.failureClass = failureClass; self.result = result; self.errors = errors; self.after = after; self.reservedBytes = reservedBytes; self.gpuModel = gpuModel
    }
}

/// A node as the coordinator last saw it.
public struct NodeRow: Sendable, Equatable, Codable {
    public var name: String
    public var lastSeen: Double?
    public var up: Bool
    public var draining: Bool
    public var agentVersion: String?
    public var inventory: Inventory
    public var running: [String]
    /// The command templates the node's agent last said it runs (one template's elements each);
    /// nil: it never said (an agent from before it was sent).
    public var commands: [[String]]?
    /// How old the agent's GPU reading was at its last heartbeat (seconds; nil: it does not say).
    public var gpuSampleAgeS: Double?

    /// The reading's age when it is too old for the router to place GPU jobs by (the coordinator's
    /// default threshold) on an up node with GPUs; nil otherwise. What `hydra nodes` and the console mark.
    public var staleGPUReadingS: Double? {
        guard up, !inventory.gpus.isEmpty, let age = gpuSampleAgeS, age > HeartbeatMessage.staleSampleSeconds else { return nil }
        return age
    }

    public init(name: String, lastSeen: Double?, up: Bool, draining: Bool, agentVersion: String?, inventory: Inventory, running: [String],
                commands: [[String]]? = nil, gpuSampleAgeS: Double? = nil) {
        self.name = name; self.lastSeen = lastSeen; self.up = up; self.draining = draining
        self.agentVersion = agentVersion; self.inventory = inventory; self.running = running; self.commands = commands
        self.gpuSampleAgeS = gpuSampleAgeS
    }

    enum CodingKeys: String, CodingKey {
        case name, up, draining, inventory, running, commands
        case lastSeen = "last_seen"
        case agentVersion = "agent_version"
        case gpuSampleAgeS = "gpu_sample_age_s"
    }
}

/// Counts of a batch's jobs by state.
public struct BatchSummary: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var submittedAt: Double
    public var priority: Int
    public var total: Int
    public var byState: [String: Int]

    enum CodingKeys: String, CodingKey {
        case id, name, priority, total
        case submittedAt = "submitted_at"
        case byState = "by_state"
    }

    public func count(_ s: JobState) -> Int { byState[s.rawValue] ?? 0 }
    public var finished: Int { JobState.allCases.filter(\.isTerminal).reduce(0) { $0 + count($1) } }
    public var isDone: Bool { finished == total }
    /// Jobs that are neither finished nor anywhere in the pipeline: should always be 0.
    public var lost: Int { total - byState.values.reduce(0, +) }
    public var failed: Int { count(.failed) + count(.dead) }

    /// `60 jobs, 60 succeeded, 0 failed, 0 lost` — the demo's last line.
    public var summaryLine: String {
        var s = "\(total) jobs, \(count(.succeeded)) succeeded, \(failed) failed, \(unfinishedOrLost) lost"
        if count(.cancelled) > 0 { s += ", \(count(.cancelled)) cancelled" }
        return s
    }

    /// When the batch is over, anything not in a terminal state is lost; before that, only missing rows are.
    var unfinishedOrLost: Int { lost }
}
