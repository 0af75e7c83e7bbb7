// A hand-written JSON codec for JSONValue and the two hot message types (FastJSON+Messages.swift).
//
// Foundation's JSONEncoder/JSONDecoder were ~15 % of all CPU in a 20,000-job run, and
// JSONValue's Codable init throws one error per type it tries. This codec reads and writes
// bytes directly and is held to Foundation's behaviour by tests (FastJSONTests, FuzzTests):
//
// - Writing is byte-identical to `JSONCoding.encodeString` (keys sorted by UTF-8 bytes, `/`
//   unescaped, control characters as lowercase `\u00xx`, Doubles as `description` without a
//   trailing ".0"). Non-finite numbers and containers nested 512 deep throw, as there.
// - Reading accepts what JSONDecoder accepts into a JSONValue, and yields an equal value:
//   a UTF-8 byte order mark at offset 0, one trailing comma in an array or object, nesting up
//   to 512 levels, repeated keys (the first wins; a later one's value is only scanned, as
//   Foundation only scans it, so `{"a":1,"a":01}` passes). Numbers that overflow a Double, or
//   that are not zero but round to zero, are refused as there. Foundation also refuses some
//   zeros with exponents (`0e1`, but not `-0e1`); this reader accepts them. Input is UTF-8
//   only (Foundation also sniffs UTF-16/32).

/// Why JSON text was refused: the byte offset where reading stopped and a short reason.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var message: String

    public init(offset: Int, message: String) { self.offset = offset; self.message = message }

    public var description: String { "invalid JSON at byte \(offset): \(message)" }
}

/// Why a value cannot be written as JSON (the cases where JSONEncoder throws too).
public struct JSONWriteError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "cannot write JSON: \(message)" }
}

extension JSONValue {
    /// Parses JSON text (RFC 8259, plus the leniencies of Foundation listed in FastJSON.swift).
    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try FastJSON.withBytes(of: text) { (b) throws(JSONParseError) in try read(b, trustedUTF8: true) }
    }

    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        let r = bytes.withUnsafeBytes { b in Result { () throws(JSONParseError) in try parse(b) } }
        return try r.get()
    }

    /// Parses UTF-8 bytes; invalid UTF-8 inside strings is refused.
    public static func parse(_ bytes: UnsafeRawBufferPointer) throws(JSONParseError) -> JSONValue {
        try read(bytes, trustedUTF8: false)
    }

    package static func read(_ bytes: UnsafeRawBufferPointer, trustedUTF8: Bool) throws(JSONParseError) -> JSONValue {
        var r = JSONReader(bytes, trustedUTF8: trustedUTF8)
        let v = try r.value()
        try r.finish()
        return v
    }

    /// The JSON text, byte-identical to `JSONCoding.encodeString(self)`.
    public func serialized() throws(JSONWriteError) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        try write(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    /// Appends the JSON text to `out` (see `serialized()`).
    public func write(to out: inout [UInt8]) throws(JSONWriteError) {
        try FastJSON.write(self, into: &out, depth: 0)
    }
}

