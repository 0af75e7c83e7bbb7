#!/usr/bin/env bash
# Installs Hydra on this host for one role, idempotently.
#
#   deploy/install-node.sh agent       [options]   every node (hydra-agent)
#   deploy/install-node.sh coordinator [options]   coordinator host (hydra,
#                                                  hydra-coordinator, nightly timer)
# Options:
#   --dry-run        print every action, change nothing
#   --bin-dir DIR    where the built binaries are (default: agent
#                    ./.build-static/release from `make agent-release`,
#                    coordinator ./.build/release from `swift build -c release`)
#   --cluster FILE   cluster YAML to install if /etc/hydra/cluster.yaml is
#                    missing (default ./deploy/cluster.yaml)
#   --node NAME      HYDRA_NODE for a new /etc/hydra/hydra.env (default: short
#                    host name)
#   --root DIR       install below DIR instead of / (packaging, tests): no
#                    user creation, no systemctl
#
# What it does: creates the system user `hydra` (no login; agent: also in
# the video/render groups for /dev/nvidia*; agent: also `hydra-job`, the
# user command jobs run as, in the same groups), installs the binary to
# /usr/local/bin, /etc/hydra/cluster.yaml, /etc/hydra/hydra.env and (agent)
# /etc/hydra/services.yaml only if missing (existing configuration is never
# overwritten), the ComfyUI workflows (agent), /etc/hydra/credentials/ (root
# only; secrets are yours to put there, except the coordinator's console.token,
# generated once), shell completions and man pages, the units to
# /etc/systemd/system, then `systemctl daemon-reload` and `enable --now`
# (skipped with a note when systemd is not running). A unit or binary that
# changed restarts a running service. Re-running changes nothing.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
ROLE=""
DRY=0
BIN_DIR=""
CLUSTER="$SRC/deploy/cluster.yaml"
NODE=""
ROOT=""

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        agent|coordinator) ROLE="$1"; shift ;;
        --dry-run) DRY=1; shift ;;
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --cluster) CLUSTER="${2:?--cluster needs a file}"; shift 2 ;;
        --node) NODE="${2:?--node needs a name}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a directory}"; ROOT="${ROOT%/}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-node: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[ -n "$ROLE" ] || { echo "install-node: say which role: agent or coordinator" >&2; usage >&2; exit 2; }
[ -n "$NODE" ] || NODE=$(hostname -s)
# The agent is built with the Swift runtime and Foundation linked statically, in a
# scratch path of its own (Makefile: agent-release): nodes need no Swift toolchain.
AGENT_BUILD="make agent-release (swift build -c release --static-swift-stdlib --product hydra-agent --scratch-path .build-static)"
if [ -z "$BIN_DIR" ]; then
    if [ "$ROLE" = agent ]; then BIN_DIR="./.build-static/release"; else BIN_DIR="./.build/release"; fi
fi

if [ "$DRY" -eq 0 ] && [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install-node: run as root (or with --dry-run / --root DIR)" >&2; exit 1
fi

ERRORS=()
NOTES=()
CHANGED=0   # a unit or binary of this role changed: restart if running

say() { printf '%s\n' "$*"; }
# run CMD...: print it; execute it unless --dry-run.
run() {
    printf '+ %s\n' "$(printf '%q ' "$@" | sed 's/ $//')"
    [ "$DRY" -eq 1 ] || "$@"
}
# put SRC DEST MODE [OWNER:GROUP]: install a file when missing or different.
put() {
    local src="$1" dest="$ROOT$2" mode="$3" owner="${4:-}"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        say "= $2 is up to date"; return 1
    fi
    local args=(-D -m "$mode")
    [ -n "$owner" ] && [ -z "$ROOT" ] && args+=(-o "${owner%%:*}" -g "${owner##*:}")
    run install "${args[@]}" "$src" "$dest"
    return 0
}
# put_once SRC DEST MODE: configuration; install only when DEST is missing.
put_once() {
    if [ -e "$ROOT$2" ]; then say "= $2 exists, left as it is"; return 0; fi
    run install -D -m "$3" "$1" "$ROOT$2"
}
mkdir_p() { # DIR MODE [OWNER:GROUP]
    if [ -d "$ROOT$1" ]; then say "= $1/ exists"; return; fi
    if [ -n "${3:-}" ] && [ -z "$ROOT" ]; then
        run install -d -m "$2" -o "${3%%:*}" -g "${3##*:}" "$1"
    else
        run install -d -m "$2" "$ROOT$1"
    fi
}

TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
say "install-node: role $ROLE$( [ "$ROLE" = agent ] && echo ", node $NODE")$( [ "$DRY" -eq 1 ] && echo ", dry run: nothing is changed")$( [ -n "$ROOT" ] && echo ", root $ROOT")"

# --- 1. user ----------------------------------------------------------------
if [ -n "$ROOT" ]; then
    NOTES+=("--root: user 'hydra' not created; create it on the target (useradd --system --user-group --home-dir /var/lib/hydra --no-create-home --shell /usr/sbin/nologin hydra)")
elif getent passwd hydra >/dev/null; then
    say "= user hydra exists"
else
    run useradd --system --user-group --home-dir /var/lib/hydra --no-create-home \
        --shell /usr/sbin/nologin --comment "Hydra GPU cluster" hydra
fi
# Agent: `command` jobs run as hydra-job (the unit's --command-user), which
# owns nothing of the agent's: no home, no login, no credentials.
if [ "$ROLE" = agent ] && [ -n "$ROOT" ]; then
    NOTES+=("--root: user 'hydra-job' not created; create it on the target (useradd --system --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin hydra-job)")
elif [ "$ROLE" = agent ] && getent passwd hydra-job >/dev/null; then
    say "= user hydra-job exists"
elif [ "$ROLE" = agent ]; then
    run useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin --comment "Hydra command jobs" hydra-job
fi
if [ "$ROLE" = agent ] && [ -z "$ROOT" ]; then
    # /dev/nvidia* are root:video on Debian's NVIDIA packages; render owns
    # /dev/dri/renderD*. Groups that do not exist here are skipped. hydra-job
    # too: GPU command jobs open the devices as that user.
    for g in video render; do
        if ! getent group "$g" >/dev/null; then
            say "= group $g does not exist here, skipped"; continue
        fi
        for u in hydra hydra-job; do
            if id -nG "$u" 2>/dev/null | tr ' ' '\n' | grep -qx "$g"; then
                say "= $u is in group $g"
            else
                run usermod -a -G "$g" "$u"
            fi
        done
    done
fi

# --- 2. binaries --------------------------------------------------------------
case "$ROLE" in
    agent) BINS=(hydra-agent); UNITS=(hydra-agent.service); START=(hydra-agent.service)
           CREDS=(hmac.key redis.password) ;;
    coordinator) BINS=(hydra); UNITS=(hydra-coordinator.service hydra-nightly.service hydra-nightly.timer hydra-nightly-failed.service)
           START=(hydra-coordinator.service hydra-nightly.timer)
           CREDS=(coordinator.hmac.key coordinator.redis.password pg.password console.token) ;;
