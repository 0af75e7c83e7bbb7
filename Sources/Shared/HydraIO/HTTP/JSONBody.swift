import Foundation
import HydraCore

/// Reading small JSON object bodies strictly: the decoder in use (JSONDecoder into `JSONValue`) keeps the
/// last of two equal keys silently, so `{"until":"06:00","until":"07:00"}` would mean whichever came last.
public enum JSONBody {
    public struct Problem: Error, Equatable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// The body as a JSON object, or why not: not JSON, not an object, or a key given twice (at any depth).
    public static func object(_ text: String) -> Result<[String: JSONValue], Problem> {
        guard let v = try? JSONCoding.decode(JSONValue.self, from: text) else {
            return .failure(Problem(message: "the body is not valid JSON"))
        }
        guard let o = v.objectValue else { return .failure(Problem(message: "the body must be a JSON object")) }
        if let k = duplicateKey(text) {
            return .failure(Problem(message: "the key '\(String(k.prefix(64)))' appears twice in the body"))
        }
        return .success(o)
    }

    /// The first key that appears twice in one object of `text` (already known to be valid JSON), else nil.
    public static func duplicateKey(_ text: String) -> String? {
        let b = Array(text.utf8)
        var stack: [(isObject: Bool, keys: Set<String>, expectKey: Bool)] = []
        var i = 0
        while i < b.count {
            let c = b[i]
            switch c {
            case UInt8(ascii: "{"): stack.append((true, [], true)); i += 1
            case UInt8(ascii: "["): stack.append((false, [], false)); i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): _ = stack.popLast(); i += 1
            case UInt8(ascii: ","):
                if !stack.isEmpty, stack[stack.count - 1].isObject { stack[stack.count - 1].expectKey = true }
                i += 1
            case UInt8(ascii: "\""):
                var j = i + 1
                while j < b.count, b[j] != UInt8(ascii: "\"") { j += b[j] == UInt8(ascii: "\\") ? 2 : 1 }
                if !stack.isEmpty, stack[stack.count - 1].isObject, stack[stack.count - 1].expectKey {
                    let raw = String(decoding: b[i...min(j, b.count - 1)], as: UTF8.self)
                    let key = (try? JSONCoding.decode(String.self, from: raw)) ?? raw
                    if !stack[stack.count - 1].keys.insert(key).inserted { return key }
                    stack[stack.count - 1].expectKey = false
                }
                i = j + 1
            default: i += 1
            }
        }
        return nil
    }
}
