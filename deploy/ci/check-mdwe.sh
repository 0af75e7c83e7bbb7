#!/usr/bin/env bash
# The units set MemoryDenyWriteExecute=yes. This runs the built binaries under
# the same seccomp rule (deploy/ci/mdwe-exec.py, needs python3-seccomp) so a
# dependency that needs writable+executable memory shows up in CI, not as a
# crash on a node. Runs `--help` of each binary, which loads the Swift runtime,
# Foundation and every linked C library.
# Usage: deploy/ci/check-mdwe.sh [BIN_DIR]   (default .build/release)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN_DIR="${1:-.build/release}"

if ! /usr/bin/python3 -c 'import seccomp' 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-seccomp >/dev/null
fi

fail=0
for b in hydra hydra-agent; do
    if [ ! -x "$BIN_DIR/$b" ]; then
        echo "FAIL $BIN_DIR/$b not built (swift build -c release)"; fail=1; continue
    fi
    if out=$(/usr/bin/python3 deploy/ci/mdwe-exec.py "$BIN_DIR/$b" --help 2>&1); then
        echo "ok   $b --help under MemoryDenyWriteExecute"
    else
        echo "FAIL $b --help under MemoryDenyWriteExecute"; printf '%s\n' "$out" | tail -20 | sed 's/^/    /'; fail=1
    fi
done
exit "$fail"
