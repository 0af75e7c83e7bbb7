import Foundation
import Shared
import Synchronization

struct CoordinatorSettings: Sendable {
    var redis: RedisEndpoint
    var databaseURL: String
    var cluster: ClusterConfig?
    var leaseSeconds: Double = 10
    var resultBlockMillis: Int = 100
    var placementBatch: Int = 5000
    var envelopeTTLSeconds: Double = 900
    var keys: SigningKeys?
    /// A node silent this long is dead: its jobs are requeued.
    var nodeTimeoutSeconds: Double = 5
    var policy: RouterPolicy = .hydra
    /// After this long a started job's VRAM is taken to show in the live reading even if
    /// its process was not recognised in the compute-apps list.
    var settleSeconds: Double = 20
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
                SystemdNotify.status("leading")
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
            if !logged { log.info("another coordinator leads; standing by"); SystemdNotify.status("standing by"); logged = true }
            sleepInterruptibly(1)
        }
    }

    private func sleepInterruptibly(_ s: Double) {
        let end = Date().addingTimeInterval(s)
        while !isStopping && Date() < end { SystemdNotify.watchdog(); Thread.sleep(forTimeInterval: 0.05) }
    }

    private func lead(_ lockConn: PGConnection) throws {
        let state = LeaderState()
        // Three loops, each with its own PostgreSQL and Redis connection, so that applying results,
        // placing jobs and housekeeping overlap instead of queueing behind one another: a result
        // frees room and the next placement runs at once, not after a lease sweep.
        let helpers = DispatchGroup()
        for (name, body) in [("results", resultsLoop), ("housekeeping", housekeepingLoop)] as [(String, @Sendable (LeaderState) throws -> Void)] {
            helpers.enter()
            let t = Thread {
                do { try body(state) } catch { state.fail(error) }
                state.stop()
                helpers.leave()
            }
            t.name = name
            t.start()
        }
        do { try dispatchLoop(state, lockConn: lockConn) } catch { state.fail(error) }
        state.stop()
        helpers.wait()
        if let e = state.error { throw e }
    }

    private func dispatchLoop(_ state: LeaderState, lockConn: PGConnection) throws {
        let db = PGConnection(url: settings.databaseURL)
        db.sessionSettings = PGConnection.keyLookupSettings
        defer { db.close() }
        try db.connect()
        try Migrations.check(db)
        let store = JobStore(db: db)
        let redis = RedisConnection(endpoint: settings.redis)
        // `hydra submit` notifies here, so a new batch is placed at once rather than on the next tick.
        // In the session settings, so that a reconnect listens again.
        db.sessionSettings.append("LISTEN \(JobStore.submitChannel)")
        try db.exec("LISTEN \(JobStore.submitChannel)")
        var cache = PendingCache()
        var streamIDs = StreamIDAllocator()
        var nodes: [Heartbeat] = []
        var lastBeats = Date.distantPast
        var lastLockCheck = Date.distantPast
        var lastExplain = Date.distantPast
        var lastResync = Date.distantPast
        var placeNeeded = true
        while !isStopping && !state.stopped {
            if !placeNeeded {
                // Woken by applied results and by the housekeeping tick; the short timeout is for NOTIFYs.
                placeNeeded = state.waitForWork(timeout: 0.02)
            }
            if db.takeNotifications() > 0 { placeNeeded = true }
            let now = Date()
            if now.timeIntervalSince(lastLockCheck) >= 1 {
                // The lock connection doubles as the leadership check: losing it means another may lead.
                _ = try lockConn.exec("SELECT 1")
                lastLockCheck = now
            }
            if now.timeIntervalSince(lastResync) >= 2 {
                // The in-memory view of jobs on nodes is kept by this loop and the results loop; re-reading
                // it now and then also catches what others changed (an operator's cancel).
                state.resyncActive(try store.activeJobs())
                lastResync = now
            }
            if !placeNeeded { continue }
            placeNeeded = false
            if now.timeIntervalSince(lastBeats) >= 0.1 {
                nodes = try readHeartbeats(redis)
                lastBeats = now
            }
            let explain = now.timeIntervalSince(lastExplain) >= 1
            placeNeeded = try placeAndDispatch(redis: redis, store: store, cache: &cache, streamIDs: &streamIDs, nodes: nodes, state: state, explain: explain)
            if explain { lastExplain = now }
        }
    }

    /// Results in, state transitions out; wakes the dispatch loop when something was applied.
    private func resultsLoop(_ state: LeaderState) throws {
        let db = PGConnection(url: settings.databaseURL)
        db.sessionSettings = PGConnection.keyLookupSettings
        defer { db.close() }
        try db.connect()
        let store = JobStore(db: db)
        let redis = RedisConnection(endpoint: settings.redis)
        try redis.ensureGroup(stream: RedisKeys.results, group: RedisKeys.coordinatorGroup)
        var gaps = DispatchGapTracker()
        // Results read but not acknowledged before a crash are applied again (guards make that harmless).
        try consumeResults(redis: redis, store: store, id: "0", block: nil, gaps: &gaps, state: state)
        while !isStopping && !state.stopped {
            try consumeResults(redis: redis, store: store, id: ">", block: settings.resultBlockMillis, gaps: &gaps, state: state)
        }
    }

    /// Everything that is not on the path from a result to the next dispatch: node rows, leases,
    /// backoffs, dependencies, cancellations, gauges, learned runtimes.
    private func housekeepingLoop(_ state: LeaderState) throws {
        let db = PGConnection(url: settings.databaseURL)
        defer { db.close() }
        try db.connect()
        let store = JobStore(db: db)
        let redis = RedisConnection(endpoint: settings.redis)
        var lastNodesWrite = Date.distantPast
        var lastCounts = Date.distantPast
        var lastStats = Date.distantPast
        while !isStopping && !state.stopped {
            let now = Date()
            let nodes = try readHeartbeats(redis)
            if now.timeIntervalSince(lastNodesWrite) >= 1 {
                try writeNodes(store: store, nodes: nodes, active: state.activeJobs())
                lastNodesWrite = now
            }
            // Leases are several seconds long: renewing twice a second is plenty.
            try store.renewLeases(jobIDs: nodes.flatMap(\.running), leaseSeconds: settings.leaseSeconds)
            let lost = try store.expireLeases(nodeTimeout: settings.nodeTimeoutSeconds)
            for t in lost { log.warning("job lost, requeued", [("job", t.jobID), ("node", t.node ?? "?"), ("to", t.to.rawValue)]) }
            metrics.lost(lost)
            state.ended(lost)
            try cleanStreams(redis: redis, lost)
            try store.releaseBackoffs()
            try store.settleDependencies()
            try sendCancellations(redis: redis, store: store)
            if now.timeIntervalSince(lastCounts) >= 2 {
                // A GROUP BY over every job ever run: not on each tick.
                for (s, n) in try store.countByState() { metrics.registry.set("hydra_jobs", [s], Double(n)) }
                lastCounts = now
            }
            if now.timeIntervalSince(lastStats) >= 10 {
                state.setStats(RuntimeStats(rows: try store.runtimeStats()))
                lastStats = now
            }
            // The tick is the fallback for every change that sends no signal (heartbeats, retries, drains).
            state.wake()
            SystemdNotify.watchdog()
            let next = now.addingTimeInterval(0.5)
            while !isStopping && !state.stopped && Date() < next { Thread.sleep(forTimeInterval: 0.05) }
        }
    }

    // MARK: results

    private func consumeResults(redis: RedisConnection, store: JobStore, id: String, block: Int?, gaps: inout DispatchGapTracker,
                                state: LeaderState) throws {
        while true {
            let entries = try redis.readGroup(stream: RedisKeys.results, group: RedisKeys.coordinatorGroup, consumer: "coordinator",
                                              id: id, count: 1000, blockMillis: block)
            if entries.isEmpty { return }
            var results: [AttemptResult] = []
            for e in entries {
                guard let raw = e.fields?["result"], let r = try? AttemptResult.parse(raw) else {
                    log.warning("unreadable result moved to the dead-letter stream", [("id", e.id)])
                    _ = try? redis.command(["XADD", RedisKeys.deadLetter, "*", "stream", RedisKeys.results, "id", e.id,
                                            "reason", "malformed_result", "raw", String((e.fields?["result"] ?? "").prefix(4096))])
                    continue
                }
                results.append(r)
            }
            let applied = try store.apply(results: results)
            // Acknowledge only after the transitions are committed.
            try redis.run(["XACK", RedisKeys.results, RedisKeys.coordinatorGroup] + entries.map(\.id))
            metrics.applied(applied, results: results, dispatchedAt: state.dispatchedAt(applied.map(\.jobID)))
            state.applied(applied)
            for t in applied {
                // The first sign that the job runs: `started`, or its final result when the agent folded the two.
                if t.from == .dispatched, let s = t.startedAt {
                    for g in gaps.started(gpus: t.gpuUUIDs, at: s, submittedAt: t.submittedAt) {
                        metrics.registry.observe("hydra_dispatch_gap_seconds", [], g)
                    }
                }
                if t.to != .running, let e = t.endedAt, !t.gpuUUIDs.isEmpty {
                    gaps.ended(gpus: t.gpuUUIDs, at: e)
                }
                if t.to.isTerminal || t.to == .pending || t.to == .retryWait {
                    log.debug("job \(t.to.rawValue)", [("job", t.jobID), ("attempt", String(t.attempt)), ("node", t.node ?? "")])
                }
            }
            if id == ">" && entries.count < 1000 { return }
        }
    }

    // MARK: nodes

    struct Heartbeat {
        var name: String
        var inventory: Inventory
        var draining: Bool
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
            out.append(Heartbeat(name: name, inventory: inv, draining: f["state"] == "stopping" || drained.withLock { $0.contains(name) },
                                 running: running, sentAt: f["sent_at"].flatMap(Double.init), version: f["version"]))
        }
        return out
    }

    private let drained = Mutex<Set<String>>([])

    private func writeNodes(store: JobStore, nodes: [Heartbeat], active: [JobRow]) throws {
        try store.upsertNodes(nodes.map {
            NodeRow(name: $0.name, lastSeen: $0.sentAt, up: true, draining: false, agentVersion: $0.version,
                    inventory: $0.inventory, running: $0.running)
        })
        try store.markNodesDown(except: nodes.map(\.name))
        let rows = try store.nodes()
        drained.withLock { $0 = Set(rows.filter(\.draining).map(\.name)) }
        metrics.nodes(rows, active: active)
    }

    // MARK: placement

    /// The cluster as the router sees it: config nodes plus any node that heartbeats without being configured.
    func snapshot(nodes: [Heartbeat], active: [JobRow], now: Date) -> ClusterSnapshot {
        var config = settings.cluster ?? ClusterConfig(nodes: [])
        for h in nodes where config.node(named: h.name) == nil {
            config.nodes.append(NodeConfig(name: h.name, gpus: h.inventory.gpus.map {
                GPUConfig(model: $0.name ?? "GPU", memory: ByteCount($0.memoryTotalBytes ?? 0))
            }))
        }
        var live: [String: ClusterSnapshot.NodeLive] = [:]
        var processes: [String: Set<String>] = [:]
        let activeIDs = Set(active.map(\.id))
        for h in nodes {
            live[h.name] = .init(up: true, draining: h.draining, inventory: h.inventory.withoutEndedJobs(active: activeIDs))
            processes[h.name] = Set(h.inventory.processes.compactMap(\.processName))
        }
        let running = active.compactMap { j -> RouterRunningJob? in
            guard let node = j.node else { return nil }
            let started = j.startedAt.map { Date(timeIntervalSince1970: $0) }
            let visible = processes[node]?.contains("hydra-job-\(j.id)") == true
                || (started.map { now.timeIntervalSince($0) > settings.settleSeconds } ?? false)
            return RouterRunningJob(id: j.id, batchID: j.batchID, kind: j.kind, spec: j.spec, node: node, gpuUUIDs: j.gpuUUIDs,
                                    reservedBytesPerGPU: j.reservedBytes ?? j.vramBytes,
                                    placedAt: Date(timeIntervalSince1970: j.dispatchedAt ?? j.submittedAt), startedAt: started,
                                    visible: visible)
        }
        return ClusterSnapshot.build(config: config, live: live, running: running)
    }

    /// One placement pass. Returns whether another pass should follow at once: it placed jobs
    /// and read a full batch, so more may be waiting behind it.
    private func placeAndDispatch(redis: RedisConnection, store: JobStore, cache: inout PendingCache,
                                  streamIDs: inout StreamIDAllocator, nodes: [Heartbeat],
                                  state: LeaderState, explain: Bool) throws -> Bool {
        // PostgreSQL says which jobs are pending and in which order; rows already read and decoded
        // in an earlier pass come from the cache (a pending job's row does not change until it is placed).
        let ids = try store.pendingIDs(limit: settings.placementBatch)
        if ids.isEmpty { cache.removeAll(); metrics.pendingClasses([]); return false }
        let missing = ids.filter { cache.rows[$0] == nil }
        if !missing.isEmpty { cache.add(try store.pendingRows(ids: missing)) }
        cache.keep(only: ids)
        let pending = ids.compactMap { cache.jobs[$0] }
        if pending.isEmpty { return false }
        let active = state.activeJobs()
        let t0 = Date()
        let snap = snapshot(nodes: nodes, active: active, now: t0)
        // Reason texts are for people: written about once a second, not on every pass a result triggers.
        let result = Router.place(pending: pending, snapshot: snap, stats: state.stats, now: t0, policy: settings.policy,
                                  explain: explain)
        metrics.routerPass(seconds: Date().timeIntervalSince(t0), pending: result.pending)
        if Log.level <= .debug {
            for a in result.assignments {
                log.debug("placed", [("job", a.jobID), ("node", a.node), ("gpus", a.gpuIndices.map(String.init).joined(separator: ",")),
                                     ("reserved", ByteSize.format(a.reservedBytesPerGPU)), ("expected_finish_s", String(format: "%.1f", a.expectedFinish.timeIntervalSince(t0))),
                                     ("running", String(snap.running.count)),
                                     ("used", snap.nodes.flatMap { $0.gpus.map { ByteSize.format($0.usedBytes ?? 0) } }.joined(separator: "/"))])
            }
        }
        if explain {
            // Each reason written is a row version; a batch of 20,000 short jobs would rewrite every row once
            // just to say "all CPU slots busy" for a fraction of a second. Reasons are for jobs that wait: those
            // pending at least a second, and the first 1,000 of them in queue order.
            let submitted = Dictionary(pending.map { ($0.id, $0.submittedAt) }, uniquingKeysWith: { a, _ in a })
            var reasons: [String: String] = [:]
            for r in result.pending where reasons.count < 1000 {
                if let s = submitted[r.jobID], t0.timeIntervalSince(s) < 1 { continue }
                reasons[r.jobID] = r.message
            }
            try store.setPendingReasons(reasons)
        }
        if result.assignments.isEmpty { return false }
        var models: [String: String] = [:]
        for n in snap.nodes { for g in n.gpus { models[g.uuid] = g.model } }
        // Streams not written to since this coordinator took over: learn their last id first.
        let unknown = Array(Set(result.assignments.map { RedisKeys.jobs($0.node) }).filter { !streamIDs.knows(stream: $0) })
        if !unknown.isEmpty {
            for (stream, r) in zip(unknown, try redis.pipeline(unknown.map { ["XINFO", "STREAM", $0] })) {
                streamIDs.learned(stream: stream, xinfo: r)
            }
        }
        let nowMillis = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        let placements = result.assignments.map {
            JobStore.Placement(jobID: $0.jobID, node: $0.node, gpuUUIDs: $0.gpuUUIDs,
                               reservedBytes: $0.gpuUUIDs.isEmpty ? 0 : $0.reservedBytesPerGPU,
                               gpuModel: $0.gpuUUIDs.first.flatMap { models[$0] }, spec: cache.rows[$0.jobID]?.spec,
                               streamID: streamIDs.next(stream: RedisKeys.jobs($0.node), nowMillis: nowMillis))
        }
        var chosen: [String: String] = [:]
        for p in placements { if let sid = p.streamID { chosen[p.jobID] = sid } }
        let dispatched = try store.markDispatched(placements, leaseSeconds: settings.leaseSeconds)
        // Before the envelopes exist: a result can then never arrive for a job the view does not hold yet.
        state.dispatched(dispatched.compactMap { d in
            guard var row = cache.rows[d.id] else { return nil }
            row.state = .dispatched; row.attempt = d.attempt; row.node = d.node; row.gpuUUIDs = d.gpuUUIDs
            row.dispatchedAt = t0.timeIntervalSince1970; row.startedAt = nil; row.reservedBytes = d.vramBytes
            row.streamID = chosen[d.id]
            return row
        })
        // Placed or not (a job cancelled meanwhile is not), these rows are no longer pending as read.
        cache.remove(placements.map(\.jobID))
        metrics.registry.add("hydra_placements_total", [], Double(dispatched.count))
        let now = Date().timeIntervalSince1970
        var commands: [[String]] = []
        commands.reserveCapacity(dispatched.count)
        for d in dispatched {
            let env = Envelope(jobID: d.id, attempt: d.attempt, kind: d.kind, spec: d.spec, gpuUUIDs: d.gpuUUIDs,
                               vramBytes: d.vramBytes, deadline: d.deadlineSeconds.map { now + $0 }, issuedAt: now,
                               expiresAt: now + settings.envelopeTTLSeconds)
            commands.append(["XADD", RedisKeys.jobs(d.node), "MAXLEN", "~", "1000000", chosen[d.id] ?? "*"]
                            + (try NodeMessage.job(env).fields(keys: settings.keys)))
        }
        let replies: [RedisReply]
        do { replies = try redis.pipeline(commands) } catch {
            // Which entries landed is unknown: forget the chosen ids, so that a clean-up never deletes an
            // entry that is not ours; the lease requeues these jobs if their envelopes are missing.
            try? store.setStreamIDs(dispatched.map { (jobID: $0.id, attempt: $0.attempt, streamID: nil) })
            for d in dispatched { streamIDs.forget(stream: RedisKeys.jobs(d.node)) }
            throw error
        }
        // Written with `*` (a stream not seen yet, or an id Redis refused): their ids go to PostgreSQL now.
        var late: [(jobID: String, attempt: Int, streamID: String?)] = []
        var retry: [(DispatchedJob, [String])] = []
        for ((d, r), cmd) in zip(zip(dispatched, replies), commands) {
            let stream = RedisKeys.jobs(d.node)
            if case .string(let sid) = r {
                streamIDs.learned(stream: stream, id: sid)
                if chosen[d.id] == nil { late.append((d.id, d.attempt, sid)) }
            } else if chosen[d.id] != nil {
                streamIDs.forget(stream: stream)
                var c = cmd
                c[5] = "*"
                retry.append((d, c))
            } else {
                log.warning("XADD of an envelope failed; the lease will requeue it", [("job", d.id), ("reply", "\(r)")])
                late.append((d.id, d.attempt, nil))
            }
        }
        if !retry.isEmpty {
            for (d, r) in zip(retry.map(\.0), try redis.pipeline(retry.map(\.1))) {
                if case .string(let sid) = r {
                    streamIDs.learned(stream: RedisKeys.jobs(d.node), id: sid)
                    late.append((d.id, d.attempt, sid))
                } else {
                    log.warning("XADD of an envelope failed; the lease will requeue it", [("job", d.id), ("reply", "\(r)")])
                    late.append((d.id, d.attempt, nil))
                }
            }
        }
        try store.setStreamIDs(late)
        return ids.count >= settings.placementBatch
    }

    /// A requeued job's old envelope must not run later: acknowledge and delete it.
    private func cleanStreams(redis: RedisConnection, _ transitions: [AppliedTransition]) throws {
        let items = transitions.compactMap { t -> (stream: String, id: String, jobID: String)? in
            guard let node = t.node, let sid = t.streamID else { return nil }
            return (RedisKeys.jobs(node), sid, t.jobID)
        }
        var cmds: [[String]] = []
        for (item, ours) in zip(items, try redis.entriesBelongToJobs(items)) where ours {
            cmds.append(["XACK", item.stream, RedisKeys.agentsGroup, item.id])
            cmds.append(["XDEL", item.stream, item.id])
        }
        _ = try redis.pipeline(cmds)
    }

    private func sendCancellations(redis: RedisConnection, store: JobStore) throws {
        let items = try store.cancellationsToSend()
        if items.isEmpty { return }
        let recorded = items.compactMap { c in c.streamID.map { (stream: RedisKeys.jobs(c.node), id: $0, jobID: c.jobID) } }
        var envelopeThere: [String: Bool] = [:]
        for (item, ours) in zip(recorded, try redis.entriesBelongToJobs(recorded)) { envelopeThere[item.jobID] = ours }
        var cmds: [[String]] = []
        for c in items {
            let msg = NodeMessage.cancel(jobID: c.jobID, attempt: c.attempt, issuedAt: Date().timeIntervalSince1970)
            cmds.append(["XADD", RedisKeys.jobs(c.node), "*"] + (try msg.fields(keys: settings.keys)))
            if let sid = c.streamID, envelopeThere[c.jobID] == true { cmds.append(["XDEL", RedisKeys.jobs(c.node), sid]) }
        }
        _ = try redis.pipeline(cmds)
        try store.markCancelSent(items.map(\.jobID))
    }
}
