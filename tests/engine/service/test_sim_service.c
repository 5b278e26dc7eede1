/* The sim-engine binary against the real nats-server from NATS_URL
 * (scripts/with-services).
 *
 * Every case spawns sim-engine as a child process with its own environment
 * (a free HTTP port, its own stream and subject prefixes so cases never see
 * each other's messages), talks to it over real HTTP with a small socket
 * client, and reads and writes NATS with lib/bus in thread mode. The child's
 * log goes to a file that is printed when a case fails. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "bus/bus.h"
#include "common/v1/enums.pb-c.h"
#include "core/ids.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "trace/reader.h"

/* ------------------------------------------------------------ utilities */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint16_t free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    if (len)
        *len = got;
    return buf;
}

/* ------------------------------------------------------------ the child */

static int g_case;
/* Children still running, killed by the teardown when a case fails
 * half-way (cmocka leaves the case by longjmp). */
static pid_t g_live[16];

static void live_add(pid_t pid)
{
    for (size_t i = 0; i < 16; i++)
        if (g_live[i] == 0) {
            g_live[i] = pid;
            return;
        }
}

static void live_del(pid_t pid)
{
    for (size_t i = 0; i < 16; i++)
        if (g_live[i] == pid)
            g_live[i] = 0;
}

static int teardown_children(void **state)
{
    (void)state;
    for (size_t i = 0; i < 16; i++)
        if (g_live[i] > 0) {
            kill(g_live[i], SIGKILL);
            waitpid(g_live[i], NULL, 0);
            g_live[i] = 0;
        }
    return 0;
}

typedef struct engine_proc {
    pid_t pid;
    uint16_t port;
    char stream_prefix[64];
    char subject_prefix[64];
    char log_path[256];
    char dir[256]; /* a temporary folder of the case */
} engine_proc;

static void proc_prepare(engine_proc *p)
{
    memset(p, 0, sizeof p[0]);
    g_case++;
    snprintf(p->stream_prefix, sizeof p->stream_prefix, "SE%dx%d_", (int)getpid(), g_case);
    snprintf(p->subject_prefix, sizeof p->subject_prefix, "se%dx%d.", (int)getpid(), g_case);
    snprintf(p->dir, sizeof p->dir, "/tmp/simsvc-test-%d-%d", (int)getpid(), g_case);
    mkdir(p->dir, 0755);
    snprintf(p->log_path, sizeof p->log_path, "%s/sim-engine.log", p->dir);
    p->port = free_port();
}

/* Starts sim-engine with a clean environment: NATS_URL, the case's port and
 * prefixes, then the extra "K=V" strings (NULL-terminated). */
static void proc_start(engine_proc *p, const char *const *extra)
{
    const char *nats = getenv("NATS_URL");
    if (nats == NULL || nats[0] == '\0')
        fail_msg("NATS_URL is not set: run under scripts/with-services");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(p->log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        clearenv();
        setenv("PATH", "/usr/bin:/bin", 1);
        setenv("NATS_URL", nats, 1);
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned)p->port);
        setenv("ADDR", addr, 1);
        setenv("BUS_STREAM_PREFIX", p->stream_prefix, 1);
        setenv("BUS_SUBJECT_PREFIX", p->subject_prefix, 1);
        setenv("SCENARIO_DIR", SCENARIO_DIR, 1);
        setenv("LOG_FORMAT", "text", 1);
        for (size_t i = 0; extra && extra[i]; i++) {
            char kv[1024];
            snprintf(kv, sizeof kv, "%s", extra[i]);
            char *eq = strchr(kv, '=');
            if (eq == NULL)
                continue;
            *eq = '\0';
            setenv(kv, eq + 1, 1);
        }
        execl(SIM_ENGINE_BIN, "sim-engine", (char *)NULL);
        _exit(127);
    }
    p->pid = pid;
    live_add(pid);
}

/* Removes the case's folder (log, traces) once the case passed. */
static void proc_cleanup(const engine_proc *p)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (strncmp(p->dir, "/tmp/simsvc-test-", 17) == 0 && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", p->dir);
}

static void proc_dump_log(const engine_proc *p)
{
    char *log = read_whole(p->log_path, NULL);
    if (log != NULL) {
        size_t n = strlen(log);
        const char *tail = n > 6000 ? log + n - 6000 : log;
        fprintf(stderr, "---- sim-engine log (%s) ----\n%s\n---- end ----\n", p->log_path, tail);
        free(log);
    }
}

/* Waits for the child to exit, up to ms; returns its exit status or -1. */
static int proc_wait(engine_proc *p, unsigned ms)
{
    uint64_t end = mono_ms() + ms;
    while (mono_ms() < end) {
        int status;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            live_del(p->pid);
            p->pid = 0;
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        sleep_ms(20);
    }
    return -1;
}

/* SIGTERM, then the exit status (0 expected for a clean shutdown). */
static int proc_stop(engine_proc *p)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    int rc = proc_wait(p, 20000);
    if (rc < 0) {
        kill(p->pid, SIGKILL);
        proc_wait(p, 5000);
        proc_dump_log(p);
        fail_msg("sim-engine did not stop within 20 s of SIGTERM");
    }
    return rc;
}

/* ------------------------------------------------------- the HTTP client */

typedef struct http_resp {
    int status;
    char *body;
} http_resp;

static void http_resp_free(http_resp *r)
{
    free(r->body);
    r->body = NULL;
}

/* One request on a fresh connection (Connection: close). status -1 when the
 * server cannot be reached. */
