import Foundation
import HydraCore
import HydraCore

/// The message the coordinator puts on `hydra:node:<node>:jobs`.
public struct Envelope: Codable, Sendable, Equatable {
    public var v: Int
    public var jobID: String
    public var attempt: Int
    public var kind: String
    public var spec: JSONValue
    public var gpuUUIDs: [String]
    public var vramBytes: UInt64
    /// Seconds since 1970 after which the agent must stop the job (nil = no deadline).
    public var deadline: Double?
    public var issuedAt: Double
    /// Seconds since 1970 after which an agent refuses the envelope (a stale message).
    public var expiresAt: Double?
    /// The node the envelope is for, inside the signed body: an agent refuses one for another node,
    /// so an envelope copied onto another stream cannot run there.
    public var node: String?

    public init(v: Int = 1, jobID: String, attempt: Int, kind: String, spec: JSONValue, gpuUUIDs: [String],
                vramBytes: UInt64, deadline: Double?, issuedAt: Double, expiresAt: Double? = nil, node: String? = nil) {
        self.v = v; self.jobID = jobID; self.attempt = attempt; self.kind = kind; self.spec = spec
        self.gpuUUIDs = gpuUUIDs; self.vramBytes = vramBytes; self.deadline = deadline; self.issuedAt = issuedAt
        self.expiresAt = expiresAt; self.node = node
    }

    enum CodingKeys: String, CodingKey {
        case v
        case jobID = "job_id"
        case attempt, kind, spec
        case gpuUUIDs = "gpu_uuids"
        case vramBytes = "vram_bytes"
        case deadline
        case issuedAt = "issued_at"
        case expiresAt = "expires_at"
        case node
    }
}

/// How an attempt ended, as reported by the agent on its `hydra:node:<node>:results`.
public enum AttemptOutcome: String, Codable, Sendable {
    case succeeded
    case failed
    /// The agent started the job but was shut down before it finished; the job
    /// goes back to pending without using up an attempt.
    case released
    /// The agent read the envelope and started it (sent once, before the work).
    case started
}

/// The message an agent puts on `hydra:node:<node>:results` (signed: `ResultMessage`).
public struct AttemptResult: Codable, Sendable, Equatable {
    public var jobID: String
    public var attempt: Int
    public var node: String
    public var outcome: AttemptOutcome
    public var failureClass: FailureClass?
    public var error: String?
    public var result: JSONValue?
    public var startedAt: Double?
    public var finishedAt: Double?
    public var durationSeconds: Double?
    public var peakVRAMBytes: UInt64?

    public init(jobID: String, attempt: Int, node: String, outcome: AttemptOutcome, failureClass: FailureClass? = nil,
                error: String? = nil, result: JSONValue? = nil, startedAt: Double? = nil, finishedAt: Double? = nil,
                durationSeconds: Double? = nil, peakVRAMBytes: UInt64? = nil) {
        self.jobID = jobID; self.attempt = attempt; self.node = node; self.outcome = outcome
        self.failureClass = failureClass; self.error = error; self.result = result; self.startedAt = startedAt
        self.finishedAt = finishedAt; self.durationSeconds = durationSeconds; self.peakVRAMBytes = peakVRAMBytes
    }

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id"
        case attempt, node, outcome
        case failureClass = "failure_class"
        case error, result
        case startedAt = "started_at"
        case finishedAt = "finished_at"
        case durationSeconds = "duration_s"
        case peakVRAMBytes = "peak_vram_bytes"
    }
}
