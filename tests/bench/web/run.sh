#!/usr/bin/env bash
# Dashboard benchmark: 1,000 services at 10 ticks/s (realtime), the dashboard
# open in headless Chromium for 30 s. Prints frames per second, main-thread
# busy time, and the SSE events the page received against those the
# orchestrator published. Usage: run.sh BUILD_DIR (under scripts/with-services).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
build=$(cd "$1" && pwd)
. "$root/scripts/stack.sh"
[ -f "$root/web/out/index.html" ] || { echo "bench web: build the dashboard first (make web)"; exit 1; }
work=$(mktemp -d)
suffix=$$
admin_url=$DATABASE_URL
psql -X -q "$admin_url" -c "create database mc_benchweb_$suffix" >/dev/null
cleanup() {
  mc_stack_stop
  psql -X -q "$admin_url" -c "drop database if exists mc_benchweb_$suffix" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
export DATABASE_URL=$(printf '%s' "$DATABASE_URL" | sed "s#/microcloud?#/mc_benchweb_$suffix?#")
export DB_NAME=mc_benchweb_$suffix BUS_STREAM_PREFIX="BW${suffix}_" BUS_SUBJECT_PREFIX="bw$suffix."
export API_TOKEN=bench SCENARIO=normal SEED=1 SIM_MODE=realtime SPEED=10 APPROVAL_MODE=auto
export TOPOLOGY_NODES=100 TOPOLOGY_SERVICES=1000 WEB_DIR="$root/web/out" SCENARIO_DIR="$root/engine/scenarios"
export LOG_FORMAT=text MC_STACK_FREE_PORTS=1
mc_stack_start "$build" "$work/logs" 2>/dev/null
base="http://127.0.0.1:$ORCHESTRATOR_PORT"
sleep 3
sse_before=$(curl -s "$base/metrics" | awk '/^orchestrator_sse_events_total/ {print $2}')
cd "$root/web"
BASE_URL=$base SECONDS_TO_RUN=${BENCH_WEB_SECONDS:-30} node tests/e2e/bench.mjs > "$work/page.json"
sse_after=$(curl -s "$base/metrics" | awk '/^orchestrator_sse_events_total/ {print $2}')
node -e '
const p = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const published = Number(process.argv[3]) - Number(process.argv[2]);
console.log("dashboard, 1,000 services at 10 ticks/s, " + p.seconds + " s in headless Chromium:");
console.log("  frames per second            " + p.fps.toFixed(1));
console.log("  main-thread busy             " + (100 * p.busyMs / (p.seconds * 1000)).toFixed(1) + " % (" + p.busyMs.toFixed(0) + " ms task time)");
console.log("  long tasks (> 50 ms)         " + p.longTasks);
console.log("  SSE events received          " + p.events + " (tick events " + p.ticks + ")");
console.log("  SSE events published         " + published + " (all clients; one client here)");
console.log("  received / published         " + (published ? (p.events / published).toFixed(3) : "n/a"));
' "$work/page.json" "${sse_before:-0}" "${sse_after:-0}"
