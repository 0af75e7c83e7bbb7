import XCTest
@testable import HydraCore

/// Batch 2-GPU gangs in a ring on a node with an odd number of GPUs (`GangRing`).
final class GangRingTests: XCTestCase {
    let gain = RouterPolicy.hydra.gangRingMinGain, use = RouterPolicy.hydra.gangRingMinUse

    func testARingOnlyWhereItOutpacesTheBestDisjointPairs() {
        // Every pair at the 3060's pace: one gang at a time does 3, a ring 3 × 3 / 2 = 4.5.
        XCTAssertNotNil(GangRing.cycle(weights: [3, 8, 3], minGain: gain, minUse: use))
        // 5070 Ti, 5070 Ti, 3090: 6 alone, (6 + 5 + 5) / 2 = 8 in a ring.
        XCTAssertNotNil(GangRing.cycle(weights: [6, 6, 5], minGain: gain, minUse: use))
        // Two fast GPUs and a slow one: the fast pair alone does 6, the ring (6 + 3 + 3) / 2 = 6.
        XCTAssertNil(GangRing.cycle(weights: [6, 6, 3], minGain: gain, minUse: use))
        // An H100 beside two L4s: the ring gains (4.5 against 3) but spends the H100 at an L4's
        // pace, 9 of the node's 26 units: the H100 is worth more to other jobs alone.
        XCTAssertNil(GangRing.cycle(weights: [20, 3, 3], minGain: gain, minUse: use))
        XCTAssertNotNil(GangRing.cycle(weights: [20, 3, 3], minGain: gain, minUse: 0.3))
        // Even counts pair up without a ring; one or two GPUs have none; off at 0.
        XCTAssertNil(GangRing.cycle(weights: [6, 6, 6, 6], minGain: gain, minUse: use))
        XCTAssertNil(GangRing.cycle(weights: [6, 6], minGain: gain, minUse: use))
        XCTAssertNil(GangRing.cycle(weights: [3, 8, 3], minGain: 0, minUse: use))
        // Five equal GPUs: two pairs do 12, a ring of five 15 (1.25 ×).
        let five = GangRing.cycle(weights: [6, 6, 6, 6, 6], minGain: gain, minUse: use)
        XCTAssertEqual(five?.count, 5)
        XCTAssertEqual(Set(five ?? []), [0, 1, 2, 3, 4])
        XCTAssertNil(GangRing.cycle(weights: [6, 6, 6, 6, 6], minGain: 1.3, minUse: use))
    }

    func testTheRingPutsFastGPUsBesideEachOther() throws {
        // 10, 3, 10, 3, 10: the ring 10-10 … keeps the three fast ones adjacent where it can.
        let order = try XCTUnwrap(GangRing.cycle(weights: [10, 3, 10, 3, 10], minGain: 1.0, minUse: 0))
        var pace = 0.0
        let w = [10.0, 3, 10, 3, 10]
        for i in 0..<5 { pace += min(w[order[i]], w[order[(i + 1) % 5]]) }
        XCTAssertEqual(pace, 10 + 10 + 3 + 3 + 3)   // the best of the twelve rings of five
        XCTAssertTrue(GangRing.neighbours(order[0], order[4], in: order))
        XCTAssertFalse(GangRing.neighbours(order[0], order[2], in: order))
    }

    /// One node: RTX 3060, RTX 4090, RTX 3060 (weights 3, 8, 3), and the reference cluster's
    /// simulated UUIDs `n-gpu0` …
    func node(_ models: [(String, Double, Int)]) -> ClusterConfig { RT.node(models) }

    func gang(_ id: String) -> RouterJob {
        RT.job(id, vram: 2, gpus: 2, spec: ["base_runtime_s": 300], constraints: ["service": .array([])])
    }

