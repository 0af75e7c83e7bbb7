import Foundation
import XCTest
@testable import HydraCore
@testable import HydraWire

/// `command` jobs go only where the agent's allowlist runs their argv (the red team's finding: an
/// unpinned command job landed on a node that refused it and failed for good, though another node
/// allowed it).
final class CommandPlacementTests: XCTestCase {
    /// Three CPU-job nodes, each with the allowlist given (nil: the node's list is not known).
    func snapshot(_ lists: [String: [String]?], down: Set<String> = []) -> ClusterSnapshot {
        let names = lists.keys.sorted()
        let config = ClusterConfig(nodes: names.map { NodeConfig(name: $0) })
        let live = Dictionary(uniqueKeysWithValues: names.map { n in
            (n, ClusterSnapshot.NodeLive(up: !down.contains(n),
                                         commands: lists[n]!.map { CommandAllowlist($0.map { t in CommandTemplate(CommandTemplate.split(t)) }) }))
        })
        return ClusterSnapshot.build(config: config, live: live, running: [])
    }

    func command(_ id: String, _ argv: [String], constraints: [String: JSONValue]? = nil) -> RouterJob {
        RT.job(id, kind: "command", gpus: 0, spec: ["argv": .array(argv.map { .string($0) })], constraints: constraints)
    }

    func testACommandJobGoesOnlyToANodeWhoseAllowlistRunsIt() {
        let snap = snapshot(["a": ["/usr/bin/rsync -a {path} {path}"], "b": [], "c": ["/bin/echo {text}"]])
        let r = RT.place([command("sync", ["/usr/bin/rsync", "-a", "in", "out"]), command("hello", ["/bin/echo", "hi"]),
                          command("unknown-kind-spec", ["/bin/true"], constraints: nil)], snap)
        XCTAssertEqual(r.assignment(for: "sync")?.node, "a")
        XCTAssertEqual(r.assignment(for: "hello")?.node, "c")
        let p = try? XCTUnwrap(r.reason(for: "unknown-kind-spec"))
        XCTAssertEqual(p?.neverRunnable, true)
        XCTAssertEqual(p?.code, .unschedulable)
        XCTAssertTrue(p?.message.hasPrefix("no node's command allowlist runs /bin/true: ") ?? false, p?.message ?? "")
        XCTAssertTrue(p?.message.contains("b refuses the command ('/bin/true' is not in its command allowlist)") ?? false, p?.message ?? "")
    }

    func testTheReasonNamesTheArgvElementThatFailed() throws {
        let snap = snapshot(["a": ["/bin/echo {text}"]])
        let p = try XCTUnwrap(RT.place([command("opt", ["/bin/echo", "-e"])], snap).reason(for: "opt"))
        XCTAssertTrue(p.neverRunnable)
        XCTAssertTrue(p.message.contains("argv[1] '-e' is not a valid {text}"), p.message)
    }

    func testANodeWhoseListIsNotKnownIsNotTurnedDown() {
        let snap = snapshot(["a": [], "b": nil])
        XCTAssertEqual(RT.place([command("x", ["/opt/tool", "run"])], snap).assignment(for: "x")?.node, "b")
    }

    func testAPinnedCommandJobThatItsNodeRefusesIsNeverRunnable() throws {
        let snap = snapshot(["a": ["/bin/true"], "b": []])
        let p = try XCTUnwrap(RT.place([command("x", ["/bin/true"], constraints: ["node": "b"])], snap).reason(for: "x"))
        XCTAssertTrue(p.neverRunnable)
        XCTAssertTrue(p.message.contains("b refuses the command"), p.message)
    }

    func testADownNodeThatWouldRunItMakesTheJobWaitNotNeverRun() throws {
        let snap = snapshot(["a": ["/bin/true"], "b": []], down: ["a"])
        let p = try XCTUnwrap(RT.place([command("x", ["/bin/true"])], snap).reason(for: "x"))
        XCTAssertFalse(p.neverRunnable, p.message)
        XCTAssertEqual(p.code, .waitingForNode)
    }

    /// What the agent says wins over the cluster file (its `--allow-command` flags add to the file's
    /// list); without a word from the agent the file's list counts; with neither, nothing is known.
    func testTheHeartbeatsListWinsThenTheClusterFilesThenNone() {
        let config = ClusterConfig(nodes: [
            NodeConfig(name: "said", commandAllowlist: [CommandTemplate(["/bin/true"])]),
            NodeConfig(name: "file", commandAllowlist: [CommandTemplate(["/bin/true"])]),
            NodeConfig(name: "none"),
        ])
        let said = CommandAllowlist([CommandTemplate(["/bin/true"]), CommandTemplate(["/usr/bin/id", "-u"])])
        let snap = ClusterSnapshot.build(config: config, live: ["said": .init(up: true, commands: said), "file": .init(up: true)], running: [])
        XCTAssertEqual(snap.nodes.map(\.commands), [said, CommandAllowlist([CommandTemplate(["/bin/true"])]), nil])
    }

