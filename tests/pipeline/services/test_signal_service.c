/* signal-service against the real nats-server and PostgreSQL
 * (scripts/with-services): the binary runs as a child with its own stream
 * and subject prefixes and a fresh database, and the test plays the engine.
 *
 *  - 10,000 snapshots with a kill -9 in the middle: every sample is stored
 *    exactly once after the restart;
 *  - a poison message on sim.metrics lands on ops.deadletter and ingest goes
 *    on; SIGTERM exits 0 with everything committed;
 *  - SIGTERM commits a batch that neither its size nor its delay would have
 *    committed, acks it (a new instance ingests nothing twice) and exits 0;
 *  - error_rate at 20% on one service for 40 ticks: an incident in the
 *    incidents table and on ops.incidents, one detector watermark per tick;
 *  - a bad RULES_FILE stops the service with exit status 2, naming the rule
 *    and the field. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipesvc_testutil.h"

#ifndef SIGNAL_SERVICE_BIN
#error "SIGNAL_SERVICE_BIN must name the signal-service binary"
#endif

#define SERVICES 20
#define CHUNKS 10 /* two services per chunk */
#define METRICS_PER_SERVICE 6
#define SAMPLES_PER_SNAPSHOT (2 * METRICS_PER_SERVICE)

static char g_services[SERVICES][16];

static void log_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/pipesvc-%d-%s.log", P_tmpdir, (int)getpid(), name);
    unlink(out);
}

/* One tick as the engine publishes it: CHUNKS snapshots of two services
 * each, with values that move a little from tick to tick. */
static void publish_tick(pt_env *e, uint64_t tick, bool watermark)
{
    for (uint32_t c = 0; c < CHUNKS; c++) {
        pt_sample s[SAMPLES_PER_SNAPSHOT];
        size_t n = 0;
        for (int k = 0; k < 2; k++) {
            const char *svc = g_services[c * 2 + (uint32_t)k];
            double wobble = (double)((tick * 7 + c * 3 + (uint64_t)k) % 10);
            s[n++] = (pt_sample){svc, NULL, "cpu_usage", 35.0 + wobble};
            s[n++] = (pt_sample){svc, NULL, "memory_usage", 52.0 + wobble / 2};
            s[n++] = (pt_sample){svc, NULL, "error_rate", 0.4 + wobble / 20};
            s[n++] = (pt_sample){svc, NULL, "p99_latency_ms", 120.0 + wobble * 3};
            s[n++] = (pt_sample){svc, NULL, "requests_per_second", 240.0 + wobble * 10};
            s[n++] = (pt_sample){svc, NULL, "replicas", 3.0};
        }
        pt_publish_snapshot(e, tick, c, CHUNKS, s, n);
    }
    if (watermark)
        pt_publish_engine_watermark(e, tick, CHUNKS);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static const char *COUNT_SQL = "SELECT count(*) FROM metrics";
static const char *DISTINCT_SQL =
    "SELECT count(*) FROM (SELECT DISTINCT tick_id, node_id, service_id, metric_name FROM "
    "metrics) d";

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < SERVICES; i++)
        snprintf(g_services[i], sizeof g_services[i], "svc-%02d", i);
    return 0;
}

