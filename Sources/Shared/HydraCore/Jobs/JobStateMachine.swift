import Foundation

/// What a transition does to a job's row besides its state. `JobStateWriter` (HydraStore) turns
/// each into the same SQL wherever the transition happens, so a job that leaves its node always
/// loses its node, GPUs and lease, whichever path moved it.
public enum JobEffect: String, Sendable, Hashable, CaseIterable, Comparable {
    /// A new attempt begins (`attempt + 1`).
    case takeAttempt
    /// The job is over: `finished_at`, and no lease.
    case finish
    /// The job no longer holds a node: node, GPUs and lease cleared.
    case leaveNode
    /// It waits `retryAfter` seconds before it may run again (`not_before`).
    case backoff
    /// Any wait is over (`not_before` cleared).
    case clearBackoff
    /// The attempt does not count (a node gave the job back): `max_attempts + 1`.
    case refundAttempt
    /// An operator's retry: a fresh attempt budget.
    case freshBudget
    /// A finished job is open again (`finished_at` cleared, nothing to tell a node).
    case reopen
    /// The node that holds the attempt, if any, is told to stop it (`cancel_requests`).
    case tellNode
    /// The failure's class and an entry in the job's error log.
    case recordFailure

    public static func < (a: JobEffect, b: JobEffect) -> Bool { a.rawValue < b.rawValue }
}

/// One state change: the only thing that may change `jobs.state`.
public struct Transition: Sendable, Equatable {
    public var from: JobState
    public var to: JobState
    public var event: JobEvent
    public var effects: Set<JobEffect>
    /// With `.backoff`: seconds until the job may run again.
    public var retryAfter: Double?

    public init(from: JobState, to: JobState, event: JobEvent, effects: Set<JobEffect>, retryAfter: Double? = nil) {
        self.from = from; self.to = to; self.event = event; self.effects = effects; self.retryAfter = retryAfter
    }
}

/// The job state machine as data (in the style of postgres-nio's connection state machines): every
/// event that does not depend on a retry decision is one rule — from which states, to which state,
/// with which effects — and failures ask the `RetryPolicy`. Pure: the store's `JobStateWriter`
/// turns transitions into guarded UPDATEs and event rows, and nothing else writes a job's state.
///
/// `placed` is a state of the schema that no transition enters any more: the coordinator marks a job
/// dispatched in the same transaction that places it.
public enum JobStateMachine {
    /// A transition that does not depend on a retry decision.
    public struct Rule: Sendable, Equatable {
        public var from: [JobState]
        public var to: JobState
        public var effects: Set<JobEffect>
    }

    /// States a job can never leave except through an operator's retry.
    public static let terminal: [JobState] = JobState.allCases.filter(\.isTerminal)
    /// Terminal states other than success: what dooms the jobs that depend on one.
    public static let unsuccessful: [JobState] = terminal.filter { $0 != .succeeded }

    static let nonTerminal = JobState.allCases.filter { !$0.isTerminal }

    /// The rules, one per event; `failed` and `lost` are not here (`transition` asks the policy).
    public static func rule(_ event: JobEvent) -> Rule? {
        switch event {
        case .submitted: return Rule(from: [], to: .pending, effects: [])
        case .dispatched: return Rule(from: [.pending], to: .dispatched, effects: [.takeAttempt])
        case .started: return Rule(from: [.dispatched], to: .running, effects: [])
        case .succeeded: return Rule(from: [.dispatched, .running], to: .succeeded, effects: [.finish])
        case .released: return Rule(from: [.dispatched, .running], to: .pending, effects: [.refundAttempt, .leaveNode])
        case .backoffElapsed: return Rule(from: [.retryWait], to: .pending, effects: [.clearBackoff])
        case .cancelRequested: return Rule(from: nonTerminal, to: .cancelled, effects: [.finish, .tellNode])
        case .retryRequested:
            return Rule(from: unsuccessful, to: .pending, effects: [.freshBudget, .leaveNode, .clearBackoff, .reopen])
        case .dependencyFailed: return Rule(from: [.pending], to: .cancelled, effects: [.finish, .tellNode])
        case .carried: return Rule(from: [.pending, .retryWait], to: .cancelled, effects: [.finish, .tellNode])
        case .resultQuarantined: return Rule(from: [.dispatched, .running], to: .failed, effects: [.finish, .recordFailure])
        case .failed, .lost: return nil
        }
    }

    /// States from which `event` may move a job (for the guards of set-based writes).
    public static func sources(_ event: JobEvent) -> [JobState] {
        if let r = rule(event) { return r.from }
        switch event {
        case .failed: return [.dispatched, .running]
        case .lost: return [.dispatched, .running]
        default: return []
        }
    }

    /// What `event` does to a job in `state`, or nil when it does not apply there (a duplicate or
    /// late message): the caller then changes nothing.
    public static func transition(_ state: JobState, _ event: JobEvent, attempt: Int, maxAttempts: Int,
                                  policy: RetryPolicy = RetryPolicy(), random: Double = 0.5) -> Transition? {
        switch event {
        case .failed(let c):
            guard sources(event).contains(state) else { return nil }
            return failure(state, event, c, attempt: attempt, maxAttempts: maxAttempts, policy: policy, random: random)
        case .lost:
            guard sources(event).contains(state) else { return nil }
            return failure(state, event, .lost, attempt: attempt, maxAttempts: maxAttempts, policy: policy, random: random)
        default:
            guard let r = rule(event), r.from.contains(state) else { return nil }
            return Transition(from: state, to: r.to, event: event, effects: r.effects)
        }
    }

    static func failure(_ state: JobState, _ event: JobEvent, _ c: FailureClass, attempt: Int, maxAttempts: Int,
                        policy: RetryPolicy, random: Double) -> Transition {
        switch policy.decide(c, attempt: attempt, maxAttempts: maxAttempts, random: random) {
        case .giveUp(let s): return Transition(from: state, to: s, event: event, effects: [.recordFailure, .finish])
        case .retry(let after) where after <= 0:
            return Transition(from: state, to: .pending, event: event, effects: [.recordFailure, .leaveNode])
        case .retry(let after):
            return Transition(from: state, to: .retryWait, event: event, effects: [.recordFailure, .leaveNode, .backoff], retryAfter: after)
        }
    }

    /// `('a', 'b')` for SQL text built once (state names are fixed identifiers, never input).
    public static func sqlList(_ states: [JobState]) -> String {
        "(" + states.map { "'\($0.rawValue)'" }.joined(separator: ", ") + ")"
    }
}
