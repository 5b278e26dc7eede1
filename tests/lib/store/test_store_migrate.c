/* lib/store migrations against a real PostgreSQL: empty database, second
 * run, changed migration, failing migration, concurrent migrators, the
 * embedded text equals the repository files, metrics storage detection. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "log/log.h"
#include "store/store.h"
#include "store_testutil.h"

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

/* All of schema_migrations as one text, to compare runs exactly. */
static char *migrations_snapshot(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT string_agg(version || '|' || name || '|' || checksum || '|' "
                            "|| applied_at::text, ';' ORDER BY version) FROM schema_migrations");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    char *s = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return s;
}

static void test_empty_then_noop(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open(db, 3);
    mc_store_schema_info info = {0};
    mc_error err = {0};
    size_t n = 0;
    const mc_store_migration *m = mc_store_migrations_builtin(&n);
    assert_true(n >= 2);
    assert_int_equal(m[0].version, 1);
    assert_string_equal(m[0].name, "0001_initial");

    assert_int_equal(mc_store_migrate(s, &info, &err), MC_OK);
    assert_int_equal(info.applied_now, n);
    assert_int_equal(info.total, n);
    assert_int_equal(info.latest_version, m[n - 1].version);
    /* TimescaleDB is not installable here: the plain layout. */
    assert_int_equal(info.metrics_storage, MC_STORE_METRICS_PLAIN);

    PGconn *c = st_pq(db);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM schema_migrations"), (int64_t)n);
    for (const char *const *t = (const char *const[]){"metrics", "incidents", "actions",
                                                      "action_history", "consumer_positions",
                                                      NULL};
         *t; t++) {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_tables WHERE tablename = '%s'", *t);
        assert_int_equal(st_scalar(c, sql), 1);
    }
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM pg_indexes WHERE indexname = "
                                  "'metrics_time_brin'"),
                     1);
    /* The stored checksum is the SHA-256 of the text. */
    char sum[65];
    mc_store_migration_checksum(&m[0], sum);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM schema_migrations WHERE version = 1 AND "
             "checksum = '%s'", sum);
    assert_int_equal(st_scalar(c, sql), 1);
    char *before = migrations_snapshot(c);

    /* Second run, same store and a fresh one: nothing applied, rows as they
     * were (applied_at included). */
    assert_int_equal(mc_store_migrate(s, &info, &err), MC_OK);
    assert_int_equal(info.applied_now, 0);
    assert_int_equal(info.total, n);
    mc_store *s2 = st_open(db, 3);
    assert_int_equal(mc_store_migrate(s2, &info, &err), MC_OK);
    assert_int_equal(info.applied_now, 0);
    char *after = migrations_snapshot(c);
    assert_string_equal(before, after);
    free(before);
    free(after);
    PQfinish(c);
    mc_store_free(s2);
    mc_store_free(s);
}

static void test_checksum_mismatch(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open(db, 3);
    mc_error err = {0};
    const mc_store_migration v1[] = {
        {1, "0001_widgets", "CREATE TABLE widgets (id int PRIMARY KEY)"},
        {2, "0002_gadgets", "CREATE TABLE gadgets (id int PRIMARY KEY)"},
    };
    assert_int_equal(mc_store_migrate_with(s, v1, 2, NULL, &err), MC_OK);
    /* Someone edits 0002 after it ran, and adds 0003. */
    const mc_store_migration v2[] = {
        v1[0],
        {2, "0002_gadgets", "CREATE TABLE gadgets (id bigint PRIMARY KEY)"},
        {3, "0003_gizmos", "CREATE TABLE gizmos (id int PRIMARY KEY)"},
    };
    assert_int_equal(mc_store_migrate_with(s, v2, 3, NULL, &err), MC_ERR_CORRUPT);
    assert_non_null(strstr(err.msg, "0002_gadgets"));
    assert_non_null(strstr(err.msg, "changed"));
    /* Nothing after the changed one was applied. */
    PGconn *c = st_pq(db);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'gizmos'"), 0);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM schema_migrations"), 2);
    /* The lock was released: another store can migrate at once. */
    mc_store *s2 = st_open(db, 3);
    const mc_store_migration v3[] = {v1[0], v1[1], v2[2]};
    mc_store_schema_info info = {0};
    assert_int_equal(mc_store_migrate_with(s2, v3, 3, &info, &err), MC_OK);
    assert_int_equal(info.applied_now, 1);
    PQfinish(c);
    mc_store_free(s2);
    mc_store_free(s);
}

static void test_failing_migration_rolls_back(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open(db, 3);
    mc_error err = {0};
    const mc_store_migration bad[] = {
        {1, "0001_ok", "CREATE TABLE ok_table (id int)"},
        {2, "0002_broken", "CREATE TABLE half_table (id int); SELECT no_such_column FROM ok_table"},
    };
    assert_int_equal(mc_store_migrate_with(s, bad, 2, NULL, &err), MC_ERR_IO);
    assert_non_null(strstr(err.msg, "0002_broken"));
    assert_non_null(strstr(err.msg, "no_such_column"));
    PGconn *c = st_pq(db);
    /* 0001 stays applied, 0002 left nothing behind, not even half. */
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM schema_migrations"), 1);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'half_table'"),
                     0);
    /* The store is usable afterwards (no transaction left open). */
    mc_store_schema_info info = {0};
    assert_int_equal(mc_store_migrate_with(s, bad, 1, &info, &err), MC_OK);
    assert_int_equal(info.applied_now, 0);
    assert_int_equal(info.total, 1);
    /* A different history under the same version is refused, by name. */
    assert_int_equal(mc_store_migrate(s, NULL, &err), MC_ERR_CORRUPT);
    assert_non_null(strstr(err.msg, "0001_initial"));
    PQfinish(c);
    mc_store_free(s);
}

