import Foundation

/// A service that holds a model (and VRAM) on a node's GPUs between jobs — the 70B LLM in
/// TabbyAPI, a model kept alive by Ollama, ComfyUI's cached checkpoints. The night plans when
/// each can give its VRAM back (docs/pipeline.md, "Resident services").
public struct ResidentService: Sendable, Equatable {
    public struct Share: Sendable, Equatable {
        public var gpu: Int
        public var vram: UInt64
        public init(gpu: Int, vram: UInt64) { self.gpu = gpu; self.vram = vram }
    }
    /// `tabbyapi@hydra-ai` unless named.
    public var name: String
    public var node: String
    /// `tabbyapi`, `ollama` or `comfyui` (decides the unload/load call).
    public var service: String
    /// TabbyAPI: the model directory to load back; Ollama: the model to unload/load.
    public var model: String?
    public var gpus: [Share]
    /// Base URL of the service's API (nil: the plan still forecasts, nothing is called).
    public var url: String?
    /// TabbyAPI admin key file (mode 0600); its content is sent as `x-admin-key`.
    public var adminKeyFile: String?
    /// false: kept all night (`unload: never`).
    public var releasable: Bool

    public init(name: String? = nil, node: String, service: String, model: String? = nil, gpus: [Share], url: String? = nil,
                adminKeyFile: String? = nil, releasable: Bool = true) {
        self.name = name ?? "\(service)@\(node)"; self.node = node; self.service = service; self.model = model; self.gpus = gpus
        self.url = url; self.adminKeyFile = adminKeyFile; self.releasable = releasable
    }

    /// Does a job calling `service` with `model` need this resident? A job names the service
    /// (or its kind implies it); the model only narrows it when both sides name one.
    public func isNeeded(service s: String?, model m: String?) -> Bool {
        guard let s, s.lowercased() == service.lowercased() else { return false }
        if let m, let model, m != model { return false }
        return true
    }
}

/// When a stage of the night runs (seconds from the night's start), and what its jobs call.
public struct StageWindow: Sendable, Equatable {
    public var name: String
    public var startS: Double
    public var endS: Double
    public var jobs: Int
    public var service: String?
    public var model: String?
    public init(name: String, startS: Double, endS: Double, jobs: Int, service: String?, model: String?) {
        self.name = name; self.startS = startS; self.endS = endS; self.jobs = jobs; self.service = service; self.model = model
    }
}

/// The plan for one resident: it unloads at `untilS` (nil: it stays all night).
public struct ResidentRelease: Sendable, Equatable {
    public var resident: String
    public var untilS: Double?
    /// The stages that need it (its VRAM is theirs until the last of them is expected to end).
    public var neededBy: [String]
    public var reason: String
}

/// What the runner should do with a resident now.
public enum ResidentAction: Sendable, Equatable {
    case unload(resident: String, reason: String)
    case load(resident: String, reason: String)
}

/// Pure decisions about resident services: when each may unload (from the queue's stages),
/// and, during the night, whether to unload or load one now.
public enum ResidentPlan {
    /// Each resident is needed until the last stage that calls it is expected to finish; then
    /// its VRAM goes to the other jobs. A resident no stage needs unloads at once (0); one marked
    /// `unload: never` stays (nil).
    public static func derive(stages: [StageWindow], residents: [ResidentService]) -> [ResidentRelease] {
        residents.map { r in
            let needers = stages.filter { $0.jobs > 0 && r.isNeeded(service: $0.service, model: $0.model) }
            let names = needers.map(\.name)
            guard r.releasable else { return ResidentRelease(resident: r.name, untilS: nil, neededBy: names, reason: "kept all night (unload: never)") }
            guard let last = needers.max(by: { $0.endS < $1.endS }) else {
                return ResidentRelease(resident: r.name, untilS: 0, neededBy: [], reason: "no stage of the night calls \(r.service)")
            }
            return ResidentRelease(resident: r.name, untilS: last.endS, neededBy: names,
                                   reason: "after \(last.name) (its last job is expected to finish at +\(Self.clock(last.endS)))")
        }
    }

    /// The stages of a simulated night: per workload group, its first start and last finish.
    public static func stages(of workload: Workload, report: SimulationReport) -> [StageWindow] {
        var first: [String: Double] = [:], last: [String: Double] = [:]
        for t in report.timeline {
            guard let dash = t.job.lastIndex(of: "-") else { continue }
            let g = String(t.job[..<dash])
            if let s = t.startS { first[g] = min(first[g] ?? .infinity, s) }
            if let f = t.finishS { last[g] = max(last[g] ?? 0, f) }
        }
        return workload.groups.map { g in
            StageWindow(name: g.name, startS: first[g.name] ?? 0, endS: last[g.name] ?? 0, jobs: g.count,
                        service: g.service ?? KindDefaults.services(kind: g.kind).first, model: g.model)
        }
    }

