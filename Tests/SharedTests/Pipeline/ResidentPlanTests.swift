import XCTest
import Foundation
@testable import HydraCore
@testable import HydraIO
@testable import HydraStore
@testable import HydraPipeline
@testable import HydraTestSupport

final class ResidentPlanTests: XCTestCase {
    static let GiB = ByteSize.GiB
    let llm = ResidentService(node: "hydra-ai", service: "tabbyapi", model: "llama-3.3-70b",
                              gpus: [.init(gpu: 0, vram: 24 * GiB), .init(gpu: 1, vram: 12 * GiB)])

    func stage(_ name: String, _ start: Double, _ end: Double, service: String?, model: String? = nil, jobs: Int = 10) -> StageWindow {
        StageWindow(name: name, startS: start, endS: end, jobs: jobs, service: service, model: model)
    }

    // MARK: derive

    func testLLMIsNeededUntilTheLastExpansionEnds() {
        let stages = [stage("expand", 0, 3_600, service: "tabbyapi", model: "llama-3.3-70b"),
                      stage("image", 10, 7_000, service: "comfyui", model: "sdxl"),
                      stage("expand-late", 100, 4_200, service: "tabbyapi")]
        let r = ResidentPlan.derive(stages: stages, residents: [llm])
        XCTAssertEqual(r.count, 1)
        XCTAssertEqual(r[0].resident, "tabbyapi@hydra-ai")
        XCTAssertEqual(r[0].untilS, 4_200, "the later of the two stages that call tabbyapi")
        XCTAssertEqual(r[0].neededBy, ["expand", "expand-late"])
        XCTAssertTrue(r[0].reason.contains("expand-late"), r[0].reason)
    }

    func testOtherModelOnTheSameServiceDoesNotHoldIt() {
        let stages = [stage("expand", 0, 600, service: "tabbyapi", model: "llama-3.3-70b"),
                      stage("chat", 0, 9_000, service: "tabbyapi", model: "other-8b")]
        XCTAssertEqual(ResidentPlan.derive(stages: stages, residents: [llm])[0].untilS, 600)
    }

    func testNoStageCallsItUnloadsAtOnceAndNeverMeansKept() {
        let stages = [stage("image", 0, 7_000, service: "comfyui")]
        var kept = llm; kept.releasable = false
        let comfy = ResidentService(node: "hydra-ai", service: "comfyui", gpus: [.init(gpu: 1, vram: 6 * Self.GiB)])
        let r = ResidentPlan.derive(stages: stages + [stage("expand", 0, 50, service: "tabbyapi", jobs: 0)], residents: [llm, kept, comfy])
        XCTAssertEqual(r[0].untilS, 0, "an empty stage needs nothing")
        XCTAssertNil(r[1].untilS)
        XCTAssertEqual(r[2].untilS, 7_000)
    }

    // MARK: decide

    func testDecideUnloadsOnlyWhenItsStagesAreDoneAndNoJobCallsIt() {
        let plan = ResidentPlan.derive(stages: [stage("expand", 0, 3_600, service: "tabbyapi", model: "llama-3.3-70b")], residents: [llm])
        let name = llm.name
        // Stage still open: keep, even past the forecast.
        XCTAssertEqual(ResidentPlan.decide(residents: [llm], releases: plan, loaded: [name], stagesOpen: ["expand"],
                                           activeNeeds: [], elapsedS: 5_000), [])
        // Stage done but a chat job on the same model waits: keep.
        XCTAssertEqual(ResidentPlan.decide(residents: [llm], releases: plan, loaded: [name], stagesOpen: [],
                                           activeNeeds: [("tabbyapi", nil)], elapsedS: 5_000), [])
        // A job on another service does not hold it.
        let a = ResidentPlan.decide(residents: [llm], releases: plan, loaded: [name], stagesOpen: [],
                                    activeNeeds: [("comfyui", "sdxl")], elapsedS: 3_000)
        guard case .unload(let who, let why)? = a.first, a.count == 1 else { return XCTFail("\(a)") }
        XCTAssertEqual(who, name)
        XCTAssertTrue(why.contains("10m00s before the forecast"), why)
        // Unloaded and a job calls it again: load it back; nothing calls it: nothing.
        XCTAssertEqual(ResidentPlan.decide(residents: [llm], releases: plan, loaded: [], stagesOpen: [],
                                           activeNeeds: [("tabbyapi", "llama-3.3-70b")], elapsedS: 6_000).count, 1)
        if case .load? = ResidentPlan.decide(residents: [llm], releases: plan, loaded: [], stagesOpen: [],
                                             activeNeeds: [("tabbyapi", "llama-3.3-70b")], elapsedS: 6_000).first {} else { XCTFail("expected a load") }
        XCTAssertEqual(ResidentPlan.decide(residents: [llm], releases: plan, loaded: [], stagesOpen: [], activeNeeds: [], elapsedS: 6_000), [])
        // unload: never.
        var kept = llm; kept.releasable = false
        XCTAssertEqual(ResidentPlan.decide(residents: [kept], releases: ResidentPlan.derive(stages: [], residents: [kept]), loaded: [name],
                                           stagesOpen: [], activeNeeds: [], elapsedS: 9_000), [])
    }

    // MARK: the nightly cycle on the reference cluster with ComfyUI on hydra-ai

    static func comfyOnAI() throws -> ClusterConfig {
        var c = try RT.referenceConfig()
        let i = try XCTUnwrap(c.nodes.firstIndex { $0.name == "hydra-ai" })
        c.nodes[i].services.append("comfyui")
        return c
    }

    /// nightly.yaml with its 70B resident taken out (the plan supplies it).
    static func nightly(cluster: ClusterConfig) throws -> Workload {
        let path = RouterSimulatorTests.repoRoot.appendingPathComponent("deploy/workloads/nightly.yaml").path
        var w = try Workload.load(path: path, cluster: cluster)
        w.resident.removeAll { $0.model == "llama-3.3-70b" }
        return w
    }

    func testNightlyWithTheUnloadBeatsKeepingTheLLM() throws {
        let cluster = try Self.comfyOnAI()
        let w = try Self.nightly(cluster: cluster)
        let f = ResidentPlan.forecast(cluster: cluster, workload: w, residents: [llm])
        let expand = try XCTUnwrap(f.stages.first { $0.name == "expand" })
        let until = try XCTUnwrap(f.releases[0].untilS)
        print(String(format: "nightly, ComfyUI on hydra-ai: LLM kept %.0f s (bound %.0f s), unloaded at %.0f s: %.0f s (bound %.0f s)",
                     f.kept.makespanS, f.kept.lowerBoundS, until, f.report.makespanS, f.report.lowerBoundS))
        XCTAssertTrue(f.report.neverRan.isEmpty, "\(f.report.neverRan.prefix(3))")
        XCTAssertTrue(f.kept.neverRan.isEmpty)
        XCTAssertLessThanOrEqual(expand.endS, until + 1e-6, "no expansion runs after the LLM is gone")
        XCTAssertGreaterThan(until, 0)
        XCTAssertLessThan(until, f.report.makespanS)
        XCTAssertLessThan(f.report.makespanS, 0.95 * f.kept.makespanS, "unloading the 70B after expansion must shorten the night")
        XCTAssertGreaterThanOrEqual(f.report.makespanS, f.report.lowerBoundS - 1e-6)
    }
}
