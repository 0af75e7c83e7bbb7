import Foundation
import Synchronization
import HydraCore
import HydraWire
import HydraStore

/// What the leader's three loops (dispatch, results, housekeeping) share while it leads.
/// Everything is behind a Mutex or an atomic; the wake-up uses an NSCondition whose predicate
/// (`dirty`) is itself atomic, so a missed signal costs at most the waiter's timeout.
/// Stopping and the first failure belong to the `ServiceGroup` that runs the loops; it calls `stop()`
/// here so that a waiting dispatcher wakes.
public final class LeaderState: Sendable {
    private let active = Mutex(ActiveJobsView())
    private let runtime = Mutex(RuntimeStats())
    private let stopFlag = Atomic<Bool>(false)
    private let dirty = Atomic<Bool>(false)
    private let signal = NSCondition()
    /// The epoch this coordinator leads with (`Leadership`).
    let epoch: Int64
    let ttl: Double
    private let lastRenewal = Mutex<Date>(Date())

    init(epoch: Int64 = 0, ttl: Double = 5, drainWindow: Double = 5) {
        self.epoch = epoch
        self.ttl = ttl
        drain = Mutex(NodeDrain(window: drainWindow))
    }

    func renewed(at t: Date) { lastRenewal.withLock { $0 = t } }

    /// Throws once the lease has not been renewed for its whole length: by then a standby may lead,
    /// and this coordinator must stop acting before its writes are fenced off anyway.
    func checkLease(now: Date) throws {
        let last = lastRenewal.withLock { $0 }
        if now.timeIntervalSince(last) > ttl { throw Leadership.Lost("lease not renewed for \(ttl) s (PostgreSQL unreachable?)") }
    }

    private let connections = Mutex<[PGInterrupter]>([])
    func register(_ c: PGConnection) { connections.withLock { $0.append(c.interrupter) } }
    /// Cuts every PostgreSQL connection of this leader: calls blocked on a silent server return.
    func interruptAll() { for i in connections.withLock({ $0 }) { i.interrupt() } }

    var stopped: Bool { stopFlag.load(ordering: .acquiring) }
    var stats: RuntimeStats { runtime.withLock { $0 } }

    func stop() {
        stopFlag.store(true, ordering: .releasing)
        wake()
    }

    /// Something changed that may let more jobs be placed.
    func wake() {
        dirty.store(true, ordering: .releasing)
        signal.lock()
        signal.signal()
        signal.unlock()
    }

    /// Waits for `wake()` up to `timeout`; returns whether work was signalled (and clears it).
    func waitForWork(timeout: Double) -> Bool {
        if dirty.exchange(false, ordering: .acquiringAndReleasing) { return true }
        signal.lock()
        if !dirty.load(ordering: .acquiring) && !stopped { _ = signal.wait(until: Date().addingTimeInterval(timeout)) }
        signal.unlock()
        return dirty.exchange(false, ordering: .acquiringAndReleasing)
    }

    func activeJobs() -> [JobRow] { active.withLock { $0.all } }
    func dispatched(_ rows: [JobRow]) { active.withLock { $0.dispatched(rows) } }
    func resyncActive(_ rows: [JobRow]) { active.withLock { $0.resync(rows, now: Date().timeIntervalSince1970) } }
    func setStats(_ s: RuntimeStats) { runtime.withLock { $0 = s } }
    /// When each of these jobs was dispatched, for those the view holds (dispatch latency).
    func dispatchedAt(_ ids: [String]) -> [String: Double] {
        active.withLock { v in
            var out: [String: Double] = [:]
            for id in ids { if let d = v.jobs[id]?.dispatchedAt { out[id] = d } }
            return out
        }
    }

    /// Results were applied: update the view, then wake the dispatcher if room may have freed.
    func applied(_ transitions: [AppliedTransition]) {
        if transitions.isEmpty { return }
        ended(transitions)
        wake()
    }

    private let drain: Mutex<NodeDrain>

    /// What `node` may hold now (see `NodeDrain`).
    func nodeLimit(_ node: String, capacity: Int, now: Double) -> Int { drain.withLock { $0.limit(node: node, capacity: capacity, now: now) } }

    /// Jobs that ended or were requeued (results, lease expiry): the view drops or updates them.
    func ended(_ transitions: [AppliedTransition]) {
        if transitions.isEmpty { return }
        let now = Date().timeIntervalSince1970
        var left: [String: Int] = [:]
        for t in transitions where t.to != .running { if let n = t.node { left[n, default: 0] += 1 } }
        if !left.isEmpty { drain.withLock { d in for (n, c) in left { d.record(node: n, count: c, now: now) } } }
        active.withLock { $0.apply(transitions, now: Date().timeIntervalSince1970) }
    }
}
