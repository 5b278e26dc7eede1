#include "approval/approval.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "core/table.h"
#include "core/text.h"

/* ---- small helpers ------------------------------------------------------ */

static uint32_t status_bit(Common__V1__ActionStatus s)
{
    return (uint32_t)1u << (uint32_t)s;
}

const char *mc_approval_mode_name(mc_approval_mode m)
{
    switch (m) {
    case MC_APPROVAL_MODE_MANUAL: return "manual";
    case MC_APPROVAL_MODE_AUTO: return "auto";
    case MC_APPROVAL_MODE_AUTO_LOW_RISK: return "auto-low-risk";
    }
    return "unknown";
}

mc_status mc_approval_mode_parse(const char *s, mc_approval_mode *out, mc_error *err)
{
    static const mc_approval_mode modes[] = {MC_APPROVAL_MODE_MANUAL, MC_APPROVAL_MODE_AUTO,
                                             MC_APPROVAL_MODE_AUTO_LOW_RISK};
    if (s != NULL && out != NULL) {
        for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
            if (strcmp(s, mc_approval_mode_name(modes[i])) == 0) {
                *out = modes[i];
                return MC_OK;
            }
        }
    }
    return mc_error_set(err, MC_ERR_INVALID,
                        "APPROVAL_MODE=%s: expected manual, auto or auto-low-risk",
                        s ? s : "(null)");
}

const char *mc_approval_status_name(Common__V1__ActionStatus s)
{
    switch (s) {
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING: return "PENDING";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED: return "APPROVED";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED: return "REJECTED";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED: return "EXECUTED";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_FAILED: return "FAILED";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXPIRED: return "EXPIRED";
    case COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED: return "SUPERSEDED";
    default: return "UNSPECIFIED";
    }
}

static bool status_finished(Common__V1__ActionStatus s)
{
    return s == COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED ||
           s == COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED ||
           s == COMMON__V1__ACTION_STATUS__ACTION_STATUS_FAILED ||
           s == COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXPIRED ||
           s == COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED;
}

static bool action_type_valid(Common__V1__ActionType t)
{
    return t >= COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE &&
           t <= COMMON__V1__ACTION_TYPE__ACTION_TYPE_REBALANCE_TRAFFIC;
}

void mc_approval_config_default(mc_approval_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = MC_APPROVAL_MODE_MANUAL;
    cfg->expiry_ticks = MC_APPROVAL_DEFAULT_EXPIRY_TICKS;
    cfg->max_actions = MC_APPROVAL_DEFAULT_MAX_ACTIONS;
    cfg->max_incidents = MC_APPROVAL_DEFAULT_MAX_INCIDENTS;
    cfg->run_id = NULL;
}

/* ---- proto views -------------------------------------------------------- */

void mc_approval_action_to_proto(const mc_approval_action *v, Ops__V1__Action *msg)
{
    Ops__V1__Action init = OPS__V1__ACTION__INIT;
    *msg = init;
    msg->id = (char *)v->id;
    msg->incident_id = (char *)v->incident_id;
    msg->action_type = v->action_type;
    msg->target_id = (char *)v->target_id;
    msg->status = v->status;
    msg->reason = (char *)v->reason;
    msg->proposed_at_tick = v->proposed_at_tick;
    msg->expires_at_tick = v->expires_at_tick;
    msg->updated_at_tick = v->updated_at_tick;
    msg->decided_by = (char *)v->decided_by;
    msg->status_reason = (char *)v->status_reason;
    msg->supersedes_action_id = (char *)v->supersedes_action_id;
    msg->escalation_level = v->escalation_level;
}

void mc_approval_transition_to_proto(const mc_approval_transition *t,
                                     Ops__V1__ActionHistoryEntry *e)
{
    Ops__V1__ActionHistoryEntry init = OPS__V1__ACTION_HISTORY_ENTRY__INIT;
    *e = init;
    e->action_id = (char *)t->action_id;
    e->from_status = t->from_status;
    e->to_status = t->to_status;
    e->actor = (char *)t->actor;
    e->tick = t->tick;
    e->reason = (char *)t->reason;
}

/* ---- init / deinit ------------------------------------------------------ */

