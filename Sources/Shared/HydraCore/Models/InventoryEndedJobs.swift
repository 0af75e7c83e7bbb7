import Foundation

extension Inventory {
    /// The process name simulated GPUs (and agents that can attribute a process to a job) give a job's process.
    public static func jobProcessName(_ jobID: String) -> String { "hydra-job-\(jobID)" }

    /// This reading minus the VRAM of job processes whose jobs are no longer active. The agent
    /// reports a result only after the job's process is gone, so that memory is free even though
    /// the reading (up to one heartbeat old) still shows it; without this a GPU that just
    /// finished a job looks full until the next heartbeat, and the next job waits for it.
    public func withoutEndedJobs(active: Set<String>) -> Inventory {
        let prefix = Self.jobProcessName("")
        func ended(_ p: GPUProcess) -> Bool {
            guard let name = p.processName, name.hasPrefix(prefix) else { return false }
            return !active.contains(String(name.dropFirst(prefix.count)))
        }
        var freed: [String: UInt64] = [:]
        for p in processes where ended(p) { freed[p.gpuUUID, default: 0] += p.usedMemoryBytes ?? 0 }
        if freed.isEmpty { return self }
        var inv = self
        for i in inv.gpus.indices {
            guard let f = freed[inv.gpus[i].uuid], let used = inv.gpus[i].memoryUsedBytes else { continue }
            let d = min(used, f)
            inv.gpus[i].memoryUsedBytes = used - d
            if let free = inv.gpus[i].memoryFreeBytes { inv.gpus[i].memoryFreeBytes = free + d }
        }
        inv.processes.removeAll(where: ended)
        return inv
    }
}
