import Foundation
import HydraCore
import HydraWire

/// What a transition did, for logs, metrics and follow-up work (stream clean-up).
public struct AppliedTransition: Sendable, Equatable {
    public var jobID: String
    public var attempt: Int
    public var from: JobState
    public var to: JobState
    public var node: String?
    public var streamID: String?
    public var kind: String
    /// The GPUs the attempt held, when it was placed on GPUs.
    public var gpuUUIDs: [String] = []
    /// When the job was submitted (PostgreSQL clock).
    public var submittedAt: Double?
    /// From the agent's result (its clock): when the attempt started, and when it ended for a final result.
    public var startedAt: Double?
    public var endedAt: Double?
}

/// A job the coordinator has just marked dispatched and must now put on a node stream.
public struct DispatchedJob: Sendable, Equatable {
    public var id: String
    public var attempt: Int
    public var kind: String
    public var spec: JSONValue
    public var vramBytes: UInt64
    public var deadlineSeconds: Double?
    public var node: String
    public var gpuUUIDs: [String]
}

/// All reads and guarded writes of job state. Every transition is an UPDATE with
/// the expected state (and attempt) in its WHERE clause, so a duplicate or late
/// message changes nothing.
public final class JobStore {
    public let db: PGConnection
    public var policy: RetryPolicy
    /// Set by a leading coordinator: its dispatches, applied results and requeues are fenced by this epoch
    /// (`Leadership.check`), so a deposed leader's late writes fail instead of racing the new leader's.
    public var leaderEpoch: Int64?
    /// Random source in [0, 1) for retry jitter (injected for tests).
    public var random: () -> Double

    /// NOTIFY channel a submission signals on, so the coordinator places new jobs without waiting for its tick.
    public static let submitChannel = "hydra_jobs"

    public init(db: PGConnection, policy: RetryPolicy = RetryPolicy(), random: @escaping () -> Double = { Double.random(in: 0..<1) }) {
        self.db = db; self.policy = policy; self.random = random
    }

    // MARK: submit

    /// Writes the batch and all its jobs in one transaction; returns the batch id.
    public func submit(_ plan: BatchPlan, submittedBy: String?) throws -> String {
        let batchID = UUID().uuidString.lowercased()
        let allIDs = plan.jobs.map { _ in UUID().uuidString.lowercased() }
        try db.transaction { tx in
            try tx.exec("INSERT INTO batches (id, name, submitted_by, priority, spec) VALUES ($1, $2, $3, $4, $5::jsonb)",
                        [batchID, plan.name, submittedBy, String(plan.priority), try plan.spec.serialized()])
            var i = 0
            while i < plan.jobs.count {
                let chunk = plan.jobs[i..<min(i + 2000, plan.jobs.count)]
                var ids: [String] = [], names: [String] = [], kinds: [String] = [], specs: [String] = []
                var prios: [String] = [], vrams: [String] = [], gpus: [String] = [], cons: [String] = []
                var maxes: [String] = [], deadlines: [String] = [], keys: [String] = [], deps: [String] = []
                for (k, j) in chunk.enumerated() {
                    ids.append(allIDs[i + k])
                    deps.append(j.dependsOn.map { allIDs[$0] }.joined(separator: ","))
                    names.append(j.name); kinds.append(j.kind); specs.append(try j.spec.serialized())
                    prios.append(String(j.priority)); vrams.append(String(j.vramBytes)); gpus.append(String(j.gpus))
                    cons.append(try j.constraints.serialized()); maxes.append(String(j.maxAttempts))
                    deadlines.append(j.deadlineSeconds.map { String($0) } ?? "NULL")
                    keys.append("\(batchID):\(i + k)")
                }
                try tx.exec("""
                    INSERT INTO jobs (id, batch_id, name, kind, spec, state, priority, vram_request_bytes, gpus_requested,
                                      placement_constraints, max_attempts, deadline_s, idempotency_key, depends_on)
                    SELECT u.id, $1::uuid, u.name, u.kind, u.spec::jsonb, 'pending', u.prio, u.vram, u.gpus, u.cons::jsonb,
                           u.maxa, u.deadline, u.key, string_to_array(u.deps, ',')::uuid[]
                    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::int[],
                                $9::text[], $10::int[], $11::float8[], $12::text[], $13::text[])
                         AS u(id, name, kind, spec, prio, vram, gpus, cons, maxa, deadline, key, deps)
                    """, [batchID, PGConnection.textArray(ids), PGConnection.textArray(names), PGConnection.textArray(kinds),
                          PGConnection.textArray(specs), "{" + prios.joined(separator: ",") + "}",
                          "{" + vrams.joined(separator: ",") + "}", "{" + gpus.joined(separator: ",") + "}",
                          PGConnection.textArray(cons), "{" + maxes.joined(separator: ",") + "}",
                          "{" + deadlines.joined(separator: ",") + "}", PGConnection.textArray(keys), PGConnection.textArray(deps)])
                i += chunk.count
            }
            try tx.exec("""
                INSERT INTO job_events (job_id, attempt, from_state, to_state, detail)
                SELECT id, 0, NULL, $2, $3::jsonb FROM jobs WHERE batch_id = $1::uuid
                """, [batchID, JobStateMachine.rule(.submitted)!.to.rawValue, JobEventRow.detail(.submitted)])
            try tx.exec("SELECT pg_notify('\(Self.submitChannel)', $1)", [batchID])
        }
        return batchID
    }

