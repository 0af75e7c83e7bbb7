import Foundation

/// What a simulation run reports.
public struct SimulationReport: Sendable, Equatable, Codable {
    public struct GPUUsage: Sendable, Equatable, Codable {
        public var node: String
        public var index: Int
        public var name: String
        public var busyFraction: Double
        enum CodingKeys: String, CodingKey { case node, index, name, busyFraction = "busy_fraction" }
    }
    public struct NeverRan: Sendable, Equatable, Codable {
        public var job: String
        public var reason: String
    }

    public var policy: String
    public var makespanS: Double
    public var lowerBoundS: Double
    public var lowerBound: LowerBound.Parts
    public var jobs: Int
    public var completed: Int
    public var waitMeanS: Double
    public var waitP95S: Double
    /// p95 wait of the jobs above the workload's lowest priority (the interactive ones); nil if none.
    public var waitP95PriorityS: Double?
    /// The jobs of the highest priority in the workload (when above the lowest): the interactive ones.
    public var topPriority: TierStats?
    public var gpus: [GPUUsage]
    public var neverRan: [NeverRan]
    public var oomFailures: Int
    public var routerPasses: Int
    /// Per job: when it became ready, started (last attempt) and finished, and where.
    public var timeline: [JobTiming]
    /// For the jobs named in `Simulator.trace`: each change of the router's reason while they
    /// wait, and each start (`hydra simulate --trace`).
    public var trace: [TraceEvent] = []

    /// One router decision about a traced job: `event` is the reason it waits, or where it starts.
    public struct TraceEvent: Sendable, Equatable, Codable {
        public var timeS: Double
        public var job: String
        public var event: String
        public init(timeS: Double, job: String, event: String) { self.timeS = timeS; self.job = job; self.event = event }
        enum CodingKeys: String, CodingKey { case job, event, timeS = "time_s" }
    }

    public struct TierStats: Sendable, Equatable, Codable {
        public var priority: Int
        public var jobs: Int
        public var waitP95S: Double
        /// Those that found room on some GPU they may use when they became ready, and their p95 wait:
        /// the jobs a router could have started at once without preempting anything.
        public var withRoomJobs: Int
        public var withRoomWaitP95S: Double?
        /// Median runtime of these jobs where they ran, at full speed (what "2× its runtime" compares with).
        public var runtimeMedianS: Double
        /// p95 over these jobs of (finish − ready) ÷ their full-speed runtime where they ran: how much
        /// longer than alone on that GPU a request took, waiting and sharing included (1 = no delay).
        public var stretchP95: Double?
        /// p95 over these jobs of (finish − ready) ÷ their runtime alone on the fastest GPU they may
        /// use: what the person who sent the request waited, against the best any placement could
        /// give (a request sent to an idle slow GPU has stretch 1 but latency above 1).
        public var latencyP95: Double?
        enum CodingKeys: String, CodingKey {
            case priority, jobs, waitP95S = "wait_p95_s", runtimeMedianS = "runtime_median_s", stretchP95 = "stretch_p95"
            case withRoomJobs = "with_room_jobs", withRoomWaitP95S = "with_room_wait_p95_s", latencyP95 = "latency_p95"
        }
    }

    public struct JobTiming: Sendable, Equatable, Codable {
        public var job: String
        public var readyS: Double?
        public var startS: Double?
        public var finishS: Double?
        public var node: String?
        public var gpus: [Int]
    }

    /// The `--json` shape of `hydra simulate`.
    public struct Summary: Codable, Sendable, Equatable {
        public var policy: String
        public var makespanS: Double
        public var lowerBoundS: Double
        public var jobs: Int
        public var waitP95S: Double
        public var gpus: [GPUUsage]
        public var neverRan: [NeverRan]
        /// Only with `--trace` (absent otherwise).
        public var trace: [TraceEvent]?
        enum CodingKeys: String, CodingKey {
            case policy, jobs, gpus, trace
            case makespanS = "makespan_s", lowerBoundS = "lower_bound_s", waitP95S = "wait_p95_s", neverRan = "never_ran"
        }
    }

