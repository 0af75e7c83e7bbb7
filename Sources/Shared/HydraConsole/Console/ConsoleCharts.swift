import Foundation
import HydraStore

/// Server-rendered SVG pictures for the console: no chart library and no script, so they work
/// under the console's CSP (`script-src 'self'`, images from 'self') and in any browser.
public enum ConsoleCharts {
    /// One job attempt on one GPU, from its start to its end (nil: still running).
    public struct Bar: Sendable, Equatable {
        public var gpuUUID: String
        public var jobID: String
        public var name: String
        public var state: String
        public var start: Double
        public var end: Double?
        public init(gpuUUID: String, jobID: String, name: String, state: String, start: Double, end: Double?) {
            self.gpuUUID = gpuUUID; self.jobID = jobID; self.name = name; self.state = state; self.start = start; self.end = end
        }
    }

    /// A row of the occupancy chart: a GPU, labelled "node/index model".
    public struct Row: Sendable, Equatable {
        public var uuid: String
        public var label: String
        public init(uuid: String, label: String) { self.uuid = uuid; self.label = label }
    }

    static let labelWidth = 220.0
    static let rowHeight = 22.0

    /// GPU occupancy over [from, to]: one row per GPU, a bar per attempt, the gaps between bars
    /// left blank, so idle time is what the eye sees. Bars are clipped to the window.
    public static func occupancy(rows: [Row], bars: [Bar], from: Double, to: Double, width: Double = 900) -> String {
        let plot = max(100, width - labelWidth - 10)
        let span = max(1, to - from)
        let height = Double(max(rows.count, 1)) * rowHeight + 30
        func x(_ t: Double) -> Double { labelWidth + (min(max(t, from), to) - from) / span * plot }
        var out = svgOpen(width: width, height: height, label: "GPU occupancy over the last \(durationText(span))")
        out += "<style>.l{font:12px sans-serif;fill:#333}.t{font:10px sans-serif;fill:#777}.r{fill:#f4f4f4}"
            + ".b{fill:#3b7dd8}.b.s-succeeded{fill:#2e9e5b}.b.s-failed,.b.s-dead{fill:#d64545}.b.s-running,.b.s-dispatched{fill:#e0a526}</style>"
        if rows.isEmpty {
            out += "<text class=\"l\" x=\"10\" y=\"18\">No GPUs have reported.</text>"
        }
        let index = Dictionary(rows.enumerated().map { ($1.uuid, $0) }, uniquingKeysWith: { a, _ in a })
        for (i, r) in rows.enumerated() {
            let y = Double(i) * rowHeight
            out += "<rect class=\"r\" x=\"\(fmt(labelWidth))\" y=\"\(fmt(y + 3))\" width=\"\(fmt(plot))\" height=\"\(fmt(rowHeight - 6))\"/>"
            out += "<text class=\"l\" x=\"4\" y=\"\(fmt(y + 15))\">\(esc(r.label))</text>"
        }
        for b in bars {
            guard let i = index[b.gpuUUID] else { continue }
            let end = b.end ?? to
            guard end >= from, b.start <= to else { continue }
            let x0 = x(b.start), x1 = max(x(end), x0 + 1)
            let y = Double(i) * rowHeight
            out += "<rect class=\"b s-\(esc(b.state))\" x=\"\(fmt(x0))\" y=\"\(fmt(y + 3))\" width=\"\(fmt(x1 - x0))\" height=\"\(fmt(rowHeight - 6))\">"
                + "<title>\(esc(b.name)) (\(esc(b.state))) \(durationText(end - b.start))</title></rect>"
        }
        let axisY = Double(max(rows.count, 1)) * rowHeight + 16
        out += "<text class=\"t\" x=\"\(fmt(labelWidth))\" y=\"\(fmt(axisY))\">-\(durationText(span))</text>"
        out += "<text class=\"t\" x=\"\(fmt(labelWidth + plot))\" y=\"\(fmt(axisY))\" text-anchor=\"end\">now</text>"
        return out + "</svg>\n"
    }

    /// Jobs finished per minute as a sparkline; `perMinute` is oldest first, one value per minute.
    public static func sparkline(_ perMinute: [Int], width: Double = 120, height: Double = 24) -> String {
        let peak = Double(perMinute.max() ?? 0)
        var out = svgOpen(width: width, height: height, label: "jobs finished per minute, peak \(Int(peak))")
        if perMinute.count >= 2, peak > 0 {
            let step = width / Double(perMinute.count - 1)
            let pts = perMinute.enumerated().map { i, v in
                fmt(Double(i) * step) + "," + fmt(height - 1 - Double(v) / peak * (height - 2))
            }
            out += "<polyline fill=\"none\" stroke=\"#3b7dd8\" stroke-width=\"1.5\" points=\"\(pts.joined(separator: " "))\"/>"
        } else if let v = perMinute.first, v > 0 {
            out += "<circle cx=\"\(fmt(width / 2))\" cy=\"\(fmt(height / 2))\" r=\"2\" fill=\"#3b7dd8\"/>"
        }
        return out + "</svg>\n"
    }

