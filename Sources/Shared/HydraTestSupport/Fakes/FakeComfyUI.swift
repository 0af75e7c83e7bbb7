import Foundation
import Synchronization
import HydraCore
import HydraIO

/// A ComfyUI stand-in faithful to service-apis.md §1 (routes, 400 shapes, history,
/// /view, /queue, /interrupt, /system_stats), without the websocket: executors
/// observe completion by polling /history, which the contract allows. The event
/// stream a websocket client would have seen is kept in `events` so contract
/// tests can check its order.
///
/// Faults (`faults.set`): `oom` (execution_error "CUDA out of memory" in history),
/// `node-error` (execution_error from a generic node exception), `node-errors`
/// (400 prompt_outputs_failed_validation), `500` (POST /prompt → 500 text/plain),
/// `hang` (the job never finishes until /interrupt), `malformed` (POST /prompt
/// answers truncated JSON), `drop` (POST /prompt closes the connection),
/// `drop-after-queue` (POST /prompt queues the prompt, then closes the connection
/// unanswered), `history-garbled` (GET /history/{id} answers 200 with truncated JSON,
/// which the client does not retry as it does a 5xx).
public final class FakeComfyUI: Sendable {
    public struct Event: Sendable, Equatable {
        public var clientID: String?
        public var type: String
        public var data: JSONValue
        /// Whether /history already held this prompt when the event was sent.
        public var historyWritten: Bool
    }

    struct Job: Sendable {
        var number: Int
        var promptID: String
        var graph: [String: JSONValue]
        var extra: JSONValue
        var outputs: [String]
        var fault: String?
        var item: JSONValue {
            .array([.int(number), .string(promptID), .object(graph), extra, .array(outputs.map { .string($0) })])
        }
    }

    struct State: Sendable {
        var pending: [Job] = []
        var running: Job?
        var interrupted = false
        var history: [(String, JSONValue)] = []
        var files: [String: Data] = [:]
        var counters: [String: Int] = [:]
        var events: [Event] = []
        var nextNumber = 0
        var residentVRAM: UInt64 = 0
        var jobVRAM: UInt64 = 0
        var runningOutputs: [String: [String: JSONValue]] = [:]
        /// Bumped by a simulated restart: work from before it leaves no trace.
        var generation = 0
    }

    public let faults: FakeFaults
    public let settings: FakeSettings
    public static let checkpoints = ["atlas-xl-base.safetensors", "meadow-v8-fictional.safetensors"]
    public static let loras = ["paper-lantern-style.safetensors", "ink-wash-fictional.safetensors"]
    static let knownClasses: Set<String> = ["KSampler", "KSamplerAdvanced", "CheckpointLoaderSimple", "EmptyLatentImage",
                                            "CLIPTextEncode", "VAEDecode", "SaveImage", "PreviewImage", "LoraLoader",
                                            "VAELoader", "CLIPSetLastLayer", "LatentUpscale", "ImageScale"]
    static let outputClasses: Set<String> = ["SaveImage", "PreviewImage"]
    public static let vramTotal: UInt64 = 17_179_869_184

    private let state = Mutex(State())
    private let host = FakeHTTPHost()

    public init(settings: FakeSettings = FakeSettings(), faults: FakeFaults = FakeFaults()) {
        self.settings = settings; self.faults = faults
    }

    @discardableResult
    public func start(host h: String = "127.0.0.1", port: Int = 0) throws -> Int {
        let p = try host.start(host: h, port: port) { [self] in self.handle($0) }
        let worker = Thread { [self] in self.workLoop() }
        worker.name = "fake-comfyui-worker"
        worker.start()
        return p
    }

    public func stop() { host.stop() }

    public var events: [Event] { state.withLock { $0.events } }
    /// What /system_stats reports as used (resident models + the running job).
    public var vramUsedBytes: UInt64 { state.withLock { $0.residentVRAM + $0.jobVRAM } }
    /// A ComfyUI restart: queue and history are in memory only.
    public func simulateRestart() {
        state.withLock { s in s.pending = []; s.history = []; s.running = nil; s.interrupted = true; s.residentVRAM = 0; s.jobVRAM = 0; s.generation += 1 }
    }

