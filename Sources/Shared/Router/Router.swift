import Foundation

/// The placement decision: pending jobs + a snapshot of the cluster + the clock → which
/// jobs run where now, and why each other job waits. Pure: no I/O, no hidden clock, no
/// global randomness; the same inputs give the same result.
///
/// A pass walks the jobs in `JobOrdering` order and keeps a running tally per GPU (free
/// VRAM, queued work). Each job's candidates are the GPUs (or one-node gangs) that pass the
/// filters; the policy's scorers pick one. A job that cannot (or, under `hydra`, should not)
/// start now is planned onto its best GPU anyway: that GPU's queue grows by the job's
/// runtime and the GPU is held for it, so jobs further down cannot starve it by taking the
/// VRAM it waits for.
public enum Router {
    public static func place(pending: [RouterJob], snapshot: ClusterSnapshot, stats: RuntimeStats = .empty,
                             now: Date, policy: RouterPolicy = .hydra) -> PlacementResult {
        var state = PassState(snapshot: snapshot, stats: stats, now: now, policy: policy)
        let filters = PlacementFilters.standard + policy.extraFilters
        let scorers = policy.scorers
        let order = JobOrdering.order(pending, running: snapshot.running, now: now, agingStepS: policy.agingStepS)

        var eligibility: [DemandShape: Eligibility] = [:]
        var learnedCache: [String: [Double?]] = [:]
        var result = PlacementResult()
        result.assignments.reserveCapacity(min(pending.count, state.gpus.count * 4 + 16))
        result.pending.reserveCapacity(pending.count)

        for (rank, ji) in order.enumerated() {
            let job = pending[ji]
            let d = JobDemand(job: job, stats: stats, policy: policy)
            let elig: Eligibility
            if let e = eligibility[d.shape] { elig = e } else {
                elig = Eligibility.compute(d.shape, snapshot: snapshot, state: state, filters: filters)
                eligibility[d.shape] = elig
            }
            if let r = elig.reason {
                result.pending.append(PendingReason(jobID: job.id, code: r.code, message: r.message, neverRunnable: r.never))
                continue
            }
            if d.shape.cpuOnly {
                placeCPU(job, d, elig, &state, snapshot: snapshot, stats: stats, now: now, into: &result)
                continue
            }
            var learned: [Double?]?
            if !stats.isEmpty {
                let key = d.kind + "\u{1}" + d.modelKey
                if let l = learnedCache[key] { learned = l } else {
                    let l = state.modelNames.map { stats.meanRuntime(kind: d.kind, modelKey: d.modelKey, gpuModel: $0) }
                    learnedCache[key] = l; learned = l
                }
            }
            placeGPU(job, d, rank: rank, elig, learned: learned, &state, scorers: scorers, policy: policy,
                     snapshot: snapshot, now: now, into: &result)
        }
        return result
    }

    // MARK: GPU jobs

