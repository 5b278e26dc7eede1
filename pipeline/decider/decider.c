#include "decider/decider.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "common/v1/stamp.pb-c.h"
#include "core/table.h"
#include "core/text.h"

/* Where a proposal is, as far as the decider knows. */
enum {
    P_NONE = 0,
    P_PENDING = 1,
    P_APPROVED = 2,
    P_EXECUTED = 3,
    P_FAILED = 4,
    P_REJECTED = 5,
    P_EXPIRED = 6,
    P_SUPERSEDED = 7
};

enum { KIND_SERVICE = 1, KIND_NODE = 2 };

typedef struct dec_proposal {
    int status;
    char action_id[MC_UUID_STR_LEN];
    uint64_t proposed_tick;
    uint64_t expires_tick;
    uint64_t finished_tick; /* applied, refused, rejected or expired at */
    uint32_t level;
    uint32_t rule;
    int escalated; /* its escalation was proposed (or found already tried) */
    int counted;   /* its effect is still counted in the target's pending state */
} dec_proposal;

struct mc_dec_incident {
    int used;
    char id[MC_UUID_STR_LEN];
    char target[MC_DECIDER_ID_MAX];
    char metric[MC_DECIDER_NAME_MAX];
    char rule_name[MC_DECIDER_NAME_MAX];
    int kind;
    int severity;
    int open;
    int state;
    uint64_t opened_tick;
    uint64_t updated_tick;
    uint64_t resolved_tick;
    uint64_t seq;
    double observed;
    double threshold;
    dec_proposal prop[MC_DECIDER_ACTION_TYPES];
    /* The last note written for it, so a hold is noted once, not every tick. */
    int note_type;
    char note_guard[32];
};

struct mc_dec_target {
    char id[MC_DECIDER_ID_MAX];
    int kind;
    int has_status;
    int node_status;
    int32_t replicas; /* ready replicas; -1 unknown */
    uint32_t max_replicas; /* 0: the config's default */
    int32_t pending_delta; /* in-flight scale proposals: +1 up, -1 down */
    int32_t drain_pending; /* in-flight drain proposals */
    int has_any;
    uint64_t last_any;
    uint32_t has_type; /* bit per action type */
    uint64_t last_type[MC_DECIDER_ACTION_TYPES];
};

struct mc_dec_action_ref {
    char id[MC_UUID_STR_LEN];
    uint32_t slot;
    uint32_t type;
};

/* ---- helpers ---------------------------------------------------------- */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static mc_status check_run(mc_decider *d, const Common__V1__Stamp *stamp, const char *what,
                           mc_error *err)
{
    if (stamp == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "decider: %s without a stamp", what);
    const char *run = str_or_empty(stamp->run_id);
    if (run[0] == '\0')
        return MC_OK;
    if (d->run_id[0] == '\0') {
        if (!mc_text_copy(d->run_id, sizeof d->run_id, run))
            return mc_error_set(err, MC_ERR_INVALID, "decider: run_id too long");
        return MC_OK;
    }
    if (strcmp(run, d->run_id) != 0)
        return mc_error_set(err, MC_ERR_STATE,
                            "decider: %s of run %.64s while deciding run %.64s; a new run needs "
                            "a new decider",
                            what, run, d->run_id);
    return MC_OK;
}

void mc_decider_config_default(mc_decider_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->max_in_flight = 5;
    cfg->target_cooldown_ticks = 5;
    cfg->action_expiry_ticks = 30;
    cfg->default_max_replicas = 10;
    cfg->max_incidents = 4096;
    cfg->max_targets = 4096;
    cfg->retention_ticks = 600;
}

mc_status mc_decider_init(mc_decider *d, const mc_decider_config *cfg, mc_error *err)
{
    memset(d, 0, sizeof *d);
    mc_decider_config def;
    mc_decider_config_default(&def);
    if (cfg == NULL)
        cfg = &def;
    if (cfg->rules)
        d->rules = *cfg->rules;
    else
        mc_decider_rules_builtin(&d->rules);
    mc_status st = mc_decider_rules_validate(&d->rules, err);
    if (st != MC_OK)
        return st;
    d->max_in_flight = cfg->max_in_flight ? cfg->max_in_flight : 5;
    d->target_cooldown = cfg->target_cooldown_ticks;
    d->expiry = cfg->action_expiry_ticks;
    d->default_max_replicas = cfg->default_max_replicas ? cfg->default_max_replicas : 10;
    d->max_incidents = cfg->max_incidents ? cfg->max_incidents : 4096;
    d->max_targets = cfg->max_targets ? cfg->max_targets : 4096;
    d->retention = cfg->retention_ticks ? cfg->retention_ticks : 600;
    if (d->max_incidents > (1u << 22) || d->max_targets > (1u << 22))
        return mc_error_set(err, MC_ERR_RANGE, "decider: max_incidents/max_targets above %u",
                            1u << 22);
    if (cfg->run_id && !mc_text_copy(d->run_id, sizeof d->run_id, cfg->run_id))
        return mc_error_set(err, MC_ERR_RANGE, "decider: run_id too long");
    d->incidents = calloc(d->max_incidents, sizeof *d->incidents);
    d->free_slots = calloc(d->max_incidents, sizeof *d->free_slots);
    d->by_id = calloc(d->max_incidents, sizeof *d->by_id);
    d->by_target = calloc(d->max_incidents, sizeof *d->by_target);
    d->action_cap = d->max_incidents * (MC_DECIDER_ACTION_TYPES - 1);
    d->actions = calloc(d->action_cap, sizeof *d->actions);
    d->targets = calloc(d->max_targets, sizeof *d->targets);
    if (!d->incidents || !d->free_slots || !d->by_id || !d->by_target || !d->actions ||
        !d->targets) {
        mc_decider_deinit(d);
        return mc_error_set(err, MC_ERR_NOMEM, "decider: out of memory");
    }
    /* Free slots are taken from the end: slot 0 first. */
    for (uint32_t i = 0; i < d->max_incidents; i++)
        d->free_slots[i] = d->max_incidents - 1 - i;
    d->free_count = d->max_incidents;
    return MC_OK;
}

