import Foundation
import Synchronization
import HydraCore
import HydraStore

/// A few PostgreSQL connections for the console's request threads. A
/// PGConnection is not thread-safe; the pool hands each one to a single thread
/// at a time. At most `maxOpen` are out at once: the console shares PostgreSQL with the
/// coordinator's placement loop, and 64 request threads each with a query on its own
/// connection (a page hammer; ten tabs on a 100 000-job batch) starved dispatch. A request
/// that finds every connection busy waits up to `waitS`, then gets `PoolBusy` (a 503 with
/// Retry-After), and PostgreSQL never sees more than `maxOpen` console queries.
public final class PGPool: Sendable {
    public let url: String
    private let maxIdle: Int
    public let maxOpen: Int
    public let waitS: Double
    private let idle = Mutex<[Pooled]>([])
    private let slots: DispatchSemaphore
    private let waiting = Atomic<Int>(0)

    /// Every connection was busy for `waitS`.
    public struct PoolBusy: Error, CustomStringConvertible {
        public var waiting: Int
        public var description: String { "the console is busy (\(waiting) request(s) waiting for one of its database connections); try again" }
    }

    /// `@unchecked Sendable` because PGConnection is a non-thread-safe class: it is
    /// safe here because a connection is either in `idle` (touched only under the
    /// mutex) or owned by exactly one request thread between `take` and `put`.
    private struct Pooled: @unchecked Sendable { let conn: PGConnection }

    public init(url: String, maxIdle: Int = 8, maxOpen: Int = 6, waitS: Double = 5) {
        self.url = url; self.maxOpen = max(1, maxOpen); self.maxIdle = min(maxIdle, self.maxOpen); self.waitS = waitS
        slots = DispatchSemaphore(value: self.maxOpen)
    }

    public func withStore<T>(_ body: (JobStore) throws -> T) throws -> T {
        let queued = waiting.add(1, ordering: .relaxed).newValue
        let got = slots.wait(timeout: .now() + waitS)
        waiting.subtract(1, ordering: .relaxed)
        guard got == .success else { throw PoolBusy(waiting: queued) }
        defer { slots.signal() }
        let conn = idle.withLock { $0.popLast() }?.conn ?? PGConnection(url: url)
        do {
            let v = try body(JobStore(db: conn))
            put(conn)
            return v
        } catch {
            // A connection that failed mid-way may hold an aborted transaction or a dead socket.
            if let e = error as? PGError, e.isConnectionLoss { conn.close() } else { put(conn) }
            throw error
        }
    }

    private func put(_ c: PGConnection) {
        let p = Pooled(conn: c)
        let dropped = idle.withLock { s -> Pooled? in
            if s.count < maxIdle { s.append(p); return nil }
            return p
        }
        dropped?.conn.close()
    }

    public func closeAll() {
        let all = idle.withLock { s -> [Pooled] in defer { s = [] }; return s }
        for p in all { p.conn.close() }
    }
}

/// The console's reads: a handful of indexed queries per page, counts done by
/// PostgreSQL, job lists paginated. None of them reads all jobs.
extension JobStore {
    static let terminalStates = JobStateMachine.sqlList(JobStateMachine.terminal)

    /// Job columns for lists: the same JobRow, without the spec and result documents
    /// (decoding two JSON documents per row is most of a list's cost, and lists show neither).
    static let listColumns = JobRow.columns
        .replacingOccurrences(of: "id, batch_id, name, kind, spec,", with: "id, batch_id, name, kind, '{}'::jsonb AS spec,")
        .replacingOccurrences(of: "failure_class, result, error", with: "failure_class, NULL::jsonb AS result, error")

    public func consoleCluster(now: Double = Date().timeIntervalSince1970) throws -> ConsoleClusterView {
        let active = try db.exec("""
            SELECT id, name, state, node, gpu_uuids, coalesce(reserved_bytes, vram_request_bytes) AS vram_request_bytes FROM jobs
            WHERE state IN ('placed', 'dispatched', 'running') ORDER BY seq LIMIT 2000
            """).all.map { r in
            ActiveJob(id: r["id"] ?? "", name: r["name"] ?? "", state: r["state"] ?? "", node: r["node"] ?? "",
                      gpuUUIDs: r.textArray("gpu_uuids"), vramBytes: UInt64(r.int64("vram_request_bytes") ?? 0))
        }
        return ConsoleClusterView(nodes: try nodes(), active: active, jobCounts: try countByState(), now: now)
    }

    /// Batch summaries with their pace (see `BatchProgress.estimate`).
    public func batchProgress(ids: [String]? = nil, limit: Int = 50, window: Double = 600,
                              now: Double = Date().timeIntervalSince1970) throws -> [BatchProgress] {
        let sums = try consoleBatchSummaries(ids: ids, limit: limit, checkSubmitted: ids != nil)
        if sums.isEmpty { return [] }
        var pace: [String: (Int, Double?, Double?)] = [:]
        for r in try db.exec("""
            SELECT batch_id,
                   count(*) FILTER (WHERE state IN \(Self.terminalStates) AND finished_at >= to_timestamp($2::float8)) AS recent,
                   extract(epoch from min(started_at)) AS first_started, extract(epoch from max(finished_at)) AS last_finished
            FROM jobs WHERE batch_id = ANY($1::uuid[]) GROUP BY batch_id
            """, [PGConnection.textArray(sums.map(\.id)), String(now - window)]).all {
            pace[r["batch_id"] ?? ""] = (r.int("recent") ?? 0, r.double("first_started"), r.double("last_finished"))
        }
        return sums.map { s in
            let p = pace[s.id] ?? (0, nil, nil)
            return BatchProgress.estimate(summary: s, finishedInWindow: p.0, windowSeconds: window, firstStartedAt: p.1,
                                          lastFinishedAt: p.2, now: now)
        }
    }

