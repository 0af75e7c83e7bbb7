import Foundation
import HydraCore

/// One pending or decided pipeline action (LoRA training, deleting assets).
public struct PipelineActionRow: Sendable, Equatable {
    public var id: String
    public var night: String
    public var action: String
    public var collection: String?
    public var state: String
    public var approvalID: String?
    public var approvalState: String?
    public var jobID: String?
    public var detail: JSONValue
}

/// A night row (`pipeline_nights`).
public struct NightRow: Sendable, Equatable {
    public var night: String
    public var state: String
    public var startedAt: Double
    public var heartbeatAt: Double
    public var finishedAt: Double?
    public var deadline: Double?
    public var runs: Int
    public var forecast: JSONValue?
    public var reportPath: String?
    public var batchIDs: [String]
}

/// The pipeline's tables (schema version 5). Every write is a guarded UPDATE or an
/// INSERT; the runner's pure machine decides, this only reads and writes.
public final class PipelineStore {
    public let jobs: JobStore
    public var db: PGConnection { jobs.db }
    public init(jobs: JobStore) { self.jobs = jobs }

    // MARK: nights

    /// Starts (or resumes, on a second run the same night) the night's row.
    public func beginNight(_ night: String, deadline: Date, triggeredBy: String?) throws {
        try db.exec("""
            INSERT INTO pipeline_nights (night, state, deadline, triggered_by) VALUES ($1, 'running', to_timestamp($2::float8), $3)
            ON CONFLICT (night) DO UPDATE SET state = 'running', deadline = EXCLUDED.deadline, heartbeat_at = now(),
                runs = pipeline_nights.runs + 1, finished_at = NULL, triggered_by = coalesce(EXCLUDED.triggered_by, pipeline_nights.triggered_by)
            """, [night, String(deadline.timeIntervalSince1970), triggeredBy])
    }

    public func heartbeat(_ night: String) throws {
        try db.exec("UPDATE pipeline_nights SET heartbeat_at = now() WHERE night = $1", [night])
    }

    public func setForecast(_ night: String, plan: JSONValue, forecast: JSONValue?) throws {
        try db.exec("UPDATE pipeline_nights SET plan = $2::jsonb, forecast = coalesce($3::jsonb, forecast) WHERE night = $1",
                    [night, try JSONCoding.encodeString(plan), try forecast.map { try JSONCoding.encodeString($0) }])
    }

    public func finishNight(_ night: String, state: String, reportPath: String?) throws {
        try db.exec("UPDATE pipeline_nights SET state = $2, finished_at = now(), report_path = $3 WHERE night = $1", [night, state, reportPath])
    }

    public func addBatch(_ night: String, _ batchID: String) throws {
        try db.exec("UPDATE pipeline_nights SET batch_ids = array_append(batch_ids, $2::uuid) WHERE night = $1", [night, batchID])
    }

    public func nights(limit: Int = 30) throws -> [NightRow] {
        try db.exec("""
            SELECT night, state, extract(epoch from started_at) AS started_at, extract(epoch from heartbeat_at) AS heartbeat_at,
                   extract(epoch from finished_at) AS finished_at, extract(epoch from deadline) AS deadline, runs, forecast, report_path, batch_ids
            FROM pipeline_nights ORDER BY night DESC LIMIT \(limit)
            """).all.map { r in
            NightRow(night: r["night"] ?? "", state: r["state"] ?? "", startedAt: r.double("started_at") ?? 0,
                     heartbeatAt: r.double("heartbeat_at") ?? 0, finishedAt: r.double("finished_at"), deadline: r.double("deadline"),
                     runs: r.int("runs") ?? 1, forecast: r.json("forecast"), reportPath: r["report_path"], batchIDs: r.textArray("batch_ids"))
        }
    }

