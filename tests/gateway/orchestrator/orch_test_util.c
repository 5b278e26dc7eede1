/* Helpers for the orchestrator's integration tests (see orch_test_util.h). */
#include "orch_test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/ids.h"

#ifndef ORCH_BIN
#error ORCH_BIN must name the orchestrator binary
#endif

static void die(const char *what)
{
    fprintf(stderr, "orch_test_util: %s\n", what);
    abort();
}

uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void th_uuid(char out[37], uint32_t n)
{
    static uint32_t salt;
    if (salt == 0)
        salt = (uint32_t)getpid();
    snprintf(out, 37, "%08x-0000-4000-8000-%012x", salt, n);
}

/* ---- Processes ---- */

int th_run(char *const argv[], char **out, bool merge_stderr, int timeout_ms)
{
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        dup2(p[1], 1);
        if (merge_stderr)
            dup2(p[1], 2);
        else {
            int dn = open("/dev/null", O_WRONLY);
            dup2(dn, 2);
        }
        close(p[0]);
        close(p[1]);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        struct pollfd pf = {p[0], POLLIN, 0};
        int left = (int)(deadline > th_now_ms() ? deadline - th_now_ms() : 0);
        if (poll(&pf, 1, left) <= 0)
            break;
        if (len + 4096 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(p[0], buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (th_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            free(buf);
            if (out)
                *out = NULL;
            return -1;
        }
        usleep(10000);
    }
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- Database ---- */

static char g_db[64];

static PGconn *pg_connect(const char *dbname)
{
    const char *url = getenv("DATABASE_URL");
    if (url == NULL)
        die("DATABASE_URL is not set (run under scripts/with-services)");
    const char *keys[] = {"dbname", dbname ? "dbname" : NULL, NULL};
    const char *vals[] = {url, dbname, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s\n", PQerrorMessage(c));
        die("cannot connect to PostgreSQL");
    }
    return c;
}

const char *th_database(void)
{
    if (g_db[0] != '\0')
        return g_db;
    snprintf(g_db, sizeof g_db, "orch_test_%d_%lu", (int)getpid(), (unsigned long)time(NULL));
    PGconn *c = pg_connect(NULL);
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", g_db);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "%s\n", PQerrorMessage(c));
        die("CREATE DATABASE failed");
    }
    PQclear(r);
    PQfinish(c);
    return g_db;
}

static char *db_scalar(const char *sql, const char *param)
{
    PGconn *c = pg_connect(th_database());
    const char *params[] = {param};
    PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
    char *v = NULL;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return v;
}

long th_history_rows(const char *action_id)
{
    char *v = db_scalar("SELECT count(*) FROM action_history WHERE action_id = $1::uuid",
                        action_id);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

int th_action_status(const char *action_id)
{
    char *v = db_scalar("SELECT status FROM actions WHERE id = $1::uuid", action_id);
    int n = v ? atoi(v) : -1;
    free(v);
    return n;
}

/* ---- The orchestrator ---- */

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("bind");
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd);
    return ntohs(a.sin_port);
}

void th_orch_init(th_orch *o, const char *tag)
{
    static int counter;
    memset(o, 0, sizeof *o);
    counter++;
    snprintf(o->prefix_stream, sizeof o->prefix_stream, "T%d_%s_%d_", (int)getpid(), tag, counter);
    snprintf(o->prefix_subject, sizeof o->prefix_subject, "t%d%s%d.", (int)getpid(), tag, counter);
    snprintf(o->dbname, sizeof o->dbname, "%s", th_database());
    o->port = free_port();
}

void th_orch_env(th_orch *o, const char *kv)
{
    if (o->n_extra < 16)
        snprintf(o->extra[o->n_extra++], sizeof o->extra[0], "%s", kv);
}

static int raw_get_status(uint16_t port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                     path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char buf[64] = "";
    struct pollfd pf = {fd, POLLIN, 0};
    int status = -1;
    if (poll(&pf, 1, 2000) > 0 && read(fd, buf, sizeof buf - 1) > 12)
        status = atoi(buf + 9);
    close(fd);
    return status;
}

