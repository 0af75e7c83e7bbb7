import ArgumentParser
import Crypto
import Foundation
import HydraCore
import HydraWire

/// The Redis users of a Hydra cluster: one per agent, confined to its own node's keys, the
/// node set and the two shared streams it appends to; and one for the coordinator. Rules list
/// exactly the commands each process sends (Agent.swift, CoordinatorService.swift).
public enum RedisACL {
    public static let coordinatorUser = "hydra-coordinator"
    public static func agentUser(_ node: String) -> String { "hydra-agent-\(node)" }

    /// Node names become key patterns: glob characters or spaces would widen or break them.
    public static func checkNodeName(_ node: String) throws {
        let ok = !node.isEmpty && node.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "._-".unicodeScalars.contains($0) }
        guard ok && node.utf8.count <= 64 else {
            throw ValidationError("node name '\(node)' cannot be used in a Redis ACL key pattern (letters, digits, '.', '_', '-')")
        }
    }

    /// ACL SETUSER arguments after the user name. The password goes in as its SHA-256 (`#…`), so
    /// the rules can be printed, logged and sent without revealing it.
    public static func agentRules(node: String, passwordSHA256: String) -> [String] {
        ["reset", "on", "#\(passwordSHA256)",
         // Only its own node's keys: job stream (read, acknowledge, delete, claim), results and dead-letter
         // streams (append), heartbeat hash with its TTL (DEL on shutdown). Redis ACLs cannot forbid
         // MAXLEN or explicit ids on XADD; with every stream an agent writes being its own, the worst it
         // can do with them is lose its own results (its jobs are then requeued elsewhere by their
         // leases). Nothing it writes is trusted without its node's signature either.
         "~\(RedisKeys.nodePrefix(node))*", "resetchannels", "-@all",
         "+xreadgroup", "+xack", "+xdel", "+xautoclaim", "+xgroup|create", "+xadd", "+hset", "+expire", "+del", "+ping", "+select", "+auth",
         // Selector: SADD only on the node set (the coordinator takes node names from the cluster file alone).
         "(~\(RedisKeys.nodes) +sadd)"]
    }

    public static func coordinatorRules(passwordSHA256: String) -> [String] {
        ["reset", "on", "#\(passwordSHA256)", "~\(RedisKeys.prefix)*", "resetchannels", "-@all",
         "+xreadgroup", "+xack", "+xadd", "+xdel", "+xrange", "+xinfo|stream", "+xgroup|create", "+smembers", "+hgetall", "+hmget", "+ping", "+select", "+auth",
         // Reading what agents wrote under a size limit (`MessageLimits`): heartbeats through one script
         // (EVAL, HSTRLEN, HMGET), an oversize read of results entry by entry (XPENDING, XRANGE); and
         // XINFO GROUPS, which finds the one results stream that made a read fail.
         "+eval", "+hstrlen", "+xpending", "+xinfo|groups"]
    }

    /// An ACL-file line (`user NAME rules…`).
    public static func line(user: String, rules: [String]) -> String { (["user", user] + rules).joined(separator: " ") }

    public static func sha256Hex(_ s: String) -> String {
        Hex.encode(SHA256.hash(data: Array(s.utf8)))
    }

    /// 32 random bytes as hex: long enough that Redis's fast password checks do not matter.
    public static func generatePassword() -> String { SigningKeys.generateHex() }
}

/// Writes a secret file that only its owner can read; never replaces an existing one unless asked.
public enum SecretFile {
    /// Returns the file's secret, creating it with `make()` when absent (or when `replace`).
    public static func readOrCreate(_ path: String, replace: Bool = false, make: () -> String) throws -> String {
        if !replace, FileManager.default.fileExists(atPath: path) { return try read(path, what: "password") }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw InputError(file: path, problem: "cannot write: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        fchmod(fd, 0o600)
        let s = make()
        let line = s + "\n"
        let n = line.withCString { write(fd, $0, strlen($0)) }
        guard n == line.utf8.count else { throw InputError(file: path, problem: "short write") }
        return s
    }

    /// Reads a secret file, refusing one that group or others may read. Empty unless `allowEmpty` is false.
    public static func read(_ path: String, what: String, allowEmpty: Bool = false) throws -> String {
        var st = stat()
        guard stat(path, &st) == 0 else { throw InputError(file: path, problem: "cannot read the \(what) file: \(String(cString: strerror(errno)))") }
        if st.st_mode & 0o077 != 0 {
            throw InputError(file: path, problem: String(format: "the \(what) file is readable by others (mode %o); chmod 600 it", st.st_mode & 0o777))
        }
        guard let data = FileManager.default.contents(atPath: path) else { throw InputError(file: path, problem: "cannot read the \(what) file") }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty || allowEmpty else { throw InputError(file: path, problem: "the \(what) file is empty") }
        return text
    }
}

/// `--redis-user` / `--redis-password-file`: the password comes from a file or the systemd
/// credential `redis.password`, never from argv (the URL may still carry a user name).
public struct RedisAuthOptions: ParsableArguments {
    @Option(name: .customLong("redis-user"), help: "Redis ACL user (default: the URL's user).") public var redisUser: String?
    @Option(name: .customLong("redis-password-file"), help: "File with the Redis password (mode 0600; default: the redis.password systemd credential).")
    public var redisPasswordFile: String?

    public init() {}

    public func endpoint(url: String) throws -> RedisEndpoint {
        do { return try RedisEndpoint(url: url).withCredentials(user: redisUser, passwordFile: redisPasswordFile) } catch {
            throw ValidationError("\(error)")
        }
    }
}

extension RedisEndpoint {
    /// The endpoint with a user and a password read from `passwordFile`, or from
    /// `$CREDENTIALS_DIRECTORY/redis.password` when that exists.
    public func withCredentials(user: String?, passwordFile: String?) throws -> RedisEndpoint {
        var e = self
        if let user { e.user = user }
        let creds = ProcessInfo.processInfo.environment["CREDENTIALS_DIRECTORY"].map { "\($0)/redis.password" }
        if let path = passwordFile ?? creds.flatMap({ FileManager.default.fileExists(atPath: $0) ? $0 : nil }) {
            // An empty file means "Redis has no password" (docs/operations.md: the unit needs the credential either way).
            let pw = try SecretFile.read(path, what: "Redis password", allowEmpty: true)
            if !pw.isEmpty { e.password = pw }
        }
        return e
    }
}
