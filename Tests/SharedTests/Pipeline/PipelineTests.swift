import Foundation
import XCTest
@testable import HydraCore
@testable import HydraStore
@testable import HydraPipeline

final class QualityGateTests: XCTestCase {
    let t = GateThresholds()   // 6.5 / 70 / 0.7

    func testEachGateOnBothSidesOfItsThreshold() {
        let pass = ImageScores(aesthetic: 6.5, musiq: 70, faceSimilarity: 0.7, faceStatus: "ok")
        XCTAssertTrue(QualityGate.evaluate(pass, t, hasReference: true).passed, "exactly at the threshold passes")
        XCTAssertEqual(QualityGate.evaluate(ImageScores(aesthetic: 6.49, musiq: 70, faceSimilarity: 0.7), t, hasReference: true).failed, [.aesthetic])
        XCTAssertEqual(QualityGate.evaluate(ImageScores(aesthetic: 6.5, musiq: 69.9, faceSimilarity: 0.7), t, hasReference: true).failed, [.technical])
        XCTAssertEqual(QualityGate.evaluate(ImageScores(aesthetic: 6.5, musiq: 70, faceSimilarity: 0.69), t, hasReference: true).failed, [.faceSimilarity])
        XCTAssertEqual(QualityGate.evaluate(ImageScores(aesthetic: 1, musiq: 1, faceSimilarity: 0.1), t, hasReference: true).failed,
                       [.aesthetic, .technical, .faceSimilarity])
    }

    func testFaceGateOnlyWithAReferenceAndNoFacePolicy() {
        let noFace = ImageScores(aesthetic: 7, musiq: 80, faceSimilarity: nil, faceStatus: "no_face_in_image")
        XCTAssertTrue(QualityGate.evaluate(ImageScores(aesthetic: 7, musiq: 80, faceSimilarity: 0.1), t, hasReference: false).passed)
        XCTAssertEqual(QualityGate.evaluate(noFace, t, hasReference: true).failed, [.faceSimilarity])
        XCTAssertTrue(QualityGate.evaluate(noFace, t, hasReference: true).reasons[0].contains("no_face_in_image"))
        var lenient = t; lenient.passWithoutFace = true
        XCTAssertTrue(QualityGate.evaluate(noFace, lenient, hasReference: true).passed)
    }

    func testDisabledGatesAndMissingScores() {
        let off = GateThresholds(aesthetic: nil, technical: nil, faceSimilarity: nil)
        XCTAssertTrue(QualityGate.evaluate(ImageScores(aesthetic: nil, musiq: nil, faceSimilarity: nil), off, hasReference: true).passed)
        XCTAssertEqual(QualityGate.evaluate(ImageScores(aesthetic: nil, musiq: 90, faceSimilarity: nil), t, hasReference: false).failed, [.aesthetic])
    }

    func testRejectionsCountTheGatesThatAloneRejected() {
        let v = [GateVerdict(failed: [.aesthetic], reasons: []), GateVerdict(failed: [.aesthetic, .technical], reasons: []),
                 GateVerdict(failed: [], reasons: []), GateVerdict(failed: [.faceSimilarity], reasons: [])]
        let r = QualityGate.rejections(v)
        XCTAssertEqual(r[.aesthetic]!.any, 2); XCTAssertEqual(r[.aesthetic]!.alone, 1)
        XCTAssertEqual(r[.technical]!.any, 1); XCTAssertEqual(r[.technical]!.alone, 0)
        XCTAssertEqual(r[.faceSimilarity]!.alone, 1)
    }
}

final class DenylistTests: XCTestCase {
    let d = Denylist.parse("# comment\ngore\n  Captain Orvel Dunmere  # a fictional name\n\nASH\n")

