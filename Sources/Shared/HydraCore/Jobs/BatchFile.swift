import Foundation

/// One job of a batch after `count`/`matrix` expansion, ready to insert.
public struct NewJob: Sendable, Equatable {
    public var name: String
    public var kind: String
    public var spec: JSONValue
    public var vramBytes: UInt64
    public var gpus: Int
    public var constraints: JSONValue
    public var priority: Int
    public var maxAttempts: Int
    public var deadlineSeconds: Double?

    public init(name: String, kind: String, spec: JSONValue, vramBytes: UInt64, gpus: Int, constraints: JSONValue = .object([:]),
                priority: Int = 0, maxAttempts: Int = 3, deadlineSeconds: Double? = nil) {
        self.name = name; self.kind = kind; self.spec = spec; self.vramBytes = vramBytes; self.gpus = gpus
        self.constraints = constraints; self.priority = priority; self.maxAttempts = maxAttempts
        self.deadlineSeconds = deadlineSeconds
    }
}

/// The jobs of one batch file entry (a contiguous range of the plan's jobs) and the entries every
/// one of them waits on. Dependencies are kept per entry, never per job: `after: render` on an
/// entry of 10 000 jobs behind 10 000 renders is one list of one entry, not 10 000 lists of
/// 10 000 job IDs (those took 2m54s to submit and 19 s per placement pass to read).
public struct JobGroup: Sendable, Equatable {
    public var name: String
    public var jobs: Range<Int>
    /// Indexes (in the plan's `groups`) of the entries whose jobs must all succeed first.
    public var after: [Int]

    public init(name: String, jobs: Range<Int>, after: [Int] = []) {
        self.name = name; self.jobs = jobs; self.after = after
    }
}

public struct BatchPlan: Sendable, Equatable {
    public var name: String
    public var priority: Int
    public var jobs: [NewJob]
    public var spec: JSONValue
    /// The entries that carry dependencies (disjoint ranges of `jobs`); a plan without any has none.
    public var groups: [JobGroup]

    public init(name: String, priority: Int = 0, jobs: [NewJob], spec: JSONValue = .object([:]), groups: [JobGroup] = []) {
        self.name = name; self.priority = priority; self.jobs = jobs; self.spec = spec; self.groups = groups
    }

    /// The first dependency cycle among the plan's entries, as entry names, or nil.
    public func dependencyCycle() -> [String]? {
        var state = [UInt8](repeating: 0, count: groups.count)   // 0 new, 1 on the path, 2 done
        var path: [Int] = []
        func visit(_ g: Int) -> [Int]? {
            if state[g] == 2 { return nil }
            if state[g] == 1 { return Array(path[(path.firstIndex(of: g) ?? 0)...]) + [g] }
            state[g] = 1
            path.append(g)
            for d in groups[g].after where groups.indices.contains(d) {
                if let c = visit(d) { return c }
            }
            path.removeLast()
            state[g] = 2
            return nil
        }
        for g in groups.indices { if let c = visit(g) { return c.map { groups[$0].name } } }
        return nil
    }

    /// Per job, the entry (index into `groups`) it belongs to, nil for a job of no entry.
    public func groupOfJob() -> [Int?] {
        var out = [Int?](repeating: nil, count: jobs.count)
        for (g, group) in groups.enumerated() {
            for j in group.jobs where out.indices.contains(j) { out[j] = g }
        }
        return out
    }

    /// The jobs job `i` waits on, spelled out (n × m for an entry after an entry: for tests and small plans).
    public func dependencies(of i: Int) -> [Int] {
        guard let g = groups.firstIndex(where: { $0.jobs.contains(i) }) else { return [] }
        return groups[g].after.flatMap { groups.indices.contains($0) ? Array(groups[$0].jobs) : [] }
    }

