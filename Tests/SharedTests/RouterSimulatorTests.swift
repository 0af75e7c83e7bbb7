import XCTest
@testable import HydraCore

final class RouterSimulatorTests: XCTestCase {
    var config: ClusterConfig!
    override func setUpWithError() throws { config = try RT.referenceConfig() }

    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func workload(_ yaml: String) throws -> Workload { try Workload.parse(yaml, cluster: config) }

    func testSingleGPUQueueMeetsItsBound() throws {
        let w = try workload("""
        groups:
          - {name: a, count: 4, kind: command, vram: 2GiB, base_runtime_s: 100, constraints: {gpu_model: "3060"}}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 4)
        XCTAssertEqual(r.lowerBoundS, 4 * 100 / 3, accuracy: 0.01)   // work 400 on weight 3
        XCTAssertEqual(r.makespanS, r.lowerBoundS, accuracy: 0.01)   // shared or serial, the GPU is never idle
        XCTAssertEqual(r.gpus.first { $0.node == "hydra-compute" && $0.index == 1 }?.busyFraction ?? 0, 1, accuracy: 1e-6)
    }

    func testABacklogSubmittedAtOnceKeepsTheInteractiveStreamOnItsClock() throws {
        let w = try workload("""
        groups:
          - {name: a, count: 3, kind: command, vram: 2GiB, base_runtime_s: 100, submit_at_s: 50, every_s: 30}
          - {name: b, count: 2, kind: command, vram: 2GiB, base_runtime_s: 100, submit_at_s: 10, every_s: 5, priority: 1}
          - {name: chat, count: 4, kind: command, vram: 1GiB, base_runtime_s: 10, submit_at_s: 7, every_s: 9, priority: 2}
        """)
        let once = w.submittedAtOnce(below: 2)
        XCTAssertEqual(once.groups.map(\.submitAtS), [0, 0, 7])
        XCTAssertEqual(once.groups.map(\.everyS), [0, 0, 9])
        XCTAssertEqual(once.groups.map(\.count), w.groups.map(\.count))
        // Everything the stream does not hold back can start at once: the bound drops to what the
        // GPUs hold, and the chat requests still end no sooner than their last arrival.
        let r = Simulator(cluster: config, workload: once).run(policy: .hydra)
        XCTAssertEqual(r.completed, 9)
        XCTAssertGreaterThanOrEqual(r.makespanS, 7 + 3 * 9)
        XCTAssertLessThan(r.lowerBoundS, Simulator(cluster: config, workload: w).run(policy: .hydra).lowerBoundS)
    }

    /// A job after another ages from when that one ended, not from when it was submitted: the
    /// coordinator does the same (`jobs.ready_at`, `JobStore.readyRows`), and every router round was
    /// measured so. On a cluster of one GPU: `a` (700 s, then `b` after it, 500 s) goes before `c`
    /// (100 s), the longest path first. When `a` ends, `c` has waited 700 s (one aging step) and `b`
    /// none, so `c` goes next; aged from submission `b` would have its step too and go first by its
    /// longer path. (One GPU, not one of the reference cluster's: jobs only a few GPUs take keep pace
    /// with the most-aged job of their priority, which would hide the difference.)
    func testAJobAfterAnotherAgesFromWhenThatOneEnded() throws {
        let solo = ClusterConfig(nodes: [NodeConfig(name: "solo", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 3060",
                                                                                   memory: ByteCount(12 * ByteSize.GiB))])])
        let w = try Workload.parse("""
        groups:
          - {name: a, kind: command, vram: 2GiB, duration_s: 700}
          - {name: b, kind: command, vram: 2GiB, duration_s: 500, after: a}
          - {name: c, kind: command, vram: 2GiB, duration_s: 100}
        """, cluster: solo)
        let r = Simulator(cluster: solo, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 3)
        let t = Dictionary(uniqueKeysWithValues: r.timeline.map { ($0.job, $0) })
        XCTAssertEqual(try XCTUnwrap(t["a-0"]?.startS), 0, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(t["c-0"]?.startS), 700, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(t["b-0"]?.startS), 800, accuracy: 1e-6)
    }

    func testDependenciesAreRespected() throws {
        let w = try workload("""
        groups:
          - {name: task, count: 2, kind: command, cpu: true, runtime_s: 5}
          - {name: expand, count: 6, kind: llm, after: task, service: tabbyapi, gpus: 2, vram: 512MiB, runtime_s: 4, on: RTX 4090}
          - {name: image, count: 6, kind: image, after: expand, vram: 8GiB, runtime_s: 30, on: RTX 5070 Ti}
          - {name: score, count: 6, kind: score, after: image, cpu: true, runtime_s: 2}
          - {name: report, kind: command, cpu: true, after_all: score, runtime_s: 1}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 21)
        let t = Dictionary(uniqueKeysWithValues: r.timeline.map { ($0.job, $0) })
        for i in 0..<6 {
            XCTAssertGreaterThanOrEqual(t["expand-\(i)"]!.startS!, t["task-\(i / 3)"]!.finishS! - 1e-9)
            XCTAssertGreaterThanOrEqual(t["image-\(i)"]!.startS!, t["expand-\(i)"]!.finishS! - 1e-9)
            XCTAssertGreaterThanOrEqual(t["score-\(i)"]!.startS!, t["image-\(i)"]!.finishS! - 1e-9)
            XCTAssertEqual(t["image-\(i)"]!.node, "hydra-compute")
            XCTAssertEqual(t["score-\(i)"]!.node, "hydra-storage")
            XCTAssertEqual(t["expand-\(i)"]!.gpus, [0, 1])
        }
        XCTAssertGreaterThanOrEqual(t["report-0"]!.startS!, (0..<6).map { t["score-\($0)"]!.finishS! }.max()! - 1e-9)
        XCTAssertGreaterThanOrEqual(r.makespanS, r.lowerBoundS - 1e-6)
    }

