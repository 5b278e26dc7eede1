/* The approval core: the orchestrator's approval workflow as a pure,
 * deterministic state machine (DESIGN.md, "Pure cores, thin shells").
 *
 * Inputs
 *   - ops.actions    mc_approval_on_action: the agent's PENDING proposals.
 *   - ops.incidents  mc_approval_on_incident: context only (severity, title,
 *                    resolution) shown with the actions of the incident.
 *   - sim.events     mc_approval_on_event: COMMAND_APPLIED makes an APPROVED
 *                    action EXECUTED, COMMAND_REFUSED makes it FAILED.
 *   - the agent's watermark for tick N: mc_approval_on_tick_end(N) applies
 *     the policy (APPROVAL_MODE), expires stale proposals and closes N.
 *   - people: mc_approval_on_human_decision (the ActionService handlers), or
 *     mc_approval_replay_decision with a recorded ops.decisions message.
 *
 * Outputs (appended to the caller's mc_outbox, stamped producer
 * "orchestrator", producer_seq 1, 2, 3 ... per run)
 *   - ops.decisions  ApprovalDecision for every approval or rejection: HUMAN
 *                    (a person), POLICY (APPROVAL_MODE at a tick end), SYSTEM
 *                    (expiry and supersession, approved = false), so the
 *                    trace shows every status change that was not computed
 *                    by the engine.
 *   - ops.commands   ApplyActionCommand for every approval, right after its
 *                    decision, issued_at_tick = the decision's tick;
 *                    parameters {"replica_delta": "1"} for SCALE_UP and
 *                    {"replica_delta": "-1"} for SCALE_DOWN, none otherwise.
 *   - ops.watermark.orchestrator  Watermark{STAGE_ORCHESTRATOR, N,
 *                    message_count} as the last message of on_tick_end(N).
 * Ids (core/ids.h): decision_id = mc_id_uuid("decision", run, tick,
 * action_id, "human"|"policy"|"system"); command_id = mc_id_uuid("command",
 * run, tick, target_id, action_id). Stamps say replayed = false: the shell
 * sets it when it re-publishes from a trace.
 *
 * Beside the outbox every mutating call fills a transition list (see
 * mc_approval_transitions): one entry per status change it made, with actor,
 * tick and reason, so the shell can store each in action_history. The list
 * is separate from the outbox because it also holds changes that publish
 * nothing (a new proposal, EXECUTED and FAILED from engine events).
 *
 * State machine
 *   (new) -> PENDING                      on_action
 *   PENDING -> APPROVED                   person or policy; emits decision + command
 *   PENDING -> REJECTED                   person; emits decision
 *   PENDING -> EXPIRED                    on_tick_end(T) with T >= expires_at_tick
 *   PENDING -> SUPERSEDED                 a newer proposal for the same target
 *   APPROVED -> EXECUTED / FAILED         engine COMMAND_APPLIED / COMMAND_REFUSED
 * A person's decision on anything but a PENDING action fails with
 * MC_ERR_STATE and reports the current action (so the API can answer
 * failed_precondition naming its status); an unknown (or evicted) id fails
 * with MC_ERR_NOT_FOUND.
 *
 * Choices worth knowing
 *   - An action whose incident resolves while it is pending stays PENDING: a
 *     person may still want it (a restart after a leak clears), and expiry
 *     cleans it up otherwise. Its view says incident_resolved so the
 *     dashboard can show it; the policy does not look at the incident.
 *   - Supersession is by target_id, whatever the action type. The newer
 *     proposal is the one with the higher proposed_at_tick; on a tie the one
 *     that arrived later. A proposal that arrives after a newer pending one
 *     for its target is recorded and immediately SUPERSEDED by it. The SYSTEM
 *     decision is emitted at once (on_action), not at the tick end, so
 *     nobody can approve a replaced action.
 *   - expires_at_tick = proposed_at_tick + expiry_ticks (0 = never); when the
 *     agent sets an earlier non-zero expires_at_tick, that one wins. At
 *     on_tick_end(T) the policy runs first, then expiry; a person's approval
 *     during tick T wins over an expiry at T because it is applied at once.
 *   - The run: the core takes the run_id of the first stamped input (or the
 *     config's) and refuses inputs of another run with MC_ERR_INVALID; the
 *     shell re-initializes the core when the engine starts a new run.
 *   - Duplicates (JetStream redelivery) are harmless: a known action id,
 *     or an engine event for an action that is not APPROVED, changes
 *     nothing and returns MC_OK.
 *   - Human decisions are stamped (and take effect) at the open tick: the
 *     tick the core will close next (last closed + 1; before the first close,
 *     the tick of the first accepted input). A watermark's message_count is
 *     the number of messages the core emitted since the previous watermark.
 *
 * Replay: re-drive the core with the recorded ops.actions, ops.incidents,
 * sim.events and agent watermarks (on_tick_end) in trace order. Before each
 * of those inputs, and once more at the end, feed the recorded HUMAN
 * decisions of ops.decisions through mc_approval_replay_decision while the
 * next one is due (mc_approval_replay_due: its stamp.producer_seq is the
 * core's next sequence number and its action is known). That reproduces the
 * live order exactly: a human decision interacts with other inputs only
 * through its own action (which must have arrived: "known"), through
 * supersessions and tick ends (which emit, so the sequence number pins the
 * order) and through engine events (which name the command id that only the
 * approval creates, so they always come after it); eviction happens only at
 * tick ends. Inputs that emit nothing therefore commute with it, and its
 * stamp tick (the open tick) does not move between tick ends. Everything
 * else the core emits (POLICY/SYSTEM decisions, commands, watermarks) is
 * compared with the recording, byte for byte. The same re-drive rebuilds the
 * state after an orchestrator restart (its outputs, already published, are
 * dropped).
 *
 * Atomicity: a call that would overflow the outbox fails with MC_ERR_LIMIT
 * before changing anything. After init the core allocates nothing itself;
 * MC_ERR_NOMEM can only come from the outbox copying a packed message, and
 * leaves the state part-way through a call: treat it as fatal and rebuild
 * the core.
 *
 * Single-threaded; no clock, no environment, no I/O. */
