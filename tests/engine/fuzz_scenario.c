/* Fuzz target of the scenario parser: any bytes either parse into a
 * scenario that passes its own invariants or are rejected with a message
 * naming the file; nothing crashes, leaks or reads out of bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/core/engine.h"
#include "engine/core/scenario.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mc_scenario sc;
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_scenario_parse((const char *)data, size, "fuzz.scenario", &sc, &err);
    if (st != MC_OK) {
        if (strncmp(err.msg, "fuzz.scenario", 13) != 0)
            abort();
        if (sc.nodes != NULL || sc.services != NULL || sc.deps != NULL || sc.faults != NULL)
            abort();
        return 0;
    }
    if (sc.n_nodes == 0 || sc.n_services == 0)
        abort();
    for (size_t i = 0; i < sc.n_services; i++) {
        const mc_scenario_service *s = &sc.services[i];
        if (s->dep_first + s->dep_count > sc.n_deps || s->replicas > s->max_replicas)
            abort();
        for (uint32_t k = 0; k < s->dep_count; k++)
            if (sc.deps[s->dep_first + k].service >= sc.n_services)
                abort();
    }
    for (size_t f = 0; f < sc.n_faults; f++) {
        const mc_scenario_fault *ft = &sc.faults[f];
        size_t limit = ft->target_kind == MC_TARGET_NODE ? sc.n_nodes : sc.n_services;
        if (ft->target_index >= limit)
            abort();
    }
    /* Small scenarios also run a few ticks: whatever parses must either be
     * refused by init with a message or simulate without crashing, keeping
     * served + failed == offered. */
    if (sc.n_services <= 200 && sc.n_nodes <= 50) {
        mc_engine e;
        mc_engine_config cfg = {.seed = 1};
        if (mc_engine_init(&e, &sc, &cfg, &err) == MC_OK) {
            mc_outbox ob;
            mc_outbox_init(&ob, mc_engine_max_messages_per_tick(&e));
            for (int t = 0; t < 5; t++) {
                if (mc_engine_step(&e, &ob, &err) != MC_OK)
                    abort();
                mc_outbox_clear(&ob);
                for (uint32_t i = 0; i < mc_engine_service_count(&e); i++) {
                    mc_engine_service_view v;
                    mc_engine_service_get(&e, i, &v);
                    if (v.served + v.failed != v.offered)
                        abort();
                }
            }
            mc_outbox_deinit(&ob);
            mc_engine_deinit(&e);
        } else if (err.msg[0] == '\0') {
            abort();
        }
    }
    mc_scenario copy;
    if (mc_scenario_copy(&copy, &sc, NULL) == MC_OK)
        mc_scenario_free(&copy);
    mc_scenario_free(&sc);
    return 0;
}
