import XCTest
import Foundation
@testable import HydraCore
@testable import HydraIO
@testable import HydraTestSupport

/// Holds each fake to the shapes written in /work/shared/service-apis.md, using
/// raw HTTP (not the executors), so a fake and its client cannot drift together.
final class FakeContractTests: XCTestCase {
    let http = HTTPClient(service: "contract", options: HTTPClientOptions(totalTimeout: 10, retries: 0))

    func get(_ url: String, headers: [String: String] = [:]) throws -> HTTPClientResponse {
        try http.send(HTTPClientRequest(url: url, headers: headers))
    }
    func post(_ url: String, _ body: JSONValue, headers: [String: String] = [:]) throws -> HTTPClientResponse {
        try http.send(.json(url: url, body: body, headers: headers))
    }
    func postRaw(_ url: String, _ body: String) throws -> HTTPClientResponse {
        try http.send(HTTPClientRequest(method: "POST", url: url, headers: ["Content-Type": "application/json"], body: Data(body.utf8)))
    }

    // MARK: ComfyUI §1

    static let graph: JSONValue = [
        "3": ["class_type": "KSampler", "inputs": ["seed": 5, "steps": 3, "cfg": 7, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]]],
        "4": ["class_type": "CheckpointLoaderSimple", "inputs": ["ckpt_name": "atlas-xl-base.safetensors"]],
        "5": ["class_type": "EmptyLatentImage", "inputs": ["width": 512, "height": 512, "batch_size": 1]],
        "6": ["class_type": "CLIPTextEncode", "inputs": ["text": "a glass orchard", "clip": ["4", 1]]],
        "7": ["class_type": "CLIPTextEncode", "inputs": ["text": "", "clip": ["4", 1]]],
        "8": ["class_type": "VAEDecode", "inputs": ["samples": ["3", 0], "vae": ["4", 2]]],
        "9": ["class_type": "SaveImage", "inputs": ["filename_prefix": "hydra/contract", "images": ["8", 0]]],
    ]

    func testComfyUIPromptHistoryViewAndEventOrder() throws {
        let fake = FakeComfyUI(settings: FakeSettings(latencyMs: 30))
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }

        let r = try post(base + "/api/prompt", ["prompt": Self.graph, "client_id": "c1", "prompt_id": "p-fixed-1"])
        XCTAssertEqual(r.status, 200)
        let j = try r.json()
        XCTAssertEqual(j["prompt_id"]?.stringValue, "p-fixed-1", "client prompt_id honoured")
        XCTAssertNotNil(j["number"]?.intValue)
        XCTAssertEqual(j["node_errors"], [:])
        XCTAssertEqual(try get(base + "/history/p-fixed-1").json(), [:], "{} until finished, never 404")

        XCTAssertTrue(TestEnv.waitUntil { ((try? self.get(base + "/history/p-fixed-1").json())?["p-fixed-1"]) != nil })
        let entry = try XCTUnwrap(try get(base + "/history/p-fixed-1").json()["p-fixed-1"])
        XCTAssertEqual(entry["prompt"]?.arrayValue?.count, 5, "[number, prompt_id, graph, extra_data, outputs_to_execute]")
        XCTAssertEqual(entry["prompt"]?.arrayValue?[3]["client_id"]?.stringValue, "c1")
        XCTAssertEqual(entry["status"]?["status_str"]?.stringValue, "success")
        XCTAssertEqual(entry["status"]?["completed"]?.boolValue, true)
        let msgs = try XCTUnwrap(entry["status"]?["messages"]?.arrayValue)
        XCTAssertTrue(msgs.allSatisfy { $0.arrayValue?.count == 2 })
        XCTAssertEqual(msgs.compactMap { $0.arrayValue?[0].stringValue }, ["execution_start", "execution_cached", "execution_success"])
        let image = try XCTUnwrap(entry["outputs"]?["9"]?["images"]?.arrayValue?.first)
        XCTAssertEqual(image["filename"]?.stringValue, "contract_00001_.png")
        XCTAssertEqual(image["subfolder"]?.stringValue, "hydra")
        XCTAssertEqual(image["type"]?.stringValue, "output")
        XCTAssertEqual(entry["meta"]?["9"]?["node_id"]?.stringValue, "9")

        let events = fake.events.filter { $0.clientID == "c1" }
        let types = events.map(\.type)
        XCTAssertEqual(Array(types.prefix(2)), ["execution_start", "execution_cached"])
        XCTAssertEqual(Array(types.suffix(4)), ["executed", "execution_success", "status", "executing"])
        XCTAssertTrue(types.contains("progress"))
        XCTAssertEqual(events.last?.data["node"], .null, "executing(node: null) ends the prompt")
        XCTAssertEqual(events.first { $0.type == "execution_success" }?.historyWritten, false, "success is sent before history is stored")
        XCTAssertEqual(events.last?.historyWritten, true, "history is written before the final executing(null)")

        let view = try get(base + "/view" + HTTPClient.query([("filename", "contract_00001_.png"), ("subfolder", "hydra"), ("type", "output")]))
        XCTAssertEqual(view.status, 200)
        XCTAssertEqual(view.headers["content-type"], "image/png")
        XCTAssertNotNil(PNGEncoder.dimensions(view.body))
        XCTAssertEqual(try get(base + "/view?filename=..%2Fx.png&type=output").status, 400)
        XCTAssertEqual(try get(base + "/view?filename=x.png&type=bogus").status, 400)
        XCTAssertEqual(try get(base + "/view?filename=x.png&subfolder=..%2F..&type=output").status, 403)
        XCTAssertEqual(try get(base + "/view?filename=nope.png&type=output").status, 404)
        XCTAssertEqual(try get(base + "/prompt").json()["exec_info"]?["queue_remaining"]?.intValue, 0)
    }

    func testComfyUIValidationErrorShapes() throws {
        let fake = FakeComfyUI()
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        func error(_ body: JSONValue) throws -> JSONValue {
            let r = try post(base + "/prompt", body)
            XCTAssertEqual(r.status, 400)
            return try r.json()
        }
        let none = try error(["client_id": "x"])
        XCTAssertEqual(none["error"]?["type"]?.stringValue, "no_prompt")
        XCTAssertEqual(none["error"]?["message"]?.stringValue, "No prompt provided")
        XCTAssertEqual(none["node_errors"], [:])
        let unknown = try error(["prompt": ["12": ["class_type": "Foo", "inputs": [:]]]])
        XCTAssertEqual(unknown["error"]?["type"]?.stringValue, "invalid_prompt")
        XCTAssertEqual(unknown["error"]?["message"]?.stringValue, "Cannot execute because node Foo does not exist.")
        XCTAssertEqual(unknown["error"]?["details"]?.stringValue, "Node ID '#12'")
        let noClass = try error(["prompt": ["1": ["inputs": [:]]]])
        XCTAssertEqual(noClass["error"]?["message"]?.stringValue, "Cannot execute because a node is missing the class_type property.")
        let noOut = try error(["prompt": ["4": ["class_type": "CheckpointLoaderSimple", "inputs": ["ckpt_name": "atlas-xl-base.safetensors"]]]])
        XCTAssertEqual(noOut["error"]?["type"]?.stringValue, "prompt_no_outputs")
        guard case .object(var g) = Self.graph, case .object(var n4) = g["4"]! else { return XCTFail() }
        n4["inputs"] = ["ckpt_name": "missing.safetensors"]; g["4"] = .object(n4)
        let bad = try error(["prompt": .object(g)])
        XCTAssertEqual(bad["error"]?["type"]?.stringValue, "prompt_outputs_failed_validation")
        XCTAssertEqual(Set(bad["error"]?.objectValue?.keys.map { $0 } ?? []), ["type", "message", "details", "extra_info"])
        let ne = try XCTUnwrap(bad["node_errors"]?["4"])
        XCTAssertEqual(ne["class_type"]?.stringValue, "CheckpointLoaderSimple")
        XCTAssertEqual(ne["dependent_outputs"], ["9"])
        XCTAssertEqual(ne["errors"]?.arrayValue?.first?["type"]?.stringValue, "value_not_in_list")
        XCTAssertEqual(ne["errors"]?.arrayValue?.first?["extra_info"]?["received_value"]?.stringValue, "missing.safetensors")
        let malformed = try postRaw(base + "/prompt", "{not json")
        XCTAssertEqual(malformed.status, 500)
        XCTAssertTrue(malformed.headers["content-type"]?.hasPrefix("text/plain") ?? false)
    }

    func testComfyUIQueueInterruptAndVRAM() throws {
        let fake = FakeComfyUI(settings: FakeSettings(vramBytes: 4 << 30))
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let idle = try get(base + "/system_stats").json()
        let dev = try XCTUnwrap(idle["devices"]?.arrayValue?.first)
        XCTAssertEqual(dev["vram_total"]?.doubleValue, dev["vram_free"]?.doubleValue)
        XCTAssertEqual(dev["type"]?.stringValue, "cuda")
        fake.faults.set("hang")
        _ = try post(base + "/prompt", ["prompt": Self.graph, "client_id": "c2", "prompt_id": "p-hang"])
        XCTAssertTrue(TestEnv.waitUntil { fake.events.contains { $0.type == "progress" } })
        let running = try get(base + "/queue").json()
        XCTAssertEqual(running["queue_running"]?.arrayValue?.first?.arrayValue?.count, 5)
        XCTAssertEqual(running["queue_running"]?.arrayValue?.first?.arrayValue?[1].stringValue, "p-hang")
        let busy = try get(base + "/system_stats").json()["devices"]?.arrayValue?.first
        XCTAssertLessThan(busy?["vram_free"]?.doubleValue ?? .infinity, dev["vram_free"]!.doubleValue!, "vram_free drops while a job runs")
        let intr = try post(base + "/interrupt", ["prompt_id": "p-hang"])
        XCTAssertEqual(intr.status, 200)
        XCTAssertTrue(intr.body.isEmpty)
        XCTAssertTrue(TestEnv.waitUntil { ((try? self.get(base + "/history/p-hang").json())?["p-hang"]) != nil })
        let st = try get(base + "/history/p-hang").json()["p-hang"]?["status"]
        XCTAssertEqual(st?["status_str"]?.stringValue, "error")
        XCTAssertEqual(st?["completed"]?.boolValue, false)
        XCTAssertEqual(st?["messages"]?.arrayValue?.last?.arrayValue?.first?.stringValue, "execution_interrupted")
    }

    func testComfyUIOOMExecutionErrorShape() throws {
        let fake = FakeComfyUI()
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        fake.faults.set("oom")
        _ = try post(base + "/prompt", ["prompt": Self.graph, "prompt_id": "p-oom"])
        XCTAssertTrue(TestEnv.waitUntil { ((try? self.get(base + "/history/p-oom").json())?["p-oom"]) != nil })
        let e = try get(base + "/history/p-oom").json()["p-oom"]
        let last = try XCTUnwrap(e?["status"]?["messages"]?.arrayValue?.last?.arrayValue)
        XCTAssertEqual(last[0].stringValue, "execution_error")
        for k in ["prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type", "traceback", "current_inputs", "current_outputs", "timestamp"] {
            XCTAssertNotNil(last[1][k], k)
        }
        XCTAssertTrue(last[1]["exception_message"]?.stringValue?.hasPrefix("CUDA out of memory.") ?? false)
        XCTAssertEqual(e?["status"]?["status_str"]?.stringValue, "error")
    }

    // MARK: TabbyAPI §2.2

    func testTabbyAuthAndErrorShapes() throws {
        let fake = FakeLLM(flavor: .tabby, apiKey: "k-api", adminKey: "k-admin")
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let chat: JSONValue = ["messages": [["role": "user", "content": "hello"]]]
        XCTAssertEqual(try post(base + "/v1/chat/completions", chat).json(), ["detail": "Please provide an API key"])
        let wrong = try post(base + "/v1/chat/completions", chat, headers: ["x-api-key": "nope", "Authorization": "Bearer k-api"])
        XCTAssertEqual(wrong.status, 401)
        XCTAssertEqual(try wrong.json(), ["detail": "Invalid API key"], "x-api-key wins over a good Bearer")
        XCTAssertEqual(try post(base + "/v1/chat/completions", chat, headers: ["Authorization": "Bearer k-api"]).status, 200)
        XCTAssertEqual(try get(base + "/health").status, 200, "no auth on /health")

        let ctx = try post(base + "/v1/chat/completions", ["messages": [["role": "user", "content": .string(String(repeating: "word ", count: 5000))]]], headers: ["x-api-key": "k-api"])
        XCTAssertEqual(ctx.status, 400)
        XCTAssertEqual(try ctx.json()["error"]?["code"]?.stringValue, "context_length_exceeded")
        XCTAssertEqual(try ctx.json()["error"]?["type"]?.stringValue, "invalid_request_error")
        XCTAssertEqual(try post(base + "/v1/chat/completions", ["messages": []], headers: ["x-api-key": "k-api"]).status, 422)

        XCTAssertEqual(try post(base + "/v1/model/unload", [:], headers: ["x-api-key": "k-api"]).status, 401, "admin key needed")
        XCTAssertEqual(try post(base + "/v1/model/unload", [:], headers: ["x-admin-key": "k-admin"]).status, 200)
        XCTAssertEqual(try get(base + "/v1/model", headers: ["x-api-key": "k-api"]).json(), ["detail": "No models are currently loaded."])
        XCTAssertEqual(try post(base + "/v1/chat/completions", chat, headers: ["x-api-key": "k-api"]).status, 503)
        let load = try post(base + "/v1/model/load", ["model_name": "atlas-70b-exl2-fictional"], headers: ["x-admin-key": "k-admin"])
        let events = load.text.components(separatedBy: "\r\n").filter { $0.hasPrefix("data: ") }
        XCTAssertEqual(events.count, 4)
        XCTAssertTrue(events.last?.contains("\"status\":\"finished\"") ?? false)
        XCTAssertFalse(load.text.contains("[DONE]"), "model load stream has no [DONE]")
        XCTAssertEqual(try get(base + "/v1/model", headers: ["x-api-key": "k-api"]).json()["id"]?.stringValue, "atlas-70b-exl2-fictional")
    }

    func testTabbySSEFramingAndUsageRules() throws {
        let fake = FakeLLM(flavor: .tabby)
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let msgs: JSONValue = [["role": "user", "content": "hello"]]
        let plain = try post(base + "/v1/chat/completions", ["messages": msgs]).json()
        XCTAssertTrue(plain["id"]?.stringValue?.hasPrefix("cmpl-") ?? false)
        XCTAssertEqual(plain["object"]?.stringValue, "chat.completion")
        XCTAssertNil(plain["usage"], "no usage without include_usage, even non-streaming")
        XCTAssertEqual(plain["choices"]?.arrayValue?.first?["message"]?["role"]?.stringValue, "assistant")
        let withUsage = try post(base + "/v1/chat/completions", ["messages": msgs, "stream_options": ["include_usage": true]]).json()
        for k in ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_time", "completion_tokens_per_sec", "total_time"] {
            XCTAssertNotNil(withUsage["usage"]?[k], k)
        }

        let s = try post(base + "/v1/chat/completions", ["messages": msgs, "stream": true, "stream_options": ["include_usage": true]])
        XCTAssertTrue(s.headers["content-type"]?.hasPrefix("text/event-stream") ?? false)
        XCTAssertFalse(s.text.replacingOccurrences(of: "\r\n", with: "").contains("\n"), "every line ends with CRLF")
        let lines = s.text.components(separatedBy: "\r\n")
        XCTAssertTrue(lines[0].hasPrefix(": ping - "))
        let data = lines.filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        XCTAssertEqual(data.last, "[DONE]")
        for (i, l) in lines.enumerated() where l.hasPrefix("data: ") { XCTAssertEqual(i + 1 < lines.count ? lines[i + 1] : nil, "", "blank line after each event") }
        let chunks = try data.dropLast().map { try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        XCTAssertTrue(chunks.allSatisfy { $0["id"]?.stringValue?.hasPrefix("chatcmpl-") ?? false && $0["object"]?.stringValue == "chat.completion.chunk" })
        XCTAssertNil(chunks.first?["choices"]?.arrayValue?.first?["delta"]?["role"], "Tabby sends no role delta")
        XCTAssertEqual(chunks.last?["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue, "stop", "finish_reason moves to the usage chunk")
        XCTAssertNotNil(chunks.last?["usage"])
        XCTAssertEqual(chunks.dropLast().last?["choices"]?.arrayValue?.first?["finish_reason"], .null)
        let noUsage = try post(base + "/v1/chat/completions", ["messages": msgs, "stream": true])
        XCTAssertFalse(noUsage.text.contains("\"usage\""))

        fake.faults.set("oom")
        let oom = try post(base + "/v1/chat/completions", ["messages": msgs, "stream": true])
        XCTAssertEqual(oom.status, 200)
        XCTAssertTrue(oom.text.contains("data: {\"error\":{\"message\":\"Chat completion aborted. Please check the server console.\",\"trace\":null}}"))
        XCTAssertFalse(oom.text.contains("[DONE]"))
        let health = try get(base + "/health")
        XCTAssertEqual(health.status, 503)
        XCTAssertEqual(try health.json()["status"]?.stringValue, "unhealthy")
        XCTAssertTrue(try health.json()["issues"]?.arrayValue?.first?["description"]?.stringValue?.hasPrefix("OutOfMemoryError") ?? false)
    }

    // MARK: Ollama §2.3, §2.4

    func testOllamaNativeNDJSONAndPS() throws {
        let fake = FakeLLM(flavor: .ollama, settings: FakeSettings(vramBytes: 5 << 30))
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        XCTAssertEqual(try get(base + "/api/ps").json(), ["models": []])
        let r = try post(base + "/api/chat", ["model": "atlas-chat:8b", "messages": [["role": "user", "content": "hi"]]])
        XCTAssertEqual(r.headers["content-type"], "application/x-ndjson", "native routes stream by default")
        let lines = r.text.split(separator: "\n").map(String.init)
        let objs = try lines.map { try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        XCTAssertTrue(objs.dropLast().allSatisfy { $0["done"] == false && $0["message"]?["role"]?.stringValue == "assistant" && $0["created_at"] != nil })
        let last = try XCTUnwrap(objs.last)
        XCTAssertEqual(last["done"], true)
        XCTAssertEqual(last["done_reason"]?.stringValue, "stop")
        XCTAssertEqual(last["message"]?["content"]?.stringValue, "")
        for k in ["total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"] {
            XCTAssertNotNil(last[k]?.intValue, k)
        }
        XCTAssertGreaterThan(last["load_duration"]?.intValue ?? 0, 1_000_000, "ns, and non-zero on the loading request")
        let ps = try XCTUnwrap(try get(base + "/api/ps").json()["models"]?.arrayValue?.first)
        XCTAssertEqual(ps["size_vram"]?.doubleValue, Double(5 << 30))
        XCTAssertNotNil(ps["expires_at"]?.stringValue.flatMap { ISO8601DateFormatter.withFraction.date(from: $0) })
        XCTAssertEqual(ps["details"]?["format"]?.stringValue, "gguf")

        let plain = try post(base + "/api/chat", ["model": "atlas-chat:8b", "stream": false, "messages": [["role": "user", "content": "hi"]]]).json()
        XCTAssertEqual(plain["done"], true)
        XCTAssertFalse(plain["message"]?["content"]?.stringValue?.isEmpty ?? true)
        let missing = try post(base + "/api/chat", ["model": "ghost:1b", "messages": [["role": "user", "content": "hi"]]])
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(try missing.json(), ["error": "model 'ghost:1b' not found"])
        XCTAssertEqual(try post(base + "/api/chat", ["model": "atlas-chat:8b", "messages": []]).json()["done_reason"]?.stringValue, "load")
        XCTAssertEqual(try postRaw(base + "/api/chat", "").json(), ["error": "missing request body"])

        fake.faults.set("oom", times: 1)
        let mid = try post(base + "/api/chat", ["model": "atlas-chat:8b", "messages": [["role": "user", "content": "hi"]]])
        XCTAssertEqual(mid.status, 200)
        let lastLine = try JSONDecoder().decode(JSONValue.self, from: Data(mid.text.split(separator: "\n").last!.utf8))
        XCTAssertNotNil(lastLine["error"]?.stringValue)
        XCTAssertNil(lastLine["done"])
    }

    func testOllamaOpenAIRoute() throws {
        let fake = FakeLLM(flavor: .ollama)
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let s = try post(base + "/v1/chat/completions", ["model": "atlas-chat:8b", "stream": true, "stream_options": ["include_usage": true],
                                                          "messages": [["role": "user", "content": "hi"]]])
        XCTAssertFalse(s.text.contains("\r"), "LF-only SSE")
        let data = s.text.components(separatedBy: "\n").filter { $0.hasPrefix("data: ") }.map { String($0.dropFirst(6)) }
        XCTAssertEqual(data.last, "[DONE]")
        let chunks = try data.dropLast().map { try JSONDecoder().decode(JSONValue.self, from: Data($0.utf8)) }
        XCTAssertEqual(chunks.first?["choices"]?.arrayValue?.first?["delta"]?["role"]?.stringValue, "assistant")
        XCTAssertEqual(chunks.last?["choices"], [])
        XCTAssertNotNil(chunks.last?["usage"])
        XCTAssertEqual(chunks.dropLast().last?["choices"]?.arrayValue?.first?["delta"], [:])
        XCTAssertEqual(chunks.dropLast().last?["choices"]?.arrayValue?.first?["finish_reason"]?.stringValue, "stop")
        XCTAssertTrue(chunks.allSatisfy { $0["system_fingerprint"]?.stringValue == "fp_ollama" })
        let plain = try post(base + "/v1/chat/completions", ["model": "atlas-chat:8b", "messages": [["role": "user", "content": "hi"]]]).json()
        XCTAssertNotNil(plain["usage"], "Ollama /v1 always includes usage without streaming")
        let empty = try post(base + "/v1/chat/completions", ["model": "atlas-chat:8b", "messages": []])
        XCTAssertEqual(empty.status, 400)
        XCTAssertEqual(try empty.json(), ["error": ["message": "[] is too short - 'messages'", "type": "invalid_request_error", "param": nil, "code": nil]])
        XCTAssertEqual(try post(base + "/v1/chat/completions", ["model": "ghost", "messages": [["role": "user", "content": "x"]]]).json()["error"]?["type"]?.stringValue, "not_found_error")
    }

    // MARK: GPT-SoVITS §3

    func testTTSShapes() throws {
        let fake = FakeTTS(settings: FakeSettings(latencyMs: 40))
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let ok: JSONValue = ["text": "A fictional harbor at dawn.", "text_lang": "en", "ref_audio_path": "refs/narrator-a.wav", "prompt_lang": "en"]
        let r = try post(base + "/tts", ok)
        XCTAssertEqual(r.status, 200)
        XCTAssertEqual(r.headers["content-type"], "audio/wav")
        let info = try XCTUnwrap(WAVFile.inspect(r.body))
        XCTAssertEqual(info.sampleRate, 32000); XCTAssertEqual(info.channels, 1); XCTAssertEqual(info.bitsPerSample, 16)
        let longer = try post(base + "/tts", ["text": .string(String(repeating: "A fictional harbor at dawn. ", count: 4)), "text_lang": "en", "ref_audio_path": "refs/narrator-a.wav", "prompt_lang": "en"])
        XCTAssertGreaterThan(WAVFile.inspect(longer.body)!.frames, info.frames, "length follows the text")

        func message(_ body: JSONValue) throws -> JSONValue { let r = try post(base + "/tts", body); XCTAssertEqual(r.status, 400); return try r.json() }
        XCTAssertEqual(try message(["text": "x"]), ["message": "ref_audio_path is required"])
        XCTAssertEqual(try message(["ref_audio_path": "refs/narrator-a.wav"]), ["message": "text is required"])
        XCTAssertEqual(try message(["text": "x", "ref_audio_path": "refs/narrator-a.wav", "text_lang": "xx", "prompt_lang": "en"]), ["message": "text_lang: xx is not supported in version v2"])
        XCTAssertEqual(try message(["text": "x", "ref_audio_path": "refs/narrator-a.wav", "text_lang": "en", "prompt_lang": "en", "media_type": "mp3"]), ["message": "media_type: mp3 is not supported"])
        XCTAssertEqual(try message(["text": "x", "ref_audio_path": "refs/gone.wav", "text_lang": "en", "prompt_lang": "en"]), ["message": "tts failed", "Exception": "refs/gone.wav not exists"])
        let getNoLang = try get(base + "/tts?text=x&ref_audio_path=refs/narrator-a.wav")
        XCTAssertEqual(getNoLang.status, 500)
        XCTAssertTrue(getNoLang.headers["content-type"]?.hasPrefix("text/plain") ?? false)

        let stream = try post(base + "/tts", ["text": "A fictional harbor.", "text_lang": "en", "ref_audio_path": "refs/narrator-a.wav", "prompt_lang": "en", "streaming_mode": true])
        let header = [UInt8](stream.body.prefix(44))
        XCTAssertEqual(Array(header[40..<44]), [0, 0, 0, 0], "streaming WAV header announces data length 0")
        XCTAssertGreaterThan(stream.body.count, 44)

        XCTAssertEqual(try get(base + "/set_gpt_weights?weights_path=GPT_weights_v2/narrator-e15.ckpt").json(), ["message": "success"])
        XCTAssertEqual(try get(base + "/set_sovits_weights").json(), ["message": "sovits weight path is required"])
        XCTAssertEqual(try get(base + "/set_gpt_weights?weights_path=x.ckpt").json()["message"], "change gpt weight failed")
        XCTAssertEqual(try post(base + "/control", ["command": "restart"]).status, 405)
        XCTAssertThrowsError(try get(base + "/control?command=restart"), "restart drops the connection")

        fake.faults.set("silent", times: 1)
        let silent = try XCTUnwrap(WAVFile.inspect(try post(base + "/tts", ok).body))
        XCTAssertEqual(silent.sampleRate, 16000); XCTAssertEqual(silent.frames, 16000); XCTAssertTrue(silent.allZero)
    }

    func testTTSHandlesOneRequestAtATime() throws {
        let fake = FakeTTS(settings: FakeSettings(latencyMs: 60))
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let body: JSONValue = ["text": "One at a time.", "text_lang": "en", "ref_audio_path": "refs/narrator-a.wav", "prompt_lang": "en"]
        let group = DispatchGroup()
        let http = self.http
        for _ in 0..<3 {
            group.enter()
            Thread { _ = try? http.send(.json(url: base + "/tts", body: body)); group.leave() }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(fake.peakInFlight, 1)
    }

    // MARK: scorer §4.2

    func testScorerShapes() throws {
        let root = TestEnv.tempDir()
        try PNGEncoder.rgb(width: 2, height: 2) { _, _ in (1, 2, 3) }.write(to: URL(fileURLWithPath: root + "/a.png"))
        let fake = FakeScorer(imageRoot: root)
        let base = "http://127.0.0.1:\(try fake.start())"
        defer { fake.stop() }
        let ok = try post(base + "/score", ["image_path": "a.png", "reference_face_path": "a.png"]).json()
        XCTAssertNotNil(ok["aesthetic"]?.doubleValue); XCTAssertNotNil(ok["musiq"]?.doubleValue); XCTAssertNotNil(ok["face_similarity"]?.doubleValue)
        XCTAssertEqual(ok["face"]?["status"]?.stringValue, "ok")
        XCTAssertEqual(ok["models"]?["face"]?.stringValue, "buffalo_l")
        XCTAssertNotNil(ok["elapsed_ms"]?.intValue)
        XCTAssertEqual(try post(base + "/score", ["image_path": "a.png"]).json()["aesthetic"], ok["aesthetic"], "deterministic")
        let missing = try post(base + "/score", ["image_path": "b.png"])
        XCTAssertEqual(missing.status, 404)
        XCTAssertEqual(try missing.json()["error"]?["code"]?.stringValue, "not_found")
        XCTAssertEqual(try post(base + "/score", ["image_path": "a.png", "image_b64": "x"]).json()["error"]?["code"]?.stringValue, "bad_request")
        fake.faults.set("busy", times: 1)
        let busy = try post(base + "/score", ["image_path": "a.png"])
        XCTAssertEqual(busy.status, 503); XCTAssertEqual(busy.headers["retry-after"], "1")
        fake.faults.set("oom", times: 1)
        XCTAssertEqual(try post(base + "/score", ["image_path": "a.png"]).json()["error"]?["code"]?.stringValue, "cuda_oom")
        XCTAssertEqual(try get(base + "/health").json()["status"]?.stringValue, "ok")
    }
}

extension ISO8601DateFormatter {
    static var withFraction: ISO8601DateFormatter {
        let f = ISO8601DateFormatter(); f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]; return f
    }
}
