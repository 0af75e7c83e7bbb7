import XCTest
import Foundation
@testable import HydraCore
@testable import HydraExecutors
@testable import HydraTestSupport

final class LLMExecutorTests: XCTestCase {
    var tabby: FakeLLM!
    var ollama: FakeLLM!
    var executor: LLMExecutor!

    override func setUpWithError() throws {
        tabby = FakeLLM(flavor: .tabby, apiKey: "sk-fictional-tabby")
        ollama = FakeLLM(flavor: .ollama)
        let tp = try tabby.start(), op = try ollama.start()
        executor = LLMExecutor(backends: [
            "tabbyapi": .openAI(ServiceEndpoint(url: "http://127.0.0.1:\(tp)", apiKey: "sk-fictional-tabby"), flavor: .tabby),
            "ollama": .ollama(ServiceEndpoint(url: "http://127.0.0.1:\(op)")),
        ])
    }
    override func tearDown() { tabby.stop(); ollama.stop() }

    func run(_ spec: JSONValue, deadline: Double? = 10) throws -> ExecutionResult {
        try executor.execute(TestEnv.context(spec, kind: "llm", deadlineIn: deadline))
    }

    // MARK: OpenAI-compatible (TabbyAPI)

    func testChatStreamingAndNotRecordUsage() throws {
        for stream in [true, false] {
            let r = try run(["endpoint": "tabbyapi", "prompt": "Describe a quiet harbor.", "stream": .bool(stream), "max_tokens": 50])
            XCTAssertFalse(r.output["text"]?.stringValue?.isEmpty ?? true)
            XCTAssertEqual(r.output["finish_reason"]?.stringValue, "stop")
            XCTAssertEqual(r.output["model"]?.stringValue, "atlas-70b-exl2-fictional")
            XCTAssertEqual(r.output["usage"]?["completion_tokens"]?.intValue, 12, "stream=\(stream)")
            XCTAssertGreaterThan(r.output["usage"]?["prompt_tokens"]?.intValue ?? 0, 0)
        }
        let a = try run(["prompt": "Describe a quiet harbor.", "stream": true, "max_tokens": 50])
        let b = try run(["prompt": "Describe a quiet harbor.", "stream": false, "max_tokens": 50])
        XCTAssertEqual(a.output["text"], b.output["text"], "streamed deltas reassemble to the same text")
    }

    func testCompletionsAPI() throws {
        let r = try run(["api": "completions", "prompt": "Once upon a fictional tide", "max_tokens": 5])
        XCTAssertEqual(r.output["finish_reason"]?.stringValue, "length")
        XCTAssertEqual(r.output["usage"]?["completion_tokens"]?.intValue, 5)
    }

    func testWrongAPIKeyIsPermanent() throws {
        let bad = LLMExecutor(backends: ["tabbyapi": .openAI(ServiceEndpoint(url: backendURL("tabbyapi"), apiKey: "wrong"), flavor: .tabby)])
        let f = expectFailure { try bad.execute(TestEnv.context(["prompt": "hi"], kind: "llm")) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("Invalid API key") ?? false, f?.message ?? "")
    }

    func backendURL(_ name: String) -> String {
        switch executor.backends[name]! { case .openAI(let e, _), .ollama(let e): return e.url }
    }

    func testErrorClasses() {
        let cases: [(String, Bool, FailureClass, String)] = [
            ("500", false, .transient, "HTTP 500"),
            ("busy", true, .transient, "No models are currently loaded."),
            ("context", false, .permanent, "context_length_exceeded"),
            ("oom", false, .oom, "OutOfMemoryError"),           // vague 503; /health names the OOM
            ("oom", true, .oom, "aborted"),                     // SSE error event, no [DONE]
            ("malformed", false, .transient, "malformed JSON"),
            ("malformed", true, .transient, "malformed SSE event"),
            ("drop", true, .transient, "connection dropped"),
            ("drop", false, .transient, "tabbyapi: POST"),
        ]
        for (fault, stream, cls, text) in cases {
            tabby.stop()
            tabby = FakeLLM(flavor: .tabby, apiKey: "sk-fictional-tabby")
            let port = try! tabby.start()
            executor = LLMExecutor(backends: ["tabbyapi": .openAI(ServiceEndpoint(url: "http://127.0.0.1:\(port)", apiKey: "sk-fictional-tabby"), flavor: .tabby)])
            tabby.faults.set(fault)
            let f = expectFailure { try run(["prompt": "Describe a quiet harbor.", "stream": .bool(stream)]) }
            XCTAssertEqual(f?.failureClass, cls, "\(fault) stream=\(stream): \(f?.message ?? "")")
            XCTAssertTrue(f?.message.contains(text) ?? false, "\(fault) stream=\(stream): \(f?.message ?? "")")
        }
    }

