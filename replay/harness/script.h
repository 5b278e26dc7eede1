/* Scripted human decisions for `microcloud sim --decisions FILE`: what a
 * person would have clicked, at which tick (format in traces/README.md):
 *
 *     # tick  action-match               verdict  [reason]
 *     40      RESTART_SERVICE:database   approve
 *     55      SCALE_UP                   reject   not during the sale
 *     60      :checkout                  approve
 *
 * action-match is TYPE:target, TYPE, TYPE:* , *:target, :target or *; TYPE is
 * an action type (RESTART_SERVICE, with or without ACTION_TYPE_). At tick T
 * the closed loop applies each line of T, in file order, to every PENDING
 * action that matches, after the tick's proposals reached the orchestrator
 * and before it closes the tick. Pure: parses a buffer. */
#ifndef MC_HARNESS_SCRIPT_H
#define MC_HARNESS_SCRIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

#define MC_SCRIPT_TARGET_MAX 128
#define MC_SCRIPT_REASON_MAX 256
#define MC_SCRIPT_MAX_LINES  100000
#define MC_SCRIPT_ACTOR      "script"

typedef struct mc_script_decision {
    uint64_t tick;
    int action_type;                   /* Common__V1__ActionType; 0 matches any */
    char target[MC_SCRIPT_TARGET_MAX]; /* "" matches any */
    bool approve;
    char reason[MC_SCRIPT_REASON_MAX];
    uint32_t line;
    uint32_t applied; /* actions it was applied to (filled by the loop) */
} mc_script_decision;

typedef struct mc_script {
    mc_script_decision *items; /* sorted by tick, file order within a tick */
    size_t count;
} mc_script;

/* Parses buf (len bytes). Errors name "<file>:<line>:". On success *out owns
 * its items (mc_script_free). */
mc_status mc_script_parse(const char *buf, size_t len, const char *file_name, mc_script *out,
                          mc_error *err);
void mc_script_free(mc_script *s);

/* True when the decision's match covers an action of this type and target. */
bool mc_script_matches(const mc_script_decision *d, int action_type, const char *target);

#endif
