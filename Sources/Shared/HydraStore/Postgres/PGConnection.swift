import CLibPQ
import Foundation
import Synchronization
import HydraCore
import HydraIO

public struct PGError: Error, CustomStringConvertible, Sendable {
    public enum Code: Sendable { case connect, query, io }
    public var code: Code
    /// SQLSTATE when the server sent one (e.g. 23505 unique violation, 40001 serialization failure).
    public var sqlState: String?
    public var message: String
    public var description: String { message }

    /// Errors after which the connection must be re-made (server restarted, socket gone).
    public var isConnectionLoss: Bool {
        if code == .connect || code == .io { return true }
        guard let s = sqlState else { return false }
        return s.hasPrefix("08") || s == "57P01" || s == "57P02" || s == "57P03"
    }
}

/// Rows of a query result, columns addressed by name.
public struct PGRows: Sendable {
    public var columns: [String]
    public var rows: [[String?]]
    public var affected: Int

    public var count: Int { rows.count }
    public func value(_ row: Int, _ column: String) -> String? {
        guard let i = columns.firstIndex(of: column) else { return nil }
        return rows[row][i]
    }
    public subscript(row: Int) -> PGRow { PGRow(columns: columns, values: rows[row]) }
    public var all: [PGRow] { rows.map { PGRow(columns: columns, values: $0) } }
}

public struct PGRow: Sendable {
    public var columns: [String]
    public var values: [String?]
    public subscript(_ column: String) -> String? {
        guard let i = columns.firstIndex(of: column) else { return nil }
        return values[i]
    }
    public func int(_ c: String) -> Int? { self[c].flatMap { Int($0) } }
    public func int64(_ c: String) -> Int64? { self[c].flatMap { Int64($0) } }
    public func double(_ c: String) -> Double? { self[c].flatMap { Double($0) } }
    public func bool(_ c: String) -> Bool? { self[c].map { $0 == "t" || $0 == "true" } }
    public func json(_ c: String) -> JSONValue? {
        self[c].flatMap { try? JSONValue.parse($0) }
    }
    /// `{a,b}` text-array form.
    public func textArray(_ c: String) -> [String] {
        guard var s = self[c], s.count >= 2 else { return [] }
        s.removeFirst(); s.removeLast()
        if s.isEmpty { return [] }
        return s.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
    }
}

/// Cuts a connection from another thread: a call blocked on a silent peer (a host that vanished
/// without closing anything) returns with a connection error instead of waiting for TCP to give up.
public final class PGInterrupter: Sendable {
    // A lock, not an atomic: `close()` clears the descriptor under it before libpq closes it, so an
    // interrupt can never shut down a descriptor number the process has since reused.
    private let fd = Mutex<Int32>(-1)
    public init() {}
    func set(_ s: Int32) { fd.withLock { $0 = s } }
    public func interrupt() {
        fd.withLock { s in if s >= 0 { shutdown(s, Int32(SHUT_RDWR)) } }
    }
}

/// One blocking libpq connection. Not thread-safe; one owner at a time.
/// Parameters go as text ($1, $2, ...); results come back as text.
public final class PGConnection {
    public let url: String
    private var conn: OpaquePointer?
    /// For a watchdog on another thread (`PGInterrupter.interrupt`).
    public let interrupter = PGInterrupter()
    /// `SET` statements run after every (re)connect.
    public var sessionSettings: [String] = []

    public init(url: String) { self.url = url }

    /// Settings for a connection whose statements are batched key lookups (`… FROM unnest($1) v WHERE
    /// j.id = v.id`): with hash and merge joins and sequential scans ruled out (a last resort, not
    /// forbidden), PostgreSQL walks the primary key for each row. Its statistics lag far behind a
    /// freshly submitted batch, and with them it chose plans that hashed every job for each 500
    /// results, or compared every assignment with every pending row (see `JobStore.markDispatched`).
    public static let keyLookupSettings = ["SET enable_hashjoin = off", "SET enable_mergejoin = off", "SET enable_seqscan = off"]

    deinit { close() }

