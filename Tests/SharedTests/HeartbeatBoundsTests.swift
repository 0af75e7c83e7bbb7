import Foundation
import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraIO
@testable import HydraCoordinator

/// A signed heartbeat is only as sane as the agent that signed it: whatever numbers it carries are
/// refused at decode with the field named, or go through the coordinator's placement pass without
/// trapping. And what an agent does to its own streams stops only that node.
final class HeartbeatBoundsTests: XCTestCase {
    let keys = SigningKeys(current: Array("heartbeat-bounds-key-of-32-characters!!".utf8)).node("n1")
    let gib: UInt64 = 1 << 30

    func beat(capacity: Int = 8, gpus: [GPUInfo]? = nil, processes: [GPUProcess] = [], held: [HeldJob] = []) -> HeartbeatMessage {
        let g = gpus ?? [GPUInfo(index: 0, uuid: "GPU-0", name: "RTX", memoryTotalBytes: 24 * gib, memoryUsedBytes: gib, memoryFreeBytes: 23 * gib)]
        return HeartbeatMessage(node: "n1", instance: "i", seq: 1, sentAt: 0, state: "ready", version: "t", capacity: capacity,
                                inventory: Inventory(gpus: g, processes: processes), held: held)
    }

    func decode(_ hb: HeartbeatMessage) throws -> HeartbeatMessage {
        let f = try hb.fields(keys: keys)
        return try HeartbeatMessage.decode(Dictionary(uniqueKeysWithValues: stride(from: 0, to: f.count, by: 2).map { (f[$0], f[$0 + 1]) }),
                                           node: "n1", keys: keys)
    }

    func refusedField(_ hb: HeartbeatMessage, line: UInt = #line) -> String? {
        do { _ = try decode(hb); XCTFail("accepted", line: line); return nil } catch let e as ImplausibleHeartbeat {
            XCTAssertTrue(e.description.contains(e.field), line: line)
            return e.field
        } catch { XCTFail("\(error)", line: line); return nil }
    }

    // MARK: finding 1: capacity

    func testNodeLimitSaturatesInsteadOfTrappingOnAHugeCapacity() {
        var d = NodeDrain(window: 5)
        d.record(node: "n1", count: 3, now: 100)
        XCTAssertEqual(d.limit(node: "n1", capacity: Int.max, now: 100), Int.max)
        XCTAssertEqual(d.limit(node: "n1", capacity: 4, now: 100), 7)
    }

    // MARK: findings 2 and 4: refused at decode, with the field

