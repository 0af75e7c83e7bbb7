import Foundation
import HydraCore

/// One thing a chaos run breaks.
public enum ChaosFault: Sendable, Equatable, CustomStringConvertible {
    /// SIGKILL the agent of a node, then start it again.
    case killAgent(String)
    /// SIGKILL whichever coordinator leads; it comes back as a standby.
    case killCoordinator
    /// Restart Redis; `persistence: false` wipes the append-only file first (Redis comes back empty).
    case restartRedis(persistence: Bool)
    case restartPostgreSQL
    /// Cut the node's agent off Redis for longer than the node timeout, then heal.
    case partition(String)

    /// The fault's kind without its target, for "each kind at least once".
    public var kind: String {
        switch self {
        case .killAgent: return "kill_agent"
        case .killCoordinator: return "kill_coordinator"
        case .restartRedis(let p): return p ? "restart_redis_aof" : "restart_redis_empty"
        case .restartPostgreSQL: return "restart_postgresql"
        case .partition: return "partition_agent"
        }
    }

    public var description: String {
        switch self {
        case .killAgent(let n): return "kill_agent(\(n))"
        case .partition(let n): return "partition_agent(\(n))"
        default: return kind
        }
    }

    public static let allKinds = ["kill_agent", "kill_coordinator", "restart_redis_aof", "restart_redis_empty",
                                  "restart_postgresql", "partition_agent"]
}

/// What a chaos run does, derived from its seed alone, so that a failing run can be replayed.
public struct ChaosPlan: Sendable, Equatable {
    public var faults: [ChaosFault]
    /// Jobs submitted before each fault (faults.count + 1 chunks; the last one after the last fault),
    /// so that every fault meets jobs in flight however fast the cluster drains.
    public var chunks: [Int]

    /// Every kind once in a seeded order, plus one more random fault per 1,000 jobs; the
    /// empty-Redis restart stays a one-off (it is the most disruptive and the slowest to reconcile).
    public static func make(seed: UInt64, jobs: Int, nodes: [String]) -> ChaosPlan {
        precondition(!nodes.isEmpty)
        var rng = SplitMix64(seed: seed)
        func node() -> String { nodes[Int(rng.next() % UInt64(nodes.count))] }
        func fault(_ kind: String) -> ChaosFault {
            switch kind {
            case "kill_agent": return .killAgent(node())
            case "kill_coordinator": return .killCoordinator
            case "restart_redis_aof": return .restartRedis(persistence: true)
            case "restart_redis_empty": return .restartRedis(persistence: false)
            case "restart_postgresql": return .restartPostgreSQL
            default: return .partition(node())
            }
        }
        var kinds = ChaosFault.allKinds
        kinds.shuffle(using: &rng)
        let repeatable = ["kill_agent", "kill_agent", "kill_coordinator", "restart_redis_aof", "restart_postgresql", "partition_agent"]
        for _ in 0..<(jobs / 1000) { kinds.append(repeatable[Int(rng.next() % UInt64(repeatable.count))]) }
        let faults = kinds.map(fault)
        return ChaosPlan(faults: faults, chunks: split(jobs, into: faults.count + 1))
    }

    /// `total` split into `parts` nearly equal, non-negative sizes (the first ones larger).
    public static func split(_ total: Int, into parts: Int) -> [Int] {
        let p = max(parts, 1)
        return (0..<p).map { total / p + ($0 < total % p ? 1 : 0) }
    }
}

/// The sleep jobs of a chaos run: short, a mix of one- and two-GPU jobs and CPU jobs,
/// with attempts to spare (every fault may cost a job an attempt).
public enum ChaosWorkload {
    public static func batch(name: String, jobs: Int, seed: UInt64, maxAttempts: Int = 25) -> BatchPlan {
        var rng = SplitMix64(seed: seed)
        func uniform() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        var out: [NewJob] = []
        out.reserveCapacity(jobs)
        for i in 0..<jobs {
            let duration = ((0.05 + uniform() * 0.45) * 100).rounded() / 100
            let r = uniform()
            let gib: UInt64 = 1 << 30
            let (vram, gpus): (UInt64, Int)
            if r < 0.35 { (vram, gpus) = (0, 0) }
            else if r < 0.95 { (vram, gpus) = (UInt64(1 + Int(uniform() * 6)) * gib, 1) }
            else { (vram, gpus) = (4 * gib, 2) }
            out.append(NewJob(name: "\(name)-\(i)", kind: "sleep", spec: .object(["duration_s": .number(duration)]),
                              vramBytes: vram, gpus: gpus, maxAttempts: maxAttempts))
        }
        return BatchPlan(name: name, jobs: out)
    }
}
