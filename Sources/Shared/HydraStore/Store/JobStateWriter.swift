import Foundation
import HydraCore

/// One row of `job_events`: a transition as it was written, with the state the job really left.
public struct JobEventRow: Sendable, Equatable {
    public var jobID: String
    public var attempt: Int
    /// nil only for a job's first event (`submitted`).
    public var from: JobState?
    public var to: JobState
    /// The `detail` document (serialized JSON): `{"event": …}` plus what the event carries.
    public var detail: String

    public init(jobID: String, attempt: Int, from: JobState?, to: JobState, detail: String) {
        self.jobID = jobID; self.attempt = attempt; self.from = from; self.to = to; self.detail = detail
    }

    /// `{"event": name, …extra}`, serialized (names and values stay data, never spliced).
    public static func detail(_ event: JobEvent, _ extra: [String: JSONValue] = [:]) -> String {
        var o = extra
        o["event"] = .string(event.name)
        return (try? JSONValue.object(o).serialized()) ?? "{\"event\":\"\(event.name)\"}"
    }
}

/// The one writer of job states. Every change of `jobs.state` is a `Transition` from
/// `JobStateMachine`; this turns it into a guarded UPDATE (the state the machine expects, and
/// for agents' messages the attempt) with the same SQL for the same effect everywhere, and one
/// event row per change with the state the job really left.
public struct JobStateWriter {
    let tx: PGConnection

    public init(_ tx: PGConnection) { self.tx = tx }

    /// SET clauses of the effects that need no per-row value, by column (one clause per column,
    /// so `finish` + `leaveNode` clear the lease once).
    public static func assignments(_ effects: Set<JobEffect>) -> [String] {
        var cols: [String: String] = [:]
        for e in effects.sorted() {
            switch e {
            case .takeAttempt: cols["attempt"] = "attempt = j.attempt + 1"
            case .finish: cols["finished_at"] = "finished_at = now()"; cols["lease_expires_at"] = "lease_expires_at = NULL"
            case .leaveNode:
                cols["node"] = "node = NULL"; cols["gpu_uuids"] = "gpu_uuids = NULL"; cols["lease_expires_at"] = "lease_expires_at = NULL"
            case .clearBackoff: cols["not_before"] = "not_before = NULL"
            case .refundAttempt: cols["max_attempts"] = "max_attempts = j.max_attempts + 1"
            case .freshBudget: cols["max_attempts"] = "max_attempts = j.attempt + GREATEST(j.max_attempts - j.attempt, 1, 3)"
            case .reopen: cols["finished_at"] = "finished_at = NULL"; cols["cancel_sent"] = "cancel_sent = false"
            case .tellNode: cols["cancel_sent"] = "cancel_sent = (j.node IS NULL)"
            case .backoff, .recordFailure: break   // per row: see `apply` and `expireLeases`
            }
        }
        return cols.keys.sorted().map { cols[$0]! }
    }

    /// A row moved by `bulk`.
    public struct Moved: Sendable, Equatable {
        public var jobID: String
        public var attempt: Int
        public var from: JobState
        public var to: JobState
        public var node: String?
        public var streamID: String?
    }

    /// Moves every job that matches `filter` (SQL over `jobs j`, parameters `$1…`) and is in one
    /// of the states `event` applies to; each row is locked first, so the event row's `from_state`
    /// is the state it really left. `extra` adds SET clauses of the caller's (e.g. a reason).
    @discardableResult
    public func bulk(_ event: JobEvent, where filter: String, _ params: [String?], set extra: [String] = [],
                     detail: [String: JSONValue] = [:]) throws -> [Moved] {
        guard let rule = JobStateMachine.rule(event), !rule.from.isEmpty else {
            preconditionFailure("\(event) is not a set-based transition")
        }
        let sets = ["state = '\(rule.to.rawValue)'"] + Self.assignments(rule.effects) + extra
        let rows = try tx.exec("""
            UPDATE jobs j SET \(sets.joined(separator: ", "))
            FROM (SELECT id, state FROM jobs j WHERE state = ANY($\(params.count + 1)::text[]) AND (\(filter))
                  ORDER BY id FOR UPDATE) old
            WHERE j.id = old.id
            RETURNING j.id, j.attempt, old.state AS from_state, j.node, j.stream_id
            """, params + [PGConnection.textArray(rule.from.map(\.rawValue))]).all
        let moved = rows.map { r in
            Moved(jobID: r["id"] ?? "", attempt: r.int("attempt") ?? 0, from: JobState(rawValue: r["from_state"] ?? "") ?? .pending,
                  to: rule.to, node: r["node"], streamID: r["stream_id"])
        }
        if rule.effects.contains(.tellNode) { try tellNodes(moved) }
        let d = JobEventRow.detail(event, detail)
        try record(moved.map { JobEventRow(jobID: $0.jobID, attempt: $0.attempt, from: $0.from, to: $0.to, detail: d) })
        return moved
    }

    /// The agent is told per (job, attempt), from a row of its own: a `retry` right after a cancel
    /// cannot erase a cancellation the old attempt has not received yet.
    func tellNodes(_ moved: [Moved]) throws {
        let onNode = moved.filter { $0.node != nil }
        if onNode.isEmpty { return }
        try tx.exec("""
            INSERT INTO cancel_requests (job_id, attempt, node, stream_id)
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING
            """, [PGConnection.textArray(onNode.map(\.jobID)), "{" + onNode.map { String($0.attempt) }.joined(separator: ",") + "}",
                  PGConnection.textArray(onNode.map { $0.node ?? "" }), PGConnection.optionalTextArray(onNode.map(\.streamID))])
    }

    /// Appends the event rows of transitions written by the caller's guarded UPDATE.
    public func record(_ events: [JobEventRow]) throws {
        if events.isEmpty { return }
        try tx.exec("""
            INSERT INTO job_events (job_id, attempt, from_state, to_state, detail)
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::jsonb[])
            """, [PGConnection.textArray(events.map(\.jobID)), "{" + events.map { String($0.attempt) }.joined(separator: ",") + "}",
                  PGConnection.optionalTextArray(events.map { $0.from?.rawValue }),
                  PGConnection.textArray(events.map(\.to.rawValue)), PGConnection.textArray(events.map(\.detail))])
    }
}
