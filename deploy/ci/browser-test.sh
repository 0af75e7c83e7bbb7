#!/usr/bin/env bash
# Browser test of the web console: a simulated three-node cluster (private
# Redis + PostgreSQL, instance "browser"), a small batch with image and audio
# outputs, approvals with thumbnails and an overnight report; then headless
# Chromium (Debian package `chromium`) loads every page, checks the DOM for
# real data, approves one item by clicking it, checks PostgreSQL, and saves a
# screenshot of the cluster page.
#
#   deploy/ci/browser-test.sh            (after `swift build`; CI: after `make test`)
#
# Environment:
#   HYDRA_BIN_DIR        where hydra and hydra-agent are (default: swift build --show-bin-path)
#   HYDRA_ARTIFACTS_DIR  where the screenshot goes (default .hydra-local/artifacts)
#   HYDRA_CONSOLE_PORT   first port to try for the console (default 8480)
#   HYDRA_BROWSER_KEEP=1 leave the cluster running afterwards to look around (stop it with
#                        `kill <pids>; deploy/local/services.sh stop browser`, both printed)
# Exit 0 when every check passed. The screenshot path is printed as
# `artifact: <path>` (also on failure, when one was taken).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
INSTANCE=browser
STATE="$REPO_ROOT/.hydra-local/$INSTANCE"
ARTIFACTS="${HYDRA_ARTIFACTS_DIR:-$REPO_ROOT/.hydra-local/artifacts}"
SHOT="$ARTIFACTS/console-cluster.png"
say() { printf 'browser-test: %s\n' "$*" >&2; }

