import XCTest
@testable import HydraCore

final class RouterPlacementTests: XCTestCase {
    var config: ClusterConfig!
    override func setUpWithError() throws { config = try RT.referenceConfig() }

    func testImageGoesToTheFastestComfyUIGPU() {
        let r = RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config))
        XCTAssertEqual(r.gpu("img"), "hydra-compute/0")
        let a = r.assignment(for: "img")!
        XCTAssertEqual(a.reservedBytesPerGPU, 8 * RT.GiB)
        XCTAssertEqual(a.expectedRuntimeS, 30, accuracy: 0.01)   // 180 s at weight 1 / 6
        XCTAssertEqual(a.gpuUUIDs, ["hydra-compute-gpu0"])
        XCTAssertTrue(r.pending.isEmpty)
    }

    func testTooBigForEveryGPUIsNeverRunnableWithNumbers() {
        let r = RT.place([RT.job("big", vram: 40)], RT.snapshot(config))
        let p = r.reason(for: "big")!
        XCTAssertEqual(p.code, .unschedulable)
        XCTAssertTrue(p.neverRunnable)
        XCTAssertEqual(p.message, "needs 40.0 GiB on 1 GPU; largest: hydra-ai/0 RTX 5090 31.5 GiB usable")
    }

    func testDoesNotFitNowSaysMostFree() {
        // 32 − 13.3 − 0.5 headroom = 18.2 GiB free on the 5090; the 4090 is nearly full.
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 13.3, "hydra-ai/1": 20])
        let r = RT.place([RT.job("j", vram: 20, constraints: ["node": "hydra-ai"])], snap)
        let p = r.reason(for: "j")!
        XCTAssertEqual(p.code, .insufficientVRAM)
        XCTAssertFalse(p.neverRunnable)
        XCTAssertEqual(p.message, "needs 20.0 GiB on 1 GPU; most free: hydra-ai/0 RTX 5090 18.2 GiB")
    }

    func testRejectionsAreCountedPerFilterAndDimension() {
        // Pinned to hydra-ai: every other node fails the node selector; on hydra-ai the 5090 has
        // 18.2 GiB free and the 4090 3.5 GiB, held by something Hydra does not run.
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 13.3, "hydra-ai/1": 20])
        let r = RT.place([RT.job("j", vram: 20, constraints: ["node": "hydra-ai"])], snap)
        XCTAssertEqual(r.rejections.count, r.pending.count)
        let c = r.rejections(for: "j")!
        let others = config.nodes.count - 1
        XCTAssertEqual(c.nodesEvaluated, config.nodes.count)
        XCTAssertEqual(c.nodesFiltered, ["node": others])
        XCTAssertEqual(c.gpusEvaluated, 2)
        XCTAssertEqual(c.vram, 2)
        XCTAssertEqual(c.foreign, 2)
        XCTAssertEqual(c.held, 0)
        XCTAssertEqual(c.render(), "\(config.nodes.count) node(s), 2 GPU(s) evaluated; filtered: node \(others) node(s); now: vram 2, foreign 2")
        // The message is still the one line with numbers, written after the pass.
        XCTAssertEqual(r.reason(for: "j")?.message, "needs 20.0 GiB on 1 GPU; most free: hydra-ai/0 RTX 5090 18.2 GiB")

        // A draining node counts under its filter, and a second job behind a held GPU counts it as held.
        let d = RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config, draining: ["hydra-compute"]))
        XCTAssertEqual(d.rejections(for: "img")?.nodesFiltered["draining"], 1)
        let big = RT.job("big", vram: 30, priority: 1, constraints: ["node": "hydra-ai"])
        let small = RT.job("small", vram: 30, constraints: ["node": "hydra-ai"])
        let run = RT.running("r", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 10)
        let h = RT.place([big, small], RT.snapshot(config, running: [run]))
        XCTAssertEqual(h.reason(for: "small")?.code, .heldForOtherJob)
        XCTAssertEqual(h.rejections(for: "small")?.held, 1)
    }

    func testUnseenReservationCountsOnTopOfAStaleReading() {
        // Image just started on the 5070 Ti, its process not yet in compute-apps: the reading shows 0.5 GiB.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 8, visible: false)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 0.5], running: [run])
        let r = RT.place([RT.job("b", kind: "image", vram: 8)], snap, policy: RouterPolicy(name: .leastLoaded))
        // 16 − (0.5 + 8) − 0.5 = 7 GiB: the second image must not land there.
        XCTAssertEqual(r.gpu("b"), "hydra-compute/1")
    }

    /// The VRAM tests below put a second job beside a running one: under `hydra` only a policy
    /// that shares busy GPUs (or an urgent job) does that.
    static let sharing = RouterPolicy(sharesBusyGPUs: true)

    func testAShortJobBackfillsAGPUHeldForAGangThatStartsLater() {
        // hydra-ai: the 5090 runs a job for 200 s more, the 4090 is empty. A 2-GPU gang (ranked
        // first) holds the 4090 until the 5090 frees. Of two jobs for hydra-ai, the short one
        // (75 s on the 4090, × 1.3 = 97.5 s) ends before then and starts there; the long one
        // (250 s) would delay the gang and waits.
        let runs = [RT.running("busy", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 4, visible: true, endsIn: 200)]
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 4, "hydra-compute/0": 16, "hydra-compute/1": 12], running: runs)
        let pin: [String: JSONValue] = ["node": "hydra-ai", "service": .array([])]
        let jobs = [RT.job("gang", vram: 4, gpus: 2, priority: 1, spec: ["base_runtime_s": 600], constraints: pin),
                    RT.job("short", vram: 4, spec: ["base_runtime_s": 600], constraints: pin),
                    RT.job("long", vram: 4, at: 1, spec: ["base_runtime_s": 2000], constraints: pin)]
        // Only jobs that end before the held start (`backfillDelay` 0; BackfillDelayTests has the default).
        var beforeOnly = RouterPolicy.hydra
        beforeOnly.backfillDelay = 0
        let r = RT.place(jobs, snap, policy: beforeOnly)
        XCTAssertNil(r.assignment(for: "gang"))
        XCTAssertEqual(r.gpu("short"), "hydra-ai/1")
        XCTAssertNil(r.assignment(for: "long"))
        // By default a job may end up to the gang's wait later (325 s ≤ 2 × 200 s): the long one,
        // ranked first by its path, takes the GPU and the short one waits for it.
        let d = RT.place(jobs, snap)
        XCTAssertEqual(d.gpu("long"), "hydra-ai/1")
        XCTAssertNil(d.assignment(for: "short"))
        // Without backfilling the short one waits too.
        XCTAssertNil(RT.place(jobs, snap, policy: RouterPolicy(backfillMargin: 0)).assignment(for: "short"))
    }

    func testNonUrgentJobWaitsForABusyGPUInsteadOfSharingIt() {
        // The 5070 Ti runs a job for another 20 s and has room; the 3060 is idle. 180 s at weight 1:
        // 20 + 30 s on the 5070 Ti against 60 s on the 3060.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 4, visible: true, endsIn: 20)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 4.5], running: [run])
        let job = RT.job("j", vram: 2, spec: ["base_runtime_s": 180], constraints: ["service": .array([]), "node": "hydra-compute"])
        let r = RT.place([job], snap)
        XCTAssertNil(r.assignment(for: "j"))
        XCTAssertEqual(r.reason(for: "j")?.code, .waitingForBetterGPU)
        XCTAssertEqual(r.reason(for: "j")?.message, "waits for hydra-compute/0 RTX 5070 Ti (busy ~20 s; finishes ~50 s there vs ~60 s on hydra-compute/1 RTX 3060)")
        XCTAssertEqual(r.rejections(for: "j")?.busy, 1)
        XCTAssertEqual(r.rejections(for: "j")?.slower, 1)
        // Sharing allowed, or urgent: it starts beside the running job at once.
        XCTAssertEqual(RT.place([job], snap, policy: Self.sharing).gpu("j"), "hydra-compute/0")
        XCTAssertNotNil(RT.place([RT.job("u", vram: 2, priority: 5, spec: ["base_runtime_s": 180],
                                         constraints: ["service": .array([]), "node": "hydra-compute"])], snap).assignment(for: "u"))
    }

    func testVisibleJobIsNotCountedTwice() {
        // Process visible: the reading (8.6 GiB) already contains the 8 GiB job.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 8, visible: true)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 8.6], running: [run])
        let r = RT.place([RT.job("b", vram: 6.5, constraints: ["node": "hydra-compute", "gpu_index": 0])], snap, policy: Self.sharing)
        // 16 − 8.6 − 0.5 = 6.9 GiB ≥ 6.5: fits (double counting would leave −1.1 GiB).
        XCTAssertEqual(r.gpu("b"), "hydra-compute/0")
    }

    func testLowReadingOfVisibleJobDoesNotOverBook() {
        // The job is visible but still loading (2 GiB of its 8 GiB): the reservation stands.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 8, visible: true)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 2], running: [run])
        let r = RT.place([RT.job("b", vram: 7.6, constraints: ["gpu_model": "5070 ti"])], snap)
        XCTAssertEqual(r.reason(for: "b")?.code, .insufficientVRAM)   // 16 − 8 − 0.5 = 7.5 < 7.6
        let r2 = RT.place([RT.job("b", vram: 7.4, constraints: ["gpu_model": "5070 ti"])], snap, policy: Self.sharing)
        XCTAssertEqual(r2.gpu("b"), "hydra-compute/0")
    }

    func testReservationSettlesIntoTheReadingAfterSettleTime() {
        // Started 2 minutes ago and still not visible: trust the reading (the reservation keeps the floor).
        let run = RT.running("a", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 4, startedAgo: 120, visible: false)
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 10], running: [run])
        let r = RT.place([RT.job("b", vram: 21, constraints: ["gpu_model": "5090"])], snap, policy: Self.sharing)
        XCTAssertEqual(r.gpu("b"), "hydra-ai/0")   // 32 − 10 − 0.5 = 21.5; not 32 − 14 − 0.5
    }

    func testOnePassNeverDoubleBooks() {
        let jobs = (0..<4).map { RT.job("j\($0)", vram: 10, at: Double($0), constraints: ["gpu_model": "5090"]) }
        let r = RT.place(jobs, RT.snapshot(config), policy: Self.sharing)
        XCTAssertEqual(r.assignments.count, 3)   // 3 × 10 ≤ 31.5 < 4 × 10
        XCTAssertEqual(r.reason(for: "j3")?.code, .insufficientVRAM)
    }

    func testGangTakesBothGPUsOfOneNodeAtOnce() {
        let r = RT.place([RT.job("llm70", kind: "llm", vram: 20, gpus: 2, spec: ["model": "llama-3.3-70b", "service": "tabbyapi"])],
                         RT.snapshot(config))
        let a = r.assignment(for: "llm70")!
        XCTAssertEqual(a.node, "hydra-ai")
        XCTAssertEqual(a.gpuIndices, [0, 1])
        XCTAssertEqual(a.expectedRuntimeS, 60.0 / 8, accuracy: 0.01)   // the gang runs at the 4090's pace
    }

    func testGangWaitsWholeWhenOneMemberIsShort() {
        let snap = RT.snapshot(config, used: ["hydra-ai/1": 10])   // 4090: 24 − 10 − 0.5 = 13.5 GiB
        let r = RT.place([RT.job("g", vram: 20, gpus: 2)], snap)
        XCTAssertTrue(r.assignments.isEmpty)
        let p = r.reason(for: "g")!
        XCTAssertEqual(p.code, .insufficientVRAM)
        XCTAssertTrue(p.message.hasPrefix("needs 20.0 GiB on each of 2 GPUs on one node; most free: "), p.message)
        XCTAssertTrue(p.message.contains("hydra-ai/1 RTX 4090 13.5 GiB"), p.message)
    }

    func testGangLargerThanAnyNodeIsUnschedulable() {
        let r = RT.place([RT.job("g", vram: 4, gpus: 3)], RT.snapshot(config))
        let p = r.reason(for: "g")!
        XCTAssertTrue(p.neverRunnable)
        XCTAssertTrue(p.message.hasPrefix("needs 3 GPUs with 4.0 GiB each on one node; at most 2 on"), p.message)
    }

    func testServiceAffinity() {
        let jobs = [
            RT.job("img", kind: "image", vram: 8),
            RT.job("tts", kind: "tts", vram: 4, at: 1),
            RT.job("tabby", kind: "llm", vram: 1, spec: ["service": "tabbyapi"]),
            RT.job("oll", kind: "llm", vram: 6, at: 2, spec: ["service": "ollama"]),
            RT.job("score", kind: "score", gpus: 0),
            RT.job("over", kind: "image", vram: 1, constraints: ["service": "tabbyapi"]),
        ]
        let r = RT.place(jobs, RT.snapshot(config), policy: Self.sharing)
        XCTAssertEqual(r.assignment(for: "img")?.node, "hydra-compute")
        XCTAssertEqual(r.assignment(for: "tts")?.node, "hydra-compute")
        XCTAssertEqual(r.assignment(for: "tabby")?.node, "hydra-ai")
        XCTAssertEqual(r.assignment(for: "oll")?.node, "hydra-compute")
        XCTAssertEqual(r.assignment(for: "score")?.node, "hydra-storage")
        XCTAssertEqual(r.assignment(for: "score")?.gpuUUIDs, [])
        XCTAssertEqual(r.assignment(for: "over")?.node, "hydra-ai")
    }

    func testMissingServiceIsNeverRunnable() {
        let r = RT.place([RT.job("x", vram: 1, constraints: ["service": "stable-audio"])], RT.snapshot(config))
        XCTAssertEqual(r.reason(for: "x"), PendingReason(jobID: "x", code: .unschedulable, message: "no node runs stable-audio", neverRunnable: true))
    }

    func testDrainingAndDownNodesWait() {
        let r = RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config, draining: ["hydra-compute"]))
        XCTAssertEqual(r.reason(for: "img"), PendingReason(jobID: "img", code: .waitingForNode,
                                                            message: "waits for comfyui (hydra-compute draining)", neverRunnable: false))
        let r2 = RT.place([RT.job("s", kind: "score", gpus: 0)], RT.snapshot(config, down: ["hydra-storage"]))
        XCTAssertEqual(r2.reason(for: "s")?.message, "waits for scorer (hydra-storage down)")
        // No service: a draining node is simply skipped.
        let r3 = RT.place([RT.job("c", vram: 4)], RT.snapshot(config, draining: ["hydra-ai"]))
        XCTAssertEqual(r3.assignment(for: "c")?.node, "hydra-compute")
    }

    func testCPUOnlyJobsUseAnyNodeAndItsSlots() {
        // GPU-less node included; 3 nodes × 4 slots = 12 run now, the 13th waits.
        let jobs = (0..<13).map { RT.job("c\($0)", gpus: 0, at: Double($0), spec: ["duration_s": 10]) }
        let r = RT.place(jobs, RT.snapshot(config))
        XCTAssertEqual(r.assignments.count, 12)
        XCTAssertEqual(Set(r.assignments.map(\.node)), ["hydra-ai", "hydra-compute", "hydra-storage"])
        XCTAssertEqual(r.reason(for: "c12")?.code, .waitingForCPUSlot)
        XCTAssertTrue(r.reason(for: "c12")!.message.contains("next free in ~10 s"), r.reason(for: "c12")!.message)
    }

    func testRunningCPUJobsTakeSlots() {
        var cfg = config!
        cfg.nodes[2].cpuSlots = 2
        let running = (0..<2).map { RT.running("r\($0)", node: "hydra-storage", gpus: [], gib: 0, endsIn: 30) }
        let r = RT.place([RT.job("s", kind: "score", gpus: 0)], RT.snapshot(cfg, running: running))
        XCTAssertEqual(r.reason(for: "s")?.code, .waitingForCPUSlot)
    }

    func testHydraWaitsForABusyFasterGPU() {
        // 5070 Ti busy for 10 s more: 10 + 30 = 40 s there, 60 s on the idle 3060.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 8, visible: true, endsIn: 10)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 8.5], running: [run])
        let jobs = [RT.job("i1", kind: "image", vram: 8), RT.job("i2", kind: "image", vram: 8, at: 1)]
        let r = RT.place(jobs, snap)
        let p = r.reason(for: "i1")!
        XCTAssertEqual(p.code, .waitingForBetterGPU)
        XCTAssertEqual(p.message, "waits for hydra-compute/0 RTX 5070 Ti (busy ~10 s; finishes ~40 s there vs ~60 s on hydra-compute/1 RTX 3060)")
        // The next image sees the 5070 Ti planned for i1 (70 s) and takes the 3060 (60 s).
        XCTAssertEqual(r.gpu("i2"), "hydra-compute/1")
        // least-loaded does not wait.
        let r2 = RT.place(jobs, snap, policy: RouterPolicy(name: .leastLoaded))
        XCTAssertEqual(r2.gpu("i1"), "hydra-compute/1")
    }

    func testWaitingJobHoldsItsGPUAgainstLaterJobs() {
        // A 14 GiB job waits for the 5070 Ti (8 GiB taken); a later small job may not slip onto it.
        let run = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 8, visible: true, endsIn: 20)
        let snap = RT.snapshot(config, used: ["hydra-compute/0": 8], running: [run])
        let jobs = [RT.job("big", kind: "lora", vram: 14, priority: 5),
                    RT.job("small", vram: 2, constraints: ["gpu_model": "5070 ti"])]
        let r = RT.place(jobs, snap)
        XCTAssertEqual(r.reason(for: "big")?.code, .insufficientVRAM)
        XCTAssertTrue(r.reason(for: "big")!.message.contains("expected on hydra-compute/0 RTX 5070 Ti in ~20 s"), r.reason(for: "big")!.message)
        XCTAssertEqual(r.reason(for: "small")?.code, .heldForOtherJob)
        XCTAssertEqual(r.reason(for: "small")?.message, "waits for hydra-compute/0 RTX 5070 Ti, held for job big ranked before it")
    }

    func testModelLoadedIsPreferred() {
        var cfg = config!
        cfg.nodes[1].gpus[1].models = ["llama3.1-8b"]
        // 3060 with the model loaded: 30/3 = 10 s; 5070 Ti: 5 s + 30 s load.
        let r = RT.place([RT.job("o", kind: "llm", vram: 6, spec: ["model": "llama3.1-8b", "service": "ollama", "base_runtime_s": 30])],
                         RT.snapshot(cfg))
        XCTAssertEqual(r.gpu("o"), "hydra-compute/1")
    }

    func testLearnedRuntimeAndPeakVRAMAreUsed() {
        let stats = RuntimeStats(rows: [
            RuntimeStatsRow(kind: "image", modelKey: "flux", gpuModel: "NVIDIA GeForce RTX 5070 Ti", n: 10, meanS: 90, p95S: 100, peakVRAMP95Bytes: 9 * RT.GiB),
            RuntimeStatsRow(kind: "image", modelKey: "flux", gpuModel: "NVIDIA GeForce RTX 3060", n: 10, meanS: 40, p95S: 45, peakVRAMP95Bytes: 10 * RT.GiB),
        ])
        let r = RT.place([RT.job("f", kind: "image", spec: ["model": "flux"])], RT.snapshot(config), stats: stats)
        let a = r.assignment(for: "f")!
        XCTAssertEqual(a.reservedBytesPerGPU, 10 * RT.GiB)            // max p95 peak over GPU models
        XCTAssertEqual(r.gpu("f"), "hydra-compute/1")                 // learned: faster on the 3060 for this model
        XCTAssertEqual(a.expectedRuntimeS, 40)
        // Too few samples: defaults apply.
        let few = RuntimeStats(rows: [RuntimeStatsRow(kind: "image", modelKey: "flux", gpuModel: "NVIDIA GeForce RTX 3060", n: 2, meanS: 1, p95S: 1, peakVRAMP95Bytes: 1)])
        XCTAssertEqual(RT.place([RT.job("f", kind: "image", spec: ["model": "flux"])], RT.snapshot(config), stats: few).assignment(for: "f")?.reservedBytesPerGPU, 8 * RT.GiB)
    }

    func testOOMRetryAsksForMoreAndMovesToABiggerGPU() {
        // 8 GiB failed with OOM → 12 GiB: no longer fits the 3060 (11.5 usable); goes to the 5070 Ti.
        let job = RT.job("img", kind: "image", vram: 8, lastFailure: .oom, lastReserved: 8)
        let busy = RT.running("a", node: "hydra-compute", gpus: ["hydra-compute-gpu1"], gib: 0.1, visible: true, endsIn: 1000)
        let r = RT.place([job], RT.snapshot(config, running: [busy]), policy: RouterPolicy(name: .leastLoaded))
        XCTAssertEqual(r.assignment(for: "img")?.reservedBytesPerGPU, 12 * RT.GiB)
        XCTAssertEqual(r.gpu("img"), "hydra-compute/0")
        // Twice OOM from 12 GiB → 18 GiB: ComfyUI's GPUs can never hold it.
        let again = RT.job("img", kind: "image", vram: 8, lastFailure: .oom, lastReserved: 12)
        let p = RT.place([again], RT.snapshot(config)).reason(for: "img")!
        XCTAssertEqual(p.message, "needs 18.0 GiB on 1 GPU; largest: hydra-compute/0 RTX 5070 Ti 15.5 GiB usable")
    }

    func testSelectors() {
        let r = RT.place([RT.job("a", vram: 2, constraints: ["gpu_model": "4090"]),
                          RT.job("b", vram: 2, constraints: ["node": "hydra-compute", "gpu_index": 1])], RT.snapshot(config))
        XCTAssertEqual(r.gpu("a"), "hydra-ai/1")
        XCTAssertEqual(r.gpu("b"), "hydra-compute/1")
        let p = RT.place([RT.job("c", vram: 2, constraints: ["gpu_model": "a100"])], RT.snapshot(config)).reason(for: "c")!
        XCTAssertTrue(p.neverRunnable)
        XCTAssertTrue(p.message.contains("is not a a100"), p.message)
        XCTAssertEqual(RT.place([RT.job("d", vram: 2, constraints: ["node": "nope"])], RT.snapshot(config)).reason(for: "d")?.message, "no node named nope")
    }

    func testSnapshotFromLiveInventory() {
        let inv = Inventory(gpus: [GPUInfo(index: 0, uuid: "GPU-aaa", name: "NVIDIA GeForce RTX 5090", memoryTotalBytes: 32 * RT.GiB, memoryUsedBytes: 4 * RT.GiB),
                                   GPUInfo(index: 1, uuid: "GPU-bbb", name: "NVIDIA GeForce RTX 4090", memoryTotalBytes: 24 * RT.GiB, memoryUsedBytes: nil)])
        let snap = ClusterSnapshot.build(config: config, live: ["hydra-ai": .init(up: true, inventory: inv)], running: [])
        XCTAssertEqual(snap.nodes.map(\.up), [true, false, false])
        XCTAssertEqual(snap.nodes[0].gpus.map(\.uuid), ["GPU-aaa", "GPU-bbb"])
        XCTAssertEqual(snap.nodes[0].gpus[1].weight, 8)
        XCTAssertEqual(snap.headroomBytes, 512 * ByteSize.MiB)
        XCTAssertEqual(RT.place([RT.job("x", vram: 27)], snap).assignment(for: "x")?.gpuUUIDs, ["GPU-aaa"])   // 32 − 4 − 0.5 = 27.5
        XCTAssertEqual(RT.place([RT.job("x", vram: 28)], snap).reason(for: "x")?.code, .insufficientVRAM)
    }
}

