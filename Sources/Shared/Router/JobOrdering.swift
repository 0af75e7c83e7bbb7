import Foundation

/// The order in which a pass considers pending jobs: priority raised by age (so no job
/// starves), then fair share between batches of equal effective priority, then age.
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
    public static func order(_ pending: [RouterJob], running: [RouterRunningJob], now: Date, agingStepS: Double) -> [Int] {
        let n = pending.count
        var eff = [Int](repeating: 0, count: n)
        var age = [Double](repeating: 0, count: n)
        for i in 0..<n {
            eff[i] = effectivePriority(pending[i], now: now, agingStepS: agingStepS)
            age[i] = pending[i].submittedAt.timeIntervalSinceReferenceDate
        }
        var onNodes: [String: Int] = [:]
        for r in running { onNodes[r.batchID ?? "", default: 0] += 1 }

        var byAge = Array(0..<n)
        byAge.sort { a, b in
            if eff[a] != eff[b] { return eff[a] > eff[b] }
            if age[a] != age[b] { return age[a] < age[b] }
            return pending[a].id < pending[b].id
        }
        struct TierBatch: Hashable { var tier: Int; var batch: String }
        var seen: [TierBatch: Int] = [:]
        var share = [Int](repeating: 0, count: n)
        for i in byAge {
            let b = pending[i].batchID ?? ""
            let k = TierBatch(tier: eff[i], batch: b)
            let rank = seen[k] ?? (onNodes[b] ?? 0)
            share[i] = rank
            seen[k] = rank + 1
        }
        var out = byAge
        out.sort { a, b in
            if eff[a] != eff[b] { return eff[a] > eff[b] }
            if share[a] != share[b] { return share[a] < share[b] }
            if age[a] != age[b] { return age[a] < age[b] }
            return pending[a].id < pending[b].id
        }
        return out
    }
}
