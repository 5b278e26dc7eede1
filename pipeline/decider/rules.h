/* Decision rules: which remediation the decider proposes for an incident.
 * Rules are data: a built-in table (rules.c) that a rules file (RULES.md)
 * may extend or replace, parsed like the detection rules.
 *
 * For each open incident the first rule (in table order) whose conditions
 * match names the action; its reason, a sentence a person understands, goes
 * on the proposed Action. */
#ifndef MC_PIPELINE_DECIDER_RULES_H
#define MC_PIPELINE_DECIDER_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "detector/rulefile.h"
#include "status/status.h"

#define MC_DECIDER_RULES_MAX 64
#define MC_DECIDER_NAME_MAX 48   /* with the NUL */
#define MC_DECIDER_REASON_MAX 256 /* with the NUL */
#define MC_DECIDER_TICKS_MAX 1000000u

typedef struct mc_decider_rule {
    char name[MC_DECIDER_NAME_MAX];          /* unique */
    char metric[MC_DECIDER_NAME_MAX];        /* incident metric_name; "" any */
    char incident_rule[MC_DECIDER_NAME_MAX]; /* incident rule_name; "" any */
    mc_rule_target target;                   /* service or node (from the action) */
    int min_severity;                        /* 0 any, else 1..4 */
    int max_severity;                        /* 0 any, else 1..4 */
    /* Another open incident on the same target with this metric and at
     * least WARNING severity must exist ("" none) / must not exist. */
    char requires_open[MC_DECIDER_NAME_MAX];
    char unless_open[MC_DECIDER_NAME_MAX];
    uint32_t min_open_ticks; /* the incident has been open this long */
    int action;              /* Common__V1__ActionType, 1..5 */
    uint32_t cooldown_ticks; /* no new action of this type on the target for this long */
    int escalate_to;         /* 0 none, else an ActionType for when it did not help */
    uint32_t escalate_after_ticks;
    char reason[MC_DECIDER_REASON_MAX];
} mc_decider_rule;

typedef struct mc_decider_rules {
    size_t count;
    mc_decider_rule rules[MC_DECIDER_RULES_MAX];
} mc_decider_rules;

void mc_decider_rules_builtin(mc_decider_rules *out);

/* Checks a rule set: names, action types, severities, that service actions
 * target services and DRAIN_NODE nodes, escalation consistent. */
mc_status mc_decider_rules_validate(const mc_decider_rules *rules, mc_error *err);

/* Parses a decision rules file; errors as for the detection rules:
 * "<file>:<line>: rule \"<name>\": field \"<field>\": <why>". */
mc_status mc_decider_rules_parse(const char *buf, size_t len, const char *file_name,
                                 mc_decider_rules *out, mc_rules_mode *mode, mc_error *err);

/* Built-ins with the file (buf may be NULL) applied in its mode; a file
 * rule named like a built-in replaces it in place. Validated. */
mc_status mc_decider_rules_load(const char *buf, size_t len, const char *file_name,
                                mc_decider_rules *out, mc_error *err);

/* The kind of target an action type acts on. */
mc_rule_target mc_decider_action_target(int action_type);

#endif