    public var summary: Summary {
        Summary(policy: policy, makespanS: makespanS, lowerBoundS: lowerBoundS, jobs: jobs, waitP95S: waitP95S, gpus: gpus,
                neverRan: neverRan, trace: trace.isEmpty ? nil : trace)
    }
}

/// Discrete-event simulation of the cluster running the real router. Jobs are ready when
/// their dependencies are done; the router runs at every arrival and completion; a GPU
/// shares its compute equally among the jobs on it (a gang moves at the pace of its most
/// shared member); VRAM use is the resident services plus each running job's peak.
public struct Simulator: Sendable {
    public var cluster: ClusterConfig
    public var workload: Workload
    public var seed: UInt64
    /// Job IDs whose every wait reason and start the report lists (`SimulationReport.trace`).
    /// A pass that meets one of them writes its reason texts, which the sweep otherwise skips.
    public var trace: Set<String> = []
    /// Batch jobs follow a plan instead of the router's pass (`PlanAhead`); the report's policy is `plan-ahead`.
    public var planAhead: PlanAhead?

    public init(cluster: ClusterConfig, workload: Workload, seed: UInt64 = 1) {
        self.cluster = cluster; self.workload = workload; self.seed = seed
    }

    /// Every job's ID, as the report and `trace` name them (group name-index).
    public var jobIDs: [String] { buildJobs().map(\.job.id) }

    /// One simulated job, with the truth the router does not see (jitter, real peak VRAM).
    struct SimJob {
        var job: RouterJob
        var deps: [Int]
        var dependents: [Int] = []
        var waitingOn: Int
        var submitAt: Double
        var baseS: Double?          // weight-1 runtime with jitter; nil: fixed
        var fixedS: Double?
        var peakBytes: UInt64?
        var readyAt: Double?
        var firstStart: Double?
        var finishedAt: Double?
        var lastStart: Double?
        /// Runtime of the last attempt at full speed on its GPUs.
        var lastWork: Double?
        var placedOn: (node: String, gpus: [Int])?
        /// Top-priority jobs: when they became ready, some GPU they may use had room for them
        /// (a start without preempting anything was possible).
        var roomAtReady: Bool?
    }

    struct Running {
        var job: Int
        var node: Int
        var gpus: [Int]
        var reserved: UInt64
        var usage: UInt64
        var workLeft: Double
        var rate: Double = 1
        var startedAt: Double
        var expectedRuntime: Double
        var failsOOM: Bool
    }

