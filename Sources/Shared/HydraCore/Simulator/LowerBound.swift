import Foundation

/// A lower bound on the makespan of a workload that no policy can beat.
///
/// 1. Critical path: each job's earliest completion is its submit time, then the chain of its
///    dependencies, each at its fastest eligible runtime; the latest such completion.
/// 2. Capacity: a GPU delivers `weight` units of work per second (a job of base runtime B
///    needs B units per GPU it takes), a node's CPU slots one unit per slot per second. For
///    each set S of resources that some job is limited to (and each union of two such sets),
///    the jobs limited to S must all run inside S between the earliest of their earliest
///    starts and the makespan minus the shortest of their dependency tails:
///    `min start + work(S) / capacity(S) + min tail`, and the same for every later release
///    threshold and every longer tail threshold (`windowBound`).
/// 3. The same windows in resource-seconds: each job holds each of its k GPUs (or a CPU slot)
///    for at least its fastest runtime, and S has one second per GPU or slot per second. This
///    one binds where a gang pairs a fast GPU with a slow one (the weights count the fast one
///    at full speed, but the gang runs at the slow one's pace).
/// 4. No migration (`noMigrationBound`): a job stays on the GPU(s) it starts on, so a guess C
///    gives each job a deadline, and a GPU too slow to meet it cannot take the job at all;
///    2 and 3 are then checked on the GPUs each job has left, and so is 5. The largest C where
///    that fails.
/// 5. Whole jobs (inside 4): a GPU runs a job from start to end, so it holds only as many of
///    the big jobs as fit in the window one after another (`whole`).
/// 6. Residents that leave: a job that does not fit beside a resident with `until_s` starts on
///    that GPU no earlier than it leaves (in 1's earliest completions and in 4 and 5).
///    "Fits" counts what the job really holds, its peak where it has one: where the peak never
///    fits beside the GPU's baseline every attempt dies while loading, so no part counts that GPU.
/// 7. Every set at once (inside 4, `flowFails`): a max flow from the jobs to (resource, time
///    interval) pairs, each job in its window, on the resources 4 left it, at its own pace.
/// The bound ignores VRAM between jobs and sharing losses, so it is valid for every policy; it is the
/// maximum of 1–4, over the jobs that ran (a job that can never run adds nothing).
public struct LowerBound: Sendable, Equatable, Codable {
    public struct Parts: Sendable, Equatable, Codable {
        public var value: Double
        public var criticalPathS: Double
        public var capacityS: Double
        /// The resources whose capacity binds (e.g. `hydra-compute/0 RTX 5070 Ti + hydra-compute/1 RTX 3060`).
        public var bindingResources: String
        /// Part 4 (0 when it adds nothing above 1–3).
        public var noMigrationS: Double = 0
        /// Per job, in the order given: its runtime alone on the fastest GPU (or gang) it may use;
        /// nil where the bound does not count the job. The simulator's interactive latency divides by it.
        var fastestS: [Double?] = []
        enum CodingKeys: String, CodingKey {
            case value, criticalPathS = "critical_path_s", capacityS = "capacity_s", bindingResources = "binding_resources"
            case noMigrationS = "no_migration_s"
        }
    }

    /// What every part (and `OfflinePlan`) knows of one job: where it may run and how long it takes there.
    struct JobFacts {
        /// GPUs per job (1 for a CPU job).
        var k: Int
        var cpu: Bool
        /// GPU jobs: per node, the GPUs its real VRAM fits on (at least k) and the pace of its best k there.
        var nodes: [(slots: [Int], pace: Double)] = []
        /// CPU jobs: the node indices that have CPU slots for it.
        var cpuNodes: [Int] = []
        /// GPUs the job cannot start on before a resident leaves: slot → that time.
        var avail: [Int: Double] = [:]
        /// Weight-1 runtime (with the jitter the router does not see), or a fixed duration.
        var base: Double
        var fixed: Double?
        /// Runtime on GPUs of this pace (a CPU job: its own runtime).
        func runtime(pace: Double) -> Double { cpu ? (fixed ?? base) : (fixed ?? base / pace) }
    }

