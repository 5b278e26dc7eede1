# Helpers of the end-to-end acceptance tests (sourced, not run).
#
# Each test runs the four real services (scripts/stack.sh) against the
# nats-server and PostgreSQL of the test run (scripts/with-services), in a
# database, stream names, subjects, ports and folder of its own, and stops
# everything it started whatever happens. Usage in a test:
#
#   . "$(dirname "$0")/lib.sh"
#   acc_init NAME BUILD_DIR            # database, prefixes, work dir, trap
#   export SCENARIO=... SIM_MODE=...   # the run's settings
#   acc_start                          # the four services, ready
#   ...                                # acc_check / acc_fail per assertion
#   acc_finish                         # prints the verdict, exits 0 or 1
#
# Every failed assertion prints one line "FAIL: what was expected, what was
# seen"; the test goes on where it can so one run shows every failure.

set -uo pipefail

ACC_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../scripts/stack.sh
. "$ACC_ROOT/scripts/stack.sh"

ACC_FAILS=0
ACC_NAME=""
ACC_BUILD=""
ACC_WORK=""
ACC_DB=""
ACC_ADMIN_URL=""
ACC_T0=$SECONDS

acc_log() { echo "[$ACC_NAME $((SECONDS - ACC_T0))s] $*" >&2; }

acc_fail() {
  echo "FAIL: $*" >&2
  ACC_FAILS=$((ACC_FAILS + 1))
}

acc_ok() { echo "ok: $*" >&2; }

# acc_check "what is asserted" COMMAND...: runs COMMAND; FAIL line when it fails.
acc_check() {
  local what=$1
  shift
  if "$@"; then acc_ok "$what"; else acc_fail "$what"; fi
}

# acc_eq "what" EXPECTED ACTUAL
acc_eq() {
  if [ "$2" = "$3" ]; then
    acc_ok "$1 ($3)"
  else
    acc_fail "$1: expected $2, got $3"
  fi
}

# Gives up on the test: one FAIL line, then the exit trap cleans up.
acc_die() {
  acc_fail "$*"
  acc_finish
}

acc_finish() {
  trap - EXIT
  acc_cleanup
  if [ "$ACC_FAILS" -gt 0 ]; then
    echo "$ACC_NAME: FAILED ($ACC_FAILS assertion(s)) in $((SECONDS - ACC_T0))s; logs in $ACC_KEEP" >&2
    exit 1
  fi
  echo "$ACC_NAME: passed in $((SECONDS - ACC_T0))s" >&2
  exit 0
}

# ---------------------------------------------------------------- set-up

