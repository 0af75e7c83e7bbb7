import ArgumentParser
import Foundation
import HydraCore
import HydraIO
import HydraStore
import HydraPipeline
import HydraCoordinator

/// `hydra pipeline`: the overnight generation cycle (docs/pipeline.md).
struct PipelineCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline", abstract: "The overnight generation cycle: plan, expand, generate, score, gate, organize, report.",
        subcommands: [PipelineRunCommand.self])
}

struct PipelineRunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Build and submit the night, watch it, stop submitting at the deadline, write the report.",
        discussion: """
        Unfinished work of earlier nights resumes first. At the deadline, jobs that have not started are cancelled
        and carried to the next night; running ones get drain_s seconds. Exit codes: 0 the night ran (see the
        report for per-image failures), 1 it could not run (database, another runner active), 2 bad input.
        """)
    @OptionGroup var conn: ConnectionOptions
    @Option(help: "Pipeline config YAML (queue, directories, gates, night window, denylist, approvals).") var config: String
    @Option(help: "Stop submitting at HH:MM (next such time), HH:MM:SS, or an ISO-8601 time (default: the config's night end).")
    var until: String?
    @Flag(name: .customLong("dry-run"), help: "Print the plan and the simulator's forecast; submit nothing.") var dryRun = false
    @Option(help: "Cluster YAML for the forecast (default: the config's cluster:, else $HYDRA_CLUSTER).") var cluster: String?
    @Option(name: .customLong("triggered-by"), help: "Who started the night (recorded; set by the HTTP trigger).") var triggeredBy: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warn, error or critical (or HYDRA_LOG_LEVEL).") var logLevel: String?

    func run() throws {
        do { try Log.configure(flag: logLevel) } catch { throw ValidationError("\(error)") }
        let cfg: PipelineConfig, collections: [ImageCollection], denylist: Denylist
        do {
            cfg = try PipelineConfig.load(path: config)
            collections = try GenerationQueue.load(path: cfg.queueFile)
            denylist = try cfg.denylistFile.map { try Denylist.load(path: $0) } ?? .empty
        } catch let e as InputError { invalid(e.description) }
        let now = Date()
        var deadline = NightClock.next(minute: cfg.window.endMinute, after: now, timeZone: .current)
        if let until {
            switch NightClock.until(until, now: now, timeZone: .current) {
            case .success(let d): deadline = d
            case .failure(let e): invalid("--until '\(until)': \(e.message)")
            }
        }
        var clusterConfig: ClusterConfig?
        if let path = cluster ?? cfg.clusterFile ?? ProcessInfo.processInfo.environment["HYDRA_CLUSTER"] {
            do { clusterConfig = try ClusterConfig.load(path: path) } catch { invalid("\(error)") }
        }
        if dryRun { return dryRunPlan(cfg, collections, denylist, clusterConfig, deadline) }

        let store = PipelineStore(jobs: try conn.store())
        let runner = PipelineRunner(config: cfg, collections: collections, denylist: denylist, store: store, cluster: clusterConfig, deadline: deadline)
        runner.triggeredBy = triggeredBy ?? ProcessInfo.processInfo.environment["USER"].map { "cli:\($0)" }
        // SIGTERM/SIGINT end the night like the deadline does: nothing new, report written.
        signal(SIGTERM, SIG_IGN); signal(SIGINT, SIG_IGN)
        let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            s.setEventHandler { runner.requestStop() }
            s.resume()
            return s
        }
        defer { withExtendedLifetime(sources) {} }
        do {
            let out = try runner.run()
            print("night \(out.night) \(out.state): \(out.approved) approved, \(out.rejected) rejected, \(out.failed) failed")
            print("report: \(out.reportPath)")
        } catch { fail("\(error)") }
    }

    func dryRunPlan(_ cfg: PipelineConfig, _ collections: [ImageCollection], _ denylist: Denylist, _ cluster: ClusterConfig?, _ deadline: Date) {
        var progress: [String: CollectionProgress] = [:]
        let db = PGConnection(url: conn.database)
        do {
            try db.connect()
            try Migrations.check(db)
            progress = try PipelineStore(jobs: JobStore(db: db)).progress()
        } catch {
            print("(no database: \(error); planning as if nothing were held yet)")
        }
        let plan = PipelineRunner.plan(collections: collections, progress: progress, config: cfg, denylist: denylist)
        print("night \(NightClock.night(at: Date(), timeZone: .current)), deadline \(ISO8601DateFormatter().string(from: deadline))")
        for n in plan.notes { print("  " + n) }
        print("\(plan.runnable.count) task(s), \(plan.images) image(s); \(plan.tasks.count - plan.runnable.count) blocked")
        for t in plan.tasks {
            print("  \(t.collection)#\(t.seq) ×\(t.images)  \(t.blockedReason.map { "BLOCKED: \($0)" } ?? t.prompt)")
        }
        guard let cluster else { print("forecast: none (set `cluster:` in the config or HYDRA_CLUSTER)"); return }
        do {
            if let n = try PipelineForecast.night(tasks: plan.tasks, config: cfg, cluster: cluster) {
                for line in PipelineForecast.render(n, start: Date(), deadline: deadline, residents: cfg.residents) { print(line) }
            } else { print("forecast: nothing to run") }
        } catch { print("forecast failed: \(error)") }
    }
}

/// `hydra coordinator --pipeline-config FILE`: serves `POST /api/v1/pipeline/run` on the metrics listener.
struct PipelineTriggerOptions: ParsableArguments {
    @Option(name: .customLong("pipeline-config"), help: "Pipeline config for POST /api/v1/pipeline/run (default: the endpoint is off).")
    var pipelineConfig: String?
    @Option(name: .customLong("pipeline-token-file"),
            help: "Bearer token for the pipeline trigger (mode 0600; default: $CREDENTIALS_DIRECTORY/pipeline.token).")
    var pipelineTokenFile: String?

    func make(databaseURL: String) throws -> PipelineTrigger? {
        guard let cfg = pipelineConfig else { return nil }
        let tokenPath = pipelineTokenFile ?? ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"].map { $0 + "/pipeline.token" }
        guard let tokenPath else { throw ValidationError("--pipeline-config needs a token: --pipeline-token-file or the credential pipeline.token") }
        let token: String
        do {
            _ = try PipelineConfig.load(path: cfg)
            token = try PipelineTrigger.loadToken(path: tokenPath)
        } catch { throw ValidationError("\(error)") }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return PipelineTrigger(token: token, configPath: (cfg as NSString).standardizingPath.hasPrefix("/") ? cfg
                               : FileManager.default.currentDirectoryPath + "/" + cfg, executable: exe, databaseURL: databaseURL)
    }
}
