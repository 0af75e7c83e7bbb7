import Foundation

/// The dispatch gap: time from a job's end on a GPU to the next job starting on it, counted
/// only when that next job was already waiting when the GPU freed up (so idle time with an
/// empty queue is not a gap). Both ends come from the agent's clock (one clock per GPU);
/// the submission time comes from PostgreSQL, which matters only for the "was waiting" test.
/// Kept in memory for metrics only; a restart just starts counting again.
public struct DispatchGapTracker: Sendable {
    private var lastEnd: [String: Double] = [:]

    public init() {}

    /// A job left `gpus` at `endedAt` (finished, failed or handed back).
    public mutating func ended(gpus: [String], at endedAt: Double) {
        for g in gpus { lastEnd[g] = max(lastEnd[g] ?? 0, endedAt) }
    }

    /// A job submitted at `submittedAt` started on `gpus` at `startedAt`: the gaps it closes.
    public mutating func started(gpus: [String], at startedAt: Double, submittedAt: Double?) -> [Double] {
        var out: [Double] = []
        for g in gpus {
            guard let e = lastEnd[g], startedAt >= e, (submittedAt ?? 0) <= e else { continue }
            out.append(startedAt - e)
            // One gap per end: a second job starting on a shared GPU did not follow this end.
            lastEnd[g] = nil
        }
        return out
    }
}
