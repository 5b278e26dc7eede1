/* Tests of the engine's faults: each type's effect, start and end events,
 * and InjectFault validation. */
#include "engine_test_util.h"

static int setup(void **state) { return tu_fx_setup(state, 4); }
static int teardown(void **state) { return tu_fx_teardown(state); }

#define FT(x) SIM__V1__FAULT_TYPE__FAULT_TYPE_##x
#define EV(x) SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_##x

static void test_node_crash(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    uint32_t reps_before = tu_node(e, "node-2").replicas;
    assert_true(reps_before > 0);
    tu_fault(e, FT(NODE_CRASH), "node-2", 1.0, 20, 0);
    tu_step(e, &f->ob); /* tick 6 */
    assert_true(tu_find_event(&f->ob, EV(FAULT_STARTED), "node-2", NULL, 0, NULL));
    assert_true(tu_find_event(&f->ob, EV(REPLICA_CRASHED), NULL, NULL, 0, NULL));
    Sim__V1__SimulationEvent ids;
    assert_true(tu_find_event(&f->ob, EV(NODE_STATUS_CHANGED), "node-2", NULL, 0, &ids));
    assert_int_equal(ids.node_status, COMMON__V1__NODE_STATUS__NODE_STATUS_DOWN);
    int replaced = 0;
    for (int t = 6; t < 26; t++) {
        mc_engine_node_view n = tu_node(e, "node-2");
        assert_int_equal(n.status, COMMON__V1__NODE_STATUS__NODE_STATUS_DOWN);
        assert_int_equal(n.replicas, 0);
        assert_true(n.cpu_usage == 0.0);
        /* No replica on a down node, ever. */
        for (size_t i = 0; i < mc_engine_replica_count(e); i++) {
            mc_engine_replica_view r;
            mc_engine_replica_get(e, i, &r);
            mc_engine_node_view rn;
            mc_engine_node_get(e, r.node, &rn);
            assert_int_not_equal(rn.status, COMMON__V1__NODE_STATUS__NODE_STATUS_DOWN);
        }
        tu_step(e, &f->ob);
        if (tu_find_event(&f->ob, EV(REPLICA_STARTED), NULL, NULL, 0, NULL))
            replaced = 1;
    }
    /* Lost replicas were replaced elsewhere; every service is whole again. */
    assert_true(replaced);
    for (uint32_t i = 0; i < mc_engine_service_count(e); i++) {
        mc_engine_service_view v;
        mc_engine_service_get(e, i, &v);
        assert_int_equal(v.ready_replicas, v.desired_replicas);
    }
    /* At tick 26 the fault ends and the node comes back, empty. */
    assert_true(tu_find_event(&f->ob, EV(FAULT_ENDED), "node-2", NULL, 0, NULL));
    assert_int_equal(tu_node(e, "node-2").status, COMMON__V1__NODE_STATUS__NODE_STATUS_READY);
}

static void test_node_degradation(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    double before = tu_node(e, "node-1").cpu_usage;
    tu_fault(e, FT(NODE_DEGRADATION), "node-1", 0.8, 10, 0);
    tu_step(e, &f->ob);
    mc_engine_node_view n = tu_node(e, "node-1");
    assert_int_equal(n.status, COMMON__V1__NODE_STATUS__NODE_STATUS_DEGRADED);
    /* A fifth of the capacity: the same work is a much larger share. */
    assert_true(n.cpu_usage > before * 3.0);
    for (int t = 0; t < 10; t++)
        tu_step(e, &f->ob);
    assert_int_equal(tu_node(e, "node-1").status, COMMON__V1__NODE_STATUS__NODE_STATUS_READY);
}

static void test_memory_leak(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    double before = tu_service(e, "cart").memory_usage;
    tu_fault(e, FT(MEMORY_LEAK), "cart", 0.5, 0, 0);
    int oom = 0;
    double peak = 0.0;
    for (int t = 0; t < 80 && !oom; t++) {
        tu_step(e, &f->ob);
        double m = tu_service(e, "cart").memory_usage;
        if (m > peak)
            peak = m;
        char msg[256];
        if (tu_find_event(&f->ob, EV(REPLICA_CRASHED), "cart", msg, sizeof msg, NULL)) {
            assert_non_null(strstr(msg, "out of memory"));
            oom = 1;
        }
    }
    assert_true(peak > before + 40.0);
    assert_true(oom);
    /* A restart ends the leak fault. */
    tu_command(e, COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE, "cart", "fix-cart", 0);
    tu_step(e, &f->ob);
    assert_true(tu_find_event(&f->ob, EV(FAULT_ENDED), "cart", NULL, 0, NULL));
    assert_int_equal(mc_engine_active_fault_count(e), 0);
    for (int t = 0; t < 10; t++)
        tu_step(e, &f->ob);
    assert_true(tu_service(e, "cart").memory_usage < before + 5.0);
}

static void test_cpu_hog(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    double svc_before = tu_service(e, "search").cpu_usage;
    double node_before = tu_node(e, "node-3").cpu_usage;
    tu_fault(e, FT(CPU_HOG), "search", 0.3, 5, 0);
    tu_fault(e, FT(CPU_HOG), "node-3", 0.5, 5, 0);
    tu_step(e, &f->ob);
    assert_true(tu_service(e, "search").cpu_usage > svc_before + 25.0);
    assert_true(tu_node(e, "node-3").cpu_usage > node_before + 45.0);
}

