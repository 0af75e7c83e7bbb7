#!/usr/bin/env bash
# The three-node runbook of docs/operations.md, end to end on this machine.
#
#   deploy/ci/runbook-test.sh [--bin-dir DIR] [--keep]
#   make runbook-test            (builds first)
#
# No systemd is needed (nor used when present): each service is started from
# the ExecStart= line of the REAL unit file in systemd/, with what systemd
# would give it:
#   - the variables of EnvironmentFile= (a per-host hydra.env made from
#     deploy/hydra.env.example with the runbook's settings), expanded into
#     ExecStart's ${VAR}s the way systemd does (no shell);
#   - every LoadCredential= copied from that host's /etc/hydra/credentials/
#     into a private directory, mode 0400, named in $CREDENTIALS_DIRECTORY;
#   - $STATE_DIRECTORY for StateDirectory=, $NOTIFY_SOCKET (a listener stands
#     in for systemd and must receive READY=1, as Type=notify needs) and
#     $WATCHDOG_USEC from WatchdogSec=.
# Paths are rewritten to a scratch root: /usr/local/bin -> the built
# binaries, /etc/hydra -> the host's own etc, /usr/bin/nvidia-smi -> the
# replaying fake on hydra-ai (one H200 from a capture) and a missing file on
# the other two (they run CPU-only, like hydra-storage's Arc A380).
#
# The runbook's steps, in its order: PostgreSQL role with a password and a
# pg_hba line that requires it, Redis ACL users (hydra acl --apply), an HMAC
# key shared by all hosts, `hydra migrate` with the password file, the
# coordinator, three agents, then the checks: `hydra nodes` shows 3 up, a
# smoke batch (CPU and GPU sleep jobs, a command job) succeeds, every service
# said READY=1 and WATCHDOG=1, the coordinator's /metrics passes
# `promtool check metrics` and shows what the dashboard needs.
#
# Redis and PostgreSQL are a private instance ("runbook", deploy/local/services.sh),
# stopped on exit with every process this script started (also on failure
# and Ctrl-C), unless --keep. Exit 0 only if every check passes.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
BIN_DIR=""
KEEP=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "runbook-test: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ -n "$BIN_DIR" ]] || BIN_DIR="$(swift build --show-bin-path)"
HYDRA="$BIN_DIR/hydra"
[[ -x "$HYDRA" && -x "$BIN_DIR/hydra-agent" ]] || { echo "runbook-test: no hydra/hydra-agent in $BIN_DIR (make build)" >&2; exit 2; }

INSTANCE=runbook
STATE="$REPO_ROOT/.hydra-local/$INSTANCE"
T="$STATE/hosts"
LOGS="$STATE/logs"
NODES=(hydra-ai hydra-compute hydra-storage)
COORD_HOST=hydra-storage