void mc_decider_deinit(mc_decider *d)
{
    if (d == NULL)
        return;
    free(d->incidents);
    free(d->free_slots);
    free(d->by_id);
    free(d->by_target);
    free(d->actions);
    free(d->targets);
    memset(d, 0, sizeof *d);
}

/* ---- lookups (binary search over sorted arrays) ----------------------- */

static int cmp_target_id(const mc_decider *d, uint32_t slot, const char *target, const char *id)
{
    const mc_dec_incident *a = &d->incidents[slot];
    int c = strcmp(a->target, target);
    return c ? c : strcmp(a->id, id);
}

/* Position of id in by_id (or where it would go); *found set. */
static uint32_t by_id_pos(const mc_decider *d, const char *id, int *found)
{
    bool f = false;
    size_t pos = mc_table_find_id(d->incidents, sizeof *d->incidents,
                                  offsetof(mc_dec_incident, id), d->by_id, d->incident_count, id,
                                  &f);
    *found = f;
    return (uint32_t)pos;
}

static uint32_t by_target_pos(const mc_decider *d, const char *target, const char *id)
{
    uint32_t lo = 0, hi = d->incident_count;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cmp_target_id(d, d->by_target[mid], target, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static uint32_t action_pos(const mc_decider *d, const char *id, int *found)
{
    bool f = false;
    size_t pos = mc_table_find_id(d->actions, sizeof *d->actions, offsetof(mc_dec_action_ref, id),
                                  NULL, d->action_count, id, &f);
    *found = f;
    return (uint32_t)pos;
}

/* The target called id, or NULL with *pos_out (when not NULL) set to where
 * it would go. */
static mc_dec_target *target_find(mc_decider *d, const char *id, uint32_t *pos_out)
{
    bool found = false;
    size_t pos = mc_table_find_id(d->targets, sizeof *d->targets, offsetof(mc_dec_target, id),
                                  NULL, d->target_count, id, &found);
    if (found)
        return &d->targets[pos];
    if (pos_out)
        *pos_out = (uint32_t)pos;
    return NULL;
}

/* The target, created (with kind) when new; NULL when there is no room or
 * the id does not fit. */
static mc_dec_target *target_get(mc_decider *d, const char *id, int kind)
{
    if (id[0] == '\0' || !mc_text_fits(id, MC_DECIDER_ID_MAX))
        return NULL;
    uint32_t pos = 0;
    mc_dec_target *t = target_find(d, id, &pos);
    if (t != NULL) {
        if (t->kind == 0)
            t->kind = kind;
        return t;
    }
    if (d->target_count >= d->max_targets)
        return NULL;
    mc_table_open(d->targets, sizeof *d->targets, d->target_count, pos);
    d->target_count++;
    t = &d->targets[pos];
    memset(t, 0, sizeof *t);
    memcpy(t->id, id, strlen(id) + 1);
    t->kind = kind;
    t->replicas = -1;
    return t;
}

/* ---- notes ------------------------------------------------------------ */

static void add_note(mc_decider *d, mc_dec_incident *inc, uint64_t tick, int type,
                     const char *guard, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void add_note(mc_decider *d, mc_dec_incident *inc, uint64_t tick, int type,
                     const char *guard, const char *fmt, ...)
{
    if (inc->note_type == type && strcmp(inc->note_guard, guard) == 0)
        return;
    inc->note_type = type;
    snprintf(inc->note_guard, sizeof inc->note_guard, "%s", guard);
    d->stats.held++;
    if (d->note_count >= MC_DECIDER_NOTES_MAX) {
        d->stats.notes_dropped++;
        return;
    }
    mc_decider_note *n = &d->notes[d->note_count++];
    memset(n, 0, sizeof *n);
    n->tick = tick;
    memcpy(n->incident_id, inc->id, sizeof n->incident_id);
    memcpy(n->target_id, inc->target, sizeof n->target_id);
    n->action_type = type;
    snprintf(n->guardrail, sizeof n->guardrail, "%s", guard);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(n->reason, sizeof n->reason, fmt, ap);
    va_end(ap);
}

size_t mc_decider_notes(const mc_decider *d, const mc_decider_note **notes)
{
    *notes = d->notes;
    return d->note_count;
}

void mc_decider_notes_clear(mc_decider *d)
{
    d->note_count = 0;
}

/* ---- incidents -------------------------------------------------------- */

static int in_flight(const dec_proposal *p)
{
    return p->status == P_PENDING || p->status == P_APPROVED;
}

static void remove_incident(mc_decider *d, uint32_t slot)
{
    mc_dec_incident *inc = &d->incidents[slot];
    int found = 0;
    uint32_t pos = by_id_pos(d, inc->id, &found);
    if (found) {
        mc_table_close(d->by_id, sizeof *d->by_id, d->incident_count, pos);
        uint32_t tp = by_target_pos(d, inc->target, inc->id);
        mc_table_close(d->by_target, sizeof *d->by_target, d->incident_count, tp);
        d->incident_count--;
    }
    for (int t = 1; t < MC_DECIDER_ACTION_TYPES; t++) {
        if (inc->prop[t].status == P_NONE)
            continue;
        uint32_t ap = action_pos(d, inc->prop[t].action_id, &found);
        if (found) {
            mc_table_close(d->actions, sizeof *d->actions, d->action_count, ap);
            d->action_count--;
        }
    }
    memset(inc, 0, sizeof *inc);
    d->free_slots[d->free_count++] = slot;
}

static int removable(const mc_dec_incident *inc)
{
    if (!inc->used || inc->open)
        return 0;
    for (int t = 1; t < MC_DECIDER_ACTION_TYPES; t++)
        if (in_flight(&inc->prop[t]))
            return 0;
    return 1;
}

/* Frees the slot of the incident resolved longest ago (lowest id on a tie)
 * that has nothing in flight. */
static int evict_one(mc_decider *d)
{
    int best = -1;
    for (uint32_t i = 0; i < d->incident_count; i++) {
        uint32_t s = d->by_id[i];
        if (!removable(&d->incidents[s]))
            continue;
        if (best < 0 || d->incidents[s].resolved_tick < d->incidents[best].resolved_tick)
            best = (int)s;
    }
    if (best < 0)
        return 0;
    remove_incident(d, (uint32_t)best);
    return 1;
}

static int state_rank(int state)
{
    switch (state) {
    case OPS__V1__INCIDENT_STATE__INCIDENT_STATE_OPENED:
        return 1;
    case OPS__V1__INCIDENT_STATE__INCIDENT_STATE_UPDATED:
        return 2;
    case OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED:
        return 3;
    default:
        return 0;
    }
}

mc_status mc_decider_on_incident(mc_decider *d, const Ops__V1__Incident *m, mc_outbox *out,
                                 mc_error *err)
{
    (void)out;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "decider: NULL incident");
    mc_status st = check_run(d, m->stamp, "incident", err);
    if (st != MC_OK)
        return st;
    const char *id = str_or_empty(m->id);
    const char *target = str_or_empty(m->target_id);
    const char *metric = str_or_empty(m->metric_name);
    const char *rule = str_or_empty(m->rule_name);
    if (id[0] == '\0' || !mc_text_fits(id, MC_UUID_STR_LEN) || target[0] == '\0' ||
        !mc_text_fits(target, MC_DECIDER_ID_MAX) || !mc_text_fits(metric, MC_DECIDER_NAME_MAX) ||
        !mc_text_fits(rule, MC_DECIDER_NAME_MAX))
        return mc_error_set(err, MC_ERR_INVALID,
                            "decider: incident \"%.40s\" on \"%.64s\": missing or overlong id, "
                            "target, metric or rule name",
                            id, target);
    d->stats.incidents++;
    uint64_t tick = m->stamp->tick;
    if (d->has_closed && tick + d->retention < d->last_closed) {
        d->stats.incidents_stale++;
        return MC_OK;
    }
    int found = 0;
    uint32_t pos = by_id_pos(d, id, &found);
    mc_dec_incident *inc = NULL;
    int resolved = m->resolved || m->state == OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED;
    if (found) {
        inc = &d->incidents[d->by_id[pos]];
        /* Newer means a later update tick, or a later state in the same
         * tick; anything else is a redelivery or out of date. A resolved
         * incident never reopens. */
        int newer = m->updated_at_tick > inc->updated_tick ||
                    (m->updated_at_tick == inc->updated_tick &&
                     state_rank(m->state) > state_rank(inc->state));
        if (!newer || !inc->open) {
            d->stats.incidents_duplicate++;
            return MC_OK;
        }
    } else {
        int kind = str_or_empty(m->service_id)[0] ? KIND_SERVICE : KIND_NODE;
        if (target_get(d, target, kind) == NULL) {
            d->stats.incidents_dropped++;
            return mc_error_set(err, MC_ERR_LIMIT,
                                "decider: incident %s dropped: %u targets tracked (max_targets)",
                                id, d->max_targets);
        }
        if (d->free_count == 0 && !evict_one(d)) {
            d->stats.incidents_dropped++;
            return mc_error_set(err, MC_ERR_LIMIT,
                                "decider: incident %s dropped: %u incidents open or in flight "
                                "(max_incidents)",
                                id, d->max_incidents);
        }
        pos = by_id_pos(d, id, &found); /* eviction may have moved it */
        uint32_t slot = d->free_slots[--d->free_count];
        inc = &d->incidents[slot];
        memset(inc, 0, sizeof *inc);
        inc->used = 1;
        memcpy(inc->id, id, strlen(id) + 1);
        memcpy(inc->target, target, strlen(target) + 1);
        inc->kind = kind;
        inc->open = 1;
        inc->opened_tick = m->opened_at_tick;
        uint32_t tp = by_target_pos(d, target, id);
        mc_table_open(d->by_id, sizeof *d->by_id, d->incident_count, pos);
        d->by_id[pos] = slot;
        mc_table_open(d->by_target, sizeof *d->by_target, d->incident_count, tp);
        d->by_target[tp] = slot;
        d->incident_count++;
    }
    memcpy(inc->metric, metric, strlen(metric) + 1);
    memcpy(inc->rule_name, rule, strlen(rule) + 1);
    inc->severity = (int)m->severity;
    inc->state = (int)m->state;
    inc->updated_tick = m->updated_at_tick;
    inc->seq = m->stamp->producer_seq;
    inc->observed = m->observed_value;
    inc->threshold = m->threshold;
    if (resolved) {
        inc->open = 0;
        inc->resolved_tick = m->resolved_at_tick ? m->resolved_at_tick : tick;
    }
    return MC_OK;
}

/* ---- decisions and events --------------------------------------------- */

static dec_proposal *proposal_by_action(mc_decider *d, const char *action_id,
                                        mc_dec_incident **inc_out, int *type_out)
{
    int found = 0;
    uint32_t pos = action_pos(d, str_or_empty(action_id), &found);
    if (!found)
        return NULL;
    mc_dec_incident *inc = &d->incidents[d->actions[pos].slot];
    *inc_out = inc;
    *type_out = (int)d->actions[pos].type;
    return &inc->prop[d->actions[pos].type];
}

/* Stops counting p in its target's pending state; applied says whether
 * the engine carried it out (then the replica count moves). */
static void settle(mc_decider *d, const mc_dec_incident *inc, int type, dec_proposal *p,
                   int applied, int replicas_reported)
{
    if (!p->counted)
        return;
    p->counted = 0;
    mc_dec_target *t = target_find(d, inc->target, NULL);
    if (t == NULL)
        return;
    int32_t delta = type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP     ? 1
                    : type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN ? -1
                                                                              : 0;
    t->pending_delta -= delta;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE)
        t->drain_pending--;
    if (applied && !replicas_reported && t->replicas >= 0)
        t->replicas += delta;
}

mc_status mc_decider_on_decision(mc_decider *d, const Ops__V1__ApprovalDecision *m,
                                 mc_outbox *out, mc_error *err)
{
    (void)out;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "decider: NULL decision");
    mc_status st = check_run(d, m->stamp, "decision", err);
    if (st != MC_OK)
        return st;
    d->stats.decisions++;
    mc_dec_incident *inc = NULL;
    int type = 0;
    dec_proposal *p = proposal_by_action(d, m->action_id, &inc, &type);
    if (p == NULL) {
        d->stats.unknown_actions++;
        return MC_OK;
    }
    if (!in_flight(p))
        return MC_OK; /* finished already: a redelivery or a late decision */
    uint64_t at = m->effective_tick ? m->effective_tick : m->stamp->tick;
    if (m->approved) {
        p->status = P_APPROVED;
        return MC_OK;
    }
    if (m->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM)
        p->status = strstr(str_or_empty(m->reason), "supersed") ? P_SUPERSEDED : P_EXPIRED;
    else
        p->status = P_REJECTED;
    p->finished_tick = at;
    settle(d, inc, type, p, 0, 0);
    return MC_OK;
}

