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
        let tails = plan.tails(ownS: plan.jobs.map {
            DependencyTails.ownS(kind: $0.kind, spec: $0.spec, cpuOnly: RouterJob.cpuOnly(gpus: $0.gpus, vramBytes: $0.vramBytes))
        })
        // An ID for each entry some entry waits on; only their jobs carry it (`jobs_group_unfinished` stays small).
        var waitedOn = [String?](repeating: nil, count: plan.groups.count)
        for g in plan.groups { for d in g.after where waitedOn.indices.contains(d) { waitedOn[d] = waitedOn[d] ?? UUID().uuidString.lowercased() } }
        let groupOf = plan.groupOfJob()
        let afterOf = plan.groups.map { PGConnection.textArray($0.after.compactMap { waitedOn.indices.contains($0) ? waitedOn[$0] : nil }) }
        // The jobs of the entries each entry is after, in all: the upcoming cap and "waits for n of m" read it.
        let afterSize = plan.groups.map { g in Set(g.after).reduce(0) { $0 + (plan.groups.indices.contains($1) ? plan.groups[$1].jobs.count : 0) } }
        try db.transaction { tx in
            try tx.exec("INSERT INTO batches (id, name, submitted_by, priority, spec) VALUES ($1, $2, $3, $4, $5::jsonb)",
                        [batchID, plan.name, submittedBy, String(plan.priority), try plan.spec.serialized()])
            let named = plan.groups.indices.filter { waitedOn[$0] != nil }
            if !named.isEmpty {
                try tx.exec("""
                    INSERT INTO job_groups (id, batch_id, name, size)
                    SELECT u.id, $1::uuid, u.name, u.size FROM unnest($2::uuid[], $3::text[], $4::int[]) AS u(id, name, size)
                    """, [batchID, PGConnection.textArray(named.map { waitedOn[$0]! }), PGConnection.textArray(named.map { plan.groups[$0].name }),
                          "{" + named.map { String(plan.groups[$0].jobs.count) }.joined(separator: ",") + "}"])
            }
            var i = 0
            while i < plan.jobs.count {
                let chunk = plan.jobs[i..<min(i + 2000, plan.jobs.count)]
                var ids: [String] = [], names: [String] = [], kinds: [String] = [], specs: [String] = []
                var prios: [String] = [], vrams: [String] = [], gpus: [String] = [], cons: [String] = []
                var maxes: [String] = [], deadlines: [String] = [], keys: [String] = [], tailS: [String] = []
                var memberOf: [String] = [], afters: [String] = [], sizes: [String] = []
                for (k, j) in chunk.enumerated() {
                    ids.append(allIDs[i + k])
                    let g = groupOf[i + k]
                    memberOf.append(g.flatMap { waitedOn[$0] } ?? "NULL")
                    afters.append(g.map { afterOf[$0] } ?? "{}")
                    sizes.append(String(g.map { afterSize[$0] } ?? 0))
                    names.append(j.name); kinds.append(j.kind); specs.append(try j.spec.serialized())
                    prios.append(String(j.priority)); vrams.append(String(j.vramBytes)); gpus.append(String(j.gpus))
                    cons.append(try j.constraints.serialized()); maxes.append(String(j.maxAttempts))
                    deadlines.append(j.deadlineSeconds.map { String($0) } ?? "NULL")
                    keys.append("\(batchID):\(i + k)")
                    tailS.append(tails[i + k].isFinite ? String(tails[i + k]) : "0")
                }
                try tx.exec("""
                    INSERT INTO jobs (id, batch_id, name, kind, spec, state, priority, vram_request_bytes, gpus_requested,
                                      placement_constraints, max_attempts, deadline_s, idempotency_key, dep_group, after_groups, after_size, tail_s)
                    SELECT u.id, $1::uuid, u.name, u.kind, u.spec::jsonb, 'pending', u.prio, u.vram, u.gpus, u.cons::jsonb,
                           u.maxa, u.deadline, u.key, u.grp, u.aft::uuid[], u.asz, u.tail
                    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::int[],
                                $9::text[], $10::int[], $11::float8[], $12::text[], $13::uuid[], $14::text[], $15::int[], $16::float8[])
                         AS u(id, name, kind, spec, prio, vram, gpus, cons, maxa, deadline, key, grp, aft, asz, tail)
                    """, [batchID, PGConnection.textArray(ids), PGConnection.textArray(names), PGConnection.textArray(kinds),
                          PGConnection.textArray(specs), "{" + prios.joined(separator: ",") + "}",
                          "{" + vrams.joined(separator: ",") + "}", "{" + gpus.joined(separator: ",") + "}",
                          PGConnection.textArray(cons), "{" + maxes.joined(separator: ",") + "}",
                          "{" + deadlines.joined(separator: ",") + "}", PGConnection.textArray(keys),
                          "{" + memberOf.joined(separator: ",") + "}", PGConnection.textArray(afters),
                          "{" + sizes.joined(separator: ",") + "}", "{" + tailS.joined(separator: ",") + "}"])
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
        try Self.inSnapshot(db) { tx in
            let busy = try Self.busyEntries(tx)
            return try tx.exec("""
                SELECT id FROM jobs j WHERE state = 'pending' AND \(Self.dependenciesDone(of: "j", busy: "$2"))
                ORDER BY priority DESC, seq LIMIT $1
                """, [String(limit), PGConnection.textArray(busy)]).rows.compactMap { $0.first ?? nil }
        }
    }

    /// Runs `body` in one read-only snapshot. The busy entries are read first and passed to the next
    /// statement: a batch committed in between must not show jobs whose entries that read missed.
    static func inSnapshot<T>(_ db: PGConnection, _ body: (PGConnection) throws -> T) throws -> T {
        try db.transaction { tx in
            try tx.exec("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return try body(tx)
        }
    }

    /// The entries pending jobs are after that still have a job that has not succeeded. The statements
    /// that follow get them as a constant array, which PostgreSQL looks up by hash: asking per waiting
    /// job instead let the planner scan the whole table per job (on a table without statistics,
    /// 3 000 × 6 000 rows, 2.4 s), and comparing arrays costs their product (10 000 one-job entries,
    /// each after another: the ready list 0.3 s, the sweep 6.5 s). Only the entries pending jobs name
    /// are looked up (one probe of `jobs_group_unfinished` each): that index also keeps every job that
    /// failed for good in a waited-on entry, for as long as its row exists, and reading all of it each
    /// pass cost 0.2 s with 100 000 such entries (`hydra-dev bench deps --stale-entries`).
    static func busyEntries(_ db: PGConnection) throws -> [String] {
        let named = try waitedOnEntries(db)
        if named.isEmpty { return [] }
        return try db.exec("""
            SELECT DISTINCT dep_group AS id FROM jobs
            WHERE dep_group = ANY($1::uuid[]) AND dep_group IS NOT NULL AND state <> 'succeeded'
            """, [PGConnection.textArray(named)]).rows.compactMap { $0.first ?? nil }
    }

    /// The entries pending jobs are after (`jobs_pending_deps`: empty unless some job waits).
    static func waitedOnEntries(_ db: PGConnection) throws -> [String] {
        try db.exec("""
            SELECT DISTINCT w.id FROM jobs j, unnest(j.after_groups) AS w(id) WHERE j.state = 'pending' AND cardinality(j.after_groups) > 0
            """).rows.compactMap { $0.first ?? nil }
    }

    /// SQL: the row aliased `alias` is after none of the entries in the uuid array `busy` (a parameter).
    static func dependenciesDone(of alias: String, busy: String) -> String {
        "(cardinality(\(alias).after_groups) = 0 OR NOT \(afterAny(of: alias, in: busy)))"
    }

    /// SQL: the row aliased `alias` is after one of the entries in the uuid array `param`.
    static func afterAny(of alias: String, in param: String) -> String {
        "EXISTS (SELECT 1 FROM unnest(\(alias).after_groups) AS w_\(alias)(id) WHERE w_\(alias).id = ANY(\(param)::uuid[]))"
    }

    /// Pending jobs that still wait on a dependency, where every dependency not yet succeeded is
    /// itself ready (pending with its own dependencies done, or waiting out a retry backoff) or
    /// on a node: they become ready within about one job's runtime. The router counts their work
    /// on the GPUs they will need (`Router.place(upcoming:)`), best first, as `pendingIDs`; each
    /// row's `waitsOn` lists the unfinished jobs it waits on.
    /// Only a hint, so it is cheap or nothing: jobs whose entries hold more than `maxDependencies` jobs
    /// in all are left out, and a query that runs past `timeoutMS` is cancelled and returns nil.
    public func upcomingRows(limit: Int = 10_000, maxDependencies: Int = 256, timeoutMS: Int = 250) throws -> [JobRow]? {
        do {
            return try Self.inSnapshot(db) { tx in
                try tx.exec("SET LOCAL statement_timeout = \(max(1, timeoutMS))")
                let busy = try Self.busyEntries(tx)
                if busy.isEmpty { return [] }
                // The unfinished jobs of the busy entries small enough to count, and whether each is near.
                var members: [String: [String]] = [:]
                var allNear: [String: Bool] = [:]
                for r in try tx.exec("""
                    SELECT u.dep_group AS g, u.id, (u.state IN ('placed', 'dispatched', 'running', 'retry_wait')
                           OR (u.state = 'pending' AND \(Self.dependenciesDone(of: "u", busy: "$2")))) AS near
                    FROM jobs u JOIN job_groups s ON s.id = u.dep_group AND s.size <= $1
                    WHERE u.dep_group IS NOT NULL AND u.state <> 'succeeded'
                    """, [String(maxDependencies), PGConnection.textArray(busy)]).all {
                    guard let g = r["g"], let id = r["id"] else { continue }
                    members[g, default: []].append(id)
                    allNear[g] = (allNear[g] ?? true) && r.bool("near") == true
                }
                // A job after any of these is not about to be ready: a big entry, or one with a job far off.
                let far = busy.filter { allNear[$0] != true }
                let rows = try tx.exec("""
                    SELECT \(JobRow.columns), after_groups FROM jobs j
                    WHERE state = 'pending' AND cardinality(after_groups) > 0 AND after_size <= $2
                      AND \(Self.afterAny(of: "j", in: "$3")) AND NOT \(Self.afterAny(of: "j", in: "$4"))
                    ORDER BY priority DESC, seq LIMIT $1
                    """, [String(limit), String(maxDependencies), PGConnection.textArray(busy), PGConnection.textArray(far)]).all
                return rows.map { r in
                    var row = JobRow(row: r)
                    row.waitsOn = r.textArray("after_groups").flatMap { members[$0] ?? [] }
                    return row
                }
            }
        } catch let e as PGError where e.sqlState == "57014" {
            return nil   // query_canceled: the statement timeout
        }
    }

    /// Rows of jobs that `pendingIDs` just listed as ready, for the coordinator's pass (it reads a row
    /// when its id first shows in that list). A job with dependencies is marked ready here (`ready_at`,
    /// once; the router ages it from then) at the time the last job of the entries it is after ended
    /// (`finished_at`, one probe of `jobs_group_finished` per job and entry), or now if none recorded one. So a
    /// job first read late, behind a full pass window (`placementBatch`) or after the coordinator was
    /// down, still ages from when it became ready, as in the simulator. Only ids from `pendingIDs`: a
    /// dependency that succeeded stays so, so they are still ready, and checking again per job is the
    /// probe the ready list avoids. Jobs without dependencies are not written (ready at submission). A
    /// deposed leader's late mark is harmless: it only fills an empty time, with the same value.
    public func readyRows(ids: [String]) throws -> [JobRow] {
        if ids.isEmpty { return [] }
        // Rows locked in id order, as every set-based write of `jobs` locks them (`JobStateWriter.bulk`):
        // a cancel of the same batch at the same moment waits or is waited for, never deadlocks. Each job's
        // entries are probed per job: joining the marked jobs to a table of entry ends instead, PostgreSQL
        // estimated a few rows each side and some runs took a nested loop (16 s for 10 000 jobs instead of
        // 0.2 s), and scanning such a table per job took 6.5 s with 5 000 entries. The end is never later
        // than now: the same clock (`finished_at = now()` when a result is written).
        try db.exec("""
            WITH marked AS (
                SELECT id, after_groups FROM jobs
                WHERE id = ANY($1::uuid[]) AND state = 'pending' AND cardinality(after_groups) > 0 AND ready_at IS NULL
                ORDER BY id FOR UPDATE)
            UPDATE jobs j SET ready_at = least(now(), coalesce(\(Self.entriesEnd(of: "m")), now()))
            FROM marked m WHERE j.id = m.id
            """, [PGConnection.textArray(ids)])
        return try pendingRows(ids: ids)
    }

    /// SQL: when the last job of the entries the row aliased `alias` is after ended (null if none
    /// recorded an end): one probe of `jobs_group_finished` per entry.
    static func entriesEnd(of alias: String) -> String {
        """
        (SELECT max(f.at) FROM unnest(\(alias).after_groups) AS w(g),
                LATERAL (SELECT max(e.finished_at) AS at FROM jobs e WHERE e.dep_group = w.g) f)
        """
    }

    /// Rows of the given jobs that are (still) pending.
    public func pendingRows(ids: [String]) throws -> [JobRow] {
        if ids.isEmpty { return [] }
        // `state || ''`: see `markDispatched`.
        return try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE id = ANY($1::uuid[]) AND state || '' = 'pending'",
                           [PGConnection.textArray(ids)]).all.map(JobRow.init(row:))
    }

    public func activeJobs() throws -> [JobRow] {
        try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE state IN ('placed', 'dispatched', 'running')").all.map(JobRow.init(row:))
    }

    public func job(_ id: String) throws -> JobRow? {
        guard UUID(uuidString: id) != nil else { return nil }
        return try db.exec("SELECT \(JobRow.columns) FROM jobs WHERE id = $1::uuid", [id]).all.first.map(JobRow.init(row:))
    }

    func fence(_ tx: PGConnection) throws {
        if let e = leaderEpoch { try Leadership.check(tx, epoch: e) }
    }
}
