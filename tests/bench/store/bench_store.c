/* Store ingest benchmark: rows/s of metrics COPY through the store
 * (mc_store_metrics_batch + mc_store_metrics_commit, binary COPY plus the
 * consumer position, one transaction per batch) next to `psql \copy` of the
 * same rows from a CSV file into an identical table, in the same run on the
 * same server, printed as a ratio (the machine is shared; the ratio is the
 * figure that means something). Medians of several runs.
 *
 * Environment: DATABASE_URL or DB_*; psql from MC_PG_BINDIR or PATH;
 * BENCH_STORE_ROWS (200000), BENCH_STORE_BATCH (5000), BENCH_STORE_RUNS (3). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "config/config.h"
#include "log/log.h"
#include "store/store.h"

#define SAMPLES_PER_SNAPSHOT 100
#define MAX_RUNS 15
#define T0_MS INT64_C(1767225600000)

typedef struct bench_env {
    mc_db_config db;
    uint64_t rows;
    uint64_t batch;
    uint64_t runs;
} bench_env;

static const mc_config_var vars[] = {
    MC_CONFIG_VARS_DB(bench_env, db),
    {"BENCH_STORE_ROWS", MC_CFG_UINT, "200000", "Rows per run", offsetof(bench_env, rows),
     .min = 100, .max = 10000000},
    {"BENCH_STORE_BATCH", MC_CFG_UINT, "5000", "Rows per commit", offsetof(bench_env, batch),
     .min = 100, .max = 1000000},
    {"BENCH_STORE_RUNS", MC_CFG_UINT, "3", "Runs (median)", offsetof(bench_env, runs), .min = 1,
     .max = MAX_RUNS},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_store: %s: %s\n", what, msg);
    exit(1);
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    PQclear(r);
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        die(sql, PQerrorMessage(c));
    long long v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++) {
        double x = v[i];
        int j = i - 1;
        while (j >= 0 && v[j] > x) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Row r of the data set: snapshot r / 100 (tick and stream sequence), 10
 * services x 10 metrics, one label. */
typedef struct row_gen {
    char svc[SAMPLES_PER_SNAPSHOT][16];
    char name[SAMPLES_PER_SNAPSHOT][16];
} row_gen;

static void gen_init(row_gen *g)
{
    for (int i = 0; i < SAMPLES_PER_SNAPSHOT; i++) {
        snprintf(g->svc[i], sizeof g->svc[i], "svc-%02d", i / 10);
        snprintf(g->name[i], sizeof g->name[i], "metric_%d", i % 10);
    }
}

static double row_value(uint64_t r)
{
    return (double)(r % 9973) / 7.0;
}

static void write_csv(const char *path, uint64_t rows, const row_gen *g)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        die(path, "cannot create");
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t snap = r / SAMPLES_PER_SNAPSHOT + 1;
        int i = (int)(r % SAMPLES_PER_SNAPSHOT);
        int64_t ms = T0_MS + (int64_t)snap * 1000;
        time_t sec = (time_t)(ms / 1000);
        struct tm tm;
        gmtime_r(&sec, &tm);
        char ts[40];
        strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", &tm);
        fprintf(f, "%s.%03d+00,%" PRIu64 ",\"\",%s,%s,%.17g,\"{\"\"region\"\":\"\"eu-1\"\"}\"\n", ts,
                (int)(ms % 1000), snap, g->svc[i], g->name[i], row_value(r));
    }
    if (fclose(f) != 0)
        die(path, "write failed");
}

/* One run through the store: append + commit per batch. Returns seconds. */
static double run_store(mc_store *s, const bench_env *env, const row_gen *g,
                        mc_store_metrics_batch *b, const char *consumer)
{
    Sim__V1__MetricSample m = SIM__V1__METRIC_SAMPLE__INIT;
    Sim__V1__MetricSample__LabelsEntry e = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    Sim__V1__MetricSample__LabelsEntry *labels[1] = {&e};
    e.key = "region";
    e.value = "eu-1";
    m.node_id = "";
    m.n_labels = 1;
    m.labels = labels;
    mc_error err = {0};
    double t0 = now_s();
    uint64_t r = 0;
    while (r < env->rows) {
        mc_store_metrics_batch_reset(b);
        uint64_t end = r + env->batch < env->rows ? r + env->batch : env->rows;
        uint64_t snap = 0;
        for (; r < end; r++) {
            snap = r / SAMPLES_PER_SNAPSHOT + 1;
            int i = (int)(r % SAMPLES_PER_SNAPSHOT);
            m.service_id = (char *)g->svc[i];
            m.metric_name = (char *)g->name[i];
            m.metric_value = row_value(r);
            if (mc_store_metrics_batch_append_sample(b, snap, T0_MS + (int64_t)snap * 1000, snap,
                                                     &m, &err) != MC_OK)
                die("append", err.msg);
        }
        if (mc_store_metrics_commit(s, b, consumer, "SIM", snap, NULL, &err) != MC_OK)
            die("commit", err.msg);
    }
    return now_s() - t0;
}

