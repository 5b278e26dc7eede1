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

#include <stddef.h>
#include <stdint.h>

#include "approval/approval.h"
#include "decider/rules.h"
#include "detector/rules.h"
#include "engine/core/scenario.h"
#include "status/status.h"

#define MC_SETUP_SPEC_MAX  160
#define MC_SETUP_FLAGS_MAX 1024

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

/* Computes topology_digest and config_digest; call after the scenario, the
 * knobs, the rules and the mode are set. */
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
