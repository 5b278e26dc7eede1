/* Tests of the scenario parser (engine/core/scenario.h): the shipped
 * scenarios load, and every kind of bad input is rejected with the file, the
 * line and the field named. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/core/scenario.h"
#include "engine/core/sort.h"
#include "sim/v1/events.pb-c.h"

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static void load_shipped(const char *name, mc_scenario *sc)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.scenario", MC_SCENARIO_DIR, name);
    size_t len = 0;
    char *buf = read_file(path, &len);
    assert_non_null(buf);
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_scenario_parse(buf, len, path, sc, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    free(buf);
}

static void test_shipped_scenarios_load(void **state)
{
    (void)state;
    const char *names[] = {"normal", "high_load", "cascade_failure"};
    for (size_t i = 0; i < 3; i++) {
        mc_scenario sc;
        load_shipped(names[i], &sc);
        assert_string_equal(sc.name, names[i]);
        assert_int_equal(sc.n_nodes, 5);
        assert_int_equal(sc.n_services, 13);
        long gw = mc_scenario_service_find(&sc, "edge-gateway");
        assert_true(gw >= 0);
        assert_int_equal(sc.services[gw].dep_count, 5);
        assert_int_equal(sc.services[gw].replicas, 3);
        long db = mc_scenario_service_find(&sc, "database");
        assert_int_equal(sc.services[db].dep_count, 0);
        assert_int_equal(sc.tick_ms, 1000);
        mc_scenario_free(&sc);
    }
    mc_scenario sc;
    load_shipped("cascade_failure", &sc);
    assert_int_equal(sc.n_faults, 2);
    assert_int_equal(sc.faults[1].type, SIM__V1__FAULT_TYPE__FAULT_TYPE_ERROR_BURST);
    assert_int_equal(sc.faults[1].target_kind, MC_TARGET_SERVICE);
    assert_string_equal(sc.services[sc.faults[1].target_index].id, "database");
    assert_int_equal(sc.faults[1].start_tick, 30);
    mc_scenario_free(&sc);
    load_shipped("high_load", &sc);
    assert_true(sc.traffic.ramp_multiplier == 3.0);
    assert_int_equal(sc.traffic.ramp_ticks, 60);
    mc_scenario_free(&sc);
}

/* A minimal valid scenario; the line numbers are used below. */
#define BASE                                                                                       \
    "[scenario]\n"              /* 1 */                                                            \
    "name = t\n"                /* 2 */                                                            \
    "[node]\n"                  /* 3 */                                                            \
    "id = n1\n"                 /* 4 */                                                            \
    "cpu_cores = 8\n"           /* 5 */                                                            \
    "memory_mb = 1024\n"        /* 6 */                                                            \
    "[service]\n"               /* 7 */                                                            \
    "id = a\n"                  /* 8 */                                                            \
    "cpu_ms_per_request = 5\n"  /* 9 */                                                            \
    "depends_on = b:0.5\n"      /* 10 */                                                           \
    "[service]\n"               /* 11 */                                                           \
    "id = b\n"                  /* 12 */                                                           \
    "cpu_ms_per_request = 5\n"  /* 13 */

static void expect_error(const char *text, const char *want)
{
    mc_scenario sc;
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_scenario_parse(text, strlen(text), "t.scenario", &sc, &err);
    if (st == MC_OK)
        fail_msg("accepted, expected error containing: %s", want);
    assert_int_equal(st, MC_ERR_PARSE);
    if (strstr(err.msg, want) == NULL)
        fail_msg("error\n  %s\ndoes not contain\n  %s", err.msg, want);
    assert_null(sc.nodes);
    assert_null(sc.services);
}

