import Foundation
import HydraCore

/// Parser for `nvidia-smi --query-gpu=… --format=csv` and
/// `--query-compute-apps=… --format=csv` output.
///
/// The header drives everything: columns may come in any order and any subset,
/// named with or without a unit (`memory.used [MiB]` or `memory.used`), and
/// values may carry their unit (`1474 MiB`) or not (`nounits`). Values that
/// nvidia-smi uses for "no reading" (`[N/A]`, `N/A`, `[Not Supported]`, any
/// other bracketed message, empty) become `nil`, never 0: a scheduler that saw
/// 0 MiB used on a GPU it cannot read would happily overfill it.
///
/// Anything that is not such CSV (an error message, `-q` text, XML, the default
/// table) is rejected with `NvidiaSMIError.unparsable`, never read as zero GPUs.
public enum NvidiaSMICSV {

    public static func parseGPUs(_ text: String) throws -> [GPUInfo] {
        let table = try Table(text)
        guard let uuidCol = table.column("uuid", "gpu_uuid") else {
            throw NvidiaSMIError.unparsable("query-gpu CSV has no uuid column; header: \(Self.excerpt(table.headerLine))")
        }
        let indexCol = table.column("index")
        let nameCol = table.column("name", "gpu_name")
        let totalCol = table.column("memory.total")
        let usedCol = table.column("memory.used")
        let freeCol = table.column("memory.free")
        let utilCol = table.column("utilization.gpu")
        let tempCol = table.column("temperature.gpu")
        // `power.draw` is missing or [N/A] on some boards and drivers that still
        // report the instant or averaged reading.
        let powerCols = [table.column("power.draw"), table.column("power.draw.instant"),
                         table.column("power.draw.average")].compactMap { $0 }

        var seen = Set<String>()
        var gpus: [GPUInfo] = []
        for row in try table.rows(joiningExtraCellsInto: nil) {
            guard let uuid = row.text(uuidCol) else {
                throw NvidiaSMIError.unparsable("query-gpu row without a uuid: \(excerpt(row.line))")
            }
            guard seen.insert(uuid).inserted else {
                throw NvidiaSMIError.unparsable("query-gpu lists uuid \(excerpt(uuid, limit: 80)) twice")
            }
            var power: Double?
            for col in powerCols where power == nil {
                power = try row.number(col, units: Units.watts)
            }
            gpus.append(GPUInfo(
                index: try row.integer(indexCol),
                uuid: uuid,
                name: row.text(nameCol),
                memoryTotalBytes: try row.bytes(totalCol),
                memoryUsedBytes: try row.bytes(usedCol),
                memoryFreeBytes: try row.bytes(freeCol),
                utilizationGPUPercent: try row.number(utilCol, units: Units.percent),
                temperatureCelsius: try row.number(tempCol, units: Units.celsius),
                powerDrawWatts: power))
            try checkMemory(gpus[gpus.count - 1], line: row.line)
        }
        return gpus
    }

    public static func parseProcesses(_ text: String) throws -> [GPUProcess] {
        let table = try Table(text)
        guard let uuidCol = table.column("gpu_uuid", "uuid") else {
            throw NvidiaSMIError.unparsable("query-compute-apps CSV has no gpu_uuid column; header: \(Self.excerpt(table.headerLine))")
        }
        let pidCol = table.column("pid")
        let memCol = table.column("used_memory", "used_gpu_memory")
        let nameCol = table.column("process_name", "name")

        return try table.rows(joiningExtraCellsInto: nameCol).map { row in
            guard let uuid = row.text(uuidCol) else {
                throw NvidiaSMIError.unparsable("query-compute-apps row without a gpu_uuid: \(excerpt(row.line))")
            }
            return GPUProcess(gpuUUID: uuid, pid: try row.integer(pidCol),
                              usedMemoryBytes: try row.bytes(memCol), processName: row.text(nameCol))
        }
    }

    // MARK: - Values

