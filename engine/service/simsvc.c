#include "simsvc.h"

#include <ctype.h>
#include <signal.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <nats/nats.h>

#include "bus/bus.h"
#include "common/v1/enums.pb-c.h"
#include "common/v1/stamp.pb-c.h"
#include "core/digest.h"
#include "core/ids.h"
#include "core/outbox.h"
#include "engine/core/engine.h"
#include "http/connect.h"
#include "http/metrics.h"
#include "http/server.h"
#include "trace/v1/trace.pb-c.h"
#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "recorder.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/simulation.pb-c.h"

/* Control events waiting to be published (they are rare: one per control
 * call or stall). */
#define CTL_OUTBOX_MAX 256
/* Batches of the OPS consumer held until the trace has recorded them (in
 * lockstep a batch is one message, see mc_simsvc_start). When this many are
 * held, later batches are acked at once rather than stopping the consumer,
 * which would keep the closing watermark out and stall the run. */
#define HELD_MAX 4096
/* Realtime mode never waits for the orchestrator, so the recorder releases
 * a tick this many ticks after the engine stepped it even without the
 * orchestrator's watermark (later messages of that tick are counted late). */
#define REALTIME_RELEASE_LAG 32
/* Retry delay after the bus refused a publish for backpressure. */
#define PUBLISH_RETRY_MS 2
/* How long shutdown waits for the publish acks. */
#define SHUTDOWN_ACK_WAIT_MS 10000
/* Run ids of this process remembered so a new run never reuses one (the
 * id is derived from scenario, seed and reset count; re-publishing under a
 * used id would be de-duplicated away by JetStream). */
#define RUN_IDS_KEPT 64
#define RUN_ID_MAX 32

/* Commands stamped with a tick the engine has not completed yet (a human
 * decision the orchestrator stamps with the tick it will close next): held
 * until the engine completed that tick, as the closed loop and the re-drive
 * apply the commands of tick N after step N. At most this many. */
#define EARLY_COMMANDS_MAX MC_ENGINE_MAX_PENDING_COMMANDS

/* Resuming a run after a crash (resume_read): at most this many OPS
 * messages are read back, and at most this many commands of the run kept;
 * a longer history starts the run over (logged). */
#define RESUME_OPS_MAX 2000000u
#define RESUME_CMDS_MAX 65536u

typedef struct held_batch {
    mc_bus_batch *b;
    uint64_t max_tick;
} held_batch;

struct mc_simsvc {
    uv_loop_t *loop;
    mc_simsvc_config cfg;
    size_t prefix_len;

    mc_engine eng;
    bool eng_ok;
    mc_engine_config ecfg;

    /* The outbox of the last step, published from out_next on, stamped with
     * the run it was produced in. */
    mc_outbox out;
    bool out_ok;
    size_t out_next;
    char out_run[RUN_ID_MAX];
    /* Control events of the shell. */
    mc_outbox ctl;
    bool ctl_ok;
    size_t ctl_next;
    uint64_t ctl_seq;

    mc_bus *bus;
    mc_bus_consumer *ops;
    mc_http_server *http;
    mc_http_metrics *reg;
    struct {
        mc_http_counter *ticks, *publish_failures, *publish_retries, *cmd_received, *cmd_applied,
            *cmd_refused, *cmd_other_run, *deadlettered, *lockstep_waits, *lockstep_stalls,
            *trace_late, *trace_errors;
        mc_http_gauge *tick, *running, *trace_tick;
        mc_http_histogram *tick_seconds, *wait_seconds;
    } m;

    uv_timer_t tick_timer, stall_timer, drain_timer;
    uv_signal_t sig_int, sig_term;
    bool handles_init;

    bool running;
    bool max_speed;
    double speed;
    uint64_t next_due_ns;
    bool due_set;

    /* Lockstep. */
    bool waiting;
    uint64_t wait_started_ns;
    bool stall_armed;
    bool stalled;
    char waiting_for[32];
    bool orch_seen, det_seen, agent_seen;
    uint64_t orch_wm, det_wm, agent_wm;

    char used_runs[RUN_IDS_KEPT][RUN_ID_MAX];
    size_t n_used;

    mc_simrec *rec;
    /* The run as the trace header describes it (harness/setup.h): rules,
     * approval mode and settings from the environment, the scenario, seed
     * and knobs of the current run. Owned. */
    mc_run_setup *setup;
    uint64_t input_seq; /* producer_seq of the recorded inputs, per run */
    Ops__V1__ApplyActionCommand *early[EARLY_COMMANDS_MAX]; /* in arrival order */
    size_t n_early;
    held_batch held[HELD_MAX];
    size_t n_held;
    /* After a resume: OPS messages up to this stream sequence were read
     * back and applied during the fast-forward, so the live consumer skips
     * them (0: none). */
    uint64_t resume_seq;

    uint64_t last_publish_warn_ns; /* rate limit of the publish-retry warning */
    bool started;
    bool shutting_down;
    bool http_done;
    uint64_t shutdown_deadline_ns;
    int exit_status;
};

/* ---------------------------------------------------------------- helpers */

static uint64_t now_ns(void) { return uv_hrtime(); }

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *mode_name(mc_simsvc_mode m)
{
    return m == MC_SIMSVC_LOCKSTEP ? "lockstep" : "realtime";
}

static const char *run_id(const mc_simsvc *s) { return mc_engine_run_id(&s->eng); }

static void full_subject(const mc_simsvc *s, const char *subject, char *buf, size_t n)
{
    snprintf(buf, n, "%s%s", s->cfg.subject_prefix ? s->cfg.subject_prefix : "", subject);
}

/* The subject without the bus's prefix, or NULL when it lacks the prefix. */
static const char *strip_prefix(const mc_simsvc *s, const char *subject)
{
    if (s->prefix_len == 0)
        return subject;
    if (strncmp(subject, s->cfg.subject_prefix, s->prefix_len) != 0)
        return NULL;
    return subject + s->prefix_len;
}

static bool scenario_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= MC_SCENARIO_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '_' && c != '-')
            return false;
    }
    return true;
}

