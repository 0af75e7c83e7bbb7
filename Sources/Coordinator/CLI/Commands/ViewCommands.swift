import ArgumentParser
import Foundation
import HydraCore
import HydraStore
import HydraCoordinator

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show batches and their progress (one batch with BATCH).")
    @OptionGroup var conn: ConnectionOptions
    @Argument(help: "Batch id, id prefix or name.") var batch: String?
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "With BATCH: print one line `N jobs, N succeeded, N failed, N lost`.") var summary = false
    @Option(help: "How many recent batches to list.") var limit = 20

    func validate() throws {
        if let m = OptionCheck.count(limit, "--limit", min: 1, max: 1_000_000) { throw ValidationError(m) }
    }

    func run() throws {
        let store = try conn.store()
        var ids: [String]?
        if let batch {
            do { ids = [try store.resolveBatch(batch)] } catch let e as StoreError { invalid(e.description) }
        } else if summary {
            throw ValidationError("--summary needs a BATCH")
        }
        let sums = try store.batchSummaries(ids: ids, limit: limit)
        if summary, let s = sums.first { print(s.summaryLine); return }
        if json { try printJSON(ids == nil ? JSONValue.object(["batches": try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(sums))]) : try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(sums[0]))); return }
        if sums.isEmpty { print("no batches yet (submit one with `hydra submit FILE`)"); return }
        print(TextTable.render(header: ["BATCH", "NAME", "JOBS", "DONE", "SUCCEEDED", "FAILED", "RUNNING", "PENDING", "SUBMITTED"], rows: sums.map { s in
            [String(s.id.prefix(8)), s.name, String(s.total), String(s.finished), String(s.count(.succeeded)), String(s.failed),
             String(s.count(.running) + s.count(.dispatched)), String(s.count(.pending) + s.count(.retryWait)), Self.time(s.submittedAt)]
        }), terminator: "")
        if let ids, let id = ids.first {
            let waiting = try store.jobs(.init(batchID: id, states: [.pending], limit: 10))
            if !waiting.isEmpty {
                print("\nwaiting:")
                for j in waiting { print("  \(j.id.prefix(8))  \(j.name)  \(j.pendingReason ?? "waiting for the next placement pass")") }
            }
        }
    }

    static func time(_ t: Double) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: Date(timeIntervalSince1970: t))
    }
}

