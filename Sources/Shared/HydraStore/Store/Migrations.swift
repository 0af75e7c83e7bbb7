import Foundation

/// Versioned schema migrations. Each runs once, in order, in its own transaction,
/// under an advisory lock so two `hydra migrate` at once cannot interleave.
public enum Migrations {
    public static let all: [(version: Int, name: String, sql: String)] = [
        (1, "initial schema", """
        CREATE TABLE batches (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            submitted_at timestamptz NOT NULL DEFAULT now(),
            submitted_by text,
            priority int NOT NULL DEFAULT 0,
            spec jsonb NOT NULL,
            state text NOT NULL DEFAULT 'active'
        );
        CREATE TABLE jobs (
            id uuid PRIMARY KEY,
            seq bigserial,
            batch_id uuid NOT NULL REFERENCES batches(id),
            name text NOT NULL,
            kind text NOT NULL,
            spec jsonb NOT NULL,
            state text NOT NULL,
            priority int NOT NULL DEFAULT 0,
            vram_request_bytes bigint NOT NULL DEFAULT 0,
            gpus_requested int NOT NULL DEFAULT 0,
            placement_constraints jsonb NOT NULL DEFAULT '{}',
            attempt int NOT NULL DEFAULT 0,
            max_attempts int NOT NULL DEFAULT 3,
            node text,
            gpu_uuids text[],
            stream_id text,
            submitted_at timestamptz NOT NULL DEFAULT now(),
            dispatched_at timestamptz,
            lease_expires_at timestamptz,
            started_at timestamptz,
            finished_at timestamptz,
            not_before timestamptz,
            deadline_s double precision,
            pending_reason text,
            failure_class text,
            cancel_sent boolean NOT NULL DEFAULT false,
            result jsonb,
            error jsonb NOT NULL DEFAULT '[]',
            idempotency_key text UNIQUE
        );
        CREATE INDEX jobs_state_prio ON jobs (state, priority DESC, seq);
        CREATE INDEX jobs_batch_state ON jobs (batch_id, state);
        CREATE INDEX jobs_on_node ON jobs (node) WHERE state IN ('placed', 'dispatched', 'running');
        CREATE TABLE job_events (
            id bigserial PRIMARY KEY,
            job_id uuid NOT NULL,
            at timestamptz NOT NULL DEFAULT now(),
            attempt int,
            from_state text,
            to_state text NOT NULL,
            detail jsonb
        );
        CREATE INDEX job_events_job ON job_events (job_id, id);
        CREATE TABLE nodes (
            name text PRIMARY KEY,
            last_seen timestamptz,
            up boolean NOT NULL DEFAULT false,
            draining boolean NOT NULL DEFAULT false,
            agent_version text,
            inventory jsonb,
            running jsonb
        );
        CREATE TABLE runtime_stats (
            kind text NOT NULL,
            model_key text NOT NULL,
            gpu_model text NOT NULL,
            n bigint NOT NULL,
            mean_s double precision NOT NULL,
            p95_s double precision NOT NULL,
            peak_vram_p95_bytes bigint,
            PRIMARY KEY (kind, model_key, gpu_model)
        );
        """),
        (2, "approvals and audit", """
        CREATE TABLE approvals (
            id uuid PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            action text NOT NULL,
            tier int NOT NULL DEFAULT 1,
            title text NOT NULL,
            detail jsonb NOT NULL DEFAULT '{}',
            state text NOT NULL DEFAULT 'awaiting_approval',
            job_id uuid,
            batch_id uuid,
            decided_at timestamptz,
            decided_by text,
            reason text
        );
        CREATE INDEX approvals_state ON approvals (state, created_at);
        CREATE TABLE audit_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            action text NOT NULL,
            target text,
            detail jsonb NOT NULL DEFAULT '{}'
        );
        """),
        (3, "job dependencies", """
        ALTER TABLE jobs ADD COLUMN depends_on uuid[] NOT NULL DEFAULT '{}';
        """),
        (4, "router reservations", """
        ALTER TABLE jobs ADD COLUMN reserved_bytes bigint;
        ALTER TABLE jobs ADD COLUMN gpu_model text;
        """),
        (5, "overnight pipeline", """
        CREATE TABLE pipeline_nights (
            night text PRIMARY KEY,
            state text NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz,
            deadline timestamptz,
            runs int NOT NULL DEFAULT 1,
            triggered_by text,
            plan jsonb NOT NULL DEFAULT '{}',
            forecast jsonb,
            report_path text,
            batch_ids uuid[] NOT NULL DEFAULT '{}'
        );
        CREATE TABLE generation_tasks (
            id uuid PRIMARY KEY,
            night text NOT NULL,
            collection text NOT NULL,
            seq int NOT NULL,
            idea text NOT NULL,
            prompt text NOT NULL,
            images int NOT NULL,
            state text NOT NULL,
            expand_job_id uuid,
            variations jsonb,
            reason text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            finished_night text
        );
        CREATE INDEX generation_tasks_state ON generation_tasks (state);
        CREATE INDEX generation_tasks_collection ON generation_tasks (collection, seq);
        CREATE TABLE quality_metrics (
            id uuid PRIMARY KEY,
            task_id uuid NOT NULL REFERENCES generation_tasks(id),
            night text NOT NULL,
            finished_night text,
            collection text NOT NULL,
            variation int NOT NULL,
            prompt text NOT NULL,
            state text NOT NULL,
            image_job_id uuid,
            score_job_id uuid,
            source_path text,
            asset_path text,
            aesthetic double precision,
            musiq double precision,
            face_similarity double precision,
            face_status text,
            failed_gates text[] NOT NULL DEFAULT '{}',
            reason text,
            failure_class text,
            disposition text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (task_id, variation)
        );
        CREATE INDEX quality_metrics_state ON quality_metrics (state);
        CREATE INDEX quality_metrics_collection ON quality_metrics (collection, state);
        CREATE INDEX quality_metrics_finished ON quality_metrics (finished_night);
        CREATE TABLE pipeline_actions (
            id uuid PRIMARY KEY,
            night text NOT NULL,
            action text NOT NULL,
            collection text,
            state text NOT NULL,
            approval_id uuid,
            job_id uuid,
            detail jsonb NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX pipeline_actions_state ON pipeline_actions (state);
        """),
        // The coordinator reads the head of the pending queue on every placement pass: a partial index in
        // exactly that order lets it stop after the first rows instead of sorting every pending job. The
        // dependency sweep (twice a second) first asks whether any pending job waits on another at all.
        // A job's state changes on every transition, so each change writes an entry into every index of
        // the table: the general (state, priority, seq) index gives way to partial ones for the few states
        // the coordinator looks up (pending; on a node: jobs_on_node; backoffs; cancels not yet sent).
        (6, "partial state indexes", """
        CREATE INDEX jobs_pending_order ON jobs (priority DESC, seq) WHERE state = 'pending';
        CREATE INDEX jobs_pending_deps ON jobs (id) WHERE state = 'pending' AND cardinality(depends_on) > 0;
        CREATE INDEX jobs_retry_wait ON jobs (not_before) WHERE state = 'retry_wait';
        CREATE INDEX jobs_cancel_unsent ON jobs (id) WHERE state = 'cancelled' AND NOT cancel_sent;
        DROP INDEX jobs_state_prio;
        """),
        // Leadership as a lease row with a fencing epoch (`Leadership`): a leader whose host died or was cut
        // off is replaced within the lease, and its late writes are refused by the epoch. Cancellations as
        // rows of their own, per (job, attempt): a retry right after a cancel can no longer erase the
        // cancel the old attempt still has to receive.
        (7, "leadership lease, cancel requests", """
        CREATE TABLE leadership (
            id int PRIMARY KEY CHECK (id = 1),
            epoch bigint NOT NULL DEFAULT 0,
            holder text,
            holder_pid int,
            holder_started timestamptz,
            renewed_at timestamptz NOT NULL DEFAULT '-infinity'
        );
        INSERT INTO leadership (id) VALUES (1);
        CREATE TABLE cancel_requests (
            job_id uuid NOT NULL,
            attempt int NOT NULL,
            node text NOT NULL,
            stream_id text,
            requested_at timestamptz NOT NULL DEFAULT now(),
            sent_at timestamptz,
            PRIMARY KEY (job_id, attempt)
        );
        CREATE INDEX cancel_requests_unsent ON cancel_requests (requested_at) WHERE sent_at IS NULL;
        INSERT INTO cancel_requests (job_id, attempt, node, stream_id)
            SELECT id, attempt, node, stream_id FROM jobs WHERE state = 'cancelled' AND NOT cancel_sent AND node IS NOT NULL;
        """),
        // The work waiting on each job (`DependencyTails`), written at submit: the router orders a tier
        // by own runtime + this tail. Jobs submitted before it keep 0 (own runtime alone, as before).
        (8, "dependency tails", """
        ALTER TABLE jobs ADD COLUMN tail_s double precision NOT NULL DEFAULT 0;
        """),
        // Dependencies per batch file entry, not per job (`JobGroup`): a job names the entries it waits on
        // (`after_groups`, and how many jobs those hold: `after_size`) and carries the entry it belongs to
        // (`dep_group`, set only where some job waits on that entry). The entries not done yet are one read
        // of `jobs_group_unfinished`, which holds only the jobs of waited-on entries that have not succeeded.
        // Per-job `depends_on` lists were n × m for an entry after an entry (10 000 × 10 000: submit 2m54s,
        // the ready list 19 s per pass). Rows written before keep working: each job another one waited on
        // becomes an entry of its own, whose ID is the job's. `depends_on` stays, no longer written or read.
        (9, "dependency groups", """
        ALTER TABLE jobs ADD COLUMN dep_group uuid, ADD COLUMN after_groups uuid[] NOT NULL DEFAULT '{}',
                         ADD COLUMN after_size int NOT NULL DEFAULT 0;
        CREATE TABLE job_groups (
            id uuid PRIMARY KEY,
            batch_id uuid NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
            name text NOT NULL,
            size int NOT NULL
        );
        INSERT INTO job_groups (id, batch_id, name, size)
            SELECT d.id, d.batch_id, d.name, 1 FROM jobs d
            WHERE d.id IN (SELECT unnest(depends_on) FROM jobs WHERE cardinality(depends_on) > 0);
        UPDATE jobs SET dep_group = id WHERE id IN (SELECT id FROM job_groups);
        UPDATE jobs SET after_groups = depends_on, after_size = cardinality(depends_on) WHERE cardinality(depends_on) > 0;
        DROP INDEX jobs_pending_deps;
        CREATE INDEX jobs_pending_deps ON jobs (id) WHERE state = 'pending' AND cardinality(after_groups) > 0;
        CREATE INDEX jobs_group_unfinished ON jobs (dep_group) WHERE dep_group IS NOT NULL AND state <> 'succeeded';
        """),
        // When a job with dependencies was first read as ready (`JobStore.readyRows`). The router ages a
        // job from it (null: from `submitted_at`), as the simulator it was tuned in always did: counted from
        // the batch's submission, a whole stage of a pipeline crossed each aging step at once, behind jobs
        // ready for longer, and over 200 generated scenarios that is worse (p90 1.212 → 1.266 × the bound).
        (10, "ready time", """
        ALTER TABLE jobs ADD COLUMN ready_at timestamptz;
        """),
        // When each waited-on entry's last job ended, one index probe per job and entry: `JobStore.readyRows` marks
        // a job ready at that time, not when a pass first reads it, so a job read late (behind a full pass
        // window, or after a coordinator restart) still ages from when it really became ready.
        (11, "entry end times", """
        CREATE INDEX jobs_group_finished ON jobs (dep_group, finished_at) WHERE dep_group IS NOT NULL;
        """),
        // A batch's jobs a page at a time in `seq` order (the console's batch page, `/api/v1/jobs?batch=`):
        // without it every page sorted the whole batch (31 ms of PostgreSQL per page at 100 000 jobs).
        (12, "batch pages", """
        CREATE INDEX jobs_batch_seq ON jobs (batch_id, seq);
        """),
        // What each agent's `command` jobs may run, as its heartbeat says: `hydra nodes --json` shows it,
        // and `hydra submit` refuses an argv that no node runs.
        (13, "node command allowlists", """
        ALTER TABLE nodes ADD COLUMN commands jsonb;
        """),
        // How old each node's GPU reading was at its last heartbeat: `hydra nodes` marks a node whose
        // reading is too old to place GPU jobs by (a hung nvidia-smi), as the router does.
        (14, "node GPU reading age", """
        ALTER TABLE nodes ADD COLUMN gpu_sample_age_s double precision;
        """),
    ]

