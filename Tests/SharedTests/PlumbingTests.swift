import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
@testable import HydraCore
@testable import HydraWire
@testable import HydraIO
@testable import HydraExecutors
@testable import HydraTestSupport
#endif

final class MetricsRegistryTests: XCTestCase {
    func testExpositionFormat() {
        let r = MetricsRegistry()
        r.register("hydra_x_bytes", .gauge, help: "X.", labels: ["node", "model"])
        r.register("hydra_y_total", .counter, help: "Y.", labels: ["node"])
        r.register("hydra_z_seconds", .histogram, help: "Z.", buckets: [0.1, 1])
        r.set("hydra_x_bytes", ["a", "RTX \"5090\""], 1024)
        r.add("hydra_y_total", ["a"]); r.add("hydra_y_total", ["a"], 2)
        r.observe("hydra_z_seconds", [], 0.05); r.observe("hydra_z_seconds", [], 0.5); r.observe("hydra_z_seconds", [], 5)
        XCTAssertEqual(r.render(), """
        # HELP hydra_x_bytes X.
        # TYPE hydra_x_bytes gauge
        hydra_x_bytes{node="a",model="RTX \\"5090\\""} 1024
        # HELP hydra_y_total Y.
        # TYPE hydra_y_total counter
        hydra_y_total{node="a"} 3
        # HELP hydra_z_seconds Z.
        # TYPE hydra_z_seconds histogram
        hydra_z_seconds_bucket{le="0.1"} 1
        hydra_z_seconds_bucket{le="1"} 2
        hydra_z_seconds_bucket{le="+Inf"} 3
        hydra_z_seconds_sum 5.55
        hydra_z_seconds_count 3

        """)
        r.reset("hydra_x_bytes")
        XCTAssertFalse(r.render().contains("hydra_x_bytes{"))
    }
}

final class HTTPServerTests: XCTestCase {
    func get(_ url: String) throws -> (Int, String) {
        let sem = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var out: (Int, String) = (0, "")
        URLSession.shared.dataTask(with: URL(string: url)!) { d, r, _ in
            out = ((r as? HTTPURLResponse)?.statusCode ?? 0, d.map { String(decoding: $0, as: UTF8.self) } ?? "")
            sem.signal()
        }.resume()
        XCTAssertEqual(sem.wait(timeout: .now() + 10), .success)
        return out
    }

    func testServesFullAndStreamedResponses() throws {
        let server = MiniHTTPServer(port: 0) { req in
            switch req.path {
            case "/echo": return .text("q=\(req.query["q"] ?? "")")
            case "/stream": return .stream(status: 200, headers: ["Content-Type": "text/event-stream"]) { w in
                for i in 1...3 { w.write("data: \(i)\n\n") }
            }
            default: return .text("nope", status: 404)
            }
        }
        let port = try server.start()
        defer { server.stop() }
        XCTAssertEqual(try get("http://127.0.0.1:\(port)/echo?q=hi%20there").1, "q=hi there")
        XCTAssertEqual(try get("http://127.0.0.1:\(port)/stream").1, "data: 1\n\ndata: 2\n\ndata: 3\n\n")
        XCTAssertEqual(try get("http://127.0.0.1:\(port)/missing").0, 404)
    }

    func testListenAddressParsing() throws {
        XCTAssertTrue(try MiniHTTPServer.parseListen("0.0.0.0:9101") == ("0.0.0.0", 9101))
        XCTAssertTrue(try MiniHTTPServer.parseListen(":9100") == ("127.0.0.1", 9100))
        XCTAssertThrowsError(try MiniHTTPServer.parseListen("localhost:http"))
    }
}

final class SimulatedGPUTests: XCTestCase {
    func testUsedVRAMFollowsRunningJobs() {
        let sim = SimulatedGPUs(node: "hydra-ai", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), baseline: .gib(2)),
                                                         GPUConfig(model: "NVIDIA GeForce RTX 4090", memory: .gib(24))])
        var inv = sim.inventory()
        XCTAssertEqual(inv.gpus.map(\.memoryUsedBytes), [2 * ByteSize.GiB, 0])
        let u0 = inv.gpus[0].uuid, u1 = inv.gpus[1].uuid
        XCTAssertNotEqual(u0, u1)
        sim.allocate(jobID: "j1", uuids: [u0, u1], bytesPerGPU: 20 * ByteSize.GiB)
        inv = sim.inventory()
        XCTAssertEqual(inv.gpus.map(\.memoryUsedBytes), [22 * ByteSize.GiB, 20 * ByteSize.GiB])
        XCTAssertEqual(inv.gpus[0].memoryFreeBytes, 10 * ByteSize.GiB)
        XCTAssertEqual(inv.processes.count, 2)
        XCTAssertEqual(inv.gpus[0].utilizationGPUPercent, 97)
        sim.release(jobID: "j1")
        XCTAssertEqual(sim.inventory().gpus.map(\.memoryUsedBytes), [2 * ByteSize.GiB, 0])
        XCTAssertEqual(SimulatedGPUs.uuid(node: "hydra-ai", index: 0), u0, "UUIDs are stable across restarts")
    }
}

