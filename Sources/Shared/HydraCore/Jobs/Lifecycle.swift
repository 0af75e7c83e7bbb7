import Foundation

/// What can happen to a job. The coordinator turns Redis messages, timers and
/// operator commands into these and asks `JobLifecycle` what follows.
public enum JobEvent: Sendable, Equatable {
    case placed
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

/// The job state machine, as a pure function.
public enum JobLifecycle {
    /// The next state, or nil when the event does not apply in `state` (a duplicate
    /// or late message): the caller then changes nothing.
    public static func next(_ state: JobState, _ event: JobEvent, attempt: Int, maxAttempts: Int,
                            policy: RetryPolicy = RetryPolicy(), random: Double = 0.5) -> (state: JobState, retryAfter: Double?)? {
        switch (state, event) {
        case (.pending, .placed): return (.placed, nil)
        case (.pending, .dispatched), (.placed, .dispatched): return (.dispatched, nil)
        case (.placed, .lost): return (.pending, nil)
        case (.dispatched, .started): return (.running, nil)
        case (.dispatched, .succeeded), (.running, .succeeded): return (.succeeded, nil)
        case (.dispatched, .failed(let c)), (.running, .failed(let c)):
            return failure(c, attempt: attempt, maxAttempts: maxAttempts, policy: policy, random: random)
        case (.dispatched, .lost), (.running, .lost):
            return failure(.lost, attempt: attempt, maxAttempts: maxAttempts, policy: policy, random: random)
        case (.dispatched, .released), (.running, .released): return (.pending, nil)
        case (.retryWait, .backoffElapsed): return (.pending, nil)
        case (let s, .cancelRequested) where !s.isTerminal: return (.cancelled, nil)
        case (.failed, .retryRequested), (.dead, .retryRequested), (.cancelled, .retryRequested): return (.pending, nil)
        default: return nil
        }
    }

    static func failure(_ c: FailureClass, attempt: Int, maxAttempts: Int, policy: RetryPolicy, random: Double) -> (JobState, Double?) {
        switch policy.decide(c, attempt: attempt, maxAttempts: maxAttempts, random: random) {
        case .giveUp(let s): return (s, nil)
        case .retry(let after): return after <= 0 ? (.pending, nil) : (.retryWait, after)
        }
    }
}
