import Foundation

/// A place a job could go: one GPU, or a gang of GPUs on one node.
struct Candidate: Sendable {
    var node: Int
    /// GPU slot; a gang's other slots in `others` (kept apart so the common
    /// single-GPU candidate allocates nothing in the inner loop).
    var first: Int
    var others: [Int] = []
    /// Seconds from now until the GPUs' queued work is done.
    var startS: Double
    var runtimeS: Double
    /// Fits in free VRAM now and nobody ranked higher holds it.
    var fitsNow: Bool
    /// Enough VRAM frees when Hydra's own jobs end (false: something else holds it; no estimate).
    var predictable: Bool
    var gpus: [Int] { [first] + others }

    var count: Int { 1 + others.count }
    /// The i-th GPU slot (0 = `first`): loops over it capture no state, unlike a closure would.
    func gpu(_ i: Int) -> Int { i == 0 ? first : others[i - 1] }

    func allGPUs(_ body: (Int) -> Bool) -> Bool {
        if !body(first) { return false }
        for g in others where !body(g) { return false }
        return true
    }
}

/// What a scorer reads of a place: its GPU slots and times. A candidate is one; so is a single
/// GPU (`OneGPU`), which the pass prices without building a candidate for each GPU (its `others`
/// array made each a copy with retains, and the cost a call, half a million per 10 000-job pass).
protocol Placement {
    var count: Int { get }
    func gpu(_ i: Int) -> Int
    var startS: Double { get }
    var runtimeS: Double { get }
    var fitsNow: Bool { get }
}

extension Placement {
    var finishS: Double { startS + runtimeS }
}

extension Candidate: Placement {}

/// One GPU, as the single-GPU loop prices it.
struct OneGPU: Placement {
    var slot: Int
    var startS: Double
    var runtimeS: Double
    var fitsNow: Bool
    var count: Int { 1 }
    @inline(__always) func gpu(_ i: Int) -> Int { slot }
}

/// Ranks candidates that passed the filters; lower cost wins. Costs of a policy's scorers add up.
protocol PlacementScorer: Sendable {
    var name: String { get }
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double
}

/// A policy's scorers, called without existential dispatch: the pass calls them once per
/// job and candidate GPU (hundreds of thousands of times for a large backlog).
enum ScorerSet: Sendable {
    case finishAndModel(EarliestFinishScorer, ModelLoadedScorer)
    case leastLoaded(LeastLoadedScorer)
    case random(RandomScorer)

    init(_ p: RouterPolicy) {
        switch p.name {
        case .hydra: self = .finishAndModel(EarliestFinishScorer(urgentWaitFactor: p.urgentWaitFactor, batchSharingCharge: p.urgentSharingCharge), ModelLoadedScorer(penaltyS: p.modelLoadPenaltyS))
        case .seedStatic, .leastLoaded: self = .leastLoaded(LeastLoadedScorer())
        case .random: self = .random(RandomScorer(seed: p.seed))
        }
    }

    @inline(__always)
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double {
        switch self {
        case let .finishAndModel(a, b): return a.cost(c, demand: demand, jobKey: jobKey, state: state) + b.cost(c, demand: demand, jobKey: jobKey, state: state)
        case let .leastLoaded(a): return a.cost(c, demand: demand, jobKey: jobKey, state: state)
        case let .random(a): return a.cost(c, demand: demand, jobKey: jobKey, state: state)
        }
    }
}

