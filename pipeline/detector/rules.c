#include "detector/rules.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"

/* The shared reader (rulefile.h) finds a rule's name at its start and
 * stores names of MC_RULEFILE_NAME_MAX bytes. */
_Static_assert(offsetof(mc_detector_rule, name) == 0, "a rule starts with its name");
_Static_assert(MC_DETECTOR_NAME_MAX == MC_RULEFILE_NAME_MAX, "one name size");

/* The built-in detection rules: the seed's rules (error rate, CPU, memory,
 * p99 latency) plus the ones the decider needs to find low utilization and
 * unhealthy nodes. Rules of one metric with rising severities share a group
 * so a rise from warning to critical updates the same incident.
 *
 * To add a rule, add a row here (or put it in a RULES_FILE, see RULES.md):
 * name, metric, group, title, operator, threshold, window_seconds,
 * aggregation, for_ticks, clear_ticks, severity, target. */
#define SEV(s) COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_##s
static const mc_detector_rule builtin_rules[] = {
    {"error_rate_high", "error_rate", "error_rate", "High error rate", MC_RULE_OP_GT, 5.0, 30,
     MC_RULE_AGG_AVG, 2, 3, SEV(WARNING), MC_RULE_TARGET_SERVICE},
    {"error_rate_critical", "error_rate", "error_rate", "Critical error rate", MC_RULE_OP_GT, 10.0,
     30, MC_RULE_AGG_AVG, 2, 3, SEV(CRITICAL), MC_RULE_TARGET_SERVICE},
    {"cpu_high", "cpu_usage", "cpu", "High CPU usage", MC_RULE_OP_GT, 85.0, 30, MC_RULE_AGG_AVG, 3,
     3, SEV(WARNING), MC_RULE_TARGET_ANY},
    {"cpu_critical", "cpu_usage", "cpu", "Critical CPU usage", MC_RULE_OP_GT, 95.0, 30,
     MC_RULE_AGG_AVG, 3, 3, SEV(CRITICAL), MC_RULE_TARGET_ANY},
    {"memory_high", "memory_usage", "memory", "High memory usage", MC_RULE_OP_GT, 90.0, 30,
     MC_RULE_AGG_AVG, 3, 3, SEV(ERROR), MC_RULE_TARGET_ANY},
    {"latency_p99_high", "p99_latency_ms", "latency", "High p99 latency", MC_RULE_OP_GT, 500.0, 30,
     MC_RULE_AGG_AVG, 3, 3, SEV(WARNING), MC_RULE_TARGET_SERVICE},
    /* Low utilization for a whole minute: the decider's cue to scale down.
     * Info only: nothing is wrong, capacity is wasted. */
    {"cpu_low", "cpu_usage", "cpu_low", "Low CPU utilization", MC_RULE_OP_LT, 10.0, 60,
     MC_RULE_AGG_ALL, 1, 3, SEV(INFO), MC_RULE_TARGET_SERVICE},
    /* node_status carries the common.v1.NodeStatus number: 2 degraded,
     * 3 down. One group, so a degraded node that goes down updates the
     * same incident. */
    {"node_degraded", "node_status", "node_status", "Node degraded", MC_RULE_OP_EQ, 2.0, 0,
     MC_RULE_AGG_LAST, 2, 2, SEV(ERROR), MC_RULE_TARGET_NODE},
    {"node_down", "node_status", "node_status", "Node down", MC_RULE_OP_EQ, 3.0, 0,
     MC_RULE_AGG_LAST, 1, 2, SEV(CRITICAL), MC_RULE_TARGET_NODE},
};
#undef SEV

void mc_detector_rules_builtin(mc_detector_rules *out)
{
    memset(out, 0, sizeof *out);
    size_t n = sizeof builtin_rules / sizeof builtin_rules[0];
    for (size_t i = 0; i < n; i++)
        out->rules[i] = builtin_rules[i];
    out->count = n;
}

const char *mc_rule_op_name(mc_rule_op op)
{
    static const char *const names[] = {"?", "gt", "gte", "lt", "lte", "eq"};
    return ((int)op >= 1 && (int)op <= 5) ? names[op] : "?";
}

const char *mc_rule_agg_name(mc_rule_agg agg)
{
    static const char *const names[] = {"?", "avg", "min", "max", "last", "all"};
    return ((int)agg >= 1 && (int)agg <= 5) ? names[agg] : "?";
}

