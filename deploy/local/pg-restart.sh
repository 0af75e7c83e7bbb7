#!/usr/bin/env bash
# Restarts the local PostgreSQL of instance NAME, keeping its data and port.
#   deploy/local/pg-restart.sh NAME [--down SECONDS]
# --down SECONDS keeps it stopped that long before starting it again (chaos tests).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name="${1:?usage: deploy/local/pg-restart.sh NAME [--down SECONDS]}"
down=0
if [[ "${2:-}" == "--down" ]]; then
    down="${3:?--down needs a number of seconds}"
elif [[ -n "${2:-}" ]]; then
    echo "usage: deploy/local/pg-restart.sh NAME [--down SECONDS]" >&2
    exit 2
fi
"$here/services.sh" pg-stop "$name"
if [[ "$down" != 0 ]]; then sleep "$down"; fi
"$here/services.sh" pg-start "$name"
