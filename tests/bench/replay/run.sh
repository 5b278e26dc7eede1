#!/usr/bin/env bash
# Trace write/read throughput and the verifying reader against a raw read.
# Usage: tests/bench/replay/run.sh BUILD_DIR [RECORDS] [RUNS]
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [RECORDS] [RUNS]}
cmake --build "$build" --target bench_trace -j2 >/dev/null
"$build/tests/bench/replay/bench_trace" "${2:-100000}" "${3:-5}"
