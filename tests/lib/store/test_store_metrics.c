/* lib/store metrics ingest against a real PostgreSQL: COPY of 100k rows with
 * the stream position in the same transaction, a consumer killed
 * mid-transaction and resumed from its stored position (no loss, no
 * duplicates), redeliveries skipped, label escaping, batch bounds. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "log/log.h"
#include "store/store.h"
#include "store_testutil.h"

#define SAMPLES_PER_SNAPSHOT 100
#define SNAPSHOTS 1000 /* x 100 = 100k rows */
#define SNAPSHOTS_PER_BATCH 50
#define T0_MS INT64_C(1767225600000) /* 2026-01-01T00:00:00Z */

static int setup(void **state)
{
    st_db *db = calloc(1, sizeof *db);
    st_db_create(db);
    *state = db;
    return 0;
}

static int teardown(void **state)
{
    st_db *db = *state;
    st_db_drop(db);
    free(db);
    return 0;
}

/* The snapshot a stream would hold at sequence seq: tick = seq, 100 samples
 * unique by (service, metric) within the tick. */
typedef struct snap_buf {
    Sim__V1__MetricSnapshot snap;
    Common__V1__Stamp stamp;
    Sim__V1__MetricSample samples[SAMPLES_PER_SNAPSHOT];
    Sim__V1__MetricSample *ptrs[SAMPLES_PER_SNAPSHOT];
    char svc[SAMPLES_PER_SNAPSHOT][16];
    char name[SAMPLES_PER_SNAPSHOT][16];
} snap_buf;

static void make_snapshot(snap_buf *b, uint64_t seq)
{
    sim__v1__metric_snapshot__init(&b->snap);
    common__v1__stamp__init(&b->stamp);
    b->stamp.run_id = "run-1";
    b->stamp.tick = seq;
    b->stamp.producer = "sim-engine";
    b->stamp.producer_seq = seq;
    b->snap.stamp = &b->stamp;
    b->snap.sim_time_unix_ms = T0_MS + (int64_t)seq * 1000;
    b->snap.chunk_count = 1;
    for (int i = 0; i < SAMPLES_PER_SNAPSHOT; i++) {
        Sim__V1__MetricSample *m = &b->samples[i];
        sim__v1__metric_sample__init(m);
        snprintf(b->svc[i], sizeof b->svc[i], "svc-%02d", i / 10);
        snprintf(b->name[i], sizeof b->name[i], "metric_%d", i % 10);
        m->node_id = "";
        m->service_id = b->svc[i];
        m->metric_name = b->name[i];
        m->metric_value = (double)seq + i / 1000.0;
        b->ptrs[i] = m;
    }
    b->snap.n_samples = SAMPLES_PER_SNAPSHOT;
    b->snap.samples = b->ptrs;
}

/* Fills batch with snapshots [from, to]. */
static void fill(mc_store_metrics_batch *batch, uint64_t from, uint64_t to)
{
    static snap_buf sb;
    mc_error err = {0};
    mc_store_metrics_batch_reset(batch);
    for (uint64_t q = from; q <= to; q++) {
        make_snapshot(&sb, q);
        if (mc_store_metrics_batch_append_snapshot(batch, &sb.snap, q, &err) != MC_OK)
            fail_msg("append %llu: %s", (unsigned long long)q, err.msg);
    }
}

static void assert_complete(PGconn *c, int64_t rows)
{
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM metrics"), rows);
    assert_int_equal(st_scalar(c, "SELECT count(DISTINCT (tick_id, node_id, service_id, "
                                  "metric_name)) FROM metrics"),
                     rows);
}

/* Holds a lock that stops COPY into metrics, kills the backend that waits
 * on it (kills times), then lets go: a consumer dying mid-transaction. */
typedef struct killer {
    const st_db *db;
    int kills;
    int done;
    volatile int locked;
} killer;

