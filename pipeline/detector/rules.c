#include "detector/rules.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"

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
static mc_status validate_rule(const mc_detector_rule *r, const char *file, uint32_t line,
                               mc_error *err)
{
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

mc_status mc_detector_rules_validate(const mc_detector_rules *rules, mc_error *err)
{
    if (rules == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "detection rules: NULL rule set");
    if (rules->count > MC_DETECTOR_RULES_MAX)
        return mc_error_set(err, MC_ERR_LIMIT, "detection rules: %zu rules, at most %d",
                            rules->count, MC_DETECTOR_RULES_MAX);
    if (rules->count == 0)
        return mc_error_set(err, MC_ERR_INVALID, "detection rules: no rule");
    for (size_t i = 0; i < rules->count; i++) {
        mc_status st = validate_rule(&rules->rules[i], "detection rules", 0, err);
        if (st != MC_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp(rules->rules[i].name, rules->rules[j].name) == 0)
                return mc_error_set(err, MC_ERR_EXISTS,
                                    "detection rules: rule \"%s\" is defined twice",
                                    rules->rules[i].name);
    }
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

static const struct {
    const char *key;
    unsigned flag;
} rule_keys[] = {
    {"name", F_NAME},
    {"metric", F_METRIC},
    {"operator", F_OPERATOR},
    {"threshold", F_THRESHOLD},
    {"window_seconds", F_WINDOW},
    {"aggregation", F_AGG},
    {"for_ticks", F_FOR},
    {"clear_ticks", F_CLEAR},
    {"severity", F_SEVERITY},
    {"group", F_GROUP},
    {"title", F_TITLE},
    {"target", F_TARGET},
};

typedef struct rule_builder {
    mc_detector_rule rule;
    unsigned seen;
    uint32_t line; /* of the [rule] header */
    size_t ordinal;
    char label[MC_DETECTOR_NAME_MAX + 8];
} rule_builder;

static void builder_start(rule_builder *b, uint32_t line, size_t ordinal)
{
    memset(b, 0, sizeof *b);
    b->line = line;
    b->ordinal = ordinal;
    b->rule.agg = MC_RULE_AGG_AVG;
    b->rule.for_ticks = 1;
    b->rule.clear_ticks = 1;
    b->rule.target = MC_RULE_TARGET_ANY;
    snprintf(b->label, sizeof b->label, "#%zu", ordinal);
}

static mc_status builder_set(rule_builder *b, const mc_rulefile *f, mc_error *err)
{
    unsigned flag = 0;
    for (size_t i = 0; i < sizeof rule_keys / sizeof rule_keys[0]; i++)
        if (strcmp(f->key, rule_keys[i].key) == 0)
            flag = rule_keys[i].flag;
    if (flag == 0)
        return mc_rulefile_error(err, MC_ERR_INVALID, f->file, f->line, b->label, f->key,
                                 "unknown field (see RULES.md)");
    if (b->seen & flag)
        return mc_rulefile_error(err, MC_ERR_INVALID, f->file, f->line, b->label, f->key,
                                 "set twice in one rule");
    b->seen |= flag;
    mc_detector_rule *r = &b->rule;
    const char *v = f->value;
    mc_status st = MC_OK;
    const char *why = "";
    switch (flag) {
    case F_NAME:
    case F_METRIC:
    case F_GROUP: {
        char *dst = flag == F_NAME ? r->name : flag == F_METRIC ? r->metric : r->group;
        if (!mc_rulefile_name_ok(v, MC_DETECTOR_NAME_MAX)) {
            st = MC_ERR_INVALID;
            why = "must be 1..47 characters of [A-Za-z0-9_.-]";
        } else {
            st = mc_rulefile_copy(dst, MC_DETECTOR_NAME_MAX, v);
        }
        if (st == MC_OK && flag == F_NAME)
            snprintf(b->label, sizeof b->label, "%s", v);
        break;
    }
    case F_TITLE:
        st = mc_rulefile_copy(r->title, sizeof r->title, v);
        why = "longer than 95 bytes";
        break;
    case F_OPERATOR:
        st = parse_op(v, &r->op);
        why = "must be gt, gte, lt, lte or eq";
        break;
    case F_THRESHOLD:
        st = mc_rulefile_parse_double(v, &r->threshold);
        why = "must be a finite decimal number";
        break;
    case F_WINDOW:
        st = mc_rulefile_parse_u32(v, MC_DETECTOR_WINDOW_SECONDS_MAX, &r->window_seconds);
        why = "must be a whole number of seconds, 0..86400";
        break;
    case F_AGG:
        st = parse_agg(v, &r->agg);
        why = "must be avg, min, max, last or all";
        break;
    case F_FOR:
    case F_CLEAR: {
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
        why = "must be a whole number of ticks, 1..100000";
        break;
    }
    case F_SEVERITY:
        st = mc_rulefile_parse_severity(v, &r->severity);
        why = "must be INFO, WARNING, ERROR or CRITICAL";
        break;
    case F_TARGET:
        st = mc_rulefile_parse_target(v, &r->target);
        why = "must be any, service or node";
        break;
    default:
        break;
    }
    if (st != MC_OK)
        return mc_rulefile_error(err, st, f->file, f->line, b->label, f->key, "\"%.64s\" %s", v,
                                 why);
    return MC_OK;
}

static mc_status builder_finish(rule_builder *b, const char *file, mc_detector_rules *out,
                                mc_error *err)
{
    static const struct {
        unsigned flag;
        const char *key;
    } required[] = {{F_NAME, "name"},
                    {F_METRIC, "metric"},
                    {F_OPERATOR, "operator"},
                    {F_THRESHOLD, "threshold"},
                    {F_SEVERITY, "severity"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(b->seen & required[i].flag))
            return mc_rulefile_error(err, MC_ERR_INVALID, file, b->line, b->label,
                                     required[i].key, "required field missing");
    mc_detector_rule *r = &b->rule;
    if (!(b->seen & F_GROUP))
        memcpy(r->group, r->name, sizeof r->group);
    if (!(b->seen & F_TITLE))
        snprintf(r->title, sizeof r->title, "%s", r->name);
    mc_status st = validate_rule(r, file, b->line, err);
    if (st != MC_OK)
        return st;
    for (size_t i = 0; i < out->count; i++)
        if (strcmp(out->rules[i].name, r->name) == 0)
            return mc_rulefile_error(err, MC_ERR_EXISTS, file, b->line, b->label, "name",
                                     "a rule of this name is defined earlier in the file");
    if (out->count >= MC_DETECTOR_RULES_MAX)
        return mc_rulefile_error(err, MC_ERR_LIMIT, file, b->line, b->label, NULL,
                                 "more than %d rules", MC_DETECTOR_RULES_MAX);
    out->rules[out->count++] = *r;
    return MC_OK;
}

mc_status mc_detector_rules_parse(const char *buf, size_t len, const char *file_name,
                                  mc_detector_rules *out, mc_rules_mode *mode, mc_error *err)
{
    memset(out, 0, sizeof *out);
    *mode = MC_RULES_MODE_EXTEND;
    mc_rulefile f;
    mc_rulefile_init(&f, buf, len, file_name);
    rule_builder b;
    int in_rule = 0, mode_seen = 0;
    size_t ordinal = 0;
    for (;;) {
        mc_rulefile_item item;
        mc_status st = mc_rulefile_next(&f, &item, err);
        if (st != MC_OK)
            return st;
        if (item == MC_RULEFILE_END)
            break;
        if (item == MC_RULEFILE_SECTION) {
            if (strcmp(f.section, "rule") != 0)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, NULL,
                                         "unknown section [%s] (only [rule])", f.section);
            if (in_rule && (st = builder_finish(&b, f.file, out, err)) != MC_OK)
                return st;
            builder_start(&b, f.line, ++ordinal);
            in_rule = 1;
            continue;
        }
        if (!in_rule) {
            if (strcmp(f.key, "mode") != 0)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, f.key,
                                         "only \"mode\" may come before the first [rule]");
            if (mode_seen)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, "mode",
                                         "set twice");
            if (mc_rulefile_parse_mode(f.value, mode) != MC_OK)
                return mc_rulefile_error(err, MC_ERR_PARSE, f.file, f.line, NULL, "mode",
                                         "\"%.64s\" must be extend or replace", f.value);
            mode_seen = 1;
            continue;
        }
        if (strcmp(f.key, "mode") == 0)
            return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, b.label, "mode",
                                     "mode must come before the first [rule]");
        if ((st = builder_set(&b, &f, err)) != MC_OK)
            return st;
    }
    if (in_rule)
        return builder_finish(&b, f.file, out, err);
    return MC_OK;
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
    if (mode == MC_RULES_MODE_REPLACE) {
        *out = file;
    } else {
        for (size_t i = 0; i < file.count; i++) {
            size_t j = 0;
            while (j < out->count && strcmp(out->rules[j].name, file.rules[i].name) != 0)
                j++;
            if (j < out->count) {
                out->rules[j] = file.rules[i];
                continue;
            }
            if (out->count >= MC_DETECTOR_RULES_MAX)
                return mc_error_set(err, MC_ERR_LIMIT,
                                    "%s: rule \"%s\": more than %d rules with the built-ins",
                                    file_name ? file_name : "<rules>", file.rules[i].name,
                                    MC_DETECTOR_RULES_MAX);
            out->rules[out->count++] = file.rules[i];
        }
    }
    st = mc_detector_rules_validate(out, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "%s", file_name ? file_name : "<rules>");
    return MC_OK;
}
