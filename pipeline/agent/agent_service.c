/* agent-service: the shell around the decider core.
 *
 * Two durable pull consumers:
 *  - "agent-ops" on OPS (all of ops.>): ops.incidents and ops.decisions go to
 *    the decider; ops.watermark.detector N asks to close tick N; other
 *    subjects are ignored (acked with the tick).
 *  - "agent-sim" on SIM (all of sim.>): sim.events go to the decider (it
 *    uses COMMAND_APPLIED / COMMAND_REFUSED, node status and replica
 *    changes); sim.watermark N says the engine's events of tick N are all
 *    in. sim.metrics are ignored. NATS 2.9 allows one filter subject per
 *    consumer, and events and the engine watermark must come through the
 *    same consumer for their order to mean anything, hence all of sim.>.
 *
 * Tick N is closed (mc_decider_on_tick_end) once both the detector's
 * watermark N and the engine's watermark N have been seen. Each side feeds
 * the decider in stream order and pauses at its watermark until the tick is
 * closed: the OPS side stops after the detector watermark N until the
 * engine watermark N is in (so every command event of tick N was fed), and
 * the SIM side stops after the engine watermark N until N is closed (so no
 * event of N+1 is fed before). The decider thus sees the same inputs per
 * tick whatever the timing of the two consumers, and a replay of the streams
 * yields the same proposals with the same ids and producer sequences.
 * The close is a job on a pool thread: publish the outbox (ops.actions,
 * ops.watermark.agent) and wait until JetStream stored it, insert the
 * actions (mc_store_action_insert, idempotent by action id), then ack the
 * OPS messages up to the detector watermark and the SIM messages up to the
 * engine watermark. Messages of ticks still open stay unacked, so a crash
 * redelivers them. If one side never delivers its watermark for a tick (a
 * stream that lost messages), the agent waits: it does not guess.
 *
 * Guardrail notes (mc_decider_notes: a proposal held back, and why) are
 * logged one per line and counted. The incidents table has no notes column
 * and the agent does not publish incidents, so the log is where they go.
 *
 * Restart: like the detector, the decider is rebuilt from what is
 * redelivered (the open tick); incidents acked before the restart are not
 * known to the new decider until they are updated. Action ids are derived
 * (run, incident, action type, ...), so a re-proposal after a restart is
 * the same row in the actions table (insert is idempotent); on ops.actions
 * it is de-duplicated only when its producer_seq matches the original (see
 * signal_service.c for the same limitation). */
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "bus/bus.h"
#include "common/v1/enums.pb-c.h"
#include "config/config.h"
#include "decider/decider.h"
#include "decider/rules.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "store/store.h"
#include "svc.h"

#define PROGRAM "agent-service"
#define RULES_FILE_MAX (1024 * 1024)
#define HELD_MAX 64
#define FETCH 256
#define PUBLISH_ATTEMPTS 8
#define MAX_SIM_WATERMARKS 256

typedef struct agent_config {
    mc_nats_config nats;
    mc_db_config db;
    mc_log_config log;
    mc_store_config store;
    mc_addr admin;
    const char *rules_file;
    uint64_t max_in_flight;
    uint64_t target_cooldown_ticks;
    uint64_t action_expiry_ticks;
    uint64_t ack_wait_ms;
    const char *stream_prefix;
    uint64_t stream_replicas;
    const char *subject_prefix;
} agent_config;

