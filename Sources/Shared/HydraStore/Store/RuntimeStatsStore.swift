import Foundation
import HydraCore

/// What the router learns: runtimes and peak VRAM of completed jobs per (kind, model, GPU model).
extension JobStore {
    public func runtimeStats() throws -> [RuntimeStatsRow] {
        try db.exec("SELECT kind, model_key, gpu_model, n, mean_s, p95_s, peak_vram_p95_bytes FROM runtime_stats").all.map {
            RuntimeStatsRow(kind: $0["kind"] ?? "", modelKey: $0["model_key"] ?? "", gpuModel: $0["gpu_model"] ?? "",
                            n: $0.int("n") ?? 0, meanS: $0.double("mean_s") ?? 0, p95S: $0.double("p95_s") ?? 0,
                            peakVRAMP95Bytes: $0.int64("peak_vram_p95_bytes").map { UInt64($0) })
        }
    }

    /// Folds successful attempts into runtime_stats, grouped here (the rows were just read by
    /// `apply`, so nothing is read again). The mean is exact; the p95s follow a streaming quantile
    /// estimate (up fast on a larger sample, down slowly), which needs no history.
    func recordRuntimes(_ tx: PGConnection, _ samples: [RuntimeSample]) throws {
        if samples.isEmpty { return }
        struct Group { var n = 0; var sum = 0.0; var max = 0.0; var peak: UInt64? }
        var groups: [[String]: Group] = [:]
        for s in samples {
            var g = groups[[s.kind, s.modelKey, s.gpuModel]] ?? Group()
            g.n += 1; g.sum += s.seconds; g.max = Swift.max(g.max, s.seconds)
            if let p = s.peakVRAMBytes { g.peak = Swift.max(g.peak ?? 0, p) }
            groups[[s.kind, s.modelKey, s.gpuModel]] = g
        }
        let keys = Array(groups.keys)
        let gs = keys.map { groups[$0]! }
        try tx.exec("""
            INSERT INTO runtime_stats AS r (kind, model_key, gpu_model, n, mean_s, p95_s, peak_vram_p95_bytes)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::float8[], $6::float8[], $7::bigint[])
            ON CONFLICT (kind, model_key, gpu_model) DO UPDATE SET
              n = r.n + EXCLUDED.n,
              mean_s = (r.mean_s * r.n + EXCLUDED.mean_s * EXCLUDED.n) / (r.n + EXCLUDED.n),
              p95_s = CASE WHEN EXCLUDED.p95_s > r.p95_s THEN r.p95_s + (EXCLUDED.p95_s - r.p95_s) * 0.5
                           ELSE r.p95_s - (r.p95_s - EXCLUDED.p95_s) * 0.025 END,
              peak_vram_p95_bytes = CASE
                WHEN EXCLUDED.peak_vram_p95_bytes IS NULL THEN r.peak_vram_p95_bytes
                WHEN r.peak_vram_p95_bytes IS NULL OR EXCLUDED.peak_vram_p95_bytes > r.peak_vram_p95_bytes
                  THEN EXCLUDED.peak_vram_p95_bytes
                ELSE (r.peak_vram_p95_bytes - (r.peak_vram_p95_bytes - EXCLUDED.peak_vram_p95_bytes) * 0.025)::bigint END
            """, [PGConnection.textArray(keys.map { $0[0] }), PGConnection.textArray(keys.map { $0[1] }),
                  PGConnection.textArray(keys.map { $0[2] }), "{" + gs.map { String($0.n) }.joined(separator: ",") + "}",
                  "{" + gs.map { String($0.sum / Double($0.n)) }.joined(separator: ",") + "}",
                  "{" + gs.map { String($0.max) }.joined(separator: ",") + "}",
                  "{" + gs.map { $0.peak.map { String(min($0, UInt64(Int64.max))) } ?? "NULL" }.joined(separator: ",") + "}"])
    }
}

/// One successful attempt's runtime, for runtime_stats.
public struct RuntimeSample: Sendable, Equatable {
    public var jobID: String
    public var kind: String
    public var modelKey: String
    public var gpuModel: String
    public var seconds: Double
    public var peakVRAMBytes: UInt64?
}
