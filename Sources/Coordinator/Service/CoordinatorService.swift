import Foundation
import Synchronization
import HydraCore
import HydraWire
import HydraIO
import HydraStore

public struct CoordinatorSettings: Sendable {
    public var redis: RedisEndpoint
    public var databaseURL: String
    public var cluster: ClusterConfig?
    public var leaseSeconds: Double = 10
    public var resultBlockMillis: Int = 100
    public var placementBatch: Int = 5000
    public var envelopeTTLSeconds: Double = 900
    public var keys: SigningKeys?
    /// A node silent this long is dead: its jobs are requeued.
    public var nodeTimeoutSeconds: Double = 5
    /// A node's GPU reading older than this (its heartbeat's `sample_age_s`) places no GPU job there.
    public var staleGPUReadingSeconds: Double = HeartbeatMessage.staleSampleSeconds
    public var policy: RouterPolicy = .hydra
    /// A leader that has not renewed its lease for this long is replaced (`Leadership`); it stops by itself too.
    public var leaderTTLSeconds: Double = 5
    /// Names this coordinator in the leadership row (host and pid).
    public var holder: String = "\(ProcessInfo.processInfo.hostName)/\(getpid())"
    public init(redis: RedisEndpoint, databaseURL: String, cluster: ClusterConfig? = nil, leaseSeconds: Double = 10,
                keys: SigningKeys? = nil, nodeTimeoutSeconds: Double = 5, policy: RouterPolicy = .hydra) {
        self.redis = redis; self.databaseURL = databaseURL; self.cluster = cluster; self.leaseSeconds = leaseSeconds
        self.keys = keys; self.nodeTimeoutSeconds = nodeTimeoutSeconds; self.policy = policy
    }
}

/// The coordinator loop: heartbeats in, results in, placements out. It keeps no
/// authoritative state in memory: every decision is re-derived from PostgreSQL
/// and the live heartbeats, so a restart (or a standby taking over) loses nothing.
/// A `BlockingService`: `hydra coordinator` runs it in a `ServiceGroup` and stops it through that.
public final class CoordinatorService: BlockingService {
    public let name = "coordinator"
    let settings: CoordinatorSettings
    public let metrics = CoordinatorMetrics()
    let log = Log(component: "coordinator")
    /// Every node's keys, derived from the cluster key: results and heartbeats are checked with the key
    /// of the node whose stream or hash they came from, envelopes signed with the key of the node they go to.
    let keyring: NodeKeyring?

    public init(settings: CoordinatorSettings) {
        self.settings = settings
        keyring = settings.keys.map(NodeKeyring.init)
    }

    /// The keys for messages to and from `node` (nil: signing is off).
    func keys(_ node: String) -> SigningKeys? { keyring?.keys(for: node) }

    /// Runs until `ctx` stops; reconnects to PostgreSQL and Redis with backoff. Never throws: every
    /// failure is retried, so the group around it ends only when asked to.
    public func run(_ ctx: ServiceContext) {
        var backoff = 0.2
        while !ctx.isStopping {
            let lockConn = PGConnection(url: settings.databaseURL)
            // A takeover waits for the old leader's fenced transactions; never for long.
            lockConn.sessionSettings = Leadership.sessionSettings + ["SET lock_timeout = '2s'"]
            do {
                guard let epoch = try waitForLeadership(lockConn, ctx) else { break }
                metrics.registry.set("hydra_coordinator_leader", [], 1)
                log.info("leading", [("epoch", String(epoch))])
                SystemdNotify.status("leading")
                try lead(lockConn, epoch: epoch, ctx)
                backoff = 0.2
            } catch {
                metrics.registry.set("hydra_coordinator_leader", [], 0)
                log.warning("coordinator loop failed, retrying in \(String(format: "%.1f", backoff)) s: \(error)")
                sleepInterruptibly(backoff, ctx)
                backoff = min(backoff * 2, 5)
            }
            lockConn.close()
        }
        metrics.registry.set("hydra_coordinator_leader", [], 0)
    }

    /// One coordinator leads; others wait here until the leader's lease lapses or its session ends
    /// (`Leadership.tryAcquire`). Returns the epoch this coordinator leads with, or nil when stopping.
    private func waitForLeadership(_ conn: PGConnection, _ ctx: ServiceContext) throws -> Int64? {
        var logged = false
        while !ctx.isStopping {
            do {
                if let e = try Leadership.tryAcquire(conn, holder: settings.holder, ttl: settings.leaderTTLSeconds) { return e }
            } catch let e as PGError where e.sqlState == "55P03" {
                // lock_timeout: the old leader is still finishing a fenced transaction; look again.
            }
            if !logged { log.info("another coordinator leads; standing by"); SystemdNotify.status("standing by"); logged = true }
            sleepInterruptibly(0.25, ctx)
        }
        return nil
    }

    /// Sleeps `s` seconds or until `ctx` stops. While standing by or backing off this is the only loop that
    /// turns, so it keeps systemd's watchdog fed: at least once a second (`watchdog()` rate-limits itself).
    private func sleepInterruptibly(_ s: Double, _ ctx: ServiceContext) {
        let end = Date().addingTimeInterval(s)
        repeat { SystemdNotify.watchdog() } while ctx.sleep(until: min(end, Date().addingTimeInterval(1))) && Date() < end
    }