static const mc_config_var agent_vars[] = {
    MC_CONFIG_VARS_NATS(agent_config, nats),
    MC_CONFIG_VARS_DB(agent_config, db),
    MC_CONFIG_VARS_LOG(agent_config, log),
    MC_STORE_CONFIG_VARS(agent_config, store),
    {"ADMIN_ADDR", MC_CFG_ADDR, ":9102", "Admin HTTP address (/health, /ready, /metrics)",
     offsetof(agent_config, admin)},
    {"DECISION_RULES_FILE", MC_CFG_STRING, NULL,
     "Decision rules file that extends or replaces the built-in rules (pipeline/decider/RULES.md)",
     offsetof(agent_config, rules_file)},
    {"AGENT_MAX_IN_FLIGHT", MC_CFG_UINT, "5", "Actions proposed and not finished, at most",
     offsetof(agent_config, max_in_flight), .min = 1, .max = 100000},
    {"AGENT_TARGET_COOLDOWN_TICKS", MC_CFG_UINT, "5",
     "Ticks after an action on a target before another may be proposed for it",
     offsetof(agent_config, target_cooldown_ticks), .min = 0, .max = 1000000},
    {"AGENT_ACTION_EXPIRY_TICKS", MC_CFG_UINT, "30",
     "Ticks a proposal waits for approval before it expires (0: never)",
     offsetof(agent_config, action_expiry_ticks), .min = 0, .max = 1000000},
    {"CONSUMER_ACK_WAIT", MC_CFG_DURATION_MS, "10s",
     "Unacked messages are redelivered after this; consuming starts this long after start",
     offsetof(agent_config, ack_wait_ms)},
    {"BUS_STREAM_PREFIX", MC_CFG_STRING, NULL, "Prefix of the JetStream stream names (tests)",
     offsetof(agent_config, stream_prefix)},
    {"BUS_STREAM_REPLICAS", MC_CFG_UINT, "1",
     "Copies of the SIM and OPS streams in a JetStream cluster (1..5), when they are created",
     offsetof(agent_config, stream_replicas), .min = 1, .max = 5},
    {"BUS_SUBJECT_PREFIX", MC_CFG_STRING, NULL, "Prefix of every subject (tests)",
     offsetof(agent_config, subject_prefix)},
};

typedef struct agent agent;

typedef struct close_job {
    mc_svc_job job; /* first */
    agent *a;
    mc_outbox out;
    uint64_t tick;
    uint64_t ops_mark, sim_mark;
    uint64_t actions, inserted;
    mc_status st;
    mc_error err;
} close_job;

typedef struct pending_close {
    uint64_t tick;
    uint64_t ops_mark;
} pending_close;

typedef struct sim_watermark {
    uint64_t tick;
    uint64_t mark;
} sim_watermark;

typedef struct agent_metrics {
    mc_http_counter *proposed, *inserted, *held_back, *incidents, *decisions, *events, *ticks,
        *deadlettered, *decider_errors, *early_acks, *ack_failures;
    mc_http_gauge *in_flight;
} agent_metrics;

struct agent {
    agent_config cfg;
    uv_loop_t loop;
    mc_bus *bus;
    mc_store *store;
    mc_svc_lane lane;
    mc_svc_admin admin;
    agent_metrics m;
    const char *prefix;

    mc_bus_consumer *ops_c, *sim_c;
    mc_decider_rules rules;
    mc_decider_config dcfg;
    mc_decider dec;
    char run_id[MC_DECIDER_RUN_ID_MAX];
    mc_outbox scratch;
    uint64_t errors;

    mc_svc_held ops_held, sim_held;
    uint64_t ops_submitted, sim_submitted; /* marks handed to close jobs */
    uint64_t ops_cursor, sim_cursor; /* next message to feed, by number */
    pending_close pending;           /* the detector watermark waiting to close */
    bool has_pending;
    bool has_closed;
    uint64_t last_closed;
    bool sim_wait; /* the SIM side waits for sim_wait_tick to be closed */
    uint64_t sim_wait_tick;
    sim_watermark swm[MAX_SIM_WATERMARKS];
    size_t swm_head, swm_len;
    bool has_sim_wm;
    uint64_t sim_wm_tick;

    uv_signal_t sigint, sigterm;
    uv_timer_t finish_timer, start_timer;
    bool stopping, finished;
    atomic_bool stop_flag;
    int exit_code;
};

static bool log_sampled(uint64_t n)
{
    return n <= 10 || (n & (n - 1)) == 0;
}

static bool transient(mc_status st)
{
    return st == MC_ERR_UNAVAILABLE || st == MC_ERR_IO || st == MC_ERR_TIMEOUT;
}

static void begin_shutdown(agent *a, int code, const char *why);

/* ---- Closing a tick ---- */

