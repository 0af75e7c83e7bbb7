import Foundation

/// Estimated time to finish a batch from its recent finishing rate. A sliding window rather than
/// the whole run: a batch whose first jobs waited for a GPU, or whose image jobs follow quick CPU
/// ones, would otherwise carry its early rate to the end.
public struct BatchETA: Sendable {
    public let window: Double
    private var samples: [(t: Double, finished: Int)] = []

    public init(window: Double = 30) { self.window = window }

    /// Records that `finished` jobs were done at time `t` (seconds, any monotonic origin).
    public mutating func record(t: Double, finished: Int) {
        samples.append((t, finished))
        // Keep one sample older than the window, so the rate always spans a full window once there is one.
        while samples.count > 2, t - samples[1].t >= window { samples.removeFirst() }
    }

    /// Jobs finished per second over the window; nil until two samples span some time.
    public var rate: Double? {
        guard let first = samples.first, let last = samples.last, last.t > first.t else { return nil }
        return Double(last.finished - first.finished) / (last.t - first.t)
    }

    /// Seconds until `total` are finished at the current rate; 0 when all are, nil while nothing
    /// finished in the window (no rate to go by).
    public func remaining(total: Int) -> Double? {
        guard let last = samples.last else { return nil }
        if last.finished >= total { return 0 }
        guard let r = rate, r > 0 else { return nil }
        return Double(total - last.finished) / r
    }

    /// "42s", "3m05s", "1h02m"; "--" when unknown.
    public static func format(_ s: Double?) -> String {
        guard let s, s.isFinite, s >= 0 else { return "--" }
        let n = Int(s.rounded())
        if n < 60 { return "\(n)s" }
        if n < 3600 { return "\(n / 60)m" + pad(n % 60) + "s" }
        return "\(n / 3600)h" + pad(n % 3600 / 60) + "m"
    }

    private static func pad(_ v: Int) -> String { v < 10 ? "0\(v)" : String(v) }
}
