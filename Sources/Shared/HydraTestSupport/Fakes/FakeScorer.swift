import Foundation
import Synchronization
import HydraCore
import HydraIO

/// The scoring service Hydra proposes in service-apis.md §4.2: POST /score,
/// GET /health. Scores are derived from the image bytes' SHA-256 so the same
/// image always scores the same; `overrides` (keyed by that hex digest) pins
/// exact values for tests.
///
/// Faults: `busy`/`loading` (503 + Retry-After), `oom` (500 cuda_oom), `no-face`
/// (face_similarity null, status no_face_in_image), `500`, `hang`, `malformed`, `drop`, `not-a-number`
/// (200 with `"aesthetic": "n/a"`, as a scorer with a broken model head might answer).
public final class FakeScorer: Sendable {
    public struct Scores: Sendable { public var aesthetic: Double; public var musiq: Double; public var face: Double?
        public init(aesthetic: Double, musiq: Double, face: Double?) { self.aesthetic = aesthetic; self.musiq = musiq; self.face = face } }

    public let settings: FakeSettings
    public let faults: FakeFaults
    /// Relative `image_path`s resolve against this directory (the scorer host's cwd).
    public let imageRoot: String
    private let overrides = Mutex<[String: Scores]>([:])
    private let host = FakeHTTPHost()

    public init(settings: FakeSettings = FakeSettings(vramBytes: 2 << 30), faults: FakeFaults = FakeFaults(), imageRoot: String = FileManager.default.currentDirectoryPath) {
        self.settings = settings; self.faults = faults; self.imageRoot = imageRoot
    }

    @discardableResult
    public func start(host h: String = "127.0.0.1", port: Int = 0) throws -> Int {
        try host.start(host: h, port: port) { [self] in self.handle($0) }
    }
    public func stop() { host.stop() }
    public var vramUsedBytes: UInt64 { settings.vramBytes }
    public func override(sha256: String, _ s: Scores) { overrides.withLock { $0[sha256] = s } }

    private func error(_ status: Int, _ code: String, _ message: String, headers: [String: String] = [:]) -> HTTPResponse {
        var h = headers
        h["Content-Type"] = "application/json"
        return .full(status: status, headers: h, body: Data(FakeJSON.encode(["error": ["code": .string(code), "message": .string(message)]]).utf8))
    }

    public func handle(_ req: HTTPRequest) -> HTTPResponse {
        switch (req.method, req.path) {
        case ("GET", "/health"):
            return FakeJSON.response(["status": "ok", "models_loaded": ["aesthetic", "musiq", "face"], "device": "cuda:0",
                                      "vram_bytes": .u64(settings.vramBytes)])
        case ("POST", "/score"): return score(req)
        default: return error(404, "not_found", "no route \(req.method) \(req.path)")
        }
    }

    private func score(_ req: HTTPRequest) -> HTTPResponse {
        let started = Date()
        guard let body = FakeJSON.parse(req.body)?.objectValue else { return error(400, "bad_request", "body is not a JSON object") }
        let path = body["image_path"]?.stringValue
        let b64 = body["image_b64"]?.stringValue
        guard (path == nil) != (b64 == nil) else { return error(400, "bad_request", "exactly one of image_path and image_b64 is required") }
        let metrics = Set(body["metrics"]?.arrayValue?.compactMap(\.stringValue) ?? ["aesthetic", "musiq", "face_similarity"])
        let unknown = metrics.subtracting(["aesthetic", "musiq", "face_similarity"])
        guard unknown.isEmpty else { return error(400, "bad_request", "unknown metric \(unknown.sorted()[0])") }
        let bytes: Data
        if let path {
            let full = path.hasPrefix("/") ? path : (imageRoot as NSString).appendingPathComponent(path)
            guard let d = FileManager.default.contents(atPath: full) else { return error(404, "not_found", "\(path) does not exist") }
            bytes = d
        } else {
            guard let d = Data(base64Encoded: b64!) else { return error(400, "bad_image", "image_b64 is not base64") }
            bytes = d
        }
        let isPNG = bytes.starts(with: [0x89, 0x50, 0x4E, 0x47])
        let isJPEG = bytes.starts(with: [0xFF, 0xD8, 0xFF])
        guard isPNG || isJPEG else { return error(400, "bad_image", "cannot decode image (not PNG or JPEG)") }
        var refBytes: Data?
        if let ref = body["reference_face_path"]?.stringValue {
            let full = ref.hasPrefix("/") ? ref : (imageRoot as NSString).appendingPathComponent(ref)
            guard let d = FileManager.default.contents(atPath: full) else { return error(404, "not_found", "\(ref) does not exist") }
            refBytes = d
        }
        let hasRefEmbedding = body["reference_embedding"]?.arrayValue?.count == 512

        let fault = faults.take()
        switch fault {
        case "busy", "loading": return error(503, fault!, fault == "busy" ? "scorer is busy" : "models are loading", headers: ["Retry-After": "1"])
        case "oom": return error(500, "cuda_oom", "CUDA out of memory. Tried to allocate 256.00 MiB")
        case "500": return error(500, "internal", "unexpected scorer failure")
        case "hang": host.hang(); return .drop
        case "malformed": return .json("{\"aesthetic\": 6.", status: 200)
        case "not-a-number": return .json("{\"aesthetic\": \"n/a\", \"musiq\": 61.5, \"face_similarity\": null}", status: 200)
        case "drop": return .drop
        default: break
        }
        Thread.sleep(forTimeInterval: Double(settings.latencyMs) / 1000)

        let digest = SHA256Digest.hex(bytes)
        let hb = Array(digest.utf8)
        func unit(_ i: Int) -> Double { Double(Int(String(decoding: hb[i..<i + 4], as: UTF8.self), radix: 16)!) / 65535 }
        var s = Scores(aesthetic: 4 + 4 * unit(0), musiq: 40 + 50 * unit(4), face: -0.1 + 0.9 * unit(8))
        if let o = overrides.withLock({ $0[digest] }) { s = o }
        var out: [String: JSONValue] = [
            "models": ["aesthetic": "laion-aes-v2-vitl14", "musiq": "musiq-koniq", "face": "buffalo_l"],
        ]
        out["aesthetic"] = metrics.contains("aesthetic") ? .number((s.aesthetic * 100).rounded() / 100) : .null
        out["musiq"] = metrics.contains("musiq") ? .number((s.musiq * 10).rounded() / 10) : .null
        let wantFace = metrics.contains("face_similarity") && (refBytes != nil || hasRefEmbedding)
        if !wantFace {
            out["face_similarity"] = .null
            out["face"] = ["status": "not_requested"]
        } else if fault == "no-face" || s.face == nil {
            out["face_similarity"] = .null
            out["face"] = ["status": "no_face_in_image", "faces_in_image": 0]
        } else {
            out["face_similarity"] = .number((s.face! * 100).rounded() / 100)
            out["face"] = ["status": "ok", "faces_in_image": 1, "det_score": 0.86]
        }
        out["elapsed_ms"] = .int(Int(Date().timeIntervalSince(started) * 1000))
        return FakeJSON.response(.object(out))
    }
}
