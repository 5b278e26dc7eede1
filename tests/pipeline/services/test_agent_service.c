/* agent-service (with signal-service in front of it) against the real
 * nats-server and PostgreSQL (scripts/with-services).
 *
 *  - error_rate at 20% on one service: signal-service opens a critical
 *    incident, agent-service proposes RESTART_SERVICE for it: one row in
 *    the actions table, one message on ops.actions, one agent watermark per
 *    tick;
 *  - redelivery: the agent's durable consumers are deleted and the agent
 *    started again, so every input is delivered a second time; it decides
 *    the same and still exactly one action exists, in the table and on the
 *    stream (derived ids, idempotent insert, JetStream de-duplication);
 *  - a bad DECISION_RULES_FILE stops the agent with exit status 2, naming
 *    the rule and the field. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipesvc_testutil.h"

#ifndef SIGNAL_SERVICE_BIN
#error "SIGNAL_SERVICE_BIN must name the signal-service binary"
#endif
#ifndef AGENT_SERVICE_BIN
#error "AGENT_SERVICE_BIN must name the agent-service binary"
#endif

static void log_path(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/pipesvc-%d-%s.log", P_tmpdir, (int)getpid(), name);
    unlink(out);
}

static void dump_log(const char *path)
{
    static char log[1 << 16];
    pt_read_log(path, log, sizeof log);
    print_message("---- %s ----\n%s\n", path, log);
}

/* The value of an unlabelled series in a /metrics body; -1 when absent. */
static long long metric_value(const char *body, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = body; (p = strstr(p, name)) != NULL; p += n) {
        if ((p == body || p[-1] == '\n') && p[n] == ' ')
            return strtoll(p + n + 1, NULL, 10);
    }
    return -1;
}

static long long wait_metric(uint16_t port, const char *name, long long want, int timeout_ms)
{
    static char body[1 << 16];
    long long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (pt_http_get(port, "/metrics", body, sizeof body) == 200) {
            v = metric_value(body, name);
            if (v >= want)
                return v;
        }
        pt_sleep_ms(50);
    }
    return v;
}

static const char *ACTIONS_SQL =
    "SELECT count(*) FROM actions WHERE target_id = 'checkout' AND action_type = 1 AND status = 1";

static void test_critical_incident_one_action(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    const uint64_t ticks = 30;
    for (uint64_t t = 1; t <= ticks; t++) {
        pt_sample s[] = {
            {"checkout", NULL, "error_rate", 20.0},
            {"checkout", NULL, "cpu_usage", 40.0},
            {"checkout", NULL, "replicas", 3.0},
            {"catalog", NULL, "error_rate", 0.5},
            {"catalog", NULL, "cpu_usage", 30.0},
            {NULL, "node-1", "cpu_usage", 45.0},
            {NULL, "node-1", "node_status", 1.0},
        };
        pt_publish_snapshot(&e, t, 0, 1, s, sizeof s / sizeof s[0]);
        pt_publish_engine_watermark(&e, t, 1);
    }
    pt_flush(&e);

    char slog[256], alog[256];
    log_path(slog, sizeof slog, "e2e-signal");
    log_path(alog, sizeof alog, "e2e-agent");
    uint16_t sport = pt_free_port(), aport = pt_free_port();
    pid_t sig = pt_spawn(&e, SIGNAL_SERVICE_BIN, sport, NULL, slog);
    pid_t agent = pt_spawn(&e, AGENT_SERVICE_BIN, aport, NULL, alog);

    int64_t n = pt_wait_scalar(&e, ACTIONS_SQL, 1, 60000);
    if (n != 1) {
        dump_log(slog);
        dump_log(alog);
    }
    assert_int_equal(n, 1);
    /* The agent closes every tick the detector closed. */
    for (int i = 0; i < 300 && pt_subject_count(&e, "ops.watermark.agent") < ticks; i++)
        pt_sleep_ms(50);
    assert_int_equal(pt_subject_count(&e, "ops.watermark.agent"), ticks);
    assert_int_equal(pt_subject_count(&e, "ops.actions"), 1);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM actions"), 1);
    /* The action points at the stored critical incident. */
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM actions a JOIN incidents i ON "
                                   "i.id = a.incident_id WHERE i.severity = 4"),
                     1);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM action_history"), 1);
    assert_true(pt_wait_ready(aport, 10000));
    assert_int_equal(wait_metric(aport, "microcloud_agent_actions_proposed_total", 1, 5000), 1);
    assert_int_equal(wait_metric(aport, "microcloud_agent_ticks_closed_total", (long long)ticks,
                                 5000),
                     (long long)ticks);

    /* Redelivery of everything: a new durable consumer starts at the
     * beginning of each stream. */
    kill(agent, SIGTERM);
    assert_int_equal(pt_wait(agent, 15000), 0);
    pt_delete_consumer(&e, true, "agent-ops");
    pt_delete_consumer(&e, false, "agent-sim");
    agent = pt_spawn(&e, AGENT_SERVICE_BIN, aport, NULL, alog);
    long long closed =
        wait_metric(aport, "microcloud_agent_ticks_closed_total", (long long)ticks, 60000);
    if (closed != (long long)ticks)
        dump_log(alog);
    assert_int_equal(closed, (long long)ticks);
    /* It proposed again (same id), and the proposal was stored once. */
    assert_int_equal(wait_metric(aport, "microcloud_agent_actions_proposed_total", 1, 5000), 1);
    static char body[1 << 16];
    assert_int_equal(pt_http_get(aport, "/metrics", body, sizeof body), 200);
    assert_int_equal(metric_value(body, "microcloud_agent_actions_inserted_total"), 0);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM actions"), 1);
    assert_int_equal(pt_scalar(&e, "SELECT count(*) FROM action_history"), 1);
    assert_int_equal(pt_subject_count(&e, "ops.actions"), 1);
    assert_int_equal(pt_subject_count(&e, "ops.watermark.agent"), ticks);

    kill(agent, SIGTERM);
    kill(sig, SIGTERM);
    assert_int_equal(pt_wait(agent, 15000), 0);
    assert_int_equal(pt_wait(sig, 15000), 0);
    pt_env_cleanup(&e);
}

