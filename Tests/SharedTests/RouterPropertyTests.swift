import Foundation
import PropertyBased
import Testing
@testable import HydraCore

/// Properties over random clusters and jobs. Each case is drawn from one seed, so a failure
/// is reproduced from the seed the library prints.
struct RouterPropertyTests {
    static let models: [(String, Double)] = [("NVIDIA GeForce RTX 5090", 32), ("NVIDIA GeForce RTX 4090", 24),
                                             ("NVIDIA GeForce RTX 5070 Ti", 16), ("NVIDIA GeForce RTX 3060", 12),
                                             ("NVIDIA A100-SXM4-80GB", 80), ("Tesla T4", 16)]
    static let services = ["comfyui", "tabbyapi", "ollama", "gpt-sovits", "scorer", "lora-trainer"]
    static let kinds = ["image", "llm", "tts", "score", "command", "lora", "video", "sleep"]
    static let GiB = Double(ByteSize.GiB)

    static func pick<T>(_ a: [T], _ r: inout SplitMix64) -> T { a[Int(r.next() % UInt64(a.count))] }
    static func unit(_ r: inout SplitMix64) -> Double { Double(r.next() >> 11) / Double(1 << 53) }

    static func randomCluster(_ r: inout SplitMix64) -> ClusterConfig {
        let nodes = (0..<Int(r.next() % 4 + 1)).map { n -> NodeConfig in
            let gpus = (0..<Int(r.next() % 5)).map { _ -> GPUConfig in
                let (m, mem) = pick(models, &r)
                let baseline = r.next() % 4 == 0 ? ByteCount.gib(Double(r.next() % 8)) : nil
                return GPUConfig(model: m, memory: .gib(mem), weight: r.next() % 2 == 0 ? nil : Double(r.next() % 10 + 1), baseline: baseline)
            }
            let svc = services.filter { _ in r.next() % 3 == 0 }
            return NodeConfig(name: "n\(n)", gpus: gpus, services: svc, cpuSlots: Int(r.next() % 4))
        }
        return ClusterConfig(nodes: nodes, headroom: ByteCount(UInt64(r.next() % 2) * 512 * ByteSize.MiB))
    }

    static func randomScenario(_ seed: UInt64) -> (ClusterSnapshot, [RouterJob], Date) {
        var r = SplitMix64(seed: seed)
        let now = Date(timeIntervalSince1970: 1_000_000)
        let cfg = randomCluster(&r)
        var live: [String: ClusterSnapshot.NodeLive] = [:]
        for n in cfg.nodes { live[n.name] = .init(up: r.next() % 6 != 0, draining: r.next() % 6 == 0) }
        var snap = ClusterSnapshot.build(config: cfg, live: live, running: [])
        var running: [RouterRunningJob] = []
        for ni in snap.nodes.indices {
            for gi in snap.nodes[ni].gpus.indices {
                let g = snap.nodes[ni].gpus[gi]
                var used = g.baselineBytes
                if r.next() % 2 == 0 {
                    let res = UInt64(unit(&r) * 0.6 * Double(g.totalBytes))
                    let visible = r.next() % 2 == 0
                    running.append(RouterRunningJob(id: "run-\(ni)-\(gi)", kind: "command", node: snap.nodes[ni].name, gpuUUIDs: [g.uuid],
                                                    reservedBytesPerGPU: res, placedAt: now.addingTimeInterval(-10),
                                                    startedAt: now.addingTimeInterval(-5), visible: visible,
                                                    expectedEnd: now.addingTimeInterval(unit(&r) * 300)))
                    // A visible job's reading may be anywhere from half to all of its reservation.
                    if visible { used += UInt64(Double(res) * (0.5 + unit(&r) / 2)) }
                }
                if r.next() % 4 == 0 { used += UInt64(unit(&r) * 4 * GiB) }   // something outside Hydra
                snap.nodes[ni].gpus[gi].usedBytes = r.next() % 5 == 0 ? nil : min(used, g.totalBytes)
            }
        }
        snap.running = running
        let jobs = (0..<Int(r.next() % 40 + 1)).map { j -> RouterJob in
            let kind = pick(kinds, &r)
            let gpus = Int(r.next() % 4)
            let vram: UInt64? = r.next() % 3 == 0 ? nil : UInt64(unit(&r) * 40 * GiB)
            var c: [String: JSONValue] = [:]
            if r.next() % 5 == 0 { c["node"] = .string("n\(r.next() % 4)") }
            if r.next() % 6 == 0 { c["service"] = .string(pick(services, &r)) }
            return RouterJob(id: "j\(j)", batchID: "b\(r.next() % 3)", kind: kind,
                             spec: .object(["base_runtime_s": .number(unit(&r) * 600 + 1)]), vramRequestBytes: vram,
                             gpusRequested: gpus, priority: Int(r.next() % 3), submittedAt: now.addingTimeInterval(-unit(&r) * 3600),
                             constraints: c.isEmpty ? nil : .object(c),
                             lastFailure: r.next() % 8 == 0 ? .oom : nil,
                             // Work waiting on some of them: the longest-path and tail-first orders see it.
                             tailS: r.next() % 3 == 0 ? unit(&r) * 2000 : 0)
        }
        return (snap, jobs, now)
    }