    private func lead(_ lockConn: PGConnection, epoch: Int64, _ ctx: ServiceContext) throws {
        // Backpressure window: half a lease, so that a job queued behind a node's others is read in time.
        let state = LeaderState(epoch: epoch, ttl: settings.leaderTTLSeconds, drainWindow: settings.leaseSeconds / 2)
        // The lease is renewed from a thread of its own: a stuck statement elsewhere must not let it lapse
        // unnoticed, and a renewal stuck on a dead connection is noticed by the loops (`state.checkLease`).
        // The group joins this thread before `lead` touches the connection again.
        let owned = HandedOver(conn: lockConn)
        let renewer = ServiceLoop("lease") { [self] ctx in
            let lockConn = owned.conn
            while !ctx.isStopping {
                if try Leadership.renew(lockConn, epoch: epoch) { state.renewed(at: Date()) } else { throw Leadership.Lost() }
                ctx.sleep(max(0.1, settings.leaderTTLSeconds / 5))
            }
        }
        state.register(lockConn)
        // Steps down on this coordinator's own clock: a leader cut off from PostgreSQL may be blocked in a
        // call that no TCP timeout ends soon; once its lease has lapsed, a standby may lead, so every
        // connection is cut and the loops end (their writes would be fenced off by the epoch anyway).
        let watchdog = ServiceLoop("lease-watchdog") { [self] ctx in
            while !ctx.isStopping {
                do { try state.checkLease(now: Date()) } catch {
                    log.error("\(error); stepping down")
                    throw error
                }
                ctx.sleep(0.1)
            }
        }
        // Three loops, each with its own PostgreSQL and Redis connection, so that applying results,
        // placing jobs and housekeeping overlap instead of queueing behind one another: a result
        // frees room and the next placement runs at once, not after a lease sweep.
        let loops = [("dispatch", dispatchLoop), ("results", resultsLoop), ("housekeeping", housekeepingLoop)]
            as [(String, @Sendable (LeaderState, ServiceContext) throws -> Void)]
        let group = ServiceGroup(services: [renewer, watchdog] + loops.map { name, body in ServiceLoop(name) { try body(state, $0) } },
                                 parent: ctx) { error in
            state.stop()
            // Whichever loop failed first (a lapsed lease, a failed statement), the others may be blocked
            // on a silent server: cut them loose, so the leader stops now rather than after TCP gives up.
            if error != nil { state.interruptAll() }
        }
        try group.run()
        if ctx.isStopping {
            // A clean stop: a standby leads at once instead of after the lease.
            try? Leadership.release(lockConn, epoch: epoch)
        }
    }

    /// A connection for one of the leader's loops: fenced by the epoch, with the session settings that let
    /// the server notice a vanished coordinator.
    private func leaderConnection(_ state: LeaderState, keyLookups: Bool) -> (PGConnection, JobStore) {
        let db = PGConnection(url: settings.databaseURL)
        db.sessionSettings = Leadership.sessionSettings + (keyLookups ? PGConnection.keyLookupSettings : [])
        let store = JobStore(db: db)
        store.leaderEpoch = state.epoch
        state.register(db)
        return (db, store)
    }

    /// The seven periodic chores of the leader's loops (`Ticker`), each with its interval at its loop.
    enum Chore: Hashable, Sendable { case resync, heartbeats, explain, streams, nodes, counts, stats, waits }

    private func dispatchLoop(_ state: LeaderState, _ ctx: ServiceContext) throws {
        let (db, store) = leaderConnection(state, keyLookups: true)
        defer { db.close() }
        try db.connect()
        try Migrations.check(db)
        let redis = RedisConnection(endpoint: settings.redis)
        // `hydra submit` notifies here, so a new batch is placed at once rather than on the next tick.
        // In the session settings, so that a reconnect listens again.
        db.sessionSettings.append("LISTEN \(JobStore.submitChannel)")
        try db.exec("LISTEN \(JobStore.submitChannel)")
        var cache = PendingCache()
        var streamIDs = StreamIDAllocator()
        var blocked = BlockedNodes()
        var nodes: [NodeBeat] = []
        var ticker = Ticker<Chore>([.resync: 2, .heartbeats: 0.1, .explain: 1])
        var placeNeeded = true
        while !ctx.isStopping {
            if !placeNeeded {
                // Woken by applied results and by the housekeeping tick; the short timeout is for NOTIFYs.
                placeNeeded = state.waitForWork(timeout: 0.02)
            }
            if db.takeNotifications() > 0 { placeNeeded = true }
            let now = Date()
            try state.checkLease(now: now)
            if ticker.take(.resync, at: now) {
                // The in-memory view of jobs on nodes is kept by this loop and the results loop; re-reading
                // it now and then also catches what others changed (an operator's cancel).
                state.resyncActive(try store.activeJobs())
            }
            if !placeNeeded { continue }
            placeNeeded = false
            if ticker.take(.heartbeats, at: now) {
                nodes = try readHeartbeats(redis)
            }
            // Marked before the pass: a pass that throws ends the loop anyway.
            let explain = ticker.take(.explain, at: now)
            placeNeeded = try placeAndDispatch(redis: redis, store: store, cache: &cache, streamIDs: &streamIDs, blocked: &blocked,
                                               nodes: nodes, state: state, explain: explain)
        }
    }

