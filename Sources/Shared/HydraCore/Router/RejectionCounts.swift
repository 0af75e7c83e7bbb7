import Foundation

/// How the pass turned a waiting job down, counted as data (in the manner of Nomad's
/// `AllocMetric`): how many nodes and GPUs it looked at, how many each filter rejected, and of
/// the GPUs that passed every filter, how many could not take the job now and in which
/// dimension. The pass only counts; `render()` writes the one-line summary, outside the loop.
public struct RejectionCounts: Sendable, Equatable, Codable {
    /// Nodes the filters looked at, and GPUs on the nodes that passed the node-level filters.
    public var nodesEvaluated = 0
    public var gpusEvaluated = 0
    /// Nodes a node-level filter turned down, by filter: `service`, `node`, `cpu`, `up`,
    /// `draining`, `gpus` (has none), `gang` (too few GPUs pass for the gang).
    public var nodesFiltered: [String: Int] = [:]
    /// GPUs a GPU-level filter turned down, by filter: `gpu_model`, `gpu_index`, `capacity`.
    public var gpusFiltered: [String: Int] = [:]
    /// Eligible GPUs without enough free VRAM now.
    public var vram = 0
    /// Eligible GPUs held for a job ranked before this one.
    public var held = 0
    /// Of those without VRAM, the ones where something Hydra does not run holds it (no estimate of when it frees).
    public var foreign = 0
    /// Eligible GPUs with room but busy: under `hydra` a job that is not urgent waits for a busy GPU instead of sharing it.
    public var busy = 0
    /// Eligible GPUs that fit now but were passed over for a busy one that finishes the job sooner.
    public var slower = 0
    /// Eligible nodes with every CPU slot taken (CPU-only jobs).
    public var cpuSlotsFull = 0

    public init() {}

    /// Rejections by dimension, largest first, then by name: `[("vram", 3), ("service", 2)]`.
    public var dimensions: [(name: String, count: Int)] {
        var all: [String: Int] = [:]
        for (k, v) in nodesFiltered { all[k, default: 0] += v }
        for (k, v) in gpusFiltered { all[k, default: 0] += v }
        for (k, v) in [("vram", vram), ("held", held), ("foreign", foreign), ("busy", busy), ("slower", slower), ("cpu_slots", cpuSlotsFull)] where v > 0 {
            all[k, default: 0] += v
        }
        return all.filter { $0.value > 0 }.map { ($0.key, $0.value) }.sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
    }

    /// One line: `5 nodes, 12 GPUs evaluated; filtered: service 3 nodes, capacity 4 GPUs; now: vram 5, held 1`.
    public func render() -> String {
        var parts = ["\(nodesEvaluated) node(s), \(gpusEvaluated) GPU(s) evaluated"]
        let nf = nodesFiltered.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) node(s)" }
        let gf = gpusFiltered.filter { $0.value > 0 }.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value) GPU(s)" }
        if !(nf + gf).isEmpty { parts.append("filtered: " + (nf + gf).joined(separator: ", ")) }
        var now: [String] = []
        for (k, v) in [("vram", vram), ("held", held), ("foreign", foreign), ("busy", busy), ("slower", slower), ("cpu_slots", cpuSlotsFull)] where v > 0 {
            now.append("\(k) \(v)")
        }
        if !now.isEmpty { parts.append("now: " + now.joined(separator: ", ")) }
        return parts.joined(separator: "; ")
    }
}
