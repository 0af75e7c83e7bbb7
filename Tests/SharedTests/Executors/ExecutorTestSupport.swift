import XCTest
import Foundation
@testable import HydraCore
@testable import HydraWire
@testable import HydraExecutors

enum TestEnv {
    static func tempDir() -> String {
        let d = (NSTemporaryDirectory() as NSString).appendingPathComponent("hydra-exec-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    static func context(_ spec: JSONValue, kind: String, deadlineIn seconds: Double? = 20, jobID: String = "job-\(UUID().uuidString.prefix(6))",
                        cancellation: CancellationFlag = CancellationFlag()) -> ExecutionContext {
        let env = Envelope(jobID: jobID, attempt: 1, kind: kind, spec: spec, gpuUUIDs: ["GPU-fake-0"], vramBytes: 1 << 30,
                           deadline: seconds.map { Date().addingTimeInterval($0).timeIntervalSince1970 }, issuedAt: Date().timeIntervalSince1970)
        return ExecutionContext(envelope: env, node: "hydra-compute", gpuIndexes: [0], outputDirectory: tempDir(), cancellation: cancellation)
    }

    /// Waits for a condition with a deadline (no fixed sleeps as synchronisation).
    static func waitUntil(_ timeout: Double = 5, _ cond: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end { if cond() { return true }; Thread.sleep(forTimeInterval: 0.005) }
        return cond()
    }
}

/// Runs `body` and returns the ExecutionFailure it throws (fails the test if it does not).
func expectFailure(_ body: () throws -> ExecutionResult, file: StaticString = #filePath, line: UInt = #line) -> ExecutionFailure? {
    do {
        let r = try body()
        XCTFail("expected a failure, got \(r.output)", file: file, line: line)
        return nil
    } catch let f as ExecutionFailure {
        return f
    } catch {
        XCTFail("expected ExecutionFailure, got \(error)", file: file, line: line)
        return nil
    }
}

final class ExecutorRegistryTests: XCTestCase {
    func testEndpointsDecodeFromYAMLAndBuildOnlyConfiguredKinds() throws {
        let yaml = """
        node: hydra-compute
        services_endpoints:
          comfyui: {url: "http://127.0.0.1:8188/"}
          tabbyapi: {url: "http://127.0.0.1:5000", api_key_env: HYDRA_TEST_NO_SUCH_VAR}
          tts: {url: "http://127.0.0.1:9880", timeout_s: 90}
        """
        let e = try ServiceEndpoints.parse(yaml: yaml, file: "agent.yaml")
        XCTAssertEqual(e.comfyui?.base, "http://127.0.0.1:8188")
        XCTAssertEqual(e.tts?.timeoutSeconds, 90)
        XCTAssertNil(e.scorer)
        XCTAssertNil(try e.tabbyapi?.resolvedAPIKey())
        let ex = makeServiceExecutors(e, workflowsDirectory: nil)
        XCTAssertEqual(Set(ex.keys), ["image", "llm", "tts"])
        XCTAssertEqual(ex["image"]?.kind, "image")
        XCTAssertEqual(ex["llm"]?.kind, "llm")
    }

    func testAPIKeyFromFile() throws {
        let dir = TestEnv.tempDir()
        let path = (dir as NSString).appendingPathComponent("key")
        try "sk-fictional-123\n".write(toFile: path, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ServiceEndpoint(url: "http://x", apiKeyFile: path).resolvedAPIKey(), "sk-fictional-123")
        XCTAssertThrowsError(try ServiceEndpoint(url: "http://x", apiKeyFile: dir + "/missing").resolvedAPIKey())
    }
}
