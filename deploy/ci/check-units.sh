#!/usr/bin/env bash
# Checks the systemd units in systemd/ with the real systemd tools:
#   1. systemd-analyze verify on every unit, in a throw-away root that holds
#      the distribution's units (sysinit.target, ...), our units and the two
#      binaries at the paths ExecStart= names. Fails on a non-zero exit AND on
#      any diagnostic: verify exits 0 on "Unknown key" and parse warnings.
#   2. the timer's OnCalendar= through systemd-analyze calendar.
#   3. systemd-analyze security --offline=yes for each service: prints the
#      exposure score and fails above HYDRA_EXPOSURE_MAX (default 2.5).
# Needs no running systemd (works in containers and CI where systemd is not
# PID 1) and does not touch /etc or /usr/local.
#
# Usage: deploy/ci/check-units.sh [--bin-dir DIR]
#   --bin-dir DIR  put the real hydra and hydra-agent from DIR into the
#                  verify root (default: .build/release when both exist there,
#                  else executable stubs, which is all verify looks at).
set -euo pipefail

cd "$(dirname "$0")/../.."
UNIT_DIR=systemd
BIN_DIR=""
MAX_EXPOSURE="${HYDRA_EXPOSURE_MAX:-2.5}"

while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) BIN_DIR="${2:?--bin-dir needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "check-units: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-units: systemd-analyze missing; installing the systemd package"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
echo "check-units: $(systemd-analyze --version | head -1)"
SYSTEMD_VERSION=$(systemd-analyze --version | awk 'NR==1{print $2}' | cut -d. -f1)

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/hydra-units.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT

# Distribution units: the verify root must resolve sysinit.target,
# network-online.target, timers.target, ...
for d in /usr/lib/systemd/system /lib/systemd/system; do
    if [ -d "$d" ]; then
        mkdir -p "$ROOT/usr/lib/systemd"
        cp -a "$d" "$ROOT/usr/lib/systemd/"
        break
    fi
done
mkdir -p "$ROOT/etc/systemd/system" "$ROOT/usr/local/bin"

if [ -z "$BIN_DIR" ] && [ -x .build/release/hydra ] && [ -x .build/release/hydra-agent ]; then
    BIN_DIR=.build/release
fi
for b in hydra hydra-agent; do
    if [ -n "$BIN_DIR" ]; then
        install -m 0755 "$BIN_DIR/$b" "$ROOT/usr/local/bin/$b"
    else
        printf '#!/bin/sh\nexit 0\n' > "$ROOT/usr/local/bin/$b"
        chmod 0755 "$ROOT/usr/local/bin/$b"
    fi
done
# hydra-nightly-failed.service runs a one-line /bin/sh script.
install -D -m 0755 "$(readlink -f /bin/sh)" "$ROOT/bin/sh"
echo "check-units: binaries in the verify root: ${BIN_DIR:-stubs}"

UNITS=()
for f in "$UNIT_DIR"/*.service "$UNIT_DIR"/*.timer; do
    cp "$f" "$ROOT/etc/systemd/system/"
    UNITS+=("$(basename "$f")")
done

fail=0

verify() { # label, units...
    local label="$1"; shift
    local out rc=0
    out=$(systemd-analyze verify --man=no --root="$ROOT" "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$out" ]; then
        echo "FAIL verify ($label), exit $rc:"
        printf '%s\n' "$out" | sed "s|$ROOT||g; s/^/    /"
        return 1
    fi
    echo "ok   verify ($label)"
}

# Self-test: a unit with an unknown key must fail, or this script checks nothing.
printf '[Service]\nExecStart=/usr/local/bin/hydra\nNoSuchKey=1\n' > "$ROOT/etc/systemd/system/hydra-selftest.service"
if verify "self-test, must fail" hydra-selftest.service >/dev/null 2>&1; then
    echo "FAIL the verify check did not catch an unknown key; this systemd-analyze cannot be trusted"
    exit 1
fi
rm "$ROOT/etc/systemd/system/hydra-selftest.service"

for u in "${UNITS[@]}"; do
    verify "$u" "$u" || fail=1
done
verify "all units together" "${UNITS[@]}" || fail=1

# The RestartSteps= drop-in only parses on systemd >= 254.
if [ "$SYSTEMD_VERSION" -ge 254 ]; then
    for u in hydra-agent.service hydra-coordinator.service; do
        mkdir -p "$ROOT/etc/systemd/system/$u.d"
        cp "$UNIT_DIR/hydra-restart-backoff.conf" "$ROOT/etc/systemd/system/$u.d/10-restart-backoff.conf"
        verify "$u + restart-backoff drop-in" "$u" || fail=1
    done
else
    echo "skip verify of hydra-restart-backoff.conf: needs systemd >= 254, this is $SYSTEMD_VERSION"
fi

for t in "$UNIT_DIR"/*.timer; do
    while IFS= read -r spec; do
        if out=$(systemd-analyze calendar "$spec" 2>&1); then
            echo "ok   calendar $(basename "$t"): $spec -> $(printf '%s\n' "$out" | sed -n 's/^ *Next elapse: //p')"
        else
            echo "FAIL calendar $(basename "$t"): $spec"; printf '%s\n' "$out" | sed 's/^/    /'; fail=1
        fi
    done < <(sed -n 's/^OnCalendar=//p' "$t")
done

# Exposure: 0 = fully sandboxed, 10 = none. --threshold counts in tenths.
threshold=$(awk -v m="$MAX_EXPOSURE" 'BEGIN{printf "%d", m*10 + 0.5}')
echo "exposure (systemd-analyze security --offline=yes, fail above $MAX_EXPOSURE):"
for u in "${UNITS[@]}"; do
    case "$u" in *.service) ;; *) continue ;; esac
    rc=0
    out=$(systemd-analyze security --offline=yes --root="$ROOT" --threshold="$threshold" --no-pager "$u" 2>&1) || rc=$?
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: *//p')
    if [ "$rc" -ne 0 ]; then
        echo "FAIL $u: ${score:-no score} (exit $rc)"
        printf '%s\n' "$out" | grep '^✗' | sed 's/^/    /' || true
        fail=1
    else
        printf '     %-28s %s\n' "$u" "$score"
    fi
done

if [ "$fail" -ne 0 ]; then
    echo "check-units: FAILED"; exit 1
fi
echo "check-units: all units verify"
