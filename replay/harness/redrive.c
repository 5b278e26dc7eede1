#include "harness/redrive.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "approval/approval.h"
#include "common/v1/enums.pb-c.h"
#include "core/ids.h"
#include "core/outbox.h"
#include "decider/decider.h"
#include "detector/detector.h"
#include "engine/core/engine.h"
#include "harness/loop.h"
#include "harness/subjects.h"
#include "trace/format.h"
#include "trace/v1/trace.pb-c.h"

#define OUTBOX_MAX (1u << 20)
/* Reset counts tried to find a recorded run id (a live process's later
 * runs). */
#define MC_REDRIVE_MAX_RESETS 4096

typedef struct trec {
    uint64_t tick, seq;
    uint32_t stage;
    char subject[MC_SUBJECT_MAX];
    char producer[64];
    size_t off, len;
    ProtobufCMessage *msg; /* decoded, or NULL */
} trec;

typedef struct tickbuf {
    uint64_t tick;
    bool open;
    trec *recs;
    size_t n, cap;
    uint8_t *arena;
    size_t used, acap;
    bool have_cp;
    bool cp_has[5];
    uint8_t cp[5][32];
} tickbuf;

typedef struct rd {
    const mc_redrive_options *o;
    mc_redrive_result *r;
    unsigned comps;
    mc_engine engine;
    mc_detector det;
    mc_decider dec;
    mc_approval appr;
    bool engine_ok, det_ok, dec_ok, appr_ok;
    mc_outbox out;
    bool stopped;      /* an output divergence was found: only read on */
    mc_divergence cur; /* scratch for the stage being driven */
    uint64_t offset;   /* of the last frame read */
} rd;

static void tb_clear(tickbuf *tb)
{
    for (size_t i = 0; i < tb->n; i++)
        if (tb->recs[i].msg)
            protobuf_c_message_free_unpacked(tb->recs[i].msg, NULL);
    tb->n = 0;
    tb->used = 0;
    tb->open = false;
    tb->have_cp = false;
    memset(tb->cp_has, 0, sizeof tb->cp_has);
}

static void tb_free(tickbuf *tb)
{
    tb_clear(tb);
    free(tb->recs);
    free(tb->arena);
}

static mc_status tb_add(tickbuf *tb, const mc_trace_record *rec, mc_error *err)
{
    if (tb->n == tb->cap) {
        size_t ncap = tb->cap ? tb->cap * 2 : 256;
        trec *nr = realloc(tb->recs, ncap * sizeof *nr);
        if (!nr)
            return mc_error_set(err, MC_ERR_NOMEM, "re-drive: out of memory");
        tb->recs = nr;
        tb->cap = ncap;
    }
    if (tb->used + rec->payload_len > tb->acap) {
        size_t ncap = tb->acap ? tb->acap : 1u << 20;
        while (ncap < tb->used + rec->payload_len)
            ncap *= 2;
        uint8_t *na = realloc(tb->arena, ncap);
        if (!na)
            return mc_error_set(err, MC_ERR_NOMEM, "re-drive: out of memory");
        tb->arena = na;
        tb->acap = ncap;
    }
    trec *t = &tb->recs[tb->n++];
    memset(t, 0, sizeof *t);
    t->tick = rec->tick;
    t->seq = rec->producer_seq;
    t->stage = rec->stage;
    snprintf(t->subject, sizeof t->subject, "%s", rec->subject);
    snprintf(t->producer, sizeof t->producer, "%s", rec->producer);
    t->off = tb->used;
    t->len = rec->payload_len;
    if (rec->payload_len)
        memcpy(tb->arena + tb->used, rec->payload, rec->payload_len);
    tb->used += rec->payload_len;
    t->msg = mc_subject_unpack(t->subject, tb->arena + t->off, t->len);
    if (!tb->open) {
        tb->open = true;
        tb->tick = rec->tick;
    }
    return MC_OK;
}

static const uint8_t *tb_payload(const tickbuf *tb, const trec *t)
{
    return tb->arena + t->off;
}

