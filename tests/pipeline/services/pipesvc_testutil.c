#include "pipesvc_testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "config/config.h"
#include "core/ids.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define T0_MS INT64_C(1767225600000)

typedef struct db_env {
    mc_db_config db;
} db_env;

static const mc_config_var db_vars[] = {MC_CONFIG_VARS_DB(db_env, db)};

void pt_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static PGconn *connect_db(const char *conninfo, const char *dbname)
{
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {conninfo, dbname, NULL};
    if (dbname == NULL)
        keys[1] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", dbname ? dbname : "(server)", PQerrorMessage(c));
    return c;
}

static void exec_ok(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

void pt_env_init(pt_env *e)
{
    static int n;
    n++;
    memset(e, 0, sizeof *e);
    const char *url = getenv("NATS_URL");
    if (url == NULL || url[0] == '\0')
        fail_msg("NATS_URL is not set: run under scripts/with-services");
    snprintf(e->nats_url, sizeof e->nats_url, "%s", url);
    snprintf(e->stream_prefix, sizeof e->stream_prefix, "T%dx%d_", (int)getpid(), n);
    snprintf(e->subject_prefix, sizeof e->subject_prefix, "t%dx%d.", (int)getpid(), n);
    snprintf(e->run_id, sizeof e->run_id, "run-test%dx%d", (int)getpid(), n);

    db_env env;
    memset(&env, 0, sizeof env);
    mc_error err = {0};
    if (mc_config_load(db_vars, sizeof db_vars / sizeof db_vars[0], &env, NULL, NULL, &err) !=
        MC_OK)
        fail_msg("DB config: %s", err.msg);
    assert_int_equal(mc_db_config_conninfo(&env.db, e->conninfo, sizeof e->conninfo), MC_OK);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(e->dbname, sizeof e->dbname, "mc_pipesvc_%x_%lx_%d", (unsigned)getpid(),
             (unsigned long)ts.tv_nsec, n);
    PGconn *c = connect_db(e->conninfo, NULL);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", e->dbname);
    exec_ok(c, sql);
    PQfinish(c);
    e->pg = connect_db(e->conninfo, e->dbname);

    mc_nats_config nats = {.url = e->nats_url};
    mc_bus_options o = {0};
    o.name = "pipesvc-test";
    o.stream_prefix = e->stream_prefix;
    o.subject_prefix = e->subject_prefix;
    o.max_pending_acks = 8192;
    if (mc_bus_open(NULL, &nats, &o, &e->bus, &err) != MC_OK)
        fail_msg("mc_bus_open: %s", err.msg);
    if (natsConnection_ConnectTo(&e->nc, e->nats_url) != NATS_OK ||
        natsConnection_JetStream(&e->js, e->nc, NULL) != NATS_OK)
        fail_msg("connect to NATS %s", e->nats_url);
}

void pt_env_cleanup(pt_env *e)
{
    mc_error err = {0};
    if (e->bus != NULL) {
        mc_bus_streams_delete(e->bus, &err);
        mc_bus_free(e->bus);
        e->bus = NULL;
    }
    jsCtx_Destroy(e->js);
    natsConnection_Destroy(e->nc);
    e->js = NULL;
    e->nc = NULL;
    if (e->pg != NULL) {
        PQfinish(e->pg);
        e->pg = NULL;
    }
    if (e->dbname[0] != '\0') {
        PGconn *c = connect_db(e->conninfo, NULL);
        char sql[160];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", e->dbname);
        exec_ok(c, sql);
        PQfinish(c);
        e->dbname[0] = '\0';
    }
}

/* ---- Children ---- */

/* Children not yet waited for, so a failed test does not leave them
 * running (pt_kill_children). */
#define MAX_CHILDREN 16
static pid_t g_children[MAX_CHILDREN];

static void child_forget(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (g_children[i] == pid)
            g_children[i] = 0;
}

int pt_kill_children(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] > 0) {
            kill(g_children[i], SIGKILL);
            waitpid(g_children[i], NULL, 0);
            g_children[i] = 0;
        }
    }
    return 0;
}

