import Foundation

/// What happens to images that fail a gate.
public enum RejectPolicy: Sendable, Equatable {
    /// Moved to this directory (`<dir>/<night>/<collection>/`), kept for people to look at.
    case quarantine(String)
    /// Removed. When `delete_assets` needs approval, they wait in the quarantine
    /// directory until someone approves the deletion.
    case delete(quarantine: String)

    public var quarantineDir: String {
        switch self { case .quarantine(let d), .delete(let d): return d }
    }
}

/// Which actions wait for a person. Each action has a tier; actions at or above
/// `approvalFromTier` go to the approval queue (`awaiting_approval`).
public struct ApprovalPolicy: Sendable, Equatable {
    public var approvalFromTier: Int
    public var tiers: [String: Int]

    public static let defaultTiers: [String: Int] = ["generate": 0, "organize": 0, "quarantine": 1, "delete_assets": 2, "train_lora": 3]

    public init(approvalFromTier: Int = 2, tiers: [String: Int] = ApprovalPolicy.defaultTiers) {
        self.approvalFromTier = approvalFromTier; self.tiers = tiers
    }

    public func tier(_ action: String) -> Int { tiers[action] ?? Self.defaultTiers[action] ?? 0 }
    public func needsApproval(_ action: String) -> Bool { tier(action) >= approvalFromTier }
}

/// The ComfyUI side of every image job of the night.
public struct WorkflowSettings: Sendable, Equatable {
    public var template: String = "txt2img-basic"
    public var checkpoint: String?
    public var negativePrompt: String?
    public var width: Int?
    public var height: Int?
    public var steps: Int?
    public var cfg: Double?
    public init() {}
}

/// The prompt-expansion side (`llm` jobs with `spec.expand`).
public struct ExpansionSettings: Sendable, Equatable {
    /// `tabbyapi`, `ollama` or `openai.<name>`; also the service the job must be placed on.
    public var endpoint: String = "tabbyapi"
    public var model: String?
    public var instructions: String = "Vary pose, expression and setting; keep the style notes; one sentence each; fictional characters only."
    public init() {}
}

/// Resources the night's jobs ask for. 0 VRAM makes a CPU-only job: the LLM and the
/// scorer are resident services whose memory the job itself does not allocate.
public struct PipelineJobSettings: Sendable, Equatable {
    public var imageVRAM: UInt64 = 8 * ByteSize.GiB
    public var llmVRAM: UInt64 = 0
    public var scoreVRAM: UInt64 = 0
    public var maxAttempts: Int = 3
    public var priority: Int = 0
    public var imageDeadlineS: Double? = 900
    public init() {}
}

/// Runtimes the forecast assumes (seconds at compute weight 1; CPU jobs: as is).
public struct ForecastSettings: Sendable, Equatable {
    public var llmS: Double = 6
    public var imageS: Double = KindDefaults.baseRuntimeS(kind: "image")
    public var scoreS: Double = 4
    public init() {}
}

/// The night window, as minutes after midnight in local time (22:00 → 1320).
public struct NightWindow: Sendable, Equatable {
    public var startMinute: Int
    public var endMinute: Int
    public init(startMinute: Int = 22 * 60, endMinute: Int = 6 * 60) { self.startMinute = startMinute; self.endMinute = endMinute }

    /// "22:00" → 1320.
    public static func parseClock(_ s: String) -> Int? {
        let p = s.split(separator: ":")
        guard p.count == 2, let h = Int(p[0]), let m = Int(p[1]), (0..<24).contains(h), (0..<60).contains(m), p[1].count == 2 else { return nil }
        return h * 60 + m
    }
}

/// `pipeline.yaml`: everything the overnight runner needs besides the queue.
public struct PipelineConfig: Sendable, Equatable {
    public var file: String
    public var queueFile: String
    public var assetsDir: String
    public var reportsDir: String
    /// The agents' output directories as mounted on the runner's host: the only place image files are moved or deleted from.
    public var outputsDirs: [String]
    public var rejects: RejectPolicy
    public var gates: GateThresholds
    public var variationsPerTask: Int
    public var maxImagesPerNight: Int
    public var window: NightWindow
    public var denylistFile: String?
    public var approvals: ApprovalPolicy
    public var workflow: WorkflowSettings
    public var expansion: ExpansionSettings
    public var jobs: PipelineJobSettings
    public var forecast: ForecastSettings
    public var pollIntervalS: Double
    /// Seconds running jobs get after the deadline before the runner writes the report and leaves.
    public var drainS: Double
    /// Cluster YAML for the forecast; nil: $HYDRA_CLUSTER.
    public var clusterFile: String?
    /// Services holding a model on GPUs between jobs, planned with the night (`residents:`).
    public var residents: [ResidentService] = []