static void test_base_is_valid(void **state)
{
    (void)state;
    mc_scenario sc;
    mc_error err;
    assert_int_equal(mc_scenario_parse(BASE, strlen(BASE), "t.scenario", &sc, &err), MC_OK);
    assert_int_equal(sc.n_services, 2);
    assert_int_equal(sc.n_deps, 1);
    assert_int_equal(sc.deps[0].service, 1);
    assert_true(sc.deps[0].ratio == 0.5);
    /* Defaults of fields not given. */
    assert_int_equal(sc.services[0].replicas, 2);
    assert_true(sc.services[0].timeout_ms == 3000.0);
    mc_scenario copy;
    assert_int_equal(mc_scenario_copy(&copy, &sc, &err), MC_OK);
    assert_string_equal(copy.services[1].id, "b");
    assert_ptr_not_equal(copy.services, sc.services);
    mc_scenario_free(&copy);
    mc_scenario_free(&sc);
    mc_scenario_free(NULL);
}

static void test_bad_fields_named(void **state)
{
    (void)state;
    /* Each bad field is named with file:line and what was expected. */
    expect_error("[scenario]\nname = t\n[node]\nid = n1\ncpu_cores = x\nmemory_mb = 1\n",
                 "t.scenario:5: field \"cpu_cores\": expected a positive number, got \"x\"");
    expect_error("[scenario]\nname = t\n[node]\nid = n1\ncpu_cores = 4\nmemory_mb = -5\n",
                 "t.scenario:6: field \"memory_mb\": expected a positive number, got \"-5\"");
    expect_error("[scenario]\nname = t\ntick_ms = 0\n",
                 "t.scenario:3: field \"tick_ms\": expected a whole number from 1 to 86400000, "
                 "got \"0\"");
    expect_error("[scenario]\nname = bad name\n", "t.scenario:2: field \"name\": expected an id");
    expect_error("[scenario]\nname = t\nstart_time_unix_ms = soon\n",
                 "t.scenario:3: field \"start_time_unix_ms\": expected a whole number, got "
                 "\"soon\"");
    expect_error(BASE "replicas = 0\n", "t.scenario:14: field \"replicas\": expected a whole "
                                        "number from 1 to 1000, got \"0\"");
    expect_error(BASE "replicas = 4\nmax_replicas = 3\n",
                 "t.scenario:15: field \"max_replicas\": expected at least replicas (4), got "
                 "\"3\"");
    expect_error(BASE "memory_baseline_mb = 512\nmemory_limit_mb = 256\n",
                 "t.scenario:15: field \"memory_limit_mb\": expected at least memory_baseline_mb");
    expect_error(BASE "external_rps = lots\n",
                 "t.scenario:14: field \"external_rps\": expected a number from 0 to 1e+07, got "
                 "\"lots\"");
    expect_error(BASE "cpu_cores_per_replica = nan\n",
                 "t.scenario:14: field \"cpu_cores_per_replica\": expected a positive number, "
                 "got \"nan\"");
    expect_error("[scenario]\nname = t\n[traffic]\ndaily_amplitude = 2\n",
                 "t.scenario:4: field \"daily_amplitude\": expected a number from 0 to 1, got "
                 "\"2\"");
    expect_error(BASE "[fault]\ntype = meteor\n",
                 "t.scenario:15: field \"type\": expected one of node_crash");
    expect_error(BASE "[fault]\ntype = error_burst\ntarget = b\nintensity = 0.5\nstart_tick = "
                      "soon\n",
                 "t.scenario:18: field \"start_tick\": expected a whole number from 0 to");
    expect_error(BASE "[fault]\ntype = error_burst\ntarget = b\nintensity = 2\n",
                 "t.scenario:17: field \"intensity\": expected a number above 0, at most 1 for "
                 "error_burst, got \"2\"");
    expect_error(BASE "[fault]\ntype = error_burst\ntarget = zz\nintensity = 0.5\n",
                 "t.scenario:16: field \"target\": unknown node or service \"zz\"");
    expect_error(BASE "[fault]\ntype = node_crash\ntarget = b\nintensity = 1\n",
                 "t.scenario:16: field \"target\": node_crash needs a node, \"b\" is a service");
    expect_error(BASE "[fault]\ntype = error_burst\ntarget = n1\nintensity = 0.5\n",
                 "t.scenario:16: field \"target\": error_burst needs a service, \"n1\" is a node");
    expect_error(BASE "[fault]\ntype = error_burst\ntarget = b\n",
                 "t.scenario:14: [fault] is missing field \"intensity\"");
    expect_error("[scenario]\nname = t\n[node]\nid = n1\ncpu_cores = 4\n",
                 "t.scenario:3: [node] is missing field \"memory_mb\"");
    /* Dependencies. */
    expect_error(BASE "depends_on = nowhere\n",
                 "t.scenario:14: field \"depends_on\": unknown service \"nowhere\"");
    expect_error(BASE "depends_on = a:zero\n",
                 "t.scenario:14: field \"depends_on\": expected a call ratio above 0, at most "
                 "100, after the ':', got \"zero\"");
    expect_error(BASE "depends_on = a, a\n",
                 "t.scenario:14: field \"depends_on\": \"a\" is listed twice");
    /* Ids. */
    expect_error(BASE "[service]\nid = a\ncpu_ms_per_request = 1\n",
                 "t.scenario:14: field \"id\": duplicate service id \"a\" (first on line 7)");
    expect_error(BASE "[node]\nid = a\ncpu_cores = 1\nmemory_mb = 1\n",
                 "t.scenario:14: field \"id\": \"a\" names both a node and a service");
}

