import ArgumentParser
import Foundation
import HydraCore
import HydraExecutors

struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Read the GPUs once through nvidia-smi and print the inventory."
    )
    @Option(name: .customLong("nvidia-smi"), help: "Path of the nvidia-smi executable (any executable that answers its queries).")
    var nvidiaSMI = "/usr/bin/nvidia-smi"
    @Option(help: "Seconds before nvidia-smi is given up on.") var timeout = 5.0
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if let m = OptionCheck.seconds(timeout, "--timeout", min: 0, max: 600) { throw ValidationError(m) }
    }

    func run() throws {
        let reader = NvidiaSMIReader(executable: nvidiaSMI, timeout: timeout)
        let inv: Inventory
        do { inv = try reader.read() } catch {
            FileHandle.standardError.write(Data("hydra-agent probe: \(error)\n".utf8))
            throw ExitCode(1)
        }
        if json { print(try JSONCoding.encodeString(inv)) } else { print(InventoryTable.render(inv), terminator: "") }
    }
}
