import Foundation
import XCTest
@testable import HydraCore

/// Builders for router tests: the reference cluster with simulated GPUs, jobs with defaults.
enum RT {
    static let t0 = Date(timeIntervalSince1970: 1_750_000_000)
    static let GiB = ByteSize.GiB

    static func referenceConfig() throws -> ClusterConfig {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "cluster-reference", withExtension: "yaml", subdirectory: "Fixtures"))
        return try ClusterConfig.load(path: url.path)
    }

    /// The reference cluster, all nodes up; `used` maps `node/index` to a live reading.
    static func snapshot(_ config: ClusterConfig, used: [String: Double] = [:], down: Set<String> = [],
                         draining: Set<String> = [], running: [RouterRunningJob] = []) -> ClusterSnapshot {
        var s = ClusterSnapshot.build(config: config, live: Dictionary(uniqueKeysWithValues: config.nodes.map {
            ($0.name, ClusterSnapshot.NodeLive(up: !down.contains($0.name), draining: draining.contains($0.name)))
        }), running: running)
        for ni in s.nodes.indices {
            for gi in s.nodes[ni].gpus.indices {
                if let u = used["\(s.nodes[ni].name)/\(gi)"] { s.nodes[ni].gpus[gi].usedBytes = UInt64(u * Double(GiB)) }
            }
        }
        return s
    }

    /// One node of the given GPUs (model, weight, GiB), with the default headroom.
    static func node(_ models: [(String, Double, Int)], name: String = "n") -> ClusterConfig {
        ClusterConfig(nodes: [NodeConfig(name: name, gpus: models.map { GPUConfig(model: $0.0, memory: .gib(Double($0.2)), weight: $0.1) })],
                      headroom: ByteCount(512 * ByteSize.MiB))
    }

    static func job(_ id: String, kind: String = "command", vram: Double? = nil, gpus: Int = 1, priority: Int = 0,
                    batch: String? = nil, at: Double = 0, spec: [String: JSONValue] = [:],
                    constraints: [String: JSONValue]? = nil, lastFailure: FailureClass? = nil,
                    lastReserved: Double? = nil) -> RouterJob {
        RouterJob(id: id, batchID: batch, kind: kind, spec: .object(spec),
                  vramRequestBytes: vram.map { UInt64($0 * Double(GiB)) }, gpusRequested: gpus, priority: priority,
                  submittedAt: t0.addingTimeInterval(at), constraints: constraints.map { .object($0) },
                  lastFailure: lastFailure, lastReservedBytes: lastReserved.map { UInt64($0 * Double(GiB)) })
    }

    static func running(_ id: String, node: String, gpus: [String], gib: Double, kind: String = "command",
                        startedAgo: Double? = 0, visible: Bool = false, endsIn: Double? = nil, now: Date = t0,
                        priority: Int = 0) -> RouterRunningJob {
        RouterRunningJob(id: id, kind: kind, node: node, gpuUUIDs: gpus, reservedBytesPerGPU: UInt64(gib * Double(GiB)),
                         placedAt: now.addingTimeInterval(-(startedAgo ?? 0) - 1),
                         startedAt: startedAgo.map { now.addingTimeInterval(-$0) }, visible: visible,
                         expectedEnd: endsIn.map { now.addingTimeInterval($0) }, priority: priority)
    }

    static func place(_ jobs: [RouterJob], _ snap: ClusterSnapshot, policy: RouterPolicy = .hydra,
                      stats: RuntimeStats = .empty, now: Date = t0) -> PlacementResult {
        Router.place(pending: jobs, snapshot: snap, stats: stats, now: now, policy: policy)
    }
}

extension PlacementResult {
    func gpu(_ id: String) -> String? {
        guard let a = assignment(for: id) else { return nil }
        return "\(a.node)/" + a.gpuIndices.map(String.init).joined(separator: "+")
    }
}

// Literals keep the tests' specs and constraints readable. Test-only: the product code
// builds JSONValue explicitly.
extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .number(Double(value)) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}