static void set_copy(uint8_t **dst, size_t *dlen, bool *has, const uint8_t *src, size_t len)
{
    *dst = malloc(len ? len : 1);
    if (*dst && len)
        memcpy(*dst, src, len);
    *dlen = len;
    *has = *dst != NULL;
}

/* Compares what the component emitted for the tick with its records.
 * Returns true on a divergence (filled into r->div). */
static bool compare_outputs(rd *x, const tickbuf *tb, uint32_t stage)
{
    size_t ei = 0;
    const mc_outbox *out = &x->out;
    size_t ai = 0;
    for (;;) {
        while (ei < tb->n && tb->recs[ei].stage != stage)
            ei++;
        const trec *e = ei < tb->n ? &tb->recs[ei] : NULL;
        const mc_outbox_msg *a = ai < out->len ? &out->items[ai] : NULL;
        if (!e && !a)
            return false;
        bool same = e && a && strcmp(e->subject, a->subject) == 0 && e->tick == a->tick &&
                    e->seq == a->producer_seq && e->len == a->len &&
                    (e->len == 0 || memcmp(tb_payload(tb, e), a->payload, e->len) == 0);
        if (!same) {
            mc_divergence *d = &x->cur;
            memset(d, 0, sizeof *d);
            d->tick = tb->tick;
            d->stage = stage;
            snprintf(d->subject, sizeof d->subject, "%s", e ? e->subject : a->subject);
            d->producer_seq = e ? e->seq : a->producer_seq;
            if (e)
                set_copy(&d->expected, &d->expected_len, &d->has_expected, tb_payload(tb, e),
                         e->len);
            if (a)
                set_copy(&d->actual, &d->actual_len, &d->has_actual, a->payload, a->len);
            if (!a)
                snprintf(d->what, sizeof d->what,
                         "the %s did not emit the recorded %s (producer_seq %llu)",
                         mc_stage_name(stage), e->subject, (unsigned long long)e->seq);
            else if (!e)
                snprintf(d->what, sizeof d->what,
                         "the %s emitted %s (producer_seq %llu) that the trace does not have",
                         mc_stage_name(stage), a->subject, (unsigned long long)a->producer_seq);
            else if (strcmp(e->subject, a->subject) != 0 || e->seq != a->producer_seq ||
                     e->tick != a->tick)
                snprintf(d->what, sizeof d->what,
                         "the %s emitted %s (tick %llu, producer_seq %llu) where the trace has %s "
                         "(tick %llu, producer_seq %llu)",
                         mc_stage_name(stage), a->subject, (unsigned long long)a->tick,
                         (unsigned long long)a->producer_seq, e->subject,
                         (unsigned long long)e->tick, (unsigned long long)e->seq);
            else
                snprintf(d->what, sizeof d->what, "the %s emitted different bytes for %s",
                         mc_stage_name(stage), e->subject);
            return true;
        }
        ei++;
        ai++;
    }
}

static void component_digest(const rd *x, uint32_t stage, uint8_t out[32])
{
    switch (stage) {
    case 1: mc_engine_digest(&x->engine, out); break;
    case 2: mc_detector_digest(&x->det, out); break;
    case 3: mc_decider_digest(&x->dec, out); break;
    default: mc_approval_digest(&x->appr, out); break;
    }
}

static void count_input(rd *x, mc_status st)
{
    if (st != MC_OK)
        x->r->input_errors++;
}

/* The tick's recorded engine inputs (sim.inputs, stage 5, after every
 * stage of the tick), in producer_seq order: they reach the core after the
 * tick's commands and before the next step, as they did live. */
static void feed_engine_inputs(rd *x, const tickbuf *tb)
{
    mc_error e = {0};
    for (size_t i = 0; i < tb->n; i++) {
        const trec *t = &tb->recs[i];
        if (!t->msg || strcmp(t->subject, MC_SUBJECT_ENGINE_INPUTS) != 0)
            continue;
        const Trace__V1__EngineInput *in = (const Trace__V1__EngineInput *)t->msg;
        if (in->inject_fault)
            count_input(x, mc_engine_inject_fault(&x->engine, in->inject_fault, NULL, &e));
    }
}

