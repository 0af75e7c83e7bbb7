import Foundation
import Synchronization
import HydraCore
import HydraIO
import HydraStore

/// The runner's clock, injected so tests and the deadline logic do not depend on the wall.
public protocol PipelineClock: Sendable {
    func now() -> Date
    func sleep(seconds: Double)
}

public struct SystemPipelineClock: PipelineClock {
    public init() {}
    public func now() -> Date { Date() }
    public func sleep(seconds: Double) { Thread.sleep(forTimeInterval: seconds) }
}

public enum PipelineRunError: Error, CustomStringConvertible {
    case busy
    public var description: String {
        switch self {
        case .busy: return "another pipeline runner is active (PostgreSQL advisory lock \(PipelineRunner.advisoryLock) is held)"
        }
    }
}

/// How a run ended.
public struct PipelineRunOutcome: Sendable {
    public var night: String
    /// `done` (nothing left), `stopped` (deadline or SIGTERM; work carried to the next night).
    public var state: String
    public var reportPath: String
    public var approved: Int
    public var rejected: Int
    public var failed: Int
}

/// Drives one night: plans, submits the stages as jobs, watches PostgreSQL, applies the
/// machine's actions, stops submitting at the deadline and writes the report. All the
/// decisions are in `NightPlanner`, `NightMachine`, `QualityGate` and `NightReport`.
public final class PipelineRunner {
    /// The PostgreSQL advisory lock a runner holds for its night: one runner at a time, whichever
    /// host started it (the HTTP trigger reads it too, to answer 409 before spawning another).
    public static let advisoryLock = 7210050

    public let config: PipelineConfig
    public let collections: [ImageCollection]
    public let denylist: Denylist
    public let store: PipelineStore
    public let clock: any PipelineClock
    public let timeZone: TimeZone
    public let cluster: ClusterConfig?
    public let deadline: Date
    public let night: String
    public var triggeredBy: String?
    let log = Log(component: "pipeline")
    /// Set from a signal handler thread; read by the loop.
    private let stop = Atomic<Bool>(false)
    /// Unloads and loads the configured resident services (`residents:`); replaceable in tests.
    public var residentControl: any ResidentControlling = ResidentControl()
    /// Created with the night's plan when `residents:` is configured.
    public private(set) var residentKeeper: ResidentKeeper?
    /// Paths from results or actions that named something outside the runner's directories, refused this run.
    public private(set) var refusedPaths = 0
    /// Image files (results name them) are taken only from the agents' output directories.
    var imageSources: OwnedPaths { OwnedPaths(roots: config.outputsDirs) }
    /// Deletion after approval only ever removes quarantined rejects.
    var deletable: OwnedPaths { OwnedPaths(roots: [config.rejects.quarantineDir]) }
    private var byName: [String: ImageCollection] { Dictionary(uniqueKeysWithValues: collections.map { ($0.name, $0) }) }

    public init(config: PipelineConfig, collections: [ImageCollection], denylist: Denylist, store: PipelineStore, cluster: ClusterConfig?,
                deadline: Date, clock: any PipelineClock = SystemPipelineClock(), timeZone: TimeZone = .current) {
        self.config = config; self.collections = collections; self.denylist = denylist; self.store = store; self.cluster = cluster
        self.deadline = deadline; self.clock = clock; self.timeZone = timeZone
        self.night = NightClock.night(at: clock.now(), timeZone: timeZone)
    }

    /// Stop submitting and finish as at the deadline (SIGTERM).
    public func requestStop() { stop.store(true, ordering: .relaxed) }

    var withReference: Set<String> { Set(collections.filter { $0.reference != nil }.map(\.name)) }

