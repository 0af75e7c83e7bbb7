import Foundation
import XCTest
@testable import HydraCore
@testable import HydraExecutors

private let MiB: UInt64 = 1_048_576

/// The real captures in Fixtures/nvidia-smi (provenance in SOURCES.md there).
enum SMIFixtures {
    static var directory: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("nvidia-smi")
    }

    static func text(_ name: String) throws -> String {
        try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
    }

    static func allNames() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    /// Sections of a nvidia_gpu_exporter `*-capture.txt`. Each section starts
    /// with a block of `####…` / `# <title>` / `# $ <command>` / `####…` lines;
    /// the body runs to the next `####` line. Blank lines around the body are
    /// separators, not output.
    static func captureSections(_ text: String) -> [(title: String, body: String)] {
        let lines = text.components(separatedBy: "\n")
        var sections: [(String, String)] = []
        var i = 0
        while i < lines.count {
            guard lines[i].hasPrefix("####"), i + 1 < lines.count, lines[i + 1].hasPrefix("# ") else { i += 1; continue }
            let title = String(lines[i + 1].dropFirst(2))
            var j = i + 1
            while j < lines.count && !lines[j].hasPrefix("####") { j += 1 }
            var k = j + 1
            while k < lines.count && !lines[k].hasPrefix("####") { k += 1 }
            let body = lines[min(j + 1, lines.count)..<k].joined(separator: "\n")
            sections.append((title, body.trimmingCharacters(in: .newlines)))
            i = k
        }
        return sections
    }

    static func section(_ text: String, _ prefix: String) throws -> String {
        let matches = captureSections(text).filter { $0.title.hasPrefix(prefix) }
        guard matches.count == 1 else {
            throw XCTSkip("expected exactly one section \"\(prefix)\", found \(matches.count)")
        }
        return matches[0].body
    }

    /// Blocks of the 2021 sample files: a `# nvidia-smi <args>` comment line
    /// (the author's, not nvidia-smi's) followed by that command's output.
    static func sampleBlocks(_ text: String) -> [(command: String, body: String)] {
        var blocks: [(String, [String])] = []
        for line in text.components(separatedBy: "\n") {
            if line.hasPrefix("# nvidia-smi") {
                blocks.append((String(line.dropFirst(2)), []))
            } else if !blocks.isEmpty {
                blocks[blocks.count - 1].1.append(line)
            }
        }
        return blocks.map { ($0.0, $0.1.joined(separator: "\n").trimmingCharacters(in: .newlines)) }
    }
}

func assertUnparsable(_ text: String, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                      parse: (String) throws -> Any) {
    XCTAssertThrowsError(try parse(text), "\(what) was accepted as CSV", file: file, line: line) { error in
        guard case NvidiaSMIError.unparsable = error else {
            return XCTFail("\(what): expected .unparsable, got \(error)", file: file, line: line)
        }
    }
}

final class NvidiaSMICSVTests: XCTestCase {

    // MARK: Every fixture is exercised

    static let gpuCSVs = [
        "h100-80gb-590.48.01-linux-query-gpu-load.csv", "h100-mig-590.48.01-linux-query-gpu-load.csv",
        "h200-590.48.01-linux-query-gpu-load.csv", "l40s-595.80-linux-query-gpu-load.csv",
        "rtx2080super-471.11-windows-2021-query-gpu.csv", "rtx2080super-591.86-windows-query-gpu-load.csv",
        "rtx2080super-595.71.05-linux-query-gpu-load.csv", "rtx2080super-610.62-windows-query-gpu-load.csv",
        "rtx4080super-595.71.05-linux-query-gpu-load.csv", "tesla-p100-query-gpu-nounits.csv",
    ]
    static let appsCSVs = [
        "h100-80gb-590.48.01-linux-compute-apps-idle.csv", "h100-mig-590.48.01-linux-compute-apps-load.csv",
        "l40s-595.80-linux-compute-apps-load.csv", "rtx2080super-610.62-windows-compute-apps-idle.csv",
        "rtx4080super-595.71.05-linux-compute-apps-idle.csv",
    ]
    static let captures = [
        "h100-80gb-590.48.01-linux-capture.txt", "h100-mig-590.48.01-linux-capture.txt",
        "h200-590.48.01-linux-capture.txt", "l40s-595.80-linux-capture.txt",
        "rtx2080super-595.71.05-linux-capture.txt", "rtx4080super-595.71.05-linux-capture.txt",
    ]
    static let samples = ["rtx2080super-465.27-linux-2021-samples.txt", "rtx2080super-466.63-win10-2021-samples.txt"]
    static let notCSV = [
        "8x-a100-sxm4-40gb-460.32.03-q.txt", "8x-h100-535.161.08-q.txt", "8x-h100-550.90.07-table.txt",
        "8x-rtx4090-535.154.05-q-unknown-error.txt", "8x-rtx4090-535.154.05-q.txt",
        "geforce-525.125.06-table-err-excerpt.txt", "rtx2080super-591.86-windows-topo-m-error.txt",
        "rtx2080super-610.62-windows-table-idle.txt", "rtx2080super-610.62-windows-version.txt",
        "titan-v-560.35.03-q.txt",
    ]