/* Feeds the tick to one component; returns true on a divergence. */
static int drive_stage(rd *x, const tickbuf *tb, uint32_t stage, mc_status *fatal, mc_error *err)
{
    mc_error e = {0};
    mc_outbox_clear(&x->out);
    *fatal = MC_OK;
    bool div = false;
    if (stage == 1 && tb->tick == 0) {
        /* Inputs that came before the first step (sim.inputs of tick 0). */
        feed_engine_inputs(x, tb);
    } else if (stage == 1) {
        if (mc_engine_tick(&x->engine) + 1 != tb->tick) {
            mc_divergence *d = &x->cur;
            memset(d, 0, sizeof *d);
            d->tick = tb->tick;
            d->stage = 1;
            snprintf(d->subject, sizeof d->subject, "sim.watermark");
            snprintf(d->what, sizeof d->what, "the trace jumps from tick %llu to tick %llu",
                     (unsigned long long)mc_engine_tick(&x->engine), (unsigned long long)tb->tick);
            return true;
        }
        if ((*fatal = mc_engine_step(&x->engine, &x->out, err)) != MC_OK)
            return false;
        div = compare_outputs(x, tb, 1);
        for (size_t i = 0; i < tb->n && !div; i++) {
            const trec *t = &tb->recs[i];
            if (t->msg && strcmp(t->subject, "ops.commands") == 0)
                count_input(x, mc_engine_apply_command(&x->engine,
                                                       (Ops__V1__ApplyActionCommand *)t->msg, &e));
        }
        if (!div)
            feed_engine_inputs(x, tb);
    } else if (stage == 2) {
        for (size_t i = 0; i < tb->n && *fatal == MC_OK; i++) {
            const trec *t = &tb->recs[i];
            if (!t->msg)
                continue;
            if (strcmp(t->subject, "sim.metrics") == 0)
                count_input(x, mc_detector_on_snapshot(&x->det, (Sim__V1__MetricSnapshot *)t->msg,
                                                       &x->out, &e));
            else if (strcmp(t->subject, "sim.watermark") == 0)
                *fatal = mc_detector_on_tick_end(&x->det, ((Ops__V1__Watermark *)t->msg)->tick,
                                                 &x->out, err);
        }
        if (*fatal == MC_OK)
            div = compare_outputs(x, tb, 2);
    } else if (stage == 3) {
        for (size_t i = 0; i < tb->n && *fatal == MC_OK; i++) {
            const trec *t = &tb->recs[i];
            if (!t->msg)
                continue;
            if (strcmp(t->subject, "sim.events") == 0)
                count_input(x, mc_decider_on_event(&x->dec, (Sim__V1__SimulationEvent *)t->msg,
                                                   &x->out, &e));
            else if (strcmp(t->subject, "ops.incidents") == 0)
                count_input(
                    x, mc_decider_on_incident(&x->dec, (Ops__V1__Incident *)t->msg, &x->out, &e));
            else if (strcmp(t->subject, "ops.decisions") == 0)
                count_input(x, mc_decider_on_decision(&x->dec, (Ops__V1__ApprovalDecision *)t->msg,
                                                      &x->out, &e));
            else if (strcmp(t->subject, "ops.watermark.detector") == 0)
                *fatal = mc_decider_on_tick_end(&x->dec, ((Ops__V1__Watermark *)t->msg)->tick,
                                                &x->out, err);
        }
        if (*fatal == MC_OK)
            div = compare_outputs(x, tb, 3);
    } else {
        /* The recorded human decisions of the tick, in order. */
        const trec *humans[256];
        size_t nh = 0, h = 0;
        for (size_t i = 0; i < tb->n; i++) {
            const trec *t = &tb->recs[i];
            if (t->msg && strcmp(t->subject, "ops.decisions") == 0 &&
                ((Ops__V1__ApprovalDecision *)t->msg)->source ==
                    OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN) {
                if (nh == sizeof humans / sizeof humans[0]) {
                    *fatal = mc_error_set(err, MC_ERR_LIMIT,
                                          "tick %llu: more than 256 human decisions in one tick",
                                          (unsigned long long)tb->tick);
                    return false;
                }
                humans[nh++] = t;
            }
        }
        for (size_t i = 0; i <= tb->n && *fatal == MC_OK; i++) {
            const trec *t = i < tb->n ? &tb->recs[i] : NULL;
            bool input = !t || (t->msg && (strcmp(t->subject, "sim.events") == 0 ||
                                           strcmp(t->subject, "ops.incidents") == 0 ||
                                           strcmp(t->subject, "ops.actions") == 0 ||
                                           strcmp(t->subject, "ops.watermark.agent") == 0));
            if (!input)
                continue;
            while (h < nh &&
                   mc_approval_replay_due(&x->appr, (Ops__V1__ApprovalDecision *)humans[h]->msg)) {
                count_input(x, mc_approval_replay_decision(
                                   &x->appr, (Ops__V1__ApprovalDecision *)humans[h]->msg, &x->out,
                                   NULL, &e));
                h++;
            }
            if (!t)
                break;
            if (strcmp(t->subject, "sim.events") == 0)
                count_input(x, mc_approval_on_event(&x->appr, (Sim__V1__SimulationEvent *)t->msg,
                                                    &x->out, &e));
            else if (strcmp(t->subject, "ops.incidents") == 0)
                count_input(
                    x, mc_approval_on_incident(&x->appr, (Ops__V1__Incident *)t->msg, &x->out, &e));
            else if (strcmp(t->subject, "ops.actions") == 0)
                count_input(
                    x, mc_approval_on_action(&x->appr, (Ops__V1__Action *)t->msg, &x->out, &e));
            else
                *fatal = mc_approval_on_tick_end(&x->appr, ((Ops__V1__Watermark *)t->msg)->tick,
                                                 &x->out, err);
        }
        if (*fatal != MC_OK)
            return false;
        div = compare_outputs(x, tb, 4);
        if (!div && h < nh) {
            mc_divergence *d = &x->cur;
            memset(d, 0, sizeof *d);
            d->tick = tb->tick;
            d->stage = 4;
            snprintf(d->subject, sizeof d->subject, "ops.decisions");
            d->producer_seq = humans[h]->seq;
            set_copy(&d->expected, &d->expected_len, &d->has_expected, tb_payload(tb, humans[h]),
                     humans[h]->len);
            snprintf(d->what, sizeof d->what,
                     "the recorded human decision (producer_seq %llu) never became due: its action "
                     "is unknown to the re-driven orchestrator or the sequence moved",
                     (unsigned long long)humans[h]->seq);
            div = true;
        }
    }
    /* The digest at the end of the tick. */
    if (tb->have_cp && tb->cp_has[stage]) {
        uint8_t got[32];
        component_digest(x, stage, got);
        bool bad = memcmp(got, tb->cp[stage], 32) != 0;
        if (div || bad) {
            mc_divergence *d = &x->cur;
            if (!div) {
                memset(d, 0, sizeof *d);
                d->tick = tb->tick;
                d->stage = stage;
                snprintf(d->what, sizeof d->what,
                         "the %s emitted the recorded messages but its state digest differs",
                         mc_stage_name(stage));
            }
            d->digest_checked = true;
            d->digest_diverged = bad;
            memcpy(d->digest_expected, tb->cp[stage], 32);
            memcpy(d->digest_actual, got, 32);
        }
        if (!div && bad)
            return 2;
    }
    return div ? 1 : 0;
}

