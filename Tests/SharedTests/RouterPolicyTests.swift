import XCTest
@testable import HydraCore

final class RouterPolicyTests: XCTestCase {
    var config: ClusterConfig!
    override func setUpWithError() throws { config = try RT.referenceConfig() }

    // MARK: order

    func testHigherPriorityGetsTheOnlyGPU() {
        let jobs = [RT.job("low", vram: 10, priority: 0, at: 0, constraints: ["gpu_model": "5070 ti"]),
                    RT.job("high", vram: 10, priority: 5, at: 10, constraints: ["gpu_model": "5070 ti"])]
        let r = RT.place(jobs, RT.snapshot(config), now: RT.t0.addingTimeInterval(20))
        XCTAssertEqual(r.gpu("high"), "hydra-compute/0")
        XCTAssertEqual(r.reason(for: "low")?.code, .insufficientVRAM)
    }

    func testAgingLetsAnOldJobOvertake() {
        // Waited 2 h at priority 0 with a 10 min aging step: effective 12 > 5.
        let jobs = [RT.job("old", vram: 10, priority: 0, at: 0, constraints: ["gpu_model": "5070 ti"]),
                    RT.job("new", vram: 10, priority: 5, at: 7190, constraints: ["gpu_model": "5070 ti"])]
        let r = RT.place(jobs, RT.snapshot(config), now: RT.t0.addingTimeInterval(7200))
        XCTAssertEqual(r.gpu("old"), "hydra-compute/0")
        XCTAssertEqual(JobOrdering.effectivePriority(jobs[0], now: RT.t0.addingTimeInterval(7200), agingStepS: 600), 12)
    }

    func testFairShareInterleavesBatchesOfEqualPriority() {
        let a = (0..<4).map { RT.job("a\($0)", batch: "A", at: Double($0)) }
        let b = (0..<2).map { RT.job("b\($0)", batch: "B", at: 100 + Double($0)) }
        let all = a + b
        let order = JobOrdering.order(all, running: [], now: RT.t0.addingTimeInterval(200), agingStepS: 600).map { all[$0].id }
        XCTAssertEqual(order, ["a0", "b0", "a1", "b1", "a2", "a3"])
        // A already has 2 jobs on nodes: B goes first.
        let running = (0..<2).map { RouterRunningJob(id: "r\($0)", batchID: "A", kind: "command", node: "hydra-ai", gpuUUIDs: [], reservedBytesPerGPU: 0, placedAt: RT.t0) }
        let order2 = JobOrdering.order(all, running: running, now: RT.t0.addingTimeInterval(200), agingStepS: 600).map { all[$0].id }
        XCTAssertEqual(order2, ["b0", "b1", "a0", "a1", "a2", "a3"])
    }

    // MARK: policies

    func testPolicyNames() {
        XCTAssertEqual(RouterPolicy.named("seed-static")?.name, .seedStatic)
        XCTAssertEqual(RouterPolicy.named("HYDRA")?.name, .hydra)
        XCTAssertNil(RouterPolicy.named("fastest"))
        XCTAssertEqual(RouterPolicy.Name.allCases.map(\.rawValue), ["hydra", "seed-static", "least-loaded", "random"])
    }