    /// Per-job facts, nil where the job has no eligible resource. The resource table follows `state`:
    /// GPU slots first, then one CPU resource per node (`gpuCount + node`).
    static func facts(workload: Workload, jobs: [Simulator.SimJob], snapshot: ClusterSnapshot)
        -> (state: PassState, gpuBytes: [(total: UInt64, baseline: UInt64)], facts: [JobFacts?]) {
        let policy = RouterPolicy.hydra
        let state = PassState(snapshot: snapshot, stats: .empty, now: Date(timeIntervalSince1970: 0), policy: policy)
        let gpuCount = state.gpus.count
        // Residents that unload at until_s: a job that does not fit beside them cannot start on
        // that GPU before they go. (Request + baseline + residents over the GPU's memory, with
        // no headroom and no other job: a fit the router would refuse too, so the bound stays valid.)
        var gpuBytes = [(total: UInt64, baseline: UInt64)](repeating: (0, 0), count: gpuCount)
        var leaving = [[(until: Double, bytes: UInt64)]](repeating: [], count: gpuCount)
        for node in snapshot.nodes { for g in node.gpus { if let s = state.uuidToSlot[g.uuid] { gpuBytes[s] = (g.totalBytes, g.baselineBytes) } } }
        for r in workload.resident {
            guard let u = r.untilS, let node = snapshot.nodes.first(where: { $0.name == r.node }), r.gpu < node.gpus.count,
                  let s = state.uuidToSlot[node.gpus[r.gpu].uuid] else { continue }
            leaving[s].append((u, r.vram.bytes))
        }
        for s in leaving.indices { leaving[s].sort { $0.until < $1.until } }
        /// When a job asking `request` bytes first fits on GPU `slot` (0: from the start).
        func availableAt(_ slot: Int, request: UInt64) -> Double {
            guard request > 0, !leaving[slot].isEmpty else { return 0 }
            let (total, baseline) = gpuBytes[slot]
            var held = leaving[slot].reduce(UInt64(0)) { $0 + $1.bytes }
            if request + baseline + held <= total { return 0 }
            for r in leaving[slot] {
                held -= r.bytes
                if request + baseline + held <= total { return r.until }
            }
            return 0   // never fits: eligibility left the GPU out already
        }
        var eligCache: [DemandShape: Eligibility] = [:]
        var out = [JobFacts?](repeating: nil, count: jobs.count)
        for (j, sj) in jobs.enumerated() {
            let d = JobDemand(job: sj.job, stats: .empty, policy: policy)
            let e: Eligibility
            if let c = eligCache[d.shape] { e = c } else {
                e = Eligibility.compute(d.shape, snapshot: snapshot, state: state, filters: PlacementFilters.standard)
                eligCache[d.shape] = e
            }
            guard e.reason == nil else { continue }
            if d.shape.cpuOnly {
                let cpuNodes = e.nodes.map(\.node).filter { snapshot.nodes[$0].cpuSlots > 0 }
                out[j] = JobFacts(k: 1, cpu: true, cpuNodes: cpuNodes, base: sj.fixedS ?? sj.baseS ?? d.baseRuntimeS, fixed: nil)
                continue
            }
            let k = d.shape.gpus
            var f = JobFacts(k: k, cpu: false, base: sj.baseS ?? d.baseRuntimeS, fixed: sj.fixedS)
            // What the job really holds: where its peak does not fit beside the baseline it dies
            // while loading, every attempt, so it never ends on that GPU however its request fits.
            let holds = max(sj.job.vramRequestBytes ?? 0, sj.peakBytes ?? 0)
            for (_, onNode) in e.nodes {
                let slots = onNode.filter { holds + gpuBytes[$0].baseline <= gpuBytes[$0].total }
                guard let wk = state.paceWeight(of: slots, k: k) else { continue }
                f.nodes.append((slots, wk))
                for s in slots { let a = availableAt(s, request: holds); if a > 0 { f.avail[s] = a } }
            }
            if !f.nodes.isEmpty { out[j] = f }
        }
        return (state, gpuBytes, out)
    }

