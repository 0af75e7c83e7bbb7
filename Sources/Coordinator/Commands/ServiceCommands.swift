import ArgumentParser
import Foundation
import Shared

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
        discussion: "One coordinator leads; more can run as standbys and take over through a PostgreSQL advisory lock."
    )
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var clusterOption: ClusterOption
    @Option(name: .customLong("metrics-listen"), help: "Address for /metrics and /healthz (host:port; default: $HYDRA_METRICS_LISTEN, else 127.0.0.1:9100).")
    var metricsListen: String?
    @Option(help: "Seconds a dispatched job may go unclaimed by a live agent before it is requeued.") var lease = 10.0
    @Option(name: .customLong("node-timeout"), help: "Seconds without a heartbeat after which a node is dead and its jobs are requeued.")
    var nodeTimeout = 5.0
    @Option(help: "Placement policy: hydra (default), seed-static, least-loaded, random.") var policy = "hydra"
    @OptionGroup var signing: SigningOptions
    @OptionGroup var redisAuth: RedisAuthOptions
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warn, error or critical (or HYDRA_LOG_LEVEL).") var logLevel: String?
    @OptionGroup var console: ConsoleOptions
    @OptionGroup var pipelineTrigger: PipelineTriggerOptions

    func run() throws {
        do { try Log.configure(flag: logLevel) } catch { throw ValidationError("\(error)") }
        guard lease > 0 else { throw ValidationError("--lease must be > 0") }
        guard let routerPolicy = RouterPolicy.named(policy) else {
            throw ValidationError("unknown --policy '\(policy)' (hydra, seed-static, least-loaded, random)")
        }
        let cluster = try clusterOption.load()
        let redis = try redisAuth.endpoint(url: conn.redis)
        let keys = try signing.load()
        if keys == nil { Log(component: "coordinator").warning("no HMAC key (--hmac-key or the hmac.key credential): envelopes go unsigned") }
        let service = CoordinatorService(settings: CoordinatorSettings(redis: redis, databaseURL: conn.database,
                                                                      cluster: cluster, leaseSeconds: lease, keys: keys,
                                                                      nodeTimeoutSeconds: nodeTimeout, policy: routerPolicy))
        let (host, port) = try MiniHTTPServer.parseListen(metricsListen ?? EnvironmentSettings.value(EnvironmentSettings.metricsListen) ?? "127.0.0.1:9100")
        let trigger = try pipelineTrigger.make(databaseURL: conn.database)
        let server = MiniHTTPServer(host: host, port: port) { req in
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
                                              listen: console.consoleListen ?? EnvironmentSettings.value(EnvironmentSettings.consoleListen))
        let t = Thread { service.run() }
        t.start()
        Log(component: "coordinator").info("coordinator started", [("metrics", "\(host):\(bound)"), ("redis", RedisEndpoint.redacted(conn.redis)), ("redis_user", redis.user ?? "default"),
                                                                    ("database", PGConnection.redacted(conn.database))])
        SystemdNotify.ready(status: "metrics on \(host):\(bound)")
        waitForTermination()
        SystemdNotify.stopping()
        service.stop()
        server.stop()
        consoleServer?.stop()
        Thread.sleep(forTimeInterval: 0.3)
    }
}

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen", abstract: "Write a new random HMAC key for envelope signing (mode 0600).",
        discussion: "Rotation: give agents the new key as --hmac-key and the old one as --hmac-key-previous, then the coordinator.")
    @Argument(help: "Where to write the key; an existing file is kept unless --force.") var file: String
    @Flag(help: "Overwrite an existing file.") var force = false

    func run() throws {
        let flags = O_WRONLY | O_CREAT | (force ? O_TRUNC : O_EXCL)
        let fd = open(file, flags, 0o600)
        guard fd >= 0 else {
            if errno == EEXIST { invalid("\(file) exists (use --force to replace it)") }
            fail("cannot write \(file): \(String(cString: strerror(errno)))")
        }
        fchmod(fd, 0o600)
        let key = SigningKeys.generateHex() + "\n"
        _ = key.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        print("wrote a new HMAC key to \(file)")
    }
}
