/* The closed loop: the engine, detector, decider (agent) and approval
 * (orchestrator) cores in one process, in lockstep (CONTRACTS.md "Tick and
 * stage order"), with no NATS and no PostgreSQL. `microcloud sim` runs it and
 * records every message in a trace; the re-drive (redrive.h) checks a trace
 * against the same cores one at a time.
 *
 * Tick N, in order:
 *   1. the engine steps N (applying the commands of tick N-1);
 *   2. its sim.metrics go to the detector, its sim.events to the decider and
 *      the approval core; its watermark closes the detector's tick N;
 *   3. ops.incidents go to the decider and the approval core; the detector's
 *      watermark closes the decider's tick N;
 *   4. ops.actions go to the approval core; on the agent's watermark the
 *      scripted human decisions of tick N are applied, then the approval
 *      core closes N;
 *   5. ops.decisions go to the decider (it learns rejections and expiries),
 *      ops.commands to the engine (applied at the start of N+1);
 *   6. the checkpoint: the four cores' digests.
 * Every message reaches the sink as the packed bytes the core emitted, in
 * canonical order (tick, stage, producer_seq), then the checkpoint.
 *
 * A core's refusal of one input (a bound reached, a message it rejects) is
 * counted, not fatal, exactly as a service shell logs it and carries on; the
 * re-drive does the same, so both see the same state. */
#ifndef MC_HARNESS_LOOP_H
#define MC_HARNESS_LOOP_H

#include <stddef.h>
#include <stdint.h>

#include "approval/approval.h"
#include "core/outbox.h"
#include "decider/decider.h"
#include "detector/detector.h"
#include "engine/core/engine.h"
#include "harness/script.h"
#include "harness/setup.h"
#include "status/status.h"
#include "trace/writer.h"

#define MC_LOOP_CORES 4

/* Where the loop's messages go. record is called once per message in
 * canonical order; checkpoint once per tick after its records. Either may
 * be NULL. A non-OK return stops the step with that error. */
typedef struct mc_loop_sink {
    mc_status (*record)(void *ctx, uint64_t tick, uint32_t stage, const char *subject,
                        const char *producer, uint64_t producer_seq, const uint8_t *payload,
                        size_t len, mc_error *err);
    mc_status (*checkpoint)(void *ctx, uint64_t tick, const mc_trace_digest *digests, size_t n,
                            mc_error *err);
    void *ctx;
} mc_loop_sink;

typedef struct mc_loop {
    mc_engine engine;
    mc_detector detector;
    mc_decider decider;
    mc_approval approval;
    mc_outbox out_engine, out_detector, out_agent, out_orch;
    mc_script *script; /* not owned; applied counts are written to it */
    size_t script_next;
    uint64_t tick;         /* the last completed tick */
    uint64_t input_errors; /* inputs a core refused (see above) */
    char last_input_error[256];
    int engine_ok, detector_ok, decider_ok, approval_ok;
} mc_loop;

/* The cores' configurations for a setup (its settings and run id); the
 * re-drive uses the same. mc_loop_init configures every core with the
 * engine's run id, so they stamp it from tick 1 on like the services. */
void mc_loop_engine_config(const mc_run_setup *s, mc_engine_config *cfg);
void mc_loop_detector_config(const mc_run_setup *s, mc_detector_config *cfg);
void mc_loop_decider_config(const mc_run_setup *s, mc_decider_config *cfg);
void mc_loop_approval_config(const mc_run_setup *s, mc_approval_config *cfg);

/* Builds the four cores from s (which must outlive the loop only during
 * init: everything is copied). script may be NULL. On failure l needs no
 * deinit. */
mc_status mc_loop_init(mc_loop *l, const mc_run_setup *s, mc_script *script, mc_error *err);
/* Runs one tick (see above). */
mc_status mc_loop_step(mc_loop *l, const mc_loop_sink *sink, mc_error *err);
/* The four digests, stages 1..4. */
void mc_loop_digests(const mc_loop *l, mc_trace_digest out[MC_LOOP_CORES]);
/* NULL-safe. */
void mc_loop_deinit(mc_loop *l);

#endif