int mc_rule_op_holds(mc_rule_op op, double value, double threshold)
{
    switch (op) {
    case MC_RULE_OP_GT:
        return value > threshold;
    case MC_RULE_OP_GTE:
        return value >= threshold;
    case MC_RULE_OP_LT:
        return value < threshold;
    case MC_RULE_OP_LTE:
        return value <= threshold;
    case MC_RULE_OP_EQ:
        return value == threshold;
    }
    return 0;
}

static mc_status parse_op(const char *s, mc_rule_op *out)
{
    for (int i = 1; i <= 5; i++) {
        if (strcmp(s, mc_rule_op_name((mc_rule_op)i)) == 0) {
            *out = (mc_rule_op)i;
            return MC_OK;
        }
    }
    return MC_ERR_PARSE;
}

static mc_status parse_agg(const char *s, mc_rule_agg *out)
{
    for (int i = 1; i <= 5; i++) {
        if (strcmp(s, mc_rule_agg_name((mc_rule_agg)i)) == 0) {
            *out = (mc_rule_agg)i;
            return MC_OK;
        }
    }
    /* Spelled out in the task's words too. */
    if (strcmp(s, "whole_window") == 0 || strcmp(s, "for_whole_window") == 0) {
        *out = MC_RULE_AGG_ALL;
        return MC_OK;
    }
    return MC_ERR_PARSE;
}

/* Checks one rule; line is where it was defined (0 for the built-in table). */
static mc_status validate_rule(const void *rule, const char *file, uint32_t line, mc_error *err)
{
    const mc_detector_rule *r = rule;
    const char *name = r->name[0] ? r->name : "?";
    if (!mc_rulefile_name_ok(r->name, sizeof r->name))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "name",
                                 "must be 1..%zu characters of [A-Za-z0-9_.-]",
                                 sizeof r->name - 1);
    if (!mc_rulefile_name_ok(r->metric, sizeof r->metric))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "metric",
                                 "must be 1..%zu characters of [A-Za-z0-9_.-]",
                                 sizeof r->metric - 1);
    if (!mc_rulefile_name_ok(r->group, sizeof r->group))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "group",
                                 "must be 1..%zu characters of [A-Za-z0-9_.-]",
                                 sizeof r->group - 1);
    if (memchr(r->title, '\0', sizeof r->title) == NULL)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "title", "too long");
    if ((int)r->op < 1 || (int)r->op > 5)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "operator",
                                 "must be gt, gte, lt, lte or eq");
    if (!isfinite(r->threshold))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "threshold",
                                 "must be a finite number");
    if (r->window_seconds > MC_DETECTOR_WINDOW_SECONDS_MAX)
        return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name, "window_seconds",
                                 "at most %u", MC_DETECTOR_WINDOW_SECONDS_MAX);
    if ((int)r->agg < 1 || (int)r->agg > 5)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "aggregation",
                                 "must be avg, min, max, last or all");
    if (r->for_ticks < 1 || r->for_ticks > MC_DETECTOR_HOLD_TICKS_MAX)
        return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name, "for_ticks",
                                 "must be 1..%u", MC_DETECTOR_HOLD_TICKS_MAX);
    if (r->clear_ticks < 1 || r->clear_ticks > MC_DETECTOR_HOLD_TICKS_MAX)
        return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name, "clear_ticks",
                                 "must be 1..%u", MC_DETECTOR_HOLD_TICKS_MAX);
    if (r->severity < 1 || r->severity > 4)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "severity",
                                 "must be INFO, WARNING, ERROR or CRITICAL");
    if ((int)r->target < 0 || (int)r->target > 2)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "target",
                                 "must be any, service or node");
    return MC_OK;
}

/* Which fields a [rule] section has set so far. */
enum {
    F_NAME = 1 << 0,
    F_METRIC = 1 << 1,
    F_OPERATOR = 1 << 2,
    F_THRESHOLD = 1 << 3,
    F_WINDOW = 1 << 4,
    F_AGG = 1 << 5,
    F_FOR = 1 << 6,
    F_CLEAR = 1 << 7,
    F_SEVERITY = 1 << 8,
    F_GROUP = 1 << 9,
    F_TITLE = 1 << 10,
    F_TARGET = 1 << 11
};

static const mc_rulefile_field rule_fields[] = {
    {"name", F_NAME, 1},
    {"metric", F_METRIC, 1},
    {"operator", F_OPERATOR, 1},
    {"threshold", F_THRESHOLD, 1},
    {"window_seconds", F_WINDOW, 0},
    {"aggregation", F_AGG, 0},
    {"for_ticks", F_FOR, 0},
    {"clear_ticks", F_CLEAR, 0},
    {"severity", F_SEVERITY, 1},
    {"group", F_GROUP, 0},
    {"title", F_TITLE, 0},
    {"target", F_TARGET, 0},
};

