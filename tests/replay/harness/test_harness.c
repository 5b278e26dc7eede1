/* replay/harness: scripts, setup, closed loop, re-drive, message diff. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness/loop.h"
#include "harness/msgdiff.h"
#include "harness/redrive.h"
#include "harness/script.h"
#include "harness/setup.h"
#include "harness/subjects.h"
#include "ops/v1/incidents.pb-c.h"
#include "trace/writer.h"

static mc_run_setup setup_a, setup_b;

static void test_script_parse(void **state)
{
    (void)state;
    const char *txt = "# comment\n"
                      "40 SCALE_UP reject too late  \n"
                      "\n"
                      "36 RESTART_SERVICE:database approve\n"
                      "36 :checkout reject\n"
                      "36 * approve\n"
                      "37 cart approve\r\n";
    mc_script s;
    mc_error err = {0};
    assert_int_equal(mc_script_parse(txt, strlen(txt), "d.txt", &s, &err), MC_OK);
    assert_int_equal(s.count, 5);
    /* Sorted by tick, file order kept within a tick. */
    assert_int_equal(s.items[0].tick, 36);
    assert_int_equal(s.items[0].line, 4);
    assert_true(s.items[0].approve);
    assert_string_equal(s.items[0].target, "database");
    assert_int_equal(s.items[1].line, 5);
    assert_false(s.items[1].approve);
    assert_non_null(strstr(s.items[1].reason, "line 5"));
    assert_int_equal(s.items[4].tick, 40);
    assert_string_equal(s.items[4].reason, "too late");
    assert_true(mc_script_matches(&s.items[0], 1, "database")); /* RESTART_SERVICE = 1 */
    assert_false(mc_script_matches(&s.items[0], 1, "cart"));
    assert_false(mc_script_matches(&s.items[0], 2, "database"));
    assert_true(mc_script_matches(&s.items[1], 4, "checkout"));
    assert_true(mc_script_matches(&s.items[2], 3, "anything"));
    assert_string_equal(s.items[3].target, "cart");
    mc_script_free(&s);

    const char *bad[] = {"x SCALE_UP approve\n", "0 SCALE_UP approve\n", "5 SCALE_UP maybe\n",
                         "5 NOPE:cart approve\n", "5 SCALE_UP\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_not_equal(mc_script_parse(bad[i], strlen(bad[i]), "b.txt", &s, &err), MC_OK);
        assert_non_null(strstr(err.msg, "b.txt:1:"));
        assert_null(s.items);
    }
}

static void test_setup_override_and_spec(void **state)
{
    (void)state;
    mc_run_setup *s = &setup_a;
    mc_error err = {0};
    mc_setup_init(s);
    assert_int_equal(mc_setup_load_scenario(s, MC_TEST_SCENARIO_DIR, "cascade_failure", &err),
                     MC_OK);
    s->seed = 1;
    mc_setup_digests(s);
    uint8_t before[32];
    memcpy(before, s->config_digest, 32);
    assert_int_equal(mc_setup_override(s, "detector.error_rate_critical=20", &err), MC_OK);
    assert_int_equal(
        mc_setup_override(s, "decider.restart_on_critical_errors.cooldown_ticks=3", &err), MC_OK);
    mc_setup_digests(s);
    assert_memory_not_equal(before, s->config_digest, 32);
    assert_non_null(strstr(s->flags, "--override 'detector.error_rate_critical=20'"));
    assert_int_not_equal(mc_setup_override(s, "detector.nope=1", &err), MC_OK);
    assert_int_not_equal(mc_setup_override(s, "detector.cpu_high=abc", &err), MC_OK);
    assert_int_not_equal(mc_setup_override(s, "engine.x=1", &err), MC_OK);
    assert_int_not_equal(mc_setup_override(s, "no-equals", &err), MC_OK);

    char spec[MC_SETUP_SPEC_MAX], name[MC_SCENARIO_ID_MAX];
    uint32_t n = 0, v = 0;
    s->node_count = 12;
    s->service_count = 300;
    mc_setup_spec_format(s, spec);
    assert_string_equal(spec, "cascade_failure;nodes=12;services=300");
    assert_int_equal(mc_setup_spec_parse(spec, name, &n, &v, &err), MC_OK);
    assert_string_equal(name, "cascade_failure");
    assert_int_equal(n, 12);
    assert_int_equal(v, 300);
    assert_int_equal(mc_setup_spec_parse("x;colour=3", name, &n, &v, &err), MC_ERR_UNSUPPORTED);
    assert_int_not_equal(mc_setup_load_scenario(s, MC_TEST_SCENARIO_DIR, "no_such", &err), MC_OK);
    mc_setup_deinit(s);
}

