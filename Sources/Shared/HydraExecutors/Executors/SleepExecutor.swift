import Foundation
import HydraCore

/// Simulated work for the demo, tests, chaos runs and benchmarks.
/// Spec: `duration_s` (default 1), optional `fail` (a failure class to report,
/// for tests), optional `output` (echoed into the result), optional `output_hex` (bytes given as hex,
/// decoded as an agent decodes what a process prints, into `output.text`: how chaos runs and tests
/// make a job print NULs, control codes and invalid UTF-8 through a real agent).
public struct SleepExecutor: Executor {
    public let kind = "sleep"
    public var needsOutputDirectory: Bool { false }
    public init() {}

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let spec = context.envelope.spec
        var duration = 1.0
        if let given = spec["duration_s"] {
            // Batch files refuse other values; a row stored before that check fails here, by name.
            guard let d = KindDefaults.seconds(given) else {
                throw ExecutionFailure(.permanent, "spec.duration_s must be a number of seconds from 0 to \(Int(KindDefaults.maxSeconds))")
            }
            duration = d
        }
        try writeMarker(context)
        if duration > 0 { try interruptibleSleep(seconds: duration, context: context) }
        if let f = spec["fail"]?.stringValue {
            guard let c = FailureClass(rawValue: f) else { throw ExecutionFailure(.permanent, "spec.fail '\(f)' is not a failure class") }
            // Only fail the first `fail_attempts` attempts when given, so retries can be seen to succeed.
            let failAttempts = spec["fail_attempts"]?.intValue ?? Int.max
            if context.envelope.attempt <= failAttempts {
                throw ExecutionFailure(c, spec["message"]?.stringValue ?? "simulated \(f) failure")
            }
        }
        var out: [String: JSONValue] = ["slept_s": .number(duration)]
        if let o = spec["output"] { out["output"] = o }
        if let hex = spec["output_hex"]?.stringValue, let bytes = Hex.decode(hex) {
            out["text"] = .string(String(decoding: bytes, as: UTF8.self))
        }
        return ExecutionResult(output: .object(out), peakVRAMBytes: context.envelope.vramBytes)
    }

    /// One file per (job id, attempt), created exclusively: a second run of the
    /// same attempt finds it and leaves a `.dup` beside it, so chaos runs can
    /// count duplicated effects.
    func writeMarker(_ context: ExecutionContext) throws {
        guard let dir = context.markerDirectory else { return }
        let path = "\(dir)/\(context.envelope.jobID).\(context.envelope.attempt)"
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0o644)
        if fd >= 0 {
            close(fd)
        } else if errno == EEXIST {
            let dup = open(path + ".dup.\(UUID().uuidString.prefix(8))", O_CREAT | O_WRONLY, 0o644)
            if dup >= 0 { close(dup) }
        }
    }
}
