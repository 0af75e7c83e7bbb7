import Foundation
import HydraCore
import HydraIO

/// Ollama's native API: POST /api/chat (or /api/generate for a bare prompt),
/// NDJSON stream ending with a `"done": true` line (service-apis.md §2.3).
public struct OllamaClient: LLMClient {
    public let endpoint: ServiceEndpoint
    public let service = "ollama"
    public init(endpoint: ServiceEndpoint) { self.endpoint = endpoint }

    func body(_ r: LLMRequest) -> JSONValue {
        var o: [String: JSONValue] = ["model": .string(r.model ?? ""), "stream": .bool(r.stream)]
        if r.api == .chat { o["messages"] = .array(r.messages) } else { o["prompt"] = .string(r.prompt ?? "") }
        var options: [String: JSONValue] = [:]
        if let v = r.maxTokens { options["num_predict"] = .number(Double(v)) }
        if let v = r.temperature { options["temperature"] = .number(v) }
        if let v = r.topP { options["top_p"] = .number(v) }
        if let v = r.seed { options["seed"] = .number(Double(v)) }
        if let v = r.stop { options["stop"] = .array(v.map { .string($0) }) }
        if !options.isEmpty { o["options"] = .object(options) }
        if r.jsonMode { o["format"] = "json" }
        return .object(o)
    }

    public func complete(_ r: LLMRequest, context: ExecutionContext) throws -> LLMCompletion {
        guard let model = r.model, !model.isEmpty else { throw ExecutionFailure(.permanent, "llm spec: model: is required for Ollama") }
        let path = r.api == .chat ? "/api/chat" : "/api/generate"
        let req = HTTPClientRequest.json(url: endpoint.base + path, body: body(r), idempotent: false)
        let client = HTTPClient(service: service)
        let opts = HTTPClientOptions(connectTimeout: 5, totalTimeout: endpoint.timeoutSeconds, idleTimeout: r.idleTimeout,
                                     maxResponseBytes: 16 << 20, retries: 0)
        let started = Date()
        var c = LLMCompletion()
        c.model = model
        var final: JSONValue?
        var streamError: String?
        var lines = 0

        func absorb(_ j: JSONValue) {
            let piece = (r.api == .chat ? j["message"]?["content"]?.stringValue : j["response"]?.stringValue) ?? ""
            if !piece.isEmpty {
                if c.timeToFirstToken == nil { c.timeToFirstToken = Date().timeIntervalSince(started) }
                c.text += piece
            }
            if j["done"]?.boolValue == true { final = j }
        }

        let resp: HTTPClientResponse
        do {
            if r.stream {
                resp = try client.stream(req, options: opts, deadline: context.deadline, cancellation: context.cancellation) { line in
                    if line.trimmingCharacters(in: .whitespaces).isEmpty { return true }
                    guard let j = try? JSONDecoder().decode(JSONValue.self, from: Data(line.utf8)) else {
                        throw ExecutionFailure(.transient, "malformed NDJSON line: \(Excerpt.of(line, limit: 120))")
                    }
                    lines += 1
                    if let e = j["error"] { streamError = e.stringValue ?? ((try? JSONCoding.encodeString(e)) ?? "null"); return false }
                    absorb(j)
                    return final == nil
                }
            } else {
                resp = try client.send(req, options: opts, deadline: context.deadline, cancellation: context.cancellation)
                if resp.isSuccess {
                    guard let j = resp.jsonValue else {
                        throw ExecutionFailure(.transient, "ollama: POST \(req.url) answered HTTP \(resp.status) with malformed JSON: \(resp.excerpt())")
                    }
                    if let e = j["error"] { streamError = e.stringValue ?? ((try? JSONCoding.encodeString(e)) ?? "null") } else { absorb(j) }
                }
            }
        } catch let e as HTTPClientError {
            if e.kind == .callback, e.detail.contains("malformed NDJSON") {
                throw ExecutionFailure(.transient, "ollama: POST \(req.url): \(e.detail.replacingOccurrences(of: "transient: ", with: ""))")
            }
            throw e.executionFailure
        }
        guard resp.isSuccess else { throw Self.classify(resp) }
        if let streamError {
            throw ExecutionFailure(ExecutorSupport.isOOM(streamError) ? .oom : .transient, "ollama: generation failed: \(streamError)")
        }
        guard let final else {
            throw ExecutionFailure(.transient, "ollama: POST \(req.url): stream ended without a \"done\": true line after \(lines) lines")
        }
        c.finishReason = final["done_reason"]?.stringValue
        if let p = final["prompt_eval_count"]?.intValue, let e = final["eval_count"]?.intValue {
            c.usage = LLMUsage(promptTokens: p, completionTokens: e)
        }
        c.serviceVRAMBytes = loadedVRAM(model: model)
        return c
    }

    static func classify(_ resp: HTTPClientResponse) -> ExecutionFailure {
        let text = resp.jsonValue?["error"]?.stringValue ?? resp.text
        if ExecutorSupport.isOOM(text) { return ExecutionFailure(.oom, resp.summary) }
        switch resp.status {
        case 400, 404, 405, 422: return ExecutionFailure(.permanent, resp.summary)
        default: return ExecutionFailure(.transient, resp.summary)
        }
    }

    /// `size_vram` of the model from /api/ps: what the runner holds on the GPUs.
    func loadedVRAM(model: String) -> UInt64? {
        guard let j = try? HTTPClient(service: service).send(HTTPClientRequest(url: endpoint.base + "/api/ps"), options: HTTPClientOptions(totalTimeout: 3, retries: 0)).jsonValue,
              let m = j["models"]?.arrayValue?.first(where: { $0["name"]?.stringValue == model || $0["model"]?.stringValue == model }),
              let v = m["size_vram"]?.doubleValue else { return nil }
        // A service's numbers are input too: a wild one must not trap the agent.
        return ByteSize.bytes(v)
    }
}
