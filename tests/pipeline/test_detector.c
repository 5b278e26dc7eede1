/* The detector core: windows, aggregations, hysteresis, incident grouping,
 * resolution, scale, limits and determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "core/ids.h"
#include "detector/detector.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define RUN "run-test"
#define SEV_WARNING COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_WARNING
#define SEV_CRITICAL COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL
#define ST_OPENED OPS__V1__INCIDENT_STATE__INCIDENT_STATE_OPENED
#define ST_UPDATED OPS__V1__INCIDENT_STATE__INCIDENT_STATE_UPDATED
#define ST_RESOLVED OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED

/* One sample to feed. */
typedef struct sample {
    const char *service;
    const char *node;
    const char *metric;
    double value;
} sample;

typedef struct fixture {
    mc_detector d;
    mc_outbox out;
    mc_detector_rules rules;
} fixture;

static fixture *fixture_new(const char *rules_text, uint32_t max_targets)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    mc_error err;
    if (rules_text)
        assert_int_equal(mc_detector_rules_load(rules_text, strlen(rules_text), "t.rules",
                                                &f->rules, &err),
                         MC_OK);
    else
        mc_detector_rules_builtin(&f->rules);
    mc_detector_config cfg = {.tick_duration_ms = 1000, .rules = &f->rules,
                              .max_targets = max_targets};
    if (mc_detector_init(&f->d, &cfg, &err) != MC_OK)
        fail_msg("init: %s", err.msg);
    assert_int_equal(mc_outbox_init(&f->out, 1000000), MC_OK);
    return f;
}

static void fixture_free(fixture *f)
{
    mc_detector_deinit(&f->d);
    mc_outbox_deinit(&f->out);
    free(f);
}

static mc_status feed(fixture *f, uint64_t tick, const sample *s, size_t n)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    Sim__V1__MetricSample *items = calloc(n ? n : 1, sizeof *items);
    Sim__V1__MetricSample **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    assert_non_null(items);
    assert_non_null(ptrs);
    for (size_t i = 0; i < n; i++) {
        sim__v1__metric_sample__init(&items[i]);
        items[i].service_id = (char *)(s[i].service ? s[i].service : "");
        items[i].node_id = (char *)(s[i].node ? s[i].node : "");
        items[i].metric_name = (char *)s[i].metric;
        items[i].metric_value = s[i].value;
        ptrs[i] = &items[i];
    }
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    stamp.producer = (char *)"sim-engine";
    snap.stamp = &stamp;
    snap.sim_time_unix_ms = 1700000000000 + (int64_t)tick * 1000;
    snap.chunk_count = 1;
    snap.n_samples = n;
    snap.samples = ptrs;
    mc_error err;
    mc_status st = mc_detector_on_snapshot(&f->d, &snap, &f->out, &err);
    free(items);
    free(ptrs);
    return st;
}

static void feed1(fixture *f, uint64_t tick, const char *service, const char *metric, double v)
{
    sample s = {service, NULL, metric, v};
    assert_int_equal(feed(f, tick, &s, 1), MC_OK);
}

static void end_tick(fixture *f, uint64_t tick)
{
    mc_error err;
    if (mc_detector_on_tick_end(&f->d, tick, &f->out, &err) != MC_OK)
        fail_msg("tick end %llu: %s", (unsigned long long)tick, err.msg);
}

/* The incidents in the outbox (watermarks skipped); the caller frees them. */
static size_t incidents(const fixture *f, Ops__V1__Incident **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < f->out.len; i++) {
        const mc_outbox_msg *m = &f->out.items[i];
        if (strcmp(m->subject, "ops.incidents") != 0)
            continue;
        Ops__V1__Incident *inc = ops__v1__incident__unpack(NULL, m->len, m->payload);
        assert_non_null(inc);
        if (n < cap)
            out[n++] = inc;
        else
            ops__v1__incident__free_unpacked(inc, NULL);
    }
    return n;
}

static void free_incidents(Ops__V1__Incident **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ops__v1__incident__free_unpacked(v[i], NULL);
}

/* Runs ticks [from, to] with value v for one service and returns the number
 * of incident messages they produced. */
