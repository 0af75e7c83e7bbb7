import Foundation
import Synchronization
import HydraCore
import HydraWire
import HydraIO
import HydraExecutors

/// Settings of one `hydra-agent run`.
struct AgentSettings: Sendable {
    var node: String
    var redis: RedisEndpoint
    var instanceID: String
    var heartbeatInterval: Double
    var graceSeconds: Double
    var outputDirectory: String
    var markerDirectory: String?
    var prefetch: Int
    var version: String
    /// This node's own keys (`SigningKeys.loadForNode`): they check envelopes and sign results and heartbeats.
    var keys: SigningKeys?
    /// Where the attempts this node has taken are remembered across restarts (`SeenAttempts`); nil: in memory.
    var seenFile: String? = nil
}

/// A job the agent holds: read from its stream, running on its own thread.
final class RunningJob: Sendable {
    let envelope: Envelope
    let streamID: String
    let cancellation = CancellationFlag()
    /// Why it was cancelled: by an operator, or because the agent is shutting down.
    let handBack = Atomic<Bool>(false)
    init(envelope: Envelope, streamID: String) { self.envelope = envelope; self.streamID = streamID }
}

/// hydra-agent: heartbeats with the live inventory, pulls envelopes from its node
/// stream, runs them through executors, reports results, serves /metrics.
/// Each loop is a `ServiceLoop` with its own Redis connection, run by a `ServiceGroup` on a thread of
/// its own: hiredis blocks, and a thread per connection keeps blocking calls off Swift's cooperative pool.
final class Agent: Sendable {
    let settings: AgentSettings
    let readInventory: @Sendable () throws -> Inventory
    let simulated: SimulatedGPUs?
    let executors: [String: any Executor]
    let metrics: AgentMetrics
    let log: Log

    /// Stopping, shared by the loops and the shutdown path (`services` stops it; `handle` reads it).
    private let lifecycle = ServiceContext()
    /// The heartbeat, consumer and publisher loops, once `start()` has run them.
    private let services = Mutex<ServiceGroup?>(nil)
    /// The consumer takes no more envelopes: once nothing is held or queued either, the publisher may end.
    private let consumerDone = Atomic<Bool>(false)
    private let jobs = Mutex<[String: RunningJob]>([:])
    /// Attempts taken, on disk: a redelivered envelope (Redis lost an acknowledgement in a restart)
    /// or a replayed copy is refused instead of being run twice, also after a restart.
    private let seen: SeenAttempts
    private let heartbeatSeq = Atomic<UInt64>(0)
    private let lastInventory = Mutex<Inventory>(Inventory())
    private let lastHeartbeatOK = Mutex<Date?>(nil)
    private let results: Mutex<RedisConnection>
    /// Results waiting for the publisher, in order; see `publisherLoop`.
    private let outbox = Mutex<[Outgoing]>([])
    /// Wakes the publisher when the outbox fills, and the consumer when a job retires and frees prefetch room.
    /// Both are waited on with a timeout, and the state they guard lives in Mutexes, so a missed signal costs
    /// at most that timeout, never correctness.
    private let outboxSignal = NSCondition()
    /// Job threads, reused: creating one per job cost more than a short job itself.
    private let workers = WorkerPool(name: "job")
    private let roomSignal = NSCondition()

    /// One result for the node's results stream, the job-stream entry to acknowledge once it is there,
    /// and the job to retire after that.
    struct Outgoing: Sendable {
        var result: AttemptResult
        var ack: String?
        var job: RunningJob?
    }

    init(settings: AgentSettings, readInventory: @escaping @Sendable () throws -> Inventory, simulated: SimulatedGPUs?,
         executors: [String: any Executor]) throws {
        self.settings = settings
        self.readInventory = readInventory
        self.simulated = simulated
        self.executors = executors
        self.metrics = AgentMetrics(node: settings.node)
        self.log = Log(component: "agent", fields: [("node", settings.node)])
        self.results = Mutex(RedisConnection(endpoint: settings.redis))
        self.seen = try SeenAttempts(path: settings.seenFile, now: Date().timeIntervalSince1970)
    }

    var jobsStream: String { RedisKeys.jobs(settings.node) }
    var consumerName: String { "agent-\(settings.node)" }
    var isStopping: Bool { lifecycle.isStopping }

