/* The decider core: rule mapping, idempotency, cooldowns, escalation, no
 * repeat after refusal, every guardrail, determinism. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "core/ids.h"
#include "decider/decider.h"

#define RUN "run-dec"
#define ACT(a) COMMON__V1__ACTION_TYPE__ACTION_TYPE_##a
#define SEV(s) COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_##s
#define ST(s) OPS__V1__INCIDENT_STATE__INCIDENT_STATE_##s

typedef struct fixture {
    mc_decider d;
    mc_outbox out;
    uint64_t seq;
} fixture;

static fixture *fixture_cfg(const mc_decider_config *cfg)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    mc_error err;
    if (mc_decider_init(&f->d, cfg, &err) != MC_OK)
        fail_msg("init: %s", err.msg);
    assert_int_equal(mc_outbox_init(&f->out, 100000), MC_OK);
    return f;
}

/* Defaults, but no per-target cooldown unless a test wants one. */
static fixture *fixture_new(void)
{
    mc_decider_config cfg;
    mc_decider_config_default(&cfg);
    cfg.target_cooldown_ticks = 0;
    return fixture_cfg(&cfg);
}

static void fixture_free(fixture *f)
{
    mc_decider_deinit(&f->d);
    mc_outbox_deinit(&f->out);
    free(f);
}

typedef struct inc_spec {
    const char *id;
    const char *target;
    int node; /* a node target */
    const char *metric;
    const char *rule;
    int severity;
    int state;
    uint64_t opened;
    uint64_t updated;
    double value;
    uint64_t seq; /* the message's producer_seq; 0: the next one */
} inc_spec;

static void incident(fixture *f, inc_spec s)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    stamp.run_id = (char *)RUN;
    stamp.tick = s.updated;
    stamp.producer = (char *)"signal-service";
    stamp.producer_seq = s.seq ? s.seq : ++f->seq;
    m.stamp = &stamp;
    m.id = (char *)s.id;
    m.target_id = (char *)s.target;
    m.service_id = (char *)(s.node ? "" : s.target);
    m.node_id = (char *)(s.node ? s.target : "");
    m.metric_name = (char *)s.metric;
    m.rule_name = (char *)(s.rule ? s.rule : s.metric);
    m.severity = (Common__V1__IncidentSeverity)s.severity;
    m.state = (Ops__V1__IncidentState)(s.state ? s.state : ST(OPENED));
    m.opened_at_tick = s.opened;
    m.updated_at_tick = s.updated;
    m.resolved = m.state == ST(RESOLVED);
    m.resolved_at_tick = m.resolved ? s.updated : 0;
    m.observed_value = s.value;
    m.threshold = 1;
    mc_error err;
    if (mc_decider_on_incident(&f->d, &m, &f->out, &err) != MC_OK)
        fail_msg("on_incident: %s", err.msg);
}

static void event(fixture *f, uint64_t tick, int kind, const char *target, const char *action_id,
                  int node_status, const char *replicas, const char *max_replicas)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Sim__V1__SimulationEvent m = SIM__V1__SIMULATION_EVENT__INIT;
    Sim__V1__SimulationEvent__AttributesEntry e[2] = {
        SIM__V1__SIMULATION_EVENT__ATTRIBUTES_ENTRY__INIT,
        SIM__V1__SIMULATION_EVENT__ATTRIBUTES_ENTRY__INIT};
    Sim__V1__SimulationEvent__AttributesEntry *ep[2];
    size_t n = 0;
    if (replicas) {
        e[n].key = (char *)"replicas";
        e[n].value = (char *)replicas;
        ep[n] = &e[n];
        n++;
    }
    if (max_replicas) {
        e[n].key = (char *)"max_replicas";
        e[n].value = (char *)max_replicas;
        ep[n] = &e[n];
        n++;
    }
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    stamp.producer = (char *)"sim-engine";
    m.stamp = &stamp;
    m.kind = (Sim__V1__SimulationEventKind)kind;
    m.target_id = (char *)(target ? target : "");
    m.action_id = (char *)(action_id ? action_id : "");
    m.applied_at_tick = action_id ? tick : 0;
    m.node_status = (Common__V1__NodeStatus)node_status;
    m.n_attributes = n;
    m.attributes = ep;
    mc_error err;
    if (mc_decider_on_event(&f->d, &m, &f->out, &err) != MC_OK)
        fail_msg("on_event: %s", err.msg);
}

