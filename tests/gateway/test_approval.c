/* gateway/approval: the approval workflow's pure core. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "approval/approval.h"
#include "core/ids.h"
#include "core/rng.h"

#define RUN "run-00000000000000aa"

#define ST_PENDING     COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING
#define ST_APPROVED    COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED
#define ST_REJECTED    COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED
#define ST_EXECUTED    COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED
#define ST_FAILED      COMMON__V1__ACTION_STATUS__ACTION_STATUS_FAILED
#define ST_EXPIRED     COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXPIRED
#define ST_SUPERSEDED  COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED
#define ST_UNSPECIFIED COMMON__V1__ACTION_STATUS__ACTION_STATUS_UNSPECIFIED

#define T_RESTART    COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE
#define T_SCALE_UP   COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP
#define T_SCALE_DOWN COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN
#define T_DRAIN      COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE
#define T_REBALANCE  COMMON__V1__ACTION_TYPE__ACTION_TYPE_REBALANCE_TRAFFIC

#define SRC_HUMAN  OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN
#define SRC_POLICY OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY
#define SRC_SYSTEM OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM

#define EV_APPLIED SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED
#define EV_REFUSED SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fx {
    mc_approval a;
    mc_outbox out;
    mc_error err;
} fx;

static void fx_init_cfg(fx *f, const mc_approval_config *cfg)
{
    memset(f, 0, sizeof *f);
    assert_int_equal(mc_approval_init(&f->a, cfg, &f->err), MC_OK);
    assert_int_equal(mc_outbox_init(&f->out, 1024), MC_OK);
}

static void fx_init(fx *f, mc_approval_mode mode, uint64_t expiry)
{
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.mode = mode;
    cfg.expiry_ticks = expiry;
    fx_init_cfg(f, &cfg);
}

static void fx_deinit(fx *f)
{
    mc_approval_deinit(&f->a);
    mc_outbox_deinit(&f->out);
}

static mc_status propose_full(fx *f, const char *id, const char *target, Common__V1__ActionType t,
                              uint64_t tick, const char *incident, uint64_t expires_at)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    stamp.producer = (char *)"agent-service";
    stamp.producer_seq = 1;
    Ops__V1__Action m = OPS__V1__ACTION__INIT;
    m.stamp = &stamp;
    m.id = (char *)id;
    m.incident_id = (char *)incident;
    m.action_type = t;
    m.target_id = (char *)target;
    m.status = ST_PENDING;
    m.reason = (char *)"because the test says so";
    m.proposed_at_tick = tick;
    m.expires_at_tick = expires_at;
    return mc_approval_on_action(&f->a, &m, &f->out, &f->err);
}

static mc_status propose(fx *f, const char *id, const char *target, Common__V1__ActionType t,
                         uint64_t tick)
{
    return propose_full(f, id, target, t, tick, "inc-1", 0);
}

static mc_status engine_event(fx *f, Sim__V1__SimulationEventKind kind, const char *action_id,
                              const char *command_id, uint64_t tick, const char *message)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    stamp.producer = (char *)"sim-engine";
    Sim__V1__SimulationEvent e = SIM__V1__SIMULATION_EVENT__INIT;
    e.stamp = &stamp;
    e.event_id = (char *)"ev";
    e.kind = kind;
    e.action_id = (char *)action_id;
    e.command_id = (char *)command_id;
    e.applied_at_tick = tick;
    e.message = (char *)message;
    return mc_approval_on_event(&f->a, &e, &f->out, &f->err);
}

static mc_status incident(fx *f, const char *id, Common__V1__IncidentSeverity sev,
                          const char *title, bool resolved, uint64_t tick)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)RUN;
    stamp.tick = tick;
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    m.stamp = &stamp;
    m.id = (char *)id;
    m.severity = sev;
    m.title = (char *)title;
    m.resolved = resolved;
    m.state = resolved ? OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED
                       : OPS__V1__INCIDENT_STATE__INCIDENT_STATE_OPENED;
    m.opened_at_tick = tick;
    return mc_approval_on_incident(&f->a, &m, &f->out, &f->err);
}

static mc_status approve(fx *f, const char *id, mc_approval_action *view)
{
    return mc_approval_on_human_decision(&f->a, id, true, "alice", "looks right", &f->out, view,
                                         &f->err);
}

static mc_status reject(fx *f, const char *id, mc_approval_action *view)
{
    return mc_approval_on_human_decision(&f->a, id, false, "bob", "too risky", &f->out, view,
                                         &f->err);
}

static Common__V1__ActionStatus status_of(fx *f, const char *id)
{
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f->a, id, &v, &f->err), MC_OK);
    return v.status;
}

static Ops__V1__ApprovalDecision *decision_at(fx *f, size_t i)
{
    assert_true(i < f->out.len);
    assert_string_equal(f->out.items[i].subject, "ops.decisions");
    Ops__V1__ApprovalDecision *d =
        ops__v1__approval_decision__unpack(NULL, f->out.items[i].len, f->out.items[i].payload);
    assert_non_null(d);
    return d;
}

static Ops__V1__ApplyActionCommand *command_at(fx *f, size_t i)
{
    assert_true(i < f->out.len);
    assert_string_equal(f->out.items[i].subject, "ops.commands");
    Ops__V1__ApplyActionCommand *c =
        ops__v1__apply_action_command__unpack(NULL, f->out.items[i].len, f->out.items[i].payload);
    assert_non_null(c);
    return c;
}

static Ops__V1__Watermark *watermark_at(fx *f, size_t i)
{
    assert_true(i < f->out.len);
    assert_string_equal(f->out.items[i].subject, "ops.watermark.orchestrator");
    Ops__V1__Watermark *w =
        ops__v1__watermark__unpack(NULL, f->out.items[i].len, f->out.items[i].payload);
    assert_non_null(w);
    return w;
}

static void check_stamp(const Common__V1__Stamp *s, uint64_t tick, uint64_t seq)
{
    assert_non_null(s);
    assert_string_equal(s->run_id, RUN);
    assert_string_equal(s->producer, "orchestrator");
    assert_int_equal(s->tick, tick);
    assert_int_equal(s->producer_seq, seq);
    assert_false(s->replayed);
}

/* ---- tests --------------------------------------------------------------- */

static void test_mode_parse(void **state)
{
    (void)state;
    mc_approval_mode m = MC_APPROVAL_MODE_AUTO;
    mc_error err;
    assert_int_equal(mc_approval_mode_parse("manual", &m, &err), MC_OK);
    assert_int_equal(m, MC_APPROVAL_MODE_MANUAL);
    assert_int_equal(mc_approval_mode_parse("auto", &m, &err), MC_OK);
    assert_int_equal(m, MC_APPROVAL_MODE_AUTO);
    assert_int_equal(mc_approval_mode_parse("auto-low-risk", &m, &err), MC_OK);
    assert_int_equal(m, MC_APPROVAL_MODE_AUTO_LOW_RISK);
    assert_int_equal(mc_approval_mode_parse("Auto", &m, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "APPROVAL_MODE=Auto"));
    assert_int_equal(mc_approval_mode_parse(NULL, &m, &err), MC_ERR_INVALID);
    assert_string_equal(mc_approval_mode_name(MC_APPROVAL_MODE_AUTO_LOW_RISK), "auto-low-risk");
}

static void test_init_rejects_bad_config(void **state)
{
    (void)state;
    mc_approval a;
    mc_error err;
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.mode = (mc_approval_mode)7;
    assert_int_equal(mc_approval_init(&a, &cfg, &err), MC_ERR_INVALID);
    mc_approval_config_default(&cfg);
    cfg.max_actions = 2000000;
    assert_int_equal(mc_approval_init(&a, &cfg, &err), MC_ERR_INVALID);
    mc_approval_config_default(&cfg);
    cfg.run_id = "run-0123456789012345678901234567890123456789012345678901234567890123";
    assert_int_equal(mc_approval_init(&a, &cfg, &err), MC_ERR_INVALID);
    mc_approval_deinit(&a);
    mc_approval_deinit(NULL);
}

