#!/usr/bin/env bash
# A small overnight night on the fake services: three fictional collections, a dozen images.
#
#   deploy/pipeline-demo.sh          (after `make build`; `make demo` runs it after the job demo)
#
# Starts a private Redis + PostgreSQL (instance "pipeline"), `hydra-fake all`, the coordinator
# and three agents wired to the fakes (hydra-ai: TabbyAPI; hydra-compute: ComfyUI, Ollama,
# GPT-SoVITS; hydra-storage: scorer), writes a pipeline config under .hydra-local/pipeline/,
# runs `hydra pipeline run` and prints, as the last line, `pipeline demo: report <path>`.
# Exit status: the runner's. Knobs: HYDRA_PIPELINE_DEMO_KEEP_SERVICES=1, HYDRA_PIPELINE_DEMO_FAKE_PORT.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"
INSTANCE=pipeline
STATE="$REPO_ROOT/.hydra-local/$INSTANCE"
LOGS="$STATE/logs"
CLUSTER_FILE="$REPO_ROOT/deploy/cluster.yaml"
NODES=(hydra-ai hydra-compute hydra-storage)

say() { printf 'pipeline demo: %s\n' "$*" >&2; }
PIDS=()
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        local deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${HYDRA_PIPELINE_DEMO_KEEP_SERVICES:-0}" != 1 ]]; then
        "$REPO_ROOT/deploy/local/services.sh" stop "$INSTANCE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
