import Foundation
import HydraCore

/// The human view of an `Inventory` (what `probe` prints without `--json`).
/// Absent readings print as `-`, so "not reported" never looks like 0.
public enum InventoryTable {
    public static func render(_ inv: Inventory) -> String {
        var out = ""
        if inv.gpus.isEmpty {
            out += "No NVIDIA GPUs.\n"
        } else {
            let rows: [[String]] = inv.gpus.map(gpuRow)
            out += table(header: ["IDX", "NAME", "MEMORY", "FREE", "UTIL", "TEMP", "POWER"],
                         rows: rows, rightAligned: [0, 2, 3, 4, 5, 6])
        }

        out += "\nPROCESSES\n"
        if inv.processes.isEmpty {
            out += "No compute processes.\n"
        } else {
            // Show the GPU index the operator knows; fall back to the UUID for a
            // process on a GPU that is not in the list (e.g. a MIG parent not queried).
            let indexByUUID = Dictionary(inv.gpus.map { ($0.uuid, $0.index) }, uniquingKeysWith: { a, _ in a })
            let rows = inv.processes.map { p in
                [indexByUUID[p.gpuUUID].flatMap { $0.map(String.init) } ?? p.gpuUUID,
                 p.pid.map(String.init) ?? "-",
                 p.usedMemoryBytes.map { "\(gib($0)) GiB" } ?? "-",
                 p.processName ?? "-"]
            }
            out += table(header: ["GPU", "PID", "MEMORY", "PROCESS"], rows: rows, rightAligned: [1, 2])
        }
        return out
    }

    static func gpuRow(_ g: GPUInfo) -> [String] {
        let index: String = g.index.map { String($0) } ?? "-"
        let memory = "\(gib(g.memoryUsedBytes)) / \(gib(g.memoryTotalBytes)) GiB"
        let free: String = g.memoryFreeBytes.map { "\(gib($0)) GiB" } ?? "-"
        let util: String = g.utilizationGPUPercent.map { "\(fixed($0, 0)) %" } ?? "-"
        let temp: String = g.temperatureCelsius.map { "\(fixed($0, 0)) C" } ?? "-"
        let power: String = g.powerDrawWatts.map { "\(fixed($0, 1)) W" } ?? "-"
        return [index, g.name ?? "-", memory, free, util, temp, power]
    }

    static func gib(_ bytes: UInt64?) -> String {
        guard let bytes else { return "-" }
        return fixed(Double(bytes) / 1_073_741_824, 1)
    }

    /// Locale-independent fixed-point text (String(format:) would follow the
    /// process locale on some platforms).
    static func fixed(_ value: Double, _ digits: Int) -> String {
        let scale = pow(10, Double(digits))
        let rounded = (value * scale).rounded() / scale
        var text = String(Int64(rounded.rounded(.towardZero)))
        if rounded < 0 && rounded > -1 { text = "-" + text }
        guard digits > 0 else { return text }
        let frac = Int64((abs(rounded) * scale).rounded()) % Int64(scale)
        let fracText = String(frac)
        return text + "." + String(repeating: "0", count: digits - fracText.count) + fracText
    }

    static func table(header: [String], rows: [[String]], rightAligned: Set<Int>) -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { i, cell -> String in
                let pad = String(repeating: " ", count: widths[i] - cell.count)
                // The last column is not padded on the right: no trailing spaces.
                if rightAligned.contains(i) { return pad + cell }
                return i == cells.count - 1 ? cell : cell + pad
            }
            return padded.joined(separator: "  ") + "\n"
        }
        return line(header) + rows.map(line).joined()
    }
}
