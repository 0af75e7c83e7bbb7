import Foundation

/// A schedule searched for offline, knowing every arrival and every true runtime (the jitter the
/// router never sees included): a makespan that some schedule in the simulator's model reaches.
/// Every schedule ends at or after the lower bound, so bound ≤ optimum ≤ this plan: the plan
/// tells how much of a policy's distance from the bound is the bound's own slack and how much is
/// the policy's (`hydra simulate --offline-plan`). A plan that ends before the bound is a bug in
/// one of the two (`OfflinePlanTests`).
///
/// Each GPU and each CPU slot runs one job at a time (in the simulator's model two jobs side by
/// side never finish sooner than one after the other); a gang takes k GPUs of one node for its
/// runtime at the slowest one's pace; a job whose VRAM needs a resident gone starts after it
/// leaves, and only GPUs its peak fits on take it (`LowerBound.facts`, the same facts the bound
/// reads). A serial schedule-generation scheme places the jobs in a list order, each where it
/// finishes soonest, into the gaps left by the jobs placed before it (so a job late in the list
/// may still start early); a local search moves jobs of the critical chain forward in the list
/// and keeps every order that ends no later.
public enum OfflinePlan {
    /// Its row in `hydra simulate` sweeps.
    public static let rowName = "offline-plan"

    public struct Result: Sendable, Equatable {
        public var makespanS: Double
        /// The list orders evaluated.
        public var evaluated: Int
        /// The order the search began from (`given`: the caller's; `hydra`: the policy run's start times; `longest-path`; `release`).
        public var start: String
        public var startMakespanS: Double
        /// Per job (the simulator's job order): where it starts and ends; nil where no resource takes it.
        var placements: [Placement?] = []
        /// The list order that gave it.
        var order: [Int] = []
    }

    struct Placement: Equatable {
        var start: Double
        var end: Double
        /// GPU slots, or one CPU resource (`gpuCount` + machine).
        var resources: [Int]
    }

    /// What the schedule-generation scheme needs, built once per scenario.
    struct Instance {
        var facts: [LowerBound.JobFacts?]
        var included: [Bool]
        var deps: [[Int]]
        var dependents: [[Int]]
        var submit: [Double]
        var gpuCount: Int
        var weight: [Double]
        /// Per node, its CPU slots as resources (indices ≥ gpuCount).
        var cpuMachines: [[Int]]
        var resourceCount: Int
        /// Longest chain of fastest runtimes after each job.
        var tail: [Double]
        var fastest: [Double]
        /// GPU UUID → slot (resource index), and each slot's node.
        var slotOfUUID: [String: Int]
        var nodeOfSlot: [Int]

        init(workload: Workload, jobs: [Simulator.SimJob], snapshot: ClusterSnapshot) {
            let (state, _, facts) = LowerBound.facts(workload: workload, jobs: jobs, snapshot: snapshot)
            self.facts = facts
            gpuCount = state.gpus.count
            slotOfUUID = state.uuidToSlot
            nodeOfSlot = state.gpus.map(\.node)
            weight = state.gpus.map(\.weight)
            var next = gpuCount
            cpuMachines = snapshot.nodes.map { n in
                let r = Array(next..<(next + max(0, n.cpuSlots))); next += r.count; return r
            }
            resourceCount = next
            deps = jobs.map(\.deps)
            dependents = jobs.map(\.dependents)
            submit = jobs.map(\.submitAt)
            var inc = [Bool](repeating: false, count: jobs.count)
            var fast = [Double](repeating: 0, count: jobs.count)
            // Dependencies point to earlier jobs: one pass decides who is in (every dependency in too).
            for j in jobs.indices {
                guard let f = facts[j], jobs[j].deps.allSatisfy({ inc[$0] }) else { continue }
                inc[j] = true
                fast[j] = f.cpu ? f.runtime(pace: 1) : f.nodes.map { f.runtime(pace: $0.pace) }.min()!
            }
            included = inc
            fastest = fast
            // A job left out has no runtime here (0), nor any dependents that are in.
            tail = DependencyTails.compute(dependsOn: deps, ownS: fast)
        }

        /// `jobs` by the longest chain of fastest runtimes from each (its own included), then by submit time.
        func longestPathFirst(_ jobs: [Int]) -> [Int] {
            jobs.sorted { (-(tail[$0] + fastest[$0]), submit[$0], $0) < (-(tail[$1] + fastest[$1]), submit[$1], $1) }
        }
    }

    /// Busy intervals per resource, sorted by start (they never overlap).
    struct Timeline {
        var starts: [[Double]]
        var ends: [[Double]]
        var owners: [[Int]]
        init(_ n: Int) { starts = Array(repeating: [], count: n); ends = starts; owners = Array(repeating: [], count: n) }

