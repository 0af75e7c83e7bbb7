import Foundation
import PropertyBased
import Testing
@testable import HydraCore

/// The offline plan is a schedule: it passes the checker, never ends before the brute-force
/// optimum (it would have to break a rule to) nor before the lower bound (one of the two would
/// be wrong), and on generated scenarios the same holds at full size.
struct OfflinePlanTests {
    typealias Tiny = LowerBoundPropertyTests

    static func plan(_ sim: Simulator, evaluations: Int) -> (OfflinePlan.Instance, OfflinePlan.Result) {
        let inst = OfflinePlan.Instance(workload: sim.workload, jobs: sim.buildJobs(), snapshot: sim.baseSnapshot())
        return (inst, OfflinePlan.search(inst, startTimes: nil, evaluations: evaluations, seed: sim.seed))
    }

    @Test func aPlanIsAScheduleThatNeverBeatsTheOptimumOrTheBound() async {
        await propertyCheck(count: 200, input: Gen.uint64()) { seed in
            let inst = Tiny.instance(seed, spread: seed % 2 == 0, residents: seed % 3 == 0, gangs: seed % 4 == 0)
            guard Tiny.options(inst).allSatisfy({ !$0.isEmpty }), let opt = Tiny.optimum(inst) else { return }
            let sim = try! Tiny.simulator(inst)
            let (pi, plan) = Self.plan(sim, evaluations: 40)
            #expect(OfflinePlan.violation(pi, plan.placements) == nil, "\(OfflinePlan.violation(pi, plan.placements) ?? "") for \(inst)")
            #expect(plan.makespanS >= opt - 1e-6, "plan \(plan.makespanS) < optimum \(opt) for \(inst)")
            let lb = try! Tiny.bound(inst)
            #expect(plan.makespanS >= lb - 1e-6, "plan \(plan.makespanS) < bound \(lb) for \(inst)")
        }
    }

    /// One GPU: A (30 s) is there at 0; B (10 s) comes at 5 and a 100 s CPU task waits on it. A
    /// policy that starts A at once ends at 140; knowing B is coming, the plan leaves the GPU to
    /// it and ends at 115, the optimum (and the bound: B's chain).
    @Test func thePlanKeepsAGPUForAJobItKnowsIsComing() throws {
        let inst = Tiny.Instance(gpuNode: [0], gpuWeight: [1], cpuSlots: [1],
                                 jobs: [.init(release: 0, base: 30, gpus: 1, node: nil, parent: nil),
                                        .init(release: 5, base: 10, gpus: 1, node: nil, parent: nil),
                                        .init(release: 0, base: 100, gpus: 0, node: nil, parent: 1)])
        #expect(Tiny.optimum(inst) == 115)
        let (pi, plan) = Self.plan(try Tiny.simulator(inst), evaluations: 10)
        #expect(OfflinePlan.violation(pi, plan.placements) == nil)
        #expect(abs(plan.makespanS - 115) < 1e-6, "plan \(plan.makespanS)")
        #expect(abs(try Tiny.bound(inst) - 115) < 1e-6)
    }

    /// The checker catches what it is there for: two jobs on one GPU at once, a job that starts
    /// before its dependency ends, and a job shorter than its runtime.
    @Test func theCheckerRejectsABrokenPlan() throws {
        let inst = Tiny.Instance(gpuNode: [0], gpuWeight: [1], cpuSlots: [1],
                                 jobs: [.init(release: 0, base: 30, gpus: 1, node: nil, parent: nil),
                                        .init(release: 0, base: 10, gpus: 1, node: nil, parent: 0)])
        let (pi, plan) = Self.plan(try Tiny.simulator(inst), evaluations: 1)
        #expect(OfflinePlan.violation(pi, plan.placements) == nil)
        var early = plan.placements
        early[1] = .init(start: 20, end: 30, resources: [0])
        #expect(OfflinePlan.violation(pi, early)?.contains("before dependency") == true)
        var two = [OfflinePlan.Placement?](repeating: nil, count: 2)
        two[0] = .init(start: 0, end: 30, resources: [0]); two[1] = .init(start: 30, end: 35, resources: [0])
        #expect(OfflinePlan.violation(pi, two)?.contains("under its") == true)
        let unrelated = Tiny.Instance(gpuNode: [0], gpuWeight: [1], cpuSlots: [1],
                                      jobs: [.init(release: 0, base: 30, gpus: 1, node: nil, parent: nil),
                                             .init(release: 0, base: 10, gpus: 1, node: nil, parent: nil)])
        let (ui, _) = Self.plan(try Tiny.simulator(unrelated), evaluations: 1)
        two[1] = .init(start: 25, end: 35, resources: [0])
        #expect(OfflinePlan.violation(ui, two)?.contains("overlap") == true)
    }

