import Foundation
#if canImport(FoundationXML)
import FoundationXML
import HydraCore
#endif

/// Parser for `nvidia-smi -q -x`, yielding the same values as the CSV queries.
///
/// Differences from CSV that matter here:
/// - There is no `index` element; nvidia-smi lists `<gpu>` elements in index
///   order, so the position is the index.
/// - Unsupported values are bare words (`N/A`, `Requested functionality has
///   been deprecated`), not bracketed, so any value that does not start with a
///   number is absent. The document structure, not the value text, is what
///   proves this is nvidia-smi output.
/// - `<processes>` lists graphics-only (`G`) processes too; those are left out
///   to match `--query-compute-apps` (which lists `C` and `C+G`).
public enum NvidiaSMIXML {
    public static func parse(_ text: String) throws -> Inventory {
        // Checked first so that error text never reaches libxml2, which would
        // echo its own parse errors to stderr.
        guard text.drop(while: { $0.isWhitespace }).hasPrefix("<") else {
            throw NvidiaSMIError.unparsable("not XML: \(NvidiaSMICSV.excerpt(text))")
        }
        let doc: XMLDocument
        do {
            doc = try XMLDocument(data: Data(text.utf8), options: [])
        } catch {
            throw NvidiaSMIError.unparsable("not XML: \(NvidiaSMICSV.excerpt(text))")
        }
        guard let root = doc.rootElement(), root.name == "nvidia_smi_log" else {
            throw NvidiaSMIError.unparsable("XML root is not <nvidia_smi_log>: \(NvidiaSMICSV.excerpt(text))")
        }

        var inventory = Inventory()
        var seen = Set<String>()
        for (position, gpu) in root.elements(forName: "gpu").enumerated() {
            guard let uuid = value(gpu, "uuid") else {
                throw NvidiaSMIError.unparsable("<gpu> without a <uuid> (position \(position))")
            }
            guard seen.insert(uuid).inserted else {
                throw NvidiaSMIError.unparsable("-q -x lists uuid \(uuid) twice")
            }
            // v13 drops <power_draw> for instant/average; older DTDs name the
            // parent <power_readings>, v12 <gpu_power_readings>.
            let power = ["gpu_power_readings", "power_readings"].lazy.compactMap { parent in
                ["power_draw", "instant_power_draw", "average_power_draw"].lazy
                    .compactMap { number(gpu, "\(parent)/\($0)", units: NvidiaSMICSV.Units.watts) }.first
            }.first
            inventory.gpus.append(GPUInfo(
                index: position,
                uuid: uuid,
                name: value(gpu, "product_name"),
                memoryTotalBytes: bytes(gpu, "fb_memory_usage/total"),
                memoryUsedBytes: bytes(gpu, "fb_memory_usage/used"),
                memoryFreeBytes: bytes(gpu, "fb_memory_usage/free"),
                utilizationGPUPercent: number(gpu, "utilization/gpu_util", units: NvidiaSMICSV.Units.percent),
                temperatureCelsius: number(gpu, "temperature/gpu_temp", units: NvidiaSMICSV.Units.celsius),
                powerDrawWatts: power))

            for process in (try? gpu.nodes(forXPath: "processes/process_info")) ?? [] {
                guard let type = value(process, "type"), type.contains("C") else { continue }
                inventory.processes.append(GPUProcess(
                    gpuUUID: uuid,
                    pid: value(process, "pid").flatMap { Int($0) },
                    usedMemoryBytes: bytes(process, "used_memory"),
                    processName: value(process, "process_name")))
            }
        }
        return inventory
    }

    private static let absent: Set<String> = ["", "N/A", "Not Supported", "Unknown Error", "Insufficient Permissions",
                                              "Requested functionality has been deprecated"]

    private static func value(_ node: XMLNode, _ path: String) -> String? {
        guard let text = (try? node.nodes(forXPath: path))?.first?.stringValue?
            .trimmingCharacters(in: .whitespacesAndNewlines), !absent.contains(text) else { return nil }
        return text
    }

    private static func number(_ node: XMLNode, _ path: String, units: [String: Double]) -> Double? {
        value(node, path).flatMap { try? NvidiaSMICSV.reading($0, field: path, unit: nil, units: units) }
    }

    private static func bytes(_ node: XMLNode, _ path: String) -> UInt64? {
        value(node, path).flatMap { try? NvidiaSMICSV.byteCount($0, field: path, unit: nil) }
    }
}
