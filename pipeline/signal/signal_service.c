/* signal-service: the shell around the detector core.
 *
 * Two durable pull consumers on the SIM stream, each with its own ack rule:
 *
 *  Ingest ("signal-ingest", filter sim.metrics). Every sample goes to the
 *  metrics table with binary COPY, in units of about INGEST_BATCH_ROWS rows
 *  or INGEST_MAX_DELAY, whichever comes first. A unit is committed on a pool
 *  thread (libpq blocks) together with the highest stream sequence it holds
 *  (mc_store_metrics_commit), and its messages are acked only after that
 *  commit. A crash before the commit redelivers the messages; a crash after
 *  the commit but before the acks redelivers them too, and the commit skips
 *  their rows because their sequences are at or below the stored position.
 *  So every sample is stored exactly once. Units commit one at a time and in
 *  order; after a failed commit no later unit commits (its position would
 *  cover the failed rows), and the service stops so a restart re-drives.
 *  Messages the server redelivers while the process runs (ack wait expired)
 *  carry sequences already taken: they ride along with the current unit and
 *  are acked with it, without rows. Messages a previous instance fetched and
 *  never acked must come back before anything newer is committed (the
 *  stored position would skip them), but the server would redeliver them
 *  only after their ack wait, behind newer ones: so at start the durable is
 *  placed at the committed position + 1 (mc_bus_pull_options.start_seq,
 *  recreated when it is elsewhere), which delivers them first, at once.
 *
 *  Detection ("signal-detect", all of sim.>). Snapshots go to the detector as
 *  they arrive, never waiting for the database. On the engine watermark for
 *  tick N the tick is closed (mc_detector_on_tick_end); a job on a second
 *  pool lane publishes the outbox (ops.incidents, ops.watermark.detector)
 *  and waits until JetStream stored it, upserts the incidents, and then the
 *  messages up to and including that watermark are acked. The messages of
 *  the tick still open stay unacked.
 *
 * Restart of the detector. The detector is a pure core whose windows live in
 * memory. After a restart the detection consumer resumes after the last
 * acked watermark: the snapshots of the tick that was open are redelivered,
 * and the windows warm up again from there (a rule with a 30 s window needs
 * 30 ticks before it can fire again). Known limitations of this approach:
 *  - an incident open before the restart is unknown to the new detector: it
 *    is neither updated nor resolved, and if the condition still holds after
 *    the warm-up a new incident (another id, the new opening tick) is opened;
 *  - producer_seq starts again at 1, so the Nats-Msg-Id of a re-published
 *    message matches the original only when the tick is re-closed with the
 *    same outputs at the same sequence numbers, which holds only when the
 *    restart happened before the first output of the run. A tick closed and
 *    published but not yet acked at the crash is closed again: JetStream then
 *    stores its (identical or not) outputs a second time under new ids,
 *    while the incidents table stays right (upsert by id).
 * Re-feeding the last window of snapshots from the stream at start would
 * remove the warm-up; it is not done here.
 */
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
#include "detector/detector.h"
#include "detector/rules.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "store/store.h"
#include "svc.h"

#define PROGRAM "signal-service"
#define RULES_FILE_MAX (1024 * 1024)
/* Batches the detection consumer may hold unacked while a tick is open. A
 * tick with more messages than this (times the fetch size) cannot be held
 * whole: what is held is then acked early, with a warning, so the stream
 * keeps moving (those messages are not redelivered after a crash). */
#define DETECT_HELD_MAX 64
#define DETECT_FETCH 256
#define INGEST_FETCH 256
#define INGEST_INFLIGHT 16
#define PUBLISH_ATTEMPTS 8

typedef struct sig_config {
    mc_nats_config nats;
    mc_db_config db;
    mc_log_config log;
    mc_store_config store;
    mc_addr admin;
    uint64_t batch_rows;
    uint64_t max_delay_ms;
    const char *rules_file;
    uint64_t tick_ms;
    uint64_t max_targets;
    uint64_t ack_wait_ms;
    const char *stream_prefix;
    uint64_t stream_replicas;
    const char *subject_prefix;
} sig_config;

