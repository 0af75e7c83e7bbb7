import Foundation

/// The order in which a pass considers pending jobs: priority raised by age (so no job
/// starves), then fair share between batches of equal effective priority, then (with
/// `criticalPath`) the longest path through the job first, then age.
public enum JobOrdering {
    /// Priority plus one step per `agingStepS` waited.
    public static func effectivePriority(_ j: RouterJob, now: Date, agingStepS: Double) -> Int {
        let waited = max(0, now.timeIntervalSince(j.submittedAt))
        guard agingStepS > 0 else { return j.priority }
        return j.priority + Int(min(waited / agingStepS, 1e6))
    }

    /// Indices into `pending`, first to be considered first.
    /// Fair share: within a priority tier a batch's n-th job ranks with the other batches' n-th
    /// jobs, counting the jobs a batch already has on nodes, so a big batch submitted first
    /// does not hold a small later one back until it is done.
    /// `paths` (parallel to `pending`): each job's longest path when the caller has it already
    /// (the router reads runtimes from the spec once per job); nil computes it here.
    /// `keepPace` (parallel to `pending`): jobs that rank with the most-aged job of their own
    /// priority. A scarce job (few GPUs can run it) that arrived after a stream of flexible jobs
    /// of the same priority otherwise waits an aging step behind each of them: on generated
    /// seed 130 a big-VRAM class that fits one H100 waited 30 minutes while 10-minute-old LLM
    /// expansions, which four other GPUs could run, kept taking it.
    public static func order(_ pending: [RouterJob], running: [RouterRunningJob], now: Date, agingStepS: Double,
                             criticalPath: Bool = false, paths: [Double]? = nil, keepPace: [Bool]? = nil) -> [Int] {
        let n = pending.count
        // Sort keys in one flat array: comparing through closures over several arrays (and
        // the jobs themselves) was a tenth of a 10 000-job pass.
        struct Key { var eff: Int; var share: Int; var path: Double; var age: Double; var index: Int; var batch: Int }
        var batchIDs: [String: Int] = [:]
        var keys: [Key] = []
        keys.reserveCapacity(n)
        for i in 0..<n {
            let b = pending[i].batchID ?? ""
            let bid: Int
            if let x = batchIDs[b] { bid = x } else { bid = batchIDs.count; batchIDs[b] = bid }
            keys.append(Key(eff: effectivePriority(pending[i], now: now, agingStepS: agingStepS), share: 0,
                            path: criticalPath ? (paths?[i] ?? pathS(pending[i])) : 0,
                            age: pending[i].submittedAt.timeIntervalSinceReferenceDate, index: i, batch: bid))
        }
        if let keepPace, keepPace.contains(true) {
            // Per priority, the highest effective priority among its jobs: a flat array over the
            // priorities' range (a dictionary hashed twice per job in a 10 000-job pass).
            var lo = Int.max, hi = Int.min
            for i in pending.indices { lo = min(lo, pending[i].priority); hi = max(hi, pending[i].priority) }
            if hi - lo < 4096 {
                var top = [Int](repeating: Int.min, count: hi - lo + 1)
                for k in keys.indices { top[pending[k].priority - lo] = max(top[pending[k].priority - lo], keys[k].eff) }
                for k in keys.indices where keepPace[k] { keys[k].eff = max(keys[k].eff, top[pending[k].priority - lo]) }
            } else {
                var top: [Int: Int] = [:]
                for k in keys.indices { top[pending[k].priority] = max(top[pending[k].priority] ?? Int.min, keys[k].eff) }
                for k in keys.indices where keepPace[k] { keys[k].eff = max(keys[k].eff, top[pending[k].priority]!) }
            }
        }
        var onNodes = [Int](repeating: 0, count: batchIDs.count)
        for r in running { if let b = batchIDs[r.batchID ?? ""] { onNodes[b] += 1 } }

        func tieBreak(_ a: Key, _ b: Key) -> Bool {
            if a.path != b.path { return a.path > b.path }
            if a.age != b.age { return a.age < b.age }
            if a.index == b.index { return false }
            return pending[a.index].id < pending[b.index].id
        }
        keys.sort { a, b in a.eff != b.eff ? a.eff > b.eff : tieBreak(a, b) }
        // Fair share: within a tier, a batch's n-th job ranks with the other batches' n-th jobs.
        // The keys are sorted by tier, so each tier is one run: a batch's count is kept in a flat
        // array and starts over when the tier changes (a dictionary keyed by tier and batch
        // hashed twice per job and showed in a pass profile).
        var next = [Int](repeating: 0, count: batchIDs.count)
        var countedTier = [Int?](repeating: nil, count: batchIDs.count)
        for k in keys.indices {
            let b = keys[k].batch, tier = keys[k].eff
            let rank = countedTier[b] == tier ? next[b] : onNodes[b]
            keys[k].share = rank
            next[b] = rank + 1
            countedTier[b] = tier
        }
        // Within a tier the keys are already in tie-break order, so ordering by (share, tie-break) is a
        // stable counting sort by share, tier by tier: linear, where a second comparison sort of the
        // whole list was a twentieth of a 10 000-job pass.
        var out = [Int](repeating: 0, count: keys.count)
        var count: [Int] = []
        var start = 0
        while start < keys.count {
            var end = start + 1
            var top = keys[start].share
            while end < keys.count && keys[end].eff == keys[start].eff { top = max(top, keys[end].share); end += 1 }
            count.removeAll(keepingCapacity: true)
            count.append(contentsOf: repeatElement(0, count: top + 2))
            for k in start..<end { count[keys[k].share + 1] += 1 }
            for v in 1..<count.count { count[v] += count[v - 1] }
            for k in start..<end {
                out[start + count[keys[k].share]] = keys[k].index
                count[keys[k].share] += 1
            }
            start = end
        }
        return out
    }

