import Foundation

/// Why a filter turned a node or GPU down. The first rejection per node/GPU is what
/// the job's "why pending" is built from.
struct Rejection: Sendable, Equatable {
    var filter: String
    var detail: String
    /// Goes away without a config change (node down, draining): the job waits rather than never runs.
    var transient: Bool
}

/// A feasibility check over the static part of a job (its shape). Node-level checks run
/// first; a node that passes has each GPU checked. A filter implements the level(s) it needs.
protocol PlacementFilter: Sendable {
    var name: String { get }
    func check(_ s: DemandShape, node: RouterNode) -> Rejection?
    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection?
}

extension PlacementFilter {
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? { nil }
    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection? { nil }
}

enum PlacementFilters {
    /// Order matters for the reasons: the most permanent explanation comes first.
    static let standard: [any PlacementFilter] = [
        ServiceAffinityFilter(), NodeSelectorFilter(), CommandAllowlistFilter(), CPUSlotsFilter(), NodeUpFilter(), NotDrainingFilter(),
        DispatchableFilter(), FreshGPUReadingFilter(),
        GPUModelSelectorFilter(), GPUIndexSelectorFilter(), StaticCapacityFilter(),
    ]
}

/// A job that calls a service runs only where the cluster config says the service lives.
struct ServiceAffinityFilter: PlacementFilter {
    let name = "service"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        guard !s.services.isEmpty else { return nil }
        for svc in s.services where node.services.contains(where: { lowerASCII($0) == svc }) { return nil }
        return Rejection(filter: name, detail: "does not run \(s.services.joined(separator: " or "))", transient: false)
    }
}

/// `constraints.node`.
struct NodeSelectorFilter: PlacementFilter {
    let name = "node"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        guard let want = s.nodeSelector, want != node.name else { return nil }
        return Rejection(filter: name, detail: "is not node \(want)", transient: false)
    }
}

/// A `command` job goes only where the agent's command allowlist matches its argv: elsewhere it
/// would fail at once, permanently, though another node runs it. A node whose list is not known
/// (no `command_allowlist` in the cluster file and an agent that does not say) is not turned down.
struct CommandAllowlistFilter: PlacementFilter {
    let name = "command"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        guard let argv = s.command, let list = node.commands, case .failure(let why) = list.check(argv) else { return nil }
        return Rejection(filter: name, detail: "refuses the command (\(why.description.replacingOccurrences(of: "this node's ", with: "its ")))",
                         transient: false)
    }
}

/// CPU-only jobs need a node that takes CPU jobs at all (`cpu_slots: 0` opts out).
struct CPUSlotsFilter: PlacementFilter {
    let name = "cpu"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        guard s.cpuOnly, node.cpuSlots <= 0 else { return nil }
        return Rejection(filter: name, detail: "takes no CPU-only jobs", transient: false)
    }
}

/// No heartbeat, no placement.
struct NodeUpFilter: PlacementFilter {
    let name = "up"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        node.up ? nil : Rejection(filter: name, detail: "down", transient: true)
    }
}

/// A draining node finishes what it has and takes nothing new.
struct NotDrainingFilter: PlacementFilter {
    let name = "draining"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        node.draining ? Rejection(filter: name, detail: "draining", transient: true) : nil
    }
}

/// A node whose job stream takes no entry (an agent may break its own stream) gets nothing until the
/// stream is repaired; its jobs say so rather than "draining".
struct DispatchableFilter: PlacementFilter {
    let name = "undispatchable"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        node.undispatchable.map { Rejection(filter: name, detail: "takes no envelopes (its job stream: \($0))", transient: true) }
    }
}

/// GPU jobs are placed by what the node's GPUs hold; a reading nvidia-smi has not renewed for a
/// while (slow or hung) may say a GPU is free that a process has since filled. GPU jobs wait for a
/// fresh reading; CPU-only jobs do not read it and still go there.
struct FreshGPUReadingFilter: PlacementFilter {
    let name = "stale_gpus"
    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        guard !s.cpuOnly, let age = node.staleGPUReadingS else { return nil }
        return Rejection(filter: name, detail: "GPU readings \(Int(age)) s old (nvidia-smi slow or hung)", transient: true)
    }
}

/// `constraints.gpu_model`: a case-insensitive substring of the nvidia-smi name.
struct GPUModelSelectorFilter: PlacementFilter {
    let name = "gpu_model"
    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection? {
        guard let want = s.gpuModelSelector, !gpu.model.lowercased().contains(want) else { return nil }
        return Rejection(filter: name, detail: "is not a \(want)", transient: false)
    }
}

/// `constraints.gpu_index`.
struct GPUIndexSelectorFilter: PlacementFilter {
    let name = "gpu_index"
    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection? {
        guard let want = s.gpuIndexSelector, want != gpu.index else { return nil }
        return Rejection(filter: name, detail: "is not GPU \(want)", transient: false)
    }
}

/// Could the job ever fit here: total − resident baseline − headroom. What is free right
/// now is decided later, per job, on the pass's running tally.
struct StaticCapacityFilter: PlacementFilter {
    let name = "capacity"
    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection? {
        let usable = StaticCapacityFilter.usable(gpu, headroom: headroom)
        guard usable < s.needBytes else { return nil }
        return Rejection(filter: name, detail: "\(Fmt.bytes(Int64(usable))) usable", transient: false)
    }

    static func usable(_ gpu: RouterGPU, headroom: UInt64) -> UInt64 {
        let taken = gpu.baselineBytes &+ headroom
        return gpu.totalBytes > taken ? gpu.totalBytes - taken : 0
    }
}

/// The seed's static rules, kept as a policy for comparison: some kinds go to one GPU model only.
struct SeedStaticRuleFilter: PlacementFilter {
    let name = "seed-static"

    /// The GPU model the seed sends a job to, or nil ("least busy GPU").
    static func target(kind: String, modelKey: String, spec: JSONValue) -> String? {
        switch kind {
        case "llm":
            let size = spec["params_b"]?.doubleValue ?? parameterBillions(modelKey)
            if let size, size > 30 { return "rtx 5090" }
            return nil
        case "image", "lora": return "rtx 5070 ti"
        case "video": return "rtx 4090"
        case "voice", "tts": return "rtx 3060"
        default: return nil
        }
    }

    /// `llama-3.3-70b-instruct` → 70: the last `<number>b` token of the name.
    static func parameterBillions(_ model: String) -> Double? {
        var found: Double?
        for token in model.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == ".") }) {
            let t = token.lowercased()
            guard t.hasSuffix("b"), let v = Double(t.dropLast()), v > 0 else { continue }
            found = v
        }
        return found
    }

    func check(_ s: DemandShape, node: RouterNode) -> Rejection? {
        // A gang needs one GPU of the target model on its node; its partners are free.
        guard let t = s.seedTarget, s.gpus > 1 else { return nil }
        if node.gpus.contains(where: { $0.model.lowercased().contains(t) }) { return nil }
        return Rejection(filter: name, detail: "has no \(t) (seed rule)", transient: false)
    }

    func check(_ s: DemandShape, gpu: RouterGPU, node: RouterNode, headroom: UInt64) -> Rejection? {
        guard let t = s.seedTarget, s.gpus == 1, !gpu.model.lowercased().contains(t) else { return nil }
        return Rejection(filter: name, detail: "is not a \(t) (seed rule)", transient: false)
    }
}
