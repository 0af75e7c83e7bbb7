import Foundation

/// Everything the overnight report says, as plain values (gathered by the runner from
/// PostgreSQL, rendered by `OvernightReport.render` without any I/O).
public struct NightFacts: Sendable, Equatable {
    public struct CollectionLine: Sendable, Equatable {
        public var name: String
        public var target: Int
        public var approvedTotal: Int
        public init(name: String, target: Int, approvedTotal: Int) { self.name = name; self.target = target; self.approvedTotal = approvedTotal }
    }
    public struct GPUTime: Sendable, Equatable {
        public var node: String
        /// "0 NVIDIA GeForce RTX 5070 Ti", or "CPU" for jobs without a GPU.
        public var gpu: String
        public var seconds: Double
        public var jobs: Int
        public init(node: String, gpu: String, seconds: Double, jobs: Int) { self.node = node; self.gpu = gpu; self.seconds = seconds; self.jobs = jobs }
    }
    public struct Failure: Sendable, Equatable {
        public var stage: String
        public var failureClass: String
        public var message: String
        public init(stage: String, failureClass: String, message: String) { self.stage = stage; self.failureClass = failureClass; self.message = message }
    }
    public struct Forecast: Sendable, Equatable, Codable {
        public var makespanS: Double
        public var jobs: Int
        public var images: Int
        public var lowerBoundS: Double
        public init(makespanS: Double, jobs: Int, images: Int, lowerBoundS: Double) {
            self.makespanS = makespanS; self.jobs = jobs; self.images = images; self.lowerBoundS = lowerBoundS
        }
        enum CodingKeys: String, CodingKey { case jobs, images, makespanS = "makespan_s", lowerBoundS = "lower_bound_s" }
    }

    public var night: String
    public var startedAt: Date
    public var endedAt: Date
    public var deadline: Date
    public var stoppedAtDeadline: Bool
    public var thresholds: GateThresholds
    public var collections: [CollectionLine]
    public var withReference: Set<String>
    public var outcomes: [ImageOutcomeRow]
    public var blocked: [TaskRecord]
    public var failedTasks: [TaskRecord]
    public var failures: [Failure]
    public var gpuTime: [GPUTime]
    /// GPUs the cluster has (node, label) — for spotting idle ones.
    public var allGPUs: [(node: String, gpu: String)]
    public var forecast: Forecast?
    /// First job start to last job finish, and how many jobs ran.
    public var actualMakespanS: Double?
    public var actualJobs: Int
    public var carriedImages: Int
    public var pendingApprovals: [(id: String, title: String)]
    public var rejectsPolicy: String
    /// Resident services unloaded or loaded during the night (audit_log `resident_*`).
    public var residentEvents: [(at: Date, resident: String, action: String, detail: String)] = []

    public init(night: String, startedAt: Date, endedAt: Date, deadline: Date, stoppedAtDeadline: Bool, thresholds: GateThresholds,
                collections: [CollectionLine], withReference: Set<String>, outcomes: [ImageOutcomeRow], blocked: [TaskRecord],
                failedTasks: [TaskRecord], failures: [Failure], gpuTime: [GPUTime], allGPUs: [(node: String, gpu: String)],
                forecast: Forecast?, actualMakespanS: Double?, actualJobs: Int, carriedImages: Int,
                pendingApprovals: [(id: String, title: String)], rejectsPolicy: String) {
        self.night = night; self.startedAt = startedAt; self.endedAt = endedAt; self.deadline = deadline
        self.stoppedAtDeadline = stoppedAtDeadline; self.thresholds = thresholds; self.collections = collections
        self.withReference = withReference; self.outcomes = outcomes; self.blocked = blocked; self.failedTasks = failedTasks
        self.failures = failures; self.gpuTime = gpuTime; self.allGPUs = allGPUs; self.forecast = forecast
        self.actualMakespanS = actualMakespanS; self.actualJobs = actualJobs; self.carriedImages = carriedImages
        self.pendingApprovals = pendingApprovals; self.rejectsPolicy = rejectsPolicy
    }

