import Foundation

/// One GPU as the agent sees it. Every reading is optional: nvidia-smi reports
/// `[N/A]`, `[Not Supported]` and friends, and those are "absent", never 0.
public struct GPUInfo: Codable, Sendable, Equatable {
    public var index: Int?
    public var uuid: String
    public var name: String?
    public var memoryTotalBytes: UInt64?
    public var memoryUsedBytes: UInt64?
    public var memoryFreeBytes: UInt64?
    public var utilizationGPUPercent: Double?
    public var temperatureCelsius: Double?
    public var powerDrawWatts: Double?

    public init(index: Int? = nil, uuid: String, name: String? = nil, memoryTotalBytes: UInt64? = nil,
                memoryUsedBytes: UInt64? = nil, memoryFreeBytes: UInt64? = nil, utilizationGPUPercent: Double? = nil,
                temperatureCelsius: Double? = nil, powerDrawWatts: Double? = nil) {
        self.index = index; self.uuid = uuid; self.name = name
        self.memoryTotalBytes = memoryTotalBytes; self.memoryUsedBytes = memoryUsedBytes
        self.memoryFreeBytes = memoryFreeBytes; self.utilizationGPUPercent = utilizationGPUPercent
        self.temperatureCelsius = temperatureCelsius; self.powerDrawWatts = powerDrawWatts
    }

    enum CodingKeys: String, CodingKey {
        case index, uuid, name
        case memoryTotalBytes = "memory_total_bytes"
        case memoryUsedBytes = "memory_used_bytes"
        case memoryFreeBytes = "memory_free_bytes"
        case utilizationGPUPercent = "utilization_gpu_percent"
        case temperatureCelsius = "temperature_celsius"
        case powerDrawWatts = "power_draw_watts"
    }

    // Explicit nulls: `probe --json` promises every key, null when not reported.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(index, forKey: .index)
        try c.encode(uuid, forKey: .uuid)
        try c.encode(name, forKey: .name)
        try c.encode(memoryTotalBytes, forKey: .memoryTotalBytes)
        try c.encode(memoryUsedBytes, forKey: .memoryUsedBytes)
        try c.encode(memoryFreeBytes, forKey: .memoryFreeBytes)
        try c.encode(utilizationGPUPercent, forKey: .utilizationGPUPercent)
        try c.encode(temperatureCelsius, forKey: .temperatureCelsius)
        try c.encode(powerDrawWatts, forKey: .powerDrawWatts)
    }
}

/// One compute process on a GPU (`--query-compute-apps`).
public struct GPUProcess: Codable, Sendable, Equatable {
    public var gpuUUID: String
    public var pid: Int?
    public var usedMemoryBytes: UInt64?
    public var processName: String?

    public init(gpuUUID: String, pid: Int? = nil, usedMemoryBytes: UInt64? = nil, processName: String? = nil) {
        self.gpuUUID = gpuUUID; self.pid = pid; self.usedMemoryBytes = usedMemoryBytes; self.processName = processName
    }

    enum CodingKeys: String, CodingKey {
        case gpuUUID = "gpu_uuid"
        case pid
        case usedMemoryBytes = "used_memory_bytes"
        case processName = "process_name"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(gpuUUID, forKey: .gpuUUID)
        try c.encode(pid, forKey: .pid)
        try c.encode(usedMemoryBytes, forKey: .usedMemoryBytes)
        try c.encode(processName, forKey: .processName)
    }
}

/// What a node reports: its GPUs and the processes on them.
public struct Inventory: Codable, Sendable, Equatable {
    public var gpus: [GPUInfo]
    public var processes: [GPUProcess]

    public init(gpus: [GPUInfo] = [], processes: [GPUProcess] = []) {
        self.gpus = gpus; self.processes = processes
    }
}