fail() {
    say "error: $*"
    for f in "$LOGS"/*.log; do [[ -f "$f" ]] && { printf -- '--- %s ---\n' "$f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

BIN_DIR="$(swift build --show-bin-path)"
HYDRA="$BIN_DIR/hydra"; AGENT="$BIN_DIR/hydra-agent"; FAKE="$BIN_DIR/hydra-fake"
[[ -x "$HYDRA" && -x "$AGENT" && -x "$FAKE" ]] || fail "binaries missing in $BIN_DIR; run 'make build'"

say "starting Redis and PostgreSQL (instance $INSTANCE)"
"$REPO_ROOT/deploy/local/services.sh" start "$INSTANCE" >/dev/null || fail "services.sh start $INSTANCE failed"
# shellcheck source=/dev/null
source "$STATE/env"
mkdir -p "$LOGS"; rm -f "$LOGS"/*.log
redis-cli -h 127.0.0.1 -p "$HYDRA_LOCAL_REDIS_PORT" flushall >/dev/null
"$HYDRA_LOCAL_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HYDRA_LOCAL_PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS hydra WITH (FORCE)" -c "CREATE DATABASE hydra OWNER hydra" >/dev/null || fail "cannot reset the database"
"$HYDRA" migrate >"$LOGS/migrate.log" 2>&1 || fail "hydra migrate failed"

WORK="$STATE/night"
rm -rf "$WORK"; mkdir -p "$WORK/out" "$WORK/refs"
FAKE_PORT="${HYDRA_PIPELINE_DEMO_FAKE_PORT:-18288}"
while ! (port_free "$FAKE_PORT" && port_free $((FAKE_PORT + 1)) && port_free $((FAKE_PORT + 2)) && port_free $((FAKE_PORT + 3)) && port_free $((FAKE_PORT + 4))); do
    FAKE_PORT=$((FAKE_PORT + 10))
done
say "starting the fake services on ports $FAKE_PORT…$((FAKE_PORT + 4))"
"$FAKE" all --base-port "$FAKE_PORT" --image-root "$WORK" </dev/null >>"$LOGS/fakes.log" 2>&1 &
PIDS+=("$!")

# What each node runs, as in deploy/cluster.yaml.
cat >"$WORK/hydra-ai.services.yaml" <<YAML
services_endpoints: {tabbyapi: {url: "http://127.0.0.1:$((FAKE_PORT + 1))"}}
YAML
cat >"$WORK/hydra-compute.services.yaml" <<YAML
services_endpoints:
  comfyui: {url: "http://127.0.0.1:$FAKE_PORT"}
  ollama: {url: "http://127.0.0.1:$((FAKE_PORT + 2))"}
  tts: {url: "http://127.0.0.1:$((FAKE_PORT + 3))"}
YAML
cat >"$WORK/hydra-storage.services.yaml" <<YAML
services_endpoints: {scorer: {url: "http://127.0.0.1:$((FAKE_PORT + 4))"}}
YAML
# A stand-in face reference: the fake scorer only needs the file to exist.
printf '\x89PNG\r\n\x1a\nfictional-reference' >"$WORK/refs/fictional-07.png"

say "starting the coordinator and three agents"
"$HYDRA" coordinator --cluster "$CLUSTER_FILE" --metrics-listen 127.0.0.1:0 </dev/null >>"$LOGS/coordinator.log" 2>&1 &
PIDS+=("$!")
for node in "${NODES[@]}"; do
    "$AGENT" run --node "$node" --cluster "$CLUSTER_FILE" --simulate --listen 127.0.0.1:0 --output-dir "$WORK/out" \
        --services "$WORK/$node.services.yaml" --workflows-dir "$REPO_ROOT/deploy/workflows" \
        </dev/null >>"$LOGS/agent-$node.log" 2>&1 &
    PIDS+=("$!")
done
deadline=$((SECONDS + 60))
until [[ "$("$HYDRA" nodes --json 2>/dev/null | grep -o '"up" *: *true' | wc -l)" -ge 3 ]]; do
    ((SECONDS < deadline)) || fail "the three agents did not report within 60 s"
    sleep 0.3
done

cat >"$WORK/queue.yaml" <<YAML
collections:
  - name: lantern-keepers
    target: 4
    priority: 10
    style: "ink wash, warm lantern light, quiet harbor at dusk"
    ideas: ["an old lantern keeper mending a paper lantern", "a young lantern keeper on the harbor wall"]
    reference: $WORK/refs/fictional-07.png
    lora: {name: paper-lantern-style.safetensors, strength: 0.8}
  - name: meadow-cartographers
    target: 4
    priority: 5
    style: "watercolor, soft morning light"
    ideas: ["a cartographer sketching a meadow map", "a cartographer who once sailed with Captain Orvel Dunmere"]
  - name: glass-orchard
    target: 4
    style: "still life, glass fruit on copper trays, studio light"
    train_lora: {min_images: 2, argv: [/bin/echo, train-lora]}
YAML
cat >"$WORK/denylist.txt" <<'TXT'
gore
Captain Orvel Dunmere
TXT
cat >"$WORK/pipeline.yaml" <<YAML
queue: queue.yaml
assets_dir: assets
reports_dir: reports
outputs_dir: out
rejects: quarantine
quarantine_dir: quarantine
gates: {aesthetic: 6.0, technical: 60, face_similarity: 0.4}
variations_per_task: 2
max_images_per_night: 12
denylist: denylist.txt
workflow: {template: txt2img-basic, checkpoint: atlas-xl-base.safetensors, steps: 20}
expansion: {endpoint: tabbyapi}
poll_interval_s: 0.3
drain_s: 30
cluster: $CLUSTER_FILE
YAML

say "dry run (plan and forecast):"
"$HYDRA" pipeline run --config "$WORK/pipeline.yaml" --dry-run >&2
say "running the night"
rc=0
out="$(timeout --foreground 300 "$HYDRA" pipeline run --config "$WORK/pipeline.yaml" 2>>"$LOGS/pipeline.log")" || rc=$?
printf '%s\n' "$out" >&2
"$HYDRA" approvals >&2 || true
report="$(printf '%s\n' "$out" | sed -n 's/^report: //p')"
((rc == 0)) && [[ -f "$report" ]] || fail "hydra pipeline run failed (status $rc)"
cleanup
printf 'pipeline demo: report %s\n' "$report"