    var healthy: Bool {
        guard let t = lastHeartbeatOK.withLock({ $0 }) else { return false }
        return Date().timeIntervalSince(t) < max(3 * settings.heartbeatInterval, 3)
    }

    func runningJobIDs() -> [String] { jobs.withLock { Array($0.keys).sorted() } }
    func heldJobs() -> [HeldJob] { jobs.withLock { $0.values.map { HeldJob(id: $0.envelope.jobID, attempt: $0.envelope.attempt) } }.sorted { $0.id < $1.id } }

    // MARK: lifecycle

    /// Starts the loops and returns; the group they run in ends when `shutdown()` has drained them
    /// (the publisher runs on after the stop until every result is out), or when one of them fails.
    @discardableResult
    func start() -> ServiceGroup {
        let group = ServiceGroup(services: [
            ServiceLoop("heartbeat") { self.heartbeatLoop($0) },
            ServiceLoop("consumer") { self.consumerLoop($0) },
            ServiceLoop("publisher") { _ in self.publisherLoop() },
        ], context: lifecycle)
        // The consumer may be waiting for prefetch room: a stop wakes it rather than its timeout.
        lifecycle.onStop { [roomSignal] in
            roomSignal.lock()
            roomSignal.broadcast()
            roomSignal.unlock()
        }
        services.withLock { $0 = group }
        group.start()
        return group
    }