acc_init() {
  ACC_NAME=$1
  # Absolute: the test runs in its work dir (see below).
  ACC_BUILD=$(cd "$2" 2>/dev/null && pwd) || { echo "FAIL: no build dir $2" >&2; exit 1; }
  ACC_T0=$SECONDS
  local b
  for b in engine/sim-engine pipeline/signal-service pipeline/agent-service \
           gateway/orchestrator/orchestrator replay/microcloud; do
    [ -x "$ACC_BUILD/$b" ] || { echo "FAIL: $ACC_BUILD/$b is not built" >&2; exit 1; }
  done
  [ -n "${NATS_URL:-}" ] && [ -n "${DATABASE_URL:-}" ] || {
    echo "FAIL: NATS_URL and DATABASE_URL must be set (run under scripts/with-services)" >&2
    exit 1
  }
  for b in jq psql curl; do
    command -v "$b" >/dev/null || { echo "FAIL: $b is not installed" >&2; exit 1; }
  done
  ACC_MC="$ACC_BUILD/replay/microcloud"
  ACC_WORK=$(mktemp -d "${TMPDIR:-/tmp}/mc-acc-$ACC_NAME.XXXXXX")
  ACC_KEEP="$ACC_BUILD/test-output/acceptance/$ACC_NAME"
  rm -rf "$ACC_KEEP"
  trap 'acc_cleanup; exit 1' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  # A database of its own on the same server: the URL's path names it.
  ACC_ADMIN_URL=$DATABASE_URL
  ACC_DB="mc_acc_$$"
  psql -X -q -v ON_ERROR_STOP=1 "$ACC_ADMIN_URL" -c "create database $ACC_DB" >/dev/null ||
    { echo "FAIL: cannot create database $ACC_DB" >&2; exit 1; }
  DATABASE_URL=$(printf '%s' "$ACC_ADMIN_URL" | sed -E "s#^(postgres(ql)?://[^/]*/)[^?]*#\1$ACC_DB#")
  export DATABASE_URL DB_NAME=$ACC_DB
  export BUS_STREAM_PREFIX="ACC$$_" BUS_SUBJECT_PREFIX="acc$$."
  export MC_STACK_FREE_PORTS=1 MC_STACK_READY_TIMEOUT=60
  export TRACE_DIR="$ACC_WORK/traces"
  mkdir -p "$TRACE_DIR"
  # A service that crashes leaves a core dump in the work dir (the services'
  # working directory); the clean-up prints its backtrace.
  ulimit -c unlimited 2>/dev/null || true
  cd "$ACC_WORK" || exit 1
  export SCENARIO_DIR="$ACC_ROOT/engine/scenarios" LOG_FORMAT=text WEB_DIR="$ACC_WORK/no-web"
  export API_TOKEN
  API_TOKEN=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The pipeline services start consuming one ack wait after they start (so
  # a crashed predecessor's messages come back first): 2 s instead of 10 s
  # keeps each start and restart short.
  export CONSUMER_ACK_WAIT=2s
  acc_log "work dir $ACC_WORK, database $ACC_DB, streams ${BUS_STREAM_PREFIX}*, subjects ${BUS_SUBJECT_PREFIX}*"
}

# Stops what the test started, keeps the logs and traces for a look after a
# failure, drops the database. Runs once (trap or acc_finish).
ACC_CLEANED=0
acc_cleanup() {
  # Only the test's own shell cleans up: a forked subshell hit by a signal
  # before it execs runs the EXIT trap too.
  [ "${BASHPID:-$$}" = "$$" ] || return 0
  [ "$ACC_CLEANED" = 1 ] && return 0
  ACC_CLEANED=1
  mc_stack_stop 2>/dev/null
  acc_core_backtraces
  if [ -n "$ACC_WORK" ] && [ -d "$ACC_WORK" ]; then
    mkdir -p "$ACC_KEEP"
    cp -r "$ACC_WORK"/. "$ACC_KEEP"/ 2>/dev/null || true
    rm -rf "$ACC_WORK"
  fi
  if [ -n "$ACC_DB" ] && [ "${ACC_KEEP_DB:-0}" != 1 ]; then
    psql -X -q "$ACC_ADMIN_URL" -c "drop database if exists $ACC_DB with (force)" >/dev/null 2>&1 || true
  fi
}

# Prints the backtrace of every core dump in the work dir (when gdb is
# there), keeps it next to the logs and deletes the core itself (large).
acc_core_backtraces() {
  local c exe
  for c in "$ACC_WORK"/core*; do
    [ -f "$c" ] || continue
    exe=$(gdb -q -batch -c "$c" 2>/dev/null | sed -n "s/^Core was generated by \`\([^ ']*\).*/\1/p")
    acc_fail "a service crashed (core dump of ${exe:-unknown}); backtrace in $ACC_KEEP/logs/$(basename "$c").bt"
    if command -v gdb >/dev/null && [ -n "$exe" ]; then
      mkdir -p "$ACC_WORK/logs"
      gdb -q -batch -ex 'bt 25' "$exe" "$c" 2>/dev/null | grep -E '^#[0-9]+ ' >&2
      gdb -q -batch -ex 'thread apply all bt 40' "$exe" "$c" >"$ACC_WORK/logs/$(basename "$c").bt" 2>&1
    fi
    rm -f "$c"
  done
}

acc_start() {
  # mc_free_port draws from 20000..39999, which overlaps the kernel's
  # ephemeral range (32768..60999): a port that no one listens on may still
  # be the local end of an outgoing connection, and then the bind fails
  # ("address already in use"). Such a start is retried with fresh ports.
  local attempt
  for attempt in 1 2 3; do
    if mc_stack_start "$ACC_BUILD" "$ACC_WORK/logs"; then
      break
    fi
    mc_stack_stop 2>/dev/null
    if [ "$attempt" = 3 ] || ! grep -q 'address already in use' "$ACC_WORK"/logs/*.log; then
      acc_die "the four services did not start"
    fi
    acc_log "a port was taken; starting again on other ports"
    for f in "$ACC_WORK"/logs/*.log; do mv "$f" "$f.attempt$attempt"; done
  done
  ACC_ENGINE="http://127.0.0.1:$SIM_ENGINE_PORT"
  ACC_ORCH="http://127.0.0.1:$ORCHESTRATOR_PORT"
}

# ----------------------------------------------------- one service at a time

acc_index() { # NAME -> index in MC_STACK_NAMES
  local i
  for i in "${!MC_STACK_NAMES[@]}"; do
    [ "${MC_STACK_NAMES[$i]}" = "$1" ] && { echo "$i"; return 0; }
  done
  return 1
}

acc_pid() { local i; i=$(acc_index "$1") && echo "${MC_STACK_PIDS[$i]}"; }

# acc_kill9 NAME: SIGKILL, reaped.
acc_kill9() {
  local pid
  pid=$(acc_pid "$1") || { acc_fail "$1 is not running"; return 1; }
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  acc_log "killed $1 (pid $pid) with SIGKILL"
}

# acc_restart NAME: starts NAME again with the environment and port of its
# first start (as scripts/stack.sh does) and waits until it is ready.
acc_restart() {
  local name=$1 i path env ready
  i=$(acc_index "$name") || { acc_fail "unknown service $name"; return 1; }
  case $name in
    sim-engine) path=engine/sim-engine; env="ADDR=127.0.0.1:$SIM_ENGINE_PORT"
                ready="$ACC_ENGINE/health" ;;
    signal-service) path=pipeline/signal-service; env="ADMIN_ADDR=127.0.0.1:$SIGNAL_ADMIN_PORT"
                    ready="http://127.0.0.1:$SIGNAL_ADMIN_PORT/ready" ;;
    agent-service) path=pipeline/agent-service; env="ADMIN_ADDR=127.0.0.1:$AGENT_ADMIN_PORT"
                   ready="http://127.0.0.1:$AGENT_ADMIN_PORT/ready" ;;
    orchestrator) path=gateway/orchestrator/orchestrator
                  env="ADDR=127.0.0.1:$ORCHESTRATOR_PORT SIM_ENGINE_URL=$ACC_ENGINE"
                  ready="$ACC_ORCH/ready" ;;
  esac
  echo "---- restarted by the test ----" >>"$ACC_WORK/logs/$name.log"
  # shellcheck disable=SC2086
  env $env "$ACC_BUILD/$path" >>"$ACC_WORK/logs/$name.log" 2>&1 &
  MC_STACK_PIDS[$i]=$!
  if ! mc_wait_http "$ready" 60 "$name" "${MC_STACK_PIDS[$i]}"; then
    acc_fail "$name did not come back after a restart"
    tail -20 "$ACC_WORK/logs/$name.log" >&2
    return 1
  fi
  acc_log "restarted $name (pid ${MC_STACK_PIDS[$i]})"
}

# ------------------------------------------------------------ engine control

# acc_engine RPC [JSON]: a Connect call to the engine's SimulationService.
acc_engine() {
  curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' -d "${2:-{\}}" \
    "$ACC_ENGINE/sim.v1.SimulationService/$1"
}

acc_state() { acc_engine GetState | jq -c '.state // empty' 2>/dev/null; }

acc_tick() { # the engine's current tick, empty when it does not answer
  acc_engine GetState 2>/dev/null | jq -r '.state.tick // "0"' 2>/dev/null
}

# acc_wait_tick N TIMEOUT_S: waits until the engine's tick is >= N.
acc_wait_tick() {
  local n=$1 deadline=$((SECONDS + $2)) t=0
  while [ $SECONDS -lt "$deadline" ]; do
    t=$(acc_tick)
    [ -n "$t" ] && [ "$t" -ge "$n" ] && return 0
    sleep 0.05
  done
  acc_log "engine at tick ${t:-?} after $2 s, waiting for $n; state: $(acc_state)"
  return 1
}

# acc_wait_stopped N TIMEOUT_S: waits until the engine paused itself at tick
# N (STOP_AFTER_TICKS=N) and prints N; fails (printing the tick it is at)
# when it did not within TIMEOUT_S.
acc_wait_stopped() {
  local n=$1 deadline=$((SECONDS + $2)) st="" t="" running=""
  while [ $SECONDS -lt "$deadline" ]; do
    st=$(acc_state)
    t=$(printf '%s' "$st" | jq -r '.tick // "0"' 2>/dev/null)
    running=$(printf '%s' "$st" | jq -r '.running // false' 2>/dev/null)
    if [ -n "$t" ] && [ "$t" -ge "$n" ] && [ "$running" = false ]; then
      echo "$t"
      return 0
    fi
    sleep 0.1
  done
  acc_log "the engine did not stop at tick $n within $2 s; state: $st"
  echo "${t:-0}"
  return 1
}

# acc_wait_trace_tick N TIMEOUT_S: waits until tick N is in the trace (its
# orchestrator watermark arrived: the pipeline finished the tick).
acc_wait_trace_tick() {
  local deadline=$((SECONDS + $2)) t=""
  while [ $SECONDS -lt "$deadline" ]; do
    t=$(acc_prom "$ACC_ENGINE/metrics" microcloud_sim_trace_tick)
    [ -n "$t" ] && [ "${t%.*}" -ge "$1" ] && return 0
    sleep 0.1
  done
  acc_log "the trace holds tick ${t:-?} after $2 s, waiting for $1"
  return 1
}

# acc_pause: pauses the engine; prints the tick it stopped at.
acc_pause() { acc_engine Pause | jq -r '.state.tick'; }

# acc_prom URL METRIC: a Prometheus sample's value (first series), empty if absent.
acc_prom() {
  curl -sS --max-time 5 "$1" 2>/dev/null | awk -v m="$2" '$1 == m || index($1, m "{") == 1 { print $2; exit }'
}

# ------------------------------------------------------------- orchestrator

# acc_api RPC JSON [TOKEN]: a Connect call to the ActionService.
acc_api() {
  local auth=()
  [ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
  curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' "${auth[@]}" \
    -d "$2" "$ACC_ORCH/ops.v1.ActionService/$1"
}

# acc_sql QUERY: one query on the test's database, unaligned, no header.
acc_sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }

# ----------------------------------------------------------------- pipeline

# acc_wait_ingest TICK TIMEOUT_S: waits until the metrics table holds TICK
# (ingest commits in stream order, so every earlier tick is in too).
acc_wait_ingest() {
  local tick=$1 deadline=$((SECONDS + $2)) m=""
  while [ $SECONDS -lt "$deadline" ]; do
    m=$(acc_sql "select coalesce(max(tick_id),0) from metrics" 2>/dev/null)
    [ -n "$m" ] && [ "$m" -ge "$tick" ] && return 0
    sleep 0.2
  done
  acc_log "metrics table at tick ${m:-?} after $2 s, waiting for $tick"
  return 1
}

# acc_trace_samples TRACE: "tick count" lines, the samples published per
# tick as recorded in the trace (every sim.metrics chunk of the tick).
acc_trace_samples() {
  "$ACC_MC" replay inspect "$1" --subject sim.metrics 2>/dev/null |
    jq -r '[.tick, (.payload.samples | length)] | @tsv' |
    awk '{ n[$1] += $2 } END { for (t in n) print t, n[t] }' | sort -n
}

# acc_db_samples: "tick count" lines from the metrics table.
acc_db_samples() {
  acc_sql "select tick_id, count(*) from metrics group by tick_id order by tick_id" | tr '|' ' '
}

# acc_check_exactly_once EXPECTED_FILE: the metrics table holds each sample
# once: no duplicate (tick, node, service, metric), and per tick exactly the
# samples of EXPECTED_FILE ("tick count" lines) — nothing lost, nothing extra.
acc_check_exactly_once() {
  local expected=$1 total distinct want diffs
  total=$(acc_sql "select count(*) from metrics")
  distinct=$(acc_sql "select count(distinct (tick_id, node_id, service_id, metric_name)) from metrics")
  acc_eq "metrics: rows stored twice (count(*) $total - count(distinct key) $distinct)" 0 "$((total - distinct))"
  want=$(awk '{ s += $2 } END { print s + 0 }' "$expected")
  acc_eq "metrics: rows stored = samples published" "$want" "$total"
  acc_db_samples >"$ACC_WORK/db-samples.txt"
  # One line: the first ticks whose stored count differs from the published one.
  diffs=$(awk 'NR == FNR { p[$1] = $2; t[$1] = 1; next } { s[$1] = $2; t[$1] = 1 }
    END { for (k in t) if (p[k] + 0 != s[k] + 0) print k, p[k] + 0, s[k] + 0 }' \
    "$expected" "$ACC_WORK/db-samples.txt" | sort -n |
    awk '{ printf "%stick %s: published %s, stored %s", sep, $1, $2, $3; sep = "; "; if (++n == 6) exit }')
  if [ -n "$diffs" ]; then
    acc_fail "metrics: per-tick sample counts differ from those published: $diffs"
  else
    acc_ok "metrics: per-tick sample counts equal those published ($(wc -l <"$expected") ticks)"
  fi
}

# acc_trace: the single trace file of the run (fails when there is not one).
acc_trace() {
  local f
  f=$(ls "$TRACE_DIR"/*.trace 2>/dev/null)
  [ "$(printf '%s\n' "$f" | grep -c .)" = 1 ] || { echo "traces: ${f:-none}" >&2; return 1; }
  echo "$f"
}