#define EV(k) SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_##k

static void node_ready(fixture *f, const char *node)
{
    event(f, 0, EV(NODE_STATUS_CHANGED), node, NULL, COMMON__V1__NODE_STATUS__NODE_STATUS_READY,
          NULL, NULL);
}

static void decision(fixture *f, uint64_t tick, const char *action_id, int approved, int source,
                     const char *reason)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__ApprovalDecision m = OPS__V1__APPROVAL_DECISION__INIT;
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    m.stamp = &stamp;
    m.action_id = (char *)action_id;
    m.approved = approved;
    m.source = (Ops__V1__DecisionSource)source;
    m.reason = (char *)reason;
    m.effective_tick = tick;
    mc_error err;
    assert_int_equal(mc_decider_on_decision(&f->d, &m, &f->out, &err), MC_OK);
}

/* Closes tick and returns the actions it proposed (caller frees). */
static size_t tick_end(fixture *f, uint64_t tick, Ops__V1__Action **acts, size_t cap)
{
    mc_outbox_clear(&f->out);
    mc_error err;
    if (mc_decider_on_tick_end(&f->d, tick, &f->out, &err) != MC_OK)
        fail_msg("tick end: %s", err.msg);
    size_t n = 0;
    uint32_t count = 0;
    for (size_t i = 0; i < f->out.len; i++) {
        const mc_outbox_msg *m = &f->out.items[i];
        if (strcmp(m->subject, "ops.watermark.agent") == 0) {
            Ops__V1__Watermark *wm = ops__v1__watermark__unpack(NULL, m->len, m->payload);
            assert_non_null(wm);
            assert_int_equal(wm->stage, COMMON__V1__STAGE__STAGE_AGENT);
            assert_int_equal(wm->tick, tick);
            count = wm->message_count;
            assert_int_equal(i, f->out.len - 1);
            ops__v1__watermark__free_unpacked(wm, NULL);
            continue;
        }
        assert_string_equal(m->subject, "ops.actions");
        Ops__V1__Action *a = ops__v1__action__unpack(NULL, m->len, m->payload);
        assert_non_null(a);
        if (acts && n < cap)
            acts[n++] = a;
        else {
            ops__v1__action__free_unpacked(a, NULL);
            n++;
        }
    }
    assert_int_equal(count, n);
    return n;
}

static void free_actions(Ops__V1__Action **a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        ops__v1__action__free_unpacked(a[i], NULL);
}

/* Ticks [from, to] and the number of actions they proposed. */
static size_t ticks(fixture *f, uint64_t from, uint64_t to)
{
    size_t n = 0;
    for (uint64_t t = from; t <= to; t++)
        n += tick_end(f, t, NULL, 0);
    return n;
}

static int has_note(const fixture *f, const char *guard, const char *incident_id)
{
    const mc_decider_note *notes;
    size_t n = mc_decider_notes(&f->d, &notes);
    int count = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(notes[i].guardrail, guard) == 0 &&
            (incident_id == NULL || strcmp(notes[i].incident_id, incident_id) == 0))
            count++;
    return count;
}

