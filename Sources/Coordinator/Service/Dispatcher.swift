import Foundation
import HydraCore

/// The pure half of a placement pass: the router's decisions, then the node backpressure, then
/// which waits get a reason written. `CoordinatorService.placeAndDispatch` does the I/O around it
/// (reads the pending jobs, marks the plan's assignments dispatched, puts the envelopes on the
/// node streams); everything that decides is here and tested without PostgreSQL or Redis.
public enum Dispatcher {
    public struct Inputs: Sendable {
        public var pending: [RouterJob]
        /// Jobs about to be ready (`JobStore.upcomingRows`): never placed, their work counts on the GPUs they need.
        public var upcoming: [RouterJob] = []
        public var snapshot: ClusterSnapshot
        public var stats: RuntimeStats
        public var now: Date
        public var policy: RouterPolicy
        /// Whether this pass writes reason texts (about once a second; a pass a result triggers does not).
        public var explain: Bool
        /// Jobs each node holds now (dispatched or running).
        public var held: [String: Int]
        /// How many jobs each live node may hold (`LeaderState.nodeLimit`); a node not listed holds none.
        public var capacity: [String: Int]
        /// Reasons are written for jobs that waited at least this long, and for at most `maxReasons` jobs.
        public var reasonAfterSeconds: Double = 1
        public var maxReasons: Int = 1000

        public init(pending: [RouterJob], snapshot: ClusterSnapshot, stats: RuntimeStats, now: Date, policy: RouterPolicy,
                    explain: Bool, held: [String: Int], capacity: [String: Int]) {
            self.pending = pending; self.snapshot = snapshot; self.stats = stats; self.now = now; self.policy = policy
            self.explain = explain; self.held = held; self.capacity = capacity
        }
    }

    public struct Plan: Sendable {
        /// What the router decided (its pending reasons feed the metrics).
        public var router: PlacementResult
        /// Assignments to dispatch now, in the router's order.
        public var assignments: [Assignment]
        /// Jobs the router placed on a node that already holds as many as it may: job → why.
        public var deferred: [String: String]
        /// Reason texts to write (empty unless `explain`).
        public var reasons: [String: String]
    }

    public static func plan(_ i: Inputs) -> Plan {
        let result = Router.place(pending: i.pending, upcoming: i.upcoming, snapshot: i.snapshot, stats: i.stats, now: i.now, policy: i.policy,
                                  explain: i.explain)
        // Backpressure: a node never holds more jobs than its agent reads ahead (its heartbeat's capacity)
        // plus what it finished in the last half lease. A job queued beyond that would wait in the stream
        // longer than its lease at the node's pace, and run out while the node is healthy; it waits here
        // instead and goes wherever room frees first.
        var held = i.held
        var assignments: [Assignment] = []
        var deferred: [String: String] = [:]
        for a in result.assignments {
            let cap = i.capacity[a.node] ?? 0
            if held[a.node, default: 0] < cap {
                held[a.node, default: 0] += 1
                assignments.append(a)
            } else {
                deferred[a.jobID] = "\(a.node) already holds \(cap) jobs, as many as it reads ahead (--prefetch) and finishes in half a lease"
            }
        }
        var reasons: [String: String] = [:]
        if i.explain {
            // Each reason written is a row version; a batch of 20,000 short jobs would rewrite every row once
            // just to say "all CPU slots busy" for a fraction of a second. Reasons are for jobs that wait.
            let submitted = Dictionary(i.pending.map { ($0.id, $0.submittedAt) }, uniquingKeysWith: { a, _ in a })
            let waitedEnough = { (id: String) in submitted[id].map { i.now.timeIntervalSince($0) >= i.reasonAfterSeconds } ?? true }
            for r in result.pending where reasons.count < i.maxReasons && waitedEnough(r.jobID) { reasons[r.jobID] = r.message }
            for id in deferred.keys.sorted() where reasons.count < i.maxReasons && waitedEnough(id) { reasons[id] = deferred[id] }
        }
        return Plan(router: result, assignments: assignments, deferred: deferred, reasons: reasons)
    }
}
