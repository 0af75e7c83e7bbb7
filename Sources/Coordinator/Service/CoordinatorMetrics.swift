import Foundation
import HydraCore
import HydraWire
import HydraIO
import HydraStore

/// The coordinator's Prometheus series (names and meanings in docs/operations.md, "Metrics").
/// Every labelled counter starts at 0 for each label value it can take: `increase()` over a series
/// that appears with its first event sees no increase, so the first dead job would alert nobody.
public struct CoordinatorMetrics: Sendable {
    public let registry = MetricsRegistry()

    /// PendingReason.Code's values: a fixed set, so the label stays bounded and every class can start at 0.
    static let pendingReasons = ["unschedulable", "waiting_for_node", "insufficient_vram", "waiting_for_better_gpu",
                                 "held_for_other_job", "waiting_for_cpu_slot"]
    /// The job's state after an attempt ended, as hydra_jobs_finished_total's `state`.
    static let endStates: [JobState] = [.succeeded, .failed, .cancelled, .dead, .retryWait]

    init() {
        let r = registry
        r.register("hydra_coordinator_leader", .gauge, help: "1 while this coordinator leads.")
        r.register("hydra_jobs", .gauge,
                   help: "Jobs stored in PostgreSQL by state: every job not yet purged, finished ones included (a total, not a rate).",
                   labels: ["state"])
        r.register("hydra_placements_total", .counter, help: "Jobs placed and dispatched.")
        r.register("hydra_dispatch_latency_seconds", .histogram,
                   help: "Time from dispatch (coordinator clock) to the job starting on its node (agent clock).",
                   buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        r.register("hydra_dispatch_gap_seconds", .histogram,
                   help: "Time from a job's end on a GPU to the next job starting there, when that job was already waiting (agent clock).",
                   buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
        r.register("hydra_router_pass_duration_seconds", .histogram, help: "Duration of placement passes.",
                   buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1])
        r.register("hydra_queue_depth", .gauge, help: "Jobs dispatched to the node and not yet started there.", labels: ["node"])
        r.register("hydra_node_up", .gauge, help: "1 when the node's heartbeat is live.", labels: ["node"])
        r.register("hydra_jobs_finished_total", .counter,
                   help: "Attempts ended, by kind, the job's state afterwards (retry_wait: failed, will retry) and failure class (none on success).",
                   labels: ["kind", "state", "failure_class"])
        r.register("hydra_jobs_lost_total", .counter, help: "Jobs whose node went silent or whose lease ran out, requeued or given up.")
        r.register("hydra_pending_jobs", .gauge,
                   help: "Pending jobs the last placement pass could not place, by reason class (the first placement batch in queue order).",
                   labels: ["reason"])
        r.register("hydra_messages_rejected_total", .counter, help: "Results and heartbeats refused (unsigned, forged, for another node, unreadable).",
                   labels: ["source", "reason"])
        r.register("hydra_results_quarantined_total", .counter, help: "Verified results that could not be stored: their job failed with class bad_result.")
        r.register("hydra_placements_deferred_total", .counter, help: "Placements held back because the node already holds as many jobs as its agent reads ahead.")
        r.set("hydra_coordinator_leader", [], 0)
        r.add("hydra_placements_total", [], 0)
        r.add("hydra_jobs_lost_total", [], 0)
        r.add("hydra_results_quarantined_total", [], 0)
        r.add("hydra_placements_deferred_total", [], 0)
        r.register("hydra_node_undispatchable", .gauge,
                   help: "1 while nothing is dispatched to the node because its job stream takes no entry (reason: stream_id_exhausted, not_a_stream).",
                   labels: ["node", "reason"])
        r.register("hydra_cancels_unsent_total", .counter,
                   help: "Cancels Redis refused on the node's job stream (not a stream, ids used up); each is sent again until it is taken.",
                   labels: ["node"])
        r.register("hydra_node_gpu_sample_age_seconds", .gauge,
                   help: "Age of the GPU reading in the node's last heartbeat; above 30 s no GPU job is placed there.",
                   labels: ["node"])
        r.register("hydra_result_stream_faults_total", .counter,
                   help: "Times a node's results stream could not be read (not a stream, deleted, group gone) and was left out for a while.",
                   labels: ["node", "reason"])
        for source in ["result", "heartbeat"] {
            for reason in MessageRejection.allCases.map(\.rawValue) { r.add("hydra_messages_rejected_total", [source, reason], 0) }
        }
        r.add("hydra_messages_rejected_total", ["heartbeat", ImplausibleHeartbeat.reason], 0)
        for kind in JobKind.allCases.map(\.rawValue) {
            for s in Self.endStates {
                for c in Self.failureClasses(for: s) { r.add("hydra_jobs_finished_total", [kind, s.rawValue, c], 0) }
            }
        }
        for reason in Self.pendingReasons { r.set("hydra_pending_jobs", [reason], 0) }
    }

    static func failureClasses(for s: JobState) -> [String] {
        switch s {
        case .failed, .dead, .retryWait: return FailureClass.allCases.map(\.rawValue)
        default: return ["none"]
        }
    }

    /// Results applied: dispatch latency for jobs seen starting, and one count per ended attempt.
    /// `dispatchedAt` is read from the leader's view before the transitions remove the jobs from it.
    func applied(_ transitions: [AppliedTransition], results: [AttemptResult], dispatchedAt: [String: Double]) {
        var classes: [String: FailureClass] = [:]
        for r in results { if let c = r.failureClass { classes["\(r.jobID)/\(r.attempt)"] = c } }
        for t in transitions {
            if t.from == .dispatched, let s = t.startedAt, let d = dispatchedAt[t.jobID] {
                registry.observe("hydra_dispatch_latency_seconds", [], max(0, s - d))
            }
            guard Self.endStates.contains(t.to) else { continue }
            let c: String
            if t.to == .succeeded || t.to == .cancelled { c = "none" } else { c = classes["\(t.jobID)/\(t.attempt)"]?.rawValue ?? "transient" }
            registry.add("hydra_jobs_finished_total", [t.kind, t.to.rawValue, c])
        }
    }

    func lost(_ transitions: [AppliedTransition]) {
        registry.add("hydra_jobs_lost_total", [], Double(transitions.count))
        for t in transitions where t.to == .dead || t.to == .retryWait {
            registry.add("hydra_jobs_finished_total", [t.kind, t.to.rawValue, FailureClass.lost.rawValue])
        }
    }

    func routerPass(seconds: Double, pending: [PendingReason]) {
        registry.observe("hydra_router_pass_duration_seconds", [], seconds)
        pendingClasses(pending)
    }

    /// Every class is set, 0 included, so that a class that cleared does not keep its last count.
    func pendingClasses(_ pending: [PendingReason]) {
        var n: [String: Int] = [:]
        for p in pending { n[p.code.rawValue, default: 0] += 1 }
        for reason in Self.pendingReasons { registry.set("hydra_pending_jobs", [reason], Double(n[reason] ?? 0)) }
    }

    /// Node gauges from the node rows and the leader's view of jobs on nodes; a node with nothing
    /// waiting reads 0 instead of keeping the count of its last dispatch.
    func nodes(_ rows: [NodeRow], active: [JobRow]) {
        var waiting: [String: Int] = [:]
        for j in active where j.state == .dispatched { if let n = j.node { waiting[n, default: 0] += 1 } }
        registry.reset("hydra_node_up")
        registry.reset("hydra_queue_depth")
        for r in rows {
            registry.set("hydra_node_up", [r.name], r.up ? 1 : 0)
            registry.set("hydra_queue_depth", [r.name], Double(waiting[r.name] ?? 0))
        }
        for (n, c) in waiting where !rows.contains(where: { $0.name == n }) { registry.set("hydra_queue_depth", [n], Double(c)) }
    }

    /// /metrics: the registry plus build and process series read now.
    public func render() -> String { registry.render() + ProcessMetrics.render(program: "hydra", version: hydraVersion) }
}