static void test_restart_proposal_fields(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    incident(f, (inc_spec){"inc-1", "checkout", 0, "error_rate", "error_rate_critical",
                           SEV(CRITICAL), 0, 10, 10, 14.5});
    Ops__V1__Action *a[4];
    size_t n = tick_end(f, 10, a, 4);
    assert_int_equal(n, 1);
    assert_int_equal(a[0]->action_type, ACT(RESTART_SERVICE));
    assert_int_equal(a[0]->status, COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING);
    assert_string_equal(a[0]->incident_id, "inc-1");
    assert_string_equal(a[0]->target_id, "checkout");
    assert_int_equal(a[0]->proposed_at_tick, 10);
    assert_int_equal(a[0]->expires_at_tick, 40);
    assert_int_equal(a[0]->escalation_level, 0);
    assert_non_null(strstr(a[0]->reason, "restart"));
    assert_non_null(strstr(a[0]->reason, "restart_on_critical_errors"));
    assert_non_null(strstr(a[0]->reason, "14.50"));
    assert_string_equal(a[0]->stamp->producer, "agent-service");
    assert_string_equal(a[0]->stamp->run_id, RUN);
    assert_int_equal(a[0]->stamp->producer_seq, 1);
    char want[MC_UUID_STR_LEN];
    mc_id_uuid(want, "action", RUN, 10, "checkout", "inc-1:RESTART_SERVICE");
    assert_string_equal(a[0]->id, want);
    free_actions(a, n);
    assert_int_equal(mc_decider_in_flight(&f->d), 1);
    fixture_free(f);
}

static int proposed_type(fixture *f, uint64_t tick)
{
    Ops__V1__Action *a[4];
    size_t n = tick_end(f, tick, a, 4);
    int type = n == 1 ? (int)a[0]->action_type : n == 0 ? 0 : -1;
    free_actions(a, n < 4 ? n : 4);
    return type;
}

static void test_rule_mapping(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    node_ready(f, "node-1");
    node_ready(f, "node-2");
    event(f, 0, EV(SERVICE_STATUS_CHANGED), "idle", NULL, 0, "3", NULL);
    /* A warning error rate alone: nothing. */
    incident(f, (inc_spec){"i0", "a", 0, "error_rate", "error_rate_high", SEV(WARNING), 0, 1, 1, 6});
    assert_int_equal(proposed_type(f, 1), 0);
    incident(f, (inc_spec){"i1", "b", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 2, 2, 90});
    assert_int_equal(proposed_type(f, 2), ACT(SCALE_UP));
    /* Latency with a hot CPU: capacity, SCALE_UP again, which the cooldown
     * of the scale-up proposed at tick 2 holds back (noted as SCALE_UP). */
    incident(f, (inc_spec){"i2", "b", 0, "p99_latency_ms", "latency_p99_high", SEV(WARNING), 0, 3,
                           3, 700});
    assert_int_equal(proposed_type(f, 3), 0);
    const mc_decider_note *notes;
    size_t nn = mc_decider_notes(&f->d, &notes);
    assert_int_equal(nn, 1);
    assert_string_equal(notes[0].incident_id, "i2");
    assert_string_equal(notes[0].guardrail, "cooldown");
    assert_int_equal(notes[0].action_type, ACT(SCALE_UP));
    /* Latency with a fine CPU: uneven load. */
    incident(f, (inc_spec){"i3", "c", 0, "p99_latency_ms", "latency_p99_high", SEV(WARNING), 0, 4,
                           4, 700});
    assert_int_equal(proposed_type(f, 4), ACT(REBALANCE_TRAFFIC));
    incident(f, (inc_spec){"i4", "idle", 0, "cpu_usage", "cpu_low", SEV(INFO), 0, 5, 5, 3});
    assert_int_equal(proposed_type(f, 5), ACT(SCALE_DOWN));
    incident(f, (inc_spec){"i5", "node-1", 1, "node_status", "node_degraded", SEV(ERROR), 0, 6, 6,
                           2});
    assert_int_equal(proposed_type(f, 6), ACT(DRAIN_NODE));
    incident(f, (inc_spec){"i6", "d", 0, "memory_usage", "memory_high", SEV(ERROR), 0, 7, 7, 95});
    assert_int_equal(proposed_type(f, 7), ACT(RESTART_SERVICE));
    fixture_free(f);
}