static void test_cycles_rejected(void **state)
{
    (void)state;
    /* b calls a, a calls b. */
    expect_error(BASE "depends_on = a\n",
                 "t.scenario:10: field \"depends_on\": dependency cycle a -> b -> a");
    /* A service calling itself. */
    expect_error("[scenario]\nname = t\n[node]\nid = n\ncpu_cores = 1\nmemory_mb = 1\n"
                 "[service]\nid = s\ncpu_ms_per_request = 1\ndepends_on = s\n",
                 "t.scenario:10: field \"depends_on\": dependency cycle s -> s");
    /* A longer cycle behind an acyclic prefix. */
    expect_error("[scenario]\nname = t\n[node]\nid = n\ncpu_cores = 1\nmemory_mb = 1\n"
                 "[service]\nid = top\ncpu_ms_per_request = 1\ndepends_on = x\n"
                 "[service]\nid = x\ncpu_ms_per_request = 1\ndepends_on = y\n"
                 "[service]\nid = y\ncpu_ms_per_request = 1\ndepends_on = z\n"
                 "[service]\nid = z\ncpu_ms_per_request = 1\ndepends_on = x\n",
                 "field \"depends_on\": dependency cycle x -> y -> z -> x");
}

static void test_structure_errors(void **state)
{
    (void)state;
    expect_error(BASE "colour = blue\n", "t.scenario:14: unknown field \"colour\" in [service]");
    expect_error("[scenario]\nname = t\nname = u\n",
                 "t.scenario:3: field \"name\": given twice in this [scenario] (first on line 2)");
    expect_error("[scenario]\nname = t\n[weather]\n", "t.scenario:3: unknown section [weather]");
    expect_error("[scenario]\nname = t\n[scenario]\nname = u\n",
                 "t.scenario:3: a second [scenario] section (the first is on line 1)");
    expect_error("name = t\n", "t.scenario:1: field \"name\" comes before any [section] header");
    expect_error("[scenario]\nname = t\njust words\n",
                 "t.scenario:3: expected \"key = value\" or a [section] header, got \"just "
                 "words\"");
    expect_error("[scenario\n", "t.scenario:1: expected a section header like [node]");
    expect_error("[node]\nid = n\ncpu_cores = 1\nmemory_mb = 1\n",
                 "t.scenario: missing [scenario] section");
    expect_error("[scenario]\nname = t\n[service]\nid = a\ncpu_ms_per_request = 1\n",
                 "t.scenario: a scenario needs at least one [node]");
    expect_error("", "t.scenario: missing [scenario] section");
    static const char nul[] = "[scenario]\nna\0me = t\n";
    mc_scenario sc;
    mc_error err;
    assert_int_equal(mc_scenario_parse(nul, sizeof nul - 1, "t.scenario", &sc, &err),
                     MC_ERR_PARSE);
    assert_non_null(strstr(err.msg, "t.scenario:2: NUL byte"));
    char *long_line = malloc(MC_SCENARIO_MAX_LINE + 64);
    assert_non_null(long_line);
    memset(long_line, 'x', MC_SCENARIO_MAX_LINE + 10);
    long_line[MC_SCENARIO_MAX_LINE + 10] = '\0';
    expect_error(long_line, "t.scenario:1: line longer than");
    free(long_line);
}