#ifndef MC_GATEWAY_APPROVAL_H
#define MC_GATEWAY_APPROVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/v1/enums.pb-c.h"
#include "core/digest.h"
#include "core/outbox.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "status/status.h"

/* Sizes of the fixed string fields, including the NUL. Ids (UUIDs, 36
 * characters) and targets longer than these are refused as invalid input;
 * free text (reasons, titles) is cut at a UTF-8 character boundary. */
#define MC_APPROVAL_ID_MAX     64
#define MC_APPROVAL_TARGET_MAX 128
#define MC_APPROVAL_ACTOR_MAX  128
#define MC_APPROVAL_TEXT_MAX   512
#define MC_APPROVAL_RUN_ID_MAX 64
/* A list cursor: "<proposed_at_tick>/<action id>". */
#define MC_APPROVAL_CURSOR_MAX (24 + MC_APPROVAL_ID_MAX)

/* ActionStatus values are 0..7; arrays indexed by status have this size. */
#define MC_APPROVAL_STATUS_COUNT 8

#define MC_APPROVAL_PRODUCER          "orchestrator"
#define MC_APPROVAL_SUBJECT_DECISIONS "ops.decisions"
#define MC_APPROVAL_SUBJECT_COMMANDS  "ops.commands"
#define MC_APPROVAL_SUBJECT_WATERMARK "ops.watermark.orchestrator"
/* The actor of expiry and supersession decisions and of their transitions. */
#define MC_APPROVAL_ACTOR_SYSTEM "system"
#define MC_APPROVAL_ACTOR_AGENT  "agent"
#define MC_APPROVAL_ACTOR_ENGINE "engine"