static void test_proposal_is_pending_with_a_transition(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 3), MC_OK);
    assert_int_equal(f.out.len, 0); /* a proposal publishes nothing */

    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_int_equal(v.status, ST_PENDING);
    assert_string_equal(v.target_id, "svc-a");
    assert_int_equal(v.proposed_at_tick, 3);
    assert_int_equal(v.expires_at_tick, 13);
    assert_string_equal(v.decided_by, "");
    assert_string_equal(mc_approval_run_id(&f.a), RUN);

    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].action_id, "a1");
    assert_int_equal(t[0].from_status, ST_UNSPECIFIED);
    assert_int_equal(t[0].to_status, ST_PENDING);
    assert_string_equal(t[0].actor, "agent");
    assert_int_equal(t[0].tick, 3);

    Ops__V1__ActionHistoryEntry e;
    mc_approval_transition_to_proto(&t[0], &e);
    assert_string_equal(e.action_id, "a1");
    assert_int_equal(e.to_status, ST_PENDING);
    assert_int_equal(e.recorded_at_unix_ms, 0);

    Ops__V1__Action pm;
    mc_approval_action_to_proto(&v, &pm);
    assert_string_equal(pm.id, "a1");
    assert_int_equal(pm.status, ST_PENDING);
    assert_null(pm.stamp);
    uint8_t buf[2048];
    assert_true(ops__v1__action__get_packed_size(&pm) < sizeof buf);
    ops__v1__action__pack(&pm, buf);

    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    assert_int_equal(mc_approval_counts(&f.a, counts), 1);
    assert_int_equal(counts[ST_PENDING], 1);

    /* The redelivered proposal is harmless. */
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 3), MC_OK);
    mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 0);
    assert_int_equal(mc_approval_counts(&f.a, counts), 1);
    fx_deinit(&f);
}

static void test_bad_proposals_are_refused(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    Ops__V1__Action m = OPS__V1__ACTION__INIT;
    m.id = (char *)"x";
    m.target_id = (char *)"svc";
    m.action_type = T_RESTART;
    m.status = ST_PENDING;
    /* No stamp. */
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    assert_int_equal(mc_approval_on_action(&f.a, NULL, &f.out, &f.err), MC_ERR_INVALID);
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)RUN;
    m.stamp = &stamp;
    m.status = ST_APPROVED;
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    assert_non_null(strstr(f.err.msg, "APPROVED"));
    m.status = ST_PENDING;
    m.action_type = (Common__V1__ActionType)42;
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    m.action_type = T_RESTART;
    m.target_id = (char *)"";
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    m.target_id = (char *)"svc";
    char long_id[200];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    m.id = long_id;
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    m.id = (char *)"x";
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_OK);
    /* Another run is refused and says which. */
    stamp.run_id = (char *)"run-other";
    m.id = (char *)"y";
    assert_int_equal(mc_approval_on_action(&f.a, &m, &f.out, &f.err), MC_ERR_INVALID);
    assert_non_null(strstr(f.err.msg, "run-other"));
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    assert_int_equal(mc_approval_counts(&f.a, counts), 1);
    fx_deinit(&f);
}

static void test_human_approval_emits_decision_and_command(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    assert_int_equal(propose(&f, "a1", "svc-a", T_SCALE_UP, 5), MC_OK);
    assert_int_equal(mc_approval_open_tick(&f.a), 5);
    mc_approval_action v;
    assert_int_equal(approve(&f, "a1", &v), MC_OK);
    assert_int_equal(v.status, ST_APPROVED);
    assert_string_equal(v.decided_by, "alice");
    assert_int_equal(v.updated_at_tick, 5);
    assert_int_equal(f.out.len, 2);

    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    check_stamp(d->stamp, 5, 1);
    assert_string_equal(d->action_id, "a1");
    assert_true(d->approved);
    assert_int_equal(d->source, SRC_HUMAN);
    assert_string_equal(d->actor, "alice");
    assert_string_equal(d->reason, "looks right");
    assert_int_equal(d->effective_tick, 5);
    char id[MC_UUID_STR_LEN];
    mc_id_uuid(id, "decision", RUN, 5, "a1", "human");
    assert_string_equal(d->decision_id, id);
    assert_int_equal(f.out.items[0].producer_seq, 1);
    assert_int_equal(f.out.items[0].tick, 5);
    ops__v1__approval_decision__free_unpacked(d, NULL);

    Ops__V1__ApplyActionCommand *c = command_at(&f, 1);
    check_stamp(c->stamp, 5, 2);
    mc_id_uuid(id, "command", RUN, 5, "svc-a", "a1");
    assert_string_equal(c->command_id, id);
    assert_string_equal(v.command_id, id);
    assert_string_equal(c->action_id, "a1");
    assert_int_equal(c->action_type, T_SCALE_UP);
    assert_string_equal(c->target_id, "svc-a");
    assert_int_equal(c->issued_at_tick, 5);
    assert_int_equal(c->n_parameters, 1);
    assert_string_equal(c->parameters[0]->key, "replica_delta");
    assert_string_equal(c->parameters[0]->value, "1");
    ops__v1__apply_action_command__free_unpacked(c, NULL);

    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].from_status, ST_PENDING);
    assert_int_equal(t[0].to_status, ST_APPROVED);
    assert_string_equal(t[0].actor, "alice");
    assert_string_equal(t[0].reason, "looks right");
    assert_int_equal(t[0].tick, 5);
    assert_int_equal(mc_approval_next_seq(&f.a), 3);
    fx_deinit(&f);
}

static void test_command_parameters_per_type(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_SCALE_DOWN, 1), MC_OK);
    assert_int_equal(propose(&f, "a2", "svc-b", T_RESTART, 1), MC_OK);
    assert_int_equal(approve(&f, "a1", NULL), MC_OK);
    assert_int_equal(approve(&f, "a2", NULL), MC_OK);
    Ops__V1__ApplyActionCommand *c = command_at(&f, 1);
    assert_int_equal(c->n_parameters, 1);
    assert_string_equal(c->parameters[0]->value, "-1");
    ops__v1__apply_action_command__free_unpacked(c, NULL);
    c = command_at(&f, 3);
    assert_int_equal(c->action_type, T_RESTART);
    assert_int_equal(c->n_parameters, 0);
    ops__v1__apply_action_command__free_unpacked(c, NULL);
    fx_deinit(&f);
}

static void test_human_rejection(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    assert_int_equal(propose(&f, "a1", "node-1", T_DRAIN, 2), MC_OK);
    mc_approval_action v;
    /* A rejection needs a reason and everything needs an actor. */
    assert_int_equal(
        mc_approval_on_human_decision(&f.a, "a1", false, "bob", "", &f.out, &v, &f.err),
        MC_ERR_INVALID);
    assert_int_equal(mc_approval_on_human_decision(&f.a, "a1", true, "", "x", &f.out, &v, &f.err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_approval_on_human_decision(&f.a, "a1", true, NULL, "x", &f.out, &v, &f.err),
                     MC_ERR_INVALID);
    assert_int_equal(f.out.len, 0);
    assert_int_equal(status_of(&f, "a1"), ST_PENDING);

    assert_int_equal(reject(&f, "a1", &v), MC_OK);
    assert_int_equal(v.status, ST_REJECTED);
    assert_string_equal(v.status_reason, "too risky");
    assert_int_equal(f.out.len, 1);
    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    assert_false(d->approved);
    assert_int_equal(d->source, SRC_HUMAN);
    assert_string_equal(d->actor, "bob");
    assert_string_equal(d->reason, "too risky");
    ops__v1__approval_decision__free_unpacked(d, NULL);
    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].to_status, ST_REJECTED);
    fx_deinit(&f);
}

/* Both approve and reject of an action in status `want` are refused with
 * MC_ERR_STATE naming it, change nothing and publish nothing. */
static void expect_refused(fx *f, const char *id, Common__V1__ActionStatus want)
{
    size_t before = f->out.len;
    uint64_t seq = mc_approval_next_seq(&f->a);
    uint8_t d0[MC_DIGEST_BYTES], d1[MC_DIGEST_BYTES];
    mc_approval_digest(&f->a, d0);
    mc_approval_action v;
    memset(&v, 0, sizeof v);
    assert_int_equal(approve(f, id, &v), MC_ERR_STATE);
    assert_int_equal(v.status, want);
    assert_non_null(strstr(f->err.msg, mc_approval_status_name(want)));
    memset(&v, 0, sizeof v);
    assert_int_equal(reject(f, id, &v), MC_ERR_STATE);
    assert_int_equal(v.status, want);
    assert_int_equal(f->out.len, before);
    assert_int_equal(mc_approval_next_seq(&f->a), seq);
    mc_approval_digest(&f->a, d1);
    assert_memory_equal(d0, d1, MC_DIGEST_BYTES);
    size_t n = 1;
    mc_approval_transitions(&f->a, &n);
    assert_int_equal(n, 0);
}