static http_resp http_do(uint16_t port, const char *method, const char *path, const char *body)
{
    http_resp r = {-1, NULL};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return r;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return r;
    }
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t blen = body ? strlen(body) : 0;
    char head[512];
    int hn = snprintf(head, sizeof head,
                      "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      method, path, blen);
    if (write(fd, head, (size_t)hn) != hn || (blen && write(fd, body, blen) != (ssize_t)blen)) {
        close(fd);
        return r;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    if (len < 12 || strncmp(buf, "HTTP/1.1 ", 9) != 0) {
        free(buf);
        return r;
    }
    r.status = atoi(buf + 9);
    char *sep = strstr(buf, "\r\n\r\n");
    r.body = strdup(sep ? sep + 4 : "");
    free(buf);
    return r;
}

static http_resp rpc(const engine_proc *p, const char *method, const char *json)
{
    char path[128];
    snprintf(path, sizeof path, "/sim.v1.SimulationService/%s", method);
    return http_do(p->port, "POST", path, json);
}

/* Calls the method and expects 200; returns the body (caller frees). */
static char *rpc_ok(const engine_proc *p, const char *method, const char *json)
{
    http_resp r = rpc(p, method, json);
    if (r.status != 200) {
        proc_dump_log(p);
        fail_msg("%s %s: HTTP %d %s", method, json, r.status, r.body ? r.body : "");
    }
    return r.body;
}

/* Expects a Connect invalid_argument whose message names field. */
static void rpc_invalid(const engine_proc *p, const char *method, const char *json,
                        const char *field)
{
    http_resp r = rpc(p, method, json);
    if (r.status != 400 || r.body == NULL || strstr(r.body, "\"invalid_argument\"") == NULL ||
        strstr(r.body, field) == NULL)
        fail_msg("%s %s: expected 400 invalid_argument naming %s, got HTTP %d %s", method, json,
                 field, r.status, r.body ? r.body : "");
    http_resp_free(&r);
}

/* Waits until GET /health answers 200 (the service is up). */
static void wait_healthy(engine_proc *p)
{
    uint64_t end = mono_ms() + 20000;
    while (mono_ms() < end) {
        http_resp r = http_do(p->port, "GET", "/health", NULL);
        int st = r.status;
        http_resp_free(&r);
        if (st == 200)
            return;
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            live_del(p->pid);
            p->pid = 0;
            proc_dump_log(p);
            fail_msg("sim-engine exited during start-up");
        }
        sleep_ms(50);
    }
    proc_dump_log(p);
    fail_msg("sim-engine did not answer /health within 20 s");
}

/* The value of "key":<number or "string"> in a JSON body, as an integer;
 * def when absent (proto3 JSON leaves defaults out). */
static long long json_int(const char *body, const char *key, long long def)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(body, pat);
    if (p == NULL)
        return def;
    p += strlen(pat);
    if (*p == '"')
        p++;
    return strtoll(p, NULL, 10);
}

static bool json_bool(const char *body, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":true", key);
    return strstr(body, pat) != NULL;
}

/* Copies the string value of "key" into out ("" when absent). */
static void json_str(const char *body, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    out[0] = '\0';
    const char *p = strstr(body, pat);
    if (p == NULL)
        return;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < n) {
        out[i] = p[i];
        i++;
    }
    out[i] = '\0';
}

static long long state_tick(const engine_proc *p)
{
    char *b = rpc_ok(p, "GetState", "{}");
    long long t = json_int(b, "tick", 0);
    free(b);
    return t;
}

/* ------------------------------------------------------ NATS (thread mode) */

typedef struct rx_msg {
    char subject[128]; /* without the prefix */
    uint8_t *data;
    size_t len;
} rx_msg;

typedef struct collector {
    pthread_mutex_t mu;
    rx_msg *msgs;
    size_t n, cap;
    size_t prefix_len;
} collector;

static void on_rx(void *ctx, mc_bus_batch *b)
{
    collector *c = ctx;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        if (c->n == c->cap) {
            c->cap = c->cap ? c->cap * 2 : 1024;
            c->msgs = realloc(c->msgs, c->cap * sizeof *c->msgs);
        }
        rx_msg *r = &c->msgs[c->n++];
        snprintf(r->subject, sizeof r->subject, "%s", mc_bus_msg_subject(m) + c->prefix_len);
        r->len = mc_bus_msg_len(m);
        r->data = malloc(r->len ? r->len : 1);
        memcpy(r->data, mc_bus_msg_data(m), r->len);
    }
    pthread_mutex_unlock(&c->mu);
    mc_bus_batch_free(b);
}

typedef struct nats_side {
    mc_bus *bus;
    mc_bus_consumer *sim;
    collector col;
    const engine_proc *p;
} nats_side;

static void nats_open(nats_side *n, const engine_proc *p)
{
    memset(n, 0, sizeof *n);
    n->p = p;
    pthread_mutex_init(&n->col.mu, NULL);
    n->col.prefix_len = strlen(p->subject_prefix);
    mc_nats_config nc = {0};
    nc.url = getenv("NATS_URL");
    mc_bus_options o = {0};
    o.name = "test-sim-engine";
    o.stream_prefix = p->stream_prefix;
    o.subject_prefix = p->subject_prefix;
    mc_error err = {0};
    if (mc_bus_open(NULL, &nc, &o, &n->bus, &err) != MC_OK)
        fail_msg("mc_bus_open: %s", err.msg);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.start_seq = 1;
    oo.on_batch = on_rx;
    oo.ctx = &n->col;
    if (mc_bus_ordered_open(n->bus, &oo, &n->sim, &err) != MC_OK)
        fail_msg("mc_bus_ordered_open: %s", err.msg);
}

