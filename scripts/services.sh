# Functions that start and stop the private nats-server and PostgreSQL used
# by scripts/with-services (tests) and scripts/run (make run). Sourced, not
# run. Each start function exports the variables clients need.

mc_log() { echo "services: $*" >&2; }

# mc_nats_start DIR [PORT]: JetStream store under DIR; PORT 0 or empty picks
# a free port (nats-server's -1), read back from its ports file.
mc_nats_start() {
  local dir=$1 port=${2:-0}
  mkdir -p "$dir/js" "$dir/ports"
  rm -f "$dir"/ports/*.ports
  local p=$port
  [ "$p" = 0 ] && p=-1
  nats-server -js -a 127.0.0.1 -p "$p" -sd "$dir/js" -ports_file_dir "$dir/ports" \
    -l "$dir/nats.log" -P "$dir/nats.pid" --http_port 0 >/dev/null 2>&1 &
  local pid=$!
  local url=""
  for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      mc_log "nats-server exited at start; its log:"; tail -20 "$dir/nats.log" >&2; return 1
    fi
    local f
    f=$(ls "$dir"/ports/*.ports 2>/dev/null | head -1 || true)
    if [ -n "$f" ]; then
      url=$(grep -o 'nats://[^"]*' "$f" | head -1 || true)
      [ -n "$url" ] && break
    fi
    sleep 0.05
  done
  [ -n "$url" ] || { mc_log "nats-server did not report its port"; return 1; }
  echo "$pid" > "$dir/nats.pid"
  export NATS_URL=$url
  mc_log "nats-server (JetStream) at $NATS_URL, pid $pid"
}

mc_nats_stop() {
  local dir=$1
  [ -f "$dir/nats.pid" ] || return 0
  local pid
  pid=$(cat "$dir/nats.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/nats.pid"
}

mc_pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  mc_log "PostgreSQL server binaries not found (install postgresql-15: scripts/setup)"; return 1
}

# Runs a PostgreSQL binary as the postgres user when we are root (initdb and
# postgres refuse to run as root), as ourselves otherwise.
mc_pg_as() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# mc_pg_start DIR [PORT]: a cluster in DIR/data (created on first use) with
# a socket in DIR/sock; PORT (default 5432) is also the TCP port on
# 127.0.0.1 when MC_PG_TCP=1. Creates role and database "microcloud".
mc_pg_start() {
  local dir=$1 port=${2:-5432}
  local bin
  bin=$(mc_pg_bindir)
  mkdir -p "$dir"
  chmod 755 "$dir"
  # A Unix socket path is limited to 107 bytes: when the folder is deep, the
  # socket goes to a short private folder under /tmp instead.
  local sock="$dir/sock"
  if [ ${#sock} -gt 80 ]; then
    sock=$(cat "$dir/sockdir" 2>/dev/null || true)
    [ -n "$sock" ] && [ -d "$sock" ] || sock=$(mktemp -d /tmp/mc-pgsock.XXXXXX)
    echo "$sock" > "$dir/sockdir"
  fi
  mkdir -p "$sock"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres:postgres "$dir" "$sock"
    # As root the server runs as postgres, which must be able to reach DIR.
    if ! runuser -u postgres -- test -x "$dir"; then
      mc_log "user postgres cannot reach $dir (a parent folder is private, e.g. /root);"
      mc_log "put the data elsewhere: MC_RUN_DIR=/var/tmp/microcloud make run"
      return 1
    fi
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    mc_pg_as "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { mc_log "initdb failed:"; tail -20 "$dir/initdb.log" >&2; return 1; }
  fi
  local listen="''"
  [ "${MC_PG_TCP:-0}" = 1 ] && listen=127.0.0.1
  mc_pg_as "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -k $sock -c listen_addresses=$listen -c fsync=${MC_PG_FSYNC:-on} -c max_connections=200" \
    start >/dev/null || { mc_log "PostgreSQL did not start:"; tail -20 "$dir/postgres.log" >&2; return 1; }
  echo "$port" > "$dir/port"
  local psql=("$bin/psql" -X -q -h "$sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1)
  if [ "$("${psql[@]}" -tAc "select 1 from pg_roles where rolname='microcloud'")" != 1 ]; then
    "${psql[@]}" -c "create role microcloud login superuser password 'microcloud'"
  fi
  if [ "$("${psql[@]}" -tAc "select 1 from pg_database where datname='microcloud'")" != 1 ]; then
    "${psql[@]}" -c "create database microcloud owner microcloud"
  fi
  if [ "${MC_PG_TCP:-0}" = 1 ]; then
    export DB_HOST=127.0.0.1
    export DATABASE_URL="postgresql://microcloud:microcloud@127.0.0.1:$port/microcloud"
  else
    export DB_HOST="$sock"
    export DATABASE_URL="postgresql://microcloud:microcloud@/microcloud?host=$sock&port=$port"
  fi
  export DB_PORT="$port" DB_NAME=microcloud DB_USER=microcloud DB_PASSWORD=microcloud
  export MC_PG_BINDIR="$bin" MC_PG_DATADIR="$dir/data" MC_PG_SOCKDIR="$sock"
  mc_log "PostgreSQL at $DB_HOST port $port (database microcloud)"
}

mc_pg_stop() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] || return 0
  local bin
  bin=$(mc_pg_bindir) || return 0
  mc_pg_as "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
  if [ -f "$dir/sockdir" ]; then rm -rf "$(cat "$dir/sockdir")" "$dir/sockdir"; fi
}