    /// Per-minute counts from (minute, count) rows, zeros filled in, at most `maxMinutes` (the latest).
    public static func minuteSeries(_ rows: [(minute: Int, count: Int)], maxMinutes: Int = 120) -> [Int] {
        guard let first = rows.map(\.minute).min(), let last = rows.map(\.minute).max() else { return [] }
        let start = max(first, last - maxMinutes + 1)
        var out = Array(repeating: 0, count: last - start + 1)
        for r in rows where r.minute >= start { out[r.minute - start] += r.count }
        return out
    }

    static func svgOpen(width: Double, height: Double, label: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(fmt(width))\" height=\"\(fmt(height))\" viewBox=\"0 0 \(fmt(width)) \(fmt(height))\" role=\"img\" aria-label=\"\(esc(label))\">"
    }

    static func durationText(_ s: Double) -> String {
        let n = Int(max(0, s).rounded())
        if n < 60 { return "\(n)s" }
        if n < 3600 { return "\(n / 60)m" }
        return "\(n / 3600)h" + (n % 3600 >= 60 ? "\(n % 3600 / 60)m" : "")
    }

    /// Two decimals at most, no exponent: SVG attribute syntax.
    static func fmt(_ v: Double) -> String {
        let r = (v * 100).rounded() / 100
        return r == r.rounded() ? String(Int(r)) : String(r)
    }

    static func esc(_ s: String) -> String {
        var o = ""
        for c in s {
            switch c {
            case "&": o += "&amp;"
            case "<": o += "&lt;"
            case ">": o += "&gt;"
            case "\"": o += "&quot;"
            case "'": o += "&#39;"
            default: o.append(c)
            }
        }
        return o
    }
}

extension JobStore {
    /// GPU rows from the node table and the attempts that touched [since, now] on them (each job's
    /// latest attempt: earlier attempts of a retried job are not kept in `jobs`).
    public func consoleOccupancy(since: Double, now: Double = Date().timeIntervalSince1970) throws -> (rows: [ConsoleCharts.Row], bars: [ConsoleCharts.Bar]) {
        var rows: [ConsoleCharts.Row] = []
        for n in try nodes() {
            for g in n.inventory.gpus {
                rows.append(.init(uuid: g.uuid, label: "\(n.name)/\(g.index.map(String.init) ?? "?") \(g.name ?? "GPU")"))
            }
        }
        var bars: [ConsoleCharts.Bar] = []
        for r in try db.exec("""
            SELECT id, name, state, gpu_uuids, extract(epoch from started_at) AS s, extract(epoch from finished_at) AS f FROM jobs
            WHERE started_at IS NOT NULL AND cardinality(gpu_uuids) > 0
              AND (finished_at IS NULL OR finished_at >= to_timestamp($1::float8))
              AND state IN ('running', 'succeeded', 'failed', 'dead', 'cancelled', 'retry_wait', 'pending')
            ORDER BY started_at DESC LIMIT 5000
            """, [String(since)]).all {
            guard let s = r.double("s") else { continue }
            let state = r["state"] ?? ""
            // A job back in pending or retry_wait has no end recorded for the attempt that left the GPU.
            let end = r.double("f") ?? (state == "running" ? nil : s)
            for u in r.textArray("gpu_uuids") {
                bars.append(.init(gpuUUID: u, jobID: r["id"] ?? "", name: r["name"] ?? "", state: state, start: s, end: end))
            }
        }
        return (rows, bars)
    }

    /// Jobs of a batch finished per minute (epoch minute, count).
    public func consoleFinishedPerMinute(batchID: String) throws -> [(minute: Int, count: Int)] {
        try db.exec("""
            SELECT floor(extract(epoch from finished_at) / 60)::bigint AS m, count(*) AS n FROM jobs
            WHERE batch_id = $1::uuid AND finished_at IS NOT NULL GROUP BY m ORDER BY m
            """, [batchID]).all.compactMap { r in
            guard let m = r.int("m"), let n = r.int("n") else { return nil }
            return (m, n)
        }
    }
}
