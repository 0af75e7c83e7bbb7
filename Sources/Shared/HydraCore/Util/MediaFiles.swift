import Foundation

/// Checksums used by PNG (CRC-32, IEEE) and zlib (Adler-32).
public enum Checksums {
    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1 }
        return c
    }

    public static func crc32<D: Sequence>(_ bytes: D, start: UInt32 = 0) -> UInt32 where D.Element == UInt8 {
        var c = ~start
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return ~c
    }

    public static func adler32<D: Sequence>(_ bytes: D) -> UInt32 where D.Element == UInt8 {
        var a: UInt32 = 1, b: UInt32 = 0
        for x in bytes { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        return b << 16 | a
    }
}

/// Minimal PNG writer (8-bit RGB, zlib "stored" blocks, no compression): enough
/// for the fake ComfyUI to hand out files that real decoders and scorers accept.
public enum PNGEncoder {
    public static func rgb(width: Int, height: Int, pixel: (Int, Int) -> (UInt8, UInt8, UInt8)) -> Data {
        var raw: [UInt8] = []
        raw.reserveCapacity((width * 3 + 1) * height)
        for y in 0..<height {
            raw.append(0) // filter type None
            for x in 0..<width { let p = pixel(x, y); raw.append(p.0); raw.append(p.1); raw.append(p.2) }
        }
        var z: [UInt8] = [0x78, 0x01]
        var off = 0
        repeat {
            let n = min(65535, raw.count - off)
            let final: UInt8 = off + n >= raw.count ? 1 : 0
            z.append(final)
            z.append(UInt8(n & 0xff)); z.append(UInt8(n >> 8))
            z.append(UInt8(~n & 0xff)); z.append(UInt8((~n >> 8) & 0xff))
            z.append(contentsOf: raw[off..<off + n])
            off += n
        } while off < raw.count
        z.append(contentsOf: be32(Checksums.adler32(raw)))

        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var ihdr = be32(UInt32(width)) + be32(UInt32(height))
        ihdr += [8, 2, 0, 0, 0] // depth 8, colour type RGB, deflate, filter 0, no interlace
        out.append(chunk("IHDR", ihdr))
        out.append(chunk("IDAT", z))
        out.append(chunk("IEND", []))
        return out
    }

    static func chunk(_ type: String, _ payload: [UInt8]) -> Data {
        let t = Array(type.utf8)
        var d = Data(be32(UInt32(payload.count)))
        d.append(contentsOf: t); d.append(contentsOf: payload)
        d.append(contentsOf: be32(Checksums.crc32(t + payload)))
        return d
    }

    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }

    /// (width, height) from a PNG header, nil if the bytes are not a PNG.
    public static func dimensions(_ d: Data) -> (Int, Int)? {
        let b = [UInt8](d.prefix(24))
        guard b.count == 24, b[0..<8] == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], Array(b[12..<16]) == Array("IHDR".utf8) else { return nil }
        let w = Int(b[16]) << 24 | Int(b[17]) << 16 | Int(b[18]) << 8 | Int(b[19])
        let h = Int(b[20]) << 24 | Int(b[21]) << 16 | Int(b[22]) << 8 | Int(b[23])
        return (w, h)
    }
}

/// RIFF/WAVE PCM, 16-bit little-endian: the GPT-SoVITS fake writes it, the TTS executor checks it.
public enum WAVFile {
    public struct Info: Sendable, Equatable {
        public var sampleRate: Int
        public var channels: Int
        public var bitsPerSample: Int
        /// Samples per channel actually present (RIFF sizes are not trusted: streaming headers say 0).
        public var frames: Int
        public var allZero: Bool
        public var seconds: Double { sampleRate > 0 ? Double(frames) / Double(sampleRate) : 0 }
    }

    /// `dataLength` overrides the size fields (0 = the streaming header GPT-SoVITS sends).
    public static func header(sampleRate: Int, channels: Int = 1, dataLength: Int) -> Data {
        var d = Data("RIFF".utf8)
        d.append(le32(UInt32(dataLength == 0 ? 0 : 36 + dataLength)))
        d.append(Data("WAVEfmt ".utf8))
        d.append(le32(16)); d.append(le16(1)); d.append(le16(UInt16(channels)))
        d.append(le32(UInt32(sampleRate))); d.append(le32(UInt32(sampleRate * channels * 2)))
        d.append(le16(UInt16(channels * 2))); d.append(le16(16))
        d.append(Data("data".utf8)); d.append(le32(UInt32(dataLength)))
        return d
    }

    public static func pcm16(_ samples: [Int16]) -> Data {
        var d = Data(capacity: samples.count * 2)
        for s in samples { d.append(UInt8(truncatingIfNeeded: UInt16(bitPattern: s))); d.append(UInt8(truncatingIfNeeded: UInt16(bitPattern: s) >> 8)) }
        return d
    }

    public static func mono16(sampleRate: Int, samples: [Int16]) -> Data {
        header(sampleRate: sampleRate, dataLength: samples.count * 2) + pcm16(samples)
    }

    /// Parses the fmt chunk and measures the data that follows the data chunk header.
    public static func inspect(_ d: Data) -> Info? {
        let b = [UInt8](d)
        guard b.count >= 12, Array(b[0..<4]) == Array("RIFF".utf8), Array(b[8..<12]) == Array("WAVE".utf8) else { return nil }
        var i = 12
        var rate = 0, channels = 0, bits = 0
        while i + 8 <= b.count {
            let id = String(decoding: b[i..<i + 4], as: UTF8.self)
            let size = Int(b[i + 4]) | Int(b[i + 5]) << 8 | Int(b[i + 6]) << 16 | Int(b[i + 7]) << 24
            if id == "fmt ", i + 24 <= b.count {
                channels = Int(b[i + 10]) | Int(b[i + 11]) << 8
                rate = Int(b[i + 12]) | Int(b[i + 13]) << 8 | Int(b[i + 14]) << 16 | Int(b[i + 15]) << 24
                bits = Int(b[i + 22]) | Int(b[i + 23]) << 8
            } else if id == "data" {
                guard channels > 0, bits > 0 else { return nil }
                let payload = b[(i + 8)...]
                let frames = payload.count / (channels * bits / 8)
                return Info(sampleRate: rate, channels: channels, bitsPerSample: bits, frames: frames,
                            allZero: !payload.contains { $0 != 0 })
            }
            i += 8 + size + (size & 1)
        }
        return nil
    }

    static func le32(_ v: UInt32) -> Data { Data([UInt8(v & 0xff), UInt8((v >> 8) & 0xff), UInt8((v >> 16) & 0xff), UInt8(v >> 24)]) }
    static func le16(_ v: UInt16) -> Data { Data([UInt8(v & 0xff), UInt8(v >> 8)]) }
}