static mc_status process_tick(rd *x, tickbuf *tb, mc_error *err)
{
    mc_redrive_result *r = x->r;
    if (tb->tick != 0) /* tick 0 holds only inputs before the first step */
        r->ticks++;
    if (tb->tick > r->last_tick)
        r->last_tick = tb->tick;
    if (x->o->score) {
        for (size_t i = 0; i < tb->n; i++) {
            const trec *t = &tb->recs[i];
            mc_scorecard_record_msg(x->o->score, t->tick, t->stage, t->subject, t->producer, t->seq,
                                    tb_payload(tb, t), t->len, t->msg);
        }
        if (tb->have_cp) {
            mc_trace_digest d[4];
            size_t n = 0;
            for (uint32_t s = 1; s <= 4; s++)
                if (tb->cp_has[s]) {
                    d[n].stage = s;
                    memcpy(d[n].digest, tb->cp[s], 32);
                    n++;
                }
            mc_scorecard_checkpoint(x->o->score, tb->tick, d, n);
        }
    }
    for (size_t i = 0; i < tb->n; i++)
        if (tb->recs[i].msg && strcmp(tb->recs[i].subject, "sim.metrics") == 0)
            r->samples += ((Sim__V1__MetricSnapshot *)tb->recs[i].msg)->n_samples;
    if (!x->stopped && x->comps) {
        for (uint32_t stage = 1; stage <= 4; stage++) {
            if (!(x->comps & mc_stage_component(stage)))
                continue;
            mc_status fatal = MC_OK;
            memset(&x->cur, 0, sizeof x->cur);
            int div = drive_stage(x, tb, stage, &fatal, err);
            if (fatal != MC_OK) {
                free(x->cur.expected);
                free(x->cur.actual);
                return mc_error_wrap(err, "re-drive of the %s at tick %llu", mc_stage_name(stage),
                                     (unsigned long long)tb->tick);
            }
            if (div == 2 && !r->has_first_digest) {
                /* The state moved without (yet) changing an output: keep
                 * going to find the first message that differs, and
                 * remember where the state first did. */
                r->first_digest = x->cur;
                r->has_first_digest = true;
            } else if (div == 1) {
                r->div = x->cur;
                r->diverged = true;
                x->stopped = true;
                break;
            }
        }
        if (!x->stopped && tb->tick != 0)
            r->ticks_driven++;
    }
    if (x->o->progress)
        x->o->progress(x->o->progress_ctx, tb->tick, x->offset);
    tb_clear(tb);
    return MC_OK;
}