static void test_idempotent_under_updates_and_redelivery(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    inc_spec s = {"inc-1", "checkout", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                  10, 10, 20};
    incident(f, s);
    incident(f, s); /* redelivered before the tick end */
    assert_int_equal(tick_end(f, 10, NULL, 0), 1);
    /* Redelivered after, and updated many times: nothing new. */
    for (uint64_t t = 11; t < 60; t++) {
        incident(f, s);
        inc_spec u = s;
        u.state = ST(UPDATED);
        u.updated = t;
        u.value = 20 + (double)t;
        incident(f, u);
        incident(f, u);
        assert_int_equal(tick_end(f, t, NULL, 0), 0);
    }
    mc_decider_stats st;
    mc_decider_stats_get(&f->d, &st);
    assert_int_equal(st.actions_proposed, 1);
    assert_true(st.incidents_duplicate >= 50);
    /* Resolved, then a stale OPENED redelivered: it does not reopen. */
    inc_spec r = s;
    r.state = ST(RESOLVED);
    r.updated = 60;
    incident(f, r);
    incident(f, s);
    assert_int_equal(tick_end(f, 60, NULL, 0), 0);
    /* A redelivered watermark changes nothing. */
    uint8_t d1[32], d2[32];
    mc_decider_digest(&f->d, d1);
    mc_outbox_clear(&f->out);
    mc_error err;
    assert_int_equal(mc_decider_on_tick_end(&f->d, 60, &f->out, &err), MC_OK);
    assert_int_equal(f->out.len, 0);
    mc_decider_digest(&f->d, d2);
    assert_memory_equal(d1, d2, 32);
    fixture_free(f);
}

static void test_cooldowns(void **state)
{
    (void)state;
    /* Per (target, type): scale_up_on_cpu waits 15 ticks. */
    fixture *f = fixture_new();
    incident(f, (inc_spec){"c1", "svc", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 10, 10, 90});
    assert_int_equal(tick_end(f, 10, NULL, 0), 1);
    incident(f, (inc_spec){"c1", "svc", 0, "cpu_usage", "cpu_high", SEV(WARNING), ST(RESOLVED), 10,
                           11, 80});
    incident(f, (inc_spec){"c2", "svc", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 12, 12, 90});
    assert_int_equal(ticks(f, 11, 24), 0);
    assert_int_equal(has_note(f, "cooldown", "c2"), 1); /* noted once, not every tick */
    assert_int_equal(tick_end(f, 25, NULL, 0), 1);
    fixture_free(f);

    /* Per target: any action on it, then a rest of 5 ticks. */
    mc_decider_config cfg;
    mc_decider_config_default(&cfg);
    cfg.target_cooldown_ticks = 5;
    f = fixture_cfg(&cfg);
    incident(f, (inc_spec){"e1", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           10, 10, 30});
    assert_int_equal(tick_end(f, 10, NULL, 0), 1);
    incident(f, (inc_spec){"c1", "svc", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 11, 11, 90});
    assert_int_equal(ticks(f, 11, 14), 0);
    assert_int_equal(has_note(f, "target_cooldown", "c1"), 1);
    assert_int_equal(proposed_type(f, 15), ACT(SCALE_UP));
    fixture_free(f);
}

