import Crypto
import Foundation
import Synchronization
import HydraCore

/// Why an agent refused a message on its stream (the `reason` on hydra:deadletter
/// and the label of hydra_agent_deadletter_total).
public enum MessageRejection: String, Sendable, Error, CaseIterable {
    case unsigned, badSignature = "bad_signature", unknownKey = "unknown_key", expired, malformed
    case missingBody = "missing_body", unknownType = "unknown_type"
    case wrongNode = "wrong_node", replayed
    /// Larger than the coordinator reads (`MessageLimits`): refused unread.
    case oversize
}

extension MessageRejection: CustomStringConvertible {
    public var description: String {
        switch self {
        case .unsigned: return "unsigned message (no 'sig' field) while signing is required"
        case .badSignature: return "signature does not match the message (tampered, or signed with another key)"
        case .unknownKey: return "signed with a key id that is neither the current nor the previous key"
        case .expired: return "envelope expired before it was read"
        case .malformed: return "malformed message (no 'type', or a body that is not the expected JSON)"
        case .missingBody: return "message without its body ('body' for envelopes and heartbeats, 'result' for results)"
        case .unknownType: return "unknown message type (expected 'job' or 'cancel')"
        case .wrongNode: return "message for another node (or naming none): copied onto this node's stream"
        case .replayed: return "envelope of an attempt this node has already taken (a replay)"
        case .oversize: return "message larger than the coordinator reads (a result over \(MessageLimits.resultEntryBytes >> 20) MiB, a heartbeat over \(MessageLimits.heartbeatBytes >> 20) MiB); refused unread"
        }
    }
}

/// The HMAC-SHA256 keys shared by the coordinator and the agents: the current one signs,
/// the current and the previous one verify, so keys rotate without a flag day.
public struct SigningKeys: Sendable {
    public struct Key: Sendable {
        public let id: String
        // Raw bytes rather than SymmetricKey, which is not Sendable in swift-crypto 3.
        let bytes: [UInt8]
        var key: SymmetricKey { SymmetricKey(data: bytes) }
    }
    public let current: Key
    public let previous: Key?

    public init(current: [UInt8], previous: [UInt8]? = nil) {
        self.current = Self.key(current)
        self.previous = previous.map(Self.key)
    }

    static func key(_ bytes: [UInt8]) -> Key {
        // The id names the key without revealing it: the first 8 hex digits of its SHA-256.
        let digest = SHA256.hash(data: bytes)
        let id = Hex.encode(digest.prefix(4))
        return Key(id: id, bytes: bytes)
    }

    /// Reads key files. The files must be private to their owner (mode 0600 or stricter),
    /// since a key that others can read is no key. Without paths, systemd credentials
    /// (`$CREDENTIALS_DIRECTORY/hmac.key`, `hmac.previous.key`) are used when present.
    public static func load(current: String?, previous: String?) throws -> SigningKeys? {
        let creds = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
        let currentPath = current ?? creds.map { "\($0)/hmac.key" }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        guard let currentPath else { return nil }
        let previousPath = previous ?? creds.map { "\($0)/hmac.previous.key" }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        return SigningKeys(current: try readKey(currentPath), previous: try previousPath.map(readKey))
    }

    /// A cluster key for the coordinator: a node's key file here is a mistake worth naming.
    public static func readKey(_ path: String) throws -> [UInt8] {
        let bytes = try readKeyText(path)
        if String(decoding: bytes, as: UTF8.self).hasPrefix(nodeKeyPrefix) {
            throw InputError(file: path, problem: "this is a node's key (`hydra keygen --node`); the coordinator needs the cluster key")
        }
        return bytes
    }

