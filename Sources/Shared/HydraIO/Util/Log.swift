import Foundation
import Synchronization
import HydraCore

public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug = 0, info, warning, error

    public init?(name: String) {
        switch name.lowercased() {
        // notice and critical are the syslog names operators reach for (and journalctl -p takes);
        // they map to the nearest level this logger has rather than failing the unit at start.
        case "debug", "trace": self = .debug
        case "info", "notice": self = .info
        case "warn", "warning": self = .warning
        case "error", "critical", "crit": self = .error
        default: return nil
        }
    }
    public var name: String { ["debug", "info", "warn", "error"][rawValue] }
    /// sd-daemon(3) priority prefix: journald files the line under this syslog priority.
    public var journalPrefix: String { ["<7>", "<6>", "<4>", "<3>"][rawValue] }
    public static let acceptedNames = "trace, debug, info, notice, warn, warning, error, critical"
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

private let currentLevel = Atomic<Int>(LogLevel.info.rawValue)
private let writeLock = Mutex<Void>(())
/// Decided once: stderr does not change under a running service.
private let journalPrefixes = Log.stderrIsJournal()

/// logfmt lines to stderr (journald keeps them): `ts=… level=… component=… node=… job=… msg="…"`.
public struct Log: Sendable {
    public var component: String
    public var fields: [(String, String)]

    public init(component: String, fields: [(String, String)] = []) {
        self.component = component; self.fields = fields
    }

    public static func setLevel(_ l: LogLevel) { currentLevel.store(l.rawValue, ordering: .relaxed) }
    public static var level: LogLevel { LogLevel(rawValue: currentLevel.load(ordering: .relaxed)) ?? .info }

    /// From `--log-level`, else HYDRA_LOG_LEVEL, else info.
    public static func configure(flag: String?) throws {
        let name = flag ?? ProcessInfo.processInfo.environment["HYDRA_LOG_LEVEL"] ?? "info"
        guard let l = LogLevel(name: name) else {
            throw InputError(file: "--log-level", problem: "'\(name)' is not one of \(LogLevel.acceptedNames)")
        }
        setLevel(l)
    }

    public func with(_ key: String, _ value: String) -> Log {
        var l = self
        l.fields.append((key, value))
        return l
    }

    public func debug(_ msg: String, _ extra: [(String, String)] = []) { emit(.debug, msg, extra) }
    public func info(_ msg: String, _ extra: [(String, String)] = []) { emit(.info, msg, extra) }
    public func warning(_ msg: String, _ extra: [(String, String)] = []) { emit(.warning, msg, extra) }
    public func error(_ msg: String, _ extra: [(String, String)] = []) { emit(.error, msg, extra) }

    func emit(_ level: LogLevel, _ msg: String, _ extra: [(String, String)]) {
        guard level >= Log.level else { return }
        var line = (journalPrefixes ? level.journalPrefix : "") + "ts=\(Self.timestamp()) level=\(level.name) component=\(component)"
        for (k, v) in fields + extra { line += " \(k)=\(Self.quote(v))" }
        line += " msg=\(Self.quote(msg))\n"
        writeLock.withLock { _ in
            var l = line
            l.withUTF8 { b in
                var off = 0
                while off < b.count {
                    let n = write(2, b.baseAddress! + off, b.count - off)
                    if n <= 0 { if n < 0 && errno == EINTR { continue }; break }
                    off += n
                }
            }
        }
    }

    /// True when stderr is the journal stream systemd set up (JOURNAL_STREAM is "dev:ino" of it), not
    /// merely inherited by a child whose stderr was redirected elsewhere (systemd.exec(5)).
    public static func stderrIsJournal(environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        guard let js = environment["JOURNAL_STREAM"] else { return false }
        let parts = js.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    /// Seconds with three decimals ("0.042"), without String(format:), which is slow enough to show
    /// in a profile when every finished job logs a line.
    public static func seconds(_ s: Double) -> String {
        guard s.isFinite else { return "0.000" }
        let ms = Int64((abs(s) * 1000).rounded())
        let frac = ms % 1000
        return (s < 0 && ms != 0 ? "-" : "") + String(ms / 1000) + "." + pad(Int(frac), 3)
    }

    static func pad(_ v: Int, _ width: Int) -> String {
        let d = String(v)
        return d.count >= width ? d : String(repeating: "0", count: width - d.count) + d
    }

    static func timestamp() -> String {
        var tv = timeval()
        gettimeofday(&tv, nil)
        var t = time_t(tv.tv_sec)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return pad(Int(tmv.tm_year) + 1900, 4) + "-" + pad(Int(tmv.tm_mon) + 1, 2) + "-" + pad(Int(tmv.tm_mday), 2) + "T"
            + pad(Int(tmv.tm_hour), 2) + ":" + pad(Int(tmv.tm_min), 2) + ":" + pad(Int(tmv.tm_sec), 2) + "."
            + pad(Int(tv.tv_usec / 1000), 3) + "Z"
    }

    /// A logfmt value: bare when it can be, else quoted with `\\`, `\"` and every control character
    /// escaped (`\n`, `\r`, `\t`, `\u{0}`…). Scalars, not Characters: "\r\n" is one Character and
    /// slipped past a check for "\n", so a request path with CR LF could start a forged log line.
    static func quote(_ v: String) -> String {
        if !v.isEmpty, !needsQuotes(v) { return v }
        var out = "\""
        for s in v.unicodeScalars {
            switch s {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if s.properties.generalCategory == .control { out += "\\u{" + String(s.value, radix: 16) + "}" } else { out.unicodeScalars.append(s) }
            }
        }
        return out + "\""
    }

    /// Bytes, not scalars: every finished job logs a line, and most values are plain ASCII ids.
    static func needsQuotes(_ v: String) -> Bool {
        var prev: UInt8 = 0
        for b in v.utf8 {
            // C0 controls and space, `"`, `=`, `\`, DEL; C1 controls are 0xC2 0x80–0x9F in UTF-8.
            if b <= 0x20 || b == 0x22 || b == 0x3D || b == 0x5C || b == 0x7F || (prev == 0xC2 && b < 0xA0) { return true }
            prev = b
        }
        return false
    }
}
