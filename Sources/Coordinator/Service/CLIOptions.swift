import ArgumentParser
import Foundation
import HydraCore
import HydraStore

/// Where the state lives; shared by every subcommand.
public struct ConnectionOptions: ParsableArguments {
    public init() {}
    @Option(name: .customLong("database-url"), help: "PostgreSQL URL (default: $HYDRA_DATABASE_URL).") public var databaseURL: String?
    @Option(name: .customLong("redis-url"), help: "Redis URL (default: $HYDRA_REDIS_URL).") public var redisURL: String?

    public var database: String {
        databaseURL ?? ProcessInfo.processInfo.environment["HYDRA_DATABASE_URL"] ?? "postgres://hydra@127.0.0.1:5432/hydra"
    }
    public var redis: String {
        redisURL ?? ProcessInfo.processInfo.environment["HYDRA_REDIS_URL"] ?? "redis://127.0.0.1:6379/0"
    }

    /// A connected store with a current schema, or exit 1 with the reason.
    public func store() throws -> JobStore {
        let db = PGConnection(url: database)
        do {
            try db.connect()
            try Migrations.check(db)
        } catch {
            fail("\(error)")
        }
        return JobStore(db: db)
    }
}

public struct ClusterOption: ParsableArguments {
    public init() {}
    @Option(help: "Cluster YAML (default: $HYDRA_CLUSTER).") public var cluster: String?

    public var path: String? { cluster ?? ProcessInfo.processInfo.environment["HYDRA_CLUSTER"] }

    public func load() throws -> ClusterConfig? {
        guard let path else { return nil }
        do { return try ClusterConfig.load(path: path) } catch { throw ValidationError("\(error)") }
    }
}

/// Operation failed (exit 1) with one line on stderr.
public func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("hydra: \(message)\n".utf8))
    Foundation.exit(1)
}

/// Invalid input (exit 2) with one line on stderr.
public func invalid(_ message: String) -> Never {
    FileHandle.standardError.write(Data("hydra: \(message)\n".utf8))
    Foundation.exit(2)
}

public func printJSON<T: Encodable>(_ v: T) throws {
    print(try JSONCoding.encodeString(v, pretty: true))
}
