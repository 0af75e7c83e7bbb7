import Foundation

/// Jobs that only a few GPUs can run (a big-VRAM class that fits one card, a service on one
/// node) lose those GPUs to jobs that could have gone anywhere: earliest-finish sends every
/// job to the fastest card, and the scarce jobs then queue behind work that had other
/// choices. Before the pass, the pending work of such jobs is charged to the GPUs they can
/// use (spread evenly over them); a job with more choices pays that charge on top of its
/// expected finish there, so it goes elsewhere unless the scarce GPU is still clearly better.
/// When the pass reaches a scarce job, its charge is lifted and its own plan (queue, hold)
/// takes over. A scarce job pays the charge of the other scarce classes, not its own: two
/// classes that both have few GPUs overlap, and the one with more choices (a LoRA run that four
/// GPUs fit) otherwise took the fastest GPU of the one with fewer (the only pair that runs the
/// 2-GPU expansions feeding every image), and the whole pipeline stalled behind it (generated
/// seeds 167 and 191).
enum ScarceGPUs {
    /// A job is scarce when at most this share of the cluster's GPUs can run it.
    static let share = 0.25

    /// `shapeOf[i]` indexes `shapes` (and `eligibility`, filled here where missing).
    ///
    /// A class is also protected when it is *pressed*: its pending work per unit of its GPUs'
    /// capacity is at least `pressedFactor` × the cluster's (all pending GPU work over all GPUs'
    /// weights), although many GPUs can run it. With a backlog submitted at once, the class that
    /// ends the night (images on the ComfyUI nodes) otherwise lost its GPUs to gangs and
    /// expansions that had GPUs of their own. 0 turns it off. A pressed class is charged like a
    /// scarce one but does not keep pace with aging (`fewGPUs` stays false): ranked with the
    /// most-aged jobs, a large class took every turn on its GPUs and starved a gang that needed
    /// two of them at once (generated seed 6).
    ///
    /// `heldBack` (parallel to the pending jobs, empty for none): the work of upcoming jobs that
    /// wait on each (`GatedWork.heldBack`). The pressed test counts it with the job's own, in the
    /// class's work and in the cluster's, so a class of short jobs that gates a long stage keeps
    /// its GPUs (generated seed 191: a 23-minute LoRA run took the H100 that every 2-GPU
    /// expansion needs, and 67 of them, with the 67 images behind them, waited 45 minutes; 1.673
    /// → 1.290 × the bound). The charge itself stays the class's own work: the held-back work
    /// runs on other GPUs.
    static func charge(_ demands: inout [JobDemand], shapeOf: [Int], shapes: [DemandShape], _ state: inout PassState,
                       _ eligibility: inout [Eligibility?], snapshot: ClusterSnapshot, filters: [any PlacementFilter],
                       pressedFactor: Double = 0, heldBack: [Double] = []) {
        let total = state.gpus.count
        guard total > 1 else { return }
        /// Per shape, once its first job comes up.
        enum Kind { case free, few, pressed }
        var kindOf = [Kind?](repeating: nil, count: shapes.count)
        state.shapeChargeBase = [Double](repeating: 0, count: shapes.count)
        state.shapeChargeFixed = [Double](repeating: 0, count: shapes.count)
        // Weight-1 work per shape (a gang's on each of its GPUs), and the cluster's.
        var shapeWork: [Double] = []
        var clusterLoad = 0.0
        if pressedFactor > 0 {
            shapeWork = [Double](repeating: 0, count: shapes.count)
            var work = 0.0, capacity = 0.0
            for i in demands.indices where !demands[i].shape.cpuOnly && !demands[i].urgent {
                let w = RuntimeEstimator.unitWork(demands[i])
                shapeWork[shapeOf[i]] += w; work += w
            }
            for i in heldBack.indices where heldBack[i] > 0 && !demands[i].shape.cpuOnly && !demands[i].urgent {
                shapeWork[shapeOf[i]] += heldBack[i]; work += heldBack[i]
            }
            for g in state.gpus { capacity += g.weight }
            clusterLoad = capacity > 0 ? work / capacity : 0
        }
        for i in demands.indices {
            // Fields, not a copy of the demand: a copy retains its strings, for every pending job.
            guard !demands[i].shape.cpuOnly, !demands[i].urgent else { continue }
            let sid = shapeOf[i]
            let kind: Kind
            if let known = kindOf[sid] { kind = known } else {
                let e = Eligibility.cached(sid, &eligibility, shapes: shapes, snapshot: snapshot, state: state, filters: filters)
                let count = e.nodes.reduce(0) { $0 + $1.gpus.count }
                let usable = e.reason == nil && count > 0
                if !usable {
                    kind = .free
                } else if Double(count) <= share * Double(total) {
                    kind = .few
                } else if pressedFactor > 0, count < total {
                    let capacity = e.weight(state)
                    kind = capacity > 0 && shapeWork[sid] / capacity >= pressedFactor * clusterLoad ? .pressed : .free
                } else {
                    kind = .free
                }
                kindOf[sid] = kind
            }
            guard kind != .free, let e = eligibility[sid] else { continue }
            demands[i].scarce = true
            demands[i].fewGPUs = kind == .few
            apply(demands[i], sid, e, &state, sign: 1)
        }
    }

    static func release(_ d: JobDemand, shapeID: Int, _ e: Eligibility, _ state: inout PassState) {
        apply(d, shapeID, e, &state, sign: -1)
    }

    /// Adds (sign 1) or lifts (−1) the job's charge on its GPUs and in its class's own total.
    private static func apply(_ d: JobDemand, _ sid: Int, _ e: Eligibility, _ state: inout PassState, sign: Double) {
        let count = e.nodes.reduce(0) { $0 + $1.gpus.count }
        guard count > 0 else { return }
        let perGPU = Double(d.shape.gpus) / Double(count)
        if let dur = d.durationS { state.shapeChargeFixed[sid] += sign * dur * perGPU }
        else { state.shapeChargeBase[sid] += sign * d.baseRuntimeS * perGPU }
        let paces = d.shape.gpus > 1 ? state.gangPaces(shape: sid, e, k: d.shape.gpus) : []
        for n in e.nodes {
            // A gang holds each of its GPUs for its runtime at the pace of the slowest it takes: on
            // an H100 paired with an A100 the expansions need the H100 for the A100's time. Charged
            // at the H100's own pace, a 26-minute video took it (generated seed 180 at once) and
            // the 74 expansions that feed every image waited an hour: 1.241 × the bound, 1.000
            // charged at the gang's pace.
            let pace = paces.isEmpty ? 0 : paces[n.node]
            for s in n.gpus {
                let runtime = RuntimeEstimator.gpu(d, learned: nil, weight: pace > 0 ? pace : state.gpus[s].weight)
                state.contested[s] = max(0, state.contested[s] + sign * runtime * perGPU)
                state.contestedJobs[s] += sign > 0 ? 1 : -1
            }
        }
    }
}
