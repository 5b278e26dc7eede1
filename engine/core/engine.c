#include "engine.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "common/v1/stamp.pb-c.h"
#include "core/ids.h"
#include "core/rng.h"
#include "core/table.h"
#include "engine_internal.h"
#include "sort.h"

/* ---------------------------------------------------------------------------
 * Allocation with accounting
 * ------------------------------------------------------------------------- */

void *mc_engine__calloc(mc_engine *e, size_t n, size_t size)
{
    if (n == 0)
        n = 1;
    void *p = calloc(n, size);
    if (p != NULL)
        e->alloc_bytes += n * size;
    return p;
}

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------- */

static double clampd(double v, double lo, double hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

static double mind(double a, double b)
{
    return a < b ? a : b;
}

double mc_engine_sin_turns(double phase)
{
    /* Reduce to [0, 1) turns without fmod: only + - * / on doubles, and a
     * conversion to an integer, which is exact and the same everywhere. */
    double whole = (double)(int64_t)phase;
    double p = phase - whole;
    if (p < 0.0)
        p += 1.0;
    /* Bhaskara I: sin(pi u) ~ 16 u (1 - u) / (5 - 4 u (1 - u)) on [0, 1]. */
    double sign = 1.0;
    double u = 2.0 * p;
    if (u >= 1.0) {
        u -= 1.0;
        sign = -1.0;
    }
    double q = u * (1.0 - u);
    return sign * (16.0 * q) / (5.0 - 4.0 * q);
}

void mc_engine__event(mc_engine *e, int kind, const char *target, const char *fmt, ...)
{
    mc_engine_event *ev = mc_engine__event_new(e, kind, target);
    if (ev == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->message, sizeof ev->message, fmt, ap);
    va_end(ap);
}

mc_engine_event *mc_engine__event_new(mc_engine *e, int kind, const char *target)
{
    if (e->n_events >= e->cfg.max_events_per_tick) {
        e->events_dropped++;
        return NULL;
    }
    mc_engine_event *ev = &e->events[e->n_events++];
    memset(ev, 0, sizeof *ev);
    ev->kind = kind;
    if (target != NULL)
        snprintf(ev->target_id, sizeof ev->target_id, "%s", target);
    return ev;
}

static const char *node_status_name(int st)
{
    switch (st) {
    case COMMON__V1__NODE_STATUS__NODE_STATUS_READY: return "ready";
    case COMMON__V1__NODE_STATUS__NODE_STATUS_DEGRADED: return "degraded";
    case COMMON__V1__NODE_STATUS__NODE_STATUS_DOWN: return "down";
    case COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINING: return "draining";
    case COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINED: return "drained";
    default: return "unknown";
    }
}

static const char *service_status_name(int st)
{
    switch (st) {
    case COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY: return "healthy";
    case COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED: return "degraded";
    case COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_UNHEALTHY: return "unhealthy";
    case COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_RESTARTING: return "restarting";
    case COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN: return "down";
    default: return "unknown";
    }
}

int mc_engine__node_status(const mc_engine_node *n)
{
    if (n->crash_faults > 0)
        return COMMON__V1__NODE_STATUS__NODE_STATUS_DOWN;
    if (n->drain == MC_DRAIN_DRAINED)
        return COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINED;
    if (n->drain == MC_DRAIN_DRAINING)
        return COMMON__V1__NODE_STATUS__NODE_STATUS_DRAINING;
    if (n->degradation > 0.0)
        return COMMON__V1__NODE_STATUS__NODE_STATUS_DEGRADED;
    return COMMON__V1__NODE_STATUS__NODE_STATUS_READY;
}

int mc_engine__node_schedulable(const mc_engine_node *n)
{
    return n->crash_faults == 0 && n->drain == MC_DRAIN_NONE;
}

static int replica_serving(const mc_engine_replica *r)
{
    return r->state == MC_REPLICA_READY || r->state == MC_REPLICA_TERMINATING;
}

static int replica_live(const mc_engine_replica *r)
{
    return r->state != MC_REPLICA_REMOVED;
}

/* ---------------------------------------------------------------------------
 * Replicas: placement and the (service, id) ordered table
 * ------------------------------------------------------------------------- */

/* Drops removed replicas and recomputes every service's range and every
 * node's reservations. O(replicas + services + nodes); called after any
 * change of the table's shape. */
void mc_engine__reindex(mc_engine *e)
{
    size_t w = 0;
    for (size_t i = 0; i < e->n_replicas; i++)
        if (replica_live(&e->replicas[i]))
            e->replicas[w++] = e->replicas[i];
    e->n_replicas = w;
    for (size_t s = 0; s < e->n_services; s++) {
        e->services[s].rep_first = 0;
        e->services[s].rep_count = 0;
    }
    for (size_t n = 0; n < e->n_nodes; n++) {
        e->nodes[n].reserved_cpu = 0.0;
        e->nodes[n].reserved_mem = 0.0;
        e->nodes[n].replica_count = 0;
    }
    for (size_t i = e->n_replicas; i-- > 0;) {
        mc_engine_replica *r = &e->replicas[i];
        mc_engine_service *s = &e->services[r->service];
        s->rep_first = (uint32_t)i;
        s->rep_count++;
    }
    for (size_t i = 0; i < e->n_replicas; i++) {
        mc_engine_replica *r = &e->replicas[i];
        mc_engine_service *s = &e->services[r->service];
        mc_engine_node *n = &e->nodes[r->node];
        n->reserved_cpu += s->cpu_limit;
        n->reserved_mem += s->mem_limit;
        n->replica_count++;
    }
}

/* The node a new replica of service s goes to, or -1 when none has room.
 * Schedulable nodes with the service's CPU and memory limits free (CPU
 * counted against the node's degraded capacity); among them the one with
 * the fewest replicas of s (spread), then the most free CPU, then the
 * smallest id. exclude is a node to skip (the one being drained), or -1. */
long mc_engine__place(mc_engine *e, uint32_t s, long exclude)
{
    const mc_engine_service *svc = &e->services[s];
    uint32_t *count = e->node_scratch;
    for (uint32_t k = 0; k < svc->rep_count; k++) {
        const mc_engine_replica *r = &e->replicas[svc->rep_first + k];
        if (replica_live(r) && r->state != MC_REPLICA_TERMINATING)
            count[r->node]++;
    }
    long best = -1;
    double best_free = 0.0;
    for (size_t i = 0; i < e->n_nodes; i++) {
        const mc_engine_node *n = &e->nodes[i];
        if ((long)i == exclude || !mc_engine__node_schedulable(n))
            continue;
        double free_cpu = n->cpu_cores * (1.0 - n->degradation) - n->reserved_cpu;
        double free_mem = n->memory_mb - n->reserved_mem;
        /* A small tolerance so exact fits are not lost to rounding. */
        if (free_cpu + 1e-9 < svc->cpu_limit || free_mem + 1e-9 < svc->mem_limit)
            continue;
        if (best < 0 || count[i] < count[best] ||
            (count[i] == count[best] && free_cpu > best_free)) {
            best = (long)i;
            best_free = free_cpu;
        }
    }
    for (uint32_t k = 0; k < svc->rep_count; k++)
        count[e->replicas[svc->rep_first + k].node] = 0;
    return best;
}

static double skew_weight(const mc_engine *e, uint64_t replica_id, uint64_t tick)
{
    /* Real load balancers are never perfectly even: each replica gets a
     * share within +-20% until REBALANCE_TRAFFIC evens them out. */
    double u = mc_rng_unit(e->seed, MC_RNG_STREAM_PLACEMENT, tick, replica_id, 0);
    return 0.8 + 0.4 * u;
}

/* Adds a replica of service s on node (which must have room) in the given
 * state; returns its index after reindexing, or -1 when out of memory. */
long mc_engine__add_replica(mc_engine *e, uint32_t s, uint32_t node, mc_replica_state state,
                            uint64_t until, uint64_t tick)
{
    if (e->n_replicas == e->cap_replicas) {
        size_t cap = e->cap_replicas ? e->cap_replicas * 2 : 64;
        mc_engine_replica *nr = realloc(e->replicas, cap * sizeof *nr);
        if (nr == NULL)
            return -1;
        e->alloc_bytes += (cap - e->cap_replicas) * sizeof *nr;
        e->replicas = nr;
        e->cap_replicas = cap;
    }
    mc_engine_service *svc = &e->services[s];
    /* Insert at the end of the service's range: ids grow, so the table stays
     * ordered by (service, id). A service without replicas goes before the
     * first replica of a later service. */
    size_t pos;
    if (svc->rep_count > 0) {
        pos = svc->rep_first + svc->rep_count;
    } else {
        pos = e->n_replicas;
        for (size_t i = 0; i < e->n_replicas; i++)
            if (e->replicas[i].service > s) {
                pos = i;
                break;
            }
    }
    mc_table_open(e->replicas, sizeof *e->replicas, e->n_replicas, pos);
    e->n_replicas++;
    mc_engine_replica *r = &e->replicas[pos];
    memset(r, 0, sizeof *r);
    r->id = ++e->next_replica_id;
    r->service = s;
    r->node = node;
    r->state = state;
    r->until = until;
    r->weight = skew_weight(e, r->id, tick);
    r->mem_mb = svc->mem_baseline;
    /* Update the ranges and reservations in place rather than reindexing
     * the whole table: placing a large topology adds tens of thousands of
     * replicas one by one. */
    if (svc->rep_count == 0)
        svc->rep_first = (uint32_t)pos;
    svc->rep_count++;
    if (pos + 1 < e->n_replicas) /* not an append: later ranges shift */
        for (size_t i = (size_t)s + 1; i < e->n_services; i++)
            e->services[i].rep_first++;
    mc_engine_node *n = &e->nodes[node];
    n->reserved_cpu += svc->cpu_limit;
    n->reserved_mem += svc->mem_limit;
    n->replica_count++;
    return (long)pos;
}

/* ---------------------------------------------------------------------------
 * Building the world
 * ------------------------------------------------------------------------- */

/* A service before it is sorted into place. */
typedef struct proto_service {
    mc_scenario_service s;
    uint32_t dep_first, dep_count; /* into the proto dep arrays (proto indices) */
} proto_service;

static int cmp_proto_service(const void *ctx, uint32_t a, uint32_t b)
{
    const proto_service *ps = ctx;
    int c = strcmp(ps[a].s.id, ps[b].s.id);
    return c != 0 ? c : (a < b ? -1 : a > b);
}

static int cmp_proto_node(const void *ctx, uint32_t a, uint32_t b)
{
    const mc_scenario_node *ns = ctx;
    int c = strcmp(ns[a].id, ns[b].id);
    return c != 0 ? c : (a < b ? -1 : a > b);
}

static void free_world(mc_engine *e)
{
    free(e->nodes);
    free(e->services);
    free(e->dep_target);
    free(e->dep_ratio);
    free(e->order);
    free(e->incoming);
    free(e->node_scratch);
    free(e->replicas);
    free(e->faults);
    free(e->commands);
    free(e->cmd_order);
    free(e->cmd_scratch);
    free(e->events);
    free(e->samples);
    free(e->sample_ptrs);
    e->nodes = NULL;
    e->services = NULL;
    e->dep_target = NULL;
    e->dep_ratio = NULL;
    e->order = NULL;
    e->incoming = NULL;
    e->node_scratch = NULL;
    e->replicas = NULL;
    e->faults = NULL;
    e->commands = NULL;
    e->cmd_order = NULL;
    e->cmd_scratch = NULL;
    e->events = NULL;
    e->samples = NULL;
    e->sample_ptrs = NULL;
    e->n_nodes = e->n_services = e->n_deps = e->n_replicas = e->cap_replicas = 0;
    e->n_faults = e->n_commands = e->n_events = e->n_samples = 0;
    e->alloc_bytes = 0;
}

/* Generated topologies for scale tests: nodes and services appended to the
 * scenario's, a DAG of calls (a generated service only calls generated
 * services after it), loads sized so every service idles near 40% CPU. */
static mc_status generate(mc_engine *e, mc_scenario_node *nodes, size_t n_nodes_sc,
                          size_t n_nodes, proto_service *ps, size_t n_sc, size_t n_total,
                          uint32_t *pd_target, double *pd_ratio, size_t *n_pd)
{
    const uint64_t seed = e->seed;
    for (size_t i = n_nodes_sc; i < n_nodes; i++) {
        mc_scenario_node *n = &nodes[i];
        memset(n, 0, sizeof *n);
        snprintf(n->id, sizeof n->id, "gen-node-%04zu", i - n_nodes_sc + 1);
        n->cpu_cores = 32.0;
        n->memory_mb = 131072.0;
    }
    size_t g = n_total - n_sc;
    for (size_t k = 0; k < g; k++) {
        proto_service *p = &ps[n_sc + k];
        memset(p, 0, sizeof *p);
        mc_scenario_service *s = &p->s;
        snprintf(s->id, sizeof s->id, "gen-svc-%05zu", k + 1);
        s->external_rps = 20.0 + 60.0 * mc_rng_unit(seed, MC_RNG_STREAM_TOPOLOGY, 0, k, 0);
        s->cpu_cores_per_replica = 0.5;
        s->memory_baseline_mb = 256.0;
        s->memory_limit_mb = 1024.0;
        s->base_latency_ms = 5.0 + 20.0 * mc_rng_unit(seed, MC_RNG_STREAM_TOPOLOGY, 0, k, 1);
        s->timeout_ms = 3000.0;
        s->replicas = 2;
        s->max_replicas = 6;
        s->warmup_ticks = 3;
        s->restart_ticks = 3;
        p->dep_first = (uint32_t)*n_pd;
        size_t window = g - k - 1 < 50 ? g - k - 1 : 50;
        for (uint32_t d = 0; d < 2 && window > 0; d++) {
            uint64_t pick = mc_rng_u64(seed, MC_RNG_STREAM_TOPOLOGY, 1, k, d) % window;
            uint32_t target = (uint32_t)(n_sc + k + 1 + pick);
            int dup = 0;
            for (uint32_t j = 0; j < p->dep_count; j++)
                if (pd_target[p->dep_first + j] == target)
                    dup = 1;
            if (dup)
                continue;
            pd_target[*n_pd] = target;
            pd_ratio[*n_pd] = 0.25;
            (*n_pd)++;
            p->dep_count++;
        }
    }
    /* Size the CPU cost from the base load: generated services only receive
     * calls from generated services before them, so one pass in index order
     * sees every caller first. */
    double *load = calloc(g ? g : 1, sizeof *load);
    if (load == NULL)
        return MC_ERR_NOMEM;
    for (size_t k = 0; k < g; k++) {
        proto_service *p = &ps[n_sc + k];
        load[k] += p->s.external_rps;
        for (uint32_t j = 0; j < p->dep_count; j++)
            load[pd_target[p->dep_first + j] - n_sc] += load[k] * pd_ratio[p->dep_first + j];
        double capacity_ms = 0.4 * p->s.replicas * p->s.cpu_cores_per_replica * 1000.0;
        p->s.cpu_ms_per_request = load[k] > 0.0 ? capacity_ms / load[k] : 5.0;
    }
    free(load);
    return MC_OK;
}

static mc_status build_world(mc_engine *e, mc_error *err)
{
    const mc_scenario *sc = &e->sc;
    size_t n_nodes = e->cfg.node_count ? e->cfg.node_count : sc->n_nodes;
    size_t n_services = e->cfg.service_count ? e->cfg.service_count : sc->n_services;
    mc_status st = MC_OK;
    size_t max_deps = sc->n_deps + 2 * (n_services - sc->n_services);
    mc_scenario_node *pnodes = calloc(n_nodes, sizeof *pnodes);
    proto_service *ps = calloc(n_services, sizeof *ps);
    uint32_t *pd_target = calloc(max_deps ? max_deps : 1, sizeof *pd_target);
    double *pd_ratio = calloc(max_deps ? max_deps : 1, sizeof *pd_ratio);
    uint32_t *by_id = calloc(n_services > n_nodes ? n_services : n_nodes, sizeof *by_id);
    uint32_t *scratch = calloc(n_services > n_nodes ? n_services : n_nodes, sizeof *scratch);
    uint32_t *new_index = calloc(n_services, sizeof *new_index);
    uint32_t *node_new_index = calloc(n_nodes, sizeof *node_new_index);
    uint32_t *rank = calloc(n_services, sizeof *rank);
    uint32_t *cycle = calloc(n_services, sizeof *cycle);
    uint32_t *dfirst = calloc(n_services, sizeof *dfirst);
    uint32_t *dcount = calloc(n_services, sizeof *dcount);
    if (!pnodes || !ps || !pd_target || !pd_ratio || !by_id || !scratch || !new_index ||
        !node_new_index || !rank || !cycle || !dfirst || !dcount) {
        st = mc_error_set(err, MC_ERR_NOMEM, "engine: out of memory building the topology");
        goto out;
    }
    memcpy(pnodes, sc->nodes, sc->n_nodes * sizeof *pnodes);
    size_t n_pd = 0;
    for (size_t i = 0; i < sc->n_services; i++) {
        ps[i].s = sc->services[i];
        ps[i].dep_first = (uint32_t)n_pd;
        ps[i].dep_count = sc->services[i].dep_count;
        for (uint32_t k = 0; k < sc->services[i].dep_count; k++) {
            pd_target[n_pd] = sc->deps[sc->services[i].dep_first + k].service;
            pd_ratio[n_pd] = sc->deps[sc->services[i].dep_first + k].ratio;
            n_pd++;
        }
    }
    st = generate(e, pnodes, sc->n_nodes, n_nodes, ps, sc->n_services, n_services, pd_target,
                  pd_ratio, &n_pd);
    if (st != MC_OK) {
        st = mc_error_set(err, st, "engine: out of memory generating the topology");
        goto out;
    }

    /* Nodes and services sorted by id: indices then follow ids, so every
     * "in index order" loop is "in id order". */
    e->nodes = mc_engine__calloc(e, n_nodes, sizeof *e->nodes);
    e->services = mc_engine__calloc(e, n_services, sizeof *e->services);
    e->dep_target = mc_engine__calloc(e, n_pd, sizeof *e->dep_target);
    e->dep_ratio = mc_engine__calloc(e, n_pd, sizeof *e->dep_ratio);
    e->order = mc_engine__calloc(e, n_services, sizeof *e->order);
    e->incoming = mc_engine__calloc(e, n_services, sizeof *e->incoming);
    e->node_scratch = mc_engine__calloc(e, n_nodes, sizeof *e->node_scratch);
    e->faults = mc_engine__calloc(e, MC_ENGINE_MAX_FAULTS, sizeof *e->faults);
    e->commands = mc_engine__calloc(e, MC_ENGINE_MAX_PENDING_COMMANDS, sizeof *e->commands);
    e->cmd_order = mc_engine__calloc(e, MC_ENGINE_MAX_PENDING_COMMANDS, sizeof *e->cmd_order);
    e->cmd_scratch = mc_engine__calloc(e, MC_ENGINE_MAX_PENDING_COMMANDS, sizeof *e->cmd_scratch);
    e->events = mc_engine__calloc(e, e->cfg.max_events_per_tick, sizeof *e->events);
    e->n_samples = n_services * MC_ENGINE_SERVICE_METRICS + n_nodes * MC_ENGINE_NODE_METRICS;
    e->samples = mc_engine__calloc(e, e->n_samples, sizeof *e->samples);
    e->sample_ptrs = mc_engine__calloc(e, e->n_samples, sizeof *e->sample_ptrs);
    if (!e->nodes || !e->services || !e->dep_target || !e->dep_ratio || !e->order ||
        !e->incoming || !e->node_scratch || !e->faults || !e->commands || !e->cmd_order ||
        !e->cmd_scratch || !e->events || !e->samples || !e->sample_ptrs) {
        st = mc_error_set(err, MC_ERR_NOMEM, "engine: out of memory building the topology");
        goto out;
    }
    e->n_nodes = n_nodes;
    e->n_services = n_services;
    e->n_deps = n_pd;

    for (size_t i = 0; i < n_nodes; i++)
        by_id[i] = (uint32_t)i;
    mc_sort_u32(by_id, n_nodes, scratch, cmp_proto_node, pnodes);
    for (size_t i = 0; i < n_nodes; i++) {
        const mc_scenario_node *src = &pnodes[by_id[i]];
        mc_engine_node *n = &e->nodes[i];
        node_new_index[by_id[i]] = (uint32_t)i;
        memcpy(n->id, src->id, sizeof n->id);
        n->key = mc_rng_hash_str(n->id);
        n->cpu_cores = src->cpu_cores;
        n->memory_mb = src->memory_mb;
        n->status = COMMON__V1__NODE_STATUS__NODE_STATUS_READY;
        n->cap_factor = 1.0;
    }
    for (size_t i = 1; i < n_nodes; i++)
        if (strcmp(e->nodes[i - 1].id, e->nodes[i].id) == 0) {
            st = mc_error_set(err, MC_ERR_INVALID, "engine: duplicate node id \"%s\"",
                              e->nodes[i].id);
            goto out;
        }

    for (size_t i = 0; i < n_services; i++)
        by_id[i] = (uint32_t)i;
    mc_sort_u32(by_id, n_services, scratch, cmp_proto_service, ps);
    for (size_t i = 0; i < n_services; i++)
        new_index[by_id[i]] = (uint32_t)i;
    size_t d = 0;
    for (size_t i = 0; i < n_services; i++) {
        const proto_service *p = &ps[by_id[i]];
        mc_engine_service *s = &e->services[i];
        memcpy(s->id, p->s.id, sizeof s->id);
        s->key = mc_rng_hash_str(s->id);
        s->external_rps = p->s.external_rps;
        s->cpu_ms = p->s.cpu_ms_per_request;
        s->cpu_limit = p->s.cpu_cores_per_replica;
        s->mem_baseline = p->s.memory_baseline_mb;
        s->mem_limit = p->s.memory_limit_mb;
        s->base_latency_ms = p->s.base_latency_ms;
        s->timeout_ms = p->s.timeout_ms;
        s->max_replicas = p->s.max_replicas;
        s->warmup_ticks = p->s.warmup_ticks;
        s->restart_ticks = p->s.restart_ticks;
        s->desired = p->s.replicas;
        s->status = COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
        s->f_spike = 1.0;
        s->dep_first = (uint32_t)d;
        s->dep_count = p->dep_count;
        for (uint32_t k = 0; k < p->dep_count; k++) {
            e->dep_target[d] = new_index[pd_target[p->dep_first + k]];
            e->dep_ratio[d] = pd_ratio[p->dep_first + k];
            d++;
        }
        dfirst[i] = s->dep_first;
        dcount[i] = s->dep_count;
        rank[i] = (uint32_t)i;
    }
    for (size_t i = 1; i < n_services; i++)
        if (strcmp(e->services[i - 1].id, e->services[i].id) == 0) {
            st = mc_error_set(err, MC_ERR_INVALID, "engine: duplicate service id \"%s\"",
                              e->services[i].id);
            goto out;
        }
    size_t cycle_len = 0;
    st = mc_scenario_dep_order(n_services, dfirst, dcount, e->dep_target, rank, e->order, cycle,
                               &cycle_len);
    if (st != MC_OK) {
        st = mc_error_set(err, st, "engine: the dependency graph has a cycle through \"%s\"",
                          cycle_len ? e->services[cycle[0]].id : "?");
        goto out;
    }

    /* Initial placement, service by service in id order; initial replicas
     * are ready at once. */
    for (size_t i = 0; i < n_services; i++) {
        mc_engine_service *s = &e->services[i];
        for (uint32_t k = 0; k < s->desired; k++) {
            long node = mc_engine__place(e, (uint32_t)i, -1);
            if (node < 0) {
                st = mc_error_set(err, MC_ERR_INVALID,
                                  "scenario %s: cannot place replica %u of service \"%s\": no "
                                  "node has %g cores and %g MiB free",
                                  sc->name, k + 1, s->id, s->cpu_limit, s->mem_limit);
                goto out;
            }
            if (mc_engine__add_replica(e, (uint32_t)i, (uint32_t)node, MC_REPLICA_READY, 0, 0) <
                0) {
                st = mc_error_set(err, MC_ERR_NOMEM, "engine: out of memory placing replicas");
                goto out;
            }
        }
    }

    /* The scenario's fault timeline. */
    for (size_t f = 0; f < sc->n_faults; f++) {
        const mc_scenario_fault *src = &sc->faults[f];
        mc_engine_fault *ft = &e->faults[e->n_faults++];
        memset(ft, 0, sizeof *ft);
        ft->type = src->type;
        memcpy(ft->target_id, src->target_id, sizeof ft->target_id);
        ft->target_kind = src->target_kind;
        ft->target = src->target_kind == MC_TARGET_NODE ? node_new_index[src->target_index]
                                                        : new_index[src->target_index];
        ft->intensity = src->intensity;
        ft->duration_ticks = src->duration_ticks;
        ft->start_tick = src->start_tick ? src->start_tick : 1;
        ft->state = MC_FAULT_PENDING;
        char extra[32];
        snprintf(extra, sizeof extra, "scenario/%zu", f);
        mc_id_uuid(ft->id, "fault", e->run_id, ft->start_tick, ft->target_id, extra);
    }

    /* The sample table: ids and names never change, only values. */
    static const char *const svc_metric[MC_ENGINE_SERVICE_METRICS] = {
        "cpu_usage", "memory_usage", "error_rate", "p99_latency_ms", "requests_per_second",
        "replicas"};
    static const char *const node_metric[MC_ENGINE_NODE_METRICS] = {"cpu_usage", "memory_usage",
                                                                     "node_status"};
    size_t k = 0;
    for (size_t i = 0; i < n_services; i++)
        for (size_t m = 0; m < MC_ENGINE_SERVICE_METRICS; m++, k++) {
            Sim__V1__MetricSample *smp = &e->samples[k];
            sim__v1__metric_sample__init(smp);
            smp->node_id = (char *)"";
            smp->service_id = e->services[i].id;
            smp->metric_name = (char *)svc_metric[m];
            e->sample_ptrs[k] = smp;
        }
    for (size_t i = 0; i < n_nodes; i++)
        for (size_t m = 0; m < MC_ENGINE_NODE_METRICS; m++, k++) {
            Sim__V1__MetricSample *smp = &e->samples[k];
            sim__v1__metric_sample__init(smp);
            smp->node_id = e->nodes[i].id;
            smp->service_id = (char *)"";
            smp->metric_name = (char *)node_metric[m];
            e->sample_ptrs[k] = smp;
        }
out:
    free(pnodes);
    free(ps);
    free(pd_target);
    free(pd_ratio);
    free(by_id);
    free(scratch);
    free(new_index);
    free(node_new_index);
    free(rank);
    free(cycle);
    free(dfirst);
    free(dcount);
    return st;
}

static mc_status start_run(mc_engine *e, mc_error *err)
{
    free_world(e);
    e->tick = 0;
    e->next_seq = 1;
    e->next_replica_id = 0;
    e->inject_count = 0;
    e->command_arrivals = 0;
    e->events_dropped = 0;
    memset(e->run_id, 0, sizeof e->run_id);
    mc_id_run(e->run_id, e->sc.name, e->seed, e->reset_count);
    mc_status st = build_world(e, err);
    if (st != MC_OK)
        free_world(e);
    return st;
}

mc_status mc_engine_init(mc_engine *e, const mc_scenario *sc, const mc_engine_config *cfg,
                         mc_error *err)
{
    memset(e, 0, sizeof *e);
    if (sc == NULL || cfg == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "engine: no scenario or config");
    if (sc->n_nodes == 0 || sc->n_services == 0)
        return mc_error_set(err, MC_ERR_INVALID, "engine: scenario %s has no node or service",
                            sc->name);
    e->cfg = *cfg;
    if (e->cfg.chunk_max_samples == 0)
        e->cfg.chunk_max_samples = MC_ENGINE_DEFAULT_CHUNK_SAMPLES;
    if (e->cfg.max_events_per_tick == 0)
        e->cfg.max_events_per_tick = MC_ENGINE_DEFAULT_MAX_EVENTS;
    if (e->cfg.node_count != 0 &&
        (e->cfg.node_count < sc->n_nodes || e->cfg.node_count > MC_ENGINE_MAX_NODES))
        return mc_error_set(err, MC_ERR_RANGE,
                            "engine: node_count %u must be 0 or from %zu (the scenario's nodes) "
                            "to %d",
                            e->cfg.node_count, sc->n_nodes, MC_ENGINE_MAX_NODES);
    if (e->cfg.service_count != 0 &&
        (e->cfg.service_count < sc->n_services || e->cfg.service_count > MC_ENGINE_MAX_SERVICES))
        return mc_error_set(err, MC_ERR_RANGE,
                            "engine: service_count %u must be 0 or from %zu (the scenario's "
                            "services) to %d",
                            e->cfg.service_count, sc->n_services, MC_ENGINE_MAX_SERVICES);
    if (e->cfg.max_events_per_tick > 1000000 || e->cfg.chunk_max_samples > 1000000)
        return mc_error_set(err, MC_ERR_RANGE, "engine: chunk or event limit too large");
    mc_status st = mc_scenario_copy(&e->sc, sc, err);
    if (st != MC_OK)
        return st;
    e->seed = cfg->seed;
    st = start_run(e, err);
    if (st != MC_OK) {
        mc_scenario_free(&e->sc);
        memset(e, 0, sizeof *e);
    }
    return st;
}

void mc_engine_deinit(mc_engine *e)
{
    if (e == NULL)
        return;
    free_world(e);
    mc_scenario_free(&e->sc);
    memset(e, 0, sizeof *e);
}

mc_status mc_engine_reset(mc_engine *e, uint64_t seed, mc_error *err)
{
    if (e->services == NULL)
        return mc_error_set(err, MC_ERR_STATE, "engine: not initialized");
    if (seed != 0)
        e->seed = seed;
    e->reset_count++;
    return start_run(e, err);
}

/* ---------------------------------------------------------------------------
 * The tick
 * ------------------------------------------------------------------------- */

/* Replica state changes due at this tick, then replacement of lost
 * replicas, then drains that completed. */
static void lifecycle(mc_engine *e, uint64_t tick)
{
    int shape_changed = 0;
    for (size_t i = 0; i < e->n_replicas; i++) {
        mc_engine_replica *r = &e->replicas[i];
        mc_engine_service *s = &e->services[r->service];
        if (r->state == MC_REPLICA_READY && r->restart_at != 0 && r->restart_at <= tick) {
            r->state = MC_REPLICA_RESTARTING;
            r->until = tick + s->restart_ticks;
            r->restart_at = 0;
            continue;
        }
        if (r->until == 0 || r->until > tick)
            continue;
        switch (r->state) {
        case MC_REPLICA_STARTING:
        case MC_REPLICA_CRASHED:
        case MC_REPLICA_RESTARTING: {
            const char *why = r->state == MC_REPLICA_STARTING ? "started" : "restarted";
            r->state = MC_REPLICA_READY;
            r->until = 0;
            r->leak_mb = 0.0;
            r->mem_mb = s->mem_baseline;
            r->weight = skew_weight(e, r->id, tick);
            mc_engine__event(e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_REPLICA_STARTED,
                             s->id, "replica %" PRIu64 " of %s %s on %s and is serving", r->id,
                             s->id, why, e->nodes[r->node].id);
            break;
        }
        case MC_REPLICA_TERMINATING:
            r->state = MC_REPLICA_REMOVED;
            shape_changed = 1;
            break;
        default:
            break;
        }
    }
    if (shape_changed)
        mc_engine__reindex(e);
    /* Replace replicas lost with a node, where there is room. */
    for (size_t si = 0; si < e->n_services; si++) {
        mc_engine_service *s = &e->services[si];
        uint32_t live = 0;
        for (uint32_t k = 0; k < s->rep_count; k++)
            if (e->replicas[s->rep_first + k].state != MC_REPLICA_TERMINATING)
                live++;
        for (uint32_t guard = 0; live < s->desired && guard < s->max_replicas; guard++) {
            long node = mc_engine__place(e, (uint32_t)si, -1);
            if (node < 0)
                break;
            if (mc_engine__add_replica(e, (uint32_t)si, (uint32_t)node, MC_REPLICA_STARTING,
                                       tick + s->warmup_ticks, tick) < 0)
                break;
            live++;
        }
    }
    for (size_t n = 0; n < e->n_nodes; n++)
        if (e->nodes[n].drain == MC_DRAIN_DRAINING && e->nodes[n].replica_count == 0)
            e->nodes[n].drain = MC_DRAIN_DRAINED;
}

/* The load multiplier every external load shares at this tick: the daily
 * pattern and the ramp. */
static double global_traffic(const mc_engine *e, uint64_t tick)
{
    const mc_scenario_traffic *t = &e->sc.traffic;
    double phase = (double)(tick % t->day_ticks) / (double)t->day_ticks + t->day_phase;
    double m = 1.0 + t->daily_amplitude * mc_engine_sin_turns(phase);
    if (t->ramp_multiplier != 1.0 && tick >= t->ramp_start_tick) {
        uint64_t into = tick - t->ramp_start_tick;
        double f = t->ramp_ticks == 0 || into >= t->ramp_ticks
                       ? 1.0
                       : (double)into / (double)t->ramp_ticks;
        m *= 1.0 + (t->ramp_multiplier - 1.0) * f;
    }
    return m;
}

/* An approximately standard normal value from a single draw: the sum of
 * four 16-bit uniforms (Irwin-Hall, n = 4) scaled to unit variance. Bounded
 * to about +-3.46; only + - * on doubles, so exact everywhere. One draw
 * instead of the twelve of mc_rng_normal keeps large topologies cheap. */
static double normal1(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity)
{
    uint64_t u = mc_rng_u64(seed, stream, tick, entity, 0);
    double sum = 0.0;
    for (int i = 0; i < 4; i++) {
        sum += (double)(u & 0xffffu) * (1.0 / 65536.0);
        u >>= 16;
    }
    return (sum - 2.0) * 1.7320508075688772;
}

/* Offered load, callers before the services they call. */
static void load_pass(mc_engine *e, uint64_t tick)
{
    const mc_scenario_traffic *t = &e->sc.traffic;
    double g = global_traffic(e, tick);
    memset(e->incoming, 0, e->n_services * sizeof *e->incoming);
    for (size_t k = e->n_services; k-- > 0;) {
        uint32_t si = e->order[k];
        mc_engine_service *s = &e->services[si];
        double ext = 0.0;
        if (s->external_rps > 0.0) {
            ext = s->external_rps * g;
            if (t->noise > 0.0) {
                double z = normal1(e->seed, MC_RNG_STREAM_LOAD_NOISE, tick, s->key);
                ext *= clampd(1.0 + t->noise * z, 0.1, 3.0);
            }
            if (t->burst_probability > 0.0 &&
                mc_rng_unit(e->seed, MC_RNG_STREAM_BURST, tick, s->key, 0) < t->burst_probability)
                ext *= t->burst_multiplier;
        }
        double offered = (ext + e->incoming[si]) * s->f_spike;
        /* Keep the request count well inside uint64 range whatever the
         * scenario says. */
        s->offered_rps = mind(offered, 1e12);
        for (uint32_t d = 0; d < s->dep_count; d++)
            e->incoming[e->dep_target[s->dep_first + d]] +=
                s->offered_rps * e->dep_ratio[s->dep_first + d];
    }
}

static void node_capacity(mc_engine *e)
{
    for (size_t i = 0; i < e->n_nodes; i++) {
        mc_engine_node *n = &e->nodes[i];
        double eff = n->cpu_cores * (1.0 - n->degradation) - n->hog * n->cpu_cores;
        if (eff < 0.01 * n->cpu_cores)
            eff = 0.01 * n->cpu_cores;
        n->cap_factor = n->reserved_cpu > eff ? eff / n->reserved_cpu : 1.0;
        n->used_cpu = 0.0;
        n->used_mem = 0.0;
    }
}

static uint64_t round_u64(double v)
{
    if (v <= 0.0)
        return 0;
    return (uint64_t)(v + 0.5);
}

/* One service's tick, after every service it calls. */
static void service_tick(mc_engine *e, uint32_t si, uint64_t tick)
{
    mc_engine_service *s = &e->services[si];
    const double tick_s = (double)e->sc.tick_ms / 1000.0;
    double dep_wait_ms = 0.0, dep_ok = 1.0;
    for (uint32_t d = 0; d < s->dep_count; d++) {
        const mc_engine_service *dep = &e->services[e->dep_target[s->dep_first + d]];
        double ratio = e->dep_ratio[s->dep_first + d];
        dep_wait_ms += ratio * dep->p99_ms;
        dep_ok *= 1.0 - mind(1.0, ratio * dep->err_frac);
    }
    /* Threads held while waiting on slow dependencies cost CPU too. */
    double cpu_ms = s->cpu_ms * (1.0 + e->sc.traffic.blocking_factor * dep_wait_ms / 1000.0);

    uint64_t offered = round_u64(s->offered_rps * tick_s);
    double wsum = 0.0;
    uint32_t ready = 0;
    for (uint32_t k = 0; k < s->rep_count; k++) {
        const mc_engine_replica *r = &e->replicas[s->rep_first + k];
        if (replica_serving(r)) {
            wsum += r->weight;
            ready++;
        }
    }
    double admitted_rps = 0.0, lat = 0.0, near_sat = 0.0, cpu_sum = 0.0, mem_sum = 0.0;
    uint32_t mem_n = 0;
    double hog_cores = s->f_hog * s->cpu_limit;
    for (uint32_t k = 0; k < s->rep_count; k++) {
        mc_engine_replica *r = &e->replicas[s->rep_first + k];
        mc_engine_node *n = &e->nodes[r->node];
        if (r->state == MC_REPLICA_CRASHED || r->state == MC_REPLICA_RESTARTING) {
            r->cpu_pct = 0.0;
            r->rho = 0.0;
            r->mem_mb = 0.0;
            continue;
        }
        if (!replica_serving(r)) {
            /* Starting: holds its baseline memory, serves nothing. */
            r->cpu_pct = 0.0;
            r->rho = 0.0;
            n->used_mem += r->mem_mb;
            continue;
        }
        double share = r->weight / wsum;
        double rps = s->offered_rps * share;
        double avail = s->cpu_limit * n->cap_factor - hog_cores;
        if (avail < 0.01 * s->cpu_limit)
            avail = 0.01 * s->cpu_limit;
        double demand = rps * cpu_ms / 1000.0;
        double rho = demand / avail;
        admitted_rps += mind(rps, avail * 1000.0 / cpu_ms);
        double used = mind(demand, avail) + hog_cores;
        r->rho = rho;
        r->cpu_pct = clampd(used / s->cpu_limit * 100.0, 0.0, 100.0);
        cpu_sum += r->cpu_pct;
        n->used_cpu += used;
        lat += share * s->base_latency_ms / (1.0 - mind(rho, 0.98));
        if (rho > 0.9)
            near_sat += share * (mind(rho, 1.0) - 0.9) * 0.3;
        /* Memory: baseline, what the load holds, and any leak. */
        r->leak_mb += s->f_leak * 0.02 * s->mem_limit;
        r->mem_mb = s->mem_baseline + r->leak_mb + mind(rho, 1.0) * 0.1 * s->mem_baseline;
        mem_sum += clampd(r->mem_mb / s->mem_limit * 100.0, 0.0, 100.0);
        mem_n++;
        n->used_mem += r->mem_mb;
        /* Crashes take effect after this tick's numbers. */
        const char *why = NULL;
        if (r->mem_mb >= s->mem_limit) {
            why = "was killed out of memory";
        } else if (rho > 1.0) {
            double p = mind(0.25, (rho - 1.0) * 0.5);
            if (mc_rng_unit(e->seed, MC_RNG_STREAM_CRASH, tick, r->id, 0) < p)
                why = "timed out under overload and crashed";
        }
        if (why != NULL && r->state == MC_REPLICA_READY) {
            r->state = MC_REPLICA_CRASHED;
            r->until = tick + 1 + s->restart_ticks;
            r->restart_at = 0;
            mc_engine__event(e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_REPLICA_CRASHED,
                             s->id, "replica %" PRIu64 " of %s on %s %s (utilization %.0f%%)",
                             r->id, s->id, n->id, why, rho * 100.0);
        }
    }

    uint64_t admitted = 0;
    double p99;
    if (ready == 0) {
        p99 = s->timeout_ms;
    } else {
        double noise = 1.0 + 0.05 * normal1(e->seed, MC_RNG_STREAM_LATENCY_NOISE, tick, s->key);
        p99 = lat * clampd(noise, 0.5, 1.5) + s->f_latency_ms + dep_wait_ms;
        if (s->offered_rps > 0.0) {
            double frac = mind(1.0, admitted_rps / s->offered_rps);
            admitted = round_u64((double)offered * frac);
            if (admitted > offered)
                admitted = offered;
        }
    }
    double timeout_frac = 0.0;
    if (p99 > s->timeout_ms)
        timeout_frac = mind(1.0, 0.01 + (p99 - s->timeout_ms) / (2.0 * s->timeout_ms));
    double own_fail = 1.0 - (1.0 - s->f_error) * (1.0 - near_sat) * (1.0 - timeout_frac);
    double fail = 1.0 - (1.0 - own_fail) * dep_ok;
    uint64_t errored = round_u64((double)admitted * fail);
    if (errored > admitted)
        errored = admitted;
    s->offered = offered;
    s->rejected = offered - admitted;
    s->failed = s->rejected + errored;
    s->served = admitted - errored;
    if (offered > 0)
        s->err_frac = (double)s->failed / (double)offered;
    else
        s->err_frac = ready == 0 ? 1.0 : fail;
    s->p99_ms = p99;
    s->ready = ready;
    s->cpu_pct = ready ? cpu_sum / ready : 0.0;
    s->mem_pct = mem_n ? mem_sum / mem_n : 0.0;
}

static void node_pass(mc_engine *e)
{
    for (size_t i = 0; i < e->n_nodes; i++) {
        mc_engine_node *n = &e->nodes[i];
        if (n->crash_faults > 0) {
            n->cpu_pct = 0.0;
            n->mem_pct = 0.0;
            continue;
        }
        double cap = n->cpu_cores * (1.0 - n->degradation);
        if (cap < 0.01 * n->cpu_cores)
            cap = 0.01 * n->cpu_cores;
        n->cpu_pct = clampd((n->used_cpu + n->hog * n->cpu_cores) / cap * 100.0, 0.0, 100.0);
        n->mem_pct = clampd(n->used_mem / n->memory_mb * 100.0, 0.0, 100.0);
    }
}

static int service_status(const mc_engine_service *s, uint64_t tick)
{
    if (s->restart_until > tick)
        return COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_RESTARTING;
    if (s->ready == 0)
        return COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_DOWN;
    double er = s->err_frac * 100.0;
    if (er >= 50.0)
        return COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_UNHEALTHY;
    if (er > 5.0 || s->p99_ms > 500.0 || s->cpu_pct > 85.0)
        return COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_DEGRADED;
    return COMMON__V1__SERVICE_STATUS__SERVICE_STATUS_HEALTHY;
}

static void status_changes(mc_engine *e, uint64_t tick)
{
    bool announce_nodes = tick == 1 && e->n_nodes <= e->cfg.max_events_per_tick / 2;
    for (size_t i = 0; i < e->n_nodes; i++) {
        mc_engine_node *n = &e->nodes[i];
        int st = mc_engine__node_status(n);
        if (st == n->status && !announce_nodes)
            continue;
        mc_engine_event *ev = mc_engine__event_new(
            e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_NODE_STATUS_CHANGED, n->id);
        if (ev != NULL) {
            ev->node_status = st;
            if (st == n->status)
                snprintf(ev->message, sizeof ev->message, "node %s is %s at the start of the run",
                         n->id, node_status_name(st));
            else
                snprintf(ev->message, sizeof ev->message, "node %s is now %s (was %s)", n->id,
                         node_status_name(st), node_status_name(n->status));
        }
        n->status = st;
    }
    /* At the start of a run every node and (for topologies small enough to
     * fit the event budget) every service is announced, so consumers such as
     * the agent know each node's status and each service's replica bounds
     * without waiting for a change. */
    bool announce = tick == 1 && e->n_nodes + e->n_services <= e->cfg.max_events_per_tick / 2;
    for (size_t i = 0; i < e->n_services; i++) {
        mc_engine_service *s = &e->services[i];
        int st = service_status(s, tick);
        bool resized = s->desired != s->announced_desired && (announce || tick > 1);
        if (st == s->status && !resized)
            continue;
        mc_engine_event *ev = mc_engine__event_new(
            e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_SERVICE_STATUS_CHANGED, s->id);
        s->announced_desired = s->desired;
        if (ev != NULL) {
            ev->service_status = st;
            ev->has_replicas = 1;
            ev->replicas = s->desired;
            ev->max_replicas = s->max_replicas;
            if (st == s->status)
                snprintf(ev->message, sizeof ev->message,
                         "service %s is %s with %u replica(s) wanted (at most %u)", s->id,
                         service_status_name(st), s->desired, s->max_replicas);
            else
                snprintf(ev->message, sizeof ev->message,
                     "service %s is now %s (was %s): error rate %.1f%%, p99 %.0f ms, cpu %.0f%%, "
                     "%u ready",
                     s->id, service_status_name(st), service_status_name(s->status),
                     s->err_frac * 100.0, s->p99_ms, s->cpu_pct, s->ready);
        }
        s->status = st;
    }
}

/* ---------------------------------------------------------------------------
 * Emission
 * ------------------------------------------------------------------------- */

static void stamp_init(const mc_engine *e, Common__V1__Stamp *st, uint64_t tick, uint64_t seq)
{
    common__v1__stamp__init(st);
    st->run_id = (char *)e->run_id;
    st->tick = tick;
    st->producer = (char *)MC_ENGINE_PRODUCER;
    st->producer_seq = seq;
}

static size_t chunk_count(const mc_engine *e)
{
    size_t c = (e->n_samples + e->cfg.chunk_max_samples - 1) / e->cfg.chunk_max_samples;
    return c ? c : 1;
}

void mc_engine__fault_to_proto(const mc_engine_fault *f, Sim__V1__Fault *out)
{
    sim__v1__fault__init(out);
    out->fault_id = (char *)f->id;
    out->type = (Sim__V1__FaultType)f->type;
    out->target_id = (char *)f->target_id;
    out->intensity = f->intensity;
    out->duration_ticks = f->duration_ticks;
    out->start_tick = f->start_tick;
}

static mc_status emit(mc_engine *e, mc_outbox *out, uint64_t tick)
{
    size_t k = 0;
    for (size_t i = 0; i < e->n_services; i++) {
        const mc_engine_service *s = &e->services[i];
        const double tick_s = (double)e->sc.tick_ms / 1000.0;
        e->samples[k++].metric_value = s->cpu_pct;
        e->samples[k++].metric_value = s->mem_pct;
        e->samples[k++].metric_value = s->err_frac * 100.0;
        e->samples[k++].metric_value = s->p99_ms;
        e->samples[k++].metric_value = (double)s->offered / tick_s;
        e->samples[k++].metric_value = (double)s->ready;
    }
    for (size_t i = 0; i < e->n_nodes; i++) {
        const mc_engine_node *n = &e->nodes[i];
        e->samples[k++].metric_value = n->cpu_pct;
        e->samples[k++].metric_value = n->mem_pct;
        e->samples[k++].metric_value = (double)n->status;
    }
    uint32_t messages = 0;
    size_t chunks = chunk_count(e);
    int64_t sim_ms = e->sc.start_time_unix_ms + (int64_t)tick * (int64_t)e->sc.tick_ms;
    for (size_t c = 0; c < chunks; c++) {
        Common__V1__Stamp stamp;
        Sim__V1__MetricSnapshot snap;
        sim__v1__metric_snapshot__init(&snap);
        uint64_t seq = e->next_seq++;
        stamp_init(e, &stamp, tick, seq);
        snap.stamp = &stamp;
        snap.sim_time_unix_ms = sim_ms;
        snap.chunk_index = (uint32_t)c;
        snap.chunk_count = (uint32_t)chunks;
        size_t first = c * e->cfg.chunk_max_samples;
        size_t n = e->n_samples - first < e->cfg.chunk_max_samples ? e->n_samples - first
                                                                   : e->cfg.chunk_max_samples;
        snap.n_samples = n;
        snap.samples = &e->sample_ptrs[first];
        mc_status st = mc_outbox_push(out, MC_ENGINE_SUBJECT_METRICS, tick, seq,
                                      (const ProtobufCMessage *)&snap);
        if (st != MC_OK)
            return st;
        messages++;
    }
    for (size_t i = 0; i < e->n_events; i++) {
        const mc_engine_event *ev = &e->events[i];
        Common__V1__Stamp stamp;
        Sim__V1__SimulationEvent msg;
        Sim__V1__Fault fault;
        sim__v1__simulation_event__init(&msg);
        uint64_t seq = e->next_seq++;
        stamp_init(e, &stamp, tick, seq);
        char event_id[MC_UUID_STR_LEN];
        char extra[48];
        snprintf(extra, sizeof extra, "%d/%zu", ev->kind, i);
        mc_id_uuid(event_id, "sim-event", e->run_id, tick, ev->target_id, extra);
        msg.stamp = &stamp;
        msg.event_id = event_id;
        msg.kind = (Sim__V1__SimulationEventKind)ev->kind;
        msg.target_id = (char *)ev->target_id;
        msg.message = (char *)ev->message;
        if (ev->has_fault) {
            mc_engine__fault_to_proto(&ev->fault, &fault);
            msg.fault = &fault;
        }
        msg.command_id = (char *)ev->command_id;
        msg.action_id = (char *)ev->action_id;
        msg.applied_at_tick = ev->applied_at_tick;
        msg.node_status = (Common__V1__NodeStatus)ev->node_status;
        msg.service_status = (Common__V1__ServiceStatus)ev->service_status;
        Sim__V1__SimulationEvent__AttributesEntry attr[2];
        Sim__V1__SimulationEvent__AttributesEntry *attrp[2];
        char reps[16], maxr[16];
        if (ev->has_replicas) {
            snprintf(reps, sizeof reps, "%u", ev->replicas);
            snprintf(maxr, sizeof maxr, "%u", ev->max_replicas);
            for (int a = 0; a < 2; a++) {
                sim__v1__simulation_event__attributes_entry__init(&attr[a]);
                attrp[a] = &attr[a];
            }
            attr[0].key = "max_replicas";
            attr[0].value = maxr;
            attr[1].key = "replicas";
            attr[1].value = reps;
            msg.n_attributes = 2;
            msg.attributes = attrp;
        }
        mc_status st = mc_outbox_push(out, MC_ENGINE_SUBJECT_EVENTS, tick, seq,
                                      (const ProtobufCMessage *)&msg);
        if (st != MC_OK)
            return st;
        messages++;
    }
    Common__V1__Stamp stamp;
    Ops__V1__Watermark wm;
    ops__v1__watermark__init(&wm);
    uint64_t seq = e->next_seq++;
    stamp_init(e, &stamp, tick, seq);
    wm.stamp = &stamp;
    wm.stage = COMMON__V1__STAGE__STAGE_ENGINE;
    wm.tick = tick;
    wm.message_count = messages;
    return mc_outbox_push(out, MC_ENGINE_SUBJECT_WATERMARK, tick, seq,
                          (const ProtobufCMessage *)&wm);
}

size_t mc_engine_max_messages_per_tick(const mc_engine *e)
{
    return chunk_count(e) + e->cfg.max_events_per_tick + 1;
}

mc_status mc_engine_step(mc_engine *e, mc_outbox *out, mc_error *err)
{
    if (e->services == NULL)
        return mc_error_set(err, MC_ERR_STATE, "engine: not initialized");
    size_t need = mc_engine_max_messages_per_tick(e);
    if (out->len > out->max_items || out->max_items - out->len < need)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "engine: the outbox has room for %zu messages, a tick may need %zu",
                            out->max_items > out->len ? out->max_items - out->len : 0, need);
    uint64_t tick = e->tick + 1;
    e->n_events = 0;
    if (tick == 1)
        mc_engine__event(e, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_RUN_STARTED, "",
                         "run %s started: scenario %s, seed %" PRIu64 ", %zu nodes, %zu services",
                         e->run_id, e->sc.name, e->seed, e->n_nodes, e->n_services);
    mc_engine__commands_apply(e, tick);
    mc_engine__faults_update(e, tick);
    lifecycle(e, tick);
    mc_engine__faults_aggregate(e);
    node_capacity(e);
    load_pass(e, tick);
    for (size_t k = 0; k < e->n_services; k++)
        service_tick(e, e->order[k], tick);
    node_pass(e);
    status_changes(e, tick);
    e->tick = tick;
    mc_status st = emit(e, out, tick);
    if (st != MC_OK)
        return mc_error_set(err, st, "engine: tick %" PRIu64 ": cannot append to the outbox: %s",
                            tick, mc_status_name(st));
    return MC_OK;
}

