import Foundation
import HydraCore
import HydraIO

/// One generation request, independent of the wire API.
public struct LLMRequest: Sendable {
    public enum API: String, Sendable { case chat, completions }
    public var api: API = .chat
    public var model: String?
    public var messages: [JSONValue] = []
    public var prompt: String?
    public var maxTokens: Int?
    public var temperature: Double?
    public var topP: Double?
    public var stop: [String]?
    public var seed: Int?
    public var stream = true
    /// Ask the server for a JSON object where it can be asked (Ollama `format`).
    public var jsonMode = false
    public var idleTimeout: Double = 120
    public init() {}
}

public struct LLMUsage: Sendable, Equatable {
    public var promptTokens = 0
    public var completionTokens = 0
    public var totalTokens: Int { promptTokens + completionTokens }
    public init(promptTokens: Int = 0, completionTokens: Int = 0) { self.promptTokens = promptTokens; self.completionTokens = completionTokens }
    static func + (a: LLMUsage, b: LLMUsage) -> LLMUsage {
        LLMUsage(promptTokens: a.promptTokens + b.promptTokens, completionTokens: a.completionTokens + b.completionTokens)
    }
    var json: JSONValue {
        ["prompt_tokens": .number(Double(promptTokens)), "completion_tokens": .number(Double(completionTokens)), "total_tokens": .number(Double(totalTokens))]
    }
}

public struct LLMCompletion: Sendable {
    public var text = ""
    public var finishReason: String?
    public var model: String?
    public var usage: LLMUsage?
    public var timeToFirstToken: Double?
    /// VRAM the server reports holding for the model (Ollama /api/ps).
    public var serviceVRAMBytes: UInt64?
}

/// Something that turns an `LLMRequest` into text: the OpenAI-compatible client
/// (TabbyAPI, vLLM, LiteLLM, Ollama /v1) or Ollama's native API.
protocol LLMClient: Sendable {
    var service: String { get }
    func complete(_ request: LLMRequest, context: ExecutionContext) throws -> LLMCompletion
}

/// POST /v1/chat/completions and /v1/completions (service-apis.md §2.1, §2.2, §2.4).
public struct OpenAICompatibleClient: LLMClient {
    public enum Flavor: String, Sendable {
        /// TabbyAPI: `x-api-key`, usage only with include_usage (also without streaming), OOM visible on /health.
        case tabby
        /// Anything else speaking the OpenAI wire format: `Authorization: Bearer`.
        case generic
    }
    public let endpoint: ServiceEndpoint
    public let flavor: Flavor
    public let service: String
    let apiKey: String?

    public init(endpoint: ServiceEndpoint, flavor: Flavor, service: String) {
        self.endpoint = endpoint; self.flavor = flavor; self.service = service
        apiKey = try? endpoint.resolvedAPIKey()
    }

    var headers: [String: String] {
        guard let apiKey else { return [:] }
        return flavor == .tabby ? ["x-api-key": apiKey] : ["Authorization": "Bearer \(apiKey)"]
    }

    func body(_ r: LLMRequest) -> JSONValue {
        var o: [String: JSONValue] = ["stream": .bool(r.stream)]
        if let m = r.model { o["model"] = .string(m) }
        if r.api == .chat { o["messages"] = .array(r.messages) } else { o["prompt"] = .string(r.prompt ?? "") }
        if let v = r.maxTokens { o["max_tokens"] = .number(Double(v)) }
        if let v = r.temperature { o["temperature"] = .number(v) }
        if let v = r.topP { o["top_p"] = .number(v) }
        if let v = r.stop { o["stop"] = .array(v.map { .string($0) }) }
        if let v = r.seed { o["seed"] = .number(Double(v)) }
        // Tabby reports usage only when asked, even for non-streaming requests;
        // strict OpenAI servers reject stream_options without streaming.
        if r.stream || flavor == .tabby { o["stream_options"] = ["include_usage": true] }
        return .object(o)
    }

