import Foundation
import HydraStore

/// An image's quality-gate scores as the pipeline recorded them (quality_metrics).
public struct ImageGateScores: Sendable, Equatable {
    public var path: String
    public var state: String
    public var collection: String
    public var aesthetic: Double?
    public var musiq: Double?
    public var faceSimilarity: Double?
    public var failedGates: [String]
    public init(path: String, state: String, collection: String = "", aesthetic: Double?, musiq: Double?, faceSimilarity: Double?, failedGates: [String]) {
        self.path = path; self.state = state; self.collection = collection; self.aesthetic = aesthetic; self.musiq = musiq
        self.faceSimilarity = faceSimilarity; self.failedGates = failedGates
    }
}

extension JobStore {
    static let gateColumns = """
        coalesce(asset_path, source_path) AS path, state, collection, aesthetic, musiq, face_similarity, failed_gates
        """

    static func gateScores(_ r: PGRow) -> ImageGateScores {
        ImageGateScores(path: r["path"] ?? "", state: r["state"] ?? "", collection: r["collection"] ?? "", aesthetic: r.double("aesthetic"),
                        musiq: r.double("musiq"), faceSimilarity: r.double("face_similarity"), failedGates: r.textArray("failed_gates"))
    }

    /// Scores of the images at these paths (where they are now, or where they were generated), by path.
    public func consoleImageScores(paths: [String]) throws -> [String: ImageGateScores] {
        if paths.isEmpty { return [:] }
        var out: [String: ImageGateScores] = [:]
        for r in try db.exec("""
            SELECT \(Self.gateColumns), asset_path, source_path FROM quality_metrics
            WHERE asset_path = ANY($1::text[]) OR source_path = ANY($1::text[])
            """, [PGConnection.textArray(paths)]).all {
            let s = Self.gateScores(r)
            for p in [r["asset_path"], r["source_path"]].compactMap({ $0 }) { out[p] = s }
        }
        return out
    }

    /// The night's approved and rejected images, approved first, at most `limit`.
    public func consoleNightImages(night: String, limit: Int = 200) throws -> [ImageGateScores] {
        try db.exec("""
            SELECT \(Self.gateColumns) FROM quality_metrics
            WHERE finished_night = $1 AND state IN ('approved', 'rejected') AND coalesce(asset_path, source_path) IS NOT NULL
            ORDER BY state, collection, created_at LIMIT \(limit)
            """, [night]).all.map(Self.gateScores)
    }
}

extension ConsolePages {
    /// "aesthetic 6.1 · musiq 48 · face 0.42", with the gates the image failed.
    static func scoreCaption(_ s: ImageGateScores?) -> HTML {
        guard let s else { return "<figcaption class=\"muted\">no scores</figcaption>" }
        func n(_ v: Double?, _ digits: Int) -> String { v.map { String(format: "%.\(digits)f", $0) } ?? "—" }
        let failed: HTML = s.failedGates.isEmpty ? .empty : " <span class=\"failed-gates\">failed: \(s.failedGates.joined(separator: ", "))</span>"
        return "<figcaption>aesthetic \(n(s.aesthetic, 1)) · musiq \(n(s.musiq, 0)) · face \(n(s.faceSimilarity, 2))\(failed)</figcaption>"
    }

    static func scoredThumb(_ path: String, _ s: ImageGateScores?) -> HTML {
        """
        <figure class="scored"><a href="\(mediaURL("media", path))"><img class="thumb" loading="lazy" src="\(mediaURL("thumb", path))" alt="\(path)"></a>\(scoreCaption(s))</figure>
        """
    }

    /// The night's images as thumbnails with their scores, approved and rejected apart.
    static func nightGallery(_ images: [ImageGateScores]) -> HTML {
        if images.isEmpty { return .empty }
        let groups = ["approved", "rejected"].map { st -> HTML in
            let items = images.filter { $0.state == st }
            if items.isEmpty { return .empty }
            return "<h2>\(st.capitalized) <small class=\"muted\">\(items.count)</small></h2><div class=\"thumbs\">\(HTML.join(items.map { scoredThumb($0.path, $0) }))</div>"
        }
        return "<section class=\"gallery\">\(HTML.join(groups))</section>"
    }
}