    func testWholeWordsIgnoringCaseAccentsAndPunctuation() {
        XCTAssertEqual(d.entries, ["gore", "Captain Orvel Dunmere", "ASH"])
        XCTAssertEqual(d.match("a portrait of captain orvel-dunmere at sea"), "Captain Orvel Dunmere")
        XCTAssertEqual(d.match("CAPTAIN ÓRVEL DUNMERE"), "Captain Orvel Dunmere")
        XCTAssertEqual(d.match("ash grey sky"), "ASH")
        XCTAssertNil(d.match("a flash of gorgeous light"), "substrings of other words do not match")
        XCTAssertNil(d.match("captain orvel"), "a partial name does not match")
    }

    func testCheckNamesWhereTheMatchWas() {
        XCTAssertNil(d.check([("a", "quiet harbor")]))
        XCTAssertEqual(d.check([("a", "quiet harbor"), ("LLM variation 2", "gore everywhere")]), "denylisted term 'gore' in LLM variation 2")
    }
}

final class NightPlannerTests: XCTestCase {
    let cols = [
        ImageCollection(name: "low", target: 8, priority: 1, style: "ink", ideas: ["a kite"]),
        ImageCollection(name: "high", target: 10, priority: 9, style: "oil", ideas: ["a lantern", "a harbor"]),
        ImageCollection(name: "done", target: 4, priority: 5, style: "pencil"),
    ]

    func testPriorityOrderBudgetAndWhatIsAlreadyHeld() {
        let p = NightPlanner.plan(collections: cols, progress: ["high": CollectionProgress(approved: 2, inFlight: 1, tasksSoFar: 3),
                                                               "done": CollectionProgress(approved: 4)],
                                  variations: 4, budget: 10, denylist: .empty)
        // high: 10 − 2 − 1 = 7 missing → 2 tasks (4 + 3 images); budget left 3 < 4 → nothing for low.
        XCTAssertEqual(p.runnable.map(\.collection), ["high", "high"])
        XCTAssertEqual(p.runnable.map(\.images), [4, 3])
        XCTAssertEqual(p.runnable.map(\.seq), [3, 4], "task numbers continue across nights")
        XCTAssertEqual(p.runnable[0].prompt, "a harbor, oil", "ideas are taken in turn, with the style notes")
        XCTAssertTrue(p.notes.contains { $0.hasPrefix("done: nothing to plan") })
        XCTAssertTrue(p.notes.contains { $0.hasPrefix("low: 0 task(s)") && $0.contains("image budget") })
        XCTAssertEqual(p.images, 7)
    }

    func testDenylistBlocksCollectionsAndSingleIdeas() {
        let cols = [ImageCollection(name: "gore-museum", target: 4, style: "x"),
                    ImageCollection(name: "sailors", target: 4, style: "ink", ideas: ["Captain Orvel Dunmere waving", "a calm sailor"])]
        let p = NightPlanner.plan(collections: cols, progress: [:], variations: 2, budget: 100,
                                  denylist: Denylist(entries: ["gore", "Captain Orvel Dunmere"]))
        let blocked = p.tasks.filter { $0.blockedReason != nil }
        XCTAssertEqual(blocked.map(\.collection), ["gore-museum", "sailors"])
        XCTAssertTrue(blocked[0].blockedReason!.contains("collection name"))
        XCTAssertTrue(blocked[1].blockedReason!.contains("Captain Orvel Dunmere"))
        XCTAssertEqual(p.runnable.map(\.prompt), ["a calm sailor, ink", "a calm sailor, ink"], "the blocked idea is skipped, the target still met")
    }

    func testSeedsAreStableAndNightsAndDeadlinesFollowTheLocalClock() {
        XCTAssertEqual(NightPlanner.seed(collection: "a", seq: 1, variation: 2), NightPlanner.seed(collection: "a", seq: 1, variation: 2))
        XCTAssertNotEqual(NightPlanner.seed(collection: "a", seq: 1, variation: 2), NightPlanner.seed(collection: "a", seq: 1, variation: 3))
        let utc = TimeZone(identifier: "UTC")!
        let twoAM = ISO8601DateFormatter().date(from: "2031-03-02T02:00:00Z")!
        XCTAssertEqual(NightClock.night(at: twoAM, timeZone: utc), "2031-03-01")
        XCTAssertEqual(NightClock.parseUntil("06:00", now: twoAM, timeZone: utc), ISO8601DateFormatter().date(from: "2031-03-02T06:00:00Z"))
        XCTAssertEqual(NightClock.parseUntil("01:30", now: twoAM, timeZone: utc), ISO8601DateFormatter().date(from: "2031-03-03T01:30:00Z"))
        XCTAssertNil(NightClock.parseUntil("25:00", now: twoAM, timeZone: utc))
    }
}

