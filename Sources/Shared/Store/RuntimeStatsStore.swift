import Foundation

/// What the router learns: runtimes and peak VRAM of completed jobs per (kind, model, GPU model).
extension JobStore {
    public func runtimeStats() throws -> [RuntimeStatsRow] {
        try db.exec("SELECT kind, model_key, gpu_model, n, mean_s, p95_s, peak_vram_p95_bytes FROM runtime_stats").all.map {
            RuntimeStatsRow(kind: $0["kind"] ?? "", modelKey: $0["model_key"] ?? "", gpuModel: $0["gpu_model"] ?? "",
                            n: $0.int("n") ?? 0, meanS: $0.double("mean_s") ?? 0, p95S: $0.double("p95_s") ?? 0,
                            peakVRAMP95Bytes: $0.int64("peak_vram_p95_bytes").map { UInt64($0) })
        }
    }

    /// Folds successful attempts into runtime_stats. The mean is exact; the p95s follow a
    /// streaming quantile estimate (up fast on a larger sample, down slowly), which needs no history.
    public func recordRuntimes(jobIDs: [String]) throws {
        if jobIDs.isEmpty { return }
        try db.exec("""
            WITH s AS (
              SELECT kind, lower(coalesce(spec->>'model', '')) AS model_key, coalesce(gpu_model, 'cpu') AS gpu_model,
                     (result->>'duration_s')::float8 AS d, (result->>'peak_vram_bytes')::float8 AS v
              FROM jobs WHERE id = ANY($1::uuid[]) AND state = 'succeeded' AND result ? 'duration_s'
                AND jsonb_typeof(result->'duration_s') = 'number')
            INSERT INTO runtime_stats AS r (kind, model_key, gpu_model, n, mean_s, p95_s, peak_vram_p95_bytes)
            SELECT kind, model_key, gpu_model, count(*), avg(d), max(d), max(v)::bigint FROM s GROUP BY 1, 2, 3
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
            """, [PGConnection.textArray(jobIDs)])
    }
}
