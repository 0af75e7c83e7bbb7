import Foundation
import HydraCore
import HydraIO

/// Where a job parameter goes in an API-format graph: `node_id.input_name`.
public struct WorkflowTarget: Sendable, Equatable, CustomStringConvertible {
    public var node: String
    public var input: String
    public init(_ node: String, _ input: String) { self.node = node; self.input = input }
    public var description: String { "\(node).\(input)" }

    /// Accepts "6.text" or ["6", "text"].
    init?(_ v: JSONValue) {
        if let s = v.stringValue, let dot = s.firstIndex(of: ".") {
            node = String(s[..<dot]); input = String(s[s.index(after: dot)...])
        } else if let a = v.arrayValue, a.count == 2, let n = a[0].stringValue, let i = a[1].stringValue {
            node = n; input = i
        } else { return nil }
        if node.isEmpty || input.isEmpty { return nil }
    }
}

/// An API-format ComfyUI graph plus the injection points for job parameters
/// (service-apis.md §1.3). Points come from the declared mapping, else from
/// following links out of the single KSampler: positive/negative → CLIPTextEncode
/// text, latent_image → EmptyLatentImage, model → (LoraLoader →)* CheckpointLoaderSimple.
public struct ComfyWorkflow: Sendable {
    public var graph: [String: JSONValue]
    public var declared: [String: [WorkflowTarget]]

    public static let parameters = ["prompt", "negative_prompt", "seed", "steps", "cfg", "width", "height", "batch_size",
                                    "checkpoint", "lora_name", "lora_strength", "filename_prefix"]

    public init(graph: [String: JSONValue], declared: [String: [WorkflowTarget]] = [:]) {
        self.graph = graph; self.declared = declared
    }

    func cls(_ id: String) -> String? { graph[id]?["class_type"]?.stringValue }
    func input(_ id: String, _ name: String) -> JSONValue? { graph[id]?["inputs"]?[name] }
    /// The node a link input points at (`["4", 0]`), nil for literals.
    func linked(_ id: String, _ name: String) -> String? {
        guard let a = input(id, name)?.arrayValue, a.count == 2, let src = a[0].stringValue ?? a[0].intValue.map(String.init) else { return nil }
        return graph[src] == nil ? nil : src
    }

    /// Injection points for `param`; empty when the graph has none.
    public func targets(for param: String) throws -> [WorkflowTarget] {
        if let d = declared[param] { return d }
        let samplers = graph.keys.filter { ["KSampler", "KSamplerAdvanced"].contains(cls($0) ?? "") }.sorted()
        let sampler = samplers.count == 1 ? samplers[0] : nil
        func needSampler() throws -> String {
            guard let sampler else {
                throw ExecutionFailure(.permanent, "image spec: the workflow has \(samplers.count) KSampler nodes; declare `mapping.\(param)` (e.g. \"6.text\")")
            }
            return sampler
        }
        switch param {
        case "seed":
            let s = try needSampler()
            return [WorkflowTarget(s, cls(s) == "KSamplerAdvanced" ? "noise_seed" : "seed")]
        case "steps", "cfg":
            return [WorkflowTarget(try needSampler(), param)]
        case "prompt", "negative_prompt":
            let s = try needSampler()
            guard let enc = linked(s, param == "prompt" ? "positive" : "negative"), cls(enc) == "CLIPTextEncode" else { return [] }
            return [WorkflowTarget(enc, "text")]
        case "width", "height", "batch_size":
            let s = try needSampler()
            guard let lat = linked(s, "latent_image"), cls(lat) == "EmptyLatentImage" else { return [] }
            return [WorkflowTarget(lat, param)]
        case "checkpoint", "lora_name", "lora_strength":
            let s = try needSampler()
            var node = linked(s, "model")
            var loras: [String] = []
            var hops = 0
            while let n = node, hops < 16 {
                if cls(n) == "CheckpointLoaderSimple" { break }
                if cls(n) == "LoraLoader" { loras.append(n) }
                node = linked(n, "model"); hops += 1
            }
            switch param {
            case "checkpoint": return node.flatMap { cls($0) == "CheckpointLoaderSimple" ? [WorkflowTarget($0, "ckpt_name")] : nil } ?? []
            case "lora_name": return loras.prefix(1).map { WorkflowTarget($0, "lora_name") }
            default: return loras.prefix(1).flatMap { [WorkflowTarget($0, "strength_model"), WorkflowTarget($0, "strength_clip")] }
            }
        case "filename_prefix":
            return graph.keys.filter { cls($0) == "SaveImage" }.sorted().map { WorkflowTarget($0, "filename_prefix") }
        default:
            return []
        }
    }