    public static func == (a: NightFacts, b: NightFacts) -> Bool {
        OvernightReport.render(a, timeZone: TimeZone(identifier: "UTC")!) == OvernightReport.render(b, timeZone: TimeZone(identifier: "UTC")!)
    }
}

/// The overnight report, `<reports>/<night>_overnight_report.md`.
public enum OvernightReport {
    public static func fileName(night: String) -> String { "\(night)_overnight_report.md" }

    public static func render(_ f: NightFacts, timeZone: TimeZone) -> String {
        var o: [String] = []
        let scored = f.outcomes.filter { $0.state == "approved" || $0.state == "rejected" }
        let approved = f.outcomes.filter { $0.state == "approved" }
        let failedImages = f.outcomes.filter { $0.state == "failed" }
        let passRate = scored.isEmpty ? nil : Double(approved.count) / Double(scored.count)

        o.append("# Overnight report \(f.night)")
        o.append("")
        o.append("Run \(clock(f.startedAt, timeZone)) → \(clock(f.endedAt, timeZone)) (deadline \(clock(f.deadline, timeZone)))"
                 + (f.stoppedAtDeadline ? "; **stopped at the deadline**, \(f.carriedImages) image(s) carried to the next night." : "; finished before the deadline."))
        o.append("")
        o.append("| | |")
        o.append("|---|---|")
        o.append("| images generated and scored | \(scored.count) |")
        o.append("| approved | \(approved.count) |")
        o.append("| rejected | \(scored.count - approved.count) (\(f.rejectsPolicy)) |")
        o.append("| pass rate | \(passRate.map { pct($0) } ?? "–") |")
        o.append("| failed images | \(failedImages.count) |")
        o.append("| tasks blocked by the denylist | \(f.blocked.count) |")
        o.append("| tasks failed | \(f.failedTasks.count) |")
        o.append("")

        o.append("## Collections")
        o.append("")
        o.append("| collection | generated | approved | rejected | failed | pass rate | approved in total | target | still short |")
        o.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in f.collections {
            let mine = f.outcomes.filter { $0.collection == c.name }
            let s = mine.filter { $0.state == "approved" || $0.state == "rejected" }
            let a = mine.filter { $0.state == "approved" }.count
            o.append("| \(c.name) | \(s.count) | \(a) | \(s.count - a) | \(mine.filter { $0.state == "failed" }.count) | "
                     + "\(s.isEmpty ? "–" : pct(Double(a) / Double(s.count))) | \(c.approvedTotal) | \(c.target) | \(max(0, c.target - c.approvedTotal)) |")
        }
        o.append("")

        o.append("## Gates")
        o.append("")
        let verdicts = scored.map { GateVerdict(failed: $0.failedGates, reasons: []) }
        let rej = QualityGate.rejections(verdicts)
        o.append("| gate | threshold | rejected | rejected by this gate alone |")
        o.append("|---|---:|---:|---:|")
        for g in Gate.allCases {
            let t: String
            switch g {
            case .aesthetic: t = f.thresholds.aesthetic.map { "≥ \(num($0))" } ?? "off"
            case .technical: t = f.thresholds.technical.map { "≥ \(num($0))" } ?? "off"
            case .faceSimilarity: t = f.thresholds.faceSimilarity.map { "≥ \(num($0)) (collections with a reference)" } ?? "off"
            }
            o.append("| \(g.rawValue) | \(t) | \(rej[g]!.any) | \(rej[g]!.alone) |")
        }
        o.append("")

        o.append("## Score distributions")
        o.append("")
        o.append("```")
        o.append(contentsOf: histogram("aesthetic", scored.compactMap(\.scores.aesthetic), lower: 1, upper: 10, bins: 9, threshold: f.thresholds.aesthetic))
        o.append("")
        o.append(contentsOf: histogram("technical (MUSIQ)", scored.compactMap(\.scores.musiq), lower: 0, upper: 100, bins: 10, threshold: f.thresholds.technical))
        let faces = scored.filter { f.withReference.contains($0.collection) }.compactMap(\.scores.faceSimilarity)
        if !faces.isEmpty {
            o.append("")
            o.append(contentsOf: histogram("face similarity", faces, lower: -0.2, upper: 1, bins: 12, threshold: f.thresholds.faceSimilarity))
        }
        o.append("```")
        o.append("")

        o.append("## GPU time")
        o.append("")
        if f.gpuTime.isEmpty {
            o.append("No job ran.")
        } else {
            o.append("| node | GPU | busy | jobs |")
            o.append("|---|---|---:|---:|")
            for g in f.gpuTime.sorted(by: { ($0.node, $0.gpu) < ($1.node, $1.gpu) }) {
                o.append("| \(g.node) | \(g.gpu) | \(duration(g.seconds)) | \(g.jobs) |")
            }
        }
        o.append("")

        o.append("## Failures")
        o.append("")
        if f.failures.isEmpty && f.blocked.isEmpty && f.failedTasks.isEmpty {
            o.append("None.")
        } else {
            let byClass = Dictionary(grouping: f.failures, by: { "\($0.stage) / \($0.failureClass)" })
            if !byClass.isEmpty {
                o.append("| stage / class | count | example |")
                o.append("|---|---:|---|")
                for k in byClass.keys.sorted() {
                    o.append("| \(k) | \(byClass[k]!.count) | \(cell(byClass[k]![0].message)) |")
                }
                o.append("")
            }
            for t in f.blocked { o.append("- blocked: \(t.collection)#\(t.seq): \(t.reason ?? "denylist")") }
            for t in f.failedTasks { o.append("- task failed: \(t.collection)#\(t.seq): \(t.reason ?? "?")") }
        }
        o.append("")

        o.append("## Forecast and what happened")
        o.append("")
        if let fc = f.forecast {
            o.append("| | forecast (`hydra simulate`) | actual |")
            o.append("|---|---:|---:|")
            o.append("| jobs | \(fc.jobs) | \(f.actualJobs) |")
            o.append("| images | \(fc.images) | \(scored.count + failedImages.count) |")
            o.append("| makespan | \(duration(fc.makespanS)) (lower bound \(duration(fc.lowerBoundS))) | \(f.actualMakespanS.map(duration) ?? "–") |")
        } else {
            o.append("No forecast (no cluster file: set `cluster:` in the pipeline config or HYDRA_CLUSTER).")
        }
        o.append("")
        if !f.residentEvents.isEmpty {
            o.append("Resident services:")
            o.append("")
            for e in f.residentEvents {
                o.append("- \(clock(e.at, timeZone)) `\(e.resident)` \(e.action.replacingOccurrences(of: "_", with: " ")): \(cell(e.detail))")
            }
            o.append("")
        }

        o.append("## Recommendations")
        o.append("")
        let recs = recommendations(f, scored: scored, rejections: rej)
        o.append(contentsOf: recs.isEmpty ? ["Nothing to change."] : recs.map { "- \($0)" })
        if !f.pendingApprovals.isEmpty {
            o.append("")
            o.append("## Waiting for approval")
            o.append("")
            for a in f.pendingApprovals { o.append("- `\(a.id)` \(a.title) — `hydra approve \(a.id)` or `hydra reject \(a.id) --reason …`") }
        }
        o.append("")
        return o.joined(separator: "\n")
    }