static void test_escalation(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    incident(f, (inc_spec){"inc", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           10, 10, 30});
    Ops__V1__Action *a[4];
    assert_int_equal(tick_end(f, 10, a, 4), 1);
    char restart_id[64];
    snprintf(restart_id, sizeof restart_id, "%s", a[0]->id);
    free_actions(a, 1);
    decision(f, 11, restart_id, 1, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY, "");
    assert_int_equal(ticks(f, 11, 11), 0);
    event(f, 12, EV(COMMAND_APPLIED), "svc", restart_id, 0, NULL, NULL);
    assert_int_equal(mc_decider_in_flight(&f->d), 1); /* recounted at tick end */
    assert_int_equal(ticks(f, 12, 21), 0);             /* 10 ticks to help */
    assert_int_equal(mc_decider_in_flight(&f->d), 0);
    size_t n = tick_end(f, 22, a, 4);
    assert_int_equal(n, 1);
    assert_int_equal(a[0]->action_type, ACT(SCALE_UP));
    assert_int_equal(a[0]->escalation_level, 1);
    assert_non_null(strstr(a[0]->reason, "Escalation"));
    assert_non_null(strstr(a[0]->reason, "tick 12"));
    free_actions(a, n);
    assert_int_equal(ticks(f, 23, 80), 0); /* once */
    fixture_free(f);

    /* Resolved in time: no escalation. */
    f = fixture_new();
    incident(f, (inc_spec){"inc", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           10, 10, 30});
    assert_int_equal(tick_end(f, 10, a, 4), 1);
    snprintf(restart_id, sizeof restart_id, "%s", a[0]->id);
    free_actions(a, 1);
    event(f, 12, EV(COMMAND_APPLIED), "svc", restart_id, 0, NULL, NULL);
    incident(f, (inc_spec){"inc", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL),
                           ST(RESOLVED), 10, 15, 1});
    assert_int_equal(ticks(f, 12, 40), 0);
    fixture_free(f);
}

static void test_no_repeat_after_refusal(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    incident(f, (inc_spec){"inc", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           10, 10, 30});
    Ops__V1__Action *a[4];
    assert_int_equal(tick_end(f, 10, a, 4), 1);
    char id[64];
    snprintf(id, sizeof id, "%s", a[0]->id);
    free_actions(a, 1);
    event(f, 11, EV(COMMAND_REFUSED), "svc", id, 0, NULL, NULL);
    event(f, 11, EV(COMMAND_REFUSED), "svc", id, 0, NULL, NULL); /* redelivered */
    assert_int_equal(ticks(f, 11, 100), 0); /* neither repeated nor escalated */
    assert_int_equal(has_note(f, "refused_before", "inc"), 1);
    /* A new incident on the same service may restart it again. */
    incident(f, (inc_spec){"inc2", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           101, 101, 30});
    assert_int_equal(proposed_type(f, 101), ACT(RESTART_SERVICE));
    fixture_free(f);
}

static void test_guardrail_max_in_flight(void **state)
{
    (void)state;
    mc_decider_config cfg;
    mc_decider_config_default(&cfg);
    cfg.max_in_flight = 2;
    cfg.target_cooldown_ticks = 0;
    fixture *f = fixture_cfg(&cfg);
    const char *svcs[] = {"s1", "s2", "s3"};
    const char *ids[] = {"i1", "i2", "i3"};
    for (int i = 0; i < 3; i++)
        incident(f, (inc_spec){ids[i], svcs[i], 0, "error_rate", "error_rate_critical",
                               SEV(CRITICAL), 0, 5, 5, 30});
    Ops__V1__Action *a[4];
    size_t n = tick_end(f, 5, a, 4);
    assert_int_equal(n, 2);
    assert_string_equal(a[0]->target_id, "s1"); /* target order */
    assert_string_equal(a[1]->target_id, "s2");
    char first[64];
    snprintf(first, sizeof first, "%s", a[0]->id);
    free_actions(a, n);
    assert_int_equal(has_note(f, "max_in_flight", "i3"), 1);
    assert_int_equal(ticks(f, 6, 8), 0);
    /* A person rejects one: room for the third. */
    decision(f, 9, first, 0, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN, "not now");
    n = tick_end(f, 9, a, 4);
    assert_int_equal(n, 1);
    assert_string_equal(a[0]->target_id, "s3");
    free_actions(a, n);
    /* The rejected one is not proposed again for that incident. */
    assert_int_equal(ticks(f, 10, 30), 0);
    fixture_free(f);
}

