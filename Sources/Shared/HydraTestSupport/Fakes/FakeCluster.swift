import Foundation

/// The five fakes side by side (`hydra-fake all`): ComfyUI on base, TabbyAPI on
/// base+1, Ollama on base+2, GPT-SoVITS on base+3, scorer on base+4.
public final class FakeCluster: Sendable {
    public let comfyui: FakeComfyUI
    public let tabby: FakeLLM
    public let ollama: FakeLLM
    public let tts: FakeTTS
    public let scorer: FakeScorer

    public init(settings: FakeSettings = FakeSettings(), faults: FakeFaults = FakeFaults(), tabbyAPIKey: String? = nil,
                imageRoot: String = FileManager.default.currentDirectoryPath) {
        comfyui = FakeComfyUI(settings: settings, faults: faults)
        tabby = FakeLLM(flavor: .tabby, settings: FakeSettings(latencyMs: settings.latencyMs, vramBytes: 40 << 30), faults: faults, apiKey: tabbyAPIKey)
        ollama = FakeLLM(flavor: .ollama, settings: settings, faults: faults)
        tts = FakeTTS(settings: FakeSettings(latencyMs: settings.latencyMs, vramBytes: 3 << 30), faults: faults)
        scorer = FakeScorer(settings: FakeSettings(latencyMs: settings.latencyMs, vramBytes: 2 << 30), faults: faults, imageRoot: imageRoot)
    }

    /// Starts all five; with base 0 each gets an ephemeral port. Returns name → port.
    @discardableResult
    public func start(host: String = "127.0.0.1", basePort: Int) throws -> [String: Int] {
        func port(_ i: Int) -> Int { basePort == 0 ? 0 : basePort + i }
        return [
            "comfyui": try comfyui.start(host: host, port: port(0)),
            "tabbyapi": try tabby.start(host: host, port: port(1)),
            "ollama": try ollama.start(host: host, port: port(2)),
            "tts": try tts.start(host: host, port: port(3)),
            "scorer": try scorer.start(host: host, port: port(4)),
        ]
    }

    public func stop() { comfyui.stop(); tabby.stop(); ollama.stop(); tts.stop(); scorer.stop() }

    /// VRAM the fakes hold right now, by service: what a simulated GPU adds to its `used`.
    public var vramUsedBytes: [String: UInt64] {
        ["comfyui": comfyui.vramUsedBytes, "tabbyapi": tabby.vramUsedBytes, "ollama": ollama.vramUsedBytes,
         "tts": tts.vramUsedBytes, "scorer": scorer.vramUsedBytes]
    }
}