void th_orch_start(th_orch *o)
{
    snprintf(o->log_path, sizeof o->log_path, "/tmp/orch_test_%d_%u.log", (int)getpid(),
             (unsigned)o->port);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        char buf[128];
        unsetenv("DATABASE_URL");
        setenv("DB_NAME", o->dbname, 1);
        snprintf(buf, sizeof buf, "127.0.0.1:%u", (unsigned)o->port);
        setenv("ADDR", buf, 1);
        setenv("BUS_STREAM_PREFIX", o->prefix_stream, 1);
        setenv("BUS_SUBJECT_PREFIX", o->prefix_subject, 1);
        setenv("API_TOKEN", "test-token", 1);
        setenv("SIM_ENGINE_URL", "http://127.0.0.1:9", 1);
        setenv("LOG_FORMAT", "text", 1);
        setenv("WEB_DIR", "/nonexistent-web-dir", 1);
        setenv("SHUTDOWN_TIMEOUT", "5s", 1);
        for (size_t i = 0; i < o->n_extra; i++) {
            char kv[256];
            snprintf(kv, sizeof kv, "%s", o->extra[i]);
            char *eq = strchr(kv, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            if (eq[1] == '\0')
                unsetenv(kv);
            else
                setenv(kv, eq + 1, 1);
        }
        int fd = open(o->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        execl(ORCH_BIN, "orchestrator", (char *)NULL);
        _exit(127);
    }
    o->pid = pid;
    uint64_t deadline = th_now_ms() + 20000;
    while (th_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "orchestrator exited at start; log: %s\n", o->log_path);
            die("orchestrator did not start");
        }
        if (raw_get_status(o->port, "/ready") == 200)
            return;
        usleep(50000);
    }
    fprintf(stderr, "log: %s\n", o->log_path);
    die("orchestrator not ready within 20 s");
}

int th_orch_stop(th_orch *o)
{
    if (o->pid <= 0)
        return -1;
    kill(o->pid, SIGTERM);
    uint64_t deadline = th_now_ms() + 20000;
    int status = 0;
    while (waitpid(o->pid, &status, WNOHANG) == 0) {
        if (th_now_ms() > deadline) {
            kill(o->pid, SIGKILL);
            waitpid(o->pid, &status, 0);
            o->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    o->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* ---- HTTP via curl ---- */

void th_resp_free(th_resp *r)
{
    free(r->body);
    free(r->headers);
    memset(r, 0, sizeof *r);
}

void th_curl(const th_orch *o, const char *path, const char *const *args, size_t n, th_resp *r)
{
    memset(r, 0, sizeof *r);
    char url[256], hdr_path[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)o->port, path);
    static int k;
    snprintf(hdr_path, sizeof hdr_path, "/tmp/orch_test_hdr_%d_%d", (int)getpid(), ++k);
    char *argv[64];
    size_t a = 0;
    argv[a++] = "curl";
    argv[a++] = "-s";
    argv[a++] = "-D";
    argv[a++] = hdr_path;
    argv[a++] = "-w";
    argv[a++] = "\n%{http_code}";
    argv[a++] = "--max-time";
    argv[a++] = "20";
    for (size_t i = 0; i < n && a < 60; i++)
        argv[a++] = (char *)args[i];
    argv[a++] = url;
    argv[a] = NULL;
    char *out = NULL;
    th_run(argv, &out, false, 25000);
    if (out != NULL) {
        char *nl = strrchr(out, '\n');
        if (nl != NULL) {
            r->status = atoi(nl + 1);
            *nl = '\0';
        }
        r->body = out;
    } else {
        r->body = strdup("");
    }
    FILE *f = fopen(hdr_path, "r");
    if (f != NULL) {
        char *h = calloc(1, 65536);
        size_t got = fread(h, 1, 65535, f);
        h[got] = '\0';
        fclose(f);
        r->headers = h;
    } else {
        r->headers = strdup("");
    }
    unlink(hdr_path);
}

void th_post_json(const th_orch *o, const char *path, const char *json, const char *token,
                  const char *extra_header, th_resp *r)
{
    char auth[256];
    const char *args[16];
    size_t n = 0;
    args[n++] = "-X";
    args[n++] = "POST";
    args[n++] = "-H";
    args[n++] = "Content-Type: application/json";
    if (token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        args[n++] = "-H";
        args[n++] = auth;
    }
    if (extra_header != NULL) {
        args[n++] = "-H";
        args[n++] = extra_header;
    }
    args[n++] = "--data-binary";
    args[n++] = json;
    th_curl(o, path, args, n, r);
}

/* ---- SSE ---- */

int th_sse_open(th_sse *s, uint16_t port, const char *path, const char *header, int rcvbuf)
{
    memset(s, 0, sizeof *s);
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf > 0)
        setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s->fd, (struct sockaddr *)&a, sizeof a) != 0)
        return -1;
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n%s%s\r\n",
                     path, header ? header : "", header ? "\r\n" : "");
    if (write(s->fd, req, (size_t)n) != n)
        return -1;
    s->cap = 1 << 16;
    s->buf = malloc(s->cap);
    /* Read the head. */
    uint64_t deadline = th_now_ms() + 5000;
    while (th_now_ms() < deadline) {
        s->buf[s->len] = '\0';
        char *end = strstr(s->buf, "\r\n\r\n");
        if (end != NULL) {
            int status = atoi(s->buf + 9);
            size_t head = (size_t)(end + 4 - s->buf);
            memmove(s->buf, s->buf + head, s->len - head);
            s->len -= head;
            return status;
        }
        struct pollfd pf = {s->fd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t got = read(s->fd, s->buf + s->len, s->cap - s->len - 1);
        if (got <= 0)
            return -1;
        s->len += (size_t)got;
    }
    return -1;
}

