/* Tests of the engine's commands: every action's effect and every refusal,
 * each with a specific assertion; command events and their order. */
#include "engine_test_util.h"

#define AT(x) COMMON__V1__ACTION_TYPE__ACTION_TYPE_##x
#define EV(x) SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_##x

static int setup(void **state) { return tu_fx_setup(state, 9); }
static int teardown(void **state) { return tu_fx_teardown(state); }

/* Runs one command through a step and checks its event: applied or not,
 * ids, applied_at_tick, and that the message contains want. */
static void run_command(fx *f, int type, const char *target, const char *id, int applied,
                        const char *want)
{
    mc_engine *e = &f->e;
    tu_command(e, type, target, id, mc_engine_tick(e));
    tu_step(e, &f->ob);
    Sim__V1__SimulationEvent *evs[256];
    size_t n = tu_events(&f->ob, evs, 256);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(evs[i]->command_id, id) != 0)
            continue;
        found = 1;
        assert_int_equal(evs[i]->kind, applied ? EV(COMMAND_APPLIED) : EV(COMMAND_REFUSED));
        char action[160];
        snprintf(action, sizeof action, "action-%s", id);
        assert_string_equal(evs[i]->action_id, action);
        assert_int_equal(evs[i]->applied_at_tick, mc_engine_tick(e));
        assert_string_equal(evs[i]->target_id, target);
        if (strstr(evs[i]->message, want) == NULL)
            fail_msg("message \"%s\" does not contain \"%s\"", evs[i]->message, want);
    }
    tu_events_free(evs, n);
    if (!found)
        fail_msg("no event for command %s", id);
}

static void test_restart_service(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    assert_int_equal(tu_service(e, "edge-gateway").ready_replicas, 3);
    run_command(f, AT(RESTART_SERVICE), "edge-gateway", "r1", 1, "restarting edge-gateway");
    /* A rolling restart: part of the replicas are down, some still serve. */
    mc_engine_service_view v = tu_service(e, "edge-gateway");
    assert_int_equal(v.status, COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_RESTARTING);
    assert_true(v.ready_replicas > 0 && v.ready_replicas < 3);
    /* Refused while it is restarting. */
    run_command(f, AT(RESTART_SERVICE), "edge-gateway", "r2", 0, "already restarting");
    for (int t = 0; t < 8; t++)
        tu_step(e, &f->ob);
    v = tu_service(e, "edge-gateway");
    assert_int_equal(v.ready_replicas, 3);
    assert_false(v.restarting);
    assert_int_equal(v.status, COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY);
    /* A single-replica service is fully down during its restart. */
    run_command(f, AT(RESTART_SERVICE), "notifications", "r3", 1, "1 replicas in 1 wave");
    assert_int_equal(tu_service(e, "notifications").ready_replicas, 0);
    assert_true(tu_service(e, "notifications").error_rate > 99.0);
}

static void test_scale_up(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    mc_engine_service_view before = tu_service(e, "cart");
    run_command(f, AT(SCALE_UP), "cart", "s1", 1, "scaling cart up to 3 replicas");
    mc_engine_service_view v = tu_service(e, "cart");
    assert_int_equal(v.desired_replicas, before.desired_replicas + 1);
    assert_int_equal(v.live_replicas, 3);
    /* Warming up: not serving yet. */
    assert_int_equal(v.ready_replicas, 2);
    for (int t = 0; t < 3; t++)
        tu_step(e, &f->ob);
    assert_int_equal(tu_service(e, "cart").ready_replicas, 3);
    /* Up to max_replicas (8), then refused. */
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "s-more-%d", i);
        run_command(f, AT(SCALE_UP), "cart", id, 1, "scaling cart up");
    }
    assert_int_equal(tu_service(e, "cart").desired_replicas, 8);
    run_command(f, AT(SCALE_UP), "cart", "s-max", 0, "already at its maximum of 8 replicas");
    assert_int_equal(tu_service(e, "cart").desired_replicas, 8);
}

static void test_scale_up_without_room(void **state)
{
    (void)state;
    fx f;
    tu_engine_text(&f.e,
                   "[scenario]\nname = full\n[node]\nid = n1\ncpu_cores = 4\nmemory_mb = 8192\n"
                   "[service]\nid = big\nexternal_rps = 10\ncpu_ms_per_request = 10\n"
                   "cpu_cores_per_replica = 2\nreplicas = 2\nmax_replicas = 5\n",
                   1);
    mc_outbox_init(&f.ob, 100000);
    tu_step(&f.e, &f.ob);
    run_command(&f, AT(SCALE_UP), "big", "no-room", 0, "no schedulable node has 2 cores");
    assert_int_equal(tu_service(&f.e, "big").desired_replicas, 2);
    mc_outbox_deinit(&f.ob);
    mc_engine_deinit(&f.e);
}