static void test_refused_transitions(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 3);
    assert_int_equal(propose(&f, "approved", "t1", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "rejected", "t2", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "executed", "t3", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "failed", "t4", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "expired", "t5", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "superseded", "t6", T_RESTART, 1), MC_OK);
    assert_int_equal(approve(&f, "approved", NULL), MC_OK);
    assert_int_equal(reject(&f, "rejected", NULL), MC_OK);
    assert_int_equal(approve(&f, "executed", NULL), MC_OK);
    assert_int_equal(approve(&f, "failed", NULL), MC_OK);
    assert_int_equal(propose(&f, "newer", "t6", T_SCALE_UP, 2), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    mc_approval_action ve, vf;
    assert_int_equal(mc_approval_get(&f.a, "executed", &ve, &f.err), MC_OK);
    assert_int_equal(mc_approval_get(&f.a, "failed", &vf, &f.err), MC_OK);
    assert_int_equal(engine_event(&f, EV_APPLIED, "executed", ve.command_id, 2, ""), MC_OK);
    assert_int_equal(engine_event(&f, EV_REFUSED, "failed", vf.command_id, 2, "no capacity"),
                     MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 2, &f.out, &f.err), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 4, &f.out, &f.err), MC_OK);

    expect_refused(&f, "approved", ST_APPROVED);
    expect_refused(&f, "rejected", ST_REJECTED);
    expect_refused(&f, "executed", ST_EXECUTED);
    expect_refused(&f, "failed", ST_FAILED);
    expect_refused(&f, "expired", ST_EXPIRED);
    expect_refused(&f, "superseded", ST_SUPERSEDED);

    mc_approval_action v;
    assert_int_equal(approve(&f, "nope", &v), MC_ERR_NOT_FOUND);
    assert_int_equal(reject(&f, "nope", &v), MC_ERR_NOT_FOUND);
    assert_int_equal(mc_approval_get(&f.a, "nope", &v, &f.err), MC_ERR_NOT_FOUND);
    fx_deinit(&f);
}

static void test_two_approvals_one_command(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(approve(&f, "a1", NULL), MC_OK);
    mc_approval_action v;
    assert_int_equal(
        mc_approval_on_human_decision(&f.a, "a1", true, "carol", "me too", &f.out, &v, &f.err),
        MC_ERR_STATE);
    assert_int_equal(v.status, ST_APPROVED);
    assert_string_equal(v.decided_by, "alice");
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    size_t commands = 0;
    for (size_t i = 0; i < f.out.len; i++)
        commands += strcmp(f.out.items[i].subject, "ops.commands") == 0;
    assert_int_equal(commands, 1);
    fx_deinit(&f);
}

static void test_expiry_exactly_at_configured_tick(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 5);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 10), MC_OK);
    /* The agent asks for an earlier deadline on a2: it wins. */
    assert_int_equal(propose_full(&f, "a2", "svc-b", T_RESTART, 10, "inc-1", 12), MC_OK);
    /* A later one than the configured window does not extend it. */
    assert_int_equal(propose_full(&f, "a3", "svc-c", T_RESTART, 10, "inc-1", 99), MC_OK);
    for (uint64_t t = 10; t < 15; t++) {
        assert_int_equal(mc_approval_on_tick_end(&f.a, t, &f.out, &f.err), MC_OK);
        assert_int_equal(status_of(&f, "a1"), ST_PENDING);
        assert_int_equal(status_of(&f, "a2"), t >= 12 ? ST_EXPIRED : ST_PENDING);
    }
    mc_outbox_clear(&f.out);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 15, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_EXPIRED);
    assert_int_equal(status_of(&f, "a3"), ST_EXPIRED);
    /* Two SYSTEM decisions by (proposed_at_tick, id), then the watermark. */
    assert_int_equal(f.out.len, 3);
    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    assert_string_equal(d->action_id, "a1");
    assert_false(d->approved);
    assert_int_equal(d->source, SRC_SYSTEM);
    assert_string_equal(d->actor, "system");
    assert_int_equal(d->effective_tick, 15);
    assert_string_equal(d->reason, "no decision by tick 15");
    ops__v1__approval_decision__free_unpacked(d, NULL);
    d = decision_at(&f, 1);
    assert_string_equal(d->action_id, "a3");
    ops__v1__approval_decision__free_unpacked(d, NULL);
    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 2);
    assert_int_equal(t[0].from_status, ST_PENDING);
    assert_int_equal(t[0].to_status, ST_EXPIRED);
    assert_string_equal(t[0].actor, "system");
    assert_int_equal(t[0].tick, 15);
    fx_deinit(&f);
}

static void test_no_expiry_when_zero(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1000000, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_PENDING);
    fx_deinit(&f);
}

static void test_human_approval_beats_expiry_in_the_same_tick(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 2);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    assert_int_equal(mc_approval_open_tick(&f.a), 2);
    assert_int_equal(approve(&f, "a1", NULL), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 2, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_APPROVED);
    fx_deinit(&f);
}

static void test_open_tick_before_first_close(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 5);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 7), MC_OK);
    assert_int_equal(mc_approval_open_tick(&f.a), 7);
    /* A later input of a lower tick does not move it. */
    assert_int_equal(propose(&f, "a2", "svc-b", T_RESTART, 6), MC_OK);
    assert_int_equal(mc_approval_open_tick(&f.a), 7);
    assert_int_equal(approve(&f, "a2", NULL), MC_OK);
    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    assert_int_equal(d->effective_tick, 7);
    check_stamp(d->stamp, 7, 1);
    ops__v1__approval_decision__free_unpacked(d, NULL);
    fx_deinit(&f);
}

static void test_expiry_saturates(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 5);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, UINT64_MAX - 1), MC_OK);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_true(v.expires_at_tick == UINT64_MAX);
    assert_int_equal(mc_approval_on_tick_end(&f.a, UINT64_MAX - 1, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_PENDING);
    fx_deinit(&f);
}

static void test_supersession(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 10);
    assert_int_equal(propose(&f, "old", "svc-a", T_RESTART, 3), MC_OK);
    assert_int_equal(propose(&f, "other", "svc-b", T_RESTART, 3), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 3, &f.out, &f.err), MC_OK);
    mc_outbox_clear(&f.out);

    assert_int_equal(propose(&f, "new", "svc-a", T_SCALE_UP, 4), MC_OK);
    assert_int_equal(status_of(&f, "old"), ST_SUPERSEDED);
    assert_int_equal(status_of(&f, "other"), ST_PENDING);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "new", &v, &f.err), MC_OK);
    assert_int_equal(v.status, ST_PENDING);
    assert_string_equal(v.supersedes_action_id, "old");
    assert_int_equal(mc_approval_get(&f.a, "old", &v, &f.err), MC_OK);
    assert_string_equal(v.status_reason, "superseded by action new");
    assert_string_equal(v.decided_by, "system");

    /* Emitted at once as a SYSTEM decision stamped with the open tick. */
    assert_int_equal(f.out.len, 1);
    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    check_stamp(d->stamp, 4, 2);
    assert_string_equal(d->action_id, "old");
    assert_false(d->approved);
    assert_int_equal(d->source, SRC_SYSTEM);
    assert_int_equal(d->effective_tick, 4);
    ops__v1__approval_decision__free_unpacked(d, NULL);

    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].action_id, "new");
    assert_int_equal(t[0].to_status, ST_PENDING);
    assert_string_equal(t[1].action_id, "old");
    assert_int_equal(t[1].from_status, ST_PENDING);
    assert_int_equal(t[1].to_status, ST_SUPERSEDED);

    /* An approved action is not replaced by a newer proposal. */
    assert_int_equal(approve(&f, "new", NULL), MC_OK);
    mc_outbox_clear(&f.out);
    assert_int_equal(propose(&f, "newest", "svc-a", T_RESTART, 5), MC_OK);
    assert_int_equal(f.out.len, 0);
    assert_int_equal(status_of(&f, "new"), ST_APPROVED);
    assert_int_equal(status_of(&f, "newest"), ST_PENDING);

    /* A proposal that arrives after a newer pending one for its target is
     * superseded by it on arrival. */
    assert_int_equal(propose(&f, "late", "svc-a", T_RESTART, 4), MC_OK);
    assert_int_equal(status_of(&f, "late"), ST_SUPERSEDED);
    assert_int_equal(status_of(&f, "newest"), ST_PENDING);
    assert_int_equal(mc_approval_get(&f.a, "late", &v, &f.err), MC_OK);
    assert_string_equal(v.status_reason, "superseded by newer action newest");
    assert_int_equal(f.out.len, 1);
    d = decision_at(&f, 0);
    assert_string_equal(d->action_id, "late");
    assert_int_equal(d->source, SRC_SYSTEM);
    ops__v1__approval_decision__free_unpacked(d, NULL);
    t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 2);
    assert_int_equal(t[1].to_status, ST_SUPERSEDED);
    fx_deinit(&f);
}

