import Foundation
#if canImport(Glibc)
import Glibc
import HydraIO
#endif

/// Keeps the idle agent's resident set to the code it actually runs.
///
/// Start-up (argument parsing, the cluster YAML with Yams' regex resolver and so ICU,
/// TLS and Redis setup, ...) touches code all over the binary and its libraries, and the
/// kernel maps every such page, plus its neighbours (fault-around), into the process for
/// good: about half of an idle agent's RSS was code it never runs again
/// (docs/benchmarks.md, "Agent footprint"). `trimCode()` tells the kernel, with
/// `madvise(MADV_DONTNEED)`, that the agent's file-backed code mappings are not needed.
/// The pages stay in the page cache; the ones the idle loop still uses come back on their
/// next use as minor faults, the others stop counting. This is what memory reclaim does
/// to clean code pages anyway, done early.
///
/// Only private, read+execute, file-backed mappings without anonymous (copy-on-write)
/// pages are advised: their contents are exactly the file's, so dropping them loses
/// nothing. A mapping someone wrote into (a debugger's breakpoints, text relocations)
/// has anonymous pages and is left alone; data, heap and stacks are never touched.
enum ResidentTrim {
    struct Outcome: Sendable {
        var mappings = 0
        var bytes = 0
    }

    /// Advises the code mappings described above. Linux only; elsewhere a no-op.
    static func trimCode() -> Outcome {
        var outcome = Outcome()
        #if os(Linux)
        guard let file = fopen("/proc/self/smaps", "r") else { return outcome }
        defer { fclose(file) }
        var candidate: (start: UInt, length: Int)?
        var anonymous = 0
        func finish() {
            if let c = candidate, anonymous == 0, let p = UnsafeMutableRawPointer(bitPattern: c.start),
               madvise(p, c.length, MADV_DONTNEED) == 0 {
                outcome.mappings += 1
                outcome.bytes += c.length
            }
            candidate = nil
            anonymous = 0
        }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0, let line {
            let text = String(cString: line)
            if let first = text.utf8.first, Self.isHexDigit(first), text.contains("-") {
                // A mapping: "start-end perms offset dev inode [path]".
                finish()
                let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
                guard fields.count >= 6, fields[1] == "r-xp", fields[5].hasPrefix("/") else { continue }
                let range = fields[0].split(separator: "-")
                guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16),
                      end > start else { continue }
                candidate = (start, Int(end - start))
            } else if candidate != nil, text.hasPrefix("Anonymous:") {
                anonymous = Int(text.dropFirst("Anonymous:".count).split(separator: " ").first ?? "") ?? 1
            }
        }
        finish()
        #endif
        return outcome
    }

    private static func isHexDigit(_ c: UInt8) -> Bool {
        (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "f"))
    }

    /// The resident set size from /proc/self/statm, in bytes (0 where unknown).
    static func residentBytes() -> Int {
        guard let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(getpagesize())
    }

    /// Trims `firstAfter` seconds from now (start-up done, the loops have run once), then
    /// every `interval` seconds while `idle()` holds (no jobs held). A thread of its own
    /// that sleeps in between; it ends with the process.
    static func start(firstAfter: Double, interval: Double, log: Log, idle: @escaping @Sendable () -> Bool) {
        let thread = Thread {
            var delay = firstAfter
            while true {
                Thread.sleep(forTimeInterval: delay)
                delay = interval
                guard idle() else { continue }
                let before = residentBytes()
                let outcome = trimCode()
                log.debug("trimmed idle code pages", [("mappings", "\(outcome.mappings)"),
                                                       ("rss_kib_before", "\(before / 1024)"),
                                                       ("rss_kib_after", "\(residentBytes() / 1024)")])
            }
        }
        thread.name = "rss-trim"
        thread.stackSize = 256 * 1024
        thread.start()
    }
}
