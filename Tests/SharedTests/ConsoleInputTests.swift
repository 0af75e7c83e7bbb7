import Foundation
import XCTest
import Synchronization
@testable import HydraCore
@testable import HydraIO
@testable import HydraStore
@testable import HydraConsole

/// What the console makes of bodies and query strings it cannot read: a 400 naming the problem, decided before
/// any database access (the server here has no database: anything that reached it would be a 503).
final class ConsoleInputTests: XCTestCase {
    let server = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1", settings: ConsoleSettings())

    func call(_ r: HTTPRequest) -> (status: Int, body: String, headers: [String: String]) {
        guard case .full(let s, let h, let b) = server.handle(r) else { return (0, "", [:]) }
        return (s, String(decoding: b, as: UTF8.self), h)
    }

    func drain(_ body: String, type: String?) -> HTTPRequest {
        var h = ["host": "127.0.0.1", "x-hydra-client": "test"]
        if let type { h["content-type"] = type }
        return .local("POST", "/api/v1/nodes/hydra-storage/drain", headers: h, body: Data(body.utf8))
    }

    /// The audit's bodies drained the node when asked to undrain it; each is now a 400 naming the problem.
    func testUnreadableDrainBodiesAre400NotADrain() {
        let cases: [(String, String?, String)] = [
            (#"{"undo": true}"#, nil, "looks like JSON"),
            (#"{"undo": true}"#, "application/x-www-form-urlencoded", "looks like JSON"),
            (#"{"undo": 1}"#, "application/json", "'undo'"),
            (#"{"undo": "yes"}"#, "application/json", "'undo'"),
            (#"{"undo": true"#, "application/json", "not valid JSON"),
            ("[[[[", "application/json", "not valid JSON"),
            ("[[[[", nil, "looks like JSON"),
            ("[true]", "application/json", "JSON object"),
            (#"{"undo": true, "undo": false}"#, "application/json", "twice"),
            (#"{"undoo": true}"#, "application/json", "unknown field 'undoo'"),
            ("undo=yes", nil, "'undo'"),
            ("undo=on", "application/x-www-form-urlencoded", "'undo'"),
            ("undo=true&undo=false", nil, "twice"),
            ("undo=%ff", nil, "percent-escape"),
            ("undo", nil, "'undo'"),
        ]
        for (body, type, needle) in cases {
            let r = call(drain(body, type: type))
            XCTAssertEqual(r.status, 400, "\(body) \(type ?? "-"): \(r.body)")
            XCTAssertTrue(r.body.contains(needle), "\(body): \(r.body)")
            XCTAssertTrue(r.headers["Content-Type"]?.hasPrefix("application/json") == true || type == "application/x-www-form-urlencoded", body)
        }
        XCTAssertEqual(call(drain("undo=true", type: "text/plain")).status, 415)
    }

    /// `undo` as a JSON boolean or form true/false/1/0 reads the same; absent means drain.
    func testUndoIsReadTheSameFromJSONAndForms() throws {
        func undo(_ body: String, _ type: String?) throws -> Bool? {
            try ConsoleGuard.boolField(ConsoleGuard.parseForm(drain(body, type: type), allowed: ["undo"]), "undo")
        }
        XCTAssertEqual(try undo(#"{"undo": true}"#, "application/json"), true)
        XCTAssertEqual(try undo(#"{"undo": false}"#, "application/json; charset=utf-8"), false)
        XCTAssertEqual(try undo("{}", "application/json"), nil)
        XCTAssertEqual(try undo("", "application/json"), nil)
        XCTAssertEqual(try undo("", nil), nil)
        XCTAssertEqual(try undo("undo=true&csrf=x&next=%2Fcluster", "application/x-www-form-urlencoded"), true)
        XCTAssertEqual(try undo("undo=1", nil), true)
        XCTAssertEqual(try undo("undo=FALSE", nil), false)
        XCTAssertEqual(try undo("undo=0", nil), false)
        // The pages' own forms still read.
        XCTAssertEqual(try ConsoleGuard.parseForm(drain("csrf=ab&next=%2Fapprovals&decision=reject&reason=too+blurry", type: "application/x-www-form-urlencoded"),
                                                  allowed: ["decision", "reason"]).fields,
                       ["csrf": "ab", "next": "/approvals", "decision": "reject", "reason": "too blurry"])
    }

    /// Every POST endpoint reads its body strictly (the same flaw would otherwise turn a reject into "no decision").
    func testEveryPostEndpointRefusesAnUnreadableBody() {
        for path in ["/api/v1/approvals/x/decide", "/api/v1/jobs/x/cancel", "/api/v1/jobs/x/retry", "/api/v1/batches/x/cancel",
                     "/api/v1/batches/x/retry", "/api/v1/nodes/x/drain", "/logout"] {
            for (body, type) in [(#"{"decision": "reject""#, "application/json"), ("[[[[", nil), (#"{"a": 1}"#, "application/json")] {
                var h = ["host": "127.0.0.1", "x-hydra-client": "test"]
                if let type { h["content-type"] = type }
                let r = call(.local("POST", path, headers: h, body: Data(body.utf8)))
                XCTAssertEqual(r.status, 400, "\(path) \(body): \(r.body)")
            }
        }
    }

    /// The audit's query strings were answered 503 "the database is not reachable right now"; now 400 naming the parameter.
    func testBadQueryParametersAre400NamingTheParameter() {
        let cases: [(String, [String: String], String)] = [
            ("/api/v1/batches", ["limit": "-5"], "'limit'"),
            ("/api/v1/batches", ["limit": "abc"], "'limit'"),
            ("/api/v1/audit", ["limit": "-1"], "'limit'"),
            ("/api/v1/jobs", ["limit": "1e3"], "'limit'"),
            ("/api/v1/jobs", ["offset": "-1"], "'offset'"),
            ("/api/v1/jobs", ["batch": "\0"], "'batch'"),
            ("/api/v1/jobs", ["node": "a\0b"], "'node'"),
            ("/cluster/occupancy.svg", ["hours": "nan"], "'hours'"),
            ("/cluster/occupancy.svg", ["hours": "inf"], "'hours'"),
            ("/cluster/occupancy.svg", ["hours": "-2"], "'hours'"),
            ("/batches/x", ["page": "-1"], "'page'"),
        ]
        for (path, query, needle) in cases {
            let r = call(.local("GET", path, query: query, headers: ["host": "127.0.0.1"]))
            XCTAssertEqual(r.status, 400, "\(path) \(query): \(r.body)")
            // HTML pages escape the quotes.
            XCTAssertTrue(r.body.contains(needle.trimmingCharacters(in: CharacterSet(charactersIn: "'"))), "\(path) \(query): \(r.body)")
        }
        // A path segment that does not decode is a 400, not a redirect to /cluster.
        for raw in ["/api/v1/batches/%ff", "/batches/%00", "/api/v1/jobs/%zz"] {
            let r = call(HTTPRequest(method: "GET", path: "/x", query: [:], headers: ["host": "127.0.0.1"], body: Data(), remoteAddress: "127.0.0.1", rawPath: raw))
            XCTAssertEqual(r.status, 400, "\(raw): \(r.body)")
        }
    }

    /// 10,100 requests without a cookie (the audit's flood) do not log out an operator who logged in.
    func testAnonymousTrafficCannotEvictALoggedInSession() {
        let token = "fictional-console-token-0123456789"
        let console = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1", settings: ConsoleSettings(token: token))
        func go(_ r: HTTPRequest) -> (Int, [String: String], String) {
            guard case .full(let s, let h, let b) = console.handle(r) else { return (0, [:], "") }
            return (s, h, String(decoding: b, as: UTF8.self))
        }
        let (_, h1, page) = go(.local("GET", "/login", headers: ["host": "127.0.0.1"]))
        let visitor = ConsoleSessions.cookieValue(h1["Set-Cookie"])!
        let csrf = try! XCTUnwrap(console.sessions.find(visitor)?.csrf)
        XCTAssertTrue(page.contains(csrf))
        let (s2, h2, _) = go(.local("POST", "/login", headers: ["host": "127.0.0.1", "cookie": "hydra_console=\(visitor)",
                                                                "content-type": "application/x-www-form-urlencoded"],
                                    body: Data("csrf=\(csrf)&token=\(token)".utf8)))
        XCTAssertEqual(s2, 303)
        let operatorID = ConsoleSessions.cookieValue(h2["Set-Cookie"])!
        for _ in 0..<10_100 { _ = console.sessions.create(authenticated: false) }
        _ = go(.local("GET", "/login", headers: ["host": "127.0.0.1"]))
        XCTAssertEqual(console.sessions.find(operatorID)?.authenticated, true, "the flood evicted the logged-in session")
        XCTAssertLessThanOrEqual(console.sessions.counts.visitors, 10_000)
        XCTAssertEqual(console.sessions.counts.loggedIn, 1)
        // And the operator is still let in (the page needs the database, so 503 here rather than a redirect to /login).
        let (s3, h3, _) = go(.local("GET", "/cluster", headers: ["host": "127.0.0.1", "cookie": "hydra_console=\(operatorID)"]))
        XCTAssertNotEqual(s3, 303)
        XCTAssertNil(h3["Location"])
    }

    func testLoggedInSessionsAreBoundedSeparately() {
        let sessions = ConsoleSessions(maxSessions: 20, idleSeconds: 100)
        let op = sessions.create(authenticated: true, byLogin: true, now: 1000)
        for i in 0..<500 { _ = sessions.create(authenticated: false, now: 1001 + Double(i) / 10) }
        XCTAssertNotNil(sessions.find(op.id, now: 1060))
        XCTAssertLessThanOrEqual(sessions.counts.visitors, 20)
        for i in 0..<50 { _ = sessions.create(authenticated: true, byLogin: true, now: 1070 + Double(i) / 10) }
        XCTAssertLessThanOrEqual(sessions.counts.loggedIn, 20)
    }
}

/// The console's shared reads: one computation per key per `ttl`, a fresh one after it or after `clear`,
/// and requests that arrive while a key is computed wait for that computation instead of running their own.
final class ReadCacheTests: XCTestCase {
    func testAValueIsComputedOncePerKeyPerTTL() throws {
        let now = Mutex(100.0)
        let cache = ReadCache(ttl: 1, maxKeys: 3, clock: { now.withLock { $0 } })
        var calls = 0
        func read(_ key: String, at t: Double) throws -> Int {
            now.withLock { $0 = t }
            return try cache.value(key) { calls += 1; return calls }
        }
        XCTAssertEqual(try read("a", at: 100), 1)
        XCTAssertEqual(try read("a", at: 100.9), 1, "within the ttl: shared")
        XCTAssertEqual(try read("b", at: 100.9), 2, "another key is its own read")
        XCTAssertEqual(try read("a", at: 101.0), 3, "after the ttl: read again")
        cache.clear()
        XCTAssertEqual(try read("a", at: 101.1), 4, "after a POST cleared it: read again")
        XCTAssertEqual(try read("a", at: 50), 5, "a clock that went back does not keep a value for ever")
        struct Boom: Error {}
        XCTAssertThrowsError(try cache.value("c") { () throws -> Int in throw Boom() })
        XCTAssertEqual(try read("c", at: 200), 6, "a failed read is not cached")
        for k in 0..<10 { _ = try read("k\(k)", at: 300) }
        XCTAssertLessThanOrEqual(cache.count, 3, "keys come from paths: the table stays bounded")
    }

    func testConcurrentRequestsForOneKeyShareOneComputation() {
        let cache = ReadCache(ttl: 1)
        let computations = Atomic<Int>(0)
        let results = Mutex<[Int]>([])
        let group = DispatchGroup()
        for _ in 0..<16 {
            group.enter()
            Thread.detachNewThread {
                defer { group.leave() }
                let v = try? cache.value("batch") { () -> Int in
                    Thread.sleep(forTimeInterval: 0.3)   // a read slower than the requests' arrival
                    return computations.add(1, ordering: .relaxed).newValue
                }
                results.withLock { $0.append(v ?? -1) }
            }
        }
        XCTAssertEqual(group.wait(timeout: .now() + 30), .success)
        XCTAssertEqual(computations.load(ordering: .relaxed), 1, "one computation for 16 concurrent requests")
        XCTAssertEqual(results.withLock { $0 }, Array(repeating: 1, count: 16))
    }
}
