import ArgumentParser
import Foundation
import Shared

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
        """)

    @Option(help: "Cluster YAML (nodes, GPUs, services).") var cluster: String
    @Option(help: "Workload YAML (job groups, dependencies, resident services).") var workload: String
    @Option(help: "Placement policy (default: hydra).") var policy: String?
    @Flag(help: "Run every policy on the same workload and seed.") var compare = false
    @Option(help: "Seed for runtime jitter and the random policy.") var seed: UInt64 = 1
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if compare && policy != nil { throw ValidationError("--policy and --compare exclude each other: --compare runs every policy") }
        if let p = policy, RouterPolicy.named(p) == nil {
            throw ValidationError("unknown policy '\(p)'; choose one of \(RouterPolicy.Name.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let (config, load) = try Self.load(cluster: cluster, workload: workload)
        let sim = Simulator(cluster: config, workload: load, seed: seed)
        let policies: [RouterPolicy] = compare
            ? RouterPolicy.Name.allCases.map { RouterPolicy(name: $0, seed: seed) }
            : [RouterPolicy.named(policy ?? "hydra", seed: seed)!]
        let reports = policies.map { sim.run(policy: $0) }
        if json {
            if compare {
                struct Results: Encodable { var results: [SimulationReport.Summary] }
                print(try JSONCoding.encodeString(Results(results: reports.map(\.summary)), pretty: true))
            } else {
                print(try JSONCoding.encodeString(reports[0].summary, pretty: true))
            }
            return
        }
        print(Self.render(reports, workload: load, workloadPath: workload, seed: seed))
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
