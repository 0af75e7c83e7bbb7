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
    /// Older attempts of the same job this node still held when this one arrived: stopped, and waited
    /// for before this one starts (`AgentDecisions.superseded`).
    let supersedes: [RunningJob]
    /// Set once `run` has returned (its executor is done with the job's processes and directory).
    let ended = Completion()
    var key: AttemptKey { AttemptKey(envelope.jobID, envelope.attempt) }
    init(envelope: Envelope, streamID: String, supersedes: [RunningJob] = []) {
        self.envelope = envelope; self.streamID = streamID; self.supersedes = supersedes
    }
}

/// A one-way flag that threads can wait on with a deadline.
final class Completion: Sendable {
    private let done = Mutex(false)
    private let condition = NSCondition()
    func set() {
        done.withLock { $0 = true }
        condition.lock(); condition.broadcast(); condition.unlock()
    }
    var isSet: Bool { done.withLock { $0 } }
    /// Returns whether it was set before `deadline`.
    @discardableResult
    func wait(until deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while !isSet { if !condition.wait(until: deadline) { break } }
        return isSet
    }
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
    /// What the heartbeat says this node's `command` jobs may run (empty: none; every agent has the command executor).
    let commandTemplates: [[String]]
    let metrics: AgentMetrics
    let log: Log