mc_status mc_approval_init(mc_approval *a, const mc_approval_config *cfg, mc_error *err)
{
    if (a == NULL || cfg == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: NULL state or config");
    memset(a, 0, sizeof *a);
    if (cfg->mode != MC_APPROVAL_MODE_MANUAL && cfg->mode != MC_APPROVAL_MODE_AUTO &&
        cfg->mode != MC_APPROVAL_MODE_AUTO_LOW_RISK)
        return mc_error_set(err, MC_ERR_INVALID, "approval: unknown mode %d", (int)cfg->mode);
    uint32_t max_actions = cfg->max_actions ? cfg->max_actions : MC_APPROVAL_DEFAULT_MAX_ACTIONS;
    uint32_t max_incidents =
        cfg->max_incidents ? cfg->max_incidents : MC_APPROVAL_DEFAULT_MAX_INCIDENTS;
    /* A million actions of about 2.6 KB each is already far more than a run
     * produces; the cap keeps a typo from asking for terabytes. */
    if (max_actions > 1000000u || max_incidents > 1000000u)
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: max_actions=%" PRIu32 " max_incidents=%" PRIu32
                            ": at most 1000000 each",
                            max_actions, max_incidents);
    if (!mc_text_copy(a->run_id, sizeof a->run_id, cfg->run_id))
        return mc_error_set(err, MC_ERR_INVALID, "approval: run_id longer than %d bytes",
                            MC_APPROVAL_RUN_ID_MAX - 1);
    a->mode = cfg->mode;
    a->expiry_ticks = cfg->expiry_ticks;
    a->max_actions = max_actions;
    /* Eviction happens at tick ends only (see the header), so between two
     * tick ends the table may grow past max_actions: the headroom is as
     * much again. */
    a->capacity = 2 * max_actions;
    a->max_incidents = max_incidents;
    /* The most transitions one call makes: every tracked action changing
     * once at a tick end, or a proposal plus a supersession. */
    a->transition_cap = a->capacity + 4;

    a->actions = calloc(a->capacity, sizeof *a->actions);
    a->order = calloc(a->capacity, sizeof *a->order);
    a->by_id = calloc(a->capacity, sizeof *a->by_id);
    a->free_slots = calloc(a->capacity, sizeof *a->free_slots);
    a->incidents = calloc(max_incidents, sizeof *a->incidents);
    a->transitions = calloc(a->transition_cap, sizeof *a->transitions);
    if (a->actions == NULL || a->order == NULL || a->by_id == NULL || a->free_slots == NULL ||
        a->incidents == NULL || a->transitions == NULL) {
        mc_approval_deinit(a);
        return mc_error_set(err, MC_ERR_NOMEM, "approval: cannot allocate %" PRIu32 " actions",
                            max_actions);
    }
    /* Free slots are taken from the top of the stack; push them so slot 0 is
     * used first (only cosmetic: nothing depends on slot numbers). */
    for (uint32_t i = 0; i < a->capacity; i++)
        a->free_slots[i] = a->capacity - 1 - i;
    a->free_count = a->capacity;
    return MC_OK;
}

void mc_approval_deinit(mc_approval *a)
{
    if (a == NULL)
        return;
    free(a->actions);
    free(a->order);
    free(a->by_id);
    free(a->free_slots);
    free(a->incidents);
    free(a->transitions);
    memset(a, 0, sizeof *a);
}

/* ---- indexes ------------------------------------------------------------ */

/* The canonical order: (proposed_at_tick, id). */
static int order_cmp(uint64_t tick_a, const char *id_a, uint64_t tick_b, const char *id_b)
{
    if (tick_a != tick_b)
        return tick_a < tick_b ? -1 : 1;
    return strcmp(id_a, id_b);
}

/* Position of id in by_id (or where it would go); *found set. */
static uint32_t by_id_search(const mc_approval *a, const char *id, bool *found)
{
    return (uint32_t)mc_table_find_id(a->actions, sizeof *a->actions,
                                      offsetof(mc_approval_action, id), a->by_id,
                                      a->action_count, id, found);
}

/* First position in order whose key is strictly greater than (tick, id), or
 * greater or equal when inclusive. */