static void test_ingest_kill9_exactly_once(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    const uint64_t ticks = 1000; /* 10,000 snapshots */
    const int64_t total = (int64_t)ticks * CHUNKS * SAMPLES_PER_SNAPSHOT;
    for (uint64_t t = 1; t <= ticks / 2; t++)
        publish_tick(&e, t, true);
    pt_flush(&e);

    char lp[256];
    log_path(lp, sizeof lp, "ingest");
    /* A long ack wait: the messages the killed instance held would come back
     * only after it, behind newer ones. The restart must neither wait for it
     * nor lose them (the durable is placed after the committed position). */
    const char *extra[] = {"INGEST_BATCH_ROWS=3000", "INGEST_MAX_DELAY=50ms",
                           "CONSUMER_ACK_WAIT=120s", NULL};
    uint16_t port = pt_free_port();
    pid_t pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, extra, lp);
    /* Kill as soon as the first rows are committed: the service is then in
     * the middle of the stream (half of it is not even published yet). */
    int64_t at_kill = pt_wait_scalar(&e, COUNT_SQL, 1, 60000);
    assert_true(at_kill >= 1);
    kill(pid, SIGKILL);
    assert_int_equal(pt_wait(pid, 10000), 128 + SIGKILL);
    at_kill = pt_scalar(&e, COUNT_SQL);
    print_message("killed with %lld of %lld rows committed\n", (long long)at_kill,
                  (long long)total);
    assert_true(at_kill < total);

    for (uint64_t t = ticks / 2 + 1; t <= ticks; t++)
        publish_tick(&e, t, true);
    pt_flush(&e);
    assert_int_equal(pt_subject_count(&e, "sim.metrics"), ticks * CHUNKS);

    uint64_t restart_ms = now_ms();
    pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, extra, lp);
    int64_t n = pt_wait_scalar(&e, COUNT_SQL, total, 60000);
    restart_ms = now_ms() - restart_ms;
    print_message("restart to all rows: %llu ms (ack wait 120 s)\n",
                  (unsigned long long)restart_ms);
    if (n != total) {
        static char log[1 << 16];
        pt_read_log(lp, log, sizeof log);
        print_message("%s\n", log);
    }
    assert_int_equal(n, total);
    /* Nothing more arrives later (a duplicate would). */
    pt_sleep_ms(500);
    assert_int_equal(pt_scalar(&e, COUNT_SQL), total);
    assert_int_equal(pt_scalar(&e, DISTINCT_SQL), total);
    assert_int_equal(pt_scalar(&e, "SELECT count(DISTINCT tick_id) FROM metrics"), (int64_t)ticks);
    assert_true(pt_scalar(&e, "SELECT max(last_seq) FROM consumer_positions") > 0);

    char body[8192];
    assert_true(pt_wait_ready(port, 10000));
    assert_int_equal(pt_http_get(port, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "microcloud_signal_samples_ingested_total"));
    assert_non_null(strstr(body, "microcloud_signal_ingest_lag 0"));

    kill(pid, SIGTERM);
    assert_int_equal(pt_wait(pid, 15000), 0);
    pt_env_cleanup(&e);
}

static void test_poison_deadlettered(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    for (uint64_t t = 1; t <= 2; t++)
        publish_tick(&e, t, true);
    static const uint8_t poison[] = {0xff, 0xff, 0xff, 0xff, 'n', 'o', 't', ' ', 'p', 'b'};
    pt_publish_raw(&e, "sim.metrics", poison, sizeof poison, "poison-1");
    for (uint64_t t = 3; t <= 5; t++)
        publish_tick(&e, t, true);
    pt_flush(&e);

    char lp[256];
    log_path(lp, sizeof lp, "poison");
    uint16_t port = pt_free_port();
    pid_t pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, NULL, lp);
    const int64_t per_tick = CHUNKS * SAMPLES_PER_SNAPSHOT;
    assert_int_equal(pt_wait_scalar(&e, COUNT_SQL, 5 * per_tick, 60000), 5 * per_tick);
    assert_int_equal(pt_subject_count(&e, "ops.deadletter"), 1);
    natsMsg *dl = pt_last_msg(&e, true, "ops.deadletter");
    assert_non_null(dl);
    assert_int_equal(natsMsg_GetDataLength(dl), (int)sizeof poison);
    assert_memory_equal(natsMsg_GetData(dl), poison, sizeof poison);
    const char *h = NULL;
    assert_int_equal(natsMsgHeader_Get(dl, "Mc-Dl-Subject", &h), NATS_OK);
    char want[128];
    snprintf(want, sizeof want, "%ssim.metrics", e.subject_prefix);
    assert_string_equal(h, want);
    assert_int_equal(natsMsgHeader_Get(dl, "Mc-Dl-Error", &h), NATS_OK);
    assert_non_null(strstr(h, "MetricSnapshot"));
    natsMsg_Destroy(dl);

    /* Ingest goes on after the poison message. */
    for (uint64_t t = 6; t <= 8; t++)
        publish_tick(&e, t, true);
    pt_flush(&e);
    assert_int_equal(pt_wait_scalar(&e, COUNT_SQL, 8 * per_tick, 60000), 8 * per_tick);

    char body[16384];
    assert_int_equal(pt_http_get(port, "/health", body, sizeof body), 200);
    assert_true(pt_wait_ready(port, 10000));
    assert_int_equal(pt_http_get(port, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "microcloud_signal_deadlettered_total 1\n"));

    /* Graceful stop: the last rows are committed, exit status 0. */
    publish_tick(&e, 9, true);
    pt_flush(&e);
    pt_sleep_ms(300);
    kill(pid, SIGTERM);
    assert_int_equal(pt_wait(pid, 15000), 0);
    assert_int_equal(pt_scalar(&e, COUNT_SQL), 9 * per_tick);
    assert_int_equal(pt_scalar(&e, DISTINCT_SQL), 9 * per_tick);
    pt_env_cleanup(&e);
}