static void set_problem(mc_redrive_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_problem(mc_redrive_result *r, const char *fmt, ...)
{
    r->verdict = MC_REDRIVE_DAMAGED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->problem, sizeof r->problem, fmt, ap);
    va_end(ap);
}

static mc_status build_cores(rd *x, mc_error *err)
{
    mc_run_setup *s = x->o->setup;
    mc_status st;
    if (x->comps & MC_COMP_ENGINE) {
        mc_engine_config c;
        mc_loop_engine_config(s, &c);
        if ((st = mc_engine_init(&x->engine, &s->sc, &c, err)) != MC_OK)
            return mc_error_wrap(err, "engine");
        x->engine_ok = true;
    }
    if (x->comps & MC_COMP_DETECTOR) {
        mc_detector_config c;
        mc_loop_detector_config(s, &c);
        if ((st = mc_detector_init(&x->det, &c, err)) != MC_OK)
            return mc_error_wrap(err, "detector");
        x->det_ok = true;
    }
    if (x->comps & MC_COMP_AGENT) {
        mc_decider_config c;
        mc_loop_decider_config(s, &c);
        if ((st = mc_decider_init(&x->dec, &c, err)) != MC_OK)
            return mc_error_wrap(err, "decider");
        x->dec_ok = true;
    }
    if (x->comps & MC_COMP_ORCHESTRATOR) {
        mc_approval_config c;
        mc_loop_approval_config(s, &c);
        if ((st = mc_approval_init(&x->appr, &c, err)) != MC_OK)
            return mc_error_wrap(err, "approval");
        x->appr_ok = true;
    }
    size_t max = OUTBOX_MAX;
    if (x->engine_ok && mc_engine_max_messages_per_tick(&x->engine) > max)
        max = mc_engine_max_messages_per_tick(&x->engine);
    if (mc_outbox_init(&x->out, max) != MC_OK)
        return mc_error_set(err, MC_ERR_NOMEM, "re-drive: out of memory");
    return MC_OK;
}