static const mc_config_var sig_vars[] = {
    MC_CONFIG_VARS_NATS(sig_config, nats),
    MC_CONFIG_VARS_DB(sig_config, db),
    MC_CONFIG_VARS_LOG(sig_config, log),
    MC_STORE_CONFIG_VARS(sig_config, store),
    {"ADMIN_ADDR", MC_CFG_ADDR, ":9101", "Admin HTTP address (/health, /ready, /metrics)",
     offsetof(sig_config, admin)},
    {"INGEST_BATCH_ROWS", MC_CFG_UINT, "5000", "Metric rows per COPY transaction",
     offsetof(sig_config, batch_rows), .min = 1, .max = 1000000},
    {"INGEST_MAX_DELAY", MC_CFG_DURATION_MS, "200ms",
     "Longest time a row waits before its batch is committed", offsetof(sig_config, max_delay_ms)},
    {"RULES_FILE", MC_CFG_STRING, NULL,
     "Detection rules file that extends or replaces the built-in rules (pipeline/detector/RULES.md)",
     offsetof(sig_config, rules_file)},
    {"TICK_DURATION_MS", MC_CFG_UINT, "1000", "Simulated duration of a tick (rule windows)",
     offsetof(sig_config, tick_ms), .min = 1, .max = 3600000},
    {"DETECTOR_MAX_TARGETS", MC_CFG_UINT, "20000", "Most services and nodes tracked",
     offsetof(sig_config, max_targets), .min = 1, .max = 1000000},
    {"CONSUMER_ACK_WAIT", MC_CFG_DURATION_MS, "10s",
     "Unacked messages are redelivered after this; detection starts this long after start (ingest at once)",
     offsetof(sig_config, ack_wait_ms)},
    {"BUS_STREAM_PREFIX", MC_CFG_STRING, NULL, "Prefix of the JetStream stream names (tests)",
     offsetof(sig_config, stream_prefix)},
    {"BUS_STREAM_REPLICAS", MC_CFG_UINT, "1",
     "Copies of the SIM and OPS streams in a JetStream cluster (1..5), when they are created",
     offsetof(sig_config, stream_replicas), .min = 1, .max = 5},
    {"BUS_SUBJECT_PREFIX", MC_CFG_STRING, NULL, "Prefix of every subject (tests)",
     offsetof(sig_config, subject_prefix)},
};

typedef struct sig sig;

typedef struct ingest_unit {
    mc_svc_job job; /* first */
    sig *s;
    mc_store_metrics_batch *rows;
    mc_svc_held held;
    uint64_t last_seq;
    mc_status st;
    mc_error err;
    mc_store_commit_result res;
} ingest_unit;

typedef struct close_job {
    mc_svc_job job; /* first */
    sig *s;
    mc_outbox out;
    uint64_t tick;
    uint64_t mark; /* ack detection messages numbered below this */
    uint64_t incidents;
    mc_status st;
    mc_error err;
} close_job;

typedef struct sig_metrics {
    mc_http_counter *samples, *batches, *snapshots, *ticks, *incidents_pub, *deadlettered,
        *redelivered, *detector_errors, *early_acks, *ack_failures;
    mc_http_gauge *lag, *committed, *incidents_open;
} sig_metrics;

struct sig {
    sig_config cfg;
    uv_loop_t loop;
    mc_bus *bus;
    mc_store *ingest_store, *detect_store;
    mc_svc_lane ingest_lane, detect_lane;
    mc_svc_admin admin;
    sig_metrics m;
    const char *prefix; /* subject prefix, "" when none */
    char sim_metrics_subject[256];
    char position_name[256]; /* consumer_positions key */
    char sim_stream[128];

    /* Ingest (loop thread). */
    mc_bus_consumer *ingest_c;
    ingest_unit *filling;
    uv_timer_t delay_timer;
    bool timer_armed;
    uint64_t max_seen;  /* highest stream sequence taken */
    uint64_t committed; /* highest position committed */
    atomic_bool ingest_failed;

    /* Detection (loop thread). */
    mc_bus_consumer *detect_c;
    mc_detector_rules rules;
    mc_detector det;
    bool det_ready;
    char run_id[MC_DETECTOR_RUN_ID_MAX];
    mc_svc_held det_held;
    uint64_t det_submitted_mark;
    uint64_t det_errors;
    mc_outbox scratch;

    /* Life cycle. */
    uv_signal_t sigint, sigterm;
    uv_timer_t finish_timer, start_timer, detect_timer;
    bool stopping, finished;
    atomic_bool stop_flag;
    int exit_code;
};

static bool log_sampled(uint64_t n)
{
    return n <= 10 || (n & (n - 1)) == 0;
}

static void begin_shutdown(sig *s, int code, const char *why);

/* ---- Ingest ---- */

static void sleep_ms(uint64_t ms)
{
    uv_sleep((unsigned)ms);
}

static bool transient(mc_status st)
{
    return st == MC_ERR_UNAVAILABLE || st == MC_ERR_IO || st == MC_ERR_TIMEOUT;
}

