import XCTest
import HydraCore

final class DispatchGapTests: XCTestCase {
    func testGapCountsOnlyJobsThatWereWaiting() {
        var t = DispatchGapTracker()
        t.ended(gpus: ["g0"], at: 100)
        XCTAssertEqual(t.started(gpus: ["g0"], at: 100.02, submittedAt: 50).map { ($0 * 1000).rounded() }, [20])
        // Already consumed: a second job on the same GPU did not follow that end.
        XCTAssertEqual(t.started(gpus: ["g0"], at: 100.05, submittedAt: 50), [])
        // Submitted after the GPU freed: idle time, not a dispatch gap.
        t.ended(gpus: ["g0"], at: 200)
        XCTAssertEqual(t.started(gpus: ["g0"], at: 260, submittedAt: 250), [])
        // No end seen on this GPU yet.
        XCTAssertEqual(t.started(gpus: ["g1"], at: 10, submittedAt: 0), [])
    }

    func testMultiGPUJobClosesOneGapPerGPU() {
        var t = DispatchGapTracker()
        t.ended(gpus: ["a"], at: 10)
        t.ended(gpus: ["b"], at: 11)
        let gaps = t.started(gpus: ["a", "b"], at: 11.5, submittedAt: 0).sorted()
        XCTAssertEqual(gaps.count, 2)
        XCTAssertEqual(gaps[0], 0.5, accuracy: 1e-9)
        XCTAssertEqual(gaps[1], 1.5, accuracy: 1e-9)
    }
}
