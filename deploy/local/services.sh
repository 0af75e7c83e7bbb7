#!/usr/bin/env bash
# Private Redis + PostgreSQL for one local Hydra instance (dev, test, demo, ...).
#
#   deploy/local/services.sh {start|stop|status|env|deps|destroy} [NAME]
#   deploy/local/services.sh {redis-start|redis-stop|pg-start|pg-stop} [NAME]
#
# State lives in <repo>/.hydra-local/NAME/ (gitignored). `start` writes
# .hydra-local/NAME/env (shell exports, see write_env) and prints it on stdout;
# progress and errors go to stderr. See deploy/local/README.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
LOCAL_ROOT="${HYDRA_LOCAL_ROOT:-$REPO_ROOT/.hydra-local}"

CMD="${1:-}"
NAME="${2:-dev}"
PROG="services.sh"

usage() {
    cat >&2 <<EOF
usage: deploy/local/services.sh {start|stop|status|env|deps|destroy} [NAME]
       deploy/local/services.sh {redis-start|redis-stop|pg-start|pg-stop} [NAME]
NAME defaults to 'dev'; state lives in .hydra-local/NAME/
EOF
    exit 2
}

log() { printf '%s[%s]: %s\n' "$PROG" "$NAME" "$*" >&2; }
die() { printf '%s[%s]: error: %s\n' "$PROG" "$NAME" "$*" >&2; exit 1; }

# Prints the last lines of a log file to stderr (used when something failed).
tail_log() {
    local file="$1"
    if [[ -r "$file" ]]; then
        printf '%s[%s]: --- last lines of %s ---\n' "$PROG" "$NAME" "$file" >&2
        tail -n 30 "$file" >&2 || true
        printf '%s[%s]: --- end of %s ---\n' "$PROG" "$NAME" "$file" >&2
    else
        printf '%s[%s]: (no log file at %s)\n' "$PROG" "$NAME" "$file" >&2
    fi
}

[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$ ]] \
    || die "instance name '$NAME' must be letters, digits, '-' or '_' (at most 32 characters)"

STATE="$LOCAL_ROOT/$NAME"

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# ---------------------------------------------------------------- packages --

# Debian packages the local cluster and the Swift build need.
REQUIRED_PACKAGES=(redis-server postgresql libhiredis-dev libcurl4-openssl-dev libpq-dev pkg-config)

pg_bin_dir() {
    if [[ -n "${HYDRA_PG_BIN:-}" ]]; then # override, e.g. another PostgreSQL version
        [[ -x "$HYDRA_PG_BIN/initdb" && -x "$HYDRA_PG_BIN/pg_ctl" ]] || return 1
        printf '%s\n' "$HYDRA_PG_BIN"
        return 0
    fi
    local dirs=() d
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]] && dirs+=("$d")
    done
    ((${#dirs[@]} > 0)) || return 1
    printf '%s\n' "${dirs[@]}" | sort -V | tail -n 1
}

pkg_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

package_missing() {
    case "$1" in
        redis-server) ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1 ;;
        postgresql) ! pg_bin_dir >/dev/null 2>&1 ;;
        pkg-config) ! command -v pkg-config >/dev/null 2>&1 ;;
        *) ! pkg_installed "$1" ;;
    esac
}

ensure_deps() {
    local missing=() p
    for p in "${REQUIRED_PACKAGES[@]}"; do
        if package_missing "$p"; then missing+=("$p"); fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 \
        || die "missing packages (${missing[*]}) and no apt-get to install them; install them by hand"
    local sudo=()
    if ! is_root; then
        command -v sudo >/dev/null 2>&1 \
            || die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
        sudo=(sudo -n env DEBIAN_FRONTEND=noninteractive)
    fi
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may still be running unattended-upgrades: wait for the dpkg lock.
    local lock=(-o DPkg::Lock::Timeout=300)
    "${sudo[@]}" apt-get "${lock[@]}" update -q </dev/null >&2 \
        || die "apt-get update failed (needed to install: ${missing[*]})"
    "${sudo[@]}" apt-get "${lock[@]}" install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" </dev/null >&2 \
        || die "apt-get install ${missing[*]} failed"
    for p in "${missing[@]}"; do
        if package_missing "$p"; then die "package $p still missing after apt-get install"; fi
    done
}