    /// Unit → multiplier into the unit the model stores.
    enum Units {
        static let bytes: [String: Double] = ["B": 1, "KiB": 1024, "MiB": 1_048_576, "GiB": 1_073_741_824]
        static let percent: [String: Double] = ["%": 1]
        static let watts: [String: Double] = ["W": 1]
        static let celsius: [String: Double] = ["C": 1]
    }

    /// Spellings nvidia-smi uses for "no value" without brackets. Bracketed text
    /// (`[N/A]`, `[Not Supported]`, `[Unknown Error]`, …) is always absent: new
    /// drivers keep adding bracketed reasons and none of them is a reading.
    static let bareAbsent: Set<String> = ["", "N/A", "Not Supported", "Unknown Error", "Insufficient Permissions"]

    static func isAbsent(_ cell: String) -> Bool {
        bareAbsent.contains(cell) || (cell.hasPrefix("[") && cell.hasSuffix("]"))
    }

    /// A reading as `number [unit]`, scaled by `units`. A bare number takes
    /// `unit` (the header's: `--format=csv,nounits` keeps units there); a bare
    /// number with no unit anywhere is already in the base unit.
    static func reading(_ cell: String, field: String, unit headerUnit: String?,
                        units: [String: Double]) throws -> Double {
        let parts = cell.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 1 || parts.count == 2, let value = Double(parts[0]), value.isFinite else {
            throw NvidiaSMIError.unparsable("\(field): not a number: \"\(excerpt(cell, limit: 60))\"")
        }
        guard let unit = parts.count == 2 ? String(parts[1]) : headerUnit else { return value }
        guard let scale = units[unit] else {
            throw NvidiaSMIError.unparsable("\(field): unexpected unit \"\(excerpt(unit, limit: 30))\" in \"\(excerpt(cell, limit: 60))\"")
        }
        return value * scale
    }

    /// More memory than any GPU has (1 PiB): a reading beyond it is garbage, not a GPU.
    public static let maxBytes: UInt64 = 1 << 50
    /// How far `memory.used` or `memory.free` may exceed `memory.total` (each is rounded to a MiB, and
    /// some drivers count reserved memory on one side only) before the row is taken for garbage.
    public static let memoryMarginBytes: UInt64 = 64 << 20

    /// nvidia-smi reports memory in MiB; with no unit given, MiB it is.
    static func byteCount(_ cell: String, field: String, unit: String?) throws -> UInt64 {
        let value = try reading(cell, field: field, unit: unit ?? "MiB", units: Units.bytes)
        guard value >= 0, value <= Double(maxBytes) else {
            throw NvidiaSMIError.unparsable("\(field): out of range (0 to 2^50 bytes): \"\(excerpt(cell, limit: 60))\"")
        }
        return UInt64(value.rounded())
    }

    /// Used or free memory beyond the total (past a rounding margin) is no reading of a real GPU.
    static func checkMemory(_ g: GPUInfo, line: String) throws {
        guard let total = g.memoryTotalBytes else { return }
        for (name, v) in [("memory.used", g.memoryUsedBytes), ("memory.free", g.memoryFreeBytes)] {
            if let v, v > total + memoryMarginBytes {
                throw NvidiaSMIError.unparsable("\(name) \(v) bytes is more than memory.total \(total) bytes: \(excerpt(line, limit: 120))")
            }
        }
    }

    struct Column {
        let index: Int
        let name: String
        /// The unit from the header (`memory.used [MiB]`), used when a value is bare.
        let unit: String?
    }

    struct Row {
        let cells: [String]
        let line: String

        func text(_ col: Column?) -> String? {
            guard let col else { return nil }
            let cell = cells[col.index]
            return NvidiaSMICSV.isAbsent(cell) ? nil : cell
        }

        func number(_ col: Column?, units: [String: Double]) throws -> Double? {
            guard let col, let cell = text(col) else { return nil }
            return try NvidiaSMICSV.reading(cell, field: col.name, unit: col.unit, units: units)
        }

