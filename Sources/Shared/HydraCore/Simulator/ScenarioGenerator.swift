import Foundation

/// Random clusters and workloads for judging the router on cases it was not tuned for
/// (`hydra simulate --generate SEED [--seeds N]`). Deterministic per seed: its own
/// SplitMix64, no Foundation randomness, no clock, no hashing of strings through `Hasher`.
///
/// A scenario is emitted as YAML text and parsed back through the same loaders as the
/// shipped files, so `--dump` writes files anyone can rerun with `--cluster/--workload`.
public enum ScenarioGenerator {
    public struct Scenario: Sendable {
        public var seed: UInt64
        public var clusterYAML: String
        public var workloadYAML: String
        public var cluster: ClusterConfig
        public var workload: Workload
    }

    /// The priority of the interactive stream: above every other group, so the report's
    /// "high priority" jobs are exactly the interactive ones.
    public static let interactivePriority = 10

    struct Card { var model: String; var gib: Double; var weight: Double }
    // Data-centre and consumer cards with their table weights; fictional hosts only.
    static let dataCentre = [Card(model: "NVIDIA H100 80GB HBM3", gib: 80, weight: 20), Card(model: "NVIDIA A100-SXM4-80GB", gib: 80, weight: 12),
                             Card(model: "NVIDIA L40S", gib: 48, weight: 10), Card(model: "NVIDIA RTX A6000", gib: 48, weight: 6),
                             Card(model: "NVIDIA L4", gib: 24, weight: 3)]
    static let consumer = [Card(model: "NVIDIA GeForce RTX 5090", gib: 32, weight: 10), Card(model: "NVIDIA GeForce RTX 4090", gib: 24, weight: 8),
                           Card(model: "NVIDIA GeForce RTX 5070 Ti", gib: 16, weight: 6), Card(model: "NVIDIA GeForce RTX 3090", gib: 24, weight: 5),
                           Card(model: "NVIDIA GeForce RTX 3060", gib: 12, weight: 3)]
    static let services = ["comfyui", "tabbyapi", "ollama", "gpt-sovits", "lora-trainer", "scorer"]

    struct GenNode { var name: String; var cards: [Card]; var services: [String]; var cpuSlots: Int }

    public static func generate(seed: UInt64) throws -> Scenario {
        // Mixed into the seed so that seed n here and seed n of the runtime jitter differ.
        var r = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D ^ 0x5EED)
        func unit() -> Double { Double(r.next() >> 11) / Double(1 << 53) }
        func int(_ lo: Int, _ hi: Int) -> Int { lo + Int(r.next() % UInt64(hi - lo + 1)) }
        func chance(_ p: Double) -> Bool { unit() < p }

        // Cluster: 1–16 nodes, each mostly data-centre or mostly consumer cards.
        let nodeCount = int(1, 16)
        var nodes: [GenNode] = []
        // Uneven spread: each service has its own probability of being on a node.
        let spread = services.map { _ in 0.15 + unit() * 0.6 }
        for n in 0..<nodeCount {
            let dc = chance(0.4)
            let cards = (0..<int(dc ? 2 : 1, dc ? 4 : 3)).map { _ -> Card in
                let pool = chance(0.8) ? (dc ? dataCentre : consumer) : (dc ? consumer : dataCentre)
                return pool[int(0, pool.count - 1)]
            }
            let svc = services.indices.filter { chance(spread[$0]) }.map { services[$0] }
            nodes.append(GenNode(name: "gen-\(dc ? "dc" : "ws")\(n)", cards: cards, services: svc, cpuSlots: int(2, 8)))
        }
        // Every service somewhere, so the workload's groups can run at all.
        for s in services where !nodes.contains(where: { $0.services.contains(s) }) {
            nodes[int(0, nodes.count - 1)].services.append(s)
        }

        // Residents: some stay all run (part of the baseline), some unload at until_s.
        var residentLines: [String] = []
        var baseline: [[Double]] = nodes.map { $0.cards.map { _ in 0 } }
        for (ni, n) in nodes.enumerated() where n.services.contains("tabbyapi") || n.services.contains("ollama") {
            for (gi, c) in n.cards.enumerated() where chance(0.35) {
                let gib = (c.gib * (0.15 + unit() * 0.3)).rounded()
                guard gib >= 1 else { continue }
                let until = chance(0.5) ? ", until_s: \(int(2, 40) * 60)" : ""
                if until.isEmpty { baseline[ni][gi] += gib }
                residentLines.append("  - {node: \(n.name), gpu: \(gi), vram: \(Int(gib))GiB, model: resident-llm\(until)}")
            }
        }

