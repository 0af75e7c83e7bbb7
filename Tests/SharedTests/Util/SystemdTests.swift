import Foundation
import XCTest
@testable import HydraCore
@testable import HydraIO

final class SystemdNotifyTests: XCTestCase {
    /// A datagram socket bound where systemd's would be; returns its fd.
    func listener(path: String) throws -> Int32 {
        #if os(Linux)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #else
        let fd = socket(AF_UNIX, SOCK_DGRAM, 0)
        #endif
        XCTAssertGreaterThanOrEqual(fd, 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(rc, 0, "bind \(path): \(String(cString: strerror(errno)))")
        // Receives never block the test forever: a datagram that was not sent fails the assertion instead.
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func receive(_ fd: Int32) -> String? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buf, buf.count, 0)
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : nil
    }

    func testSendsTheDatagramToTheSocket() throws {
        let path = NSTemporaryDirectory() + "hydra-notify-\(getpid())-\(UUID().uuidString.prefix(6))"
        defer { unlink(path) }
        let fd = try listener(path: path)
        defer { close(fd) }
        XCTAssertTrue(SystemdNotify.send("READY=1\nSTATUS=leading", to: path))
        XCTAssertEqual(receive(fd), "READY=1\nSTATUS=leading")
        XCTAssertTrue(SystemdNotify.send("WATCHDOG=1", to: path))
        XCTAssertEqual(receive(fd), "WATCHDOG=1")
    }

    func testNoSocketIsNotAnError() {
        XCTAssertFalse(SystemdNotify.send("READY=1", to: "/nonexistent/hydra/notify"))
        // The tests run without NOTIFY_SOCKET: the hooks in the loops must do nothing.
        if ProcessInfo.processInfo.environment["NOTIFY_SOCKET"] == nil {
            XCTAssertFalse(SystemdNotify.enabled)
            SystemdNotify.watchdog()
            SystemdNotify.ready(status: "x")
        }
    }
}

final class LogJournalTests: XCTestCase {
    func testSyslogLevelNamesAreAccepted() {
        XCTAssertEqual(LogLevel(name: "notice"), .info)
        XCTAssertEqual(LogLevel(name: "critical"), .error)
        XCTAssertEqual(LogLevel(name: "trace"), .debug)
        XCTAssertNil(LogLevel(name: "verbose"))
        XCTAssertEqual([LogLevel.debug, .info, .warning, .error].map(\.journalPrefix), ["<7>", "<6>", "<4>", "<3>"])
    }

    func testJournalStreamMustBeStderr() {
        var st = stat()
        XCTAssertEqual(fstat(2, &st), 0)
        XCTAssertTrue(Log.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino)"]))
        // Inherited by a process whose stderr went elsewhere: not the journal.
        XCTAssertFalse(Log.stderrIsJournal(environment: ["JOURNAL_STREAM": "\(st.st_dev):\(UInt64(st.st_ino) &+ 1)"]))
        XCTAssertFalse(Log.stderrIsJournal(environment: [:]))
        XCTAssertFalse(Log.stderrIsJournal(environment: ["JOURNAL_STREAM": "garbage"]))
    }
}

final class ProcessMetricsTests: XCTestCase {
    func testParsesStatWithSpacesInTheName() throws {
        // Fields from a real /proc/<pid>/stat; the command name has a space and a parenthesis.
        let stat = "4242 (hydra (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 1000 123456789 2048 "
            + "18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0"
        let s = try XCTUnwrap(ProcessMetrics.parse(stat: stat, bootTime: 1_700_000_000))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        XCTAssertEqual(s.cpuSeconds, 300 / ticks, accuracy: 1e-9)
        XCTAssertEqual(s.startTimeSeconds, 1_700_000_000 + 1000 / ticks, accuracy: 1e-9)
        XCTAssertEqual(s.virtualBytes, 123456789)
        XCTAssertEqual(s.residentBytes, 2048 * Double(sysconf(Int32(_SC_PAGESIZE))))
        XCTAssertNil(ProcessMetrics.parse(stat: "garbage", bootTime: 0))
        XCTAssertEqual(ProcessMetrics.bootTime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"), 1_700_000_000)
    }

    func testRendersTheSelfProcess() throws {
        let text = ProcessMetrics.render(program: "hydra", version: "9.9.9")
        XCTAssertTrue(text.contains("hydra_build_info{program=\"hydra\",version=\"9.9.9\"} 1\n"))
        #if os(Linux)
        for name in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
            XCTAssertTrue(text.contains("\n\(name) "), "\(name) missing in:\n\(text)")
        }
        let start = try XCTUnwrap(ProcessMetrics.read()).startTimeSeconds
        XCTAssertLessThanOrEqual(start, Date().timeIntervalSince1970 + 1)
        XCTAssertGreaterThan(start, 1_000_000_000)
        #endif
    }
}

final class EnvironmentSettingsTests: XCTestCase {
    func testEmptyIsUnset() {
        XCTAssertEqual(EnvironmentSettings.value("HYDRA_METRICS_LISTEN", environment: ["HYDRA_METRICS_LISTEN": "0.0.0.0:9100"]), "0.0.0.0:9100")
        XCTAssertNil(EnvironmentSettings.value("HYDRA_CONSOLE_LISTEN", environment: ["HYDRA_CONSOLE_LISTEN": " "]))
        XCTAssertNil(EnvironmentSettings.value("HYDRA_SERVICES", environment: [:]))
    }
}