    /// A night whose runner heartbeat is fresher than `staleAfter` seconds.
    public func liveNight(staleAfter: Double) throws -> String? {
        try db.exec("SELECT night FROM pipeline_nights WHERE state = 'running' AND heartbeat_at > now() - make_interval(secs => $1::float8) LIMIT 1",
                    [String(staleAfter)]).all.first?["night"]
    }

    // MARK: planning input

    public func progress() throws -> [String: CollectionProgress] {
        var out: [String: CollectionProgress] = [:]
        for r in try db.exec("SELECT collection, count(*) FILTER (WHERE state = 'approved') AS approved, "
                             + "count(*) FILTER (WHERE state IN ('generating', 'scoring', 'carried')) AS active FROM quality_metrics GROUP BY collection").all {
            out[r["collection"] ?? "", default: CollectionProgress()].approved = r.int("approved") ?? 0
            out[r["collection"] ?? "", default: CollectionProgress()].inFlight += r.int("active") ?? 0
        }
        for r in try db.exec("""
            SELECT collection, max(seq) + 1 AS n, coalesce(sum(images) FILTER (WHERE state IN ('expanding', 'carried')), 0) AS pending
            FROM generation_tasks GROUP BY collection
            """).all {
            out[r["collection"] ?? "", default: CollectionProgress()].tasksSoFar = r.int("n") ?? 0
            out[r["collection"] ?? "", default: CollectionProgress()].inFlight += r.int("pending") ?? 0
        }
        return out
    }

    /// Records the planned tasks (blocked ones with their reason); returns their ids in order.
    public func insertTasks(_ tasks: [PlannedTask], night: String) throws -> [String] {
        try db.transaction { tx in
            try tasks.map { t in
                let id = UUID().uuidString.lowercased()
                try tx.exec("""
                    INSERT INTO generation_tasks (id, night, collection, seq, idea, prompt, images, state, reason, finished_night)
                    VALUES ($1::uuid, $2, $3, $4::int, $5, $6, $7::int, $8, $9, $10)
                    """, [id, night, t.collection, String(t.seq), t.idea, t.prompt, String(t.images),
                          t.blockedReason == nil ? TaskPhase.expanding.rawValue : TaskPhase.blocked.rawValue, t.blockedReason,
                          t.blockedReason == nil ? nil : night])
                return id
            }
        }
    }

    // MARK: the machine's snapshot

    static let taskColumns = "id, night, collection, seq, prompt, images, state, expand_job_id, reason"

    static func task(_ r: PGRow) -> TaskRecord {
        TaskRecord(id: r["id"] ?? "", night: r["night"] ?? "", collection: r["collection"] ?? "", seq: r.int("seq") ?? 0,
                   prompt: r["prompt"] ?? "", images: r.int("images") ?? 0, phase: TaskPhase(rawValue: r["state"] ?? "") ?? .failed,
                   expandJob: r["expand_job_id"], reason: r["reason"])
    }

    public func activeTasks() throws -> [TaskRecord] {
        try db.exec("SELECT \(Self.taskColumns) FROM generation_tasks WHERE state IN ('expanding', 'generating', 'carried') ORDER BY created_at, seq").all.map(Self.task)
    }

    public func task(_ id: String) throws -> TaskRecord? {
        try db.exec("SELECT \(Self.taskColumns) FROM generation_tasks WHERE id = $1::uuid", [id]).all.first.map(Self.task)
    }

    /// Images not yet decided, and every image of a task still generating (to see when it is done).
    public func activeImages() throws -> [ImageRecord] {
        try db.exec("""
            SELECT q.id, q.task_id, q.collection, q.variation, q.state, q.image_job_id, q.score_job_id, q.source_path FROM quality_metrics q
            WHERE q.state IN ('generating', 'scoring', 'carried')
               OR q.task_id IN (SELECT id FROM generation_tasks WHERE state = 'generating')
            ORDER BY q.created_at, q.variation
            """).all.map { r in
            ImageRecord(id: r["id"] ?? "", taskID: r["task_id"] ?? "", collection: r["collection"] ?? "", variation: r.int("variation") ?? 0,
                        phase: ImagePhase(rawValue: r["state"] ?? "") ?? .failed, imageJob: r["image_job_id"], scoreJob: r["score_job_id"],
                        sourcePath: r["source_path"])
        }
    }