    /// The residents as the simulator sees them: one per GPU share, unloading at the plan's time.
    public static func residents(_ residents: [ResidentService], releases: [ResidentRelease]?) -> [Workload.Resident] {
        let until = Dictionary((releases ?? []).map { ($0.resident, $0.untilS) }, uniquingKeysWith: { a, _ in a })
        return residents.flatMap { r in
            r.gpus.map { s in
                var w = Workload.Resident(node: r.node, gpu: s.gpu, vram: ByteCount(s.vram), model: r.model, service: r.service)
                w.untilS = until[r.name] ?? nil
                return w
            }
        }
    }

    /// A night forecast with the residents: the plan (their unload times) and the simulation that uses it.
    public struct Forecast: Sendable {
        public var releases: [ResidentRelease]
        public var stages: [StageWindow]
        public var report: SimulationReport
        /// The same night with every resident kept loaded all night.
        public var kept: SimulationReport
    }

    /// Simulates the night with every resident kept, derives the unload times from its stages,
    /// and simulates again with them. A stage that then ends later than a resident it needs
    /// (the router placed differently) moves that resident's time on; repeated until no stage
    /// outlives a resident it needs (a few passes at most).
    public static func forecast(cluster: ClusterConfig, workload: Workload, residents: [ResidentService],
                                policy: RouterPolicy = RouterPolicy.named("hydra")!) -> Forecast {
        var base = workload
        base.resident = workload.resident + Self.residents(residents, releases: nil)
        let kept = Simulator(cluster: cluster, workload: base).run(policy: policy)
        var releases = derive(stages: stages(of: workload, report: kept), residents: residents)
        var report = kept
        var stagesNow = stages(of: workload, report: kept)
        for _ in 0..<4 {
            var w = workload
            w.resident = workload.resident + Self.residents(residents, releases: releases)
            report = Simulator(cluster: cluster, workload: w).run(policy: policy)
            stagesNow = stages(of: workload, report: report)
            let again = derive(stages: stagesNow, residents: residents)
            var moved = false
            for i in releases.indices {
                guard let old = releases[i].untilS, let new = again[i].untilS, new > old + 1e-9 else { continue }
                releases[i] = again[i]; moved = true
            }
            if !moved { break }
        }
        return Forecast(releases: releases, stages: stagesNow, report: report, kept: kept)
    }

    /// During the night: unload a resident once its stages have no work left (nothing pending,
    /// nothing running, nothing still to be submitted) and no active job on the cluster calls
    /// it; load it back when an active job calls it again. `loaded` is the runner's view of
    /// which residents are loaded; `stagesOpen` the stages that may still submit jobs;
    /// `activeNeeds` (service, model) of every pending or running job.
    public static func decide(residents: [ResidentService], releases: [ResidentRelease], loaded: Set<String>,
                              stagesOpen: Set<String>, activeNeeds: [(service: String?, model: String?)],
                              elapsedS: Double) -> [ResidentAction] {
        let plan = Dictionary(releases.map { ($0.resident, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [ResidentAction] = []
        for r in residents {
            let waiting = activeNeeds.filter { r.isNeeded(service: $0.service, model: $0.model) }.count
            if loaded.contains(r.name) {
                guard r.releasable, let p = plan[r.name], p.untilS != nil else { continue }
                let open = p.neededBy.filter { stagesOpen.contains($0) }
                guard open.isEmpty, waiting == 0 else { continue }
                let planned = p.untilS!
                let when = elapsedS < planned ? "\(clock(planned - elapsedS)) before the forecast" : "\(clock(elapsedS - planned)) after the forecast"
                out.append(.unload(resident: r.name, reason: (p.neededBy.isEmpty ? "no stage of the night calls it" : "\(p.neededBy.joined(separator: ", ")) done")
                                   + " and no active job calls \(r.service); \(when)"))
            } else if waiting > 0 {
                out.append(.load(resident: r.name, reason: "\(waiting) active job(s) call \(r.service)" + (r.model.map { " (\($0))" } ?? "")))
            }
        }
        return out
    }

    /// "1h05m", "12m30s", "40s".
    public static func clock(_ s: Double) -> String {
        let t = Int(max(0, s).rounded())
        if t >= 3600 { return String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) }
        if t >= 60 { return String(format: "%dm%02ds", t / 60, t % 60) }
        return "\(t)s"
    }
}
