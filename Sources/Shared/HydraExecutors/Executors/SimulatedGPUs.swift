import Foundation
import Synchronization
import HydraCore

/// GPUs that exist only in memory, for the demo, tests and benchmarks. Used VRAM
/// is the baseline a resident service holds plus every running job's VRAM; they
/// report through the same `Inventory` type as nvidia-smi.
public final class SimulatedGPUs: Sendable {
    struct Device: Sendable {
        var info: GPUInfo
        var baseline: UInt64
    }
    /// One attempt of one job: two attempts of a job on the node are two allocations.
    struct Key: Hashable, Sendable, Comparable {
        var jobID: String
        var attempt: Int
        static func < (a: Key, b: Key) -> Bool { (a.jobID, a.attempt) < (b.jobID, b.attempt) }
    }
    private let state: Mutex<(devices: [Device], jobs: [Key: (uuids: [String], bytes: UInt64)], services: [Int: UInt64])>

    public init(node: String, gpus: [GPUConfig]) {
        let devices = gpus.enumerated().map { i, g in
            Device(info: GPUInfo(index: i, uuid: Self.uuid(node: node, index: i), name: g.model, memoryTotalBytes: g.memory.bytes,
                                 memoryUsedBytes: g.baseline?.bytes ?? 0, memoryFreeBytes: g.memory.bytes - (g.baseline?.bytes ?? 0),
                                 utilizationGPUPercent: 0, temperatureCelsius: 35, powerDrawWatts: 20),
                   baseline: g.baseline?.bytes ?? 0)
        }
        state = Mutex((devices, [:], [:]))
    }

    /// Stable, recognisable UUIDs: the coordinator keys GPUs on them across restarts.
    public static func uuid(node: String, index: Int) -> String {
        var h: UInt64 = 14695981039346656037
        for b in node.utf8 { h = (h ^ UInt64(b)) &* 1099511628211 }
        let hex = String(h, radix: 16)
        let padded = String(repeating: "0", count: max(0, 16 - hex.count)) + hex
        return "GPU-5151\(padded.prefix(4))-\(padded.dropFirst(4).prefix(4))-\(padded.dropFirst(8).prefix(4))-\(padded.suffix(4))-0000000000\(String(format: "%02d", index))"
    }

    // Every job's worker thread calls these: the lock is held for one hash of an existing string, and a
    // CPU-only job (no GPU) is not recorded at all. Building a "job/attempt" key inside the lock made
    // the agents' threads spin on it and cost the no-op benchmark ~8 % (bench/e2e, this stop's note).
    public func allocate(jobID: String, attempt: Int = 0, uuids: [String], bytesPerGPU: UInt64) {
        guard !uuids.isEmpty else { return }
        let key = Key(jobID: jobID, attempt: attempt)
        state.withLock { s in s.jobs[key] = (uuids, bytesPerGPU) }
    }

    public func release(jobID: String, attempt: Int = 0) {
        let key = Key(jobID: jobID, attempt: attempt)
        // The removed entry is returned, so that it is freed after the lock is let go.
        _ = state.withLock { s in s.jobs.removeValue(forKey: key) }
    }

    /// VRAM resident services report holding, per GPU index (see ServiceVRAMProbe).
    public func setServiceHeld(_ bytes: [Int: UInt64]) {
        state.withLock { $0.services = bytes }
    }

    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, o) = a.addingReportingOverflow(b)
        return o ? .max : s
    }

    public func inventory() -> Inventory {
        // Copied out (copy-on-write: no element is copied) and computed without the lock the jobs' threads take.
        let (devices, jobs, services) = state.withLock { ($0.devices, $0.jobs, $0.services) }
        let sorted = jobs.sorted { $0.key < $1.key }
        var gpus: [GPUInfo] = []
        var procs: [GPUProcess] = []
        for (i, d) in devices.enumerated() {
            var jobsBytes: UInt64 = 0
            var busy = false
            for (key, j) in sorted where j.uuids.contains(d.info.uuid) {
                // Saturating: envelopes' vram_bytes come from messages, and two near 2^64 must not trap.
                jobsBytes = Self.add(jobsBytes, j.bytes)
                busy = true
                procs.append(GPUProcess(gpuUUID: d.info.uuid, pid: nil, usedMemoryBytes: j.bytes, processName: "hydra-job-\(key.jobID)"))
            }
            // A service's report includes the job it runs, so the two overlap: the larger one counts.
            let used = Self.add(d.baseline, max(jobsBytes, services[i] ?? 0))
            var info = d.info
            let total = info.memoryTotalBytes ?? 0
            info.memoryUsedBytes = min(used, total)
            info.memoryFreeBytes = total - min(used, total)
            info.utilizationGPUPercent = busy ? 97 : 0
            info.temperatureCelsius = busy ? 71 : 35
            info.powerDrawWatts = busy ? 300 : 20
            gpus.append(info)
        }
        return Inventory(gpus: gpus, processes: procs)
    }
}
