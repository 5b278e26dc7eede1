/* bench_bus: messages per second through lib/bus against the nats-server
 * at NATS_URL, with 1 KiB payloads on file-backed streams:
 *  - publish async (acked): mc_bus_publish_async of N messages, then
 *    mc_bus_flush; the clock stops when the last ack is in;
 *  - publish sync (baseline): mc_bus_publish one at a time (one round trip
 *    each), the reference the async figure is compared with;
 *  - consume pull (acked): a durable pull consumer (batches of 256) reads
 *    and acks the N messages.
 * Each run uses fresh streams (own prefix) and deletes them. The median of
 * the runs is printed with the ratio async/sync.
 *
 *     bench_bus [--messages N] [--runs R]
 */
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"
#include "config/config.h"
#include "log/log.h"

#define PAYLOAD_BYTES 1024
#define MAX_RUNS 15

typedef struct bench_cfg {
    mc_nats_config nats;
} bench_cfg;

static const mc_config_var vars[] = {
    MC_CONFIG_VARS_NATS(bench_cfg, nats),
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    uint64_t n;
    uint64_t ack_errors;
} counter;

static void on_batch(void *ctx, mc_bus_batch *b)
{
    counter *c = ctx;
    uint64_t errors = 0;
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        if (mc_bus_msg_ack(mc_bus_batch_msg(b, i), NULL) != MC_OK)
            errors++;
    }
    size_t n = mc_bus_batch_count(b);
    mc_bus_batch_free(b);
    pthread_mutex_lock(&c->mu);
    c->n += n;
    c->ack_errors += errors;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    double s[MAX_RUNS];
    memcpy(s, v, sizeof(double) * (size_t)n);
    qsort(s, (size_t)n, sizeof s[0], cmp_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* One run; fills the three rates (messages per second). */
static int run_once(const mc_nats_config *nats, int run, uint64_t n, double *pub_async,
                    double *pub_sync, double *consume)
{
    char sp[64], subp[64], subject[128];
    snprintf(sp, sizeof sp, "BENCH%dr%d_", (int)getpid(), run);
    snprintf(subp, sizeof subp, "bench%dr%d.", (int)getpid(), run);
    snprintf(subject, sizeof subject, "%ssim.metrics", subp);
    mc_bus_options o = {0};
    o.name = "bench-bus";
    o.stream_prefix = sp;
    o.subject_prefix = subp;
    o.max_pending_acks = 8192;
    mc_bus *bus = NULL;
    mc_error err = {0};
    if (mc_bus_open(NULL, nats, &o, &bus, &err) != MC_OK) {
        fprintf(stderr, "bench_bus: %s\n", err.msg);
        return -1;
    }
    uint8_t payload[PAYLOAD_BYTES];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 31u + 7u);
    int rc = 0;

    double t0 = now_s();
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        if (mc_bus_publish_stamped(bus, subject, "bench", i / 100, i + 1, payload, sizeof payload,
                                   &err) != MC_OK)
            rc = -1;
    }
    if (rc == 0 && mc_bus_flush(bus, 120000, &err) != MC_OK)
        rc = -1;
    double t1 = now_s();
    *pub_async = (double)n / (t1 - t0);

    /* The baseline: one round trip per message, a tenth as many. */
    uint64_t nsync = n / 10 ? n / 10 : 1;
    char id[64];
    double t2 = now_s();
    for (uint64_t i = 0; i < nsync && rc == 0; i++) {
        snprintf(id, sizeof id, "bench-sync-%" PRIu64, i);
        if (mc_bus_publish(bus, subject, payload, sizeof payload, id, NULL, &err) != MC_OK)
            rc = -1;
    }
    double t3 = now_s();
    *pub_sync = (double)nsync / (t3 - t2);

    counter c = {.n = 0};
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cond, NULL);
    uint64_t total = n + nsync;
    if (rc == 0) {
        mc_bus_pull_options po = {0};
        po.stream = MC_BUS_STREAM_SIM;
        po.durable = "bench";
        po.batch_size = 256;
        po.fetch_wait_ms = 500;
        po.on_batch = on_batch;
        po.ctx = &c;
        mc_bus_consumer *cons = NULL;
        double t4 = now_s();
        if (mc_bus_pull_open(bus, &po, &cons, &err) != MC_OK) {
            rc = -1;
        } else {
            pthread_mutex_lock(&c.mu);
            while (c.n < total && now_s() - t4 < 120)
                pthread_cond_wait(&c.cond, &c.mu);
            pthread_mutex_unlock(&c.mu);
            double t5 = now_s();
            mc_bus_consumer_close(cons);
            *consume = (double)c.n / (t5 - t4);
            if (c.n < total || c.ack_errors) {
                snprintf(err.msg, sizeof err.msg,
                         "consumed %" PRIu64 " of %" PRIu64 " (%" PRIu64 " ack errors)", c.n,
                         total, c.ack_errors);
                rc = -1;
            }
        }
    }
    if (rc != 0)
        fprintf(stderr, "bench_bus: run %d: %s\n", run + 1, err.msg);
    mc_error derr = {0};
    if (mc_bus_streams_delete(bus, &derr) != MC_OK)
        fprintf(stderr, "bench_bus: cleanup: %s\n", derr.msg);
    mc_bus_free(bus);
    pthread_cond_destroy(&c.cond);
    pthread_mutex_destroy(&c.mu);
    return rc;
}

int main(int argc, char **argv)
{
    uint64_t n = 20000;
    int runs = 3;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--messages") == 0 && i + 1 < argc) {
            n = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench_bus [--messages N] [--runs R]   (reads NATS_URL)\n");
            return 2;
        }
    }
    if (n == 0 || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "bench_bus: --messages must be > 0 and --runs within 1..%d\n", MAX_RUNS);
        return 2;
    }
    bench_cfg cfg = {0};
    mc_error err = {0};
    if (mc_config_load(vars, sizeof vars / sizeof vars[0], &cfg, NULL, NULL, &err) != MC_OK) {
        fprintf(stderr, "bench_bus: %s\n", err.msg);
        return 2;
    }
    mc_log_init("bench_bus", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);

    double pa[MAX_RUNS], ps[MAX_RUNS], co[MAX_RUNS];
    for (int r = 0; r < runs; r++) {
        if (run_once(&cfg.nats, r, n, &pa[r], &ps[r], &co[r]) != 0) {
            mc_bus_library_shutdown(5000);
            return 1;
        }
    }
    printf("bus: %" PRIu64 " messages x %d B, file storage, median of %d run(s)\n", n,
           PAYLOAD_BYTES, runs);
    printf("%-32s", "metric (msg/s)");
    for (int r = 0; r < runs; r++)
        printf(" %9s%-2d", "run", r + 1);
    printf(" %11s\n", "median");
    const char *names[3] = {"publish async (acked)", "publish sync (baseline)",
                            "consume pull (acked)"};
    const double *rows[3] = {pa, ps, co};
    for (int k = 0; k < 3; k++) {
        printf("%-32s", names[k]);
        for (int r = 0; r < runs; r++)
            printf(" %11.0f", rows[k][r]);
        printf(" %11.0f\n", median(rows[k], runs));
    }
    printf("%-32s %.1fx\n", "async / sync (median)", median(pa, runs) / median(ps, runs));
    mc_bus_library_shutdown(5000);
    return 0;
}
