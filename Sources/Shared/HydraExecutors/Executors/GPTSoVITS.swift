import Foundation
import HydraCore
import HydraIO

/// Job kind `tts`: GPT-SoVITS api_v2 POST /tts, the audio saved as a file.
/// Non-streaming only: the silent-failure check needs the whole body.
public struct GPTSoVITSExecutor: Executor {
    public let kind = "tts"
    public let endpoint: ServiceEndpoint
    public init(endpoint: ServiceEndpoint) { self.endpoint = endpoint }

    var client: HTTPClient { HTTPClient(service: "tts") }

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let started = Date()
        let r = SpecReader(context.envelope.spec, kind: kind)
        let text = try r.requireString("text")
        // Text that preprocesses to nothing comes back as the same 1 s of silence as a crash; refuse it here.
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw r.fail("text", "is blank") }
        let ref = try r.requireString("ref_audio_path")
        let lang = (try r.string("text_lang") ?? "auto").lowercased()
        let media = try r.string("media_type") ?? "wav"
        guard ["wav", "raw", "ogg", "aac"].contains(media) else { throw r.fail("media_type", "must be wav, raw, ogg or aac") }
        let expectedRate = try r.int("expected_sample_rate") ?? 32000
        var body: [String: JSONValue] = (try r.object("params")) ?? [:]
        body["text"] = .string(text)
        body["text_lang"] = .string(lang)
        body["ref_audio_path"] = .string(ref)
        body["prompt_lang"] = .string((try r.string("prompt_lang") ?? lang).lowercased())
        body["prompt_text"] = .string(try r.string("prompt_text") ?? "")
        body["media_type"] = .string(media)
        body["streaming_mode"] = false

        // Weight switches are global to the process; the agent runs one TTS job per service at a time.
        if let w = try r.string("gpt_weights") { try setWeights("/set_gpt_weights", w, context) }
        if let w = try r.string("sovits_weights") { try setWeights("/set_sovits_weights", w, context) }
        try ExecutorSupport.checkStop(context, service: "tts")

        let resp: HTTPClientResponse
        do {
            resp = try client.send(.json(url: endpoint.base + "/tts", body: .object(body), idempotent: false),
                                   options: HTTPClientOptions(totalTimeout: endpoint.timeoutSeconds ?? 600,
                                                              maxResponseBytes: try r.int("max_output_bytes") ?? (256 << 20), retries: 0),
                                   deadline: context.deadline, cancellation: context.cancellation)
        } catch let e as HTTPClientError { throw e.executionFailure }
        guard resp.isSuccess else { throw Self.classify(resp) }

        var audioSeconds: Double?
        if media == "wav" {
            guard let info = WAVFile.inspect(resp.body) else {
                throw ExecutionFailure(.transient, "tts: POST \(resp.url) answered 200 with \(resp.body.count) bytes that are not a WAV file")
            }
            // service-apis.md §3.1: an exception inside inference (CUDA OOM included) is
            // swallowed and answered 200 with 1.0 s of silence at 16 kHz.
            if info.allZero {
                throw ExecutionFailure(.oom, "tts: GPT-SoVITS answered 200 with \(String(format: "%.2f", info.seconds)) s of silence at \(info.sampleRate) Hz: inference failed inside the server (CUDA out of memory or similar)")
            }
            if info.sampleRate != expectedRate {
                throw ExecutionFailure(.permanent, "tts: audio is \(info.sampleRate) Hz, expected the model rate \(expectedRate) Hz (set expected_sample_rate for v3/v4 models)")
            }
            audioSeconds = info.seconds
        } else if resp.body.isEmpty {
            throw ExecutionFailure(.transient, "tts: POST \(resp.url) answered 200 with an empty body")
        }
        let name = try r.string("output_name") ?? "\(ExecutorSupport.safeFileName(context.envelope.jobID))_a\(context.envelope.attempt).\(media)"
        let file = try ExecutorSupport.writeOutput(resp.body, name: name, directory: context.outputDirectory)
        var out: [String: JSONValue] = ["file": file, "files": [file], "media_type": .string(media), "duration_s": ExecutorSupport.seconds(since: started)]
        if let audioSeconds { out["audio_seconds"] = .number((audioSeconds * 1000).rounded() / 1000); out["sample_rate"] = .number(Double(expectedRate)) }
        return ExecutionResult(output: .object(out))
    }

    func setWeights(_ path: String, _ weights: String, _ context: ExecutionContext) throws {
        let resp: HTTPClientResponse
        do {
            resp = try client.send(HTTPClientRequest(url: endpoint.base + path + HTTPClient.query([("weights_path", weights)])),
                                   options: HTTPClientOptions(totalTimeout: endpoint.timeoutSeconds ?? 300),
                                   deadline: context.deadline, cancellation: context.cancellation)
        } catch let e as HTTPClientError { throw e.executionFailure }
        guard resp.isSuccess else { throw Self.classify(resp) }
    }

    /// 400 `{"message"}` / `{"message": "tts failed", "Exception"}` are the request's fault
    /// unless the exception is an OOM; 422 is a schema error; 5xx and the rest may pass.
    static func classify(_ resp: HTTPClientResponse) -> ExecutionFailure {
        let j = resp.jsonValue
        let message = j?["message"]?.stringValue
        let exception = j?["Exception"]?.stringValue
        let text = [message, exception].compactMap { $0 }.joined(separator: ": ")
        if ExecutorSupport.isOOM(text) { return ExecutionFailure(.oom, "tts: \(text) (\(resp.method) \(resp.url) → HTTP \(resp.status))") }
        switch resp.status {
        case 400, 404, 405, 422:
            return ExecutionFailure(.permanent, message != nil ? "tts: \(text) (\(resp.method) \(resp.url) → HTTP \(resp.status))" : resp.summary)
        default:
            return ExecutionFailure(.transient, resp.summary)
        }
    }
}