static void rule_start(void *rule)
{
    mc_detector_rule *r = rule;
    r->agg = MC_RULE_AGG_AVG;
    r->for_ticks = 1;
    r->clear_ticks = 1;
    r->target = MC_RULE_TARGET_ANY;
}

static mc_status rule_set(void *rule, unsigned flag, const char *v, const char **why)
{
    mc_detector_rule *r = rule;
    mc_status st = MC_OK;
    switch (flag) {
    case F_NAME:
        return mc_rulefile_set_name(r->name, v, why);
    case F_METRIC:
        return mc_rulefile_set_name(r->metric, v, why);
    case F_GROUP:
        return mc_rulefile_set_name(r->group, v, why);
    case F_TITLE:
        *why = "longer than 95 bytes";
        return mc_rulefile_copy(r->title, sizeof r->title, v);
    case F_OPERATOR:
        *why = "must be gt, gte, lt, lte or eq";
        return parse_op(v, &r->op);
    case F_THRESHOLD:
        *why = "must be a finite decimal number";
        return mc_rulefile_parse_double(v, &r->threshold);
    case F_WINDOW:
        *why = "must be a whole number of seconds, 0..86400";
        return mc_rulefile_parse_u32(v, MC_DETECTOR_WINDOW_SECONDS_MAX, &r->window_seconds);
    case F_AGG:
        *why = "must be avg, min, max, last or all";
        return parse_agg(v, &r->agg);
    case F_FOR:
    case F_CLEAR: {
        *why = "must be a whole number of ticks, 1..100000";
        uint32_t t = 0;
        st = mc_rulefile_parse_u32(v, MC_DETECTOR_HOLD_TICKS_MAX, &t);
        if (st == MC_OK && t == 0)
            st = MC_ERR_RANGE;
        if (st == MC_OK) {
            if (flag == F_FOR)
                r->for_ticks = t;
            else
                r->clear_ticks = t;
        }
        return st;
    }
    case F_SEVERITY:
        *why = "must be INFO, WARNING, ERROR or CRITICAL";
        return mc_rulefile_parse_severity(v, &r->severity);
    case F_TARGET:
        *why = "must be any, service or node";
        return mc_rulefile_parse_target(v, &r->target);
    default:
        return MC_OK;
    }
}

/* The group defaults to the name, the title to the name. */
static void rule_complete(void *rule, unsigned seen)
{
    mc_detector_rule *r = rule;
    if (!(seen & F_GROUP))
        memcpy(r->group, r->name, sizeof r->group);
    if (!(seen & F_TITLE))
        snprintf(r->title, sizeof r->title, "%s", r->name);
}

static const mc_rulefile_schema schema = {
    .what = "detection rules",
    .fields = rule_fields,
    .field_count = sizeof rule_fields / sizeof rule_fields[0],
    .name_flag = F_NAME,
    .rule_size = sizeof(mc_detector_rule),
    .rule_cap = MC_DETECTOR_RULES_MAX,
    .start = rule_start,
    .set = rule_set,
    .complete = rule_complete,
    .validate = validate_rule,
};

mc_status mc_detector_rules_validate(const mc_detector_rules *rules, mc_error *err)
{
    return mc_rulefile_rules_validate(&schema, rules ? rules->rules : NULL,
                                      rules ? rules->count : 0, err);
}

mc_status mc_detector_rules_parse(const char *buf, size_t len, const char *file_name,
                                  mc_detector_rules *out, mc_rules_mode *mode, mc_error *err)
{
    mc_detector_rule scratch;
    return mc_rulefile_rules_parse(&schema, buf, len, file_name, out->rules, &out->count,
                                   &scratch, mode, err);
}

mc_status mc_detector_rules_load(const char *buf, size_t len, const char *file_name,
                                 mc_detector_rules *out, mc_error *err)
{
    mc_detector_rules_builtin(out);
    if (buf == NULL)
        return mc_detector_rules_validate(out, err);
    /* About 17 KiB on the stack: small enough, and no allocation to fail. */
    mc_detector_rules file;
    mc_rules_mode mode;
    mc_status st = mc_detector_rules_parse(buf, len, file_name, &file, &mode, err);
    if (st != MC_OK)
        return st;
    return mc_rulefile_rules_apply(&schema, out->rules, &out->count, file.rules, file.count,
                                   mode, file_name, err);
}
