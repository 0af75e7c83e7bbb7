import Foundation
import HydraCore

/// Reads a job spec with failures that say which field is wrong. A bad spec is
/// the submitter's mistake: always `permanent`.
public struct SpecReader: Sendable {
    public let spec: JSONValue
    public let kind: String
    public init(_ spec: JSONValue, kind: String) { self.spec = spec; self.kind = kind }

    public func fail(_ field: String, _ problem: String) -> ExecutionFailure {
        ExecutionFailure(.permanent, "\(kind) spec: \(field): \(problem)")
    }
    public func has(_ key: String) -> Bool { if let v = spec[key], v != .null { return true }; return false }

    public func string(_ key: String) throws -> String? {
        guard let v = spec[key], v != .null else { return nil }
        guard let s = v.stringValue else { throw fail(key, "must be a string") }
        return s
    }
    public func requireString(_ key: String) throws -> String {
        guard let s = try string(key), !s.isEmpty else { throw fail(key, "is required") }
        return s
    }
    public func int(_ key: String) throws -> Int? {
        guard let v = spec[key], v != .null else { return nil }
        guard case .number(let d) = v, d.rounded() == d, abs(d) < 1.8e19 else { throw fail(key, "must be an integer") }
        return Int(exactly: d) ?? Int(d.sign == .minus ? Int.min : Int.max)
    }
    public func double(_ key: String) throws -> Double? {
        guard let v = spec[key], v != .null else { return nil }
        guard case .number(let d) = v else { throw fail(key, "must be a number") }
        return d
    }
    public func bool(_ key: String) throws -> Bool? {
        guard let v = spec[key], v != .null else { return nil }
        guard let b = v.boolValue else { throw fail(key, "must be true or false") }
        return b
    }
    public func object(_ key: String) throws -> [String: JSONValue]? {
        guard let v = spec[key], v != .null else { return nil }
        guard let o = v.objectValue else { throw fail(key, "must be an object") }
        return o
    }
    public func stringArray(_ key: String) throws -> [String]? {
        guard let v = spec[key], v != .null else { return nil }
        if let s = v.stringValue { return [s] }
        guard let a = v.arrayValue else { throw fail(key, "must be a list of strings") }
        return try a.map { guard let s = $0.stringValue else { throw fail(key, "must be a list of strings") }; return s }
    }
}

public enum ExecutorSupport {
    /// service-apis.md §0: an error text means OOM when it says so, whatever the exception class.
    public static func isOOM(_ text: String) -> Bool {
        let t = text.lowercased()
        return t.contains("out of memory") || t.contains("outofmemoryerror") || t.contains("cuda_oom")
    }

    /// Throws `timeout` past the job's deadline and `transient` when cancelled.
    public static func checkStop(_ context: ExecutionContext, service: String) throws {
        if context.cancellation.isCancelled { throw ExecutionFailure(.transient, "\(service): cancelled") }
        if let d = context.deadline, context.now() >= d { throw ExecutionFailure(.timeout, "\(service): deadline passed") }
    }

    /// A file name safe to create inside the output directory (no separators, no dot-dot), at most
    /// `maxFileNameBytes` UTF-8 bytes: a service that names a file 10 000 characters long would
    /// otherwise fail the job on every attempt (ENAMETOOLONG at 255 bytes).
    public static func safeFileName(_ name: String) -> String {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "._-"))
        var s = String(name.unicodeScalars.map { allowed.contains($0) ? Character($0) : "_" })
        while s.hasPrefix(".") { s.removeFirst() }
        if s.utf8.count > maxFileNameBytes {
            // Keep the extension and as much of the start as fits (room for writeOutput's "-N").
            let ext = (s as NSString).pathExtension
            let tail = ext.isEmpty || ext.utf8.count > 16 ? "" : "." + ext
            var head = ""
            for ch in s {
                if head.utf8.count + ch.utf8.count + tail.utf8.count > maxFileNameBytes { break }
                head.append(ch)
            }
            s = head + tail
        }
        return s.isEmpty ? "output" : s
    }

    public static let maxFileNameBytes = 200

    /// Writes `data` to `directory/name` (a new name if taken) and describes it
    /// the way results list files: path, name, size, sha256.
    public static func writeOutput(_ data: Data, name: String, directory: String) throws -> JSONValue {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let safe = safeFileName(name)
        var path = (directory as NSString).appendingPathComponent(safe)
        var n = 1
        while FileManager.default.fileExists(atPath: path) {
            let ext = (safe as NSString).pathExtension
            let base = (safe as NSString).deletingPathExtension
            path = (directory as NSString).appendingPathComponent("\(base)-\(n)" + (ext.isEmpty ? "" : ".\(ext)"))
            n += 1
        }
        guard FileManager.default.createFile(atPath: path, contents: data) else {
            throw ExecutionFailure(.transient, "cannot write \(path)")
        }
        return ["path": .string(path), "name": .string((path as NSString).lastPathComponent),
                "size": .number(Double(data.count)), "sha256": .string(SHA256Digest.hex(data))]
    }

    static func seconds(since start: Date) -> JSONValue { .number((Date().timeIntervalSince(start) * 1000).rounded() / 1000) }
}