    static let keys: Set<String> = ["queue", "assets_dir", "reports_dir", "outputs_dir", "rejects", "quarantine_dir", "gates", "variations_per_task",
                                    "max_images_per_night", "night", "denylist", "approvals", "workflow", "expansion", "jobs",
                                    "forecast", "poll_interval_s", "drain_s", "cluster", "residents"]

    /// The agent's default `--output-dir`.
    public static let defaultOutputsDir = "/var/lib/hydra/outputs"

    public static func load(path: String) throws -> PipelineConfig {
        try parse(text: try ConfigLoader.readFile(path), file: path)
    }

    /// Relative paths in the file are relative to the file's directory, so a config and
    /// its queue can move together.
    public static func parse(text: String, file: String) throws -> PipelineConfig {
        let doc = try ConfigLoader.parseDocument(text, file: file)
        let r = try FieldReader(doc, file: file, at: "", known: keys)
        let base = (file as NSString).deletingLastPathComponent
        func resolve(_ p: String) -> String {
            if p.hasPrefix("/") { return p }
            return base.isEmpty ? p : (base as NSString).appendingPathComponent(p)
        }
        let queue = resolve(try r.requiredString("queue"))
        let assets = resolve(try r.requiredString("assets_dir"))
        let reports = resolve(try r.requiredString("reports_dir"))
        let outputs: [String]
        switch r.object["outputs_dir"] {
        case nil, .null?: outputs = [Self.defaultOutputsDir]
        case .string(let one)?: outputs = [resolve(one)]
        case .array(let many)?:
            let dirs = many.compactMap(\.stringValue)
            guard dirs.count == many.count, !dirs.isEmpty, !dirs.contains(where: \.isEmpty) else {
                throw r.error("outputs_dir", "expected a directory or a non-empty list of directories")
            }
            outputs = dirs.map(resolve)
        default: throw r.error("outputs_dir", "expected a directory or a non-empty list of directories")
        }
        if outputs.contains(where: { $0.isEmpty || $0 == "/" }) { throw r.error("outputs_dir", "must name a directory other than /") }
        let quarantine = resolve(try r.string("quarantine_dir") ?? ((assets as NSString).appendingPathComponent(".quarantine")))
        let rejects: RejectPolicy
        switch try r.string("rejects") ?? "quarantine" {
        case "quarantine": rejects = .quarantine(quarantine)
        case "delete": rejects = .delete(quarantine: quarantine)
        case let other: throw r.error("rejects", "'\(other)' is neither quarantine nor delete")
        }
        var gates = GateThresholds()
        if let g = try r.sub("gates", known: ["aesthetic", "technical", "face_similarity", "no_face"]) {
            gates.aesthetic = try g.threshold("aesthetic", default: gates.aesthetic, range: 0...10)
            gates.technical = try g.threshold("technical", default: gates.technical, range: 0...100)
            gates.faceSimilarity = try g.threshold("face_similarity", default: gates.faceSimilarity, range: -1...1)
            switch try g.string("no_face") ?? "reject" {
            case "reject": gates.passWithoutFace = false
            case "pass": gates.passWithoutFace = true
            case let other: throw g.error("no_face", "'\(other)' is neither reject nor pass")
            }
        }
        var window = NightWindow()
        if let n = try r.sub("night", known: ["start", "end"]) {
            if let s = try n.string("start") {
                guard let m = NightWindow.parseClock(s) else { throw n.error("start", "'\(s)' is not a time like 22:00") }
                window.startMinute = m
            }
            if let s = try n.string("end") {
                guard let m = NightWindow.parseClock(s) else { throw n.error("end", "'\(s)' is not a time like 06:00") }
                window.endMinute = m
            }
        }
        var approvals = ApprovalPolicy()
        if let a = try r.sub("approvals", known: ["approval_from_tier", "tiers"]) {
            approvals.approvalFromTier = try a.int("approval_from_tier", default: approvals.approvalFromTier, range: 0...100)
            if let t = try a.sub("tiers", known: nil) {
                for (k, v) in t.object {
                    guard let i = v.intValue, (0...100).contains(i) else { throw t.error(k, "expected a tier number 0…100") }
                    approvals.tiers[k] = i
                }
            }
        }
        var workflow = WorkflowSettings()
        if let w = try r.sub("workflow", known: ["template", "checkpoint", "negative_prompt", "width", "height", "steps", "cfg"]) {
            workflow.template = try w.string("template") ?? workflow.template
            workflow.checkpoint = try w.string("checkpoint")
            workflow.negativePrompt = try w.string("negative_prompt")
            workflow.width = try w.optionalInt("width", range: 64...8192)
            workflow.height = try w.optionalInt("height", range: 64...8192)
            workflow.steps = try w.optionalInt("steps", range: 1...500)
            workflow.cfg = try w.optionalDouble("cfg", range: 0...100)
        }
        var expansion = ExpansionSettings()
        if let e = try r.sub("expansion", known: ["endpoint", "model", "instructions"]) {
            expansion.endpoint = try e.string("endpoint") ?? expansion.endpoint
            expansion.model = try e.string("model")
            expansion.instructions = try e.string("instructions") ?? expansion.instructions
        }
        var jobs = PipelineJobSettings()
        if let j = try r.sub("jobs", known: ["image_vram", "llm_vram", "score_vram", "max_attempts", "priority", "image_deadline_s"]) {
            jobs.imageVRAM = try j.bytes("image_vram") ?? jobs.imageVRAM
            jobs.llmVRAM = try j.bytes("llm_vram") ?? jobs.llmVRAM
            jobs.scoreVRAM = try j.bytes("score_vram") ?? jobs.scoreVRAM
            jobs.maxAttempts = try j.int("max_attempts", default: jobs.maxAttempts, range: 1...100)
            jobs.priority = try j.int("priority", default: jobs.priority, range: -1000...1000)
            jobs.imageDeadlineS = try j.optionalDouble("image_deadline_s", range: 1...86_400) ?? jobs.imageDeadlineS
        }
        var forecast = ForecastSettings()
        if let f = try r.sub("forecast", known: ["llm_s", "image_s", "score_s"]) {
            forecast.llmS = try f.optionalDouble("llm_s", range: 0.001...86_400) ?? forecast.llmS
            forecast.imageS = try f.optionalDouble("image_s", range: 0.001...86_400) ?? forecast.imageS
            forecast.scoreS = try f.optionalDouble("score_s", range: 0.001...86_400) ?? forecast.scoreS
        }
        var config = PipelineConfig(
            file: file, queueFile: queue, assetsDir: assets, reportsDir: reports, outputsDirs: outputs, rejects: rejects, gates: gates,
            variationsPerTask: try r.int("variations_per_task", default: 4, range: 1...64),
            maxImagesPerNight: try r.int("max_images_per_night", default: 600, range: 1...1_000_000),
            window: window, denylistFile: try r.string("denylist").map(resolve), approvals: approvals, workflow: workflow,
            expansion: expansion, jobs: jobs, forecast: forecast,
            pollIntervalS: try r.optionalDouble("poll_interval_s", range: 0.05...600) ?? 2,
            drainS: try r.optionalDouble("drain_s", range: 0...86_400) ?? 300,
            clusterFile: try r.string("cluster").map(resolve))
        config.residents = try residents(r, resolve: resolve)
        return config
    }