        func bytes(_ col: Column?) throws -> UInt64? {
            guard let col, let cell = text(col) else { return nil }
            return try NvidiaSMICSV.byteCount(cell, field: col.name, unit: col.unit)
        }

        func integer(_ col: Column?) throws -> Int? {
            guard let col, let cell = text(col) else { return nil }
            guard let value = Int(cell) else {
                throw NvidiaSMIError.unparsable("\(col.name): not an integer: \"\(NvidiaSMICSV.excerpt(cell, limit: 60))\"")
            }
            return value
        }
    }

    // MARK: - Table

    struct Table {
        let headerLine: String
        let columns: [Column]
        let dataLines: [String]

        init(_ text: String) throws {
            // Windows builds end lines with CRLF.
            let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
                .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
                .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            guard let header = lines.first else {
                throw NvidiaSMIError.unparsable("empty output, expected a CSV header")
            }
            var columns: [Column] = []
            for (i, cell) in NvidiaSMICSV.split(header).enumerated() {
                guard let column = NvidiaSMICSV.parseHeaderCell(cell, index: i) else {
                    throw NvidiaSMIError.unparsable("not nvidia-smi CSV: \(NvidiaSMICSV.excerpt(text))")
                }
                columns.append(column)
            }
            self.headerLine = header
            self.columns = columns
            self.dataLines = Array(lines.dropFirst())
        }

        func column(_ names: String...) -> Column? {
            for name in names {
                if let c = columns.first(where: { $0.name == name }) { return c }
            }
            return nil
        }

        /// Splits every data line. A process name can itself contain ", "
        /// (nothing is quoted), so surplus cells are glued back into that column;
        /// any other count mismatch means the line is not a data row (an error
        /// nvidia-smi printed in the middle, a truncated line) and is rejected.
        func rows(joiningExtraCellsInto joinCol: Column?) throws -> [Row] {
            try dataLines.map { line in
                var cells = NvidiaSMICSV.split(line)
                let extra = cells.count - columns.count
                if extra > 0, let joinCol {
                    let joined = cells[joinCol.index...(joinCol.index + extra)].joined(separator: ", ")
                    cells.replaceSubrange(joinCol.index...(joinCol.index + extra), with: [joined])
                }
                guard cells.count == columns.count else {
                    throw NvidiaSMIError.unparsable(
                        "row has \(cells.count) fields, header has \(columns.count): \(NvidiaSMICSV.excerpt(line))")
                }
                return Row(cells: cells, line: line)
            }
        }
    }

    /// nvidia-smi separates fields with ", " and never quotes. Splitting on the
    /// two-character separator keeps a bare comma inside a value intact.
    static func split(_ line: String) -> [String] {
        line.components(separatedBy: ", ").map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// `memory.used [MiB]` → name `memory.used`, unit `MiB`. Returns nil for
    /// anything that is not a property name, which is how error text and other
    /// output formats are told apart from a header.
    static func parseHeaderCell(_ cell: String, index: Int) -> Column? {
        var name = Substring(cell)
        var unit: String?
        if cell.hasSuffix("]"), let open = cell.lastIndex(of: "[") {
            unit = String(cell[cell.index(after: open)..<cell.index(before: cell.endIndex)])
            name = cell[..<open]
            guard name.hasSuffix(" ") else { return nil }
            name = name.dropLast()
        }
        guard let first = name.first, first.isASCII, first.isLetter || first == "_",
              name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == ".") }),
              unit.map({ !$0.isEmpty && !$0.contains(" ") }) ?? true
        else { return nil }
        return Column(index: index, name: String(name), unit: unit)
    }

    /// One line, at most `limit` characters, and never raw NULs or invalid bytes (they would land in logs).
    static func excerpt(_ text: String, limit: Int = 300) -> String {
        Excerpt.of(text, limit: limit)
    }
}