static void nats_close(nats_side *n)
{
    mc_bus_consumer_close(n->sim);
    mc_error err = {0};
    mc_bus_streams_delete(n->bus, &err);
    mc_bus_free(n->bus);
    for (size_t i = 0; i < n->col.n; i++)
        free(n->col.msgs[i].data);
    free(n->col.msgs);
    pthread_mutex_destroy(&n->col.mu);
}

static void publish(nats_side *n, const char *subject, const ProtobufCMessage *m,
                    const char *run_id, uint64_t tick, uint64_t seq)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(m, buf);
    char full[160], id[256];
    snprintf(full, sizeof full, "%s%s", n->p->subject_prefix, subject);
    mc_id_msg(id, sizeof id, run_id, full, tick, seq);
    mc_error err = {0};
    if (mc_bus_publish(n->bus, full, buf, len, id, NULL, &err) != MC_OK)
        fail_msg("publish %s: %s", subject, err.msg);
    free(buf);
}

static void publish_raw(nats_side *n, const char *subject, const void *data, size_t len,
                        const char *id)
{
    char full[160];
    snprintf(full, sizeof full, "%s%s", n->p->subject_prefix, subject);
    mc_error err = {0};
    if (mc_bus_publish(n->bus, full, data, len, id, NULL, &err) != MC_OK)
        fail_msg("publish %s: %s", subject, err.msg);
}

static void publish_watermark(nats_side *n, const char *run_id, int stage, uint64_t tick,
                              uint64_t seq)
{
    const char *subject = stage == COMMON__V1__STAGE__STAGE_DETECTOR  ? "ops.watermark.detector"
                          : stage == COMMON__V1__STAGE__STAGE_AGENT ? "ops.watermark.agent"
                                                                    : "ops.watermark.orchestrator";
    const char *producer = stage == COMMON__V1__STAGE__STAGE_DETECTOR  ? "signal-service"
                           : stage == COMMON__V1__STAGE__STAGE_AGENT ? "agent-service"
                                                                     : "orchestrator";
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = (char *)run_id;
    st.tick = tick;
    st.producer = (char *)producer;
    st.producer_seq = seq;
    Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
    wm.stamp = &st;
    wm.stage = (Common__V1__Stage)stage;
    wm.tick = tick;
    publish(n, subject, &wm.base, run_id, tick, seq);
}

/* Decoded view of what the engine published so far. */
typedef struct sim_msg {
    char subject[128];
    uint64_t tick, seq;
    const char *producer;
    void *decoded; /* MetricSnapshot, SimulationEvent or Watermark */
} sim_msg;

typedef struct sim_view {
    sim_msg *m;
    size_t n;
} sim_view;

static void view_free(sim_view *v)
{
    for (size_t i = 0; i < v->n; i++) {
        if (v->m[i].decoded != NULL)
            protobuf_c_message_free_unpacked(v->m[i].decoded, NULL);
    }
    free(v->m);
    v->m = NULL;
    v->n = 0;
}

/* Decodes every collected SIM message; fails the case on a message that
 * does not decode. */
static sim_view view_take(nats_side *ns)
{
    sim_view v = {0};
    pthread_mutex_lock(&ns->col.mu);
    v.m = calloc(ns->col.n + 1, sizeof *v.m);
    for (size_t i = 0; i < ns->col.n; i++) {
        rx_msg *r = &ns->col.msgs[i];
        sim_msg *s = &v.m[v.n++];
        memcpy(s->subject, r->subject, sizeof s->subject);
        const Common__V1__Stamp *st = NULL;
        if (strcmp(r->subject, "sim.metrics") == 0) {
            Sim__V1__MetricSnapshot *x = sim__v1__metric_snapshot__unpack(NULL, r->len, r->data);
            if (x == NULL)
                fail_msg("sim.metrics message %zu does not decode", i);
            s->decoded = x;
            st = x->stamp;
        } else if (strcmp(r->subject, "sim.events") == 0) {
            Sim__V1__SimulationEvent *x = sim__v1__simulation_event__unpack(NULL, r->len, r->data);
            if (x == NULL)
                fail_msg("sim.events message %zu does not decode", i);
            s->decoded = x;
            st = x->stamp;
        } else if (strcmp(r->subject, "sim.watermark") == 0) {
            Ops__V1__Watermark *x = ops__v1__watermark__unpack(NULL, r->len, r->data);
            if (x == NULL)
                fail_msg("sim.watermark message %zu does not decode", i);
            s->decoded = x;
            st = x->stamp;
        }
        if (st == NULL)
            fail_msg("message %zu on %s has no stamp", i, r->subject);
        s->tick = st->tick;
        s->seq = st->producer_seq;
        s->producer = st->producer;
    }
    pthread_mutex_unlock(&ns->col.mu);
    return v;
}

/* Waits until the engine published its watermark for tick (true) or ms
 * passed (false). */
static bool wait_engine_watermark(nats_side *ns, uint64_t tick, unsigned ms)
{
    uint64_t end = mono_ms() + ms;
    size_t scanned = 0;
    do {
        bool found = false;
        pthread_mutex_lock(&ns->col.mu);
        for (; scanned < ns->col.n && !found; scanned++) {
            rx_msg *r = &ns->col.msgs[scanned];
            if (strcmp(r->subject, "sim.watermark") != 0)
                continue;
            Ops__V1__Watermark *w = ops__v1__watermark__unpack(NULL, r->len, r->data);
            if (w != NULL && w->tick == tick)
                found = true;
            ops__v1__watermark__free_unpacked(w, NULL);
        }
        pthread_mutex_unlock(&ns->col.mu);
        if (found)
            return true;
        sleep_ms(20);
    } while (mono_ms() < end);
    return false;
}

