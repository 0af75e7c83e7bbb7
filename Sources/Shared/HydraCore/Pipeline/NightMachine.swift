import Foundation

public enum TaskPhase: String, Sendable, Codable {
    case expanding, generating, done, blocked, failed
    /// Its job was cancelled at a deadline; the next night resubmits it.
    case carried
    public var isActive: Bool { self == .expanding || self == .generating || self == .carried }
}

public enum ImagePhase: String, Sendable, Codable {
    case generating, scoring, approved, rejected, failed, carried
    public var isTerminal: Bool { self == .approved || self == .rejected || self == .failed }
}

/// A `generation_tasks` row as the machine sees it.
public struct TaskRecord: Sendable, Equatable {
    public var id: String
    public var night: String
    public var collection: String
    public var seq: Int
    public var prompt: String
    public var images: Int
    public var phase: TaskPhase
    public var expandJob: String?
    public var reason: String?
    public init(id: String, night: String, collection: String, seq: Int, prompt: String, images: Int, phase: TaskPhase,
                expandJob: String? = nil, reason: String? = nil) {
        self.id = id; self.night = night; self.collection = collection; self.seq = seq; self.prompt = prompt; self.images = images
        self.phase = phase; self.expandJob = expandJob; self.reason = reason
    }
}

/// A `quality_metrics` row (one image of a task) as the machine sees it.
public struct ImageRecord: Sendable, Equatable {
    public var id: String
    public var taskID: String
    public var collection: String
    public var variation: Int
    public var phase: ImagePhase
    public var imageJob: String?
    public var scoreJob: String?
    /// Where the image job wrote the file (known once it succeeded).
    public var sourcePath: String?
    public init(id: String, taskID: String, collection: String, variation: Int, phase: ImagePhase, imageJob: String? = nil,
                scoreJob: String? = nil, sourcePath: String? = nil) {
        self.id = id; self.taskID = taskID; self.collection = collection; self.variation = variation; self.phase = phase
        self.imageJob = imageJob; self.scoreJob = scoreJob; self.sourcePath = sourcePath
    }
}

/// The part of a job row the machine needs.
public struct JobView: Sendable, Equatable {
    public var state: JobState
    public var output: JSONValue?
    public var failureClass: String?
    public var error: String?
    public init(state: JobState, output: JSONValue? = nil, failureClass: String? = nil, error: String? = nil) {
        self.state = state; self.output = output; self.failureClass = failureClass; self.error = error
    }
}

public enum NightAction: Sendable, Equatable {
    /// The LLM's variations contain a denylisted term: the whole task stops here.
    case blockTask(task: String, reason: String, variations: [String])
    /// Variations validated: record them and submit one image job each.
    case startImages(task: String, variations: [String])
    case resubmitExpand(task: String)
    case failTask(task: String, reason: String)
    case finishTask(task: String)
    case submitImage(image: String)
    case submitScore(image: String, path: String)
    case gate(image: String, scores: ImageScores, verdict: GateVerdict)
    case failImage(image: String, stage: String, failureClass: String, reason: String)
}

