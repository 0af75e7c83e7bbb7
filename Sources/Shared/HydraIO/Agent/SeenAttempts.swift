import Foundation
import Synchronization
import HydraCore

/// The (job, attempt) pairs an agent has taken, kept on disk until their envelopes expire: an
/// envelope is signed and valid for its whole lifetime, so without this a copy put back on the
/// stream (or redelivered after Redis lost an acknowledgement) would run again, also after the
/// agent restarted. An older attempt of a job already seen is refused too.
///
/// The file is an append-only log of `JOB ATTEMPT EXPIRES` lines, rewritten without the expired
/// ones at start and when it grows. Lines are written with write(2), not fsync'd: they survive the
/// agent's crash (the page cache is the kernel's); a host crash loses the last few, which is the
/// price of not syncing the disk once per job.
public final class SeenAttempts: Sendable {
    public enum Verdict: Equatable, Sendable { case new, seen, older }

    private struct State {
        var maxAttempt: [String: (attempt: Int, expires: Double)] = [:]
        var lines = 0
        var fd: Int32 = -1
        /// Lines not yet written: `flush()` writes them in one call (a write per envelope was on the
        /// consumer's path for every job).
        var pending = ""
    }
    private let state = Mutex(State())
    public let path: String?
    /// How long an entry without an expiry is kept.
    let defaultTTL: Double

    /// `path` nil keeps the set in memory only (tests, or no writable state directory).
    public init(path: String?, now: Double, defaultTTL: Double = 3600) throws {
        self.path = path
        self.defaultTTL = defaultTTL
        guard let path else { return }
        var s = State()
        if let data = FileManager.default.contents(atPath: path) {
            for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
                let w = line.split(separator: " ")
                guard w.count == 3, let a = Int(w[1]), let exp = Double(w[2]), exp > now else { continue }
                let id = String(w[0])
                if let cur = s.maxAttempt[id], cur.attempt >= a { continue }
                s.maxAttempt[id] = (a, exp)
            }
        }
        s.fd = try Self.rewrite(path, s.maxAttempt)
        s.lines = s.maxAttempt.count
        state.withLock { $0 = s }
    }

    deinit { state.withLock { Self.writePending(&$0); if $0.fd >= 0 { close($0.fd) } } }

    /// Records the attempt unless it (or a later one of the same job) was seen before.
    public func take(jobID: String, attempt: Int, expiresAt: Double?, now: Double) -> Verdict {
        state.withLock { s in
            if let cur = s.maxAttempt[jobID], cur.expires > now {
                if cur.attempt == attempt { return .seen }
                if cur.attempt > attempt { return .older }
            }
            let exp = max(expiresAt ?? now + defaultTTL, now + 1)
            s.maxAttempt[jobID] = (attempt, exp)
            guard s.fd >= 0, let path else { return .new }
            s.pending += "\(jobID) \(attempt) \(exp)\n"
            s.lines += 1
            if s.lines > 4 * max(s.maxAttempt.count, 10_000) {
                Self.writePending(&s)
                s.maxAttempt = s.maxAttempt.filter { $0.value.expires > now }
                if let fd = try? Self.rewrite(path, s.maxAttempt) {
                    close(s.fd)
                    s.fd = fd
                    s.lines = s.maxAttempt.count
                }
            }
            return .new
        }
    }

    public var count: Int { state.withLock { $0.maxAttempt.count } }

    /// Writes what `take` recorded since the last flush. The agent calls it once per batch of entries,
    /// before their jobs start: a crash in between leaves the entries unacknowledged, and a restarted
    /// agent reports them lost instead of running them, so nothing runs twice either way.
    public func flush() { state.withLock { Self.writePending(&$0) } }

    private static func writePending(_ s: inout State) {
        guard s.fd >= 0, !s.pending.isEmpty else { return }
        let text = s.pending
        s.pending = ""
        _ = text.withCString { Glibc.write(s.fd, $0, strlen($0)) }
    }

    /// Writes the live entries to a new file, renames it over the old one, and returns it open for appending.
    private static func rewrite(_ path: String, _ entries: [String: (attempt: Int, expires: Double)]) throws -> Int32 {
        let tmp = path + ".tmp"
        var text = ""
        text.reserveCapacity(entries.count * 60)
        for (id, e) in entries { text += "\(id) \(e.attempt) \(e.expires)\n" }
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw InputError(file: tmp, problem: "cannot write: \(String(cString: strerror(errno)))") }
        let ok = text.withCString { Glibc.write(fd, $0, strlen($0)) } == text.utf8.count
        fsync(fd)
        guard ok, rename(tmp, path) == 0 else {
            close(fd)
            throw InputError(file: path, problem: "cannot replace: \(String(cString: strerror(errno)))")
        }
        // Appends go to the renamed file, which this descriptor still points at.
        lseek(fd, 0, SEEK_END)
        return fd
    }
}
