/* sim-engine: the simulation engine service (see simsvc.h). Configuration
 * comes from the environment (`sim-engine --help`); a bad value or a bad
 * scenario file stops it at start with one line and exit status 2. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <uv.h>

#include "bus/bus.h"
#include "config/config.h"
#include "engine/core/engine.h"
#include "log/log.h"
#include "simsvc.h"

#define PROGRAM "sim-engine"
#define SYSTEM_SCENARIO_DIR "/usr/share/microcloud/scenarios"

static const char *const k_modes[] = {"lockstep", "realtime", NULL};
/* The orchestrator's spelling and default (gateway/orchestrator). */
static const char *const k_approval_modes[] = {"manual", "auto", "auto-low-risk", NULL};

typedef struct env_config {
    mc_nats_config nats;
    mc_log_config log;
    mc_addr addr;
    uint64_t seed;
    const char *scenario;
    const char *scenario_dir;
    const char *speed;
    int mode;
    uint64_t stall_timeout_ms;
    uint64_t topology_nodes;
    uint64_t topology_services;
    uint64_t chunk_samples;
    const char *trace_dir;
    const char *trace_signing_key;
    bool autostart;
    const char *stream_prefix;
    uint64_t stream_replicas;
    const char *subject_prefix;
    uint64_t stop_after_ticks;
    int approval_mode;
    const char *rules_file;
    const char *decision_rules_file;
    /* The other services' core settings (harness/setup.h), as given. */
    const char *settings[MC_SETTING_COUNT];
} env_config;

#define HEADER_ONLY "; read only to describe the run in the trace header (the "