/* ---------------------------------------------------------------------------
 * Getters
 * ------------------------------------------------------------------------- */

uint64_t mc_engine_tick(const mc_engine *e) { return e->tick; }
uint64_t mc_engine_seed(const mc_engine *e) { return e->seed; }
uint64_t mc_engine_reset_count(const mc_engine *e) { return e->reset_count; }
const char *mc_engine_scenario_name(const mc_engine *e) { return e->sc.name; }
const char *mc_engine_run_id(const mc_engine *e) { return e->run_id; }
uint32_t mc_engine_node_count(const mc_engine *e) { return (uint32_t)e->n_nodes; }
uint32_t mc_engine_service_count(const mc_engine *e) { return (uint32_t)e->n_services; }
uint64_t mc_engine_events_dropped(const mc_engine *e) { return e->events_dropped; }
size_t mc_engine_memory_bytes(const mc_engine *e) { return e->alloc_bytes; }

int64_t mc_engine_sim_time_unix_ms(const mc_engine *e)
{
    return e->sc.start_time_unix_ms + (int64_t)e->tick * (int64_t)e->sc.tick_ms;
}

size_t mc_engine_fault_count(const mc_engine *e) { return e->n_faults; }

mc_status mc_engine_fault_get(const mc_engine *e, size_t i, Sim__V1__Fault *out,
                              mc_fault_state *state)
{
    if (i >= e->n_faults)
        return MC_ERR_NOT_FOUND;
    if (out != NULL)
        mc_engine__fault_to_proto(&e->faults[i], out);
    if (state != NULL)
        *state = e->faults[i].state;
    return MC_OK;
}

