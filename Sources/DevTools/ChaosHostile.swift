import Foundation
import Synchronization
import HydraCore
import HydraWire
import HydraIO
import HydraStore
import HydraTestSupport

/// `hydra-dev chaos --hostile`: while the faults of the plan happen, a rogue node and a hostile client send
/// what a broken or compromised agent would: outputs full of NULs and broken UTF-8, results no database
/// can store, broken and unsigned results, results and heartbeats forged for other nodes, replayed and
/// misrouted envelopes, a clock an hour and a half off, and cancel-then-retry races. The run then
/// checks that none of it lost, duplicated or killed a job, stalled the coordinator, or failed a job
/// other than those the rogue itself poisoned.
final class HostileDriver: @unchecked Sendable {
    // @unchecked: every field below is touched only by the driver's own thread, except `stats` (a Mutex)
    // and `stopFlag` (an Atomic), which the chaos run reads after `stop()` has joined that thread.

    struct Stats: Sendable {
        var rogueJobs = 0
        var hostileOutputs = 0
        var unstorable: Set<String> = []
        var brokenBodies = 0
        var silent = 0
        var duplicates = 0
        var oversize = 0
        var forgedResults = 0
        var forgedHeartbeats = 0
        var replays = 0
        var misrouted = 0
        var cancelRaces = 0
    }

    static let rogueNode = "hydra-rogue"
    let rogue: RogueAgent
    let admin: RedisConnection
    let db: PGConnection
    let nodes: [String]
    let clusterKeys: SigningKeys
    var rng: SplitMix64
    var text: HostileText
    let stats = Mutex(Stats())
    private let stopFlag = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private var sniffed: [[String]] = []

    init(redisURL: String, dbURL: String, nodes: [String], clusterKeys: SigningKeys, seed: UInt64) throws {
        let endpoint = try RedisEndpoint(url: redisURL)
        rogue = RogueAgent(node: Self.rogueNode, redis: endpoint, keys: clusterKeys.node(Self.rogueNode))
        rogue.clockSkew = -5400
        rogue.capacity = 32
        admin = RedisConnection(endpoint: endpoint)
        db = PGConnection(url: dbURL)
        self.nodes = nodes
        self.clusterKeys = clusterKeys
        rng = SplitMix64(seed: seed ^ 0x4057_11E)
        text = HostileText(seed: seed ^ 0xBAD_B17E5)
    }

    func start() {
        let t = Thread { [self] in
            var tick = 0
            while !stopFlag.load(ordering: .relaxed) {
                // Redis or PostgreSQL may be restarting (a fault of the plan): try again next tick.
                do { try step(tick) } catch {}
                tick += 1
                Thread.sleep(forTimeInterval: 0.2)
            }
            done.signal()
        }
        t.name = "hostile"
        t.start()
    }

    func stop() -> Stats {
        stopFlag.store(true, ordering: .relaxed)
        done.wait()
        db.close()
        return stats.withLock { $0 }
    }

    func chance(_ percent: UInt64) -> Bool { rng.next() % 100 < percent }

    func step(_ tick: Int) throws {
        // It never lists what it holds: jobs it stays silent on run out their lease and go elsewhere.
        try rogue.heartbeat()
        for env in try rogue.take(max: 16) { try answer(env) }
        if tick % 5 == 0 { try forgeResults() }
        if tick % 15 == 7 { try forgeHeartbeat() }
        if tick % 10 == 3 { try sniffAndReplay() }
        if tick % 10 == 8 { try cancelRetryRace() }
    }

    /// The rogue's own jobs: some honest answers with hostile text, some that can never be applied.
    func answer(_ env: Envelope) throws {
        stats.withLock { $0.rogueJobs += 1 }
        let roll = rng.next() % 100
        switch roll {
        case 0..<40:
            try rogue.send(rogue.started(env))
            try rogue.send(rogue.succeeded(env, output: .object(["text": .string(text.text(200)), "v": text.value()])))
            stats.withLock { $0.hostileOutputs += 1 }
        case 40..<50:
            var r = rogue.succeeded(env, output: ["ok": true])
            r.startedAt = 1e300
            try rogue.send(r)
            stats.withLock { _ = $0.unstorable.insert(env.jobID) }
        case 50..<60:
            try rogue.sendRaw(text.brokenBody(jobID: env.jobID, attempt: env.attempt, node: rogue.node))
            stats.withLock { $0.brokenBodies += 1 }
        case 60..<75:
            // Silence: the job is not even listed as held, so its lease runs out and it goes elsewhere.
            stats.withLock { $0.silent += 1 }
        case 75..<78:
            // A result over the coordinator's entry limit: refused unread, so the job runs out its lease.
            try rogue.send(rogue.succeeded(env, output: .string(String(repeating: "o", count: MessageLimits.resultEntryBytes))))
            stats.withLock { $0.oversize += 1 }
        case 78..<85:
            let r = rogue.succeeded(env, output: ["twice": true])
            try rogue.send(r)
            try rogue.send(r)
            stats.withLock { $0.duplicates += 1 }
        default:
            try rogue.send(rogue.started(env))
            try rogue.send(rogue.succeeded(env, output: .string(text.text(64))))
            stats.withLock { $0.hostileOutputs += 1 }
        }
    }

