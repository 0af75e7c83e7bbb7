import Foundation

/// A job waiting for placement, as the router needs to see it.
/// `kind` is a string, not `JobKind`: workloads and the seed's rules also speak of
/// `lora`, `video` and `voice`, and an unknown kind still gets a default estimate.
public struct RouterJob: Sendable, Equatable {
    public var id: String
    public var batchID: String?
    public var kind: String
    public var spec: JSONValue
    /// VRAM per GPU; nil or 0 means "unknown" for GPU jobs and "none" for CPU-only jobs.
    public var vramRequestBytes: UInt64?
    /// 0 together with no VRAM request: a CPU-only job.
    public var gpusRequested: Int
    public var priority: Int
    /// When it became ready to run: submitted, and every job it is after done. Aging counts from it
    /// (`JobOrdering`), as in Slurm's age factor, which counts only the time a job was eligible.
    public var submittedAt: Date
    /// e.g. `{"node": "hydra-ai", "gpu_model": "5090", "service": "comfyui"}`.
    public var constraints: JSONValue?
    public var attempt: Int
    public var lastFailure: FailureClass?
    /// Per-GPU reservation of the attempt that failed (the base for the OOM escalation).
    public var lastReservedBytes: UInt64?
    /// Seconds of work that waits on this job: the longest chain of its dependents, each at
    /// its fastest. 0 when nothing depends on it (or nobody knows): then only its own runtime
    /// ranks it inside its tier.
    public var tailS: Double
    /// For an upcoming job: the IDs of the dependencies it still waits for. The pending ones
    /// among them are ranked by the work it and its kind will bring (`GatedWork`).
    public var waitsOn: [String] = []

    public init(id: String, batchID: String? = nil, kind: String, spec: JSONValue = .object([:]),
                vramRequestBytes: UInt64? = nil, gpusRequested: Int = 1, priority: Int = 0,
                submittedAt: Date, constraints: JSONValue? = nil, attempt: Int = 1,
                lastFailure: FailureClass? = nil, lastReservedBytes: UInt64? = nil, tailS: Double = 0) {
        self.id = id; self.batchID = batchID; self.kind = kind; self.spec = spec
        self.vramRequestBytes = vramRequestBytes; self.gpusRequested = gpusRequested
        self.priority = priority; self.submittedAt = submittedAt; self.constraints = constraints
        self.attempt = attempt; self.lastFailure = lastFailure; self.lastReservedBytes = lastReservedBytes
        self.tailS = tailS
    }

    /// No GPU and no VRAM asked for: it takes a CPU slot.
    public var cpuOnly: Bool { Self.cpuOnly(gpus: gpusRequested, vramBytes: vramRequestBytes ?? 0) }
    public static func cpuOnly(gpus: Int, vramBytes: UInt64) -> Bool { gpus <= 0 && vramBytes == 0 }

    /// `spec.model`, lowercased: the key of the learned statistics and of "model loaded".
    public var modelKey: String { spec["model"]?.stringValue?.lowercased() ?? "" }
}

/// One GPU as the coordinator sees it this tick.
public struct RouterGPU: Sendable, Equatable {
    public var uuid: String
    public var index: Int
    /// Name as nvidia-smi prints it (`NVIDIA GeForce RTX 5090`).
    public var model: String
    public var totalBytes: UInt64
    /// Live reading; nil when the GPU reports none (then reservations and the baseline count).
    public var usedBytes: UInt64?
    /// Configured relative speed; nil: the built-in table.
    public var weight: Double?
    /// VRAM a resident service is known to hold (config); used for "can this ever fit".
    public var baselineBytes: UInt64
    public var loadedModels: [String]

    public init(uuid: String, index: Int, model: String, totalBytes: UInt64, usedBytes: UInt64? = nil,
                weight: Double? = nil, baselineBytes: UInt64 = 0, loadedModels: [String] = []) {
        self.uuid = uuid; self.index = index; self.model = model; self.totalBytes = totalBytes
        self.usedBytes = usedBytes; self.weight = weight; self.baselineBytes = baselineBytes
        self.loadedModels = loadedModels
    }
}

