import Foundation

/// Relative speed of common NVIDIA GPUs (RTX 5090 = 10), used when the cluster config
/// gives no weight. Rough mixed-precision inference/training throughput; the learned
/// runtimes replace these as soon as jobs have run on a model.
public enum GPUWeights {
    /// Used for a GPU the table does not know: slow enough that a known card is preferred.
    public static let unknownWeight = 2.0

    /// The weights a cluster file may give (`ClusterConfig.validate`): the table spans 1.5–20.
    public static let range: ClosedRange<Double> = 0.01...10_000

    static let table: [(key: String, weight: Double)] = {
        let raw: [(String, Double)] = [
            // Data center
            ("b200", 30), ("b100", 26), ("gh200", 22), ("h200", 22), ("h100", 20), ("h800", 19),
            ("a100", 12), ("a800", 12), ("l40s", 10), ("l40", 8), ("a40", 6), ("a30", 5),
            ("a10g", 3.5), ("a10", 3.5), ("l4", 3), ("a16", 1), ("a2", 1), ("t4", 1.5),
            ("v100", 4), ("p100", 2), ("p40", 1.5),
            // Workstation
            ("rtx pro 6000", 11), ("rtx 6000 ada", 9), ("rtx 5000 ada", 6.5), ("rtx 4500 ada", 5),
            ("rtx 4000 ada", 3.5), ("rtx a6000", 6), ("rtx a5000", 4.5), ("rtx a4000", 3),
            ("quadro rtx 8000", 2.7), ("quadro rtx 6000", 2.7), ("titan rtx", 2.7), ("titan v", 3),
            // GeForce 50
            ("5090", 10), ("5080", 7), ("5070 ti", 6), ("5070", 4.5), ("5060 ti", 3.5), ("5060", 3),
            // GeForce 40
            ("4090", 8), ("4080 super", 6.5), ("4080", 6), ("4070 ti super", 5.5), ("4070 ti", 5),
            ("4070 super", 4.5), ("4070", 4), ("4060 ti", 3), ("4060", 2.5),
            // GeForce 30
            ("3090 ti", 5.5), ("3090", 5), ("3080 ti", 4.5), ("3080", 4), ("3070 ti", 3.2), ("3070", 3),
            ("3060 ti", 3.5), ("3060", 3), ("3050", 1.5),
            // Older
            ("2080 ti", 2.5), ("2080 super", 2.1), ("2080", 2), ("2070 super", 1.9), ("2070", 1.7),
            ("2060 super", 1.6), ("2060", 1.4), ("1660 ti", 0.9), ("1660", 0.8),
            ("1080 ti", 1.5), ("1080", 1.2), ("1070 ti", 1.0), ("1070", 0.9), ("1060", 0.6),
        ]
        // Longest key first, so `5070 ti` wins over `5070` and `a100` is tried before `a10`.
        return raw.sorted { $0.0.count > $1.0.count }.map { (key: $0.0, weight: $0.1) }
    }()

    /// The configured weight, else the table's, else `unknownWeight`.
    public static func weight(model: String, configured: Double?) -> Double {
        weight(configured: configured, table: builtIn(model) ?? unknownWeight)
    }

    /// The configured weight, else `table` (the model's weight from the table, looked up once per
    /// model by a pass of many GPUs of few models).
    static func weight(configured: Double?, table: @autoclosure () -> Double) -> Double {
        if let configured, configured > 0 { return configured }
        return table()
    }

    /// Matches a table key as a whole token run inside the name (`a10` does not match `A100`).
    public static func builtIn(_ model: String) -> Double? {
        let name = Array(model.lowercased().utf8)
        for (key, w) in table where matches(Array(key.utf8), in: name) { return w }
        return nil
    }

    private static func matches(_ key: [UInt8], in name: [UInt8]) -> Bool {
        guard key.count <= name.count else { return false }
        func isAlnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 97 && c <= 122) }
        var i = 0
        while i + key.count <= name.count {
            if name[i..<(i + key.count)].elementsEqual(key) {
                let beforeOK = i == 0 || !isAlnum(name[i - 1])
                let afterOK = i + key.count == name.count || !isAlnum(name[i + key.count])
                if beforeOK && afterOK { return true }
            }
            i += 1
        }
        return false
    }

    /// `NVIDIA GeForce RTX 5090` → `RTX 5090`: how reasons name a card.
    public static func shortName(_ model: String) -> String {
        var s = model
        for p in ["NVIDIA ", "GeForce ", "Tesla "] { s = s.replacingOccurrences(of: p, with: "") }
        return s
    }
}
