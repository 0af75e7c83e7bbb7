import Foundation

/// Gate thresholds; nil disables a gate.
public struct GateThresholds: Sendable, Equatable, Codable {
    /// LAION aesthetic (≈1–10).
    public var aesthetic: Double? = 6.5
    /// MUSIQ (KonIQ scale, ≈0–100).
    public var technical: Double? = 70
    /// Cosine similarity to the collection's reference face; only for collections with a reference.
    public var faceSimilarity: Double? = 0.7
    /// An image without a detectable face passes the face gate (default: it fails it).
    public var passWithoutFace: Bool = false

    public init(aesthetic: Double? = 6.5, technical: Double? = 70, faceSimilarity: Double? = 0.7, passWithoutFace: Bool = false) {
        self.aesthetic = aesthetic; self.technical = technical; self.faceSimilarity = faceSimilarity; self.passWithoutFace = passWithoutFace
    }
}

public enum Gate: String, Sendable, Codable, CaseIterable, Comparable {
    case aesthetic, technical, faceSimilarity = "face_similarity"
    public static func < (a: Gate, b: Gate) -> Bool { allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)! }
}

/// What the scorer said about one image (a `score` job's output).
public struct ImageScores: Sendable, Equatable, Codable {
    public var aesthetic: Double?
    public var musiq: Double?
    public var faceSimilarity: Double?
    /// `ok`, `no_face_in_image`, `not_requested`, …
    public var faceStatus: String?

    public init(aesthetic: Double?, musiq: Double?, faceSimilarity: Double?, faceStatus: String? = nil) {
        self.aesthetic = aesthetic; self.musiq = musiq; self.faceSimilarity = faceSimilarity; self.faceStatus = faceStatus
    }

    /// From a score job's `result.output`.
    public init(output: JSONValue) {
        aesthetic = output["aesthetic"]?.doubleValue
        musiq = output["musiq"]?.doubleValue
        faceSimilarity = output["face_similarity"]?.doubleValue
        faceStatus = output["face"]?["status"]?.stringValue
    }
}

public struct GateVerdict: Sendable, Equatable, Codable {
    public var passed: Bool { failed.isEmpty }
    /// Gates the image failed, in gate order.
    public var failed: [Gate]
    public var reasons: [String]
}

/// Pass/fail on scores: pure, so thresholds can be tried on old scores.
public enum QualityGate {
    public static func evaluate(_ s: ImageScores, _ t: GateThresholds, hasReference: Bool) -> GateVerdict {
        var failed: [Gate] = [], reasons: [String] = []
        if let min = t.aesthetic {
            if let v = s.aesthetic {
                if v < min { failed.append(.aesthetic); reasons.append(String(format: "aesthetic %.2f < %.2f", v, min)) }
            } else { failed.append(.aesthetic); reasons.append("no aesthetic score") }
        }
        if let min = t.technical {
            if let v = s.musiq {
                if v < min { failed.append(.technical); reasons.append(String(format: "technical (MUSIQ) %.1f < %.1f", v, min)) }
            } else { failed.append(.technical); reasons.append("no technical score") }
        }
        if let min = t.faceSimilarity, hasReference {
            if let v = s.faceSimilarity {
                if v < min { failed.append(.faceSimilarity); reasons.append(String(format: "face similarity %.2f < %.2f", v, min)) }
            } else if !t.passWithoutFace {
                failed.append(.faceSimilarity); reasons.append("no face similarity (\(s.faceStatus ?? "no score"))")
            }
        }
        return GateVerdict(failed: failed, reasons: reasons)
    }

    /// Per gate: how many images it rejected at all, and how many it alone rejected
    /// (every other gate passed them) — the number that calibrates a threshold.
    public static func rejections(_ verdicts: [GateVerdict]) -> [Gate: (any: Int, alone: Int)] {
        var out: [Gate: (any: Int, alone: Int)] = [:]
        for g in Gate.allCases { out[g] = (0, 0) }
        for v in verdicts {
            for g in v.failed { out[g]!.any += 1 }
            if v.failed.count == 1 { out[v.failed[0]]!.alone += 1 }
        }
        return out
    }
}