    static func compute(cluster: ClusterConfig, workload: Workload, jobs: [Simulator.SimJob], snapshot: ClusterSnapshot) -> Parts {
        let (state, _, facts) = Self.facts(workload: workload, jobs: jobs, snapshot: snapshot)
        let gpuCount = state.gpus.count
        var capacity = state.gpus.map(\.weight)
        var labels = state.info.map(\.label)
        for n in snapshot.nodes {
            capacity.append(Double(max(0, n.cpuSlots))); labels.append("\(n.name) CPU")
        }
        let n = jobs.count
        /// Per node: when the job's k GPUs there are first free for it, and its runtime on them.
        var options = [[(at: Double, runtime: Double)]](repeating: [], count: n)
        var fastest = [Double](repeating: .nan, count: n)
        var work = [Double](repeating: 0, count: n)
        // Resource-seconds: a job holds each of its k GPUs (or its CPU slot) for at least its fastest runtime.
        var occupancy = [Double](repeating: 0, count: n)
        var sets = [[Int]](repeating: [], count: n)
        for (j, sj) in jobs.enumerated() {
            // Only jobs that ran count: a job that never ran (nor, so, its dependents) adds nothing to the makespan.
            guard sj.finishedAt != nil, sj.deps.allSatisfy({ !fastest[$0].isNaN }), let f = facts[j] else { continue }
            if f.cpu {
                fastest[j] = f.base; work[j] = f.base; occupancy[j] = f.base
                sets[j] = f.cpuNodes.map { gpuCount + $0 }
                continue
            }
            var best = Double.infinity
            var usable: [Int] = []
            for (slots, wk) in f.nodes {
                let runtime = f.runtime(pace: wk)
                best = min(best, runtime)
                usable += slots
                // A gang starts when the k-th soonest of its GPUs is free (and runs at the k-th weight at best).
                options[j].append((slots.map { f.avail[$0] ?? 0 }.sorted()[f.k - 1], runtime))
            }
            fastest[j] = best
            sets[j] = usable.sorted()
            let minW = usable.map { state.gpus[$0].weight }.min() ?? 1
            work[j] = Double(f.k) * (f.fixed.map { $0 * minW } ?? f.base)
            occupancy[j] = Double(f.k) * best
        }

        // Dependencies point to earlier jobs (the workload's group order), so one pass each way suffices.
        var est = [Double](repeating: 0, count: n)
        var done = [Double](repeating: 0, count: n)
        var critical = 0.0
        for j in 0..<n {
            var s = jobs[j].submitAt
            for d in jobs[j].deps where !fastest[d].isNaN { s = max(s, done[d]) }
            est[j] = s
            guard !fastest[j].isNaN else { continue }
            // Earliest completion: on a GPU held by a leaving resident, not before it leaves
            // (CPU jobs have no options: submit, dependencies, runtime).
            var end = options[j].isEmpty ? s + fastest[j] : .infinity
            for o in options[j] { end = min(end, max(s, o.at) + o.runtime) }
            done[j] = end
            critical = max(critical, end)
        }
        // The longest chain behind each job at fastest runtimes; a job the bound leaves out adds nothing.
        let tail = DependencyTails.compute(dependsOn: jobs.map(\.deps), ownS: fastest.map { $0.isNaN ? 0 : $0 })

        var distinct = Set<[Int]>()
        for j in 0..<n where !fastest[j].isNaN && !sets[j].isEmpty { distinct.insert(sets[j]) }
        var candidates = Array(distinct)
        let base = candidates
        for a in 0..<base.count { for b in (a + 1)..<max(a + 1, base.count) { candidates.append(Array(Set(base[a] + base[b])).sorted()) } }
        var capBound = 0.0, binding = ""
        for s in Set(candidates) {
            let members = Set(s)
            var inside: [Int] = []
            for j in 0..<n where !fastest[j].isNaN && !sets[j].isEmpty && sets[j].allSatisfy(members.contains) { inside.append(j) }
            let cap = s.reduce(0.0) { $0 + capacity[$1] }
            guard !inside.isEmpty, cap > 0 else { continue }
            // The same windows counted in resource-seconds: the weights overrate a fast GPU that can
            // only run a gang at its slow partner's pace.
            let units = s.reduce(0.0) { $0 + ($1 < gpuCount ? 1 : capacity[$1]) }
            let bound = max(Self.windowBound(inside.map { (est[$0], work[$0], tail[$0]) }, capacity: cap),
                            Self.windowBound(inside.map { (est[$0], occupancy[$0], tail[$0]) }, capacity: units))
            if bound > capBound { capBound = bound; binding = s.map { labels[$0] }.joined(separator: " + ") }
        }
        // 4. No migration: a job runs on one GPU (or gang) from start to end, so the seconds
        //    it has are a speed it needs; below that speed a GPU cannot take it at all.
        var jobsIn: [SpeedJob] = []
        for j in 0..<n where !fastest[j].isNaN && !sets[j].isEmpty {
            if sets[j][0] >= gpuCount {
                jobsIn.append(SpeedJob(est: est[j], tail: tail[j], k: 1, base: nil, fixed: fastest[j], cpu: true, nodes: [sets[j]]))
                continue
            }
            let f = facts[j]!
            let byNode = Dictionary(grouping: sets[j], by: { state.gpus[$0].node }).values.map { $0.sorted() }.sorted { $0[0] < $1[0] }
            jobsIn.append(SpeedJob(est: est[j], tail: tail[j], k: f.k, base: f.fixed == nil ? f.base : nil, fixed: f.fixed, cpu: false,
                                   nodes: byNode, avail: f.avail))
        }
        let lo = max(critical, capBound)
        let speed = Self.noMigrationBound(jobsIn, speeds: capacity, gpuCount: gpuCount, from: lo)
        if speed.value > lo { binding = speed.binding.map { labels[$0] }.joined(separator: " + ") }
        return Parts(value: max(lo, speed.value), criticalPathS: critical, capacityS: capBound, bindingResources: binding,
                     noMigrationS: speed.value, fastestS: fastest.map { $0.isNaN ? nil : $0 })
    }

