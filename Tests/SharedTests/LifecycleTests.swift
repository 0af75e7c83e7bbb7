import XCTest
@testable import HydraCore

final class LifecycleTests: XCTestCase {
    func next(_ s: JobState, _ e: JobEvent, attempt: Int = 1, max: Int = 3) -> JobState? {
        JobStateMachine.transition(s, e, attempt: attempt, maxAttempts: max)?.to
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
        XCTAssertEqual(next(.pending, .dependencyFailed), .cancelled)
        XCTAssertNil(next(.running, .dependencyFailed), "a running job finishes; only waiting ones are doomed")
        XCTAssertEqual(next(.retryWait, .carried), .cancelled)
        XCTAssertNil(next(.running, .carried), "a job that started stays when the night ends")
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

    /// The effects follow from where a job goes, whichever event moved it: every way into a
    /// terminal state finishes the job, every way off a node leaves it, and nothing else does.
    func testEffectsFollowTheTargetState() {
        let events: [JobEvent] = [.submitted, .dispatched, .started, .succeeded, .released, .lost, .cancelRequested, .retryRequested,
                                  .backoffElapsed, .dependencyFailed, .carried, .resultQuarantined]
            + FailureClass.allCases.map { .failed($0) }
        var seen = 0
        for e in events {
            for s in JobState.allCases {
                for attempt in 1...3 {
                    guard let t = JobStateMachine.transition(s, e, attempt: attempt, maxAttempts: 3) else {
                        XCTAssertFalse(JobStateMachine.sources(e).contains(s), "\(e) from \(s) is listed as a source but does nothing")
                        continue
                    }
                    seen += 1
                    XCTAssertTrue(JobStateMachine.sources(e).contains(s), "\(e) from \(s) is not among its sources")
                    XCTAssertEqual(t.from, s)
                    XCTAssertEqual(t.effects.contains(.finish), t.to.isTerminal, "\(s) -\(e)-> \(t.to): finish iff terminal")
                    if s.isOnNode && !t.to.isOnNode && !t.to.isTerminal {
                        XCTAssertTrue(t.effects.contains(.leaveNode), "\(s) -\(e)-> \(t.to) keeps its node")
                    }
                    XCTAssertEqual(t.effects.contains(.backoff), t.to == .retryWait)
                    XCTAssertEqual(t.retryAfter != nil, t.effects.contains(.backoff))
                    if t.to == .cancelled { XCTAssertTrue(t.effects.contains(.tellNode), "a cancelled attempt's node must be told") }
                }
            }
        }
        XCTAssertGreaterThan(seen, 40)
        XCTAssertTrue(JobStateMachine.rule(.dispatched)!.effects.contains(.takeAttempt))
        XCTAssertEqual(Set(JobStateMachine.terminal), [.succeeded, .failed, .cancelled, .dead])
        XCTAssertEqual(JobStateMachine.sqlList([.pending, .retryWait]), "('pending', 'retry_wait')")
    }

    /// Every `UPDATE jobs … state = …` in the sources is the writer's or builds its SET list from
    /// the machine's effects: a new hand-written state change fails here.
    func testOnlyTheWriterWritesJobStates() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let sources = root.appendingPathComponent("Sources")
        let store: Set<String> = ["JobStore+Dispatch.swift", "JobStore+Results.swift", "JobStore+Housekeeping.swift"]
        // BenchConsoleCommand fakes a history in a scratch database for a benchmark of the console's reads;
        // BenchDepsCommand marks a whole entry done in one for a benchmark of the dependency reads.
        let allowed = store.union(["JobStateWriter.swift", "BenchConsoleCommand.swift", "BenchDepsCommand.swift"])
        var checked = 0
        for case let url as URL in FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil)! where url.pathExtension == "swift" {
            let text = try String(contentsOf: url, encoding: .utf8)
            checked += 1
            let writes = text.components(separatedBy: "UPDATE jobs").dropFirst().filter { chunk in
                let stmt = chunk.prefix(400)
                return stmt.range(of: "SET (.*[ ,(])?state = ", options: .regularExpression) != nil
            }
            if !writes.isEmpty { XCTAssertTrue(allowed.contains(url.lastPathComponent), "\(url.lastPathComponent) writes jobs.state itself") }
        }
        XCTAssertGreaterThan(checked, 50)
        // JobStore's own state writes all take their target and SET list from the machine.
        for f in store {
            let text = try String(contentsOf: sources.appendingPathComponent("Shared/HydraStore/Store/\(f)"), encoding: .utf8)
            XCTAssertNil(text.range(of: "SET state = '[a-z]", options: .regularExpression), "\(f) spells a target state by hand")
            XCTAssertTrue(text.contains("JobStateMachine") || text.contains("ResultFolder") || text.contains("JobStateWriter"), f)
        }
    }
}