    /// Generated scenarios at full size: the plan passes the checker and ends at or after the
    /// bound of the hydra run (the 200-seed sweep does the same with `--offline-plan`).
    @Test(arguments: [UInt64(3), 8, 21])
    func generatedScenariosGetAValidPlanAboveTheBound(seed: UInt64) throws {
        let sc = try ScenarioGenerator.generate(seed: seed)
        let sim = Simulator(cluster: sc.cluster, workload: sc.workload, seed: seed)
        let report = sim.run(policy: RouterPolicy(name: .hydra, seed: seed))
        #expect(report.neverRan.isEmpty)
        let pi = OfflinePlan.Instance(workload: sim.workload, jobs: sim.buildJobs(), snapshot: sim.baseSnapshot())
        let plan = OfflinePlan.search(pi, startTimes: report.timeline.map(\.startS), evaluations: 100, seed: seed)
        #expect(OfflinePlan.violation(pi, plan.placements) == nil, "\(OfflinePlan.violation(pi, plan.placements) ?? "")")
        #expect(plan.makespanS >= report.lowerBoundS - 1e-6, "plan \(plan.makespanS) < bound \(report.lowerBoundS)")
        #expect(plan.makespanS <= plan.startMakespanS + 1e-9)
    }
}

/// Plan-ahead execution in the simulator: every job still runs, no two batch jobs ever share a
/// GPU (the plan gives each its own), the bound still holds, and a pass starts only what the plan
/// starts now.
struct PlanAheadTests {
    typealias Tiny = LowerBoundPropertyTests

    @Test(arguments: [UInt64(3), 8])
    func everyJobRunsAndBatchJobsNeverShareAGPU(seed: UInt64) throws {
        let sc = try ScenarioGenerator.generate(seed: seed)
        var sim = Simulator(cluster: sc.cluster, workload: sc.workload.submittedAtOnce(), seed: seed)
        var config = PlanAhead()
        config.firstOrders = 300; config.orders = 50   // a debug build: fewer orders, the same rules
        sim.planAhead = config
        let r = sim.run(policy: RouterPolicy(name: .hydra, seed: seed))
        #expect(r.policy == PlanAhead.rowName)
        #expect(r.neverRan.isEmpty && r.completed == r.jobs, "\(r.neverRan.prefix(3))")
        #expect(r.makespanS >= r.lowerBoundS - 1e-6)
        let urgent = RouterPolicy.hydra.urgentPriority
        let jobs = sim.buildJobs()
        var byGPU: [String: [(Double, Double, String)]] = [:]
        for (t, j) in zip(r.timeline, jobs) where j.job.priority < urgent {
            guard let s = t.startS, let f = t.finishS, let node = t.node else { continue }
            for g in t.gpus { byGPU["\(node)/\(g)", default: []].append((s, f, t.job)) }
        }
        #expect(!byGPU.isEmpty)
        for (gpu, list) in byGPU {
            let sorted = list.sorted { $0.0 < $1.0 }
            for i in sorted.indices.dropFirst() {
                #expect(sorted[i].0 >= sorted[i - 1].1 - 1e-6, "\(sorted[i - 1].2) and \(sorted[i].2) overlap on \(gpu)")
            }
        }
    }

    /// One GPU, A running past its expected end, B pending: the plan keeps the GPU busy a second
    /// more, so nothing starts; once A is gone, B starts on that GPU.
    @Test func aPassStartsOnlyWhatThePlanStartsNow() throws {
        let inst = Tiny.Instance(gpuNode: [0], gpuWeight: [1], cpuSlots: [1],
                                 jobs: [.init(release: 0, base: 30, gpus: 1, node: nil, parent: nil),
                                        .init(release: 0, base: 10, gpus: 1, node: nil, parent: nil)])
        let sim = try Tiny.simulator(inst)
        var jobs = sim.buildJobs()
        let snap = sim.baseSnapshot()
        let uuid = snap.nodes[0].gpus[0].uuid
        var state = PlanAheadState(config: PlanAhead(), jobs: jobs, workload: sim.workload, snapshot: snap, urgentPriority: 2, seed: 1)
        let busy = state.pass(now: 40, jobs: jobs, pending: [1],
                              running: [.init(job: 0, node: 0, gpus: [uuid], startedAt: 0, expectedRuntime: 30)])
        #expect(busy.starts.isEmpty && busy.routed.isEmpty)
        jobs[0].finishedAt = 45
        let free = state.pass(now: 45, jobs: jobs, pending: [1], running: [])
        #expect(free.starts.map(\.job) == [1] && free.starts.first?.gpus == [uuid])
        #expect(abs((free.starts.first?.expectedRuntime ?? 0) - 10) < 1e-9)
    }
}
