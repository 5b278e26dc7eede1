/* Re-drive: check a trace against the cores, one component at a time or
 * all four, each fed only its own recorded inputs.
 *
 * Per component, tick by tick, in the trace's canonical order:
 *   engine        re-built from the header's seed and scenario spec; steps
 *                 each tick; the recorded ops.commands of tick N, then the
 *                 recorded inputs of tick N (sim.inputs: injected faults),
 *                 are applied after step N (so at N+1, as in lockstep).
 *   detector      the recorded sim.metrics; tick end at each recorded
 *                 sim.watermark.
 *   agent         sim.events, ops.incidents and ops.decisions; tick end at
 *                 each ops.watermark.detector.
 *   orchestrator  sim.events, ops.incidents and ops.actions; tick end at each
 *                 ops.watermark.agent; the recorded HUMAN decisions are
 *                 inputs too (mc_approval_replay_decision whenever the next
 *                 one is due, approval.h "Replay").
 * Every core is configured with the header's run id and settings (as the
 * live services know their run from its first message on). What a
 * component emits is compared with its recorded records of the tick, byte
 * for byte (subject, tick, producer sequence, payload), and its digest with
 * the tick's checkpoint when the checkpoint has one (absent or all zero: not
 * recorded, as the other cores' in a live trace; FORMAT.md). A digest that differs is remembered and the
 * re-drive goes on to the first message that differs, which stops it; the
 * rest of the file is still read so that damage anywhere is reported (and
 * wins: a damaged trace proves nothing). */
#ifndef MC_HARNESS_REDRIVE_H
#define MC_HARNESS_REDRIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness/scorecard.h"
#include "harness/setup.h"
#include "status/status.h"
#include "trace/reader.h"

typedef enum mc_redrive_verdict {
    MC_REDRIVE_IDENTICAL = 0,
    MC_REDRIVE_DIVERGED = 1,
    MC_REDRIVE_DAMAGED = 2 /* damaged, torn or incompatible */
} mc_redrive_verdict;

typedef struct mc_redrive_options {
    unsigned components; /* MC_COMP_* bits; 0: read and decode only */
    /* Rules and overrides already applied (the caller's flags); the
     * re-drive sets the scenario, seed, knobs and approval mode from the
     * header. Required. */
    mc_run_setup *setup;
    const char *scenario_dir;
    const char *scenario;      /* a name or file instead of the header's name; NULL */
    const uint8_t *public_key; /* 32 bytes, or NULL */
    mc_scorecard *score;       /* optional: fed every record and checkpoint */
    /* Called after each tick with the byte offset reached in the file. */
    void (*progress)(void *ctx, uint64_t tick, uint64_t offset);
    void *progress_ctx;
} mc_redrive_options;

typedef struct mc_divergence {
    uint64_t tick;
    uint32_t stage;
    char subject[64];
    uint64_t producer_seq;
    char what[256];
    /* The recorded and the emitted message (either may be absent). */
    uint8_t *expected;
    size_t expected_len;
    bool has_expected;
    uint8_t *actual;
    size_t actual_len;
    bool has_actual;
    /* The component's digest at the end of the tick, when the checkpoint
     * has one. */
    bool digest_checked;
    bool digest_diverged;
    uint8_t digest_expected[32], digest_actual[32];
} mc_divergence;

typedef struct mc_redrive_result {
    mc_redrive_verdict verdict;
    char problem[512]; /* why damaged/incompatible */
    bool diverged;
    /* The first message that differs; when none did, the first digest
     * that differed. */
    mc_divergence div;
    /* Where a state digest first differed (it may precede div: a changed
     * rule changes the state at tick 1, the outputs only later). */
    bool has_first_digest;
    mc_divergence first_digest;
    uint64_t ticks, records, samples, checkpoints, last_tick;
    uint64_t ticks_driven; /* ticks compared before the end or a divergence */
    bool config_mismatch, topology_mismatch, run_id_mismatch;
    uint64_t input_errors;
    mc_trace_sig_state signature;
    Trace__V1__TraceHeader *header; /* a copy of the header (unpacked) */
} mc_redrive_result;

/* Runs the re-drive of path. Returns MC_OK whatever the verdict (a damaged
 * trace is a verdict, with the reason in problem); an error only when the
 * re-drive itself could not run (out of memory). */
mc_status mc_redrive_file(const char *path, const mc_redrive_options *o, mc_redrive_result *r,
                          mc_error *err);
void mc_redrive_result_free(mc_redrive_result *r);

#endif
