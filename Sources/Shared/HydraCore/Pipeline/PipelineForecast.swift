import Foundation

/// The night's forecast: the planned stages as a simulator workload, run through the
/// same router the coordinator uses (`hydra simulate`'s library API).
public enum PipelineForecast {
    public static func workload(tasks: [PlannedTask], config: PipelineConfig) throws -> Workload? {
        let runnable = tasks.filter { $0.blockedReason == nil }
        let images = runnable.reduce(0) { $0 + $1.images }
        guard !runnable.isEmpty else { return nil }
        let j = config.jobs, f = config.forecast
        func group(_ name: String, kind: String, count: Int, vram: UInt64, runtime: Double, service: String?, after: String?) -> JSONValue {
            var g: [String: JSONValue] = ["name": .string(name), "count": .number(Double(count)), "kind": .string(kind)]
            if vram > 0 { g["vram"] = .number(Double(vram)); g["base_runtime_s"] = .number(runtime) }
            else { g["cpu"] = true; g["runtime_s"] = .number(runtime) }
            if let service { g["service"] = .string(service) }
            if let after { g["after"] = .string(after) }
            return .object(g)
        }
        let service = config.expansion.endpoint.hasPrefix("openai.") ? "tabbyapi" : config.expansion.endpoint
        let doc: JSONValue = ["name": "pipeline night", "groups": [
            group("expand", kind: "llm", count: runnable.count, vram: j.llmVRAM, runtime: f.llmS, service: service, after: nil),
            group("image", kind: "image", count: images, vram: j.imageVRAM, runtime: f.imageS, service: "comfyui", after: "expand"),
            group("score", kind: "score", count: images, vram: j.scoreVRAM, runtime: f.scoreS, service: "scorer", after: "image"),
        ]]
        return try ConfigLoader.decode(Workload.self, from: doc, file: "pipeline forecast")
    }

    public static func forecast(tasks: [PlannedTask], config: PipelineConfig, cluster: ClusterConfig) throws -> (NightFacts.Forecast, SimulationReport)? {
        guard let n = try night(tasks: tasks, config: config, cluster: cluster) else { return nil }
        let report = n.residents?.report ?? n.report
        return (NightFacts.Forecast(makespanS: report.makespanS, jobs: report.jobs, images: n.images, lowerBoundS: report.lowerBoundS), report)
    }

    /// The night as `--dry-run` shows it: the simulation, and with `residents:` configured the
    /// resident plan (when each unloads) and the simulation that uses it.
    public struct Night: Sendable {
        public var workload: Workload
        public var images: Int
        /// Without residents (none configured).
        public var report: SimulationReport
        public var residents: ResidentPlan.Forecast?
        public var stages: [StageWindow] { residents?.stages ?? ResidentPlan.stages(of: workload, report: report) }
        public var makespanS: Double { (residents?.report ?? report).makespanS }
    }

    public static func night(tasks: [PlannedTask], config: PipelineConfig, cluster: ClusterConfig) throws -> Night? {
        guard let w = try workload(tasks: tasks, config: config) else { return nil }
        try w.validate(file: "pipeline forecast", cluster: cluster)
        for (i, r) in config.residents.enumerated() {
            guard let n = cluster.node(named: r.node) else {
                throw InputError(file: config.file, location: "residents[\(i)].node", problem: "no node '\(r.node)' in the cluster config")
            }
            for s in r.gpus where s.gpu >= n.gpus.count || s.vram >= n.gpus[s.gpu].memory.bytes {
                throw InputError(file: config.file, location: "residents[\(i)].gpus", problem: "node '\(r.node)' has no GPU \(s.gpu) with room for \(ByteSize.format(s.vram))")
            }
        }
        let images = w.groups.first { $0.name == "image" }?.count ?? 0
        if config.residents.isEmpty {
            return Night(workload: w, images: images, report: Simulator(cluster: cluster, workload: w).run(policy: RouterPolicy.named("hydra")!))
        }
        let f = ResidentPlan.forecast(cluster: cluster, workload: w, residents: config.residents)
        return Night(workload: w, images: images, report: f.kept, residents: f)
    }
}

extension PipelineForecast {
    /// The forecast lines of `hydra pipeline run --dry-run`: per stage its expected start and
    /// end, when each resident unloads, and the night's length against the deadline.
    public static func render(_ n: Night, start: Date, deadline: Date, residents: [ResidentService], timeZone: TimeZone = .current) -> [String] {
        let f = DateFormatter()
        f.dateFormat = "HH:mm"; f.timeZone = timeZone; f.locale = Locale(identifier: "en_US_POSIX")
        func at(_ s: Double) -> String { "+\(ResidentPlan.clock(s)) (\(f.string(from: start.addingTimeInterval(s))))" }
        let report = n.residents?.report ?? n.report
        var out = ["forecast (hydra simulate, policy hydra): \(report.jobs) jobs, makespan \(ResidentPlan.clock(report.makespanS)), "
                   + "lower bound \(ResidentPlan.clock(report.lowerBoundS))" + (n.residents == nil ? "" : ", with the resident plan below")]
        let rows = n.stages.filter { $0.jobs > 0 }.map { s in [s.name, "\(s.jobs)", at(s.startS), at(s.endS)] }
        out += TextTable.render(header: ["stage", "jobs", "expected start", "expected end"], rows: rows)
            .split(separator: "\n").map { "  " + $0 }
        if let p = n.residents {
            out.append("residents:")
            for (r, rel) in zip(residents, p.releases) {
                let held = r.gpus.map { "GPU \($0.gpu) \(ByteSize.format($0.vram))" }.joined(separator: " + ")
                let what = "\(r.name)" + (r.model.map { " \($0)" } ?? "") + " (\(held))"
                if let u = rel.untilS {
                    out.append("  \(what): unload at \(at(u)), \(rel.reason)" + (r.url == nil ? "; no url: forecast only, nothing is called" : ""))
                } else {
                    out.append("  \(what): \(rel.reason)")
                }
            }
            out.append("total: \(ResidentPlan.clock(p.report.makespanS)) with the unloads, \(ResidentPlan.clock(p.kept.makespanS)) keeping every resident loaded")
        }
        let window = deadline.timeIntervalSince(start)
        let total = report.makespanS
        out.append(total <= window
                   ? "deadline \(f.string(from: deadline)) (in \(ResidentPlan.clock(window))): the forecast ends \(ResidentPlan.clock(window - total)) before it"
                   : "warning: the forecast ends after the deadline \(f.string(from: deadline)) (in \(ResidentPlan.clock(window))) by \(ResidentPlan.clock(total - window))")
        for g in report.gpus { out.append(String(format: "  %@/%d %@ busy %.0f %%", g.node, g.index, g.name, g.busyFraction * 100)) }
        return out
    }
}