    /// A job running on a real node, as the database says.
    func someRunningJob() throws -> (id: String, attempt: Int, node: String)? {
        let rows = try db.exec("""
            SELECT id, attempt, node FROM jobs WHERE state IN ('dispatched', 'running') AND node = ANY($1::text[])
            ORDER BY random() LIMIT 1
            """, [PGConnection.textArray(nodes)]).all
        guard let r = rows.first, let id = r["id"], let a = r.int("attempt"), let n = r["node"] else { return nil }
        return (id, a, n)
    }

    /// Results for other nodes' jobs: claimed by the rogue on its own stream (fenced by the job's node),
    /// unsigned and rogue-signed on the job's node's stream (refused), and bytes that are no result at all.
    func forgeResults() throws {
        guard let j = try someRunningJob() else { return }
        let claim = AttemptResult(jobID: j.id, attempt: j.attempt, node: rogue.node, outcome: .succeeded, result: ["forged": true])
        try rogue.send(claim)
        var theirs = claim
        theirs.node = j.node
        try rogue.send(theirs, signWith: .some(nil), stream: RedisKeys.results(j.node))
        try rogue.send(theirs, stream: RedisKeys.results(j.node))
        try rogue.sendRaw(text.text(120))
        stats.withLock { $0.forgedResults += 4 }
    }

    /// A heartbeat for a real node, signed with the rogue's key and claiming a running job: refused.
    /// (With Redis ACLs the write itself is refused; chaos runs without them to test the coordinator's check.)
    func forgeHeartbeat() throws {
        guard let j = try someRunningJob() else { return }
        try rogue.heartbeat(held: [HeldJob(id: j.id, attempt: j.attempt)], forNode: j.node)
        stats.withLock { $0.forgedHeartbeats += 1 }
    }

    /// Copies of real envelopes: put back on their own stream (a replay: the agent has seen the attempt)
    /// and on another node's stream (misrouted: another node, another key).
    func sniffAndReplay() throws {
        for n in nodes {
            let r = try admin.run(["XRANGE", RedisKeys.jobs(n), "-", "+", "COUNT", "4"])
            for e in RedisConnection.parseEntries(r.array ?? []) {
                guard let f = e.fields, f["type"] == "job", let body = f["body"], let sig = f["sig"], let kid = f["kid"] else { continue }
                sniffed.append([n, "type", "job", "body", body, "sig", sig, "kid", kid])
            }
        }
        if sniffed.count > 200 { sniffed.removeFirst(sniffed.count - 200) }
        guard !sniffed.isEmpty else { return }
        let pick = sniffed[Int(rng.next() % UInt64(sniffed.count))]
        let home = pick[0], fields = Array(pick.dropFirst())
        try admin.run(["XADD", RedisKeys.jobs(home), "*"] + fields)
        let other = nodes.filter { $0 != home }[Int(rng.next() % UInt64(nodes.count - 1))]
        try admin.run(["XADD", RedisKeys.jobs(other), "*"] + fields)
        stats.withLock { $0.replays += 1; $0.misrouted += 1 }
    }

    /// An operator cancels a running job and retries it at once.
    func cancelRetryRace() throws {
        guard let j = try someRunningJob() else { return }
        let store = JobStore(db: db)
        if try store.cancel(jobIDs: [j.id]) == 1 {
            _ = try store.retry(jobIDs: [j.id])
            stats.withLock { $0.cancelRaces += 1 }
        }
    }
}

/// Progress samples for stall detection: when the count of finished jobs last moved.
final class ProgressSampler: Sendable {
    private let samples = Mutex<[(t: Double, finished: Int, unfinished: Int)]>([])
    private let stopFlag = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)

    func start(dbURL: String) {
        let t = Thread { [self] in
            let db = PGConnection(url: dbURL)
            while !stopFlag.load(ordering: .relaxed) {
                if let rows = try? db.exec("""
                    SELECT count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled')) AS f, count(*) AS n FROM jobs
                    """).all.first, let f = rows.int("f"), let n = rows.int("n") {
                    samples.withLock { $0.append((Date().timeIntervalSince1970, f, n - f)) }
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
            db.close()
            done.signal()
        }
        t.name = "progress"
        t.start()
    }

    func stop() { stopFlag.store(true, ordering: .relaxed); done.wait() }

    /// Windows of at least `threshold` seconds in which jobs were waiting and none finished, outside the
    /// faults (plus `grace` after each: a restarted PostgreSQL or a dead node legitimately pauses work).
    func stalls(threshold: Double, faults: [ChaosFaultRecord], grace: Double) -> (count: Int, longest: Double) {
        let s = samples.withLock { $0 }
        var count = 0, longest = 0.0
        var since: Double?
        var lastFinished = -1
        for x in s {
            let excused = faults.contains { x.t >= $0.start && x.t <= $0.end + grace }
            if x.finished != lastFinished || x.unfinished == 0 || excused {
                if let st = since { let d = x.t - st; if d >= threshold { count += 1 }; longest = max(longest, d) }
                since = (x.unfinished > 0 && !excused) ? x.t : nil
                lastFinished = x.finished
            }
        }
        if let st = since, let last = s.last {
            let d = last.t - st
            if d >= threshold { count += 1 }
            longest = max(longest, d)
        }
        return (count, longest)
    }
}
