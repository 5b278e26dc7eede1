/* The simulation engine's pure core: a deterministic state machine that
 * advances a simulated cloud (nodes, services with replicas and a dependency
 * graph) one tick at a time and emits what a tick produced.
 *
 *   step(state, tick, inputs applied at this tick) -> metric snapshot + events
 *
 * Per tick, in order, into the caller's outbox: the sim.metrics chunks
 * (sim.v1.MetricSnapshot, at most chunk_max_samples samples each), the
 * sim.events (sim.v1.SimulationEvent) and one sim.watermark
 * (ops.v1.Watermark{stage=STAGE_ENGINE, tick, message_count} where
 * message_count is the number of metrics and events messages before it).
 * Every message is stamped with the run id (core/ids.h mc_id_run(scenario,
 * seed, reset_count)), the tick, producer "sim-engine" and a producer_seq that
 * grows by one per message of the run, starting at 1.
 *
 * Inputs between steps (commands, injected faults) are queued and take effect
 * at the start of the next step; commands in (issued_at_tick, command_id)
 * order. The core knows nothing of pause, speed or wall time: the shell
 * decides when to call step. No clock, no I/O, no libm transcendental
 * functions; randomness is counter-based (core/rng.h).
 *
 * The struct is caller-allocated (mc_engine_init / mc_engine_deinit); its
 * fields are private, read them through the getters below. */
#ifndef MC_ENGINE_ENGINE_H
#define MC_ENGINE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/outbox.h"
#include "engine/core/scenario.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "status/status.h"

#define MC_ENGINE_PRODUCER "sim-engine"
#define MC_ENGINE_SUBJECT_METRICS "sim.metrics"
#define MC_ENGINE_SUBJECT_EVENTS "sim.events"
#define MC_ENGINE_SUBJECT_WATERMARK "sim.watermark"

#define MC_ENGINE_MAX_NODES 1000
#define MC_ENGINE_MAX_SERVICES 10000
#define MC_ENGINE_DEFAULT_CHUNK_SAMPLES 2000
#define MC_ENGINE_DEFAULT_MAX_EVENTS 4096
#define MC_ENGINE_MAX_PENDING_COMMANDS 4096
#define MC_ENGINE_MAX_FAULTS 1024
#define MC_ENGINE_CMD_ID_MAX 128 /* command and action ids, with the NUL */
#define MC_ENGINE_MSG_MAX 192    /* an event's message, with the NUL */

/* Metric samples per service and per node, in emission order. */
#define MC_ENGINE_SERVICE_METRICS 6 /* cpu_usage memory_usage error_rate p99_latency_ms requests_per_second replicas */
#define MC_ENGINE_NODE_METRICS 3    /* cpu_usage memory_usage node_status */

typedef struct mc_engine_config {
    uint64_t seed;
    /* Size knobs for scale tests: 0 keeps the scenario's own topology;
     * otherwise the scenario's nodes/services are kept and generated ones
     * ("gen-node-0001", "gen-svc-00001", a random DAG of calls) are added,
     * deterministically from the seed, up to this many. Must be at least
     * the scenario's count and at most MC_ENGINE_MAX_NODES/_SERVICES. */
    uint32_t node_count;
    uint32_t service_count;
    /* Samples per sim.metrics message; 0: MC_ENGINE_DEFAULT_CHUNK_SAMPLES. */
    uint32_t chunk_max_samples;
    /* Events kept per tick; further ones are counted and dropped. 0:
     * MC_ENGINE_DEFAULT_MAX_EVENTS. */
    uint32_t max_events_per_tick;
} mc_engine_config;

