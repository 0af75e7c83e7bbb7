import Foundation
import Shared
import Synchronization

struct CoordinatorSettings: Sendable {
    var redisURL: String
    var databaseURL: String
    var cluster: ClusterConfig?
    var leaseSeconds: Double = 10
    var resultBlockMillis: Int = 100
    var placementBatch: Int = 5000
    var envelopeTTLSeconds: Double = 900
    var keys: SigningKeys?
    /// A node silent this long is dead: its jobs are requeued.
    var nodeTimeoutSeconds: Double = 5
}

/// The coordinator loop: heartbeats in, results in, placements out. It keeps no
/// authoritative state in memory: every decision is re-derived from PostgreSQL
/// and the live heartbeats, so a restart (or a standby taking over) loses nothing.
final class CoordinatorService: Sendable {
    let settings: CoordinatorSettings
    let metrics = CoordinatorMetrics()
    let log = Log(component: "coordinator")
    private let stopping = Atomic<Bool>(false)

    init(settings: CoordinatorSettings) { self.settings = settings }

    func stop() { stopping.store(true, ordering: .relaxed) }
    var isStopping: Bool { stopping.load(ordering: .relaxed) }

    /// Runs until `stop()`; reconnects to PostgreSQL and Redis with backoff.
    func run() {
        var backoff = 0.2
        while !isStopping {
            let lockConn = PGConnection(url: settings.databaseURL)
            do {
                try waitForLeadership(lockConn)
                if isStopping { return }
                metrics.registry.set("hydra_coordinator_leader", [], 1)
                log.info("leading")
                try lead(lockConn)
                backoff = 0.2
            } catch {
                metrics.registry.set("hydra_coordinator_leader", [], 0)
                log.warning("coordinator loop failed, retrying in \(String(format: "%.1f", backoff)) s: \(error)")
                sleepInterruptibly(backoff)
                backoff = min(backoff * 2, 5)
            }
            lockConn.close()
        }
        metrics.registry.set("hydra_coordinator_leader", [], 0)
    }

    /// One coordinator leads; others wait here on a PostgreSQL advisory lock.
    private func waitForLeadership(_ conn: PGConnection) throws {
        var logged = false
        while !isStopping {
            let r = try conn.exec("SELECT pg_try_advisory_lock(7210002) AS ok")
            if r[0].bool("ok") == true { return }
            if !logged { log.info("another coordinator leads; standing by"); logged = true }
            sleepInterruptibly(1)
        }
    }

    private func sleepInterruptibly(_ s: Double) {
        let end = Date().addingTimeInterval(s)
        while !isStopping && Date() < end { Thread.sleep(forTimeInterval: 0.05) }
    }

    private func lead(_ lockConn: PGConnection) throws {
        let db = PGConnection(url: settings.databaseURL)
        defer { db.close() }
        try db.connect()
        try Migrations.check(db)
        let store = JobStore(db: db)
        let redis = try RedisConnection(url: settings.redisURL)
        try redis.ensureGroup(stream: RedisKeys.results, group: RedisKeys.coordinatorGroup)
        // Results read but not acknowledged before a crash are applied again (guards make that harmless).
        try consumeResults(redis: redis, store: store, id: "0", block: nil)

        var lastSlow = Date.distantPast
        var lastNodesWrite = Date.distantPast
        var nodes: [Heartbeat] = []
        while !isStopping {
            let applied = try consumeResults(redis: redis, store: store, id: ">", block: settings.resultBlockMillis)
            let now = Date()
            nodes = try readHeartbeats(redis)
            if now.timeIntervalSince(lastNodesWrite) >= 1 {
                // Lock connection doubles as the leadership check: losing it means another may lead.
                _ = try lockConn.exec("SELECT 1")
                try writeNodes(store: store, nodes: nodes)
                lastNodesWrite = now
            }
            if now.timeIntervalSince(lastSlow) >= 0.5 || applied > 0 {
                try store.renewLeases(jobIDs: nodes.flatMap(\.running), leaseSeconds: settings.leaseSeconds)
            }
            if now.timeIntervalSince(lastSlow) >= 0.5 {
                let lost = try store.expireLeases(nodeTimeout: settings.nodeTimeoutSeconds)
                for t in lost { log.warning("job lost, requeued", [("job", t.jobID), ("node", t.node ?? "?"), ("to", t.to.rawValue)]) }
                try cleanStreams(redis: redis, lost)
                try store.releaseBackoffs()
                try store.settleDependencies()
                try sendCancellations(redis: redis, store: store)
                for (state, n) in try store.countByState() { metrics.registry.set("hydra_jobs", [state], Double(n)) }
                lastSlow = now
            }
            try placeAndDispatch(redis: redis, store: store, nodes: nodes.map(\.live))
        }
    }

