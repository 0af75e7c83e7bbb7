import Foundation
#if canImport(Glibc)
import Glibc
import HydraCore
#endif

/// Formatting shared by the pages. strftime instead of DateFormatter: it is
/// thread-safe and costs nothing to set up, and pages render on many threads.
public enum ConsoleFormat {
    public static func time(_ epoch: Double?) -> String {
        guard let epoch, epoch > 0 else { return "—" }
        var t = time_t(epoch)
        var tmv = tm()
        localtime_r(&t, &tmv)
        var buf = [CChar](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y-%m-%d %H:%M:%S", &tmv)
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func duration(_ s: Double?) -> String {
        guard let s, s >= 0 else { return "—" }
        if s < 10 { return String(format: "%.1f s", s) }
        if s < 120 { return String(format: "%.0f s", s) }
        let m = Int(s / 60)
        if m < 120 { return "\(m) min \(Int(s) % 60) s" }
        return "\(m / 60) h \(m % 60) min"
    }

    public static func ago(_ epoch: Double?, now: Double) -> String {
        guard let epoch else { return "never" }
        return duration(max(0, now - epoch)) + " ago"
    }

    public static func bytes(_ b: UInt64?) -> String { b.map(ByteSize.format) ?? "—" }

    public static func percent(_ p: Double?) -> String { p.map { String(format: "%.0f%%", $0) } ?? "—" }

    public static func celsius(_ c: Double?) -> String { c.map { String(format: "%.0f °C", $0) } ?? "—" }

    public static func rate(_ r: Double?) -> String {
        guard let r else { return "—" }
        return r >= 10 ? String(format: "%.0f/min", r) : String(format: "%.1f/min", r)
    }

    /// Short, single-line JSON for timelines and detail cells.
    public static func compactJSON(_ v: JSONValue?) -> String {
        guard let v else { return "" }
        if case .object(let o) = v, o.isEmpty { return "" }
        return (try? JSONCoding.encodeString(v)) ?? ""
    }
}
