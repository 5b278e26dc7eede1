#include "detector/detector.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "common/v1/stamp.pb-c.h"
#include "core/ids.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"

#define EMPTY_TICK UINT64_MAX
/* Values are clamped to +-1e9 and summed in micro-units: 1e15 per sample
 * times at most 4096 samples stays far inside int64. */
#define FX_SCALE 1e6
#define VALUE_CLAMP 1e9

typedef struct det_window {
    int64_t sum_fx; /* sum of the window's values in micro-units */
    uint32_t count; /* samples in the window */
    uint32_t viol;  /* samples that violate the rule on their own */
    uint32_t dq_head;
    uint32_t dq_len;
} det_window;

typedef struct det_series {
    uint32_t ring_cap;
    uint32_t nrules;
    int has_pending;
    double pending; /* the open tick's value so far (maximum of its samples) */
    int has_last;
    uint64_t last_tick; /* the latest tick with a value */
    uint64_t *ring_tick; /* tick stored in each slot, EMPTY_TICK if none */
    double *ring_val;
    det_window *w; /* one per rule of the metric */
    uint64_t *dq;  /* deque storage: ticks, values are in the ring */
} det_series;

typedef struct det_hyst {
    uint32_t held;    /* consecutive ticks the condition held */
    uint32_t cleared; /* consecutive ticks it did not */
    int active;
    int has_value;
    double value; /* the latest aggregate */
} det_hyst;

typedef struct det_incident {
    int open;
    char id[MC_UUID_STR_LEN];
    uint64_t opened_tick;
    int severity;
    uint32_t rule;   /* the rule that spoke for it in the last message */
    double reported; /* the observed value of the last message */
} det_incident;

enum { KIND_SERVICE = 1, KIND_NODE = 2 };

struct mc_det_target {
    char id[MC_DETECTOR_ID_MAX];
    int kind;
    det_series **series; /* per metric, NULL until a sample arrives */
    det_hyst *hyst;      /* per rule */
    det_incident *inc;   /* per group */
};

/* ---- small helpers ---------------------------------------------------- */

static size_t align8(size_t n)
{
    return (n + 7u) & ~(size_t)7u;
}

static uint64_t hash_str(const char *s)
{
    /* FNV-1a: only used to find a target, never to order anything. */
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static int64_t to_fx(double v)
{
    if (v > VALUE_CLAMP)
        v = VALUE_CLAMP;
    if (v < -VALUE_CLAMP)
        v = -VALUE_CLAMP;
    double x = v * FX_SCALE;
    return (int64_t)(x >= 0 ? x + 0.5 : x - 0.5);
}

static double abs_d(double v)
{
    return v < 0 ? -v : v;
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

/* ---- init / deinit ---------------------------------------------------- */

static int find_name(char (*names)[MC_DETECTOR_NAME_MAX], size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], s) == 0)
            return (int)i;
    return -1;
}