    /// Builds the jobs of the workload (deterministic for a seed).
    func buildJobs() -> [SimJob] {
        var rng = SplitMix64(seed: seed)
        var jobs: [SimJob] = []
        var groupRange: [String: Range<Int>] = [:]
        let t0 = Date(timeIntervalSince1970: 0)
        for g in workload.groups {
            let start = jobs.count
            let base = workload.baseRuntime(of: g, cluster: cluster)
            for i in 0..<g.count {
                let submit = g.submitAtS + Double(i) * g.everyS
                var spec: [String: JSONValue] = [:]
                if let m = g.model { spec["model"] = .string(m) }
                if let s = g.service { spec["service"] = .string(s) }
                if let b = base { spec["base_runtime_s"] = .number(b) }
                if let d = g.durationS { spec["duration_s"] = .number(d) }
                let factor = g.jitter > 0 ? 1 + g.jitter * (Double(rng.next() >> 11) / Double(1 << 53) * 2 - 1) : 1
                var deps: [Int] = []
                for a in g.after {
                    let r = groupRange[a]!
                    guard !r.isEmpty, g.count > 0 else { continue }
                    // Proportional: job i of n waits for parents [i·m/n, (i+1)·m/n) of m (at least one).
                    let lo = i * r.count / g.count
                    let hi = max(lo + 1, (i + 1) * r.count / g.count)
                    deps += (lo..<min(hi, r.count)).map { r.lowerBound + $0 }
                }
                for a in g.afterAll { deps += Array(groupRange[a]!) }
                let job = RouterJob(id: "\(g.name)-\(i)", batchID: g.batch ?? g.name, kind: g.kind, spec: .object(spec),
                                    vramRequestBytes: g.vram?.bytes, gpusRequested: g.gpus, priority: g.priority,
                                    submittedAt: t0.addingTimeInterval(submit), constraints: g.constraints)
                jobs.append(SimJob(job: job, deps: deps, waitingOn: deps.count, submitAt: submit,
                                   baseS: base.map { $0 * factor }, fixedS: g.durationS.map { $0 * factor },
                                   peakBytes: g.peakVRAM?.bytes ?? g.vram?.bytes))
            }
            groupRange[g.name] = start..<jobs.count
        }
        for j in jobs.indices { for d in jobs[j].deps { jobs[d].dependents.append(j) } }
        // What the coordinator knows: the chain of work behind each job, from the spec (no
        // jitter), as it stores it at submit (`DependencyTails`).
        let tails = DependencyTails.compute(dependsOn: jobs.map(\.deps),
                                            ownS: jobs.map { DependencyTails.ownS(kind: $0.job.kind, spec: $0.job.spec, cpuOnly: $0.job.cpuOnly) })
        for j in jobs.indices { jobs[j].job.tailS = tails[j] }
        // Every dependency's ID, as the coordinator's rows carry `depends_on`: the done ones name no pending job.
        for j in jobs.indices where !jobs[j].deps.isEmpty { jobs[j].job.waitsOn = jobs[j].deps.map { jobs[$0].job.id } }
        return jobs
    }

    /// The cluster as the simulation starts: every node up, resident services loaded.
    func baseSnapshot() -> ClusterSnapshot {
        var cfg = cluster
        for r in workload.resident where r.untilS == nil {
            guard let ni = cfg.nodes.firstIndex(where: { $0.name == r.node }), r.gpu < cfg.nodes[ni].gpus.count else { continue }
            let g = cfg.nodes[ni].gpus[r.gpu]
            cfg.nodes[ni].gpus[r.gpu].baseline = ByteCount((g.baseline?.bytes ?? 0) + r.vram.bytes)
            if let m = r.model { cfg.nodes[ni].gpus[r.gpu].models = (g.models ?? []) + [m] }
        }
        let live = Dictionary(uniqueKeysWithValues: cfg.nodes.map { ($0.name, ClusterSnapshot.NodeLive(up: true)) })
        return ClusterSnapshot.build(config: cfg, live: live, running: [])
    }