static void test_incidents_from_error_rate(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    const uint64_t ticks = 40;
    for (uint64_t t = 1; t <= ticks; t++) {
        pt_sample s[] = {
            {"checkout", NULL, "error_rate", 20.0},
            {"checkout", NULL, "cpu_usage", 40.0},
            {"checkout", NULL, "p99_latency_ms", 180.0},
            {"catalog", NULL, "error_rate", 0.5},
            {"catalog", NULL, "cpu_usage", 30.0},
            {"catalog", NULL, "p99_latency_ms", 90.0},
            {NULL, "node-1", "cpu_usage", 45.0},
            {NULL, "node-1", "node_status", 1.0},
        };
        pt_publish_snapshot(&e, t, 0, 1, s, sizeof s / sizeof s[0]);
        pt_publish_engine_watermark(&e, t, 1);
    }
    pt_flush(&e);

    char lp[256];
    log_path(lp, sizeof lp, "incidents");
    uint16_t port = pt_free_port();
    pid_t pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, NULL, lp);
    int64_t n = pt_wait_scalar(
        &e, "SELECT count(*) FROM incidents WHERE target_id = 'checkout' AND severity = 4", 1,
        60000);
    if (n < 1) {
        static char log[1 << 16];
        pt_read_log(lp, log, sizeof log);
        print_message("%s\n", log);
    }
    assert_int_equal(n, 1);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM incidents WHERE target_id <> 'checkout'"),
                     0);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM incidents WHERE rule_name = "
                                   "'error_rate_critical' AND NOT resolved"),
                     1);
    assert_true(pt_subject_count(&e, "ops.incidents") >= 1);
    /* One detector watermark per closed tick. */
    for (int i = 0; i < 200 && pt_subject_count(&e, "ops.watermark.detector") < ticks; i++)
        pt_sleep_ms(50);
    assert_int_equal(pt_subject_count(&e, "ops.watermark.detector"), ticks);

    char body[16384];
    assert_true(pt_wait_ready(port, 10000));
    assert_int_equal(pt_http_get(port, "/metrics", body, sizeof body), 200);
    assert_non_null(strstr(body, "microcloud_signal_incidents_open 1\n"));
    assert_non_null(strstr(body, "microcloud_signal_ticks_closed_total 40\n"));

    kill(pid, SIGINT);
    assert_int_equal(pt_wait(pid, 15000), 0);
    pt_env_cleanup(&e);
}

