import Foundation
import Synchronization
import HydraCore
import HydraIO

/// Failure injection shared by every fake. `mode` names the fault (see each
/// fake's doc comment); `remaining` limits it to the next N requests that can
/// show it (nil = until cleared). Settable while the fake runs, so one server
/// serves a whole test class.
public final class FakeFaults: Sendable {
    private let state = Mutex<(mode: String?, remaining: Int?)>((nil, nil))
    public init(mode: String? = nil, times: Int? = nil) { state.withLock { $0 = (mode, times) } }

    public func set(_ mode: String?, times: Int? = nil) { state.withLock { $0 = (mode, times) } }
    public var mode: String? { state.withLock { $0.mode } }

    /// The active fault for this request (consumes one of `remaining`).
    public func take() -> String? {
        state.withLock { s in
            guard let m = s.mode else { return nil }
            if let r = s.remaining {
                if r <= 0 { s.mode = nil; return nil }
                s.remaining = r - 1
                if r - 1 == 0 { s.mode = nil }
            }
            return m
        }
    }

    /// Like `take`, but only consumes when the active fault is one of `modes`.
    public func take(ifOneOf modes: Set<String>) -> String? {
        state.withLock { s in
            guard let m = s.mode, modes.contains(m) else { return nil }
            if let r = s.remaining {
                s.remaining = r - 1
                if r - 1 <= 0 { s.mode = nil }
            }
            return m
        }
    }
}

/// Settings every fake takes from `hydra-fake` flags.
public struct FakeSettings: Sendable {
    /// Added to each request (LLM: time to first token; ComfyUI: per image; TTS: per request).
    public var latencyMs: Int
    /// VRAM the fake claims to hold while it has a model loaded / runs a job.
    public var vramBytes: UInt64
    public init(latencyMs: Int = 0, vramBytes: UInt64 = 6 << 30) { self.latencyMs = latencyMs; self.vramBytes = vramBytes }
}

/// Serves one fake's handler on a MiniHTTPServer and lets `hang` faults end when it stops.
public final class FakeHTTPHost: Sendable {
    private let server: Mutex<MiniHTTPServer?> = Mutex(nil)
    private let stopped = Atomic<Bool>(false)
    public init() {}

    public var isStopped: Bool { stopped.load(ordering: .relaxed) }

    @discardableResult
    public func start(host: String, port: Int, handler: @escaping HTTPHandler) throws -> Int {
        // Test tool: workflow and scorer bodies can exceed the 1 MiB default, and chaos runs hold many streams open.
        let s = MiniHTTPServer(host: host, port: port, limits: HTTPServerLimits(maxConnections: 512, maxBodyBytes: 64 << 20), handler: handler)
        let p = try s.start()
        server.withLock { $0 = s }
        return p
    }

    public func stop() {
        stopped.store(true, ordering: .relaxed)
        server.withLock { $0?.stop(); $0 = nil }
    }

    /// Blocks a handler as a hung service would, until the fake stops (or 10 minutes).
    public func hang() {
        let end = Date().addingTimeInterval(600)
        while !isStopped && Date() < end { Thread.sleep(forTimeInterval: 0.02) }
    }

    /// Sleeps `ms` in small slices so a stopping fake does not keep threads around.
    public func pause(ms: Int) {
        let end = Date().addingTimeInterval(Double(ms) / 1000)
        while !isStopped && Date() < end { Thread.sleep(forTimeInterval: min(0.01, max(0, end.timeIntervalSinceNow))) }
    }
}

enum FakeJSON {
    static func encode(_ v: JSONValue) -> String { (try? JSONCoding.encodeString(v)) ?? "null" }
    static func response(_ v: JSONValue, status: Int = 200) -> HTTPResponse { .json(encode(v), status: status) }
    static func parse(_ body: Data) -> JSONValue? { try? JSONDecoder().decode(JSONValue.self, from: body) }

    static func iso8601(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// A stable 64-bit hash (FNV-1a) so fakes answer the same input the same way across runs.
    static func hash(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf29ce484222325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return h
    }
}

extension JSONValue {
    static func int(_ i: Int) -> JSONValue { .number(Double(i)) }
    static func u64(_ i: UInt64) -> JSONValue { .number(Double(i)) }
}
