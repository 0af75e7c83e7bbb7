import XCTest
import Foundation
@testable import HydraCore
@testable import HydraIO
@testable import HydraStore
@testable import HydraPipeline
@testable import HydraTestSupport

/// The unload/load calls over loopback HTTP against the fakes of TabbyAPI, Ollama and ComfyUI.
final class ResidentControlTests: XCTestCase {
    let control = ResidentControl(connectTimeoutS: 2, loadTimeoutS: 10)
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("resident-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func keyFile(_ key: String) throws -> String {
        let p = dir.appendingPathComponent("admin.key").path
        try (key + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func tabby(port: Int, key: String?, model: String? = "atlas-70b-exl2-fictional") -> ResidentService {
        ResidentService(node: "hydra-ai", service: "tabbyapi", model: model, gpus: [.init(gpu: 0, vram: 24 * ByteSize.GiB)],
                        url: "http://127.0.0.1:\(port)/", adminKeyFile: key)
    }

    func testTabbyUnloadAndLoadWithTheAdminKey() throws {
        let fake = FakeLLM(flavor: .tabby, settings: FakeSettings(latencyMs: 4), apiKey: "sk-fictional-api", adminKey: "sk-fictional-admin")
        let port = try fake.start()
        defer { fake.stop() }
        XCTAssertGreaterThan(fake.vramUsedBytes, 0, "Tabby starts with its model loaded")
        let r = tabby(port: port, key: try keyFile("sk-fictional-admin"))
        XCTAssertEqual(try control.unload(r), "TabbyAPI unloaded its model")
        XCTAssertEqual(fake.vramUsedBytes, 0)
        XCTAssertEqual(try control.load(r), "TabbyAPI loaded atlas-70b-exl2-fictional")
        XCTAssertGreaterThan(fake.vramUsedBytes, 0)
    }

    func testTabbyErrorsSayWhatIsWrong() throws {
        let faults = FakeFaults()
        let fake = FakeLLM(flavor: .tabby, faults: faults, apiKey: "sk-fictional-api", adminKey: "sk-fictional-admin")
        let port = try fake.start()
        defer { fake.stop() }
        // The API key is not the admin key.
        let wrong = tabby(port: port, key: try keyFile("sk-fictional-api"))
        XCTAssertThrowsError(try control.unload(wrong)) { e in
            let d = "\(e)"
            XCTAssertTrue(d.contains("unload tabbyapi@hydra-ai") && d.contains("HTTP 401") && d.contains("Invalid admin key") && d.contains("admin_key_file"), d)
        }
        XCTAssertGreaterThan(fake.vramUsedBytes, 0, "a refused unload leaves the model loaded")
        // No key at all.
        XCTAssertThrowsError(try control.unload(tabby(port: port, key: nil))) { XCTAssertTrue("\($0)".contains("Please provide an admin key"), "\($0)") }
        // A missing key file.
        XCTAssertThrowsError(try control.unload(tabby(port: port, key: dir.appendingPathComponent("nope.key").path))) {
            XCTAssertTrue("\($0)".contains("cannot read the admin key file"), "\($0)")
        }
        let good = try keyFile("sk-fictional-admin")
        // A model the server does not have.
        XCTAssertThrowsError(try control.load(tabby(port: port, key: good, model: "no-such-model"))) {
            XCTAssertTrue("\($0)".contains("Could not find the model path"), "\($0)")
        }
        // Out of memory while loading: the SSE error event.
        faults.set("oom", times: 1)
        XCTAssertThrowsError(try control.load(tabby(port: port, key: good))) {
            XCTAssertTrue("\($0)".contains("could not load") && "\($0)".contains("CUDA out of memory"), "\($0)")
        }
        // Nothing listens.
        fake.stop()
        XCTAssertThrowsError(try control.unload(tabby(port: port, key: good))) { XCTAssertTrue("\($0)".contains("127.0.0.1:\(port)"), "\($0)") }
    }

    func testOllamaKeepAliveZeroUnloadsAndMinusOneLoads() throws {
        let fake = FakeLLM(flavor: .ollama)
        let port = try fake.start()
        defer { fake.stop() }
        let r = ResidentService(node: "hydra-compute", service: "ollama", model: "atlas-chat:8b", gpus: [.init(gpu: 0, vram: 6 * ByteSize.GiB)],
                                url: "http://127.0.0.1:\(port)")
        XCTAssertEqual(try control.load(r), "Ollama loaded atlas-chat:8b")
        XCTAssertGreaterThan(fake.vramUsedBytes, 0)
        XCTAssertEqual(try control.unload(r), "Ollama unloaded atlas-chat:8b")
        XCTAssertEqual(fake.vramUsedBytes, 0)
        var missing = r; missing.model = "not-pulled:1b"
        XCTAssertThrowsError(try control.unload(missing)) { XCTAssertTrue("\($0)".contains("HTTP 404") && "\($0)".contains("pulled"), "\($0)") }
    }

    func testComfyFree() throws {
        let fake = FakeComfyUI()
        let port = try fake.start()
        defer { fake.stop() }
        let r = ResidentService(node: "hydra-ai", service: "comfyui", gpus: [.init(gpu: 1, vram: 6 * ByteSize.GiB)], url: "http://127.0.0.1:\(port)")
        XCTAssertEqual(try control.unload(r), "ComfyUI freed its models and cached memory")
        XCTAssertEqual(try control.load(r), "ComfyUI loads its checkpoints with the next job")
        var noURL = r; noURL.url = nil
        XCTAssertThrowsError(try control.unload(noURL)) { XCTAssertTrue("\($0)".contains("no `url`"), "\($0)") }
    }

    func testProbeSaysWhetherTheModelIsLoaded() throws {
        let tabbyFake = FakeLLM(flavor: .tabby, apiKey: "sk-fictional-api", adminKey: "sk-fictional-admin")
        let ollamaFake = FakeLLM(flavor: .ollama)
        let comfyFake = FakeComfyUI()
        let tp = try tabbyFake.start(), op = try ollamaFake.start(), cp = try comfyFake.start()
        defer { tabbyFake.stop(); ollamaFake.stop(); comfyFake.stop() }
        let t = tabby(port: tp, key: try keyFile("sk-fictional-admin"))
        XCTAssertEqual(control.isLoaded(t), true)
        XCTAssertEqual(control.isLoaded(tabby(port: tp, key: t.adminKeyFile, model: "another-model")), false, "another model is not ours")
        XCTAssertNil(control.isLoaded(tabby(port: tp, key: nil)), "401: cannot say")
        tabbyFake.unload()
        XCTAssertEqual(control.isLoaded(t), false, "503 No models are currently loaded")
        let o = ResidentService(node: "hydra-compute", service: "ollama", model: "atlas-chat:8b", gpus: [.init(gpu: 0, vram: ByteSize.GiB)],
                                url: "http://127.0.0.1:\(op)")
        XCTAssertEqual(control.isLoaded(o), false)
        _ = try control.load(o)
        XCTAssertEqual(control.isLoaded(o), true)
        XCTAssertNil(control.isLoaded(ResidentService(node: "hydra-ai", service: "comfyui", gpus: [.init(gpu: 1, vram: ByteSize.GiB)],
                                                      url: "http://127.0.0.1:\(cp)")))
        tabbyFake.stop()
        XCTAssertNil(control.isLoaded(t), "down: cannot say")
    }

    func testKeeperFindsItUnloadedAtTheStartAndLoadsItForAJob() throws {
        let fake = FakeLLM(flavor: .tabby)
        let port = try fake.start()
        defer { fake.stop() }
        fake.unload()   // a crashed night left it unloaded
        let r = tabby(port: port, key: nil)
        let plan = ResidentPlan.derive(stages: [StageWindow(name: "expand", startS: 0, endS: 60, jobs: 2, service: "tabbyapi", model: nil)], residents: [r])
        let k = ResidentKeeper(residents: [r], releases: plan, control: control)
        XCTAssertEqual(k.probe(), [r.name])
        XCTAssertEqual(k.restoreAll(elapsedS: 0), [], "not unloaded by this night: the end does not load it")
        XCTAssertEqual(k.tick(stagesOpen: ["expand"], activeNeeds: [("tabbyapi", nil)], elapsedS: 1).map(\.action), ["load"])
        XCTAssertGreaterThan(fake.vramUsedBytes, 0)
    }

    // MARK: the keeper: decision + call + retry, with the real client against the fake

    func testKeeperUnloadsAfterExpansionAndLoadsBackForALateJob() throws {
        let fake = FakeLLM(flavor: .tabby, apiKey: "sk-fictional-api", adminKey: "sk-fictional-admin")
        let port = try fake.start()
        defer { fake.stop() }
        let r = tabby(port: port, key: try keyFile("sk-fictional-admin"))
        let plan = ResidentPlan.derive(stages: [StageWindow(name: "expand", startS: 0, endS: 900, jobs: 5, service: "tabbyapi", model: nil)], residents: [r])
        let k = ResidentKeeper(residents: [r], releases: plan, control: control, retryAfterS: 60)
        XCTAssertEqual(k.tick(stagesOpen: ["expand", "image"], activeNeeds: [("tabbyapi", nil)], elapsedS: 100), [])
        XCTAssertGreaterThan(fake.vramUsedBytes, 0)
        let e = k.tick(stagesOpen: ["image"], activeNeeds: [("comfyui", nil)], elapsedS: 700)
        XCTAssertEqual(e.map(\.action), ["unload"])
        XCTAssertTrue(e[0].detail.contains("expand done"), e[0].detail)
        XCTAssertEqual(fake.vramUsedBytes, 0)
        XCTAssertEqual(k.loaded, [])
        XCTAssertEqual(k.tick(stagesOpen: ["image"], activeNeeds: [], elapsedS: 800), [])
        XCTAssertEqual(k.tick(stagesOpen: [], activeNeeds: [("tabbyapi", nil)], elapsedS: 900).map(\.action), ["load"])
        XCTAssertGreaterThan(fake.vramUsedBytes, 0)
        // Down: the unload fails, is recorded, and is not retried within retryAfterS.
        fake.stop()
        XCTAssertEqual(k.tick(stagesOpen: [], activeNeeds: [], elapsedS: 1_000).map(\.action), ["unload_failed"])
        XCTAssertEqual(k.tick(stagesOpen: [], activeNeeds: [], elapsedS: 1_030), [])
        XCTAssertEqual(k.tick(stagesOpen: [], activeNeeds: [], elapsedS: 1_061).map(\.action), ["unload_failed"])
        XCTAssertEqual(k.loaded, [r.name])
    }

    func testKeeperRestoresWhatItUnloadedAtTheEnd() throws {
        final class Recorder: ResidentControlling, @unchecked Sendable {
            var calls: [String] = []
            func unload(_ r: ResidentService) throws -> String { calls.append("unload \(r.name)"); return "ok" }
            func load(_ r: ResidentService) throws -> String { calls.append("load \(r.name)"); return "ok" }
        }
        let rec = Recorder()
        let a = ResidentService(node: "hydra-ai", service: "tabbyapi", gpus: [.init(gpu: 0, vram: ByteSize.GiB)])
        let b = ResidentService(node: "hydra-ai", service: "comfyui", gpus: [.init(gpu: 1, vram: ByteSize.GiB)])
        let plan = ResidentPlan.derive(stages: [StageWindow(name: "image", startS: 0, endS: 10, jobs: 1, service: "comfyui", model: nil)], residents: [a, b])
        let k = ResidentKeeper(residents: [a, b], releases: plan, control: rec)
        k.tick(stagesOpen: ["image"], activeNeeds: [], elapsedS: 1)
        XCTAssertEqual(rec.calls, ["unload tabbyapi@hydra-ai"], "nothing calls tabbyapi; ComfyUI's stage is open")
        XCTAssertEqual(k.restoreAll(elapsedS: 2).map(\.action), ["load"])
        XCTAssertEqual(rec.calls, ["unload tabbyapi@hydra-ai", "load tabbyapi@hydra-ai"])
        XCTAssertEqual(k.restoreAll(elapsedS: 3), [])
    }

    // MARK: config and the dry run's lines

    func testResidentsConfig() throws {
        let text = """
        queue: q.yaml
        assets_dir: /a
        reports_dir: /r
        residents:
          - {service: tabbyapi, node: hydra-ai, model: atlas-70b, gpus: [{gpu: 0, vram: 24GiB}, {gpu: 1, vram: 12GiB}],
             url: "http://hydra-ai:5000", admin_key_file: tabby-admin.key}
          - {service: comfyui, node: hydra-ai, gpus: [{gpu: 1, vram: 6GiB}], unload: never}
        """
        let c = try PipelineConfig.parse(text: text, file: "/etc/hydra/pipeline.yaml")
        XCTAssertEqual(c.residents.count, 2)
        XCTAssertEqual(c.residents[0].name, "tabbyapi@hydra-ai")
        XCTAssertEqual(c.residents[0].gpus, [.init(gpu: 0, vram: 24 * ByteSize.GiB), .init(gpu: 1, vram: 12 * ByteSize.GiB)])
        XCTAssertEqual(c.residents[0].adminKeyFile, "/etc/hydra/tabby-admin.key")
        XCTAssertFalse(c.residents[1].releasable)
        let bad: [(String, String)] = [
            ("[{service: vllm, node: a, gpus: [{gpu: 0, vram: 1GiB}]}]", "residents[0].service"),
            ("[{service: ollama, node: a, gpus: [{gpu: 0, vram: 1GiB}]}]", "residents[0].model"),
            ("[{service: comfyui, node: a, gpus: []}]", "residents[0].gpus"),
            ("[{service: comfyui, node: a, gpus: [{gpu: 0}]}]", "residents[0].gpus[0].vram"),
            ("[{service: comfyui, node: a, gpus: [{gpu: 0, vram: 1GiB}], url: hydra-ai:8188}]", "residents[0].url"),
            ("[{service: comfyui, node: a, gpus: [{gpu: 0, vram: 1GiB}], unload: sometimes}]", "residents[0].unload"),
        ]
        for (residents, location) in bad {
            XCTAssertThrowsError(try PipelineConfig.parse(text: "queue: q\nassets_dir: /a\nreports_dir: /r\nresidents: \(residents)\n", file: "p.yaml")) {
                XCTAssertTrue("\($0)".contains(location), "\($0) should name \(location)")
            }
        }
    }
}
