#!/usr/bin/env bash
# The pipeline against a three-node NATS JetStream cluster that loses a node.
#
#   run.sh BUILD_DIR READBACK_BIN SOURCE_DIR
#
# Starts three nats-server processes forming a JetStream cluster on free
# loopback ports (temporary configs in the spirit of deploy/nats/node*.conf,
# which use fixed ports), then sim-engine (realtime, fast) and signal-service
# with BUS_STREAM_REPLICAS=3, NATS_URL listing all three nodes and a fresh
# database. In the middle of the run the node leading the SIM stream is
# killed with SIGKILL; the run goes on. At the end:
#  - the SIM stream read back (READBACK_BIN) holds every tick from the first
#    to the last, each with all its chunks, none twice;
#  - the metrics table holds, for every one of those ticks, exactly the
#    samples the engine published (count per tick, no duplicate key);
#  - both services are still running and ready.
# PostgreSQL comes from scripts/with-services (DATABASE_URL); its nats-server
# is not used. Prints one "FAIL: ..." line per failed check.
set -uo pipefail

BUILD=${1:?build dir}
READBACK=${2:?readback binary}
SRC=${3:?source dir}
ENGINE_BIN="$BUILD/engine/sim-engine"
SIGNAL_BIN="$BUILD/pipeline/signal-service"
TICKS=${NC_TICKS:-300}   # the engine pauses after this tick
KILL_AT=${NC_KILL_AT:-100}
SPEED=${NC_SPEED:-25}    # ticks per second