final class RouterLLMEndpointTests: XCTestCase {
    func testAnLLMJobNamingItsEndpointGoesWhereThatServiceRuns() {
        let config = ClusterConfig(nodes: [
            NodeConfig(name: "hydra-ai", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), weight: 10)], services: ["tabbyapi"]),
            NodeConfig(name: "hydra-compute", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 3060", memory: .gib(12), weight: 3)], services: ["ollama"]),
        ])
        let live = ["hydra-ai": ClusterSnapshot.NodeLive(up: true), "hydra-compute": ClusterSnapshot.NodeLive(up: true)]
        let snap = ClusterSnapshot.build(config: config, live: live, running: [])
        let now = Date()
        let ollama = RouterJob(id: "o", kind: "llm", spec: ["endpoint": "ollama"], vramRequestBytes: 4 << 30, gpusRequested: 1, submittedAt: now)
        let any = RouterJob(id: "a", kind: "llm", spec: [:], vramRequestBytes: 4 << 30, gpusRequested: 1, submittedAt: now)
        XCTAssertEqual(Router.place(pending: [ollama], snapshot: snap, now: now).assignments.first?.node, "hydra-compute")
        XCTAssertEqual(Router.place(pending: [any], snapshot: snap, now: now).assignments.first?.node, "hydra-ai", "without an endpoint the fastest LLM node wins")
    }
}