static void test_mode_manual_waits(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    for (uint64_t t = 1; t <= 5; t++)
        assert_int_equal(mc_approval_on_tick_end(&f.a, t, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_PENDING);
    for (size_t i = 0; i < f.out.len; i++)
        assert_string_equal(f.out.items[i].subject, "ops.watermark.orchestrator");
    fx_deinit(&f);
}

static void test_mode_auto_approves_everything_at_tick_end(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_AUTO, 10);
    assert_int_equal(propose(&f, "b", "node-1", T_DRAIN, 7), MC_OK);
    assert_int_equal(propose(&f, "a", "svc-a", T_SCALE_DOWN, 7), MC_OK);
    /* Nothing happens before the tick ends. */
    assert_int_equal(f.out.len, 0);
    assert_int_equal(status_of(&f, "a"), ST_PENDING);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 7, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a"), ST_APPROVED);
    assert_int_equal(status_of(&f, "b"), ST_APPROVED);
    assert_int_equal(f.out.len, 5);
    /* In (proposed_at_tick, id) order: a before b. */
    const char *ids[] = {"a", "b"};
    for (size_t i = 0; i < 2; i++) {
        Ops__V1__ApprovalDecision *d = decision_at(&f, 2 * i);
        check_stamp(d->stamp, 7, 2 * i + 1);
        assert_string_equal(d->action_id, ids[i]);
        assert_true(d->approved);
        assert_int_equal(d->source, SRC_POLICY);
        assert_string_equal(d->actor, "policy:auto");
        assert_int_equal(d->effective_tick, 7);
        ops__v1__approval_decision__free_unpacked(d, NULL);
        Ops__V1__ApplyActionCommand *c = command_at(&f, 2 * i + 1);
        check_stamp(c->stamp, 7, 2 * i + 2);
        assert_string_equal(c->action_id, ids[i]);
        assert_int_equal(c->issued_at_tick, 7);
        ops__v1__apply_action_command__free_unpacked(c, NULL);
    }
    Ops__V1__Watermark *w = watermark_at(&f, 4);
    assert_int_equal(w->message_count, 4);
    ops__v1__watermark__free_unpacked(w, NULL);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a", &v, &f.err), MC_OK);
    assert_string_equal(v.decided_by, "policy:auto");
    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].actor, "policy:auto");
    assert_int_equal(t[0].to_status, ST_APPROVED);
    fx_deinit(&f);
}

static void test_mode_auto_low_risk(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_AUTO_LOW_RISK, 0);
    assert_int_equal(propose(&f, "restart", "t1", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "up", "t2", T_SCALE_UP, 1), MC_OK);
    assert_int_equal(propose(&f, "rebalance", "t3", T_REBALANCE, 1), MC_OK);
    assert_int_equal(propose(&f, "drain", "t4", T_DRAIN, 1), MC_OK);
    assert_int_equal(propose(&f, "down", "t5", T_SCALE_DOWN, 1), MC_OK);
    for (uint64_t t = 1; t <= 3; t++)
        assert_int_equal(mc_approval_on_tick_end(&f.a, t, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "restart"), ST_APPROVED);
    assert_int_equal(status_of(&f, "up"), ST_APPROVED);
    assert_int_equal(status_of(&f, "rebalance"), ST_APPROVED);
    assert_int_equal(status_of(&f, "drain"), ST_PENDING);
    assert_int_equal(status_of(&f, "down"), ST_PENDING);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "up", &v, &f.err), MC_OK);
    assert_string_equal(v.decided_by, "policy:auto-low-risk");
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    assert_int_equal(mc_approval_counts(&f.a, counts), 5);
    assert_int_equal(counts[ST_APPROVED], 3);
    assert_int_equal(counts[ST_PENDING], 2);
    /* 3 decisions + 3 commands + 3 watermarks. */
    assert_int_equal(f.out.len, 9);
    /* A person can still decide the ones that wait. */
    assert_int_equal(approve(&f, "drain", NULL), MC_OK);
    assert_int_equal(status_of(&f, "drain"), ST_APPROVED);
    fx_deinit(&f);
}

static void test_engine_events(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "a2", "svc-b", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "a3", "svc-c", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "pending", "svc-d", T_RESTART, 1), MC_OK);
    mc_approval_action v1, v2, v3;
    assert_int_equal(approve(&f, "a1", &v1), MC_OK);
    assert_int_equal(approve(&f, "a2", &v2), MC_OK);
    assert_int_equal(approve(&f, "a3", &v3), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    size_t before = f.out.len;

    /* Other kinds are ignored outright. */
    assert_int_equal(engine_event(&f, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_PAUSED,
                                  "a1", v1.command_id, 2, ""),
                     MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_APPROVED);
    /* A command id that is not the action's: ignored. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "a1", "bogus", 2, ""), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_APPROVED);
    /* Another action's command: ignored. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "a1", v2.command_id, 2, ""), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_APPROVED);
    /* An event for a pending action: ignored. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "pending", "c-1", 2, ""), MC_OK);
    assert_int_equal(status_of(&f, "pending"), ST_PENDING);
    /* Unknown action or command: ignored. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "ghost", "c-1", 2, ""), MC_OK);
    assert_int_equal(engine_event(&f, EV_APPLIED, "", "c-1", 2, ""), MC_OK);
    /* Without a command id: a malformed event, even with a good action id. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "a1", "", 2, ""), MC_ERR_INVALID);
    assert_int_equal(engine_event(&f, EV_APPLIED, "", "", 2, ""), MC_ERR_INVALID);
    assert_int_equal(status_of(&f, "a1"), ST_APPROVED);

    assert_int_equal(engine_event(&f, EV_APPLIED, "a1", v1.command_id, 2, ""), MC_OK);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_int_equal(v.status, ST_EXECUTED);
    assert_int_equal(v.updated_at_tick, 2);
    assert_string_equal(v.status_reason, "applied at tick 2");
    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 1);
    assert_int_equal(t[0].from_status, ST_APPROVED);
    assert_int_equal(t[0].to_status, ST_EXECUTED);
    assert_string_equal(t[0].actor, "engine");
    assert_int_equal(t[0].tick, 2);

    assert_int_equal(engine_event(&f, EV_REFUSED, "a2", v2.command_id, 2, "no node has capacity"),
                     MC_OK);
    assert_int_equal(mc_approval_get(&f.a, "a2", &v, &f.err), MC_OK);
    assert_int_equal(v.status, ST_FAILED);
    assert_string_equal(v.status_reason, "no node has capacity");

    /* Matched by command id alone. */
    assert_int_equal(engine_event(&f, EV_APPLIED, "", v3.command_id, 2, ""), MC_OK);
    assert_int_equal(status_of(&f, "a3"), ST_EXECUTED);

    /* A duplicate changes nothing. */
    assert_int_equal(engine_event(&f, EV_REFUSED, "a1", v1.command_id, 3, "late"), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_EXECUTED);
    mc_approval_transitions(&f.a, &n);
    assert_int_equal(n, 0);
    /* Engine events publish nothing. */
    assert_int_equal(f.out.len, before);
    fx_deinit(&f);
}

static void test_watermarks_count_messages(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_AUTO, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "a2", "svc-b", T_RESTART, 1), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    assert_int_equal(f.out.len, 5);
    Ops__V1__Watermark *w = watermark_at(&f, 4);
    check_stamp(w->stamp, 1, 5);
    assert_int_equal(w->stage, COMMON__V1__STAGE__STAGE_ORCHESTRATOR);
    assert_int_equal(w->tick, 1);
    assert_int_equal(w->message_count, 4);
    ops__v1__watermark__free_unpacked(w, NULL);
    uint64_t last = 0;
    assert_true(mc_approval_last_closed_tick(&f.a, &last));
    assert_int_equal(last, 1);

    /* An empty tick: count 0. */
    mc_outbox_clear(&f.out);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 2, &f.out, &f.err), MC_OK);
    assert_int_equal(f.out.len, 1);
    w = watermark_at(&f, 0);
    assert_int_equal(w->message_count, 0);
    assert_int_equal(w->tick, 2);
    check_stamp(w->stamp, 2, 6);
    ops__v1__watermark__free_unpacked(w, NULL);

    /* A supersession and a human decision during tick 3 count in its
     * watermark along with the policy's messages. */
    mc_outbox_clear(&f.out);
    assert_int_equal(propose(&f, "b1", "svc-c", T_DRAIN, 3), MC_OK);
    assert_int_equal(reject(&f, "b1", NULL), MC_OK);
    assert_int_equal(propose(&f, "b2", "svc-d", T_DRAIN, 3), MC_OK);
    assert_int_equal(propose(&f, "b3", "svc-d", T_DRAIN, 3), MC_OK); /* supersedes b2 */
    assert_int_equal(mc_approval_on_tick_end(&f.a, 3, &f.out, &f.err), MC_OK);
    /* reject(1) + supersede(1) + policy approval of b3 (2) + watermark */
    assert_int_equal(f.out.len, 5);
    w = watermark_at(&f, 4);
    assert_int_equal(w->message_count, 4);
    ops__v1__watermark__free_unpacked(w, NULL);
    for (size_t i = 0; i < f.out.len; i++)
        assert_int_equal(f.out.items[i].tick, 3);

    /* A closed tick cannot be closed again. */
    assert_int_equal(mc_approval_on_tick_end(&f.a, 3, &f.out, &f.err), MC_ERR_STATE);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 2, &f.out, &f.err), MC_ERR_STATE);
    /* A gap is allowed. */
    assert_int_equal(mc_approval_on_tick_end(&f.a, 10, &f.out, &f.err), MC_OK);
    assert_int_equal(mc_approval_open_tick(&f.a), 11);
    fx_deinit(&f);
}

