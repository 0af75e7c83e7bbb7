import XCTest
@testable import HydraCore

/// Jobs that can use exactly the same GPUs take their places in the longest-path order by how far
/// each would stick out if it ran last (`JobOrdering.tailFirst`, `RouterPolicy.ordersTailFirst`).
final class TailFirstOrderTests: XCTestCase {
    /// One node, one GPU at the reference weight: whichever job ranks first takes it.
    let oneGPU = ClusterSnapshot.build(config: ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [
        GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), weight: 10),
    ])]), live: ["n": .init(up: true)], running: [])

    func job(_ id: String, kind: String = "command", base: Double, tail: Double = 0, at: Double = 0) -> RouterJob {
        var j = RT.job(id, kind: kind, vram: 2, batch: "b", at: at, spec: ["base_runtime_s": .number(base)],
                       constraints: ["service": .array([])])
        j.tailS = tail
        return j
    }

    /// On one GPU the jobs run one after another whatever the order; only the work that waits on
    /// the last one sticks out. A 600 s job without dependents ranks above a 60 s one that a 120 s
    /// image waits on by longest path (600 > 180), and would then end the night with the image
    /// behind the expansion; largest tail first runs the expansion first.
    func testOnOneGPUTheJobWithDependentsGoesBeforeALongerJobWithout() {
        let lora = job("lora", kind: "lora", base: 6000)
        let expand = job("expand", kind: "llm", base: 600, tail: 120, at: 1)
        XCTAssertEqual(Router.place(pending: [lora, expand], snapshot: oneGPU, now: RT.t0).assignments.map(\.jobID), ["expand"])
        var off = RouterPolicy.hydra
        off.ordersTailFirst = false
        XCTAssertEqual(Router.place(pending: [lora, expand], snapshot: oneGPU, now: RT.t0, policy: off).assignments.map(\.jobID), ["lora"])
        // Without a tail the two rules agree: the longer job first.
        let plain = job("expand", kind: "llm", base: 600, at: 1)
        XCTAssertEqual(Router.place(pending: [lora, plain], snapshot: oneGPU, now: RT.t0).assignments.map(\.jobID), ["lora"])
    }

    /// On m GPUs a job started last ends up to its runtime × (1 − 1/m) past the others: with four
    /// equal GPUs the 600 s job (450 s) still goes before the 60 s job with a 120 s tail (165 s);
    /// with two, 300 s against 150 s; only a tail past 405 s (on four) puts the short job first.
    func testOnSeveralGPUsTheRunTimeStillCountsByTheShareThatSticksOut() {
        var paths = [600.0, 180]
        let own = [600.0, 60]
        JobOrdering.tailFirst(&paths, own: own, set: [0, 0], gpus: [4])
        XCTAssertEqual(paths, [600, 180])
        JobOrdering.tailFirst(&paths, own: own, set: [0, 0], gpus: [2])
        XCTAssertEqual(paths, [600, 180])
        paths = [600, 60 + 400]
        JobOrdering.tailFirst(&paths, own: own, set: [0, 0], gpus: [4])
        XCTAssertEqual(paths, [600, 460])
        paths = [600, 60 + 420]
        JobOrdering.tailFirst(&paths, own: own, set: [0, 0], gpus: [4])
        XCTAssertEqual(paths, [480, 600])
        // The same two jobs in different sets, or with different priorities: no swap.
        paths = [600, 60 + 420]
        JobOrdering.tailFirst(&paths, own: own, set: [0, 1], gpus: [1, 1])
        XCTAssertEqual(paths, [600, 480])
        paths = [600, 60 + 420]
        JobOrdering.tailFirst(&paths, own: own, set: [-1, -1], gpus: [])
        XCTAssertEqual(paths, [600, 480])
    }

    /// Random sets, paths and runtimes: each set keeps the values it had (so its place among other
    /// jobs stays), jobs outside every set keep theirs, a set whose members share one tail is not
    /// touched, and inside a set the values fall as the stick-out key falls.
    func testGeneratedSetsKeepTheirValuesInStickOutOrder() {
        var rng = SplitMix64(seed: 15)
        for _ in 0..<500 {
            let n = Int(rng.next() % 40) + 1
            let sets = Int(rng.next() % 5) + 1
            let gpus = (0..<sets).map { _ in 1 + Double(rng.next() % 60) / 10 }
            var set: [Int] = [], own: [Double] = [], paths: [Double] = []
            let sameTail = rng.next() % 4 == 0
            for _ in 0..<n {
                set.append(Int(rng.next() % UInt64(sets + 1)) - 1)
                let o = Double(rng.next() % 1000)
                own.append(o)
                paths.append(o + (sameTail ? 50 : Double(rng.next() % 3 == 0 ? 0 : rng.next() % 800)))
            }
            var after = paths
            JobOrdering.tailFirst(&after, own: own, set: set, gpus: gpus)
            for j in 0..<n where set[j] < 0 { XCTAssertEqual(after[j], paths[j]) }
            if sameTail { XCTAssertEqual(after, paths); continue }
            for s in 0..<sets {
                let js = (0..<n).filter { set[$0] == s }
                XCTAssertEqual(js.map { paths[$0] }.sorted(), js.map { after[$0] }.sorted(), "set \(s) lost or gained a value")
                let key = { (j: Int) in paths[j] - own[j] / max(1, gpus[s]) }
                for a in js { for b in js where key(a) > key(b) {
                    XCTAssertGreaterThanOrEqual(after[a], after[b], "a job that sticks out further ranks below one that sticks out less")
                } }
            }
        }
    }

    /// Generated seed 145: the only tabbyapi GPU (a 3090, which binds the bound) runs seventeen
    /// 4-minute expansions, each of which an image and a score wait on, and one 38-minute LoRA run
    /// (that GPU is also its only one). Longest path first ran the LoRA run before the last ten
    /// expansions, and the night ended 3.5 minutes after that GPU's work with the last image and
    /// score; tail first runs the LoRA run last and ends at the bound.
    func testGeneratedSeed145EndsWithTheJobThatHasNoDependents() throws {
        let sc = try ScenarioGenerator.generate(seed: 145)
        let sim = Simulator(cluster: sc.cluster, workload: sc.workload, seed: 1)
        let on = sim.run(policy: .hydra)
        var policy = RouterPolicy.hydra
        policy.ordersTailFirst = false
        let off = sim.run(policy: policy)
        XCTAssertTrue(on.neverRan.isEmpty && off.neverRan.isEmpty)
        let last = { (r: SimulationReport) in r.timeline.max { ($0.finishS ?? 0) < ($1.finishS ?? 0) }?.job }
        XCTAssertEqual(last(on), "lora-0")
        XCTAssertNotEqual(last(off), "lora-0")
        XCTAssertLessThan(on.makespanS, off.makespanS - 60)
        XCTAssertLessThan(on.makespanS, on.lowerBoundS * 1.001)
    }
}
