import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The directories whose files the pipeline runner may move or delete. Paths come
/// from job results and the database, which an agent (or anyone who can write a
/// result) controls, so a path is acted on only when both the entry itself and
/// what it resolves to (symlinks and `..` resolved by realpath) lie strictly
/// inside one of the roots.
public struct OwnedPaths: Sendable, Equatable {
    public let roots: [String]

    public init(roots: [String]) { self.roots = roots.filter { !$0.isEmpty } }

    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        /// The path, resolved or as given, is not inside any root.
        case outside(path: String, resolved: String)
        /// Empty, with NUL, or naming a directory (`.`, `..`, a trailing `/`).
        case malformed(String)
        /// A directory on the path became a symlink (or vanished) between the check and the act.
        case changed(String)
        /// Inside, but a directory, a symlink or a device: results name image files, nothing else.
        case notAFile(String)

        public var description: String {
            switch self {
            case .outside(let p, let r):
                return p == r ? "\(p) is outside the directories the runner owns" : "\(p) resolves to \(r), outside the directories the runner owns"
            case .malformed(let p): return "'\(p)' is not a path to a file"
            case .changed(let p): return "a directory on the path of \(p) changed while it was being checked"
            case .notAFile(let p): return "\(p) is not a regular file"
            }
        }
    }

    public enum Verdict: Equatable, Sendable {
        /// Inside a root; the path to act on, with the parent's symlinks resolved.
        case owned(String)
        /// Does not exist, and its lexical form is inside a root (nothing to do, nothing refused).
        case missing
        case refused(Refusal)
    }

    /// Roots resolved now, not at init: the runner creates the assets and quarantine directories as it goes.
    var resolvedRoots: [String] { roots.map { Self.realPath($0) ?? Self.lexical($0) } }

    public func check(_ given: String) -> Verdict {
        guard !given.isEmpty, !given.contains("\0") else { return .refused(.malformed(given)) }
        // A relative path means what FileManager would make of it (the working directory); it is held to the same roots.
        let path = given.hasPrefix("/") ? given : FileManager.default.currentDirectoryPath + "/" + given
        let roots = resolvedRoots
        let name = (path as NSString).lastPathComponent
        guard !name.isEmpty, name != ".", name != "..", !path.hasSuffix("/") else { return .refused(.malformed(path)) }
        let parent = (path as NSString).deletingLastPathComponent
        guard let realParent = Self.realPath(parent) else {
            return Self.inside(Self.lexical(path), roots) ? .missing : .refused(.outside(path: path, resolved: Self.lexical(path)))
        }
        // The entry itself: moving or deleting a symlink acts on the link, so where it sits must be owned too.
        let entry = (realParent == "/" ? "" : realParent) + "/" + name
        guard Self.inside(entry, roots) else { return .refused(.outside(path: path, resolved: entry)) }
        var st = stat()
        guard lstat(entry, &st) == 0 else { return .missing }
        // And what it points at: a link inside pointing outside would hand the target to moveItem's callers.
        guard let target = Self.realPath(entry) else { return .refused(.outside(path: path, resolved: entry)) }
        guard Self.inside(target, roots) else { return .refused(.outside(path: path, resolved: target)) }
        // A directory would be moved or removed whole; a link inside would be moved as a link. Neither is an image.
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .refused(.notAFile(path)) }
        return .owned(entry)
    }

    /// Deletes an entry `check` returned as owned (a file or a link, never a directory tree).
    public func remove(_ owned: String) throws {
        let (dir, name) = try Self.openParent(owned)
        defer { close(dir) }
        guard unlinkat(dir, name, 0) == 0 else { throw Self.posixError("cannot delete \(owned)") }
    }

    /// Moves an entry `check` returned as owned to `destination` (a path of the runner's own).
    public func move(_ owned: String, to destination: String) throws {
        let (dir, name) = try Self.openParent(owned)
        defer { close(dir) }
        if renameat(dir, name, AT_FDCWD, destination) == 0 { return }
        guard errno == EXDEV else { throw Self.posixError("cannot move \(owned) to \(destination)") }
        // Another file system (the outputs on NFS): copy through a descriptor opened without following links, then unlink.
        let src = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard src >= 0 else { throw Self.posixError("cannot open \(owned)") }
        let data = FileHandle(fileDescriptor: src, closeOnDealloc: true).readDataToEndOfFile()
        try data.write(to: URL(fileURLWithPath: destination))
        guard unlinkat(dir, name, 0) == 0 else { throw Self.posixError("copied \(owned) but cannot delete it") }
    }

    /// The parent directory opened one component at a time with O_NOFOLLOW: `check`
    /// resolved it to a path without symlinks, so a component that is a symlink now
    /// was swapped in after the check, and the act is refused instead of following it.
    static func openParent(_ owned: String) throws -> (Int32, String) {
        let name = (owned as NSString).lastPathComponent
        var fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw posixError("cannot open /") }
        for c in (owned as NSString).deletingLastPathComponent.split(separator: "/") {
            let next = openat(fd, String(c), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(fd)
            guard next >= 0 else { throw Refusal.changed(owned) }
            fd = next
        }
        return (fd, name)
    }

    static func posixError(_ what: String) -> Error {
        let e = errno
        return NSError(domain: NSPOSIXErrorDomain, code: Int(e), userInfo: [NSLocalizedDescriptionKey: "\(what): \(String(cString: strerror(e)))"])
    }

    static func inside(_ p: String, _ roots: [String]) -> Bool {
        roots.contains { r in r == "/" ? p != "/" : p.hasPrefix(r + "/") && p.count > r.count + 1 }
    }

    static func realPath(_ p: String) -> String? {
        guard let r = realpath(p, nil) else { return nil }
        defer { free(r) }
        return String(cString: r)
    }

    /// `.` and `..` folded without touching the file system (for paths that do not exist).
    static func lexical(_ p: String) -> String {
        let absolute = p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
        var out: [Substring] = []
        for c in absolute.split(separator: "/") {
            if c == "." { continue }
            if c == ".." { _ = out.popLast(); continue }
            out.append(c)
        }
        return "/" + out.joined(separator: "/")
    }
}