    /// Graceful stop: take no new jobs, let running ones finish within the grace
    /// period, hand the rest back, then stop heartbeating.
    func shutdown() {
        log.info("shutting down: no new jobs; waiting for running jobs", [("running", String(runningJobIDs().count)), ("grace_s", String(settings.graceSeconds))])
        lifecycle.stop()
        // Tell the coordinator at once, so that it places nothing more here.
        collectAndPublish(RedisConnection(endpoint: settings.redis))
        let deadline = Date().addingTimeInterval(settings.graceSeconds)
        while !runningJobIDs().isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        // Jobs still running are handed back; re-read the set until it is empty, since the
        // consumer may have taken one more envelope while the stop was being signalled.
        var handedBack = Set<String>()
        let handBackDeadline = Date().addingTimeInterval(10)
        while Date() < handBackDeadline {
            let left = jobs.withLock { Array($0.values) }
            if left.isEmpty { break }
            for j in left where !handedBack.contains(j.envelope.jobID) {
                j.handBack.store(true, ordering: .relaxed)
                j.cancellation.cancel()
                handedBack.insert(j.envelope.jobID)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        // Bounded: a publisher still retrying against an unreachable Redis must not hold the exit.
        services.withLock { $0 }?.wait(timeout: max(5, 2 * settings.heartbeatInterval))
        // The node is going away on purpose: say so at once rather than after the TTL.
        _ = try? RedisConnection(endpoint: settings.redis).command(["DEL", RedisKeys.heartbeat(settings.node)])
        log.info("stopped", [("handed_back", String(handedBack.count))])
    }

    // MARK: heartbeat

    private func heartbeatLoop(_ ctx: ServiceContext) {
        let conn = RedisConnection(endpoint: settings.redis)
        while !ctx.isStopping {
            let started = Date()
            collectAndPublish(conn)
            SystemdNotify.watchdog()
            ctx.sleep(until: started.addingTimeInterval(settings.heartbeatInterval))
        }
    }

    func collectAndPublish(_ conn: RedisConnection) {
        let t0 = Date()
        do {
            let inv = try readInventory()
            lastInventory.withLock { $0 = inv }
            metrics.recordInventory(inv, reservedByUUID: reservations())
        } catch {
            let reason: String
            switch error as? NvidiaSMIError {
            case .notFound: reason = "not_found"
            case .failed: reason = "exit_status"
            case .timedOut: reason = "timeout"
            case .unparsable: reason = "parse"
            case nil: reason = "error"
            }
            metrics.collectionError(reason: reason)
            log.warning("GPU inventory collection failed: \(error)")
        }
        metrics.collectionDuration(Date().timeIntervalSince(t0))
        let inv = lastInventory.withLock { $0 }
        let held = heldJobs()
        metrics.jobsRunning(held.count)
        do {
            let key = RedisKeys.heartbeat(settings.node)
            let ttl = max(1, Int((3 * settings.heartbeatInterval).rounded(.up)))
            let hb = HeartbeatMessage(node: settings.node, instance: settings.instanceID,
                                      seq: heartbeatSeq.add(1, ordering: .relaxed).newValue, sentAt: Date().timeIntervalSince1970,
                                      state: isStopping ? "stopping" : "ready", version: settings.version, capacity: settings.prefetch,
                                      inventory: inv, held: held)
            let replies = try conn.pipeline([
                ["HSET", key] + (try hb.fields(keys: settings.keys)),
                ["EXPIRE", key, String(ttl)],
                ["SADD", RedisKeys.nodes, settings.node],
            ])
            if let e = replies.first(where: { if case .error = $0 { return true }; return false }) {
                log.warning("heartbeat rejected by Redis: \(e)")
            } else {
                lastHeartbeatOK.withLock { $0 = Date() }
            }
        } catch {
            log.warning("heartbeat failed: \(error)")
        }
    }

    private func reservations() -> [String: UInt64] {
        jobs.withLock { js in
            var out: [String: UInt64] = [:]
            for j in js.values { for u in j.envelope.gpuUUIDs { out[u, default: 0] += j.envelope.vramBytes } }
            return out
        }
    }

    // MARK: jobs

    private func consumerLoop(_ ctx: ServiceContext) {
        defer {
            consumerDone.store(true, ordering: .relaxed)
            outboxSignal.lock()
            outboxSignal.signal()
            outboxSignal.unlock()
        }
        let conn = RedisConnection(endpoint: settings.redis)
        var recovered = false
        while !ctx.isStopping {
            do {
                if !recovered {
                    try conn.ensureGroup(stream: jobsStream, group: RedisKeys.agentsGroup)
                    try recoverPending(conn)
                    recovered = true
                }
                // Prefetch is bounded so that jobs still waiting stay visible (and claimable) in Redis.
                let room = settings.prefetch - jobs.withLock { $0.count }
                if room <= 0 {
                    // Woken by a job retiring, so the next envelope is read the moment there is room.
                    roomSignal.lock()
                    if settings.prefetch - jobs.withLock({ $0.count }) <= 0 && !isStopping { _ = roomSignal.wait(until: Date().addingTimeInterval(0.5)) }
                    roomSignal.unlock()
                    continue
                }
                let entries = try conn.readGroup(stream: jobsStream, group: RedisKeys.agentsGroup, consumer: consumerName,
                                                 id: ">", count: room, blockMillis: 500)
                let start = entries.compactMap { handle($0, conn: conn, recovered: false) }
                // The attempts are on disk before any of their jobs starts (`SeenAttempts.flush`).
                seen.flush()
                for job in start { workers.submit { self.run(job) } }
            } catch {
                log.warning("job stream read failed, retrying: \(error)")
                ctx.sleep(0.5)
            }
        }
    }

    /// Entries this consumer read before a crash or restart: their process is gone,
    /// so each is reported failed (retryable) instead of being run a second time.
    private func recoverPending(_ conn: RedisConnection) throws {
        // Entries held by other consumers of this node's group (an agent that ran under another
        // name) are claimed too, then handled like our own.
        let (claimed, _) = try conn.autoClaim(stream: jobsStream, group: RedisKeys.agentsGroup, consumer: consumerName, minIdleMillis: 0)
        if !claimed.isEmpty { log.info("claimed \(claimed.count) entries from other consumers") }
        while true {
            let entries = try conn.readGroup(stream: jobsStream, group: RedisKeys.agentsGroup, consumer: consumerName,
                                             id: "0", count: 100, blockMillis: nil)
            if entries.isEmpty { return }
            for e in entries { _ = handle(e, conn: conn, recovered: true) }
        }
    }

    /// Acknowledged entries are deleted too: nothing else ever trims the node's stream.
    private func ack(_ conn: RedisConnection, _ id: String) {
        do { _ = try conn.pipeline([["XACK", jobsStream, RedisKeys.agentsGroup, id], ["XDEL", jobsStream, id]]) } catch {
            log.warning("XACK \(id) failed: \(error)")
        }
    }

    private func deadLetter(_ conn: RedisConnection, entry: StreamEntry, reason: String) {
        metrics.deadLettered(reason: reason)
        log.warning("dead-lettered a message", [("stream_id", entry.id), ("reason", reason)])
        let raw = entry.fields?["body"] ?? entry.fields.map { "\($0.keys.sorted())" } ?? ""
        _ = try? conn.command(RedisKeys.deadLetterEntry(RedisKeys.deadLetter(settings.node), [
            "node", settings.node, "stream", jobsStream, "id", entry.id, "reason", reason, "raw", StoredText.clean(raw, maxBytes: 4096)]))
    }

    /// Acts on one stream entry; returns the job to start, if it is one (the caller starts it).
    func handle(_ entry: StreamEntry, conn: RedisConnection, recovered: Bool) -> RunningJob? {
        guard let fields = entry.fields else {
            // Trimmed or deleted while pending: its payload is gone; the coordinator re-dispatches by state.
            ack(conn, entry.id)
            return nil
        }
        let env: Envelope
        do {
            switch try NodeMessage.decode(fields, keys: settings.keys, now: Date().timeIntervalSince1970, node: settings.node) {
            case .cancel(let id, let attempt, _, _, _):
                if let j = jobs.withLock({ $0[id] }), j.envelope.attempt == attempt {
                    log.info("cancel requested", [("job", id)])
                    j.cancellation.cancel()
                }
                ack(conn, entry.id)
                return nil
            case .job(let e):
                env = e
            }
        } catch {
            let reason = (error as? MessageRejection) ?? .malformed
            deadLetter(conn, entry: entry, reason: reason.rawValue)
            ack(conn, entry.id)
            return nil
        }
        if recovered {
            log.warning("found a job from before a restart; reporting it failed", [("job", env.jobID), ("attempt", String(env.attempt))])
            publish(AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .failed, failureClass: .lost,
                                  error: "agent on \(settings.node) restarted while holding this job; its process is gone"), ack: entry.id)
            return nil
        }
        // The very entry this node is running, delivered again: nothing to do until its result is out.
        if jobs.withLock({ $0[env.jobID]?.streamID == entry.id }) { return nil }
        switch seen.take(jobID: env.jobID, attempt: env.attempt, expiresAt: env.expiresAt, now: Date().timeIntervalSince1970) {
        case .new: break
        case .seen, .older:
            // A redelivery after Redis lost an acknowledgement looks the same as a replay: neither runs.
            deadLetter(conn, entry: entry, reason: MessageRejection.replayed.rawValue)
            ack(conn, entry.id)
            return nil
        }
        if isStopping {
            publish(AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .released,
                                  error: "agent on \(settings.node) is shutting down"), ack: entry.id)
            return nil
        }
        let job = RunningJob(envelope: env, streamID: entry.id)
        jobs.withLock { $0[env.jobID] = job }
        return job
    }

