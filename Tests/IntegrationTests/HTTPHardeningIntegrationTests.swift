import Foundation
import XCTest
import Synchronization
import HydraCore
import HydraIO
import HydraStore
import HydraConsole
import HydraPipeline
import HydraTestSupport

/// The audit's races and inputs against a real database: parallel pipeline triggers, generated query strings
/// against the console's API over a real listener.
final class HTTPHardeningIntegrationTests: XCTestCase {
    /// 15 parallel valid triggers: exactly one 202, the rest 409 while that runner lives; the runner gets the
    /// database URL in its environment, never in argv.
    func testParallelTriggersStartOneRunner() throws {
        let c = try Cluster()
        let dir = c.dir.appendingPathComponent("trigger")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let release = dir.appendingPathComponent("release").path
        let record = dir.appendingPathComponent("record").path
        let script = dir.appendingPathComponent("fake-hydra").path
        try """
        #!/bin/sh
        printf 'argv: %s\\n' "$*" >> '\(record)'
        printf 'env: %s\\n' "$HYDRA_DATABASE_URL" >> '\(record)'
        i=0; while [ ! -e '\(release)' ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done
        """.write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        let token = "fictional-token-0123456789abcdef"
        let trigger = PipelineTrigger(token: token, configPath: "/nonexistent/pipeline.yaml", executable: script, databaseURL: c.dbURL)
        let codes = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 15) { _ in
            let r = trigger.handle(HTTPRequest(method: "POST", path: PipelineTrigger.path, query: [:], headers: ["authorization": "Bearer \(token)"],
                                               body: Data(), remoteAddress: "127.0.0.1"))
            if case .full(let s, _, _) = r { codes.withLock { $0.append(s) } }
        }
        let got = codes.withLock { $0 }
        XCTAssertEqual(got.filter { $0 == 202 }.count, 1, "\(got)")
        XCTAssertEqual(got.filter { $0 == 409 }.count, 14, "\(got)")
        XCTAssertTrue(trigger.runnerAlive)
        // Still refused while the runner lives.
        if case .full(let s, _, _) = trigger.handle(HTTPRequest(method: "POST", path: PipelineTrigger.path, query: [:],
                                                                headers: ["authorization": "Bearer \(token)"], body: Data(), remoteAddress: "127.0.0.1")) {
            XCTAssertEqual(s, 409)
        }
        FileManager.default.createFile(atPath: release, contents: Data())
        let end = Date().addingTimeInterval(10)
        while trigger.runnerAlive && Date() < end { usleep(10_000) }
        XCTAssertFalse(trigger.runnerAlive)
        let text = (try? String(contentsOfFile: record, encoding: .utf8)) ?? ""
        XCTAssertEqual(text.components(separatedBy: "argv:").count - 1, 1, text)
        XCTAssertFalse(text.contains("--database-url"), text)
        XCTAssertFalse(text.split(separator: "\n").first { $0.hasPrefix("argv:") }?.contains(c.dbURL) ?? true, text)
        XCTAssertTrue(text.contains("env: \(c.dbURL)"), text)
        // A runner started elsewhere holds the advisory lock: refused too.
        let db = PGConnection(url: c.dbURL)
        try db.connect()
        defer { db.close() }
        _ = try db.exec("SELECT pg_advisory_lock(7210050)")
        if case .full(let s, _, let b) = trigger.handle(HTTPRequest(method: "POST", path: PipelineTrigger.path, query: [:],
                                                                    headers: ["authorization": "Bearer \(token)"], body: Data(), remoteAddress: "127.0.0.1")) {
            XCTAssertEqual(s, 409, String(decoding: b, as: UTF8.self))
        }
        _ = try db.exec("SELECT pg_advisory_unlock(7210050)")
    }

    /// Generated query strings (bad escapes, NUL, negative, NaN, huge numbers) against every GET API route of a
    /// console over a real listener: every answer is 2xx, 400 or 404, never 5xx, and the server keeps serving.
    func testGeneratedQueriesNeverGet5xx() throws {
        let c = try Cluster()
        let console = ConsoleServer(databaseURL: c.dbURL, settings: ConsoleSettings())
        let server = MiniHTTPServer(port: 0, handler: console.handler)
        try server.start()
        defer { server.stop() }
        let routes = ["/api/v1/nodes", "/api/v1/batches", "/api/v1/batches/x", "/api/v1/jobs", "/api/v1/jobs/x", "/api/v1/approvals",
                      "/api/v1/audit", "/api/v1/nights", "/cluster/occupancy.svg", "/batches/x", "/api/v1/batches/%ff", "/batches/%00"]
        let names = ["limit", "offset", "batch", "state", "node", "hours", "page"]
        let values = ["-5", "-1", "0", "1", "999999999999999999999", "nan", "inf", "1e3", "%00", "a%00b", "%ff", "%", "%zz", "pending%ff",
                      "pending", "running,pending", "x", "", "%C3%A9", "+", "-0"]
        var g = SystemRandomNumberGenerator()
        for i in 0..<250 {
            let route = routes.randomElement(using: &g)!
            let q = (0..<Int.random(in: 0...3, using: &g)).map { _ in "\(names.randomElement(using: &g)!)=\(values.randomElement(using: &g)!)" }
            let target = route + (q.isEmpty ? "" : "?" + q.joined(separator: "&"))
            let reply = LoopbackHTTP.request(server.port, "GET \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let status = Int(reply.dropFirst(9).prefix(3)) ?? 0
            XCTAssertTrue((200..<300).contains(status) || status == 400 || status == 404, "\(i) \(target): \(reply.prefix(300))")
        }
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET /api/v1/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").hasPrefix("HTTP/1.1 200 "))
    }
}