    public func complete(_ r: LLMRequest, context: ExecutionContext) throws -> LLMCompletion {
        let path = r.api == .chat ? "/v1/chat/completions" : "/v1/completions"
        let req = HTTPClientRequest.json(url: endpoint.base + path, body: body(r), headers: headers, idempotent: false)
        let client = HTTPClient(service: service)
        let opts = HTTPClientOptions(connectTimeout: 5, totalTimeout: endpoint.timeoutSeconds, idleTimeout: r.idleTimeout,
                                     maxResponseBytes: 16 << 20, retries: 0)
        let started = Date()
        if !r.stream {
            let resp: HTTPClientResponse
            do { resp = try client.send(req, options: opts, deadline: context.deadline, cancellation: context.cancellation) }
            catch let e as HTTPClientError { throw e.executionFailure }
            guard resp.isSuccess else { throw classify(resp) }
            guard let j = resp.jsonValue, let choice = j["choices"]?.arrayValue?.first else {
                throw ExecutionFailure(.transient, "\(service): POST \(resp.url) answered HTTP \(resp.status) with malformed JSON: \(resp.excerpt())")
            }
            var c = LLMCompletion()
            c.text = (r.api == .chat ? choice["message"]?["content"]?.stringValue : choice["text"]?.stringValue) ?? ""
            c.finishReason = choice["finish_reason"]?.stringValue
            c.model = j["model"]?.stringValue
            c.usage = Self.usage(j["usage"])
            return c
        }

        var c = LLMCompletion()
        var done = false
        var streamError: String?
        var events = 0
        let resp: HTTPClientResponse
        do {
            resp = try client.stream(req, options: opts, deadline: context.deadline, cancellation: context.cancellation) { line in
                // SSE: `data: <json>` events, blank separators, `:` comments (Tabby's pings).
                guard line.hasPrefix("data:") else { return true }
                let payload = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
                if payload == "[DONE]" { done = true; return false }
                guard let j = try? JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8)) else {
                    throw ExecutionFailure(.transient, "malformed SSE event: \(Excerpt.of(payload, limit: 120))")
                }
                events += 1
                if let e = j["error"] {
                    streamError = e["message"]?.stringValue ?? e.stringValue ?? ((try? JSONCoding.encodeString(e)) ?? "null")
                    return false
                }
                if let m = j["model"]?.stringValue { c.model = m }
                if let u = Self.usage(j["usage"]) { c.usage = u }
                if let choice = j["choices"]?.arrayValue?.first {
                    let piece = (r.api == .chat ? choice["delta"]?["content"]?.stringValue : choice["text"]?.stringValue) ?? ""
                    if !piece.isEmpty {
                        if c.timeToFirstToken == nil { c.timeToFirstToken = Date().timeIntervalSince(started) }
                        c.text += piece
                    }
                    if let f = choice["finish_reason"]?.stringValue { c.finishReason = f }
                }
                return true
            }
        } catch let e as HTTPClientError {
            if e.kind == .callback, e.detail.contains("malformed SSE") {
                throw ExecutionFailure(.transient, "\(service): POST \(req.url): \(e.detail.replacingOccurrences(of: "transient: ", with: ""))")
            }
            throw e.executionFailure
        }
        guard resp.isSuccess else { throw classify(resp) }
        if let streamError {
            if ExecutorSupport.isOOM(streamError) { throw ExecutionFailure(.oom, "\(service): generation failed mid-stream: \(streamError)") }
            if let oom = healthOOM() { throw ExecutionFailure(.oom, "\(service): generation aborted mid-stream (\(streamError)); /health: \(oom)") }
            throw ExecutionFailure(.transient, "\(service): generation failed mid-stream: \(streamError)")
        }
        guard done else {
            if let oom = healthOOM() { throw ExecutionFailure(.oom, "\(service): stream ended without [DONE]; /health: \(oom)") }
            throw ExecutionFailure(.transient, "\(service): POST \(req.url): stream ended without [DONE] after \(events) events (\(c.text.count) characters)")
        }
        return c
    }

    static func usage(_ u: JSONValue?) -> LLMUsage? {
        guard let u, let p = u["prompt_tokens"]?.intValue, let c = u["completion_tokens"]?.intValue else { return nil }
        return LLMUsage(promptTokens: p, completionTokens: c)
    }

    /// Tabby answers a generation exception (OOM included) with a vague 503 or
    /// SSE error; its /health keeps the real cause (service-apis.md §2.2).
    func healthOOM() -> String? {
        guard flavor == .tabby,
              let resp = try? HTTPClient(service: service).send(HTTPClientRequest(url: endpoint.base + "/health"), options: HTTPClientOptions(totalTimeout: 3, retries: 0)),
              resp.status == 503, let issues = resp.jsonValue?["issues"]?.arrayValue else { return nil }
        return issues.compactMap { $0["description"]?.stringValue }.first(where: ExecutorSupport.isOOM)
    }

    func classify(_ resp: HTTPClientResponse) -> ExecutionFailure {
        let j = resp.jsonValue
        let text = j?["error"]?["message"]?.stringValue ?? j?["detail"]?.stringValue ?? j?["error"]?.stringValue ?? resp.text
        if ExecutorSupport.isOOM(text) { return ExecutionFailure(.oom, resp.summary) }
        switch resp.status {
        case 401, 403: return ExecutionFailure(.permanent, "\(service): authentication failed (check the api key): \(resp.summary)")
        case 503:
            if let oom = healthOOM() { return ExecutionFailure(.oom, "\(resp.summary); /health: \(oom)") }
            return ExecutionFailure(.transient, resp.summary)
        case 408, 429, 499: return ExecutionFailure(.transient, resp.summary)
        case 500...: return ExecutionFailure(.transient, resp.summary)
        default: return ExecutionFailure(.permanent, resp.summary)
        }
    }
}
