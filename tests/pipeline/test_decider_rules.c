/* Decision rules: the built-in table and the rules-file parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "decider/rules.h"

#define ACT(a) COMMON__V1__ACTION_TYPE__ACTION_TYPE_##a

static void test_builtin_covers_every_action(void **state)
{
    (void)state;
    mc_decider_rules *r = calloc(1, sizeof *r);
    assert_non_null(r);
    mc_decider_rules_builtin(r);
    mc_error err;
    assert_int_equal(mc_decider_rules_validate(r, &err), MC_OK);
    int seen[6] = {0};
    for (size_t i = 0; i < r->count; i++) {
        seen[r->rules[i].action] = 1;
        assert_true(strlen(r->rules[i].reason) > 20);
    }
    for (int a = 1; a <= 5; a++)
        assert_true(seen[a]);
    free(r);
}

static void test_parse_and_extend(void **state)
{
    (void)state;
    static const char file[] =
        "mode = extend\n"
        "[rule]\n"
        "name = restart_on_critical_errors\n"
        "metric = error_rate\n"
        "min_severity = ERROR\n"
        "action = RESTART_SERVICE\n"
        "cooldown_ticks = 7\n"
        "escalate_to = ACTION_TYPE_SCALE_UP\n"
        "escalate_after_ticks = 4\n"
        "reason = Errors are high; a restart usually clears them.\n"
        "[rule]\n"
        "name = drain_on_cpu\n"
        "metric = cpu_usage\n"
        "target = node\n"
        "min_severity = critical\n"
        "max_severity = CRITICAL\n"
        "requires_open = memory_usage\n"
        "unless_open = node_status\n"
        "min_open_ticks = 3\n"
        "incident_rule = cpu_critical\n"
        "action = drain_node\n"
        "reason = The node is overloaded; move work away.\n";
    mc_decider_rules *r = calloc(1, sizeof *r), *b = calloc(1, sizeof *b);
    assert_non_null(r);
    assert_non_null(b);
    mc_decider_rules_builtin(b);
    mc_error err;
    if (mc_decider_rules_load(file, strlen(file), "d.rules", r, &err) != MC_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(r->count, b->count + 1);
    const mc_decider_rule *x = &r->rules[0];
    assert_string_equal(x->name, "restart_on_critical_errors");
    assert_int_equal(x->min_severity, 3);
    assert_int_equal(x->cooldown_ticks, 7);
    assert_int_equal(x->escalate_to, ACT(SCALE_UP));
    assert_int_equal(x->escalate_after_ticks, 4);
    assert_int_equal(x->target, MC_RULE_TARGET_SERVICE); /* from the action */
    const mc_decider_rule *y = &r->rules[r->count - 1];
    assert_int_equal(y->action, ACT(DRAIN_NODE));
    assert_int_equal(y->target, MC_RULE_TARGET_NODE);
    assert_string_equal(y->requires_open, "memory_usage");
    assert_string_equal(y->unless_open, "node_status");
    assert_string_equal(y->incident_rule, "cpu_critical");
    assert_int_equal(y->min_open_ticks, 3);
    assert_int_equal(y->max_severity, 4);
    free(r);
    free(b);
}

static void expect_error(const char *text, const char *want1, const char *want2,
                         const char *want3)
{
    mc_decider_rules *r = calloc(1, sizeof *r);
    assert_non_null(r);
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_decider_rules_load(text, strlen(text), "p.rules", r, &err);
    if (st == MC_OK || strstr(err.msg, want1) == NULL ||
        (want2 && strstr(err.msg, want2) == NULL) || (want3 && strstr(err.msg, want3) == NULL))
        fail_msg("input <<%s>>: status %d, message \"%s\"", text, (int)st, err.msg);
    free(r);
}

#define HEAD "[rule]\nname = r1\n"
#define REASON "reason = Because.\n"
static void test_errors_named(void **state)
{
    (void)state;
    expect_error(HEAD "action = REBOOT\n" REASON, "p.rules:3:", "rule \"r1\"", "field \"action\"");
    expect_error(HEAD "action = DRAIN_NODE\ntarget = service\n" REASON, "p.rules:1:",
                 "field \"target\"", "node");
    expect_error(HEAD "action = SCALE_UP\nescalate_to = SCALE_UP\nescalate_after_ticks = 3\n" REASON,
                 "p.rules:1:", "field \"escalate_to\"", NULL);
    expect_error(HEAD "action = SCALE_UP\nescalate_to = DRAIN_NODE\nescalate_after_ticks = 3\n"
                 REASON,
                 "p.rules:1:", "field \"escalate_to\"", NULL);
    expect_error(HEAD "action = RESTART_SERVICE\nescalate_to = SCALE_UP\n" REASON, "p.rules:1:",
                 "field \"escalate_after_ticks\"", NULL);
    expect_error(HEAD "action = SCALE_UP\n", "p.rules:1:", "field \"reason\"", "required");
    expect_error(HEAD "action = SCALE_UP\nmin_severity = ERROR\nmax_severity = WARNING\n" REASON,
                 "p.rules:1:", "field \"max_severity\"", NULL);
    expect_error(HEAD "action = SCALE_UP\ncooldown_ticks = soon\n" REASON, "p.rules:4:",
                 "field \"cooldown_ticks\"", NULL);
    expect_error(HEAD "action = SCALE_UP\nwhen = now\n" REASON, "p.rules:4:", "field \"when\"",
                 "unknown");
    expect_error(HEAD "action = SCALE_UP\nrequires_open = cpu usage\n" REASON, "p.rules:4:",
                 "field \"requires_open\"", NULL);
    expect_error("[policy]\n", "p.rules:1:", "unknown section", NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_covers_every_action),
        cmocka_unit_test(test_parse_and_extend),
        cmocka_unit_test(test_errors_named),
    };
    return cmocka_run_group_tests_name("decider_rules", tests, NULL, NULL);
}