    /// A job for the no-migration bound: its earliest start and tail, its GPUs per node
    /// (or, CPU-only, its nodes' CPU resources as one list), and its weight-1 runtime or fixed duration.
    struct SpeedJob {
        var est: Double
        var tail: Double
        var k: Int
        var base: Double?
        var fixed: Double?
        var cpu: Bool
        var nodes: [[Int]]
        /// GPUs the job cannot start on before a resident leaves: slot → that time.
        var avail: [Int: Double] = [:]
        func start(on s: Int) -> Double { max(est, avail[s] ?? 0) }
        /// A gang with a base runtime: the flow may split its work over its k GPUs.
        var splittableGang: Bool { k > 1 && fixed == nil && !cpu }
    }

    /// Up to 128 resources as bits.
    struct Mask: Hashable {
        var lo: UInt64 = 0, hi: UInt64 = 0
        mutating func insert(_ i: Int) { if i < 64 { lo |= 1 << UInt64(i) } else { hi |= 1 << UInt64(i - 64) } }
        func isSubset(of o: Mask) -> Bool { lo & ~o.lo == 0 && hi & ~o.hi == 0 }
        func union(_ o: Mask) -> Mask { Mask(lo: lo | o.lo, hi: hi | o.hi) }
        var members: [Int] {
            var out: [Int] = []
            for i in 0..<128 where (i < 64 ? lo >> UInt64(i) : hi >> UInt64(i - 64)) & 1 == 1 { out.append(i) }
            return out
        }
    }

