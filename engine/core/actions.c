/* Commands from the orchestrator (ops.v1.ApplyActionCommand): queued between
 * steps, applied at the start of the next one in (issued_at_tick,
 * command_id) order, each answered by a COMMAND_APPLIED or COMMAND_REFUSED
 * event that says what happened and why. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "engine.h"
#include "engine_internal.h"
#include "sort.h"

mc_status mc_engine_apply_command(mc_engine *e, const Ops__V1__ApplyActionCommand *cmd,
                                  mc_error *err)
{
    if (e->services == NULL)
        return mc_error_set(err, MC_ERR_STATE, "engine: not initialized");
    if (cmd == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "command: none given");
    const char *cid = cmd->command_id ? cmd->command_id : "";
    const char *aid = cmd->action_id ? cmd->action_id : "";
    const char *target = cmd->target_id ? cmd->target_id : "";
    if (strlen(cid) >= MC_ENGINE_CMD_ID_MAX || strlen(aid) >= MC_ENGINE_CMD_ID_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "command: command_id or action_id longer than %d",
                            MC_ENGINE_CMD_ID_MAX - 1);
    if (strlen(target) >= MC_SCENARIO_ID_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "command %s: target_id longer than %d", cid,
                            MC_SCENARIO_ID_MAX - 1);
    if (e->n_commands >= MC_ENGINE_MAX_PENDING_COMMANDS)
        return mc_error_set(err, MC_ERR_LIMIT, "command %s: %d commands are already queued", cid,
                            MC_ENGINE_MAX_PENDING_COMMANDS);
    mc_engine_command *c = &e->commands[e->n_commands++];
    memset(c, 0, sizeof *c);
    memcpy(c->command_id, cid, strlen(cid) + 1);
    memcpy(c->action_id, aid, strlen(aid) + 1);
    memcpy(c->target_id, target, strlen(target) + 1);
    c->type = (int)cmd->action_type;
    c->issued_at_tick = cmd->issued_at_tick;
    c->arrival = ++e->command_arrivals;
    return MC_OK;
}

static void result(mc_engine *e, const mc_engine_command *c, uint64_t tick, int applied,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void result(mc_engine *e, const mc_engine_command *c, uint64_t tick, int applied,
                   const char *fmt, ...)
{
    int kind = applied ? SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED
                       : SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED;
    mc_engine_event *ev = mc_engine__event_new(e, kind, c->target_id);
    if (ev == NULL)
        return;
    memcpy(ev->command_id, c->command_id, sizeof ev->command_id);
    memcpy(ev->action_id, c->action_id, sizeof ev->action_id);
    ev->applied_at_tick = tick;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ev->message, sizeof ev->message, fmt, ap);
    va_end(ap);
}

static uint32_t live_count(const mc_engine *e, const mc_engine_service *s)
{
    uint32_t n = 0;
    for (uint32_t k = 0; k < s->rep_count; k++) {
        mc_replica_state st = e->replicas[s->rep_first + k].state;
        if (st != MC_REPLICA_TERMINATING && st != MC_REPLICA_REMOVED)
            n++;
    }
    return n;
}

static void restart_service(mc_engine *e, const mc_engine_command *c, uint32_t si, uint64_t tick)
{
    mc_engine_service *s = &e->services[si];
    if (s->restart_until > tick) {
        result(e, c, tick, 0, "refused: %s is already restarting (until tick %" PRIu64 ")", s->id,
               s->restart_until);
        return;
    }
    /* A rolling restart in two waves: half the replicas go down now, the
     * other half when the first half is back, so the service keeps some
     * capacity unless it has a single replica. */
    uint32_t live = live_count(e, s);
    uint32_t waves = live > 1 ? 2 : 1;
    uint32_t ordinal = 0;
    for (uint32_t k = 0; k < s->rep_count; k++) {
        mc_engine_replica *r = &e->replicas[s->rep_first + k];
        if (r->state == MC_REPLICA_TERMINATING || r->state == MC_REPLICA_REMOVED)
            continue;
        int second_wave = (ordinal++ % 2) == 1 && r->state == MC_REPLICA_READY;
        if (second_wave) {
            r->restart_at = tick + s->restart_ticks;
        } else {
            r->state = MC_REPLICA_RESTARTING;
            r->until = tick + s->restart_ticks;
            r->restart_at = 0;
        }
    }
    s->restart_until = tick + (uint64_t)waves * s->restart_ticks;
    char why[96];
    snprintf(why, sizeof why, "fixed by a restart of %s (command %.36s)", s->id, c->command_id);
    mc_engine__faults_end_on_service(e, si, SIM__V1__FAULT_TYPE__FAULT_TYPE_ERROR_BURST,
                                     SIM__V1__FAULT_TYPE__FAULT_TYPE_MEMORY_LEAK, tick, why);
    result(e, c, tick, 1,
           "restarting %s: %u replicas in %u wave(s) of %u ticks, back by tick %" PRIu64
           "; leaks and bad-deploy errors cleared",
           s->id, live, waves, s->restart_ticks, s->restart_until);
}

