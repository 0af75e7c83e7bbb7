import ArgumentParser
import Foundation
import HydraStore
import HydraCoordinator

/// Who decides: `--by`, else the login name, as `cli:<name>` in the audit log.
private func actor(_ by: String?) -> String {
    by ?? "cli:" + (ProcessInfo.processInfo.environment["SUDO_USER"] ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown")
}

/// An approval id or a unique prefix of one (exit 2 when none or several match).
private func resolveApproval(_ store: JobStore, _ ref: String) throws -> Approval {
    if let a = try store.approval(id: ref.lowercased()) { return a }
    let all = try store.approvals(states: ["awaiting_approval", "approved", "rejected"], limit: 10_000)
    let hits = all.filter { $0.id.hasPrefix(ref.lowercased()) }
    if hits.count == 1 { return hits[0] }
    invalid(hits.isEmpty ? "no approval '\(ref)' (hydra approvals --all lists them)" : "'\(ref)' matches \(hits.count) approvals; give more of the id")
}

private func decide(_ ref: String, _ decision: ApprovalDecision, by: String?, reason: String?, conn: ConnectionOptions) throws {
    let store = try conn.store()
    let a = try resolveApproval(store, ref)
    guard try store.decide(approval: a.id, decision, by: actor(by), reason: reason) else {
        fail("approval \(a.id) is already \(a.state) (by \(a.decidedBy ?? "?"))")
    }
    print("\(decision.rawValue) \(a.id): \(a.title)")
}

struct ApproveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "approve", abstract: "Approve an action waiting in the approval queue.",
                                                    discussion: "The pipeline runner carries it out on its next pass (or next night). The decision is audited.")
    @OptionGroup var conn: ConnectionOptions
    @Argument(help: "Approval id (or a unique prefix).") var id: String
    @Option(help: "Who approves (default: cli:$USER).") var by: String?
    @Option(help: "Optional note kept with the decision.") var reason: String?
    func run() throws { try decide(id, .approved, by: by, reason: reason, conn: conn) }
}

struct RejectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "reject", abstract: "Reject an action waiting in the approval queue.")
    @OptionGroup var conn: ConnectionOptions
    @Argument(help: "Approval id (or a unique prefix).") var id: String
    @Option(help: "Why (required; kept in the audit log).") var reason: String
    @Option(help: "Who rejects (default: cli:$USER).") var by: String?
    func validate() throws {
        if reason.trimmingCharacters(in: .whitespaces).isEmpty { throw ValidationError("--reason must not be empty") }
    }
    func run() throws { try decide(id, .rejected, by: by, reason: reason, conn: conn) }
}

struct ApprovalsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "approvals", abstract: "List actions awaiting approval (--all: decided ones too).")
    @OptionGroup var conn: ConnectionOptions
    @Flag(help: "Also approved and rejected ones.") var all = false
    @Flag(help: "Print JSON.") var json = false
    func run() throws {
        let store = try conn.store()
        let list = try store.approvals(states: all ? ["awaiting_approval", "approved", "rejected"] : ["awaiting_approval"], limit: 1000)
        if json {
            struct Out: Encodable { var approvals: [Approval] }
            return try printJSON(Out(approvals: list))
        }
        if list.isEmpty { print(all ? "no approvals" : "nothing awaits approval"); return }
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm"
        var rows = [["ID", "CREATED", "ACTION", "TIER", "STATE", "TITLE", "DECIDED BY"]]
        for a in list {
            rows.append([a.id, f.string(from: Date(timeIntervalSince1970: a.createdAt)), a.action, String(a.tier), a.state, a.title,
                         a.decidedBy.map { $0 + (a.reason.map { " (\($0))" } ?? "") } ?? ""])
        }
        for l in SimulateCommand.table(rows) { print(l) }
    }
}
