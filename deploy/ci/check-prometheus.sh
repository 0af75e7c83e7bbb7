#!/usr/bin/env bash
# shellcheck disable=SC2016  # the sh -c snippets expand $1 in the child shell, on purpose
# Checks deploy/prometheus/ with promtool (Debian package `prometheus`,
# installed when missing):
#   promtool check config   prometheus.yml, prometheus-local.yml (and the rule
#                           files they load)
#   promtool check rules    alerts.yml, dcgm-compat.yml
#   promtool test rules     alerts_test.yml (firing and non-firing cases),
#                           dcgm-compat_test.yml (DCGM names, units, labels)
#   promtool check metrics  examples/*.prom, the exposition the agent and the
#                           coordinator are expected to serve
# Optionally also lints live /metrics output:
#   deploy/ci/check-prometheus.sh --metrics http://127.0.0.1:9101/metrics \
#                                 --metrics http://127.0.0.1:9100/metrics
# (--metrics also takes a file). Exit 0 only if every check passes.
set -euo pipefail

cd "$(dirname "$0")/../prometheus"
LIVE=()
while [ $# -gt 0 ]; do
    case "$1" in
        --metrics) LIVE+=("${2:?--metrics needs a URL or file}"); shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "check-prometheus: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

if ! command -v promtool >/dev/null 2>&1; then
    echo "check-prometheus: promtool missing; installing the prometheus package"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # The package starts a prometheus service where systemd runs; harmless in CI.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
echo "check-prometheus: $(promtool --version 2>&1 | head -1)"

fail=0
run() { # label, command...
    local label="$1"; shift
    local out
    if out=$("$@" 2>&1); then
        echo "ok   $label"
    else
        echo "FAIL $label"; printf '%s\n' "$out" | sed 's/^/    /'; fail=1
    fi
}

run "check config prometheus.yml prometheus-local.yml" promtool check config prometheus.yml prometheus-local.yml
run "check rules alerts.yml dcgm-compat.yml" promtool check rules alerts.yml dcgm-compat.yml
run "test rules alerts_test.yml" promtool test rules alerts_test.yml
run "test rules dcgm-compat_test.yml" promtool test rules dcgm-compat_test.yml
for f in examples/*.prom; do
    run "check metrics $f" sh -c 'promtool check metrics < "$1"' sh "$f"
done
for src in ${LIVE[@]+"${LIVE[@]}"}; do
    case "$src" in
        http://*|https://*)
            run "check metrics $src" bash -c 'set -o pipefail; curl -fsS --max-time 10 "$1" | promtool check metrics' bash "$src" ;;
        *)
            run "check metrics $src" sh -c 'promtool check metrics < "$1"' sh "$src" ;;
    esac
done

if [ "$fail" -ne 0 ]; then echo "check-prometheus: FAILED"; exit 1; fi
echo "check-prometheus: all checks pass"
