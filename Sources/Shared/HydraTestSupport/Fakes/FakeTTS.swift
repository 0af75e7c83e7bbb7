import Foundation
import Synchronization
import HydraCore
import HydraIO

/// GPT-SoVITS api_v2 stand-in (service-apis.md §3.4): GET and POST /tts with the
/// exact 400 message strings and the GET-without-language 500, a fake filesystem
/// of reference clips, one request at a time, a real 32 kHz mono int16 WAV whose
/// length follows the text, streaming with a zero-length WAV header then raw PCM,
/// `/set_gpt_weights`, `/set_sovits_weights`, `/set_refer_audio`, `/control`.
///
/// Faults: `oom`/`silent` (200 with 1.0 s of silence at 16 kHz, or a cut stream
/// in streaming mode — what the real pipeline does when inference raises),
/// `500`, `hang`, `malformed` (200 audio/wav that is not a WAV), `drop`.
public final class FakeTTS: Sendable {
    public static let sampleRate = 32000
    public static let languages: Set<String> = ["auto", "auto_yue", "en", "zh", "ja", "yue", "ko", "all_zh", "all_ja", "all_yue", "all_ko"]
    public let settings: FakeSettings
    public let faults: FakeFaults
    /// Paths that "exist" on the TTS host (relative to its cwd).
    public let referenceFiles: Set<String>
    public let weightFiles: Set<String>
    private let serial = Mutex<Void>(())
    private let weights = Mutex<(gpt: String, sovits: String)>(("GPT_weights_v2/narrator-e15.ckpt", "SoVITS_weights_v2/narrator_e8_s200.pth"))
    private let busy = Atomic<Int>(0)
    private let peakBusy = Atomic<Int>(0)
    private let host = FakeHTTPHost()

    public init(settings: FakeSettings = FakeSettings(vramBytes: 3 << 30), faults: FakeFaults = FakeFaults(),
                referenceFiles: Set<String> = ["refs/narrator-a.wav", "refs/fictional-07.wav"],
                weightFiles: Set<String> = ["GPT_weights_v2/narrator-e15.ckpt", "SoVITS_weights_v2/narrator_e8_s200.pth",
                                            "GPT_weights_v2/lighthouse-keeper-e10.ckpt", "SoVITS_weights_v2/lighthouse_keeper_e8.pth"]) {
        self.settings = settings; self.faults = faults; self.referenceFiles = referenceFiles; self.weightFiles = weightFiles
    }

    @discardableResult
    public func start(host h: String = "127.0.0.1", port: Int = 0) throws -> Int {
        try host.start(host: h, port: port) { [self] in self.handle($0) }
    }
    public func stop() { host.stop() }
    public var vramUsedBytes: UInt64 { settings.vramBytes }
    public var currentWeights: (gpt: String, sovits: String) { weights.withLock { $0 } }
    /// Requests being synthesised right now (the serialisation test wants at most 1).
    public var inFlight: Int { busy.load(ordering: .relaxed) }
    /// Most syntheses ever running at once (the real server: 1).
    public var peakInFlight: Int { peakBusy.load(ordering: .relaxed) }
    private func enter() { let n = busy.add(1, ordering: .relaxed).newValue; peakBusy.max(n, ordering: .relaxed) }