static const mc_config_var k_vars[] = {
    MC_CONFIG_VARS_NATS(env_config, nats),
    MC_CONFIG_VARS_LOG(env_config, log),
    {"ADDR", MC_CFG_ADDR, ":8080", "Control API (Connect), /health and /metrics listen address",
     offsetof(env_config, addr)},
    {"SEED", MC_CFG_UINT, "42", "Seed of the run", offsetof(env_config, seed)},
    {"SCENARIO", MC_CFG_STRING, "cascade_failure",
     "Scenario loaded at start: <SCENARIO_DIR>/<SCENARIO>.scenario",
     offsetof(env_config, scenario)},
    {"SCENARIO_DIR", MC_CFG_STRING, NULL,
     "Scenario folder; default engine/scenarios under the working directory if it exists, "
     "else " SYSTEM_SCENARIO_DIR,
     offsetof(env_config, scenario_dir)},
    {"SPEED", MC_CFG_STRING, "1",
     "Ticks per second (fractions allowed, e.g. 0.5), or max for as fast as the pipeline allows",
     offsetof(env_config, speed)},
    {"SIM_MODE", MC_CFG_ENUM, "lockstep",
     "lockstep: tick N+1 waits for the orchestrator's watermark N; realtime: never waits",
     offsetof(env_config, mode), .choices = k_modes},
    {"LOCKSTEP_STALL_TIMEOUT", MC_CFG_DURATION_MS, "30s",
     "Lockstep pauses the run and reports a STALLED event after waiting this long (0: never)",
     offsetof(env_config, stall_timeout_ms)},
    {"TOPOLOGY_NODES", MC_CFG_UINT, "0",
     "Grow the topology to this many nodes with generated ones (0: the scenario's own)",
     offsetof(env_config, topology_nodes), .min = 0, .max = MC_ENGINE_MAX_NODES},
    {"TOPOLOGY_SERVICES", MC_CFG_UINT, "0",
     "Grow the topology to this many services with generated ones (0: the scenario's own)",
     offsetof(env_config, topology_services), .min = 0, .max = MC_ENGINE_MAX_SERVICES},
    {"METRICS_CHUNK_SAMPLES", MC_CFG_UINT, "2000", "Metric samples per sim.metrics message",
     offsetof(env_config, chunk_samples), .min = 1, .max = 100000},
    {"TRACE_DIR", MC_CFG_STRING, NULL,
     "Record every run to a trace file in this folder (unset: no recording)",
     offsetof(env_config, trace_dir)},
    {"TRACE_SIGNING_KEY", MC_CFG_STRING, NULL,
     "Ed25519 secret key file (hex) to sign the traces with",
     offsetof(env_config, trace_signing_key)},
    {"AUTOSTART", MC_CFG_BOOL, "true", "Start playing at boot", offsetof(env_config, autostart)},
    {"BUS_STREAM_PREFIX", MC_CFG_STRING, NULL,
     "Prefix of the JetStream stream names (test isolation)",
     offsetof(env_config, stream_prefix)},
    {"BUS_STREAM_REPLICAS", MC_CFG_UINT, "1",
     "Copies of the SIM and OPS streams in a JetStream cluster (1..5), when they are created",
     offsetof(env_config, stream_replicas), .min = 1, .max = 5},
    {"BUS_SUBJECT_PREFIX", MC_CFG_STRING, NULL,
     "Prefix of every subject, e.g. \"t1.\" (test isolation)",
     offsetof(env_config, subject_prefix)},
    {"STOP_AFTER_TICKS", MC_CFG_UINT, "0",
     "Pause each run once it completed this tick (0: never); Play goes on from there",
     offsetof(env_config, stop_after_ticks)},
    /* The trace header describes the whole run, so the engine reads the
     * settings of the other services that change what their cores emit
     * (scripts/stack.sh gives every service the same environment). */
    {"APPROVAL_MODE", MC_CFG_ENUM, "manual",
     "The orchestrator's approval mode" HEADER_ONLY "orchestrator's)",
     offsetof(env_config, approval_mode), .choices = k_approval_modes},
    {"RULES_FILE", MC_CFG_STRING, NULL,
     "The detection rules file" HEADER_ONLY "signal-service's)", offsetof(env_config, rules_file)},
    {"DECISION_RULES_FILE", MC_CFG_STRING, NULL,
     "The decision rules file" HEADER_ONLY "agent-service's)",
     offsetof(env_config, decision_rules_file)},
    {"TICK_DURATION_MS", MC_CFG_STRING, NULL, "Unset: 1000" HEADER_ONLY "signal-service's)",
     offsetof(env_config, settings[MC_SETTING_TICK_DURATION_MS])},
    {"DETECTOR_MAX_TARGETS", MC_CFG_STRING, NULL, "Unset: 20000" HEADER_ONLY "signal-service's)",
     offsetof(env_config, settings[MC_SETTING_DETECTOR_MAX_TARGETS])},
    {"AGENT_MAX_IN_FLIGHT", MC_CFG_STRING, NULL, "Unset: 5" HEADER_ONLY "agent-service's)",
     offsetof(env_config, settings[MC_SETTING_AGENT_MAX_IN_FLIGHT])},
    {"AGENT_TARGET_COOLDOWN_TICKS", MC_CFG_STRING, NULL, "Unset: 5" HEADER_ONLY "agent-service's)",
     offsetof(env_config, settings[MC_SETTING_AGENT_TARGET_COOLDOWN])},
    {"AGENT_ACTION_EXPIRY_TICKS", MC_CFG_STRING, NULL, "Unset: 30" HEADER_ONLY "agent-service's)",
     offsetof(env_config, settings[MC_SETTING_AGENT_ACTION_EXPIRY])},
    {"ACTION_EXPIRY_TICKS", MC_CFG_STRING, NULL, "Unset: 30" HEADER_ONLY "orchestrator's)",
     offsetof(env_config, settings[MC_SETTING_ACTION_EXPIRY])},
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* SPEED: a positive number of ticks per second, or "max". */
static void parse_speed(const char *v, double *speed, bool *max)
{
    *max = false;
    if (strcmp(v, "max") == 0) {
        *max = true;
        *speed = 1;
        return;
    }
    char *end = NULL;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !(d > 0) || d > MC_SIMSVC_MAX_SPEED)
        die("configuration error: SPEED=\"%s\": expected a number of ticks per second greater "
            "than 0 and at most 10000 (fractions allowed), or max",
            v);
    *speed = d;
}