mc_status mc_detector_init(mc_detector *d, const mc_detector_config *cfg, mc_error *err)
{
    memset(d, 0, sizeof *d);
    mc_detector_config def = {0};
    if (cfg == NULL)
        cfg = &def;
    if (cfg->rules)
        d->rules = *cfg->rules;
    else
        mc_detector_rules_builtin(&d->rules);
    mc_status st = mc_detector_rules_validate(&d->rules, err);
    if (st != MC_OK)
        return st;
    d->tick_ms = cfg->tick_duration_ms ? cfg->tick_duration_ms : 1000;
    d->max_targets = cfg->max_targets ? cfg->max_targets : 20000;
    if (d->max_targets > (1u << 24))
        return mc_error_set(err, MC_ERR_RANGE, "detector: max_targets %u is above %u",
                            d->max_targets, 1u << 24);
    d->change_ratio = cfg->value_change_ratio > 0 ? cfg->value_change_ratio : 0.10;
    if (!isfinite(d->change_ratio))
        return mc_error_set(err, MC_ERR_RANGE, "detector: value_change_ratio is not finite");
    if (cfg->run_id && mc_rulefile_copy(d->run_id, sizeof d->run_id, cfg->run_id) != MC_OK)
        return mc_error_set(err, MC_ERR_RANGE, "detector: run_id longer than %d bytes",
                            MC_DETECTOR_RUN_ID_MAX - 1);

    /* Compile the rules: window lengths, metric and group indices. */
    for (size_t i = 0; i < d->rules.count; i++) {
        const mc_detector_rule *r = &d->rules.rules[i];
        uint64_t ms = (uint64_t)r->window_seconds * 1000u;
        uint64_t w = (ms + d->tick_ms - 1) / d->tick_ms;
        if (w == 0)
            w = 1;
        if (w > MC_DETECTOR_WINDOW_TICKS_MAX)
            return mc_error_set(err, MC_ERR_RANGE,
                                "detector: rule \"%s\": window of %u s is %llu ticks of %u ms, "
                                "at most %u",
                                r->name, r->window_seconds, (unsigned long long)w, d->tick_ms,
                                MC_DETECTOR_WINDOW_TICKS_MAX);
        d->window_ticks[i] = (uint32_t)w;
        int m = find_name(d->metrics, d->metric_count, r->metric);
        if (m < 0) {
            m = (int)d->metric_count++;
            memcpy(d->metrics[m], r->metric, MC_DETECTOR_NAME_MAX);
        }
        d->rule_metric[i] = (uint16_t)m;
        d->rule_slot[i] = d->metric_rule_count[m];
        d->metric_rules[m][d->metric_rule_count[m]++] = (uint16_t)i;
        if (d->metric_ring[m] < w)
            d->metric_ring[m] = (uint32_t)w;
        if (r->agg == MC_RULE_AGG_MIN || r->agg == MC_RULE_AGG_MAX) {
            d->metric_dq_off[m][d->rule_slot[i]] = d->metric_dq_total[m];
            d->metric_dq_total[m] += (uint32_t)w;
        }
        int g = find_name(d->groups, d->group_count, r->group);
        if (g < 0) {
            g = (int)d->group_count++;
            memcpy(d->groups[g], r->group, MC_DETECTOR_NAME_MAX);
        }
        d->rule_group[i] = (uint16_t)g;
        d->group_rules[g][d->group_rule_count[g]++] = (uint16_t)i;
    }

    uint32_t cap = 16;
    while (cap < 2 * d->max_targets)
        cap *= 2;
    d->hash_cap = cap;
    d->targets = calloc(d->max_targets, sizeof *d->targets);
    d->order = calloc(d->max_targets, sizeof *d->order);
    d->hash = calloc(cap, sizeof *d->hash);
    if (d->targets == NULL || d->order == NULL || d->hash == NULL) {
        mc_detector_deinit(d);
        return mc_error_set(err, MC_ERR_NOMEM, "detector: out of memory for %u targets",
                            d->max_targets);
    }
    return MC_OK;
}

void mc_detector_deinit(mc_detector *d)
{
    if (d == NULL)
        return;
    for (uint32_t i = 0; d->targets && i < d->target_count; i++) {
        mc_det_target *t = d->targets[i];
        for (size_t m = 0; t && m < d->metric_count; m++)
            free(t->series[m]);
        free(t);
    }
    free(d->targets);
    free(d->order);
    free(d->hash);
    memset(d, 0, sizeof *d);
}

/* ---- targets and series ----------------------------------------------- */

static mc_det_target *target_find(const mc_detector *d, const char *id, uint32_t *slot_out)
{
    uint32_t mask = d->hash_cap - 1;
    uint32_t slot = (uint32_t)hash_str(id) & mask;
    /* Bounded: the table is at most half full, so an empty slot comes. */
    for (uint32_t probes = 0; probes < d->hash_cap; probes++) {
        uint32_t v = d->hash[slot];
        if (v == 0) {
            *slot_out = slot;
            return NULL;
        }
        if (strcmp(d->targets[v - 1]->id, id) == 0)
            return d->targets[v - 1];
        slot = (slot + 1) & mask;
    }
    *slot_out = UINT32_MAX;
    return NULL;
}

