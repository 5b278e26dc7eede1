/* Scenarios: the data a simulation run starts from (topology, traffic
 * profile, fault timeline), parsed from a small line-oriented text format
 * documented in engine/scenarios/README.md.
 *
 * The parser is pure: it takes a buffer and the file's name (used only in
 * messages) and never touches the file system, so the shell reads the file
 * and the fuzzer feeds it bytes. A bad file is rejected with one line naming
 * the file, the line and the field, e.g.
 *   cascade_failure.scenario:14: field "cpu_cores": expected a positive number, got "x"
 */
#ifndef MC_ENGINE_SCENARIO_H
#define MC_ENGINE_SCENARIO_H

#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

#define MC_SCENARIO_ID_MAX 64           /* ids and names, with the NUL */
#define MC_SCENARIO_DESC_MAX 256        /* description, with the NUL */
#define MC_SCENARIO_MAX_NODES 1000
#define MC_SCENARIO_MAX_SERVICES 10000
#define MC_SCENARIO_MAX_FAULTS 1024
#define MC_SCENARIO_MAX_DEPS 32         /* dependencies of one service */
#define MC_SCENARIO_MAX_BYTES (8u << 20) /* largest accepted file */
#define MC_SCENARIO_MAX_LINE 4096       /* longest accepted line */

/* What a fault (or a command) acts on. */
typedef enum mc_target_kind {
    MC_TARGET_NONE = 0,
    MC_TARGET_NODE = 1,
    MC_TARGET_SERVICE = 2
} mc_target_kind;

typedef struct mc_scenario_node {
    char id[MC_SCENARIO_ID_MAX];
    double cpu_cores;
    double memory_mb;
    uint32_t line; /* where its [node] section starts */
} mc_scenario_node;

/* One edge of the dependency graph: the caller sends `ratio` calls to
 * `service` per request it receives. */
typedef struct mc_scenario_dep {
    uint32_t service; /* index into mc_scenario.services */
    double ratio;
} mc_scenario_dep;

typedef struct mc_scenario_service {
    char id[MC_SCENARIO_ID_MAX];
    double external_rps;          /* requests/s from outside at the daily mean */
    double cpu_ms_per_request;    /* CPU time one request costs, core-milliseconds */
    double cpu_cores_per_replica; /* a replica's CPU limit (and scheduling request) */
    double memory_baseline_mb;    /* a replica's memory at rest */
    double memory_limit_mb;       /* a replica is killed (OOM) past this */
    double base_latency_ms;       /* own p99 latency when idle */
    double timeout_ms;            /* callers give up past this */
    uint32_t replicas;            /* replicas at start */
    uint32_t max_replicas;        /* SCALE_UP refuses past this */
    uint32_t warmup_ticks;        /* a new replica's start-up time */
    uint32_t restart_ticks;       /* a crashed or restarted replica's downtime */
    uint32_t dep_first;           /* its dependencies: deps[dep_first .. +dep_count) */
    uint32_t dep_count;
    uint32_t line;
} mc_scenario_service;

typedef struct mc_scenario_fault {
    int type; /* Sim__V1__FaultType */
    char target_id[MC_SCENARIO_ID_MAX];
    mc_target_kind target_kind;
    uint32_t target_index; /* into nodes or services, by target_kind */
    double intensity;
    uint32_t duration_ticks; /* 0: until the run ends or it is fixed */
    uint64_t start_tick;     /* 0: the first tick */
    uint32_t line;
} mc_scenario_fault;

/* The load profile shared by every service with external traffic. */
typedef struct mc_scenario_traffic {
    uint32_t day_ticks;        /* period of the daily pattern */
    double day_phase;          /* where in the day tick 0 is, 0..1 */
    double daily_amplitude;    /* 0..1: peak is (1 + a) x the mean */
    double noise;              /* relative standard deviation per tick */
    double burst_probability;  /* per service and tick */
    double burst_multiplier;   /* load multiplier during a burst */
    uint64_t ramp_start_tick;  /* a ramp multiplies all load from here... */
    uint32_t ramp_ticks;       /* ...rising linearly over this many ticks... */
    double ramp_multiplier;    /* ...to this factor, and stays there */
    double blocking_factor;    /* extra CPU per second spent waiting on dependencies */
} mc_scenario_traffic;

typedef struct mc_scenario {
    char name[MC_SCENARIO_ID_MAX];
    char description[MC_SCENARIO_DESC_MAX];
    int64_t start_time_unix_ms;
    uint32_t tick_ms;
    mc_scenario_traffic traffic;
    mc_scenario_node *nodes;
    size_t n_nodes;
    mc_scenario_service *services;
    size_t n_services;
    mc_scenario_dep *deps;
    size_t n_deps;
    mc_scenario_fault *faults;
    size_t n_faults;
} mc_scenario;

/* Parses a scenario from buf[0..len) (not necessarily NUL-terminated).
 * file_name is used only in error messages. On success *out owns heap arrays
 * (release with mc_scenario_free); on failure *out is left empty and err says
 * file:line and field. Dependency cycles, unknown keys, unknown sections,
 * duplicate ids and faults on unknown targets are rejected. */
mc_status mc_scenario_parse(const char *buf, size_t len, const char *file_name, mc_scenario *out,
                            mc_error *err);

/* Deep copy; dst must not own arrays. */
mc_status mc_scenario_copy(mc_scenario *dst, const mc_scenario *src, mc_error *err);

/* Releases the arrays and zeroes *sc. NULL-safe. */
void mc_scenario_free(mc_scenario *sc);

/* The service/node index with the given id, or -1. Linear; for lookups
 * outside hot loops. */
long mc_scenario_service_find(const mc_scenario *sc, const char *id);
long mc_scenario_node_find(const mc_scenario *sc, const char *id);

/* The scenario-file name of a fault type ("error_burst"), or NULL. */
const char *mc_scenario_fault_type_name(int type);

/* Parses a fault type name; returns 0 (UNSPECIFIED) when unknown. */
int mc_scenario_fault_type_parse(const char *name);

/* The kind of target a fault type needs: node faults (crash, degradation)
 * need a node; CPU hogs take either (returns MC_TARGET_NONE); the rest need a
 * service. */
mc_target_kind mc_scenario_fault_target_kind(int type);

/* Checks a fault's intensity for its type; returns a short description of
 * the allowed range when it is out of it, NULL when it is fine. */
const char *mc_scenario_fault_intensity_check(int type, double intensity);

/* Finds the order "dependencies first" over n services (each after every
 * service it calls), ties broken by the smaller rank (rank[i] orders the
 * services, e.g. by id). The graph is given as arrays: the dependencies of i
 * are dep_target[dep_first[i] .. + dep_count[i]), without duplicates. order
 * must hold n. On a cycle returns MC_ERR_INVALID and writes the services of
 * one cycle, in call order, to cycle (which must hold n) and its length to
 * *cycle_len. MC_ERR_NOMEM when scratch memory cannot be had. */
mc_status mc_scenario_dep_order(size_t n, const uint32_t *dep_first, const uint32_t *dep_count,
                                const uint32_t *dep_target, const uint32_t *rank, uint32_t *order,
                                uint32_t *cycle, size_t *cycle_len);

#endif
