import Foundation

/// Terms and names that must never appear in a collection name or a prompt
/// (including the LLM's expansions). One entry per line, `#` starts a comment.
/// Matching ignores case, accents and punctuation, and is by whole words, so
/// "Ash" blocks "ash grey" but not "flash".
public struct Denylist: Sendable, Equatable {
    public private(set) var entries: [String]
    private var normalized: [String]

    public init(entries: [String]) {
        let kept = entries.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var e: [String] = [], n: [String] = []
        for x in kept {
            let k = Self.normalize(x)
            if !k.isEmpty && !n.contains(k) { e.append(x); n.append(k) }
        }
        self.entries = e; self.normalized = n
    }

    public static let empty = Denylist(entries: [])

    public static func parse(_ text: String) -> Denylist {
        Denylist(entries: text.components(separatedBy: .newlines).map { line in
            let l = line.firstIndex(of: "#").map { String(line[..<$0]) } ?? line
            return l.trimmingCharacters(in: .whitespaces)
        })
    }

    public static func load(path: String) throws -> Denylist {
        parse(try ConfigLoader.readFile(path))
    }

    /// Lower case, accents folded, everything but letters and digits a single space.
    static func normalize(_ s: String) -> String {
        let folded = s.folding(options: [.caseInsensitive, .diacriticInsensitive, .widthInsensitive], locale: nil).lowercased()
        var out = ""
        var space = true
        for ch in folded.unicodeScalars {
            if CharacterSet.alphanumerics.contains(ch) { out.unicodeScalars.append(ch); space = false }
            else if !space { out.append(" "); space = true }
        }
        return out.trimmingCharacters(in: .whitespaces)
    }

    /// The first entry found in `text`, as written in the file.
    public func match(_ text: String) -> String? {
        let hay = " " + Self.normalize(text) + " "
        for (i, n) in normalized.enumerated() where hay.contains(" " + n + " ") { return entries[i] }
        return nil
    }

    /// Checks several labelled texts; the reason names the entry and where it was found.
    public func check(_ texts: [(label: String, text: String)]) -> String? {
        for t in texts {
            if let m = match(t.text) { return "denylisted term '\(m)' in \(t.label)" }
        }
        return nil
    }
}
