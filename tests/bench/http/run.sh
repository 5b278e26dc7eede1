#!/usr/bin/env bash
# HTTP stack throughput and latency with wrk over keep-alive connections:
# a Connect unary call (JSON, POST ~40 bytes, answer ~1 KiB) against a
# static file (~1 KiB, no-cache HTML) served by the same process, 3 runs of
# DURATION seconds each, median requests/s and p99 reported, and the ratio
# Connect ÷ static (the static file is the baseline: the server's bare
# request cost). $1 is the build directory.
set -euo pipefail
build=${1:?usage: run.sh BUILD_DIR}
server="$build/tests/bench/http/bench_http_server"
duration=${DURATION:-4}
conns=${CONNS:-32}
threads=${THREADS:-2}
runs=${RUNS:-3}
command -v wrk >/dev/null || { echo "wrk is not installed (Debian package wrk)"; exit 1; }
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/www"
# ~1 KiB page, like a small exported dashboard page.
{ echo '<!doctype html><html><head><title>bench</title></head><body>'
  for i in $(seq 1 20); do echo "<p>row $i of the static benchmark page.</p>"; done
  echo '</body></html>'; } > "$work/www/index.html"
"$server" "$work/www" > "$work/port" 2> "$work/server.log" &
pid=$!
for _ in $(seq 1 100); do grep -q '^port ' "$work/port" 2>/dev/null && break; sleep 0.05; done
port=$(awk '/^port /{print $2}' "$work/port")
[ -n "$port" ] || { echo "server did not start"; cat "$work/server.log"; exit 1; }
cat > "$work/connect.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"pageSize": 4, "pageToken": "bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connect-Protocol-Version"] = "1"
LUA
base="http://127.0.0.1:$port"
# Sanity: both endpoints answer 200 before measuring.
curl -fsS -o /dev/null "$base/index.html"
curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"pageSize":4}' \
  "$base/ops.v1.ActionService/ListPendingActions"

# measure NAME URL [wrk args...] → prints "rps p99_ms" for each run to $work/NAME
measure() {
  local name=$1 url=$2; shift 2
  : > "$work/$name"
  for _ in $(seq 1 "$runs"); do
    wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$@" "$url" > "$work/$name.out"
    rps=$(awk '/^Requests\/sec:/{print $2}' "$work/$name.out")
    p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/$name.out")
    errs=$(awk '/Non-2xx|Socket errors/{print}' "$work/$name.out")
    [ -z "$errs" ] || echo "  $name: $errs"
    echo "$rps $p99" >> "$work/$name"
  done
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure connect "$base/ops.v1.ActionService/ListPendingActions" -s "$work/connect.lua"
measure static "$base/index.html"
c_rps=$(awk '{print $1}' "$work/connect" | median); c_p99=$(awk '{print $2}' "$work/connect" | median)
s_rps=$(awk '{print $1}' "$work/static" | median); s_p99=$(awk '{print $2}' "$work/static" | median)
echo "http bench: wrk -t$threads -c$conns -d${duration}s, keep-alive, median of $runs runs"
printf '  connect unary (JSON)  %10.0f req/s   p99 %7.2f ms\n' "$c_rps" "$c_p99"
printf '  static file (1 KiB)   %10.0f req/s   p99 %7.2f ms\n' "$s_rps" "$s_p99"
awk -v c="$c_rps" -v s="$s_rps" 'BEGIN { printf "  ratio connect/static  %10.2f\n", c / s }'
kill -TERM "$pid"
wait "$pid" 2>/dev/null || true
pid=