typedef enum mc_replica_state {
    MC_REPLICA_REMOVED = 0,     /* gone (internal; never reported) */
    MC_REPLICA_STARTING = 1,    /* placed, warming up, not serving */
    MC_REPLICA_READY = 2,       /* serving */
    MC_REPLICA_CRASHED = 3,     /* down after a crash, restarts by itself */
    MC_REPLICA_RESTARTING = 4,  /* down for a RESTART_SERVICE */
    MC_REPLICA_TERMINATING = 5  /* serving until its replacement is ready (drain) */
} mc_replica_state;

typedef enum mc_drain_state { MC_DRAIN_NONE = 0, MC_DRAIN_DRAINING = 1, MC_DRAIN_DRAINED = 2 } mc_drain_state;

typedef enum mc_fault_state { MC_FAULT_PENDING = 0, MC_FAULT_ACTIVE = 1, MC_FAULT_ENDED = 2 } mc_fault_state;

/* ---- private state (read through the getters) ---- */

typedef struct mc_engine_node {
    char id[MC_SCENARIO_ID_MAX];
    uint64_t key; /* rng entity: hash of the id */
    double cpu_cores, memory_mb;
    uint32_t crash_faults; /* active node_crash faults; > 0 means down */
    mc_drain_state drain;
    double degradation; /* from active faults, 0..1 */
    double hog;         /* share of the cores burnt by cpu_hog faults */
    int status;         /* common.v1.NodeStatus as last reported */
    double reserved_cpu, reserved_mem; /* limits of the replicas placed on it */
    uint32_t replica_count;
    double cap_factor; /* replicas' share of their CPU limit this tick */
    double used_cpu, used_mem, cpu_pct, mem_pct;
} mc_engine_node;

typedef struct mc_engine_service {
    char id[MC_SCENARIO_ID_MAX];
    uint64_t key;
    double external_rps, cpu_ms, cpu_limit, mem_baseline, mem_limit, base_latency_ms, timeout_ms;
    uint32_t max_replicas, warmup_ticks, restart_ticks;
    uint32_t dep_first, dep_count; /* into mc_engine.dep_target / dep_ratio */
    uint32_t desired;              /* replicas it should have */
    uint32_t rep_first, rep_count; /* its replicas: replicas[rep_first .. +rep_count) */
    uint64_t restart_until;        /* a restart is in progress before this tick */
    /* Effects of active faults this tick. */
    double f_error, f_latency_ms, f_leak, f_hog, f_spike;
    /* Results of the last tick. */
    double offered_rps;
    uint64_t offered, served, failed, rejected;
    double err_frac, p99_ms, cpu_pct, mem_pct;
    uint32_t ready;
    int status; /* common.v1.ServiceStatus as last reported */
    uint32_t announced_desired; /* desired replicas as last reported in an event */
} mc_engine_service;

typedef struct mc_engine_replica {
    uint64_t id;
    uint32_t service, node;
    mc_replica_state state;
    uint64_t until;      /* the tick its current state ends at (not READY) */
    uint64_t restart_at; /* a pending rolling restart begins at this tick (0: none) */
    double weight;       /* share of its service's load, before normalization */
    double leak_mb, mem_mb, cpu_pct, rho;
} mc_engine_replica;

typedef struct mc_engine_fault {
    char id[MC_SCENARIO_ID_MAX];
    int type; /* Sim__V1__FaultType */
    char target_id[MC_SCENARIO_ID_MAX];
    mc_target_kind target_kind;
    uint32_t target;
    double intensity;
    uint32_t duration_ticks;
    uint64_t start_tick;
    mc_fault_state state;
    uint64_t ended_at;
} mc_engine_fault;

typedef struct mc_engine_command {
    char command_id[MC_ENGINE_CMD_ID_MAX];
    char action_id[MC_ENGINE_CMD_ID_MAX];
    int type; /* Common__V1__ActionType */
    char target_id[MC_SCENARIO_ID_MAX];
    uint64_t issued_at_tick;
    uint64_t arrival; /* last tie-break: the order apply_command saw them */
} mc_engine_command;