pid_t pt_spawn(const pt_env *e, const char *binary, uint16_t admin_port,
               const char *const *extra, const char *log_path)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        char admin[64];
        snprintf(admin, sizeof admin, "127.0.0.1:%u", (unsigned)admin_port);
        unsetenv("DATABASE_URL");
        setenv("NATS_URL", e->nats_url, 1);
        setenv("DB_NAME", e->dbname, 1);
        setenv("BUS_STREAM_PREFIX", e->stream_prefix, 1);
        setenv("BUS_SUBJECT_PREFIX", e->subject_prefix, 1);
        setenv("ADMIN_ADDR", admin, 1);
        setenv("LOG_FORMAT", "text", 1);
        /* Short, so a start (which waits one ack wait) is quick. */
        setenv("CONSUMER_ACK_WAIT", "2s", 1);
        for (size_t i = 0; extra && extra[i]; i++) {
            char kv[1024];
            snprintf(kv, sizeof kv, "%s", extra[i]);
            char *eq = strchr(kv, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            setenv(kv, eq + 1, 1);
        }
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execl(binary, binary, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", binary, strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (g_children[i] == 0) {
            g_children[i] = pid;
            break;
        }
    }
    return pid;
}

int pt_wait(pid_t pid, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            child_forget(pid);
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
            return -1;
        }
        if (mono_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            child_forget(pid);
            return -1;
        }
        pt_sleep_ms(20);
    }
}

uint16_t pt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

int pt_http_get(uint16_t port, const char *path, char *body, size_t n)
{
    if (body && n)
        body[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    char req[512];
    int rl = snprintf(req, sizeof req,
                      "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)rl) != rl) {
        close(fd);
        return 0;
    }
    static char buf[1 << 18];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof buf - 1)
            break;
    }
    close(fd);
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        return 0;
    const char *b = strstr(buf, "\r\n\r\n");
    if (body && n && b)
        snprintf(body, n, "%s", b + 4);
    return status;
}

bool pt_wait_ready(uint16_t port, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    while (mono_ms() < end) {
        if (pt_http_get(port, "/ready", NULL, 0) == 200)
            return true;
        pt_sleep_ms(50);
    }
    return false;
}

void pt_read_log(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    size_t got = fread(out, 1, n - 1, f);
    out[got] = '\0';
    fclose(f);
}

/* ---- Messages ---- */

static void publish_packed(pt_env *e, const char *subject, uint64_t tick, uint64_t seq,
                           const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    protobuf_c_message_pack(msg, buf);
    char full[256];
    snprintf(full, sizeof full, "%s%s", e->subject_prefix, subject);
    mc_error err = {0};
    mc_status st = mc_bus_publish_stamped(e->bus, full, e->run_id, tick, seq, buf, len, &err);
    free(buf);
    if (st != MC_OK)
        fail_msg("publish %s: %s", full, err.msg);
}

void pt_publish_snapshot(pt_env *e, uint64_t tick, uint32_t chunk_index, uint32_t chunk_count,
                         const pt_sample *samples, size_t n)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = e->run_id;
    stamp.tick = tick;
    stamp.producer = "sim-engine";
    stamp.producer_seq = ++e->producer_seq[0];
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    snap.stamp = &stamp;
    snap.sim_time_unix_ms = T0_MS + (int64_t)tick * 1000;
    snap.chunk_index = chunk_index;
    snap.chunk_count = chunk_count;
    Sim__V1__MetricSample *ms = calloc(n ? n : 1, sizeof *ms);
    Sim__V1__MetricSample **mp = calloc(n ? n : 1, sizeof *mp);
    assert_non_null(ms);
    assert_non_null(mp);
    for (size_t i = 0; i < n; i++) {
        sim__v1__metric_sample__init(&ms[i]);
        ms[i].service_id = (char *)(samples[i].service_id ? samples[i].service_id : "");
        ms[i].node_id = (char *)(samples[i].node_id ? samples[i].node_id : "");
        ms[i].metric_name = (char *)samples[i].metric;
        ms[i].metric_value = samples[i].value;
        mp[i] = &ms[i];
    }
    snap.n_samples = n;
    snap.samples = mp;
    publish_packed(e, "sim.metrics", tick, stamp.producer_seq, &snap.base);
    free(ms);
    free(mp);
}

