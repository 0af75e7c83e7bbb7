#!/usr/bin/env python3
"""Drives headless Chromium over the DevTools protocol against a running Hydra
console: loads every page, checks the DOM for real data, approves one item by
clicking the page's button, checks PostgreSQL, refuses a cross-site POST, and
saves a screenshot of the cluster page. Standard library only (the WebSocket
handshake and framing are done by hand). Called by deploy/ci/browser-test.sh.
"""
import argparse, base64, json, os, shutil, socket, struct, subprocess, sys, tempfile, time, urllib.request


class CDP:
    """A minimal Chrome DevTools Protocol client over one WebSocket."""

    def __init__(self, ws_url):
        assert ws_url.startswith("ws://"), ws_url
        hostport, _, path = ws_url[5:].partition("/")
        host, _, port = hostport.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("DevTools closed the connection during the handshake")
            head += chunk
        head, _, self.buf = head.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("WebSocket handshake refused: " + head.decode(errors="replace"))
        self.next_id = 0

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        header = bytes([0x81])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _recv(self):
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)  # the server never masks
            op = b0 & 0x0F
            if op == 0x8:
                raise RuntimeError("DevTools closed the WebSocket")
            if op in (0x9, 0xA):
                continue
            message += payload
            if b0 & 0x80:
                return json.loads(message)

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            m = self._recv()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error in {expr[:80]}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.eval(expr):
                    return
            except RuntimeError:
                pass  # the page is navigating; its context is gone for a moment
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def goto(self, url):
        self.call("Page.navigate", url=url)
        self.wait(f"document.readyState === 'complete' && location.href.startsWith({json.dumps(url.split('#')[0])})", f"load of {url}")


FAILURES = []


def check(cond, message):
    print(("ok   " if cond else "FAIL ") + message, flush=True)
    if not cond:
        FAILURES.append(message)


