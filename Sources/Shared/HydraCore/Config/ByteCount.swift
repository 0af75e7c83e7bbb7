import Foundation

/// A byte count in a config or batch file: a number of bytes, or a string such as `24GiB`.
public struct ByteCount: Codable, Sendable, Equatable, Hashable, Comparable {
    public var bytes: UInt64
    public init(_ bytes: UInt64) { self.bytes = bytes }
    public static func gib(_ g: Double) -> ByteCount { ByteCount(UInt64(g * Double(ByteSize.GiB))) }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let n = try? c.decode(UInt64.self) { bytes = n; return }
        if let d = try? c.decode(Double.self), let b = ByteSize.bytes(d) { bytes = b; return }
        let s = try c.decode(String.self)
        guard let b = ByteSize.parse(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "'\(s)' is not a size (use e.g. 24GiB, 512MiB or a number of bytes)")
        }
        bytes = b
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(bytes)
    }

    public static func < (a: ByteCount, b: ByteCount) -> Bool { a.bytes < b.bytes }
}