static mc_det_target *target_create(mc_detector *d, const char *id, int kind, uint32_t slot)
{
    size_t off_series = align8(sizeof(mc_det_target));
    size_t off_hyst = align8(off_series + d->metric_count * sizeof(det_series *));
    size_t off_inc = align8(off_hyst + d->rules.count * sizeof(det_hyst));
    size_t total = off_inc + d->group_count * sizeof(det_incident);
    uint8_t *block = calloc(1, total);
    if (block == NULL)
        return NULL;
    mc_det_target *t = (mc_det_target *)block;
    memcpy(t->id, id, strlen(id) + 1);
    t->kind = kind;
    t->series = (det_series **)(block + off_series);
    t->hyst = (det_hyst *)(block + off_hyst);
    t->inc = (det_incident *)(block + off_inc);

    uint32_t idx = d->target_count++;
    d->targets[idx] = t;
    d->hash[slot] = idx + 1;
    /* Keep order sorted by id: binary search, then shift. Targets arrive
     * once each, so the shift is paid once per target. */
    uint32_t lo = 0, hi = idx;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (strcmp(d->targets[d->order[mid]]->id, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    memmove(&d->order[lo + 1], &d->order[lo], (size_t)(idx - lo) * sizeof *d->order);
    d->order[lo] = idx;
    d->stats.targets = d->target_count;
    return t;
}

static det_series *series_create(const mc_detector *d, size_t m)
{
    uint32_t cap = d->metric_ring[m];
    uint32_t nrules = d->metric_rule_count[m];
    size_t off_tick = align8(sizeof(det_series));
    size_t off_val = off_tick + (size_t)cap * sizeof(uint64_t);
    size_t off_w = align8(off_val + (size_t)cap * sizeof(double));
    size_t off_dq = align8(off_w + (size_t)nrules * sizeof(det_window));
    size_t total = off_dq + (size_t)d->metric_dq_total[m] * sizeof(uint64_t);
    uint8_t *block = calloc(1, total);
    if (block == NULL)
        return NULL;
    det_series *s = (det_series *)block;
    s->ring_cap = cap;
    s->nrules = nrules;
    s->ring_tick = (uint64_t *)(block + off_tick);
    s->ring_val = (double *)(block + off_val);
    s->w = (det_window *)(block + off_w);
    s->dq = (uint64_t *)(block + off_dq);
    for (uint32_t i = 0; i < cap; i++)
        s->ring_tick[i] = EMPTY_TICK;
    return s;
}

/* ---- snapshots -------------------------------------------------------- */

static int metric_index(const mc_detector *d, const char *name)
{
    for (size_t i = 0; i < d->metric_count; i++)
        if (strcmp(d->metrics[i], name) == 0)
            return (int)i;
    return -1;
}

mc_status mc_detector_on_snapshot(mc_detector *d, const Sim__V1__MetricSnapshot *s,
                                  mc_outbox *out, mc_error *err)
{
    (void)out;
    if (s == NULL || s->stamp == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "detector: snapshot without a stamp");
    const char *run = str_or_empty(s->stamp->run_id);
    if (d->run_id[0] == '\0' && run[0] != '\0') {
        if (mc_rulefile_copy(d->run_id, sizeof d->run_id, run) != MC_OK)
            return mc_error_set(err, MC_ERR_INVALID, "detector: run_id longer than %d bytes",
                                MC_DETECTOR_RUN_ID_MAX - 1);
    } else if (run[0] != '\0' && strcmp(run, d->run_id) != 0) {
        return mc_error_set(err, MC_ERR_STATE,
                            "detector: snapshot of run %.64s while detecting run %.64s; "
                            "a new run needs a new detector",
                            run, d->run_id);
    }
    uint64_t tick = s->stamp->tick;
    d->stats.snapshots++;
    if (d->has_closed && tick <= d->last_closed) {
        d->stats.samples_late += s->n_samples;
        return MC_OK;
    }
    if (d->has_open && tick != d->open_tick)
        return mc_error_set(err, MC_ERR_STATE,
                            "detector: snapshot for tick %llu while tick %llu is open (its "
                            "watermark is missing)",
                            (unsigned long long)tick, (unsigned long long)d->open_tick);
    d->has_open = 1;
    d->open_tick = tick;
    d->has_time = 1;
    d->time_tick = tick;
    d->time_ms = s->sim_time_unix_ms;

    uint64_t over = 0;
    for (size_t i = 0; i < s->n_samples; i++) {
        const Sim__V1__MetricSample *smp = s->samples[i];
        if (smp == NULL) {
            d->stats.samples_invalid++;
            continue;
        }
        int m = metric_index(d, str_or_empty(smp->metric_name));
        if (m < 0) {
            d->stats.samples_ignored++;
            continue;
        }
        const char *svc = str_or_empty(smp->service_id);
        const char *node = str_or_empty(smp->node_id);
        const char *id = svc[0] ? svc : node;
        double v = smp->metric_value;
        if (!isfinite(v) || id[0] == '\0' || strlen(id) >= MC_DETECTOR_ID_MAX) {
            d->stats.samples_invalid++;
            continue;
        }
        uint32_t slot = 0;
        mc_det_target *t = target_find(d, id, &slot);
        if (t == NULL) {
            if (d->target_count >= d->max_targets || slot == UINT32_MAX) {
                d->stats.samples_over_limit++;
                over++;
                continue;
            }
            t = target_create(d, id, svc[0] ? KIND_SERVICE : KIND_NODE, slot);
            if (t == NULL)
                return mc_error_set(err, MC_ERR_NOMEM, "detector: out of memory for target %s",
                                    id);
        }
        det_series *se = t->series[m];
        if (se == NULL) {
            se = series_create(d, (size_t)m);
            if (se == NULL)
                return mc_error_set(err, MC_ERR_NOMEM,
                                    "detector: out of memory for %s of target %s",
                                    d->metrics[m], id);
            t->series[m] = se;
        }
        if (!se->has_pending || v > se->pending)
            se->pending = v;
        se->has_pending = 1;
        d->stats.samples++;
    }
    if (over > 0)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "detector: dropped %llu samples of new targets: %u targets tracked, "
                            "the limit (max_targets)",
                            (unsigned long long)over, d->max_targets);
    return MC_OK;
}

/* ---- windows ---------------------------------------------------------- */

static double ring_value(const det_series *s, uint64_t tick)
{
    return s->ring_val[tick % s->ring_cap];
}

/* Advances series s of metric m to tick: drops what left each rule's window
 * and adds the tick's value when take is set. prev is the last closed tick
 * (has_prev 0 on the first tick). */
static void series_advance(const mc_detector *d, det_series *s, size_t m, uint64_t tick,
                           int has_prev, uint64_t prev, int take)
{
    for (uint32_t k = 0; k < s->nrules; k++) {
        uint32_t r = d->metric_rules[m][k];
        const mc_detector_rule *rule = &d->rules.rules[r];
        uint32_t win = d->window_ticks[r];
        det_window *w = &s->w[k];
        if (!has_prev)
            continue;
        if (tick - prev >= win) {
            w->sum_fx = 0;
            w->count = 0;
            w->viol = 0;
            w->dq_head = 0;
            w->dq_len = 0;
            continue;
        }
        /* Fewer than win iterations: the gap is shorter than the window. */
        for (uint64_t j = prev + 1; j <= tick; j++) {
            if (j < win)
                continue;
            uint64_t e = j - win;
            uint32_t slot = (uint32_t)(e % s->ring_cap);
            if (s->ring_tick[slot] != e)
                continue;
            double v = s->ring_val[slot];
            w->sum_fx -= to_fx(v);
            w->count--;
            if (mc_rule_op_holds(rule->op, v, rule->threshold))
                w->viol--;
        }
        if (rule->agg == MC_RULE_AGG_MIN || rule->agg == MC_RULE_AGG_MAX) {
            uint64_t *dq = s->dq + d->metric_dq_off[m][k];
            while (w->dq_len > 0 && dq[w->dq_head] + win <= tick) {
                w->dq_head = (w->dq_head + 1) % win;
                w->dq_len--;
            }
        }
    }
    if (!take || !s->has_pending)
        return;
    double v = s->pending;
    s->has_pending = 0;
    uint32_t slot = (uint32_t)(tick % s->ring_cap);
    s->ring_tick[slot] = tick;
    s->ring_val[slot] = v;
    s->has_last = 1;
    s->last_tick = tick;
    int64_t fx = to_fx(v);
    for (uint32_t k = 0; k < s->nrules; k++) {
        uint32_t r = d->metric_rules[m][k];
        const mc_detector_rule *rule = &d->rules.rules[r];
        uint32_t win = d->window_ticks[r];
        det_window *w = &s->w[k];
        w->sum_fx += fx;
        w->count++;
        if (mc_rule_op_holds(rule->op, v, rule->threshold))
            w->viol++;
        if (rule->agg == MC_RULE_AGG_MIN || rule->agg == MC_RULE_AGG_MAX) {
            /* Monotonic deque: the front is the window's min (max); values
             * behind a newer, smaller (larger) one can never be it again. */
            uint64_t *dq = s->dq + d->metric_dq_off[m][k];
            int is_min = rule->agg == MC_RULE_AGG_MIN;
            while (w->dq_len > 0) {
                uint64_t back = dq[(w->dq_head + w->dq_len - 1) % win];
                double bv = ring_value(s, back);
                if (is_min ? bv >= v : bv <= v)
                    w->dq_len--;
                else
                    break;
            }
            dq[(w->dq_head + w->dq_len) % win] = tick;
            w->dq_len++;
        }
    }
}

/* The rule's aggregate over its window at tick; 0 when there is none. */
static int window_value(const mc_detector *d, const det_series *s, size_t m, uint32_t k,
                        uint32_t r, uint64_t tick, double *value, int *cond)
{
    const mc_detector_rule *rule = &d->rules.rules[r];
    const det_window *w = &s->w[k];
    uint32_t win = d->window_ticks[r];
    *cond = 0;
    switch (rule->agg) {
    case MC_RULE_AGG_AVG:
        if (w->count == 0)
            return 0;
        *value = ((double)w->sum_fx / (double)w->count) / FX_SCALE;
        break;
    case MC_RULE_AGG_MIN:
    case MC_RULE_AGG_MAX:
        if (w->dq_len == 0)
            return 0;
        *value = ring_value(s, (s->dq + d->metric_dq_off[m][k])[w->dq_head]);
        break;
    case MC_RULE_AGG_LAST:
    case MC_RULE_AGG_ALL:
        if (!s->has_last || s->last_tick + win <= tick)
            return 0;
        *value = ring_value(s, s->last_tick);
        if (rule->agg == MC_RULE_AGG_ALL) {
            *cond = w->count == win && w->viol == w->count;
            return 1;
        }
        break;
    }
    *cond = mc_rule_op_holds(rule->op, *value, rule->threshold);
    return 1;
}

/* ---- incidents -------------------------------------------------------- */

static int64_t time_of(const mc_detector *d, uint64_t tick)
{
    if (!d->has_time)
        return 0;
    if (tick >= d->time_tick)
        return d->time_ms + (int64_t)((tick - d->time_tick) * d->tick_ms);
    return d->time_ms - (int64_t)((d->time_tick - tick) * d->tick_ms);
}

static mc_status emit_incident(mc_detector *d, const mc_det_target *t, const det_incident *inc,
                               uint32_t r, double value, uint64_t tick,
                               Ops__V1__IncidentState state, mc_outbox *out, mc_error *err)
{
    const mc_detector_rule *rule = &d->rules.rules[r];
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Incident m = OPS__V1__INCIDENT__INIT;
    char title[MC_DETECTOR_TITLE_MAX + MC_DETECTOR_ID_MAX + 8];
    char desc[512];
    int resolved = state == OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED;
    snprintf(title, sizeof title, "%s on %s", rule->title, t->id);
    if (resolved)
        snprintf(desc, sizeof desc,
                 "%s %s over %u tick(s) is %.3f, within rule %s (%s %.3f) for %u tick(s)",
                 rule->metric, mc_rule_agg_name(rule->agg), d->window_ticks[r], value,
                 rule->name, mc_rule_op_name(rule->op), rule->threshold, rule->clear_ticks);
    else
        snprintf(desc, sizeof desc,
                 "%s %s over %u tick(s) is %.3f, breaking rule %s (%s %.3f) for at least %u "
                 "tick(s)",
                 rule->metric, mc_rule_agg_name(rule->agg), d->window_ticks[r], value,
                 rule->name, mc_rule_op_name(rule->op), rule->threshold, rule->for_ticks);
    stamp.run_id = d->run_id;
    stamp.tick = tick;
    stamp.producer = (char *)MC_DETECTOR_PRODUCER;
    stamp.producer_seq = d->producer_seq + 1;
    m.stamp = &stamp;
    m.id = (char *)inc->id;
    m.severity = (Common__V1__IncidentSeverity)inc->severity;
    m.title = title;
    m.description = desc;
    m.rule_name = (char *)rule->name;
    m.target_id = (char *)t->id;
    m.node_id = t->kind == KIND_NODE ? (char *)t->id : (char *)"";
    m.service_id = t->kind == KIND_SERVICE ? (char *)t->id : (char *)"";
    m.metric_name = (char *)rule->metric;
    m.observed_value = value;
    m.threshold = rule->threshold;
    m.state = state;
    m.opened_at_tick = inc->opened_tick;
    m.updated_at_tick = tick;
    m.resolved = resolved;
    m.resolved_at_tick = resolved ? tick : 0;
    m.detected_at_unix_ms = time_of(d, tick);
    mc_status st = mc_outbox_push(out, MC_DETECTOR_SUBJECT_INCIDENTS, tick, stamp.producer_seq,
                                  &m.base);
    if (st != MC_OK)
        return mc_error_set(err, st, "detector: cannot queue incident %s (%s) at tick %llu: %s",
                            inc->id, t->id, (unsigned long long)tick, mc_status_name(st));
    d->producer_seq++;
    d->stats.messages = d->producer_seq;
    return MC_OK;
}

/* Updates the target's incident of group g from the rules' hysteresis. */
static mc_status group_step(mc_detector *d, mc_det_target *t, size_t g, uint64_t tick,
                            mc_outbox *out, uint32_t *emitted, mc_error *err)
{
    int dom = -1;
    for (size_t k = 0; k < d->group_rule_count[g]; k++) {
        size_t r = d->group_rules[g][k];
        if (!t->hyst[r].active)
            continue;
        if (dom < 0 || d->rules.rules[r].severity > d->rules.rules[dom].severity)
            dom = (int)r;
    }
    det_incident *inc = &t->inc[g];
    mc_status st = MC_OK;
    if (!inc->open && dom < 0)
        return MC_OK;
    if (!inc->open) {
        const det_hyst *h = &t->hyst[dom];
        inc->open = 1;
        inc->opened_tick = tick;
        inc->severity = d->rules.rules[dom].severity;
        inc->rule = (uint32_t)dom;
        inc->reported = h->has_value ? h->value : 0;
        mc_id_uuid(inc->id, "incident", d->run_id, tick, t->id, d->groups[g]);
        st = emit_incident(d, t, inc, (uint32_t)dom, inc->reported, tick,
                           OPS__V1__INCIDENT_STATE__INCIDENT_STATE_OPENED, out, err);
        if (st == MC_OK) {
            d->stats.incidents_opened++;
            (*emitted)++;
        }
        return st;
    }
    if (dom < 0) {
        const det_hyst *h = &t->hyst[inc->rule];
        double v = h->has_value ? h->value : inc->reported;
        st = emit_incident(d, t, inc, inc->rule, v, tick,
                           OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED, out, err);
        if (st == MC_OK) {
            d->stats.incidents_resolved++;
            (*emitted)++;
        }
        memset(inc, 0, sizeof *inc);
        return st;
    }
    const mc_detector_rule *rule = &d->rules.rules[dom];
    const det_hyst *h = &t->hyst[dom];
    double v = h->has_value ? h->value : inc->reported;
    double limit = rule->threshold != 0 ? d->change_ratio * abs_d(rule->threshold)
                                        : d->change_ratio;
    /* A value move counts only while the condition holds: during the
     * clear period the value is under the threshold and reporting it every
     * tick would turn a flapping metric into an update storm. */
    int moved = h->held > 0 && abs_d(v - inc->reported) >= limit;
    int changed = (uint32_t)dom != inc->rule || rule->severity != inc->severity || moved;
    if (!moved && h->held == 0)
        v = inc->reported;
    if (!changed)
        return MC_OK;
    inc->rule = (uint32_t)dom;
    inc->severity = rule->severity;
    inc->reported = v;
    st = emit_incident(d, t, inc, (uint32_t)dom, v, tick,
                       OPS__V1__INCIDENT_STATE__INCIDENT_STATE_UPDATED, out, err);
    if (st == MC_OK) {
        d->stats.incidents_updated++;
        (*emitted)++;
    }
    return st;
}

static int rule_applies(const mc_detector_rule *r, const mc_det_target *t)
{
    return r->target == MC_RULE_TARGET_ANY ||
           (r->target == MC_RULE_TARGET_SERVICE && t->kind == KIND_SERVICE) ||
           (r->target == MC_RULE_TARGET_NODE && t->kind == KIND_NODE);
}

static uint32_t sat_inc(uint32_t v)
{
    return v == UINT32_MAX ? v : v + 1;
}

mc_status mc_detector_on_tick_end(mc_detector *d, uint64_t tick, mc_outbox *out, mc_error *err)
{
    if (d->has_closed && tick <= d->last_closed)
        return MC_OK;
    int take = d->has_open && d->open_tick <= tick;
    uint32_t emitted = 0;
    for (uint32_t oi = 0; oi < d->target_count; oi++) {
        mc_det_target *t = d->targets[d->order[oi]];
        for (size_t m = 0; m < d->metric_count; m++)
            if (t->series[m])
                series_advance(d, t->series[m], m, tick, d->has_closed, d->last_closed, take);
        for (size_t r = 0; r < d->rules.count; r++) {
            const mc_detector_rule *rule = &d->rules.rules[r];
            if (!rule_applies(rule, t))
                continue;
            det_hyst *h = &t->hyst[r];
            const det_series *s = t->series[d->rule_metric[r]];
            double value = 0;
            int cond = 0;
            if (s && window_value(d, s, d->rule_metric[r], d->rule_slot[r], (uint32_t)r, tick,
                                  &value, &cond)) {
                h->has_value = 1;
                h->value = value;
            }
            if (cond) {
                h->held = sat_inc(h->held);
                h->cleared = 0;
                if (!h->active && h->held >= rule->for_ticks)
                    h->active = 1;
            } else {
                h->cleared = sat_inc(h->cleared);
                h->held = 0;
                if (h->active && h->cleared >= rule->clear_ticks)
                    h->active = 0;
            }
        }
        for (size_t g = 0; g < d->group_count; g++) {
            mc_status st = group_step(d, t, g, tick, out, &emitted, err);
            if (st != MC_OK)
                return st;
        }
    }
    d->has_closed = 1;
    d->last_closed = tick;
    if (take)
        d->has_open = 0;
    d->stats.ticks_closed++;

    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    Ops__V1__Watermark wm = OPS__V1__WATERMARK__INIT;
    stamp.run_id = d->run_id;
    stamp.tick = tick;
    stamp.producer = (char *)MC_DETECTOR_PRODUCER;
    stamp.producer_seq = d->producer_seq + 1;
    wm.stamp = &stamp;
    wm.stage = COMMON__V1__STAGE__STAGE_DETECTOR;
    wm.tick = tick;
    wm.message_count = emitted;
    mc_status st = mc_outbox_push(out, MC_DETECTOR_SUBJECT_WATERMARK, tick, stamp.producer_seq,
                                  &wm.base);
    if (st != MC_OK)
        return mc_error_set(err, st, "detector: cannot queue the watermark of tick %llu: %s",
                            (unsigned long long)tick, mc_status_name(st));
    d->producer_seq++;
    d->stats.messages = d->producer_seq;
    return MC_OK;
}

/* ---- digest and introspection ----------------------------------------- */

void mc_detector_digest(const mc_detector *d, uint8_t out[MC_DIGEST_BYTES])
{
    mc_digest h;
    mc_digest_init(&h, "mc.detector/v1");
    mc_digest_u32(&h, d->tick_ms);
    mc_digest_u32(&h, d->max_targets);
    mc_digest_f64(&h, d->change_ratio);
    mc_digest_str(&h, d->run_id);
    mc_digest_u64(&h, d->rules.count);
    for (size_t i = 0; i < d->rules.count; i++) {
        const mc_detector_rule *r = &d->rules.rules[i];
        mc_digest_str(&h, r->name);
        mc_digest_str(&h, r->metric);
        mc_digest_str(&h, r->group);
        mc_digest_str(&h, r->title);
        mc_digest_u32(&h, (uint32_t)r->op);
        mc_digest_f64(&h, r->threshold);
        mc_digest_u32(&h, r->window_seconds);
        mc_digest_u32(&h, (uint32_t)r->agg);
        mc_digest_u32(&h, r->for_ticks);
        mc_digest_u32(&h, r->clear_ticks);
        mc_digest_u32(&h, (uint32_t)r->severity);
        mc_digest_u32(&h, (uint32_t)r->target);
    }
    mc_digest_bool(&h, d->has_closed);
    mc_digest_u64(&h, d->last_closed);
    mc_digest_bool(&h, d->has_open);
    mc_digest_u64(&h, d->open_tick);
    mc_digest_bool(&h, d->has_time);
    mc_digest_u64(&h, d->time_tick);
    mc_digest_i64(&h, d->time_ms);
    mc_digest_u64(&h, d->producer_seq);
    const mc_detector_stats *c = &d->stats;
    const uint64_t counters[] = {c->snapshots,          c->samples,          c->samples_ignored,
                                 c->samples_invalid,    c->samples_late,     c->samples_over_limit,
                                 c->targets,            c->incidents_opened, c->incidents_updated,
                                 c->incidents_resolved, c->ticks_closed,     c->messages};
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
        mc_digest_u64(&h, counters[i]);
    mc_digest_u32(&h, d->target_count);
    for (uint32_t oi = 0; oi < d->target_count; oi++) {
        const mc_det_target *t = d->targets[d->order[oi]];
        mc_digest_str(&h, t->id);
        mc_digest_u32(&h, (uint32_t)t->kind);
        for (size_t m = 0; m < d->metric_count; m++) {
            const det_series *s = t->series[m];
            mc_digest_bool(&h, s != NULL);
            if (s == NULL)
                continue;
            mc_digest_bool(&h, s->has_pending);
            mc_digest_f64(&h, s->has_pending ? s->pending : 0);
            mc_digest_bool(&h, s->has_last);
            mc_digest_u64(&h, s->has_last ? s->last_tick : 0);
            /* The ring's live contents in tick order: the slots' layout
             * is an implementation detail, the values in the window are
             * the state. */
            if (d->has_closed) {
                uint64_t first = d->last_closed + 1 >= s->ring_cap
                                     ? d->last_closed + 1 - s->ring_cap
                                     : 0;
                for (uint64_t e = first; e <= d->last_closed; e++) {
                    uint32_t slot = (uint32_t)(e % s->ring_cap);
                    if (s->ring_tick[slot] != e)
                        continue;
                    mc_digest_u64(&h, e);
                    mc_digest_f64(&h, s->ring_val[slot]);
                }
            }
            for (uint32_t k = 0; k < s->nrules; k++) {
                const det_window *w = &s->w[k];
                uint32_t r = d->metric_rules[m][k];
                uint32_t win = d->window_ticks[r];
                mc_digest_i64(&h, w->sum_fx);
                mc_digest_u32(&h, w->count);
                mc_digest_u32(&h, w->viol);
                mc_digest_u32(&h, w->dq_len);
                const uint64_t *dq = s->dq + d->metric_dq_off[m][k];
                for (uint32_t i = 0; i < w->dq_len; i++)
                    mc_digest_u64(&h, dq[(w->dq_head + i) % win]);
            }
        }
        for (size_t r = 0; r < d->rules.count; r++) {
            const det_hyst *hy = &t->hyst[r];
            mc_digest_u32(&h, hy->held);
            mc_digest_u32(&h, hy->cleared);
            mc_digest_bool(&h, hy->active);
            mc_digest_bool(&h, hy->has_value);
            mc_digest_f64(&h, hy->has_value ? hy->value : 0);
        }
        for (size_t g = 0; g < d->group_count; g++) {
            const det_incident *inc = &t->inc[g];
            mc_digest_bool(&h, inc->open);
            if (!inc->open)
                continue;
            mc_digest_str(&h, inc->id);
            mc_digest_u64(&h, inc->opened_tick);
            mc_digest_u32(&h, (uint32_t)inc->severity);
            mc_digest_u32(&h, inc->rule);
            mc_digest_f64(&h, inc->reported);
        }
    }
    mc_digest_final(&h, out);
}

void mc_detector_stats_get(const mc_detector *d, mc_detector_stats *out)
{
    *out = d->stats;
}

uint32_t mc_detector_rule_window_ticks(const mc_detector *d, size_t rule_index)
{
    return rule_index < d->rules.count ? d->window_ticks[rule_index] : 0;
}

size_t mc_detector_open_incidents(const mc_detector *d)
{
    size_t n = 0;
    for (uint32_t i = 0; i < d->target_count; i++)
        for (size_t g = 0; g < d->group_count; g++)
            n += d->targets[i]->inc[g].open ? 1u : 0u;
    return n;
}
