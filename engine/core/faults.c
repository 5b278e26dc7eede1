/* Faults: the scenario's timeline and injected faults, their start and end,
 * and what they do to nodes and services each tick. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/ids.h"
#include "engine.h"
#include "engine_internal.h"

static void fault_event(mc_engine *e, const mc_engine_fault *f, int kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fault_event(mc_engine *e, const mc_engine_fault *f, int kind, const char *fmt, ...)
{
    mc_engine_event *ev = mc_engine__event_new(e, kind, f->target_id);
    if (ev == NULL)
        return;
    ev->has_fault = 1;
    ev->fault = *f;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->message, sizeof ev->message, fmt, ap);
    va_end(ap);
}

static void end_fault(mc_engine *e, mc_engine_fault *f, uint64_t tick, const char *why)
{
    f->state = MC_FAULT_ENDED;
    f->ended_at = tick;
    if (f->type == SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH && f->target_kind == MC_TARGET_NODE &&
        e->nodes[f->target].crash_faults > 0)
        e->nodes[f->target].crash_faults--;
    fault_event(e, f, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_FAULT_ENDED,
                "fault %s on %s ended: %s", mc_scenario_fault_type_name(f->type), f->target_id,
                why);
}

static void start_fault(mc_engine *e, mc_engine_fault *f, uint64_t tick)
{
    f->state = MC_FAULT_ACTIVE;
    fault_event(e, f, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_FAULT_STARTED,
                "fault %s on %s started (intensity %g, %s)", mc_scenario_fault_type_name(f->type),
                f->target_id, f->intensity,
                f->duration_ticks ? "limited duration" : "until fixed or the run ends");
    if (f->type != SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH || f->target_kind != MC_TARGET_NODE)
        return;
    mc_engine_node *n = &e->nodes[f->target];
    n->crash_faults++;
    /* Everything on a crashed node is lost at once; the services replace
     * the replicas elsewhere (lifecycle) when there is room. */
    int lost = 0;
    for (size_t i = 0; i < e->n_replicas; i++) {
        mc_engine_replica *r = &e->replicas[i];
        if (r->node != f->target || r->state == MC_REPLICA_REMOVED)
            continue;
        mc_engine__event(e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_REPLICA_CRASHED,
                         e->services[r->service].id,
                         "replica %" PRIu64 " of %s was lost with node %s", r->id,
                         e->services[r->service].id, n->id);
        r->state = MC_REPLICA_REMOVED;
        lost = 1;
    }
    (void)tick;
    if (lost)
        mc_engine__reindex(e);
}

void mc_engine__faults_update(mc_engine *e, uint64_t tick)
{
    for (size_t i = 0; i < e->n_faults; i++) {
        mc_engine_fault *f = &e->faults[i];
        if (f->state == MC_FAULT_ACTIVE && f->duration_ticks > 0 &&
            tick >= f->start_tick + f->duration_ticks) {
            char why[64];
            snprintf(why, sizeof why, "it lasted %u ticks", f->duration_ticks);
            end_fault(e, f, tick, why);
        }
    }
    for (size_t i = 0; i < e->n_faults; i++) {
        mc_engine_fault *f = &e->faults[i];
        if (f->state == MC_FAULT_PENDING && f->start_tick <= tick)
            start_fault(e, f, tick);
    }
}

void mc_engine__faults_end_on_service(mc_engine *e, uint32_t s, int type_a, int type_b,
                                      uint64_t tick, const char *why)
{
    for (size_t i = 0; i < e->n_faults; i++) {
        mc_engine_fault *f = &e->faults[i];
        if (f->state == MC_FAULT_ACTIVE && f->target_kind == MC_TARGET_SERVICE &&
            f->target == s && (f->type == type_a || f->type == type_b))
            end_fault(e, f, tick, why);
    }
}