    static func readKeyText(_ path: String) throws -> [UInt8] {
        var st = stat()
        guard stat(path, &st) == 0 else { throw InputError(file: path, problem: "cannot read the HMAC key file") }
        if st.st_mode & 0o077 != 0 {
            throw InputError(file: path, problem: String(format: "the HMAC key file is readable by others (mode %o); chmod 600 it", st.st_mode & 0o777))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw InputError(file: path, problem: "cannot read the HMAC key file") }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.utf8.count >= 32 else { throw InputError(file: path, problem: "the HMAC key is shorter than 32 characters") }
        return Array(text.utf8)
    }

    // MARK: node keys

    /// First word of a node key file: `hydra-node-key-v1 NODE HEX`.
    public static let nodeKeyPrefix = "hydra-node-key-v1"

    /// The key of one node: HMAC-SHA256(cluster key, "hydra-node-key-v1\n" + node), as hex text.
    /// The coordinator holds the cluster key and derives every node's key; an agent holds only its
    /// own, so a compromised node can neither sign for another node nor read another node's jobs.
    public static func deriveNodeKey(_ clusterKey: [UInt8], node: String) -> [UInt8] {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(nodeKeyPrefix)\n\(node)".utf8), using: SymmetricKey(data: clusterKey))
        return Array(Hex.encode(mac).utf8)
    }

    /// These keys as seen by `node` (both the current and the previous one derived).
    public func node(_ name: String) -> SigningKeys {
        SigningKeys(current: Self.deriveNodeKey(current.bytes, node: name), previous: previous.map { Self.deriveNodeKey($0.bytes, node: name) })
    }

    /// The text of a node key file.
    public func nodeKeyFile(node: String) -> String { "\(Self.nodeKeyPrefix) \(node) \(String(decoding: Self.deriveNodeKey(current.bytes, node: node), as: UTF8.self))\n" }

    /// An agent's keys. A node key file (`hydra keygen --node`) must name `node`; a cluster key is
    /// accepted too (then `clusterKey` is true and the agent derives its own key), for one-machine
    /// setups and old installs, though it lets a compromised agent sign for every node.
    public static func loadForNode(_ node: String, current: String?, previous: String?) throws -> (keys: SigningKeys, clusterKey: Bool)? {
        let creds = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"]
        let currentPath = current ?? creds.map { "\($0)/hmac.key" }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        guard let currentPath else { return nil }
        let previousPath = previous ?? creds.map { "\($0)/hmac.previous.key" }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        let (cur, cluster) = try nodeKey(node, path: currentPath)
        let prev = try previousPath.map { try nodeKey(node, path: $0).key }
        return (SigningKeys(current: cur, previous: prev), cluster)
    }