def start_attacker_site(action):
    """Serves one page with a form aimed at the console, on a free local port."""
    import http.server, threading
    page = (f'<!doctype html><form method="post" action="{action}"><input name="decision" value="approve">'
            '<input name="csrf" value="guessed"><input name="next" value="/approvals"></form>').encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def psql(args, sql):
    return subprocess.run([args.psql, "-X", "-q", "-t", "-A", "-d", args.database_url, "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="console base URL, e.g. http://127.0.0.1:8480")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--psql", default="psql")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--screenshot", required=True)
    ap.add_argument("--expect-nodes", default="hydra-ai,hydra-compute,hydra-storage")
    ap.add_argument("--expect-gpus", default="NVIDIA GeForce RTX 5090,NVIDIA GeForce RTX 3060")
    ap.add_argument("--batch", required=True, help="a finished batch id")
    args = ap.parse_args()
    base = args.url.rstrip("/")

    profile = tempfile.mkdtemp(prefix="hydra-chromium-")
    chrome = subprocess.Popen([args.chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                               "--no-first-run", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                               "--window-size=1280,900", "about:blank"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(profile, "chromium.log"), "w"))
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + 30
        while not (os.path.exists(port_file) and open(port_file).read().count("\n") >= 1):
            if chrome.poll() is not None or time.time() > deadline:
                sys.exit("chromium did not start: " + open(os.path.join(profile, "chromium.log")).read()[-2000:])
            time.sleep(0.1)
        devtools_port = open(port_file).read().split("\n")[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{devtools_port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        cdp = CDP(page["webSocketDebuggerUrl"])
        cdp.call("Page.enable")
        cdp.call("Runtime.enable")
        cdp.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        print(f"chromium {cdp.call('Browser.getVersion').get('product', '?')} on DevTools port {devtools_port}")

        # Cluster: node names, GPU names, VRAM bars, live refresh from the JSON API.
        cdp.goto(base + "/cluster")
        text = cdp.eval("document.body.innerText")
        for n in args.expect_nodes.split(","):
            check(cdp.eval(f"!!document.querySelector('[data-node=\"{n}\"]')") and n in text, f"cluster page shows node {n}")
        for g in args.expect_gpus.split(","):
            check(g in text, f"cluster page shows GPU {g}")
        check(cdp.eval("document.querySelectorAll('[data-gpu] .bar .seg').length") >= 12, "every GPU has a three-part VRAM bar")
        reserved = cdp.eval("Array.from(document.querySelectorAll('[data-gpu] .seg.hydra')).filter(e => parseFloat(e.style.width) > 0).length")
        running = int(psql(args, "SELECT count(DISTINCT g) FROM jobs, unnest(gpu_uuids) AS g WHERE state IN ('placed', 'dispatched', 'running')"))
        check(reserved == running and running > 0, f"VRAM bars show Hydra reservations on {reserved} GPUs (database: {running})")
        check(cdp.eval("document.querySelectorAll('p.running a').length") >= 1, "running jobs are listed under their node")
        cdp.wait("document.getElementById('live-status').textContent.indexOf('updated') >= 0", "a live refresh from /api/v1/nodes", timeout=10)
        check(True, "cluster page refreshed itself from /api/v1/nodes")
        os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)
        shot = cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        check(os.path.getsize(args.screenshot) > 10_000, f"screenshot saved: {os.path.abspath(args.screenshot)}")

        # Batches: counts equal the database's.
        cdp.goto(base + "/batches")
        db_succeeded = int(psql(args, f"SELECT count(*) FROM jobs WHERE batch_id = '{args.batch}' AND state = 'succeeded'"))
        shown = cdp.eval(f"(document.querySelector('[data-batch=\"{args.batch}\"] [data-states=\"succeeded\"]') || {{}}).textContent")
        check(shown == str(db_succeeded), f"batches page shows {db_succeeded} succeeded for the batch (page says {shown})")
        check("&lt;script&gt;" not in cdp.eval("document.body.innerText") and cdp.eval("document.scripts.length") == 1,
              "no injected script elements (only /static/console.js)")

        # Batch page, state filter, job page with an image output and a timeline.
        cdp.goto(f"{base}/batches/{args.batch}?state=succeeded")
        rows = cdp.eval("document.querySelectorAll('table.jobs tbody tr').length")
        check(rows == min(db_succeeded, 100), f"batch page filtered by state lists {rows} succeeded jobs")
        check("<script>" in cdp.eval("document.body.innerText"), "a job name containing <script> is shown as text")
        job_href = cdp.eval("Array.from(document.querySelectorAll('table.jobs a')).map(a => a.getAttribute('href')).find(h => h.startsWith('/jobs/'))")
        cdp.goto(base + job_href)
        check(cdp.eval("document.querySelectorAll('.timeline li').length") >= 3, "job page shows the event timeline")
        image_job = psql(args, f"SELECT id FROM jobs WHERE batch_id = '{args.batch}' AND result::text LIKE '%.png%' LIMIT 1")
        cdp.goto(f"{base}/jobs/{image_job}")
        cdp.wait("Array.from(document.querySelectorAll('img.thumb')).every(i => i.complete) && document.querySelectorAll('img.thumb').length > 0",
                 "job thumbnails to load")
        check(cdp.eval("Array.from(document.querySelectorAll('img.thumb')).every(i => i.naturalWidth > 0)"), "job output image loads via /thumb")
        audio_job = psql(args, f"SELECT id FROM jobs WHERE batch_id = '{args.batch}' AND result::text LIKE '%.wav%' LIMIT 1")
        cdp.goto(f"{base}/jobs/{audio_job}")
        cdp.wait("document.querySelectorAll('audio[controls]').length > 0", "the audio player")
        status = cdp.eval("fetch(document.querySelector('audio').getAttribute('src')).then(r => r.status + ' ' + r.headers.get('content-type'))")
        check(status == "200 audio/wav", f"job output audio is playable from /media ({status})")
        check("la la la" in cdp.eval("document.body.innerText"), "job text output is shown")

        # Approvals: thumbnails, then approve the first item by clicking its button.
        cdp.goto(base + "/approvals")
        try:
            cdp.wait("Array.from(document.querySelectorAll('.approval img.thumb')).filter(i => i.naturalWidth > 0).length >= 4",
                     "approval thumbnails to load", timeout=10)
        except AssertionError:
            pass
        loaded = cdp.eval("Array.from(document.querySelectorAll('.approval img.thumb')).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        check(sum(1 for _, _, w in loaded if w > 0) >= 4, f"approval thumbnails load: {loaded}")
        target = cdp.eval("document.querySelector('.approval').getAttribute('data-approval')")
        title = cdp.eval("document.querySelector('.approval h2').textContent")
        check("<script>" in title, "an approval title containing <script> is shown as text")
        cdp.eval("document.querySelector('.approval form.approve input[name=reason]').value = 'looks right (browser test)'")
        box = cdp.eval("(() => { const b = document.querySelector('.approval form.approve button'); b.scrollIntoView(); "
                       "const r = b.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            cdp.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)
        cdp.wait("location.search.indexOf('flash=') >= 0 && document.readyState === 'complete'", "the redirect after approving")
        check("Approved" in cdp.eval("document.querySelector('.flash').textContent"), "the page confirms the approval")
        row = psql(args, f"SELECT state || '|' || decided_by || '|' || coalesce(reason, '') FROM approvals WHERE id = '{target}'")
        check(row.startswith("approved|console@127.0.0.1|looks right"), f"PostgreSQL has the approval decided: {row}")
        audit = psql(args, f"SELECT count(*) FROM audit_log WHERE target = '{target}' AND action = 'approve'")
        check(audit == "1", "the audit log has the approval")

        # A forged form POST from another origin is refused. The attacker page is on
        # another port of the same host: same-site, so even the SameSite=Strict cookie
        # is sent; the Origin check and the unknown CSRF token must stop it.
        second = psql(args, "SELECT id FROM approvals WHERE state = 'awaiting_approval' LIMIT 1")
        attacker = start_attacker_site(f"{base}/api/v1/approvals/{second}/decide")
        cdp.goto(attacker)
        cdp.eval("document.forms[0].submit()")
        cdp.wait("location.href.indexOf('/api/v1/approvals/') >= 0 && document.readyState === 'complete'", "the forged POST's answer")
        body = cdp.eval("document.body.innerText")
        check("cross-site" in body or "CSRF" in body, f"cross-site POST refused: {body[:120]!r}")
        check(psql(args, f"SELECT state FROM approvals WHERE id = '{second}'") == "awaiting_approval", "the cross-site POST changed nothing")

        # Nights: the markdown report rendered (table, heading), newest first, script escaped.
        cdp.goto(base + "/nights")
        check(cdp.eval("document.querySelectorAll('article.report table').length") >= 1, "nights page renders the report's table")
        dates = cdp.eval("Array.from(document.querySelectorAll('ul.reports a')).map(a => a.textContent)")
        check(dates == sorted(dates, reverse=True) and len(dates) >= 2, f"reports newest first: {dates}")
        check("<script>" in cdp.eval("document.querySelector('article.report').innerText"), "a <script> in a report is shown as text")
    finally:
        chrome.terminate()
        try:
            chrome.wait(10)
        except subprocess.TimeoutExpired:
            chrome.kill()
        shutil.rmtree(profile, ignore_errors=True)
    if FAILURES:
        print(f"browser test: {len(FAILURES)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print(f"browser test: all checks passed; screenshot {os.path.abspath(args.screenshot)}")


if __name__ == "__main__":
    main()