static const char *attribute(const Sim__V1__SimulationEvent *m, const char *key)
{
    for (size_t i = 0; i < m->n_attributes; i++)
        if (m->attributes[i] && strcmp(str_or_empty(m->attributes[i]->key), key) == 0)
            return str_or_empty(m->attributes[i]->value);
    return NULL;
}

mc_status mc_decider_on_event(mc_decider *d, const Sim__V1__SimulationEvent *m, mc_outbox *out,
                              mc_error *err)
{
    (void)out;
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "decider: NULL event");
    mc_status st = check_run(d, m->stamp, "event", err);
    if (st != MC_OK)
        return st;
    d->stats.events++;
    const char *target = str_or_empty(m->target_id);
    const char *reps = attribute(m, "replicas");
    const char *maxr = attribute(m, "max_replicas");
    uint32_t v = 0;
    int replicas_reported = 0;
    if (m->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_NODE_STATUS_CHANGED) {
        mc_dec_target *t = target_get(d, target, KIND_NODE);
        if (t != NULL) {
            t->has_status = 1;
            t->node_status = (int)m->node_status;
        }
    }
    if ((reps || maxr) && target[0]) {
        mc_dec_target *t = target_get(d, target, KIND_SERVICE);
        if (t != NULL && reps && mc_rulefile_parse_u32(reps, 1000000, &v) == MC_OK) {
            t->replicas = (int32_t)v;
            replicas_reported = 1;
        }
        if (t != NULL && maxr && mc_rulefile_parse_u32(maxr, 1000000, &v) == MC_OK)
            t->max_replicas = v;
    }
    int applied = m->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED;
    int refused = m->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED;
    if (!applied && !refused)
        return MC_OK;
    mc_dec_incident *inc = NULL;
    int type = 0;
    dec_proposal *p = proposal_by_action(d, m->action_id, &inc, &type);
    if (p == NULL) {
        d->stats.unknown_actions++;
        return MC_OK;
    }
    /* The engine's word is final: it may even follow a decision we took for
     * an expiry; a second report changes nothing. */
    if (p->status == P_EXECUTED || p->status == P_FAILED)
        return MC_OK;
    p->status = applied ? P_EXECUTED : P_FAILED;
    p->finished_tick = m->applied_at_tick ? m->applied_at_tick : m->stamp->tick;
    settle(d, inc, type, p, applied, replicas_reported);
    return MC_OK;
}