static void scale_up(mc_engine *e, const mc_engine_command *c, uint32_t si, uint64_t tick)
{
    mc_engine_service *s = &e->services[si];
    if (s->desired >= s->max_replicas) {
        result(e, c, tick, 0, "refused: %s is already at its maximum of %u replicas", s->id,
               s->max_replicas);
        return;
    }
    long node = mc_engine__place(e, si, -1);
    if (node < 0) {
        result(e, c, tick, 0,
               "refused: no schedulable node has %g cores and %g MiB free for another replica of "
               "%s",
               s->cpu_limit, s->mem_limit, s->id);
        return;
    }
    long at = mc_engine__add_replica(e, si, (uint32_t)node, MC_REPLICA_STARTING,
                                     tick + s->warmup_ticks, tick);
    if (at < 0) {
        result(e, c, tick, 0, "refused: out of memory for another replica of %s", s->id);
        return;
    }
    s = &e->services[si];
    s->desired++;
    result(e, c, tick, 1,
           "scaling %s up to %u replicas: replica %" PRIu64 " on %s serves from tick %" PRIu64,
           s->id, s->desired, e->replicas[at].id, e->nodes[node].id, tick + s->warmup_ticks);
}

static void scale_down(mc_engine *e, const mc_engine_command *c, uint32_t si, uint64_t tick)
{
    mc_engine_service *s = &e->services[si];
    uint32_t live = live_count(e, s);
    if (live <= 1 || s->desired <= 1) {
        result(e, c, tick, 0, "refused: %s has %u replica(s); scaling never goes below one", s->id,
               live);
        return;
    }
    /* Remove a replica that is not serving if there is one (it costs no
     * capacity), else the newest. */
    long victim = -1;
    for (int pass = 0; pass < 2 && victim < 0; pass++)
        for (uint32_t k = 0; k < s->rep_count; k++) {
            const mc_engine_replica *r = &e->replicas[s->rep_first + k];
            if (r->state == MC_REPLICA_TERMINATING || r->state == MC_REPLICA_REMOVED)
                continue;
            int serving = r->state == MC_REPLICA_READY;
            if (serving != (pass == 1))
                continue;
            if (victim < 0 || r->id > e->replicas[victim].id)
                victim = (long)(s->rep_first + k);
        }
    if (victim < 0) {
        result(e, c, tick, 0, "refused: %s has no replica to remove", s->id);
        return;
    }
    mc_engine_replica *r = &e->replicas[victim];
    uint64_t id = r->id;
    const char *node = e->nodes[r->node].id;
    r->state = MC_REPLICA_REMOVED;
    s->desired--;
    result(e, c, tick, 1, "scaling %s down to %u replicas: replica %" PRIu64 " on %s removed",
           s->id, s->desired, id, node);
    mc_engine__reindex(e);
}

