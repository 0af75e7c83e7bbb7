import Foundation

/// The result of the filters for one job shape: where it may go, or why nowhere.
struct Eligibility: Sendable {
    /// Nodes that pass every filter, with their GPUs that pass (empty for CPU-only jobs).
    var nodes: [(node: Int, gpus: [Int])]
    /// Set when `nodes` is empty.
    var reason: (code: PendingReason.Code, message: String, never: Bool)?
    /// What the filters turned down for this shape (the same for every job of it).
    var counts = RejectionCounts()

    /// The summed weight of the eligible GPUs: the work per second the shape's jobs could get.
    func weight(_ state: borrowing PassState) -> Double {
        var w = 0.0
        for n in nodes { for g in n.gpus { w += state.gpus[g].weight } }
        return w
    }

    /// Shape `sid`'s outcome, computed the first time a pass asks and kept in `cache`.
    static func cached(_ sid: Int, _ cache: inout [Eligibility?], shapes: [DemandShape], snapshot: ClusterSnapshot,
                       state: borrowing PassState, filters: [any PlacementFilter]) -> Eligibility {
        if let c = cache[sid] { return c }
        let e = compute(shapes[sid], snapshot: snapshot, state: state, filters: filters)
        cache[sid] = e
        return e
    }

    static func compute(_ s: DemandShape, snapshot: ClusterSnapshot, state: borrowing PassState,
                        filters: [any PlacementFilter]) -> Eligibility {
        var eligible: [(node: Int, gpus: [Int])] = []
        // Per node: static node-level rejection, transient ones, and the GPU-level outcome.
        var staticNodeRej: [(Int, Rejection)] = []
        var waitingNodes: [(Int, [Rejection])] = []
        var gpuRej: [(Int, Rejection)] = []
        var shortGangs: [(Int, Int)] = []
        var counts = RejectionCounts()
        counts.nodesEvaluated = snapshot.nodes.count
        for (ni, node) in snapshot.nodes.enumerated() {
            var transient: [Rejection] = []
            var blocked: Rejection?
            // By index: `for f in filters` copied each filter (an existential) for every node and GPU.
            for f in filters.indices {
                guard let r = filters[f].check(s, node: node) else { continue }
                if r.transient { transient.append(r) } else { blocked = r; break }
            }
            for r in transient { counts.nodesFiltered[r.filter, default: 0] += 1 }
            if let blocked { staticNodeRej.append((ni, blocked)); counts.nodesFiltered[blocked.filter, default: 0] += 1; continue }
            var ok: [Int] = []
            if !s.cpuOnly {
                if node.gpus.isEmpty {
                    staticNodeRej.append((ni, Rejection(filter: "gpus", detail: "has no GPUs", transient: false)))
                    counts.nodesFiltered["gpus", default: 0] += 1
                    continue
                }
                for (k, g) in node.gpus.enumerated() {
                    var rej: Rejection?
                    for f in filters.indices {
                        if let r = filters[f].check(s, gpu: g, node: node, headroom: snapshot.headroomBytes) { rej = r; break }
                    }
                    counts.gpusEvaluated += 1
                    if let rej { gpuRej.append((state.nodes[ni].gpuSlots[k], rej)); counts.gpusFiltered[rej.filter, default: 0] += 1 }
                    else { ok.append(state.nodes[ni].gpuSlots[k]) }
                }
                if ok.count < s.gpus {
                    if !ok.isEmpty || s.gpus > 1 { shortGangs.append((ni, ok.count)); if !ok.isEmpty { counts.nodesFiltered["gang", default: 0] += 1 } }
                    continue
                }
            }
            if transient.isEmpty { eligible.append((ni, ok)) } else { waitingNodes.append((ni, transient)) }
        }
        if !eligible.isEmpty { return Eligibility(nodes: eligible, reason: nil, counts: counts) }
        return Eligibility(nodes: [], reason: explain(s, snapshot: snapshot, state: state, staticNodeRej: staticNodeRej,
                                                       waitingNodes: waitingNodes, gpuRej: gpuRej, shortGangs: shortGangs), counts: counts)
    }

    private static func explain(_ s: DemandShape, snapshot: ClusterSnapshot, state: borrowing PassState,
                                staticNodeRej: [(Int, Rejection)], waitingNodes: [(Int, [Rejection])],
                                gpuRej: [(Int, Rejection)], shortGangs: [(Int, Int)]) -> (PendingReason.Code, String, Bool) {
        let name = { (ni: Int) in snapshot.nodes[ni].name }
        if !waitingNodes.isEmpty {
            let why = waitingNodes.map { "\(name($0.0)) \($0.1.map(\.detail).joined(separator: ", "))" }.joined(separator: "; ")
            let what: String
            if !s.services.isEmpty { what = s.services.joined(separator: " or ") }
            else if let n = s.nodeSelector { what = "node \(n)" }
            else if s.cpuOnly { what = "a node for CPU jobs" }
            else { what = "a node with a GPU that fits" }
            return (.waitingForNode, "waits for \(what) (\(why))", false)
        }
        if snapshot.nodes.isEmpty { return (.unschedulable, "no nodes in the cluster", true) }
        if staticNodeRej.count == snapshot.nodes.count {
            if let argv = s.command, staticNodeRej.allSatisfy({ $0.1.filter == "command" }) {
                let list = staticNodeRej.map { "\(name($0.0)) \($0.1.detail)" }.joined(separator: "; ")
                return (.unschedulable, "no node's command allowlist runs \(CommandTemplate.shown(argv.joined(separator: " "))): \(list)", true)
            }
            if staticNodeRej.allSatisfy({ $0.1.filter == "service" }) {
                return (.unschedulable, "no node runs \(s.services.joined(separator: " or "))", true)
            }
            if let n = s.nodeSelector, staticNodeRej.allSatisfy({ $0.1.filter == "node" || $0.1.filter == "service" }) {
                let exists = snapshot.nodes.contains { $0.name == n }
                return (.unschedulable, exists ? "node \(n) does not run \(s.services.joined(separator: " or "))" : "no node named \(n)", true)
            }
            let list = staticNodeRej.map { "\(name($0.0)) \($0.1.detail)" }.joined(separator: "; ")
            return (.unschedulable, "no eligible node: \(list)", true)
        }
        let capacity = gpuRej.filter { $0.1.filter == "capacity" }
        if !capacity.isEmpty || (!shortGangs.isEmpty && s.gpus > 1) {
            if s.gpus > 1 {
                let best = shortGangs.max { $0.1 < $1.1 }
                let most = best.map { "at most \($0.1) on \(name($0.0))" } ?? "none anywhere"
                return (.unschedulable, "needs \(s.gpus) GPUs with \(ByteSize.format(s.needBytes)) each on one node; \(most)", true)
            }
            let largest = capacity.max { state.gpus[$0.0].usable < state.gpus[$1.0].usable }!
            return (.unschedulable, "needs \(ByteSize.format(s.needBytes)) on 1 GPU; largest: \(state.info[largest.0].label) \(ByteSize.format(state.gpus[largest.0].usable)) usable", true)
        }
        if !gpuRej.isEmpty {
            let list = Set(gpuRej.map(\.1.detail)).sorted().joined(separator: ", ")
            return (.unschedulable, "no eligible GPU: \(gpuRej.count) GPU(s) rejected (\(list))", true)
        }
        let list = staticNodeRej.map { "\(name($0.0)) \($0.1.detail)" }.joined(separator: "; ")
        return (.unschedulable, "no eligible node: \(list)", true)
    }
}
