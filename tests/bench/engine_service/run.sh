#!/usr/bin/env bash
# sim-engine ticks/s at max speed in realtime mode, publishing every tick to
# JetStream, next to the engine core alone (an in-process mc_engine_step
# loop with the same scenario and knobs), as a ratio. Median of RUNS runs of
# SECONDS each, per topology size. Then lockstep at max speed against a
# stand-in pipeline that answers each engine watermark at once
# (bench_engine_service_echo): the round-trip cost of lockstep itself.
#
#   tests/bench/engine_service/run.sh BUILD_DIR
#
# Needs a nats-server: uses NATS_URL when set, otherwise runs itself under
# scripts/with-services. Use a Release or Debug build (sanitizers distort).
set -euo pipefail
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../../.." && pwd)
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-4}

if [[ -z "${NATS_URL:-}" ]]; then
  exec "$root/scripts/with-services" -- "$0" "$build"
fi

cmake --build "$build" --target sim-engine bench_engine_service_core bench_engine_service_echo -j2 >/dev/null
engine="$build/engine/sim-engine"
core="$build/tests/bench/engine_service/bench_engine_service_core"
echo_bin="$build/tests/bench/engine_service/bench_engine_service_echo"
scenario_dir="$root/engine/scenarios"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rpc() { curl -s -X POST -H 'Content-Type: application/json' -d "${3:-{\}}" "http://127.0.0.1:$1/sim.v1.SimulationService/$2"; }
tick_of() { sed -n 's/.*"tick":"\{0,1\}\([0-9]*\).*/\1/p'; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# One service run: ticks/s between two GetState calls SECONDS_PER_RUN apart.
service_run() { # nodes services chunk tag [mode] [trace_dir]
  local port pid t0 t1 s0 s1 epid=""
  local mode=${5:-realtime} trace_dir=${6:-}
  port=$(free_port)
  if [[ "$mode" == lockstep ]]; then
    env -i PATH="$PATH" NATS_URL="$NATS_URL" BUS_STREAM_PREFIX="BENCH$4_" BUS_SUBJECT_PREFIX="bench$4." \
      "$echo_bin" $((SECONDS_PER_RUN + 3)) >/dev/null &
    epid=$!
  fi
  env -i PATH="$PATH" NATS_URL="$NATS_URL" ADDR="127.0.0.1:$port" SIM_MODE="$mode" SPEED=max \
    AUTOSTART=false SCENARIO=cascade_failure SCENARIO_DIR="$scenario_dir" LOG_LEVEL=warn TRACE_DIR="$trace_dir" \
    TOPOLOGY_NODES="$1" TOPOLOGY_SERVICES="$2" METRICS_CHUNK_SAMPLES="$3" \
    BUS_STREAM_PREFIX="BENCH$4_" BUS_SUBJECT_PREFIX="bench$4." "$engine" 2>"/tmp/sim-engine-bench-$4.log" &
  pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.05; done
  rpc "$port" Play >/dev/null
  sleep 1 # warm up: streams, consumers, first ticks
  s0=$(date +%s.%N); t0=$(rpc "$port" GetState | tick_of)
  sleep "$SECONDS_PER_RUN"
  s1=$(date +%s.%N); t1=$(rpc "$port" GetState | tick_of)
  kill -TERM "$pid"; wait "$pid" || true
  [[ -n "$epid" ]] && { wait "$epid" || true; }
  awk -v a="$t0" -v b="$t1" -v x="$s0" -v y="$s1" 'BEGIN {printf "%.1f\n", (b - a) / (y - x)}'
}

printf '%-28s %14s %14s %8s\n' "topology" "service t/s" "core t/s" "ratio"
n=0
for size in "0 0 2000" "100 1000 2000"; do
  read -r nodes services chunk <<<"$size"
  svc=(); cor=()
  for _ in $(seq "$RUNS"); do
    n=$((n + 1))
    svc+=("$(service_run "$nodes" "$services" "$chunk" "$$x$n")")
    cor+=("$("$core" "$scenario_dir/cascade_failure.scenario" "$SECONDS_PER_RUN" "$nodes" "$services" "$chunk" | awk '{print $3}')")
  done
  s=$(printf '%s\n' "${svc[@]}" | median)
  c=$(printf '%s\n' "${cor[@]}" | median)
  [[ "$services" == 0 ]] && c0=$c
  label="cascade_failure"
  [[ "$services" != 0 ]] && label="cascade_failure ${nodes}n/${services}s"
  printf '%-28s %14s %14s %8s\n' "$label" "$s" "$c" "$(awk -v s="$s" -v c="$c" 'BEGIN {printf "%.3f", s / c}')"
done
lock=()
for _ in $(seq "$RUNS"); do
  n=$((n + 1))
  lock+=("$(service_run 0 0 2000 "$$x$n" lockstep)")
done
l=$(printf '%s\n' "${lock[@]}" | median)
printf '%-28s %14s %14s %8s\n' "cascade_failure lockstep" "$l" "$c0" "$(awk -v s="$l" -v c="$c0" 'BEGIN {printf "%.3f", s / c}')"
# Recording on: the engine subscribes to every subject of the run and writes
# the trace; the ratio against the same lockstep run without recording is
# what recording costs the live pipeline.
tdir=$(mktemp -d)
rec=()
for _ in $(seq "$RUNS"); do
  n=$((n + 1))
  rec+=("$(service_run 0 0 2000 "$$x$n" lockstep "$tdir")")
done
rm -rf "$tdir"
r=$(printf '%s\n' "${rec[@]}" | median)
printf '%-28s %14s %14s %8s\n' "lockstep, recording on" "$r" "$l" "$(awk -v s="$r" -v c="$l" 'BEGIN {printf "%.3f", s / c}')"
echo "(median of $RUNS runs of ${SECONDS_PER_RUN}s; SPEED=max, publishing to JetStream; ratio = service / core alone;"
echo " lockstep: against an echo pipeline answering each engine watermark with the three stage watermarks;"
echo " recording on: the same lockstep run with TRACE_DIR set, ratio = recording on / off)"