    /// The largest makespan C at which the jobs provably cannot all finish, found by bisection
    /// above `from`. For a guess C, job j has C − est − tail seconds, so it may use only GPUs of
    /// weight ≥ base / (those seconds) (a gang: k of them on one node; a fixed or CPU job: any,
    /// if it fits at all). Then, as in 2 and 3, every set S of the GPUs the jobs are left with
    /// (and every union of two) must hold the work and resource-seconds of the jobs confined
    /// to it in the windows. Any C where that fails is below every schedule's makespan (no
    /// schedule, shared or serial, moves a job between GPUs or runs it faster than its GPU's
    /// weight), so the C returned is a valid bound whether or not the test is monotone in C.
    static func noMigrationBound(_ jobs: [SpeedJob], speeds: [Double], gpuCount: Int, from lo0: Double) -> (value: Double, binding: [Int]) {
        guard !jobs.isEmpty, speeds.count <= 128, lo0 > 0 else { return (0, []) }
        let byEst = jobs.indices.sorted { jobs[$0].est > jobs[$1].est }
        let byTail = jobs.indices.sorted { jobs[$0].tail > jobs[$1].tail }
        let bySize = jobs.indices.filter { jobs[$0].base != nil && !jobs[$0].cpu }.sorted { jobs[$0].base! > jobs[$1].base! }
        let hasGangs = jobs.contains(where: \.splittableGang)
        /// Whole jobs: a GPU of weight w finishes, between t and C − tail, only jobs whose
        /// runtimes there (base ÷ w, shared or not) add up to at most (C − t − tail) × w. So
        /// for every release threshold t and size threshold p, the GPU slots that the jobs of
        /// S released at ≥ t with base ≥ p need (k per gang) must not exceed what S's GPUs can
        /// hold of them, each GPU filled with the smallest of them first. Capacity alone lets
        /// three 30-minute runs on two GPUs end at 45 minutes; this says 60.
        func whole(_ c: Double, members: [Int], inside: [Bool]) -> Bool {
            guard !members.isEmpty else { return true }
            let fastest = members.map { speeds[$0] }.max()!
            // Jobs under 1/64 of C on the fastest GPU pack like sand; capacity covers them.
            let big = bySize.filter { inside[$0] && jobs[$0].base! / fastest >= c / 64 }
            guard big.count >= 2 else { return true }
            // GPUs alike in weight and in when the first of these jobs may start on them.
            struct Kind: Hashable { var w: Double; var from: Double }
            var mult: [Kind: Int] = [:]
            for r in members { mult[Kind(w: speeds[r], from: big.map { jobs[$0].avail[r] ?? 0 }.min()!), default: 0] += 1 }
            let releases = Set(big.map { jobs[$0].est }).sorted(by: >)
            var prefix: [Double] = [0]
            for t in releases {
                prefix.removeAll(keepingCapacity: true); prefix.append(0)
                var demand = 0, minTail = Double.infinity
                for (x, j) in big.enumerated() where jobs[j].est >= t {
                    let b = jobs[j].base!
                    prefix.append(prefix.last! + b)
                    demand += jobs[j].k; minTail = min(minTail, jobs[j].tail)
                    // Equal sizes count only once all of them are in.
                    if let nx = big[(x + 1)...].first(where: { jobs[$0].est >= t }), jobs[nx].base! == b { continue }
                    guard c - t - minTail > 0 else { return false }
                    let n = prefix.count - 1
                    var supply = 0
                    for (g, k) in mult {
                        // The most of these jobs one GPU of weight w holds: its m smallest fit.
                        let window = c - max(t, g.from) - minTail
                        guard window > 0 else { continue }
                        var lo = 0, hi = n
                        while lo < hi {
                            let m = (lo + hi + 1) / 2
                            if (prefix[n] - prefix[n - m]) / g.w <= window * (1 + 1e-12) { lo = m } else { hi = m - 1 }
                        }
                        supply += lo * k
                        if supply >= demand { break }
                    }
                    if demand > supply { return false }
                }
            }
            return true
        }
        /// The set S that fails at C, or nil when the test passes.
        func fails(_ c: Double) -> [Int]? {
            var masks: [Mask] = [], work: [Double] = [], occ: [Double] = [], pace: [Double] = []
            var allowed: [[Int]] = []
            masks.reserveCapacity(jobs.count); work.reserveCapacity(jobs.count); occ.reserveCapacity(jobs.count)
            pace.reserveCapacity(jobs.count); allowed.reserveCapacity(jobs.count)
            for j in jobs {
                let window = c - j.est - j.tail
                var m = Mask()
                var these: [Int] = []
                var minW = Double.infinity
                if let f = j.fixed {
                    guard f <= window * (1 + 1e-12) else { return [] }
                    var maxW = 0.0
                    for n in j.nodes {
                        let ok = n.filter { f <= c - j.start(on: $0) - j.tail + window * 1e-12 }
                        guard ok.count >= j.k else { continue }
                        for s in ok { m.insert(s); these.append(s); minW = min(minW, speeds[s]); maxW = max(maxW, speeds[s]) }
                    }
                    guard minW.isFinite else { return [] }
                    work.append(j.cpu ? f : Double(j.k) * f * minW); occ.append(Double(j.k) * f)
                    // A CPU job holds one slot; a fixed GPU job uses at most its k GPUs' weight per second.
                    pace.append(j.cpu ? 1 : Double(j.k) * maxW)
                } else {
                    guard window > 0 else { return [] }
                    var best = 0.0
                    for n in j.nodes {
                        let ok = n.filter { s in
                            let left = c - j.start(on: s) - j.tail
                            return left > 0 && speeds[s] >= j.base! / left * (1 - 1e-12)
                        }
                        guard ok.count >= j.k else { continue }
                        for s in ok { m.insert(s); these.append(s) }
                        best = max(best, ok.map { speeds[$0] }.sorted(by: >)[j.k - 1])
                    }
                    guard best > 0 else { return [] }
                    work.append(Double(j.k) * j.base!); occ.append(Double(j.k) * j.base! / best)
                    // A gang advances at its slowest GPU's weight: k × that at most, however it is split.
                    pace.append(Double(j.k) * best)
                }
                masks.append(m)
                allowed.append(these)
            }
            var distinct = Array(Set(masks))
            let base = distinct.count
            // Whole jobs are checked on the sets jobs are confined to; on unions of two they never bound more (200 seeds).
            let confined = Set(distinct)
            if base <= 60 { for a in 0..<base { for b in (a + 1)..<max(a + 1, base) { distinct.append(distinct[a].union(distinct[b])) } } }
            for s in Set(distinct) {
                let members = s.members
                var cap = 0.0, units = 0.0
                for r in members { cap += speeds[r]; units += r < gpuCount ? 1 : speeds[r] }
                guard cap > 0 else { continue }
                var inside = [Bool](repeating: false, count: jobs.count)
                var any = false
                for j in jobs.indices where masks[j].isSubset(of: s) { inside[j] = true; any = true }
                guard any else { continue }
                if sortedWindowBound(byEst: byEst, byTail: byTail, inside: inside, jobs: jobs, amount: work, capacity: cap) > c * (1 + 1e-9)
                    || sortedWindowBound(byEst: byEst, byTail: byTail, inside: inside, jobs: jobs, amount: occ, capacity: units) > c * (1 + 1e-9) {
                    return members
                }
                if confined.contains(s), !whole(c, members: members.filter { $0 < gpuCount }, inside: inside) { return members }
            }
            if let f = flowFails(c, jobs: jobs, allowed: allowed, work: work, pace: pace, speeds: speeds) { return f }
            // Again with each gang's work split over its members (two relaxations, each valid: C
            // fails if either fails). One flow cannot hold both a gang's total pace per interval
            // and its share per GPU.
            guard hasGangs else { return nil }
            return flowFails(c, jobs: jobs, allowed: allowed, work: work, pace: pace, speeds: speeds, splitGangs: true)
        }
        var lo = lo0, binding: [Int] = []
        guard let first = fails(lo * (1 + 1e-6)) else { return (0, []) }
        lo *= 1 + 1e-6; binding = first
        var hi = lo * 2
        var tries = 0
        while let b = fails(hi), tries < 20 { lo = hi; binding = b; hi *= 2; tries += 1 }
        for _ in 0..<18 {
            let mid = (lo + hi) / 2
            if let b = fails(mid) { lo = mid; binding = b } else { hi = mid }
        }
        return (lo, binding)
    }