    /// Queues a result; the publisher writes it to the node's results stream, then acknowledges `ack` on the
    /// job stream (never before), then retires `job`.
    private func publish(_ r: AttemptResult, ack: String? = nil, job: RunningJob? = nil) {
        outbox.withLock { $0.append(Outgoing(result: r, ack: ack, job: job)) }
        outboxSignal.lock()
        outboxSignal.signal()
        outboxSignal.unlock()
    }

    /// Writes results in batches: everything queued since the last round trip goes in one
    /// pipeline of XADDs, then one XACK for the stream entries whose results landed. A
    /// `started` whose final result is in the same batch is dropped: the final result carries
    /// started_at, so a short job costs one message instead of two.
    private func publisherLoop() {
        while true {
            outboxSignal.lock()
            while outbox.withLock({ $0.isEmpty }) && !(consumerDone.load(ordering: .relaxed) && jobs.withLock { $0.isEmpty }) {
                _ = outboxSignal.wait(until: Date().addingTimeInterval(0.5))
            }
            outboxSignal.unlock()
            var batch = outbox.withLock { o in
                let b = o
                o.removeAll(keepingCapacity: true)
                return b
            }
            if batch.isEmpty {
                // The consumer has stopped and nothing is held or queued: every result is in Redis.
                return
            }
            let finals = Set(batch.lazy.filter { $0.result.outcome != .started }.map { "\($0.result.jobID)/\($0.result.attempt)" })
            if !finals.isEmpty {
                batch.removeAll { $0.result.outcome == .started && finals.contains("\($0.result.jobID)/\($0.result.attempt)") }
            }
            send(batch)
            for o in batch { if let j = o.job { retire(j, o.result) } }
        }
    }