static void test_first_tick_end_with_no_input(void **state)
{
    (void)state;
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.run_id = RUN;
    fx f;
    fx_init_cfg(&f, &cfg);
    assert_false(mc_approval_last_closed_tick(&f.a, NULL));
    assert_int_equal(mc_approval_open_tick(&f.a), 0);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 0, &f.out, &f.err), MC_OK);
    Ops__V1__Watermark *w = watermark_at(&f, 0);
    check_stamp(w->stamp, 0, 1);
    assert_int_equal(w->message_count, 0);
    ops__v1__watermark__free_unpacked(w, NULL);
    fx_deinit(&f);
}

static void test_outbox_full_changes_nothing(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_AUTO, 0);
    mc_outbox_deinit(&f.out);
    assert_int_equal(mc_outbox_init(&f.out, 1), MC_OK);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    uint8_t d0[MC_DIGEST_BYTES], d1[MC_DIGEST_BYTES];
    mc_approval_digest(&f.a, d0);
    assert_int_equal(approve(&f, "a1", NULL), MC_ERR_LIMIT);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_ERR_LIMIT);
    mc_approval_digest(&f.a, d1);
    assert_memory_equal(d0, d1, MC_DIGEST_BYTES);
    assert_int_equal(status_of(&f, "a1"), ST_PENDING);
    assert_int_equal(f.out.len, 0);
    assert_int_equal(mc_approval_next_seq(&f.a), 1);
    /* Room for the decision alone is not enough: the command goes too. */
    mc_outbox_deinit(&f.out);
    assert_int_equal(mc_outbox_init(&f.out, 2), MC_OK);
    assert_int_equal(approve(&f, "a1", NULL), MC_OK);
    assert_int_equal(f.out.len, 2);
    fx_deinit(&f);
}

static void test_list_pending_with_cursor(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    /* Arrival order differs from the canonical order on purpose. */
    assert_int_equal(propose(&f, "e", "t5", T_RESTART, 9), MC_OK);
    assert_int_equal(propose(&f, "b", "t2", T_RESTART, 2), MC_OK);
    assert_int_equal(propose(&f, "a", "t1", T_RESTART, 2), MC_OK);
    assert_int_equal(propose(&f, "d", "t4", T_RESTART, 5), MC_OK);
    assert_int_equal(propose(&f, "c", "t3", T_RESTART, 3), MC_OK);
    assert_int_equal(propose(&f, "z", "t6", T_RESTART, 1), MC_OK);
    assert_int_equal(reject(&f, "z", NULL), MC_OK);

    mc_approval_action page[2];
    size_t n = 0;
    char cursor[MC_APPROVAL_CURSOR_MAX];
    const char *want[] = {"a", "b", "c", "d", "e"};
    size_t seen = 0;
    char token[MC_APPROVAL_CURSOR_MAX] = "";
    for (int pages = 0; pages < 10; pages++) {
        assert_int_equal(mc_approval_list_pending(&f.a, token, page, 2, &n, cursor, &f.err), MC_OK);
        for (size_t i = 0; i < n; i++) {
            assert_true(seen < 5);
            assert_string_equal(page[i].id, want[seen]);
            assert_int_equal(page[i].status, ST_PENDING);
            seen++;
        }
        if (cursor[0] == '\0')
            break;
        memcpy(token, cursor, sizeof token);
    }
    assert_int_equal(seen, 5);

    /* The first page and its cursor. */
    assert_int_equal(mc_approval_list_pending(&f.a, NULL, page, 2, &n, cursor, &f.err), MC_OK);
    assert_int_equal(n, 2);
    assert_string_equal(cursor, "2/b");
    /* Exactly one page: no cursor. */
    mc_approval_action all[8];
    assert_int_equal(mc_approval_list_pending(&f.a, "", all, 5, &n, cursor, &f.err), MC_OK);
    assert_int_equal(n, 5);
    assert_string_equal(cursor, "");
    /* Every status. */
    assert_int_equal(mc_approval_list(&f.a, 0, NULL, all, 8, &n, cursor, &f.err), MC_OK);
    assert_int_equal(n, 6);
    assert_string_equal(all[0].id, "z");
    /* Only rejected ones. */
    assert_int_equal(mc_approval_list(&f.a, 1u << ST_REJECTED, NULL, all, 8, &n, cursor, &f.err),
                     MC_OK);
    assert_int_equal(n, 1);

    const char *bad[] = {"x", "/a", "12", "12/", "1a/b", "99999999999999999999999/a"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mc_approval_list_pending(&f.a, bad[i], page, 2, &n, cursor, &f.err),
                         MC_ERR_INVALID);
    assert_int_equal(mc_approval_list_pending(&f.a, NULL, page, 0, &n, cursor, &f.err),
                     MC_ERR_INVALID);
    fx_deinit(&f);
}

static void test_bounded_eviction(void **state)
{
    (void)state;
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.max_actions = 3;
    cfg.expiry_ticks = 0;
    fx f;
    fx_init_cfg(&f, &cfg);
    assert_int_equal(propose(&f, "p1", "t1", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "r1", "t2", T_RESTART, 2), MC_OK);
    assert_int_equal(propose(&f, "r2", "t3", T_RESTART, 3), MC_OK);
    assert_int_equal(propose(&f, "r3", "t4", T_RESTART, 3), MC_OK);
    assert_int_equal(reject(&f, "r3", NULL), MC_OK);
    assert_int_equal(reject(&f, "r2", NULL), MC_OK);
    assert_int_equal(reject(&f, "r1", NULL), MC_OK);
    assert_int_equal(propose(&f, "p2", "t5", T_RESTART, 4), MC_OK);
    /* Between tick ends nothing is evicted: 5 tracked, bound 3. */
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    assert_int_equal(mc_approval_counts(&f.a, counts), 5);
    /* The tick end forgets the two oldest finished (r1, r2); the older
     * pending p1 stays, and so does r3 (the bound is met). */
    assert_int_equal(mc_approval_on_tick_end(&f.a, 4, &f.out, &f.err), MC_OK);
    assert_int_equal(mc_approval_counts(&f.a, counts), 3);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "r1", &v, &f.err), MC_ERR_NOT_FOUND);
    assert_int_equal(mc_approval_get(&f.a, "r2", &v, &f.err), MC_ERR_NOT_FOUND);
    assert_int_equal(status_of(&f, "r3"), ST_REJECTED);
    assert_int_equal(status_of(&f, "p1"), ST_PENDING);
    /* Up to 2 * max_actions between tick ends, then proposals are refused. */
    assert_int_equal(propose(&f, "p3", "t6", T_RESTART, 5), MC_OK);
    assert_int_equal(propose(&f, "p4", "t7", T_RESTART, 5), MC_OK);
    assert_int_equal(propose(&f, "p5", "t8", T_RESTART, 5), MC_OK);
    assert_int_equal(propose(&f, "p6", "t9", T_RESTART, 5), MC_ERR_LIMIT);
    assert_int_equal(mc_approval_get(&f.a, "p6", &v, &f.err), MC_ERR_NOT_FOUND);
    /* Only r3 is finished: it goes, the pending ones all stay. */
    assert_int_equal(mc_approval_on_tick_end(&f.a, 5, &f.out, &f.err), MC_OK);
    assert_int_equal(mc_approval_counts(&f.a, counts), 5);
    assert_int_equal(counts[ST_PENDING], 5);
    assert_int_equal(propose(&f, "p6", "t9", T_RESTART, 6), MC_OK);
    assert_int_equal(propose(&f, "p7", "t10", T_RESTART, 6), MC_ERR_LIMIT);
    /* Iteration stays in canonical order after slot reuse. */
    mc_approval_action all[6];
    size_t n = 0;
    char cursor[MC_APPROVAL_CURSOR_MAX];
    assert_int_equal(mc_approval_list(&f.a, 0, NULL, all, 6, &n, cursor, &f.err), MC_OK);
    assert_int_equal(n, 6);
    const char *want[] = {"p1", "p2", "p3", "p4", "p5", "p6"};
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(all[i].id, want[i]);
    fx_deinit(&f);
}

static void test_incident_context(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 4);
    assert_int_equal(incident(&f, "inc-1", COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_ERROR,
                              "svc-a error rate high", false, 1),
                     MC_OK);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_int_equal(v.incident_severity, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_ERROR);
    assert_string_equal(v.incident_title, "svc-a error rate high");
    assert_false(v.incident_resolved);
    /* An update reaches the actions of the incident. */
    assert_int_equal(incident(&f, "inc-1",
                              COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL,
                              "svc-a failing", false, 1),
                     MC_OK);
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_int_equal(v.incident_severity,
                     COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL);
    /* Resolution: the action stays pending, marked, until it expires. */
    assert_int_equal(incident(&f, "inc-1",
                              COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_UNSPECIFIED,
                              "svc-a failing", true, 2),
                     MC_OK);
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_int_equal(v.status, ST_PENDING);
    assert_true(v.incident_resolved);
    assert_int_equal(v.incident_severity,
                     COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_CRITICAL);
    assert_int_equal(f.out.len, 0);
    for (uint64_t t = 1; t <= 5; t++)
        assert_int_equal(mc_approval_on_tick_end(&f.a, t, &f.out, &f.err), MC_OK);
    assert_int_equal(status_of(&f, "a1"), ST_EXPIRED);
    /* Bad incident input. */
    assert_int_equal(mc_approval_on_incident(&f.a, NULL, &f.out, &f.err), MC_ERR_INVALID);
    assert_int_equal(
        incident(&f, "", COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_INFO, "t", false, 6),
        MC_ERR_INVALID);
    fx_deinit(&f);
}

