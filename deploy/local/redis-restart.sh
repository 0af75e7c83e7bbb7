#!/usr/bin/env bash
# Restarts the local Redis of instance NAME on the same port.
#   deploy/local/redis-restart.sh NAME [--no-persistence] [--down SECONDS]
# Default: a clean restart that keeps the data (the append-only file is
# flushed on shutdown and replayed on start).
# --no-persistence: the restarted Redis comes back empty (append-only file and
# any RDB snapshot are deleted while it is down), like a Redis that lost
# everything; reconciliation from PostgreSQL must recover.
# --down SECONDS keeps it stopped that long before starting it again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { echo "usage: deploy/local/redis-restart.sh NAME [--no-persistence] [--down SECONDS]" >&2; exit 2; }
name="${1:-}"
[[ -n "$name" && "$name" != -* ]] || usage
shift
wipe=0 down=0
while (($# > 0)); do
    case "$1" in
        --no-persistence) wipe=1 ;;
        --down) down="${2:?--down needs a number of seconds}"; shift ;;
        *) usage ;;
    esac
    shift
done
"$here/services.sh" redis-stop "$name"
if ((wipe)); then
    state="${HYDRA_LOCAL_ROOT:-$here/../../.hydra-local}/$name/redis"
    rm -rf "$state/appendonlydir" "$state/dump.rdb"
fi
if [[ "$down" != 0 ]]; then sleep "$down"; fi
"$here/services.sh" redis-start "$name"
