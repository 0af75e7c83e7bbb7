import ArgumentParser
import Foundation
import HydraIO
import HydraCore

struct HydraAgent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hydra-agent",
        abstract: "The Hydra node agent: reports live GPU memory and runs jobs from its Redis stream.",
        discussion: """
        Environment: HYDRA_REDIS_URL (default redis://127.0.0.1:6379/0), HYDRA_LOG_LEVEL.
        Exit codes: 0 ok, 1 operation failed, 2 invalid input.
        """,
        version: hydraVersion,
        subcommands: [RunCommand.self, ProbeCommand.self, ExecCommand.self]
    )
}


runCommandLine(HydraAgent.self)
