import Foundation
import PropertyBased
import Testing
@testable import HydraCore

/// The gang ring over random odd nodes and mixed workloads: what it may never do.
struct GangRingPropertyTests {
    static let models: [(String, Double)] = [("NVIDIA GeForce RTX 5090", 32), ("NVIDIA GeForce RTX 4090", 24),
                                             ("NVIDIA GeForce RTX 5070 Ti", 16), ("NVIDIA GeForce RTX 3060", 12),
                                             ("NVIDIA H100 80GB HBM3", 80), ("NVIDIA L4", 24)]

    /// Batch jobs on each GPU at every start, from the timeline: [(gpu key, job, is a 2-GPU gang)].
    static func overlaps(_ r: SimulationReport, batch: Set<String>, gangs: Set<String>) -> [String] {
        var problems: [String] = []
        let runs = r.timeline.filter { batch.contains($0.job) && $0.startS != nil && $0.finishS != nil && !$0.gpus.isEmpty }
        for a in runs {
            // Everything batch on a's GPUs at the moment a starts.
            for g in a.gpus {
                let beside = runs.filter { b in
                    b.job != a.job && b.node == a.node && b.gpus.contains(g) && b.startS! <= a.startS! + 1e-9 && b.finishS! > a.startS! + 1e-9
                }
                if beside.isEmpty { continue }
                if beside.count > 1 { problems.append("\(a.job) started on \(a.node!)/\(g) beside \(beside.count) batch jobs") }
                if !gangs.contains(a.job) || !beside.allSatisfy({ gangs.contains($0.job) }) {
                    problems.append("\(a.job) started on \(a.node!)/\(g) beside \(beside.map(\.job)): only 2-GPU gangs share in a ring")
                }
            }
        }
        return problems
    }

    /// Random nodes of 2, 3 or 5 GPUs (random models and weights), batch gangs, batch single-GPU
    /// jobs and interactive ones, arriving over a minute.
    static func scenario(_ seed: UInt64) -> (ClusterConfig, Workload, batch: Set<String>, gangs: Set<String>) {
        var r = SplitMix64(seed: seed)
        func pick<T>(_ a: [T]) -> T { a[Int(r.next() % UInt64(a.count))] }
        let nodes = (0..<Int(r.next() % 2 + 1)).map { n -> NodeConfig in
            let gpus = (0..<[3, 3, 5, 2][Int(r.next() % 4)]).map { _ -> GPUConfig in
                let (m, mem) = pick(Self.models)
                return GPUConfig(model: m, memory: .gib(mem), weight: r.next() % 2 == 0 ? nil : Double(r.next() % 10 + 1))
            }
            return NodeConfig(name: "n\(n)", gpus: gpus, services: [], cpuSlots: 2)
        }
        var groups: [Workload.Group] = []
        var batch = Set<String>(), gangs = Set<String>()
        for g in 0..<Int(r.next() % 4 + 1) {
            let k = r.next() % 3 == 0 ? 1 : 2
            let count = Int(r.next() % 12 + 1)
            let priority = r.next() % 5 == 0 ? 5 : Int(r.next() % 2)
            let yaml = """
            {name: g\(g), count: \(count), kind: command, gpus: \(k), vram: \(r.next() % 6 + 1)GiB, base_runtime_s: \(r.next() % 400 + 10),
             jitter: \(Double(r.next() % 3) / 10), submit_at_s: \(r.next() % 60), every_s: \(r.next() % 20), priority: \(priority)}
            """
            groups.append(try! ConfigLoader.decode(Workload.Group.self, from: ConfigLoader.parseDocument(yaml, file: "g"), file: "g"))
            for i in 0..<count where priority < RouterPolicy.hydra.urgentPriority {
                batch.insert("g\(g)-\(i)")
                if k == 2 { gangs.insert("g\(g)-\(i)") }
            }
        }
        return (ClusterConfig(nodes: nodes, headroom: ByteCount(512 * ByteSize.MiB)), Workload(groups: groups), batch, gangs)
    }

    /// Batch jobs that started beside another batch job on one of their GPUs.
    static func sharedStarts(_ r: SimulationReport, batch: Set<String>) -> Int {
        let runs = r.timeline.filter { batch.contains($0.job) && $0.startS != nil && $0.finishS != nil && !$0.gpus.isEmpty }
        return runs.filter { a in
            runs.contains { b in
                b.job != a.job && b.node == a.node && !Set(b.gpus).isDisjoint(with: a.gpus) && b.startS! <= a.startS! + 1e-9 && b.finishS! > a.startS! + 1e-9
            }
        }.count
    }

    @Test func aRingNeverPutsMoreThanTwoBatchGangsOnAGPUAndNothingElseShares() async {
        await propertyCheck(count: 60, input: Gen.uint64()) { seed in
            let (cluster, w, batch, gangs) = Self.scenario(seed)
            let ring = Simulator(cluster: cluster, workload: w, seed: seed).run(policy: .hydra)
            #expect(ring.neverRan.isEmpty, "\(ring.neverRan)")
            #expect(ring.oomFailures == 0)
            #expect(ring.makespanS >= ring.lowerBoundS * (1 - 1e-9))
            let problems = Self.overlaps(ring, batch: batch, gangs: gangs)
            #expect(problems.isEmpty, "\(problems.prefix(3))")
            // Without the ring no batch job ever starts beside another.
            let off = Simulator(cluster: cluster, workload: w, seed: seed).run(policy: RouterPolicy(gangRingMinGain: 0))
            #expect(Self.sharedStarts(off, batch: batch) == 0)
        }
    }

    /// The property above is not empty: on these scenarios rings do form (8 of the 60 when written).
    @Test func ringsFormInTheRandomScenarios() {
        var ringed = 0
        for seed in UInt64(1)...60 {
            let (cluster, w, batch, _) = Self.scenario(seed)
            if Self.sharedStarts(Simulator(cluster: cluster, workload: w, seed: seed).run(policy: .hydra), batch: batch) > 0 { ringed += 1 }
        }
        #expect(ringed >= 4, "rings formed in \(ringed) of 60 scenarios")
    }
}
