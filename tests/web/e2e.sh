#!/usr/bin/env bash
# Browser end-to-end test: starts the four services (from the build dir
# given as $1) against the private NATS and PostgreSQL of the test run,
# serves the dashboard's static build, and drives it in Chromium
# (web/tests/e2e/run.mjs). Stops the services whatever happens.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=$1
out=${2:-$build/test-output/web-e2e}
. "$root/scripts/stack.sh"
for b in engine/sim-engine pipeline/signal-service pipeline/agent-service gateway/orchestrator/orchestrator; do
  [ -x "$build/$b" ] || { echo "e2e: $build/$b is not built"; exit 1; }
done
[ -f "$root/web/out/index.html" ] || { echo "e2e: web/out is missing (npm run build)"; exit 1; }
rm -rf "$out"; mkdir -p "$out"
work=$(mktemp -d)
# A fresh database and stream names for this test, so it shares nothing;
# both are dropped at the end.
suffix=$$
admin_url=$DATABASE_URL
psql -X -q "$admin_url" -c "create database mc_e2e_$suffix" >/dev/null
cleanup() {
  mc_stack_stop
  psql -X -q "$admin_url" -c "drop database if exists mc_e2e_$suffix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export DATABASE_URL=$(printf '%s' "$DATABASE_URL" | sed "s#/microcloud?#/mc_e2e_$suffix?#")
export DB_NAME=mc_e2e_$suffix
export BUS_STREAM_PREFIX="E2E${suffix}_" BUS_SUBJECT_PREFIX="e2e$suffix."
export API_TOKEN=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
export SCENARIO=normal SEED=7 SIM_MODE=lockstep SPEED=${E2E_SPEED:-5} APPROVAL_MODE=manual
export WEB_DIR="$root/web/out" LOG_FORMAT=text SCENARIO_DIR="$root/engine/scenarios"
export MC_STACK_FREE_PORTS=1
mc_stack_start "$build" "$out/logs"
cd "$root/web"
BASE_URL="http://127.0.0.1:$ORCHESTRATOR_PORT" API_TOKEN=$API_TOKEN OUT_DIR="$out" node tests/e2e/run.mjs
