#!/usr/bin/env bash
# The Hydra demo: a whole simulated cluster on this machine.
#
#   deploy/demo.sh            (normally via `make demo`, which builds first)
#
# Starts a private Redis + PostgreSQL (instance "demo"), migrates, starts the
# coordinator and three simulated agents (hydra-ai, hydra-compute,
# hydra-storage from deploy/cluster.yaml), submits
# deploy/examples/sample-batch.yaml, watches it finish, prints the node table
# and `demo: <summary>`. In a terminal (stdin is a tty) it then keeps the
# cluster and the web console running and prints what to try, until Ctrl-C;
# otherwise (CI) the summary is the last line and it stops at once.
# Everything it started is stopped on exit. Exit status 0 only if the batch
# ended with 0 failed and 0 lost jobs.
#
# Environment knobs:
#   HYDRA_DEMO_BATCH         batch file (default deploy/examples/sample-batch.yaml)
#   HYDRA_DEMO_TIMEOUT       seconds `hydra watch` may take (default 300)
#   HYDRA_DEMO_NODES_TIMEOUT seconds to wait for the 3 agents to show up (default 60)
#   HYDRA_DEMO_KEEP_DATA=1   keep the demo database and Redis contents from the
#                            previous run (default: start from empty ones)
#   HYDRA_DEMO_KEEP_SERVICES=1  leave Redis/PostgreSQL running afterwards
#   HYDRA_DEMO_CONSOLE_PORT  first port to try for the web console (default 8480)
#   HYDRA_DEMO_EXIT=1        stop at once even in a terminal
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

INSTANCE=demo
STATE="$REPO_ROOT/.hydra-local/$INSTANCE"
LOGS="$STATE/logs"
CLUSTER_FILE="$REPO_ROOT/deploy/cluster.yaml"
BATCH_FILE="${HYDRA_DEMO_BATCH:-$REPO_ROOT/deploy/examples/sample-batch.yaml}"
WATCH_TIMEOUT="${HYDRA_DEMO_TIMEOUT:-300}"
NODES=(hydra-ai hydra-compute hydra-storage)
METRICS_BASE_PORT=9101

say() { printf 'demo: %s\n' "$*" >&2; }

PIDS=()         # background processes we started
PNAMES=()       # their names, same order
SERVICES_STARTED=0
CLEANED=0

cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 10))
    for pid in "${PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    PNAMES=()
    if ((SERVICES_STARTED)) && [[ "${HYDRA_DEMO_KEEP_SERVICES:-0}" != 1 ]]; then
        "$REPO_ROOT/deploy/local/services.sh" stop "$INSTANCE" || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the last lines of every demo log to stderr.
# shellcheck source=deploy/lib/logs.sh
source "$REPO_ROOT/deploy/lib/logs.sh"