esac
for b in "${BINS[@]}"; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        if [ "$b" = hydra-agent ]; then how="$AGENT_BUILD"; else how="swift build -c release"; fi
        ERRORS+=("$BIN_DIR/$b not found: build with $how or pass --bin-dir")
        say "! $BIN_DIR/$b not found"
        continue
    fi
    if put "$BIN_DIR/$b" "/usr/local/bin/$b" 0755; then CHANGED=1; fi
done

# --- 3. configuration -----------------------------------------------------------
mkdir_p /etc/hydra 0755
if [ -e "$ROOT/etc/hydra/cluster.yaml" ]; then
    say "= /etc/hydra/cluster.yaml exists, left as it is"
elif [ -f "$CLUSTER" ]; then
    put_once "$CLUSTER" /etc/hydra/cluster.yaml 0644
else
    ERRORS+=("no /etc/hydra/cluster.yaml and no $CLUSTER to install: pass --cluster FILE")
    say "! no cluster file to install ($CLUSTER missing)"
fi
sed "s/@NODE@/$NODE/" "$SRC/deploy/hydra.env.example" > "$TMP/hydra.env"
put_once "$TMP/hydra.env" /etc/hydra/hydra.env 0644
if [ "$ROLE" = agent ]; then
    # HYDRA_SERVICES in hydra.env points here; with no service uncommented the
    # node takes sleep and command jobs only.
    put_once "$SRC/deploy/services.yaml.example" /etc/hydra/services.yaml 0644
    # ComfyUI `template:` jobs name a workflow in this directory (ServiceOptions'
    # default), so a shipped workflow that changed is updated.
    for w in "$SRC"/deploy/workflows/*.json; do
        [ -f "$w" ] || continue
        put "$w" "/usr/local/share/hydra/workflows/$(basename "$w")" 0644 || true
    done
fi
if [ "$ROLE" = coordinator ] && [ ! -e "$ROOT/etc/hydra/pipeline.yaml" ]; then
    NOTES+=("/etc/hydra/pipeline.yaml is missing: hydra-nightly.service needs it (see docs/operations.md)")
fi

# Secrets: root-only directory; systemd reads it and hands copies to the
# service. Never generated here: the keys come from the cluster key, which only the coordinator's host holds.
mkdir_p /etc/hydra/credentials 0700 root:root
if [ "$ROLE" = coordinator ]; then
    # The console token is this host's own (unlike hmac.key, nothing else must
    # match it), so it can be made here; LoadCredential= fails the unit without it.
    if [ -e "$ROOT/etc/hydra/credentials/console.token" ]; then
        say "= /etc/hydra/credentials/console.token exists"
    else
        printf '+ generate /etc/hydra/credentials/console.token (32 random bytes, hex, mode 0600)\n'
        if [ "$DRY" -eq 0 ]; then
            (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$ROOT/etc/hydra/credentials/console.token")
            chmod 0600 "$ROOT/etc/hydra/credentials/console.token"
        fi
        NOTES+=("console token written to /etc/hydra/credentials/console.token: the console asks for it when HYDRA_CONSOLE_LISTEN is not loopback")
    fi
fi
MISSING=()
for c in "${CREDS[@]}"; do
    [ -e "$ROOT/etc/hydra/credentials/$c" ] || MISSING+=("$c")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    NOTES+=("missing credentials in /etc/hydra/credentials/: ${MISSING[*]}; the units will not start without them. Create each with: install -m 0600 /dev/null /etc/hydra/credentials/NAME and write the secret into it (hmac.key: on the coordinator's host the cluster key, 'hydra keygen cluster.key' once; on each agent's host only that node's key, 'hydra keygen --node NODE --cluster-key cluster.key NODE.key' run where the cluster key is, then copied; on hydra-storage, where both run, the coordinator's unit reads the cluster key as coordinator.hmac.key; an empty redis.password / coordinator.redis.password if Redis has no password)")
fi

# --- 4. units ---------------------------------------------------------------------
for u in "${UNITS[@]}"; do
    if put "$SRC/systemd/$u" "/etc/systemd/system/$u" 0644; then CHANGED=1; fi
done
SYSTEMD_MAJOR=$(systemctl --version 2>/dev/null | awk 'NR==1{print $2}' | cut -d. -f1 || true)
for u in "${UNITS[@]}"; do
    case "$u" in *.service) ;; *) continue ;; esac
    case "$u" in hydra-nightly.service|hydra-nightly-failed.service) continue ;; esac   # no Restart=, no backoff
    if [ "${SYSTEMD_MAJOR:-0}" -ge 254 ] 2>/dev/null; then
        if put "$SRC/systemd/hydra-restart-backoff.conf" "/etc/systemd/system/$u.d/10-restart-backoff.conf" 0644; then CHANGED=1; fi
    else
        say "= systemd ${SYSTEMD_MAJOR:-?} < 254: no RestartSteps= drop-in for $u (fixed RestartSec= only)"
    fi
done
if [ -f "$SRC/docs/operations.md" ]; then
    put "$SRC/docs/operations.md" /usr/local/share/doc/hydra/operations.md 0644 || true
fi

# --- 4b. shell completions and man pages -----------------------------------------
# Generated by the installed binaries themselves (swift-argument-parser), so
# they always match the flags of the version installed.
for b in "${BINS[@]}"; do
    exe="$BIN_DIR/$b"
    [ -x "$exe" ] || continue
    for sh in bash zsh fish; do
        case "$sh" in
            bash) dest="/usr/share/bash-completion/completions/$b" ;;
            zsh)  dest="/usr/share/zsh/vendor-completions/_$b" ;;
            fish) dest="/usr/share/fish/vendor_completions.d/$b.fish" ;;
        esac
        if "$exe" --generate-completion-script "$sh" > "$TMP/completion.$b.$sh" 2>/dev/null; then
            put "$TMP/completion.$b.$sh" "$dest" 0644 || true
        else
            say "! $b --generate-completion-script $sh failed; no $sh completion"
        fi
    done
done
# Man pages: `make man` writes them to .build/man (the GenerateManual plugin).
MAN_DIR="${HYDRA_MAN_DIR:-$SRC/.build/man}"
found_man=0
for b in "${BINS[@]}"; do
    for m in "$MAN_DIR/$b.1" "$MAN_DIR"/"$b".*.1; do
        [ -f "$m" ] || continue
        found_man=1
        put "$m" "/usr/local/share/man/man1/$(basename "$m")" 0644 || true
    done
done
[ "$found_man" -eq 1 ] || NOTES+=("no man pages in $MAN_DIR: run 'make man' first to install them")

# --- 5. systemd ---------------------------------------------------------------------
if [ -n "$ROOT" ]; then
    NOTES+=("--root: systemctl skipped; on the target run: systemctl daemon-reload && systemctl enable --now ${START[*]}")
elif [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null; then
    say "~ systemctl daemon-reload   (skipped: systemd is not running here)"
    say "~ systemctl enable --now ${START[*]}   (skipped: systemd is not running here)"
    NOTES+=("systemd is not running here (not PID 1): run 'systemctl daemon-reload && systemctl enable --now ${START[*]}' on the real host")
else
    run systemctl daemon-reload
    if [ ${#MISSING[@]} -gt 0 ]; then
        run systemctl enable "${START[@]}"
        NOTES+=("enabled but not started (credentials missing): after adding them, systemctl start ${START[*]}")
    else
        run systemctl enable --now "${START[@]}"
        if [ "$CHANGED" -eq 1 ]; then
            for u in "${START[@]}"; do
                case "$u" in *.service) ;; *) continue ;; esac
                if [ "$DRY" -eq 1 ] || systemctl is-active --quiet "$u"; then
                    run systemctl try-restart "$u"
                fi
            done
        fi
    fi
fi

for n in ${NOTES[@]+"${NOTES[@]}"}; do say "note: $n"; done
if [ ${#ERRORS[@]} -gt 0 ]; then
    for e in "${ERRORS[@]}"; do say "error: $e" >&2; done
    exit 1
fi
say "install-node: done$( [ "$DRY" -eq 1 ] && echo " (dry run)")"
