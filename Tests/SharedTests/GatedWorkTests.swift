import XCTest
@testable import HydraCore

/// A class of short jobs that holds back a large volume of work ranks by that volume (`GatedWork`).
final class GatedWorkTests: XCTestCase {
    /// One node, one GPU at the reference weight: whichever job ranks first takes it.
    let snap = ClusterSnapshot.build(config: ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [
        GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), weight: 10),
    ])]), live: ["n": .init(up: true)], running: [])

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
        let r = Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0)
        XCTAssertEqual(r.assignments.count, 1)
        XCTAssertEqual(r.assignments.first?.jobID.hasPrefix("expand-"), true, "\(r.assignments.map(\.jobID))")
        // Ranked by the longest chain alone, the video goes first.
        var off = RouterPolicy.hydra
        off.ranksGatedWork = false
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0, policy: off)
            .assignments.map(\.jobID), ["video"])
        // One image held back is no more than the chain already says (210 s): the video first.
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: [images[0]], snapshot: snap, now: RT.t0)
            .assignments.map(\.jobID), ["video"])
    }

    /// Work that waits on jobs that are not pending (running, done, unknown) raises nothing.
    func testOnlyPendingJobsAreRaised() {
        let expansions = (0..<4).map { job("expand-\($0)", base: 100, tail: 200) }
        let video = job("video", kind: "video", base: 3000)
        let images = (0..<4).map { job("image-\($0)", kind: "image", base: 2000, waitsOn: ["elsewhere-\($0)"]) }
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: images, snapshot: snap, now: RT.t0)
            .assignments.map(\.jobID), ["video"])
        // A CPU-only job waiting on the expansions adds no GPU work.
        var cpu = RT.job("report", spec: ["base_runtime_s": .number(100_000)], constraints: ["service": .array([])])
        cpu.gpusRequested = 0
        cpu.waitsOn = expansions.map(\.id)
        XCTAssertEqual(Router.place(pending: expansions + [video], upcoming: [cpu], snapshot: snap, now: RT.t0)
            .assignments.map(\.jobID), ["video"])
    }
}
