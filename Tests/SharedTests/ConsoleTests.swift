import Foundation
import XCTest
@testable import HydraCore
@testable import HydraIO
@testable import HydraStore
@testable import HydraConsole

/// Rendering, escaping and the request checks of the web console, without a database.
final class ConsoleRenderingTests: XCTestCase {
    static let evil = "<script>alert('x')</script>"
    let ctx = PageContext(csrf: "c0ffee", now: 2_000_000_000)

    /// Markup written by the pages themselves must never come out escaped (that
    /// means a literal was typed as String somewhere), and user data never raw.
    func assertClean(_ html: HTML, file: StaticString = #filePath, line: UInt = #line) {
        let t = html.text
        XCTAssertFalse(t.contains("<script>alert"), "raw script in output", file: file, line: line)
        XCTAssertEqual(t.components(separatedBy: "<script").count - 1, t.contains("<!doctype") ? 1 : 0,
                       "only the console's own script tag", file: file, line: line)
        // Shapes only the pages' own markup has (test data uses bare tags like <img src=x>).
        for tag in ["&lt;p class=", "&lt;table", "&lt;div class=", "&lt;small&gt;attempt", "&lt;tr&gt;&lt;t", "&lt;span class=",
                    "&lt;img class=&quot;thumb", "&lt;a href=&quot;/", "&lt;code&gt;{", "&amp;lt;", "&amp;quot;"] {
            XCTAssertFalse(t.contains(tag), "trusted markup came out escaped: \(tag)", file: file, line: line)
        }
    }

    static func job(name: String, state: JobState = .succeeded, result: String? = nil, reason: String? = nil, errors: String = "[]") -> JobRow {
        let cols = ["id", "batch_id", "name", "kind", "spec", "state", "priority", "vram_request_bytes", "gpus_requested",
                    "placement_constraints", "attempt", "max_attempts", "node", "gpu_uuids", "stream_id", "submitted_at",
                    "dispatched_at", "started_at", "finished_at", "deadline_s", "pending_reason", "failure_class", "result", "error"]
        let vals: [String?] = ["11111111-2222-4333-8444-555555555555", "99999999-2222-4333-8444-555555555555", name, "sleep",
                               #"{"prompt":"<b>bold</b>"}"#, state.rawValue, "1", "\(8 << 30)", "1", "{}", "2", "3", "hydra-ai",
                               "{GPU-a}", nil, "1999999000", "1999999100", "1999999110", "1999999170", nil, reason,
                               state == .failed ? "oom" : nil, result, errors]
        return JobRow(row: PGRow(columns: cols, values: vals))
    }

    static func summary(name: String) -> BatchSummary {
        BatchSummary(id: "99999999-2222-4333-8444-555555555555", name: name, submittedAt: 1_999_999_000, priority: 2, total: 10,
                     byState: ["succeeded": 6, "failed": 1, "pending": 3])
    }

