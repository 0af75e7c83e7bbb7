import Foundation

/// What PostgreSQL already holds for a collection.
public struct CollectionProgress: Sendable, Equatable {
    /// Approved images in the collection's assets so far.
    public var approved: Int
    /// Images planned on earlier nights that are not finished (they resume tonight).
    public var inFlight: Int
    /// Tasks created for the collection so far (ideas are taken in turn across nights).
    public var tasksSoFar: Int
    public init(approved: Int = 0, inFlight: Int = 0, tasksSoFar: Int = 0) {
        self.approved = approved; self.inFlight = inFlight; self.tasksSoFar = tasksSoFar
    }
}

/// One generation task: an idea the LLM expands into `images` prompt variations.
public struct PlannedTask: Sendable, Equatable {
    public var collection: String
    /// The task's number within its collection, across nights.
    public var seq: Int
    public var idea: String
    /// The idea with the collection's style notes: what the LLM expands.
    public var prompt: String
    public var images: Int
    /// Set when the denylist blocks the task; such a task is recorded, never submitted.
    public var blockedReason: String?
    public init(collection: String, seq: Int, idea: String, prompt: String, images: Int, blockedReason: String? = nil) {
        self.collection = collection; self.seq = seq; self.idea = idea; self.prompt = prompt; self.images = images; self.blockedReason = blockedReason
    }
}

public struct NightPlan: Sendable, Equatable {
    public var tasks: [PlannedTask]
    /// One line per collection: why it got what it got.
    public var notes: [String]
    public var runnable: [PlannedTask] { tasks.filter { $0.blockedReason == nil } }
    public var images: Int { runnable.reduce(0) { $0 + $1.images } }
}

/// The queue builder: plans the night's tasks by collection priority, counting what
/// is approved or still in flight toward each target, within the night's image budget.
public enum NightPlanner {
    public static func plan(collections: [ImageCollection], progress: [String: CollectionProgress], variations: Int,
                            budget: Int, denylist: Denylist) -> NightPlan {
        var tasks: [PlannedTask] = []
        var notes: [String] = []
        var left = budget
        let ordered = collections.enumerated().sorted { a, b in
            a.element.priority != b.element.priority ? a.element.priority > b.element.priority : a.offset < b.offset
        }.map(\.element)
        for c in ordered {
            let p = progress[c.name] ?? CollectionProgress()
            let missing = c.target - p.approved - p.inFlight
            if let reason = denylist.check([("collection name '\(c.name)'", c.name), ("the style notes of '\(c.name)'", c.style)]) {
                tasks.append(PlannedTask(collection: c.name, seq: p.tasksSoFar, idea: "", prompt: c.style, images: 0, blockedReason: reason))
                notes.append("\(c.name): blocked: \(reason)")
                continue
            }
            guard missing > 0 else {
                notes.append("\(c.name): nothing to plan (\(p.approved) approved + \(p.inFlight) in flight of \(c.target))")
                continue
            }
            let wanted = (missing + variations - 1) / variations
            let affordable = left / variations
            let count = min(wanted, affordable)
            var planned = 0, seq = p.tasksSoFar, tries = 0
            var blockedIdeas = Set<String>()
            let ideas = c.ideas.isEmpty ? [c.style] : c.ideas
            // Blocked ideas are skipped (and reported); the bound stops a queue whose every idea is blocked.
            while planned < count && tries < count + ideas.count {
                tries += 1
                let idea = ideas[seq % ideas.count]
                let prompt = c.ideas.isEmpty || c.style.isEmpty ? idea : "\(idea), \(c.style)"
                let images = min(variations, missing - planned * variations)
                var t = PlannedTask(collection: c.name, seq: seq, idea: idea, prompt: prompt, images: images)
                t.blockedReason = denylist.check([("the prompt of task \(c.name)#\(seq)", prompt)])
                seq += 1
                // A blocked idea is reported once per night, not at every turn of the rotation.
                if t.blockedReason != nil && !blockedIdeas.insert(idea).inserted { continue }
                tasks.append(t)
                if t.blockedReason == nil { planned += 1; left -= images }
            }
            let budgetNote = count < wanted ? "; \(wanted - count) more left for later nights (image budget)" : ""
            notes.append("\(c.name): \(planned) task(s), \(tasks.filter { $0.collection == c.name && $0.blockedReason == nil }.reduce(0) { $0 + $1.images }) image(s) "
                         + "toward \(missing) missing (\(p.approved) approved, \(p.inFlight) in flight, target \(c.target))\(budgetNote)")
        }
        return NightPlan(tasks: tasks, notes: notes)
    }

    /// A stable seed per (collection, task, variation): a resumed image is the same image.
    public static func seed(collection: String, seq: Int, variation: Int) -> Int {
        var h: UInt64 = 0xcbf29ce484222325
        for b in "\(collection)#\(seq)#\(variation)".utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
        return Int(h % (1 << 31))
    }
}

/// Job specs of the night's stages (docs/executors.md), built from plain values.
public enum PipelineJobs {
    public static func expand(task: PlannedTask, style: String, config: PipelineConfig) -> NewJob {
        var spec: [String: JSONValue] = [
            "endpoint": .string(config.expansion.endpoint), "prompt": .string(task.prompt),
            "expand": ["count": .number(Double(task.images)), "idea": .string(task.prompt),
                       "instructions": .string(config.expansion.instructions + (style.isEmpty ? "" : " Style notes: \(style)"))],
        ]
        if let m = config.expansion.model { spec["model"] = .string(m) }
        let service = config.expansion.endpoint.hasPrefix("openai.") ? "tabbyapi" : config.expansion.endpoint
        return NewJob(name: "expand-\(task.collection)-\(task.seq)", kind: "llm", spec: .object(spec), vramBytes: config.jobs.llmVRAM,
                      gpus: config.jobs.llmVRAM > 0 ? 1 : 0, constraints: ["service": .string(service)],
                      priority: config.jobs.priority, maxAttempts: config.jobs.maxAttempts)
    }

