import Foundation
import HydraCore
import HydraStore

/// The night's owner of resident services: each pass it asks `ResidentPlan.decide` whether a
/// resident's time is over (its stages done, no active job calling it) or whether a job needs
/// it back, makes the call through `ResidentControlling`, and reports what it did. It assumes
/// every resident is loaded when the night starts. A failed call is retried no sooner than
/// `retryAfterS` later.
public final class ResidentKeeper {
    public struct Event: Sendable, Equatable {
        public var resident: String
        /// `unload`, `load`, `unload_failed`, `load_failed`.
        public var action: String
        public var elapsedS: Double
        public var detail: String
    }

    public let residents: [ResidentService]
    public let releases: [ResidentRelease]
    let control: any ResidentControlling
    public let retryAfterS: Double
    public private(set) var loaded: Set<String>
    public private(set) var events: [Event] = []
    private var failedAt: [String: Double] = [:]
    /// Unloaded by this night (what `restoreAll` loads back).
    public private(set) var unloadedHere: Set<String> = []

    public init(residents: [ResidentService], releases: [ResidentRelease], control: any ResidentControlling, retryAfterS: Double = 60) {
        self.residents = residents; self.releases = releases; self.control = control; self.retryAfterS = retryAfterS
        loaded = Set(residents.map(\.name))
    }

    /// Asks each service whether its model is loaded (a night that starts after a crashed one may
    /// find the LLM unloaded): those that say no are loaded again when a job calls them.
    @discardableResult
    public func probe() -> [String] {
        let off = residents.filter { control.isLoaded($0) == false }.map(\.name)
        loaded.subtract(off)
        return off
    }

    /// One pass; returns the events of this pass (also appended to `events`).
    @discardableResult
    public func tick(stagesOpen: Set<String>, activeNeeds: [(service: String?, model: String?)], elapsedS: Double) -> [Event] {
        let byName = Dictionary(residents.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var out: [Event] = []
        for a in ResidentPlan.decide(residents: residents, releases: releases, loaded: loaded, stagesOpen: stagesOpen,
                                     activeNeeds: activeNeeds, elapsedS: elapsedS) {
            let (name, reason, unloading): (String, String, Bool) = {
                switch a {
                case .unload(let n, let r): return (n, r, true)
                case .load(let n, let r): return (n, r, false)
                }
            }()
            guard let r = byName[name] else { continue }
            if let t = failedAt[name], elapsedS - t < retryAfterS { continue }
            do {
                let did = try unloading ? control.unload(r) : control.load(r)
                if unloading { loaded.remove(name); unloadedHere.insert(name) } else { loaded.insert(name) }
                failedAt[name] = nil
                out.append(Event(resident: name, action: unloading ? "unload" : "load", elapsedS: elapsedS, detail: "\(did): \(reason)"))
            } catch {
                failedAt[name] = elapsedS
                out.append(Event(resident: name, action: unloading ? "unload_failed" : "load_failed", elapsedS: elapsedS, detail: "\(error) (\(reason))"))
            }
        }
        events += out
        return out
    }

    /// At the night's end: loads back what this night unloaded (and is still unloaded), so the day
    /// starts as it was.
    @discardableResult
    public func restoreAll(elapsedS: Double) -> [Event] {
        var out: [Event] = []
        for r in residents where !loaded.contains(r.name) && unloadedHere.contains(r.name) {
            do {
                let did = try control.load(r)
                loaded.insert(r.name)
                out.append(Event(resident: r.name, action: "load", elapsedS: elapsedS, detail: "\(did): the night is over"))
            } catch {
                out.append(Event(resident: r.name, action: "load_failed", elapsedS: elapsedS, detail: "\(error) (the night is over)"))
            }
        }
        events += out
        return out
    }

    /// The night's stages that may still submit or run jobs, from the runner's rows: expansion
    /// while a task expands (or waits to be resubmitted), images while a task expands or an image
    /// generates, scoring while an image is not scored.
    public static func openStages(tasks: [TaskRecord], images: [ImageRecord]) -> Set<String> {
        var open = Set<String>()
        if tasks.contains(where: { $0.phase == .expanding || $0.phase == .carried }) { open.formUnion(["expand", "image", "score"]) }
        if images.contains(where: { $0.phase == .generating || $0.phase == .carried }) { open.formUnion(["image", "score"]) }
        if images.contains(where: { $0.phase == .scoring }) { open.insert("score") }
        return open
    }
}

extension PipelineStore {
    /// (service, model) of every job on the cluster that is not finished — the pipeline's and
    /// everyone else's — with the service as the router reads it (constraint, spec, endpoint,
    /// else the kind's default).
    public func activeServiceNeeds() throws -> [(service: String?, model: String?)] {
        let rows = try db.exec("""
            SELECT kind, placement_constraints->>'service' AS cservice, spec->>'service' AS service,
                   spec->>'endpoint' AS endpoint, spec->>'model' AS model
            FROM jobs WHERE state IN ('pending', 'placed', 'dispatched', 'running', 'retry_wait')
            GROUP BY 1, 2, 3, 4, 5
            """).all
        return rows.map { r in
            let endpoint = r["endpoint"].map { $0.hasPrefix("openai.") ? "tabbyapi" : $0 }
            let service = r["cservice"] ?? r["service"] ?? endpoint ?? KindDefaults.services(kind: r["kind"] ?? "").first
            return (service, r["model"])
        }
    }
}
