/* Benchmark of the engine core: nanoseconds per service-tick (a full step:
 * commands, faults, load and health passes, metrics packed into the outbox)
 * and memory per simulated service, at 100, 1,000 and 10,000 services.
 *
 *   bench_engine [SCENARIO_FILE]   (default: the shipped normal scenario)
 *
 * Memory is the engine's own allocation accounting (mc_engine_memory_bytes)
 * and, as a cross-check, the heap growth malloc reports (mallinfo2) across
 * init and the first ticks. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/core/engine.h"

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL)
        *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : MC_SCENARIO_DIR "/normal.scenario";
    size_t len = 0;
    char *buf = read_file(path, &len);
    if (buf == NULL) {
        fprintf(stderr, "bench_engine: cannot read %s\n", path);
        return 1;
    }
    mc_scenario sc;
    mc_error err;
    if (mc_scenario_parse(buf, len, path, &sc, &err) != MC_OK) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        free(buf);
        return 1;
    }
    free(buf);
    const uint32_t sizes[] = {100, 1000, 10000};
    printf("engine core benchmark, scenario %s (seed 1)\n", sc.name);
    printf("%9s %7s %7s %12s %14s %14s %16s\n", "services", "nodes", "ticks", "ns/svc-tick",
           "ms/tick", "bytes/svc", "heap bytes/svc");
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint32_t n = sizes[i];
        mc_engine_config cfg = {.seed = 1, .service_count = n, .node_count = n / 10};
        if (cfg.node_count < sc.n_nodes)
            cfg.node_count = (uint32_t)sc.n_nodes;
        struct mallinfo2 before = mallinfo2();
        mc_engine e;
        if (mc_engine_init(&e, &sc, &cfg, &err) != MC_OK) {
            fprintf(stderr, "bench_engine: %s\n", err.msg);
            mc_scenario_free(&sc);
            return 1;
        }
        mc_outbox ob;
        mc_outbox_init(&ob, mc_engine_max_messages_per_tick(&e) + 1);
        for (int w = 0; w < 5; w++) {
            if (mc_engine_step(&e, &ob, &err) != MC_OK) {
                fprintf(stderr, "bench_engine: %s\n", err.msg);
                return 1;
            }
            mc_outbox_clear(&ob);
        }
        struct mallinfo2 after = mallinfo2();
        /* About two seconds of work per size on a slow machine. */
        uint32_t ticks = n <= 100 ? 2000 : (n <= 1000 ? 200 : 20);
        double elapsed = 0.0;
        for (uint32_t t = 0; t < ticks; t++) {
            double t0 = now_ns();
            mc_status st = mc_engine_step(&e, &ob, &err);
            elapsed += now_ns() - t0;
            if (st != MC_OK) {
                fprintf(stderr, "bench_engine: %s\n", err.msg);
                return 1;
            }
            mc_outbox_clear(&ob);
        }
        double ns = elapsed / ((double)ticks * (double)n);
        double heap = (double)(after.uordblks > before.uordblks ? after.uordblks - before.uordblks
                                                                 : 0);
        printf("%9u %7u %7u %12.0f %14.3f %14.0f %16.0f\n", n, cfg.node_count, ticks, ns,
               elapsed / ticks / 1e6, (double)mc_engine_memory_bytes(&e) / n, heap / n);
        mc_outbox_deinit(&ob);
        mc_engine_deinit(&e);
    }
    mc_scenario_free(&sc);
    return 0;
}