size_t mc_engine_active_fault_count(const mc_engine *e)
{
    size_t n = 0;
    for (size_t i = 0; i < e->n_faults; i++)
        if (e->faults[i].state == MC_FAULT_ACTIVE)
            n++;
    return n;
}

long mc_engine__find_service(const mc_engine *e, const char *id)
{
    bool found = false;
    size_t i = mc_table_find_id(e->services, sizeof *e->services, offsetof(mc_engine_service, id),
                                NULL, e->n_services, id, &found);
    return found ? (long)i : -1;
}

long mc_engine__find_node(const mc_engine *e, const char *id)
{
    bool found = false;
    size_t i = mc_table_find_id(e->nodes, sizeof *e->nodes, offsetof(mc_engine_node, id), NULL,
                                e->n_nodes, id, &found);
    return found ? (long)i : -1;
}

mc_status mc_engine_service_find(const mc_engine *e, const char *id, uint32_t *index)
{
    long i = id ? mc_engine__find_service(e, id) : -1;
    if (i < 0)
        return MC_ERR_NOT_FOUND;
    *index = (uint32_t)i;
    return MC_OK;
}

mc_status mc_engine_node_find(const mc_engine *e, const char *id, uint32_t *index)
{
    long i = id ? mc_engine__find_node(e, id) : -1;
    if (i < 0)
        return MC_ERR_NOT_FOUND;
    *index = (uint32_t)i;
    return MC_OK;
}

