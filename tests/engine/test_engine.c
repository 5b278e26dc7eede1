/* Tests of the engine core's tick: determinism, conservation of requests,
 * the messages of a tick (stamps, chunks, watermark), scale, reset and the
 * scenario-level behaviour (cascade_failure, high_load). */
#include "engine_test_util.h"

#include "core/ids.h"
#include "ops/v1/actions.pb-c.h"

/* Same seed and inputs: the same digest and the same bytes at every tick
 * over 10,000 ticks; another seed: a different digest at every tick. */
static void test_determinism_10000_ticks(void **state)
{
    (void)state;
    mc_engine a, b, c;
    tu_engine(&a, "cascade_failure", 7);
    tu_engine(&b, "cascade_failure", 7);
    tu_engine(&c, "cascade_failure", 8);
    mc_outbox oa, ob, oc;
    mc_outbox_init(&oa, 100000);
    mc_outbox_init(&ob, 100000);
    mc_outbox_init(&oc, 100000);
    uint8_t da[32], db[32], dc[32];
    mc_engine_digest(&a, da);
    mc_engine_digest(&c, dc);
    assert_memory_not_equal(da, dc, 32);
    for (uint64_t t = 1; t <= 10000; t++) {
        /* The same inputs for a and b (and c): a restart, scaling, a node
         * crash, a drain. */
        mc_engine *all[3] = {&a, &b, &c};
        for (int k = 0; k < 3; k++) {
            if (t == 60)
                tu_command(all[k], COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE,
                           "database", "cmd-1", t - 1);
            if (t == 200)
                tu_command(all[k], COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP, "edge-gateway",
                           "cmd-2", t - 1);
            if (t == 300)
                tu_fault(all[k], SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH, "node-2", 1.0, 50, 0);
            if (t == 500)
                tu_command(all[k], COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE, "node-4",
                           "cmd-3", t - 1);
            if (t == 700)
                tu_fault(all[k], SIM__V1__FAULT_TYPE__FAULT_TYPE_MEMORY_LEAK, "cart", 0.5, 100, 0);
        }
        tu_step(&a, &oa);
        tu_step(&b, &ob);
        tu_step(&c, &oc);
        mc_engine_digest(&a, da);
        mc_engine_digest(&b, db);
        mc_engine_digest(&c, dc);
        if (memcmp(da, db, 32) != 0)
            fail_msg("digests of equal runs differ at tick %llu", (unsigned long long)t);
        if (memcmp(da, dc, 32) == 0)
            fail_msg("digests of different seeds agree at tick %llu", (unsigned long long)t);
        if (t == 10)
            assert_true(tu_service(&a, "edge-gateway").offered !=
                        tu_service(&c, "edge-gateway").offered);
        assert_int_equal(oa.len, ob.len);
        for (size_t i = 0; i < oa.len; i++) {
            assert_string_equal(oa.items[i].subject, ob.items[i].subject);
            assert_int_equal(oa.items[i].len, ob.items[i].len);
            assert_memory_equal(oa.items[i].payload, ob.items[i].payload, oa.items[i].len);
        }
    }
    assert_int_equal(mc_engine_tick(&a), 10000);
    mc_outbox_deinit(&oa);
    mc_outbox_deinit(&ob);
    mc_outbox_deinit(&oc);
    mc_engine_deinit(&a);
    mc_engine_deinit(&b);
    mc_engine_deinit(&c);
}

/* served + failed == offered for every service at every tick, through
 * overload, crashes and faults. */
static void test_conservation(void **state)
{
    (void)state;
    const char *names[] = {"normal", "high_load", "cascade_failure"};
    for (int s = 0; s < 3; s++) {
        mc_engine e;
        tu_engine(&e, names[s], 11);
        tu_fault(&e, SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH, "node-1", 1.0, 30, 40);
        mc_outbox ob;
        mc_outbox_init(&ob, 100000);
        uint64_t failed_total = 0, offered_total = 0;
        for (int t = 1; t <= 250; t++) {
            tu_step(&e, &ob);
            for (uint32_t i = 0; i < mc_engine_service_count(&e); i++) {
                mc_engine_service_view v;
                assert_int_equal(mc_engine_service_get(&e, i, &v), MC_OK);
                if (v.served + v.failed != v.offered)
                    fail_msg("%s tick %d %s: served %llu + failed %llu != offered %llu",
                             names[s], t, v.id, (unsigned long long)v.served,
                             (unsigned long long)v.failed, (unsigned long long)v.offered);
                failed_total += v.failed;
                offered_total += v.offered;
            }
        }
        /* The checks ran on real traffic, and (in the bad scenarios) on
         * real failures. */
        assert_true(offered_total > 100000);
        if (s > 0)
            assert_true(failed_total > 0);
        mc_outbox_deinit(&ob);
        mc_engine_deinit(&e);
    }
}