/* ---- deciding --------------------------------------------------------- */

/* Another open incident on inc's target with this metric, WARNING or worse.
 * [lo, hi) is the target's range in by_target. */
static int other_open(const mc_decider *d, const mc_dec_incident *inc, uint32_t lo, uint32_t hi,
                      const char *metric)
{
    for (uint32_t i = lo; i < hi; i++) {
        const mc_dec_incident *o = &d->incidents[d->by_target[i]];
        if (o != inc && o->open && strcmp(o->metric, metric) == 0 &&
            o->severity >= COMMON__V1__INCIDENT_SEVERITY__INCIDENT_SEVERITY_WARNING)
            return 1;
    }
    return 0;
}

static int rule_matches(const mc_decider *d, const mc_decider_rule *r, const mc_dec_incident *inc,
                        uint64_t tick, uint32_t lo, uint32_t hi)
{
    if (r->metric[0] && strcmp(r->metric, inc->metric) != 0)
        return 0;
    if (r->incident_rule[0] && strcmp(r->incident_rule, inc->rule_name) != 0)
        return 0;
    if ((r->target == MC_RULE_TARGET_SERVICE && inc->kind != KIND_SERVICE) ||
        (r->target == MC_RULE_TARGET_NODE && inc->kind != KIND_NODE))
        return 0;
    if (r->min_severity && inc->severity < r->min_severity)
        return 0;
    if (r->max_severity && inc->severity > r->max_severity)
        return 0;
    if (r->min_open_ticks && (tick < inc->opened_tick || tick - inc->opened_tick < r->min_open_ticks))
        return 0;
    if (r->requires_open[0] && !other_open(d, inc, lo, hi, r->requires_open))
        return 0;
    if (r->unless_open[0] && other_open(d, inc, lo, hi, r->unless_open))
        return 0;
    return 1;
}

