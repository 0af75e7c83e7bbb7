import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HydraCore

public enum NvidiaSMIError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The executable does not exist (no driver installed, wrong path).
    case notFound(String)
    /// nvidia-smi ran and exited non-zero; `output` is its own stdout+stderr,
    /// e.g. "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."
    case failed(exitStatus: Int32, output: String)
    /// nvidia-smi did not finish in time (a wedged driver hangs it) and was killed.
    case timedOut(Double)
    /// The output is not what was asked for.
    case unparsable(String)

    public var description: String {
        switch self {
        case .notFound(let path):
            return "nvidia-smi not found at \(path)"
        case .failed(let status, let output):
            let words = output.isEmpty ? "(no output)" : output
            return "nvidia-smi exited with status \(status): \(words)"
        case .timedOut(let seconds):
            return "nvidia-smi did not finish within \(seconds) s and was killed"
        case .unparsable(let why):
            return "nvidia-smi output could not be parsed: \(why)"
        }
    }
}

/// Runs the real (or a fake) nvidia-smi and turns its CSV into an `Inventory`.
///
/// `read()` blocks the calling thread for up to `2 × timeout`; call it from a
/// dedicated thread or `Task.detached`, not from an actor that must stay responsive.
public struct NvidiaSMIReader: Sendable {
    public static let gpuQuery =
        "--query-gpu=index,uuid,name,memory.total,memory.used,memory.free,utilization.gpu,temperature.gpu,power.draw"
    public static let appsQuery = "--query-compute-apps=gpu_uuid,pid,used_memory,process_name"

    public let executable: String
    /// Seconds allowed for each of the two invocations.
    public let timeout: Double
    /// Bytes of output (stdout and stderr together) read from one invocation before it is killed:
    /// a real answer is a few KiB per GPU; a runaway one must not fill the agent's memory.
    public let maxOutputBytes: Int
    public static let defaultMaxOutputBytes = 4 << 20

    public init(executable: String = "nvidia-smi", timeout: Double = 5, maxOutputBytes: Int = NvidiaSMIReader.defaultMaxOutputBytes) {
        self.executable = executable
        self.timeout = timeout
        self.maxOutputBytes = maxOutputBytes
    }

    public func read() throws -> Inventory {
        let gpus = try query(Self.gpuQuery, parse: NvidiaSMICSV.parseGPUs)
        let processes = try query(Self.appsQuery, parse: NvidiaSMICSV.parseProcesses)
        return Inventory(gpus: gpus, processes: processes)
    }

    private func query<T>(_ selector: String, parse: (String) throws -> T) throws -> T {
        let result = try ChildProcess.run(executable, arguments: [selector, "--format=csv"],
                                          environment: ["LC_ALL": "C"], timeout: timeout, maxOutputBytes: maxOutputBytes)
        let stdout = String(decoding: result.stdout, as: UTF8.self)
        guard result.exitStatus == 0 else {
            let stderr = String(decoding: result.stderr, as: UTF8.self)
            // An excerpt, never the raw bytes: this text goes into logs and metrics' neighbours.
            let words = [stdout, stderr].map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
                .filter { !$0.isEmpty }.map { Excerpt.of($0, limit: 300) }.joined(separator: " / ")
            throw NvidiaSMIError.failed(exitStatus: result.exitStatus, output: words)
        }
        do {
            return try parse(stdout)
        } catch NvidiaSMIError.unparsable(let why) {
            // Exit 0 with an error message on stdout happens (older drivers);
            // the parser's message already quotes the tool's words.
            throw NvidiaSMIError.unparsable("\(executable) \(selector): \(why)")
        }
    }
}

/// A child process run to completion with a deadline, both output streams
/// captured. Built on posix_spawn and poll on the calling thread: no helper
/// threads to leak when nvidia-smi hangs, nothing shared across threads.
enum ChildProcess {
    struct Result {
        var exitStatus: Int32
        var stdout: Data
        var stderr: Data
    }