        /// The largest VRAM (GiB) a job of these services can get on one GPU, after permanent residents.
        func largest(_ svc: [String], gang: Int = 1) -> Double {
            var best = 0.0
            for (ni, n) in nodes.enumerated() where svc.isEmpty || n.services.contains(where: svc.contains) {
                let frees = n.cards.enumerated().map { $1.gib - baseline[ni][$0] - 1 }.sorted(by: >)
                if frees.count >= gang { best = max(best, frees[gang - 1]) }
            }
            return best
        }
        /// The fastest weight among GPUs a job of these services may use.
        func fastest(_ svc: [String]) -> Double {
            var best = 0.0
            for n in nodes where svc.isEmpty || n.services.contains(where: svc.contains) { for c in n.cards { best = max(best, c.weight) } }
            return max(best, 1)
        }
        func vram(_ frac: Double, _ svc: [String], gang: Int = 1) -> Int {
            max(1, Int((largest(svc, gang: gang) * frac).rounded(.down)))
        }

        var groups: [String] = []
        let gpuCount = nodes.reduce(0) { $0 + $1.cards.count }
        /// Weight-seconds per second of the GPUs a job of these services may use.
        func capacity(_ svc: [String]) -> Double {
            var w = 0.0
            for n in nodes where svc.isEmpty || n.services.contains(where: svc.contains) { for c in n.cards { w += c.weight } }
            return max(w, 1)
        }
        // The night lasts about `horizon` seconds on the whole cluster: job counts stay small
        // (the sweep runs hundreds of scenarios) and runtimes grow with the cluster instead.
        let horizon = Double(int(30, 120) * 60)
        let total = capacity([])
        /// Weight-1 seconds per job for a group that takes `share` of the cluster's work over the horizon,
        /// at most `longest` of the horizon on the fastest eligible GPU.
        func base(_ share: Double, count: Int, _ svc: [String], gpus: Int = 1, longest: Double = 0.5) -> Int {
            let b = share * total * horizon / Double(max(1, count * gpus))
            return max(1, Int(min(b, longest * horizon * fastest(svc)).rounded()))
        }

        // A pipeline: tasks on CPU → LLM expansion (sometimes 2-GPU gangs) → images → CPU scoring.
        let tasks = int(8, 60)
        let fanout = int(1, 4)
        let gangs = chance(0.5) && largest(["tabbyapi"], gang: 2) >= 2 ? 2 : 1
        groups.append("{name: task, count: \(tasks), kind: command, cpu: true, runtime_s: \(int(1, 5)), submit_at_s: \(int(0, 60)), every_s: \(int(0, 20))}")
        groups.append("{name: expand, count: \(tasks * fanout), kind: llm, service: tabbyapi, after: task, gpus: \(gangs), vram: \(vram(0.25, ["tabbyapi"], gang: gangs))GiB, model: resident-llm, base_runtime_s: \(base(0.05 + unit() * 0.1, count: tasks * fanout, ["tabbyapi"], gpus: gangs, longest: 0.05)), jitter: 0.2}")
        let peak = chance(0.3)   // out-of-memory peaks: some images use more than they ask for
        let imgVRAM = min(vram(0.5, ["comfyui"]), int(6, 14))
        groups.append("{name: image, count: \(tasks * fanout), kind: image, after: expand, vram: \(imgVRAM)GiB\(peak ? ", peak_vram: \(imgVRAM + int(1, 4))GiB" : ""), base_runtime_s: \(base(0.15 + unit() * 0.3, count: tasks * fanout, ["comfyui"], longest: 0.1)), jitter: 0.15, priority: \(int(0, 1))}")
        groups.append("{name: score, count: \(tasks * fanout), kind: score, after: image, cpu: true, runtime_s: \(int(1, 6))}")
        if chance(0.5) { groups.append("{name: report, kind: command, cpu: true, after_all: [score], runtime_s: \(int(5, 60))}") }