    private func message(_ status: Int, _ text: String, exception: String? = nil) -> HTTPResponse {
        var o: [String: JSONValue] = ["message": .string(text)]
        if let exception { o["Exception"] = .string(exception) }
        return FakeJSON.response(.object(o), status: status)
    }

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        switch req.path {
        case "/tts": return tts(req)
        case "/set_gpt_weights", "/set_sovits_weights":
            guard req.method == "GET" else { return FakeJSON.response(["detail": "Method Not Allowed"], status: 405) }
            let gpt = req.path == "/set_gpt_weights"
            guard let path = req.query["weights_path"], !path.isEmpty else { return message(400, gpt ? "gpt weight path is required" : "sovits weight path is required") }
            guard weightFiles.contains(path) else {
                return message(400, gpt ? "change gpt weight failed" : "change sovits weight failed", exception: "[Errno 2] No such file or directory: '\(path)'")
            }
            serial.withLock { _ in weights.withLock { w in if gpt { w.gpt = path } else { w.sovits = path } } }
            return message(200, "success")
        case "/set_refer_audio":
            guard let p = req.query["refer_audio_path"], referenceFiles.contains(p) else { return message(400, "set refer audio failed", exception: "not exists") }
            return message(200, "success")
        case "/control":
            guard req.method == "GET" else { return FakeJSON.response(["detail": "Method Not Allowed"], status: 405) }
            guard req.query["command"] != nil else { return message(400, "command is required") }
            return .drop
        default:
            return FakeJSON.response(["detail": "Not Found"], status: 404)
        }
    }

    private func tts(_ req: HTTPRequest) -> HTTPResponse {
        var p: [String: JSONValue] = [:]
        if req.method == "POST" {
            guard let o = FakeJSON.parse(req.body)?.objectValue else {
                return FakeJSON.response(["detail": [["type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"]]], status: 422)
            }
            p = o
        } else if req.method == "GET" {
            for (k, v) in req.query { p[k] = .string(v) }
            // api_v2 calls .lower() on these before validating: None → AttributeError → 500.
            if p["text_lang"] == nil || p["prompt_lang"] == nil { return .text("Internal Server Error", status: 500) }
        } else {
            return FakeJSON.response(["detail": "Method Not Allowed"], status: 405)
        }
        let str = { (k: String) -> String? in p[k]?.stringValue ?? p[k]?.doubleValue.map { d in Int(exactly: d).map(String.init) ?? String(d) } }
        guard let ref = str("ref_audio_path"), !ref.isEmpty else { return message(400, "ref_audio_path is required") }
        guard let text = str("text"), !text.isEmpty else { return message(400, "text is required") }
        guard let lang = str("text_lang")?.lowercased(), !lang.isEmpty else { return message(400, "text_lang is required") }
        guard Self.languages.contains(lang) else { return message(400, "text_lang: \(lang) is not supported in version v2") }
        guard let plang = str("prompt_lang")?.lowercased(), !plang.isEmpty else { return message(400, "prompt_lang is required") }
        guard Self.languages.contains(plang) else { return message(400, "prompt_lang: \(plang) is not supported in version v2") }
        let media = str("media_type") ?? "wav"
        guard ["wav", "raw", "ogg", "aac"].contains(media) else { return message(400, "media_type: \(media) is not supported") }
        let split = str("text_split_method") ?? "cut5"
        guard (0...5).map({ "cut\($0)" }).contains(split) else { return message(400, "text_split_method:\(split) is not supported") }
        var streaming = 0
        switch p["streaming_mode"] {
        case nil: streaming = 0
        case .bool(let b)?: streaming = b ? 1 : 0
        case .number(let d)? where [0, 1, 2, 3].contains(d): streaming = Int(d)
        case .string(let s)? where ["0", "1", "2", "3", "true", "false"].contains(s.lowercased()):
            streaming = s.lowercased() == "true" ? 1 : s.lowercased() == "false" ? 0 : Int(s)!
        default: return message(400, "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)")
        }
        guard referenceFiles.contains(ref) else { return message(400, "tts failed", exception: "\(ref) not exists") }

        let fault = faults.take()
        switch fault {
        case "500": return .text("Internal Server Error", status: 500)
        case "hang": host.hang(); return .drop
        case "drop" where streaming == 0: return .drop
        default: break
        }
        let contentType = "audio/\(media)"
        let frames = min(Self.sampleRate * 10, max(Self.sampleRate / 4, text.count * Self.sampleRate / 20))
        let seed = FakeJSON.hash(text)
        let pcm = (0..<frames).map { i -> Int16 in
            let f = 180 + Double(seed % 200)
            return Int16(8000 * sin(2 * Double.pi * f * Double(i) / Double(Self.sampleRate)))
        }
        if streaming == 0 {
            // One synthesis at a time: the real handler blocks uvicorn's event loop.
            return serial.withLock { _ -> HTTPResponse in
                enter()
                defer { busy.subtract(1, ordering: .relaxed) }
                host.pause(ms: settings.latencyMs)
                if fault == "oom" || fault == "silent" {
                    return .full(status: 200, headers: ["Content-Type": contentType], body: WAVFile.mono16(sampleRate: 16000, samples: [Int16](repeating: 0, count: 16000)))
                }
                if fault == "malformed" { return .full(status: 200, headers: ["Content-Type": contentType], body: Data("RIFX-not-audio".utf8)) }
                let body = media == "raw" ? WAVFile.pcm16(pcm) : WAVFile.mono16(sampleRate: Self.sampleRate, samples: pcm)
                return .full(status: 200, headers: ["Content-Type": contentType], body: body)
            }
        }
        return .stream(status: 200, headers: ["Content-Type": contentType]) { [self] w in
            serial.withLock { _ in
                enter()
                defer { busy.subtract(1, ordering: .relaxed) }
                if media == "wav" { w.write(WAVFile.header(sampleRate: Self.sampleRate, dataLength: 0)) }
                let chunk = max(1, pcm.count / 4)
                for (i, start) in stride(from: 0, to: pcm.count, by: chunk).enumerated() {
                    host.pause(ms: settings.latencyMs / 4)
                    if i == 1 && (fault == "oom" || fault == "silent" || fault == "drop") { w.abort(); return }
                    w.write(WAVFile.pcm16(Array(pcm[start..<min(pcm.count, start + chunk)])))
                }
            }
        }
    }
}