    /// `residents: [{service, node, model?, gpus: [{gpu, vram}], url?, admin_key_file?, unload: after_use|never}]`.
    static func residents(_ r: FieldReader, resolve: (String) -> String) throws -> [ResidentService] {
        guard let v = r.object["residents"], v != .null else { return [] }
        guard let list = v.arrayValue else { throw r.error("residents", "expected a list of resident services") }
        var out: [ResidentService] = []
        for (i, item) in list.enumerated() {
            let e = try FieldReader(item, file: r.file, at: FieldReader.join(r.at, "residents[\(i)]"),
                                    known: ["name", "service", "node", "model", "gpus", "url", "admin_key_file", "unload"])
            let service = try e.requiredString("service").lowercased()
            guard ["tabbyapi", "ollama", "comfyui"].contains(service) else {
                throw e.error("service", "'\(service)' is not tabbyapi, ollama or comfyui (the services Hydra can unload)")
            }
            let model = try e.string("model")
            if service == "ollama" && model == nil { throw e.error("model", "Ollama residents need the model to unload and load") }
            guard let gl = e.object["gpus"]?.arrayValue, !gl.isEmpty else { throw e.error("gpus", "expected a list of {gpu: N, vram: SIZE}") }
            var shares: [ResidentService.Share] = []
            for (j, g) in gl.enumerated() {
                let s = try FieldReader(g, file: r.file, at: FieldReader.join(e.at, "gpus[\(j)]"), known: ["gpu", "vram"])
                guard let idx = try s.optionalInt("gpu", range: 0...63) else { throw s.error("gpu", "required field 'gpu' is missing") }
                guard let bytes = try s.bytes("vram"), bytes > 0 else { throw s.error("vram", "required: the VRAM it holds on that GPU, e.g. 24GiB") }
                shares.append(.init(gpu: idx, vram: bytes))
            }
            let url = try e.string("url")
            if let url, !(url.hasPrefix("http://") || url.hasPrefix("https://")) { throw e.error("url", "'\(url)' is not an http:// or https:// URL") }
            let releasable: Bool
            switch try e.string("unload") ?? "after_use" {
            case "after_use": releasable = true
            case "never": releasable = false
            case let other: throw e.error("unload", "'\(other)' is neither after_use nor never")
            }
            let node = try e.requiredString("node")
            let res = ResidentService(name: try e.string("name"), node: node, service: service, model: model, gpus: shares, url: url,
                                      adminKeyFile: try e.string("admin_key_file").map(resolve), releasable: releasable)
            if out.contains(where: { $0.name == res.name }) { throw e.error("name", "'\(res.name)' is listed twice (give each a name)") }
            out.append(res)
        }
        return out
    }
}

