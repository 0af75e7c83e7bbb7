import Foundation
import XCTest
@testable import HydraCore
@testable import HydraTestSupport

final class ChaosPlanTests: XCTestCase {
    let nodes = ["hydra-ai", "hydra-compute", "hydra-storage"]

    func testEveryFaultKindAtLeastOnceAndTheSameSeedGivesTheSamePlan() {
        for seed in 1...50 as ClosedRange<UInt64> {
            let p = ChaosPlan.make(seed: seed, jobs: 300, nodes: nodes)
            XCTAssertEqual(Set(p.faults.map(\.kind)), Set(ChaosFault.allKinds), "seed \(seed)")
            XCTAssertEqual(p.chunks.count, p.faults.count + 1)
            XCTAssertEqual(p.chunks.reduce(0, +), 300)
            XCTAssertEqual(p, ChaosPlan.make(seed: seed, jobs: 300, nodes: nodes))
        }
        let big = ChaosPlan.make(seed: 9, jobs: 10_000, nodes: nodes)
        XCTAssertEqual(big.faults.count, ChaosFault.allKinds.count + 10)
        XCTAssertEqual(big.faults.filter { $0 == .restartRedis(persistence: false) }.count, 1, "the wiped Redis stays a one-off")
    }

    func testSplitAndWorkload() {
        XCTAssertEqual(ChaosPlan.split(10, into: 3), [4, 3, 3])
        XCTAssertEqual(ChaosPlan.split(2, into: 4), [1, 1, 0, 0])
        let b = ChaosWorkload.batch(name: "c", jobs: 500, seed: 1)
        XCTAssertEqual(b.jobs.count, 500)
        XCTAssertTrue(b.jobs.contains { $0.gpus == 0 } && b.jobs.contains { $0.gpus == 1 } && b.jobs.contains { $0.gpus == 2 })
        XCTAssertTrue(b.jobs.allSatisfy { ($0.spec["duration_s"]?.doubleValue ?? 9) <= 0.5 && $0.maxAttempts >= 10 })
    }
}

final class ChaosAccountingTests: XCTestCase {
    func ev(_ job: String, _ attempt: Int, _ from: String?, _ to: String, _ at: Double, _ detail: JSONValue? = nil) -> ChaosEvent {
        ChaosEvent(jobID: job, attempt: attempt, from: from, to: to, at: at, detail: detail)
    }

    func testLostDuplicatedAndRequeueTimeFromFaultToRedispatch() {
        let events = [
            ev("a", 1, "pending", "dispatched", 10, ["node": "n1"]),
            ev("a", 1, "dispatched", "running", 10.5),
            // n1 was killed at 12; the lease ran out at 16; dispatched again at 16.2.
            ev("a", 1, "running", "pending", 16, ["event": "lease_expired"]),
            ev("a", 2, "pending", "dispatched", 16.2, ["node": "n2"]),
            ev("a", 2, "dispatched", "succeeded", 17),
            // An agent restart reported b lost; no fault on its node: measured from the loss itself.
            ev("b", 1, "pending", "dispatched", 20, ["node": "n2"]),
            ev("b", 1, "running", "pending", 21, ["failure_class": "lost", "outcome": "failed"]),
            ev("b", 2, "pending", "dispatched", 22.5, ["node": "n3"]),
            // An ordinary failure is not a loss.
            ev("c", 1, "pending", "dispatched", 1, ["node": "n1"]),
            ev("c", 1, "running", "retry_wait", 2, ["failure_class": "transient"]),
            ev("c", 2, "pending", "dispatched", 30, ["node": "n1"]),
        ]
        let faults = [ChaosFaultRecord(fault: .killAgent("n1"), nodes: ["n1"], start: 12, end: 13),
                      ChaosFaultRecord(fault: .restartPostgreSQL, nodes: nil, start: 40, end: 45)]
        let r = ChaosAccounting.report(submitted: 5, states: ["a": "succeeded", "b": "succeeded", "c": "running", "d": "dead"],
                                       events: events, markers: ["a.1", "a.2", "b.1", "b.2", "b.2.dup.1234abcd", "b.2.dup.99"],
                                       faults: faults)
        XCTAssertEqual(r.succeeded, 2)
        XCTAssertEqual(r.dead, 1)
        XCTAssertEqual(r.lost, 2, "c is not final and one submitted job is missing")
        XCTAssertEqual(r.duplicated, 1)
        XCTAssertEqual(r.duplicatedAttempts, ["b.2"])
        XCTAssertEqual(r.requeues, 2)
        XCTAssertEqual(r.maxRequeueSeconds, 4.2, accuracy: 1e-9)
        XCTAssertEqual(r.maxRequeueCause, "kill_agent(n1)")
        XCTAssertFalse(r.ok)
        XCTAssertEqual(r.line, "chaos: submitted=5 succeeded=2 lost=2 duplicated=1 dead=1 max_requeue_s=4.2")
        XCTAssertEqual(r.faults, ["kill_agent": 1, "restart_postgresql": 1])
    }
}

final class TCPProxyTests: XCTestCase {
    /// An echo server on a loopback port, one thread per connection.
    func echoServer() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = TCPProxy.loopback(port: 0)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(fd, 16)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        Thread {
            while true {
                let c = accept(fd, nil, nil)
                if c < 0 { return }
                Thread {
                    var buf = [UInt8](repeating: 0, count: 1024)
                    while true {
                        let n = buf.withUnsafeMutableBytes { read(c, $0.baseAddress, $0.count) }
                        if n <= 0 { close(c); return }
                        _ = buf.withUnsafeBytes { send(c, $0.baseAddress, n, Int32(MSG_NOSIGNAL)) }
                    }
                }.start()
            }
        }.start()
        return (fd, Int(UInt16(bigEndian: bound.sin_port)))
    }

    func connectTo(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = TCPProxy.loopback(port: port)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        XCTAssertEqual(rc, 0)
        var tv = timeval(tv_sec: 3, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Sends "ping" and returns what came back ("" on EOF or error).
    func roundTrip(_ fd: Int32) -> String {
        _ = "ping".withCString { send(fd, $0, 4, Int32(MSG_NOSIGNAL)) }
        var buf = [UInt8](repeating: 0, count: 16)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
    }

    func testCutDropsConnectionsAndRefusesNewOnesUntilHealed() throws {
        let (server, port) = try echoServer()
        defer { close(server) }
        let proxy = TCPProxy(upstreamPort: port)
        let p = try proxy.start()
        defer { proxy.stop() }
        let c1 = connectTo(p)
        XCTAssertEqual(roundTrip(c1), "ping")
        proxy.cut()
        let t0 = Date()
        XCTAssertEqual(roundTrip(c1), "", "a cut connection ends")
        XCTAssertLessThan(Date().timeIntervalSince(t0), 1, "at once, not after a timeout")
        close(c1)
        let c2 = connectTo(p)
        XCTAssertEqual(roundTrip(c2), "", "new connections are closed while cut")
        close(c2)
        proxy.heal()
        let c3 = connectTo(p)
        XCTAssertEqual(roundTrip(c3), "ping")
        close(c3)
    }
}
