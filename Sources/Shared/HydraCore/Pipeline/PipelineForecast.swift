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
        guard let w = try workload(tasks: tasks, config: config) else { return nil }
        try w.validate(file: "pipeline forecast", cluster: cluster)
        let report = Simulator(cluster: cluster, workload: w).run(policy: RouterPolicy.named("hydra")!)
        let images = w.groups.first { $0.name == "image" }?.count ?? 0
        return (NightFacts.Forecast(makespanS: report.makespanS, jobs: report.jobs, images: images, lowerBoundS: report.lowerBoundS), report)
    }
}