static void close_work(mc_svc_job *job, mc_store *store)
{
    close_job *j = (close_job *)job;
    agent *a = j->a;
    j->st = mc_svc_publish_outbox(a->bus, a->prefix, &j->out, PUBLISH_ATTEMPTS, &a->stop_flag,
                                  &j->err);
    if (j->st != MC_OK)
        return;
    for (size_t i = 0; i < j->out.len; i++) {
        const mc_outbox_msg *m = &j->out.items[i];
        if (strcmp(m->subject, MC_DECIDER_SUBJECT_ACTIONS) != 0)
            continue;
        Ops__V1__Action *act = ops__v1__action__unpack(NULL, m->len, m->payload);
        if (act == NULL) {
            j->st = mc_error_set(&j->err, MC_ERR_INTERNAL,
                                 "the decider emitted an undecodable action");
            return;
        }
        bool inserted = false;
        uint32_t pause = 200;
        for (uint32_t attempt = 1;; attempt++) {
            j->st = mc_store_action_insert(store, act, &inserted, &j->err);
            if (j->st == MC_OK || !transient(j->st) ||
                (atomic_load(&a->stop_flag) && attempt >= 3))
                break;
            MC_LOG_WARN("action insert failed; retrying", MC_LF_STR("error", j->err.msg));
            uv_sleep(pause);
            if (pause < 5000)
                pause *= 2;
        }
        if (j->st == MC_OK) {
            MC_LOG_INFO(inserted ? "action proposed" : "action already stored (redelivery)",
                        MC_LF_STR("action_id", act->id), MC_LF_STR("incident_id", act->incident_id),
                        MC_LF_STR("target", act->target_id),
                        MC_LF_STR("type", mc_rulefile_action_type_name((int)act->action_type)),
                        MC_LF_UINT("tick", act->proposed_at_tick));
        }
        ops__v1__action__free_unpacked(act, NULL);
        if (j->st != MC_OK)
            return;
        j->actions++;
        if (inserted)
            j->inserted++;
    }
}

static void close_done(mc_svc_job *job)
{
    close_job *j = (close_job *)job;
    agent *a = j->a;
    if (j->st == MC_OK) {
        uint64_t failed = 0;
        mc_svc_held_ack_before(&a->ops_held, j->ops_mark, &failed);
        mc_svc_held_ack_before(&a->sim_held, j->sim_mark, &failed);
        mc_http_counter_add(a->m.ack_failures, failed);
        mc_http_counter_add(a->m.proposed, j->actions);
        mc_http_counter_add(a->m.inserted, j->inserted);
    } else {
        MC_LOG_ERROR("closing a tick failed; stopping so a restart re-drives it",
                     MC_LF_UINT("tick", j->tick), MC_LF_STR("error", j->err.msg));
        begin_shutdown(a, 1, "publishing or storing the decider's outputs failed");
    }
    mc_outbox_deinit(&j->out);
    free(j);
}

static mc_status decider_start(agent *a, mc_error *err)
{
    mc_status st = mc_decider_init(&a->dec, &a->dcfg, err);
    a->run_id[0] = '\0';
    return st;
}

static void ensure_run(agent *a, const Common__V1__Stamp *stamp)
{
    const char *run = stamp && stamp->run_id ? stamp->run_id : "";
    if (run[0] == '\0')
        return;
    if (a->run_id[0] != '\0' && strcmp(a->run_id, run) != 0) {
        MC_LOG_INFO("new run: the decider starts over", MC_LF_STR("previous_run", a->run_id),
                    MC_LF_STR("run", run));
        mc_decider_deinit(&a->dec);
        mc_error err = {0};
        if (decider_start(a, &err) != MC_OK) {
            MC_LOG_ERROR("decider restart failed", MC_LF_STR("error", err.msg));
            begin_shutdown(a, 1, "decider restart failed");
            return;
        }
        a->has_sim_wm = false;
        a->swm_len = 0;
        a->has_closed = false;
        a->sim_wait = false;
    }
    snprintf(a->run_id, sizeof a->run_id, "%s", run);
}

static void log_notes(agent *a)
{
    const mc_decider_note *notes = NULL;
    size_t n = mc_decider_notes(&a->dec, &notes);
    for (size_t i = 0; i < n; i++) {
        const mc_decider_note *x = &notes[i];
        MC_LOG_INFO("proposal held back", MC_LF_UINT("tick", x->tick),
                    MC_LF_STR("guardrail", x->guardrail), MC_LF_STR("incident_id", x->incident_id),
                    MC_LF_STR("target", x->target_id),
                    MC_LF_STR("type", mc_rulefile_action_type_name(x->action_type)),
                    MC_LF_STR("reason", x->reason));
    }
    mc_http_counter_add(a->m.held_back, n);
    mc_decider_notes_clear(&a->dec);
}