static uint32_t ready_nodes_besides(const mc_decider *d, const char *node)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < d->target_count; i++) {
        const mc_dec_target *t = &d->targets[i];
        if (t->kind == KIND_NODE && t->has_status &&
            t->node_status == COMMON__V1__NODE_STATUS__NODE_STATUS_READY &&
            t->drain_pending == 0 && strcmp(t->id, node) != 0)
            n++;
    }
    return n;
}

enum { PROPOSED = 0, HELD = 1, EXISTS = 2 };

/* Checks the guardrails for a new proposal of type on inc's target; on a
 * hold writes the note and returns HELD. */
static int guardrails(mc_decider *d, mc_dec_incident *inc, mc_dec_target *t, int type,
                      const mc_decider_rule *r, uint64_t tick)
{
    const char *tn = mc_rulefile_action_type_name(type);
    if ((t->has_type & (1u << type)) && tick < t->last_type[type] + r->cooldown_ticks) {
        add_note(d, inc, tick, type, "cooldown",
                 "%s on %s held back: the last %s on it was proposed at tick %llu and rule %s "
                 "waits %u ticks between them",
                 tn, t->id, tn, (unsigned long long)t->last_type[type], r->name, r->cooldown_ticks);
        return HELD;
    }
    if (t->has_any && tick < t->last_any + d->target_cooldown) {
        add_note(d, inc, tick, type, "target_cooldown",
                 "%s on %s held back: an action on it was proposed at tick %llu and targets rest "
                 "%u ticks between actions",
                 tn, t->id, (unsigned long long)t->last_any, d->target_cooldown);
        return HELD;
    }
    if (d->in_flight >= d->max_in_flight) {
        add_note(d, inc, tick, type, "max_in_flight",
                 "%s on %s held back: %u actions are already proposed and not finished (at most "
                 "%u at a time)",
                 tn, t->id, d->in_flight, d->max_in_flight);
        return HELD;
    }
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE &&
        ready_nodes_besides(d, t->id) == 0) {
        add_note(d, inc, tick, type, "last_ready_node",
                 "DRAIN_NODE on %s held back: no other node is known to be ready, and the last "
                 "ready node is never drained",
                 t->id);
        return HELD;
    }
    uint32_t max = t->max_replicas ? t->max_replicas : d->default_max_replicas;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN) {
        if (t->replicas < 0) {
            add_note(d, inc, tick, type, "replicas_unknown",
                     "SCALE_DOWN on %s held back: its replica count is unknown, so scaling down "
                     "could leave it without a replica",
                     t->id);
            return HELD;
        }
        if (t->replicas + t->pending_delta - 1 < 1) {
            add_note(d, inc, tick, type, "min_replicas",
                     "SCALE_DOWN on %s held back: it would leave %d replica(s); a service keeps "
                     "at least 1",
                     t->id, (int)(t->replicas + t->pending_delta - 1));
            return HELD;
        }
    }
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP && t->replicas >= 0 &&
        t->replicas + t->pending_delta + 1 > (int64_t)max) {
        add_note(d, inc, tick, type, "max_replicas",
                 "SCALE_UP on %s held back: it has %d replica(s) (with pending changes) and its "
                 "maximum is %u",
                 t->id, (int)(t->replicas + t->pending_delta), max);
        return HELD;
    }
    return PROPOSED;
}