struct WatchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch", abstract: "Follow a batch live until every job is finished.",
        discussion: "Exit 0 when all jobs succeeded, 1 when some failed, died or were cancelled.")
    @OptionGroup var conn: ConnectionOptions
    @Argument(help: "Batch id, id prefix or name.") var batch: String
    @Option(help: "Seconds between updates.") var interval = 0.5
    @Option(help: "Give up after this many seconds (0 = never).") var timeout = 0.0
    @Flag(help: "One JSON object per update (counts, rate, eta_s) instead of the progress bar.") var json = false

    func validate() throws {
        if let m = OptionCheck.first(OptionCheck.seconds(interval, "--interval", min: 0.05, minIncluded: true, max: 3_600),
                                     OptionCheck.seconds(timeout, "--timeout", min: 0, minIncluded: true, max: 1e9)) {
            throw ValidationError(m)
        }
    }

    func run() throws {
        let store = try conn.store()
        let id: String
        do { id = try store.resolveBatch(batch) } catch let e as StoreError { invalid(e.description) }
        let tty = isatty(STDOUT_FILENO) == 1 && !json
        let started = Date()
        var eta = BatchETA()
        var last = ""
        while true {
            guard let s = try store.batchSummaries(ids: [id]).first else { fail("batch \(id) disappeared") }
            let elapsed = Date().timeIntervalSince(started)
            eta.record(t: elapsed, finished: s.finished)
            let line = json ? Self.jsonLine(s, id: id, elapsed: elapsed, eta: eta) : Self.progress(s, elapsed: elapsed, eta: eta.remaining(total: s.total))
            // The JSON line carries the elapsed time, so compare the counts, not the text.
            let key = json ? "\(s.finished) \(s.count(.running)) \(s.count(.dispatched)) \(s.failed)" : line
            if key != last || s.isDone {
                if tty { print("\r\u{1B}[K" + line, terminator: "") } else { print(line) }
                fflush(nil)
                last = key
            }
            if s.isDone {
                if tty { print("") }
                if s.count(.succeeded) != s.total { throw ExitCode(1) }
                return
            }
            if timeout > 0 && Date().timeIntervalSince(started) > timeout {
                if tty { print("") }
                fail("batch \(id.prefix(8)) not finished after \(Int(timeout)) s")
            }
            Thread.sleep(forTimeInterval: interval)
        }
    }

    static func progress(_ s: BatchSummary, elapsed: Double, eta: Double? = nil) -> String {
        let width = 30
        let done = s.total == 0 ? 0 : s.finished * width / s.total
        let bar = String(repeating: "#", count: done) + String(repeating: ".", count: width - done)
        return String(format: "[%@] %d/%d done  succeeded=%d failed=%d running=%d pending=%d  %.1fs  ETA %@", bar, s.finished, s.total,
                      s.count(.succeeded), s.failed, s.count(.running) + s.count(.dispatched), s.count(.pending) + s.count(.retryWait), elapsed,
                      BatchETA.format(eta))
    }

    static func jsonLine(_ s: BatchSummary, id: String, elapsed: Double, eta: BatchETA) -> String {
        let round3 = { (v: Double) in (v * 1000).rounded() / 1000 }
        let obj: JSONValue = .object([
            "batch": .string(id), "elapsed_s": .number(round3(elapsed)), "total": .number(Double(s.total)),
            "finished": .number(Double(s.finished)), "succeeded": .number(Double(s.count(.succeeded))), "failed": .number(Double(s.failed)),
            "running": .number(Double(s.count(.running) + s.count(.dispatched))),
            "pending": .number(Double(s.count(.pending) + s.count(.retryWait))),
            "rate_per_s": eta.rate.map { .number(round3($0)) } ?? .null,
            "eta_s": eta.remaining(total: s.total).map { .number(round3($0)) } ?? .null,
            "done": .bool(s.isDone),
        ])
        return (try? JSONCoding.encodeString(obj)) ?? "{}"
    }
}

struct NodesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodes", abstract: "Nodes and GPUs: VRAM total/used/free, utilization, running jobs, last seen, up/down.")
    @OptionGroup var conn: ConnectionOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let store = try conn.store()
        let nodes = try store.nodes()
        if json { try printJSON(JSONValue.object(["nodes": try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(nodes))])); return }
        if nodes.isEmpty { print("no nodes have reported yet (is hydra-agent running, and the coordinator?)"); return }
        var rows: [[String]] = []
        let now = Date().timeIntervalSince1970
        for n in nodes {
            var state = !n.up ? "down" : (n.draining ? "draining" : "up")
            let seen = n.lastSeen.map { String(format: "%.0fs ago", max(0, now - $0)) } ?? "never"
            // The coordinator places no GPU job by a reading this old (CPU-only jobs still go there).
            if let age = n.staleGPUReadingS { state += String(format: " (GPU reading %.0fs old: no GPU jobs)", age) }
            if n.inventory.gpus.isEmpty {
                rows.append([n.name, state, "-", "(no GPUs: CPU jobs)", "-", "-", "-", "-", String(n.running.count), seen])
            }
            for g in n.inventory.gpus {
                let total = g.memoryTotalBytes, used = g.memoryUsedBytes
                let free = g.memoryFreeBytes ?? (total.flatMap { t in used.map { t > $0 ? t - $0 : 0 } })
                rows.append([n.name, state, g.index.map(String.init) ?? "-", g.name ?? "-",
                             total.map(ByteSize.format) ?? "-", used.map(ByteSize.format) ?? "-", free.map(ByteSize.format) ?? "-",
                             g.utilizationGPUPercent.map { String(format: "%.0f%%", $0) } ?? "-",
                             String(n.running.count), seen])
            }
        }
        print(TextTable.render(header: ["NODE", "STATE", "GPU", "NAME", "TOTAL", "USED", "FREE", "UTIL", "JOBS", "LAST SEEN"], rows: rows), terminator: "")
    }
}

