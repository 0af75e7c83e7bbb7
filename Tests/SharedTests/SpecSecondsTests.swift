import XCTest
@testable import HydraCore
@testable import HydraExecutors

/// `duration_s` and `base_runtime_s` cross the batch-file boundary into the router's costs, the
/// dependency tails and the sleep executor. A negative, NaN, endless or non-numeric value is refused
/// with its place at submit, and a row stored before that check reads as the kind's default.
final class SpecSecondsTests: XCTestCase {
    /// YAML spellings of values no seconds field may hold, and what the error shows for each.
    static let bad: [(yaml: String, shown: String)] = [
        ("-1", "got -1.0"), ("-0.5", "got -0.5"), ("1e10", "got 10000000000.0"), ("1e308", "got 1e+308"),
        ("\"nan\"", "got 'nan'"), ("\"inf\"", "got 'inf'"), ("\"-inf\"", "got '-inf'"), ("\"abc\"", "got 'abc'"),
        ("\"\"", "got ''"), ("[1]", "got a list"), ("{a: 1}", "got a map"), ("true", "got true"), ("null", "got null"),
    ]
    static let nonFinite = [".nan", ".NaN", ".inf", "-.inf", "+.inf", ".Inf"]
    static let good: [(yaml: String, value: Double)] = [("0", 0), ("1.5", 1.5), ("600", 600), ("\"600\"", 600), ("1e9", 1e9)]

    func error(_ yaml: String) -> String {
        do { _ = try BatchFile.parse(text: yaml, file: "b.yaml", cluster: nil); return "no error" } catch { return "\(error)" }
    }