    /// Generative: random allowlists (known, empty or unknown) on three nodes and random argvs. A job
    /// is placed exactly when some node up may run it, and only on such a node; the agent's own check
    /// (`CommandAllowlist.check`) is the judge.
    func testPlacementAgreesWithEachNodesOwnCheckOnRandomLists() throws {
        var rng = SystemRandomNumberGenerator()
        let pool = ["/bin/echo {text}", "/bin/echo -n {text}", "/usr/bin/rsync -a {path} {path}", "/bin/sleep {int}",
                    "/usr/bin/true", "/opt/train {name} {int}", "/bin/cat {path}"]
        let words = ["/bin/echo", "/usr/bin/rsync", "/bin/sleep", "/usr/bin/true", "/opt/train", "/bin/cat", "-a", "-n", "-e",
                     "hello world", "12", "-5", "data/x.png", "../etc/passwd", "lora_1", "a:b", "", "\u{0}", "x\ny"]
        var placed = 0, refused = 0
        for round in 0..<1500 {
            var lists: [String: [String]?] = [:]
            for n in ["a", "b", "c"] {
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: lists[n] = .some(nil)
                case 1: lists[n] = []
                default: lists[n] = (0..<Int.random(in: 1...3, using: &rng)).map { _ in pool.randomElement(using: &rng)! }
                }
            }
            let down: Set<String> = Int.random(in: 0..<4, using: &rng) == 0 ? ["b"] : []
            let snap = snapshot(lists, down: down)
            let argv = [words[Int.random(in: 0..<6, using: &rng)]] + (0..<Int.random(in: 0...3, using: &rng)).map { _ in words.randomElement(using: &rng)! }
            let r = RT.place([command("j", argv)], snap)
            func allows(_ n: String) -> Bool {
                guard let l = lists[n]! else { return true }
                if case .success = CommandAllowlist(l.map { CommandTemplate(CommandTemplate.split($0)) }).check(argv) { return true }
                return false
            }
            let candidates = ["a", "b", "c"].filter { !down.contains($0) && allows($0) }
            if let a = r.assignment(for: "j") {
                placed += 1
                XCTAssertTrue(candidates.contains(a.node), "round \(round): \(argv) went to \(a.node) with \(lists)")
            } else {
                refused += 1
                XCTAssertTrue(candidates.isEmpty, "round \(round): \(argv) not placed though \(candidates) allow it (\(r.reason(for: "j")?.message ?? ""))")
                let p = try XCTUnwrap(r.reason(for: "j"))
                // Never runnable exactly when no node, up or down, may run it.
                XCTAssertEqual(p.neverRunnable, !["a", "b", "c"].contains(where: allows), "round \(round): \(p.message)")
            }
        }
        XCTAssertGreaterThan(placed, 100)
        XCTAssertGreaterThan(refused, 100)
    }

    /// A node whose job stream takes no entry: its jobs wait and say why, and another node takes what it can.
    func testAnUndispatchableNodeMakesItsJobsWaitNamingTheStream() throws {
        let config = ClusterConfig(nodes: [NodeConfig(name: "a"), NodeConfig(name: "b")])
        let snap = ClusterSnapshot.build(config: config, live: ["a": .init(up: true, undispatchable: "not_a_stream"), "b": .init(up: true)], running: [])
        let r = RT.place([RT.job("pinned", gpus: 0, constraints: ["node": "a"]), RT.job("free", gpus: 0)], snap)
        XCTAssertEqual(r.assignment(for: "free")?.node, "b")
        let p = try XCTUnwrap(r.reason(for: "pinned"))
        XCTAssertFalse(p.neverRunnable)
        XCTAssertTrue(p.message.contains("a takes no envelopes (its job stream: not_a_stream)"), p.message)
    }

    // MARK: hydra submit

    func plan(_ jobs: [(String, [String], String?)]) -> BatchPlan {
        BatchPlan(name: "b", jobs: jobs.map { name, argv, pin in
            NewJob(name: name, kind: "command", spec: .object(["argv": .array(argv.map { .string($0) })]), vramBytes: 0, gpus: 0,
                   constraints: .object(pin.map { ["node": .string($0)] } ?? [:]))
        })
    }

    func lists(_ l: [String: [String]?]) -> [String: CommandAllowlist?] {
        l.mapValues { $0.map { CommandAllowlist($0.map { CommandTemplate(CommandTemplate.split($0)) }) } }
    }

    func testSubmitRefusesAnArgvNoNodeRunsOnlyWhenEveryNodeHasSaid() throws {
        let known = lists(["a": ["/bin/echo {text}"], "b": ["/usr/bin/id -u"]])
        XCTAssertNil(plan([("ok", ["/bin/echo", "hi"], nil), ("ok2", ["/usr/bin/id", "-u"], nil)]).commandRefusal(lists: known, file: "f.yaml"))
        let e = try XCTUnwrap(plan([("ok", ["/bin/echo", "hi"], nil), ("bad", ["/bin/echo", "-e"], nil)]).commandRefusal(lists: known, file: "f.yaml"))
        XCTAssertEqual(e.location, "job 'bad'.spec.argv")
        XCTAssertTrue(e.problem.hasPrefix("no node's command allowlist runs /bin/echo -e (a: argv matches no allowlisted template: argv[1] '-e'"), e.problem)
        XCTAssertTrue(e.problem.contains("b: '/bin/echo' is not in its command allowlist"), e.problem)
        // Pinned to the node that refuses it, though another runs it.
        XCTAssertNotNil(plan([("pinned", ["/usr/bin/id", "-u"], "a")]).commandRefusal(lists: known, file: "f.yaml"))
        // One node has not said: it may run anything, so nothing is refused.
        XCTAssertNil(plan([("bad", ["/bin/echo", "-e"], nil)]).commandRefusal(lists: lists(["a": ["/bin/echo {text}"], "b": nil]), file: "f.yaml"))
        XCTAssertNil(plan([("bad", ["/bin/echo", "-e"], nil)]).commandRefusal(lists: [:], file: "f.yaml"))
    }

    /// Submit and router agree: with every list known, an argv is refused at submit exactly when the
    /// router would find it never runnable.
    func testSubmitAndRouterAgreeOnRandomLists() {
        var rng = SystemRandomNumberGenerator()
        let pool = ["/bin/echo {text}", "/bin/sleep {int}", "/usr/bin/true", "/bin/cat {path}", "/usr/bin/id -u"]
        let words = ["/bin/echo", "/bin/sleep", "/usr/bin/true", "/bin/cat", "/usr/bin/id", "-u", "-e", "12", "x y", "../a", ""]
        for round in 0..<800 {
            var l: [String: [String]?] = [:]
            for n in ["a", "b", "c"] { l[n] = .some((0..<Int.random(in: 0...2, using: &rng)).map { _ in pool.randomElement(using: &rng)! }) }
            let argv = [words[Int.random(in: 0..<5, using: &rng)]] + (0..<Int.random(in: 0...2, using: &rng)).map { _ in words.randomElement(using: &rng)! }
            let refused = plan([("j", argv, nil)]).commandRefusal(lists: lists(l), file: "f") != nil
            let r = RT.place([command("j", argv)], snapshot(l))
            let never = r.reason(for: "j")?.neverRunnable ?? false
            XCTAssertEqual(refused, never, "round \(round): \(argv) with \(l)")
        }
    }

    // MARK: the heartbeat carries the list

    func testTheHeartbeatCarriesTheAllowlistAndAnOlderAgentsHeartbeatStillReads() throws {
        let hb = HeartbeatMessage(node: "n1", instance: "i", seq: 1, sentAt: 0, state: "ready", version: "t", capacity: 4,
                                  inventory: Inventory(), held: [], commands: [["/bin/echo", "{text}"], ["/usr/bin/true"]])
        let back = try JSONCoding.decode(HeartbeatMessage.self, from: try JSONCoding.encodeString(hb))
        XCTAssertEqual(back.commands, [["/bin/echo", "{text}"], ["/usr/bin/true"]])
        let old = #"{"node":"n1","instance":"i","seq":1,"sent_at":0,"state":"ready","version":"t","capacity":4,"inventory":{"gpus":[],"processes":[]},"held":[]}"#
        XCTAssertNil(try JSONCoding.decode(HeartbeatMessage.self, from: old).commands)
    }

    func testAnAllowlistBeyondItsBoundsIsImplausible() {
        func field(_ commands: [[String]]) -> String? {
            let hb = HeartbeatMessage(node: "n1", instance: "i", seq: 1, sentAt: 0, state: "ready", version: "t", capacity: 4,
                                      inventory: Inventory(), held: [], commands: commands)
            do { try hb.checkPlausible(); return nil } catch { return error.field }
        }
        XCTAssertEqual(field(Array(repeating: ["/bin/true"], count: HeartbeatMessage.maxCommandTemplates + 1)), "commands")
        XCTAssertEqual(field([["/bin/true"], []]), "commands[1]")
        XCTAssertEqual(field([Array(repeating: "{int}", count: HeartbeatMessage.maxCommandElements + 1)]), "commands[0]")
        XCTAssertEqual(field([["/bin/echo", String(repeating: "x", count: HeartbeatMessage.maxCommandElementBytes + 1)]]), "commands[0][1]")
        XCTAssertNil(field(Array(repeating: ["/bin/echo", "{text}"], count: HeartbeatMessage.maxCommandTemplates)))
    }
}