#define MC_APPROVAL_DEFAULT_EXPIRY_TICKS  30
#define MC_APPROVAL_DEFAULT_MAX_ACTIONS   4096
#define MC_APPROVAL_DEFAULT_MAX_INCIDENTS 1024

/* APPROVAL_MODE. */
typedef enum mc_approval_mode {
    /* People decide everything. */
    MC_APPROVAL_MODE_MANUAL = 0,
    /* The policy approves every pending action at the first tick end after
     * its proposal arrived. */
    MC_APPROVAL_MODE_AUTO = 1,
    /* The policy approves restarts, scale-ups and rebalances; drains and
     * scale-downs wait for a person. */
    MC_APPROVAL_MODE_AUTO_LOW_RISK = 2
} mc_approval_mode;

/* "manual", "auto" or "auto-low-risk"; anything else is MC_ERR_INVALID. */
mc_status mc_approval_mode_parse(const char *s, mc_approval_mode *out, mc_error *err);
/* The APPROVAL_MODE spelling of m; "unknown" for a bad value. Never NULL. */
const char *mc_approval_mode_name(mc_approval_mode m);
/* "PENDING", "APPROVED", ...; "UNSPECIFIED" for anything else. Never NULL. */
const char *mc_approval_status_name(Common__V1__ActionStatus s);

typedef struct mc_approval_config {
    mc_approval_mode mode;
    /* A pending action expires at proposed_at_tick + expiry_ticks; 0 never. */
    uint64_t expiry_ticks;
    /* Bound on tracked actions. At each tick end, finished actions
     * (REJECTED, EXECUTED, FAILED, EXPIRED, SUPERSEDED) are forgotten oldest
     * first by (proposed_at_tick, id) while more than max_actions are
     * tracked; pending and approved ones are kept. Between tick ends the
     * table holds up to 2 * max_actions; a proposal beyond that is refused
     * with MC_ERR_LIMIT. Evicting only at tick ends keeps the outcome
     * independent of where a human decision falls between two inputs, which
     * the replay needs. 0 means the default. */
    uint32_t max_actions;
    /* Bound on remembered incidents; the oldest resolved (else the oldest)
     * is forgotten first. 0 means the default. */
    uint32_t max_incidents;
    /* The run, when the shell knows it before the first input; NULL or ""
     * to take it from the first stamped input. */
    const char *run_id;
} mc_approval_config;

/* Manual mode, the default expiry and bounds, no run id. */
void mc_approval_config_default(mc_approval_config *cfg);

/* An action as the core holds it; what queries return (a copy). */
typedef struct mc_approval_action {
    char id[MC_APPROVAL_ID_MAX];
    char incident_id[MC_APPROVAL_ID_MAX];
    Common__V1__ActionType action_type;
    char target_id[MC_APPROVAL_TARGET_MAX];
    Common__V1__ActionStatus status;
    char reason[MC_APPROVAL_TEXT_MAX];
    uint64_t proposed_at_tick;
    uint64_t expires_at_tick; /* 0: never */
    uint64_t updated_at_tick;
    char decided_by[MC_APPROVAL_ACTOR_MAX]; /* "" while pending */
    char status_reason[MC_APPROVAL_TEXT_MAX];
    char supersedes_action_id[MC_APPROVAL_ID_MAX];
    uint32_t escalation_level;
    /* The command sent for it; "" until approved. */
    char command_id[MC_APPROVAL_ID_MAX];
    /* Context from ops.incidents (empty/0 until the incident is seen). */
    Common__V1__IncidentSeverity incident_severity;
    char incident_title[MC_APPROVAL_TEXT_MAX];
    bool incident_resolved;
} mc_approval_action;

/* Fills msg (initialized here) from v for an API response or SSE. The
 * strings are borrowed from v, which must outlive msg; stamp is left NULL. */
void mc_approval_action_to_proto(const mc_approval_action *v, Ops__V1__Action *msg);

