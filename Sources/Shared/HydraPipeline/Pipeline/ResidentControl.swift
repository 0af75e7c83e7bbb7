import Foundation
import HydraCore
import HydraIO

/// Why an unload or load call failed, with the service's own words.
public struct ResidentControlError: Error, CustomStringConvertible, Sendable, Equatable {
    public var resident: String
    public var action: String
    public var detail: String
    public var description: String { "\(action) \(resident): \(detail)" }
}

/// Unloads and loads a resident service's model through its API (I/O; the decision is
/// `ResidentPlan.decide`). Blocking calls: run them from the runner's thread.
public protocol ResidentControlling: Sendable {
    /// Returns what was done, for the log.
    func unload(_ r: ResidentService) throws -> String
    func load(_ r: ResidentService) throws -> String
    /// Whether its model is loaded now; nil when the service cannot say (ComfyUI) or did not answer.
    func isLoaded(_ r: ResidentService) -> Bool?
}

extension ResidentControlling {
    public func isLoaded(_ r: ResidentService) -> Bool? { nil }
}

/// The services' own calls (service-apis.md):
/// - TabbyAPI: `POST /v1/model/unload`; `POST /v1/model/load {"model_name"}` (an SSE progress
///   stream that ends with `"status": "finished"` or an `error` event); both need the admin key
///   (`x-admin-key`, read from `admin_key_file`).
/// - Ollama: `POST /api/generate {"model", "keep_alive": 0}` unloads (`done_reason: "unload"`);
///   `keep_alive: -1` with no prompt loads it and keeps it until the next unload.
/// - ComfyUI: `POST /free {"unload_models": true, "free_memory": true}`; it loads checkpoints
///   with its next job, so "load" calls nothing.
public struct ResidentControl: ResidentControlling {
    public var options: HTTPClientOptions

    /// Loading a 70B model takes minutes: the load call's total timeout is `loadTimeoutS`.
    public init(connectTimeoutS: Double = 5, loadTimeoutS: Double = 900) {
        options = HTTPClientOptions(connectTimeout: connectTimeoutS, totalTimeout: loadTimeoutS, retries: 0)
    }

    public func unload(_ r: ResidentService) throws -> String {
        let base = try url(r, "unload")
        switch r.service.lowercased() {
        case "tabbyapi":
            let resp = try send(r, "unload", .json(url: base + "/v1/model/unload", body: [:], headers: try adminHeaders(r, "unload")))
            guard resp.isSuccess else { throw fail(r, "unload", resp) }
            return "TabbyAPI unloaded its model"
        case "ollama":
            guard let m = r.model else { throw ResidentControlError(resident: r.name, action: "unload", detail: "Ollama needs `model` (the model to unload)") }
            let resp = try send(r, "unload", .json(url: base + "/api/generate", body: ["model": .string(m), "keep_alive": 0, "stream": false]))
            guard resp.isSuccess else { throw fail(r, "unload", resp) }
            let reason = resp.jsonValue?["done_reason"]?.stringValue
            guard reason == "unload" else {
                throw ResidentControlError(resident: r.name, action: "unload", detail: "Ollama answered done_reason \(reason.map { "'\($0)'" } ?? "none") instead of 'unload': \(resp.summary)")
            }
            return "Ollama unloaded \(m)"
        case "comfyui":
            let resp = try send(r, "unload", .json(url: base + "/free", body: ["unload_models": true, "free_memory": true]))
            guard resp.isSuccess else { throw fail(r, "unload", resp) }
            return "ComfyUI freed its models and cached memory"
        default:
            throw ResidentControlError(resident: r.name, action: "unload", detail: "no unload call for service '\(r.service)' (tabbyapi, ollama, comfyui)")
        }
    }

