import Foundation

/// A child started with posix_spawn, reaped with waitpid. Foundation's Process was seen to
/// hang in waitUntilExit on Linux when the child starts a daemon (pg_ctl, redis-server), and
/// a chaos run starts and kills many children, so it manages them by pid.
public final class SpawnedProcess {
    public let name: String
    public let pid: pid_t
    private var exitStatus: Int32?

    /// Starts `argv` with `environment`; stdout and stderr are appended to `log` (or /dev/null).
    public init(name: String, argv: [String], environment: [String: String], log: String?) throws {
        self.name = name
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours leaks into the child: daemons it starts would keep our sockets
        // (proxied connections, database sessions) open after we close them. (glibc's
        // addclosefrom_np is not visible to Swift, so mark them close-on-exec instead.)
        Self.markDescriptorsCloseOnExec()
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for a in cargs { free(a) }; for e in cenv { free(e) } }
        // The parent may ignore SIGINT/SIGTERM/SIGPIPE (to handle them itself); children start with the defaults.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF))
        var p: pid_t = 0
        let rc = posix_spawn(&p, argv[0], &actions, &attr, &cargs, &cenv)
        guard rc == 0 else { throw SpawnError("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        pid = p
    }

    public static func markDescriptorsCloseOnExec() {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for name in fds {
            guard let fd = Int32(name), fd > 2 else { continue }
            let flags = fcntl(fd, F_GETFD)
            if flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
        }
    }

    /// Reaps the child if it has exited; true while it runs.
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || r < 0 { exitStatus = status; return false }
        return true
    }

    /// The exit code (or 128 + signal) once it has exited.
    public var exitCode: Int32? {
        guard !isRunning, let s = exitStatus else { return nil }
        return (s & 0x7f) == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
    }

    public func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    /// Waits until it exits or `timeout` passes; true when it exited.
    @discardableResult
    public func wait(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning {
            if Date() > deadline { return false }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return true
    }

    /// SIGTERM, then SIGKILL after `grace` seconds.
    public func stop(grace: Double = 10) {
        signal(SIGTERM)
        if !wait(timeout: grace) { signal(SIGKILL); wait(timeout: 5) }
    }

    /// Runs to completion (at most `timeout` seconds, then SIGKILL); returns the exit code.
    public static func run(_ argv: [String], environment: [String: String], log: String?, timeout: Double) throws -> Int32 {
        let c = try SpawnedProcess(name: argv[0], argv: argv, environment: environment, log: log)
        if !c.wait(timeout: timeout) { c.signal(SIGKILL); c.wait(timeout: 5); return 124 }
        return c.exitCode ?? 1
    }
}

/// A child process that could not be started.
public struct SpawnError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