static size_t run_ticks(fixture *f, const char *svc, const char *metric, uint64_t from,
                        uint64_t to, double v)
{
    size_t n = 0;
    for (uint64_t t = from; t <= to; t++) {
        mc_outbox_clear(&f->out);
        feed1(f, t, svc, metric, v);
        end_tick(f, t);
        Ops__V1__Incident *inc[64];
        size_t k = incidents(f, inc, 64);
        n += k;
        free_incidents(inc, k);
    }
    return n;
}

/* Feeds one value and closes the tick; returns the single incident message
 * of that tick, or NULL. */
static Ops__V1__Incident *step(fixture *f, uint64_t tick, const char *svc, const char *metric,
                               double v)
{
    mc_outbox_clear(&f->out);
    if (metric)
        feed1(f, tick, svc, metric, v);
    end_tick(f, tick);
    Ops__V1__Incident *inc[4];
    size_t n = incidents(f, inc, 4);
    assert_true(n <= 1);
    return n ? inc[0] : NULL;
}

/* A one-rule file. */
static char *one_rule(char *buf, size_t cap, const char *op, double thr, unsigned window,
                      const char *agg, unsigned for_ticks, unsigned clear_ticks)
{
    snprintf(buf, cap,
             "mode = replace\n[rule]\nname = r\nmetric = m\noperator = %s\nthreshold = %g\n"
             "window_seconds = %u\naggregation = %s\nfor_ticks = %u\nclear_ticks = %u\n"
             "severity = WARNING\n",
             op, thr, window, agg, for_ticks, clear_ticks);
    return buf;
}

/* The ticks (in order) at which series of values opened / resolved. */
typedef struct trace {
    int opened_at;
    int resolved_at;
    double opened_value;
    size_t messages;
} trace;

static trace run_series(const char *rules, const double *values, size_t n)
{
    fixture *f = fixture_new(rules, 0);
    trace tr = {-1, -1, 0, 0};
    for (size_t t = 0; t < n; t++) {
        Ops__V1__Incident *inc = step(f, t, "svc", "m", values[t]);
        if (inc == NULL)
            continue;
        tr.messages++;
        if (inc->state == ST_OPENED && tr.opened_at < 0) {
            tr.opened_at = (int)t;
            tr.opened_value = inc->observed_value;
        }
        if (inc->state == ST_RESOLVED && tr.resolved_at < 0)
            tr.resolved_at = (int)t;
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    fixture_free(f);
    return tr;
}

static void test_each_operator(void **state)
{
    (void)state;
    char buf[512];
    const double v[] = {4, 5, 6, 5};
    trace t;
    t = run_series(one_rule(buf, sizeof buf, "gt", 5, 0, "last", 1, 1), v, 4);
    assert_int_equal(t.opened_at, 2);
    assert_int_equal(t.resolved_at, 3);
    t = run_series(one_rule(buf, sizeof buf, "gte", 5, 0, "last", 1, 1), v, 4);
    assert_int_equal(t.opened_at, 1);
    assert_int_equal(t.resolved_at, -1);
    t = run_series(one_rule(buf, sizeof buf, "lt", 5, 0, "last", 1, 1), v, 4);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, 1);
    t = run_series(one_rule(buf, sizeof buf, "lte", 5, 0, "last", 1, 1), v, 4);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, 2);
    t = run_series(one_rule(buf, sizeof buf, "eq", 5, 0, "last", 1, 1), v, 4);
    assert_int_equal(t.opened_at, 1);
    assert_int_equal(t.resolved_at, 2);
}