static void get_run_id(const engine_proc *p, char *out, size_t n)
{
    char *b = rpc_ok(p, "GetState", "{}");
    json_str(b, "runId", out, n);
    free(b);
    assert_true(out[0] != '\0');
}

/* ------------------------------------------------------------------ cases */

static void test_control_api(void **state)
{
    (void)state;
    engine_proc p;
    proc_prepare(&p);
    const char *env[] = {"AUTOSTART=false", "SIM_MODE=realtime", "SPEED=50", NULL};
    proc_start(&p, env);
    wait_healthy(&p);

    char *b = rpc_ok(&p, "GetState", "{}");
    assert_false(json_bool(b, "running"));
    assert_int_equal(json_int(b, "tick", 0), 0);
    assert_int_equal(json_int(b, "seed", 0), 42);
    assert_non_null(strstr(b, "\"scenario\":\"cascade_failure\""));
    assert_non_null(strstr(b, "\"mode\":\"SIMULATION_MODE_REALTIME\""));
    assert_true(json_int(b, "nodeCount", 0) > 0);
    assert_true(json_int(b, "serviceCount", 0) > 0);
    char run1[64];
    json_str(b, "runId", run1, sizeof run1);
    assert_true(strncmp(run1, "run-", 4) == 0);
    free(b);

    /* Paused at boot: no tick happens. */
    sleep_ms(300);
    assert_int_equal(state_tick(&p), 0);

    b = rpc_ok(&p, "Play", "{}");
    assert_true(json_bool(b, "running"));
    free(b);
    uint64_t end = mono_ms() + 10000;
    while (state_tick(&p) < 5 && mono_ms() < end)
        sleep_ms(50);
    assert_true(state_tick(&p) >= 5);

    b = rpc_ok(&p, "Pause", "{}");
    assert_false(json_bool(b, "running"));
    free(b);
    long long t1 = state_tick(&p);
    sleep_ms(300);
    assert_int_equal(state_tick(&p), t1);

    /* SetSpeed: bad values name the field; fractional and max are fine. */
    rpc_invalid(&p, "SetSpeed", "{\"ticksPerSecond\":-1}", "ticks_per_second");
    rpc_invalid(&p, "SetSpeed", "{\"ticksPerSecond\":0}", "ticks_per_second");
    rpc_invalid(&p, "SetSpeed", "{}", "ticks_per_second");
    b = rpc_ok(&p, "SetSpeed", "{\"ticksPerSecond\":2.5}");
    assert_non_null(strstr(b, "\"speed\":2.5"));
    assert_false(json_bool(b, "maxSpeed"));
    free(b);
    b = rpc_ok(&p, "SetSpeed", "{\"maxSpeed\":true}");
    assert_true(json_bool(b, "maxSpeed"));
    free(b);
    /* A body that does not decode names its field too (lib/http Connect). */
    rpc_invalid(&p, "SetSpeed", "{\"ticksPerSecond\":\"fast\"}", "ticksPerSecond");

    /* InjectFault: each bad field named. */
    rpc_invalid(&p, "InjectFault", "{}", "fault");
    rpc_invalid(&p, "InjectFault",
                "{\"fault\":{\"type\":\"FAULT_TYPE_UNSPECIFIED\",\"targetId\":\"database\"}}",
                "fault.type");
    rpc_invalid(&p, "InjectFault", "{\"fault\":{\"type\":99,\"targetId\":\"database\"}}",
                "fault.type");
    rpc_invalid(&p, "InjectFault",
                "{\"fault\":{\"type\":\"FAULT_TYPE_ERROR_BURST\",\"targetId\":\"nope\","
                "\"intensity\":0.5}}",
                "fault.target_id");
    rpc_invalid(&p, "InjectFault",
                "{\"fault\":{\"type\":\"FAULT_TYPE_ERROR_BURST\",\"intensity\":0.5}}",
                "fault.target_id");
    rpc_invalid(&p, "InjectFault",
                "{\"fault\":{\"type\":\"FAULT_TYPE_NODE_CRASH\",\"targetId\":\"database\","
                "\"intensity\":1}}",
                "fault.target_id");
    rpc_invalid(&p, "InjectFault",
                "{\"fault\":{\"type\":\"FAULT_TYPE_ERROR_BURST\",\"targetId\":\"database\","
                "\"intensity\":7}}",
                "fault.intensity");
    b = rpc_ok(&p, "InjectFault",
               "{\"fault\":{\"type\":\"FAULT_TYPE_ERROR_BURST\",\"targetId\":\"database\","
               "\"intensity\":0.4}}");
    char fault_id[64];
    json_str(b, "faultId", fault_id, sizeof fault_id);
    assert_true(fault_id[0] != '\0');
    assert_true(json_int(b, "startTick", 0) == t1 + 1);
    free(b);
    /* It is active after the next tick and listed by GetState. */
    b = rpc_ok(&p, "Play", "{}");
    free(b);
    end = mono_ms() + 10000;
    while (state_tick(&p) < t1 + 3 && mono_ms() < end)
        sleep_ms(20);
    b = rpc_ok(&p, "GetState", "{}");
    assert_non_null(strstr(b, fault_id));
    free(b);
    b = rpc_ok(&p, "Pause", "{}");
    free(b);

    /* GetTopology: nodes, services, dependencies and placement. */
    b = rpc_ok(&p, "GetTopology", "{}");
    assert_non_null(strstr(b, "\"nodes\":[{\"id\":\"node-"));
    assert_non_null(strstr(b, "\"dependsOn\":["));
    assert_non_null(strstr(b, "\"nodeIds\":[\"node-"));
    assert_non_null(strstr(b, "\"id\":\"database\""));
    free(b);

    /* SetScenario: unknown and malformed names are refused, a real one
     * starts a new run. */
    rpc_invalid(&p, "SetScenario", "{\"scenario\":\"does_not_exist\"}", "scenario");
    rpc_invalid(&p, "SetScenario", "{\"scenario\":\"../etc/passwd\"}", "scenario");
    rpc_invalid(&p, "SetScenario", "{}", "scenario");
    b = rpc_ok(&p, "SetScenario", "{\"scenario\":\"normal\",\"seed\":\"9\"}");
    assert_non_null(strstr(b, "\"scenario\":\"normal\""));
    assert_int_equal(json_int(b, "seed", 0), 9);
    assert_int_equal(json_int(b, "tick", 0), 0);
    char run2[64];
    json_str(b, "runId", run2, sizeof run2);
    assert_string_not_equal(run1, run2);
    free(b);

    /* Reset: new seed, tick 0, another run id. */
    b = rpc_ok(&p, "Reset", "{\"seed\":\"7\"}");
    assert_int_equal(json_int(b, "seed", 0), 7);
    assert_int_equal(json_int(b, "tick", 0), 0);
    char run3[64];
    json_str(b, "runId", run3, sizeof run3);
    assert_string_not_equal(run2, run3);
    free(b);
    /* The same scenario and seed again is still a new run id. */
    b = rpc_ok(&p, "SetScenario", "{\"scenario\":\"cascade_failure\",\"seed\":\"42\"}");
    char run4[64];
    json_str(b, "runId", run4, sizeof run4);
    assert_string_not_equal(run1, run4);
    free(b);

    /* Unknown method: Connect's unimplemented. */
    http_resp r = rpc(&p, "Explode", "{}");
    assert_int_equal(r.status, 501);
    http_resp_free(&r);

    /* /metrics counts the ticks. */
    r = http_do(p.port, "GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "microcloud_sim_ticks_total "));
    assert_non_null(strstr(r.body, "microcloud_sim_tick_duration_seconds_bucket"));
    assert_non_null(strstr(r.body, "microcloud_sim_lockstep_waits_total"));
    http_resp_free(&r);

    assert_int_equal(proc_stop(&p), 0);
    /* Every run logs its seed, scenario, build and how to reproduce it. */
    char *log = read_whole(p.log_path, NULL);
    assert_non_null(strstr(log, "reproduce=\"SEED=42 SCENARIO=cascade_failure"));
    assert_non_null(strstr(log, "build="));
    assert_non_null(strstr(log, "SEED=9 SCENARIO=normal"));
    free(log);
    nats_side n;
    nats_open(&n, &p);
    nats_close(&n);
    proc_cleanup(&p);
}

/* Realtime at full speed with small chunks: everything lands in JetStream,
 * decodes, is sequenced and closed by a watermark per tick. */
static void test_publish_realtime(void **state)
{
    (void)state;
    engine_proc p;
    proc_prepare(&p);
    const char *env[] = {"SIM_MODE=realtime", "SPEED=max", "METRICS_CHUNK_SAMPLES=7", NULL};
    proc_start(&p, env);
    wait_healthy(&p);
    nats_side n;
    nats_open(&n, &p);
    uint64_t end = mono_ms() + 15000;
    while (state_tick(&p) < 60 && mono_ms() < end)
        sleep_ms(20);
    char *b = rpc_ok(&p, "Pause", "{}");
    uint64_t last = (uint64_t)json_int(b, "tick", 0);
    free(b);
    assert_true(last >= 60);
    if (!wait_engine_watermark(&n, last, 15000)) {
        proc_dump_log(&p);
        fail_msg("no watermark for tick %llu", (unsigned long long)last);
    }

    sim_view v = view_take(&n);
    uint64_t want_seq = 1, tick = 0;
    uint32_t count_in_tick = 0, chunks = 0, chunk_count = 0;
    uint64_t watermarks = 0;
    for (size_t i = 0; i < v.n; i++) {
        sim_msg *m = &v.m[i];
        if (strcmp(m->producer, "sim-engine") != 0)
            continue;
        if (m->seq != want_seq)
            fail_msg("message %zu (%s tick %llu): producer_seq %llu, expected %llu", i,
                     m->subject, (unsigned long long)m->tick, (unsigned long long)m->seq,
                     (unsigned long long)want_seq);
        want_seq++;
        if (m->tick != tick) {
            /* A new tick starts right after the previous one's watermark. */
            assert_int_equal(m->tick, tick + 1);
            assert_int_equal(count_in_tick, 0);
            tick = m->tick;
            chunks = 0;
        }
        if (strcmp(m->subject, "sim.metrics") == 0) {
            Sim__V1__MetricSnapshot *s = m->decoded;
            assert_true(s->n_samples > 0 && s->n_samples <= 7);
            if (chunks == 0)
                chunk_count = s->chunk_count;
            assert_int_equal(s->chunk_count, chunk_count);
            assert_int_equal(s->chunk_index, chunks);
            assert_true(s->sim_time_unix_ms > 0);
            for (size_t k = 0; k < s->n_samples; k++)
                assert_non_null(s->samples[k]->metric_name);
            chunks++;
            count_in_tick++;
        } else if (strcmp(m->subject, "sim.events") == 0) {
            count_in_tick++;
        } else {
            Ops__V1__Watermark *w = m->decoded;
            assert_int_equal(w->stage, COMMON__V1__STAGE__STAGE_ENGINE);
            assert_int_equal(w->tick, tick);
            assert_int_equal(w->message_count, count_in_tick);
            assert_true(chunks >= 2); /* 7 samples per chunk: several chunks */
            assert_int_equal(chunks, chunk_count);
            count_in_tick = 0;
            watermarks++;
        }
    }
    assert_true(watermarks >= last);
    assert_int_equal(tick, last);
    view_free(&v);

    /* A paused engine publishes nothing more. */
    size_t before = n.col.n;
    sleep_ms(300);
    pthread_mutex_lock(&n.col.mu);
    size_t after = n.col.n;
    pthread_mutex_unlock(&n.col.mu);
    /* Only the PAUSED control event may follow the last tick. */
    assert_true(after - before <= 1);

    assert_int_equal(proc_stop(&p), 0);
    nats_close(&n);
    proc_cleanup(&p);
}

static const Sim__V1__SimulationEvent *find_event(sim_view *v, int kind, const char *command_id)
{
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->m[i].subject, "sim.events") != 0)
            continue;
        const Sim__V1__SimulationEvent *e = v->m[i].decoded;
        if ((int)e->kind == kind &&
            (command_id == NULL || (e->command_id && strcmp(e->command_id, command_id) == 0)))
            return e;
    }
    return NULL;
}

