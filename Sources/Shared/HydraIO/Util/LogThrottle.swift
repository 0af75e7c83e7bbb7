import Foundation
import Synchronization

/// How often a repeated warning is written: the first of a kind (a key: stream and reason, node
/// and reason) at once, then at most one per `every` seconds carrying how many were left out.
/// A flood of refused messages (33 000 bad results from one agent) wrote one line each: the log
/// is the operator's, and a sender must not be able to fill it. Counters and the dead-letter
/// stream still record every message. Thread-safe; the clock is passed in.
public final class LogThrottle: Sendable {
    public let every: Double
    public let maxKeys: Int
    private let state = Mutex<[String: (loggedAt: Double, suppressed: Int)]>([:])

    public init(every: Double = 60, maxKeys: Int = 1024) { self.every = every; self.maxKeys = maxKeys }

    /// nil: leave this one out. Otherwise log it, saying how many like it were left out since the last line.
    public func admit(_ key: String, now: Double) -> Int? {
        state.withLock { s -> Int? in
            if let e = s[key], now - e.loggedAt < every, now >= e.loggedAt {
                s[key] = (e.loggedAt, e.suppressed + 1)
                return nil
            }
            // Keys come from what senders write: past the bound the table starts again (a few extra lines).
            if s[key] == nil && s.count >= maxKeys { s.removeAll() }
            let suppressed = s[key]?.suppressed ?? 0
            s[key] = (now, 0)
            return suppressed
        }
    }

    /// The log field saying how many lines `admit` left out (`more_<what>_since_last_line`), or none.
    public static func leftOut(_ what: String, _ count: Int) -> [(String, String)] {
        count > 0 ? [("more_\(what)_since_last_line", String(count))] : []
    }
}
