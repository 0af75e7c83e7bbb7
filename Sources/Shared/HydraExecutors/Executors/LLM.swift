import Foundation
import HydraCore

/// A configured LLM server the `llm` kind can use.
public enum LLMBackend: Sendable {
    case openAI(ServiceEndpoint, flavor: OpenAICompatibleClient.Flavor)
    case ollama(ServiceEndpoint)
}

/// Job kind `llm`: plain generation, or prompt expansion (`expand`) that asks
/// for N variations as JSON, validates them and asks once more on a bad answer.
public struct LLMExecutor: Executor {
    public let kind = "llm"
    public let backends: [String: LLMBackend]

    public init(backends: [String: LLMBackend]) { self.backends = backends }

    func client(named name: String, api: String?) throws -> (any LLMClient, LLMRequest.API) {
        guard let b = backends[name] else {
            throw ExecutionFailure(.permanent, "llm spec: endpoint: '\(name)' is not configured on this node (have: \(backends.keys.sorted().joined(separator: ", ")))")
        }
        switch (b, api ?? "") {
        case (.openAI(let e, let f), "chat"), (.openAI(let e, let f), ""): return (OpenAICompatibleClient(endpoint: e, flavor: f, service: name), .chat)
        case (.openAI(let e, let f), "completions"): return (OpenAICompatibleClient(endpoint: e, flavor: f, service: name), .completions)
        case (.ollama(let e), "native"), (.ollama(let e), ""): return (OllamaClient(endpoint: e), .chat)
        case (.ollama(let e), "generate"): return (OllamaClient(endpoint: e), .completions)
        // Ollama also speaks the OpenAI format under /v1 (service-apis.md §2.4).
        case (.ollama(let e), "chat"): return (OpenAICompatibleClient(endpoint: e, flavor: .generic, service: "ollama"), .chat)
        case (.ollama(let e), "completions"): return (OpenAICompatibleClient(endpoint: e, flavor: .generic, service: "ollama"), .completions)
        default: throw ExecutionFailure(.permanent, "llm spec: api: '\(api ?? "")' is not one of chat, completions, native, generate")
        }
    }

