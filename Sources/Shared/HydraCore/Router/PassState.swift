import Foundation

/// One GPU's running tally during a placement pass: what is free now and how much
/// work is queued on it, updated as the pass places (and plans) jobs. Numbers only: the
/// inner loop reads it per job and GPU, and a copy with strings would cost refcounting.
struct GPUState: Sendable {
    var node: Int
    // The three small fields share one 8-byte word: the inner loop copies this struct per job and GPU.
    var modelID: Int32         // index into the pass's distinct model names
    /// Jobs running on it, and started on it by this pass: they share its compute.
    var sharers: UInt16 = 0
    /// Everything running or planned on it is interactive (priority ≥ `urgentPriority`).
    var onlyUrgent: Bool = true
    var weight: Double
    var usable: UInt64         // total − baseline − headroom
    /// Free now: total − max(live + unseen reservations, baseline + all reservations) − headroom.
    var free: Int64
    /// Bytes that Hydra jobs on it hold and will give back when they end.
    var releasable: UInt64
    /// Seconds of expected work queued (running jobs' remainders plus this pass's plans).
    var queueS: Double
    /// Index (in the pass's order) of the job this GPU is held for; -1: none.
    var claimedBy: Int
    /// Seconds from now until the job it is held for starts here (a gang waiting for its other GPU).
    var claimStartS: Double = 0

    /// A GPU whose queue is below this is idle (a running job's remainder counts at least 1 s).
    static let idleQueueS = 0.5
    /// Idle for a job below the urgent priority: nothing queued, or only interactive jobs.
    var idle: Bool { queueS < Self.idleQueueS || onlyUrgent }
    mutating func addSharer() { if sharers < .max { sharers += 1 } }
}

/// The descriptive side of a GPU in a pass (names for reasons and assignments).
struct GPUDescription: Sendable {
    var uuid: String
    var index: Int
    var model: String
    var label: String          // `hydra-ai/0 RTX 5090`
    var loaded: Set<String>
}

struct NodeState: Sendable {
    var gpuSlots: [Int]
    /// Remaining seconds per CPU slot (0: free now).
    var cpuRemaining: [Double]
}

struct PassState: Sendable {
    var gpus: [GPUState]
    var info: [GPUDescription]
    var nodes: [NodeState]
    var modelNames: [String]
    var uuidToSlot: [String: Int]
    var nodeIndex: [String: Int]
    var nodeNames: [String]
    var anyLoadedModels: Bool
    /// Job id each GPU is held for (parallel to `gpus`; kept out of `GPUState` so the inner loop copies no strings).
    var claimant: [String?]
    /// Bumped whenever the pass takes VRAM; keys the cached "most free" texts.
    var freeVersion = 0
    var explain = true
    /// The most free GPUs per shape (by the pass's shape index) as of `freeVersion` (numbers; the text is written after the pass).
    var mostFreeFacts: [MostFree?] = []
    /// Texts by `MostFree.id` and by GPU slot: flat arrays, as rendering looks one up per waiting job.
    var mostFreeText: [String?] = []
    var mostFreeCount = 0
    var heldText: [String?] = []
    /// Per set of nodes, the list of their full CPU slots: every CPU job of a shape that waits
    /// names the same nodes, all full (a list built per job was a tenth of a pass).
    var cpuSlotsText: [[Int]: String] = [:]
    /// Waiting jobs' reasons as data: (index into the result's `pending`, facts), rendered after the pass.
    var deferred: [(Int, WaitFacts)] = []
    /// Seconds of pending work (per GPU) of jobs that only a few GPUs can run and that the pass
    /// has not reached yet; `hydra` charges it to other jobs there (see `ScarceGPUs`).
    var contested: [Double] = []
    var contestedJobs: [Int] = []
    /// Per shape: the charge its scarce jobs that the pass has not reached still put on each of
    /// its GPUs, as weight-1 work and fixed seconds (a GPU's share: base ÷ weight + fixed).
    var shapeChargeBase: [Double] = []
    var shapeChargeFixed: [Double] = []
    /// Per GPU: batch jobs on it (running or started by this pass), and the other GPU of the one
    /// batch 2-GPU gang on it when that gang is the only batch job there (-1 otherwise). Read
    /// by the gang ring (`GangRing`); kept out of `GPUState`, which the inner loop copies.
    var batchJobs: [UInt16] = []
    var ringPartner: [Int32] = []
    /// Each node's ring over the given eligible slots (empty: none), computed once per pass.
    var rings: [[Int]: [Int]] = [:]

