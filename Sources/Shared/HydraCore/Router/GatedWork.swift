import Foundation

/// Work a class of pending jobs holds back.
///
/// The longest-path order ranks a job by its own runtime and the longest chain behind it. A
/// class of many short jobs that each feed one long job (140 two-GPU expansions, each feeding one
/// image) ranks below a video, though together they hold back the images' whole volume: the
/// images cannot fill the cluster before the expansions are done. Here every pending job whose
/// class (shape, batch and kind) upcoming jobs wait on ranks at least at its own runtime plus the
/// time those upcoming jobs need on all the GPUs they may use (their weight-1 work over those
/// GPUs' summed weights), on the order's reference scale. Linear in the upcoming jobs'
/// dependency lists.
///
/// Found on generated seed 193 submitted at once (1.341 × the bound, least-loaded 1.28): videos
/// and 68 GiB jobs ranked by their own length took the only node that runs the 2-GPU expansions,
/// and every image waited; ranked by the images they hold back the expansions go first (1.052).
enum GatedWork {

    /// Per upcoming job, the pending jobs it waits on (indices into `pending`, in its `waitsOn`
    /// order); nil where no upcoming job names a pending one. Found once per pass for the order
    /// (`raise`) and the pressed test (`heldBack`).
    static func waits(pending: [RouterJob], upcoming: [RouterJob]) -> [[Int]]? {
        guard upcoming.contains(where: { !$0.waitsOn.isEmpty }) else { return nil }
        // Only the pending jobs some upcoming job names: a 10 000-job pass would otherwise hash every ID.
        var index: [String: Int] = [:]
        // Fields, never a copy of a job: a copy retains every string and array it holds.
        for k in upcoming.indices { for id in upcoming[k].waitsOn { index[id] = -1 } }
        var named = 0
        for i in pending.indices { if let k = index.index(forKey: pending[i].id) { index.values[k] = i; named += 1 } }
        guard named > 0 else { return nil }
        var out = [[Int]](repeating: [], count: upcoming.count)
        for k in upcoming.indices where !upcoming[k].waitsOn.isEmpty {
            for id in upcoming[k].waitsOn { if let p = index[id], p >= 0 { out[k].append(p) } }
        }
        return out
    }

    /// Per pending job, the weight-1 GPU work of the upcoming jobs that wait on it (each one's
    /// work, k GPUs' worth for a gang, split evenly among the pending jobs it names). The pressed
    /// test (`ScarceGPUs`) counts it with the job's own: 67 two-GPU expansions hold little work
    /// of their own, but the 67 images behind them cannot start until they are done.
    static func heldBack(_ waits: [[Int]], pendingCount: Int, demands: [JobDemand]) -> [Double] {
        var held = [Double](repeating: 0, count: pendingCount)
        for k in waits.indices where !waits[k].isEmpty {
            let di = pendingCount + k
            guard !demands[di].shape.cpuOnly, !demands[di].urgent else { continue }
            let share = RuntimeEstimator.unitWork(demands[di]) / Double(waits[k].count)
            for p in waits[k] { held[p] += share }
        }
        return held
    }

    static func raise(_ paths: inout [Double], pending: [RouterJob], upcoming: [RouterJob], waits: [[Int]], demands: [JobDemand],
                      shapeOf: [Int], shapes: [DemandShape], eligibility: inout [Eligibility?],
                      snapshot: ClusterSnapshot, state: borrowing PassState, filters: [any PlacementFilter]) {
        guard demands.count == pending.count + upcoming.count, waits.count == upcoming.count else { return }
        var capacity = [Double?](repeating: nil, count: shapes.count)
        // A class: the pending jobs of one shape, batch and kind (a batch file's group). The shape
        // alone would lift an unrelated job that happens to ask for the same VRAM and services.
        struct Class: Hashable { var shape: Int; var batch: String; var kind: String }
        var classIDs: [Class: Int] = [:]
        var last: (shape: Int, batch: String?, kind: String, id: Int)?
        // Consecutive pending jobs mostly share a batch and kind (the list is in submit order): compare before hashing.
        func classOf(_ p: Int) -> Int {
            if let l = last, l.shape == shapeOf[p], l.batch == pending[p].batchID, l.kind == pending[p].kind { return l.id }
            let key = Class(shape: shapeOf[p], batch: pending[p].batchID ?? "", kind: pending[p].kind)
            let id: Int
            if let known = classIDs[key] { id = known } else { id = classIDs.count; classIDs[key] = id }
            last = (shapeOf[p], pending[p].batchID, pending[p].kind, id)
            return id
        }
        var gated: [Double] = []
        var gatingShape = [Bool](repeating: false, count: shapes.count)
        for k in upcoming.indices where !waits[k].isEmpty {
            let di = pending.count + k
            guard !demands[di].shape.cpuOnly else { continue }
            let us = shapeOf[di]
            let cap: Double
            if let c = capacity[us] { cap = c } else {
                let e = Eligibility.cached(us, &eligibility, shapes: shapes, snapshot: snapshot, state: state, filters: filters)
                cap = e.reason == nil ? e.weight(state) : 0
                capacity[us] = cap
            }
            guard cap > 0 else { continue }
            let work = (demands[di].durationS.map { $0 * JobOrdering.referenceWeight } ?? demands[di].baseRuntimeS)
                * Double(demands[di].shape.gpus) / cap
            var counted = -1
            for p in waits[k] {
                let c = classOf(p)
                if c == counted { continue }   // a job waiting on several of one class counts once for it
                counted = c
                if c >= gated.count { gated += Array(repeating: 0, count: c + 1 - gated.count) }
                gated[c] += work
                gatingShape[shapeOf[p]] = true
            }
        }
        guard !gated.isEmpty else { return }
        // Per shape, its gated classes (usually one): a job is matched by comparing its batch and
        // kind with theirs, not by hashing them for each of 10 000 jobs.
        var classesOf = [[(batch: String, kind: String, gated: Double)]](repeating: [], count: shapes.count)
        for (key, id) in classIDs where id < gated.count && gated[id] > 0 {
            classesOf[key.shape].append((key.batch, key.kind, gated[id]))
        }
        for j in pending.indices where gatingShape[shapeOf[j]] {
            let batch = pending[j].batchID ?? ""
            for c in classesOf[shapeOf[j]] where c.kind == pending[j].kind && c.batch == batch {
                paths[j] = max(paths[j], JobOrdering.pathS(demands[j], tailS: 0) + c.gated)
                break
            }
        }
    }
}
