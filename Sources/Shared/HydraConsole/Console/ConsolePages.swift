import Foundation
import HydraCore
import HydraIO
import HydraStore

/// Per-request facts every page needs.
public struct PageContext: Sendable {
    public var csrf: String
    public var flash: String?
    public var now: Double
    /// Whether pages show the logout link (a token is configured).
    public var tokenConfigured: Bool
    public init(csrf: String, flash: String? = nil, now: Double = Date().timeIntervalSince1970, tokenConfigured: Bool = false) {
        self.csrf = csrf; self.flash = flash; self.now = now; self.tokenConfigured = tokenConfigured
    }
}

/// The console's pages: pure functions from page data to HTML. Every string
/// from the database or a file reaches the output through `HTML` interpolation,
/// i.e. through `HTML.escape`.
public enum ConsolePages {
    /// The batch list groups states into what an operator asks: waiting, on a GPU, done well, done badly.
    static let stateGroups: [(label: String, states: [JobState])] = [
        ("waiting", [.pending, .retryWait]), ("running", [.placed, .dispatched, .running]), ("succeeded", [.succeeded]),
        ("failed", [.failed, .dead]), ("cancelled", [.cancelled]),
    ]
    static let stateOrder: [JobState] = [.pending, .retryWait, .placed, .dispatched, .running, .succeeded, .failed, .dead, .cancelled]

    // MARK: layout