    func testTheAuditsHeartbeatsAreRefusedNamingTheirField() {
        let max64 = UInt64.max
        func gpu(total: UInt64?, used: UInt64?, free: UInt64? = nil, index: Int? = 0) -> [GPUInfo] {
            [GPUInfo(index: index, uuid: "GPU-0", name: "RTX", memoryTotalBytes: total, memoryUsedBytes: used, memoryFreeBytes: free)]
        }
        let id = UUID().uuidString.lowercased()
        XCTAssertEqual(refusedField(beat(capacity: Int.max)), "capacity")
        XCTAssertEqual(refusedField(beat(capacity: -1)), "capacity")
        XCTAssertEqual(refusedField(beat(gpus: gpu(total: max64, used: max64, free: max64))), "inventory.gpus[0].memory_total_bytes")
        XCTAssertEqual(refusedField(beat(gpus: gpu(total: 24 * gib, used: max64, free: 0))), "inventory.gpus[0].memory_used_bytes")
        XCTAssertEqual(refusedField(beat(gpus: gpu(total: 24 * gib, used: 40 * gib))), "inventory.gpus[0].memory_used_bytes", "used far above total")
        XCTAssertNoThrow(try decode(beat(gpus: gpu(total: 24 * gib, used: 25 * gib))), "a driver's rounding above total is not a reason to call the node silent")
        XCTAssertEqual(refusedField(beat(gpus: gpu(total: 24 * gib, used: 0, index: -1))), "inventory.gpus[0].index")
        XCTAssertEqual(refusedField(beat(gpus: (0..<5000).map { GPUInfo(index: $0 % 8, uuid: "GPU-\($0)") })), "inventory.gpus")
        XCTAssertEqual(refusedField(beat(processes: [GPUProcess(gpuUUID: "GPU-0", usedMemoryBytes: max64)])), "inventory.processes[0].used_memory_bytes")
        XCTAssertEqual(refusedField(beat(held: [HeldJob(id: id, attempt: 9_999_999_999)])), "held[0].attempt")
        XCTAssertEqual(refusedField(beat(held: [HeldJob(id: id, attempt: 1), HeldJob(id: id, attempt: 0)])), "held[1].attempt")
        XCTAssertEqual(refusedField(beat(held: [HeldJob(id: "x'; DROP", attempt: 1)])), "held[0].id")
        // One rule with the agent's envelopes: lower case, no spaces around, exactly 36 characters.
        for bad in [id.uppercased(), " " + id, id + "\n", id + "0", String(id.dropLast())] {
            XCTAssertEqual(refusedField(beat(held: [HeldJob(id: bad, attempt: 1)])), "held[0].id", bad.debugDescription)
        }
        // The edges themselves are fine.
        XCTAssertNoThrow(try decode(beat(capacity: HeartbeatMessage.maxCapacity, gpus: gpu(total: 1 << 50, used: 1 << 50, free: 0),
                                         held: [HeldJob(id: id, attempt: Int(Int32.max))])))
    }

    // MARK: generative: refused, or placed without a trap

