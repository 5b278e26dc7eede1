/* lib/store reconnect: the PostgreSQL of scripts/with-services is restarted
 * (and stopped for a while) under a live store; the next operation after the
 * restart succeeds, and an outage gives a bounded MC_ERR_UNAVAILABLE.
 *
 * with-services exports DB_HOST=<dir>/sock; the data directory is
 * <dir>/data, the log <dir>/postgres.log and the binaries are in
 * MC_PG_BINDIR. pg_ctl runs as postgres when we are root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "log/log.h"
#include "store/store.h"
#include "store_testutil.h"

typedef struct fixture {
    st_db db;
    char dir[512];
    char pg_ctl[512];
} fixture;

/* Runs pg_ctl with the given action and extra arguments; returns its exit
 * status. */
static int pg_ctl(const fixture *f, const char *action, const char *opts)
{
    char data[600], log[600];
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(log, sizeof log, "%s/postgres.log", f->dir);
    const char *argv[32];
    int n = 0;
    if (geteuid() == 0) {
        argv[n++] = "runuser";
        argv[n++] = "-u";
        argv[n++] = "postgres";
        argv[n++] = "--";
    }
    argv[n++] = f->pg_ctl;
    argv[n++] = "-D";
    argv[n++] = data;
    /* A log file, so the server never holds this test's stdout open. */
    argv[n++] = "-l";
    argv[n++] = log;
    argv[n++] = "-w";
    argv[n++] = "-t";
    argv[n++] = "60";
    argv[n++] = "-m";
    argv[n++] = "fast";
    if (opts != NULL) {
        argv[n++] = "-o";
        argv[n++] = opts;
    }
    argv[n++] = action;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            close(null);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char start_opts[1200];

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    const char *host = getenv("DB_HOST"), *bin = getenv("MC_PG_BINDIR"),
               *port = getenv("DB_PORT");
    if (host == NULL || bin == NULL || port == NULL || host[0] != '/') {
        free(f);
        fail_msg("needs scripts/with-services (DB_HOST socket dir, DB_PORT, MC_PG_BINDIR)");
    }
    snprintf(f->dir, sizeof f->dir, "%s", host);
    char *slash = strrchr(f->dir, '/');
    assert_non_null(slash);
    *slash = '\0';
    snprintf(f->pg_ctl, sizeof f->pg_ctl, "%s/pg_ctl", bin);
    /* The options services.sh starts it with, for a start after a stop. */
    snprintf(start_opts, sizeof start_opts,
             "-p %s -k %s -c listen_addresses='' -c max_connections=200", port, host);
    st_db_create(&f->db);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    /* Leave the server running for whatever test comes next. */
    if (pg_ctl(f, "status", NULL) != 0)
        pg_ctl(f, "start", start_opts);
    st_db_drop(&f->db);
    free(f);
    return 0;
}

static void add_action(mc_store *s, uint32_t n, char id[37])
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    char inc[37];
    st_uuid(id, 2, n);
    st_uuid(inc, 1, n);
    stamp.run_id = "r";
    a.stamp = &stamp;
    a.id = id;
    a.incident_id = inc;
    a.action_type = 1;
    a.target_id = "api";
    a.status = 1;
    a.proposed_at_tick = n;
    mc_error err = {0};
    if (mc_store_action_insert(s, &a, NULL, &err) != MC_OK)
        fail_msg("insert: %s", err.msg);
}

static void test_restart(void **state)
{
    fixture *f = *state;
    mc_store *s = st_open_migrated(&f->db);
    mc_error err = {0};
    char id[37];
    add_action(s, 1, id);
    int pid_before = PQbackendPID(mc_store_conn(s));
    assert_int_equal(mc_store_reconnects(s), 0);

    assert_int_equal(pg_ctl(f, "restart", NULL), 0);

    /* First operation after the restart: a compare-and-set, which is not
     * idempotent; the old session died before anything was sent, so the
     * store reconnects and runs it. */
    mc_store_action_transition t = {.action_id = id,
                                    .expected_status = 1,
                                    .to_status = 2,
                                    .actor = "alice",
                                    .tick = 5};
    if (mc_store_action_status_update(s, &t, NULL, &err) != MC_OK)
        fail_msg("first operation after restart: %s", err.msg);
    assert_int_equal(mc_store_reconnects(s), 1);
    assert_int_not_equal(PQbackendPID(mc_store_conn(s)), pid_before);
    Ops__V1__Action *got = NULL;
    assert_int_equal(mc_store_action_get(s, id, &got, &err), MC_OK);
    assert_int_equal(got->status, 2);
    ops__v1__action__free_unpacked(got, NULL);
    /* Exactly one transition was recorded. */
    mc_store_history_list h = {0};
    const char *ids[] = {id};
    assert_int_equal(mc_store_action_history(s, ids, 1, &h, &err), MC_OK);
    assert_int_equal(h.n, 2);
    mc_store_history_list_clear(&h);

    /* Again, with a metrics commit as the first operation. */
    assert_int_equal(pg_ctl(f, "restart", NULL), 0);
    mc_store_metrics_batch *b = NULL;
    assert_int_equal(mc_store_metrics_batch_new(10, &b, &err), MC_OK);
    Sim__V1__MetricSample m = SIM__V1__METRIC_SAMPLE__INIT;
    m.service_id = "api";
    m.metric_name = "cpu_usage";
    m.metric_value = 50;
    assert_int_equal(mc_store_metrics_batch_append_sample(b, 3, 0, 1, &m, &err), MC_OK);
    mc_store_commit_result res = {0};
    if (mc_store_metrics_commit(s, b, "c", "SIM", 3, &res, &err) != MC_OK)
        fail_msg("commit after restart: %s", err.msg);
    assert_int_equal(res.rows_written, 1);
    assert_int_equal(mc_store_reconnects(s), 2);
    mc_store_metrics_batch_free(b);
    mc_store_free(s);
}

static void test_outage_bounded(void **state)
{
    fixture *f = *state;
    mc_store *s = st_open(&f->db, 3);
    mc_error err = {0};
    assert_int_equal(mc_store_migrate(s, NULL, &err), MC_OK);
    assert_int_equal(pg_ctl(f, "stop", NULL), 0);
    uint64_t seq = 0;
    /* Down: the first try finds the session gone, the reconnects fail a
     * bounded number of times, and the caller hears UNAVAILABLE. */
    assert_int_equal(mc_store_position_get(s, "c", &seq, &err), MC_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "3 attempts"));
    assert_int_equal(mc_store_position_get(s, "c", &seq, &err), MC_ERR_UNAVAILABLE);
    /* Back: the next operation works. */
    assert_int_equal(pg_ctl(f, "start", start_opts), 0);
    assert_int_equal(mc_store_position_get(s, "c", &seq, &err), MC_OK);
    assert_int_equal(seq, 0);
    assert_int_equal(mc_store_reconnects(s), 1);
    mc_store_free(s);
}

int main(void)
{
    mc_log_init("test_store_reconnect", MC_LOG_ERROR, MC_LOG_FORMAT_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outage_bounded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