    /// Jobs of a batch in `seq` order, filtered by state, one page at a time.
    public func consoleJobs(batchID: String?, states: [JobState], node: String? = nil, offset: Int, limit: Int, light: Bool = false) throws -> [JobRow] {
        var conds: [String] = []
        var params: [String?] = []
        if let b = batchID { params.append(b); conds.append("batch_id = $\(params.count)::uuid") }
        if !states.isEmpty { params.append(PGConnection.textArray(states.map(\.rawValue))); conds.append("state = ANY($\(params.count)::text[])") }
        if let n = node { params.append(n); conds.append("node = $\(params.count)") }
        let whereSQL = conds.isEmpty ? "" : "WHERE " + conds.joined(separator: " AND ")
        return try db.exec("SELECT \(light ? Self.listColumns : JobRow.columns) FROM jobs \(whereSQL) ORDER BY seq LIMIT \(max(0, limit)) OFFSET \(max(0, offset))",
                           params).all.map(JobRow.init(row:))
    }

    public func consoleBatchPage(id: String, states: [JobState], page: Int, pageSize: Int = 100,
                                 now: Double = Date().timeIntervalSince1970) throws -> BatchPageData? {
        guard UUID(uuidString: id) != nil, let progress = try batchProgress(ids: [id], limit: 1, now: now).first else { return nil }
        return try consoleBatchPage(progress: progress, states: states, page: page, pageSize: pageSize)
    }

    /// The page for a batch whose progress was read already (the console shares one read a second).
    public func consoleBatchPage(progress: BatchProgress, states: [JobState], page: Int, pageSize: Int = 100) throws -> BatchPageData? {
        let id = progress.summary.id
        let s = progress.summary
        let matching = states.isEmpty ? s.byState.values.reduce(0, +) : states.reduce(0) { $0 + s.count($1) }
        let pages = max(1, (matching + pageSize - 1) / pageSize)
        let p = min(max(1, page), pages)
        let jobs = try consoleJobs(batchID: id, states: states, offset: (p - 1) * pageSize, limit: pageSize, light: true)
        return BatchPageData(progress: progress, jobs: jobs, stateFilter: states, page: p, pageSize: pageSize, matching: matching)
    }

    public func consoleJobEvents(_ id: String) throws -> [JobEventRow] {
        try events(job: id).map { JobEventRow(at: $0.at, attempt: $0.attempt, from: $0.from, to: $0.to, detail: $0.detail) }
    }

    public func consoleJobPage(id: String) throws -> JobPageData? {
        guard let j = try job(id.lowercased()) else { return nil }
        let batchName = try db.exec("SELECT name FROM batches WHERE id = $1::uuid", [j.batchID]).all.first?["name"]
        var gpuNames: [String: String] = [:]
        if let node = j.node, !j.gpuUUIDs.isEmpty,
           let inv = try db.exec("SELECT inventory FROM nodes WHERE name = $1", [node]).all.first?["inventory"],
           let inventory = try? JSONCoding.decode(Inventory.self, from: inv) {
            for g in inventory.gpus { gpuNames[g.uuid] = "\(node) #\(g.index.map(String.init) ?? "?") \(g.name ?? "GPU")" }
        }
        return JobPageData(job: j, batchName: batchName, events: try consoleJobEvents(j.id), gpuNames: gpuNames)
    }

    public func consoleApprovals(decidedLimit: Int = 50, auditLimit: Int = 50) throws -> ApprovalsPageData {
        let decided = try db.exec("""
            SELECT \(Self.approvalColumns) FROM approvals WHERE state <> 'awaiting_approval' ORDER BY decided_at DESC NULLS LAST LIMIT \(decidedLimit)
            """).all.map(Self.approval)
        let audit = try auditLog(limit: auditLimit).map { AuditEntry(at: $0.at, actor: $0.actor, action: $0.action, target: $0.target, detail: $0.detail) }
        var data = ApprovalsPageData(pending: try approvals(states: ["awaiting_approval"]), decided: decided, audit: audit)
        data.scores = try consoleImageScores(paths: data.pending.flatMap { ($0.detail["images"]?.arrayValue ?? []).compactMap(\.stringValue) })
        return data
    }
}

/// Overnight reports: `<dir>/<date>_overnight_report.md`, newest first.
public enum NightReports {
    public static let suffix = "_overnight_report.md"

    public static func list(dir: String, limit: Int = 60, load: Int = 3) -> [NightReport] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [])
            .filter { $0.hasSuffix(suffix) && !$0.hasPrefix(".") }
            .sorted(by: >)
            .prefix(limit)
        return names.enumerated().map { i, n in
            NightReport(name: n, date: String(n.dropLast(suffix.count)), markdown: i < load ? (read(dir: dir, name: n) ?? "") : (readTitle(dir: dir, name: n) ?? ""))
        }
    }

    /// One report by file name; names are checked (no separators), not resolved as paths.
    public static func read(dir: String, name: String) -> String? {
        guard name.hasSuffix(suffix), !name.contains("/"), !name.hasPrefix("."), !name.contains("\0") else { return nil }
        let path = dir + "/" + name
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path),
              (attrs[.type] as? FileAttributeType) == .typeRegular, ((attrs[.size] as? Int) ?? 0) <= 2 << 20,
              let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Only the first heading of older reports: the list needs their titles, not their bodies.
    static func readTitle(dir: String, name: String) -> String? {
        guard let h = FileHandle(forReadingAtPath: dir + "/" + name) else { return nil }
        defer { try? h.close() }
        let head = String(decoding: (try? h.read(upToCount: 4096)) ?? Data(), as: UTF8.self)
        return Markdown.title(head).map { "# " + $0 }
    }
}