    /// Random heartbeats with extreme numbers (0, -1, 2^31, 2^53, 2^63−1, 2^64−1, huge GPU counts,
    /// used above total, duplicate UUIDs), each decoded as the coordinator does, and every accepted one
    /// put through the coordinator's own snapshot, the backpressure limit and a full placement pass.
    func testRandomExtremeHeartbeatsAreRefusedOrPlacedWithoutATrap() throws {
        let config = ClusterConfig(nodes: [
            NodeConfig(name: "n1", gpus: [GPUConfig(model: "RTX 4090", memory: .gib(24)), GPUConfig(model: "RTX 3060", memory: .gib(12))]),
            NodeConfig(name: "n2", gpus: [GPUConfig(model: "RTX 5090", memory: .gib(32))]),
        ], headroom: ByteCount(512 << 20))
        let service = CoordinatorService(settings: CoordinatorSettings(redis: try RedisEndpoint(url: "redis://127.0.0.1:1/0"),
                                                                       databaseURL: "postgresql://x@127.0.0.1:1/x", cluster: config))
        let bytes: [UInt64] = [0, 1, gib, 24 * gib, 1 << 31, 1 << 50, (1 << 50) + 1, 1 << 53, UInt64(Int64.max), UInt64(Int64.max) + 1, .max]
        let ints: [Int] = [0, -1, 1, 64, 1 << 31, Int(Int32.max), 1 << 53, Int.max, Int.min]
        let t0 = Date(timeIntervalSince1970: 1_750_000_000)
        // Words for argvs and allowlists: placeholders, options, empty, NUL, a lone brace, long, non-ASCII.
        let words = ["/bin/echo", "{text}", "{int}", "{path}", "{name}", "{", "{}", "-e", "", "\u{0}", "12", "a/../b",
                     String(repeating: "x", count: 5000), "ğ", "\u{202E}"]
        let jobs = (0..<12).map { i in
            RouterJob(id: "j\(i)", kind: "command",
                      spec: i % 3 == 0 ? .object(["argv": .array((0...(i % 4)).map { k in .string(words[(i + k) % words.count]) })]) : .object([:]),
                      vramRequestBytes: [nil, 0, gib, 20 * gib, 1 << 50, .max][i % 6],
                      gpusRequested: [0, 1, 2, 1][i % 4], submittedAt: t0)
        }
        var rng = SplitMix64(seed: 20261206)
        func pick<T>(_ a: [T]) -> T { a[Int(rng.next() % UInt64(a.count))] }
        // Each field extreme one time in four, so that plausible heartbeats with one odd field come up too.
        func anyBytes(_ usual: [UInt64]) -> UInt64? { rng.next() % 6 == 0 ? nil : rng.next() % 4 == 0 ? pick(bytes) : pick(usual) }
        func anyInt(_ usual: Int) -> Int { rng.next() % 4 == 0 ? pick(ints) : usual }
        var refused = 0, placed = 0, drain = NodeDrain(window: 5)
        drain.record(node: "n1", count: 5, now: t0.timeIntervalSince1970)
        for round in 0..<600 {
            let count = rng.next() % 20 == 0 ? pick([0, 1025, 3000]) : Int(rng.next() % 4)
            let gpus = (0..<count).map { i in
                GPUInfo(index: anyInt(i), uuid: rng.next() % 4 == 0 ? "GPU-dup" : "GPU-\(round)-\(i)", name: "RTX",
                        memoryTotalBytes: anyBytes([12 * gib, 24 * gib, 1 << 50]), memoryUsedBytes: anyBytes([0, gib, 12 * gib]),
                        memoryFreeBytes: anyBytes([0, gib]))
            }
            let processes = (0..<Int(rng.next() % 3)).map { _ in
                GPUProcess(gpuUUID: gpus.first?.uuid ?? "GPU-x", pid: pick(ints), usedMemoryBytes: anyBytes([gib, 1 << 50]),
                           processName: rng.next() % 2 == 0 ? "hydra-job-gone" : "python")
            }
            let held = (0..<Int(rng.next() % 3)).map { _ in HeldJob(id: rng.next() % 8 == 0 ? "not-a-uuid" : UUID().uuidString.lowercased(), attempt: anyInt(1)) }
            var sent = beat(capacity: anyInt(64), gpus: gpus, processes: processes, held: held)
            switch rng.next() % 8 {
            case 0: sent.commands = nil
            case 1: sent.commands = Array(repeating: ["/bin/true"], count: 1025)
            case 2: sent.commands = [[]]
            default: sent.commands = (0..<Int(rng.next() % 4)).map { _ in ["/bin/echo"] + (0..<Int(rng.next() % 3)).map { _ in pick(words) } }
            }
            let hb: HeartbeatMessage
            do {
                hb = try decode(sent)
            } catch let e as ImplausibleHeartbeat {
                XCTAssertFalse(e.problem.isEmpty)
                refused += 1
                continue
            }
            let nodes = [CoordinatorService.NodeBeat(name: "n1", beat: hb, draining: false),
                         CoordinatorService.NodeBeat(name: "n2", beat: hb, draining: rng.next() % 2 == 0)]
            let snap = service.snapshot(nodes: nodes, active: [], now: t0)
            let capacity = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, drain.limit(node: $0.name, capacity: max(0, $0.beat.capacity), now: t0.timeIntervalSince1970)) })
            var inputs = Dispatcher.Inputs(pending: jobs, snapshot: snap, stats: .empty, now: t0, policy: .hydra, explain: true, held: [:], capacity: capacity)
            inputs.reasonAfterSeconds = 0
            let plan = Dispatcher.plan(inputs)
            XCTAssertEqual(plan.router.assignments.count + plan.router.pending.count, jobs.count)
            placed += 1
        }
        XCTAssertGreaterThan(refused, 50, "the generator should hit the bounds often")
        XCTAssertGreaterThan(placed, 50, "and produce plausible heartbeats often")
    }

    // MARK: finding 3: the maximum stream id

    func testTheMaximumStreamIDExhaustsAStreamInsteadOfTrapping() {
        var a = StreamIDAllocator()
        let s = RedisKeys.jobs("n1"), max = "18446744073709551615-18446744073709551615"
        a.learned(stream: s, id: max)
        XCTAssertTrue(a.exhausted(stream: s, nowMillis: 1_750_000_000_000))
        XCTAssertNil(a.next(stream: s, nowMillis: 1_750_000_000_000))
        // One id short of the end: one more envelope fits, then none.
        var b = StreamIDAllocator()
        b.learned(stream: s, id: "18446744073709551615-18446744073709551614")
        XCTAssertFalse(b.exhausted(stream: s, nowMillis: 5))
        XCTAssertEqual(b.next(stream: s, nowMillis: 5), max)
        XCTAssertTrue(b.exhausted(stream: s, nowMillis: 5))
        XCTAssertNil(b.next(stream: s, nowMillis: 5))
        // Forgotten and re-learned from a deleted stream: usable again.
        b.forget(stream: s)
        b.learned(stream: s, xinfo: .error("ERR no such key"))
        XCTAssertFalse(b.exhausted(stream: s, nowMillis: 5))
        XCTAssertEqual(b.next(stream: s, nowMillis: 5), "5-0")
    }

    func testABlockedNodeIsReportedOnceAndLookedAtAgainLater() {
        var b = BlockedNodes(recheckAfter: 10)
        XCTAssertTrue(b.block("n1", reason: "stream_id_exhausted", now: 0))
        XCTAssertFalse(b.block("n1", reason: "stream_id_exhausted", now: 1), "the same reason again is not news")
        XCTAssertTrue(b.contains("n1"))
        XCTAssertFalse(b.contains("n2"))
        XCTAssertEqual(b.due(now: 5), [])
        XCTAssertEqual(b.due(now: 11), ["n1"])
        XCTAssertEqual(b.due(now: 12), [], "not again before another recheckAfter")
        XCTAssertTrue(b.contains("n1"), "stays blocked until the stream is seen usable")
        XCTAssertEqual(b.unblock("n1"), "stream_id_exhausted")
        XCTAssertTrue(b.isEmpty)
        XCTAssertEqual(BlockedNodes.reason(streamError: "ERR The stream has exhausted the last possible ID, unable to add more items"), "stream_id_exhausted")
        XCTAssertEqual(BlockedNodes.reason(streamError: "WRONGTYPE Operation against a key holding the wrong kind of value"), "not_a_stream")
        XCTAssertNil(BlockedNodes.reason(streamError: "ERR The ID specified in XADD is equal or smaller than the target stream top item"))
    }

    // MARK: finding 5: one node's results stream

    func testAFaultyResultsStreamIsLeftOutForAWhileAndLoggedOnce() {
        var f = StreamFaults(retryAfter: 5, logEvery: 60)
        let s = RedisKeys.results("n1")
        XCTAssertEqual(StreamFaults.reason("WRONGTYPE Operation against a key holding the wrong kind of value"), "not_a_stream")
        XCTAssertEqual(StreamFaults.reason("UNBLOCKED the stream key no longer exists"), "deleted")
        XCTAssertEqual(StreamFaults.reason("NOGROUP No such key 'x' or consumer group 'coordinator'"), "no_group")
        XCTAssertTrue(f.fault(s, reason: "deleted", now: 0))
        XCTAssertTrue(f.skips(s, now: 1))
        XCTAssertFalse(f.skips(RedisKeys.results("n2"), now: 1))
        XCTAssertFalse(f.skips(s, now: 6), "tried again after retryAfter")
        f.cleared(s)
        XCTAssertFalse(f.fault(s, reason: "deleted", now: 7), "a stream deleted every 100 ms is logged once a minute, not each time")
        XCTAssertTrue(f.fault(s, reason: "not_a_stream", now: 8), "a new reason is news")
        XCTAssertTrue(f.fault(s, reason: "not_a_stream", now: 70))
    }
}

