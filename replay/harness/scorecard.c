#include "harness/scorecard.h"

#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "harness/subjects.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define ID_MAX 128

struct mc_score_incident {
    char id[ID_MAX]; /* "" = empty slot */
    char target[ID_MAX];
    uint64_t opened_tick;
    bool resolved;
    uint64_t resolved_tick;
};

struct mc_score_series {
    char id[ID_MAX];
    uint64_t tick; /* the tick flags belong to */
    bool err_bad, lat_bad;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: table placement only */
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

mc_status mc_scorecard_init(mc_scorecard *s, const mc_scenario *sc, mc_error *err)
{
    memset(s, 0, sizeof *s);
    s->sc = sc;
    s->inc_cap = 1024;
    s->ser_cap = 1024;
    s->incidents = calloc(s->inc_cap, sizeof *s->incidents);
    s->series = calloc(s->ser_cap, sizeof *s->series);
    if (!s->incidents || !s->series) {
        mc_scorecard_deinit(s);
        return mc_error_set(err, MC_ERR_NOMEM, "scorecard: out of memory");
    }
    mc_digest_init(&s->run_hash, "microcloud/run-hash/v1");
    return MC_OK;
}

void mc_scorecard_deinit(mc_scorecard *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->fault_count; i++)
        free(s->faults[i].affected);
    free(s->incidents);
    free(s->series);
    memset(s, 0, sizeof *s);
}

static mc_score_incident *incident_slot(mc_scorecard *s, const char *id, bool create)
{
    if (create && (s->inc_count + 1) * 2 > s->inc_cap) {
        size_t ncap = s->inc_cap * 2;
        mc_score_incident *n = calloc(ncap, sizeof *n);
        if (!n)
            return NULL;
        for (size_t i = 0; i < s->inc_cap; i++) {
            if (!s->incidents[i].id[0])
                continue;
            size_t j = hash_str(s->incidents[i].id) & (ncap - 1);
            while (n[j].id[0])
                j = (j + 1) & (ncap - 1);
            n[j] = s->incidents[i];
        }
        free(s->incidents);
        s->incidents = n;
        s->inc_cap = ncap;
    }
    size_t j = hash_str(id) & (s->inc_cap - 1);
    while (s->incidents[j].id[0]) {
        if (strcmp(s->incidents[j].id, id) == 0)
            return &s->incidents[j];
        j = (j + 1) & (s->inc_cap - 1);
    }
    if (!create)
        return NULL;
    snprintf(s->incidents[j].id, ID_MAX, "%s", id);
    s->inc_count++;
    return &s->incidents[j];
}

static mc_score_series *series_slot(mc_scorecard *s, const char *id)
{
    if ((s->ser_count + 1) * 2 > s->ser_cap) {
        size_t ncap = s->ser_cap * 2;
        mc_score_series *n = calloc(ncap, sizeof *n);
        if (!n)
            return NULL;
        for (size_t i = 0; i < s->ser_cap; i++) {
            if (!s->series[i].id[0])
                continue;
            size_t j = hash_str(s->series[i].id) & (ncap - 1);
            while (n[j].id[0])
                j = (j + 1) & (ncap - 1);
            n[j] = s->series[i];
        }
        free(s->series);
        s->series = n;
        s->ser_cap = ncap;
    }
    size_t j = hash_str(id) & (s->ser_cap - 1);
    while (s->series[j].id[0]) {
        if (strcmp(s->series[j].id, id) == 0)
            return &s->series[j];
        j = (j + 1) & (s->ser_cap - 1);
    }
    snprintf(s->series[j].id, ID_MAX, "%s", id);
    s->ser_count++;
    return &s->series[j];
}

/* Services upstream of (calling, directly or not) service t, t included. */
static void mark_upstream(const mc_scenario *sc, long t, bool *aff)
{
    aff[t] = true;
    bool changed = true;
    while (changed) { /* fixed point; bounded by the service count */
        changed = false;
        for (size_t i = 0; i < sc->n_services; i++) {
            if (aff[i])
                continue;
            const mc_scenario_service *sv = &sc->services[i];
            for (uint32_t k = 0; k < sv->dep_count; k++)
                if (aff[sc->deps[sv->dep_first + k].service]) {
                    aff[i] = true;
                    changed = true;
                    break;
                }
        }
    }
}

static bool affected(const mc_scorecard *s, const mc_score_fault *f, const char *target)
{
    if (strcmp(f->target, target) == 0)
        return true;
    if (!s->sc || !f->affected)
        return false;
    long i = mc_scenario_service_find(s->sc, target);
    return i >= 0 && f->affected[i];
}