mc_status mc_simsvc_scenario_load(const char *dir, const char *name, mc_scenario *out,
                                  mc_error *err)
{
    memset(out, 0, sizeof *out);
    if (!scenario_name_valid(name))
        return mc_error_set(err, MC_ERR_INVALID,
                            "scenario name \"%s\" must be 1 to %d letters, digits, '_' or '-'",
                            name, MC_SCENARIO_ID_MAX - 1);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.scenario", dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        if (errno == ENOENT)
            return mc_error_set(err, MC_ERR_NOT_FOUND, "unknown scenario \"%s\": no %s", name,
                                path);
        return mc_error_set(err, MC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    /* Bounded read: the parser refuses anything over MC_SCENARIO_MAX_BYTES. */
    size_t cap = 64 * 1024, len = 0;
    char *buf = malloc(cap);
    mc_status st = MC_OK;
    while (buf != NULL) {
        if (len == cap) {
            if (cap > MC_SCENARIO_MAX_BYTES) {
                st = mc_error_set(err, MC_ERR_LIMIT, "%s: larger than %u bytes", path,
                                  MC_SCENARIO_MAX_BYTES);
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) {
            if (ferror(f))
                st = mc_error_set(err, MC_ERR_IO, "cannot read %s", path);
            break;
        }
    }
    fclose(f);
    if (buf == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory reading %s", path);
    if (st == MC_OK)
        st = mc_scenario_parse(buf, len, path, out, err);
    free(buf);
    return st;
}

/* ----------------------------------------------------------- run lifecycle */

/* Fills the trace header's view of the run into s->setup with the
 * harness's own functions (harness/setup.h), so a live trace's header says
 * what `microcloud sim` says for the same run: the scenario spec, the
 * topology digest (the scenario file's bytes and the size knobs) and the
 * config digest (rules, approval mode, settings). */
static mc_status setup_for_run(mc_simsvc *s, mc_error *err)
{
    mc_run_setup *su = s->setup;
    mc_status st = mc_setup_load_scenario(su, s->cfg.scenario_dir, mc_engine_scenario_name(&s->eng),
                                          err);
    if (st != MC_OK)
        return mc_error_wrap(err, "trace header");
    su->seed = mc_engine_seed(&s->eng);
    su->node_count = s->ecfg.node_count;
    su->service_count = s->ecfg.service_count;
    snprintf(su->run_id, sizeof su->run_id, "%s", run_id(s));
    char kv[MC_SETUP_SETTING_MAX];
    snprintf(kv, sizeof kv, "%s=%u", mc_setup_setting_name(MC_SETTING_CHUNK_SAMPLES),
             s->ecfg.chunk_max_samples ? s->ecfg.chunk_max_samples
                                       : (uint32_t)MC_ENGINE_DEFAULT_CHUNK_SAMPLES);
    st = mc_setup_setting(su, kv, err);
    if (st != MC_OK)
        return st;
    mc_setup_digests(su);
    return MC_OK;
}

static bool run_used(const mc_simsvc *s, const char *id)
{
    for (size_t i = 0; i < s->n_used && i < RUN_IDS_KEPT; i++)
        if (strcmp(s->used_runs[i], id) == 0)
            return true;
    return false;
}

static void held_release_all(mc_simsvc *s);

/* Lockstep: the checkpoint of the last completed tick, with the engine's
 * digest now, once the orchestrator's commands of that tick are in the
 * core and before the next step (recorder.h "Checkpoints"). up_to_engine
 * first releases the engine's last tick even without its watermark (the
 * end of a run). */
static void trace_checkpoint_now(mc_simsvc *s, bool up_to_engine)
{
    if (s->rec == NULL || s->cfg.mode != MC_SIMSVC_LOCKSTEP)
        return;
    uint64_t tick = mc_engine_tick(&s->eng);
    mc_error err;
    mc_error_clear(&err);
    uint8_t digest[MC_DIGEST_BYTES];
    mc_engine_digest(&s->eng, digest);
    mc_status st = up_to_engine ? mc_simrec_release(s->rec, tick, &err) : MC_OK;
    if (st == MC_OK)
        st = mc_simrec_checkpoint(s->rec, tick, digest, &err);
    if (st != MC_OK) {
        mc_http_counter_inc(s->m.trace_errors);
        MC_LOG_ERROR("trace write failed", MC_LF_STR("error", err.msg));
    }
}

/* Ends the current run's side state: the trace gets its footer, held OPS
 * batches are acked. */
static void run_end(mc_simsvc *s)
{
    if (s->rec != NULL) {
        trace_checkpoint_now(s, true);
        mc_error err;
        mc_error_clear(&err);
        mc_trace_footer_info info;
        memset(&info, 0, sizeof info);
        mc_simrec_stats stats;
        mc_simrec_stats_get(s->rec, &stats);
        char path[4096];
        snprintf(path, sizeof path, "%s", mc_simrec_path(s->rec));
        if (mc_simrec_close(&s->rec, &info, &err) != MC_OK) {
            MC_LOG_ERROR("closing the trace failed", MC_LF_STR("path", path),
                         MC_LF_STR("error", err.msg));
            mc_http_counter_inc(s->m.trace_errors);
            s->exit_status = 1;
        } else {
            MC_LOG_INFO("trace closed", MC_LF_STR("path", path),
                        MC_LF_UINT("records", info.record_count),
                        MC_LF_UINT("checkpoints", info.checkpoint_count),
                        MC_LF_UINT("last_tick", info.last_tick), MC_LF_UINT("late", stats.late),
                        MC_LF_BOOL("signed", info.is_signed));
        }
    }
    held_release_all(s);
}

/* Drops the commands held for a later tick (a new run starts). */
static void early_clear(mc_simsvc *s)
{
    for (size_t i = 0; i < s->n_early; i++)
        ops__v1__apply_action_command__free_unpacked(s->early[i], NULL);
    s->n_early = 0;
}

/* Hands the core the held commands whose tick the engine has completed, in
 * arrival order; one the core cannot take yet (its queue is full) stays. */
static void early_apply(mc_simsvc *s)
{
    uint64_t tick = mc_engine_tick(&s->eng);
    size_t k = 0;
    for (size_t i = 0; i < s->n_early; i++) {
        Ops__V1__ApplyActionCommand *cmd = s->early[i];
        if (cmd->stamp->tick > tick) {
            s->early[k++] = cmd;
            continue;
        }
        mc_error err;
        mc_error_clear(&err);
        mc_status st = mc_engine_apply_command(&s->eng, cmd, &err);
        if (st == MC_ERR_LIMIT) {
            s->early[k++] = cmd;
            continue;
        }
        if (st != MC_OK)
            MC_LOG_WARN("held command refused by the engine", MC_LF_STR("command_id", cmd->command_id),
                        MC_LF_STR("error", err.msg));
        ops__v1__apply_action_command__free_unpacked(cmd, NULL);
    }
    s->n_early = k;
}

/* Called once the engine holds a fresh run (start, reset, scenario change):
 * makes sure the run id is new to this process, clears the lockstep marks,
 * opens the trace and logs how to reproduce the run. */
static mc_status run_begin(mc_simsvc *s, const char *why, mc_error *err)
{
    for (int guard = 0; run_used(s, run_id(s)) && guard < RUN_IDS_KEPT + 1; guard++) {
        mc_status st = mc_engine_reset(&s->eng, 0, err);
        if (st != MC_OK)
            return st;
    }
    snprintf(s->used_runs[s->n_used % RUN_IDS_KEPT], RUN_ID_MAX, "%s", run_id(s));
    s->n_used++;

    s->waiting = false;
    s->stalled = false;
    s->waiting_for[0] = '\0';
    if (s->stall_armed) {
        uv_timer_stop(&s->stall_timer);
        s->stall_armed = false;
    }
    s->orch_seen = s->det_seen = s->agent_seen = false;
    s->orch_wm = s->det_wm = s->agent_wm = 0;
    s->ctl_seq = 0;
    s->input_seq = 0;
    s->resume_seq = 0;
    early_clear(s);
    mc_http_gauge_set(s->m.trace_tick, 0);
    s->due_set = false;

    char repro[1024];
    snprintf(repro, sizeof repro,
             "SEED=%" PRIu64 " SCENARIO=%s SCENARIO_DIR=%s SIM_MODE=%s TOPOLOGY_NODES=%u "
             "TOPOLOGY_SERVICES=%u METRICS_CHUNK_SAMPLES=%u sim-engine",
             mc_engine_seed(&s->eng), mc_engine_scenario_name(&s->eng), s->cfg.scenario_dir,
             mode_name(s->cfg.mode), s->ecfg.node_count, s->ecfg.service_count,
             s->ecfg.chunk_max_samples);
    MC_LOG_INFO("run started", MC_LF_STR("why", why), MC_LF_STR("run_id", run_id(s)),
                MC_LF_UINT("seed", mc_engine_seed(&s->eng)),
                MC_LF_STR("scenario", mc_engine_scenario_name(&s->eng)),
                MC_LF_STR("build", mc_build_id()), MC_LF_STR("mode", mode_name(s->cfg.mode)),
                MC_LF_UINT("nodes", mc_engine_node_count(&s->eng)),
                MC_LF_UINT("services", mc_engine_service_count(&s->eng)),
                MC_LF_UINT("reset_count", mc_engine_reset_count(&s->eng)),
                MC_LF_STR("reproduce", repro));

    if (s->cfg.trace_dir != NULL && s->cfg.trace_dir[0] != '\0') {
        mc_status st = setup_for_run(s, err);
        if (st != MC_OK)
            return st;
        char spec[MC_SETUP_SPEC_MAX];
        mc_setup_spec_format(s->setup, spec);
        char settings[MC_SETTING_COUNT][MC_SETUP_SETTING_MAX];
        const char *set_ptr[MC_SETTING_COUNT];
        size_t n_set = mc_setup_settings_format(s->setup, settings);
        for (size_t i = 0; i < n_set; i++)
            set_ptr[i] = settings[i];
        mc_simrec_run r;
        memset(&r, 0, sizeof r);
        r.dir = s->cfg.trace_dir;
        r.signing_key_path = s->cfg.trace_signing_key;
        r.scenario = spec;
        r.run_id = run_id(s);
        r.mode = mode_name(s->cfg.mode);
        r.approval_mode = mc_approval_mode_name(s->setup->approval_mode);
        r.settings = set_ptr;
        r.n_settings = n_set;
        r.defer_checkpoints = s->cfg.mode == MC_SIMSVC_LOCKSTEP;
        r.seed = mc_engine_seed(&s->eng);
        memcpy(r.topology_digest, s->setup->topology_digest, sizeof r.topology_digest);
        memcpy(r.config_digest, s->setup->config_digest, sizeof r.config_digest);
        r.start_time_unix_ms = wall_ms();
        st = mc_simrec_open(&r, &s->rec, err);
        if (st != MC_OK)
            return mc_error_wrap(err, "opening the trace");
        MC_LOG_INFO("recording the run", MC_LF_STR("trace", mc_simrec_path(s->rec)),
                    MC_LF_STR("run_id", run_id(s)),
                    MC_LF_STR("replay", "microcloud replay <trace>"));
    }
    return MC_OK;
}

/* --------------------------------------------------------------- publishing */

/* Appends a control event (stamped by the shell, see simsvc.h). */
static void control_event(mc_simsvc *s, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void control_event(mc_simsvc *s, int kind, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    uint64_t tick = mc_engine_tick(&s->eng);
    uint64_t seq = ++s->ctl_seq;
    char event_id[MC_UUID_STR_LEN];
    char extra[32];
    snprintf(extra, sizeof extra, "%" PRIu64, seq);
    mc_id_uuid(event_id, "sim-control-event", run_id(s), tick, MC_SIMSVC_CONTROL_PRODUCER, extra);

    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)run_id(s);
    stamp.tick = tick;
    stamp.producer = MC_SIMSVC_CONTROL_PRODUCER;
    stamp.producer_seq = seq;
    Sim__V1__SimulationEvent ev = SIM__V1__SIMULATION_EVENT__INIT;
    ev.stamp = &stamp;
    ev.event_id = event_id;
    ev.kind = (Sim__V1__SimulationEventKind)kind;
    ev.message = msg;
    if (!s->ctl_ok || mc_outbox_push(&s->ctl, MC_ENGINE_SUBJECT_EVENTS, tick, seq,
                                     &ev.base) != MC_OK) {
        MC_LOG_WARN("control event not published: queue full", MC_LF_STR("message", msg));
        return;
    }
}

/* Hands pending messages to the bus: the step's outbox first, then control
 * events. Returns true when everything is handed over; false when the bus
 * pushed back (the caller retries from a timer). */
static bool publish_pending(mc_simsvc *s)
{
    char subject[MC_SUBJECT_MAX + 128];
    mc_error err;
    while (s->out_next < s->out.len) {
        const mc_outbox_msg *m = &s->out.items[s->out_next];
        full_subject(s, m->subject, subject, sizeof subject);
        mc_error_clear(&err);
        mc_status st = mc_bus_publish_stamped(s->bus, subject, s->out_run, m->tick,
                                              m->producer_seq, m->payload, m->len, &err);
        if (st != MC_OK) {
            if (st == MC_ERR_LIMIT) {
                mc_http_counter_inc(s->m.publish_retries);
            } else {
                mc_http_counter_inc(s->m.publish_failures);
                /* Retried every few milliseconds: say it once a second. */
                uint64_t now = now_ns();
                if (now - s->last_publish_warn_ns >= 1000000000u) {
                    s->last_publish_warn_ns = now;
                    MC_LOG_WARN("publish failed; retrying", MC_LF_STR("subject", subject),
                                MC_LF_UINT("tick", m->tick), MC_LF_STR("error", err.msg));
                }
            }
            return false;
        }
        s->out_next++;
    }
    if (s->out.len > 0) {
        mc_outbox_clear(&s->out);
        s->out_next = 0;
    }
    while (s->ctl_next < s->ctl.len) {
        const mc_outbox_msg *m = &s->ctl.items[s->ctl_next];
        full_subject(s, m->subject, subject, sizeof subject);
        /* The de-duplication id must not collide with the engine's own
         * (run, sim.events, tick, seq) ids: name the producer in it. */
        char id_subject[MC_SUBJECT_MAX + 32];
        snprintf(id_subject, sizeof id_subject, "%s/%s", m->subject, MC_SIMSVC_CONTROL_PRODUCER);
        char msg_id[256];
        mc_id_msg(msg_id, sizeof msg_id, run_id(s), id_subject, m->tick, m->producer_seq);
        mc_error_clear(&err);
        mc_status st = mc_bus_publish_async(s->bus, subject, m->payload, m->len, msg_id, &err);
        if (st != MC_OK) {
            if (st == MC_ERR_LIMIT)
                mc_http_counter_inc(s->m.publish_retries);
            else
                mc_http_counter_inc(s->m.publish_failures);
            return false;
        }
        s->ctl_next++;
    }
    if (s->ctl.len > 0) {
        mc_outbox_clear(&s->ctl);
        s->ctl_next = 0;
    }
    return true;
}

static void on_bus_publish_error(void *ctx, const mc_bus_publish_failure *f)
{
    mc_simsvc *s = ctx;
    mc_http_counter_inc(s->m.publish_failures);
    MC_LOG_ERROR("publish finally failed", MC_LF_STR("subject", f->subject),
                 MC_LF_STR("msg_id", f->msg_id), MC_LF_STR("error", f->error),
                 MC_LF_UINT("attempts", f->attempts));
}

/* ---------------------------------------------------------------- tick loop */

static void pump(mc_simsvc *s);

static void on_tick_timer(uv_timer_t *t) { pump(t->data); }

static void schedule(mc_simsvc *s, uint64_t delay_ms)
{
    uv_timer_start(&s->tick_timer, on_tick_timer, delay_ms, 0);
}

static uint64_t period_ns(const mc_simsvc *s)
{
    if (s->max_speed)
        return 0;
    return (uint64_t)(1e9 / s->speed);
}

static const char *lagging_stage(const mc_simsvc *s, uint64_t tick)
{
    if (!s->det_seen || s->det_wm < tick)
        return "detector";
    if (!s->agent_seen || s->agent_wm < tick)
        return "agent";
    return "orchestrator";
}

static void on_stall(uv_timer_t *t)
{
    mc_simsvc *s = t->data;
    s->stall_armed = false;
    if (!s->waiting || s->shutting_down)
        return;
    uint64_t tick = mc_engine_tick(&s->eng);
    snprintf(s->waiting_for, sizeof s->waiting_for, "%s", lagging_stage(s, tick));
    s->running = false;
    s->stalled = true;
    mc_http_gauge_set(s->m.running, 0);
    mc_http_counter_inc(s->m.lockstep_stalls);
    MC_LOG_WARN("lockstep stalled: pausing the run", MC_LF_STR("run_id", run_id(s)),
                MC_LF_UINT("tick", tick), MC_LF_STR("waiting_for", s->waiting_for),
                MC_LF_UINT("stall_timeout_ms", s->cfg.stall_timeout_ms));
    control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_STALLED,
                  "lockstep waited %" PRIu64 " ms for the orchestrator's watermark of tick %" PRIu64
                  "; waiting for the %s; run paused",
                  s->cfg.stall_timeout_ms, tick, s->waiting_for);
    pump(s);
}

/* True when lockstep lets the engine start the next tick. */
static bool lockstep_clear(mc_simsvc *s)
{
    if (s->cfg.mode != MC_SIMSVC_LOCKSTEP)
        return true;
    uint64_t tick = mc_engine_tick(&s->eng);
    if (tick == 0 || (s->orch_seen && s->orch_wm >= tick)) {
        if (s->waiting) {
            s->waiting = false;
            s->waiting_for[0] = '\0';
            mc_http_histogram_observe(s->m.wait_seconds,
                                      (double)(now_ns() - s->wait_started_ns) / 1e9);
            if (s->stall_armed) {
                uv_timer_stop(&s->stall_timer);
                s->stall_armed = false;
            }
        }
        return true;
    }
    if (!s->waiting) {
        s->waiting = true;
        s->wait_started_ns = now_ns();
        mc_http_counter_inc(s->m.lockstep_waits);
    }
    snprintf(s->waiting_for, sizeof s->waiting_for, "%s", lagging_stage(s, tick));
    if (s->running && !s->stall_armed && s->cfg.stall_timeout_ms > 0) {
        uv_timer_start(&s->stall_timer, on_stall, s->cfg.stall_timeout_ms, 0);
        s->stall_armed = true;
    }
    return false;
}

static void held_release(mc_simsvc *s, uint64_t released);

static void count_command_events(mc_simsvc *s)
{
    for (size_t i = 0; i < s->out.len; i++) {
        const mc_outbox_msg *m = &s->out.items[i];
        if (strcmp(m->subject, MC_ENGINE_SUBJECT_EVENTS) != 0)
            continue;
        Sim__V1__SimulationEvent *ev = sim__v1__simulation_event__unpack(NULL, m->len, m->payload);
        if (ev == NULL)
            continue;
        if (ev->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED ||
            ev->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED) {
            bool applied =
                ev->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED;
            mc_http_counter_inc(applied ? s->m.cmd_applied : s->m.cmd_refused);
            MC_LOG_INFO(applied ? "command applied" : "command refused",
                        MC_LF_STR("command_id", ev->command_id),
                        MC_LF_STR("action_id", ev->action_id),
                        MC_LF_UINT("applied_at_tick", ev->applied_at_tick),
                        MC_LF_STR("message", ev->message));
        }
        sim__v1__simulation_event__free_unpacked(ev, NULL);
    }
}

/* Runs one tick: step, record, start publishing. */
static bool step_once(mc_simsvc *s)
{
    size_t need = mc_engine_max_messages_per_tick(&s->eng);
    if (!s->out_ok || s->out.max_items < need) {
        mc_outbox_deinit(&s->out);
        s->out_ok = mc_outbox_init(&s->out, need) == MC_OK;
        if (!s->out_ok) {
            MC_LOG_ERROR("out of memory for the outbox; pausing", MC_LF_UINT("messages", need));
            s->running = false;
            return false;
        }
    }
    mc_error err;
    mc_error_clear(&err);
    trace_checkpoint_now(s, false);
    uint64_t t0 = now_ns();
    mc_status st = mc_engine_step(&s->eng, &s->out, &err);
    uint64_t t1 = now_ns();
    if (st != MC_OK) {
        MC_LOG_ERROR("engine step failed; pausing", MC_LF_STR("run_id", run_id(s)),
                     MC_LF_UINT("tick", mc_engine_tick(&s->eng) + 1), MC_LF_STR("error", err.msg));
        mc_outbox_clear(&s->out);
        s->running = false;
        mc_http_gauge_set(s->m.running, 0);
        return false;
    }
    uint64_t tick = mc_engine_tick(&s->eng);
    early_apply(s);
    mc_http_counter_inc(s->m.ticks);
    mc_http_gauge_set(s->m.tick, (double)tick);
    mc_http_histogram_observe(s->m.tick_seconds, (double)(t1 - t0) / 1e9);
    snprintf(s->out_run, sizeof s->out_run, "%s", run_id(s));
    s->out_next = 0;
    count_command_events(s);

    if (s->rec != NULL) {
        for (size_t i = 0; i < s->out.len; i++) {
            const mc_outbox_msg *m = &s->out.items[i];
            mc_error_clear(&err);
            if (mc_simrec_add(s->rec, m->tick, COMMON__V1__STAGE__STAGE_ENGINE, m->subject,
                              MC_ENGINE_PRODUCER, m->producer_seq, m->payload, m->len,
                              &err) != MC_OK) {
                mc_http_counter_inc(s->m.trace_errors);
                MC_LOG_WARN("message not recorded", MC_LF_STR("subject", m->subject),
                            MC_LF_UINT("tick", m->tick), MC_LF_STR("error", err.msg));
            }
        }
        uint8_t digest[MC_DIGEST_BYTES];
        mc_engine_digest(&s->eng, digest);
        mc_simrec_engine_tick(s->rec, tick, digest);
        if (s->cfg.mode == MC_SIMSVC_REALTIME && tick > REALTIME_RELEASE_LAG) {
            mc_error_clear(&err);
            if (mc_simrec_release(s->rec, tick - REALTIME_RELEASE_LAG, &err) != MC_OK) {
                mc_http_counter_inc(s->m.trace_errors);
                MC_LOG_ERROR("trace write failed", MC_LF_STR("error", err.msg));
            }
            held_release(s, mc_simrec_released(s->rec));
        }
        mc_http_gauge_set(s->m.trace_tick, (double)mc_simrec_released(s->rec));
    }
    if (s->cfg.stop_after_ticks != 0 && tick == s->cfg.stop_after_ticks) {
        s->running = false;
        mc_http_gauge_set(s->m.running, 0);
        MC_LOG_INFO("stopped after STOP_AFTER_TICKS; Play goes on", MC_LF_STR("run_id", run_id(s)),
                    MC_LF_UINT("tick", tick));
        control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_PAUSED,
                      "the run stopped after tick %" PRIu64 " (STOP_AFTER_TICKS)", tick);
    }
    return true;
}

/* The scheduler: called by the tick timer, after control calls, after OPS
 * batches and stalls. It decides whether the next tick may run now. */
static void pump(mc_simsvc *s)
{
    if (s->shutting_down || !s->eng_ok)
        return;
    if (!publish_pending(s)) {
        schedule(s, PUBLISH_RETRY_MS);
        return;
    }
    /* Checked while paused too, so GetState.waiting_for stays current. */
    bool clear = lockstep_clear(s);
    if (!s->running || !clear)
        return; /* the OPS consumer calls pump when the watermark comes */
    uint64_t now = now_ns();
    if (!s->max_speed) {
        if (!s->due_set) {
            s->next_due_ns = now;
            s->due_set = true;
        }
        if (now < s->next_due_ns) {
            schedule(s, (s->next_due_ns - now + 999999) / 1000000);
            return;
        }
    }
    if (!step_once(s))
        return;
    if (!s->max_speed) {
        uint64_t p = period_ns(s);
        /* Keep the pace without bursting to catch up after a slow tick. */
        s->next_due_ns = s->next_due_ns + p < now ? now + p : s->next_due_ns + p;
    }
    if (!publish_pending(s)) {
        schedule(s, PUBLISH_RETRY_MS);
        return;
    }
    /* Always through the timer (0 ms at max speed), so the loop reads acks,
     * OPS messages and HTTP between ticks. */
    uint64_t delay = 0;
    if (!s->max_speed) {
        uint64_t n2 = now_ns();
        delay = s->next_due_ns > n2 ? (s->next_due_ns - n2 + 999999) / 1000000 : 0;
    }
    if (s->cfg.mode == MC_SIMSVC_LOCKSTEP && !s->max_speed)
        delay = 0; /* lockstep_clear decides; the pace check reschedules */
    schedule(s, delay);
}

/* ------------------------------------------------------------ OPS consumer */

/* Finds field 1 (the Stamp of every bus message) in a packed message without
 * knowing its type. Returns false when the bytes are not a well-formed
 * message or have no stamp. */
static bool find_stamp(const uint8_t *p, size_t len, const uint8_t **sp, size_t *slen)
{
    size_t i = 0;
    bool found = false;
    while (i < len) {
        uint64_t key = 0;
        int shift = 0;
        for (;;) {
            if (i >= len || shift > 63)
                return false;
            uint8_t b = p[i++];
            key |= (uint64_t)(b & 0x7f) << shift;
            if ((b & 0x80) == 0)
                break;
            shift += 7;
        }
        uint32_t wt = (uint32_t)(key & 7);
        uint64_t field = key >> 3;
        switch (wt) {
        case 0: {
            for (;;) {
                if (i >= len)
                    return false;
                if ((p[i++] & 0x80) == 0)
                    break;
            }
            break;
        }
        case 1:
            if (len - i < 8)
                return false;
            i += 8;
            break;
        case 5:
            if (len - i < 4)
                return false;
            i += 4;
            break;
        case 2: {
            uint64_t n = 0;
            shift = 0;
            for (;;) {
                if (i >= len || shift > 63)
                    return false;
                uint8_t b = p[i++];
                n |= (uint64_t)(b & 0x7f) << shift;
                if ((b & 0x80) == 0)
                    break;
                shift += 7;
            }
            if (n > len - i)
                return false;
            if (field == 1) {
                *sp = p + i;
                *slen = (size_t)n;
                found = true;
            }
            i += (size_t)n;
            break;
        }
        default:
            return false;
        }
    }
    return found;
}

static void trace_add(mc_simsvc *s, const char *subject, uint32_t stage,
                      const Common__V1__Stamp *stamp, const mc_bus_msg *m, uint64_t *max_tick)
{
    if (s->rec == NULL)
        return;
    mc_error err;
    mc_error_clear(&err);
    mc_simrec_stats before;
    mc_simrec_stats_get(s->rec, &before);
    mc_status st = mc_simrec_add(s->rec, stamp->tick, stage, subject,
                                 stamp->producer && stamp->producer[0] ? stamp->producer : "unknown",
                                 stamp->producer_seq, mc_bus_msg_data(m), mc_bus_msg_len(m), &err);
    mc_simrec_stats after;
    mc_simrec_stats_get(s->rec, &after);
    if (st != MC_OK) {
        mc_http_counter_inc(s->m.trace_errors);
        MC_LOG_WARN("message not recorded", MC_LF_STR("subject", subject),
                    MC_LF_UINT("tick", stamp->tick), MC_LF_STR("error", err.msg));
    } else if (after.late > before.late) {
        mc_http_counter_inc(s->m.trace_late);
        MC_LOG_WARN("message arrived after its tick was recorded; not in the trace",
                    MC_LF_STR("subject", subject), MC_LF_UINT("tick", stamp->tick),
                    MC_LF_UINT("released", mc_simrec_released(s->rec)));
    } else if (stamp->tick > *max_tick) {
        *max_tick = stamp->tick;
    }
}

static bool same_run(const mc_simsvc *s, const Common__V1__Stamp *stamp)
{
    return stamp != NULL && stamp->run_id != NULL && strcmp(stamp->run_id, run_id(s)) == 0;
}

static void deadletter(mc_simsvc *s, mc_bus_msg *m, const char *reason)
{
    mc_error err;
    mc_error_clear(&err);
    mc_http_counter_inc(s->m.deadlettered);
    if (mc_bus_msg_deadletter(m, reason, &err) != MC_OK)
        MC_LOG_ERROR("dead-lettering failed; the message will be redelivered",
                     MC_LF_STR("subject", mc_bus_msg_subject(m)), MC_LF_STR("error", err.msg));
}

/* Handles one OPS message. Returns false when the batch must stop here (the
 * core's command queue is full: the rest is handed back for redelivery so
 * nothing overtakes the refused command). */
static bool handle_ops_msg(mc_simsvc *s, mc_bus_msg *m, uint64_t *max_tick, bool *progress)
{
    if (s->resume_seq != 0 && mc_bus_msg_stream_seq(m) <= s->resume_seq)
        return true; /* read back and applied by the fast-forward (resume_run) */
    const char *subject = strip_prefix(s, mc_bus_msg_subject(m));
    if (subject == NULL)
        return true;
    uint32_t stage = mc_simrec_stage_of(subject);
    if (stage == 0)
        return true; /* dead letters and unknown subjects: nothing to do */
    const uint8_t *data = mc_bus_msg_data(m);
    size_t len = mc_bus_msg_len(m);

    if (strcmp(subject, "ops.commands") == 0) {
        Ops__V1__ApplyActionCommand *cmd = ops__v1__apply_action_command__unpack(NULL, len, data);
        if (cmd == NULL) {
            deadletter(s, m, "not a valid ops.v1.ApplyActionCommand");
            return true;
        }
        mc_http_counter_inc(s->m.cmd_received);
        if (!same_run(s, cmd->stamp)) {
            mc_http_counter_inc(s->m.cmd_other_run);
            MC_LOG_WARN("command for another run ignored", MC_LF_STR("command_id", cmd->command_id),
                        MC_LF_STR("run_id", cmd->stamp && cmd->stamp->run_id ? cmd->stamp->run_id
                                                                             : ""),
                        MC_LF_STR("current_run_id", run_id(s)));
            ops__v1__apply_action_command__free_unpacked(cmd, NULL);
            return true;
        }
        if (cmd->stamp->tick > mc_engine_tick(&s->eng)) {
            /* Issued at a tick the engine has not completed (see
             * EARLY_COMMANDS_MAX): the core gets it after that step. */
            if (s->n_early == EARLY_COMMANDS_MAX) {
                MC_LOG_WARN("too many commands for later ticks; asking for redelivery",
                            MC_LF_STR("command_id", cmd->command_id));
                ops__v1__apply_action_command__free_unpacked(cmd, NULL);
                return false;
            }
            MC_LOG_DEBUG("command held for its tick", MC_LF_STR("command_id", cmd->command_id),
                         MC_LF_UINT("tick", cmd->stamp->tick),
                         MC_LF_UINT("engine_tick", mc_engine_tick(&s->eng)));
            trace_add(s, subject, stage, cmd->stamp, m, max_tick);
            s->early[s->n_early++] = cmd;
            return true;
        }
        mc_error err;
        mc_error_clear(&err);
        mc_status st = mc_engine_apply_command(&s->eng, cmd, &err);
        if (st == MC_ERR_LIMIT) {
            MC_LOG_WARN("engine command queue full; asking for redelivery",
                        MC_LF_STR("command_id", cmd->command_id));
            ops__v1__apply_action_command__free_unpacked(cmd, NULL);
            return false;
        }
        if (st != MC_OK) {
            char reason[600];
            snprintf(reason, sizeof reason, "refused by the engine: %s", err.msg);
            ops__v1__apply_action_command__free_unpacked(cmd, NULL);
            deadletter(s, m, reason);
            return true;
        }
        MC_LOG_DEBUG("command queued", MC_LF_STR("command_id", cmd->command_id),
                     MC_LF_UINT("issued_at_tick", cmd->issued_at_tick),
                     MC_LF_UINT("engine_tick", mc_engine_tick(&s->eng)));
        trace_add(s, subject, stage, cmd->stamp, m, max_tick);
        ops__v1__apply_action_command__free_unpacked(cmd, NULL);
        return true;
    }

    if (strncmp(subject, "ops.watermark.", 14) == 0) {
        Ops__V1__Watermark *wm = ops__v1__watermark__unpack(NULL, len, data);
        if (wm == NULL) {
            deadletter(s, m, "not a valid ops.v1.Watermark");
            return true;
        }
        if (same_run(s, wm->stamp)) {
            trace_add(s, subject, stage, wm->stamp, m, max_tick);
            const char *who = subject + 14;
            if (strcmp(who, "orchestrator") == 0) {
                if (!s->orch_seen || wm->tick > s->orch_wm)
                    s->orch_wm = wm->tick;
                s->orch_seen = true;
                *progress = true;
                if (s->rec != NULL) {
                    mc_error err;
                    mc_error_clear(&err);
                    if (mc_simrec_release(s->rec, wm->tick, &err) != MC_OK) {
                        mc_http_counter_inc(s->m.trace_errors);
                        MC_LOG_ERROR("trace write failed", MC_LF_STR("error", err.msg));
                    }
                    mc_http_gauge_set(s->m.trace_tick, (double)mc_simrec_released(s->rec));
                }
            } else if (strcmp(who, "detector") == 0) {
                if (!s->det_seen || wm->tick > s->det_wm)
                    s->det_wm = wm->tick;
                s->det_seen = true;
            } else if (strcmp(who, "agent") == 0) {
                if (!s->agent_seen || wm->tick > s->agent_wm)
                    s->agent_wm = wm->tick;
                s->agent_seen = true;
            }
            if (s->waiting)
                *progress = true; /* waiting_for may change */
        }
        ops__v1__watermark__free_unpacked(wm, NULL);
        return true;
    }

    /* Incidents, actions, decisions: only recorded. */
    if (s->rec == NULL)
        return true;
    const uint8_t *sp = NULL;
    size_t slen = 0;
    if (!find_stamp(data, len, &sp, &slen))
        return true; /* their consumers dead-letter what they cannot decode */
    Common__V1__Stamp *stamp = common__v1__stamp__unpack(NULL, slen, sp);
    if (stamp == NULL)
        return true;
    if (same_run(s, stamp))
        trace_add(s, subject, stage, stamp, m, max_tick);
    common__v1__stamp__free_unpacked(stamp, NULL);
    return true;
}

static void held_ack_free(mc_bus_batch *b)
{
    mc_error err;
    mc_error_clear(&err);
    if (mc_bus_batch_ack_all(b, &err) != MC_OK)
        MC_LOG_WARN("ack failed; messages will be redelivered", MC_LF_STR("error", err.msg));
    mc_bus_batch_free(b);
}

/* Acks the held batches whose messages are all in the trace now. */
static void held_release(mc_simsvc *s, uint64_t released)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n_held; i++) {
        if (s->held[i].max_tick <= released)
            held_ack_free(s->held[i].b);
        else
            s->held[k++] = s->held[i];
    }
    s->n_held = k;
}

