import Foundation

/// Text from jobs, agents and services on its way into PostgreSQL. `text` and `jsonb` refuse
/// NUL (`\u0000` in JSON is "unsupported Unicode escape sequence"), and libpq passes parameters
/// as C strings, so a raw NUL would silently cut a value short. Everything a job can make
/// reaches the database through here: one NUL in one job's output once stopped every result
/// of the cluster from being applied.
public enum StoredText {
    /// What replaces a NUL: visible in the console, and never mistaken for a real character.
    public static let nulReplacement: Unicode.Scalar = "\u{FFFD}"
    /// Longest single string kept from a job's result or error (bytes of UTF-8); the rest is cut
    /// with a marker. Agents cap outputs too; this is the coordinator's own limit.
    public static let maxStringBytes = 64 * 1024
    /// Largest result document kept per attempt; a bigger one keeps its size and an excerpt
    /// (`JSONValue.cappedDocument`). Agents send no more either.
    public static let maxDocumentBytes = 256 * 1024

    /// The text with NULs replaced and cut to `maxBytes` on a character boundary.
    public static func clean(_ s: String, maxBytes: Int = maxStringBytes) -> String {
        // Length first: a long string is cut anyway, so only its first `maxBytes` are ever looked at
        // (a 4 MB result refused for its size used to be scanned whole for a NUL, for a 4 KiB excerpt).
        if s.utf8.count <= maxBytes && !s.utf8.contains(0) { return s }
        var out = String.UnicodeScalarView()
        var bytes = 0
        var cut = false
        for ch in s.unicodeScalars {
            let c = ch == "\u{0}" ? nulReplacement : ch
            let n = UTF8.width(c)
            if bytes + n > maxBytes { cut = true; break }
            out.append(c)
            bytes += n
        }
        var r = String(out)
        if cut { r += "…[cut at \(maxBytes) bytes of \(s.utf8.count)]" }
        return r
    }

    /// Whether `s` can go into PostgreSQL unchanged.
    public static func isClean(_ s: String, maxBytes: Int = maxStringBytes) -> Bool {
        s.utf8.count <= maxBytes && !s.utf8.contains(0)
    }
}

extension JSONValue {
    /// What is kept of a document whose serialization `text` is over `StoredText.maxDocumentBytes`.
    public static func cappedDocument(serialized text: String) -> JSONValue {
        .object(["truncated": .bool(true), "bytes": .number(Double(text.utf8.count)),
                 "excerpt": .string(StoredText.clean(text, maxBytes: 4096))])
    }

    /// The value with every string and key made storable (`StoredText.clean`), non-finite numbers
    /// as null (JSON has none), and nesting deeper than `maxDepth` replaced by a marker string.
    public func storable(maxStringBytes: Int = StoredText.maxStringBytes, maxDepth: Int = 64) -> JSONValue {
        storable(maxStringBytes, maxDepth, 0)
    }

    private func storable(_ maxBytes: Int, _ maxDepth: Int, _ depth: Int) -> JSONValue {
        if depth >= maxDepth { return .string("…[nested deeper than \(maxDepth) levels]") }
        switch self {
        case .null, .bool: return self
        case .number(let d): return d.isFinite ? self : .null
        case .string(let s): return StoredText.isClean(s, maxBytes: maxBytes) ? self : .string(StoredText.clean(s, maxBytes: maxBytes))
        case .array(let a): return .array(a.map { $0.storable(maxBytes, maxDepth, depth + 1) })
        case .object(let o):
            var out: [String: JSONValue] = [:]
            out.reserveCapacity(o.count)
            for (k, v) in o {
                let key = StoredText.isClean(k, maxBytes: 1024) ? k : StoredText.clean(k, maxBytes: 1024)
                // Two keys that differ only in a NUL become equal; the first one kept is as good as any.
                if out[key] == nil { out[key] = v.storable(maxBytes, maxDepth, depth + 1) }
            }
            return .object(out)
        }
    }
}