fail() {
    say "error: $*"
    show_logs
    exit 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- binaries --------------------------------------------------------------
BIN_DIR="$(swift build --show-bin-path)" || fail "swift build --show-bin-path failed"
HYDRA="$BIN_DIR/hydra"
AGENT="$BIN_DIR/hydra-agent"
FAKE="$BIN_DIR/hydra-fake"
[[ -x "$HYDRA" && -x "$AGENT" && -x "$FAKE" ]] || fail "$HYDRA, $AGENT or $FAKE is missing; run 'make build' (or 'make demo')"
[[ -f "$BATCH_FILE" ]] || fail "batch file $BATCH_FILE not found"

# --- services --------------------------------------------------------------
say "starting Redis and PostgreSQL (instance $INSTANCE)"
SERVICES_STARTED=1
"$REPO_ROOT/deploy/local/services.sh" start "$INSTANCE" >/dev/null \
    || fail "deploy/local/services.sh start $INSTANCE failed"
# shellcheck source=/dev/null
source "$STATE/env"
export HYDRA_CLUSTER="$CLUSTER_FILE"
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log

if [[ "${HYDRA_DEMO_KEEP_DATA:-0}" != 1 ]]; then
    say "resetting the demo database and Redis (HYDRA_DEMO_KEEP_DATA=1 keeps them)"
    redis-cli -h 127.0.0.1 -p "$HYDRA_LOCAL_REDIS_PORT" flushall >/dev/null \
        || fail "could not flush the demo Redis on port $HYDRA_LOCAL_REDIS_PORT"
    "$HYDRA_LOCAL_PG_BIN/psql" -X -q -h 127.0.0.1 -p "$HYDRA_LOCAL_PG_PORT" -U postgres -d postgres \
        -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS hydra WITH (FORCE)" \
        -c "CREATE DATABASE hydra OWNER hydra" >/dev/null \
        || fail "could not recreate the demo database"
fi

say "hydra migrate"
"$HYDRA" migrate >"$LOGS/migrate.log" 2>&1 || fail "hydra migrate failed"

# --- signing key and the fake AI services ------------------------------------
# Envelopes are signed as in production: one HMAC key, read from a 0600 file.
[[ -f "$STATE/hmac.key" ]] || "$HYDRA" keygen "$STATE/hmac.key" >/dev/null || fail "hydra keygen failed"
# Redis ACL users as in production: each agent may touch only its own keys and the results stream.
ACL="$STATE/redis-acl"
"$HYDRA" acl --cluster "$CLUSTER_FILE" --password-dir "$ACL" --apply >"$LOGS/acl.log" 2>&1 \
    || fail "hydra acl --apply failed (see $LOGS/acl.log)"

# hydra-fake speaks the real APIs (ComfyUI, TabbyAPI, Ollama, GPT-SoVITS, scorer), so the
# sample batch's image, llm, tts and score jobs go over real HTTP.
FAKE_PORT="${HYDRA_DEMO_FAKE_PORT:-18188}"
fake_ports_free() { local p; for p in 0 1 2 3 4; do port_free $((FAKE_PORT + p)) || return 1; done; }
while ! fake_ports_free; do FAKE_PORT=$((FAKE_PORT + 5)); done
say "starting the fake AI services on 127.0.0.1:$FAKE_PORT-$((FAKE_PORT + 4))"
"$FAKE" all --base-port "$FAKE_PORT" --latency-ms 150 --image-root "$REPO_ROOT" </dev/null >>"$LOGS/fakes.log" 2>&1 &
PIDS+=("$!")
PNAMES+=("fake services (log $LOGS/fakes.log)")
svc() { echo "    $1: {url: \"http://127.0.0.1:$((FAKE_PORT + $2))\"${3:+, gpu: $3}}"; }
# Each node's endpoints, as its /etc/hydra/services.yaml would list them.
{ echo "services_endpoints:"; svc tabbyapi 1; } >"$STATE/services-hydra-ai.yaml"
{ echo "services_endpoints:"; svc comfyui 0 0; svc ollama 2 1; svc tts 3; } >"$STATE/services-hydra-compute.yaml"
{ echo "services_endpoints:"; svc scorer 4; } >"$STATE/services-hydra-storage.yaml"

# --- coordinator and agents ------------------------------------------------
CONSOLE_PORT="${HYDRA_DEMO_CONSOLE_PORT:-8480}"
while ! port_free "$CONSOLE_PORT"; do CONSOLE_PORT=$((CONSOLE_PORT + 1)); done
mkdir -p "$STATE/output" "$STATE/reports"
say "starting the coordinator; web console: http://127.0.0.1:$CONSOLE_PORT/"
"$HYDRA" coordinator --cluster "$CLUSTER_FILE" --hmac-key "$STATE/hmac.key" \
    --redis-user hydra-coordinator --redis-password-file "$ACL/hydra-coordinator.password" --console-listen "127.0.0.1:$CONSOLE_PORT" \
    --output-dir "$STATE/output" --reports-dir "$STATE/reports" </dev/null >>"$LOGS/coordinator.log" 2>&1 &
PIDS+=("$!")
PNAMES+=("coordinator (log $LOGS/coordinator.log)")

port=$METRICS_BASE_PORT
for node in "${NODES[@]}"; do
    while ! port_free "$port"; do port=$((port + 1)); done
    mkdir -p "$STATE/output/$node"
    say "starting agent $node (simulated GPUs, metrics on 127.0.0.1:$port)"
    # Each agent holds only its node's own key, as on an installed node.
    "$HYDRA" keygen --force --node "$node" --cluster-key "$STATE/hmac.key" "$STATE/$node.key" >/dev/null || fail "hydra keygen --node $node failed"
    "$AGENT" run --node "$node" --cluster "$CLUSTER_FILE" --simulate \
        --listen "127.0.0.1:$port" --output-dir "$STATE/output/$node" \
        --hmac-key "$STATE/$node.key" --services "$STATE/services-$node.yaml" --workflows-dir "$REPO_ROOT/deploy/workflows" \
        --redis-user "hydra-agent-$node" --redis-password-file "$ACL/hydra-agent-$node.password" \
        </dev/null >>"$LOGS/agent-$node.log" 2>&1 &
    PIDS+=("$!")
    PNAMES+=("agent $node (log $LOGS/agent-$node.log)")
    port=$((port + 1))
done

# Fails if one of our background processes has already exited.
check_alive() {
    local i rc
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            rc=0
            wait "${PIDS[$i]}" || rc=$?
            fail "the ${PNAMES[$i]} exited early with status $rc"
        fi
    done
}

say "waiting for 3 nodes to report"
nodes_timeout="${HYDRA_DEMO_NODES_TIMEOUT:-60}"
deadline=$((SECONDS + nodes_timeout))
while :; do
    check_alive
    nodes_json="$("$HYDRA" nodes --json 2>>"$LOGS/cli.log" || true)"
    seen=0
    for node in "${NODES[@]}"; do
        if [[ "$nodes_json" == *"\"$node\""* ]]; then seen=$((seen + 1)); fi
    done
    ((seen == ${#NODES[@]})) && break
    ((SECONDS < deadline)) || fail "only $seen of ${#NODES[@]} nodes listed by 'hydra nodes --json' after ${nodes_timeout}s"
    sleep 0.5
done

# --- the batch -------------------------------------------------------------
say "submitting $BATCH_FILE"
batch="$("$HYDRA" submit "$BATCH_FILE" 2>>"$LOGS/cli.log")" || fail "hydra submit $BATCH_FILE failed"
batch="${batch//[[:space:]]/}"
[[ -n "$batch" ]] || fail "hydra submit printed no batch id"
say "batch $batch submitted; watching"

check_alive
if ! timeout --foreground "$WATCH_TIMEOUT" "$HYDRA" watch "$batch"; then
    fail "hydra watch $batch failed or did not finish within ${WATCH_TIMEOUT}s"
fi

"$HYDRA" nodes || fail "hydra nodes failed"

summary="$("$HYDRA" status "$batch" --summary)" || fail "hydra status $batch --summary failed"
summary="$(printf '%s\n' "$summary" | tail -n 1)"

ok=0
if [[ "$summary" =~ (^|[^0-9])0\ failed ]] && [[ "$summary" =~ (^|[^0-9])0\ lost ]]; then ok=1; fi
((ok)) || show_logs

# In a terminal the cluster stays up for a look around (like `nomad agent -dev`) until Ctrl-C;
# without one (CI, a pipe) it stops at once, so the summary is the last line and the exit
# status says whether the batch succeeded.
if [[ -t 0 && "${HYDRA_DEMO_EXIT:-0}" != 1 ]]; then
    printf 'demo: %s\n' "$summary"
    rel() { printf '%s' "${1#"$REPO_ROOT"/}"; }
    cat >&2 <<TRY

demo: the cluster keeps running until you press Ctrl-C. In another terminal, from $REPO_ROOT:

    source $(rel "$STATE/env"); export HYDRA_CLUSTER=$(rel "$CLUSTER_FILE")
    $(rel "$HYDRA") nodes                                  # three nodes, their GPUs
    $(rel "$HYDRA") submit deploy/examples/sample-batch.yaml   # prints a batch id
    $(rel "$HYDRA") watch <batch>                          # progress, ETA (--json for lines)
    $(rel "$HYDRA") jobs --state pending                   # why a job waits

    web console:  http://127.0.0.1:$CONSOLE_PORT/
    metrics:      http://127.0.0.1:$METRICS_BASE_PORT/metrics (agents from there up; coordinator per its log)
    logs:         $(rel "$LOGS")/

TRY
    trap 'say "stopping"; cleanup; exit $((ok ? 0 : 1))' INT TERM
    while :; do
        for i in "${!PIDS[@]}"; do
            if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
                say "the ${PNAMES[$i]} exited; stopping the rest"
                show_logs
                cleanup
                exit 1
            fi
        done
        # Interrupted at once by Ctrl-C: bash runs the trap when the wait ends.
        sleep 2 & wait $! || true
    done
fi

# Stop everything before the last line so that it stays the last line.
cleanup
printf 'demo: %s\n' "$summary"
((ok))
