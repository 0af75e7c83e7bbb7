import Foundation

/// A small markdown-to-HTML renderer for the overnight reports: headings,
/// paragraphs, lists, fenced code blocks, tables, block quotes, rules, and inline
/// code, bold, italics and links. No raw HTML passes through: every piece of
/// text is escaped by `HTML.escape` before any markup is added around it, and
/// links keep only http(s), relative and fragment targets.
public enum Markdown {
    public static func render(_ source: String) -> HTML {
        let lines = source.replacingOccurrences(of: "\r\n", with: "\n").components(separatedBy: "\n")
        var out = ""
        var i = 0
        var paragraph: [String] = []

        func flushParagraph() {
            guard !paragraph.isEmpty else { return }
            out += "<p>" + paragraph.map(inline).joined(separator: "\n") + "</p>\n"
            paragraph = []
        }

        while i < lines.count {
            let line = lines[i]
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { flushParagraph(); i += 1; continue }

            if trimmed.hasPrefix("```") || trimmed.hasPrefix("~~~") {
                flushParagraph()
                let fence = String(trimmed.prefix(3))
                let lang = trimmed.dropFirst(3).trimmingCharacters(in: .whitespaces)
                var code: [String] = []
                i += 1
                while i < lines.count && !lines[i].trimmingCharacters(in: .whitespaces).hasPrefix(fence) { code.append(lines[i]); i += 1 }
                i += 1
                let cls = lang.isEmpty ? "" : " class=\"language-\(HTML.escape(lang.filter { $0.isLetter || $0.isNumber || $0 == "-" }))\""
                out += "<pre><code\(cls)>" + HTML.escape(code.joined(separator: "\n")) + "</code></pre>\n"
                continue
            }
            if let (level, text) = heading(trimmed) {
                flushParagraph()
                out += "<h\(level) id=\"\(slug(text))\">\(inline(text))</h\(level)>\n"
                i += 1; continue
            }
            if trimmed.count >= 3, Set(trimmed.filter { $0 != " " }).count == 1, let c = trimmed.first, "-*_".contains(c) {
                flushParagraph(); out += "<hr>\n"; i += 1; continue
            }
            if trimmed.hasPrefix("|"), i + 1 < lines.count, isTableSeparator(lines[i + 1]) {
                flushParagraph()
                let header = cells(trimmed)
                let aligns = cells(lines[i + 1].trimmingCharacters(in: .whitespaces)).map { c -> String in
                    let l = c.hasPrefix(":"), r = c.hasSuffix(":")
                    return l && r ? " style=\"text-align:center\"" : (r ? " style=\"text-align:right\"" : "")
                }
                out += "<table><thead><tr>"
                for (k, h) in header.enumerated() { out += "<th\(aligns[safe: k] ?? "")>\(inline(h))</th>" }
                out += "</tr></thead><tbody>\n"
                i += 2
                while i < lines.count, lines[i].trimmingCharacters(in: .whitespaces).hasPrefix("|") {
                    let row = cells(lines[i].trimmingCharacters(in: .whitespaces))
                    out += "<tr>"
                    for k in 0..<max(header.count, row.count) { out += "<td\(aligns[safe: k] ?? "")>\(inline(row[safe: k] ?? ""))</td>" }
                    out += "</tr>\n"
                    i += 1
                }
                out += "</tbody></table>\n"
                continue
            }
            if let (ordered, _) = listItem(trimmed) {
                flushParagraph()
                let tag = ordered ? "ol" : "ul"
                out += "<\(tag)>\n"
                while i < lines.count {
                    let t = lines[i].trimmingCharacters(in: .whitespaces)
                    guard let (o, text) = listItem(t), o == ordered else {
                        // A wrapped continuation line belongs to the previous item.
                        if !t.isEmpty, lines[i].hasPrefix("  "), out.hasSuffix("</li>\n") {
                            out.removeLast("</li>\n".count)
                            out += " " + inline(t) + "</li>\n"
                            i += 1; continue
                        }
                        break
                    }
                    out += "<li>\(inline(text))</li>\n"
                    i += 1
                }
                out += "</\(tag)>\n"
                continue
            }
            if trimmed.hasPrefix(">") {
                flushParagraph()
                var quote: [String] = []
                while i < lines.count, lines[i].trimmingCharacters(in: .whitespaces).hasPrefix(">") {
                    quote.append(String(lines[i].trimmingCharacters(in: .whitespaces).dropFirst()).trimmingCharacters(in: .whitespaces))
                    i += 1
                }
                out += "<blockquote>" + render(quote.joined(separator: "\n")).text + "</blockquote>\n"
                continue
            }
            paragraph.append(trimmed)
            i += 1
        }
        flushParagraph()
        return HTML(trusted: out)
    }