static uint32_t order_search(const mc_approval *a, uint64_t tick, const char *id, bool inclusive)
{
    uint32_t lo = 0, hi = a->action_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const mc_approval_action *x = &a->actions[a->order[mid]];
        int c = order_cmp(x->proposed_at_tick, x->id, tick, id);
        if (c < 0 || (c == 0 && !inclusive))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static mc_approval_action *find_action(const mc_approval *a, const char *id)
{
    bool found = false;
    uint32_t pos = by_id_search(a, id, &found);
    return found ? &a->actions[a->by_id[pos]] : NULL;
}

/* Forgets the action at position pos of order. */
static void evict_at(mc_approval *a, uint32_t pos)
{
    uint32_t slot = a->order[pos];
    bool found = false;
    uint32_t id_pos = by_id_search(a, a->actions[slot].id, &found);
    mc_table_close(a->order, sizeof *a->order, a->action_count, pos);
    if (found)
        mc_table_close(a->by_id, sizeof *a->by_id, a->action_count, id_pos);
    a->action_count--;
    memset(&a->actions[slot], 0, sizeof a->actions[slot]);
    a->free_slots[a->free_count++] = slot;
}

/* Forgets finished actions, oldest first by (proposed_at_tick, id), until
 * at most max_actions are tracked or only unfinished ones are left. */
static void evict_finished(mc_approval *a)
{
    uint32_t i = 0;
    while (a->action_count > a->max_actions && i < a->action_count) {
        if (status_finished(a->actions[a->order[i]].status))
            evict_at(a, i); /* the next one moves into position i */
        else
            i++;
    }
}

/* Takes a free slot and links the action (id and proposed_at_tick already
 * set in *tmpl) into both indexes. The caller made sure a slot is free and
 * the id is new. */
static mc_approval_action *insert_action(mc_approval *a, const mc_approval_action *tmpl)
{
    uint32_t slot = a->free_slots[--a->free_count];
    a->actions[slot] = *tmpl;
    bool found = false;
    uint32_t id_pos = by_id_search(a, tmpl->id, &found);
    uint32_t ord_pos = order_search(a, tmpl->proposed_at_tick, tmpl->id, true);
    mc_table_open(a->by_id, sizeof *a->by_id, a->action_count, id_pos);
    a->by_id[id_pos] = slot;
    mc_table_open(a->order, sizeof *a->order, a->action_count, ord_pos);
    a->order[ord_pos] = slot;
    a->action_count++;
    return &a->actions[slot];
}

/* The incident called id, or NULL; *pos_out (when not NULL) is its position
 * or where it would go. */
static mc_approval_incident *find_incident(const mc_approval *a, const char *id, uint32_t *pos_out)
{
    bool found = false;
    size_t pos = mc_table_find_id(a->incidents, sizeof *a->incidents,
                                  offsetof(mc_approval_incident, id), NULL, a->incident_count, id,
                                  &found);
    if (pos_out)
        *pos_out = (uint32_t)pos;
    return found ? &a->incidents[pos] : NULL;
}

/* ---- run, ticks, transitions ------------------------------------------- */

/* Checks an input's stamp against the core's run. Does not adopt the run:
 * that happens only once the whole input is accepted (adopt_input). */
static mc_status check_stamp(const mc_approval *a, const Common__V1__Stamp *stamp, const char *what,
                             mc_error *err)
{
    if (stamp == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: %s without a stamp", what);
    const char *run = stamp->run_id ? stamp->run_id : "";
    if (run[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "approval: %s without a run id", what);
    if (strlen(run) >= MC_APPROVAL_RUN_ID_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "approval: %s run id longer than %d bytes", what,
                            MC_APPROVAL_RUN_ID_MAX - 1);
    if (a->run_id[0] != '\0' && strcmp(a->run_id, run) != 0)
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: %s belongs to run %s, the core is in run %s", what, run,
                            a->run_id);
    return MC_OK;
}

static void adopt_input(mc_approval *a, const Common__V1__Stamp *stamp)
{
    if (a->run_id[0] == '\0')
        mc_text_copy(a->run_id, sizeof a->run_id, stamp->run_id);
    /* Only the first input's tick counts: later inputs must not move the
     * open tick, or where a replay feeds a human decision among inputs that
     * emit nothing would change the tick it is stamped with. */
    if (!a->seen_input)
        a->first_input_tick = stamp->tick;
    a->seen_input = true;
}

uint64_t mc_approval_open_tick(const mc_approval *a)
{
    if (a->closed_any)
        return a->last_closed_tick + 1;
    return a->seen_input ? a->first_input_tick : 0;
}

bool mc_approval_last_closed_tick(const mc_approval *a, uint64_t *tick)
{
    if (a->closed_any && tick != NULL)
        *tick = a->last_closed_tick;
    return a->closed_any;
}

uint64_t mc_approval_next_seq(const mc_approval *a)
{
    return a->producer_seq + 1;
}

const char *mc_approval_run_id(const mc_approval *a)
{
    return a->run_id;
}

const mc_approval_transition *mc_approval_transitions(const mc_approval *a, size_t *n)
{
    *n = a->transition_count;
    return a->transitions;
}

static void add_transition(mc_approval *a, const mc_approval_action *x,
                           Common__V1__ActionStatus from, const char *actor, uint64_t tick,
                           const char *reason)
{
    /* The cap covers the worst case of every call; a full list would be a
     * bug, and dropping an entry beats writing out of bounds. */
    if (a->transition_count >= a->transition_cap)
        return;
    mc_approval_transition *t = &a->transitions[a->transition_count++];
    memset(t, 0, sizeof *t);
    mc_text_copy(t->action_id, sizeof t->action_id, x->id);
    t->from_status = from;
    t->to_status = x->status;
    mc_text_copy_cut(t->actor, sizeof t->actor, actor);
    t->tick = tick;
    mc_text_copy_cut(t->reason, sizeof t->reason, reason);
}

static size_t outbox_room(const mc_outbox *out)
{
    return out->len < out->max_items ? out->max_items - out->len : 0;
}

static mc_status need_room(const mc_outbox *out, size_t n, const char *what, mc_error *err)
{
    if (out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: %s: NULL outbox", what);
    if (outbox_room(out) < n)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "approval: %s needs %zu outbox slots, %zu left (max_items %zu)", what,
                            n, outbox_room(out), out->max_items);
    return MC_OK;
}

/* ---- emission ------------------------------------------------------------ */

static void fill_stamp(const mc_approval *a, Common__V1__Stamp *s, uint64_t tick, uint64_t seq)
{
    Common__V1__Stamp init = COMMON__V1__STAMP__INIT;
    *s = init;
    s->run_id = (char *)a->run_id;
    s->tick = tick;
    s->producer = (char *)MC_APPROVAL_PRODUCER;
    s->producer_seq = seq;
    s->replayed = false;
}

static mc_status push(mc_approval *a, mc_outbox *out, const char *subject, uint64_t tick,
                      const ProtobufCMessage *msg, bool counted, mc_error *err)
{
    mc_status st = mc_outbox_push(out, subject, tick, a->producer_seq + 1, msg);
    if (st != MC_OK)
        return mc_error_set(err, st, "approval: cannot append to the outbox (%s): %s", subject,
                            mc_status_name(st));
    a->producer_seq++;
    if (counted)
        a->msgs_since_watermark++;
    return MC_OK;
}

static const char *source_name(Ops__V1__DecisionSource src)
{
    switch (src) {
    case OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN: return "human";
    case OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY: return "policy";
    case OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM: return "system";
    default: return "unspecified";
    }
}

static mc_status emit_decision(mc_approval *a, mc_outbox *out, const mc_approval_action *x,
                               bool approved, Ops__V1__DecisionSource src, const char *actor,
                               const char *reason, uint64_t tick, mc_error *err)
{
    char decision_id[MC_UUID_STR_LEN];
    mc_id_uuid(decision_id, "decision", a->run_id, tick, x->id, source_name(src));
    Common__V1__Stamp stamp;
    fill_stamp(a, &stamp, tick, a->producer_seq + 1);
    Ops__V1__ApprovalDecision d = OPS__V1__APPROVAL_DECISION__INIT;
    d.stamp = &stamp;
    d.decision_id = decision_id;
    d.action_id = (char *)x->id;
    d.approved = approved;
    d.source = src;
    d.actor = (char *)actor;
    d.reason = (char *)reason;
    d.effective_tick = tick;
    return push(a, out, MC_APPROVAL_SUBJECT_DECISIONS, tick, &d.base, true, err);
}

/* The command for an approved action; x->command_id is already set. */
static mc_status emit_command(mc_approval *a, mc_outbox *out, const mc_approval_action *x,
                              uint64_t tick, mc_error *err)
{
    Common__V1__Stamp stamp;
    fill_stamp(a, &stamp, tick, a->producer_seq + 1);
    Ops__V1__ApplyActionCommand c = OPS__V1__APPLY_ACTION_COMMAND__INIT;
    c.stamp = &stamp;
    c.command_id = (char *)x->command_id;
    c.action_id = (char *)x->id;
    c.action_type = x->action_type;
    c.target_id = (char *)x->target_id;
    c.issued_at_tick = tick;
    /* Scaling moves one replica at a time (enums.proto); the delta is spelled
     * out so the engine need not infer it from the type. */
    Ops__V1__ApplyActionCommand__ParametersEntry delta =
        OPS__V1__APPLY_ACTION_COMMAND__PARAMETERS_ENTRY__INIT;
    Ops__V1__ApplyActionCommand__ParametersEntry *params[1] = {&delta};
    if (x->action_type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP ||
        x->action_type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN) {
        delta.key = (char *)"replica_delta";
        delta.value =
            (char *)(x->action_type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP ? "1" : "-1");
        c.n_parameters = 1;
        c.parameters = params;
    }
    return push(a, out, MC_APPROVAL_SUBJECT_COMMANDS, tick, &c.base, true, err);
}

/* PENDING -> APPROVED or REJECTED by a person or the policy, with the
 * decision (and command) messages. The caller checked the outbox room. */
static mc_status decide(mc_approval *a, mc_outbox *out, mc_approval_action *x, bool approve,
                        Ops__V1__DecisionSource src, const char *actor, const char *reason,
                        uint64_t tick, mc_error *err)
{
    Common__V1__ActionStatus from = x->status;
    x->status = approve ? COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED
                        : COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED;
    x->updated_at_tick = tick;
    mc_text_copy_cut(x->decided_by, sizeof x->decided_by, actor);
    mc_text_copy_cut(x->status_reason, sizeof x->status_reason, reason);
    if (approve)
        mc_id_uuid(x->command_id, "command", a->run_id, tick, x->target_id, x->id);
    add_transition(a, x, from, x->decided_by, tick, x->status_reason);
    mc_status st =
        emit_decision(a, out, x, approve, src, x->decided_by, x->status_reason, tick, err);
    if (st == MC_OK && approve)
        st = emit_command(a, out, x, tick, err);
    return st;
}

/* PENDING -> EXPIRED or SUPERSEDED, with a SYSTEM decision. */
static mc_status close_by_system(mc_approval *a, mc_outbox *out, mc_approval_action *x,
                                 Common__V1__ActionStatus to, const char *reason, uint64_t tick,
                                 mc_error *err)
{
    Common__V1__ActionStatus from = x->status;
    x->status = to;
    x->updated_at_tick = tick;
    mc_text_copy_cut(x->decided_by, sizeof x->decided_by, MC_APPROVAL_ACTOR_SYSTEM);
    mc_text_copy_cut(x->status_reason, sizeof x->status_reason, reason);
    add_transition(a, x, from, MC_APPROVAL_ACTOR_SYSTEM, tick, x->status_reason);
    return emit_decision(a, out, x, false, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM,
                         MC_APPROVAL_ACTOR_SYSTEM, x->status_reason, tick, err);
}

/* ---- inputs ------------------------------------------------------------- */

static void apply_incident_context(const mc_approval_incident *inc, mc_approval_action *x)
{
    x->incident_severity = inc->severity;
    mc_text_copy_cut(x->incident_title, sizeof x->incident_title, inc->title);
    x->incident_resolved = inc->resolved;
}

mc_status mc_approval_on_action(mc_approval *a, const Ops__V1__Action *m, mc_outbox *out,
                                mc_error *err)
{
    a->transition_count = 0;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: NULL action");
    mc_status st = check_stamp(a, m->stamp, "action", err);
    if (st != MC_OK)
        return st;

    mc_approval_action tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    if (m->id == NULL || m->id[0] == '\0' || !mc_text_copy(tmpl.id, sizeof tmpl.id, m->id))
        return mc_error_set(err, MC_ERR_INVALID, "approval: action id empty or longer than %d",
                            MC_APPROVAL_ID_MAX - 1);
    if (m->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING)
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: action %s has status %s; proposals must be PENDING", tmpl.id,
                            mc_approval_status_name(m->status));
    if (!action_type_valid(m->action_type))
        return mc_error_set(err, MC_ERR_INVALID, "approval: action %s has unknown type %d", tmpl.id,
                            (int)m->action_type);
    if (m->target_id == NULL || m->target_id[0] == '\0' ||
        !mc_text_copy(tmpl.target_id, sizeof tmpl.target_id, m->target_id))
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: action %s target empty or longer than %d", tmpl.id,
                            MC_APPROVAL_TARGET_MAX - 1);
    if (!mc_text_copy(tmpl.incident_id, sizeof tmpl.incident_id, m->incident_id) ||
        !mc_text_copy(tmpl.supersedes_action_id, sizeof tmpl.supersedes_action_id,
                      m->supersedes_action_id))
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: action %s refers to an id longer "
                            "than %d",
                            tmpl.id, MC_APPROVAL_ID_MAX - 1);

    /* A redelivered proposal changes nothing. */
    if (find_action(a, tmpl.id) != NULL)
        return MC_OK;

    tmpl.action_type = m->action_type;
    tmpl.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
    mc_text_copy_cut(tmpl.reason, sizeof tmpl.reason, m->reason);
    tmpl.proposed_at_tick = m->proposed_at_tick;
    tmpl.updated_at_tick = m->proposed_at_tick;
    tmpl.escalation_level = m->escalation_level;
    uint64_t expires = 0;
    if (a->expiry_ticks != 0) {
        /* Saturate: a wrapped sum would expire the action at once. */
        expires = m->proposed_at_tick <= UINT64_MAX - a->expiry_ticks
                      ? m->proposed_at_tick + a->expiry_ticks
                      : UINT64_MAX;
    }
    if (m->expires_at_tick != 0 && (expires == 0 || m->expires_at_tick < expires))
        expires = m->expires_at_tick;
    tmpl.expires_at_tick = expires;

    /* Who is replaced: every pending action on the target that is not newer
     * than the proposal; or the proposal itself when one is newer. */
    size_t replaced = 0;
    const mc_approval_action *newer = NULL;
    for (uint32_t i = 0; i < a->action_count; i++) {
        const mc_approval_action *x = &a->actions[a->order[i]];
        if (x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING ||
            strcmp(x->target_id, tmpl.target_id) != 0)
            continue;
        if (x->proposed_at_tick > tmpl.proposed_at_tick)
            newer = x; /* the last one in order is the newest */
        else
            replaced++;
    }
    size_t msgs = newer != NULL ? 1 : replaced;
    st = need_room(out, msgs, "action", err);
    if (st != MC_OK)
        return st;
    if (a->action_count >= a->capacity)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "approval: %" PRIu32 " actions tracked (max_actions %" PRIu32
                            " plus as many between tick ends); action %s refused",
                            a->action_count, a->max_actions, tmpl.id);

    /* Accepted: from here on the state changes. */
    adopt_input(a, m->stamp);
    const mc_approval_incident *inc = find_incident(a, tmpl.incident_id, NULL);
    if (inc != NULL)
        apply_incident_context(inc, &tmpl);
    uint64_t tick = mc_approval_open_tick(a);

    char reason[MC_APPROVAL_TEXT_MAX];
    if (newer != NULL) {
        char newer_id[MC_APPROVAL_ID_MAX];
        mc_text_copy(newer_id, sizeof newer_id, newer->id);
        mc_approval_action *x = insert_action(a, &tmpl);
        add_transition(a, x, COMMON__V1__ACTION_STATUS__ACTION_STATUS_UNSPECIFIED,
                       MC_APPROVAL_ACTOR_AGENT, x->proposed_at_tick, x->reason);
        snprintf(reason, sizeof reason, "superseded by newer action %s", newer_id);
        return close_by_system(a, out, x, COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED,
                               reason, tick, err);
    }

    mc_approval_action *x = insert_action(a, &tmpl);
    add_transition(a, x, COMMON__V1__ACTION_STATUS__ACTION_STATUS_UNSPECIFIED,
                   MC_APPROVAL_ACTOR_AGENT, x->proposed_at_tick, x->reason);
    snprintf(reason, sizeof reason, "superseded by action %s", x->id);
    for (uint32_t i = 0; i < a->action_count && replaced > 0; i++) {
        mc_approval_action *old = &a->actions[a->order[i]];
        if (old == x || old->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING ||
            strcmp(old->target_id, x->target_id) != 0)
            continue;
        /* The newest replaced action is what the proposal supersedes when
         * the agent did not say; order is oldest first, so the last wins. */
        if (m->supersedes_action_id == NULL || m->supersedes_action_id[0] == '\0')
            mc_text_copy(x->supersedes_action_id, sizeof x->supersedes_action_id, old->id);
        replaced--;
        st = close_by_system(a, out, old, COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED,
                             reason, tick, err);
        if (st != MC_OK)
            return st;
    }
    return MC_OK;
}