static mc_status emit_action(mc_decider *d, const mc_dec_incident *inc, int type,
                             const dec_proposal *p, const char *reason, uint64_t tick,
                             mc_outbox *out, mc_error *err)
{
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    stamp.run_id = d->run_id;
    stamp.tick = tick;
    stamp.producer = (char *)MC_DECIDER_PRODUCER;
    stamp.producer_seq = d->producer_seq + 1;
    a.stamp = &stamp;
    a.id = (char *)p->action_id;
    a.incident_id = (char *)inc->id;
    a.action_type = (Common__V1__ActionType)type;
    a.target_id = (char *)inc->target;
    a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
    a.reason = (char *)reason;
    a.proposed_at_tick = tick;
    a.expires_at_tick = p->expires_tick;
    a.updated_at_tick = tick;
    a.escalation_level = p->level;
    mc_status st = mc_outbox_push(out, MC_DECIDER_SUBJECT_ACTIONS, tick, stamp.producer_seq,
                                  &a.base);
    if (st != MC_OK)
        return mc_error_set(err, st, "decider: cannot queue action %s at tick %llu: %s",
                            p->action_id, (unsigned long long)tick, mc_status_name(st));
    d->producer_seq++;
    d->stats.messages = d->producer_seq;
    return MC_OK;
}

/* Proposes type for inc unless it exists or a guardrail holds it. */
static mc_status propose(mc_decider *d, mc_dec_incident *inc, int type, uint32_t rule_index,
                         uint32_t level, const char *reason, uint64_t tick, mc_outbox *out,
                         int *result, uint32_t *emitted, mc_error *err)
{
    const mc_decider_rule *r = &d->rules.rules[rule_index];
    dec_proposal *p = &inc->prop[type];
    if (p->status != P_NONE) {
        if (p->status == P_FAILED)
            add_note(d, inc, tick, type, "refused_before",
                     "%s on %s is not proposed again: the engine refused it at tick %llu for "
                     "this incident",
                     mc_rulefile_action_type_name(type), inc->target,
                     (unsigned long long)p->finished_tick);
        *result = EXISTS;
        return MC_OK;
    }
    mc_dec_target *t = target_get(d, inc->target, inc->kind);
    if (t == NULL) {
        *result = HELD;
        return MC_OK;
    }
    *result = guardrails(d, inc, t, type, r, tick);
    if (*result != PROPOSED)
        return MC_OK;
    if (d->action_count >= d->action_cap)
        return mc_error_set(err, MC_ERR_INTERNAL, "decider: action index full");
    char extra[MC_UUID_STR_LEN + 32];
    snprintf(extra, sizeof extra, "%s:%s", inc->id, mc_rulefile_action_type_name(type));
    memset(p, 0, sizeof *p);
    mc_id_uuid(p->action_id, "action", d->run_id, tick, inc->target, extra);
    p->status = P_PENDING;
    p->proposed_tick = tick;
    p->expires_tick = d->expiry ? tick + d->expiry : 0;
    p->level = level;
    p->rule = rule_index;
    p->counted = 1;
    int found = 0;
    uint32_t pos = action_pos(d, p->action_id, &found);
    if (found)
        return mc_error_set(err, MC_ERR_INTERNAL, "decider: action id %s collides",
                            p->action_id);
    mc_table_open(d->actions, sizeof *d->actions, d->action_count, pos);
    memcpy(d->actions[pos].id, p->action_id, sizeof p->action_id);
    d->actions[pos].slot = (uint32_t)(inc - d->incidents);
    d->actions[pos].type = (uint32_t)type;
    d->action_count++;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP)
        t->pending_delta++;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN)
        t->pending_delta--;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE)
        t->drain_pending++;
    t->has_type |= 1u << type;
    t->last_type[type] = tick;
    t->has_any = 1;
    t->last_any = tick;
    d->in_flight++;
    d->stats.actions_proposed++;
    inc->note_type = 0;
    inc->note_guard[0] = '\0';
    (*emitted)++;
    return emit_action(d, inc, type, p, reason, tick, out, err);
}

