import XCTest
@testable import HydraCore

/// A GPU held for a gang that waits for its other GPU may take a single-GPU job that ends within
/// (1 + `backfillDelay`) × the gang's wait (runtime × `backfillMargin`), not only before it.
final class BackfillDelayTests: XCTestCase {
    let config = try! RT.referenceConfig()

    /// hydra-ai: the 5090 runs a job for 200 s more, the 4090 is empty and held for a 2-GPU gang
    /// ranked first. On the 4090 (weight 8) a 2 000-unit job runs 250 s: × 1.3 = 325 s, past the
    /// gang's start but within 2 × 200 s, so it starts now and the gang starts at most 125 s later.
    /// 2 600 units (325 s, × 1.3 = 422.5 s) is past that and waits; with the delay at 0 both wait.
    func testAJobThatEndsWithinTwiceTheWaitBackfillsAndALongerOneWaits() {
        let runs = [RT.running("busy", node: "hydra-ai", gpus: ["hydra-ai-gpu0"], gib: 4, visible: true, endsIn: 200)]
        let snap = RT.snapshot(config, used: ["hydra-ai/0": 4, "hydra-compute/0": 16, "hydra-compute/1": 12], running: runs)
        let pin: [String: JSONValue] = ["node": "hydra-ai", "service": .array([])]
        let gang = RT.job("gang", vram: 4, gpus: 2, priority: 1, spec: ["base_runtime_s": 600], constraints: pin)
        func single(_ base: Double) -> RouterJob { RT.job("single", vram: 4, spec: ["base_runtime_s": .number(base)], constraints: pin) }

        let mid = RT.place([gang, single(2000)], snap)
        XCTAssertNil(mid.assignment(for: "gang"))
        XCTAssertEqual(mid.gpu("single"), "hydra-ai/1")
        XCTAssertEqual(mid.assignment(for: "single")?.expectedRuntimeS ?? 0, 250, accuracy: 1e-6)

        let long = RT.place([gang, single(2600)], snap)
        XCTAssertNil(long.assignment(for: "single"))
        XCTAssertEqual(long.reason(for: "single")?.code, .heldForOtherJob)

        var strict = RouterPolicy.hydra
        strict.backfillDelay = 0
        XCTAssertNil(RT.place([gang, single(2000)], snap, policy: strict).assignment(for: "single"))
        // Only jobs that end before the gang's start, as before: 1 500 units, 187.5 s × 1.3 > 200.
        XCTAssertNil(RT.place([gang, single(1500)], snap, policy: strict).assignment(for: "single"))
        XCTAssertEqual(RT.place([gang, single(1200)], snap, policy: strict).gpu("single"), "hydra-ai/1")
    }

    /// One node, an L40S and an A100; four 2-GPU gangs and ten videos, all submitted at once, in
    /// two batches. Fair share ranks the videos' next one before the gangs each time the last video
    /// ends, so it takes the A100 the first gang waits for, while the gang holds the L40S empty.
    /// Without the delay every video ran on the A100 one after another and the L40S stood idle the
    /// whole time; with it the videos use both GPUs.
    func testAHoldTheOrderDoesNotKeepDoesNotLeaveAGPUEmpty() throws {
        let cluster = RT.node([("NVIDIA L40S", 10, 48), ("NVIDIA A100-SXM4-80GB", 12, 80)], name: "ws")
        let w = try Workload.parse("""
        groups:
          - {name: video, count: 10, kind: video, vram: 12GiB, base_runtime_s: 2000}
          - {name: gang, count: 4, kind: command, gpus: 2, vram: 18GiB, base_runtime_s: 863}
        """, cluster: cluster)
        let sim = Simulator(cluster: cluster, workload: w)
        let on = sim.run(policy: .hydra)
        var strict = RouterPolicy.hydra
        strict.backfillDelay = 0
        let off = sim.run(policy: strict)
        XCTAssertEqual(on.completed, 14)
        XCTAssertEqual(off.completed, 14)
        let l40s = { (r: SimulationReport) in r.gpus.first { $0.index == 0 }?.busyFraction ?? 0 }
        XCTAssertLessThan(l40s(off), 0.3)
        XCTAssertGreaterThan(l40s(on), 0.9)
        XCTAssertLessThan(on.makespanS, off.makespanS * 0.75)
        XCTAssertLessThan(on.makespanS, on.lowerBoundS * 1.1)
    }

    /// Each backfill may move the gang's start by at most its wait then, and ends that wait at most
    /// (1 + delay) ÷ margin of it later, so the waits shrink (here 0.54 ×) and the gang is not
    /// starved by a stream of jobs sized to the limit. A 100 s job holds the A-GPU when the gang
    /// (ranked first) arrives; single jobs of 150 s arrive every 5 s. The first one backfills the
    /// held GPU (195 s ≤ 2 × 99 s); none after it fits the shorter waits that follow.
    func testTheGangIsDelayedAtMostItsFirstWait() throws {
        let cluster = RT.node([("NVIDIA GeForce RTX 5090", 10, 32), ("NVIDIA GeForce RTX 5090", 10, 32)])
        let w = try Workload.parse("""
        groups:
          - {name: first, count: 1, kind: command, vram: 2GiB, base_runtime_s: 1000, priority: 1}
          - {name: gang, count: 1, kind: command, gpus: 2, vram: 2GiB, base_runtime_s: 1000, priority: 1, submit_at_s: 1}
          - {name: stream, count: 30, kind: command, vram: 2GiB, base_runtime_s: 1500, submit_at_s: 1, every_s: 5}
        """, cluster: cluster)
        let sim = Simulator(cluster: cluster, workload: w)
        let start = { (r: SimulationReport) in r.timeline.first { $0.job == "gang-0" }?.startS ?? .infinity }
        let on = sim.run(policy: .hydra)
        var strict = RouterPolicy.hydra
        strict.backfillDelay = 0
        let off = sim.run(policy: strict)
        XCTAssertEqual(on.completed, 32)
        XCTAssertEqual(start(off), 100, accuracy: 1e-6)
        XCTAssertGreaterThan(start(on), 100)
        XCTAssertLessThanOrEqual(start(on), 100 + 99 + 1e-6)
    }
}
