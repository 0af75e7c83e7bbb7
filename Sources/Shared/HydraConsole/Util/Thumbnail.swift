import Foundation
import Synchronization
import HydraCore

/// Small PNGs of big ones, for the console's galleries: a night's approvals would otherwise send
/// every full-size image to the browser. Reads 8-bit non-interlaced PNGs (grey, RGB, palette, with
/// or without alpha; what ComfyUI and the fakes write), averages boxes of pixels down to `maxSide`,
/// and writes an RGB PNG. Anything else (16-bit, interlaced, not a PNG, damaged) gives nil and the
/// console sends the original. Pure Swift: no image library in the build.
public enum PNGThumbnail {
    /// The most pixels it decodes (a 4K×4K image); larger ones are refused rather than held in memory.
    public static let maxPixels = 16 * 1024 * 1024

    public static func make(_ data: Data, maxSide: Int = 256) -> Data? {
        guard let img = decode([UInt8](data)) else { return nil }
        let scale = max(1, (max(img.width, img.height) + maxSide - 1) / maxSide)
        if scale == 1 { return PNGEncoder.rgb(width: img.width, height: img.height) { x, y in img.rgb(x, y) } }
        let w = max(1, img.width / scale), h = max(1, img.height / scale)
        return PNGEncoder.rgb(width: w, height: h) { x, y in
            var r = 0, g = 0, b = 0, n = 0
            for yy in (y * scale)..<min(img.height, (y + 1) * scale) {
                for xx in (x * scale)..<min(img.width, (x + 1) * scale) {
                    let p = img.rgb(xx, yy)
                    r += Int(p.0); g += Int(p.1); b += Int(p.2); n += 1
                }
            }
            n = max(n, 1)
            return (UInt8(r / n), UInt8(g / n), UInt8(b / n))
        }
    }

    struct Image {
        var width: Int, height: Int
        var channels: Int
        var pixels: [UInt8]
        var palette: [UInt8]
        var paletted: Bool

        /// Colour of one pixel; alpha composited over white, as galleries show them.
        func rgb(_ x: Int, _ y: Int) -> (UInt8, UInt8, UInt8) {
            let i = (y * width + x) * channels
            if paletted {
                let p = Int(pixels[i]) * 3
                guard p + 2 < palette.count else { return (0, 0, 0) }
                return (palette[p], palette[p + 1], palette[p + 2])
            }
            func over(_ c: UInt8, _ a: UInt8) -> UInt8 { UInt8((Int(c) * Int(a) + 255 * (255 - Int(a))) / 255) }
            switch channels {
            case 1: return (pixels[i], pixels[i], pixels[i])
            case 2: let v = over(pixels[i], pixels[i + 1]); return (v, v, v)
            case 3: return (pixels[i], pixels[i + 1], pixels[i + 2])
            default:
                let a = pixels[i + 3]
                return (over(pixels[i], a), over(pixels[i + 1], a), over(pixels[i + 2], a))
            }
        }
    }

