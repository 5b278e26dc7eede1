#!/usr/bin/env bash
# Acceptance 3: the live stack survives crashes and restarts of its parts.
#
#   test_faults.sh BUILD_DIR KIND [MODE]     (under scripts/with-services)
#
# KIND picks the fault, injected while cascade_failure (seed 42) runs with
# APPROVAL_MODE=auto; MODE is lockstep (default, full speed) or realtime (20
# ticks/s, the engine never waits, so the rest must catch up with a backlog):
#   engine    kill -9 sim-engine at tick 40, start it again (same environment)
#   pipeline  kill -9 signal-service (tick 20), agent-service (tick 45) and
#             orchestrator (tick 70) in turn, each started again at once
#   postgres  PostgreSQL stopped (pg_ctl stop -m fast) at tick 36, when the
#             first actions are being proposed, approved and executed, and
#             started again 3 s later
#   nats      nats-server stopped at tick 40 and, 2 s later, started again on
#             the same port with the same JetStream store
# Then the run goes on to tick 200 (the cascade's budget, see
# test_cascade_auto.sh), where the engine pauses itself (STOP_AFTER_TICKS). Asserted for every kind:
#   - the run completes: after each fault the engine's tick goes on from where
#     it was (never back) and reaches 200;
#   - incidents still get detected (the database's error rate);
#   - the metrics table holds every sample published exactly once: no
#     (tick, node, service, metric) twice, and per tick exactly the samples
#     the engine publishes for it (the topology's 93 in cascade_failure, taken
#     from the offline closed loop of the same scenario) for ticks 1..last.
# For postgres and nats in lockstep, which lose no service state, also: the
# database's restart is executed, every incident resolves by tick 200, and
# the live proposals are those of the offline closed loop (lockstep is a pure
# function of seed, scenario and configuration: an outage only delays it).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
KIND=${2:?usage: test_faults.sh BUILD_DIR engine|pipeline|postgres|nats [lockstep|realtime]}
MODE=${3:-lockstep}
case $MODE in
  lockstep) acc_init "fault_$KIND" "$1" ;;
  realtime) acc_init "fault_${KIND}_realtime" "$1" ;;
  *) echo "FAIL: unknown mode $MODE" >&2; exit 1 ;;
esac
BUDGET=200

case $KIND in
  engine|pipeline|nats) ;;
  postgres)
    if [ -z "${MC_PG_DATADIR:-}" ] || [ -z "${MC_PG_BINDIR:-}" ]; then
      echo "SKIP: PostgreSQL is not the private one of scripts/with-services (MC_PG_DATADIR unset)" >&2
      ACC_FAILS=0; acc_cleanup; trap - EXIT; exit 77
    fi ;;
  *) acc_die "unknown fault kind $KIND" ;;
esac
if [ "$KIND" = nats ] && [ ! -f "${MC_SERVICES_DIR:-/nonexistent}/nats/nats.pid" ]; then
  echo "SKIP: nats-server is not the private one of scripts/with-services" >&2
  acc_cleanup; trap - EXIT; exit 77
fi

# Lockstep runs at full speed, so a fault mostly lands while messages are in
# flight (a crash between two ticks proves little). Realtime runs at 20
# ticks/s: the engine does not wait for a restarted service, and faster the
# run would be over before the pipeline has caught up with the backlog of
# its outages (its actions would then reach a paused engine). In realtime the engine starts playing once all four
# services are ready (AUTOSTART=false, then Play), so the faults fall where
# planned; lockstep waits for them anyway, and a restarted engine must play
# on its own (AUTOSTART=true, as a crashed engine would be restarted).
mode=lockstep speed=max autostart=true
[ "$MODE" = realtime ] && mode=realtime speed=20 autostart=false
export SCENARIO=cascade_failure SEED=42 SIM_MODE=$mode SPEED=${ACC_FAULT_SPEED:-$speed} APPROVAL_MODE=auto
export AUTOSTART=$autostart STOP_AFTER_TICKS=$BUDGET

"$ACC_MC" sim --scenario cascade_failure --seed 42 --ticks $((BUDGET + 100)) --approval auto --json \
  --trace "$ACC_WORK/offline.mctrace" >"$ACC_WORK/offline.json" || acc_die "microcloud sim (offline reference) failed"