static void test_bad_arguments(void **state)
{
    st_db *db = *state;
    mc_store *s = st_open(db, 3);
    mc_error err = {0};
    const mc_store_migration unordered[] = {
        {2, "0002_b", "SELECT 1"},
        {1, "0001_a", "SELECT 1"},
    };
    assert_int_equal(mc_store_migrate_with(s, unordered, 2, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "0001_a"));
    mc_store_free(s);

    /* A bad interval in the configuration is refused by name. */
    mc_store_options o = {.conninfo = db->conninfo, .dbname = db->dbname,
                          .metrics = {.metrics_retention = "thirty days"}};
    assert_int_equal(mc_store_open(&o, &s, &err), MC_OK);
    assert_int_equal(mc_store_migrate(s, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "METRICS_RETENTION"));
    mc_store_free(s);

    /* Unreachable server: bounded attempts, then UNAVAILABLE. */
    mc_store_options bad = {.conninfo = "host=/nonexistent-dir port=1 dbname=x connect_timeout=1",
                            .connect_attempts = 2, .backoff_initial_ms = 10};
    s = (mc_store *)1;
    assert_int_equal(mc_store_open(&bad, &s, &err), MC_ERR_UNAVAILABLE);
    assert_null(s);
    assert_non_null(strstr(err.msg, "2 attempts"));
}

typedef struct svc_cfg {
    mc_db_config db;
    mc_store_config store;
} svc_cfg;

static const mc_config_var svc_vars[] = {
    MC_CONFIG_VARS_DB(svc_cfg, db),
    MC_STORE_CONFIG_VARS(svc_cfg, store),
};

/* A service's start: config table from the environment, open, migrate. */
static void test_open_config(void **state)
{
    st_db *db = *state;
    svc_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    mc_error err = {0};
    assert_int_equal(mc_config_load(svc_vars, sizeof svc_vars / sizeof svc_vars[0], &cfg, NULL,
                                    NULL, &err),
                     MC_OK);
    assert_string_equal(cfg.store.metrics_compress_after, MC_STORE_DEFAULT_COMPRESS_AFTER);
    assert_string_equal(cfg.store.metrics_retention, MC_STORE_DEFAULT_RETENTION);
    /* Through DB_* (DATABASE_URL would win), pointed at the test database. */
    cfg.db.database_url = NULL;
    cfg.db.name = db->dbname;
    mc_store *s = NULL;
    if (mc_store_open_config(&cfg.db, &cfg.store, &s, &err) != MC_OK)
        fail_msg("open_config: %s", err.msg);
    mc_store_schema_info info = {0};
    assert_int_equal(mc_store_migrate(s, &info, &err), MC_OK);
    assert_int_equal(info.metrics_storage, MC_STORE_METRICS_PLAIN);
    assert_string_equal(mc_store_metrics_storage_name(info.metrics_storage), "plain");
    PGconn *c = mc_store_conn(s);
    assert_string_equal(PQdb(c), db->dbname);
    mc_store_free(s);
}

typedef struct racer {
    const st_db *db;
    mc_status st;
    mc_store_schema_info info;
    char msg[512];
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    mc_store_options o = {.conninfo = r->db->conninfo, .dbname = r->db->dbname};
    mc_store *s = NULL;
    mc_error err = {0};
    r->st = mc_store_open(&o, &s, &err);
    if (r->st == MC_OK)
        r->st = mc_store_migrate(s, &r->info, &err);
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    mc_store_free(s);
    return NULL;
}

static void test_concurrent_migrators(void **state)
{
    st_db *db = *state;
    size_t n = 0;
    mc_store_migrations_builtin(&n);
    enum { RACERS = 4 };
    racer r[RACERS];
    pthread_t th[RACERS];
    for (int i = 0; i < RACERS; i++) {
        r[i] = (racer){.db = db};
        assert_int_equal(pthread_create(&th[i], NULL, race, &r[i]), 0);
    }
    uint32_t applied = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(th[i], NULL);
        if (r[i].st != MC_OK)
            fail_msg("racer %d: %s", i, r[i].msg);
        applied += r[i].info.applied_now;
        assert_int_equal(r[i].info.total, n);
    }
    /* Every migration was applied exactly once, by whichever came first. */
    assert_int_equal(applied, n);
    PGconn *c = st_pq(db);
    assert_int_equal(st_scalar(c, "SELECT count(*) FROM schema_migrations"), (int64_t)n);
    PQfinish(c);
}

/* The embedded text is byte for byte the file in the repository. */
static void test_embedded_equals_files(void **state)
{
    (void)state;
    size_t n = 0;
    const mc_store_migration *m = mc_store_migrations_builtin(&n);
    for (size_t i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/lib/store/migrations/%s.sql", MC_SOURCE_DIR, m[i].name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char buf[1 << 20];
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        assert_int_equal(strlen(m[i].sql), len);
        assert_memory_equal(m[i].sql, buf, len);
        if (i > 0)
            assert_true(m[i].version > m[i - 1].version);
    }
}

int main(void)
{
    mc_log_init("test_store_migrate", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_empty_then_noop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_checksum_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_migration_rolls_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_migrators, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_config, setup, teardown),
        cmocka_unit_test(test_embedded_equals_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