    /// The work waiting on each job (`DependencyTails`), through one node per entry: job → the entries
    /// it is after → their jobs, so an entry after an entry costs n + m edges, not n × m.
    public func tails(ownS: [Double]) -> [Double] {
        let n = jobs.count
        let groupOf = groupOfJob()
        var dependsOn = [[Int]](repeating: [], count: n + groups.count)
        for j in 0..<n { if let g = groupOf[j] { dependsOn[j] = groups[g].after.map { n + $0 } } }
        for (g, group) in groups.enumerated() { dependsOn[n + g] = group.jobs.filter { $0 < n } }
        let own = ownS + [Double](repeating: 0, count: groups.count)
        return Array(DependencyTails.compute(dependsOn: dependsOn, ownS: own).prefix(n))
    }
}

/// Reads and validates a batch file. Everything is checked before anything is
/// written, and every error names the file, the job and the field.
public enum BatchFile {
    public static let maxJobs = 200_000
    static let batchKeys: Set<String> = ["name", "priority", "max_attempts", "jobs", "description"]
    static let jobKeys: Set<String> = ["name", "kind", "count", "matrix", "vram", "gpus", "spec", "constraints",
                                       "priority", "max_attempts", "deadline_s", "after"]

    /// The path of the first string or key holding a NUL (`jobs[0].spec.prompt`), or nil.
    static func firstNUL(_ v: JSONValue, path: String) -> String? {
        v.firstPath(from: path) { x in if case .string(let s) = x { return s.utf8.contains(0) }; return false }
            ?? v.firstKeyPath(from: path) { $0.utf8.contains(0) }
    }

    public static func load(path: String, cluster: ClusterConfig?) throws -> BatchPlan {
        let text = try ConfigLoader.readFile(path)
        return try parse(text: text, file: path, cluster: cluster)
    }

    public static func parse(text: String, file: String, cluster: ClusterConfig?) throws -> BatchPlan {
        let doc = try ConfigLoader.parseDocument(text, file: file)
        if let at = firstNUL(doc, path: "") {
            // PostgreSQL stores no NUL in text or jsonb: refused here with its place, not half-way through the submit.
            throw InputError(file: file, location: at, problem: "contains a NUL character (\\0), which cannot be stored; remove it")
        }
        guard let top = doc.objectValue else { throw InputError(file: file, problem: "expected a map with 'name' and 'jobs'") }
        for k in top.keys where !batchKeys.contains(k) {
            throw InputError(file: file, location: k, problem: "unknown field '\(k)' (known: \(batchKeys.sorted().joined(separator: ", ")))")
        }
        guard let name = top["name"]?.stringValue, !name.isEmpty else {
            throw InputError(file: file, location: "name", problem: "the batch needs a non-empty 'name'")
        }
        try checkName(name, file: file, at: "name")
        let priority = try int(top["priority"], default: 0, file: file, at: "priority", range: -1000...1000)
        let maxAttempts = try int(top["max_attempts"], default: 3, file: file, at: "max_attempts", range: 1...100)
        guard let jobsValue = top["jobs"] else { throw InputError(file: file, location: "jobs", problem: "required field 'jobs' is missing") }
        guard let jobs = jobsValue.arrayValue, !jobs.isEmpty else {
            throw InputError(file: file, location: "jobs", problem: "expected a non-empty list of jobs")
        }
        var out: [NewJob] = []
        var groups: [String: Int] = [:]
        var entries: [JobGroup] = []
        var afters: [(index: Int, names: [String], group: Int)] = []
        for (i, j) in jobs.enumerated() {
            let start = out.count
            out += try expand(j, index: i, file: file, batchPriority: priority, batchMaxAttempts: maxAttempts, cluster: cluster)
            if out.count > maxJobs {
                throw InputError(file: file, location: "jobs[\(i)]", problem: "the batch expands to more than \(maxJobs) jobs")
            }
            let groupName = j["name"]?.stringValue ?? "job\(i)"
            if groups[groupName] != nil {
                throw InputError(file: file, location: "jobs[\(i)].name", problem: "two job entries are named '\(groupName)'")
            }
            groups[groupName] = entries.count
            entries.append(JobGroup(name: groupName, jobs: start..<out.count))
            if let a = j["after"] {
                let names = a.stringValue.map { [$0] } ?? a.arrayValue?.compactMap(\.stringValue)
                guard let names, !names.isEmpty, names.count == (a.arrayValue?.count ?? 1) else {
                    throw InputError(file: file, location: "jobs[\(i)].after", problem: "expected a job name or a list of job names")
                }
                afters.append((i, names, entries.count - 1))
            }
        }
        // `after: [group]` = every job of this entry waits for every job of the named entries.
        for a in afters {
            var deps: [Int] = []
            for n in a.names {
                guard let g = groups[n] else {
                    throw InputError(file: file, location: "jobs[\(a.index)].after",
                                     problem: "no job entry named '\(n)' (entries: \(groups.keys.sorted().joined(separator: ", ")))")
                }
                if !deps.contains(g) { deps.append(g) }
            }
            entries[a.group].after = deps
        }
        let plan = BatchPlan(name: name, priority: priority, jobs: out, spec: doc, groups: afters.isEmpty ? [] : entries)
        if let cycle = plan.dependencyCycle() {
            throw InputError(file: file, location: "jobs", problem: "dependency cycle: \(cycle.joined(separator: " → "))")
        }
        return plan
    }