    public mutating func set(_ param: String, _ value: JSONValue) throws {
        let ts = try targets(for: param)
        guard !ts.isEmpty else {
            throw ExecutionFailure(.permanent, "image spec: `\(param)` was given but the workflow has no node for it; declare `mapping.\(param)`")
        }
        for t in ts {
            guard case .object(var node) = graph[t.node] ?? .null else {
                throw ExecutionFailure(.permanent, "image spec: mapping.\(param) names node \(t.node), which the workflow does not have")
            }
            var inputs = node["inputs"]?.objectValue ?? [:]
            inputs[t.input] = value
            node["inputs"] = .object(inputs)
            graph[t.node] = .object(node)
        }
    }
}

/// Job kind `image`: one ComfyUI prompt per job. See docs/executors.md for the spec.
public struct ComfyUIExecutor: Executor {
    public let kind = "image"
    public let endpoint: ServiceEndpoint
    public let workflowsDirectory: String?
    /// Seconds between /history polls when the spec does not say.
    public var pollInterval: Double

    public init(endpoint: ServiceEndpoint, workflowsDirectory: String?, pollInterval: Double = 1.0) {
        self.endpoint = endpoint; self.workflowsDirectory = workflowsDirectory; self.pollInterval = pollInterval
    }

    var client: HTTPClient {
        HTTPClient(service: "comfyui", options: HTTPClientOptions(connectTimeout: 5, totalTimeout: endpoint.timeoutSeconds ?? 30))
    }

    // MARK: spec → graph

    func loadWorkflow(_ r: SpecReader) throws -> ComfyWorkflow {
        var doc: JSONValue
        if let inline = try r.object("workflow") {
            doc = .object(inline)
        } else if let name = try r.string("template") {
            guard name.range(of: #"^[A-Za-z0-9][A-Za-z0-9._-]*$"#, options: .regularExpression) != nil, !name.contains("..") else {
                throw r.fail("template", "'\(name)' is not a plain template name")
            }
            guard let dir = workflowsDirectory else { throw r.fail("template", "this node has no workflows directory configured") }
            let file = name.hasSuffix(".json") ? name : name + ".json"
            let path = (dir as NSString).appendingPathComponent(file)
            guard let data = FileManager.default.contents(atPath: path) else { throw r.fail("template", "no template '\(name)' in \(dir)") }
            guard let v = try? JSONDecoder().decode(JSONValue.self, from: data) else { throw r.fail("template", "\(path) is not valid JSON") }
            doc = v
        } else {
            throw r.fail("workflow", "give `workflow` (API-format graph) or `template` (a name under deploy/workflows)")
        }
        // A template file may carry its own mapping: {"workflow": {...}, "mapping": {...}}.
        var declared: [String: [WorkflowTarget]] = [:]
        func addMapping(_ m: [String: JSONValue], from field: String) throws {
            for (param, v) in m {
                let list = v.arrayValue.flatMap { a in a.first?.arrayValue != nil || (a.first?.stringValue?.contains(".") ?? false) ? a : nil } ?? [v]
                declared[param] = try list.map {
                    guard let t = WorkflowTarget($0) else { throw r.fail("\(field).\(param)", "must be \"node.input\" or [\"node\", \"input\"]") }
                    return t
                }
            }
        }
        if let inner = doc["workflow"]?.objectValue {
            try addMapping(doc["mapping"]?.objectValue ?? [:], from: "template mapping")
            doc = .object(inner)
        }
        try addMapping(try r.object("mapping") ?? [:], from: "mapping")
        guard let graph = doc.objectValue, !graph.isEmpty else { throw r.fail("workflow", "must be a non-empty API-format graph") }
        for (id, node) in graph where node["class_type"]?.stringValue == nil {
            throw r.fail("workflow", "node \(id) has no class_type: export with \"Save (API format)\", not the UI format")
        }
        return ComfyWorkflow(graph: graph, declared: declared)
    }

