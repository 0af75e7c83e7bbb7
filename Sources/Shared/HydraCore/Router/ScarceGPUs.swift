import Foundation

/// Jobs that only a few GPUs can run (a big-VRAM class that fits one card, a service on one
/// node) lose those GPUs to jobs that could have gone anywhere: earliest-finish sends every
/// job to the fastest card, and the scarce jobs then queue behind work that had other
/// choices. Before the pass, the pending work of such jobs is charged to the GPUs they can
/// use (spread evenly over them); a job with more choices pays that charge on top of its
/// expected finish there, so it goes elsewhere unless the scarce GPU is still clearly better.
/// When the pass reaches a scarce job, its charge is lifted and its own plan (queue, hold)
/// takes over.
enum ScarceGPUs {
    /// A job is scarce when at most this share of the cluster's GPUs can run it.
    static let share = 0.25

    /// `shapeOf[i]` indexes `shapes` (and `eligibility`, filled here where missing).
    static func charge(_ demands: inout [JobDemand], shapeOf: [Int], shapes: [DemandShape], _ state: inout PassState,
                       _ eligibility: inout [Eligibility?], snapshot: ClusterSnapshot, filters: [any PlacementFilter]) {
        let total = state.gpus.count
        guard total > 1 else { return }
        var scarceShape = [Bool?](repeating: nil, count: shapes.count)
        for i in demands.indices {
            // Fields, not a copy of the demand: a copy retains its strings, for every pending job.
            guard !demands[i].shape.cpuOnly, !demands[i].urgent else { continue }
            let sid = shapeOf[i]
            let isScarce: Bool
            if let known = scarceShape[sid] { isScarce = known } else {
                let e: Eligibility
                if let c = eligibility[sid] { e = c } else {
                    e = Eligibility.compute(shapes[sid], snapshot: snapshot, state: state, filters: filters)
                    eligibility[sid] = e
                }
                let count = e.nodes.reduce(0) { $0 + $1.gpus.count }
                isScarce = e.reason == nil && count > 0 && Double(count) <= share * Double(total)
                scarceShape[sid] = isScarce
            }
            guard isScarce, let e = eligibility[sid] else { continue }
            demands[i].scarce = true
            apply(demands[i], e, &state, sign: 1)
        }
    }

    static func release(_ d: JobDemand, _ e: Eligibility, _ state: inout PassState) {
        apply(d, e, &state, sign: -1)
    }

    private static func apply(_ d: JobDemand, _ e: Eligibility, _ state: inout PassState, sign: Double) {
        let count = e.nodes.reduce(0) { $0 + $1.gpus.count }
        guard count > 0 else { return }
        let perGPU = Double(d.shape.gpus) / Double(count)
        for n in e.nodes {
            for s in n.gpus {
                let runtime = RuntimeEstimator.gpu(d, learned: nil, weight: state.gpus[s].weight)
                state.contested[s] = max(0, state.contested[s] + sign * runtime * perGPU)
                state.contestedJobs[s] += sign > 0 ? 1 : -1
            }
        }
    }
}
