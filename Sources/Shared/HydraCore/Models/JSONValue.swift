import Foundation

/// A JSON document of unknown shape (job specs, results, constraints).
public enum JSONValue: Codable, Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let d = try? c.decode(Double.self) { self = .number(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        if let o = try? c.decode([String: JSONValue].self) { self = .object(o); return }
        throw DecodingError.dataCorruptedError(in: c, debugDescription: "not a JSON value")
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d.rounded() == d, abs(d) < 9.0e15 { try c.encode(Int64(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var doubleValue: Double? {
        switch self {
        case .number(let d): return d
        case .string(let s): return Double(s)
        default: return nil
        }
    }
    public var intValue: Int? { doubleValue.flatMap { $0.rounded() == $0 ? Int(exactly: $0) : nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }

    /// Converts plain Swift values (as produced by Yams or JSONSerialization) into JSONValue.
    public static func from(any value: Any?) -> JSONValue? {
        guard let value else { return .null }
        switch value {
        case is NSNull: return .null
        case let b as Bool: return .bool(b)
        case let i as Int: return .number(Double(i))
        case let i as Int64: return .number(Double(i))
        case let u as UInt64: return .number(Double(u))
        case let d as Double: return .number(d)
        case let f as Float: return .number(Double(f))
        case let s as String: return .string(s)
        case let a as [Any?]:
            var out: [JSONValue] = []
            for v in a { guard let j = from(any: v) else { return nil }; out.append(j) }
            return .array(out)
        case let a as [Any]:
            var out: [JSONValue] = []
            for v in a { guard let j = from(any: v) else { return nil }; out.append(j) }
            return .array(out)
        case let o as [String: Any?]:
            var out: [String: JSONValue] = [:]
            for (k, v) in o { guard let j = from(any: v) else { return nil }; out[k] = j }
            return .object(out)
        case let o as [String: Any]:
            var out: [String: JSONValue] = [:]
            for (k, v) in o { guard let j = from(any: v) else { return nil }; out[k] = j }
            return .object(out)
        case let o as [AnyHashable: Any]:
            var out: [String: JSONValue] = [:]
            for (k, v) in o { guard let j = from(any: v) else { return nil }; out["\(k)"] = j }
            return .object(out)
        default:
            if let n = value as? NSNumber { return .number(n.doubleValue) }
            return nil
        }
    }
}

public enum JSONCoding {
    /// Sorted keys so that encoded bytes are canonical (signatures, tests, diffs).
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    public static func encodeString<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
        // A JSONValue takes the hand-written writer: the same bytes (FastJSONTests), several times faster.
        if !pretty, let v = value as? JSONValue { return try v.serialized() }
        return String(decoding: try encoder(pretty: pretty).encode(value), as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from string: String) throws -> T {
        // A JSONValue takes the hand-written reader, which accepts what JSONDecoder accepts (FuzzTests).
        if T.self == JSONValue.self, let v = try JSONValue.parse(string) as? T { return v }
        return try JSONDecoder().decode(type, from: Data(string.utf8))
    }
}

extension JSONValue {
    /// The path (`jobs[0].spec.params[2]`; "(document)" for the root) of the first value, keys in
    /// sorted order, that `bad` is true of; nil if none. Lists and maps are walked, not tested.
    public func firstPath(from path: String = "", where bad: (JSONValue) -> Bool) -> String? {
        walk(path, value: bad, key: { _ in false })
    }

    /// The path of the first map key that `bad` is true of; nil if none.
    public func firstKeyPath(from path: String = "", where bad: (String) -> Bool) -> String? {
        walk(path, value: { _ in false }, key: bad)
    }

    private func walk(_ path: String, value: (JSONValue) -> Bool, key: (String) -> Bool) -> String? {
        switch self {
        case .array(let a):
            for (i, x) in a.enumerated() { if let p = x.walk("\(path)[\(i)]", value: value, key: key) { return p } }
            return nil
        case .object(let o):
            for k in o.keys.sorted() {
                let p = path.isEmpty ? k : "\(path).\(k)"
                if key(k) { return p }
                if let found = o[k]!.walk(p, value: value, key: key) { return found }
            }
            return nil
        default: return value(self) ? (path.isEmpty ? "(document)" : path) : nil
        }
    }

    /// The path of the first number JSON cannot hold (YAML's `.nan`, `.inf`, or a literal past
    /// Double's range), nil if none: input files are refused with it before anything is written.
    public var firstNonFinitePath: String? {
        firstPath { x in if case .number(let d) = x { return !d.isFinite }; return false }
    }
}
