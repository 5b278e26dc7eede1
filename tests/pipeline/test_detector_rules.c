/* Detection rules: the built-in table and the rules-file parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "detector/rules.h"

static mc_detector_rules *rules_new(void)
{
    mc_detector_rules *r = calloc(1, sizeof *r);
    assert_non_null(r);
    return r;
}

static const mc_detector_rule *find_rule(const mc_detector_rules *r, const char *name)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->rules[i].name, name) == 0)
            return &r->rules[i];
    return NULL;
}

static void test_builtin_has_seed_rules(void **state)
{
    (void)state;
    mc_detector_rules *r = rules_new();
    mc_detector_rules_builtin(r);
    mc_error err;
    assert_int_equal(mc_detector_rules_validate(r, &err), MC_OK);
    const mc_detector_rule *e5 = find_rule(r, "error_rate_high");
    const mc_detector_rule *e10 = find_rule(r, "error_rate_critical");
    assert_non_null(e5);
    assert_non_null(e10);
    assert_true(e5->threshold == 5.0 && e10->threshold == 10.0);
    assert_int_equal(e5->severity, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_WARNING);
    assert_int_equal(e10->severity, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL);
    assert_string_equal(e5->group, e10->group);
    assert_true(find_rule(r, "cpu_high")->threshold == 85.0);
    assert_true(find_rule(r, "cpu_critical")->threshold == 95.0);
    assert_true(find_rule(r, "memory_high")->threshold == 90.0);
    assert_true(find_rule(r, "latency_p99_high")->threshold == 500.0);
    const mc_detector_rule *low = find_rule(r, "cpu_low");
    assert_non_null(low);
    assert_int_equal(low->op, MC_RULE_OP_LT);
    assert_int_equal(low->window_seconds, 60);
    assert_int_equal(low->severity, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_INFO);
    free(r);
}

static void test_operators(void **state)
{
    (void)state;
    assert_true(mc_rule_op_holds(MC_RULE_OP_GT, 5.1, 5));
    assert_false(mc_rule_op_holds(MC_RULE_OP_GT, 5, 5));
    assert_true(mc_rule_op_holds(MC_RULE_OP_GTE, 5, 5));
    assert_false(mc_rule_op_holds(MC_RULE_OP_GTE, 4.9, 5));
    assert_true(mc_rule_op_holds(MC_RULE_OP_LT, 4.9, 5));
    assert_false(mc_rule_op_holds(MC_RULE_OP_LT, 5, 5));
    assert_true(mc_rule_op_holds(MC_RULE_OP_LTE, 5, 5));
    assert_false(mc_rule_op_holds(MC_RULE_OP_LTE, 5.1, 5));
    assert_true(mc_rule_op_holds(MC_RULE_OP_EQ, 3, 3));
    assert_false(mc_rule_op_holds(MC_RULE_OP_EQ, 3.0000001, 3));
}

static const char good_file[] = "# comment\n"
                                "; another comment\n"
                                "mode = replace\n"
                                "\n"
                                "[rule]\n"
                                "name = slow\n"
                                "metric = p99_latency_ms\n"
                                "operator = gte\n"
                                "threshold = 250.5\n"
                                "window_seconds = 15\n"
                                "aggregation = max\n"
                                "for_ticks = 4\n"
                                "clear_ticks = 6\n"
                                "severity = ERROR\n"
                                "group = latency\n"
                                "title = Slow responses\n"
                                "target = service\n"
                                "  [ rule ]  \r\n"
                                "name = minimal\r\n"
                                "metric = cpu_usage\n"
                                "operator = lt\n"
                                "threshold = -1.5e1\n"
                                "severity = 1\n";

static void test_parse_good_file(void **state)
{
    (void)state;
    mc_detector_rules *r = rules_new();
    mc_rules_mode mode;
    mc_error err;
    assert_int_equal(mc_detector_rules_parse(good_file, strlen(good_file), "good.rules", r, &mode,
                                             &err),
                     MC_OK);
    assert_int_equal(mode, MC_RULES_MODE_REPLACE);
    assert_int_equal(r->count, 2);
    const mc_detector_rule *a = &r->rules[0];
    assert_string_equal(a->name, "slow");
    assert_string_equal(a->metric, "p99_latency_ms");
    assert_int_equal(a->op, MC_RULE_OP_GTE);
    assert_true(a->threshold == 250.5);
    assert_int_equal(a->window_seconds, 15);
    assert_int_equal(a->agg, MC_RULE_AGG_MAX);
    assert_int_equal(a->for_ticks, 4);
    assert_int_equal(a->clear_ticks, 6);
    assert_int_equal(a->severity, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_ERROR);
    assert_string_equal(a->group, "latency");
    assert_string_equal(a->title, "Slow responses");
    assert_int_equal(a->target, MC_RULE_TARGET_SERVICE);
    /* Defaults: group and title from the name, avg, 1 tick holds. */
    const mc_detector_rule *b = &r->rules[1];
    assert_string_equal(b->group, "minimal");
    assert_string_equal(b->title, "minimal");
    assert_int_equal(b->agg, MC_RULE_AGG_AVG);
    assert_int_equal(b->for_ticks, 1);
    assert_int_equal(b->clear_ticks, 1);
    assert_int_equal(b->window_seconds, 0);
    assert_true(b->threshold == -15.0);
    assert_int_equal(b->target, MC_RULE_TARGET_ANY);

    /* load in replace mode: only the file's rules. */
    assert_int_equal(mc_detector_rules_load(good_file, strlen(good_file), "good.rules", r, &err),
                     MC_OK);
    assert_int_equal(r->count, 2);
    free(r);
}