/// A LoRA applied to a collection's images.
public struct LoRASetting: Sendable, Equatable, Codable {
    public var name: String
    public var strength: Double
}

/// Training a LoRA from a collection's approved images: an approval-tier action.
public struct LoRATraining: Sendable, Equatable, Codable {
    /// Approved images the collection needs before training is proposed.
    public var minImages: Int
    /// The trainer, as a `command` job (`argv + [<assets dir>]` must match a template in the node's command_allowlist).
    public var argv: [String]
    public var vram: UInt64
}

/// One collection of the generation queue (all names fictional).
public struct ImageCollection: Sendable, Equatable {
    public var name: String
    public var target: Int
    public var priority: Int
    public var style: String
    /// Subjects to expand; tasks take them in turn. Empty: the style notes are the idea.
    public var ideas: [String]
    /// Face reference on the scorer host; enables the face-similarity gate.
    public var reference: String?
    public var lora: LoRASetting?
    public var checkpoint: String?
    public var trainLoRA: LoRATraining?

    public init(name: String, target: Int, priority: Int = 0, style: String = "", ideas: [String] = [], reference: String? = nil,
                lora: LoRASetting? = nil, checkpoint: String? = nil, trainLoRA: LoRATraining? = nil) {
        self.name = name; self.target = target; self.priority = priority; self.style = style; self.ideas = ideas
        self.reference = reference; self.lora = lora; self.checkpoint = checkpoint; self.trainLoRA = trainLoRA
    }
}

/// The generation queue file: `collections: [...]`.
public enum GenerationQueue {
    static let collectionKeys: Set<String> = ["name", "target", "priority", "style", "ideas", "reference", "lora", "checkpoint", "train_lora"]

    public static func load(path: String) throws -> [ImageCollection] {
        try parse(text: try ConfigLoader.readFile(path), file: path)
    }

    public static func parse(text: String, file: String) throws -> [ImageCollection] {
        let doc = try ConfigLoader.parseDocument(text, file: file)
        let top = try FieldReader(doc, file: file, at: "", known: ["collections"])
        guard let list = top.object["collections"]?.arrayValue else {
            throw top.error("collections", "expected a list of collections")
        }
        var out: [ImageCollection] = []
        var names = Set<String>()
        for (i, item) in list.enumerated() {
            let r = try FieldReader(item, file: file, at: "collections[\(i)]", known: collectionKeys)
            let name = try r.requiredString("name")
            guard name.range(of: #"^[a-z0-9][a-z0-9._-]{0,63}$"#, options: .regularExpression) != nil else {
                throw r.error("name", "'\(name)' must be lower case letters, digits, '.', '_' or '-' (it names a folder)")
            }
            guard names.insert(name).inserted else { throw r.error("name", "collection '\(name)' is listed twice") }
            var ideas: [String] = []
            if let v = r.object["ideas"] {
                guard let a = v.arrayValue, a.allSatisfy({ ($0.stringValue ?? "").trimmingCharacters(in: .whitespaces).isEmpty == false }) else {
                    throw r.error("ideas", "expected a list of non-empty strings")
                }
                ideas = a.compactMap(\.stringValue)
            }
            let style = try r.string("style") ?? ""
            if ideas.isEmpty && style.trimmingCharacters(in: .whitespaces).isEmpty {
                throw r.error("ideas", "give 'ideas' (subjects to expand) or 'style' notes")
            }
            var lora: LoRASetting?
            if let l = try r.sub("lora", known: ["name", "strength"]) {
                lora = LoRASetting(name: try l.requiredString("name"), strength: try l.optionalDouble("strength", range: -10...10) ?? 0.8)
            }
            var training: LoRATraining?
            if let t = try r.sub("train_lora", known: ["min_images", "argv", "vram"]) {
                guard let argv = t.object["argv"]?.arrayValue?.compactMap(\.stringValue), !argv.isEmpty,
                      argv.count == t.object["argv"]?.arrayValue?.count, argv[0].hasPrefix("/") else {
                    throw t.error("argv", "expected a list of strings starting with an absolute program path")
                }
                training = LoRATraining(minImages: try t.int("min_images", default: 20, range: 1...100_000), argv: argv,
                                        vram: try t.bytes("vram") ?? 0)
            }
            out.append(ImageCollection(name: name, target: try r.int("target", default: 0, range: 0...1_000_000),
                                  priority: try r.int("priority", default: 0, range: -1000...1000), style: style, ideas: ideas,
                                  reference: try r.string("reference"), lora: lora, checkpoint: try r.string("checkpoint"),
                                  trainLoRA: training))
        }
        return out
    }
}

