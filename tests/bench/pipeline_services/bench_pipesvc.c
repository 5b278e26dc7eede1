/* End-to-end ingest benchmark: samples/s from JetStream through
 * signal-service into PostgreSQL, next to `psql \copy` of the very same rows
 * (exported from the service's table) into an identical table, in the same
 * run on the same server, printed as a ratio. Medians of several runs.
 *
 * Each run: a fresh database and fresh streams; BENCH_SNAPSHOTS snapshots of
 * BENCH_SAMPLES samples (one per tick, each with the engine's watermark) are
 * published to JetStream first (not timed); then
 * signal-service is started and its counter of committed samples is polled
 * on /metrics. The rate is taken from the first commit to the last, so the
 * start-up (migrations, the one-ack-wait delay before consuming) is not in
 * it. Then the rows are exported with psql and loaded again with
 * `psql \copy ... FROM` into metrics_psql (LIKE metrics INCLUDING ALL).
 *
 *   bench_pipesvc SIGNAL_SERVICE_BINARY
 *
 * Environment: NATS_URL, DATABASE_URL or DB_*, psql from MC_PG_BINDIR or
 * PATH; BENCH_SNAPSHOTS (4000), BENCH_SAMPLES (100), BENCH_RUNS (3),
 * BENCH_BATCH_ROWS (5000: the service's INGEST_BATCH_ROWS). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "bus/bus.h"
#include "common/v1/enums.pb-c.h"
#include "common/v1/stamp.pb-c.h"
#include "config/config.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define MAX_RUNS 15
#define T0_MS INT64_C(1767225600000)

typedef struct bench_env {
    mc_nats_config nats;
    mc_db_config db;
    uint64_t snapshots;
    uint64_t samples;
    uint64_t runs;
    uint64_t batch_rows;
} bench_env;

static const mc_config_var vars[] = {
    MC_CONFIG_VARS_NATS(bench_env, nats),
    MC_CONFIG_VARS_DB(bench_env, db),
    {"BENCH_SNAPSHOTS", MC_CFG_UINT, "4000", "Snapshots per run", offsetof(bench_env, snapshots),
     .min = 10, .max = 1000000},
    {"BENCH_SAMPLES", MC_CFG_UINT, "100", "Samples per snapshot", offsetof(bench_env, samples),
     .min = 1, .max = 10000},
    {"BENCH_RUNS", MC_CFG_UINT, "3", "Runs (median)", offsetof(bench_env, runs), .min = 1,
     .max = MAX_RUNS},
    {"BENCH_BATCH_ROWS", MC_CFG_UINT, "5000", "INGEST_BATCH_ROWS of the service",
     offsetof(bench_env, batch_rows), .min = 1, .max = 1000000},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_pipesvc: %s: %s\n", what, msg);
    exit(1);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static PGconn *connect_db(const char *conninfo, const char *dbname)
{
    const char *k[] = {"dbname", "dbname", NULL}, *v[] = {conninfo, dbname, NULL};
    if (dbname == NULL)
        k[1] = NULL;
    PGconn *c = PQconnectdbParams(k, v, 1);
    if (PQstatus(c) != CONNECTION_OK)
        die("connect", PQerrorMessage(c));
    return c;
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

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("free port", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* The committed-samples counter from /metrics; -1 when unreachable. */
static long long samples_ingested(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    static const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return -1;
    }
    static char buf[1 << 16];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fd, buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    buf[got] = '\0';
    const char *name = "\nmicrocloud_signal_samples_ingested_total ";
    const char *p = strstr(buf, name);
    return p ? strtoll(p + strlen(name), NULL, 10) : -1;
}

/* Each snapshot is one tick, followed by the engine's watermark, so the
 * detection side of the service works as in a run (one chunk per tick). */