static void publish_command(nats_side *n, const char *run_id, const char *command_id,
                            uint64_t issued, uint64_t seq, int type, const char *target)
{
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = (char *)run_id;
    st.tick = issued;
    st.producer = "orchestrator";
    st.producer_seq = seq;
    Ops__V1__ApplyActionCommand c = OPS__V1__APPLY_ACTION_COMMAND__INIT;
    c.stamp = &st;
    c.command_id = (char *)command_id;
    c.action_id = "action-1";
    c.action_type = (Common__V1__ActionType)type;
    c.target_id = (char *)target;
    c.issued_at_tick = issued;
    publish(n, "ops.commands", &c.base, run_id, issued, seq);
}

static void expect_waiting_for(const engine_proc *p, const char *stage)
{
    uint64_t end = mono_ms() + 5000;
    char got[64] = "";
    while (mono_ms() < end) {
        char *b = rpc_ok(p, "GetState", "{}");
        json_str(b, "waitingFor", got, sizeof got);
        free(b);
        if (strcmp(got, stage) == 0)
            return;
        sleep_ms(30);
    }
    fail_msg("GetState.waiting_for is \"%s\", expected \"%s\"", got, stage);
}

/* Lockstep: no tick N+1 before the orchestrator's watermark N; a command
 * published before that watermark is applied at N+1; waiting_for names the
 * stage that is behind; undecodable commands are dead-lettered. */