    /// Applies what is missing (up to `through`: tests build an older schema to migrate from); returns the versions applied now.
    @discardableResult
    public static func migrate(_ db: PGConnection, through: Int = Int.max) throws -> [Int] {
        try db.exec("SELECT pg_advisory_lock(7210001)")
        defer { _ = try? db.exec("SELECT pg_advisory_unlock(7210001)") }
        try db.exec("CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        let done = Set(try db.exec("SELECT version FROM schema_migrations").all.compactMap { $0.int("version") })
        var applied: [Int] = []
        for m in all where !done.contains(m.version) && m.version <= through {
            try db.transaction { tx in
                try tx.exec(m.sql)
                try tx.exec("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [String(m.version), m.name])
            }
            applied.append(m.version)
        }
        return applied
    }

    public static var latest: Int { all.map(\.version).max() ?? 0 }

    /// Fails with a clear message when the schema is older than this binary expects.
    public static func check(_ db: PGConnection) throws {
        let rows: PGRows
        do {
            rows = try db.exec("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
        } catch let e as PGError where e.sqlState == "42P01" {
            throw StoreError.schemaMissing
        }
        let v = rows[0].int("v") ?? 0
        if v < latest { throw StoreError.schemaOld(have: v, want: latest) }
    }
}

public enum StoreError: Error, CustomStringConvertible, Equatable {
    case schemaMissing
    case schemaOld(have: Int, want: Int)
    case notFound(String)
    case ambiguous(String)

    public var description: String {
        switch self {
        case .schemaMissing: return "the database has no Hydra schema yet: run `hydra migrate`"
        case .schemaOld(let h, let w): return "the database schema is at version \(h), this hydra needs \(w): run `hydra migrate`"
        case .notFound(let s): return s
        case .ambiguous(let s): return s
        }
    }
}
