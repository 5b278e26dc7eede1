#!/usr/bin/env bash
# Benchmark of the microcloud CLI (not a test):
#   1. `replay verify --component all` throughput (ticks/s and samples/s) on a
#      trace of SERVICES services and TICKS ticks recorded by `microcloud sim`,
#      next to a raw read-and-decode pass over the same file
#      (`replay verify --component none`: integrity, framing and protobuf
#      decoding of every record, no cores), and their ratio;
#   2. `microcloud sim` simulated ticks per wall second at 100 and SERVICES
#      services, without a trace and with one.
# Medians of RUNS runs (the machine is shared: compare the ratio, not the
# absolute figures). Use a Release build for numbers worth quoting.
#
#   tests/bench/replay_cli/run.sh BUILD_DIR        (env: SERVICES=1000 TICKS=3600 NODES=100 RUNS=3 KEEP=0)
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
services=${SERVICES:-1000}
ticks=${TICKS:-3600}
nodes=${NODES:-100}
runs=${RUNS:-3}
sim_ticks=${SIM_TICKS:-300}
cmake --build "$build" --target microcloud -j2 >/dev/null
bin="$build/replay/microcloud"
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
export MC_SCENARIO_DIR="$src/engine/scenarios"
tmp=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", (s > 0) ? n / s : 0}'; }

trace="$tmp/bench.mctrace"
echo "== recording $ticks ticks of normal with $services services on $nodes nodes ($bin)"
t0=$(now)
"$bin" sim --scenario normal --seed 1 --nodes "$nodes" --services "$services" --ticks "$ticks" \
  --start-time 0 --trace "$trace" --quiet > /dev/null
t1=$(now)
rec_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')
size=$(stat -c %s "$trace")
echo "trace: $size bytes, recorded in ${rec_s}s ($(rate "$ticks" "$rec_s") ticks/s with trace writing)"

info=$("$bin" replay verify "$trace" --component none --json --quiet)
samples=$(echo "$info" | jq .samples)
vticks=$(echo "$info" | jq .ticks)

all_times=(); raw_times=()
for i in $(seq "$runs"); do
  t0=$(now); "$bin" replay verify "$trace" --component none --quiet > /dev/null; t1=$(now)
  raw_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
  t0=$(now); "$bin" replay verify "$trace" --component all --quiet > "$tmp/v.txt" || {
    echo "verify failed:"; cat "$tmp/v.txt"; exit 1; }
  t1=$(now)
  all_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
done
raw=$(printf '%s\n' "${raw_times[@]}" | median)
all=$(printf '%s\n' "${all_times[@]}" | median)
echo
echo "== replay verify over $vticks ticks, $samples samples (median of $runs)"
printf '%-34s %8.3f s %10s ticks/s %12s samples/s\n' "raw read + decode (--component none)" "$raw" \
  "$(rate "$vticks" "$raw")" "$(rate "$samples" "$raw")"
printf '%-34s %8.3f s %10s ticks/s %12s samples/s\n' "re-drive all four cores" "$all" \
  "$(rate "$vticks" "$all")" "$(rate "$samples" "$all")"
awk -v a="$all" -v r="$raw" 'BEGIN {printf "ratio verify-all / raw read-and-decode: %.2fx\n", a / r}'

echo
echo "== microcloud sim, $sim_ticks ticks (median of $runs)"
for n in 100 "$services"; do
  nn=$(( n / 10 > 10 ? n / 10 : 10 ))
  for mode in none trace; do
    times=()
    for i in $(seq "$runs"); do
      args=(sim --scenario normal --seed 1 --nodes "$nn" --services "$n" --ticks "$sim_ticks" --quiet)
      [ "$mode" = trace ] && args+=(--trace "$tmp/sim.mctrace" --force --start-time 0)
      t0=$(now); "$bin" "${args[@]}" > /dev/null; t1=$(now)
      times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')")
    done
    m=$(printf '%s\n' "${times[@]}" | median)
    printf '%5d services, %4d nodes, %-9s %8.3f s  %8s simulated ticks per wall second\n' "$n" "$nn" \
      "$([ "$mode" = trace ] && echo "traced" || echo "no trace")" "$m" "$(rate "$sim_ticks" "$m")"
  done
done
