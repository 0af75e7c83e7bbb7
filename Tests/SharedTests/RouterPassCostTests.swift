import XCTest
@testable import HydraCore
import HydraTestSupport

/// What the pass's cheaper paths must keep equal to the plain ones (docs/router.md, "Bench": the
/// pass-cost round took about 30 % of a pass's instructions out without changing a decision).
final class RouterPassCostTests: XCTestCase {
    /// `lowerASCII` skips `lowercased()` for text that has no capital and no byte above 127;
    /// whatever it is given, it must answer as `lowercased()` does. Generated strings mix
    /// capitals, non-ASCII letters that change (İ, Σ, É) or grow (ß stays, ﬁ ligature), NUL and
    /// the byte 0x7f, and lengths on both sides of the 15 bytes a small string holds inline.
    func testLowerASCIIAnswersAsLowercasedOnGeneratedText() {
        let alphabet: [String] = ["a", "z", "A", "Z", "0", "-", ".", " ", "\u{0}", "\u{7f}", "\u{1}", "é", "É", "İ", "Σ", "ß", "ﬁ", "🦊", "@", "[", "`", "{"]
        var rng = SplitMix64(seed: 7)
        var checked = 0
        for _ in 0..<4000 {
            let length = Int(rng.next() % 40)
            var s = ""
            for _ in 0..<length { s += alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            XCTAssertEqual(lowerASCII(s), s.lowercased(), "\(s.debugDescription)")
            XCTAssertEqual(isLowerASCII(s), s.utf8.allSatisfy { !($0 >= 65 && $0 <= 90) && $0 < 128 }, "\(s.debugDescription)")
            checked += 1
        }
        // A string not stored as contiguous UTF-8 (bridged from an NSString) takes the slow path.
        let bridged = String(NSString(string: "Qwen2.5-7B-Instruct-Über"))
        XCTAssertEqual(lowerASCII(bridged), bridged.lowercased())
        XCTAssertEqual(checked, 4000)
    }

    /// Learned statistics are keyed by kind, model and GPU model as separate fields. The old
    /// joined key (`kind\u{1}model\u{1}gpu`) let a model name holding the separator read another
    /// kind's numbers; a model key is free text from a job's spec.
    func testLearnedStatisticsDoNotMixKindsWhoseJoinedNamesCollide() {
        let gpu = "NVIDIA GeForce RTX 3060"
        let stats = RuntimeStats(rows: [
            RuntimeStatsRow(kind: "image\u{1}flux", modelKey: "", gpuModel: gpu, n: 10, meanS: 5, p95S: 6, peakVRAMP95Bytes: 3 * ByteSize.GiB),
        ])
        XCTAssertEqual(stats.meanRuntime(kind: "image\u{1}flux", modelKey: "", gpuModel: gpu), 5)
        XCTAssertNil(stats.meanRuntime(kind: "image", modelKey: "flux\u{1}", gpuModel: gpu))
        XCTAssertNil(stats.peakVRAM(kind: "image", modelKey: "flux\u{1}"))
        XCTAssertEqual(stats.peakVRAM(kind: "image\u{1}flux", modelKey: ""), 3 * ByteSize.GiB)
    }

    /// The single-GPU loop prices a GPU as a bare `OneGPU`, not a `Candidate`. For every policy's
    /// scorers, every GPU of a busy synthetic cluster, with and without a scarce-GPU charge, fitting
    /// now or not, urgent or not, both must cost the same.
    func testAGPUCostsTheSameAsOneGPUAndAsACandidate() {
        let (snapshot, jobs, now) = RouterBenchmark.scenario(pending: 120, gpus: 12, perNode: 3)
        var rng = SplitMix64(seed: 11)
        var compared = 0
        for policy in [RouterPolicy.hydra, RouterPolicy(name: .leastLoaded), RouterPolicy(name: .random)] {
            var state = PassState(snapshot: snapshot, stats: .empty, now: now, policy: policy)
            for s in state.gpus.indices { state.contested[s] = Double(rng.next() % 600) }
            let scorers = ScorerSet(policy)
            for (j, job) in jobs.enumerated() {
                var urgentJob = job
                if j % 3 == 0 { urgentJob.priority = policy.urgentPriority }
                let d = JobDemand(job: urgentJob, stats: .empty, policy: policy)
                state.ownChargeBase = j % 4 == 0 ? Double(rng.next() % 300) : 0
                state.ownChargeFixed = j % 5 == 0 ? Double(rng.next() % 30) : 0
                let key = SplitMix64.stableHash(job.id)
                for s in state.gpus.indices {
                    let start = Double(rng.next() % 900), runtime = 1 + Double(rng.next() % 300)
                    for fits in [true, false] {
                        let one = OneGPU(slot: s, startS: start, runtimeS: runtime, fitsNow: fits)
                        let candidate = Candidate(node: state.gpus[s].node, first: s, startS: start, runtimeS: runtime,
                                                  fitsNow: fits, predictable: true)
                        XCTAssertEqual(scorers.cost(one, demand: d, jobKey: key, state: state),
                                       scorers.cost(candidate, demand: d, jobKey: key, state: state),
                                       "\(policy.name) job \(job.id) slot \(s) fits \(fits)")
                        compared += 1
                    }
                }
            }
        }
        XCTAssertEqual(compared, 3 * 120 * 12 * 2)
    }

    /// `hydra-dev bench router --learned` gives the pass a coordinator's statistics: every kind and
    /// model of the scenario on every GPU model, used by the placements it makes.
    func testTheBenchmarksLearnedStatisticsAreWhatThePassUses() {
        let (snapshot, jobs, now) = RouterBenchmark.scenario(pending: 400, gpus: 16)
        let stats = RouterBenchmark.learnedStats(snapshot, jobs)
        XCTAssertFalse(stats.isEmpty)
        let result = Router.place(pending: jobs, snapshot: snapshot, stats: stats, now: now)
        let byID = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0) })
        let models = Dictionary(snapshot.nodes.flatMap { n in n.gpus.map { ("\(n.name)/\($0.uuid)", $0.model) } }, uniquingKeysWith: { a, _ in a })
        var learnedSingles = 0
        for a in result.assignments where a.gpuUUIDs.count == 1 {
            let job = byID[a.jobID]!
            let model = models["\(a.node)/\(a.gpuUUIDs[0])"]!
            XCTAssertEqual(a.expectedRuntimeS, stats.meanRuntime(kind: job.kind, modelKey: job.modelKey, gpuModel: model), a.jobID)
            learnedSingles += 1
        }
        XCTAssertGreaterThan(learnedSingles, 0)
    }
}
