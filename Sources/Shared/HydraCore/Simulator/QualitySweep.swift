import Foundation
import Synchronization

/// Runs every policy on generated scenarios and condenses the results: how far each policy
/// ends above the lower bound, how long the interactive jobs wait, and what never ran.
public enum QualitySweep {
    /// One policy on one generated scenario (`hydra simulate --generate … --json` prints one per line).
    public struct Run: Sendable, Codable, Equatable {
        public var seed: UInt64
        public var policy: String
        public var nodes: Int
        public var gpus: Int
        public var jobs: Int
        public var makespanS: Double
        public var lowerBoundS: Double
        public var ratio: Double
        public var hpJobs: Int
        public var hpWaitP95S: Double?
        public var hpRuntimeMedianS: Double?
        /// Over the interactive jobs that found room on a GPU they may use when they became ready.
        public var hpWithRoomWaitP95S: Double?
        /// p95 of the interactive jobs' (finish − ready) ÷ full-speed runtime: waiting and sharing together.
        public var hpStretchP95: Double?
        public var hpLatencyP95: Double?
        public var oomFailures: Int
        public var neverRan: [SimulationReport.NeverRan]

        enum CodingKeys: String, CodingKey {
            case seed, policy, nodes, gpus, jobs, ratio
            case makespanS = "makespan_s", lowerBoundS = "lower_bound_s"
            case hpJobs = "high_priority_jobs", hpWaitP95S = "high_priority_wait_p95_s"
            case hpRuntimeMedianS = "high_priority_runtime_median_s", oomFailures = "oom_failures", neverRan = "never_ran"
            case hpWithRoomWaitP95S = "high_priority_with_room_wait_p95_s"
            case hpStretchP95 = "high_priority_stretch_p95", hpLatencyP95 = "high_priority_latency_p95"
        }

        init(seed: UInt64, scenario: ScenarioGenerator.Scenario, report r: SimulationReport) {
            self.seed = seed; policy = r.policy
            nodes = scenario.cluster.nodes.count
            gpus = scenario.cluster.nodes.reduce(0) { $0 + $1.gpus.count }
            jobs = r.jobs; makespanS = r.makespanS; lowerBoundS = r.lowerBoundS
            ratio = r.lowerBoundS > 0 ? r.makespanS / r.lowerBoundS : 1
            hpJobs = r.topPriority?.jobs ?? 0
            hpWaitP95S = r.topPriority?.waitP95S
            hpRuntimeMedianS = r.topPriority?.runtimeMedianS
            hpWithRoomWaitP95S = r.topPriority?.withRoomWaitP95S
            hpStretchP95 = r.topPriority?.stretchP95
            hpLatencyP95 = r.topPriority?.latencyP95
            oomFailures = r.oomFailures; neverRan = r.neverRan
        }

        /// The offline plan's row: against the same bound as the policy runs of the seed.
        init(seed: UInt64, scenario: ScenarioGenerator.Scenario, plan: OfflinePlan.Result, bound: Double, jobs: Int) {
            self.seed = seed; policy = OfflinePlan.rowName
            nodes = scenario.cluster.nodes.count
            gpus = scenario.cluster.nodes.reduce(0) { $0 + $1.gpus.count }
            self.jobs = jobs; makespanS = plan.makespanS; lowerBoundS = bound
            ratio = bound > 0 ? plan.makespanS / bound : 1
            hpJobs = 0; oomFailures = 0; neverRan = []
        }
    }

