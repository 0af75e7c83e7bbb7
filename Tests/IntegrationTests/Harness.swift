import Foundation
import XCTest
import HydraCore
import HydraIO
import HydraStore

/// A private Hydra cluster for one test: its own PostgreSQL database and Redis DB
/// on the servers `make test` started, real `hydra` and `hydra-agent` processes.
final class Cluster {
    let dbURL: String
    let redisURL: String
    let dir: URL
    let binDir: URL
    private(set) var processes: [String: Process] = [:]
    let clusterFile: String
    let keyFile: String

    static let referenceCluster = """
    headroom: 0
    nodes:
      - name: hydra-ai
        services: [tabbyapi]
        gpus:
          - {model: "NVIDIA GeForce RTX 5090", memory: 32GiB, weight: 10}
          - {model: "NVIDIA GeForce RTX 4090", memory: 24GiB, weight: 8}
        command_allowlist: ["/bin/echo {text}", "/bin/echo train-lora {path}", /bin/false, "/bin/sleep {int}"]
      - name: hydra-compute
        services: [comfyui, ollama, gpt-sovits]
        gpus:
          - {model: "NVIDIA GeForce RTX 5070 Ti", memory: 16GiB, weight: 6}
          - {model: "NVIDIA GeForce RTX 3060", memory: 12GiB, weight: 3}
        command_allowlist: ["/bin/echo {text}", "/bin/echo train-lora {path}", /bin/false, "/bin/sleep {int}"]
      - name: hydra-storage
        services: [scorer]
        gpus: []
        command_allowlist: ["/bin/echo {text}", "/bin/echo train-lora {path}", /bin/false, "/bin/sleep {int}"]
    """

    init(file: StaticString = #filePath) throws {
        let env = ProcessInfo.processInfo.environment
        guard let baseDB = env["HYDRA_TEST_DATABASE_URL"], let baseRedis = env["HYDRA_TEST_REDIS_URL"] else {
            throw XCTSkip("integration tests need HYDRA_TEST_DATABASE_URL and HYDRA_TEST_REDIS_URL: run `make test`")
        }
        // A fresh database per test: nothing leaks between tests, and a failure leaves evidence behind.
        let name = "hydra_test_\(UUID().uuidString.prefix(8).lowercased())"
        dbURL = try PGConnection.createDatabase(name, adminURL: baseDB)
        let redisDB = Int.random(in: 1...63)
        var rc = URLComponents(string: baseRedis)!
        rc.path = "/\(redisDB)"
        redisURL = rc.string!
        let r = try RedisConnection(url: redisURL)
        try r.run(["FLUSHDB"])

        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-it-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        binDir = try Self.findBinaries()
        clusterFile = dir.appendingPathComponent("cluster.yaml").path
        try Self.referenceCluster.write(toFile: clusterFile, atomically: true, encoding: .utf8)
        keyFile = dir.appendingPathComponent("hmac.key").path
        let k = try hydra(["keygen", keyFile])
        guard k.status == 0 else { throw TestFailure("keygen failed: \(k.stderr)") }
        let m = try hydra(["migrate"])
        guard m.status == 0 else { throw TestFailure("migrate failed: \(m.stderr)") }
    }

    static func findBinaries() throws -> URL {
        if let d = ProcessInfo.processInfo.environment["HYDRA_BIN_DIR"] { return URL(fileURLWithPath: d) }
        var candidates: [URL] = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
        candidates.append(Bundle.main.bundleURL)
        candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
        for c in candidates where FileManager.default.isExecutableFile(atPath: c.appendingPathComponent("hydra").path) { return c }
        throw TestFailure("cannot find the hydra binaries next to the test bundle (\(candidates.map(\.path))); set HYDRA_BIN_DIR")
    }

