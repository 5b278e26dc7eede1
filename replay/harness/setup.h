/* What a run is made of, besides its inputs: the scenario (and the topology
 * size knobs), the seed, the detection and decision rules and the approval
 * mode. `microcloud sim` builds one to record a run and `replay verify`
 * builds one from a trace's header to re-drive it, so both read scenarios,
 * rules files and --override flags the same way.
 *
 * Only the scenario's name and the size knobs are stored in the trace
 * header ("scenario spec", below); rules files and overrides are not. Their
 * effect is pinned by the header's config_digest, so a re-drive with other
 * rules says so before it reports the divergence they cause. */
#ifndef MC_HARNESS_SETUP_H
#define MC_HARNESS_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "approval/approval.h"
#include "decider/rules.h"
#include "detector/rules.h"
#include "engine/core/scenario.h"
#include "status/status.h"

#define MC_SETUP_SPEC_MAX  160
#define MC_SETUP_FLAGS_MAX 1024
#define MC_SETUP_RUN_ID_MAX 64
#define MC_SETUP_SETTING_MAX 96 /* one "NAME=VALUE", with the NUL */

/* Core settings: the knobs the live services read from their environment
 * that change what a core emits, under the services' variable names. A run
 * that sets none of them runs with the defaults below, which are the
 * services' defaults too; a setting at its default is the same as unset.
 *
 *   METRICS_CHUNK_SAMPLES        engine: samples per sim.metrics (2000)
 *   TICK_DURATION_MS             detector: simulated tick length for rule
 *                                windows (the scenario's tick_ms; the
 *                                signal-service assumes 1000 when unset)
 *   DETECTOR_MAX_TARGETS         detector: targets tracked (20000)
 *   AGENT_MAX_IN_FLIGHT          decider: unfinished actions (5)
 *   AGENT_TARGET_COOLDOWN_TICKS  decider: ticks between actions on a target (5)
 *   AGENT_ACTION_EXPIRY_TICKS    decider: expiry of its proposals (30)
 *   ACTION_EXPIRY_TICKS          orchestrator: expiry of pending actions (30)
 *
 * The sim-engine records the ones that differ from the default in the trace
 * header (settings), `microcloud sim --setting NAME=VALUE` sets them, and the
 * re-drive applies the header's. */
enum {
    MC_SETTING_CHUNK_SAMPLES,
    MC_SETTING_TICK_DURATION_MS,
    MC_SETTING_DETECTOR_MAX_TARGETS,
    MC_SETTING_AGENT_MAX_IN_FLIGHT,
    MC_SETTING_AGENT_TARGET_COOLDOWN,
    MC_SETTING_AGENT_ACTION_EXPIRY,
    MC_SETTING_ACTION_EXPIRY,
    MC_SETTING_COUNT
};

typedef struct mc_run_setup {
    mc_scenario sc; /* parsed; owned */
    char scenario_name[MC_SCENARIO_ID_MAX];
    /* Where the scenario came from (a path), for the reproduce command. */
    char scenario_arg[512];
    uint64_t seed;
    uint32_t node_count, service_count; /* engine size knobs; 0 = the scenario's */
    mc_approval_mode approval_mode;
    mc_detector_rules det_rules;
    mc_decider_rules dec_rules;
    /* The rule flags given (--override ..., --detector-rules ...), as they
     * would be typed again, for the reproduce command. */
    char flags[MC_SETUP_FLAGS_MAX];
    /* Core settings (above): value[i] counts only when set[i]. */
    uint64_t setting_value[MC_SETTING_COUNT];
    bool setting_set[MC_SETTING_COUNT];
    /* The run id every core is configured with ("": each adopts it from
     * its first input). The closed loop takes the engine's, the re-drive
     * the header's, so the cores stamp the run id from tick 1 on as the
     * live services do. */
    char run_id[MC_SETUP_RUN_ID_MAX];
    uint8_t scenario_file_digest[32]; /* the scenario file's bytes */
    uint8_t topology_digest[32];      /* scenario file digest and knobs */
    uint8_t config_digest[32];        /* rules, approval mode, core configs */
} mc_run_setup;

/* Zeroes s and loads the built-in rules, approval mode auto. */
void mc_setup_init(mc_run_setup *s);
void mc_setup_deinit(mc_run_setup *s);

/* Reads and parses a scenario: name_or_path is a path when it contains a
 * '/' or ends in ".scenario", else dir/<name>.scenario. */
mc_status mc_setup_load_scenario(mc_run_setup *s, const char *dir, const char *name_or_path,
                                 mc_error *err);

/* Replaces the rules with the built-ins plus a rules file (either path may
 * be NULL). */
mc_status mc_setup_rules_files(mc_run_setup *s, const char *detector_path, const char *decider_path,
                               mc_error *err);

/* Applies one override "detector.<rule>[.<field>]=<value>" (field defaults
 * to threshold; fields threshold, window_seconds, for_ticks, clear_ticks,
 * severity) or "decider.<rule>.<field>=<value>" (cooldown_ticks,
 * min_open_ticks, escalate_after_ticks, action). */
mc_status mc_setup_override(mc_run_setup *s, const char *kv, mc_error *err);

/* The digest of a scenario file's bytes, as mc_setup_load_scenario keeps
 * it in scenario_file_digest (for a shell that read the file itself). */
void mc_setup_scenario_digest(const void *bytes, size_t len, uint8_t out[32]);

/* The setting names, in their fixed order (MC_SETTING_*); NULL past the
 * end. */
const char *mc_setup_setting_name(size_t i);
/* Sets one core setting from "NAME=VALUE" (a whole number within the
 * service's range). MC_ERR_NOT_FOUND for an unknown name, MC_ERR_INVALID for
 * a bad value. */
mc_status mc_setup_setting(mc_run_setup *s, const char *kv, mc_error *err);
/* The effective value of a setting: the one set, else its default (the
 * tick duration's default is the scenario's tick_ms, so load it first). */
uint64_t mc_setup_setting_get(const mc_run_setup *s, size_t i);
/* The settings that differ from their defaults as "NAME=VALUE" strings, in
 * the fixed order; returns how many (at most MC_SETTING_COUNT). */
size_t mc_setup_settings_format(const mc_run_setup *s,
                                char out[MC_SETTING_COUNT][MC_SETUP_SETTING_MAX]);

/* Computes topology_digest and config_digest; call after the scenario, the
 * knobs, the rules, the mode and the settings are set. */
void mc_setup_digests(mc_run_setup *s);

/* The header's scenario field: the name, then ";nodes=N" and
 * ";services=N" when the knobs are set. */
void mc_setup_spec_format(const mc_run_setup *s, char out[MC_SETUP_SPEC_MAX]);
/* Splits a spec into the name and the knobs. */
mc_status mc_setup_spec_parse(const char *spec, char name[MC_SCENARIO_ID_MAX], uint32_t *nodes,
                              uint32_t *services, mc_error *err);

/* Reads a whole file (at most max bytes) into a malloc'd, NUL-terminated
 * buffer. */
mc_status mc_read_file(const char *path, size_t max, char **out, size_t *len, mc_error *err);

#endif
