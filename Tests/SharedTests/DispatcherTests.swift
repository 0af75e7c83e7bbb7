import XCTest
@testable import HydraCore
@testable import HydraCoordinator
import HydraStore
import HydraIO

/// `Dispatcher.plan`: the router's choice, then the nodes' backpressure, then the reasons to write.
final class DispatcherTests: XCTestCase {
    var config: ClusterConfig!
    override func setUpWithError() throws { config = try RT.referenceConfig() }

    func inputs(_ jobs: [RouterJob], held: [String: Int] = [:], capacity: [String: Int], explain: Bool = true,
                now: Date = RT.t0.addingTimeInterval(5)) -> Dispatcher.Inputs {
        Dispatcher.Inputs(pending: jobs, snapshot: RT.snapshot(config), stats: .empty, now: now, policy: .hydra,
                          explain: explain, held: held, capacity: capacity)
    }

    func testANodeNeverHoldsMoreThanItMayAndTheRestWaitWithAReason() {
        let jobs = (0..<6).map { RT.job("c\($0)", kind: "sleep", vram: 1, constraints: ["node": "hydra-ai"]) }
        let p = Dispatcher.plan(inputs(jobs, held: ["hydra-ai": 1], capacity: ["hydra-ai": 3]))
        let placedByRouter = p.router.assignments.filter { $0.node == "hydra-ai" }.count
        XCTAssertGreaterThan(placedByRouter, 2, "the router must offer more than the node may take for this test to mean anything")
        XCTAssertEqual(p.assignments.count, 2, "1 held + 2 new = the node's capacity of 3")
        XCTAssertEqual(p.deferred.count, placedByRouter - 2)
        for (id, why) in p.deferred {
            XCTAssertFalse(p.assignments.contains { $0.jobID == id })
            XCTAssertTrue(why.contains("already holds 3 jobs"), why)
            XCTAssertEqual(p.reasons[id], why, "a deferred job's reason says why")
        }
    }

    func testTheCoordinatorsSnapshotCarriesEachRunningJobsPriority() throws {
        // The router counts a GPU that only interactive jobs use as idle for batch jobs: it reads
        // that from the running jobs' priorities, which the coordinator takes from their rows.
        let service = CoordinatorService(settings: CoordinatorSettings(redis: try RedisEndpoint(url: "redis://127.0.0.1:1"),
                                                                       databaseURL: "", cluster: config))
        func row(_ id: String, priority: Int) -> JobRow {
            JobRow(id: id, batchID: "b", name: id, kind: "llm", spec: .object([:]), state: .running, priority: priority,
                   vramBytes: 1 << 30, gpus: 1, constraints: .object([:]), attempt: 1, maxAttempts: 3, node: "hydra-ai",
                   gpuUUIDs: ["hydra-ai-gpu0"], submittedAt: 1, dispatchedAt: 2, startedAt: 3)
        }
        let snap = service.snapshot(nodes: [], active: [row("chat", priority: 10), row("batch", priority: 0)], now: RT.t0)
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: snap.running.map { ($0.id, $0.priority) }), ["chat": 10, "batch": 0])
    }

    func testUpcomingJobsReachTheRouterAndAreNeverDispatched() {
        // 28 GiB fits only the 5090; it waits on a dependency. The flexible job then takes the 4090.
        let big = RT.job("big", vram: 28, spec: ["base_runtime_s": 6000], constraints: ["service": .array([])])
        let flexible = RT.job("flexible", vram: 2, priority: 1, spec: ["base_runtime_s": 600], constraints: ["service": .array([])])
        var i = inputs([flexible], capacity: ["hydra-ai": 4])
        XCTAssertEqual(Dispatcher.plan(i).assignments.map(\.gpuIndices), [[0]])
        i.upcoming = [big]
        let p = Dispatcher.plan(i)
        XCTAssertEqual(p.assignments.map(\.jobID), ["flexible"])
        XCTAssertEqual(p.assignments.map(\.gpuIndices), [[1]])
        XCTAssertNil(p.reasons["big"])
    }

    func testANodeWithoutAHeartbeatTakesNothing() {
        let p = Dispatcher.plan(inputs([RT.job("a", kind: "sleep", vram: 1, constraints: ["node": "hydra-ai"])], capacity: [:]))
        XCTAssertEqual(p.router.assignments.count, 1)
        XCTAssertTrue(p.assignments.isEmpty)
        XCTAssertEqual(p.deferred.count, p.router.assignments.count)
    }

    func testReasonsOnlyWhenExplainingAndOnlyForJobsThatWaited() {
        // 40 GiB fits no GPU of the reference cluster: the job waits with a reason.
        let old = RT.job("old", vram: 40, at: 0), fresh = RT.job("fresh", vram: 40, at: 4.5)
        let p = Dispatcher.plan(inputs([old, fresh], capacity: [:]))
        XCTAssertNotNil(p.reasons["old"])
        XCTAssertNil(p.reasons["fresh"], "half a second of waiting needs no row version")
        XCTAssertTrue(Dispatcher.plan(inputs([old, fresh], capacity: [:], explain: false)).reasons.isEmpty)
        var many = inputs((0..<30).map { RT.job("j\($0)", vram: 40) }, capacity: [:])
        many.maxReasons = 7
        XCTAssertEqual(Dispatcher.plan(many).reasons.count, 7)
    }
}
