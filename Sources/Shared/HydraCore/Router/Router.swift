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
    /// - Parameter upcoming: jobs already submitted that wait for their dependencies (the
    ///   images behind the LLM expansions still running). Never placed; under `hydra` their work
    ///   counts in the scarce-GPU charge (`ScarceGPUs`) as if pending, so a job with other
    ///   choices does not take the GPUs a class is about to need: on generated seed 167 a LoRA
    ///   run took one of the five ComfyUI GPUs for 30 minutes because no image was ready yet,
    ///   and the last images ended at 82 minutes instead of 71.
    /// - Parameter explain: false skips writing the reason texts (codes are still set); the
    ///   simulator places thousands of times and only needs the texts of jobs that never ran.
    public static func place(pending: [RouterJob], upcoming: [RouterJob] = [], snapshot: ClusterSnapshot, stats: RuntimeStats = .empty,
                             now: Date, policy: RouterPolicy = .hydra, explain: Bool = true) -> PlacementResult {
        var state = PassState(snapshot: snapshot, stats: stats, now: now, policy: policy)
        state.explain = explain
        let filters = PlacementFilters.standard + policy.extraFilters
        let scorers = ScorerSet(policy)

        var learnedCache: [LearnedKey: [Double?]] = [:]
        // Each job's shape is hashed once: jobs of one shape share the filters' outcome, and the
        // scarce-GPU charge and the pass both look it up (hashing shapes shows in a pass profile).
        var demands: [JobDemand] = []
        demands.reserveCapacity(pending.count)
        var shapeOf: [Int] = []
        shapeOf.reserveCapacity(pending.count)
        var shapeIDs: [DemandShape: Int] = [:]
        var shapes: [DemandShape] = []
        // Through buffer pointers and a consumed demand: indexing the array copied each job, and
        // appending a demand still read after it copied that too (both retain their strings).
        func add(_ jobs: UnsafeBufferPointer<RouterJob>) {
            for j in jobs.indices {
                let d = JobDemand(job: jobs[j], stats: stats, policy: policy)
                if let id = shapeIDs[d.shape] { shapeOf.append(id) } else {
                    shapeIDs[d.shape] = shapes.count; shapeOf.append(shapes.count); shapes.append(d.shape)
                }
                demands.append(consume d)
            }
        }
        pending.withUnsafeBufferPointer(add)
        // Upcoming jobs' demands follow the pending ones' (indices from `pending.count` on): the
        // charge reads them, the order and the pass never reach them.
        if policy.weighsUpcomingJobs { upcoming.withUnsafeBufferPointer(add) }
        var paths: [Double]?
        if policy.criticalPathOrder {
            paths = pending.indices.map { j in JobOrdering.pathS(demands[j], tailS: pending[j].tailS) }
        }
        var eligibility = [Eligibility?](repeating: nil, count: shapes.count)
        // Which pending jobs the upcoming ones wait on (nil: none), for the pressed test and the order.
        let waits = policy.weighsUpcomingJobs ? GatedWork.waits(pending: pending, upcoming: upcoming) : nil
        if policy.reservesScarceGPUs {
            let held = policy.pressesHeldBackWork && policy.pressedClassFactor > 0
                ? waits.map { GatedWork.heldBack($0, pendingCount: pending.count, demands: demands) } : nil
            ScarceGPUs.charge(&demands, shapeOf: shapeOf, shapes: shapes, &state, &eligibility, snapshot: snapshot, filters: filters,
                              pressedFactor: policy.pressedClassFactor, heldBack: held ?? [])
        }
        if policy.gatedWorkOrder, let waits, var p = paths {
            GatedWork.raise(&p, pending: pending, upcoming: upcoming, waits: waits, demands: demands, shapeOf: shapeOf, shapes: shapes,
                            eligibility: &eligibility, snapshot: snapshot, state: state, filters: filters)
            paths = p
        }
        // Without tails (no job has dependents, none holds back upcoming work) every set's members
        // share tail 0 and keep their places: skipped, as in a pass with no dependencies at all.
        if policy.tailFirstOrder, var p = paths, (policy.gatedWorkOrder && waits != nil) || pending.contains(where: { $0.tailS > 0 }) {
            tailFirst(&p, pending: pending, demands: demands, shapeOf: shapeOf, shapes: shapes, eligibility: &eligibility,
                      snapshot: snapshot, state: state, filters: filters)
            paths = p
        }
        // After the charge, which marks the scarce jobs; the order reads no tally the charge changes.
        let order = JobOrdering.order(pending, running: snapshot.running, now: now, agingStepS: policy.agingStepS,
                                      criticalPath: policy.criticalPathOrder, paths: paths,
                                      keepPace: policy.scarceKeepsPace ? demands[..<pending.count].map(\.fewGPUs) : nil)
        // Every shape's filters up front: they read only the snapshot and the pass's fixed GPU
        // facts (slots, usable VRAM, labels), never the tallies the pass changes, so the outcome
        // is the same as computing each shape when its first job comes up. The loop then borrows
        // them instead of copying one per job (a copy retains its arrays, counts and text).
        for sid in shapes.indices where eligibility[sid] == nil {
            eligibility[sid] = Eligibility.compute(shapes[sid], snapshot: snapshot, state: state, filters: filters)
        }
        let eligibilities = eligibility.map { $0! }
        state.mostFreeFacts = Array(repeating: nil, count: shapes.count)
        var result = PlacementResult()
        result.assignments.reserveCapacity(min(pending.count, state.gpus.count * 4 + 16))
        result.pending.reserveCapacity(pending.count)
        result.rejections.reserveCapacity(pending.count)
        if explain { state.deferred.reserveCapacity(pending.count) }

        // Through buffer pointers: `pending[ji]` would copy each job (and retain its strings and
        // spec), `demands[ji]` each demand (176 bytes and seven strings or arrays, read in the
        // pass's order, not memory order: the copy showed as memcpy and retains in a profile).
        pending.withUnsafeBufferPointer { jobs in
        demands.withUnsafeBufferPointer { dem in
        eligibilities.withUnsafeBufferPointer { eligs in
        for (rank, ji) in order.enumerated() {
            let sid = shapeOf[ji]
            placeOne(JobRef(id: jobs[ji].id), dem[ji], rank: rank, shapeID: sid, eligs[sid], learnedCache: &learnedCache,
                     &state, scorers: scorers, policy: policy, snapshot: snapshot, stats: stats, now: now, into: &result)
        }
        }
        }
        }
        // The texts, from the facts each waiting job left (outside the loop; skipped when not explaining).
        if explain {
            for (i, facts) in state.deferred { result.pending[i].message = message(facts, &state) }
        }
        return result
    }

    /// `JobOrdering.tailFirst`'s sets: GPU jobs of one priority whose shapes pass the filters on the
    /// same GPUs (and gang size). Shapes are grouped first (a pass has tens of them), so each job
    /// costs one lookup of a small key.
    private static func tailFirst(_ paths: inout [Double], pending: [RouterJob], demands: [JobDemand], shapeOf: [Int],
                                  shapes: [DemandShape], eligibility: inout [Eligibility?], snapshot: ClusterSnapshot,
                                  state: borrowing PassState, filters: [any PlacementFilter]) {
        var gpuSetOf = [Int](repeating: -1, count: shapes.count)
        var gpuSetIDs: [[Int]: Int] = [:]
        var spread: [Double] = []
        for sid in shapes.indices where !shapes[sid].cpuOnly {
            let e = Eligibility.cached(sid, &eligibility, shapes: shapes, snapshot: snapshot, state: state, filters: filters)
            var gpus: [Int] = [], sum = 0.0, top = 0.0
            for n in e.nodes { for g in n.gpus { gpus.append(g); sum += state.gpus[g].weight; top = max(top, state.gpus[g].weight) } }
            guard top > 0 else { continue }
            gpus.append(-shapes[sid].gpus)
            if let id = gpuSetIDs[gpus] { gpuSetOf[sid] = id } else {
                gpuSetOf[sid] = spread.count; gpuSetIDs[gpus] = spread.count
                spread.append(sum / (top * Double(max(1, shapes[sid].gpus))))
            }
        }
        // Sets per (GPU set, priority) in a flat table over the priorities' range: hashing a key per
        // job cost 3 % of a 10 000-job pass.
        var lo = Int.max, hi = Int.min
        for j in pending.indices { lo = min(lo, pending[j].priority); hi = max(hi, pending[j].priority) }
        guard !pending.isEmpty, !spread.isEmpty, hi - lo < 4096 else { return }
        let width = hi - lo + 1
        var table = [Int](repeating: -1, count: spread.count * width)
        var gpusOfSet: [Double] = []
        var set = [Int](repeating: -1, count: pending.count)
        var own = [Double](repeating: 0, count: pending.count)
        for j in pending.indices {
            let g = gpuSetOf[shapeOf[j]]
            guard g >= 0 else { continue }
            let t = g * width + pending[j].priority - lo
            if table[t] < 0 { table[t] = gpusOfSet.count; gpusOfSet.append(spread[g]) }
            set[j] = table[t]
            own[j] = JobOrdering.pathS(demands[j], tailS: 0)
        }
        JobOrdering.tailFirst(&paths, own: own, set: set, gpus: gpusOfSet)
    }

    // MARK: GPU jobs

    /// One job of the pass. The demand and eligibility are borrowed from the pass's arrays, not copied.
    @inline(__always)
    private static func placeOne(_ job: JobRef, _ d: borrowing JobDemand, rank: Int, shapeID: Int, _ elig: borrowing Eligibility,
                                 learnedCache: inout [LearnedKey: [Double?]], _ state: inout PassState, scorers: ScorerSet,
                                 policy: RouterPolicy, snapshot: ClusterSnapshot, stats: RuntimeStats, now: Date,
                                 into result: inout PlacementResult) {
        if let r = elig.reason {
            // The shape's text, written once per shape from what its filters rejected.
            result.pending.append(PendingReason(jobID: job.id, code: r.code, message: r.message, neverRunnable: r.never))
            result.rejections.append(elig.counts)
            return
        }
        // From here on its own plan stands on those GPUs instead of the charge.
        if d.scarce { ScarceGPUs.release(d, shapeID: shapeID, elig, &state) }
        state.ownChargeBase = d.scarce ? state.shapeChargeBase[shapeID] : 0
        state.ownChargeFixed = d.scarce ? state.shapeChargeFixed[shapeID] : 0
        // A scarce gang's own class was charged at the gang's pace per node (`ScarceGPUs`): it is
        // taken off at that pace, not at each GPU's own weight.
        state.ownPace = d.scarce && d.shape.gpus > 1 ? state.gangPaces(shape: shapeID, elig, k: d.shape.gpus) : []
        if d.shape.cpuOnly {
            placeCPU(job, d, elig, &state, snapshot: snapshot, stats: stats, now: now, into: &result)
            return
        }
        var learned: [Double?]?
        if !stats.isEmpty {
            let key = LearnedKey(kind: d.kind, model: d.modelKey)
            if let l = learnedCache[key] { learned = l } else {
                let l = state.modelNames.map { stats.meanRuntime(kind: d.kind, modelKey: d.modelKey, gpuModel: $0) }
                learnedCache[key] = l; learned = l
            }
        }
        placeGPU(job, d, rank: rank, shapeID: shapeID, elig, learned: learned, &state, scorers: scorers, policy: policy,
                 snapshot: snapshot, now: now, into: &result)
    }

    /// A job's learned runtimes per GPU model are shared by its kind and model (fields, not a joined
    /// string: joining allocated once per job).
    struct LearnedKey: Hashable { var kind: String, model: String }

    /// What placement needs of a job besides its demand (copying the whole job cost refcounting).
    struct JobRef { var id: String }

    @inline(__always)
    private static func placeGPU(_ job: JobRef, _ d: borrowing JobDemand, rank: Int, shapeID: Int, _ elig: borrowing Eligibility,
                                 learned: [Double?]?,
                                 _ state: inout PassState, scorers: ScorerSet, policy: RouterPolicy,
                                 snapshot: ClusterSnapshot, now: Date, into result: inout PlacementResult) {
        let need = Int64(d.shape.needBytes)
        let k = d.shape.gpus
        let jobKey = policy.name == .random ? SplitMix64.stableHash(job.id) ^ UInt64(bitPattern: Int64(now.timeIntervalSince1970)) : 0
        var bestNow: Candidate?, bestNowCost = Double.infinity
        var bestAny: Candidate?, bestAnyCost = Double.infinity
        var counts = elig.counts
        // Under `hydra` a job that is not urgent starts only on an idle GPU: one started beside a
        // running job shares its compute and stretches it, while the plan counts it after that
        // job (queue + runtime). On a busy GPU it is planned after the queue and waits for it.
        // Interactive jobs alone do not make a GPU busy for this: they come in a stream, so a GPU
        // they use would never look idle to a batch job (a 2-GPU gang on the node serving chat
        // requests waited until aging lifted it, generated seed 114); a batch job beside them
        // stretches them by its share for a few seconds.
        let exclusive = policy.startsOnIdleGPUsOnly && !d.urgent

        for (ni, slots) in elig.nodes {
            if k == 1 {
                for s in slots {
                    let g = state.gpus[s]
                    let runtime = RuntimeEstimator.gpu(d, learned: learned?[Int(g.modelID)], weight: g.weight)
                    // Backfill: an empty GPU held for a job that starts later takes one that ends before
                    // then, or not much after (`backfillDelay`). The held GPU keeps the claim's planned
                    // end below: a backfill's overrun does not move it (moving it changed no makespan
                    // in 600 simulated runs).
                    let backfills = policy.backfillsHeldGPUs && g.claimedBy >= 0 && g.sharers == 0
                        && g.free >= need && runtime * policy.backfillMargin <= policy.backfillLimitS(waitS: g.claimStartS)
                    let fits = backfills || (g.free >= need && g.claimedBy < 0 && (!exclusive || g.idle))
                    let predictable = fits || g.free + Int64(g.releasable) >= need
                    if fits { counts.slower += 1 } else if g.claimedBy >= 0 { counts.held += 1 } else if g.free >= need { counts.busy += 1 } else {
                        counts.vram += 1
                        if !predictable { counts.foreign += 1 }
                    }
                    guard fits || predictable else { continue }
                    let one = OneGPU(slot: s, startS: backfills ? 0 : g.queueS, runtimeS: runtime, fitsNow: fits)
                    let cost = scorers.cost(one, demand: d, jobKey: jobKey, state: state)
                    guard (fits && cost < bestNowCost) || cost < bestAnyCost else { continue }
                    let c = Candidate(node: ni, first: s, startS: one.startS, runtimeS: runtime, fitsNow: fits, predictable: true)
                    if fits, cost < bestNowCost { bestNow = c; bestNowCost = cost }
                    if cost < bestAnyCost { bestAny = c; bestAnyCost = cost }
                }
            } else {
                var fitsNow = false, waitFinishS = Double.infinity
                for requireFit in [true, false] {
                    guard let c = gang(slots, node: ni, k: k, need: need, d, learned: learned, state: state, requireFit: requireFit,
                                             spareFast: policy.sparesFastGPUsInGangs, exclusive: exclusive) else { continue }
                    if requireFit { fitsNow = true } else { waitFinishS = c.finishS }
                    let cost = scorers.cost(c, demand: d, jobKey: jobKey, state: state)
                    if c.fitsNow, cost < bestNowCost { bestNow = c; bestNowCost = cost }
                    if c.predictable, cost < bestAnyCost { bestAny = c; bestAnyCost = cost }
                }
                if k == 2 && exclusive && policy.ringsGangs && slots.count >= 3 && slots.count % 2 == 1, let ring = state.ring(of: slots, policy: policy),
                   let r = ringGang(ring, node: ni, need: need, d, learned: learned, state: state) {
                    // Costed by when it would end if no third gang joined (the shared GPUs' queue, then
                    // its runtime), and where the node has no idle pair, never after waiting for one:
                    // a full ring does more than one gang at a time, and ties go to the ring.
                    var costed = r.candidate
                    costed.runtimeS = fitsNow ? r.planFinishS : min(r.planFinishS, waitFinishS)
                    let cost = scorers.cost(costed, demand: d, jobKey: jobKey, state: state) - 1e-3
                    if cost < bestNowCost { bestNow = r.candidate; bestNowCost = cost }
                    if cost < bestAnyCost { bestAny = r.candidate; bestAnyCost = cost }
                }
            }
        }

        let choice: Candidate?
        if policy.waitsForBetterGPU { choice = bestAny ?? bestNow } else { choice = bestNow ?? bestAny }
        if let c = choice, c.fitsNow {
            let finish = c.finishS
            state.freeVersion += 1
            _ = c.allGPUs { s in
                state.gpus[s].free -= need
                state.gpus[s].releasable += UInt64(need)
                state.gpus[s].queueS = max(state.gpus[s].queueS, finish)
                if !d.urgent { state.gpus[s].onlyUrgent = false }
                state.gpus[s].addSharer()
                return true
            }
            if !d.urgent { state.noteBatchStart(c.gpus) }
            let uuids = c.gpus.map { state.info[$0].uuid }
            result.assignments.append(Assignment(
                jobID: job.id, node: snapshot.nodes[c.node].name, gpuUUIDs: uuids, gpuIndices: c.gpus.map { state.info[$0].index },
                reservedBytesPerGPU: UInt64(need), expectedRuntimeS: c.runtimeS, expectedStart: now,
                expectedFinish: now.addingTimeInterval(finish)))
            return
        }

        if k > 1 {
            for (_, slots) in elig.nodes {
                for s in slots {
                    let g = state.gpus[s]
                    if g.free >= need && g.claimedBy < 0 && (!exclusive || g.idle) { counts.slower += 1 }
                    else if g.claimedBy >= 0 { counts.held += 1 } else if g.free >= need { counts.busy += 1 } else {
                        counts.vram += 1
                        if g.free + Int64(g.releasable) < need { counts.foreign += 1 }
                    }
                }
            }
        }
        if bestNow == nil { counts.slower = 0 }   // nothing fits now: none was passed over
        result.pending.append(PendingReason(jobID: job.id, code: waitCode(d, choice: choice, bestNow: bestNow, state: state),
                                            message: "", neverRunnable: false))
        result.rejections.append(counts)
        // The facts only feed the texts: a pass that does not explain gathers none.
        if state.explain {
            let facts = waitFacts(d, shapeID: shapeID, choice: choice, bestNow: bestNow, elig: elig, busy: counts.busy, state: &state)
            state.deferred.append((result.pending.count - 1, facts))
        }
        // Plan it onto the GPU it waits for, so jobs after it see that GPU as busier and cannot take it.
        if let c = choice {
            let finish = c.finishS
            _ = c.allGPUs { s in
                if state.gpus[s].claimedBy < 0 {
                    state.gpus[s].claimedBy = rank; state.claimant[s] = job.id; state.gpus[s].claimStartS = c.startS
                }
                state.gpus[s].queueS = finish
                if !d.urgent { state.gpus[s].onlyUrgent = false }
                return true
            }
        }
    }

    /// A batch 2-GPU gang that starts now in its node's ring (`GangRing`): two neighbours in the
    /// ring, each idle or running one other batch 2-GPU gang (not the same one on both), at least
    /// one of them shared (two idle ones are the plain gang's). Of those, the one that would end
    /// soonest if no third gang joined (`planFinishS`: the shared GPUs' queue, then its runtime).
    /// The candidate itself starts now and runs at half rate beside the other gangs.
    private static func ringGang(_ ring: [Int], node: Int, need: Int64, _ d: JobDemand, learned: [Double?]?,
                                 state: borrowing PassState) -> (candidate: Candidate, planFinishS: Double)? {
        func open(_ s: Int) -> Bool {
            let g = state.gpus[s]
            return g.free >= need && g.claimedBy < 0 && (g.idle || (state.batchJobs[s] == 1 && state.ringPartner[s] >= 0))
        }
        var best: (candidate: Candidate, planFinishS: Double)?
        let m = ring.count
        for i in 0..<m {
            let a = min(ring[i], ring[(i + 1) % m]), b = max(ring[i], ring[(i + 1) % m])
            guard open(a), open(b), state.ringPartner[a] != Int32(b) else { continue }
            let ga = state.gpus[a], gb = state.gpus[b]
            if ga.idle && gb.idle { continue }
            let runtime = max(RuntimeEstimator.gpu(d, learned: learned?[Int(ga.modelID)], weight: ga.weight),
                              RuntimeEstimator.gpu(d, learned: learned?[Int(gb.modelID)], weight: gb.weight))
            let finish = max(ga.idle ? 0 : ga.queueS, gb.idle ? 0 : gb.queueS) + runtime
            if let bst = best, bst.planFinishS <= finish { continue }
            best = (Candidate(node: node, first: a, others: [b], startS: 0, runtimeS: 2 * runtime, fitsNow: true, predictable: true), finish)
        }
        return best
    }

    /// The k GPUs of one node that finish the job soonest; with `requireFit`, among those it fits on now.
    private static func gang(_ slots: [Int], node: Int, k: Int, need: Int64, _ d: JobDemand, learned: [Double?]?,
                             state: borrowing PassState, requireFit: Bool, spareFast: Bool, exclusive: Bool) -> Candidate? {
        var pool: [(slot: Int, finish: Double, runtime: Double, fits: Bool, predictable: Bool)] = []
        pool.reserveCapacity(slots.count)   // grown one by one, it reallocated twice per node and job
        for s in slots {
            let g = state.gpus[s]
            let fits = g.free >= need && g.claimedBy < 0 && (!exclusive || g.idle)
            if requireFit && !fits { continue }
            let runtime = RuntimeEstimator.gpu(d, learned: learned?[Int(g.modelID)], weight: g.weight)
            pool.append((s, g.queueS + runtime, runtime, fits, fits || g.free + Int64(g.releasable) >= need))
        }
        guard pool.count >= k else { return nil }
        pool.sort { $0.finish < $1.finish || ($0.finish == $1.finish && $0.slot < $1.slot) }
        if spareFast && pool.count > k && k == 2 {
            // Pairs, without allocating: the soonest finish, then the least total weight, then the lowest slots.
            var bi = -1, bj = -1, bestFinish = Double.infinity, bestWeight = Double.infinity
            for i in 0..<pool.count {
                let qi = state.gpus[pool[i].slot].queueS, wi = state.gpus[pool[i].slot].weight
                for j in (i + 1)..<pool.count {
                    let qj = state.gpus[pool[j].slot].queueS, wj = state.gpus[pool[j].slot].weight
                    let finish = max(qi, qj) + max(pool[i].runtime, pool[j].runtime)
                    let weight = wi + wj
                    if finish < bestFinish * (1 - 1e-9) || (finish <= bestFinish * (1 + 1e-9) && weight < bestWeight) {
                        bi = i; bj = j; bestFinish = min(bestFinish, finish); bestWeight = weight
                    }
                }
            }
            if bi >= 0 { let a = pool[bi], b = pool[bj]; pool[0] = a; pool[1] = b }   // only the first k count below
        } else if spareFast && pool.count > k {
            // A gang moves at its slowest member's pace, so a fast GPU paired with a slow one gives
            // the gang nothing: for each pace setter, its partners are the least busy GPUs at least
            // as fast; of the sets that finish soonest, the one with the least
            // total weight wins, and the fast GPUs stay free for jobs that use their speed.
            typealias Member = (slot: Int, finish: Double, runtime: Double, fits: Bool, predictable: Bool)
            var tagged: [(m: Member, weight: Double, queue: Double)] = []
            for m in pool { tagged.append((m, state.gpus[m.slot].weight, state.gpus[m.slot].queueS)) }
            tagged.sort { $0.weight < $1.weight || ($0.weight == $1.weight && $0.m.slot < $1.m.slot) }
            var sets: [(members: [Member], finish: Double, weight: Double)] = []
            for p in 0...(tagged.count - k) {
                var others = Array(tagged[(p + 1)...])
                others.sort { $0.queue < $1.queue || ($0.queue == $1.queue && $0.m.slot < $1.m.slot) }
                let set = [tagged[p]] + others.prefix(k - 1)
                var runtime = 0.0, start = 0.0, weight = 0.0
                for t in set { runtime = max(runtime, t.m.runtime); start = max(start, t.queue); weight += t.weight }
                sets.append((set.map(\.m), start + runtime, weight))
            }
            var soonest = Double.infinity
            for s in sets { soonest = min(soonest, s.finish) }
            var best = -1
            for (i, s) in sets.enumerated() where s.finish <= soonest * (1 + 1e-9) && (best < 0 || s.weight < sets[best].weight) { best = i }
            if best >= 0 { for (i, m) in sets[best].members.enumerated() { pool[i] = m } }
        }
        // A gang moves at its slowest member's pace and starts when its busiest member is free.
        // (Plain loops: a closure reading `state` would copy the whole pass state.)
        var runtime = 0.0, start = 0.0, fits = true, predictable = true
        var chosen: [Int] = []
        chosen.reserveCapacity(k)
        for m in pool.prefix(k) {
            runtime = max(runtime, m.runtime); start = max(start, state.gpus[m.slot].queueS)
            fits = fits && m.fits; predictable = predictable && m.predictable
            chosen.append(m.slot)
        }
        chosen.sort()   // slots follow GPU index order within a node
        let first = chosen.removeFirst()
        return Candidate(node: node, first: first, others: chosen, startS: start, runtimeS: runtime,
                         fitsNow: fits, predictable: predictable)
    }

    /// Why a job waits, as a code (every pass; `waitFacts` follows the same branches).
    private static func waitCode(_ d: borrowing JobDemand, choice: Candidate?, bestNow: Candidate?,
                                 state: borrowing PassState) -> PendingReason.Code {
        guard let c = choice else { return .insufficientVRAM }
        for i in 0..<c.count where state.gpus[c.gpu(i)].claimedBy >= 0 { return .heldForOtherJob }
        return bestNow != nil ? .waitingForBetterGPU : .insufficientVRAM
    }

    /// Why a job waits, as numbers and GPU slots for the text written after the pass.
    private static func waitFacts(_ d: borrowing JobDemand, shapeID: Int, choice: Candidate?, bestNow: Candidate?,
                                  elig: borrowing Eligibility, busy: Int, state: inout PassState) -> WaitFacts {
        guard let c = choice else { return .vram(mostFreeFacts(elig, d, shapeID: shapeID, &state), expected: nil, busy: busy) }
        for i in 0..<c.count where state.gpus[c.gpu(i)].claimedBy >= 0 { return .held(gpu: c.gpu(i)) }
        if let now = bestNow {
            if d.urgent { return .urgent(choice: c, now: now, sharedS: EarliestFinishScorer.sharedFinishS(now, state: state)) }
            var keptJobs = 0, keptS = 0.0
            var g = now.first
            for i in 1..<max(1, now.count) where state.contested[now.gpu(i)] > state.contested[g] { g = now.gpu(i) }
            if !d.scarce {
                if state.contestedJobs[g] > 0 { keptJobs = state.contestedJobs[g]; keptS = state.contested[g] }
            } else {
                // Only the other classes' part counts for a scarce job (the count does not split by class).
                keptS = max(0, state.chargeFromOthers(g))
            }
            return .better(choice: c, now: now, keptJobs: keptJobs, keptS: keptS)
        }
        return .vram(mostFreeFacts(elig, d, shapeID: shapeID, &state), expected: c, busy: busy)
    }

    /// The one-line reason, rendered from the facts (texts per held GPU and per most-free snapshot are shared).
    static func message(_ facts: WaitFacts, _ state: inout PassState) -> String {
        switch facts {
        case let .held(h):
            if let t = state.heldText[h] { return t }
            let t = "waits for \(state.info[h].label), held for job \(state.claimant[h] ?? "?") ranked before it"
            state.heldText[h] = t
            return t
        case let .urgent(c, now, shared):
            // The urgent cost: it would start at once and share that GPU's compute.
            return "waits for \(labels(c, state)) (busy ~\(secs(c.startS)); finishes ~\(secs(c.finishS)) there vs ~\(secs(shared)) sharing \(labels(now, state)))"
        case let .better(c, now, keptJobs, keptS):
            let kept = keptJobs > 0 ? ", which \(keptJobs) job(s) that only few GPUs can run need for ~\(secs(keptS))"
                : keptS >= 1 ? ", which jobs of another class that only few GPUs can run need for ~\(secs(keptS))" : ""
            return "waits for \(labels(c, state)) (busy ~\(secs(c.startS)); finishes ~\(secs(c.finishS)) there vs ~\(secs(now.finishS)) on \(labels(now, state))\(kept))"
        case let .vram(mf, expected, busy):
            let text: String
            if mf.id < state.mostFreeText.count, let t = state.mostFreeText[mf.id] { text = t } else {
                let need = mf.gpus == 1 ? "needs \(Fmt.bytes(Int64(mf.needBytes))) on 1 GPU"
                    : "needs \(Fmt.bytes(Int64(mf.needBytes))) on each of \(mf.gpus) GPUs on one node"
                let most = mf.nodes.isEmpty ? "none" : mf.nodes.map { n in
                    n.map { "\(state.info[$0.slot].label) \(Fmt.bytes($0.free))" }.joined(separator: ", ")
                }.joined(separator: "; ")
                text = "\(need); most free: \(most)"
                if state.mostFreeText.count <= mf.id { state.mostFreeText += Array(repeating: nil, count: mf.id + 1 - state.mostFreeText.count) }
                state.mostFreeText[mf.id] = text
            }
            // Busy GPUs with room: it waits for them to be idle rather than share them.
            let shared = busy > 0 ? "; \(busy) busy GPU(s) with room, not shared" : ""
            guard let c = expected else { return text + shared }
            return "\(text); expected on \(labels(c, state)) in ~\(secs(c.startS))\(shared)"
        case let .cpuSlot(nodes, nextFreeS):
            let list: String
            if let t = state.cpuSlotsText[nodes] { list = t } else {
                list = nodes.map { "\(state.nodeNames[$0]) \(state.nodes[$0].cpuRemaining.count) of \(state.nodes[$0].cpuRemaining.count) busy" }
                    .joined(separator: ", ")
                state.cpuSlotsText[nodes] = list
            }
            return "waits for a CPU slot (\(list)); next free in ~\(secs(nextFreeS))"
        }
    }

    private static func labels(_ c: Candidate, _ state: borrowing PassState) -> String {
        var out = state.info[c.first].label
        for g in c.others { out += " + " + state.info[g].label }
        return out
    }

    /// Free VRAM only changes when the pass places a job, so jobs of one shape share the snapshot in between.
    /// Kept per shape index, not keyed by the shape: hashing a shape (its strings) per waiting job showed in a profile.
    private static func mostFreeFacts(_ elig: borrowing Eligibility, _ d: borrowing JobDemand, shapeID: Int,
                                      _ state: inout PassState) -> MostFree {
        if let c = state.mostFreeFacts[shapeID], c.version == state.freeVersion { return c }
        var nodes: [[(slot: Int, free: Int64)]] = []
        if d.shape.gpus == 1 {
            var best = -1
            var bestFree = Int64.min
            for n in elig.nodes { for s in n.gpus where state.gpus[s].free > bestFree { best = s; bestFree = state.gpus[s].free } }
            if best >= 0 { nodes = [[(best, bestFree)]] }
        } else {
            for n in elig.nodes {
                var frees: [(slot: Int, free: Int64)] = []
                for s in n.gpus { frees.append((s, state.gpus[s].free)) }
                frees.sort { $0.free > $1.free }
                nodes.append(Array(frees.prefix(d.shape.gpus)))
            }
        }
        let mf = MostFree(id: state.mostFreeCount, version: state.freeVersion,
                          needBytes: d.shape.needBytes, gpus: d.shape.gpus, nodes: nodes)
        state.mostFreeFacts[shapeID] = mf
        state.mostFreeCount += 1
        return mf
    }

    static func secs(_ s: Double) -> String {
        if s < 120 { return "\(Int(s.rounded())) s" }
        if s < 7200 { return "\(Int((s / 60).rounded())) min" }
        return Fmt.oneDecimal(s / 3600) + " h"
    }

    // MARK: CPU-only jobs

    private static func placeCPU(_ job: JobRef, _ d: borrowing JobDemand, _ elig: borrowing Eligibility, _ state: inout PassState,
                                 snapshot: ClusterSnapshot, stats: RuntimeStats, now: Date, into result: inout PlacementResult) {
        let runtime = RuntimeEstimator.cpu(d, stats: stats)
        var best: (node: Int, slot: Int, remaining: Double)?
        for (ni, _) in elig.nodes {
            let slots = state.nodes[ni].cpuRemaining
            for (i, r) in slots.enumerated() where best == nil || r < best!.remaining { best = (ni, i, r) }
        }
        var counts = elig.counts
        guard let b = best else {
            result.pending.append(PendingReason(jobID: job.id, code: .unschedulable, message: "no CPU slot on any eligible node", neverRunnable: true))
            result.rejections.append(counts)
            return
        }
        // Planned either way: a job that waits takes the slot that frees first, so later ones queue behind it.
        state.nodes[b.node].cpuRemaining[b.slot] = b.remaining + runtime
        if b.remaining <= 0 {
            result.assignments.append(Assignment(jobID: job.id, node: snapshot.nodes[b.node].name, gpuUUIDs: [], gpuIndices: [],
                                                 reservedBytesPerGPU: 0, expectedRuntimeS: runtime, expectedStart: now,
                                                 expectedFinish: now.addingTimeInterval(runtime)))
        } else {
            counts.cpuSlotsFull = elig.nodes.count
            result.pending.append(PendingReason(jobID: job.id, code: .waitingForCPUSlot, message: "", neverRunnable: false))
            result.rejections.append(counts)
            if state.explain {
                state.deferred.append((result.pending.count - 1, .cpuSlot(nodes: elig.nodes.map(\.node), nextFreeS: b.remaining)))
            }
        }
    }
}

/// Why a job waits, as data: GPU slots and seconds, rendered into `PendingReason.message` after the pass.
enum WaitFacts: Sendable {
    /// The GPU it needs is held for a job ranked before it.
    case held(gpu: Int)
    /// Urgent: fits now on `now` (sharing it), but the busy `choice` finishes it sooner.
    case urgent(choice: Candidate, now: Candidate, sharedS: Double)
    /// Fits now on `now`, but the busy `choice` finishes it sooner; `keptJobs` scarce jobs need `now` for `keptS`.
    case better(choice: Candidate, now: Candidate, keptJobs: Int, keptS: Double)
    /// Fits nowhere now; where it is expected, if anywhere.
    case vram(MostFree, expected: Candidate?, busy: Int)
    /// Every CPU slot of its nodes is taken.
    case cpuSlot(nodes: [Int], nextFreeS: Double)
}

/// The most free eligible GPUs for a shape at one moment of the pass (per node: the k most free).
struct MostFree: Sendable {
    var id: Int
    var version: Int
    var needBytes: UInt64
    var gpus: Int
    var nodes: [[(slot: Int, free: Int64)]]
}