static void test_guardrail_last_ready_node(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    node_ready(f, "node-1");
    incident(f, (inc_spec){"n1", "node-1", 1, "node_status", "node_down", SEV(CRITICAL), 0, 3, 3,
                           3});
    assert_int_equal(ticks(f, 3, 5), 0);
    assert_int_equal(has_note(f, "last_ready_node", "n1"), 1);
    const mc_decider_note *notes;
    size_t nn = mc_decider_notes(&f->d, &notes);
    assert_true(nn >= 1);
    assert_non_null(strstr(notes[nn - 1].reason, "last ready node"));
    mc_decider_notes_clear(&f->d);
    assert_int_equal(mc_decider_notes(&f->d, &notes), 0);
    /* Another node reports ready: now node-1 can be drained. */
    node_ready(f, "node-2");
    assert_int_equal(proposed_type(f, 6), ACT(DRAIN_NODE));
    /* node-2 is now the only ready node besides node-1 (draining): an
     * incident on node-2 is held. */
    incident(f, (inc_spec){"n2", "node-2", 1, "memory_usage", "memory_high", SEV(ERROR), 0, 7, 7,
                           95});
    assert_int_equal(ticks(f, 7, 9), 0);
    assert_int_equal(has_note(f, "last_ready_node", "n2"), 1);
    fixture_free(f);
}

static void test_guardrail_replicas(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    /* Unknown replica count: no scale down. */
    incident(f, (inc_spec){"l1", "svc", 0, "cpu_usage", "cpu_low", SEV(INFO), 0, 1, 1, 2});
    assert_int_equal(ticks(f, 1, 2), 0);
    assert_int_equal(has_note(f, "replicas_unknown", "l1"), 1);
    /* One replica: never below one. */
    event(f, 3, EV(SERVICE_STATUS_CHANGED), "svc", NULL, 0, "1", NULL);
    assert_int_equal(ticks(f, 3, 4), 0);
    assert_int_equal(has_note(f, "min_replicas", "l1"), 1);
    /* Two: one fewer is fine. */
    event(f, 5, EV(REPLICA_STARTED), "svc", NULL, 0, "2", NULL);
    Ops__V1__Action *a[4];
    size_t n = tick_end(f, 5, a, 4);
    assert_int_equal(n, 1);
    assert_int_equal(a[0]->action_type, ACT(SCALE_DOWN));
    char down_id[64];
    snprintf(down_id, sizeof down_id, "%s", a[0]->id);
    free_actions(a, n);
    /* Applied: the decider counts 1 replica now, so a later low-CPU
     * incident is held at the minimum once the cooldown has passed. */
    event(f, 6, EV(COMMAND_APPLIED), "svc", down_id, 0, NULL, NULL);
    incident(f, (inc_spec){"l1", "svc", 0, "cpu_usage", "cpu_low", SEV(INFO), ST(RESOLVED), 1, 7,
                           5});
    incident(f, (inc_spec){"l2", "svc", 0, "cpu_usage", "cpu_low", SEV(INFO), 0, 8, 8, 2});
    assert_int_equal(ticks(f, 6, 80), 0);
    assert_int_equal(has_note(f, "cooldown", "l2"), 1);
    assert_int_equal(has_note(f, "min_replicas", "l2"), 1);
    fixture_free(f);

    /* At the maximum: no scale up; a higher reported maximum allows it. */
    f = fixture_new();
    event(f, 1, EV(SERVICE_STATUS_CHANGED), "hot", NULL, 0, "10", NULL);
    incident(f, (inc_spec){"h1", "hot", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 1, 1, 97});
    assert_int_equal(ticks(f, 1, 3), 0);
    assert_int_equal(has_note(f, "max_replicas", "h1"), 1);
    event(f, 4, EV(SERVICE_STATUS_CHANGED), "hot", NULL, 0, NULL, "12");
    assert_int_equal(proposed_type(f, 4), ACT(SCALE_UP));
    fixture_free(f);

    /* Pending scale-ups count toward the maximum: 9 replicas, one scale
     * up applied by the engine makes 10, the next one is held. */
    f = fixture_new();
    event(f, 1, EV(SERVICE_STATUS_CHANGED), "web", NULL, 0, "9", NULL);
    incident(f, (inc_spec){"w1", "web", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 1, 1, 97});
    n = tick_end(f, 1, a, 4);
    assert_int_equal(n, 1);
    char up_id[64];
    snprintf(up_id, sizeof up_id, "%s", a[0]->id);
    free_actions(a, n);
    event(f, 2, EV(COMMAND_APPLIED), "web", up_id, 0, NULL, NULL);
    incident(f, (inc_spec){"w2", "web", 0, "p99_latency_ms", "latency_p99_high", SEV(WARNING), 0,
                           2, 2, 900});
    assert_int_equal(ticks(f, 2, 40), 0);
    assert_int_equal(has_note(f, "max_replicas", "w2"), 1);
    fixture_free(f);
}