    /// A batch job starts on `slots` (one GPU, or a gang's).
    mutating func noteBatchStart(_ slots: [Int]) {
        for s in slots { batchJobs[s] &+= 1 }
        if slots.count == 2 { ringPartner[slots[0]] = Int32(slots[1]); ringPartner[slots[1]] = Int32(slots[0]) }
        for s in slots where batchJobs[s] != 1 { ringPartner[s] = -1 }
    }

    /// The ring through `slots` (in ring order), or nil; cached per pass.
    mutating func ring(of slots: [Int], policy: RouterPolicy) -> [Int]? {
        if let r = rings[slots] { return r.isEmpty ? nil : r }
        let order = GangRing.cycle(weights: slots.map { gpus[$0].weight }, minGain: policy.gangRingMinGain, minUse: policy.gangRingMinUse)
        let r = order.map { $0.map { slots[$0] } } ?? []
        rings[slots] = r
        return r.isEmpty ? nil : r
    }

    /// The pace of the best k of `slots` (the k-th highest weight): a gang moves at its slowest
    /// member's. Nil when there are fewer than k.
    func paceWeight(of slots: [Int], k: Int) -> Double? {
        guard slots.count >= k, k > 0 else { return nil }
        return slots.map { gpus[$0].weight }.sorted(by: >)[k - 1]
    }

    /// Per shape (gangs only), the pace of its best k GPUs on each node, by node index (0: none
    /// there); worked out once per pass, as the charge adds and lifts every job's share with it.
    var gangPaces: [[Double]?] = []

    mutating func gangPaces(shape sid: Int, _ e: Eligibility, k: Int) -> [Double] {
        if sid < gangPaces.count, let p = gangPaces[sid] { return p }
        var p = [Double](repeating: 0, count: nodes.count)
        for (ni, slots) in e.nodes { p[ni] = paceWeight(of: slots, k: k) ?? 0 }
        if sid >= gangPaces.count { gangPaces += Array(repeating: nil, count: sid + 1 - gangPaces.count) }
        gangPaces[sid] = p
        return p
    }

    /// The job being placed: its own class's remaining charge, which it does not pay (`EarliestFinishScorer`).
    var ownChargeBase = 0.0
    var ownChargeFixed = 0.0
    /// Per node, the pace its own class was charged at when it is a scarce gang (`gangPaces`;
    /// empty or 0: each GPU's own weight).
    var ownPace: [Double] = []

    /// The scarce-GPU charge on slot `g` that the job being placed pays: all of it, less its own class's part.
    @inline(__always)
    func chargeFromOthers(_ g: Int) -> Double {
        let n = gpus[g].node
        let w = n < ownPace.count && ownPace[n] > 0 ? ownPace[n] : gpus[g].weight
        return contested[g] - ownChargeBase / w - ownChargeFixed
    }