public struct RouterNode: Sendable, Equatable {
    public var name: String
    /// Heartbeat present.
    public var up: Bool
    public var draining: Bool
    public var services: [String]
    public var gpus: [RouterGPU]
    /// CPU-only jobs this node runs at once.
    public var cpuSlots: Int
    /// The command templates this node's agent runs (`command` jobs); nil: not known, any argv may go here.
    public var commands: CommandAllowlist?
    /// Why nothing can be dispatched here now although the node is up (its job stream takes no entry:
    /// `stream_id_exhausted`, `not_a_stream`); nil: dispatchable. What runs there still counts.
    public var undispatchable: String? = nil
    /// Set when the node's GPU reading is too old to place GPU jobs by (its age in seconds).
    public var staleGPUReadingS: Double? = nil

    public init(name: String, up: Bool = true, draining: Bool = false, services: [String] = [],
                gpus: [RouterGPU] = [], cpuSlots: Int = RouterNode.defaultCPUSlots, commands: CommandAllowlist? = nil) {
        self.name = name; self.up = up; self.draining = draining; self.services = services
        self.gpus = gpus; self.cpuSlots = cpuSlots; self.commands = commands
    }

    public static let defaultCPUSlots = 4
}

/// A job that holds (or is about to hold) resources on a node: placed, dispatched or running.
public struct RouterRunningJob: Sendable, Equatable {
    public var id: String
    public var batchID: String?
    public var kind: String
    public var spec: JSONValue
    public var node: String
    /// Empty for a CPU-only job (it takes one CPU slot).
    public var gpuUUIDs: [String]
    public var reservedBytesPerGPU: UInt64
    public var placedAt: Date
    public var startedAt: Date?
    /// Its process shows in the node's compute-apps list, so `usedBytes` already contains it.
    public var visible: Bool
    /// When the coordinator expects it to end; nil: the router estimates from kind, spec and stats.
    public var expectedEnd: Date?
    /// Its priority: a GPU that only interactive jobs (priority ≥ `urgentPriority`) keep busy counts as idle for batch jobs.
    public var priority: Int

    public init(id: String, batchID: String? = nil, kind: String, spec: JSONValue = .object([:]), node: String,
                gpuUUIDs: [String], reservedBytesPerGPU: UInt64, placedAt: Date, startedAt: Date? = nil,
                visible: Bool = false, expectedEnd: Date? = nil, priority: Int = 0) {
        self.priority = priority
        self.id = id; self.batchID = batchID; self.kind = kind; self.spec = spec; self.node = node
        self.gpuUUIDs = gpuUUIDs; self.reservedBytesPerGPU = reservedBytesPerGPU; self.placedAt = placedAt
        self.startedAt = startedAt; self.visible = visible; self.expectedEnd = expectedEnd
    }
}

/// Everything the router knows about the cluster at one instant.
public struct ClusterSnapshot: Sendable, Equatable {
    public var nodes: [RouterNode]
    public var running: [RouterRunningJob]
    /// VRAM kept free on every GPU.
    public var headroomBytes: UInt64

    public init(nodes: [RouterNode], running: [RouterRunningJob] = [], headroomBytes: UInt64 = 0) {
        self.nodes = nodes; self.running = running; self.headroomBytes = headroomBytes
    }

    /// What the coordinator knows about one node this tick.
    public struct NodeLive: Sendable, Equatable {
        public var up: Bool
        public var draining: Bool
        /// The heartbeat's inventory; nil: the config's GPUs with no live reading.
        public var inventory: Inventory?
        /// The command templates the agent says it runs; nil: the cluster file's `command_allowlist`, if any.
        public var commands: CommandAllowlist?
        /// See `RouterNode.undispatchable`.
        public var undispatchable: String?
        /// See `RouterNode.staleGPUReadingS`.
        public var staleGPUReadingS: Double? = nil
        public init(up: Bool, draining: Bool = false, inventory: Inventory? = nil, commands: CommandAllowlist? = nil,
                    undispatchable: String? = nil) {
            self.up = up; self.draining = draining; self.inventory = inventory; self.commands = commands
            self.undispatchable = undispatchable
        }
    }