static void submit(agent *a, close_job *j)
{
    j->a = a;
    j->job.work = close_work;
    j->job.done = close_done;
    a->ops_submitted = j->ops_mark;
    a->sim_submitted = j->sim_mark;
    mc_svc_lane_submit(&a->lane, &j->job);
}

static void close_tick(agent *a, uint64_t tick, uint64_t ops_mark, uint64_t sim_mark)
{
    close_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        begin_shutdown(a, 1, "out of memory");
        return;
    }
    j->tick = tick;
    j->ops_mark = ops_mark;
    j->sim_mark = sim_mark;
    mc_outbox_init(&j->out, (size_t)a->dcfg.max_incidents * 2 + 1);
    mc_error err = {0};
    mc_status st = mc_decider_on_tick_end(&a->dec, tick, &j->out, &err);
    if (st != MC_OK) {
        MC_LOG_ERROR("decider tick end failed; the decider starts over",
                     MC_LF_UINT("tick", tick), MC_LF_STR("error", err.msg));
        mc_outbox_clear(&j->out);
        mc_decider_deinit(&a->dec);
        if (decider_start(a, &err) != MC_OK)
            begin_shutdown(a, 1, "decider restart failed");
    }
    log_notes(a);
    mc_http_counter_inc(a->m.ticks);
    mc_http_gauge_set(a->m.in_flight, (double)mc_decider_in_flight(&a->dec));
    submit(a, j);
}

/* Closes the pending tick once the engine's watermark for it was seen
 * (a redelivered detector watermark, for a tick already closed, goes at
 * once). Returns true when it closed one. */
static bool try_close(agent *a)
{
    if (!a->has_pending || a->stopping)
        return false;
    uint64_t tick = a->pending.tick;
    bool dup = a->has_closed && tick <= a->last_closed;
    if (!dup && !(a->has_sim_wm && a->sim_wm_tick >= tick))
        return false;
    uint64_t sim_mark = a->sim_submitted;
    while (a->swm_len > 0 && a->swm[a->swm_head].tick <= tick) {
        sim_mark = a->swm[a->swm_head].mark;
        a->swm_head = (a->swm_head + 1) % MAX_SIM_WATERMARKS;
        a->swm_len--;
    }
    a->has_pending = false;
    close_tick(a, tick, a->pending.ops_mark, sim_mark);
    if (!a->has_closed || tick > a->last_closed)
        a->last_closed = tick;
    a->has_closed = true;
    return true;
}

/* ---- Consumers ---- */

static void deadletter(agent *a, mc_bus_msg *m, const char *why)
{
    mc_error err = {0};
    if (mc_bus_msg_deadletter(m, why, &err) == MC_OK) {
        mc_http_counter_inc(a->m.deadlettered);
        return;
    }
    mc_error e2 = {0};
    mc_bus_msg_nak(m, 0, &e2);
    MC_LOG_ERROR("dead-lettering failed", MC_LF_STR("error", err.msg));
    begin_shutdown(a, 1, "dead-lettering failed");
}

static void decider_error(agent *a, const char *what, mc_bus_msg *m, const mc_error *err)
{
    a->errors++;
    mc_http_counter_inc(a->m.decider_errors);
    if (log_sampled(a->errors))
        MC_LOG_WARN("decider refused an input (sampled log)", MC_LF_STR("input", what),
                    MC_LF_UINT("seq", mc_bus_msg_stream_seq(m)), MC_LF_UINT("count", a->errors),
                    MC_LF_STR("error", err->msg));
}

/* One OPS message. Returns false when processing must pause after it (a
 * detector watermark whose tick cannot be closed yet). */