        /// The earliest start ≥ t at which resource r is free for d seconds.
        func earliest(_ r: Int, from t0: Double, for d: Double) -> Double {
            let s = starts[r], e = ends[r]
            var lo = 0, hi = e.count
            while lo < hi { let m = (lo + hi) / 2; if e[m] <= t0 + 1e-9 { lo = m + 1 } else { hi = m } }
            var t = t0
            while lo < s.count {
                if s[lo] >= t + d - 1e-9 { return t }
                t = max(t, e[lo]); lo += 1
            }
            return t
        }

        /// The earliest start ≥ t at which all of `rs` are free together for d seconds.
        func earliest(_ rs: [Int], from t0: Double, for d: Double) -> Double {
            var t = t0
            var moved = true
            while moved {
                moved = false
                for r in rs {
                    let u = earliest(r, from: t, for: d)
                    if u > t + 1e-9 { t = u; moved = true }
                }
            }
            return t
        }

        mutating func insert(_ r: Int, _ s: Double, _ e: Double, job: Int) {
            var lo = 0, hi = starts[r].count
            while lo < hi { let m = (lo + hi) / 2; if starts[r][m] < s { lo = m + 1 } else { hi = m } }
            starts[r].insert(s, at: lo); ends[r].insert(e, at: lo); owners[r].insert(job, at: lo)
        }

        /// The job on r that ends at t, if any.
        func owner(_ r: Int, endingAt t: Double) -> Int? {
            for (i, e) in ends[r].enumerated() where abs(e - t) <= 1e-6 { return owners[r][i] }
            return nil
        }
    }

    /// One schedule: jobs taken in `rank` order (lowest first) among those whose dependencies are placed.
    /// `include` (default: every job that can run) picks the jobs to place; `preplaced` jobs hold
    /// their resources as given (running ones), and nothing new starts before `now`. A dependency
    /// that is neither included nor preplaced is done.
    static func schedule(_ inst: Instance, rank: [Int], include: [Bool]? = nil, preplaced: [Int: Placement] = [:], now: Double = 0)
        -> (makespan: Double, placements: [Placement?], readyDep: [Int], timeline: Timeline, ends: Double) {
        let n = inst.facts.count
        let inc = include ?? inst.included
        var tl = Timeline(inst.resourceCount)
        var plc = [Placement?](repeating: nil, count: n)
        for (j, p) in preplaced {
            plc[j] = p
            for r in p.resources { tl.insert(r, p.start, p.end, job: j) }
        }
        var readyDep = [Int](repeating: -1, count: n)
        var waiting = [Int](repeating: 0, count: n)
        var heap = MinHeap()
        for j in 0..<n where inc[j] && plc[j] == nil {
            waiting[j] = inst.deps[j].reduce(0) { $0 + (inc[$1] && plc[$1] == nil ? 1 : 0) }
            if waiting[j] == 0 { heap.push(rank[j], j) }
        }
        var makespan = 0.0, ends = 0.0
        while let j = heap.pop() {
            let f = inst.facts[j]!
            var ready = max(now, inst.submit[j])
            for d in inst.deps[j] { if let e = plc[d]?.end, e > ready { ready = e; readyDep[j] = d } }
            var best: Placement?
            var bestWeight = Double.infinity
            func consider(_ rs: [Int], _ d: Double, from t0: Double, weight w: Double) {
                let s = rs.count == 1 ? tl.earliest(rs[0], from: t0, for: d) : tl.earliest(rs, from: t0, for: d)
                let e = s + d
                // Soonest end; among equal ends the slower resources, to leave the fast ones free.
                if best == nil || e < best!.end - 1e-9 || (e <= best!.end + 1e-9 && w < bestWeight) {
                    best = Placement(start: s, end: e, resources: rs); bestWeight = w
                }
            }
            if f.cpu {
                for node in f.cpuNodes { for m in inst.cpuMachines[node] { consider([m], f.runtime(pace: 1), from: ready, weight: 0) } }
            } else if f.k == 1 {
                for (slots, _) in f.nodes {
                    for s in slots {
                        consider([s], f.runtime(pace: inst.weight[s]), from: max(ready, f.avail[s] ?? 0), weight: inst.weight[s])
                    }
                }
            } else {
                for (slots, _) in f.nodes {
                    for combo in combinations(slots, f.k) {
                        let pace = combo.map { inst.weight[$0] }.min()!
                        let from = combo.reduce(ready) { max($0, f.avail[$1] ?? 0) }
                        consider(combo, f.runtime(pace: pace), from: from, weight: combo.reduce(0) { $0 + inst.weight[$1] })
                    }
                }
            }
            // No resource at all cannot happen: facts name at least one node for every included job.
            guard let p = best else { continue }
            plc[j] = p
            for r in p.resources { tl.insert(r, p.start, p.end, job: j) }
            makespan = max(makespan, p.end); ends += p.end
            for c in inst.dependents[j] where inc[c] && preplaced[c] == nil {
                waiting[c] -= 1
                if waiting[c] == 0 { heap.push(rank[c], c) }
            }
        }
        return (makespan, plc, readyDep, tl, ends)
    }

