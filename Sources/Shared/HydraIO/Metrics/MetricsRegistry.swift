import Foundation
import Synchronization

/// Prometheus text exposition (format 0.0.4) for gauges, counters and histograms.
/// Hand-written: about 150 lines against swift-prometheus + swift-metrics + atomics
/// in every agent build, and the agent's footprint target is 25 MB RSS.
public final class MetricsRegistry: Sendable {
    public enum Kind: String, Sendable { case gauge, counter, histogram }

    struct Family: Sendable {
        var name: String
        var help: String
        var kind: Kind
        var buckets: [Double]
        var samples: [[String]: Double] = [:]              // gauge/counter: labels values → value
        var histos: [[String]: (counts: [UInt64], sum: Double, count: UInt64)] = [:]
        var labelNames: [String]
    }

    private let families = Mutex<[String: Family]>([:])
    private let order = Mutex<[String]>([])

    public init() {}

    public func register(_ name: String, _ kind: Kind, help: String, labels: [String] = [], buckets: [Double] = []) {
        families.withLock { f in
            if f[name] == nil {
                f[name] = Family(name: name, help: help, kind: kind, buckets: buckets.sorted(), labelNames: labels)
                order.withLock { $0.append(name) }
            }
        }
    }

    /// A series of a family that was never registered is dropped, and one with the wrong number of
    /// label values renders wrong: both are bugs in the caller (`hydra_cancels_unsent_total` was written
    /// for a stop without ever being exported), so debug builds, which run the tests, stop on them.
    private static func check(_ f: Family?, _ name: String, _ labels: [String]) {
        guard let f else { return assertionFailure("metric \(name) is written but was never registered") }
        assert(f.labelNames.count == labels.count, "metric \(name) takes labels \(f.labelNames), was given \(labels.count) values")
    }

    public func set(_ name: String, _ labels: [String] = [], _ value: Double) {
        families.withLock { f in Self.check(f[name], name, labels); f[name]?.samples[labels] = value }
    }

    public func add(_ name: String, _ labels: [String] = [], _ delta: Double = 1) {
        families.withLock { f in Self.check(f[name], name, labels); f[name]?.samples[labels, default: 0] += delta }
    }

    public func observe(_ name: String, _ labels: [String] = [], _ value: Double) {
        families.withLock { f in
            Self.check(f[name], name, labels)
            guard var fam = f[name] else { return }
            var h = fam.histos[labels] ?? (Array(repeating: 0, count: fam.buckets.count), 0, 0)
            for (i, b) in fam.buckets.enumerated() where value <= b { h.counts[i] += 1 }
            h.sum += value
            h.count += 1
            fam.histos[labels] = h
            f[name] = fam
        }
    }

    /// Drops every series of a family (e.g. GPUs that disappeared) before re-setting them.
    public func reset(_ name: String) {
        families.withLock { f in f[name]?.samples = [:]; f[name]?.histos = [:] }
    }

    public func value(_ name: String, _ labels: [String] = []) -> Double? {
        families.withLock { $0[name]?.samples[labels] }
    }

    public func render() -> String {
        let names = order.withLock { $0 }
        let snapshot = families.withLock { $0 }
        var out = ""
        for n in names {
            guard let f = snapshot[n] else { continue }
            out += "# HELP \(f.name) \(f.help)\n# TYPE \(f.name) \(f.kind.rawValue)\n"
            switch f.kind {
            case .gauge, .counter:
                for (labels, v) in f.samples.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                    out += "\(f.name)\(Self.labelText(f.labelNames, labels)) \(Self.num(v))\n"
                }
            case .histogram:
                for (labels, h) in f.histos.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                    for (i, b) in f.buckets.enumerated() {
                        out += "\(f.name)_bucket\(Self.labelText(f.labelNames + ["le"], labels + [Self.num(b)])) \(h.counts[i])\n"
                    }
                    out += "\(f.name)_bucket\(Self.labelText(f.labelNames + ["le"], labels + ["+Inf"])) \(h.count)\n"
                    out += "\(f.name)_sum\(Self.labelText(f.labelNames, labels)) \(Self.num(h.sum))\n"
                    out += "\(f.name)_count\(Self.labelText(f.labelNames, labels)) \(h.count)\n"
                }
            }
        }
        return out
    }

    static func labelText(_ names: [String], _ values: [String]) -> String {
        if names.isEmpty { return "" }
        let pairs = zip(names, values).map { n, v in
            "\(n)=\"" + v.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        }
        return "{" + pairs.joined(separator: ",") + "}"
    }

    static func num(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v.rounded() == v, abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