# ------------------------------------------------------------------- ports --

# True when nothing accepts TCP connections on 127.0.0.1:PORT.
port_free() {
    local port="$1"
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        return 1
    fi
    if command -v ss >/dev/null 2>&1 && ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
        return 1
    fi
    return 0
}

# Prints a free port: PREFERRED if free, else a nearby one, else one the kernel picks.
pick_port() {
    local preferred="$1" p
    for ((p = preferred; p < preferred + 200; p++)); do
        if port_free "$p"; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
        return 0
    fi
    die "no free TCP port found near $preferred"
}

default_port() { # kind (redis|pg)
    local base
    case "$1" in redis) base=6390 ;; pg) base=5440 ;; esac
    case "$NAME" in
        dev) printf '%s\n' "$base" ;;
        demo) printf '%s\n' $((base + 1)) ;;
        test) printf '%s\n' $((base + 2)) ;;
        *) # another instance: a stable port derived from the name, away from the fixed ones
            local h
            h=$(printf '%s' "$NAME" | cksum | cut -d' ' -f1)
            printf '%s\n' $((base + 10 + h % 80)) ;;
    esac
}

# Port recorded for this instance (kept across restarts so URLs stay valid),
# or a fresh free one. Records the choice.
instance_port() { # kind
    local kind="$1" file="$STATE/$1.port" port=""
    [[ -f "$file" ]] && port="$(<"$file")"
    if [[ "$port" =~ ^[0-9]+$ ]] && port_free "$port"; then
        printf '%s\n' "$port"
        return 0
    fi
    if [[ -n "$port" ]]; then
        log "$kind port $port is taken by another process; picking another one"
    fi
    port="$(pick_port "$(default_port "$kind")")"
    printf '%s\n' "$port" >"$file"
    printf '%s\n' "$port"
}

recorded_port() { # kind
    local file="$STATE/$1.port"
    [[ -f "$file" ]] && cat "$file"
}

# ------------------------------------------------------------------- redis --

REDIS_CONF="$STATE/redis/redis.conf"
REDIS_PIDFILE="$STATE/redis/redis.pid"
REDIS_LOG="$STATE/redis/redis.log"

redis_pid() {
    local pid
    [[ -f "$REDIS_PIDFILE" ]] || return 1
    pid="$(<"$REDIS_PIDFILE")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # The pid file may be stale and the pid reused by something else.
    grep -q 'redis' "/proc/$pid/comm" 2>/dev/null || return 1
    printf '%s\n' "$pid"
}

redis_ping() { # port
    [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == "PONG" ]]
}

redis_start() {
    mkdir -p "$STATE/redis"
    local pid port
    if pid="$(redis_pid)"; then
        port="$(recorded_port redis)"
        if redis_ping "$port"; then
            return 0
        fi
        die "redis-server (pid $pid) runs but does not answer PING on port $port"
    fi
    port="$(instance_port redis)"
    cat >"$REDIS_CONF" <<EOF
# Generated by deploy/local/services.sh for instance '$NAME'; rewritten on every start.
bind 127.0.0.1
protected-mode yes
port $port
daemonize yes
supervised no
pidfile "$REDIS_PIDFILE"
logfile "$REDIS_LOG"
loglevel notice
dir "$STATE/redis"
databases 64
save ""
appendonly yes
appendfsync everysec
appendfilename "appendonly.aof"
EOF
    rm -f "$REDIS_PIDFILE"
    log "starting redis-server on 127.0.0.1:$port"
    if ! redis-server "$REDIS_CONF" >>"$REDIS_LOG" 2>&1 9>&-; then
        tail_log "$REDIS_LOG"
        die "redis-server failed to start (config $REDIS_CONF)"
    fi
    local deadline=$((SECONDS + 30))
    until redis_ping "$port"; do
        if ((SECONDS >= deadline)); then
            tail_log "$REDIS_LOG"
            die "redis-server did not answer PING on 127.0.0.1:$port within 30s"
        fi
        sleep 0.1
    done
}