acc_trace_samples "$ACC_WORK/offline.mctrace" >"$ACC_WORK/offline-samples.txt"
"$ACC_MC" replay inspect "$ACC_WORK/offline.mctrace" --subject ops.actions --ticks ":$BUDGET" 2>/dev/null |
  jq -r '[.payload.proposedAtTick, .payload.actionType, .payload.targetId] | @tsv' |
  sed -e 's/ACTION_TYPE_RESTART_SERVICE/1/; s/ACTION_TYPE_SCALE_UP/2/; s/ACTION_TYPE_SCALE_DOWN/3/' \
      -e 's/ACTION_TYPE_DRAIN_NODE/4/; s/ACTION_TYPE_REBALANCE_TRAFFIC/5/' |
  sort -k1,1n -k2,2n -k3,3 >"$ACC_WORK/offline-actions.num"

acc_start
acc_engine Play >/dev/null || acc_die "Play failed"

# after_fault WHAT TICK_BEFORE: the run goes on from where it was: within 60 s
# the engine is at least 10 ticks further, and never went back.
after_fault() {
  local what=$1 before=$2 t min went_back=0
  # Sample the tick right away and while waiting: a restarted run shows as a
  # tick below the one at the fault.
  local deadline=$((SECONDS + 60))
  min=$before
  while [ $SECONDS -lt $deadline ]; do
    t=$(acc_tick)
    if [ -n "$t" ]; then
      [ "$t" -lt "$min" ] && min=$t
      [ "$t" -ge $((before + 10)) ] && break
    fi
    sleep 0.05
  done
  if [ "$min" -lt "$before" ]; then
    acc_fail "after $what the engine went back from tick $before to tick $min (the run started over instead of going on)"
    went_back=1
  fi
  if [ -z "$t" ] || [ "$t" -lt $((before + 10)) ]; then
    acc_fail "after $what the run did not advance 10 ticks past $before within 60 s (state: $(acc_state))"
  elif [ "$went_back" = 0 ]; then
    acc_ok "after $what the run went on (tick $before -> $t)"
  fi
}

kill_restart() { # SERVICE AT_TICK
  acc_wait_tick "$2" 60 || acc_die "the run did not reach tick $2"
  local before
  before=$(acc_tick)
  acc_kill9 "$1"
  sleep 0.5
  acc_restart "$1" || acc_die "$1 could not be started again"
  after_fault "kill -9 and restart of $1 (at tick $before)" "$before"
}

restart_postgres() { # AT_TICK
  acc_wait_tick "$1" 60 || acc_die "the run did not reach tick $1"
  local before opts
  before=$(acc_tick)
  local as=()
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  # The server's own command line (port, socket folder, settings) without
  # the binary and the data folder: pg_ctl start needs it back.
  opts=$(sed -E 's/^[^ ]+ //; s/"-D" "[^"]*" ?//' "$MC_PG_DATADIR/postmaster.opts")
  acc_log "stopping PostgreSQL (pg_ctl stop -m fast) at tick $before for 3 s"
  "${as[@]}" "$MC_PG_BINDIR/pg_ctl" -D "$MC_PG_DATADIR" -m fast -w -t 60 stop >/dev/null 2>&1 </dev/null ||
    acc_die "pg_ctl stop failed"
  sleep 3
  "${as[@]}" "$MC_PG_BINDIR/pg_ctl" -D "$MC_PG_DATADIR" -l "$(dirname "$MC_PG_DATADIR")/postgres.log" \
    -o "$opts" -w -t 60 start >/dev/null 2>&1 </dev/null || acc_die "pg_ctl start failed (options: $opts)"
  acc_log "PostgreSQL is back"
  after_fault "a PostgreSQL outage (at tick $before)" "$before"
}