static void held_release_all(mc_simsvc *s)
{
    for (size_t i = 0; i < s->n_held; i++)
        held_ack_free(s->held[i].b);
    s->n_held = 0;
}

static void on_ops_batch(void *ctx, mc_bus_batch *b)
{
    mc_simsvc *s = ctx;
    if (s->shutting_down) {
        mc_bus_batch_free(b); /* unacked: redelivered to the next run */
        return;
    }
    uint64_t max_tick = 0;
    bool progress = false;
    size_t n = mc_bus_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        if (!handle_ops_msg(s, mc_bus_batch_msg(b, i), &max_tick, &progress)) {
            for (size_t j = i; j < n; j++)
                mc_bus_msg_nak(mc_bus_batch_msg(b, j), 200, NULL);
            break;
        }
    }
    /* Acks: at once, or once every message of the batch is in the trace
     * (the reorder buffer writes a tick when the orchestrator closes it). */
    if (s->rec != NULL && max_tick > mc_simrec_released(s->rec) && s->n_held < HELD_MAX) {
        s->held[s->n_held].b = b;
        s->held[s->n_held].max_tick = max_tick;
        s->n_held++;
    } else {
        held_ack_free(b);
    }
    if (s->rec != NULL)
        held_release(s, mc_simrec_released(s->rec));
    if (progress)
        pump(s);
}

