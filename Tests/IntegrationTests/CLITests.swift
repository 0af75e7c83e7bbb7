import Foundation
import XCTest
#if canImport(FoundationNetworking)
import FoundationNetworking
import HydraCore
import HydraWire
import HydraStore
import HydraExecutors
import HydraIO
import HydraTestSupport
#endif

final class CLITests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() { cluster?.stopAll() }

    func batchCount() throws -> Int {
        try PGConnection(url: cluster.dbURL).exec("SELECT count(*) AS n FROM batches")[0].int("n") ?? -1
    }

    func testInvalidBatchesExitTwoNamingTheProblemAndWriteNothing() throws {
        let cases: [(String, String)] = [
            ("name: x\njobs:\n  - {name: a, kind: teleport}\n", "unknown kind 'teleport'"),
            ("name: x\njobs:\n  - {name: huge, kind: sleep, vram: 48GiB}\n", "jobs[0] 'huge'.vram: needs 48.0 GiB per GPU but the largest GPU in the cluster has 32.0 GiB"),
            ("name: x\njobs:\n  - {name: a, kind: sleep, vram: lots}\n", "'lots' is not a size"),
            ("name: x\njobs: [\n", "not valid YAML or JSON"),
            ("name: x\njobs:\n  - {name: a, kind: sleep, vrm: 1GiB}\n", "unknown field 'vrm'"),
            ("name: x\njobs:\n  - {name: ok, kind: sleep}\n  - {name: bad, kind: command, spec: {argv: []}}\n", "jobs[1] 'bad'.spec.argv"),
            ("name: x\njobs:\n  - {name: trio, kind: sleep, gpus: 3, vram: 8GiB}\n", "needs 3 GPUs"),
        ]
        for (yaml, expected) in cases {
            let f = cluster.dir.appendingPathComponent("bad-\(UUID().uuidString.prefix(4)).yaml").path
            try yaml.write(toFile: f, atomically: true, encoding: .utf8)
            let r = try cluster.hydra(["submit", f, "--cluster", cluster.clusterFile])
            XCTAssertEqual(r.status, 2, "expected exit 2 for \(expected); stderr: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(f), "error should name the file: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(expected), "expected '\(expected)' in: \(r.stderr)")
        }
        XCTAssertEqual(try batchCount(), 0, "nothing may be written for an invalid batch")
    }

    func testMissingFileAndUnknownBatchAreInvalidInput() throws {
        let r = try cluster.hydra(["submit", "/nonexistent/batch.yaml"])
        XCTAssertEqual(r.status, 2)
        XCTAssertTrue(r.stderr.contains("/nonexistent/batch.yaml"))
        let s = try cluster.hydra(["status", "no-such-batch"])
        XCTAssertEqual(s.status, 2)
        XCTAssertTrue(s.stderr.contains("no batch 'no-such-batch'"), s.stderr)
        let j = try cluster.hydra(["jobs", "--state", "sleeping"])
        XCTAssertEqual(j.status, 2)
        XCTAssertTrue(j.stderr.contains("unknown state 'sleeping'"), j.stderr)
    }

    func testCyclesUnknownBatchIdsAndBadOptionsAreInvalidInputAndWriteNothing() throws {
        let cases: [(String, String)] = [
            ("name: x\njobs:\n  - {name: a, kind: sleep, after: b}\n  - {name: b, kind: sleep, after: a}\n", "cycle"),
            ("name: x\njobs:\n  - {name: a, kind: sleep, after: ghost}\n", "ghost"),
            ("{\"name\": \"x\", \"jobs\": [{\"name\": \"a\", \"kind\": \"sleep\"}]", "not valid YAML or JSON"),
            ("name: x\njobs:\n  - {name: a, kind: sleep, vram: 4GiB, gpus: 0}\n", "gpus"),
            ("", "the file is empty"),
        ]
        for (yaml, expected) in cases {
            let f = cluster.dir.appendingPathComponent("bad-\(UUID().uuidString.prefix(4)).yaml").path
            try yaml.write(toFile: f, atomically: true, encoding: .utf8)
            let r = try cluster.hydra(["submit", f, "--cluster", cluster.clusterFile])
            XCTAssertEqual(r.status, 2, "expected exit 2 for \(expected); stderr: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(expected), "expected '\(expected)' in: \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, "one line: \(r.stderr)")
        }
        for args in [["cancel", "no-such-batch", "--batch"], ["retry", "no-such-batch", "--batch"], ["watch", "no-such-batch"],
                     ["cancel", "00000000-0000-4000-8000-000000000000"], ["retry", "00000000-0000-4000-8000-000000000000"]] {
            let r = try cluster.hydra(args)
            XCTAssertEqual(r.status, 2, "hydra \(args.joined(separator: " ")): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("no batch") || r.stderr.contains("no job"), r.stderr)
        }
        for (bin, args, expected) in [("hydra-dev", ["chaos", "--jobs", "0"], "--jobs"), ("hydra", ["acl"], "--nodes"),
                                      ("hydra", ["acl", "--nodes", "a b"], "ACL key pattern")] {
            let r = try cluster.hydra(args, binary: bin)
            XCTAssertEqual(r.status, 2, "hydra \(args.joined(separator: " ")): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
        }
        XCTAssertEqual(try batchCount(), 0, "nothing may be written for invalid input")
    }

    /// A reference that matches two things is refused, never guessed: a job prefix shared by two
    /// jobs once cancelled the whole batch whose id began the same way; a batch named like the
    /// start of another batch's id cancelled the other one; `%` and `_` matched like patterns.
    func testReferencesThatMatchTwoThingsAreRefusedNotGuessed() throws {
        let jobs = (0..<200).map { "  - {name: j\($0), kind: sleep}" }.joined(separator: "\n")
        let victim = try cluster.submit("name: victim\njobs:\n" + jobs + "\n")
        let store = cluster.store()
        func cancelled() throws -> Int {
            try PGConnection(url: cluster.dbURL).exec("SELECT count(*) AS n FROM jobs WHERE state = 'cancelled'")[0].int("n") ?? -1
        }
        // The batch id's first character starts more than one of its 200 jobs' ids.
        let c = String(victim.prefix(1))
        let sharing = try store.jobs(.init(batchID: victim, limit: 1000)).filter { $0.id.hasPrefix(c) }.count
        XCTAssertGreaterThan(sharing, 1, "the test needs two jobs whose ids start with \(c)")
        for args in [["cancel", c], ["retry", c]] {
            let r = try cluster.hydra(args)
            XCTAssertEqual(r.status, 2, "hydra \(args.joined(separator: " ")): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("matches more than one job"), r.stderr)
        }
        // A batch named like the start of the victim's id.
        let lookalike = try cluster.submit("name: \"\(victim.prefix(3))\"\njobs:\n  - {name: one, kind: sleep}\n")
        let named = try cluster.hydra(["cancel", "--batch", String(victim.prefix(3))])
        XCTAssertEqual(named.status, 2, named.stderr)
        XCTAssertTrue(named.stderr.contains("is the name of batch \(lookalike.prefix(8)) and the start of batch \(victim.prefix(8))'s id"), named.stderr)
        for ref in ["%", "_", String(repeating: "_", count: 8), "%" + victim.suffix(6), ""] {
            let r = try cluster.hydra(["status", ref])
            XCTAssertEqual(r.status, 2, "status '\(ref)': \(r.stdout)")
        }
        XCTAssertEqual(try cancelled(), 0, "nothing may be cancelled on an ambiguous reference")
        // Unambiguous references still work: the full id, and the name once it is unique.
        XCTAssertEqual(try cluster.hydra(["cancel", "--batch", lookalike]).status, 0)
        XCTAssertEqual(try cancelled(), 1)
    }

    /// ArgumentParser reads `nan`, `inf` and `--flag=-1` as numbers; each of these must stop the
    /// program before it starts anything (a NaN heartbeat interval trapped in the sleep, a zero
    /// node timeout made every node dead at once, an infinite lease never requeued a job).
    func testNumericOptionsOutOfRangeExitTwoNamingTheOption() throws {
        let cases: [(String, [String], String)] = [
            ("hydra", ["coordinator", "--node-timeout", "nan"], "--node-timeout must be a number of seconds greater than 0 and at most 86400, got nan"),
            ("hydra", ["coordinator", "--node-timeout", "0"], "--node-timeout must be a number of seconds greater than 0 and at most 86400, got 0"),
            ("hydra", ["coordinator", "--lease", "inf"], "--lease must be a number of seconds greater than 0 and at most 86400, got inf"),
            ("hydra", ["coordinator", "--lease=-1"], "--lease must be a number of seconds greater than 0 and at most 86400, got -1"),
            ("hydra", ["coordinator", "--leader-ttl", "1e300"], "--leader-ttl must be a number of seconds from 1 to 86400, got 1e+300"),
            ("hydra", ["watch", "any", "--interval", "0"], "--interval must be a number of seconds from 0.05 to 3600, got 0"),
            ("hydra", ["watch", "any", "--timeout", "nan"], "--timeout must be a number of seconds from 0 to 1000000000, got nan"),
            ("hydra", ["jobs", "--limit", "0"], "--limit must be from 1 to 1000000, got 0"),
            ("hydra", ["status", "--limit=-5"], "--limit must be from 1 to 1000000, got -5"),
            ("hydra-agent", ["run", "--node", "hydra-ai", "--heartbeat-interval", "nan"], "--heartbeat-interval must be a number of seconds from 0.05 to 3600, got nan"),
            ("hydra-agent", ["run", "--node", "hydra-ai", "--grace=-inf"], "--grace must be a number of seconds from 0 to 86400, got -inf"),
            ("hydra-agent", ["run", "--node", "hydra-ai", "--trim-interval", "inf"], "--trim-interval must be a number of seconds from 0 to 86400, got inf"),
            ("hydra-agent", ["run", "--node", "hydra-ai", "--prefetch", "0"], "--prefetch must be from 1 to 100000, got 0"),
            ("hydra-agent", ["probe", "--timeout", "nan"], "--timeout must be a number of seconds greater than 0 and at most 600, got nan"),
            ("hydra-dev", ["chaos", "--lease", "nan"], "--lease must be a number of seconds greater than 0 and at most 86400, got nan"),
            ("hydra-dev", ["chaos", "--partition-seconds", "inf"], "--partition-seconds must be a number of seconds greater than 0 and at most 86400, got inf"),
        ]
        for (bin, args, expected) in cases {
            let r = try cluster.hydra(args, binary: bin)
            XCTAssertEqual(r.status, 2, "\(bin) \(args.joined(separator: " ")): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(expected), "expected '\(expected)' in: \(r.stderr)")
        }
    }

    func testMatrixExpansionAndJSONOutput() throws {
        let f = cluster.dir.appendingPathComponent("m.yaml").path
        try """
        name: matrix
        priority: 7
        jobs:
          - name: tile
            kind: sleep
            count: 2
            matrix: {seed: [1, 2, 3], style: [ink, watercolor]}
            vram: 4GiB
        """.write(toFile: f, atomically: true, encoding: .utf8)
        let r = try cluster.hydra(["submit", f, "--json"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let v = try JSONCoding.decode(JSONValue.self, from: r.stdout)
        XCTAssertEqual(v["jobs"]?.intValue, 12)
        let id = try XCTUnwrap(v["batch_id"]?.stringValue)
        let jobs = try cluster.store().jobs(.init(batchID: id))
        XCTAssertEqual(jobs.count, 12)
        XCTAssertEqual(Set(jobs.compactMap { $0.spec["style"]?.stringValue }), ["ink", "watercolor"])
        XCTAssertTrue(jobs.allSatisfy { $0.priority == 7 && $0.state == .pending && $0.vramBytes == 4 * ByteSize.GiB })
        let s = try cluster.hydra(["status", String(id.prefix(8)), "--summary"])
        XCTAssertEqual(s.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "12 jobs, 0 succeeded, 0 failed, 0 lost")
    }

    func testMigrateIsSafeToRunTwice() throws {
        let r = try cluster.hydra(["migrate"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("up to date"), r.stdout)
    }

    func testProbeReadsAFakeNvidiaSMIAndReportsFailures() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("SharedTests/Fixtures/nvidia-smi")
        let script = cluster.dir.appendingPathComponent("nvidia-smi").path
        try """
        #!/bin/sh
        case "$*" in
          *--query-gpu=*) cat "\(fixtures.path)/h100-80gb-590.48.01-linux-query-gpu-load.csv" ;;
          *--query-compute-apps=*) cat "\(fixtures.path)/l40s-595.80-linux-compute-apps-load.csv" ;;
          *) exit 2 ;;
        esac
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let r = try cluster.hydra(["probe", "--nvidia-smi", script, "--json"], binary: "hydra-agent")
        XCTAssertEqual(r.status, 0, r.stderr)
        let v = try JSONCoding.decode(JSONValue.self, from: r.stdout)
        let gpu = try XCTUnwrap(v["gpus"]?.arrayValue?.first)
        XCTAssertEqual(gpu["memory_used_bytes"]?.doubleValue, 19818 * 1_048_576)
        XCTAssertEqual(gpu["name"]?.stringValue, "NVIDIA H100 80GB HBM3")
        XCTAssertEqual(Set(gpu.objectValue?.keys.map { $0 } ?? []), ["index", "uuid", "name", "memory_total_bytes", "memory_used_bytes",
                       "memory_free_bytes", "utilization_gpu_percent", "temperature_celsius", "power_draw_watts"])
        XCTAssertEqual(v["processes"]?.arrayValue?.count, 2)

        let broken = cluster.dir.appendingPathComponent("nvidia-smi-broken").path
        try "#!/bin/sh\necho \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\"\nexit 9\n"
            .write(toFile: broken, atomically: true, encoding: .utf8)
        chmod(broken, 0o755)
        let b = try cluster.hydra(["probe", "--nvidia-smi", broken], binary: "hydra-agent")
        XCTAssertEqual(b.status, 1)
        XCTAssertTrue(b.stderr.contains("couldn't communicate with the NVIDIA driver"), b.stderr)
        XCTAssertEqual(b.stderr.split(separator: "\n").count, 1, "one line on stderr: \(b.stderr)")
    }

    /// The idle agent drops code pages it only used at start-up (docs/benchmarks.md, "Agent footprint"):
    /// its resident set shrinks, and it keeps working afterwards (the pages come back from the page cache).
    func testIdleAgentDropsStartupCodePagesAndKeepsWorking() throws {
        try cluster.startAgent("hydra-ai", extra: ["--log-level", "debug", "--trim-interval", "1"])
        try waitUntil("agent trims its code pages", timeout: 30) { cluster.log("hydra-ai").contains("msg=\"trimmed idle code pages\"") }
        let log = cluster.log("hydra-ai")
        let line = try XCTUnwrap(log.split(separator: "\n").first { $0.contains("trimmed idle code pages") }.map(String.init))
        func field(_ k: String) -> Int? {
            line.range(of: "\(k)=(\\d+)", options: .regularExpression).flatMap { Int(line[$0].split(separator: "=")[1]) }
        }
        let mappings = try XCTUnwrap(field("mappings")), before = try XCTUnwrap(field("rss_kib_before")), after = try XCTUnwrap(field("rss_kib_after"))
        XCTAssertGreaterThan(mappings, 0, line)
        XCTAssertLessThan(after, before, line)
        let port = try XCTUnwrap(log.range(of: #"listen=127\.0\.0\.1:(\d+)"#, options: .regularExpression).map {
            String(log[$0].split(separator: ":").last!)
        })
        var body = ""
        try waitUntil("metrics served after the trim", timeout: 30) {
            body = (try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)) ?? ""
            return body.contains("hydra_gpu_memory_total_bytes{")
        }
        // A second trim, after the scrape ran code again: the agent is still healthy.
        let trims = log.components(separatedBy: "trimmed idle code pages").count - 1
        try waitUntil("another trim", timeout: 30) { cluster.log("hydra-ai").components(separatedBy: "trimmed idle code pages").count - 1 > trims }
        XCTAssertEqual(try String(contentsOf: URL(string: "http://127.0.0.1:\(port)/healthz")!, encoding: .utf8), "ok\n")
    }

    func testAgentServesPrometheusMetricsForItsGPUs() throws {
        try cluster.startAgent("hydra-ai")
        try waitUntil("agent logs its address", timeout: 30) { cluster.log("hydra-ai").contains("listen=127.0.0.1:") }
        let line = cluster.log("hydra-ai")
        let port = try XCTUnwrap(line.range(of: #"listen=127\.0\.0\.1:(\d+)"#, options: .regularExpression).map {
            String(line[$0].split(separator: ":").last!)
        })
        var body = ""
        try waitUntil("metrics served", timeout: 30) {
            body = (try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)) ?? ""
            return body.contains("hydra_gpu_memory_total_bytes{")
        }
        XCTAssertTrue(body.contains("hydra_gpu_memory_total_bytes{node=\"hydra-ai\",gpu=\"0\",uuid=\"\(SimulatedGPUs.uuid(node: "hydra-ai", index: 0))\",model=\"NVIDIA GeForce RTX 5090\"} 34359738368"), body)
        XCTAssertTrue(body.contains("# TYPE hydra_agent_jobs_finished_total counter"))
        let health = try String(contentsOf: URL(string: "http://127.0.0.1:\(port)/healthz")!, encoding: .utf8)
        XCTAssertEqual(health, "ok\n")
    }

    /// A node whose GPU reading is too old to place GPU jobs by (a hung nvidia-smi) says so in
    /// `hydra nodes` and the console, as the router's pending reasons do; a fresh reading clears it.
    func testNodesMarksANodeWhoseGPUReadingIsTooOldToPlaceBy() throws {
        try cluster.startCoordinator()
        let keys = try XCTUnwrap(try SigningKeys.load(current: cluster.keyFile, previous: nil))
        let ai = RogueAgent(node: "hydra-ai", redis: try RedisEndpoint(url: cluster.redisURL), keys: keys.node("hydra-ai"))
        let gib: UInt64 = 1 << 30
        let inventory = Inventory(gpus: [GPUInfo(index: 0, uuid: "GPU-stale-0", name: "RTX 5090", memoryTotalBytes: 32 * gib,
                                                 memoryUsedBytes: gib, memoryFreeBytes: 31 * gib)])
        try waitUntil("hydra nodes marks the old reading", timeout: 30) {
            try ai.heartbeat(inventory: inventory, sampleAgeS: 45)
            return try cluster.hydra(["nodes"]).stdout.contains("up (GPU reading 45s old: no GPU jobs)")
        }
        let json = try JSONCoding.decode(JSONValue.self, from: cluster.hydra(["nodes", "--json"]).stdout)
        let row = json["nodes"]?.arrayValue?.first { $0["name"]?.stringValue == "hydra-ai" }
        XCTAssertEqual(row?["gpu_sample_age_s"], .number(45))
        try waitUntil("a fresh reading clears the mark", timeout: 30) {
            try ai.heartbeat(inventory: inventory, sampleAgeS: 2)
            let out = try cluster.hydra(["nodes"]).stdout
            return out.contains("hydra-ai") && !out.contains("GPU reading")
        }
    }
}

/// `hydra-agent exec`: one job by hand against the (fake) services, as an operator would.
final class AgentExecTests: XCTestCase {
    var dir: URL!
    var fakes: FakeCluster!
    var services: String!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-exec-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        fakes = FakeCluster(faults: FakeFaults())
        let ports = try fakes.start(basePort: 0)
        services = dir.appendingPathComponent("services.yaml").path
        try """
        services_endpoints:
          comfyui: {url: "http://127.0.0.1:\(ports["comfyui"]!)"}
          tabbyapi: {url: "http://127.0.0.1:\(ports["tabbyapi"]!)"}
        """.write(toFile: services, atomically: true, encoding: .utf8)
    }
    override func tearDown() { fakes?.stop() }

    func exec(_ job: String, extra: [String] = []) throws -> (Int32, String, String) {
        let f = dir.appendingPathComponent("job-\(UUID().uuidString.prefix(4)).json").path
        try job.write(toFile: f, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = try Cluster.findBinaries().appendingPathComponent("hydra-agent")
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        p.arguments = ["exec", f, "--services", services, "--workflows-dir", root.appendingPathComponent("deploy/workflows").path,
                       "--output-dir", dir.appendingPathComponent("out").path, "--json"] + extra
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testAnImageJobRunsThroughComfyUIAndListsItsFiles() throws {
        let (status, out, err) = try exec(#"{"kind": "image", "spec": {"template": "txt2img-basic", "prompt": "a kite over a salt flat", "seed": 7}}"#)
        XCTAssertEqual(status, 0, err)
        let r = try JSONCoding.decode(AttemptResult.self, from: out)
        XCTAssertEqual(r.outcome, .succeeded)
        let file = try XCTUnwrap(r.result?["files"]?.arrayValue?.first)
        let path = try XCTUnwrap(file["path"]?.stringValue)
        let data = try XCTUnwrap(FileManager.default.contents(atPath: path))
        XCTAssertEqual(Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "a real PNG")
        XCTAssertEqual(file["size"]?.intValue, data.count)
        XCTAssertEqual(file["sha256"]?.stringValue?.count, 64)
    }

    func testAFailingJobExitsOneWithItsClassAndABadFileExitsTwo() throws {
        fakes.comfyui.faults.set("oom")
        let (status, out, _) = try exec(#"{"kind": "image", "spec": {"template": "txt2img-basic", "prompt": "a kite"}}"#)
        XCTAssertEqual(status, 1)
        XCTAssertEqual(try JSONCoding.decode(AttemptResult.self, from: out).failureClass, .oom)
        let (bad, _, err) = try exec(#"{"spec": {}}"#)
        XCTAssertEqual(bad, 2)
        XCTAssertTrue(err.contains("kind: required field 'kind' is missing"), err)
        let (unknown, _, err2) = try exec(#"{"kind": "tts", "spec": {"text": "hi"}}"#)
        XCTAssertEqual(unknown, 2)
        XCTAssertTrue(err2.contains("no executor for 'tts' here"), err2)
    }
}
