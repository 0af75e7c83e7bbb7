import Foundation
import XCTest
import Synchronization
import HydraCore
import HydraIO
import HydraStore
import HydraConsole

/// The red team's finding: ten tabs polling a 100 000-job batch, or a page hammer on 64 threads, each
/// ran its aggregate on a connection of its own and starved the coordinator's dispatch (189 → 2 jobs/s).
final class ConsoleLoadTests: XCTestCase {
    /// At most `maxOpen` queries at once, however many request threads ask; one that finds every
    /// connection busy for `waitS` is refused with `PoolBusy`, and the pool works again after.
    func testThePoolHoldsAtMostItsLimitAndRefusesAfterItsWait() throws {
        let c = try Cluster()
        let pool = PGPool(url: c.dbURL, maxOpen: 2, waitS: 0.3)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        for _ in 0..<2 {
            Thread.detachNewThread {
                _ = try? pool.withStore { s -> Void in
                    _ = try s.db.exec("SELECT 1")
                    entered.signal()
                    release.wait()
                }
            }
        }
        for _ in 0..<2 { XCTAssertEqual(entered.wait(timeout: .now() + 10), .success) }
        let t0 = Date()
        XCTAssertThrowsError(try pool.withStore { _ in }) { XCTAssertTrue($0 is PGPool.PoolBusy, "\($0)") }
        XCTAssertGreaterThanOrEqual(Date().timeIntervalSince(t0), 0.25, "refused only after waiting")
        release.signal(); release.signal()
        XCTAssertEqual(try pool.withStore { try $0.db.exec("SELECT 7 AS v").all.first?["v"] }, "7")

        // 12 threads at once: never more than 2 inside, and with a wait long enough every one is served.
        let wide = PGPool(url: c.dbURL, maxOpen: 2, waitS: 30)
        let inside = Atomic<Int>(0), most = Atomic<Int>(0), served = Atomic<Int>(0)
        let done = DispatchGroup()
        for _ in 0..<12 {
            done.enter()
            Thread.detachNewThread {
                defer { done.leave() }
                _ = try? wide.withStore { s -> Void in
                    let n = inside.add(1, ordering: .relaxed).newValue
                    _ = most.max(n, ordering: .relaxed)
                    _ = try s.db.exec("SELECT pg_sleep(0.05)")
                    inside.subtract(1, ordering: .relaxed)
                    served.add(1, ordering: .relaxed)
                }
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(served.load(ordering: .relaxed), 12)
        XCTAssertEqual(most.load(ordering: .relaxed), 2, "the limit is used and never passed")
        pool.closeAll(); wide.closeAll()
    }

    /// The console answers a saturated pool with 503 and Retry-After, naming why, not "database not reachable".
    func testABusyConsoleSays503WithRetryAfter() throws {
        let c = try Cluster()
        let pool = PGPool(url: c.dbURL, maxOpen: 1, waitS: 0.2)
        let console = ConsoleServer(databaseURL: c.dbURL, settings: ConsoleSettings(), pool: pool)
        let entered = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        Thread.detachNewThread { _ = try? pool.withStore { _ in entered.signal(); release.wait() } }
        XCTAssertEqual(entered.wait(timeout: .now() + 10), .success)
        let r = console.handle(HTTPRequest(method: "GET", path: "/api/v1/batches", query: [:], headers: ["host": "127.0.0.1"], body: Data(), remoteAddress: "127.0.0.1"))
        release.signal()
        guard case .full(let status, let headers, let body) = r else { return XCTFail("\(r)") }
        XCTAssertEqual(status, 503)
        XCTAssertEqual(headers["Retry-After"], "1")
        XCTAssertTrue(String(decoding: body, as: UTF8.self).contains("the console is busy"), String(decoding: body, as: UTF8.self))
    }
}
