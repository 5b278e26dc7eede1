#!/usr/bin/env bash
# Bus throughput: async publish (acked) and pull consume (acked), 1 KiB
# payloads, median of 3 runs. $1 is the build directory; NATS_URL comes from
# scripts/with-services (scripts/bench runs every tests/bench/*/run.sh so).
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
"$build/tests/bench/bus/bench_bus" --messages 20000 --runs 3