static bool ops_take(agent *a, mc_bus_msg *m, uint64_t number)
{
    const char *rest = mc_svc_subject_rest(mc_bus_msg_subject(m), a->prefix);
    if (rest == NULL)
        return true;
    const uint8_t *data = mc_bus_msg_data(m);
    size_t len = mc_bus_msg_len(m);
    mc_error err = {0};
    if (strcmp(rest, "ops.incidents") == 0) {
        Ops__V1__Incident *x = ops__v1__incident__unpack(NULL, len, data);
        if (x == NULL) {
            deadletter(a, m, "ops.incidents: not an ops.v1.Incident (protobuf decoding failed)");
            return true;
        }
        ensure_run(a, x->stamp);
        mc_http_counter_inc(a->m.incidents);
        if (mc_decider_on_incident(&a->dec, x, &a->scratch, &err) != MC_OK)
            decider_error(a, "incident", m, &err);
        mc_outbox_clear(&a->scratch);
        ops__v1__incident__free_unpacked(x, NULL);
    } else if (strcmp(rest, "ops.decisions") == 0) {
        Ops__V1__ApprovalDecision *x = ops__v1__approval_decision__unpack(NULL, len, data);
        if (x == NULL) {
            deadletter(a, m, "ops.decisions: not an ops.v1.ApprovalDecision (protobuf decoding "
                             "failed)");
            return true;
        }
        ensure_run(a, x->stamp);
        mc_http_counter_inc(a->m.decisions);
        if (mc_decider_on_decision(&a->dec, x, &a->scratch, &err) != MC_OK)
            decider_error(a, "decision", m, &err);
        mc_outbox_clear(&a->scratch);
        ops__v1__approval_decision__free_unpacked(x, NULL);
    } else if (strcmp(rest, "ops.watermark.detector") == 0) {
        Ops__V1__Watermark *x = ops__v1__watermark__unpack(NULL, len, data);
        if (x == NULL) {
            deadletter(a, m, "ops.watermark.detector: not an ops.v1.Watermark (protobuf "
                             "decoding failed)");
            return true;
        }
        bool detector = x->stage == COMMON__V1__STAGE__STAGE_DETECTOR;
        if (detector) {
            ensure_run(a, x->stamp);
            a->pending.tick = x->tick;
            a->pending.ops_mark = number + 1;
            a->has_pending = true;
        }
        ops__v1__watermark__free_unpacked(x, NULL);
        if (detector && !try_close(a))
            return false;
    }
    return true;
}

/* One SIM message. Returns false when processing must pause after it (the
 * engine's watermark of a tick not closed yet: later events belong to the
 * next tick and must not reach the decider before this one is closed). */
static bool sim_take(agent *a, mc_bus_msg *m, uint64_t number)
{
    const char *rest = mc_svc_subject_rest(mc_bus_msg_subject(m), a->prefix);
    if (rest == NULL)
        return true;
    const uint8_t *data = mc_bus_msg_data(m);
    size_t len = mc_bus_msg_len(m);
    if (strcmp(rest, "sim.events") == 0) {
        Sim__V1__SimulationEvent *x = sim__v1__simulation_event__unpack(NULL, len, data);
        if (x == NULL) {
            deadletter(a, m, "sim.events: not a sim.v1.SimulationEvent (protobuf decoding "
                             "failed)");
            return true;
        }
        ensure_run(a, x->stamp);
        mc_http_counter_inc(a->m.events);
        mc_error err = {0};
        if (mc_decider_on_event(&a->dec, x, &a->scratch, &err) != MC_OK)
            decider_error(a, "event", m, &err);
        mc_outbox_clear(&a->scratch);
        sim__v1__simulation_event__free_unpacked(x, NULL);
    } else if (strcmp(rest, "sim.watermark") == 0) {
        /* signal-service dead-letters an undecodable engine watermark. */
        Ops__V1__Watermark *x = ops__v1__watermark__unpack(NULL, len, data);
        if (x == NULL)
            return true;
        bool pause = false;
        if (x->stage == COMMON__V1__STAGE__STAGE_ENGINE) {
            if (!a->has_sim_wm || x->tick > a->sim_wm_tick)
                a->sim_wm_tick = x->tick;
            a->has_sim_wm = true;
            if (a->swm_len == MAX_SIM_WATERMARKS) {
                a->swm_head = (a->swm_head + 1) % MAX_SIM_WATERMARKS;
                a->swm_len--;
            }
            size_t slot = (a->swm_head + a->swm_len) % MAX_SIM_WATERMARKS;
            a->swm[slot].tick = x->tick;
            a->swm[slot].mark = number + 1;
            a->swm_len++;
            if (!(a->has_closed && a->last_closed >= x->tick)) {
                a->sim_wait = true;
                a->sim_wait_tick = x->tick;
                pause = true;
            }
        }
        ops__v1__watermark__free_unpacked(x, NULL);
        return !pause;
    }
    return true;
}