    static func recommendations(_ f: NightFacts, scored: [ImageOutcomeRow], rejections: [Gate: (any: Int, alone: Int)]) -> [String] {
        var out: [String] = []
        for c in f.collections where c.approvedTotal < c.target {
            out.append("\(c.name) is \(c.target - c.approvedTotal) image(s) short of its target of \(c.target).")
        }
        if scored.count >= 4 {
            for g in Gate.allCases {
                let n = rejections[g]!.any
                if Double(n) / Double(scored.count) > 0.5 {
                    out.append("The \(g.rawValue) gate rejected \(n) of \(scored.count) images (\(rejections[g]!.alone) by itself): check its threshold"
                               + (g == .faceSimilarity ? " (InsightFace itself matches identities from about 0.28–0.4)." : "."))
                }
            }
        }
        let busy = Set(f.gpuTime.filter { $0.seconds > 0 && $0.gpu != "CPU" }.map { "\($0.node)/\($0.gpu)" })
        let idle = f.allGPUs.filter { !busy.contains("\($0.node)/\($0.gpu)") }
        if !idle.isEmpty && !f.gpuTime.isEmpty {
            out.append("Idle all night: \(idle.map { "\($0.node) GPU \($0.gpu)" }.joined(separator: ", ")).")
        }
        if f.stoppedAtDeadline {
            out.append("The night hit its deadline with \(f.carriedImages) image(s) unfinished: they resume next night; consider a smaller max_images_per_night.")
        }
        if !f.blocked.isEmpty { out.append("\(f.blocked.count) task(s) blocked by the denylist: edit those collections' ideas or style notes.") }
        return out
    }

