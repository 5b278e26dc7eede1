#include "decider/rules.h"

#include <stdio.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"

#define SEV(s) COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_##s
#define ACT(a) COMMON__V1__ACTION_TYPE__ACTION_TYPE_##a

/* The built-in decision rules, first match wins. Fields: name, metric,
 * incident_rule, target, min_severity, max_severity, requires_open,
 * unless_open, min_open_ticks, action, cooldown_ticks, escalate_to,
 * escalate_after_ticks, reason. */
static const mc_decider_rule builtin_rules[] = {
    {"restart_on_critical_errors", "error_rate", "", MC_RULE_TARGET_SERVICE, SEV(CRITICAL), 0, "",
     "", 0, ACT(RESTART_SERVICE), 20, ACT(SCALE_UP), 10,
     "The error rate is critical; restarting the service clears bad state such as a bad deploy "
     "or a leak."},
    {"restart_on_service_memory", "memory_usage", "", MC_RULE_TARGET_SERVICE, SEV(WARNING), 0, "",
     "", 0, ACT(RESTART_SERVICE), 30, ACT(SCALE_UP), 15,
     "The service's memory is nearly exhausted; a restart releases leaked memory before its "
     "replicas are killed."},
    {"scale_up_on_cpu", "cpu_usage", "", MC_RULE_TARGET_SERVICE, SEV(WARNING), 0, "", "", 0,
     ACT(SCALE_UP), 15, 0, 0,
     "CPU has stayed above its threshold; another replica spreads the load."},
    /* High latency with a hot CPU is a capacity problem; with a CPU that is
     * fine on average it is load piling up on some replicas. */
    {"scale_up_on_latency", "p99_latency_ms", "", MC_RULE_TARGET_SERVICE, SEV(WARNING), 0,
     "cpu_usage", "", 0, ACT(SCALE_UP), 15, 0, 0,
     "p99 latency is high and the service's CPU is hot too; it needs more capacity."},
    {"rebalance_on_latency", "p99_latency_ms", "", MC_RULE_TARGET_SERVICE, SEV(WARNING), 0, "",
     "cpu_usage", 0, ACT(REBALANCE_TRAFFIC), 15, ACT(SCALE_UP), 10,
     "p99 latency is high while the service's CPU is fine on average: load is likely uneven "
     "across replicas, so spread it evenly."},
    {"scale_down_on_low_cpu", "cpu_usage", "cpu_low", MC_RULE_TARGET_SERVICE, 0, SEV(INFO), "", "",
     0, ACT(SCALE_DOWN), 60, 0, 0,
     "CPU has stayed under 10% for a minute; one replica fewer frees capacity."},
    {"drain_unhealthy_node", "node_status", "", MC_RULE_TARGET_NODE, SEV(ERROR), 0, "", "", 0,
     ACT(DRAIN_NODE), 30, 0, 0,
     "The node is degraded or down; moving its replicas to healthy nodes protects the services "
     "on it."},
    {"drain_memory_exhausted_node", "memory_usage", "", MC_RULE_TARGET_NODE, SEV(WARNING), 0, "",
     "", 0, ACT(DRAIN_NODE), 30, 0, 0,
     "The node's memory is nearly exhausted; draining it moves replicas before they are "
     "killed."},
};
#undef SEV
#undef ACT

void mc_decider_rules_builtin(mc_decider_rules *out)
{
    memset(out, 0, sizeof *out);
    size_t n = sizeof builtin_rules / sizeof builtin_rules[0];
    for (size_t i = 0; i < n; i++)
        out->rules[i] = builtin_rules[i];
    out->count = n;
}

mc_rule_target mc_decider_action_target(int action_type)
{
    return action_type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE ? MC_RULE_TARGET_NODE
                                                                          : MC_RULE_TARGET_SERVICE;
}

static int opt_name_ok(const char *s)
{
    return s[0] == '\0' || mc_rulefile_name_ok(s, MC_DECIDER_NAME_MAX);
}

