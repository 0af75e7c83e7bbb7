import Foundation
import Synchronization
import HydraCore
import HydraWire

/// Everything an executor gets to run one attempt of one job.
public struct ExecutionContext: Sendable {
    public var envelope: Envelope
    public var node: String
    /// nvidia-smi indexes of the job's GPUs (for CUDA_VISIBLE_DEVICES).
    public var gpuIndexes: [Int]
    /// Directory where the job's output files go (created by the agent).
    public var outputDirectory: String
    /// Where executors write a marker per (job id, attempt) when asked to (chaos runs count them).
    public var markerDirectory: String?
    public var cancellation: CancellationFlag
    /// Wall clock, injected for tests.
    public var now: @Sendable () -> Date

    public init(envelope: Envelope, node: String, gpuIndexes: [Int], outputDirectory: String,
                markerDirectory: String? = nil, cancellation: CancellationFlag = CancellationFlag(),
                now: @escaping @Sendable () -> Date = { Date() }) {
        self.envelope = envelope; self.node = node; self.gpuIndexes = gpuIndexes
        self.outputDirectory = outputDirectory; self.markerDirectory = markerDirectory
        self.cancellation = cancellation; self.now = now
    }

    public var deadline: Date? { envelope.deadline.map { Date(timeIntervalSince1970: $0) } }
}

/// Runs one job kind. `execute` blocks (it runs on the job's own thread, never
/// on a Swift concurrency thread) and throws `ExecutionFailure`.
public protocol Executor: Sendable {
    var kind: String { get }
    /// Whether the agent must create the job's output directory before running it. A mkdir per
    /// job was the largest cost of a no-op job on the agent, so kinds that write nothing opt out.
    var needsOutputDirectory: Bool { get }
    func execute(_ context: ExecutionContext) throws -> ExecutionResult
}

extension Executor {
    public var needsOutputDirectory: Bool { true }
}

/// Sleeps while watching for cancellation and the deadline.
public func interruptibleSleep(seconds: Double, context: ExecutionContext) throws {
    let end = Date().addingTimeInterval(seconds)
    while true {
        if context.cancellation.isCancelled { throw ExecutionFailure(.transient, "cancelled") }
        if let d = context.deadline, context.now() >= d { throw ExecutionFailure(.timeout, "deadline passed") }
        let left = end.timeIntervalSinceNow
        if left <= 0 { return }
        Thread.sleep(forTimeInterval: min(left, 0.05))
    }
}