static void test_scale_down(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    run_command(f, AT(SCALE_DOWN), "edge-gateway", "d1", 1, "scaling edge-gateway down to 2");
    assert_int_equal(tu_service(e, "edge-gateway").desired_replicas, 2);
    assert_int_equal(tu_service(e, "edge-gateway").live_replicas, 2);
    run_command(f, AT(SCALE_DOWN), "edge-gateway", "d2", 1, "down to 1");
    run_command(f, AT(SCALE_DOWN), "edge-gateway", "d3", 0, "never goes below one");
    assert_int_equal(tu_service(e, "edge-gateway").live_replicas, 1);
    run_command(f, AT(SCALE_DOWN), "notifications", "d4", 0, "never goes below one");
    assert_int_equal(tu_service(e, "notifications").ready_replicas, 1);
}

static void test_drain_node(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    uint32_t on_node = tu_node(e, "node-3").replicas;
    assert_true(on_node > 0);
    run_command(f, AT(DRAIN_NODE), "node-3", "n1", 1, "draining node-3");
    assert_int_equal(tu_node(e, "node-3").status, COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINING);
    /* Old replicas still serve while the new ones warm up: no capacity is
     * lost during the move. */
    for (uint32_t i = 0; i < mc_engine_service_count(e); i++) {
        mc_engine_service_view v;
        mc_engine_service_get(e, i, &v);
        assert_true(v.ready_replicas >= 1);
        assert_true(v.error_rate < 5.0);
    }
    run_command(f, AT(DRAIN_NODE), "node-3", "n2", 0, "already draining");
    for (int t = 0; t < 6; t++)
        tu_step(e, &f->ob);
    mc_engine_node_view n = tu_node(e, "node-3");
    assert_int_equal(n.status, COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINED);
    assert_int_equal(n.replicas, 0);
    for (uint32_t i = 0; i < mc_engine_service_count(e); i++) {
        mc_engine_service_view v;
        mc_engine_service_get(e, i, &v);
        assert_int_equal(v.ready_replicas, v.desired_replicas);
    }
    run_command(f, AT(DRAIN_NODE), "node-3", "n3", 0, "already drained");
    /* Nothing is ever scheduled on a drained node. */
    run_command(f, AT(SCALE_UP), "cart", "n4", 1, "scaling cart up");
    assert_int_equal(tu_node(e, "node-3").replicas, 0);
    run_command(f, AT(DRAIN_NODE), "node-9", "n5", 0, "no node named \"node-9\"");
    tu_fault(e, SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH, "node-5", 1.0, 0, 0);
    tu_step(e, &f->ob);
    run_command(f, AT(DRAIN_NODE), "node-5", "n6", 0, "node node-5 is down");
}

static void test_drain_refusals(void **state)
{
    (void)state;
    /* The last ready node. */
    fx f;
    tu_engine_text(&f.e,
                   "[scenario]\nname = one\n[node]\nid = n1\ncpu_cores = 8\nmemory_mb = 8192\n"
                   "[service]\nid = s\nexternal_rps = 10\ncpu_ms_per_request = 10\n",
                   1);
    mc_outbox_init(&f.ob, 100000);
    tu_step(&f.e, &f.ob);
    run_command(&f, AT(DRAIN_NODE), "n1", "last", 0, "n1 is the last ready node");
    assert_int_equal(tu_node(&f.e, "n1").status, COMMON__V1__NODE_STATUS__NODE_STATUS_READY);
    mc_engine_deinit(&f.e);
    /* A service that lives only on the node and fits nowhere else. */
    tu_engine_text(&f.e,
                   "[scenario]\nname = two\n"
                   "[node]\nid = a\ncpu_cores = 8\nmemory_mb = 8192\n"
                   "[node]\nid = b\ncpu_cores = 2\nmemory_mb = 8192\n"
                   "[service]\nid = big\nexternal_rps = 10\ncpu_ms_per_request = 10\n"
                   "cpu_cores_per_replica = 4\nreplicas = 1\n",
                   1);
    tu_step(&f.e, &f.ob);
    assert_int_equal(tu_node(&f.e, "a").replicas, 1);
    run_command(&f, AT(DRAIN_NODE), "a", "strand", 0, "would leave big without any replica");
    assert_int_equal(tu_node(&f.e, "a").replicas, 1);
    assert_int_equal(tu_service(&f.e, "big").ready_replicas, 1);
    mc_outbox_deinit(&f.ob);
    mc_engine_deinit(&f.e);
}