    /// Builds the snapshot from the cluster config, the heartbeats and the jobs on nodes.
    /// A config node without an entry in `live` is down. Live GPUs are matched to config
    /// GPUs by index (weight, baseline, loaded models come from the config).
    public static func build(config: ClusterConfig, live: [String: NodeLive], running: [RouterRunningJob]) -> ClusterSnapshot {
        var nodes: [RouterNode] = []
        for n in config.nodes {
            let l = live[n.name]
            var gpus: [RouterGPU] = []
            if let inv = l?.inventory, !inv.gpus.isEmpty {
                for (i, g) in inv.gpus.enumerated() {
                    let idx = g.index ?? i
                    let cfg = idx < n.gpus.count ? n.gpus[idx] : nil
                    let total = g.memoryTotalBytes ?? cfg?.memory.bytes ?? 0
                    gpus.append(RouterGPU(uuid: g.uuid, index: idx, model: g.name ?? cfg?.model ?? "unknown GPU",
                                          totalBytes: total, usedBytes: g.memoryUsedBytes, weight: cfg?.weight,
                                          baselineBytes: cfg?.baseline?.bytes ?? 0, loadedModels: cfg?.models ?? []))
                }
            } else {
                for (i, g) in n.gpus.enumerated() {
                    gpus.append(RouterGPU(uuid: "\(n.name)-gpu\(i)", index: i, model: g.model, totalBytes: g.memory.bytes,
                                          usedBytes: nil, weight: g.weight, baselineBytes: g.baseline?.bytes ?? 0,
                                          loadedModels: g.models ?? []))
                }
            }
            // What the agent says it runs wins; without a word from it (down, or from before agents said), the
            // cluster file's list, which its agent starts from; a node with neither takes any argv.
            let commands = l?.commands ?? n.commandAllowlist.map(CommandAllowlist.init)
            var node = RouterNode(name: n.name, up: l?.up ?? false, draining: l?.draining ?? false,
                                  services: n.services, gpus: gpus, cpuSlots: n.cpuSlots ?? RouterNode.defaultCPUSlots,
                                  commands: commands)
            node.undispatchable = l?.undispatchable
            node.staleGPUReadingS = l?.staleGPUReadingS
            nodes.append(node)
        }
        return ClusterSnapshot(nodes: nodes, running: running, headroomBytes: config.headroom?.bytes ?? 0)
    }
}

/// One `runtime_stats` row.
public struct RuntimeStatsRow: Sendable, Equatable, Codable {
    public var kind: String
    public var modelKey: String
    /// nvidia-smi name, or `cpu` for CPU-only runs.
    public var gpuModel: String
    public var n: Int
    public var meanS: Double
    public var p95S: Double
    public var peakVRAMP95Bytes: UInt64?

    public init(kind: String, modelKey: String, gpuModel: String, n: Int, meanS: Double, p95S: Double,
                peakVRAMP95Bytes: UInt64? = nil) {
        self.kind = kind; self.modelKey = modelKey.lowercased(); self.gpuModel = gpuModel; self.n = n
        self.meanS = meanS; self.p95S = p95S; self.peakVRAMP95Bytes = peakVRAMP95Bytes
    }

    enum CodingKeys: String, CodingKey {
        case kind, n
        case modelKey = "model_key"
        case gpuModel = "gpu_model"
        case meanS = "mean_s"
        case p95S = "p95_s"
        case peakVRAMP95Bytes = "peak_vram_p95_bytes"
    }
}

/// What the router has learned from completed jobs, indexed for lookups in the inner loop.
public struct RuntimeStats: Sendable, Equatable {
    public private(set) var rows: [RuntimeStatsRow]
    private var runtime: [Key: RuntimeStatsRow] = [:]
    private var peak: [Key: UInt64] = [:]

    /// Keys as fields, not one joined string: a pass looks up every job's peak, and building the
    /// joined string allocated for each (a model name of more than a few letters).
    struct Key: Hashable { var kind: String, model: String, gpu: String }

    public init(rows: [RuntimeStatsRow] = [], minSamples: Int = 3) {
        self.rows = rows
        // Few samples say little; below `minSamples` the spec and the defaults decide.
        for r in rows where r.n >= minSamples {
            runtime[Self.key(r.kind, r.modelKey, r.gpuModel)] = r
            if let p = r.peakVRAMP95Bytes {
                // Over GPU models, the largest p95 peak: the estimate has to hold wherever the job lands.
                let k = Self.key(r.kind, r.modelKey, "")
                peak[k] = max(peak[k] ?? 0, p)
            }
        }
    }

    public static let empty = RuntimeStats()

    static func key(_ kind: String, _ model: String, _ gpu: String) -> Key { Key(kind: kind, model: model, gpu: gpu) }

    public func meanRuntime(kind: String, modelKey: String, gpuModel: String) -> Double? {
        runtime[Self.key(kind, modelKey, gpuModel)]?.meanS
    }

    public func peakVRAM(kind: String, modelKey: String) -> UInt64? {
        peak[Self.key(kind, modelKey, "")]
    }

    public var isEmpty: Bool { runtime.isEmpty && peak.isEmpty }
}
