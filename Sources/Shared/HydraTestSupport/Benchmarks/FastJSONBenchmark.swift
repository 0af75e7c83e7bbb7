import Foundation
import HydraCore
import HydraWire

/// ns/op of Foundation (called as the code called it before: a new JSONEncoder/JSONDecoder
/// per message) against the hand-written codec, on messages shaped like the real ones.
/// Only meaningful in an optimized build.
public enum FastJSONBenchmark {
    public static let spec: JSONValue = [
        "prompt": "a lantern-lit harbour at night, ink and watercolor, \"wide\" shot",
        "negative": "blurry, low quality", "seed": 1_234_567, "steps": 30, "cfg": 7.5, "width": 1024, "height": 1024,
        "sampler": "dpmpp_2m", "loras": [["name": "ink-style", "weight": 0.8], ["name": "harbour", "weight": 0.35]],
        "output": "/srv/hydra/out/night-of-the-lanterns/0042.png", "batch": 1, "upscale": false, "tags": ["a", "b", "c"],
    ]

    public static let envelope = Envelope(jobID: "0b7c2d3e-1111-4222-8333-944455556666", attempt: 1, kind: "image", spec: spec,
                                          gpuUUIDs: ["GPU-5f3a9c1e-7d2b-4e8f-a6c0-1b2d3e4f5a6b"], vramBytes: 12 << 30,
                                          deadline: 1_736_112_945.123_456_7, issuedAt: 1_736_112_345.123_456_7,
                                          expiresAt: 1_736_112_405.123_456_7)

    public static let result = AttemptResult(jobID: "0b7c2d3e-1111-4222-8333-944455556666", attempt: 1, node: "atlas",
                                             outcome: .succeeded, result: ["outputs": ["/srv/hydra/out/0042.png"], "seconds": 12.5],
                                             startedAt: 1_736_112_346.5, finishedAt: 1_736_112_359.012_345_6,
                                             durationSeconds: 12.512_345_6, peakVRAMBytes: 11_811_160_064)

    /// One line per case: "name  Foundation ns/op  fast ns/op  speed-up".
    public static func run(iterations: Int = 20_000) -> [String] {
        let envText = String(decoding: try! JSONCoding.encoder().encode(envelope), as: UTF8.self)
        let resText = String(decoding: try! JSONCoding.encoder().encode(result), as: UTF8.self)
        let specText = try! spec.serialized()
        let mac = Array(repeating: UInt8(0xA7), count: 32)
        var sink = 0
        let cases: [(String, () -> Int, () -> Int)] = [
            ("envelope encode", { try! JSONCoding.encoder().encode(envelope).count }, { try! envelope.jsonString().utf8.count }),
            ("envelope decode", { try! JSONDecoder().decode(Envelope.self, from: Data(envText.utf8)).attempt },
             { try! Envelope.parse(envText).attempt }),
            ("result encode", { try! JSONCoding.encoder().encode(result).count }, { try! result.jsonString().utf8.count }),
            ("result decode", { try! JSONDecoder().decode(AttemptResult.self, from: Data(resText.utf8)).attempt },
             { try! AttemptResult.parse(resText).attempt }),
            ("spec parse", { try! JSONDecoder().decode(JSONValue.self, from: Data(specText.utf8)).objectValue!.count },
             { try! JSONValue.parse(specText).objectValue!.count }),
            ("spec serialize", { try! JSONCoding.encoder().encode(spec).count }, { try! spec.serialized().utf8.count }),
            ("MAC hex (32 bytes)", { mac.map { String(format: "%02x", $0) }.joined().utf8.count }, { Hex.encode(mac).utf8.count }),
        ]
        var lines = ["case                    Foundation ns/op   fast ns/op   speed-up"]
        for (name, old, new) in cases {
            let a = time(iterations, old, &sink), b = time(iterations, new, &sink)
            lines.append(name.padding(toLength: 24, withPad: " ", startingAt: 0)
                         + String(format: "%16.0f %12.0f %9.1fx", a, b, a / b))
        }
        lines.append("(checksum \(sink))")
        return lines
    }

    /// The best of five runs, in ns per call.
    static func time(_ n: Int, _ body: () -> Int, _ sink: inout Int) -> Double {
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = ContinuousClock.now
            for _ in 0..<n { sink &+= body() }
            let d = ContinuousClock.now - t0
            best = min(best, (Double(d.components.seconds) * 1e9 + Double(d.components.attoseconds) / 1e9) / Double(n))
        }
        return best
    }
}