final class NightMachineTests: XCTestCase {
    let gates = GateThresholds()

    func testExpansionThenImagesThenScoresThenGate() {
        let t = TaskRecord(id: "t", night: "n", collection: "c", seq: 0, prompt: "p", images: 2, phase: .expanding, expandJob: "e")
        let jobs = ["e": JobView(state: .succeeded, output: ["variations": ["one", "two"]])]
        XCTAssertEqual(NightMachine.step(tasks: [t], images: [], jobs: jobs, submitting: true, denylist: .empty, gates: gates, withReference: []),
                       [.startImages(task: "t", variations: ["one", "two"])])
        XCTAssertEqual(NightMachine.step(tasks: [t], images: [], jobs: jobs, submitting: false, denylist: .empty, gates: gates, withReference: []), [],
                       "nothing new after the deadline")
        var g = t; g.phase = .generating
        let im = ImageRecord(id: "i", taskID: "t", collection: "c", variation: 0, phase: .generating, imageJob: "j")
        let done = ["j": JobView(state: .succeeded, output: ["files": [["path": "/out/x.png"]]])]
        XCTAssertEqual(NightMachine.step(tasks: [g], images: [im], jobs: done, submitting: true, denylist: .empty, gates: gates, withReference: []),
                       [.submitScore(image: "i", path: "/out/x.png")])
        var s = im; s.phase = .scoring; s.scoreJob = "s"
        let scored = ["s": JobView(state: .succeeded, output: ["aesthetic": 7.0, "musiq": 50.0])]
        let a = NightMachine.step(tasks: [], images: [s], jobs: scored, submitting: true, denylist: .empty, gates: gates, withReference: [])
        guard case .gate(_, _, let verdict) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(verdict.failed, [.technical])
        var approved = im; approved.phase = .approved
        var rejected = im; rejected.phase = .rejected; rejected.id = "i2"
        XCTAssertEqual(NightMachine.step(tasks: [g], images: [approved, rejected], jobs: [:], submitting: true, denylist: .empty, gates: gates,
                                         withReference: []), [.finishTask(task: "t")])
    }