static void unit_work(mc_svc_job *job, mc_store *store)
{
    ingest_unit *u = (ingest_unit *)job;
    sig *s = u->s;
    u->st = MC_OK;
    if (atomic_load(&s->ingest_failed)) {
        u->st = mc_error_set(&u->err, MC_ERR_STATE, "an earlier batch failed to commit");
        return;
    }
    if (u->last_seq == 0)
        return; /* only redeliveries: nothing new to store */
    uint64_t pause = 200;
    for (uint32_t attempt = 1;; attempt++) {
        u->st = mc_store_metrics_commit(store, u->rows, s->position_name, s->sim_stream,
                                        u->last_seq, &u->res, &u->err);
        if (u->st == MC_OK || !transient(u->st))
            return;
        if (atomic_load(&s->stop_flag) && attempt >= 3)
            return;
        MC_LOG_WARN("metrics commit failed; retrying", MC_LF_UINT("attempt", attempt),
                    MC_LF_UINT("rows", mc_store_metrics_batch_rows(u->rows)),
                    MC_LF_STR("error", u->err.msg));
        sleep_ms(pause);
        if (pause < 5000)
            pause *= 2;
    }
}

static void unit_free(ingest_unit *u)
{
    if (u == NULL)
        return;
    mc_svc_held_release(&u->held);
    mc_store_metrics_batch_free(u->rows);
    free(u);
}

static void unit_done(mc_svc_job *job)
{
    ingest_unit *u = (ingest_unit *)job;
    sig *s = u->s;
    if (u->st == MC_OK) {
        uint64_t failed = 0;
        mc_svc_held_ack_before(&u->held, u->held.pushed, &failed);
        mc_http_counter_add(s->m.ack_failures, failed);
        if (u->last_seq != 0) {
            mc_http_counter_add(s->m.samples, u->res.rows_written);
            mc_http_counter_inc(s->m.batches);
            if (u->res.position > s->committed)
                s->committed = u->res.position;
            if (u->res.rows_skipped > 0)
                MC_LOG_INFO("skipped rows already committed (redelivery)",
                            MC_LF_UINT("rows", u->res.rows_skipped),
                            MC_LF_UINT("position", u->res.position));
        }
        mc_http_gauge_set(s->m.committed, (double)s->committed);
        mc_http_gauge_set(s->m.lag,
                          (double)(s->max_seen > s->committed ? s->max_seen - s->committed : 0));
    } else {
        /* Unacked: redelivered after the restart this shutdown leads to. */
        atomic_store(&s->ingest_failed, true);
        MC_LOG_ERROR("metrics commit failed; stopping so a restart re-drives the batch",
                     MC_LF_STR("error", u->err.msg), MC_LF_UINT("last_seq", u->last_seq));
        begin_shutdown(s, 1, "metrics commit failed");
    }
    unit_free(u);
}

static ingest_unit *unit_new(sig *s)
{
    ingest_unit *u = calloc(1, sizeof *u);
    if (u == NULL)
        return NULL;
    mc_error err = {0};
    /* A hard bound; the unit is sealed long before at INGEST_BATCH_ROWS, and
     * what it can hold is bounded by the consumer's batches in flight. */
    if (mc_store_metrics_batch_new(10000000, &u->rows, &err) != MC_OK) {
        free(u);
        return NULL;
    }
    u->s = s;
    u->job.work = unit_work;
    u->job.done = unit_done;
    return u;
}

static void seal(sig *s)
{
    ingest_unit *u = s->filling;
    s->filling = NULL;
    if (s->timer_armed) {
        uv_timer_stop(&s->delay_timer);
        s->timer_armed = false;
    }
    if (u == NULL)
        return;
    if (u->held.batches == 0 && u->last_seq == 0) {
        unit_free(u);
        return;
    }
    mc_svc_lane_submit(&s->ingest_lane, &u->job);
}

static void delay_fired(uv_timer_t *t)
{
    sig *s = t->data;
    s->timer_armed = false;
    seal(s);
}

static bool ensure_unit(sig *s)
{
    if (s->filling == NULL)
        s->filling = unit_new(s);
    return s->filling != NULL;
}

/* Dead-letters m; when even that fails the service stops (the message is
 * nak'ed so the batch's ack cannot swallow it, and a restart retries). */
static void deadletter(sig *s, mc_bus_msg *m, const char *why)
{
    mc_error err = {0};
    if (mc_bus_msg_deadletter(m, why, &err) == MC_OK) {
        mc_http_counter_inc(s->m.deadlettered);
        return;
    }
    mc_error e2 = {0};
    mc_bus_msg_nak(m, 0, &e2);
    MC_LOG_ERROR("dead-lettering failed", MC_LF_STR("error", err.msg));
    begin_shutdown(s, 1, "dead-lettering failed");
}