static void test_traffic_spike(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    double gw = tu_service(e, "edge-gateway").offered_rps;
    double auth = tu_service(e, "auth").offered_rps;
    tu_fault(e, FT(TRAFFIC_SPIKE), "edge-gateway", 2.5, 3, 0);
    tu_step(e, &f->ob);
    /* 2.5x at the gateway, and the gateway's calls carry it downstream. */
    assert_true(tu_service(e, "edge-gateway").offered_rps > gw * 2.0);
    assert_true(tu_service(e, "auth").offered_rps > auth * 2.0);
    for (int t = 0; t < 3; t++)
        tu_step(e, &f->ob);
    assert_true(tu_service(e, "edge-gateway").offered_rps < gw * 1.5);
}

static void test_dependency_latency(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    double db = tu_service(e, "database").p99_latency_ms;
    double inv = tu_service(e, "inventory").p99_latency_ms;
    tu_fault(e, FT(DEPENDENCY_LATENCY), "database", 0.5, 0, 0);
    tu_step(e, &f->ob);
    assert_true(tu_service(e, "database").p99_latency_ms > db + 450.0);
    /* inventory calls the database once per request: it waits as long. */
    assert_true(tu_service(e, "inventory").p99_latency_ms > inv + 450.0);
    assert_true(tu_service(e, "database").error_rate < 1.0);
}

static void test_error_burst(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    tu_fault(e, FT(ERROR_BURST), "payments", 0.4, 10, 0);
    tu_step(e, &f->ob);
    double er = tu_service(e, "payments").error_rate;
    assert_true(er > 30.0 && er < 50.0);
    /* checkout calls payments for every request. */
    assert_true(tu_service(e, "checkout").error_rate > 30.0);
    assert_true(tu_service(e, "catalog").error_rate < 1.0);
    for (int t = 0; t < 10; t++)
        tu_step(e, &f->ob);
    assert_true(tu_service(e, "payments").error_rate < 2.0);
}

static void test_fault_lifetime_and_ids(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    Sim__V1__Fault in = SIM__V1__FAULT__INIT, out;
    in.type = FT(ERROR_BURST);
    in.target_id = (char *)"cart";
    in.intensity = 0.2;
    in.duration_ticks = 3;
    mc_error err;
    assert_int_equal(mc_engine_inject_fault(e, &in, &out, &err), MC_OK);
    /* Assigned an id and the next tick. */
    assert_int_equal(strlen(out.fault_id), 36);
    assert_int_equal(out.start_tick, mc_engine_tick(e) + 1);
    uint64_t start = out.start_tick;
    mc_fault_state fs;
    size_t idx = mc_engine_fault_count(e) - 1;
    assert_int_equal(mc_engine_fault_get(e, idx, NULL, &fs), MC_OK);
    assert_int_equal(fs, MC_FAULT_PENDING);
    tu_step(e, &f->ob);
    assert_int_equal(mc_engine_active_fault_count(e), 1);
    Sim__V1__SimulationEvent *evs[64];
    size_t n = tu_events(&f->ob, evs, 64);
    int found = 0;
    for (size_t i = 0; i < n; i++)
        if (evs[i]->kind == EV(FAULT_STARTED)) {
            assert_non_null(evs[i]->fault);
            assert_int_equal(strlen(evs[i]->fault->fault_id), 36);
            assert_int_equal(evs[i]->fault->start_tick, start);
            assert_true(evs[i]->fault->intensity == 0.2);
            found = 1;
        }
    tu_events_free(evs, n);
    assert_true(found);
    tu_step(e, &f->ob);
    tu_step(e, &f->ob);
    assert_false(tu_find_event(&f->ob, EV(FAULT_ENDED), NULL, NULL, 0, NULL));
    tu_step(e, &f->ob); /* start + 3 */
    assert_int_equal(mc_engine_tick(e), start + 3);
    assert_true(tu_find_event(&f->ob, EV(FAULT_ENDED), "cart", NULL, 0, NULL));
    assert_int_equal(mc_engine_active_fault_count(e), 0);
    /* A given id is kept; a future start tick is kept. */
    in.fault_id = (char *)"my-fault";
    in.start_tick = mc_engine_tick(e) + 10;
    assert_int_equal(mc_engine_inject_fault(e, &in, &out, &err), MC_OK);
    assert_string_equal(out.fault_id, "my-fault");
    assert_int_equal(out.start_tick, mc_engine_tick(e) + 10);
    assert_int_equal(mc_engine_inject_fault(e, &in, &out, &err), MC_ERR_EXISTS);
}

static void test_inject_validation(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    Sim__V1__Fault in = SIM__V1__FAULT__INIT;
    mc_error err;
    in.type = FT(ERROR_BURST);
    in.target_id = (char *)"nowhere";
    in.intensity = 0.5;
    assert_int_equal(mc_engine_inject_fault(e, &in, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "unknown node or service \"nowhere\""));
    in.target_id = (char *)"node-1";
    assert_int_equal(mc_engine_inject_fault(e, &in, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "error_burst needs a service"));
    in.type = FT(NODE_CRASH);
    in.target_id = (char *)"cart";
    assert_int_equal(mc_engine_inject_fault(e, &in, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "node_crash needs a node"));
    in.type = FT(ERROR_BURST);
    in.intensity = 1.5;
    assert_int_equal(mc_engine_inject_fault(e, &in, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "intensity 1.5"));
    in.type = (Sim__V1__FaultType)42;
    assert_int_equal(mc_engine_inject_fault(e, &in, NULL, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "unknown fault type 42"));
    assert_int_equal(mc_engine_fault_count(e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_node_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_degradation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_memory_leak, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cpu_hog, setup, teardown),
        cmocka_unit_test_setup_teardown(test_traffic_spike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependency_latency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fault_lifetime_and_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inject_validation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
