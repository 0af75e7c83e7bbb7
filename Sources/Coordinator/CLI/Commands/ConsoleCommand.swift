import ArgumentParser
import Foundation
import HydraIO
import HydraConsole
import HydraCoordinator

/// The console's options, shared by `hydra coordinator` and `hydra console`.
struct ConsoleOptions: ParsableArguments {
    @Option(name: .customLong("console-listen"),
            help: "Serve the web console on host:port (default: off). Loopback only unless a console token is configured.")
    var consoleListen: String?
    @Option(name: .customLong("console-token-file"),
            help: "File with the console token (mode 0600; default: $CREDENTIALS_DIRECTORY/console.token when present).")
    var consoleTokenFile: String?
    @Option(name: .customLong("output-dir"), help: "Directory whose images and audio the console may show (repeatable).")
    var outputDirs: [String] = []
    @Option(name: .customLong("reports-dir"), help: "Directory of overnight reports (<date>_overnight_report.md).")
    var reportsDir: String?
    @Option(name: .customLong("console-host"),
            help: "Extra name the console answers to in the Host header, exactly (repeatable; e.g. the name a TLS proxy forwards). localhost, 127.x.y.z and [::1] always work.")
    var consoleHosts: [String] = []

    /// Checks the options and starts the console on its own listener; nil when it is off.
    /// A non-loopback address without a token is refused (exit 2): anyone on the
    /// network could approve, cancel and drain.
    func start(databaseURL: String, listen: String? = nil, registry: MetricsRegistry? = nil) throws -> MiniHTTPServer? {
        guard let address = listen ?? consoleListen else { return nil }
        let (host, port) = try MiniHTTPServer.parseListen(address)
        let token: String?
        do { token = try ConsoleToken.load(path: consoleTokenFile) } catch { throw ValidationError("\(error)") }
        if token == nil && !ConsoleToken.isLoopback(host: host) {
            throw ValidationError("--console-listen \(address) is not a loopback address: configure a token with --console-token-file "
                                  + "(or the systemd credential console.token), or listen on 127.0.0.1")
        }
        for h in consoleHosts where !ConsoleHostPolicy.isValidName(h) {
            throw ValidationError("--console-host '\(h)' is not a plain host name or IPv4 address (no port, no scheme)")
        }
        for d in outputDirs where !FileManager.default.fileExists(atPath: d) {
            Log(component: "console").warning("output directory does not exist (yet)", [("dir", d)])
        }
        let console = ConsoleServer(databaseURL: databaseURL,
                                    settings: ConsoleSettings(token: token, outputDirs: outputDirs, reportsDir: reportsDir,
                                                              hosts: ConsoleHostPolicy(names: consoleHosts, boundAddress: host)))
        let server = MiniHTTPServer(host: host, port: port, limits: .fromEnvironment(),
                                    onReject: registry.map { MiniHTTPServer.rejectionCounter($0, server: "console") }, handler: console.handler)
        let bound: Int
        do { bound = try server.start() } catch { fail("\(error)") }
        Log(component: "console").info("console listening", [("url", "http://\(host):\(bound)/"), ("token", token == nil ? "none (loopback only)" : "required")])
        return server
    }
}

struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Serve the web console (cluster, batches, jobs, approvals, nights) without running a coordinator.",
        discussion: "Reads PostgreSQL like the CLI does. See docs/console.md.")
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var console: ConsoleOptions
    @Option(name: .customLong("listen"), help: "host:port (same as --console-listen).") var listen = "127.0.0.1:8480"
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warn, error or critical (or HYDRA_LOG_LEVEL).") var logLevel: String?

    func run() throws {
        do { try Log.configure(flag: logLevel) } catch { throw ValidationError("\(error)") }
        _ = try conn.store()  // fails early, with the reason, when the database is unreachable or old
        guard let server = try console.start(databaseURL: conn.database, listen: console.consoleListen ?? listen) else { return }
        print("hydra console: http://\(server.host):\(server.port)/")
        fflush(nil)
        waitForTermination()
        server.stop()
    }
}