static void test_poison_incident_deadlettered(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    static const uint8_t poison[] = {0xff, 0xff, 0xff, 0x01, 'x'};
    pt_publish_raw(&e, "ops.incidents", poison, sizeof poison, "poison-incident-1");
    pt_flush(&e);
    char alog[256];
    log_path(alog, sizeof alog, "agent-poison");
    uint16_t aport = pt_free_port();
    pid_t agent = pt_spawn(&e, AGENT_SERVICE_BIN, aport, NULL, alog);
    assert_int_equal(wait_metric(aport, "microcloud_agent_deadlettered_total", 1, 30000), 1);
    assert_int_equal(pt_subject_count(&e, "ops.deadletter"), 1);
    natsMsg *dl = pt_last_msg(&e, true, "ops.deadletter");
    assert_non_null(dl);
    const char *h = NULL;
    assert_int_equal(natsMsgHeader_Get(dl, "Mc-Dl-Subject", &h), NATS_OK);
    assert_non_null(strstr(h, "ops.incidents"));
    natsMsg_Destroy(dl);
    kill(agent, SIGTERM);
    assert_int_equal(pt_wait(agent, 15000), 0);
    pt_env_cleanup(&e);
}

static void test_bad_decision_rules_file(void **state)
{
    (void)state;
    pt_env e;
    pt_env_init(&e);
    char rules[256];
    snprintf(rules, sizeof rules, "%s/pipesvc-%d-bad-decide.rules", P_tmpdir, (int)getpid());
    FILE *f = fopen(rules, "w");
    assert_non_null(f);
    fputs("[rule]\nname = restart_hot\nmetric = cpu_usage\naction = EXPLODE\n"
          "reason = Hot services get restarted.\n",
          f);
    fclose(f);
    char env_rules[300];
    snprintf(env_rules, sizeof env_rules, "DECISION_RULES_FILE=%s", rules);
    const char *extra[] = {env_rules, NULL};
    char alog[256];
    log_path(alog, sizeof alog, "agent-badrules");
    pid_t pid = pt_spawn(&e, AGENT_SERVICE_BIN, pt_free_port(), extra, alog);
    assert_int_equal(pt_wait(pid, 15000), 2);
    static char log[8192];
    pt_read_log(alog, log, sizeof log);
    assert_non_null(strstr(log, "rule \"restart_hot\""));
    assert_non_null(strstr(log, "field \"action\""));
    unlink(rules);
    pt_env_cleanup(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_decision_rules_file, pt_kill_children),
        cmocka_unit_test_teardown(test_poison_incident_deadlettered, pt_kill_children),
        cmocka_unit_test_teardown(test_critical_incident_one_action, pt_kill_children),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mc_bus_library_shutdown(2000);
    return rc;
}
