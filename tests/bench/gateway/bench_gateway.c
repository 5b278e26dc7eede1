/* Orchestrator benchmark (tests/bench/gateway/run.sh BUILD_DIR):
 *
 *  1. ApproveAction round trips per second: N pending actions, then one
 *     ApproveAction after another over keep-alive connections (1 and 8 in
 *     parallel). A response means the decision is made, the decision and
 *     command are handed to the bus and the transition is stored; the run
 *     ends when every command is on ops.commands.
 *  2. SSE fan-out: 200 stream clients while the engine side publishes 10
 *     ticks per second; tick events delivered out of those expected, and the
 *     added latency (publish of the engine watermark to the client reading
 *     the tick event) at p50 and p99.
 * Prints "name value" lines only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "orch_test_util.h"
#include "sim/v1/metrics.pb-c.h"

static int conn_open(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One keep-alive POST; returns the status. */
static int post(int fd, const char *path, const char *body)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                     "Authorization: Bearer test-token\r\nContent-Length: %zu\r\n\r\n%s",
                     path, strlen(body), body);
    if (write(fd, req, (size_t)n) != n)
        return -1;
    char buf[16384];
    size_t len = 0;
    for (;;) {
        ssize_t got = read(fd, buf + len, sizeof buf - 1 - len);
        if (got <= 0)
            return -1;
        len += (size_t)got;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL)
            continue;
        char *cl = strcasestr(buf, "Content-Length:");
        size_t need = (size_t)(end + 4 - buf) + (cl ? (size_t)atol(cl + 15) : 0);
        if (len >= need)
            return atoi(buf + 9);
    }
}

typedef struct approver {
    uint16_t port;
    char (*ids)[37];
    size_t from, to;
    size_t ok;
} approver;