    public func load(_ r: ResidentService) throws -> String {
        let base = try url(r, "load")
        switch r.service.lowercased() {
        case "tabbyapi":
            guard let m = r.model else { throw ResidentControlError(resident: r.name, action: "load", detail: "TabbyAPI needs `model` (the model directory to load)") }
            var finished = false, streamError: String?
            let req = HTTPClientRequest.json(url: base + "/v1/model/load", body: ["model_name": .string(m)], headers: try adminHeaders(r, "load"))
            let resp: HTTPClientResponse
            do {
                resp = try HTTPClient(service: r.service, options: options).stream(req) { line in
                    guard line.hasPrefix("data:") else { return true }
                    let payload = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
                    guard let v = try? JSONDecoder().decode(JSONValue.self, from: Data(payload.utf8)) else { return true }
                    if let e = v["error"] { streamError = e["message"]?.stringValue ?? "\(e)"; return false }
                    if v["status"]?.stringValue == "finished" { finished = true; return false }
                    return true
                }
            } catch let e as HTTPClientError {
                throw ResidentControlError(resident: r.name, action: "load", detail: e.description)
            }
            guard resp.isSuccess else { throw fail(r, "load", resp) }
            if let streamError { throw ResidentControlError(resident: r.name, action: "load", detail: "TabbyAPI could not load \(m): \(streamError)") }
            guard finished else { throw ResidentControlError(resident: r.name, action: "load", detail: "TabbyAPI's load stream for \(m) ended before 'finished'") }
            return "TabbyAPI loaded \(m)"
        case "ollama":
            guard let m = r.model else { throw ResidentControlError(resident: r.name, action: "load", detail: "Ollama needs `model` (the model to load)") }
            let resp = try send(r, "load", .json(url: base + "/api/generate", body: ["model": .string(m), "keep_alive": -1, "stream": false]))
            guard resp.isSuccess else { throw fail(r, "load", resp) }
            return "Ollama loaded \(m)"
        case "comfyui":
            return "ComfyUI loads its checkpoints with the next job"
        default:
            throw ResidentControlError(resident: r.name, action: "load", detail: "no load call for service '\(r.service)' (tabbyapi, ollama, comfyui)")
        }
    }

    /// TabbyAPI `GET /v1/model` (503: nothing loaded; another model than `model`: not ours);
    /// Ollama `GET /api/ps`; ComfyUI: nil.
    public func isLoaded(_ r: ResidentService) -> Bool? {
        guard let base = try? url(r, "probe") else { return nil }
        let client = HTTPClient(service: r.service, options: HTTPClientOptions(connectTimeout: options.connectTimeout, totalTimeout: 10, retries: 0))
        switch r.service.lowercased() {
        case "tabbyapi":
            // Model routes take the admin key as a bearer token (x-admin-key is for admin routes only).
            let key = (try? adminHeaders(r, "probe"))?["x-admin-key"]
            guard let resp = try? client.send(HTTPClientRequest(url: base + "/v1/model", headers: key.map { ["Authorization": "Bearer \($0)"] } ?? [:])) else { return nil }
            if resp.status == 503 { return false }
            guard resp.isSuccess, let id = resp.jsonValue?["id"]?.stringValue else { return nil }
            return r.model.map { $0 == id } ?? true
        case "ollama":
            guard let m = r.model, let resp = try? client.send(HTTPClientRequest(url: base + "/api/ps")), resp.isSuccess,
                  let models = resp.jsonValue?["models"]?.arrayValue else { return nil }
            return models.contains { $0["name"]?.stringValue == m || $0["model"]?.stringValue == m }
        default:
            return nil
        }
    }

    func url(_ r: ResidentService, _ action: String) throws -> String {
        guard var u = r.url, u.hasPrefix("http://") || u.hasPrefix("https://") else {
            throw ResidentControlError(resident: r.name, action: action, detail: "no `url` for the service's API (http://host:port)")
        }
        while u.hasSuffix("/") { u.removeLast() }
        return u
    }

    func adminHeaders(_ r: ResidentService, _ action: String) throws -> [String: String] {
        guard let path = r.adminKeyFile else { return [:] }
        let key: String
        do { key = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) } catch {
            throw ResidentControlError(resident: r.name, action: action, detail: "cannot read the admin key file \(path): \(error.localizedDescription)")
        }
        guard !key.isEmpty else { throw ResidentControlError(resident: r.name, action: action, detail: "the admin key file \(path) is empty") }
        return ["x-admin-key": key]
    }

    func send(_ r: ResidentService, _ action: String, _ req: HTTPClientRequest) throws -> HTTPClientResponse {
        do { return try HTTPClient(service: r.service, options: options).send(req) } catch let e as HTTPClientError {
            throw ResidentControlError(resident: r.name, action: action, detail: e.description)
        }
    }

    func fail(_ r: ResidentService, _ action: String, _ resp: HTTPClientResponse) -> ResidentControlError {
        var hint = ""
        if resp.status == 401 { hint = " (TabbyAPI needs the admin key: set admin_key_file)" }
        if resp.status == 404 && r.service.lowercased() == "ollama" { hint = " (is the model pulled on that node?)" }
        return ResidentControlError(resident: r.name, action: action, detail: resp.summary + hint)
    }
}