static void drain_node(mc_engine *e, const mc_engine_command *c, uint32_t ni, uint64_t tick)
{
    mc_engine_node *n = &e->nodes[ni];
    if (n->crash_faults > 0) {
        result(e, c, tick, 0, "refused: node %s is down", n->id);
        return;
    }
    if (n->drain != MC_DRAIN_NONE) {
        result(e, c, tick, 0, "refused: node %s is already %s", n->id,
               n->drain == MC_DRAIN_DRAINING ? "draining" : "drained");
        return;
    }
    int other = 0;
    for (size_t i = 0; i < e->n_nodes; i++)
        if (i != ni && mc_engine__node_schedulable(&e->nodes[i]))
            other = 1;
    if (!other) {
        result(e, c, tick, 0, "refused: %s is the last ready node", n->id);
        return;
    }
    /* Dry run for the services that live only on this node: each must find
     * room elsewhere, or the drain would take all their capacity. Room is
     * reserved on the nodes as the real move would, then given back. */
    uint32_t *held_node = calloc(e->n_services, sizeof *held_node);
    uint32_t *held_svc = calloc(e->n_services, sizeof *held_svc);
    if (held_node == NULL || held_svc == NULL) {
        free(held_node);
        free(held_svc);
        result(e, c, tick, 0, "refused: out of memory planning the drain of %s", n->id);
        return;
    }
    size_t n_held = 0;
    const char *stranded = NULL;
    for (size_t si = 0; si < e->n_services && stranded == NULL; si++) {
        const mc_engine_service *s = &e->services[si];
        uint32_t here = 0, elsewhere = 0;
        for (uint32_t k = 0; k < s->rep_count; k++) {
            const mc_engine_replica *r = &e->replicas[s->rep_first + k];
            if (r->state == MC_REPLICA_TERMINATING)
                continue;
            if (r->node == ni)
                here++;
            else
                elsewhere++;
        }
        if (here == 0 || elsewhere > 0)
            continue;
        long to = mc_engine__place(e, (uint32_t)si, (long)ni);
        if (to < 0) {
            stranded = s->id;
            break;
        }
        e->nodes[to].reserved_cpu += s->cpu_limit;
        e->nodes[to].reserved_mem += s->mem_limit;
        held_node[n_held] = (uint32_t)to;
        held_svc[n_held] = (uint32_t)si;
        n_held++;
    }
    free(held_node);
    free(held_svc);
    mc_engine__reindex(e); /* recomputes reservations exactly */
    if (stranded != NULL) {
        result(e, c, tick, 0,
               "refused: draining %s would leave %s without any replica (no other node has room "
               "for it)",
               n->id, stranded);
        return;
    }
    n->drain = MC_DRAIN_DRAINING;
    /* Move replicas: a replacement starts elsewhere, the old one serves until
     * the replacement's warm-up is over. Ids are collected first because
     * adding replicas reorders the table. */
    uint64_t moved_ids[256];
    size_t n_ids = 0, moved = 0, dropped = 0;
    for (;;) {
        n_ids = 0;
        for (size_t i = 0; i < e->n_replicas && n_ids < 256; i++) {
            const mc_engine_replica *r = &e->replicas[i];
            if (r->node == ni && r->state != MC_REPLICA_TERMINATING)
                moved_ids[n_ids++] = r->id;
        }
        if (n_ids == 0)
            break;
        for (size_t j = 0; j < n_ids; j++) {
            size_t at = 0;
            while (at < e->n_replicas && e->replicas[at].id != moved_ids[j])
                at++;
            if (at == e->n_replicas)
                continue;
            uint32_t si = e->replicas[at].service;
            const mc_engine_service *s = &e->services[si];
            uint64_t until = tick + s->warmup_ticks;
            long to = mc_engine__place(e, si, (long)ni);
            if (to >= 0 &&
                mc_engine__add_replica(e, si, (uint32_t)to, MC_REPLICA_STARTING, until, tick) >= 0) {
                moved++;
            } else {
                /* No room: the service keeps its other replicas (checked
                 * above) and gives this one up. */
                e->services[si].desired--;
                dropped++;
            }
            at = 0;
            while (at < e->n_replicas && e->replicas[at].id != moved_ids[j])
                at++;
            if (at < e->n_replicas) {
                e->replicas[at].state = MC_REPLICA_TERMINATING;
                e->replicas[at].until = until;
                e->replicas[at].restart_at = 0;
            }
        }
    }
    if (n->replica_count == 0)
        n->drain = MC_DRAIN_DRAINED;
    result(e, c, tick, 1,
           "draining %s: %zu replica(s) moving to other nodes (old ones serve until the new "
           "ones are warm), %zu given up for lack of room",
           n->id, moved, dropped);
}