mc_status mc_approval_on_incident(mc_approval *a, const Ops__V1__Incident *m, mc_outbox *out,
                                  mc_error *err)
{
    a->transition_count = 0;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: NULL incident");
    mc_status st = check_stamp(a, m->stamp, "incident", err);
    if (st != MC_OK)
        return st;
    mc_approval_incident rec;
    memset(&rec, 0, sizeof rec);
    if (m->id == NULL || m->id[0] == '\0' || !mc_text_copy(rec.id, sizeof rec.id, m->id))
        return mc_error_set(err, MC_ERR_INVALID, "approval: incident id empty or longer than %d",
                            MC_APPROVAL_ID_MAX - 1);
    adopt_input(a, m->stamp);

    uint32_t pos = 0;
    mc_approval_incident *inc = find_incident(a, rec.id, &pos);
    if (inc == NULL) {
        if (a->incident_count >= a->max_incidents) {
            /* Forget the oldest resolved incident, else the oldest: context
             * is nice to have, never worth refusing input for. */
            uint32_t victim = a->incident_count;
            for (int pass = 0; pass < 2 && victim == a->incident_count; pass++) {
                for (uint32_t i = 0; i < a->incident_count; i++) {
                    const mc_approval_incident *c = &a->incidents[i];
                    if (pass == 0 && !c->resolved)
                        continue;
                    if (victim == a->incident_count ||
                        order_cmp(c->opened_at_tick, c->id, a->incidents[victim].opened_at_tick,
                                  a->incidents[victim].id) < 0)
                        victim = i;
                }
            }
            mc_table_close(a->incidents, sizeof *a->incidents, a->incident_count, victim);
            a->incident_count--;
            find_incident(a, rec.id, &pos);
        }
        mc_table_open(a->incidents, sizeof *a->incidents, a->incident_count, pos);
        a->incident_count++;
        inc = &a->incidents[pos];
        *inc = rec;
    }
    /* A message without a severity (a malformed update) keeps the last one. */
    if (m->severity != COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_UNSPECIFIED)
        inc->severity = m->severity;
    mc_text_copy_cut(inc->title, sizeof inc->title, m->title);
    inc->resolved = m->resolved || m->state == OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED;
    inc->opened_at_tick = m->opened_at_tick;

    for (uint32_t i = 0; i < a->action_count; i++) {
        mc_approval_action *x = &a->actions[a->order[i]];
        if (strcmp(x->incident_id, inc->id) == 0)
            apply_incident_context(inc, x);
    }
    return MC_OK;
}