static void test_rebalance(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    uint32_t si;
    assert_int_equal(mc_engine_service_find(e, "edge-gateway", &si), MC_OK);
    /* Uneven shares before. */
    double lo = 10, hi = 0;
    for (size_t i = 0; i < mc_engine_replica_count(e); i++) {
        mc_engine_replica_view r;
        mc_engine_replica_get(e, i, &r);
        if (r.service != si)
            continue;
        lo = r.weight < lo ? r.weight : lo;
        hi = r.weight > hi ? r.weight : hi;
    }
    assert_true(hi - lo > 0.01);
    run_command(f, AT(REBALANCE_TRAFFIC), "edge-gateway", "b1", 1,
                "evened over 3 healthy replica(s)");
    double cpu_lo = 100, cpu_hi = 0;
    for (size_t i = 0; i < mc_engine_replica_count(e); i++) {
        mc_engine_replica_view r;
        mc_engine_replica_get(e, i, &r);
        if (r.service != si)
            continue;
        assert_true(r.weight == 1.0);
        cpu_lo = r.cpu_usage < cpu_lo ? r.cpu_usage : cpu_lo;
        cpu_hi = r.cpu_usage > cpu_hi ? r.cpu_usage : cpu_hi;
    }
    /* Equal shares on equal nodes: equal CPU. */
    assert_true(cpu_hi - cpu_lo < 0.5);
    /* Nothing to balance over while the only replica restarts. */
    tu_command(e, AT(RESTART_SERVICE), "notifications", "b2", mc_engine_tick(e));
    tu_step(e, &f->ob);
    run_command(f, AT(REBALANCE_TRAFFIC), "notifications", "b3", 0, "no healthy replica");
}

static void test_unknown_targets_and_types(void **state)
{
    fx *f = *state;
    run_command(f, AT(SCALE_UP), "ghost", "u1", 0, "no service named \"ghost\"");
    run_command(f, AT(RESTART_SERVICE), "node-1", "u2", 0, "no service named \"node-1\"");
    run_command(f, 77, "cart", "u3", 0, "unknown action type 77");
    run_command(f, AT(UNSPECIFIED), "cart", "u4", 0, "unknown action type 0");
    /* Ids too long are rejected when queued. */
    char long_id[300];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    Ops__V1__ApplyActionCommand cmd = OPS__V1__APPLY_ACTION_COMMAND__INIT;
    cmd.command_id = long_id;
    cmd.target_id = (char *)"cart";
    mc_error err;
    assert_int_equal(mc_engine_apply_command(&f->e, &cmd, &err), MC_ERR_INVALID);
}

/* Commands queued between steps apply at the next step in
 * (issued_at_tick, command_id) order, whatever order they arrived in. */
static void test_command_order(void **state)
{
    fx *f = *state;
    mc_engine *e = &f->e;
    tu_command(e, AT(SCALE_UP), "cart", "c-b", 5);
    tu_command(e, AT(SCALE_UP), "cart", "c-a", 5);
    tu_command(e, AT(SCALE_UP), "cart", "b-late", 6);
    tu_command(e, AT(SCALE_UP), "cart", "z-early", 4);
    /* Nothing happens before the step. */
    assert_int_equal(tu_service(e, "cart").desired_replicas, 2);
    tu_step(e, &f->ob);
    Sim__V1__SimulationEvent *evs[256];
    size_t n = tu_events(&f->ob, evs, 256);
    const char *want[] = {"z-early", "c-a", "c-b", "b-late"};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (evs[i]->kind != EV(COMMAND_APPLIED) && evs[i]->kind != EV(COMMAND_REFUSED))
            continue;
        assert_true(k < 4);
        assert_string_equal(evs[i]->command_id, want[k]);
        k++;
    }
    tu_events_free(evs, n);
    assert_int_equal(k, 4);
    assert_int_equal(tu_service(e, "cart").desired_replicas, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_restart_service, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scale_up, setup, teardown),
        cmocka_unit_test(test_scale_up_without_room),
        cmocka_unit_test_setup_teardown(test_scale_down, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_node, setup, teardown),
        cmocka_unit_test(test_drain_refusals),
        cmocka_unit_test_setup_teardown(test_rebalance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_targets_and_types, setup, teardown),
        cmocka_unit_test_setup_teardown(test_command_order, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
