import Foundation

/// A named placement policy and the knobs of the model. `hydra` is the default;
/// the others exist to be compared against it in `hydra simulate --compare`.
public struct RouterPolicy: Sendable, Equatable {
    public enum Name: String, Sendable, CaseIterable, Codable {
        /// Earliest expected finish, waits for a better GPU, prefers loaded models.
        case hydra
        /// The seed's fixed kind → GPU model rules, else the least busy GPU.
        case seedStatic = "seed-static"
        /// The GPU with the least queued work that fits now.
        case leastLoaded = "least-loaded"
        /// Any GPU that fits now, chosen by a seeded generator.
        case random
    }

    public var name: Name
    /// Seed of the `random` policy (same seed, same choices).
    public var seed: UInt64
    /// Waiting this long raises a job's effective priority by one.
    public var agingStepS: Double
    /// Counted against a GPU that does not have the job's model loaded.
    public var modelLoadPenaltyS: Double
    /// Factor on the failed attempt's reservation when a job is retried after out-of-memory.
    public var oomGrowth: Double
    /// A reservation of a started job whose process never shows up stops counting after this long:
    /// by then the live reading is the truth.
    public var settleS: Double
    /// Jobs of this priority and above are interactive: under `hydra` they start on a GPU that
    /// fits them now (sharing its compute) unless waiting for a busy one finishes them sooner.
    public var urgentPriority: Int
    /// An urgent job waits for a busy GPU only while the wait is at most this many times its
    /// runtime there; past that, any GPU it fits on now wins (its wait is what people notice).
    /// 0: it never waits while it fits somewhere. At 1 and 2, queue estimates that ran short
    /// (±30 % runtimes, shared GPUs) let interactive jobs on 4 of 200 generated seeds wait
    /// 2–5× their runtime although another GPU had room; at 0, on none.
    public var urgentWaitFactor: Double
    /// Under `hydra`, whether a job below `urgentPriority` may start beside a running job on a GPU
    /// with room (sharing its compute). Default false: it waits for that GPU to be idle, as the
    /// plan (queue + runtime) assumes. True suits GPUs that one job leaves underused, where two
    /// jobs side by side finish sooner than one after the other (the simulator shares equally,
    /// so there it never pays: over 200 generated seeds the median went 1.096 → 1.065 × the
    /// bound when sharing stopped, with the gang rule).
    public var sharesBusyGPUs: Bool
    /// Under `hydra`, a class of jobs whose pending work per unit of its GPUs' weight is at least
    /// this many times the cluster's keeps its GPUs like a scarce class (`ScarceGPUs`): jobs that
    /// can run elsewhere pay its queued work there. 0 turns it off. At 1, over 200 generated
    /// seeds: median 1.057 → 1.056 × the bound, p90 1.284 → 1.275 (25 seeds better by > 2 %, 12
    /// worse); with every batch job submitted at once (`--at-once`) 1.161 → 1.123 and
    /// 1.443 → 1.389 (48 better, 1 worse).
    public var pressedClassFactor: Double
    /// Under `hydra`, an urgent job that would start beside a batch job pays this many times its
    /// runtime there on top of its shared finish: sharing equally, it takes that much of the
    /// GPU's time from the batch work, and where that work is what ends the night (images on
    /// the only ComfyUI node) the night ends that much later. So a request goes to an idle GPU
    /// when that finishes it about as soon (a 4090 shared with an image: 2 × 5 s + 5 s; an idle
    /// 3060: 13 s). 0 turns it off. At 1, over 200 generated seeds: median 1.056 → 1.048 × the
    /// bound, p90 1.271 → 1.254, the interactive jobs' p95 latency against their fastest GPU
    /// 2.00 → 2.00 at the median seed and 3.25 → 3.33 at p90; at 2 and 3 the median went to
    /// 1.044 and 1.042 but that latency to 2.5 and 3.0.
    public var urgentSharingCharge: Double
    /// Under `hydra`, a single-GPU job may start on an empty GPU that is held for a job starting
    /// there later (a gang waiting for its other GPU) when its runtime × this margin ends before
    /// that start, or not much after (`backfillDelay`) — backfilling, as batch schedulers do. The
    /// margin covers runtimes that run long (a backfilled job that overruns delays the gang). 0
    /// turns it off. At 1.3, over 200 generated seeds: median 1.049 → 1.048 × the bound, p90
    /// 1.254 → 1.253, 7 seeds better by more than 2 % (181 by 7 %), 1 worse (166, 5 %); at 1.0
    /// the same less one seed.
    public var backfillMargin: Double
    /// Under `hydra`, how much later, as a share of the wait it fills, a backfilled job may make
    /// the held job start: a single-GPU job may take the empty held GPU when its runtime × the
    /// margin ends within (1 + this) × the held job's wait. A hold is a reservation the order
    /// does not always keep: fair share ranks a stream's next job before the gang again each time
    /// the stream's last one ends, so the next one takes the GPU the gang waited for and the held
    /// GPU sat empty the whole stream long (a 2-GPU gang beside ten videos: the L40S 17 % busy,
    /// 1.56 × the bound; with this, 1.05). Each backfill ends its GPU's wait at most
    /// (1 + this) ÷ margin of it later, so while that is under 2 the remaining waits shrink
    /// (by 0.54 at the defaults) and the gang is delayed at most about its first wait in all.
    /// 0: only jobs that end before the held start. At 1, over 200 generated seeds: median 1.044
    /// → 1.044 × the bound, p90 1.212 → 1.212, 3 seeds better by more than 2 %, 2 worse; seeds
    /// 201–400, which no rule was tuned on: median 1.038 → 1.035, p90 1.301 → 1.283, 4 better,
    /// 1 worse; 401–600: 1.031 → 1.031, p90 1.226 → 1.225, worst 1.524 → 1.410, 3 better, 1 worse.
    public var backfillDelay: Double = 1
    /// Under `hydra`, a batch 2-GPU gang may start in a ring on a node with an odd number of
    /// GPUs, sharing each of its GPUs with one other gang (`GangRing`), where the ring's gangs at
    /// half rate outpace the best disjoint pairs by this factor and use at least
    /// `gangRingMinUse` of the node's weight. 0 turns it off. At 1.2 and 0.5, over 200 generated
    /// seeds: median 1.041 → 1.038 × the bound, p90 1.246 → 1.239; seeds 91, 10 and 36 better by
    /// 25, 24 and 4 %, none worse by more than 2 %. At 1.1, or without the use floor (an H100 in
    /// a ring with two L4s, spent at an L4's pace), 4–7 seeds got worse: seed 18 went from the
    /// bound to 1.14 ×.
    public var gangRingMinGain: Double
    public var gangRingMinUse: Double
    /// Under `hydra`, a pending job that upcoming jobs wait on ranks at least at its own runtime
    /// plus the time its whole class's upcoming dependents need on their GPUs (`GatedWork`): 140
    /// short expansions that each feed one long image rank before a video, though each alone
    /// ranks below it. Off: only the longest chain behind each job counts. Over 200 generated
    /// seeds: median 1.038 → 1.037 × the bound, p90 1.239 → 1.227; submitted at once 1.105 /
    /// 1.338 → 1.103 / 1.337, seeds within 1.10 95 → 99 (193: 1.341 → 1.052, 200: 1.329 → 1.063).
    public var ranksGatedWork = true
    /// Under `hydra`, the pressed test (`pressedClassFactor`) counts, with a class's pending work,
    /// the work of the upcoming jobs that wait on it (`GatedWork.heldBack`), in the class's share
    /// and the cluster's. Off: only pending and upcoming jobs' own work. Over 200 generated seeds:
    /// median 1.037 → 1.043 × the bound, p90 1.227 → 1.212, worst 1.673 → 1.493 (seed 191 1.673 →
    /// 1.290: a LoRA run no longer takes the H100 the 2-GPU expansions need); seeds more than 1 %
    /// behind least-loaded / random 11 / 9 → 10 / 8; submitted at once 1.103 / 1.337 → 1.101 /
    /// 1.312 (16 seeds better by > 2 %, 18 worse).
    public var pressesHeldBackWork = true
    /// Under `hydra`, jobs of one priority that can use exactly the same GPUs swap their places
    /// in the longest-path order so that the one that would stick out furthest past the others if
    /// it ran last comes first: its own runtime × (1 − 1 ÷ the set's GPUs) + the work that waits
    /// on it (`JobOrdering.tailFirst`). On one GPU that is Jackson's rule, largest tail first:
    /// on generated seed 145 the only tabbyapi GPU ran a 38-minute LoRA run (no dependents)
    /// before the last ten 4-minute expansions, each of which an image waits on, and the night
    /// ended 1.5 % after least-loaded. Jobs of other sets keep their places. Sets are by base
    /// priority: aging can still part a set's members into tiers, where the values they swapped
    /// order them only inside their own. Over 200 generated seeds two move, neither for the
    /// worse: 145 (1.015 → 1.000 × the bound) and 154 (1.011 → 1.006); behind least-loaded /
    /// random 10 / 8 → 9 / 7. Submitted at once only 154 moves (1.006 → 1.000).
    public var ordersTailFirst = true