static void test_load_extend_replaces_by_name(void **state)
{
    (void)state;
    static const char file[] = "mode = extend\n"
                               "[rule]\nname = cpu_high\nmetric = cpu_usage\noperator = gt\n"
                               "threshold = 80\nseverity = WARNING\ngroup = cpu\n"
                               "[rule]\nname = rps_zero\nmetric = requests_per_second\n"
                               "operator = eq\nthreshold = 0\nseverity = ERROR\n";
    mc_detector_rules *builtin = rules_new();
    mc_detector_rules *r = rules_new();
    mc_detector_rules_builtin(builtin);
    mc_error err;
    assert_int_equal(mc_detector_rules_load(file, strlen(file), "x.rules", r, &err), MC_OK);
    assert_int_equal(r->count, builtin->count + 1);
    /* cpu_high kept its place in the table with the new threshold. */
    for (size_t i = 0; i < builtin->count; i++)
        assert_string_equal(r->rules[i].name, builtin->rules[i].name);
    assert_true(find_rule(r, "cpu_high")->threshold == 80.0);
    assert_string_equal(r->rules[r->count - 1].name, "rps_zero");
    /* No mode line means extend. */
    static const char nomode[] = "[rule]\nname = z\nmetric = m\noperator = gt\nthreshold = 1\n"
                                 "severity = INFO\n";
    assert_int_equal(mc_detector_rules_load(nomode, strlen(nomode), "y.rules", r, &err), MC_OK);
    assert_int_equal(r->count, builtin->count + 1);
    /* NULL buffer: the built-ins. */
    assert_int_equal(mc_detector_rules_load(NULL, 0, NULL, r, &err), MC_OK);
    assert_int_equal(r->count, builtin->count);
    free(builtin);
    free(r);
}

/* Each bad file must fail with a message naming file, line, rule and field. */
static void expect_error(const char *text, const char *file, const char *want1, const char *want2,
                         const char *want3)
{
    mc_detector_rules *r = rules_new();
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_detector_rules_load(text, strlen(text), file, r, &err);
    if (st == MC_OK || strstr(err.msg, want1) == NULL ||
        (want2 && strstr(err.msg, want2) == NULL) || (want3 && strstr(err.msg, want3) == NULL))
        fail_msg("input <<%s>>: status %d, message \"%s\", wanted \"%s\" \"%s\" \"%s\"", text,
                 (int)st, err.msg, want1, want2 ? want2 : "", want3 ? want3 : "");
    free(r);
}

