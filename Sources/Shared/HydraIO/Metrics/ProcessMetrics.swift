import Foundation

/// The standard `process_*` series (names as the Prometheus client libraries use them) and
/// `hydra_build_info`, read from /proc at scrape time: a leak or an fd pile-up shows on the
/// dashboard before the OOM killer or EMFILE says so.
public enum ProcessMetrics {
    /// Clock ticks per second for /proc/<pid>/stat's utime, stime and starttime.
    private static let ticks: Double = {
        let t = sysconf(Int32(_SC_CLK_TCK))
        return t > 0 ? Double(t) : 100
    }()
    private static let pageSize: Double = Double(max(1, sysconf(Int32(_SC_PAGESIZE))))

    public struct Sample: Sendable, Equatable {
        public var cpuSeconds: Double
        public var residentBytes: Double
        public var virtualBytes: Double
        public var startTimeSeconds: Double
        public var openFDs: Int?
        public var maxFDs: Double?
    }

    /// Fields of /proc/self/stat after the command name (which may contain spaces and parentheses).
    static func statFields(_ text: String) -> [Substring]? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ")
    }

    /// From the text of /proc/self/stat and the btime line of /proc/stat.
    static func parse(stat: String, bootTime: Double) -> Sample? {
        // After ")": state is field 3, so utime (14) is index 11, stime 12, starttime (22) 19, vsize 20, rss 21.
        guard let f = statFields(stat), f.count > 21, let ut = Double(f[11]), let st = Double(f[12]),
              let start = Double(f[19]), let vsize = Double(f[20]), let rss = Double(f[21]) else { return nil }
        return Sample(cpuSeconds: (ut + st) / ticks, residentBytes: rss * pageSize, virtualBytes: vsize,
                      startTimeSeconds: bootTime + start / ticks, openFDs: nil, maxFDs: nil)
    }

    static func bootTime(_ procStat: String) -> Double? {
        for line in procStat.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    public static func read() -> Sample? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let boot = (try? String(contentsOfFile: "/proc/stat", encoding: .utf8)).flatMap(bootTime),
              var s = parse(stat: stat, bootTime: boot) else { return nil }
        s.openFDs = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")).map { $0.count }
        var lim = rlimit()
        #if os(Linux)
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0 { s.maxFDs = Double(lim.rlim_cur) }
        #else
        if getrlimit(RLIMIT_NOFILE, &lim) == 0 { s.maxFDs = Double(lim.rlim_cur) }
        #endif
        return s
    }

    /// Exposition text to append to a registry's; empty where /proc is missing.
    public static func render(program: String, version: String) -> String {
        var out = "# HELP hydra_build_info The running binary (always 1).\n# TYPE hydra_build_info gauge\n"
        out += "hydra_build_info" + MetricsRegistry.labelText(["program", "version"], [program, version]) + " 1\n"
        guard let s = read() else { return out }
        func one(_ name: String, _ kind: String, _ help: String, _ v: Double) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(kind)\n\(name) \(MetricsRegistry.num(v))\n"
        }
        one("process_cpu_seconds_total", "counter", "User and system CPU time spent, seconds.", s.cpuSeconds)
        one("process_resident_memory_bytes", "gauge", "Resident memory size.", s.residentBytes)
        one("process_virtual_memory_bytes", "gauge", "Virtual memory size.", s.virtualBytes)
        one("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.", s.startTimeSeconds)
        if let n = s.openFDs {
            // The directory listing itself holds one descriptor while it is read.
            one("process_open_fds", "gauge", "Open file descriptors.", Double(max(0, n - 1)))
        }
        if let m = s.maxFDs { one("process_max_fds", "gauge", "Limit on open file descriptors.", m) }
        return out
    }
}
