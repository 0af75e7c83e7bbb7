import ArgumentParser
import Foundation
import HydraTestSupport

/// hydra-fake: development servers that speak the APIs in service-apis.md so the
/// executors, the demo and a new user's first batch exercise real HTTP paths.
struct HydraFake: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hydra-fake",
        abstract: "Fake ComfyUI, TabbyAPI/Ollama, GPT-SoVITS and scorer servers for development and tests.",
        discussion: """
        Services: comfyui, openai (TabbyAPI flavour), ollama, tts (GPT-SoVITS api_v2), scorer, all.
        Faults (--fail): oom, 500, hang, malformed, drop, plus node-errors and node-error (comfyui),
        busy and context (openai, ollama), bad-json (LLM prompt expansion), silent (tts), no-face and loading (scorer).
        """)

    @Argument(help: "comfyui | openai | ollama | tts | scorer | all")
    var service: String

    @Option(help: "Port to listen on (single service).")
    var port: Int?

    @Option(name: .customLong("base-port"), help: "With 'all': comfyui on N, openai N+1, ollama N+2, tts N+3, scorer N+4.")
    var basePort: Int = 18188

    @Option(help: "Address to bind (loopback by default).")
    var host: String = "127.0.0.1"

    @Option(name: .customLong("latency-ms"), help: "Added latency: per image (comfyui), time to first token (LLMs), per request (tts, scorer).")
    var latencyMs: Int = 0

    @Option(help: "Fault to inject into every request that can show it.")
    var fail: String?

    @Option(name: .customLong("fail-times"), help: "Inject the fault only into the next N requests.")
    var failTimes: Int?

    @Option(name: .customLong("vram-mib"), help: "VRAM the fake reports holding while loaded/running, in MiB.")
    var vramMiB: UInt64 = 6144

    @Option(name: .customLong("api-key"), help: "Require this key (openai flavour), like TabbyAPI's api_tokens.yml. Prefer HYDRA_FAKE_API_KEY.")
    var apiKey: String?

    @Option(name: .customLong("image-root"), help: "Directory relative image_path values resolve against (scorer).")
    var imageRoot: String = FileManager.default.currentDirectoryPath

    func validate() throws {
        guard ["comfyui", "openai", "ollama", "tts", "scorer", "all"].contains(service) else {
            throw ValidationError("unknown service '\(service)'")
        }
        if service != "all" && port == nil { throw ValidationError("--port is required for \(service)") }
    }

    func run() throws {
        let settings = FakeSettings(latencyMs: latencyMs, vramBytes: vramMiB << 20)
        let faults = FakeFaults(mode: fail, times: failTimes)
        let key = apiKey ?? ProcessInfo.processInfo.environment["HYDRA_FAKE_API_KEY"]
        var lines: [String] = []
        var keep: [any Sendable] = []
        switch service {
        case "comfyui":
            let f = FakeComfyUI(settings: settings, faults: faults); keep.append(f)
            lines.append("comfyui  http://\(host):\(try f.start(host: host, port: port!))")
        case "openai":
            let f = FakeLLM(flavor: .tabby, settings: settings, faults: faults, apiKey: key); keep.append(f)
            lines.append("openai   http://\(host):\(try f.start(host: host, port: port!)) (TabbyAPI flavour\(key == nil ? ", no auth" : ", x-api-key required"))")
        case "ollama":
            let f = FakeLLM(flavor: .ollama, settings: settings, faults: faults); keep.append(f)
            lines.append("ollama   http://\(host):\(try f.start(host: host, port: port!))")
        case "tts":
            let f = FakeTTS(settings: settings, faults: faults); keep.append(f)
            lines.append("tts      http://\(host):\(try f.start(host: host, port: port!))")
        case "scorer":
            let f = FakeScorer(settings: settings, faults: faults, imageRoot: imageRoot); keep.append(f)
            lines.append("scorer   http://\(host):\(try f.start(host: host, port: port!))")
        default:
            let c = FakeCluster(settings: settings, faults: faults, tabbyAPIKey: key, imageRoot: imageRoot); keep.append(c)
            let ports = try c.start(host: host, basePort: basePort)
            for name in ["comfyui", "tabbyapi", "ollama", "tts", "scorer"] {
                lines.append("\(name.padding(toLength: 9, withPad: " ", startingAt: 0))http://\(host):\(ports[name]!)")
            }
        }
        FileHandle.standardOutput.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        if let fail { FileHandle.standardOutput.write(Data(("fault: \(fail)\(failTimes.map { " (next \($0) requests)" } ?? "")" + "\n").utf8)) }
        withExtendedLifetime(keep) {
            while true { Thread.sleep(forTimeInterval: 3600) }
        }
    }
}

HydraFake.main()
