/* Private to gateway/orchestrator: the service state shared by its files
 * (orch.c wiring and ingest, api.c ActionService, control.c engine proxy
 * and snapshot, ticks.c tick aggregation, replay.c restart). Everything
 * here is used on the loop thread only, except where a field says so. */
#ifndef MC_ORCH_INTERNAL_H
#define MC_ORCH_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "approval/approval.h"
#include "bus/bus.h"
#include "core/outbox.h"
#include "dbq.h"
#include "feed.h"
#include "http/connect.h"
#include "http/cors.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http/static_files.h"
#include "http_client.h"
#include "orch.h"
#include "sim/v1/simulation.pb-c.h"

#define ORCH_MAX_OPEN_INCIDENTS 1024
#define ORCH_MAX_ENTITIES 65536
#define ORCH_RECENT_ACTIONS 100

/* An incident the dashboard should see in its snapshot. */
typedef struct orch_incident {
    char id[MC_APPROVAL_ID_MAX];
    char target[MC_APPROVAL_TARGET_MAX];
    uint64_t updated_at_tick;
    char *json; /* the latest Incident JSON */
} orch_incident;

/* Per-tick aggregation of sim.metrics (ticks.c). */
typedef struct orch_entity {
    char *id;
    bool is_node;
    double cpu, mem, err, p99, rps, replicas, status;
    bool used;
} orch_entity;

typedef struct orch_ticks {
    bool have_tick;
    uint64_t tick;
    int64_t sim_time_unix_ms;
    char run_id[MC_APPROVAL_RUN_ID_MAX];
    orch_entity *table; /* open addressing, cap slots */
    size_t cap, used;
    /* The last emitted tick's views (JSON arrays), for snapshots. */
    char *last_services_json;
    char *last_nodes_json;
    uint64_t last_tick;
    int64_t last_sim_time_unix_ms;
    uint64_t emitted;
} orch_ticks;

typedef struct mc_orch {
    const mc_orch_config *cfg;
    uv_loop_t *loop;
    mc_bus *bus;
    mc_dbq *dbq;
    mc_http_server *srv;
    mc_http_cors *cors;
    mc_http_static *web;
    mc_http_metrics *metrics;
    mc_feed *feed;
    mc_approval core;
    bool core_ready;
    mc_outbox outbox;
    mc_hc_target engine;
    char token[1024];
    size_t token_len;
    char subject_prefix[64];
    size_t prefix_len;
    mc_bus_consumer *ops_consumer;
    mc_bus_consumer *events_consumer;
    mc_bus_consumer *sim_consumer;
    /* Live messages at or below these stream sequences were handled by the
     * start-up replay and are acked without being fed again. */
    uint64_t ops_replayed_seq;
    uint64_t sim_replayed_seq;
    /* During replay: outbox messages with producer_seq at or below this
     * one are already in the stream and are not published again. */
    bool replaying;
    uint64_t replay_published_seq;

    /* The engine's state and topology as last seen (control.c). */
    Sim__V1__SimulationState *engine_state;
    json_t *topology;
    bool engine_refresh_inflight;
    bool engine_announce; /* send `state` after the next refresh */
    uv_timer_t engine_timer;

    orch_incident incidents[ORCH_MAX_OPEN_INCIDENTS];
    size_t n_incidents;

    orch_ticks ticks;

    uv_timer_t health_timer;
    bool nats_ok;
    bool health_inflight;
    bool free_bus_after_health;
    uv_work_t health_work;

    bool shutting_down;
    int shutdown_steps;

    /* Metrics. */
    mc_http_counter *m_rpc[4];
    mc_http_counter *m_approvals;
    mc_http_counter *m_rejections;
    mc_http_counter *m_commands;
    mc_http_counter *m_decisions;
    mc_http_counter *m_auth_failures;
    mc_http_counter *m_consumed;
    mc_http_counter *m_db_errors;
    mc_http_counter *m_proxy_calls;
    mc_http_counter *m_proxy_unavailable;
    mc_http_counter *m_sse_events;
    mc_http_counter *m_invalid_inputs;
    mc_http_gauge *g_sse_clients;
    mc_http_gauge *g_pending;
    mc_http_gauge *g_db_queue;
    mc_http_gauge *g_acks_pending;
    mc_http_gauge *g_consumer_lag;
} mc_orch;