    var environment: [String: String] {
        var e = ProcessInfo.processInfo.environment
        e["HYDRA_DATABASE_URL"] = dbURL
        e["HYDRA_REDIS_URL"] = redisURL
        e["HYDRA_LOG_LEVEL"] = ProcessInfo.processInfo.environment["HYDRA_TEST_LOG_LEVEL"] ?? "info"
        return e
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    /// Runs the CLI to completion.
    @discardableResult
    func hydra(_ args: [String], binary: String = "hydra") throws -> Output {
        let p = Process()
        p.executableURL = binDir.appendingPathComponent(binary)
        p.arguments = args
        p.environment = environment
        let out = dir.appendingPathComponent("cli-\(UUID().uuidString.prefix(6)).out")
        let err = dir.appendingPathComponent("cli-\(UUID().uuidString.prefix(6)).err")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
                      stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    /// Starts a long-running process; its log goes to `<dir>/<name>.log`.
    @discardableResult
    func start(_ name: String, binary: String, _ args: [String], env: [String: String] = [:]) throws -> Process {
        let p = try Process.startLogged(binDir.appendingPathComponent(binary), args, environment: environment.merging(env) { $1 },
                                        log: dir.appendingPathComponent("\(name).log"))
        processes[name] = p
        return p
    }

    func startCoordinator(lease: Double = 3, extra: [String] = []) throws {
        let (env, auth) = redisAuth(RedisACL.coordinatorUser)
        try start("coordinator", binary: "hydra", ["coordinator", "--cluster", clusterFile, "--metrics-listen", "127.0.0.1:0",
                                                    "--lease", String(lease), "--hmac-key", keyFile] + auth + extra, env: env)
    }

    func startAgent(_ node: String, extra: [String] = []) throws {
        let (env, auth) = redisAuth(RedisACL.agentUser(node))
        try start(node, binary: "hydra-agent", ["run", "--node", node, "--cluster", clusterFile, "--simulate",
                                                "--listen", "127.0.0.1:0", "--output-dir", dir.appendingPathComponent("out").path,
                                                "--heartbeat-interval", "0.5", "--hmac-key", try nodeKeyFile(node)] + auth + extra, env: env)
    }

    /// The node's own key (derived from the cluster key), as production installs give it to each agent.
    func nodeKeyFile(_ node: String) throws -> String {
        let path = dir.appendingPathComponent("\(node).key").path
        if FileManager.default.fileExists(atPath: path) { return path }
        let r = try hydra(["keygen", "--node", node, "--cluster-key", keyFile, path])
        guard r.status == 0 else { throw TestFailure("keygen --node failed: \(r.stderr)") }
        return path
    }

    // MARK: Redis ACL users

    /// Where `hydra acl` wrote the passwords, once `enableACL()` ran: from then on the coordinator
    /// and the agents connect as their own Redis users.
    private(set) var aclDir: String?
    static let nodeNames = ["hydra-ai", "hydra-compute", "hydra-storage"]

    /// Creates the cluster's Redis users on the test server (`hydra acl --apply` over the admin URL).
    func enableACL() throws {
        let d = dir.appendingPathComponent("redis-acl").path
        let r = try hydra(["acl", "--nodes", Self.nodeNames.joined(separator: ","), "--password-dir", d, "--apply"])
        guard r.status == 0 else { throw TestFailure("hydra acl --apply failed (\(r.status)): \(r.stderr)") }
        aclDir = d
    }

    /// The URL (user, no password) and flags a process uses for its ACL user; nothing before enableACL().
    func redisAuth(_ user: String) -> ([String: String], [String]) {
        guard let aclDir else { return ([:], []) }
        var u = URLComponents(string: redisURL)!
        u.user = user
        return (["HYDRA_REDIS_URL": u.string!], ["--redis-password-file", "\(aclDir)/\(user).password"])
    }

    func password(_ user: String) throws -> String {
        try String(contentsOfFile: "\(aclDir ?? "")/\(user).password", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Removes the users again: they are server-wide, unlike the test's database and Redis DB.
    func dropACLUsers() {
        guard aclDir != nil, let r = try? RedisConnection(url: redisURL) else { return }
        _ = try? r.command(["ACL", "DELUSER", RedisACL.coordinatorUser] + Self.nodeNames.map(RedisACL.agentUser))
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: dir.appendingPathComponent("\(name).log"), encoding: .utf8)) ?? ""
    }

    func kill(_ name: String, signal: Int32 = SIGKILL) {
        guard let p = processes[name], p.isRunning else { return }
        Foundation.kill(p.processIdentifier, signal)
    }

    func stopAll() {
        for (_, p) in processes where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(10)
        for (_, p) in processes {
            while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            if p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL) }
        }
        dropACLUsers()
    }

    /// Everything the processes printed, for failure messages.
    func logs() -> String {
        processes.keys.sorted().map { "--- \($0) ---\n" + String(log($0).suffix(3000)) }.joined(separator: "\n")
    }

    func store() -> JobStore { JobStore(db: PGConnection(url: dbURL)) }

    func submit(_ yaml: String) throws -> String {
        let f = dir.appendingPathComponent("batch-\(UUID().uuidString.prefix(6)).yaml").path
        try yaml.write(toFile: f, atomically: true, encoding: .utf8)
        let r = try hydra(["submit", f, "--cluster", clusterFile])
        guard r.status == 0 else { throw TestFailure("submit failed (\(r.status)): \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func summary(_ batch: String) throws -> BatchSummary {
        let r = try hydra(["status", batch, "--json"])
        guard r.status == 0 else { throw TestFailure("status failed: \(r.stderr)") }
        return try JSONDecoder().decode(BatchSummary.self, from: Data(r.stdout.utf8))
    }

    /// A coordinator and one agent, once the coordinator has recorded the node.
    func startWithOneNode(_ node: String, coordinator: [String] = [], agent: [String] = []) throws {
        try startCoordinator(extra: coordinator)
        try startAgent(node, extra: agent)
        try waitUntil("node up", timeout: 30) { nodeCount() == 1 }
    }

    func nodeCount() -> Int {
        guard let r = try? hydra(["nodes", "--json"]), r.status == 0,
              let v = try? JSONCoding.decode(JSONValue.self, from: r.stdout) else { return 0 }
        return v["nodes"]?.arrayValue?.filter { $0["up"]?.boolValue == true }.count ?? 0
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Polls `condition` until it holds or the deadline passes (no fixed sleeps as synchronisation).
func waitUntil(_ what: String, timeout: Double = 60, poll: Double = 0.1, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return }
        Thread.sleep(forTimeInterval: poll)
    }
    throw TestFailure("timed out after \(timeout) s waiting for: \(what)")
}