/// Helpers shared by the JSONValue and message codecs.
package enum FastJSON {
    /// JSONEncoder refuses containers at this depth (the top level container is depth 1).
    package static let maxWriteDepth = 512

    /// Runs `body` on the string's UTF-8 bytes without copying native strings.
    package static func withBytes<R>(of text: String, _ body: (UnsafeRawBufferPointer) throws(JSONParseError) -> R) throws(JSONParseError) -> R {
        let r: Result<R, JSONParseError>? = text.utf8.withContiguousStorageIfAvailable { u in
            Result { () throws(JSONParseError) in try body(UnsafeRawBufferPointer(u)) }
        }
        if let r { return try r.get() }
        let copy = Array(text.utf8)
        return try copy.withUnsafeBytes { b in Result { () throws(JSONParseError) in try body(b) } }.get()
    }

    // MARK: writing

    package static func write(_ v: JSONValue, into out: inout [UInt8], depth: Int) throws(JSONWriteError) {
        switch v {
        case .null: append("null", &out)
        case .bool(let b): append(b ? "true" : "false", &out)
        case .number(let d): try number(d, into: &out)
        case .string(let s): string(s, into: &out)
        case .array(let a):
            guard depth + 1 < maxWriteDepth else { throw JSONWriteError("containers nested \(maxWriteDepth) deep") }
            out.append(UInt8(ascii: "["))
            var first = true
            for e in a {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                try write(e, into: &out, depth: depth + 1)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            guard depth + 1 < maxWriteDepth else { throw JSONWriteError("containers nested \(maxWriteDepth) deep") }
            out.append(UInt8(ascii: "{"))
            // JSONEncoder's .sortedKeys orders by UTF-8 bytes, not by String's Unicode ordering.
            let members = o.count < 2 ? Array(o) : o.sorted { utf8Less($0.key, $1.key) }
            var first = true
            for (k, e) in members {
                if !first { out.append(UInt8(ascii: ",")) }
                first = false
                string(k, into: &out)
                out.append(UInt8(ascii: ":"))
                try write(e, into: &out, depth: depth + 1)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// A JSONValue number as `JSONValue.encode(to:)` writes it: integral values below 9e15
    /// as Int64 (so -0.0 becomes 0), others as JSONEncoder writes a Double.
    @inline(__always)
    package static func number(_ d: Double, into out: inout [UInt8]) throws(JSONWriteError) {
        if d.rounded() == d, abs(d) < 9.0e15 {
            let i = Int64(d)
            integer(i.magnitude, negative: i < 0, into: &out)
        } else {
            try double(d, into: &out)
        }
    }

    /// A Double as JSONEncoder writes it: `description` without a trailing ".0"
    /// (so 1e+21, 1e-07, 5e-324, -0), and an error for NaN and infinities.
    package static func double(_ d: Double, into out: inout [UInt8]) throws(JSONWriteError) {
        guard d.isFinite else { throw JSONWriteError("\(d) is not a number JSON can hold") }
        // Integral values this small print as "N.0", which the integer writer does without a String.
        if d.rounded() == d, abs(d) < 1.0e15, !(d == 0 && d.sign == .minus) {
            let i = Int64(d)
            integer(i.magnitude, negative: i < 0, into: &out)
            return
        }
        var s = d.description
        s.withUTF8 { u in
            let n = u.count >= 2 && u[u.count - 2] == UInt8(ascii: ".") && u[u.count - 1] == UInt8(ascii: "0") ? u.count - 2 : u.count
            out.append(contentsOf: UnsafeBufferPointer(rebasing: u[0..<n]))
        }
    }

    package static func integer(_ magnitude: UInt64, negative: Bool, into out: inout [UInt8]) {
        if negative { out.append(UInt8(ascii: "-")) }
        if magnitude < 10 { out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude)); return }
        let start = out.count
        var m = magnitude
        while m > 0 {
            out.append(UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: m % 10))
            m /= 10
        }
        out[start...].reverse()
    }

    package static func integer<T: BinaryInteger>(_ v: T, into out: inout [UInt8]) {
        integer(UInt64(v.magnitude), negative: v < 0, into: &out)
    }

    /// A quoted string escaped as JSONEncoder does with .withoutEscapingSlashes.
    package static func string(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        if s.utf8.withContiguousStorageIfAvailable({ escape($0, into: &out) }) == nil {
            Array(s.utf8).withUnsafeBufferPointer { escape($0, into: &out) }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func escape(_ u: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) {
        var run = 0
        var i = 0
        let raw = UnsafeRawBufferPointer(u)
        while i < u.count {
            // Eight bytes at a time while none needs an escape (most strings need none).
            while u.count - i >= 8, specialBytes(raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) == 0 { i += 8 }
            guard i < u.count else { break }
            let c = u[i]
            if c >= 0x20 && c != UInt8(ascii: "\"") && c != UInt8(ascii: "\\") { i += 1; continue }
            if i > run { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run..<i])) }
            out.append(UInt8(ascii: "\\"))
            switch c {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(c)
            case 0x08: out.append(UInt8(ascii: "b"))
            case 0x0C: out.append(UInt8(ascii: "f"))
            case 0x0A: out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(UInt8(ascii: "r"))
            case 0x09: out.append(UInt8(ascii: "t"))
            default:
                append("u00", &out)
                out.append(hexDigit(c >> 4))
                out.append(hexDigit(c & 0xF))
            }
            i += 1
            run = i
        }
        if run < u.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[run...])) }
    }

    // MARK: decimal to Double

    private static let powersOfTen: [UInt64] = (0...19).map { (0..<$0).reduce(UInt64(1)) { p, _ in p * 10 } }

    /// m × 10^e rounded to nearest (ties to even) with 128-bit integer arithmetic, for
    /// 1 ≤ m < 2^64 and -19 ≤ e ≤ 19; nil outside that range. Both the product and the scaled
    /// quotient are exact integers (plus a remainder bit), so the one rounding is correct.
    package static func exactDouble(_ m: UInt64, _ e: Int) -> Double? {
        guard m != 0, e >= -19, e <= 19 else { return nil }
        let p = powersOfTen[abs(e)]
        if e >= 0 {
            let (hi, lo) = m.multipliedFullWidth(by: p)
            return round(hi, lo, sticky: false, exponent: 0)
        }
        // q = m·2^s / p with s chosen so that q has 62 to 64 bits.
        let s = 63 + (64 - p.leadingZeroBitCount) - (64 - m.leadingZeroBitCount)
        let hi: UInt64, lo: UInt64
        if s >= 64 { hi = m << (s - 64); lo = 0 } else if s > 0 { hi = m >> (64 - s); lo = m << s } else { hi = 0; lo = m }
        let (q, r) = p.dividingFullWidth((high: hi, low: lo))
        return round(0, q, sticky: r != 0, exponent: -s)
    }

    /// (hi·2^64 + lo, plus a little more when sticky) × 2^exponent, rounded to 53 bits.
    private static func round(_ hi: UInt64, _ lo: UInt64, sticky: Bool, exponent: Int) -> Double {
        let bits = hi != 0 ? 128 - hi.leadingZeroBitCount : 64 - lo.leadingZeroBitCount
        let shift = bits - 53
        if shift <= 0 && !sticky { return Double(sign: .plus, exponent: exponent, significand: Double(lo)) }
        precondition(shift > 0, "a sticky remainder comes with a quotient of at least 62 bits")
        func bit(_ k: Int) -> Bool { k >= 64 ? (hi >> UInt64(k - 64)) & 1 == 1 : (lo >> UInt64(k)) & 1 == 1 }
        func anyBelow(_ k: Int) -> Bool {
            if k <= 0 { return false }
            if k < 64 { return lo & ((1 << UInt64(k)) - 1) != 0 }
            return lo != 0 || (k > 64 && hi & ((1 << UInt64(k - 64)) - 1) != 0)
        }
        var mant = shift >= 64 ? hi >> UInt64(shift - 64) : (hi << UInt64(64 - shift)) | (lo >> UInt64(shift))
        if bit(shift - 1) && (sticky || anyBelow(shift - 1) || mant & 1 == 1) { mant += 1 }
        return Double(sign: .plus, exponent: exponent + shift, significand: Double(mant))
    }

    /// Non-zero when one of the eight bytes is `"`, `\` or a control character (below 0x20):
    /// the classic "has zero byte" and "has byte less than" word tricks, exact for "any".
    @inline(__always)
    package static func specialBytes(_ w: UInt64) -> UInt64 {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        let q = w ^ (ones &* 0x22), bs = w ^ (ones &* 0x5C)
        return ((q &- ones) & ~q | (bs &- ones) & ~bs | (w &- ones &* 0x20) & ~w) & highs
    }

    /// Lowercase, as JSONEncoder writes `\u001f`.
    @inline(__always)
    package static func hexDigit(_ v: UInt8) -> UInt8 { v < 10 ? UInt8(ascii: "0") &+ v : UInt8(ascii: "a") &+ (v &- 10) }

    @inline(__always)
    package static func append(_ s: StaticString, _ out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    /// UTF-8 byte order, the order of JSONEncoder's .sortedKeys.
    package static func utf8Less(_ a: String, _ b: String) -> Bool {
        let r: Bool?? = a.utf8.withContiguousStorageIfAvailable { x in
            b.utf8.withContiguousStorageIfAvailable { y in
                let n = min(x.count, y.count)
                var i = 0
                while i < n {
                    if x[i] != y[i] { return x[i] < y[i] }
                    i += 1
                }
                return x.count < y.count
            }
        }
        if let r, let r { return r }
        return a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}

// MARK: - reading

private extension UInt8 {
    package static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\"), comma = UInt8(ascii: ",")
    package static let colon = UInt8(ascii: ":"), openBrace = UInt8(ascii: "{"), closeBrace = UInt8(ascii: "}")
    package static let openBracket = UInt8(ascii: "["), closeBracket = UInt8(ascii: "]"), minus = UInt8(ascii: "-")
    package static let plus = UInt8(ascii: "+"), dot = UInt8(ascii: "."), zero = UInt8(ascii: "0"), nine = UInt8(ascii: "9")
}

/// A cursor over UTF-8 bytes. It holds an unsafe buffer, so it lives only inside the
/// closure that lent the buffer (see `JSONValue.parse`).
package struct JSONReader {
    package let b: UnsafeRawBufferPointer
    package var i: Int
    package var depth = 0
    /// The bytes came from a Swift String, so they are valid UTF-8 and need no second check.
    package let trustedUTF8: Bool
    /// Members of the objects being read, innermost last: one buffer for all of them, so that
    /// each dictionary is built once at its final size (growing one was half of the parse time).
    package var members: [(key: String, value: JSONValue)] = []

    /// JSONDecoder's nesting limit: 512 levels read, 513 refused.
    package static let maxDepth = 512

    package init(_ bytes: UnsafeRawBufferPointer, trustedUTF8: Bool = false) {
        b = bytes
        self.trustedUTF8 = trustedUTF8
        // Foundation skips a UTF-8 byte order mark at offset 0 (and nowhere else).
        i = bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
    }

    package func error(_ message: String, at offset: Int? = nil) -> JSONParseError {
        JSONParseError(offset: offset ?? i, message: message)
    }

    package func unexpected(_ what: String) -> JSONParseError {
        guard i < b.count else { return error("unexpected end of input, expected \(what)") }
        let c = b[i]
        let shown = c >= 0x20 && c < 0x7F ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(String(c, radix: 16))"
        return error("unexpected \(shown), expected \(what)")
    }

    @inline(__always)
    package mutating func skipWhitespace() {
        while i < b.count {
            switch b[i] {
            case 0x20, 0x0A, 0x0D, 0x09: i += 1
            default: return
            }
        }
    }

    /// The next byte after whitespace, not consumed; nil at the end.
    @inline(__always)
    package mutating func peek() -> UInt8? {
        skipWhitespace()
        return i < b.count ? b[i] : nil
    }

    /// Only whitespace may follow the value.
    package mutating func finish() throws(JSONParseError) {
        if peek() != nil { throw unexpected("the end of input after the value") }
    }

    package mutating func value() throws(JSONParseError) -> JSONValue {
        guard let c = peek() else { throw unexpected("a value") }
        switch c {
        case .openBrace: return .object(try object())
        case .openBracket: return .array(try array())
        case .quote: return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case .minus, .zero ... .nine: return .number(try number())
        default: throw unexpected("a value")
        }
    }

    package mutating func literal(_ word: StaticString) throws(JSONParseError) {
        let n = word.utf8CodeUnitCount
        let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
        guard b.count - i >= n, (0..<n).allSatisfy({ b[i + $0] == w[$0] }) else { throw unexpected("a value") }
        i += n
    }

    // MARK: containers

    package mutating func enter() throws(JSONParseError) {
        depth += 1
        if depth > Self.maxDepth { throw error("arrays and objects nested more than \(Self.maxDepth) deep") }
    }

    package mutating func array() throws(JSONParseError) -> [JSONValue] {
        try enter()
        i += 1
        var out: [JSONValue] = []
        if peek() == UInt8.closeBracket { i += 1; depth -= 1; return out }
        repeat { out.append(try value()) } while try nextElement()
        return out
    }

    package mutating func object() throws(JSONParseError) -> [String: JSONValue] {
        let base = members.count
        defer { members.removeSubrange(base...) }
        var more = try beginObject()
        while more {
            let k = try memberKey()
            let mark = (i, depth)
            do {
                members.append((k, try value()))
            } catch {
                // JSONDecoder never decodes the value of a repeated key, so that value only has to scan.
                guard members[base...].contains(where: { $0.key == k }) else { throw error }
                (i, depth) = mark
                try skipUndecoded()
            }
            more = try nextMember()
        }
        let n = members.count - base
        var out = [String: JSONValue](minimumCapacity: n)
        for m in members[base...] { out[m.key] = m.value }
        if out.count < n {
            // Repeated keys: the first wins, as in JSONDecoder, with its own key (keys can be
            // different bytes but equal Strings, such as "é" and "e\u{301}").
            out = [:]
            for m in members[base...] where out[m.key] == nil { out[m.key] = m.value }
        }
        return out
    }

    /// Consumes `{`; false when the object is empty (and then also its `}`).
    package mutating func beginObject() throws(JSONParseError) -> Bool {
        guard peek() == UInt8.openBrace else { throw unexpected("an object") }
        try enter()
        i += 1
        if peek() == UInt8.closeBrace { i += 1; depth -= 1; return false }
        return true
    }

    /// A member's key and its colon.
    package mutating func memberKey() throws(JSONParseError) -> String {
        guard peek() == UInt8.quote else { throw unexpected("a string key in an object") }
        let k = try string()
        guard peek() == UInt8.colon else { throw unexpected("':' after an object key") }
        i += 1
        return k
    }

    /// After a member's value: true when another member follows, false at the closing `}`.
    package mutating func nextMember() throws(JSONParseError) -> Bool {
        let c = peek()
        if c == UInt8.comma {
            i += 1
            // One trailing comma, because JSONDecoder accepts it.
            if peek() == UInt8.closeBrace { i += 1; depth -= 1; return false }
            return true
        }
        if c == UInt8.closeBrace { i += 1; depth -= 1; return false }
        throw unexpected("',' or '}' in an object")
    }

    /// After an array element: true when another element follows, false at the closing `]`.
    package mutating func nextElement() throws(JSONParseError) -> Bool {
        let c = peek()
        if c == UInt8.comma {
            i += 1
            // One trailing comma, because JSONDecoder accepts it.
            if peek() == UInt8.closeBracket { i += 1; depth -= 1; return false }
            return true
        }
        if c == UInt8.closeBracket { i += 1; depth -= 1; return false }
        throw unexpected("',' or ']' in an array")
    }

    /// Skips a value the way JSONDecoder's scanner passes over values it never decodes (repeated
    /// or unknown keys): brackets, commas, colons and literals are checked, but a number is any
    /// run of `0-9 . + - e E` and a string needs only its closing quote (and 4 bytes after `\u`).
    package mutating func skipUndecoded() throws(JSONParseError) {
        guard let c = peek() else { throw unexpected("a value") }
        switch c {
        case .quote:
            try skipUndecodedString()
        case .openBrace:
            try enter()
            i += 1
            if peek() == UInt8.closeBrace { i += 1; depth -= 1; return }
            repeat {
                guard peek() == UInt8.quote else { throw unexpected("a string key in an object") }
                try skipUndecodedString()
                guard peek() == UInt8.colon else { throw unexpected("':' after an object key") }
                i += 1
                try skipUndecoded()
            } while try nextMember()
        case .openBracket:
            try enter()
            i += 1
            if peek() == UInt8.closeBracket { i += 1; depth -= 1; return }
            repeat { try skipUndecoded() } while try nextElement()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case .minus, .zero ... .nine:
            i += 1
            while i < b.count {
                switch b[i] {
                case .zero ... .nine, .dot, .plus, .minus, UInt8(ascii: "e"), UInt8(ascii: "E"): i += 1
                default: return
                }
            }
        default:
            throw unexpected("a value")
        }
    }

    private mutating func skipUndecodedString() throws(JSONParseError) {
        let open = i
        i += 1
        while i < b.count {
            switch b[i] {
            case .quote:
                i += 1
                return
            case .backslash:
                i += 2
                if i <= b.count, b[i - 1] == UInt8(ascii: "u") {
                    guard b.count - i >= 4, !(i..<i + 4).contains(where: { b[$0] == .quote }) else {
                        throw error("truncated \\u escape in a string")
                    }
                    i += 4
                }
            default:
                i += 1
            }
        }
        throw error("unterminated string", at: open)
    }

    // MARK: strings

    package mutating func string() throws(JSONParseError) -> String {
        let open = i
        i += 1
        let start = i
        var high: UInt8 = 0
        var highWords: UInt64 = 0
        while b.count - i >= 8 {
            let w = b.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            if FastJSON.specialBytes(w) != 0 { break }
            highWords |= w
            i += 8
        }
        if highWords & 0x8080_8080_8080_8080 != 0 { high = 0x80 }
        while i < b.count {
            let c = b[i]
            high |= c
            if c == .quote {
                let s = try makeString(UnsafeRawBufferPointer(rebasing: b[start..<i]), ascii: high < 0x80, at: start)
                i += 1
                return s
            }
            if c == .backslash || c < 0x20 { break }
            i += 1
        }
        guard i < b.count else { throw error("unterminated string", at: open) }
        var buf: [UInt8] = []
        buf.reserveCapacity(i - start + 16)
        buf.append(contentsOf: UnsafeRawBufferPointer(rebasing: b[start..<i]))
        while i < b.count {
            let c = b[i]
            switch c {
            case .quote:
                i += 1
                return try buf.withUnsafeBytes { u in
                    Result { () throws(JSONParseError) in try makeString(u, ascii: false, at: start) }
                }.get()
            case .backslash:
                try escape(into: &buf)
            case 0..<0x20:
                throw error("unescaped control character 0x\(String(c, radix: 16)) in a string")
            default:
                buf.append(c)
                i += 1
            }
        }
        throw error("unterminated string", at: open)
    }

    private func makeString(_ u: UnsafeRawBufferPointer, ascii: Bool, at offset: Int) throws(JSONParseError) -> String {
        // String(decoding:) is the faster of the two and changes nothing in valid UTF-8.
        if ascii || trustedUTF8 { return String(decoding: u, as: UTF8.self) }
        guard let s = String(validating: u, as: UTF8.self) else { throw error("invalid UTF-8 in a string", at: offset) }
        return s
    }

    private mutating func escape(into buf: inout [UInt8]) throws(JSONParseError) {
        let at = i
        i += 1
        guard i < b.count else { throw error("unterminated string") }
        let c = b[i]
        i += 1
        switch c {
        case .quote, .backslash, UInt8(ascii: "/"): buf.append(c)
        case UInt8(ascii: "b"): buf.append(0x08)
        case UInt8(ascii: "f"): buf.append(0x0C)
        case UInt8(ascii: "n"): buf.append(0x0A)
        case UInt8(ascii: "r"): buf.append(0x0D)
        case UInt8(ascii: "t"): buf.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = UInt32(try hex4())
            if (0xD800...0xDBFF).contains(scalar) {
                // A high surrogate must be followed by an escaped low one; lone halves are refused, as by Foundation.
                guard b.count - i >= 2, b[i] == .backslash, b[i + 1] == UInt8(ascii: "u") else {
                    throw error("lone high surrogate \\u\(String(scalar, radix: 16)) in a string", at: at)
                }
                i += 2
                let low = UInt32(try hex4())
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw error("high surrogate not followed by a low surrogate in a string", at: at)
                }
                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
            } else if (0xDC00...0xDFFF).contains(scalar) {
                throw error("lone low surrogate \\u\(String(scalar, radix: 16)) in a string", at: at)
            }
            // Every value left is a valid scalar (surrogates handled above).
            buf.append(contentsOf: UTF8.encode(Unicode.Scalar(scalar)!)!)
        default:
            throw error("invalid escape sequence in a string", at: at)
        }
    }

    private mutating func hex4() throws(JSONParseError) -> UInt16 {
        guard b.count - i >= 4 else { throw error("truncated \\u escape in a string") }
        var v: UInt16 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt8
            switch c {
            case .zero ... .nine: d = c - .zero
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw error("invalid hex digit in a \\u escape")
            }
            v = v << 4 | UInt16(d)
            i += 1
        }
        return v
    }

    // MARK: numbers

    /// A number's text, checked against the JSON grammar, with its decimal digits.
    package struct NumberToken {
        var start: Int
        var end: Int
        var negative: Bool
        /// The first 19 significant digits; the value is mantissa × 10^exponent when !truncated.
        var mantissa: UInt64
        var exponent: Int
        /// A non-zero digit beyond the first 19 was dropped.
        var truncated: Bool
        /// No fraction and no exponent.
        var isInteger: Bool
    }

    package mutating func numberToken() throws(JSONParseError) -> NumberToken {
        let start = i
        var t = NumberToken(start: i, end: i, negative: false, mantissa: 0, exponent: 0, truncated: false, isInteger: true)
        var digits = 0
        if i < b.count, b[i] == .minus { t.negative = true; i += 1 }
        guard i < b.count, b[i] >= .zero, b[i] <= .nine else { throw error("a number needs a digit", at: i) }
        if b[i] == .zero {
            i += 1
            if i < b.count, b[i] >= .zero, b[i] <= .nine { throw error("number with a leading zero", at: start) }
        } else {
            while i < b.count, b[i] >= .zero, b[i] <= .nine {
                if digits < 19 { t.mantissa = t.mantissa &* 10 &+ UInt64(b[i] - .zero); digits += 1 } else {
                    t.exponent += 1
                    if b[i] != .zero { t.truncated = true }
                }
                i += 1
            }
        }
        if i < b.count, b[i] == .dot {
            t.isInteger = false
            i += 1
            guard i < b.count, b[i] >= .zero, b[i] <= .nine else { throw error("a number needs digits after '.'") }
            while i < b.count, b[i] >= .zero, b[i] <= .nine {
                let d = b[i] - .zero
                if digits < 19 {
                    t.mantissa = t.mantissa &* 10 &+ UInt64(d)
                    t.exponent -= 1
                    // Leading zeros of a fraction are not significant.
                    if t.mantissa != 0 { digits += 1 }
                } else if d != 0 {
                    t.truncated = true
                }
                i += 1
            }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            t.isInteger = false
            i += 1
            var negExp = false
            if i < b.count, b[i] == .plus || b[i] == .minus { negExp = b[i] == .minus; i += 1 }
            guard i < b.count, b[i] >= .zero, b[i] <= .nine else { throw error("a number needs digits in its exponent") }
            var e = 0
            while i < b.count, b[i] >= .zero, b[i] <= .nine {
                // Past a million the value is 0 or infinite either way; stop before Int overflows.
                if e < 1_000_000 { e = e * 10 + Int(b[i] - .zero) }
                i += 1
            }
            t.exponent += negExp ? -e : e
        }
        // "1.2.3" or "1-2": refused here, not at the next separator, so that a number ends where
        // JSONDecoder's scanner ends it (which matters for values only scanned, see skipUndecoded).
        if i < b.count {
            switch b[i] {
            case .zero ... .nine, .dot, .plus, .minus, UInt8(ascii: "e"), UInt8(ascii: "E"):
                throw error("malformed number", at: start)
            default: break
            }
        }
        t.end = i
        return t
    }

    package mutating func number() throws(JSONParseError) -> Double {
        let t = try numberToken()
        return try double(t)
    }

    /// Exact powers of ten a Double holds (10^22 is the last).
    private static let powers: [Double] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                           1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

    package func double(_ t: NumberToken) throws(JSONParseError) -> Double {
        if t.mantissa == 0 && !t.truncated { return t.negative ? -0.0 : 0.0 }
        // Clinger's fast path: both operands exact, so the one rounding is the correct one.
        if !t.truncated, t.mantissa <= 1 << 53, t.exponent >= -22, t.exponent <= 22 {
            let m = Double(t.mantissa)
            let v = t.exponent < 0 ? m / Self.powers[-t.exponent] : m * Self.powers[t.exponent]
            return t.negative ? -v : v
        }
        // Timestamps (17 digits) land here: exact integer arithmetic instead of a String and strtod.
        if !t.truncated, let v = FastJSON.exactDouble(t.mantissa, t.exponent) { return t.negative ? -v : v }
        // Everything else goes to the C library's correctly rounded strtod (through Double(String)).
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: b[t.start..<t.end]), as: UTF8.self)
        // Like JSONDecoder: refuse what overflows, and what is not zero but rounds to zero.
        guard let v = Double(text), v.isFinite, v != 0 else {
            throw error("number \(text.prefix(40)) is not representable as a Double", at: t.start)
        }
        return v
    }

    /// An integer field, exactly: also 1.0 or 1e3, as JSONDecoder takes them, but not 1.5.
    package func integer(_ t: NumberToken, field: String) throws(JSONParseError) -> (magnitude: UInt64, negative: Bool) {
        var magnitude: UInt64 = 0
        if t.isInteger {
            var j = t.start + (t.negative ? 1 : 0)
            while j < t.end {
                let (m1, o1) = magnitude.multipliedReportingOverflow(by: 10)
                let (m2, o2) = m1.addingReportingOverflow(UInt64(b[j] - .zero))
                if o1 || o2 { throw error("\(field) is out of range", at: t.start) }
                magnitude = m2
                j += 1
            }
        } else {
            // From the decimal digits, not through a Double, which would round large values.
            guard !t.truncated else { throw error("\(field) is not an integer in range", at: t.start) }
            var m = t.mantissa, e = t.exponent
            while e < 0 && m != 0 {
                guard m % 10 == 0 else { throw error("\(field) must be an integer", at: t.start) }
                m /= 10
                e += 1
            }
            while e > 0 && m != 0 {
                let (m1, o) = m.multipliedReportingOverflow(by: 10)
                if o { throw error("\(field) is out of range", at: t.start) }
                m = m1
                e -= 1
            }
            magnitude = m
        }
        return (magnitude, t.negative && magnitude != 0)
    }

    // MARK: typed fields (for the hand-written message decoders)

    package mutating func intField(_ field: String) throws(JSONParseError) -> Int {
        guard let c = peek(), c == .minus || (c >= .zero && c <= .nine) else { throw unexpected("a number for \(field)") }
        let t = try numberToken()
        let (m, neg) = try integer(t, field: field)
        if neg {
            guard m <= UInt64(Int.max) + 1 else { throw error("\(field) is out of range", at: t.start) }
            return m == UInt64(Int.max) + 1 ? Int.min : -Int(m)
        }
        guard m <= UInt64(Int.max) else { throw error("\(field) is out of range", at: t.start) }
        return Int(m)
    }

    package mutating func uint64Field(_ field: String) throws(JSONParseError) -> UInt64 {
        guard let c = peek(), c == .minus || (c >= .zero && c <= .nine) else { throw unexpected("a number for \(field)") }
        let t = try numberToken()
        let (m, neg) = try integer(t, field: field)
        if neg { throw error("\(field) must not be negative", at: t.start) }
        return m
    }

    package mutating func doubleField(_ field: String) throws(JSONParseError) -> Double {
        guard let c = peek(), c == .minus || (c >= .zero && c <= .nine) else { throw unexpected("a number for \(field)") }
        return try number()
    }

    /// `null` (as for a missing key) or a number.
    package mutating func optionalDoubleField(_ field: String) throws(JSONParseError) -> Double? {
        if peek() == UInt8(ascii: "n") { try literal("null"); return nil }
        return try doubleField(field)
    }

    package mutating func stringField(_ field: String) throws(JSONParseError) -> String {
        guard peek() == UInt8.quote else { throw unexpected("a string for \(field)") }
        return try string()
    }

    package mutating func optionalStringField(_ field: String) throws(JSONParseError) -> String? {
        if peek() == UInt8(ascii: "n") { try literal("null"); return nil }
        return try stringField(field)
    }

    package mutating func stringArrayField(_ field: String) throws(JSONParseError) -> [String] {
        guard peek() == UInt8.openBracket else { throw unexpected("an array of strings for \(field)") }
        try enter()
        i += 1
        var out: [String] = []
        if peek() == UInt8.closeBracket { i += 1; depth -= 1; return out }
        repeat { out.append(try stringField(field)) } while try nextElement()
        return out
    }

    /// JSONValue's Codable init turns a null of an optional key into nil, not `.null`.
    package mutating func optionalValue() throws(JSONParseError) -> JSONValue? {
        if peek() == UInt8(ascii: "n") { try literal("null"); return nil }
        return try value()
    }
}