static void test_each_aggregation(void **state)
{
    (void)state;
    char buf[512];
    trace t;
    /* avg over 3 ticks: 4, 6, 11 -> 4, 5, 7 ... ; 4, 8, 21 -> avg 11 at tick 2. */
    const double avg_v[] = {4, 8, 21, 0, 0, 0};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "avg", 1, 1), avg_v, 6);
    assert_int_equal(t.opened_at, 2);
    assert_true(t.opened_value == 11.0);
    assert_int_equal(t.resolved_at, 3); /* (8+21+0)/3 = 9.67 at tick 3 */
    /* min over 3: 5, 20, 30, 40 -> min 5, 5, 5, 20. */
    const double min_v[] = {5, 20, 30, 40, 2};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "min", 1, 1), min_v, 5);
    assert_int_equal(t.opened_at, 3);
    assert_true(t.opened_value == 20.0);
    assert_int_equal(t.resolved_at, 4);
    /* max over 3: 1, 2, 11, 3, 4, 5 -> 11 from tick 2 to 4, then 5. */
    const double max_v[] = {1, 2, 11, 3, 4, 5};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "max", 1, 1), max_v, 6);
    assert_int_equal(t.opened_at, 2);
    assert_true(t.opened_value == 11.0);
    assert_int_equal(t.resolved_at, 5);
    /* last: only the newest sample counts. */
    const double last_v[] = {20, 20, 1};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "last", 1, 1), last_v, 3);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, 2);
    /* all: every sample of a full window must violate. */
    const double all_v[] = {20, 5, 20, 20, 20, 20, 5};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "all", 1, 1), all_v, 7);
    assert_int_equal(t.opened_at, 4);
    assert_true(t.opened_value == 20.0);
    assert_int_equal(t.resolved_at, 6);
}

/* The window of a rule is exactly window ticks: a spike leaves the average
 * window exactly window ticks after it entered. */
static void test_window_edges(void **state)
{
    (void)state;
    char buf[512];
    const double v[] = {40, 0, 0, 0, 0};
    /* avg over 3: 40, 20, 13.33, 0 -> open at 0, resolved at 3. */
    trace t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "avg", 1, 1), v, 5);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, 3);
    /* Window 4: the spike stays until tick 3, leaves at 4. */
    t = run_series(one_rule(buf, sizeof buf, "gt", 5, 4, "max", 1, 1), v, 5);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, 4);
    /* all over 3 needs exactly 3 samples: 2 are not enough. */
    const double w[] = {20, 20, 20};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "all", 1, 1), w, 2);
    assert_int_equal(t.opened_at, -1);
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 3, "all", 1, 1), w, 3);
    assert_int_equal(t.opened_at, 2);
}

/* Ticks without a sample: values age out by tick number, not by count. */
static void test_gap_ages_out(void **state)
{
    (void)state;
    char buf[512];
    fixture *f = fixture_new(one_rule(buf, sizeof buf, "gt", 10, 3, "max", 1, 1), 0);
    Ops__V1__Incident *inc = step(f, 0, "svc", "m", 50);
    assert_non_null(inc);
    assert_int_equal(inc->state, ST_OPENED);
    ops__v1__incident__free_unpacked(inc, NULL);
    assert_null(step(f, 1, NULL, NULL, 0)); /* no sample: 50 still in window */
    assert_null(step(f, 2, NULL, NULL, 0));
    inc = step(f, 3, NULL, NULL, 0); /* 50 left the window */
    assert_non_null(inc);
    assert_int_equal(inc->state, ST_RESOLVED);
    ops__v1__incident__free_unpacked(inc, NULL);
    /* A jump of many ticks clears the window at once. */
    inc = step(f, 10, "svc", "m", 50);
    assert_non_null(inc);
    assert_int_equal(inc->state, ST_OPENED);
    ops__v1__incident__free_unpacked(inc, NULL);
    inc = step(f, 100, "svc", "m", 1);
    assert_non_null(inc);
    assert_int_equal(inc->state, ST_RESOLVED);
    ops__v1__incident__free_unpacked(inc, NULL);
    fixture_free(f);
}

static void test_for_and_clear_durations(void **state)
{
    (void)state;
    char buf[512];
    const double v[] = {20, 20, 20, 20, 20, 0, 0, 0, 0};
    trace t = run_series(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 3, 2), v, 9);
    assert_int_equal(t.opened_at, 2);   /* held at 0, 1, 2 */
    assert_int_equal(t.resolved_at, 6); /* false at 5, 6 */
    /* A dip shorter than clear_ticks does not resolve. */
    const double dip[] = {20, 20, 20, 0, 20, 20, 0, 0};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 3, 2), dip, 8);
    assert_int_equal(t.opened_at, 2);
    assert_int_equal(t.resolved_at, 7);
    /* A burst shorter than for_ticks does not open. */
    const double burst[] = {20, 20, 0, 20, 20, 0};
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 3, 2), burst, 6);
    assert_int_equal(t.opened_at, -1);
    assert_int_equal(t.messages, 0);
}