redis_stop() {
    local pid port
    if ! pid="$(redis_pid)"; then
        rm -f "$REDIS_PIDFILE"
        return 0
    fi
    port="$(recorded_port redis || true)"
    log "stopping redis-server (pid $pid)"
    if [[ -n "$port" ]]; then
        redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
    fi
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "redis-server (pid $pid) ignored SHUTDOWN; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 2
            if kill -0 "$pid" 2>/dev/null; then
                log "redis-server (pid $pid) still alive; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            break
        fi
        sleep 0.1
    done
    rm -f "$REDIS_PIDFILE"
}

# -------------------------------------------------------------- postgresql --

PG_USER="" # system user that runs initdb/postgres; set by pg_setup_user
PG_HOME="" # directory holding data/, postgres.log and the socket; see pg_home

pg_setup_user() {
    if ! is_root; then
        PG_USER="$(id -un)"
        return 0
    fi
    PG_USER=postgres
    if ! id -u postgres >/dev/null 2>&1; then
        log "creating system user 'postgres' (initdb and postgres refuse to run as root)"
        local group_opt=(--user-group)
        if getent group postgres >/dev/null 2>&1; then group_opt=(--gid postgres); fi
        useradd --system "${group_opt[@]}" --home-dir /var/lib/postgresql --no-create-home \
            --shell /bin/bash postgres || die "could not create system user 'postgres'"
    fi
}

# Runs a command as the PostgreSQL user (from /, which every user can enter).
# fd 9 (the instance lock) is closed so that the server does not inherit it.
as_pg() {
    if is_root; then
        (cd / && runuser -u "$PG_USER" -- "$@") 9>&-
    else
        "$@" 9>&-
    fi
}