    func testDenylistedExpansionBlocksTheTaskAndFailuresAreClassified() {
        let t = TaskRecord(id: "t", night: "n", collection: "c", seq: 4, prompt: "p", images: 2, phase: .expanding, expandJob: "e")
        let jobs = ["e": JobView(state: .succeeded, output: ["variations": ["calm", "Captain Orvel Dunmere on deck"]])]
        let a = NightMachine.step(tasks: [t], images: [], jobs: jobs, submitting: true, denylist: Denylist(entries: ["captain orvel dunmere"]),
                                  gates: gates, withReference: [])
        guard case .blockTask(_, let reason, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertTrue(reason.contains("LLM variation 2 of task c#4"), reason)
        let im = ImageRecord(id: "i", taskID: "t", collection: "c", variation: 0, phase: .generating, imageJob: "j")
        XCTAssertEqual(NightMachine.step(tasks: [], images: [im], jobs: ["j": JobView(state: .dead, failureClass: "oom", error: "CUDA")],
                                         submitting: true, denylist: .empty, gates: gates, withReference: []),
                       [.failImage(image: "i", stage: "image", failureClass: "oom", reason: "image dead (oom): CUDA")])
    }

    func testDeadlineCarriesOnlyJobsThatHaveNotStarted() {
        let t = TaskRecord(id: "t", night: "n", collection: "c", seq: 0, prompt: "p", images: 2, phase: .expanding, expandJob: "e")
        let a = ImageRecord(id: "a", taskID: "x", collection: "c", variation: 0, phase: .generating, imageJob: "ja")
        let b = ImageRecord(id: "b", taskID: "x", collection: "c", variation: 1, phase: .scoring, scoreJob: "jb")
        let jobs = ["e": JobView(state: .pending), "ja": JobView(state: .running), "jb": JobView(state: .retryWait)]
        XCTAssertEqual(NightMachine.jobsToCarry(tasks: [t], images: [a, b], jobs: jobs), ["e", "jb"])
        var c = a; c.phase = .carried; c.imageJob = nil
        var d = b; d.phase = .carried; d.scoreJob = nil; d.sourcePath = "/out/b.png"
        XCTAssertEqual(NightMachine.step(tasks: [], images: [c, d], jobs: [:], submitting: true, denylist: .empty, gates: gates, withReference: []),
                       [.submitImage(image: "a"), .submitScore(image: "b", path: "/out/b.png")], "a carried image resumes where it stopped")
    }
}

final class PipelineConfigTests: XCTestCase {
    func testErrorsNameTheFileAndTheField() {
        XCTAssertThrowsError(try PipelineConfig.parse(text: "queue: q.yaml\nassets_dir: a\nreports_dir: r\ngates: {aesthetic: high}", file: "p.yaml")) {
            XCTAssertEqual("\($0)", "p.yaml: gates.aesthetic: expected a number, {min: N}, or off")
        }
        XCTAssertThrowsError(try PipelineConfig.parse(text: "assets_dir: a\nreports_dir: r", file: "p.yaml")) {
            XCTAssertEqual("\($0)", "p.yaml: queue: required field 'queue' is missing")
        }
        XCTAssertThrowsError(try GenerationQueue.parse(text: "collections: [{name: Bad Name, target: 3, style: x}]", file: "q.yaml")) {
            XCTAssertTrue("\($0)".hasPrefix("q.yaml: collections[0].name: 'Bad Name' must be lower case"), "\($0)")
        }
    }

    func testDefaultsAndRelativePaths() throws {
        let c = try PipelineConfig.parse(text: "queue: q.yaml\nassets_dir: a\nreports_dir: /r\nrejects: delete\ngates: {face_similarity: off}\nnight: {end: '05:30'}",
                                         file: "/etc/hydra/pipeline.yaml")
        XCTAssertEqual(c.queueFile, "/etc/hydra/q.yaml")
        XCTAssertEqual(c.reportsDir, "/r")
        XCTAssertEqual(c.rejects, .delete(quarantine: "/etc/hydra/a/.quarantine"))
        XCTAssertEqual(c.gates, GateThresholds(aesthetic: 6.5, technical: 70, faceSimilarity: nil))
        XCTAssertEqual(c.window.endMinute, 5 * 60 + 30)
        XCTAssertTrue(c.approvals.needsApproval("train_lora"))
        XCTAssertTrue(c.approvals.needsApproval("delete_assets"))
        XCTAssertFalse(c.approvals.needsApproval("generate"))
    }

    func testShippedExampleParses() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let c = try PipelineConfig.load(path: root.appendingPathComponent("deploy/pipeline/pipeline.yaml").path)
        XCTAssertEqual(try GenerationQueue.load(path: c.queueFile).count, 3)
        XCTAssertEqual(try Denylist.load(path: c.denylistFile!).entries.count, 2)
        XCTAssertEqual(c.residents.map(\.name), ["tabbyapi@hydra-ai"])
        XCTAssertNil(c.residents[0].url, "the shipped example forecasts only")
    }