/* The value of an unlabelled series on /metrics; -1 when absent. */
static double metric_value(uint16_t port, const char *name)
{
    static char body[1 << 16];
    if (pt_http_get(port, "/metrics", body, sizeof body) != 200)
        return -1;
    size_t n = strlen(name);
    for (const char *p = body; (p = strstr(p, name)) != NULL; p += n)
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

/* With a batch size and delay that never trigger, only the shutdown can
 * commit: SIGTERM must commit what was received, ack it and exit 0. */
static void test_sigterm_commits_open_batch(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    for (uint64_t t = 1; t <= 3; t++)
        publish_tick(&e, t, true);
    pt_flush(&e);
    char lp[256];
    log_path(lp, sizeof lp, "sigterm");
    const char *extra[] = {"INGEST_BATCH_ROWS=1000000", "INGEST_MAX_DELAY=1h", NULL};
    uint16_t port = pt_free_port();
    pid_t pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, extra, lp);
    /* Received (the lag counts them) but not committed. */
    double lag = -1;
    for (int i = 0; i < 300 && lag < 3 * CHUNKS; i++) {
        pt_sleep_ms(50);
        lag = metric_value(port, "microcloud_signal_ingest_lag");
    }
    assert_true(lag >= 3 * CHUNKS);
    assert_int_equal(pt_scalar(&e, COUNT_SQL), 0);
    kill(pid, SIGTERM);
    assert_int_equal(pt_wait(pid, 15000), 0);
    const int64_t rows = 3 * CHUNKS * SAMPLES_PER_SNAPSHOT;
    assert_int_equal(pt_scalar(&e, COUNT_SQL), rows);
    /* Acked: a new instance finds nothing to ingest again. */
    pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, port, NULL, lp);
    assert_true(pt_wait_ready(port, 20000));
    pt_sleep_ms(3500); /* past the start delay (one ack wait) */
    assert_int_equal(pt_scalar(&e, COUNT_SQL), rows);
    assert_true(metric_value(port, "microcloud_signal_ingest_redelivered_total") == 0);
    kill(pid, SIGTERM);
    assert_int_equal(pt_wait(pid, 15000), 0);
    pt_env_cleanup(&e);
}

static void test_bad_rules_file(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    char rules[256];
    snprintf(rules, sizeof rules, "%s/pipesvc-%d-bad.rules", P_tmpdir, (int)getpid());
    FILE *f = fopen(rules, "w");
    assert_non_null(f);
    fputs("mode = extend\n\n[rule]\nname = cpu_hot\nmetric = cpu_usage\noperator = gtx\n"
          "threshold = 90\nseverity = warning\n",
          f);
    fclose(f);
    char env_rules[300];
    snprintf(env_rules, sizeof env_rules, "RULES_FILE=%s", rules);
    const char *extra[] = {env_rules, NULL};
    char lp[256];
    log_path(lp, sizeof lp, "badrules");
    pid_t pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, pt_free_port(), extra, lp);
    assert_int_equal(pt_wait(pid, 15000), 2);
    static char log[8192];
    pt_read_log(lp, log, sizeof log);
    assert_non_null(strstr(log, "rule \"cpu_hot\""));
    assert_non_null(strstr(log, "field \"operator\""));
    assert_non_null(strstr(log, "RULES_FILE"));

    /* A missing file is refused the same way. */
    const char *missing[] = {"RULES_FILE=/nonexistent/detect.rules", NULL};
    pid = pt_spawn(&e, SIGNAL_SERVICE_BIN, pt_free_port(), missing, lp);
    assert_int_equal(pt_wait(pid, 15000), 2);
    unlink(rules);
    pt_env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_rules_file, pt_kill_children),
        cmocka_unit_test_teardown(test_poison_deadlettered, pt_kill_children),
        cmocka_unit_test_teardown(test_sigterm_commits_open_batch, pt_kill_children),
        cmocka_unit_test_teardown(test_incidents_from_error_rate, pt_kill_children),
        cmocka_unit_test_teardown(test_ingest_kill9_exactly_once, pt_kill_children),
    };
    int rc = cmocka_run_group_tests(tests, setup, NULL);
    mc_bus_library_shutdown(2000);
    return rc;
}