static void test_lockstep_and_commands(void **state)
{
    (void)state;
    engine_proc p;
    proc_prepare(&p);
    const char *env[] = {"SIM_MODE=lockstep", "SPEED=max", "LOCKSTEP_STALL_TIMEOUT=60s", NULL};
    proc_start(&p, env);
    wait_healthy(&p);
    nats_side n;
    nats_open(&n, &p);
    char run[64];
    get_run_id(&p, run, sizeof run);

    assert_true(wait_engine_watermark(&n, 1, 10000));
    /* Nothing of tick 2 while the orchestrator has not closed tick 1. */
    assert_false(wait_engine_watermark(&n, 2, 700));
    assert_int_equal(state_tick(&p), 1);
    expect_waiting_for(&p, "detector");
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_DETECTOR, 1, 1);
    expect_waiting_for(&p, "agent");
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_AGENT, 1, 1);
    expect_waiting_for(&p, "orchestrator");
    assert_false(wait_engine_watermark(&n, 2, 200));

    /* Garbage on ops.commands goes to the dead-letter subject. */
    publish_raw(&n, "ops.commands", "\xff\xff\xff", 3, "garbage-1");
    /* The command, then the watermark that closes tick 1. */
    publish_command(&n, run, "cmd-scale-1", 1, 1, COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP,
                    "catalog");
    publish_command(&n, "run-someotherrun", "cmd-other-run", 1, 2,
                    COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP, "catalog");
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_ORCHESTRATOR, 1, 3);
    if (!wait_engine_watermark(&n, 2, 10000)) {
        proc_dump_log(&p);
        fail_msg("tick 2 did not follow the orchestrator's watermark 1");
    }
    assert_false(wait_engine_watermark(&n, 3, 500));

    sim_view v = view_take(&n);
    const Sim__V1__SimulationEvent *e =
        find_event(&v, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED,
                   "cmd-scale-1");
    if (e == NULL)
        e = find_event(&v, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED,
                       "cmd-scale-1");
    if (e == NULL) {
        proc_dump_log(&p);
        fail_msg("no COMMAND_APPLIED/REFUSED event for cmd-scale-1");
    }
    assert_int_equal(e->kind, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED);
    assert_int_equal(e->applied_at_tick, 2);
    assert_int_equal(e->stamp->tick, 2);
    assert_string_equal(e->action_id, "action-1");
    /* The other run's command was not applied. */
    assert_null(find_event(&v, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED,
                           "cmd-other-run"));
    assert_null(find_event(&v, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED,
                           "cmd-other-run"));
    view_free(&v);

    /* Tick 3 after watermark 2 (in realtime nothing would wait). */
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_ORCHESTRATOR, 2, 4);
    assert_true(wait_engine_watermark(&n, 3, 10000));

    http_resp r = http_do(p.port, "GET", "/metrics", NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "microcloud_sim_deadlettered_total 1"));
    assert_non_null(strstr(r.body, "microcloud_sim_commands_total{result=\"applied\"} 1"));
    assert_non_null(strstr(r.body, "microcloud_sim_commands_other_run_total 1"));
    http_resp_free(&r);

    assert_int_equal(proc_stop(&p), 0);
    nats_close(&n);
    proc_cleanup(&p);
}