static void on_ingest_batch(void *ctx, mc_bus_batch *b)
{
    sig *s = ctx;
    if (s->stopping) {
        mc_bus_batch_free(b); /* unacked: redelivered after the restart */
        return;
    }
    if (!ensure_unit(s)) {
        /* Dropping the batch and going on would let a later unit's
         * position cover these messages: stop instead. */
        mc_bus_batch_free(b);
        begin_shutdown(s, 1, "out of memory");
        return;
    }
    size_t n = mc_bus_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        uint64_t seq = mc_bus_msg_stream_seq(m);
        if (seq <= s->max_seen) {
            /* Taken already (redelivered while we run): acked with this
             * unit, which commits after the one that holds its rows. */
            mc_http_counter_inc(s->m.redelivered);
            continue;
        }
        s->max_seen = seq;
        Sim__V1__MetricSnapshot *snap =
            sim__v1__metric_snapshot__unpack(NULL, mc_bus_msg_len(m), mc_bus_msg_data(m));
        if (snap == NULL) {
            deadletter(s, m, "sim.metrics: not a sim.v1.MetricSnapshot (protobuf decoding failed)");
            if (ensure_unit(s))
                s->filling->last_seq = seq;
            continue;
        }
        if (!ensure_unit(s)) {
            sim__v1__metric_snapshot__free_unpacked(snap, NULL);
            continue;
        }
        mc_error err = {0};
        mc_status st = mc_store_metrics_batch_append_snapshot(s->filling->rows, snap, seq, &err);
        if (st == MC_ERR_LIMIT) {
            seal(s);
            if (ensure_unit(s))
                st = mc_store_metrics_batch_append_snapshot(s->filling->rows, snap, seq, &err);
        }
        sim__v1__metric_snapshot__free_unpacked(snap, NULL);
        if (st != MC_OK) {
            char why[600];
            snprintf(why, sizeof why, "sim.metrics: snapshot cannot be stored: %s", err.msg);
            deadletter(s, m, why);
        }
        if (ensure_unit(s))
            s->filling->last_seq = seq;
    }
    if (!ensure_unit(s)) {
        mc_bus_batch_free(b);
        begin_shutdown(s, 1, "out of memory");
        return;
    }
    mc_svc_held_push(&s->filling->held, b);
    mc_http_gauge_set(s->m.lag,
                      (double)(s->max_seen > s->committed ? s->max_seen - s->committed : 0));
    if (mc_store_metrics_batch_rows(s->filling->rows) >= s->cfg.batch_rows) {
        seal(s);
    } else if (!s->timer_armed) {
        s->timer_armed = true;
        uv_timer_start(&s->delay_timer, delay_fired, s->cfg.max_delay_ms, 0);
    }
}

/* ---- Detection ---- */

static void close_work(mc_svc_job *job, mc_store *store)
{
    close_job *j = (close_job *)job;
    sig *s = j->s;
    j->st = mc_svc_publish_outbox(s->bus, s->prefix, &j->out, PUBLISH_ATTEMPTS, &s->stop_flag,
                                  &j->err);
    if (j->st != MC_OK)
        return;
    for (size_t i = 0; i < j->out.len; i++) {
        const mc_outbox_msg *m = &j->out.items[i];
        if (strcmp(m->subject, MC_DETECTOR_SUBJECT_INCIDENTS) != 0)
            continue;
        Ops__V1__Incident *inc = ops__v1__incident__unpack(NULL, m->len, m->payload);
        if (inc == NULL) {
            j->st = mc_error_set(&j->err, MC_ERR_INTERNAL, "the detector emitted an undecodable "
                                                           "incident");
            return;
        }
        uint64_t pause = 200;
        for (uint32_t attempt = 1;; attempt++) {
            j->st = mc_store_incident_upsert(store, inc, &j->err);
            if (j->st == MC_OK || !transient(j->st) ||
                (atomic_load(&s->stop_flag) && attempt >= 3))
                break;
            MC_LOG_WARN("incident upsert failed; retrying", MC_LF_STR("error", j->err.msg));
            sleep_ms(pause);
            if (pause < 5000)
                pause *= 2;
        }
        ops__v1__incident__free_unpacked(inc, NULL);
        if (j->st != MC_OK)
            return;
        j->incidents++;
    }
}

static void close_done(mc_svc_job *job)
{
    close_job *j = (close_job *)job;
    sig *s = j->s;
    if (j->st == MC_OK) {
        uint64_t failed = 0;
        mc_svc_held_ack_before(&s->det_held, j->mark, &failed);
        mc_http_counter_add(s->m.ack_failures, failed);
        mc_http_counter_add(s->m.incidents_pub, j->incidents);
    } else {
        MC_LOG_ERROR("closing a tick failed; stopping so a restart re-drives it",
                     MC_LF_UINT("tick", j->tick), MC_LF_STR("error", j->err.msg));
        begin_shutdown(s, 1, "publishing or storing the detector's outputs failed");
    }
    mc_outbox_deinit(&j->out);
    free(j);
}