/* The messages of a tick: metrics chunks, events, watermark; stamps. */
static void test_tick_messages(void **state)
{
    (void)state;
    mc_engine e;
    mc_scenario sc;
    tu_load("normal", &sc);
    mc_engine_config cfg = {.seed = 3, .chunk_max_samples = 20};
    mc_error err;
    assert_int_equal(mc_engine_init(&e, &sc, &cfg, &err), MC_OK);
    mc_outbox ob;
    mc_outbox_init(&ob, 10000);
    char run_id[21];
    mc_id_run(run_id, "normal", 3, 0);
    assert_string_equal(mc_engine_run_id(&e), run_id);
    uint64_t expect_seq = 1;
    for (uint64_t t = 1; t <= 3; t++) {
        tu_step(&e, &ob);
        size_t total_samples = 13 * 6 + 5 * 3;
        size_t chunks = (total_samples + 19) / 20;
        assert_true(ob.len >= chunks + 1);
        size_t seen = 0;
        for (size_t i = 0; i < chunks; i++) {
            assert_string_equal(ob.items[i].subject, "sim.metrics");
            assert_int_equal(ob.items[i].tick, t);
            assert_int_equal(ob.items[i].producer_seq, expect_seq);
            Sim__V1__MetricSnapshot *m =
                sim__v1__metric_snapshot__unpack(NULL, ob.items[i].len, ob.items[i].payload);
            assert_non_null(m);
            assert_string_equal(m->stamp->run_id, run_id);
            assert_string_equal(m->stamp->producer, "sim-engine");
            assert_int_equal(m->stamp->producer_seq, expect_seq);
            assert_int_equal(m->stamp->tick, t);
            assert_int_equal(m->chunk_index, i);
            assert_int_equal(m->chunk_count, chunks);
            assert_int_equal(m->sim_time_unix_ms, sc.start_time_unix_ms + (int64_t)t * 1000);
            assert_true(m->n_samples <= 20);
            seen += m->n_samples;
            for (size_t k = 0; k < m->n_samples; k++) {
                const Sim__V1__MetricSample *smp = m->samples[k];
                /* Exactly one of service_id / node_id is set. */
                assert_true((smp->service_id[0] != '\0') != (smp->node_id[0] != '\0'));
                if (strcmp(smp->metric_name, "error_rate") == 0 ||
                    strcmp(smp->metric_name, "cpu_usage") == 0 ||
                    strcmp(smp->metric_name, "memory_usage") == 0)
                    assert_true(smp->metric_value >= 0.0 && smp->metric_value <= 100.0);
                if (strcmp(smp->metric_name, "node_status") == 0)
                    assert_true(smp->metric_value == COMMON__V1__NODE_STATUS__NODE_STATUS_READY);
                if (strcmp(smp->metric_name, "replicas") == 0 &&
                    strcmp(smp->service_id, "edge-gateway") == 0)
                    assert_true(smp->metric_value == 3.0);
            }
            sim__v1__metric_snapshot__free_unpacked(m, NULL);
            expect_seq++;
        }
        assert_int_equal(seen, total_samples);
        for (size_t i = chunks; i + 1 < ob.len; i++) {
            assert_string_equal(ob.items[i].subject, "sim.events");
            assert_int_equal(ob.items[i].producer_seq, expect_seq++);
        }
        if (t == 1)
            assert_true(tu_find_event(&ob, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_RUN_STARTED,
                                      NULL, NULL, 0, NULL));
        const mc_outbox_msg *last = &ob.items[ob.len - 1];
        assert_string_equal(last->subject, "sim.watermark");
        assert_int_equal(last->producer_seq, expect_seq++);
        Ops__V1__Watermark *wm = ops__v1__watermark__unpack(NULL, last->len, last->payload);
        assert_non_null(wm);
        assert_int_equal(wm->stage, COMMON__V1__STAGE__STAGE_ENGINE);
        assert_int_equal(wm->tick, t);
        assert_int_equal(wm->message_count, ob.len - 1);
        assert_string_equal(wm->stamp->run_id, run_id);
        ops__v1__watermark__free_unpacked(wm, NULL);
    }
    assert_int_equal(mc_engine_sim_time_unix_ms(&e), sc.start_time_unix_ms + 3000);
    /* An outbox without room for a tick is refused before anything moves. */
    mc_outbox small;
    mc_outbox_init(&small, 2);
    assert_int_equal(mc_engine_step(&e, &small, &err), MC_ERR_LIMIT);
    assert_int_equal(mc_engine_tick(&e), 3);
    mc_outbox_deinit(&small);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
    mc_scenario_free(&sc);
}

