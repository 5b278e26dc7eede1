#!/usr/bin/env bash
# Builds and runs the pipeline benchmark in the given build directory:
#   tests/bench/pipeline/run.sh build/release
# Prints the detector's nanoseconds per sample at 1,000 and 10,000 targets
# with the seed's rule set, and the decider's decisions per second.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
cmake --build "$build" --target bench_pipeline -j2 >/dev/null
exec "$build/tests/bench/pipeline/bench_pipeline"