    public init(name: Name = .hydra, seed: UInt64 = 1, agingStepS: Double = 600, modelLoadPenaltyS: Double = 30,
                oomGrowth: Double = 1.5, settleS: Double = 60, urgentPriority: Int = 2, urgentWaitFactor: Double = 0,
                sharesBusyGPUs: Bool = false, pressedClassFactor: Double = 1, urgentSharingCharge: Double = 1,
                backfillMargin: Double = 1.3, gangRingMinGain: Double = 1.2, gangRingMinUse: Double = 0.5) {
        self.gangRingMinGain = gangRingMinGain; self.gangRingMinUse = gangRingMinUse
        self.sharesBusyGPUs = sharesBusyGPUs; self.pressedClassFactor = pressedClassFactor
        self.urgentSharingCharge = urgentSharingCharge; self.backfillMargin = backfillMargin
        self.name = name; self.seed = seed; self.agingStepS = agingStepS
        self.modelLoadPenaltyS = modelLoadPenaltyS; self.oomGrowth = oomGrowth; self.settleS = settleS
        self.urgentPriority = urgentPriority; self.urgentWaitFactor = urgentWaitFactor
    }

    public static let hydra = RouterPolicy()

    /// Parses a policy name as written in configs and on the command line.
    public static func named(_ s: String, seed: UInt64 = 1) -> RouterPolicy? {
        guard let n = Name(rawValue: s.lowercased()) else { return nil }
        return RouterPolicy(name: n, seed: seed)
    }

