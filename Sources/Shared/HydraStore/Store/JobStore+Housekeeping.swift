import Foundation
import HydraCore
import HydraWire

/// Housekeeping: leases renewed and expired, backoffs released, dependencies settled, cancellations
/// handed to the nodes.
extension JobStore {
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
                // Every `lost` transition leaves the node or finishes the job, so its effects clear the lease.
                let sets = ["state = $3", "failure_class = '\(FailureClass.lost.rawValue)'", "error = error || $5::jsonb"]
                    + JobStateWriter.assignments(t.effects)
                let res = try tx.exec("""
                    UPDATE jobs j SET \(sets.joined(separator: ", "))
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

    /// Settles jobs whose dependencies cannot succeed any more (cancelled with the reason), and
    /// (with `explainWaits`) explains the wait of those whose dependencies are still running.
    /// Returns the cancelled count.
    /// Every statement reads a set once (the waiting jobs, the entries they are after, those entries'
    /// unfinished jobs) and the matching is done here by hash: an entry of 10 000 behind an entry of
    /// 10 000, or 10 000 one-job entries each behind another, costs what 20 000 rows cost.
    @discardableResult
    public func settleDependencies(explainWaits: Bool = true) throws -> Int {
        // The entries pending jobs are after; most of the time there are none (partial index).
        let entries = try JobStore.waitedOnEntries(db)
        if entries.isEmpty { return 0 }
        let ended = JobStateMachine.sqlList(JobStateMachine.unsuccessful)
        // Their jobs that did not succeed for good, in submission order: the first three of a job's name it.
        var failed: [String: (first: [(seq: Int64, what: String)], count: Int)] = [:]
        for r in try db.exec("""
            SELECT dep_group AS g, name || ' ' || state AS what, seq FROM jobs
            WHERE dep_group = ANY($1::uuid[]) AND dep_group IS NOT NULL AND state <> 'succeeded' AND state IN \(ended)
            ORDER BY seq
            """, [PGConnection.textArray(entries)]).all {
            guard let g = r["g"], let what = r["what"] else { continue }
            var f = failed[g] ?? ([], 0)
            if f.first.count < 3 { f.first.append((r.int64("seq") ?? 0, what)) }
            f.count += 1
            failed[g] = f
        }
        var cancelled = 0
        if !failed.isEmpty {
            var byReason: [String: [String]] = [:]
            for r in try pendingJobs(after: Array(failed.keys)) {
                guard let id = r["id"] else { continue }
                let mine = Set(r.textArray("after_groups")).compactMap { failed[$0] }
                let first = mine.flatMap(\.first).sorted { $0.seq < $1.seq }.prefix(3).map(\.what)
                let total = mine.reduce(0) { $0 + $1.count }
                let reason = "a dependency did not succeed: " + first.joined(separator: ", ") + (total > 3 ? " and \(total - 3) more" : "")
                byReason[reason, default: []].append(id)
            }
            // One statement per distinct reason (usually one: the jobs of an entry share their entries).
            cancelled = try db.transaction { tx in
                var n = 0
                for (reason, ids) in byReason.sorted(by: { $0.key < $1.key }) {
                    n += try JobStateWriter(tx).bulk(.dependencyFailed, where: "j.id = ANY($1::uuid[])", [PGConnection.textArray(ids), reason],
                                                     set: ["pending_reason = $2"]).count
                }
                return n
            }
        }
        if !explainWaits { return cancelled }
        // "waits for n of m dependencies (e.g. …)": per entry its unfinished jobs and the least of their names.
        var open: [String: (n: Int, example: String)] = [:]
        for r in try db.exec("""
            SELECT dep_group AS g, count(*) AS n, min(name || ' ' || state) AS example FROM jobs
            WHERE dep_group = ANY($1::uuid[]) AND dep_group IS NOT NULL AND state <> 'succeeded' GROUP BY dep_group
            """, [PGConnection.textArray(entries)]).all {
            if let g = r["g"], let ex = r["example"] { open[g] = (r.int("n") ?? 0, ex) }
        }
        if open.isEmpty { return cancelled }
        var ids: [String] = [], reasons: [String] = []
        for r in try pendingJobs(after: Array(open.keys), also: ", after_size, pending_reason") {
            guard let id = r["id"] else { continue }
            let mine = Set(r.textArray("after_groups")).compactMap { open[$0] }
            guard let example = mine.map(\.example).min() else { continue }
            let reason = "waits for \(mine.reduce(0) { $0 + $1.n }) of \(r.int("after_size") ?? 0) dependencies (e.g. \(example))"
            if r["pending_reason"] != reason { ids.append(id); reasons.append(reason) }
        }
        if !ids.isEmpty {
            try db.exec("""
                UPDATE jobs j SET pending_reason = v.reason FROM unnest($1::uuid[], $2::text[]) AS v(id, reason)
                WHERE j.id = v.id AND j.state = 'pending'
                """, [PGConnection.textArray(ids), PGConnection.textArray(reasons)])
        }
        return cancelled
    }

    /// Pending jobs after any of `entries`: `id`, `after_groups` and the columns in `also` (", a, b").
    /// The sweep matches each job's entries against what it read of them, in Swift, by hash.
    private func pendingJobs(after entries: [String], also: String = "") throws -> [PGRow] {
        try db.exec("""
            SELECT id, after_groups\(also) FROM jobs j
            WHERE state = 'pending' AND cardinality(after_groups) > 0 AND \(JobStore.afterAny(of: "j", in: "$1"))
            """, [PGConnection.textArray(entries)]).all
    }
}
