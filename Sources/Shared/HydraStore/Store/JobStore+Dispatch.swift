import Foundation
import HydraCore
import HydraWire

/// Dispatch: pending jobs the router placed become dispatched attempts (the hot path), and the
/// reasons of the jobs that wait.
extension JobStore {
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

    /// Dispatch has one source state, so the hot UPDATE below can guard with a plain comparison.
    static let dispatch: JobStateMachine.Rule = {
        let r = JobStateMachine.rule(.dispatched)!
        precondition(r.from.count == 1, "markDispatched guards on one source state")
        return r
    }()

    /// The state guard is written `j.state || ''` on purpose: PostgreSQL's statistics lag behind a freshly
    /// submitted batch (they may say a handful of jobs are pending when 20,000 are), and with a plain
    /// `state = 'pending'` it would read every pending row once per assignment through the state indexes
    /// (12 million comparisons for 5,000 assignments, measured). As an expression no index matches, the
    /// rows can only be found by primary key, one lookup per assignment (with the settings of
    /// `PGConnection.keyLookupSettings`, which also rule out scanning the table once and hashing it).
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

    public func setPendingReasons(_ reasons: [String: String]) throws {
        if reasons.isEmpty { return }
        let keys = Array(reasons.keys)
        try db.exec("""
            UPDATE jobs AS j SET pending_reason = v.reason FROM unnest($1::uuid[], $2::text[]) AS v(id, reason)
            WHERE j.id = v.id AND j.state || '' = 'pending' AND j.pending_reason IS DISTINCT FROM v.reason
            """, [PGConnection.textArray(keys), PGConnection.textArray(keys.map { reasons[$0]! })])
    }
}