struct JobsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "List jobs, with the reason each pending job waits.")
    @OptionGroup var conn: ConnectionOptions
    @Option(help: "Only this batch (id, prefix or name).") var batch: String?
    @Option(help: "Only jobs in this state (\(JobState.allCases.map(\.rawValue).joined(separator: ", "))); repeatable.") var state: [String] = []
    @Option(help: "Only jobs on this node.") var node: String?
    @Option(help: "At most this many jobs.") var limit = 200
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if let m = OptionCheck.count(limit, "--limit", min: 1, max: 1_000_000) { throw ValidationError(m) }
    }

    func run() throws {
        var states: [JobState] = []
        for s in state {
            guard let js = JobState(rawValue: s) else {
                throw ValidationError("unknown state '\(s)' (states: \(JobState.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            states.append(js)
        }
        let store = try conn.store()
        var batchID: String?
        if let batch { do { batchID = try store.resolveBatch(batch) } catch let e as StoreError { invalid(e.description) } }
        let jobs = try store.jobs(.init(batchID: batchID, states: states, node: node, limit: limit))
        if json { try printJSON(JSONValue.object(["jobs": try JSONCoding.decode(JSONValue.self, from: JSONCoding.encodeString(jobs))])); return }
        if jobs.isEmpty { print("no jobs match"); return }
        print(TextTable.render(header: ["JOB", "NAME", "KIND", "STATE", "TRY", "VRAM", "NODE", "REASON / ERROR"], rows: jobs.map { j in
            let lastError = j.errors?.arrayValue?.last?["message"]?.stringValue
            let note = j.state == .pending ? (j.pendingReason ?? "waiting for the next placement pass")
                : (j.state == .failed || j.state == .dead || j.state == .retryWait ? "\(j.failureClass ?? ""): \(lastError ?? "")" : "")
            return [String(j.id.prefix(8)), j.name, j.kind, j.state.rawValue, "\(j.attempt)/\(j.maxAttempts)",
                    j.vramBytes == 0 ? "cpu" : "\(ByteSize.format(j.vramBytes))×\(j.gpus)",
                    j.node.map { n in n + (j.gpuUUIDs.isEmpty ? "" : "/\(j.gpuUUIDs.count)gpu") } ?? "-", note]
        }), terminator: "")
    }
}

/// `hydra cancel` / `hydra retry`: a job id (or prefix) or a whole batch.
struct TargetOptions: ParsableArguments {
    @Argument(help: "Job id or prefix; with --batch, a batch id, prefix or name.") var target: String
    @Flag(help: "TARGET is a batch: act on all its jobs.") var batch = false

    func jobIDs(_ store: JobStore) throws -> [String] {
        do {
            if batch { return try store.jobIDs(batch: try store.resolveBatch(target)) }
            do { return [try store.resolveJob(target)] } catch StoreError.notFound {
                // Not a job: a batch id works too, so `hydra cancel <batch>` does what it says. Only then:
                // a job prefix that matches two jobs is an error, never a reason to act on a whole batch.
            }
            return try store.jobIDs(batch: try store.resolveBatch(target))
        } catch let e as StoreError {
            if case .ambiguous = e { invalid(e.description) }
            invalid("no job or batch '\(target)' (\(e.description))")
        }
    }
}

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel", abstract: "Cancel a job or every unfinished job of a batch (running ones are stopped on their node).")
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var target: TargetOptions

    func run() throws {
        let store = try conn.store()
        let n = try store.cancel(jobIDs: try target.jobIDs(store))
        print("cancelled \(n) job\(n == 1 ? "" : "s")")
    }
}

struct RetryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry", abstract: "Bring failed, dead or cancelled jobs back to pending with a fresh attempt budget.")
    @OptionGroup var conn: ConnectionOptions
    @OptionGroup var target: TargetOptions

    func run() throws {
        let store = try conn.store()
        let n = try store.retry(jobIDs: try target.jobIDs(store))
        print("requeued \(n) job\(n == 1 ? "" : "s")")
    }
}

struct DrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain", abstract: "Stop placing new jobs on a node (running jobs finish); --undo to place again.")
    @OptionGroup var conn: ConnectionOptions
    @Argument(help: "Node name.") var node: String
    @Flag(help: "Undrain the node.") var undo = false

    func run() throws {
        let store = try conn.store()
        guard try store.setDraining(node: node, !undo) else {
            invalid("no node '\(node)' (known: \(try store.nodes().map(\.name).joined(separator: ", ")))")
        }
        print(undo ? "\(node): placing jobs again" : "\(node): draining (no new jobs; running ones finish)")
    }
}
