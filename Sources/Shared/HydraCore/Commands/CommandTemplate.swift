import Foundation

/// One allowlisted command line for `command` jobs: a whole argv pattern. A job's argv runs
/// only when it matches one template element by element, with the same length.
///
/// Elements are literals (must be equal) or placeholders, written as the whole element:
/// `{int}`, `{name}`, `{path}`, `{text}`. A placeholder value never starts with `-`, so a job
/// can never add an option the template does not spell out (`rsync -e "sh -c …"`), and never
/// holds NUL, newline or other control characters.
///
/// In YAML an entry is a list (`[/usr/bin/rsync, -a, "{path}", "{path}"]`) or one string split
/// on whitespace (`"/usr/bin/rsync -a {path} {path}"`). A bare program (`/usr/bin/true`, the
/// format before templates) is therefore that program with no arguments at all.
public struct CommandTemplate: Codable, Sendable, Equatable, CustomStringConvertible {
    public var elements: [String]

    public init(_ elements: [String]) { self.elements = elements }

    /// Whitespace-split form (`--allow-command '/bin/sleep {int}'`); a string starting with `[`
    /// is read as a JSON list, for literals that contain spaces.
    public init(parsing text: String) throws {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("[") {
            guard let d = t.data(using: .utf8), let a = try? JSONDecoder().decode([String].self, from: d) else {
                throw CommandTemplateError("'\(text)' is not a JSON list of strings")
            }
            elements = a
        } else {
            elements = Self.split(t)
        }
        try validate()
    }

    static func split(_ s: String) -> [String] { s.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init) }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        // Validated with the rest of the file (ClusterConfig.validate), which names the entry.
        if let s = try? c.decode(String.self) {
            elements = Self.split(s)
        } else {
            elements = try c.decode([String].self)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(elements)
    }

    public enum Placeholder: String, CaseIterable, Sendable {
        /// 1 to 18 ASCII digits (no sign: a leading `-` would be an option).
        case int
        /// One file name: letters, digits, `.`, `_`, `-`; first character a letter, digit or `_`.
        case name
        /// A file path: letters, digits and `/ . _ - + , @`; never `-` first, never a `..`
        /// component, never `:` (rsync and scp read `host:path` as a remote).
        case path
        /// Free text for messages and prompts: any printable characters and spaces, not `-` first.
        /// Never put it after an interpreter's `-c` or `-e`: that makes the text a program.
        case text

        func accepts(_ v: String) -> Bool {
            guard !v.isEmpty, !v.hasPrefix("-"), v.utf8.count <= 4096 else { return false }
            let scalars = v.unicodeScalars
            switch self {
            case .int:
                return v.utf8.count <= 18 && scalars.allSatisfy { $0.isASCIIDigit }
            case .name:
                guard v.utf8.count <= 255, let f = scalars.first, f.isASCIIAlnum || f == "_" else { return false }
                return scalars.allSatisfy { $0.isASCIIAlnum || "._-".unicodeScalars.contains($0) }
            case .path:
                guard scalars.allSatisfy({ $0.isASCIIAlnum || "/._-+,@".unicodeScalars.contains($0) }) else { return false }
                return !v.split(separator: "/").contains("..")
            case .text:
                return scalars.allSatisfy { !$0.properties.generalCategory.isControlOrUnassigned }
            }
        }
    }

    /// The placeholder an element stands for, nil for a literal.
    static func placeholder(_ element: String) -> Placeholder? {
        guard element.hasPrefix("{"), element.hasSuffix("}"), element.count > 2 else { return nil }
        return Placeholder(rawValue: String(element.dropFirst().dropLast()))
    }

    public var program: String { elements.first ?? "" }

    public func validate() throws {
        guard let first = elements.first, !first.isEmpty else { throw CommandTemplateError("a template needs at least the program") }
        if Self.placeholder(first) != nil { throw CommandTemplateError("the program (first element) must be a literal, not \(first)") }
        for (i, e) in elements.enumerated() {
            if e.hasPrefix("{"), e.hasSuffix("}"), Self.placeholder(e) == nil {
                throw CommandTemplateError("element \(i) '\(e)' is not a placeholder (known: \(Placeholder.allCases.map { "{\($0.rawValue)}" }.joined(separator: ", ")))")
            }
            if e.unicodeScalars.contains(where: { $0.value == 0 || $0 == "\n" }) {
                throw CommandTemplateError("element \(i) contains NUL or a newline")
            }
        }
    }

    /// nil when `argv` matches; otherwise why not, naming the first element that differs.
    public func mismatch(_ argv: [String]) -> String? {
        guard argv.count == elements.count else {
            return "argv has \(argv.count) elements, the template \(self) has \(elements.count)"
        }
        for (i, (value, pattern)) in zip(argv, elements).enumerated() {
            if let p = Self.placeholder(pattern) {
                if !p.accepts(value) {
                    return "argv[\(i)] '\(Self.shown(value))' is not a valid \(pattern) in \(self)"
                        + (value.hasPrefix("-") ? " (a placeholder never takes a value starting with '-')" : "")
                }
            } else if value != pattern {
                return "argv[\(i)] '\(Self.shown(value))' is not '\(pattern)' in \(self)"
            }
        }
        return nil
    }

    public func matches(_ argv: [String]) -> Bool { mismatch(argv) == nil }

    public var description: String { "[" + elements.joined(separator: ", ") + "]" }

    /// Job text in an error message: short, control characters made visible.
    public static func shown(_ s: String) -> String {
        let cleaned = String(String.UnicodeScalarView(s.unicodeScalars.map {
            $0.properties.generalCategory.isControlOrUnassigned ? "\u{FFFD}" : $0
        }))
        return cleaned.count > 80 ? String(cleaned.prefix(80)) + "…" : cleaned
    }
}