static void publish_all(mc_bus *bus, const char *subject, const char *wm_subject,
                        const char *run_id, const bench_env *env)
{
    size_t n = (size_t)env->samples;
    Sim__V1__MetricSample *ms = calloc(n, sizeof *ms);
    Sim__V1__MetricSample **mp = calloc(n, sizeof *mp);
    char(*svc)[16] = calloc(n, sizeof *svc);
    uint8_t *buf = malloc(64 * n + 256);
    if (ms == NULL || mp == NULL || svc == NULL || buf == NULL)
        die("publish", "out of memory");
    static const char *const metrics[] = {"cpu_usage", "memory_usage", "error_rate",
                                          "p99_latency_ms", "requests_per_second"};
    for (size_t i = 0; i < n; i++) {
        sim__v1__metric_sample__init(&ms[i]);
        snprintf(svc[i], sizeof svc[i], "svc-%03zu", i / 5);
        ms[i].service_id = svc[i];
        ms[i].node_id = "";
        ms[i].metric_name = (char *)metrics[i % 5];
        mp[i] = &ms[i];
    }
    mc_error err = {0};
    for (uint64_t k = 1; k <= env->snapshots; k++) {
        Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
        stamp.run_id = (char *)run_id;
        stamp.tick = k;
        stamp.producer = "sim-engine";
        stamp.producer_seq = 2 * k - 1;
        Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
        snap.stamp = &stamp;
        snap.sim_time_unix_ms = T0_MS + (int64_t)k * 1000;
        snap.chunk_count = 1;
        for (size_t i = 0; i < n; i++)
            ms[i].metric_value = (double)((k * 31 + i * 7) % 1000) / 10.0;
        snap.n_samples = n;
        snap.samples = mp;
        size_t len = sim__v1__metric_snapshot__pack(&snap, buf);
        if (mc_bus_publish_stamped(bus, subject, run_id, k, stamp.producer_seq, buf, len,
                                   &err) != MC_OK)
            die("publish", err.msg);
        stamp.producer_seq = 2 * k;
        Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
        wm.stamp = &stamp;
        wm.stage = COMMON__V1__STAGE__STAGE_ENGINE;
        wm.tick = k;
        wm.message_count = 1;
        len = ops__v1__watermark__pack(&wm, buf);
        if (mc_bus_publish_stamped(bus, wm_subject, run_id, k, stamp.producer_seq, buf, len,
                                   &err) != MC_OK)
            die("publish", err.msg);
    }
    if (mc_bus_flush(bus, 120000, &err) != MC_OK)
        die("flush", err.msg);
    free(ms);
    free(mp);
    free(svc);
    free(buf);
}

