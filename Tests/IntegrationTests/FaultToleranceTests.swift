import Foundation
import XCTest
import HydraWire
import HydraIO

/// Whatever dies (coordinator, Redis, PostgreSQL), no job is lost.
final class FaultToleranceTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    var repoRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent() }

    /// Runs deploy/local/<script> on the instance `make test` started.
    func local(_ script: String, _ args: [String] = []) throws {
        guard let name = ProcessInfo.processInfo.environment["HYDRA_LOCAL_NAME"] else {
            throw XCTSkip("needs the local instance of `make test` (HYDRA_LOCAL_NAME) to restart its servers")
        }
        // posix_spawn + waitpid rather than Foundation.Process: the scripts start daemons, and
        // Process.waitUntilExit was seen to hang on Linux after such a child had exited.
        let path = repoRoot.appendingPathComponent("deploy/local/\(script)").path
        let argv = [path, name] + args
        var pid: pid_t = 0
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for a in cargs { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        defer { posix_spawn_file_actions_destroy(&actions) }
        XCTAssertEqual(posix_spawn(&pid, path, &actions, nil, &cargs, environ), 0, "cannot start \(script)")
        var status: Int32 = 0
        let deadline = Date().addingTimeInterval(120)
        while waitpid(pid, &status, WNOHANG) == 0 {
            if Date() > deadline { kill(pid, SIGKILL); XCTFail("\(script) did not finish in 120 s"); return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let exit = (status >> 8) & 0xff
        XCTAssertEqual(exit, 0, "\(script) failed")
    }

    func startNodes() throws {
        for n in ["hydra-ai", "hydra-compute", "hydra-storage"] { try cluster.startAgent(n) }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
    }

    let batchYAML = """
    name: keep-going
    max_attempts: 10
    jobs:
      - {name: gpu, kind: sleep, count: 30, vram: 4GiB, spec: {duration_s: 0.4}}
      - {name: cpu, kind: sleep, count: 10, spec: {duration_s: 0.3}}
    """

    func assertCompletes(_ batch: String, timeout: Double = 120) throws {
        try waitUntil("batch done", timeout: timeout, poll: 0.5) { (try? cluster.summary(batch).isDone) ?? false }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.count(.succeeded), s.total, "\(s.byState)")
        XCTAssertEqual(s.lost, 0)
    }

    func succeeded(_ batch: String) -> Int { (try? cluster.summary(batch).count(.succeeded)) ?? 0 }

    func testStandbyCoordinatorTakesOverAfterSIGKILL() throws {
        try cluster.start("coordinator", binary: "hydra", ["coordinator", "--cluster", cluster.clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                           "--lease", "3", "--hmac-key", cluster.keyFile])
        try waitUntil("first coordinator leads", timeout: 30) { cluster.log("coordinator").contains("msg=leading") }
        try cluster.start("standby", binary: "hydra", ["coordinator", "--cluster", cluster.clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                       "--lease", "3", "--hmac-key", cluster.keyFile])
        try waitUntil("second one stands by", timeout: 30) { cluster.log("standby").contains("standing by") }
        try startNodes()
        let batch = try cluster.submit(batchYAML)
        try waitUntil("some progress", timeout: 60) { succeeded(batch) >= 5 }
        cluster.kill("coordinator")
        let killedAt = Date()
        try waitUntil("standby leads", timeout: 15, poll: 0.05) { cluster.log("standby").contains("msg=leading") }
        XCTAssertLessThan(Date().timeIntervalSince(killedAt), 10, "takeover within 10 s")
        try assertCompletes(batch)
    }

    func testCoordinatorRestartRebuildsFromPostgreSQL() throws {
        try cluster.startCoordinator()
        try startNodes()
        let batch = try cluster.submit(batchYAML)
        try waitUntil("some progress", timeout: 60) { succeeded(batch) >= 5 }
        cluster.kill("coordinator")
        try cluster.startCoordinator()
        try assertCompletes(batch)
    }

    func testRedisRestartWithoutPersistenceIsReconciledFromPostgreSQL() throws {
        try cluster.startCoordinator()
        try startNodes()
        let batch = try cluster.submit(batchYAML)
        try waitUntil("some progress", timeout: 60) { succeeded(batch) >= 5 }
        try local("redis-restart.sh", ["--no-persistence"])
        try assertCompletes(batch)
    }

    func testRedisRestartWithAppendOnlyFile() throws {
        try cluster.startCoordinator()
        try startNodes()
        let batch = try cluster.submit(batchYAML)
        try waitUntil("some progress", timeout: 60) { succeeded(batch) >= 5 }
        try local("redis-restart.sh", ["--down", "1"])
        try assertCompletes(batch)
    }

    func testPostgreSQLRestartCoordinatorReconnectsAndLosesNothing() throws {
        try cluster.startCoordinator()
        try startNodes()
        let batch = try cluster.submit(batchYAML)
        try waitUntil("some progress", timeout: 60) { succeeded(batch) >= 5 }
        try local("pg-restart.sh", ["--down", "2"])
        try assertCompletes(batch)
        XCTAssertTrue(cluster.log("coordinator").contains("retrying"), "the coordinator should have noticed PostgreSQL going away")
    }

    /// Clean-up after a lost or cancelled job acknowledges and deletes a stream entry only when it is
    /// that job's envelope: a recorded id may be one Redis refused, i.e. another entry's.
    func testStreamCleanUpTouchesOnlyTheJobsOwnEnvelope() throws {
        let redis = try RedisConnection(url: cluster.redisURL)
        let stream = RedisKeys.jobs("hydra-ai")
        let now = Date().timeIntervalSince1970
        let a = UUID().uuidString.lowercased(), b = UUID().uuidString.lowercased()
        let env = Envelope(jobID: a, attempt: 1, kind: "sleep", spec: ["duration_s": 0], gpuUUIDs: [], vramBytes: 0,
                           deadline: nil, issuedAt: now, expiresAt: now + 60)
        let idA = try XCTUnwrap(try redis.command(["XADD", stream, "*"] + (try NodeMessage.job(env).fields(keys: nil))).string)
        let idCancel = try XCTUnwrap(try redis.command(["XADD", stream, "*"]
            + (try NodeMessage.cancel(jobID: b, attempt: 1, issuedAt: now).fields(keys: nil))).string)
        let verdicts = try redis.entriesBelongToJobs([
            (stream, idA, a),        // the job's own envelope
            (stream, idA, b),        // someone else's envelope under b's recorded id
            (stream, idCancel, b),   // a cancel message, not an envelope
            (stream, "1-1", a),      // nothing there
            (RedisKeys.jobs("nowhere"), idA, a),
        ])
        XCTAssertEqual(verdicts, [true, false, false, false, false])
    }

    func testLateResultOfAnOldAttemptChangesNothing() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("name: fence\njobs:\n  - {name: a, kind: sleep, spec: {duration_s: 0.1}}\n")
        try waitUntil("done", timeout: 30) { try cluster.summary(batch).isDone }
        let store = cluster.store()
        let job = try XCTUnwrap(try store.jobs(.init(batchID: batch)).first)
        // A stale agent reports attempt 0 failing, and a result from a node the job never ran on.
        let stale = [AttemptResult(jobID: job.id, attempt: job.attempt - 1, node: "hydra-storage", outcome: .failed, failureClass: .permanent, error: "late"),
                     AttemptResult(jobID: job.id, attempt: job.attempt, node: "hydra-ai", outcome: .failed, failureClass: .permanent, error: "impostor")]
        XCTAssertEqual(try store.apply(results: stale), [])
        let after = try XCTUnwrap(try store.job(job.id))
        XCTAssertEqual(after.state, .succeeded)
        XCTAssertEqual(after.result, job.result)
    }
}