void mc_engine__faults_aggregate(mc_engine *e)
{
    for (size_t i = 0; i < e->n_nodes; i++) {
        e->nodes[i].degradation = 0.0;
        e->nodes[i].hog = 0.0;
    }
    for (size_t i = 0; i < e->n_services; i++) {
        mc_engine_service *s = &e->services[i];
        s->f_error = 0.0;
        s->f_latency_ms = 0.0;
        s->f_leak = 0.0;
        s->f_hog = 0.0;
        s->f_spike = 1.0;
    }
    for (size_t i = 0; i < e->n_faults; i++) {
        const mc_engine_fault *f = &e->faults[i];
        if (f->state != MC_FAULT_ACTIVE)
            continue;
        double x = f->intensity;
        if (f->target_kind == MC_TARGET_NODE) {
            mc_engine_node *n = &e->nodes[f->target];
            if (f->type == SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_DEGRADATION && x > n->degradation)
                n->degradation = x > 0.95 ? 0.95 : x;
            else if (f->type == SIM__V1__FAULT_TYPE__FAULT_TYPE_CPU_HOG)
                n->hog = n->hog + x > 0.95 ? 0.95 : n->hog + x;
            continue;
        }
        mc_engine_service *s = &e->services[f->target];
        switch (f->type) {
        case SIM__V1__FAULT_TYPE__FAULT_TYPE_MEMORY_LEAK: s->f_leak += x; break;
        case SIM__V1__FAULT_TYPE__FAULT_TYPE_CPU_HOG:
            s->f_hog = s->f_hog + x > 0.95 ? 0.95 : s->f_hog + x;
            break;
        case SIM__V1__FAULT_TYPE__FAULT_TYPE_TRAFFIC_SPIKE:
            s->f_spike = s->f_spike * x > 1000.0 ? 1000.0 : s->f_spike * x;
            break;
        case SIM__V1__FAULT_TYPE__FAULT_TYPE_DEPENDENCY_LATENCY: s->f_latency_ms += x * 1000.0; break;
        case SIM__V1__FAULT_TYPE__FAULT_TYPE_ERROR_BURST: s->f_error = 1.0 - (1.0 - s->f_error) * (1.0 - x); break;
        default: break;
        }
    }
}

/* Makes room in the fault table by dropping ended faults (they have been
 * reported); keeps the order of the rest. */
static void compact_faults(mc_engine *e)
{
    size_t w = 0;
    for (size_t i = 0; i < e->n_faults; i++)
        if (e->faults[i].state != MC_FAULT_ENDED)
            e->faults[w++] = e->faults[i];
    e->n_faults = w;
}

mc_status mc_engine_inject_fault(mc_engine *e, const Sim__V1__Fault *fault,
                                 Sim__V1__Fault *scheduled, mc_error *err)
{
    if (e->services == NULL)
        return mc_error_set(err, MC_ERR_STATE, "engine: not initialized");
    if (fault == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: no fault");
    const char *tname = mc_scenario_fault_type_name((int)fault->type);
    if (tname == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: unknown fault type %d",
                            (int)fault->type);
    const char *target = fault->target_id ? fault->target_id : "";
    long s = mc_engine__find_service(e, target);
    long n = mc_engine__find_node(e, target);
    if (s < 0 && n < 0)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: unknown node or service \"%.64s\"",
                            target);
    mc_target_kind need = mc_scenario_fault_target_kind((int)fault->type);
    if (need == MC_TARGET_NODE && n < 0)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: %s needs a node, \"%s\" is a service",
                            tname, target);
    if (need == MC_TARGET_SERVICE && s < 0)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: %s needs a service, \"%s\" is a node",
                            tname, target);
    const char *range = mc_scenario_fault_intensity_check((int)fault->type, fault->intensity);
    if (range != NULL)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: intensity %g: expected %s for %s",
                            fault->intensity, range, tname);
    const char *given_id = fault->fault_id ? fault->fault_id : "";
    if (strlen(given_id) >= MC_SCENARIO_ID_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "inject fault: fault_id longer than %d bytes",
                            MC_SCENARIO_ID_MAX - 1);
    if (given_id[0] != '\0')
        for (size_t i = 0; i < e->n_faults; i++)
            if (strcmp(e->faults[i].id, given_id) == 0)
                return mc_error_set(err, MC_ERR_EXISTS, "inject fault: fault \"%s\" exists",
                                    given_id);
    if (e->n_faults == MC_ENGINE_MAX_FAULTS)
        compact_faults(e);
    if (e->n_faults == MC_ENGINE_MAX_FAULTS)
        return mc_error_set(err, MC_ERR_LIMIT, "inject fault: %d faults are pending or active",
                            MC_ENGINE_MAX_FAULTS);
    mc_engine_fault *f = &e->faults[e->n_faults];
    memset(f, 0, sizeof *f);
    f->type = (int)fault->type;
    snprintf(f->target_id, sizeof f->target_id, "%s", target);
    f->target_kind = s >= 0 ? MC_TARGET_SERVICE : MC_TARGET_NODE;
    f->target = (uint32_t)(s >= 0 ? s : n);
    f->intensity = fault->intensity;
    f->duration_ticks = fault->duration_ticks;
    f->start_tick = fault->start_tick > e->tick ? fault->start_tick : e->tick + 1;
    f->state = MC_FAULT_PENDING;
    e->inject_count++;
    if (given_id[0] != '\0') {
        memcpy(f->id, given_id, strlen(given_id) + 1);
    } else {
        char extra[40];
        snprintf(extra, sizeof extra, "inject/%" PRIu64, e->inject_count);
        mc_id_uuid(f->id, "fault", e->run_id, f->start_tick, f->target_id, extra);
    }
    e->n_faults++;
    if (scheduled != NULL)
        mc_engine__fault_to_proto(f, scheduled);
    return MC_OK;
}