    public static func image(collection c: ImageCollection, seq: Int, variation: Int, prompt: String, config: PipelineConfig) -> NewJob {
        let w = config.workflow
        var spec: [String: JSONValue] = [
            "template": .string(w.template), "prompt": .string(prompt),
            "seed": .number(Double(NightPlanner.seed(collection: c.name, seq: seq, variation: variation))),
        ]
        if let v = w.negativePrompt { spec["negative_prompt"] = .string(v) }
        if let v = c.checkpoint ?? w.checkpoint { spec["checkpoint"] = .string(v) }
        if let v = w.width { spec["width"] = .number(Double(v)) }
        if let v = w.height { spec["height"] = .number(Double(v)) }
        if let v = w.steps { spec["steps"] = .number(Double(v)) }
        if let v = w.cfg { spec["cfg"] = .number(v) }
        if let l = c.lora { spec["lora"] = ["name": .string(l.name), "strength": .number(l.strength)] }
        return NewJob(name: "image-\(c.name)-\(seq)-\(variation)", kind: "image", spec: .object(spec), vramBytes: config.jobs.imageVRAM,
                      gpus: config.jobs.imageVRAM > 0 ? 1 : 0, priority: config.jobs.priority, maxAttempts: config.jobs.maxAttempts,
                      deadlineSeconds: config.jobs.imageDeadlineS)
    }

    public static func score(name: String, imagePath: String, reference: String?, config: PipelineConfig) -> NewJob {
        var spec: [String: JSONValue] = ["image_file": .string(imagePath)]
        var metrics: [JSONValue] = ["aesthetic", "musiq"]
        if let r = reference { spec["reference_face_path"] = .string(r); metrics.append("face_similarity") }
        spec["metrics"] = .array(metrics)
        return NewJob(name: name, kind: "score", spec: .object(spec), vramBytes: config.jobs.scoreVRAM,
                      gpus: config.jobs.scoreVRAM > 0 ? 1 : 0, priority: config.jobs.priority, maxAttempts: config.jobs.maxAttempts)
    }

    public static func trainLoRA(collection: String, training t: LoRATraining, assetsDir: String, config: PipelineConfig) -> NewJob {
        NewJob(name: "train-lora-\(collection)", kind: "command",
               spec: ["argv": .array((t.argv + [(assetsDir as NSString).appendingPathComponent(collection)]).map { .string($0) })],
               vramBytes: t.vram, gpus: t.vram > 0 ? 1 : 0, priority: config.jobs.priority, maxAttempts: 1)
    }
}

/// Night names and deadlines in local time, from an injected clock and time zone.
public enum NightClock {
    /// The night a moment belongs to: the date twelve hours earlier (02:00 on the 2nd → night of the 1st).
    public static func night(at date: Date, timeZone: TimeZone) -> String {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = timeZone
        let c = cal.dateComponents([.year, .month, .day], from: date.addingTimeInterval(-12 * 3600))
        return String(format: "%04d-%02d-%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }

    /// The next moment after `now` whose local clock reads `minute` (+ `second`).
    public static func next(minute: Int, second: Int = 0, after now: Date, timeZone: TimeZone) -> Date {
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = timeZone
        var c = cal.dateComponents([.year, .month, .day], from: now)
        c.hour = minute / 60; c.minute = minute % 60; c.second = second
        var d = cal.date(from: c) ?? now
        if d <= now { d = cal.date(byAdding: .day, value: 1, to: d) ?? d.addingTimeInterval(86_400) }
        return d
    }

    /// Why `--until` (or the HTTP trigger's `until`) cannot end a night.
    public struct UntilError: Error, Equatable { public var message: String }

    /// The deadline `--until` (or the HTTP trigger's `until`) names, or why it cannot end a night:
    /// it does not parse, or it is an ISO-8601 time that is not after `now` (a night that would end
    /// before it starts submits nothing and reports an empty night; a typed year is the usual cause).
    public static func until(_ s: String, now: Date, timeZone: TimeZone) -> Result<Date, UntilError> {
        guard let d = parseUntil(s, now: now, timeZone: timeZone) else {
            return .failure(UntilError(message: "expected HH:MM, HH:MM:SS or an ISO-8601 time"))
        }
        if d <= now {
            let f = ISO8601DateFormatter()
            return .failure(UntilError(message: "\(f.string(from: d)) is not after now (\(f.string(from: now)))"))
        }
        return .success(d)
    }

    /// `--until`: `HH:MM`, `HH:MM:SS` (the next such time) or an ISO-8601 timestamp.
    public static func parseUntil(_ s: String, now: Date, timeZone: TimeZone) -> Date? {
        let p = s.split(separator: ":")
        if (p.count == 2 || p.count == 3), p.allSatisfy({ $0.count == 2 && Int($0) != nil }) {
            let h = Int(p[0])!, m = Int(p[1])!, sec = p.count == 3 ? Int(p[2])! : 0
            guard h < 24, m < 60, sec < 60 else { return nil }
            return next(minute: h * 60 + m, second: sec, after: now, timeZone: timeZone)
        }
        let f = ISO8601DateFormatter()
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.date(from: s)
    }
}