    static func expand(_ j: JSONValue, index i: Int, file: String, batchPriority: Int, batchMaxAttempts: Int,
                       cluster: ClusterConfig?) throws -> [NewJob] {
        guard let o = j.objectValue else { throw InputError(file: file, location: "jobs[\(i)]", problem: "expected a map") }
        // Printable: the label goes to the operator's terminal, and the name may hold an escape sequence.
        let label = o["name"]?.stringValue.map { "jobs[\(i)] '\(TextTable.printable($0))'" } ?? "jobs[\(i)]"
        for k in o.keys where !jobKeys.contains(k) {
            throw InputError(file: file, location: "\(label).\(k)", problem: "unknown field '\(k)' (known: \(jobKeys.sorted().joined(separator: ", ")))")
        }
        let name = o["name"]?.stringValue ?? "job\(i)"
        try checkName(name, file: file, at: "\(label).name")
        guard let kindValue = o["kind"] else { throw InputError(file: file, location: "\(label).kind", problem: "required field 'kind' is missing") }
        guard let kind = kindValue.stringValue, JobKind(rawValue: kind) != nil else {
            throw InputError(file: file, location: "\(label).kind",
                             problem: "unknown kind '\(kindValue.stringValue ?? "\(kindValue)")' (known: \(JobKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let gpus = try int(o["gpus"], default: (o["vram"] == nil || isZero(o["vram"])) ? 0 : 1, file: file, at: "\(label).gpus", range: 0...16)
        var vram: UInt64 = 0
        if let v = o["vram"] {
            if let n = v.doubleValue.flatMap(ByteSize.bytes) { vram = n }
            else if let s = v.stringValue, let b = ByteSize.parse(s) { vram = b }
            else { throw InputError(file: file, location: "\(label).vram", problem: "'\(v.stringValue ?? v.doubleValue.map { "\($0)" } ?? "\(v)")' is not a size (use e.g. 8GiB)") }
        }
        if vram > 0 && gpus == 0 {
            throw InputError(file: file, location: "\(label).gpus", problem: "a job with vram needs gpus ≥ 1")
        }
        if let cluster {
            let largest = cluster.largestGPUBytes
            if vram > largest {
                throw InputError(file: file, location: "\(label).vram",
                                 problem: "needs \(ByteSize.format(vram)) per GPU but the largest GPU in the cluster has \(ByteSize.format(largest))")
            }
            if gpus > 0 {
                let fitting = cluster.nodes.map { n in n.gpus.filter { $0.memory.bytes >= vram }.count }.max() ?? 0
                if fitting < gpus {
                    throw InputError(file: file, location: "\(label).gpus",
                                     problem: "needs \(gpus) GPUs with \(ByteSize.format(vram)) each on one node; no node has that many")
                }
            }
        }
        let count = try int(o["count"], default: 1, file: file, at: "\(label).count", range: 1...maxJobs)
        let spec = o["spec"] ?? .object([:])
        guard spec.objectValue != nil else { throw InputError(file: file, location: "\(label).spec", problem: "expected a map") }
        try validateSpec(kind: kind, spec: spec, file: file, at: "\(label).spec")
        let constraints = o["constraints"] ?? .object([:])
        guard let co = constraints.objectValue else { throw InputError(file: file, location: "\(label).constraints", problem: "expected a map") }
        try checkConstraints(co, file: file, at: "\(label).constraints", cluster: cluster)
        // Every job row carries its spec, and the console and the router read it: a 20 MB spec cost
        // 70 MB of coordinator memory per console request for its batch.
        let specBytes = try JSONCoding.encodeString(spec).utf8.count
        if specBytes > maxSpecBytes {
            throw InputError(file: file, location: "\(label).spec",
                             problem: "is \(ByteSize.format(UInt64(specBytes))) of JSON; a job's spec may hold at most \(ByteSize.format(UInt64(maxSpecBytes))) (put large inputs in files the job reads)")
        }
        let priority = try int(o["priority"], default: batchPriority, file: file, at: "\(label).priority", range: -1000...1000)
        let maxAttempts = try int(o["max_attempts"], default: batchMaxAttempts, file: file, at: "\(label).max_attempts", range: 1...100)
        var deadline: Double?
        if let d = o["deadline_s"] {
            guard let s = d.doubleValue, s > 0, s.isFinite else { throw InputError(file: file, location: "\(label).deadline_s", problem: "expected a positive number of seconds") }
            deadline = s
        }

        var combos: [[(String, JSONValue)]] = [[]]
        if let m = o["matrix"] {
            guard let mo = m.objectValue, !mo.isEmpty else { throw InputError(file: file, location: "\(label).matrix", problem: "expected a map of lists") }
            for key in mo.keys.sorted() {
                guard let values = mo[key]!.arrayValue, !values.isEmpty else {
                    throw InputError(file: file, location: "\(label).matrix.\(key)", problem: "expected a non-empty list")
                }
                combos = combos.flatMap { c in values.map { c + [(key, $0)] } }
                if combos.count * count > maxJobs {
                    throw InputError(file: file, location: "\(label).matrix", problem: "expands to more than \(maxJobs) jobs")
                }
            }
        }
        var out: [NewJob] = []
        for combo in combos {
            for k in 0..<count {
                var s = spec.objectValue ?? [:]
                var suffix = ""
                for (key, v) in combo {
                    if secondsFields.contains(key) { try checkSeconds(v, file: file, at: "\(label).matrix.\(key)") }
                    s[key] = v
                    suffix += "-\(key)=\(v.stringValue ?? v.doubleValue.map { d in Int(exactly: d).map(String.init) ?? String(d) } ?? "x")"
                }
                if count > 1 { suffix += "-\(k + 1)" }
                out.append(NewJob(name: name + suffix, kind: kind, spec: .object(s), vramBytes: vram, gpus: gpus,
                                  constraints: constraints, priority: priority, maxAttempts: maxAttempts, deadlineSeconds: deadline))
            }
        }
        return out
    }

    /// Longest batch or job entry name, in characters: names fill a column of `hydra status`.
    public static let maxNameLength = 200

    /// Names are printed in terminals and tables: no control characters (an ESC sequence in a
    /// job name would be run by the operator's terminal), and short enough for a column.
    static func checkName(_ name: String, file: String, at: String) throws {
        if let c = name.unicodeScalars.first(where: { $0.properties.generalCategory == .control }) {
            throw InputError(file: file, location: at,
                             problem: "contains a control character (U+\(String(format: "%04X", c.value))); names may hold letters, digits, spaces and punctuation")
        }
        if name.count > maxNameLength {
            throw InputError(file: file, location: at, problem: "is \(name.count) characters long; at most \(maxNameLength)")
        }
    }

    /// Largest spec one job may carry, as JSON (an inline ComfyUI workflow is tens of KiB).
    public static let maxSpecBytes = 1 << 20

    static let constraintKeys = ["gpu_index", "gpu_model", "node", "service"]

    /// The placement constraints the router reads (`JobDemand`), each of its type; with the cluster
    /// known, each must name something in it. A misspelt key or a node that does not exist would
    /// otherwise be ignored (the job runs anywhere) or leave the job pending for ever.
    static func checkConstraints(_ c: [String: JSONValue], file: String, at: String, cluster: ClusterConfig?) throws {
        for k in c.keys.sorted() where !constraintKeys.contains(k) {
            throw InputError(file: file, location: "\(at).\(k)", problem: "unknown constraint '\(k)' (known: \(constraintKeys.joined(separator: ", ")))")
        }
        let node = try c["node"].map { v -> String in
            guard let s = v.stringValue, !s.isEmpty else { throw InputError(file: file, location: "\(at).node", problem: "expected a node name") }
            return s
        }
        let model = try c["gpu_model"].map { v -> String in
            guard let s = v.stringValue, !s.isEmpty else {
                // YAML reads `gpu_model: 3060` as a number, which the router would not match against anything.
                throw InputError(file: file, location: "\(at).gpu_model",
                                 problem: "expected (part of) a GPU model name as a string\(v.doubleValue != nil ? " (quote it: \"\(v.intValue.map(String.init) ?? "…")\")" : "")")
            }
            return s
        }
        let index = try c["gpu_index"].map { v -> Int in
            guard case .number(let d) = v, d.rounded() == d, d >= 0, d < 1_000_000 else {
                throw InputError(file: file, location: "\(at).gpu_index", problem: "expected a GPU index (a whole number from 0)")
            }
            return Int(d)
        }
        var services: [String]?
        if let v = c["service"] {
            services = v.stringValue.map { [$0] } ?? v.arrayValue?.compactMap(\.stringValue)
            guard let list = services, list.count == (v.arrayValue?.count ?? 1), list.allSatisfy({ !$0.isEmpty }) else {
                throw InputError(file: file, location: "\(at).service", problem: "expected a service name or a list of them")
            }
        }
        guard let cluster else { return }
        var nodes = cluster.nodes
        if let node {
            nodes = nodes.filter { $0.name == node }
            if nodes.isEmpty {
                throw InputError(file: file, location: "\(at).node",
                                 problem: "no node '\(node)' in the cluster (nodes: \(cluster.nodes.map(\.name).joined(separator: ", ")))")
            }
        }
        if let model {
            let m = model.lowercased()
            if !nodes.contains(where: { $0.gpus.contains { $0.model.lowercased().contains(m) } }) {
                throw InputError(file: file, location: "\(at).gpu_model", problem: "no GPU model matching '\(model)'\(node.map { " on \($0)" } ?? "") in the cluster")
            }
        }
        if let index, !nodes.contains(where: { $0.gpus.count > index }) {
            throw InputError(file: file, location: "\(at).gpu_index", problem: "no GPU \(index)\(node.map { " on \($0)" } ?? " on any node") in the cluster")
        }
        // Any one of the listed services will do (the router's reading); `[]` means none is needed.
        if let services, !services.isEmpty {
            let have = Set(nodes.flatMap { $0.services.map { $0.lowercased() } })
            if !services.contains(where: { have.contains($0.lowercased()) }) {
                throw InputError(file: file, location: "\(at).service",
                                 problem: "no node\(node.map { " '\($0)'" } ?? "") in the cluster runs \(services.map { "'\($0)'" }.joined(separator: " or ")) (services: \(have.sorted().joined(separator: ", ")))")
            }
        }
    }

    /// Spec fields the router and the sleep executor read as seconds, in any kind.
    static let secondsFields = ["duration_s", "base_runtime_s"]

    static func validateSpec(kind: String, spec: JSONValue, file: String, at: String) throws {
        for f in secondsFields { try checkSeconds(spec[f], file: file, at: "\(at).\(f)") }
        if kind == "command" {
            guard let argv = spec["argv"]?.arrayValue, !argv.isEmpty, argv.allSatisfy({ $0.stringValue != nil }) else {
                throw InputError(file: file, location: "\(at).argv", problem: "a command job needs 'argv': a non-empty list of strings (no shell)")
            }
        }
    }

    /// A number of seconds from 0 to `KindDefaults.maxSeconds` (a numeric string counts, as the readers
    /// parse one): a negative, NaN or endless runtime would order and cost every job beside it wrongly.
    static func checkSeconds(_ v: JSONValue?, file: String, at: String) throws {
        guard let v else { return }
        guard KindDefaults.seconds(v) == nil else { return }
        let shown: String
        switch v {
        case .number(let n): shown = "\(n)"
        case .string(let t): shown = "'\(t.prefix(40))'"
        case .bool(let b): shown = "\(b)"
        case .null: shown = "null"
        case .array: shown = "a list"
        case .object: shown = "a map"
        }
        throw InputError(file: file, location: at, problem: "expected a number of seconds from 0 to \(Int(KindDefaults.maxSeconds)), got \(shown)")
    }

    static func isZero(_ v: JSONValue?) -> Bool {
        guard let v else { return true }
        if let d = v.doubleValue { return d == 0 }
        if let s = v.stringValue { return ByteSize.parse(s) == 0 }
        return false
    }

    static func int(_ v: JSONValue?, default d: Int, file: String, at: String, range: ClosedRange<Int>) throws -> Int {
        guard let v else { return d }
        guard let i = v.intValue else { throw InputError(file: file, location: at, problem: "expected a whole number") }
        guard range.contains(i) else { throw InputError(file: file, location: at, problem: "\(i) is outside \(range.lowerBound)…\(range.upperBound)") }
        return i
    }
}

extension BatchPlan {
    /// The first `command` job whose argv no node runs, as an error naming the job and each node's
    /// refusal; nil when every one may run somewhere. Judged only when every node's list is known
    /// (`lists`: node → its agent's allowlist, nil for a node whose agent has not said): a node that has
    /// not said may run anything, and refusing on a guess would refuse work a node takes.
    public func commandRefusal(lists: [String: CommandAllowlist?], file: String) -> InputError? {
        guard !lists.isEmpty, lists.values.allSatisfy({ $0 != nil }) else { return nil }
        var allowed = Set<[String]>()
        for j in jobs where j.kind == "command" {
            guard let raw = j.spec["argv"]?.arrayValue, !raw.isEmpty else { continue }
            let argv = raw.compactMap(\.stringValue)
            guard argv.count == raw.count else { continue }
            let pin = j.constraints["node"]?.stringValue
            if pin == nil && allowed.contains(argv) { continue }
            let names = lists.keys.sorted().filter { pin == nil || $0 == pin }
            // A pin to a node not in the list is the constraint check's to report.
            if names.isEmpty { continue }
            var why: [String] = []
            var runs = false
            for n in names {
                guard let list = lists[n] ?? nil else { continue }
                switch list.check(argv) {
                case .success: runs = true
                case .failure(let e): why.append("\(n): \(e.description.replacingOccurrences(of: "this node's ", with: "its "))")
                }
                if runs { break }
            }
            if runs { if pin == nil { allowed.insert(argv) }; continue }
            return InputError(file: file, location: "job '\(TextTable.printable(j.name))'.spec.argv",
                              problem: "no node's command allowlist runs \(CommandTemplate.shown(argv.joined(separator: " "))) (\(why.joined(separator: "; "))); "
                                  + "allow it on a node (command_allowlist in the cluster file, or the agent's --allow-command) or change the argv")
        }
        return nil
    }
}
