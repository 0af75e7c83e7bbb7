import Foundation

/// A simulator workload file (deploy/workloads/*.yaml): groups of identical jobs, their
/// dependencies, and the services resident on GPUs for the whole run. See docs/router.md.
public struct Workload: Codable, Sendable, Equatable {
    public var name: String?
    public var description: String?
    public var resident: [Resident]
    public var groups: [Group]

    /// A service holding VRAM (and a model) on one GPU for the whole run, e.g. the 70B LLM.
    public struct Resident: Codable, Sendable, Equatable {
        public var node: String
        public var gpu: Int
        public var vram: ByteCount
        public var model: String?
        public var service: String?
        /// The service unloads at this time (nil: it stays all run). Until then its VRAM is
        /// a live reading the router must work around, not a fixed part of the GPU.
        public var untilS: Double?

        enum CodingKeys: String, CodingKey {
            case node, gpu, vram, model, service
            case untilS = "until_s"
        }
    }

    public struct Group: Codable, Sendable, Equatable {
        public var name: String
        public var count: Int
        public var kind: String
        /// Batch for fair share (default: the group's name).
        public var batch: String?
        public var priority: Int
        /// GPUs per job; 0 (or `cpu: true`) makes a CPU-only job.
        public var gpus: Int
        public var cpu: Bool
        /// VRAM per GPU the job asks for; nil: the router's estimate.
        public var vram: ByteCount?
        /// VRAM the job really peaks at (default: the request). Above what the GPU has left, it fails out-of-memory.
        public var peakVRAM: ByteCount?
        public var model: String?
        public var service: String?
        public var constraints: JSONValue?
        /// Runtime measured on the GPU named by `on` (converted to other GPUs via the weights);
        /// without `on`, the runtime at weight 1. CPU jobs: the runtime.
        public var runtimeS: Double?
        public var on: String?
        /// Runtime at weight 1 (instead of `runtime_s` + `on`).
        public var baseRuntimeS: Double?
        /// A fixed runtime on any GPU (sleep-like jobs).
        public var durationS: Double?
        /// Each job's real runtime is scaled by a factor drawn from [1 − jitter, 1 + jitter]; the router never sees it.
        public var jitter: Double
        public var submitAtS: Double
        /// Job i is submitted at `submit_at_s + i × every_s`.
        public var everyS: Double
        /// Job i waits for its share of each named group's jobs (200 → 600: three per parent).
        public var after: [String]
        /// Every job waits for all jobs of each named group.
        public var afterAll: [String]

        enum CodingKeys: String, CodingKey {
            case name, count, kind, batch, priority, gpus, cpu, vram, model, service, constraints, on, jitter, after
            case peakVRAM = "peak_vram"
            case runtimeS = "runtime_s"
            case baseRuntimeS = "base_runtime_s"
            case durationS = "duration_s"
            case submitAtS = "submit_at_s"
            case everyS = "every_s"
            case afterAll = "after_all"
        }

        public init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            count = try c.decodeIfPresent(Int.self, forKey: .count) ?? 1
            kind = try c.decode(String.self, forKey: .kind)
            batch = try c.decodeIfPresent(String.self, forKey: .batch)
            priority = try c.decodeIfPresent(Int.self, forKey: .priority) ?? 0
            cpu = try c.decodeIfPresent(Bool.self, forKey: .cpu) ?? false
            gpus = try c.decodeIfPresent(Int.self, forKey: .gpus) ?? (cpu ? 0 : 1)
            if cpu { gpus = 0 }
            vram = try c.decodeIfPresent(ByteCount.self, forKey: .vram)
            peakVRAM = try c.decodeIfPresent(ByteCount.self, forKey: .peakVRAM)
            model = try c.decodeIfPresent(String.self, forKey: .model)
            service = try c.decodeIfPresent(String.self, forKey: .service)
            constraints = try c.decodeIfPresent(JSONValue.self, forKey: .constraints)
            runtimeS = try c.decodeIfPresent(Double.self, forKey: .runtimeS)
            on = try c.decodeIfPresent(String.self, forKey: .on)
            baseRuntimeS = try c.decodeIfPresent(Double.self, forKey: .baseRuntimeS)
            durationS = try c.decodeIfPresent(Double.self, forKey: .durationS)
            jitter = try c.decodeIfPresent(Double.self, forKey: .jitter) ?? 0
            submitAtS = try c.decodeIfPresent(Double.self, forKey: .submitAtS) ?? 0
            everyS = try c.decodeIfPresent(Double.self, forKey: .everyS) ?? 0
            after = try Self.names(c, .after)
            afterAll = try Self.names(c, .afterAll)
        }

