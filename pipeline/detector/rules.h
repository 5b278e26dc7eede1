/* Detection rules: what the detector watches. Rules are data: a built-in
 * table (rules.c, the seed's rules plus the ones the decider needs) that a
 * rules file (RULES.md) may extend or replace.
 *
 * A rule compares an aggregate of one metric over a sliding window of
 * simulated time with a threshold. It fires after its condition has held
 * for for_ticks consecutive ticks and clears after it has been false for
 * clear_ticks (hysteresis). Rules sharing a group share one incident per
 * target: the active rule with the highest severity speaks for it. */
#ifndef MC_PIPELINE_DETECTOR_RULES_H
#define MC_PIPELINE_DETECTOR_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "detector/rulefile.h"
#include "status/status.h"

#define MC_DETECTOR_RULES_MAX 64
#define MC_DETECTOR_NAME_MAX 48  /* rule, group and metric names, with the NUL */
#define MC_DETECTOR_TITLE_MAX 96 /* with the NUL */
/* The longest window a rule may ask for, in seconds of simulated time. */
#define MC_DETECTOR_WINDOW_SECONDS_MAX 86400u
/* The longest window in ticks once converted (bounds the per-series ring). */
#define MC_DETECTOR_WINDOW_TICKS_MAX 4096u
#define MC_DETECTOR_HOLD_TICKS_MAX 100000u

typedef enum mc_rule_op {
    MC_RULE_OP_GT = 1,
    MC_RULE_OP_GTE = 2,
    MC_RULE_OP_LT = 3,
    MC_RULE_OP_LTE = 4,
    MC_RULE_OP_EQ = 5
} mc_rule_op;

typedef enum mc_rule_agg {
    MC_RULE_AGG_AVG = 1,
    MC_RULE_AGG_MIN = 2,
    MC_RULE_AGG_MAX = 3,
    MC_RULE_AGG_LAST = 4,
    /* "for the whole window": the condition holds for every sample of a
     * full window (window ticks samples, each violating). */
    MC_RULE_AGG_ALL = 5
} mc_rule_agg;

typedef struct mc_detector_rule {
    char name[MC_DETECTOR_NAME_MAX];   /* unique, e.g. "cpu_high" */
    char metric[MC_DETECTOR_NAME_MAX]; /* MetricSample.metric_name */
    char group[MC_DETECTOR_NAME_MAX];  /* incident group; defaults to name */
    char title[MC_DETECTOR_TITLE_MAX]; /* incident title, e.g. "High CPU" */
    mc_rule_op op;
    double threshold; /* in the metric's unit (CONTRACTS.md: percent, ms) */
    uint32_t window_seconds; /* simulated seconds; 0 means the current tick only */
    mc_rule_agg agg;
    uint32_t for_ticks;   /* >= 1 */
    uint32_t clear_ticks; /* >= 1 */
    int severity;         /* Common__V1__IncidentSeverity, 1..4 */
    mc_rule_target target;
} mc_detector_rule;

typedef struct mc_detector_rules {
    size_t count;
    mc_detector_rule rules[MC_DETECTOR_RULES_MAX];
} mc_detector_rules;

/* Fills out with the built-in table. */
void mc_detector_rules_builtin(mc_detector_rules *out);

/* Checks a rule set: names valid and unique, fields in range, at most
 * MC_DETECTOR_RULES_MAX rules. Errors name the rule and the field. */
mc_status mc_detector_rules_validate(const mc_detector_rules *rules, mc_error *err);

/* Parses a rules file (RULES.md) from buf (len bytes) into out (only the
 * file's rules) and *mode. file_name is used in messages only. Errors are
 * MC_ERR_PARSE / MC_ERR_RANGE / MC_ERR_INVALID / MC_ERR_LIMIT with
 * "<file>:<line>: rule \"<name>\": field \"<field>\": <why>". */
mc_status mc_detector_rules_parse(const char *buf, size_t len, const char *file_name,
                                  mc_detector_rules *out, mc_rules_mode *mode, mc_error *err);

/* The rule set to run: the built-ins, with the file (when buf is not NULL)
 * applied in its mode. In extend mode a file rule whose name matches a
 * built-in replaces it in place; other file rules are appended. The result
 * is validated. */
mc_status mc_detector_rules_load(const char *buf, size_t len, const char *file_name,
                                 mc_detector_rules *out, mc_error *err);

/* "gt", "avg", ...; "?" for an unknown value. */
const char *mc_rule_op_name(mc_rule_op op);
const char *mc_rule_agg_name(mc_rule_agg agg);

/* True when value op threshold holds. eq compares exactly (meant for
 * enumerations such as node_status). */
int mc_rule_op_holds(mc_rule_op op, double value, double threshold);

#endif
