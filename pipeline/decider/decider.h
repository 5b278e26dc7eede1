/* The decider core (agent-service): turns incidents into remediation
 * proposals (ops.v1.Action, status PENDING) under guardrails.
 *
 * Pure and deterministic (DESIGN.md). Inputs: ops.v1.Incident
 * (mc_decider_on_incident), ops.v1.ApprovalDecision (on_decision: approved,
 * rejected, expired or superseded), sim.v1.SimulationEvent (on_event:
 * COMMAND_APPLIED / COMMAND_REFUSED with action_id, NODE_STATUS_CHANGED, and
 * any event carrying "replicas" / "max_replicas" attributes). Inputs only
 * update state; decisions are taken at mc_decider_on_tick_end(tick), which
 * the shell calls on the detector's watermark for the tick, so the order in
 * which the inputs of one tick arrived does not matter.
 *
 * At tick end every open incident (in target id, then incident id order) is
 * checked: escalation first (an executed action that did not resolve the
 * incident within its rule's escalate_after_ticks), then the first matching
 * decision rule. A proposal passes these guardrails or is held back with a
 * note (mc_decider_notes) the shell logs and may add to the incident:
 *   - idempotency: one proposal per (incident, action type, target), ever; a
 *     refused action is never repeated for that incident;
 *   - cooldowns: per (target, action type) from the rule, per target from
 *     the config;
 *   - at most max_in_flight actions proposed and not finished;
 *   - never drain the last ready node (nodes are known from
 *     NODE_STATUS_CHANGED events; a node is counted ready only when an event
 *     said READY);
 *   - never scale a service below 1 replica or above its maximum (replicas
 *     from the "replicas" attribute of events on the service, adjusted by
 *     applied scale commands; maximum from "max_replicas" or the config).
 * Output: the Actions on ops.actions, then Watermark{STAGE_AGENT} on
 * ops.watermark.agent. */
#ifndef MC_PIPELINE_DECIDER_DECIDER_H
#define MC_PIPELINE_DECIDER_DECIDER_H

#include <stddef.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/ids.h"
#include "core/outbox.h"
#include "decider/rules.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "status/status.h"

#define MC_DECIDER_PRODUCER "agent-service"
#define MC_DECIDER_SUBJECT_ACTIONS "ops.actions"
#define MC_DECIDER_SUBJECT_WATERMARK "ops.watermark.agent"
#define MC_DECIDER_ID_MAX 64 /* target ids, with the NUL */
#define MC_DECIDER_RUN_ID_MAX 64
#define MC_DECIDER_NOTES_MAX 256
#define MC_DECIDER_ACTION_TYPES 6 /* index by Common__V1__ActionType, 0 unused */

typedef struct mc_decider_config {
    const char *run_id;             /* NULL/"": from the first input's stamp */
    const mc_decider_rules *rules;  /* copied; NULL for the built-ins */
    uint32_t max_in_flight;         /* K; 0 means 5 */
    uint32_t target_cooldown_ticks; /* any action on a target; 0 none */
    uint32_t action_expiry_ticks;   /* expires_at_tick = proposed + this; 0 never */
    uint32_t default_max_replicas;  /* when no event says; 0 means 10 */
    uint32_t max_incidents;         /* tracked at once; 0 means 4096 */
    uint32_t max_targets;           /* services and nodes; 0 means 4096 */
    /* Resolved incidents are forgotten this many ticks after resolving, and
     * incident messages stamped older than this are ignored. 0 means 600. */
    uint32_t retention_ticks;
} mc_decider_config;

/* Why a proposal was held back (or not repeated), for the shell's log and
 * the incident's notes. */
typedef struct mc_decider_note {
    uint64_t tick;
    char incident_id[MC_UUID_STR_LEN];
    char target_id[MC_DECIDER_ID_MAX];
    int action_type;  /* Common__V1__ActionType */
    char guardrail[32]; /* "cooldown", "target_cooldown", "max_in_flight",
                           "last_ready_node", "min_replicas", "max_replicas",
                           "replicas_unknown", "refused_before" */
    char reason[256];  /* a sentence */
} mc_decider_note;

