import Foundation

/// A lower bound on the makespan of a workload that no policy can beat.
///
/// 1. Critical path: each job's earliest completion is its submit time, then the chain of its
///    dependencies, each at its fastest eligible runtime; the latest such completion.
/// 2. Capacity: a GPU delivers `weight` units of work per second (a job of base runtime B
///    needs B units per GPU it takes), a node's CPU slots one unit per slot per second. For
///    each set S of resources that some job is limited to (and each union of two such sets),
///    the jobs limited to S must all run inside S between the earliest of their earliest
///    starts and the makespan minus the shortest of their dependency tails:
///    `min start + work(S) / capacity(S) + min tail`, and the same for every later release
///    threshold and every longer tail threshold (`windowBound`).
/// 3. The same windows in resource-seconds: each job holds each of its k GPUs (or a CPU slot)
///    for at least its fastest runtime, and S has one second per GPU or slot per second. This
///    one binds where a gang pairs a fast GPU with a slow one (the weights count the fast one
///    at full speed, but the gang runs at the slow one's pace).
/// The bound ignores VRAM and sharing losses, so it is valid for every policy; it is the
/// maximum of 1–3, over the jobs that ran (a job that can never run adds nothing).
public struct LowerBound: Sendable, Equatable, Codable {
    public struct Parts: Sendable, Equatable, Codable {
        public var value: Double
        public var criticalPathS: Double
        public var capacityS: Double
        /// The resources whose capacity binds (e.g. `hydra-compute/0 RTX 5070 Ti + hydra-compute/1 RTX 3060`).
        public var bindingResources: String
        enum CodingKeys: String, CodingKey {
            case value, criticalPathS = "critical_path_s", capacityS = "capacity_s", bindingResources = "binding_resources"
        }
    }

