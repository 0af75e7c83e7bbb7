import Foundation
import HydraCore

/// A synthetic, deterministic large backlog for `hydra-dev bench router` (and the tests that
/// check it runs): the cost of one pass at a scale well past the reference cluster.
public enum RouterBenchmark {
    public static func scenario(pending: Int, gpus: Int, perNode: Int = 4, seed: UInt64 = 42) -> (ClusterSnapshot, [RouterJob], Date) {
        var rng = SplitMix64(seed: seed)
        let now = Date(timeIntervalSince1970: 1_750_000_000)
        let models: [(String, Double)] = [("NVIDIA GeForce RTX 5090", 32), ("NVIDIA GeForce RTX 4090", 24),
                                          ("NVIDIA GeForce RTX 5070 Ti", 16), ("NVIDIA GeForce RTX 3060", 12)]
        let serviceSets = [["tabbyapi"], ["comfyui", "ollama", "gpt-sovits"], ["comfyui", "lora-trainer"], ["scorer", "ollama"]]
        var nodes: [RouterNode] = []
        var running: [RouterRunningJob] = []
        let gib = Double(ByteSize.GiB)
        let perNode = max(1, perNode)
        let nodeCount = (gpus + perNode - 1) / perNode
        for n in 0..<nodeCount {
            var gs: [RouterGPU] = []
            for i in 0..<min(perNode, gpus - n * perNode) {
                let (m, mem) = models[(n + i) % models.count]
                let uuid = "GPU-\(n)-\(i)"
                var used: UInt64 = UInt64(0.4 * gib)
                if (n + i) % 2 == 0 {
                    let r = UInt64(Double(rng.next() % 10 + 2) * gib)
                    used += r
                    running.append(RouterRunningJob(id: "run-\(n)-\(i)", batchID: "b\(n % 7)", kind: "image", node: "node-\(n)",
                                                    gpuUUIDs: [uuid], reservedBytesPerGPU: r, placedAt: now.addingTimeInterval(-30),
                                                    startedAt: now.addingTimeInterval(-20), visible: true,
                                                    expectedEnd: now.addingTimeInterval(Double(rng.next() % 120))))
                }
                gs.append(RouterGPU(uuid: uuid, index: i, model: m, totalBytes: UInt64(mem * gib), usedBytes: used))
            }
            nodes.append(RouterNode(name: "node-\(n)", services: serviceSets[n % serviceSets.count], gpus: gs))
        }
        let kinds = ["image", "image", "image", "llm", "tts", "score", "command", "lora"]
        var jobs: [RouterJob] = []
        jobs.reserveCapacity(pending)
        for j in 0..<pending {
            let kind = kinds[Int(rng.next() % UInt64(kinds.count))]
            let gpusReq = kind == "score" ? 0 : (kind == "llm" && rng.next() % 4 == 0 ? 2 : 1)
            let vram: UInt64? = kind == "score" ? nil : (rng.next() % 3 == 0 ? nil : UInt64(Double(rng.next() % 20 + 1) * gib))
            var spec: [String: JSONValue] = ["base_runtime_s": .number(Double(rng.next() % 600 + 30))]
            if kind == "llm" { spec["model"] = .string(rng.next() % 2 == 0 ? "llama-3.3-70b" : "qwen2.5-7b") }
            jobs.append(RouterJob(id: "job-\(j)", batchID: "b\(rng.next() % 20)", kind: kind, spec: .object(spec),
                                  vramRequestBytes: vram, gpusRequested: gpusReq, priority: Int(rng.next() % 3),
                                  submittedAt: now.addingTimeInterval(-Double(rng.next() % 7200))))
        }
        return (ClusterSnapshot(nodes: nodes, running: running, headroomBytes: 512 * ByteSize.MiB), jobs, now)
    }

    /// What a coordinator with history has learned about the scenario's jobs: a mean runtime for
    /// every kind and model on every GPU model, and a VRAM peak for each kind and model. A pass with
    /// statistics looks them up per job (the bench without them measured none of that).
    public static func learnedStats(_ snapshot: ClusterSnapshot, _ jobs: [RouterJob]) -> RuntimeStats {
        var seen = Set<[String]>()
        var rows: [RuntimeStatsRow] = []
        let gpuModels = Array(Set(snapshot.nodes.flatMap { $0.gpus.map(\.model) })).sorted()
        for j in jobs {
            let model = j.modelKey
            guard seen.insert([j.kind, model]).inserted else { continue }
            let base = j.spec["base_runtime_s"]?.doubleValue ?? 60
            if j.cpuOnly {
                rows.append(RuntimeStatsRow(kind: j.kind, modelKey: model, gpuModel: "cpu", n: 10, meanS: base, p95S: base * 1.2))
                continue
            }
            for (i, g) in gpuModels.enumerated() {
                rows.append(RuntimeStatsRow(kind: j.kind, modelKey: model, gpuModel: g, n: 10, meanS: base / Double(4 + 2 * i),
                                            p95S: base / Double(3 + 2 * i), peakVRAMP95Bytes: UInt64(4 + i) * ByteSize.GiB))
            }
        }
        return RuntimeStats(rows: rows)
    }
}
