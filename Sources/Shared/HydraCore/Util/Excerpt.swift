import Foundation

/// A piece of what another program sent, fit to quote in one line of an error message. A
/// service that answers a WAV file, random bytes or a megabyte of JSON where text was expected
/// gets its answer named ("412 bytes, not text") or cut, never pasted whole, and an operator
/// reading `hydra jobs` sees one line per failure.
public enum Excerpt {
    /// At most `limit` characters of `text` on one line: line breaks and tabs become spaces;
    /// other control characters (NUL, escape sequences) make it "(N bytes, not text)".
    public static func of(_ text: String, limit: Int = 200) -> String {
        quote(text, limit: limit, more: false) ?? notText(text.utf8.count)
    }

    /// The same for raw bytes (a response body); undecodable bytes also make it "not text".
    public static func of(_ data: Data, limit: Int = 200) -> String {
        // Only the start is read: decoding all of a 16 MiB body to show 200 characters would be waste.
        var head = data.prefix(limit * 4 + 4)
        var text = String(decoding: head, as: UTF8.self)
        if text.unicodeScalars.contains("\u{FFFD}"), head.count < data.count {
            // A character cut at the end of `head` decodes as U+FFFD: look again without its bytes.
            var k = 0
            while k < 3, let last = head.last, last & 0xC0 == 0x80 || last >= 0xC0 { head = head.dropLast(); k += 1; if last >= 0xC0 { break } }
            text = String(decoding: head, as: UTF8.self)
        }
        if text.unicodeScalars.contains("\u{FFFD}") { return notText(data.count) }
        return quote(text, limit: limit, more: head.count < data.count) ?? notText(data.count)
    }

    /// nil when `text` holds a control character other than a line break or tab.
    private static func quote(_ text: String, limit: Int, more: Bool) -> String? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        var out = String.UnicodeScalarView()
        var n = 0
        for s in trimmed.unicodeScalars {
            if n == limit { return String(out) + "…" }
            switch s {
            case "\n", "\r", "\t": out.append(" ")
            default:
                if s.properties.generalCategory == .control { return nil }
                out.append(s)
            }
            n += 1
        }
        return String(out) + (more && !out.isEmpty ? "…" : "")
    }

    private static func notText(_ bytes: Int) -> String { "(\(bytes) bytes, not text)" }
}