bool th_sse_next(th_sse *s, th_event *ev, int timeout_ms)
{
    memset(ev, 0, sizeof *ev);
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        s->buf[s->len] = '\0';
        char *end = strstr(s->buf, "\n\n");
        if (end != NULL) {
            size_t blen = (size_t)(end - s->buf) + 2;
            *end = '\0';
            bool any = false;
            size_t dcap = strlen(s->buf) + 1, dlen = 0;
            char *data = calloc(1, dcap);
            for (char *line = s->buf, *save = NULL, *tok = strtok_r(line, "\n", &save); tok;
                 tok = strtok_r(NULL, "\n", &save)) {
                if (strncmp(tok, "id: ", 4) == 0) {
                    snprintf(ev->id, sizeof ev->id, "%s", tok + 4);
                    any = true;
                } else if (strncmp(tok, "event: ", 7) == 0) {
                    snprintf(ev->type, sizeof ev->type, "%s", tok + 7);
                    any = true;
                } else if (strncmp(tok, "data: ", 6) == 0) {
                    size_t l = strlen(tok + 6);
                    memcpy(data + dlen, tok + 6, l);
                    dlen += l;
                    data[dlen] = '\0';
                    any = true;
                }
            }
            memmove(s->buf, s->buf + blen, s->len - blen);
            s->len -= blen;
            if (any) {
                ev->data = data;
                return true;
            }
            free(data);
            continue;
        }
        uint64_t now = th_now_ms();
        struct pollfd pf = {s->fd, POLLIN, 0};
        /* Poll once even when the time is up, so a zero timeout still
         * picks up what has arrived. */
        if (poll(&pf, 1, now >= deadline ? 0 : (int)(deadline - now)) <= 0)
            return false;
        if (s->len + 4096 > s->cap) {
            s->cap *= 2;
            s->buf = realloc(s->buf, s->cap);
        }
        ssize_t got = read(s->fd, s->buf + s->len, s->cap - s->len - 1);
        if (got <= 0)
            return false;
        s->len += (size_t)got;
    }
}

void th_event_free(th_event *ev)
{
    free(ev->data);
    ev->data = NULL;
}

void th_sse_close(th_sse *s)
{
    if (s->fd > 0)
        close(s->fd);
    free(s->buf);
    memset(s, 0, sizeof *s);
}

/* ---- Bus ---- */

typedef struct th_msg {
    char subject[128];
    uint8_t *data;
    size_t len;
} th_msg;

struct th_bus {
    mc_bus *bus;
    mc_bus_consumer *c;
    char prefix[64];
    pthread_mutex_t mu;
    th_msg *msgs;
    size_t n, cap;
};

