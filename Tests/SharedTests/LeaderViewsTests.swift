import Foundation
import Synchronization
import XCTest
@testable import HydraCore
@testable import HydraIO
@testable import HydraStore
@testable import HydraCoordinator

final class LeaderViewsTests: XCTestCase {
    private func row(_ id: String, state: JobState, attempt: Int = 1, node: String? = nil) -> JobRow {
        JobRow(row: PGRow(columns: ["id", "batch_id", "name", "kind", "spec", "state", "attempt", "node", "submitted_at"],
                          values: [id, "b", "n-\(id)", "sleep", "{\"seconds\":0}", state.rawValue, String(attempt), node, "1000"]))
    }

    private func transition(_ id: String, attempt: Int, to: JobState, started: Double? = nil) -> AppliedTransition {
        AppliedTransition(jobID: id, attempt: attempt, from: .dispatched, to: to, node: "n1", streamID: nil, kind: "sleep", startedAt: started)
    }

    func testPendingCacheKeepsOnlyListedRowsAndOnlyPendingOnes() {
        var c = PendingCache()
        c.add([row("a", state: .pending), row("b", state: .pending), row("c", state: .dispatched)])
        XCTAssertEqual(Set(c.rows.keys), ["a", "b"], "a row read as non-pending must not be cached")
        XCTAssertEqual(c.jobs["a"]?.attempt, 2, "the router sees the next attempt")
        c.keep(only: ["b", "x"])
        XCTAssertEqual(Set(c.rows.keys), ["b"])
        XCTAssertEqual(Set(c.jobs.keys), ["b"])
        c.remove(["b"])
        XCTAssertEqual(c.count, 0)
    }

    func testActiveViewFollowsTransitions() {
        var v = ActiveJobsView()
        v.dispatched([row("a", state: .dispatched, attempt: 1, node: "n1"), row("b", state: .dispatched, attempt: 2, node: "n1")])
        v.apply([transition("a", attempt: 1, to: .running, started: 5)], now: 10)
        XCTAssertEqual(v.jobs["a"]?.state, .running)
        XCTAssertEqual(v.jobs["a"]?.startedAt, 5)
        // A result of an older attempt does not end the current one.
        v.apply([transition("b", attempt: 1, to: .succeeded)], now: 10)
        XCTAssertNotNil(v.jobs["b"])
        v.apply([transition("b", attempt: 2, to: .succeeded)], now: 10)
        XCTAssertNil(v.jobs["b"])
    }

    func testResyncDoesNotResurrectAnAttemptThatEndedWhileItWasRead() {
        var v = ActiveJobsView()
        v.dispatched([row("a", state: .dispatched, attempt: 1)])
        v.apply([transition("a", attempt: 1, to: .succeeded)], now: 100)
        // The read was taken before the result landed; it still lists a/1 and a job c the view lacks.
        v.resync([row("a", state: .dispatched, attempt: 1), row("c", state: .running, attempt: 3)], now: 100.5)
        XCTAssertEqual(Set(v.jobs.keys), ["c"])
        // A new attempt of the same job is a different thing and comes back.
        v.resync([row("a", state: .dispatched, attempt: 2)], now: 101)
        XCTAssertEqual(v.jobs["a"]?.attempt, 2)
        // Much later the memory of a/1 is gone (two rotations), and a re-read is trusted again.
        v.apply([], now: 106)
        v.apply([], now: 112)
        v.resync([row("a", state: .dispatched, attempt: 1)], now: 112)
        XCTAssertEqual(v.jobs["a"]?.attempt, 1)
    }