    public func run() throws -> PipelineRunOutcome {
        guard try store.db.exec("SELECT pg_try_advisory_lock(\(Self.advisoryLock)) AS ok")[0].bool("ok") == true else { throw PipelineRunError.busy }
        defer { _ = try? store.db.exec("SELECT pg_advisory_unlock(\(Self.advisoryLock))") }
        let started = clock.now()
        try store.beginNight(night, deadline: deadline, triggeredBy: triggeredBy)
        log.info("night started", [("night", night), ("deadline", ISO8601DateFormatter().string(from: deadline))])
        try runActions()
        if clock.now() < deadline && !stop.load(ordering: .relaxed) { try planAndSubmit() }

        var carried = false
        var drainUntil = Date.distantFuture
        while true {
            let submitting = clock.now() < deadline && !stop.load(ordering: .relaxed)
            let tasks = try store.activeTasks()
            let images = try store.activeImages()
            let jobIDs = tasks.compactMap(\.expandJob) + images.flatMap { [$0.imageJob, $0.scoreJob].compactMap { $0 } }
            let jobs = try store.jobViews(jobIDs)
            let actions = NightMachine.step(tasks: tasks, images: images, jobs: jobs, submitting: submitting, denylist: denylist,
                                            gates: config.gates, withReference: withReference)
            try apply(actions, tasks: tasks)
            try proposeTraining()
            try runActions()
            try store.heartbeat(night)

            let tasksNow = try store.activeTasks(), imagesNow = try store.activeImages()
            try tendResidents(tasks: tasksNow, images: imagesNow, started: started)
            let running = try store.actions(states: ["running"])
            let unfinished = !tasksNow.isEmpty || imagesNow.contains { !$0.phase.isTerminal } || !running.isEmpty
            if !unfinished { break }
            if !submitting {
                let views = try store.jobViews(tasksNow.compactMap(\.expandJob) + imagesNow.flatMap { [$0.imageJob, $0.scoreJob].compactMap { $0 } }
                                               + running.compactMap(\.jobID))
                if !carried {
                    let n = try store.carry(jobIDs: NightMachine.jobsToCarry(tasks: tasksNow, images: imagesNow, jobs: views))
                    log.info("deadline: stopped submitting; not-started jobs carried to the next night", [("cancelled", String(n))])
                    carried = true
                    drainUntil = clock.now().addingTimeInterval(config.drainS)
                    continue
                }
                let busy = views.values.contains { [.placed, .dispatched, .running].contains($0.state) }
                if !busy || clock.now() >= drainUntil { break }
            }
            clock.sleep(seconds: config.pollIntervalS)
        }
        try proposeDeletion()
        if let k = residentKeeper { try record(k.restoreAll(elapsedS: clock.now().timeIntervalSince(started))) }
        let stillOpen = try store.carriedCount()
        let state = stillOpen > 0 ? "stopped" : "done"
        let path = try writeReport(started: started, stopped: state == "stopped")
        try store.finishNight(night, state: state, reportPath: path)
        let outcomes = try store.outcomes(finishedNight: night)
        log.info("night ended", [("state", state), ("report", path)])
        return PipelineRunOutcome(night: night, state: state, reportPath: path, approved: outcomes.filter { $0.state == "approved" }.count,
                                  rejected: outcomes.filter { $0.state == "rejected" }.count, failed: outcomes.filter { $0.state == "failed" }.count)
    }

    // MARK: planning

    public static func plan(collections: [ImageCollection], progress: [String: CollectionProgress], config: PipelineConfig, denylist: Denylist) -> NightPlan {
        NightPlanner.plan(collections: collections, progress: progress, variations: config.variationsPerTask,
                          budget: config.maxImagesPerNight, denylist: denylist)
    }