    static func decode(_ b: [UInt8]) -> Image? {
        guard b.count > 33, b[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] else { return nil }
        var i = 8
        var width = 0, height = 0, channels = 0, paletted = false
        var idat: [UInt8] = []
        var palette: [UInt8] = []
        func be32(_ o: Int) -> Int { Int(b[o]) << 24 | Int(b[o + 1]) << 16 | Int(b[o + 2]) << 8 | Int(b[o + 3]) }
        while i + 12 <= b.count {
            let n = be32(i)
            guard n >= 0, i + 12 + n <= b.count else { return nil }
            let type = String(decoding: b[(i + 4)..<(i + 8)], as: UTF8.self)
            let body = (i + 8)..<(i + 8 + n)
            switch type {
            case "IHDR":
                guard n == 13 else { return nil }
                width = be32(body.lowerBound); height = be32(body.lowerBound + 4)
                let depth = b[body.lowerBound + 8], color = b[body.lowerBound + 9], interlace = b[body.lowerBound + 12]
                // Each side bounded first: two 32-bit sides multiplied overflow Int and trap (a 45-byte
                // file claiming 4294967295 × 4294967295 pixels once stopped the coordinator serving /thumb).
                guard depth == 8, interlace == 0, (1...maxPixels).contains(width), (1...maxPixels).contains(height),
                      width * height <= maxPixels else { return nil }
                switch color {
                case 0: channels = 1
                case 2: channels = 3
                case 3: channels = 1; paletted = true
                case 4: channels = 2
                case 6: channels = 4
                default: return nil
                }
            case "PLTE": palette = Array(b[body])
            case "IDAT": idat += b[body]
            case "IEND": i = b.count
            default: break
            }
            i += 12 + n
        }
        guard channels > 0, idat.count > 2, !(paletted && palette.isEmpty) else { return nil }
        let stride = width * channels
        guard let raw = try? Inflate.zlib(idat, expected: (stride + 1) * height), raw.count == (stride + 1) * height else { return nil }
        var px = [UInt8](repeating: 0, count: stride * height)
        let bpp = channels
        for y in 0..<height {
            let f = raw[y * (stride + 1)]
            let src = y * (stride + 1) + 1, dst = y * stride
            for x in 0..<stride {
                let v = raw[src + x]
                let a = x >= bpp ? Int(px[dst + x - bpp]) : 0
                let up = y > 0 ? Int(px[dst - stride + x]) : 0
                let c = (x >= bpp && y > 0) ? Int(px[dst - stride + x - bpp]) : 0
                let pred: Int
                switch f {
                case 0: pred = 0
                case 1: pred = a
                case 2: pred = up
                case 3: pred = (a + up) / 2
                case 4:
                    let p = a + up - c, pa = abs(p - a), pb = abs(p - up), pc = abs(p - c)
                    pred = (pa <= pb && pa <= pc) ? a : (pb <= pc ? up : c)
                default: return nil
                }
                px[dst + x] = UInt8(truncatingIfNeeded: Int(v) + pred)
            }
        }
        return Image(width: width, height: height, channels: channels, pixels: px, palette: palette, paletted: paletted)
    }
}

/// RFC 1950/1951 inflate (stored, fixed and dynamic Huffman blocks), enough for PNG image data.
enum Inflate {
    struct Failure: Error {}

    static func zlib(_ data: [UInt8], expected: Int) throws -> [UInt8] {
        guard data.count >= 2, data[0] & 0x0f == 8, (Int(data[0]) << 8 | Int(data[1])) % 31 == 0 else { throw Failure() }
        var s = BitReader(data, start: 2)
        var out: [UInt8] = []
        out.reserveCapacity(expected)
        var final = false
        while !final {
            final = try s.bits(1) == 1
            switch try s.bits(2) {
            case 0:
                s.alignToByte()
                let len = try s.bits(16), nlen = try s.bits(16)
                guard len == ~nlen & 0xffff else { throw Failure() }
                for _ in 0..<len { out.append(UInt8(try s.bits(8))) }
            case 1:
                try block(&s, &out, lit: fixedLit, dist: fixedDist, limit: expected)
            case 2:
                let (lit, dist) = try dynamicTables(&s)
                try block(&s, &out, lit: lit, dist: dist, limit: expected)
            default: throw Failure()
            }
            if out.count > expected { throw Failure() }
        }
        return out
    }

    struct BitReader {
        let d: [UInt8]
        var pos: Int
        var bit = 0
        init(_ d: [UInt8], start: Int) { self.d = d; pos = start }
        mutating func bits(_ n: Int) throws -> Int {
            var v = 0
            for k in 0..<n {
                guard pos < d.count else { throw Failure() }
                v |= Int((d[pos] >> bit) & 1) << k
                bit += 1
                if bit == 8 { bit = 0; pos += 1 }
            }
            return v
        }
        mutating func alignToByte() { if bit != 0 { bit = 0; pos += 1 } }
    }

