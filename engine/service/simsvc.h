/* The sim-engine shell: the engine core (engine/core) on one libuv loop with
 * NATS JetStream (lib/bus), the SimulationService control API over Connect
 * (lib/http), Prometheus metrics and live trace recording.
 *
 * Per tick: mc_engine_step, then the outbox (sim.metrics chunks, sim.events,
 * sim.watermark) is published in order with its stamps; a publish refused
 * for backpressure (MC_ERR_LIMIT) is retried from a timer, never dropped, and
 * the next tick waits until the whole outbox is handed over.
 *
 * Inputs come from one durable pull consumer over the whole OPS stream, so
 * the orchestrator's commands and its watermark arrive in stream order: a
 * command the orchestrator published before its watermark for tick N is
 * handed to the core before the engine may start tick N+1, and the core
 * applies it at the start of N+1. In lockstep mode the engine waits for that
 * watermark; past LOCKSTEP_STALL_TIMEOUT it pauses, logs and publishes a
 * STALLED event naming the stage that is behind (from the detector's and the
 * agent's watermarks on the same stream).
 *
 * Control events (PAUSED, RESUMED, SPEED_CHANGED, STALLED) depend on wall
 * time, not on the simulation, so the core does not emit them: the shell
 * publishes them on sim.events under its own producer name
 * (MC_SIMSVC_CONTROL_PRODUCER, own producer_seq from 1 per run) and they are
 * not recorded in the trace.
 *
 * Everything here runs on the loop thread. */
#ifndef MC_SIMSVC_SIMSVC_H
#define MC_SIMSVC_SIMSVC_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "engine/core/scenario.h"
#include "harness/setup.h"
#include "harness/subjects.h"
#include "status/status.h"

#define MC_SIMSVC_CONTROL_PRODUCER "sim-engine-control"
/* The producer of the engine's recorded inputs (InjectFault), trace only. */
#define MC_SIMSVC_INPUTS_PRODUCER MC_PRODUCER_ENGINE_INPUTS
#define MC_SIMSVC_MAX_SPEED 10000.0 /* ticks per second, when not "max" */

typedef enum mc_simsvc_mode { MC_SIMSVC_LOCKSTEP = 0, MC_SIMSVC_REALTIME = 1 } mc_simsvc_mode;

typedef struct mc_simsvc_config {
    mc_nats_config nats;
    mc_addr addr;
    uint64_t seed;
    const char *scenario;     /* name of the scenario loaded at start */
    const char *scenario_dir; /* where SetScenario finds <name>.scenario */
    double speed;             /* ticks per second when !max_speed */
    bool max_speed;
    mc_simsvc_mode mode;
    uint64_t stall_timeout_ms;
    uint32_t topology_nodes, topology_services; /* 0: the scenario's own */
    uint32_t chunk_samples;
    const char *trace_dir;         /* NULL or "": no recording */
    const char *trace_signing_key; /* NULL or "": unsigned traces */
    bool autostart;
    const char *stream_prefix;  /* BUS_STREAM_PREFIX */
    uint32_t stream_replicas;   /* BUS_STREAM_REPLICAS; 0: 1 */
    const char *subject_prefix; /* BUS_SUBJECT_PREFIX */
    /* STOP_AFTER_TICKS: pause each run once it completed this tick (0:
     * never); Play goes on from there. */
    uint64_t stop_after_ticks;
    /* What the trace header says about the rest of the system, from the
     * environment the services share (APPROVAL_MODE, RULES_FILE,
     * DECISION_RULES_FILE and the core settings): the rules, the approval
     * mode and the settings are used; the scenario, seed and size knobs are
     * filled in per run. Copied by mc_simsvc_new; NULL: the defaults. */
    const mc_run_setup *setup;
} mc_simsvc_config;

typedef struct mc_simsvc mc_simsvc;

/* Reads and parses <dir>/<name>.scenario. MC_ERR_INVALID for a name that is
 * not [A-Za-z0-9_-]{1,63}; MC_ERR_NOT_FOUND when the file does not exist;
 * the parser's error (file:line: field ...) otherwise. On success *out owns
 * the scenario (mc_scenario_free). */
mc_status mc_simsvc_scenario_load(const char *dir, const char *name, mc_scenario *out,
                                  mc_error *err);

/* Builds the engine from sc (copied) and cfg (strings must outlive the
 * service). No I/O yet. MC_ERR_INVALID when the engine refuses the
 * topology knobs. */
mc_status mc_simsvc_new(uv_loop_t *loop, const mc_simsvc_config *cfg, const mc_scenario *sc,
                        mc_simsvc **out, mc_error *err);

/* Connects to NATS (provisioning the streams), opens the OPS consumer, the
 * trace (when TRACE_DIR is set) and the HTTP server, installs the SIGINT and
 * SIGTERM handlers and, with autostart, starts ticking once the loop runs.
 * On failure the caller frees the service after running the loop once. */
mc_status mc_simsvc_start(mc_simsvc *s, mc_error *err);

/* Starts the graceful shutdown (what a signal does): stop ticking, publish
 * and await what is pending, close the trace with its footer, stop HTTP,
 * close the bus. The loop ends when it is done. */
void mc_simsvc_shutdown(mc_simsvc *s);

/* Frees everything; call after uv_run returned. NULL-safe. */
void mc_simsvc_free(mc_simsvc *s);

/* 0 after a clean shutdown, 1 when something failed on the way. */
int mc_simsvc_exit_status(const mc_simsvc *s);

#endif
