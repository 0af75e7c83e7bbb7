import ArgumentParser
import Foundation
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraCoordinator
import HydraPipeline

struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Create or update the PostgreSQL schema (safe to run twice).")
    @OptionGroup var conn: ConnectionOptions

    func run() throws {
        let db = PGConnection(url: conn.database)
        do {
            let applied = try Migrations.migrate(db)
            print(applied.isEmpty ? "schema is up to date (version \(Migrations.latest))"
                                  : "applied migrations \(applied.map(String.init).joined(separator: ", ")); schema at version \(Migrations.latest)")
        } catch { fail("\(error)") }
    }
}

struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator service (places jobs, dispatches them, applies results).",
        discussion: """
        One coordinator leads; more can run as standbys. Leadership is a lease in PostgreSQL with a fencing epoch: a standby \
        takes over at once when the leader's process dies, and within --leader-ttl seconds when its host dies or is cut off; \
        the old leader's late writes are refused by the epoch.
        """
    )
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var clusterOption: ClusterOption
    @Option(name: .customLong("metrics-listen"), help: "Address for /metrics and /healthz (host:port; default: $HYDRA_METRICS_LISTEN, else 127.0.0.1:9100).")
    var metricsListen: String?
    @Option(help: "Seconds a dispatched job may go unclaimed by a live agent before it is requeued.") var lease = 10.0
    @Option(name: .customLong("node-timeout"), help: "Seconds without a heartbeat after which a node is dead and its jobs are requeued.")
    var nodeTimeout = 5.0
    @Option(name: .customLong("leader-ttl"), help: "Seconds a leader may go without renewing its lease before a standby takes over.")
    var leaderTTL = 5.0
    @Option(help: "Placement policy: hydra (default), seed-static, least-loaded, random.") var policy = "hydra"
    @Flag(name: .customLong("share-busy-gpus"),
          help: "Let jobs below the urgent priority start beside a running job on its GPU (hydra waits for a busy GPU by default).")
    var shareBusyGPUs = false
    @Flag(name: .customLong("no-gang-ring"),
          help: "Never start a 2-GPU gang beside another on a node with an odd number of GPUs (hydra rings them where that does more work at once).")
    var noGangRing = false
    @OptionGroup var signing: SigningOptions
    @OptionGroup var redisAuth: RedisAuthOptions
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warn, error or critical (or HYDRA_LOG_LEVEL).") var logLevel: String?
    @OptionGroup var console: ConsoleOptions
    @OptionGroup var pipelineTrigger: PipelineTriggerOptions

    func run() throws {
        do { try Log.configure(flag: logLevel) } catch { throw ValidationError("\(error)") }
        if let m = OptionCheck.first(OptionCheck.seconds(lease, "--lease", min: 0, max: 86_400),
                                     OptionCheck.seconds(nodeTimeout, "--node-timeout", min: 0, max: 86_400),
                                     OptionCheck.seconds(leaderTTL, "--leader-ttl", min: 1, minIncluded: true, max: 86_400)) {
            throw ValidationError(m)
        }
        guard var routerPolicy = RouterPolicy.named(policy) else {
            throw ValidationError("unknown --policy '\(policy)' (hydra, seed-static, least-loaded, random)")
        }
        if shareBusyGPUs { routerPolicy.sharesBusyGPUs = true }
        if noGangRing { routerPolicy.gangRingMinGain = 0 }
        let cluster = try clusterOption.load()
        let redis = try redisAuth.endpoint(url: conn.redis)
        let keys = try signing.load()
        if keys == nil { Log(component: "coordinator").warning("no HMAC key (--hmac-key or the hmac.key credential): envelopes go unsigned") }
        if cluster == nil {
            Log(component: "coordinator").warning("no cluster file (--cluster or HYDRA_CLUSTER): any node that registers itself gets jobs; use one in production")
        }
        var settings = CoordinatorSettings(redis: redis, databaseURL: conn.database, cluster: cluster, leaseSeconds: lease, keys: keys,
                                           nodeTimeoutSeconds: nodeTimeout, policy: routerPolicy)
        settings.leaderTTLSeconds = leaderTTL
        let service = CoordinatorService(settings: settings)
        let (host, port) = try MiniHTTPServer.parseListen(metricsListen ?? EnvironmentSettings.value(EnvironmentSettings.metricsListen) ?? "127.0.0.1:9100")
        let trigger = try pipelineTrigger.make(databaseURL: conn.database)
        let server = MiniHTTPServer(host: host, port: port, limits: .fromEnvironment(),
                                    onReject: MiniHTTPServer.rejectionCounter(service.metrics.registry, server: "metrics")) { req in
            switch req.path {
            case "/metrics": return .text(service.metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
            case "/healthz": return .text("ok\n")
            case PipelineTrigger.path where trigger != nil: return trigger!.handle(req)
            default: return .text("not found\n", status: 404)
            }
        }
        let bound: Int
        do { bound = try server.start() } catch { fail("\(error)") }
        let consoleServer = try console.start(databaseURL: conn.database,
                                              listen: console.consoleListen ?? EnvironmentSettings.value(EnvironmentSettings.consoleListen),
                                              registry: service.metrics.registry)
        let services = ServiceGroup(services: [service])
        services.start()
        Log(component: "coordinator").info("coordinator started", [("metrics", "\(host):\(bound)"), ("redis", RedisEndpoint.redacted(conn.redis)), ("redis_user", redis.user ?? "default"),
                                                                    ("database", PGConnection.redacted(conn.database))])
        SystemdNotify.ready(status: "metrics on \(host):\(bound)")
        waitForTermination(orEndOf: services)
        SystemdNotify.stopping()
        services.stop()
        server.stop()
        consoleServer?.stop()
        // A clean stop releases the lease once the leader's loops have ended (a standby then leads at
        // once). A statement stuck on a dead server must not hold the exit: PostgreSQL rolls back what a
        // closed connection held, and the epoch fences it off anyway.
        services.wait(timeout: 2)
        // The coordinator retries every failure itself; a group that failed is a bug, said as such.
        if let e = services.error { fail("\(e)") }
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen", abstract: "Write a new random cluster key, or a node's own key derived from it (mode 0600).",
        discussion: """
        The coordinator holds the cluster key. Each agent holds only its node's key (`hydra keygen --node NAME \
        --cluster-key cluster.key NAME.key`), with which it checks its envelopes and signs its results and heartbeats:
        a compromised node cannot sign for another. Rotation: write a new cluster key, give each agent its new node key
        as --hmac-key and the old one as --hmac-key-previous, then restart the coordinator with both.
        """)
    @Argument(help: "Where to write the key; an existing file is kept unless --force.") var file: String
    @Flag(help: "Overwrite an existing file.") var force = false
    @Option(help: "Write this node's key (derived from --cluster-key) instead of a new cluster key.") var node: String?
    @Option(name: .customLong("cluster-key"), help: "The cluster key file, with --node.") var clusterKey: String?

    func validate() throws {
        if (node == nil) != (clusterKey == nil) { throw ValidationError("--node and --cluster-key go together") }
        if let node { try RedisACL.checkNodeName(node) }
    }

    func run() throws {
        var text = SigningKeys.generateHex() + "\n"
        if let node, let clusterKey {
            do { text = try SigningKeys(current: SigningKeys.readKey(clusterKey)).nodeKeyFile(node: node) } catch { invalid("\(error)") }
        }
        let flags = O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL)
        let fd = open(file, flags, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST { invalid("\(file) exists (use --force to replace it)") }
            fail("cannot write \(file): \(String(cString: strerror(errno)))")
        }
        fchmod(fd, 0o600)
        _ = text.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        print(node.map { "wrote the key of node \($0) to \(file)" } ?? "wrote a new HMAC key to \(file)")
    }
}