typedef struct mc_engine_event {
    int kind; /* Sim__V1__SimulationEventKind */
    char target_id[MC_SCENARIO_ID_MAX];
    char message[MC_ENGINE_MSG_MAX];
    int has_fault;
    mc_engine_fault fault;
    char command_id[MC_ENGINE_CMD_ID_MAX];
    char action_id[MC_ENGINE_CMD_ID_MAX];
    uint64_t applied_at_tick;
    int node_status, service_status;
    /* Service events carry the replica counts as attributes "replicas" and
     * "max_replicas", so the agent knows the scaling bounds. */
    int has_replicas;
    uint32_t replicas, max_replicas;
} mc_engine_event;

typedef struct mc_engine {
    mc_scenario sc; /* own copy, for reset */
    mc_engine_config cfg;
    uint64_t seed, reset_count, tick, next_seq, next_replica_id, inject_count, command_arrivals;
    char run_id[24];
    size_t alloc_bytes; /* what the engine allocated, for the benchmark */

    mc_engine_node *nodes;
    size_t n_nodes;
    mc_engine_service *services; /* sorted by id */
    size_t n_services;
    uint32_t *dep_target;
    double *dep_ratio;
    size_t n_deps;
    uint32_t *order;   /* services, dependencies first (ties by id) */
    double *incoming;  /* load pass scratch */
    uint32_t *node_scratch;

    mc_engine_replica *replicas; /* sorted by (service, id) */
    size_t n_replicas, cap_replicas;

    mc_engine_fault *faults;
    size_t n_faults;
    mc_engine_command *commands;
    size_t n_commands;
    uint32_t *cmd_order, *cmd_scratch;
    mc_engine_event *events;
    size_t n_events;
    uint64_t events_dropped; /* over the whole run */

    Sim__V1__MetricSample *samples;
    Sim__V1__MetricSample **sample_ptrs;
    size_t n_samples;
} mc_engine;

/* ---- lifecycle ---- */

/* Builds the world from a parsed scenario (copied; the caller keeps sc) and
 * cfg. Fails with a message when the topology cannot be placed (a service's
 * replicas do not fit on the nodes) or a knob is out of range. On failure *e
 * needs no deinit. */
mc_status mc_engine_init(mc_engine *e, const mc_scenario *sc, const mc_engine_config *cfg,
                         mc_error *err);
/* Frees everything. NULL-safe; safe after a failed init. */
void mc_engine_deinit(mc_engine *e);
/* Restarts the scenario from tick 0 with the same topology knobs: seed 0
 * keeps the current seed; the reset count grows, so the run id changes.
 * Queued commands and injected faults are dropped. */
mc_status mc_engine_reset(mc_engine *e, uint64_t seed, mc_error *err);

/* ---- inputs ---- */

/* Runs the next tick (tick() + 1): applies queued commands, starts and ends
 * faults, simulates, and appends the tick's messages to out. The outbox
 * must have room for mc_engine_max_messages_per_tick(e) more messages, or
 * MC_ERR_LIMIT is returned before anything changes. */
mc_status mc_engine_step(mc_engine *e, mc_outbox *out, mc_error *err);

/* Queues a command for the start of the next step. The engine copies what it
 * needs. MC_ERR_INVALID for an id longer than MC_ENGINE_CMD_ID_MAX - 1;
 * MC_ERR_LIMIT when MC_ENGINE_MAX_PENDING_COMMANDS are already queued.
 * Unknown targets and impossible actions are not errors here: they become
 * COMMAND_REFUSED events when applied. */
mc_status mc_engine_apply_command(mc_engine *e, const Ops__V1__ApplyActionCommand *cmd,
                                  mc_error *err);

/* Schedules a fault. An empty fault_id gets a derived one; start_tick 0 or
 * not after the current tick means the next tick. scheduled (may be NULL)
 * receives the fault as scheduled; its strings point into the engine and stay
 * valid until the next step, reset or deinit. MC_ERR_INVALID for an unknown
 * type or target, a target of the wrong kind or an intensity out of range;
 * MC_ERR_LIMIT when the fault table is full. */
