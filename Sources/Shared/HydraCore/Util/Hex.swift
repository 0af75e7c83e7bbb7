/// Lowercase hex without Foundation's String(format:), which was ~7 % of the coordinator's CPU
/// when every message's MAC went through it byte by byte.
public enum Hex {
    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for b in bytes {
            out.append(digit(b >> 4))
            out.append(digit(b & 0xF))
        }
        return String(decoding: out, as: UTF8.self)
    }

    @inline(__always)
    static func digit(_ v: UInt8) -> UInt8 { v < 10 ? UInt8(ascii: "0") &+ v : UInt8(ascii: "a") &+ (v &- 10) }

    /// Upper- or lowercase hex digits, an even number of them; nil for anything else.
    public static func decode(_ s: String) -> [UInt8]? {
        let u = s.utf8
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var high: UInt8 = 0
        var odd = false
        for c in u {
            guard let v = value(c) else { return nil }
            if odd { out.append(high << 4 | v) } else { high = v }
            odd.toggle()
        }
        return out
    }

    @inline(__always)
    static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c &- UInt8(ascii: "a") &+ 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c &- UInt8(ascii: "A") &+ 10
        default: return nil
        }
    }
}