/* 10,000 services on 1,000 nodes: several chunks, each under 1 MiB, and the
 * union of the chunks holds every sample exactly once. */
static void test_chunking_at_scale(void **state)
{
    (void)state;
    mc_scenario sc;
    tu_load("normal", &sc);
    mc_engine_config cfg = {.seed = 5, .node_count = 1000, .service_count = 10000};
    mc_engine e;
    mc_error err;
    mc_status st = mc_engine_init(&e, &sc, &cfg, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(mc_engine_service_count(&e), 10000);
    assert_int_equal(mc_engine_node_count(&e), 1000);
    mc_outbox ob;
    mc_outbox_init(&ob, 10000);
    tu_step(&e, &ob);
    tu_step(&e, &ob);
    size_t want = 10000 * 6 + 1000 * 3;
    /* Seen flags by (entity index, metric index). */
    uint8_t *seen = calloc(want, 1);
    assert_non_null(seen);
    size_t chunks = 0, samples = 0;
    for (size_t i = 0; i < ob.len; i++) {
        if (strcmp(ob.items[i].subject, "sim.metrics") != 0)
            continue;
        assert_true(ob.items[i].len < 1024 * 1024);
        Sim__V1__MetricSnapshot *m =
            sim__v1__metric_snapshot__unpack(NULL, ob.items[i].len, ob.items[i].payload);
        assert_non_null(m);
        assert_int_equal(m->chunk_index, chunks);
        chunks++;
        for (size_t k = 0; k < m->n_samples; k++) {
            const Sim__V1__MetricSample *smp = m->samples[k];
            static const char *const svc_m[] = {"cpu_usage", "memory_usage", "error_rate",
                                                "p99_latency_ms", "requests_per_second",
                                                "replicas"};
            static const char *const node_m[] = {"cpu_usage", "memory_usage", "node_status"};
            size_t slot = want;
            uint32_t idx;
            if (smp->service_id[0] != '\0') {
                assert_int_equal(mc_engine_service_find(&e, smp->service_id, &idx), MC_OK);
                for (size_t j = 0; j < 6; j++)
                    if (strcmp(smp->metric_name, svc_m[j]) == 0)
                        slot = idx * 6 + j;
            } else {
                assert_int_equal(mc_engine_node_find(&e, smp->node_id, &idx), MC_OK);
                for (size_t j = 0; j < 3; j++)
                    if (strcmp(smp->metric_name, node_m[j]) == 0)
                        slot = 60000 + idx * 3 + j;
            }
            assert_true(slot < want);
            assert_int_equal(seen[slot], 0);
            seen[slot] = 1;
            samples++;
        }
        sim__v1__metric_snapshot__free_unpacked(m, NULL);
    }
    assert_true(chunks > 1);
    assert_int_equal(samples, want);
    free(seen);
    /* Generated topologies are a function of the seed. */
    mc_engine e2, e3;
    assert_int_equal(mc_engine_init(&e2, &sc, &cfg, &err), MC_OK);
    mc_engine_config other = cfg;
    other.seed = 6;
    assert_int_equal(mc_engine_init(&e3, &sc, &other, &err), MC_OK);
    tu_step(&e2, &ob);
    tu_step(&e2, &ob);
    tu_step(&e3, &ob);
    tu_step(&e3, &ob);
    uint8_t d1[32], d2[32], d3[32];
    mc_engine_digest(&e, d1);
    mc_engine_digest(&e2, d2);
    mc_engine_digest(&e3, d3);
    assert_memory_equal(d1, d2, 32);
    assert_memory_not_equal(d1, d3, 32);
    mc_engine_deinit(&e2);
    mc_engine_deinit(&e3);
    /* Knobs out of range. */
    mc_engine bad;
    mc_engine_config too_many = {.seed = 1, .service_count = 10001};
    assert_int_equal(mc_engine_init(&bad, &sc, &too_many, &err), MC_ERR_RANGE);
    mc_engine_config too_few = {.seed = 1, .service_count = 5};
    assert_int_equal(mc_engine_init(&bad, &sc, &too_few, &err), MC_ERR_RANGE);
    mc_engine_deinit(&bad);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
    mc_scenario_free(&sc);
}

/* Reset starts over: tick 0, a new run id, the same trajectory as a fresh
 * engine reset the same number of times. */
static void test_reset(void **state)
{
    (void)state;
    mc_engine a, b;
    tu_engine(&a, "cascade_failure", 21);
    tu_engine(&b, "cascade_failure", 21);
    mc_outbox ob;
    mc_outbox_init(&ob, 100000);
    char first_run[24];
    snprintf(first_run, sizeof first_run, "%s", mc_engine_run_id(&a));
    for (int t = 0; t < 40; t++)
        tu_step(&a, &ob);
    tu_command(&a, COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP, "cart", "c", 40);
    mc_error err;
    assert_int_equal(mc_engine_reset(&a, 0, &err), MC_OK);
    assert_int_equal(mc_engine_reset(&b, 0, &err), MC_OK);
    assert_int_equal(mc_engine_tick(&a), 0);
    assert_int_equal(mc_engine_reset_count(&a), 1);
    assert_int_equal(mc_engine_seed(&a), 21);
    assert_string_not_equal(mc_engine_run_id(&a), first_run);
    char expect[21];
    mc_id_run(expect, "cascade_failure", 21, 1);
    assert_string_equal(mc_engine_run_id(&a), expect);
    for (int t = 0; t < 60; t++) {
        tu_step(&a, &ob);
        tu_step(&b, &ob);
        uint8_t da[32], db[32];
        mc_engine_digest(&a, da);
        mc_engine_digest(&b, db);
        assert_memory_equal(da, db, 32);
    }
    /* The scenario's faults are re-armed by the reset. */
    assert_int_equal(mc_engine_active_fault_count(&a), 2);
    assert_int_equal(mc_engine_reset(&a, 99, &err), MC_OK);
    assert_int_equal(mc_engine_seed(&a), 99);
    assert_int_equal(mc_engine_active_fault_count(&a), 0);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&a);
    mc_engine_deinit(&b);
}