    func planAndSubmit() throws {
        let plan = Self.plan(collections: collections, progress: try store.progress(), config: config, denylist: denylist)
        for n in plan.notes { log.info("plan: " + n) }
        let ids = try store.insertTasks(plan.tasks, night: night)
        var jobs: [(NewJob, (String) throws -> Void)] = []
        for (t, id) in zip(plan.tasks, ids) where t.blockedReason == nil {
            jobs.append((PipelineJobs.expand(task: t, style: byName[t.collection]?.style ?? "", config: config), { try self.store.setExpandJob(task: id, job: $0) }))
        }
        try submit(jobs, stage: "expand")
        var forecast: JSONValue?
        var releases: [ResidentRelease]?
        if let cluster, let n = try? PipelineForecast.night(tasks: plan.tasks, config: config, cluster: cluster) {
            let report = n.residents?.report ?? n.report
            let f = NightFacts.Forecast(makespanS: report.makespanS, jobs: report.jobs, images: n.images, lowerBoundS: report.lowerBoundS)
            forecast = try JSONCoding.decode(JSONValue.self, from: try JSONCoding.encodeString(f))
            releases = n.residents?.releases
        }
        if !config.residents.isEmpty {
            // Without a forecast the plan still knows which stages need which resident (times unknown).
            let planned: Workload? = try PipelineForecast.workload(tasks: plan.tasks, config: config)
            let stages = planned?.groups.map {
                StageWindow(name: $0.name, startS: 0, endS: 0, jobs: $0.count, service: $0.service ?? KindDefaults.services(kind: $0.kind).first, model: $0.model)
            } ?? []
            let releasePlan = releases ?? ResidentPlan.derive(stages: stages, residents: config.residents)
            let keeper = ResidentKeeper(residents: config.residents, releases: releasePlan, control: residentControl)
            for name in keeper.probe() { log.warning("resident is not loaded at the start of the night; loaded when a job calls it", [("resident", name)]) }
            residentKeeper = keeper
            for r in releasePlan { log.info("resident plan", [("resident", r.resident), ("unload_at_s", r.untilS.map { String(Int($0)) } ?? "never"), ("reason", r.reason)]) }
        }
        try store.setForecast(night, plan: .object(["notes": .array(plan.notes.map { .string($0) }),
                                                    "tasks": .number(Double(plan.runnable.count)), "images": .number(Double(plan.images))]),
                              forecast: forecast)
    }

    /// Unloads a resident whose stages are done and that no active job calls; loads one back that a job needs.
    func tendResidents(tasks: [TaskRecord], images: [ImageRecord], started: Date) throws {
        guard let k = residentKeeper else { return }
        let events = k.tick(stagesOpen: ResidentKeeper.openStages(tasks: tasks, images: images), activeNeeds: try store.activeServiceNeeds(),
                            elapsedS: clock.now().timeIntervalSince(started))
        try record(events)
    }

    /// Each unload or load in the log and in `audit_log` (`resident_unload`, `resident_load`, `…_failed`).
    func record(_ events: [ResidentKeeper.Event]) throws {
        for e in events {
            let fields = [("resident", e.resident), ("at_s", String(Int(e.elapsedS))), ("detail", e.detail)]
            if e.action.hasSuffix("_failed") { log.error("resident \(e.action)", fields) } else { log.info("resident \(e.action)", fields) }
            try store.jobs.audit(actor: "pipeline", action: "resident_\(e.action)", target: e.resident,
                                 detail: .object(["night": .string(night), "elapsed_s": .number(e.elapsedS.rounded()), "detail": .string(e.detail)]))
        }
    }

    /// One batch per tick and stage, so `hydra status` shows the night's progress by stage.
    func submit(_ jobs: [(NewJob, (String) throws -> Void)], stage: String) throws {
        guard !jobs.isEmpty else { return }
        let stamp = Int(clock.now().timeIntervalSince1970)
        let plan = BatchPlan(name: "pipeline-\(night)-\(stage)-\(stamp)", priority: config.jobs.priority, jobs: jobs.map(\.0),
                             spec: ["pipeline": .string(night), "stage": .string(stage)])
        let (_, ids) = try store.submit(plan, night: night)
        for (j, id) in zip(jobs, ids) { try j.1(id) }
        log.info("submitted", [("stage", stage), ("jobs", String(jobs.count))])
    }

    // MARK: actions of the machine