    /// The shipped night on the reference cluster with ComfyUI on hydra-ai: the 70B unloads when
    /// expansion ends, and the forecast with the unload is shorter than keeping it; the dry run's lines say so.
    func testShippedNightForecastWithTheResidentPlan() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let c = try PipelineConfig.load(path: root.appendingPathComponent("deploy/pipeline/pipeline.yaml").path)
        let cluster = try ClusterConfig.load(path: root.appendingPathComponent("deploy/cluster-comfyui-on-ai.yaml").path)
        let plan = PipelineRunner.plan(collections: try GenerationQueue.load(path: c.queueFile), progress: [:], config: c,
                                       denylist: try Denylist.load(path: c.denylistFile!))
        let n = try XCTUnwrap(try PipelineForecast.night(tasks: plan.tasks, config: c, cluster: cluster))
        let p = try XCTUnwrap(n.residents)
        let expand = try XCTUnwrap(n.stages.first { $0.name == "expand" })
        XCTAssertEqual(p.releases[0].untilS, expand.endS)
        XCTAssertLessThan(p.report.makespanS, 0.9 * p.kept.makespanS)
        let start = ISO8601DateFormatter().date(from: "2031-03-01T22:00:00Z")!
        let utc = TimeZone(identifier: "UTC")!
        let lines = PipelineForecast.render(n, start: start, deadline: start.addingTimeInterval(8 * 3600), residents: c.residents, timeZone: utc)
        let text = lines.joined(separator: "\n")
        XCTAssertTrue(lines.contains { $0.hasPrefix("  expand ") && $0.contains("+0s (22:00)") }, text)
        XCTAssertTrue(text.contains("tabbyapi@hydra-ai llama-3.3-70b-exl2 (GPU 0 24.0 GiB + GPU 1 12.0 GiB): unload at +\(ResidentPlan.clock(expand.endS))"), text)
        XCTAssertTrue(text.contains("total: \(ResidentPlan.clock(p.report.makespanS)) with the unloads, \(ResidentPlan.clock(p.kept.makespanS)) keeping"), text)
        XCTAssertTrue(text.contains("deadline 06:00 (in 8h00m): the forecast ends"), text)
        let late = PipelineForecast.render(n, start: start, deadline: start.addingTimeInterval(60), residents: c.residents, timeZone: utc)
        XCTAssertTrue(late.contains { $0.hasPrefix("warning: the forecast ends after the deadline 22:01") }, late.joined(separator: "\n"))
    }
}

final class OvernightReportTests: XCTestCase {
    func facts(stopped: Bool = false) -> NightFacts {
        func o(_ c: String, _ s: String, _ a: Double, _ m: Double, _ gates: [Gate]) -> ImageOutcomeRow {
            ImageOutcomeRow(collection: c, state: s, scores: ImageScores(aesthetic: a, musiq: m, faceSimilarity: nil), failedGates: gates,
                            reason: nil, failureClass: nil, assetPath: nil, disposition: nil)
        }
        let t0 = ISO8601DateFormatter().date(from: "2031-03-01T22:00:00Z")!
        return NightFacts(
            night: "2031-03-01", startedAt: t0, endedAt: t0.addingTimeInterval(3600), deadline: t0.addingTimeInterval(8 * 3600),
            stoppedAtDeadline: stopped, thresholds: GateThresholds(),
            collections: [.init(name: "kites", target: 10, approvedTotal: 1), .init(name: "boats", target: 1, approvedTotal: 1)],
            withReference: [],
            outcomes: [o("kites", "approved", 7, 80, []), o("kites", "rejected", 5, 80, [.aesthetic]), o("kites", "rejected", 5, 50, [.aesthetic, .technical]),
                       o("kites", "rejected", 4, 90, [.aesthetic]), o("boats", "approved", 8, 75, []),
                       ImageOutcomeRow(collection: "boats", state: "failed", scores: ImageScores(aesthetic: nil, musiq: nil, faceSimilarity: nil),
                                       failedGates: [], reason: "image: out of memory", failureClass: "oom", assetPath: nil, disposition: nil)],
            blocked: [TaskRecord(id: "b", night: "n", collection: "kites", seq: 3, prompt: "", images: 2, phase: .blocked, reason: "denylisted term 'gore'")],
            failedTasks: [], failures: [.init(stage: "image", failureClass: "oom", message: "out of memory")],
            gpuTime: [.init(node: "hydra-compute", gpu: "0 RTX 5070 Ti", seconds: 300, jobs: 5)],
            allGPUs: [("hydra-compute", "0 RTX 5070 Ti"), ("hydra-ai", "0 RTX 5090")],
            forecast: .init(makespanS: 400, jobs: 12, images: 6, lowerBoundS: 390), actualMakespanS: 360, actualJobs: 13, carriedImages: stopped ? 4 : 0,
            pendingApprovals: [("abc", "train_lora kites")], rejectsPolicy: "quarantined")
    }

