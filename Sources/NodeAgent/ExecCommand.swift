import ArgumentParser
import Foundation
import HydraCore
import HydraWire
import HydraExecutors

/// Runs one job on this node by hand: how an operator tries a workflow before submitting a batch.
struct ExecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a single job spec here and print its result (the JSON that goes to the node's results stream).",
        discussion: """
        JOB.json: {"kind": "image", "spec": {...}, "vram": "8GiB", "gpu_indexes": [0], "deadline_s": 600}
        (kind and spec as in a batch file; the rest optional).
        Exit 0 on success, 1 on job failure (class and message printed), 2 on an invalid job file.
        """
    )
    @Argument(help: "The job file (JSON or YAML).") var file: String
    @OptionGroup var services: ServiceOptions
    @Option(help: "Cluster YAML, for this node's command allowlist.") var cluster: String?
    @Option(help: "This node's name (with --cluster).") var node: String = ProcessInfo.processInfo.hostName
    @OptionGroup var command: CommandOptions
    @Option(name: .customLong("output-dir"), help: "Where the job's outputs go.") var outputDir = FileManager.default.currentDirectoryPath + "/hydra-exec"
    @Flag(help: "Print the result as JSON only.") var json = false

    func run() throws {
        let doc: JSONValue
        do { doc = try ConfigLoader.parseDocument(try ConfigLoader.readFile(file), file: file) } catch { throw ValidationError("\(error)") }
        guard let kind = doc["kind"]?.stringValue else { throw ValidationError("\(file): kind: required field 'kind' is missing") }
        let spec = doc["spec"] ?? .object([:])
        guard spec.objectValue != nil else { throw ValidationError("\(file): spec: expected a map") }
        var vram: UInt64 = 0
        if let v = doc["vram"] {
            guard let b = v.doubleValue.flatMap(ByteSize.bytes) ?? v.stringValue.flatMap(ByteSize.parse) else {
                throw ValidationError("\(file): vram: '\(v)' is not a size")
            }
            vram = b
        }
        var nodeConfig: NodeConfig?
        if let cluster {
            do { nodeConfig = try ClusterConfig.load(path: cluster).node(named: node) } catch { throw ValidationError("\(error)") }
        }
        let executors = try services.executors(command: try command.executor(node: nodeConfig))
        guard let ex = executors[kind] else {
            throw ValidationError("\(file): kind: no executor for '\(kind)' here (available: \(executors.keys.sorted().joined(separator: ", ")); service kinds need --services)")
        }
        let now = Date().timeIntervalSince1970
        let env = Envelope(jobID: UUID().uuidString.lowercased(), attempt: 1, kind: kind, spec: spec, gpuUUIDs: [], vramBytes: vram,
                           deadline: doc["deadline_s"]?.doubleValue.map { now + $0 }, issuedAt: now)
        let out = "\(outputDir)/\(env.jobID)"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let ctx = ExecutionContext(envelope: env, node: node, gpuIndexes: doc["gpu_indexes"]?.arrayValue?.compactMap(\.intValue) ?? [],
                                   outputDirectory: out)
        let started = Date()
        var result: AttemptResult
        do {
            let r = try ex.execute(ctx)
            result = AttemptResult(jobID: env.jobID, attempt: 1, node: node, outcome: .succeeded, result: r.output,
                                   startedAt: started.timeIntervalSince1970, finishedAt: Date().timeIntervalSince1970,
                                   durationSeconds: Date().timeIntervalSince(started), peakVRAMBytes: r.peakVRAMBytes)
        } catch let f as ExecutionFailure {
            result = AttemptResult(jobID: env.jobID, attempt: 1, node: node, outcome: .failed, failureClass: f.failureClass,
                                   error: f.message, startedAt: started.timeIntervalSince1970, finishedAt: Date().timeIntervalSince1970,
                                   durationSeconds: Date().timeIntervalSince(started))
        }
        print(try JSONCoding.encodeString(result, pretty: !json))
        if result.outcome != .succeeded {
            if !json { FileHandle.standardError.write(Data("hydra-agent exec: \(result.failureClass?.rawValue ?? "failed"): \(result.error ?? "")\n".utf8)) }
            throw ExitCode(1)
        }
    }
}