    init(snapshot: ClusterSnapshot, stats: RuntimeStats, now: Date, policy: RouterPolicy) {
        gpus = []; info = []; nodes = []; modelNames = []; uuidToSlot = [:]; nodeIndex = [:]
        nodeNames = snapshot.nodes.map(\.name)
        anyLoadedModels = snapshot.nodes.contains { $0.gpus.contains { !$0.loadedModels.isEmpty } }
        var modelIDs: [String: Int] = [:]
        // Per GPU model, not per GPU: the table match and the short name cost ~100 000
        // instructions a GPU, a third of a pass's setup on 64 GPUs of four models.
        var tableWeight: [Double] = [], shortName: [String] = []
        let headroom = snapshot.headroomBytes
        for (ni, n) in snapshot.nodes.enumerated() {
            nodeIndex[n.name] = ni
            var slots: [Int] = []
            for g in n.gpus {
                let mid: Int
                if let m = modelIDs[g.model] { mid = m } else {
                    mid = modelNames.count; modelIDs[g.model] = mid; modelNames.append(g.model)
                    tableWeight.append(GPUWeights.builtIn(g.model) ?? GPUWeights.unknownWeight)
                    shortName.append(GPUWeights.shortName(g.model))
                }
                uuidToSlot[g.uuid] = gpus.count
                slots.append(gpus.count)
                gpus.append(GPUState(node: ni, modelID: Int32(mid), weight: GPUWeights.weight(configured: g.weight, table: tableWeight[mid]),
                                     usable: StaticCapacityFilter.usable(g, headroom: headroom), free: 0, releasable: 0,
                                     queueS: 0, claimedBy: -1))
                info.append(GPUDescription(uuid: g.uuid, index: g.index, model: g.model,
                                           label: "\(n.name)/\(g.index) \(shortName[mid])",
                                           loaded: Set(g.loadedModels.map { $0.lowercased() })))
            }
            nodes.append(NodeState(gpuSlots: slots, cpuRemaining: Array(repeating: 0, count: max(0, n.cpuSlots))))
        }

        claimant = Array(repeating: nil, count: gpus.count)
        heldText = Array(repeating: nil, count: gpus.count)
        contested = Array(repeating: 0, count: gpus.count)
        contestedJobs = Array(repeating: 0, count: gpus.count)
        batchJobs = Array(repeating: 0, count: gpus.count)
        ringPartner = Array(repeating: -1, count: gpus.count)
        var allRes = [UInt64](repeating: 0, count: gpus.count)
        var unseenRes = [UInt64](repeating: 0, count: gpus.count)
        var visibleRes = [UInt64](repeating: 0, count: gpus.count)
        var cpuJobs: [[Double]] = Array(repeating: [], count: nodes.count)
        // Jobs beside each other share the GPU's compute, so each runs past its own expected
        // end; a per-job remainder then floors at a second and the GPU looks free while it is
        // still busy. The GPU cannot have done more of its current jobs' work than the time
        // since the first of them started: their runtimes minus that time is left at least.
        var sharedWork = [Double](repeating: 0, count: gpus.count)
        var firstStart = [Double](repeating: .infinity, count: gpus.count)
        for r in snapshot.running {
            let slots = r.gpuUUIDs.compactMap { uuidToSlot[$0] }
            let remaining = Self.remaining(r, slots: slots, gpus: gpus, modelNames: modelNames, stats: stats, now: now, policy: policy)
            if let start = r.startedAt, let end = r.expectedEnd, end > start {
                for s in slots {
                    sharedWork[s] += end.timeIntervalSince(start)
                    firstStart[s] = min(firstStart[s], start.timeIntervalSince(now))
                }
            }
            if r.gpuUUIDs.isEmpty {
                if let ni = nodeIndex[r.node] { cpuJobs[ni].append(remaining) }
                continue
            }
            // Not visible yet, or started so recently that the reading may predate it: the reading
            // cannot contain it. After the settle time the reading is trusted even without the process.
            let settled = r.startedAt.map { now.timeIntervalSince($0) > policy.settleS } ?? false
            let unseen = !r.visible && !settled
            for s in slots {
                allRes[s] &+= r.reservedBytesPerGPU
                if unseen { unseenRes[s] &+= r.reservedBytesPerGPU } else { visibleRes[s] &+= r.reservedBytesPerGPU }
                gpus[s].queueS += remaining
                if r.priority < policy.urgentPriority { gpus[s].onlyUrgent = false }
                gpus[s].addSharer()
            }
            if r.priority < policy.urgentPriority { noteBatchStart(slots) }
        }
        // Only under `hydra`: the baselines keep the per-job remainders they were measured with.
        for s in gpus.indices where policy.name == .hydra && firstStart[s].isFinite {
            gpus[s].queueS = max(gpus[s].queueS, sharedWork[s] + firstStart[s])
        }
        for (ni, n) in snapshot.nodes.enumerated() {
            for (k, g) in n.gpus.enumerated() {
                let s = nodes[ni].gpuSlots[k]
                let live = g.usedBytes ?? (g.baselineBytes &+ visibleRes[s])
                // The reading plus what it cannot show yet; and never less than what Hydra promised,
                // so a job still growing towards its reservation is not over-booked.
                let occupied = max(live &+ unseenRes[s], g.baselineBytes &+ allRes[s])
                // These readings come from heartbeats (bounds-checked at decode, 1 PiB): clamped at
                // 4 PiB, no reading can trap this subtraction nor the sums of `free` across GPUs.
                let cap: UInt64 = 1 << 52
                gpus[s].free = Int64(min(g.totalBytes, cap)) - Int64(min(occupied, cap)) - Int64(min(headroom, cap))
                gpus[s].releasable = allRes[s]
            }
            var slots = nodes[ni].cpuRemaining
            for (i, rem) in cpuJobs[ni].sorted().enumerated() where i < slots.count { slots[i] = rem }
            nodes[ni].cpuRemaining = slots
        }
    }

