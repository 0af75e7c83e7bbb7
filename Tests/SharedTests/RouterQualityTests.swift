import XCTest
@testable import HydraCore

/// The parts of `hydra` that aim at makespan and interactive waits on unseen workloads:
/// urgent jobs start now, longest path first inside a tier, shared GPUs count as busy.
final class RouterQualityTests: XCTestCase {
    var config: ClusterConfig!
    override func setUpWithError() throws { config = try RT.referenceConfig() }

    /// A job that may run on any GPU: 60 s on the 5090 (weight 10), 75 s on the 4090, 200 s on the 3060.
    func anyGPU(_ id: String, priority: Int, base: Double = 600) -> RouterJob {
        RT.job(id, vram: 2, priority: priority, spec: ["base_runtime_s": .number(base)], constraints: ["service": .array([])])
    }

    func testUrgentJobSharesABusyGPUInsteadOfWaiting() {
        // 5090: a job with 100 s left and room beside it. 4090: 80 s left, full. The others full (not Hydra's).
        let runs = [RT.running("a", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 4, visible: true, endsIn: 100),
                    RT.running("b", node: "hydra-ai", gpus: ["hydra-ai-gpu1"], gib: 23, visible: true, endsIn: 80)]
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 4, "hydra-ai/1": 23.5, "hydra-compute/0": 16, "hydra-compute/1": 12], running: runs)
        // Batch: 100 + 60 = 160 s on the 5090 against 80 + 75 = 155 s on the 4090: it waits for the
        // 4090's VRAM (and would not share the busy 5090 anyway).
        let batch = RT.place([anyGPU("batch", priority: 0)], snap)
        XCTAssertNil(batch.assignment(for: "batch"))
        XCTAssertEqual(batch.reason(for: "batch")?.code, .insufficientVRAM)
        XCTAssertEqual(batch.reason(for: "batch")?.message.hasSuffix("expected on hydra-ai/1 RTX 4090 in ~80 s; 1 busy GPU(s) with room, not shared"), true,
                       batch.reason(for: "batch")?.message ?? "")
        XCTAssertEqual(RT.place([anyGPU("batch", priority: 0)], snap, policy: RouterPolicy(sharesBusyGPUs: true)).reason(for: "batch")?.code,
                       .waitingForBetterGPU)
        // Urgent: beside the 5090's one job it ends after about 2 × 60 = 120 s, sooner than 155 s.
        let urgent = RT.place([anyGPU("chat", priority: 5)], snap)
        XCTAssertEqual(urgent.gpu("chat"), "hydra-ai/0")
        // Below the urgent priority it is a batch job again.
        XCTAssertNil(RT.place([anyGPU("chat", priority: 5)], snap, policy: RouterPolicy(urgentPriority: 6)).assignment(for: "chat"))
    }

    func testUrgentJobTakesAnIdleGPURatherThanSlowABatchJob() {
        // A batch job runs on the 4090 with room beside it; the 5090 and the 5070 Ti are full
        // (not Hydra's); the 3060 is idle. A 600 s request: 2 × 75 = 150 s beside the batch job,
        // 200 s alone on the 3060. Sharing also takes 75 s of the 4090 from the batch job
        // (150 + 75 = 225 > 200): the 3060 takes it.
        let runs = [RT.running("batch", node: "hydra-ai", gpus: ["hydra-ai-gpu1"], gib: 4, visible: true, endsIn: 1000)]
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 32, "hydra-ai/1": 4, "hydra-compute/0": 16], running: runs)
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 10)], snap).gpu("chat"), "hydra-compute/1")
        // Without the charge it shares the 4090.
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 10)], snap, policy: RouterPolicy(urgentSharingCharge: 0)).gpu("chat"), "hydra-ai/1")
        // Beside another interactive request there is no batch work to slow: 150 s on the 4090 wins.
        let chat = [RT.running("c0", node: "hydra-ai", gpus: ["hydra-ai-gpu1"], gib: 4, visible: true, endsIn: 1000, priority: 10)]
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 10)], RT.snapshot(config, used: ["hydra-ai/0": 32, "hydra-ai/1": 4, "hydra-compute/0": 16],
                                                                             running: chat)).gpu("chat"), "hydra-ai/1")
    }

    func testUrgentJobAvoidsAGPUThatOtherInteractiveJobsCrowd() {
        // Three chat requests share the 5090, each expected to end in 4 s; the 4090 is idle.
        let runs = (0..<3).map { RT.running("c\($0)", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 2, visible: true, endsIn: 4, priority: 10) }
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 6, "hydra-compute/0": 16, "hydra-compute/1": 12], running: runs)
        // Queue + runtime would say 12 + 60 = 72 s there against 75 s on the 4090; but the four share
        // the 5090's compute, so its 60 s become about 4 × 60 while the others last (and theirs
        // stretch too, so their own ends are no guide): the 4090 takes it.
        let chat = RT.place([anyGPU("chat", priority: 10)], snap)
        XCTAssertEqual(chat.gpu("chat"), "hydra-ai/1")
        // With one request on the 5090 (2 × 60 = 120 s) the 4090 still wins; with none, the 5090.
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 10)], RT.snapshot(config, running: [runs[0]])).gpu("chat"), "hydra-ai/1")
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 10)], RT.snapshot(config)).gpu("chat"), "hydra-ai/0")
    }

    func testAScarceJobKeepsPaceWithTheAgedJobsOfItsPriority() {
        // Three jobs any GPU runs, waiting 25 min (two aging steps), and a 28 GiB job only the
        // 5090 holds, just submitted; every GPU idle, all at priority 0.
        let old = (0..<3).map { i in
            RT.job("old-\(i)", vram: 2, batch: "flex", at: -1500, spec: ["base_runtime_s": 600], constraints: ["service": .array([])])
        }
        let big = RT.job("big", vram: 28, batch: "big", spec: ["base_runtime_s": 600], constraints: ["service": .array([])])
        let all = old + [big]
        // Without keeping pace the aged jobs rank first: the first two take the 4090 and the 5070 Ti,
        // and the third finds the 5090 (60 s + the big job's 60 s charge) sooner than the 3060 (200 s).
        XCTAssertEqual(JobOrdering.order(old + [big], running: [], now: RT.t0, agingStepS: 600, criticalPath: true).map { all[$0].id },
                       ["old-0", "old-1", "old-2", "big"])
        XCTAssertEqual(JobOrdering.order(old + [big], running: [], now: RT.t0, agingStepS: 600, criticalPath: true,
                                         keepPace: [false, false, false, true]).map { all[$0].id },
                       ["old-0", "big", "old-1", "old-2"])
        let r = RT.place(all, RT.snapshot(config))
        XCTAssertEqual(r.gpu("big"), "hydra-ai/0")
        XCTAssertEqual(r.gpu("old-0"), "hydra-ai/1")
        XCTAssertNotEqual(r.gpu("old-2"), "hydra-ai/0")
    }

    func testAPressedClassKeepsItsGPUsFromJobsThatCanRunElsewhere() {
        // Eight images only hydra-compute runs (comfyui: 2 of the 4 GPUs, so not scarce by
        // count): 4 800 units of work on 9 of weight, 533 s, against 5 400 on 27, 200 s, for the whole
        // cluster. A priority-1 job any GPU runs comes first; both hydra-ai GPUs are busy for 100 s.
        let images = (0..<8).map { i in
            RT.job("image-\(i)", kind: "image", vram: 6, spec: ["base_runtime_s": 600], constraints: ["service": .array([.string("comfyui")])])
        }
        let runs = ["hydra-ai-gpu0", "hydra-ai-gpu1"].enumerated().map { i, g in
            RT.running("r\(i)", node: "hydra-ai", gpus: [g], gib: 4, visible: true, endsIn: 100)
        }
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 4, "hydra-ai/1": 4], running: runs)
        let all = [anyGPU("flex", priority: 1)] + images
        // Without the rule it takes the idle 5070 Ti (100 s) rather than wait for the 5090 (100 + 60 s).
        let off = RT.place(all, snap, policy: RouterPolicy(pressedClassFactor: 0))
        XCTAssertEqual(off.gpu("flex"), "hydra-compute/0")
        // With it, the 5070 Ti carries the images' queued work there (8 × 100 s ÷ 2 GPUs): the job
        // waits for the 5090 and the images take both of their GPUs.
        let on = RT.place(all, snap)
        XCTAssertNil(on.assignment(for: "flex"))
        XCTAssertEqual(on.reason(for: "flex")?.code, .waitingForBetterGPU)
        XCTAssertEqual(Set(images.compactMap { on.gpu($0.id) }), ["hydra-compute/0", "hydra-compute/1"])
        // Just below the images' load it is off again (533 s ÷ 200 s ≈ 2.67 × the cluster's).
        XCTAssertEqual(RT.place(all, snap, policy: RouterPolicy(pressedClassFactor: 2.7)).gpu("flex"), "hydra-compute/0")
        XCTAssertNil(RT.place(all, snap, policy: RouterPolicy(pressedClassFactor: 2.5)).assignment(for: "flex"))
    }

    func testInteractiveJobsAloneDoNotKeepBatchJobsOffAGPU() {
        // The 5090 runs one chat request (30 s left); the other GPUs are full (not Hydra's).
        let chat = RT.running("chat", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 4, visible: true, endsIn: 30, priority: 10)
        let used = ["hydra-ai/0": 4.0, "hydra-ai/1": 23.5, "hydra-compute/0": 16, "hydra-compute/1": 12]
        // A stream of requests would keep the GPU busy for good: a batch job starts beside them.
        XCTAssertEqual(RT.place([anyGPU("batch", priority: 0)], RT.snapshot(config, used: used, running: [chat])).gpu("batch"), "hydra-ai/0")
        // Beside a batch job it waits for the GPU to be idle, as before.
        var batchRun = chat
        batchRun.priority = 0
        let waits = RT.place([anyGPU("batch", priority: 0)], RT.snapshot(config, used: used, running: [batchRun]))
        XCTAssertNil(waits.assignment(for: "batch"))
        XCTAssertEqual(waits.rejections.first?.busy, 1)
        // A 2-GPU gang on hydra-ai whose both GPUs serve chat requests starts too.
        let chats = [chat, RT.running("chat2", node: "hydra-ai", gpus: ["hydra-ai-gpu1"], gib: 4, visible: true, endsIn: 30, priority: 10)]
        let gang = RT.job("gang", vram: 4, gpus: 2, spec: ["base_runtime_s": 600], constraints: ["service": .array([])])
        XCTAssertEqual(RT.place([gang], RT.snapshot(config, used: ["hydra-ai/0": 4, "hydra-ai/1": 4, "hydra-compute/0": 16, "hydra-compute/1": 12],
                                                   running: chats)).gpu("gang"), "hydra-ai/0+1")
    }

    func testUrgentJobStartsWhereItFitsRatherThanWaitForAFasterGPU() {
        // The 5090 is full for 130 s more; only the 3060 has room (200 s there).
        let runs = [RT.running("a", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 31, visible: true, endsIn: 130)]
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 31.5, "hydra-ai/1": 24, "hydra-compute/0": 16], running: runs)
        // A batch job waits: 130 + 60 = 190 s beats 200 s.
        XCTAssertEqual(RT.place([anyGPU("batch", priority: 0)], snap).reason(for: "batch")?.code, .waitingForBetterGPU)
        // An urgent one starts now on the 3060 (urgentWaitFactor 0: no wait while it fits somewhere).
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 3)], snap).gpu("chat"), "hydra-compute/1")
        // Allowed to wait up to 3 × its 60 s there, it waits like the batch job; up to 2 × (120 s < 130 s), it does not.
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 3)], snap, policy: RouterPolicy(urgentWaitFactor: 2)).gpu("chat"), "hydra-compute/1")
        let lax = RouterPolicy(urgentWaitFactor: 3)
        XCTAssertEqual(RT.place([anyGPU("chat", priority: 3)], snap, policy: lax).reason(for: "chat")?.code, .waitingForBetterGPU)
    }

    func testLongestPathFirstInsideATier() {
        var jobs = [RT.job("short", spec: ["base_runtime_s": 100], constraints: ["service": .array([])]),
                    RT.job("head-of-chain", at: 1, spec: ["base_runtime_s": 100], constraints: ["service": .array([])]),
                    RT.job("long", at: 2, spec: ["base_runtime_s": 2000], constraints: ["service": .array([])]),
                    RT.job("urgent", priority: 3, at: 3, spec: ["base_runtime_s": 10], constraints: ["service": .array([])])]
        jobs[1].tailS = 500
        let ids = { (o: [Int]) in o.map { jobs[$0].id } }
        // Paths: short 10 s, head-of-chain 10 + 500 s, long 200 s. Priority still comes first.
        XCTAssertEqual(ids(JobOrdering.order(jobs, running: [], now: RT.t0, agingStepS: 600, criticalPath: true)),
                       ["urgent", "head-of-chain", "long", "short"])
        XCTAssertEqual(ids(JobOrdering.order(jobs, running: [], now: RT.t0, agingStepS: 600)),
                       ["urgent", "short", "head-of-chain", "long"])
    }

    func testCoLocatedJobsPastTheirEndStillCountAsQueuedWork() {
        // Two 60 s jobs started together 70 s ago on the 5070 Ti: each alone would be done, but
        // sharing the GPU they have at least 2 × 60 − 70 = 50 s of work left.
        let now = RT.t0
        let runs = ["a", "b"].map { id in
            RouterRunningJob(id: id, kind: "command", node: "hydra-compute", gpuUUIDs: ["hydra-compute-gpu0"],
                             reservedBytesPerGPU: 4 * RT.GiB, placedAt: now.addingTimeInterval(-71),
                             startedAt: now.addingTimeInterval(-70), visible: true, expectedEnd: now.addingTimeInterval(-10))
        }
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 8.5], running: runs)
        // 180 s at weight 1: 30 s on the 5070 Ti, 60 s on the 3060.
        let job = RT.job("j", vram: 2, spec: ["base_runtime_s": 180], constraints: ["service": .array([]), "node": "hydra-compute"])
        // hydra: 50 + 30 = 80 s on the 5070 Ti against 60 s on the 3060.
        let sharing = RouterPolicy(sharesBusyGPUs: true)
        XCTAssertEqual(RT.place([job], snap, policy: sharing).gpu("j"), "hydra-compute/1")
        // One such job alone is really done soon: 1 + 30 s there beats the 3060.
        let alone = RT.snapshot(config, used: ["hydra-compute/0": 4.5], running: [runs[0]])
        XCTAssertEqual(RT.place([job], alone, policy: sharing).gpu("j"), "hydra-compute/0")
    }

    func testJobsWithChoicesLeaveTheOnlyGPUThatFitsAScarceJob() {
        let snap = RT.snapshot(config)
        // 28 GiB fits only the 5090 (31.5 GiB usable): one GPU of four is scarce.
        let big = RT.job("big", vram: 28, spec: ["base_runtime_s": 6000], constraints: ["service": .array([])])
        // Ranked first (priority 1), 60 s on the 5090, 75 s on the 4090.
        let flexible = anyGPU("flexible", priority: 1)
        let r = RT.place([flexible, big], snap)
        XCTAssertEqual(r.gpu("flexible"), "hydra-ai/1")
        XCTAssertEqual(r.gpu("big"), "hydra-ai/0")
        // Without the scarce job pending, the 5090 is the flexible job's best GPU.
        XCTAssertEqual(RT.place([flexible], snap).gpu("flexible"), "hydra-ai/0")
        // least-loaded does not keep it: the flexible job takes the idle GPU with the most free VRAM.
        XCTAssertEqual(RT.place([flexible, big], snap, policy: RouterPolicy(name: .leastLoaded)).gpu("flexible"), "hydra-ai/0")
    }
    func testUpcomingJobsKeepTheirGPUsFreeButAreNeverPlaced() {
        let snap = RT.snapshot(config)
        // Not ready yet (its dependencies run now); 28 GiB fits only the 5090.
        let big = RT.job("big", vram: 28, spec: ["base_runtime_s": 6000], constraints: ["service": .array([])])
        let flexible = anyGPU("flexible", priority: 1)
        let r = Router.place(pending: [flexible], upcoming: [big], snapshot: snap, now: RT.t0)
        XCTAssertEqual(r.gpu("flexible"), "hydra-ai/1")
        XCTAssertNil(r.assignment(for: "big"))
        XCTAssertNil(r.reason(for: "big"), "an upcoming job gets no reason: it is not pending")
        XCTAssertEqual(r.assignments.count + r.pending.count, 1)
        // Nothing upcoming: the 5090 is its best GPU.
        XCTAssertEqual(Router.place(pending: [flexible], upcoming: [], snapshot: snap, now: RT.t0).gpu("flexible"), "hydra-ai/0")
        // A job of the same class does not pay for its own class's upcoming work: it takes the 5090.
        let bigNow = RT.job("big-now", vram: 28, spec: ["base_runtime_s": 6000], constraints: ["service": .array([])])
        XCTAssertEqual(Router.place(pending: [bigNow], upcoming: [big], snapshot: snap, now: RT.t0).gpu("big-now"), "hydra-ai/0")
        // Other policies do not look at upcoming jobs.
        let ll = Router.place(pending: [flexible], upcoming: [big], snapshot: snap, now: RT.t0, policy: RouterPolicy(name: .leastLoaded))
        XCTAssertEqual(ll.gpu("flexible"), "hydra-ai/0")
    }

    func testAScarceJobPaysTheChargeOfAnotherScarceClass() {
        let snap = RT.snapshot(config)
        // 28 GiB fits only the 5090: scarce by count, 120 s of work charged to it.
        let big = RT.job("big", vram: 28, spec: ["base_runtime_s": 1200], constraints: ["service": .array([])])
        // Six jobs that only hydra-ai runs: 3 600 units on 18 of weight (200 s) against 4 800 on
        // 27 (178 s) for the cluster, so pressed, scarce too. The first ranks first (priority 1):
        // 60 s on the 5090, 75 s on the 4090.
        let onAI = (0..<6).map { i in
            RT.job("ai-\(i)", vram: 2, priority: i == 0 ? 1 : 0, spec: ["base_runtime_s": 600],
                   constraints: ["service": .array([]), "node": "hydra-ai"])
        }
        // It pays the big job's 120 s on the 5090 (60 + 120 > 75; its own class's charge is not
        // counted): the 4090, and the 5090 stays for the job that only it fits. Scarce jobs paid
        // no charge before, and this one took the 5090 from the big job.
        let r = RT.place(onAI + [big], snap)
        XCTAssertEqual(r.gpu("ai-0"), "hydra-ai/1")
        XCTAssertEqual(r.gpu("big"), "hydra-ai/0")
        // Without the big job pending, the 5090 is its best GPU.
        XCTAssertEqual(RT.place(onAI, snap).gpu("ai-0"), "hydra-ai/0")
        // With the 4090 busy for 90 s it waits for it (165 s) rather than take the 5090 (180 s), and says why.
        let busy = RT.snapshot(config, used: ["hydra-ai/1": 4],
                               running: [RT.running("r", node: "hydra-ai", gpus: ["hydra-ai-gpu1"], gib: 4, visible: true, endsIn: 90)])
        let waits = RT.place(onAI + [big], busy)
        XCTAssertNil(waits.assignment(for: "ai-0"))
        XCTAssertEqual(waits.reason(for: "ai-0")?.code, .waitingForBetterGPU)
        XCTAssertTrue(waits.reason(for: "ai-0")?.message.contains("which jobs of another class that only few GPUs can run need for ~2 min") ?? false,
                      waits.reason(for: "ai-0")?.message ?? "no reason")
        XCTAssertEqual(waits.gpu("big"), "hydra-ai/0")
    }
}

