import Foundation
import HydraCore
import HydraStore

/// What the console pages show. Plain values: the pages are pure functions of
/// these, so they are tested without a database.

/// A GPU's memory split three ways for the VRAM bar.
public struct VRAMSplit: Sendable, Equatable {
    public var total: UInt64
    /// Live used minus Hydra's share (never below 0): other processes on the GPU.
    public var usedByOthers: UInt64
    /// Sum of `vram_request_bytes` of Hydra jobs placed/dispatched/running on the GPU.
    public var reservedByHydra: UInt64
    public var free: UInt64

    public init(gpu: GPUInfo, reserved: UInt64) {
        total = gpu.memoryTotalBytes ?? 0
        let used = gpu.memoryUsedBytes ?? 0
        usedByOthers = used > reserved ? used - reserved : 0
        reservedByHydra = reserved
        let taken = usedByOthers + reservedByHydra
        free = total > taken ? total - taken : 0
    }

    /// Percentages of the bar, summing to at most 100 (reservations can exceed a GPU on paper).
    public var percents: (others: Double, hydra: Double, free: Double) {
        guard total > 0 else { return (0, 0, 0) }
        let t = Double(total)
        let o = min(100, Double(usedByOthers) / t * 100)
        let h = min(100 - o, Double(reservedByHydra) / t * 100)
        return (o, h, max(0, 100 - o - h))
    }
}

/// A job shown on the cluster page as running on a node.
public struct ActiveJob: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var state: String
    public var node: String
    public var gpuUUIDs: [String]
    public var vramBytes: UInt64
    public init(id: String, name: String, state: String, node: String, gpuUUIDs: [String], vramBytes: UInt64) {
        self.id = id; self.name = name; self.state = state; self.node = node; self.gpuUUIDs = gpuUUIDs; self.vramBytes = vramBytes
    }
    enum CodingKeys: String, CodingKey {
        case id, name, state, node
        case gpuUUIDs = "gpu_uuids"
        case vramBytes = "vram_request_bytes"
    }
}

public struct ConsoleClusterView: Sendable {
    public var nodes: [NodeRow]
    public var active: [ActiveJob]
    public var jobCounts: [String: Int]
    public var now: Double
    public init(nodes: [NodeRow], active: [ActiveJob], jobCounts: [String: Int], now: Double) {
        self.nodes = nodes; self.active = active; self.jobCounts = jobCounts; self.now = now
    }

    /// Hydra's reservation per GPU uuid (a multi-GPU job reserves its request on each GPU).
    public var reserved: [String: UInt64] { Self.reservations(active) }

    public static func reservations(_ jobs: [ActiveJob]) -> [String: UInt64] {
        var r: [String: UInt64] = [:]
        for j in jobs where ["placed", "dispatched", "running"].contains(j.state) {
            for u in j.gpuUUIDs { r[u, default: 0] += j.vramBytes }
        }
        return r
    }
}

/// A batch with its pace: how fast jobs finish lately and when the rest should be done.
public struct BatchProgress: Sendable, Equatable {
    public var summary: BatchSummary
    /// Jobs finished per minute over the recent window (nil before the first finish).
    public var ratePerMinute: Double?
    /// Epoch seconds; nil when done or when nothing has finished yet.
    public var expectedFinish: Double?
    public var firstStartedAt: Double?
    public var lastFinishedAt: Double?

    public init(summary: BatchSummary, ratePerMinute: Double?, expectedFinish: Double?, firstStartedAt: Double? = nil, lastFinishedAt: Double? = nil) {
        self.summary = summary; self.ratePerMinute = ratePerMinute; self.expectedFinish = expectedFinish
        self.firstStartedAt = firstStartedAt; self.lastFinishedAt = lastFinishedAt
    }

    /// Rate = jobs finished in the window / the window's minutes (the window starts no
    /// earlier than the batch's first start, so a young batch is not underrated);
    /// expected finish = now + unfinished / rate.
    public static func estimate(summary: BatchSummary, finishedInWindow: Int, windowSeconds: Double, firstStartedAt: Double?,
                                lastFinishedAt: Double?, now: Double) -> BatchProgress {
        var window = windowSeconds
        if let s = firstStartedAt { window = min(window, max(1, now - s)) }
        let rate: Double? = finishedInWindow > 0 ? Double(finishedInWindow) / (window / 60) : nil
        let remaining = summary.total - summary.finished
        var eta: Double?
        if remaining > 0, let rate, rate > 0 { eta = now + Double(remaining) / rate * 60 }
        return BatchProgress(summary: summary, ratePerMinute: rate, expectedFinish: eta, firstStartedAt: firstStartedAt, lastFinishedAt: lastFinishedAt)
    }
}