static void free_cores(rd *x)
{
    if (x->engine_ok)
        mc_engine_deinit(&x->engine);
    if (x->det_ok)
        mc_detector_deinit(&x->det);
    if (x->dec_ok)
        mc_decider_deinit(&x->dec);
    if (x->appr_ok)
        mc_approval_deinit(&x->appr);
    mc_outbox_deinit(&x->out);
}

mc_status mc_redrive_file(const char *path, const mc_redrive_options *o, mc_redrive_result *r,
                          mc_error *err)
{
    memset(r, 0, sizeof *r);
    rd x;
    memset(&x, 0, sizeof x);
    x.o = o;
    x.r = r;
    x.comps = o->components;
    tickbuf tb;
    memset(&tb, 0, sizeof tb);
    mc_status st = MC_OK;
    mc_error rerr = {0};
    mc_trace_reader_opts ro = {o->public_key};
    mc_trace_reader *rdr = NULL;
    if (mc_trace_reader_open(path, &ro, &rdr, &rerr) != MC_OK) {
        set_problem(r, "%s", rerr.msg);
        return MC_OK;
    }
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(rdr);
    size_t hlen = 0;
    const uint8_t *hb = mc_trace_reader_header_bytes(rdr, &hlen);
    r->header = trace__v1__trace_header__unpack(NULL, hlen, hb);

    /* The run's setup from the header. */
    mc_run_setup *s = o->setup;
    char name[MC_SCENARIO_ID_MAX];
    s->seed = h->seed;
    if (mc_setup_spec_parse(h->scenario ? h->scenario : "", name, &s->node_count, &s->service_count,
                            &rerr) != MC_OK) {
        set_problem(r, "incompatible header: %s", rerr.msg);
        goto done;
    }
    if (h->approval_mode && h->approval_mode[0] &&
        mc_approval_mode_parse(h->approval_mode, &s->approval_mode, &rerr) != MC_OK) {
        set_problem(r, "incompatible header: approval mode: %s", rerr.msg);
        goto done;
    }
    for (size_t i = 0; i < h->n_settings; i++) {
        if (mc_setup_setting(s, h->settings[i] ? h->settings[i] : "", &rerr) != MC_OK) {
            set_problem(r, "incompatible header: %s", rerr.msg);
            goto done;
        }
    }
    /* Every core is configured with the recorded run id, as the live
     * services stamp it from their first message on; a header without one
     * gets the id the engine derives for the run's first reset. */
    if (h->run_id && h->run_id[0]) {
        snprintf(s->run_id, sizeof s->run_id, "%s", h->run_id);
    } else {
        char rid[21];
        mc_id_run(rid, name, h->seed, 0);
        snprintf(s->run_id, sizeof s->run_id, "%s", rid);
    }
    if (h->mode && h->mode[0] && strcmp(h->mode, "lockstep") != 0 && (x.comps & MC_COMP_ENGINE)) {
        set_problem(r,
                    "incompatible: the run was recorded in %s mode; only lockstep runs re-drive "
                    "the engine (use --component detector|agent|orchestrator)",
                    h->mode);
        goto done;
    }
    {
        const char *scen = o->scenario ? o->scenario : name;
        if (mc_setup_load_scenario(s, o->scenario_dir, scen, &rerr) != MC_OK) {
            if (x.comps & (MC_COMP_ENGINE | MC_COMP_DETECTOR)) {
                set_problem(r, "incompatible: %s (give --scenario-dir or --scenario)", rerr.msg);
                goto done;
            }
        }
    }
    mc_setup_digests(s);
    r->topology_mismatch = h->topology_digest.len != 32 ||
                           memcmp(h->topology_digest.data, s->topology_digest, 32) != 0;
    r->config_mismatch =
        h->config_digest.len != 32 || memcmp(h->config_digest.data, s->config_digest, 32) != 0;
    if ((st = build_cores(&x, &rerr)) != MC_OK) {
        if (st == MC_ERR_NOMEM) {
            mc_error_set(err, st, "%s", rerr.msg);
            goto done;
        }
        st = MC_OK;
        set_problem(r, "incompatible: %s", rerr.msg);
        goto done;
    }
    if (x.engine_ok && h->run_id && h->run_id[0] &&
        strcmp(h->run_id, mc_engine_run_id(&x.engine)) != 0) {
        /* A live engine numbers the runs of its process (Reset, SetScenario):
         * the run id is derived from (scenario, seed, reset count). Restart
         * the re-driven engine as many times as the recorded id says. */
        uint64_t k = 1;
        char rid[21];
        for (; k <= MC_REDRIVE_MAX_RESETS; k++) {
            mc_id_run(rid, s->sc.name, h->seed, k);
            if (strcmp(rid, h->run_id) == 0)
                break;
        }
        for (uint64_t i = 0; k <= MC_REDRIVE_MAX_RESETS && i < k && st == MC_OK; i++)
            st = mc_engine_reset(&x.engine, 0, &rerr);
        if (st != MC_OK) {
            mc_error_set(err, st, "%s", rerr.msg);
            goto done;
        }
        r->run_id_mismatch = strcmp(h->run_id, mc_engine_run_id(&x.engine)) != 0;
    }

    for (;;) {
        mc_trace_record rec;
        if (mc_trace_reader_next(rdr, &rec, &rerr) != MC_OK) {
            set_problem(r, "damaged: %s", rerr.msg);
            break;
        }
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        x.offset = rec.offset;
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            r->records++;
            if (tb.open && rec.tick != tb.tick && (st = process_tick(&x, &tb, err)) != MC_OK)
                break;
            if ((st = tb_add(&tb, &rec, err)) != MC_OK)
                break;
        } else if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            r->checkpoints++;
            const Trace__V1__Checkpoint *cp = rec.checkpoint;
            if (tb.open && cp->tick != tb.tick && (st = process_tick(&x, &tb, err)) != MC_OK)
                break;
            tb.open = true;
            tb.tick = cp->tick;
            tb.have_cp = true;
            for (size_t i = 0; i < cp->n_digests; i++) {
                const Trace__V1__ComponentDigest *cd = cp->digests[i];
                /* An all-zero digest is "not recorded" (FORMAT.md): a
                 * live trace knows only the engine's. */
                if (cd->stage >= 1 && cd->stage <= 4 &&
                    mc_trace_digest_present(cd->digest.data, cd->digest.len)) {
                    tb.cp_has[cd->stage] = true;
                    memcpy(tb.cp[cd->stage], cd->digest.data, 32);
                }
            }
            if ((st = process_tick(&x, &tb, err)) != MC_OK)
                break;
        }
    }
    if (st == MC_OK && tb.open && r->verdict != MC_REDRIVE_DAMAGED)
        st = process_tick(&x, &tb, err);
    r->signature = mc_trace_reader_signature(rdr);
    if (st == MC_OK && r->verdict != MC_REDRIVE_DAMAGED &&
        mc_trace_reader_state(rdr) == MC_TRACE_TORN) {
        const mc_trace_problem *p = mc_trace_reader_problem(rdr);
        set_problem(r, "torn: %s", p ? p->what : "no footer");
    }
    if (!r->diverged && r->has_first_digest) {
        r->div = r->first_digest;
        r->diverged = true;
    }
    if (st == MC_OK && r->verdict != MC_REDRIVE_DAMAGED)
        r->verdict = r->diverged ? MC_REDRIVE_DIVERGED : MC_REDRIVE_IDENTICAL;
done:
    tb_free(&tb);
    free_cores(&x);
    mc_trace_reader_free(rdr);
    return st;
}

void mc_redrive_result_free(mc_redrive_result *r)
{
    if (!r)
        return;
    free(r->div.expected);
    free(r->div.actual);
    if (r->header)
        trace__v1__trace_header__free_unpacked(r->header, NULL);
    memset(r, 0, sizeof *r);
}
