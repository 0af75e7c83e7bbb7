import ArgumentParser
import Foundation
import HydraCore
import HydraTestSupport

/// `hydra-dev bench`: micro-benchmarks of the coordinator's hot paths.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the coordinator's hot paths (build with -c release).",
        subcommands: [BenchRouterCommand.self, BenchConsoleCommand.self, BenchE2ECommand.self, BenchGapCommand.self, BenchDepsCommand.self])
}

/// `hydra-dev bench router`: one full placement pass over a large synthetic backlog.
struct BenchRouterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "router",
        abstract: "Time one full placement pass: N pending jobs on G GPUs.",
        discussion: """
        Builds a synthetic cluster (G GPUs, 4 per node unless --gpus-per-node says otherwise, a mix of 5090/4090/5070 Ti/3060 with
        services spread over the nodes), half its GPUs busy, and N pending jobs of mixed kinds,
        sizes, gangs and priorities; then times Router.place. Prints the median and best of
        --repeat passes and placements per second (jobs decided per second). --upcoming adds
        that many more such jobs as not yet ready (their work counts, they are never placed),
        each waiting on one pending job (so the pass also ranks, and tests as pressed, the work they hold back).
        """)

    @Option(help: "Pending jobs.") var pending = 10_000
    @Option(help: "GPUs in the synthetic cluster.") var gpus = 64
    @Option(name: .customLong("gpus-per-node"), help: "GPUs per node (3 exercises the 2-GPU gang ring).") var gpusPerNode = 4
    @Option(help: "Jobs waiting on dependencies that the pass weighs but does not place.") var upcoming = 0
    @Option(help: "Passes to time.") var `repeat` = 7
    @Option(help: "Placement policy.") var policy = "hydra"
    @Flag(name: .customLong("no-gang-ring"), help: "Turn the 2-GPU gang ring off (as hydra coordinator --no-gang-ring).") var noGangRing = false
    @Flag(name: .customLong("no-gated-work"), help: "Rank by the longest chain only, not by the work a class holds back (RouterPolicy.ranksGatedWork).") var noGatedWork = false
    @Flag(name: .customLong("no-held-back"), help: "The pressed test counts no work upcoming jobs hold back (RouterPolicy.pressesHeldBackWork).") var noHeldBack = false
    @Flag(name: .customLong("no-tail-first"), help: "Keep the plain longest-path order among jobs that can use the same GPUs (RouterPolicy.ordersTailFirst).") var noTailFirst = false
    @Flag(help: "Give the pass learned runtimes and VRAM peaks for every kind and model, as a coordinator with history has.") var learned = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard pending >= 1, pending <= 1_000_000 else { throw ValidationError("--pending must be between 1 and 1000000") }
        guard upcoming >= 0, upcoming <= 1_000_000 else { throw ValidationError("--upcoming must be between 0 and 1000000") }
        guard gpus >= 1, gpus <= 10_000 else { throw ValidationError("--gpus must be between 1 and 10000") }
        guard gpusPerNode >= 1, gpusPerNode <= 64 else { throw ValidationError("--gpus-per-node must be between 1 and 64") }
        guard `repeat` >= 1 else { throw ValidationError("--repeat must be at least 1") }
        guard RouterPolicy.named(policy) != nil else { throw ValidationError("unknown policy '\(policy)'") }
    }

    func run() throws {
        let (snapshot, all, now) = RouterBenchmark.scenario(pending: pending + upcoming, gpus: gpus, perNode: gpusPerNode)
        let jobs = Array(all.prefix(pending))
        var later = Array(all.dropFirst(pending))
        if !jobs.isEmpty { for i in later.indices { later[i].waitsOn = [jobs[(i * 7) % jobs.count].id] } }
        var p = RouterPolicy.named(policy)!
        if noGangRing { p.gangRingMinGain = 0 }
        if noGatedWork { p.ranksGatedWork = false }
        if noHeldBack { p.pressesHeldBackWork = false }
        if noTailFirst { p.ordersTailFirst = false }
        let stats = learned ? RouterBenchmark.learnedStats(snapshot, all) : .empty
        var times: [Double] = []
        var result = PlacementResult()
        for _ in 0..<`repeat` {
            let start = DispatchTime.now().uptimeNanoseconds
            result = Router.place(pending: jobs, upcoming: later, snapshot: snapshot, stats: stats, now: now, policy: p)
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        times.sort()
        let median = times[times.count / 2], best = times[0]
        let rate = Double(pending) / (median / 1000)
        if json {
            struct Out: Encodable {
                var pending: Int, upcoming: Int, gpus: Int, learned: Bool, passes: Int, median_ms: Double, best_ms: Double
                var placements_per_s: Double, placed: Int, left_pending: Int
            }
            print(try JSONCoding.encodeString(Out(pending: pending, upcoming: upcoming, gpus: gpus, learned: learned, passes: times.count, median_ms: median, best_ms: best,
                                                  placements_per_s: rate, placed: result.assignments.count,
                                                  left_pending: result.pending.count), pretty: true))
            return
        }
        print(String(format: "router pass: %d pending, %d upcoming, %d GPUs, policy %@%@: median %.2f ms, best %.2f ms over %d passes",
                     pending, upcoming, gpus, policy, learned ? ", learned statistics" : "", median, best, times.count))
        print(String(format: "%.0f placement decisions/s; %d placed now, %d left pending with a reason",
                     rate, result.assignments.count, result.pending.count))
    }
}