static int run_psql(const char *psql, PGconn *c, const char *dbname, const char *cmd)
{
    const char *host = PQhost(c), *port = PQport(c), *user = PQuser(c), *pass = PQpass(c);
    pid_t pid = fork();
    if (pid == 0) {
        if (pass != NULL && pass[0] != '\0')
            setenv("PGPASSWORD", pass, 1);
        execlp(psql, psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U",
               user, "-d", dbname, "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bench_pipesvc SIGNAL_SERVICE_BINARY\n");
        return 2;
    }
    const char *binary = argv[1];
    bench_env env;
    memset(&env, 0, sizeof env);
    mc_config_load_or_exit(1, argv, "bench_pipesvc",
                           "signal-service ingest vs psql \\copy (samples/s, median, ratio)",
                           vars, sizeof vars / sizeof vars[0], &env);
    mc_log_init("bench_pipesvc", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, stderr);
    char conninfo[2048];
    if (mc_db_config_conninfo(&env.db, conninfo, sizeof conninfo) != MC_OK)
        die("DB config", "conninfo too long");
    char psql[600] = "psql";
    const char *bindir = getenv("MC_PG_BINDIR");
    if (bindir != NULL && bindir[0] != '\0')
        snprintf(psql, sizeof psql, "%s/psql", bindir);
    const uint64_t total = env.snapshots * env.samples;
    printf("pipeline_services: %" PRIu64 " snapshots x %" PRIu64 " samples = %" PRIu64
           " rows per run, INGEST_BATCH_ROWS=%" PRIu64 ", %" PRIu64 " runs\n",
           env.snapshots, env.samples, total, env.batch_rows, env.runs);

    double svc_rate[MAX_RUNS], psql_rate[MAX_RUNS];
    int runs = (int)env.runs;
    for (int run = 0; run < runs; run++) {
        char dbname[64], sprefix[64], subprefix[64], run_id[64], subject[128], wm_subject[128];
        snprintf(dbname, sizeof dbname, "mc_bench_pipesvc_%d_%d", (int)getpid(), run);
        snprintf(sprefix, sizeof sprefix, "B%dr%d_", (int)getpid(), run);
        snprintf(subprefix, sizeof subprefix, "b%dr%d.", (int)getpid(), run);
        snprintf(run_id, sizeof run_id, "run-bench%dr%d", (int)getpid(), run);
        snprintf(subject, sizeof subject, "%ssim.metrics", subprefix);
        snprintf(wm_subject, sizeof wm_subject, "%ssim.watermark", subprefix);
        PGconn *admin = connect_db(conninfo, NULL);
        char sql[256];
        snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", dbname);
        exec_ok(admin, sql);

        mc_bus_options bo = {0};
        bo.name = "bench-pipesvc";
        bo.stream_prefix = sprefix;
        bo.subject_prefix = subprefix;
        bo.max_pending_acks = 8192;
        mc_bus *bus = NULL;
        mc_error err = {0};
        if (mc_bus_open(NULL, &env.nats, &bo, &bus, &err) != MC_OK)
            die("NATS", err.msg);
        publish_all(bus, subject, wm_subject, run_id, &env);

        uint16_t port = free_port();
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            char addr[64], rows[32];
            snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)port);
            snprintf(rows, sizeof rows, "%" PRIu64, env.batch_rows);
            unsetenv("DATABASE_URL");
            setenv("DB_NAME", dbname, 1);
            setenv("BUS_STREAM_PREFIX", sprefix, 1);
            setenv("BUS_SUBJECT_PREFIX", subprefix, 1);
            setenv("ADMIN_ADDR", addr, 1);
            setenv("CONSUMER_ACK_WAIT", "1s", 1);
            setenv("INGEST_BATCH_ROWS", rows, 1);
            setenv("LOG_LEVEL", "warn", 1);
            setenv("LOG_FORMAT", "text", 1);
            execl(binary, binary, (char *)NULL);
            _exit(127);
        }
        double t0 = 0, t1 = 0;
        long long v0 = 0, v = -1;
        double deadline = now_s() + 600;
        while (now_s() < deadline) {
            v = samples_ingested(port);
            if (v > 0 && t0 == 0) {
                t0 = now_s();
                v0 = v;
            }
            if (v >= (long long)total) {
                t1 = now_s();
                break;
            }
            sleep_ms(5);
        }
        kill(pid, SIGTERM);
        int status = 0;
        waitpid(pid, &status, 0);
        if (t1 == 0 || t1 <= t0)
            die("signal-service", "did not ingest every row in time");
        svc_rate[run] = (double)((long long)total - v0) / (t1 - t0);

        PGconn *c = connect_db(conninfo, dbname);
        if ((uint64_t)scalar(c, "SELECT count(*) FROM metrics") != total)
            die("signal-service", "row count mismatch");
        exec_ok(c, "CREATE TABLE metrics_psql (LIKE metrics INCLUDING ALL)");
        char csv[] = "/tmp/mc_bench_pipesvc_XXXXXX";
        int fd = mkstemp(csv);
        if (fd < 0)
            die("mkstemp", strerror(errno));
        close(fd);
        char cmd[1200];
        snprintf(cmd, sizeof cmd,
                 "\\copy (SELECT time, tick_id, node_id, service_id, metric_name, metric_value, "
                 "labels FROM metrics) TO '%s' WITH (FORMAT csv)",
                 csv);
        if (run_psql(psql, c, dbname, cmd) != 0)
            die("psql export", "failed");
        exec_ok(c, "CHECKPOINT");
        snprintf(cmd, sizeof cmd,
                 "\\copy metrics_psql (time, tick_id, node_id, service_id, metric_name, "
                 "metric_value, labels) FROM '%s' WITH (FORMAT csv)",
                 csv);
        double p0 = now_s();
        if (run_psql(psql, c, dbname, cmd) != 0)
            die("psql \\copy", "failed");
        double pt = now_s() - p0;
        psql_rate[run] = (double)total / pt;
        if ((uint64_t)scalar(c, "SELECT count(*) FROM metrics_psql") != total)
            die("psql \\copy", "row count mismatch");
        unlink(csv);
        printf("run %d: signal-service %.0f samples/s (%.3f s from first to last commit), psql "
               "\\copy %.0f rows/s (%.3f s)\n",
               run + 1, svc_rate[run], t1 - t0, psql_rate[run], pt);
        PQfinish(c);
        mc_bus_streams_delete(bus, &err);
        mc_bus_free(bus);
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", dbname);
        exec_ok(admin, sql);
        PQfinish(admin);
    }
    double rs = median(svc_rate, runs), rp = median(psql_rate, runs);
    printf("median of %d runs:\n", runs);
    printf("  JetStream -> signal-service -> PostgreSQL: %.0f samples/s\n", rs);
    printf("  psql \\copy of the same rows (csv):         %.0f rows/s\n", rp);
    printf("  ratio signal-service/psql: %.2f\n", rs / rp);
    mc_bus_library_shutdown(2000);
    return 0;
}
