import XCTest
@testable import HydraCore

final class BatchFileTests: XCTestCase {
    let cluster = ClusterConfig(nodes: [
        NodeConfig(name: "hydra-ai", gpus: [GPUConfig(model: "RTX 5090", memory: .gib(32)), GPUConfig(model: "RTX 4090", memory: .gib(24))]),
        NodeConfig(name: "hydra-compute", gpus: [GPUConfig(model: "RTX 5070 Ti", memory: .gib(16)), GPUConfig(model: "RTX 3060", memory: .gib(12))],
                   services: ["comfyui", "gpt-sovits"]),
    ])

    func parse(_ yaml: String) throws -> BatchPlan { try BatchFile.parse(text: yaml, file: "b.yaml", cluster: cluster) }

    func error(_ yaml: String) -> String {
        do { _ = try parse(yaml); return "no error" } catch { return "\(error)" }
    }

    func testCountAndMatrixExpansion() throws {
        let plan = try parse("""
        name: n
        priority: 3
        jobs:
          - {name: a, kind: sleep, count: 3, vram: 4GiB, spec: {duration_s: 1}}
          - {name: m, kind: sleep, matrix: {seed: [1, 2], style: [ink, oil, chalk]}, spec: {duration_s: 2}}
        """)
        XCTAssertEqual(plan.jobs.count, 9)
        XCTAssertEqual(plan.jobs.prefix(3).map(\.name), ["a-1", "a-2", "a-3"])
        XCTAssertEqual(plan.jobs[0].gpus, 1, "vram implies one GPU")
        XCTAssertEqual(plan.jobs[0].priority, 3)
        let m = plan.jobs.dropFirst(3)
        XCTAssertEqual(Set(m.map(\.name)).count, 6)
        XCTAssertEqual(m.filter { $0.spec["style"]?.stringValue == "oil" }.count, 2)
        XCTAssertTrue(m.allSatisfy { $0.spec["duration_s"]?.doubleValue == 2 && $0.gpus == 0 && $0.vramBytes == 0 })
    }

    /// Constraints the router would ignore (a misspelt key, a number for a node) or never meet (a
    /// node, GPU or service the cluster lacks) are refused at submit instead of running anywhere or
    /// pending for ever.
    func testConstraintsAreCheckedByTypeAndAgainstTheCluster() throws {
        func job(_ c: String) -> String { "name: c\njobs:\n  - {name: a, kind: sleep, vram: 1GiB, constraints: \(c)}\n" }
        let cases: [(String, String)] = [
            ("{nodes: [hydra-ai]}", "jobs[0] 'a'.constraints.nodes: unknown constraint 'nodes' (known: gpu_index, gpu_model, node, service)"),
            ("{node: 5}", "constraints.node: expected a node name"),
            ("{node: ghost}", "constraints.node: no node 'ghost' in the cluster (nodes: hydra-ai, hydra-compute)"),
            ("{gpu_index: 99}", "constraints.gpu_index: no GPU 99 on any node in the cluster"),
            ("{gpu_index: -1}", "constraints.gpu_index: expected a GPU index"),
            ("{gpu_index: 1.5}", "constraints.gpu_index: expected a GPU index"),
            ("{node: hydra-ai, gpu_model: \"3060\"}", "constraints.gpu_model: no GPU model matching '3060' on hydra-ai in the cluster"),
            ("{gpu_model: 3060}", "constraints.gpu_model: expected (part of) a GPU model name as a string (quote it: \"3060\")"),
            ("{service: warp-drive}", "constraints.service: no node in the cluster runs 'warp-drive'"),
            ("{node: hydra-ai, service: comfyui}", "no node 'hydra-ai' in the cluster runs 'comfyui'"),
            ("{service: [1]}", "constraints.service: expected a service name or a list of them"),
        ]
        for (c, expected) in cases { XCTAssertTrue(error(job(c)).contains(expected), "\(c): \(error(job(c)))") }
        for ok in ["{node: hydra-ai, gpu_index: 1}", "{gpu_model: \"3060\"}", "{service: [warp-drive, ComfyUI]}", "{service: []}", "{}"] {
            XCTAssertNoThrow(try parse(job(ok)), ok)
        }
        // Without the cluster only the types can be checked.
        XCTAssertNoThrow(try BatchFile.parse(text: job("{node: ghost}"), file: "b.yaml", cluster: nil))
        XCTAssertThrowsError(try BatchFile.parse(text: job("{node: 5}"), file: "b.yaml", cluster: nil))
    }