public struct CommandTemplateError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// The templates of one node, and the one error message a refused argv gets.
public struct CommandAllowlist: Sendable, Equatable {
    public var templates: [CommandTemplate]
    public init(_ templates: [CommandTemplate]) { self.templates = templates }

    /// The matching template, or a message naming the argv element that failed against
    /// the closest template (same program, then same length).
    public func check(_ argv: [String]) -> Result<CommandTemplate, CommandTemplateError> {
        if let t = templates.first(where: { $0.matches(argv) }) { return .success(t) }
        let program = argv.first ?? ""
        let same = templates.filter { $0.program == program }
        guard !same.isEmpty else {
            return .failure(CommandTemplateError("'\(CommandTemplate.shown(program))' is not in this node's command allowlist"))
        }
        let closest = same.first { $0.elements.count == argv.count }
        if let closest, let why = closest.mismatch(argv) {
            return .failure(CommandTemplateError("argv matches no allowlisted template: \(why)"))
        }
        let forms = same.map(\.description).joined(separator: "; ")
        let bare = same.contains { $0.elements.count == 1 }
            ? "; a bare program in command_allowlist allows it without arguments only: list the whole command line as a template" : ""
        return .failure(CommandTemplateError(
            "argv has \(argv.count) elements and matches no allowlisted form of \(program) (allowed: \(forms))\(bare)"))
    }
}

extension Unicode.Scalar {
    fileprivate var isASCIIDigit: Bool { ("0"..."9").contains(self) }
    fileprivate var isASCIIAlnum: Bool { isASCIIDigit || ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
}

extension Unicode.GeneralCategory {
    fileprivate var isControlOrUnassigned: Bool {
        switch self {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator: return true
        default: return false
        }
    }
}

/// The environment rules of command jobs: checked when the cluster file loads and when a job runs.
public enum CommandEnvironment {
    public static let safePath = "/usr/local/bin:/usr/bin:/bin"
    /// Set by the executor itself; a job can never override them.
    public static let fixedEnvNames: Set<String> = ["PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES"]

    /// Why `name` can never be on the env allowlist, or nil when it can.
    public static func nameProblem(_ name: String) -> String? {
        let s = name.unicodeScalars
        guard let f = s.first, f == "_" || ("A"..."Z").contains(f) || ("a"..."z").contains(f),
              s.allSatisfy({ $0 == "_" || ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) }) else {
            return "not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
        }
        if fixedEnvNames.contains(name) || name.hasPrefix("HYDRA_") { return "set by the agent, never by a job" }
        if name.hasPrefix("LD_") { return "LD_* variables change what the dynamic loader runs" }
        return nil
    }
}
