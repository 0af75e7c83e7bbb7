import Foundation

/// A decision to run a job now.
public struct Assignment: Sendable, Equatable, Codable {
    public var jobID: String
    public var node: String
    /// Empty for a CPU-only job.
    public var gpuUUIDs: [String]
    public var gpuIndices: [Int]
    /// VRAM reserved on each of the GPUs (0 for CPU-only jobs).
    public var reservedBytesPerGPU: UInt64
    public var expectedRuntimeS: Double
    public var expectedStart: Date
    public var expectedFinish: Date

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", node
        case gpuUUIDs = "gpu_uuids", gpuIndices = "gpu_indices"
        case reservedBytesPerGPU = "reserved_bytes_per_gpu"
        case expectedRuntimeS = "expected_runtime_s"
        case expectedStart = "expected_start", expectedFinish = "expected_finish"
    }
}

/// Why a job stays pending, for `hydra jobs --state pending` and `hydra status`.
public struct PendingReason: Sendable, Equatable, Codable {
    public enum Code: String, Sendable, Codable {
        /// No node could ever run it with this cluster config (service missing, too big, no such GPU).
        case unschedulable
        /// The nodes that could run it are down or draining.
        case waitingForNode = "waiting_for_node"
        /// Not enough free VRAM on any eligible GPU now.
        case insufficientVRAM = "insufficient_vram"
        /// A GPU fits now, but a busy faster one finishes it sooner.
        case waitingForBetterGPU = "waiting_for_better_gpu"
        /// The GPU it needs is held for a job ranked before it.
        case heldForOtherJob = "held_for_other_job"
        /// Every CPU slot on the eligible nodes is taken.
        case waitingForCPUSlot = "waiting_for_cpu_slot"
    }

    public var jobID: String
    public var code: Code
    /// One line with numbers, e.g. `needs 40.0 GiB on 1 GPU; most free: hydra-ai/0 RTX 5090 18.2 GiB`.
    public var message: String
    /// True when nothing short of a config change lets it run.
    public var neverRunnable: Bool

    enum CodingKeys: String, CodingKey {
        case jobID = "job_id", code, message
        case neverRunnable = "never_runnable"
    }
}

public struct PlacementResult: Sendable, Equatable {
    public var assignments: [Assignment]
    /// One entry for every job not assigned, in the pass's order.
    public var pending: [PendingReason]
    /// Parallel to `pending`: what turned each waiting job down, counted per filter and dimension.
    /// `pending[i].message` is rendered from these counts and the pass's facts after the pass.
    public var rejections: [RejectionCounts]

    public init(assignments: [Assignment] = [], pending: [PendingReason] = [], rejections: [RejectionCounts]? = nil) {
        self.assignments = assignments; self.pending = pending
        self.rejections = rejections ?? Array(repeating: RejectionCounts(), count: pending.count)
    }

    public func rejections(for jobID: String) -> RejectionCounts? {
        pending.firstIndex { $0.jobID == jobID }.map { rejections[$0] }
    }

    public func reason(for jobID: String) -> PendingReason? { pending.first { $0.jobID == jobID } }
    public func assignment(for jobID: String) -> Assignment? { assignments.first { $0.jobID == jobID } }
}