    /// Results in, state transitions out; wakes the dispatch loop when something was applied.
    private func resultsLoop(_ state: LeaderState, _ ctx: ServiceContext) throws {
        let (db, store) = leaderConnection(state, keyLookups: true)
        defer { db.close() }
        try db.connect()
        // What agents wrote, read in bounded bites (`MessageLimits`): see `consumeResults`.
        let redis = RedisConnection(endpoint: settings.redis, maxReplyBytes: MessageLimits.resultReadBytes)
        var gaps = DispatchGapTracker()
        var streams: [String] = []
        var faults = StreamFaults()
        var ticker = Ticker<Chore>([.streams: 2])
        var first = true
        while !ctx.isStopping {
            try state.checkLease(now: Date())
            if ticker.isDue(.streams, at: Date()) {
                // Nodes come from the cluster file (or, without one, from what heartbeats): their result streams.
                let t = Date().timeIntervalSince1970
                var now: [String] = []
                for s in try nodeNames(redis).map(RedisKeys.results) where !faults.skips(s, now: t) {
                    if !streams.contains(s) {
                        do { try redis.ensureGroup(stream: s, group: RedisKeys.coordinatorGroup) } catch let e as RedisError where e.code == .server {
                            streamFault(s, e.message, &faults, now: t)
                            continue
                        }
                        faults.cleared(s)
                    }
                    now.append(s)
                }
                if now != streams { first = true }
                streams = now
                ticker.ran(.streams, at: Date())
            }
            if streams.isEmpty { ctx.sleep(0.1); continue }
            do {
                if first {
                    // Results read but not acknowledged before a crash are applied again (guards make that harmless).
                    try consumeResults(redis: redis, store: store, streams: streams, id: "0", block: nil, gaps: &gaps, state: state)
                    first = false
                }
                try consumeResults(redis: redis, store: store, streams: streams, id: ">", block: settings.resultBlockMillis, gaps: &gaps, state: state)
            } catch let e as RedisError where e.code == .server {
                // One node's key (an agent may DEL or retype its own results stream) fails the whole XREADGROUP:
                // find which, leave it out for a while, and go on reading every other node's results.
                let t = Date().timeIntervalSince1970
                let bad = try faultyResultStreams(redis, streams)
                for (s, why) in bad { streamFault(s, why, &faults, now: t) }
                if bad.isEmpty {
                    if faults.fault("*", reason: StreamFaults.reason(e.message), now: t) { log.warning("reading results failed; retrying", [("error", e.message)]) }
                    ctx.sleep(0.1)
                }
                let left = Set(bad.map(\.stream))
                streams.removeAll(where: left.contains)
            }
        }
    }

    /// Leaves a node's results stream out of the reads for a while; logged once per stream and reason (then once a minute).
    private func streamFault(_ stream: String, _ message: String, _ faults: inout StreamFaults, now: Double) {
        let reason = StreamFaults.reason(message)
        let node = RedisKeys.node(ofResults: stream) ?? stream
        metrics.registry.add("hydra_result_stream_faults_total", [node, reason])
        if faults.fault(stream, reason: reason, now: now) {
            log.warning("results stream unreadable; the node's results wait until it is a stream again, every other node's are read",
                        [("node", node), ("reason", reason), ("error", StoredText.clean(message, maxBytes: 512)),
                         ("retry_s", String(Int(faults.retryAfter)))])
        }
    }

    /// The streams among `streams` that one XREADGROUP cannot read now (not a stream, gone, or without the
    /// coordinator's group), with why. Every stream is checked in one pipeline, only after a read failed.
    private func faultyResultStreams(_ redis: RedisConnection, _ streams: [String]) throws -> [(stream: String, why: String)] {
        var out: [(stream: String, why: String)] = []
        for (s, r) in zip(streams, try redis.pipeline(streams.map { ["XINFO", "GROUPS", $0] })) {
            switch r {
            case .error(let e):
                out.append((s, e))
            case .array(let groups):
                let named = groups.contains { g in
                    guard let kv = g.array else { return false }
                    return stride(from: 0, to: kv.count - 1, by: 2).contains { kv[$0].string == "name" && kv[$0 + 1].string == RedisKeys.coordinatorGroup }
                }
                if !named { out.append((s, "NOGROUP the stream has no group \(RedisKeys.coordinatorGroup)")) }
            default:
                out.append((s, "no such key"))
            }
        }
        return out
    }

    /// Everything that is not on the path from a result to the next dispatch: node rows, leases,
    /// backoffs, dependencies, cancellations, gauges, learned runtimes.
    private func housekeepingLoop(_ state: LeaderState, _ ctx: ServiceContext) throws {
        let (db, store) = leaderConnection(state, keyLookups: false)
        defer { db.close() }
        try db.connect()
        let redis = RedisConnection(endpoint: settings.redis)
        var ticker = Ticker<Chore>([.nodes: 1, .counts: 2, .stats: 10, .waits: 5])
        var liveness = NodeLiveness(timeout: settings.nodeTimeoutSeconds)
        while !ctx.isStopping {
            let now = Date()
            try state.checkLease(now: now)
            // Marked at the top of the turn: a turn that throws ends the loop anyway.
            let due = ticker.due(now)
            let nodes = try readHeartbeats(redis)
            let t = now.timeIntervalSince1970
            liveness.tick(now: t)
            for n in nodes { liveness.observe(node: n.name, instance: n.beat.instance, seq: n.beat.seq, now: t) }
            let live = nodes.filter { liveness.isLive($0.name, now: t) }
            let active = state.activeJobs()
            if due.contains(.nodes) {
                try writeNodes(store: store, nodes: live, liveness: liveness, now: t, active: active)
            }
            // Leases are several seconds long: renewing twice a second is plenty. Only for the attempts each
            // node holds, as its own (signed) heartbeat says.
            try store.renewLeases(held: live.flatMap { n in n.beat.held.map { (node: n.name, job: $0) } }, leaseSeconds: settings.leaseSeconds)
            try renewQueuedLeases(redis: redis, store: store, live: live)
            // Dead: nodes holding jobs that this coordinator has not heard from lately, on its own clock.
            let liveNames = Set(live.map(\.name))
            let dead = liveness.settled(now: t)
                ? Set(active.compactMap(\.node)).subtracting(liveNames).sorted() : []
            let lost = try store.expireLeases(deadNodes: dead)
            for t in lost { log.warning("job lost, requeued", [("job", t.jobID), ("node", t.node ?? "?"), ("to", t.to.rawValue)]) }
            metrics.lost(lost)
            state.ended(lost)
            try cleanStreams(redis: redis, lost)
            try store.releaseBackoffs()
            // Cancelling behind a failed dependency cannot wait; rewriting every waiting job's "waits for n of m"
            // can (10 000 jobs behind a running entry: 0.2 s of row writes per sweep, most of a tick).
            try store.settleDependencies(explainWaits: due.contains(.waits))
            try sendCancellations(redis: redis, store: store)
            if due.contains(.counts) {
                // A GROUP BY over every job ever run: not on each tick.
                for (s, n) in try store.countByState() { metrics.registry.set("hydra_jobs", [s], Double(n)) }
            }
            if due.contains(.stats) {
                state.setStats(RuntimeStats(rows: try store.runtimeStats()))
            }
            // The tick is the fallback for every change that sends no signal (heartbeats, retries, drains).
            state.wake()
            SystemdNotify.watchdog()
            ctx.sleep(until: now.addingTimeInterval(0.5))
        }
    }

