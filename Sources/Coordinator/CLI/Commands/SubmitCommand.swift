import ArgumentParser
import Foundation
import HydraCore
import HydraStore
import HydraCoordinator

struct SubmitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "submit",
        abstract: "Submit a batch file (YAML or JSON); prints the batch id.",
        discussion: """
        The file is validated completely before anything is written (one transaction): unknown kinds,
        VRAM larger than any GPU of the cluster, malformed fields, a command argv that no node's
        allowlist runs (judged once every node's agent has reported its list) → exit 2 naming the
        file, job and field.
        Batch format: see README ("Batch files").
        """
    )
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var clusterOption: ClusterOption
    @Argument(help: "The batch file.") var file: String
    @Flag(help: "Validate and print the expanded plan without submitting.") var dryRun = false
    @Flag(help: "Print JSON ({\"batch_id\", \"jobs\"}).") var json = false

    func run() throws {
        var cluster = try clusterOption.load()
        // The file is checked before any connection is made: a bad file is a bad file, database or not.
        var plan: BatchPlan
        do { plan = try BatchFile.load(path: file, cluster: cluster) } catch { invalid("\(error)") }
        var store: JobStore?
        if !dryRun {
            store = try conn.store()
            let rows = (try? store!.nodes()) ?? []
            // Without a cluster file, validate against the GPUs the nodes have reported.
            if cluster == nil, !rows.isEmpty {
                cluster = ClusterConfig(nodes: rows.map { n in
                    NodeConfig(name: n.name, gpus: n.inventory.gpus.map { GPUConfig(model: $0.name ?? "GPU", memory: ByteCount($0.memoryTotalBytes ?? 0)) })
                })
                do { plan = try BatchFile.load(path: file, cluster: cluster) } catch { invalid("\(error)") }
            }
            // Command lines against what each node's agent said it runs (the cluster file's list alone may
            // lack an agent's --allow-command): refused only when every node has said.
            let said = Dictionary(rows.map { ($0.name, $0.commands) }, uniquingKeysWith: { a, _ in a })
            let names = cluster?.nodes.map(\.name) ?? rows.map(\.name)
            let lists = Dictionary(uniqueKeysWithValues: names.map { n in
                (n, (said[n] ?? nil).map { CommandAllowlist($0.map(CommandTemplate.init)) })
            })
            if let e = plan.commandRefusal(lists: lists, file: file) { invalid("\(e)") }
        }
        if dryRun {
            if json {
                try printJSON(JSONValue.object(["name": .string(plan.name), "jobs": .number(Double(plan.jobs.count))]))
            } else {
                print("\(plan.name): \(plan.jobs.count) jobs (not submitted)")
                for j in plan.jobs.prefix(50) {
                    print("  \(j.name)  kind=\(j.kind) vram=\(ByteSize.format(j.vramBytes)) gpus=\(j.gpus) priority=\(j.priority)")
                }
                if plan.jobs.count > 50 { print("  … \(plan.jobs.count - 50) more") }
            }
            return
        }
        let user = ProcessInfo.processInfo.environment["USER"] ?? ProcessInfo.processInfo.environment["LOGNAME"]
        let id: String
        do { id = try store!.submit(plan, submittedBy: user) } catch { fail("\(error)") }
        if json {
            try printJSON(JSONValue.object(["batch_id": .string(id), "jobs": .number(Double(plan.jobs.count))]))
        } else {
            print(id)
        }
    }
}