static mc_status decide(mc_decider *d, mc_dec_incident *inc, uint64_t tick, uint32_t lo,
                        uint32_t hi, mc_outbox *out, uint32_t *emitted, mc_error *err)
{
    char reason[600];
    int result = HELD;
    /* Escalation: an executed action whose incident is still open after its
     * rule's escalate_after_ticks. */
    for (int type = 1; type < MC_DECIDER_ACTION_TYPES; type++) {
        dec_proposal *p = &inc->prop[type];
        if (p->status != P_EXECUTED || p->escalated)
            continue;
        const mc_decider_rule *r = &d->rules.rules[p->rule];
        if (r->action != type || r->escalate_to == 0 ||
            tick < p->finished_tick + r->escalate_after_ticks)
            continue;
        snprintf(reason, sizeof reason,
                 "Escalation: %s applied at tick %llu did not resolve %s on %s within %u ticks "
                 "(%s at %.2f, threshold %.2f); trying %s.",
                 mc_rulefile_action_type_name(type), (unsigned long long)p->finished_tick,
                 inc->rule_name, inc->target, r->escalate_after_ticks, inc->metric, inc->observed,
                 inc->threshold, mc_rulefile_action_type_name(r->escalate_to));
        mc_status st = propose(d, inc, r->escalate_to, p->rule, p->level + 1, reason, tick, out,
                               &result, emitted, err);
        if (st != MC_OK)
            return st;
        if (result != HELD)
            p->escalated = 1;
        if (result == PROPOSED) {
            d->stats.escalations++;
            return MC_OK; /* one new proposal per incident per tick */
        }
    }
    for (size_t i = 0; i < d->rules.count; i++) {
        const mc_decider_rule *r = &d->rules.rules[i];
        if (!rule_matches(d, r, inc, tick, lo, hi))
            continue;
        snprintf(reason, sizeof reason, "%s (%s on %s: %s at %.2f, threshold %.2f, severity %s; "
                                        "rule %s)",
                 r->reason, inc->rule_name, inc->target, inc->metric, inc->observed,
                 inc->threshold, mc_rulefile_severity_name(inc->severity), r->name);
        return propose(d, inc, r->action, (uint32_t)i, 0, reason, tick, out, &result, emitted,
                       err);
    }
    return MC_OK;
}

mc_status mc_decider_on_tick_end(mc_decider *d, uint64_t tick, mc_outbox *out, mc_error *err)
{
    if (d->has_closed && tick <= d->last_closed)
        return MC_OK;
    /* Housekeeping: local expiry of pending proposals past their expiry
     * (the orchestrator expires them too; its decision then changes
     * nothing), the in-flight count, and forgetting old resolved incidents. */
    d->in_flight = 0;
    for (uint32_t i = 0; i < d->incident_count;) {
        uint32_t slot = d->by_id[i];
        mc_dec_incident *inc = &d->incidents[slot];
        for (int type = 1; type < MC_DECIDER_ACTION_TYPES; type++) {
            dec_proposal *p = &inc->prop[type];
            if (p->status == P_PENDING && p->expires_tick && tick >= p->expires_tick) {
                p->status = P_EXPIRED;
                p->finished_tick = p->expires_tick;
                settle(d, inc, type, p, 0, 0);
            }
            if (in_flight(p))
                d->in_flight++;
        }
        if (removable(inc) && inc->resolved_tick + d->retention < tick) {
            remove_incident(d, slot);
            continue; /* by_id shifted: i now names the next one */
        }
        i++;
    }
    uint32_t emitted = 0;
    for (uint32_t lo = 0; lo < d->incident_count;) {
        const char *target = d->incidents[d->by_target[lo]].target;
        uint32_t hi = lo + 1;
        while (hi < d->incident_count &&
               strcmp(d->incidents[d->by_target[hi]].target, target) == 0)
            hi++;
        for (uint32_t i = lo; i < hi; i++) {
            mc_dec_incident *inc = &d->incidents[d->by_target[i]];
            if (!inc->open)
                continue;
            mc_status st = decide(d, inc, tick, lo, hi, out, &emitted, err);
            if (st != MC_OK)
                return st;
        }
        lo = hi;
    }
    d->has_closed = 1;
    d->last_closed = tick;
    d->stats.ticks_closed++;
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
    stamp.run_id = d->run_id;
    stamp.tick = tick;
    stamp.producer = (char *)MC_DECIDER_PRODUCER;
    stamp.producer_seq = d->producer_seq + 1;
    wm.stamp = &stamp;
    wm.stage = COMMON__V1__STAGE__STAGE_AGENT;
    wm.tick = tick;
    wm.message_count = emitted;
    mc_status st = mc_outbox_push(out, MC_DECIDER_SUBJECT_WATERMARK, tick, stamp.producer_seq,
                                  &wm.base);
    if (st != MC_OK)
        return mc_error_set(err, st, "decider: cannot queue the watermark of tick %llu: %s",
                            (unsigned long long)tick, mc_status_name(st));
    d->producer_seq++;
    d->stats.messages = d->producer_seq;
    return MC_OK;
}