static double run_psql(const char *psql, PGconn *c, const char *dbname, const char *csv)
{
    char copy[1200];
    snprintf(copy, sizeof copy,
             "\\copy metrics_psql (time, tick_id, node_id, service_id, metric_name, "
             "metric_value, labels) FROM '%s' WITH (FORMAT csv)",
             csv);
    const char *host = PQhost(c), *port = PQport(c), *user = PQuser(c), *pass = PQpass(c);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid == 0) {
        if (pass != NULL && pass[0] != '\0')
            setenv("PGPASSWORD", pass, 1);
        execlp(psql, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U",
               user, "-d", dbname, "-c", copy, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    double t = now_s() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("psql \\copy", "failed");
    return t;
}

int main(int argc, char **argv)
{
    bench_env env;
    memset(&env, 0, sizeof env);
    mc_config_load_or_exit(argc, argv, "bench_store",
                           "Store COPY ingest vs psql \\copy (rows/s, median, ratio)", vars,
                           sizeof vars / sizeof vars[0], &env);
    mc_log_init("bench_store", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    char conninfo[2048];
    if (mc_db_config_conninfo(&env.db, conninfo, sizeof conninfo) != MC_OK)
        die("DB config", "conninfo too long");

    char dbname[64];
    snprintf(dbname, sizeof dbname, "mc_bench_%d", (int)getpid());
    const char *k1[] = {"dbname", NULL}, *v1[] = {conninfo, NULL};
    PGconn *admin = PQconnectdbParams(k1, v1, 1);
    if (PQstatus(admin) != CONNECTION_OK)
        die("connect", PQerrorMessage(admin));
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    exec_ok(admin, sql);

    mc_store_options o = {.conninfo = conninfo, .dbname = dbname};
    mc_store *s = NULL;
    mc_error err = {0};
    if (mc_store_open(&o, &s, &err) != MC_OK || mc_store_migrate(s, NULL, &err) != MC_OK)
        die("store", err.msg);
    const char *k2[] = {"dbname", "dbname", NULL}, *v2[] = {conninfo, dbname, NULL};
    PGconn *c = PQconnectdbParams(k2, v2, 1);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    /* Same columns, defaults and indexes as metrics. */
    exec_ok(c, "CREATE TABLE metrics_psql (LIKE metrics INCLUDING ALL)");

    static row_gen g;
    gen_init(&g);
    char csv[] = "/tmp/mc_bench_store_XXXXXX";
    int fd = mkstemp(csv);
    if (fd < 0)
        die("mkstemp", "failed");
    close(fd);
    write_csv(csv, env.rows, &g);

    char psql[600] = "psql";
    const char *bindir = getenv("MC_PG_BINDIR");
    if (bindir != NULL && bindir[0] != '\0')
        snprintf(psql, sizeof psql, "%s/psql", bindir);

    mc_store_metrics_batch *b = NULL;
    if (mc_store_metrics_batch_new(env.batch, &b, &err) != MC_OK)
        die("batch", err.msg);
    double ts[MAX_RUNS], tp[MAX_RUNS];
    int runs = (int)env.runs;
    for (int run = 0; run < runs; run++) {
        /* Alternate, starting from an empty table each time. */
        exec_ok(c, "TRUNCATE metrics, consumer_positions");
        exec_ok(c, "CHECKPOINT");
        char consumer[32];
        snprintf(consumer, sizeof consumer, "bench-%d", run);
        ts[run] = run_store(s, &env, &g, b, consumer);
        if ((uint64_t)scalar(c, "SELECT count(*) FROM metrics") != env.rows)
            die("store run", "row count mismatch");
        exec_ok(c, "TRUNCATE metrics_psql");
        exec_ok(c, "CHECKPOINT");
        tp[run] = run_psql(psql, c, dbname, csv);
        if ((uint64_t)scalar(c, "SELECT count(*) FROM metrics_psql") != env.rows)
            die("psql run", "row count mismatch");
        if (scalar(c, "SELECT count(*) FROM (SELECT * FROM metrics EXCEPT ALL "
                      "SELECT * FROM metrics_psql) d") != 0)
            die("check", "the two tables differ");
        printf("run %d: store %.3f s, psql \\copy %.3f s\n", run + 1, ts[run], tp[run]);
    }
    double ms = median(ts, runs), mp = median(tp, runs);
    double rs = (double)env.rows / ms, rp = (double)env.rows / mp;
    printf("bench_store: %" PRIu64 " rows, batches of %" PRIu64 ", median of %d runs\n",
           env.rows, env.batch, runs);
    printf("  store (binary COPY + position, 1 tx/batch): %.0f rows/s\n", rs);
    printf("  psql \\copy (csv, one transaction):          %.0f rows/s\n", rp);
    printf("  ratio store/psql: %.2f\n", rs / rp);

    mc_store_metrics_batch_free(b);
    mc_store_free(s);
    PQfinish(c);
    unlink(csv);
    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", dbname);
    exec_ok(admin, sql);
    PQfinish(admin);
    return 0;
}
