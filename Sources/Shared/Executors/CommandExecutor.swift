import Foundation
import Synchronization

/// Runs an allow-listed program: argv only (no shell), a cleared environment,
/// CUDA_VISIBLE_DEVICES set to the job's GPUs, output captured up to a cap, a timeout.
/// Spec: `argv` (list of strings), optional `timeout_s`, optional `env` (map of extra variables).
public struct CommandExecutor: Executor {
    public let kind = "command"
    public var allowlist: [String]
    public var outputCapBytes: Int
    public var defaultTimeoutSeconds: Double

    public init(allowlist: [String], outputCapBytes: Int = 64 * 1024, defaultTimeoutSeconds: Double = 3600) {
        self.allowlist = allowlist; self.outputCapBytes = outputCapBytes; self.defaultTimeoutSeconds = defaultTimeoutSeconds
    }

    /// The absolute path argv[0] may run as, or nil when it is not allowed.
    public func resolve(_ program: String) -> String? {
        for entry in allowlist {
            if entry == program, entry.hasPrefix("/") { return entry }
            // A bare name in the allowlist allows that name via the fixed PATH below only.
            if !entry.hasPrefix("/"), entry == program {
                for dir in Self.safePath.split(separator: ":") {
                    let p = "\(dir)/\(entry)"
                    if FileManager.default.isExecutableFile(atPath: p) { return p }
                }
            }
        }
        return nil
    }

    static let safePath = "/usr/local/bin:/usr/bin:/bin"

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let spec = context.envelope.spec
        guard let argv = spec["argv"]?.arrayValue?.compactMap(\.stringValue), let program = argv.first else {
            throw ExecutionFailure(.permanent, "spec.argv must be a non-empty list of strings")
        }
        guard let path = resolve(program) else {
            throw ExecutionFailure(.permanent, "'\(program)' is not in this node's command allowlist")
        }
        var env = ["PATH": Self.safePath, "LC_ALL": "C", "HYDRA_JOB_ID": context.envelope.jobID,
                   "HYDRA_ATTEMPT": String(context.envelope.attempt), "HYDRA_OUTPUT_DIR": context.outputDirectory,
                   "CUDA_VISIBLE_DEVICES": context.gpuIndexes.map(String.init).joined(separator: ",")]
        for (k, v) in spec["env"]?.objectValue ?? [:] {
            if let s = v.stringValue, k != "PATH", !k.hasPrefix("LD_") { env[k] = s }
        }
        var timeout = spec["timeout_s"]?.doubleValue ?? defaultTimeoutSeconds
        if let d = context.deadline { timeout = min(timeout, d.timeIntervalSince(context.now())) }

        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = Array(argv.dropFirst())
        p.environment = env
        p.currentDirectoryURL = URL(fileURLWithPath: context.outputDirectory)
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        let stdout = CappedReader(out.fileHandleForReading, cap: outputCapBytes)
        let stderr = CappedReader(err.fileHandleForReading, cap: outputCapBytes)
        let started = Date()
        do { try p.run() } catch {
            throw ExecutionFailure(.permanent, "cannot start \(path): \(error.localizedDescription)")
        }
        stdout.start(); stderr.start()
        var timedOut = false, cancelled = false
        while p.isRunning {
            if context.cancellation.isCancelled { cancelled = true; break }
            if Date().timeIntervalSince(started) > timeout { timedOut = true; break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        if p.isRunning {
            p.terminate()
            let killAt = Date().addingTimeInterval(2)
            while p.isRunning && Date() < killAt { Thread.sleep(forTimeInterval: 0.01) }
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
        let o = stdout.finish(), e = stderr.finish()
        if cancelled { throw ExecutionFailure(.transient, "cancelled") }
        if timedOut { throw ExecutionFailure(.timeout, "\(program) ran past its timeout of \(String(format: "%.0f", timeout)) s and was stopped") }
        let result: JSONValue = .object([
            "exit_code": .number(Double(p.terminationStatus)), "stdout": .string(o.text), "stderr": .string(e.text),
            "stdout_truncated": .bool(o.truncated), "stderr_truncated": .bool(e.truncated),
        ])
        if p.terminationReason == .uncaughtSignal {
            throw ExecutionFailure(.transient, "\(program) was killed by signal \(p.terminationStatus)")
        }
        if p.terminationStatus != 0 {
            let tail = String(e.text.suffix(500))
            let cls: FailureClass = tail.lowercased().contains("out of memory") ? .oom : .transient
            throw ExecutionFailure(cls, "\(program) exited with status \(p.terminationStatus): \(tail)")
        }
        return ExecutionResult(output: result)
    }
}

/// Drains a pipe on its own thread (so the child never blocks on a full pipe)
/// keeping only the first `cap` bytes.
final class CappedReader: Sendable {
    private let handle: FileHandle
    private let cap: Int
    private let state = Mutex<(data: Data, truncated: Bool)>((Data(), false))
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle, cap: Int) { self.handle = handle; self.cap = cap }

    func start() {
        let t = Thread { [self] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                state.withLock { s in
                    let room = cap - s.data.count
                    if room > 0 { s.data.append(chunk.prefix(room)) }
                    if chunk.count > room { s.truncated = true }
                }
            }
            done.signal()
        }
        t.start()
    }

    func finish() -> (text: String, truncated: Bool) {
        _ = done.wait(timeout: .now() + 5)
        return state.withLock { (String(decoding: $0.data, as: UTF8.self), $0.truncated) }
    }
}