    func testEscapeCoversContentAndAttributes() {
        XCTAssertEqual(HTML.escape(#"<a href="x" onclick='y'>&"#), "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;")
        XCTAssertEqual(HTML.escape("plain text"), "plain text")
        let name = Self.evil
        let h: HTML = "<td title=\"\(name)\">\(name)</td>"
        XCTAssertEqual(h.text, "<td title=\"&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</td>")
        XCTAssertEqual(HTML.urlComponent("/a b/../é?&x"), "%2Fa%20b%2F..%2F%C3%A9%3F%26x")
    }

    func testBatchNameWithScriptIsText() {
        let p = BatchProgress(summary: Self.summary(name: Self.evil), ratePerMinute: 3, expectedFinish: nil)
        let html = ConsolePages.batches([p], ctx: ctx)
        XCTAssertTrue(html.text.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"))
        assertClean(html)
        let page = ConsolePages.batchPage(BatchPageData(progress: p, jobs: [Self.job(name: Self.evil, state: .pending, reason: "needs <16 GiB>")],
                                                        stateFilter: [.pending], page: 1, pageSize: 100, matching: 3), ctx: ctx)
        XCTAssertTrue(page.text.contains("needs &lt;16 GiB&gt;"))
        XCTAssertTrue(page.text.contains("?state=pending"))
        assertClean(page)
    }

    func testJobPageEscapesNameOutputsErrorsAndTimeline() {
        let result = #"{"output":{"images":["/out/a.png"],"audio":"/out/v.wav","text":"</pre><script>x()</script>"},"duration_s":60,"peak_vram_bytes":7516192768}"#
        let errors = #"[{"attempt":1,"class":"oom","message":"<img src=x onerror=alert(1)>","node":"hydra-ai","at":1999999050}]"#
        let d = JobPageData(job: Self.job(name: Self.evil, result: result, errors: errors), batchName: "<b>night</b>",
                            events: [JobEventRow(at: 1999999000, attempt: 0, from: nil, to: "pending", detail: .object(["event": .string("<x>")])),
                                     JobEventRow(at: 1999999100, attempt: 1, from: "pending", to: "dispatched", detail: nil)],
                            gpuNames: ["GPU-a": "hydra-ai #0 NVIDIA GeForce RTX 5090"])
        let html = ConsolePages.jobPage(d, ctx: ctx)
        let t = html.text
        XCTAssertTrue(t.contains("<img class=\"thumb\" loading=\"lazy\" src=\"/thumb?path=%2Fout%2Fa.png\""))
        XCTAssertTrue(t.contains("<audio controls preload=\"none\" src=\"/media?path=%2Fout%2Fv.wav\">"))
        XCTAssertTrue(t.contains("&lt;/pre&gt;&lt;script&gt;x()&lt;/script&gt;"))
        XCTAssertTrue(t.contains("&lt;img src=x onerror=alert(1)&gt;"))
        XCTAssertTrue(t.contains("<small>attempt 1</small>"))
        XCTAssertTrue(t.contains("7.0 GiB"), "peak VRAM")
        XCTAssertTrue(t.contains("NVIDIA GeForce RTX 5090"))
        XCTAssertTrue(t.contains("60 s"), "duration")
        assertClean(html)
    }

    func testApprovalTitleAndDetailAreEscapedAndImagesAreThumbnails() {
        let a = Approval(id: "aaaaaaaa-2222-4333-8444-555555555555", createdAt: 1_999_999_000, action: "train_lora", tier: 2, title: Self.evil,
                         detail: .object(["images": .array([.string("/out/x\".png")]), "note": .string("<i>n</i>")]),
                         state: "awaiting_approval", jobID: nil, batchID: nil, decidedAt: nil, decidedBy: nil, reason: nil)
        var decided = a
        decided.state = "rejected"; decided.reason = "<u>blurry</u>"; decided.decidedBy = "console@127.0.0.1"
        let html = ConsolePages.approvals(ApprovalsPageData(pending: [a], decided: [decided],
                                                            audit: [AuditEntry(at: 1, actor: "<op>", action: "reject", target: a.id, detail: nil)]), ctx: ctx)
        let t = html.text
        XCTAssertTrue(t.contains("<h2>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</h2>"))
        XCTAssertTrue(t.contains("src=\"/thumb?path=%2Fout%2Fx%22.png\""))
        XCTAssertTrue(t.contains("&lt;u&gt;blurry&lt;/u&gt;") && t.contains("&lt;op&gt;") && t.contains("&lt;i&gt;n&lt;/i&gt;"))
        XCTAssertTrue(t.contains("name=\"csrf\" value=\"c0ffee\""))
        XCTAssertTrue(t.contains("action=\"/api/v1/approvals/aaaaaaaa-2222-4333-8444-555555555555/decide\""))
        assertClean(html)
    }

    func testApprovalImagesCarryTheirGateScoresAndTheNightPageItsImages() {
        let a = Approval(id: "aaaaaaaa-2222-4333-8444-555555555555", createdAt: 1_999_999_000, action: "delete_assets", tier: 2, title: "Delete 2",
                         detail: .object(["images": .array([.string("/out/a.png"), .string("/out/b.png")])]),
                         state: "awaiting_approval", jobID: nil, batchID: nil, decidedAt: nil, decidedBy: nil, reason: nil)
        var data = ApprovalsPageData(pending: [a], decided: [], audit: [])
        data.scores = ["/out/a.png": ImageGateScores(path: "/out/a.png", state: "rejected", aesthetic: 4.25, musiq: 31.4, faceSimilarity: nil,
                                                     failedGates: ["aesthetic", "<musiq>"])]
        let t = ConsolePages.approvals(data, ctx: ctx).text
        XCTAssertTrue(t.contains("aesthetic 4.2 · musiq 31 · face —"), t)
        XCTAssertTrue(t.contains("failed: aesthetic, &lt;musiq&gt;"))
        XCTAssertTrue(t.contains("no scores"), "the image without a row says so")

        let night = NightReport(name: "2031-03-14_overnight_report.md", date: "2031-03-14", markdown: "# Night\n")
        let images = [ImageGateScores(path: "/assets/fox/1.png", state: "approved", aesthetic: 6.5, musiq: 55, faceSimilarity: 0.61, failedGates: []),
                      ImageGateScores(path: "/quarantine/fox/2.png", state: "rejected", aesthetic: 3.9, musiq: 20, faceSimilarity: nil, failedGates: ["aesthetic"])]
        let n = ConsolePages.night(night, ctx: ctx, images: images).text
        let approved = try! XCTUnwrap(n.range(of: "Approved")), rejected = try! XCTUnwrap(n.range(of: "Rejected"))
        XCTAssertLessThan(approved.lowerBound, rejected.lowerBound)
        XCTAssertTrue(n.contains("src=\"/thumb?path=%2Fassets%2Ffox%2F1.png\""))
        XCTAssertTrue(n.contains("aesthetic 6.5 · musiq 55 · face 0.61"))
        XCTAssertFalse(ConsolePages.night(night, ctx: ctx).text.contains("class=\"gallery\""))
    }

    func testClusterPageShowsVRAMSplitAndEscapesNodeNames() {
        let gpu = GPUInfo(index: 0, uuid: "GPU-a", name: "NVIDIA GeForce RTX 5090", memoryTotalBytes: 32 << 30, memoryUsedBytes: 20 << 30,
                          utilizationGPUPercent: 87, temperatureCelsius: 71)
        let snap = ConsoleClusterView(nodes: [NodeRow(name: "hydra-ai", lastSeen: 1_999_999_999, up: true, draining: false, agentVersion: "0.1.0",
                                                   inventory: Inventory(gpus: [gpu]), running: []),
                                           NodeRow(name: "<bad>", lastSeen: nil, up: false, draining: false, agentVersion: nil, inventory: Inventory(), running: [])],
                                   active: [ActiveJob(id: "j1", name: Self.evil, state: "running", node: "hydra-ai", gpuUUIDs: ["GPU-a"], vramBytes: 12 << 30)],
                                   jobCounts: ["running": 1], now: 2_000_000_000)
        let html = ConsolePages.cluster(snap, ctx: ctx)
        let t = html.text
        XCTAssertTrue(t.contains("others 8.0 GiB · Hydra 12.0 GiB · free 12.0 GiB / 32.0 GiB"), t)
        XCTAssertTrue(t.contains("width:25.0%") && t.contains("width:37.5%"))
        XCTAssertTrue(t.contains("87%") && t.contains("71 °C"))
        XCTAssertTrue(t.contains("data-node=\"&lt;bad&gt;\"") && t.contains("badge down"))
        assertClean(html)
    }

    func testClusterPageMarksAGPUReadingTooOldToPlaceBy() {
        let gpu = GPUInfo(index: 0, uuid: "GPU-a", name: "RTX 4090", memoryTotalBytes: 24 << 30, memoryUsedBytes: 1 << 30)
        func page(_ age: Double?, up: Bool = true, gpus: [GPUInfo]? = nil) -> String {
            let n = NodeRow(name: "hydra-ai", lastSeen: 1_999_999_999, up: up, draining: false, agentVersion: "0.1.0",
                            inventory: Inventory(gpus: gpus ?? [gpu]), running: [], gpuSampleAgeS: age)
            return ConsolePages.cluster(ConsoleClusterView(nodes: [n], active: [], jobCounts: [:], now: 2_000_000_000), ctx: ctx).text
        }
        XCTAssertTrue(page(45).contains("GPU reading 45 s old: no GPU jobs placed here"))
        // The router's own threshold: 30 s still places, and so does a node that never said.
        for quiet in [page(30), page(2), page(nil), page(45, up: false), page(45, gpus: [])] {
            XCTAssertFalse(quiet.contains("data-stale-reading"))
        }
    }

    func testVRAMSplitNeverGoesNegative() {
        let g = GPUInfo(uuid: "g", memoryTotalBytes: 10, memoryUsedBytes: 4)
        let s = VRAMSplit(gpu: g, reserved: 6)
        XCTAssertEqual([s.usedByOthers, s.reservedByHydra, s.free], [0, 6, 4])
        let over = VRAMSplit(gpu: g, reserved: 30)
        XCTAssertEqual(over.free, 0)
        XCTAssertEqual(over.percents.hydra, 100)
        XCTAssertEqual(ConsoleClusterView.reservations([
            ActiveJob(id: "a", name: "", state: "running", node: "n", gpuUUIDs: ["g1", "g2"], vramBytes: 5),
            ActiveJob(id: "b", name: "", state: "placed", node: "n", gpuUUIDs: ["g1"], vramBytes: 3),
            ActiveJob(id: "c", name: "", state: "succeeded", node: "n", gpuUUIDs: ["g1"], vramBytes: 100),
        ]), ["g1": 8, "g2": 5])
    }

    func testBatchEstimate() {
        let s = Self.summary(name: "n")  // 10 jobs, 7 finished
        let p = BatchProgress.estimate(summary: s, finishedInWindow: 6, windowSeconds: 600, firstStartedAt: 1000 - 120, lastFinishedAt: 990, now: 1000)
        XCTAssertEqual(p.ratePerMinute ?? 0, 3, accuracy: 1e-9, "6 jobs in the 2 minutes since the first start")
        XCTAssertEqual(p.expectedFinish ?? 0, 1060, accuracy: 1e-6, "3 left at 3/min")
        XCTAssertNil(BatchProgress.estimate(summary: s, finishedInWindow: 0, windowSeconds: 600, firstStartedAt: nil, lastFinishedAt: nil, now: 1000).expectedFinish)
    }

    func testMarkdownReportIsRenderedAndEscaped() {
        let md = """
        # Night of 2031-03-14 <script>alert(1)</script>

        Ran **9 jobs**, *two* retried; see [the batch](/batches/abc) or [evil](javascript:alert(1)).
        Inline `<code>` and a <b>tag</b>.

        - first <i>item</i>
        - second
          continued

        1. one
        2. two

        | node | jobs |
        |---|---:|
        | hydra-ai <x> | 5 |
        | a \\| b | 4 |

        ```swift
        let x = "<script>"
        ```

        > quoted **text**

        ---
        """
        let t = Markdown.render(md).text
        XCTAssertTrue(t.contains("<h1 id=\"night-of-2031-03-14--script-alert-1---script-\">Night of 2031-03-14 &lt;script&gt;alert(1)&lt;/script&gt;</h1>"), t)
        XCTAssertTrue(t.contains("<strong>9 jobs</strong>") && t.contains("<em>two</em>"))
        XCTAssertTrue(t.contains("<a href=\"/batches/abc\" rel=\"noopener noreferrer\">the batch</a>"))
        XCTAssertFalse(t.contains("href=\"javascript"), "javascript: links are not links")
        XCTAssertTrue(t.contains("<code>&lt;code&gt;</code>") && t.contains("&lt;b&gt;tag&lt;/b&gt;"))
        XCTAssertTrue(t.contains("<ul>\n<li>first &lt;i&gt;item&lt;/i&gt;</li>\n<li>second continued</li>\n</ul>"), t)
        XCTAssertTrue(t.contains("<ol>\n<li>one</li>\n<li>two</li>\n</ol>"))
        XCTAssertTrue(t.contains("<th style=\"text-align:right\">jobs</th>") && t.contains("<td>hydra-ai &lt;x&gt;</td>") && t.contains("<td>a | b</td>"))
        XCTAssertTrue(t.contains("<pre><code class=\"language-swift\">let x = &quot;&lt;script&gt;&quot;</code></pre>"))
        XCTAssertTrue(t.contains("<blockquote><p>quoted <strong>text</strong></p>\n</blockquote>"))
        XCTAssertTrue(t.contains("<hr>"))
        XCTAssertFalse(t.contains("<script"))
        XCTAssertEqual(Markdown.title(md), "Night of 2031-03-14 <script>alert(1)</script>")

        let page = ConsolePages.nights([NightReport(name: "2031-03-15_overnight_report.md", date: "2031-03-15", markdown: md),
                                        NightReport(name: "2031-03-14_overnight_report.md", date: "2031-03-14", markdown: "# older")],
                                       configured: true, ctx: ctx)
        assertClean(page)
        XCTAssertLessThan(page.text.range(of: "2031-03-15")!.lowerBound, page.text.range(of: "2031-03-14</a>")!.lowerBound)
    }

    func testFlashAndErrorMessagesAreEscaped() {
        let html = ConsolePages.error(404, "no job <img src=x>", ctx: PageContext(csrf: "c", flash: "<script>x</script>"))
        XCTAssertTrue(html.text.contains("no job &lt;img src=x&gt;") && html.text.contains("&lt;script&gt;x&lt;/script&gt;"))
        assertClean(html)
    }

    func testJobOutputsAreClassified() {
        let r: JSONValue = .object(["output": .object(["files": .array([.string("/o/a.PNG"), .string("/o/b.flac"), .string("/o/c.safetensors")]),
                                                       "stdout": .string("done")])])
        XCTAssertEqual(JobOutput.extract(from: r), [.image(path: "/o/a.PNG"), .audio(path: "/o/b.flac"), .file(path: "/o/c.safetensors"),
                                                   .text(label: "stdout", value: "done")])
    }
}

final class ConsoleSecurityTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("console-sec-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("out/job1"), withIntermediateDirectories: true)
        try Data("png".utf8).write(to: dir.appendingPathComponent("out/job1/a.png"))
        try Data("secret".utf8).write(to: dir.appendingPathComponent("secret.png"))
        try Data("x".utf8).write(to: dir.appendingPathComponent("out/job1/page.html"))
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("out/job1/link.png").path,
                                                   withDestinationPath: dir.appendingPathComponent("secret.png").path)
        try FileManager.default.createSymbolicLink(atPath: dir.appendingPathComponent("out/inside.png").path,
                                                   withDestinationPath: dir.appendingPathComponent("out/job1/a.png").path)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: dir) }