static mc_status detector_start(sig *s, mc_error *err)
{
    mc_detector_config dc = {0};
    dc.tick_duration_ms = (uint32_t)s->cfg.tick_ms;
    dc.rules = &s->rules;
    dc.max_targets = (uint32_t)s->cfg.max_targets;
    mc_status st = mc_detector_init(&s->det, &dc, err);
    s->det_ready = st == MC_OK;
    s->run_id[0] = '\0';
    return st;
}

/* A message of another run than the detector's means the engine started a
 * new run: the detector starts over for it. */
static void ensure_run(sig *s, const Common__V1__Stamp *stamp)
{
    const char *run = stamp && stamp->run_id ? stamp->run_id : "";
    if (run[0] == '\0')
        return;
    if (s->run_id[0] != '\0' && strcmp(s->run_id, run) != 0) {
        MC_LOG_INFO("new run: the detector starts over", MC_LF_STR("previous_run", s->run_id),
                    MC_LF_STR("run", run));
        mc_detector_deinit(&s->det);
        mc_error err = {0};
        if (detector_start(s, &err) != MC_OK) {
            MC_LOG_ERROR("detector restart failed", MC_LF_STR("error", err.msg));
            begin_shutdown(s, 1, "detector restart failed");
            return;
        }
    }
    snprintf(s->run_id, sizeof s->run_id, "%s", run);
}

static void submit_close(sig *s, close_job *j, uint64_t mark)
{
    j->s = s;
    j->mark = mark;
    j->job.work = close_work;
    j->job.done = close_done;
    s->det_submitted_mark = mark;
    mc_svc_lane_submit(&s->detect_lane, &j->job);
}

static void close_tick(sig *s, uint64_t tick, uint64_t mark)
{
    close_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        begin_shutdown(s, 1, "out of memory");
        return;
    }
    j->tick = tick;
    mc_outbox_init(&j->out, (size_t)s->cfg.max_targets * MC_DETECTOR_RULES_MAX + 1);
    mc_error err = {0};
    mc_status st = mc_detector_on_tick_end(&s->det, tick, &j->out, &err);
    if (st != MC_OK) {
        MC_LOG_ERROR("detector tick end failed; the detector starts over",
                     MC_LF_UINT("tick", tick), MC_LF_STR("error", err.msg));
        mc_outbox_clear(&j->out);
        mc_detector_deinit(&s->det);
        if (detector_start(s, &err) != MC_OK) {
            begin_shutdown(s, 1, "detector restart failed");
        }
    }
    mc_http_counter_inc(s->m.ticks);
    mc_http_gauge_set(s->m.incidents_open, (double)mc_detector_open_incidents(&s->det));
    submit_close(s, j, mark);
}

static void on_detect_batch(void *ctx, mc_bus_batch *b)
{
    sig *s = ctx;
    if (s->stopping) {
        mc_bus_batch_free(b);
        return;
    }
    uint64_t base = mc_svc_held_push(&s->det_held, b);
    if (base == UINT64_MAX)
        return;
    size_t n = mc_bus_batch_count(b);
    for (size_t i = 0; i < n && !s->stopping; i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        const char *rest = mc_svc_subject_rest(mc_bus_msg_subject(m), s->prefix);
        if (rest == NULL)
            continue;
        if (strcmp(rest, "sim.metrics") == 0) {
            Sim__V1__MetricSnapshot *snap =
                sim__v1__metric_snapshot__unpack(NULL, mc_bus_msg_len(m), mc_bus_msg_data(m));
            if (snap == NULL)
                continue; /* the ingest consumer dead-letters it */
            ensure_run(s, snap->stamp);
            mc_error err = {0};
            mc_status st = mc_detector_on_snapshot(&s->det, snap, &s->scratch, &err);
            mc_outbox_clear(&s->scratch);
            sim__v1__metric_snapshot__free_unpacked(snap, NULL);
            mc_http_counter_inc(s->m.snapshots);
            if (st != MC_OK) {
                s->det_errors++;
                mc_http_counter_inc(s->m.detector_errors);
                if (log_sampled(s->det_errors))
                    MC_LOG_WARN("detector refused a snapshot (sampled log)",
                                MC_LF_UINT("seq", mc_bus_msg_stream_seq(m)),
                                MC_LF_UINT("count", s->det_errors), MC_LF_STR("error", err.msg));
            }
        } else if (strcmp(rest, "sim.watermark") == 0) {
            Ops__V1__Watermark *wm =
                ops__v1__watermark__unpack(NULL, mc_bus_msg_len(m), mc_bus_msg_data(m));
            if (wm == NULL) {
                deadletter(s, m, "sim.watermark: not an ops.v1.Watermark (protobuf decoding "
                                 "failed)");
                continue;
            }
            if (wm->stage == COMMON__V1__STAGE__STAGE_ENGINE) {
                ensure_run(s, wm->stamp);
                close_tick(s, wm->tick, base + i + 1);
            }
            ops__v1__watermark__free_unpacked(wm, NULL);
        }
    }
    if (!s->stopping && s->det_held.batches >= DETECT_HELD_MAX &&
        s->det_submitted_mark < s->det_held.pushed) {
        MC_LOG_WARN("a tick holds more messages than the detection consumer may keep unacked; "
                    "acking them early (they will not be redelivered after a crash)",
                    MC_LF_UINT("batches", s->det_held.batches));
        mc_http_counter_inc(s->m.early_acks);
        close_job *j = calloc(1, sizeof *j);
        if (j == NULL) {
            begin_shutdown(s, 1, "out of memory");
            return;
        }
        mc_outbox_init(&j->out, 1);
        submit_close(s, j, s->det_held.pushed);
    }
}