mc_status mc_approval_on_event(mc_approval *a, const Sim__V1__SimulationEvent *m, mc_outbox *out,
                               mc_error *err)
{
    a->transition_count = 0;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: NULL event");
    bool applied = m->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED;
    bool refused = m->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED;
    if (!applied && !refused)
        return MC_OK;
    mc_status st = check_stamp(a, m->stamp, "command event", err);
    if (st != MC_OK)
        return st;

    const char *action_id = m->action_id ? m->action_id : "";
    const char *command_id = m->command_id ? m->command_id : "";
    /* The command id is required: it exists only once the action is
     * approved, so an event can never apply to an approval that happened
     * after it (which keeps the replay's ordering argument simple). */
    if (command_id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "approval: command event %s names no command",
                            m->event_id ? m->event_id : "");
    mc_approval_action *x = NULL;
    if (action_id[0] != '\0') {
        x = find_action(a, action_id);
    } else {
        for (uint32_t i = 0; i < a->action_count && x == NULL; i++) {
            mc_approval_action *c = &a->actions[a->order[i]];
            if (strcmp(c->command_id, command_id) == 0)
                x = c;
        }
    }
    /* Unknown (evicted, or another orchestrator's), duplicate, or for a
     * command this core did not send: nothing to change. */
    if (x == NULL || x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED ||
        strcmp(command_id, x->command_id) != 0)
        return MC_OK;

    adopt_input(a, m->stamp);
    uint64_t tick = m->applied_at_tick ? m->applied_at_tick : m->stamp->tick;
    Common__V1__ActionStatus from = x->status;
    x->status = applied ? COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXECUTED
                        : COMMON__V1__ACTION_STATUS__ACTION_STATUS_FAILED;
    x->updated_at_tick = tick;
    const char *msg = m->message ? m->message : "";
    if (msg[0] != '\0')
        mc_text_copy_cut(x->status_reason, sizeof x->status_reason, msg);
    else
        snprintf(x->status_reason, sizeof x->status_reason, "%s at tick %" PRIu64,
                 applied ? "applied" : "refused", tick);
    add_transition(a, x, from, MC_APPROVAL_ACTOR_ENGINE, tick, x->status_reason);
    return MC_OK;
}

