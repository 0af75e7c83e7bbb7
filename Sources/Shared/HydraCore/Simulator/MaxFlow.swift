/// Maximum flow on integer capacities (Dinic: BFS levels, then blocking flows along them).
///
/// Integer capacities keep the answer exact, so a caller that rounds its demands down and its
/// capacities up gets a test that errs only towards "feasible" — what a lower bound needs.
struct MaxFlow {
    static let unbounded = Int64.max / 4

    private var to: [Int32] = []
    private var cap: [Int64] = []
    private var adjacency: [[Int32]]

    init(nodes: Int) { adjacency = Array(repeating: [], count: nodes) }

    mutating func addNode() -> Int { adjacency.append([]); return adjacency.count - 1 }

    mutating func addEdge(_ u: Int, _ v: Int, _ c: Int64) {
        precondition(c >= 0, "negative capacity")
        adjacency[u].append(Int32(to.count)); to.append(Int32(v)); cap.append(c)
        adjacency[v].append(Int32(to.count)); to.append(Int32(u)); cap.append(0)
    }

    /// Pushes as much as it can from `source` to `sink` (stopping early once `limit` has gone)
    /// and returns the amount. The residual graph stays behind for `reachable`.
    mutating func run(from source: Int, to sink: Int, limit: Int64 = MaxFlow.unbounded) -> Int64 {
        guard source != sink else { return 0 }
        var total: Int64 = 0
        var level = [Int32](repeating: -1, count: adjacency.count)
        var next = [Int](repeating: 0, count: adjacency.count)
        var queue = [Int32](); queue.reserveCapacity(adjacency.count)
        while total < limit {
            for i in level.indices { level[i] = -1 }
            level[source] = 0
            queue.removeAll(keepingCapacity: true); queue.append(Int32(source))
            var head = 0
            while head < queue.count {
                let u = Int(queue[head]); head += 1
                for e in adjacency[u] where cap[Int(e)] > 0 && level[Int(to[Int(e)])] < 0 {
                    level[Int(to[Int(e)])] = level[u] + 1; queue.append(to[Int(e)])
                }
            }
            guard level[sink] >= 0 else { break }
            for i in next.indices { next[i] = 0 }
            while total < limit {
                let pushed = push(source, sink, limit - total, &level, &next)
                if pushed == 0 { break }
                total += pushed
            }
        }
        return total
    }

    /// One augmenting path along the levels. Recursion depth is at most the number of levels,
    /// which the bound's layered graphs keep at five.
    private mutating func push(_ u: Int, _ sink: Int, _ amount: Int64, _ level: inout [Int32], _ next: inout [Int]) -> Int64 {
        if u == sink { return amount }
        while next[u] < adjacency[u].count {
            let e = Int(adjacency[u][next[u]])
            let v = Int(to[e])
            if cap[e] > 0, level[v] == level[u] + 1 {
                let got = push(v, sink, min(amount, cap[e]), &level, &next)
                if got > 0 {
                    cap[e] -= got; cap[e ^ 1] += got
                    return got
                }
            }
            next[u] += 1
        }
        return 0
    }

    /// The nodes still reachable from `source` in the residual graph after `run`: the source
    /// side of a minimum cut.
    func reachable(from source: Int) -> [Bool] {
        var seen = [Bool](repeating: false, count: adjacency.count)
        seen[source] = true
        var stack = [source]
        while let u = stack.popLast() {
            for e in adjacency[u] where cap[Int(e)] > 0 && !seen[Int(to[Int(e)])] {
                seen[Int(to[Int(e)])] = true; stack.append(Int(to[Int(e)]))
            }
        }
        return seen
    }
}