final class GangChargeTests: XCTestCase {
    func testAGangClassIsChargedAtItsPaceOnItsFasterGPU() {
        // Twenty 2-GPU LLM jobs can only run on node g (an A100, weight 12, and an H100, 20): each
        // needs both GPUs for 600 / 12 = 50 s, so the class needs the H100 for 1 000 s, not the
        // 600 s its own weight would say. A 19 000-unit job that may run anywhere, ranked first:
        // 950 s on the H100 + 1 000 s of charge against 1 900 s on an idle L40S of node o.
        let config = ClusterConfig(nodes: [
            NodeConfig(name: "g", gpus: [GPUConfig(model: "NVIDIA A100-SXM4-80GB", memory: .gib(80), weight: 12),
                                         GPUConfig(model: "NVIDIA H100 80GB HBM3", memory: .gib(80), weight: 20)], services: ["tabbyapi"]),
            NodeConfig(name: "o", gpus: (0..<8).map { _ in GPUConfig(model: "NVIDIA L40S", memory: .gib(48), weight: 10) }),
        ], headroom: ByteCount(512 * ByteSize.MiB))
        let snap = RT.snapshot(config)
        let gangs = (0..<20).map { RT.job("exp-\($0)", kind: "llm", vram: 19, gpus: 2, spec: ["base_runtime_s": 600]) }
        let video = RT.job("video", vram: 15, priority: 1, spec: ["base_runtime_s": 19_000], constraints: ["service": .array([])])
        let r = RT.place([video] + gangs, snap)
        XCTAssertEqual(r.gpu("video")?.hasPrefix("o/"), true, r.gpu("video") ?? "waits")
        XCTAssertEqual(r.gpu("exp-0"), "g/0+1")
        // With half as many expansions (500 s at the gang's pace) the H100 is still worth it.
        XCTAssertEqual(RT.place([video] + gangs.prefix(10), snap).gpu("video"), "g/1")
    }
}
