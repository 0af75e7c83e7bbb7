import Foundation
import HydraCore
import HydraIO

/// Job kind `score`: Hydra's scoring contract (service-apis.md §4.2). Records
/// the scores; pass/fail gating stays with the coordinator.
public struct ScorerExecutor: Executor {
    public let kind = "score"
    public let endpoint: ServiceEndpoint
    public init(endpoint: ServiceEndpoint) { self.endpoint = endpoint }

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let started = Date()
        let r = SpecReader(context.envelope.spec, kind: kind)
        var body: [String: JSONValue] = [:]
        let sources = ["image_path", "image_file", "image_b64"].filter { r.has($0) }
        guard sources.count == 1 else { throw r.fail("image_path", "give exactly one of image_path (on the scorer host), image_file (on this node), image_b64") }
        if let p = try r.string("image_path") { body["image_path"] = .string(p) }
        if let b = try r.string("image_b64") { body["image_b64"] = .string(b) }
        if let f = try r.string("image_file") {
            // The scorer usually lives on another node; send the bytes rather than a path it cannot see.
            guard let d = FileManager.default.contents(atPath: f) else { throw r.fail("image_file", "\(f) cannot be read on \(context.node)") }
            body["image_b64"] = .string(d.base64EncodedString())
        }
        if let p = try r.string("reference_face_path") { body["reference_face_path"] = .string(p) }
        if let e = r.spec["reference_embedding"] {
            guard let a = e.arrayValue, a.count == 512, a.allSatisfy({ $0.doubleValue != nil }) else { throw r.fail("reference_embedding", "must be 512 numbers") }
            body["reference_embedding"] = e
        }
        if let m = try r.stringArray("metrics") {
            let bad = Set(m).subtracting(["aesthetic", "musiq", "face_similarity"])
            guard bad.isEmpty else { throw r.fail("metrics", "unknown metric \(bad.sorted()[0]) (aesthetic, musiq, face_similarity)") }
            body["metrics"] = .array(m.map { .string($0) })
        }
        try ExecutorSupport.checkStop(context, service: "scorer")
        let resp: HTTPClientResponse
        do {
            // Scoring is a pure function of the image: safe to repeat on 503 busy/loading.
            resp = try HTTPClient(service: "scorer").send(
                .json(url: endpoint.base + "/score", body: .object(body), idempotent: true),
                options: HTTPClientOptions(totalTimeout: endpoint.timeoutSeconds ?? 120, retries: 3, retryBackoff: 0.5),
                deadline: context.deadline, cancellation: context.cancellation)
        } catch let e as HTTPClientError { throw e.executionFailure }
        guard resp.isSuccess else { throw Self.classify(resp) }
        guard let j = resp.jsonValue, j.objectValue != nil, j["aesthetic"] != nil || j["musiq"] != nil else {
            throw ExecutionFailure(.transient, "scorer: POST \(resp.url) answered HTTP \(resp.status) with malformed JSON: \(resp.excerpt())")
        }
        // The quality gates compare these numbers; a garbled one read as "no score" would fail the image's
        // gate and reject it, when asking again gets the real score.
        for k in ["aesthetic", "musiq", "face_similarity"] {
            switch j[k] {
            case nil, .null?: continue
            case .number(let d)? where d.isFinite: continue
            case let v?:
                let shown = (try? JSONCoding.encodeString(v)) ?? "\(v)"
                throw ExecutionFailure(.transient, "scorer: POST \(resp.url) answered \(k) = \(shown.prefix(80)), not a number")
            }
        }
        var out: [String: JSONValue] = [:]
        for k in ["aesthetic", "musiq", "face_similarity", "face", "models", "elapsed_ms"] { out[k] = j[k] ?? .null }
        out["duration_s"] = ExecutorSupport.seconds(since: started)
        return ExecutionResult(output: .object(out))
    }

    static func classify(_ resp: HTTPClientResponse) -> ExecutionFailure {
        let code = resp.jsonValue?["error"]?["code"]?.stringValue ?? ""
        let message = resp.jsonValue?["error"]?["message"]?.stringValue ?? ""
        if code == "cuda_oom" || ExecutorSupport.isOOM(message) { return ExecutionFailure(.oom, resp.summary) }
        switch resp.status {
        case 400, 404, 422: return ExecutionFailure(.permanent, resp.summary)
        default: return ExecutionFailure(.transient, resp.summary)
        }
    }
}
