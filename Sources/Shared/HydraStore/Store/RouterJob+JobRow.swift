import Foundation
import HydraCore

extension RouterJob {
    /// A stored pending job as the router sees it (the next attempt; the last failure drives OOM escalation).
    /// It ages from when it became ready: a job after others, from when they were first seen done.
    public init(row j: JobRow) {
        self.init(id: j.id, batchID: j.batchID, kind: j.kind, spec: j.spec, vramRequestBytes: j.vramBytes == 0 ? nil : j.vramBytes,
                  gpusRequested: j.gpus, priority: j.priority, submittedAt: Date(timeIntervalSince1970: j.readyAt ?? j.submittedAt),
                  constraints: j.constraints, attempt: j.attempt + 1, lastFailure: j.failureClass.flatMap(FailureClass.init(rawValue:)),
                  lastReservedBytes: j.reservedBytes, tailS: j.tailS)
        // Read only where the job is upcoming (`GatedWork`).
        waitsOn = j.waitsOn
    }
}