    public func image(_ id: String) throws -> (taskID: String, collection: String, variation: Int, prompt: String, sourcePath: String?)? {
        try db.exec("SELECT task_id, collection, variation, prompt, source_path FROM quality_metrics WHERE id = $1::uuid", [id]).all.first.map {
            ($0["task_id"] ?? "", $0["collection"] ?? "", $0.int("variation") ?? 0, $0["prompt"] ?? "", $0["source_path"])
        }
    }

    public func jobViews(_ ids: [String]) throws -> [String: JobView] {
        let ids = ids.filter { UUID(uuidString: $0) != nil }
        if ids.isEmpty { return [:] }
        var out: [String: JobView] = [:]
        for r in try db.exec("SELECT id, state, result, failure_class, error FROM jobs WHERE id = ANY($1::uuid[])", [PGConnection.textArray(ids)]).all {
            let last = r.json("error")?.arrayValue?.last?["message"]?.stringValue
            out[r["id"] ?? ""] = JobView(state: JobState(rawValue: r["state"] ?? "") ?? .pending, output: r.json("result")?["output"],
                                         failureClass: r["failure_class"], error: last)
        }
        return out
    }

    /// Submits a batch and returns its id and the job ids, in plan order (the idempotency
    /// key of job i is `<batch>:<i>`).
    public func submit(_ plan: BatchPlan, night: String) throws -> (batch: String, jobs: [String]) {
        let batch = try jobs.submit(plan, submittedBy: "pipeline")
        var byIndex: [Int: String] = [:]
        for r in try db.exec("SELECT id, idempotency_key FROM jobs WHERE batch_id = $1::uuid", [batch]).all {
            if let k = r["idempotency_key"], let i = k.split(separator: ":").last.flatMap({ Int($0) }) { byIndex[i] = r["id"] }
        }
        try addBatch(night, batch)
        return (batch, plan.jobs.indices.map { byIndex[$0] ?? "" })
    }

    // MARK: the machine's writes

    public func setExpandJob(task: String, job: String) throws {
        try db.exec("UPDATE generation_tasks SET expand_job_id = $2::uuid, state = 'expanding', updated_at = now() WHERE id = $1::uuid", [task, job])
    }

    public func setTaskState(_ task: String, _ phase: TaskPhase, reason: String? = nil, variations: [String]? = nil, night: String? = nil) throws {
        try db.exec("""
            UPDATE generation_tasks SET state = $2, reason = coalesce($3, reason), variations = coalesce($4::jsonb, variations),
                   finished_night = coalesce($5, finished_night), updated_at = now() WHERE id = $1::uuid
            """, [task, phase.rawValue, reason, try variations.map { try JSONCoding.encodeString($0) }, night])
    }

    /// One row per variation; returns their ids in order.
    public func insertImages(task: String, night: String, collection: String, prompts: [String]) throws -> [String] {
        try db.transaction { tx in
            try prompts.enumerated().map { i, p in
                let id = UUID().uuidString.lowercased()
                try tx.exec("""
                    INSERT INTO quality_metrics (id, task_id, night, collection, variation, prompt, state)
                    VALUES ($1::uuid, $2::uuid, $3, $4, $5::int, $6, 'generating')
                    """, [id, task, night, collection, String(i), p])
                return id
            }
        }
    }

    public func setImageJob(image: String, job: String) throws {
        try db.exec("UPDATE quality_metrics SET image_job_id = $2::uuid, state = 'generating', updated_at = now() WHERE id = $1::uuid", [image, job])
    }