static bool policy_approves(mc_approval_mode mode, Common__V1__ActionType t)
{
    switch (mode) {
    case MC_APPROVAL_MODE_AUTO: return true;
    case MC_APPROVAL_MODE_AUTO_LOW_RISK:
        return t == COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE ||
               t == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP ||
               t == COMMON__V1__ACTION_TYPE__ACTION_TYPE_REBALANCE_TRAFFIC;
    case MC_APPROVAL_MODE_MANUAL: return false;
    }
    return false;
}

static const char *policy_reason(mc_approval_mode mode)
{
    return mode == MC_APPROVAL_MODE_AUTO
               ? "APPROVAL_MODE=auto approves every action"
               : "APPROVAL_MODE=auto-low-risk approves restarts, scale-ups and rebalances";
}

mc_status mc_approval_on_tick_end(mc_approval *a, uint64_t tick, mc_outbox *out, mc_error *err)
{
    a->transition_count = 0;
    if (a->closed_any && tick <= a->last_closed_tick)
        return mc_error_set(err, MC_ERR_STATE,
                            "approval: tick %" PRIu64 " is already closed (last closed %" PRIu64
                            ")",
                            tick, a->last_closed_tick);
    size_t msgs = 1; /* the watermark */
    for (uint32_t i = 0; i < a->action_count; i++) {
        const mc_approval_action *x = &a->actions[a->order[i]];
        if (x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING)
            continue;
        if (policy_approves(a->mode, x->action_type))
            msgs += 2;
        else if (x->expires_at_tick != 0 && tick >= x->expires_at_tick)
            msgs += 1;
    }
    mc_status st = need_room(out, msgs, "tick end", err);
    if (st != MC_OK)
        return st;

    char actor[MC_APPROVAL_ACTOR_MAX];
    snprintf(actor, sizeof actor, "policy:%s", mc_approval_mode_name(a->mode));
    for (uint32_t i = 0; i < a->action_count; i++) {
        mc_approval_action *x = &a->actions[a->order[i]];
        if (x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING ||
            !policy_approves(a->mode, x->action_type))
            continue;
        st = decide(a, out, x, true, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY, actor,
                    policy_reason(a->mode), tick, err);
        if (st != MC_OK)
            return st;
    }
    for (uint32_t i = 0; i < a->action_count; i++) {
        mc_approval_action *x = &a->actions[a->order[i]];
        if (x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING ||
            x->expires_at_tick == 0 || tick < x->expires_at_tick)
            continue;
        char reason[MC_APPROVAL_TEXT_MAX];
        snprintf(reason, sizeof reason, "no decision by tick %" PRIu64, x->expires_at_tick);
        st = close_by_system(a, out, x, COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXPIRED, reason,
                             tick, err);
        if (st != MC_OK)
            return st;
    }

    evict_finished(a);

    Common__V1__Stamp stamp;
    fill_stamp(a, &stamp, tick, a->producer_seq + 1);
    Ops__V1__Watermark w = OPS__V1__WATERMARK__INIT;
    w.stamp = &stamp;
    w.stage = COMMON__V1__STAGE__STAGE_ORCHESTRATOR;
    w.tick = tick;
    w.message_count = a->msgs_since_watermark;
    st = push(a, out, MC_APPROVAL_SUBJECT_WATERMARK, tick, &w.base, false, err);
    if (st != MC_OK)
        return st;
    a->msgs_since_watermark = 0;
    a->closed_any = true;
    a->last_closed_tick = tick;
    return MC_OK;
}