    func apply(_ actions: [NightAction], tasks: [TaskRecord]) throws {
        let taskByID = Dictionary(uniqueKeysWithValues: tasks.map { ($0.id, $0) })
        var expand: [(NewJob, (String) throws -> Void)] = [], images: [(NewJob, (String) throws -> Void)] = []
        var scores: [(NewJob, (String) throws -> Void)] = []
        for a in actions {
            switch a {
            case .blockTask(let t, let reason, let variations):
                log.warning("task blocked", [("task", t), ("reason", reason)])
                try store.setTaskState(t, .blocked, reason: reason, variations: variations, night: night)
            case .startImages(let t, let variations):
                guard let task = taskByID[t], let c = byName[task.collection] else {
                    try store.setTaskState(t, .failed, reason: "its collection is no longer in the queue", night: night); continue
                }
                try store.setTaskState(t, .generating, variations: variations)
                let ids = try store.insertImages(task: t, night: night, collection: c.name, prompts: variations)
                for (i, (id, p)) in zip(ids, variations).enumerated() {
                    images.append((PipelineJobs.image(collection: c, seq: task.seq, variation: i, prompt: p, config: config),
                                   { try self.store.setImageJob(image: id, job: $0) }))
                }
            case .resubmitExpand(let t):
                guard let task = taskByID[t] else { continue }
                let pt = PlannedTask(collection: task.collection, seq: task.seq, idea: task.prompt, prompt: task.prompt, images: task.images)
                expand.append((PipelineJobs.expand(task: pt, style: byName[task.collection]?.style ?? "", config: config),
                               { try self.store.setExpandJob(task: t, job: $0) }))
            case .failTask(let t, let reason):
                try store.setTaskState(t, .failed, reason: reason, night: night)
            case .finishTask(let t):
                try store.setTaskState(t, .done, night: night)
            case .submitImage(let id):
                guard let im = try store.image(id), let task = try store.task(im.taskID), let c = byName[im.collection] else {
                    try store.failImage(id, failureClass: "permanent", reason: "its collection is no longer in the queue", night: night); continue
                }
                images.append((PipelineJobs.image(collection: c, seq: task.seq, variation: im.variation, prompt: im.prompt, config: config),
                               { try self.store.setImageJob(image: id, job: $0) }))
            case .submitScore(let id, let path):
                guard let im = try store.image(id) else { continue }
                scores.append((PipelineJobs.score(name: "score-\(im.collection)-\(im.variation)", imagePath: path,
                                                  reference: byName[im.collection]?.reference, config: config),
                               { try self.store.setScoreJob(image: id, job: $0, path: path) }))
            case .gate(let id, let scores, let verdict):
                try organize(image: id, scores: scores, verdict: verdict)
            case .failImage(let id, let stage, let cls, let reason):
                try store.failImage(id, failureClass: cls, reason: "\(stage): \(reason)", night: night)
            }
        }
        try submit(expand, stage: "expand")
        try submit(images, stage: "image")
        try submit(scores, stage: "score")
    }

