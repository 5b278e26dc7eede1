#!/usr/bin/env bash
# Builds and runs the engine benchmark in the given build directory.
#   tests/bench/engine/run.sh BUILD_DIR [bench_engine args...]
# Use a Release (or Debug) build: sanitizers make the numbers meaningless.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR [args...]}
shift
cmake --build "$build" --target bench_engine -j2 >/dev/null
exec "$build/tests/bench/engine/bench_engine" "$@"
