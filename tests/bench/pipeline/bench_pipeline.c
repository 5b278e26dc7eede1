/* Benchmark of the pipeline cores.
 *
 * Detector: N service targets, each reporting the four metrics the seed's
 * rules watch (error_rate, cpu_usage, memory_usage, p99_latency_ms) every
 * tick in chunks of 1,000 samples, with about 5 % of the targets breaking a
 * rule. The time of on_snapshot + on_tick_end over all ticks, divided by the
 * samples, is the cost per sample (windows, rules, incidents, outbox).
 *
 * Decider: every tick 200 new incidents open over a rotating set of
 * services and nodes, 200 are updated and 200 resolve; a decision is one
 * open incident examined at a tick end. Decisions per second include the
 * incident intake. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/rng.h"
#include "decider/decider.h"
#include "detector/detector.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const mc_error *err)
{
    fprintf(stderr, "bench_pipeline: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

enum { METRICS = 4, CHUNK = 1000 };
static const char *const metric_names[METRICS] = {"error_rate", "cpu_usage", "memory_usage",
                                                  "p99_latency_ms"};

static double sample_value(uint32_t target, int metric, uint64_t tick)
{
    double u = mc_rng_unit(42, MC_RNG_STREAM_TEST, tick, target, (uint32_t)metric);
    int hot = target % 20 == 0; /* about 5 % break a rule */
    switch (metric) {
    case 0:
        return hot ? 8 + 6 * u : 0.5 + u;
    case 1:
        return hot ? 88 + 10 * u : 30 + 40 * u;
    case 2:
        return 40 + 30 * u;
    default:
        return hot ? 450 + 200 * u : 80 + 60 * u;
    }
}

static void bench_detector(uint32_t targets, uint64_t ticks)
{
    size_t n = (size_t)targets * METRICS;
    Sim__V1__MetricSample *items = calloc(n, sizeof *items);
    Sim__V1__MetricSample **ptrs = calloc(n, sizeof *ptrs);
    char (*names)[24] = calloc(targets, sizeof *names);
    mc_detector *d = calloc(1, sizeof *d);
    if (!items || !ptrs || !names || !d)
        die("out of memory", NULL);
    for (uint32_t t = 0; t < targets; t++) {
        snprintf(names[t], sizeof names[t], "svc-%06u", t);
        for (int m = 0; m < METRICS; m++) {
            size_t i = (size_t)t * METRICS + (size_t)m;
            sim__v1__metric_sample__init(&items[i]);
            items[i].service_id = names[t];
            items[i].node_id = (char *)"";
            items[i].metric_name = (char *)metric_names[m];
            ptrs[i] = &items[i];
        }
    }
    mc_error err;
    mc_detector_config cfg = {.tick_duration_ms = 1000, .max_targets = targets};
    if (mc_detector_init(d, &cfg, &err) != MC_OK)
        die("detector init", &err);
    mc_outbox out;
    mc_outbox_init(&out, (size_t)targets * 16 + 16);
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)"run-bench";
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    snap.stamp = &stamp;
    double busy = 0;
    size_t messages = 0;
    for (uint64_t tick = 0; tick < ticks; tick++) {
        for (size_t i = 0; i < n; i++)
            items[i].metric_value = sample_value((uint32_t)(i / METRICS), (int)(i % METRICS), tick);
        stamp.tick = tick;
        snap.chunk_count = (uint32_t)((n + CHUNK - 1) / CHUNK);
        double t0 = now_s();
        for (size_t off = 0, c = 0; off < n; off += CHUNK, c++) {
            snap.chunk_index = (uint32_t)c;
            snap.samples = ptrs + off;
            snap.n_samples = n - off < CHUNK ? n - off : CHUNK;
            if (mc_detector_on_snapshot(d, &snap, &out, &err) != MC_OK)
                die("on_snapshot", &err);
        }
        if (mc_detector_on_tick_end(d, tick, &out, &err) != MC_OK)
            die("on_tick_end", &err);
        busy += now_s() - t0;
        messages += out.len;
        mc_outbox_clear(&out);
    }
    uint8_t digest[32];
    char hex[65];
    mc_detector_digest(d, digest);
    mc_digest_hex(digest, hex);
    double samples = (double)n * (double)ticks;
    printf("detector: %6u targets x %d metrics x %3llu ticks: %8.1f ns/sample, %6.2f ms/tick, "
           "%zu messages, %zu open incidents, digest %.16s\n",
           targets, METRICS, (unsigned long long)ticks, busy * 1e9 / samples,
           busy * 1e3 / (double)ticks, messages, mc_detector_open_incidents(d), hex);
    mc_outbox_deinit(&out);
    mc_detector_deinit(d);
    free(d);
    free(names);
    free(ptrs);
    free(items);
}