/* ---- Life cycle ---- */

static void finish_check(uv_timer_t *t);

static void try_finish(sig *s)
{
    if (!s->stopping || s->finished)
        return;
    if (!mc_svc_lane_idle(&s->ingest_lane) || !mc_svc_lane_idle(&s->detect_lane) ||
        s->admin.probing) {
        if (!uv_is_active((uv_handle_t *)&s->finish_timer))
            uv_timer_start(&s->finish_timer, finish_check, 20, 20);
        return;
    }
    s->finished = true;
    uv_timer_stop(&s->finish_timer);
    uv_close((uv_handle_t *)&s->finish_timer, NULL);
    uv_close((uv_handle_t *)&s->start_timer, NULL);
    uv_close((uv_handle_t *)&s->detect_timer, NULL);
    /* The open tick's messages stay unacked: redelivered after a restart. */
    mc_svc_held_release(&s->det_held);
    uv_close((uv_handle_t *)&s->delay_timer, NULL);
    uv_close((uv_handle_t *)&s->sigint, NULL);
    uv_close((uv_handle_t *)&s->sigterm, NULL);
    mc_bus_free(s->bus);
    s->bus = NULL;
    MC_LOG_INFO("stopped", MC_LF_UINT("committed_seq", s->committed),
                MC_LF_INT("exit_code", s->exit_code));
}

static void finish_check(uv_timer_t *t)
{
    try_finish(t->data);
}

static void lane_idle(void *ctx)
{
    try_finish(ctx);
}

static void begin_shutdown(sig *s, int code, const char *why)
{
    if (code > s->exit_code)
        s->exit_code = code;
    if (s->stopping)
        return;
    s->stopping = true;
    atomic_store(&s->stop_flag, true);
    MC_LOG_INFO("shutting down: finishing the current batch", MC_LF_STR("reason", why));
    mc_bus_consumer_close(s->ingest_c);
    s->ingest_c = NULL;
    mc_bus_consumer_close(s->detect_c);
    s->detect_c = NULL;
    seal(s);
    mc_svc_admin_stop(&s->admin);
    try_finish(s);
}

/* Opens the ingest consumer, at once. Messages a previous instance had
 * fetched and not acked (a crash, or the fetch in flight at a graceful stop)
 * would be redelivered only once their ack wait expired, after newer ones,
 * and committing newer sequences first would make the store skip the older
 * rows when they came back: lost. So the ingest durable is placed right
 * after the committed position (recreated there; mc_bus_pull_options
 * .start_seq): the held messages come first, at once, whatever the ack
 * wait. (Until then all consuming started one CONSUMER_ACK_WAIT after
 * start.) */
static void open_ingest(uv_timer_t *t)
{
    sig *s = t->data;
    if (s->stopping)
        return;
    mc_error err = {0};
    mc_bus_pull_options io = {0};
    io.stream = MC_BUS_STREAM_SIM;
    io.durable = "signal-ingest";
    io.filter_subject = s->sim_metrics_subject;
    io.batch_size = INGEST_FETCH;
    io.ack_wait_ms = s->cfg.ack_wait_ms;
    io.start_seq = s->committed + 1;
    io.max_batches_inflight = INGEST_INFLIGHT;
    io.on_batch = on_ingest_batch;
    io.ctx = s;
    if (mc_bus_pull_open(s->bus, &io, &s->ingest_c, &err) != MC_OK) {
        MC_LOG_ERROR("ingest consumer", MC_LF_STR("error", err.msg));
        begin_shutdown(s, 1, "ingest consumer");
        return;
    }
    MC_LOG_INFO("ingesting", MC_LF_STR("stream", s->sim_stream),
                MC_LF_UINT("from_seq", s->committed + 1));
}

/* Opens the detection consumer one ack wait (plus a margin) after start,
 * as before: the messages of the tick a previous instance held come back
 * first, in stream order, before the detector sees anything newer.
 * Placing this durable at its own ack floor instead (as for the ingest)
 * was tried and made the lockstep fault acceptance test
 * (acceptance_fault_pipeline: kill -9 of each service in turn) fail about
 * one run in four, with the run stalled after the orchestrator's restart;
 * the cause is not understood yet, so detection keeps the wait. */
