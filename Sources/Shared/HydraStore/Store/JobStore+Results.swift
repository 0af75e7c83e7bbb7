import Foundation
import HydraCore
import HydraWire

/// Results: what agents report, folded by `ResultFolder` and written in one guarded UPDATE.
extension JobStore {
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

    static func cappedResult(_ v: JSONValue) throws -> String {
        let text = try v.serialized()
        if text.utf8.count <= StoredText.maxDocumentBytes { return text }
        return try JSONValue.cappedDocument(serialized: text).serialized()
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
}