static void on_collect(void *ctx, mc_bus_batch *batch)
{
    th_bus *b = ctx;
    pthread_mutex_lock(&b->mu);
    for (size_t i = 0; i < mc_bus_batch_count(batch); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(batch, i);
        if (b->n == b->cap) {
            b->cap = b->cap ? b->cap * 2 : 256;
            b->msgs = realloc(b->msgs, b->cap * sizeof *b->msgs);
        }
        th_msg *t = &b->msgs[b->n++];
        snprintf(t->subject, sizeof t->subject, "%s", mc_bus_msg_subject(m));
        t->len = mc_bus_msg_len(m);
        t->data = malloc(t->len + 1);
        memcpy(t->data, mc_bus_msg_data(m), t->len);
    }
    pthread_mutex_unlock(&b->mu);
    mc_bus_batch_free(batch);
}

th_bus *th_bus_open(const th_orch *o)
{
    th_bus *b = calloc(1, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    snprintf(b->prefix, sizeof b->prefix, "%s", o->prefix_subject);
    mc_nats_config nc = {.url = getenv("NATS_URL")};
    mc_bus_options bo = {0};
    bo.name = "orch-test";
    bo.stream_prefix = o->prefix_stream;
    bo.subject_prefix = o->prefix_subject;
    mc_error err = {0};
    if (mc_bus_open(NULL, &nc, &bo, &b->bus, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        die("bus open");
    }
    mc_bus_ordered_options oo = {.stream = MC_BUS_STREAM_OPS, .start_seq = 1,
                                 .on_batch = on_collect, .ctx = b};
    if (mc_bus_ordered_open(b->bus, &oo, &b->c, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        die("ordered consumer");
    }
    return b;
}

void th_bus_close(th_bus *b)
{
    if (b == NULL)
        return;
    mc_bus_consumer_close(b->c);
    mc_bus_free(b->bus);
    for (size_t i = 0; i < b->n; i++)
        free(b->msgs[i].data);
    free(b->msgs);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

void th_bus_publish(th_bus *b, const char *subject, const ProtobufCMessage *m, const char *run,
                    uint64_t tick, uint64_t seq)
{
    char full[160], id[256];
    snprintf(full, sizeof full, "%s%s", b->prefix, subject);
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(m, buf);
    mc_id_msg(id, sizeof id, run, full, tick, seq);
    mc_error err = {0};
    if (mc_bus_publish(b->bus, full, buf, len, id, NULL, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        die("publish");
    }
    free(buf);
}

size_t th_bus_count(th_bus *b, const char *subject)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", b->prefix, subject);
    pthread_mutex_lock(&b->mu);
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        n += strcmp(b->msgs[i].subject, full) == 0;
    pthread_mutex_unlock(&b->mu);
    return n;
}

size_t th_bus_wait(th_bus *b, const char *subject, size_t n, int timeout_ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)timeout_ms;
    size_t c;
    while ((c = th_bus_count(b, subject)) < n && th_now_ms() < deadline)
        usleep(20000);
    return c;
}

ProtobufCMessage *th_bus_get(th_bus *b, const char *subject, size_t idx,
                             const ProtobufCMessageDescriptor *desc)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", b->prefix, subject);
    ProtobufCMessage *m = NULL;
    pthread_mutex_lock(&b->mu);
    size_t k = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (strcmp(b->msgs[i].subject, full) != 0)
            continue;
        if (k++ == idx) {
            m = protobuf_c_message_unpack(desc, NULL, b->msgs[i].len, b->msgs[i].data);
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
    return m;
}

void th_publish_action(th_bus *b, const char *run, const char *id, const char *target,
                       uint64_t tick, uint64_t seq)
{
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = (char *)run;
    st.tick = tick;
    st.producer = "agent";
    st.producer_seq = seq;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    a.stamp = &st;
    a.id = (char *)id;
    char inc[37];
    th_uuid(inc, 0xfffff000u + (uint32_t)seq);
    a.incident_id = inc;
    a.action_type = COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE;
    a.target_id = (char *)target;
    a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
    a.reason = "error rate above 10%";
    a.proposed_at_tick = tick;
    a.updated_at_tick = tick;
    th_bus_publish(b, "ops.actions", &a.base, run, tick, seq);
}

void th_publish_agent_watermark(th_bus *b, const char *run, uint64_t tick, uint64_t seq)
{
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = (char *)run;
    st.tick = tick;
    st.producer = "agent";
    st.producer_seq = seq;
    Ops__V1__Watermark w = OPS__V1__WATERMARK__INIT;
    w.stamp = &st;
    w.stage = COMMON__V1__STAGE__STAGE_AGENT;
    w.tick = tick;
    th_bus_publish(b, "ops.watermark.agent", &w.base, run, tick, seq);
}

/* ---- Stand-in engine ---- */

struct th_engine {
    int fd;
    uint16_t port;
    int status;
    char body[4096];
    pthread_t thread;
    pthread_mutex_t mu;
    char last_path[256], last_ctype[256], last_body[4096];
    int requests;
    volatile int stop;
};

static void *engine_main(void *arg)
{
    th_engine *e = arg;
    while (!e->stop) {
        struct pollfd pf = {e->fd, POLLIN, 0};
        if (poll(&pf, 1, 100) <= 0)
            continue;
        int c = accept(e->fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[16384];
        size_t len = 0;
        size_t need = 0;
        uint64_t deadline = th_now_ms() + 3000;
        while (len < sizeof buf - 1 && th_now_ms() < deadline) {
            struct pollfd cp = {c, POLLIN, 0};
            if (poll(&cp, 1, 100) <= 0)
                continue;
            ssize_t n = read(c, buf + len, sizeof buf - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            char *end = strstr(buf, "\r\n\r\n");
            if (end != NULL) {
                char *cl = strcasestr(buf, "Content-Length:");
                size_t body_len = cl ? (size_t)atol(cl + 15) : 0;
                need = (size_t)(end + 4 - buf) + body_len;
                if (len >= need)
                    break;
            }
        }
        buf[len] = '\0';
        pthread_mutex_lock(&e->mu);
        e->requests++;
        /* The orchestrator's own state refreshes are counted but do not
         * replace the last forwarded call. */
        bool own = strstr(buf, "/GetState ") != NULL || strstr(buf, "/GetTopology ") != NULL;
        char *sp = strchr(buf, ' ');
        if (sp != NULL && !own) {
            char *sp2 = strchr(sp + 1, ' ');
            size_t pl = sp2 ? (size_t)(sp2 - sp - 1) : 0;
            if (pl >= sizeof e->last_path)
                pl = sizeof e->last_path - 1;
            memcpy(e->last_path, sp + 1, pl);
            e->last_path[pl] = '\0';
            char *ct = strcasestr(buf, "\r\nContent-Type: ");
            if (ct != NULL) {
                ct += 16;
                size_t cl = strcspn(ct, "\r\n");
                if (cl >= sizeof e->last_ctype)
                    cl = sizeof e->last_ctype - 1;
                memcpy(e->last_ctype, ct, cl);
                e->last_ctype[cl] = '\0';
            }
            char *body = strstr(buf, "\r\n\r\n");
            snprintf(e->last_body, sizeof e->last_body, "%s", body ? body + 4 : "");
        }
        char resp[8192];
        int n = snprintf(resp, sizeof resp,
                         "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n%s",
                         e->status, strlen(e->body), e->body);
        pthread_mutex_unlock(&e->mu);
        if (write(c, resp, (size_t)n) < 0) {
            /* the client left */
        }
        close(c);
    }
    return NULL;
}

th_engine *th_engine_start(int status, const char *body)
{
    th_engine *e = calloc(1, sizeof *e);
    e->status = status;
    snprintf(e->body, sizeof e->body, "%s", body);
    pthread_mutex_init(&e->mu, NULL);
    e->fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(e->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(e->fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(e->fd, 16) != 0)
        die("engine bind");
    socklen_t l = sizeof a;
    getsockname(e->fd, (struct sockaddr *)&a, &l);
    e->port = ntohs(a.sin_port);
    pthread_create(&e->thread, NULL, engine_main, e);
    return e;
}

uint16_t th_engine_port(const th_engine *e)
{
    return e->port;
}

void th_engine_last(th_engine *e, char *path, char *ctype, char *body, size_t cap)
{
    pthread_mutex_lock(&e->mu);
    snprintf(path, cap, "%s", e->last_path);
    snprintf(ctype, cap, "%s", e->last_ctype);
    snprintf(body, cap, "%s", e->last_body);
    pthread_mutex_unlock(&e->mu);
}

int th_engine_requests(th_engine *e)
{
    pthread_mutex_lock(&e->mu);
    int n = e->requests;
    pthread_mutex_unlock(&e->mu);
    return n;
}

void th_engine_stop(th_engine *e)
{
    if (e == NULL)
        return;
    e->stop = 1;
    pthread_join(e->thread, NULL);
    close(e->fd);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
