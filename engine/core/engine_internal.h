/* Functions shared by the engine core's source files (engine.c, faults.c,
 * actions.c). Not part of the API. */
#ifndef MC_ENGINE_ENGINE_INTERNAL_H
#define MC_ENGINE_ENGINE_INTERNAL_H

#include "engine.h"

/* calloc that counts the bytes in e->alloc_bytes (n == 0 allocates one). */
void *mc_engine__calloc(mc_engine *e, size_t n, size_t size);

/* Appends an event of this tick; NULL when the per-tick cap is reached (the
 * event is counted as dropped). */
mc_engine_event *mc_engine__event_new(mc_engine *e, int kind, const char *target);
void mc_engine__event(mc_engine *e, int kind, const char *target, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

int mc_engine__node_status(const mc_engine_node *n);
int mc_engine__node_schedulable(const mc_engine_node *n);
void mc_engine__reindex(mc_engine *e);
long mc_engine__place(mc_engine *e, uint32_t s, long exclude);
long mc_engine__add_replica(mc_engine *e, uint32_t s, uint32_t node, mc_replica_state state,
                            uint64_t until, uint64_t tick);
long mc_engine__find_service(const mc_engine *e, const char *id);
long mc_engine__find_node(const mc_engine *e, const char *id);
void mc_engine__fault_to_proto(const mc_engine_fault *f, Sim__V1__Fault *out);

/* faults.c: ends and starts faults due at tick (events, node crashes), and
 * recomputes every entity's fault effects for the tick. */
void mc_engine__faults_update(mc_engine *e, uint64_t tick);
void mc_engine__faults_aggregate(mc_engine *e);
/* Ends the active faults of these types on service s (restart). */
void mc_engine__faults_end_on_service(mc_engine *e, uint32_t s, int type_a, int type_b,
                                      uint64_t tick, const char *why);

/* actions.c: applies the queued commands in (issued_at_tick, command_id)
 * order and empties the queue. */
void mc_engine__commands_apply(mc_engine *e, uint64_t tick);

#endif