    // MARK: results

    private func consumeResults(redis: RedisConnection, store: JobStore, streams: [String], id: String, block: Int?,
                                gaps: inout DispatchGapTracker, state: LeaderState) throws {
        while true {
            var entries: [(stream: String, entry: StreamEntry)]
            var unread: [(stream: String, id: String)] = []
            do {
                entries = try redis.readGroup(streams: streams, group: RedisKeys.coordinatorGroup, consumer: "coordinator",
                                              id: id, count: 1000, blockMillis: block)
            } catch let e as RedisError where e.code == .tooLarge {
                // The read went past `resultReadBytes` (the connection is dropped; Redis did deliver the
                // entries): take what it delivered one entry at a time instead.
                if refusalLog.admit("results read over its limit", now: Date().timeIntervalSince1970) != nil {
                    log.warning("a read of results went past its limit; taking its entries one at a time", [("limit_bytes", String(MessageLimits.resultReadBytes))])
                }
                (entries, unread) = try siftPending(redis, streams)
            }
            if entries.isEmpty && unread.isEmpty { return }
            var results: [AttemptResult] = []
            var rejected = unread.map { Self.oversize($0.stream, $0.id, bytes: nil) }
            for (stream, e) in entries {
                guard let node = RedisKeys.node(ofResults: stream) else { continue }
                // However it was read (alone, its read was under `resultReadBytes`), an entry over the
                // entry limit is refused unparsed: the limit means the same on every path.
                if let n = e.fields?.reduce(0, { $0 + $1.key.utf8.count + $1.value.utf8.count }), n > MessageLimits.resultEntryBytes {
                    rejected.append(Self.oversize(stream, e.id, bytes: n))
                    continue
                }
                do {
                    results.append(try ResultMessage.decode(e.fields, node: node, keys: keys(node)))
                } catch {
                    // Unsigned, forged, for another node, unreadable: it changes nothing, and says why on the dead-letter stream.
                    rejected.append((stream, e, ((error as? MessageRejection) ?? .malformed).rawValue))
                }
            }
            if !rejected.isEmpty { deadLetterResults(redis, rejected) }
            let applied = try applyIsolating(store: store, redis: redis, results)
            // Acknowledge only after the transitions are committed, and delete: nothing else trims the streams.
            var byStream: [String: [String]] = [:]
            for (stream, e) in entries { byStream[stream, default: []].append(e.id) }
            for u in unread { byStream[u.stream, default: []].append(u.id) }
            _ = try redis.pipeline(byStream.sorted { $0.key < $1.key }.flatMap { stream, ids in
                [["XACK", stream, RedisKeys.coordinatorGroup] + ids, ["XDEL", stream] + ids]
            })
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
            if id == ">" && entries.count + unread.count < 1000 { return }
        }
    }

    /// The entries this consumer holds unacknowledged (what a read too large to take delivered), each
    /// read on its own under `MessageLimits.resultEntryBytes`. One over it is never read (`unread`): it
    /// is refused as `oversize` with the others (so its job ends as a lost attempt would, by its lease).
    private func siftPending(_ redis: RedisConnection, _ streams: [String]) throws
        -> (read: [(stream: String, entry: StreamEntry)], unread: [(stream: String, id: String)]) {
        var read: [(stream: String, entry: StreamEntry)] = []
        var unread: [(stream: String, id: String)] = []
        for s in streams {
            for id in try redis.pendingIDs(stream: s, group: RedisKeys.coordinatorGroup, consumer: "coordinator", count: 1000) {
                do {
                    // Gone (its node deleted it): no fields, refused as `missing_body` like any deleted entry.
                    read.append((s, try redis.entry(stream: s, id: id, maxReplyBytes: MessageLimits.resultEntryBytes) ?? StreamEntry(id: id, fields: nil)))
                } catch let e as RedisError where e.code == .tooLarge {
                    unread.append((s, id))
                }
            }
        }
        return (read, unread)
    }

    /// The refusal of an entry over the limit: the dead-letter stream keeps its size, never its bytes.
    static func oversize(_ stream: String, _ id: String, bytes: Int?) -> (stream: String, entry: StreamEntry, reason: String) {
        let note = "(not kept: \(bytes.map { "\($0) bytes" } ?? "an entry") over the \(MessageLimits.resultEntryBytes)-byte limit on one result)"
        return (stream, StreamEntry(id: id, fields: ["result": note]), MessageRejection.oversize.rawValue)
    }