/* ---- digest ----------------------------------------------------------- */

void mc_decider_digest(const mc_decider *d, uint8_t out[MC_DIGEST_BYTES])
{
    mc_digest h;
    mc_digest_init(&h, "mc.decider/v1");
    mc_digest_str(&h, d->run_id);
    const uint32_t cfg[] = {d->max_in_flight, d->target_cooldown, d->expiry,
                            d->default_max_replicas, d->max_incidents, d->max_targets,
                            d->retention};
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++)
        mc_digest_u32(&h, cfg[i]);
    mc_digest_u64(&h, d->rules.count);
    for (size_t i = 0; i < d->rules.count; i++) {
        const mc_decider_rule *r = &d->rules.rules[i];
        mc_digest_str(&h, r->name);
        mc_digest_str(&h, r->metric);
        mc_digest_str(&h, r->incident_rule);
        mc_digest_u32(&h, (uint32_t)r->target);
        mc_digest_u32(&h, (uint32_t)r->min_severity);
        mc_digest_u32(&h, (uint32_t)r->max_severity);
        mc_digest_str(&h, r->requires_open);
        mc_digest_str(&h, r->unless_open);
        mc_digest_u32(&h, r->min_open_ticks);
        mc_digest_u32(&h, (uint32_t)r->action);
        mc_digest_u32(&h, r->cooldown_ticks);
        mc_digest_u32(&h, (uint32_t)r->escalate_to);
        mc_digest_u32(&h, r->escalate_after_ticks);
        mc_digest_str(&h, r->reason);
    }
    mc_digest_bool(&h, d->has_closed);
    mc_digest_u64(&h, d->last_closed);
    mc_digest_u64(&h, d->producer_seq);
    mc_digest_u32(&h, d->in_flight);
    const mc_decider_stats *s = &d->stats;
    const uint64_t counters[] = {s->incidents,        s->incidents_duplicate, s->incidents_stale,
                                 s->incidents_dropped, s->decisions,          s->events,
                                 s->unknown_actions,  s->actions_proposed,    s->escalations,
                                 s->held,             s->ticks_closed,        s->messages};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        mc_digest_u64(&h, counters[i]);
    mc_digest_u32(&h, d->incident_count);
    for (uint32_t i = 0; i < d->incident_count; i++) {
        const mc_dec_incident *inc = &d->incidents[d->by_id[i]];
        mc_digest_str(&h, inc->id);
        mc_digest_str(&h, inc->target);
        mc_digest_str(&h, inc->metric);
        mc_digest_str(&h, inc->rule_name);
        mc_digest_u32(&h, (uint32_t)inc->kind);
        mc_digest_u32(&h, (uint32_t)inc->severity);
        mc_digest_bool(&h, inc->open);
        mc_digest_u32(&h, (uint32_t)inc->state);
        mc_digest_u64(&h, inc->opened_tick);
        mc_digest_u64(&h, inc->updated_tick);
        mc_digest_u64(&h, inc->resolved_tick);
        mc_digest_u64(&h, inc->seq);
        mc_digest_f64(&h, inc->observed);
        mc_digest_f64(&h, inc->threshold);
        mc_digest_u32(&h, (uint32_t)inc->note_type);
        mc_digest_str(&h, inc->note_guard);
        for (int t = 1; t < MC_DECIDER_ACTION_TYPES; t++) {
            const dec_proposal *p = &inc->prop[t];
            mc_digest_u32(&h, (uint32_t)p->status);
            if (p->status == P_NONE)
                continue;
            mc_digest_str(&h, p->action_id);
            mc_digest_u64(&h, p->proposed_tick);
            mc_digest_u64(&h, p->expires_tick);
            mc_digest_u64(&h, p->finished_tick);
            mc_digest_u32(&h, p->level);
            mc_digest_u32(&h, p->rule);
            mc_digest_bool(&h, p->escalated);
            mc_digest_bool(&h, p->counted);
        }
    }
    mc_digest_u32(&h, d->target_count);
    for (uint32_t i = 0; i < d->target_count; i++) {
        const mc_dec_target *t = &d->targets[i];
        mc_digest_str(&h, t->id);
        mc_digest_u32(&h, (uint32_t)t->kind);
        mc_digest_bool(&h, t->has_status);
        mc_digest_u32(&h, (uint32_t)t->node_status);
        mc_digest_i64(&h, t->replicas);
        mc_digest_u32(&h, t->max_replicas);
        mc_digest_i64(&h, t->pending_delta);
        mc_digest_i64(&h, t->drain_pending);
        mc_digest_bool(&h, t->has_any);
        mc_digest_u64(&h, t->last_any);
        mc_digest_u32(&h, t->has_type);
        for (int k = 1; k < MC_DECIDER_ACTION_TYPES; k++)
            mc_digest_u64(&h, t->last_type[k]);
    }
    mc_digest_final(&h, out);
}

void mc_decider_stats_get(const mc_decider *d, mc_decider_stats *out)
{
    *out = d->stats;
}

uint32_t mc_decider_in_flight(const mc_decider *d)
{
    return d->in_flight;
}
