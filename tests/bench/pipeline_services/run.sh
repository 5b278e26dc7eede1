#!/usr/bin/env bash
# End-to-end ingest benchmark: samples/s from JetStream through
# signal-service into PostgreSQL, next to psql \copy of the same rows into an
# identical table in the same run, printed as a ratio (medians of runs).
#
#   tests/bench/pipeline_services/run.sh BUILD_DIR
#
# Needs NATS_URL and DATABASE_URL or DB_* (scripts/bench runs it under
# scripts/with-services) and psql (MC_PG_BINDIR or PATH). Settings:
# BENCH_SNAPSHOTS (4000), BENCH_SAMPLES (100), BENCH_RUNS (3),
# BENCH_BATCH_ROWS (5000).
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
bin="$build/tests/bench/pipeline_services/bench_pipesvc"
svc="$build/pipeline/signal-service"
if [ ! -x "$bin" ] || [ ! -x "$svc" ]; then
  cmake --build "$build" --target bench_pipesvc signal-service -j2 >/dev/null
fi
exec "$bin" "$svc"