/* ------------------------------------------------------------- control API */

typedef struct state_buf {
    Sim__V1__SimulationState st;
    Sim__V1__Fault *faults;
    Sim__V1__Fault **ptrs;
} state_buf;

static void state_fill(mc_simsvc *s, state_buf *b)
{
    memset(b, 0, sizeof *b);
    sim__v1__simulation_state__init(&b->st);
    Sim__V1__SimulationState *st = &b->st;
    st->tick = mc_engine_tick(&s->eng);
    st->speed = s->max_speed ? 0 : s->speed;
    st->max_speed = s->max_speed;
    st->mode = s->cfg.mode == MC_SIMSVC_LOCKSTEP
                   ? SIM__V1__SIMULATION_MODE__SIMULATION_MODE_LOCKSTEP
                   : SIM__V1__SIMULATION_MODE__SIMULATION_MODE_REALTIME;
    st->scenario = (char *)mc_engine_scenario_name(&s->eng);
    st->seed = mc_engine_seed(&s->eng);
    st->node_count = mc_engine_node_count(&s->eng);
    st->service_count = mc_engine_service_count(&s->eng);
    st->running = s->running;
    st->run_id = (char *)run_id(s);
    st->sim_time_unix_ms = mc_engine_sim_time_unix_ms(&s->eng);
    st->waiting_for = s->waiting ? s->waiting_for : "";
    size_t n = mc_engine_fault_count(&s->eng);
    if (n > 0) {
        b->faults = calloc(n, sizeof *b->faults);
        b->ptrs = calloc(n, sizeof *b->ptrs);
        if (b->faults != NULL && b->ptrs != NULL) {
            for (size_t i = 0; i < n; i++) {
                Sim__V1__Fault f = SIM__V1__FAULT__INIT;
                mc_fault_state fs;
                if (mc_engine_fault_get(&s->eng, i, &f, &fs) != MC_OK || fs != MC_FAULT_ACTIVE)
                    continue;
                b->faults[st->n_active_faults] = f;
                b->ptrs[st->n_active_faults] = &b->faults[st->n_active_faults];
                st->n_active_faults++;
            }
            st->active_faults = b->ptrs;
        }
    }
}

