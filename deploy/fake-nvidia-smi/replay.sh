#!/usr/bin/env bash
# Fake nvidia-smi that replays captured output, for running hydra-agent (or its
# tests) on a machine without an NVIDIA GPU.
#
#   HYDRA_FAKE_SMI_GPUS=<file>  printed for any call with --query-gpu=...
#   HYDRA_FAKE_SMI_APPS=<file>  printed for any call with --query-compute-apps=...
#
# The files are `nvidia-smi --query-gpu=... --format=csv` and
# `--query-compute-apps=... --format=csv` output, e.g. the captures in
# Tests/SharedTests/Fixtures/nvidia-smi/*.csv. The rest of the command line
# (the field list, --format) is ignored: the file is printed as it is, exit 0.
# Any other invocation prints usage to stderr and exits 2. A variable that is
# unset or names a missing file is an error (exit 2) rather than empty output,
# so a misconfigured fake never looks like a node with zero GPUs.
#
# Use: point the agent's nvidia-smi path (NvidiaSMIReader.executable) at this script.
set -u

usage() {
    echo "usage: HYDRA_FAKE_SMI_GPUS=<file> HYDRA_FAKE_SMI_APPS=<file> $0 --query-gpu=...|--query-compute-apps=... [--format=csv]" >&2
    exit 2
}

replay() {
    local var=$1 file=${!1:-}
    if [[ -z $file ]]; then
        echo "$0: $var is not set" >&2
        exit 2
    fi
    if [[ ! -r $file ]]; then
        echo "$0: $var=$file: cannot read" >&2
        exit 2
    fi
    cat -- "$file"
    exit 0
}

for arg in "$@"; do
    case $arg in
        --query-gpu=*) replay HYDRA_FAKE_SMI_GPUS ;;
        --query-compute-apps=*) replay HYDRA_FAKE_SMI_APPS ;;
    esac
done
usage