    /// A result must reach Redis before its XACK: keeps trying while Redis is away.
    private func send(_ batch: [Outgoing]) {
        var todo: [(Outgoing, [String])] = []
        for o in batch {
            do { todo.append((o, try ResultMessage.fields(o.result, keys: settings.keys))) } catch { log.error("cannot encode a result: \(error)") }
        }
        var acks: [String] = []
        var delay = 0.05
        while !todo.isEmpty {
            do {
                let stream = RedisKeys.results(settings.node)
                let replies = try results.withLock { c in
                    try c.pipeline(todo.map { ["XADD", stream, "MAXLEN", "~", "1000000", "*"] + $0.1 })
                }
                var failed: [(Outgoing, [String])] = []
                for (item, reply) in zip(todo, replies) {
                    if case .error(let e) = reply {
                        log.warning("cannot publish a result yet: \(e)", [("job", item.0.result.jobID)])
                        failed.append(item)
                    } else if let a = item.0.ack {
                        acks.append(a)
                    }
                }
                todo = failed
            } catch {
                log.warning("cannot publish \(todo.count) results yet: \(error)")
            }
            if !todo.isEmpty {
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 2)
            }
        }
        if acks.isEmpty { return }
        do {
            _ = try results.withLock { c in
                try c.pipeline([["XACK", jobsStream, RedisKeys.agentsGroup] + acks, ["XDEL", jobsStream] + acks])
            }
        } catch {
            log.warning("XACK of \(acks.count) entries failed: \(error)")
        }
    }

    /// After its result is in Redis and its entry acknowledged: the job leaves the held set.
    private func retire(_ job: RunningJob, _ result: AttemptResult) {
        let env = job.envelope
        jobs.withLock { _ = $0.removeValue(forKey: env.jobID) }
        roomSignal.lock()
        roomSignal.signal()
        roomSignal.unlock()
        metrics.jobFinished(kind: env.kind, outcome: result.outcome == .failed ? (result.failureClass?.rawValue ?? "failed") : result.outcome.rawValue)
        log.info("finished", [("job", env.jobID), ("attempt", String(env.attempt)), ("outcome", result.outcome.rawValue),
                              ("duration_s", Log.seconds(result.durationSeconds ?? 0))])
    }

    private func run(_ job: RunningJob) {
        let env = job.envelope
        let jlog = log.with("job", env.jobID).with("attempt", String(env.attempt))
        let started = Date()
        let inv = lastInventory.withLock { $0 }
        let indexes = env.gpuUUIDs.compactMap { u in inv.gpus.first { $0.uuid == u }?.index }
        simulated?.allocate(jobID: env.jobID, uuids: env.gpuUUIDs, bytesPerGPU: env.vramBytes)
        publish(AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .started,
                              startedAt: started.timeIntervalSince1970))
        let outDir = "\(settings.outputDirectory)/\(env.jobID)"
        if executors[env.kind]?.needsOutputDirectory ?? false {
            try? FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true)
        }
        let ctx = ExecutionContext(envelope: env, node: settings.node, gpuIndexes: indexes, outputDirectory: outDir,
                                   markerDirectory: settings.markerDirectory, cancellation: job.cancellation)
        var result: AttemptResult
        if let ex = executors[env.kind] {
            jlog.debug("running", [("kind", env.kind)])
            do {
                let r = try ex.execute(ctx)
                result = AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .succeeded,
                                       result: r.output, startedAt: started.timeIntervalSince1970,
                                       finishedAt: Date().timeIntervalSince1970, durationSeconds: Date().timeIntervalSince(started),
                                       peakVRAMBytes: r.peakVRAMBytes)
            } catch let f as ExecutionFailure {
                result = AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .failed,
                                       failureClass: f.failureClass, error: f.message, startedAt: started.timeIntervalSince1970,
                                       finishedAt: Date().timeIntervalSince1970, durationSeconds: Date().timeIntervalSince(started))
            } catch {
                result = AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .failed,
                                       failureClass: .transient, error: "\(error)")
            }
        } else {
            result = AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .failed,
                                   failureClass: .permanent, error: "no executor for kind '\(env.kind)' on node \(settings.node)")
        }
        if job.handBack.load(ordering: .relaxed) && result.outcome != .succeeded {
            result = AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .released,
                                   error: "agent on \(settings.node) shut down before the job finished")
        }
        simulated?.release(jobID: env.jobID)
        // Acknowledged and retired by the publisher once the result is in Redis.
        publish(result, ack: job.streamID, job: job)
    }
}