/// The night as a state machine: rows and job states in, actions out. No I/O, no clock;
/// the runner executes the actions (submits jobs, moves files, updates rows).
public enum NightMachine {
    public static func step(tasks: [TaskRecord], images: [ImageRecord], jobs: [String: JobView], submitting: Bool,
                            denylist: Denylist, gates: GateThresholds, withReference: Set<String>) -> [NightAction] {
        var out: [NightAction] = []
        let imagesByTask = Dictionary(grouping: images, by: \.taskID)
        for t in tasks {
            switch t.phase {
            case .carried:
                if submitting { out.append(.resubmitExpand(task: t.id)) }
            case .expanding:
                guard let jid = t.expandJob else {
                    if submitting { out.append(.resubmitExpand(task: t.id)) }
                    continue
                }
                guard let j = jobs[jid] else { out.append(.failTask(task: t.id, reason: "its expansion job \(jid) no longer exists")); continue }
                switch j.state {
                case .succeeded:
                    let variations = j.output?["variations"]?.arrayValue?.compactMap(\.stringValue) ?? []
                    guard !variations.isEmpty else {
                        out.append(.failTask(task: t.id, reason: "the expansion returned no variations")); continue
                    }
                    let labelled = variations.enumerated().map { (label: "LLM variation \($0.offset + 1) of task \(t.collection)#\(t.seq)", text: $0.element) }
                    if let reason = denylist.check(labelled) {
                        out.append(.blockTask(task: t.id, reason: reason, variations: variations))
                    } else if submitting {
                        out.append(.startImages(task: t.id, variations: variations))
                    }
                case .failed, .dead, .cancelled:
                    out.append(.failTask(task: t.id, reason: "prompt expansion \(j.state.rawValue)" + failureText(j)))
                default: break
                }
            case .generating:
                let mine = imagesByTask[t.id] ?? []
                if mine.allSatisfy({ $0.phase.isTerminal }) { out.append(.finishTask(task: t.id)) }
            case .done, .blocked, .failed: break
            }
        }
        for im in images {
            switch im.phase {
            case .carried:
                guard submitting else { continue }
                out.append(im.sourcePath.map { .submitScore(image: im.id, path: $0) } ?? .submitImage(image: im.id))
            case .generating:
                guard let jid = im.imageJob else { if submitting { out.append(.submitImage(image: im.id)) }; continue }
                guard let j = jobs[jid] else { out.append(.failImage(image: im.id, stage: "image", failureClass: "lost", reason: "job \(jid) no longer exists")); continue }
                switch j.state {
                case .succeeded:
                    let files = j.output?["files"]?.arrayValue ?? []
                    let path = files.compactMap { $0["path"]?.stringValue }.first { isImage($0) }
                    if let path {
                        // Scoring runs even after the deadline only when submitting; otherwise the image waits, carried.
                        if submitting { out.append(.submitScore(image: im.id, path: path)) }
                    } else {
                        out.append(.failImage(image: im.id, stage: "image", failureClass: "permanent", reason: "the image job wrote no PNG or JPEG"))
                    }
                case .failed, .dead, .cancelled:
                    out.append(.failImage(image: im.id, stage: "image", failureClass: j.failureClass ?? j.state.rawValue,
                                          reason: "image \(j.state.rawValue)" + failureText(j)))
                default: break
                }
            case .scoring:
                guard let jid = im.scoreJob else {
                    if submitting, let p = im.sourcePath { out.append(.submitScore(image: im.id, path: p)) }
                    continue
                }
                guard let j = jobs[jid] else { out.append(.failImage(image: im.id, stage: "score", failureClass: "lost", reason: "job \(jid) no longer exists")); continue }
                switch j.state {
                case .succeeded:
                    let scores = ImageScores(output: j.output ?? .null)
                    out.append(.gate(image: im.id, scores: scores,
                                     verdict: QualityGate.evaluate(scores, gates, hasReference: withReference.contains(im.collection))))
                case .failed, .dead, .cancelled:
                    out.append(.failImage(image: im.id, stage: "score", failureClass: j.failureClass ?? j.state.rawValue,
                                          reason: "scoring \(j.state.rawValue)" + failureText(j)))
                default: break
                }
            case .approved, .rejected, .failed: break
            }
        }
        return out
    }

    /// At the deadline: the jobs not yet started are cancelled and their rows carried to the
    /// next night; running ones may finish. Returns the job ids to cancel.
    public static func jobsToCarry(tasks: [TaskRecord], images: [ImageRecord], jobs: [String: JobView]) -> [String] {
        func waiting(_ id: String?) -> String? {
            guard let id, let j = jobs[id], j.state == .pending || j.state == .retryWait else { return nil }
            return id
        }
        return tasks.filter { $0.phase == .expanding }.compactMap { waiting($0.expandJob) }
            + images.compactMap { im in
                switch im.phase {
                case .generating: return waiting(im.imageJob)
                case .scoring: return waiting(im.scoreJob)
                default: return nil
                }
            }
    }

    static func isImage(_ p: String) -> Bool {
        let l = p.lowercased()
        return l.hasSuffix(".png") || l.hasSuffix(".jpg") || l.hasSuffix(".jpeg") || l.hasSuffix(".webp")
    }

    static func failureText(_ j: JobView) -> String {
        var s = ""
        if let c = j.failureClass { s += " (\(c))" }
        if let e = j.error, !e.isEmpty { s += ": " + String(e.prefix(200)) }
        return s
    }
}