    func testReportSections() {
        let r = OvernightReport.render(facts(), timeZone: TimeZone(identifier: "UTC")!)
        XCTAssertTrue(r.hasPrefix("# Overnight report 2031-03-01\n"))
        XCTAssertTrue(r.contains("| images generated and scored | 5 |"))
        XCTAssertTrue(r.contains("| pass rate | 40 % |"))
        XCTAssertTrue(r.contains("| kites | 4 | 1 | 3 | 0 | 25 % | 1 | 10 | 9 |"), r)
        XCTAssertTrue(r.contains("| aesthetic | ≥ 6.5 | 3 | 2 |"), r)
        XCTAssertTrue(r.contains("| technical | ≥ 70 | 1 | 0 |"), r)
        XCTAssertTrue(r.contains("| image / oom | 1 | out of memory |"), r)
        XCTAssertTrue(r.contains("- blocked: kites#3: denylisted term 'gore'"))
        XCTAssertTrue(r.contains("| makespan | 6 min (lower bound 6 min) | 6 min |"), r)
        XCTAssertTrue(r.contains("kites is 9 image(s) short"), r)
        XCTAssertTrue(r.contains("The aesthetic gate rejected 3 of 5 images"), r)
        XCTAssertTrue(r.contains("Idle all night: hydra-ai GPU 0 RTX 5090"), r)
        XCTAssertTrue(r.contains("`hydra approve abc`"))
        XCTAssertTrue(r.contains("finished before the deadline"))
        XCTAssertTrue(OvernightReport.render(facts(stopped: true), timeZone: TimeZone(identifier: "UTC")!).contains("**stopped at the deadline**, 4 image(s) carried"))
    }

    func testReportListsResidentUnloadsAndLoads() {
        var f = facts()
        XCTAssertFalse(OvernightReport.render(f, timeZone: TimeZone(identifier: "UTC")!).contains("Resident services:"))
        let t = ISO8601DateFormatter().date(from: "2031-03-01T22:31:00Z")!
        f.residentEvents = [(t, "tabbyapi@hydra-ai", "unload", "TabbyAPI unloaded its model: expand done"),
                            (t.addingTimeInterval(7 * 3600), "tabbyapi@hydra-ai", "load_failed", "connection refused | retry")]
        let r = OvernightReport.render(f, timeZone: TimeZone(identifier: "UTC")!)
        XCTAssertTrue(r.contains("Resident services:\n\n- 2031-03-01 22:31 `tabbyapi@hydra-ai` unload: TabbyAPI unloaded its model: expand done\n"), r)
        XCTAssertTrue(r.contains("- 2031-03-02 05:31 `tabbyapi@hydra-ai` load failed: connection refused \\| retry"), r)
    }

    func testHistogramMarksTheThreshold() {
        let h = OvernightReport.histogram("aesthetic", [6.6, 6.7, 2.0], lower: 1, upper: 10, bins: 9, threshold: 6.5)
        XCTAssertEqual(h[0], "aesthetic (n=3)")
        XCTAssertEqual(h.count, 10)
        XCTAssertTrue(h[6].contains("############################## 2  <- threshold 6.5"), h[6])
        XCTAssertTrue(h[2].hasSuffix("############### 1"), h[2])
    }
}
