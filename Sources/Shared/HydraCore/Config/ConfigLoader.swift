import Foundation
import Synchronization
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
        // Yams' parser recurses once per level before checkPlain can count them: 5 000 `[` overflowed
        // the stack (a crash, where a bad file must be exit 2). Levels are bounded from the text
        // first, and the parse runs on a thread whose stack holds far more than that bound.
        if nestingBound(text) > maxNestingBound {
            throw InputError(file: file, problem: "nested more than 64 levels deep (or indented more than \(maxNestingBound / 2) columns)")
        }
        let value = try onLargeStack { () throws -> JSONValue? in
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
            return value
        }
        guard let value else { throw InputError(file: file, problem: "the file is empty") }
        // Every input file is stored or decoded as JSON, which holds no NaN or infinity (YAML's `.nan`,
        // `.inf`): refused here with its place, not half-way through a submit or as an encoder's error.
        if let at = value.firstNonFinitePath {
            throw InputError(file: file, location: at, problem: "is not a finite number (nan or infinity), which JSON cannot hold")
        }
        return value
    }

    /// Largest `nestingBound` read at all: far above what 64 real levels need, and a parse this
    /// deep fits `parseStackBytes` many times over (8 MiB held 2 000 levels).
    static let maxNestingBound = 1_024
    static let parseStackBytes = 64 << 20

    /// An upper bound on how deep the parser will recurse, from the text alone: per line, the
    /// open flow brackets (`[`, `{` outside quotes and comments) plus twice the line's indentation
    /// and leading `- ` / `? ` indicators (every block level needs one more column or one
    /// indicator, except a list directly under its key, which the factor 2 covers). It never reads
    /// too few levels; it reads too many only for odd files (a line indented by hundreds of
    /// columns), which are then refused by name.
    static func nestingBound(_ text: String) -> Int {
        var flow = 0, best = 0
        var quote: UInt8 = 0            // the open quote character (" or '), or 0
        var escaped = false             // the last byte inside "…" was an unescaped backslash
        var lineStart = true, block = 0, inComment = false
        var prev: UInt8 = 10
        for b in text.utf8 {
            defer { prev = b }
            if b == 10 { lineStart = true; block = 0; inComment = false; continue }   // quotes and brackets carry over
            if inComment { continue }
            if quote == 34 {
                if escaped { escaped = false } else if b == 92 { escaped = true } else if b == 34 { quote = 0 }
                continue
            }
            if quote == 39 { if b == 39 { quote = 0 }; continue }
            if lineStart {
                // Indentation and `- ` / `? ` indicators: each can open a block level.
                if b == 32 || b == 45 || b == 63 { block += 1; best = max(best, flow + 2 * block + 1); continue }
                lineStart = false
            }
            let blank = prev == 32 || prev == 9 || prev == 10
            switch b {
            case 35 where blank: inComment = true                                    // #
            case 34, 39 where blank || prev == 91 || prev == 123 || prev == 44 || prev == 58: quote = b
            case 91, 123: flow += 1                                                  // [ {
            case 93, 125: flow = max(0, flow - 1)                                    // ] }
            default: break
            }
            best = max(best, flow + 2 * block + 1)
        }
        return best
    }

    /// Runs `body` on a thread with a `parseStackBytes` stack and waits for it. Called from any
    /// thread (a job thread's or a task's stack may be 512 KiB); the parse is the caller's work.
    static func onLargeStack<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            let r = Result { try body() }
            result.withLock { $0 = r }
            done.signal()
        }
        t.stackSize = parseStackBytes
        t.start()
        done.wait()
        return try result.withLock { $0! }.get()
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
            var seen = Set<String>()
            for (k, v) in map {
                guard case .scalar(let key) = k else {
                    throw InputError(file: file, problem: "a map key is itself a list or a map (keys must be plain strings)")
                }
                // Yams keeps both and the later one wins: `kind: sleep` then `kind: command` ran a command
                // with an error about its argv that never named the repeated key. (`<<` merges are YAML's own.)
                if key.string != "<<", !seen.insert(key.string).inserted {
                    let line = k.mark.map { " (line \($0.line))" } ?? ""
                    throw InputError(file: file, problem: "the key '\(Excerpt.of(key.string, limit: 80))' appears twice in one map\(line)")
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
