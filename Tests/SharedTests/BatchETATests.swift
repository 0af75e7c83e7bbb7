import XCTest
@testable import HydraCore

final class BatchETATests: XCTestCase {
    func testNoEstimateUntilSomethingFinished() {
        var e = BatchETA(window: 30)
        e.record(t: 0, finished: 0)
        XCTAssertNil(e.remaining(total: 10))
        e.record(t: 5, finished: 0)
        XCTAssertNil(e.remaining(total: 10))
        XCTAssertEqual(BatchETA.format(e.remaining(total: 10)), "--")
    }

    func testRateOverTheWindowOnly() throws {
        var e = BatchETA(window: 10)
        // Slow start: 1 job in the first 20 s, then 2 jobs a second.
        e.record(t: 0, finished: 0)
        e.record(t: 20, finished: 1)
        for t in stride(from: 21.0, through: 40, by: 1) { e.record(t: t, finished: 1 + Int(t - 20) * 2) }
        XCTAssertEqual(try XCTUnwrap(e.rate), 2, accuracy: 1e-9)
        // 41 finished at t=40; 59 left at 2/s.
        XCTAssertEqual(try XCTUnwrap(e.remaining(total: 100)), 29.5, accuracy: 1e-9)
        e.record(t: 41, finished: 100)
        XCTAssertEqual(e.remaining(total: 100), 0)
    }

    func testFormat() {
        XCTAssertEqual(BatchETA.format(42.4), "42s")
        XCTAssertEqual(BatchETA.format(185), "3m05s")
        XCTAssertEqual(BatchETA.format(3720), "1h02m")
        XCTAssertEqual(BatchETA.format(nil), "--")
        XCTAssertEqual(BatchETA.format(.infinity), "--")
    }
}