static void test_incident_bound(void **state)
{
    (void)state;
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.max_incidents = 2;
    fx f;
    fx_init_cfg(&f, &cfg);
    const Common__V1__IncidentSeverity sev = COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_INFO;
    assert_int_equal(incident(&f, "i1", sev, "one", true, 1), MC_OK);
    assert_int_equal(incident(&f, "i2", sev, "two", false, 2), MC_OK);
    assert_int_equal(incident(&f, "i3", sev, "three", false, 3), MC_OK); /* forgets i1 */
    assert_int_equal(propose_full(&f, "a1", "t", T_RESTART, 3, "i1", 0), MC_OK);
    assert_int_equal(propose_full(&f, "a2", "u", T_RESTART, 3, "i2", 0), MC_OK);
    mc_approval_action v;
    assert_int_equal(mc_approval_get(&f.a, "a1", &v, &f.err), MC_OK);
    assert_string_equal(v.incident_title, "");
    assert_int_equal(mc_approval_get(&f.a, "a2", &v, &f.err), MC_OK);
    assert_string_equal(v.incident_title, "two");
    /* None resolved: the oldest (i2) goes. */
    assert_int_equal(incident(&f, "i4", sev, "four", false, 4), MC_OK);
    assert_int_equal(propose_full(&f, "a3", "w", T_RESTART, 4, "i2", 0), MC_OK);
    assert_int_equal(mc_approval_get(&f.a, "a3", &v, &f.err), MC_OK);
    assert_string_equal(v.incident_title, "");
    assert_int_equal(f.a.incident_count, 2);
    fx_deinit(&f);
}

static void test_long_text_is_cut_at_a_character(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_MANUAL, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    /* 600 bytes of "é" (2 bytes each): the cut must not split one. */
    char reason[601];
    for (size_t i = 0; i < 600; i += 2) {
        reason[i] = (char)0xC3;
        reason[i + 1] = (char)0xA9;
    }
    reason[600] = '\0';
    mc_approval_action v;
    assert_int_equal(
        mc_approval_on_human_decision(&f.a, "a1", false, "bob", reason, &f.out, &v, &f.err), MC_OK);
    size_t len = strlen(v.status_reason);
    assert_true(len < MC_APPROVAL_TEXT_MAX);
    assert_int_equal(len % 2, 0);
    assert_true(len >= MC_APPROVAL_TEXT_MAX - 2);
    fx_deinit(&f);
}

/* A scripted run with every kind of input; `human_live` chooses whether the
 * human decisions come through the API call or as recorded messages. */
typedef struct script_rec {
    mc_outbox out;
    uint8_t digest[MC_DIGEST_BYTES];
} script_rec;

static void run_script(script_rec *rec, const mc_outbox *recorded, mc_approval_mode mode)
{
    fx f;
    fx_init(&f, mode, 3);
    size_t rec_pos = 0;
    /* In replay mode, feed the recorded human decision whose sequence number
     * is the next one the core will use: the harness's rule. */
#define HUMAN(call)                                                                                \
    do {                                                                                           \
        if (recorded == NULL) {                                                                    \
            (void)(call);                                                                          \
        } else {                                                                                   \
            for (; rec_pos < recorded->len; rec_pos++) {                                           \
                const mc_outbox_msg *m = &recorded->items[rec_pos];                                \
                if (m->producer_seq < mc_approval_next_seq(&f.a))                                  \
                    continue;                                                                      \
                if (m->producer_seq > mc_approval_next_seq(&f.a))                                  \
                    break;                                                                         \
                if (strcmp(m->subject, "ops.decisions") != 0)                                      \
                    break;                                                                         \
                Ops__V1__ApprovalDecision *d =                                                     \
                    ops__v1__approval_decision__unpack(NULL, m->len, m->payload);                  \
                assert_non_null(d);                                                                \
                bool human = d->source == SRC_HUMAN;                                               \
                if (human)                                                                         \
                    assert_int_equal(mc_approval_replay_decision(&f.a, d, &f.out, NULL, &f.err),   \
                                     MC_OK);                                                       \
                ops__v1__approval_decision__free_unpacked(d, NULL);                                \
                if (!human)                                                                        \
                    break;                                                                         \
            }                                                                                      \
        }                                                                                          \
    } while (0)

    assert_int_equal(incident(&f, "inc-1", COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_ERROR,
                              "t", false, 1),
                     MC_OK);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f, "a2", "node-1", T_DRAIN, 1), MC_OK);
    assert_int_equal(propose(&f, "a3", "svc-b", T_SCALE_DOWN, 1), MC_OK);
    HUMAN(approve(&f, "a2", NULL));
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    mc_approval_action v2;
    assert_int_equal(mc_approval_get(&f.a, "a2", &v2, &f.err), MC_OK);
    assert_int_equal(engine_event(&f, EV_APPLIED, "a2", v2.command_id, 2, ""), MC_OK);
    HUMAN(reject(&f, "a3", NULL));
    assert_int_equal(propose(&f, "a4", "svc-c", T_SCALE_UP, 2), MC_OK);
    assert_int_equal(propose(&f, "a5", "svc-c", T_SCALE_DOWN, 2), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 2, &f.out, &f.err), MC_OK);
    assert_int_equal(propose(&f, "a6", "svc-d", T_DRAIN, 3), MC_OK);
    for (uint64_t t = 3; t <= 7; t++)
        assert_int_equal(mc_approval_on_tick_end(&f.a, t, &f.out, &f.err), MC_OK);
#undef HUMAN
    mc_approval_digest(&f.a, rec->digest);
    rec->out = f.out; /* ownership moves to rec */
    memset(&f.out, 0, sizeof f.out);
    fx_deinit(&f);
}

static void assert_same_outbox(const mc_outbox *x, const mc_outbox *y)
{
    assert_int_equal(x->len, y->len);
    for (size_t i = 0; i < x->len; i++) {
        assert_string_equal(x->items[i].subject, y->items[i].subject);
        assert_int_equal(x->items[i].tick, y->items[i].tick);
        assert_int_equal(x->items[i].producer_seq, y->items[i].producer_seq);
        assert_int_equal(x->items[i].len, y->items[i].len);
        assert_memory_equal(x->items[i].payload, y->items[i].payload, x->items[i].len);
    }
}

static void test_determinism_same_inputs_same_bytes(void **state)
{
    (void)state;
    const mc_approval_mode modes[] = {MC_APPROVAL_MODE_MANUAL, MC_APPROVAL_MODE_AUTO,
                                      MC_APPROVAL_MODE_AUTO_LOW_RISK};
    uint8_t per_mode[3][MC_DIGEST_BYTES];
    for (size_t m = 0; m < 3; m++) {
        script_rec r1, r2;
        run_script(&r1, NULL, modes[m]);
        run_script(&r2, NULL, modes[m]);
        assert_true(r1.out.len > 5);
        assert_same_outbox(&r1.out, &r2.out);
        assert_memory_equal(r1.digest, r2.digest, MC_DIGEST_BYTES);
        memcpy(per_mode[m], r1.digest, MC_DIGEST_BYTES);
        /* Sequence numbers run 1, 2, 3 ... without gaps. */
        for (size_t i = 0; i < r1.out.len; i++)
            assert_int_equal(r1.out.items[i].producer_seq, i + 1);
        mc_outbox_deinit(&r1.out);
        mc_outbox_deinit(&r2.out);
    }
    /* The state differs between modes, and the digest shows it. */
    assert_memory_not_equal(per_mode[0], per_mode[1], MC_DIGEST_BYTES);
    assert_memory_not_equal(per_mode[1], per_mode[2], MC_DIGEST_BYTES);
}

