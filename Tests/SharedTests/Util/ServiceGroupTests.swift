import Foundation
import Synchronization
import XCTest
@testable import HydraIO

final class TickerTests: XCTestCase {
    enum Chore: Hashable, Sendable { case fast, slow, never }
    let t0 = Date(timeIntervalSince1970: 1_000_000)
    func at(_ s: Double) -> Date { t0.addingTimeInterval(s) }

    func testEverythingIsDueOnTheFirstTurnThenOnItsInterval() {
        var t = Ticker<Chore>([.fast: 1, .slow: 10])
        XCTAssertEqual(t.due(at(0)), [.fast, .slow])
        XCTAssertEqual(t.due(at(0.5)), [])
        XCTAssertEqual(t.due(at(1)), [.fast], "due once its whole interval has passed, not before")
        XCTAssertEqual(t.due(at(1.9)), [])
        XCTAssertEqual(t.due(at(10)), [.fast, .slow])
        XCTAssertEqual(t.due(at(10)), [], "marked run by due()")
    }

    func testTakeMarksOnlyTheTaskItTakes() {
        var t = Ticker<Chore>([.fast: 1, .slow: 10])
        XCTAssertTrue(t.take(.fast, at: at(0)))
        XCTAssertFalse(t.take(.fast, at: at(0.99)))
        XCTAssertTrue(t.isDue(.slow, at: at(0.99)), "taking one chore leaves the others due")
        XCTAssertTrue(t.take(.fast, at: at(1)))
        XCTAssertFalse(t.isDue(.never, at: at(100)), "a task without an interval is never due")
    }

    func testRanAtALaterTimeDelaysTheNextTurn() {
        var t = Ticker<Chore>([.slow: 2])
        XCTAssertTrue(t.isDue(.slow, at: at(0)))
        t.ran(.slow, at: at(0.3))  // the chore took 0.3 s: the interval counts from its end
        XCTAssertFalse(t.isDue(.slow, at: at(2.2)))
        XCTAssertTrue(t.isDue(.slow, at: at(2.3)))
    }

    func testAClockGoingBackwardsMakesNothingDue() {
        var t = Ticker<Chore>([.fast: 1])
        _ = t.due(at(5))
        XCTAssertEqual(t.due(at(3)), [])
        XCTAssertEqual(t.due(at(6)), [.fast])
    }

    func testNextDue() {
        var t = Ticker<Chore>([.fast: 1, .slow: 10])
        XCTAssertEqual(t.nextDue(after: at(0)), at(0))
        _ = t.due(at(0))
        XCTAssertEqual(t.nextDue(after: at(0.2)), at(1))
        XCTAssertNil(Ticker<Chore>([:]).nextDue(after: at(0)))
    }
}

final class ServiceGroupTests: XCTestCase {
    struct Boom: Error, Equatable { let n: Int }

    /// What `run()` threw, if anything.
    final class Thrown: Sendable {
        let error = Mutex<(any Error)?>(nil)
        var value: (any Error)? { error.withLock { $0 } }
    }