    func testOutputFilesOnlyFromTheOutputDirectories() {
        let out = dir.appendingPathComponent("out").path
        let g = OutputFileGuard(roots: [out])
        let real = OutputFileGuard.realPath(out)!
        XCTAssertEqual(g.resolve(out + "/job1/a.png"), .success(real + "/job1/a.png"))
        XCTAssertEqual(g.resolve("job1/a.png"), .success(real + "/job1/a.png"), "relative to the root")
        XCTAssertEqual(g.resolve(out + "/inside.png"), .success(real + "/job1/a.png"), "a symlink that stays inside is fine")
        XCTAssertEqual(g.resolve("../secret.png"), .failure(.notAllowed), "../ traversal")
        XCTAssertEqual(g.resolve(out + "/job1/../../secret.png"), .failure(.notAllowed), "../ inside an absolute path")
        XCTAssertEqual(g.resolve(dir.appendingPathComponent("secret.png").path), .failure(.notAllowed), "absolute path outside")
        XCTAssertEqual(g.resolve("/etc/passwd"), .failure(.notAllowed))
        XCTAssertEqual(g.resolve(out + "/job1/link.png"), .failure(.notAllowed), "symlink pointing out")
        XCTAssertEqual(g.resolve(out + "/job1/page.html"), .failure(.notMedia), "only images and audio")
        XCTAssertEqual(g.resolve(out + "/job1"), .failure(.notFound), "directories are not files")
        XCTAssertEqual(g.resolve(out + "/job1/none.png"), .failure(.notFound))
        XCTAssertEqual(g.resolve(""), .failure(.notAllowed))
        XCTAssertEqual(OutputFileGuard(roots: []).resolve(out + "/job1/a.png"), .failure(.notAllowed), "no roots: nothing served")
        // A sibling directory whose name starts with the root's name is not inside it.
        try? FileManager.default.createDirectory(at: dir.appendingPathComponent("out-evil"), withIntermediateDirectories: true)
        try? Data("p".utf8).write(to: dir.appendingPathComponent("out-evil/b.png"))
        XCTAssertEqual(g.resolve(dir.appendingPathComponent("out-evil/b.png").path), .failure(.notAllowed))
    }

