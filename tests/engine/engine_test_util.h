/* Helpers shared by the engine core's tests (header-only, static). */
#ifndef MC_TESTS_ENGINE_TEST_UTIL_H
#define MC_TESTS_ENGINE_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/enums.pb-c.h"
#include "engine/core/engine.h"

static inline void tu_load(const char *name, mc_scenario *sc)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.scenario", MC_SCENARIO_DIR, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    mc_error err;
    mc_status st = mc_scenario_parse(buf, (size_t)n, path, sc, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    free(buf);
}

static inline void tu_parse(const char *text, mc_scenario *sc)
{
    mc_error err;
    mc_status st = mc_scenario_parse(text, strlen(text), "inline.scenario", sc, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
}

/* An engine on a shipped scenario; the scenario is freed at once (the
 * engine keeps its own copy). */
static inline void tu_engine(mc_engine *e, const char *scenario, uint64_t seed)
{
    mc_scenario sc;
    tu_load(scenario, &sc);
    mc_engine_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.seed = seed;
    mc_error err;
    mc_status st = mc_engine_init(e, &sc, &cfg, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    mc_scenario_free(&sc);
}

static inline void tu_engine_text(mc_engine *e, const char *text, uint64_t seed)
{
    mc_scenario sc;
    tu_parse(text, &sc);
    mc_engine_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.seed = seed;
    mc_error err;
    mc_status st = mc_engine_init(e, &sc, &cfg, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
    mc_scenario_free(&sc);
}

/* Runs one tick into ob (cleared first). */
static inline void tu_step(mc_engine *e, mc_outbox *ob)
{
    mc_outbox_clear(ob);
    mc_error err;
    mc_status st = mc_engine_step(e, ob, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
}

static inline mc_engine_service_view tu_service(const mc_engine *e, const char *id)
{
    uint32_t i = 0;
    if (mc_engine_service_find(e, id, &i) != MC_OK)
        fail_msg("no service %s", id);
    mc_engine_service_view v;
    assert_int_equal(mc_engine_service_get(e, i, &v), MC_OK);
    return v;
}

static inline mc_engine_node_view tu_node(const mc_engine *e, const char *id)
{
    uint32_t i = 0;
    if (mc_engine_node_find(e, id, &i) != MC_OK)
        fail_msg("no node %s", id);
    mc_engine_node_view v;
    assert_int_equal(mc_engine_node_get(e, i, &v), MC_OK);
    return v;
}

static inline void tu_command(mc_engine *e, int type, const char *target, const char *command_id,
                              uint64_t issued_at_tick)
{
    Ops__V1__ApplyActionCommand cmd = OPS__V1__APPLY_ACTION_COMMAND__INIT;
    char action_id[160];
    snprintf(action_id, sizeof action_id, "action-%s", command_id);
    cmd.command_id = (char *)command_id;
    cmd.action_id = action_id;
    cmd.action_type = (Common__V1__ActionType)type;
    cmd.target_id = (char *)target;
    cmd.issued_at_tick = issued_at_tick;
    mc_error err;
    mc_status st = mc_engine_apply_command(e, &cmd, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
}

static inline void tu_fault(mc_engine *e, int type, const char *target, double intensity,
                            uint32_t duration, uint64_t start)
{
    Sim__V1__Fault f = SIM__V1__FAULT__INIT;
    f.type = (Sim__V1__FaultType)type;
    f.target_id = (char *)target;
    f.intensity = intensity;
    f.duration_ticks = duration;
    f.start_tick = start;
    mc_error err;
    mc_status st = mc_engine_inject_fault(e, &f, NULL, &err);
    if (st != MC_OK)
        fail_msg("%s", err.msg);
}

/* The events of the outbox, decoded; the caller frees each with
 * sim__v1__simulation_event__free_unpacked. Returns the count. */
static inline size_t tu_events(const mc_outbox *ob, Sim__V1__SimulationEvent **out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < ob->len && n < cap; i++) {
        if (strcmp(ob->items[i].subject, MC_ENGINE_SUBJECT_EVENTS) != 0)
            continue;
        out[n] = sim__v1__simulation_event__unpack(NULL, ob->items[i].len, ob->items[i].payload);
        assert_non_null(out[n]);
        n++;
    }
    return n;
}

static inline void tu_events_free(Sim__V1__SimulationEvent **evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sim__v1__simulation_event__free_unpacked(evs[i], NULL);
}

/* The first event of this kind (and target, when not NULL) in the outbox;
 * copies its message into msg (may be NULL). Returns 1 when found. */
static inline int tu_find_event(const mc_outbox *ob, int kind, const char *target, char *msg,
                                size_t msg_len, Sim__V1__SimulationEvent *copy_ids)
{
    Sim__V1__SimulationEvent *evs[4096];
    size_t n = tu_events(ob, evs, 4096);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        if ((int)evs[i]->kind != kind)
            continue;
        if (target != NULL && strcmp(evs[i]->target_id, target) != 0)
            continue;
        found = 1;
        if (msg != NULL)
            snprintf(msg, msg_len, "%s", evs[i]->message);
        if (copy_ids != NULL) {
            copy_ids->applied_at_tick = evs[i]->applied_at_tick;
            copy_ids->node_status = evs[i]->node_status;
            copy_ids->service_status = evs[i]->service_status;
        }
    }
    tu_events_free(evs, n);
    return found;
}


/* A fixture shared by the action and fault tests: an engine on the
 * "normal" scenario with the given seed, stepped five ticks, and an outbox. */
typedef struct fx {
    mc_engine e;
    mc_outbox ob;
} fx;

static inline int tu_fx_setup(void **state, uint64_t seed)
{
    fx *f = calloc(1, sizeof *f);
    tu_engine(&f->e, "normal", seed);
    mc_outbox_init(&f->ob, 100000);
    for (int t = 0; t < 5; t++)
        tu_step(&f->e, &f->ob);
    *state = f;
    return 0;
}

static inline int tu_fx_teardown(void **state)
{
    fx *f = *state;
    mc_outbox_deinit(&f->ob);
    mc_engine_deinit(&f->e);
    free(f);
    return 0;
}

#endif
