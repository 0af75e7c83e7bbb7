import Foundation
import HydraCore

/// Where one service listens and how to authenticate to it.
public struct ServiceEndpoint: Codable, Sendable, Equatable {
    public var url: String
    /// Inline key: for tests and loopback development only. Nodes use `api_key_file`
    /// (a systemd credential) or `api_key_env`, so keys never sit in the YAML.
    public var apiKey: String?
    public var apiKeyFile: String?
    public var apiKeyEnv: String?
    /// Longest a single request may take when the job has no tighter deadline.
    public var timeoutSeconds: Double?
    /// Index of the GPU the service's models live on. With simulated GPUs the agent adds what
    /// the service reports holding (ComfyUI /system_stats, Ollama /api/ps) to that GPU.
    public var gpu: Int?

    public init(url: String, apiKey: String? = nil, apiKeyFile: String? = nil, apiKeyEnv: String? = nil, timeoutSeconds: Double? = nil,
                gpu: Int? = nil) {
        self.url = url; self.apiKey = apiKey; self.apiKeyFile = apiKeyFile; self.apiKeyEnv = apiKeyEnv; self.timeoutSeconds = timeoutSeconds
        self.gpu = gpu
    }

    enum CodingKeys: String, CodingKey {
        case url
        case apiKey = "api_key"
        case apiKeyFile = "api_key_file"
        case apiKeyEnv = "api_key_env"
        case timeoutSeconds = "timeout_s"
        case gpu
    }

    /// The URL without a trailing slash, so paths can be appended.
    public var base: String { url.hasSuffix("/") ? String(url.dropLast()) : url }

    /// Resolved when an executor is built; a missing file is a configuration
    /// error the agent should report at startup, not per job.
    public func resolvedAPIKey() throws -> String? {
        if let apiKey, !apiKey.isEmpty { return apiKey }
        if let apiKeyEnv, let v = ProcessInfo.processInfo.environment[apiKeyEnv], !v.isEmpty { return v }
        if let apiKeyFile {
            guard let d = FileManager.default.contents(atPath: apiKeyFile) else {
                throw InputError(file: apiKeyFile, problem: "api_key_file cannot be read")
            }
            return String(decoding: d, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return nil
    }
}

/// The services on this node (agent YAML, key `services_endpoints`):
///
/// ```yaml
/// services_endpoints:
///   comfyui:  {url: "http://127.0.0.1:8188"}
///   tabbyapi: {url: "http://127.0.0.1:5000", api_key_file: /run/credentials/hydra-agent.service/tabby-key}
///   ollama:   {url: "http://127.0.0.1:11434"}
///   tts:      {url: "http://127.0.0.1:9880"}
///   scorer:   {url: "http://hydra-storage:9300"}
///   openai:                      # more OpenAI-compatible servers (vLLM, LiteLLM), by name
///     litellm: {url: "http://127.0.0.1:4000", api_key_env: LITELLM_KEY}
/// ```
public struct ServiceEndpoints: Codable, Sendable, Equatable {
    public var comfyui: ServiceEndpoint?
    public var tabbyapi: ServiceEndpoint?
    public var ollama: ServiceEndpoint?
    public var tts: ServiceEndpoint?
    public var scorer: ServiceEndpoint?
    public var openai: [String: ServiceEndpoint]?

    public init(comfyui: ServiceEndpoint? = nil, tabbyapi: ServiceEndpoint? = nil, ollama: ServiceEndpoint? = nil,
                tts: ServiceEndpoint? = nil, scorer: ServiceEndpoint? = nil, openai: [String: ServiceEndpoint]? = nil) {
        self.comfyui = comfyui; self.tabbyapi = tabbyapi; self.ollama = ollama; self.tts = tts; self.scorer = scorer; self.openai = openai
    }

    /// Parses either the map itself or a document holding it under `services_endpoints`.
    public static func parse(yaml text: String, file: String) throws -> ServiceEndpoints {
        let doc = try ConfigLoader.parseDocument(text, file: file)
        return try ConfigLoader.decode(ServiceEndpoints.self, from: doc["services_endpoints"] ?? doc, file: file)
    }
}

/// The service executors for this node's endpoints, keyed by job kind:
/// `image` (needs comfyui), `llm` (tabbyapi, ollama or any `openai` entry),
/// `tts`, `score`. Kinds whose service is not configured are absent, so the
/// agent's "no executor for kind" failure names them. `workflowsDirectory` is
/// where named ComfyUI templates live (deploy/workflows on a node).
public func makeServiceExecutors(_ endpoints: ServiceEndpoints, workflowsDirectory: String?) -> [String: any Executor] {
    var out: [String: any Executor] = [:]
    if let c = endpoints.comfyui { out["image"] = ComfyUIExecutor(endpoint: c, workflowsDirectory: workflowsDirectory) }
    var llm: [String: LLMBackend] = [:]
    if let t = endpoints.tabbyapi { llm["tabbyapi"] = .openAI(t, flavor: .tabby) }
    if let o = endpoints.ollama { llm["ollama"] = .ollama(o) }
    for (name, e) in endpoints.openai ?? [:] { llm[name] = .openAI(e, flavor: .generic) }
    if !llm.isEmpty { out["llm"] = LLMExecutor(backends: llm) }
    if let t = endpoints.tts { out["tts"] = GPTSoVITSExecutor(endpoint: t) }
    if let s = endpoints.scorer { out["score"] = ScorerExecutor(endpoint: s) }
    return out
}
