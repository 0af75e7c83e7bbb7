import Foundation
import XCTest
import HydraCore
import HydraWire
import HydraIO
import HydraExecutors

/// Bounds the agent puts on what reaches it: envelopes (job_id, vram_bytes), nvidia-smi's numbers and
/// output size, and the pure decisions of its heartbeat (state, capacity, stale samples, superseded attempts).
final class AgentBoundsTests: XCTestCase {
    func envelope(_ id: String = UUID().uuidString.lowercased(), attempt: Int = 1, vram: UInt64 = 0, gpus: [String] = []) -> Envelope {
        Envelope(jobID: id, attempt: attempt, kind: "sleep", spec: .object([:]), gpuUUIDs: gpus, vramBytes: vram, deadline: nil,
                 issuedAt: 0, expiresAt: nil, node: "n")
    }

    // MARK: E: job_id

    func testJobIDsThatAreNotLowerCaseUUIDsAreRefused() {
        for bad in ["../../../../tmp/x", "not-a-uuid\nwith newline 99 9999999999", "", ".", "..",
                    UUID().uuidString /* upper case */, UUID().uuidString.lowercased() + "\n", "/" + UUID().uuidString.lowercased().dropFirst(),
                    UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "/"), "\u{0}" + UUID().uuidString.lowercased().dropFirst()] {
            XCTAssertNotNil(EnvelopeCheck.refusal(envelope(String(bad))), "accepted \(bad.debugDescription)")
        }
        let why = EnvelopeCheck.refusal(envelope("../x\n1 2"))!
        XCTAssertFalse(why.contains("\n"), why)
        XCTAssertNil(EnvelopeCheck.refusal(envelope()))
        XCTAssertNotNil(EnvelopeCheck.refusal(envelope(attempt: 0)))
    }

    /// Generative: random strings over a hostile alphabet pass only if they are exactly a lower-case UUID.
    func testRandomJobIDsPassOnlyAsLowerCaseUUIDs() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("0123456789abcdefABCDEF-./\n\r \u{0}x\u{FFFD}é")
        for _ in 0..<5_000 {
            var s: String
            if Bool.random(using: &rng) {
                // A real UUID with one character changed, or none.
                var c = Array(UUID().uuidString.lowercased())
                if Bool.random(using: &rng) { c[Int.random(in: 0..<c.count, using: &rng)] = alphabet.randomElement(using: &rng)! }
                s = String(c)
            } else {
                s = String((0..<Int.random(in: 0...40, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
            }
            // An oracle independent of the checker (Foundation's UUID(uuidString:) on Linux accepts spaces and newlines).
            let expected = s.range(of: "\\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\\z", options: .regularExpression) != nil
            XCTAssertEqual(JobID.isCanonical(s), expected, s.debugDescription)
            if JobID.isCanonical(s) {
                XCTAssertFalse(s.contains("/") || s.contains("\n") || s.contains(" ") || s.contains("."))
            }
        }
    }

    // MARK: D: vram_bytes

    func testImplausibleVRAMFailsTheJobAndSumsSaturate() {
        XCTAssertNil(EnvelopeCheck.failure(envelope(vram: 1 << 50)))
        for v: UInt64 in [(1 << 50) + 1, 1 << 63, UInt64.max] {
            XCTAssertNotNil(EnvelopeCheck.failure(envelope(vram: v)), "\(v)")
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<10_000 {
            let a = UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)
            let b = UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)
            let (s, o) = a.addingReportingOverflow(b)
            XCTAssertEqual(Saturating.add(a, b), o ? .max : s)
        }
    }

    /// Two jobs at 2^64−1 on one simulated GPU trapped the agent (SimulatedGPUs.inventory).
    func testSimulatedGPUsNeverTrapOnHugeReservations() {
        let sim = SimulatedGPUs(node: "n", gpus: [GPUConfig(model: "RTX", memory: ByteCount(24 << 30))])
        let uuid = sim.inventory().gpus[0].uuid
        var rng = SystemRandomNumberGenerator()
        for round in 0..<200 {
            for k in 0..<3 {
                let v: UInt64 = round == 0 ? .max : [UInt64.max, 1 << 63, UInt64.random(in: 0...UInt64.max, using: &rng)].randomElement(using: &rng)!
                sim.allocate(jobID: "j\(k)", attempt: 1, uuids: [uuid], bytesPerGPU: v)
            }
            let g = sim.inventory().gpus[0]
            XCTAssertEqual((g.memoryUsedBytes ?? 0) + (g.memoryFreeBytes ?? 0), 24 << 30)
        }
    }

    // MARK: B: attempts

    func testANewerAttemptSupersedesOnlyOlderAttemptsOfItsOwnJob() {
        let held = [AttemptKey("a", 1), AttemptKey("a", 2), AttemptKey("b", 1), AttemptKey("a", 4)]
        XCTAssertEqual(AgentDecisions.superseded(by: AttemptKey("a", 3), held: held), [AttemptKey("a", 1), AttemptKey("a", 2)])
        XCTAssertEqual(AgentDecisions.superseded(by: AttemptKey("b", 1), held: held), [])
        XCTAssertEqual(AgentDecisions.superseded(by: AttemptKey("c", 9), held: held), [])
    }

    /// The agent's index of held attempts answers what the pure scan over every held key answers,
    /// through random inserts and removals (a stale index would stop the wrong attempt or none).
    func testTheHeldAttemptsIndexAgreesWithTheScanOverEveryKey() {
        var rng = SystemRandomNumberGenerator()
        var held = HeldAttempts<Int>()
        var model: [AttemptKey: Int] = [:]
        for step in 0..<20_000 {
            let key = AttemptKey("job-\(Int.random(in: 0..<12, using: &rng))", Int.random(in: 1...5, using: &rng))
            if Bool.random(using: &rng) {
                held.insert(key, step); model[key] = step
            } else {
                XCTAssertEqual(held.removeValue(forKey: key), model.removeValue(forKey: key))
            }
            let probe = AttemptKey("job-\(Int.random(in: 0..<13, using: &rng))", Int.random(in: 1...6, using: &rng))
            XCTAssertEqual(held.superseded(by: probe), AgentDecisions.superseded(by: probe, held: model.keys), "step \(step)")
            XCTAssertEqual(held.count, model.count)
            XCTAssertEqual(held[probe], model[probe])
        }
    }

    /// Attempt 1 ending must not free attempt 2's VRAM (the simulator keyed jobs by id only).
    func testSimulatedAllocationsAreKeptPerAttempt() {
        let sim = SimulatedGPUs(node: "n", gpus: [GPUConfig(model: "RTX", memory: ByteCount(24 << 30))])
        let uuid = sim.inventory().gpus[0].uuid
        sim.allocate(jobID: "j", attempt: 1, uuids: [uuid], bytesPerGPU: 1 << 30)
        sim.allocate(jobID: "j", attempt: 2, uuids: [uuid], bytesPerGPU: 2 << 30)
        sim.release(jobID: "j", attempt: 1)
        let inv = sim.inventory()
        XCTAssertEqual(inv.gpus[0].memoryUsedBytes, 2 << 30)
        XCTAssertEqual(inv.processes.map(\.processName), ["hydra-job-j"])
    }

    // MARK: A, C, F: heartbeat decisions

    func testHeartbeatStateStopsPlacementWhileDrainingOrTheStreamFails() {
        XCTAssertTrue(AgentDecisions.heartbeatState(draining: false, streamFailing: false, prefetch: 64) == ("ready", 64))
        XCTAssertTrue(AgentDecisions.heartbeatState(draining: true, streamFailing: false, prefetch: 64) == ("stopping", 64))
        XCTAssertTrue(AgentDecisions.heartbeatState(draining: false, streamFailing: true, prefetch: 64) == ("stopping", 0))
        // The coordinator's reading of it: `stopping` is what makes a node draining.
        let hb = HeartbeatMessage(node: "n", instance: "i", seq: 1, sentAt: 0,
                                  state: AgentDecisions.heartbeatState(draining: false, streamFailing: true, prefetch: 8).state,
                                  version: "v", capacity: 0, inventory: Inventory(), held: [])
        XCTAssertTrue(hb.stopping)
    }

    func testSampleStalenessUsesTheInjectedClock() {
        let t0 = Date(timeIntervalSince1970: 1_000)
        XCTAssertFalse(AgentDecisions.sampleIsStale(sampledAt: nil, startedAt: t0, now: t0.addingTimeInterval(10), interval: 1))
        XCTAssertTrue(AgentDecisions.sampleIsStale(sampledAt: nil, startedAt: t0, now: t0.addingTimeInterval(16), interval: 1))
        XCTAssertFalse(AgentDecisions.sampleIsStale(sampledAt: t0, startedAt: t0, now: t0.addingTimeInterval(14), interval: 1))
        XCTAssertTrue(AgentDecisions.sampleIsStale(sampledAt: t0, startedAt: t0, now: t0.addingTimeInterval(31), interval: 10))
    }

    // MARK: H: absurd nvidia-smi numbers

    let header = "index, uuid, name, memory.total [MiB], memory.used [MiB], memory.free [MiB], utilization.gpu [%], temperature.gpu, power.draw [W]"
    func row(total: String, used: String, free: String) -> String {
        "\(header)\n0, GPU-11111111-2222-3333-4444-555555555555, NVIDIA GeForce RTX 4090, \(total), \(used), \(free), 3 %, 40, 30.00 W\n"
    }

    func testAbsurdMemoryReadingsAreUnparsable() {
        for (t, u, f) in [("1 MiB", "8796093022207 MiB", "1 MiB"), ("99999999999999999999 MiB", "1 MiB", "1 MiB"),
                          ("24564 MiB", "24564 MiB", "99999 MiB"), ("1073741825 MiB", "0 MiB", "0 MiB")] {
            XCTAssertThrowsError(try NvidiaSMICSV.parseGPUs(row(total: t, used: u, free: f)), "\(t) \(u) \(f)") { e in
                guard case .unparsable(let why)? = e as? NvidiaSMIError else { return XCTFail("\(e)") }
                XCTAssertTrue(why.contains("memory."), why)
            }
        }
        XCTAssertNoThrow(try NvidiaSMICSV.parseGPUs(row(total: "24564 MiB", used: "24570 MiB", free: "0 MiB")))
        let procs = "gpu_uuid, pid, used_memory [MiB], process_name\nGPU-1, 5, 17592186044416 MiB, x\n"
        XCTAssertThrowsError(try NvidiaSMICSV.parseProcesses(procs))
    }

    /// Generative: whatever numbers a row carries, a parsed GPU's memory is at most 2^50 bytes and never
    /// more used or free than total (past the margin).
    func testRandomMemoryNumbersNeverParseIntoAbsurdGPUs() {
        var rng = SystemRandomNumberGenerator()
        func num() -> String {
            switch Int.random(in: 0..<6, using: &rng) {
            case 0: return String(UInt64.random(in: 0...UInt64.max, using: &rng))
            case 1: return String(Int.random(in: 0...100_000, using: &rng))
            case 2: return ["1e400", "-1", "NaN", "inf", "9007199254740993", "1073741824", "1073741825", "[N/A]"].randomElement(using: &rng)!
            case 3: return String(Double.random(in: 0...1e18, using: &rng))
            default: return String(Int.random(in: 0...1 << 40, using: &rng))
            }
        }
        for _ in 0..<3_000 {
            let text = row(total: num() + " MiB", used: num() + " MiB", free: num() + " MiB")
            guard let g = try? NvidiaSMICSV.parseGPUs(text).first else { continue }
            for v in [g.memoryTotalBytes, g.memoryUsedBytes, g.memoryFreeBytes].compactMap({ $0 }) { XCTAssertLessThanOrEqual(v, 1 << 50, text) }
            if let t = g.memoryTotalBytes {
                XCTAssertLessThanOrEqual(g.memoryUsedBytes ?? 0, t + NvidiaSMICSV.memoryMarginBytes, text)
                XCTAssertLessThanOrEqual(g.memoryFreeBytes ?? 0, t + NvidiaSMICSV.memoryMarginBytes, text)
            }
        }
    }

    // MARK: G, I: nvidia-smi's output

    var dir: URL!
    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-bounds-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func script(_ body: String) throws -> String {
        let url = dir.appendingPathComponent("smi")
        try ("#!/bin/sh\n" + body + "\n").write(to: url, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
        return url.path
    }

    /// `yes` as nvidia-smi grew `probe` to 3.8 GB in 5 s; now it is killed at the cap, with an error naming it.
    func testEndlessOutputIsCutAtTheCap() throws {
        let smi = try script("exec yes '0, GPU-x, NVIDIA, 1 MiB'")
        let t0 = Date()
        XCTAssertThrowsError(try NvidiaSMIReader(executable: smi, timeout: 30).read()) { e in
            guard case .unparsable(let why)? = e as? NvidiaSMIError else { return XCTFail("\(e)") }
            XCTAssertTrue(why.contains("\(NvidiaSMIReader.defaultMaxOutputBytes) bytes"), why)
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 10)
        // A small cap applies to stderr too.
        let noisy = try script("head -c 100000 /dev/zero >&2; exit 1")
        XCTAssertThrowsError(try NvidiaSMIReader(executable: noisy, timeout: 10, maxOutputBytes: 1000).read()) { e in
            guard case .unparsable(let why)? = e as? NvidiaSMIError else { return XCTFail("\(e)") }
            XCTAssertTrue(why.contains("1000 bytes"), why)
        }
    }

    /// NULs and invalid bytes from nvidia-smi never reach an error message (and so the log) raw.
    func testRawBytesAreExcerptedInErrors() throws {
        for body in ["printf '\\377\\376 garbage \\000 here\\n,,,,\\n\"unterminated\\n'",
                     "printf 'NVIDIA-SMI has failed \\000\\377\\n'; exit 9",
                     "printf 'ind\\000ex, uuid\\n0, GPU-1\\n'"] {
            let smi = try script(body)
            XCTAssertThrowsError(try NvidiaSMIReader(executable: smi).read(), body) { e in
                let text = "\(e)"
                XCTAssertFalse(text.contains("\u{0}") || text.contains("\u{FFFD}") || text.contains("\n"), text.debugDescription)
            }
        }
    }
}
