import Foundation
import Synchronization

/// Threads for blocking work (an agent's jobs), reused instead of created per item. Every item
/// gets a thread of its own at once: an idle worker if one is free, otherwise a new one, so a
/// short job never queues behind a long one. Workers idle for `idleTimeout` seconds exit, so an
/// idle node holds no more threads than it needs.
public final class WorkerPool: Sendable {
    private struct State {
        var queue: [@Sendable () -> Void] = []
        /// Idle workers not yet promised to an item in `queue`.
        var available = 0
        var threads = 0
    }
    private let state = Mutex(State())
    private let signal = NSCondition()
    private let name: String
    private let idleTimeout: Double

    public init(name: String, idleTimeout: Double = 30) {
        self.name = name
        self.idleTimeout = idleTimeout
    }

    public var threadCount: Int { state.withLock { $0.threads } }
    /// Workers waiting for an item and not promised to one.
    public var idleCount: Int { state.withLock { $0.available } }

    public func submit(_ work: @escaping @Sendable () -> Void) {
        let spawn = state.withLock { s -> Bool in
            s.queue.append(work)
            if s.available > 0 { s.available -= 1; return false }
            s.threads += 1
            return true
        }
        if spawn {
            let t = Thread { self.workerLoop() }
            t.name = name
            t.start()
        } else {
            // Under the condition's lock, so a worker between its check and its wait cannot miss it.
            signal.lock()
            signal.signal()
            signal.unlock()
        }
    }

    private func workerLoop() {
        while true {
            var item = state.withLock { s in s.queue.isEmpty ? nil : s.queue.removeFirst() }
            if item == nil {
                signal.lock()
                let deadline = Date().addingTimeInterval(idleTimeout)
                while item == nil {
                    item = state.withLock { s in s.queue.isEmpty ? nil : s.queue.removeFirst() }
                    if item != nil { break }
                    if !signal.wait(until: deadline) {
                        // Timed out: leave, unless an item was promised to the idle workers meanwhile.
                        let leave = state.withLock { s -> Bool in
                            guard s.queue.isEmpty, s.available > 0 else { return false }
                            s.available -= 1
                            s.threads -= 1
                            return true
                        }
                        if leave { signal.unlock(); return }
                    }
                }
                signal.unlock()
            }
            item?()
            state.withLock { $0.available += 1 }
        }
    }
}