    // MARK: results

    @discardableResult
    private func consumeResults(redis: RedisConnection, store: JobStore, id: String, block: Int?) throws -> Int {
        var total = 0
        while true {
            let entries = try redis.readGroup(stream: RedisKeys.results, group: RedisKeys.coordinatorGroup, consumer: "coordinator",
                                              id: id, count: 1000, blockMillis: block)
            if entries.isEmpty { return total }
            var results: [AttemptResult] = []
            for e in entries {
                guard let raw = e.fields?["result"], let r = try? JSONCoding.decode(AttemptResult.self, from: raw) else {
                    log.warning("unreadable result moved to the dead-letter stream", [("id", e.id)])
                    _ = try? redis.command(["XADD", RedisKeys.deadLetter, "*", "stream", RedisKeys.results, "id", e.id,
                                            "reason", "malformed_result", "raw", String((e.fields?["result"] ?? "").prefix(4096))])
                    continue
                }
                results.append(r)
            }
            let applied = try store.apply(results: results)
            for t in applied {
                if t.to == .running, let r = results.first(where: { $0.jobID == t.jobID }), let s = r.startedAt {
                    metrics.registry.observe("hydra_dispatch_latency_seconds", [], max(0, Date().timeIntervalSince1970 - s))
                }
                if t.to.isTerminal || t.to == .pending || t.to == .retryWait {
                    log.debug("job \(t.to.rawValue)", [("job", t.jobID), ("attempt", String(t.attempt)), ("node", t.node ?? "")])
                }
            }
            // Acknowledge only after the transitions are committed.
            try redis.run(["XACK", RedisKeys.results, RedisKeys.coordinatorGroup] + entries.map(\.id))
            total += entries.count
            if id == ">" && entries.count < 1000 { return total }
        }
    }

    // MARK: nodes

    struct Heartbeat {
        var live: LiveNode
        var running: [String]
        var sentAt: Double?
        var version: String?
    }

    private func readHeartbeats(_ redis: RedisConnection) throws -> [Heartbeat] {
        let names = (try redis.run(["SMEMBERS", RedisKeys.nodes]).array ?? []).compactMap(\.string).sorted()
        if names.isEmpty { return [] }
        let replies = try redis.pipeline(names.map { ["HGETALL", RedisKeys.heartbeat($0)] })
        var out: [Heartbeat] = []
        for (name, reply) in zip(names, replies) {
            guard let kv = reply.array, !kv.isEmpty else { continue }
            var f: [String: String] = [:]
            var i = 0
            while i + 1 < kv.count { f[kv[i].string ?? ""] = kv[i + 1].string ?? ""; i += 2 }
            let inv = f["inventory"].flatMap { try? JSONCoding.decode(Inventory.self, from: $0) } ?? Inventory()
            let running = f["running"].flatMap { try? JSONCoding.decode([String].self, from: $0) } ?? []
            let nodeConfig = settings.cluster?.node(named: name)
            let weights = inv.gpus.enumerated().map { i, g in
                nodeConfig?.gpus.first(where: { $0.model == g.name })?.weight ?? nodeConfig?.gpus[safe: i]?.weight ?? 1
            }
            out.append(Heartbeat(live: LiveNode(name: name, inventory: inv, draining: f["state"] == "stopping" || drained.withLock { $0.contains(name) },
                                                services: nodeConfig?.services ?? [], gpuWeights: weights),
                                 running: running, sentAt: f["sent_at"].flatMap(Double.init), version: f["version"]))
        }
        return out
    }

    private let drained = Mutex<Set<String>>([])

    private func writeNodes(store: JobStore, nodes: [Heartbeat]) throws {
        try store.upsertNodes(nodes.map {
            NodeRow(name: $0.live.name, lastSeen: $0.sentAt, up: true, draining: false, agentVersion: $0.version,
                    inventory: $0.live.inventory, running: $0.running)
        })
        try store.markNodesDown(except: nodes.map(\.live.name))
        let rows = try store.nodes()
        drained.withLock { $0 = Set(rows.filter(\.draining).map(\.name)) }
        metrics.registry.reset("hydra_node_up")
        for r in rows { metrics.registry.set("hydra_node_up", [r.name], r.up ? 1 : 0) }
    }