    /// The first `# ` heading, for titles in lists.
    public static func title(_ source: String) -> String? {
        for line in source.split(separator: "\n", omittingEmptySubsequences: true) {
            if let (_, t) = heading(line.trimmingCharacters(in: .whitespaces)) { return t }
        }
        return nil
    }

    static func heading(_ s: String) -> (Int, String)? {
        let hashes = s.prefix { $0 == "#" }.count
        guard (1...6).contains(hashes), s.count == hashes || s.dropFirst(hashes).first == " " else { return nil }
        var text = s.dropFirst(hashes).trimmingCharacters(in: .whitespaces)
        while text.hasSuffix("#") { text.removeLast() }
        return (hashes, text.trimmingCharacters(in: .whitespaces))
    }

    static func listItem(_ s: String) -> (Bool, String)? {
        for m in ["- ", "* ", "+ "] where s.hasPrefix(m) { return (false, String(s.dropFirst(2))) }
        let digits = s.prefix { $0.isNumber }
        if !digits.isEmpty, digits.count <= 9 {
            let rest = s.dropFirst(digits.count)
            if rest.hasPrefix(". ") || rest.hasPrefix(") ") { return (true, String(rest.dropFirst(2))) }
        }
        return nil
    }

    static func isTableSeparator(_ line: String) -> Bool {
        let t = line.trimmingCharacters(in: .whitespaces)
        guard t.hasPrefix("|") || t.hasPrefix(":") || t.hasPrefix("-") else { return false }
        let cs = cells(t)
        return !cs.isEmpty && cs.allSatisfy { c in !c.isEmpty && c.allSatisfy { "-: ".contains($0) } && c.contains("-") }
    }

    static func cells(_ row: String) -> [String] {
        var r = Substring(row)
        if r.hasPrefix("|") { r = r.dropFirst() }
        if r.hasSuffix("|") { r = r.dropLast() }
        // `\|` is a literal bar inside a cell.
        return r.replacingOccurrences(of: "\\|", with: "\u{1}").split(separator: "|", omittingEmptySubsequences: false)
            .map { $0.replacingOccurrences(of: "\u{1}", with: "|").trimmingCharacters(in: .whitespaces) }
    }

    static func slug(_ s: String) -> String {
        String(s.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(60))
    }

    /// Inline markup over already-escaped text: code spans first (their content is
    /// left alone), then links, bold and italics on the rest.
    static func inline(_ raw: String) -> String {
        var out = ""
        let parts = raw.components(separatedBy: "`")
        for (k, part) in parts.enumerated() {
            let isCode = k % 2 == 1 && k < parts.count - (parts.count % 2 == 0 ? 1 : 0)
            if isCode { out += "<code>" + HTML.escape(part) + "</code>"; continue }
            if k % 2 == 1 { out += "`" }  // an unmatched backtick stays a backtick
            out += emphasis(links(HTML.escape(part)))
        }
        return out
    }

    private static let linkPattern = try! NSRegularExpression(pattern: #"\[([^\]]+)\]\(([^)\s]+)\)"#)
    private static let boldPattern = try! NSRegularExpression(pattern: #"\*\*(.+?)\*\*|__(.+?)__"#)
    private static let emPattern = try! NSRegularExpression(pattern: #"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])|(?<!\w)_(?!\s)(.+?)(?<!\s)_(?!\w)"#)

    static func links(_ escaped: String) -> String {
        replace(linkPattern, in: escaped) { groups in
            let text = groups[1] ?? "", url = groups[2] ?? ""
            guard safeURL(url) else { return text + " (" + url + ")" }
            return "<a href=\"\(url)\" rel=\"noopener noreferrer\">\(text)</a>"
        }
    }

    static func emphasis(_ escaped: String) -> String {
        let b = replace(boldPattern, in: escaped) { g in "<strong>\(g[1] ?? g[2] ?? "")</strong>" }
        return replace(emPattern, in: b) { g in "<em>\(g[1] ?? g[2] ?? "")</em>" }
    }

    /// Only web and in-console targets; `javascript:`, `data:` and friends become plain text.
    static func safeURL(_ url: String) -> Bool {
        let lower = url.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") || lower.hasPrefix("#") { return true }
        if lower.hasPrefix("//") { return false }
        return !lower.contains(":")
    }

    private static func replace(_ re: NSRegularExpression, in s: String, _ f: ([String?]) -> String) -> String {
        let ns = s as NSString
        var out = ""
        var last = 0
        for m in re.matches(in: s, range: NSRange(location: 0, length: ns.length)) {
            out += ns.substring(with: NSRange(location: last, length: m.range.location - last))
            var groups: [String?] = []
            for g in 0..<m.numberOfRanges {
                let r = m.range(at: g)
                groups.append(r.location == NSNotFound ? nil : ns.substring(with: r))
            }
            out += f(groups)
            last = m.range.location + m.range.length
        }
        out += ns.substring(from: last)
        return out
    }
}

fileprivate extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