mc_status mc_engine_service_get(const mc_engine *e, uint32_t index, mc_engine_service_view *out)
{
    if (index >= e->n_services)
        return MC_ERR_NOT_FOUND;
    const mc_engine_service *s = &e->services[index];
    memset(out, 0, sizeof *out);
    out->id = s->id;
    out->status = s->status;
    out->desired_replicas = s->desired;
    out->ready_replicas = s->ready;
    for (uint32_t k = 0; k < s->rep_count; k++)
        if (e->replicas[s->rep_first + k].state != MC_REPLICA_TERMINATING)
            out->live_replicas++;
    out->max_replicas = s->max_replicas;
    out->offered_rps = s->offered_rps;
    out->cpu_usage = s->cpu_pct;
    out->memory_usage = s->mem_pct;
    out->error_rate = s->err_frac * 100.0;
    out->p99_latency_ms = s->p99_ms;
    out->offered = s->offered;
    out->served = s->served;
    out->failed = s->failed;
    out->restarting = s->restart_until > e->tick;
    return MC_OK;
}

mc_status mc_engine_node_get(const mc_engine *e, uint32_t index, mc_engine_node_view *out)
{
    if (index >= e->n_nodes)
        return MC_ERR_NOT_FOUND;
    const mc_engine_node *n = &e->nodes[index];
    memset(out, 0, sizeof *out);
    out->id = n->id;
    out->status = mc_engine__node_status(n);
    out->cpu_cores = n->cpu_cores;
    out->memory_mb = n->memory_mb;
    out->cpu_usage = n->cpu_pct;
    out->memory_usage = n->mem_pct;
    out->replicas = n->replica_count;
    return MC_OK;
}