/// Reads fields of one map with errors that name the file and the field.
struct FieldReader {
    let object: [String: JSONValue]
    let file: String
    let at: String

    init(_ value: JSONValue, file: String, at: String, known: Set<String>?) throws {
        self.file = file; self.at = at
        guard let o = value.objectValue else { throw InputError(file: file, location: at.isEmpty ? nil : at, problem: "expected a map") }
        object = o
        if let known {
            for k in o.keys.sorted() where !known.contains(k) {
                throw InputError(file: file, location: Self.join(at, k), problem: "unknown field '\(k)' (known: \(known.sorted().joined(separator: ", ")))")
            }
        }
    }

    static func join(_ a: String, _ k: String) -> String { a.isEmpty ? k : "\(a).\(k)" }
    func error(_ key: String, _ problem: String) -> InputError { InputError(file: file, location: Self.join(at, key), problem: problem) }

    func string(_ k: String) throws -> String? {
        guard let v = object[k], v != .null else { return nil }
        guard let s = v.stringValue else { throw error(k, "expected a string") }
        return s
    }
    func requiredString(_ k: String) throws -> String {
        guard let s = try string(k) else { throw error(k, "required field '\(k)' is missing") }
        guard !s.trimmingCharacters(in: .whitespaces).isEmpty else { throw error(k, "must not be empty") }
        return s
    }
    func optionalInt(_ k: String, range: ClosedRange<Int>) throws -> Int? {
        guard let v = object[k], v != .null else { return nil }
        guard let i = v.intValue else { throw error(k, "expected a whole number") }
        guard range.contains(i) else { throw error(k, "\(i) is outside \(range.lowerBound)…\(range.upperBound)") }
        return i
    }
    func int(_ k: String, default d: Int, range: ClosedRange<Int>) throws -> Int { try optionalInt(k, range: range) ?? d }
    func optionalDouble(_ k: String, range: ClosedRange<Double>) throws -> Double? {
        guard let v = object[k], v != .null else { return nil }
        guard let d = v.doubleValue, d.isFinite else { throw error(k, "expected a number") }
        guard range.contains(d) else { throw error(k, "\(d) is outside \(range.lowerBound)…\(range.upperBound)") }
        return d
    }
    func bytes(_ k: String) throws -> UInt64? {
        guard let v = object[k], v != .null else { return nil }
        if let d = v.doubleValue, let b = ByteSize.bytes(d) { return b }
        if let s = v.stringValue, let b = ByteSize.parse(s) { return b }
        throw error(k, "'\(v.stringValue ?? "\(v)")' is not a size (use e.g. 8GiB)")
    }
    func sub(_ k: String, known: Set<String>?) throws -> FieldReader? {
        guard let v = object[k], v != .null else { return nil }
        return try FieldReader(v, file: file, at: Self.join(at, k), known: known)
    }
    /// A gate threshold: a number, `{min: N}`, or `off`/`false` to disable the gate.
    func threshold(_ k: String, default d: Double?, range: ClosedRange<Double>) throws -> Double? {
        guard let v = object[k] else { return d }
        if v == .null || v == .bool(false) || v.stringValue == "off" { return nil }
        let n = v.doubleValue ?? v["min"]?.doubleValue
        guard let n, n.isFinite else { throw error(k, "expected a number, {min: N}, or off") }
        guard range.contains(n) else { throw error(k, "\(n) is outside \(range.lowerBound)…\(range.upperBound)") }
        return n
    }
}