    /// Applies results as one batch; when PostgreSQL refuses the batch for something other than a lost
    /// connection, applies them one by one and quarantines each one it still refuses: the job fails with
    /// class `bad_result` and the reason goes to the dead-letter stream. One bad result never holds up
    /// the others, and is never retried in a loop.
    private func applyIsolating(store: JobStore, redis: RedisConnection, _ results: [AttemptResult]) throws -> [AppliedTransition] {
        do {
            return try store.apply(results: results)
        } catch let e as PGError where !e.isConnectionLoss {
            log.warning("a batch of results was refused; applying them one by one", [("results", String(results.count)), ("error", e.message)])
        }
        var applied: [AppliedTransition] = []
        for r in results {
            do {
                applied += try store.apply(results: [r])
            } catch let e as PGError where !e.isConnectionLoss {
                applied += try quarantine(store: store, redis: redis, r, reason: "result could not be stored: \(e.message)")
            }
        }
        return applied
    }

    private func quarantine(store: JobStore, redis: RedisConnection, _ r: AttemptResult, reason: String) throws -> [AppliedTransition] {
        metrics.registry.add("hydra_results_quarantined_total", [])
        log.error("result quarantined; the job fails with class bad_result", [("job", r.jobID), ("attempt", String(r.attempt)), ("node", r.node), ("reason", reason)])
        let raw = (try? r.storable().jsonString()) ?? ""
        _ = try? redis.command(RedisKeys.deadLetterEntry(RedisKeys.deadLetter, [
            "source", "result", "node", StoredText.clean(r.node, maxBytes: 256), "job", r.jobID, "attempt", String(r.attempt),
            "reason", "unstorable", "error", StoredText.clean(reason, maxBytes: 4096), "raw", StoredText.clean(raw, maxBytes: 4096)]))
        do {
            return try store.failBadResult(jobID: r.jobID, attempt: r.attempt, node: r.node, reason: reason).map { [$0] } ?? []
        } catch let e as PGError where !e.isConnectionLoss {
            log.error("cannot mark the job failed either; its lease will requeue it", [("job", r.jobID), ("error", e.message)])
            return []
        }
    }

    private func deadLetterResults(_ redis: RedisConnection, _ items: [(stream: String, entry: StreamEntry, reason: String)]) {
        let now = Date().timeIntervalSince1970
        for i in items {
            metrics.registry.add("hydra_messages_rejected_total", ["result", i.reason])
            guard let left = refusalLog.admit("\(i.stream) \(i.reason)", now: now) else { continue }
            log.warning("result refused, moved to the dead-letter stream", [("stream", i.stream), ("id", i.entry.id), ("reason", i.reason)]
                        + LogThrottle.leftOut("refused", left))
        }
        _ = try? redis.pipeline(items.map { i in
            let raw = i.entry.fields?["result"] ?? i.entry.fields.map { "\($0.keys.sorted())" } ?? "(deleted entry)"
            return RedisKeys.deadLetterEntry(RedisKeys.deadLetter, ["source", "result", "stream", i.stream, "id", i.entry.id,
                                                                     "reason", i.reason, "raw", StoredText.clean(raw, maxBytes: 4096)])
        })
    }

    // MARK: nodes

    /// A node's verified heartbeat, with the operator's drain applied.
    struct NodeBeat {
        var name: String
        var beat: HeartbeatMessage
        var draining: Bool
        /// Its job stream takes no entry now (`BlockedNodes`): nothing is dispatched here.
        var undispatchable: String? = nil
        /// The agent's allowlist, built once per heartbeat read rather than in every placement pass.
        let commands: CommandAllowlist?
        var inventory: Inventory { beat.inventory }

        init(name: String, beat: HeartbeatMessage, draining: Bool) {
            self.name = name; self.beat = beat; self.draining = draining
            commands = beat.commands.map { CommandAllowlist($0.map(CommandTemplate.init)) }
        }
    }

    /// The nodes this coordinator works with: those of the cluster file, and nothing an agent can add.
    /// Without a cluster file (a development setup) the nodes that register themselves, by valid name only.
    func nodeNames(_ redis: RedisConnection) throws -> [String] {
        if let c = settings.cluster { return c.nodes.map(\.name) }
        return (try redis.run(["SMEMBERS", RedisKeys.nodes]).array ?? []).compactMap(\.string)
            .filter { (try? RedisACL.checkNodeName($0)) != nil }.sorted()
    }

    /// Per node: why its heartbeat was last refused, and that heartbeat (the same body is not decoded again).
    /// Refused results are logged once per stream and reason a minute (each is counted and dead-lettered).
    private let refusalLog = LogThrottle(every: 60)
    private let rejectedBeats = Mutex<[String: (reason: String, body: String, sig: String?)]>([:])
    private let beatCache = Mutex<[String: (body: String, sig: String?, beat: HeartbeatMessage)]>([:])

