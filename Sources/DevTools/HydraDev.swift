import ArgumentParser
import Foundation
import HydraIO

/// Developer tools that production nodes never need: the chaos harness and the benchmarks. They
/// start `hydra` and `hydra-agent` from the same directory as this binary.
@main
struct HydraDev: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hydra-dev",
        abstract: "Hydra developer tools: break a local cluster on purpose (chaos) and measure it (bench).",
        discussion: """
        Environment: HYDRA_DATABASE_URL, HYDRA_REDIS_URL as for hydra. Exit codes: 0 ok, 1 failed
        (e.g. a chaos run lost a job), 2 usage or invalid input.
        """,
        subcommands: [BenchCommand.self, ChaosCommand.self]
    )

    static func main() { runCommandLine(HydraDev.self) }
}
