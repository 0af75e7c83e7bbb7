import Foundation
import Synchronization

/// Set when a job must stop (cancelled by an operator, agent shutting down, deadline).
/// Executors check it between steps and while they wait.
public final class CancellationFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func cancel() { flag.store(true, ordering: .relaxed) }
    public var isCancelled: Bool { flag.load(ordering: .relaxed) }
}

/// What a successful attempt hands back.
public struct ExecutionResult: Sendable, Equatable {
    public var output: JSONValue
    public var peakVRAMBytes: UInt64?
    public init(output: JSONValue, peakVRAMBytes: UInt64? = nil) { self.output = output; self.peakVRAMBytes = peakVRAMBytes }
}

/// A failed attempt: the class drives the retry policy, the message reaches the operator.
public struct ExecutionFailure: Error, Sendable, Equatable, CustomStringConvertible {
    public var failureClass: FailureClass
    public var message: String
    public init(_ failureClass: FailureClass, _ message: String) { self.failureClass = failureClass; self.message = message }
    public var description: String { "\(failureClass.rawValue): \(message)" }
}