/* cascade_failure without remediation: the database's errors reach the
 * edge gateway, above the 5% warning threshold, within a few ticks. */
static void test_cascade_degrades_upstream(void **state)
{
    (void)state;
    mc_engine e;
    tu_engine(&e, "cascade_failure", 1);
    mc_outbox ob;
    mc_outbox_init(&ob, 100000);
    for (int t = 1; t < 30; t++) {
        tu_step(&e, &ob);
        assert_true(tu_service(&e, "edge-gateway").error_rate < 5.0);
    }
    int crossed_at = 0;
    for (int t = 30; t <= 40 && !crossed_at; t++) {
        tu_step(&e, &ob);
        if (t == 30)
            assert_true(tu_find_event(&ob, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_FAULT_STARTED,
                                      "database", NULL, 0, NULL));
        if (tu_service(&e, "edge-gateway").error_rate > 5.0)
            crossed_at = t;
    }
    assert_true(crossed_at >= 30 && crossed_at <= 40);
    /* Every service between the gateway and the database suffers too. */
    assert_true(tu_service(&e, "database").error_rate > 40.0);
    assert_true(tu_service(&e, "catalog").error_rate > 5.0);
    assert_true(tu_service(&e, "inventory").error_rate > 5.0);
    assert_true(tu_service(&e, "catalog").p99_latency_ms > 150.0);
    /* And it stays that way without remediation. */
    for (int t = 0; t < 100; t++)
        tu_step(&e, &ob);
    assert_true(tu_service(&e, "edge-gateway").error_rate > 5.0);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
}