/* One status change, for the action_history table. */
typedef struct mc_approval_transition {
    char action_id[MC_APPROVAL_ID_MAX];
    Common__V1__ActionStatus from_status; /* UNSPECIFIED for a new proposal */
    Common__V1__ActionStatus to_status;
    /* A user, "policy:<mode>", "agent", "engine" or "system". */
    char actor[MC_APPROVAL_ACTOR_MAX];
    uint64_t tick; /* the tick it took effect at */
    char reason[MC_APPROVAL_TEXT_MAX];
} mc_approval_transition;

/* Fills e (initialized here) from t; strings are borrowed from t.
 * recorded_at_unix_ms is left 0 for the shell to set. */
void mc_approval_transition_to_proto(const mc_approval_transition *t,
                                     Ops__V1__ActionHistoryEntry *e);

typedef struct mc_approval_incident {
    char id[MC_APPROVAL_ID_MAX];
    Common__V1__IncidentSeverity severity;
    char title[MC_APPROVAL_TEXT_MAX];
    bool resolved;
    uint64_t opened_at_tick;
} mc_approval_incident;

/* The state. Caller-allocated; the fields are private to approval.c. */
typedef struct mc_approval {
    mc_approval_mode mode;
    uint64_t expiry_ticks;
    uint32_t max_actions;
    uint32_t capacity; /* 2 * max_actions slots */
    uint32_t max_incidents;

    char run_id[MC_APPROVAL_RUN_ID_MAX];
    uint64_t producer_seq;     /* the last one used; 0 before the first */
    bool closed_any;           /* a tick was closed */
    uint64_t last_closed_tick; /* valid when closed_any */
    bool seen_input;           /* a stamped input was accepted */
    uint64_t first_input_tick; /* the tick of the first one */
    uint32_t msgs_since_watermark;

    mc_approval_action *actions; /* capacity slots */
    uint32_t action_count;
    uint32_t *order; /* action_count slot numbers by (proposed_at_tick, id) */
    uint32_t *by_id; /* action_count slot numbers by id */
    uint32_t *free_slots;
    uint32_t free_count;

    mc_approval_incident *incidents; /* max_incidents of them, sorted by id */
    uint32_t incident_count;

    mc_approval_transition *transitions; /* of the last mutating call */
    uint32_t transition_count;
    uint32_t transition_cap;
} mc_approval;

/* Allocates everything the core will ever need. On failure nothing is left
 * to free. Returns MC_ERR_INVALID for a bad config (err says which field). */
mc_status mc_approval_init(mc_approval *a, const mc_approval_config *cfg, mc_error *err);
/* Frees the state. NULL-safe, and safe on a zeroed struct. */
void mc_approval_deinit(mc_approval *a);

/* A proposal from ops.actions. Must have a stamp, an id, status PENDING, a
 * valid action type and a target (else MC_ERR_INVALID). May emit a SYSTEM
 * supersession decision. MC_ERR_LIMIT when the table or the outbox is
 * full. */
mc_status mc_approval_on_action(mc_approval *a, const Ops__V1__Action *m, mc_outbox *out,
                                mc_error *err);

/* An incident from ops.incidents: remembered for context; emits nothing. */
mc_status mc_approval_on_incident(mc_approval *a, const Ops__V1__Incident *m, mc_outbox *out,
                                  mc_error *err);

/* An engine event from sim.events. Only COMMAND_APPLIED and COMMAND_REFUSED
 * matter; every other kind is ignored (MC_OK, no check at all). A command
 * event must name its command_id (MC_ERR_INVALID otherwise); the action is
 * found by action_id, or by the command id when action_id is empty, and is
 * changed only when it is APPROVED with that very command (anything else is
 * ignored). Emits nothing. */
mc_status mc_approval_on_event(mc_approval *a, const Sim__V1__SimulationEvent *m, mc_outbox *out,
                               mc_error *err);

/* Closes tick: policy approvals (by (proposed_at_tick, id)), then expiry,
 * then eviction of finished actions beyond max_actions, then the watermark. tick must be above the
 * last closed tick (MC_ERR_STATE otherwise). Gaps are allowed. */
