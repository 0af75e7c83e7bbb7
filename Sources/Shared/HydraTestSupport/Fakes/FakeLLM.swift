import Foundation
import Synchronization
import HydraCore
import HydraIO

/// An LLM server with two personalities (service-apis.md §2.5):
/// - `.tabby`: TabbyAPI — x-api-key / Bearer auth with the exact 401 `detail`
///   strings, `/v1/model`, `/v1/model/load` (SSE), `/health`, CRLF SSE with a
///   `: ping` comment, `usage` only with `stream_options.include_usage`.
/// - `.ollama`: Ollama — native `/api/chat` and `/api/generate` (NDJSON, stream
///   by default, ns durations), `/api/ps` with `size_vram`/`expires_at`, and
///   `/v1/chat/completions` with LF SSE, role-first chunk and the OpenAI error shape.
///
/// Text is deterministic (a hash of the prompt picks fictional words). When a
/// system message asks for `exactly N strings` under a `"variations"` key the
/// fake answers that JSON (prompt expansion).
///
/// Faults: `oom` (Tabby: 503 aborted / SSE error event + /health 503;
/// Ollama: 500 "…out of memory" / mid-stream `{"error"}` line), `500`,
/// `busy` (503 not loaded / server busy), `context` (400 context_length_exceeded),
/// `hang` (never answers), `malformed` (truncated JSON body / SSE data line),
/// `drop` (stream cut after a few tokens, or connection closed), `bad-json`
/// (prompt-expansion content that is not JSON).
public final class FakeLLM: Sendable {
    public enum Flavor: String, Sendable { case tabby, ollama }

    struct State: Sendable {
        var loaded: String?
        var loadedOnce = false
        var unhealthy: String?
        var expiresAt = Date()
        var requests = 0
    }

    public let flavor: Flavor
    public let settings: FakeSettings
    public let faults: FakeFaults
    public let apiKey: String?
    public let adminKey: String?
    public let models: [String]
    public let contextTokens: Int
    private let state: Mutex<State>
    private let host = FakeHTTPHost()

    public init(flavor: Flavor, settings: FakeSettings = FakeSettings(), faults: FakeFaults = FakeFaults(),
                apiKey: String? = nil, adminKey: String? = nil, models: [String]? = nil, contextTokens: Int = 4096) {
        self.flavor = flavor; self.settings = settings; self.faults = faults
        self.apiKey = apiKey; self.adminKey = adminKey; self.contextTokens = contextTokens
        let m = models ?? (flavor == .tabby ? ["atlas-70b-exl2-fictional"] : ["atlas-chat:8b", "mistral-fictional:7b"])
        self.models = m
        // Tabby loads its configured model at startup; Ollama loads on first request.
        state = Mutex(State(loaded: flavor == .tabby ? m[0] : nil))
    }

    @discardableResult
    public func start(host h: String = "127.0.0.1", port: Int = 0) throws -> Int {
        try host.start(host: h, port: port) { [self] in self.handle($0) }
    }
    public func stop() { host.stop() }