    // MARK: reads for the coordinator

    /// Pending jobs whose dependencies have all succeeded, best first, by id: what the coordinator
    /// reads on every pass, fetching whole rows only for ids it has not seen (`pendingRows`).
    public func pendingIDs(limit: Int = 10_000) throws -> [String] {
        try db.exec("""
            SELECT id FROM jobs j WHERE state = 'pending'
              AND (cardinality(depends_on) = 0 OR NOT EXISTS (
                   SELECT 1 FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.state <> 'succeeded'))
            ORDER BY priority DESC, seq LIMIT $1
            """, [String(limit)]).rows.compactMap { $0.first ?? nil }
    }

    /// Rows of the given jobs that are (still) pending.
    public func pendingRows(ids: [String]) throws -> [JobRow] {
        if ids.isEmpty { return [] }
        // `state || ''`: see `markDispatched`.
        return try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE id = ANY($1::uuid[]) AND state || '' = 'pending'",
                           [PGConnection.textArray(ids)]).all.map(JobRow.init(row:))
    }

    /// Settles jobs whose dependencies cannot succeed any more (cancelled with the reason), and
    /// explains the wait of those whose dependencies are still running. Returns the cancelled count.
    @discardableResult
    public func settleDependencies() throws -> Int {
        // Both statements below scan; most of the time no pending job has a dependency (partial index).
        let any = try db.exec("SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'pending' AND cardinality(depends_on) > 0) AS any")
        if any.all.first?.bool("any") != true { return 0 }
        let ended = JobStateMachine.sqlList(JobStateMachine.unsuccessful)
        let cancelled = try db.transaction { tx in
            try JobStateWriter(tx).bulk(.dependencyFailed, where: """
                cardinality(j.depends_on) > 0 AND EXISTS (SELECT 1 FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.state IN \(ended))
                """, [], set: ["""
                pending_reason = 'a dependency did not succeed: ' || (
                  SELECT string_agg(d.name || ' ' || d.state, ', ') FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.state IN \(ended))
                """]).count
        }
        try db.exec("""
            UPDATE jobs j SET pending_reason = 'waits for ' || w.n || ' of ' || cardinality(j.depends_on) || ' dependencies (e.g. ' || w.example || ')'
            FROM (SELECT j2.id, count(*) AS n, min(d.name || ' ' || d.state) AS example FROM jobs j2 JOIN jobs d ON d.id = ANY(j2.depends_on)
                  WHERE j2.state = 'pending' AND cardinality(j2.depends_on) > 0 AND d.state <> 'succeeded' GROUP BY j2.id) w
            WHERE j.id = w.id AND j.pending_reason IS DISTINCT FROM
                  'waits for ' || w.n || ' of ' || cardinality(j.depends_on) || ' dependencies (e.g. ' || w.example || ')'
            """)
        return cancelled
    }

    public func activeJobs() throws -> [JobRow] {
        try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE state IN ('placed', 'dispatched', 'running')").all.map(JobRow.init(row:))
    }

    public func job(_ id: String) throws -> JobRow? {
        guard UUID(uuidString: id) != nil else { return nil }
        return try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE id = $1::uuid", [id]).all.first.map(JobRow.init(row:))
    }

    // MARK: transitions

    /// pending → dispatched for each assignment (guarded); bumps the attempt and sets the lease.
    public struct Placement: Sendable {
        public var jobID: String
        public var node: String
        public var gpuUUIDs: [String]
        /// Per GPU; nil keeps the job's request.
        public var reservedBytes: UInt64?
        public var gpuModel: String?
        /// The job's spec when the caller already holds it: then it is not read back from PostgreSQL.
        public var spec: JSONValue?
        /// The id its envelope will get on the node stream, when the caller chooses it (see `StreamIDAllocator`).
        public var streamID: String?
        public init(jobID: String, node: String, gpuUUIDs: [String], reservedBytes: UInt64? = nil, gpuModel: String? = nil,
                    spec: JSONValue? = nil, streamID: String? = nil) {
            self.jobID = jobID; self.node = node; self.gpuUUIDs = gpuUUIDs; self.reservedBytes = reservedBytes; self.gpuModel = gpuModel
            self.spec = spec; self.streamID = streamID
        }
    }

    /// The state guard is written `j.state || ''` on purpose: PostgreSQL's statistics lag behind a freshly
    /// submitted batch (they may say a handful of jobs are pending when 20,000 are), and with a plain
    /// `state = 'pending'` it would read every pending row once per assignment through the state indexes
    /// (12 million comparisons for 5,000 assignments, measured). As an expression no index matches, the
    /// rows can only be found by primary key, one lookup per assignment (with the settings of
    /// `PGConnection.keyLookupSettings`, which also rule out scanning the table once and hashing it).
    /// Dispatch has one source state, so the hot UPDATE below can guard with a plain comparison.
    static let dispatch: JobStateMachine.Rule = {
        let r = JobStateMachine.rule(.dispatched)!
        precondition(r.from.count == 1, "markDispatched guards on one source state")
        return r
    }()

    public func markDispatched(_ assignments: [Placement], leaseSeconds: Double) throws -> [DispatchedJob] {
        if assignments.isEmpty { return [] }
        var known: [String: JSONValue] = [:]
        for a in assignments { if let s = a.spec { known[a.jobID] = s } }
        let readSpec = known.count < assignments.count
        return try db.transaction { tx in
            try fence(tx)
            let rows = try tx.exec("""
                UPDATE jobs AS j SET state = '\(Self.dispatch.to.rawValue)', \(JobStateWriter.assignments(Self.dispatch.effects).joined(separator: ", ")),
                       node = v.node, gpu_uuids = string_to_array(v.gpus, ','), dispatched_at = now(), started_at = NULL,
                       lease_expires_at = now() + make_interval(secs => $4::float8), pending_reason = NULL, stream_id = v.sid,
                       reserved_bytes = coalesce(v.reserved, j.vram_request_bytes), gpu_model = v.model
                FROM unnest($1::uuid[], $2::text[], $3::text[], $5::bigint[], $6::text[], $7::text[]) AS v(id, node, gpus, reserved, model, sid)
                WHERE j.id = v.id AND j.state || '' = '\(Self.dispatch.from[0].rawValue)'
                RETURNING j.id, j.attempt, j.kind, \(readSpec ? "j.spec" : "NULL AS spec"), j.reserved_bytes, j.deadline_s, j.node, j.gpu_uuids
                """, [PGConnection.textArray(assignments.map(\.jobID)), PGConnection.textArray(assignments.map(\.node)),
                      PGConnection.textArray(assignments.map { $0.gpuUUIDs.joined(separator: ",") }), String(leaseSeconds),
                      "{" + assignments.map { $0.reservedBytes.map(String.init) ?? "NULL" }.joined(separator: ",") + "}",
                      PGConnection.optionalTextArray(assignments.map { $0.gpuModel.map { StoredText.clean($0, maxBytes: 256) } }),
                      PGConnection.optionalTextArray(assignments.map(\.streamID))])
            let out = rows.all.map { r in
                DispatchedJob(id: r["id"] ?? "", attempt: r.int("attempt") ?? 0, kind: r["kind"] ?? "",
                              spec: known[r["id"] ?? ""] ?? r.json("spec") ?? .object([:]), vramBytes: UInt64(r.int64("reserved_bytes") ?? 0),
                              deadlineSeconds: r.double("deadline_s"), node: r["node"] ?? "", gpuUUIDs: r.textArray("gpu_uuids"))
            }
            // Serialized, never spliced: a node or GPU name with a quote or a backslash stays data.
            try JobStateWriter(tx).record(out.map {
                JobEventRow(jobID: $0.id, attempt: $0.attempt, from: Self.dispatch.from[0], to: Self.dispatch.to,
                            detail: JobEventRow.detail(.dispatched, ["node": .string($0.node)]))
            })
            return out
        }
    }

    /// Records where envelopes went when their ids were not chosen up front; nil clears an id that
    /// may not exist (a failed XADD), so that a later clean-up cannot delete someone else's entry.
    public func setStreamIDs(_ items: [(jobID: String, attempt: Int, streamID: String?)]) throws {
        if items.isEmpty { return }
        try db.exec("""
            UPDATE jobs AS j SET stream_id = v.sid FROM unnest($1::uuid[], $2::int[], $3::text[]) AS v(id, attempt, sid)
            WHERE j.id = v.id AND j.attempt = v.attempt
            """, [PGConnection.textArray(items.map(\.jobID)), "{" + items.map { String($0.attempt) }.joined(separator: ",") + "}",
                  PGConnection.optionalTextArray(items.map(\.streamID))])
    }

    /// Applies agents' results. A result for another attempt than the job's current
    /// one is fenced off (ignored): a late agent cannot overwrite a newer attempt.
    ///
    /// One round trip per statement, not per result: the rows are read once, the
    /// state machine runs here (all results of one job in order, e.g. `started` then
    /// `succeeded`, folded into one row change), then a single UPDATE … FROM unnest applies
    /// every change, still guarded by the expected state and attempt, and one INSERT records
    /// the events.
    public func apply(results: [AttemptResult]) throws -> [AppliedTransition] {
        if results.isEmpty { return [] }
        return try db.transaction { tx in
            try fence(tx)
            let ids = Array(Set(results.map(\.jobID).filter { UUID(uuidString: $0) != nil }))
            if ids.isEmpty { return [] }
            var current: [String: ResultFolder.Row] = [:]
            for r in try tx.exec("""
                SELECT id, state, attempt, max_attempts, node, stream_id, kind, gpu_uuids, extract(epoch from submitted_at) AS submitted,
                       lower(coalesce(spec->>'model', '')) AS model_key, coalesce(gpu_model, 'cpu') AS gpu_model
                FROM jobs WHERE id = ANY($1::uuid[])
                """, [PGConnection.textArray(ids)]).all {
                let id = r["id"] ?? ""
                current[id] = ResultFolder.Row(state: JobState(rawValue: r["state"] ?? "") ?? .pending, attempt: r.int("attempt") ?? 0,
                                               maxAttempts: r.int("max_attempts") ?? 3, node: r["node"], streamID: r["stream_id"],
                                               kind: r["kind"] ?? "", gpuUUIDs: r.textArray("gpu_uuids"), submittedAt: r.double("submitted"),
                                               modelKey: r["model_key"] ?? "", gpuModel: r["gpu_model"] ?? "cpu")
            }
            let folded = try ResultFolder.fold(results, current: current, policy: policy, random: random, now: Date().timeIntervalSince1970)
            let order = folded.order
            var applied = folded.applied, events = folded.events, samples = folded.samples
            if order.isEmpty { return [] }
            let cs = order.map { folded.changes[$0]! }
            let num = { (v: Double?) in v.map { String($0) } ?? "NULL" }
            let updated = try tx.exec("""
                UPDATE jobs AS j SET state = v.to_state,
                       started_at = CASE WHEN v.force THEN to_timestamp(v.started) ELSE coalesce(j.started_at, to_timestamp(v.started)) END,
                       result = coalesce(v.result::jsonb, j.result),
                       error = CASE WHEN v.err IS NULL THEN j.error ELSE j.error || v.err::jsonb END,
                       failure_class = coalesce(v.fc, j.failure_class),
                       finished_at = CASE WHEN v.finished THEN now() ELSE j.finished_at END,
                       max_attempts = j.max_attempts + v.bump,
                       node = CASE WHEN v.clear THEN NULL ELSE j.node END,
                       gpu_uuids = CASE WHEN v.clear THEN NULL ELSE j.gpu_uuids END,
                       lease_expires_at = CASE WHEN v.clear OR v.finished THEN NULL ELSE j.lease_expires_at END,
                       not_before = CASE WHEN v.backoff IS NULL THEN j.not_before ELSE now() + make_interval(secs => v.backoff) END
                FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::float8[], $6::boolean[], $7::text[], $8::text[],
                            $9::text[], $10::boolean[], $11::int[], $12::boolean[], $13::float8[])
                     AS v(id, from_state, attempt, to_state, started, force, result, err, fc, finished, bump, clear, backoff)
                WHERE j.id = v.id AND j.state || '' = v.from_state AND j.attempt = v.attempt
                RETURNING j.id
                """, [PGConnection.textArray(order), PGConnection.textArray(cs.map(\.from.rawValue)),
                      "{" + cs.map { String($0.attempt) }.joined(separator: ",") + "}", PGConnection.textArray(cs.map(\.to.rawValue)),
                      "{" + cs.map { num($0.startedAt) }.joined(separator: ",") + "}",
                      "{" + cs.map { $0.startedForce ? "t" : "f" }.joined(separator: ",") + "}",
                      PGConnection.optionalTextArray(cs.map(\.result)),
                      PGConnection.optionalTextArray(try cs.map { $0.errors.isEmpty ? nil : try JSONValue.array($0.errors).serialized() }),
                      PGConnection.optionalTextArray(cs.map(\.failureClass)),
                      "{" + cs.map { $0.finished ? "t" : "f" }.joined(separator: ",") + "}",
                      "{" + cs.map { String($0.maxBump) }.joined(separator: ",") + "}",
                      "{" + cs.map { $0.clearNode ? "t" : "f" }.joined(separator: ",") + "}",
                      "{" + cs.map { num($0.backoff) }.joined(separator: ",") + "}"])
            // The rows are read without FOR UPDATE (locking every row cost a WAL record each): a row changed
            // meanwhile (requeued by a lease, cancelled) fails its guard, and its result counts as one that
            // arrived after that change, which the state machine would have ignored too.
            let done = Set(updated.rows.compactMap { $0.first ?? nil })
            if done.count != order.count {
                applied.removeAll { !done.contains($0.jobID) }
                events.removeAll { !done.contains($0.jobID) }
                samples.removeAll { !done.contains($0.jobID) }
            }
            try JobStateWriter(tx).record(events)
            try recordRuntimes(tx, samples)
            return applied
        }
    }

    /// Largest result document kept per attempt; a bigger one keeps its size and an excerpt.
    public static let maxResultBytes = 256 * 1024

    static func cappedResult(_ v: JSONValue) throws -> String {
        let text = try v.serialized()
        if text.utf8.count <= maxResultBytes { return text }
        return try JSONValue.object([
            "truncated": .bool(true), "bytes": .number(Double(text.utf8.count)),
            "excerpt": .string(StoredText.clean(text, maxBytes: 4096)),
        ]).serialized()
    }

    /// Fails an attempt whose result cannot be applied (see `CoordinatorService.quarantine`): the job
    /// ends `failed` with class `bad_result` and the reason, without retries, so that one bad result
    /// is dealt with once instead of blocking every other result behind it.
    @discardableResult
    public func failBadResult(jobID: String, attempt: Int, node: String, reason: String) throws -> AppliedTransition? {
        guard UUID(uuidString: jobID) != nil else { return nil }
        return try db.transaction { tx in
            try fence(tx)
            let entry = try JSONValue.array([.object([
                "attempt": .number(Double(attempt)), "class": .string(FailureClass.badResult.rawValue),
                "message": .string(StoredText.clean(reason, maxBytes: 4096)), "node": .string(StoredText.clean(node, maxBytes: 256)),
                "at": .number(Date().timeIntervalSince1970),
            ])]).serialized()
            guard let fromRaw = try tx.exec("SELECT state FROM jobs WHERE id = $1::uuid AND attempt = $2::int FOR UPDATE",
                                            [jobID, String(attempt)]).all.first?["state"],
                  let from = JobState(rawValue: fromRaw),
                  let t = JobStateMachine.transition(from, .resultQuarantined, attempt: attempt, maxAttempts: attempt) else { return nil }
            let sets = ["state = $4", "failure_class = '\(FailureClass.badResult.rawValue)'", "error = error || $3::jsonb"]
                + JobStateWriter.assignments(t.effects)
            let rows = try tx.exec("""
                UPDATE jobs j SET \(sets.joined(separator: ", "))
                WHERE id = $1::uuid AND attempt = $2::int AND state = $5
                RETURNING state, node, stream_id, kind, gpu_uuids
                """, [jobID, String(attempt), entry, t.to.rawValue, from.rawValue]).all
            guard let r = rows.first else { return nil }
            try JobStateWriter(tx).record([JobEventRow(jobID: jobID, attempt: attempt, from: from, to: t.to, detail: JobEventRow.detail(
                .resultQuarantined, ["reason": .string(StoredText.clean(reason, maxBytes: 4096))]))])
            return AppliedTransition(jobID: jobID, attempt: attempt, from: from, to: t.to, node: r["node"], streamID: r["stream_id"],
                                     kind: r["kind"] ?? "", gpuUUIDs: r.textArray("gpu_uuids"))
        }
    }

    func fence(_ tx: PGConnection) throws {
        if let e = leaderEpoch { try Leadership.check(tx, epoch: e) }
    }

    /// Extends the lease of the attempts a node's (verified) heartbeat says it holds: only where that
    /// node holds that attempt of that job, so no heartbeat keeps another node's job alive.
    public func renewLeases(held: [(node: String, job: HeldJob)], leaseSeconds: Double) throws {
        let items = held.filter { UUID(uuidString: $0.job.id) != nil }
        if items.isEmpty { return }
        // SKIP LOCKED: a row locked right now is being finished or requeued by another loop of the
        // coordinator; waiting for it could deadlock with that loop's transaction, and it needs no lease.
        try db.exec("""
            UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $4::float8)
            WHERE id = ANY(ARRAY(SELECT j.id FROM jobs j JOIN unnest($1::uuid[], $2::text[], $3::int[]) AS v(id, node, attempt)
                                   ON j.id = v.id AND j.node = v.node AND j.attempt = v.attempt
                                 WHERE j.state IN ('dispatched', 'running')
                                 ORDER BY j.id FOR UPDATE OF j SKIP LOCKED))
            """, [PGConnection.textArray(items.map(\.job.id)), PGConnection.textArray(items.map(\.node)),
                  "{" + items.map { String($0.job.attempt) }.joined(separator: ",") + "}", String(leaseSeconds)])
    }

    /// Dispatched (not yet started) jobs whose lease ends within `within` seconds.
    public func dispatchedLeasesEndingSoon(within: Double, limit: Int = 5000) throws -> [(jobID: String, attempt: Int, node: String, streamID: String?)] {
        try db.exec("""
            SELECT id, attempt, node, stream_id FROM jobs
            WHERE state = 'dispatched' AND lease_expires_at < now() + make_interval(secs => $1::float8) LIMIT $2
            """, [String(within), String(limit)]).all.compactMap { r in
            guard let id = r["id"], let a = r.int("attempt"), let n = r["node"] else { return nil }
            return (id, a, n, r["stream_id"])
        }
    }

    /// Jobs whose lease ran out (their message was lost, or nobody claims them), or that sit on a
    /// node the coordinator no longer hears from (`deadNodes`, judged on its own clock), are `lost`:
    /// back to pending, or dead when out of attempts.
    public func expireLeases(deadNodes: [String]) throws -> [AppliedTransition] {
        try db.transaction { tx in
            try fence(tx)
            let rows = try tx.exec("""
                SELECT id, state, attempt, max_attempts, node, stream_id, kind FROM jobs
                WHERE state = ANY($2::text[])
                  AND (lease_expires_at < now() OR node = ANY($1::text[]))
                FOR UPDATE SKIP LOCKED
                """, [PGConnection.textArray(deadNodes), PGConnection.textArray(JobStateMachine.sources(.lost).map(\.rawValue))]).all
            var applied: [AppliedTransition] = []
            var events: [JobEventRow] = []
            for r in rows {
                guard let id = r["id"], let from = JobState(rawValue: r["state"] ?? ""), let attempt = r.int("attempt") else { continue }
                let maxA = r.int("max_attempts") ?? 3
                guard let t = JobStateMachine.transition(from, .lost, attempt: attempt, maxAttempts: maxA, policy: policy, random: 0) else { continue }
                let next = t.to
                let entry = try JSONValue.array([.object([
                    "attempt": .number(Double(attempt)), "class": .string("lost"),
                    "message": .string("lost on node \(r["node"] ?? "?") (node silent or message lost)"),
                    "node": .string(r["node"] ?? ""), "at": .number(Date().timeIntervalSince1970),
                ])]).serialized()
                // A lost attempt is retried at once (no backoff): the node, not the job, failed.
                let sets = ["state = $3", "failure_class = '\(FailureClass.lost.rawValue)'", "error = error || $5::jsonb", "lease_expires_at = NULL"]
                    + JobStateWriter.assignments(t.effects)
                let res = try tx.exec("""
                    UPDATE jobs j SET \(Array(Set(sets)).sorted().joined(separator: ", "))
                    WHERE id = $1::uuid AND state = $2 AND attempt = $4::int
                    """, [id, from.rawValue, next.rawValue, String(attempt), entry])
                guard res.affected == 1 else { continue }
                applied.append(AppliedTransition(jobID: id, attempt: attempt, from: from, to: next, node: r["node"],
                                                 streamID: r["stream_id"], kind: r["kind"] ?? ""))
                events.append(JobEventRow(jobID: id, attempt: attempt, from: from, to: next, detail: JobEventRow.detail(.lost)))
            }
            try JobStateWriter(tx).record(events)
            return applied
        }
    }

    /// retry_wait → pending once the backoff has elapsed.
    @discardableResult
    public func releaseBackoffs() throws -> Int {
        try db.transaction { tx in try JobStateWriter(tx).bulk(.backoffElapsed, where: "j.not_before <= now()", []).count }
    }

    public func setPendingReasons(_ reasons: [String: String]) throws {
        if reasons.isEmpty { return }
        let keys = Array(reasons.keys)
        try db.exec("""
            UPDATE jobs AS j SET pending_reason = v.reason FROM unnest($1::uuid[], $2::text[]) AS v(id, reason)
            WHERE j.id = v.id AND j.state || '' = 'pending' AND j.pending_reason IS DISTINCT FROM v.reason
            """, [PGConnection.textArray(keys), PGConnection.textArray(keys.map { reasons[$0]! })])
    }

    /// Cancelled attempts whose agent has not been told yet (`cancel_requests`).
    public func cancellationsToSend() throws -> [(jobID: String, attempt: Int, node: String, streamID: String?)] {
        try db.exec("SELECT job_id, attempt, node, stream_id FROM cancel_requests WHERE sent_at IS NULL ORDER BY requested_at LIMIT 1000").all.map {
            ($0["job_id"] ?? "", $0.int("attempt") ?? 0, $0["node"] ?? "", $0["stream_id"])
        }
    }

    public func markCancelSent(_ items: [(jobID: String, attempt: Int)]) throws {
        if items.isEmpty { return }
        try db.exec("""
            UPDATE cancel_requests c SET sent_at = now() FROM unnest($1::uuid[], $2::int[]) AS v(id, attempt)
            WHERE c.job_id = v.id AND c.attempt = v.attempt
            """, [PGConnection.textArray(items.map(\.jobID)), "{" + items.map { String($0.attempt) }.joined(separator: ",") + "}"])
        try db.exec("UPDATE jobs SET cancel_sent = true WHERE id = ANY($1::uuid[]) AND state = 'cancelled'", [PGConnection.textArray(items.map(\.jobID))])
    }

    // MARK: nodes

    public func upsertNodes(_ nodes: [NodeRow]) throws {
        for n in nodes {
            try db.exec("""
                INSERT INTO nodes (name, last_seen, up, agent_version, inventory, running)
                VALUES ($1, to_timestamp($2::float8), $3::boolean, $4, $5::jsonb, $6::jsonb)
                ON CONFLICT (name) DO UPDATE SET last_seen = coalesce(EXCLUDED.last_seen, nodes.last_seen), up = EXCLUDED.up,
                    agent_version = coalesce(EXCLUDED.agent_version, nodes.agent_version),
                    inventory = coalesce(EXCLUDED.inventory, nodes.inventory), running = EXCLUDED.running
                """, [n.name, n.lastSeen.map { String($0) }, n.up ? "true" : "false", n.agentVersion,
                      n.up ? try JSONCoding.encodeString(n.inventory) : nil, try JSONCoding.encodeString(n.running)])
        }
    }

    public func markNodesDown(except live: [String]) throws {
        try db.exec("UPDATE nodes SET up = false, running = '[]'::jsonb WHERE up AND NOT (name = ANY($1::text[]))", [PGConnection.textArray(live)])
    }

    public func nodes() throws -> [NodeRow] {
        try db.exec("SELECT name, extract(epoch from last_seen) AS last_seen, up, draining, agent_version, inventory, running FROM nodes ORDER BY name").all.map { r in
            let inv = r["inventory"].flatMap { try? JSONCoding.decode(Inventory.self, from: $0) } ?? Inventory()
            let running = r["running"].flatMap { try? JSONCoding.decode([String].self, from: $0) } ?? []
            return NodeRow(name: r["name"] ?? "", lastSeen: r.double("last_seen"), up: r.bool("up") ?? false,
                           draining: r.bool("draining") ?? false, agentVersion: r["agent_version"], inventory: inv, running: running)
        }
    }

    public func setDraining(node: String, _ draining: Bool) throws -> Bool {
        try db.exec("UPDATE nodes SET draining = $2::boolean WHERE name = $1", [node, draining ? "true" : "false"]).affected == 1
    }
}