final class CommandExecutorTests: XCTestCase {
    func context(_ argv: [String], timeout: Double? = nil) throws -> ExecutionContext {
        var spec: [String: JSONValue] = ["argv": .array(argv.map { .string($0) })]
        if let timeout { spec["timeout_s"] = .number(timeout) }
        let env = Envelope(jobID: "j", attempt: 1, kind: "command", spec: .object(spec), gpuUUIDs: [], vramBytes: 0, deadline: nil, issuedAt: 0)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-cmd-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return ExecutionContext(envelope: env, node: "n", gpuIndexes: [1, 0], outputDirectory: dir)
    }

    func testRunsAllowlistedProgramWithoutShellAndCapsOutput() throws {
        let ex = try CommandExecutor(allowlist: [CommandTemplate(["/bin/sh", "-c", "{text}"]), CommandTemplate(["echo", "{text}", "{name}"])],
                                     outputCapBytes: 10)
        let r = try ex.execute(try context(["/bin/sh", "-c", "echo $CUDA_VISIBLE_DEVICES; echo $LANG; printf 'x%.0s' $(seq 1 100)"]))
        XCTAssertEqual(r.output["stdout"]?.stringValue, "1,0\nC.UTF-")
        XCTAssertEqual(r.output["stdout_truncated"]?.boolValue, true)
        XCTAssertEqual(try ex.execute(try context(["echo", "$HOME;", "rm"])).output["stdout"]?.stringValue, "$HOME; rm\n")
    }

    func testRefusesFailsAndTimesOut() throws {
        let ex = try CommandExecutor(allowlist: [CommandTemplate(["/bin/sh", "-c", "{text}"]), CommandTemplate(["/bin/sleep", "{int}"])])
        XCTAssertThrowsError(try ex.execute(try context(["/bin/rm", "-rf", "/tmp/x"]))) { e in
            XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .permanent)
            XCTAssertTrue("\(e)".contains("not in this node's command allowlist"), "\(e)")
        }
        XCTAssertThrowsError(try ex.execute(try context(["/bin/sh", "-c", "echo 'CUDA out of memory' >&2; exit 3"]))) { e in
            XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .oom)
        }
        XCTAssertThrowsError(try ex.execute(try context(["/bin/sh", "-c", "exit 4"]))) { e in
            XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .transient)
            XCTAssertTrue("\(e)".contains("exited with status 4"))
        }
        XCTAssertThrowsError(try ex.execute(try context(["/bin/sleep", "30"], timeout: 0.3))) { e in
            XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .timeout)
        }
    }
}

final class ServiceVRAMTests: XCTestCase {
    func testSimulatedGPUsCountWhatTheFakeServicesHold() throws {
        let fakes = FakeCluster()
        let ports = try fakes.start(basePort: 0)
        defer { fakes.stop() }
        let endpoints = ServiceEndpoints(comfyui: ServiceEndpoint(url: "http://127.0.0.1:\(ports["comfyui"]!)", gpu: 0),
                                         ollama: ServiceEndpoint(url: "http://127.0.0.1:\(ports["ollama"]!)", gpu: 1))
        let held = ServiceVRAMProbe.held(endpoints)
        XCTAssertEqual(held[0] ?? 0, fakes.comfyui.vramUsedBytes)
        let sim = SimulatedGPUs(node: "hydra-compute", gpus: [GPUConfig(model: "NVIDIA GeForce RTX 5070 Ti", memory: .gib(16)),
                                                              GPUConfig(model: "NVIDIA GeForce RTX 3060", memory: .gib(12))])
        sim.setServiceHeld([0: 6 * ByteSize.GiB])
        XCTAssertEqual(sim.inventory().gpus[0].memoryUsedBytes, 6 * ByteSize.GiB)
        sim.allocate(jobID: "j", uuids: [sim.inventory().gpus[0].uuid], bytesPerGPU: 8 * ByteSize.GiB)
        XCTAssertEqual(sim.inventory().gpus[0].memoryUsedBytes, 8 * ByteSize.GiB, "the service's report and the job overlap; the larger counts")
    }
}