static void *approve_main(void *arg)
{
    approver *a = arg;
    int fd = conn_open(a->port);
    for (size_t i = a->from; i < a->to && fd >= 0; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"actionId\":\"%s\",\"actor\":\"bench\"}", a->ids[i]);
        if (post(fd, "/ops.v1.ActionService/ApproveAction", body) == 200)
            a->ok++;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static double bench_approve(size_t n, int conns, uint32_t id_base)
{
    th_orch o;
    th_orch_init(&o, conns == 1 ? "ba1" : "ba8");
    th_orch_env(&o, "LOG_LEVEL=warn");
    th_orch_env(&o, "ACTION_EXPIRY_TICKS=0");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    char(*ids)[37] = calloc(n, 37);
    for (size_t i = 0; i < n; i++) {
        th_uuid(ids[i], id_base + (uint32_t)i);
        char target[32];
        snprintf(target, sizeof target, "svc-%zu", i);
        th_publish_action(b, "run-bench", ids[i], target, 1, i + 1);
    }
    /* Wait until the orchestrator has them all pending and stored. */
    char want[64];
    snprintf(want, sizeof want, "\norchestrator_pending_actions %zu\n", n);
    for (int tries = 0; tries < 600; tries++) {
        th_resp r;
        const char *args[] = {"-X", "GET"};
        th_curl(&o, "/metrics", args, 2, &r);
        bool ready = strstr(r.body, want) != NULL &&
                     strstr(r.body, "\norchestrator_db_queue_depth 0\n") != NULL;
        th_resp_free(&r);
        if (ready)
            break;
        usleep(100000);
    }
    pthread_t th[8];
    approver ap[8];
    uint64_t t0 = th_now_ms();
    for (int k = 0; k < conns; k++) {
        ap[k] = (approver){o.port, ids, n * (size_t)k / (size_t)conns,
                           n * (size_t)(k + 1) / (size_t)conns, 0};
        pthread_create(&th[k], NULL, approve_main, &ap[k]);
    }
    size_t ok = 0;
    for (int k = 0; k < conns; k++) {
        pthread_join(th[k], NULL);
        ok += ap[k].ok;
    }
    th_bus_wait(b, "ops.commands", n, 60000);
    uint64_t t1 = th_now_ms();
    size_t cmds = th_bus_count(b, "ops.commands");
    th_bus_close(b);
    th_orch_stop(&o);
    free(ids);
    if (ok != n || cmds != n) {
        fprintf(stderr, "bench: %zu of %zu approvals answered 200, %zu commands\n", ok, n, cmds);
        return 0;
    }
    return (double)n * 1000.0 / (double)(t1 - t0 ? t1 - t0 : 1);
}

/* ---- SSE fan-out ---- */

#define SSE_CLIENTS 200
#define SSE_TICKS 100

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void publish_tick(th_bus *b, uint64_t tick, int64_t stamp_us)
{
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = "run-sse-bench";
    st.tick = tick;
    st.producer = "engine";
    st.producer_seq = tick * 2;
    enum { NS = 20 };
    Sim__V1__MetricSample s[NS * 3];
    Sim__V1__MetricSample *ps[NS * 3];
    char names[NS][16];
    for (int i = 0; i < NS; i++) {
        snprintf(names[i], sizeof names[i], "svc-%02d", i);
        static const char *const metric[] = {"error_rate", "p99_latency_ms", "requests_per_second"};
        for (int k = 0; k < 3; k++) {
            Sim__V1__MetricSample *m = &s[i * 3 + k];
            sim__v1__metric_sample__init(m);
            m->service_id = names[i];
            m->metric_name = (char *)metric[k];
            m->metric_value = (double)(i + k);
            ps[i * 3 + k] = m;
        }
    }
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    snap.stamp = &st;
    snap.chunk_count = 1;
    snap.n_samples = NS * 3;
    snap.samples = ps;
    /* The publish time rides in sim_time_unix_ms so readers can measure. */
    snap.sim_time_unix_ms = stamp_us;
    th_bus_publish(b, "sim.metrics", &snap.base, st.run_id, tick, st.producer_seq);
    st.producer_seq++;
    Ops__V1__Watermark w = OPS__V1__WATERMARK__INIT;
    w.stamp = &st;
    w.stage = COMMON__V1__STAGE__STAGE_ENGINE;
    w.tick = tick;
    th_bus_publish(b, "sim.watermark", &w.base, st.run_id, tick, st.producer_seq);
}

static void bench_sse(void)
{
    th_orch o;
    th_orch_init(&o, "bsse");
    th_orch_env(&o, "LOG_LEVEL=warn");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    static th_sse cl[SSE_CLIENTS];
    for (int i = 0; i < SSE_CLIENTS; i++) {
        if (th_sse_open(&cl[i], o.port, "/api/stream", NULL, 0) != 200) {
            fprintf(stderr, "bench: stream %d failed\n", i);
            return;
        }
        th_event ev;
        th_sse_next(&cl[i], &ev, 5000); /* the snapshot */
        th_event_free(&ev);
    }
    uint64_t *lat = calloc((size_t)SSE_CLIENTS * SSE_TICKS, sizeof *lat);
    size_t nlat = 0;
    uint64_t start = now_us();
    uint64_t next_pub = start;
    uint64_t published = 0;
    uint64_t end = start + (uint64_t)SSE_TICKS * 100000u + 2000000u;
    while (now_us() < end && nlat < (size_t)SSE_CLIENTS * SSE_TICKS) {
        if (published < SSE_TICKS && now_us() >= next_pub) {
            published++;
            publish_tick(b, published, (int64_t)now_us());
            next_pub += 100000u;
        }
        for (int i = 0; i < SSE_CLIENTS; i++) {
            th_event ev;
            while (th_sse_next(&cl[i], &ev, 0)) {
                if (strcmp(ev.type, "tick") == 0) {
                    const char *p = strstr(ev.data, "\"simTimeUnixMs\":");
                    if (p != NULL) {
                        uint64_t sent = strtoull(p + 16, NULL, 10);
                        uint64_t now = now_us();
                        lat[nlat++] = now > sent ? now - sent : 0;
                    }
                }
                th_event_free(&ev);
            }
        }
        usleep(1000);
    }
    qsort(lat, nlat, sizeof *lat, cmp_u64);
    printf("sse_clients %d\n", SSE_CLIENTS);
    printf("sse_ticks_per_second 10\n");
    printf("sse_tick_events_expected %d\n", SSE_CLIENTS * SSE_TICKS);
    printf("sse_tick_events_delivered %zu\n", nlat);
    if (nlat > 0) {
        printf("sse_latency_p50_ms %.2f\n", (double)lat[nlat / 2] / 1000.0);
        printf("sse_latency_p99_ms %.2f\n", (double)lat[(nlat * 99) / 100] / 1000.0);
        printf("sse_latency_max_ms %.2f\n", (double)lat[nlat - 1] / 1000.0);
    }
    free(lat);
    for (int i = 0; i < SSE_CLIENTS; i++)
        th_sse_close(&cl[i]);
    th_bus_close(b);
    th_orch_stop(&o);
}

int main(void)
{
    size_t n = getenv("BENCH_APPROVALS") ? (size_t)atol(getenv("BENCH_APPROVALS")) : 2000;
    printf("approvals %zu\n", n);
    printf("approve_per_second_1conn %.0f\n", bench_approve(n, 1, 0x100000));
    printf("approve_per_second_8conn %.0f\n", bench_approve(n, 8, 0x200000));
    bench_sse();
    mc_bus_library_shutdown(2000);
    return 0;
}
