/* The detector core (signal-service): turns metric snapshots into incidents.
 *
 * Pure and deterministic (DESIGN.md): no clock, no I/O, no hash-order
 * iteration. The shell feeds every sim.v1.MetricSnapshot chunk of a tick to
 * mc_detector_on_snapshot and, when the engine's watermark for the tick
 * arrives, calls mc_detector_on_tick_end. That closes the tick: every
 * (target, rule) window advances by one tick, rules are evaluated (targets
 * sorted by id, rules in table order) and ops.v1.Incident messages
 * (OPENED / UPDATED / RESOLVED) go to the outbox on ops.incidents, followed
 * by a Watermark{STAGE_DETECTOR} on ops.watermark.detector.
 *
 * Samples are bucketed per (target, metric) and tick: when a tick carries
 * several samples for one series (per-replica values, or a chunk delivered
 * twice) the tick's value is their maximum. The maximum does not depend on
 * the order of the chunks and a repeated chunk changes nothing.
 *
 * Windows cost O(1) per sample and per tick: a ring of per-tick values per
 * series, running sums in fixed point (micro-units, so sums are exact and
 * never drift), monotonic deques for min/max and a count of violating
 * samples for "whole window" rules.
 *
 * A replay harness re-drives the core with the recorded inputs and gets the
 * same outbox bytes and the same digest. */
#ifndef MC_PIPELINE_DETECTOR_DETECTOR_H
#define MC_PIPELINE_DETECTOR_DETECTOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/outbox.h"
#include "detector/rules.h"
#include "sim/v1/metrics.pb-c.h"
#include "status/status.h"

#define MC_DETECTOR_PRODUCER "signal-service"
#define MC_DETECTOR_SUBJECT_INCIDENTS "ops.incidents"
#define MC_DETECTOR_SUBJECT_WATERMARK "ops.watermark.detector"
/* The longest target (service or node) id, with the NUL. */
#define MC_DETECTOR_ID_MAX 64
#define MC_DETECTOR_RUN_ID_MAX 64

typedef struct mc_detector_config {
    /* The run; NULL or "" to take it from the first snapshot's stamp. */
    const char *run_id;
    /* Simulated duration of a tick, turns window_seconds into ticks
     * (rounded up, at least one tick). 0 means 1000. */
    uint32_t tick_duration_ms;
    /* The rules to run (copied); NULL for the built-in table. */
    const mc_detector_rules *rules;
    /* Most targets tracked; samples of further targets are dropped and
     * counted and on_snapshot returns MC_ERR_LIMIT. 0 means 20000. */
    uint32_t max_targets;
    /* An open incident is UPDATED for a new observed value only when it
     * moved by at least ratio * |threshold| since the last message (a
     * threshold of 0 makes the ratio absolute). 0 means 0.10. */
    double value_change_ratio;
} mc_detector_config;

/* Counters for the shell's logs and metrics; part of the digest. */
typedef struct mc_detector_stats {
    uint64_t snapshots;
    uint64_t samples;            /* accepted into a series */
    uint64_t samples_ignored;    /* metric no rule watches */
    uint64_t samples_invalid;    /* non-finite value, no or overlong target id */
    uint64_t samples_late;       /* for a tick already closed */
    uint64_t samples_over_limit; /* for a new target past max_targets */
    uint64_t targets;
    uint64_t incidents_opened;
    uint64_t incidents_updated;
    uint64_t incidents_resolved;
    uint64_t ticks_closed;
    uint64_t messages;           /* producer_seq of the last message */
} mc_detector_stats;

typedef struct mc_det_target mc_det_target;

