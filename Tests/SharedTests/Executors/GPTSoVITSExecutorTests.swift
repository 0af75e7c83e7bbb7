import XCTest
import Foundation
@testable import HydraCore
@testable import HydraExecutors
@testable import HydraTestSupport

final class GPTSoVITSExecutorTests: XCTestCase {
    var fake: FakeTTS!
    var executor: GPTSoVITSExecutor!

    override func setUpWithError() throws {
        fake = FakeTTS()
        executor = GPTSoVITSExecutor(endpoint: ServiceEndpoint(url: "http://127.0.0.1:\(try fake.start())"))
    }
    override func tearDown() { fake.stop() }

    let good: [String: JSONValue] = ["text": "The lighthouse keeper counts the boats.", "text_lang": "en",
                                     "ref_audio_path": "refs/narrator-a.wav", "prompt_text": "A fictional reference line."]
    func spec(_ extra: [String: JSONValue] = [:]) -> JSONValue { .object(good.merging(extra) { _, b in b }) }

    func testSuccessSavesAWAVWithChecksum() throws {
        let ctx = TestEnv.context(spec(["gpt_weights": "GPT_weights_v2/lighthouse-keeper-e10.ckpt",
                                        "sovits_weights": "SoVITS_weights_v2/lighthouse_keeper_e8.pth"]), kind: "tts", jobID: "tts7")
        let r = try executor.execute(ctx)
        let path = try XCTUnwrap(r.output["file"]?["path"]?.stringValue)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: path))
        XCTAssertEqual(r.output["file"]?["sha256"]?.stringValue, SHA256Digest.hex(data))
        XCTAssertEqual(WAVFile.inspect(data)?.sampleRate, 32000)
        XCTAssertGreaterThan(r.output["audio_seconds"]?.doubleValue ?? 0, 1.0)
        XCTAssertEqual((path as NSString).lastPathComponent, "tts7_a1.wav")
        XCTAssertEqual(fake.currentWeights.gpt, "GPT_weights_v2/lighthouse-keeper-e10.ckpt")
    }

    func testSilent200IsDetectedAsOOM() {
        fake.faults.set("silent")
        let f = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "tts")) }
        XCTAssertEqual(f?.failureClass, .oom)
        XCTAssertTrue(f?.message.contains("1.00 s of silence at 16000 Hz") ?? false, f?.message ?? "")
    }

    func testParameterErrorsArePermanentWithTheServiceMessage() {
        let missingRef = expectFailure { try executor.execute(TestEnv.context(spec(["ref_audio_path": "refs/nobody.wav"]), kind: "tts")) }
        XCTAssertEqual(missingRef?.failureClass, .permanent)
        XCTAssertTrue(missingRef?.message.contains("tts failed: refs/nobody.wav not exists") ?? false, missingRef?.message ?? "")
        let lang = expectFailure { try executor.execute(TestEnv.context(spec(["text_lang": "xx"]), kind: "tts")) }
        XCTAssertEqual(lang?.failureClass, .permanent)
        XCTAssertTrue(lang?.message.contains("text_lang: xx is not supported") ?? false, lang?.message ?? "")
        let weights = expectFailure { try executor.execute(TestEnv.context(spec(["gpt_weights": "GPT_weights_v2/missing.ckpt"]), kind: "tts")) }
        XCTAssertEqual(weights?.failureClass, .permanent)
        XCTAssertTrue(weights?.message.contains("change gpt weight failed") ?? false)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(["text": "   "]), kind: "tts")) }?.failureClass, .permanent)
    }

    func testTransientFailures() {
        for fault in ["500", "drop", "malformed"] {
            fake.faults.set(fault, times: 1)
            let f = expectFailure { try executor.execute(TestEnv.context(spec(), kind: "tts")) }
            XCTAssertEqual(f?.failureClass, .transient, "\(fault): \(f?.message ?? "")")
            XCTAssertTrue(f?.message.hasPrefix("tts: ") ?? false, f?.message ?? "")
        }
        fake.stop()
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(), kind: "tts")) }?.failureClass, .transient)
    }

    func testDeadline() {
        fake.faults.set("hang")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(), kind: "tts", deadlineIn: 0.3)) }?.failureClass, .timeout)
    }

    func testOversizeAudioIsRefused() {
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(spec(["max_output_bytes": 1000]), kind: "tts")) }?.failureClass, .permanent)
    }
}