void pt_publish_engine_watermark(pt_env *e, uint64_t tick, uint32_t message_count)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = e->run_id;
    stamp.tick = tick;
    stamp.producer = "sim-engine";
    stamp.producer_seq = ++e->producer_seq[0];
    Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
    wm.stamp = &stamp;
    wm.stage = COMMON__V1__STAGE__STAGE_ENGINE;
    wm.tick = tick;
    wm.message_count = message_count;
    publish_packed(e, "sim.watermark", tick, stamp.producer_seq, &wm.base);
}

void pt_publish_raw(pt_env *e, const char *subject, const void *data, size_t len,
                    const char *msg_id)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", e->subject_prefix, subject);
    mc_error err = {0};
    if (mc_bus_publish_async(e->bus, full, data, len, msg_id, &err) != MC_OK)
        fail_msg("publish %s: %s", full, err.msg);
}

void pt_flush(pt_env *e)
{
    mc_error err = {0};
    if (mc_bus_flush(e->bus, 60000, &err) != MC_OK)
        fail_msg("flush: %s", err.msg);
}

/* ---- Inspection ---- */

uint64_t pt_subject_count(pt_env *e, const char *subject)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", e->subject_prefix, subject);
    const char *stream = mc_bus_stream_name(e->bus, strncmp(subject, "ops.", 4) == 0
                                                        ? MC_BUS_STREAM_OPS
                                                        : MC_BUS_STREAM_SIM);
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = full;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, e->js, stream, &o, &jerr);
    if (s != NATS_OK)
        fail_msg("stream info %s: %s (%d)", stream, natsStatus_GetText(s), (int)jerr);
    uint64_t count = 0;
    if (si->State.Subjects != NULL) {
        for (int i = 0; i < si->State.Subjects->Count; i++)
            if (strcmp(si->State.Subjects->List[i].Subject, full) == 0)
                count = si->State.Subjects->List[i].Msgs;
    }
    jsStreamInfo_Destroy(si);
    return count;
}

void pt_delete_consumer(pt_env *e, bool ops_stream, const char *durable)
{
    const char *stream =
        mc_bus_stream_name(e->bus, ops_stream ? MC_BUS_STREAM_OPS : MC_BUS_STREAM_SIM);
    jsErrCode jerr = 0;
    natsStatus s = js_DeleteConsumer(e->js, stream, durable, NULL, &jerr);
    if (s != NATS_OK)
        fail_msg("delete consumer %s on %s: %s", durable, stream, natsStatus_GetText(s));
}

natsMsg *pt_last_msg(pt_env *e, bool ops_stream, const char *subject)
{
    char full[256];
    snprintf(full, sizeof full, "%s%s", e->subject_prefix, subject);
    const char *stream =
        mc_bus_stream_name(e->bus, ops_stream ? MC_BUS_STREAM_OPS : MC_BUS_STREAM_SIM);
    natsMsg *m = NULL;
    jsErrCode jerr = 0;
    if (js_GetLastMsg(&m, e->js, stream, full, NULL, &jerr) != NATS_OK)
        return NULL;
    return m;
}

int64_t pt_scalar(pt_env *e, const char *sql)
{
    PGresult *r = PQexec(e->pg, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(e->pg));
    int64_t v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                         : 0;
    PQclear(r);
    return v;
}

/* Like pt_scalar, but a failing query (a table not created yet) is -1. */
static int64_t scalar_or_minus_one(pt_env *e, const char *sql)
{
    PGresult *r = PQexec(e->pg, sql);
    int64_t v = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                     : 0;
    PQclear(r);
    return v;
}

int64_t pt_wait_scalar(pt_env *e, const char *sql, int64_t want, int timeout_ms)
{
    uint64_t end = mono_ms() + (uint64_t)timeout_ms;
    int64_t v = scalar_or_minus_one(e, sql);
    while (v < want && mono_ms() < end) {
        pt_sleep_ms(50);
        v = scalar_or_minus_one(e, sql);
    }
    return v;
}
