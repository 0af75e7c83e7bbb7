import Foundation
import XCTest
@testable import HydraCore
@testable import HydraStore
@testable import HydraPipeline

/// Image paths come from (unsigned) results: the runner must only move or delete
/// files inside its own directories, on the real database path that organize takes.
final class PipelinePathIntegrationTests: XCTestCase {
    func testForgedImagePathsAreRefusedAuditedAndLeftAlone() throws {
        let cluster = try Cluster()
        defer { cluster.stopAll() }
        let fm = FileManager.default
        let work = URL(fileURLWithPath: OwnedPaths.realPath(cluster.dir.path)!)
        for d in ["out/job-1", "etc"] { try fm.createDirectory(atPath: work.appendingPathComponent(d).path, withIntermediateDirectories: true) }
        let secret = work.appendingPathComponent("etc/passwd").path
        try "root:x:0:0".write(toFile: secret, atomically: true, encoding: .utf8)
        let good = work.appendingPathComponent("out/job-1/ok.png").path
        try "png".write(toFile: good, atomically: true, encoding: .utf8)
        let link = work.appendingPathComponent("out/job-1/link.png").path
        try fm.createSymbolicLink(atPath: link, withDestinationPath: secret)
        try "collections:\n  - {name: glass-orchard, target: 4, style: \"still life\"}\n".write(to: work.appendingPathComponent("queue.yaml"), atomically: true, encoding: .utf8)
        let cfgPath = work.appendingPathComponent("pipeline.yaml").path
        try """
        queue: queue.yaml
        assets_dir: assets
        reports_dir: reports
        outputs_dir: out
        quarantine_dir: quarantine
        rejects: delete
        approvals: {approval_from_tier: 9}
        """.write(toFile: cfgPath, atomically: true, encoding: .utf8)
        let cfg = try PipelineConfig.load(path: cfgPath)
        let store = PipelineStore(jobs: cluster.store())
        let runner = PipelineRunner(config: cfg, collections: try GenerationQueue.load(path: cfg.queueFile), denylist: .empty,
                                    store: store, cluster: nil, deadline: Date().addingTimeInterval(600))
        let task = try store.insertTasks([PlannedTask(collection: "glass-orchard", seq: 1, idea: "i", prompt: "p", images: 4)], night: runner.night)[0]
        let sources = [good, secret, work.appendingPathComponent("out/job-1/../../etc/passwd").path, link]
        let images = try store.insertImages(task: task, night: runner.night, collection: "glass-orchard", prompts: sources.map { _ in "p" })
        for (id, path) in zip(images, sources) { try store.setScoreJob(image: id, job: UUID().uuidString.lowercased(), path: path) }

        let pass = ImageScores(aesthetic: 9, musiq: 90, faceSimilarity: nil, faceStatus: "not_requested")
        let fail = ImageScores(aesthetic: 1, musiq: 1, faceSimilarity: nil, faceStatus: "not_requested")
        try runner.organize(image: images[0], scores: pass, verdict: QualityGate.evaluate(pass, cfg.gates, hasReference: false))
        // Rejected with `rejects: delete` and no approval needed: the forged ones would be deleted outright.
        for id in images[1...3] { try runner.organize(image: id, scores: fail, verdict: QualityGate.evaluate(fail, cfg.gates, hasReference: false)) }

        func row(_ id: String) throws -> PGRow { try store.db.exec("SELECT state, failure_class, reason, asset_path FROM quality_metrics WHERE id = $1::uuid", [id])[0] }
        XCTAssertEqual(try row(images[0])["state"], "approved")
        let asset = try XCTUnwrap(try row(images[0])["asset_path"])
        XCTAssertTrue(asset.hasPrefix(work.appendingPathComponent("assets/glass-orchard/").path), asset)
        XCTAssertTrue(fm.fileExists(atPath: asset))
        for id in images[1...3] {
            let r = try row(id)
            XCTAssertEqual(r["state"], "failed")
            XCTAssertEqual(r["failure_class"], "refused_path")
            XCTAssertTrue(r["reason"]?.contains("outside the directories the runner owns") == true, r["reason"] ?? "")
        }
        XCTAssertEqual(try String(contentsOfFile: secret, encoding: .utf8), "root:x:0:0")
        XCTAssertEqual(try fm.destinationOfSymbolicLink(atPath: link), secret)
        XCTAssertEqual(runner.refusedPaths, 3)
        XCTAssertEqual(try store.jobs.auditLog().filter { $0.action == "path_refused" }.count, 3)

        // An approved deletion whose list was tampered with removes only the quarantined file.
        let q = work.appendingPathComponent("quarantine/n/glass-orchard").path
        try fm.createDirectory(atPath: q, withIntermediateDirectories: true)
        try "x".write(toFile: q + "/r.png", atomically: true, encoding: .utf8)
        let action = try store.addAction(night: runner.night, action: "delete_assets", collection: nil,
                                         detail: ["files": .array([.string(q + "/r.png"), .string(secret), .string(q + "/../../../etc/passwd")])], approval: nil)
        try runner.runActions()
        XCTAssertFalse(fm.fileExists(atPath: q + "/r.png"))
        XCTAssertEqual(try String(contentsOfFile: secret, encoding: .utf8), "root:x:0:0")
        XCTAssertEqual(runner.refusedPaths, 5)
        let done = try store.jobs.auditLog(target: action).first { $0.action == "delete_assets_done" }
        XCTAssertEqual(done?.detail?["deleted"]?.intValue, 1)
        XCTAssertEqual(done?.detail?["refused"]?.intValue, 2)
    }
}