    func buildGraph(_ context: ExecutionContext) throws -> [String: JSONValue] {
        let r = SpecReader(context.envelope.spec, kind: kind)
        var wf = try loadWorkflow(r)
        for p in ["prompt", "negative_prompt", "checkpoint"] {
            if let v = try r.string(p) { try wf.set(p, .string(v)) }
        }
        if let seed = try r.int("seed") {
            guard seed >= 0, seed < 1 << 53 else { throw r.fail("seed", "must be in 0…2^53") }
            try wf.set("seed", .number(Double(seed)))
        }
        for p in ["steps", "width", "height", "batch_size"] {
            if let v = try r.int(p) {
                guard v > 0 else { throw r.fail(p, "must be positive") }
                try wf.set(p, .number(Double(v)))
            }
        }
        if let cfg = try r.double("cfg") { try wf.set("cfg", .number(cfg)) }
        if let lora = try r.object("lora") {
            guard let name = lora["name"]?.stringValue else { throw r.fail("lora.name", "is required") }
            try wf.set("lora_name", .string(name))
            if let s = lora["strength"]?.doubleValue { try wf.set("lora_strength", .number(s)) }
        }
        // A per-job prefix makes every attempt write new files: ComfyUI caches an
        // identical graph and then writes nothing (service-apis.md §1.3).
        let defaultPrefix = "hydra/\(ExecutorSupport.safeFileName(context.envelope.jobID))_a\(context.envelope.attempt)"
        let prefix = try r.string("filename_prefix") ?? defaultPrefix
        if !(try wf.targets(for: "filename_prefix")).isEmpty { try wf.set("filename_prefix", .string(prefix)) }
        return wf.graph
    }

    // MARK: execution

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let started = Date()
        let r = SpecReader(context.envelope.spec, kind: kind)
        let graph = try buildGraph(context)
        let poll = try r.double("poll_interval_s") ?? pollInterval
        let maxOutput = try r.int("max_output_bytes") ?? (512 << 20)
        let includeTemp = try r.bool("include_previews") ?? false
        let clientID = "hydra-\(context.node)-\(ExecutorSupport.safeFileName(context.envelope.jobID))"
        try ExecutorSupport.checkStop(context, service: "comfyui")

        let promptID = try submit(graph: graph, clientID: clientID, context: context)
        var peakUsed: UInt64?
        let entry: JSONValue
        do {
            entry = try waitForHistory(promptID, poll: poll, context: context, peak: &peakUsed)
        } catch {
            // Whatever ended the wait (deadline, cancel, a ComfyUI that keeps answering garbage), the prompt
            // may still be queued or running: left there, it would hold the GPU while the retry runs a
            // second copy. With its id, /interrupt stops only this prompt.
            interrupt(promptID)
            throw error
        }

