/* The sim-engine's trace recorder: one trace file per run (replay/trace
 * FORMAT.md), written live while the run goes on.
 *
 * Messages of the run reach the recorder in arrival order (the engine's own
 * outbox as it is published, the other stages' messages as they are consumed
 * from the OPS stream). A reorder buffer holds them until a tick is complete
 * and hands them to the trace writer in canonical order (tick, stage,
 * producer_seq); each tick's checkpoint carries the engine's state digest
 * (the only core digest known live; the replay harness computes the others
 * when it re-drives the stages).
 *
 * A tick is complete when the orchestrator's watermark for it is in (the
 * shell calls mc_simrec_release), or when the shell gives up on it (realtime
 * mode releases ticks that fall too far behind; shutdown releases all). A
 * message for a tick already released is not recorded: it is counted as late.
 *
 * Checkpoints. The closed loop (`microcloud sim`) takes the engine's digest
 * at the end of tick N, after the orchestrator's commands of N reached the
 * engine core. Live, in lockstep, that is the engine's state right before it
 * steps N+1: the commands of N came before the orchestrator's watermark N
 * and the engine waits for it. So a lockstep recording defers checkpoint N
 * (defer_checkpoints) until the shell hands over that digest with
 * mc_simrec_checkpoint, right before the next step or at the end of the run.
 * Realtime recordings write the checkpoint after the tick's records with
 * the digest taken right after the step (mc_simrec_engine_tick).
 *
 * Inputs (mc_simrec_input): calls of the control API the engine core depends
 * on (InjectFault) are records of their own (subject sim.inputs, stage
 * MC_TRACE_STAGE_INPUTS, after every stage of their tick), so the re-drive
 * feeds them to the engine core at the same point.
 *
 * Single-threaded: the shell calls it on its loop thread only. */
#ifndef MC_SIMSVC_RECORDER_H
#define MC_SIMSVC_RECORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"
#include "trace/writer.h"

typedef struct mc_simrec mc_simrec;

/* What the header of a new trace says. Strings are copied at open. */
typedef struct mc_simrec_run {
    const char *dir;              /* TRACE_DIR; created when missing */
    const char *signing_key_path; /* TRACE_SIGNING_KEY or NULL */
    const char *scenario; /* the scenario spec (harness/setup.h) */
    const char *run_id;
    const char *mode;          /* "lockstep" or "realtime" */
    const char *approval_mode; /* the orchestrator's APPROVAL_MODE */
    const char *const *settings; /* core settings "NAME=VALUE" (may be NULL) */
    size_t n_settings;
    bool defer_checkpoints; /* lockstep: see above */
    uint64_t seed;
    uint8_t topology_digest[MC_TRACE_HASH_BYTES];
    uint8_t config_digest[MC_TRACE_HASH_BYTES];
    int64_t start_time_unix_ms; /* the only wall-clock value of a trace */
} mc_simrec_run;

/* Counters of one recording, for logs and /metrics. */
typedef struct mc_simrec_stats {
    uint64_t records;     /* written to the file */
    uint64_t checkpoints; /* written to the file */
    uint64_t late;        /* arrived after their tick was released: not recorded */
    uint64_t refused;     /* refused by the reorder buffer for another reason */
} mc_simrec_stats;

/* Creates <dir>/<scenario>-seed<seed>-<run_id>.trace (with a -2, -3 ...
 * suffix if that file exists, e.g. after a restart of the same run) and
 * writes its header. On success *out owns the open trace. */
mc_status mc_simrec_open(const mc_simrec_run *run, mc_simrec **out, mc_error *err);

/* The trace stage of a subject without the bus's subject prefix: sim.* is
 * the engine, ops.incidents and ops.watermark.detector the detector,
 * ops.actions and ops.watermark.agent the agent, ops.decisions,
 * ops.commands and ops.watermark.orchestrator the orchestrator. 0 for a
 * subject that is not recorded (ops.deadletter, anything unknown). */
uint32_t mc_simrec_stage_of(const char *subject);

/* Buffers one message of the run (payload copied). MC_OK also when the
 * message is late (counted, not recorded); MC_ERR_LIMIT when the reorder
 * buffer is full, MC_ERR_EXISTS when the same key came with other bytes. */
mc_status mc_simrec_add(mc_simrec *r, uint64_t tick, uint32_t stage, const char *subject,
                        const char *producer, uint64_t producer_seq, const uint8_t *payload,
                        size_t len, mc_error *err);

/* Buffers one input record (subject sim.inputs, stage
 * MC_TRACE_STAGE_INPUTS) of tick, the tick the engine last completed. When
 * that tick's records are written already but its checkpoint is not (a
 * deferred checkpoint), the record goes straight to the file; after the
 * checkpoint it is late (counted, not recorded). */
mc_status mc_simrec_input(mc_simrec *r, uint64_t tick, const char *subject, const char *producer,
                          uint64_t producer_seq, const uint8_t *payload, size_t len,
                          mc_error *err);

/* Remembers the engine's state digest after it stepped tick, for that
 * tick's checkpoint (the digest a deferred checkpoint falls back to). */
void mc_simrec_engine_tick(mc_simrec *r, uint64_t tick, const uint8_t digest[MC_TRACE_HASH_BYTES]);

/* Declares every tick <= tick complete (capped at the last tick the engine
 * stepped): writes their records and, unless checkpoints are deferred, a
 * checkpoint per tick, in order. A tick at or below the released mark is a
 * no-op. */
mc_status mc_simrec_release(mc_simrec *r, uint64_t tick, mc_error *err);

/* Deferred checkpoints: writes the checkpoints of the released ticks up to
 * tick, tick's with this digest (the engine's state now), earlier ones with
 * the digest their step left. No-op for a tick not released yet or already
 * checkpointed. */
mc_status mc_simrec_checkpoint(mc_simrec *r, uint64_t tick,
                               const uint8_t digest[MC_TRACE_HASH_BYTES], mc_error *err);

/* The last released tick (0 before the first release). */
uint64_t mc_simrec_released(const mc_simrec *r);
/* The file being written. */
const char *mc_simrec_path(const mc_simrec *r);
void mc_simrec_stats_get(const mc_simrec *r, mc_simrec_stats *out);

/* Releases every tick the engine stepped, writes the checkpoints still
 * pending, the footer (and the signature), closes the file and frees the
 * recorder; *r becomes NULL even on failure. info may be NULL. NULL-safe. */
mc_status mc_simrec_close(mc_simrec **r, mc_trace_footer_info *info, mc_error *err);

/* Frees without a footer (the trace reads as torn). For error paths.
 * NULL-safe. */
void mc_simrec_free(mc_simrec *r);

#endif
