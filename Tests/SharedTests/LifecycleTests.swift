import XCTest
@testable import HydraCore

final class LifecycleTests: XCTestCase {
    func next(_ s: JobState, _ e: JobEvent, attempt: Int = 1, max: Int = 3) -> JobState? {
        JobLifecycle.next(s, e, attempt: attempt, maxAttempts: max)?.state
    }

    func testHappyPath() {
        XCTAssertEqual(next(.pending, .dispatched), .dispatched)
        XCTAssertEqual(next(.dispatched, .started), .running)
        XCTAssertEqual(next(.running, .succeeded), .succeeded)
        // A fast job's result may arrive before its "started".
        XCTAssertEqual(next(.dispatched, .succeeded), .succeeded)
    }

    func testDuplicateAndLateMessagesChangeNothing() {
        XCTAssertNil(next(.succeeded, .succeeded))
        XCTAssertNil(next(.succeeded, .started))
        XCTAssertNil(next(.running, .started))
        XCTAssertNil(next(.pending, .succeeded))
        XCTAssertNil(next(.cancelled, .failed(.transient)))
        XCTAssertNil(next(.dead, .lost))
    }

    func testFailuresFollowTheRetryPolicy() {
        XCTAssertEqual(next(.running, .failed(.permanent)), .failed)
        XCTAssertEqual(next(.running, .failed(.transient), attempt: 1), .retryWait)
        XCTAssertEqual(next(.running, .failed(.oom), attempt: 2), .retryWait)
        XCTAssertEqual(next(.running, .failed(.timeout), attempt: 3, max: 3), .dead)
        XCTAssertEqual(next(.running, .lost, attempt: 1), .pending, "a lost node requeues at once")
        XCTAssertEqual(next(.dispatched, .lost, attempt: 3, max: 3), .dead)
        XCTAssertEqual(next(.retryWait, .backoffElapsed), .pending)
    }

    func testReleaseCancelAndRetry() {
        XCTAssertEqual(next(.running, .released, attempt: 3, max: 3), .pending, "handing back never kills a job")
        for s in [JobState.pending, .placed, .dispatched, .running, .retryWait] { XCTAssertEqual(next(s, .cancelRequested), .cancelled) }
        for s in [JobState.succeeded, .failed, .dead, .cancelled] { XCTAssertNil(next(s, .cancelRequested)) }
        for s in [JobState.failed, .dead, .cancelled] { XCTAssertEqual(next(s, .retryRequested), .pending) }
        XCTAssertNil(next(.succeeded, .retryRequested))
    }

    func testBackoffIsExponentialCappedAndJittered() {
        let p = RetryPolicy(baseDelaySeconds: 2, maxDelaySeconds: 30, jitter: 0.5)
        XCTAssertEqual(p.decide(.transient, attempt: 1, maxAttempts: 10, random: 1), .retry(afterSeconds: 2))
        XCTAssertEqual(p.decide(.transient, attempt: 3, maxAttempts: 10, random: 1), .retry(afterSeconds: 8))
        XCTAssertEqual(p.decide(.transient, attempt: 3, maxAttempts: 10, random: 0), .retry(afterSeconds: 4))
        XCTAssertEqual(p.decide(.transient, attempt: 9, maxAttempts: 10, random: 1), .retry(afterSeconds: 30))
        XCTAssertEqual(p.decide(.permanent, attempt: 1, maxAttempts: 10, random: 0), .giveUp(.failed))
        XCTAssertEqual(p.decide(.oom, attempt: 10, maxAttempts: 10, random: 0), .giveUp(.dead))
    }
}