        let status = entry["status"]
        if status?["status_str"]?.stringValue != "success" {
            throw classify(historyStatus: status, promptID: promptID)
        }
        var files: [JSONValue] = []
        let outputs = entry["outputs"]?.objectValue ?? [:]
        for node in outputs.keys.sorted() {
            for (_, list) in (outputs[node]?.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) {
                for item in list.arrayValue ?? [] {
                    guard let name = item["filename"]?.stringValue else { continue }
                    let type = item["type"]?.stringValue ?? "output"
                    if type == "temp" && !includeTemp { continue }
                    let sub = item["subfolder"]?.stringValue ?? ""
                    try ExecutorSupport.checkStop(context, service: "comfyui")
                    let url = endpoint.base + "/view" + HTTPClient.query([("filename", name), ("subfolder", sub), ("type", type)])
                    let resp: HTTPClientResponse
                    do {
                        resp = try client.send(HTTPClientRequest(url: url),
                                               options: HTTPClientOptions(totalTimeout: 300, maxResponseBytes: maxOutput),
                                               deadline: context.deadline, cancellation: context.cancellation)
                    } catch let e as HTTPClientError { throw e.executionFailure }
                    guard resp.isSuccess else {
                        throw ExecutionFailure(resp.status >= 500 ? .transient : .permanent, "cannot fetch output: \(resp.summary)")
                    }
                    var f = try ExecutorSupport.writeOutput(resp.body, name: name, directory: context.outputDirectory)
                    if case .object(var o) = f { o["node"] = .string(node); o["subfolder"] = .string(sub); o["type"] = .string(type); f = .object(o) }
                    files.append(f)
                }
            }
        }
        guard !files.isEmpty else {
            throw ExecutionFailure(.permanent, "comfyui: prompt \(promptID) succeeded but produced no output files (no SaveImage output?)")
        }
        // History holds at most 10 000 entries; drop ours once the files are safe.
        _ = try? client.send(.json(url: endpoint.base + "/history", body: ["delete": [.string(promptID)]]),
                             options: HTTPClientOptions(totalTimeout: 5, retries: 0))
        var out: [String: JSONValue] = ["prompt_id": .string(promptID), "files": .array(files),
                                        "duration_s": ExecutorSupport.seconds(since: started)]
        if let peakUsed { out["service_vram_peak_bytes"] = .number(Double(peakUsed)) }
        return ExecutionResult(output: .object(out), peakVRAMBytes: peakUsed)
    }

    func submit(graph: [String: JSONValue], clientID: String, context: ExecutionContext) throws -> String {
        let wanted = UUID().uuidString.lowercased()
        let body: JSONValue = ["prompt": .object(graph), "client_id": .string(clientID), "prompt_id": .string(wanted),
                               "extra_data": ["hydra_job_id": .string(context.envelope.jobID), "hydra_attempt": .number(Double(context.envelope.attempt))]]
        let resp: HTTPClientResponse
        do {
            // Not retried: a lost response may still have queued the prompt.
            resp = try client.send(.json(url: endpoint.base + "/prompt", body: body, idempotent: false),
                                   deadline: context.deadline, cancellation: context.cancellation)
        } catch let e as HTTPClientError {
            // The request may have arrived even though its answer did not: then the prompt runs under the
            // id we asked for, and failing here would leave it holding the GPU while the retry runs a copy.
            if e.kind != .connect, e.kind != .deadline, e.kind != .cancelled, isKnown(wanted) { return wanted }
            if e.kind != .connect { interrupt(wanted) }
            throw e.executionFailure
        }
        if resp.status == 400 { throw ExecutionFailure(.permanent, Self.describeRejection(resp)) }
        if resp.status >= 500 { throw ExecutionFailure(.transient, resp.summary) }
        guard resp.isSuccess else { throw ExecutionFailure(.permanent, resp.summary) }
        guard let json = resp.jsonValue, let id = json["prompt_id"]?.stringValue else {
            // Queued (2xx) but the answer is garbled: as above.
            if isKnown(wanted) { return wanted }
            interrupt(wanted)
            throw ExecutionFailure(.transient, "comfyui: POST \(resp.url) answered HTTP \(resp.status) with malformed JSON: \(resp.excerpt())")
        }
        return id
    }

    /// Whether ComfyUI has `promptID` queued, running or in its history (best effort, a few seconds at most).
    func isKnown(_ promptID: String) -> Bool {
        let quick = HTTPClientOptions(connectTimeout: 2, totalTimeout: 5, retries: 1)
        if let q = try? client.send(HTTPClientRequest(url: endpoint.base + "/queue"), options: quick).jsonValue,
           Self.queueHolds(q, promptID) { return true }
        if let h = try? client.send(HTTPClientRequest(url: endpoint.base + "/history/" + promptID), options: quick).jsonValue,
           h[promptID] != nil { return true }
        return false
    }

    /// Whether a /queue answer lists `promptID` as running or pending (items are `[number, prompt_id, …]`).
    static func queueHolds(_ q: JSONValue, _ promptID: String) -> Bool {
        let items = (q["queue_running"]?.arrayValue ?? []) + (q["queue_pending"]?.arrayValue ?? [])
        return items.contains { $0.arrayValue?.count ?? 0 > 1 && $0.arrayValue?[1].stringValue == promptID }
    }

    /// "comfyui rejected the workflow (prompt_outputs_failed_validation: …): node 4 CheckpointLoaderSimple: Value not in list: …"
    static func describeRejection(_ resp: HTTPClientResponse) -> String {
        guard let json = resp.jsonValue else { return resp.summary }
        var head = "comfyui rejected the workflow"
        if let e = json["error"] {
            if let s = e.stringValue { head += " (\(s))" } // older builds: error is a string
            else {
                let type = e["type"]?.stringValue ?? "error"
                let msg = e["message"]?.stringValue ?? ""
                let details = e["details"]?.stringValue ?? ""
                head += " (\(type): \(msg)\(details.isEmpty || !(json["node_errors"]?.objectValue?.isEmpty ?? true) ? "" : " — \(details)"))"
            }
        }
        var parts: [String] = []
        for (id, ne) in (json["node_errors"]?.objectValue ?? [:]).sorted(by: { $0.key < $1.key }) {
            let cls = ne["class_type"]?.stringValue ?? "?"
            for err in ne["errors"]?.arrayValue ?? [] {
                parts.append("node \(id) \(cls): \(err["message"]?.stringValue ?? ""): \(err["details"]?.stringValue ?? "")")
            }
        }
        return parts.isEmpty ? head : head + ": " + parts.joined(separator: "; ")
    }

    /// Failed /history polls in a row that a job rides out before it fails (transient). The prompt
    /// runs on whether or not one poll gets through, so a dropped connection or one garbled answer
    /// must not throw away minutes of generation.
    static let badPollsTolerated = 5

    func waitForHistory(_ promptID: String, poll: Double, context: ExecutionContext, peak: inout UInt64?) throws -> JSONValue {
        var polls = 0
        var missing = 0
        var badPolls = 0
        while true {
            try ExecutorSupport.checkStop(context, service: "comfyui")
            let answer: Result<JSONValue, ExecutionFailure>
            do {
                let resp = try client.send(HTTPClientRequest(url: endpoint.base + "/history/" + promptID),
                                           deadline: context.deadline, cancellation: context.cancellation)
                if !resp.isSuccess {
                    answer = .failure(ExecutionFailure(.transient, resp.summary))
                } else if let json = resp.jsonValue, json.objectValue != nil {
                    answer = .success(json)
                } else {
                    answer = .failure(ExecutionFailure(.transient, "comfyui: GET \(resp.url) answered malformed JSON: \(resp.excerpt())"))
                }
            } catch let e as HTTPClientError {
                let f = e.executionFailure
                if f.failureClass == .timeout || context.cancellation.isCancelled { throw f }
                answer = .failure(f)
            }
            let json: JSONValue
            switch answer {
            case .success(let j): json = j; badPolls = 0
            case .failure(let f):
                badPolls += 1
                if badPolls > Self.badPollsTolerated {
                    throw ExecutionFailure(f.failureClass, "\(f.message) (\(badPolls) polls in a row failed)")
                }
                try interruptibleSleep(seconds: poll, context: context)
                continue
            }
            if let entry = json[promptID] { return entry }
            if let used = sampleVRAM() { peak = max(peak ?? 0, used) }
            polls += 1
            // History lives in memory: after a ComfyUI restart the prompt is nowhere.
            if polls % 5 == 0 {
                if let q = try? client.send(HTTPClientRequest(url: endpoint.base + "/queue"), options: HTTPClientOptions(totalTimeout: 5, retries: 0)).jsonValue {
                    missing = Self.queueHolds(q, promptID) ? 0 : missing + 1
                    if missing >= 2 {
                        throw ExecutionFailure(.transient, "comfyui: prompt \(promptID) is neither queued nor in history (ComfyUI restarted?)")
                    }
                }
            }
            try interruptibleSleep(seconds: poll, context: context)
        }
    }

    /// Used VRAM on ComfyUI's device (vram_total − vram_free), best effort.
    func sampleVRAM() -> UInt64? {
        guard let j = try? client.send(HTTPClientRequest(url: endpoint.base + "/system_stats"), options: HTTPClientOptions(totalTimeout: 2, retries: 0)).jsonValue,
              let d = j["devices"]?.arrayValue?.first, let total = d["vram_total"]?.doubleValue, let free = d["vram_free"]?.doubleValue, total >= free else { return nil }
        return ByteSize.bytes(total - free)
    }

    /// Stops our prompt whether it runs (/interrupt) or waits (/queue delete).
    /// Sent without the job's deadline: it has usually just passed.
    func interrupt(_ promptID: String) {
        let quick = HTTPClientOptions(connectTimeout: 2, totalTimeout: 5, retries: 1)
        _ = try? client.send(.json(url: endpoint.base + "/interrupt", body: ["prompt_id": .string(promptID)], idempotent: true), options: quick)
        _ = try? client.send(.json(url: endpoint.base + "/queue", body: ["delete": [.string(promptID)]], idempotent: true), options: quick)
    }

    func classify(historyStatus status: JSONValue?, promptID: String) -> ExecutionFailure {
        let messages = status?["messages"]?.arrayValue ?? []
        for m in messages {
            guard let pair = m.arrayValue, pair.count == 2, let type = pair[0].stringValue else { continue }
            let data = pair[1]
            if type == "execution_error" {
                let text = data["exception_message"]?.stringValue ?? ""
                let exType = data["exception_type"]?.stringValue ?? ""
                let node = "node \(data["node_id"]?.stringValue ?? "?") (\(data["node_type"]?.stringValue ?? "?"))"
                let firstLine = text.split(separator: "\n").first.map(String.init) ?? text
                if ExecutorSupport.isOOM(text) || exType.hasSuffix("OutOfMemoryError") {
                    return ExecutionFailure(.oom, "comfyui: \(node) ran out of GPU memory: \(firstLine)")
                }
                return ExecutionFailure(.permanent, "comfyui: \(node) raised \(exType): \(firstLine)")
            }
            if type == "execution_interrupted" {
                return ExecutionFailure(.transient, "comfyui: prompt \(promptID) was interrupted by someone else")
            }
        }
        return ExecutionFailure(.transient, "comfyui: prompt \(promptID) ended with status \(status?["status_str"]?.stringValue ?? "unknown")")
    }
}
