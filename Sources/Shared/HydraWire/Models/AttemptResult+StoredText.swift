import Foundation
import HydraCore

extension AttemptResult {
    /// The result with its free text (output, error, node) made storable; ids and numbers are
    /// checked where they are used.
    public func storable() -> AttemptResult {
        var r = self
        if let v = result { r.result = v.storable() }
        if let e = error, !StoredText.isClean(e, maxBytes: 16 * 1024) { r.error = StoredText.clean(e, maxBytes: 16 * 1024) }
        if !StoredText.isClean(node, maxBytes: 256) { r.node = StoredText.clean(node, maxBytes: 256) }
        return r
    }
}

extension AttemptResult {
    /// The result with a document over `StoredText.maxDocumentBytes` replaced by what the coordinator
    /// would keep of it (its size and an excerpt).
    public func withCappedDocument() throws -> AttemptResult {
        guard let v = result else { return self }
        let text = try v.serialized()
        if text.utf8.count <= StoredText.maxDocumentBytes { return self }
        var r = self
        r.result = JSONValue.cappedDocument(serialized: text)
        return r
    }
}