static void open_detect(uv_timer_t *t)
{
    sig *s = t->data;
    if (s->stopping)
        return;
    mc_error err = {0};
    mc_bus_pull_options dopt = {0};
    dopt.stream = MC_BUS_STREAM_SIM;
    dopt.durable = "signal-detect";
    dopt.batch_size = DETECT_FETCH;
    dopt.ack_wait_ms = s->cfg.ack_wait_ms;
    dopt.max_batches_inflight = DETECT_HELD_MAX + 1;
    dopt.on_batch = on_detect_batch;
    dopt.ctx = s;
    if (mc_bus_pull_open(s->bus, &dopt, &s->detect_c, &err) != MC_OK) {
        MC_LOG_ERROR("detection consumer", MC_LF_STR("error", err.msg));
        begin_shutdown(s, 1, "detection consumer");
        return;
    }
    MC_LOG_INFO("detecting", MC_LF_STR("stream", s->sim_stream));
}

static void on_signal(uv_signal_t *h, int signum)
{
    sig *s = h->data;
    begin_shutdown(s, 0, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

static mc_status register_metrics(sig *s, mc_error *err)
{
    mc_svc_admin *a = &s->admin;
    sig_metrics *m = &s->m;
    mc_status st;
#define C(field, name, help)                                                                       \
    if ((st = mc_svc_counter(a, name, help, &m->field, err)) != MC_OK)                             \
    return st
#define G(field, name, help)                                                                       \
    if ((st = mc_svc_gauge(a, name, help, &m->field, err)) != MC_OK)                               \
    return st
    C(samples, "microcloud_signal_samples_ingested_total", "Metric samples committed to PostgreSQL");
    C(batches, "microcloud_signal_ingest_batches_total", "COPY transactions committed");
    C(snapshots, "microcloud_signal_snapshots_detected_total", "Snapshots fed to the detector");
    C(ticks, "microcloud_signal_ticks_closed_total", "Engine watermarks that closed a tick");
    C(incidents_pub, "microcloud_signal_incidents_published_total",
      "Incident messages published and stored");
    C(deadlettered, "microcloud_signal_deadlettered_total",
      "Undecodable messages copied to ops.deadletter");
    C(redelivered, "microcloud_signal_ingest_redelivered_total",
      "Ingest messages delivered again while running (acked without rows)");
    C(detector_errors, "microcloud_signal_detector_errors_total",
      "Snapshots the detector refused (wrong run, missing watermark, too many targets)");
    C(early_acks, "microcloud_signal_detect_early_acks_total",
      "Times an open tick held too many messages and they were acked early");
    C(ack_failures, "microcloud_signal_ack_failures_total", "Acks that failed (redelivered later)");
    G(lag, "microcloud_signal_ingest_lag",
      "Highest stream sequence received minus the committed stream sequence");
    G(committed, "microcloud_signal_ingest_committed_seq", "Committed stream sequence");
    G(incidents_open, "microcloud_signal_incidents_open", "Incidents open in the detector");
#undef C
#undef G
    return MC_OK;
}

static void die(int code, const char *what, const char *msg)
{
    fprintf(stderr, "%s: %s: %s\n", PROGRAM, what, msg);
    MC_LOG_ERROR("start failed", MC_LF_STR("what", what), MC_LF_STR("error", msg));
    exit(code);
}

static void load_rules(sig *s)
{
    mc_error err = {0};
    char *buf = NULL;
    size_t len = 0;
    if (s->cfg.rules_file != NULL) {
        if (mc_svc_read_file(s->cfg.rules_file, RULES_FILE_MAX, &buf, &len, &err) != MC_OK)
            die(2, "RULES_FILE", err.msg);
    }
    mc_status st = mc_detector_rules_load(buf, len, s->cfg.rules_file, &s->rules, &err);
    free(buf);
    if (st != MC_OK)
        die(2, "RULES_FILE", err.msg);
    MC_LOG_INFO("detection rules loaded", MC_LF_UINT("rules", s->rules.count),
                MC_LF_STR("file", s->cfg.rules_file ? s->cfg.rules_file : "(built-in)"));
}

int main(int argc, char **argv)
{
    static sig S;
    sig *s = &S;
    mc_config_load_or_exit(argc, argv, PROGRAM,
                           "Ingests sim.metrics into PostgreSQL and detects incidents "
                           "(ops.incidents).",
                           sig_vars, sizeof sig_vars / sizeof sig_vars[0], &s->cfg);
    mc_log_init(PROGRAM, s->cfg.log.level, s->cfg.log.format, stderr);
    signal(SIGPIPE, SIG_IGN);
    atomic_init(&s->stop_flag, false);
    atomic_init(&s->ingest_failed, false);
    s->prefix = s->cfg.subject_prefix ? s->cfg.subject_prefix : "";

    load_rules(s);
    mc_error err = {0};
    if (detector_start(s, &err) != MC_OK)
        die(2, "detector configuration", err.msg);
    mc_outbox_init(&s->scratch, 16);

    if (mc_store_open_config(&s->cfg.db, &s->cfg.store, &s->ingest_store, &err) != MC_OK)
        die(1, "PostgreSQL", err.msg);
    mc_store_schema_info info = {0};
    if (mc_store_migrate(s->ingest_store, &info, &err) != MC_OK)
        die(1, "migrations", err.msg);
    if (mc_store_open_config(&s->cfg.db, &s->cfg.store, &s->detect_store, &err) != MC_OK)
        die(1, "PostgreSQL", err.msg);

    uv_loop_init(&s->loop);
    mc_bus_options bo = {0};
    bo.name = PROGRAM;
    bo.stream_prefix = s->cfg.stream_prefix;
    bo.replicas = (uint32_t)s->cfg.stream_replicas;
    bo.subject_prefix = s->cfg.subject_prefix;
    bo.max_pending_acks = 65536;
    if (mc_bus_open(&s->loop, &s->cfg.nats, &bo, &s->bus, &err) != MC_OK)
        die(1, "NATS", err.msg);
    snprintf(s->sim_stream, sizeof s->sim_stream, "%s", mc_bus_stream_name(s->bus, MC_BUS_STREAM_SIM));
    snprintf(s->position_name, sizeof s->position_name, "%s/signal-ingest", s->sim_stream);
    snprintf(s->sim_metrics_subject, sizeof s->sim_metrics_subject, "%ssim.metrics", s->prefix);
    uint64_t position = 0;
    if (mc_store_position_get(s->ingest_store, s->position_name, &position, &err) != MC_OK)
        die(1, "PostgreSQL", err.msg);
    s->committed = position;

    if (mc_svc_admin_start(&s->admin, &s->loop, &s->cfg.admin, s->bus, &s->cfg.db, 2000, &err) !=
            MC_OK ||
        register_metrics(s, &err) != MC_OK)
        die(1, "admin port", err.msg);
    mc_http_gauge_set(s->m.committed, (double)position);

    mc_svc_lane_init(&s->ingest_lane, &s->loop, s->ingest_store);
    mc_svc_lane_init(&s->detect_lane, &s->loop, s->detect_store);
    s->ingest_lane.on_idle = s->detect_lane.on_idle = lane_idle;
    s->ingest_lane.idle_ctx = s->detect_lane.idle_ctx = s;
    uv_timer_init(&s->loop, &s->delay_timer);
    s->delay_timer.data = s;
    uv_timer_init(&s->loop, &s->finish_timer);
    s->finish_timer.data = s;

    /* Ingest opens from the loop's first iteration, detection one ack wait
     * later; see open_ingest and open_detect. */
    uv_timer_init(&s->loop, &s->start_timer);
    s->start_timer.data = s;
    uv_timer_start(&s->start_timer, open_ingest, 0, 0);
    uv_timer_init(&s->loop, &s->detect_timer);
    s->detect_timer.data = s;
    uv_timer_start(&s->detect_timer, open_detect, s->cfg.ack_wait_ms + 500, 0);
    MC_LOG_INFO("detection starts after one ack wait, once messages a previous instance held "
                "are redeliverable",
                MC_LF_UINT("delay_ms", s->cfg.ack_wait_ms + 500));

    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_init(&s->loop, &s->sigterm);
    s->sigint.data = s->sigterm.data = s;
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);

    MC_LOG_INFO("started", MC_LF_STR("build", mc_build_id()),
                MC_LF_STR("admin_host", s->cfg.admin.host), MC_LF_UINT("admin_port", s->cfg.admin.port),
                MC_LF_STR("sim_stream", s->sim_stream), MC_LF_UINT("committed_seq", position),
                MC_LF_STR("metrics_storage", mc_store_metrics_storage_name(info.metrics_storage)),
                MC_LF_UINT("batch_rows", s->cfg.batch_rows),
                MC_LF_UINT("max_delay_ms", s->cfg.max_delay_ms));

    uv_run(&s->loop, UV_RUN_DEFAULT);

    mc_svc_admin_free(&s->admin);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&s->loop) != 0)
        MC_LOG_WARN("libuv loop closed with handles still open", MC_LF_STR("loop", "main"));
    unit_free(s->filling);
    mc_outbox_deinit(&s->scratch);
    mc_detector_deinit(&s->det);
    mc_store_free(s->ingest_store);
    mc_store_free(s->detect_store);
    mc_bus_library_shutdown(2000);
    return s->exit_code;
}