    public static func layout(title: String, active: String, ctx: PageContext, live: String? = nil, body: HTML) -> HTML {
        let nav: [(String, String, String)] = [("cluster", "/cluster", "Cluster"), ("batches", "/batches", "Batches"),
                                               ("approvals", "/approvals", "Approvals"), ("nights", "/nights", "Nights")]
        let links = nav.map { n -> HTML in
            n.0 == active ? "<a href=\"\(n.1)\" class=\"active\" aria-current=\"page\">\(n.2)</a>" : "<a href=\"\(n.1)\">\(n.2)</a>"
        }
        let flash: HTML = ctx.flash.map { "<p class=\"flash\" role=\"status\">\($0)</p>" } ?? .empty
        let logout: HTML = ctx.tokenConfigured ? """
            <form method="post" action="/logout" class="inline"><input type="hidden" name="csrf" value="\(ctx.csrf)"><button class="link">log out</button></form>
            """ : .empty
        let liveAttr: HTML = live.map { " data-live=\"\($0)\"" } ?? .empty
        return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <meta name="csrf-token" content="\(ctx.csrf)">
        <title>\(title) · Hydra</title><link rel="stylesheet" href="/static/console.css"></head>
        <body\(liveAttr)><header><a class="brand" href="/cluster">Hydra</a><nav>\(links)</nav>
        <span class="live-status" id="live-status" aria-live="polite"></span>\(logout)</header>
        <main>\(flash)\(body)</main>
        <footer>rendered \(ConsoleFormat.time(ctx.now))</footer>
        <script src="/static/console.js"></script></body></html>
        """
    }

    static func csrfField(_ ctx: PageContext) -> HTML { "<input type=\"hidden\" name=\"csrf\" value=\"\(ctx.csrf)\">" }

    /// A one-button POST form against the JSON API; `next` brings the browser back.
    static func actionForm(_ action: String, label: String, next: String, ctx: PageContext, fields: [(String, String)] = [],
                           cls: String = "", confirm: String? = nil) -> HTML {
        let hidden = fields.map { f -> HTML in "<input type=\"hidden\" name=\"\(f.0)\" value=\"\(f.1)\">" }
        let confirmAttr: HTML = confirm.map { " data-confirm=\"\($0)\"" } ?? .empty
        return """
        <form method="post" action="\(action)" class="inline"\(confirmAttr)>\(csrfField(ctx))<input type="hidden" name="next" value="\(next)">\(hidden)<button class="\(cls)">\(label)</button></form>
        """
    }

    static func stateBadge(_ s: String) -> HTML { "<span class=\"state s-\(s)\">\(s)</span>" }

    static func jobLink(_ id: String, _ name: String) -> HTML {
        "<a href=\"/jobs/\(HTML.urlComponent(id))\">\(name.isEmpty ? String(id.prefix(8)) : name)</a>"
    }

    static func batchLink(_ id: String, _ name: String) -> HTML {
        "<a href=\"/batches/\(HTML.urlComponent(id))\">\(name.isEmpty ? String(id.prefix(8)) : name)</a>"
    }

    // MARK: cluster

    public static func vramBar(_ v: VRAMSplit) -> HTML {
        let p = v.percents
        let label = "used by others \(ConsoleFormat.bytes(v.usedByOthers)), reserved by Hydra \(ConsoleFormat.bytes(v.reservedByHydra)), free \(ConsoleFormat.bytes(v.free)) of \(ConsoleFormat.bytes(v.total))"
        return """
        <div class="bar" role="img" aria-label="\(label)" title="\(label)">\
        <span class="seg others" style="width:\(p.others)%"></span>\
        <span class="seg hydra" style="width:\(p.hydra)%"></span>\
        <span class="seg free" style="width:\(p.free)%"></span></div>
        """
    }

    public static func cluster(_ snap: ConsoleClusterView, ctx: PageContext) -> HTML {
        let reserved = snap.reserved
        var byNode: [String: [ActiveJob]] = [:]
        for j in snap.active { byNode[j.node, default: []].append(j) }
        let totals = stateOrder.compactMap { s -> HTML? in
            guard let n = snap.jobCounts[s.rawValue], n > 0 else { return nil }
            return "<li>\(stateBadge(s.rawValue)) <b data-count=\"\(s.rawValue)\">\(n)</b></li>"
        }
        // As the router: a GPU reading this old places no GPU job on the node (a slow or hung nvidia-smi).
        func staleReading(_ n: NodeRow) -> HTML {
            guard let age = n.staleGPUReadingS else { return "" }
            return " · <b class=\"stale\" data-stale-reading>GPU reading \(Int(age)) s old: no GPU jobs placed here</b>"
        }
        var cards: [HTML] = []
        for n in snap.nodes {
            let state = !n.up ? "down" : (n.draining ? "draining" : "up")
            let jobs = byNode[n.name] ?? []
            var rows: [HTML] = []
            for g in n.inventory.gpus {
                let split = VRAMSplit(gpu: g, reserved: reserved[g.uuid] ?? 0)
                let onGPU = jobs.filter { $0.gpuUUIDs.contains(g.uuid) }.map { jobLink($0.id, $0.name) }
                rows.append("""
                <tr data-gpu="\(g.uuid)"><td>\(g.index.map(String.init) ?? "—")</td><td class="gpu-name">\(g.name ?? "unknown GPU")</td>
                <td class="vram">\(vramBar(split))<small class="vram-text">others \(ConsoleFormat.bytes(split.usedByOthers)) · Hydra \(ConsoleFormat.bytes(split.reservedByHydra)) · free \(ConsoleFormat.bytes(split.free)) / \(ConsoleFormat.bytes(split.total))</small></td>
                <td class="util">\(ConsoleFormat.percent(g.utilizationGPUPercent))</td><td class="temp">\(ConsoleFormat.celsius(g.temperatureCelsius))</td>
                <td>\(HTML.join(onGPU, separator: ", "))</td></tr>
                """)
            }
            let gpuTable: HTML = n.inventory.gpus.isEmpty
                ? "<p class=\"muted\">No GPUs: takes CPU-only jobs.</p>"
                : "<table class=\"gpus\"><thead><tr><th>#</th><th>GPU</th><th>VRAM</th><th>util</th><th>temp</th><th>jobs</th></tr></thead><tbody>\(rows)</tbody></table>"
            let running: HTML = jobs.isEmpty ? "<p class=\"muted\">No running jobs.</p>"
                : "<p class=\"running\">Running: \(HTML.join(jobs.prefix(20).map { jobLink($0.id, $0.name) + " " + stateBadge($0.state) }, separator: ", "))\(jobs.count > 20 ? " and \(jobs.count - 20) more" : "")</p>"
            let drain = n.draining
                ? actionForm("/api/v1/nodes/\(HTML.urlComponent(n.name))/drain", label: "undrain", next: "/cluster", ctx: ctx, fields: [("undo", "true")])
                : actionForm("/api/v1/nodes/\(HTML.urlComponent(n.name))/drain", label: "drain", next: "/cluster", ctx: ctx,
                             confirm: "Stop placing new jobs on \(n.name)?")
            cards.append("""
            <section class="node" data-node="\(n.name)"><h2>\(n.name) <span class="badge \(state)" data-node-state>\(state)</span> \(drain)</h2>
            <p class="meta">last seen <span data-last-seen="\(n.lastSeen.map { String($0) } ?? "")">\(ConsoleFormat.ago(n.lastSeen, now: ctx.now))</span> · agent \(n.agentVersion ?? "—") · <span data-running>\(jobs.count)</span> active job\(jobs.count == 1 ? "" : "s")\(staleReading(n))</p>
            \(gpuTable)\(running)</section>
            """)
        }
        let body: HTML = """
        <h1>Cluster</h1>
        <ul class="totals">\(totals)</ul>
        <p class="legend"><span class="key others"></span> used by others <span class="key hydra"></span> reserved by Hydra <span class="key free"></span> free</p>
        \(snap.nodes.isEmpty ? "<p class=\"muted\">No node has reported yet (is hydra-agent running, and the coordinator?).</p>" : HTML.join(cards))
        \(ConsoleChartsPages.occupancyFigure)
        """
        return layout(title: "Cluster", active: "cluster", ctx: ctx, live: "cluster", body: body)
    }

    // MARK: batches

    static func progressBar(_ s: BatchSummary) -> HTML {
        guard s.total > 0 else { return "<div class=\"bar\"></div>" }
        let t = Double(s.total)
        func w(_ n: Int) -> Double { Double(n) / t * 100 }
        let running = s.count(.running) + s.count(.dispatched) + s.count(.placed)
        return """
        <div class="bar" title="\(s.count(.succeeded)) succeeded, \(s.failed) failed, \(running) running of \(s.total)">\
        <span class="seg ok" style="width:\(w(s.count(.succeeded)))%"></span><span class="seg bad" style="width:\(w(s.failed))%"></span>\
        <span class="seg run" style="width:\(w(running))%"></span></div>
        """
    }

    public static func batches(_ list: [BatchProgress], ctx: PageContext) -> HTML {
        let rows = list.map { b -> HTML in
            let s = b.summary
            let cells = stateGroups.map { g -> HTML in
                "<td class=\"num\" data-states=\"\(g.states.map(\.rawValue).joined(separator: ","))\">\(g.states.reduce(0) { $0 + s.count($1) })</td>"
            }
            return """
            <tr data-batch="\(s.id)"><td>\(batchLink(s.id, s.name))</td><td>\(ConsoleFormat.time(s.submittedAt))</td><td class="num">\(s.priority)</td>
            <td class="progress">\(progressBar(s))<small><span data-finished>\(s.finished)</span>/<span data-total>\(s.total)</span></small></td>\(cells)
            <td class="num" data-rate>\(ConsoleFormat.rate(b.ratePerMinute)) \(ConsoleChartsPages.sparkline(batchID: s.id))</td><td data-eta>\(s.isDone ? "done" : ConsoleFormat.time(b.expectedFinish))</td></tr>
            """
        }
        let heads = stateGroups.map { g -> HTML in "<th class=\"num\" title=\"\(g.states.map(\.rawValue).joined(separator: " + "))\">\(g.label)</th>" }
        let body: HTML = list.isEmpty ? "<h1>Batches</h1><p class=\"muted\">No batches yet (submit one with <code>hydra submit FILE</code>).</p>" : """
        <h1>Batches</h1>
        <table class="batches"><thead><tr><th>batch</th><th>submitted</th><th>prio</th><th>progress</th>\(heads)<th>rate</th><th>expected finish</th></tr></thead>
        <tbody>\(rows)</tbody></table>
        <p class="muted">Rate: jobs finished per minute over the last 10 minutes; expected finish = now + unfinished jobs / rate.</p>
        """
        return layout(title: "Batches", active: "batches", ctx: ctx, live: "batches", body: body)
    }

    public static func batchPage(_ d: BatchPageData, ctx: PageContext) -> HTML {
        let s = d.progress.summary
        let base = "/batches/\(HTML.urlComponent(s.id))"
        let filters = [HTML("<a href=\"\(base)\"\(d.stateFilter.isEmpty ? " class=\"active\"" : "")>all <b>\(s.total)</b></a>")]
            + stateOrder.compactMap { st -> HTML? in
                let n = s.count(st)
                guard n > 0 || d.stateFilter.contains(st) else { return nil }
                let on = d.stateFilter.contains(st)
                return "<a href=\"\(base)?state=\(st.rawValue)\"\(on ? " class=\"active\"" : "")>\(stateBadge(st.rawValue)) <b data-state=\"\(st.rawValue)\">\(n)</b></a>"
            }
        let rows = d.jobs.map { j -> HTML in
            let lastError = j.errors?.arrayValue?.last?["message"]?.stringValue
            let note: String
            switch j.state {
            case .pending: note = j.pendingReason ?? "waiting for the next placement pass"
            case .failed, .dead, .retryWait: note = "\(j.failureClass ?? ""): \(lastError ?? "")"
            default: note = ""
            }
            let where_ = j.node.map { n in n + (j.gpuUUIDs.isEmpty ? "" : " (\(j.gpuUUIDs.count) GPU)") } ?? "—"
            return """
            <tr><td>\(jobLink(j.id, j.name))</td><td>\(j.kind)</td><td>\(stateBadge(j.state.rawValue))</td><td class="num">\(j.attempt)/\(j.maxAttempts)</td>
            <td class="num">\(j.vramBytes == 0 ? "cpu" : ByteSize.format(j.vramBytes) + (j.gpus > 1 ? " ×\(j.gpus)" : ""))</td><td>\(where_)</td><td class="reason">\(note)</td></tr>
            """
        }
        let filterQuery = d.stateFilter.map { "state=\($0.rawValue)" }.joined(separator: "&")
        func pageURL(_ p: Int) -> String { base + "?" + ([filterQuery, "page=\(p)"].filter { !$0.isEmpty }.joined(separator: "&")) }
        let pages = max(1, (d.matching + d.pageSize - 1) / d.pageSize)
        var pager: [HTML] = []
        if d.page > 1 { pager.append("<a href=\"\(pageURL(d.page - 1))\" rel=\"prev\">← previous</a>") }
        pager.append("<span>page \(d.page) of \(pages) · \(d.matching) job\(d.matching == 1 ? "" : "s")</span>")
        if d.page < pages { pager.append("<a href=\"\(pageURL(d.page + 1))\" rel=\"next\">next →</a>") }
        let next = base
        let body: HTML = """
        <p class="crumbs"><a href="/batches">Batches</a> ›</p>
        <h1>\(s.name) <small class="muted">\(String(s.id.prefix(8)))</small></h1>
        <p>\(progressBar(s)) \(s.summaryLine) · rate \(ConsoleFormat.rate(d.progress.ratePerMinute)) · expected finish \(s.isDone ? "done" : ConsoleFormat.time(d.progress.expectedFinish)) · submitted \(ConsoleFormat.time(s.submittedAt)) · priority \(s.priority)</p>
        <p class="actions">\(actionForm("/api/v1/batches/\(HTML.urlComponent(s.id))/cancel", label: "cancel unfinished jobs", next: next, ctx: ctx, cls: "danger", confirm: "Cancel every unfinished job of \(s.name)?")) \(actionForm("/api/v1/batches/\(HTML.urlComponent(s.id))/retry", label: "retry failed jobs", next: next, ctx: ctx))</p>
        <nav class="filters" aria-label="filter by state">\(filters)</nav>
        <table class="jobs"><thead><tr><th>job</th><th>kind</th><th>state</th><th>try</th><th>VRAM</th><th>node</th><th>reason / error</th></tr></thead>
        <tbody>\(rows.isEmpty ? "<tr><td colspan=\"7\" class=\"muted\">No jobs match.</td></tr>" : HTML.join(rows))</tbody></table>
        <p class="pager">\(HTML.join(pager, separator: " "))</p>
        """
        return layout(title: s.name, active: "batches", ctx: ctx, live: "batch:\(s.id)", body: body)
    }

    // MARK: job

    static func mediaURL(_ route: String, _ path: String) -> String { "/\(route)?path=\(HTML.urlComponent(path))" }

    public static func outputs(_ items: [JobOutput]) -> HTML {
        if items.isEmpty { return "<p class=\"muted\">No outputs.</p>" }
        let parts = items.map { o -> HTML in
            switch o {
            case .image(let p):
                return "<figure><a href=\"\(mediaURL("media", p))\"><img class=\"thumb\" loading=\"lazy\" src=\"\(mediaURL("thumb", p))\" alt=\"\(p)\"></a><figcaption>\(p)</figcaption></figure>"
            case .audio(let p):
                return "<figure><audio controls preload=\"none\" src=\"\(mediaURL("media", p))\"></audio><figcaption>\(p)</figcaption></figure>"
            case .file(let p):
                return "<p class=\"file\"><code>\(p)</code></p>"
            case .text(let label, let v):
                return "<div class=\"text-output\"><b>\(label.isEmpty ? "output" : label)</b><pre>\(String(v.prefix(20_000)))</pre></div>"
            }
        }
        return "<div class=\"outputs\">\(parts)</div>"
    }

    public static func jobPage(_ d: JobPageData, ctx: PageContext) -> HTML {
        let j = d.job
        let peak = j.result?["peak_vram_bytes"]?.doubleValue.map { UInt64($0) }
        let duration = j.result?["duration_s"]?.doubleValue ?? j.startedAt.flatMap { s in j.finishedAt.map { $0 - s } }
        let gpus = j.gpuUUIDs.map { u -> HTML in "<span title=\"\(u)\">\(d.gpuNames[u] ?? u)</span>" }
        var facts: [(String, HTML)] = [
            ("batch", batchLink(j.batchID, d.batchName ?? "")), ("kind", "\(j.kind)"), ("state", stateBadge(j.state.rawValue)),
            ("attempt", "\(j.attempt) of \(j.maxAttempts)"), ("priority", "\(j.priority)"),
            ("node", "\(j.node ?? "—")"), ("GPUs", gpus.isEmpty ? (j.gpus == 0 ? "none (CPU job)" : "—") : HTML.join(gpus, separator: ", ")),
            ("VRAM requested", j.vramBytes == 0 ? "—" : "\(ByteSize.format(j.vramBytes))\(j.gpus > 1 ? " per GPU × \(j.gpus)" : "")"),
            ("peak VRAM", "\(ConsoleFormat.bytes(peak))"), ("duration", "\(ConsoleFormat.duration(duration))"),
            ("submitted", "\(ConsoleFormat.time(j.submittedAt))"), ("started", "\(ConsoleFormat.time(j.startedAt))"),
            ("finished", "\(ConsoleFormat.time(j.finishedAt))"),
        ]
        if j.state == .pending { facts.append(("waiting because", "\(j.pendingReason ?? "waiting for the next placement pass")")) }
        if let fc = j.failureClass { facts.append(("failure class", "\(fc)")) }
        let factRows = facts.map { f -> HTML in "<tr><th>\(f.0)</th><td>\(f.1)</td></tr>" }
        let attempts = (j.errors?.arrayValue ?? []).map { e -> HTML in
            """
            <tr><td class="num">\(e["attempt"]?.intValue.map(String.init) ?? "—")</td><td><span class="fclass">\(e["class"]?.stringValue ?? "")</span></td>
            <td>\(e["node"]?.stringValue ?? "")</td><td>\(ConsoleFormat.time(e["at"]?.doubleValue))</td><td class="reason">\(e["message"]?.stringValue ?? "")</td></tr>
            """
        }
        let timeline = d.events.map { e -> HTML in
            let detail = ConsoleFormat.compactJSON(e.detail)
            return """
            <li><time>\(ConsoleFormat.time(e.at))</time> \(e.from.map { f -> HTML in stateBadge(f) + " → " })\(stateBadge(e.to))\(e.attempt.map { n -> HTML in " <small>attempt \(n)</small>" })\(if: !detail.isEmpty, " <code>\(detail)</code>")</li>
            """
        }
        var actions: [HTML] = []
        let next = "/jobs/\(HTML.urlComponent(j.id))"
        if !j.state.isTerminal { actions.append(actionForm("/api/v1/jobs/\(HTML.urlComponent(j.id))/cancel", label: "cancel", next: next, ctx: ctx, cls: "danger", confirm: "Cancel \(j.name)?")) }
        if [.failed, .dead, .cancelled].contains(j.state) { actions.append(actionForm("/api/v1/jobs/\(HTML.urlComponent(j.id))/retry", label: "retry", next: next, ctx: ctx)) }
        let body: HTML = """
        <p class="crumbs"><a href="/batches">Batches</a> › \(batchLink(j.batchID, d.batchName ?? ""))</p>
        <h1>\(j.name) \(stateBadge(j.state.rawValue))</h1>
        <p class="actions">\(HTML.join(actions, separator: " "))</p>
        <div class="cols"><section><h2>Facts</h2><table class="facts">\(factRows)</table></section>
        <section><h2>Outputs</h2>\(outputs(JobOutput.extract(from: j.result)))</section></div>
        <section><h2>Attempts</h2>\(if: attempts.isEmpty, "<p class=\"muted\">No failed attempts.</p>", else: "<table><thead><tr><th>attempt</th><th>class</th><th>node</th><th>at</th><th>error</th></tr></thead><tbody>\(attempts)</tbody></table>")</section>
        <section><h2>Timeline</h2><ol class="timeline">\(timeline)</ol></section>
        <section><h2>Spec</h2><pre>\((try? JSONCoding.encodeString(j.spec, pretty: true)) ?? "")</pre></section>
        """
        return layout(title: j.name, active: "batches", ctx: ctx, body: body)
    }

    // MARK: approvals

    public static func approvals(_ d: ApprovalsPageData, ctx: PageContext) -> HTML {
        let cards = d.pending.map { a -> HTML in
            let images = (a.detail["images"]?.arrayValue ?? []).compactMap(\.stringValue).prefix(24).map { p -> HTML in scoredThumb(p, d.scores[p]) }
            let other = (a.detail.objectValue ?? [:]).filter { $0.key != "images" }.sorted { $0.key < $1.key }.map { kv -> HTML in
                "<tr><th>\(kv.key)</th><td>\(kv.value.stringValue ?? ConsoleFormat.compactJSON(kv.value))</td></tr>"
            }
            let links: HTML = HTML.join([a.jobID.map { "job " + jobLink($0, String($0.prefix(8))) }, a.batchID.map { "batch " + batchLink($0, String($0.prefix(8))) }].compactMap { $0 }, separator: " · ")
            let action = "/api/v1/approvals/\(HTML.urlComponent(a.id))/decide"
            return """
            <article class="approval" data-approval="\(a.id)"><h2>\(a.title)</h2>
            <p class="meta"><span class="action">\(a.action)</span> · tier \(a.tier) · requested \(ConsoleFormat.time(a.createdAt))\(links.text.isEmpty ? "" : " · ")\(links)</p>
            \(if: images.isEmpty, "<p class=\"muted gate\">Gates the action <code>\(a.action)</code>; no images attached.</p>", else: "<div class=\"thumbs\">\(HTML.join(Array(images)))</div>")
            \(if: !other.isEmpty, "<table class=\"facts\">\(HTML.join(other))</table>")
            <div class="decide">
            <form method="post" action="\(action)" class="approve">\(csrfField(ctx))<input type="hidden" name="next" value="/approvals"><input type="hidden" name="decision" value="approve">
            <input name="reason" placeholder="reason (optional)" aria-label="reason for approving"><button class="ok">approve</button></form>
            <form method="post" action="\(action)" class="reject">\(csrfField(ctx))<input type="hidden" name="next" value="/approvals"><input type="hidden" name="decision" value="reject">
            <input name="reason" placeholder="reason (required)" required aria-label="reason for rejecting"><button class="danger">reject</button></form>
            </div></article>
            """
        }
        let decided = d.decided.map { a -> HTML in
            "<tr><td>\(a.title)</td><td>\(a.action)</td><td>\(stateBadge(a.state))</td><td>\(a.decidedBy ?? "")</td><td>\(ConsoleFormat.time(a.decidedAt))</td><td>\(a.reason ?? "")</td></tr>"
        }
        let audit = d.audit.map { e -> HTML in
            "<tr><td>\(ConsoleFormat.time(e.at))</td><td>\(e.actor)</td><td>\(e.action)</td><td><code>\(e.target.map { String($0.prefix(8)) } ?? "")</code></td><td><code>\(ConsoleFormat.compactJSON(e.detail))</code></td></tr>"
        }
        let body: HTML = """
        <h1>Approvals <small class="muted">\(d.pending.count) waiting</small></h1>
        \(cards.isEmpty ? "<p class=\"muted\">Nothing waits for a decision.</p>" : HTML.join(cards))
        <h2>Recent decisions</h2>
        \(if: decided.isEmpty, "<p class=\"muted\">None yet.</p>", else: "<table><thead><tr><th>title</th><th>action</th><th>decision</th><th>by</th><th>at</th><th>reason</th></tr></thead><tbody>\(decided)</tbody></table>")
        <h2>Audit history</h2>
        \(if: audit.isEmpty, "<p class=\"muted\">Empty.</p>", else: "<table class=\"audit\"><thead><tr><th>at</th><th>actor</th><th>action</th><th>target</th><th>detail</th></tr></thead><tbody>\(audit)</tbody></table>")
        """
        return layout(title: "Approvals", active: "approvals", ctx: ctx, body: body)
    }

    // MARK: nights

    /// Reports newest first; the newest few rendered in full, the rest as links.
    public static func nights(_ reports: [NightReport], configured: Bool, ctx: PageContext, fullCount: Int = 3) -> HTML {
        guard configured else {
            return layout(title: "Nights", active: "nights", ctx: ctx, body: "<h1>Nights</h1><p class=\"muted\">No reports directory configured (<code>--reports-dir</code>).</p>")
        }
        let list = reports.map { r -> HTML in
            "<li><a href=\"/nights/\(HTML.urlComponent(r.name))\">\(r.date)</a> \(Markdown.title(r.markdown).map { "— " + $0 } ?? "")</li>"
        }
        let full = reports.prefix(fullCount).map { r -> HTML in
            "<article class=\"report\" id=\"\(r.date)\"><p class=\"report-date\"><a href=\"/nights/\(HTML.urlComponent(r.name))\">\(r.date)</a></p>\(Markdown.render(r.markdown))</article>"
        }
        let body: HTML = reports.isEmpty ? "<h1>Nights</h1><p class=\"muted\">No overnight reports yet.</p>" : """
        <h1>Nights</h1><ul class="reports">\(list)</ul>\(HTML.join(Array(full)))
        """
        return layout(title: "Nights", active: "nights", ctx: ctx, body: body)
    }

    public static func night(_ r: NightReport, ctx: PageContext, images: [ImageGateScores] = []) -> HTML {
        layout(title: "Night \(r.date)", active: "nights", ctx: ctx, body: """
        <p class="crumbs"><a href="/nights">Nights</a> ›</p>\(nightGallery(images))<article class="report">\(Markdown.render(r.markdown))</article>
        """)
    }

    // MARK: misc

    public static func login(ctx: PageContext, error: String? = nil) -> HTML {
        let err: HTML = error.map { "<p class=\"flash error\">\($0)</p>" } ?? .empty
        return layout(title: "Log in", active: "", ctx: PageContext(csrf: ctx.csrf, now: ctx.now, tokenConfigured: false), body: """
        <h1>Log in</h1>\(err)<form method="post" action="/login" class="login">\(csrfField(ctx))
        <label>Console token <input type="password" name="token" autocomplete="current-password" required></label> <button>log in</button></form>
        <p class="muted">The token is in the file given by <code>--console-token-file</code> (or the systemd credential <code>console.token</code>).</p>
        """)
    }

    public static func error(_ status: Int, _ message: String, ctx: PageContext) -> HTML {
        layout(title: "Error \(status)", active: "", ctx: ctx, body: "<h1>\(status)</h1><p>\(message)</p>")
    }
}
