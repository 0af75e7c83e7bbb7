import Foundation
import Synchronization
import HydraCore
import HydraIO

/// Runs a command line that matches one of the node's argv templates (no shell), isolated from
/// the agent as far as a plain process can be:
/// - a fixed minimal environment plus only the spec `env` names the node allows;
/// - its own session and process group, the whole group killed on timeout, cancel and exit;
/// - with `user`, another uid/gid (through setpriv: that user's own groups only, no capabilities, no new privileges),
///   so it cannot read the agent's credentials or signal the agent.
/// It still shares the agent's cgroup and systemd sandbox (see docs/executors.md).
/// Spec: `argv` (list of strings), optional `timeout_s`, optional `env` (map of strings).
public struct CommandExecutor: Executor {
    public let kind = "command"
    public var allowlist: CommandAllowlist
    /// Spec `env` names a job may set; everything else is refused.
    public var envAllowlist: Set<String>
    public var user: CommandUser?
    public var outputCapBytes: Int
    public var defaultTimeoutSeconds: Double
    /// Between SIGTERM and SIGKILL to the job's process group.
    public var killGraceSeconds: Double
    public var setprivPath: String

    public init(allowlist: [CommandTemplate], envAllowlist: [String] = [], user: CommandUser? = nil,
                outputCapBytes: Int = 64 * 1024, defaultTimeoutSeconds: Double = 3600, killGraceSeconds: Double = 2,
                setprivPath: String = "/usr/bin/setpriv") throws {
        for t in allowlist {
            do { try t.validate() } catch { throw CommandTemplateError("command allowlist entry \(t): \(error)") }
        }
        for name in envAllowlist {
            if let why = CommandEnvironment.nameProblem(name) { throw CommandTemplateError("command env name '\(name)': \(why)") }
        }
        if let user, !FileManager.default.isExecutableFile(atPath: setprivPath) {
            throw CommandTemplateError("command user \(user.name) needs \(setprivPath) (util-linux) to switch users")
        }
        self.allowlist = CommandAllowlist(allowlist); self.envAllowlist = Set(envAllowlist); self.user = user
        self.outputCapBytes = outputCapBytes; self.defaultTimeoutSeconds = defaultTimeoutSeconds
        self.killGraceSeconds = killGraceSeconds; self.setprivPath = setprivPath
    }