    static func compute(cluster: ClusterConfig, workload: Workload, jobs: [Simulator.SimJob], snapshot: ClusterSnapshot) -> Parts {
        let policy = RouterPolicy.hydra
        let state = PassState(snapshot: snapshot, stats: .empty, now: Date(timeIntervalSince1970: 0), policy: policy)
        let gpuCount = state.gpus.count
        var capacity = state.gpus.map(\.weight)
        var labels = state.info.map(\.label)
        for n in snapshot.nodes {
            capacity.append(Double(max(0, n.cpuSlots))); labels.append("\(n.name) CPU")
        }
        var eligCache: [DemandShape: Eligibility] = [:]
        let n = jobs.count
        var fastest = [Double](repeating: .nan, count: n)
        var work = [Double](repeating: 0, count: n)
        // Resource-seconds: a job holds each of its k GPUs (or its CPU slot) for at least its fastest runtime.
        var occupancy = [Double](repeating: 0, count: n)
        var sets = [[Int]](repeating: [], count: n)
        for (j, sj) in jobs.enumerated() {
            // Only jobs that ran count: a job that never ran (nor, so, its dependents) adds nothing to the makespan.
            guard sj.finishedAt != nil, sj.deps.allSatisfy({ !fastest[$0].isNaN }) else { continue }
            let d = JobDemand(job: sj.job, stats: .empty, policy: policy)
            let e: Eligibility
            if let c = eligCache[d.shape] { e = c } else {
                e = Eligibility.compute(d.shape, snapshot: snapshot, state: state, filters: PlacementFilters.standard)
                eligCache[d.shape] = e
            }
            guard e.reason == nil else { continue }
            if d.shape.cpuOnly {
                let r = sj.fixedS ?? sj.baseS ?? d.baseRuntimeS
                fastest[j] = r; work[j] = r; occupancy[j] = r
                sets[j] = e.nodes.map { gpuCount + $0.node }.filter { capacity[$0] > 0 }
                continue
            }
            let k = d.shape.gpus
            var best = Double.infinity
            var all: [Int] = []
            for (_, slots) in e.nodes {
                let ws = slots.map { state.gpus[$0].weight }.sorted(by: >)
                guard ws.count >= k else { continue }
                let wk = ws[k - 1]
                best = min(best, sj.fixedS ?? ((sj.baseS ?? d.baseRuntimeS) / wk))
                all += slots
            }
            guard best.isFinite else { continue }
            fastest[j] = best
            sets[j] = all.sorted()
            let minW = all.map { state.gpus[$0].weight }.min() ?? 1
            work[j] = Double(k) * (sj.fixedS.map { $0 * minW } ?? (sj.baseS ?? d.baseRuntimeS))
            occupancy[j] = Double(k) * best
        }

        // Dependencies point to earlier jobs (the workload's group order), so one pass each way suffices.
        var est = [Double](repeating: 0, count: n)
        var critical = 0.0
        for j in 0..<n {
            var s = jobs[j].submitAt
            for d in jobs[j].deps where !fastest[d].isNaN { s = max(s, est[d] + fastest[d]) }
            est[j] = s
            if !fastest[j].isNaN { critical = max(critical, s + fastest[j]) }
        }
        var tail = [Double](repeating: 0, count: n)
        for j in stride(from: n - 1, through: 0, by: -1) {
            for c in jobs[j].dependents where !fastest[c].isNaN { tail[j] = max(tail[j], fastest[c] + tail[c]) }
        }

        var distinct = Set<[Int]>()
        for j in 0..<n where !fastest[j].isNaN && !sets[j].isEmpty { distinct.insert(sets[j]) }
        var candidates = Array(distinct)
        let base = candidates
        for a in 0..<base.count { for b in (a + 1)..<max(a + 1, base.count) { candidates.append(Array(Set(base[a] + base[b])).sorted()) } }
        var capBound = 0.0, binding = ""
        for s in Set(candidates) {
            let members = Set(s)
            var inside: [Int] = []
            for j in 0..<n where !fastest[j].isNaN && !sets[j].isEmpty && sets[j].allSatisfy(members.contains) { inside.append(j) }
            let cap = s.reduce(0.0) { $0 + capacity[$1] }
            guard !inside.isEmpty, cap > 0 else { continue }
            // The same windows counted in resource-seconds: the weights overrate a fast GPU that can
            // only run a gang at its slow partner's pace.
            let units = s.reduce(0.0) { $0 + ($1 < gpuCount ? 1 : capacity[$1]) }
            let bound = max(Self.windowBound(inside.map { (est[$0], work[$0], tail[$0]) }, capacity: cap),
                            Self.windowBound(inside.map { (est[$0], occupancy[$0], tail[$0]) }, capacity: units))
            if bound > capBound { capBound = bound; binding = s.map { labels[$0] }.joined(separator: " + ") }
        }
        return Parts(value: max(critical, capBound), criticalPathS: critical, capacityS: capBound, bindingResources: binding)
    }

    /// Jobs confined to resources of capacity `cap`: for every release threshold t, the jobs
    /// that cannot start before t must all be done by the makespan minus the shortest of their
    /// tails, so makespan ≥ t + work(est ≥ t) / cap + min tail; and for every tail threshold τ,
    /// the jobs with tails ≥ τ start no earlier than the earliest of them and end by makespan − τ.
    /// The whole set (t = earliest start) is the old bound; later thresholds catch late arrivals
    /// and early-finishing chains, which the whole set averages away.
    static func windowBound(_ jobs: [(est: Double, work: Double, tail: Double)], capacity cap: Double) -> Double {
        var best = 0.0
        // Release side: latest first, accumulating work and the smallest tail.
        var byEst = jobs.sorted { $0.est > $1.est }
        var w = 0.0, minTail = Double.infinity
        for j in byEst.indices {
            w += byEst[j].work; minTail = min(minTail, byEst[j].tail)
            // Several jobs may share one release time: the bound holds only once all of them count.
            if j + 1 < byEst.count, byEst[j + 1].est == byEst[j].est { continue }
            if w > 0 { best = max(best, byEst[j].est + w / cap + minTail) }
        }
        // Tail side: longest tail first, accumulating work and the earliest start.
        byEst = jobs.sorted { $0.tail > $1.tail }
        w = 0; var minEst = Double.infinity
        for j in byEst.indices {
            w += byEst[j].work; minEst = min(minEst, byEst[j].est)
            if j + 1 < byEst.count, byEst[j + 1].tail == byEst[j].tail { continue }
            if w > 0 { best = max(best, minEst + w / cap + byEst[j].tail) }
        }
        return best
    }
}