typedef struct collect {
    uint64_t records, checkpoints;
    mc_trace_key last;
    int ordered;
    mc_trace_writer *w;
    uint8_t digests[64][4][32];
} collect;

static mc_status c_record(void *ctx, uint64_t tick, uint32_t stage, const char *subject,
                          const char *producer, uint64_t seq, const uint8_t *p, size_t len,
                          mc_error *err)
{
    collect *c = ctx;
    mc_trace_key k = {tick, stage, seq};
    if (c->records && mc_trace_key_cmp(&c->last, &k) >= 0)
        c->ordered = 0;
    c->last = k;
    c->records++;
    if (c->w)
        return mc_trace_writer_append(c->w, tick, stage, subject, producer, seq, p, len, err);
    return MC_OK;
}

static mc_status c_checkpoint(void *ctx, uint64_t tick, const mc_trace_digest *d, size_t n,
                              mc_error *err)
{
    collect *c = ctx;
    assert_int_equal(n, 4);
    if (tick < 64)
        for (size_t i = 0; i < 4; i++)
            memcpy(c->digests[tick][i], d[i].digest, 32);
    c->checkpoints++;
    if (c->w)
        return mc_trace_writer_checkpoint(c->w, tick, d, n, err);
    return MC_OK;
}

static void run_loop(mc_run_setup *s, uint64_t ticks, collect *c)
{
    static mc_loop loop;
    mc_error err = {0};
    assert_int_equal(mc_loop_init(&loop, s, NULL, &err), MC_OK);
    mc_loop_sink sink = {c_record, c_checkpoint, c};
    for (uint64_t t = 0; t < ticks; t++)
        assert_int_equal(mc_loop_step(&loop, &sink, &err), MC_OK);
    mc_loop_deinit(&loop);
}

static void test_loop_deterministic(void **state)
{
    (void)state;
    mc_error err = {0};
    mc_setup_init(&setup_a);
    assert_int_equal(
        mc_setup_load_scenario(&setup_a, MC_TEST_SCENARIO_DIR, "cascade_failure", &err), MC_OK);
    setup_a.seed = 5;
    static collect c1, c2;
    memset(&c1, 0, sizeof c1);
    memset(&c2, 0, sizeof c2);
    c1.ordered = c2.ordered = 1;
    run_loop(&setup_a, 60, &c1);
    run_loop(&setup_a, 60, &c2);
    assert_true(c1.ordered); /* canonical order: (tick, stage, producer_seq) increasing */
    assert_int_equal(c1.checkpoints, 60);
    assert_int_equal(c1.records, c2.records);
    assert_memory_equal(c1.digests, c2.digests, sizeof c1.digests);
    /* Another seed moves the engine. */
    setup_a.seed = 6;
    static collect c3;
    memset(&c3, 0, sizeof c3);
    run_loop(&setup_a, 60, &c3);
    assert_memory_not_equal(c1.digests[59][0], c3.digests[59][0], 32);
    mc_setup_deinit(&setup_a);
}

