import Foundation

/// 2-GPU gangs in a ring on a node with an odd number of GPUs.
///
/// A gang moves at its slowest member's pace, and on three GPUs only one gang at a time gets
/// two of them alone: the third GPU waits. Three gangs on the three pairs of the ring (0+1,
/// 1+2, 2+0) each share both their GPUs with one other gang and move at half their pace, so
/// together they do 1.5 gangs' work at once instead of 1 — when the pairs are about as fast as
/// the best pair. On generated seed 91 the LLM expansions could only run on a node with an RTX
/// 3060, a 4090 and a 3060 (every pair at the 3060's pace): one at a time they ended the night
/// at 1.49 × the bound, in a ring at 1.12.
///
/// The ring is not always worth it: a fast GPU in it is spent at a slow partner's pace (an H100
/// beside two L4s), and other jobs could have used it alone. So a node's ring is used only when
/// (with each GPU's configured weight) the ring's gangs at half rate outpace the best set of
/// disjoint pairs by `RouterPolicy.gangRingMinGain` and use at least `gangRingMinUse` of the
/// node's weight.
enum GangRing {
    /// The ring's order over `weights` (indices), or nil when the node has no ring worth using.
    /// Brute force: nodes have at most a handful of GPUs; above 7 (or an even count) there is none.
    static func cycle(weights w: [Double], minGain: Double, minUse: Double) -> [Int]? {
        let m = w.count
        guard m >= 3, m % 2 == 1, m <= 7, minGain > 0 else { return nil }
        func pace(_ i: Int, _ j: Int) -> Double { min(w[i], w[j]) }
        // The most pace disjoint pairs give (one GPU is always left over on an odd node).
        func matching(_ left: [Int]) -> Double {
            guard left.count >= 2 else { return 0 }
            var best = matching(Array(left.dropFirst()))   // the first one left over
            for t in 1..<left.count {
                var rest = left
                rest.remove(at: t); rest.removeFirst()
                best = max(best, pace(left[0], left[t]) + matching(rest))
            }
            return best
        }
        let pairs = matching(Array(0..<m))
        var best: [Int] = [], bestPace = 0.0
        func extend(_ path: [Int], _ left: [Int]) {
            guard !left.isEmpty else {
                var p = 0.0
                for i in 0..<m { p += pace(path[i], path[(i + 1) % m]) }
                if p > bestPace { bestPace = p; best = path }
                return
            }
            for (i, x) in left.enumerated() {
                var l = left
                l.remove(at: i)
                extend(path + [x], l)
            }
        }
        extend([0], Array(1..<m))
        // Every gang of the ring moves at half its pair's pace.
        guard pairs > 0, bestPace / 2 >= minGain * pairs, bestPace >= minUse * w.reduce(0, +) else { return nil }
        return best
    }

    /// Whether slots `a` and `b` are neighbours in `ring` (slots in ring order).
    static func neighbours(_ a: Int, _ b: Int, in ring: [Int]) -> Bool {
        let m = ring.count
        for i in 0..<m where ring[i] == a { return ring[(i + 1) % m] == b || ring[(i + m - 1) % m] == b }
        return false
    }
}