    static func nodeKey(_ node: String, path: String) throws -> (key: [UInt8], cluster: Bool) {
        let raw = try readKeyText(path)
        let words = String(decoding: raw, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard words.first == nodeKeyPrefix else { return (deriveNodeKey(raw, node: node), true) }
        guard words.count == 3, words[2].utf8.count == 64, Hex.decode(words[2]) != nil else {
            throw InputError(file: path, problem: "malformed node key file (expected '\(nodeKeyPrefix) NODE HEX')")
        }
        guard words[1] == node else {
            throw InputError(file: path, problem: "this key belongs to node '\(words[1])', not '\(node)'")
        }
        return (Array(words[2].utf8), false)
    }

    /// A fresh random key as 64 hex digits (what `hydra keygen` writes).
    public static func generateHex() -> String {
        Hex.encode(SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    public func sign(_ type: String, _ body: String) -> (signature: String, keyID: String) {
        (Self.mac(current.key, type, body), current.id)
    }

    /// Checks a signature made by the current or the previous key.
    public func verify(_ type: String, _ body: String, signature: String?, keyID: String?) throws {
        guard let signature, !signature.isEmpty else { throw MessageRejection.unsigned }
        let candidates = [current] + (previous.map { [$0] } ?? [])
        guard let k = candidates.first(where: { $0.id == keyID }) else { throw MessageRejection.unknownKey }
        guard let sig = Self.unhex(signature),
              HMAC<SHA256>.isValidAuthenticationCode(sig, authenticating: Self.bytes(type, body), using: k.key) else {
            throw MessageRejection.badSignature
        }
    }

    /// The MAC covers the message type and the body bytes exactly as sent (sorted-key JSON).
    static func bytes(_ type: String, _ body: String) -> [UInt8] { Array("hydra-v1\n\(type)\n".utf8) + Array(body.utf8) }

    static func mac(_ key: SymmetricKey, _ type: String, _ body: String) -> String {
        Hex.encode(HMAC<SHA256>.authenticationCode(for: bytes(type, body), using: key))
    }

    static func unhex(_ s: String) -> [UInt8]? { Hex.decode(s) }
}

/// What travels on a node's job stream: a typed, signed body.
public enum NodeMessage: Sendable, Equatable {
    case job(Envelope)
    /// A cancellation names its node and expires like an envelope, so an old or copied one is refused.
    case cancel(jobID: String, attempt: Int, issuedAt: Double, node: String? = nil, expiresAt: Double? = nil)

    /// Stream fields for XADD: `type`, `body`, and with keys `sig` and `kid`.
    public func fields(keys: SigningKeys?) throws -> [String] {
        let type: String, body: String
        switch self {
        case .job(let e):
            type = "job"; body = try e.jsonString()
        case .cancel(let id, let attempt, let at, let node, let expiresAt):
            type = "cancel"
            var o: [String: JSONValue] = ["job_id": .string(id), "attempt": .number(Double(attempt)), "issued_at": .number(at)]
            if let node { o["node"] = .string(node) }
            if let expiresAt { o["expires_at"] = .number(expiresAt) }
            body = try JSONValue.object(o).serialized()
        }
        var f = ["type", type, "body", body]
        if let keys {
            let (sig, kid) = keys.sign(type, body)
            f += ["sig", sig, "kid", kid]
        }
        return f
    }

    /// Decodes and checks a stream entry's fields. With keys, anything unsigned, signed
    /// with an unknown key, tampered with or past its expiry is refused.
    /// `node`, when given, is the reader's own node: a message naming another node (or none) is refused.
    public static func decode(_ fields: [String: String], keys: SigningKeys?, now: Double, node: String? = nil) throws -> NodeMessage {
        guard let type = fields["type"] else { throw MessageRejection.malformed }
        guard let body = fields["body"] else { throw MessageRejection.missingBody }
        if let keys { try keys.verify(type, body, signature: fields["sig"], keyID: fields["kid"]) }
        switch type {
        case "job":
            guard let e = try? Envelope.parse(body) else { throw MessageRejection.malformed }
            if let node, e.node != node { throw MessageRejection.wrongNode }
            if let exp = e.expiresAt, exp < now { throw MessageRejection.expired }
            return .job(e)
        case "cancel":
            guard let v = try? JSONValue.parse(body), let id = v["job_id"]?.stringValue,
                  let attempt = v["attempt"]?.intValue else { throw MessageRejection.malformed }
            let target = v["node"]?.stringValue
            if let node, target != node { throw MessageRejection.wrongNode }
            let exp = v["expires_at"]?.doubleValue
            if let exp, exp < now { throw MessageRejection.expired }
            return .cancel(jobID: id, attempt: attempt, issuedAt: v["issued_at"]?.doubleValue ?? 0, node: target, expiresAt: exp)
        default:
            throw MessageRejection.unknownType
        }
    }
}

/// The coordinator's view of every node's keys, derived once per node from the cluster keys.
public final class NodeKeyring: Sendable {
    public let cluster: SigningKeys
    private let cache = Mutex<[String: SigningKeys]>([:])

    public init(_ cluster: SigningKeys) { self.cluster = cluster }

    public func keys(for node: String) -> SigningKeys {
        if let k = cache.withLock({ $0[node] }) { return k }
        let k = cluster.node(node)
        cache.withLock { $0[node] = k }
        return k
    }
}
