import Foundation
import HydraCore
import HydraIO

/// What the node's services say they hold on their GPU, for simulated GPUs: the demo's
/// fakes load "models" and report them like the real services do.
public enum ServiceVRAMProbe {
    /// Bytes per GPU index, from every endpoint that names its `gpu` and has a VRAM report.
    public static func held(_ endpoints: ServiceEndpoints, timeout: Double = 0.5) -> [Int: UInt64] {
        var out: [Int: UInt64] = [:]
        let quick = HTTPClientOptions(connectTimeout: timeout, totalTimeout: timeout, retries: 0)
        if let c = endpoints.comfyui, let gpu = c.gpu,
           let j = try? HTTPClient(service: "comfyui").send(HTTPClientRequest(url: c.base + "/system_stats"), options: quick).jsonValue,
           let d = j["devices"]?.arrayValue?.first, let total = d["vram_total"]?.doubleValue, let free = d["vram_free"]?.doubleValue, total >= free, let b = ByteSize.bytes(total - free) {
            out[gpu, default: 0] += b
        }
        if let o = endpoints.ollama, let gpu = o.gpu,
           let j = try? HTTPClient(service: "ollama").send(HTTPClientRequest(url: o.base + "/api/ps"), options: quick).jsonValue {
            let sum = (j["models"]?.arrayValue ?? []).compactMap { $0["size_vram"]?.doubleValue }.reduce(0, +)
            out[gpu, default: 0] += ByteSize.bytes(sum) ?? 0
        }
        return out
    }
}