/* cascade_failure with the right remediation (restart the database) heals
 * within a bounded number of ticks. */
static void test_cascade_restart_recovers(void **state)
{
    (void)state;
    mc_engine e;
    tu_engine(&e, "cascade_failure", 1);
    mc_outbox ob;
    mc_outbox_init(&ob, 100000);
    for (int t = 1; t <= 40; t++)
        tu_step(&e, &ob);
    assert_true(tu_service(&e, "edge-gateway").error_rate > 5.0);
    tu_command(&e, COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE, "database", "fix-db", 40);
    tu_step(&e, &ob); /* tick 41: applied */
    assert_true(tu_find_event(&ob, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED,
                              "database", NULL, 0, NULL));
    assert_true(tu_find_event(&ob, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_FAULT_ENDED,
                              "database", NULL, 0, NULL));
    int healed_at = 0;
    for (int t = 42; t <= 60 && !healed_at; t++) {
        tu_step(&e, &ob);
        if (tu_service(&e, "edge-gateway").error_rate < 5.0 &&
            tu_service(&e, "database").error_rate < 5.0)
            healed_at = t;
    }
    if (!healed_at)
        fail_msg("not healed by tick 60: gateway %.1f%%, database %.1f%%",
                 tu_service(&e, "edge-gateway").error_rate, tu_service(&e, "database").error_rate);
    /* It stays healed (the latency fault runs on, but errors are gone). */
    for (int t = 0; t < 50; t++) {
        tu_step(&e, &ob);
        assert_true(tu_service(&e, "edge-gateway").error_rate < 5.0);
    }
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
}

static double max_service_cpu(const mc_engine *e, const char **which)
{
    double m = 0.0;
    for (uint32_t i = 0; i < mc_engine_service_count(e); i++) {
        mc_engine_service_view v;
        mc_engine_service_get(e, i, &v);
        if (v.cpu_usage > m) {
            m = v.cpu_usage;
            if (which)
                *which = v.id;
        }
    }
    return m;
}

/* high_load without scaling saturates. */
static void test_high_load_saturates(void **state)
{
    (void)state;
    mc_engine e;
    tu_engine(&e, "high_load", 2);
    mc_outbox ob;
    mc_outbox_init(&ob, 100000);
    for (int t = 1; t <= 20; t++) {
        tu_step(&e, &ob);
        assert_true(max_service_cpu(&e, NULL) < 85.0);
    }
    int saturated = 0;
    for (int t = 21; t <= 120; t++) {
        tu_step(&e, &ob);
        if (max_service_cpu(&e, NULL) > 85.0)
            saturated = 1;
    }
    assert_true(saturated);
    assert_true(tu_service(&e, "edge-gateway").error_rate > 5.0);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
}

/* high_load with scaling (SCALE_UP on the hot services, as an agent
 * would) recovers: after the ramp every service is below 85% CPU. */
static void test_high_load_scaling_recovers(void **state)
{
    (void)state;
    mc_engine e;
    tu_engine(&e, "high_load", 2);
    mc_outbox ob;
    mc_outbox_init(&ob, 100000);
    int commands = 0;
    for (uint64_t t = 1; t <= 220; t++) {
        tu_step(&e, &ob);
        for (uint32_t i = 0; i < mc_engine_service_count(&e); i++) {
            mc_engine_service_view v;
            mc_engine_service_get(&e, i, &v);
            /* Scale a hot service once its previous scale-up is serving. */
            if (v.cpu_usage > 65.0 && v.ready_replicas == v.desired_replicas &&
                v.desired_replicas < v.max_replicas) {
                char id[64];
                snprintf(id, sizeof id, "scale-%s-%llu", v.id, (unsigned long long)t);
                tu_command(&e, COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP, v.id, id, t);
                commands++;
            }
        }
        if (t >= 160) {
            const char *hot = NULL;
            double m = max_service_cpu(&e, &hot);
            if (m > 85.0)
                fail_msg("tick %llu: %s at %.0f%% cpu despite scaling", (unsigned long long)t, hot,
                         m);
            assert_true(tu_service(&e, "edge-gateway").error_rate < 5.0);
        }
    }
    assert_true(commands > 5);
    assert_true(tu_service(&e, "edge-gateway").ready_replicas > 3);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
}