mc_status mc_engine_inject_fault(mc_engine *e, const Sim__V1__Fault *fault,
                                 Sim__V1__Fault *scheduled, mc_error *err);

/* ---- state for GetState ---- */

uint64_t mc_engine_tick(const mc_engine *e); /* last completed tick; 0 before the first step */
uint64_t mc_engine_seed(const mc_engine *e);
uint64_t mc_engine_reset_count(const mc_engine *e);
const char *mc_engine_scenario_name(const mc_engine *e);
const char *mc_engine_run_id(const mc_engine *e);
int64_t mc_engine_sim_time_unix_ms(const mc_engine *e); /* of the last completed tick */
uint32_t mc_engine_node_count(const mc_engine *e);
uint32_t mc_engine_service_count(const mc_engine *e);
/* Upper bound of the messages one step appends. */
size_t mc_engine_max_messages_per_tick(const mc_engine *e);
/* Events dropped over the run because a tick had more than
 * max_events_per_tick. */
uint64_t mc_engine_events_dropped(const mc_engine *e);
/* Bytes the engine has allocated (its own accounting, for benchmarks). */
size_t mc_engine_memory_bytes(const mc_engine *e);

/* Faults known to the engine (pending, active and recently ended), in the
 * order they were scheduled. fault_get fills out (strings point into the
 * engine, valid until the next step, reset or deinit) and *state. */
size_t mc_engine_fault_count(const mc_engine *e);
mc_status mc_engine_fault_get(const mc_engine *e, size_t i, Sim__V1__Fault *out,
                              mc_fault_state *state);
/* The number of active faults (what GetState lists). */
size_t mc_engine_active_fault_count(const mc_engine *e);

/* ---- per-entity getters (tests, dashboards) ---- */

typedef struct mc_engine_service_view {
    const char *id;
    int status; /* common.v1.ServiceStatus */
    uint32_t desired_replicas, ready_replicas, live_replicas, max_replicas;
    double offered_rps, cpu_usage, memory_usage, error_rate, p99_latency_ms;
    uint64_t offered, served, failed; /* requests of the last tick: served + failed == offered */
    int restarting;
} mc_engine_service_view;

typedef struct mc_engine_node_view {
    const char *id;
    int status; /* common.v1.NodeStatus */
    double cpu_cores, memory_mb, cpu_usage, memory_usage;
    uint32_t replicas; /* placed on it, any state but removed */
} mc_engine_node_view;

typedef struct mc_engine_replica_view {
    uint64_t id;
    uint32_t service, node; /* indices */
    mc_replica_state state;
    double weight, memory_mb, cpu_usage;
} mc_engine_replica_view;

/* Index of the service/node with this id (services and nodes are sorted by
 * id), or MC_ERR_NOT_FOUND. */
mc_status mc_engine_service_find(const mc_engine *e, const char *id, uint32_t *index);
mc_status mc_engine_node_find(const mc_engine *e, const char *id, uint32_t *index);
mc_status mc_engine_service_get(const mc_engine *e, uint32_t index, mc_engine_service_view *out);
mc_status mc_engine_node_get(const mc_engine *e, uint32_t index, mc_engine_node_view *out);
size_t mc_engine_replica_count(const mc_engine *e);
mc_status mc_engine_replica_get(const mc_engine *e, size_t i, mc_engine_replica_view *out);

/* BLAKE2b-256 of a canonical encoding of the whole state. */
void mc_engine_digest(const mc_engine *e, uint8_t out[MC_DIGEST_BYTES]);

/* The daily-pattern sine approximation (Bhaskara I), exposed for tests:
 * sin(2 pi phase) for any phase, error below 0.002, no libm. */
double mc_engine_sin_turns(double phase);

#endif