static void test_expiry_frees_in_flight(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    incident(f, (inc_spec){"inc", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           10, 10, 30});
    assert_int_equal(tick_end(f, 10, NULL, 0), 1);
    assert_int_equal(ticks(f, 11, 39), 0);
    assert_int_equal(mc_decider_in_flight(&f->d), 1);
    assert_int_equal(ticks(f, 40, 40), 0);
    assert_int_equal(mc_decider_in_flight(&f->d), 0);
    fixture_free(f);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    fixture *f = fixture_new();
    mc_error err;
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    assert_int_equal(mc_decider_on_incident(&f->d, &m, &f->out, &err), MC_ERR_INVALID);
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)RUN;
    m.stamp = &stamp;
    assert_int_equal(mc_decider_on_incident(&f->d, &m, &f->out, &err), MC_ERR_INVALID);
    stamp.run_id = (char *)"run-other";
    m.id = (char *)"x";
    m.target_id = (char *)"y";
    incident(f, (inc_spec){"a", "b", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, 1, 1, 90});
    assert_int_equal(mc_decider_on_incident(&f->d, &m, &f->out, &err), MC_ERR_STATE);
    event(f, 1, EV(COMMAND_APPLIED), "b", "no-such-action", 0, NULL, NULL);
    decision(f, 1, "no-such-action", 1, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN, "");
    mc_decider_stats st;
    mc_decider_stats_get(&f->d, &st);
    assert_int_equal(st.unknown_actions, 2);
    fixture_free(f);
}

static void test_max_incidents(void **state)
{
    (void)state;
    mc_decider_config cfg;
    mc_decider_config_default(&cfg);
    cfg.max_incidents = 4;
    fixture *f = fixture_cfg(&cfg);
    char id[16], tgt[16];
    for (int i = 0; i < 4; i++) {
        snprintf(id, sizeof id, "i%d", i);
        snprintf(tgt, sizeof tgt, "s%d", i);
        incident(f, (inc_spec){id, tgt, 0, "error_rate", "error_rate_high", SEV(WARNING), 0, 1, 1,
                               6});
    }
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    stamp.run_id = (char *)RUN;
    m.stamp = &stamp;
    m.id = (char *)"i9";
    m.target_id = (char *)"s9";
    mc_error err;
    assert_int_equal(mc_decider_on_incident(&f->d, &m, &f->out, &err), MC_ERR_LIMIT);
    /* Resolving one makes room (it has nothing in flight). */
    incident(f, (inc_spec){"i0", "s0", 0, "error_rate", "error_rate_high", SEV(WARNING),
                           ST(RESOLVED), 1, 2, 1});
    assert_int_equal(mc_decider_on_incident(&f->d, &m, &f->out, &err), MC_OK);
    fixture_free(f);
}

