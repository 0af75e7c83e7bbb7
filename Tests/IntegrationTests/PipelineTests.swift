import Foundation
import XCTest
import HydraCore
import HydraIO
import HydraStore
import HydraTestSupport

/// The overnight pipeline on a real Redis and PostgreSQL, real `hydra`/`hydra-agent`
/// processes, and the fake services running in this test process.
final class PipelineIntegrationTests: XCTestCase {
    var cluster: Cluster!
    var fakes: FakeCluster!
    var work: URL { cluster.dir }
    var ports: [String: Int] = [:]

    func start(latencyMs: Int = 0) throws {
        cluster = try Cluster()
        fakes = FakeCluster(settings: FakeSettings(latencyMs: latencyMs), imageRoot: cluster.dir.path)
        ports = try fakes.start(basePort: 0)
        let services: [String: String] = [
            "hydra-ai": "services_endpoints: {tabbyapi: {url: \"http://127.0.0.1:\(ports["tabbyapi"]!)\"}}",
            "hydra-compute": "services_endpoints: {comfyui: {url: \"http://127.0.0.1:\(ports["comfyui"]!)\"}, ollama: {url: \"http://127.0.0.1:\(ports["ollama"]!)\"}}",
            "hydra-storage": "services_endpoints: {scorer: {url: \"http://127.0.0.1:\(ports["scorer"]!)\"}}",
        ]
        let workflows = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/workflows").path
        try cluster.startCoordinator()
        for (node, yaml) in services {
            let f = work.appendingPathComponent("\(node).services.yaml").path
            try yaml.write(toFile: f, atomically: true, encoding: .utf8)
            try cluster.startAgent(node, extra: ["--services", f, "--workflows-dir", workflows])
        }
        try waitUntil("three agents report", timeout: 60) { cluster.nodeCount() == 3 }
        try Data([0x89, 0x50, 0x4E, 0x47, 1, 2, 3]).write(to: work.appendingPathComponent("reference.png"))
    }

    override func tearDown() {
        cluster?.stopAll()
        fakes?.stop()
    }

