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
        let tails = DependencyTails.compute(dependsOn: plan.jobs.map(\.dependsOn), ownS: plan.jobs.map {
            DependencyTails.ownS(kind: $0.kind, spec: $0.spec, cpuOnly: RouterJob.cpuOnly(gpus: $0.gpus, vramBytes: $0.vramBytes))
        })
        try db.transaction { tx in
            try tx.exec("INSERT INTO batches (id, name, submitted_by, priority, spec) VALUES ($1, $2, $3, $4, $5::jsonb)",
                        [batchID, plan.name, submittedBy, String(plan.priority), try plan.spec.serialized()])
            var i = 0
            while i < plan.jobs.count {
                let chunk = plan.jobs[i..<min(i + 2000, plan.jobs.count)]
                var ids: [String] = [], names: [String] = [], kinds: [String] = [], specs: [String] = []
                var prios: [String] = [], vrams: [String] = [], gpus: [String] = [], cons: [String] = []
                var maxes: [String] = [], deadlines: [String] = [], keys: [String] = [], deps: [String] = [], tailS: [String] = []
                for (k, j) in chunk.enumerated() {
                    ids.append(allIDs[i + k])
                    deps.append(j.dependsOn.map { allIDs[$0] }.joined(separator: ","))
                    names.append(j.name); kinds.append(j.kind); specs.append(try j.spec.serialized())
                    prios.append(String(j.priority)); vrams.append(String(j.vramBytes)); gpus.append(String(j.gpus))
                    cons.append(try j.constraints.serialized()); maxes.append(String(j.maxAttempts))
                    deadlines.append(j.deadlineSeconds.map { String($0) } ?? "NULL")
                    keys.append("\(batchID):\(i + k)")
                    tailS.append(tails[i + k].isFinite ? String(tails[i + k]) : "0")
                }
                try tx.exec("""
                    INSERT INTO jobs (id, batch_id, name, kind, spec, state, priority, vram_request_bytes, gpus_requested,
                                      placement_constraints, max_attempts, deadline_s, idempotency_key, depends_on, tail_s)
                    SELECT u.id, $1::uuid, u.name, u.kind, u.spec::jsonb, 'pending', u.prio, u.vram, u.gpus, u.cons::jsonb,
                           u.maxa, u.deadline, u.key, string_to_array(u.deps, ',')::uuid[], u.tail
                    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[], $8::int[],
                                $9::text[], $10::int[], $11::float8[], $12::text[], $13::text[], $14::float8[])
                         AS u(id, name, kind, spec, prio, vram, gpus, cons, maxa, deadline, key, deps, tail)
                    """, [batchID, PGConnection.textArray(ids), PGConnection.textArray(names), PGConnection.textArray(kinds),
                          PGConnection.textArray(specs), "{" + prios.joined(separator: ",") + "}",
                          "{" + vrams.joined(separator: ",") + "}", "{" + gpus.joined(separator: ",") + "}",
                          PGConnection.textArray(cons), "{" + maxes.joined(separator: ",") + "}",
                          "{" + deadlines.joined(separator: ",") + "}", PGConnection.textArray(keys), PGConnection.textArray(deps),
                          "{" + tailS.joined(separator: ",") + "}"])
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
              AND (cardinality(depends_on) = 0 OR \(Self.dependenciesDone(of: "j")))
            ORDER BY priority DESC, seq LIMIT $1
            """, [String(limit)]).rows.compactMap { $0.first ?? nil }
    }

    /// SQL: every job that the row aliased `alias` depends on has succeeded (what makes a pending job ready).
    static func dependenciesDone(of alias: String) -> String {
        "NOT EXISTS (SELECT 1 FROM jobs dep_\(alias) WHERE dep_\(alias).id = ANY(\(alias).depends_on) AND dep_\(alias).state <> 'succeeded')"
    }

    /// Pending jobs that still wait on a dependency, where every dependency not yet succeeded is
    /// itself ready (pending with its own dependencies done, or waiting out a retry backoff) or
    /// on a node: they become ready within about one job's runtime. The router counts their work
    /// on the GPUs they will need (`Router.place(upcoming:)`), best first, as `pendingIDs`.
    /// Only a hint, so it is cheap or nothing: jobs with more than `maxDependencies` are left out
    /// (a batch where 10 000 jobs each wait on all of 10 000 others took this query 146 s), and
    /// a query that runs past `timeoutMS` is cancelled and returns nil (there, reading each
    /// job's 10 000-element `depends_on` alone took 2 s).
    public func upcomingRows(limit: Int = 10_000, maxDependencies: Int = 256, timeoutMS: Int = 250) throws -> [JobRow]? {
        do {
            return try db.transaction { tx in
                try tx.exec("SET LOCAL statement_timeout = \(max(1, timeoutMS))")
                return try tx.exec("""
                    SELECT \(JobRow.columns) FROM jobs j
                    WHERE state = 'pending' AND cardinality(depends_on) BETWEEN 1 AND $2
                      AND NOT \(Self.dependenciesDone(of: "j"))
                      AND NOT EXISTS (
                           SELECT 1 FROM jobs d WHERE d.id = ANY(j.depends_on) AND d.state <> 'succeeded'
                             AND NOT (d.state IN ('placed', 'dispatched', 'running', 'retry_wait')
                                      OR (d.state = 'pending' AND \(Self.dependenciesDone(of: "d")))))
                    ORDER BY priority DESC, seq LIMIT $1
                    """, [String(limit), String(maxDependencies)]).all.map(JobRow.init(row:))
            }
        } catch let e as PGError where e.sqlState == "57014" {
            return nil   // query_canceled: the statement timeout
        }
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