    /// The jobs that make the makespan: from the last to end, back through what each waited for
    /// (the dependency that released it, or the job that held its resource until it started).
    static func criticalChain(_ inst: Instance, _ plc: [Placement?], _ readyDep: [Int], _ tl: Timeline) -> [Int] {
        guard var x = plc.indices.filter({ plc[$0] != nil }).max(by: { plc[$0]!.end < plc[$1]!.end }) else { return [] }
        var chain = [x]
        var seen: Set<Int> = [x]
        while chain.count < plc.count {
            let p = plc[x]!
            var next: Int?
            for r in p.resources { if let o = tl.owner(r, endingAt: p.start) { next = o; break } }
            if next == nil, readyDep[x] >= 0, abs(plc[readyDep[x]]!.end - p.start) <= 1e-6 { next = readyDep[x] }
            guard let y = next, seen.insert(y).inserted else { break }
            chain.append(y); x = y
        }
        return chain
    }

    /// Searches list orders for `evaluations` schedules, starting from the best of: `startOrder`
    /// (where given; jobs it leaves out follow, longest path first), the start times of a policy
    /// run (`startTimes`, where given), the longest path after each job first, and release order.
    /// `include`, `preplaced` and `now` as for `schedule`.
    static func search(_ inst: Instance, startTimes: [Double?]?, evaluations: Int, seed: UInt64, include: [Bool]? = nil,
                       preplaced: [Int: Placement] = [:], now: Double = 0, startOrder: [Int]? = nil) -> Result {
        let n = inst.facts.count
        let inc = include ?? inst.included
        let jobs = (0..<n).filter { inc[$0] && preplaced[$0] == nil }
        guard !jobs.isEmpty else { return Result(makespanS: 0, evaluated: 0, start: "none", startMakespanS: 0) }
        func rank(of order: [Int]) -> [Int] {
            var r = [Int](repeating: Int.max, count: n)
            for (i, j) in order.enumerated() { r[j] = i }
            return r
        }
        var starts: [(String, [Int])] = []
        if let given = startOrder {
            var seen = Set<Int>()
            var o = given.filter { inc[$0] && preplaced[$0] == nil && seen.insert($0).inserted }
            o += inst.longestPathFirst(jobs.filter { !seen.contains($0) })
            starts.append(("given", o))
        }
        if let st = startTimes {
            starts.append(("hydra", jobs.sorted { (st[$0] ?? .infinity, $0) < (st[$1] ?? .infinity, $1) }))
        }
        starts.append(("longest-path", inst.longestPathFirst(jobs)))
        starts.append(("release", jobs.sorted { (inst.submit[$0], -inst.tail[$0], $0) < (inst.submit[$1], -inst.tail[$1], $1) }))
        var evaluated = 0
        var order: [Int] = [], name = "", current = Double.infinity
        var cur: (makespan: Double, placements: [Placement?], readyDep: [Int], timeline: Timeline, ends: Double)?
        for (label, o) in starts {
            let s = schedule(inst, rank: rank(of: o), include: include, preplaced: preplaced, now: now); evaluated += 1
            if s.makespan < current - 1e-9 { current = s.makespan; order = o; name = label; cur = s }
        }
        let startMakespan = current
        var rng = SplitMix64(seed: seed)
        func uniform() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        var pos = rank(of: order)
        while evaluated < evaluations, let c = cur {
            let chain = criticalChain(inst, c.placements, c.readyDep, c.timeline).filter { pos[$0] != Int.max }
            var o = order
            let u = uniform()
            if u < 0.6, !chain.isEmpty {
                // A job of the chain earlier in the list, mostly by a little.
                let j = chain[Int(uniform() * Double(chain.count))]
                let p = pos[j]
                guard p > 0 else { evaluated += 1; continue }
                let to = max(0, p - 1 - Int(uniform() * uniform() * Double(p)))
                o.remove(at: p); o.insert(j, at: to)
            } else if u < 0.85, chain.count > 1 {
                // A job that held a chain job's resource later in the list.
                let j = chain[1 + Int(uniform() * Double(chain.count - 1))]
                let p = pos[j]
                let room = o.count - 1 - p
                guard room > 0 else { evaluated += 1; continue }
                let to = min(o.count - 1, p + 1 + Int(uniform() * uniform() * Double(room)))
                o.remove(at: p); o.insert(j, at: to)
            } else {
                let a = Int(uniform() * Double(o.count)), b = Int(uniform() * Double(o.count))
                o.swapAt(a, b)
            }
            let r = rank(of: o)
            let s = schedule(inst, rank: r, include: include, preplaced: preplaced, now: now); evaluated += 1
            // Among orders that end as late, the one whose jobs end sooner in sum: a plateau walk
            // towards schedules with room before the last job.
            if s.makespan < c.makespan - 1e-9 || (s.makespan <= c.makespan + 1e-9 && s.ends <= c.ends * (1 + 1e-9)) {
                order = o; pos = r; cur = s
            }
        }
        return Result(makespanS: cur?.makespan ?? 0, evaluated: evaluated, start: name, startMakespanS: startMakespan,
                      placements: cur?.placements ?? [], order: order)
    }