    func testNamesAreShortAndPrintableAndSpecsBounded() throws {
        XCTAssertTrue(error("name: \"night\\e[2J\"\njobs: [{kind: sleep}]").contains("b.yaml: name: contains a control character (U+001B)"))
        XCTAssertTrue(error("name: n\njobs: [{name: \"a\\rb\", kind: sleep}]").contains("jobs[0] 'a\\u{d}b'.name: contains a control character (U+000D)"))
        XCTAssertTrue(error("name: \(String(repeating: "x", count: 201))\njobs: [{kind: sleep}]").contains("is 201 characters long; at most 200"))
        XCTAssertNoThrow(try parse("name: \(String(repeating: "é", count: 200))\njobs: [{kind: sleep}]"))
        let big = String(repeating: "a", count: BatchFile.maxSpecBytes)
        XCTAssertTrue(error("name: n\njobs: [{name: w, kind: sleep, spec: {blob: \(big)}}]").contains("jobs[0] 'w'.spec: is 1.0 MiB of JSON"),
                      error("name: n\njobs: [{name: w, kind: sleep, spec: {blob: \(big)}}]").prefix(200).description)
        XCTAssertNoThrow(try parse("name: n\njobs: [{name: w, kind: sleep, spec: {blob: \(big.dropFirst(100))}}]"))
        XCTAssertEqual(TextTable.printable("ok\u{1b}[2Jx\u{7}"), "ok\\u{1b}[2Jx\\u{7}")
    }

    func testJSONIsAccepted() throws {
        let plan = try parse(#"{"name": "j", "jobs": [{"kind": "command", "spec": {"argv": ["/bin/echo", "x"]}}]}"#)
        XCTAssertEqual(plan.jobs.map(\.kind), ["command"])
        XCTAssertEqual(plan.jobs[0].maxAttempts, 3)
    }

    func testErrorsNameFileJobAndField() {
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: warp}\n"),
                       "b.yaml: jobs[0] 'x'.kind: unknown kind 'warp' (known: sleep, command, image, llm, tts, score)")
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: sleep, vram: 40GiB}\n"),
                       "b.yaml: jobs[0] 'x'.vram: needs 40.0 GiB per GPU but the largest GPU in the cluster has 32.0 GiB")
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: sleep, gpus: 2, vram: 25GiB}\n"),
                       "b.yaml: jobs[0] 'x'.gpus: needs 2 GPUs with 25.0 GiB each on one node; no node has that many")
        XCTAssertEqual(error("jobs:\n  - {kind: sleep}\n"), "b.yaml: name: the batch needs a non-empty 'name'")
        XCTAssertEqual(error("name: n\njobs: []\n"), "b.yaml: jobs: expected a non-empty list of jobs")
        XCTAssertEqual(error("name: n\njobs:\n  - {kind: sleep, count: 0}\n"), "b.yaml: jobs[0].count: 0 is outside 1…200000")
        XCTAssertEqual(error("name: n\njobs:\n  - {kind: sleep, spec: {duration_s: -1}}\n"), "b.yaml: jobs[0].spec.duration_s: expected a number of seconds from 0 to 1000000000, got -1.0")
        XCTAssertEqual(error("name: n\nextra: 1\njobs:\n  - {kind: sleep}\n"),
                       "b.yaml: extra: unknown field 'extra' (known: description, jobs, max_attempts, name, priority)")
        XCTAssertTrue(error("name: [unclosed\n").hasPrefix("b.yaml: not valid YAML or JSON"))
        XCTAssertEqual(error("name: n\njobs:\n  - {kind: sleep, matrix: {seed: 5}}\n"), "b.yaml: jobs[0].matrix.seed: expected a non-empty list")
    }

    func testAbsurdNumbersAreInputErrorsNotTraps() {
        // Found by the fuzzer: a number beyond UInt64 used to trap in the conversion.
        XCTAssertEqual(error("name: n\njobs:\n  - {name: x, kind: sleep, vram: 1e30}\n"),
                       "b.yaml: jobs[0] 'x'.vram: '1e+30' is not a size (use e.g. 8GiB)")
        XCTAssertTrue(error("name: n\njobs:\n  - {name: x, kind: sleep, vram: \"1e30\"}\n").contains("is not a size"))
    }

    func testExpansionIsBounded() {
        XCTAssertTrue(error("name: n\njobs:\n  - {kind: sleep, count: 200000, matrix: {a: [1, 2]}}\n").contains("expands to more than 200000 jobs"))
    }

    func testClusterConfigErrorsNameTheField() throws {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("c-\(UUID()).yaml").path
        try "nodes:\n  - name: a\n    gpus:\n      - {model: X, memory: huge}\n".write(toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterConfig.load(path: f)) { e in
            XCTAssertEqual("\(e)", "\(f): nodes[0].gpus[0].memory: 'huge' is not a size (use e.g. 24GiB, 512MiB or a number of bytes)")
        }
        try "nodes:\n  - name: a\n  - name: a\n".write(toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterConfig.load(path: f)) { e in XCTAssertEqual("\(e)", "\(f): nodes[1].name: node 'a' is listed twice") }
        try "nodes:\n  - gpus: []\n".write(toFile: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ClusterConfig.load(path: f)) { e in XCTAssertEqual("\(e)", "\(f): nodes[0].name: required field 'name' is missing") }
    }

    func testShippedExamplesAreValid() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let c = try ClusterConfig.load(path: root.appendingPathComponent("deploy/cluster.yaml").path)
        XCTAssertEqual(c.nodes.map(\.name), ["hydra-ai", "hydra-compute", "hydra-storage"])
        let plan = try BatchFile.load(path: root.appendingPathComponent("deploy/examples/sample-batch.yaml").path, cluster: c)
        XCTAssertEqual(plan.jobs.count, 60)
    }
}