    /// Runs seeds `first ..< first + count` under each policy; seeds are spread over `threads`.
    /// `atOnce`: every job below the urgent priority submitted at the start (`Workload.submittedAtOnce`).
    /// `offlinePlan` > 0: also an `OfflinePlan` per seed, searched over that many list orders
    /// (from the hydra run's start times where hydra is among `policies`), as a row named `offline-plan`.
    /// `planAhead`: also a run with the batch jobs following a plan (`PlanAhead`), as a row named `plan-ahead`.
    public static func run(first: UInt64, count: Int, policies: [RouterPolicy.Name], threads: Int = 2, atOnce: Bool = false,
                           offlinePlan: Int = 0, planAhead: Bool = false) throws -> [Run] {
        let slots = Mutex<[[Run]?]>(Array(repeating: nil, count: count))
        let failure = Mutex<(any Error)?>(nil)
        let next = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, count))) { _ in
            while true {
                let i = next.add(1, ordering: .relaxed).oldValue
                guard i < count else { return }
                let seed = first &+ UInt64(i)
                do {
                    let sc = try ScenarioGenerator.generate(seed: seed)
                    let load = atOnce ? sc.workload.submittedAtOnce() : sc.workload
                    let sim = Simulator(cluster: sc.cluster, workload: load, seed: seed)
                    let reports = policies.map { sim.run(policy: RouterPolicy(name: $0, seed: seed)) }
                    var runs = reports.map { Run(seed: seed, scenario: sc, report: $0) }
                    if planAhead {
                        var planned = sim
                        planned.planAhead = PlanAhead()
                        runs.append(Run(seed: seed, scenario: sc, report: planned.run(policy: RouterPolicy(name: .hydra, seed: seed))))
                    }
                    if offlinePlan > 0, let first = reports.first {
                        let plan = sim.offlinePlan(evaluations: offlinePlan, from: reports.first { $0.policy == RouterPolicy.Name.hydra.rawValue })
                        runs.append(Run(seed: seed, scenario: sc, plan: plan, bound: first.lowerBoundS, jobs: first.jobs))
                    }
                    slots.withLock { $0[i] = runs }
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                    return
                }
            }
        }
        if let e = failure.withLock({ $0 }) { throw e }
        return slots.withLock { $0.flatMap { $0 ?? [] } }
    }

    /// Per policy, over the seeds.
    public struct PolicySummary: Sendable, Codable, Equatable {
        public var policy: String
        public var seeds: Int
        public var ratioMedian: Double
        public var ratioP90: Double
        public var ratioWorst: Double
        public var worstSeed: UInt64
        /// Per seed the p95 wait of the top-priority jobs; here its median and p90 over seeds.
        public var hpWaitP95Median: Double?
        public var hpWaitP95P90: Double?
        /// Per seed p95 wait ÷ median runtime of those jobs; median, p90 and how many seeds exceed 2.
        public var hpWaitRatioMedian: Double?
        public var hpWaitRatioP90: Double?
        public var hpSeedsOver2: Int
        /// The same over the jobs that found room when they became ready (the target's condition).
        public var hpWithRoomRatioP90: Double?
        public var hpWithRoomSeedsOver2: Int
        /// Per seed the p95 stretch of the interactive jobs; its median and p90 over seeds.
        public var hpStretchMedian: Double?
        public var hpStretchP90: Double?
        /// Median and p90 over the seeds of the interactive jobs' p95 latency ÷ their fastest runtime.
        public var hpLatencyMedian: Double?
        public var hpLatencyP90: Double?
        public var neverRan: Int
        /// Against hydra, on seeds where both left the same number of jobs unrun: seeds where this
        /// policy's makespan is more than 1 % shorter than hydra's, and the largest hydra ÷ this.
        public var beatsHydraBy1Pct: Int
        public var worstHydraVsThis: Double

        enum CodingKeys: String, CodingKey {
            case policy, seeds
            case ratioMedian = "ratio_median", ratioP90 = "ratio_p90", ratioWorst = "ratio_worst", worstSeed = "worst_seed"
            case hpWaitP95Median = "high_priority_wait_p95_median_s", hpWaitP95P90 = "high_priority_wait_p95_p90_s"
            case hpWaitRatioMedian = "high_priority_wait_over_runtime_median", hpWaitRatioP90 = "high_priority_wait_over_runtime_p90"
            case hpSeedsOver2 = "high_priority_seeds_over_2x", neverRan = "never_ran"
            case hpWithRoomRatioP90 = "high_priority_with_room_wait_over_runtime_p90"
            case hpWithRoomSeedsOver2 = "high_priority_with_room_seeds_over_2x"
            case hpStretchMedian = "high_priority_stretch_p95_median", hpStretchP90 = "high_priority_stretch_p95_p90"
            case hpLatencyMedian = "high_priority_latency_p95_median", hpLatencyP90 = "high_priority_latency_p95_p90"
            case beatsHydraBy1Pct = "seeds_shorter_than_hydra_by_1pct", worstHydraVsThis = "worst_hydra_over_this"
        }
    }

    public static func summarize(_ runs: [Run]) -> [PolicySummary] {
        var order: [String] = []
        for r in runs where !order.contains(r.policy) { order.append(r.policy) }
        let hydra = Dictionary(runs.filter { $0.policy == RouterPolicy.Name.hydra.rawValue }.map { ($0.seed, $0) }, uniquingKeysWith: { a, _ in a })
        return order.map { p in
            let mine = runs.filter { $0.policy == p }
            let ratios = mine.map(\.ratio).sorted()
            let worst = mine.max { $0.ratio < $1.ratio }
            let waits = mine.compactMap(\.hpWaitP95S).sorted()
            let wr = mine.compactMap { r -> Double? in
                guard let w = r.hpWaitP95S, let rt = r.hpRuntimeMedianS, rt > 0 else { return nil }
                return w / rt
            }.sorted()
            let roomy = mine.compactMap { r -> Double? in
                guard let w = r.hpWithRoomWaitP95S, let rt = r.hpRuntimeMedianS, rt > 0 else { return nil }
                return w / rt
            }.sorted()
            let stretch = mine.compactMap(\.hpStretchP95).sorted()
            let latency = mine.compactMap(\.hpLatencyP95).sorted()
            var beats = 0, worstVs = 0.0
            // Only where both ran the same jobs: a policy that leaves jobs out ends early for nothing.
            for r in mine {
                guard let h = hydra[r.seed], r.makespanS > 0, h.neverRan.count == r.neverRan.count else { continue }
                if h.makespanS > r.makespanS * 1.01 { beats += 1 }
                worstVs = max(worstVs, h.makespanS / r.makespanS)
            }
            return PolicySummary(policy: p, seeds: mine.count, ratioMedian: pct(ratios, 0.5), ratioP90: pct(ratios, 0.9),
                                 ratioWorst: worst?.ratio ?? 0, worstSeed: worst?.seed ?? 0,
                                 hpWaitP95Median: waits.isEmpty ? nil : pct(waits, 0.5), hpWaitP95P90: waits.isEmpty ? nil : pct(waits, 0.9),
                                 hpWaitRatioMedian: wr.isEmpty ? nil : pct(wr, 0.5), hpWaitRatioP90: wr.isEmpty ? nil : pct(wr, 0.9),
                                 hpSeedsOver2: wr.filter { $0 > 2 }.count,
                                 hpWithRoomRatioP90: roomy.isEmpty ? nil : pct(roomy, 0.9), hpWithRoomSeedsOver2: roomy.filter { $0 > 2 }.count,
                                 hpStretchMedian: stretch.isEmpty ? nil : pct(stretch, 0.5), hpStretchP90: stretch.isEmpty ? nil : pct(stretch, 0.9),
                                 hpLatencyMedian: latency.isEmpty ? nil : pct(latency, 0.5), hpLatencyP90: latency.isEmpty ? nil : pct(latency, 0.9),
                                 neverRan: mine.reduce(0) { $0 + $1.neverRan.count },
                                 beatsHydraBy1Pct: beats, worstHydraVsThis: worstVs)
        }
    }

    /// Nearest-rank percentile of sorted values.
    static func pct(_ sorted: [Double], _ p: Double) -> Double { Simulator.percentile(sorted, p) }
}
