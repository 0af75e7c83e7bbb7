import Foundation
import Synchronization
import XCTest
@testable import HydraCore
@testable import HydraWire
@testable import HydraExecutors

/// Command jobs against whole-argv templates, a fixed environment, their own process group and user.
final class CommandTemplateTests: XCTestCase {
    let rsync = CommandTemplate(["/usr/bin/rsync", "-a", "{path}", "{path}"])

    func testWholeArgvMustMatchATemplate() throws {
        let allow = CommandAllowlist([rsync, CommandTemplate(["/bin/sleep", "{int}"]), CommandTemplate(["/bin/echo", "{text}"]),
                                      CommandTemplate(["/usr/local/bin/train-lora", "--steps", "{int}", "--name", "{name}"]),
                                      try CommandTemplate(parsing: "/usr/bin/true")])
        for ok in [["/usr/bin/rsync", "-a", "out/", "archive/2026-12-04"], ["/bin/sleep", "30"], ["/bin/echo", "hello from a fictional studio"],
                   ["/usr/local/bin/train-lora", "--steps", "1500", "--name", "glass-orchard_v2.safetensors"], ["/usr/bin/true"]] {
            XCTAssertNoThrow(try allow.check(ok).get(), "\(ok)")
        }
        let refused: [([String], String)] = [
            (["/usr/bin/rsync", "-e", "sh -c 'cat /run/credentials/*'", "out/", "x:"], "5 elements"),
            (["/usr/bin/rsync", "-a", "-esh -c id", "archive/"], "argv[2]"),
            (["/usr/bin/rsync", "-a", "out/", "--rsh=sh -c id"], "argv[3]"),
            (["/usr/bin/rsync", "-a", "out/", "evil.example:loot"], "argv[3]"),
            (["/usr/bin/rsync", "-a", "../../etc/", "archive/"], "argv[2]"),
            (["/usr/bin/rsync", "-av", "out/", "archive/"], "argv[1]"),
            (["/bin/sleep", "-1"], "argv[1]"),
            (["/bin/sleep", "1e9"], "argv[1]"),
            (["/bin/echo", "-e"], "argv[1]"),
            (["/bin/echo", "a\u{0}b"], "argv[1]"),
            (["/bin/echo", "line\nbreak"], "argv[1]"),
            (["/usr/local/bin/train-lora", "--steps", "1500", "--name", "../x"], "argv[4]"),
            (["/usr/bin/true", "--help"], "without arguments"),
            (["/bin/rm", "-rf", "/"], "not in this node's command allowlist"),
            (["/bin/sh", "-c", "id"], "not in this node's command allowlist"),
        ]
        for (argv, why) in refused {
            switch allow.check(argv) {
            case .success(let t): XCTFail("\(argv) matched \(t)")
            case .failure(let e): XCTAssertTrue(e.description.contains(why), "\(argv): \(e)")
            }
        }
    }

