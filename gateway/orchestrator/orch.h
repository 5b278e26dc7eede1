/* The orchestrator service: the shell around the approval core
 * (gateway/approval). It holds no decision logic of its own; it feeds the
 * core from the bus and the API, publishes what the core emits, stores every
 * transition, forwards simulation control to the engine and feeds the
 * dashboard's event stream.
 *
 *   ops.actions, ops.incidents, ops.watermark.agent  (durable pull consumer
 *       "<CONSUMER_NAME>-ops" on OPS)  -> core -> ops.decisions,
 *       ops.commands, ops.watermark.orchestrator, actions + action_history,
 *       SSE `action` / `decision` / `incident`
 *   sim.events (durable pull consumer "<CONSUMER_NAME>-events" on SIM)
 *       -> core (COMMAND_APPLIED / COMMAND_REFUSED)
 *   sim.> (ordered consumer, no acks) -> SSE `tick` (sim.metrics aggregated
 *       per tick, emitted on the engine watermark) and `event`
 *   POST /ops.v1.ActionService/{ListPendingActions,ApproveAction,
 *       RejectAction,GetActionHistory} (Connect)
 *   POST /sim.v1.SimulationService/<Method> -> SIM_ENGINE_URL (forwarded)
 *   GET /api/stream (SSE), /health, /ready, /metrics, and WEB_DIR at /
 *
 * Consumed messages are acked once their durable work is done: the
 * publishes are handed to the bus (which retries them) and the database
 * jobs they caused have run.
 *
 * Restart. The core's state is rebuilt at start by replaying the current
 * run from the OPS stream (and the engine's command events from SIM), the
 * way the replay harness re-drives the core: proposals, incidents, agent
 * watermarks and the recorded human decisions in order. This, and not the
 * actions table, is the source because the core must also continue its
 * producer sequence (message ids are derived from it, so restarting at 1
 * would make JetStream drop the new decisions as duplicates) and keep
 * APPROVED actions waiting for the engine. Messages the replay re-emits
 * that are already in the stream are not published again. The live
 * consumers then skip every message at or below the stream positions the
 * replay covered.
 *
 * Tokens. API_TOKEN_FILE wins over API_TOKEN when both are set (a file is
 * the safer way to hand over a secret); a file that is missing, unreadable
 * or empty stops the start. With no token at all every mutating call is
 * refused (401): the check fails closed. */
#ifndef MC_ORCH_ORCH_H
#define MC_ORCH_ORCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "status/status.h"

typedef struct mc_orch_config {
    mc_nats_config nats;
    mc_db_config db;
    mc_log_config log;
    mc_addr addr;
    const char *sim_engine_url;
    uint64_t sim_engine_timeout_ms;
    const char *api_token;
    const char *api_token_file;
    bool read_requires_token;
    const char *cors_origins;
    int approval_mode; /* mc_approval_mode */
    uint64_t action_expiry_ticks;
    const char *web_dir;
    const char *bus_stream_prefix;
    uint64_t bus_stream_replicas;
    const char *bus_subject_prefix;
    const char *consumer_name;
    uint64_t tick_max_services;
    uint64_t sse_history;
    uint64_t sse_max_clients;
    uint64_t sse_max_unsent_bytes;
    uint64_t http_send_buffer_bytes;
    uint64_t shutdown_timeout_ms;
} mc_orch_config;

/* The environment variables (for mc_config_load_or_exit and --help). */
const struct mc_config_var *mc_orch_config_vars(size_t *n);

/* Runs the service until SIGINT or SIGTERM, then shuts down gracefully
 * (stop consuming, finish requests in flight, flush publishes, close).
 * Returns MC_OK after a clean shutdown; a start-up failure returns its
 * error with err saying what. */
mc_status mc_orch_run(const mc_orch_config *cfg, mc_error *err);

#endif