size_t mc_engine_replica_count(const mc_engine *e) { return e->n_replicas; }

mc_status mc_engine_replica_get(const mc_engine *e, size_t i, mc_engine_replica_view *out)
{
    if (i >= e->n_replicas)
        return MC_ERR_NOT_FOUND;
    const mc_engine_replica *r = &e->replicas[i];
    memset(out, 0, sizeof *out);
    out->id = r->id;
    out->service = r->service;
    out->node = r->node;
    out->state = r->state;
    out->weight = r->weight;
    out->memory_mb = r->mem_mb;
    out->cpu_usage = r->cpu_pct;
    return MC_OK;
}

/* ---------------------------------------------------------------------------
 * Digest
 * ------------------------------------------------------------------------- */

void mc_engine_digest(const mc_engine *e, uint8_t out[MC_DIGEST_BYTES])
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/engine/v1");
    mc_digest_str(&d, e->sc.name);
    mc_digest_u64(&d, e->seed);
    mc_digest_u64(&d, e->reset_count);
    mc_digest_u64(&d, e->tick);
    mc_digest_u64(&d, e->next_seq);
    mc_digest_u64(&d, e->next_replica_id);
    mc_digest_u64(&d, e->inject_count);
    mc_digest_u64(&d, e->command_arrivals);
    mc_digest_u64(&d, e->n_nodes);
    for (size_t i = 0; i < e->n_nodes; i++) {
        const mc_engine_node *n = &e->nodes[i];
        mc_digest_str(&d, n->id);
        mc_digest_u32(&d, n->crash_faults);
        mc_digest_u32(&d, (uint32_t)n->drain);
        mc_digest_f64(&d, n->degradation);
        mc_digest_f64(&d, n->hog);
        mc_digest_u32(&d, (uint32_t)n->status);
        mc_digest_f64(&d, n->cpu_pct);
        mc_digest_f64(&d, n->mem_pct);
    }
    mc_digest_u64(&d, e->n_services);
    for (size_t i = 0; i < e->n_services; i++) {
        const mc_engine_service *s = &e->services[i];
        mc_digest_str(&d, s->id);
        mc_digest_u32(&d, s->desired);
        mc_digest_u64(&d, s->restart_until);
        mc_digest_u32(&d, (uint32_t)s->status);
        mc_digest_u64(&d, s->offered);
        mc_digest_u64(&d, s->served);
        mc_digest_u64(&d, s->failed);
        mc_digest_f64(&d, s->offered_rps);
        mc_digest_f64(&d, s->err_frac);
        mc_digest_f64(&d, s->p99_ms);
        mc_digest_f64(&d, s->cpu_pct);
        mc_digest_f64(&d, s->mem_pct);
    }
    mc_digest_u64(&d, e->n_replicas);
    for (size_t i = 0; i < e->n_replicas; i++) {
        const mc_engine_replica *r = &e->replicas[i];
        mc_digest_u64(&d, r->id);
        mc_digest_u32(&d, r->service);
        mc_digest_u32(&d, r->node);
        mc_digest_u32(&d, (uint32_t)r->state);
        mc_digest_u64(&d, r->until);
        mc_digest_u64(&d, r->restart_at);
        mc_digest_f64(&d, r->weight);
        mc_digest_f64(&d, r->leak_mb);
        mc_digest_f64(&d, r->mem_mb);
        mc_digest_f64(&d, r->rho);
    }
    mc_digest_u64(&d, e->n_faults);
    for (size_t i = 0; i < e->n_faults; i++) {
        const mc_engine_fault *f = &e->faults[i];
        mc_digest_str(&d, f->id);
        mc_digest_u32(&d, (uint32_t)f->type);
        mc_digest_str(&d, f->target_id);
        mc_digest_f64(&d, f->intensity);
        mc_digest_u32(&d, f->duration_ticks);
        mc_digest_u64(&d, f->start_tick);
        mc_digest_u32(&d, (uint32_t)f->state);
        mc_digest_u64(&d, f->ended_at);
    }
    mc_digest_u64(&d, e->n_commands);
    for (size_t i = 0; i < e->n_commands; i++) {
        const mc_engine_command *c = &e->commands[i];
        mc_digest_str(&d, c->command_id);
        mc_digest_str(&d, c->action_id);
        mc_digest_u32(&d, (uint32_t)c->type);
        mc_digest_str(&d, c->target_id);
        mc_digest_u64(&d, c->issued_at_tick);
        mc_digest_u64(&d, c->arrival);
    }
    mc_digest_final(&d, out);
}
