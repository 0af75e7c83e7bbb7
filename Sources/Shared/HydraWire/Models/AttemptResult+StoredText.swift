import Foundation
import HydraCore
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