/// A slow or hung nvidia-smi leaves the last GPU reading in the heartbeat; past 30 s the router stops
/// placing GPU jobs by it (CPU-only jobs still go there), and the age is a metric.
final class StaleGPUReadingTests: XCTestCase {
    let gib: UInt64 = 1 << 30

    func beat(age: Double?) -> HeartbeatMessage {
        HeartbeatMessage(node: "n1", instance: "i", seq: 1, sentAt: 0, state: "ready", version: "t", capacity: 8,
                         inventory: Inventory(gpus: [GPUInfo(index: 0, uuid: "GPU-0", name: "RTX", memoryTotalBytes: 24 * gib, memoryUsedBytes: gib)]),
                         held: [], sampleAgeS: age)
    }

    func testAnOldReadingKeepsGPUJobsOffTheNodeButNotCPUJobs() throws {
        let config = ClusterConfig(nodes: [NodeConfig(name: "n1", gpus: [GPUConfig(model: "RTX", memory: .gib(24))])])
        let service = CoordinatorService(settings: CoordinatorSettings(redis: try RedisEndpoint(url: "redis://127.0.0.1:1/0"),
                                                                       databaseURL: "postgresql://x@127.0.0.1:1/x", cluster: config))
        let t0 = Date(timeIntervalSince1970: 1_750_000_000)
        let jobs = [RouterJob(id: "gpu", kind: "command", vramRequestBytes: gib, gpusRequested: 1, submittedAt: t0),
                    RouterJob(id: "cpu", kind: "command", gpusRequested: 0, submittedAt: t0)]
        for (age, gpuPlaced) in [(nil, true), (2.0, true), (30.0, true), (45.0, false)] as [(Double?, Bool)] {
            let snap = service.snapshot(nodes: [CoordinatorService.NodeBeat(name: "n1", beat: beat(age: age), draining: false)], active: [], now: t0)
            let r = Router.place(pending: jobs, snapshot: snap, now: t0)
            XCTAssertEqual(r.assignments.contains { $0.jobID == "gpu" }, gpuPlaced, "age \(age.map { "\($0)" } ?? "nil")")
            XCTAssertTrue(r.assignments.contains { $0.jobID == "cpu" }, "a CPU job does not read the GPUs")
            if !gpuPlaced {
                let p = try XCTUnwrap(r.pending.first { $0.jobID == "gpu" })
                XCTAssertFalse(p.neverRunnable)
                XCTAssertTrue(p.message.contains("GPU readings 45 s old (nvidia-smi slow or hung)"), p.message)
            }
        }
    }

    func testTheAgeCrossesTheWireAndNonsenseIsRefused() throws {
        let back = try JSONCoding.decode(HeartbeatMessage.self, from: try JSONCoding.encodeString(beat(age: 12.5)))
        XCTAssertEqual(back.sampleAgeS, 12.5)
        XCTAssertNoThrow(try beat(age: 0).checkPlausible())
        for bad in [-1.0, 2e9] {
            XCTAssertThrowsError(try beat(age: bad).checkPlausible()) { XCTAssertEqual(($0 as? ImplausibleHeartbeat)?.field, "sample_age_s") }
        }
    }

    func testTheMetricsTheCoordinatorWritesAreRegistered() {
        // An unregistered name is dropped silently by the registry: hydra_cancels_unsent_total was, at first.
        let m = CoordinatorMetrics()
        m.registry.add("hydra_cancels_unsent_total", ["n1"])
        m.registry.set("hydra_node_gpu_sample_age_seconds", ["n1"], 41)
        let text = m.registry.render()
        XCTAssertTrue(text.contains("hydra_cancels_unsent_total{node=\"n1\"} 1"), text)
        XCTAssertTrue(text.contains("hydra_node_gpu_sample_age_seconds{node=\"n1\"} 41"), text)
    }
}