static void test_flapping_opens_at_most_one(void **state)
{
    (void)state;
    char buf[512];
    double v[200];
    for (size_t i = 0; i < 200; i++)
        v[i] = (i % 2) ? 0 : 50;
    /* for 2: never holds two ticks in a row: nothing. */
    trace t = run_series(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 2, 2), v, 200);
    assert_int_equal(t.messages, 0);
    /* for 1, clear 2: opens once and never resolves while flapping. */
    t = run_series(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 1, 2), v, 200);
    assert_int_equal(t.opened_at, 0);
    assert_int_equal(t.resolved_at, -1);
    assert_int_equal(t.messages, 1);
    /* The built-in error-rate rules on a value flapping 0 / 12: the average
     * sits near 6, one warning incident, no update storm. */
    fixture *f = fixture_new(NULL, 0);
    size_t opened = 0, total = 0;
    for (uint64_t tick = 0; tick < 200; tick++) {
        mc_outbox_clear(&f->out);
        feed1(f, tick, "svc", "error_rate", (tick % 2) ? 0.0 : 12.0);
        end_tick(f, tick);
        Ops__V1__Incident *inc[8];
        size_t n = incidents(f, inc, 8);
        for (size_t i = 0; i < n; i++)
            opened += inc[i]->state == ST_OPENED;
        if (tick >= 60) /* a full window averages exactly 6 every tick */
            total += n;
        free_incidents(inc, n);
    }
    assert_int_equal(opened, 1);
    assert_int_equal(total, 0);
    fixture_free(f);
}