    func testGangsStartInTheRingInsteadOfWaitingForThePairInUse() throws {
        let config = node([("NVIDIA GeForce RTX 3060", 3, 12), ("NVIDIA GeForce RTX 4090", 8, 24), ("NVIDIA GeForce RTX 3060", 3, 12)])
        let snap0 = RT.snapshot(config)
        let uuids = snap0.nodes[0].gpus.map(\.uuid)
        // A gang runs on the two 3060s (the slowest pair that is as fast as any: the 4090 stays free).
        XCTAssertEqual(RT.place([gang("a")], snap0).gpu("a"), "n/0+2")
        let running = [RT.running("a", node: "n", gpus: [uuids[0], uuids[2]], gib: 2, visible: true, endsIn: 100)]
        let snap = RT.snapshot(config, running: running)
        // Two more start now, one on each pair with the 4090, each beside the running gang on one
        // GPU and beside each other on the 4090: three at half rate.
        let r = RT.place([gang("b"), gang("c")], snap)
        let pairs = Set([r.gpu("b"), r.gpu("c")].compactMap { $0 })
        XCTAssertEqual(pairs, ["n/0+1", "n/1+2"], "\(r.pending)")
        XCTAssertEqual(r.assignment(for: "b")?.expectedRuntimeS ?? 0, 2 * 100, accuracy: 1e-9, "half rate beside another gang")
        // A fourth finds every GPU shared by two gangs: it waits.
        let d = RT.place([gang("b"), gang("c"), gang("d")], snap)
        XCTAssertNil(d.assignment(for: "d"))
        // Without the ring the second gang waits for the pair in use.
        let off = RT.place([gang("b")], snap, policy: RouterPolicy(gangRingMinGain: 0))
        XCTAssertNil(off.assignment(for: "b"))
    }

    func testNoRingThatSpendsAFastGPUAtASlowPace() throws {
        let config = node([("NVIDIA H100 80GB HBM3", 20, 80), ("NVIDIA L4", 3, 24), ("NVIDIA L4", 3, 24)])
        let uuids = RT.snapshot(config).nodes[0].gpus.map(\.uuid)
        let snap = RT.snapshot(config, running: [RT.running("a", node: "n", gpus: [uuids[1], uuids[2]], gib: 2, visible: true, endsIn: 100)])
        // The H100 is idle, but a gang beside it would run at an L4's pace: it waits for the L4s.
        let r = RT.place([gang("b")], snap)
        XCTAssertNil(r.assignment(for: "b"))
        XCTAssertEqual(r.reason(for: "b")?.message.hasSuffix("expected on n/1 L4 + n/2 L4 in ~100 s; 2 busy GPU(s) with room, not shared"), true,
                       r.reason(for: "b")?.message ?? "no reason")
        // Where the ring's use floor is lower, it starts now beside the running gang, with the H100.
        XCTAssertEqual(RT.place([gang("b")], snap, policy: RouterPolicy(gangRingMinUse: 0.3)).gpu("b")?.hasPrefix("n/0+"), true)
    }

    func testARingDoesMoreThanOneGangAtATimeInTheSimulator() throws {
        let config = node([("NVIDIA GeForce RTX 3060", 3, 12), ("NVIDIA GeForce RTX 4090", 8, 24), ("NVIDIA GeForce RTX 3060", 3, 12)])
        let w = try Workload.parse("""
        groups:
          - {name: g, count: 12, kind: command, gpus: 2, vram: 2GiB, base_runtime_s: 300}
        """, cluster: config)
        // Every pair moves at a 3060's pace (100 s a gang) and without sharing only one gang has two
        // GPUs at a time: 1 200 s. In a ring three move at half rate: 1.5 gangs at a time.
        let ring = Simulator(cluster: config, workload: w).run(policy: .hydra)
        let alone = Simulator(cluster: config, workload: w).run(policy: RouterPolicy(gangRingMinGain: 0))
        XCTAssertEqual(ring.completed, 12)
        XCTAssertGreaterThanOrEqual(alone.makespanS, 1200 - 1e-6)
        XCTAssertLessThan(ring.makespanS, 1000)
        XCTAssertGreaterThanOrEqual(ring.makespanS, ring.lowerBoundS - 1e-6)
    }
}
