import Foundation
import Synchronization

// One lifecycle for the coordinator and the agent: each long-running loop is a `BlockingService`
// run by a `ServiceGroup` on an OS thread of its own; the first one that fails stops the others,
// and the group returns only once every thread has ended.
//
// Not swift-service-lifecycle: its services are `async` and run on Swift's cooperative pool, while
// ours block in hiredis and libpq calls that no task cancellation can interrupt. Blocking a
// cooperative thread per loop would starve the pool; wrapping each loop in a detached thread would
// keep the threads and add the async layer on top. The shape (services, first failure stops all,
// graceful stop, join) is the same; the mechanism is threads, a stop flag and a condition variable.

/// A long-running loop with blocking I/O. `run` is called once, on a thread of its own, and should
/// return soon after `ctx.isStopping` turns true (sleep with `ctx.sleep`, which wakes at once on stop).
/// Throwing, or returning while the group is not stopping, stops the whole group.
public protocol BlockingService: Sendable {
    var name: String { get }
    func run(_ ctx: ServiceContext) throws
}

/// A service made of a name and a closure: lets a loop stay a method of the object that owns its state.
public struct ServiceLoop: BlockingService {
    public let name: String
    let body: @Sendable (ServiceContext) throws -> Void
    public init(_ name: String, _ body: @escaping @Sendable (ServiceContext) throws -> Void) {
        self.name = name
        self.body = body
    }
    public func run(_ ctx: ServiceContext) throws { try body(ctx) }
}

/// What a running service sees of its group: whether to stop, and a sleep that a stop cuts short.
/// Stopping is one-way and idempotent; it can be asked from any thread (a signal handler's queue too).
public final class ServiceContext: Sendable {
    private struct State {
        var stopping = false
        var hooks: [Int: @Sendable () -> Void] = [:]
        var nextHook = 0
    }
    /// Mirrors `state.stopping` so that hot loops read it without taking a lock.
    private let flag = Atomic<Bool>(false)
    private let state = Mutex(State())
    /// Sleepers wait here. The flag is set before the broadcast, which is sent with the lock held, and a
    /// sleeper checks the flag with the lock held before waiting, so no stop is missed.
    private let condition = NSCondition()

    public init() {}

    public var isStopping: Bool { flag.load(ordering: .acquiring) }

    /// Asks every service that shares this context to stop; runs the stop hooks once, on this thread.
    public func stop() {
        let hooks = state.withLock { s -> [@Sendable () -> Void]? in
            if s.stopping { return nil }
            s.stopping = true
            let h = s.hooks.sorted { $0.key < $1.key }.map(\.value)
            s.hooks.removeAll()
            return h
        }
        guard let hooks else { return }
        flag.store(true, ordering: .releasing)
        condition.lock()
        condition.broadcast()
        condition.unlock()
        for h in hooks { h() }
    }

    /// Sleeps `seconds`, or less if the context stops meanwhile. Returns whether to go on (not stopping).
    @discardableResult
    public func sleep(_ seconds: Double) -> Bool { sleep(until: Date().addingTimeInterval(seconds)) }

    /// Sleeps until `deadline`, or less if the context stops meanwhile. Returns whether to go on (not stopping).
    @discardableResult
    public func sleep(until deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        // `wait(until:)` returns false once the deadline has passed; a wake-up that was not a stop
        // (spurious, or a stop of nothing) just waits again.
        while !isStopping {
            if !condition.wait(until: deadline) { break }
        }
        return !isStopping
    }

    /// Runs `body` when this context stops (at once, on this thread, if it already has).
    /// Returns a token for `removeHook`, or nil when `body` already ran.
    @discardableResult
    public func onStop(_ body: @escaping @Sendable () -> Void) -> Int? {
        let token = state.withLock { s -> Int? in
            if s.stopping { return nil }
            s.nextHook += 1
            s.hooks[s.nextHook] = body
            return s.nextHook
        }
        if token == nil { body() }
        return token
    }

    /// Forgets a hook that is no longer wanted (a nested group that has ended), so that a long-lived
    /// context does not collect them.
    public func removeHook(_ token: Int) { state.withLock { _ = $0.hooks.removeValue(forKey: token) } }
}