    func testTokenFileMustBePrivate() throws {
        let f = dir.appendingPathComponent("console.token").path
        try "s3cret-token-for-tests\n".write(toFile: f, atomically: true, encoding: .utf8)
        chmod(f, 0o644)
        XCTAssertThrowsError(try ConsoleToken.load(path: f)) { XCTAssertTrue("\($0)".contains("chmod 600"), "\($0)") }
        chmod(f, 0o600)
        XCTAssertEqual(try ConsoleToken.load(path: f), "s3cret-token-for-tests")
        XCTAssertEqual(try ConsoleToken.load(path: nil, environment: ["CREDENTIALS_DIRECTORY": dir.path]), "s3cret-token-for-tests")
        XCTAssertNil(try ConsoleToken.load(path: nil, environment: [:]))
        try "short".write(toFile: f, atomically: true, encoding: .utf8)
        chmod(f, 0o600)
        XCTAssertThrowsError(try ConsoleToken.load(path: f))
        XCTAssertTrue(ConsoleToken.isLoopback(host: "127.0.0.1") && ConsoleToken.isLoopback(host: "localhost"))
        XCTAssertFalse(ConsoleToken.isLoopback(host: "0.0.0.0") || ConsoleToken.isLoopback(host: "10.0.0.5"))
    }