    func testAJobWaitingOnItsDependencyKeepsTheOnlyGPUItFitsFree() throws {
        // `big` fits only the 5090 (28 GiB) and waits on a 10 s CPU task; `long` fits anywhere:
        // 80 s on the 5090, 100 s on the 4090. The pass at 0 s sees `big` as upcoming, so `long`
        // pays its 200 s there and takes the 4090; `big` starts when its task is done.
        let w = try workload("""
        groups:
          - {name: task, kind: command, cpu: true, runtime_s: 10}
          - {name: big, kind: command, after: task, vram: 28GiB, base_runtime_s: 2000, constraints: {service: []}}
          - {name: long, kind: command, vram: 2GiB, base_runtime_s: 800, constraints: {service: []}}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 3)
        let t = Dictionary(uniqueKeysWithValues: r.timeline.map { ($0.job, $0) })
        XCTAssertEqual(t["big-0"]?.node, "hydra-ai")
        XCTAssertEqual(t["big-0"]?.gpus, [0])
        XCTAssertEqual(t["long-0"]?.node, "hydra-ai")
        XCTAssertEqual(t["long-0"]?.gpus, [1])
        XCTAssertEqual(try XCTUnwrap(t["big-0"]?.startS), try XCTUnwrap(t["task-0"]?.finishS), accuracy: 1e-6)
        XCTAssertEqual(r.makespanS, 210, accuracy: 1e-6)
    }

    func testNeverRunnableJobsAreReportedWithTheRouterReason() throws {
        let w = try workload("""
        groups:
          - {name: ok, count: 2, kind: command, vram: 4GiB, base_runtime_s: 60}
          - {name: huge, kind: command, vram: 40GiB, base_runtime_s: 60}
          - {name: after-huge, kind: command, cpu: true, runtime_s: 1, after: huge}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 2)
        XCTAssertEqual(r.neverRan.map(\.job), ["huge-0", "after-huge-0"])
        XCTAssertEqual(r.neverRan[0].reason, "needs 40.0 GiB on 1 GPU; largest: hydra-ai/0 RTX 5090 31.5 GiB usable")
        XCTAssertEqual(r.neverRan[1].reason, "a job it depends on never ran")
    }