static void test_replay_of_recorded_human_decisions(void **state)
{
    (void)state;
    const mc_approval_mode modes[] = {MC_APPROVAL_MODE_MANUAL, MC_APPROVAL_MODE_AUTO_LOW_RISK};
    for (size_t m = 0; m < 2; m++) {
        script_rec live, replayed;
        run_script(&live, NULL, modes[m]);
        run_script(&replayed, &live.out, modes[m]);
        assert_same_outbox(&live.out, &replayed.out);
        assert_memory_equal(live.digest, replayed.digest, MC_DIGEST_BYTES);
        /* The recording does hold human decisions (or the test proves nothing). */
        size_t humans = 0;
        for (size_t i = 0; i < live.out.len; i++) {
            if (strcmp(live.out.items[i].subject, "ops.decisions") != 0)
                continue;
            Ops__V1__ApprovalDecision *d = ops__v1__approval_decision__unpack(
                NULL, live.out.items[i].len, live.out.items[i].payload);
            humans += d->source == SRC_HUMAN;
            ops__v1__approval_decision__free_unpacked(d, NULL);
        }
        assert_int_equal(humans, 2);
        mc_outbox_deinit(&live.out);
        mc_outbox_deinit(&replayed.out);
    }
}

static void test_replay_refuses_non_human_decisions(void **state)
{
    (void)state;
    fx f;
    fx_init(&f, MC_APPROVAL_MODE_AUTO, 0);
    assert_int_equal(propose(&f, "a1", "svc-a", T_RESTART, 1), MC_OK);
    assert_int_equal(mc_approval_on_tick_end(&f.a, 1, &f.out, &f.err), MC_OK);
    Ops__V1__ApprovalDecision *d = decision_at(&f, 0);
    assert_int_equal(d->source, SRC_POLICY);
    assert_int_equal(mc_approval_replay_decision(&f.a, d, &f.out, NULL, &f.err), MC_ERR_INVALID);
    d->source = SRC_HUMAN;
    /* The same decision again, now as a person's: refused by state. */
    mc_approval_action v;
    assert_int_equal(mc_approval_replay_decision(&f.a, d, &f.out, &v, &f.err), MC_ERR_STATE);
    assert_int_equal(v.status, ST_APPROVED);
    /* Another run's decision. */
    char *run = d->stamp->run_id;
    d->stamp->run_id = (char *)"run-other";
    assert_int_equal(mc_approval_replay_decision(&f.a, d, &f.out, &v, &f.err), MC_ERR_INVALID);
    d->stamp->run_id = run;
    ops__v1__approval_decision__free_unpacked(d, NULL);
    assert_int_equal(mc_approval_replay_decision(&f.a, NULL, &f.out, &v, &f.err), MC_ERR_INVALID);
    fx_deinit(&f);
}

static void test_digest_tracks_state(void **state)
{
    (void)state;
    fx f1, f2;
    fx_init(&f1, MC_APPROVAL_MODE_MANUAL, 5);
    fx_init(&f2, MC_APPROVAL_MODE_MANUAL, 5);
    uint8_t d1[MC_DIGEST_BYTES], d2[MC_DIGEST_BYTES];
    mc_approval_digest(&f1.a, d1);
    mc_approval_digest(&f2.a, d2);
    assert_memory_equal(d1, d2, MC_DIGEST_BYTES);
    /* Same actions in a different arrival order: same state. */
    assert_int_equal(propose(&f1, "a", "t1", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f1, "b", "t2", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f2, "b", "t2", T_RESTART, 1), MC_OK);
    assert_int_equal(propose(&f2, "a", "t1", T_RESTART, 1), MC_OK);
    mc_approval_digest(&f1.a, d1);
    mc_approval_digest(&f2.a, d2);
    assert_memory_equal(d1, d2, MC_DIGEST_BYTES);
    /* A decision changes it. */
    assert_int_equal(approve(&f1, "a", NULL), MC_OK);
    mc_approval_digest(&f1.a, d1);
    assert_memory_not_equal(d1, d2, MC_DIGEST_BYTES);
    fx_deinit(&f1);
    fx_deinit(&f2);
}

/* ---- randomized runs ----------------------------------------------------- */

enum op_kind { OP_PROPOSE, OP_INCIDENT, OP_APPROVE, OP_REJECT, OP_EVENT, OP_TICK_END };

typedef struct op {
    enum op_kind kind;
    char id[16];
    char target[16];
    char command_id[MC_UUID_STR_LEN];
    int type; /* action type, or event kind */
    uint64_t tick;
    uint64_t proposed_at_tick;
    bool flag; /* incident resolved */
} op;

enum { PROP_STEPS = 1500, PROP_MAX_ACTIONS = 8 };

static uint64_t draw(uint64_t seed, uint64_t step, uint32_t k, uint64_t n)
{
    return mc_rng_u64(seed, MC_RNG_STREAM_TEST, step, 0, k) % n;
}

/* Mostly one of the last few proposals (the ones still in play), now and
 * then any number up to one that was never proposed. */
static uint64_t pick_action(uint64_t seed, uint64_t step, uint64_t proposals)
{
    if (proposals == 0 || draw(seed, step, 6, 8) == 0)
        return draw(seed, step, 2, proposals + 1);
    uint64_t recent = proposals < 6 ? proposals : 6;
    return proposals - 1 - draw(seed, step, 2, recent);
}

static void prop_cfg(fx *f, mc_approval_mode mode)
{
    mc_approval_config cfg;
    mc_approval_config_default(&cfg);
    cfg.mode = mode;
    cfg.expiry_ticks = 4;
    cfg.max_actions = PROP_MAX_ACTIONS;
    cfg.max_incidents = 2;
    memset(f, 0, sizeof *f);
    assert_int_equal(mc_approval_init(&f->a, &cfg, &f->err), MC_OK);
    assert_int_equal(mc_outbox_init(&f->out, 100000), MC_OK);
}

static mc_status apply_op(fx *f, const op *o)
{
    switch (o->kind) {
    case OP_PROPOSE: {
        Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
        stamp.run_id = (char *)RUN;
        stamp.tick = o->tick;
        Ops__V1__Action m = OPS__V1__ACTION__INIT;
        m.stamp = &stamp;
        m.id = (char *)o->id;
        m.incident_id = (char *)"i0";
        m.action_type = (Common__V1__ActionType)o->type;
        m.target_id = (char *)o->target;
        m.status = ST_PENDING;
        m.proposed_at_tick = o->proposed_at_tick;
        return mc_approval_on_action(&f->a, &m, &f->out, &f->err);
    }
    case OP_INCIDENT:
        return incident(f, o->id, COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_WARNING, "t",
                        o->flag, o->tick);
    case OP_APPROVE: return approve(f, o->id, NULL);
    case OP_REJECT: return reject(f, o->id, NULL);
    case OP_EVENT:
        return engine_event(f, (Sim__V1__SimulationEventKind)o->type, o->id, o->command_id, o->tick,
                            "");
    case OP_TICK_END: return mc_approval_on_tick_end(&f->a, o->tick, &f->out, &f->err);
    }
    return MC_ERR_INTERNAL;
}

/* Invariants of the live run after every step. */
static void check_invariants(fx *f, size_t *checked)
{
    /* At most one pending action per target. */
    mc_approval_action all[2 * PROP_MAX_ACTIONS];
    size_t n = 0;
    char cursor[MC_APPROVAL_CURSOR_MAX];
    assert_int_equal(
        mc_approval_list(&f->a, 0, NULL, all, 2 * PROP_MAX_ACTIONS, &n, cursor, &f->err), MC_OK);
    assert_string_equal(cursor, "");
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (all[i].status == ST_PENDING && all[j].status == ST_PENDING)
                assert_string_not_equal(all[i].target_id, all[j].target_id);
        }
        /* Canonical order. */
        if (i > 0)
            assert_true(all[i - 1].proposed_at_tick < all[i].proposed_at_tick ||
                        (all[i - 1].proposed_at_tick == all[i].proposed_at_tick &&
                         strcmp(all[i - 1].id, all[i].id) < 0));
        /* A command id exactly for the approved ones and their outcomes. */
        bool approved = all[i].status == ST_APPROVED || all[i].status == ST_EXECUTED ||
                        all[i].status == ST_FAILED;
        assert_true(approved == (all[i].command_id[0] != '\0'));
    }
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    uint32_t total = mc_approval_counts(&f->a, counts), sum = 0;
    for (size_t s = 0; s < MC_APPROVAL_STATUS_COUNT; s++)
        sum += counts[s];
    assert_int_equal(sum, total);
    assert_int_equal(total, n);

    /* The new messages: contiguous sequence numbers, a command right after
     * each approval, watermark counts. */
    for (size_t i = *checked; i < f->out.len; i++) {
        const mc_outbox_msg *m = &f->out.items[i];
        assert_int_equal(m->producer_seq, i + 1);
        if (strcmp(m->subject, "ops.commands") == 0) {
            Ops__V1__ApplyActionCommand *c = command_at(f, i);
            Ops__V1__ApprovalDecision *d = decision_at(f, i - 1);
            assert_true(d->approved);
            assert_string_equal(d->action_id, c->action_id);
            ops__v1__approval_decision__free_unpacked(d, NULL);
            ops__v1__apply_action_command__free_unpacked(c, NULL);
        } else if (strcmp(m->subject, "ops.watermark.orchestrator") == 0) {
            Ops__V1__Watermark *w = watermark_at(f, i);
            size_t k = i;
            while (k > 0 && strcmp(f->out.items[k - 1].subject, "ops.watermark.orchestrator") != 0)
                k--;
            assert_int_equal(w->message_count, i - k);
            ops__v1__watermark__free_unpacked(w, NULL);
        }
    }
    *checked = f->out.len;
}