typedef struct mc_decider_stats {
    uint64_t incidents;           /* messages taken */
    uint64_t incidents_duplicate; /* redelivered or older than what is known */
    uint64_t incidents_stale;     /* older than retention */
    uint64_t incidents_dropped;   /* no room (max_incidents) */
    uint64_t decisions;
    uint64_t events;
    uint64_t unknown_actions; /* decisions/events naming an action we never proposed */
    uint64_t actions_proposed;
    uint64_t escalations;
    uint64_t held;          /* notes written */
    uint64_t notes_dropped; /* notes not kept: the buffer was full */
    uint64_t ticks_closed;
    uint64_t messages;
} mc_decider_stats;

typedef struct mc_dec_incident mc_dec_incident;
typedef struct mc_dec_target mc_dec_target;
typedef struct mc_dec_action_ref mc_dec_action_ref;

/* Caller-allocated; the fields are private. */
typedef struct mc_decider {
    mc_decider_rules rules;
    uint32_t max_in_flight, target_cooldown, expiry, default_max_replicas;
    uint32_t max_incidents, max_targets, retention;
    char run_id[MC_DECIDER_RUN_ID_MAX];

    mc_dec_incident *incidents; /* pool of max_incidents slots */
    uint32_t *free_slots;
    uint32_t free_count;
    uint32_t *by_id;     /* used slots sorted by incident id */
    uint32_t *by_target; /* used slots sorted by (target, incident id) */
    uint32_t incident_count;

    mc_dec_action_ref *actions; /* sorted by action id */
    uint32_t action_count, action_cap;

    mc_dec_target *targets; /* sorted by id */
    uint32_t target_count;

    int has_closed;
    uint64_t last_closed;
    uint64_t producer_seq;
    uint32_t in_flight; /* recounted at each tick end */

    mc_decider_note notes[MC_DECIDER_NOTES_MAX];
    size_t note_count;
    mc_decider_stats stats;
} mc_decider;

/* Fills cfg with the defaults (including a per-target cooldown of 5 ticks
 * and an expiry of 30 ticks, which a zeroed config does not have). */
void mc_decider_config_default(mc_decider_config *cfg);

mc_status mc_decider_init(mc_decider *d, const mc_decider_config *cfg, mc_error *err);
/* NULL-safe. */
void mc_decider_deinit(mc_decider *d);

/* Takes an incident message (OPENED / UPDATED / RESOLVED). A redelivered or
 * older message than the one already taken changes nothing. Emits nothing.
 * MC_ERR_INVALID for a message without stamp, id or target; MC_ERR_STATE
 * for another run; MC_ERR_LIMIT when max_incidents are tracked and none can
 * be forgotten (counted, the incident is dropped). */
mc_status mc_decider_on_incident(mc_decider *d, const Ops__V1__Incident *m, mc_outbox *out,
                                 mc_error *err);

/* Takes an approval decision on one of our actions: approved keeps it in
 * flight until the engine reports; a rejection (person or policy) or a
 * system decision (expiry, supersession) finishes it. Unknown actions are
 * counted and ignored. */
mc_status mc_decider_on_decision(mc_decider *d, const Ops__V1__ApprovalDecision *m,
                                 mc_outbox *out, mc_error *err);

/* Takes a simulation event (see the header comment for the kinds used). */
mc_status mc_decider_on_event(mc_decider *d, const Sim__V1__SimulationEvent *m, mc_outbox *out,
                              mc_error *err);

/* Decides for tick and appends the Actions and the watermark. A tick at or
 * before the last closed one changes nothing (a redelivered watermark). */
mc_status mc_decider_on_tick_end(mc_decider *d, uint64_t tick, mc_outbox *out, mc_error *err);

void mc_decider_digest(const mc_decider *d, uint8_t out[MC_DIGEST_BYTES]);
void mc_decider_stats_get(const mc_decider *d, mc_decider_stats *out);

/* The notes written since the last clear, oldest first; valid until the
 * next call that changes d. */
size_t mc_decider_notes(const mc_decider *d, const mc_decider_note **notes);
void mc_decider_notes_clear(mc_decider *d);

/* Actions proposed and not finished, as of the last tick end. */
uint32_t mc_decider_in_flight(const mc_decider *d);

#endif