    /// Free VRAM per GPU as the model defines it, computed here independently of the router.
    static func free(_ snap: ClusterSnapshot, now: Date, settle: Double) -> [String: Int64] {
        var out: [String: Int64] = [:]
        for n in snap.nodes {
            for g in n.gpus {
                var all: UInt64 = 0, unseen: UInt64 = 0, seen: UInt64 = 0
                for j in snap.running where j.gpuUUIDs.contains(g.uuid) {
                    all += j.reservedBytesPerGPU
                    let settled = j.startedAt.map { now.timeIntervalSince($0) > settle } ?? false
                    if !j.visible && !settled { unseen += j.reservedBytesPerGPU } else { seen += j.reservedBytesPerGPU }
                }
                let live = g.usedBytes ?? (g.baselineBytes + seen)
                out[g.uuid] = Int64(g.totalBytes) - Int64(max(live + unseen, g.baselineBytes + all)) - Int64(snap.headroomBytes)
            }
        }
        return out
    }

    @Test func placementsFitNeverDoubleBookAndGangsAreWhole() async {
        await propertyCheck(count: 300, input: Gen.uint64()) { seed in
            let (snap, all, now) = Self.randomScenario(seed)
            // A third are about to be ready, each waiting on up to three pending jobs or on one
            // that is not pending: weighed and ranked by (`GatedWork`), never placed.
            let cut = all.count - all.count / 3
            let jobs = Array(all[..<cut])
            var rng = SplitMix64(seed: seed ^ 0x5EED)
            let upcoming = all[cut...].map { u -> RouterJob in
                var u = u
                u.waitsOn = (0..<Int(rng.next() % 4)).map { _ in
                    jobs.isEmpty || rng.next() % 5 == 0 ? "gone" : jobs[Int(rng.next() % UInt64(jobs.count))].id
                }
                return u
            }
            for name in RouterPolicy.Name.allCases {
                let policy = RouterPolicy(name: name, seed: seed)
                let result = Router.place(pending: jobs, upcoming: upcoming, snapshot: snap, now: now, policy: policy)
                var free = Self.free(snap, now: now, settle: policy.settleS)
                let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
                // Every job is either placed or explained, once.
                #expect(Set(result.assignments.map(\.jobID)).count == result.assignments.count)
                #expect(Set(result.assignments.map(\.jobID) + result.pending.map(\.jobID)) == Set(jobs.map(\.id)))
                #expect(result.assignments.count + result.pending.count == jobs.count)
                #expect(result.pending.allSatisfy { !$0.message.isEmpty })
                var cpuUse: [String: Int] = [:]
                for a in result.assignments {
                    let job = byID[a.jobID]!
                    let node = snap.nodes.first { $0.name == a.node }!
                    #expect(node.up && !node.draining, "placed on \(a.node) which is down or draining")
                    let cpuOnly = job.gpusRequested <= 0 && (job.vramRequestBytes ?? 0) == 0
                    if cpuOnly {
                        #expect(a.gpuUUIDs.isEmpty)
                        cpuUse[a.node, default: 0] += 1
                        continue
                    }
                    // Gangs: exactly k distinct GPUs, all on the assigned node.
                    #expect(a.gpuUUIDs.count == max(1, job.gpusRequested))
                    #expect(Set(a.gpuUUIDs).count == a.gpuUUIDs.count)
                    #expect(a.gpuUUIDs.allSatisfy { u in node.gpus.contains { $0.uuid == u } })
                    #expect(a.reservedBytesPerGPU >= (job.vramRequestBytes ?? 0) || job.lastFailure == .oom)
                    for u in a.gpuUUIDs { free[u, default: 0] -= Int64(a.reservedBytesPerGPU) }
                }
                // No GPU is booked beyond what it has free, counting everything placed in the pass.
                for (u, f) in free { #expect(f >= 0 || !result.assignments.contains { $0.gpuUUIDs.contains(u) }, "GPU \(u) over-booked by \(-f) bytes (\(name))") }
                for (n, used) in cpuUse {
                    let node = snap.nodes.first { $0.name == n }!
                    let busy = snap.running.filter { $0.node == n && $0.gpuUUIDs.isEmpty }.count
                    #expect(used + busy <= node.cpuSlots)
                }
            }
        }
    }

    /// Aging bounds the wait: a job overtakes every job of up to `gap` higher priority that was
    /// submitted more than (gap + 1) aging steps after it. So it waits at most for the work
    /// submitted before then, however long an overloading stream keeps coming.
    @Test func agingStopsAHigherPriorityStreamFromStarvingABigJob() async {
        await propertyCheck(count: 20, input: Gen.uint64()) { seed in
            var r = SplitMix64(seed: seed)
            let gap = Int(r.next() % 4 + 1)
            let smallRuntime = Double(r.next() % 20 + 10)
            let every = smallRuntime * 0.7   // more small work arrives than the GPU can do
            let count = 300
            let policy = RouterPolicy(name: .hydra, agingStepS: 60)
            let cluster = ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 4090", memory: .gib(24), weight: 8)])])
            let w = Workload(groups: [
                try! Self.group("name: small\ncount: \(count)\nkind: command\nvram: 10GiB\npriority: \(gap)\nbase_runtime_s: \(smallRuntime * 8)\nevery_s: \(every)"),
                try! Self.group("name: big\nkind: command\nvram: 20GiB\nbase_runtime_s: 800\nsubmit_at_s: 5"),
            ])
            let report = Simulator(cluster: cluster, workload: w).run(policy: policy)
            let big = report.timeline.first { $0.job == "big-0" }!
            let window = 5 + Double(gap + 1) * policy.agingStepS
            let ahead = Double(Int(window / every) + 1)
            let limit = window + (ahead + 4) * smallRuntime
            let streamEnd = report.timeline.filter { $0.job.hasPrefix("small") }.compactMap(\.finishS).max()!
            #expect(limit < streamEnd, "the case must be one where the stream alone would starve the job")
            #expect(big.startS != nil && big.startS! <= limit, "big job started at \(big.startS ?? -1), limit \(limit)")
        }
    }

    @Test func makespanIsNeverBelowTheLowerBound() async {
        await propertyCheck(count: 40, input: Gen.uint64()) { seed in
            var r = SplitMix64(seed: seed)
            var cluster = Self.randomCluster(&r)
            cluster.nodes[0].cpuSlots = max(1, cluster.nodes[0].cpuSlots ?? 1)
            var groups: [String] = []
            for g in 0..<Int(r.next() % 5 + 1) {
                let kind = Self.pick(Self.kinds, &r)
                var lines = ["name: g\(g)", "count: \(r.next() % 30 + 1)", "kind: \(kind)", "base_runtime_s: \(r.next() % 300 + 1)",
                             "jitter: \(Double(r.next() % 5) / 10)", "submit_at_s: \(r.next() % 100)", "every_s: \(r.next() % 10)",
                             "priority: \(r.next() % 3)", "service: none"]
                if r.next() % 3 == 0 { lines.append("gpus: 0") } else {
                    let vram = r.next() % 20 + 1
                    lines.append("gpus: \(r.next() % 2 + 1)"); lines.append("vram: \(vram)GiB")
                    // Some peak above their request: where that never fits, every attempt dies, and
                    // the bound leaves those GPUs out.
                    if r.next() % 3 == 0 { lines.append("peak_vram: \(vram + r.next() % 8 + 1)GiB") }
                }
                if g > 0, r.next() % 2 == 0 { lines.append("after: g\(r.next() % UInt64(g))") }
                groups.append(lines.joined(separator: "\n"))
            }
            let w = Workload(groups: groups.map { try! Self.group($0) })
            for name in RouterPolicy.Name.allCases {
                let report = Simulator(cluster: cluster, workload: w, seed: seed).run(policy: RouterPolicy(name: name, seed: seed))
                #expect(report.makespanS >= report.lowerBoundS * (1 - 1e-9), "\(name): \(report.makespanS) < \(report.lowerBoundS)")
            }
        }
    }

    static func group(_ yaml: String) throws -> Workload.Group {
        var g = try ConfigLoader.decode(Workload.Group.self, from: ConfigLoader.parseDocument(yaml, file: "g"), file: "g")
        // `service: none`: a job that calls no service (any node with a GPU or a CPU slot).
        if g.service == "none" { g.service = nil; g.constraints = .object(["service": .array([])]) }
        return g
    }
}
