import Foundation

public enum ByteSize {
    public static let KiB: UInt64 = 1024
    public static let MiB: UInt64 = 1024 * 1024
    public static let GiB: UInt64 = 1024 * 1024 * 1024

    /// Parses `24GiB`, `512 MiB`, `8G`, `1.5GiB`, `1073741824` (bytes). Decimal units
    /// (`GB`, `MB`) are powers of 1000, binary (`GiB`, `G`) powers of 1024.
    public static func parse(_ text: String) -> UInt64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { return nil }
        var numberEnd = t.startIndex
        while numberEnd < t.endIndex, t[numberEnd].isNumber || t[numberEnd] == "." { numberEnd = t.index(after: numberEnd) }
        guard let value = Double(t[t.startIndex..<numberEnd]), value >= 0 else { return nil }
        let unit = t[numberEnd...].trimmingCharacters(in: .whitespaces).lowercased()
        let mult: Double
        switch unit {
        case "", "b": mult = 1
        case "k", "kib": mult = 1024
        case "kb": mult = 1000
        case "m", "mib": mult = 1024 * 1024
        case "mb": mult = 1_000_000
        case "g", "gib": mult = 1024 * 1024 * 1024
        case "gb": mult = 1_000_000_000
        case "t", "tib": mult = 1024 * 1024 * 1024 * 1024
        case "tb": mult = 1_000_000_000_000
        default: return nil
        }
        let bytes = value * mult
        guard bytes < 1.8e19 else { return nil }
        return UInt64(bytes.rounded())
    }

    /// A number of bytes from untrusted input: nil unless finite, ≥ 0 and below UInt64's range
    /// (the conversion would trap, and a fuzzer found a batch file that made it).
    public static func bytes(_ d: Double) -> UInt64? {
        guard d.isFinite, d >= 0, d < 1.8e19 else { return nil }
        return UInt64(d)
    }

    /// `18.2 GiB`, `512.0 MiB`: how operators read VRAM.
    public static func format(_ bytes: UInt64) -> String {
        let b = Double(bytes)
        if bytes >= GiB { return String(format: "%.1f GiB", b / Double(GiB)) }
        if bytes >= MiB { return String(format: "%.1f MiB", b / Double(MiB)) }
        if bytes >= KiB { return String(format: "%.1f KiB", b / Double(KiB)) }
        return "\(bytes) B"
    }
}
