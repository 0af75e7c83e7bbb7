import Foundation

/// Plan-ahead execution, in the simulator only (`hydra simulate --plan-ahead`): the batch jobs
/// follow a plan of everything submitted instead of the router's pass, which decides one pass
/// at a time. A measurement of what planning would give the coordinator, not yet a policy it has.
///
/// The plan is `OfflinePlan`'s list scheduling on what the coordinator knows: the jobs submitted
/// so far with their dependencies, runtimes from their specs (no jitter), running jobs until
/// their expected ends (at least a second more), residents until they leave. It knows peaks as
/// the router does after one out-of-memory failure. Its list order is searched (`firstOrders`
/// list orders at the first pass, `orders` more from the current order every `everyS` seconds);
/// every pass re-plans with that order from the state of the moment and starts the pending jobs
/// the plan starts now, on the GPUs (or CPU slot) it gives them, when their VRAM request fits
/// there. Interactive jobs (at or above the urgent priority) still go through the router.
public struct PlanAhead: Sendable, Equatable {
    /// Its row in `hydra simulate` reports and sweeps.
    public static let rowName = "plan-ahead"
    public var firstOrders = 3000
    public var everyS = 300.0
    public var orders = 300
    public init() {}
}

/// What plan-ahead execution keeps between passes.
struct PlanAheadState {
    struct RunningJob {
        var job: Int
        var node: Int
        /// GPU UUIDs (empty: a CPU job).
        var gpus: [String]
        var startedAt: Double
        var expectedRuntime: Double
    }

    /// A job the plan starts now: its GPUs by UUID (empty: a CPU slot of `node`).
    struct Start {
        var job: Int
        var node: Int
        var gpus: [String]
        var expectedRuntime: Double
    }

    let config: PlanAhead
    let inst: OfflinePlan.Instance
    let urgentPriority: Int
    let seed: UInt64
    let longestPathRank: [Int]
    var rank: [Int]
    var order: [Int] = []
    var lastSearch = -Double.infinity
    var uuidOfSlot: [Int: String] = [:]
    var cpuNode: [Int: Int] = [:]
    var searches = 0

    init(config: PlanAhead, jobs: [Simulator.SimJob], workload: Workload, snapshot: ClusterSnapshot, urgentPriority: Int, seed: UInt64) {
        // What the coordinator knows: the spec's runtimes, not the jitter.
        var known = jobs
        for j in known.indices {
            known[j].baseS = known[j].job.spec["base_runtime_s"]?.doubleValue
            known[j].fixedS = known[j].job.spec["duration_s"]?.doubleValue
        }
        let inst = OfflinePlan.Instance(workload: workload, jobs: known, snapshot: snapshot)
        self.config = config; self.inst = inst; self.urgentPriority = urgentPriority; self.seed = seed
        let byPath = inst.longestPathFirst(Array(jobs.indices))
        var r = [Int](repeating: 0, count: jobs.count)
        for (i, j) in byPath.enumerated() { r[j] = i }
        longestPathRank = r
        rank = r
        for (uuid, s) in inst.slotOfUUID { uuidOfSlot[s] = uuid }
        for (ni, ms) in inst.cpuMachines.enumerated() { for m in ms { cpuNode[m] = ni } }
    }

    /// Re-plans from now; returns the pending jobs the plan starts now. The rest of `pending`
    /// waits, except what the plan does not take (interactive jobs, jobs no resource fits), which
    /// the caller gives the router.
    mutating func pass(now: Double, jobs: [Simulator.SimJob], pending: [Int], running: [RunningJob]) -> (starts: [Start], routed: [Int]) {
        var include = [Bool](repeating: false, count: jobs.count)
        var pre: [Int: OfflinePlan.Placement] = [:]
        var cpuNext: [Int: Int] = [:]
        for r in running where jobs[r.job].job.priority < urgentPriority {
            var res: [Int]
            if r.gpus.isEmpty {
                let m = inst.cpuMachines[r.node], k = cpuNext[r.node, default: 0]
                guard k < m.count else { continue }
                res = [m[k]]; cpuNext[r.node] = k + 1
            } else {
                res = r.gpus.compactMap { inst.slotOfUUID[$0] }
            }
            pre[r.job] = .init(start: r.startedAt, end: max(now + 1, r.startedAt + r.expectedRuntime), resources: res)
        }
        // Submitted batch jobs that some resource takes, whose dependencies are done, running or planned too.
        for j in jobs.indices where jobs[j].finishedAt == nil && pre[j] == nil && inst.facts[j] != nil
            && jobs[j].submitAt <= now && jobs[j].job.priority < urgentPriority {
            include[j] = jobs[j].deps.allSatisfy { jobs[$0].finishedAt != nil || pre[$0] != nil || include[$0] }
        }
        if now >= lastSearch + config.everyS {
            let first = lastSearch == -.infinity
            lastSearch = now
            let current = jobs.indices.filter { include[$0] }.sorted { rank[$0] < rank[$1] }
            let found = OfflinePlan.search(inst, startTimes: nil, evaluations: first ? config.firstOrders : config.orders,
                                           seed: seed &+ UInt64(searches), include: include, preplaced: pre, now: now,
                                           startOrder: first ? nil : current)
            searches += 1
            order = found.order
            rank = longestPathRank.map { $0 + jobs.count }
            for (i, j) in order.enumerated() { rank[j] = i }
        }
        let plan = OfflinePlan.schedule(inst, rank: rank, include: include, preplaced: pre, now: now)
        var starts: [Start] = []
        for j in pending where include[j] {
            guard let p = plan.placements[j], p.start <= now + 1e-6 else { continue }
            if inst.facts[j]!.cpu {
                starts.append(Start(job: j, node: cpuNode[p.resources[0]]!, gpus: [], expectedRuntime: p.end - p.start))
            } else {
                starts.append(Start(job: j, node: inst.nodeOfSlot[p.resources[0]], gpus: p.resources.map { uuidOfSlot[$0]! },
                                    expectedRuntime: p.end - p.start))
            }
        }
        return (starts, pending.filter { !include[$0] })
    }
}
