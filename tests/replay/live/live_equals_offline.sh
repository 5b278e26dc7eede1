#!/usr/bin/env bash
# Live equals offline: the four services in lockstep with APPROVAL_MODE=auto,
# over the JetStream and PostgreSQL of scripts/with-services, record a trace
# whose records are byte-identical to `microcloud sim` with the same seed,
# scenario and tick count (the header's start time and build aside), and
# `microcloud replay verify` of the live trace exits 0.
#
#   live_equals_offline.sh BUILD_DIR SOURCE_DIR [OUT_DIR]
#
# Run 1 (cascade_failure, seed 42, 150 ticks): incidents, proposals,
#   automatic approvals and commands; a Pause, a SetSpeed and a Play on the
#   way (control events on sim.events that reach the cores live but are not
#   in the trace: they must change no decision). Then: `replay diff LIVE
#   OFFLINE` exits 0, the records print the same, `replay verify LIVE` exits 0.
#   A Reset then starts a second run in the same process (another run id,
#   from the reset count): its trace verifies too.
# Run 2 (normal, seed 7, 60 ticks): InjectFault before the first tick and
#   once the run is going. The injections are recorded as engine inputs
#   (sim.inputs), `replay verify --component engine` and `--component all`
#   exit 0, and the run differs from the offline one without them (so the
#   inputs did change the run).
# Run 3 (cascade_failure, seed 42, 90 ticks, APPROVAL_MODE=manual): actions
#   approved through the orchestrator's API while the run goes on; `replay
#   verify` of the live trace exits 0.
# Each run has its own database and stream/subject prefixes; the services are
# stopped whatever happens.
set -uo pipefail
build=$1
src=$2
out=${3:-$build/test-output/replay-live}
bin="$build/replay/microcloud"
. "$src/scripts/stack.sh"
for b in engine/sim-engine pipeline/signal-service pipeline/agent-service \
         gateway/orchestrator/orchestrator replay/microcloud; do
  [ -x "$build/$b" ] || { echo "live: $build/$b is not built"; exit 1; }
done
if [ -z "${NATS_URL:-}" ] || [ -z "${DATABASE_URL:-}" ]; then
  echo "live: NATS_URL and DATABASE_URL must be set: run under scripts/with-services"
  exit 1
fi
rm -rf "$out"
mkdir -p "$out"
base_db_url=$DATABASE_URL
trap 'mc_stack_stop' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

engine_call() { # METHOD JSON
  curl -fsS -X POST -H 'Content-Type: application/json' -d "$2" \
    "http://127.0.0.1:$SIM_ENGINE_PORT/sim.v1.SimulationService/$1"
}

# The last tick whose records are in the trace (complete in lockstep).
trace_tick() {
  curl -fsS "http://127.0.0.1:$SIM_ENGINE_PORT/metrics" 2>/dev/null |
    awk '/^microcloud_sim_trace_tick /{print int($2)}'
}

