import Foundation
import XCTest
import HydraWire
import HydraIO
import HydraStore

/// Redis ACL users, the read-only PostgreSQL role, and secrets that stay secret.
final class SecurityTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() {
        cluster?.stopAll()
        if testRun?.hasSucceeded == false, let c = cluster { print(c.logs()) }
    }

    let batchYAML = """
    name: acl-batch
    jobs:
      - {name: gpu, kind: sleep, count: 12, vram: 4GiB, spec: {duration_s: 0.2}}
      - {name: cpu, kind: sleep, count: 6, spec: {duration_s: 0.1}}
    """

    func runBatch() throws -> String {
        try cluster.startCoordinator()
        for n in Cluster.nodeNames { try cluster.startAgent(n) }
        try waitUntil("3 nodes up", timeout: 30) { cluster.nodeCount() == 3 }
        let batch = try cluster.submit(batchYAML)
        try waitUntil("batch done", timeout: 90, poll: 0.3) { (try? cluster.summary(batch).isDone) ?? false }
        let s = try cluster.summary(batch)
        XCTAssertEqual(s.count(.succeeded), s.total, "\(s.byState)")
        return batch
    }

    func testAgentsAndCoordinatorRunAsTheirOwnACLUsers() throws {
        try cluster.enableACL()
        _ = try runBatch()
        // They really connected as those users: Redis lists each one's client connections.
        let admin = try RedisConnection(url: cluster.redisURL)
        let clients = try admin.run(["CLIENT", "LIST"]).string ?? ""
        for u in [RedisACL.coordinatorUser] + Cluster.nodeNames.map(RedisACL.agentUser) {
            XCTAssertTrue(clients.contains("user=\(u) "), "no connection of \(u) in CLIENT LIST")
        }
        for n in ["coordinator"] + Cluster.nodeNames {
            XCTAssertFalse(cluster.log(n).contains("NOPERM"), "\(n) was refused a command it needs:\n\(cluster.log(n).suffix(2000))")
        }
    }

    /// A cluster upgraded without giving the coordinator's user its new commands (README "Security",
    /// upgrading) keeps working: heartbeats are read one per round trip, and the log says what to run.
    func testACoordinatorUserFromBeforeTheHeartbeatScriptStillRunsTheCluster() throws {
        try cluster.enableACL()
        let admin = try RedisConnection(url: cluster.redisURL)
        try admin.run(["ACL", "SETUSER", RedisACL.coordinatorUser, "-eval", "-hstrlen", "-xpending", "-xinfo|groups"])
        _ = try runBatch()
        let log = cluster.log("coordinator")
        XCTAssertTrue(log.contains("ACL SETUSER hydra-coordinator +eval +hstrlen +xpending +xinfo|groups"), "the log names the upgrade step")
        XCTAssertEqual(log.components(separatedBy: "refused the heartbeat read script").count - 1, 1, "once a minute, not on every read")
    }

    func testAgentUserCannotReadAnotherNodesStreamOrWriteJobs() throws {
        try cluster.enableACL()
        var u = URLComponents(string: cluster.redisURL)!
        u.user = RedisACL.agentUser("hydra-ai")
        let agent = RedisConnection(endpoint: try RedisEndpoint(url: u.string!).withCredentials(user: nil, passwordFile: "\(cluster.aclDir!)/hydra-agent-hydra-ai.password"))
        func refused(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            let r = try agent.command(args)
            guard case .error(let e) = r, e.hasPrefix("NOPERM") else { return XCTFail("\(args) was not refused: \(r)", file: file, line: line) }
        }
        func allowed(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws {
            if case .error(let e) = try agent.command(args) { XCTFail("\(args) refused: \(e)", file: file, line: line) }
        }
        try allowed(["XGROUP", "CREATE", RedisKeys.jobs("hydra-ai"), "agents", "0", "MKSTREAM"])
        try allowed(["XREADGROUP", "GROUP", "agents", "a", "COUNT", "1", "STREAMS", RedisKeys.jobs("hydra-ai"), ">"])
        try allowed(["XADD", RedisKeys.results("hydra-ai"), "*", "result", "{}"])
        try allowed(["XADD", RedisKeys.deadLetter("hydra-ai"), "*", "reason", "x"])
        try allowed(["HSET", RedisKeys.heartbeat("hydra-ai"), "state", "ready"])
        try allowed(["SADD", RedisKeys.nodes, "hydra-ai"])
        // Another node's stream: neither read nor claimed.
        try refused(["XREADGROUP", "GROUP", "agents", "a", "COUNT", "1", "STREAMS", RedisKeys.jobs("hydra-compute"), ">"])
        try refused(["XAUTOCLAIM", RedisKeys.jobs("hydra-compute"), "agents", "a", "0", "0-0"])
        try refused(["XRANGE", RedisKeys.jobs("hydra-compute"), "-", "+"])
        // Nothing of another node, nor anything shared but the node set: no other node's jobs, results or
        // heartbeat, and no shared stream it could trim to nothing or block with the maximum id.
        try refused(["XADD", RedisKeys.jobs("hydra-compute"), "*", "type", "job", "body", "{}"])
        try refused(["XADD", RedisKeys.results("hydra-compute"), "*", "result", "{}"])
        try refused(["XADD", RedisKeys.deadLetter, "MAXLEN", "0", "*", "reason", "x"])
        try refused(["XADD", "hydra:results", "MAXLEN", "0", "*", "result", "{}"])
        try refused(["XTRIM", RedisKeys.results("hydra-compute"), "MAXLEN", "0"])
        try refused(["HSET", RedisKeys.heartbeat("hydra-compute"), "state", "ready"])
        try refused(["DEL", RedisKeys.results("hydra-compute")])
        try refused(["SREM", RedisKeys.nodes, "hydra-compute"])
        try refused(["FLUSHDB"])
        try refused(["KEYS", "*"])
        // And the coordinator's user cannot reconfigure or wipe the server.
        var c = URLComponents(string: cluster.redisURL)!
        c.user = RedisACL.coordinatorUser
        let coord = RedisConnection(endpoint: try RedisEndpoint(url: c.string!).withCredentials(user: nil, passwordFile: "\(cluster.aclDir!)/hydra-coordinator.password"))
        for args in [["FLUSHALL"], ["CONFIG", "GET", "*"], ["ACL", "LIST"], ["SET", "other:key", "x"]] {
            guard case .error(let e) = try coord.command(args), e.hasPrefix("NOPERM") else { XCTFail("coordinator may \(args)"); continue }
        }
        // A wrong password is refused at connect, and the message does not carry it.
        let wrong = cluster.dir.appendingPathComponent("wrong.password").path
        try "not-the-password-\(UUID().uuidString)\n".write(toFile: wrong, atomically: true, encoding: .utf8)
        chmod(wrong, 0o600)
        let bad = RedisConnection(endpoint: try RedisEndpoint(url: u.string!).withCredentials(user: nil, passwordFile: wrong))
        XCTAssertThrowsError(try bad.command(["PING"])) { e in
            XCTAssertTrue("\(e)".contains("refused the credentials"), "\(e)")
            XCTAssertFalse("\(e)".contains("not-the-password"), "\(e)")
        }
    }

    func testACLLinesAndPasswordFiles() throws {
        let d = cluster.dir.appendingPathComponent("acl-print").path
        let r = try cluster.hydra(["acl", "--nodes", "hydra-ai,hydra-compute", "--password-dir", d])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 3)
        XCTAssertTrue(lines[0].hasPrefix("user hydra-agent-hydra-ai reset on #"), String(lines[0]))
        XCTAssertTrue(lines[0].contains(" ~hydra:node:hydra-ai:* resetchannels -@all +xreadgroup +xack +xdel +xautoclaim +xgroup|create +xadd +hset +expire +del +ping +select +auth (~hydra:nodes +sadd)"), String(lines[0]))
        XCTAssertTrue(lines[2].hasPrefix("user hydra-coordinator reset on #"))
        for f in ["hydra-agent-hydra-ai", "hydra-agent-hydra-compute", "hydra-coordinator"] {
            let path = "\(d)/\(f).password"
            let attrs = try FileManager.default.attributesOfItem(atPath: path)
            XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600, path)
            let pw = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertFalse(r.stdout.contains(pw) || r.stderr.contains(pw), "a password was printed")
            XCTAssertTrue(r.stdout.contains("#" + RedisACL.sha256Hex(pw)))
        }
        // Running it again keeps the passwords (so --apply is idempotent).
        let again = try cluster.hydra(["acl", "--nodes", "hydra-ai,hydra-compute", "--password-dir", d])
        XCTAssertEqual(again.stdout, r.stdout)
        let bad = try cluster.hydra(["acl", "--nodes", "hydra-*", "--password-dir", d])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("cannot be used in a Redis ACL key pattern"), bad.stderr)
    }

    func testReadOnlyPostgreSQLRoleServesStatusCommandsAndCannotSubmit() throws {
        try cluster.startCoordinator()
        try cluster.startAgent("hydra-storage")
        try waitUntil("node up", timeout: 30) { cluster.nodeCount() == 1 }
        let batch = try cluster.submit("name: ro\njobs:\n  - {name: a, kind: sleep, count: 3, spec: {duration_s: 0.05}}\n")
        try waitUntil("done", timeout: 30) { try cluster.summary(batch).isDone }
        let dbName = URLComponents(string: cluster.dbURL)!.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        let sql = try cluster.hydra(["acl", "--postgres", "--database", dbName])
        XCTAssertEqual(sql.status, 0, sql.stderr)
        XCTAssertTrue(sql.stdout.contains("GRANT SELECT ON ALL TABLES IN SCHEMA public TO hydra_readonly"), sql.stdout)
        // Run as the server's superuser (roles are created by an administrator, not by Hydra's own role).
        var su = URLComponents(string: cluster.dbURL)!
        su.user = "postgres"
        try PGConnection(url: su.string!).exec(sql.stdout)
        var ro = URLComponents(string: cluster.dbURL)!
        ro.user = "hydra_readonly"
        var env = cluster.environment
        env["HYDRA_DATABASE_URL"] = ro.string!
        for args in [["status"], ["status", batch, "--json"], ["jobs", "--json"], ["nodes"]] {
            let r = try run(args, env: env)
            XCTAssertEqual(r.status, 0, "hydra \(args.joined(separator: " ")) as the read-only role: \(r.stderr)")
        }
        let f = cluster.dir.appendingPathComponent("ro.yaml").path
        try "name: nope\njobs:\n  - {name: a, kind: sleep}\n".write(toFile: f, atomically: true, encoding: .utf8)
        let s = try run(["submit", f, "--cluster", cluster.clusterFile], env: env)
        XCTAssertEqual(s.status, 1, s.stderr)
        XCTAssertTrue(s.stderr.hasPrefix("hydra: ") && s.stderr.contains("permission denied"), s.stderr)
        XCTAssertEqual(s.stderr.split(separator: "\n").count, 1, "one clean line: \(s.stderr)")
        XCTAssertEqual(try PGConnection(url: cluster.dbURL).exec("SELECT count(*) AS n FROM batches")[0].int("n"), 1)
    }

    /// Runs the CLI with another environment.
    func run(_ args: [String], env: [String: String]) throws -> Cluster.Output {
        let p = Process()
        p.executableURL = cluster.binDir.appendingPathComponent("hydra")
        p.arguments = args
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Cluster.Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// The HMAC key and every Redis password stay out of logs, metrics, command lines, environments and errors.
    func testNoSecretInLogsMetricsArgvOrErrors() throws {
        try cluster.enableACL()
        _ = try runBatch()
        // Provoke errors that involve the secrets: a wrong password and a key file others may read.
        let wrongPassword = "wrong-\(UUID().uuidString)"
        let wrong = cluster.dir.appendingPathComponent("wrong.password").path
        try (wrongPassword + "\n").write(toFile: wrong, atomically: true, encoding: .utf8)
        chmod(wrong, 0o600)
        var u = URLComponents(string: cluster.redisURL)!
        u.user = RedisACL.agentUser("hydra-ai")
        try cluster.start("bad-agent", binary: "hydra-agent", ["run", "--node", "hydra-ai", "--cluster", cluster.clusterFile, "--simulate",
                                                                "--listen", "127.0.0.1:0", "--output-dir", cluster.dir.appendingPathComponent("out2").path,
                                                                "--hmac-key", cluster.keyFile, "--redis-password-file", wrong],
                          env: ["HYDRA_REDIS_URL": u.string!])
        try waitUntil("bad agent complains", timeout: 30) { cluster.log("bad-agent").contains("refused the credentials") }
        let leaky = cluster.dir.appendingPathComponent("leaky.key").path
        try FileManager.default.copyItem(atPath: cluster.keyFile, toPath: leaky)
        chmod(leaky, 0o644)
        let k = try cluster.hydra(["coordinator", "--hmac-key", leaky, "--cluster", cluster.clusterFile])
        XCTAssertEqual(k.status, 2)
        XCTAssertTrue(k.stderr.contains("readable by others"), k.stderr)

        var secrets = [("HMAC key", try String(contentsOfFile: cluster.keyFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)),
                       ("wrong password", wrongPassword)]
        for user in [RedisACL.coordinatorUser] + Cluster.nodeNames.map(RedisACL.agentUser) { secrets.append(("password of \(user)", try cluster.password(user))) }

        var haystacks: [(String, String)] = []
        for f in try FileManager.default.contentsOfDirectory(atPath: cluster.dir.path) where f.hasSuffix(".log") || f.hasSuffix(".out") || f.hasSuffix(".err") {
            haystacks.append((f, (try? String(contentsOfFile: cluster.dir.appendingPathComponent(f).path, encoding: .utf8)) ?? ""))
        }
        haystacks.append(("stdout/stderr of the leaky-key run", k.stdout + k.stderr))
        for (name, p) in cluster.processes where p.isRunning {
            for what in ["cmdline", "environ"] {
                let data = FileManager.default.contents(atPath: "/proc/\(p.processIdentifier)/\(what)") ?? Data()
                haystacks.append(("/proc/\(p.processIdentifier)/\(what) (\(name))", String(decoding: data.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)))
            }
        }
        // Metrics (labels included) of every agent and the coordinator.
        for name in ["coordinator"] + Cluster.nodeNames {
            let log = cluster.log(name)
            guard let r = log.range(of: #"(listen|metrics)=127\.0\.0\.1:\d+"#, options: .regularExpression) else { XCTFail("no address in \(name)'s log"); continue }
            let port = log[r].split(separator: ":").last!
            let body = (try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8)) ?? ""
            XCTAssertTrue(body.contains("# TYPE"), "metrics of \(name)")
            haystacks.append(("metrics of \(name)", body))
        }
        XCTAssertGreaterThan(haystacks.count, 10)
        for (what, secret) in secrets {
            XCTAssertGreaterThanOrEqual(secret.count, 32, what)
            for (where_, text) in haystacks {
                XCTAssertFalse(text.contains(secret), "the \(what) appears in \(where_)")
            }
        }
    }
}
