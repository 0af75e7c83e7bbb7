import Foundation

/// A fragment of HTML that is safe to send: everything that went into it was
/// either a literal written in this source tree or passed through `HTML.escape`.
/// Interpolating a `String` escapes it; interpolating an `HTML` keeps it as is.
/// That makes escaping the default, in one place, instead of something every
/// page has to remember.
public struct HTML: Sendable, Equatable, ExpressibleByStringInterpolation, CustomStringConvertible {
    public private(set) var text: String

    public init(stringLiteral value: String) { text = value }
    public init(stringInterpolation: Interpolation) { text = stringInterpolation.text }
    /// Markup built by trusted code (the markdown renderer, the assets); never user data.
    public init(trusted: String) { text = trusted }
    public static let empty = HTML(trusted: "")

    public var description: String { text }

    public struct Interpolation: StringInterpolationProtocol {
        var text = ""
        public init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity + interpolationCount * 16) }
        public mutating func appendLiteral(_ literal: String) { text += literal }
        public mutating func appendInterpolation(_ value: String) { text += HTML.escape(value) }
        public mutating func appendInterpolation(_ value: String?) { text += HTML.escape(value ?? "") }
        public mutating func appendInterpolation(_ value: Substring) { text += HTML.escape(String(value)) }
        public mutating func appendInterpolation(_ value: HTML) { text += value.text }
        public mutating func appendInterpolation(_ values: [HTML]) { for v in values { text += v.text } }
        public mutating func appendInterpolation(_ value: HTML?) { text += value?.text ?? "" }
        /// `\(if: cond, "<p>…</p>", else: "…")`: both branches typed as HTML. A plain
        /// `cond ? "<p>…" : "…"` would be inferred as String and end up escaped.
        public mutating func appendInterpolation(if condition: Bool, _ then: HTML, else otherwise: HTML = .empty) {
            text += condition ? then.text : otherwise.text
        }
        public mutating func appendInterpolation(_ value: Int) { text += String(value) }
        public mutating func appendInterpolation(_ value: UInt64) { text += String(value) }
        /// Numbers are formatted by the caller when precision matters; this is for widths and counts.
        public mutating func appendInterpolation(_ value: Double) { text += String(format: "%.1f", value) }
    }

    public static func + (a: HTML, b: HTML) -> HTML { HTML(trusted: a.text + b.text) }
    public static func += (a: inout HTML, b: HTML) { a.text += b.text }

    public static func join(_ parts: [HTML], separator: HTML = .empty) -> HTML {
        HTML(trusted: parts.map(\.text).joined(separator: separator.text))
    }

    /// The one escaping function: safe for element content and for quoted attribute values.
    public static func escape(_ s: String) -> String {
        // Most strings need nothing; checking bytes first keeps big pages cheap.
        if !s.utf8.contains(where: { $0 == 0x26 || $0 == 0x3C || $0 == 0x3E || $0 == 0x22 || $0 == 0x27 || $0 == 0 }) { return s }
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for ch in s.unicodeScalars {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            case "\u{0}": out += "\u{FFFD}"
            default: out.unicodeScalars.append(ch)
            }
        }
        return out
    }

    /// Percent-encodes one query value or path segment (then the interpolation HTML-escapes it).
    public static func urlComponent(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        let hex = Array("0123456789ABCDEF".utf8)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(b & 15)]))
            }
        }
        return out
    }
}