    static func run(_ executable: String, arguments: [String], environment overrides: [String: String],
                    timeout: Double, maxOutputBytes: Int = NvidiaSMIReader.defaultMaxOutputBytes) throws -> Result {
        var env = ProcessInfo.processInfo.environment
        for (k, v) in overrides { env[k] = v }

        let outPipe = try makePipe(), errPipe = try makePipe()
        var readEnds = [outPipe.read, errPipe.read]
        defer { for fd in readEnds where fd >= 0 { close(fd) } }

        let pid: pid_t
        do {
            defer { close(outPipe.write); close(errPipe.write) }
            pid = try spawn(executable, arguments: arguments, environment: env,
                            stdout: outPipe.write, stderr: errPipe.write)
        }

        var output = [Data(), Data()]
        var status: Int32?
        let deadline = ContinuousClock.now + .milliseconds(Int64(max(0, timeout) * 1000))
        var buffer = [UInt8](repeating: 0, count: 65536)

        while readEnds.contains(where: { $0 >= 0 }) || status == nil {
            if status == nil { status = reap(pid, block: false) }
            if status != nil && !readEnds.contains(where: { $0 >= 0 }) { break }

            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                // Kill the whole group: a wrapper script's children hold the pipes too.
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                if status == nil { reapInBackground(pid) }
                throw NvidiaSMIError.timedOut(timeout)
            }
            let remainingMs = Int(remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000)
            // Once both pipes are closed only the exit status is missing; poll
            // the child in short steps (there is no fd to wait on for that).
            let waitMs = readEnds.contains(where: { $0 >= 0 }) ? max(1, remainingMs) : min(5, max(1, remainingMs))

            var fds = readEnds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&fds, nfds_t(fds.count), Int32(clamping: waitMs))
            if ready < 0 && errno != EINTR {
                throw NvidiaSMIError.failed(exitStatus: -1, output: "poll: \(String(cString: strerror(errno)))")
            }
            guard ready > 0 else { continue }
            for i in fds.indices where fds[i].fd >= 0 && fds[i].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    output[i].append(contentsOf: buffer[0..<n])
                    if output[0].count + output[1].count > maxOutputBytes {
                        kill(-pid, SIGKILL)
                        kill(pid, SIGKILL)
                        if status == nil { reapInBackground(pid) }
                        throw NvidiaSMIError.unparsable(
                            "\(executable) wrote more than \(maxOutputBytes) bytes (the cap); killed it: \(Excerpt.of(output[0].prefix(200), limit: 80))")
                    }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(readEnds[i])
                    readEnds[i] = -1
                }
            }
        }
        return Result(exitStatus: status ?? -1, stdout: output[0], stderr: output[1])
    }

    private static func makePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw NvidiaSMIError.failed(exitStatus: -1, output: "pipe: \(String(cString: strerror(errno)))")
        }
        // Close-on-exec, so other programs spawned later do not inherit our ends
        // (the child gets its copies via dup2, which clears the flag). pipe2 is
        // not exported to Swift here; a spawn on another thread between pipe()
        // and fcntl() could inherit a write end and only delay our EOF.
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return (fds[0], fds[1])
    }

    private static func spawn(_ executable: String, arguments: [String], environment: [String: String],
                              stdout: Int32, stderr: Int32) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, stdout, 1)
        posix_spawn_file_actions_adddup2(&actions, stderr, 2)

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Own process group, so a timeout can kill everything the child started.
        // Default signal dispositions and an empty mask: the test runner or the
        // agent may ignore SIGPIPE, and nvidia-smi should not inherit that.
        posix_spawnattr_setpgroup(&attr, 0)
        var noSignals = sigset_t(), defaultSignals = sigset_t()
        sigemptyset(&noSignals)
        sigemptyset(&defaultSignals)
        sigaddset(&defaultSignals, SIGPIPE)
        posix_spawnattr_setsigmask(&attr, &noSignals)
        posix_spawnattr_setsigdefault(&attr, &defaultSignals)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }

        var pid: pid_t = 0
        let rc = executable.contains("/")
            ? posix_spawn(&pid, executable, &actions, &attr, argv, envp)
            : posix_spawnp(&pid, executable, &actions, &attr, argv, envp)
        switch rc {
        case 0: return pid
        case ENOENT, ENOTDIR: throw NvidiaSMIError.notFound(executable)
        default:
            throw NvidiaSMIError.failed(exitStatus: -1,
                                        output: "cannot run \(executable): \(String(cString: strerror(rc)))")
        }
    }

    /// The exit status shell-style: the code, or 128 + signal when killed.
    private static func reap(_ pid: pid_t, block: Bool) -> Int32? {
        var raw: Int32 = 0
        var rc: pid_t
        repeat { rc = waitpid(pid, &raw, block ? 0 : WNOHANG) } while rc < 0 && errno == EINTR
        guard rc == pid else { return nil }
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }

    /// A SIGKILLed nvidia-smi stuck in the driver (state D) only exits once the
    /// driver lets go; wait for it off the caller's thread so it is not left a zombie.
    private static func reapInBackground(_ pid: pid_t) {
        Thread.detachNewThread { _ = reap(pid, block: true) }
    }
}
