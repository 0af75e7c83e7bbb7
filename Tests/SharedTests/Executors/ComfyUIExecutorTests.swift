import XCTest
import Foundation
@testable import HydraCore
@testable import HydraExecutors
@testable import HydraTestSupport

final class ComfyUIExecutorTests: XCTestCase {
    var fake: FakeComfyUI!
    var executor: ComfyUIExecutor!
    static let workflows: String = {
        // Tests/SharedTests/Executors → repository root → deploy/workflows
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }
        return url.appendingPathComponent("deploy/workflows").path
    }()

    override func setUpWithError() throws {
        fake = FakeComfyUI(settings: FakeSettings(latencyMs: 20, vramBytes: 4 << 30))
        let port = try fake.start()
        executor = ComfyUIExecutor(endpoint: ServiceEndpoint(url: "http://127.0.0.1:\(port)"), workflowsDirectory: Self.workflows, pollInterval: 0.02)
    }
    override func tearDown() { fake.stop() }

    func spec(_ extra: [String: JSONValue] = [:]) -> JSONValue {
        var o: [String: JSONValue] = ["template": "txt2img-basic", "prompt": "a copper lighthouse in fog, fictional coast",
                                      "negative_prompt": "text", "seed": 42, "width": 512, "height": 768, "steps": 4]
        for (k, v) in extra { o[k] = v }
        return .object(o)
    }

    func testSuccessDownloadsPNGsWithSizeAndSHA256() throws {
        let ctx = TestEnv.context(spec(["batch_size": 2, "lora": ["name": "ink-wash-fictional.safetensors", "strength": 0.7]]), kind: "image", jobID: "job42")
        let r = try executor.execute(ctx)
        let files = try XCTUnwrap(r.output["files"]?.arrayValue)
        XCTAssertEqual(files.count, 2)
        for f in files {
            let path = try XCTUnwrap(f["path"]?.stringValue)
            let data = try XCTUnwrap(FileManager.default.contents(atPath: path))
            XCTAssertTrue(path.hasPrefix(ctx.outputDirectory))
            XCTAssertEqual(f["size"]?.intValue, data.count)
            XCTAssertEqual(f["sha256"]?.stringValue, SHA256Digest.hex(data))
            XCTAssertEqual(PNGEncoder.dimensions(data)?.0, 32) // fake: width / 16
            XCTAssertEqual(f["subfolder"]?.stringValue, "hydra")
        }
        XCTAssertEqual(files[0]["name"]?.stringValue, "job42_a1_00001_.png")
        XCTAssertNotNil(r.peakVRAMBytes, "the fake's /system_stats shows VRAM in use while the job runs")
        // Parameters reached the right nodes by following links from the KSampler.
        let q = JSONValue.object(try executor.buildGraph(ctx))
        XCTAssertEqual(q["6"]?["inputs"]?["text"]?.stringValue, "a copper lighthouse in fog, fictional coast")
        XCTAssertEqual(q["7"]?["inputs"]?["text"]?.stringValue, "text")
        XCTAssertEqual(q["3"]?["inputs"]?["seed"]?.intValue, 42)
        XCTAssertEqual(q["5"]?["inputs"]?["height"]?.intValue, 768)
        XCTAssertEqual(q["10"]?["inputs"]?["lora_name"]?.stringValue, "ink-wash-fictional.safetensors")
        XCTAssertEqual(q["10"]?["inputs"]?["strength_clip"]?.doubleValue, 0.7)
        XCTAssertEqual(q["9"]?["inputs"]?["filename_prefix"]?.stringValue, "hydra/job42_a1")
    }

    func testInlineWorkflowWithDeclaredMapping() throws {
        let graph: JSONValue = [
            "1": ["class_type": "CheckpointLoaderSimple", "inputs": ["ckpt_name": "meadow-v8-fictional.safetensors"]],
            "2": ["class_type": "CLIPTextEncode", "inputs": ["text": "", "clip": ["1", 1]]],
            "3": ["class_type": "CLIPTextEncode", "inputs": ["text": "", "clip": ["1", 1]]],
            "4": ["class_type": "EmptyLatentImage", "inputs": ["width": 256, "height": 256, "batch_size": 1]],
            "5": ["class_type": "KSampler", "inputs": ["seed": 1, "steps": 2, "cfg": 5, "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]]],
            "6": ["class_type": "KSampler", "inputs": ["seed": 1, "steps": 2, "cfg": 5, "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0]]],
            "7": ["class_type": "VAEDecode", "inputs": ["samples": ["6", 0], "vae": ["1", 2]]],
            "8": ["class_type": "SaveImage", "inputs": ["filename_prefix": "x", "images": ["7", 0]]],
        ]
        // Two samplers: automatic injection refuses to guess.
        let ambiguous = expectFailure { try executor.execute(TestEnv.context(["workflow": graph, "seed": 7], kind: "image")) }
        XCTAssertEqual(ambiguous?.failureClass, .permanent)
        XCTAssertTrue(ambiguous?.message.contains("mapping.seed") ?? false, ambiguous?.message ?? "")
        let ok = try executor.execute(TestEnv.context(["workflow": graph, "seed": 7, "prompt": "a violet orchard",
                                                       "mapping": ["seed": ["5.seed", "6.seed"], "prompt": "2.text"]], kind: "image"))
        XCTAssertEqual(ok.output["files"]?.arrayValue?.count, 1)
    }

    func testUnknownCheckpointIsPermanentWithNodeMessages() {
        let f = expectFailure { try executor.execute(TestEnv.context(spec(["checkpoint": "missing-model.safetensors"]), kind: "image")) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("node 4 CheckpointLoaderSimple: Value not in list: ckpt_name: 'missing-model.safetensors'") ?? false, f?.message ?? "")
        XCTAssertTrue(f?.message.contains("prompt_outputs_failed_validation") ?? false)
    }

    func testInjectedNodeErrorsAndUnknownClassArePermanent() {
        fake.faults.set("node-errors")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }?.failureClass, .permanent)
        fake.faults.set(nil)
        let f = expectFailure { try executor.execute(TestEnv.context(["workflow": ["1": ["class_type": "FictionalNode", "inputs": [:]]]], kind: "image")) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("Cannot execute because node FictionalNode does not exist.") ?? false, f?.message ?? "")
    }

    func testOOMExecutionErrorIsOOM() {
        fake.faults.set("oom")
        let f = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(f?.failureClass, .oom)
        XCTAssertTrue(f?.message.contains("node 3 (KSampler)") ?? false, f?.message ?? "")
        XCTAssertTrue(f?.message.contains("CUDA out of memory") ?? false)
    }

    func testGenericNodeExceptionIsPermanent() {
        fake.faults.set("node-error")
        let f = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("RuntimeError") ?? false, f?.message ?? "")
    }

    func testServerErrorRefusedAndDroppedAreTransient() throws {
        fake.faults.set("500")
        let f500 = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(f500?.failureClass, .transient)
        XCTAssertTrue(f500?.message.contains("HTTP 500") ?? false, f500?.message ?? "")
        fake.faults.set("drop")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }?.failureClass, .transient)
        fake.faults.set("malformed")
        let bad = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(bad?.failureClass, .transient)
        XCTAssertTrue(bad?.message.contains("malformed JSON") ?? false)
        fake.faults.set(nil)
        fake.stop()
        let refused = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(refused?.failureClass, .transient)
        XCTAssertTrue(refused?.message.contains("comfyui: POST http://127.0.0.1:") ?? false, refused?.message ?? "")
    }

    func testHistoryPollFailuresAreRiddenOutUpToALimit() throws {
        // Five failed polls in a row (the limit): the job goes on and gets its image.
        fake.faults.set("history-garbled", times: ComfyUIExecutor.badPollsTolerated)
        let r = try executor.execute(TestEnv.context(spec(), kind: "image"))
        XCTAssertEqual(r.output["files"]?.arrayValue?.count, 1)
        XCTAssertNil(fake.faults.mode, "every injected failure was met by a poll")

        // One more, on a prompt that is still generating: the job fails (transient) and stops the prompt,
        // rather than leave it on the GPU beside the retry.
        let slow = FakeComfyUI(settings: FakeSettings(latencyMs: 2_500, vramBytes: 4 << 30))   // 0.5 s a step
        let port = try slow.start()
        defer { slow.stop() }
        let ex = ComfyUIExecutor(endpoint: ServiceEndpoint(url: "http://127.0.0.1:\(port)"), workflowsDirectory: Self.workflows, pollInterval: 0.02)
        slow.faults.set("history-garbled", times: ComfyUIExecutor.badPollsTolerated + 1)
        let f = expectFailure { try ex.execute(TestEnv.context(spec(), kind: "image")) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(f?.message.contains("malformed JSON") ?? false, f?.message ?? "")
        XCTAssertTrue(f?.message.contains("\(ComfyUIExecutor.badPollsTolerated + 1) polls in a row failed") ?? false, f?.message ?? "")
        XCTAssertTrue(TestEnv.waitUntil { slow.events.contains { $0.type == "execution_interrupted" } },
                      "the prompt must be interrupted when the job gives up on it")
    }

    func testAnAnswerLostAfterQueueingDoesNotRunThePromptTwice() throws {
        // ComfyUI queued the prompt, then the connection broke before the answer: the prompt runs under
        // the id the executor chose, so the job follows it instead of failing and leaving it behind.
        fake.faults.set("drop-after-queue", times: 1)
        let r = try executor.execute(TestEnv.context(spec(), kind: "image"))
        XCTAssertEqual(r.output["files"]?.arrayValue?.count, 1)
        XCTAssertEqual(fake.events.filter { $0.type == "execution_start" }.count, 1, "one prompt, run once")
        // Not queued at all (the plain drop): nothing to follow, the job fails as before.
        fake.faults.set("drop", times: 1)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image")) }?.failureClass, .transient)
        XCTAssertEqual(fake.events.filter { $0.type == "execution_start" }.count, 1)
    }

    func testAnOutputNamedBeyondTheFileSystemLimitIsShortenedNotFatal() throws {
        // A file name over 255 bytes fails every attempt (ENAMETOOLONG): the name is cut, the extension kept.
        let dir = TestEnv.tempDir()
        for name in [String(repeating: "a", count: 10_000) + ".png", String(repeating: "é", count: 300) + ".png",
                     String(repeating: "💥", count: 100), "fox_00001_.png"] {
            let f = try ExecutorSupport.writeOutput(Data([1, 2, 3]), name: name, directory: dir)
            let written = try XCTUnwrap(f["name"]?.stringValue)
            XCTAssertLessThanOrEqual(written.utf8.count, ExecutorSupport.maxFileNameBytes + 4, written)
            XCTAssertTrue(FileManager.default.fileExists(atPath: try XCTUnwrap(f["path"]?.stringValue)))
            if name.hasSuffix(".png") { XCTAssertTrue(written.hasSuffix(".png"), written) }
        }
        XCTAssertEqual(ExecutorSupport.safeFileName("fox_00001_.png"), "fox_00001_.png", "short names stay as they are")
        // Twice the same long name: the second gets its "-1" and still fits.
        let long = String(repeating: "b", count: 400) + ".png"
        _ = try ExecutorSupport.writeOutput(Data([1]), name: long, directory: dir)
        let again = try ExecutorSupport.writeOutput(Data([2]), name: long, directory: dir)
        XCTAssertTrue(again["name"]?.stringValue?.hasSuffix("-1.png") ?? false)
    }

    func testDeadlineInterruptsTheRunningPromptAndTimesOut() {
        fake.faults.set("hang")
        let start = Date()
        let f = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "image", deadlineIn: 0.5)) }
        XCTAssertEqual(f?.failureClass, .timeout)
        XCTAssertLessThan(Date().timeIntervalSince(start), 5)
        XCTAssertTrue(TestEnv.waitUntil { self.fake.events.contains { $0.type == "execution_interrupted" } },
                      "the executor must POST /interrupt so the GPU is freed")
    }

    func testCancellationInterruptsToo() {
        fake.faults.set("hang")
        let flag = CancellationFlag()
        let ctx = TestEnv.context(spec(), kind: "image", cancellation: flag)
        let fake = self.fake!
        let t = Thread { _ = TestEnv.waitUntil { fake.events.contains { $0.type == "progress" } }; flag.cancel() }
        t.start()
        let f = expectFailure { try executor.execute(ctx) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(TestEnv.waitUntil { self.fake.events.contains { $0.type == "execution_interrupted" } })
    }

    func testRestartLosingThePromptIsTransient() {
        fake.faults.set("hang")
        let ctx = TestEnv.context(spec(), kind: "image")
        let fake = self.fake!
        let t = Thread { _ = TestEnv.waitUntil { fake.events.contains { $0.type == "progress" } }; fake.simulateRestart() }
        t.start()
        let f = expectFailure { try executor.execute(ctx) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(f?.message.contains("neither queued nor in history") ?? false, f?.message ?? "")
    }

    func testBadSpecsArePermanent() {
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["prompt": "x"], kind: "image")) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["template": "../etc/passwd"], kind: "image")) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["template": "no-such-template"], kind: "image")) }?.failureClass, .permanent)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(["seed": "abc"]), kind: "image")) }?.failureClass, .permanent)
    }

    func testOversizeOutputIsRefused() {
        let f = expectFailure { try executor.execute(TestEnv.context(spec(["max_output_bytes": 100]), kind: "image")) }
        XCTAssertEqual(f?.failureClass, .permanent)
        XCTAssertTrue(f?.message.contains("larger than 100 bytes") ?? false, f?.message ?? "")
    }
}