/// Runs services each on an OS thread of its own (they block in C clients; never on Swift's
/// cooperative pool). The first failure stops all; `stop()` stops all; `run()` returns only after
/// every service's thread has finished, and rethrows the first failure.
public final class ServiceGroup: Sendable {
    /// A service returned although nobody asked the group to stop: counts as a failure.
    public struct ServiceEnded: Error, CustomStringConvertible {
        public let service: String
        public var description: String { "service \(service) ended unexpectedly" }
    }

    public let services: [any BlockingService]
    /// The context every service of this group is given.
    public let context: ServiceContext
    private let parent: ServiceContext?
    private let onStop: (@Sendable ((any Error)?) -> Void)?
    private struct State {
        var firstError: (any Error)?
        var started = false
        var finished = false
        var whenFinished: [@Sendable () -> Void] = []
    }
    private let state = Mutex(State())

    /// - Parameters:
    ///   - context: shared with code outside the services that must see the stop (default: a new one).
    ///   - parent: a context whose stop stops this group too (a group nested in another group's service).
    ///   - onStop: called once when the group starts stopping, with the first failure (nil: a requested
    ///     stop), on the thread that stopped it, before the other services have noticed. For what must
    ///     happen at once, e.g. cutting connections the others may be blocked on.
    public init(services: [any BlockingService], context: ServiceContext = ServiceContext(), parent: ServiceContext? = nil,
                onStop: (@Sendable ((any Error)?) -> Void)? = nil) {
        self.services = services
        self.context = context
        self.parent = parent
        self.onStop = onStop
    }

    /// The first failure, once there is one.
    public var error: (any Error)? { state.withLock { $0.firstError } }

    /// Asks every service to stop; safe from any thread and more than once.
    public func stop() { context.stop() }

    /// Runs every service on its own thread and blocks until all have returned. Call once.
    public func run() throws {
        precondition(state.withLock { s in defer { s.started = true }; return !s.started }, "ServiceGroup.run() called twice")
        if let onStop { context.onStop { [self] in onStop(self.error) } }
        let parentHook = parent?.onStop { [context] in context.stop() }
        // Foundation's Thread has no join: each thread leaves the DispatchGroup as the last thing it does,
        // so once `wait()` returns no service code is running any more.
        let threads = DispatchGroup()
        for service in services {
            threads.enter()
            let t = Thread { [self] in
                do {
                    try service.run(context)
                    if !context.isStopping { fail(ServiceEnded(service: service.name)) }
                } catch {
                    fail(error)
                }
                threads.leave()
            }
            t.name = service.name
            t.start()
        }
        threads.wait()
        if let parentHook { parent?.removeHook(parentHook) }
        let (hooks, failure) = state.withLock { s in
            s.finished = true
            defer { s.whenFinished.removeAll() }
            return (s.whenFinished, s.firstError)
        }
        for h in hooks { h() }
        if let failure { throw failure }
    }

    /// Runs the group on a thread of its own and returns at once; see `wait(timeout:)` and `error`.
    public func start() {
        let t = Thread { [self] in try? run() }
        t.name = "service-group"
        t.start()
    }

    /// Waits until `run()` has returned (every service thread ended), at most `timeout` seconds
    /// (nil: no limit). Returns whether it had.
    @discardableResult
    public func wait(timeout: Double? = nil) -> Bool {
        let done = DispatchSemaphore(value: 0)
        whenFinished { done.signal() }
        guard let timeout else { done.wait(); return true }
        return done.wait(timeout: .now() + timeout) == .success
    }

    /// Runs `body` once `run()` has joined every thread (at once, on this thread, if it already has).
    public func whenFinished(_ body: @escaping @Sendable () -> Void) {
        let now = state.withLock { s -> Bool in
            if s.finished { return true }
            s.whenFinished.append(body)
            return false
        }
        if now { body() }
    }

    private func fail(_ error: any Error) {
        state.withLock { if $0.firstError == nil { $0.firstError = error } }
        context.stop()
    }
}
