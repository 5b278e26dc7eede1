#!/usr/bin/env bash
# Starts private services with scripts/with-services (ignoring any the test
# run already has), runs the smoke binary inside, and checks that both
# servers and their folder are gone afterwards, also when the command fails.
set -u
root=$1 smoke=$2
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
fail() { echo "services lifecycle: $*"; exit 1; }

run() {
  env -u NATS_URL -u DATABASE_URL -u DB_HOST -u DB_PORT "$root/scripts/with-services" -- bash -c '
    echo "$NATS_URL" > "'"$state"'/nats_url"
    echo "$DB_HOST" > "'"$state"'/db_host"
    cat "$MC_SERVICES_DIR/nats/nats.pid" > "'"$state"'/nats_pid"
    '"$1"
}

run "\"$smoke\"" || fail "smoke test failed inside with-services"
host=$(cat "$state/db_host")
pid=$(head -1 "$state/nats_pid")
[ -n "$pid" ] || fail "could not find the private nats-server"
kill -0 "$pid" 2>/dev/null && fail "nats-server $pid still running after with-services returned"
[ -e "$host" ] && fail "PostgreSQL socket folder $host still exists"
pgrep -f "postgres -D ${host%/sock}/data" >/dev/null && fail "PostgreSQL still running"

# A failing command: its exit status comes through and the servers still stop.
run "\"$smoke\" && exit 7"
rc=$?
[ $rc -eq 7 ] || fail "expected the command's exit status 7, got $rc"
pid=$(head -1 "$state/nats_pid")
kill -0 "$pid" 2>/dev/null && fail "nats-server still running after a failing command"
host=$(cat "$state/db_host")
[ -e "$host" ] && fail "PostgreSQL folder left after a failing command"
echo "services lifecycle: ok (started, used, stopped; exit status passed through)"
