#include "decider/rules.h"

#include <stddef.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"

/* The shared reader (rulefile.h) finds a rule's name at its start and
 * stores names of MC_RULEFILE_NAME_MAX bytes. */
_Static_assert(offsetof(mc_decider_rule, name) == 0, "a rule starts with its name");
_Static_assert(MC_DECIDER_NAME_MAX == MC_RULEFILE_NAME_MAX, "one name size");

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

/* Checks one rule; line is where it was defined (0 for the built-in table). */
static mc_status validate_rule(const void *rule, const char *file, uint32_t line, mc_error *err)
{
    const mc_decider_rule *r = rule;
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

/* Which fields a [rule] section has set so far. */
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

static const mc_rulefile_field rule_fields[] = {
    {"name", F_NAME, 1},
    {"metric", F_METRIC, 0},
    {"incident_rule", F_INCIDENT_RULE, 0},
    {"target", F_TARGET, 0},
    {"min_severity", F_MIN_SEV, 0},
    {"max_severity", F_MAX_SEV, 0},
    {"requires_open", F_REQUIRES, 0},
    {"unless_open", F_UNLESS, 0},
    {"min_open_ticks", F_MIN_OPEN, 0},
    {"action", F_ACTION, 1},
    {"cooldown_ticks", F_COOLDOWN, 0},
    {"escalate_to", F_ESC_TO, 0},
    {"escalate_after_ticks", F_ESC_AFTER, 0},
    {"reason", F_REASON, 1},
};

static mc_status rule_set(void *rule, unsigned flag, const char *v, const char **why)
{
    mc_decider_rule *r = rule;
    static const char ticks_why[] = "must be a whole number of ticks, 0..1000000";
    static const char severity_why[] = "must be INFO, WARNING, ERROR or CRITICAL";
    switch (flag) {
    case F_NAME:
        return mc_rulefile_set_name(r->name, v, why);
    case F_METRIC:
        return mc_rulefile_set_name(r->metric, v, why);
    case F_INCIDENT_RULE:
        return mc_rulefile_set_name(r->incident_rule, v, why);
    case F_REQUIRES:
        return mc_rulefile_set_name(r->requires_open, v, why);
    case F_UNLESS:
        return mc_rulefile_set_name(r->unless_open, v, why);
    case F_TARGET:
        *why = "must be service or node";
        return mc_rulefile_parse_target(v, &r->target);
    case F_MIN_SEV:
        *why = severity_why;
        return mc_rulefile_parse_severity(v, &r->min_severity);
    case F_MAX_SEV:
        *why = severity_why;
        return mc_rulefile_parse_severity(v, &r->max_severity);
    case F_MIN_OPEN:
        *why = ticks_why;
        return mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->min_open_ticks);
    case F_COOLDOWN:
        *why = ticks_why;
        return mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->cooldown_ticks);
    case F_ESC_AFTER:
        *why = ticks_why;
        return mc_rulefile_parse_u32(v, MC_DECIDER_TICKS_MAX, &r->escalate_after_ticks);
    case F_ACTION:
        *why = "must be RESTART_SERVICE, SCALE_UP, SCALE_DOWN, DRAIN_NODE or REBALANCE_TRAFFIC";
        return mc_rulefile_parse_action_type(v, &r->action);
    case F_ESC_TO:
        *why = "must be an action type";
        return mc_rulefile_parse_action_type(v, &r->escalate_to);
    case F_REASON:
        *why = "longer than 255 bytes";
        return mc_rulefile_copy(r->reason, sizeof r->reason, v);
    default:
        return MC_OK;
    }
}

/* The target follows from the action unless given (then it must agree). */
static void rule_complete(void *rule, unsigned seen)
{
    mc_decider_rule *r = rule;
    if (!(seen & F_TARGET))
        r->target = mc_decider_action_target(r->action);
}

static const mc_rulefile_schema schema = {
    .what = "decision rules",
    .fields = rule_fields,
    .field_count = sizeof rule_fields / sizeof rule_fields[0],
    .name_flag = F_NAME,
    .rule_size = sizeof(mc_decider_rule),
    .rule_cap = MC_DECIDER_RULES_MAX,
    .start = NULL,
    .set = rule_set,
    .complete = rule_complete,
    .validate = validate_rule,
};

mc_status mc_decider_rules_validate(const mc_decider_rules *rules, mc_error *err)
{
    return mc_rulefile_rules_validate(&schema, rules ? rules->rules : NULL,
                                      rules ? rules->count : 0, err);
}

mc_status mc_decider_rules_parse(const char *buf, size_t len, const char *file_name,
                                 mc_decider_rules *out, mc_rules_mode *mode, mc_error *err)
{
    mc_decider_rule scratch;
    return mc_rulefile_rules_parse(&schema, buf, len, file_name, out->rules, &out->count,
                                   &scratch, mode, err);
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
    return mc_rulefile_rules_apply(&schema, out->rules, &out->count, file.rules, file.count,
                                   mode, file_name, err);
}
