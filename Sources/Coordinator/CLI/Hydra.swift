import ArgumentParser
import Foundation
import HydraCore
import HydraIO
import HydraStore


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
            SimulateCommand.self, ConsoleCommand.self, AclCommand.self,
            PipelineCommand.self, ApproveCommand.self, RejectCommand.self, ApprovalsCommand.self,
        ]
    )

    static func main() { runCommandLine(Hydra.self) }
}