/* Feeds held messages to the decider in stream order on each side, closing
 * ticks as soon as both watermarks are in, until neither side can move. */
static void pump(agent *a)
{
    for (bool moved = true; moved && !a->stopping;) {
        moved = false;
        if (try_close(a))
            moved = true;
        if (a->sim_wait && a->has_closed && a->last_closed >= a->sim_wait_tick)
            a->sim_wait = false;
        while (!a->sim_wait && !a->stopping && a->sim_cursor < a->sim_held.pushed) {
            mc_bus_msg *m = mc_svc_held_msg(&a->sim_held, a->sim_cursor);
            uint64_t number = a->sim_cursor++;
            moved = true;
            if (m != NULL)
                sim_take(a, m, number);
        }
        if (try_close(a))
            moved = true;
        while (!a->has_pending && !a->stopping && a->ops_cursor < a->ops_held.pushed) {
            mc_bus_msg *m = mc_svc_held_msg(&a->ops_held, a->ops_cursor);
            uint64_t number = a->ops_cursor++;
            moved = true;
            if (m != NULL && !ops_take(a, m, number))
                break;
        }
    }
}

/* When a consumer holds as many batches as it may, nothing more arrives
 * until a close acks some: ack what was already fed to the decider early
 * rather than stall (those inputs are then not redelivered after a crash). */
static void relieve(agent *a, mc_svc_held *h, bool ops)
{
    uint64_t submitted = ops ? a->ops_submitted : a->sim_submitted;
    uint64_t cursor = ops ? a->ops_cursor : a->sim_cursor;
    if (a->stopping || h->batches < HELD_MAX || submitted >= cursor)
        return;
    MC_LOG_WARN("an open tick holds more messages than may stay unacked; acking them early (they "
                "will not be redelivered after a crash)",
                MC_LF_STR("consumer", ops ? "agent-ops" : "agent-sim"));
    mc_http_counter_inc(a->m.early_acks);
    close_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        begin_shutdown(a, 1, "out of memory");
        return;
    }
    mc_outbox_init(&j->out, 1);
    j->ops_mark = ops ? cursor : a->ops_submitted;
    j->sim_mark = ops ? a->sim_submitted : cursor;
    submit(a, j);
}

static void on_ops_batch(void *ctx, mc_bus_batch *b)
{
    agent *a = ctx;
    if (a->stopping) {
        mc_bus_batch_free(b);
        return;
    }
    if (mc_svc_held_push(&a->ops_held, b) == UINT64_MAX) {
        begin_shutdown(a, 1, "out of memory");
        return;
    }
    pump(a);
    relieve(a, &a->ops_held, true);
}

static void on_sim_batch(void *ctx, mc_bus_batch *b)
{
    agent *a = ctx;
    if (a->stopping) {
        mc_bus_batch_free(b);
        return;
    }
    if (mc_svc_held_push(&a->sim_held, b) == UINT64_MAX) {
        begin_shutdown(a, 1, "out of memory");
        return;
    }
    pump(a);
    relieve(a, &a->sim_held, false);
}

/* ---- Life cycle ---- */

static void finish_check(uv_timer_t *t);

static void try_finish(agent *a)
{
    if (!a->stopping || a->finished)
        return;
    if (!mc_svc_lane_idle(&a->lane) || a->admin.probing) {
        if (!uv_is_active((uv_handle_t *)&a->finish_timer))
            uv_timer_start(&a->finish_timer, finish_check, 20, 20);
        return;
    }
    a->finished = true;
    uv_timer_stop(&a->finish_timer);
    uv_close((uv_handle_t *)&a->finish_timer, NULL);
    uv_close((uv_handle_t *)&a->start_timer, NULL);
    mc_svc_held_release(&a->ops_held);
    mc_svc_held_release(&a->sim_held);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    mc_bus_free(a->bus);
    a->bus = NULL;
    MC_LOG_INFO("stopped", MC_LF_INT("exit_code", a->exit_code));
}

static void finish_check(uv_timer_t *t)
{
    try_finish(t->data);
}

static void lane_idle(void *ctx)
{
    try_finish(ctx);
}