    private static func placeGPU(_ job: RouterJob, _ d: JobDemand, rank: Int, _ elig: Eligibility, learned: [Double?]?,
                                 _ state: inout PassState, scorers: [any PlacementScorer], policy: RouterPolicy,
                                 snapshot: ClusterSnapshot, now: Date, into result: inout PlacementResult) {
        let need = Int64(d.shape.needBytes)
        let k = d.shape.gpus
        let jobKey = policy.name == .random ? SplitMix64.stableHash(job.id) ^ UInt64(bitPattern: Int64(now.timeIntervalSince1970)) : 0
        var bestNow: Candidate?, bestNowCost = Double.infinity
        var bestAny: Candidate?, bestAnyCost = Double.infinity

        func consider(_ c: Candidate) {
            var cost = 0.0
            for s in scorers { cost += s.cost(c, demand: d, jobKey: jobKey, state: state) }
            if c.fitsNow, cost < bestNowCost { bestNow = c; bestNowCost = cost }
            if c.predictable, cost < bestAnyCost { bestAny = c; bestAnyCost = cost }
        }

        for (ni, slots) in elig.nodes {
            if k == 1 {
                for s in slots {
                    let g = state.gpus[s]
                    let runtime = RuntimeEstimator.gpu(d, learned: learned?[g.modelID], weight: g.weight)
                    let fits = g.free >= need && g.claimedBy < 0
                    let predictable = fits || g.free + Int64(g.releasable) >= need
                    consider(Candidate(node: ni, first: s, startS: g.queueS, runtimeS: runtime, fitsNow: fits, predictable: predictable))
                }
            } else {
                if let c = gang(slots, node: ni, k: k, need: need, d, learned: learned, state: state, requireFit: true) { consider(c) }
                if let c = gang(slots, node: ni, k: k, need: need, d, learned: learned, state: state, requireFit: false) { consider(c) }
            }
        }

        let choice: Candidate?
        if policy.waitsForBetterGPU { choice = bestAny ?? bestNow } else { choice = bestNow ?? bestAny }
        if let c = choice, c.fitsNow {
            let finish = c.finishS
            _ = c.allGPUs { s in
                state.gpus[s].free -= need
                state.gpus[s].releasable += UInt64(need)
                state.gpus[s].queueS = finish
                return true
            }
            let uuids = c.gpus.map { state.gpus[$0].uuid }
            result.assignments.append(Assignment(
                jobID: job.id, node: snapshot.nodes[c.node].name, gpuUUIDs: uuids, gpuIndices: c.gpus.map { state.gpus[$0].index },
                reservedBytesPerGPU: UInt64(need), expectedRuntimeS: c.runtimeS, expectedStart: now,
                expectedFinish: now.addingTimeInterval(finish)))
            return
        }

        let reason = waitReason(d, choice: choice, bestNow: bestNow, elig: elig, state: state, snapshot: snapshot)
        result.pending.append(PendingReason(jobID: job.id, code: reason.0, message: reason.1, neverRunnable: false))
        // Plan it onto the GPU it waits for, so jobs after it see that GPU as busier and cannot take it.
        if let c = choice {
            let finish = c.finishS
            _ = c.allGPUs { s in
                if state.gpus[s].claimedBy < 0 { state.gpus[s].claimedBy = rank; state.claimant[s] = job.id }
                state.gpus[s].queueS = finish
                return true
            }
        }
    }

    /// The k GPUs of one node that finish the job soonest; with `requireFit`, among those it fits on now.
    private static func gang(_ slots: [Int], node: Int, k: Int, need: Int64, _ d: JobDemand, learned: [Double?]?,
                             state: PassState, requireFit: Bool) -> Candidate? {
        var pool: [(slot: Int, finish: Double, runtime: Double, fits: Bool, predictable: Bool)] = []
        for s in slots {
            let g = state.gpus[s]
            let fits = g.free >= need && g.claimedBy < 0
            if requireFit && !fits { continue }
            let runtime = RuntimeEstimator.gpu(d, learned: learned?[g.modelID], weight: g.weight)
            pool.append((s, g.queueS + runtime, runtime, fits, fits || g.free + Int64(g.releasable) >= need))
        }
        guard pool.count >= k else { return nil }
        pool.sort { $0.finish < $1.finish || ($0.finish == $1.finish && $0.slot < $1.slot) }
        let chosen = pool.prefix(k)
        // A gang moves at its slowest member's pace and starts when its busiest member is free.
        let runtime = chosen.map(\.runtime).max()!
        let start = chosen.map { state.gpus[$0.slot].queueS }.max()!
        let ordered = chosen.map(\.slot).sorted { state.gpus[$0].index < state.gpus[$1].index }
        return Candidate(node: node, first: ordered[0], others: Array(ordered.dropFirst()), startS: start, runtimeS: runtime,
                         fitsNow: chosen.allSatisfy(\.fits), predictable: chosen.allSatisfy(\.predictable))
    }

