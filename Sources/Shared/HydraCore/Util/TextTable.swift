import Foundation

/// Left-aligned columns for CLI listings.
public enum TextTable {
    public static func render(header: [String], rows: [[String]]) -> String {
        // Cells come from the database, where rows written before names were checked (or by other
        // tools) may hold control characters: shown escaped, never sent to the terminal raw.
        let rows = rows.map { $0.map(printable) }
        var widths = header.map(\.count)
        for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n") + "\n"
    }

    /// `s` with each control character written as `\u{1b}`.
    public static func printable(_ s: String) -> String {
        guard s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else { return s }
        var out = String.UnicodeScalarView()
        for u in s.unicodeScalars {
            if u.properties.generalCategory == .control { out.append(contentsOf: "\\u{\(String(u.value, radix: 16))}".unicodeScalars) } else { out.append(u) }
        }
        return String(out)
    }
}