final class ScorerExecutorTests: XCTestCase {
    var fake: FakeScorer!
    var executor: ScorerExecutor!
    var root: String!
    var png: Data!

    override func setUpWithError() throws {
        root = TestEnv.tempDir()
        png = PNGEncoder.rgb(width: 4, height: 4) { x, y in (UInt8(x * 60), UInt8(y * 60), 128) }
        try png.write(to: URL(fileURLWithPath: root + "/img.png"))
        try png.write(to: URL(fileURLWithPath: root + "/ref.png"))
        fake = FakeScorer(imageRoot: root)
        executor = ScorerExecutor(endpoint: ServiceEndpoint(url: "http://127.0.0.1:\(try fake.start())"))
    }
    override func tearDown() { fake.stop() }

    func testScoresRecordedAndDeterministic() throws {
        fake.override(sha256: SHA256Digest.hex(png), .init(aesthetic: 6.5, musiq: 71.2, face: 0.47))
        let r = try executor.execute(TestEnv.context(["image_path": "img.png", "reference_face_path": "ref.png"], kind: "score"))
        XCTAssertEqual(r.output["aesthetic"]?.doubleValue, 6.5)
        XCTAssertEqual(r.output["musiq"]?.doubleValue, 71.2)
        XCTAssertEqual(r.output["face_similarity"]?.doubleValue, 0.47)
        XCTAssertEqual(r.output["face"]?["status"]?.stringValue, "ok")
        // image_file sends the bytes: same image, same scores, and no reference → null similarity.
        let b = try executor.execute(TestEnv.context(["image_file": .string(root + "/img.png")], kind: "score"))
        XCTAssertEqual(b.output["aesthetic"]?.doubleValue, 6.5)
        XCTAssertEqual(b.output["face_similarity"], .null)
        XCTAssertEqual(b.output["face"]?["status"]?.stringValue, "not_requested")
    }

    func testNoFaceGivesNullSimilarity() throws {
        fake.faults.set("no-face")
        let r = try executor.execute(TestEnv.context(["image_path": "img.png", "reference_face_path": "ref.png"], kind: "score"))
        XCTAssertEqual(r.output["face_similarity"], .null)
        XCTAssertEqual(r.output["face"]?["status"]?.stringValue, "no_face_in_image")
    }

    func testErrorClasses() {
        let notFound = expectFailure { try executor.execute(TestEnv.context(["image_path": "missing.png"], kind: "score")) }
        XCTAssertEqual(notFound?.failureClass, .permanent)
        XCTAssertTrue(notFound?.message.contains("not_found") ?? false)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["image_b64": "aGVsbG8="], kind: "score")) }?.failureClass, .permanent)
        fake.faults.set("oom")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score")) }?.failureClass, .oom)
        fake.faults.set("busy")
        let busy = expectFailure { try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score")) }
        XCTAssertEqual(busy?.failureClass, .transient)
        XCTAssertTrue(busy?.message.contains("HTTP 503") ?? false)
        fake.faults.set("malformed")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score")) }?.failureClass, .transient)
        fake.faults.set("hang")
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score", deadlineIn: 0.3)) }?.failureClass, .timeout)
        XCTAssertEqual(expectFailure { try executor.execute(TestEnv.context(["image_path": "a", "image_b64": "b"], kind: "score")) }?.failureClass, .permanent)
    }

    func testAScoreThatIsNotANumberIsTransientNotAMissingScore() throws {
        // Read as "no aesthetic score", the gate would reject the image; asking again gets the real score.
        fake.faults.set("not-a-number", times: 1)
        let f = expectFailure { try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score")) }
        XCTAssertEqual(f?.failureClass, .transient)
        XCTAssertTrue(f?.message.contains("aesthetic = \"n/a\", not a number") ?? false, f?.message ?? "")
        let r = try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score"))
        XCTAssertNotNil(r.output["aesthetic"]?.doubleValue)
    }

    func testBusyIsRetriedWithRetryAfter() throws {
        fake.faults.set("busy", times: 1)
        let r = try executor.execute(TestEnv.context(["image_path": "img.png"], kind: "score"))
        XCTAssertNotNil(r.output["aesthetic"]?.doubleValue)
    }
}