    public func setScoreJob(image: String, job: String, path: String) throws {
        try db.exec("UPDATE quality_metrics SET score_job_id = $2::uuid, source_path = $3, state = 'scoring', updated_at = now() WHERE id = $1::uuid",
                    [image, job, path])
    }

    public func recordVerdict(image: String, scores: ImageScores, verdict: GateVerdict, night: String, assetPath: String?, disposition: String) throws {
        try db.exec("""
            UPDATE quality_metrics SET state = $2, aesthetic = $3::float8, musiq = $4::float8, face_similarity = $5::float8, face_status = $6,
                   failed_gates = $7::text[], reason = $8, asset_path = $9, disposition = $10, finished_night = $11, updated_at = now()
            WHERE id = $1::uuid AND state = 'scoring'
            """, [image, verdict.passed ? "approved" : "rejected", scores.aesthetic.map { String($0) }, scores.musiq.map { String($0) },
                  scores.faceSimilarity.map { String($0) }, scores.faceStatus, PGConnection.textArray(verdict.failed.map(\.rawValue)),
                  verdict.reasons.isEmpty ? nil : verdict.reasons.joined(separator: "; "), assetPath, disposition, night])
    }

    public func failImage(_ image: String, failureClass: String, reason: String, night: String) throws {
        try db.exec("""
            UPDATE quality_metrics SET state = 'failed', failure_class = $2, reason = $3, finished_night = $4, updated_at = now()
            WHERE id = $1::uuid AND state IN ('generating', 'scoring', 'carried')
            """, [image, failureClass, reason, night])
    }

    /// Cancels the jobs that have not started (guarded: one that started meanwhile stays) and
    /// carries their rows to the next night. Returns how many jobs were cancelled.
    @discardableResult
    public func carry(jobIDs: [String]) throws -> Int {
        if jobIDs.isEmpty { return 0 }
        return try db.transaction { tx in
            let moved = try JobStateWriter(tx).bulk(.carried, where: "j.id = ANY($1::uuid[])", [PGConnection.textArray(jobIDs)],
                                                    set: ["pending_reason = 'the pipeline night reached its deadline; the next night resubmits it'"])
            let arr = PGConnection.textArray(moved.map(\.jobID))
            try tx.exec("UPDATE generation_tasks SET state = 'carried', expand_job_id = NULL, updated_at = now() WHERE expand_job_id = ANY($1::uuid[])", [arr])
            try tx.exec("UPDATE quality_metrics SET state = 'carried', image_job_id = NULL, updated_at = now() WHERE image_job_id = ANY($1::uuid[])", [arr])
            try tx.exec("UPDATE quality_metrics SET state = 'carried', score_job_id = NULL, updated_at = now() WHERE score_job_id = ANY($1::uuid[])", [arr])
            return moved.count
        }
    }

    // MARK: actions and approvals

    static func actionRow(_ r: PGRow) -> PipelineActionRow {
        PipelineActionRow(id: r["id"] ?? "", night: r["night"] ?? "", action: r["action"] ?? "", collection: r["collection"],
                          state: r["state"] ?? "", approvalID: r["approval_id"], approvalState: r["approval_state"], jobID: r["job_id"],
                          detail: r.json("detail") ?? .object([:]))
    }

    static let actionColumns = "a.id, a.night, a.action, a.collection, a.state, a.approval_id, p.state AS approval_state, a.job_id, a.detail"

    public func actions(states: [String]) throws -> [PipelineActionRow] {
        try db.exec("""
            SELECT \(Self.actionColumns) FROM pipeline_actions a LEFT JOIN approvals p ON p.id = a.approval_id
            WHERE a.state = ANY($1::text[]) ORDER BY a.created_at
            """, [PGConnection.textArray(states)]).all.map(Self.actionRow)
    }

    /// Whether the action was already proposed for the collection (not counting rejected ones of earlier nights).
    public func hasAction(_ action: String, collection: String?, night: String) throws -> Bool {
        try db.exec("""
            SELECT 1 FROM pipeline_actions WHERE action = $1 AND collection IS NOT DISTINCT FROM $2 AND (state <> 'rejected' OR night = $3) LIMIT 1
            """, [action, collection, night]).count > 0
    }

