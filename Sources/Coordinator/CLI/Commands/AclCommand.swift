import ArgumentParser
import Foundation
import HydraIO
import HydraCoordinator

struct AclCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "acl",
        abstract: "Print (and with --apply set) the Redis ACL users of the cluster; with --postgres, the SQL of a read-only role.",
        discussion: """
        One Redis user per agent (hydra-agent-NODE: its own node's keys, SADD on hydra:nodes, XADD on \
        its own results and dead-letter streams) and one for the coordinator (hydra-coordinator). Passwords \
        are generated into --password-dir (one file per user, mode 0600; existing files are kept unless \
        --rotate) and never printed: the ACL lines carry their SHA-256 (`#…`). Give each process its file \
        with --redis-password-file (or the systemd credential redis.password) and its user in the URL or \
        --redis-user. --apply runs ACL SETUSER over --redis-url / $HYDRA_REDIS_URL (an admin connection; \
        its password, if any, from --admin-password-file).
        --postgres prints SQL that creates a read-only role for `hydra status`, `jobs`, `nodes` (run it as a \
        superuser or a role with CREATEROLE; the coordinator's role keeps owning the schema).
        """
    )

    @Option(help: "Comma-separated node names (default: the nodes of the cluster file).") var nodes: String?
    @OptionGroup var clusterOption: ClusterOption
    @Option(name: .customLong("password-dir"), help: "Directory for the password files (created mode 0700).") var passwordDir = "redis-passwords"
    @Flag(help: "Generate new passwords even where files exist.") var rotate = false
    @Flag(help: "Apply the users with ACL SETUSER on the admin connection.") var apply = false
    @Option(name: .customLong("redis-url"), help: "Admin Redis URL for --apply (default: $HYDRA_REDIS_URL).") var redisURL: String?
    @Option(name: .customLong("admin-password-file"), help: "File with the admin connection's Redis password.") var adminPasswordFile: String?
    @Flag(help: "Print the PostgreSQL read-only role's SQL instead.") var postgres = false
    @Option(name: .customLong("readonly-role"), help: "Name of the read-only PostgreSQL role.") var readonlyRole = "hydra_readonly"
    @Option(help: "PostgreSQL role that owns the schema (the coordinator's).") var owner = "hydra"
    @Option(help: "Database to grant on (default: the one in $HYDRA_DATABASE_URL, else hydra).") var database: String?

    func run() throws {
        if postgres { return printPostgres() }
        let names: [String]
        if let nodes {
            names = nodes.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        } else if let c = try clusterOption.load() {
            names = c.nodes.map(\.name)
        } else {
            throw ValidationError("give --nodes a,b,c or a cluster file (--cluster or $HYDRA_CLUSTER)")
        }
        if names.isEmpty { throw ValidationError("no nodes") }
        for n in names { try RedisACL.checkNodeName(n) }

        if mkdir(passwordDir, 0o700) != 0 && errno != EEXIST { fail("cannot create \(passwordDir): \(String(cString: strerror(errno)))") }
        var users: [(String, [String])] = []
        do {
            for n in names {
                let pw = try SecretFile.readOrCreate("\(passwordDir)/\(RedisACL.agentUser(n)).password", replace: rotate, make: RedisACL.generatePassword)
                users.append((RedisACL.agentUser(n), RedisACL.agentRules(node: n, passwordSHA256: RedisACL.sha256Hex(pw))))
            }
            let pw = try SecretFile.readOrCreate("\(passwordDir)/\(RedisACL.coordinatorUser).password", replace: rotate, make: RedisACL.generatePassword)
            users.append((RedisACL.coordinatorUser, RedisACL.coordinatorRules(passwordSHA256: RedisACL.sha256Hex(pw))))
        } catch { invalid("\(error)") }

        for (u, rules) in users { print(RedisACL.line(user: u, rules: rules)) }
        guard apply else { return }
        let url = redisURL ?? ProcessInfo.processInfo.environment["HYDRA_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
        let endpoint: RedisEndpoint
        do { endpoint = try RedisEndpoint(url: url).withCredentials(user: nil, passwordFile: adminPasswordFile) } catch { invalid("\(error)") }
        let conn = RedisConnection(endpoint: endpoint)
        for (u, rules) in users {
            do { try conn.run(["ACL", "SETUSER", u] + rules) } catch { fail("ACL SETUSER \(u) on \(endpoint): \(error)") }
        }
        FileHandle.standardError.write(Data("hydra: applied \(users.count) Redis users on \(endpoint) (ACL SETUSER is not persisted: add the lines to the server's aclfile, or ACL SAVE)\n".utf8))
    }

    func printPostgres() {
        let db = database ?? URLComponents(string: ProcessInfo.processInfo.environment["HYDRA_DATABASE_URL"] ?? "")
            .map { $0.path.trimmingCharacters(in: CharacterSet(charactersIn: "/")) }.flatMap { $0.isEmpty ? nil : $0 } ?? "hydra"
        for (what, v) in [("--readonly-role", readonlyRole), ("--owner", owner), ("--database", db)] {
            guard let f = v.first, f.isLetter || f == "_", v.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                invalid("\(what) '\(v)' must be a plain SQL identifier (letters, digits, _)")
            }
        }
        print("""
        -- Read-only role for the status commands (hydra status, jobs, nodes, watch). Its password is set
        -- separately, without a command line: \\password \(readonlyRole) in psql. Run this connected to \(db).
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '\(readonlyRole)') THEN
            CREATE ROLE \(readonlyRole) LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
          END IF;
        END $$;
        GRANT CONNECT ON DATABASE \(db) TO \(readonlyRole);
        GRANT USAGE ON SCHEMA public TO \(readonlyRole);
        GRANT SELECT ON ALL TABLES IN SCHEMA public TO \(readonlyRole);
        ALTER DEFAULT PRIVILEGES FOR ROLE \(owner) IN SCHEMA public GRANT SELECT ON TABLES TO \(readonlyRole);
        """)
    }
}
