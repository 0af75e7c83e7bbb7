import Foundation
import HydraCore
import HydraWire

/// The pure half of applying agents' results: what the state machine makes of a batch of results
/// against the jobs' rows as read. `JobStore.apply` reads the rows, folds, and writes the changes
/// with one guarded UPDATE and the event rows; nothing here touches PostgreSQL.
public enum ResultFolder {
    /// A job's row as read before the fold.
    public struct Row: Sendable, Equatable {
        public var state: JobState
        public var attempt: Int
        public var maxAttempts: Int
        public var node: String?
        public var streamID: String?
        public var kind: String
        public var gpuUUIDs: [String] = []
        public var submittedAt: Double?
        public var modelKey: String = ""
        public var gpuModel: String = "cpu"
    }

    /// The net change of one job over all its results in this batch (one row of the UPDATE).
    public struct Change: Sendable, Equatable {
        public var from: JobState
        public var attempt: Int
        public var to: JobState
        public var startedAt: Double?
        public var startedForce = false
        public var result: String?
        public var errors: [JSONValue] = []
        public var failureClass: String?
        public var finished = false
        public var maxBump = 0
        public var clearNode = false
        public var backoff: Double?
    }

    public struct Folded: Sendable {
        /// Jobs in the order their first result came.
        public var order: [String] = []
        public var changes: [String: Change] = [:]
        public var applied: [AppliedTransition] = []
        public var events: [JobEventRow] = []
        public var samples: [RuntimeSample] = []
    }

    /// All results of one job in order (e.g. `started` then `succeeded`) fold into one change. A
    /// result for another attempt, or from another node than the one the attempt was sent to, is
    /// fenced off; one the machine has no transition for (a duplicate, a late message) changes nothing.
    public static func fold(_ results: [AttemptResult], current rows: [String: Row], policy: RetryPolicy,
                            random: () -> Double, now: Double) throws -> Folded {
        var current = rows
        var changes: [String: Change] = [:]
        var order: [String] = []
        var applied: [AppliedTransition] = []
        var events: [JobEventRow] = []
        var samples: [RuntimeSample] = []
        for raw in results {
            let res = raw.storable()
            // Fencing: only the current attempt, and only from the node it was sent to.
            guard var cur = current[res.jobID], cur.attempt == res.attempt, cur.node == nil || cur.node == res.node else { continue }
            let event: JobEvent
            switch res.outcome {
            case .started: event = .started
            case .succeeded: event = .succeeded
            case .failed: event = .failed(res.failureClass ?? .transient)
            case .released: event = .released
            }
            guard let t = JobStateMachine.transition(cur.state, event, attempt: cur.attempt, maxAttempts: cur.maxAttempts,
                                                     policy: policy, random: random()) else { continue }
            let next = t.to
            let detail = try JSONValue.object([
                "node": .string(res.node), "outcome": .string(res.outcome.rawValue),
                "failure_class": res.failureClass.map { .string($0.rawValue) } ?? .null,
                "error": res.error.map { .string($0) } ?? .null,
            ]).serialized()
            var c = changes[res.jobID] ?? { order.append(res.jobID); return Change(from: cur.state, attempt: cur.attempt, to: cur.state) }()
            c.to = next
            switch res.outcome {
            case .started:
                c.startedAt = res.startedAt ?? now
                c.startedForce = true
            case .succeeded:
                let result = JSONValue.object([
                    "output": res.result ?? .null, "duration_s": res.durationSeconds.map { .number($0) } ?? .null,
                    "peak_vram_bytes": res.peakVRAMBytes.map { .number(Double($0)) } ?? .null, "node": .string(res.node),
                ])
                c.result = try JobStore.cappedResult(result)
                if let d = res.durationSeconds, d.isFinite {
                    samples.append(RuntimeSample(jobID: res.jobID, kind: cur.kind, modelKey: cur.modelKey, gpuModel: cur.gpuModel,
                                                 seconds: d, peakVRAMBytes: res.peakVRAMBytes))
                }
                if !c.startedForce, let s = res.startedAt { c.startedAt = s }
            case .failed:
                c.errors.append(.object([
                    "attempt": .number(Double(cur.attempt)), "class": .string((res.failureClass ?? .transient).rawValue),
                    "message": .string(res.error ?? ""), "node": .string(res.node),
                    "at": .number(now),
                ]))
                c.failureClass = (res.failureClass ?? .transient).rawValue
            case .released: break
            }
            // The effects of the machine's transition, as columns of the one UPDATE below.
            if t.effects.contains(.finish) { c.finished = true }
            if t.effects.contains(.leaveNode) { c.clearNode = true }
            if t.effects.contains(.refundAttempt) { c.maxBump += 1 }
            if t.effects.contains(.backoff), let after = t.retryAfter { c.backoff = after }
            changes[res.jobID] = c
            let ended: Double? = res.outcome == .started ? nil
                : res.finishedAt ?? res.startedAt.flatMap { s in res.durationSeconds.map { s + $0 } } ?? now
            applied.append(AppliedTransition(jobID: res.jobID, attempt: cur.attempt, from: cur.state, to: next,
                                             node: cur.node, streamID: cur.streamID, kind: cur.kind,
                                             gpuUUIDs: cur.gpuUUIDs, submittedAt: cur.submittedAt,
                                             startedAt: res.startedAt, endedAt: ended))
            events.append(JobEventRow(jobID: res.jobID, attempt: cur.attempt, from: cur.state, to: next, detail: detail))
            cur.state = next
            if t.effects.contains(.refundAttempt) { cur.maxAttempts += 1 }
            current[res.jobID] = cur
        }
        return Folded(order: order, changes: changes, applied: applied, events: events, samples: samples)
    }
}
