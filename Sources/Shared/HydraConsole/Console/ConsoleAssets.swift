/// The console's stylesheet and script, served from /static so that the
/// Content-Security-Policy can forbid inline script.
public enum ConsoleAssets {
    public static let css = #"""
    :root { --bg:#f6f7f9; --fg:#1d2330; --muted:#6b7280; --line:#dde1e7; --card:#fff; --accent:#2f5fd0;
            --others:#9aa3b2; --hydra:#2f5fd0; --free:#e6eaf0; --ok:#2e9d5b; --bad:#c8463d; --run:#e0a526; }
    * { box-sizing: border-box; }
    body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
    header { display:flex; align-items:center; gap:1.5rem; padding:.6rem 1.2rem; background:#1d2330; color:#fff; }
    header a { color:#cfd6e4; text-decoration:none; } header a.active, header a:hover { color:#fff; }
    header nav { display:flex; gap:1rem; } .brand { font-weight:700; color:#fff !important; letter-spacing:.03em; }
    .live-status { margin-left:auto; font-size:12px; color:#9fb0cc; }
    main { padding:1rem 1.2rem 2rem; max-width:1400px; }
    footer { padding:.5rem 1.2rem; color:var(--muted); font-size:12px; }
    h1 { font-size:22px; margin:.2rem 0 .8rem; } h2 { font-size:16px; margin:1.2rem 0 .5rem; }
    a { color:var(--accent); }
    table { border-collapse:collapse; width:100%; background:var(--card); }
    th, td { text-align:left; padding:.35rem .5rem; border-bottom:1px solid var(--line); vertical-align:top; }
    th { font-weight:600; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.03em; }
    td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
    .muted { color:var(--muted); } .inline { display:inline; }
    .node, .approval, .report { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:.6rem 1rem 1rem; margin:0 0 1rem; }
    .node h2 { margin:.3rem 0; font-size:18px; display:flex; align-items:center; gap:.6rem; }
    .meta { color:var(--muted); margin:.2rem 0 .6rem; }
    .badge { font-size:12px; padding:.1rem .5rem; border-radius:10px; color:#fff; font-weight:600; }
    .badge.up { background:var(--ok); } .badge.down { background:var(--bad); } .badge.draining { background:var(--run); }
    .bar { display:flex; height:14px; min-width:160px; border-radius:3px; overflow:hidden; background:var(--free); }
    .seg { display:block; height:100%; } .seg.others { background:var(--others); } .seg.hydra { background:var(--hydra); } .seg.free { background:var(--free); }
    .seg.ok { background:var(--ok); } .seg.bad { background:var(--bad); } .seg.run { background:var(--run); }
    td.vram { width:40%; } .vram-text { color:var(--muted); }
    .legend .key { display:inline-block; width:12px; height:12px; border-radius:2px; vertical-align:middle; margin-left:.8rem; }
    .key.others { background:var(--others); } .key.hydra { background:var(--hydra); } .key.free { background:var(--free); border:1px solid var(--line); }
    .totals { list-style:none; padding:0; display:flex; gap:1rem; flex-wrap:wrap; }
    .state { font-size:12px; padding:.05rem .4rem; border-radius:3px; background:#e8ebf0; }
    .s-succeeded, .s-approved { background:#d7f0df; } .s-failed, .s-dead, .s-rejected { background:#f6d6d3; }
    .s-running, .s-dispatched, .s-placed { background:#f8ebc8; } .s-cancelled { background:#e2e2e2; }
    .filters { display:flex; gap:.8rem; flex-wrap:wrap; margin:.6rem 0; } .filters a { text-decoration:none; padding:.2rem .4rem; border-radius:4px; }
    .filters a.active { outline:2px solid var(--accent); }
    td.progress { min-width:180px; } td.reason { max-width:40ch; overflow-wrap:anywhere; }
    .cols { display:grid; grid-template-columns: minmax(300px, 1fr) 1fr; gap:1.2rem; }
    table.facts th { width:11rem; text-transform:none; font-size:13px; }
    .timeline { list-style:none; padding-left:0; border-left:3px solid var(--line); }
    .timeline li { padding:.25rem .6rem; } .timeline time { color:var(--muted); font-variant-numeric:tabular-nums; margin-right:.4rem; }
    .timeline code, td code { font-size:12px; overflow-wrap:anywhere; }
    .thumbs { display:flex; gap:.5rem; flex-wrap:wrap; margin:.4rem 0; }
    figure.scored { margin:0; width:160px; } figure.scored figcaption { font-size:.75rem; color:var(--muted, #666); }
    .failed-gates { color:#b33; } figure.occupancy img { max-width:100%; height:auto; } img.spark { vertical-align:middle; }
    img.thumb { width:160px; height:160px; object-fit:cover; border-radius:4px; border:1px solid var(--line); background:#eee; }
    figure { margin:0 0 .6rem; } figcaption { font-size:12px; color:var(--muted); overflow-wrap:anywhere; }
    pre { background:#f0f2f5; padding:.6rem; overflow:auto; border-radius:4px; max-height:40rem; }
    .decide { display:flex; gap:1rem; flex-wrap:wrap; margin-top:.6rem; } .decide input { width:18rem; }
    button { font:inherit; padding:.3rem .8rem; border-radius:4px; border:1px solid #b8c0cc; background:#fff; cursor:pointer; }
    button.ok { background:var(--ok); color:#fff; border-color:var(--ok); } button.danger { background:#fff; color:var(--bad); border-color:var(--bad); }
    button.link { background:none; border:none; color:#cfd6e4; padding:0; }
    .node h2 button { font-size:12px; padding:.1rem .5rem; }
    .flash { background:#e7effd; border:1px solid #bcd0f5; padding:.5rem .8rem; border-radius:4px; } .flash.error { background:#fbe4e2; border-color:#f0b9b4; }
    .report table { width:auto; } .report-date { color:var(--muted); margin:0; }
    .pager { display:flex; gap:1rem; }
    @media (max-width: 900px) { .cols { grid-template-columns: 1fr; } }
    """#

    /// Live refresh by short polling of the JSON API (every 2 s while the tab is
    /// visible): the cluster page updates VRAM bars, utilization, temperature and
    /// node state in place; the batch pages update their counts. When the set of
    /// nodes, GPUs or batches changes, the page reloads itself instead of
    /// rebuilding markup in JavaScript. Everything written goes through
    /// textContent or style.width, never innerHTML.
    public static let js = #"""
    (function () {
      "use strict";
      var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
      document.querySelectorAll("form[data-confirm]").forEach(function (f) {
        f.addEventListener("submit", function (e) { if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault(); });
      });
      var live = document.body.getAttribute("data-live");
      if (!live) return;
      var status = document.getElementById("live-status");
      var interval = 2000, timer = null;
      function fmtBytes(b) {
        if (b == null) return "—";
        var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0, v = b;
        while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
        return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + u[i];
      }
      function set(el, text) { if (el && el.textContent !== String(text)) el.textContent = String(text); }
      function url() {
        if (live === "cluster") return "/api/v1/nodes";
        if (live === "batches") return "/api/v1/batches";
        if (live.indexOf("batch:") === 0) return "/api/v1/batches/" + encodeURIComponent(live.slice(6));
        return null;
      }
      function updateCluster(d) {
        var known = Array.prototype.map.call(document.querySelectorAll("[data-gpu]"), function (e) { return e.getAttribute("data-gpu"); }).sort().join(",");
        var now = [], reserved = d.reserved_bytes || {};
        d.nodes.forEach(function (n) { (n.inventory.gpus || []).forEach(function (g) { now.push(g.uuid); }); });
        if (now.sort().join(",") !== known || d.nodes.length !== document.querySelectorAll("[data-node]").length) { location.reload(); return; }
        var active = {};
        (d.active || []).forEach(function (j) { active[j.node] = (active[j.node] || 0) + 1; });
        d.nodes.forEach(function (n) {
          var card = document.querySelector('[data-node="' + CSS.escape(n.name) + '"]');
          if (!card) return;
          var st = !n.up ? "down" : (n.draining ? "draining" : "up");
          var badge = card.querySelector("[data-node-state]");
          if (badge.textContent !== st) { location.reload(); return; }
          set(card.querySelector("[data-running]"), active[n.name] || 0);
          (n.inventory.gpus || []).forEach(function (g) {
            var row = card.querySelector('[data-gpu="' + CSS.escape(g.uuid) + '"]');
            if (!row) return;
            var total = g.memory_total_bytes || 0, used = g.memory_used_bytes || 0, hydra = reserved[g.uuid] || 0;
            var others = Math.max(0, used - hydra), free = Math.max(0, total - others - hydra);
            var po = total ? Math.min(100, others / total * 100) : 0, ph = total ? Math.min(100 - po, hydra / total * 100) : 0;
            var segs = row.querySelectorAll(".seg");
            segs[0].style.width = po.toFixed(1) + "%"; segs[1].style.width = ph.toFixed(1) + "%"; segs[2].style.width = Math.max(0, 100 - po - ph).toFixed(1) + "%";
            set(row.querySelector(".vram-text"), "others " + fmtBytes(others) + " · Hydra " + fmtBytes(hydra) + " · free " + fmtBytes(free) + " / " + fmtBytes(total));
            set(row.querySelector(".util"), g.utilization_gpu_percent == null ? "—" : Math.round(g.utilization_gpu_percent) + "%");
            set(row.querySelector(".temp"), g.temperature_celsius == null ? "—" : Math.round(g.temperature_celsius) + " °C");
          });
        });
      }
      function updateBatchRow(row, b) {
        var by = b.by_state || {};
        row.querySelectorAll("[data-state]").forEach(function (e) { set(e, by[e.getAttribute("data-state")] || 0); });
        row.querySelectorAll("[data-states]").forEach(function (e) {
          set(e, e.getAttribute("data-states").split(",").reduce(function (a, s) { return a + (by[s] || 0); }, 0));
        });
        var finished = ["succeeded", "failed", "cancelled", "dead"].reduce(function (a, s) { return a + ((b.by_state || {})[s] || 0); }, 0);
        set(row.querySelector("[data-finished]"), finished);
        set(row.querySelector("[data-total]"), b.total);
        if (b.rate_per_minute != null) set(row.querySelector("[data-rate]"), b.rate_per_minute.toFixed(1) + "/min");
      }
      function updateBatches(d) {
        var rows = document.querySelectorAll("[data-batch]");
        if (rows.length !== d.batches.length) { location.reload(); return; }
        d.batches.forEach(function (b) {
          var row = document.querySelector('[data-batch="' + CSS.escape(b.id) + '"]');
          if (!row) { location.reload(); return; }
          updateBatchRow(row, b);
        });
      }
      function poll() {
        timer = null;
        var u = url();
        if (!u || document.hidden) { schedule(); return; }
        fetch(u, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
          .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
          .then(function (d) {
            if (live === "cluster") updateCluster(d);
            else if (live === "batches") updateBatches(d);
            else updateBatchRow(document.querySelector("main"), d);
            set(status, "live · updated " + new Date().toLocaleTimeString());
          })
          .catch(function (e) { set(status, "live updates paused: " + e.message); })
          .then(schedule);
      }
      function schedule() { if (!timer) timer = setTimeout(poll, interval); }
      document.addEventListener("visibilitychange", function () { if (!document.hidden) { clearTimeout(timer); timer = null; poll(); } });
      schedule();
      window.hydraConsole = { csrf: csrf };
    })();
    """#
}
