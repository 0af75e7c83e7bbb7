import Foundation
import HydraCore

/// A signed heartbeat whose numbers no real node reports. The signature proves only which node
/// sent it: a compromised agent, or a genuine one reading absurd values from nvidia-smi, can sign
/// anything. Refused at decode, once per heartbeat body, so the placement pass never meets a
/// value its arithmetic was not written for and PostgreSQL never a number it cannot store.
public struct ImplausibleHeartbeat: Error, Sendable, Equatable, CustomStringConvertible {
    /// The field, with its place (`inventory.gpus[0].memory_used_bytes`).
    public var field: String
    public var problem: String
    /// The `reason` label of `hydra_messages_rejected_total` and on the dead-letter stream.
    public static let reason = "implausible"

    public var description: String { "implausible heartbeat: \(field) \(problem)" }
}

extension HeartbeatMessage {
    /// No GPU has a pebibyte: anything above is a misreading, and keeping every byte count below
    /// 2^50 leaves room for sums of thousands of them in 64 bits.
    public static let maxBytes: UInt64 = 1 << 50
    /// GPUs and compute processes per node; far above any machine, far below what could overflow a sum.
    public static let maxGPUs = 1024
    public static let maxProcesses = 4096
    /// The agent's `--prefetch` goes up to 100 000; ten times that is still no real read-ahead.
    public static let maxCapacity = 1_000_000
    /// Attempts are `integer` columns in PostgreSQL.
    public static let maxAttempt = Int(Int32.max)
    /// Command templates, elements per template, and bytes per element: an allowlist is typed by
    /// people, and every placement pass matches job argvs against it.
    public static let maxCommandTemplates = 1024
    public static let maxCommandElements = 256
    public static let maxCommandElementBytes = 4096

    /// Throws `ImplausibleHeartbeat` naming the first field out of bounds.
    public func checkPlausible() throws(ImplausibleHeartbeat) {
        func refuse(_ field: String, _ problem: String) -> ImplausibleHeartbeat { ImplausibleHeartbeat(field: field, problem: problem) }
        guard (0...Self.maxCapacity).contains(capacity) else { throw refuse("capacity", "\(capacity) is outside 0…\(Self.maxCapacity)") }
        guard inventory.gpus.count <= Self.maxGPUs else { throw refuse("inventory.gpus", "lists \(inventory.gpus.count) GPUs (at most \(Self.maxGPUs))") }
        guard inventory.processes.count <= Self.maxProcesses else {
            throw refuse("inventory.processes", "lists \(inventory.processes.count) processes (at most \(Self.maxProcesses))")
        }
        func bytes(_ v: UInt64?, _ field: @autoclosure () -> String) throws(ImplausibleHeartbeat) {
            if let v, v > Self.maxBytes { throw refuse(field(), "\(v) bytes is above 1 PiB") }
        }
        for (i, g) in inventory.gpus.enumerated() {
            let at = "inventory.gpus[\(i)]"
            // The router indexes the cluster file's GPUs with it.
            if let idx = g.index, !(0..<Self.maxGPUs).contains(idx) { throw refuse("\(at).index", "\(idx) is outside 0…\(Self.maxGPUs - 1)") }
            try bytes(g.memoryTotalBytes, "\(at).memory_total_bytes")
            try bytes(g.memoryUsedBytes, "\(at).memory_used_bytes")
            try bytes(g.memoryFreeBytes, "\(at).memory_free_bytes")
            // A little above total is a driver's rounding (and the pass clamps it); refusing it would
            // make a working node look silent and lose its running jobs. Far above is a misreading.
            if let used = g.memoryUsedBytes, let total = g.memoryTotalBytes, used > total + total / 4 + (1 << 30) {
                throw refuse("\(at).memory_used_bytes", "\(used) is far above memory_total_bytes \(total)")
            }
        }
        for (i, p) in inventory.processes.enumerated() {
            try bytes(p.usedMemoryBytes, "inventory.processes[\(i)].used_memory_bytes")
        }
        if let a = sampleAgeS, !(a >= 0 && a <= 1e9) { throw refuse("sample_age_s", "\(a) is outside 0…1e9 seconds") }
        for (i, t) in (commands ?? []).enumerated() {
            guard i < Self.maxCommandTemplates else { throw refuse("commands", "lists \(commands?.count ?? 0) templates (at most \(Self.maxCommandTemplates))") }
            guard !t.isEmpty, t.count <= Self.maxCommandElements else {
                throw refuse("commands[\(i)]", "has \(t.count) elements (1…\(Self.maxCommandElements))")
            }
            if let j = t.firstIndex(where: { $0.utf8.count > Self.maxCommandElementBytes }) {
                throw refuse("commands[\(i)][\(j)]", "is longer than \(Self.maxCommandElementBytes) bytes")
            }
        }
        for (i, h) in held.enumerated() {
            guard (1...Self.maxAttempt).contains(h.attempt) else { throw refuse("held[\(i)].attempt", "\(h.attempt) is outside 1…\(Self.maxAttempt)") }
            // The agent lists the ids of the envelopes it took, which it accepts only in this form.
            guard JobID.isCanonical(h.id) else { throw refuse("held[\(i)].id", "is not a job id (a lower-case UUID)") }
        }
    }
}