mc_status mc_approval_on_tick_end(mc_approval *a, uint64_t tick, mc_outbox *out, mc_error *err);

/* A person approves (approve = true) or rejects action_id. actor is
 * required; a rejection requires a reason (MC_ERR_INVALID otherwise). The
 * decision takes effect at the open tick. On MC_OK and on MC_ERR_STATE,
 * *view (optional) receives the action after the call; on MC_ERR_STATE its
 * status is the one that refused the decision. */
mc_status mc_approval_on_human_decision(mc_approval *a, const char *action_id, bool approve,
                                        const char *actor, const char *reason, mc_outbox *out,
                                        mc_approval_action *view, mc_error *err);

/* Re-applies a recorded human decision from ops.decisions (replay). It must
 * be source HUMAN and of the core's run (MC_ERR_INVALID otherwise); it then
 * behaves exactly like mc_approval_on_human_decision with its action_id,
 * approved, actor and reason, so the core emits the same bytes it emitted
 * live. */
mc_status mc_approval_replay_decision(mc_approval *a, const Ops__V1__ApprovalDecision *d,
                                      mc_outbox *out, mc_approval_action *view, mc_error *err);

/* True when d is the recorded human decision to feed now (see "Replay"
 * above): source HUMAN, stamp.producer_seq == mc_approval_next_seq(a) and
 * its action is known. */
bool mc_approval_replay_due(const mc_approval *a, const Ops__V1__ApprovalDecision *d);

/* Queries. None changes the state. */

/* A copy of the action; MC_ERR_NOT_FOUND for an unknown id. */
mc_status mc_approval_get(const mc_approval *a, const char *action_id, mc_approval_action *out,
                          mc_error *err);

/* Actions whose status bit (1u << status) is in status_mask (0 for every
 * status), in (proposed_at_tick, id) order, starting after cursor (NULL or
 * "" for the start). Copies at most max into out and sets *n. next_cursor
 * (MC_APPROVAL_CURSOR_MAX bytes) receives the cursor to continue from, or ""
 * when there is nothing more. A malformed cursor is MC_ERR_INVALID. The
 * cursor is a position, not a snapshot: actions added or decided between
 * pages are seen or skipped by their place in the order. */
mc_status mc_approval_list(const mc_approval *a, uint32_t status_mask, const char *cursor,
                           mc_approval_action *out, size_t max, size_t *n, char *next_cursor,
                           mc_error *err);
/* mc_approval_list of the PENDING actions: oldest first. */
mc_status mc_approval_list_pending(const mc_approval *a, const char *cursor,
                                   mc_approval_action *out, size_t max, size_t *n,
                                   char *next_cursor, mc_error *err);

/* counts[s] = the number of tracked actions with status s. Returns the total. */
uint32_t mc_approval_counts(const mc_approval *a, uint32_t counts[MC_APPROVAL_STATUS_COUNT]);

/* True and *tick set when a tick has been closed. */
bool mc_approval_last_closed_tick(const mc_approval *a, uint64_t *tick);
/* The tick the core will close next: human decisions are stamped with it. */
uint64_t mc_approval_open_tick(const mc_approval *a);
/* The producer_seq the next emitted message will carry. */
uint64_t mc_approval_next_seq(const mc_approval *a);
/* The run id ("" while unknown). */
const char *mc_approval_run_id(const mc_approval *a);

/* The status changes made by the last mutating call (on_*, replay), in the
 * order they happened; valid until the next mutating call. A failed call
 * leaves an empty list. */
const mc_approval_transition *mc_approval_transitions(const mc_approval *a, size_t *n);

/* BLAKE2b-256 of the canonical state: configuration, run, sequence and tick
 * bookkeeping, every action in (proposed_at_tick, id) order and every
 * incident by id. The transition list (an output) is not part of it. */
void mc_approval_digest(const mc_approval *a, uint8_t out[MC_DIGEST_BYTES]);

#endif
