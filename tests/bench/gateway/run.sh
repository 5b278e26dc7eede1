#!/usr/bin/env bash
# Orchestrator benchmark: ApproveAction round trips per second (1 and 8
# keep-alive connections; each answer means decided, published and stored)
# and SSE fan-out to 200 clients at 10 ticks/s (delivered events, added
# latency p50/p99).
#
#   tests/bench/gateway/run.sh BUILD_DIR
#
# Needs NATS_URL and DATABASE_URL (it runs itself under scripts/with-services
# when they are not set). BENCH_APPROVALS (2000) sets the approvals per run.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
bin="$build/tests/bench/gateway/bench_gateway"
if [ ! -x "$bin" ] || [ ! -x "$build/gateway/orchestrator/orchestrator" ]; then
  cmake --build "$build" --target bench_gateway orchestrator -j2 >/dev/null
fi
if [ -z "${NATS_URL:-}" ] || [ -z "${DATABASE_URL:-}" ]; then
  exec "$root/scripts/with-services" -- "$bin"
fi
exec "$bin"
