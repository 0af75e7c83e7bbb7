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
    /// Jobs keyed by "job/attempt": two attempts of a job on the node are two allocations.
    private let state: Mutex<(devices: [Device], jobs: [String: (jobID: String, uuids: [String], bytes: UInt64)], services: [Int: UInt64])>

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

    public func allocate(jobID: String, attempt: Int = 0, uuids: [String], bytesPerGPU: UInt64) {
        state.withLock { s in s.jobs["\(jobID)/\(attempt)"] = (jobID, uuids, bytesPerGPU) }
    }

    public func release(jobID: String, attempt: Int = 0) {
        _ = state.withLock { s in s.jobs.removeValue(forKey: "\(jobID)/\(attempt)") }
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
        state.withLock { s in
            var gpus: [GPUInfo] = []
            var procs: [GPUProcess] = []
            for (i, d) in s.devices.enumerated() {
                var jobsBytes: UInt64 = 0
                var busy = false
                for (_, j) in s.jobs.sorted(by: { $0.key < $1.key }) where j.uuids.contains(d.info.uuid) {
                    // Saturating: envelopes' vram_bytes come from messages, and two near 2^64 must not trap.
                    jobsBytes = Self.add(jobsBytes, j.bytes)
                    busy = true
                    procs.append(GPUProcess(gpuUUID: d.info.uuid, pid: nil, usedMemoryBytes: j.bytes, processName: "hydra-job-\(j.jobID)"))
                }
                // A service's report includes the job it runs, so the two overlap: the larger one counts.
                let used = Self.add(d.baseline, max(jobsBytes, s.services[i] ?? 0))
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
}