/* The stall timeout pauses the run, reports the stage it waits for in
 * GetState and as a STALLED event; Play resumes once the watermark is in. */
static void test_lockstep_stall(void **state)
{
    (void)state;
    engine_proc p;
    proc_prepare(&p);
    const char *env[] = {"SIM_MODE=lockstep", "SPEED=max", "LOCKSTEP_STALL_TIMEOUT=800ms", NULL};
    proc_start(&p, env);
    wait_healthy(&p);
    nats_side n;
    nats_open(&n, &p);
    char run[64];
    get_run_id(&p, run, sizeof run);
    assert_true(wait_engine_watermark(&n, 1, 10000));
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_DETECTOR, 1, 1);

    uint64_t end = mono_ms() + 10000;
    bool running = true;
    while (running && mono_ms() < end) {
        char *b = rpc_ok(&p, "GetState", "{}");
        running = json_bool(b, "running");
        free(b);
        if (running)
            sleep_ms(50);
    }
    assert_false(running);
    expect_waiting_for(&p, "agent");

    const Sim__V1__SimulationEvent *e = NULL;
    sim_view v = {0};
    end = mono_ms() + 5000;
    while (e == NULL && mono_ms() < end) {
        view_free(&v);
        v = view_take(&n);
        e = find_event(&v, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_STALLED, NULL);
        if (e == NULL)
            sleep_ms(50);
    }
    if (e == NULL) {
        proc_dump_log(&p);
        fail_msg("no STALLED event");
    }
    assert_non_null(strstr(e->message, "agent"));
    assert_string_equal(e->stamp->producer, "sim-engine-control");
    assert_string_equal(e->stamp->run_id, run);
    view_free(&v);

    /* The watermark arrives while paused: still no tick until Play. */
    publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_ORCHESTRATOR, 1, 1);
    assert_false(wait_engine_watermark(&n, 2, 500));
    char *b = rpc_ok(&p, "Play", "{}");
    free(b);
    assert_true(wait_engine_watermark(&n, 2, 10000));

    http_resp r = http_do(p.port, "GET", "/metrics", NULL);
    assert_non_null(strstr(r.body, "microcloud_sim_lockstep_stalls_total 1"));
    http_resp_free(&r);
    assert_int_equal(proc_stop(&p), 0);
    nats_close(&n);
    proc_cleanup(&p);
}

/* TRACE_DIR: the run is recorded in canonical order with the orchestrator's
 * messages, a checkpoint per tick and a footer at shutdown. */
static void test_trace_recording(void **state)
{
    (void)state;
    engine_proc p;
    proc_prepare(&p);
    char trace_dir[300], env_dir[320], key_path[300], env_key[320];
    snprintf(trace_dir, sizeof trace_dir, "%s/traces", p.dir);
    snprintf(env_dir, sizeof env_dir, "TRACE_DIR=%s", trace_dir);
    /* A 32-byte Ed25519 seed in hex (FORMAT.md "Keys"): the trace is signed. */
    snprintf(key_path, sizeof key_path, "%s/signing.key", p.dir);
    FILE *kf = fopen(key_path, "w");
    assert_non_null(kf);
    fputs("5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed\n", kf);
    fclose(kf);
    snprintf(env_key, sizeof env_key, "TRACE_SIGNING_KEY=%s", key_path);
    const char *env[] = {"SIM_MODE=lockstep", "SPEED=max", env_dir, env_key, NULL};
    proc_start(&p, env);
    wait_healthy(&p);
    nats_side n;
    nats_open(&n, &p);
    char run[64];
    get_run_id(&p, run, sizeof run);
    uint64_t seq = 1;
    for (uint64_t t = 1; t <= 5; t++) {
        if (!wait_engine_watermark(&n, t, 10000)) {
            proc_dump_log(&p);
            fail_msg("no engine watermark for tick %llu", (unsigned long long)t);
        }
        publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_DETECTOR, t, t);
        publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_AGENT, t, t);
        if (t == 3)
            publish_command(&n, run, "cmd-trace", t, seq++,
                            COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE, "database");
        publish_watermark(&n, run, COMMON__V1__STAGE__STAGE_ORCHESTRATOR, t, seq++);
    }
    assert_true(wait_engine_watermark(&n, 6, 10000));
    sleep_ms(300); /* let the consumer take the last watermark in */
    assert_int_equal(proc_stop(&p), 0);

    char path[600];
    snprintf(path, sizeof path, "%s/cascade_failure-seed42-%s.trace", trace_dir, run);
    mc_trace_reader *r = NULL;
    mc_error err = {0};
    if (mc_trace_reader_open(path, NULL, &r, &err) != MC_OK) {
        proc_dump_log(&p);
        fail_msg("trace %s: %s", path, err.msg);
    }
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(r);
    assert_string_equal(h->run_id, run);
    assert_string_equal(h->scenario, "cascade_failure");
    assert_int_equal(h->seed, 42);
    assert_string_equal(h->mode, "lockstep");
    uint64_t records = 0, checkpoints = 0, orch = 0, commands = 0, engine = 0;
    uint64_t last_tick = 0;
    mc_trace_record rec;
    for (;;) {
        if (mc_trace_reader_next(r, &rec, &err) != MC_OK)
            fail_msg("trace: %s", err.msg);
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            records++;
            if (rec.stage == COMMON__V1__STAGE__STAGE_ORCHESTRATOR)
                orch++;
            if (strcmp(rec.subject, "ops.commands") == 0) {
                commands++;
                assert_int_equal(rec.tick, 3);
            }
            if (strcmp(rec.producer, "sim-engine") == 0)
                engine++;
        } else if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            checkpoints++;
            assert_int_equal(rec.checkpoint->n_digests, 1);
            assert_int_equal(rec.checkpoint->digests[0]->stage, COMMON__V1__STAGE__STAGE_ENGINE);
            assert_int_equal(rec.checkpoint->digests[0]->digest.len, 32);
            last_tick = rec.tick;
        }
    }
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    assert_int_equal(mc_trace_reader_signature(r), MC_TRACE_SIG_UNCHECKED);
    mc_trace_reader_free(r);
    assert_true(checkpoints >= 6);
    assert_true(last_tick >= 6);
    assert_int_equal(commands, 1);
    assert_true(orch >= 6); /* five watermarks and the command */
    assert_true(engine > 0);
    assert_true(records > engine);
    nats_close(&n);
    proc_cleanup(&p);
}

