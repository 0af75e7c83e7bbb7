import PropertyBased
import Testing
@testable import HydraCore

/// The max flow against the min cut found by trying every cut: on small random graphs the two
/// must agree (max-flow min-cut theorem), and `reachable` must name a cut of that capacity.
struct MaxFlowTests {
    @Test func maxFlowEqualsTheMinimumCutOnRandomGraphs() async {
        await propertyCheck(count: 300, input: Gen.uint64()) { seed in
            var r = SplitMix64(seed: seed)
            let n = Int(r.next() % 6) + 2
            var edges: [(Int, Int, Int64)] = []
            for _ in 0..<Int(r.next() % 16) {
                let u = Int(r.next() % UInt64(n)), v = Int(r.next() % UInt64(n))
                guard u != v else { continue }
                edges.append((u, v, r.next() % 5 == 0 ? MaxFlow.unbounded : Int64(r.next() % 20)))
            }
            var g = MaxFlow(nodes: n)
            for (u, v, c) in edges { g.addEdge(u, v, c) }
            let flow = g.run(from: 0, to: n - 1)
            func cut(_ inSource: (Int) -> Bool) -> Int64 {
                edges.reduce(Int64(0)) { acc, e in inSource(e.0) && !inSource(e.1) ? min(MaxFlow.unbounded, acc + e.2) : acc }
            }
            var best = MaxFlow.unbounded
            // Every set holding the source and not the sink.
            for mask in 0..<(1 << (n - 2)) {
                best = min(best, cut { $0 == 0 || ($0 < n - 1 && $0 > 0 && mask & (1 << ($0 - 1)) != 0) })
            }
            #expect(flow == best, "flow \(flow), min cut \(best), edges \(edges)")
            // An unbounded path leaves residual capacity on it; the cut below is for finite flows.
            guard flow < MaxFlow.unbounded else { return }
            let side = g.reachable(from: 0)
            #expect(!side[n - 1] && cut { side[$0] } == flow, "the residual graph's cut is not minimal: \(edges)")
        }
    }

    @Test func aLimitStopsThePushEarly() {
        var g = MaxFlow(nodes: 2)
        g.addEdge(0, 1, 100)
        #expect(g.run(from: 0, to: 1, limit: 30) == 30)
    }
}