say() { printf 'runbook-test: %s\n' "$*" >&2; }
PIDS=(); PNAMES=()
LISTENER_PIDS=()
SERVICES_STARTED=0
CLEANED=0
cleanup() {
    ((CLEANED)) && return 0
    CLEANED=1
    local pid deadline
    # Services first (SIGTERM, as systemd's KillSignal=), then the notify listeners.
    for pid in "${PIDS[@]}" "${LISTENER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 45))
    for pid in "${PIDS[@]}" "${LISTENER_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; break; fi
            sleep 0.1
        done
        wait "$pid" 2>/dev/null || true
    done
    if ((SERVICES_STARTED && !KEEP)); then
        deploy/local/services.sh stop "$INSTANCE" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=deploy/lib/logs.sh
source "$REPO_ROOT/deploy/lib/logs.sh"
fail() { say "FAIL: $*"; show_logs 30; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_for() {
    local what="$1" secs="$2"; shift 2
    local deadline=$((SECONDS + secs))
    until "$@"; do
        ((SECONDS < deadline)) || fail "$what: not within ${secs}s"
        check_alive
        sleep 0.3
    done
}
check_alive() {
    local i rc
    for i in "${!PIDS[@]}"; do
        if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
            rc=0; wait "${PIDS[$i]}" || rc=$?
            fail "${PNAMES[$i]} exited early with status $rc"
        fi
    done
}

# unit_values UNIT KEY: every value of KEY= in the [Service] section, one per line.
unit_values() {
    awk -v key="$2" '/^\[/{sec=$0} sec=="[Service]" && index($0, key "=")==1 {print substr($0, length(key)+2)}' "systemd/$1"
}

# --- 1. PostgreSQL and Redis (on hydra-storage in the runbook) -------------------
say "starting Redis and PostgreSQL (instance $INSTANCE)"
SERVICES_STARTED=1
rm -rf "$T" "$LOGS"
mkdir -p "$T" "$LOGS"
deploy/local/services.sh start "$INSTANCE" >/dev/null || fail "deploy/local/services.sh start $INSTANCE"
# shellcheck source=/dev/null
source "$STATE/env"
PSQL=("$HYDRA_LOCAL_PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$HYDRA_LOCAL_PG_PORT" -U postgres)
redis() { redis-cli -h 127.0.0.1 -p "$HYDRA_LOCAL_REDIS_PORT" "$@"; }
redis flushall >/dev/null
"${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS hydra WITH (FORCE)" -c "CREATE DATABASE hydra OWNER hydra" >/dev/null \
    || fail "could not recreate the database"

# Runbook step "PostgreSQL": the hydra role gets a password and pg_hba requires it
# (scram-sha-256) for hydra over TCP, before the instance's trust lines.
PG_PASSWORD="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
"${PSQL[@]}" -d postgres -c "SET password_encryption = 'scram-sha-256'" -c "ALTER ROLE hydra PASSWORD '$PG_PASSWORD'" >/dev/null
HBA="$HYDRA_LOCAL_PG_DATA/pg_hba.conf"
if ! grep -q '^host hydra hydra 127.0.0.1/32 scram-sha-256' "$HBA"; then
    { echo "host hydra hydra 127.0.0.1/32 scram-sha-256"; cat "$HBA"; } > "$HBA.new" && mv "$HBA.new" "$HBA"
fi
"${PSQL[@]}" -d postgres -c "SELECT pg_reload_conf()" >/dev/null
# The check that the password is now needed: without it, the connection must be refused.
if PGPASSWORD= "$HYDRA_LOCAL_PG_BIN/psql" -X -q -w -h 127.0.0.1 -p "$HYDRA_LOCAL_PG_PORT" -U hydra -d hydra -c 'SELECT 1' >/dev/null 2>&1; then
    fail "pg_hba still lets hydra in without a password; the test would not prove the credential works"
fi

# --- 2. keys and Redis ACL users ---------------------------------------------------
# Runbook step "Keys": the cluster key for the coordinator, each agent only its node's key;
# `hydra acl` makes a user per agent and one for the coordinator and applies them (the runbook
# also writes them to the aclfile).
mkdir -p "$STATE/secrets"
"$HYDRA" keygen --force "$STATE/secrets/cluster.key" >/dev/null
for node in "${NODES[@]}"; do
    "$HYDRA" keygen --force --node "$node" --cluster-key "$STATE/secrets/cluster.key" "$STATE/secrets/$node.key" >/dev/null
done
ACL="$STATE/secrets/acl"
rm -rf "$ACL"
"$HYDRA" acl --cluster deploy/cluster.yaml --password-dir "$ACL" --apply >"$LOGS/acl.log" 2>&1 \
    || fail "hydra acl --apply (see $LOGS/acl.log)"

# --- 3. each host's /etc/hydra ----------------------------------------------------------
# install-node.sh creates the user command jobs run as (the agent unit's --command-user);
# this machine is every host at once, so once here.
if ! getent passwd hydra-job >/dev/null; then
    [[ "$(id -u)" -eq 0 ]] || fail "user hydra-job is missing and only root can create it (as install-node.sh does)"
    useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin \
        --comment "Hydra command jobs" hydra-job || fail "useradd hydra-job"
fi
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for node in "${NODES[@]}"; do
    etc="$T/$node/etc/hydra"
    mkdir -p "$etc/credentials" "$T/$node/var/lib/hydra" "$T/$node/run"
    chmod 0700 "$etc/credentials"
    cp deploy/cluster.yaml "$etc/cluster.yaml"
    cp deploy/services.yaml.example "$etc/services.yaml"
    # hydra.env as install-node.sh writes it, then edited as the runbook says. Port 0: the
    # machine is shared, so each listener picks a free port and the test reads it from the log.
    sed -e "s/@NODE@/$node/" \
        -e "s|^HYDRA_AGENT_LISTEN=.*|HYDRA_AGENT_LISTEN=127.0.0.1:0|" \
        -e "s|^HYDRA_METRICS_LISTEN=.*|HYDRA_METRICS_LISTEN=127.0.0.1:0|" \
        -e "s|^HYDRA_CONSOLE_LISTEN=.*|HYDRA_CONSOLE_LISTEN=127.0.0.1:0|" \
        -e "s|^HYDRA_SERVICES=/etc/hydra/|HYDRA_SERVICES=$etc/|" \
        -e "s|^HYDRA_REDIS_URL=.*|HYDRA_REDIS_URL=redis://hydra-agent-$node@127.0.0.1:$HYDRA_LOCAL_REDIS_PORT/0|" \
        -e "s|^HYDRA_DATABASE_URL=.*|HYDRA_DATABASE_URL=postgresql://hydra@127.0.0.1:$HYDRA_LOCAL_PG_PORT/hydra|" \
        -e "s|^HYDRA_LOG_LEVEL=.*|HYDRA_LOG_LEVEL=notice|" \
        deploy/hydra.env.example > "$etc/hydra.env"
    install -m 0600 "$STATE/secrets/$node.key" "$etc/credentials/hmac.key"
    install -m 0600 "$ACL/hydra-agent-$node.password" "$etc/credentials/redis.password"
done
cetc="$T/$COORD_HOST/etc/hydra"
install -m 0600 "$STATE/secrets/cluster.key" "$cetc/credentials/coordinator.hmac.key"
install -m 0600 "$ACL/hydra-coordinator.password" "$cetc/credentials/coordinator.redis.password"
printf '%s' "$PG_PASSWORD" > "$cetc/credentials/pg.password"; chmod 0600 "$cetc/credentials/pg.password"
od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$cetc/credentials/console.token"; chmod 0600 "$cetc/credentials/console.token"

# --- starting a unit as systemd would ------------------------------------------------------
# start_unit HOST UNIT NAME: runs UNIT's ExecStart= on HOST in the background.
start_unit() {
    local host="$1" unit="$2" name="$3"
    local root="$T/$host" etc="$T/$host/etc/hydra"
    local creds="$root/run/credentials/$unit"
    rm -rf "$creds"; mkdir -p "$creds"
    local line cname src
    while IFS= read -r line; do
        cname="${line%%:*}"; src="${line#*:}"
        src="${src/#\/etc\/hydra/$etc}"
        [[ -f "$src" ]] || fail "$unit on $host: LoadCredential= $cname: $src missing (systemd would refuse to start it)"
        install -m 0400 "$src" "$creds/$cname"
    done < <(unit_values "$unit" LoadCredential)
    chmod 0500 "$creds"

    # EnvironmentFile=: KEY=VALUE lines, no shell expansion, # comments.
    local -a envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)
    local -A vars=()
    local ef k v
    ef="$(unit_values "$unit" EnvironmentFile)"; ef="${ef#-}"; ef="${ef/#\/etc\/hydra/$etc}"
    while IFS= read -r line; do
        [[ "$line" =~ ^[[:space:]]*(#|$) ]] && continue
        k="${line%%=*}"; v="${line#*=}"
        vars[$k]="$v"; envs+=("$k=$v")
    done < "$ef"
    envs+=("CREDENTIALS_DIRECTORY=$creds")
    [[ -n "$(unit_values "$unit" StateDirectory)" ]] && envs+=("STATE_DIRECTORY=$root/var/lib/hydra")
    local wd
    wd="$(unit_values "$unit" WatchdogSec)"
    if [[ -n "$wd" ]]; then envs+=("WATCHDOG_USEC=$(( ${wd%s} * 1000000 ))"); fi
    if [[ "$(unit_values "$unit" Type)" == notify ]]; then
        local sock="$root/run/$name.notify"
        python3 deploy/ci/notify-listen.py "$sock" "$LOGS/$name.notify" &
        LISTENER_PIDS+=("$!")
        wait_for "notify socket of $name" 10 test -S "$sock"
        envs+=("NOTIFY_SOCKET=$sock")
    fi

    # ExecStart=: ${VAR} from the environment file, then the paths of this scratch host.
    local exec
    exec="$(unit_values "$unit" ExecStart)"
    [[ -n "$exec" ]] || fail "$unit has no ExecStart="
    while [[ "$exec" =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
        k="${BASH_REMATCH[1]}"
        [[ -v "vars[$k]" ]] || fail "$unit: ExecStart uses \${$k}, which $ef does not set"
        exec="${exec//\$\{$k\}/${vars[$k]}}"
    done
    local -a argv
    read -r -a argv <<<"$exec"
    local i nvsmi="$root/no-nvidia-smi"
    if [[ "$host" == hydra-ai ]]; then nvsmi="$REPO_ROOT/deploy/fake-nvidia-smi/replay.sh"; fi
    for i in "${!argv[@]}"; do
        argv[$i]="${argv[$i]/#\/usr\/local\/bin\//$BIN_DIR/}"
        argv[$i]="${argv[$i]/#\/etc\/hydra/$etc}"
        argv[$i]="${argv[$i]/#\/usr\/bin\/nvidia-smi/$nvsmi}"
    done
    envs+=("HYDRA_FAKE_SMI_GPUS=$REPO_ROOT/Tests/SharedTests/Fixtures/nvidia-smi/h200-590.48.01-linux-query-gpu-load.csv"
           "HYDRA_FAKE_SMI_APPS=$REPO_ROOT/Tests/SharedTests/Fixtures/nvidia-smi/h100-80gb-590.48.01-linux-compute-apps-idle.csv")
    printf '%s\n' "$unit on $host: ${argv[*]}" >> "$LOGS/commands.txt"
    env -i "${envs[@]}" "${argv[@]}" </dev/null >>"$LOGS/$name.log" 2>&1 &
    PIDS+=("$!")
    PNAMES+=("$name ($unit on $host, log $LOGS/$name.log)")
}

notified() { grep -q "$2" "$LOGS/$1.notify" 2>/dev/null; }

# --- 4. migrate with the password file ---------------------------------------------------
# As the runbook runs it on the coordinator host: the credential directory holds pg.password.
say "hydra migrate (password from pg.password)"
mkdir -p "$T/$COORD_HOST/run/migrate"
install -m 0400 "$cetc/credentials/pg.password" "$T/$COORD_HOST/run/migrate/pg.password"
env -i PATH="$PATH" CREDENTIALS_DIRECTORY="$T/$COORD_HOST/run/migrate" \
    HYDRA_DATABASE_URL="postgresql://hydra@127.0.0.1:$HYDRA_LOCAL_PG_PORT/hydra" \
    "$HYDRA" migrate >"$LOGS/migrate.log" 2>&1 || fail "hydra migrate with the password file (see $LOGS/migrate.log)"

# --- 5. the services ---------------------------------------------------------------------
say "starting hydra-coordinator.service on $COORD_HOST"
start_unit "$COORD_HOST" hydra-coordinator.service coordinator
for node in "${NODES[@]}"; do
    say "starting hydra-agent.service on $node"
    start_unit "$node" hydra-agent.service "agent-$node"
done
for name in coordinator "${NODES[@]/#/agent-}"; do
    wait_for "$name: READY=1 on the notify socket (Type=notify)" 60 notified "$name" '^READY=1'
done
say "every service said READY=1"

# --- 6. checks -----------------------------------------------------------------------------
export HYDRA_DATABASE_URL="postgresql://hydra@127.0.0.1:$HYDRA_LOCAL_PG_PORT/hydra"
cli() { CREDENTIALS_DIRECTORY="$T/$COORD_HOST/run/migrate" "$HYDRA" "$@"; }

three_up() {
    cli nodes --json 2>>"$LOGS/cli.log" | python3 -c '
import json, sys
nodes = json.load(sys.stdin)["nodes"]
up = sorted(n["name"] for n in nodes if n.get("up"))
sys.exit(0 if up == ["hydra-ai", "hydra-compute", "hydra-storage"] else 1)'
}
wait_for "hydra nodes shows hydra-ai, hydra-compute, hydra-storage up" 60 three_up
cli nodes
say "hydra nodes: 3 up"

BATCH_FILE="$REPO_ROOT/deploy/examples/smoke-batch.yaml"
batch="$(cli submit "$BATCH_FILE" 2>>"$LOGS/cli.log")" || fail "hydra submit"
batch="${batch//[[:space:]]/}"
say "smoke batch $batch submitted"
timeout 120 env CREDENTIALS_DIRECTORY="$T/$COORD_HOST/run/migrate" "$HYDRA" watch "$batch" --json --timeout 110 >"$LOGS/watch.log" 2>&1 \
    || { cat "$LOGS/watch.log" >&2; fail "hydra watch $batch did not see the batch finish"; }
# `hydra watch --json`: one object per line; the last says done, nothing left, ETA 0.
python3 - "$LOGS/watch.log" <<'PY' || fail "hydra watch --json output (see $LOGS/watch.log)"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
last = lines[-1]
assert last["done"] and last["finished"] == last["total"] == 10 and last["eta_s"] == 0, last
PY
summary="$(cli status "$batch" --summary | tail -n 1)"
say "smoke batch: $summary"
[[ "$summary" =~ ^10\ jobs,\ 10\ succeeded,\ 0\ failed ]] || { cli jobs --batch "$batch" >&2 || true; fail "smoke batch did not succeed: $summary"; }

# systemd's side: the watchdog is fed and the coordinator says what it does.
for name in coordinator "${NODES[@]/#/agent-}"; do
    wait_for "$name: WATCHDOG=1 (WatchdogSec=)" 30 notified "$name" '^WATCHDOG=1'
done
notified coordinator 'STATUS=leading' || fail "the coordinator never sent STATUS=leading"

# The coordinator's /metrics where hydra.env says, passing promtool, with what the dashboard reads.
mport="$(sed -n 's/.*component=coordinator metrics=127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$LOGS/coordinator.log" | tail -n 1)"
[[ -n "$mport" ]] || fail "no metrics address in the coordinator's log"
metrics="$(curl -fsS --max-time 10 "http://127.0.0.1:$mport/metrics")" || fail "coordinator /metrics"
printf '%s\n' "$metrics" > "$LOGS/coordinator.prom"
if command -v promtool >/dev/null; then
    out="$(promtool check metrics < "$LOGS/coordinator.prom" 2>&1)" || fail "promtool check metrics: $out"
else
    say "promtool not installed: exposition lint skipped (make check-ops installs it)"
fi
expect() { grep -qE "$1" <<<"$metrics" || fail "coordinator /metrics lacks /$1/"; }
expect '^hydra_coordinator_leader 1$'
expect '^hydra_jobs_finished_total\{kind="sleep",state="succeeded",failure_class="none"\} 8$'
expect '^hydra_jobs_finished_total\{kind="command",state="succeeded",failure_class="none"\} 2$'
expect '^hydra_jobs_finished_total\{kind="image",state="dead",failure_class="oom"\} 0$'
expect '^hydra_jobs_lost_total 0$'
expect '^hydra_pending_jobs\{reason="unschedulable"\} 0$'
expect '^hydra_build_info\{program="hydra",version="[^"]+"\} 1$'
expect '^process_open_fds [0-9]+$'
# Idle nodes read 0 dispatched-not-started once the next node pass ran (once a second).
idle_queues() {
    metrics="$(curl -fsS --max-time 10 "http://127.0.0.1:$mport/metrics")" || return 1
    local n
    for n in "${NODES[@]}"; do grep -q "^hydra_queue_depth{node=\"$n\"} 0$" <<<"$metrics" || return 1; done
}
wait_for "hydra_queue_depth 0 for every idle node" 20 idle_queues
say "coordinator /metrics: leader, finished counts, queue depth 0 on idle nodes, process series"

say "ok: 3 nodes up, smoke batch succeeded, READY/WATCHDOG seen, metrics as documented"