    /// Expected seconds left for a job already on a node (at least a token amount while it runs).
    static func remaining(_ r: RouterRunningJob, slots: [Int], gpus: [GPUState], modelNames: [String],
                          stats: RuntimeStats, now: Date, policy: RouterPolicy) -> Double {
        let floorS = 1.0
        if let end = r.expectedEnd { return max(floorS, end.timeIntervalSince(now)) }
        let job = RouterJob(id: r.id, kind: r.kind, spec: r.spec, vramRequestBytes: r.reservedBytesPerGPU,
                            gpusRequested: r.gpuUUIDs.count, submittedAt: r.placedAt)
        let d = JobDemand(job: job, stats: stats, policy: policy)
        let runtime: Double
        if slots.isEmpty {
            runtime = RuntimeEstimator.cpu(d, stats: stats)
        } else {
            let slowest = slots.min { gpus[$0].weight < gpus[$1].weight }!
            runtime = RuntimeEstimator.gpu(d, learned: stats.meanRuntime(kind: d.kind, modelKey: d.modelKey, gpuModel: modelNames[Int(gpus[slowest].modelID)]),
                                           weight: gpus[slowest].weight)
        }
        let start = r.startedAt ?? now
        return max(floorS, start.addingTimeInterval(runtime).timeIntervalSince(now))
    }
}

/// Expected runtime: learned on that GPU model, else the spec's fixed duration, else base / weight.
enum RuntimeEstimator {
    static func gpu(_ d: JobDemand, learned: Double?, weight: Double) -> Double {
        if let learned { return learned }
        if let dur = d.durationS { return dur }
        return d.baseRuntimeS / weight
    }

    /// Weight-1 GPU work: the units a job needs on each of its GPUs, k GPUs' worth for a gang
    /// (the pressed test's currency, `ScarceGPUs` and `GatedWork.heldBack`).
    static func unitWork(_ d: borrowing JobDemand) -> Double {
        gpu(d, learned: nil, weight: 1) * Double(d.shape.gpus)
    }

    static func cpu(_ d: JobDemand, stats: RuntimeStats) -> Double {
        if let l = stats.meanRuntime(kind: d.kind, modelKey: d.modelKey, gpuModel: "cpu") { return l }
        return d.durationS ?? d.baseRuntimeS
    }
}
