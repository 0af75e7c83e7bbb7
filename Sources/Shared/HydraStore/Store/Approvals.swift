import Foundation
import HydraCore

/// An action waiting for a person (training a LoRA, deleting assets, ...).
public struct Approval: Sendable, Equatable, Codable {
    public var id: String
    public var createdAt: Double
    public var action: String
    public var tier: Int
    public var title: String
    /// Free-form; `images` (list of file paths) is shown as thumbnails by the console.
    public var detail: JSONValue
    public var state: String
    public var jobID: String?
    public var batchID: String?
    public var decidedAt: Double?
    public var decidedBy: String?
    public var reason: String?

    enum CodingKeys: String, CodingKey {
        case id, action, tier, title, detail, state, reason
        case createdAt = "created_at"
        case jobID = "job_id"
        case batchID = "batch_id"
        case decidedAt = "decided_at"
        case decidedBy = "decided_by"
    }
}

public enum ApprovalDecision: String, Sendable { case approved, rejected }

/// The approval queue and the audit log: every decision is kept.
extension JobStore {
    public static let approvalColumns = """
    id, extract(epoch from created_at) AS created_at, action, tier, title, detail, state, job_id, batch_id,
    extract(epoch from decided_at) AS decided_at, decided_by, reason
    """

    public static func approval(_ r: PGRow) -> Approval {
        Approval(id: r["id"] ?? "", createdAt: r.double("created_at") ?? 0, action: r["action"] ?? "", tier: r.int("tier") ?? 1,
                 title: r["title"] ?? "", detail: r.json("detail") ?? .object([:]), state: r["state"] ?? "",
                 jobID: r["job_id"], batchID: r["batch_id"], decidedAt: r.double("decided_at"), decidedBy: r["decided_by"], reason: r["reason"])
    }

    /// Queues an action for approval; returns its id.
    public func requestApproval(action: String, tier: Int, title: String, detail: JSONValue, jobID: String? = nil,
                                batchID: String? = nil) throws -> String {
        let id = UUID().uuidString.lowercased()
        try db.exec("""
            INSERT INTO approvals (id, action, tier, title, detail, job_id, batch_id) VALUES ($1::uuid, $2, $3::int, $4, $5::jsonb, $6::uuid, $7::uuid)
            """, [id, action, String(tier), title, try JSONCoding.encodeString(detail), jobID, batchID])
        try audit(actor: "hydra", action: "approval_requested", target: id, detail: .object(["action": .string(action), "title": .string(title)]))
        return id
    }

    public func approvals(states: [String] = ["awaiting_approval"], limit: Int = 200) throws -> [Approval] {
        try db.exec("SELECT \(Self.approvalColumns) FROM approvals WHERE state = ANY($1::text[]) ORDER BY created_at LIMIT \(limit)",
                    [PGConnection.textArray(states)]).all.map(Self.approval)
    }

    public func approval(id: String) throws -> Approval? {
        guard UUID(uuidString: id) != nil else { return nil }
        return try db.exec("SELECT \(Self.approvalColumns) FROM approvals WHERE id = $1::uuid", [id]).all.first.map(Self.approval)
    }

    /// Decides a pending approval (guarded: a decided one stays as it is); false if it was not pending.
    public func decide(approval id: String, _ decision: ApprovalDecision, by actor: String, reason: String?) throws -> Bool {
        guard UUID(uuidString: id) != nil else { return false }
        return try db.transaction { tx in
            let r = try tx.exec("""
                UPDATE approvals SET state = $2, decided_at = now(), decided_by = $3, reason = $4
                WHERE id = $1::uuid AND state = 'awaiting_approval'
                """, [id, decision.rawValue, actor, reason])
            guard r.affected == 1 else { return false }
            try tx.exec("INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4::jsonb)",
                        [actor, decision == .approved ? "approve" : "reject", id,
                         try JSONCoding.encodeString(JSONValue.object(["reason": reason.map { .string($0) } ?? .null]))])
            return true
        }
    }

    public func audit(actor: String, action: String, target: String?, detail: JSONValue) throws {
        try db.exec("INSERT INTO audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4::jsonb)",
                    [actor, action, target, try JSONCoding.encodeString(detail)])
    }

    public func auditLog(target: String? = nil, limit: Int = 200) throws -> [(at: Double, actor: String, action: String, target: String?, detail: JSONValue?)] {
        var sql = "SELECT extract(epoch from at) AS at, actor, action, target, detail FROM audit_log"
        var params: [String?] = []
        if let target { sql += " WHERE target = $1"; params.append(target) }
        sql += " ORDER BY id DESC LIMIT \(limit)"
        return try db.exec(sql, params).all.map { ($0.double("at") ?? 0, $0["actor"] ?? "", $0["action"] ?? "", $0["target"], $0.json("detail")) }
    }
}
