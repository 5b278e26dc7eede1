# Functions that start and stop Microcloud's four services against a NATS
# and PostgreSQL given by NATS_URL and DATABASE_URL (or DB_*). Sourced by
# scripts/run (make run) and by the end-to-end tests. Not run directly.
#
#   mc_stack_start BIN_DIR LOG_DIR   # starts what is built, waits for ready
#   mc_stack_stop                    # SIGTERM, then SIGKILL after 10 s
#
# Ports: SIM_ENGINE_PORT (8080), ORCHESTRATOR_PORT (8081), SIGNAL_ADMIN_PORT
# (9101), AGENT_ADMIN_PORT (9102); MC_STACK_FREE_PORTS=1 picks free ones.
# Every other setting passes through the environment (SCENARIO, SEED,
# SIM_MODE, SPEED, APPROVAL_MODE, API_TOKEN/API_TOKEN_FILE, TRACE_DIR, ...).

MC_STACK_PIDS=()
MC_STACK_NAMES=()

mc_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A free loopback port from a range unlikely to clash with well-known ones.
mc_free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((15000 + RANDOM % 17000)) # below the kernel's ephemeral range (32768+)
    mc_port_busy "$p" || { echo "$p"; return 0; }
  done
  return 1
}

mc_wait_http() { # URL TIMEOUT_S NAME PID
  local url=$1 timeout=$2 name=$3 pid=$4
  local deadline=$((SECONDS + timeout))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "stack: $name exited during start-up" >&2
      return 1
    fi
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "stack: $name not ready at $url after ${timeout}s" >&2
  return 1
}

mc_stack_start() {
  local bin=$1 logs=$2
  mkdir -p "$logs"
  if [ "${MC_STACK_FREE_PORTS:-0}" = 1 ]; then
    SIM_ENGINE_PORT=$(mc_free_port); ORCHESTRATOR_PORT=$(mc_free_port)
    SIGNAL_ADMIN_PORT=$(mc_free_port); AGENT_ADMIN_PORT=$(mc_free_port)
  fi
  export SIM_ENGINE_PORT=${SIM_ENGINE_PORT:-8080} ORCHESTRATOR_PORT=${ORCHESTRATOR_PORT:-8081}
  export SIGNAL_ADMIN_PORT=${SIGNAL_ADMIN_PORT:-9101} AGENT_ADMIN_PORT=${AGENT_ADMIN_PORT:-9102}
  local -a names=(sim-engine signal-service agent-service orchestrator)
  local -a paths=("$bin/engine/sim-engine" "$bin/pipeline/signal-service" "$bin/pipeline/agent-service" "$bin/gateway/orchestrator/orchestrator")
  local -a ready=("http://127.0.0.1:$SIM_ENGINE_PORT/health" "http://127.0.0.1:$SIGNAL_ADMIN_PORT/ready"
                  "http://127.0.0.1:$AGENT_ADMIN_PORT/ready" "http://127.0.0.1:$ORCHESTRATOR_PORT/ready")
  local -a envs=("ADDR=127.0.0.1:$SIM_ENGINE_PORT" "ADMIN_ADDR=127.0.0.1:$SIGNAL_ADMIN_PORT"
                 "ADMIN_ADDR=127.0.0.1:$AGENT_ADMIN_PORT"
                 "ADDR=127.0.0.1:$ORCHESTRATOR_PORT SIM_ENGINE_URL=http://127.0.0.1:$SIM_ENGINE_PORT")
  local i
  for i in 0 1 2 3; do
    if [ ! -x "${paths[$i]}" ]; then
      echo "stack: ${names[$i]} is not built (${paths[$i]}); skipped" >&2
      continue
    fi
    # shellcheck disable=SC2086
    env ${envs[$i]} "${paths[$i]}" >>"$logs/${names[$i]}.log" 2>&1 &
    MC_STACK_PIDS+=($!)
    MC_STACK_NAMES+=("${names[$i]}")
    mc_wait_http "${ready[$i]}" "${MC_STACK_READY_TIMEOUT:-60}" "${names[$i]}" $! || {
      echo "stack: last lines of $logs/${names[$i]}.log:" >&2
      tail -20 "$logs/${names[$i]}.log" >&2
      return 1
    }
    echo "stack: ${names[$i]} ready (pid ${MC_STACK_PIDS[-1]}, log $logs/${names[$i]}.log)" >&2
  done
}

mc_stack_stop() {
  local i
  # Stop in reverse order of start: the orchestrator first, the engine last.
  for ((i=${#MC_STACK_PIDS[@]}-1; i>=0; i--)); do
    kill -TERM "${MC_STACK_PIDS[$i]}" 2>/dev/null || true
  done
  for ((i=${#MC_STACK_PIDS[@]}-1; i>=0; i--)); do
    local p=${MC_STACK_PIDS[$i]}
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      echo "stack: ${MC_STACK_NAMES[$i]} did not stop in 10 s; killing it" >&2
      kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  MC_STACK_PIDS=()
  MC_STACK_NAMES=()
}
