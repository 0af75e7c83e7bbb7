import Foundation

/// Redis key names, in one place.
/// An agent writes only keys under `hydra:node:<its node>:` (and adds its name to `hydra:nodes`), so
/// that what one node does to its keys (trimming a stream to nothing, an entry with the maximum id)
/// stays with that node; `RedisACL` grants exactly that.
public enum RedisKeys {
    /// Every key of Hydra's starts with this (the coordinator's ACL grants it).
    public static let prefix = "hydra:"
    public static let events = "hydra:events"
    /// The coordinator's dead letters: results and heartbeats it refused or could not apply, with the reason
    /// (a refused heartbeat once per node and reason, not on every read).
    public static let deadLetter = "hydra:deadletter"
    public static let nodes = "hydra:nodes"
    public static let agentsGroup = "agents"
    public static let coordinatorGroup = "coordinator"
    public static func nodePrefix(_ node: String) -> String { "hydra:node:\(node):" }
    public static func heartbeat(_ node: String) -> String { "hydra:node:\(node):heartbeat" }
    public static func jobs(_ node: String) -> String { "hydra:node:\(node):jobs" }
    /// The node's results, read by the coordinator (group `coordinator`).
    public static func results(_ node: String) -> String { "hydra:node:\(node):results" }
    /// Messages the node's agent refused (unsigned, expired, for another node, replayed).
    public static func deadLetter(_ node: String) -> String { "hydra:node:\(node):deadletter" }
    /// The node a `hydra:node:<node>:results` key belongs to.
    public static func node(ofResults key: String) -> String? {
        guard key.hasPrefix("hydra:node:"), key.hasSuffix(":results") else { return nil }
        return String(key.dropFirst("hydra:node:".count).dropLast(":results".count))
    }
    /// Dead-letter streams keep their newest entries only.
    public static let deadLetterMaxLen = "10000"

    /// The XADD of one dead letter (`fields`: name/value pairs) onto `stream`, capped at `deadLetterMaxLen`.
    public static func deadLetterEntry(_ stream: String, _ fields: [String]) -> [String] {
        ["XADD", stream, "MAXLEN", "~", deadLetterMaxLen, "*"] + fields
    }
}