FAILS=0
T0=$SECONDS
log() { echo "[nats_cluster $((SECONDS - T0))s] $*" >&2; }
fail() { echo "FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

for b in "$ENGINE_BIN" "$SIGNAL_BIN" "$READBACK"; do
  [ -x "$b" ] || { echo "FAIL: $b is not built" >&2; exit 1; }
done
for t in nats-server psql curl jq; do
  command -v "$t" >/dev/null || { echo "FAIL: $t is not installed" >&2; exit 1; }
done
[ -n "${DATABASE_URL:-}" ] || { echo "FAIL: DATABASE_URL is not set (run under scripts/with-services)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mc-nats-cluster.XXXXXX")
KEEP="$BUILD/test-output/deploy/nats_cluster"
ADMIN_URL=$DATABASE_URL
DB="mc_nc_$$"
declare -a NODE_PIDS=() SVC_PIDS=()

cleanup() {
  local p
  for p in "${SVC_PIDS[@]}" "${NODE_PIDS[@]}"; do
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null
  done
  for p in "${SVC_PIDS[@]}" "${NODE_PIDS[@]}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null
  done
  rm -rf "$KEEP"
  mkdir -p "$KEEP"
  cp "$WORK"/*.log "$WORK"/*.conf "$WORK"/*.txt "$KEEP"/ 2>/dev/null
  rm -rf "$WORK"
  psql -X -q "$ADMIN_URL" -c "drop database if exists $DB with (force)" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Below the kernel's ephemeral range (32768..), so an outgoing connection's
# local end cannot hold it; each port is checked free and drawn once.
USED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 1 500); do
    p=$((20000 + RANDOM % 12000))
    case $USED_PORTS in *" $p "*) continue ;; esac
    port_busy "$p" && continue
    USED_PORTS="$USED_PORTS$p "
    echo "$p"
    return 0
  done
  return 1
}

wait_http() { # URL TIMEOUT_S -> 0 when it answers 2xx
  local deadline=$((SECONDS + $2))
  while [ $SECONDS -lt $deadline ]; do
    curl -sf -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.2
  done
  return 1
}

# ---------------------------------------------------------------- cluster
declare -a CPORT RPORT HPORT
for i in 1 2 3; do
  CPORT[$i]=$(free_port) && RPORT[$i]=$(free_port) && HPORT[$i]=$(free_port) ||
    { echo "FAIL: no free ports" >&2; exit 1; }
done
ROUTES=""
for i in 1 2 3; do ROUTES="$ROUTES    nats-route://127.0.0.1:${RPORT[$i]}"$'\n'; done
for i in 1 2 3; do
  cat >"$WORK/node$i.conf" <<EOF
# Node $i of the test's JetStream cluster (see deploy/nats/node$i.conf).
server_name: mc-test-n$i
listen: 127.0.0.1:${CPORT[$i]}
http: 127.0.0.1:${HPORT[$i]}
jetstream {
  store_dir: "$WORK/store-n$i"
  max_memory_store: 64MB
  max_file_store: 4GB
}
cluster {
  name: mc-test
  listen: 127.0.0.1:${RPORT[$i]}
  routes: [
$ROUTES  ]
}
EOF
done
start_node() {
  nats-server -c "$WORK/node$1.conf" >>"$WORK/nats-n$1.log" 2>&1 &
  NODE_PIDS[$1]=$!
}
for i in 1 2 3; do start_node "$i"; done
# JetStream is usable once every node reports healthy (meta leader elected).
for i in 1 2 3; do
  wait_http "http://127.0.0.1:${HPORT[$i]}/healthz" 30 ||
    { echo "FAIL: node $i of the cluster did not become healthy" >&2; exit 1; }
done
log "cluster up: client ports ${CPORT[1]} ${CPORT[2]} ${CPORT[3]}"

# ---------------------------------------------------------------- services
psql -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" -c "create database $DB" >/dev/null ||
  { echo "FAIL: cannot create database $DB" >&2; exit 1; }
DATABASE_URL=$(printf '%s' "$ADMIN_URL" | sed -E "s#^(postgres(ql)?://[^/]*/)[^?]*#\1$DB#")
export DATABASE_URL DB_NAME=$DB
export NATS_URL="nats://127.0.0.1:${CPORT[1]},nats://127.0.0.1:${CPORT[2]},nats://127.0.0.1:${CPORT[3]}"
export BUS_STREAM_PREFIX="NC$$_" BUS_SUBJECT_PREFIX="nc$$." BUS_STREAM_REPLICAS=3
export LOG_FORMAT=text SCENARIO_DIR="$SRC/engine/scenarios"
ENGINE_PORT=$(free_port)
SIGNAL_PORT=$(free_port)

ADDR=127.0.0.1:$ENGINE_PORT SIM_MODE=realtime SPEED=$SPEED STOP_AFTER_TICKS=$TICKS \
  SCENARIO=cascade_failure "$ENGINE_BIN" >>"$WORK/sim-engine.log" 2>&1 &
SVC_PIDS[0]=$!
wait_http "http://127.0.0.1:$ENGINE_PORT/health" 30 || { echo "FAIL: sim-engine did not start" >&2; exit 1; }
ADMIN_ADDR=127.0.0.1:$SIGNAL_PORT INGEST_MAX_DELAY=50ms "$SIGNAL_BIN" >>"$WORK/signal-service.log" 2>&1 &
SVC_PIDS[1]=$!
wait_http "http://127.0.0.1:$SIGNAL_PORT/ready" 30 || { echo "FAIL: signal-service did not become ready" >&2; exit 1; }
log "sim-engine (realtime, $SPEED ticks/s, pauses after tick $TICKS) and signal-service running"

# The streams were created with three replicas.
STREAMZ=$(curl -sf "http://127.0.0.1:${HPORT[1]}/jsz?streams=true&config=true")
for s in SIM OPS; do
  r=$(jq -r --arg n "${BUS_STREAM_PREFIX}$s" \
        '[.account_details[]?.stream_detail[]? | select(.name == $n) | .config.num_replicas] | first // empty' \
        <<<"$STREAMZ")
  [ "$r" = 3 ] || fail "stream ${BUS_STREAM_PREFIX}$s has 3 replicas (got '${r:-none}')"
done

engine_tick() {
  curl -sf --max-time 2 "http://127.0.0.1:$ENGINE_PORT/metrics" |
    awk '$1 ~ /^microcloud_sim_tick(\{.*\})?$/ { print int($2); exit }'
}

# ------------------------------------------------------- kill one node mid-run
deadline=$((SECONDS + 120))
while :; do
  t=$(engine_tick)
  [ -n "$t" ] && [ "$t" -ge "$KILL_AT" ] && break
  [ $SECONDS -lt $deadline ] || { echo "FAIL: the engine did not reach tick $KILL_AT (at '${t:-?}')" >&2; exit 1; }
  sleep 0.2
done
# The node leading the SIM stream: the hardest one to lose.
LEADER=$(curl -sf "http://127.0.0.1:${HPORT[1]}/jsz?streams=true" |
  jq -r --arg n "${BUS_STREAM_PREFIX}SIM" \
    '[.account_details[]?.stream_detail[]? | select(.name == $n) | .cluster.leader] | first // empty')
VICTIM=1
for i in 1 2 3; do [ "$LEADER" = "mc-test-n$i" ] && VICTIM=$i; done
kill -KILL "${NODE_PIDS[$VICTIM]}"
wait "${NODE_PIDS[$VICTIM]}" 2>/dev/null
NODE_PIDS[$VICTIM]=""
log "killed node $VICTIM (SIM leader '${LEADER:-unknown}') with SIGKILL at tick $t"
echo "killed node $VICTIM (SIM leader '${LEADER:-unknown}') at engine tick $t" >"$WORK/events.txt"

# ------------------------------------------------------------- the run ends
deadline=$((SECONDS + 180))
while :; do
  t=$(engine_tick)
  [ -n "$t" ] && [ "$t" -ge "$TICKS" ] && break
  if [ $SECONDS -ge $deadline ]; then fail "the engine reached tick $TICKS after the node loss (at '${t:-?}')"; break; fi
  kill -0 "${SVC_PIDS[0]}" 2>/dev/null || { fail "sim-engine exited during the run"; break; }
  sleep 0.3
done
log "engine at tick ${t:-?}"

# What the engine published, read back from the (now two-node) cluster.
"$READBACK" 3000 >"$WORK/readback.txt" 2>"$WORK/readback.log"
rb=$?
[ "$rb" = 0 ] || fail "the SIM stream read back has no gap, incomplete tick or duplicate (exit $rb): $(grep -v '^tick ' "$WORK/readback.txt" | head -5 | tr '\n' ';') $(head -c 600 "$WORK/readback.log")"
summary=$(grep '^summary' "$WORK/readback.txt")
log "stream: $summary"
first=$(sed -E 's/.* first=([0-9]+).*/\1/' <<<"$summary")
last=$(sed -E 's/.* last=([0-9]+).*/\1/' <<<"$summary")
expected=$(sed -E 's/.* samples=([0-9]+).*/\1/' <<<"$summary")
[ -n "$last" ] && [ "$last" -ge "$TICKS" ] || fail "the stream holds ticks up to $TICKS (last ${last:-none})"
[ -n "$first" ] && [ "$first" -le 1 ] || fail "the stream holds the run from its first tick (first ${first:-none})"

# Wait for the ingest to store all of it.
deadline=$((SECONDS + 120))
while :; do
  n=$(psql -X -At "$DATABASE_URL" -c "select count(*) from metrics" 2>/dev/null)
  [ "${n:-0}" -ge "${expected:-1}" ] && break
  if [ $SECONDS -ge $deadline ]; then break; fi
  sleep 0.5
done
sleep 1 # a duplicate would arrive after the count is reached
psql -X -At -F ' ' "$DATABASE_URL" \
  -c "select tick_id, count(*) from metrics group by tick_id order by tick_id" >"$WORK/table.txt"
awk '$1 == "tick" { print $2, $3 }' "$WORK/readback.txt" >"$WORK/published.txt"
if ! diff -q "$WORK/published.txt" "$WORK/table.txt" >/dev/null; then
  fail "every published tick has all its samples in the metrics table: $(diff "$WORK/published.txt" "$WORK/table.txt" | head -6 | tr '\n' ';')"
fi
total=$(psql -X -At "$DATABASE_URL" -c "select count(*) from metrics")
distinct=$(psql -X -At "$DATABASE_URL" -c \
  "select count(*) from (select distinct tick_id, node_id, service_id, metric_name from metrics) d")
[ "$total" = "$expected" ] || fail "metrics rows equal the published samples: expected $expected, got $total"
[ "$total" = "$distinct" ] || fail "no sample stored twice: $total rows, $distinct distinct"
log "metrics table: $total rows, $distinct distinct, $(wc -l <"$WORK/table.txt") ticks"

# Both services kept running and are ready on the remaining nodes.
kill -0 "${SVC_PIDS[0]}" 2>/dev/null || fail "sim-engine is still running"
kill -0 "${SVC_PIDS[1]}" 2>/dev/null || fail "signal-service is still running"
wait_http "http://127.0.0.1:$ENGINE_PORT/health" 10 || fail "sim-engine answers /health"
wait_http "http://127.0.0.1:$SIGNAL_PORT/ready" 10 || fail "signal-service is ready (connected to the cluster)"
failures=$(curl -sf "http://127.0.0.1:$ENGINE_PORT/metrics" |
  awk '$1 ~ /publish_failures/ { s += $2 } END { print s + 0 }')
log "engine publish failures (final, after retries): $failures"
[ "$failures" = 0 ] || fail "no engine publish failed for good ($failures did)"

if [ "$FAILS" -gt 0 ]; then
  echo "nats_cluster: FAILED ($FAILS check(s)) in $((SECONDS - T0))s; logs in $KEEP" >&2
  exit 1
fi
echo "nats_cluster: passed in $((SECONDS - T0))s ($total samples over $(wc -l <"$WORK/table.txt") ticks, node $VICTIM killed at tick ${TICKS:+$KILL_AT}+)" >&2
exit 0
