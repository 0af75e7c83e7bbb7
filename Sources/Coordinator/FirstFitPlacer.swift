import Foundation
import Shared

/// A node as the coordinator sees it this tick.
struct LiveNode: Sendable {
    var name: String
    var inventory: Inventory
    var draining: Bool
    var services: [String]
    var gpuWeights: [Double]
}

/// First version of placement: the job fits in free VRAM; prefer the fastest GPU.
/// Free VRAM = total − max(live used, Hydra's reservations) − headroom.
struct FirstFitPlacer {
    var headroom: UInt64
    var cpuSlotsPerNode = 4

    struct Output {
        var assignments: [(jobID: String, node: String, gpuUUIDs: [String])] = []
        var reasons: [String: String] = [:]
    }

    func place(pending: [JobRow], nodes: [LiveNode], active: [JobRow]) -> Output {
        var out = Output()
        var reserved: [String: UInt64] = [:]
        var cpuJobs: [String: Int] = [:]
        for j in active {
            if j.gpuUUIDs.isEmpty, let n = j.node { cpuJobs[n, default: 0] += 1 }
            for u in j.gpuUUIDs { reserved[u, default: 0] += j.vramBytes }
        }
        let usable = nodes.filter { !$0.draining }
        func free(_ g: GPUInfo) -> UInt64 {
            let total = g.memoryTotalBytes ?? 0
            let used = max(g.memoryUsedBytes ?? 0, reserved[g.uuid] ?? 0)
            return total > used + headroom ? total - used - headroom : 0
        }
        for job in pending {
            if job.gpus == 0 {
                let candidates = usable.filter { (cpuJobs[$0.name] ?? 0) < cpuSlotsPerNode }
                guard let n = candidates.min(by: { (cpuJobs[$0.name] ?? 0, $0.inventory.gpus.count) < (cpuJobs[$1.name] ?? 0, $1.inventory.gpus.count) }) else {
                    out.reasons[job.id] = usable.isEmpty ? "no node is up" : "all CPU slots busy (\(cpuSlotsPerNode) per node)"
                    continue
                }
                cpuJobs[n.name, default: 0] += 1
                out.assignments.append((job.id, n.name, []))
                continue
            }
            var best: (node: String, uuids: [String], speed: Double)?
            for n in usable {
                let fitting = n.inventory.gpus.enumerated()
                    .filter { free($0.element) >= job.vramBytes }
                    .sorted { (n.gpuWeights[safe: $0.offset] ?? 1) > (n.gpuWeights[safe: $1.offset] ?? 1) }
                guard fitting.count >= job.gpus else { continue }
                let chosen = Array(fitting.prefix(job.gpus))
                let speed = chosen.map { n.gpuWeights[safe: $0.offset] ?? 1 }.min() ?? 1
                if best == nil || speed > best!.speed { best = (n.name, chosen.map(\.element.uuid), speed) }
            }
            guard let b = best else {
                let all = usable.flatMap { n in n.inventory.gpus.map { (n.name, $0) } }
                if let most = all.max(by: { free($0.1) < free($1.1) }) {
                    out.reasons[job.id] = "needs \(ByteSize.format(job.vramBytes)) on \(job.gpus) GPU\(job.gpus == 1 ? "" : "s"); most free: \(most.0)/\(most.1.index ?? 0) \(most.1.name ?? "GPU") \(ByteSize.format(free(most.1)))"
                } else {
                    out.reasons[job.id] = usable.isEmpty ? "no node is up" : "no node with GPUs is up"
                }
                continue
            }
            for u in b.uuids { reserved[u, default: 0] += job.vramBytes }
            out.assignments.append((job.id, b.node, b.uuids))
        }
        return out
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { i >= 0 && i < count ? self[i] : nil }
}
