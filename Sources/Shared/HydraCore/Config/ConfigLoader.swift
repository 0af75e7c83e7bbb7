import Foundation
import Yams

/// An input file (cluster config, batch, job spec) that could not be used.
/// The message always names the file and, where known, the field.
public struct InputError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var location: String?
    public var problem: String

    public init(file: String, location: String? = nil, problem: String) {
        self.file = file; self.location = location; self.problem = problem
    }

    public var description: String {
        if let location, !location.isEmpty { return "\(file): \(location): \(problem)" }
        return "\(file): \(problem)"
    }
}

/// Loads YAML or JSON documents into Codable types with errors that name the place.
public enum ConfigLoader {
    /// Parses YAML (a superset of JSON) into a JSONValue.
    public static func parseDocument(_ text: String, file: String) throws -> JSONValue {
        let loaded: Any?
        do {
            // compose + check + construct rather than Yams.load: Yams force-unwraps mapping keys as
            // strings and traps on `? [a, b]: c` or `{[a]: 1}` (found by FuzzTests).
            loaded = try Yams.compose(yaml: text).map { node -> Any in
                var budget = 2_000_000
                try checkPlain(node, file: file, depth: 0, budget: &budget)
                return Constructor.default.any(from: node)
            }
        } catch let e as InputError {
            throw e
        } catch let e as YamlError {
            throw InputError(file: file, problem: "not valid YAML or JSON: \(yamlMessage(e))")
        } catch {
            throw InputError(file: file, problem: "not valid YAML or JSON: \(error)")
        }
        guard let loaded else { throw InputError(file: file, problem: "the file is empty") }
        guard let value = JSONValue.from(any: loaded) else {
            throw InputError(file: file, problem: "contains values that are not plain data (use maps, lists, strings, numbers)")
        }
        // Every input file is stored or decoded as JSON, which holds no NaN or infinity (YAML's `.nan`,
        // `.inf`): refused here with its place, not half-way through a submit or as an encoder's error.
        if let at = value.firstNonFinitePath {
            throw InputError(file: file, location: at, problem: "is not a finite number (nan or infinity), which JSON cannot hold")
        }
        return value
    }

    /// Mapping keys must be scalars; nesting stays shallow enough for the recursive constructors;
    /// and aliases may not expand into a "billion laughs" (every value counts against `budget`).
    static func checkPlain(_ node: Node, file: String, depth: Int, budget: inout Int) throws {
        guard depth < 64 else { throw InputError(file: file, problem: "nested more than 64 levels deep") }
        budget -= 1
        guard budget > 0 else { throw InputError(file: file, problem: "too large: more than 2,000,000 values once aliases are expanded") }
        switch node {
        case .scalar: return
        case .sequence(let seq): for n in seq { try checkPlain(n, file: file, depth: depth + 1, budget: &budget) }
        case .mapping(let map):
            for (k, v) in map {
                guard case .scalar = k else {
                    throw InputError(file: file, problem: "a map key is itself a list or a map (keys must be plain strings)")
                }
                try checkPlain(v, file: file, depth: depth + 1, budget: &budget)
            }
        }
    }

    public static func readFile(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(file: path, problem: "cannot read the file (missing or not readable)")
        }
        guard let s = String(data: data, encoding: .utf8) else {
            throw InputError(file: path, problem: "is not UTF-8 text")
        }
        return s
    }

    public static func decode<T: Decodable>(_ type: T.Type, from value: JSONValue, file: String) throws -> T {
        let data = try JSONCoding.encoder().encode(value)
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch let e as DecodingError {
            throw describe(e, file: file)
        }
    }

    public static func load<T: Decodable>(_ type: T.Type, path: String) throws -> T {
        let text = try readFile(path)
        return try decode(type, from: try parseDocument(text, file: path), file: path)
    }

    static func path(_ codingPath: [CodingKey]) -> String {
        var out = ""
        for k in codingPath {
            if let i = k.intValue { out += "[\(i)]" } else { out += out.isEmpty ? k.stringValue : ".\(k.stringValue)" }
        }
        return out
    }

    public static func describe(_ e: DecodingError, file: String) -> InputError {
        switch e {
        case .keyNotFound(let key, let ctx):
            let p = path(ctx.codingPath + [key])
            return InputError(file: file, location: p, problem: "required field '\(key.stringValue)' is missing")
        case .typeMismatch(let t, let ctx):
            return InputError(file: file, location: path(ctx.codingPath), problem: "expected \(typeName(t)); \(ctx.debugDescription)")
        case .valueNotFound(let t, let ctx):
            return InputError(file: file, location: path(ctx.codingPath), problem: "expected \(typeName(t)), found null")
        case .dataCorrupted(let ctx):
            return InputError(file: file, location: path(ctx.codingPath), problem: ctx.debugDescription)
        @unknown default:
            return InputError(file: file, problem: "\(e)")
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        let s = "\(t)"
        if s.contains("String") { return "a string" }
        if s.contains("Int") || s.contains("Double") { return "a number" }
        if s.contains("Bool") { return "true or false" }
        if s.contains("Array") { return "a list" }
        if s.contains("Dictionary") { return "a map" }
        return s
    }

    static func yamlMessage(_ e: YamlError) -> String {
        "\(e)".replacingOccurrences(of: "\n", with: " ")
    }
}