static void begin_shutdown(agent *a, int code, const char *why)
{
    if (code > a->exit_code)
        a->exit_code = code;
    if (a->stopping)
        return;
    a->stopping = true;
    atomic_store(&a->stop_flag, true);
    MC_LOG_INFO("shutting down", MC_LF_STR("reason", why));
    mc_bus_consumer_close(a->ops_c);
    a->ops_c = NULL;
    mc_bus_consumer_close(a->sim_c);
    a->sim_c = NULL;
    mc_svc_admin_stop(&a->admin);
    try_finish(a);
}

/* Opens the consumers one ack wait after start, so that messages a
 * previous instance fetched and did not ack are redeliverable by then and
 * come first (the server hands out redeliveries before new messages): a
 * tick left open by a crash is then re-driven in stream order. */
static void open_consumers(uv_timer_t *t)
{
    agent *a = t->data;
    if (a->stopping)
        return;
    mc_error err = {0};
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_OPS;
    po.durable = "agent-ops";
    po.batch_size = FETCH;
    po.ack_wait_ms = a->cfg.ack_wait_ms;
    po.max_batches_inflight = HELD_MAX + 1;
    po.on_batch = on_ops_batch;
    po.ctx = a;
    if (mc_bus_pull_open(a->bus, &po, &a->ops_c, &err) != MC_OK) {
        MC_LOG_ERROR("ops consumer", MC_LF_STR("error", err.msg));
        begin_shutdown(a, 1, "ops consumer");
        return;
    }
    mc_bus_pull_options so = po;
    so.stream = MC_BUS_STREAM_SIM;
    so.durable = "agent-sim";
    so.on_batch = on_sim_batch;
    if (mc_bus_pull_open(a->bus, &so, &a->sim_c, &err) != MC_OK) {
        MC_LOG_ERROR("sim consumer", MC_LF_STR("error", err.msg));
        begin_shutdown(a, 1, "sim consumer");
        return;
    }

    MC_LOG_INFO("consuming", MC_LF_STR("ops_stream", mc_bus_stream_name(a->bus, MC_BUS_STREAM_OPS)));
}

