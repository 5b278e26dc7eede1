/* The dashboard's per-tick view: the sim.metrics snapshots of a tick are
 * aggregated per service and node as they arrive (ordered consumer of SIM)
 * and sent as one `tick` event when the engine's watermark for that tick
 * arrives. Engine events go out as `event`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "orch_internal.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define TICKS_INITIAL_CAP 1024

mc_status orch_ticks_init(orch_ticks *t, mc_error *err)
{
    memset(t, 0, sizeof *t);
    t->cap = TICKS_INITIAL_CAP;
    t->table = calloc(t->cap, sizeof *t->table);
    if (t->table == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "ticks: out of memory");
    return MC_OK;
}

static void clear_table(orch_ticks *t)
{
    for (size_t i = 0; i < t->cap; i++)
        free(t->table[i].id);
    memset(t->table, 0, t->cap * sizeof *t->table);
    t->used = 0;
}

void orch_ticks_deinit(orch_ticks *t)
{
    if (t->table != NULL)
        clear_table(t);
    free(t->table);
    free(t->last_services_json);
    free(t->last_nodes_json);
    memset(t, 0, sizeof *t);
}

static uint64_t hash(const char *s, bool node)
{
    uint64_t h = 1469598103934665603ull ^ (node ? 0x9e37u : 0);
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static orch_entity *lookup(orch_ticks *t, const char *id, bool node, bool create);

static bool grow(orch_ticks *t)
{
    if (t->cap * 2 > ORCH_MAX_ENTITIES * 2)
        return false;
    orch_entity *old = t->table;
    size_t oldcap = t->cap;
    orch_entity *nt = calloc(oldcap * 2, sizeof *nt);
    if (nt == NULL)
        return false;
    t->table = nt;
    t->cap = oldcap * 2;
    t->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (!old[i].used)
            continue;
        orch_entity *e = lookup(t, old[i].id, old[i].is_node, true);
        if (e != NULL) {
            char *id = e->id;
            *e = old[i];
            free(id);
        } else {
            free(old[i].id);
        }
    }
    free(old);
    return true;
}

static orch_entity *lookup(orch_ticks *t, const char *id, bool node, bool create)
{
    if (create && (t->used + 1) * 2 > t->cap && !grow(t) && t->used + 1 >= t->cap)
        return NULL;
    size_t mask = t->cap - 1;
    for (size_t i = hash(id, node) & mask, probes = 0; probes < t->cap; i = (i + 1) & mask, probes++) {
        orch_entity *e = &t->table[i];
        if (!e->used) {
            if (!create || t->used >= ORCH_MAX_ENTITIES)
                return NULL;
            e->id = strdup(id);
            if (e->id == NULL)
                return NULL;
            e->used = true;
            e->is_node = node;
            t->used++;
            return e;
        }
        if (e->is_node == node && strcmp(e->id, id) == 0)
            return e;
    }
    return NULL;
}

static void on_metrics(mc_orch *o, const uint8_t *data, size_t len)
{
    orch_ticks *t = &o->ticks;
    Sim__V1__MetricSnapshot *s = sim__v1__metric_snapshot__unpack(NULL, len, data);
    if (s == NULL)
        return;
    uint64_t tick = s->stamp ? s->stamp->tick : 0;
    if (!t->have_tick || tick != t->tick) {
        clear_table(t);
        t->have_tick = true;
        t->tick = tick;
        snprintf(t->run_id, sizeof t->run_id, "%s",
                 s->stamp && s->stamp->run_id ? s->stamp->run_id : "");
    }
    t->sim_time_unix_ms = s->sim_time_unix_ms;
    for (size_t i = 0; i < s->n_samples; i++) {
        const Sim__V1__MetricSample *m = s->samples[i];
        bool node = m->service_id == NULL || m->service_id[0] == '\0';
        const char *id = node ? m->node_id : m->service_id;
        if (id == NULL || id[0] == '\0' || m->metric_name == NULL)
            continue;
        orch_entity *e = lookup(t, id, node, true);
        if (e == NULL)
            break;
        const char *n = m->metric_name;
        double v = m->metric_value;
        if (strcmp(n, "cpu_usage") == 0)
            e->cpu = v;
        else if (strcmp(n, "memory_usage") == 0)
            e->mem = v;
        else if (strcmp(n, "error_rate") == 0)
            e->err = v;
        else if (strcmp(n, "p99_latency_ms") == 0)
            e->p99 = v;
        else if (strcmp(n, "requests_per_second") == 0)
            e->rps = v;
        else if (strcmp(n, "replicas") == 0)
            e->replicas = v;
        else if (strcmp(n, "node_status") == 0)
            e->status = v;
    }
    sim__v1__metric_snapshot__free_unpacked(s, NULL);
}

/* Worst first: error rate, then latency, then id. */
static int worst_first(const void *a, const void *b)
{
    const orch_entity *x = *(const orch_entity *const *)a;
    const orch_entity *y = *(const orch_entity *const *)b;
    if (x->err != y->err)
        return x->err > y->err ? -1 : 1;
    if (x->p99 != y->p99)
        return x->p99 > y->p99 ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int by_id(const void *a, const void *b)
{
    const orch_entity *x = *(const orch_entity *const *)a;
    const orch_entity *y = *(const orch_entity *const *)b;
    return strcmp(x->id, y->id);
}

static bool has_open_incident(const mc_orch *o, const char *id)
{
    for (size_t i = 0; i < o->n_incidents; i++)
        if (strcmp(o->incidents[i].target, id) == 0)
            return true;
    return false;
}

static json_t *service_json(const orch_entity *e)
{
    return json_pack("{s:s, s:f, s:f, s:f, s:f, s:f, s:f}", "id", e->id, "cpuUsage", e->cpu,
                     "memoryUsage", e->mem, "errorRate", e->err, "p99LatencyMs", e->p99,
                     "requestsPerSecond", e->rps, "replicas", e->replicas);
}

static json_t *node_json(const orch_entity *e)
{
    const char *st = protobuf_c_enum_descriptor_get_value(&common__v1__node_status__descriptor,
                                                          (int)e->status)
                         ? protobuf_c_enum_descriptor_get_value(
                               &common__v1__node_status__descriptor, (int)e->status)
                               ->name
                         : "NODE_STATUS_UNSPECIFIED";
    return json_pack("{s:s, s:f, s:f, s:s}", "id", e->id, "cpuUsage", e->cpu, "memoryUsage",
                     e->mem, "status", st);
}

static void emit_tick(mc_orch *o)
{
    orch_ticks *t = &o->ticks;
    const orch_entity **svc = malloc((t->used + 1) * sizeof *svc);
    const orch_entity **nodes = malloc((t->used + 1) * sizeof *nodes);
    if (svc == NULL || nodes == NULL) {
        free(svc);
        free(nodes);
        return;
    }
    size_t ns = 0, nn = 0;
    double rps = 0, err_w = 0, p99_w = 0, err_sum = 0, p99_sum = 0;
    double ncpu = 0, nmem = 0, scpu = 0, smem = 0;
    for (size_t i = 0; i < t->cap; i++) {
        const orch_entity *e = &t->table[i];
        if (!e->used)
            continue;
        if (e->is_node) {
            nodes[nn++] = e;
            ncpu += e->cpu;
            nmem += e->mem;
        } else {
            svc[ns++] = e;
            rps += e->rps;
            err_w += e->err * e->rps;
            p99_w += e->p99 * e->rps;
            err_sum += e->err;
            p99_sum += e->p99;
            scpu += e->cpu;
            smem += e->mem;
        }
    }
    /* The cluster: total traffic, traffic-weighted error rate and latency,
     * mean node usage (service usage when no node reported). */
    double cl_err = rps > 0 ? err_w / rps : ns ? err_sum / (double)ns : 0;
    double cl_p99 = rps > 0 ? p99_w / rps : ns ? p99_sum / (double)ns : 0;
    double cl_cpu = nn ? ncpu / (double)nn : ns ? scpu / (double)ns : 0;
    double cl_mem = nn ? nmem / (double)nn : ns ? smem / (double)ns : 0;

    size_t max = (size_t)o->cfg->tick_max_services;
    bool down = ns > max;
    json_t *services = json_array();
    if (down) {
        qsort(svc, ns, sizeof *svc, worst_first);
        for (size_t i = 0; i < ns; i++)
            if (i < max || has_open_incident(o, svc[i]->id))
                json_array_append_new(services, service_json(svc[i]));
    } else {
        qsort(svc, ns, sizeof *svc, by_id);
        for (size_t i = 0; i < ns; i++)
            json_array_append_new(services, service_json(svc[i]));
    }
    qsort(nodes, nn, sizeof *nodes, by_id);
    json_t *nodes_j = json_array();
    for (size_t i = 0; i < nn; i++)
        json_array_append_new(nodes_j, node_json(nodes[i]));
    free(svc);
    free(nodes);

    json_t *root = json_object();
    json_object_set_new(root, "tick", json_integer((json_int_t)t->tick));
    json_object_set_new(root, "simTimeUnixMs", json_integer((json_int_t)t->sim_time_unix_ms));
    json_object_set_new(root, "runId", json_string(t->run_id));
    json_object_set_new(root, "cluster",
                        json_pack("{s:f, s:f, s:f, s:f, s:f}", "requestsPerSecond", rps,
                                  "errorRate", cl_err, "p99LatencyMs", cl_p99, "cpuUsage", cl_cpu,
                                  "memoryUsage", cl_mem));
    json_object_set(root, "services", services);
    json_object_set(root, "nodes", nodes_j);
    json_object_set_new(root, "totalServices", json_integer((json_int_t)ns));
    json_object_set_new(root, "downsampled", json_boolean(down));
    char *text = json_dumps(root, JSON_COMPACT);
    if (text != NULL) {
        if (mc_feed_publish(o->feed, "tick", text, strlen(text)) == MC_OK)
            mc_http_counter_inc(o->m_sse_events);
        free(text);
    }
    free(t->last_services_json);
    free(t->last_nodes_json);
    t->last_services_json = json_dumps(services, JSON_COMPACT);
    t->last_nodes_json = json_dumps(nodes_j, JSON_COMPACT);
    t->last_tick = t->tick;
    t->last_sim_time_unix_ms = t->sim_time_unix_ms;
    t->emitted++;
    json_decref(services);
    json_decref(nodes_j);
    json_decref(root);
    /* The tick is done: the next snapshot starts a new one. */
    clear_table(t);
    t->have_tick = false;
}

void orch_ticks_on_sim(mc_orch *o, const char *subject, const uint8_t *data, size_t len)
{
    if (strcmp(subject, "sim.metrics") == 0) {
        on_metrics(o, data, len);
    } else if (strcmp(subject, "sim.watermark") == 0) {
        Ops__V1__Watermark *w = ops__v1__watermark__unpack(NULL, len, data);
        if (w == NULL)
            return;
        if (o->ticks.have_tick && w->tick == o->ticks.tick)
            emit_tick(o);
        ops__v1__watermark__free_unpacked(w, NULL);
    } else if (strcmp(subject, "sim.events") == 0) {
        Sim__V1__SimulationEvent *e = sim__v1__simulation_event__unpack(NULL, len, data);
        if (e == NULL)
            return;
        char *json = NULL;
        size_t n = 0;
        if (mc_json_encode(&e->base, &json, &n, NULL) == MC_OK) {
            if (mc_feed_publish(o->feed, "event", json, n) == MC_OK)
                mc_http_counter_inc(o->m_sse_events);
            free(json);
        }
        if (e->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_RUN_STARTED)
            orch_engine_refresh(o);
        sim__v1__simulation_event__free_unpacked(e, NULL);
    }
}