    func testTemplatesParseAndBadOnesAreRefused() throws {
        XCTAssertEqual(try CommandTemplate(parsing: "/usr/bin/rsync -a {path}  {path}"), rsync)
        XCTAssertEqual(try CommandTemplate(parsing: #"["/bin/echo", "two words", "{text}"]"#).elements, ["/bin/echo", "two words", "{text}"])
        XCTAssertThrowsError(try CommandTemplate(parsing: "/bin/echo {txt}")) { XCTAssertTrue("\($0)".contains("{txt}"), "\($0)") }
        XCTAssertThrowsError(try CommandTemplate(parsing: "{path} -a"))
        XCTAssertThrowsError(try CommandTemplate(parsing: "   "))

        let yaml = """
        nodes:
          - name: hydra-ai
            command_allowlist:
              - /usr/bin/true
              - "/bin/sleep {int}"
              - [/usr/bin/rsync, -a, "{path}", "{path}"]
            command_env: [FICTIONAL_MODEL]
            command_user: hydra-job
        """
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("cluster-\(UUID().uuidString.prefix(8)).yaml").path
        try yaml.write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let node = try XCTUnwrap(try ClusterConfig.load(path: file).node(named: "hydra-ai"))
        XCTAssertEqual(node.commandAllowlist, [CommandTemplate(["/usr/bin/true"]), CommandTemplate(["/bin/sleep", "{int}"]), rsync])
        XCTAssertEqual(node.commandEnv, ["FICTIONAL_MODEL"])
        XCTAssertEqual(node.commandUser, "hydra-job")

        for (bad, location) in [("command_allowlist: [\"/bin/echo {bogus}\"]", "command_allowlist[0]"),
                                ("command_env: [LD_PRELOAD]", "command_env[0]"), ("command_env: [PATH]", "command_env[0]")] {
            try "nodes:\n  - name: n\n    \(bad)\n".write(toFile: file, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try ClusterConfig.load(path: file)) { XCTAssertTrue("\($0)".contains(location), "\($0)") }
        }
    }

    /// Whatever a job sends, a placeholder is never filled with an option, NUL or a line break,
    /// and literals only ever match themselves.
    func testGenerativeNothingDangerousEverFillsAPlaceholder() {
        let templates = CommandTemplate.Placeholder.allCases.map { CommandTemplate(["/opt/tool", "-x", "{\($0.rawValue)}"]) }
            + [CommandTemplate(["/opt/tool", "{path}", "{name}", "{int}", "{text}"])]
        let pool: [String] = ["-", "--", "a", "Z", "0", "9", "/", ".", "..", "_", " ", ":", "=", "\u{0}", "\n", "\r", "\t", "$", "'", "\"",
                              ";", "|", "é", "\u{202E}", "x", "-e", "sh -c", "@", "+", ","]
        var rng = SplitMix64(seed: 0x4859_4452_41)
        var accepted = 0
        for _ in 0..<30_000 {
            let count = 1 + Int(rng.next() % 5)
            var argv = [rng.next() % 8 == 0 ? "/opt/other" : "/opt/tool"]
            for _ in 1..<count {
                let parts = Int(rng.next() % 4)
                argv.append(rng.next() % 6 == 0 ? "-x" : (0..<parts).map { _ in pool[Int(rng.next() % UInt64(pool.count))] }.joined())
            }
            for t in templates where t.matches(argv) {
                accepted += 1
                XCTAssertEqual(argv.count, t.elements.count)
                for (value, pattern) in zip(argv, t.elements) {
                    if CommandTemplate.placeholder(pattern) == nil {
                        XCTAssertEqual(value, pattern)
                    } else {
                        XCTAssertFalse(value.isEmpty || value.hasPrefix("-"), "\(argv) filled \(pattern) with '\(value)'")
                        XCTAssertFalse(value.unicodeScalars.contains { $0.value < 0x20 || $0 == "\u{202E}" }, "\(argv)")
                        if pattern != "{text}" { XCTAssertFalse(value.contains(":") || value.contains(" "), "\(argv)") }
                    }
                }
            }
        }
        XCTAssertGreaterThan(accepted, 100, "the generator must also produce argvs that match")
    }
}

final class CommandIsolationTests: XCTestCase {
    var dir = ""
    var leftovers: [pid_t] = []

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("hydra-iso-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() {
        for p in leftovers { kill(p, SIGKILL) }
        try? FileManager.default.removeItem(atPath: dir)
    }

    func context(_ argv: [String], timeout: Double? = nil, env: [String: String] = [:],
                 cancellation: CancellationFlag = CancellationFlag()) throws -> ExecutionContext {
        var spec: [String: JSONValue] = ["argv": .array(argv.map { .string($0) })]
        if let timeout { spec["timeout_s"] = .number(timeout) }
        if !env.isEmpty { spec["env"] = .object(env.mapValues { .string($0) }) }
        let out = "\(dir)/out-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let e = Envelope(jobID: "job-7", attempt: 2, kind: "command", spec: .object(spec), gpuUUIDs: [], vramBytes: 0, deadline: nil, issuedAt: 0)
        return ExecutionContext(envelope: e, node: "hydra-ai", gpuIndexes: [1], outputDirectory: out, cancellation: cancellation)
    }

    /// A script file that leaves a background child behind and records its pid.
    func script(_ name: String, _ body: String) throws -> String {
        let path = "\(dir)/\(name)"
        try "#!/bin/sh\n\(body)\n".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    /// Polls until `pid` no longer runs (gone, or a zombie nobody reaped yet) or the deadline passes.
    func waitGone(_ pid: pid_t, within seconds: Double = 5) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        repeat {
            if kill(pid, 0) != 0 && errno == ESRCH { return true }
            if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
               let close = stat.lastIndex(of: ")"), stat[stat.index(close, offsetBy: 2)] == "Z" { return true }
            Thread.sleep(forTimeInterval: 0.02)
        } while Date() < deadline
        return false
    }

    func childPid(_ ctx: ExecutionContext) throws -> pid_t {
        let text = try String(contentsOfFile: "\(ctx.outputDirectory)/child.pid", encoding: .utf8)
        let pid = try XCTUnwrap(pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        leftovers.append(pid)
        return pid
    }

    // The background child ignores SIGTERM, so only the group-wide SIGKILL after the grace stops it.
    static let stubbornChild = #"/bin/sh -c 'trap "" TERM; exec sleep 300' &"# + "\necho $! > \"$HYDRA_OUTPUT_DIR/child.pid\""

    func testEnvironmentHoldsOnlyFixedAndAllowlistedNames() throws {
        setenv("HYDRA_TEST_AGENT_SECRET", "from-the-agent", 1)
        setenv("LD_LIBRARY_PATH", "/tmp/evil", 1)
        defer { unsetenv("HYDRA_TEST_AGENT_SECRET"); unsetenv("LD_LIBRARY_PATH") }
        let ex = try CommandExecutor(allowlist: [CommandTemplate(["/usr/bin/env"])], envAllowlist: ["FICTIONAL_MODEL"])
        let ctx = try context(["/usr/bin/env"], env: ["FICTIONAL_MODEL": "glass-orchard"])
        let out = try XCTUnwrap(try ex.execute(ctx).output["stdout"]?.stringValue)
        var vars: [String: String] = [:]
        for line in out.split(separator: "\n") {
            let kv = line.split(separator: "=", maxSplits: 1).map(String.init)
            vars[kv[0]] = kv.count > 1 ? kv[1] : ""
        }
        XCTAssertEqual(Set(vars.keys), ["PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES", "HYDRA_JOB_ID",
                                        "HYDRA_ATTEMPT", "HYDRA_OUTPUT_DIR", "FICTIONAL_MODEL"])
        XCTAssertEqual(vars["HOME"], ctx.outputDirectory)
        XCTAssertEqual(vars["TMPDIR"], ctx.outputDirectory + "/.tmp")
        XCTAssertEqual(vars["CUDA_VISIBLE_DEVICES"], "1")
        XCTAssertEqual(vars["HYDRA_ATTEMPT"], "2")
        XCTAssertEqual(vars["FICTIONAL_MODEL"], "glass-orchard")
        XCTAssertEqual(vars["LC_ALL"], "C.UTF-8")

        for name in ["LD_PRELOAD", "PATH", "OTHER_VAR"] {
            XCTAssertThrowsError(try ex.execute(try context(["/usr/bin/env"], env: [name: "/tmp/x"]))) { e in
                XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .permanent)
                XCTAssertTrue("\(e)".contains("env.\(name)"), "\(e)")
            }
        }
        XCTAssertThrowsError(try CommandExecutor(allowlist: [], envAllowlist: ["LD_PRELOAD"]))
        XCTAssertThrowsError(try CommandExecutor(allowlist: [], envAllowlist: ["HOME"]))
    }

    func testNoDescriptorOfTheAgentReachesTheJob() throws {
        let leaked = open("/dev/null", O_RDONLY)   // no O_CLOEXEC, like a hiredis socket
        defer { close(leaked) }
        XCTAssertGreaterThan(leaked, 2)
        let ex = try CommandExecutor(allowlist: [CommandTemplate(["/bin/sh", "-c", "ls /proc/$$/fd"])])
        XCTAssertEqual(try ex.execute(try context(["/bin/sh", "-c", "ls /proc/$$/fd"])).output["stdout"]?.stringValue, "0\n1\n2\n")
    }

    func testTimeoutKillsTheWholeProcessGroup() throws {
        let prog = try script("stubborn.sh", Self.stubbornChild + "\nexec sleep 300")
        let ex = try CommandExecutor(allowlist: [CommandTemplate([prog])], killGraceSeconds: 0.3)
        let ctx = try context([prog], timeout: 3)   // long enough for the script to record its child on a loaded machine
        let started = Date()
        XCTAssertThrowsError(try ex.execute(ctx)) { XCTAssertEqual(($0 as? ExecutionFailure)?.failureClass, .timeout, "\($0)") }
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertTrue(waitGone(try childPid(ctx)), "the background child survived the timeout")
    }

    func testCancelKillsTheWholeProcessGroup() throws {
        let prog = try script("stubborn.sh", Self.stubbornChild + "\nexec sleep 300")
        let ex = try CommandExecutor(allowlist: [CommandTemplate([prog])], killGraceSeconds: 0.3)
        let flag = CancellationFlag()
        let ctx = try context([prog], cancellation: flag)
        let result = ResultBox()
        Thread { result.set(Result { try ex.execute(ctx) }) }.start()
        let pidFile = "\(ctx.outputDirectory)/child.pid"
        let until = Date().addingTimeInterval(10)
        while (try? String(contentsOfFile: pidFile, encoding: .utf8))?.hasSuffix("\n") != true && Date() < until {
            Thread.sleep(forTimeInterval: 0.02)
        }
        let pid = try childPid(ctx)
        XCTAssertFalse(waitGone(pid, within: 0), "the child runs before the cancel")
        flag.cancel()
        let r = try XCTUnwrap(result.wait(seconds: 10), "execute did not return after cancel")
        XCTAssertThrowsError(try r.get()) { XCTAssertEqual(($0 as? ExecutionFailure)?.message, "cancelled") }
        XCTAssertTrue(waitGone(pid), "the background child survived the cancel")
    }

    func testBackgroundChildrenDieWhenTheJobExits() throws {
        let prog = try script("leaves-child.sh", Self.stubbornChild + "\necho done")
        let ex = try CommandExecutor(allowlist: [CommandTemplate([prog])])
        let ctx = try context([prog], timeout: 60)
        let started = Date()
        let r = try ex.execute(ctx)
        XCTAssertEqual(r.output["stdout"]?.stringValue, "done\n")
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "waited for the background child's pipe")
        XCTAssertTrue(waitGone(try childPid(ctx)), "a background child outlived the job")
    }

    func testLargeOutputDoesNotDeadlock() throws {
        let ex = try CommandExecutor(allowlist: [CommandTemplate(["/usr/bin/head", "-c", "{int}", "/dev/zero"])], outputCapBytes: 1000)
        let r = try ex.execute(try context(["/usr/bin/head", "-c", "5000000", "/dev/zero"], timeout: 30))
        XCTAssertEqual(r.output["stdout_truncated"]?.boolValue, true)
        XCTAssertEqual(r.output["stdout"]?.stringValue?.utf8.count, 1000)
    }

    func testRunsAsTheCommandUserWithoutAccessToTheAgentsSecrets() throws {
        guard geteuid() == 0 else { throw XCTSkip("switching users needs root (CI and the dev container run tests as root)") }
        let user = try CommandUser.lookup("nobody")
        let key = "\(dir)/hmac.key"
        try "fictional-secret".write(toFile: key, atomically: true, encoding: .utf8)
        chmod(key, 0o600)
        let ex = try CommandExecutor(allowlist: [
            CommandTemplate(["/usr/bin/id", "-u"]), CommandTemplate(["/usr/bin/id", "-G"]), CommandTemplate(["/bin/cat", "{path}"]),
            CommandTemplate(["/bin/grep", "^Cap[PEA]", "/proc/self/status"]),
            CommandTemplate(["/bin/sh", "-c", #"kill -0 "$0""#, "{int}"]),
            CommandTemplate(["/bin/sh", "-c", #"echo ok > "$HOME/written" && echo ok > "$TMPDIR/t" && cat "$HOME/written""#]),
        ], user: user)
        func run(_ argv: [String]) throws -> String { try ex.execute(try context(argv)).output["stdout"]?.stringValue ?? "" }
        XCTAssertEqual(try run(["/usr/bin/id", "-u"]), "\(user.uid)\n")
        XCTAssertEqual(user.uid, 65534)
        XCTAssertEqual(try run(["/usr/bin/id", "-G"]), "\(user.gid)\n", "the job user's own groups, none of the agent's")
        XCTAssertEqual(try run(["/bin/grep", "^Cap[PEA]", "/proc/self/status"]),
                       "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapAmb:\t0000000000000000\n")
        XCTAssertEqual(try run(["/bin/sh", "-c", #"echo ok > "$HOME/written" && echo ok > "$TMPDIR/t" && cat "$HOME/written""#]), "ok\n",
                       "the job owns its output directory")
        XCTAssertThrowsError(try run(["/bin/cat", key])) { XCTAssertTrue("\($0)".contains("Permission denied"), "\($0)") }
        XCTAssertThrowsError(try run(["/bin/sh", "-c", #"kill -0 "$0""#, String(getpid())]), "the job may not signal the agent")
    }
}

/// The outcome of a call made on another thread.
final class ResultBox: Sendable {
    private let value = Mutex<Result<ExecutionResult, any Error>?>(nil)
    private let done = DispatchSemaphore(value: 0)
    func set(_ r: Result<ExecutionResult, any Error>) { value.withLock { $0 = r }; done.signal() }
    func wait(seconds: Double) -> Result<ExecutionResult, any Error>? {
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return value.withLock { $0 }
    }
}