static void on_event(mc_scorecard *s, uint64_t tick, const Sim__V1__SimulationEvent *ev)
{
    switch (ev->kind) {
    case SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_FAULT_STARTED: {
        if (s->fault_count == MC_SCORE_MAX_FAULTS) {
            s->faults_dropped++;
            return;
        }
        mc_score_fault *f = &s->faults[s->fault_count++];
        memset(f, 0, sizeof *f);
        const Sim__V1__Fault *fl = ev->fault;
        snprintf(f->fault_id, sizeof f->fault_id, "%s", fl && fl->fault_id ? fl->fault_id : "");
        const char *tn = fl ? mc_scenario_fault_type_name(fl->type) : NULL;
        snprintf(f->type, sizeof f->type, "%s", tn ? tn : "unknown");
        snprintf(f->target, sizeof f->target, "%s",
                 fl && fl->target_id && fl->target_id[0] ? fl->target_id : ev->target_id);
        f->start_tick = tick;
        if (s->sc && s->sc->n_services) {
            long t = mc_scenario_service_find(s->sc, f->target);
            if (t >= 0 && (f->affected = calloc(s->sc->n_services, sizeof *f->affected)))
                mark_upstream(s->sc, t, f->affected);
        }
        break;
    }
    case SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED:
        s->executed++;
        break;
    case SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED: s->failed++; break;
    default: break;
    }
}

static void on_incident(mc_scorecard *s, uint64_t tick, const Ops__V1__Incident *inc)
{
    if (!inc->id || !inc->id[0])
        return;
    mc_score_incident *si = incident_slot(s, inc->id, true);
    if (!si)
        return;
    bool fresh = si->target[0] == '\0';
    if (fresh) {
        snprintf(si->target, ID_MAX, "%s", inc->target_id ? inc->target_id : "");
        si->opened_tick = inc->opened_at_tick ? inc->opened_at_tick : tick;
        s->incidents_opened++;
        for (size_t i = 0; i < s->fault_count; i++) {
            mc_score_fault *f = &s->faults[i];
            if (si->opened_tick < f->start_tick || !affected(s, f, si->target))
                continue;
            f->incidents++;
            if (!f->detected) {
                f->detected = true;
                f->detected_tick = si->opened_tick;
                snprintf(f->detected_by, sizeof f->detected_by, "%s", si->target);
            }
        }
    }
    if ((inc->resolved || inc->state == OPS__V1__INCIDENT_STATE__INCIDENT_STATE_RESOLVED) &&
        !si->resolved) {
        si->resolved = true;
        si->resolved_tick = inc->resolved_at_tick ? inc->resolved_at_tick : tick;
        s->incidents_resolved++;
    }
}

static void on_metrics(mc_scorecard *s, uint64_t tick, const Sim__V1__MetricSnapshot *m)
{
    for (size_t i = 0; i < m->n_samples; i++) {
        const Sim__V1__MetricSample *x = m->samples[i];
        s->samples++;
        if (!x->service_id || !x->service_id[0] || !x->metric_name)
            continue;
        bool is_err = strcmp(x->metric_name, "error_rate") == 0;
        bool is_lat = !is_err && strcmp(x->metric_name, "p99_latency_ms") == 0;
        if (!is_err && !is_lat)
            continue;
        bool bad = is_err ? x->metric_value > MC_SCORE_ERROR_RATE_SLO
                          : x->metric_value > MC_SCORE_LATENCY_SLO_MS;
        if (!bad)
            continue;
        mc_score_series *se = series_slot(s, x->service_id);
        if (!se)
            continue;
        if (se->tick != tick) {
            se->tick = tick;
            se->err_bad = se->lat_bad = false;
        }
        if (!se->err_bad && !se->lat_bad)
            s->slo_damage++;
        if (is_err && !se->err_bad) {
            se->err_bad = true;
            s->slo_error_ticks++;
        }
        if (is_lat && !se->lat_bad) {
            se->lat_bad = true;
            s->slo_latency_ticks++;
        }
    }
}

mc_status mc_scorecard_record_msg(mc_scorecard *s, uint64_t tick, uint32_t stage,
                                  const char *subject, const char *producer, uint64_t producer_seq,
                                  const uint8_t *payload, size_t len, const ProtobufCMessage *m)
{
    mc_digest_u64(&s->run_hash, 1);
    mc_digest_u64(&s->run_hash, tick);
    mc_digest_u32(&s->run_hash, stage);
    mc_digest_str(&s->run_hash, subject);
    mc_digest_str(&s->run_hash, producer);
    mc_digest_u64(&s->run_hash, producer_seq);
    mc_digest_u64(&s->run_hash, len);
    mc_digest_bytes(&s->run_hash, payload, len);
    s->records++;
    if (tick > s->last_tick)
        s->last_tick = tick;
    if (!m)
        return MC_OK;
    if (strcmp(subject, "sim.metrics") == 0) {
        on_metrics(s, tick, (const Sim__V1__MetricSnapshot *)m);
    } else if (strcmp(subject, "sim.events") == 0) {
        on_event(s, tick, (const Sim__V1__SimulationEvent *)m);
    } else if (strcmp(subject, "ops.incidents") == 0) {
        on_incident(s, tick, (const Ops__V1__Incident *)m);
    } else if (strcmp(subject, "ops.actions") == 0) {
        s->proposed++;
    } else if (strcmp(subject, "ops.decisions") == 0) {
        const Ops__V1__ApprovalDecision *d = (const Ops__V1__ApprovalDecision *)m;
        if (d->approved)
            s->approved++;
        else if (d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_SYSTEM)
            s->dropped++;
        else
            s->refused++;
    }
    return MC_OK;
}