    /// The absolute path of a template's program: as written, or a bare name looked up in the fixed PATH.
    public func resolve(_ program: String) -> String? {
        if program.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        guard !program.contains("/") else { return nil }
        for dir in CommandEnvironment.safePath.split(separator: ":") {
            let p = "\(dir)/\(program)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    /// The child's whole environment: nothing is inherited from the agent.
    func environment(_ context: ExecutionContext, tmp: String) throws -> [String: String] {
        var env = ["PATH": CommandEnvironment.safePath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                   "HOME": context.outputDirectory, "TMPDIR": tmp,
                   "HYDRA_JOB_ID": context.envelope.jobID, "HYDRA_ATTEMPT": String(context.envelope.attempt),
                   "HYDRA_OUTPUT_DIR": context.outputDirectory,
                   "CUDA_VISIBLE_DEVICES": context.gpuIndexes.map(String.init).joined(separator: ",")]
        guard let extra = context.envelope.spec["env"], extra != .null else { return env }
        guard let vars = extra.objectValue else { throw ExecutionFailure(.permanent, "command spec: env: must be a map of strings") }
        for (k, v) in vars.sorted(by: { $0.key < $1.key }) {
            guard envAllowlist.contains(k) else {
                let allowed = envAllowlist.isEmpty ? "none" : envAllowlist.sorted().joined(separator: ", ")
                throw ExecutionFailure(.permanent, "command spec: env.\(CommandTemplate.shown(k)): not in this node's command env allowlist (command_env; allowed: \(allowed))")
            }
            guard let s = v.stringValue, !s.utf8.contains(0) else {
                throw ExecutionFailure(.permanent, "command spec: env.\(k): must be a string without NUL")
            }
            env[k] = s
        }
        return env
    }

    public func execute(_ context: ExecutionContext) throws -> ExecutionResult {
        let spec = context.envelope.spec
        guard let raw = spec["argv"]?.arrayValue, !raw.isEmpty else {
            throw ExecutionFailure(.permanent, "spec.argv must be a non-empty list of strings")
        }
        var argv: [String] = []
        for (i, v) in raw.enumerated() {
            guard let s = v.stringValue else { throw ExecutionFailure(.permanent, "spec.argv[\(i)] must be a string") }
            argv.append(s)
        }
        let program = argv[0]
        if case .failure(let why) = allowlist.check(argv) { throw ExecutionFailure(.permanent, why.description) }
        guard let path = resolve(program) else {
            throw ExecutionFailure(.permanent, "'\(program)' is allowlisted but is not an executable file here (PATH \(CommandEnvironment.safePath))")
        }
        let tmp = (context.outputDirectory as NSString).appendingPathComponent(".tmp")
        let env = try environment(context, tmp: tmp)
        var timeout = (try SpecReader(spec, kind: kind).double("timeout_s")) ?? defaultTimeoutSeconds
        if let d = context.deadline { timeout = min(timeout, d.timeIntervalSince(context.now())) }

        do {
            try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        } catch {
            throw ExecutionFailure(.transient, "cannot create \(tmp): \(error.localizedDescription)")
        }
        var exec = [path] + argv.dropFirst()
        if let user {
            // The job owns its output directory; nothing else of the agent's is writable for it.
            for d in [context.outputDirectory, tmp] where chown(d, user.uid, user.gid) != 0 {
                throw ExecutionFailure(.transient, "cannot hand \(d) to command user \(user.name): \(String(cString: strerror(errno))) (the agent needs CAP_CHOWN)")
            }
            exec = [setprivPath, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--init-groups", "--inh-caps=-all",
                    "--no-new-privs", "--"] + exec
        }

        let child: ProcessGroupChild
        do { child = try ProcessGroupChild(argv: exec, environment: env, directory: context.outputDirectory, outputCap: outputCapBytes) } catch {
            throw ExecutionFailure(.transient, "cannot start \(path): \(error)")
        }
        let started = Date()
        var timedOut = false, cancelled = false
        while !child.hasExited() {
            if context.cancellation.isCancelled { cancelled = true; break }
            if Date().timeIntervalSince(started) > timeout { timedOut = true; break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        if timedOut || cancelled { child.terminateGroup(grace: killGraceSeconds) }
        let status = child.reap()
        let (o, e) = child.output()
        if cancelled { throw ExecutionFailure(.transient, "cancelled") }
        if timedOut { throw ExecutionFailure(.timeout, "\(program) ran past its timeout of \(String(format: "%.0f", timeout)) s and was stopped") }
        if case .signaled(let sig) = status {
            throw ExecutionFailure(.transient, "\(program) was killed by signal \(sig)")
        }
        guard case .exited(let code) = status else { throw ExecutionFailure(.transient, "\(program): lost track of its process") }
        if code != 0 {
            let tail = String(e.text.suffix(500))
            let cls: FailureClass = tail.lowercased().contains("out of memory") ? .oom : .transient
            throw ExecutionFailure(cls, "\(program) exited with status \(code): \(tail)")
        }
        return ExecutionResult(output: .object([
            "exit_code": .number(Double(code)), "stdout": .string(o.text), "stderr": .string(e.text),
            "stdout_truncated": .bool(o.truncated), "stderr_truncated": .bool(e.truncated),
        ]))
    }
}

/// The uid/gid command jobs run as (`--command-user`), resolved once at agent start.
public struct CommandUser: Sendable, Equatable {
    public var name: String
    public var uid: uid_t
    public var gid: gid_t

    public init(name: String, uid: uid_t, gid: gid_t) { self.name = name; self.uid = uid; self.gid = gid }

    public static func lookup(_ name: String) throws -> CommandUser {
        guard let pw = getpwnam(name) else {
            throw CommandTemplateError("command user '\(name)' does not exist (install-node.sh creates hydra-job)")
        }
        let u = CommandUser(name: name, uid: pw.pointee.pw_uid, gid: pw.pointee.pw_gid)
        if u.uid == 0 || u.gid == 0 { throw CommandTemplateError("command user '\(name)' is root: that isolates nothing") }
        return u
    }
}

enum ChildStatus: Equatable { case exited(Int32), signaled(Int32), unknown }

/// A child started with posix_spawn as the leader of a new session (so of a new process group,
/// pgid == pid), stdout and stderr drained while it runs. Foundation.Process can do neither.
final class ProcessGroupChild: Sendable {
    let pid: pid_t
    private let drain: PipeDrain

    // Not in Swift's Glibc module (they need _GNU_SOURCE), so looked up at run time.
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    private typealias AddClosefrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    /// glibc's POSIX_SPAWN_SETSID (bits/spawn.h, glibc ≥ 2.26); the header hides it from Swift.
    private static let spawnSetsid: Int32 = 0x80

    init(argv: [String], environment: [String: String], directory: String, outputCap: Int) throws {
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard pipe(&outPipe) == 0 else { throw CommandTemplateError("pipe: \(String(cString: strerror(errno)))") }
        guard pipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw CommandTemplateError("pipe: \(String(cString: strerror(errno)))")
        }
        for fd in outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        defer { close(outPipe[1]); close(errPipe[1]) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        // The agent's Redis sockets and credential files must not reach the job.
        if let sym = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") {
            _ = unsafeBitCast(sym, to: AddClosefrom.self)(&actions, 3)
        } else {
            SpawnedProcess.markDescriptorsCloseOnExec()
        }
        guard let chdirSym = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else {
            close(outPipe[0]); close(errPipe[0])
            throw CommandTemplateError("this C library has no posix_spawn_file_actions_addchdir_np (glibc ≥ 2.29 needed)")
        }
        _ = unsafeBitCast(chdirSym, to: AddChdir.self)(&actions, directory)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // The agent ignores or handles some signals itself; ignored ones would survive exec.
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | Self.spawnSetsid))

        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?] = environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for a in cargs { free(a) }; for e in cenv { free(e) } }
        var p: pid_t = 0
        let rc = posix_spawn(&p, argv[0], &actions, &attr, &cargs, &cenv)
        guard rc == 0 else {
            close(outPipe[0]); close(errPipe[0])
            throw CommandTemplateError(String(cString: strerror(rc)))
        }
        pid = p
        drain = PipeDrain(fds: [outPipe[0], errPipe[0]], cap: outputCap)
        drain.start()
    }

    /// Whether the leader has exited, without reaping it: while it is a zombie its pid, and
    /// so the group id, cannot be reused by an unrelated process we might then signal.
    func hasExited() -> Bool {
        var info = siginfo_t()
        let r = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
        if r != 0 { return errno != EINTR }
        return info._sifields._sigchld.si_pid == pid
    }

    /// SIGTERM to the whole group, SIGKILL after `grace` seconds if the leader is still there.
    func terminateGroup(grace: Double) {
        kill(-pid, SIGTERM)
        let until = Date().addingTimeInterval(grace)
        while !hasExited() && Date() < until { Thread.sleep(forTimeInterval: 0.01) }
    }

    /// Kills whatever is left of the group (background children included), then reaps the leader.
    func reap() -> ChildStatus {
        kill(-pid, SIGKILL)
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, 0)
            if r == pid { break }
            if r < 0 && errno != EINTR { return .unknown }
        }
        if (status & 0x7f) == 0 { return .exited((status >> 8) & 0xff) }
        return .signaled(status & 0x7f)
    }

    /// Once reaped: the captured output. A process that left the group (setsid) and still
    /// holds the pipes gets 2 s, then the pipes are closed on it.
    func output() -> (CapturedOutput, CapturedOutput) {
        let r = drain.finish(waitSeconds: 2)
        return (r[0], r[1])
    }
}

