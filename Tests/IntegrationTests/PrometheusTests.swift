import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
import HydraCore
import HydraIO
import HydraExecutors
#endif

/// The real tools: promtool lints the live exposition, a real Prometheus scrapes it.
final class PrometheusTests: XCTestCase {
    var cluster: Cluster!
    var prometheus: Process?

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        if let p = prometheus, p.isRunning { p.terminate(); p.waitUntilExit() }
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    func tool(_ name: String) throws -> String {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
            return "\(dir)/\(name)"
        }
        // `make test` installs the prometheus package before the tests; a bare `swift test` may not have it.
        throw XCTSkip("\(name) is not installed (apt-get install prometheus; `make test` does it)")
    }

    func port(in log: String, key: String) -> Int? {
        guard let r = log.range(of: "\(key)=127\\.0\\.0\\.1:(\\d+)", options: .regularExpression) else { return nil }
        return Int(log[r].split(separator: ":").last!)
    }

    func fetch(_ url: String) -> String? {
        let sem = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var body: String?
        URLSession.shared.dataTask(with: URL(string: url)!) { d, r, _ in
            if (r as? HTTPURLResponse)?.statusCode == 200, let d { body = String(decoding: d, as: UTF8.self) }
            sem.signal()
        }.resume()
        _ = sem.wait(timeout: .now() + 10)
        return body
    }

    func startedCluster() throws -> (agent: Int, coordinator: Int) {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-ai")
        var ports: (Int, Int)?
        try waitUntil("both report their metrics address", timeout: 30) {
            guard let a = port(in: cluster.log("hydra-ai"), key: "listen"),
                  let c = port(in: cluster.log("coordinator"), key: "metrics") else { return false }
            ports = (a, c)
            return true
        }
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        return ports!
    }

    func testPromtoolAcceptsTheLiveExpositionOfAgentAndCoordinator() throws {
        let promtool = try tool("promtool")
        let (a, c) = try startedCluster()
        for url in ["http://127.0.0.1:\(a)/metrics", "http://127.0.0.1:\(c)/metrics"] {
            var body: String?
            try waitUntil("metrics at \(url)", timeout: 30) { body = fetch(url); return body?.contains("# TYPE") == true }
            let f = cluster.dir.appendingPathComponent("metrics-\(UUID().uuidString.prefix(4)).prom")
            try body!.write(to: f, atomically: true, encoding: .utf8)
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/bin/sh")
            p.arguments = ["-c", "\(promtool) check metrics < \(f.path) 2>&1"]
            let pipe = Pipe()
            p.standardOutput = pipe
            try p.run()
            p.waitUntilExit()
            let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            XCTAssertEqual(p.terminationStatus, 0, "promtool check metrics on \(url): \(out)")
            XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "", "promtool warnings for \(url): \(out)")
        }
    }

    func testARealPrometheusScrapesGPUMemory() throws {
        let bin = try tool("prometheus")
        let (a, c) = try startedCluster()
        let listen = try MiniHTTPServer(port: 0) { _ in .text("") }
        let promPort = try listen.start()   // borrow a free port, then hand it to Prometheus
        listen.stop()
        let config = cluster.dir.appendingPathComponent("prometheus.yml")
        try """
        global: {scrape_interval: 1s, evaluation_interval: 1s}
        scrape_configs:
          - job_name: hydra-agent
            static_configs: [{targets: ['127.0.0.1:\(a)']}]
          - job_name: hydra-coordinator
            static_configs: [{targets: ['127.0.0.1:\(c)']}]
        """.write(to: config, atomically: true, encoding: .utf8)
        prometheus = try Process.startLogged(URL(fileURLWithPath: bin),
                                             ["--config.file=\(config.path)", "--storage.tsdb.path=\(cluster.dir.appendingPathComponent("tsdb").path)",
                                              "--web.listen-address=127.0.0.1:\(promPort)"],
                                             environment: ProcessInfo.processInfo.environment,
                                             log: cluster.dir.appendingPathComponent("prometheus.log"))
        let uuid = SimulatedGPUs.uuid(node: "hydra-ai", index: 0)
        let query = "hydra_gpu_memory_total_bytes{uuid=\"\(uuid)\"}".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        var value: String?
        try waitUntil("Prometheus has the GPU memory series", timeout: 60, poll: 0.5) {
            guard let body = fetch("http://127.0.0.1:\(promPort)/api/v1/query?query=\(query)"),
                  let v = try? JSONCoding.decode(JSONValue.self, from: body),
                  let first = v["data"]?["result"]?.arrayValue?.first else { return false }
            value = first["value"]?.arrayValue?.last?.stringValue
            XCTAssertEqual(first["metric"]?["model"]?.stringValue, "NVIDIA GeForce RTX 5090")
            XCTAssertEqual(first["metric"]?["node"]?.stringValue, "hydra-ai")
            return true
        }
        XCTAssertEqual(value, "34359738368")
        let leader = "hydra_coordinator_leader".addingPercentEncoding(withAllowedCharacters: .alphanumerics)!
        try waitUntil("coordinator leader series", timeout: 30, poll: 0.5) {
            fetch("http://127.0.0.1:\(promPort)/api/v1/query?query=\(leader)")?.contains("\"1\"]") == true
        }
    }
}