int main(int argc, char **argv)
{
    env_config ec;
    memset(&ec, 0, sizeof ec);
    mc_config_load_or_exit(argc, argv, PROGRAM,
                           "The Microcloud simulation engine: steps the simulated cloud, publishes "
                           "sim.metrics/sim.events/sim.watermark, applies ops.commands and serves "
                           "sim.v1.SimulationService.",
                           k_vars, sizeof k_vars / sizeof k_vars[0], &ec);
    mc_log_init(PROGRAM, ec.log.level, ec.log.format, NULL);
    signal(SIGPIPE, SIG_IGN);

    mc_simsvc_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.nats = ec.nats;
    cfg.addr = ec.addr;
    cfg.seed = ec.seed;
    cfg.scenario = ec.scenario;
    if (ec.scenario_dir != NULL)
        cfg.scenario_dir = ec.scenario_dir;
    else
        cfg.scenario_dir = is_dir("engine/scenarios") ? "engine/scenarios" : SYSTEM_SCENARIO_DIR;
    parse_speed(ec.speed, &cfg.speed, &cfg.max_speed);
    cfg.mode = ec.mode == 1 ? MC_SIMSVC_REALTIME : MC_SIMSVC_LOCKSTEP;
    cfg.stall_timeout_ms = ec.stall_timeout_ms;
    cfg.topology_nodes = (uint32_t)ec.topology_nodes;
    cfg.topology_services = (uint32_t)ec.topology_services;
    cfg.chunk_samples = (uint32_t)ec.chunk_samples;
    cfg.trace_dir = ec.trace_dir;
    cfg.trace_signing_key = ec.trace_signing_key;
    cfg.autostart = ec.autostart;
    cfg.stream_prefix = ec.stream_prefix;
    cfg.stream_replicas = (uint32_t)ec.stream_replicas;
    cfg.subject_prefix = ec.subject_prefix;
    cfg.stop_after_ticks = ec.stop_after_ticks;

    /* The rest of the run, for the trace header, with the harness's own
     * parsers (a value another service would refuse stops this one too). */
    static mc_run_setup setup; /* large (rule tables): not on the stack */
    mc_error serr;
    mc_error_clear(&serr);
    mc_setup_init(&setup);
    if (mc_approval_mode_parse(k_approval_modes[ec.approval_mode], &setup.approval_mode, &serr) !=
        MC_OK)
        die("configuration error: APPROVAL_MODE: %s", serr.msg);
    if (mc_setup_rules_files(&setup, ec.rules_file, ec.decision_rules_file, &serr) != MC_OK)
        die("configuration error: RULES_FILE/DECISION_RULES_FILE: %s", serr.msg);
    for (size_t i = 0; i < MC_SETTING_COUNT; i++) {
        const char *v = ec.settings[i];
        /* The signal-service's tick length when unset, which may differ from
         * the scenario's (the header says so then). */
        if (i == MC_SETTING_TICK_DURATION_MS && (v == NULL || v[0] == '\0'))
            v = "1000";
        if (v == NULL || v[0] == '\0')
            continue;
        char kv[MC_SETUP_SETTING_MAX];
        snprintf(kv, sizeof kv, "%s=%s", mc_setup_setting_name(i), v);
        if (mc_setup_setting(&setup, kv, &serr) != MC_OK)
            die("configuration error: %s", serr.msg);
    }
    cfg.setup = &setup;

    mc_scenario sc;
    mc_error err;
    mc_error_clear(&err);
    if (mc_simsvc_scenario_load(cfg.scenario_dir, cfg.scenario, &sc, &err) != MC_OK)
        die("SCENARIO=%s: %s", cfg.scenario, err.msg);

    uv_loop_t loop;
    uv_loop_init(&loop);
    mc_simsvc *svc = NULL;
    mc_status st = mc_simsvc_new(&loop, &cfg, &sc, &svc, &err);
    mc_scenario_free(&sc);
    if (st != MC_OK) {
        uv_loop_close(&loop);
        die("SCENARIO=%s: %s", cfg.scenario, err.msg);
    }
    int rc = 0;
    mc_error_clear(&err);
    st = mc_simsvc_start(svc, &err);
    if (st != MC_OK) {
        MC_LOG_ERROR("sim-engine failed to start", MC_LF_STR("error", err.msg));
        fprintf(stderr, PROGRAM ": %s\n", err.msg);
        rc = st == MC_ERR_INVALID ? 2 : 1;
        mc_simsvc_shutdown(svc);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (rc == 0)
        rc = mc_simsvc_exit_status(svc);
    mc_simsvc_free(svc);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        MC_LOG_WARN("event loop closed with handles still open", MC_LF_INT("exit_status", rc));
    mc_bus_library_shutdown(2000);
    return rc;
}
