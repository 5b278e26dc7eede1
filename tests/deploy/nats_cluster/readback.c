/* Reads the engine's sim.metrics back from the SIM stream and prints, per
 * tick, the number of samples the engine published, for
 * tests/deploy/nats_cluster/run.sh to compare with the metrics table.
 *
 *   nats_cluster_readback IDLE_MS
 *
 * NATS_URL, BUS_STREAM_PREFIX and BUS_SUBJECT_PREFIX as for the services.
 * Reads from stream sequence 1 until nothing new arrived for IDLE_MS
 * (the engine is paused by then). Output, one line each:
 *   tick <tick> <samples> <chunks>
 *   summary ticks=<n> first=<t> last=<t> messages=<n> samples=<n>
 * and, for what would mean a message lost or stored twice on the way
 * (exit status 1): "gap <tick>" for a tick missing between first and last,
 * "incomplete <tick> <chunks seen>/<chunk_count>" and
 * "duplicate <tick> <chunk_index>". */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus/bus.h"
#include "log/log.h"
#include "sim/v1/metrics.pb-c.h"

#define MAX_TICKS 100000u
#define MAX_CHUNKS 64u

typedef struct tick_rec {
    uint64_t samples;
    uint32_t chunk_count;
    uint64_t seen_mask; /* chunk indexes seen (up to MAX_CHUNKS) */
    uint32_t chunks_seen;
    bool present;
} tick_rec;

typedef struct reader {
    pthread_mutex_t mu;
    tick_rec *ticks;
    uint64_t messages, samples, undecodable, out_of_range, duplicates;
    uint64_t last_arrival_ms;
    char dup_lines[4096];
} reader;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_batch(void *ctx, mc_bus_batch *b)
{
    reader *r = ctx;
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        Sim__V1__MetricSnapshot *snap =
            sim__v1__metric_snapshot__unpack(NULL, mc_bus_msg_len(m), mc_bus_msg_data(m));
        pthread_mutex_lock(&r->mu);
        r->messages++;
        r->last_arrival_ms = now_ms();
        if (snap == NULL || snap->stamp == NULL) {
            r->undecodable++;
        } else if (snap->stamp->tick >= MAX_TICKS || snap->chunk_index >= MAX_CHUNKS) {
            r->out_of_range++;
        } else {
            tick_rec *t = &r->ticks[snap->stamp->tick];
            uint64_t bit = 1ull << snap->chunk_index;
            if (t->seen_mask & bit) {
                r->duplicates++;
                size_t l = strlen(r->dup_lines);
                if (l + 64 < sizeof r->dup_lines)
                    snprintf(r->dup_lines + l, sizeof r->dup_lines - l,
                             "duplicate %" PRIu64 " %u\n", snap->stamp->tick, snap->chunk_index);
            } else {
                t->present = true;
                t->seen_mask |= bit;
                t->chunks_seen++;
                t->chunk_count = snap->chunk_count;
                t->samples += snap->n_samples;
                r->samples += snap->n_samples;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (snap != NULL)
            sim__v1__metric_snapshot__free_unpacked(snap, NULL);
    }
    mc_bus_batch_free(b);
}

int main(int argc, char **argv)
{
    uint64_t idle_ms = argc > 1 ? strtoull(argv[1], NULL, 10) : 3000;
    mc_log_init("nats_cluster_readback", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    mc_nats_config nc = {.url = getenv("NATS_URL")};
    if (nc.url == NULL || nc.url[0] == '\0') {
        fprintf(stderr, "readback: NATS_URL is not set\n");
        return 2;
    }
    const char *sp = getenv("BUS_SUBJECT_PREFIX");
    mc_bus_options o = {0};
    o.name = "nats-cluster-readback";
    o.stream_prefix = getenv("BUS_STREAM_PREFIX");
    o.subject_prefix = sp;
    o.skip_provision = true;
    mc_bus *bus = NULL;
    mc_error err = {0};
    if (mc_bus_open(NULL, &nc, &o, &bus, &err) != MC_OK) {
        fprintf(stderr, "readback: %s\n", err.msg);
        return 2;
    }
    reader r = {0};
    pthread_mutex_init(&r.mu, NULL);
    r.ticks = calloc(MAX_TICKS, sizeof *r.ticks);
    r.last_arrival_ms = now_ms();
    char filter[256];
    snprintf(filter, sizeof filter, "%ssim.metrics", sp ? sp : "");
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.filter_subject = filter;
    oo.start_seq = 1;
    oo.on_batch = on_batch;
    oo.ctx = &r;
    mc_bus_consumer *c = NULL;
    /* Right after a node loss the cluster may take a few seconds to answer
     * consumer creation (a new meta or stream leader): try a few times. */
    mc_status st = r.ticks == NULL ? MC_ERR_NOMEM : MC_ERR_TIMEOUT;
    for (int attempt = 1; r.ticks != NULL && attempt <= 15; attempt++) {
        st = mc_bus_ordered_open(bus, &oo, &c, &err);
        if (st == MC_OK)
            break;
        fprintf(stderr, "readback: attempt %d: %s\n", attempt, err.msg);
        sleep(2);
    }
    if (st != MC_OK) {
        fprintf(stderr, "readback: %s\n", r.ticks ? err.msg : "out of memory");
        free(r.ticks);
        mc_bus_free(bus);
        return 2;
    }
    for (;;) {
        usleep(100000);
        pthread_mutex_lock(&r.mu);
        bool idle = now_ms() - r.last_arrival_ms >= idle_ms;
        pthread_mutex_unlock(&r.mu);
        if (idle)
            break;
    }
    mc_bus_consumer_close(c);
    mc_bus_free(bus);
    mc_bus_library_shutdown(2000);

    int bad = r.undecodable || r.out_of_range || r.duplicates;
    uint64_t first = UINT64_MAX, last = 0, nticks = 0;
    for (uint64_t t = 0; t < MAX_TICKS; t++) {
        if (!r.ticks[t].present)
            continue;
        if (first == UINT64_MAX)
            first = t;
        last = t;
        nticks++;
    }
    for (uint64_t t = first; nticks > 0 && t <= last; t++) {
        const tick_rec *k = &r.ticks[t];
        if (!k->present) {
            printf("gap %" PRIu64 "\n", t);
            bad = 1;
            continue;
        }
        if (k->chunks_seen != k->chunk_count) {
            printf("incomplete %" PRIu64 " %u/%u\n", t, k->chunks_seen, k->chunk_count);
            bad = 1;
        }
        printf("tick %" PRIu64 " %" PRIu64 " %u\n", t, k->samples, k->chunks_seen);
    }
    fputs(r.dup_lines, stdout);
    if (r.undecodable || r.out_of_range)
        printf("undecodable %" PRIu64 " out_of_range %" PRIu64 "\n", r.undecodable,
               r.out_of_range);
    printf("summary ticks=%" PRIu64 " first=%" PRIu64 " last=%" PRIu64 " messages=%" PRIu64
           " samples=%" PRIu64 "\n",
           nticks, nticks ? first : 0, last, r.messages, r.samples);
    free(r.ticks);
    pthread_mutex_destroy(&r.mu);
    return bad || nticks == 0 ? 1 : 0;
}
