import Foundation
import XCTest
#if canImport(Glibc)
import Glibc
import HydraCore
import HydraTestSupport
import HydraStore
import HydraConsole
#endif

/// The web console on the real services: a coordinator with --console-listen and
/// three simulated agents; every page and API endpoint over HTTP.
final class ConsoleIntegrationTests: XCTestCase {
    var cluster: Cluster!

    override func setUpWithError() throws { cluster = try Cluster() }
    override func tearDown() { cluster?.stopAll() }

    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
        var json: JSONValue? { try? JSONCoding.decode(JSONValue.self, from: body) }
    }

    /// A raw HTTP/1.1 client: full control over Host, Origin and cookies, and redirects are not followed.
    func http(_ method: String, _ base: String, _ target: String, headers: [String: String] = [:], body: String? = nil) throws -> Response {
        let u = URLComponents(string: base)!
        let fd = LoopbackHTTP.connect(u.port!)
        guard fd >= 0 else { throw TestFailure("connect to \(base) failed") }
        defer { close(fd) }
        var h = ["Host": "\(u.host!):\(u.port!)"]
        h.merge(headers) { _, n in n }
        if let body { h["Content-Length"] = String(body.utf8.count) }
        var req = "\(method) \(target) HTTP/1.1\r\n" + h.map { "\($0.key): \($0.value)\r\n" }.joined() + "Connection: close\r\n\r\n"
        if let body { req += body }
        LoopbackHTTP.send(fd, req)
        let data = Data(LoopbackHTTP.readReply(fd, timeout: 30, maxBytes: 64 << 20).text.utf8)
        guard let split = data.range(of: Data("\r\n\r\n".utf8)) else { throw TestFailure("no HTTP answer from \(target)") }
        let head = String(decoding: data[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        var headers: [String: String] = [:]
        for l in head.dropFirst() { if let c = l.firstIndex(of: ":") { headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces) } }
        let status = Int(head[0].split(separator: " ")[1]) ?? 0
        return Response(status: status, headers: headers, body: String(decoding: data[split.upperBound...], as: UTF8.self))
    }

    func consoleURL(_ process: String, marker: String) throws -> String {
        var url = ""
        try waitUntil("\(process) prints the console URL", timeout: 30) {
            let log = cluster.log(process)
            guard let r = log.range(of: marker) else { return false }
            url = String(log[r.upperBound...].prefix { !$0.isWhitespace && $0 != "\"" }).trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            return url.hasPrefix("http://")
        }
        return url
    }

    func testEveryPageAndEndpointOverHTTP() throws {
        let out = cluster.dir.appendingPathComponent("out")
        let reports = cluster.dir.appendingPathComponent("reports")
        try FileManager.default.createDirectory(at: out.appendingPathComponent("media"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: reports, withIntermediateDirectories: true)
        let png = out.appendingPathComponent("media/tile.png").path
        // 1x1 PNG: enough for the server, which only sends files.
        try Data(base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")!.write(to: URL(fileURLWithPath: png))
        try Data("not yours".utf8).write(to: cluster.dir.appendingPathComponent("private.png"))
        let big = PNGEncoder.rgb(width: 600, height: 400) { x, y in (UInt8(x % 256), UInt8(y % 256), 90) }
        try big.write(to: out.appendingPathComponent("media/big.png"))
        try "# Night one <script>x</script>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n".write(to: reports.appendingPathComponent("2031-03-14_overnight_report.md"), atomically: true, encoding: .utf8)
        try "# Night two\n".write(to: reports.appendingPathComponent("2031-03-15_overnight_report.md"), atomically: true, encoding: .utf8)

        try cluster.startCoordinator(extra: ["--console-listen", "127.0.0.1:0", "--output-dir", out.path, "--reports-dir", reports.path])
        for n in ["hydra-ai", "hydra-compute", "hydra-storage"] { try cluster.startAgent(n) }
        let base = try consoleURL("coordinator", marker: "component=console url=")
        try waitUntil("3 nodes up") { cluster.nodeCount() == 3 }
        let batch = try cluster.submit("""
            name: "gallery <script>alert(1)</script>"
            jobs:
              - {name: "tile <script>x</script>", kind: sleep, count: 2, vram: 4GiB, spec: {duration_s: 0.1, output: {images: ["\(png)"]}}}
              - {name: scorer, kind: sleep, spec: {duration_s: 0.1}}
            """)
        try waitUntil("batch done") { try cluster.summary(batch).isDone }
        let store = cluster.store()
        let approval = try store.requestApproval(action: "train_lora", tier: 2, title: "LoRA <script>alert(2)</script>",
                                                 detail: .object(["images": .array([.string(png)])]), batchID: batch)
        let job = try store.jobs(.init(batchID: batch)).first { $0.name.hasPrefix("tile") }!

        // Pages.
        XCTAssertEqual(try http("GET", base, "/").status, 302)
        for (path, needles) in [
            ("/cluster", ["hydra-ai", "hydra-compute", "hydra-storage", "NVIDIA GeForce RTX 5090", "NVIDIA GeForce RTX 3060", "class=\"bar\""]),
            ("/batches", ["gallery &lt;script&gt;alert(1)&lt;/script&gt;", "data-states=\"succeeded\">3<"]),
            ("/batches/\(batch)", ["tile &lt;script&gt;x&lt;/script&gt;", "3 jobs, 3 succeeded, 0 failed, 0 lost"]),
            ("/batches/\(batch)?state=succeeded", ["page 1 of 1 · 3 jobs"]),
            ("/jobs/\(job.id)", ["class=\"timeline\"", "/thumb?path=", "hydra-"]),
            ("/approvals", ["LoRA &lt;script&gt;alert(2)&lt;/script&gt;", "/thumb?path=", "name=\"csrf\""]),
            ("/nights", ["Night one &lt;script&gt;x&lt;/script&gt;", "<table>"]),
            ("/nights/2031-03-14_overnight_report.md", ["<td>1</td>"]),
            ("/static/console.css", [".bar"]), ("/static/console.js", ["/api/v1/nodes"]),
        ] {
            let r = try http("GET", base, path)
            XCTAssertEqual(r.status, 200, "\(path): \(r.body.prefix(300))")
            for n in needles { XCTAssertTrue(r.body.contains(n), "\(path) should contain \(n)") }
            XCTAssertFalse(r.body.contains("<script>alert") || r.body.contains("<script>x"), "\(path) must escape")
        }
        XCTAssertLessThan(try http("GET", base, "/nights").body.range(of: "2031-03-15")!.lowerBound,
                          try http("GET", base, "/nights").body.range(of: "2031-03-14")!.lowerBound, "newest first")
        XCTAssertEqual(try http("GET", base, "/jobs/00000000-0000-4000-8000-000000000000").status, 404)
        XCTAssertEqual(try http("GET", base, "/batches/\(batch)?state=sleeping").status, 400)

        // Pictures: the occupancy chart draws the two GPU jobs on their GPUs; the batch's sparkline.
        let occ = try http("GET", base, "/cluster/occupancy.svg")
        XCTAssertEqual(occ.status, 200)
        XCTAssertEqual(occ.headers["content-type"], "image/svg+xml; charset=utf-8")
        XCTAssertTrue(occ.body.contains("NVIDIA GeForce RTX 5090"), occ.body)
        XCTAssertEqual(occ.body.components(separatedBy: "class=\"b s-succeeded\"").count - 1, 2, occ.body)
        XCTAssertFalse(occ.body.contains("<script>x"), "job names in <title> are escaped")
        let spark = try http("GET", base, "/batches/\(batch)/rate.svg")
        XCTAssertEqual(spark.status, 200)
        XCTAssertTrue(spark.body.hasPrefix("<svg") && spark.body.contains("peak 3"), spark.body)
        XCTAssertEqual(try http("GET", base, "/batches/not-a-uuid/rate.svg").status, 404)
        XCTAssertTrue(try http("GET", base, "/cluster").body.contains("/cluster/occupancy.svg"))
        XCTAssertTrue(try http("GET", base, "/batches").body.contains("/batches/\(batch)/rate.svg"))

        // Files: only from the output directory.
        let thumb = try http("GET", base, "/thumb?path=\(HTML.urlComponent(png))")
        XCTAssertEqual(thumb.status, 200)
        XCTAssertEqual(thumb.headers["content-type"], "image/png")
        XCTAssertEqual(try http("GET", base, "/media?path=media%2Ftile.png").status, 200)
        // A thumbnail is a small image of its own; /media sends the original.
        let bigThumb = try http("GET", base, "/thumb?path=media%2Fbig.png")
        XCTAssertEqual(bigThumb.status, 200)
        XCTAssertLessThan(Int(bigThumb.headers["content-length"] ?? "") ?? .max, 600 * 400 * 3 / 4, "\(bigThumb.headers)")
        XCTAssertEqual(Int(try http("GET", base, "/media?path=media%2Fbig.png").headers["content-length"] ?? ""), big.count)
        XCTAssertEqual(try http("GET", base, "/thumb?path=..%2Fprivate.png").status, 403)
        XCTAssertEqual(try http("GET", base, "/thumb?path=\(HTML.urlComponent(cluster.dir.appendingPathComponent("private.png").path))").status, 403)
        XCTAssertEqual(try http("GET", base, "/thumb?path=%2Fetc%2Fpasswd").status, 403)

        // API: the CLI's --json shapes.
        let cliNodes = try JSONCoding.decode(JSONValue.self, from: cluster.hydra(["nodes", "--json"]).stdout)
        let apiNodes = try XCTUnwrap(try http("GET", base, "/api/v1/nodes").json)
        XCTAssertEqual(apiNodes["nodes"]?.arrayValue?.compactMap { $0["name"]?.stringValue }, cliNodes["nodes"]?.arrayValue?.compactMap { $0["name"]?.stringValue })
        XCTAssertEqual(apiNodes["nodes"]?.arrayValue?.first?.objectValue.map { Set($0.keys) }, cliNodes["nodes"]?.arrayValue?.first?.objectValue.map { Set($0.keys) })
        let apiBatches = try http("GET", base, "/api/v1/batches")
        let sums = try JSONDecoder().decode([String: [BatchSummary]].self, from: Data(apiBatches.body.utf8))["batches"]!
        XCTAssertEqual(sums, [try cluster.summary(batch)])
        let one = try http("GET", base, "/api/v1/batches/\(batch)")
        XCTAssertEqual(try JSONDecoder().decode(BatchSummary.self, from: Data(one.body.utf8)), try cluster.summary(batch))
        XCTAssertNotNil(one.json?["rate_per_minute"])
        let apiJobs = try JSONDecoder().decode([String: [JobRow]].self, from: Data(try http("GET", base, "/api/v1/jobs?batch=\(batch)").body.utf8))["jobs"]!
        let cliJobs = try JSONDecoder().decode([String: [JobRow]].self, from: Data(try cluster.hydra(["jobs", "--batch", batch, "--json"]).stdout.utf8))["jobs"]!
        XCTAssertEqual(apiJobs, cliJobs)
        XCTAssertEqual(try http("GET", base, "/api/v1/jobs?state=succeeded&limit=1").json?["jobs"]?.arrayValue?.count, 1)
        let apiJob = try XCTUnwrap(try http("GET", base, "/api/v1/jobs/\(job.id)").json)
        XCTAssertEqual(apiJob["job"]?["id"]?.stringValue, job.id)
        XCTAssertGreaterThanOrEqual(apiJob["events"]?.arrayValue?.count ?? 0, 4)
        XCTAssertEqual(try http("GET", base, "/api/v1/approvals").json?["approvals"]?.arrayValue?.count, 1)
        XCTAssertEqual(try http("GET", base, "/api/v1/approvals/\(approval)").json?["title"]?.stringValue, "LoRA <script>alert(2)</script>")
        XCTAssertEqual(try http("GET", base, "/api/v1/nights").json?["reports"]?.arrayValue?.first?["date"]?.stringValue, "2031-03-15")
        XCTAssertEqual(try http("GET", base, "/api/v1/nights/2031-03-15_overnight_report.md").json?["markdown"]?.stringValue, "# Night two\n")
        XCTAssertEqual(try http("GET", base, "/api/v1/nope").status, 404)
        XCTAssertEqual(try http("GET", base, "/api/v1/nodes", headers: ["Host": "rebind.example:80"]).status, 403, "DNS rebinding")

        // State changes from the page: session cookie + CSRF token + same Origin.
        let page = try http("GET", base, "/approvals")
        let cookie = try XCTUnwrap(page.headers["set-cookie"]?.components(separatedBy: ";").first)
        let csrf = try XCTUnwrap(page.body.range(of: "name=\"csrf-token\" content=\"").map { String(page.body[$0.upperBound...].prefix(64)) })
        let form = ["Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "Origin": base]
        let forged = try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: form, body: "decision=approve&next=%2Fapprovals")
        XCTAssertEqual(forged.status, 403, "no CSRF token")
        var crossSite = form
        crossSite["Origin"] = "http://127.0.0.1:1"
        XCTAssertEqual(try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: crossSite, body: "decision=approve&csrf=\(csrf)").status, 403)
        XCTAssertEqual(try http("GET", base, "/api/v1/approvals/\(approval)/decide?decision=approve").status, 404, "no state change by GET")
        XCTAssertEqual(try store.approval(id: approval)?.state, "awaiting_approval")
        let noReason = try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: form, body: "decision=reject&reason=&csrf=\(csrf)")
        XCTAssertEqual(noReason.status, 422)
        let ok = try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: form,
                          body: "decision=approve&reason=looks%20right&next=%2Fapprovals&csrf=\(csrf)")
        XCTAssertEqual(ok.status, 303, ok.body)
        XCTAssertTrue(ok.headers["location"]?.hasPrefix("/approvals?flash=Approved") == true, "\(ok.headers)")
        let decided = try XCTUnwrap(try store.approval(id: approval))
        XCTAssertEqual([decided.state, decided.decidedBy, decided.reason], ["approved", "console@127.0.0.1", "looks right"])
        XCTAssertEqual(try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: form, body: "decision=reject&reason=late&csrf=\(csrf)").status, 409)
        XCTAssertTrue(try http("GET", base, "/approvals").body.contains("looks right"), "audit history shows the decision")

        // Non-browser clients (no token configured): JSON + the custom header.
        let api = ["Content-Type": "application/json", "X-Hydra-Client": "test"]
        let drain = try http("POST", base, "/api/v1/nodes/hydra-compute/drain", headers: api, body: "{}")
        XCTAssertEqual(drain.json?["draining"]?.boolValue, true, drain.body)
        XCTAssertTrue(try store.nodes().first { $0.name == "hydra-compute" }!.draining)
        XCTAssertTrue(try http("GET", base, "/cluster").body.contains("badge draining"))
        XCTAssertEqual(try http("POST", base, "/api/v1/nodes/hydra-compute/drain", headers: api, body: #"{"undo": true}"#).json?["draining"]?.boolValue, false)
        XCTAssertEqual(try http("POST", base, "/api/v1/nodes/no-such-node/drain", headers: api, body: "{}").status, 404)
        XCTAssertEqual(try http("POST", base, "/api/v1/nodes/hydra-ai/drain", headers: ["Content-Type": "application/json"], body: "{}").status, 403,
                       "no CSRF proof at all")
        let longJob = try cluster.submit("name: long\njobs:\n  - {name: nap, kind: sleep, spec: {duration_s: 60}}\n")
        let nap = try store.jobIDs(batch: longJob)[0]
        XCTAssertEqual(try http("POST", base, "/api/v1/jobs/\(nap)/cancel", headers: api, body: "{}").json?["changed"]?.intValue, 1)
        try waitUntil("cancelled") { try store.job(nap)?.state == .cancelled }
        XCTAssertEqual(try http("POST", base, "/api/v1/jobs/\(nap)/retry", headers: api, body: "{}").json?["changed"]?.intValue, 1)
        XCTAssertEqual(try http("POST", base, "/api/v1/batches/\(longJob)/cancel", headers: api, body: "{}").json?["changed"]?.intValue, 1)
        XCTAssertEqual(try http("POST", base, "/api/v1/batches/\(longJob)/retry", headers: api, body: "{}").json?["changed"]?.intValue, 1)
        XCTAssertEqual(try http("POST", base, "/api/v1/batches/\(longJob)/cancel", headers: api, body: "{}").json?["changed"]?.intValue, 1)
        let audit = try XCTUnwrap(try http("GET", base, "/api/v1/audit").json?["audit"]?.arrayValue)
        XCTAssertEqual(Set(audit.compactMap { $0["action"]?.stringValue }),
                       ["approval_requested", "approve", "drain", "undrain", "cancel", "retry", "batch_cancel", "batch_retry"])
    }

    func testTokenProtectedStandaloneConsole() throws {
        let tokenFile = cluster.dir.appendingPathComponent("console.token").path
        let token = "t0ken-\(UUID().uuidString)"
        try token.write(toFile: tokenFile, atomically: true, encoding: .utf8)
        chmod(tokenFile, 0o644)
        let loose = try cluster.hydra(["console", "--listen", "127.0.0.1:0", "--console-token-file", tokenFile])
        XCTAssertEqual(loose.status, 2, "a token file readable by others is refused")
        XCTAssertTrue(loose.stderr.contains("chmod 600"), loose.stderr)
        let open = try cluster.hydra(["console", "--listen", "0.0.0.0:0"])
        XCTAssertEqual(open.status, 2, "no token on a non-loopback address")
        XCTAssertTrue(open.stderr.contains("not a loopback address"), open.stderr)
        chmod(tokenFile, 0o600)

        try cluster.start("console", binary: "hydra", ["console", "--listen", "127.0.0.1:0", "--console-token-file", tokenFile])
        let base = try consoleURL("console", marker: "hydra console: ")
        let store = cluster.store()
        let approval = try store.requestApproval(action: "delete_assets", tier: 3, title: "Delete drafts", detail: .object([:]))

        XCTAssertEqual(try http("GET", base, "/cluster").headers["location"], "/login")
        XCTAssertEqual(try http("GET", base, "/api/v1/nodes").status, 401)
        XCTAssertEqual(try http("GET", base, "/api/v1/nodes", headers: ["Authorization": "Bearer wrong"]).status, 401)
        XCTAssertEqual(try http("GET", base, "/api/v1/nodes", headers: ["Authorization": "Bearer \(token)"]).status, 200)
        XCTAssertEqual(try http("GET", base, "/cluster", headers: ["Host": "console.example:443", "Authorization": "Bearer \(token)"]).status, 200,
                       "with a token any Host name is fine")

        // Browser login: the login form's CSRF token, then a fresh authenticated session.
        let login = try http("GET", base, "/login")
        let pre = try XCTUnwrap(login.headers["set-cookie"]?.components(separatedBy: ";").first)
        let csrf = try XCTUnwrap(login.body.range(of: "name=\"csrf-token\" content=\"").map { String(login.body[$0.upperBound...].prefix(64)) })
        let form = ["Content-Type": "application/x-www-form-urlencoded", "Origin": base]
        var h = form; h["Cookie"] = pre
        XCTAssertEqual(try http("POST", base, "/login", headers: h, body: "csrf=\(csrf)&token=wrong").status, 401)
        let good = try http("POST", base, "/login", headers: h, body: "csrf=\(csrf)&token=\(HTML.urlComponent(token))")
        XCTAssertEqual(good.status, 303)
        let session = try XCTUnwrap(good.headers["set-cookie"]?.components(separatedBy: ";").first)
        XCTAssertNotEqual(session, pre, "a new session id after login")
        let page = try http("GET", base, "/approvals", headers: ["Cookie": session])
        XCTAssertEqual(page.status, 200)
        XCTAssertEqual(try http("GET", base, "/approvals", headers: ["Cookie": pre]).status, 303, "the pre-login session is gone")
        let csrf2 = try XCTUnwrap(page.body.range(of: "name=\"csrf-token\" content=\"").map { String(page.body[$0.upperBound...].prefix(64)) })
        h["Cookie"] = session
        let decided = try http("POST", base, "/api/v1/approvals/\(approval)/decide", headers: h, body: "decision=reject&reason=not%20now&csrf=\(csrf2)&next=%2Fapprovals")
        XCTAssertEqual(decided.status, 303, decided.body)
        XCTAssertEqual(try store.approval(id: approval)?.state, "rejected")

        // API clients: the token in a header is both the credential and the CSRF proof.
        let other = try store.requestApproval(action: "publish", tier: 1, title: "Publish", detail: .object([:]))
        XCTAssertEqual(try http("POST", base, "/api/v1/approvals/\(other)/decide", headers: ["Content-Type": "application/json", "X-Hydra-Client": "x"],
                                body: #"{"decision":"approve"}"#).status, 403, "the custom header alone is not enough once a token exists")
        let viaAPI = try http("POST", base, "/api/v1/approvals/\(other)/decide",
                              headers: ["Content-Type": "application/json", "Authorization": "Bearer \(token)"], body: #"{"decision":"approve"}"#)
        XCTAssertEqual(viaAPI.json?["approval"]?["state"]?.stringValue, "approved", viaAPI.body)
    }
}