    public func close() {
        interrupter.set(-1)
        if let conn { PQfinish(conn) }
        conn = nil
    }

    public func connect() throws {
        if let c = conn, PQstatus(c) == CONNECTION_OK { return }
        close()
        let c = try Self.open(url)
        guard let c else { throw PGError(code: .connect, message: "cannot allocate a PostgreSQL connection") }
        if PQstatus(c) != CONNECTION_OK {
            let msg = String(cString: PQerrorMessage(c)).trimmingCharacters(in: .whitespacesAndNewlines)
                .replacingOccurrences(of: "\n\t", with: " ").replacingOccurrences(of: "\n", with: "; ")
            PQfinish(c)
            throw PGError(code: .connect, message: "cannot connect to PostgreSQL (\(Self.redacted(url))): \(msg)")
        }
        conn = c
        interrupter.set(PQsocket(c))
        _ = try? exec("SET client_min_messages TO warning")
        for s in sessionSettings { try exec(s) }
    }

    /// Connects with the URL, adding a password from `$HYDRA_DATABASE_PASSWORD_FILE` or the systemd
    /// credential `pg.password` when the URL has none: the password never sits in argv or the environment.
    static func open(_ url: String) throws -> OpaquePointer? {
        let env = ProcessInfo.processInfo.environment
        let file = env["HYDRA_DATABASE_PASSWORD_FILE"]
            ?? env["CREDENTIALS_DIRECTORY"].map { "\($0)/pg.password" }.flatMap { FileManager.default.fileExists(atPath: $0) ? $0 : nil }
        var keys = ["dbname"], values = [url]
        // A server that vanished (host down, cable cut) answers nothing: without these a connect or a query
        // would wait for the OS's TCP timeouts, about two hours. The URL's own settings come after and win.
        for (k, v) in [("connect_timeout", "10"), ("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "3"),
                       ("keepalives_count", "3"), ("tcp_user_timeout", "20000")] where !url.contains("\(k)=") {
            keys.insert(k, at: 0); values.insert(v, at: 0)
        }
        if let file, URLComponents(string: url)?.password == nil {
            let password = try SecretFile.read(file, what: "PostgreSQL password", allowEmpty: true)
            if !password.isEmpty { keys.append("password"); values.append(password) }
        }
        // expand_dbname = 1: "dbname" is the whole URL; the keywords before it are defaults, those after it override.
        var k: [UnsafePointer<CChar>?] = keys.map { UnsafePointer(strdup($0)) } + [nil]
        var v: [UnsafePointer<CChar>?] = values.map { UnsafePointer(strdup($0)) } + [nil]
        defer { for p in k + v { free(UnsafeMutablePointer(mutating: p)) } }
        return PQconnectdbParams(&k, &v, 1)
    }

    /// Creates database `name` on the server of `adminURL` and returns the URL that reaches it
    /// (the tests, benchmarks and chaos runs each work in a scratch database of their own).
    public static func createDatabase(_ name: String, adminURL: String) throws -> String {
        guard var comps = URLComponents(string: adminURL) else {
            throw PGError(code: .connect, message: "'\(redacted(adminURL))' is not a PostgreSQL URL")
        }
        let admin = PGConnection(url: adminURL)
        defer { admin.close() }
        try admin.exec("CREATE DATABASE \(name)")
        comps.path = "/" + name
        return comps.string ?? adminURL
    }

    /// The URL without its password, for messages.
    public static func redacted(_ url: String) -> String {
        guard var u = URLComponents(string: url), u.password != nil else { return url }
        u.password = "****"
        return u.string ?? "postgres://****"
    }

    @discardableResult
    public func exec(_ sql: String, _ params: [String?] = []) throws -> PGRows {
        try connect()
        guard let conn else { throw PGError(code: .connect, message: "not connected") }
        // libpq takes parameters as C strings: a NUL would cut the value short without a word, and
        // PostgreSQL's text refuses it anyway. Callers clean job text first (`StoredText`); this is the
        // guard that keeps a missed path from storing a truncated value.
        for (i, p) in params.enumerated() where p?.utf8.contains(0) == true {
            throw PGError(code: .query, sqlState: "22021", message: "PostgreSQL: parameter $\(i + 1) contains a NUL byte (not stored)")
        }
        let res: OpaquePointer?
        if params.isEmpty {
            res = PQexec(conn, sql)
        } else {
            var cParams: [UnsafeMutablePointer<CChar>?] = params.map { $0.flatMap { strdup($0) } }
            defer { for p in cParams { free(p) } }
            res = cParams.withUnsafeMutableBufferPointer { buf in
                buf.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buf.count) { ptr in
                    PQexecParams(conn, sql, Int32(params.count), nil, ptr, nil, nil, 0)
                }
            }
        }
        guard let res else {
            let msg = String(cString: PQerrorMessage(conn))
            close()
            throw PGError(code: .io, message: "PostgreSQL: \(msg)")
        }
        defer { PQclear(res) }
        let status = PQresultStatus(res)
        if status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK {
            let state = PQresultErrorField(res, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let msg = String(cString: PQresultErrorMessage(res)).trimmingCharacters(in: .whitespacesAndNewlines)
            let err = PGError(code: PQstatus(conn) == CONNECTION_OK ? .query : .io, sqlState: state, message: "PostgreSQL: \(msg)")
            if err.isConnectionLoss { close() }
            throw err
        }
        let nf = Int(PQnfields(res))
        let nt = Int(PQntuples(res))
        var columns: [String] = []
        for i in 0..<nf { columns.append(String(cString: PQfname(res, Int32(i)))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(nt)
        for r in 0..<nt {
            var row: [String?] = []
            row.reserveCapacity(nf)
            for c in 0..<nf {
                if PQgetisnull(res, Int32(r), Int32(c)) == 1 { row.append(nil) }
                else { row.append(String(cString: PQgetvalue(res, Int32(r), Int32(c)))) }
            }
            rows.append(row)
        }
        let affected = Int(String(cString: PQcmdTuples(res))) ?? 0
        return PGRows(columns: columns, rows: rows, affected: affected)
    }

    /// How many NOTIFYs (on channels this connection LISTENs to) arrived since the last call.
    /// Reads only what the socket already holds; never blocks. A reconnect drops the LISTEN,
    /// so callers keep a periodic fallback.
    public func takeNotifications() -> Int {
        guard let conn else { return 0 }
        _ = PQconsumeInput(conn)
        var n = 0
        while let note = PQnotifies(conn) {
            n += 1
            PQfreemem(note)
        }
        return n
    }

    /// Runs `body` in a transaction; rolls back if it throws.
    public func transaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        try exec("BEGIN")
        do {
            let v = try body(self)
            try exec("COMMIT")
            return v
        } catch {
            if conn != nil { _ = try? exec("ROLLBACK") }
            throw error
        }
    }

    /// Text form of a string array parameter with NULL elements (`{"a",NULL}`).
    public static func optionalTextArray(_ items: [String?]) -> String {
        var out = "{"
        out.reserveCapacity(items.count * 40)
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(",") }
            if let item { appendQuoted(item, to: &out) } else { out.append("NULL") }
        }
        out.append("}")
        return out
    }

    /// Text form of a string array parameter (`{"a","b"}`).
    public static func textArray(_ items: [String]) -> String {
        var out = "{"
        out.reserveCapacity(items.count * 40)
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(",") }
            appendQuoted(item, to: &out)
        }
        out.append("}")
        return out
    }

    /// Array-literal quoting. Built on the UTF-8 view: these arrays carry thousands of ids and
    /// JSON documents per statement, and Foundation's replacingOccurrences was a third of the
    /// coordinator's CPU time under load.
    private static func appendQuoted(_ s: String, to out: inout String) {
        out.append("\"")
        if !s.utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out.append(s)
        } else {
            for ch in s.unicodeScalars {
                if ch == "\"" || ch == "\\" { out.append("\\") }
                out.unicodeScalars.append(ch)
            }
        }
        out.append("\"")
    }
}
