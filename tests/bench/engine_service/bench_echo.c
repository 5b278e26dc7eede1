/* A stand-in for the pipeline in the lockstep benchmark: on every
 * sim.watermark N of the engine it publishes the detector's, the agent's and
 * the orchestrator's watermarks for N at once, so sim-engine's lockstep runs
 * as fast as its own round trip allows (no detection work).
 *
 *   bench_engine_service_echo SECONDS   (NATS_URL, BUS_STREAM_PREFIX and
 *                                        BUS_SUBJECT_PREFIX from the env)
 *
 * Exits after SECONDS, printing how many engine watermarks it answered. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"
#include "common/v1/enums.pb-c.h"
#include "core/ids.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"

typedef struct echo {
    mc_bus *bus;
    const char *prefix;
    atomic_uint_fast64_t answered;
    uint64_t seq;
} echo;

static void answer(echo *e, const Ops__V1__Watermark *in)
{
    static const struct {
        const char *subject, *producer;
        int stage;
    } stages[] = {{"ops.watermark.detector", "signal-service", COMMON__V1__STAGE__STAGE_DETECTOR},
                  {"ops.watermark.agent", "agent-service", COMMON__V1__STAGE__STAGE_AGENT},
                  {"ops.watermark.orchestrator", "orchestrator",
                   COMMON__V1__STAGE__STAGE_ORCHESTRATOR}};
    for (size_t i = 0; i < 3; i++) {
        Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
        st.run_id = in->stamp->run_id;
        st.tick = in->tick;
        st.producer = (char *)stages[i].producer;
        st.producer_seq = in->tick;
        Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
        wm.stamp = &st;
        wm.stage = (Common__V1__Stage)stages[i].stage;
        wm.tick = in->tick;
        uint8_t buf[256];
        size_t len = ops__v1__watermark__pack(&wm, buf);
        char subject[160];
        snprintf(subject, sizeof subject, "%s%s", e->prefix, stages[i].subject);
        mc_error err = {0};
        if (mc_bus_publish_stamped(e->bus, subject, st.run_id, st.tick, st.producer_seq, buf, len,
                                   &err) != MC_OK)
            fprintf(stderr, "echo: publish: %s\n", err.msg);
    }
    atomic_fetch_add(&e->answered, 1);
}

static void on_batch(void *ctx, mc_bus_batch *b)
{
    echo *e = ctx;
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        Ops__V1__Watermark *w =
            ops__v1__watermark__unpack(NULL, mc_bus_msg_len(m), mc_bus_msg_data(m));
        if (w != NULL && w->stamp != NULL)
            answer(e, w);
        ops__v1__watermark__free_unpacked(w, NULL);
    }
    mc_bus_batch_free(b);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SECONDS\n", argv[0]);
        return 2;
    }
    mc_log_init("bench-echo", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    echo e;
    memset(&e, 0, sizeof e);
    e.prefix = getenv("BUS_SUBJECT_PREFIX") ? getenv("BUS_SUBJECT_PREFIX") : "";
    mc_nats_config nc = {0};
    nc.url = getenv("NATS_URL");
    mc_bus_options o = {0};
    o.name = "bench-echo";
    o.stream_prefix = getenv("BUS_STREAM_PREFIX");
    o.subject_prefix = e.prefix;
    mc_error err = {0};
    if (mc_bus_open(NULL, &nc, &o, &e.bus, &err) != MC_OK) {
        fprintf(stderr, "echo: %s\n", err.msg);
        return 1;
    }
    char filter[160];
    snprintf(filter, sizeof filter, "%ssim.watermark", e.prefix);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.filter_subject = filter;
    oo.start_seq = 1;
    oo.on_batch = on_batch;
    oo.ctx = &e;
    mc_bus_consumer *c = NULL;
    if (mc_bus_ordered_open(e.bus, &oo, &c, &err) != MC_OK) {
        fprintf(stderr, "echo: %s\n", err.msg);
        return 1;
    }
    sleep((unsigned)atoi(argv[1]));
    mc_bus_consumer_close(c);
    printf("%llu\n", (unsigned long long)atomic_load(&e.answered));
    mc_bus_free(e.bus);
    mc_bus_library_shutdown(2000);
    return 0;
}