mc_status mc_scorecard_record(mc_scorecard *s, uint64_t tick, uint32_t stage, const char *subject,
                              const char *producer, uint64_t producer_seq, const uint8_t *payload,
                              size_t len, mc_error *err)
{
    (void)err;
    ProtobufCMessage *m = mc_subject_unpack(subject, payload, len);
    mc_status st =
        mc_scorecard_record_msg(s, tick, stage, subject, producer, producer_seq, payload, len, m);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return st;
}

void mc_scorecard_checkpoint(mc_scorecard *s, uint64_t tick, const mc_trace_digest *d, size_t n)
{
    mc_digest_u64(&s->run_hash, 2);
    mc_digest_u64(&s->run_hash, tick);
    mc_digest_u64(&s->run_hash, n);
    memset(s->final_digests, 0, sizeof s->final_digests);
    for (size_t i = 0; i < n; i++) {
        mc_digest_u32(&s->run_hash, d[i].stage);
        mc_digest_bytes(&s->run_hash, d[i].digest, MC_DIGEST_BYTES);
        if (d[i].stage >= 1 && d[i].stage <= 4)
            memcpy(s->final_digests[d[i].stage - 1], d[i].digest, MC_DIGEST_BYTES);
    }
    s->have_digests = true;
    s->ticks++;
    if (tick > s->last_tick)
        s->last_tick = tick;
}

void mc_scorecard_finish(mc_scorecard *s)
{
    if (s->finished)
        return;
    s->finished = true;
    mc_digest_final(&s->run_hash, s->run_hash_final);
    for (size_t i = 0; i < s->fault_count; i++) {
        mc_score_fault *f = &s->faults[i];
        f->open_incidents = 0;
        f->last_resolved_tick = 0;
        for (size_t j = 0; j < s->inc_cap; j++) {
            const mc_score_incident *si = &s->incidents[j];
            if (!si->id[0] || si->opened_tick < f->start_tick || !affected(s, f, si->target))
                continue;
            if (!si->resolved)
                f->open_incidents++;
            else if (si->resolved_tick > f->last_resolved_tick)
                f->last_resolved_tick = si->resolved_tick;
        }
    }
}

void mc_scorecard_run_hash(const mc_scorecard *s, char hex[2 * MC_DIGEST_BYTES + 1])
{
    mc_digest_hex(s->run_hash_final, hex);
}

void mc_scorecard_state_digest(const mc_scorecard *s, char hex[2 * MC_DIGEST_BYTES + 1])
{
    mc_digest d;
    uint8_t out[MC_DIGEST_BYTES];
    mc_digest_init(&d, "microcloud/state/v1");
    for (int i = 0; i < 4; i++)
        mc_digest_bytes(&d, s->final_digests[i], MC_DIGEST_BYTES);
    mc_digest_final(&d, out);
    mc_digest_hex(out, hex);
}

static bool fault_recovered(const mc_score_fault *f)
{
    return f->detected && f->open_incidents == 0;
}

