import Foundation

/// The work that waits on each job: the longest chain of jobs behind it, each at its own runtime
/// as `JobOrdering` measures a job (a fixed duration, a CPU job's base runtime, a GPU job's base
/// runtime on the reference GPU), the job itself not counted. `hydra` orders a tier by own runtime
/// + this tail, so the heads of long pipelines start first. The coordinator stores it with each
/// job when the batch is submitted (`jobs.tail_s`: dependencies stay inside a batch); the
/// simulator computes it the same way, so what the sweep measures is what the coordinator does.
public enum DependencyTails {
    /// A job's own length on the ordering's scale.
    public static func ownS(kind: String, spec: JSONValue, cpuOnly: Bool) -> Double {
        JobOrdering.pathS(durationS: KindDefaults.seconds(spec["duration_s"]),
                          baseS: KindDefaults.seconds(spec["base_runtime_s"]) ?? KindDefaults.baseRuntimeS(kind: kind), cpuOnly: cpuOnly, tailS: 0)
    }

    /// `dependsOn[j]`: the indices job j waits for (out of range and self references are ignored).
    /// From the jobs nothing waits on towards their dependencies (Kahn's order, reversed), so each
    /// dependency edge is read twice and a 10 000 × 10 000 `after:` batch stays linear in its edges.
    /// A job on a cycle (batch files reject them) keeps what its dependents off the cycle gave.
    public static func compute(dependsOn: [[Int]], ownS: [Double]) -> [Double] {
        let n = ownS.count
        var waitedOnBy = [Int](repeating: 0, count: n)
        for (j, ds) in dependsOn.enumerated() where j < n {
            for d in ds where d >= 0 && d < n && d != j { waitedOnBy[d] += 1 }
        }
        var tail = [Double](repeating: 0, count: n)
        var done = (0..<n).filter { waitedOnBy[$0] == 0 }
        var next = 0
        while next < done.count {
            let j = done[next]
            next += 1
            guard j < dependsOn.count else { continue }
            let through = ownS[j] + tail[j]
            for d in dependsOn[j] where d >= 0 && d < n && d != j {
                tail[d] = max(tail[d], through)
                waitedOnBy[d] -= 1
                if waitedOnBy[d] == 0 { done.append(d) }
            }
        }
        return tail
    }
}