    /// Approved files go to `<assets>/<collection>/`; rejects to quarantine or away, per config.
    func organize(image id: String, scores: ImageScores, verdict: GateVerdict) throws {
        guard let im = try store.image(id), let source = im.sourcePath else { return }
        let task = try store.task(im.taskID)
        // The extension comes from a result too: only a short alphanumeric one is carried into the asset's name.
        let given = (source as NSString).pathExtension
        let ext = (1...5).contains(given.count) && given.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) ? given : "png"
        let name = "\(im.collection)-\(task?.seq ?? 0)-v\(im.variation)-\(id.prefix(8)).\(ext)"
        var dest: String?
        var disposition: String
        let targetDir: String
        if verdict.passed {
            targetDir = (config.assetsDir as NSString).appendingPathComponent(im.collection)
            disposition = "asset"
        } else {
            targetDir = ((config.rejects.quarantineDir as NSString).appendingPathComponent(night) as NSString).appendingPathComponent(im.collection)
            disposition = "quarantined"
        }
        let deleteReject = !verdict.passed && { if case .delete = config.rejects { return true } else { return false } }()
            && !config.approvals.needsApproval("delete_assets")
        switch try Self.place(source: source, owned: imageSources, targetDir: targetDir, name: name, delete: deleteReject) {
        case .missing:
            log.warning("image file missing on this host (the outputs directory must be shared with the runner)", [("path", source)])
            disposition = "missing"
        case .deleted:
            disposition = "deleted"
        case .moved(let d):
            dest = d
        case .refused(let why):
            try refuse(why, image: id, action: "organize")
            try store.failImage(id, failureClass: "refused_path", reason: "organize: \(why) (outputs_dir: \(config.outputsDirs.joined(separator: ", ")))", night: night)
            return
        }
        try store.recordVerdict(image: id, scores: scores, verdict: verdict, night: night, assetPath: dest, disposition: disposition)
    }

    public enum Placement: Equatable, Sendable {
        case moved(String), deleted, missing, refused(OwnedPaths.Refusal)
    }

    /// The file half of organizing an image, without the database: `source` is
    /// moved into `targetDir` (or deleted) only when `owned` owns it.
    public static func place(source: String, owned: OwnedPaths, targetDir: String, name: String, delete: Bool) throws -> Placement {
        let fm = FileManager.default
        switch owned.check(source) {
        case .refused(let why): return .refused(why)
        case .missing: return .missing
        case .owned(let path):
            do {
                if delete {
                    try owned.remove(path)
                    return .deleted
                }
                try fm.createDirectory(atPath: targetDir, withIntermediateDirectories: true)
                let d = (targetDir as NSString).appendingPathComponent(name)
                if fm.fileExists(atPath: d) { try fm.removeItem(atPath: d) }
                try owned.move(path, to: d)
                return .moved(d)
            } catch let why as OwnedPaths.Refusal {
                return .refused(why)
            }
        }
    }

    /// Deletes the files `owned` owns; the others are returned, untouched.
    public static func deleteOwned(_ files: [String], owned: OwnedPaths) throws -> (deleted: [String], missing: [String], refused: [OwnedPaths.Refusal]) {
        var deleted: [String] = [], missing: [String] = [], refused: [OwnedPaths.Refusal] = []
        for f in files {
            switch owned.check(f) {
            case .refused(let why): refused.append(why)
            case .missing: missing.append(f)
            case .owned(let path):
                do {
                    try owned.remove(path)
                    deleted.append(f)
                } catch let why as OwnedPaths.Refusal {
                    refused.append(why)
                }
            }
        }
        return (deleted, missing, refused)
    }

    /// Logged as an error, counted, and audited, so a forged path shows up in `hydra audit` and the console.
    func refuse(_ why: OwnedPaths.Refusal, image: String?, action: String) throws {
        refusedPaths += 1
        log.error("refused to touch a path outside the runner's directories", [("action", action), ("image", image ?? "-"), ("reason", why.description)])
        try store.jobs.audit(actor: "pipeline", action: "path_refused", target: image,
                             detail: .object(["action": .string(action), "reason": .string(why.description)]))
    }

    // MARK: approval-tier actions

    func proposeTraining() throws {
        let counts = try store.approvedCounts()
        for c in collections {
            guard let t = c.trainLoRA, (counts[c.name] ?? 0) >= t.minImages,
                  try !store.hasAction("train_lora", collection: c.name, night: night) else { continue }
            let dir = (config.assetsDir as NSString).appendingPathComponent(c.name)
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted().prefix(12).map { (dir as NSString).appendingPathComponent($0) }
            let detail: JSONValue = ["collection": .string(c.name), "approved_images": .number(Double(counts[c.name] ?? 0)),
                                     "argv": .array(t.argv.map { .string($0) }), "images": .array(files.map { .string($0) })]
            let needs = config.approvals.needsApproval("train_lora")
            let id = try store.addAction(night: night, action: "train_lora", collection: c.name, detail: detail,
                                         approval: needs ? (config.approvals.tier("train_lora"), "Train a LoRA for \(c.name) from \(counts[c.name] ?? 0) approved images") : nil)
            log.info(needs ? "LoRA training waits for approval" : "LoRA training approved by tier", [("collection", c.name), ("action", id)])
        }
    }

    func proposeDeletion() throws {
        guard case .delete = config.rejects, config.approvals.needsApproval("delete_assets") else { return }
        let files = try store.outcomes(finishedNight: night).filter { $0.disposition == "quarantined" }.compactMap(\.assetPath)
        guard !files.isEmpty, try !store.hasAction("delete_assets", collection: nil, night: night) else { return }
        let detail: JSONValue = ["files": .array(files.map { .string($0) }), "images": .array(files.prefix(12).map { .string($0) })]
        let id = try store.addAction(night: night, action: "delete_assets", collection: nil, detail: detail,
                                     approval: (config.approvals.tier("delete_assets"), "Delete \(files.count) rejected image(s) of the night \(night)"))
        log.info("deleting rejects waits for approval", [("action", id), ("files", String(files.count))])
    }

    /// Moves actions on: decisions taken by people (CLI or console) are followed here.
    func runActions() throws {
        for a in try store.actions(states: ["awaiting_approval", "approved", "running"]) {
            switch (a.state, a.approvalState) {
            case ("awaiting_approval", "approved"?):
                try store.setActionState(a.id, from: "awaiting_approval", to: "approved")
                try execute(a)
            case ("awaiting_approval", "rejected"?):
                try store.setActionState(a.id, from: "awaiting_approval", to: "rejected")
            case ("approved", _):
                try execute(a)
            case ("running", _):
                guard let j = a.jobID, let v = try store.jobViews([j])[j], v.state.isTerminal else { continue }
                let ok = v.state == .succeeded
                if try store.setActionState(a.id, from: "running", to: ok ? "done" : "failed") {
                    try store.jobs.audit(actor: "pipeline", action: "\(a.action)_\(ok ? "done" : "failed")", target: a.id,
                                         detail: .object(["job": .string(j), "state": .string(v.state.rawValue)]))
                }
            default: break
            }
        }
    }

    func execute(_ a: PipelineActionRow) throws {
        switch a.action {
        case "train_lora":
            guard let name = a.collection, let c = byName[name], let t = c.trainLoRA else {
                try store.setActionState(a.id, from: "approved", to: "failed"); return
            }
            let job = PipelineJobs.trainLoRA(collection: name, training: t, assetsDir: config.assetsDir, config: config)
            let plan = BatchPlan(name: "pipeline-\(night)-train-lora-\(name)", priority: config.jobs.priority, jobs: [job],
                                 spec: ["pipeline": .string(night), "stage": "train_lora", "action": .string(a.id)])
            let (_, ids) = try store.submit(plan, night: night)
            if try store.setActionState(a.id, from: "approved", to: "running", job: ids[0]) {
                try store.jobs.audit(actor: "pipeline", action: "train_lora_submitted", target: a.id, detail: .object(["job": .string(ids[0])]))
            }
        case "delete_assets":
            let files = a.detail["files"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let (deleted, missing, refused) = try Self.deleteOwned(files, owned: deletable)
            for why in refused { try refuse(why, image: nil, action: "delete_assets \(a.id)") }
            try store.db.exec("UPDATE quality_metrics SET disposition = 'deleted', asset_path = NULL WHERE asset_path = ANY($1::text[])",
                              [PGConnection.textArray(deleted + missing)])
            if try store.setActionState(a.id, from: "approved", to: "done") {
                try store.jobs.audit(actor: "pipeline", action: "delete_assets_done", target: a.id,
                                     detail: .object(["deleted": .number(Double(deleted.count)), "refused": .number(Double(refused.count))]))
            }
        default:
            try store.setActionState(a.id, from: "approved", to: "failed")
        }
    }

    // MARK: report

    public func facts(started: Date, stopped: Bool) throws -> NightFacts {
        let nightRow = try store.nights(limit: 400).first { $0.night == night }
        let outcomes = try store.outcomes(finishedNight: night)
        let stoppedTasks = try store.stoppedTasks(night: night)
        let jobs = try store.jobs(batches: nightRow?.batchIDs ?? [])
        let nodes = try store.jobs.nodes()
        var label: [String: String] = [:]
        var allGPUs: [(node: String, gpu: String)] = []
        for n in nodes {
            for (i, g) in n.inventory.gpus.enumerated() {
                let l = "\(g.index ?? i) \(g.name ?? "GPU")"
                label[g.uuid] = l
                allGPUs.append((n.name, l))
            }
        }
        var time: [String: (node: String, gpu: String, s: Double, n: Int)] = [:]
        var first = Double.infinity, last = -Double.infinity, ran = 0
        for j in jobs {
            guard let s = j.startedAt, let e = j.finishedAt, let node = j.node else { continue }
            ran += 1; first = min(first, s); last = max(last, e)
            for g in j.gpuUUIDs.isEmpty ? ["CPU"] : j.gpuUUIDs.map({ label[$0] ?? $0 }) {
                time["\(node)|\(g)", default: (node, g, 0, 0)].s += max(0, e - s)
                time["\(node)|\(g)"]!.n += 1
            }
        }
        let failures = outcomes.filter { $0.state == "failed" }.map { o -> NightFacts.Failure in
            let stage = o.reason.flatMap { $0.split(separator: ":").first.map(String.init) } ?? "image"
            return NightFacts.Failure(stage: stage, failureClass: o.failureClass ?? "?", message: o.reason ?? "")
        } + stoppedTasks.filter { $0.phase == .failed }.map { NightFacts.Failure(stage: "expand", failureClass: "task", message: $0.reason ?? "") }
        let forecast = nightRow?.forecast.flatMap { try? JSONCoding.decode(NightFacts.Forecast.self, from: JSONCoding.encodeString($0)) }
        let approved = try store.approvedCounts()
        let pending = try store.actions(states: ["awaiting_approval"]).compactMap { a in
            a.approvalID.map { ($0, a.action + (a.collection.map { " " + $0 } ?? "")) }
        }
        var facts = NightFacts(
            night: night, startedAt: nightRow.map { Date(timeIntervalSince1970: $0.startedAt) } ?? started, endedAt: clock.now(),
            deadline: deadline, stoppedAtDeadline: stopped, thresholds: config.gates,
            collections: collections.map { .init(name: $0.name, target: $0.target, approvedTotal: approved[$0.name] ?? 0) },
            withReference: withReference, outcomes: outcomes, blocked: stoppedTasks.filter { $0.phase == .blocked },
            failedTasks: stoppedTasks.filter { $0.phase == .failed }, failures: failures,
            gpuTime: time.values.map { .init(node: $0.node, gpu: $0.gpu, seconds: $0.s, jobs: $0.n) }, allGPUs: allGPUs,
            forecast: forecast, actualMakespanS: ran > 0 ? last - first : nil, actualJobs: ran, carriedImages: try store.carriedCount(),
            pendingApprovals: pending, rejectsPolicy: {
                switch config.rejects {
                case .quarantine: return "quarantined"
                case .delete: return config.approvals.needsApproval("delete_assets") ? "quarantined until deletion is approved" : "deleted"
                }
            }())
        facts.residentEvents = try store.db.exec("""
            SELECT extract(epoch from at) AS at, target, action, detail FROM audit_log
            WHERE action LIKE 'resident\\_%' AND detail->>'night' = $1 ORDER BY at, id
            """, [night]).all.map { r in
            (Date(timeIntervalSince1970: r.double("at") ?? 0), r["target"] ?? "?", String((r["action"] ?? "").dropFirst("resident_".count)),
             r.json("detail")?["detail"]?.stringValue ?? "")
        }
        return facts
    }

    func writeReport(started: Date, stopped: Bool) throws -> String {
        let text = OvernightReport.render(try facts(started: started, stopped: stopped), timeZone: timeZone)
        try FileManager.default.createDirectory(atPath: config.reportsDir, withIntermediateDirectories: true)
        let path = (config.reportsDir as NSString).appendingPathComponent(OvernightReport.fileName(night: night))
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