static void *kill_waiters(void *arg)
{
    killer *k = arg;
    PGconn *c = st_pq(k->db);
    st_exec(c, "BEGIN");
    st_exec(c, "LOCK TABLE metrics IN SHARE MODE");
    k->locked = 1;
    for (int polls = 0; k->done < k->kills && polls < 1000; polls++) {
        /* Activity is read once per transaction unless the snapshot is
         * dropped, and this one stays open to hold the lock. */
        st_exec(c, "SELECT pg_stat_clear_snapshot()");
        int64_t pid = st_scalar(c, "SELECT pid FROM pg_stat_activity WHERE datname = "
                                   "current_database() AND wait_event_type = 'Lock' AND pid <> "
                                   "pg_backend_pid() LIMIT 1");
        if (pid != 0) {
            char sql[96];
            snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%lld)", (long long)pid);
            st_exec(c, sql);
            k->done++;
            /* Wait until it is gone before looking for the next waiter. */
            for (int w = 0; w < 500; w++) {
                snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %lld",
                         (long long)pid);
                st_exec(c, "SELECT pg_stat_clear_snapshot()");
                if (st_scalar(c, sql) == 0)
                    break;
                nanosleep(&(struct timespec){0, 10000000}, NULL);
            }
        } else {
            nanosleep(&(struct timespec){0, 10000000}, NULL);
        }
    }
    st_exec(c, "ROLLBACK");
    PQfinish(c);
    return NULL;
}

static void test_copy_crash_resume(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open_migrated(db);
    mc_store_metrics_batch *batch = NULL;
    mc_error err = {0};
    assert_int_equal(mc_store_metrics_batch_new(SNAPSHOTS_PER_BATCH * SAMPLES_PER_SNAPSHOT, &batch,
                                                &err),
                     MC_OK);
    const char *consumer = "signal-ingest", *stream = "SIM";
    uint64_t pos = 99;
    assert_int_equal(mc_store_position_get(s, consumer, &pos, &err), MC_OK);
    assert_int_equal(pos, 0);

    /* The first 8 batches (400 snapshots, 40k rows) commit. */
    uint64_t next = 1;
    for (int b = 0; b < 8; b++) {
        fill(batch, next, next + SNAPSHOTS_PER_BATCH - 1);
        mc_store_commit_result res = {0};
        uint64_t last = next + SNAPSHOTS_PER_BATCH - 1;
        if (mc_store_metrics_commit(s, batch, consumer, stream, last, &res, &err) != MC_OK)
            fail_msg("commit: %s", err.msg);
        assert_int_equal(res.rows_written, SNAPSHOTS_PER_BATCH * SAMPLES_PER_SNAPSHOT);
        assert_int_equal(res.rows_skipped, 0);
        assert_int_equal(res.position, last);
        next = last + 1;
    }
    PGconn *c = st_pq(db);
    assert_complete(c, 400 * SAMPLES_PER_SNAPSHOT);

    /* The 9th dies mid-transaction: its backend is killed while its COPY
     * waits, and again on the store's own retry; the store then gives up
     * with UNAVAILABLE, and the "process" exits without committing. */
    fill(batch, next, next + SNAPSHOTS_PER_BATCH - 1);
    killer k = {.db = db, .kills = 2};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, kill_waiters, &k), 0);
    while (!k.locked)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    mc_status st = mc_store_metrics_commit(s, batch, consumer, stream,
                                           next + SNAPSHOTS_PER_BATCH - 1, NULL, &err);
    pthread_join(th, NULL);
    if (k.done != 2)
        fail_msg("killed %d times; commit returned %s: %s", k.done, mc_status_name(st), err.msg);
    assert_int_equal(st, MC_ERR_UNAVAILABLE);
    mc_store_free(s);
    /* Nothing of the dead transaction is visible. */
    assert_complete(c, 400 * SAMPLES_PER_SNAPSHOT);
    assert_int_equal(st_scalar(c, "SELECT last_seq FROM consumer_positions WHERE consumer = "
                                  "'signal-ingest'"),
                     400);

    /* A new consumer process resumes from the stored position. JetStream
     * redelivers what was not acked, which may include committed messages
     * (say the last 30): they must be skipped, not duplicated. */
    s = st_open_migrated(db);
    assert_int_equal(mc_store_position_get(s, consumer, &pos, &err), MC_OK);
    assert_int_equal(pos, 400);
    uint64_t from = pos - 30 + 1;
    uint64_t skipped = 0;
    while (from <= SNAPSHOTS) {
        uint64_t to = from + SNAPSHOTS_PER_BATCH - 1;
        if (to > SNAPSHOTS)
            to = SNAPSHOTS;
        fill(batch, from, to);
        mc_store_commit_result res = {0};
        if (mc_store_metrics_commit(s, batch, consumer, stream, to, &res, &err) != MC_OK)
            fail_msg("commit after resume: %s", err.msg);
        skipped += res.rows_skipped;
        assert_int_equal(res.rows_written + res.rows_skipped, (to - from + 1) * SAMPLES_PER_SNAPSHOT);
        from = to + 1;
    }
    assert_int_equal(skipped, 30 * SAMPLES_PER_SNAPSHOT);
    assert_complete(c, SNAPSHOTS * SAMPLES_PER_SNAPSHOT);
    assert_int_equal(st_scalar(c, "SELECT min(tick_id) FROM metrics"), 1);
    assert_int_equal(st_scalar(c, "SELECT max(tick_id) FROM metrics"), SNAPSHOTS);
    assert_int_equal(mc_store_position_get(s, consumer, &pos, &err), MC_OK);
    assert_int_equal(pos, SNAPSHOTS);
    /* Values and times arrive as sent. */
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM metrics WHERE tick_id = 777 AND "
                                  "service_id = 'svc-03' AND metric_name = 'metric_4' AND "
                                  "metric_value = 777.034 AND node_id = '' AND labels = '{}' AND "
                                  "time = '2026-01-01T00:00:00Z'::timestamptz + interval "
                                  "'777 seconds'"),
                     1);
    PQfinish(c);
    mc_store_metrics_batch_free(batch);
    mc_store_free(s);
}