    func testRefusedConnectionIsTransient() {
        let url = backendURL("tabbyapi")
        tabby.stop()
        let f = expectFailure { try run(["prompt": "hi"]) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(f?.message.contains("tabbyapi: POST \(url)/v1/chat/completions") ?? false, f?.message ?? "")
    }

    func testDeadlineCutsAHungStream() {
        tabby.faults.set("hang")
        let start = Date()
        let f = expectFailure { try run(["prompt": "hi"], deadline: 0.4) }
        XCTAssertEqual(f?.failureClass, .timeout)
        XCTAssertLessThan(Date().timeIntervalSince(start), 3)
    }

    func testIdleTimeoutOnAStalledStream() {
        tabby.faults.set("hang")
        let f = expectFailure { try run(["prompt": "hi", "idle_timeout_s": 0.3], deadline: 30) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(f?.message.contains("stalled") ?? false, f?.message ?? "")
    }

    // MARK: Ollama

    func testOllamaNativeStreamingAndNotRecordUsageAndVRAM() throws {
        for stream in [true, false] {
            let r = try run(["endpoint": "ollama", "model": "atlas-chat:8b", "prompt": "Name a fictional river.", "stream": .bool(stream)])
            XCTAssertEqual(r.output["api"]?.stringValue, "chat")
            XCTAssertEqual(r.output["finish_reason"]?.stringValue, "stop")
            XCTAssertEqual(r.output["usage"]?["completion_tokens"]?.intValue, 12)
            XCTAssertEqual(r.peakVRAMBytes, FakeSettings().vramBytes, "size_vram from /api/ps")
        }
        let gen = try run(["endpoint": "ollama", "api": "generate", "model": "atlas-chat:8b", "prompt": "Once", "max_tokens": 3])
        XCTAssertEqual(gen.output["usage"]?["completion_tokens"]?.intValue, 3)
        XCTAssertEqual(gen.output["finish_reason"]?.stringValue, "length")
    }

    func testOllamaOpenAICompatibleRoute() throws {
        for stream in [true, false] {
            let r = try run(["endpoint": "ollama", "api": "chat", "model": "atlas-chat:8b", "prompt": "Name a fictional river.", "stream": .bool(stream)])
            XCTAssertEqual(r.output["usage"]?["completion_tokens"]?.intValue, 12, "stream=\(stream)")
            XCTAssertEqual(r.output["finish_reason"]?.stringValue, "stop")
        }
        let f = expectFailure { try run(["endpoint": "ollama", "api": "chat", "model": "no-such:1b", "prompt": "x"]) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("not found") ?? false)
    }

    func testOllamaErrorClasses() {
        let cases: [(String?, String, Bool, FailureClass, String)] = [
            (nil, "no-such-model:1b", true, .permanent, "model 'no-such-model:1b' not found"),
            ("oom", "atlas-chat:8b", false, .oom, "out of memory"),
            ("oom", "atlas-chat:8b", true, .oom, "out of memory"),       // {"error"} line mid-stream, HTTP 200
            ("busy", "atlas-chat:8b", true, .transient, "server busy"),
            ("drop", "atlas-chat:8b", true, .transient, "connection dropped"),
            ("malformed", "atlas-chat:8b", true, .transient, "malformed NDJSON"),
            ("malformed", "atlas-chat:8b", false, .transient, "malformed JSON"),
        ]
        for (fault, model, stream, cls, text) in cases {
            ollama.faults.set(fault, times: 1)
            let f = expectFailure { try run(["endpoint": "ollama", "model": .string(model), "prompt": "hi", "stream": .bool(stream)]) }
            XCTAssertEqual(f?.failureClass, cls, "\(fault ?? "-") stream=\(stream): \(f?.message ?? "")")
            XCTAssertTrue(f?.message.contains(text) ?? false, "\(fault ?? "-") stream=\(stream): \(f?.message ?? "")")
        }
    }

    // MARK: prompt expansion

    func testExpansionReturnsValidatedVariations() throws {
        for endpoint in ["tabbyapi", "ollama"] {
            let r = try run(["endpoint": .string(endpoint), "model": "atlas-chat:8b", "expand": ["count": 4, "idea": "a paper lantern over a fictional harbor"]])
            XCTAssertEqual(r.output["variations"]?.arrayValue?.count, 4, endpoint)
            XCTAssertEqual(r.output["tries"]?.intValue, 1)
        }
    }

    func testExpansionRetriesOnceOnInvalidJSONThenFailsClearly() throws {
        tabby.faults.set("bad-json", times: 1)
        let r = try run(["expand": ["count": 3, "idea": "a copper fox"], "stream": false])
        XCTAssertEqual(r.output["tries"]?.intValue, 2)
        XCTAssertEqual(r.output["variations"]?.arrayValue?.count, 3)
        XCTAssertGreaterThan(r.output["usage"]?["prompt_tokens"]?.intValue ?? 0, 0)

        tabby.faults.set("bad-json")
        let f = expectFailure { try run(["expand": ["count": 3, "idea": "a copper fox"]]) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("prompt expansion failed after 2 tries: the reply holds no JSON object") ?? false, f?.message ?? "")
        XCTAssertEqual(tabby.requestCount, 4, "two tries per job, no more")
    }

    func testVariationParser() {
        XCTAssertEqual(try? LLMExecutor.parseVariations("```json\n{\"variations\": [\"a\", \"b\"]}\n```", count: 2).get(), ["a", "b"])
        XCTAssertNotNil(try? LLMExecutor.parseVariations("Here: {\"variations\": [\"a\"]} done", count: 1).get())
        if case .failure(let e) = LLMExecutor.parseVariations("{\"variations\": [\"a\"]}", count: 2) { XCTAssertTrue(e.message.contains("expected 2")) } else { XCTFail() }
        if case .failure(let e) = LLMExecutor.parseVariations("{\"variations\": [\"a\", 3]}", count: 2) { XCTAssertTrue(e.message.contains("non-empty strings")) } else { XCTFail() }
        if case .failure(let e) = LLMExecutor.parseVariations("{\"variations\": [\"a\", ", count: 2) { XCTAssertTrue(e.message.contains("no JSON object")) } else { XCTFail() }
    }

    func testBadSpecs() {
        XCTAssertEqual(expectFailure { try run(["endpoint": "vllm", "prompt": "x"]) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try run(["system": "only a system message"]) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try run(["endpoint": "ollama", "prompt": "no model"]) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try run(["expand": ["count": 0, "idea": "x"]]) }?.failureClass, .permanent)
    }
}
