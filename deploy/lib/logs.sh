# Shared by deploy/demo.sh and deploy/ci/runbook-test.sh (sourced, not run).
# show_logs [LINES]: the last LINES (default 25) of every $LOGS/*.log on stderr, for a failure's report.
show_logs() {
    local f n="${1:-25}"
    for f in "$LOGS"/*.log; do
        [[ -f "$f" ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n "$n" "$f" >&2 || true
    done
}