    private func readHeartbeats(_ redis: RedisConnection) throws -> [NodeBeat] {
        let names = try nodeNames(redis)
        if names.isEmpty { return [] }
        let (reads, scripted) = try redis.boundedHMGET(keys: names.map(RedisKeys.heartbeat), fields: ["body", "sig", "kid"],
                                                       maxBytes: MessageLimits.heartbeatBytes)
        if !scripted, refusalLog.admit("heartbeat script", now: Date().timeIntervalSince1970) != nil {
            log.warning("Redis refused the heartbeat read script (EVAL): heartbeats are read one per round trip; give the coordinator's Redis user its new commands: ACL SETUSER hydra-coordinator +eval +hstrlen +xpending +xinfo|groups, then ACL SAVE")
        }
        let drainedNow = drained.withLock { $0 }
        var out: [NodeBeat] = []
        for (name, read) in zip(names, reads) {
            let f: [String: String]
            switch read {
            case .absent: continue
            case .oversize(let bytes):
                let size = bytes.map { "\($0) bytes" } ?? "more bytes"
                refuseBeat(redis, name, reason: MessageRejection.oversize.rawValue, body: "", sig: nil,
                           detail: "heartbeat of \(size) (body, sig and kid), over the \(MessageLimits.heartbeatBytes) the coordinator reads; not read")
                continue
            case .fields(let v):
                var x = ["body": v[0] ?? ""]
                if let sig = v[1] { x["sig"] = sig }
                if let kid = v[2] { x["kid"] = kid }
                f = x
            }
            let body = f["body"] ?? ""
            if let r = rejectedBeats.withLock({ $0[name] }), r.body == body, r.sig == f["sig"] { continue }
            do {
                // Read ten times a second, rewritten once: the same signed body is checked and decoded once.
                let hb: HeartbeatMessage
                if let c = beatCache.withLock({ $0[name] }), c.body == body, c.sig == f["sig"] {
                    hb = c.beat
                } else {
                    hb = try HeartbeatMessage.decode(f, node: name, keys: keys(name))
                    beatCache.withLock { $0[name] = (body, f["sig"], hb) }
                }
                if rejectedBeats.withLock({ $0.removeValue(forKey: name) }) != nil { log.info("heartbeat accepted again", [("node", name)]) }
                out.append(NodeBeat(name: name, beat: hb, draining: hb.stopping || drainedNow.contains(name)))
            } catch {
                let reason = error is ImplausibleHeartbeat ? ImplausibleHeartbeat.reason : ((error as? MessageRejection) ?? .malformed).rawValue
                refuseBeat(redis, name, reason: reason, body: body, sig: f["sig"], detail: "\(error)")
            }
        }
        return out
    }

    /// Counts, logs and dead-letters a refused heartbeat once per node and reason, not on every read:
    /// a forged heartbeat is rewritten every second.
    private func refuseBeat(_ redis: RedisConnection, _ name: String, reason: String, body: String, sig: String?, detail: String) {
        guard rejectedBeats.withLock({ $0.updateValue((reason, body, sig), forKey: name) })?.reason != reason else { return }
        metrics.registry.add("hydra_messages_rejected_total", ["heartbeat", reason])
        log.warning("heartbeat refused: the node counts as silent", [("node", name), ("reason", reason), ("detail", StoredText.clean(detail, maxBytes: 512))])
        _ = try? redis.command(RedisKeys.deadLetterEntry(RedisKeys.deadLetter, [
            "source", "heartbeat", "node", name, "reason", reason, "error", StoredText.clean(detail, maxBytes: 4096),
            "raw", StoredText.clean(body, maxBytes: 4096)]))
    }

    private let drained = Mutex<Set<String>>([])

    private func writeNodes(store: JobStore, nodes: [NodeBeat], liveness: NodeLiveness, now: Double, active: [JobRow]) throws {
        try store.upsertNodes(nodes.map {
            NodeRow(name: $0.name, lastSeen: liveness.lastChange($0.name) ?? now, up: true, draining: false, agentVersion: $0.beat.version,
                    inventory: $0.inventory, running: $0.beat.held.map(\.id), commands: $0.beat.commands, gpuSampleAgeS: $0.beat.sampleAgeS)
        })
        try store.markNodesDown(except: nodes.map(\.name))
        metrics.registry.reset("hydra_node_gpu_sample_age_seconds")
        for n in nodes { if let a = n.beat.sampleAgeS { metrics.registry.set("hydra_node_gpu_sample_age_seconds", [n.name], a) } }
        let rows = try store.nodes()
        drained.withLock { $0 = Set(rows.filter(\.draining).map(\.name)) }
        metrics.nodes(rows, active: active)
    }

    // MARK: placement