static mc_status validate_rule(const mc_decider_rule *r, const char *file, uint32_t line,
                               mc_error *err)
{
    const char *name = r->name[0] ? r->name : "?";
    static const char name_why[] = "must be 1..47 characters of [A-Za-z0-9_.-]";
    if (!mc_rulefile_name_ok(r->name, sizeof r->name))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "name", name_why);
    if (!opt_name_ok(r->metric))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "metric", name_why);
    if (!opt_name_ok(r->incident_rule))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "incident_rule",
                                 name_why);
    if (!opt_name_ok(r->requires_open))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "requires_open",
                                 name_why);
    if (!opt_name_ok(r->unless_open))
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "unless_open", name_why);
    if (r->action < 1 || r->action > 5)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "action",
                                 "must be RESTART_SERVICE, SCALE_UP, SCALE_DOWN, DRAIN_NODE or "
                                 "REBALANCE_TRAFFIC");
    mc_rule_target want = mc_decider_action_target(r->action);
    if (r->target != want)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "target",
                                 "%s acts on a %s, so target must be %s",
                                 mc_rulefile_action_type_name(r->action),
                                 mc_rulefile_target_name(want), mc_rulefile_target_name(want));
    if (r->min_severity < 0 || r->min_severity > 4)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "min_severity",
                                 "must be INFO, WARNING, ERROR or CRITICAL");
    if (r->max_severity < 0 || r->max_severity > 4)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "max_severity",
                                 "must be INFO, WARNING, ERROR or CRITICAL");
    if (r->min_severity && r->max_severity && r->min_severity > r->max_severity)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "max_severity",
                                 "is below min_severity");
    if (r->cooldown_ticks > MC_DECIDER_TICKS_MAX)
        return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name, "cooldown_ticks",
                                 "at most %u", MC_DECIDER_TICKS_MAX);
    if (r->min_open_ticks > MC_DECIDER_TICKS_MAX)
        return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name, "min_open_ticks",
                                 "at most %u", MC_DECIDER_TICKS_MAX);
    if (r->escalate_to != 0) {
        if (r->escalate_to < 1 || r->escalate_to > 5)
            return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "escalate_to",
                                     "must be an action type");
        if (r->escalate_to == r->action)
            return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "escalate_to",
                                     "must differ from the action");
        if (mc_decider_action_target(r->escalate_to) != want)
            return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "escalate_to",
                                     "%s does not act on a %s",
                                     mc_rulefile_action_type_name(r->escalate_to),
                                     mc_rulefile_target_name(want));
        if (r->escalate_after_ticks < 1 || r->escalate_after_ticks > MC_DECIDER_TICKS_MAX)
            return mc_rulefile_error(err, MC_ERR_RANGE, file, line, name,
                                     "escalate_after_ticks", "must be 1..%u with escalate_to",
                                     MC_DECIDER_TICKS_MAX);
    }
    if (r->reason[0] == '\0' || memchr(r->reason, '\0', sizeof r->reason) == NULL)
        return mc_rulefile_error(err, MC_ERR_INVALID, file, line, name, "reason",
                                 "a sentence for people is required (at most %d bytes)",
                                 MC_DECIDER_REASON_MAX - 1);
    return MC_OK;
}

mc_status mc_decider_rules_validate(const mc_decider_rules *rules, mc_error *err)
{
    if (rules == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "decision rules: NULL rule set");
    if (rules->count > MC_DECIDER_RULES_MAX)
        return mc_error_set(err, MC_ERR_LIMIT, "decision rules: %zu rules, at most %d",
                            rules->count, MC_DECIDER_RULES_MAX);
    if (rules->count == 0)
        return mc_error_set(err, MC_ERR_INVALID, "decision rules: no rule");
    for (size_t i = 0; i < rules->count; i++) {
        mc_status st = validate_rule(&rules->rules[i], "decision rules", 0, err);
        if (st != MC_OK)
            return st;
        for (size_t j = 0; j < i; j++)
            if (strcmp(rules->rules[i].name, rules->rules[j].name) == 0)
                return mc_error_set(err, MC_ERR_EXISTS,
                                    "decision rules: rule \"%s\" is defined twice",
                                    rules->rules[i].name);
    }
    return MC_OK;
}

enum {
    F_NAME = 1 << 0,
    F_METRIC = 1 << 1,
    F_INCIDENT_RULE = 1 << 2,
    F_TARGET = 1 << 3,
    F_MIN_SEV = 1 << 4,
    F_MAX_SEV = 1 << 5,
    F_REQUIRES = 1 << 6,
    F_UNLESS = 1 << 7,
    F_MIN_OPEN = 1 << 8,
    F_ACTION = 1 << 9,
    F_COOLDOWN = 1 << 10,
    F_ESC_TO = 1 << 11,
    F_ESC_AFTER = 1 << 12,
    F_REASON = 1 << 13
};

static const struct {
    const char *key;
    unsigned flag;
} rule_keys[] = {
    {"name", F_NAME},
    {"metric", F_METRIC},
    {"incident_rule", F_INCIDENT_RULE},
    {"target", F_TARGET},
    {"min_severity", F_MIN_SEV},
    {"max_severity", F_MAX_SEV},
    {"requires_open", F_REQUIRES},
    {"unless_open", F_UNLESS},
    {"min_open_ticks", F_MIN_OPEN},
    {"action", F_ACTION},
    {"cooldown_ticks", F_COOLDOWN},
    {"escalate_to", F_ESC_TO},
    {"escalate_after_ticks", F_ESC_AFTER},
    {"reason", F_REASON},
};

typedef struct rule_builder {
    mc_decider_rule rule;
    unsigned seen;
    uint32_t line;
    char label[MC_DECIDER_NAME_MAX + 8];
} rule_builder;