static void rebalance(mc_engine *e, const mc_engine_command *c, uint32_t si, uint64_t tick)
{
    mc_engine_service *s = &e->services[si];
    uint32_t healthy = 0;
    double lo = 0.0, hi = 0.0, sum = 0.0;
    for (uint32_t k = 0; k < s->rep_count; k++) {
        const mc_engine_replica *r = &e->replicas[s->rep_first + k];
        if (r->state != MC_REPLICA_READY && r->state != MC_REPLICA_TERMINATING)
            continue;
        if (healthy == 0 || r->weight < lo)
            lo = r->weight;
        if (healthy == 0 || r->weight > hi)
            hi = r->weight;
        sum += r->weight;
        healthy++;
    }
    if (healthy == 0) {
        result(e, c, tick, 0, "refused: %s has no healthy replica to spread its load over", s->id);
        return;
    }
    for (uint32_t k = 0; k < s->rep_count; k++)
        e->replicas[s->rep_first + k].weight = 1.0;
    result(e, c, tick, 1,
           "load of %s evened over %u healthy replica(s) (shares were %.0f%% to %.0f%%)", s->id,
           healthy, lo / sum * 100.0, hi / sum * 100.0);
}

static void apply_one(mc_engine *e, const mc_engine_command *c, uint64_t tick)
{
    int type = c->type;
    if (type == COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE) {
        long ni = mc_engine__find_node(e, c->target_id);
        if (ni < 0) {
            result(e, c, tick, 0, "refused: no node named \"%s\"", c->target_id);
            return;
        }
        drain_node(e, c, (uint32_t)ni, tick);
        return;
    }
    if (type < COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE ||
        type > COMMON__V1__ACTION_TYPE__ACTION_TYPE_REBALANCE_TRAFFIC) {
        result(e, c, tick, 0, "refused: unknown action type %d", type);
        return;
    }
    long si = mc_engine__find_service(e, c->target_id);
    if (si < 0) {
        result(e, c, tick, 0, "refused: no service named \"%s\"", c->target_id);
        return;
    }
    switch (type) {
    case COMMON__V1__ACTION_TYPE__ACTION_TYPE_RESTART_SERVICE: restart_service(e, c, (uint32_t)si, tick); break;
    case COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP: scale_up(e, c, (uint32_t)si, tick); break;
    case COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_DOWN: scale_down(e, c, (uint32_t)si, tick); break;
    default: rebalance(e, c, (uint32_t)si, tick); break;
    }
}

static int cmp_command(const void *ctx, uint32_t a, uint32_t b)
{
    const mc_engine_command *cs = ctx;
    const mc_engine_command *x = &cs[a], *y = &cs[b];
    if (x->issued_at_tick != y->issued_at_tick)
        return x->issued_at_tick < y->issued_at_tick ? -1 : 1;
    int c = strcmp(x->command_id, y->command_id);
    if (c != 0)
        return c;
    return x->arrival < y->arrival ? -1 : (x->arrival > y->arrival);
}

void mc_engine__commands_apply(mc_engine *e, uint64_t tick)
{
    size_t n = e->n_commands;
    if (n == 0)
        return;
    for (size_t i = 0; i < n; i++)
        e->cmd_order[i] = (uint32_t)i;
    mc_sort_u32(e->cmd_order, n, e->cmd_scratch, cmp_command, e->commands);
    for (size_t i = 0; i < n; i++)
        apply_one(e, &e->commands[e->cmd_order[i]], tick);
    e->n_commands = 0;
}