        // Long training jobs, submitted at different times.
        let loras = int(0, max(1, gpuCount / 3))
        if loras > 0 {
            groups.append("{name: lora, count: \(loras), kind: lora, vram: \(vram(0.6, ["lora-trainer"]))GiB, base_runtime_s: \(base(0.05 + unit() * 0.15, count: loras, ["lora-trainer"], longest: 0.2 + unit() * 0.5)), submit_at_s: \(int(0, 600)), every_s: \(int(0, 900)), jitter: 0.1}")
        }
        // A big-VRAM class (only the large cards take it).
        if chance(0.6), largest([]) >= 40 {
            let n = int(2, 12)
            groups.append("{name: bigmem, count: \(n), kind: command, vram: \(Int((largest([]) * (0.55 + unit() * 0.35)).rounded(.down)))GiB, base_runtime_s: \(base(0.03 + unit() * 0.1, count: n, [], longest: 0.3)), submit_at_s: \(int(0, 1200)), every_s: \(int(0, 300)), jitter: 0.2}")
        }
        // Short and long mixes without a service: videos, batch commands, voice clips.
        if chance(0.7) {
            let n = int(2, 40)
            groups.append("{name: video, count: \(n), kind: video, vram: \(min(vram(0.6, []), int(10, 20)))GiB, base_runtime_s: \(base(0.05 + unit() * 0.2, count: n, [], longest: 0.25)), submit_at_s: \(int(0, 1800)), every_s: \(int(0, 120)), jitter: 0.2}")
        }
        if chance(0.6) {
            let n = int(10, 150)
            groups.append("{name: voice, count: \(n), kind: voice, vram: \(min(vram(0.4, ["gpt-sovits"]), int(2, 6)))GiB, base_runtime_s: \(base(0.02 + unit() * 0.08, count: n, ["gpt-sovits"], longest: 0.02)), submit_at_s: \(int(0, 900)), every_s: \(int(0, 20)), jitter: 0.2, priority: \(int(0, 2))}")
        }
        if chance(0.5), largest([], gang: 2) >= 2 {
            let n = int(2, 12)
            groups.append("{name: gang, count: \(n), kind: command, gpus: 2, vram: \(vram(0.4, [], gang: 2))GiB, base_runtime_s: \(base(0.03 + unit() * 0.1, count: n, [], gpus: 2, longest: 0.2)), submit_at_s: \(int(0, 1500)), every_s: \(int(0, 200)), jitter: 0.1}")
        }
        // The interactive stream: short, top priority, over most of the night.
        let chatSvc = chance(0.5) ? "ollama" : "tabbyapi"
        let chats = int(40, 300)
        groups.append("{name: chat, count: \(chats), kind: llm, service: \(chatSvc), vram: \(min(vram(0.25, [chatSvc]), int(2, 8)))GiB, base_runtime_s: \(Int((Double(int(2, 8)) * fastest([chatSvc])).rounded())), submit_at_s: \(int(0, 120)), every_s: \(Int((horizon * (0.5 + unit() * 0.5) / Double(chats)).rounded())), jitter: 0.3, priority: \(interactivePriority)}")

        var cy = "# generated by `hydra simulate --generate \(seed)`\nheadroom: 512MiB\nnodes:\n"
        for n in nodes {
            cy += "  - name: \(n.name)\n    services: [\(n.services.joined(separator: ", "))]\n    cpu_slots: \(n.cpuSlots)\n    gpus:\n"
            for c in n.cards { cy += "      - {model: \"\(c.model)\", memory: \(Int(c.gib))GiB, weight: \(c.weight)}\n" }
        }
        var wy = "# generated by `hydra simulate --generate \(seed)`\nname: generated-\(seed)\n"
        if !residentLines.isEmpty { wy += "resident:\n" + residentLines.joined(separator: "\n") + "\n" }
        wy += "groups:\n" + groups.map { "  - " + $0 }.joined(separator: "\n") + "\n"

        let cluster = try ConfigLoader.decode(ClusterConfig.self, from: ConfigLoader.parseDocument(cy, file: "generated-cluster"), file: "generated-cluster")
        try cluster.validate(file: "generated-cluster")
        let workload = try Workload.parse(wy, file: "generated-workload", cluster: cluster)
        return Scenario(seed: seed, clusterYAML: cy, workloadYAML: wy, cluster: cluster, workload: workload)
    }
}