        /// `after: expand` or `after: [expand, lora]`.
        private static func names(_ c: KeyedDecodingContainer<CodingKeys>, _ k: CodingKeys) throws -> [String] {
            if let s = try? c.decodeIfPresent(String.self, forKey: k) { return [s] }
            return try c.decodeIfPresent([String].self, forKey: k) ?? []
        }
    }

    enum CodingKeys: String, CodingKey { case name, description, resident, groups }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        resident = try c.decodeIfPresent([Resident].self, forKey: .resident) ?? []
        groups = try c.decode([Group].self, forKey: .groups)
    }

    public init(name: String? = nil, resident: [Resident] = [], groups: [Group]) {
        self.name = name; self.description = nil; self.resident = resident; self.groups = groups
    }

    /// Runtime at weight 1 of a group's jobs (before jitter); nil for fixed-duration jobs.
    public func baseRuntime(of g: Group, cluster: ClusterConfig) -> Double? {
        if g.durationS != nil { return nil }
        if let b = g.baseRuntimeS { return b }
        guard let r = g.runtimeS else { return nil }
        guard g.gpus > 0, let on = g.on?.lowercased() else { return r }
        let configured = cluster.nodes.flatMap(\.gpus).first { $0.model.lowercased().contains(on) }
        return r * GPUWeights.weight(model: configured?.model ?? on, configured: configured?.weight)
    }

    public static func load(path: String, cluster: ClusterConfig) throws -> Workload {
        let w = try ConfigLoader.load(Workload.self, path: path)
        try w.validate(file: path, cluster: cluster)
        return w
    }

    public static func parse(_ text: String, file: String = "workload", cluster: ClusterConfig) throws -> Workload {
        let w = try ConfigLoader.decode(Workload.self, from: try ConfigLoader.parseDocument(text, file: file), file: file)
        try w.validate(file: file, cluster: cluster)
        return w
    }

    /// Checks what decoding cannot: names, references, numbers, and GPUs that exist.
    public func validate(file: String, cluster: ClusterConfig) throws {
        if groups.isEmpty { throw InputError(file: file, location: "groups", problem: "no job groups; add at least one") }
        // Times up to `KindDefaults.maxSeconds`, as batch files: past about 1e18 s the bound's integer
        // arithmetic trapped (a workload with base_runtime_s: 1e18 stopped `hydra simulate`).
        let most = KindDefaults.maxSeconds
        var seen = Set<String>()
        for (i, g) in groups.enumerated() {
            let at = "groups[\(i)]"
            if g.name.isEmpty { throw InputError(file: file, location: "\(at).name", problem: "group name is empty") }
            if !seen.insert(g.name).inserted { throw InputError(file: file, location: "\(at).name", problem: "group '\(g.name)' is listed twice") }
            if g.count < 0 || g.count > 1_000_000 { throw InputError(file: file, location: "\(at).count", problem: "count must be between 0 and 1000000") }
            if g.gpus < 0 { throw InputError(file: file, location: "\(at).gpus", problem: "gpus must be 0 or more") }
            for (k, v) in [("runtime_s", g.runtimeS), ("duration_s", g.durationS), ("base_runtime_s", g.baseRuntimeS)] {
                if let v, !(v > 0) || !(v <= most) {
                    throw InputError(file: file, location: "\(at).\(k)", problem: "must be a positive number of seconds up to \(Int(most))")
                }
            }
            if g.runtimeS == nil && g.durationS == nil && g.baseRuntimeS == nil {
                throw InputError(file: file, location: "\(at).runtime_s", problem: "give runtime_s (with `on: <GPU model>` for GPU jobs), base_runtime_s or duration_s")
            }
            if g.gpus > 0, g.runtimeS != nil, g.on == nil {
                throw InputError(file: file, location: "\(at).on", problem: "runtime_s of a GPU job needs `on: <GPU model>` (the GPU it was measured on), or use base_runtime_s")
            }
            if !(0...0.9).contains(g.jitter) { throw InputError(file: file, location: "\(at).jitter", problem: "jitter must be between 0 and 0.9") }
            if g.submitAtS < 0 || g.everyS < 0 { throw InputError(file: file, location: "\(at).submit_at_s", problem: "times must be 0 or more") }
            if !(g.submitAtS + g.everyS * Double(max(0, g.count - 1)) <= most) {
                throw InputError(file: file, location: "\(at).every_s", problem: "the last job would arrive after \(Int(most)) s (submit_at_s + every_s × (count − 1))")
            }
            if let on = g.on, GPUWeights.builtIn(on) == nil,
               !cluster.nodes.contains(where: { $0.gpus.contains { $0.model.lowercased().contains(on.lowercased()) } }) {
                throw InputError(file: file, location: "\(at).on", problem: "'\(on)' is no GPU model of the cluster or the built-in table")
            }
            for dep in g.after + g.afterAll where !seen.contains(dep) || dep == g.name {
                throw InputError(file: file, location: "\(at).after", problem: "'\(dep)' is not a group listed before '\(g.name)'")
            }
        }
        for (i, r) in resident.enumerated() {
            guard let n = cluster.node(named: r.node) else {
                throw InputError(file: file, location: "resident[\(i)].node", problem: "no node '\(r.node)' in the cluster config")
            }
            guard r.gpu >= 0, r.gpu < n.gpus.count else {
                throw InputError(file: file, location: "resident[\(i)].gpu", problem: "node '\(r.node)' has no GPU \(r.gpu) (it has \(n.gpus.count))")
            }
            if let u = r.untilS, !(u >= 0 && u <= most) {
                throw InputError(file: file, location: "resident[\(i)].until_s", problem: "must be a number of seconds from 0 to \(Int(most))")
            }
            if r.vram.bytes >= n.gpus[r.gpu].memory.bytes {
                throw InputError(file: file, location: "resident[\(i)].vram", problem: "\(ByteSize.format(r.vram.bytes)) does not leave room on a \(ByteSize.format(n.gpus[r.gpu].memory.bytes)) GPU")
            }
        }
    }
}

extension Workload {
    /// The same workload with every group below `priority` (default: the router's urgent
    /// priority) submitted at the start: a backlog submitted at once (a night's batches), while
    /// the streams at or above it (interactive requests) keep arriving over time.
    public func submittedAtOnce(below priority: Int = RouterPolicy.hydra.urgentPriority) -> Workload {
        var w = self
        for i in w.groups.indices where w.groups[i].priority < priority { w.groups[i].submitAtS = 0; w.groups[i].everyS = 0 }
        return w
    }
}