/* Caller-allocated; the fields are private. */
typedef struct mc_detector {
    mc_detector_rules rules;
    uint32_t window_ticks[MC_DETECTOR_RULES_MAX];
    uint16_t rule_metric[MC_DETECTOR_RULES_MAX];
    uint16_t rule_group[MC_DETECTOR_RULES_MAX];
    uint16_t rule_slot[MC_DETECTOR_RULES_MAX]; /* index among the rules of its metric */
    size_t metric_count;
    char metrics[MC_DETECTOR_RULES_MAX][MC_DETECTOR_NAME_MAX];
    uint32_t metric_ring[MC_DETECTOR_RULES_MAX];      /* largest window of the metric */
    uint16_t metric_rule_count[MC_DETECTOR_RULES_MAX]; /* rules watching the metric */
    uint16_t metric_rules[MC_DETECTOR_RULES_MAX][MC_DETECTOR_RULES_MAX];
    /* Where each rule's min/max deque starts in its series' deque storage,
     * and the storage's size per metric (0 when no rule needs one). */
    uint32_t metric_dq_off[MC_DETECTOR_RULES_MAX][MC_DETECTOR_RULES_MAX];
    uint32_t metric_dq_total[MC_DETECTOR_RULES_MAX];
    size_t group_count;
    char groups[MC_DETECTOR_RULES_MAX][MC_DETECTOR_NAME_MAX];
    uint16_t group_rule_count[MC_DETECTOR_RULES_MAX];
    uint16_t group_rules[MC_DETECTOR_RULES_MAX][MC_DETECTOR_RULES_MAX]; /* table order */

    uint32_t tick_ms;
    uint32_t max_targets;
    double change_ratio;
    char run_id[MC_DETECTOR_RUN_ID_MAX];

    mc_det_target **targets; /* in creation order */
    uint32_t *order;         /* indices into targets, sorted by id */
    uint32_t *hash;          /* open addressing: index + 1, 0 empty */
    uint32_t hash_cap;
    uint32_t target_count;

    int has_closed;
    uint64_t last_closed; /* the last tick closed */
    int has_open;
    uint64_t open_tick; /* the tick the pending samples belong to */
    int64_t open_time_ms;
    int has_time;
    uint64_t time_tick; /* sim time of time_tick is time_ms */
    int64_t time_ms;
    uint64_t producer_seq;
    mc_detector_stats stats;
} mc_detector;

/* Prepares d (caller-allocated; its previous contents are ignored). The
 * config is validated: the rules, and each window is at most
 * MC_DETECTOR_WINDOW_TICKS_MAX ticks. On failure d needs no deinit. */
mc_status mc_detector_init(mc_detector *d, const mc_detector_config *cfg, mc_error *err);

/* Frees what d holds. NULL-safe; d may be initialized again after. */
void mc_detector_deinit(mc_detector *d);

/* Takes one snapshot chunk. Emits nothing (everything happens at tick end).
 * Errors (err says why; the shell logs and carries on):
 * - MC_ERR_STATE: a different run_id than the detector's, or a snapshot for
 *   a later tick while samples of an earlier tick are still open (the
 *   watermark in between is missing). Nothing of the snapshot is taken.
 * - MC_ERR_LIMIT: some samples named new targets past max_targets; they
 *   were dropped (counted), every other sample was taken.
 * A snapshot for a tick already closed is ignored and counted (late). */
mc_status mc_detector_on_snapshot(mc_detector *d, const Sim__V1__MetricSnapshot *s,
                                  mc_outbox *out, mc_error *err);

/* Closes tick: advances every window, evaluates the rules and appends the
 * incidents and the watermark to out. A tick at or before the last closed
 * one is a redelivered watermark: nothing happens (MC_OK). The outbox needs
 * room for one message per (target, rule group) with a change, plus one;
 * if it fills up the call fails with MC_ERR_LIMIT and d should be dropped. */
mc_status mc_detector_on_tick_end(mc_detector *d, uint64_t tick, mc_outbox *out, mc_error *err);

/* BLAKE2b-256 of the canonical state: rules, counters, every target's
 * windows, rule hysteresis and open incidents, in id order. */
void mc_detector_digest(const mc_detector *d, uint8_t out[MC_DIGEST_BYTES]);

void mc_detector_stats_get(const mc_detector *d, mc_detector_stats *out);

/* The window of rule i in ticks, after conversion (for tests and logs). */
uint32_t mc_detector_rule_window_ticks(const mc_detector *d, size_t rule_index);

/* The number of incidents open now. */
size_t mc_detector_open_incidents(const mc_detector *d);

#endif
