import Foundation
import XCTest
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraExecutors

final class EndToEndTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws {
        cluster = try Cluster()
    }

    override func tearDown() {
        if let c = cluster {
            c.stopAll()
            if testRun?.hasSucceeded == false { print(c.logs()) }
        }
    }

    func startReferenceCluster() throws {
        try cluster.startCoordinator()
        for n in ["hydra-ai", "hydra-compute", "hydra-storage"] { try cluster.startAgent(n) }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
    }

    func testBatchSubmittedThroughCLICompletesOnSimulatedGPUs() throws {
        try startReferenceCluster()
        let batch = try cluster.submit("""
        name: e2e-mixed
        jobs:
          - {name: sketch, kind: sleep, count: 12, vram: 6GiB, spec: {duration_s: 0.2}}
          - {name: llm-70b-shard, kind: sleep, gpus: 2, vram: 20GiB, count: 2, spec: {duration_s: 0.3}}
          - {name: big-only-5090, kind: sleep, vram: 28GiB, spec: {duration_s: 0.2}}
          - {name: index, kind: sleep, count: 4, spec: {duration_s: 0.1}}
          - {name: hello, kind: command, spec: {argv: ["/bin/echo", "hello from a fictional studio"]}}
        """)
        try waitUntil("batch done", timeout: 60) { try cluster.summary(batch).isDone }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.total, 20)
        XCTAssertEqual(s.count(.succeeded), 20, "\(s.byState)")
        XCTAssertEqual(s.lost, 0)

        let store = cluster.store()
        let jobs = try store.jobs(.init(batchID: batch))
        // Placement honoured VRAM: 2×20 GiB fits only on hydra-ai (5090 + 4090), 28 GiB only on the 5090.
        for j in jobs where j.name.hasPrefix("llm-70b-shard") {
            XCTAssertEqual(j.node, "hydra-ai")
            XCTAssertEqual(j.gpuUUIDs.count, 2)
        }
        let big = try XCTUnwrap(jobs.first { $0.name == "big-only-5090" })
        XCTAssertEqual(big.gpuUUIDs, [SimulatedGPUs.uuid(node: "hydra-ai", index: 0)])
        let hello = try XCTUnwrap(jobs.first { $0.kind == "command" })
        XCTAssertEqual(hello.result?["output"]?["stdout"]?.stringValue, "hello from a fictional studio\n")
        // Every job has a full history from submission to success.
        let events = try store.events(job: hello.id).map(\.to)
        XCTAssertEqual(events, ["pending", "dispatched", "running", "succeeded"])
    }

    func testAgentKilledMidBatchHasItsJobsFinishedByOthers() throws {
        try startReferenceCluster()
        let batch = try cluster.submit("""
        name: survive-a-crash
        jobs:
          - {name: render, kind: sleep, count: 24, vram: 5GiB, spec: {duration_s: 1.5}}
          - {name: cpu, kind: sleep, count: 6, spec: {duration_s: 1.0}}
        """)
        let store = cluster.store()
        try waitUntil("jobs running on hydra-compute", timeout: 30) {
            try !store.jobs(.init(batchID: batch, states: [.running], node: "hydra-compute")).isEmpty
        }
        let victimRows = try store.jobs(.init(batchID: batch, states: [.running, .dispatched], node: "hydra-compute"))
        let victims = victimRows.map(\.id)
        XCTAssertFalse(victims.isEmpty)
        let oldEntries = victimRows.compactMap(\.streamID)
        XCTAssertEqual(oldEntries.count, victims.count, "every dispatched job records its stream entry")
        cluster.kill("hydra-compute")
        try waitUntil("batch done after the crash", timeout: 90) { try cluster.summary(batch).isDone }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.count(.succeeded), 30, "\(s.byState)")
        XCTAssertEqual(s.lost, 0)
        for id in victims {
            let j = try XCTUnwrap(try store.job(id))
            XCTAssertEqual(j.state, .succeeded)
            XCTAssertNotEqual(j.node, "hydra-compute", "job \(id) finished on the dead node")
            XCTAssertGreaterThanOrEqual(j.attempt, 2)
            XCTAssertEqual(j.errors?.arrayValue?.first?["class"]?.stringValue, "lost")
        }
        XCTAssertEqual(cluster.nodeCount(), 2)
        // The dead node's envelopes of those attempts are gone, so they can never run late.
        let redis = try RedisConnection(url: cluster.redisURL)
        for sid in oldEntries {
            XCTAssertEqual(try redis.run(["XRANGE", RedisKeys.jobs("hydra-compute"), sid, sid]).array?.count, 0, "entry \(sid) left behind")
        }
    }

    func testSIGTERMLetsRunningJobsFinishThenExitsZero() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage", extra: ["--grace", "20"])
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("""
        name: graceful
        jobs:
          - {name: cpu, kind: sleep, count: 2, spec: {duration_s: 1.0}}
        """)
        let store = cluster.store()
        try waitUntil("jobs running", timeout: 30) { try store.jobs(.init(batchID: batch, states: [.running])).count == 2 }
        cluster.kill("hydra-storage", signal: SIGTERM)
        let p = try XCTUnwrap(cluster.processes["hydra-storage"])
        try waitUntil("agent exits", timeout: 30) { !p.isRunning }
        XCTAssertEqual(p.terminationStatus, 0)
        try waitUntil("results applied", timeout: 30) { try cluster.summary(batch).isDone }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 2)
    }

    func testSIGTERMPastGraceHandsJobsBackWithoutUsingAnAttempt() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage", extra: ["--grace", "0.2"])
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("""
        name: hand-back
        max_attempts: 1
        jobs:
          - {name: long, kind: sleep, spec: {duration_s: 30}}
        """)
        let store = cluster.store()
        try waitUntil("job running", timeout: 30) { try store.jobs(.init(batchID: batch, states: [.running])).count == 1 }
        cluster.kill("hydra-storage", signal: SIGTERM)
        let p = try XCTUnwrap(cluster.processes["hydra-storage"])
        try waitUntil("agent exits", timeout: 30) { !p.isRunning }
        XCTAssertEqual(p.terminationStatus, 0)
        try waitUntil("job handed back to pending", timeout: 30) {
            try store.jobs(.init(batchID: batch)).first?.state == .pending
        }
        let j = try XCTUnwrap(try store.jobs(.init(batchID: batch)).first)
        XCTAssertEqual(j.maxAttempts, 2, "a handed-back job keeps its budget")
    }

    func testCommandJobsRunAsTheCommandUserAndRefusedCommandLinesFailPermanently() throws {
        guard geteuid() == 0 else { throw XCTSkip("--command-user needs the agent to run as root here (CI and the dev container do)") }
        try cluster.startCoordinator()
        for n in Cluster.nodeNames {
            try cluster.startAgent(n, extra: ["--command-user", "nobody", "--allow-command", "/usr/bin/id -u", "--allow-command", "/bin/cat {path}"])
        }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
        let batch = try cluster.submit("""
        name: isolated-commands
        jobs:
          - {name: whoami, kind: command, spec: {argv: ["/usr/bin/id", "-u"]}}
          - {name: read-key, kind: command, max_attempts: 1, spec: {argv: ["/bin/cat", "\(cluster.keyFile)"]}}
          - {name: env-injected, kind: command, spec: {argv: ["/usr/bin/id", "-u"], env: {LD_PRELOAD: /tmp/x.so}}}
        """)
        try waitUntil("batch done", timeout: 60) { try cluster.summary(batch).isDone }
        let jobs = try cluster.store().jobs(.init(batchID: batch))
        func job(_ name: String) throws -> JobRow { try XCTUnwrap(jobs.first { $0.name == name }, name) }
        XCTAssertEqual(try job("whoami").result?["output"]?["stdout"]?.stringValue, "65534\n")
        let readKey = try job("read-key")
        XCTAssertNotEqual(readKey.state, .succeeded)
        XCTAssertTrue("\(readKey.errors ?? .null)".contains("Permission denied"), "\(readKey.errors ?? .null)")
        // An argv no node allows never reaches an agent now (testCommandJobsGoOnlyWhereTheirArgvIsAllowed);
        // what the allowlist cannot see, the environment, is still refused by the agent.
        for (name, why) in [("env-injected", "env.LD_PRELOAD")] {
            let j = try job(name)
            XCTAssertEqual(j.state, .failed, name)
            XCTAssertEqual(j.attempt, 1, "\(name): a refused command line is not retried")
            XCTAssertTrue("\(j.errors ?? .null)".contains(why), "\(name): \(j.errors ?? .null)")
        }
    }

    /// The red team's finding: an unpinned command job was placed on a node whose allowlist lacked it
    /// and failed for good, though another node allowed it. Only hydra-ai runs `id -u` here (its
    /// `--allow-command`, which the coordinator learns from its heartbeat, not from the cluster file).
    func testCommandJobsGoOnlyWhereTheirArgvIsAllowed() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-ai", extra: ["--allow-command", "/usr/bin/id -u"])
        for n in Cluster.nodeNames where n != "hydra-ai" { try cluster.startAgent(n) }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
        let store = try cluster.store()
        // Each agent's list reaches the nodes table with its heartbeat; `hydra submit` judges against it.
        try waitUntil("every node's allowlist recorded", timeout: 30) { try store.nodes().filter { $0.commands != nil }.count == 3 }
        let batch = try cluster.submit("""
        name: allowlisted-commands
        jobs:
          - {name: uid, kind: command, count: 8, spec: {argv: ["/usr/bin/id", "-u"]}}
          - {name: echo, kind: command, count: 4, spec: {argv: ["/bin/echo", "anywhere"]}}
        """)
        try waitUntil("every job done", timeout: 60) { try cluster.summary(batch).isDone }
        let jobs = try store.jobs(.init(batchID: batch))
        XCTAssertTrue(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.map { ($0.name, $0.state, $0.errors ?? .null) })")
        let uid = jobs.filter { $0.name.hasPrefix("uid") }
        XCTAssertEqual(uid.count, 8)
        XCTAssertEqual(Set(uid.compactMap(\.node)), ["hydra-ai"], "only hydra-ai allows id -u")
        XCTAssertTrue(uid.allSatisfy { $0.attempt == 1 }, "no attempt was spent on a node that refuses it")
        // An argv no node runs is refused at submit (exit 2), naming the job, the element and each node.
        let f = cluster.dir.appendingPathComponent("refused.yaml").path
        try "name: refused\njobs:\n  - {name: option-injected, kind: command, spec: {argv: [\"/bin/echo\", \"-e\"]}}\n"
            .write(toFile: f, atomically: true, encoding: .utf8)
        let r = try cluster.hydra(["submit", f, "--cluster", cluster.clusterFile])
        XCTAssertEqual(r.status, 2, r.stderr)
        for part in ["job 'option-injected'.spec.argv", "no node's command allowlist runs /bin/echo -e", "hydra-compute: argv matches no allowlisted template: argv[1] '-e'"] {
            XCTAssertTrue(r.stderr.contains(part), "\(part) in: \(r.stderr)")
        }
        XCTAssertEqual(try store.jobs(.init(batchID: nil)).filter { $0.name.hasPrefix("option-injected") }.count, 0, "nothing written")
        XCTAssertTrue(try cluster.hydra(["nodes", "--json"]).stdout.contains("/usr/bin/id"), "hydra nodes --json shows what each node runs")
    }

    func testFailedJobIsRetriedThenSucceedsAndPermanentFailureIsNotRetried() throws {
        try startReferenceCluster()
        let batch = try cluster.submit("""
        name: retries
        jobs:
          - {name: flaky, kind: sleep, spec: {duration_s: 0.05, fail: transient, fail_attempts: 1}}
          - {name: broken, kind: sleep, spec: {duration_s: 0.05, fail: permanent}}
          - {name: hopeless, kind: sleep, max_attempts: 2, spec: {duration_s: 0.05, fail: timeout}}
        """)
        try waitUntil("batch done", timeout: 60) { try cluster.summary(batch).isDone }
        let jobs = try cluster.store().jobs(.init(batchID: batch))
        let flaky = try XCTUnwrap(jobs.first { $0.name == "flaky" })
        XCTAssertEqual(flaky.state, .succeeded)
        XCTAssertEqual(flaky.attempt, 2)
        let broken = try XCTUnwrap(jobs.first { $0.name == "broken" })
        XCTAssertEqual(broken.state, .failed)
        XCTAssertEqual(broken.attempt, 1)
        let hopeless = try XCTUnwrap(jobs.first { $0.name == "hopeless" })
        XCTAssertEqual(hopeless.state, .dead)
        XCTAssertEqual(hopeless.errors?.arrayValue?.count, 2)

        // `hydra retry` brings the dead job back with a fresh budget.
        let r = try cluster.hydra(["retry", hopeless.id])
        XCTAssertEqual(r.status, 0, r.stderr)
        try waitUntil("retried job runs again", timeout: 60) {
            (try cluster.store().job(hopeless.id)?.attempt ?? 0) > 2
        }
    }

    func testCancelStopsARunningJob() throws {
        try startReferenceCluster()
        let batch = try cluster.submit("""
        name: cancel-me
        jobs:
          - {name: forever, kind: sleep, spec: {duration_s: 600}}
        """)
        let store = cluster.store()
        try waitUntil("running", timeout: 30) { try store.jobs(.init(batchID: batch, states: [.running])).count == 1 }
        let r = try cluster.hydra(["cancel", batch, "--batch"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("cancelled 1 job"))
        try waitUntil("agent stopped the job", timeout: 30) {
            cluster.log("hydra-ai").contains("cancel requested") || cluster.log("hydra-compute").contains("cancel requested")
                || cluster.log("hydra-storage").contains("cancel requested")
        }
        XCTAssertEqual(try store.jobs(.init(batchID: batch)).first?.state, .cancelled)
    }

    func testJobTooBigForFreeVRAMWaitsWithReasonThenRuns() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-compute")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let first = try cluster.submit("""
        name: hog
        jobs:
          - {name: hog, kind: sleep, vram: 14GiB, constraints: {gpu_model: "5070 Ti"}, spec: {duration_s: 5}}
          - {name: hog-small, kind: sleep, vram: 10GiB, constraints: {gpu_model: "3060"}, spec: {duration_s: 5}}
        """)
        // The hogs outlast the wait below: a reason is written once a job has been pending for a second.
        let store = cluster.store()
        try waitUntil("hogs running", timeout: 30) { try store.jobs(.init(batchID: first, states: [.running])).count == 2 }
        let second = try cluster.submit("""
        name: waits
        jobs:
          - {name: needs-12, kind: sleep, vram: 12GiB, spec: {duration_s: 0.1}}
        """)
        try waitUntil("pending reason recorded", timeout: 30) {
            try store.jobs(.init(batchID: second)).first?.pendingReason?.contains("needs 12.0 GiB") == true
        }
        let r = try cluster.hydra(["jobs", "--state", "pending"])
        XCTAssertTrue(r.stdout.contains("needs 12.0 GiB on 1 GPU; most free: hydra-compute/"), r.stdout)
        try waitUntil("runs once VRAM frees", timeout: 60) { try cluster.summary(second).isDone }
        XCTAssertEqual(try cluster.summary(second).count(.succeeded), 1)
    }

    func testBadEnvelopesAreDeadLetteredWithTheirReasonAndTheAgentKeepsRunning() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let redis = try RedisConnection(url: cluster.redisURL)
        let stream = RedisKeys.jobs("hydra-storage")
        let clusterKeys = try XCTUnwrap(try SigningKeys.load(current: cluster.keyFile, previous: nil))
        let keys = clusterKeys.node("hydra-storage")
        let now = Date().timeIntervalSince1970
        let env = Envelope(jobID: UUID().uuidString.lowercased(), attempt: 1, kind: "sleep", spec: ["duration_s": 0], gpuUUIDs: [],
                           vramBytes: 0, deadline: nil, issuedAt: now, expiresAt: now + 60, node: "hydra-storage")
        // Unsigned.
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(env).fields(keys: nil)))
        // Signed, then tampered with (attempt changed after signing).
        var tampered = try NodeMessage.job(env).fields(keys: keys)
        tampered[3] = tampered[3].replacingOccurrences(of: "\"attempt\":1", with: "\"attempt\":7")
        try redis.run(["XADD", stream, "*"] + tampered)
        // Signed by a key nobody has.
        let stranger = SigningKeys(current: Array(repeating: 65, count: 40))
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(env).fields(keys: stranger)))
        // Signed but expired.
        var old = env
        old.expiresAt = now - 1
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(old).fields(keys: keys)))
        // Not even a message.
        try redis.run(["XADD", stream, "*", "type", "job", "body", "{not json"])
        try redis.run(["XADD", stream, "*", "something", "else"])
        // Signed for this node's stream but naming another node (an envelope copied across), and one signed
        // with another node's key or with the cluster key itself (which an agent never needs).
        var elsewhere = env
        elsewhere.node = "hydra-ai"
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(elsewhere).fields(keys: keys)))
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(env).fields(keys: clusterKeys.node("hydra-ai"))))
        try redis.run(["XADD", stream, "*"] + (try NodeMessage.job(env).fields(keys: clusterKeys)))
        // A valid envelope runs once; the same bytes again are a replay.
        let valid = try NodeMessage.job(env).fields(keys: keys)
        try redis.run(["XADD", stream, "*"] + valid)
        try redis.run(["XADD", stream, "*"] + valid)
        let deadLetters = RedisKeys.deadLetter("hydra-storage")
        try waitUntil("dead-lettered", timeout: 30) { (try redis.run(["XLEN", deadLetters]).integer ?? 0) == 10 }
        let entries = RedisConnection.parseEntries(try redis.run(["XRANGE", deadLetters, "-", "+"]).array ?? [])
        XCTAssertEqual(entries.compactMap { $0.fields?["reason"] },
                       ["unsigned", "bad_signature", "unknown_key", "expired", "unsigned", "malformed", "wrong_node", "unknown_key",
                        "unknown_key", "replayed"])
        // The agent deletes what it acknowledged: its stream does not grow with the work done.
        try waitUntil("job stream emptied", timeout: 30) { (try redis.run(["XLEN", stream]).integer ?? -1) == 0 }
        XCTAssertFalse(cluster.log("hydra-storage").contains(try String(contentsOfFile: cluster.keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)),
                       "the key must never be logged")
        let batch = try cluster.submit("""
        name: still-alive
        jobs:
          - {name: cpu, kind: sleep, spec: {duration_s: 0.1}}
        """)
        try waitUntil("batch done", timeout: 30) { try cluster.summary(batch).isDone }
        XCTAssertEqual(try cluster.summary(batch).count(.succeeded), 1)
    }
}

final class DependencyTests: XCTestCase {
    var cluster: Cluster!
    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() { cluster?.stopAll() }

    func testDependentsRunAfterTheirDependenciesAndAreCancelledWhenOneFails() throws {
        try cluster.startWithOneNode("hydra-storage")
        let batch = try cluster.submit("""
        name: pipeline-shape
        jobs:
          - {name: expand, kind: sleep, count: 2, spec: {duration_s: 0.3}}
          - {name: render, kind: sleep, count: 2, after: expand, spec: {duration_s: 0.1}}
          - {name: doomed-parent, kind: sleep, spec: {duration_s: 0.05, fail: permanent}}
          - {name: orphan, kind: sleep, after: doomed-parent}
        """)
        try waitUntil("batch done", timeout: 60) { try cluster.summary(batch).isDone }
        let jobs = try cluster.store().jobs(.init(batchID: batch))
        let expandEnd = jobs.filter { $0.name.hasPrefix("expand") }.compactMap(\.finishedAt).max()!
        for r in jobs where r.name.hasPrefix("render") {
            XCTAssertEqual(r.state, .succeeded)
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(r.startedAt), expandEnd - 0.001, "render started before expand finished")
        }
        let orphan = try XCTUnwrap(jobs.first { $0.name == "orphan" })
        XCTAssertEqual(orphan.state, .cancelled)
        XCTAssertEqual(orphan.pendingReason, "a dependency did not succeed: doomed-parent failed")
    }

    /// A chain of 15 entries of 3 jobs, each after the one before, and a last entry after all of them:
    /// through the live coordinator no job starts before every job of the entries it is after has ended.
    func testAChainOfEntriesRunsInOrderThroughTheCoordinator() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        var yaml = "name: chain\njobs:\n  - {name: s0, kind: sleep, count: 3, spec: {duration_s: 0.02}}\n"
        for k in 1..<15 { yaml += "  - {name: s\(k), kind: sleep, count: 3, after: s\(k - 1), spec: {duration_s: 0.02}}\n" }
        yaml += "  - {name: last, kind: sleep, after: [\((0..<15).map { "s\($0)" }.joined(separator: ", "))]}\n"
        let batch = try cluster.submit(yaml)
        try waitUntil("chain done", timeout: 90) { try cluster.summary(batch).isDone }
        let jobs = try cluster.store().jobs(.init(batchID: batch))
        XCTAssertEqual(jobs.count, 46)
        XCTAssertTrue(jobs.allSatisfy { $0.state == .succeeded }, "\(jobs.map { "\($0.name) \($0.state)" })")
        func entry(_ j: JobRow) -> String { j.name.split(separator: "-").first.map(String.init) ?? j.name }
        let ends = Dictionary(grouping: jobs, by: entry).mapValues { $0.compactMap(\.finishedAt).max() ?? .infinity }
        for j in jobs {
            for a in j.after {
                XCTAssertGreaterThanOrEqual(try XCTUnwrap(j.startedAt), try XCTUnwrap(ends[a]) - 0.001, "\(j.name) started before \(a) ended")
            }
            // The coordinator marks a job ready at the moment the last of what it is after ended, read when
            // it first finds the job ready (the router ages it from there); a job after nothing is never marked.
            guard let latest = j.after.compactMap({ ends[$0] }).max() else { XCTAssertNil(j.readyAt, j.name); continue }
            let ready = try XCTUnwrap(j.readyAt, "\(j.name) never marked ready")
            XCTAssertEqual(ready, latest, accuracy: 0.001, "\(j.name) not marked ready when its dependencies ended")
            XCTAssertLessThanOrEqual(ready, try XCTUnwrap(j.startedAt) + 0.001, "\(j.name) started before it was marked ready")
        }
        XCTAssertEqual(jobs.first { $0.name == "last" }?.after.count, 15)
    }
}

final class UpcomingJobsTests: XCTestCase {
    var cluster: Cluster!
    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() { cluster?.stopAll() }

    /// What the router weighs as upcoming: pending jobs whose unfinished dependencies are all ready or on a node.
    func testUpcomingAreJobsWhoseDependenciesAreAllReadyOrRunning() throws {
        let batch = try cluster.submit("""
        name: chain
        jobs:
          - {name: a, kind: sleep, vram: 1GiB}
          - {name: b, kind: sleep, vram: 1GiB, after: a}
          - {name: c, kind: sleep, vram: 1GiB, after: b}
          - {name: d, kind: sleep, vram: 1GiB, after: a}
          - {name: x, kind: sleep, vram: 1GiB, after: [a, c]}
        """)
        let store = cluster.store()
        let ids = Dictionary(uniqueKeysWithValues: try store.jobs(.init(batchID: batch)).map { ($0.name, $0.id) })
        func upcoming(maxDependencies: Int = 256) throws -> [String] {
            try XCTUnwrap(store.upcomingRows(maxDependencies: maxDependencies, timeoutMS: 10_000)).map(\.name).sorted()
        }
        func set(_ name: String, _ state: String) throws {
            _ = try PGConnection(url: cluster.dbURL).exec("UPDATE jobs SET state = $1 WHERE id = $2::uuid", [state, ids[name]!])
        }
        // a is ready: b and d wait only on it; c waits on b (itself waiting), x on c.
        XCTAssertEqual(try upcoming(), ["b", "d"])
        // The router learns which pending job each waits on (`GatedWork` ranks a by what it holds back).
        let rows = try XCTUnwrap(store.upcomingRows(timeoutMS: 10_000)).map(RouterJob.init(row:))
        XCTAssertEqual(rows.map(\.waitsOn), [[ids["a"]!], [ids["a"]!]])
        try set("a", "running")
        XCTAssertEqual(try upcoming(), ["b", "d"])
        // a done: b and d are ready (the pending list has them), c now waits only on a ready job.
        try set("a", "succeeded")
        XCTAssertEqual(try upcoming(), ["c"])
        // b done too: c is ready and x waits only on it, but x names two jobs: over a cap of one it is left out.
        try set("b", "succeeded")
        XCTAssertEqual(try upcoming(), ["x"])
        XCTAssertEqual(try upcoming(maxDependencies: 1), [])
        try set("b", "pending")
        XCTAssertEqual(Set(try store.pendingIDs()), Set([ids["b"]!, ids["d"]!]))
        // b failed for good: c cannot follow a job that will not run.
        try set("b", "failed")
        XCTAssertEqual(try upcoming(), [])
    }

    /// The work waiting on each job is stored at submit and reaches the router with the row.
    func testTheWorkWaitingOnAJobIsStoredAtSubmitAndReachesTheRouter() throws {
        let batch = try cluster.submit("""
        name: tails
        jobs:
          - {name: a, kind: sleep, vram: 1GiB, spec: {base_runtime_s: 100}}
          - {name: b, kind: sleep, vram: 1GiB, after: a, spec: {base_runtime_s: 300}}
          - {name: c, kind: sleep, after: b, spec: {duration_s: 7}}
          - {name: d, kind: sleep, vram: 1GiB, after: a, spec: {base_runtime_s: 50}}
          - {name: lone, kind: sleep, vram: 1GiB, spec: {base_runtime_s: 900}}
          - {name: mid, kind: sleep, vram: 1GiB, spec: {base_runtime_s: 300}}
        """)
        let store = cluster.store()
        let rows = Dictionary(uniqueKeysWithValues: try store.jobs(.init(batchID: batch)).map { ($0.name, $0) })
        // On the reference GPU (weight 10): b 30 s, then c's fixed 7 s; d's 5 s is the shorter branch.
        XCTAssertEqual(rows["a"]?.tailS ?? -1, 37, accuracy: 1e-9)
        XCTAssertEqual(rows["b"]?.tailS ?? -1, 7, accuracy: 1e-9)
        XCTAssertEqual(rows["c"]?.tailS ?? -1, 0)
        XCTAssertEqual(rows["lone"]?.tailS ?? -1, 0)
        let pending = try store.pendingRows(ids: try store.pendingIDs()).map(RouterJob.init(row:))
        XCTAssertEqual(pending.first { $0.id == rows["a"]?.id }?.tailS ?? -1, 37, accuracy: 1e-9)
        // Ready now: a (10 s, 37 s behind it), lone (90 s) and mid (30 s). a ranks by 47 s, ahead of
        // mid; by its own runtime alone it would come last.
        let order = JobOrdering.order(pending, running: [], now: Date(), agingStepS: 600, criticalPath: true).map { pending[$0].id }
        XCTAssertEqual(order, ["lone", "a", "mid"].map { rows[$0]!.id })
    }
}

final class RouterLiveTests: XCTestCase {
    var cluster: Cluster!
    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    func testJobsLandWhereTheRouterPredictsAndRuntimesAreLearned() throws {
        try cluster.startCoordinator()
        for n in ["hydra-ai", "hydra-compute", "hydra-storage"] { try cluster.startAgent(n) }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
        let config = try ClusterConfig.load(path: cluster.clusterFile)
        // On an idle cluster, the pure router's choice for each job must be what the live system does.
        let cases: [(String, String)] = [
            ("big", "{name: big, kind: sleep, vram: 26GiB, spec: {duration_s: 0.2}}"),
            ("medium", "{name: medium, kind: sleep, vram: 14GiB, spec: {duration_s: 0.2}}"),
            ("image", "{name: image, kind: image, vram: 8GiB, spec: {prompt: a lighthouse at dusk}}"),
            ("cpu", "{name: cpu, kind: sleep, spec: {duration_s: 0.1}}"),
        ]
        var lastDone = Date().timeIntervalSince1970
        for (name, job) in cases {
            // Wait until readings taken after the previous job ended show idle GPUs, as the prediction assumes.
            try waitUntil("GPUs idle", timeout: 30) {
                let r = try cluster.hydra(["nodes", "--json"])
                let v = try JSONCoding.decode(JSONValue.self, from: r.stdout)
                return v["nodes"]?.arrayValue?.allSatisfy { n in
                    (n["last_seen"]?.doubleValue ?? 0) > lastDone + 0.6 && n["running"]?.arrayValue?.isEmpty == true
                        && (n["inventory"]?["gpus"]?.arrayValue ?? []).allSatisfy { $0["memory_used_bytes"]?.doubleValue == 0 }
                } == true
            }
            let batch = try cluster.submit("name: \(name)\njobs:\n  - \(job)\n")
            let row = try XCTUnwrap(try cluster.store().jobs(.init(batchID: batch)).first)
            var live: [String: ClusterSnapshot.NodeLive] = [:]
            for n in ["hydra-ai", "hydra-compute", "hydra-storage"] {
                let sim = SimulatedGPUs(node: n, gpus: config.node(named: n)!.gpus)
                live[n] = .init(up: true, inventory: sim.inventory())
            }
            let predicted = Router.place(pending: [RouterJob(row: row)], snapshot: ClusterSnapshot.build(config: config, live: live, running: []),
                                         now: Date()).assignments.first
            try waitUntil("\(name) dispatched", timeout: 30) { try cluster.store().job(row.id)?.node != nil }
            let placed = try XCTUnwrap(try cluster.store().job(row.id))
            XCTAssertEqual(placed.node, predicted?.node, name)
            XCTAssertEqual(placed.gpuUUIDs, predicted?.gpuUUIDs ?? [], name)
            // The image job has no ComfyUI executor on these agents: it fails, but only after landing where ComfyUI lives.
            try waitUntil("\(name) finished", timeout: 30) { try cluster.summary(batch).isDone }
            lastDone = Date().timeIntervalSince1970
        }
        let stats = try cluster.store().runtimeStats()
        XCTAssertTrue(stats.contains { $0.kind == "sleep" && $0.gpuModel == "NVIDIA GeForce RTX 5090" && $0.n == 2 && abs($0.meanS - 0.2) < 0.1 }, "\(stats)")
        XCTAssertTrue(stats.contains { $0.kind == "sleep" && $0.gpuModel == "cpu" }, "\(stats)")
    }
}
