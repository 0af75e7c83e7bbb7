import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraStore

/// `ResultFolder.fold`: the pure half of `JobStore.apply`.
final class ResultFolderTests: XCTestCase {
    let a = "00000000-0000-4000-8000-00000000000a", b = "00000000-0000-4000-8000-00000000000b"

    func row(_ s: JobState, attempt: Int = 1, max: Int = 3, node: String? = "n1") -> ResultFolder.Row {
        ResultFolder.Row(state: s, attempt: attempt, maxAttempts: max, node: node, streamID: nil, kind: "sleep")
    }

    func fold(_ results: [AttemptResult], _ rows: [String: ResultFolder.Row]) throws -> ResultFolder.Folded {
        try ResultFolder.fold(results, current: rows, policy: RetryPolicy(), random: { 0.5 }, now: 1000)
    }

    func testStartedThenSucceededFoldIntoOneChangeWithTwoEvents() throws {
        let f = try fold([AttemptResult(jobID: a, attempt: 1, node: "n1", outcome: .started, startedAt: 10),
                          AttemptResult(jobID: a, attempt: 1, node: "n1", outcome: .succeeded, result: .string("ok"),
                                        startedAt: 10, durationSeconds: 2)], [a: row(.dispatched)])
        XCTAssertEqual(f.order, [a])
        let c = try XCTUnwrap(f.changes[a])
        XCTAssertEqual(c.from, .dispatched)
        XCTAssertEqual(c.to, .succeeded)
        XCTAssertTrue(c.finished)
        XCTAssertFalse(c.clearNode)
        XCTAssertEqual(c.startedAt, 10)
        XCTAssertEqual(f.events.map(\.from), [.dispatched, .running], "each event leaves the state the previous one reached")
        XCTAssertEqual(f.events.map(\.to), [.running, .succeeded])
        XCTAssertEqual(f.samples.map(\.seconds), [2])
    }

    func testOtherAttemptsOtherNodesAndLateMessagesChangeNothing() throws {
        let f = try fold([AttemptResult(jobID: a, attempt: 2, node: "n1", outcome: .succeeded),
                          AttemptResult(jobID: a, attempt: 1, node: "n2", outcome: .succeeded),
                          AttemptResult(jobID: b, attempt: 1, node: "n1", outcome: .started),
                          AttemptResult(jobID: "not-a-known-job", attempt: 1, node: "n1", outcome: .succeeded)],
                         [a: row(.dispatched), b: row(.succeeded)])
        XCTAssertTrue(f.order.isEmpty)
        XCTAssertTrue(f.events.isEmpty)
        XCTAssertTrue(f.applied.isEmpty)
    }

    func testAFailureFollowsThePolicyAndAReleaseCostsNoAttempt() throws {
        let f = try fold([AttemptResult(jobID: a, attempt: 1, node: "n1", outcome: .failed, failureClass: .transient, error: "boom"),
                          AttemptResult(jobID: b, attempt: 3, node: "n1", outcome: .released)],
                         [a: row(.running), b: row(.running, attempt: 3, max: 3)])
        let ca = try XCTUnwrap(f.changes[a]), cb = try XCTUnwrap(f.changes[b])
        XCTAssertEqual(ca.to, .retryWait)
        XCTAssertNotNil(ca.backoff)
        XCTAssertTrue(ca.clearNode)
        XCTAssertEqual(ca.failureClass, "transient")
        XCTAssertEqual(ca.errors.count, 1)
        XCTAssertEqual(cb.to, .pending)
        XCTAssertEqual(cb.maxBump, 1)
        XCTAssertTrue(cb.clearNode)
        XCTAssertFalse(cb.finished)
    }
}