    func testEveryBadValueIsRefusedWithItsPlaceInEveryKindAndInAMatrix() {
        for field in BatchFile.secondsFields {
            for kind in ["sleep", "image", "llm", "tts", "score"] {
                for (v, shown) in Self.bad {
                    XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: \(kind), spec: {\(field): \(v)}}\n"),
                                   "b.yaml: jobs[0] 'x'.spec.\(field): expected a number of seconds from 0 to 1000000000, \(shown)",
                                   "\(kind) \(field): \(v)")
                }
                for v in Self.nonFinite {
                    XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: \(kind), spec: {\(field): \(v)}}\n"),
                                   "b.yaml: jobs[0].spec.\(field): is not a finite number (nan or infinity), which JSON cannot hold",
                                   "\(kind) \(field): \(v)")
                }
                for (v, value) in Self.good {
                    let plan = try? BatchFile.parse(text: "name: n\njobs:\n  - {name: x, kind: \(kind), spec: {\(field): \(v)}}\n",
                                                    file: "b.yaml", cluster: nil)
                    XCTAssertEqual(plan?.jobs.first?.spec[field]?.doubleValue, value, "\(kind) \(field): \(v)")
                }
            }
            // A matrix sets the field after the spec was checked: its values are checked too.
            XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: sleep, matrix: {\(field): [1, -2]}}\n"),
                           "b.yaml: jobs[0] 'x'.matrix.\(field): expected a number of seconds from 0 to 1000000000, got -2.0")
        }
    }

    /// Anywhere in the file, a NaN or infinity is refused with its path before anything is written
    /// (the submit used to fail half-way, writing the spec as JSON, with exit 1 and no place).
    func testANonFiniteNumberAnywhereIsRefusedWithItsPath() {
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: image, spec: {prompt: p, params: [1, 2, .nan]}}\n"),
                       "b.yaml: jobs[0].spec.params[2]: is not a finite number (nan or infinity), which JSON cannot hold")
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: image, deadline_s: .inf}\n"),
                       "b.yaml: jobs[0].deadline_s: is not a finite number (nan or infinity), which JSON cannot hold")
        XCTAssertEqual(error("name: n\npriority: .nan\njobs:\n  - {kind: sleep}\n"),
                       "b.yaml: priority: is not a finite number (nan or infinity), which JSON cannot hold")
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: sleep, deadline_s: 1e400}\n"),
                       "b.yaml: jobs[0].deadline_s: is not a finite number (nan or infinity), which JSON cannot hold")
    }

    /// Rows stored before the check (or written by other means) read as if the field were absent:
    /// the demand, the ordering length and the router's decisions are those of the kind's default.
    func testStoredBadSecondsReadAsTheKindsDefault() {
        let snap = ClusterSnapshot.build(config: ClusterConfig(nodes: [NodeConfig(name: "n", gpus: [
            GPUConfig(model: "NVIDIA GeForce RTX 5090", memory: .gib(32), weight: 10),
            GPUConfig(model: "NVIDIA GeForce RTX 3060", memory: .gib(12), weight: 3),
        ], services: ["comfyui"])]), live: ["n": .init(up: true)], running: [])
        let values: [JSONValue] = [.number(.nan), .number(.infinity), .number(-.infinity), .number(-5), .number(1e308),
                                   .string("nan"), .string("-1"), .string("x"), .array([.number(1)]), .null, .bool(true)]
        let others = (0..<6).map { RT.job("other-\($0)", kind: "image", vram: 4, at: Double($0), spec: ["base_runtime_s": .number(Double(100 * ($0 + 1)))]) }
        for field in BatchFile.secondsFields {
            for kind in ["image", "llm", "sleep"] {
                var plain = RT.job("odd", kind: kind, vram: 4, spec: [:])
                plain.tailS = 30
                let expected = Router.place(pending: [plain] + others, snapshot: snap, now: RT.t0)
                for v in values {
                    var odd = plain
                    odd.spec = .object([field: v])
                    XCTAssertEqual(DependencyTails.ownS(kind: kind, spec: odd.spec, cpuOnly: false),
                                   DependencyTails.ownS(kind: kind, spec: plain.spec, cpuOnly: false), "\(kind) \(field) \(v)")
                    let r = Router.place(pending: [odd] + others, snapshot: snap, now: RT.t0)
                    XCTAssertEqual(r.assignments.map(\.jobID), expected.assignments.map(\.jobID), "\(kind) \(field) \(v)")
                    XCTAssertEqual(r.assignments.map(\.gpuUUIDs), expected.assignments.map(\.gpuUUIDs), "\(kind) \(field) \(v)")
                    XCTAssertTrue(r.assignments.allSatisfy { $0.expectedRuntimeS.isFinite && $0.expectedRuntimeS >= 0 })
                }
            }
        }
    }

    /// The sleep executor fails a stored bad duration by name instead of sleeping forever or writing
    /// a NaN into its result; a good one still sleeps.
    func testTheSleepExecutorRefusesAStoredBadDuration() throws {
        for v: JSONValue in [.number(.nan), .number(.infinity), .number(-1), .string("x"), .null] {
            XCTAssertThrowsError(try SleepExecutor().execute(TestEnv.context(.object(["duration_s": v]), kind: "sleep"))) { e in
                XCTAssertEqual((e as? ExecutionFailure)?.failureClass, .permanent, "\(v)")
                XCTAssertTrue("\(e)".contains("duration_s"), "\(e)")
            }
        }
        let r = try SleepExecutor().execute(TestEnv.context(.object(["duration_s": .string("0.01")]), kind: "sleep"))
        XCTAssertEqual(r.output["slept_s"]?.doubleValue, 0.01)
    }

    // MARK: simulator inputs (`hydra simulate --cluster/--workload`)

    func workloadProblem(_ yaml: String, cluster: ClusterConfig) -> String {
        do { _ = try Workload.parse(yaml, file: "w.yaml", cluster: cluster); return "no error" } catch { return "\(error)" }
    }

    func clusterProblem(_ yaml: String) -> String {
        do {
            let c = try ConfigLoader.decode(ClusterConfig.self, from: try ConfigLoader.parseDocument(yaml, file: "c.yaml"), file: "c.yaml")
            try c.validate(file: "c.yaml")
            return "no error"
        } catch { return "\(error)" }
    }

    /// Workload and cluster files: a NaN or infinity anywhere, runtimes and arrivals past
    /// `KindDefaults.maxSeconds`, and GPU weights outside `GPUWeights.range` are refused by place
    /// (a runtime of 1e18 s, or a weight of 1e308, stopped `hydra simulate` with a trap; a NaN
    /// came out as an encoder's error without a place).
    func testSimulatorFilesRefuseNonFiniteAndOutOfRangeNumbersByPlace() throws {
        let cluster = try RT.referenceConfig()
        let cases: [(String, String)] = [
            ("groups: [{name: a, kind: image, base_runtime_s: .nan}]",
             "w.yaml: groups[0].base_runtime_s: is not a finite number (nan or infinity), which JSON cannot hold"),
            ("groups: [{name: a, kind: image, base_runtime_s: 10, jitter: .inf}]",
             "w.yaml: groups[0].jitter: is not a finite number (nan or infinity), which JSON cannot hold"),
            ("groups: [{name: a, kind: image, base_runtime_s: 1e18}]",
             "w.yaml: groups[0].base_runtime_s: must be a positive number of seconds up to 1000000000"),
            ("groups: [{name: a, kind: sleep, duration_s: 2e9}]",
             "w.yaml: groups[0].duration_s: must be a positive number of seconds up to 1000000000"),
            ("groups: [{name: a, kind: image, base_runtime_s: 10, count: 3, every_s: 6e8}]",
             "w.yaml: groups[0].every_s: the last job would arrive after 1000000000 s (submit_at_s + every_s × (count − 1))"),
            ("resident: [{node: hydra-ai, gpu: 0, vram: 1GiB, until_s: 1e300}]\ngroups: [{name: a, kind: sleep, duration_s: 1}]",
             "w.yaml: resident[0].until_s: must be a number of seconds from 0 to 1000000000"),
        ]
        for (yaml, expected) in cases { XCTAssertEqual(workloadProblem(yaml, cluster: cluster), expected, yaml) }
        XCTAssertEqual(workloadProblem("groups: [{name: a, kind: image, base_runtime_s: 1e9, count: 2, every_s: 5e8}]", cluster: cluster), "no error")
        for w in ["1e308", "1e-300", "0.001", "20000", "-1", "0"] {
            XCTAssertEqual(clusterProblem("nodes: [{name: a, gpus: [{model: x, memory: 16GiB, weight: \(w)}]}]"),
                           "c.yaml: nodes[0].gpus[0].weight: weight must be a number from 0.01 to 10000 (RTX 5090 = 10)", w)
        }
        XCTAssertEqual(clusterProblem("nodes: [{name: a, gpus: [{model: x, memory: 16GiB, weight: .nan}]}]"),
                       "c.yaml: nodes[0].gpus[0].weight: is not a finite number (nan or infinity), which JSON cannot hold")
        for w in ["0.01", "10000", "20"] {
            XCTAssertEqual(clusterProblem("nodes: [{name: a, gpus: [{model: x, memory: 16GiB, weight: \(w)}]}]"), "no error", w)
        }
    }

    /// The largest values the files allow, at both ends of the weight range: the bound's max flow
    /// counted thousandths in Int64 and trapped past 9.2e18 units (GPUs of weight 10 000 beside
    /// twelve billion-second jobs on a GPU of weight 0.01). It now takes a coarser unit there, and
    /// the bound still holds.
    func testTheLargestAllowedNumbersKeepTheBoundFiniteAndValid() throws {
        let cluster = try ConfigLoader.decode(ClusterConfig.self, from: try ConfigLoader.parseDocument("""
        nodes:
          - {name: a, services: [comfyui], gpus: [{model: x, memory: 16GiB, weight: 10000}, {model: x2, memory: 16GiB, weight: 10000}]}
          - {name: b, services: [tabbyapi], gpus: [{model: y, memory: 16GiB, weight: 0.01}]}
        """, file: "c.yaml"), file: "c.yaml")
        try cluster.validate(file: "c.yaml")
        let w = try Workload.parse("""
        groups:
          - {name: a, count: 12, kind: llm, service: tabbyapi, vram: 2GiB, base_runtime_s: 1e9}
          - {name: g, count: 2, kind: image, gpus: 2, vram: 2GiB, base_runtime_s: 1e9}
        """, file: "w.yaml", cluster: cluster)
        let r = Simulator(cluster: cluster, workload: w).run(policy: .hydra)
        XCTAssertTrue(r.neverRan.isEmpty)
        XCTAssertTrue(r.lowerBoundS.isFinite && r.makespanS.isFinite)
        // Twelve jobs of 1e11 s on the one GPU that may run them: the bound is that GPU's work.
        XCTAssertEqual(r.lowerBoundS, 12e11, accuracy: 12e11 * 1e-6)
        XCTAssertGreaterThanOrEqual(r.makespanS, r.lowerBoundS * (1 - 1e-9))
    }
}