static void test_redrive(void **state)
{
    (void)state;
    mc_error err = {0};
    char path[] = "/tmp/test_harness_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    mc_setup_init(&setup_a);
    assert_int_equal(
        mc_setup_load_scenario(&setup_a, MC_TEST_SCENARIO_DIR, "cascade_failure", &err), MC_OK);
    setup_a.seed = 42;
    mc_setup_digests(&setup_a);
    Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
    h.seed = 42;
    h.scenario = "cascade_failure";
    h.topology_digest.data = setup_a.topology_digest;
    h.topology_digest.len = 32;
    h.config_digest.data = setup_a.config_digest;
    h.config_digest.len = 32;
    h.mode = "lockstep";
    h.approval_mode = "auto";
    mc_trace_writer_opts wo = {0};
    wo.overwrite = true;
    static collect c;
    memset(&c, 0, sizeof c);
    assert_int_equal(mc_trace_writer_open(path, &h, &wo, &c.w, &err), MC_OK);
    run_loop(&setup_a, 80, &c);
    assert_int_equal(mc_trace_writer_close(&c.w, NULL, &err), MC_OK);

    /* Every component, then all: identical. */
    unsigned comps[] = {MC_COMP_ENGINE, MC_COMP_DETECTOR, MC_COMP_AGENT, MC_COMP_ORCHESTRATOR,
                        MC_COMP_ALL};
    for (size_t i = 0; i < 5; i++) {
        mc_setup_init(&setup_b);
        mc_redrive_options o = {0};
        o.components = comps[i];
        o.setup = &setup_b;
        o.scenario_dir = MC_TEST_SCENARIO_DIR;
        mc_redrive_result r;
        assert_int_equal(mc_redrive_file(path, &o, &r, &err), MC_OK);
        assert_int_equal(r.verdict, MC_REDRIVE_IDENTICAL);
        assert_int_equal(r.ticks_driven, 80);
        assert_false(r.config_mismatch);
        assert_false(r.topology_mismatch);
        mc_redrive_result_free(&r);
        mc_setup_deinit(&setup_b);
    }
    /* A changed rule: the detector diverges on an incident. */
    mc_setup_init(&setup_b);
    assert_int_equal(mc_setup_override(&setup_b, "detector.error_rate_critical=20", &err), MC_OK);
    mc_redrive_options o = {0};
    o.components = MC_COMP_DETECTOR;
    o.setup = &setup_b;
    o.scenario_dir = MC_TEST_SCENARIO_DIR;
    mc_redrive_result r;
    assert_int_equal(mc_redrive_file(path, &o, &r, &err), MC_OK);
    assert_int_equal(r.verdict, MC_REDRIVE_DIVERGED);
    assert_true(r.config_mismatch);
    assert_int_equal(r.div.stage, 2);
    assert_string_equal(r.div.subject, "ops.incidents");
    assert_true(r.div.has_expected && r.div.has_actual);
    assert_true(r.has_first_digest);
    assert_true(r.first_digest.tick <= r.div.tick);
    mc_redrive_result_free(&r);
    mc_setup_deinit(&setup_b);

    /* A damaged byte: damaged, whatever the comparison said. */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 5000, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, 5000, SEEK_SET);
    fputc(ch ^ 0x40, f);
    fclose(f);
    mc_setup_init(&setup_b);
    o.setup = &setup_b;
    o.components = MC_COMP_ALL;
    assert_int_equal(mc_redrive_file(path, &o, &r, &err), MC_OK);
    assert_int_equal(r.verdict, MC_REDRIVE_DAMAGED);
    assert_non_null(strstr(r.problem, "damaged"));
    mc_redrive_result_free(&r);
    mc_setup_deinit(&setup_b);
    mc_setup_deinit(&setup_a);
    unlink(path);
}

static void test_msgdiff(void **state)
{
    (void)state;
    Ops__V1__Incident a = OPS__V1__INCIDENT__INIT, b = OPS__V1__INCIDENT__INIT;
    a.id = b.id = "inc-1";
    a.observed_value = 0.1;
    b.observed_value = 0.1 + 1.3877787807814457e-17; /* the next double */
    a.title = "x";
    b.title = "y";
    uint8_t pa[256], pb[256];
    size_t la = ops__v1__incident__pack(&a, pa), lb = ops__v1__incident__pack(&b, pb);
    json_t *d = mc_msgdiff("ops.incidents", pa, la, pb, lb, 10);
    assert_int_equal(json_array_size(d), 2);
    json_t *e0 = json_array_get(d, 0), *e1 = json_array_get(d, 1);
    assert_string_equal(json_string_value(json_object_get(e0, "path")), "$.title");
    assert_string_equal(json_string_value(json_object_get(e1, "path")), "$.observedValue");
    assert_string_equal(json_string_value(json_object_get(e1, "expectedHex")),
                        "0x1.999999999999ap-4");
    assert_string_equal(json_string_value(json_object_get(e1, "actualHex")),
                        "0x1.999999999999bp-4");
    json_decref(d);
    /* A missing message and bytes that do not decode. */
    d = mc_msgdiff("ops.incidents", pa, la, NULL, 0, 10);
    assert_true(json_array_size(d) >= 1);
    json_decref(d);
    uint8_t junk[3] = {0xff, 0xff, 0xff};
    d = mc_msgdiff("ops.incidents", junk, 3, pb, lb, 10);
    assert_non_null(json_object_get(json_array_get(d, 0), "problem"));
    json_decref(d);
    assert_null(mc_subject_lookup("nope"));
    assert_int_equal(mc_subject_lookup("ops.commands")->stage, 4);
    assert_int_equal(mc_component_parse("agent"), MC_COMP_AGENT);
    assert_int_equal(mc_component_parse("bogus"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_script_parse),
        cmocka_unit_test(test_setup_override_and_spec),
        cmocka_unit_test(test_loop_deterministic),
        cmocka_unit_test(test_redrive),
        cmocka_unit_test(test_msgdiff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