    /// Canonical Huffman code: counts per length and symbols in code order.
    struct Huffman {
        var counts = [Int](repeating: 0, count: 16)
        var symbols: [Int] = []
        init(lengths: [Int]) {
            for l in lengths { counts[l] += 1 }
            counts[0] = 0
            var offs = [Int](repeating: 0, count: 16)
            for l in 1..<16 { offs[l] = offs[l - 1] + counts[l - 1] }
            symbols = [Int](repeating: 0, count: lengths.count)
            for (sym, l) in lengths.enumerated() where l != 0 { symbols[offs[l]] = sym; offs[l] += 1 }
        }
        func decode(_ s: inout BitReader) throws -> Int {
            var code = 0, first = 0, index = 0
            for len in 1..<16 {
                code |= try s.bits(1)
                let count = counts[len]
                if code - count < first { return symbols[index + (code - first)] }
                index += count
                first = (first + count) << 1
                code <<= 1
            }
            throw Failure()
        }
    }

    static let fixedLit = Huffman(lengths: (0..<288).map { $0 < 144 ? 8 : $0 < 256 ? 9 : $0 < 280 ? 7 : 8 })
    static let fixedDist = Huffman(lengths: [Int](repeating: 5, count: 30))
    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073,
                           4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    static func block(_ s: inout BitReader, _ out: inout [UInt8], lit: Huffman, dist: Huffman, limit: Int) throws {
        while true {
            let sym = try lit.decode(&s)
            if sym < 256 { out.append(UInt8(sym)); continue }
            if sym == 256 { return }
            let li = sym - 257
            guard li < 29 else { throw Failure() }
            let len = lengthBase[li] + (try s.bits(lengthExtra[li]))
            let di = try dist.decode(&s)
            guard di < 30 else { throw Failure() }
            let d = distBase[di] + (try s.bits(distExtra[di]))
            guard d <= out.count, out.count + len <= limit else { throw Failure() }
            let start = out.count - d
            for k in 0..<len { out.append(out[start + k]) }
        }
    }

    static func dynamicTables(_ s: inout BitReader) throws -> (Huffman, Huffman) {
        let hlit = try s.bits(5) + 257, hdist = try s.bits(5) + 1, hclen = try s.bits(4) + 4
        let order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
        var cl = [Int](repeating: 0, count: 19)
        for k in 0..<hclen { cl[order[k]] = try s.bits(3) }
        let clh = Huffman(lengths: cl)
        var lengths: [Int] = []
        while lengths.count < hlit + hdist {
            let sym = try clh.decode(&s)
            switch sym {
            case 0..<16: lengths.append(sym)
            case 16:
                guard let prev = lengths.last else { throw Failure() }
                lengths += [Int](repeating: prev, count: 3 + (try s.bits(2)))
            case 17: lengths += [Int](repeating: 0, count: 3 + (try s.bits(3)))
            default: lengths += [Int](repeating: 0, count: 11 + (try s.bits(7)))
            }
        }
        guard lengths.count == hlit + hdist else { throw Failure() }
        return (Huffman(lengths: Array(lengths[0..<hlit])), Huffman(lengths: Array(lengths[hlit...])))
    }
}

/// Thumbnails already made, by file and its content (a rewritten file gets a new one); the newest 512.
public final class ThumbnailCache: Sendable {
    private let entries = Mutex<(map: [String: Data], order: [String])>(([:], []))
    public init() {}

    /// The thumbnail of `data` (the file at `path`), or nil when it is not a PNG this can read.
    public func get(_ path: String, _ data: Data) -> Data? {
        let key = "\(path)#\(data.count)#\(Checksums.crc32(data.prefix(65536)))#\(Checksums.crc32(data.suffix(65536)))"
        if let t = entries.withLock({ $0.map[key] }) { return t }
        guard let t = PNGThumbnail.make(data) else { return nil }
        entries.withLock { e in
            if e.map.updateValue(t, forKey: key) == nil { e.order.append(key) }
            if e.order.count > 512 { for k in e.order.prefix(e.order.count - 512) { e.map.removeValue(forKey: k) }; e.order.removeFirst(e.order.count - 512) }
        }
        return t
    }
}