static void state_free(state_buf *b)
{
    free(b->faults);
    free(b->ptrs);
}

#define RESPOND_STATE(call, s, Type, TYPE_INIT)                                                    \
    do {                                                                                           \
        state_buf sb_;                                                                             \
        state_fill((s), &sb_);                                                                     \
        Type resp_ = TYPE_INIT;                                                                    \
        resp_.state = &sb_.st;                                                                     \
        mc_http_connect_respond((call), &resp_.base);                                              \
        state_free(&sb_);                                                                          \
    } while (0)

static void do_play(mc_simsvc *s)
{
    if (s->running)
        return;
    s->running = true;
    s->stalled = false;
    s->due_set = false;
    mc_http_gauge_set(s->m.running, 1);
    MC_LOG_INFO("playing", MC_LF_STR("run_id", run_id(s)),
                MC_LF_UINT("tick", mc_engine_tick(&s->eng)));
    control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_RESUMED,
                  "the run was resumed at tick %" PRIu64, mc_engine_tick(&s->eng));
    pump(s);
}

static void on_play(mc_http_connect_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    mc_simsvc *s = ctx;
    do_play(s);
    RESPOND_STATE(call, s, Sim__V1__PlayResponse, SIM__V1__PLAY_RESPONSE__INIT);
}

static void on_pause(mc_http_connect_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    mc_simsvc *s = ctx;
    if (s->running) {
        s->running = false;
        mc_http_gauge_set(s->m.running, 0);
        if (s->stall_armed) {
            uv_timer_stop(&s->stall_timer);
            s->stall_armed = false;
        }
        MC_LOG_INFO("paused", MC_LF_STR("run_id", run_id(s)),
                    MC_LF_UINT("tick", mc_engine_tick(&s->eng)));
        control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_PAUSED,
                      "the run was paused at tick %" PRIu64, mc_engine_tick(&s->eng));
        pump(s);
    }
    RESPOND_STATE(call, s, Sim__V1__PauseResponse, SIM__V1__PAUSE_RESPONSE__INIT);
}

static void on_set_speed(mc_http_connect_call *call, const ProtobufCMessage *reqm, void *ctx)
{
    mc_simsvc *s = ctx;
    const Sim__V1__SetSpeedRequest *req = (const Sim__V1__SetSpeedRequest *)reqm;
    if (!req->max_speed) {
        if (!isfinite(req->ticks_per_second) || req->ticks_per_second <= 0) {
            mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                                 "ticks_per_second: must be greater than 0 (or set max_speed), "
                                 "got %g",
                                 req->ticks_per_second);
            return;
        }
        if (req->ticks_per_second > MC_SIMSVC_MAX_SPEED) {
            mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                                 "ticks_per_second: at most %g (use max_speed for as fast as "
                                 "possible), got %g",
                                 MC_SIMSVC_MAX_SPEED, req->ticks_per_second);
            return;
        }
        s->speed = req->ticks_per_second;
    }
    s->max_speed = req->max_speed;
    s->due_set = false;
    MC_LOG_INFO("speed changed", MC_LF_DOUBLE("ticks_per_second", s->speed),
                MC_LF_BOOL("max_speed", s->max_speed));
    if (s->max_speed)
        control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_SPEED_CHANGED,
                      "speed set to as fast as possible");
    else
        control_event(s, SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_SPEED_CHANGED,
                      "speed set to %g ticks per second", s->speed);
    uv_timer_stop(&s->tick_timer);
    pump(s);
    RESPOND_STATE(call, s, Sim__V1__SetSpeedResponse, SIM__V1__SET_SPEED_RESPONSE__INIT);
}

static void on_get_state(mc_http_connect_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    RESPOND_STATE(call, (mc_simsvc *)ctx, Sim__V1__GetStateResponse,
                  SIM__V1__GET_STATE_RESPONSE__INIT);
}

/* Switches to a new run after the engine changed (reset or new scenario). */
static mc_status new_run(mc_simsvc *s, const char *why, mc_error *err)
{
    mc_status st = run_begin(s, why, err);
    if (st != MC_OK) {
        /* Without its trace the run may not go on silently. */
        s->running = false;
        mc_http_gauge_set(s->m.running, 0);
        return st;
    }
    mc_http_gauge_set(s->m.tick, 0);
    uv_timer_stop(&s->tick_timer);
    pump(s);
    return MC_OK;
}

static void on_set_scenario(mc_http_connect_call *call, const ProtobufCMessage *reqm, void *ctx)
{
    mc_simsvc *s = ctx;
    const Sim__V1__SetScenarioRequest *req = (const Sim__V1__SetScenarioRequest *)reqm;
    const char *name = req->scenario ? req->scenario : "";
    mc_scenario sc;
    mc_error err;
    mc_error_clear(&err);
    if (name[0] == '\0') {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "scenario: required");
        return;
    }
    mc_status st = mc_simsvc_scenario_load(s->cfg.scenario_dir, name, &sc, &err);
    if (st != MC_OK) {
        mc_http_connect_fail(call,
                             st == MC_ERR_IO || st == MC_ERR_NOMEM ? MC_CONNECT_INTERNAL
                                                                   : MC_CONNECT_INVALID_ARGUMENT,
                             "scenario: %s", err.msg);
        return;
    }
    mc_engine_config ecfg = s->ecfg;
    ecfg.seed = req->seed != 0 ? req->seed : mc_engine_seed(&s->eng);
    mc_engine next;
    memset(&next, 0, sizeof next);
    st = mc_engine_init(&next, &sc, &ecfg, &err);
    mc_scenario_free(&sc);
    if (st != MC_OK) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "scenario: %s", err.msg);
        return;
    }
    /* The old run ends cleanly (its trace gets a footer); what it still has
     * to publish keeps its own run id (out_run). */
    run_end(s);
    mc_engine_deinit(&s->eng);
    s->eng = next;
    s->ecfg = ecfg;
    mc_error_clear(&err);
    if (new_run(s, "SetScenario", &err) != MC_OK) {
        mc_http_connect_fail(call, MC_CONNECT_INTERNAL, "%s", err.msg);
        return;
    }
    RESPOND_STATE(call, s, Sim__V1__SetScenarioResponse, SIM__V1__SET_SCENARIO_RESPONSE__INIT);
}

static void on_reset(mc_http_connect_call *call, const ProtobufCMessage *reqm, void *ctx)
{
    mc_simsvc *s = ctx;
    const Sim__V1__ResetRequest *req = (const Sim__V1__ResetRequest *)reqm;
    mc_error err;
    mc_error_clear(&err);
    run_end(s);
    if (mc_engine_reset(&s->eng, req->seed, &err) != MC_OK) {
        mc_http_connect_fail(call, MC_CONNECT_INTERNAL, "reset: %s", err.msg);
        return;
    }
    s->ecfg.seed = mc_engine_seed(&s->eng);
    if (new_run(s, "Reset", &err) != MC_OK) {
        mc_http_connect_fail(call, MC_CONNECT_INTERNAL, "%s", err.msg);
        return;
    }
    RESPOND_STATE(call, s, Sim__V1__ResetResponse, SIM__V1__RESET_RESPONSE__INIT);
}

/* Records an injected fault as an input of the engine core (recorder.h
 * "Inputs"): the fault as given, stamped with the tick the engine last
 * completed; the core schedules it for the next tick at the earliest, and
 * the re-drive hands it over at the same point. */
static void trace_input_fault(mc_simsvc *s, const Sim__V1__Fault *f)
{
    if (s->rec == NULL)
        return;
    uint64_t tick = mc_engine_tick(&s->eng);
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = (char *)run_id(s);
    stamp.tick = tick;
    stamp.producer = MC_SIMSVC_INPUTS_PRODUCER;
    stamp.producer_seq = ++s->input_seq;
    Trace__V1__EngineInput in = TRACE__V1__ENGINE_INPUT__INIT;
    in.stamp = &stamp;
    in.inject_fault = (Sim__V1__Fault *)f;
    size_t len = trace__v1__engine_input__get_packed_size(&in);
    uint8_t *buf = malloc(len ? len : 1);
    mc_error err;
    mc_error_clear(&err);
    mc_status st = MC_ERR_NOMEM;
    if (buf != NULL) {
        trace__v1__engine_input__pack(&in, buf);
        st = mc_simrec_input(s->rec, tick, MC_SUBJECT_ENGINE_INPUTS, MC_SIMSVC_INPUTS_PRODUCER,
                             stamp.producer_seq, buf, len, &err);
    }
    free(buf);
    if (st != MC_OK) {
        mc_http_counter_inc(s->m.trace_errors);
        MC_LOG_ERROR("injected fault not recorded; the trace will not re-drive the engine",
                     MC_LF_UINT("tick", tick), MC_LF_STR("error", err.msg));
    }
}

