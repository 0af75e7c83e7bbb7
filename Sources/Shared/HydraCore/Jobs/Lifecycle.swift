import Foundation

/// What can happen to a job. The coordinator turns Redis messages, timers and
/// operator commands into these and asks `JobStateMachine` what follows.
public enum JobEvent: Sendable, Equatable, Hashable {
    case submitted
    case dispatched
    case started
    case succeeded
    case failed(FailureClass)
    /// The agent gave the job back unfinished (graceful shutdown): no attempt is used up.
    case released
    /// The job's node died or its lease ran out.
    case lost
    case cancelRequested
    case retryRequested
    case backoffElapsed
    /// A job it depends on ended without success.
    case dependencyFailed
    /// The overnight pipeline reached its deadline: jobs that did not start are carried to the next night.
    case carried
    /// Its result could not be stored (quarantined on the dead-letter stream).
    case resultQuarantined

    /// The name in `job_events.detail.event`.
    public var name: String {
        switch self {
        case .submitted: return "submitted"
        case .dispatched: return "dispatched"
        case .started: return "started"
        case .succeeded: return "succeeded"
        case .failed: return "failed"
        case .released: return "released"
        case .lost: return "lease_expired"
        case .cancelRequested: return "cancel_requested"
        case .retryRequested: return "retry_requested"
        case .backoffElapsed: return "backoff_elapsed"
        case .dependencyFailed: return "dependency_failed"
        case .carried: return "pipeline_deadline"
        case .resultQuarantined: return "result_quarantined"
        }
    }
}

/// The decision for a failed attempt.
public enum RetryDecision: Sendable, Equatable {
    case retry(afterSeconds: Double)
    case giveUp(JobState)
}

/// Exponential backoff with jitter by failure class; `permanent` never retries.
public struct RetryPolicy: Sendable, Equatable {
    public var baseDelaySeconds: Double
    public var maxDelaySeconds: Double
    /// Fraction of the delay that is random (0…1), so that a burst of failures does not retry in lockstep.
    public var jitter: Double

    public init(baseDelaySeconds: Double = 1, maxDelaySeconds: Double = 300, jitter: Double = 0.2) {
        self.baseDelaySeconds = baseDelaySeconds; self.maxDelaySeconds = maxDelaySeconds; self.jitter = jitter
    }

    /// `attempt` is the attempt that just failed (1-based); `random` in [0, 1) is injected for tests.
    public func decide(_ failure: FailureClass, attempt: Int, maxAttempts: Int, random: Double) -> RetryDecision {
        if failure == .permanent || failure == .badResult { return .giveUp(.failed) }
        if attempt >= maxAttempts { return .giveUp(.dead) }
        // A lost node says nothing about the job: go again at once, elsewhere.
        if failure == .lost { return .retry(afterSeconds: 0) }
        let exp = baseDelaySeconds * pow(2, Double(max(0, attempt - 1)))
        let capped = min(maxDelaySeconds, exp)
        let delay = capped * (1 - jitter) + capped * jitter * min(max(random, 0), 1)
        return .retry(afterSeconds: delay)
    }
}