    func post(_ headers: [String: String], body: String = "") -> HTTPRequest {
        var h = ["host": "127.0.0.1:8480", "content-type": "application/x-www-form-urlencoded"]
        h.merge(headers) { _, n in n }
        return HTTPRequest.local("POST", "/api/v1/approvals/x/decide", headers: h, body: Data(body.utf8))
    }

    func testWritesNeedPOSTSameOriginAndACSRFProof() {
        let sessions = ConsoleSessions()
        let s = sessions.create(authenticated: true)
        func verdict(_ r: HTTPRequest, token: String? = nil, session: ConsoleSessions.Session? = s) -> ConsoleGuard.Verdict {
            ConsoleGuard.checkWrite(r, form: ConsoleGuard.formFields(r), token: token, session: session)
        }
        XCTAssertEqual(verdict(post(["origin": "http://127.0.0.1:8480"], body: "csrf=\(s.csrf)&decision=approve")), .allow)
        XCTAssertEqual(verdict(post(["referer": "http://127.0.0.1:8480/approvals"], body: "csrf=\(s.csrf)")), .allow)
        guard case .forbidden = verdict(post(["origin": "http://127.0.0.1:8480"], body: "decision=approve")) else { return XCTFail("no CSRF token") }
        guard case .forbidden = verdict(post(["origin": "http://127.0.0.1:8480"], body: "csrf=wrong")) else { return XCTFail("wrong CSRF token") }
        guard case .forbidden = verdict(post(["origin": "http://evil.example"], body: "csrf=\(s.csrf)")) else { return XCTFail("foreign Origin") }
        guard case .forbidden = verdict(post(["origin": "null"], body: "csrf=\(s.csrf)")) else { return XCTFail("Origin null") }
        guard case .forbidden = verdict(post(["referer": "http://127.0.0.1:9999/x"], body: "csrf=\(s.csrf)")) else { return XCTFail("foreign Referer") }
        guard case .forbidden = verdict(post(["host": "evil.example:8480", "origin": "http://evil.example:8480"], body: "csrf=\(s.csrf)")) else {
            return XCTFail("DNS rebinding: a non-loopback Host without a token")
        }
        var get = post([:], body: "csrf=\(s.csrf)")
        get.method = "GET"
        guard case .forbidden = verdict(get) else { return XCTFail("GET must not change state") }
        // Non-browser clients: the custom header (no token configured) or the token in a header.
        XCTAssertEqual(verdict(post(["x-hydra-client": "curl", "content-type": "application/json"]), session: nil), .allow)
        guard case .forbidden = verdict(post(["x-hydra-client": "curl"]), token: "t0ken-t0ken-t0ken", session: nil) else {
            return XCTFail("with a token configured the custom header is not enough")
        }
        XCTAssertEqual(verdict(post(["authorization": "Bearer t0ken-t0ken-t0ken"]), token: "t0ken-t0ken-t0ken", session: nil), .allow)
        XCTAssertEqual(verdict(post([:], body: "token=t0ken-t0ken-t0ken"), token: "t0ken-t0ken-t0ken", session: nil), .allow)
        guard case .forbidden = verdict(post(["authorization": "Bearer wrong"]), token: "t0ken-t0ken-t0ken", session: nil) else { return XCTFail("wrong token") }
        // A valid CSRF token of a session that never logged in is not the console token.
        let anon = sessions.create(authenticated: false)
        XCTAssertEqual(verdict(post([:], body: "csrf=\(anon.csrf)"), token: "t0ken-t0ken-t0ken", session: anon), .unauthenticated)
    }