/* ---- orch.c ---- */

/* The bus subject for a contract subject ("ops.commands" with the prefix). */
void orch_subject(const mc_orch *o, const char *subject, char *out, size_t cap);
/* The contract subject of a consumed one (prefix removed), or NULL when it
 * lacks the prefix. */
const char *orch_unprefix(const mc_orch *o, const char *subject);

/* Re-initializes the core for a new run (empty run id: taken from the
 * first input). */
mc_status orch_core_reset(mc_orch *o, const char *run_id, mc_error *err);

/* After a core call: publishes the outbox, queues a database job per
 * transition (in order), sends the SSE events. proposal_pb is the consumed
 * ops.actions message when the call was on_action (its stamp is stored). A
 * job submitted afterwards runs after all of these. */
typedef struct orch_job orch_job;
typedef void (*orch_job_hook)(orch_job *j);
mc_status orch_after_core(mc_orch *o, const uint8_t *proposal_pb, size_t proposal_len);

/* Auth: true when req may go on. Counts and logs failures (never the
 * token). */
bool orch_auth_ok(mc_orch *o, mc_http_request *req, const char *what);
/* The access_token / bearer check for reads when READ_REQUIRES_TOKEN. */
bool orch_read_auth_ok(mc_orch *o, mc_http_request *req, const char *what);

/* Puts the action's JSON on the feed. */
void orch_feed_action(mc_orch *o, const char *action_id);
/* Remembers an incident for snapshots and sends it on the feed. */
void orch_incident_seen(mc_orch *o, const Ops__V1__Incident *inc, bool send);

/* Percent-decoded value of a query parameter; false when absent. */
bool orch_query_param(const char *query, const char *name, char *out, size_t cap);

/* ---- api.c ---- */
mc_status orch_api_register(mc_orch *o, mc_error *err);

/* A database job (shared by orch.c and api.c). */
enum orch_job_kind {
    ORCH_JOB_BARRIER = 0,
    ORCH_JOB_INSERT_ACTION,
    ORCH_JOB_TRANSITION,
    ORCH_JOB_INCIDENT,
    ORCH_JOB_HISTORY,
    ORCH_JOB_PING
};

struct orch_job {
    mc_dbq_job base; /* first */
    mc_orch *o;
    enum orch_job_kind kind;
    uint8_t *pb; /* packed Action or Incident */
    size_t pb_len;
    char action_id[MC_APPROVAL_ID_MAX];
    int from_status, to_status;
    char actor[MC_APPROVAL_ACTOR_MAX];
    char decided_by[MC_APPROVAL_ACTOR_MAX];
    uint64_t tick;
    char reason[MC_APPROVAL_TEXT_MAX];
    /* Barrier: the batch to ack. */
    mc_bus_batch *batch;
    /* API: the call to answer, and what with. */
    mc_http_connect_call *call;
    bool approve;
    mc_approval_action view;
    /* History query. */
    void *history; /* api.c's request state */
    orch_job_hook hook;
    void *hook_ctx;
};

orch_job *orch_job_new(mc_orch *o, enum orch_job_kind kind);
/* Queues j; on failure runs its hook with status set and frees it. */
void orch_job_submit(mc_orch *o, orch_job *j);

/* ---- control.c ---- */
mc_status orch_control_register(mc_orch *o, mc_error *err);
/* Asks the engine for its state and topology (async); sends `state` when it
 * changed. */
void orch_engine_refresh(mc_orch *o);
/* The snapshot JSON (feed callback). */
mc_status orch_snapshot(void *ctx, char **json, size_t *len);

/* ---- ticks.c ---- */
mc_status orch_ticks_init(orch_ticks *t, mc_error *err);
void orch_ticks_deinit(orch_ticks *t);
/* One message from the ordered SIM consumer. */
void orch_ticks_on_sim(mc_orch *o, const char *subject, const uint8_t *data, size_t len);

/* ---- replay.c ---- */
/* Rebuilds the core from the streams (see orch.h). Blocking; call before
 * the loop runs. */
mc_status orch_replay(mc_orch *o, mc_error *err);

#endif