/* warning -> critical -> warning -> resolved, one incident id throughout. */
static void test_escalation_updates_same_incident(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    char id[MC_UUID_STR_LEN] = "";
    int phase_states[4] = {0};
    uint64_t tick = 0;
    /* 7 % errors: warning after for_ticks = 2. */
    for (; tick < 40; tick++) {
        Ops__V1__Incident *inc = step(f, tick, "checkout", "error_rate", 7);
        if (inc == NULL)
            continue;
        assert_int_equal(inc->state, ST_OPENED);
        assert_int_equal(inc->severity, SEV_WARNING);
        assert_int_equal(inc->opened_at_tick, 1);
        assert_string_equal(inc->rule_name, "error_rate_high");
        assert_string_equal(inc->service_id, "checkout");
        assert_string_equal(inc->target_id, "checkout");
        assert_string_equal(inc->metric_name, "error_rate");
        assert_true(inc->threshold == 5.0);
        char want[MC_UUID_STR_LEN];
        mc_id_uuid(want, "incident", RUN, 1, "checkout", "error_rate");
        assert_string_equal(inc->id, want);
        memcpy(id, inc->id, sizeof id);
        phase_states[0]++;
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    assert_int_equal(phase_states[0], 1);
    /* 40 % errors: the 30-tick average passes 10 within a few ticks. */
    int critical_at = -1;
    for (; tick < 80; tick++) {
        Ops__V1__Incident *inc = step(f, tick, "checkout", "error_rate", 40);
        if (inc == NULL)
            continue;
        assert_string_equal(inc->id, id);
        assert_int_equal(inc->state, ST_UPDATED);
        if (inc->severity == SEV_CRITICAL && critical_at < 0) {
            critical_at = (int)tick;
            assert_string_equal(inc->rule_name, "error_rate_critical");
            assert_true(inc->threshold == 10.0);
        }
        if (tick >= 72)
            phase_states[1]++;
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    assert_true(critical_at > 40 && critical_at < 50);
    /* The window is full of 40s from tick 70 on: the value is flat and
     * nothing more is sent. */
    assert_int_equal(phase_states[1], 0);
    /* Back to 7 %: after the window drains the critical rule clears. */
    int warning_again = -1;
    for (; tick < 140; tick++) {
        Ops__V1__Incident *inc = step(f, tick, "checkout", "error_rate", 7);
        if (inc == NULL)
            continue;
        assert_string_equal(inc->id, id);
        assert_int_equal(inc->state, ST_UPDATED);
        if (inc->severity == SEV_WARNING && warning_again < 0)
            warning_again = (int)tick;
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    assert_true(warning_again > 80);
    /* 0 %: resolves after the average drops under 5 and clear_ticks. */
    int resolved = -1;
    for (; tick < 200; tick++) {
        Ops__V1__Incident *inc = step(f, tick, "checkout", "error_rate", 0);
        if (inc == NULL)
            continue;
        assert_string_equal(inc->id, id);
        assert_int_equal(resolved, -1); /* nothing after the resolution */
        if (inc->state == ST_UPDATED) { /* the average falling toward 5 */
            assert_int_equal(inc->severity, SEV_WARNING);
            ops__v1__incident__free_unpacked(inc, NULL);
            continue;
        }
        assert_int_equal(inc->state, ST_RESOLVED);
        assert_true(inc->resolved);
        assert_int_equal(inc->resolved_at_tick, tick);
        assert_int_equal(inc->opened_at_tick, 1);
        resolved = (int)tick;
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    assert_true(resolved > 140);
    assert_int_equal(mc_detector_open_incidents(&f->d), 0);
    /* A new rise is a new incident with a new id. */
    uint64_t t2 = tick;
    for (; tick < t2 + 5; tick++) {
        Ops__V1__Incident *inc = step(f, tick, "checkout", "error_rate", 50);
        if (inc == NULL)
            continue;
        assert_int_equal(inc->state, ST_OPENED);
        assert_string_not_equal(inc->id, id);
        ops__v1__incident__free_unpacked(inc, NULL);
    }
    fixture_free(f);
}

static void test_updates_only_on_change(void **state)
{
    (void)state;
    char buf[512];
    fixture *f = fixture_new(one_rule(buf, sizeof buf, "gt", 100, 0, "last", 1, 1), 0);
    assert_int_equal(run_ticks(f, "svc", "m", 0, 0, 150), 1);      /* opened */
    assert_int_equal(run_ticks(f, "svc", "m", 1, 30, 150), 0);     /* same value */
    assert_int_equal(run_ticks(f, "svc", "m", 31, 40, 155), 0);    /* moved < 10 */
    Ops__V1__Incident *inc = step(f, 41, "svc", "m", 160.5);       /* moved >= 10 */
    assert_non_null(inc);
    assert_int_equal(inc->state, ST_UPDATED);
    assert_true(inc->observed_value == 160.5);
    ops__v1__incident__free_unpacked(inc, NULL);
    assert_int_equal(run_ticks(f, "svc", "m", 42, 50, 161), 0);
    fixture_free(f);
}

/* Watermarks: one per tick, after the incidents, counting them; producer
 * sequence numbers run on from 1. */
static void test_watermark_and_stamps(void **state)
{
    (void)state;
    char buf[512];
    fixture *f = fixture_new(one_rule(buf, sizeof buf, "gt", 10, 0, "last", 1, 1), 0);
    sample s[] = {{"a", NULL, "m", 50}, {"b", NULL, "m", 50}, {"c", NULL, "m", 1}};
    assert_int_equal(feed(f, 7, s, 3), MC_OK);
    end_tick(f, 7);
    assert_int_equal(f->out.len, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(f->out.items[i].producer_seq, i + 1);
        assert_int_equal(f->out.items[i].tick, 7);
    }
    Ops__V1__Incident *inc[4];
    size_t n = incidents(f, inc, 4);
    assert_int_equal(n, 2);
    assert_string_equal(inc[0]->target_id, "a"); /* targets in id order */
    assert_string_equal(inc[1]->target_id, "b");
    assert_string_equal(inc[0]->stamp->run_id, RUN);
    assert_string_equal(inc[0]->stamp->producer, "signal-service");
    assert_int_equal(inc[0]->stamp->producer_seq, 1);
    assert_int_equal(inc[0]->detected_at_unix_ms, 1700000007000);
    free_incidents(inc, n);
    const mc_outbox_msg *m = &f->out.items[2];
    assert_string_equal(m->subject, "ops.watermark.detector");
    Ops__V1__Watermark *wm = ops__v1__watermark__unpack(NULL, m->len, m->payload);
    assert_non_null(wm);
    assert_int_equal(wm->stage, COMMON__V1__STAGE__STAGE_DETECTOR);
    assert_int_equal(wm->tick, 7);
    assert_int_equal(wm->message_count, 2);
    assert_int_equal(wm->stamp->producer_seq, 3);
    ops__v1__watermark__free_unpacked(wm, NULL);
    /* A redelivered watermark and a late snapshot change nothing. */
    mc_outbox_clear(&f->out);
    uint8_t before[32], after[32];
    mc_detector_digest(&f->d, before);
    end_tick(f, 7);
    assert_int_equal(f->out.len, 0);
    assert_int_equal(feed(f, 6, s, 3), MC_OK);
    mc_detector_stats st;
    mc_detector_stats_get(&f->d, &st);
    assert_int_equal(st.samples_late, 3);
    /* A tick without samples: the one-tick windows empty, a and b resolve,
     * and the watermark counts them. */
    end_tick(f, 8);
    assert_int_equal(f->out.len, 3);
    n = incidents(f, inc, 4);
    assert_int_equal(n, 2);
    assert_int_equal(inc[0]->state, ST_RESOLVED);
    free_incidents(inc, n);
    mc_detector_digest(&f->d, after);
    assert_memory_not_equal(before, after, 32);
    fixture_free(f);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    mc_error err;
    assert_int_equal(mc_detector_on_snapshot(&f->d, NULL, &f->out, &err), MC_ERR_INVALID);
    Sim__V1__MetricSnapshot nostamp = SIM__V1__METRIC_SNAPSHOT__INIT;
    assert_int_equal(mc_detector_on_snapshot(&f->d, &nostamp, &f->out, &err), MC_ERR_INVALID);
    sample s[] = {{"svc", NULL, "cpu_usage", 50},
                  {"", "", "cpu_usage", 50},        /* no target */
                  {"svc", NULL, "cpu_usage", 0.0 / 0.0}, /* NaN */
                  {"svc", NULL, "disk_usage", 50}};  /* nobody watches it */
    assert_int_equal(feed(f, 1, s, 4), MC_OK);
    mc_detector_stats st;
    mc_detector_stats_get(&f->d, &st);
    assert_int_equal(st.samples, 1);
    assert_int_equal(st.samples_invalid, 2);
    assert_int_equal(st.samples_ignored, 1);
    /* A snapshot of tick 2 while tick 1 is open: its watermark is missing. */
    assert_int_equal(feed(f, 2, s, 1), MC_ERR_STATE);
    /* Another run. */
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    stamp.run_id = (char *)"run-other";
    stamp.tick = 1;
    snap.stamp = &stamp;
    assert_int_equal(mc_detector_on_snapshot(&f->d, &snap, &f->out, &err), MC_ERR_STATE);
    assert_non_null(strstr(err.msg, "run-other"));
    fixture_free(f);
}

static void test_max_targets(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 100);
    sample s[150];
    char names[150][16];
    for (int i = 0; i < 150; i++) {
        snprintf(names[i], sizeof names[i], "svc-%03d", i);
        s[i] = (sample){names[i], NULL, "cpu_usage", 99};
    }
    mc_error err;
    (void)err;
    assert_int_equal(feed(f, 0, s, 150), MC_ERR_LIMIT);
    mc_detector_stats st;
    mc_detector_stats_get(&f->d, &st);
    assert_int_equal(st.targets, 100);
    assert_int_equal(st.samples, 100);
    assert_int_equal(st.samples_over_limit, 50);
    end_tick(f, 0);
    /* Known targets keep working at the limit. */
    assert_int_equal(feed(f, 1, s, 100), MC_OK);
    end_tick(f, 1);
    fixture_free(f);
}

/* 10,000 targets in chunks: every tenth has a critical error rate. */
static void run_many(fixture *f, uint64_t ticks, int reverse_chunks, uint8_t digest[32],
                     size_t *opened)
{
    enum { N = 10000, CHUNK = 1000 };
    static char names[N][16];
    static sample s[N];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "svc-%05d", (i * 7919) % N);
        s[i] = (sample){names[i], NULL, "error_rate", ((i * 7919) % N) % 10 == 0 ? 30.0 : 1.0};
    }
    *opened = 0;
    for (uint64_t t = 0; t < ticks; t++) {
        for (int c = 0; c < N / CHUNK; c++) {
            int ci = reverse_chunks ? N / CHUNK - 1 - c : c;
            assert_int_equal(feed(f, t, s + ci * CHUNK, CHUNK), MC_OK);
        }
        end_tick(f, t);
    }
    Ops__V1__Incident **inc = calloc(N, sizeof *inc);
    assert_non_null(inc);
    size_t n = incidents(f, inc, N);
    for (size_t i = 0; i < n; i++)
        *opened += inc[i]->state == ST_OPENED;
    free_incidents(inc, n);
    free(inc);
    mc_detector_digest(&f->d, digest);
}

static void test_many_targets_and_chunk_order(void **state)
{
    (void)state;
    fixture *a = fixture_new(NULL, 0), *b = fixture_new(NULL, 0);
    uint8_t da[32], db[32];
    size_t oa, ob;
    run_many(a, 4, 0, da, &oa);
    run_many(b, 4, 1, db, &ob);
    assert_int_equal(oa, 1000);
    assert_int_equal(ob, 1000);
    assert_int_equal(mc_detector_open_incidents(&a->d), 1000);
    assert_memory_equal(da, db, 32);
    /* Same messages, byte for byte, whatever the chunk order. */
    assert_int_equal(a->out.len, b->out.len);
    for (size_t i = 0; i < a->out.len; i++) {
        assert_string_equal(a->out.items[i].subject, b->out.items[i].subject);
        assert_int_equal(a->out.items[i].len, b->out.items[i].len);
        assert_memory_equal(a->out.items[i].payload, b->out.items[i].payload, a->out.items[i].len);
    }
    /* Incidents come out in target id order. */
    Ops__V1__Incident *first[2];
    size_t n = incidents(a, first, 2);
    assert_int_equal(n, 2);
    assert_true(strcmp(first[0]->target_id, first[1]->target_id) < 0);
    free_incidents(first, n);
    fixture_free(a);
    fixture_free(b);
}

/* Same inputs, same outbox bytes and digest; a different input, a
 * different digest. Duplicated chunks change nothing (maximum). */
static void scripted(fixture *f, int variant, int duplicate)
{
    for (uint64_t t = 0; t < 60; t++) {
        double e = t < 20 ? 1 : t < 40 ? 25 : 2;
        double cpu = 50 + (double)(t % 7) * 7;
        sample s[] = {{"api", NULL, "error_rate", e},
                      {"api", NULL, "cpu_usage", cpu},
                      {"db", NULL, "p99_latency_ms", 400 + (double)t * 5},
                      {NULL, "node-1", "memory_usage", 80 + (double)(t % 20)},
                      {NULL, "node-1", "node_status", t > 30 && t < 45 ? 2 : 1},
                      {"web", NULL, "cpu_usage", variant && t == 50 ? 1 : 5}};
        assert_int_equal(feed(f, t, s, 3), MC_OK);
        assert_int_equal(feed(f, t, s + 3, 3), MC_OK);
        if (duplicate)
            assert_int_equal(feed(f, t, s, 6), MC_OK);
        end_tick(f, t);
    }
}

static void test_determinism(void **state)
{
    (void)state;
    fixture *a = fixture_new(NULL, 0), *b = fixture_new(NULL, 0), *c = fixture_new(NULL, 0),
            *e = fixture_new(NULL, 0);
    scripted(a, 0, 0);
    scripted(b, 0, 0);
    scripted(c, 1, 0);
    scripted(e, 0, 1);
    uint8_t da[32], db[32], dc[32], de[32];
    mc_detector_digest(&a->d, da);
    mc_detector_digest(&b->d, db);
    mc_detector_digest(&c->d, dc);
    mc_detector_digest(&e->d, de);
    assert_memory_equal(da, db, 32);
    assert_memory_not_equal(da, dc, 32);
    assert_true(a->out.len > 60); /* incidents besides the watermarks */
    assert_int_equal(a->out.len, b->out.len);
    assert_int_equal(a->out.len, e->out.len);
    for (size_t i = 0; i < a->out.len; i++) {
        assert_int_equal(a->out.items[i].len, b->out.items[i].len);
        assert_memory_equal(a->out.items[i].payload, b->out.items[i].payload, a->out.items[i].len);
        assert_int_equal(a->out.items[i].len, e->out.items[i].len);
        assert_memory_equal(a->out.items[i].payload, e->out.items[i].payload, a->out.items[i].len);
    }
    fixture_free(a);
    fixture_free(b);
    fixture_free(c);
    fixture_free(e);
}

/* Node targets: node-level samples make node incidents (node_status). */
static void test_node_rules(void **state)
{
    (void)state;
    fixture *f = fixture_new(NULL, 0);
    Ops__V1__Incident *inc[8];
    int opened_at = -1, down_at = -1;
    for (uint64_t t = 0; t < 10; t++) {
        mc_outbox_clear(&f->out);
        sample s = {NULL, "node-2", "node_status", t < 3 ? 1 : t < 6 ? 2 : 3};
        assert_int_equal(feed(f, t, &s, 1), MC_OK);
        end_tick(f, t);
        size_t n = incidents(f, inc, 8);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(inc[i]->node_id, "node-2");
            assert_string_equal(inc[i]->service_id, "");
            if (inc[i]->state == ST_OPENED)
                opened_at = (int)t;
            if (inc[i]->state == ST_UPDATED && inc[i]->severity == SEV_CRITICAL)
                down_at = (int)t;
        }
        free_incidents(inc, n);
    }
    assert_int_equal(opened_at, 4); /* degraded from 3, for 2 ticks */
    assert_int_equal(down_at, 6);   /* down at 6, for 1 tick */
    fixture_free(f);
}

