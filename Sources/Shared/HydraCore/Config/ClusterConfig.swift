import Foundation

/// The cluster YAML (deploy/cluster.yaml): nodes, their GPUs and the services on them.
/// Agents use it for simulated GPUs and allowlists; the coordinator for weights,
/// service affinity and validation; the simulator for everything.
public struct ClusterConfig: Codable, Sendable, Equatable {
    public var nodes: [NodeConfig]
    /// VRAM kept free on every GPU, never handed to jobs.
    public var headroom: ByteCount?

    public init(nodes: [NodeConfig], headroom: ByteCount? = nil) {
        self.nodes = nodes; self.headroom = headroom
    }

    public func node(named name: String) -> NodeConfig? { nodes.first { $0.name == name } }

    /// The largest single GPU in the cluster (validation: a job that needs more can never run).
    public var largestGPUBytes: UInt64 { nodes.flatMap(\.gpus).map(\.memory.bytes).max() ?? 0 }

    public static func load(path: String) throws -> ClusterConfig {
        let c = try ConfigLoader.load(ClusterConfig.self, path: path)
        try c.validate(file: path)
        return c
    }

    public func validate(file: String) throws {
        var seen = Set<String>()
        for (i, n) in nodes.enumerated() {
            if n.name.isEmpty { throw InputError(file: file, location: "nodes[\(i)].name", problem: "node name is empty") }
            if !seen.insert(n.name).inserted {
                throw InputError(file: file, location: "nodes[\(i)].name", problem: "node '\(n.name)' is listed twice")
            }
            for (j, g) in n.gpus.enumerated() where g.memory.bytes == 0 {
                throw InputError(file: file, location: "nodes[\(i)].gpus[\(j)].memory", problem: "GPU memory must be larger than 0")
            }
            for (j, g) in n.gpus.enumerated() {
                // Bounded: runtimes are base ÷ weight, and a weight of 1e308 or 1e-300 turned them into 0 or
                // an overflow the simulator's bound trapped on (and the router's sums into infinities).
                if let w = g.weight, !(w >= GPUWeights.range.lowerBound && w <= GPUWeights.range.upperBound) {
                    throw InputError(file: file, location: "nodes[\(i)].gpus[\(j)].weight",
                                     problem: "weight must be a number from \(GPUWeights.range.lowerBound) to \(Int(GPUWeights.range.upperBound)) (RTX 5090 = 10)")
                }
                if let b = g.baseline, b.bytes >= g.memory.bytes {
                    throw InputError(file: file, location: "nodes[\(i)].gpus[\(j)].baseline", problem: "baseline \(ByteSize.format(b.bytes)) leaves nothing of \(ByteSize.format(g.memory.bytes))")
                }
            }
            if let s = n.cpuSlots, s < 0 {
                throw InputError(file: file, location: "nodes[\(i)].cpu_slots", problem: "cpu_slots must be 0 or more")
            }
            for (j, t) in (n.commandAllowlist ?? []).enumerated() {
                do { try t.validate() } catch {
                    throw InputError(file: file, location: "nodes[\(i)].command_allowlist[\(j)]", problem: "\(error)")
                }
            }
            for (j, name) in (n.commandEnv ?? []).enumerated() {
                if let why = CommandEnvironment.nameProblem(name) {
                    throw InputError(file: file, location: "nodes[\(i)].command_env[\(j)]", problem: "'\(name)': \(why)")
                }
            }
        }
    }
}

public struct NodeConfig: Codable, Sendable, Equatable {
    public var name: String
    public var gpus: [GPUConfig]
    /// Services living on this node (`comfyui`, `tabbyapi`, `ollama`, `tts`, `scorer`, ...).
    public var services: [String]
    /// Whole argv templates the `command` executor may run on this node (see `CommandTemplate`).
    public var commandAllowlist: [CommandTemplate]?
    /// Spec `env` names `command` jobs may set on this node (none when absent).
    public var commandEnv: [String]?
    /// The user `command` jobs run as (`--command-user` overrides it).
    public var commandUser: String?
    /// CPU-only jobs this node runs at once (nil: the router's default, 4).
    public var cpuSlots: Int?

    public init(name: String, gpus: [GPUConfig] = [], services: [String] = [], commandAllowlist: [CommandTemplate]? = nil,
                cpuSlots: Int? = nil, commandEnv: [String]? = nil, commandUser: String? = nil) {
        self.name = name; self.gpus = gpus; self.services = services; self.commandAllowlist = commandAllowlist
        self.cpuSlots = cpuSlots; self.commandEnv = commandEnv; self.commandUser = commandUser
    }

    enum CodingKeys: String, CodingKey {
        case name, gpus, services
        case commandAllowlist = "command_allowlist"
        case commandEnv = "command_env"
        case commandUser = "command_user"
        case cpuSlots = "cpu_slots"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        gpus = try c.decodeIfPresent([GPUConfig].self, forKey: .gpus) ?? []
        services = try c.decodeIfPresent([String].self, forKey: .services) ?? []
        commandAllowlist = try c.decodeIfPresent([CommandTemplate].self, forKey: .commandAllowlist)
        commandEnv = try c.decodeIfPresent([String].self, forKey: .commandEnv)
        commandUser = try c.decodeIfPresent(String.self, forKey: .commandUser)
        cpuSlots = try c.decodeIfPresent(Int.self, forKey: .cpuSlots)
    }
}

public struct GPUConfig: Codable, Sendable, Equatable {
    /// Model name as nvidia-smi prints it, e.g. `NVIDIA GeForce RTX 5090`.
    public var model: String
    public var memory: ByteCount
    /// Relative speed (RTX 5090 = 10). Nil: the built-in table decides.
    public var weight: Double?
    /// VRAM a resident service holds on this GPU (simulated GPUs start with it used).
    public var baseline: ByteCount?
    /// Models resident on this GPU (the router prefers a GPU that already has a job's model loaded).
    public var models: [String]?

    public init(model: String, memory: ByteCount, weight: Double? = nil, baseline: ByteCount? = nil,
                models: [String]? = nil) {
        self.model = model; self.memory = memory; self.weight = weight; self.baseline = baseline
        self.models = models
    }
}