static void on_inject_fault(mc_http_connect_call *call, const ProtobufCMessage *reqm, void *ctx)
{
    mc_simsvc *s = ctx;
    const Sim__V1__InjectFaultRequest *req = (const Sim__V1__InjectFaultRequest *)reqm;
    const Sim__V1__Fault *f = req->fault;
    if (f == NULL) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "fault: required");
        return;
    }
    const char *type_name = mc_scenario_fault_type_name((int)f->type);
    if (f->type == SIM__V1__FAULT_TYPE__FAULT_TYPE_UNSPECIFIED || type_name == NULL) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                             "fault.type: must be a known fault type other than "
                             "FAULT_TYPE_UNSPECIFIED, got %d",
                             (int)f->type);
        return;
    }
    const char *target = f->target_id ? f->target_id : "";
    if (target[0] == '\0') {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "fault.target_id: required");
        return;
    }
    uint32_t idx;
    bool is_node = mc_engine_node_find(&s->eng, target, &idx) == MC_OK;
    bool is_service = mc_engine_service_find(&s->eng, target, &idx) == MC_OK;
    if (!is_node && !is_service) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                             "fault.target_id: no node or service \"%s\" in scenario %s", target,
                             mc_engine_scenario_name(&s->eng));
        return;
    }
    mc_target_kind need = mc_scenario_fault_target_kind((int)f->type);
    if ((need == MC_TARGET_NODE && !is_node) || (need == MC_TARGET_SERVICE && !is_service)) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                             "fault.target_id: a %s fault needs a %s, \"%s\" is not one",
                             type_name, need == MC_TARGET_NODE ? "node" : "service", target);
        return;
    }
    const char *range = mc_scenario_fault_intensity_check((int)f->type, f->intensity);
    if (range != NULL) {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT,
                             "fault.intensity: %g is out of range for %s: %s", f->intensity,
                             type_name, range);
        return;
    }
    Sim__V1__Fault scheduled = SIM__V1__FAULT__INIT;
    mc_error err;
    mc_error_clear(&err);
    mc_status st = mc_engine_inject_fault(&s->eng, f, &scheduled, &err);
    if (st != MC_OK) {
        mc_http_connect_fail(call,
                             st == MC_ERR_LIMIT ? MC_CONNECT_RESOURCE_EXHAUSTED
                                                : MC_CONNECT_INVALID_ARGUMENT,
                             "fault: %s", err.msg);
        return;
    }
    trace_input_fault(s, f);
    MC_LOG_INFO("fault injected", MC_LF_STR("fault_id", scheduled.fault_id),
                MC_LF_STR("type", type_name), MC_LF_STR("target_id", target),
                MC_LF_DOUBLE("intensity", scheduled.intensity),
                MC_LF_UINT("start_tick", scheduled.start_tick));
    Sim__V1__InjectFaultResponse resp = SIM__V1__INJECT_FAULT_RESPONSE__INIT;
    resp.fault = &scheduled;
    mc_http_connect_respond(call, &resp.base);
}

static void on_get_topology(mc_http_connect_call *call, const ProtobufCMessage *req, void *ctx)
{
    (void)req;
    mc_simsvc *s = ctx;
    const mc_engine *e = &s->eng;
    size_t nn = mc_engine_node_count(e), ns = mc_engine_service_count(e);
    size_t nr = mc_engine_replica_count(e);
    Sim__V1__NodeInfo *nodes = calloc(nn ? nn : 1, sizeof *nodes);
    Sim__V1__NodeInfo **nptr = calloc(nn ? nn : 1, sizeof *nptr);
    Sim__V1__ServiceInfo *svcs = calloc(ns ? ns : 1, sizeof *svcs);
    Sim__V1__ServiceInfo **sptr = calloc(ns ? ns : 1, sizeof *sptr);
    char **placement = calloc(nr ? nr : 1, sizeof *placement);
    char **deps = calloc(e->n_deps ? e->n_deps : 1, sizeof *deps);
    size_t *rep_first = calloc(ns + 1, sizeof *rep_first);
    if (!nodes || !nptr || !svcs || !sptr || !placement || !deps || !rep_first) {
        mc_http_connect_fail(call, MC_CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nn; i++) {
        mc_engine_node_view v;
        sim__v1__node_info__init(&nodes[i]);
        if (mc_engine_node_get(e, (uint32_t)i, &v) != MC_OK)
            continue;
        nodes[i].id = (char *)v.id;
        nodes[i].cpu_cores = (uint32_t)(v.cpu_cores + 0.5);
        nodes[i].memory_mb = (uint32_t)(v.memory_mb + 0.5);
        nodes[i].status = (Common__V1__NodeStatus)v.status;
        nptr[i] = &nodes[i];
    }
    /* Placement: one node id per live replica, grouped by service. */
    size_t *count = rep_first; /* counts first, then turned into offsets */
    for (size_t i = 0; i < nr; i++) {
        mc_engine_replica_view rv;
        if (mc_engine_replica_get(e, i, &rv) == MC_OK && rv.state != MC_REPLICA_REMOVED &&
            rv.service < ns)
            count[rv.service + 1]++;
    }
    for (size_t i = 0; i < ns; i++)
        rep_first[i + 1] += rep_first[i];
    for (size_t i = 0; i < ns; i++) {
        sim__v1__service_info__init(&svcs[i]);
        svcs[i].node_ids = placement + rep_first[i];
    }
    for (size_t i = 0; i < nr; i++) {
        mc_engine_replica_view rv;
        if (mc_engine_replica_get(e, i, &rv) != MC_OK || rv.state == MC_REPLICA_REMOVED ||
            rv.service >= ns)
            continue;
        mc_engine_node_view node;
        if (mc_engine_node_get(e, rv.node, &node) != MC_OK)
            continue;
        Sim__V1__ServiceInfo *si = &svcs[rv.service];
        si->node_ids[si->n_node_ids++] = (char *)node.id;
    }
    size_t dep_at = 0;
    for (size_t i = 0; i < ns; i++) {
        mc_engine_service_view v;
        if (mc_engine_service_get(e, (uint32_t)i, &v) != MC_OK)
            continue;
        Sim__V1__ServiceInfo *si = &svcs[i];
        si->id = (char *)v.id;
        si->replicas = v.ready_replicas;
        si->max_replicas = v.max_replicas;
        si->status = (Common__V1__ServiceStatus)v.status;
        /* The dependency graph has no getter in engine.h yet; it is read
         * from the engine's (documented, read-only) service table. */
        const mc_engine_service *es = &e->services[i];
        si->depends_on = deps + dep_at;
        for (uint32_t k = 0; k < es->dep_count && dep_at < e->n_deps; k++) {
            uint32_t t = e->dep_target[es->dep_first + k];
            if (t < ns) {
                deps[dep_at++] = (char *)e->services[t].id;
                si->n_depends_on++;
            }
        }
        sptr[i] = si;
    }
    {
        Sim__V1__Topology topo = SIM__V1__TOPOLOGY__INIT;
        topo.n_nodes = nn;
        topo.nodes = nptr;
        topo.n_services = ns;
        topo.services = sptr;
        Sim__V1__GetTopologyResponse resp = SIM__V1__GET_TOPOLOGY_RESPONSE__INIT;
        resp.topology = &topo;
        mc_http_connect_respond(call, &resp.base);
    }
out:
    free(nodes);
    free(nptr);
    free(svcs);
    free(sptr);
    free(placement);
    free(deps);
    free(rep_first);
}

static const mc_http_connect_method k_methods[] = {
    {"Play", &sim__v1__play_request__descriptor, &sim__v1__play_response__descriptor, on_play,
     false},
    {"Pause", &sim__v1__pause_request__descriptor, &sim__v1__pause_response__descriptor, on_pause,
     false},
    {"SetSpeed", &sim__v1__set_speed_request__descriptor, &sim__v1__set_speed_response__descriptor,
     on_set_speed, false},
    {"GetState", &sim__v1__get_state_request__descriptor, &sim__v1__get_state_response__descriptor,
     on_get_state, false},
    {"SetScenario", &sim__v1__set_scenario_request__descriptor,
     &sim__v1__set_scenario_response__descriptor, on_set_scenario, false},
    {"InjectFault", &sim__v1__inject_fault_request__descriptor,
     &sim__v1__inject_fault_response__descriptor, on_inject_fault, false},
    {"Reset", &sim__v1__reset_request__descriptor, &sim__v1__reset_response__descriptor, on_reset,
     false},
    {"GetTopology", &sim__v1__get_topology_request__descriptor,
     &sim__v1__get_topology_response__descriptor, on_get_topology, false},
};

static const mc_http_connect_service k_service = {
    "sim.v1.SimulationService", k_methods, sizeof k_methods / sizeof k_methods[0]};

/* ------------------------------------------------------------------ metrics */

static mc_status metrics_register(mc_simsvc *s, mc_error *err)
{
    mc_status st = mc_http_metrics_new(&s->reg, err);
#define COUNTER(field, name, help, lbl, nl)                                                        \
    if (st == MC_OK)                                                                               \
    st = mc_http_metrics_counter(s->reg, name, help, lbl, nl, &s->m.field, err)
    static const mc_http_metric_label applied[] = {{"result", "applied"}};
    static const mc_http_metric_label refused[] = {{"result", "refused"}};
    COUNTER(ticks, "microcloud_sim_ticks_total", "Ticks the engine stepped", NULL, 0);
    COUNTER(publish_failures, "microcloud_sim_publish_failures_total",
            "Publishes that failed (retried until they succeed, or finally failed)", NULL, 0);
    COUNTER(publish_retries, "microcloud_sim_publish_backpressure_total",
            "Publishes deferred because too many acks were pending", NULL, 0);
    COUNTER(cmd_received, "microcloud_sim_commands_received_total",
            "ApplyActionCommands consumed from ops.commands", NULL, 0);
    COUNTER(cmd_applied, "microcloud_sim_commands_total", "Commands the engine handled, by result",
            applied, 1);
    COUNTER(cmd_refused, "microcloud_sim_commands_total", "Commands the engine handled, by result",
            refused, 1);
    COUNTER(cmd_other_run, "microcloud_sim_commands_other_run_total",
            "Commands ignored because they belong to another run", NULL, 0);
    COUNTER(deadlettered, "microcloud_sim_deadlettered_total",
            "OPS messages the engine could not decode or use, sent to the dead-letter subject", NULL,
            0);
    COUNTER(lockstep_waits, "microcloud_sim_lockstep_waits_total",
            "Times lockstep waited for the orchestrator's watermark", NULL, 0);
    COUNTER(lockstep_stalls, "microcloud_sim_lockstep_stalls_total",
            "Times lockstep waited past its stall timeout and paused", NULL, 0);
    COUNTER(trace_late, "microcloud_sim_trace_late_total",
            "Messages that arrived after their tick was written to the trace", NULL, 0);
    COUNTER(trace_errors, "microcloud_sim_trace_errors_total",
            "Trace recording errors (messages not recorded, write failures)", NULL, 0);
#undef COUNTER
    if (st == MC_OK)
        st = mc_http_metrics_gauge(s->reg, "microcloud_sim_tick", "Last completed tick", NULL, 0,
                                   &s->m.tick, err);
    if (st == MC_OK)
        st = mc_http_metrics_gauge(s->reg, "microcloud_sim_running", "1 when playing, 0 when paused",
                                   NULL, 0, &s->m.running, err);
    if (st == MC_OK)
        st = mc_http_metrics_gauge(s->reg, "microcloud_sim_trace_tick",
                                   "Last tick whose records are in the trace (complete in lockstep)",
                                   NULL, 0, &s->m.trace_tick, err);
    static const double tick_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                         0.01,   0.025,   0.05,   0.1,   0.25,   1};
    if (st == MC_OK)
        st = mc_http_metrics_histogram(s->reg, "microcloud_sim_tick_duration_seconds",
                                       "Time of one engine step (simulation and packing)", NULL, 0,
                                       tick_bounds, sizeof tick_bounds / sizeof tick_bounds[0],
                                       &s->m.tick_seconds, err);
    static const double wait_bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60};
    if (st == MC_OK)
        st = mc_http_metrics_histogram(s->reg, "microcloud_sim_lockstep_wait_seconds",
                                       "Time lockstep waited for the orchestrator's watermark",
                                       NULL, 0, wait_bounds, sizeof wait_bounds / sizeof wait_bounds[0],
                                       &s->m.wait_seconds, err);
    return st;
}

