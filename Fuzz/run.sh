#!/usr/bin/env bash
# libFuzzer run of the nvidia-smi CSV parser (optional in CI; the XCTest FuzzTests cover all three parsers).
#   Fuzz/run.sh [SECONDS]        default 60
# Builds .build/fuzz/nvidia-smi-csv with `swiftc -sanitize=fuzzer,address` from the parser's own
# sources (it needs nothing else of the HydraCore/HydraExecutors targets), seeds the corpus with the real captures in
# Tests/SharedTests/Fixtures/nvidia-smi, and fails on any crash (the input is kept in .build/fuzz/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds="${1:-60}"
out=.build/fuzz
mkdir -p "$out/corpus-csv"
# The parser's files come from two targets (HydraExecutors, HydraCore); compiled here as one module,
# so their `import Hydra…` lines go.
mkdir -p "$out/src"
for f in Sources/Shared/HydraExecutors/NvidiaSMI/CSV.swift Sources/Shared/HydraExecutors/NvidiaSMI/Reader.swift \
         Sources/Shared/HydraCore/Models/Inventory.swift; do
    grep -v '^import Hydra' "$f" > "$out/src/$(basename "$f")"
done
swiftc -sanitize=fuzzer,address -parse-as-library -module-name HydraFuzz \
    Fuzz/NvidiaSMICSV.swift "$out/src/CSV.swift" "$out/src/Reader.swift" "$out/src/Inventory.swift" -o "$out/nvidia-smi-csv"
cp Tests/SharedTests/Fixtures/nvidia-smi/*.csv "$out/corpus-csv/"
"$out/nvidia-smi-csv" -max_total_time="$seconds" -artifact_prefix="$out/" -print_final_stats=1 "$out/corpus-csv" 2>&1 | tail -n 12
