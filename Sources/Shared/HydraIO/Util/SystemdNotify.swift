import Foundation
import Synchronization

/// sd_notify(3) without libsystemd: one datagram per message to $NOTIFY_SOCKET. The units are
/// Type=notify with WatchdogSec=, so systemd counts a service as started only after READY=1 and
/// restarts it when the loops that send WATCHDOG=1 stop turning, not merely when the process exits.
/// Everything is a no-op when NOTIFY_SOCKET is unset (a shell, the tests, the demo).
public enum SystemdNotify {
    /// Read once: systemd sets it before exec and it does not change.
    private static let socketPath: String? = {
        guard let p = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !p.isEmpty else { return nil }
        return p
    }()
    /// Microseconds from WATCHDOG_USEC, when WATCHDOG_PID is ours (or absent).
    private static let watchdogMicros: UInt64? = {
        let env = ProcessInfo.processInfo.environment
        guard let s = env["WATCHDOG_USEC"], let us = UInt64(s), us > 0 else { return nil }
        if let pid = env["WATCHDOG_PID"], Int32(pid) != getpid() { return nil }
        return us
    }()
    private static let lastPing = Atomic<UInt64>(0)

    public static var enabled: Bool { socketPath != nil }

    /// The service is up: listeners bound, loops started.
    public static func ready(status: String? = nil) {
        send("READY=1" + (status.map { "\nSTATUS=" + clean($0) } ?? ""))
    }

    /// Shown by `systemctl status`.
    public static func status(_ text: String) { send("STATUS=" + clean(text)) }

    public static func stopping() { send("STOPPING=1") }

    /// Called from each turn of a main loop. Sends at most one datagram per quarter of the watchdog
    /// interval (or per second without one), so hot loops can call it freely.
    public static func watchdog() {
        guard socketPath != nil else { return }
        let now = DispatchTime.now().uptimeNanoseconds / 1000
        let every = watchdogMicros.map { $0 / 4 } ?? 1_000_000
        let last = lastPing.load(ordering: .relaxed)
        if last != 0 && now &- last < every { return }
        // Two loops racing here may both send: harmless, the datagram is idempotent.
        lastPing.store(now, ordering: .relaxed)
        send("WATCHDOG=1")
    }

    /// Newlines would start a new assignment in the datagram.
    private static func clean(_ s: String) -> String { s.replacingOccurrences(of: "\n", with: " ") }

    /// Sends `message` to `path` (a file system path, or "@name" for the abstract namespace).
    /// Returns false when the socket cannot be reached; callers have nothing to do about that.
    @discardableResult
    public static func send(_ message: String, to path: String? = nil) -> Bool {
        guard let path = path ?? socketPath else { return false }
        #if os(Linux)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        let abstract = bytes.first == UInt8(ascii: "@")
        if abstract { bytes[0] = 0 }
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        // An abstract address is not NUL-terminated: its length is exactly the bytes given.
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let sent = message.withCString { msg in
            withUnsafePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, msg, strlen(msg), Int32(MSG_NOSIGNAL), $0, len) }
            }
        }
        return sent >= 0
    }
}