static void builder_start(rule_builder *b, uint32_t line, size_t ordinal)
{
    memset(b, 0, sizeof *b);
    b->line = line;
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
    mc_decider_rule *r = &b->rule;
    const char *v = f->value;
    mc_status st = MC_OK;
    const char *why = "";
    char *name_dst = NULL;
    switch (flag) {
    case F_NAME:
        name_dst = r->name;
        break;
    case F_METRIC:
        name_dst = r->metric;
        break;
    case F_INCIDENT_RULE:
        name_dst = r->incident_rule;
        break;
    case F_REQUIRES:
        name_dst = r->requires_open;
        break;
    case F_UNLESS:
        name_dst = r->unless_open;
        break;
    case F_TARGET:
        st = mc_rulefile_parse_target(v, &r->target);
        why = "must be service or node";
        break;
    case F_MIN_SEV:
        st = mc_rulefile_parse_severity(v, &r->min_severity);
        why = "must be INFO, WARNING, ERROR or CRITICAL";
        break;
    case F_MAX_SEV:
        st = mc_rulefile_parse_severity(v, &r->max_severity);
        why = "must be INFO, WARNING, ERROR or CRITICAL";
        break;
    case F_MIN_OPEN:
        st = mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->min_open_ticks);
        why = "must be a whole number of ticks, 0..1000000";
        break;
    case F_COOLDOWN:
        st = mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->cooldown_ticks);
        why = "must be a whole number of ticks, 0..1000000";
        break;
    case F_ESC_AFTER:
        st = mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->escalate_after_ticks);
        why = "must be a whole number of ticks, 0..1000000";
        break;
    case F_ACTION:
        st = mc_rulefile_parse_action_type(v, &r->action);
        why = "must be RESTART_SERVICE, SCALE_UP, SCALE_DOWN, DRAIN_NODE or REBALANCE_TRAFFIC";
        break;
    case F_ESC_TO:
        st = mc_rulefile_parse_action_type(v, &r->escalate_to);
        why = "must be an action type";
        break;
    case F_REASON:
        st = mc_rulefile_copy(r->reason, sizeof r->reason, v);
        why = "longer than 255 bytes";
        break;
    default:
        break;
    }
    if (name_dst != NULL) {
        if (!mc_rulefile_name_ok(v, MC_DECIDER_NAME_MAX)) {
            st = MC_ERR_INVALID;
            why = "must be 1..47 characters of [A-Za-z0-9_.-]";
        } else {
            st = mc_rulefile_copy(name_dst, MC_DECIDER_NAME_MAX, v);
            if (flag == F_NAME)
                snprintf(b->label, sizeof b->label, "%s", v);
        }
    }
    if (st != MC_OK)
        return mc_rulefile_error(err, st, f->file, f->line, b->label, f->key, "\"%.64s\" %s", v,
                                 why);
    return MC_OK;
}

static mc_status builder_finish(rule_builder *b, const char *file, mc_decider_rules *out,
                                mc_error *err)
{
    static const struct {
        unsigned flag;
        const char *key;
    } required[] = {{F_NAME, "name"}, {F_ACTION, "action"}, {F_REASON, "reason"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(b->seen & required[i].flag))
            return mc_rulefile_error(err, MC_ERR_INVALID, file, b->line, b->label,
                                     required[i].key, "required field missing");
    mc_decider_rule *r = &b->rule;
    /* The target follows from the action unless given (then it must agree). */
    if (!(b->seen & F_TARGET))
        r->target = mc_decider_action_target(r->action);
    mc_status st = validate_rule(r, file, b->line, err);
    if (st != MC_OK)
        return st;
    for (size_t i = 0; i < out->count; i++)
        if (strcmp(out->rules[i].name, r->name) == 0)
            return mc_rulefile_error(err, MC_ERR_EXISTS, file, b->line, b->label, "name",
                                     "a rule of this name is defined earlier in the file");
    if (out->count >= MC_DECIDER_RULES_MAX)
        return mc_rulefile_error(err, MC_ERR_LIMIT, file, b->line, b->label, NULL,
                                 "more than %d rules", MC_DECIDER_RULES_MAX);
    out->rules[out->count++] = *r;
    return MC_OK;
}

mc_status mc_decider_rules_parse(const char *buf, size_t len, const char *file_name,
                                 mc_decider_rules *out, mc_rules_mode *mode, mc_error *err)
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

mc_status mc_decider_rules_load(const char *buf, size_t len, const char *file_name,
                                mc_decider_rules *out, mc_error *err)
{
    mc_decider_rules_builtin(out);
    if (buf == NULL)
        return mc_decider_rules_validate(out, err);
    mc_decider_rules file; /* about 40 KiB on the stack, no allocation to fail */
    mc_rules_mode mode;
    mc_status st = mc_decider_rules_parse(buf, len, file_name, &file, &mode, err);
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
            if (out->count >= MC_DECIDER_RULES_MAX)
                return mc_error_set(err, MC_ERR_LIMIT,
                                    "%s: rule \"%s\": more than %d rules with the built-ins",
                                    file_name ? file_name : "<rules>", file.rules[i].name,
                                    MC_DECIDER_RULES_MAX);
            out->rules[out->count++] = file.rules[i];
        }
    }
    st = mc_decider_rules_validate(out, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "%s", file_name ? file_name : "<rules>");
    return MC_OK;
}
