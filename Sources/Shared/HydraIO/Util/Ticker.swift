import Foundation

/// Which periodic chores of a loop are due: a pure value, the clock passed in by the caller, so a loop
/// keeps one of these instead of a `lastX` timestamp per chore, and tests need no real time.
///
/// A chore is due when it has never run, or when at least its interval has passed since it last ran.
/// A clock that goes backwards makes nothing due until it has caught up (as `lastX` comparisons did).
public struct Ticker<Task: Hashable & Sendable>: Sendable {
    public let intervals: [Task: TimeInterval]
    private var lastRun: [Task: Date] = [:]

    public init(_ intervals: [Task: TimeInterval]) { self.intervals = intervals }

    /// Whether `task` is due at `now`, without marking it run. A task without an interval never is.
    public func isDue(_ task: Task, at now: Date) -> Bool {
        guard let interval = intervals[task] else { return false }
        guard let last = lastRun[task] else { return true }
        return now.timeIntervalSince(last) >= interval
    }

    /// Records that `task` ran at `time` (its next turn is an interval later).
    public mutating func ran(_ task: Task, at time: Date) { lastRun[task] = time }

    /// If `task` is due at `now`, marks it run at `now` and returns true. For a chore checked on its own,
    /// at a point of the loop that not every turn reaches.
    public mutating func take(_ task: Task, at now: Date) -> Bool {
        if !isDue(task, at: now) { return false }
        lastRun[task] = now
        return true
    }

    /// Every task due at `now`, each marked run at `now`.
    public mutating func due(_ now: Date) -> Set<Task> {
        let due = Set(intervals.keys.filter { isDue($0, at: now) })
        for t in due { lastRun[t] = now }
        return due
    }

    /// When the next task falls due (`now` or earlier when one already is); nil without tasks.
    public func nextDue(after now: Date) -> Date? {
        intervals.map { task, interval in lastRun[task].map { $0.addingTimeInterval(interval) } ?? now }.min()
    }
}
