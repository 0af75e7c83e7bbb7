import XCTest
import HydraCore

final class InventoryEndedJobsTests: XCTestCase {
    func testEndedJobsMemoryIsFreedActiveOnesKept() {
        let gib: UInt64 = 1 << 30
        let inv = Inventory(gpus: [GPUInfo(index: 0, uuid: "g0", name: "RTX 4090", memoryTotalBytes: 24 * gib, memoryUsedBytes: 20 * gib,
                                           memoryFreeBytes: 4 * gib, utilizationGPUPercent: 97, temperatureCelsius: 70, powerDrawWatts: 300)],
                            processes: [GPUProcess(gpuUUID: "g0", pid: nil, usedMemoryBytes: 12 * gib, processName: "hydra-job-done"),
                                        GPUProcess(gpuUUID: "g0", pid: nil, usedMemoryBytes: 6 * gib, processName: "hydra-job-live"),
                                        GPUProcess(gpuUUID: "g0", pid: 42, usedMemoryBytes: 2 * gib, processName: "python")])
        let out = inv.withoutEndedJobs(active: ["live"])
        XCTAssertEqual(out.gpus[0].memoryUsedBytes, 8 * gib)
        XCTAssertEqual(out.gpus[0].memoryFreeBytes, 16 * gib)
        XCTAssertEqual(out.processes.compactMap(\.processName), ["hydra-job-live", "python"])
        XCTAssertEqual(inv.withoutEndedJobs(active: ["done", "live"]), inv)
    }
}