    private static func waitReason(_ d: JobDemand, choice: Candidate?, bestNow: Candidate?, elig: Eligibility,
                                   state: PassState, snapshot: ClusterSnapshot) -> (PendingReason.Code, String) {
        let needText = d.shape.gpus == 1
            ? "needs \(ByteSize.format(d.shape.needBytes)) on 1 GPU"
            : "needs \(ByteSize.format(d.shape.needBytes)) on each of \(d.shape.gpus) GPUs on one node"
        if let c = choice {
            let label = state.gpus[c.first].label + c.others.map { " + " + state.gpus[$0].label }.joined()
            let held = ([c.first] + c.others).first { state.gpus[$0].claimedBy >= 0 }
            if let h = held, let other = state.claimant[h] {
                return (.heldForOtherJob, "waits for \(state.gpus[h].label), held for job \(other) ranked before it")
            }
            if let now = bestNow {
                let nowLabel = state.gpus[now.first].label + now.others.map { " + " + state.gpus[$0].label }.joined()
                return (.waitingForBetterGPU, "waits for \(label) (busy ~\(secs(c.startS)); finishes ~\(secs(c.finishS)) there vs ~\(secs(now.finishS)) on \(nowLabel))")
            }
            return (.insufficientVRAM, "\(needText); most free: \(mostFree(elig, d, state)); expected on \(label) in ~\(secs(c.startS))")
        }
        return (.insufficientVRAM, "\(needText); most free: \(mostFree(elig, d, state))")
    }

    private static func mostFree(_ elig: Eligibility, _ d: JobDemand, _ state: PassState) -> String {
        if d.shape.gpus == 1 {
            var best = -1
            for (_, slots) in elig.nodes { for s in slots where best < 0 || state.gpus[s].free > state.gpus[best].free { best = s } }
            guard best >= 0 else { return "none" }
            return "\(state.gpus[best].label) \(ByteSize.format(UInt64(max(0, state.gpus[best].free))))"
        }
        var parts: [String] = []
        for (_, slots) in elig.nodes {
            let frees = slots.map { state.gpus[$0] }.sorted { $0.free > $1.free }.prefix(d.shape.gpus)
            parts.append(frees.map { "\($0.label) \(ByteSize.format(UInt64(max(0, $0.free))))" }.joined(separator: ", "))
        }
        return parts.joined(separator: "; ")
    }

    static func secs(_ s: Double) -> String {
        if s < 120 { return "\(Int(s.rounded())) s" }
        if s < 7200 { return "\(Int((s / 60).rounded())) min" }
        return String(format: "%.1f h", s / 3600)
    }

    // MARK: CPU-only jobs

    private static func placeCPU(_ job: RouterJob, _ d: JobDemand, _ elig: Eligibility, _ state: inout PassState,
                                 snapshot: ClusterSnapshot, stats: RuntimeStats, now: Date, into result: inout PlacementResult) {
        let runtime = RuntimeEstimator.cpu(d, stats: stats)
        var best: (node: Int, slot: Int, remaining: Double)?
        for (ni, _) in elig.nodes {
            let slots = state.nodes[ni].cpuRemaining
            for (i, r) in slots.enumerated() where best == nil || r < best!.remaining { best = (ni, i, r) }
        }
        guard let b = best else {
            result.pending.append(PendingReason(jobID: job.id, code: .unschedulable, message: "no CPU slot on any eligible node", neverRunnable: true))
            return
        }
        // Planned either way: a job that waits takes the slot that frees first, so later ones queue behind it.
        state.nodes[b.node].cpuRemaining[b.slot] = b.remaining + runtime
        if b.remaining <= 0 {
            result.assignments.append(Assignment(jobID: job.id, node: snapshot.nodes[b.node].name, gpuUUIDs: [], gpuIndices: [],
                                                 reservedBytesPerGPU: 0, expectedRuntimeS: runtime, expectedStart: now,
                                                 expectedFinish: now.addingTimeInterval(runtime)))
        } else {
            let names = elig.nodes.map { n in "\(snapshot.nodes[n.node].name) \(state.nodes[n.node].cpuRemaining.count) of \(state.nodes[n.node].cpuRemaining.count) busy" }
            result.pending.append(PendingReason(jobID: job.id, code: .waitingForCPUSlot,
                                                message: "waits for a CPU slot (\(names.joined(separator: ", "))); next free in ~\(secs(b.remaining))",
                                                neverRunnable: false))
        }
    }
}