/* Feeds the recorded human decisions that are due (the harness's rule). */
static void feed_due(fx *f, const mc_outbox *rec, size_t *pos)
{
    for (;;) {
        while (*pos < rec->len && rec->items[*pos].producer_seq < mc_approval_next_seq(&f->a))
            (*pos)++;
        if (*pos >= rec->len || strcmp(rec->items[*pos].subject, "ops.decisions") != 0)
            return;
        Ops__V1__ApprovalDecision *d = ops__v1__approval_decision__unpack(
            NULL, rec->items[*pos].len, rec->items[*pos].payload);
        assert_non_null(d);
        bool due = mc_approval_replay_due(&f->a, d);
        if (due)
            assert_int_equal(mc_approval_replay_decision(&f->a, d, &f->out, NULL, &f->err), MC_OK);
        ops__v1__approval_decision__free_unpacked(d, NULL);
        if (!due)
            return;
    }
}

static void randomized_run(uint64_t seed, mc_approval_mode mode)
{
    static op ops[PROP_STEPS];
    fx live;
    prop_cfg(&live, mode);
    uint64_t tick = 1, proposals = 0;
    size_t checked = 0, humans = 0, refused = 0;
    for (uint64_t step = 0; step < PROP_STEPS; step++) {
        op *o = &ops[step];
        memset(o, 0, sizeof *o);
        uint64_t r = draw(seed, step, 0, 100);
        o->tick = tick;
        if (r < 30) {
            o->kind = OP_PROPOSE;
            /* Mostly new ids, sometimes a redelivery. */
            uint64_t idn = proposals > 0 && draw(seed, step, 1, 10) == 0
                               ? draw(seed, step, 2, proposals)
                               : proposals++;
            snprintf(o->id, sizeof o->id, "a%03llu", (unsigned long long)idn);
            snprintf(o->target, sizeof o->target, "t%llu",
                     (unsigned long long)draw(seed, step, 3, 4));
            o->type = (int)(1 + draw(seed, step, 4, 5));
            o->proposed_at_tick = tick - (tick > 1 ? draw(seed, step, 5, 2) : 0);
        } else if (r < 35) {
            o->kind = OP_INCIDENT;
            snprintf(o->id, sizeof o->id, "i%llu", (unsigned long long)draw(seed, step, 1, 3));
            o->flag = draw(seed, step, 2, 2) == 0;
        } else if (r < 60) {
            o->kind = draw(seed, step, 1, 3) == 0 ? OP_REJECT : OP_APPROVE;
            snprintf(o->id, sizeof o->id, "a%03llu",
                     (unsigned long long)pick_action(seed, step, proposals));
        } else if (r < 80) {
            o->kind = OP_EVENT;
            snprintf(o->id, sizeof o->id, "a%03llu",
                     (unsigned long long)pick_action(seed, step, proposals));
            /* Mostly the engine's report on an approved action. */
            mc_approval_action appr[2 * PROP_MAX_ACTIONS];
            size_t na = 0;
            char cur[MC_APPROVAL_CURSOR_MAX];
            assert_int_equal(mc_approval_list(&live.a, 1u << ST_APPROVED, NULL, appr,
                                              2 * PROP_MAX_ACTIONS, &na, cur, &live.err),
                             MC_OK);
            if (na > 0 && draw(seed, step, 7, 5) != 0)
                memcpy(o->id, appr[draw(seed, step, 8, na)].id, sizeof o->id);
            o->type = draw(seed, step, 3, 2) == 0 ? EV_REFUSED : EV_APPLIED;
            mc_approval_action v;
            if (mc_approval_get(&live.a, o->id, &v, &live.err) == MC_OK && v.command_id[0] != '\0')
                memcpy(o->command_id, v.command_id, sizeof o->command_id);
            else
                snprintf(o->command_id, sizeof o->command_id, "c-none");
        } else {
            o->kind = OP_TICK_END;
            /* Now and then a skipped tick, or a stale (refused) one. */
            uint64_t k = draw(seed, step, 1, 10);
            o->tick = k == 0 ? tick + 1 : (k == 1 && tick > 1 ? tick - 1 : tick);
        }
        uint8_t d0[MC_DIGEST_BYTES], d1[MC_DIGEST_BYTES];
        mc_approval_digest(&live.a, d0);
        size_t before = live.out.len;
        mc_status st = apply_op(&live, o);
        if (st != MC_OK) {
            /* A refused input changes nothing and emits nothing. */
            mc_approval_digest(&live.a, d1);
            assert_memory_equal(d0, d1, MC_DIGEST_BYTES);
            assert_int_equal(live.out.len, before);
            assert_true(st == MC_ERR_STATE || st == MC_ERR_NOT_FOUND || st == MC_ERR_LIMIT);
            refused++;
        } else if (o->kind == OP_APPROVE || o->kind == OP_REJECT) {
            humans++;
        }
        if (st == MC_OK && o->kind == OP_TICK_END)
            tick = o->tick + 1;
        check_invariants(&live, &checked);
    }
    /* The run exercised what it should. */
    assert_true(humans > (mode == MC_APPROVAL_MODE_AUTO ? 5u : 15u));
    assert_true(refused > 20);

    /* Replay: the same inputs without the human calls, which come from the
     * recording instead. */
    fx rep;
    prop_cfg(&rep, mode);
    size_t pos = 0;
    for (uint64_t step = 0; step < PROP_STEPS; step++) {
        if (ops[step].kind == OP_APPROVE || ops[step].kind == OP_REJECT)
            continue;
        feed_due(&rep, &live.out, &pos);
        (void)apply_op(&rep, &ops[step]);
    }
    feed_due(&rep, &live.out, &pos);
    assert_same_outbox(&live.out, &rep.out);
    uint8_t dl[MC_DIGEST_BYTES], dr[MC_DIGEST_BYTES];
    mc_approval_digest(&live.a, dl);
    mc_approval_digest(&rep.a, dr);
    assert_memory_equal(dl, dr, MC_DIGEST_BYTES);
    fx_deinit(&live);
    fx_deinit(&rep);
}

static void test_randomized_runs_keep_invariants_and_replay(void **state)
{
    (void)state;
    const mc_approval_mode modes[] = {MC_APPROVAL_MODE_MANUAL, MC_APPROVAL_MODE_AUTO,
                                      MC_APPROVAL_MODE_AUTO_LOW_RISK};
    for (uint64_t seed = 1; seed <= 4; seed++)
        for (size_t m = 0; m < 3; m++)
            randomized_run(seed, modes[m]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mode_parse),
        cmocka_unit_test(test_init_rejects_bad_config),
        cmocka_unit_test(test_proposal_is_pending_with_a_transition),
        cmocka_unit_test(test_bad_proposals_are_refused),
        cmocka_unit_test(test_human_approval_emits_decision_and_command),
        cmocka_unit_test(test_command_parameters_per_type),
        cmocka_unit_test(test_human_rejection),
        cmocka_unit_test(test_refused_transitions),
        cmocka_unit_test(test_two_approvals_one_command),
        cmocka_unit_test(test_expiry_exactly_at_configured_tick),
        cmocka_unit_test(test_no_expiry_when_zero),
        cmocka_unit_test(test_human_approval_beats_expiry_in_the_same_tick),
        cmocka_unit_test(test_open_tick_before_first_close),
        cmocka_unit_test(test_expiry_saturates),
        cmocka_unit_test(test_supersession),
        cmocka_unit_test(test_mode_manual_waits),
        cmocka_unit_test(test_mode_auto_approves_everything_at_tick_end),
        cmocka_unit_test(test_mode_auto_low_risk),
        cmocka_unit_test(test_engine_events),
        cmocka_unit_test(test_watermarks_count_messages),
        cmocka_unit_test(test_first_tick_end_with_no_input),
        cmocka_unit_test(test_outbox_full_changes_nothing),
        cmocka_unit_test(test_list_pending_with_cursor),
        cmocka_unit_test(test_bounded_eviction),
        cmocka_unit_test(test_incident_context),
        cmocka_unit_test(test_incident_bound),
        cmocka_unit_test(test_long_text_is_cut_at_a_character),
        cmocka_unit_test(test_determinism_same_inputs_same_bytes),
        cmocka_unit_test(test_replay_of_recorded_human_decisions),
        cmocka_unit_test(test_replay_refuses_non_human_decisions),
        cmocka_unit_test(test_digest_tracks_state),
        cmocka_unit_test(test_randomized_runs_keep_invariants_and_replay),
    };
    return cmocka_run_group_tests_name("gateway/approval", tests, NULL, NULL);
}
