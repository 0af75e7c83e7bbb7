import Foundation

/// Which coordinator leads: one row (`leadership`) with a lease and a fencing epoch.
///
/// A standby takes over when the lease ran out (the leader's host died, or is cut off from
/// PostgreSQL: no TCP timeout involved) or at once when the leader's database session is gone
/// (the process died). Taking over increments the epoch; every write that must come from the
/// leader (dispatch, results, lease expiry) first checks the epoch in its transaction
/// (`JobStore.leaderEpoch`), so a deposed leader's later writes fail instead of racing the new leader's.
public enum Leadership {
    /// For the coordinator's connections: the server notices a vanished client within seconds
    /// (keepalives, unacknowledged data) and ends a transaction a vanished client left open, so its
    /// locks never hold up a takeover for long.
    public static let sessionSettings = [
        "SET tcp_keepalives_idle = 2", "SET tcp_keepalives_interval = 1", "SET tcp_keepalives_count = 3",
        "SET tcp_user_timeout = 5000", "SET idle_in_transaction_session_timeout = '10s'",
    ]

    public struct Lost: Error, CustomStringConvertible {
        public var reason: String
        public var description: String { "leadership lost: \(reason)" }
        public init(_ reason: String = "another coordinator took over (epoch moved)") { self.reason = reason }
    }

    /// Becomes the leader when nobody holds a live lease; returns the new epoch, or nil.
    public static func tryAcquire(_ db: PGConnection, holder: String, ttl: Double) throws -> Int64? {
        let r = try db.exec("""
            UPDATE leadership l SET epoch = l.epoch + 1, holder = $1, holder_pid = pg_backend_pid(),
                   holder_started = (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()), renewed_at = now()
            WHERE l.id = 1 AND (l.renewed_at < now() - make_interval(secs => $2::float8) OR l.holder_pid IS NULL
                   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.holder_pid AND a.backend_start = l.holder_started))
            RETURNING l.epoch
            """, [holder, String(ttl)])
        return r.all.first?.int64("epoch")
    }

    /// Extends the lease; false when another coordinator has taken over.
    public static func renew(_ db: PGConnection, epoch: Int64) throws -> Bool {
        try db.exec("UPDATE leadership SET renewed_at = now() WHERE id = 1 AND epoch = $1::bigint", [String(epoch)]).affected == 1
    }

    /// Gives the lease up (clean shutdown), so that a standby leads at once.
    public static func release(_ db: PGConnection, epoch: Int64) throws {
        try db.exec("UPDATE leadership SET renewed_at = '-infinity', holder_pid = NULL WHERE id = 1 AND epoch = $1::bigint", [String(epoch)])
    }

    public static func current(_ db: PGConnection) throws -> (epoch: Int64, holder: String?, renewedAgo: Double?) {
        let r = try db.exec("SELECT epoch, holder, CASE WHEN isfinite(renewed_at) THEN extract(epoch from now() - renewed_at) END AS ago FROM leadership WHERE id = 1").all.first
        return (r?.int64("epoch") ?? 0, r?["holder"], r?.double("ago"))
    }

    /// Inside a transaction: fails unless `epoch` still leads. A plain read, not `FOR SHARE`: three loops
    /// share-locking one row on every transaction made PostgreSQL write a lock (a multixact) into that
    /// row each time, about 15 % of the throughput. A takeover that lands while one of the old leader's
    /// statements is in flight is harmless: every transition is guarded by the job's state and attempt,
    /// so the two leaders' writes to one job serialize on its row and the second finds it changed. What
    /// the epoch stops is the deposed leader's *next* transaction.
    public static func check(_ tx: PGConnection, epoch: Int64) throws {
        let e = try tx.exec("SELECT epoch FROM leadership WHERE id = 1").all.first?.int64("epoch")
        if e != epoch { throw Lost() }
    }
}