    /// Stopping, shared by the loops and the shutdown path (`services` stops it; `handle` reads it).
    private let lifecycle = ServiceContext()
    /// The heartbeat, consumer and publisher loops, once `start()` has run them.
    private let services = Mutex<ServiceGroup?>(nil)
    /// The consumer takes no more envelopes: once nothing is held or queued either, the publisher may end.
    private let consumerDone = Atomic<Bool>(false)
    /// Held attempts, keyed by (job, attempt): a newer attempt of a job never overwrites an older one's
    /// entry, and an older one retiring never removes the newer one from the heartbeat's held list.
    private let jobs = Mutex(HeldAttempts<RunningJob>())
    private let refusalLog = LogThrottle(every: 60)
    /// Set by `shutdown()`: take no more envelopes, heartbeat `stopping`, let held jobs finish.
    private let draining = Atomic<Bool>(false)
    /// The job stream could not be read on the last try: heartbeat `stopping` with no capacity, so the
    /// coordinator places nothing here until it reads again (`AgentDecisions.heartbeatState`).
    private let streamFailing = Atomic<Bool>(false)
    /// When the latest GPU sample was taken (nil: none yet); the sampler thread writes it.
    private let lastSampleAt = Mutex<Date?>(nil)
    private let startedAt = Date()
    /// Whether a stale GPU sample was already reported, so the warning is logged once per episode.
    private let staleReported = Atomic<Bool>(false)
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
        commandTemplates = (executors["command"] as? CommandExecutor).map { $0.allowlist.templates.map(\.elements) } ?? []
        self.metrics = AgentMetrics(node: settings.node)
        self.log = Log(component: "agent", fields: [("node", settings.node)])
        self.results = Mutex(RedisConnection(endpoint: settings.redis))
        self.seen = try SeenAttempts(path: settings.seenFile, now: Date().timeIntervalSince1970)
    }

    var jobsStream: String { RedisKeys.jobs(settings.node) }
    var consumerName: String { "agent-\(settings.node)" }
    var isStopping: Bool { lifecycle.isStopping }
    /// Taking no more jobs: a graceful shutdown has begun (or the loops are stopping).
    var isDraining: Bool { draining.load(ordering: .acquiring) || lifecycle.isStopping }

    var healthy: Bool {
        guard let t = lastHeartbeatOK.withLock({ $0 }) else { return false }
        return Date().timeIntervalSince(t) < max(3 * settings.heartbeatInterval, 3)
    }

    func runningJobIDs() -> [String] { jobs.withLock { $0.keys.sorted().map(\.description) } }
    func heldJobs() -> [HeldJob] { jobs.withLock { $0.keys.sorted().map { HeldJob(id: $0.jobID, attempt: $0.attempt) } } }

    // MARK: lifecycle

    /// Starts the loops and returns; the group they run in ends when `shutdown()` has drained them
    /// (the publisher runs on after the stop until every result is out), or when one of them fails.
    @discardableResult
    func start() -> ServiceGroup {
        // The first sample before the first heartbeat: a node must never announce itself without the
        // GPUs it has (`hydra submit` without a cluster file checks VRAM against what nodes report).
        // After this one, the sampler loop reads on its own thread and heartbeats never wait for it.
        sampleInventory()
        let group = ServiceGroup(services: [
            ServiceLoop("gpu-sampler") { self.samplerLoop($0) },
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
    /// period, hand the rest back, then stop heartbeating. The heartbeat goes on (as `stopping`) until
    /// every held job's result is out: a node that fell silent during the grace period would have its
    /// still-running jobs declared lost and run a second time elsewhere.
    func shutdown() {
        log.info("shutting down: no new jobs; waiting for running jobs", [("running", String(runningJobIDs().count)), ("grace_s", String(settings.graceSeconds))])
        draining.store(true, ordering: .releasing)
        // Tell the coordinator at once, so that it places nothing more here.
        collectAndPublish(RedisConnection(endpoint: settings.redis))
        let deadline = Date().addingTimeInterval(settings.graceSeconds)
        while !runningJobIDs().isEmpty && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        // Jobs still running are handed back; re-read the set until it is empty, since the
        // consumer may have taken one more envelope while the drain was being signalled.
        var handedBack = Set<AttemptKey>()
        let handBackDeadline = Date().addingTimeInterval(10)
        while Date() < handBackDeadline {
            let left = jobs.withLock { Array($0.values) }
            if left.isEmpty { break }
            for j in left where !handedBack.contains(j.key) {
                j.handBack.store(true, ordering: .relaxed)
                j.cancellation.cancel()
                handedBack.insert(j.key)
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        // Every result is out (or the hand-back deadline passed): now the loops may end.
        lifecycle.stop()
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

    /// Reads the GPUs on a thread of its own, once per heartbeat interval at most: nvidia-smi may take
    /// seconds or hang until its deadline, and the heartbeat must not wait for it (a node whose heartbeat
    /// is late is declared dead and its running jobs are sent again). The heartbeat carries the latest sample.
    private func samplerLoop(_ ctx: ServiceContext) {
        // `start()` took the first sample.
        ctx.sleep(until: Date().addingTimeInterval(settings.heartbeatInterval))
        while !ctx.isStopping {
            let started = Date()
            sampleInventory()
            ctx.sleep(until: started.addingTimeInterval(settings.heartbeatInterval))
        }
    }

    private func sampleInventory() {
        let t0 = Date()
        do {
            let inv = try readInventory()
            lastInventory.withLock { $0 = inv }
            lastSampleAt.withLock { $0 = Date() }
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
            // An excerpt: nvidia-smi's words may hold NULs and invalid bytes, never written raw to the log.
            log.warning("GPU inventory collection failed: \(Excerpt.of(String(describing: error), limit: 400))")
        }
        metrics.collectionDuration(Date().timeIntervalSince(t0))
    }

    func collectAndPublish(_ conn: RedisConnection) {
        let now = Date()
        let sampledAt = lastSampleAt.withLock { $0 }
        if AgentDecisions.sampleIsStale(sampledAt: sampledAt, startedAt: startedAt, now: now, interval: settings.heartbeatInterval) {
            if !staleReported.exchange(true, ordering: .relaxed) {
                let age = sampledAt.map { Log.seconds(now.timeIntervalSince($0)) } ?? "never"
                log.warning("GPU inventory is stale (nvidia-smi slow or hung); heartbeating with the last sample", [("sample_age_s", age)])
            }
        } else if staleReported.exchange(false, ordering: .relaxed) {
            log.info("GPU inventory is fresh again")
        }
        let inv = lastInventory.withLock { $0 }
        let held = heldJobs()
        metrics.jobsRunning(held.count)
        let failing = streamFailing.load(ordering: .relaxed)
        let (state, capacity) = AgentDecisions.heartbeatState(draining: isDraining, streamFailing: failing, prefetch: settings.prefetch)
        do {
            let key = RedisKeys.heartbeat(settings.node)
            let ttl = max(1, Int((3 * settings.heartbeatInterval).rounded(.up)))
            let hb = HeartbeatMessage(node: settings.node, instance: settings.instanceID,
                                      seq: heartbeatSeq.add(1, ordering: .relaxed).newValue, sentAt: Date().timeIntervalSince1970,
                                      state: state, version: settings.version, capacity: capacity,
                                      inventory: inv, held: held, commands: commandTemplates,
                                      sampleAgeS: sampledAt.map { max(0, now.timeIntervalSince($0)) })
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
            // Saturating: vram_bytes comes from a message; two near 2^63 on one GPU must not trap this thread.
            for j in js.values { for u in j.envelope.gpuUUIDs { out[u] = Saturating.add(out[u] ?? 0, j.envelope.vramBytes) } }
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
            if draining.load(ordering: .acquiring) {
                // Shutting down: read nothing more; the loop ends when `shutdown()` stops the group.
                ctx.sleep(0.2)
                continue
            }
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
                if streamFailing.exchange(false, ordering: .relaxed) { log.info("job stream readable again: ready for jobs") }
                let start = entries.compactMap { handle($0, conn: conn, recovered: false) }
                // The attempts are on disk before any of their jobs starts (`SeenAttempts.flush`).
                seen.flush()
                for job in start { workers.submit { self.run(job) } }
            } catch {
                // Until it reads again the heartbeat says `stopping` with no capacity: jobs placed here now
                // would sit unread and burn attempts when their leases run out.
                if !streamFailing.exchange(true, ordering: .relaxed) {
                    log.warning("job stream read failed; taking no jobs until it reads again: \(error)")
                } else {
                    log.debug("job stream read failed, retrying: \(error)")
                }
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

    private func deadLetter(_ conn: RedisConnection, entry: StreamEntry, reason: String, error: String? = nil) {
        metrics.deadLettered(reason: reason)
        // Once a minute per reason (each is counted and on the dead-letter stream): whoever can write to
        // this node's stream must not be able to fill its log.
        if let left = refusalLog.admit(reason, now: Date().timeIntervalSince1970) {
            log.warning("dead-lettered a message", [("stream_id", entry.id), ("reason", reason)] + (error.map { [("error", $0)] } ?? [])
                        + LogThrottle.leftOut("dead_lettered", left))
        }
        let raw = entry.fields?["body"] ?? entry.fields.map { "\($0.keys.sorted())" } ?? ""
        _ = try? conn.command(RedisKeys.deadLetterEntry(RedisKeys.deadLetter(settings.node), [
            "node", settings.node, "stream", jobsStream, "id", entry.id, "reason", reason, "raw", StoredText.clean(raw, maxBytes: 4096)]
            + (error.map { ["error", $0] } ?? [])))
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
                if let j = jobs.withLock({ $0[AttemptKey(id, attempt)] }) {
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
        // Signed, for this node, and still it may not be used: its job id becomes a directory and a line
        // in the seen-attempts file, so anything but a UUID is refused before either happens.
        if let why = EnvelopeCheck.refusal(env) {
            deadLetter(conn, entry: entry, reason: MessageRejection.malformed.rawValue, error: why)
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
        let key = AttemptKey(env.jobID, env.attempt)
        if jobs.withLock({ $0[key]?.streamID == entry.id }) { return nil }
        switch seen.take(jobID: env.jobID, attempt: env.attempt, expiresAt: env.expiresAt, now: Date().timeIntervalSince1970) {
        case .new: break
        case .seen, .older:
            // A redelivery after Redis lost an acknowledgement looks the same as a replay: neither runs.
            deadLetter(conn, entry: entry, reason: MessageRejection.replayed.rawValue)
            ack(conn, entry.id)
            return nil
        }
        if let why = EnvelopeCheck.failure(env) {
            log.warning("refused a job", [("job", env.jobID), ("attempt", String(env.attempt)), ("error", why)])
            publish(AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .failed,
                                  failureClass: .permanent, error: why), ack: entry.id)
            return nil
        }
        if isDraining {
            publish(AttemptResult(jobID: env.jobID, attempt: env.attempt, node: settings.node, outcome: .released,
                                  error: "agent on \(settings.node) is shutting down"), ack: entry.id)
            return nil
        }
        // A newer attempt of a job this node still runs: the coordinator has given the older one up (its
        // result is fenced), so the older one is stopped and the newer one waits for it to end before it
        // starts (see `AgentDecisions.superseded`): never two attempts of one job at once here.
        let (job, older) = jobs.withLock { js -> (RunningJob, [RunningJob]) in
            let older = js.superseded(by: key).compactMap { js[$0] }
            let job = RunningJob(envelope: env, streamID: entry.id, supersedes: older)
            js.insert(key, job)
            return (job, older)
        }
        for o in older {
            log.warning("a newer attempt of this job arrived; stopping the older one", [("job", env.jobID), ("attempt", String(o.envelope.attempt)),
                                                                                      ("newer_attempt", String(env.attempt))])
            o.cancellation.cancel()
        }
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
        jobs.withLock { _ = $0.removeValue(forKey: job.key) }
        roomSignal.lock()
        roomSignal.signal()
        roomSignal.unlock()
        metrics.jobFinished(kind: env.kind, outcome: result.outcome == .failed ? (result.failureClass?.rawValue ?? "failed") : result.outcome.rawValue)
        log.info("finished", [("job", env.jobID), ("attempt", String(env.attempt)), ("outcome", result.outcome.rawValue),
                              ("duration_s", Log.seconds(result.durationSeconds ?? 0))])
    }

    private func run(_ job: RunningJob) {
        defer { job.ended.set() }
        let env = job.envelope
        let jlog = log.with("job", env.jobID).with("attempt", String(env.attempt))
        // Older attempts of this job were told to stop; their processes and output directory are theirs
        // until they have. Bounded, so that an executor that ignores its cancellation cannot hold this one forever.
        for o in job.supersedes where !o.ended.wait(until: Date().addingTimeInterval(60)) {
            jlog.warning("the older attempt did not stop within 60 s; starting anyway", [("older_attempt", String(o.envelope.attempt))])
        }
        let started = Date()
        let inv = lastInventory.withLock { $0 }
        let indexes = env.gpuUUIDs.compactMap { u in inv.gpus.first { $0.uuid == u }?.index }
        simulated?.allocate(jobID: env.jobID, attempt: env.attempt, uuids: env.gpuUUIDs, bytesPerGPU: env.vramBytes)
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
        simulated?.release(jobID: env.jobID, attempt: env.attempt)
        // Acknowledged and retired by the publisher once the result is in Redis.
        publish(result, ack: job.streamID, job: job)
    }
}