    // MARK: placement

    private func placeAndDispatch(redis: RedisConnection, store: JobStore, nodes: [LiveNode]) throws {
        let pending = try store.pendingJobs(limit: settings.placementBatch)
        if pending.isEmpty { return }
        let active = try store.activeJobs()
        let t0 = Date()
        let placer = FirstFitPlacer(headroom: settings.cluster?.headroom?.bytes ?? 0)
        let out = placer.place(pending: pending, nodes: nodes, active: active)
        metrics.registry.set("hydra_router_pass_duration_seconds", [], Date().timeIntervalSince(t0))
        try store.setPendingReasons(out.reasons)
        if out.assignments.isEmpty { return }
        let dispatched = try store.markDispatched(out.assignments, leaseSeconds: settings.leaseSeconds)
        metrics.registry.add("hydra_placements_total", [], Double(dispatched.count))
        let now = Date().timeIntervalSince1970
        var commands: [[String]] = []
        for d in dispatched {
            let env = Envelope(jobID: d.id, attempt: d.attempt, kind: d.kind, spec: d.spec, gpuUUIDs: d.gpuUUIDs,
                               vramBytes: d.vramBytes, deadline: d.deadlineSeconds.map { now + $0 }, issuedAt: now,
                               expiresAt: now + settings.envelopeTTLSeconds)
            commands.append(["XADD", RedisKeys.jobs(d.node), "MAXLEN", "~", "1000000", "*"] + (try NodeMessage.job(env).fields(keys: settings.keys)))
        }
        let replies = try redis.pipeline(commands)
        var ids: [(String, Int, String)] = []
        for (d, r) in zip(dispatched, replies) {
            if let sid = r.string, case .string = r { ids.append((d.id, d.attempt, sid)) }
            else { log.warning("XADD of an envelope failed; the lease will requeue it", [("job", d.id), ("reply", "\(r)")]) }
        }
        try store.setStreamIDs(ids.map { (jobID: $0.0, attempt: $0.1, streamID: $0.2) })
        var depth: [String: Int] = [:]
        for d in dispatched { depth[d.node, default: 0] += 1 }
        for (n, c) in depth { metrics.registry.set("hydra_queue_depth", [n], Double(c)) }
    }

    /// A requeued job's old envelope must not run later: acknowledge and delete it.
    private func cleanStreams(redis: RedisConnection, _ transitions: [AppliedTransition]) throws {
        var cmds: [[String]] = []
        for t in transitions {
            guard let node = t.node, let sid = t.streamID else { continue }
            cmds.append(["XACK", RedisKeys.jobs(node), RedisKeys.agentsGroup, sid])
            cmds.append(["XDEL", RedisKeys.jobs(node), sid])
        }
        _ = try redis.pipeline(cmds)
    }

    private func sendCancellations(redis: RedisConnection, store: JobStore) throws {
        let items = try store.cancellationsToSend()
        if items.isEmpty { return }
        var cmds: [[String]] = []
        for c in items {
            let msg = NodeMessage.cancel(jobID: c.jobID, attempt: c.attempt, issuedAt: Date().timeIntervalSince1970)
            cmds.append(["XADD", RedisKeys.jobs(c.node), "*"] + (try msg.fields(keys: settings.keys)))
            if let sid = c.streamID { cmds.append(["XDEL", RedisKeys.jobs(c.node), sid]) }
        }
        _ = try redis.pipeline(cmds)
        try store.markCancelSent(items.map(\.jobID))
    }
}

struct CoordinatorMetrics: Sendable {
    let registry = MetricsRegistry()
    init() {
        let r = registry
        r.register("hydra_coordinator_leader", .gauge, help: "1 while this coordinator leads.")
        r.register("hydra_jobs", .gauge, help: "Jobs by state.", labels: ["state"])
        r.register("hydra_placements_total", .counter, help: "Jobs placed and dispatched.")
        r.register("hydra_dispatch_latency_seconds", .histogram, help: "Time from dispatch to the job running on its GPU.",
                   buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
        r.register("hydra_router_pass_duration_seconds", .gauge, help: "Duration of the last placement pass.")
        r.register("hydra_queue_depth", .gauge, help: "Jobs dispatched to a node in the last pass.", labels: ["node"])
        r.register("hydra_node_up", .gauge, help: "1 when the node's heartbeat is live.", labels: ["node"])
        r.set("hydra_coordinator_leader", [], 0)
        r.add("hydra_placements_total", [], 0)
    }
}