    /// What the fake holds on its GPU now (Ollama's `/api/ps` `size_vram`).
    public var vramUsedBytes: UInt64 { state.withLock { $0.loaded == nil ? 0 : settings.vramBytes } }
    public var requestCount: Int { state.withLock { $0.requests } }
    public func unload() { state.withLock { $0.loaded = nil } }

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        state.withLock { $0.requests += 1 }
        switch flavor {
        case .tabby: return handleTabby(req)
        case .ollama: return handleOllama(req)
        }
    }

    // MARK: TabbyAPI

    private func tabbyAuth(_ req: HTTPRequest, admin: Bool = false) -> HTTPResponse? {
        guard let apiKey else { return nil }
        let bearer = req.headers["authorization"].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        if admin {
            guard let key = req.headers["x-admin-key"] ?? bearer else { return detail(401, "Please provide an admin key") }
            return key == (adminKey ?? apiKey) ? nil : detail(401, "Invalid admin key")
        }
        guard let key = req.headers["x-api-key"] ?? bearer else { return detail(401, "Please provide an API key") }
        return key == apiKey || (adminKey != nil && key == adminKey) ? nil : detail(401, "Invalid API key")
    }

    private func detail(_ status: Int, _ text: String) -> HTTPResponse { FakeJSON.response(["detail": .string(text)], status: status) }

    private func handleTabby(_ req: HTTPRequest) -> HTTPResponse {
        switch (req.method, req.path) {
        case ("GET", "/health"):
            if let issue = state.withLock({ $0.unhealthy }) {
                return FakeJSON.response(["status": "unhealthy", "issues": [["time": .string(FakeJSON.iso8601(Date())), "description": .string(issue)]]], status: 503)
            }
            return FakeJSON.response(["status": "healthy", "issues": []])
        case ("GET", "/v1/model"):
            if let denied = tabbyAuth(req) { return denied }
            guard let m = state.withLock({ $0.loaded }) else { return detail(503, "No models are currently loaded.") }
            return FakeJSON.response(["id": .string(m), "object": "model", "created": .int(Int(Date().timeIntervalSince1970)), "owned_by": "tabbyAPI",
                                      "parameters": ["max_seq_len": .int(contextTokens), "cache_size": .int(contextTokens), "cache_mode": "Q8",
                                                     "max_batch_size": 1, "prompt_template": "chatml", "use_vision": false, "draft": .null]])
        case ("GET", "/v1/models"):
            if let denied = tabbyAuth(req) { return denied }
            let loaded = state.withLock { $0.loaded }
            let list = (loaded.map { [$0] } ?? []).map { JSONValue.object(["id": .string($0), "object": "model", "owned_by": "tabbyAPI"]) }
            return FakeJSON.response(["object": "list", "data": .array(list)])
        case ("POST", "/v1/model/load"):
            if let denied = tabbyAuth(req, admin: true) { return denied }
            guard let name = FakeJSON.parse(req.body)?["model_name"]?.stringValue else { return detail(400, "A model name was not provided for load.") }
            guard models.contains(name) else { return detail(400, "Could not find the model path for load. Check model name or config.yml?") }
            let fault = faults.take(ifOneOf: ["oom"])
            return .stream(status: 200, headers: ["Content-Type": "text/event-stream; charset=utf-8"]) { [self] w in
                for i in 1...4 {
                    host.pause(ms: settings.latencyMs / 4)
                    if fault == "oom" && i == 3 {
                        state.withLock { $0.unhealthy = "OutOfMemoryError: CUDA out of memory. Tried to allocate 1.50 GiB" }
                        w.write("data: {\"error\":{\"message\":\"CUDA out of memory. Tried to allocate 1.50 GiB\",\"trace\":null}}\r\n\r\n")
                        return
                    }
                    // As TabbyAPI: the model is in place before "finished" goes out, so a
                    // client that returns on that event sees it loaded.
                    if i == 4 { state.withLock { $0.loaded = name } }
                    w.write("data: {\"model_type\":\"model\",\"module\":\(i),\"modules\":4,\"status\":\"\(i == 4 ? "finished" : "processing")\"}\r\n\r\n")
                }
            }
        case ("POST", "/v1/model/unload"):
            if let denied = tabbyAuth(req, admin: true) { return denied }
            state.withLock { $0.loaded = nil }
            return .full(status: 200, headers: [:], body: Data())
        case ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"):
            if let denied = tabbyAuth(req) { return denied }
            return completion(req, chat: req.path.hasSuffix("chat/completions"), sse: .tabby)
        default:
            return detail(404, "Not Found")
        }
    }

    // MARK: Ollama

    private func ollamaError(_ status: Int, _ text: String, openAI: Bool) -> HTTPResponse {
        if openAI {
            let type = status == 400 ? "invalid_request_error" : status == 404 ? "not_found_error" : "api_error"
            return FakeJSON.response(["error": ["message": .string(text), "type": .string(type), "param": .null, "code": .null]], status: status)
        }
        return FakeJSON.response(["error": .string(text)], status: status)
    }

    private func handleOllama(_ req: HTTPRequest) -> HTTPResponse {
        switch (req.method, req.path) {
        case ("GET", "/"), ("HEAD", "/"): return .text("Ollama is running")
        case ("GET", "/api/version"): return FakeJSON.response(["version": "0.12.fake"])
        case ("GET", "/api/ps"):
            let (loaded, expires) = state.withLock { ($0.loaded, $0.expiresAt) }
            guard let m = loaded, expires > Date() else { return FakeJSON.response(["models": []]) }
            return FakeJSON.response(["models": [[
                "name": .string(m), "model": .string(m), "size": .u64(settings.vramBytes), "digest": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
                "details": ["parent_model": "", "format": "gguf", "family": "fictional", "families": ["fictional"],
                            "parameter_size": "8.2B", "quantization_level": "Q4_K_M"],
                "expires_at": .string(FakeJSON.iso8601(expires)), "size_vram": .u64(settings.vramBytes), "context_length": .int(contextTokens)]]])
        case ("GET", "/v1/models"):
            return FakeJSON.response(["object": "list", "data": .array(models.map { ["id": .string($0), "object": "model", "owned_by": "library"] })])
        case ("POST", "/api/chat"), ("POST", "/api/generate"): return ollamaNative(req, chat: req.path == "/api/chat")
        case ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"):
            return completion(req, chat: req.path.hasSuffix("chat/completions"), sse: .ollama)
        default:
            return .text("404 page not found", status: 404)
        }
    }

    private func ollamaNative(_ req: HTTPRequest, chat: Bool) -> HTTPResponse {
        guard !req.body.isEmpty else { return ollamaError(400, "missing request body", openAI: false) }
        guard let body = FakeJSON.parse(req.body) else { return ollamaError(400, "invalid character 'x' looking for beginning of value", openAI: false) }
        guard let model = body["model"]?.stringValue, !model.isEmpty else { return ollamaError(400, "model is required", openAI: false) }
        guard models.contains(model) else { return ollamaError(404, "model '\(model)' not found", openAI: false) }
        let fault = faults.take()
        switch fault {
        case "500": return .text("Internal Server Error", status: 500)
        case "busy": return ollamaError(503, "server busy, please try again.  maximum pending requests exceeded", openAI: false)
        case "hang": host.hang(); return .drop
        default: break
        }
        let stream = body["stream"]?.boolValue ?? true
        let keepAlive = body["keep_alive"]
        let messages = body["messages"]?.arrayValue ?? []
        let promptText = chat ? messages.compactMap { $0["content"]?.stringValue }.joined(separator: "\n") : body["prompt"]?.stringValue ?? ""
        let loadNs = ensureLoaded(model, keepAlive: keepAlive)
        if fault == "oom" && !stream {
            return ollamaError(500, "model runner has unexpectedly stopped, this may be due to resource limitations or an internal error: cudaMalloc failed: out of memory", openAI: false)
        }
        if fault == "context" { return ollamaError(400, "prompt too long; exceeded max context length", openAI: false) }
        if promptText.isEmpty {
            let reason = keepAlive?.intValue == 0 ? "unload" : "load"
            if reason == "unload" { state.withLock { $0.loaded = nil } }
            var o: [String: JSONValue] = ["model": .string(model), "created_at": .string(FakeJSON.iso8601(Date())), "done": true, "done_reason": .string(reason)]
            if chat { o["message"] = ["role": "assistant", "content": ""] } else { o["response"] = "" }
            return FakeJSON.response(.object(o))
        }
        let maxTokens = body["options"]?["num_predict"]?.intValue ?? 64
        let (tokens, reason) = generate(messages: messages, prompt: promptText, maxTokens: maxTokens, fault: fault)
        let promptCount = promptText.split(separator: " ").count + 4
        @Sendable func final(_ content: String) -> JSONValue {
            var o: [String: JSONValue] = ["model": .string(model), "created_at": .string(FakeJSON.iso8601(Date())), "done": true,
                                          "done_reason": .string(reason), "total_duration": .int(loadNs + 2_000_000 * tokens.count + 1_000_000),
                                          "load_duration": .int(loadNs), "prompt_eval_count": .int(promptCount), "prompt_eval_duration": 1_000_000,
                                          "eval_count": .int(tokens.count), "eval_duration": .int(2_000_000 * tokens.count)]
            if chat { o["message"] = ["role": "assistant", "content": .string(content)] } else { o["response"] = .string(content); o["context"] = [1, 2, 3] }
            return .object(o)
        }
        if !stream {
            if fault == "malformed" { return .json("{\"model\":\"\(model)\",\"message\":{\"role\":\"assis", status: 200) }
            if fault == "drop" { return .drop }
            return FakeJSON.response(final(tokens.joined()))
        }
        return .stream(status: 200, headers: ["Content-Type": "application/x-ndjson"]) { [self] w in
            host.pause(ms: settings.latencyMs)
            for (i, t) in tokens.enumerated() {
                if i == 2 {
                    if fault == "drop" { w.abort(); return }
                    if fault == "oom" { w.write("{\"error\":\"an error was encountered while running the model: CUDA error: out of memory\"}\n"); return }
                    if fault == "malformed" { w.write("{\"model\":\"\(model)\",\"message\":{\"role\n"); return }
                }
                var o: [String: JSONValue] = ["model": .string(model), "created_at": .string(FakeJSON.iso8601(Date())), "done": false]
                if chat { o["message"] = ["role": "assistant", "content": .string(t)] } else { o["response"] = .string(t) }
                w.write(FakeJSON.encode(.object(o)) + "\n")
            }
            var last = final("")
            if case .object(var o) = last, !chat { o["response"] = ""; last = .object(o) }
            w.write(FakeJSON.encode(last) + "\n")
        }
    }

    /// Returns the load duration in ns (non-zero on the first request after a load).
    private func ensureLoaded(_ model: String, keepAlive: JSONValue?) -> Int {
        let seconds: Double = keepAlive?.doubleValue ?? (keepAlive?.stringValue.flatMap { Double($0.dropLast()) }.map { $0 * 60 } ?? 300)
        let wasLoaded = state.withLock { s -> Bool in
            let was = s.loaded == model
            s.loaded = model
            s.expiresAt = Date().addingTimeInterval(seconds > 0 ? seconds : 300)
            return was
        }
        return wasLoaded ? 0 : 1_500_000_000
    }

    // MARK: OpenAI-compatible completions (both flavours)

    private func completion(_ req: HTTPRequest, chat: Bool, sse flavor: Flavor) -> HTTPResponse {
        let openAIErr: (Int, String) -> HTTPResponse = { [self] status, text in
            flavor == .tabby ? detail(status, text) : ollamaError(status, text, openAI: true)
        }
        guard let body = FakeJSON.parse(req.body) else {
            return flavor == .tabby
                ? FakeJSON.response(["detail": [["type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error", "input": [:]]]], status: 422)
                : ollamaError(400, "invalid character looking for beginning of value", openAI: true)
        }
        let messages = body["messages"]?.arrayValue ?? []
        if chat && messages.isEmpty {
            return flavor == .tabby
                ? FakeJSON.response(["detail": [["type": "missing", "loc": ["body", "messages"], "msg": "Field required", "input": .null]]], status: 422)
                : ollamaError(400, "[] is too short - 'messages'", openAI: true)
        }
        let model: String
        if flavor == .ollama {
            guard let m = body["model"]?.stringValue, models.contains(m) else {
                return ollamaError(404, "model \"\(body["model"]?.stringValue ?? "")\" not found, try pulling it first", openAI: true)
            }
            _ = ensureLoaded(m, keepAlive: nil)
            model = m
        } else {
            guard let m = state.withLock({ $0.loaded }) else { return detail(503, "No models are currently loaded.") }
            model = m
        }
        let fault = faults.take()
        let stream = body["stream"]?.boolValue ?? false
        let includeUsage = body["stream_options"]?["include_usage"]?.boolValue ?? false
        let promptText: String = chat ? messages.compactMap { $0["content"]?.stringValue }.joined(separator: "\n")
            : (body["prompt"]?.stringValue ?? body["prompt"]?.arrayValue?.compactMap(\.stringValue).joined(separator: "\n") ?? "")
        let promptTokens = promptText.split(whereSeparator: { $0 == " " || $0 == "\n" }).count + 4
        switch fault {
        case "500": return .text("Internal Server Error", status: 500)
        case "busy": return flavor == .tabby ? detail(503, "No models are currently loaded.") : openAIErr(503, "server busy, please try again.  maximum pending requests exceeded")
        case "hang": host.hang(); return .drop
        case _ where fault == "context" || promptTokens > contextTokens:
            let text = "Prompt length \(max(promptTokens, contextTokens + 1)) exceeds the available context size of \(contextTokens) tokens"
            return FakeJSON.response(["error": ["message": .string(text), "type": "invalid_request_error", "param": .null, "code": "context_length_exceeded"]], status: 400)
        default: break
        }
        let maxTokens = body["max_tokens"]?.intValue ?? body["max_completion_tokens"]?.intValue ?? 64
        let (tokens, reason) = generate(messages: messages, prompt: promptText, maxTokens: maxTokens, fault: fault)
        let hex = String(format: "%08x", UInt32(truncatingIfNeeded: FakeJSON.hash(promptText + "\(Date().timeIntervalSince1970)")))
        let created = JSONValue.int(Int(Date().timeIntervalSince1970))
        var usage: JSONValue = ["prompt_tokens": .int(promptTokens), "completion_tokens": .int(tokens.count), "total_tokens": .int(promptTokens + tokens.count)]
        if flavor == .tabby, case .object(var u) = usage {
            u["prompt_time"] = 0.01; u["prompt_tokens_per_sec"] = 900.0; u["completion_time"] = .number(Double(tokens.count) * 0.02)
            u["completion_tokens_per_sec"] = 50.0; u["total_time"] = .number(0.01 + Double(tokens.count) * 0.02)
            usage = .object(u)
        }
        let object = chat ? "chat.completion" : "text_completion"
        let usageFinal = usage

        if !stream {
            if fault == "oom" {
                if flavor == .tabby {
                    state.withLock { $0.unhealthy = "OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB" }
                    return detail(503, "Chat completion cmpl-\(hex) aborted. Maybe the model was unloaded? Please check the server console.")
                }
                return ollamaError(500, "model runner has unexpectedly stopped: cudaMalloc failed: out of memory", openAI: true)
            }
            if fault == "malformed" { return .json("{\"id\":\"cmpl-\(hex)\",\"object\":\"\(object)\",\"choices\":[{\"ind", status: 200) }
            if fault == "drop" { return .drop }
            host.pause(ms: settings.latencyMs)
            let text = tokens.joined()
            var choice: JSONValue = chat
                ? ["index": 0, "message": ["role": "assistant", "content": .string(text)], "finish_reason": .string(reason)]
                : ["index": 0, "text": .string(text), "finish_reason": .string(reason), "logprobs": .null]
            if flavor == .tabby, case .object(var c) = choice { c["stop_str"] = .null; c["eos_reason"] = .null; choice = .object(c) }
            var o: [String: JSONValue] = ["id": .string((flavor == .tabby ? "cmpl-" : chat ? "chatcmpl-" : "cmpl-") + hex), "object": .string(object),
                                          "created": created, "model": .string(model), "choices": [choice]]
            // Tabby (since 2026-03) sends usage only when asked, even without streaming; Ollama /v1 always.
            if flavor == .ollama || includeUsage { o["usage"] = usage }
            if flavor == .ollama { o["system_fingerprint"] = "fp_ollama" }
            return FakeJSON.response(.object(o))
        }

        let eol = flavor == .tabby ? "\r\n" : "\n"
        let id = "chatcmpl-" + hex
        let chunkObject = chat ? "chat.completion.chunk" : "text_completion"
        @Sendable func chunk(_ delta: JSONValue?, text: String? = nil, finish: String?, usage u: JSONValue? = nil, emptyChoices: Bool = false) -> String {
            var choice: [String: JSONValue] = ["index": 0, "finish_reason": finish.map { .string($0) } ?? .null]
            if chat { choice["delta"] = delta ?? [:] } else { choice["text"] = .string(text ?? "") }
            var o: [String: JSONValue] = ["id": .string(id), "object": .string(chunkObject), "created": created, "model": .string(model),
                                          "choices": emptyChoices ? [] : [.object(choice)]]
            if let u { o["usage"] = u }
            if flavor == .ollama { o["system_fingerprint"] = "fp_ollama" }
            return "data: " + FakeJSON.encode(.object(o)) + eol + eol
        }
        return .stream(status: 200, headers: ["Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"]) { [self] w in
            if flavor == .tabby { w.write(": ping - \(FakeJSON.iso8601(Date()))\r\n\r\n") }
            host.pause(ms: settings.latencyMs)
            if flavor == .ollama && chat { w.write(chunk(["role": "assistant", "content": ""], finish: nil)) }
            for (i, t) in tokens.enumerated() {
                if i == 2 {
                    switch fault {
                    case "drop": w.abort(); return
                    case "oom":
                        if flavor == .tabby {
                            state.withLock { $0.unhealthy = "OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB" }
                            w.write("data: {\"error\":{\"message\":\"Chat completion aborted. Please check the server console.\",\"trace\":null}}\r\n\r\n")
                        } else {
                            // The /v1 middleware does not convert a native mid-stream error; the stream just ends.
                            w.write("data: {\"id\":\"\(id)\",\"object\":\"chat.completion.chunk\",\"choices\":[]}\n\n")
                        }
                        return
                    case "malformed": w.write("data: {\"id\":\"\(id)\",\"choi" + eol + eol); return
                    default: break
                    }
                }
                w.write(chunk(["content": .string(t)], text: t, finish: nil))
            }
            if includeUsage {
                if flavor == .tabby {
                    w.write(chunk([:], finish: reason, usage: usageFinal))
                } else {
                    w.write(chunk([:], finish: reason))
                    w.write(chunk(nil, finish: nil, usage: usageFinal, emptyChoices: true))
                }
            } else {
                w.write(chunk([:], finish: reason))
            }
            w.write("data: [DONE]" + eol + eol)
        }
    }

    // MARK: text

    static let words = ["lantern", " harbor", " quiet", " copper", " meadow", " drifting", " violet", " signal", " orchard",
                        " paper", " tide", " ember", " glass", " north", " willow", " thread"]

    /// (tokens, finish_reason). Prompt expansion requests get JSON (or, under `bad-json`, chatter).
    func generate(messages: [JSONValue], prompt: String, maxTokens: Int, fault: String?) -> ([String], String) {
        let system = messages.filter { $0["role"]?.stringValue == "system" }.compactMap { $0["content"]?.stringValue }.joined(separator: "\n")
        if let n = Self.requestedVariations(system) {
            let idea = messages.last { $0["role"]?.stringValue == "user" }?["content"]?.stringValue ?? prompt
            if fault == "bad-json" { return (["Sure!", " Here", " are", " some", " ideas:", " a", " lantern", " by", " the", " sea."], "stop") }
            let items = (0..<n).map { i -> JSONValue in
                let h = FakeJSON.hash(idea + "#\(i)")
                return .string("\(idea.prefix(60)), \(Self.words[Int(h % 16)].trimmingCharacters(in: .whitespaces)) light, variation \(i + 1)")
            }
            let json = FakeJSON.encode(["variations": .array(items)])
            // Split into a few pieces so streaming clients reassemble it.
            let step = max(1, json.count / 4)
            var parts: [String] = []
            var idx = json.startIndex
            while idx < json.endIndex {
                let end = json.index(idx, offsetBy: step, limitedBy: json.endIndex) ?? json.endIndex
                parts.append(String(json[idx..<end])); idx = end
            }
            return (parts, "stop")
        }
        let h = FakeJSON.hash(prompt)
        let n = min(maxTokens, 12)
        let tokens = (0..<n).map { i in Self.words[Int((h >> UInt64((i * 4) % 60)) % 16)] }
        return (tokens, maxTokens < 12 ? "length" : "stop")
    }

    static func requestedVariations(_ system: String) -> Int? {
        guard system.contains("\"variations\""), let r = system.range(of: #"exactly (\d+) strings"#, options: .regularExpression) else { return nil }
        return Int(system[r].split(separator: " ")[1])
    }
}
