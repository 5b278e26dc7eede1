#!/usr/bin/env bash
# Store ingest benchmark: rows/s of COPY through mc_store_metrics_commit next
# to psql \copy of the same rows into an identical table, as a ratio.
#
#   tests/bench/store/run.sh BUILD_DIR
#
# Needs DATABASE_URL or DB_* (scripts/bench runs it under with-services) and
# psql (MC_PG_BINDIR or PATH). Extra settings: BENCH_STORE_ROWS (200000),
# BENCH_STORE_BATCH (5000), BENCH_STORE_RUNS (3).
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
bin="$build/tests/bench/store/bench_store"
if [ ! -x "$bin" ]; then
  cmake --build "$build" --target bench_store -j2 >/dev/null
fi
exec "$bin"