static void test_redelivery_skipped(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open_migrated(db);
    mc_store_metrics_batch *batch = NULL;
    mc_error err = {0};
    mc_store_commit_result res = {0};
    assert_int_equal(mc_store_metrics_batch_new(100000, &batch, &err), MC_OK);
    fill(batch, 1, 10);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "SIM", 10, &res, &err), MC_OK);
    assert_int_equal(res.rows_written, 1000);

    /* The same batch again: everything skipped, position unchanged. */
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "SIM", 10, &res, &err), MC_OK);
    assert_int_equal(res.rows_written, 0);
    assert_int_equal(res.rows_skipped, 1000);
    assert_int_equal(res.position, 10);

    /* An overlapping redelivery (5..12): only 11 and 12 are new. */
    fill(batch, 5, 12);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "SIM", 12, &res, &err), MC_OK);
    assert_int_equal(res.rows_written, 200);
    assert_int_equal(res.rows_skipped, 600);
    assert_int_equal(res.position, 12);

    /* A stale one entirely below, with a lower last_seq: no rows, and the
     * position never goes back. */
    fill(batch, 2, 3);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "SIM", 3, &res, &err), MC_OK);
    assert_int_equal(res.rows_written, 0);
    assert_int_equal(res.position, 12);

    /* Messages without rows still move the position (an empty batch). */
    mc_store_metrics_batch_reset(batch);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "SIM", 15, &res, &err), MC_OK);
    assert_int_equal(res.position, 15);

    /* A second consumer has its own position over the same stream. */
    fill(batch, 1, 2);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c2", "SIM", 2, &res, &err), MC_OK);
    assert_int_equal(res.rows_written, 200);

    /* A consumer is bound to its stream; last_seq below the batch refused. */
    assert_int_equal(mc_store_metrics_commit(s, batch, "c1", "OPS", 20, &res, &err), MC_ERR_STATE);
    assert_non_null(strstr(err.msg, "SIM"));
    assert_int_equal(mc_store_metrics_commit(s, batch, "c2", "SIM", 1, &res, &err),
                     MC_ERR_INVALID);

    PGconn *c = st_pq(db);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM metrics"), 1000 + 200 + 200);
    assert_int_equal(st_scalar(c, "SELECT last_seq FROM consumer_positions WHERE consumer='c1'"),
                     15);
    PQfinish(c);
    uint64_t pos = 0;
    assert_int_equal(mc_store_position_get(s, "c2", &pos, &err), MC_OK);
    assert_int_equal(pos, 2);
    mc_store_metrics_batch_free(batch);
    mc_store_free(s);
}