    func testLoginNeedsTheLoginFormsCSRFToken() {
        let s = ConsoleSessions().create(authenticated: false)
        func login(_ h: [String: String], _ body: String, _ session: ConsoleSessions.Session?) -> ConsoleGuard.Verdict {
            var r = post(h, body: body)
            r.path = "/login"
            return ConsoleGuard.checkLogin(r, form: ConsoleGuard.formFields(r), session: session)
        }
        XCTAssertEqual(login(["origin": "http://127.0.0.1:8480"], "csrf=\(s.csrf)&token=t", s), .allow)
        guard case .forbidden = login(["origin": "http://127.0.0.1:8480"], "token=t", s) else { return XCTFail("no CSRF token") }
        guard case .forbidden = login(["origin": "http://127.0.0.1:8480"], "csrf=\(s.csrf)", nil) else { return XCTFail("no session") }
        guard case .forbidden = login(["origin": "http://evil.example"], "csrf=\(s.csrf)", s) else { return XCTFail("login CSRF") }
    }

    func testReadsNeedTheTokenWhenOneIsConfigured() {
        let r = HTTPRequest.local("GET", "/cluster", headers: ["host": "hydra.example:8480"])
        XCTAssertEqual(ConsoleGuard.checkRead(r, token: "t0ken-t0ken-t0ken", session: nil), .unauthenticated)
        var withToken = r
        withToken.headers["authorization"] = "Bearer t0ken-t0ken-t0ken"
        XCTAssertEqual(ConsoleGuard.checkRead(withToken, token: "t0ken-t0ken-t0ken", session: nil), .allow)
        guard case .forbidden = ConsoleGuard.checkRead(r, token: nil, session: nil) else { return XCTFail("loopback-only console, foreign Host") }
        XCTAssertEqual(ConsoleGuard.checkRead(HTTPRequest.local("GET", "/", headers: ["host": "localhost:8480"]), token: nil, session: nil), .allow)
    }

