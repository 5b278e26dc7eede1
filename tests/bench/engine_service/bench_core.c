/* Ticks per second of the engine core alone: mc_engine_step in a loop with
 * the outbox cleared after each tick (the messages are packed, as the
 * service's are, but go nowhere). The baseline of
 * tests/bench/engine_service/run.sh.
 *
 *   bench_engine_service_core SCENARIO_FILE SECONDS [NODES SERVICES CHUNK]
 *
 * Prints one line: "<ticks> <seconds> <ticks_per_second>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/core/engine.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SCENARIO_FILE SECONDS [NODES SERVICES CHUNK]\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", argv[1]);
        return 1;
    }
    static char buf[MC_SCENARIO_MAX_BYTES];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    mc_scenario sc;
    mc_error err;
    if (mc_scenario_parse(buf, len, argv[1], &sc, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    mc_engine_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.seed = 42;
    if (argc >= 6) {
        cfg.node_count = (uint32_t)strtoul(argv[3], NULL, 10);
        cfg.service_count = (uint32_t)strtoul(argv[4], NULL, 10);
        cfg.chunk_max_samples = (uint32_t)strtoul(argv[5], NULL, 10);
    }
    mc_engine e;
    memset(&e, 0, sizeof e);
    if (mc_engine_init(&e, &sc, &cfg, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    mc_outbox out;
    mc_outbox_init(&out, mc_engine_max_messages_per_tick(&e));
    double seconds = atof(argv[2]);
    double t0 = now_s(), t = t0;
    uint64_t ticks = 0;
    while (t - t0 < seconds) {
        if (mc_engine_step(&e, &out, &err) != MC_OK) {
            fprintf(stderr, "step: %s\n", err.msg);
            return 1;
        }
        mc_outbox_clear(&out);
        ticks++;
        if ((ticks & 63) == 0)
            t = now_s();
    }
    t = now_s();
    printf("%llu %.3f %.1f\n", (unsigned long long)ticks, t - t0, (double)ticks / (t - t0));
    mc_outbox_deinit(&out);
    mc_engine_deinit(&e);
    mc_scenario_free(&sc);
    return 0;
}