final class BatchDependencyTests: XCTestCase {
    func parse(_ yaml: String) throws -> BatchPlan { try BatchFile.parse(text: yaml, file: "d.yaml", cluster: nil) }

    func testAfterMakesEveryJobWaitForTheNamedEntries() throws {
        let plan = try parse("""
        name: chain
        jobs:
          - {name: expand, kind: sleep, count: 2}
          - {name: render, kind: sleep, count: 3, after: expand}
          - {name: report, kind: sleep, after: [render, expand]}
        """)
        XCTAssertEqual(plan.jobs.indices.map(plan.dependencies(of:)), [[], [], [0, 1], [0, 1], [0, 1], [2, 3, 4, 0, 1]])
        // Kept per entry: one list per entry, never one job list per job.
        XCTAssertEqual(plan.groups, [JobGroup(name: "expand", jobs: 0..<2), JobGroup(name: "render", jobs: 2..<5, after: [0]),
                                     JobGroup(name: "report", jobs: 5..<6, after: [1, 0])])
        XCTAssertNil(plan.dependencyCycle())
    }

    func testCyclesAndUnknownNamesAreRejected() {
        XCTAssertThrowsError(try parse("""
        name: loop
        jobs:
          - {name: a, kind: sleep, after: b}
          - {name: b, kind: sleep, after: a}
        """)) { e in XCTAssertEqual("\(e)", "d.yaml: jobs: dependency cycle: a → b → a") }
        XCTAssertThrowsError(try parse("name: x\njobs:\n  - {name: a, kind: sleep, after: a}\n")) { e in
            XCTAssertEqual("\(e)", "d.yaml: jobs: dependency cycle: a → a")
        }
        XCTAssertThrowsError(try parse("name: x\njobs:\n  - {name: a, kind: sleep, after: ghost}\n")) { e in
            XCTAssertEqual("\(e)", "d.yaml: jobs[0].after: no job entry named 'ghost' (entries: a)")
        }
        XCTAssertThrowsError(try parse("name: x\njobs:\n  - {name: a, kind: sleep}\n  - {name: a, kind: sleep}\n")) { e in
            XCTAssertEqual("\(e)", "d.yaml: jobs[1].name: two job entries are named 'a'")
        }
    }

    /// The work behind each job, found through one node per entry, is what the job-by-job graph gives,
    /// on random batches of entries after entries (counts 1–5, up to 8 entries, runtimes from the spec).
    func testTailsThroughEntriesEqualTailsOverEveryJobPair() throws {
        var rng = SplitMix64(seed: 77)
        for round in 0..<300 {
            let entries = Int.random(in: 1...8, using: &rng)
            var yaml = "name: r\(round)\njobs:\n"
            for e in 0..<entries {
                let after = (0..<e).filter { _ in Int.random(in: 0..<3, using: &rng) == 0 }.map { "e\($0)" }
                yaml += "  - {name: e\(e), kind: sleep, count: \(Int.random(in: 1...5, using: &rng)), "
                    + "spec: {duration_s: \(Int.random(in: 1...100, using: &rng))}\(after.isEmpty ? "" : ", after: [\(after.joined(separator: ", "))]")}\n"
            }
            let plan = try parse(yaml)
            let own = plan.jobs.map { DependencyTails.ownS(kind: $0.kind, spec: $0.spec, cpuOnly: true) }
            let pairwise = DependencyTails.compute(dependsOn: plan.jobs.indices.map(plan.dependencies(of:)), ownS: own)
            XCTAssertEqual(plan.tails(ownS: own), pairwise, yaml)
            XCTAssertNil(plan.dependencyCycle(), yaml)
        }
    }

    /// A cycle through several entries is found whatever the counts, and named by entry.
    func testACycleThroughSeveralEntriesIsNamedByEntry() {
        XCTAssertThrowsError(try parse("""
        name: loop
        jobs:
          - {name: a, kind: sleep, count: 3, after: c}
          - {name: b, kind: sleep, count: 2, after: a}
          - {name: c, kind: sleep, count: 4, after: [b]}
        """)) { e in XCTAssertEqual("\(e)", "d.yaml: jobs: dependency cycle: a → c → b → a") }
    }
}
