import ArgumentParser
import Foundation
import Shared

let hydraVersion = "0.1.0"

@main
struct Hydra: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hydra",
        abstract: "Hydra: one scheduler for a small cluster of heterogeneous GPU nodes.",
        discussion: """
        Environment: HYDRA_DATABASE_URL (default postgres://hydra@127.0.0.1:5432/hydra),
        HYDRA_REDIS_URL (default redis://127.0.0.1:6379/0), HYDRA_CLUSTER (cluster YAML), HYDRA_LOG_LEVEL.
        Exit codes: 0 ok, 1 operation failed, 2 usage or invalid input.
        """,
        version: hydraVersion,
        subcommands: [
            MigrateCommand.self, CoordinatorCommand.self, SubmitCommand.self, StatusCommand.self, WatchCommand.self,
            NodesCommand.self, JobsCommand.self, CancelCommand.self, RetryCommand.self, DrainCommand.self, KeygenCommand.self,
            SimulateCommand.self, ConsoleCommand.self, BenchCommand.self, ChaosCommand.self, AclCommand.self,
            PipelineCommand.self, ApproveCommand.self, RejectCommand.self, ApprovalsCommand.self,
        ]
    )

    static func main() { runCommandLine(Hydra.self) }
}

/// Where the state lives; shared by every subcommand.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (default: $HYDRA_DATABASE_URL).") var databaseURL: String?
    @Option(name: .customLong("redis-url"), help: "Redis URL (default: $HYDRA_REDIS_URL).") var redisURL: String?

    var database: String {
        databaseURL ?? ProcessInfo.processInfo.environment["HYDRA_DATABASE_URL"] ?? "postgres://hydra@127.0.0.1:5432/hydra"
    }
    var redis: String {
        redisURL ?? ProcessInfo.processInfo.environment["HYDRA_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
    }

    /// A connected store with a current schema, or exit 1 with the reason.
    func store() throws -> JobStore {
        let db = PGConnection(url: database)
        do {
            try db.connect()
            try Migrations.check(db)
        } catch {
            fail("\(error)")
        }
        return JobStore(db: db)
    }
}

struct ClusterOption: ParsableArguments {
    @Option(help: "Cluster YAML (default: $HYDRA_CLUSTER).") var cluster: String?

    var path: String? { cluster ?? ProcessInfo.processInfo.environment["HYDRA_CLUSTER"] }

    func load() throws -> ClusterConfig? {
        guard let path else { return nil }
        do { return try ClusterConfig.load(path: path) } catch { throw ValidationError("\(error)") }
    }
}

/// Operation failed (exit 1) with one line on stderr.
func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("hydra: \(message)\n".utf8))
    Foundation.exit(1)
}

/// Invalid input (exit 2) with one line on stderr.
func invalid(_ message: String) -> Never {
    FileHandle.standardError.write(Data("hydra: \(message)\n".utf8))
    Foundation.exit(2)
}

func printJSON<T: Encodable>(_ v: T) throws {
    print(try JSONCoding.encodeString(v, pretty: true))
}