    /// Writes the config, queue and denylist; returns the config path.
    func writeNight(queue: String, denylist: String = "gore\n", gates: String = "{aesthetic: 6.0, technical: 60, face_similarity: 0.4}",
                    variations: Int = 2, extra: String = "") throws -> String {
        try queue.write(to: work.appendingPathComponent("queue.yaml"), atomically: true, encoding: .utf8)
        try denylist.write(to: work.appendingPathComponent("denylist.txt"), atomically: true, encoding: .utf8)
        let cfg = """
        queue: queue.yaml
        assets_dir: assets
        reports_dir: reports
        outputs_dir: out
        quarantine_dir: quarantine
        denylist: denylist.txt
        gates: \(gates)
        variations_per_task: \(variations)
        workflow: {template: txt2img-basic, checkpoint: atlas-xl-base.safetensors}
        expansion: {endpoint: tabbyapi}
        poll_interval_s: 0.2
        cluster: \(cluster.clusterFile)
        \(extra)
        """
        let path = work.appendingPathComponent("pipeline.yaml").path
        try cfg.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func db() throws -> PGConnection {
        let c = PGConnection(url: cluster.dbURL)
        try c.connect()
        return c
    }

    func reportPath(_ out: Cluster.Output) -> String? {
        out.stdout.split(separator: "\n").first { $0.hasPrefix("report: ") }.map { String($0.dropFirst(8)) }
    }

    func testANightEndToEnd() throws {
        try start()
        let cfg = try writeNight(queue: """
        collections:
          - {name: lantern-keepers, target: 4, priority: 10, style: "ink wash", ideas: ["an old lantern keeper"], reference: \(work.path)/reference.png,
             lora: {name: paper-lantern-style.safetensors, strength: 0.8}}
          - {name: meadow-cartographers, target: 4, priority: 5, style: "watercolor", ideas: ["a cartographer with a meadow map"]}
          - {name: glass-orchard, target: 4, style: "still life, glass fruit"}
        """)
        let dry = try cluster.hydra(["pipeline", "run", "--config", cfg, "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("6 task(s), 12 image(s)"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("forecast (hydra simulate"), dry.stdout)
        let db0 = try db()
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM jobs")[0].int("n"), 0, "a dry run submits nothing")

        let out = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(out.status, 0, out.stderr + cluster.logs())
        let rows = try db0.exec("SELECT collection, state, aesthetic, musiq, face_similarity, failed_gates, asset_path, disposition FROM quality_metrics").all
        XCTAssertEqual(rows.count, 12)
        let thresholds = GateThresholds(aesthetic: 6.0, technical: 60, faceSimilarity: 0.4)
        var approved = 0, rejected = 0
        for r in rows {
            let scores = ImageScores(aesthetic: r.double("aesthetic"), musiq: r.double("musiq"), faceSimilarity: r.double("face_similarity"))
            let verdict = QualityGate.evaluate(scores, thresholds, hasReference: r["collection"] == "lantern-keepers")
            XCTAssertEqual(r["state"], verdict.passed ? "approved" : "rejected", "\(r.values)")
            let path = try XCTUnwrap(r["asset_path"])
            XCTAssertTrue(FileManager.default.fileExists(atPath: path), path)
            if verdict.passed {
                approved += 1
                XCTAssertTrue(path.hasPrefix(work.appendingPathComponent("assets/\(r["collection"]!)/").path), path)
            } else {
                rejected += 1
                XCTAssertEqual(r["disposition"], "quarantined")
                XCTAssertTrue(path.contains("/quarantine/"), path)
            }
        }
        XCTAssertGreaterThan(approved, 0, "the fixed seeds give scores on both sides of the thresholds")
        XCTAssertGreaterThan(rejected, 0)
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM generation_tasks WHERE state = 'done'")[0].int("n"), 6)
        XCTAssertEqual(try db0.exec("SELECT state FROM pipeline_nights")[0]["state"], "done")
        let lora = try db0.exec("SELECT spec FROM jobs WHERE kind = 'image' AND name LIKE 'image-lantern-keepers%' LIMIT 1")[0].json("spec")
        XCTAssertEqual(lora?["lora"]?["name"]?.stringValue, "paper-lantern-style.safetensors")
        let report = try String(contentsOfFile: try XCTUnwrap(reportPath(out)), encoding: .utf8)
        XCTAssertTrue(report.contains("| images generated and scored | 12 |"), report)
        XCTAssertTrue(report.contains("| approved | \(approved) |"), report)
        XCTAssertTrue(report.contains("| lantern-keepers | 4 |"), report)
        XCTAssertTrue(report.contains("| jobs | 30 | 30 |"), report)
        XCTAssertTrue(report.contains("face similarity (n=4)"), report)
        XCTAssertTrue(report.contains("hydra-compute"), report)
    }

    /// `residents:`: the runner unloads the LLM through TabbyAPI's API once expansion is done and
    /// no job calls it, records it, and loads it back when the night ends.
    func testResidentLLMUnloadedAfterExpansionAndRestoredAtTheEnd() throws {
        try start()
        let port = try XCTUnwrap(ports["tabbyapi"])
        let cfg = try writeNight(queue: """
        collections:
          - {name: glass-orchard, target: 4, style: "still life, glass fruit", ideas: ["a glass pear", "a glass plum"]}
        """, extra: """
        residents:
          - {service: tabbyapi, node: hydra-ai, model: atlas-70b-exl2-fictional, gpus: [{gpu: 0, vram: 20GiB}], url: "http://127.0.0.1:\(port)"}
        """)
        let dry = try cluster.hydra(["pipeline", "run", "--config", cfg, "--dry-run"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        XCTAssertTrue(dry.stdout.contains("tabbyapi@hydra-ai atlas-70b-exl2-fictional (GPU 0 20.0 GiB): unload at +"), dry.stdout)
        XCTAssertTrue(dry.stdout.contains("after expand"), dry.stdout)
        XCTAssertGreaterThan(fakes.tabby.vramUsedBytes, 0)

        let out = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(out.status, 0, out.stderr + cluster.logs())
        let db0 = try db()
        let events = try db0.exec("SELECT action, extract(epoch from at) AS at, detail FROM audit_log WHERE target = 'tabbyapi@hydra-ai' ORDER BY at").all
        XCTAssertEqual(events.map { $0["action"] ?? "" }, ["resident_unload", "resident_load"], "\(events.map(\.values))")
        let unloadAt = try XCTUnwrap(events.first?.double("at"))
        let lastExpand = try XCTUnwrap(try db0.exec("SELECT max(extract(epoch from finished_at)) AS t FROM jobs WHERE kind = 'llm'")[0].double("t"))
        XCTAssertGreaterThanOrEqual(unloadAt, lastExpand, "not before the last expansion finished")
        XCTAssertTrue(events[0].json("detail")?["detail"]?.stringValue?.contains("TabbyAPI unloaded its model: expand done") ?? false, "\(events[0].values)")
        XCTAssertGreaterThan(fakes.tabby.vramUsedBytes, 0, "loaded back at the end of the night")
        let report = try String(contentsOfFile: try XCTUnwrap(reportPath(out)), encoding: .utf8)
        XCTAssertTrue(report.contains("`tabbyapi@hydra-ai` unload: TabbyAPI unloaded its model: expand done"), report)
        XCTAssertTrue(report.contains("`tabbyapi@hydra-ai` load: TabbyAPI loaded atlas-70b-exl2-fictional: the night is over"), report)
    }

    func testDenylistedPromptsAreBlockedAtPlanAndAfterExpansion() throws {
        try start()
        // The fake LLM numbers its variations ("…, variation 2"): a term only the expansion contains.
        let cfg = try writeNight(queue: """
        collections:
          - {name: harbor-sketches, target: 3, style: "pencil", ideas: ["a quiet harbor"]}
          - {name: sailors, target: 1, style: "ink", ideas: ["Captain Orvel Dunmere on deck", "a calm sailor"]}
        """, denylist: "# fictional\nvariation 2\nCaptain Orvel Dunmere\n", gates: "{aesthetic: off, technical: off, face_similarity: off}")
        let out = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(out.status, 0, out.stderr + cluster.logs())
        let db0 = try db()
        let tasks = try db0.exec("SELECT collection, seq, prompt, images, state, reason FROM generation_tasks ORDER BY collection, seq").all
        let harbor = tasks.filter { $0["collection"] == "harbor-sketches" }
        XCTAssertEqual(harbor.map { $0["state"] }, ["blocked", "done"], "\(harbor.map { $0["reason"] }) the 2-image task's expansion has a 'variation 2'; the 1-image task's does not")
        XCTAssertFalse(harbor[0]["prompt"]!.contains("variation"), "the term came from the LLM, not the queue")
        XCTAssertTrue(harbor[0]["reason"]!.contains("denylisted term 'variation 2' in LLM variation 2 of task harbor-sketches#0"), harbor[0]["reason"]!)
        let sailors = tasks.filter { $0["collection"] == "sailors" }
        XCTAssertEqual(sailors.map { $0["state"] }, ["blocked", "done"])
        XCTAssertTrue(sailors[0]["reason"]!.contains("Captain Orvel Dunmere"))
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM jobs WHERE kind = 'llm' AND spec::text LIKE '%Dunmere%'")[0].int("n"), 0,
                       "a prompt blocked at planning is never sent to the LLM")
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM quality_metrics")[0].int("n"), 2)
        let report = try String(contentsOfFile: try XCTUnwrap(reportPath(out)), encoding: .utf8)
        XCTAssertTrue(report.contains("- blocked: harbor-sketches#0: denylisted term 'variation 2'"), report)
        XCTAssertTrue(report.contains("| tasks blocked by the denylist | 2 |"), report)
    }

    func testLoRATrainingWaitsForApprovalThenRuns() throws {
        try start()
        let cfg = try writeNight(queue: """
        collections:
          - {name: glass-orchard, target: 2, style: "glass fruit", train_lora: {min_images: 2, argv: [/bin/echo, train-lora]}}
        """, gates: "{aesthetic: off, technical: off, face_similarity: off}")
        let first = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(first.status, 0, first.stderr + cluster.logs())
        let db0 = try db()
        XCTAssertEqual(try db0.exec("SELECT state FROM pipeline_actions WHERE action = 'train_lora'").all.map { $0["state"] }, ["awaiting_approval"])
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM jobs WHERE kind = 'command'")[0].int("n"), 0, "nothing runs before approval")
        let list = try cluster.hydra(["approvals", "--json"])
        XCTAssertEqual(list.status, 0, list.stderr)
        let approvals = try JSONCoding.decode(JSONValue.self, from: list.stdout)["approvals"]?.arrayValue ?? []
        XCTAssertEqual(approvals.count, 1)
        XCTAssertEqual(approvals.first?["action"]?.stringValue, "train_lora")
        XCTAssertEqual(approvals.first?["detail"]?["images"]?.arrayValue?.count, 2, "the console shows the approved images as thumbnails")
        let id = try XCTUnwrap(approvals.first?["id"]?.stringValue)
        XCTAssertTrue(try String(contentsOfFile: try XCTUnwrap(reportPath(first)), encoding: .utf8).contains("`hydra approve \(id)`"))

        XCTAssertEqual(try cluster.hydra(["reject", id]).status, 2, "a rejection needs --reason")
        let ok = try cluster.hydra(["approve", String(id.prefix(8)), "--by", "night-editor"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertEqual(try cluster.hydra(["reject", id, "--reason", "too late"]).status, 1, "a decided approval stays decided")
        XCTAssertEqual(try cluster.hydra(["approve", "ffffffff"]).status, 2)

        let second = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(second.status, 0, second.stderr + cluster.logs())
        XCTAssertEqual(try db0.exec("SELECT state FROM pipeline_actions WHERE action = 'train_lora'")[0]["state"], "done")
        let job = try db0.exec("SELECT state, spec FROM jobs WHERE kind = 'command'").all
        XCTAssertEqual(job.map { $0["state"] }, ["succeeded"])
        XCTAssertEqual(job.first?.json("spec")?["argv"]?.arrayValue?.last?.stringValue, work.appendingPathComponent("assets/glass-orchard").path)
        let audit = try db0.exec("SELECT actor, action FROM audit_log ORDER BY id").all.map { "\($0["actor"]!) \($0["action"]!)" }
        XCTAssertTrue(audit.contains("hydra approval_requested"), "\(audit)")
        XCTAssertTrue(audit.contains("night-editor approve"), "\(audit)")
        XCTAssertTrue(audit.contains("pipeline train_lora_submitted"), "\(audit)")
        XCTAssertTrue(audit.contains("pipeline train_lora_done"), "\(audit)")
    }

    func testDeadlineMidNightThenResumed() throws {
        // One image a second on the single-worker fake ComfyUI: eight images cannot finish in three seconds.
        try start(latencyMs: 1000)
        let cfg = try writeNight(queue: """
        collections:
          - {name: tide-watchers, target: 8, style: "charcoal", ideas: ["a tide watcher at dawn"]}
        """, gates: "{aesthetic: off, technical: off, face_similarity: off}", variations: 4, extra: "drain_s: 1")
        // Gates off: every image counts toward the target, so the second night must only resume
        // (a rejected image would rightly make the planner add a task to make up for it).
        let until = ISO8601DateFormatter().string(from: Date().addingTimeInterval(3))
        let first = try cluster.hydra(["pipeline", "run", "--config", cfg, "--until", until])
        XCTAssertEqual(first.status, 0, first.stderr + cluster.logs())
        let db0 = try db()
        XCTAssertEqual(try db0.exec("SELECT state FROM pipeline_nights")[0]["state"], "stopped")
        let decided = try db0.exec("SELECT count(*) AS n FROM quality_metrics WHERE state IN ('approved', 'rejected')")[0].int("n") ?? 0
        XCTAssertLessThan(decided, 8)
        let report1 = try String(contentsOfFile: try XCTUnwrap(reportPath(first)), encoding: .utf8)
        XCTAssertTrue(report1.contains("**stopped at the deadline**"), report1)
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM jobs WHERE state IN ('pending', 'retry_wait')")[0].int("n"), 0,
                       "nothing is left queued after the deadline")

        let second = try cluster.hydra(["pipeline", "run", "--config", cfg])
        XCTAssertEqual(second.status, 0, second.stderr + cluster.logs())
        XCTAssertEqual(try db0.exec("SELECT state, runs FROM pipeline_nights")[0]["state"], "done")
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM generation_tasks")[0].int("n"), 2, "resumed, not re-planned")
        let images = try db0.exec("SELECT state FROM quality_metrics").all.map { $0["state"] ?? "" }
        XCTAssertEqual(images.count, 8)
        XCTAssertTrue(images.allSatisfy { $0 == "approved" || $0 == "rejected" }, "\(images)")
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM jobs WHERE kind = 'image' AND state = 'succeeded'")[0].int("n"), 8)
    }

    func testHTTPTriggerStartsANightWithABearerToken() throws {
        cluster = try Cluster()
        fakes = FakeCluster(imageRoot: cluster.dir.path)
        let ports = try fakes.start(basePort: 0)
        let workflows = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("deploy/workflows").path
        let cfg = try writeNight(queue: "collections: [{name: glass-orchard, target: 2, style: \"glass fruit\"}]")
        let token = work.appendingPathComponent("pipeline.token").path
        try "fictional-token-0123456789abcdef\n".write(toFile: token, atomically: true, encoding: .utf8)
        chmod(token, 0o644)
        try cluster.startCoordinator(extra: ["--pipeline-config", cfg, "--pipeline-token-file", token])
        try waitUntil("the coordinator refuses a token file others can read", timeout: 30) { cluster.processes["coordinator"]?.isRunning == false }
        XCTAssertEqual(cluster.processes["coordinator"]?.terminationStatus, 2)
        XCTAssertTrue(cluster.log("coordinator").contains("chmod 600"), cluster.log("coordinator"))
        chmod(token, 0o600)
        try cluster.startCoordinator(extra: ["--pipeline-config", cfg, "--pipeline-token-file", token])
        for (node, yaml) in [("hydra-ai", "services_endpoints: {tabbyapi: {url: \"http://127.0.0.1:\(ports["tabbyapi"]!)\"}}"),
                             ("hydra-compute", "services_endpoints: {comfyui: {url: \"http://127.0.0.1:\(ports["comfyui"]!)\"}}"),
                             ("hydra-storage", "services_endpoints: {scorer: {url: \"http://127.0.0.1:\(ports["scorer"]!)\"}}")] {
            let f = work.appendingPathComponent("\(node).services.yaml").path
            try yaml.write(toFile: f, atomically: true, encoding: .utf8)
            try cluster.startAgent(node, extra: ["--services", f, "--workflows-dir", workflows])
        }
        var port: Int?
        try waitUntil("the coordinator logs its metrics address", timeout: 30) {
            let log = cluster.log("coordinator")
            guard let r = log.range(of: "metrics=127\\.0\\.0\\.1:(\\d+)", options: .regularExpression) else { return false }
            port = Int(log[r].split(separator: ":").last!)
            return true
        }
        let url = "http://127.0.0.1:\(port!)/api/v1/pipeline/run"
        let client = HTTPClient(service: "test", options: HTTPClientOptions(retries: 0))
        XCTAssertEqual(try client.send(HTTPClientRequest(method: "POST", url: url)).status, 401)
        XCTAssertEqual(try client.send(HTTPClientRequest(method: "POST", url: url, headers: ["Authorization": "Bearer wrong-token-0123456789"])).status, 401)
        XCTAssertEqual(try client.send(HTTPClientRequest(method: "GET", url: url, headers: ["Authorization": "Bearer fictional-token-0123456789abcdef"])).status, 405)
        let ok = try client.send(HTTPClientRequest(method: "POST", url: url, headers: ["Authorization": "Bearer fictional-token-0123456789abcdef"],
                                                   body: Data(#"{"until": "23:59"}"#.utf8)))
        XCTAssertEqual(ok.status, 202, String(decoding: ok.body, as: UTF8.self))
        let db0 = try db()
        try waitUntil("the triggered night ends", timeout: 90) {
            try db0.exec("SELECT state FROM pipeline_nights").all.first?["state"] == "done"
        }
        XCTAssertEqual(try db0.exec("SELECT triggered_by FROM pipeline_nights")[0]["triggered_by"]?.hasPrefix("http:"), true)
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM audit_log WHERE action = 'pipeline_trigger'")[0].int("n"), 1)
        XCTAssertEqual(try db0.exec("SELECT count(*) AS n FROM quality_metrics")[0].int("n"), 2)
    }
}