static void bench_decider(uint64_t ticks)
{
    enum { PER_TICK = 200, LIFE = 20, SERVICES = 5000, NODES = 200 };
    mc_decider *d = calloc(1, sizeof *d);
    if (d == NULL)
        die("out of memory", NULL);
    mc_decider_config cfg;
    mc_decider_config_default(&cfg);
    cfg.max_in_flight = 1000000;
    cfg.max_incidents = PER_TICK * 64; /* resolved, with actions still in flight */
    cfg.max_targets = SERVICES + NODES + 16;
    cfg.retention_ticks = 1;
    mc_error err;
    if (mc_decider_init(d, &cfg, &err) != MC_OK)
        die("decider init", &err);
    mc_outbox out;
    mc_outbox_init(&out, 100000);
    static const char *const metrics[] = {"error_rate", "cpu_usage", "p99_latency_ms",
                                          "memory_usage", "node_status"};
    static const char *const rules[] = {"error_rate_critical", "cpu_high", "latency_p99_high",
                                        "memory_high", "node_degraded"};
    static const int sev[] = {4, 2, 2, 3, 3};
    char id[48], target[32];
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)"run-bench";
    stamp.producer = (char *)"signal-service";
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    m.stamp = &stamp;
    m.id = id;
    m.target_id = target;
    /* Every node is ready, so drains are allowed. */
    for (uint32_t i = 0; i < NODES; i++) {
        Common__V1__Stamp es = COMMON__V1__STAMP__INIT;
        Sim__V1__SimulationEvent ev = SIM__V1__SIMULATION_EVENT__INIT;
        snprintf(target, sizeof target, "node-%04u", i);
        es.run_id = (char *)"run-bench";
        ev.stamp = &es;
        ev.kind = SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_NODE_STATUS_CHANGED;
        ev.target_id = target;
        ev.node_status = COMMON__V1__NODE_STATUS__NODE_STATUS_READY;
        if (mc_decider_on_event(d, &ev, &out, &err) != MC_OK)
            die("on_event", &err);
    }
    double busy = 0;
    uint64_t decisions = 0, inputs = 0, seq = 0;
    size_t actions = 0;
    for (uint64_t tick = 1; tick <= ticks; tick++) {
        double t0 = now_s();
        /* Opened this tick, updated (opened 10 ticks ago), resolved (LIFE). */
        for (int phase = 0; phase < 3; phase++) {
            uint64_t born = phase == 0 ? tick : phase == 1 ? tick - 10 : tick - LIFE;
            if (born < 1 || born > tick)
                continue;
            for (uint32_t k = 0; k < PER_TICK; k++) {
                uint64_t serial = born * PER_TICK + k;
                int kind = (int)(serial % 5);
                int node = kind == 4 || (kind == 3 && serial % 2);
                snprintf(id, sizeof id, "inc-%012llu", (unsigned long long)serial);
                if (node)
                    snprintf(target, sizeof target, "node-%04u", (uint32_t)(serial % NODES));
                else
                    snprintf(target, sizeof target, "svc-%05u", (uint32_t)(serial % SERVICES));
                m.service_id = node ? (char *)"" : target;
                m.node_id = node ? target : (char *)"";
                m.metric_name = (char *)metrics[kind];
                m.rule_name = (char *)rules[kind];
                m.severity = (Common__V1__IncidentSeverity)sev[kind];
                m.state = (Ops__V1__IncidentState)(phase + 1);
                m.resolved = phase == 2;
                m.opened_at_tick = born;
                m.updated_at_tick = tick;
                m.resolved_at_tick = phase == 2 ? tick : 0;
                m.observed_value = 99;
                stamp.tick = tick;
                stamp.producer_seq = ++seq;
                if (mc_decider_on_incident(d, &m, &out, &err) != MC_OK)
                    die("on_incident", &err);
                inputs++;
            }
        }
        mc_decider_stats before, after;
        mc_decider_stats_get(d, &before);
        if (mc_decider_on_tick_end(d, tick, &out, &err) != MC_OK)
            die("on_tick_end", &err);
        busy += now_s() - t0;
        mc_decider_stats_get(d, &after);
        (void)before;
        (void)after;
        actions += out.len - 1;
        mc_outbox_clear(&out);
        mc_decider_notes_clear(d);
        /* Open incidents examined this tick: those born in (tick-LIFE, tick]. */
        decisions += (uint64_t)PER_TICK * (tick < LIFE ? tick : LIFE - 1);
    }
    uint8_t digest[32];
    char hex[65];
    mc_decider_digest(d, digest);
    mc_digest_hex(digest, hex);
    printf("decider: %llu ticks, %llu incident messages, %llu decisions, %zu actions: "
           "%.0f decisions/s (%.2f ms/tick), digest %.16s\n",
           (unsigned long long)ticks, (unsigned long long)inputs, (unsigned long long)decisions,
           actions, (double)decisions / busy, busy * 1e3 / (double)ticks, hex);
    mc_outbox_deinit(&out);
    mc_decider_deinit(d);
    free(d);
}

int main(void)
{
    bench_detector(1000, 300);
    bench_detector(10000, 100);
    bench_decider(500);
    return 0;
}