mc_status mc_approval_on_human_decision(mc_approval *a, const char *action_id, bool approve,
                                        const char *actor, const char *reason, mc_outbox *out,
                                        mc_approval_action *view, mc_error *err)
{
    a->transition_count = 0;
    if (action_id == NULL || action_id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "approval: action id is required");
    if (actor == NULL || actor[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "approval: actor is required");
    if (strlen(actor) >= MC_APPROVAL_ACTOR_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "approval: actor longer than %d bytes",
                            MC_APPROVAL_ACTOR_MAX - 1);
    if (!approve && (reason == NULL || reason[0] == '\0'))
        return mc_error_set(err, MC_ERR_INVALID, "approval: a rejection needs a reason");
    mc_approval_action *x = find_action(a, action_id);
    if (x == NULL)
        return mc_error_set(err, MC_ERR_NOT_FOUND, "approval: no action %s", action_id);
    if (x->status != COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING) {
        if (view != NULL)
            *view = *x;
        return mc_error_set(err, MC_ERR_STATE, "approval: action %s is %s, not PENDING", action_id,
                            mc_approval_status_name(x->status));
    }
    mc_status st = need_room(out, approve ? 2 : 1, "decision", err);
    if (st != MC_OK)
        return st;
    st = decide(a, out, x, approve, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN, actor,
                reason ? reason : "", mc_approval_open_tick(a), err);
    if (view != NULL)
        *view = *x;
    return st;
}

mc_status mc_approval_replay_decision(mc_approval *a, const Ops__V1__ApprovalDecision *d,
                                      mc_outbox *out, mc_approval_action *view, mc_error *err)
{
    a->transition_count = 0;
    if (d == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "approval: NULL decision");
    if (d->source != OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN)
        return mc_error_set(err, MC_ERR_INVALID,
                            "approval: decision %s is a %s decision; only human ones are inputs",
                            d->decision_id ? d->decision_id : "", source_name(d->source));
    mc_status st = check_stamp(a, d->stamp, "decision", err);
    if (st != MC_OK)
        return st;
    return mc_approval_on_human_decision(a, d->action_id, d->approved, d->actor, d->reason, out,
                                         view, err);
}

bool mc_approval_replay_due(const mc_approval *a, const Ops__V1__ApprovalDecision *d)
{
    return d != NULL && d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN &&
           d->stamp != NULL && d->stamp->producer_seq == mc_approval_next_seq(a) &&
           d->action_id != NULL && find_action(a, d->action_id) != NULL;
}

/* ---- queries ------------------------------------------------------------ */

mc_status mc_approval_get(const mc_approval *a, const char *action_id, mc_approval_action *out,
                          mc_error *err)
{
    const mc_approval_action *x = find_action(a, action_id ? action_id : "");
    if (x == NULL)
        return mc_error_set(err, MC_ERR_NOT_FOUND, "approval: no action %s",
                            action_id ? action_id : "(null)");
    *out = *x;
    return MC_OK;
}

static mc_status parse_cursor(const char *cursor, uint64_t *tick, char id[MC_APPROVAL_ID_MAX],
                              mc_error *err)
{
    const char *slash = strchr(cursor, '/');
    size_t digits = slash ? (size_t)(slash - cursor) : 0;
    bool ok = slash != NULL && digits > 0 && digits <= 20 && slash[1] != '\0';
    uint64_t v = 0;
    for (size_t i = 0; ok && i < digits; i++) {
        unsigned d = (unsigned)(cursor[i] - '0');
        if (d > 9 || v > (UINT64_MAX - d) / 10)
            ok = false;
        else
            v = v * 10 + d;
    }
    if (!ok || !mc_text_copy(id, MC_APPROVAL_ID_MAX, slash + 1))
        return mc_error_set(err, MC_ERR_INVALID, "approval: malformed list cursor");
    *tick = v;
    return MC_OK;
}

mc_status mc_approval_list(const mc_approval *a, uint32_t status_mask, const char *cursor,
                           mc_approval_action *out, size_t max, size_t *n, char *next_cursor,
                           mc_error *err)
{
    *n = 0;
    next_cursor[0] = '\0';
    if (out == NULL || max == 0)
        return mc_error_set(err, MC_ERR_INVALID, "approval: list needs room for one action");
    uint32_t start = 0;
    if (cursor != NULL && cursor[0] != '\0') {
        uint64_t tick = 0;
        char id[MC_APPROVAL_ID_MAX];
        mc_status st = parse_cursor(cursor, &tick, id, err);
        if (st != MC_OK)
            return st;
        start = order_search(a, tick, id, false);
    }
    const mc_approval_action *last = NULL;
    for (uint32_t i = start; i < a->action_count; i++) {
        const mc_approval_action *x = &a->actions[a->order[i]];
        if (status_mask != 0 && (status_mask & status_bit(x->status)) == 0)
            continue;
        if (*n == max) {
            /* One more matches: the page is full and there is a next one. */
            snprintf(next_cursor, MC_APPROVAL_CURSOR_MAX, "%" PRIu64 "/%s", last->proposed_at_tick,
                     last->id);
            return MC_OK;
        }
        out[(*n)++] = *x;
        last = x;
    }
    return MC_OK;
}

mc_status mc_approval_list_pending(const mc_approval *a, const char *cursor,
                                   mc_approval_action *out, size_t max, size_t *n,
                                   char *next_cursor, mc_error *err)
{
    return mc_approval_list(a, status_bit(COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING), cursor,
                            out, max, n, next_cursor, err);
}

uint32_t mc_approval_counts(const mc_approval *a, uint32_t counts[MC_APPROVAL_STATUS_COUNT])
{
    memset(counts, 0, MC_APPROVAL_STATUS_COUNT * sizeof counts[0]);
    for (uint32_t i = 0; i < a->action_count; i++) {
        uint32_t s = (uint32_t)a->actions[a->order[i]].status;
        if (s < MC_APPROVAL_STATUS_COUNT)
            counts[s]++;
    }
    return a->action_count;
}

/* ---- digest ------------------------------------------------------------- */

void mc_approval_digest(const mc_approval *a, uint8_t out[MC_DIGEST_BYTES])
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/approval/v1");
    mc_digest_u32(&d, (uint32_t)a->mode);
    mc_digest_u64(&d, a->expiry_ticks);
    mc_digest_u32(&d, a->max_actions);
    mc_digest_u32(&d, a->max_incidents);
    mc_digest_str(&d, a->run_id);
    mc_digest_u64(&d, a->producer_seq);
    mc_digest_bool(&d, a->closed_any);
    mc_digest_u64(&d, a->last_closed_tick);
    mc_digest_bool(&d, a->seen_input);
    mc_digest_u64(&d, a->first_input_tick);
    mc_digest_u32(&d, a->msgs_since_watermark);
    mc_digest_u32(&d, a->action_count);
    for (uint32_t i = 0; i < a->action_count; i++) {
        const mc_approval_action *x = &a->actions[a->order[i]];
        mc_digest_str(&d, x->id);
        mc_digest_str(&d, x->incident_id);
        mc_digest_u32(&d, (uint32_t)x->action_type);
        mc_digest_str(&d, x->target_id);
        mc_digest_u32(&d, (uint32_t)x->status);
        mc_digest_str(&d, x->reason);
        mc_digest_u64(&d, x->proposed_at_tick);
        mc_digest_u64(&d, x->expires_at_tick);
        mc_digest_u64(&d, x->updated_at_tick);
        mc_digest_str(&d, x->decided_by);
        mc_digest_str(&d, x->status_reason);
        mc_digest_str(&d, x->supersedes_action_id);
        mc_digest_u32(&d, x->escalation_level);
        mc_digest_str(&d, x->command_id);
        mc_digest_u32(&d, (uint32_t)x->incident_severity);
        mc_digest_str(&d, x->incident_title);
        mc_digest_bool(&d, x->incident_resolved);
    }
    mc_digest_u32(&d, a->incident_count);
    for (uint32_t i = 0; i < a->incident_count; i++) {
        const mc_approval_incident *inc = &a->incidents[i];
        mc_digest_str(&d, inc->id);
        mc_digest_u32(&d, (uint32_t)inc->severity);
        mc_digest_str(&d, inc->title);
        mc_digest_bool(&d, inc->resolved);
        mc_digest_u64(&d, inc->opened_at_tick);
    }
    mc_digest_final(&d, out);
}