    public func run(policy: RouterPolicy, maxEvents: Int = 2_000_000) -> SimulationReport {
        var jobs = buildJobs()
        var snap = baseSnapshot()
        let t0 = Date(timeIntervalSince1970: 0)
        // Flat GPU table: (node, gpu) → slot.
        var slotOf: [String: Int] = [:]
        var gpuNode: [Int] = [], gpuTotal: [UInt64] = [], gpuBaseline: [UInt64] = [], gpuWeight: [Double] = []
        var gpuPath: [(ni: Int, gi: Int)] = []
        for (ni, n) in snap.nodes.enumerated() {
            for (gi, g) in n.gpus.enumerated() {
                slotOf[g.uuid] = gpuNode.count
                gpuNode.append(ni); gpuTotal.append(g.totalBytes); gpuBaseline.append(g.baselineBytes)
                gpuWeight.append(GPUWeights.weight(model: g.model, configured: g.weight)); gpuPath.append((ni, gi))
            }
        }
        let gpuCount = gpuNode.count
        var gpuUsed = gpuBaseline
        // Residents that unload later: live usage until their time comes.
        var unloads: [(at: Double, slot: Int, bytes: UInt64)] = []
        for r in workload.resident {
            guard let until = r.untilS, let ni = snap.nodes.firstIndex(where: { $0.name == r.node }),
                  r.gpu < snap.nodes[ni].gpus.count, let s = slotOf[snap.nodes[ni].gpus[r.gpu].uuid] else { continue }
            gpuUsed[s] += r.vram.bytes
            unloads.append((until, s, r.vram.bytes))
        }
        var gpuJobs = [Int](repeating: 0, count: gpuCount)
        var gpuBusy = [Double](repeating: 0, count: gpuCount)
        let nodeIndex = Dictionary(uniqueKeysWithValues: snap.nodes.enumerated().map { ($1.name, $0) })

        let priorities = jobs.map(\.job.priority)
        let topTier: Int? = (priorities.max() ?? 0) > (priorities.min() ?? 0) ? priorities.max() : nil
        let arrivals: [Int] = jobs.indices.filter { jobs[$0].waitingOn == 0 }.sorted { jobs[$0].submitAt < jobs[$1].submitAt }
        var arrivalPos = 0
        // GPU jobs that wait on dependencies, by submit time: the router sees one as upcoming once
        // it is submitted and every job it waits on is ready, running or done (`Router.place`).
        let blocked: [Int] = jobs.indices.filter { jobs[$0].waitingOn > 0 && !jobs[$0].job.cpuOnly }
            .sorted { jobs[$0].submitAt < jobs[$1].submitAt }
        var blockedPos = 0
        var submittedBlocked: [Int] = []   // of those, the submitted ones still waiting
        var pending: [Int] = []            // indices of ready jobs
        var running: [Running] = []
        var now = 0.0
        var lastReasons: [String: PendingReason] = [:]
        var ooms = 0, passes = 0, events = 0
        var lateArrivals: [(Double, Int)] = []   // dependents released before their own submit time

        var planner = planAhead.map {
            PlanAheadState(config: $0, jobs: jobs, workload: workload, snapshot: snap, urgentPriority: policy.urgentPriority, seed: seed)
        }

        var traceEvents: [SimulationReport.TraceEvent] = []
        var lastTraced: [String: String] = [:]
        /// A traced job's outcome in this pass, kept when it differs from its last one.
        func traceEvent(_ j: Int, _ result: PlacementResult) {
            let id = jobs[j].job.id
            let event: String
            if let a = result.assignments.first(where: { $0.jobID == id }) {
                let on = a.gpuIndices.isEmpty ? a.node + " (CPU slot)" : a.gpuIndices.map { "\(a.node)/\($0)" }.joined(separator: " + ")
                event = "starts on \(on), expected to run \(Router.secs(a.expectedRuntimeS))"
            } else if let r = result.pending.first(where: { $0.jobID == id }) {
                event = r.message
            } else { return }
            guard lastTraced[id] != event else { return }
            lastTraced[id] = event
            traceEvents.append(.init(timeS: now, job: id, event: event))
        }

        func release(_ j: Int) {
            for d in jobs[j].dependents {
                jobs[d].waitingOn -= 1
                guard jobs[d].waitingOn == 0 else { continue }
                // Aging counts from here, as in the coordinator (`jobs.ready_at`, `JobStore.readyRows`).
                if jobs[d].submitAt <= now { jobs[d].readyAt = now; jobs[d].job.submittedAt = t0.addingTimeInterval(now); pending.append(d) }
                else { lateArrivals.append((jobs[d].submitAt, d)) }
            }
        }

        while events < maxEvents {
            events += 1
            while arrivalPos < arrivals.count, jobs[arrivals[arrivalPos]].submitAt <= now {
                let j = arrivals[arrivalPos]; jobs[j].readyAt = now; pending.append(j); arrivalPos += 1
            }
            unloads.removeAll { u in
                guard u.at <= now else { return false }
                gpuUsed[u.slot] -= u.bytes; return true
            }
            lateArrivals.removeAll { (t, j) in
                guard t <= now else { return false }
                jobs[j].readyAt = now; pending.append(j); return true
            }

            if !pending.isEmpty {
                snap.running = running.map { r in
                    RouterRunningJob(id: jobs[r.job].job.id, batchID: jobs[r.job].job.batchID, kind: jobs[r.job].job.kind,
                                     spec: jobs[r.job].job.spec, node: snap.nodes[r.node].name,
                                     gpuUUIDs: r.gpus.map { snap.nodes[gpuPath[$0].ni].gpus[gpuPath[$0].gi].uuid },
                                     reservedBytesPerGPU: r.reserved, placedAt: t0.addingTimeInterval(r.startedAt),
                                     startedAt: t0.addingTimeInterval(r.startedAt), visible: true,
                                     expectedEnd: t0.addingTimeInterval(r.startedAt + r.expectedRuntime),
                                     priority: jobs[r.job].job.priority)
                }
                for s in 0..<gpuCount { snap.nodes[gpuPath[s].ni].gpus[gpuPath[s].gi].usedBytes = gpuUsed[s] }
                // Was there room anywhere for a newly ready top-priority job? Asked of a policy that
                // starts whatever fits now, for that job alone.
                if topTier != nil {
                    for j in pending where jobs[j].roomAtReady == nil && jobs[j].job.priority == topTier {
                        let probe = Router.place(pending: [jobs[j].job], snapshot: snap, stats: .empty, now: t0.addingTimeInterval(now),
                                                 policy: RouterPolicy(name: .leastLoaded), explain: false)
                        jobs[j].roomAtReady = !probe.assignments.isEmpty
                    }
                }
                let traced = trace.isEmpty ? [] : pending.filter { trace.contains(jobs[$0].job.id) }
                var upcoming: [RouterJob] = []
                if policy.weighsUpcomingJobs {
                    while blockedPos < blocked.count, jobs[blocked[blockedPos]].submitAt <= now {
                        submittedBlocked.append(blocked[blockedPos]); blockedPos += 1
                    }
                    submittedBlocked.removeAll { jobs[$0].waitingOn == 0 }
                    for j in submittedBlocked where jobs[j].deps.allSatisfy({ jobs[$0].readyAt != nil }) { upcoming.append(jobs[j].job) }
                }
                var routed = pending
                var planned: [Assignment] = []
                if planner != nil {
                    let state = running.map {
                        PlanAheadState.RunningJob(job: $0.job, node: $0.node, gpus: $0.gpus.map { snap.nodes[gpuPath[$0].ni].gpus[gpuPath[$0].gi].uuid },
                                                  startedAt: $0.startedAt, expectedRuntime: $0.expectedRuntime)
                    }
                    let p = planner!.pass(now: now, jobs: jobs, pending: pending, running: state)
                    routed = p.routed
                    planned = p.starts.map { st in
                        Assignment(jobID: jobs[st.job].job.id, node: snap.nodes[st.node].name, gpuUUIDs: st.gpus,
                                   gpuIndices: st.gpus.map { snap.nodes[gpuPath[slotOf[$0]!].ni].gpus[gpuPath[slotOf[$0]!].gi].index },
                                   reservedBytesPerGPU: st.gpus.isEmpty ? 0 : (jobs[st.job].job.vramRequestBytes ?? 0),
                                   expectedRuntimeS: st.expectedRuntime, expectedStart: t0.addingTimeInterval(now),
                                   expectedFinish: t0.addingTimeInterval(now + st.expectedRuntime))
                    }
                }
                let result = Router.place(pending: routed.map { jobs[$0].job }, upcoming: upcoming,
                                          snapshot: snap, stats: .empty,
                                          now: t0.addingTimeInterval(now), policy: policy, explain: !traced.isEmpty)
                passes += 1
                for j in traced { traceEvent(j, result) }
                var placed = Set<String>()
                let byID = Dictionary(uniqueKeysWithValues: pending.map { (jobs[$0].job.id, $0) })
                let plannedIDs = Set(planned.map(\.jobID))
                for a in result.assignments + planned {
                    guard let j = byID[a.jobID], let ni = nodeIndex[a.node] else { continue }
                    let slots = a.gpuUUIDs.compactMap { slotOf[$0] }
                    // A planned start whose request does not fit now (an interactive job beside it) waits for the next pass.
                    if plannedIDs.contains(a.jobID), slots.contains(where: { gpuUsed[$0] + a.reservedBytesPerGPU > gpuTotal[$0] }) { continue }
                    let usage = slots.isEmpty ? 0 : (jobs[j].peakBytes ?? a.reservedBytesPerGPU)
                    // Out of memory if the real peak does not fit beside what is already there.
                    let oom = slots.contains { gpuUsed[$0] + usage > gpuTotal[$0] }
                    let minW = slots.map { gpuWeight[$0] }.min() ?? 1
                    var work = jobs[j].fixedS ?? (jobs[j].baseS.map { slots.isEmpty ? $0 : $0 / minW } ?? a.expectedRuntimeS)
                    jobs[j].lastWork = work
                    if oom { work *= 0.1; ooms += 1 }   // it dies while loading
                    for s in slots { gpuUsed[s] += oom ? 0 : usage }
                    if jobs[j].firstStart == nil { jobs[j].firstStart = now }
                    jobs[j].lastStart = now
                    jobs[j].placedOn = (a.node, a.gpuIndices)
                    running.append(Running(job: j, node: ni, gpus: slots, reserved: a.reservedBytesPerGPU, usage: oom ? 0 : usage,
                                           workLeft: work, startedAt: now, expectedRuntime: a.expectedRuntimeS, failsOOM: oom))
                    placed.insert(a.jobID)
                }
                pending.removeAll { placed.contains(jobs[$0].job.id) }
            }

            // Rates: equal share of each GPU, a gang at its most shared member's pace.
            for s in 0..<gpuCount { gpuJobs[s] = 0 }
            for r in running { for s in r.gpus { gpuJobs[s] += 1 } }
            var nextDone = Double.infinity
            for i in running.indices {
                let share = running[i].gpus.map { 1.0 / Double(gpuJobs[$0]) }.min() ?? 1
                running[i].rate = share
                nextDone = min(nextDone, running[i].workLeft / share)
            }
            var nextArrival = arrivalPos < arrivals.count ? jobs[arrivals[arrivalPos]].submitAt : Double.infinity
            for (t, _) in lateArrivals { nextArrival = min(nextArrival, t) }
            for u in unloads { nextArrival = min(nextArrival, u.at) }
            let next = min(now + nextDone, nextArrival)
            if !next.isFinite {
                // Nothing runs and nothing comes: the rest can never run. Ask the router why, once.
                if !pending.isEmpty {
                    let why = Router.place(pending: pending.map { jobs[$0].job }, snapshot: snap, stats: .empty,
                                           now: t0.addingTimeInterval(now), policy: policy)
                    for p in why.pending { lastReasons[p.jobID] = p }
                }
                break
            }
            let dt = max(0, next - now)
            for s in 0..<gpuCount where gpuJobs[s] > 0 { gpuBusy[s] += dt }
            now = next
            var finished: [Running] = []
            var keep: [Running] = []
            for var r in running {
                r.workLeft -= dt * r.rate
                if r.workLeft <= 1e-9 { finished.append(r) } else { keep.append(r) }
            }
            running = keep
            for r in finished {
                for s in r.gpus { gpuUsed[s] -= r.usage }
                if r.failsOOM {
                    var j = jobs[r.job].job
                    j.attempt += 1; j.lastFailure = .oom; j.lastReservedBytes = r.reserved
                    jobs[r.job].job = j
                    pending.append(r.job)
                } else {
                    jobs[r.job].finishedAt = now
                    release(r.job)
                }
            }
        }

        let done = jobs.filter { $0.finishedAt != nil }
        let makespan = done.map { $0.finishedAt! }.max() ?? 0
        let waits = jobs.compactMap { j -> Double? in
            guard let s = j.firstStart, let r = j.readyAt else { return nil }
            return s - r
        }.sorted()
        let lowest = jobs.map(\.job.priority).min() ?? 0
        let priorityWaits = jobs.compactMap { j -> Double? in
            guard j.job.priority > lowest, let s = j.firstStart, let r = j.readyAt else { return nil }
            return s - r
        }.sorted()
        let lb = LowerBound.compute(cluster: cluster, workload: workload, jobs: jobs, snapshot: baseSnapshot())
        let highest = jobs.map(\.job.priority).max() ?? 0
        var top: SimulationReport.TierStats?
        if highest > lowest {
            let tierIndices = jobs.indices.filter { jobs[$0].job.priority == highest }
            let tier = tierIndices.map { jobs[$0] }
            let w = tier.compactMap { j -> Double? in
                guard let s = j.firstStart, let r = j.readyAt else { return nil }
                return s - r
            }.sorted()
            let rt = tier.compactMap(\.lastWork).sorted()
            let roomy = tier.filter { $0.roomAtReady == true }.compactMap { j -> Double? in
                guard let s = j.firstStart, let r = j.readyAt else { return nil }
                return s - r
            }.sorted()
            let stretch = tier.compactMap { j -> Double? in
                guard let f = j.finishedAt, let r = j.readyAt, let work = j.lastWork, work > 0 else { return nil }
                return (f - r) / work
            }.sorted()
            let latency = tierIndices.compactMap { i -> Double? in
                guard let f = jobs[i].finishedAt, let r = jobs[i].readyAt, let best = lb.fastestS[i], best > 0 else { return nil }
                return (f - r) / best
            }.sorted()
            top = .init(priority: highest, jobs: tier.count, waitP95S: Self.percentile(w, 0.95),
                        withRoomJobs: roomy.count, withRoomWaitP95S: roomy.isEmpty ? nil : Self.percentile(roomy, 0.95),
                        runtimeMedianS: rt.isEmpty ? 0 : rt[rt.count / 2],
                        stretchP95: stretch.isEmpty ? nil : Self.percentile(stretch, 0.95),
                        latencyP95: latency.isEmpty ? nil : Self.percentile(latency, 0.95))
        }
        let never = jobs.filter { $0.finishedAt == nil }.map { j in
            SimulationReport.NeverRan(job: j.job.id, reason: lastReasons[j.job.id]?.message
                                      ?? (j.waitingOn > 0 ? "a job it depends on never ran" : "never placed"))
        }
        let gpus = (0..<gpuCount).map { s in
            let n = snap.nodes[gpuPath[s].ni], g = n.gpus[gpuPath[s].gi]
            return SimulationReport.GPUUsage(node: n.name, index: g.index, name: GPUWeights.shortName(g.model),
                                             busyFraction: makespan > 0 ? gpuBusy[s] / makespan : 0)
        }
        return SimulationReport(policy: planAhead == nil ? policy.name.rawValue : PlanAhead.rowName, makespanS: makespan, lowerBoundS: lb.value, lowerBound: lb,
                                jobs: jobs.count, completed: done.count,
                                waitMeanS: waits.isEmpty ? 0 : waits.reduce(0, +) / Double(waits.count),
                                waitP95S: Self.percentile(waits, 0.95),
                                waitP95PriorityS: priorityWaits.isEmpty ? nil : Self.percentile(priorityWaits, 0.95), topPriority: top, gpus: gpus, neverRan: never, oomFailures: ooms,
                                routerPasses: passes,
                                timeline: jobs.map { .init(job: $0.job.id, readyS: $0.readyAt, startS: $0.lastStart, finishS: $0.finishedAt,
                                                           node: $0.placedOn?.node, gpus: $0.placedOn?.gpus ?? []) },
                                trace: traceEvents)
    }

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        guard !sorted.isEmpty else { return 0 }
        let i = Int((p * Double(sorted.count)).rounded(.up)) - 1
        return sorted[max(0, min(sorted.count - 1, i))]
    }
}