    /// Runs `group.run()` on a thread; the returned semaphore is signalled when it has returned.
    func runInBackground(_ group: ServiceGroup, thrown: Thrown = Thrown()) -> DispatchSemaphore {
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            do { try group.run() } catch { thrown.error.withLock { $0 = error } }
            done.signal()
        }
        t.start()
        return done
    }

    /// Counts services that have started and that have returned.
    final class Tally: Sendable {
        let started = Atomic<Int>(0)
        let ended = Atomic<Int>(0)
        let allStarted = DispatchSemaphore(value: 0)
        let expected: Int
        init(expected: Int) { self.expected = expected }
        func start() { if started.add(1, ordering: .relaxed).newValue == expected { allStarted.signal() } }
    }

    func testFirstFailureStopsAllAndRunReturnsAfterJoiningEveryThread() throws {
        let tally = Tally(expected: 4)
        let release = DispatchSemaphore(value: 0)
        let fire = DispatchSemaphore(value: 0)
        // Three services that sleep until stopped, one of them slow to wind down; one that fails.
        var services: [any BlockingService] = (0..<2).map { i in
            ServiceLoop("sleeper-\(i)") { ctx in
                tally.start()
                while ctx.sleep(60) {}
                tally.ended.add(1, ordering: .relaxed)
            }
        }
        services.append(ServiceLoop("slow") { ctx in
            tally.start()
            while ctx.sleep(60) {}
            // Still busy after the stop: run() must wait for this too.
            XCTAssertEqual(release.wait(timeout: .now() + 10), .success)
            tally.ended.add(1, ordering: .relaxed)
        })
        services.append(ServiceLoop("failing") { _ in
            tally.start()
            XCTAssertEqual(fire.wait(timeout: .now() + 10), .success)
            throw Boom(n: 1)
        })
        let hookError = Mutex<(any Error)?>(nil)
        let hookCalls = Atomic<Int>(0)
        let group = ServiceGroup(services: services) { e in
            hookCalls.add(1, ordering: .relaxed)
            hookError.withLock { $0 = e }
        }
        let thrown = Thrown()
        let done = runInBackground(group, thrown: thrown)
        XCTAssertEqual(tally.allStarted.wait(timeout: .now() + 10), .success)
        XCTAssertFalse(group.context.isStopping)
        fire.signal()
        // Both sleepers end at once, but run() has not returned: "slow" is still running.
        XCTAssertEqual(done.wait(timeout: .now() + 0.3), .timedOut)
        XCTAssertTrue(group.context.isStopping)
        release.signal()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        XCTAssertEqual(tally.ended.load(ordering: .relaxed), 3, "every service returned before run() did")
        XCTAssertEqual(thrown.value as? Boom, Boom(n: 1))
        XCTAssertEqual(group.error as? Boom, Boom(n: 1))
        XCTAssertEqual(hookCalls.load(ordering: .relaxed), 1)
        XCTAssertEqual(hookError.withLock { $0 } as? Boom, Boom(n: 1))
        XCTAssertTrue(group.wait(timeout: 0))
    }

    func testOnlyTheFirstFailureIsRethrown() {
        let group = ServiceGroup(services: [
            ServiceLoop("first") { _ in throw Boom(n: 1) },
            ServiceLoop("second") { ctx in
                while ctx.sleep(60) {}
                throw Boom(n: 2)
            },
        ])
        XCTAssertThrowsError(try group.run()) { XCTAssertEqual($0 as? Boom, Boom(n: 1)) }
    }

    func testAServiceThatReturnsUnaskedStopsTheGroup() {
        let group = ServiceGroup(services: [
            ServiceLoop("quitter") { _ in },
            ServiceLoop("sleeper") { ctx in while ctx.sleep(60) {} },
        ])
        XCTAssertThrowsError(try group.run()) { XCTAssertEqual(($0 as? ServiceGroup.ServiceEnded)?.service, "quitter") }
    }

    func testStopWakesSleepersAtOnceAndRunReturnsCleanly() {
        let tally = Tally(expected: 3)
        let group = ServiceGroup(services: (0..<3).map { i in
            ServiceLoop("sleeper-\(i)") { ctx in
                tally.start()
                // A sleep that a stop must cut short: were it served in full, the test would time out.
                XCTAssertFalse(ctx.sleep(3600))
                tally.ended.add(1, ordering: .relaxed)
            }
        })
        let thrown = Thrown()
        let done = runInBackground(group, thrown: thrown)
        XCTAssertEqual(tally.allStarted.wait(timeout: .now() + 10), .success)
        let t0 = Date()
        // From another thread, as a signal handler's queue would.
        DispatchQueue.global().async { group.stop() }
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "sleepers wake on the stop, not at their deadline")
        XCTAssertEqual(tally.ended.load(ordering: .relaxed), 3)
        XCTAssertNil(thrown.value)
        XCTAssertNil(group.error)
        group.stop()  // again: harmless
    }

    func testAParentsStopStopsANestedGroup() {
        let parent = ServiceContext()
        let started = DispatchSemaphore(value: 0)
        let hook = Atomic<Int>(0)
        let inner = ServiceGroup(services: [ServiceLoop("inner") { ctx in
            started.signal()
            while ctx.sleep(3600) {}
        }], parent: parent) { e in
            XCTAssertNil(e)
            hook.add(1, ordering: .relaxed)
        }
        let done = runInBackground(inner)
        XCTAssertEqual(started.wait(timeout: .now() + 10), .success)
        XCTAssertFalse(inner.context.isStopping)
        parent.stop()
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(hook.load(ordering: .relaxed), 1)
        XCTAssertNil(inner.error)
    }

    func testAStoppedParentStopsAGroupThatStartsLater() {
        let parent = ServiceContext()
        parent.stop()
        let group = ServiceGroup(services: [ServiceLoop("late") { ctx in XCTAssertFalse(ctx.sleep(3600)) }], parent: parent)
        let done = runInBackground(group)
        XCTAssertEqual(done.wait(timeout: .now() + 5), .success)
        XCTAssertNil(group.error)
    }

    func testSleepRunsItsFullTimeWhenNotStopped() {
        let ctx = ServiceContext()
        let t0 = Date()
        XCTAssertTrue(ctx.sleep(0.05))
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 0.05)
        ctx.stop()
        XCTAssertFalse(ctx.sleep(3600), "a stopped context does not sleep")
    }

    func testWaitWithTimeoutAndWhenFinished() {
        let release = DispatchSemaphore(value: 0)
        let group = ServiceGroup(services: [ServiceLoop("held") { ctx in
            while ctx.sleep(3600) {}
            _ = release.wait(timeout: .now() + 10)
        }])
        let finished = DispatchSemaphore(value: 0)
        group.whenFinished { finished.signal() }
        group.start()
        group.stop()
        XCTAssertFalse(group.wait(timeout: 0.1), "a service still winding down: not finished")
        release.signal()
        XCTAssertTrue(group.wait(timeout: 10))
        XCTAssertEqual(finished.wait(timeout: .now() + 1), .success)
    }
}