    func testServerRefusesBeforeTouchingTheDatabase() {
        // An unreachable database: every answer here must come from the checks alone.
        let server = ConsoleServer(databaseURL: "postgres://nobody@127.0.0.1:1/none?connect_timeout=1", settings: ConsoleSettings())
        func status(_ r: HTTPRequest) -> (Int, [String: String], String) {
            guard case .full(let s, let h, let b) = server.handle(r) else { return (0, [:], "") }
            return (s, h, String(decoding: b, as: UTF8.self))
        }
        let (s1, h1, _) = status(HTTPRequest.local("GET", "/static/console.js", headers: ["host": "127.0.0.1"]))
        XCTAssertEqual(s1, 200)
        XCTAssertTrue(h1["Content-Security-Policy"]?.contains("script-src 'self'") == true)
        let (s2, _, b2) = status(post(["origin": "http://127.0.0.1:8480"], body: "decision=approve"))
        XCTAssertEqual(s2, 403, b2)
        let (s3, _, _) = status(HTTPRequest.local("GET", "/cluster", headers: ["host": "evil.example"]))
        XCTAssertEqual(s3, 403)
        let (s4, _, _) = status(HTTPRequest.local("DELETE", "/api/v1/jobs/x", headers: ["host": "127.0.0.1"]))
        XCTAssertEqual(s4, 405)
        XCTAssertEqual(ConsoleServer.localRedirect("//evil.example/x", flash: "ok"), "/cluster?flash=ok")
        XCTAssertEqual(ConsoleServer.localRedirect("https://evil.example", flash: "ok"), "/cluster?flash=ok")
        XCTAssertEqual(ConsoleServer.localRedirect("/approvals", flash: "Approved 'x'."), "/approvals?flash=Approved%20%27x%27.")
    }

    func testSessionsExpireAndAreBounded() {
        let sessions = ConsoleSessions(maxSessions: 20, idleSeconds: 100)
        let s = sessions.create(authenticated: false, now: 1000)
        XCTAssertNotNil(sessions.find(s.id, now: 1050))
        XCTAssertNil(sessions.find(s.id, now: 1200))
        for i in 0..<100 { _ = sessions.create(authenticated: false, now: 2000 + Double(i)) }
        XCTAssertEqual(ConsoleSessions.cookieValue("a=b; hydra_console=\(s.id); c=d"), s.id)
        XCTAssertTrue(ConsoleSessions.cookie(s).contains("HttpOnly; SameSite=Strict"))
        XCTAssertTrue(constantTimeEquals("abc", "abc") && !constantTimeEquals("abc", "abd") && !constantTimeEquals("abc", "abcd"))
    }
}