    /// Parts 2 and 4 for every set of resources at once, and per job (7): a max flow from the
    /// jobs to (resource, time interval) pairs. For a guess C, job j must receive its work
    /// between its earliest start and C − its tail, only from the resources left to it (each
    /// from when it may start there), at most at its own pace per second; a resource gives
    /// at most its weight per second. If the most that can flow is less than the jobs' work,
    /// no schedule ends by C. The sets checked above (each class and unions of two) are the
    /// cuts of this flow that are cheap to enumerate; the flow finds the others (three classes
    /// that share GPUs pairwise, or jobs whose windows lie inside both a release and a tail
    /// threshold).
    ///
    /// `splitGangs`: a gang (base runtime, k GPUs) instead takes at most work / k from any one
    /// resource, at most its per-member pace (pace / k) per second there: each of its k GPUs
    /// gives it exactly its base runtime's units, whatever the GPU's weight (the faster ones idle
    /// at the slowest one's pace). The flow without it lets a gang draw all its work from its
    /// fastest GPU; the caller runs both.
    ///
    /// Every simplification errs towards "feasible": time is cut at up to `maxPoints` of the
    /// jobs' own window ends, and a job may use any interval that its window touches, in
    /// full; jobs alike in windows and resources pool their work and their pace; demands are
    /// rounded down and capacities up to thousandths. So C is reported infeasible only when it
    /// is, and the bound stays valid.
    static func flowFails(_ c: Double, jobs: [SpeedJob], allowed: [[Int]], work: [Double], pace: [Double], speeds: [Double],
                          maxPoints: Int = 128, splitGangs: Bool = false) -> [Int]? {
        guard !jobs.isEmpty else { return nil }
        // Thousandths, unless the largest total a flow can carry would pass 1e15 units: Int64 traps
        // past 9.2e18 (a GPU of weight 10 000 and billion-second jobs reached it). A coarser unit
        // keeps the same rounding directions, so the bound stays valid.
        var speedSum = 0.0, paceSum = 0.0, workSum = 0.0
        for v in speeds { speedSum += v }
        for v in pace { paceSum += v }
        for v in work { workSum += v }
        let scale = min(1000.0, 1e15 / max(1, workSum, (speedSum + paceSum) * max(c, 1)))
        var cuts = Set<Double>()
        for (x, j) in jobs.enumerated() { cuts.insert(j.est); cuts.insert(c - j.tail); for r in allowed[x] { cuts.insert(j.start(on: r)) } }
        var points = cuts.filter { $0 < c }.sorted()
        points.append(c)
        if points.count > maxPoints {
            // Keep evenly spread ones; the windows widen to the kept points (a relaxation).
            let n = points.count
            points = (0..<maxPoints).map { points[$0 * (n - 1) / (maxPoints - 1)] }
        }
        let intervals = points.count - 1
        guard intervals > 0 else { return nil }
        /// The first interval ending after t, and the last one starting before t.
        func firstEndingAfter(_ t: Double) -> Int {
            var lo = 0, hi = intervals
            while lo < hi { let m = (lo + hi) / 2; if points[m + 1] > t { hi = m } else { lo = m + 1 } }
            return lo
        }
        func lastStartingBefore(_ t: Double) -> Int {
            var lo = -1, hi = intervals - 1
            while lo < hi { let m = (lo + hi + 1) / 2; if points[m] < t { lo = m } else { hi = m - 1 } }
            return lo
        }
        // Pool jobs with the same last interval and the same first interval on each resource.
        var classOf: [[Int]: Int] = [:]
        var classes: [(last: Int, from: [(r: Int, first: Int)], work: Double, pace: Double, k: Int)] = []
        for (x, j) in jobs.enumerated() where work[x] > 0 {
            let last = lastStartingBefore(c - j.tail)
            let from = allowed[x].sorted().map { (r: $0, first: firstEndingAfter(j.start(on: $0))) }
            // A gang (base runtime) is split across its members only when asked; it pools with its own k.
            let k = splitGangs && j.splittableGang ? j.k : 1
            var key = [last, k]; for f in from { key.append(f.r); key.append(f.first) }
            if let i = classOf[key] { classes[i].work += work[x]; classes[i].pace += pace[x] } else {
                classOf[key] = classes.count; classes.append((last, from, work[x], pace[x], k))
            }
        }
        var g = MaxFlow(nodes: 2)
        let source = 0, sink = 1
        var slotNode: [Int: Int] = [:]   // resource × intervals + interval → node
        /// The node of resource r in interval i, made (with its capacity to the sink) on first use.
        func slot(_ r: Int, _ i: Int) -> Int {
            let key = r * intervals + i
            if let s = slotNode[key] { return s }
            let s = g.addNode(); slotNode[key] = s
            g.addEdge(s, sink, Int64((speeds[r] * (points[i + 1] - points[i]) * scale).rounded(.up)))
            return s
        }
        var demand: Int64 = 0
        for cl in classes {
            let d = Int64((cl.work * scale).rounded(.down))
            guard d > 0, cl.last >= 0 else { continue }
            demand += d
            let node = g.addNode()
            g.addEdge(source, node, d)
            if cl.k > 1 {
                // Each of a gang's k GPUs gives it exactly its base runtime's units (the fast ones
                // idle at the slowest one's pace), so one resource gives it at most work / k, at most
                // at its per-member pace (pace / k) per second.
                let perResource = Int64((cl.work / Double(cl.k) * scale).rounded(.up))
                for f in cl.from where f.first <= cl.last {
                    let member = g.addNode()
                    g.addEdge(node, member, perResource)
                    for i in f.first...cl.last {
                        let length = points[i + 1] - points[i]
                        g.addEdge(member, slot(f.r, i), Int64((cl.pace / Double(cl.k) * length * scale).rounded(.up)))
                    }
                }
                continue
            }
            for i in 0...cl.last {
                let open = cl.from.filter { $0.first <= i }
                guard !open.isEmpty else { continue }
                let length = points[i + 1] - points[i]
                let mid = g.addNode()
                g.addEdge(node, mid, Int64((cl.pace * length * scale).rounded(.up)))
                for f in open { g.addEdge(mid, slot(f.r, i), MaxFlow.unbounded) }
            }
        }
        guard demand > 0 else { return nil }
        if g.run(from: source, to: sink, limit: demand) >= demand { return nil }
        // The resources whose intervals stay on the source side of the cut are the ones too full.
        let side = g.reachable(from: source)
        return Set(slotNode.filter { side[$0.value] }.map { $0.key / intervals }).sorted()
    }