wait_trace_tick() { # TICK TIMEOUT_S
  local deadline=$((SECONDS + $2)) t=""
  while [ $SECONDS -lt $deadline ]; do
    t=$(trace_tick)
    [ -n "$t" ] && [ "$t" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "live: the trace reached tick ${t:-none}, not $1, in $2 s"
  return 1
}

# start_run NAME: a fresh database and prefixes, then the four services.
start_run() {
  local name=$1 db="mc_live_${1}_$$"
  psql -X -q "$base_db_url" -c "create database $db" >/dev/null || return 1
  export DATABASE_URL=$(printf '%s' "$base_db_url" | sed "s#/microcloud?#/$db?#")
  export DB_NAME=$db
  export BUS_STREAM_PREFIX="LIVE_${name}_$$_" BUS_SUBJECT_PREFIX="live$name$$."
  export TRACE_DIR="$out/$name/traces"
  mkdir -p "$TRACE_DIR"
  mc_stack_start "$build" "$out/$name/logs"
}

the_trace() { ls "$TRACE_DIR"/*.trace 2>/dev/null | head -1; }

# 50 ticks per second: the control calls land in the middle of the run.
export SIM_MODE=lockstep SPEED=50 APPROVAL_MODE=auto LOG_FORMAT=text
export SCENARIO_DIR="$src/engine/scenarios" MC_STACK_FREE_PORTS=1 CONSUMER_ACK_WAIT=1s
export TRACE_SIGNING_KEY=

# ---- Run 1: the live run and `microcloud sim` record the same trace.
ticks=150
export SCENARIO=cascade_failure SEED=42 STOP_AFTER_TICKS=$ticks AUTOSTART=true
if start_run one; then
  wait_trace_tick 40 120 || fail "run 1: no progress"
  # Control events (PAUSED, SPEED_CHANGED, RESUMED) in the middle of the run.
  paused=$(engine_call Pause '{}') || fail "run 1: Pause"
  echo "run 1: paused: $paused"
  echo "$paused" | jq -e --argjson n $ticks '(.state.tick | tonumber) < $n' >/dev/null ||
    fail "run 1: the pause came after the end of the run"
  sleep 0.3
  engine_call SetSpeed '{"ticksPerSecond":50}' >/dev/null || fail "run 1: SetSpeed"
  engine_call SetSpeed '{"maxSpeed":true}' >/dev/null || fail "run 1: SetSpeed max"
  engine_call Play '{}' >/dev/null || fail "run 1: Play"
  wait_trace_tick $ticks 180 || fail "run 1: did not complete tick $ticks"
  state=$(engine_call GetState '{}')
  echo "run 1: $state"
  echo "$state" | jq -e --arg t "$ticks" '.state.tick == $t and (.state.running | not)' >/dev/null ||
    fail "run 1: the engine did not stop after $ticks ticks (STOP_AFTER_TICKS)"
  run1_id=$(echo "$state" | jq -r .state.runId)
  # A second run of the same process (Reset: the run id counts the resets)
  # verifies too.
  engine_call Reset '{}' >/dev/null || fail "run 1: Reset"
  engine_call Play '{}' >/dev/null || fail "run 1: Play after Reset"
  wait_trace_tick $ticks 180 || fail "run 1b: did not complete tick $ticks"
else
  fail "run 1: the services did not start"
fi
mc_stack_stop
live=$(ls "$TRACE_DIR"/*"${run1_id:-none}".trace 2>/dev/null | head -1)
reset_trace=$(ls "$TRACE_DIR"/*.trace 2>/dev/null | grep -v -- "${run1_id:-none}" | head -1)
if [ -z "$reset_trace" ]; then
  fail "run 1b: no trace of the run after Reset"
else
  "$bin" replay verify "$reset_trace" --quiet
  rc=$?
  [ $rc -eq 0 ] || fail "run 1b: replay verify of the run after Reset exited $rc"
fi
offline="$out/one/offline.mctrace"
if [ -z "$live" ]; then
  fail "run 1: no live trace in $TRACE_DIR"
else
  echo "run 1: live trace $live"
  "$bin" sim --scenario cascade_failure --scenario-dir "$src/engine/scenarios" --seed 42 \
    --ticks $ticks --approval auto --trace "$offline" --force --quiet || fail "run 1: sim"
  "$bin" replay diff "$live" "$offline"
  rc=$?
  [ $rc -eq 0 ] || fail "run 1: replay diff LIVE OFFLINE exited $rc"
  # The records themselves, byte for byte (payloads as recorded, with
  # tick, stage, subject, producer and producer sequence).
  if ! cmp -s <("$bin" replay inspect "$live" 2>/dev/null) \
              <("$bin" replay inspect "$offline" 2>/dev/null); then
    fail "run 1: the records differ"
  fi
  n=$("$bin" replay inspect "$live" 2>/dev/null | wc -l)
  actions=$("$bin" replay inspect "$live" --subject ops.commands 2>/dev/null | wc -l)
  echo "run 1: $n records, $actions commands"
  [ "$n" -gt 500 ] && [ "$actions" -gt 0 ] || fail "run 1: expected records and commands"
  hdr=$("$bin" replay inspect "$live" --header --ticks 1 2>/dev/null | head -1)
  echo "$hdr" | jq -e '.header.approvalMode == "auto" and .header.mode == "lockstep" and
           .header.scenario == "cascade_failure"' >/dev/null || fail "run 1: header: $hdr"
  "$bin" replay verify "$live"
  rc=$?
  [ $rc -eq 0 ] || fail "run 1: replay verify LIVE exited $rc"
fi

# ---- Run 2: injected faults are recorded inputs the engine re-drive feeds.
ticks=60
export SCENARIO=normal SEED=7 STOP_AFTER_TICKS=$ticks AUTOSTART=false
if start_run two; then
  engine_call InjectFault \
    '{"fault":{"type":"FAULT_TYPE_ERROR_BURST","targetId":"checkout","intensity":0.6,"durationTicks":30}}' \
    >/dev/null || fail "run 2: InjectFault at tick 0"
  engine_call Play '{}' >/dev/null || fail "run 2: Play"
  wait_trace_tick 15 120 || fail "run 2: no progress"
  engine_call InjectFault \
    '{"fault":{"type":"FAULT_TYPE_NODE_CRASH","targetId":"node-2","intensity":1,"durationTicks":10}}' \
    >/dev/null || fail "run 2: InjectFault while running"
  wait_trace_tick $ticks 180 || fail "run 2: did not complete tick $ticks"
else
  fail "run 2: the services did not start"
fi
mc_stack_stop
live=$(the_trace)
if [ -z "$live" ]; then
  fail "run 2: no live trace in $TRACE_DIR"
else
  echo "run 2: live trace $live"
  inputs=$("$bin" replay inspect "$live" --subject sim.inputs 2>/dev/null)
  echo "$inputs"
  [ "$(printf '%s\n' "$inputs" | grep -c '"subject":"sim.inputs"')" -eq 2 ] ||
    fail "run 2: expected 2 sim.inputs records"
  first=$(printf '%s\n' "$inputs" | head -1)
  echo "$first" | jq -e '.tick == 0' >/dev/null ||
    fail "run 2: the first injection is an input of tick 0"
  for c in engine all; do
    "$bin" replay verify "$live" --component $c
    rc=$?
    [ $rc -eq 0 ] || fail "run 2: replay verify --component $c exited $rc"
  done
  offline="$out/two/offline.mctrace"
  "$bin" sim --scenario normal --scenario-dir "$src/engine/scenarios" --seed 7 \
    --ticks $ticks --approval auto --trace "$offline" --force --quiet || fail "run 2: sim"
  "$bin" replay diff "$live" "$offline" >/dev/null
  rc=$?
  [ $rc -eq 1 ] || fail "run 2: the injected faults did not change the run (diff exited $rc)"
fi

# ---- Run 3: manual approvals are human decisions the re-drive feeds again;
# their commands (stamped with the tick the orchestrator closes next) reach
# the engine after that tick, as in the re-drive.
ticks=90
export SCENARIO=cascade_failure SEED=42 STOP_AFTER_TICKS=$ticks AUTOSTART=true
export APPROVAL_MODE=manual SPEED=20 API_TOKEN=live-test-token-$$
approved=0
if start_run three; then
  deadline=$((SECONDS + 120))
  while [ $SECONDS -lt $deadline ] && [ "$(trace_tick)" != "$ticks" ]; do
    ids=$(curl -fsS -X POST -H 'Content-Type: application/json' -d '{}'       "http://127.0.0.1:$ORCHESTRATOR_PORT/ops.v1.ActionService/ListPendingActions" |
      jq -r '.actions[]?.id')
    for id in $ids; do
      curl -fsS -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $API_TOKEN"         -d "{\"actionId\":\"$id\",\"actor\":\"live-test\",\"reason\":\"ok\"}" \
        "http://127.0.0.1:$ORCHESTRATOR_PORT/ops.v1.ActionService/ApproveAction" >/dev/null &&
        approved=$((approved + 1))
    done
    sleep 0.05
  done
  wait_trace_tick $ticks 60 || fail "run 3: did not complete tick $ticks"
else
  fail "run 3: the services did not start"
fi
mc_stack_stop
live=$(the_trace)
echo "run 3: $approved approvals, live trace ${live:-none}"
[ "$approved" -gt 0 ] || fail "run 3: no action was approved"
if [ -n "$live" ]; then
  humans=$("$bin" replay inspect "$live" --subject ops.decisions 2>/dev/null |
    grep -c 'DECISION_SOURCE_HUMAN')
  echo "run 3: $humans human decisions recorded"
  [ "$humans" -gt 0 ] || fail "run 3: no human decision in the trace"
  "$bin" replay verify "$live"
  rc=$?
  [ $rc -eq 0 ] || fail "run 3: replay verify LIVE exited $rc"
else
  fail "run 3: no live trace"
fi

if [ "$fails" -ne 0 ]; then
  echo "live_equals_offline: $fails failure(s); logs under $out"
  exit 1
fi
echo "live_equals_offline: ok"