void mc_scorecard_print(const mc_scorecard *s, FILE *out)
{
    char hex[2 * MC_DIGEST_BYTES + 1];
    fprintf(out, "scorecard (%llu ticks, %llu records)\n", (unsigned long long)s->ticks,
            (unsigned long long)s->records);
    if (s->fault_count == 0)
        fprintf(out, "  faults: none started\n");
    for (size_t i = 0; i < s->fault_count; i++) {
        const mc_score_fault *f = &s->faults[i];
        fprintf(out, "  fault %s (%s on %s) started at tick %llu: ", f->fault_id, f->type,
                f->target, (unsigned long long)f->start_tick);
        if (f->detected)
            fprintf(out, "MTTD %llu ticks (on %s)",
                    (unsigned long long)(f->detected_tick - f->start_tick), f->detected_by);
        else
            fprintf(out, "not detected");
        if (fault_recovered(f))
            fprintf(out, ", MTTR %llu ticks (%llu incidents)\n",
                    (unsigned long long)(f->last_resolved_tick - f->start_tick),
                    (unsigned long long)f->incidents);
        else if (f->detected)
            fprintf(out, ", not recovered (%llu of %llu incidents open at the end)\n",
                    (unsigned long long)f->open_incidents, (unsigned long long)f->incidents);
        else
            fprintf(out, "\n");
    }
    fprintf(out, "  incidents: %llu opened, %llu resolved\n",
            (unsigned long long)s->incidents_opened, (unsigned long long)s->incidents_resolved);
    fprintf(out,
            "  SLO damage: %llu service-ticks (error rate > %.0f%%: %llu, p99 > %.0f ms: %llu)\n",
            (unsigned long long)s->slo_damage, MC_SCORE_ERROR_RATE_SLO,
            (unsigned long long)s->slo_error_ticks, MC_SCORE_LATENCY_SLO_MS,
            (unsigned long long)s->slo_latency_ticks);
    fprintf(out,
            "  actions: %llu proposed, %llu approved, %llu executed, %llu refused, %llu failed, "
            "%llu expired or superseded\n",
            (unsigned long long)s->proposed, (unsigned long long)s->approved,
            (unsigned long long)s->executed, (unsigned long long)s->refused,
            (unsigned long long)s->failed, (unsigned long long)s->dropped);
    if (s->have_digests) {
        mc_scorecard_state_digest(s, hex);
        fprintf(out, "  final state digest: %s\n", hex);
        static const char *names[4] = {"engine", "detector", "agent", "orchestrator"};
        for (int i = 0; i < 4; i++) {
            mc_digest_hex(s->final_digests[i], hex);
            fprintf(out, "    %-12s %s\n", names[i], hex);
        }
    }
    if (s->finished) {
        mc_scorecard_run_hash(s, hex);
        fprintf(out, "  run hash: %s\n", hex);
    }
}

json_t *mc_scorecard_json(const mc_scorecard *s)
{
    char hex[2 * MC_DIGEST_BYTES + 1];
    json_t *o = json_object();
    json_t *faults = json_array();
    for (size_t i = 0; i < s->fault_count; i++) {
        const mc_score_fault *f = &s->faults[i];
        json_t *j = json_pack("{s:s,s:s,s:s,s:I,s:b,s:I,s:I}", "faultId", f->fault_id, "type",
                              f->type, "target", f->target, "startTick", (json_int_t)f->start_tick,
                              "detected", f->detected, "incidents", (json_int_t)f->incidents,
                              "openIncidents", (json_int_t)f->open_incidents);
        json_object_set_new(j, "mttdTicks",
                            f->detected
                                ? json_integer((json_int_t)(f->detected_tick - f->start_tick))
                                : json_null());
        json_object_set_new(j, "detectedOn",
                            f->detected ? json_string(f->detected_by) : json_null());
        json_object_set_new(j, "mttrTicks",
                            fault_recovered(f)
                                ? json_integer((json_int_t)(f->last_resolved_tick - f->start_tick))
                                : json_null());
        json_array_append_new(faults, j);
    }
    json_object_set_new(o, "faults", faults);
    json_object_set_new(o, "ticks", json_integer((json_int_t)s->ticks));
    json_object_set_new(o, "records", json_integer((json_int_t)s->records));
    json_object_set_new(o, "incidents",
                        json_pack("{s:I,s:I}", "opened", (json_int_t)s->incidents_opened,
                                  "resolved", (json_int_t)s->incidents_resolved));
    json_object_set_new(
        o, "sloDamage",
        json_pack("{s:I,s:I,s:I,s:f,s:f}", "serviceTicks", (json_int_t)s->slo_damage,
                  "errorRateTicks", (json_int_t)s->slo_error_ticks, "latencyTicks",
                  (json_int_t)s->slo_latency_ticks, "errorRateObjectivePercent",
                  MC_SCORE_ERROR_RATE_SLO, "latencyObjectiveMs", MC_SCORE_LATENCY_SLO_MS));
    json_object_set_new(o, "actions",
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "proposed", (json_int_t)s->proposed,
                                  "approved", (json_int_t)s->approved, "executed",
                                  (json_int_t)s->executed, "refused", (json_int_t)s->refused,
                                  "failed", (json_int_t)s->failed, "expiredOrSuperseded",
                                  (json_int_t)s->dropped));
    if (s->have_digests) {
        mc_scorecard_state_digest(s, hex);
        json_t *d = json_object();
        json_object_set_new(d, "combined", json_string(hex));
        static const char *names[4] = {"engine", "detector", "agent", "orchestrator"};
        for (int i = 0; i < 4; i++) {
            mc_digest_hex(s->final_digests[i], hex);
            json_object_set_new(d, names[i], json_string(hex));
        }
        json_object_set_new(o, "finalStateDigest", d);
    }
    if (s->finished) {
        mc_scorecard_run_hash(s, hex);
        json_object_set_new(o, "runHash", json_string(hex));
    }
    return o;
}