    /// Whether a job may stay pending for a better GPU that is busy now.
    var waitsForBetterGPU: Bool { name == .hydra }

    /// Inside a priority tier and fair-share rank, longest path first (own runtime + `tailS`):
    /// long jobs and the heads of long chains start early, so they do not end the night alone.
    var criticalPathOrder: Bool { name == .hydra }

    /// A gang takes the slowest GPUs that finish it (nearly) as soon as the fastest would (`Router.gang`).
    var sparesFastGPUsInGangs: Bool { name == .hydra }

    /// Jobs below `urgentPriority` start only on idle GPUs (a busy one is waited for, not shared).
    var startsOnIdleGPUsOnly: Bool { name == .hydra && !sharesBusyGPUs }

    /// A single-GPU job may start on an empty GPU held for a later start (`backfillMargin`).
    var backfillsHeldGPUs: Bool { name == .hydra && backfillMargin > 0 }

    /// The longest backfilled runtime, × `backfillMargin`, that a hold starting in `waitS` takes.
    func backfillLimitS(waitS: Double) -> Double { waitS * (1 + max(0, backfillDelay)) }

    /// Batch 2-GPU gangs may share GPUs in a ring on odd nodes (`GangRing`); only where batch jobs otherwise start alone.
    var ringsGangs: Bool { startsOnIdleGPUsOnly && gangRingMinGain > 0 }

    /// Keeps GPUs that only they can use for jobs with few choices (`ScarceGPUs`).
    var reservesScarceGPUs: Bool { name == .hydra }

    /// Whether `Router.place(upcoming:)` reads the jobs about to be ready (they count in the
    /// scarce-GPU charge); callers need not gather them otherwise.
    public var weighsUpcomingJobs: Bool { reservesScarceGPUs }

    /// The longest-path order also counts the work a job's class holds back (`GatedWork`).
    var gatedWorkOrder: Bool { criticalPathOrder && weighsUpcomingJobs && ranksGatedWork }

    /// `ordersTailFirst` where the longest-path order is on.
    var tailFirstOrder: Bool { criticalPathOrder && ordersTailFirst }

    /// A job with few choices ranks with the most-aged job of its own priority (`JobOrdering`):
    /// aging keeps jobs from starving, but the jobs that aged past a scarce one could run
    /// elsewhere, and it cannot.
    var scarceKeepsPace: Bool { name == .hydra }

    var extraFilters: [any PlacementFilter] {
        name == .seedStatic ? [SeedStaticRuleFilter()] : []
    }
}