/* A scripted run; order 1 feeds each tick's inputs in reverse. */
static void scripted(fixture *f, int order, uint8_t digest[32])
{
    node_ready(f, "n1");
    node_ready(f, "n2");
    event(f, 0, EV(SERVICE_STATUS_CHANGED), "api", NULL, 0, "3", NULL);
    for (uint64_t t = 1; t <= 60; t++) {
        inc_spec in[3];
        size_t k = 0;
        if (t % 10 == 1) {
            char *id = malloc(16);
            assert_non_null(id);
            snprintf(id, 16, "e%llu", (unsigned long long)t);
            in[k++] = (inc_spec){id, "api", 0, "error_rate", "error_rate_critical", SEV(CRITICAL),
                                 0, t, t, 20};
        }
        /* Several incidents in one tick, fed in either order. */
        if (t == 11)
            in[k++] = (inc_spec){"c", "db", 0, "cpu_usage", "cpu_high", SEV(WARNING), 0, t, t, 90};
        if (t == 11)
            in[k++] = (inc_spec){"n", "n1", 1, "node_status", "node_down", SEV(CRITICAL), 0, t, t,
                                 3};
        if (t == 31)
            in[k++] = (inc_spec){"l", "api", 0, "cpu_usage", "cpu_low", SEV(INFO), 0, t, t, 2};
        for (size_t i = 0; i < k; i++)
            in[i].seq = t * 10 + i + 1; /* what the detector stamped */
        for (size_t i = 0; i < k; i++)
            incident(f, in[order ? k - 1 - i : i]);
        (void)tick_end(f, t, NULL, 0);
        for (size_t i = 0; i < k; i++)
            if (in[i].id[0] == 'e')
                free((char *)in[i].id);
    }
    mc_decider_digest(&f->d, digest);
}

static void test_determinism(void **state)
{
    (void)state;
    fixture *a = fixture_new(), *b = fixture_new();
    uint8_t da[32], db[32];
    /* Record every tick's outbox bytes of a and compare with b. */
    scripted(a, 0, da);
    scripted(b, 1, db);
    assert_memory_equal(da, db, 32);
    mc_decider_stats sa, sb;
    mc_decider_stats_get(&a->d, &sa);
    mc_decider_stats_get(&b->d, &sb);
    assert_true(sa.actions_proposed >= 4);
    assert_int_equal(sa.actions_proposed, sb.actions_proposed);
    assert_int_equal(sa.messages, sb.messages);
    /* And the same inputs twice give the same bytes for a fresh run. */
    fixture *c = fixture_new(), *e = fixture_new();
    node_ready(c, "n1");
    node_ready(e, "n1");
    incident(c, (inc_spec){"x", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           1, 1, 30});
    incident(e, (inc_spec){"x", "svc", 0, "error_rate", "error_rate_critical", SEV(CRITICAL), 0,
                           1, 1, 30});
    assert_int_equal(tick_end(c, 1, NULL, 0), 1);
    assert_int_equal(tick_end(e, 1, NULL, 0), 1);
    assert_int_equal(c->out.len, e->out.len);
    for (size_t i = 0; i < c->out.len; i++) {
        assert_int_equal(c->out.items[i].len, e->out.items[i].len);
        assert_memory_equal(c->out.items[i].payload, e->out.items[i].payload,
                            c->out.items[i].len);
    }
    mc_decider_digest(&c->d, da);
    mc_decider_digest(&e->d, db);
    assert_memory_equal(da, db, 32);
    fixture_free(a);
    fixture_free(b);
    fixture_free(c);
    fixture_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart_proposal_fields),
        cmocka_unit_test(test_rule_mapping),
        cmocka_unit_test(test_idempotent_under_updates_and_redelivery),
        cmocka_unit_test(test_cooldowns),
        cmocka_unit_test(test_escalation),
        cmocka_unit_test(test_no_repeat_after_refusal),
        cmocka_unit_test(test_guardrail_max_in_flight),
        cmocka_unit_test(test_guardrail_last_ready_node),
        cmocka_unit_test(test_guardrail_replicas),
        cmocka_unit_test(test_expiry_frees_in_flight),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_max_incidents),
        cmocka_unit_test(test_determinism),
    };
    return cmocka_run_group_tests_name("decider", tests, NULL, NULL);
}
