import Foundation
import HydraCore

/// One row of job_events, as the accounting needs it.
public struct ChaosEvent: Sendable, Equatable {
    public var jobID: String
    public var attempt: Int
    public var from: String?
    public var to: String
    public var at: Double
    public var detail: JSONValue?
    public init(jobID: String, attempt: Int, from: String?, to: String, at: Double, detail: JSONValue?) {
        self.jobID = jobID; self.attempt = attempt; self.from = from; self.to = to; self.at = at; self.detail = detail
    }
}

/// A fault as it happened: when it began and which nodes it hit (nil = all of them).
public struct ChaosFaultRecord: Sendable, Equatable {
    public var fault: ChaosFault
    public var nodes: [String]?
    public var start: Double
    public var end: Double
    public init(fault: ChaosFault, nodes: [String]?, start: Double, end: Double) {
        self.fault = fault; self.nodes = nodes; self.start = start; self.end = end
    }
}

public struct ChaosReport: Sendable, Equatable, Codable {
    public var submitted: Int
    public var succeeded: Int
    public var lost: Int
    public var duplicated: Int
    public var dead: Int
    public var failed: Int
    /// Jobs that became lost and were dispatched again.
    public var requeues: Int
    public var maxRequeueSeconds: Double
    /// The fault the longest requeue is counted from (nil: from the loss itself).
    public var maxRequeueCause: String?
    public var faults: [String: Int]
    public var lostJobs: [String]
    public var duplicatedAttempts: [String]

    public var ok: Bool { lost == 0 && duplicated == 0 }

    /// The run's last line (its format is relied on by scripts and docs).
    public var line: String {
        "chaos: submitted=\(submitted) succeeded=\(succeeded) lost=\(lost) duplicated=\(duplicated) dead=\(dead) max_requeue_s=\(String(format: "%.1f", maxRequeueSeconds))"
    }

    enum CodingKeys: String, CodingKey {
        case submitted, succeeded, lost, duplicated, dead, failed, requeues, faults
        case maxRequeueSeconds = "max_requeue_s", maxRequeueCause = "max_requeue_cause", lostJobs = "lost_jobs", duplicatedAttempts = "duplicated_attempts"
    }
}

/// The end-of-run accounting, from the database rows, the job events and the marker files alone.
public enum ChaosAccounting {
    /// - states: every job of the run, id → final state.
    /// - markers: file names in the marker directory (`<job>.<attempt>` and `<job>.<attempt>.dup.<x>`).
    public static func report(submitted: Int, states: [String: String], events: [ChaosEvent], markers: [String],
                              faults: [ChaosFaultRecord]) -> ChaosReport {
        let succeeded = states.values.filter { $0 == "succeeded" }.count
        let dead = states.values.filter { $0 == "dead" }.count
        let failed = states.values.filter { $0 == "failed" }.count
        // Lost: anything not in a final state, and any submitted job that is not there at all.
        let lostIDs = states.filter { !["succeeded", "dead", "failed"].contains($0.value) }.keys.sorted()
        let missing = max(0, submitted - states.count)

        var dups = Set<String>()
        for m in markers {
            guard let r = m.range(of: ".dup.") else { continue }
            dups.insert(String(m[..<r.lowerBound]))
        }

        let (requeues, maxRequeue, cause) = requeueTimes(events: events, faults: faults)
        var kinds: [String: Int] = [:]
        for f in faults { kinds[f.fault.kind, default: 0] += 1 }
        return ChaosReport(submitted: submitted, succeeded: succeeded, lost: lostIDs.count + missing, duplicated: dups.count,
                           dead: dead, failed: failed, requeues: requeues, maxRequeueSeconds: maxRequeue,
                           maxRequeueCause: cause, faults: kinds,
                           lostJobs: Array(lostIDs.prefix(20)), duplicatedAttempts: dups.sorted().prefix(20).map { $0 })
    }

    /// Whether an event is a job being given up on its node because the node (or its messages) went away.
    static func isLoss(_ e: ChaosEvent) -> Bool {
        guard e.from == "dispatched" || e.from == "running" || e.from == "placed" else { return false }
        guard ["pending", "retry_wait", "dead"].contains(e.to) else { return false }
        if e.detail?["event"]?.stringValue == "lease_expired" { return true }
        return e.detail?["failure_class"]?.stringValue == "lost"
    }

    /// For every loss: from the moment the job's node died or was cut off (the latest fault on
    /// that node that began while the job was there; the loss itself when no fault explains it)
    /// to the job's next dispatch. Returns how many, the longest in seconds, and the fault it counts from.
    static func requeueTimes(events: [ChaosEvent], faults: [ChaosFaultRecord]) -> (Int, Double, String?) {
        var byJob: [String: [ChaosEvent]] = [:]
        for e in events { byJob[e.jobID, default: []].append(e) }
        var count = 0
        var longest = 0.0
        var longestCause: String?
        for (_, evs0) in byJob {
            let evs = evs0.sorted { $0.at < $1.at }
            for (i, e) in evs.enumerated() where isLoss(e) {
                guard let next = evs[(i + 1)...].first(where: { $0.to == "dispatched" && $0.attempt > e.attempt }) else { continue }
                let dispatch = evs[..<i].last { $0.to == "dispatched" && $0.attempt == e.attempt }
                let node = dispatch?.detail?["node"]?.stringValue
                let placedAt = dispatch?.at ?? -Double.infinity
                let cause = faults.filter { f in
                    f.start <= e.at && f.start >= e.at - 120 && (f.nodes == nil || node.map { f.nodes!.contains($0) } == true)
                }.max { $0.start < $1.start }
                let origin = cause.map { max($0.start, placedAt) } ?? e.at
                count += 1
                if next.at - origin > longest {
                    longest = next.at - origin
                    longestCause = cause.map(\.fault.description)
                }
            }
        }
        return (count, longest, longestCause)
    }
}