    // MARK: routing

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        var path = req.path
        if path.hasPrefix("/api/") { path = String(path.dropFirst(4)) }
        switch (req.method, path) {
        case ("POST", "/prompt"): return postPrompt(req)
        case ("GET", "/prompt"):
            let n = state.withLock { $0.pending.count + ($0.running == nil ? 0 : 1) }
            return FakeJSON.response(["exec_info": ["queue_remaining": .int(n)]])
        case ("GET", "/history"):
            let max = Int(req.query["max_items"] ?? "") ?? Int.max
            let offset = Int(req.query["offset"] ?? "") ?? 0
            let all = state.withLock { $0.history }
            var out: [String: JSONValue] = [:]
            for (id, e) in all.dropFirst(offset).prefix(max) { out[id] = e }
            return FakeJSON.response(.object(out))
        case ("POST", "/history"):
            let body = FakeJSON.parse(req.body)
            state.withLock { s in
                if body?["clear"]?.boolValue == true { s.history = [] }
                let del = Set((body?["delete"]?.arrayValue ?? []).compactMap(\.stringValue))
                s.history.removeAll { del.contains($0.0) }
            }
            return .full(status: 200, headers: [:], body: Data())
        case ("GET", "/queue"):
            let (r, p) = state.withLock { s in (s.running.map { [$0.item] } ?? [], s.pending.map(\.item)) }
            return FakeJSON.response(["queue_running": .array(r), "queue_pending": .array(p)])
        case ("POST", "/queue"):
            let body = FakeJSON.parse(req.body)
            state.withLock { s in
                if body?["clear"]?.boolValue == true { s.pending = [] }
                let del = Set((body?["delete"]?.arrayValue ?? []).compactMap(\.stringValue))
                s.pending.removeAll { del.contains($0.promptID) }
            }
            return .full(status: 200, headers: [:], body: Data())
        case ("POST", "/interrupt"):
            let target = FakeJSON.parse(req.body)?["prompt_id"]?.stringValue
            state.withLock { s in
                if let running = s.running, target == nil || target == running.promptID { s.interrupted = true }
            }
            return .full(status: 200, headers: [:], body: Data())
        case ("POST", "/free"):
            state.withLock { $0.residentVRAM = 0 }
            return .full(status: 200, headers: [:], body: Data())
        case ("GET", "/system_stats"):
            let used = vramUsedBytes
            return FakeJSON.response([
                "system": ["os": "posix", "ram_total": .u64(67_108_864_000), "ram_free": .u64(50_000_000_000),
                           "comfyui_version": "0.3.fake", "python_version": "3.12.0 (fake)", "pytorch_version": "2.8.0+fake",
                           "embedded_python": false, "argv": ["main.py"]],
                "devices": [["name": "cuda:0 Fictional RTX 5070 Ti : cudaMallocAsync", "type": "cuda", "index": 0,
                             "vram_total": .u64(Self.vramTotal), "vram_free": .u64(Self.vramTotal - min(used, Self.vramTotal)),
                             "torch_vram_total": 0, "torch_vram_free": 0]],
            ])
        case ("GET", "/view"): return view(req)
        case ("GET", "/models/checkpoints"): return FakeJSON.response(.array(Self.checkpoints.map { .string($0) }))
        case ("GET", "/models/loras"): return FakeJSON.response(.array(Self.loras.map { .string($0) }))
        case ("GET", "/object_info"):
            var o: [String: JSONValue] = [:]
            for c in Self.knownClasses { o[c] = ["name": .string(c), "output_node": .bool(Self.outputClasses.contains(c))] }
            return FakeJSON.response(.object(o))
        default:
            if req.method == "GET", path.hasPrefix("/history/") {
                if faults.take(ifOneOf: ["history-garbled"]) != nil { return .json("{\"", status: 200) }
                let id = String(path.dropFirst("/history/".count))
                let e = state.withLock { s in s.history.first { $0.0 == id }?.1 }
                return FakeJSON.response(e.map { .object([id: $0]) } ?? .object([:]))
            }
            if path.hasPrefix("/models/") { return .text("404: Not Found", status: 404) }
            return .text("404: Not Found", status: 404)
        }
    }

    private func validationError(_ type: String, _ message: String, details: String, nodeErrors: JSONValue = .object([:])) -> HTTPResponse {
        FakeJSON.response(["error": ["type": .string(type), "message": .string(message), "details": .string(details), "extra_info": [:]],
                           "node_errors": nodeErrors], status: 400)
    }

    private func postPrompt(_ req: HTTPRequest) -> HTTPResponse {
        let fault = faults.take(ifOneOf: ["500", "drop", "malformed", "node-errors", "oom", "node-error", "hang", "drop-after-queue"])
        switch fault {
        case "500": return .text("500 Internal Server Error\n\nServer got itself in trouble", status: 500)
        case "drop": return .drop
        case "malformed": return .json("{\"prompt_id\": \"", status: 200)
        default: break
        }
        guard let body = FakeJSON.parse(req.body) else {
            return .text("500 Internal Server Error\n\nServer got itself in trouble", status: 500)
        }
        guard let graph = body["prompt"]?.objectValue else {
            return validationError("no_prompt", "No prompt provided", details: "No prompt provided")
        }
        for (id, node) in graph.sorted(by: { $0.key < $1.key }) {
            guard let cls = node["class_type"]?.stringValue else {
                return validationError("invalid_prompt", "Cannot execute because a node is missing the class_type property.", details: "Node ID '#\(id)'")
            }
            if !Self.knownClasses.contains(cls) {
                return validationError("invalid_prompt", "Cannot execute because node \(cls) does not exist.", details: "Node ID '#\(id)'")
            }
        }
        let outputs = graph.filter { Self.outputClasses.contains($0.value["class_type"]?.stringValue ?? "") }.keys.sorted()
        if outputs.isEmpty {
            return validationError("prompt_no_outputs", "Prompt has no outputs", details: "")
        }
        var nodeErrors: [String: JSONValue] = [:]
        for (id, node) in graph {
            let cls = node["class_type"]?.stringValue ?? ""
            func check(_ input: String, _ allowed: [String]) {
                guard let v = node["inputs"]?[input]?.stringValue else { return }
                if !allowed.contains(v) || fault == "node-errors" {
                    let details = "\(input): '\(v)' not in (list of length \(allowed.count))"
                    nodeErrors[id] = ["errors": [["type": "value_not_in_list", "message": "Value not in list", "details": .string(details),
                                                  "extra_info": ["input_name": .string(input), "input_config": .null, "received_value": .string(v)]]],
                                      "dependent_outputs": .array(outputs.map { .string($0) }), "class_type": .string(cls)]
                }
            }
            if cls == "CheckpointLoaderSimple" { check("ckpt_name", Self.checkpoints) }
            if cls == "LoraLoader" { check("lora_name", Self.loras) }
        }
        if !nodeErrors.isEmpty {
            let details = nodeErrors.values.compactMap { $0["errors"]?.arrayValue?.first }
                .map { "\($0["message"]?.stringValue ?? ""): \($0["details"]?.stringValue ?? "")" }.sorted().joined(separator: "\n")
            return validationError("prompt_outputs_failed_validation", "Prompt outputs failed validation", details: details,
                                   nodeErrors: .object(nodeErrors))
        }
        let promptID = body["prompt_id"]?.stringValue ?? UUID().uuidString.lowercased()
        var extra = body["extra_data"]?.objectValue ?? [:]
        if let cid = body["client_id"] { extra["client_id"] = cid }
        let number: Int = state.withLock { s in
            let n = s.nextNumber
            s.nextNumber += 1
            s.pending.append(Job(number: n, promptID: promptID, graph: graph, extra: .object(extra), outputs: outputs, fault: fault))
            return n
        }
        if fault == "drop-after-queue" { return .drop }
        return FakeJSON.response(["prompt_id": .string(promptID), "number": .int(number), "node_errors": [:]])
    }

    private func view(_ req: HTTPRequest) -> HTTPResponse {
        let name = req.query["filename"] ?? ""
        let sub = req.query["subfolder"] ?? ""
        let type = req.query["type"] ?? "output"
        if name.isEmpty || name.contains("..") || name.hasPrefix("/") || !["output", "input", "temp"].contains(type) {
            return .text("400: Bad Request", status: 400)
        }
        if sub.split(separator: "/").contains("..") || sub.hasPrefix("/") { return .text("403: Forbidden", status: 403) }
        guard let data = state.withLock({ $0.files["\(type)/\(sub)/\(name)"] }) else { return .text("404: Not Found", status: 404) }
        return .full(status: 200, headers: ["Content-Type": "image/png", "Content-Disposition": "filename=\"\(name)\""], body: data)
    }

    // MARK: worker (one prompt at a time, FIFO, as ComfyUI's prompt_worker)

    private func emit(_ job: Job, _ type: String, _ data: JSONValue, _ s: inout State) {
        let historyWritten = s.history.contains { $0.0 == job.promptID }
        s.events.append(Event(clientID: job.extra["client_id"]?.stringValue, type: type, data: data, historyWritten: historyWritten))
    }

    private func nowMs() -> JSONValue { .number((Date().timeIntervalSince1970 * 1000).rounded()) }

    private func workLoop() {
        while !host.isStopped {
            let job: Job? = state.withLock { s in
                guard s.running == nil, !s.pending.isEmpty else { return nil }
                let j = s.pending.removeFirst()
                s.running = j; s.interrupted = false
                return j
            }
            guard let job else { Thread.sleep(forTimeInterval: 0.005); continue }
            run(job)
        }
    }

    private func run(_ job: Job) {
        let generation = state.withLock { $0.generation }
        let pid = JSONValue.string(job.promptID)
        var messages: [JSONValue] = []
        func record(_ type: String, _ data: JSONValue, history: Bool = true) {
            state.withLock { s in emit(job, type, data, &s) }
            if history { messages.append(.array([.string(type), data])) }
        }
        record("execution_start", ["prompt_id": pid, "timestamp": nowMs()])
        record("execution_cached", ["nodes": [], "prompt_id": pid, "timestamp": nowMs()])
        state.withLock { s in s.residentVRAM = max(s.residentVRAM, settings.vramBytes / 2); s.jobVRAM = settings.vramBytes / 2 }

        let order = job.graph.keys.sorted { (Int($0) ?? 0, $0) < (Int($1) ?? 0, $1) }
        let sampler = order.first { job.graph[$0]?["class_type"]?.stringValue?.hasPrefix("KSampler") == true }
        var executed: [String] = []
        var interrupted = false
        var failure: JSONValue?
        let batch = job.graph.values.first { $0["class_type"]?.stringValue == "EmptyLatentImage" }?["inputs"]?["batch_size"]?.intValue ?? 1
        for id in order {
            if state.withLock({ $0.interrupted }) || host.isStopped { interrupted = true; break }
            let cls = job.graph[id]?["class_type"]?.stringValue ?? ""
            record("executing", ["node": .string(id), "display_node": .string(id), "prompt_id": pid], history: false)
            if id == sampler {
                if job.fault == "oom" || job.fault == "node-error" {
                    let oom = job.fault == "oom"
                    failure = ["prompt_id": pid, "node_id": .string(id), "node_type": .string(cls),
                               "executed": .array(executed.map { .string($0) }),
                               "exception_message": .string(oom
                                   ? "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.99 GiB total capacity)\nThis error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number."
                                   : "mat1 and mat2 shapes cannot be multiplied (154x2048 and 768x320)"),
                               "exception_type": .string(oom ? "torch.OutOfMemoryError" : "RuntimeError"),
                               "traceback": ["  File \"execution.py\", line 1, in execute (fake)"],
                               "current_inputs": ["seed": ["42"]], "current_outputs": .array(executed.map { .string($0) }),
                               "timestamp": nowMs()]
                    break
                }
                let steps = max(1, min(job.graph[id]?["inputs"]?["steps"]?.intValue ?? 4, 5))
                let perStep = settings.latencyMs * max(1, batch) / steps
                var step = 0
                while step < steps || job.fault == "hang" {
                    if state.withLock({ $0.interrupted }) || host.isStopped { interrupted = true; break }
                    host.pause(ms: job.fault == "hang" ? 5 : perStep)
                    if step < steps {
                        step += 1
                        record("progress", ["value": .int(step), "max": .int(steps), "prompt_id": pid, "node": .string(id)], history: false)
                    }
                }
                if interrupted { break }
            }
            var outputs: [String: JSONValue] = [:]
            if Self.outputClasses.contains(cls) { outputs = ["images": .array(writeImages(job, node: id, batch: batch))] }
            executed.append(id)
            if !outputs.isEmpty {
                record("executed", ["node": .string(id), "display_node": .string(id), "output": .object(outputs), "prompt_id": pid], history: false)
                state.withLock { s in
                    var o = s.runningOutputs[job.promptID] ?? [:]
                    o[id] = .object(outputs)
                    s.runningOutputs[job.promptID] = o
                }
            }
        }
        let status: JSONValue
        if let failure {
            record("execution_error", failure)
            status = ["status_str": "error", "completed": false, "messages": .array(messages)]
        } else if interrupted {
            record("execution_interrupted", ["prompt_id": pid, "node_id": .string(executed.last ?? ""), "node_type": "KSampler",
                                             "executed": .array(executed.map { .string($0) }), "timestamp": nowMs()])
            status = ["status_str": "error", "completed": false, "messages": .array(messages)]
        } else {
            record("execution_success", ["prompt_id": pid, "timestamp": nowMs()])
            status = ["status_str": "success", "completed": true, "messages": .array(messages)]
        }
        // task_done(): history first, then status, then executing(null) — the order clients rely on.
        state.withLock { s in
            let outs = s.runningOutputs.removeValue(forKey: job.promptID) ?? [:]
            guard s.generation == generation else { return }
            var meta: [String: JSONValue] = [:]
            for id in outs.keys { meta[id] = ["node_id": .string(id), "display_node": .string(id), "parent_node": .null, "real_node_id": .string(id)] }
            s.history.append((job.promptID, ["prompt": job.item, "outputs": .object(outs), "status": status, "meta": .object(meta)]))
            if failure?["exception_type"]?.stringValue == "torch.OutOfMemoryError" { s.residentVRAM = 0 }
            s.jobVRAM = 0
            s.running = nil
            emit(job, "status", ["status": ["exec_info": ["queue_remaining": .int(s.pending.count)]]], &s)
            emit(job, "executing", ["node": .null, "prompt_id": pid], &s)
        }
    }

    private func writeImages(_ job: Job, node: String, batch: Int) -> [JSONValue] {
        let inputs = job.graph[node]?["inputs"]
        let prefix = inputs?["filename_prefix"]?.stringValue ?? "ComfyUI"
        let type = job.graph[node]?["class_type"]?.stringValue == "PreviewImage" ? "temp" : "output"
        let parts = prefix.split(separator: "/", omittingEmptySubsequences: true)
        let base = parts.last.map(String.init) ?? "ComfyUI"
        let sub = parts.dropLast().joined(separator: "/")
        let latent = job.graph.values.first { $0["class_type"]?.stringValue == "EmptyLatentImage" }?["inputs"]
        let w = max(8, min((latent?["width"]?.intValue ?? 512) / 16, 96))
        let h = max(8, min((latent?["height"]?.intValue ?? 512) / 16, 96))
        let seedText = job.graph.values.compactMap { $0["inputs"]?["seed"] ?? $0["inputs"]?["noise_seed"] }.first.map(FakeJSON.encode) ?? "0"
        var out: [JSONValue] = []
        for i in 0..<max(1, batch) {
            let seed = FakeJSON.hash(seedText + "/\(i)")
            let png = PNGEncoder.rgb(width: w, height: h) { x, y in
                (UInt8(truncatingIfNeeded: Int(seed & 0xff) + x * 3), UInt8(truncatingIfNeeded: Int((seed >> 8) & 0xff) + y * 3),
                 UInt8(truncatingIfNeeded: Int((seed >> 16) & 0xff) + (x ^ y)))
            }
            let name: String = state.withLock { s in
                let key = "\(type)/\(sub)/\(base)"
                let n = (s.counters[key] ?? 0) + 1
                s.counters[key] = n
                let name = "\(base)_\(String(format: "%05d", n))_.png"
                s.files["\(type)/\(sub)/\(name)"] = png
                return name
            }
            out.append(["filename": .string(name), "subfolder": .string(sub), "type": .string(type)])
        }
        return out
    }
}
