import XCTest
@testable import HydraCore

/// A class of short jobs that holds back a large volume of work ranks by that volume (`GatedWork`).
final class GatedWorkTests: XCTestCase {
    /// One node, one GPU at the reference weight: whichever job ranks first takes it.
    let snap = ClusterSnapshot.build(config: ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [
        GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), weight: 10),
    ])]), live: ["n": .init(up: true)], running: [])

    /// The gated rule alone. On one GPU the tail-first order (`ordersTailFirst`) would also run the
    /// expansions first, since their images wait on them; there, with the images on the same GPU,
    /// no order ends sooner than another, and these tests are about what the gated rule raises.
    let gated: RouterPolicy = { var p = RouterPolicy.hydra; p.ordersTailFirst = false; return p }()

    func job(_ id: String, kind: String = "command", base: Double, tail: Double = 0, waitsOn: [String] = []) -> RouterJob {
        var j = RT.job(id, kind: kind, vram: 2, batch: "b", spec: ["base_runtime_s": .number(base)], constraints: ["service": .array([])])
        j.tailS = tail
        j.waitsOn = waitsOn
        return j
    }

    /// Four 10 s expansions, each feeding a 200 s image, against a 300 s video: one expansion
    /// and its image (210 s) rank below the video, but the four images need 800 s of the GPU,
    /// which cannot start before the expansions end.
    func testShortJobsThatHoldBackMoreWorkThanALongJobRankFirst() {
        let expansions = (0..<4).map { job("expand-\($0)", base: 100, tail: 200) }
        let video = job("video", kind: "video", base: 3000)
        let images = (0..<4).map { job("image-\($0)", kind: "image", base: 2000, waitsOn: ["expand-\($0)"]) }
        let r = Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0, policy: gated)
        XCTAssertEqual(r.assignments.count, 1)
        XCTAssertEqual(r.assignments.first?.jobID.hasPrefix("expand-"), true, "\(r.assignments.map(\.jobID))")
        // Ranked by the longest chain alone, the video goes first.
        var off = gated
        off.ranksGatedWork = false
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0, policy: off)
            .assignments.map(\.jobID), ["video"])
        // One image held back is no more than the chain already says (210 s): the video first.
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: [images[0]], snapshot: snap, now: RT.t0, policy: gated)
            .assignments.map(\.jobID), ["video"])
    }

    /// Work that waits on jobs that are not pending (running, done, unknown) raises nothing.
    func testOnlyPendingJobsAreRaised() {
        let expansions = (0..<4).map { job("expand-\($0)", base: 100, tail: 200) }
        let video = job("video", kind: "video", base: 3000)
        let images = (0..<4).map { job("image-\($0)", kind: "image", base: 2000, waitsOn: ["elsewhere-\($0)"]) }
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0, policy: gated)
            .assignments.map(\.jobID), ["video"])
        // A CPU-only job waiting on the expansions adds no GPU work.
        var cpu = RT.job("report", spec: ["base_runtime_s": .number(100_000)], constraints: ["service": .array([])])
        cpu.gpusRequested = 0
        cpu.waitsOn = expansions.map(\.id)
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: [cpu], snapshot: snap, now: RT.t0, policy: gated)
            .assignments.map(\.jobID), ["video"])
    }

    /// A class that gates a large stage keeps its GPUs from jobs that could go elsewhere
    /// (`GatedWork.heldBack` in the pressed test of `ScarceGPUs`). Node a (two weight-20 GPUs)
    /// alone runs tabbyapi; node b has four weight-15 GPUs. Four 2-GPU expansions (10 s each on a)
    /// own little work, but eight 200 s images wait on them. A LoRA run that ranks first (priority
    /// 1) and fits anywhere is 100 s on a GPU of a, 133 s on one of b: taking a, it holds back
    /// every expansion, and with them the images.
    func testAClassThatGatesALargeStageKeepsItsGPUs() {
        let gpu = { (w: Double) in GPUConfig(model: "NVIDIA H100 80GB HBM3", memory: .gib(80), weight: w) }
        let snap = ClusterSnapshot.build(config: ClusterConfig(nodes: [
            NodeConfig(name: "a", gpus: [gpu(20), gpu(20)], services: ["tabbyapi", "comfyui"]),
            NodeConfig(name: "b", gpus: [gpu(15), gpu(15), gpu(15), gpu(15)], services: ["comfyui"]),
        ]), live: ["a": .init(up: true), "b": .init(up: true)], running: [])
        let service = { (s: String) -> [String: JSONValue] in ["service": .array([.string(s)])] }
        let lora = RT.job("lora", kind: "lora", vram: 40, priority: 1, batch: "l", spec: ["base_runtime_s": 2000],
                          constraints: ["service": .array([])])
        let expansions = (0..<4).map {
            RT.job("expand-\($0)", kind: "llm", vram: 4, gpus: 2, batch: "b", spec: ["base_runtime_s": 200], constraints: service("tabbyapi"))
        }
        let images = (0..<8).map { i -> RouterJob in
            var j = RT.job("image-\(i)", kind: "image", vram: 10, batch: "b", spec: ["base_runtime_s": 4000], constraints: service("comfyui"))
            j.waitsOn = ["expand-\(i % 4)"]
            return j
        }
        let r = Router.place(pending: [lora] + expansions, upcoming: images, snapshot: snap, now: RT.t0)
        XCTAssertEqual(r.assignments.first { $0.jobID == "lora" }?.node, "b", "\(r.assignments)")
        XCTAssertEqual(r.assignments.filter { $0.jobID.hasPrefix("expand-") }.map(\.node), ["a"], "\(r.assignments)")
        // Counting only their own work, the expansions are not pressed: the LoRA run takes a GPU of a.
        var off = RouterPolicy.hydra
        off.pressesHeldBackWork = false
        let o = Router.place(pending: [lora] + expansions, upcoming: images, snapshot: snap, now: RT.t0, policy: off)
        XCTAssertEqual(o.assignments.first { $0.jobID == "lora" }?.node, "a", "\(o.assignments)")
        XCTAssertFalse(o.assignments.contains { $0.jobID.hasPrefix("expand-") })
        // Images that wait on jobs not pending here hold back nothing: the LoRA run takes a again.
        let elsewhere = images.map { var j = $0; j.waitsOn = ["done-\(j.id)"]; return j }
        let done = Router.place(pending: [lora] + expansions, upcoming: elsewhere, snapshot: snap, now: RT.t0)
        XCTAssertEqual(done.assignments.first { $0.jobID == "lora" }?.node, "a", "\(done.assignments)")
    }

    /// What each pending job holds back: an upcoming gang's k GPUs of work, split among the pending
    /// jobs it names; nothing for CPU-only or urgent dependents, or for names that are not pending.
    func testHeldBackSplitsEachDependentsGPUWorkAmongThePendingJobsItNames() {
        let pending = [job("a", base: 10), job("b", base: 10), job("c", base: 10)]
        var gang = job("gang", base: 300, waitsOn: ["a", "b", "gone"])
        gang.gpusRequested = 2
        let image = job("image", kind: "image", base: 50, waitsOn: ["a"])
        var cpu = job("report", base: 1000, waitsOn: ["c"])
        cpu.gpusRequested = 0
        cpu.vramRequestBytes = nil
        var urgent = job("chat", base: 1000, waitsOn: ["c"])
        urgent.priority = 10
        let upcoming = [gang, image, cpu, urgent, job("late", base: 70, waitsOn: ["done"])]
        let demands = (pending + upcoming).map { JobDemand(job: $0, stats: .empty, policy: .hydra) }
        guard let waits = GatedWork.waits(pending: pending, upcoming: upcoming) else { return XCTFail("no waits found") }
        XCTAssertEqual(waits, [[0, 1], [0], [2], [2], []])
        // The gang: 300 units on each of 2 GPUs, half to a and half to b; the image's 50 to a.
        XCTAssertEqual(GatedWork.heldBack(waits, pendingCount: pending.count, demands: demands), [350, 300, 0])
        // Nothing upcoming names a pending job: no links at all.
        XCTAssertNil(GatedWork.waits(pending: pending, upcoming: [job("late", base: 70, waitsOn: ["done"])]))
    }
}