    func testStreamIDsGrowPerStreamAndStartOnlyFromWhatRedisSaid() {
        var a = StreamIDAllocator()
        XCTAssertNil(a.next(stream: "s", nowMillis: 1000), "an unseen stream must use * first")
        a.learned(stream: "s", id: "1000-4")
        XCTAssertEqual(a.next(stream: "s", nowMillis: 1000), "1000-5")
        XCTAssertEqual(a.next(stream: "s", nowMillis: 999), "1000-6", "a clock going back must not go below the last id")
        XCTAssertEqual(a.next(stream: "s", nowMillis: 1002), "1002-0")
        XCTAssertNil(a.next(stream: "t", nowMillis: 1002), "streams are independent")
        // An older id learned late does not move the allocator back.
        a.learned(stream: "s", id: "900-0")
        XCTAssertEqual(a.next(stream: "s", nowMillis: 1002), "1002-1")
        a.forget(stream: "s")
        XCTAssertNil(a.next(stream: "s", nowMillis: 1003))
        a.learned(stream: "s", id: "not-an-id")
        XCTAssertNil(a.next(stream: "s", nowMillis: 1003))
        XCTAssertEqual(StreamID("17-3"), StreamID(ms: 17, seq: 3))
        XCTAssertLessThan(StreamID(ms: 17, seq: 3), StreamID(ms: 17, seq: 10))
        XCTAssertNil(StreamID("17"))
        // What XINFO STREAM answers: the last generated id, or no such key for a stream not created yet.
        a.learned(stream: "u", xinfo: .array([.string("length"), .integer(2), .string("last-generated-id"), .string("2000-7")]))
        XCTAssertEqual(a.next(stream: "u", nowMillis: 1500), "2000-8")
        a.learned(stream: "v", xinfo: .error("ERR no such key"))
        XCTAssertEqual(a.next(stream: "v", nowMillis: 1500), "1500-0")
        a.learned(stream: "w", xinfo: .error("NOPERM this user has no permissions"))
        XCTAssertFalse(a.knows(stream: "w"), "an unreadable stream stays unknown, so its XADDs use *")
    }

    func testWorkerPoolRunsEveryItemAtOnceAndReusesThreads() {
        let pool = WorkerPool(name: "test", idleTimeout: 30)
        // Eight items that all block until released: each must have its own thread, or they would never all start.
        let started = Atomic<Int>(0)
        let release = Atomic<Bool>(false)
        for _ in 0..<8 {
            pool.submit {
                started.add(1, ordering: .relaxed)
                while !release.load(ordering: .relaxed) { usleep(1000) }
            }
        }
        XCTAssertTrue(waitFor { started.load(ordering: .relaxed) == 8 }, "started \(started.load(ordering: .relaxed)) of 8")
        release.store(true, ordering: .relaxed)
        XCTAssertEqual(pool.threadCount, 8)
        // Once they are idle, more items run on the same threads.
        let done = Atomic<Int>(0)
        XCTAssertTrue(waitFor { pool.idleCount == 8 })
        for _ in 0..<8 { pool.submit { done.add(1, ordering: .relaxed) } }
        XCTAssertTrue(waitFor { done.load(ordering: .relaxed) == 8 })
        XCTAssertEqual(pool.threadCount, 8)
    }

    func testIdleWorkersExit() {
        let pool = WorkerPool(name: "test", idleTimeout: 0.05)
        let done = Atomic<Int>(0)
        for _ in 0..<3 { pool.submit { done.add(1, ordering: .relaxed) } }
        XCTAssertTrue(waitFor { done.load(ordering: .relaxed) == 3 })
        XCTAssertTrue(waitFor { pool.threadCount == 0 }, "threads left: \(pool.threadCount)")
        pool.submit { done.add(1, ordering: .relaxed) }
        XCTAssertTrue(waitFor { done.load(ordering: .relaxed) == 4 }, "a pool whose workers left still runs new items")
    }

    func testLogSecondsFormatting() {
        XCTAssertEqual(Log.seconds(0), "0.000")
        XCTAssertEqual(Log.seconds(0.0424), "0.042")
        XCTAssertEqual(Log.seconds(12.3456), "12.346")
        XCTAssertEqual(Log.seconds(-1.5), "-1.500")
        XCTAssertEqual(Log.seconds(.nan), "0.000")
        XCTAssertEqual(Log.timestamp().count, 24)
    }

    private func waitFor(_ timeout: Double = 5, _ cond: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end { if cond() { return true }; usleep(2000) }
        return cond()
    }
}