static void expect_exit2(const char *const *env, const char *needle)
{
    engine_proc p;
    proc_prepare(&p);
    proc_start(&p, env);
    int rc = proc_wait(&p, 15000);
    if (rc < 0) {
        kill(p.pid, SIGKILL);
        proc_wait(&p, 5000);
    }
    char *log = read_whole(p.log_path, NULL);
    if (rc != 2 || log == NULL || strstr(log, needle) == NULL)
        fail_msg("expected exit 2 and \"%s\" for %s, got %d: %s", needle, env[0], rc,
                 log ? log : "");
    free(log);
    proc_cleanup(&p);
}

static void test_bad_scenario_file(void **state)
{
    (void)state;
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/simsvc-badsc-%d", (int)getpid());
    mkdir(dir, 0755);
    char path[256];
    snprintf(path, sizeof path, "%s/broken.scenario", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[scenario]\nname = broken\ntick_ms = 1000\n\n[node]\nid = n1\ncpu_cores = lots\n"
          "memory_mb = 1024\n",
          f);
    fclose(f);
    char e1[200];
    snprintf(e1, sizeof e1, "SCENARIO_DIR=%s", dir);
    const char *env[] = {"SCENARIO=broken", e1, NULL};
    /* The parser names file, line 7 and the field. */
    expect_exit2(env, "broken.scenario:7");
    expect_exit2(env, "cpu_cores");
    const char *env2[] = {"SCENARIO=missing_one", e1, NULL};
    expect_exit2(env2, "missing_one");
    unlink(path);
    rmdir(dir);
}

static void test_bad_env(void **state)
{
    (void)state;
    const char *e1[] = {"SPEED=0", NULL};
    expect_exit2(e1, "SPEED");
    const char *e2[] = {"SPEED=fast", NULL};
    expect_exit2(e2, "SPEED");
    const char *e3[] = {"SIM_MODE=sometimes", NULL};
    expect_exit2(e3, "SIM_MODE");
    const char *e4[] = {"SEED=-3", NULL};
    expect_exit2(e4, "SEED");
    const char *e5[] = {"LOCKSTEP_STALL_TIMEOUT=soon", NULL};
    expect_exit2(e5, "LOCKSTEP_STALL_TIMEOUT");
    const char *e6[] = {"ADDR=nowhere", NULL};
    expect_exit2(e6, "ADDR");
    const char *e7[] = {"AUTOSTART=maybe", NULL};
    expect_exit2(e7, "AUTOSTART");
    const char *e8[] = {"TOPOLOGY_SERVICES=99999999", NULL};
    expect_exit2(e8, "TOPOLOGY_SERVICES");
    const char *e9[] = {"METRICS_CHUNK_SAMPLES=0", NULL};
    expect_exit2(e9, "METRICS_CHUNK_SAMPLES");
    /* A signing key file that is not a key stops the start too (after the
     * bus is up: exercises the failed-start shutdown). */
    char key[128], dir_kv[160], key_kv[160];
    snprintf(key, sizeof key, "/tmp/simsvc-badkey-%d", (int)getpid());
    FILE *f = fopen(key, "w");
    assert_non_null(f);
    fputs("not a key\n", f);
    fclose(f);
    snprintf(dir_kv, sizeof dir_kv, "TRACE_DIR=/tmp/simsvc-badkey-%d.d", (int)getpid());
    snprintf(key_kv, sizeof key_kv, "TRACE_SIGNING_KEY=%s", key);
    const char *e10[] = {key_kv, dir_kv, NULL};
    expect_exit2(e10, "signing key");
    unlink(key);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf /tmp/simsvc-badkey-%d.d", (int)getpid());
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    mc_log_init("test-sim-engine", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_bad_env, teardown_children),
        cmocka_unit_test_teardown(test_bad_scenario_file, teardown_children),
        cmocka_unit_test_teardown(test_control_api, teardown_children),
        cmocka_unit_test_teardown(test_publish_realtime, teardown_children),
        cmocka_unit_test_teardown(test_lockstep_and_commands, teardown_children),
        cmocka_unit_test_teardown(test_lockstep_stall, teardown_children),
        cmocka_unit_test_teardown(test_trace_recording, teardown_children),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mc_bus_library_shutdown(2000);
    return rc;
}