restart_nats() { # AT_TICK
  acc_wait_tick "$1" 60 || acc_die "the run did not reach tick $1"
  local dir=$MC_SERVICES_DIR/nats before pid port
  before=$(acc_tick)
  pid=$(cat "$dir/nats.pid")
  port=${NATS_URL##*:}
  port=${port%%/*}
  acc_log "restarting nats-server (pid $pid, port $port) at tick $before"
  kill -TERM "$pid"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; sleep 0.2; }
  # Long enough for every client to notice and back off a few times.
  sleep 2
  # The same command line as scripts/services.sh, on the same port and store;
  # the pid file is what with-services stops at the end.
  nats-server -js -a 127.0.0.1 -p "$port" -sd "$dir/js" -ports_file_dir "$dir/ports" \
    -l "$dir/nats.log" -P "$dir/nats.pid" --http_port 0 </dev/null >/dev/null 2>&1 &
  local npid=$!
  echo "$npid" >"$dir/nats.pid"
  for _ in $(seq 1 100); do mc_port_busy "$port" && break; sleep 0.05; done
  mc_port_busy "$port" || acc_die "nats-server did not come back on port $port"
  acc_log "nats-server is back (pid $npid)"
  after_fault "a nats-server restart (at tick $before)" "$before"
}

case $KIND in
  engine) kill_restart sim-engine 40 ;;
  pipeline)
    kill_restart signal-service 20
    kill_restart agent-service 45
    kill_restart orchestrator 70 ;;
  postgres) restart_postgres 36 ;;
  nats) restart_nats 40 ;;
esac

if last=$(acc_wait_stopped $BUDGET 120); then
  acc_log "the engine stopped at tick $last"
else
  acc_fail "the run did not stop at tick $BUDGET within 120 s after the faults (at $last)"
  last=$(acc_pause)
fi
acc_wait_trace_tick "$last" 30 || acc_fail "tick $last did not reach the trace within 30 s"
acc_wait_ingest "$last" 60 || acc_fail "the metrics table did not reach tick $last within 60 s"
# Ingest commits in batches; give the last one its delay, then compare.
sleep 1

db_inc=$(acc_sql "select count(*) from incidents where target_id = 'database' and rule_name like 'error_rate%'")
acc_check "incidents still get detected: an error-rate incident on the database" test "${db_inc:-0}" -gt 0
executed=$(acc_sql "select count(*) from actions where status = 4")
acc_check "actions still get executed ($executed)" test "${executed:-0}" -gt 0

if [ "$MODE" = lockstep ] && { [ "$KIND" = postgres ] || [ "$KIND" = nats ]; }; then
  st=$(acc_sql "select status from actions where target_id = 'database' and action_type = 1 order by proposed_at_tick limit 1")
  acc_eq "the database's RESTART_SERVICE is EXECUTED" 4 "${st:-none}"
  late=$(acc_sql "select coalesce(string_agg(target_id || '/' || rule_name || '@' || coalesce(resolved_at_tick::text, 'open'), ', '), '') from incidents where resolved_at_tick is null or resolved_at_tick > $BUDGET")
  acc_eq "every incident resolved by tick $BUDGET (late ones)" "" "$late"
  acc_sql "select proposed_at_tick, action_type, target_id from actions where proposed_at_tick <= $BUDGET order by proposed_at_tick, action_type, target_id" |
    tr '|' '\t' >"$ACC_WORK/live-actions.num"
  if diff -q "$ACC_WORK/offline-actions.num" "$ACC_WORK/live-actions.num" >/dev/null; then
    acc_ok "the live proposals equal the offline closed loop's ($(wc -l <"$ACC_WORK/live-actions.num"))"
  else
    acc_fail "the live proposals differ from the offline closed loop's (< offline, > live):"
    diff "$ACC_WORK/offline-actions.num" "$ACC_WORK/live-actions.num" | grep '^[<>]' | head -10 >&2
  fi
fi

mc_stack_stop
awk -v last="$last" '$1 <= last' "$ACC_WORK/offline-samples.txt" >"$ACC_WORK/published.txt"
acc_check_exactly_once "$ACC_WORK/published.txt"
if [ "$KIND" != engine ]; then
  # The engine recorded the run: every tick up to the pause, each once.
  trace=$(acc_trace) || acc_fail "expected one trace in TRACE_DIR"
  if [ -n "${trace:-}" ]; then
    acc_trace_samples "$trace" >"$ACC_WORK/traced.txt"
    acc_eq "the trace holds ticks 1..$last" "$last 1 $last" \
      "$(wc -l <"$ACC_WORK/traced.txt") $(head -1 "$ACC_WORK/traced.txt" | cut -d' ' -f1) $(tail -1 "$ACC_WORK/traced.txt" | cut -d' ' -f1)"
  fi
else
  # A restarted engine must go on with the run, not play its ticks again: no
  # tick may be recorded in two traces (the old process's and the new one's).
  # At full speed the replayed ticks pass too fast for the tick polling above.
  acc_log "traces after the engine's restart: $(ls "$TRACE_DIR" | tr '\n' ' ')"
  : >"$ACC_WORK/traced-all.txt"
  for t in "$TRACE_DIR"/*.trace; do
    acc_trace_samples "$t" | sed "s|\$| $(basename "$t")|" >>"$ACC_WORK/traced-all.txt"
  done
  again=$(sort -n "$ACC_WORK/traced-all.txt" | awk '{ n[$1]++ } END { for (t in n) if (n[t] > 1) c++; print c + 0 }')
  first=$(awk '{ print $1 }' "$ACC_WORK/traced-all.txt" | sort -n | uniq -d | head -1)
  acc_eq "ticks recorded twice, by the crashed engine and again by its successor (first: ${first:-none})" 0 "$again"
fi
acc_finish
