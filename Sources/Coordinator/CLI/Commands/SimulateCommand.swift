import ArgumentParser
import Foundation
import HydraCore

/// `hydra simulate`: runs a workload file through the real router on a simulated cluster.
struct SimulateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Simulate a workload on a cluster with a placement policy.",
        discussion: """
        Runs the router the coordinator uses, on simulated GPUs with the cluster file's VRAM
        and weights and the workload's resident services, and reports the makespan, a lower
        bound on it that no policy can beat, per-GPU busy fractions, job waits, and the jobs
        that could never run (with the router's reason).
        Policies: \(RouterPolicy.Name.allCases.map(\.rawValue).joined(separator: ", ")).

        --generate SEED makes a random cluster (1–16 nodes, mixed GPUs, services spread
        unevenly, resident services) and workload (pipelines with dependencies, 2-GPU gangs,
        long training runs, a big-VRAM class, out-of-memory peaks, arrivals over time and a
        stream of top-priority interactive jobs) instead of reading files; --seeds N sweeps
        seeds SEED..SEED+N-1 and reports, per policy, makespan ÷ lower bound (median, p90,
        worst), the interactive jobs' p95 wait, and the jobs that never ran. With --json, one
        JSON object per run and policy per line, then one line with the summary.
        """)

    @Option(help: "Cluster YAML (nodes, GPUs, services).") var cluster: String?
    @Option(help: "Workload YAML (job groups, dependencies, resident services).") var workload: String?
    @Option(help: "Generate the cluster and workload from this seed instead of reading files.") var generate: UInt64?
    @Option(help: "With --generate: how many consecutive seeds to sweep.") var seeds = 1
    @Option(help: "With --generate: write the generated cluster and workload YAML into this folder.") var dump: String?
    @Option(help: "With --generate: simulations run at once.") var threads = 2
    @Option(help: "Placement policy (default: hydra).") var policy: String?
    @Flag(help: "Run every policy on the same workload and seed.") var compare = false
    @Option(help: "Seed for runtime jitter and the random policy.") var seed: UInt64 = 1
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "List every job: where it ran, when it became ready, started and ended.") var timeline = false
    @Option(help: ArgumentHelp("Also search for an offline plan, knowing every arrival and true runtime, over this many list orders (e.g. 300); reports its makespan ÷ the bound, as a row 'offline-plan' in sweeps. A schedule some placement reaches: how much of a policy's gap is the bound's slack. 0: off.", valueName: "orders"))
    var offlinePlan = 0
    @Flag(help: "Also run with the batch jobs following a plan of everything submitted (searched list scheduling on the specs' runtimes, re-planned every pass, its order searched again every 5 minutes) instead of the router's pass; interactive jobs still go through the router. A row 'plan-ahead': what planning would give the coordinator, which does not plan yet.")
    var planAhead = false
    @Flag(help: "Submit every job below the urgent priority (2) at the start, as a backlog submitted at once, instead of at its submit_at_s / every_s; interactive streams keep arriving.")
    var atOnce = false
    @Option(help: ArgumentHelp("Follow these jobs (comma-separated IDs, e.g. lora-1,image-42) through the run: every change of the router's reason while each waits, and where it starts. One run only.", valueName: "ids"))
    var trace: String?

    /// The job IDs of `--trace`, in the order given.
    var traceIDs: [String] {
        (trace ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func validate() throws {
        if generate == nil && (cluster == nil || workload == nil) { throw ValidationError("give --cluster and --workload, or --generate SEED") }
        if generate != nil && (cluster != nil || workload != nil) { throw ValidationError("--generate makes its own cluster and workload; drop --cluster/--workload") }
        if generate == nil && (seeds != 1 || dump != nil) { throw ValidationError("--seeds and --dump go with --generate") }
        guard seeds >= 1, seeds <= 100_000 else { throw ValidationError("--seeds must be between 1 and 100000") }
        guard threads >= 1, threads <= 256 else { throw ValidationError("--threads must be between 1 and 256") }
        guard offlinePlan >= 0, offlinePlan <= 1_000_000 else { throw ValidationError("--offline-plan must be between 0 and 1000000 list orders") }
        if compare && policy != nil { throw ValidationError("--policy and --compare exclude each other: --compare runs every policy") }
        if trace != nil {
            if traceIDs.isEmpty { throw ValidationError("--trace needs at least one job ID, e.g. --trace lora-1,image-42") }
            if seeds != 1 { throw ValidationError("--trace follows jobs through one run; drop --seeds or set it to 1") }
        }
        if let p = policy, RouterPolicy.named(p) == nil {
            throw ValidationError("unknown policy '\(p)'; choose one of \(RouterPolicy.Name.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        if let first = generate { return try runGenerated(first: first) }
        let (config, load) = try Self.load(cluster: cluster!, workload: workload!)
        try simulate(config, load, path: workload!, seed: seed)
    }

    private func simulate(_ config: ClusterConfig, _ given: Workload, path: String, seed: UInt64) throws {
        let load = atOnce ? given.submittedAtOnce() : given
        var sim = Simulator(cluster: config, workload: load, seed: seed)
        if !traceIDs.isEmpty {
            // An ID the workload does not have would trace nothing, silently: name it instead.
            let ids = sim.jobIDs, known = Set(ids)
            if let missing = traceIDs.first(where: { !known.contains($0) }) {
                let example = ids.prefix(3).joined(separator: ", ")
                throw ValidationError("--trace: no job '\(missing)' in workload \(path) (IDs are group-index, e.g. \(example))")
            }
            sim.trace = Set(traceIDs)
        }
        let policies: [RouterPolicy] = compare
            ? RouterPolicy.Name.allCases.map { RouterPolicy(name: $0, seed: seed) }
            : [RouterPolicy.named(policy ?? "hydra", seed: seed)!]
        var reports = policies.map { sim.run(policy: $0) }
        if planAhead {
            var planned = sim
            planned.planAhead = PlanAhead()
            reports.append(planned.run(policy: RouterPolicy(name: .hydra, seed: seed)))
        }
        if json {
            if compare || planAhead {
                struct Results: Encodable { var results: [SimulationReport.Summary] }
                print(try JSONCoding.encodeString(Results(results: reports.map(\.summary)), pretty: true))
            } else {
                print(try JSONCoding.encodeString(reports[0].summary, pretty: true))
            }
            return
        }
        print(Self.render(reports, workload: load, workloadPath: path, seed: seed))
        if offlinePlan > 0 {
            let plan = sim.offlinePlan(evaluations: offlinePlan, from: reports.first { $0.policy == "hydra" })
            let bound = reports.first?.lowerBoundS ?? 0
            print("")
            print("offline plan (every arrival and true runtime known, one job per GPU at a time): \(Self.duration(plan.makespanS))"
                  + (bound > 0 ? String(format: ", %.3f × bound", plan.makespanS / bound) : "")
                  + "; from the \(plan.start) order (\(Self.duration(plan.startMakespanS))), \(plan.evaluated) orders tried")
        }
        if !traceIDs.isEmpty {
            for r in reports {
                print("\n\(r.policy): trace")
                // The event column is last and long: no padding after it.
                let rows = Self.table(r.trace.map { ["  \(Self.duration($0.timeS))", $0.job, $0.event] })
                print(rows.map { String($0.reversed().drop { $0 == " " }.reversed()) }.joined(separator: "\n"))
            }
        }
        if timeline {
            for r in reports {
                print("\n\(r.policy): timeline")
                print(Self.table(r.timeline.sorted { ($0.startS ?? .infinity) < ($1.startS ?? .infinity) }.map { t in
                    ["  \(t.job)", "\(t.node ?? "-")/\(t.gpus.map(String.init).joined(separator: "+"))",
                     "ready \(Self.duration(t.readyS ?? 0))", "start \(Self.duration(t.startS ?? 0))", "end \(Self.duration(t.finishS ?? 0))"]
                }).joined(separator: "\n"))
            }
        }
    }

    private func runGenerated(first: UInt64) throws {
        if let dir = dump {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for i in 0..<seeds {
                let sc = try ScenarioGenerator.generate(seed: first &+ UInt64(i))
                try sc.clusterYAML.write(toFile: "\(dir)/cluster-\(sc.seed).yaml", atomically: true, encoding: .utf8)
                try sc.workloadYAML.write(toFile: "\(dir)/workload-\(sc.seed).yaml", atomically: true, encoding: .utf8)
            }
        }
        // One seed in text (or traced): the same full report as for files.
        if seeds == 1 && (!json || !traceIDs.isEmpty) {
            let sc = try ScenarioGenerator.generate(seed: first)
            return try simulate(sc.cluster, sc.workload, path: "generated-\(first)", seed: first)
        }
        let names = compare || policy == nil ? RouterPolicy.Name.allCases : [RouterPolicy.named(policy!)!.name]
        let runs = try QualitySweep.run(first: first, count: seeds, policies: names, threads: threads, atOnce: atOnce, offlinePlan: offlinePlan,
                                        planAhead: planAhead)
        let summary = QualitySweep.summarize(runs)
        if json {
            for r in runs { print(try JSONCoding.encodeString(r)) }
            struct Out: Encodable { var summary: [QualitySweep.PolicySummary] }
            print(try JSONCoding.encodeString(Out(summary: summary)))
            return
        }
        print(Self.renderSweep(summary, first: first, count: seeds, runs: runs))
    }

    static func renderSweep(_ s: [QualitySweep.PolicySummary], first: UInt64, count: Int, runs: [QualitySweep.Run]) -> String {
        var out = ["generated seeds \(first)…\(first &+ UInt64(count - 1)) (\(count) scenarios); makespan ÷ lower bound, and the p95 wait of the top-priority (interactive) jobs per seed", ""]
        var rows = [["policy", "median", "p90", "worst (seed)", "hp wait p95 med", "p90", "÷ runtime med", "p90", "seeds > 2×", "with room: p90", "seeds > 2×", "stretch p95 med", "p90", "latency p95 med", "p90", "never ran", "beats hydra >1 %"]]
        func f(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "-" }
        for p in s {
            rows.append([p.policy, f(p.ratioMedian), f(p.ratioP90), "\(f(p.ratioWorst)) (\(p.worstSeed))",
                         p.hpWaitP95Median.map(duration) ?? "-", p.hpWaitP95P90.map(duration) ?? "-",
                         p.hpWaitRatioMedian.map { String(format: "%.2f", $0) } ?? "-", p.hpWaitRatioP90.map { String(format: "%.2f", $0) } ?? "-",
                         "\(p.hpSeedsOver2)", p.hpWithRoomRatioP90.map { String(format: "%.2f", $0) } ?? "-", "\(p.hpWithRoomSeedsOver2)",
                         p.hpStretchMedian.map { String(format: "%.2f", $0) } ?? "-", p.hpStretchP90.map { String(format: "%.2f", $0) } ?? "-",
                         p.hpLatencyMedian.map { String(format: "%.2f", $0) } ?? "-", p.hpLatencyP90.map { String(format: "%.2f", $0) } ?? "-", "\(p.neverRan)", p.policy == "hydra" ? "-" : p.worstHydraVsThis == 0 ? "- (never the same jobs ran)" : "\(p.beatsHydraBy1Pct) (worst \(f(p.worstHydraVsThis))×)"])
        }
        out += table(rows)
        let jobs = runs.filter { $0.policy == s.first?.policy }.map(\.jobs)
        if !jobs.isEmpty { out.append(""); out.append("jobs per scenario: \(jobs.min()!)–\(jobs.max()!); rerun one with --generate SEED (add --dump DIR for its YAML)") }
        return out.joined(separator: "\n")
    }

    /// Loads both files; any problem is invalid input naming the file and field.
    static func load(cluster: String, workload: String) throws -> (ClusterConfig, Workload) {
        do {
            let c = try ClusterConfig.load(path: cluster)
            return (c, try Workload.load(path: workload, cluster: c))
        } catch let e as InputError {
            throw ValidationError(e.description)
        }
    }

    static func render(_ reports: [SimulationReport], workload: Workload, workloadPath: String, seed: UInt64) -> String {
        var out: [String] = []
        let jobs = reports.first?.jobs ?? 0
        out.append("workload \(workload.name ?? workloadPath): \(jobs) jobs, seed \(seed)")
        if let lb = reports.first?.lowerBound {
            out.append("lower bound \(duration(lb.value)): critical path \(duration(lb.criticalPathS)), capacity \(duration(lb.capacityS))"
                       + (lb.bindingResources.isEmpty ? "" : " (\(lb.bindingResources))"))
        }
        out.append("")
        let header = ["policy", "makespan", "× bound", "wait mean", "wait p95", "p95 high prio", "OOM", "never ran"]
        var rows = [header]
        for r in reports {
            rows.append([r.policy, duration(r.makespanS), r.lowerBoundS > 0 ? String(format: "%.3f", r.makespanS / r.lowerBoundS) : "-",
                         duration(r.waitMeanS), duration(r.waitP95S), r.waitP95PriorityS.map(duration) ?? "-",
                         "\(r.oomFailures)", "\(r.neverRan.count)"])
        }
        out += table(rows)
        if reports.count > 1, let hydra = reports.first(where: { $0.policy == "hydra" }) {
            for r in reports where r.policy != "hydra" && hydra.makespanS > 0 {
                out.append(String(format: "hydra is %.2f× shorter than %@", r.makespanS / hydra.makespanS, r.policy))
            }
        }
        for r in reports {
            out.append("")
            out.append("\(r.policy): GPU busy")
            out += table(r.gpus.map { ["  \($0.node)/\($0.index)", $0.name, String(format: "%5.1f %%", $0.busyFraction * 100)] })
            // What ended the run: the last jobs to finish, where, and how long they waited.
            let last = r.timeline.filter { $0.finishS != nil }.sorted { $0.finishS! > $1.finishS! }.prefix(3)
            if !last.isEmpty {
                out.append("\(r.policy): last to finish")
                out += table(last.map { t in
                    ["  \(t.job)", "\(t.node ?? "-")/\(t.gpus.map(String.init).joined(separator: "+"))",
                     "ready \(duration(t.readyS ?? 0))", "start \(duration(t.startS ?? 0))", "end \(duration(t.finishS ?? 0))"]
                })
            }
            if !r.neverRan.isEmpty {
                out.append("\(r.policy): \(r.neverRan.count) job(s) never ran")
                for n in r.neverRan.prefix(10) { out.append("  \(n.job): \(n.reason)") }
                if r.neverRan.count > 10 { out.append("  … and \(r.neverRan.count - 10) more") }
            }
        }
        return out.joined(separator: "\n")
    }

    static func table(_ rows: [[String]]) -> [String] {
        guard let width = rows.first?.count else { return [] }
        let widths = (0..<width).map { c in rows.map { $0[c].count }.max() ?? 0 }
        return rows.map { r in r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
    }

    static func duration(_ s: Double) -> String {
        if s < 120 { return String(format: "%.1f s", s) }
        let m = Int(s.rounded()) / 60, sec = Int(s.rounded()) % 60
        if m < 120 { return "\(m)m\(String(format: "%02d", sec))s" }
        return "\(m / 60)h\(String(format: "%02d", m % 60))m"
    }
}