struct CapturedOutput: Sendable {
    var text: String
    var truncated: Bool
}

/// Reads several pipes on one thread until each reaches EOF (so a child never blocks on a
/// full pipe), keeping the first `cap` bytes of each.
final class PipeDrain: Sendable {
    private let fds: [Int32]
    private let cap: Int
    private let state: Mutex<[(data: Data, truncated: Bool)]>
    private let stop = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    init(fds: [Int32], cap: Int) {
        self.fds = fds; self.cap = cap
        state = Mutex(Array(repeating: (Data(), false), count: fds.count))
    }

    func start() {
        let t = Thread { [self] in
            var open = Array(fds.indices)
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !open.isEmpty && !stop.load(ordering: .relaxed) {
                var polled = open.map { pollfd(fd: fds[$0], events: Int16(POLLIN), revents: 0) }
                let r = poll(&polled, nfds_t(polled.count), 100)
                if r < 0 && errno != EINTR { break }
                if r <= 0 { continue }
                var closed: [Int] = []
                for (k, i) in open.enumerated() where polled[k].revents != 0 {
                    let n = buffer.withUnsafeMutableBytes { read(fds[i], $0.baseAddress, $0.count) }
                    if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    if n <= 0 { closed.append(i); continue }
                    state.withLock { s in
                        let room = cap - s[i].data.count
                        if room > 0 { s[i].data.append(contentsOf: buffer[0..<min(n, room)]) }
                        if n > room { s[i].truncated = true }
                    }
                }
                open.removeAll { closed.contains($0) }
            }
            for fd in fds { close(fd) }
            done.signal()
        }
        t.start()
    }

    func finish(waitSeconds: Double) -> [CapturedOutput] {
        if done.wait(timeout: .now() + waitSeconds) == .timedOut {
            stop.store(true, ordering: .relaxed)
            done.wait()
        }
        return state.withLock { $0.map { CapturedOutput(text: String(decoding: $0.data, as: UTF8.self), truncated: $0.truncated) } }
    }
}