    /// Every k-subset of `xs`, in order.
    static func combinations(_ xs: [Int], _ k: Int) -> [[Int]] {
        guard k > 0 else { return [[]] }
        guard xs.count >= k else { return [] }
        if k == xs.count { return [xs] }
        let head = xs[0], rest = Array(xs.dropFirst())
        return combinations(rest, k - 1).map { [head] + $0 } + combinations(rest, k)
    }

    /// What is wrong with a plan, or nil: a resource running two jobs at once, a job before its
    /// submit time, a dependency or a resident that leaves, on resources its facts do not give
    /// it, or shorter than its runtime there.
    static func violation(_ inst: Instance, _ plc: [Placement?]) -> String? {
        var busy = [[(Double, Double, Int)]](repeating: [], count: inst.resourceCount)
        for (j, p) in plc.enumerated() {
            guard inst.included[j] else { continue }
            guard let p, let f = inst.facts[j] else { return "job \(j) is not placed" }
            if p.start < inst.submit[j] - 1e-9 { return "job \(j) starts before its submit time" }
            for d in inst.deps[j] where plc[d]!.end > p.start + 1e-9 { return "job \(j) starts before dependency \(d) ends" }
            let need: Double
            if f.cpu {
                guard p.resources.count == 1, f.cpuNodes.contains(where: { inst.cpuMachines[$0].contains(p.resources[0]) }) else {
                    return "job \(j) is not on a CPU slot of its nodes"
                }
                need = f.runtime(pace: 1)
            } else {
                guard p.resources.count == f.k, Set(p.resources).count == f.k,
                      f.nodes.contains(where: { n in p.resources.allSatisfy(n.slots.contains) }) else {
                    return "job \(j) is not on \(f.k) GPUs of one node it may use"
                }
                for r in p.resources where p.start < (f.avail[r] ?? 0) - 1e-9 { return "job \(j) starts before a resident leaves GPU \(r)" }
                need = f.runtime(pace: p.resources.map { inst.weight[$0] }.min()!)
            }
            if p.end - p.start < need - 1e-6 { return "job \(j) runs \(p.end - p.start) s, under its \(need) s" }
            for r in p.resources { busy[r].append((p.start, p.end, j)) }
        }
        for (r, list) in busy.enumerated() {
            let s = list.sorted { $0.0 < $1.0 }
            for i in s.indices.dropFirst() where s[i].0 < s[i - 1].1 - 1e-6 {
                return "jobs \(s[i - 1].2) and \(s[i].2) overlap on resource \(r)"
            }
        }
        return nil
    }

    /// A binary min-heap of (rank, job).
    struct MinHeap {
        var items: [(Int, Int)] = []
        mutating func push(_ key: Int, _ v: Int) {
            items.append((key, v))
            var i = items.count - 1
            while i > 0 {
                let p = (i - 1) / 2
                guard items[i].0 < items[p].0 else { break }
                items.swapAt(i, p); i = p
            }
        }
        mutating func pop() -> Int? {
            guard let top = items.first else { return nil }
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var m = i
                    if l < items.count, items[l].0 < items[m].0 { m = l }
                    if r < items.count, items[r].0 < items[m].0 { m = r }
                    guard m != i else { break }
                    items.swapAt(i, m); i = m
                }
            }
            return top.1
        }
    }
}

extension Simulator {
    /// The offline plan of this scenario (`OfflinePlan`), searched over `evaluations` list orders,
    /// starting from the start times of `from` (a run of some policy on this simulator) where given.
    public func offlinePlan(evaluations: Int, from report: SimulationReport? = nil) -> OfflinePlan.Result {
        let jobs = buildJobs()
        let inst = OfflinePlan.Instance(workload: workload, jobs: jobs, snapshot: baseSnapshot())
        let starts = report.map { r in r.timeline.map(\.startS) }
        return OfflinePlan.search(inst, startTimes: starts, evaluations: evaluations, seed: seed)
    }
}
