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

public enum JobID {
    /// A job id as the coordinator issues them: a UUID in lower case (`8-4-4-4-12` hex digits), so it
    /// is safe as a path component and as a word in a line. One rule for the agent's envelopes and the
    /// coordinator's reading of the ids a heartbeat lists (`UUID(uuidString:)` also takes upper case).
    public static func isCanonical(_ s: String) -> Bool {
        var n = 0
        for c in s.utf8 {
            if n == 8 || n == 13 || n == 18 || n == 23 {
                if c != UInt8(ascii: "-") { return false }
            } else if !((c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))) {
                return false
            }
            n += 1
            if n > 36 { return false }
        }
        return n == 36
    }
}
