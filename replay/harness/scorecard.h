/* The scorecard of a run, computed from its messages (so `microcloud sim`
 * and `replay verify` score a run the same way, live or from a trace):
 *
 *   MTTD  per fault: ticks from the fault's start (FAULT_STARTED) to the
 *         first incident opened on an affected target (the fault's target, or
 *         any service upstream of it: one that calls it, directly or not).
 *   MTTR  per fault: ticks from its start until every incident opened on an
 *         affected target since the start is resolved (undefined while one
 *         is still open at the end of the run).
 *   SLO damage: service-ticks over the error-rate (5 %) or the p99 latency
 *         (500 ms) objective, and each objective apart.
 *   Actions: proposed (ops.actions), approved and refused (decisions by a
 *         person or the policy), dropped (system: expired or superseded),
 *         executed and failed (COMMAND_APPLIED / COMMAND_REFUSED).
 *   Final state digest: the last checkpoint's digests, and one digest over
 *         them all.
 * Beside it, the run hash: BLAKE2b over every record's (tick, stage,
 * subject, producer, producer_seq, payload) and every checkpoint, which is
 * what two runs must share to be the same run whatever the build (the
 * header's build id, compiler and start time are left out). */
#ifndef MC_HARNESS_SCORECARD_H
#define MC_HARNESS_SCORECARD_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/digest.h"
#include "engine/core/scenario.h"
#include "status/status.h"
#include "trace/writer.h"

#define MC_SCORE_MAX_FAULTS     256
#define MC_SCORE_ERROR_RATE_SLO 5.0
#define MC_SCORE_LATENCY_SLO_MS 500.0

typedef struct mc_score_fault {
    char fault_id[MC_SCENARIO_ID_MAX];
    char type[32];
    char target[MC_SCENARIO_ID_MAX];
    uint64_t start_tick;
    bool detected;
    uint64_t detected_tick;
    char detected_by[MC_SCENARIO_ID_MAX]; /* the incident's target */
    uint64_t incidents;                   /* on affected targets since the start */
    uint64_t open_incidents;              /* of those, open at the end */
    uint64_t last_resolved_tick;
    bool *affected; /* per scenario service */
} mc_score_fault;

typedef struct mc_score_incident mc_score_incident;
typedef struct mc_score_series mc_score_series;

typedef struct mc_scorecard {
    const mc_scenario *sc; /* not owned; NULL: no dependency graph (target only) */
    mc_score_fault faults[MC_SCORE_MAX_FAULTS];
    size_t fault_count;
    uint64_t faults_dropped;

    mc_score_incident *incidents; /* open addressing by id */
    size_t inc_cap, inc_count;
    uint64_t incidents_opened, incidents_resolved;

    mc_score_series *series; /* open addressing by service id */
    size_t ser_cap, ser_count;
    uint64_t slo_damage, slo_error_ticks, slo_latency_ticks;

    uint64_t proposed, approved, refused, dropped, executed, failed;
    uint64_t records, samples, ticks, last_tick;
    uint8_t final_digests[4][MC_DIGEST_BYTES];
    bool have_digests;
    mc_digest run_hash;
    uint8_t run_hash_final[MC_DIGEST_BYTES];
    bool finished;
} mc_scorecard;

/* sc (may be NULL) must outlive the scorecard. */
mc_status mc_scorecard_init(mc_scorecard *s, const mc_scenario *sc, mc_error *err);
void mc_scorecard_deinit(mc_scorecard *s);

/* One record, as recorded. Undecodable payloads count in the run hash only. */
mc_status mc_scorecard_record(mc_scorecard *s, uint64_t tick, uint32_t stage, const char *subject,
                              const char *producer, uint64_t producer_seq, const uint8_t *payload,
                              size_t len, mc_error *err);
/* The same with the payload already decoded (m may be NULL). */
mc_status mc_scorecard_record_msg(mc_scorecard *s, uint64_t tick, uint32_t stage,
                                  const char *subject, const char *producer, uint64_t producer_seq,
                                  const uint8_t *payload, size_t len, const ProtobufCMessage *m);
void mc_scorecard_checkpoint(mc_scorecard *s, uint64_t tick, const mc_trace_digest *d, size_t n);
/* Ends the run: fixes MTTR and the hashes. Idempotent. */
void mc_scorecard_finish(mc_scorecard *s);

/* The run hash and the digest over the final digests (after finish). */
void mc_scorecard_run_hash(const mc_scorecard *s, char hex[2 * MC_DIGEST_BYTES + 1]);
void mc_scorecard_state_digest(const mc_scorecard *s, char hex[2 * MC_DIGEST_BYTES + 1]);

/* Text (several lines) and JSON (a new object). */
void mc_scorecard_print(const mc_scorecard *s, FILE *f);
json_t *mc_scorecard_json(const mc_scorecard *s);

#endif