/// Expected finish: queued work plus this job's runtime there. Packs fast GPUs, and lets a job
/// wait for a busy fast GPU rather than run long on an idle slow one.
///
/// An urgent job that fits now beside the GPU's work starts at once and shares the compute:
/// beside n jobs it finishes after about (1 + n) × its runtime (`sharedFinishS`), not after
/// the whole queue. Beside batch work it also pays the seconds it takes from that work
/// (`batchSharingCharge` × its runtime), so an idle GPU that finishes it nearly as soon wins.
/// A GPU it must wait for ranks behind every GPU it fits on now unless the wait is at most
/// `urgentWaitFactor` × its runtime there (default 0: while it fits somewhere, it does not wait).
struct EarliestFinishScorer: PlacementScorer {
    let name = "earliest-finish"
    var urgentWaitFactor = 0.0
    /// `RouterPolicy.urgentSharingCharge`: the GPU time an urgent job takes from the batch jobs
    /// it would start beside (its own runtime there, at equal shares), counted in its cost.
    var batchSharingCharge = 0.0
    /// When an urgent job started now on `c` would end: its GPUs share their compute equally among
    /// the jobs on them, so beside n others it runs about (1 + n) × its runtime (at most, while they
    /// last as long). Counting only one runtime of the others (runtime + min(queue, runtime)) sent
    /// every chat request to the fastest GPU, where five or six then shared it and each took 5×
    /// its runtime, with an idle GPU beside it (generated seed 114).
    @inline(__always)
    static func sharedFinishS<P: Placement>(_ c: P, state: borrowing PassState) -> Double {
        var n: UInt16 = 0
        for i in 0..<c.count { n = max(n, state.gpus[c.gpu(i)].sharers) }
        return c.runtimeS * Double(1 + n)
    }

    /// Ranks a too-long wait behind every start now, keeping the order among such waits.
    static let tooLongWaitS = 1e7
    @inline(__always)
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double {
        guard demand.urgent else {
            // A scarce job pays the other scarce classes' work on its GPUs, not its own class's
            // (`PassState.ownChargeBase`; 0 for a job with more choices, which pays it all).
            var charge = 0.0
            if state.ownChargeBase == 0 && state.ownChargeFixed == 0 {
                for i in 0..<c.count { charge = max(charge, state.contested[c.gpu(i)]) }
            } else {
                for i in 0..<c.count { charge = max(charge, state.chargeFromOthers(c.gpu(i))) }
            }
            return c.finishS + charge
        }
        if c.fitsNow {
            let shared = Self.sharedFinishS(c, state: state)
            guard batchSharingCharge > 0 else { return shared }
            for i in 0..<c.count {
                let g = state.gpus[c.gpu(i)]
                if g.sharers > 0 && !g.onlyUrgent { return shared + batchSharingCharge * c.runtimeS }
            }
            return shared
        }
        return c.startS > urgentWaitFactor * c.runtimeS ? Self.tooLongWaitS + c.finishS : c.finishS
    }
}

/// A GPU without the job's model loaded pays the load time.
struct ModelLoadedScorer: PlacementScorer {
    let name = "model-loaded"
    var penaltyS: Double
    @inline(__always)
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double {
        // Only where some GPU declares loaded models: otherwise every GPU pays the same.
        guard !demand.modelKey.isEmpty, state.anyLoadedModels else { return 0 }
        for i in 0..<c.count where !state.info[c.gpu(i)].loaded.contains(demand.modelKey) { return penaltyS }
        return 0
    }
}

/// Least queued work; among idle GPUs the one with the most free VRAM (spread).
struct LeastLoadedScorer: PlacementScorer {
    let name = "least-loaded"
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double {
        var free: Int64 = 0
        for i in 0..<c.count { free += max(0, state.gpus[c.gpu(i)].free) }
        return c.startS - Double(free) / Double(ByteSize.GiB) * 1e-3
    }
}

/// Uniform among candidates, reproducible: a hash of the seed, the job and the GPU.
struct RandomScorer: PlacementScorer {
    let name = "random"
    var seed: UInt64
    func cost<P: Placement>(_ c: P, demand: borrowing JobDemand, jobKey: UInt64, state: borrowing PassState) -> Double {
        var rng = SplitMix64(seed: seed ^ jobKey)
        var h = rng.next()
        for i in 0..<c.count { var r = SplitMix64(seed: h ^ UInt64(c.gpu(i) &* 7919)); h = r.next() }
        return Double(h >> 11) / Double(1 << 53)
    }
}

/// Small, fast, seedable; the same everywhere (Swift's Hasher is randomized per process).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// FNV-1a of a string: a stable per-job key.
    public static func stableHash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }
}