    /// The cluster as the router sees it: config nodes plus any node that heartbeats without being configured.
    func snapshot(nodes: [NodeBeat], active: [JobRow], now: Date) -> ClusterSnapshot {
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
            live[h.name] = .init(up: true, draining: h.draining, inventory: h.inventory.withoutEndedJobs(active: activeIDs),
                                 commands: h.commands,
                                 undispatchable: h.undispatchable)
            if let age = h.beat.sampleAgeS, age > settings.staleGPUReadingSeconds { live[h.name]?.staleGPUReadingS = age }
            processes[h.name] = Set(h.inventory.processes.compactMap(\.processName))
        }
        let running = active.compactMap { j -> RouterRunningJob? in
            guard let node = j.node else { return nil }
            let started = j.startedAt.map { Date(timeIntervalSince1970: $0) }
            let visible = processes[node]?.contains("hydra-job-\(j.id)") == true
                || (started.map { now.timeIntervalSince($0) > settings.policy.settleS } ?? false)
            return RouterRunningJob(id: j.id, batchID: j.batchID, kind: j.kind, spec: j.spec, node: node, gpuUUIDs: j.gpuUUIDs,
                                    reservedBytesPerGPU: j.reservedBytes ?? j.vramBytes,
                                    placedAt: Date(timeIntervalSince1970: j.dispatchedAt ?? j.submittedAt), startedAt: started,
                                    visible: visible, priority: j.priority)
        }
        return ClusterSnapshot.build(config: config, live: live, running: running)
    }

    /// One placement pass. Returns whether another pass should follow at once: it placed jobs
    /// and read a full batch, so more may be waiting behind it.
    private func placeAndDispatch(redis: RedisConnection, store: JobStore, cache: inout PendingCache,
                                  streamIDs: inout StreamIDAllocator, blocked: inout BlockedNodes, nodes: [NodeBeat],
                                  state: LeaderState, explain: Bool) throws -> Bool {
        // PostgreSQL says which jobs are pending and in which order; rows already read and decoded
        // in an earlier pass come from the cache (a pending job's row does not change until it is placed).
        let ids = try store.pendingIDs(limit: settings.placementBatch)
        if ids.isEmpty { cache.removeAll(); metrics.pendingClasses([]); return false }
        let missing = ids.filter { cache.rows[$0] == nil }
        if !missing.isEmpty { cache.add(try store.readyRows(ids: missing)) }
        cache.keep(only: ids)
        let pending = ids.compactMap { cache.jobs[$0] }
        if pending.isEmpty { return false }
        let active = state.activeJobs()
        let t0 = Date()
        var nodes = nodes
        if !blocked.isEmpty {
            try recheckBlocked(redis: redis, streamIDs: &streamIDs, blocked: &blocked, now: t0)
            // What runs there still counts, nothing new goes there, and its jobs say why.
            for i in nodes.indices { nodes[i].undispatchable = blocked.reason(nodes[i].name) }
        }
        let snap = snapshot(nodes: nodes, active: active, now: t0)
        var held: [String: Int] = [:]
        for j in active { if let n = j.node { held[n, default: 0] += 1 } }
        let nowEpoch = t0.timeIntervalSince1970
        let capacity = Dictionary(nodes.map { ($0.name, state.nodeLimit($0.name, capacity: max(0, $0.beat.capacity), now: nowEpoch)) },
                                  uniquingKeysWith: { a, _ in a })
        // Reason texts are for people: written about once a second, not on every pass a result triggers.
        // (Queued envelopes keep their lease while they are verifiably in the stream: `renewQueuedLeases`.)
        if settings.policy.weighsUpcomingJobs && nowEpoch >= cache.upcomingNextRead {
            let timeoutMS = 250, pauseS = 30.0
            if let rows = try store.upcomingRows(limit: settings.placementBatch, timeoutMS: timeoutMS) {
                cache.upcoming = rows.map(RouterJob.init(row:))
                cache.upcomingNextRead = nowEpoch + 1
            } else {
                // Too slow to be worth it (huge dependency lists): plan without the hint for a while.
                log.warning("reading jobs about to be ready took over \(timeoutMS) ms; placing without them for \(Int(pauseS)) s")
                cache.upcoming = []
                cache.upcomingNextRead = nowEpoch + pauseS
            }
        }
        var inputs = Dispatcher.Inputs(pending: pending, snapshot: snap, stats: state.stats, now: t0, policy: settings.policy,
                                       explain: explain, held: held, capacity: capacity)
        // A job that became ready since the last read is in `pending` now: counted once, there.
        inputs.upcoming = cache.upcoming.filter { cache.jobs[$0.id] == nil }
        let plan = Dispatcher.plan(inputs)
        let result = plan.router
        var assignments = plan.assignments
        metrics.routerPass(seconds: Date().timeIntervalSince(t0), pending: result.pending)
        if Log.level <= .debug {
            for a in result.assignments {
                log.debug("placed", [("job", a.jobID), ("node", a.node), ("gpus", a.gpuIndices.map(String.init).joined(separator: ",")),
                                     ("reserved", ByteSize.format(a.reservedBytesPerGPU)), ("expected_finish_s", String(format: "%.1f", a.expectedFinish.timeIntervalSince(t0))),
                                     ("running", String(snap.running.count)),
                                     ("used", snap.nodes.flatMap { $0.gpus.map { ByteSize.format($0.usedBytes ?? 0) } }.joined(separator: "/"))])
            }
        }
        if !plan.deferred.isEmpty { metrics.registry.add("hydra_placements_deferred_total", [], Double(plan.deferred.count)) }
        if explain { try store.setPendingReasons(plan.reasons) }
        if assignments.isEmpty { return false }
        // Streams not written to since this coordinator took over: learn their last id first.
        let unknown = Array(Set(assignments.map(\.node)).filter { !streamIDs.knows(stream: RedisKeys.jobs($0)) })
        if !unknown.isEmpty {
            for (node, r) in zip(unknown, try redis.lastGeneratedIDs(streams: unknown.map(RedisKeys.jobs), maxReplyBytes: MessageLimits.streamInfoBytes)) {
                streamIDs.learned(stream: RedisKeys.jobs(node), xinfo: r)
                if case .error(let e) = r, let reason = BlockedNodes.reason(streamError: e) { block(node, reason: reason, detail: e, &blocked, now: nowEpoch) }
            }
        }
        let nowMillis = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        // A stream with no id left takes no envelope, not even with `*`: its jobs stay pending and the next
        // pass, at once, places them elsewhere. Checked per node, not per job.
        for node in Set(assignments.map(\.node)) where streamIDs.exhausted(stream: RedisKeys.jobs(node), nowMillis: nowMillis) {
            block(node, reason: "stream_id_exhausted", detail: "its last id is the maximum", &blocked, now: nowEpoch)
        }
        if !blocked.isEmpty { assignments.removeAll { blocked.contains($0.node) } }
        if assignments.isEmpty { return true }
        var models: [String: String] = [:]
        for n in snap.nodes { for g in n.gpus { models[g.uuid] = g.model } }
        let placements = assignments.map {
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
                               expiresAt: now + settings.envelopeTTLSeconds, node: d.node)
            commands.append(["XADD", RedisKeys.jobs(d.node), "MAXLEN", "~", "1000000", chosen[d.id] ?? "*"]
                            + (try NodeMessage.job(env).fields(keys: keys(d.node))))
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
                    // The agent wrote the maximum id (or a hash) since the allocator looked: this job's lease requeues it,
                    // and nothing more goes there until the stream is repaired.
                    if case .error(let e) = r, let reason = BlockedNodes.reason(streamError: e) { block(d.node, reason: reason, detail: e, &blocked, now: now) }
                    log.warning("XADD of an envelope failed; the lease will requeue it", [("job", d.id), ("reply", "\(r)")])
                    late.append((d.id, d.attempt, nil))
                }
            }
        }
        try store.setStreamIDs(late)
        return ids.count >= settings.placementBatch
    }

    /// Stops dispatching to `node`; logged and counted once per node and reason.
    private func block(_ node: String, reason: String, detail: String, _ blocked: inout BlockedNodes, now: Double) {
        guard blocked.block(node, reason: reason, now: now) else { return }
        metrics.registry.set("hydra_node_undispatchable", [node, reason], 1)
        log.error("node's job stream takes no envelope; nothing is dispatched there until it is repaired (DEL \(RedisKeys.jobs(node)))",
                  [("node", node), ("reason", reason), ("detail", StoredText.clean(detail, maxBytes: 512))])
    }

    /// Looks again at the job streams of blocked nodes that are due: a node whose stream was deleted or
    /// repaired gets jobs again.
    private func recheckBlocked(redis: RedisConnection, streamIDs: inout StreamIDAllocator, blocked: inout BlockedNodes, now: Date) throws {
        let due = blocked.due(now: now.timeIntervalSince1970)
        if due.isEmpty { return }
        let nowMillis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        for (node, r) in zip(due, try redis.lastGeneratedIDs(streams: due.map(RedisKeys.jobs), maxReplyBytes: MessageLimits.streamInfoBytes)) {
            let stream = RedisKeys.jobs(node)
            // Forgotten first: a deleted stream starts again from 0-0, below what the allocator last saw.
            streamIDs.forget(stream: stream)
            streamIDs.learned(stream: stream, xinfo: r)
            if case .error(let e) = r, BlockedNodes.reason(streamError: e) != nil { continue }
            if !streamIDs.knows(stream: stream) || streamIDs.exhausted(stream: stream, nowMillis: nowMillis) { continue }
            if let reason = blocked.unblock(node) {
                metrics.registry.set("hydra_node_undispatchable", [node, reason], 0)
                log.info("node's job stream takes envelopes again", [("node", node)])
            }
        }
    }

    /// An envelope still waiting in its live node's stream is not lost: its lease is renewed while
    /// XRANGE shows it there, so a lease in effect starts when the agent takes the job. One whose entry
    /// is gone and that no heartbeat lists (Redis lost it) is left to expire and is requeued.
    private func renewQueuedLeases(redis: RedisConnection, store: JobStore, live: [NodeBeat]) throws {
        let liveNames = Set(live.map(\.name))
        let held = Set(live.flatMap { n in n.beat.held.map { "\($0.id)/\($0.attempt)" } })
        let soon = try store.dispatchedLeasesEndingSoon(within: max(1, settings.leaseSeconds / 3))
            .filter { liveNames.contains($0.node) && !held.contains("\($0.jobID)/\($0.attempt)") && $0.streamID != nil }
        if soon.isEmpty { return }
        let there = try redis.entriesBelongToJobs(soon.map { (RedisKeys.jobs($0.node), $0.streamID!, $0.jobID) })
        let queued = zip(soon, there).filter(\.1).map { (node: $0.0.node, job: HeldJob(id: $0.0.jobID, attempt: $0.0.attempt)) }
        try store.renewLeases(held: queued, leaseSeconds: settings.leaseSeconds)
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
        var xadds: [Int] = []
        let now = Date().timeIntervalSince1970
        for c in items {
            let msg = NodeMessage.cancel(jobID: c.jobID, attempt: c.attempt, issuedAt: now, node: c.node,
                                         expiresAt: now + settings.envelopeTTLSeconds)
            xadds.append(cmds.count)
            cmds.append(["XADD", RedisKeys.jobs(c.node), "*"] + (try msg.fields(keys: keys(c.node))))
            if let sid = c.streamID, envelopeThere[c.jobID] == true { cmds.append(["XDEL", RedisKeys.jobs(c.node), sid]) }
        }
        let replies = try redis.pipeline(cmds)
        // A cancel Redis refused (the node's job stream is not a stream, or its ids are used up) is not
        // sent: it stays due and goes again on the next round, once the stream is repaired.
        var sent: [(String, Int)] = []
        for (c, i) in zip(items, xadds) {
            if case .error(let e) = replies[i] {
                if let left = refusalLog.admit("cancel \(c.node)", now: now) {
                    log.warning("cannot send a cancel to the node's job stream; it is sent again until the stream takes it",
                                [("node", c.node), ("job", c.jobID), ("error", StoredText.clean(e, maxBytes: 512))]
                                + LogThrottle.leftOut("unsent", left))
                }
                metrics.registry.add("hydra_cancels_unsent_total", [c.node])
            } else {
                sent.append((c.jobID, c.attempt))
            }
        }
        if !sent.isEmpty { try store.markCancelSent(sent) }
    }
}

/// `@unchecked Sendable`: PGConnection is not thread-safe; the leadership connection is handed to the
/// lease thread while it runs, and `lead` touches it again only after its group has joined that thread.
private struct HandedOver: @unchecked Sendable { let conn: PGConnection }