    /// `windowBound` over the jobs marked `inside`, in orders sorted once for every set.
    static func sortedWindowBound(byEst: [Int], byTail: [Int], inside: [Bool], jobs: [SpeedJob], amount: [Double], capacity cap: Double) -> Double {
        var best = 0.0
        var w = 0.0, minTail = Double.infinity
        var last = -1
        for j in byEst where inside[j] {
            if last >= 0, jobs[last].est != jobs[j].est, w > 0 { best = max(best, jobs[last].est + w / cap + minTail) }
            w += amount[j]; minTail = min(minTail, jobs[j].tail); last = j
        }
        if last >= 0, w > 0 { best = max(best, jobs[last].est + w / cap + minTail) }
        w = 0; var minEst = Double.infinity; last = -1
        for j in byTail where inside[j] {
            if last >= 0, jobs[last].tail != jobs[j].tail, w > 0 { best = max(best, minEst + w / cap + jobs[last].tail) }
            w += amount[j]; minEst = min(minEst, jobs[j].est); last = j
        }
        if last >= 0, w > 0 { best = max(best, minEst + w / cap + jobs[last].tail) }
        return best
    }

    /// Jobs confined to resources of capacity `cap`: for every release threshold t, the jobs
    /// that cannot start before t must all be done by the makespan minus the shortest of their
    /// tails, so makespan ≥ t + work(est ≥ t) / cap + min tail; and for every tail threshold τ,
    /// the jobs with tails ≥ τ start no earlier than the earliest of them and end by makespan − τ.
    /// The whole set (t = earliest start) is the old bound; later thresholds catch late arrivals
    /// and early-finishing chains, which the whole set averages away.
    static func windowBound(_ jobs: [(est: Double, work: Double, tail: Double)], capacity cap: Double) -> Double {
        var best = 0.0
        // Release side: latest first, accumulating work and the smallest tail.
        var byEst = jobs.sorted { $0.est > $1.est }
        var w = 0.0, minTail = Double.infinity
        for j in byEst.indices {
            w += byEst[j].work; minTail = min(minTail, byEst[j].tail)
            // Several jobs may share one release time: the bound holds only once all of them count.
            if j + 1 < byEst.count, byEst[j + 1].est == byEst[j].est { continue }
            if w > 0 { best = max(best, byEst[j].est + w / cap + minTail) }
        }
        // Tail side: longest tail first, accumulating work and the earliest start.
        byEst = jobs.sorted { $0.tail > $1.tail }
        w = 0; var minEst = Double.infinity
        for j in byEst.indices {
            w += byEst[j].work; minEst = min(minEst, byEst[j].est)
            if j + 1 < byEst.count, byEst[j + 1].tail == byEst[j].tail { continue }
            if w > 0 { best = max(best, minEst + w / cap + byEst[j].tail) }
        }
        return best
    }
}