    /// Jobs that compete for the same GPUs, in the longest-path order: the sets' members swap their
    /// path values so that the job that would stick out furthest if it ran last gets the largest.
    /// List scheduling on m GPUs ends a job started last at most its own runtime × (1 − 1 ÷ m) past
    /// the set's balanced end (Graham), and the work waiting on it (its tail) follows after that;
    /// on one GPU, whose jobs run one after another whatever the order, only the tail sticks out,
    /// so the largest tail goes first (Jackson's rule). Longest path first (own + tail) puts a long
    /// job without dependents before short ones with them, which ends the night with their tails.
    /// Only the assignment of values inside a set changes: each set keeps the values it had, so
    /// its place among other jobs does not move, and a set whose members all have the same tail
    /// (where both rules agree) is left as it is.
    /// - Parameters:
    ///   - paths: each job's path value (own + tail); rewritten.
    ///   - own: each job's own runtime on the same scale.
    ///   - set: each job's set (jobs of one priority that can use the same GPUs), -1 for none.
    ///   - gpus: per set, how many GPUs it has in terms of its fastest (summed weight ÷ the
    ///     fastest's, ÷ the gang size), at least 1.
    static func tailFirst(_ paths: inout [Double], own: [Double], set: [Int], gpus: [Double]) {
        var members = [[Int]](repeating: [], count: gpus.count)
        for j in set.indices where set[j] >= 0 { members[set[j]].append(j) }
        var stick: [(key: Double, job: Int)] = []
        var values: [Double] = []
        for s in members.indices where members[s].count > 1 {
            let js = members[s]
            let tail0 = paths[js[0]] - own[js[0]]
            if js.allSatisfy({ paths[$0] - own[$0] == tail0 }) { continue }
            let share = 1 / max(1, gpus[s])
            stick.removeAll(keepingCapacity: true)
            values.removeAll(keepingCapacity: true)
            for j in js {
                stick.append((paths[j] - own[j] * share, j))
                values.append(paths[j])
            }
            // Ties keep the jobs' order in `pending` (the store's: priority, then submission).
            stick.sort { $0.key != $1.key ? $0.key > $1.key : $0.job < $1.job }
            values.sort(by: >)
            for (r, x) in stick.enumerated() { paths[x.job] = values[r] }
        }
    }

    /// Weight of the GPU a job's own length is measured on: ranks base runtimes and fixed
    /// durations on one scale (a mid-range card; only the order matters).
    static let referenceWeight = 10.0

    /// Seconds on the longest chain through the job: its own runtime + the work that waits on it.
    static func pathS(_ j: RouterJob) -> Double {
        DependencyTails.ownS(kind: j.kind, spec: j.spec, cpuOnly: j.cpuOnly) + j.tailS
    }

    /// The same from a pass's demand (its spec already read).
    static func pathS(_ d: borrowing JobDemand, tailS: Double) -> Double {
        pathS(durationS: d.durationS, baseS: d.baseRuntimeS, cpuOnly: d.shape.cpuOnly, tailS: tailS)
    }

    static func pathS(durationS: Double?, baseS: Double, cpuOnly: Bool, tailS: Double) -> Double {
        if let d = durationS { return d + tailS }
        return (cpuOnly ? baseS : baseS / referenceWeight) + tailS
    }
}
