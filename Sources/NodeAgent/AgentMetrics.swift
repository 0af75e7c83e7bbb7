import Foundation
import HydraCore
import HydraWire
import HydraIO

/// The agent's Prometheus series (names in docs/operations.md).
struct AgentMetrics: Sendable {
    let node: String
    let registry = MetricsRegistry()
    static let gpuLabels = ["node", "gpu", "uuid", "model"]

    init(node: String) {
        self.node = node
        let r = registry
        r.register("hydra_agent_up", .gauge, help: "1 while the agent runs.", labels: ["node"])
        r.register("hydra_gpu_info", .gauge, help: "GPU identity (always 1).", labels: Self.gpuLabels)
        r.register("hydra_gpu_memory_used_bytes", .gauge, help: "GPU memory in use, all processes.", labels: Self.gpuLabels)
        r.register("hydra_gpu_memory_total_bytes", .gauge, help: "GPU memory in total.", labels: Self.gpuLabels)
        r.register("hydra_gpu_memory_reserved_bytes", .gauge, help: "GPU memory reserved by Hydra jobs on this agent.", labels: Self.gpuLabels)
        r.register("hydra_gpu_utilization_ratio", .gauge, help: "GPU utilization (0-1).", labels: Self.gpuLabels)
        r.register("hydra_gpu_temperature_celsius", .gauge, help: "GPU temperature.", labels: Self.gpuLabels)
        r.register("hydra_gpu_power_watts", .gauge, help: "GPU power draw.", labels: Self.gpuLabels)
        r.register("hydra_agent_collection_duration_seconds", .gauge, help: "Duration of the last GPU inventory collection.", labels: ["node"])
        r.register("hydra_agent_collection_errors_total", .counter, help: "Failed GPU inventory collections by reason.", labels: ["node", "reason"])
        r.register("hydra_agent_jobs_running", .gauge, help: "Jobs running on this agent.", labels: ["node"])
        r.register("hydra_agent_jobs_finished_total", .counter, help: "Jobs finished by kind and outcome.", labels: ["node", "kind", "outcome"])
        r.register("hydra_agent_deadletter_total", .counter, help: "Messages put on the dead-letter stream by reason.", labels: ["node", "reason"])
        r.set("hydra_agent_up", [node], 1)
        r.set("hydra_agent_jobs_running", [node], 0)
        // Every label value a counter can take starts at 0: increase() misses a series's first event.
        for reason in ["not_found", "exit_status", "timeout", "parse", "error"] { r.add("hydra_agent_collection_errors_total", [node, reason], 0) }
        for reason in MessageRejection.allCases.map(\.rawValue) { r.add("hydra_agent_deadletter_total", [node, reason], 0) }
        for kind in JobKind.allCases.map(\.rawValue) {
            for outcome in ["succeeded", "released", "failed"] + FailureClass.allCases.map(\.rawValue) {
                r.add("hydra_agent_jobs_finished_total", [node, kind, outcome], 0)
            }
        }
    }

    func recordInventory(_ inv: Inventory, reservedByUUID: [String: UInt64]) {
        let gpuFamilies = ["hydra_gpu_info", "hydra_gpu_memory_used_bytes", "hydra_gpu_memory_total_bytes", "hydra_gpu_memory_reserved_bytes",
                           "hydra_gpu_utilization_ratio", "hydra_gpu_temperature_celsius", "hydra_gpu_power_watts"]
        for f in gpuFamilies { registry.reset(f) }
        for g in inv.gpus {
            let l = [node, g.index.map(String.init) ?? "", g.uuid, g.name ?? ""]
            registry.set("hydra_gpu_info", l, 1)
            // Absent readings stay absent: no series rather than a false 0.
            if let v = g.memoryUsedBytes { registry.set("hydra_gpu_memory_used_bytes", l, Double(v)) }
            if let v = g.memoryTotalBytes { registry.set("hydra_gpu_memory_total_bytes", l, Double(v)) }
            registry.set("hydra_gpu_memory_reserved_bytes", l, Double(reservedByUUID[g.uuid] ?? 0))
            if let v = g.utilizationGPUPercent { registry.set("hydra_gpu_utilization_ratio", l, v / 100) }
            if let v = g.temperatureCelsius { registry.set("hydra_gpu_temperature_celsius", l, v) }
            if let v = g.powerDrawWatts { registry.set("hydra_gpu_power_watts", l, v) }
        }
    }

    func collectionError(reason: String) { registry.add("hydra_agent_collection_errors_total", [node, reason]) }
    func collectionDuration(_ s: Double) { registry.set("hydra_agent_collection_duration_seconds", [node], s) }
    func jobsRunning(_ n: Int) { registry.set("hydra_agent_jobs_running", [node], Double(n)) }
    func jobFinished(kind: String, outcome: String) { registry.add("hydra_agent_jobs_finished_total", [node, kind, outcome]) }
    func deadLettered(reason: String) { registry.add("hydra_agent_deadletter_total", [node, reason]) }
    /// /metrics: the registry plus build and process series read now.
    func render() -> String { registry.render() + ProcessMetrics.render(program: "hydra-agent", version: hydraVersion) }
}