static void on_signal(uv_signal_t *h, int signum)
{
    begin_shutdown(h->data, 0, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static mc_status register_metrics(agent *a, mc_error *err)
{
    mc_svc_admin *ad = &a->admin;
    agent_metrics *m = &a->m;
    mc_status st;
#define C(field, name, help)                                                                       \
    if ((st = mc_svc_counter(ad, name, help, &m->field, err)) != MC_OK)                            \
    return st
    C(proposed, "microcloud_agent_actions_proposed_total",
      "Actions proposed (published on ops.actions and stored)");
    C(inserted, "microcloud_agent_actions_inserted_total",
      "Proposed actions that were new rows in the actions table");
    C(held_back, "microcloud_agent_actions_held_back_total",
      "Proposals held back by a guardrail (cooldown, in-flight limit, ...)");
    C(incidents, "microcloud_agent_incidents_total", "Incident messages fed to the decider");
    C(decisions, "microcloud_agent_decisions_total", "Approval decisions fed to the decider");
    C(events, "microcloud_agent_events_total", "Simulation events fed to the decider");
    C(ticks, "microcloud_agent_ticks_closed_total", "Ticks closed");
    C(deadlettered, "microcloud_agent_deadlettered_total",
      "Undecodable messages copied to ops.deadletter");
    C(decider_errors, "microcloud_agent_decider_errors_total", "Inputs the decider refused");
    C(early_acks, "microcloud_agent_early_acks_total",
      "Times an open tick held too many messages and they were acked early");
    C(ack_failures, "microcloud_agent_ack_failures_total", "Acks that failed (redelivered later)");
#undef C
    return mc_svc_gauge(ad, "microcloud_agent_actions_in_flight",
                        "Actions proposed and not finished, as of the last tick", &m->in_flight,
                        err);
}

static void die(int code, const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    MC_LOG_ERROR("start failed", MC_LF_STR("what", what), MC_LF_STR("error", msg));
    exit(code);
}

static void load_rules(agent *a)
{
    mc_error err = {0};
    char *buf = NULL;
    size_t len = 0;
    if (a->cfg.rules_file != NULL &&
        mc_svc_read_file(a->cfg.rules_file, RULES_FILE_MAX, &buf, &len, &err) != MC_OK)
        die(2, "DECISION_RULES_FILE", err.msg);
    mc_status st = mc_decider_rules_load(buf, len, a->cfg.rules_file, &a->rules, &err);
    free(buf);
    if (st != MC_OK)
        die(2, "DECISION_RULES_FILE", err.msg);
    MC_LOG_INFO("decision rules loaded", MC_LF_UINT("rules", a->rules.count),
                MC_LF_STR("file", a->cfg.rules_file ? a->cfg.rules_file : "(built-in)"));
}

int main(int argc, char **argv)
{
    static agent A;
    agent *a = &A;
    mc_config_load_or_exit(argc, argv, PROGRAM,
                           "Turns incidents (ops.incidents) into remediation proposals "
                           "(ops.actions) under guardrails.",
                           agent_vars, sizeof agent_vars / sizeof agent_vars[0], &a->cfg);
    mc_log_init(PROGRAM, a->cfg.log.level, a->cfg.log.format, stderr);
    signal(SIGPIPE, SIG_IGN);
    atomic_init(&a->stop_flag, false);
    a->prefix = a->cfg.subject_prefix ? a->cfg.subject_prefix : "";

    load_rules(a);
    mc_decider_config_default(&a->dcfg);
    a->dcfg.rules = &a->rules;
    a->dcfg.max_in_flight = (uint32_t)a->cfg.max_in_flight;
    a->dcfg.target_cooldown_ticks = (uint32_t)a->cfg.target_cooldown_ticks;
    a->dcfg.action_expiry_ticks = (uint32_t)a->cfg.action_expiry_ticks;
    if (a->dcfg.max_incidents == 0)
        a->dcfg.max_incidents = 4096;
    mc_error err = {0};
    if (decider_start(a, &err) != MC_OK)
        die(2, "decider configuration", err.msg);
    mc_outbox_init(&a->scratch, 16);

    if (mc_store_open_config(&a->cfg.db, &a->cfg.store, &a->store, &err) != MC_OK)
        die(1, "PostgreSQL", err.msg);
    if (mc_store_migrate(a->store, NULL, &err) != MC_OK)
        die(1, "migrations", err.msg);

    uv_loop_init(&a->loop);
    mc_bus_options bo = {0};
    bo.name = PROGRAM;
    bo.stream_prefix = a->cfg.stream_prefix;
    bo.replicas = (uint32_t)a->cfg.stream_replicas;
    bo.subject_prefix = a->cfg.subject_prefix;
    bo.max_pending_acks = 65536;
    if (mc_bus_open(&a->loop, &a->cfg.nats, &bo, &a->bus, &err) != MC_OK)
        die(1, "NATS", err.msg);
    if (mc_svc_admin_start(&a->admin, &a->loop, &a->cfg.admin, a->bus, &a->cfg.db, 2000, &err) !=
            MC_OK ||
        register_metrics(a, &err) != MC_OK)
        die(1, "admin port", err.msg);

    mc_svc_lane_init(&a->lane, &a->loop, a->store);
    a->lane.on_idle = lane_idle;
    a->lane.idle_ctx = a;
    uv_timer_init(&a->loop, &a->finish_timer);
    a->finish_timer.data = a;

    uv_timer_init(&a->loop, &a->start_timer);
    a->start_timer.data = a;
    uv_timer_start(&a->start_timer, open_consumers, a->cfg.ack_wait_ms + 500, 0);

    uv_signal_init(&a->loop, &a->sigint);
    uv_signal_init(&a->loop, &a->sigterm);
    a->sigint.data = a->sigterm.data = a;
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);

    MC_LOG_INFO("started", MC_LF_STR("build", mc_build_id()),
                MC_LF_STR("admin_host", a->cfg.admin.host),
                MC_LF_UINT("admin_port", a->cfg.admin.port),
                MC_LF_UINT("max_in_flight", a->dcfg.max_in_flight));

    uv_run(&a->loop, UV_RUN_DEFAULT);

    mc_svc_admin_free(&a->admin);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&a->loop) != 0)
        MC_LOG_WARN("libuv loop closed with handles still open", MC_LF_STR("loop", "main"));
    mc_outbox_deinit(&a->scratch);
    mc_decider_deinit(&a->dec);
    mc_store_free(a->store);
    mc_bus_library_shutdown(2000);
    return a->exit_code;
}
