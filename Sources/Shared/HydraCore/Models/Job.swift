import Foundation

/// Job lifecycle states as stored in PostgreSQL (`jobs.state`).
public enum JobState: String, Codable, Sendable, CaseIterable {
    case pending, placed, dispatched, running, succeeded, failed, cancelled
    case retryWait = "retry_wait"
    case dead

    /// Terminal states never change again except through an explicit `hydra retry`.
    public var isTerminal: Bool {
        switch self {
        case .succeeded, .failed, .cancelled, .dead: return true
        default: return false
        }
    }

    /// States in which a job holds (or is about to hold) GPU resources on a node.
    public var isOnNode: Bool { self == .placed || self == .dispatched || self == .running }
}

/// Why an attempt failed; drives the retry policy.
public enum FailureClass: String, Codable, Sendable, CaseIterable {
    case oom, transient, permanent, timeout, lost
    /// The agent's result for the attempt could not be applied (quarantined on hydra:deadletter):
    /// not retried on its own, since the same job would most likely send the same result again.
    case badResult = "bad_result"
}

/// Job kinds the cluster knows. An agent that has no executor for a kind fails
/// the job as `permanent` with a message naming the kind.
public enum JobKind: String, Codable, Sendable, CaseIterable {
    case sleep, command, image, llm, tts, score
}