if ! command -v chromium >/dev/null; then
    say "installing chromium (Debian package)"
    SUDO=""; [[ "$(id -u)" -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq </dev/null >&2 || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium </dev/null >&2 \
        || { say "could not install chromium (apt-get install -y chromium)"; exit 1; }
fi
BIN_DIR="${HYDRA_BIN_DIR:-$(swift build --show-bin-path)}"
HYDRA="$BIN_DIR/hydra"; AGENT="$BIN_DIR/hydra-agent"
[[ -x "$HYDRA" && -x "$AGENT" ]] || { say "$HYDRA or $AGENT missing: run swift build first"; exit 1; }

PIDS=()
URL=""
cleanup() {
    if [[ "${HYDRA_BROWSER_KEEP:-0}" == 1 ]]; then
        say "kept running: console $URL; stop with: kill ${PIDS[*]}; deploy/local/services.sh stop $INSTANCE"
        return
    fi
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$REPO_ROOT/deploy/local/services.sh" stop "$INSTANCE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
show_logs() { for f in "$STATE"/logs/*.log; do [[ -f "$f" ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done; }

"$REPO_ROOT/deploy/local/services.sh" start "$INSTANCE" >/dev/null
# shellcheck source=/dev/null
source "$STATE/env"
PSQL="$HYDRA_LOCAL_PG_BIN/psql"
"$PSQL" -X -q -h 127.0.0.1 -p "$HYDRA_LOCAL_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS hydra WITH (FORCE)" -c "CREATE DATABASE hydra OWNER hydra" >/dev/null
redis-cli -h 127.0.0.1 -p "$HYDRA_LOCAL_REDIS_PORT" flushall >/dev/null
rm -rf "$STATE/logs" "$STATE/output" "$STATE/reports"
mkdir -p "$STATE/logs" "$STATE/output/media" "$STATE/reports" "$ARTIFACTS"
"$HYDRA" migrate >/dev/null

# Fixture media: small PNGs and a WAV, written with the standard library only.
python3 - "$STATE/output/media" <<'PY'
import math, struct, sys, wave, zlib
d = sys.argv[1]
def png(path, w, h, rgb):
    raw = b"".join(b"\0" + bytes(v for x in range(w) for v in (
        (rgb[0] + x) % 256, (rgb[1] + y) % 256, (rgb[2] + (x ^ y)) % 256)) for y in range(h))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for i, c in enumerate([(20, 90, 160), (200, 120, 40), (60, 160, 90), (150, 40, 120)]):
    png(f"{d}/tidepool-{i}.png", 192, 192, c)
with wave.open(f"{d}/chorus.wav", "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000)
    w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8000 * 2 * math.pi * 440))) for i in range(4000)))
PY

port="${HYDRA_CONSOLE_PORT:-8480}"
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
CLUSTER="$REPO_ROOT/deploy/cluster.yaml"
"$HYDRA" coordinator --cluster "$CLUSTER" --metrics-listen 127.0.0.1:0 --console-listen "127.0.0.1:$port" \
    --output-dir "$STATE/output" --reports-dir "$STATE/reports" >"$STATE/logs/coordinator.log" 2>&1 &
PIDS+=("$!")
for node in hydra-ai hydra-compute hydra-storage; do
    "$AGENT" run --node "$node" --cluster "$CLUSTER" --simulate --listen 127.0.0.1:0 --output-dir "$STATE/output/$node" \
        --heartbeat-interval 0.5 >"$STATE/logs/agent-$node.log" 2>&1 &
    PIDS+=("$!")
done
URL="http://127.0.0.1:$port"
say "console: $URL"
for _ in $(seq 1 120); do
    n="$("$HYDRA" nodes --json 2>/dev/null | grep -c '"up" : true' || true)"
    [[ "$n" -ge 3 ]] && curl -fsS "$URL/cluster" >/dev/null 2>&1 && break
    sleep 0.5
done
[[ "${n:-0}" -ge 3 ]] || { say "the three agents did not come up"; show_logs; exit 1; }

M="$STATE/output/media"
cat >"$STATE/batch.yaml" <<YAML
name: gallery-night
priority: 3
jobs:
  - {name: render-tidepool, kind: sleep, count: 4, vram: 6GiB, spec: {duration_s: 0.3, output: {images: ["$M/tidepool-0.png", "$M/tidepool-1.png"], caption: "tidepool at dusk"}}}
  - {name: voice-chorus, kind: sleep, vram: 4GiB, spec: {duration_s: 0.2, output: {audio: "$M/chorus.wav", transcript: "la la la"}}}
  - {name: "caption <script>alert(1)</script>", kind: sleep, spec: {duration_s: 0.1}}
  - {name: score-set, kind: sleep, count: 3, spec: {duration_s: 0.2}}
YAML
batch="$("$HYDRA" submit "$STATE/batch.yaml" --cluster "$CLUSTER")"
batch="${batch//[[:space:]]/}"
timeout 120 "$HYDRA" watch "$batch" >/dev/null || { say "batch $batch did not finish"; show_logs; exit 1; }

"$PSQL" -X -q -d "$HYDRA_DATABASE_URL" -v ON_ERROR_STOP=1 <<SQL
INSERT INTO approvals (id, action, tier, title, detail, batch_id, created_at) VALUES
 ('6a0c1f62-0000-4000-8000-000000000001', 'train_lora', 2, 'Train LoRA <script>alert(1)</script> harbor style',
  '{"images": ["$M/tidepool-0.png", "$M/tidepool-1.png", "$M/tidepool-2.png"], "dataset": "harbor-festival"}', '$batch', now() - interval '2 minutes'),
 ('6a0c1f62-0000-4000-8000-000000000002', 'delete_assets', 3, 'Delete 40 rejected drafts', '{"count": 40}', NULL, now() - interval '1 minute'),
 ('6a0c1f62-0000-4000-8000-000000000003', 'publish', 1, 'Publish the orchard set', '{"images": ["$M/tidepool-3.png"]}', NULL, now());
SQL
for d in 2031-03-14 2031-03-15; do
    cat >"$STATE/reports/${d}_overnight_report.md" <<MD
# Overnight report $d

Ran **9 jobs** on 3 nodes. A prompt said \`<script>alert(1)</script>\` and <script>alert(2)</script> stays text.

| node | jobs | busy |
|---|---:|---:|
| hydra-ai | 5 | 61% |
| hydra-compute | 4 | 48% |

- no failures
- 1 approval waiting
MD
done

# A long batch keeps GPUs busy while the cluster page is checked and photographed.
cat >"$STATE/busy.yaml" <<YAML
name: overnight-upscale
priority: 1
jobs:
  - {name: upscale-lighthouse, kind: sleep, count: 3, vram: 20GiB, spec: {duration_s: 120}}
  - {name: llm-saga-glass-moon, kind: sleep, vram: 14GiB, spec: {duration_s: 120}}
  - {name: lora-harbor, kind: sleep, count: 2, vram: 10GiB, spec: {duration_s: 120}}
YAML
"$HYDRA" submit "$STATE/busy.yaml" --cluster "$CLUSTER" >/dev/null
for _ in $(seq 1 60); do
    [[ "$("$PSQL" -X -q -t -A -d "$HYDRA_DATABASE_URL" -c "SELECT count(*) FROM jobs WHERE state = 'running'")" -ge 3 ]] && break
    sleep 0.5
done

rc=0
python3 "$REPO_ROOT/deploy/ci/browser_test.py" --url "$URL" --database-url "$HYDRA_DATABASE_URL" --psql "$PSQL" \
    --batch "$batch" --screenshot "$SHOT" || rc=$?
[[ -f "$SHOT" ]] && echo "artifact: $SHOT"
((rc == 0)) || show_logs
exit "$rc"