static void test_sine_approximation(void **state)
{
    (void)state;
    struct {
        double phase, want;
    } cases[] = {{0.0, 0.0},       {0.25, 1.0},       {0.5, 0.0},        {0.75, -1.0},
                 {1.0 / 12, 0.5},  {5.0 / 12, 0.5},   {7.0 / 12, -0.5},  {1.25, 1.0},
                 {-0.25, -1.0},    {0.125, 0.70710678}, {3.0, 0.0}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double got = mc_engine_sin_turns(cases[i].phase);
        if (got - cases[i].want > 0.002 || cases[i].want - got > 0.002)
            fail_msg("sin(2 pi %g) = %g, want %g", cases[i].phase, got, cases[i].want);
    }
}

/* The first tick announces every node's status and every service's
 * replica bounds (attributes "replicas" and "max_replicas"), so the agent
 * knows what it may drain and scale before anything changes; a scale-up is
 * announced again with the new count. */
static void test_run_start_announces_nodes_and_services(void **state)
{
    (void)state;
    mc_engine e;
    tu_engine(&e, "cascade_failure", 42);
    mc_outbox ob;
    mc_outbox_init(&ob, 10000);
    tu_step(&e, &ob);
    Sim__V1__SimulationEvent *evs[4096];
    size_t n = tu_events(&ob, evs, 4096);
    size_t nodes = 0, services = 0;
    for (size_t i = 0; i < n; i++) {
        if (evs[i]->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_NODE_STATUS_CHANGED) {
            nodes++;
            assert_int_equal(evs[i]->node_status, COMMON__V1__NODE_STATUS__NODE_STATUS_READY);
        }
        if (evs[i]->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_SERVICE_STATUS_CHANGED) {
            services++;
            assert_int_equal(evs[i]->n_attributes, 2);
            mc_engine_service_view v = tu_service(&e, evs[i]->target_id);
            char want[16];
            snprintf(want, sizeof want, "%u", v.max_replicas);
            assert_string_equal(evs[i]->attributes[0]->key, "max_replicas");
            assert_string_equal(evs[i]->attributes[0]->value, want);
            snprintf(want, sizeof want, "%u", v.desired_replicas);
            assert_string_equal(evs[i]->attributes[1]->key, "replicas");
            assert_string_equal(evs[i]->attributes[1]->value, want);
        }
    }
    tu_events_free(evs, n);
    assert_int_equal(nodes, mc_engine_node_count(&e));
    assert_int_equal(services, mc_engine_service_count(&e));

    /* A quiet tick announces nothing again. */
    mc_outbox_clear(&ob);
    tu_step(&e, &ob);
    assert_int_equal(tu_find_event(&ob, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_NODE_STATUS_CHANGED, NULL, NULL, 0, NULL), 0);

    /* A scale-up is announced with the new desired count. */
    mc_engine_service_view before = tu_service(&e, "catalog");
    tu_command(&e, COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP, "catalog", "cmd-1", 2);
    mc_outbox_clear(&ob);
    tu_step(&e, &ob);
    n = tu_events(&ob, evs, 4096);
    int seen = 0;
    for (size_t i = 0; i < n; i++) {
        if (evs[i]->kind != SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_SERVICE_STATUS_CHANGED ||
            strcmp(evs[i]->target_id, "catalog") != 0)
            continue;
        char want[16];
        snprintf(want, sizeof want, "%u", before.desired_replicas + 1);
        assert_string_equal(evs[i]->attributes[1]->value, want);
        seen = 1;
    }
    tu_events_free(evs, n);
    assert_true(seen);
    mc_outbox_deinit(&ob);
    mc_engine_deinit(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sine_approximation),
        cmocka_unit_test(test_tick_messages),
        cmocka_unit_test(test_run_start_announces_nodes_and_services),
        cmocka_unit_test(test_conservation),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_cascade_degrades_upstream),
        cmocka_unit_test(test_cascade_restart_recovers),
        cmocka_unit_test(test_high_load_saturates),
        cmocka_unit_test(test_high_load_scaling_recovers),
        cmocka_unit_test(test_chunking_at_scale),
        cmocka_unit_test(test_determinism_10000_ticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