# The directory for PostgreSQL files: $STATE/pg normally; when the PostgreSQL
# user cannot reach it (repo under a private home such as /root with mode 700)
# or the socket path would be too long, /tmp/hydra-pg-NAME-<hash of the .hydra-local path>.
# The choice is recorded in $STATE/pg.home.
pg_home() {
    local record="$STATE/pg.home"
    if [[ -f "$record" ]]; then
        PG_HOME="$(<"$record")"
        if [[ -d "$PG_HOME/data" ]]; then return 0; fi
    fi
    local candidate="$STATE/pg"
    mkdir -p "$candidate"
    chmod 700 "$candidate"
    if is_root; then chown "$PG_USER:" "$candidate"; fi
    # Unix socket paths are limited to 107 bytes: "<home>/.s.PGSQL.<port>".
    if ((${#candidate} > 85)) || ! as_pg test -w "$candidate" -a -x "$candidate"; then
        local hash
        hash="$(printf '%s' "$LOCAL_ROOT" | sha256sum | cut -c1-12)"
        rmdir "$candidate" 2>/dev/null || true
        candidate="/tmp/hydra-pg-$NAME-$hash"
        log "PostgreSQL user '$PG_USER' cannot use $STATE (or the path is too long); using $candidate"
        if [[ -e "$candidate" ]]; then
            [[ -d "$candidate" && ! -L "$candidate" ]] || die "$candidate exists and is not a directory"
            local owner
            owner="$(stat -c %U "$candidate")"
            [[ "$owner" == "$PG_USER" ]] || die "$candidate is owned by '$owner', not '$PG_USER'; remove it"
        else
            mkdir -m 700 "$candidate" || die "cannot create $candidate"
            if is_root; then chown "$PG_USER:" "$candidate"; fi
        fi
        as_pg test -w "$candidate" || die "PostgreSQL user '$PG_USER' cannot write $candidate"
    fi
    PG_HOME="$candidate"
    printf '%s\n' "$PG_HOME" >"$record"
}

pg_running() { # needs PG_HOME, PG_BIN
    [[ -f "$PG_HOME/data/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PG_HOME/data" status >/dev/null 2>&1
}

pg_psql() { # port, sql... (as superuser postgres over TCP)
    local port="$1"
    shift
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tA "$@"
}

pg_start() {
    PG_BIN="$(pg_bin_dir)" \
        || die "PostgreSQL server binaries not found in ${HYDRA_PG_BIN:-/usr/lib/postgresql/*/bin} (run: deploy/local/services.sh deps)"
    pg_setup_user
    pg_home
    local data="$PG_HOME/data" logf="$PG_HOME/postgres.log" port
    if pg_running; then
        port="$(recorded_port pg)"
    else
        if [[ ! -f "$data/PG_VERSION" ]]; then
            log "initdb $data (user $PG_USER, $PG_BIN)"
            rm -rf "$data"
            if ! as_pg "$PG_BIN/initdb" -D "$data" --auth=trust -U postgres -E UTF8 --locale=C \
                >"$PG_HOME/initdb.log" 2>&1; then
                tail_log "$PG_HOME/initdb.log"
                die "initdb failed for $data"
            fi
            printf "\n# Hydra local settings (deploy/local/services.sh)\ninclude_if_exists 'hydra-local.conf'\n" \
                | as_pg tee -a "$data/postgresql.conf" >/dev/null
        fi
        port="$(instance_port pg)"
        as_pg tee "$data/hydra-local.conf" >/dev/null <<EOF
# Generated by deploy/local/services.sh for instance '$NAME'; rewritten on every start.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_HOME'
max_connections = 200
EOF
        log "starting PostgreSQL on 127.0.0.1:$port (data $data)"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t 60 start >/dev/null 2>&1; then
            tail_log "$logf"
            die "PostgreSQL failed to start (pg_ctl -D $data start)"
        fi
    fi
    local deadline=$((SECONDS + 30))
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            tail_log "$logf"
            die "PostgreSQL did not accept connections on 127.0.0.1:$port within 30s"
        fi
        sleep 0.2
    done
    # Role and database for Hydra (CREATEDB: integration tests create hydra_test_* databases).
    if [[ "$(pg_psql "$port" -c "SELECT 1 FROM pg_roles WHERE rolname = 'hydra'")" != "1" ]]; then
        pg_psql "$port" -c "CREATE ROLE hydra LOGIN CREATEDB" >/dev/null \
            || die "could not create role hydra"
    fi
    if [[ "$(pg_psql "$port" -c "SELECT 1 FROM pg_database WHERE datname = 'hydra'")" != "1" ]]; then
        pg_psql "$port" -c "CREATE DATABASE hydra OWNER hydra" >/dev/null \
            || die "could not create database hydra"
    fi
}

pg_stop() {
    PG_BIN="$(pg_bin_dir)" || return 0
    pg_setup_user
    local record="$STATE/pg.home"
    [[ -f "$record" ]] || return 0
    PG_HOME="$(<"$record")"
    [[ -d "$PG_HOME/data" ]] || return 0
    if pg_running; then
        local pid=""
        pid="$(head -n 1 "$PG_HOME/data/postmaster.pid" 2>/dev/null || true)"
        log "stopping PostgreSQL ($PG_HOME/data)"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_HOME/data" -m fast -w -t 60 stop >/dev/null 2>&1; then
            tail_log "$PG_HOME/postgres.log"
            die "pg_ctl stop failed for $PG_HOME/data"
        fi
        # pg_ctl returns once postmaster.pid is gone; wait for the process itself too.
        if [[ "$pid" =~ ^[0-9]+$ ]]; then
            local deadline=$((SECONDS + 10))
            while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        fi
    fi
}

# ---------------------------------------------------------------- env file --

write_env() {
    local rport pport
    rport="$(recorded_port redis)"
    pport="$(recorded_port pg)"
    {
        printf '# Written by deploy/local/services.sh start %s; source it.\n' "$NAME"
        printf 'export HYDRA_REDIS_URL=%q\n' "redis://127.0.0.1:$rport/0"
        printf 'export HYDRA_DATABASE_URL=%q\n' "postgres://hydra@127.0.0.1:$pport/hydra"
        printf 'export HYDRA_LOCAL_NAME=%q\n' "$NAME"
        printf 'export HYDRA_LOCAL_REDIS_PORT=%q\n' "$rport"
        printf 'export HYDRA_LOCAL_PG_PORT=%q\n' "$pport"
        printf 'export HYDRA_LOCAL_PG_BIN=%q\n' "$PG_BIN"
        printf 'export HYDRA_LOCAL_PG_DATA=%q\n' "$PG_HOME/data"
        printf 'export HYDRA_LOCAL_STATE=%q\n' "$STATE"
    } >"$STATE/env.tmp"
    mv "$STATE/env.tmp" "$STATE/env"
}

# ---------------------------------------------------------------- commands --

# Serializes services.sh runs on one instance. Servers started while the lock
# is held must not inherit fd 9 (see as_pg and redis_start).
lock_state() {
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 120 9 || die "another services.sh holds $STATE/.lock"
}

cmd_start() {
    ensure_deps
    lock_state
    redis_start
    pg_start
    write_env
    cat "$STATE/env"
}

cmd_stop() {
    [[ -d "$STATE" ]] || return 0
    lock_state
    redis_stop
    pg_stop
}

cmd_status() {
    local rc=0 pid port
    if [[ ! -d "$STATE" ]]; then
        echo "$NAME: no state at $STATE (never started)"
        return 3
    fi
    port="$(recorded_port redis || true)"
    if pid="$(redis_pid)"; then
        if redis_ping "$port"; then
            echo "$NAME: redis running (pid $pid, 127.0.0.1:$port)"
        else
            echo "$NAME: redis process $pid exists but does not answer on 127.0.0.1:$port"
            rc=3
        fi
    else
        echo "$NAME: redis stopped"
        rc=3
    fi
    port="$(recorded_port pg || true)"
    if PG_BIN="$(pg_bin_dir)" && [[ -f "$STATE/pg.home" ]]; then
        pg_setup_user
        PG_HOME="$(<"$STATE/pg.home")"
        if pg_running; then
            echo "$NAME: postgresql running ($PG_HOME/data, 127.0.0.1:$port)"
        else
            echo "$NAME: postgresql stopped ($PG_HOME/data)"
            rc=3
        fi
    else
        echo "$NAME: postgresql stopped (not initialized)"
        rc=3
    fi
    return "$rc"
}

cmd_env() {
    [[ -f "$STATE/env" ]] || die "no env file at $STATE/env; run: deploy/local/services.sh start $NAME"
    cat "$STATE/env"
}

cmd_destroy() {
    cmd_stop
    local home=""
    [[ -f "$STATE/pg.home" ]] && home="$(<"$STATE/pg.home")"
    if [[ -n "$home" && "$home" == /tmp/hydra-pg-"$NAME"-* && -d "$home" ]]; then
        log "removing $home"
        rm -rf "$home"
    fi
    log "removing $STATE"
    rm -rf "$STATE"
}

case "$CMD" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    deps) ensure_deps ;;
    destroy) cmd_destroy ;;
    redis-start) lock_state; redis_start ;;
    redis-stop) [[ -d "$STATE" ]] || exit 0; lock_state; redis_stop ;;
    pg-start) lock_state; pg_start ;;
    pg-stop) [[ -d "$STATE" ]] || exit 0; lock_state; pg_stop ;;
    *) usage ;;
esac