static void test_window_conversion(void **state)
{
    (void)state;
    static const char file[] = "mode = replace\n"
                               "[rule]\nname = w30\nmetric = m\noperator = gt\nthreshold = 1\n"
                               "severity = INFO\nwindow_seconds = 30\n"
                               "[rule]\nname = w0\nmetric = m\noperator = gt\nthreshold = 1\n"
                               "severity = INFO\nwindow_seconds = 0\n"
                               "[rule]\nname = w1\nmetric = m\noperator = gt\nthreshold = 1\n"
                               "severity = INFO\nwindow_seconds = 1\n";
    mc_detector_rules *r = calloc(1, sizeof *r);
    assert_non_null(r);
    mc_error err;
    assert_int_equal(mc_detector_rules_load(file, strlen(file), "w.rules", r, &err), MC_OK);
    mc_detector *d = calloc(1, sizeof *d);
    assert_non_null(d);
    mc_detector_config cfg = {.rules = r, .tick_duration_ms = 400};
    assert_int_equal(mc_detector_init(d, &cfg, &err), MC_OK);
    assert_int_equal(mc_detector_rule_window_ticks(d, 0), 75); /* 30000/400 */
    assert_int_equal(mc_detector_rule_window_ticks(d, 1), 1);
    assert_int_equal(mc_detector_rule_window_ticks(d, 2), 3); /* 1000/400 rounded up */
    mc_detector_deinit(d);
    cfg.tick_duration_ms = 1; /* 30 s = 30000 ticks: too long a window */
    assert_int_equal(mc_detector_init(d, &cfg, &err), MC_ERR_RANGE);
    assert_non_null(strstr(err.msg, "w30"));
    mc_detector_deinit(d);
    free(d);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_operator),
        cmocka_unit_test(test_each_aggregation),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_gap_ages_out),
        cmocka_unit_test(test_for_and_clear_durations),
        cmocka_unit_test(test_flapping_opens_at_most_one),
        cmocka_unit_test(test_escalation_updates_same_incident),
        cmocka_unit_test(test_updates_only_on_change),
        cmocka_unit_test(test_watermark_and_stamps),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_max_targets),
        cmocka_unit_test(test_many_targets_and_chunk_order),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_node_rules),
        cmocka_unit_test(test_window_conversion),
    };
    return cmocka_run_group_tests_name("detector", tests, NULL, NULL);
}