    func request(_ r: SpecReader, api: LLMRequest.API) throws -> LLMRequest {
        var q = LLMRequest()
        q.api = api
        q.model = try r.string("model")
        q.maxTokens = try r.int("max_tokens")
        q.temperature = try r.double("temperature")
        q.topP = try r.double("top_p")
        q.stop = try r.stringArray("stop")
        q.seed = try r.int("seed")
        q.stream = try r.bool("stream") ?? true
        q.idleTimeout = try r.double("idle_timeout_s") ?? 120
        var messages: [JSONValue] = []
        if let s = try r.string("system") { messages.append(["role": "system", "content": .string(s)]) }
        if let m = r.spec["messages"] {
            guard let a = m.arrayValue, a.allSatisfy({ $0["role"]?.stringValue != nil && $0["content"] != nil }) else {
                throw r.fail("messages", "must be a list of {role, content}")
            }
            messages += a
        }
        if let p = try r.string("prompt") {
            if api == .chat { messages.append(["role": "user", "content": .string(p)]) } else { q.prompt = p }
        }
        q.messages = messages
        if api == .chat && !messages.contains(where: { $0["role"]?.stringValue != "system" }) {
            throw r.fail("messages", "give `prompt` or `messages` with at least one user message")
        }
        if api == .completions && (q.prompt ?? "").isEmpty { throw r.fail("prompt", "is required for completions") }
        return q
    }

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let started = Date()
        let r = SpecReader(context.envelope.spec, kind: kind)
        let endpointName = try r.string("endpoint") ?? (backends["tabbyapi"] != nil ? "tabbyapi" : backends["ollama"] != nil ? "ollama" : backends.keys.sorted().first ?? "")
        let (client, api) = try client(named: endpointName, api: try r.string("api"))
        var out: [String: JSONValue] = ["endpoint": .string(endpointName), "api": .string(api.rawValue)]
        let completion: LLMCompletion
        if let expand = try r.object("expand") {
            let (c, variations, tries) = try runExpansion(expand, r, client: client, context: context)
            completion = c
            out["variations"] = .array(variations.map { .string($0) })
            out["tries"] = .number(Double(tries))
        } else {
            try ExecutorSupport.checkStop(context, service: client.service)
            completion = try client.complete(request(r, api: api), context: context)
        }
        out["text"] = .string(completion.text)
        if let f = completion.finishReason { out["finish_reason"] = .string(f) }
        if let m = completion.model { out["model"] = .string(m) }
        if let u = completion.usage { out["usage"] = u.json }
        if let t = completion.timeToFirstToken { out["ttft_s"] = .number((t * 1000).rounded() / 1000) }
        if let v = completion.serviceVRAMBytes { out["service_vram_bytes"] = .number(Double(v)) }
        out["duration_s"] = ExecutorSupport.seconds(since: started)
        return ExecutionResult(output: .object(out), peakVRAMBytes: completion.serviceVRAMBytes)
    }

    static func expansionSystemPrompt(count: Int, extra: String?) -> String {
        """
        You write prompts for an image generator. Given an idea, write distinct, complete variations of it.
        Reply with only a JSON object of the form {"variations": ["...", "..."]} holding exactly \(count) strings. \
        No prose, no code fences.\(extra.map { "\n" + $0 } ?? "")
        """
    }

    /// Returns the strings or why the reply is unusable.
    static func parseVariations(_ text: String, count: Int) -> Result<[String], ExecutionFailure> {
        var t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if t.hasPrefix("```") { // models like fences even when told not to
            t = t.split(separator: "\n", omittingEmptySubsequences: false).dropFirst().joined(separator: "\n")
            if let end = t.range(of: "```", options: .backwards) { t = String(t[..<end.lowerBound]) }
        }
        guard let open = t.firstIndex(of: "{"), let close = t.lastIndex(of: "}"), open < close else {
            return .failure(ExecutionFailure(.permanent, "the reply holds no JSON object"))
        }
        guard let j = try? JSONDecoder().decode(JSONValue.self, from: Data(t[open...close].utf8)) else {
            return .failure(ExecutionFailure(.permanent, "the reply is not valid JSON"))
        }
        guard let a = j["variations"]?.arrayValue else { return .failure(ExecutionFailure(.permanent, "the JSON has no \"variations\" list")) }
        let strings = a.compactMap { $0.stringValue?.trimmingCharacters(in: .whitespacesAndNewlines) }.filter { !$0.isEmpty }
        guard strings.count == a.count else { return .failure(ExecutionFailure(.permanent, "\"variations\" must hold only non-empty strings")) }
        guard strings.count == count else { return .failure(ExecutionFailure(.permanent, "expected \(count) variations, got \(strings.count)")) }
        return .success(strings)
    }

    func runExpansion(_ spec: [String: JSONValue], _ r: SpecReader, client: any LLMClient,
                      context: ExecutionContext) throws -> (LLMCompletion, [String], Int) {
        guard let count = spec["count"]?.intValue, (1...100).contains(count) else { throw r.fail("expand.count", "must be an integer 1…100") }
        let fallbackIdea = try r.string("prompt")
        guard let idea = spec["idea"]?.stringValue ?? fallbackIdea, !idea.isEmpty else {
            throw r.fail("expand.idea", "is required (or give `prompt`)")
        }
        var q = LLMRequest()
        q.model = try r.string("model")
        q.maxTokens = try r.int("max_tokens") ?? max(256, count * 120)
        q.temperature = try r.double("temperature")
        q.seed = try r.int("seed")
        q.stream = try r.bool("stream") ?? true
        q.idleTimeout = try r.double("idle_timeout_s") ?? 120
        q.jsonMode = true
        q.messages = [["role": "system", "content": .string(Self.expansionSystemPrompt(count: count, extra: spec["instructions"]?.stringValue))],
                      ["role": "user", "content": .string(idea)]]
        var usage = LLMUsage()
        var lastReason = ""
        var lastText = ""
        for attempt in 1...2 {
            try ExecutorSupport.checkStop(context, service: client.service)
            var c = try client.complete(q, context: context)
            usage = usage + (c.usage ?? LLMUsage())
            switch Self.parseVariations(c.text, count: count) {
            case .success(let v):
                c.usage = usage
                return (c, v, attempt)
            case .failure(let why):
                lastReason = why.message; lastText = c.text
                q.messages.append(["role": "assistant", "content": .string(c.text)])
                q.messages.append(["role": "user", "content": .string(
                    "That reply was unusable: \(why.message). Answer again with only the JSON object {\"variations\": [...]} holding exactly \(count) strings.")])
            }
        }
        let excerpt = lastText.prefix(160).replacingOccurrences(of: "\n", with: " ")
        throw ExecutionFailure(.permanent, "\(client.service): prompt expansion failed after 2 tries: \(lastReason); last reply began: \"\(excerpt)\"")
    }
}
