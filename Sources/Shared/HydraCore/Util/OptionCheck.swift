import Foundation

/// Range checks for numeric command-line options, shared by `hydra`, `hydra-agent` and `hydra-dev`.
/// ArgumentParser reads `nan`, `inf` and `--flag=-1` as valid Doubles, and a NaN passes every
/// `x <= 0` guard: a NaN heartbeat interval traps where it becomes whole seconds, an infinite node
/// timeout means a dead node's jobs are never requeued, a zero one that every node is dead at once.
/// Each returns the message for a `ValidationError` (exit 2, naming the option and the value), or
/// nil when it is fine.
public enum OptionCheck {
    /// Seconds: finite, above `min` (or at least it, with `minIncluded`), at most `max`.
    public static func seconds(_ value: Double, _ flag: String, min: Double, minIncluded: Bool = false, max: Double) -> String? {
        let low = minIncluded ? value >= min : value > min
        if value.isFinite && low && value <= max { return nil }
        let range = "\(minIncluded ? "from" : "greater than") \(number(min)) \(minIncluded ? "to" : "and at most") \(number(max))"
        return "\(flag) must be a number of seconds \(range), got \(number(value))"
    }

    /// A count from `min` to `max`.
    public static func count(_ value: Int, _ flag: String, min: Int, max: Int) -> String? {
        (min...max).contains(value) ? nil : "\(flag) must be from \(min) to \(max), got \(value)"
    }

    /// The first message of several checks, for a `validate()` that throws once.
    public static func first(_ messages: String?...) -> String? { messages.lazy.compactMap { $0 }.first }

    /// Whole numbers without a fraction ("5", not "5.0"); NaN and infinities by name.
    static func number(_ v: Double) -> String {
        if v.isNaN { return "nan" }
        if v.isInfinite { return v > 0 ? "inf" : "-inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