static void test_comments_and_whitespace(void **state)
{
    (void)state;
    const char *text = "# leading comment\r\n"
                       "[scenario]   \r\n"
                       "  name =   t   # trailing comment\r\n"
                       "description = stock#1 stays\r\n"
                       "\r\n"
                       "[node]\r\n"
                       "id=n1\r\n"
                       "cpu_cores=8\r\n"
                       "memory_mb = 1024\r\n"
                       "[service]\r\n"
                       "id = a\r\n"
                       "cpu_ms_per_request = 2.5e0\r\n"
                       "depends_on =\r\n";
    mc_scenario sc;
    mc_error err;
    mc_status st = mc_scenario_parse(text, strlen(text), "t.scenario", &sc, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    assert_string_equal(sc.name, "t");
    assert_string_equal(sc.description, "stock#1 stays");
    assert_true(sc.services[0].cpu_ms_per_request == 2.5);
    assert_int_equal(sc.services[0].dep_count, 0);
    mc_scenario_free(&sc);
}

/* dep_order puts dependencies first and breaks ties by rank. */
static void test_dep_order(void **state)
{
    (void)state;
    /* 0 -> 2, 1 -> 2, 3 -> (none); ranks reverse the indices. */
    uint32_t first[] = {0, 1, 2, 2};
    uint32_t count[] = {1, 1, 0, 0};
    uint32_t target[] = {2, 2};
    uint32_t rank[] = {3, 2, 1, 0};
    uint32_t order[4], cycle[4];
    size_t cycle_len = 99;
    assert_int_equal(mc_scenario_dep_order(4, first, count, target, rank, order, cycle, &cycle_len),
                     MC_OK);
    assert_int_equal(cycle_len, 0);
    /* Ready at once: 3 (rank 0) and 2 (rank 1); then 1 (rank 2), 0. */
    assert_int_equal(order[0], 3);
    assert_int_equal(order[1], 2);
    assert_int_equal(order[2], 1);
    assert_int_equal(order[3], 0);
}

static int cmp_mod(const void *ctx, uint32_t a, uint32_t b)
{
    (void)ctx;
    return (int)(a % 10) - (int)(b % 10);
}

static void test_sort_stable(void **state)
{
    (void)state;
    uint32_t v[200], scratch[200];
    for (uint32_t i = 0; i < 200; i++)
        v[i] = (i * 7919u) % 1000u;
    mc_sort_u32(v, 200, scratch, cmp_mod, NULL);
    for (size_t i = 1; i < 200; i++) {
        assert_true(v[i - 1] % 10 <= v[i] % 10);
    }
    /* Stability: equal keys keep their input order, i.e. their position in
     * the (i * 7919) % 1000 sequence. */
    for (size_t i = 1; i < 200; i++) {
        if (v[i - 1] % 10 != v[i] % 10)
            continue;
        size_t pa = 0, pb = 0;
        for (uint32_t k = 0; k < 200; k++) {
            if ((k * 7919u) % 1000u == v[i - 1])
                pa = k;
            if ((k * 7919u) % 1000u == v[i])
                pb = k;
        }
        assert_true(pa < pb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_scenarios_load),
        cmocka_unit_test(test_base_is_valid),
        cmocka_unit_test(test_bad_fields_named),
        cmocka_unit_test(test_cycles_rejected),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_comments_and_whitespace),
        cmocka_unit_test(test_dep_order),
        cmocka_unit_test(test_sort_stable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