#define RULE_HEAD "[rule]\nname = r1\nmetric = cpu_usage\n"
static void test_errors_name_file_line_rule_field(void **state)
{
    (void)state;
    expect_error(RULE_HEAD "operator = gtx\nthreshold = 5\nseverity = INFO\n", "a.rules",
                 "a.rules:4:", "rule \"r1\"", "field \"operator\"");
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5x\nseverity = INFO\n", "a.rules",
                 "a.rules:5:", "rule \"r1\"", "field \"threshold\"");
    expect_error(RULE_HEAD "operator = gt\nthreshold = nan\nseverity = INFO\n", "a.rules",
                 "a.rules:5:", "field \"threshold\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 1e999\nseverity = INFO\n", "a.rules",
                 "a.rules:5:", "field \"threshold\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = HUGE\n", "a.rules",
                 "a.rules:6:", "field \"severity\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = INFO\nfor_ticks = 0\n",
                 "a.rules", "a.rules:7:", "field \"for_ticks\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = INFO\naggregation = p50\n",
                 "a.rules", "a.rules:7:", "field \"aggregation\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = INFO\nwindow_seconds = -3\n",
                 "a.rules", "a.rules:7:", "field \"window_seconds\"", NULL);
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = INFO\ncolour = red\n",
                 "a.rules", "a.rules:7:", "field \"colour\"", "unknown field");
    expect_error(RULE_HEAD "operator = gt\noperator = lt\nthreshold = 5\nseverity = INFO\n",
                 "a.rules", "a.rules:5:", "field \"operator\"", "twice");
    /* A missing field is reported at the rule's header line. */
    expect_error(RULE_HEAD "operator = gt\nseverity = INFO\n[rule]\n", "b.rules", "b.rules:1:",
                 "rule \"r1\"", "field \"threshold\"");
    expect_error("[rule]\nmetric = cpu_usage\noperator = gt\nthreshold = 5\nseverity = INFO\n",
                 "b.rules", "b.rules:1:", "rule \"#1\"", "field \"name\"");
    expect_error(RULE_HEAD "operator = gt\nthreshold = 5\nseverity = INFO\n" RULE_HEAD
                 "operator = gt\nthreshold = 6\nseverity = INFO\n",
                 "c.rules", "c.rules:7:", "rule \"r1\"", "defined earlier");
    expect_error("[rule]\nname = bad name\n", "d.rules", "d.rules:2:", "field \"name\"", NULL);
    expect_error("[rules]\n", "e.rules", "e.rules:1:", "unknown section", NULL);
    expect_error("[rule\n", "e.rules", "e.rules:1:", "']'", NULL);
    expect_error("threshold = 5\n", "f.rules", "f.rules:1:", "field \"threshold\"", "mode");
    expect_error("mode = sideways\n", "f.rules", "f.rules:1:", "field \"mode\"", NULL);
    expect_error(RULE_HEAD "mode = replace\n", "f.rules", "f.rules:4:", "mode", NULL);
    expect_error("\n\njust words\n", "g.rules", "g.rules:3:", "key = value", NULL);
    expect_error("mode = replace\n", "h.rules", "h.rules", "no rule", NULL);
    static const char nul[] = "[rule]\nname = a\0b\n";
    mc_detector_rules *r = rules_new();
    mc_error err;
    assert_int_equal(mc_detector_rules_load(nul, sizeof nul - 1, "n.rules", r, &err),
                     MC_ERR_PARSE);
    assert_non_null(strstr(err.msg, "n.rules:2:"));
    free(r);
    char *longline = malloc(3000);
    assert_non_null(longline);
    memset(longline, 'x', 2999);
    longline[2999] = '\0';
    expect_error(longline, "i.rules", "i.rules:1:", "longer than", NULL);
    free(longline);
}

static void test_too_many_rules(void **state)
{
    (void)state;
    size_t cap = 80 * 120;
    char *buf = calloc(1, cap);
    assert_non_null(buf);
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "mode = replace\n");
    for (int i = 0; i < MC_DETECTOR_RULES_MAX + 1; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "[rule]\nname = r%d\nmetric = m\noperator = gt\nthreshold = 1\n"
                              "severity = INFO\n",
                              i);
    mc_detector_rules *r = rules_new();
    mc_error err;
    assert_int_equal(mc_detector_rules_load(buf, n, "many.rules", r, &err), MC_ERR_LIMIT);
    assert_non_null(strstr(err.msg, "many.rules:"));
    assert_non_null(strstr(err.msg, "r64"));
    free(r);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_has_seed_rules),
        cmocka_unit_test(test_operators),
        cmocka_unit_test(test_parse_good_file),
        cmocka_unit_test(test_load_extend_replaces_by_name),
        cmocka_unit_test(test_errors_name_file_line_rule_field),
        cmocka_unit_test(test_too_many_rules),
    };
    return cmocka_run_group_tests_name("detector_rules", tests, NULL, NULL);
}