    /// Records an action; with `approval` it waits in the approval queue, else it is approved at once.
    public func addAction(night: String, action: String, collection: String?, detail: JSONValue, approval: (tier: Int, title: String)?) throws -> String {
        let id = UUID().uuidString.lowercased()
        var approvalID: String?
        if let a = approval {
            approvalID = try jobs.requestApproval(action: action, tier: a.tier, title: a.title, detail: detail)
        }
        try db.exec("""
            INSERT INTO pipeline_actions (id, night, action, collection, state, approval_id, detail) VALUES ($1::uuid, $2, $3, $4, $5, $6::uuid, $7::jsonb)
            """, [id, night, action, collection, approvalID == nil ? "approved" : "awaiting_approval", approvalID, try JSONCoding.encodeString(detail)])
        if approvalID == nil {
            try jobs.audit(actor: "pipeline", action: "auto_approved", target: id,
                           detail: .object(["action": .string(action), "reason": "tier below the approval threshold"]))
        }
        return id
    }

    /// Moves an action on (guarded by its current state); false if someone else moved it.
    @discardableResult
    public func setActionState(_ id: String, from: String, to: String, job: String? = nil, detail: JSONValue? = nil) throws -> Bool {
        try db.exec("""
            UPDATE pipeline_actions SET state = $3, job_id = coalesce($4::uuid, job_id), detail = coalesce($5::jsonb, detail), updated_at = now()
            WHERE id = $1::uuid AND state = $2
            """, [id, from, to, job, try detail.map { try JSONCoding.encodeString($0) }]).affected == 1
    }

    // MARK: report input

    public func outcomes(finishedNight night: String) throws -> [ImageOutcomeRow] {
        try db.exec("""
            SELECT collection, state, aesthetic, musiq, face_similarity, face_status, failed_gates, reason, failure_class, asset_path, disposition
            FROM quality_metrics WHERE finished_night = $1 ORDER BY collection, created_at
            """, [night]).all.map { r in
            ImageOutcomeRow(collection: r["collection"] ?? "", state: r["state"] ?? "",
                            scores: ImageScores(aesthetic: r.double("aesthetic"), musiq: r.double("musiq"),
                                                faceSimilarity: r.double("face_similarity"), faceStatus: r["face_status"]),
                            failedGates: r.textArray("failed_gates").compactMap(Gate.init(rawValue:)), reason: r["reason"],
                            failureClass: r["failure_class"], assetPath: r["asset_path"], disposition: r["disposition"])
        }
    }

    /// Tasks that ended tonight without images: blocked or failed.
    public func stoppedTasks(night: String) throws -> [TaskRecord] {
        try db.exec("SELECT \(Self.taskColumns) FROM generation_tasks WHERE finished_night = $1 AND state IN ('blocked', 'failed') ORDER BY collection, seq",
                    [night]).all.map(Self.task)
    }

    public func approvedCounts() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for r in try db.exec("SELECT collection, count(*) AS n FROM quality_metrics WHERE state = 'approved' GROUP BY collection").all {
            out[r["collection"] ?? ""] = r.int("n") ?? 0
        }
        return out
    }

    public func carriedCount() throws -> Int {
        try db.exec("""
            SELECT (SELECT count(*) FROM quality_metrics WHERE state IN ('carried', 'generating', 'scoring'))
                 + (SELECT coalesce(sum(images), 0) FROM generation_tasks WHERE state IN ('carried', 'expanding')) AS n
            """)[0].int("n") ?? 0
    }

    public func jobs(batches: [String]) throws -> [JobRow] {
        if batches.isEmpty { return [] }
        return try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE batch_id = ANY($1::uuid[])", [PGConnection.textArray(batches)]).all.map(JobRow.init(row:))
    }
}