    func testSeedStaticRules() {
        let seed = RouterPolicy(name: .seedStatic)
        let jobs = [
            RT.job("llm", kind: "llm", vram: 10, spec: ["model": "llama-3.3-70b-instruct"], constraints: ["service": "tabbyapi"]),
            RT.job("img", kind: "image", vram: 8),
            RT.job("vid", kind: "video", vram: 10),
            RT.job("voice", kind: "voice", vram: 3),
        ]
        let r = RT.place(jobs, RT.snapshot(config), policy: seed)
        XCTAssertEqual(r.gpu("llm"), "hydra-ai/0")
        XCTAssertEqual(r.gpu("img"), "hydra-compute/0")
        XCTAssertEqual(r.gpu("vid"), "hydra-ai/1")
        XCTAssertEqual(r.gpu("voice"), "hydra-compute/1")
        // An image waits for the busy 5070 Ti even though the 3060 is idle.
        let busy = RT.running("x", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 10, visible: true, endsIn: 100)
        let r2 = RT.place([RT.job("img2", kind: "image", vram: 8)], RT.snapshot(config, used: ["hydra-compute/0": 10], running: [busy]), policy: seed)
        XCTAssertEqual(r2.reason(for: "img2")?.code, .insufficientVRAM)
        // Small LLM: no rule, least busy GPU.
        let r3 = RT.place([RT.job("s", kind: "llm", vram: 4, spec: ["model": "qwen2.5-7b", "service": "ollama"])],
                          RT.snapshot(config, running: [busy]), policy: seed)
        XCTAssertEqual(r3.gpu("s"), "hydra-compute/1")
        XCTAssertEqual(SeedStaticRuleFilter.parameterBillions("llama-3.3-70b-instruct-exl2-4.0bpw"), 70)
        XCTAssertNil(SeedStaticRuleFilter.parameterBillions("sdxl"))
    }

    func testLeastLoadedPicksTheIdleGPUEvenIfSlow() {
        let busy = RT.running("x", node: "hydra-compute", gpus: ["hydra-compute-gpu0"], gib: 1, visible: true, endsIn: 5)
        let r = RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config, running: [busy]), policy: RouterPolicy(name: .leastLoaded))
        XCTAssertEqual(r.gpu("img"), "hydra-compute/1")
        // hydra: 5 + 30 s on the 5070 Ti beats 60 s on the 3060; it waits for it to be idle, or,
        // sharing busy GPUs, starts beside the running job.
        let hydra = RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config, running: [busy]))
        XCTAssertNil(hydra.assignment(for: "img"))
        XCTAssertEqual(hydra.reason(for: "img")?.code, .waitingForBetterGPU)
        XCTAssertEqual(RT.place([RT.job("img", kind: "image", vram: 8)], RT.snapshot(config, running: [busy]),
                                policy: RouterPolicy(sharesBusyGPUs: true)).gpu("img"), "hydra-compute/0")
    }

    func testRandomIsSeededAndOnlyPlacesWhereItFits() {
        let jobs = (0..<8).map { RT.job("j\($0)", vram: 3, at: Double($0)) }
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 30])   // the 5090 has 1.5 GiB: never chosen
        let a = RT.place(jobs, snap, policy: RouterPolicy(name: .random, seed: 7))
        let b = RT.place(jobs, snap, policy: RouterPolicy(name: .random, seed: 7))
        XCTAssertEqual(a, b)
        XCTAssertFalse(a.assignments.contains { $0.node == "hydra-ai" && $0.gpuIndices == [0] })
        let c = RT.place(jobs, snap, policy: RouterPolicy(name: .random, seed: 8))
        let spread = Set((a.assignments + c.assignments).map { "\($0.node)/\($0.gpuIndices)" })
        XCTAssertGreaterThan(spread.count, 1)
    }

    // MARK: weights

    func testBuiltInWeights() {
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce RTX 5090"), 10)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce RTX 4090"), 8)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce RTX 5070 Ti"), 6)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce RTX 5070"), 4.5)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce RTX 3060"), 3)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA A100-SXM4-80GB"), 12)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA A10"), 3.5)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA H100 80GB HBM3"), 20)
        XCTAssertEqual(GPUWeights.builtIn("Tesla T4"), 1.5)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA L4"), 3)
        XCTAssertEqual(GPUWeights.builtIn("NVIDIA GeForce GTX 1080 Ti"), 1.5)
        XCTAssertNil(GPUWeights.builtIn("Intel Arc A380"))
        XCTAssertEqual(GPUWeights.weight(model: "Intel Arc A380", configured: nil), GPUWeights.unknownWeight)
        XCTAssertEqual(GPUWeights.weight(model: "NVIDIA GeForce RTX 3060", configured: 4), 4)
        XCTAssertEqual(GPUWeights.shortName("NVIDIA GeForce RTX 5070 Ti"), "RTX 5070 Ti")
    }
}