    func testEveryFixtureHasATest() throws {
        let names = try SMIFixtures.allNames()
        let xml = names.filter { $0.hasSuffix(".xml") }
        XCTAssertEqual(xml.count, 14)
        let known = Set(Self.gpuCSVs + Self.appsCSVs + Self.captures + Self.samples + Self.notCSV + xml + ["SOURCES.md"])
        XCTAssertEqual(Set(names).subtracting(known), [], "fixtures without a test")
        XCTAssertEqual(known.subtracting(names), [], "tests for fixtures that are missing")
        XCTAssertEqual(names.count, 48)
    }

    // MARK: --query-gpu CSV files

    struct Expected {
        var uuid = "GPU-00000000-0000-0000-0000-000000000000"
        var name: String
        var index: Int? = 0
        var total: UInt64?, used: UInt64, free: UInt64
        var util: Double?, temp: Double, power: Double
    }

    static let expectedGPUs: [String: Expected] = [
        "h100-80gb-590.48.01-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA H100 80GB HBM3", total: 81559, used: 19818, free: 61263, util: 100, temp: 59, power: 631.95),
        "h100-mig-590.48.01-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA H100 80GB HBM3", total: 81559, used: 11125, free: 69956, util: nil, temp: 53, power: 433.78),
        "h200-590.48.01-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA H200", total: 143771, used: 32362, free: 110796, util: 100, temp: 52, power: 627.40),
        "l40s-595.80-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA L40S", total: 46068, used: 1235, free: 44225, util: 9, temp: 54, power: 110.23),
        "rtx2080super-471.11-windows-2021-query-gpu.csv":
            Expected(uuid: "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa", name: "NVIDIA GeForce RTX 2080 SUPER",
                     total: 8192, used: 876, free: 7316, util: 2, temp: 36, power: 32.70),
        "rtx2080super-591.86-windows-query-gpu-load.csv":
            Expected(name: "NVIDIA GeForce RTX 2080 SUPER", total: 8192, used: 1296, free: 6692, util: 7, temp: 45, power: 97.43),
        "rtx2080super-595.71.05-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA GeForce RTX 2080 SUPER", total: 8192, used: 819, free: 6967, util: 8, temp: 45, power: 111.50),
        "rtx2080super-610.62-windows-query-gpu-load.csv":
            Expected(name: "NVIDIA GeForce RTX 2080 SUPER", total: 8192, used: 1366, free: 6622, util: 7, temp: 44, power: 97.99),
        "rtx4080super-595.71.05-linux-query-gpu-load.csv":
            Expected(name: "NVIDIA GeForce RTX 4080 SUPER", total: 16376, used: 1474, free: 14470, util: 7, temp: 46, power: 84.24),
        // nounits: bare numbers under `[MiB]` headers; no index or memory.total column.
        "tesla-p100-query-gpu-nounits.csv":
            Expected(uuid: "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6", name: "Tesla P100-PCIE-16GB", index: nil,
                     total: nil, used: 0, free: 16280, util: 0, temp: 37, power: 28.16),
    ]

    func testEveryQueryGPUCSV() throws {
        XCTAssertEqual(Set(Self.expectedGPUs.keys), Set(Self.gpuCSVs))
        for (file, e) in Self.expectedGPUs.sorted(by: { $0.key < $1.key }) {
            let gpus = try NvidiaSMICSV.parseGPUs(SMIFixtures.text(file))
            XCTAssertEqual(gpus.count, 1, file)
            guard let g = gpus.first else { continue }
            XCTAssertEqual(g, GPUInfo(index: e.index, uuid: e.uuid, name: e.name,
                                      memoryTotalBytes: e.total.map { $0 * MiB }, memoryUsedBytes: e.used * MiB,
                                      memoryFreeBytes: e.free * MiB, utilizationGPUPercent: e.util,
                                      temperatureCelsius: e.temp, powerDrawWatts: e.power), file)
        }
    }

    func testH100LoadSpotCheck() throws {
        let g = try XCTUnwrap(NvidiaSMICSV.parseGPUs(SMIFixtures.text("h100-80gb-590.48.01-linux-query-gpu-load.csv")).first)
        XCTAssertEqual(g.memoryUsedBytes, 19818 * 1_048_576)
        XCTAssertEqual(g.memoryTotalBytes, 81559 * 1_048_576)
        XCTAssertEqual(g.utilizationGPUPercent, 100)
        XCTAssertEqual(g.temperatureCelsius, 59)
        XCTAssertEqual(g.powerDrawWatts, 631.95)
        XCTAssertEqual(g.name, "NVIDIA H100 80GB HBM3")
        XCTAssertEqual(g.uuid, "GPU-00000000-0000-0000-0000-000000000000")
    }

    func testMIGHasNoUtilizationButRealMemory() throws {
        let g = try XCTUnwrap(NvidiaSMICSV.parseGPUs(SMIFixtures.text("h100-mig-590.48.01-linux-query-gpu-load.csv")).first)
        XCTAssertNil(g.utilizationGPUPercent, "[N/A] must be absent, not 0")
        XCTAssertEqual(g.memoryUsedBytes, 11125 * MiB)
    }

    // MARK: --query-compute-apps CSV files

    func testEveryComputeAppsCSV() throws {
        let counts = [
            "h100-80gb-590.48.01-linux-compute-apps-idle.csv": 0, "h100-mig-590.48.01-linux-compute-apps-load.csv": 3,
            "l40s-595.80-linux-compute-apps-load.csv": 2, "rtx2080super-610.62-windows-compute-apps-idle.csv": 19,
            "rtx4080super-595.71.05-linux-compute-apps-idle.csv": 1,
        ]
        XCTAssertEqual(Set(counts.keys), Set(Self.appsCSVs))
        for (file, n) in counts {
            let procs = try NvidiaSMICSV.parseProcesses(SMIFixtures.text(file))
            XCTAssertEqual(procs.count, n, file)
            for p in procs {
                XCTAssertEqual(p.gpuUUID, "GPU-00000000-0000-0000-0000-000000000000", file)
                XCTAssertNotNil(p.pid, file)
                XCTAssertNotNil(p.processName, file)
            }
        }
    }

    func testComputeAppsValues() throws {
        let mig = try NvidiaSMICSV.parseProcesses(SMIFixtures.text("h100-mig-590.48.01-linux-compute-apps-load.csv"))
        XCTAssertEqual(mig, [
            GPUProcess(gpuUUID: "GPU-00000000-0000-0000-0000-000000000000", pid: 21180, usedMemoryBytes: 2296 * MiB,
                       processName: "/root/tools/memhog"),
            GPUProcess(gpuUUID: "GPU-00000000-0000-0000-0000-000000000000", pid: 21181, usedMemoryBytes: 1272 * MiB,
                       processName: "/root/tools/memhog"),
            GPUProcess(gpuUUID: "GPU-00000000-0000-0000-0000-000000000000", pid: 21198, usedMemoryBytes: 7484 * MiB,
                       processName: "./gpu_burn"),
        ])
        let kwin = try NvidiaSMICSV.parseProcesses(SMIFixtures.text("rtx4080super-595.71.05-linux-compute-apps-idle.csv"))
        XCTAssertEqual(kwin.first?.usedMemoryBytes, 25 * MiB)
        XCTAssertEqual(kwin.first?.processName, "/usr/bin/kwin_wayland")
    }

    func testWindowsComputeAppsHaveNoMemoryAndKeepPaths() throws {
        let procs = try NvidiaSMICSV.parseProcesses(SMIFixtures.text("rtx2080super-610.62-windows-compute-apps-idle.csv"))
        XCTAssertEqual(procs.count, 19)
        XCTAssertTrue(procs.allSatisfy { $0.usedMemoryBytes == nil }, "WDDM [N/A] must be absent, not 0")
        XCTAssertEqual(procs.first?.pid, 2140)
        XCTAssertEqual(procs.first?.processName, #"C:\Windows\System32\dwm.exe"#)
        XCTAssertTrue(procs.contains { $0.pid == 23988 && $0.processName == #"C:\Program Files (x86)\Microsoft\Edge\Application\msedge.exe"# })
        XCTAssertTrue(procs.contains { $0.processName == #"C:\Program Files\NVIDIA Corporation\NVIDIA App\CEF\NVIDIA Overlay.exe"# })
    }

    func testHeaderOnlyIsZeroRows() throws {
        XCTAssertEqual(try NvidiaSMICSV.parseProcesses(SMIFixtures.text("h100-80gb-590.48.01-linux-compute-apps-idle.csv")), [])
        XCTAssertEqual(try NvidiaSMICSV.parseGPUs("index, uuid, memory.used [MiB]\n"), [])
    }

    // MARK: Full captures

    func testEveryFullCapture() throws {
        let expected: [String: (total: UInt64, idleApps: Int, loadApps: Int)] = [
            "h100-80gb-590.48.01-linux-capture.txt": (81559, 0, 3),
            "h100-mig-590.48.01-linux-capture.txt": (81559, 0, 3),
            "h200-590.48.01-linux-capture.txt": (143771, 0, 3),
            "l40s-595.80-linux-capture.txt": (46068, 0, 2),
            "rtx2080super-595.71.05-linux-capture.txt": (8192, 0, 2),
            "rtx4080super-595.71.05-linux-capture.txt": (16376, 1, 3),
        ]
        XCTAssertEqual(Set(expected.keys), Set(Self.captures))
        for (file, e) in expected.sorted(by: { $0.key < $1.key }) {
            let text = try SMIFixtures.text(file)
            for (state, appCount) in [("idle", e.idleApps), ("load", e.loadApps)] {
                let gpus = try NvidiaSMICSV.parseGPUs(SMIFixtures.section(text, "\(state) :: query-gpu"))
                XCTAssertEqual(gpus.count, 1, "\(file) \(state)")
                XCTAssertEqual(gpus.first?.memoryTotalBytes, e.total * MiB, "\(file) \(state)")
                XCTAssertNotNil(gpus.first?.memoryUsedBytes, "\(file) \(state)")
                XCTAssertNotNil(gpus.first?.temperatureCelsius, "\(file) \(state)")
                let procs = try NvidiaSMICSV.parseProcesses(SMIFixtures.section(text, "\(state) :: query-compute-apps"))
                XCTAssertEqual(procs.count, appCount, "\(file) \(state)")
                XCTAssertTrue(procs.allSatisfy { $0.usedMemoryBytes != nil }, "\(file) \(state)")

                // The other output formats in the same capture are not CSV.
                for other in ["\(state) :: query (-q)", "\(state) :: nvidia-smi (default table)"] {
                    assertUnparsable(try SMIFixtures.section(text, other), "\(file) \(other)", parse: NvidiaSMICSV.parseGPUs)
                }
            }
            // The cut-out .csv files are exact slices of these captures.
            let base = file.replacingOccurrences(of: "-capture.txt", with: "")
            if Self.gpuCSVs.contains("\(base)-query-gpu-load.csv") {
                XCTAssertEqual(try NvidiaSMICSV.parseGPUs(SMIFixtures.section(text, "load :: query-gpu")),
                               try NvidiaSMICSV.parseGPUs(SMIFixtures.text("\(base)-query-gpu-load.csv")), file)
            }
        }
    }

    func testCaptureSpotValues() throws {
        let h100 = try SMIFixtures.text("h100-80gb-590.48.01-linux-capture.txt")
        let procs = try NvidiaSMICSV.parseProcesses(SMIFixtures.section(h100, "load :: query-compute-apps"))
        XCTAssertEqual(procs.last?.pid, 11345)
        XCTAssertEqual(procs.last?.processName, "./gpu_burn")
        XCTAssertEqual(procs.last?.usedMemoryBytes, 15690 * MiB)

        let mig = try SMIFixtures.text("h100-mig-590.48.01-linux-capture.txt")
        let idle = try XCTUnwrap(NvidiaSMICSV.parseGPUs(SMIFixtures.section(mig, "idle :: query-gpu")).first)
        XCTAssertNil(idle.utilizationGPUPercent)
    }

    func testOldSampleFiles() throws {
        let expected: [String: (used: UInt64, total: UInt64, temp: Double, power: Double)] = [
            "rtx2080super-465.27-linux-2021-samples.txt": (344, 7979, 32, 30.37),
            "rtx2080super-466.63-win10-2021-samples.txt": (856, 8192, 35, 31.12),
        ]
        XCTAssertEqual(Set(expected.keys), Set(Self.samples))
        for (file, e) in expected {
            let blocks = SMIFixtures.sampleBlocks(try SMIFixtures.text(file))
            let query = try XCTUnwrap(blocks.first { $0.command.hasPrefix("nvidia-smi --query-gpu") }, file)
            let g = try XCTUnwrap(NvidiaSMICSV.parseGPUs(query.body).first, file)
            XCTAssertEqual(g.uuid, "GPU-df6e7a7c-7314-46f8-abc4-b88b36dcf3aa", file)
            XCTAssertEqual(g.index, 0, file)
            XCTAssertEqual(g.memoryUsedBytes, e.used * MiB, file)
            XCTAssertEqual(g.memoryTotalBytes, e.total * MiB, file)
            XCTAssertEqual(g.temperatureCelsius, e.temp, file)
            XCTAssertEqual(g.powerDrawWatts, e.power, file)
            for other in blocks where !other.command.hasPrefix("nvidia-smi --query-gpu") {
                assertUnparsable(other.body, "\(file): \(other.command)", parse: NvidiaSMICSV.parseGPUs)
            }
        }
    }

    // MARK: Not CSV

    func testEveryNonCSVFixtureIsRejected() throws {
        let xml = try SMIFixtures.allNames().filter { $0.hasSuffix(".xml") }
        for file in Self.notCSV + xml {
            let text = try SMIFixtures.text(file)
            assertUnparsable(text, file, parse: NvidiaSMICSV.parseGPUs)
            assertUnparsable(text, file, parse: NvidiaSMICSV.parseProcesses)
        }
    }

    func testDriverErrorMessagesAreRejected() {
        for text in [
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n",
            "No devices were found\n",
            "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 535.183\n",
            "",
            "\n\n",
        ] {
            assertUnparsable(text, text.debugDescription, parse: NvidiaSMICSV.parseGPUs)
            assertUnparsable(text, text.debugDescription, parse: NvidiaSMICSV.parseProcesses)
        }
    }

    // MARK: Header-driven details

    func testAnyOrderAnySubsetWithAndWithoutUnits() throws {
        let withUnits = """
        power.draw [W], memory.used [MiB], uuid, utilization.gpu [%], name
        84.24 W, 1474 MiB, GPU-a, 7 %, Some GPU
        """
        let noUnits = """
        power.draw, memory.used, uuid, utilization.gpu, name
        84.24, 1474, GPU-a, 7, Some GPU
        """
        let headerUnitsOnly = """
        power.draw [W], memory.used [MiB], uuid, utilization.gpu [%], name
        84.24, 1474, GPU-a, 7, Some GPU
        """
        let want = GPUInfo(uuid: "GPU-a", name: "Some GPU", memoryUsedBytes: 1474 * MiB,
                           utilizationGPUPercent: 7, powerDrawWatts: 84.24)
        for text in [withUnits, noUnits, headerUnitsOnly] {
            XCTAssertEqual(try NvidiaSMICSV.parseGPUs(text), [want])
        }
    }

    func testAbsentValuesAreNilNeverZero() throws {
        for absent in ["[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]",
                       "[Requested functionality has been deprecated]", "[Function Not Found]", "",
                       "[GPU requires reset]"] {
            let text = "uuid, index, name, memory.total [MiB], memory.used [MiB], memory.free [MiB], "
                + "utilization.gpu [%], temperature.gpu, power.draw [W]\n"
                + "GPU-x, \(absent), \(absent), \(absent), \(absent), \(absent), \(absent), \(absent), \(absent)\n"
            XCTAssertEqual(try NvidiaSMICSV.parseGPUs(text), [GPUInfo(uuid: "GPU-x")], absent)
        }
    }

    func testPowerFallsBackToInstantThenAverage() throws {
        let gpus = try NvidiaSMICSV.parseGPUs("""
        uuid, power.draw [W], power.draw.instant [W], power.draw.average [W]
        GPU-a, 10.5 W, 11 W, 12 W
        GPU-b, [N/A], 11 W, 12 W
        GPU-c, [N/A], [N/A], 12 W
        GPU-d, [N/A], [N/A], [N/A]
        """)
        XCTAssertEqual(gpus.map(\.powerDrawWatts), [10.5, 11, 12, nil])
        let noDrawColumn = try NvidiaSMICSV.parseGPUs("uuid, power.draw.average [W]\r\nGPU-a, 70.25 W\r\n")
        XCTAssertEqual(noDrawColumn.first?.powerDrawWatts, 70.25)
    }

    func testProcessNameWithCommaSeparatorIsJoined() throws {
        let procs = try NvidiaSMICSV.parseProcesses("""
        gpu_uuid, pid, process_name, used_gpu_memory [MiB]
        GPU-a, 42, python train.py --tags a, b, c, 2048 MiB
        GPU-a, 43, a,b, [N/A]
        """)
        XCTAssertEqual(procs, [
            GPUProcess(gpuUUID: "GPU-a", pid: 42, usedMemoryBytes: 2048 * MiB, processName: "python train.py --tags a, b, c"),
            GPUProcess(gpuUUID: "GPU-a", pid: 43, usedMemoryBytes: nil, processName: "a,b"),
        ])
        XCTAssertEqual(try NvidiaSMICSV.parseProcesses("gpu_uuid, pid, used_memory [MiB], process_name\nGPU-a, 1, 5 MiB, x")
                        .first?.usedMemoryBytes, 5 * MiB)
    }

    func testMalformedRowsAreErrors() {
        let gpuHeader = "index, uuid, memory.used [MiB]\n"
        for (text, why) in [
            (gpuHeader + "0, GPU-a\n", "too few fields"),
            (gpuHeader + "0, GPU-a, 1 MiB, extra\n", "too many fields"),
            (gpuHeader + "0, GPU-a, 1 MiB\nUnable to determine the device handle for GPU 0000:3B:00.0: Unknown Error\n",
             "error line after a row"),
            (gpuHeader + "0, GPU-a, 1 MiB\n1, GPU-a, 2 MiB\n", "duplicate uuid"),
            (gpuHeader + "0, [N/A], 1 MiB\n", "no uuid"),
            (gpuHeader + "0, GPU-a, lots\n", "not a number"),
            (gpuHeader + "0, GPU-a, 1 parsecs\n", "unknown unit"),
            (gpuHeader + "zero, GPU-a, 1 MiB\n", "index not an integer"),
            ("index, name\n0, GPU\n", "no uuid column"),
        ] {
            assertUnparsable(text, why, parse: NvidiaSMICSV.parseGPUs)
        }
        assertUnparsable("pid, process_name\n1, x\n", "no gpu_uuid column", parse: NvidiaSMICSV.parseProcesses)
    }

    func testErrorDescriptionCarriesTheOffendingText() {
        XCTAssertThrowsError(try NvidiaSMICSV.parseGPUs("No devices were found\n")) { error in
            XCTAssertTrue("\(error)".contains("No devices were found"), "\(error)")
        }
    }
}

final class InventoryTableTests: XCTestCase {
    func testRendersValuesAndDashesForAbsent() {
        let inv = Inventory(
            gpus: [
                GPUInfo(index: 0, uuid: "GPU-a", name: "NVIDIA H100 80GB HBM3", memoryTotalBytes: 81559 * MiB,
                        memoryUsedBytes: 19818 * MiB, memoryFreeBytes: 61263 * MiB, utilizationGPUPercent: 100,
                        temperatureCelsius: 59, powerDrawWatts: 631.95),
                GPUInfo(index: 1, uuid: "GPU-b", name: "MIG parent", memoryTotalBytes: 81559 * MiB),
            ],
            processes: [
                GPUProcess(gpuUUID: "GPU-a", pid: 11345, usedMemoryBytes: 15690 * MiB, processName: "./gpu_burn"),
                GPUProcess(gpuUUID: "GPU-zzz", pid: nil, usedMemoryBytes: nil, processName: #"C:\Program Files (x86)\x.exe"#),
            ])
        let text = InventoryTable.render(inv)
        let lines = text.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines[0].split(separator: " ", omittingEmptySubsequences: true),
                       ["IDX", "NAME", "MEMORY", "FREE", "UTIL", "TEMP", "POWER"])
        XCTAssertTrue(lines[1].contains("19.4 / 79.6 GiB"), lines[1])
        XCTAssertTrue(lines[1].contains("59.8 GiB"), lines[1])
        XCTAssertTrue(lines[1].contains("100 %"), lines[1])
        XCTAssertTrue(lines[1].contains("59 C"), lines[1])
        XCTAssertTrue(lines[1].contains("632.0 W"), lines[1])
        XCTAssertTrue(lines[2].contains("- / 79.6 GiB"), lines[2])
        XCTAssertFalse(lines[2].contains(" 0 "), "absent readings must not print as 0: \(lines[2])")
        XCTAssertTrue(lines[2].hasSuffix(" -"), lines[2])
        XCTAssertTrue(text.contains("PROCESSES"))
        let gpuBurn = lines.first { $0.contains("./gpu_burn") }
        XCTAssertEqual(gpuBurn?.split(separator: " ", omittingEmptySubsequences: true), ["0", "11345", "15.3", "GiB", "./gpu_burn"])
        XCTAssertTrue(lines.contains { $0.hasPrefix("GPU-zzz") && $0.contains(#"C:\Program Files (x86)\x.exe"#) })
        XCTAssertFalse(lines.contains { $0.hasSuffix(" ") }, "no trailing spaces")
    }

    func testEmptyInventory() {
        XCTAssertEqual(InventoryTable.render(Inventory()), "No NVIDIA GPUs.\n\nPROCESSES\nNo compute processes.\n")
    }

    func testFixedPointFormatting() {
        XCTAssertEqual(InventoryTable.fixed(631.95, 1), "632.0")
        XCTAssertEqual(InventoryTable.fixed(0.04, 1), "0.0")
        XCTAssertEqual(InventoryTable.fixed(7, 0), "7")
        XCTAssertEqual(InventoryTable.fixed(19.35, 2), "19.35")
        XCTAssertEqual(InventoryTable.fixed(1.05, 1), "1.1")
    }
}

final class NvidiaSMIReaderTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-smi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func script(_ name: String, _ body: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try ("#!/bin/sh\n" + body + "\n").write(to: url, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
        return url.path
    }

    /// Prints one capture for --query-gpu and another for --query-compute-apps,
    /// and insists on the query and locale the reader promises.
    func replayScript() throws -> String {
        let gpus = SMIFixtures.directory.appendingPathComponent("h100-mig-590.48.01-linux-query-gpu-load.csv").path
        let apps = SMIFixtures.directory.appendingPathComponent("h100-mig-590.48.01-linux-compute-apps-load.csv").path
        return try script("fake-smi", """
        [ "$LC_ALL" = C ] || { echo "LC_ALL is '$LC_ALL'" >&2; exit 3; }
        [ "$2" = --format=csv ] || { echo "bad format arg '$2'" >&2; exit 4; }
        case "$1" in
          "\(NvidiaSMIReader.gpuQuery)") cat '\(gpus)' ;;
          "\(NvidiaSMIReader.appsQuery)") cat '\(apps)' ;;
          *) echo "unexpected args: $*" >&2; exit 2 ;;
        esac
        """)
    }

    func testReadsBothQueries() throws {
        let inv = try NvidiaSMIReader(executable: replayScript()).read()
        XCTAssertEqual(inv.gpus.count, 1)
        XCTAssertEqual(inv.gpus.first?.memoryUsedBytes, 11125 * MiB)
        XCTAssertNil(inv.gpus.first?.utilizationGPUPercent)
        XCTAssertEqual(inv.processes.map(\.pid), [21180, 21181, 21198])
    }

    func testShippedReplayScript() throws {
        let replay = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("deploy/fake-nvidia-smi/replay.sh").path
        guard FileManager.default.isExecutableFile(atPath: replay) else {
            throw XCTSkip("source tree not available at \(replay)")
        }
        let gpus = SMIFixtures.directory.appendingPathComponent("l40s-595.80-linux-query-gpu-load.csv").path
        let apps = SMIFixtures.directory.appendingPathComponent("l40s-595.80-linux-compute-apps-load.csv").path
        let wrapper = try script("replay-wrapper", """
        HYDRA_FAKE_SMI_GPUS='\(gpus)' HYDRA_FAKE_SMI_APPS='\(apps)' exec '\(replay)' "$@"
        """)
        let inv = try NvidiaSMIReader(executable: wrapper).read()
        XCTAssertEqual(inv.gpus.first?.name, "NVIDIA L40S")
        XCTAssertEqual(inv.processes.map(\.usedMemoryBytes), [538 * MiB, 681 * MiB])

        let usage = try ChildProcess.run(replay, arguments: ["-q"], environment: [:], timeout: 5)
        XCTAssertEqual(usage.exitStatus, 2)
        XCTAssertTrue(String(decoding: usage.stderr, as: UTF8.self).contains("usage"))
    }

    func testDriverFailureCarriesExitStatusAndWords() throws {
        let exe = try script("broken-smi", """
        echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
        exit 9
        """)
        XCTAssertThrowsError(try NvidiaSMIReader(executable: exe).read()) { error in
            guard case NvidiaSMIError.failed(let status, let output) = error else {
                return XCTFail("expected .failed, got \(error)")
            }
            XCTAssertEqual(status, 9)
            XCTAssertTrue(output.hasPrefix("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."), output)
            XCTAssertTrue("\(error)".contains("status 9"), "\(error)")
            XCTAssertTrue("\(error)".contains("couldn't communicate with the NVIDIA driver"), "\(error)")
        }
    }

    func testStderrIsPartOfTheFailureWords() throws {
        let exe = try script("nvml-smi", "echo 'Failed to initialize NVML: Driver/library version mismatch' >&2; exit 18")
        XCTAssertThrowsError(try NvidiaSMIReader(executable: exe).read()) { error in
            XCTAssertEqual(error as? NvidiaSMIError,
                           .failed(exitStatus: 18, output: "Failed to initialize NVML: Driver/library version mismatch"))
        }
    }

    func testErrorTextWithExitZeroIsUnparsable() throws {
        let exe = try script("liar-smi", "echo 'No devices were found'; exit 0")
        XCTAssertThrowsError(try NvidiaSMIReader(executable: exe).read()) { error in
            guard case NvidiaSMIError.unparsable(let why) = error else { return XCTFail("got \(error)") }
            XCTAssertTrue(why.contains("No devices were found"), why)
        }
    }

    func testHangingToolIsKilledAtTheDeadline() throws {
        let exe = try script("hung-smi", "sleep 30")
        let start = ContinuousClock.now
        XCTAssertThrowsError(try NvidiaSMIReader(executable: exe, timeout: 0.5).read()) { error in
            XCTAssertEqual(error as? NvidiaSMIError, .timedOut(0.5))
        }
        let elapsed = ContinuousClock.now - start
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(490))
        XCTAssertLessThan(elapsed, .seconds(5), "the reader waited for the hung child instead of killing it")
    }

    func testMissingExecutableIsNotFound() {
        let path = dir.appendingPathComponent("no-such-nvidia-smi").path
        XCTAssertThrowsError(try NvidiaSMIReader(executable: path).read()) { error in
            XCTAssertEqual(error as? NvidiaSMIError, .notFound(path))
            XCTAssertTrue("\(error)".contains(path))
        }
        XCTAssertThrowsError(try NvidiaSMIReader(executable: "hydra-no-such-nvidia-smi-on-path").read()) { error in
            XCTAssertEqual(error as? NvidiaSMIError, .notFound("hydra-no-such-nvidia-smi-on-path"))
        }
    }

    func testLargeOutputOnBothStreamsDoesNotDeadlock() throws {
        // Well past the 64 KiB pipe buffer on each stream, written stderr first:
        // a reader that drained stdout alone would deadlock here.
        let exe = try script("chatty", """
        i=0; while [ $i -lt 5000 ]; do echo "warning line $i padded to be quite long ........................." >&2; i=$((i+1)); done
        echo 'gpu_uuid, pid, process_name, used_memory [MiB]'
        i=0; while [ $i -lt 3000 ]; do echo "GPU-a, $i, /usr/bin/some-long-process-name-for-padding, 1 MiB"; i=$((i+1)); done
        """)
        let result = try ChildProcess.run(exe, arguments: [], environment: [:], timeout: 20)
        XCTAssertEqual(result.exitStatus, 0)
        XCTAssertGreaterThan(result.stderr.count, 65536 * 2)
        let procs = try NvidiaSMICSV.parseProcesses(String(decoding: result.stdout, as: UTF8.self))
        XCTAssertEqual(procs.count, 3000)
        XCTAssertEqual(procs.last?.pid, 2999)
    }

    func testKilledBySignalIsReportedShellStyle() throws {
        let exe = try script("selfkill", "echo dying; kill -TERM $$")
        let result = try ChildProcess.run(exe, arguments: [], environment: [:], timeout: 5)
        XCTAssertEqual(result.exitStatus, 128 + 15)
    }
}

final class NvidiaSMIXMLTests: XCTestCase {
    struct Expected {
        var uuid: String, name: String
        var total: UInt64, used: UInt64, free: UInt64
        var util: Double?, temp: Double, power: Double?
        var processes: Int
    }

    static let expected: [String: Expected] = [
        "a100-sxm4-40gb-mig-510.47.03-q-x.xml": Expected(
            uuid: "GPU-27b94a00-ed54-5c24-b1fd-1054085de32a", name: "NVIDIA A100-SXM4-40GB",
            total: 40960, used: 38, free: 40315, util: nil, temp: 36, power: 66.92, processes: 0),
        "a100-sxm4-80gb-mig-535.54.03-q-x.xml": Expected(
            uuid: "GPU-513536b6-7d19-9063-b049-1e69664bb298", name: "NVIDIA A100-SXM4-80GB",
            total: 81920, used: 50, free: 80999, util: nil, temp: 27, power: 67.03, processes: 0),
        "a10g-515.105.01-q-x.xml": Expected(
            uuid: "GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94", name: "NVIDIA A10G",
            total: 23028, used: 22, free: 22569, util: 0, temp: 17, power: 25.58, processes: 0),
        "grid-p4-1q-vgpu-513.46-q-x.xml": Expected(
            uuid: "GPU-1b1ea7c7-1c4b-ed49-1c72-26c65f2dd207", name: "GRID P4-1Q",
            total: 1024, used: 807, free: 106, util: 0, temp: 0, power: nil, processes: 13),
        "gt1030-470.74-q-x.xml": Expected(
            uuid: "GPU-857c6374-f681-cf3a-f99f-9063a87b8ac0", name: "NVIDIA GeForce GT 1030",
            total: 1998, used: 875, free: 1123, util: 0, temp: 36, power: nil, processes: 0),
        "gtx1660ti-418.43-q-x.xml": Expected(
            uuid: "GPU-304a277d-3545-63b8-3a36-dfde3c992989", name: "Graphics Device",
            total: 5912, used: 0, free: 5912, util: 0, temp: 40, power: 8.93, processes: 0),
        "rtx-pro-6000-blackwell-maxq-590.44.01-q-x.xml": Expected(
            uuid: "GPU-12345678-aaaa-bbbb-cccc-0123456789ab",
            name: "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
            total: 97887, used: 65720, free: 31531, util: 0, temp: 24, power: 3.99, processes: 1),
        "rtx3060-570.124.04-q-x.xml": Expected(
            uuid: "GPU-d6889ff6-2523-9142-ca3c-1ca3f396a625", name: "NVIDIA GeForce RTX 3060",
            total: 12288, used: 116, free: 11806, util: 0, temp: 42, power: 11.63, processes: 0),
        "rtx3080-595.58.03-q-x.xml": Expected(
            uuid: "GPU-19d6d965-2acc-f646-00f8-4c76979aabb4", name: "NVIDIA GeForce RTX 3080",
            total: 10240, used: 9184, free: 660, util: 65, temp: 27, power: 142.33, processes: 0),
        "rtx3090-525.147.05-q-x.xml": Expected(
            uuid: "GPU-12345678-aaaa-bbbb-cccc-0123456789ab", name: "NVIDIA GeForce RTX 3090",
            total: 24576, used: 1, free: 24258, util: 0, temp: 37, power: 27.23, processes: 0),
        "rtx4000-sff-ada-595.84-q-x.xml": Expected(
            uuid: "GPU-37037c3f-65c8-ec4d-24a9-420204ad8026", name: "NVIDIA RTX 4000 SFF Ada Generation",
            total: 20475, used: 3534, free: 16482, util: 0, temp: 38, power: 8.44, processes: 2),
        "rtx4090-535.86.05-q-x.xml": Expected(
            uuid: "GPU-71d1acc2-662d-2166-bf9f-65272d2fc437", name: "NVIDIA GeForce RTX 4090",
            total: 24564, used: 2, free: 24214, util: 0, temp: 40, power: 26.84, processes: 0),
        "tesla-t4-515.105.01-q-x.xml": Expected(
            uuid: "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", name: "Tesla T4",
            total: 15360, used: 1032, free: 13939, util: 0, temp: 40, power: 26.78, processes: 1),
    ]

    func testEverySingleGPUXMLFixture() throws {
        let xml = try SMIFixtures.allNames().filter { $0.hasSuffix(".xml") }
        XCTAssertEqual(Set(xml), Set(Self.expected.keys).union(["2x-rtx2080-590.44.01-q-x.xml"]))
        for (file, e) in Self.expected.sorted(by: { $0.key < $1.key }) {
            let inv = try NvidiaSMIXML.parse(SMIFixtures.text(file))
            XCTAssertEqual(inv.gpus, [GPUInfo(index: 0, uuid: e.uuid, name: e.name, memoryTotalBytes: e.total * MiB,
                                              memoryUsedBytes: e.used * MiB, memoryFreeBytes: e.free * MiB,
                                              utilizationGPUPercent: e.util, temperatureCelsius: e.temp,
                                              powerDrawWatts: e.power)], file)
            XCTAssertEqual(inv.processes.count, e.processes, file)
            XCTAssertTrue(inv.processes.allSatisfy { $0.gpuUUID == e.uuid }, file)
        }
    }

    func testXMLProcessesMatchComputeApps() throws {
        let t4 = try NvidiaSMIXML.parse(SMIFixtures.text("tesla-t4-515.105.01-q-x.xml"))
        XCTAssertEqual(t4.processes, [GPUProcess(gpuUUID: "GPU-d37e67a5-91dd-3774-a5cb-99096249601a", pid: 5762,
                                                 usedMemoryBytes: 1005 * MiB, processName: "python")],
                       "the Xorg (G) process is not a compute app")
        let ada = try NvidiaSMIXML.parse(SMIFixtures.text("rtx4000-sff-ada-595.84-q-x.xml"))
        XCTAssertEqual(ada.processes.map(\.pid), [4937, 34626])
        XCTAssertEqual(ada.processes.last?.processName, "/usr/lib/chromium/chromium")
        XCTAssertEqual(ada.processes.last?.usedMemoryBytes, 183 * MiB)
        let vgpu = try NvidiaSMIXML.parse(SMIFixtures.text("grid-p4-1q-vgpu-513.46-q-x.xml"))
        XCTAssertTrue(vgpu.processes.allSatisfy { $0.usedMemoryBytes == nil }, "N/A must be absent, not 0")
        XCTAssertEqual(vgpu.processes.last?.processName, #"C:\Windows\explorer.exe"#)
    }

    func testTwoGPUXML() throws {
        // Upstream anonymised both GPUs to the same UUID; a node reporting that
        // would make two GPUs indistinguishable, so it is refused.
        let text = try SMIFixtures.text("2x-rtx2080-590.44.01-q-x.xml")
        XCTAssertThrowsError(try NvidiaSMIXML.parse(text)) { error in
            XCTAssertTrue("\(error)".contains("twice"), "\(error)")
        }
        let uuid = "GPU-12345678-aaaa-bbbb-cccc-0123456789ab"
        let second = try XCTUnwrap(text.range(of: uuid, range: text.range(of: uuid)!.upperBound..<text.endIndex))
        let distinct = text.replacingCharacters(in: second, with: "GPU-second")
        let inv = try NvidiaSMIXML.parse(distinct)
        XCTAssertEqual(inv.gpus.map(\.index), [0, 1])
        XCTAssertEqual(inv.gpus.map(\.uuid), [uuid, "GPU-second"])
        XCTAssertEqual(inv.gpus.map(\.powerDrawWatts), [1.00, 1.62])
        XCTAssertEqual(inv.gpus.map(\.memoryTotalBytes), [8192 * MiB, 8192 * MiB])
        XCTAssertEqual(inv.processes, [])
    }

    func testNonXMLIsRejected() throws {
        for file in NvidiaSMICSVTests.notCSV + NvidiaSMICSVTests.gpuCSVs + ["SOURCES.md"] {
            assertUnparsable(try SMIFixtures.text(file), file, parse: NvidiaSMIXML.parse)
        }
        assertUnparsable("<?xml version=\"1.0\"?><html/>", "other XML", parse: NvidiaSMIXML.parse)
        assertUnparsable("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
                         "driver error", parse: NvidiaSMIXML.parse)
    }
}
