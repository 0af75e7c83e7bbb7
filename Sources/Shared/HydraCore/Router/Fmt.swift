import Foundation

/// Number formatting for reasons without `String(format:)`, which dominated a pass that
/// explains thousands of pending jobs. Same output as `ByteSize.format` for byte counts.
enum Fmt {
    static func bytes(_ b: Int64) -> String {
        let v = UInt64(max(0, b))
        if v >= ByteSize.GiB { return oneDecimal(Double(v) / Double(ByteSize.GiB)) + " GiB" }
        if v >= ByteSize.MiB { return oneDecimal(Double(v) / Double(ByteSize.MiB)) + " MiB" }
        if v >= ByteSize.KiB { return oneDecimal(Double(v) / Double(ByteSize.KiB)) + " KiB" }
        return "\(v) B"
    }

    /// `%.1f` for non-negative numbers.
    static func oneDecimal(_ x: Double) -> String {
        let tenths = Int((max(0, x) * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