public struct BatchPageData: Sendable {
    public var progress: BatchProgress
    public var jobs: [JobRow]
    public var stateFilter: [JobState]
    public var page: Int
    public var pageSize: Int
    /// Jobs matching the filter (from the per-state counts, not from counting rows here).
    public var matching: Int
    public init(progress: BatchProgress, jobs: [JobRow], stateFilter: [JobState], page: Int, pageSize: Int, matching: Int) {
        self.progress = progress; self.jobs = jobs; self.stateFilter = stateFilter; self.page = page; self.pageSize = pageSize; self.matching = matching
    }
}

public struct JobEventRow: Sendable, Equatable, Codable {
    public var at: Double
    public var attempt: Int?
    public var from: String?
    public var to: String
    public var detail: JSONValue?
    public init(at: Double, attempt: Int?, from: String?, to: String, detail: JSONValue?) {
        self.at = at; self.attempt = attempt; self.from = from; self.to = to; self.detail = detail
    }
}

public struct JobPageData: Sendable {
    public var job: JobRow
    public var batchName: String?
    public var events: [JobEventRow]
    /// GPU uuid → "hydra-ai #0 NVIDIA GeForce RTX 5090", when the node is known.
    public var gpuNames: [String: String]
    public init(job: JobRow, batchName: String?, events: [JobEventRow], gpuNames: [String: String]) {
        self.job = job; self.batchName = batchName; self.events = events; self.gpuNames = gpuNames
    }
}

public struct AuditEntry: Sendable, Equatable, Codable {
    public var at: Double
    public var actor: String
    public var action: String
    public var target: String?
    public var detail: JSONValue?
    public init(at: Double, actor: String, action: String, target: String?, detail: JSONValue?) {
        self.at = at; self.actor = actor; self.action = action; self.target = target; self.detail = detail
    }
}

public struct ApprovalsPageData: Sendable {
    public var pending: [Approval]
    public var decided: [Approval]
    public var audit: [AuditEntry]
    /// Gate scores of the pending approvals' images, by path.
    public var scores: [String: ImageGateScores] = [:]
    public init(pending: [Approval], decided: [Approval], audit: [AuditEntry]) {
        self.pending = pending; self.decided = decided; self.audit = audit
    }
}

/// One overnight report file.
public struct NightReport: Sendable, Equatable {
    public var name: String
    public var date: String
    public var markdown: String
    public init(name: String, date: String, markdown: String) { self.name = name; self.date = date; self.markdown = markdown }
}

/// A job output the job page knows how to show.
public enum JobOutput: Sendable, Equatable {
    case image(path: String)
    case audio(path: String)
    case file(path: String)
    case text(label: String, value: String)

    static let imageExtensions: Set<String> = ["png", "jpg", "jpeg", "gif", "webp"]
    static let audioExtensions: Set<String> = ["wav", "mp3", "ogg", "flac", "m4a", "opus"]

    /// Walks a job's result: strings that are absolute paths with a media extension
    /// become images or audio, other paths files, `stdout`/`text`-like strings text.
    public static func extract(from result: JSONValue?) -> [JobOutput] {
        var out: [JobOutput] = []
        func walk(_ v: JSONValue, _ label: String, depth: Int) {
            guard depth < 6, out.count < 50 else { return }
            switch v {
            case .string(let s):
                if s.hasPrefix("/"), !s.contains("\n"), s.count < 4096 {
                    let ext = (s as NSString).pathExtension.lowercased()
                    if imageExtensions.contains(ext) { out.append(.image(path: s)) }
                    else if audioExtensions.contains(ext) { out.append(.audio(path: s)) }
                    else { out.append(.file(path: s)) }
                } else if !s.isEmpty {
                    out.append(.text(label: label, value: s))
                }
            case .array(let a): for x in a { walk(x, label, depth: depth + 1) }
            case .object(let o): for k in o.keys.sorted() { walk(o[k]!, label.isEmpty ? k : label + "." + k, depth: depth + 1) }
            default: break
            }
        }
        if let r = result { walk(r["output"] ?? r, "", depth: 0) }
        return out
    }

    public static func kind(ofPath path: String) -> String {
        let ext = (path as NSString).pathExtension.lowercased()
        return imageExtensions.contains(ext) ? "image" : audioExtensions.contains(ext) ? "audio" : "file"
    }
}