static void test_labels_and_strings(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open_migrated(db);
    mc_store_metrics_batch *batch = NULL;
    mc_error err = {0};
    assert_int_equal(mc_store_metrics_batch_new(10, &batch, &err), MC_OK);
    Sim__V1__MetricSample m = SIM__V1__METRIC_SAMPLE__INIT;
    Sim__V1__MetricSample__LabelsEntry e1 = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    Sim__V1__MetricSample__LabelsEntry e2 = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    Sim__V1__MetricSample__LabelsEntry *labels[2] = {&e1, &e2};
    e1.key = "zone";
    e1.value = "eu \"west\" \\ 1\n\t\x01 é";
    e2.key = "k\"ey";
    e2.value = "";
    m.node_id = "node-ü";
    m.service_id = "svc\\'x";
    m.metric_name = "p99_latency_ms";
    m.metric_value = -0.0;
    m.n_labels = 2;
    m.labels = labels;
    assert_int_equal(mc_store_metrics_batch_append_sample(batch, 7, -1500, 3, &m, &err), MC_OK);
    m.metric_value = 1.0 / 3.0;
    m.n_labels = 0;
    assert_int_equal(mc_store_metrics_batch_append_sample(batch, 7, 0, 4, &m, &err), MC_OK);
    assert_int_equal(mc_store_metrics_commit(s, batch, "c", "SIM", 7, NULL, &err), MC_OK);

    PGconn *c = st_pq(db);
    PGresult *r = PQexec(c, "SELECT labels->>'zone', labels->>'k\"ey', node_id, service_id, "
                            "(extract(epoch FROM time) * 1000)::bigint, metric_value = 1.0/3.0 "
                            "FROM metrics ORDER BY tick_id");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 2);
    assert_string_equal(PQgetvalue(r, 0, 0), "eu \"west\" \\ 1\n\t\x01 é");
    assert_string_equal(PQgetvalue(r, 0, 1), "");
    assert_string_equal(PQgetvalue(r, 0, 2), "node-ü");
    assert_string_equal(PQgetvalue(r, 0, 3), "svc\\'x");
    assert_string_equal(PQgetvalue(r, 0, 4), "-1500");
    assert_string_equal(PQgetvalue(r, 1, 5), "t");
    PQclear(r);
    PQfinish(c);
    mc_store_metrics_batch_free(batch);
    mc_store_free(s);
}

static void test_batch_bounds(void **state)
{
    (void)state;
    mc_store_metrics_batch *batch = NULL;
    mc_error err = {0};
    assert_int_equal(mc_store_metrics_batch_new(0, &batch, &err), MC_ERR_RANGE);
    assert_int_equal(mc_store_metrics_batch_new(150, &batch, &err), MC_OK);
    snap_buf *sb = calloc(1, sizeof *sb);
    make_snapshot(sb, 5);
    assert_int_equal(mc_store_metrics_batch_append_snapshot(batch, &sb->snap, 5, &err), MC_OK);
    /* A second snapshot does not fit: refused whole, batch unchanged. */
    make_snapshot(sb, 6);
    assert_int_equal(mc_store_metrics_batch_append_snapshot(batch, &sb->snap, 6, &err),
                     MC_ERR_LIMIT);
    assert_int_equal(mc_store_metrics_batch_rows(batch), 100);
    assert_int_equal(mc_store_metrics_batch_last_seq(batch), 5);
    /* Sequences never go back; seq 0 is not a stream sequence. */
    assert_int_equal(mc_store_metrics_batch_append_sample(batch, 4, 0, 1, &sb->samples[0], &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_store_metrics_batch_append_sample(batch, 0, 0, 1, &sb->samples[0], &err),
                     MC_ERR_RANGE);
    /* A snapshot that fails halfway leaves nothing behind. */
    sb->samples[60].metric_name = NULL;
    make_snapshot(sb, 6);
    sb->snap.sim_time_unix_ms = INT64_MAX;
    assert_int_equal(mc_store_metrics_batch_append_snapshot(batch, &sb->snap, 6, &err),
                     MC_ERR_LIMIT);
    sb->snap.n_samples = 40;
    assert_int_equal(mc_store_metrics_batch_append_snapshot(batch, &sb->snap, 6, &err),
                     MC_ERR_RANGE);
    assert_int_equal(mc_store_metrics_batch_rows(batch), 100);
    assert_int_equal(mc_store_metrics_batch_last_seq(batch), 5);
    mc_store_metrics_batch_reset(batch);
    assert_int_equal(mc_store_metrics_batch_rows(batch), 0);
    assert_int_equal(mc_store_metrics_batch_last_seq(batch), 0);
    free(sb);
    mc_store_metrics_batch_free(batch);
    mc_store_metrics_batch_free(NULL);
}

int main(void)
{
    mc_log_init("test_store_metrics", MC_LOG_ERROR, MC_LOG_FORMAT_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_copy_crash_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels_and_strings, setup, teardown),
        cmocka_unit_test(test_batch_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