/* ----------------------------------------------------------------- lifecycle */

mc_status mc_simsvc_new(uv_loop_t *loop, const mc_simsvc_config *cfg, const mc_scenario *sc,
                        mc_simsvc **out, mc_error *err)
{
    *out = NULL;
    mc_simsvc *s = calloc(1, sizeof *s);
    if (s == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    s->loop = loop;
    s->cfg = *cfg;
    s->prefix_len = cfg->subject_prefix ? strlen(cfg->subject_prefix) : 0;
    s->speed = cfg->speed > 0 ? cfg->speed : 1;
    s->max_speed = cfg->max_speed;
    s->ecfg.seed = cfg->seed;
    s->ecfg.node_count = cfg->topology_nodes;
    s->ecfg.service_count = cfg->topology_services;
    s->ecfg.chunk_max_samples = cfg->chunk_samples;
    s->setup = malloc(sizeof *s->setup);
    if (s->setup == NULL) {
        free(s);
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (cfg->setup != NULL) {
        /* A plain copy: the caller's setup holds no scenario. */
        *s->setup = *cfg->setup;
        memset(&s->setup->sc, 0, sizeof s->setup->sc);
    } else {
        mc_setup_init(s->setup);
        s->setup->approval_mode = MC_APPROVAL_MODE_MANUAL; /* the orchestrator's default */
    }
    s->cfg.setup = NULL;
    mc_status st = mc_engine_init(&s->eng, sc, &s->ecfg, err);
    if (st != MC_OK) {
        free(s->setup);
        free(s);
        return st;
    }
    s->eng_ok = true;
    s->ctl_ok = mc_outbox_init(&s->ctl, CTL_OUTBOX_MAX) == MC_OK;
    st = metrics_register(s, err);
    if (st != MC_OK) {
        mc_simsvc_free(s);
        return st;
    }
    *out = s;
    return MC_OK;
}

static void on_signal(uv_signal_t *h, int signum)
{
    mc_simsvc *s = h->data;
    MC_LOG_INFO("signal received; shutting down", MC_LF_INT("signal", signum));
    mc_simsvc_shutdown(s);
}

static void on_http_done(mc_http_server *srv, bool forced, void *ctx)
{
    (void)srv;
    mc_simsvc *s = ctx;
    s->http_done = true;
    if (forced)
        MC_LOG_WARN("HTTP shutdown forced", MC_LF_BOOL("forced", forced));
    if (s->handles_init) {
        uv_close((uv_handle_t *)&s->tick_timer, NULL);
        uv_close((uv_handle_t *)&s->stall_timer, NULL);
        uv_close((uv_handle_t *)&s->drain_timer, NULL);
        uv_close((uv_handle_t *)&s->sig_int, NULL);
        uv_close((uv_handle_t *)&s->sig_term, NULL);
        s->handles_init = false;
    }
    mc_bus_free(s->bus);
    s->bus = NULL;
    MC_LOG_INFO("sim-engine stopped", MC_LF_INT("exit_status", s->exit_status));
}

static void finish_shutdown(mc_simsvc *s)
{
    uv_timer_stop(&s->drain_timer);
    run_end(s);
    if (s->http != NULL)
        mc_http_server_shutdown(s->http, on_http_done, s);
    else
        on_http_done(NULL, false, s);
}

static void on_drain(uv_timer_t *t)
{
    mc_simsvc *s = t->data;
    bool handed = s->bus == NULL || publish_pending(s);
    uint64_t pending = s->bus ? mc_bus_acks_pending(s->bus) : 0;
    if (handed && pending == 0) {
        finish_shutdown(s);
        return;
    }
    if (now_ns() >= s->shutdown_deadline_ns) {
        MC_LOG_ERROR("shutdown: publishes still pending after the wait",
                     MC_LF_BOOL("all_handed_to_bus", handed), MC_LF_UINT("acks_pending", pending));
        s->exit_status = 1;
        finish_shutdown(s);
        return;
    }
    uv_timer_start(&s->drain_timer, on_drain, 10, 0);
}

/* The shutdown proper, always from the loop: closing the bus before the
 * loop ever ran (a failed start) leaves nats.c's libuv adapter with work
 * queued for a connection that is gone, and libuv aborts. */
static void on_shutdown_begin(uv_timer_t *t)
{
    mc_simsvc *s = t->data;
    mc_bus_consumer_close(s->ops);
    s->ops = NULL;
    s->shutdown_deadline_ns = now_ns() + (uint64_t)SHUTDOWN_ACK_WAIT_MS * 1000000u;
    on_drain(&s->drain_timer);
}

void mc_simsvc_shutdown(mc_simsvc *s)
{
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    s->running = false;
    if (!s->handles_init) {
        finish_shutdown(s);
        return;
    }
    uv_timer_stop(&s->tick_timer);
    uv_timer_stop(&s->stall_timer);
    s->stall_armed = false;
    uv_timer_start(&s->drain_timer, on_shutdown_begin, 0, 0);
}

/* ------------------------------------------------------------------ resume */

/* What a crashed engine left on the bus for the run this process is about
 * to start (same scenario, seed and reset count, hence the same run id). */
typedef struct resume_plan {
    uint64_t tick; /* the last tick the dead process completed (0: start over) */
    uint64_t last_seq; /* the OPS stream's last sequence read back */
    bool orch_seen, det_seen, agent_seen;
    uint64_t orch_wm, det_wm, agent_wm;
    Ops__V1__ApplyActionCommand **cmds; /* the run's commands, in stream order */
    size_t n_cmds;
    size_t cap_cmds;
} resume_plan;

static void resume_plan_free(resume_plan *p)
{
    for (size_t i = 0; i < p->n_cmds; i++)
        ops__v1__apply_action_command__free_unpacked(p->cmds[i], NULL);
    free(p->cmds);
    memset(p, 0, sizeof *p);
}

static void resume_watermark(resume_plan *p, const char *who, uint64_t tick)
{
    if (strcmp(who, "orchestrator") == 0) {
        if (!p->orch_seen || tick > p->orch_wm)
            p->orch_wm = tick;
        p->orch_seen = true;
    } else if (strcmp(who, "detector") == 0) {
        if (!p->det_seen || tick > p->det_wm)
            p->det_wm = tick;
        p->det_seen = true;
    } else if (strcmp(who, "agent") == 0) {
        if (!p->agent_seen || tick > p->agent_wm)
            p->agent_wm = tick;
        p->agent_seen = true;
    }
}

/* Takes one OPS message read back: the run's commands are kept, its
 * watermarks noted; everything else is not an input of the core. */
static void resume_take(const mc_simsvc *s, resume_plan *p, const char *full, const uint8_t *data,
                        size_t len)
{
    const char *subject = strip_prefix(s, full);
    if (subject == NULL)
        return;
    if (strcmp(subject, "ops.commands") == 0) {
        Ops__V1__ApplyActionCommand *cmd = ops__v1__apply_action_command__unpack(NULL, len, data);
        if (cmd == NULL)
            return;
        if (!same_run(s, cmd->stamp) || p->n_cmds >= RESUME_CMDS_MAX) {
            ops__v1__apply_action_command__free_unpacked(cmd, NULL);
            return;
        }
        if (p->n_cmds == p->cap_cmds) {
            size_t cap = p->cap_cmds ? p->cap_cmds * 2 : 64;
            Ops__V1__ApplyActionCommand **n = realloc(p->cmds, cap * sizeof *n);
            if (n == NULL) {
                ops__v1__apply_action_command__free_unpacked(cmd, NULL);
                return;
            }
            p->cmds = n;
            p->cap_cmds = cap;
        }
        p->cmds[p->n_cmds++] = cmd;
    } else if (strncmp(subject, "ops.watermark.", 14) == 0) {
        Ops__V1__Watermark *wm = ops__v1__watermark__unpack(NULL, len, data);
        if (wm == NULL)
            return;
        if (same_run(s, wm->stamp))
            resume_watermark(p, subject + 14, wm->tick);
        ops__v1__watermark__free_unpacked(wm, NULL);
    }
}

/* Reads back from JetStream what a crashed engine of this run left: its
 * last sim.watermark on the SIM stream (the last tick it completed) and the
 * whole OPS stream (the commands it had consumed, acked or not, and the
 * pipeline's watermarks). A separate short-lived synchronous connection:
 * the bus's own runs on the loop, which is not running yet. Only lockstep
 * resumes (realtime is not a function of the bus contents). Leaves
 * p->tick 0 when there is nothing to resume or the bus cannot tell. */
static void resume_read(mc_simsvc *s, resume_plan *p)
{
    memset(p, 0, sizeof *p);
    if (s->cfg.mode != MC_SIMSVC_LOCKSTEP)
        return;
    natsOptions *o = NULL;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsMsg *last = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    const char *why = NULL;
    natsStatus ns = natsOptions_Create(&o);
    if (ns == NATS_OK)
        ns = natsOptions_SetURL(o, s->cfg.nats.url);
    if (ns == NATS_OK && s->cfg.nats.user != NULL && s->cfg.nats.user[0] != '\0')
        ns = natsOptions_SetUserInfo(o, s->cfg.nats.user, s->cfg.nats.password);
    if (ns == NATS_OK && s->cfg.nats.token != NULL && s->cfg.nats.token[0] != '\0')
        ns = natsOptions_SetToken(o, s->cfg.nats.token);
    if (ns == NATS_OK)
        ns = natsOptions_SetTimeout(o, 2000);
    if (ns == NATS_OK)
        ns = natsConnection_Connect(&nc, o);
    if (ns == NATS_OK)
        ns = natsConnection_JetStream(&js, nc, NULL);
    if (ns != NATS_OK) {
        why = "cannot connect for the read-back";
        goto done;
    }
    char wm_subject[MC_SUBJECT_MAX + 128];
    full_subject(s, MC_ENGINE_SUBJECT_WATERMARK, wm_subject, sizeof wm_subject);
    ns = js_GetLastMsg(&last, js, mc_bus_stream_name(s->bus, MC_BUS_STREAM_SIM), wm_subject, NULL,
                       &jerr);
    if (ns != NATS_OK)
        goto done; /* no watermark on the stream: a fresh run */
    Ops__V1__Watermark *wm =
        ops__v1__watermark__unpack(NULL, (size_t)natsMsg_GetDataLength(last),
                                   (const uint8_t *)natsMsg_GetData(last));
    uint64_t w = 0;
    if (wm != NULL && same_run(s, wm->stamp))
        w = wm->tick;
    ops__v1__watermark__free_unpacked(wm, NULL);
    if (w == 0)
        goto done; /* the last run on the bus is another one */

    const char *ops = mc_bus_stream_name(s->bus, MC_BUS_STREAM_OPS);
    ns = js_GetStreamInfo(&si, js, ops, NULL, &jerr);
    if (ns != NATS_OK) {
        why = "cannot read the OPS stream's state";
        goto done;
    }
    uint64_t first = si->State.FirstSeq, lastseq = si->State.LastSeq;
    if (lastseq >= first && lastseq - first >= RESUME_OPS_MAX) {
        why = "the OPS stream is too long to read back";
        goto done;
    }
    for (uint64_t seq = first; seq != 0 && seq <= lastseq; seq++) {
        natsMsg *m = NULL;
        jerr = 0;
        ns = js_GetMsg(&m, js, ops, seq, NULL, &jerr);
        if (ns == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
            continue; /* deleted or expired */
        }
        if (ns != NATS_OK) {
            why = "reading the OPS stream back failed";
            goto done;
        }
        resume_take(s, p, natsMsg_GetSubject(m), (const uint8_t *)natsMsg_GetData(m),
                    (size_t)natsMsg_GetDataLength(m));
        natsMsg_Destroy(m);
    }
    if (p->n_cmds >= RESUME_CMDS_MAX) {
        why = "the run has too many commands to read back";
        goto done;
    }
    p->tick = w;
    p->last_seq = lastseq;
done:
    if (why != NULL) {
        MC_LOG_ERROR("the crashed run cannot be resumed; starting it over",
                     MC_LF_STR("run_id", run_id(s)), MC_LF_STR("why", why),
                     MC_LF_STR("error", natsStatus_GetText(ns)), MC_LF_INT("js_error", (int64_t)jerr));
        resume_plan_free(p);
    }
    natsMsg_Destroy(last);
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(o);
}

/* Hands the core the read-back commands stamped with tick t, in stream
 * order: the live run applied the commands of tick t after step t (see
 * EARLY_COMMANDS_MAX), and so does the re-drive. */
static void resume_apply_tick(mc_simsvc *s, resume_plan *p, uint64_t t)
{
    for (size_t i = 0; i < p->n_cmds; i++) {
        Ops__V1__ApplyActionCommand *cmd = p->cmds[i];
        if (cmd == NULL || cmd->stamp->tick != t)
            continue;
        mc_error err;
        mc_error_clear(&err);
        if (mc_engine_apply_command(&s->eng, cmd, &err) != MC_OK)
            MC_LOG_WARN("read-back command refused by the engine (as in the live run)",
                        MC_LF_STR("command_id", cmd->command_id), MC_LF_STR("error", err.msg));
    }
}

/* Fast-forwards the fresh core to the tick the dead process completed,
 * stepping it with the commands it had, publishing nothing (its messages
 * are on the SIM stream already), and takes over the pipeline's watermarks;
 * commands for later ticks wait in the early list. The live OPS consumer
 * then skips what was read back (resume_seq). */
static mc_status resume_run(mc_simsvc *s, resume_plan *p, mc_error *err)
{
    size_t need = mc_engine_max_messages_per_tick(&s->eng);
    if (!s->out_ok || s->out.max_items < need) {
        mc_outbox_deinit(&s->out);
        s->out_ok = mc_outbox_init(&s->out, need) == MC_OK;
        if (!s->out_ok)
            return mc_error_set(err, MC_ERR_NOMEM, "resume: out of memory for the outbox");
    }
    resume_apply_tick(s, p, 0);
    while (mc_engine_tick(&s->eng) < p->tick) {
        mc_status st = mc_engine_step(&s->eng, &s->out, err);
        mc_outbox_clear(&s->out);
        if (st != MC_OK)
            return mc_error_wrap(err, "resume: step %" PRIu64, mc_engine_tick(&s->eng) + 1);
        resume_apply_tick(s, p, mc_engine_tick(&s->eng));
    }
    s->out_next = 0;
    for (size_t i = 0; i < p->n_cmds; i++) {
        if (p->cmds[i]->stamp->tick <= p->tick)
            continue;
        if (s->n_early == EARLY_COMMANDS_MAX) {
            MC_LOG_WARN("too many read-back commands for later ticks; dropped",
                        MC_LF_STR("command_id", p->cmds[i]->command_id));
            continue;
        }
        s->early[s->n_early++] = p->cmds[i];
        p->cmds[i] = NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < p->n_cmds; i++)
        if (p->cmds[i] != NULL)
            p->cmds[k++] = p->cmds[i];
    p->n_cmds = k;
    s->orch_seen = p->orch_seen;
    s->orch_wm = p->orch_wm;
    s->det_seen = p->det_seen;
    s->det_wm = p->det_wm;
    s->agent_seen = p->agent_seen;
    s->agent_wm = p->agent_wm;
    s->resume_seq = p->last_seq;
    /* Control events of the resumed part must not take the de-duplication
     * ids of the dead process's. */
    s->ctl_seq = 1000000;
    mc_http_gauge_set(s->m.tick, (double)mc_engine_tick(&s->eng));
    MC_LOG_INFO("run resumed after a restart: the core was fast-forwarded without publishing",
                MC_LF_STR("run_id", run_id(s)), MC_LF_UINT("tick", mc_engine_tick(&s->eng)),
                MC_LF_UINT("ops_seq", p->last_seq), MC_LF_UINT("orchestrator_watermark", p->orch_wm),
                MC_LF_STR("trace", s->rec ? mc_simrec_path(s->rec) : ""),
                MC_LF_STR("note", "the trace of the resumed part is a new file from the next tick on; "
                                  "faults injected by InjectFault before the crash are not restored"));
    return MC_OK;
}

mc_status mc_simsvc_start(mc_simsvc *s, mc_error *err)
{
    uv_timer_init(s->loop, &s->tick_timer);
    uv_timer_init(s->loop, &s->stall_timer);
    uv_timer_init(s->loop, &s->drain_timer);
    uv_signal_init(s->loop, &s->sig_int);
    uv_signal_init(s->loop, &s->sig_term);
    s->tick_timer.data = s->stall_timer.data = s->drain_timer.data = s;
    s->sig_int.data = s->sig_term.data = s;
    s->handles_init = true;
    uv_signal_start(&s->sig_int, on_signal, SIGINT);
    uv_signal_start(&s->sig_term, on_signal, SIGTERM);

    mc_bus_options bo = {0};
    bo.name = "sim-engine";
    bo.stream_prefix = s->cfg.stream_prefix;
    bo.replicas = s->cfg.stream_replicas;
    bo.subject_prefix = s->cfg.subject_prefix;
    bo.on_publish_error = on_bus_publish_error;
    bo.on_publish_error_ctx = s;
    mc_status st = mc_bus_open(s->loop, &s->cfg.nats, &bo, &s->bus, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "connecting to NATS");

    mc_http_server_config hc = {0};
    hc.host = s->cfg.addr.host;
    hc.port = s->cfg.addr.port;
    st = mc_http_server_new(s->loop, &hc, &s->http, err);
    if (st == MC_OK)
        st = mc_http_server_add_health(s->http, NULL, NULL, err);
    if (st == MC_OK)
        st = mc_http_server_route(s->http, MC_HTTP_GET | MC_HTTP_HEAD, "/metrics",
                                  mc_http_metrics_handler, s->reg, err);
    if (st == MC_OK)
        st = mc_http_server_register_metrics(s->http, s->reg, err);
    if (st == MC_OK)
        st = mc_http_connect_register(s->http, &k_service, s, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "HTTP on %s:%u", s->cfg.addr.host, (unsigned)s->cfg.addr.port);

    /* A crashed engine restarted with the same environment has the same
     * run id: go on from where it was rather than play the run again. */
    resume_plan plan;
    resume_read(s, &plan);
    st = run_begin(s, plan.tick > 0 ? "resume" : "start", err);
    if (st == MC_OK && plan.tick > 0)
        st = resume_run(s, &plan, err);
    resume_plan_free(&plan);
    if (st != MC_OK)
        return st;

    /* The consumer comes last: its worker subscribes through the loop's
     * connection, so closing it before the loop ever ran (a start that
     * failed after it) would wait for a reply nobody reads. */
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_OPS;
    po.durable = "sim-engine";
    /* A pull request for several messages returns when it has them all or
     * when it expires, so in lockstep (a handful of OPS messages per tick,
     * each waited for) fetch one at a time: the watermark is handed over the
     * moment it is stored. Realtime favours throughput. */
    po.batch_size = s->cfg.mode == MC_SIMSVC_LOCKSTEP ? 1 : 64;
    po.fetch_wait_ms = s->cfg.mode == MC_SIMSVC_LOCKSTEP ? 1000 : 20;
    po.max_batches_inflight = HELD_MAX + 1;
    po.on_batch = on_ops_batch;
    po.ctx = s;
    st = mc_bus_pull_open(s->bus, &po, &s->ops, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "consuming the OPS stream");

    s->started = true;
    MC_LOG_INFO("sim-engine listening", MC_LF_STR("addr", s->cfg.addr.host),
                MC_LF_UINT("port", mc_http_server_port(s->http)),
                MC_LF_STR("mode", mode_name(s->cfg.mode)),
                MC_LF_DOUBLE("speed", s->max_speed ? 0 : s->speed),
                MC_LF_BOOL("max_speed", s->max_speed), MC_LF_BOOL("autostart", s->cfg.autostart),
                MC_LF_STR("stream_prefix", s->cfg.stream_prefix ? s->cfg.stream_prefix : ""),
                MC_LF_STR("subject_prefix", s->cfg.subject_prefix ? s->cfg.subject_prefix : ""));
    bool stopped = s->cfg.stop_after_ticks != 0 && mc_engine_tick(&s->eng) >= s->cfg.stop_after_ticks;
    if (s->cfg.autostart && !stopped) {
        s->running = true;
        mc_http_gauge_set(s->m.running, 1);
        schedule(s, 0);
    }
    return MC_OK;
}

void mc_simsvc_free(mc_simsvc *s)
{
    if (s == NULL)
        return;
    mc_simrec_free(s->rec);
    held_release_all(s);
    mc_bus_consumer_close(s->ops);
    mc_bus_free(s->bus);
    mc_http_server_free(s->http);
    mc_http_metrics_free(s->reg);
    mc_outbox_deinit(&s->out);
    mc_outbox_deinit(&s->ctl);
    if (s->eng_ok)
        mc_engine_deinit(&s->eng);
    early_clear(s);
    mc_setup_deinit(s->setup);
    free(s->setup);
    free(s);
}

int mc_simsvc_exit_status(const mc_simsvc *s) { return s->exit_status; }