    /// One node: a 12 GiB RTX 3060 (weight 3), then `second`; 512 MiB headroom.
    static func oneNode(_ second: (model: String, gib: Double, weight: Double)) -> ClusterConfig {
        ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [
            GPUConfig(model: "NVIDIA GeForce RTX 3060", memory: .gib(12), weight: 3),
            GPUConfig(model: second.model, memory: .gib(second.gib), weight: second.weight),
        ])], headroom: ByteCount(512 * ByteSize.MiB))
    }

    func testOutOfMemoryIsRetriedBiggerOnABiggerGPU() throws {
        let cluster = Self.oneNode(("NVIDIA RTX A4000", 16, 3))
        let w = try Workload.parse("""
        groups:
          - {name: j, kind: command, vram: 6GiB, peak_vram: 13GiB, base_runtime_s: 300}
        """, cluster: cluster)
        let r = Simulator(cluster: cluster, workload: w).run(policy: .hydra)
        // 6 GiB on the 3060 (peak 13 > 12): OOM; 9 GiB on the 3060: OOM; 13.5 GiB fits only the A4000.
        XCTAssertEqual(r.oomFailures, 2)
        XCTAssertEqual(r.completed, 1)
        XCTAssertEqual(r.timeline[0].gpus, [1])
        XCTAssertGreaterThanOrEqual(r.makespanS, r.lowerBoundS)
    }

    func testTheBoundLeavesOutGPUsAJobsPeakNeverFits() throws {
        let cluster = Self.oneNode(("NVIDIA GeForce RTX 3090", 24, 5))
        let w = try Workload.parse("""
        groups:
          - {name: img, count: 6, kind: command, vram: 10GiB, peak_vram: 13GiB, base_runtime_s: 300}
        """, cluster: cluster)
        let r = Simulator(cluster: cluster, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.completed, 6)
        // Every attempt on the 3060 dies (13 > 12 GiB): only the 3090 ends them, 6 × 300 / 5 s at
        // least. Counting the 3060's weight too the bound would read 6 × 300 / 8 = 225 s.
        XCTAssertTrue(r.timeline.allSatisfy { $0.gpus == [1] })
        XCTAssertEqual(r.lowerBoundS, 360, accuracy: 0.01)
        XCTAssertGreaterThanOrEqual(r.makespanS, r.lowerBoundS - 1e-6)
    }

    func testResidentThatUnloadsFreesItsVRAM() throws {
        let w = try workload("""
        resident:
          - {node: hydra-ai, gpu: 0, vram: 24GiB, until_s: 100}
        groups:
          - {name: big, kind: command, vram: 26GiB, base_runtime_s: 100}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        XCTAssertEqual(r.timeline[0].startS, 100)
        XCTAssertEqual(r.makespanS, 110, accuracy: 1e-6)
    }

    func testInteractiveStretchCountsWaitingAndSharing() throws {
        // One GPU: a 100 s batch job, then a 10 s request at 10 s that starts beside it and shares
        // the GPU (20 s), then one at 200 s alone (10 s).
        let w = try workload("""
        groups:
          - {name: batch, kind: command, vram: 2GiB, base_runtime_s: 1000, constraints: {node: hydra-ai, gpu_index: 0}}
          - {name: chat, count: 2, kind: command, vram: 2GiB, base_runtime_s: 100, priority: 10, submit_at_s: 10, every_s: 190,
             constraints: {node: hydra-ai, gpu_index: 0}}
        """)
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        let top = try XCTUnwrap(r.topPriority)
        XCTAssertEqual(top.waitP95S, 0, accuracy: 1e-9)
        XCTAssertEqual(try XCTUnwrap(top.stretchP95), 2, accuracy: 1e-6)
    }

    func testInteractiveLatencyComparesWithTheFastestGPUTheJobMayUse() throws {
        // The 5090 (weight 10) runs a batch job; a 100 s request for either GPU of hydra-ai goes
        // to the idle 4090 (weight 8): 12.5 s alone there, stretch 1, but 1.25 × the 10 s it
        // would take alone on the 5090.
        let w = try workload("""
        groups:
          - {name: batch, kind: command, vram: 2GiB, base_runtime_s: 1000, constraints: {node: hydra-ai, gpu_index: 0}}
          - {name: chat, kind: command, vram: 2GiB, base_runtime_s: 100, priority: 10, submit_at_s: 10, constraints: {node: hydra-ai}}
        """)
        let top = try XCTUnwrap(Simulator(cluster: config, workload: w).run(policy: .hydra).topPriority)
        XCTAssertEqual(try XCTUnwrap(top.stretchP95), 1, accuracy: 1e-6)
        XCTAssertEqual(try XCTUnwrap(top.latencyP95), 1.25, accuracy: 1e-6)
        // Urgent CPU tasks have no GPU to compare with: their latency is against their own runtime.
        let cpu = try workload("""
        groups:
          - {name: batch, kind: command, cpu: true, runtime_s: 50}
          - {name: ping, kind: command, cpu: true, runtime_s: 5, priority: 10, submit_at_s: 10}
        """)
        let cpuTop = try XCTUnwrap(Simulator(cluster: config, workload: cpu).run(policy: .hydra).topPriority)
        XCTAssertEqual(try XCTUnwrap(cpuTop.latencyP95), 1, accuracy: 1e-6)
    }

    func testWorkloadErrorsNameTheField() {
        func problem(_ yaml: String) -> String {
            do { _ = try Workload.parse(yaml, file: "w.yaml", cluster: config); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(problem("groups: [{name: a, kind: image, runtime_s: 3, on: RTX 5070 Ti, after: b}]"),
                       "w.yaml: groups[0].after: 'b' is not a group listed before 'a'")
        XCTAssertEqual(problem("groups: [{name: a, kind: image}]"),
                       "w.yaml: groups[0].runtime_s: give runtime_s (with `on: <GPU model>` for GPU jobs), base_runtime_s or duration_s")
        XCTAssertEqual(problem("groups: [{name: a, kind: image, runtime_s: 3}]"),
                       "w.yaml: groups[0].on: runtime_s of a GPU job needs `on: <GPU model>` (the GPU it was measured on), or use base_runtime_s")
        XCTAssertEqual(problem("groups: [{name: a, kind: image, runtime_s: 3, on: Voodoo 5}]"),
                       "w.yaml: groups[0].on: 'Voodoo 5' is no GPU model of the cluster or the built-in table")
        XCTAssertEqual(problem("resident: [{node: hydra-ai, gpu: 5, vram: 1GiB}]\ngroups: [{name: a, kind: sleep, duration_s: 1}]"),
                       "w.yaml: resident[0].gpu: node 'hydra-ai' has no GPU 5 (it has 2)")
        XCTAssertEqual(problem("groups: [{kind: sleep, duration_s: 1}]"), "w.yaml: groups[0].name: required field 'name' is missing")
        XCTAssertEqual(problem("groups: []"), "w.yaml: groups: no job groups; add at least one")
    }

    func testSummaryJSONShape() throws {
        let w = try workload("groups: [{name: a, kind: sleep, duration_s: 5}]")
        let r = Simulator(cluster: config, workload: w).run(policy: .hydra)
        let obj = try JSONSerialization.jsonObject(with: JSONCoding.encoder().encode(r.summary)) as! [String: Any]
        XCTAssertEqual(Set(obj.keys), ["policy", "makespan_s", "lower_bound_s", "jobs", "wait_p95_s", "gpus", "never_ran"])
        let gpu = (obj["gpus"] as! [[String: Any]])[0]
        XCTAssertEqual(Set(gpu.keys), ["node", "index", "name", "busy_fraction"])
    }

    func testTraceFollowsAJobThroughItsWaitsWithoutChangingTheRun() throws {
        // One 3060 (weight 3): a runs 100 s; b-0 arrives at 10 s and waits for the GPU to be
        // idle, and its expected start moves when b-1 arrives at 30 s; it starts at 100 s.
        let w = try workload("""
        groups:
          - {name: a, kind: command, vram: 2GiB, base_runtime_s: 300, constraints: {node: hydra-compute, gpu_index: 1}}
          - {name: b, count: 2, kind: command, vram: 2GiB, base_runtime_s: 30, submit_at_s: 10, every_s: 20,
             constraints: {node: hydra-compute, gpu_index: 1}}
        """)
        let plain = Simulator(cluster: config, workload: w).run(policy: .hydra)
        var sim = Simulator(cluster: config, workload: w)
        sim.trace = ["b-0"]
        let traced = sim.run(policy: .hydra)
        // Writing the reasons changes no decision.
        XCTAssertEqual(traced.timeline, plain.timeline)
        XCTAssertEqual(traced.makespanS, plain.makespanS)
        XCTAssertTrue(plain.trace.isEmpty)

        let events = traced.trace
        XCTAssertEqual(Set(events.map(\.job)), ["b-0"])
        XCTAssertEqual(events.first?.timeS, 10)
        XCTAssertTrue(events.first?.event.contains("expected on hydra-compute/1 RTX 3060 in ~90 s") ?? false, "\(events)")
        XCTAssertTrue(events.contains { $0.timeS == 30 && $0.event.contains("in ~70 s") }, "\(events)")
        let start = try XCTUnwrap(plain.timeline.first { $0.job == "b-0" }?.startS)
        XCTAssertEqual(events.last?.timeS, start)
        XCTAssertEqual(events.last?.event, "starts on hydra-compute/1, expected to run 10 s")
        // Only changes are kept: no event repeats the one before it.
        for (x, y) in zip(events, events.dropFirst()) { XCTAssertNotEqual(x.event, y.event) }
        XCTAssertEqual(events.map(\.timeS), events.map(\.timeS).sorted())
        let obj = try JSONSerialization.jsonObject(with: JSONCoding.encoder().encode(traced.summary)) as! [String: Any]
        XCTAssertEqual((obj["trace"] as? [[String: Any]])?.count, events.count)
    }

    /// The shipped workloads: every policy at or above the bound, hydra within 5 % of it on the night.
    func testShippedWorkloads() throws {
        for name in ["nightly", "bursty", "saturation"] {
            let path = Self.repoRoot.appendingPathComponent("deploy/workloads/\(name).yaml").path
            let w = try Workload.load(path: path, cluster: config)
            var makespans: [RouterPolicy.Name: Double] = [:]
            for p in [RouterPolicy.Name.hydra, .seedStatic] {
                let r = Simulator(cluster: config, workload: w).run(policy: RouterPolicy(name: p))
                XCTAssertGreaterThanOrEqual(r.makespanS, r.lowerBoundS - 1e-6, "\(name) \(p)")
                makespans[p] = r.makespanS
                if p == .hydra {
                    XCTAssertTrue(r.neverRan.isEmpty, "\(name): \(r.neverRan.prefix(3))")
                    if name == "nightly" { XCTAssertLessThanOrEqual(r.makespanS, 1.05 * r.lowerBoundS) }
                }
            }
            XCTAssertLessThan(makespans[.hydra]!, makespans[.seedStatic]!, name)
        }
    }
}