    /// A text histogram: one row per bin, a bar of `#`, the count, and a mark on the bin holding the threshold.
    public static func histogram(_ title: String, _ values: [Double], lower: Double, upper: Double, bins: Int, threshold: Double?) -> [String] {
        var out = ["\(title) (n=\(values.count))"]
        guard !values.isEmpty else { return out + ["  no scores"] }
        let lo = min(lower, values.min()!), hi = max(upper, values.max()!)
        let width = (hi - lo) / Double(bins)
        var counts = [Int](repeating: 0, count: bins)
        for v in values { counts[min(bins - 1, max(0, Int((v - lo) / width)))] += 1 }
        let most = counts.max() ?? 1
        for i in 0..<bins {
            let a = lo + Double(i) * width, b = a + width
            let bar = String(repeating: "#", count: most == 0 ? 0 : Int((Double(counts[i]) / Double(most) * 30).rounded(.up)))
            let mark = threshold.map { $0 >= a && $0 < b ? "  <- threshold \(num($0))" : "" } ?? ""
            out.append(String(format: "  %6.2f–%6.2f | %@ %d%@", a, b, bar, counts[i], mark))
        }
        return out
    }

    static func pct(_ x: Double) -> String { String(format: "%.0f %%", x * 100) }
    static func num(_ x: Double) -> String { x == x.rounded() ? String(Int(x)) : String(format: "%g", x) }
    static func cell(_ s: String) -> String { String(s.prefix(120)).replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ") }
    static func clock(_ d: Date, _ tz: TimeZone) -> String {
        let f = DateFormatter()
        f.timeZone = tz; f.locale = Locale(identifier: "en_US_POSIX"); f.dateFormat = "yyyy-MM-dd HH:mm"
        return f.string(from: d)
    }
    static func duration(_ s: Double) -> String {
        if s < 120 { return String(format: "%.1f s", s) }
        let m = Int(s.rounded()) / 60
        return m < 120 ? "\(m) min" : "\(m / 60) h \(m % 60) min"
    }
}

/// One image's row for the report (`quality_metrics`).
public struct ImageOutcomeRow: Sendable, Equatable {
    public var collection: String
    public var state: String
    public var scores: ImageScores
    public var failedGates: [Gate]
    public var reason: String?
    public var failureClass: String?
    public var assetPath: String?
    public var disposition: String?

    public init(collection: String, state: String, scores: ImageScores, failedGates: [Gate], reason: String?,
                failureClass: String?, assetPath: String?, disposition: String?) {
        self.collection = collection; self.state = state; self.scores = scores; self.failedGates = failedGates
        self.reason = reason; self.failureClass = failureClass; self.assetPath = assetPath; self.disposition = disposition
    }
}
