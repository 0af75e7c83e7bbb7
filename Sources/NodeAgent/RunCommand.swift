import ArgumentParser
import Foundation
import HydraCore
import HydraWire
import HydraIO
import HydraExecutors

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the agent for one node (the systemd unit's command).",
        discussion: """
        GPUs come from nvidia-smi (--nvidia-smi), or are simulated from the node's entry in the
        cluster file (--simulate). A node without NVIDIA GPUs runs with neither and takes CPU-only jobs.
        SIGTERM: stop taking jobs, let running ones finish within --grace seconds, hand back the rest, exit 0.
        """
    )

    @Option(help: "This node's name, as in the cluster file.") var node: String
    @Option(help: "Cluster YAML (GPU models for --simulate, command allowlist).") var cluster: String?
    @Flag(help: "Simulate this node's GPUs from the cluster file instead of reading nvidia-smi.") var simulate = false
    @Option(name: .customLong("nvidia-smi"), help: "Path of the nvidia-smi executable to read GPUs from.") var nvidiaSMI: String?
    @Option(help: "Address for /metrics and /healthz (host:port; port 0 picks one; default: $HYDRA_AGENT_LISTEN, else 127.0.0.1:9101).")
    var listen: String?
    @Option(name: .customLong("heartbeat-interval"), help: "Seconds between heartbeats (TTL is 3×).") var heartbeatInterval = 1.0
    @Option(help: "Seconds running jobs get to finish on SIGTERM before they are handed back.") var grace = 30.0
    @Option(name: .customLong("output-dir"), help: "Directory for job outputs (default: $STATE_DIRECTORY/outputs, else /var/lib/hydra/outputs).")
    var outputDirFlag: String?
    /// systemd sets STATE_DIRECTORY from the unit's StateDirectory=, so a drop-in that moves it moves the outputs too.
    var outputDir: String {
        outputDirFlag ?? EnvironmentSettings.value("STATE_DIRECTORY").map { $0.split(separator: ":").first.map(String.init) ?? $0 }.map { $0 + "/outputs" }
            ?? "/var/lib/hydra/outputs"
    }
    @Option(name: .customLong("marker-dir"), help: "Write one marker file per (job, attempt) here (chaos runs).") var markerDir: String?
    @Option(help: "Jobs held at once (running plus prefetched); the coordinator dispatches no more than this to the node.") var prefetch = 64
    @Option(name: .customLong("state-dir"),
            help: "Directory for the agent's own state: the attempts it has taken, so a replayed envelope never runs twice (default: $STATE_DIRECTORY, else OUTPUT_DIR/.hydra-agent).")
    var stateDir: String?
    @OptionGroup var command: CommandOptions
    @OptionGroup var services: ServiceOptions
    @OptionGroup var signing: SigningOptions
    @OptionGroup var redisAuth: RedisAuthOptions
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warn, error or critical (or HYDRA_LOG_LEVEL).") var logLevel: String?
    @Option(name: .customLong("trim-interval"),
            help: "Seconds between drops of unused code pages from the resident set while no jobs are held (first one 3 s after start; 0: never).")
    var trimInterval = 600.0

    func validate() throws {
        if simulate && nvidiaSMI != nil { throw ValidationError("--simulate and --nvidia-smi exclude each other") }
        if simulate && cluster == nil { throw ValidationError("--simulate needs --cluster FILE (the GPUs to simulate)") }
        if let m = OptionCheck.first(OptionCheck.seconds(heartbeatInterval, "--heartbeat-interval", min: 0.05, minIncluded: true, max: 3_600),
                                     OptionCheck.seconds(grace, "--grace", min: 0, minIncluded: true, max: 86_400),
                                     OptionCheck.seconds(trimInterval, "--trim-interval", min: 0, minIncluded: true, max: 86_400),
                                     OptionCheck.count(prefetch, "--prefetch", min: 1, max: 100_000)) {
            throw ValidationError(m)
        }
    }

    func run() throws {
        do { try Log.configure(flag: logLevel) } catch { throw ValidationError("\(error)") }
        let log = Log(component: "agent", fields: [("node", node)])
        var nodeConfig: NodeConfig?
        if let cluster {
            let c: ClusterConfig
            do { c = try ClusterConfig.load(path: cluster) } catch { throw ValidationError("\(error)") }
            guard let n = c.node(named: node) else {
                throw ValidationError("\(cluster): no node named '\(node)' (nodes: \(c.nodes.map(\.name).joined(separator: ", ")))")
            }
            nodeConfig = n
        }
        let redisURL = ProcessInfo.processInfo.environment["HYDRA_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        let redis = try redisAuth.endpoint(url: redisURL)

        var simulated: SimulatedGPUs?
        let readInventory: @Sendable () throws -> Inventory
        if simulate, let nodeConfig {
            let sim = SimulatedGPUs(node: node, gpus: nodeConfig.gpus)
            simulated = sim
            let endpoints = services.endpoints
            readInventory = {
                if let endpoints { sim.setServiceHeld(ServiceVRAMProbe.held(endpoints)) }
                return sim.inventory()
            }
        } else if let nvidiaSMI, !FileManager.default.isExecutableFile(atPath: nvidiaSMI) {
            // hydra-storage's Arc A380 has no nvidia-smi: the same unit runs there with zero GPUs.
            log.warning("no nvidia-smi at \(nvidiaSMI): running without GPUs (CPU-only jobs)")
            readInventory = { Inventory() }
        } else if let nvidiaSMI {
            let reader = NvidiaSMIReader(executable: nvidiaSMI)
            readInventory = { try reader.read() }
        } else {
            readInventory = { Inventory() }
        }
        try FileManager.default.createDirectory(atPath: outputDir, withIntermediateDirectories: true)
        if let markerDir { try FileManager.default.createDirectory(atPath: markerDir, withIntermediateDirectories: true) }

        let commandExecutor = try command.executor(node: nodeConfig)
        if let user = commandExecutor.user {
            // The job user reaches only its own output directory, never the others' (each 0700).
            chmod(outputDir, 0o711)
            var dir = URL(fileURLWithPath: outputDir).standardizedFileURL.path
            while dir != "/" && !dir.isEmpty {
                var st = stat()
                if stat(dir, &st) == 0, st.st_mode & S_IXOTH == 0 {
                    log.warning("\(user.name) cannot pass through \(dir) to its jobs' output directories: make it o+x (the unit's StateDirectoryMode=0711)")
                }
                dir = (dir as NSString).deletingLastPathComponent
            }
            log.info("command jobs run as \(user.name) (uid \(user.uid))")
        } else {
            log.warning("no --command-user: command jobs run as the agent's own user (uid \(getuid())) and can read its credentials")
        }
        let executors = try services.executors(command: commandExecutor)

        let loaded: (keys: SigningKeys, clusterKey: Bool)?
        do { loaded = try SigningKeys.loadForNode(node, current: signing.hmacKey, previous: signing.hmacKeyPrevious) } catch {
            throw ValidationError("\(error)")
        }
        if loaded == nil { log.warning("no HMAC key (--hmac-key or the hmac.key credential): accepting unsigned envelopes, sending unsigned results") }
        if loaded?.clusterKey == true {
            log.warning("--hmac-key is the cluster key: this node could sign for every node; give it its own key (`hydra keygen --node \(node) --cluster-key FILE OUT`)")
        }
        let state = stateDir ?? ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?.split(separator: ":").first.map(String.init)
            ?? "\(outputDir)/.hydra-agent"
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        var settings = AgentSettings(node: node, redis: redis, instanceID: "\(node)-\(getpid())-\(UUID().uuidString.prefix(8))",
                                     heartbeatInterval: heartbeatInterval, graceSeconds: grace, outputDirectory: outputDir,
                                     markerDirectory: markerDir, prefetch: prefetch, version: hydraVersion, keys: loaded?.keys)
        settings.seenFile = "\(state)/seen-attempts.\(node)"
        let agent = try Agent(settings: settings, readInventory: readInventory, simulated: simulated, executors: executors)

        let (host, port) = try MiniHTTPServer.parseListen(listen ?? EnvironmentSettings.value(EnvironmentSettings.agentListen) ?? "127.0.0.1:9101")
        let server = MiniHTTPServer(host: host, port: port, limits: .fromEnvironment(),
                                    onReject: MiniHTTPServer.rejectionCounter(agent.metrics.registry, server: "agent")) { req in
            switch req.path {
            case "/metrics": return .text(agent.metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
            case "/healthz": return agent.healthy ? .text("ok\n") : .text("no heartbeat recently\n", status: 503)
            default: return .text("not found\n", status: 404)
            }
        }
        let bound: Int
        do { bound = try server.start() } catch {
            log.error("\(error)")
            throw ExitCode(1)
        }
        log.info("agent started", [("kinds", executors.keys.sorted().joined(separator: ",")), ("listen", "\(host):\(bound)"), ("gpus", simulate ? "simulated" : (nvidiaSMI ?? "none")),
                                   ("redis", RedisEndpoint.redacted(redisURL))])
        let loops = agent.start()
        if trimInterval > 0 {
            ResidentTrim.start(firstAfter: 3, interval: trimInterval, log: log) { agent.runningJobIDs().isEmpty }
        }
        SystemdNotify.ready(status: "metrics on \(host):\(bound)")
        waitForTermination(orEndOf: loops)
        SystemdNotify.stopping()
        agent.shutdown()
        server.stop()
        // The loops catch and retry every failure themselves; one that ended the group is a bug, said as such.
        if let e = loops.error {
            log.error("\(e)")
            throw ExitCode(1)
        }
    }
}
