#include "harness/loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/v1/enums.pb-c.h"
#include "harness/subjects.h"

/* Far above what any tick emits at 10,000 services; only a runaway core
 * reaches it. */
#define LOOP_OUTBOX_MAX (1u << 20)

void mc_loop_engine_config(const mc_run_setup *s, mc_engine_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = s->seed;
    cfg->node_count = s->node_count;
    cfg->service_count = s->service_count;
    cfg->chunk_max_samples = (uint32_t)mc_setup_setting_get(s, MC_SETTING_CHUNK_SAMPLES);
}

void mc_loop_detector_config(const mc_run_setup *s, mc_detector_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->run_id = s->run_id;
    cfg->tick_duration_ms = (uint32_t)mc_setup_setting_get(s, MC_SETTING_TICK_DURATION_MS);
    cfg->max_targets = (uint32_t)mc_setup_setting_get(s, MC_SETTING_DETECTOR_MAX_TARGETS);
    cfg->rules = &s->det_rules;
}

void mc_loop_decider_config(const mc_run_setup *s, mc_decider_config *cfg)
{
    mc_decider_config_default(cfg);
    cfg->run_id = s->run_id;
    cfg->rules = &s->dec_rules;
    cfg->max_in_flight = (uint32_t)mc_setup_setting_get(s, MC_SETTING_AGENT_MAX_IN_FLIGHT);
    cfg->target_cooldown_ticks =
        (uint32_t)mc_setup_setting_get(s, MC_SETTING_AGENT_TARGET_COOLDOWN);
    cfg->action_expiry_ticks = (uint32_t)mc_setup_setting_get(s, MC_SETTING_AGENT_ACTION_EXPIRY);
}

void mc_loop_approval_config(const mc_run_setup *s, mc_approval_config *cfg)
{
    mc_approval_config_default(cfg);
    cfg->run_id = s->run_id;
    cfg->mode = s->approval_mode;
    cfg->expiry_ticks = mc_setup_setting_get(s, MC_SETTING_ACTION_EXPIRY);
}

mc_status mc_loop_init(mc_loop *l, const mc_run_setup *s, mc_script *script, mc_error *err)
{
    memset(l, 0, sizeof *l);
    mc_engine_config ec;
    mc_detector_config dc;
    mc_decider_config ac;
    mc_approval_config oc;
    mc_loop_engine_config(s, &ec);
    mc_loop_detector_config(s, &dc);
    mc_loop_decider_config(s, &ac);
    mc_loop_approval_config(s, &oc);
    mc_status st = mc_engine_init(&l->engine, &s->sc, &ec, err);
    if (st != MC_OK) {
        mc_error_wrap(err, "engine");
        goto fail;
    }
    l->engine_ok = 1;
    /* Every core knows the run from the start, as the live services do
     * (the orchestrator stamps its first watermarks with the run id before
     * any incident or action reaches it). */
    dc.run_id = ac.run_id = oc.run_id = mc_engine_run_id(&l->engine);
    if ((st = mc_detector_init(&l->detector, &dc, err)) != MC_OK) {
        mc_error_wrap(err, "detector");
        goto fail;
    }
    l->detector_ok = 1;
    if ((st = mc_decider_init(&l->decider, &ac, err)) != MC_OK) {
        mc_error_wrap(err, "decider");
        goto fail;
    }
    l->decider_ok = 1;
    if ((st = mc_approval_init(&l->approval, &oc, err)) != MC_OK) {
        mc_error_wrap(err, "approval");
        goto fail;
    }
    l->approval_ok = 1;
    size_t emax = mc_engine_max_messages_per_tick(&l->engine);
    if (mc_outbox_init(&l->out_engine, emax > LOOP_OUTBOX_MAX ? emax : LOOP_OUTBOX_MAX) != MC_OK ||
        mc_outbox_init(&l->out_detector, LOOP_OUTBOX_MAX) != MC_OK ||
        mc_outbox_init(&l->out_agent, LOOP_OUTBOX_MAX) != MC_OK ||
        mc_outbox_init(&l->out_orch, LOOP_OUTBOX_MAX) != MC_OK) {
        st = mc_error_set(err, MC_ERR_NOMEM, "loop: out of memory for the outboxes");
        goto fail;
    }
    l->script = script;
    return MC_OK;
fail:
    mc_loop_deinit(l);
    return st;
}

void mc_loop_deinit(mc_loop *l)
{
    if (!l)
        return;
    if (l->engine_ok)
        mc_engine_deinit(&l->engine);
    if (l->detector_ok)
        mc_detector_deinit(&l->detector);
    if (l->decider_ok)
        mc_decider_deinit(&l->decider);
    if (l->approval_ok)
        mc_approval_deinit(&l->approval);
    mc_outbox_deinit(&l->out_engine);
    mc_outbox_deinit(&l->out_detector);
    mc_outbox_deinit(&l->out_agent);
    mc_outbox_deinit(&l->out_orch);
    memset(l, 0, sizeof *l);
}

void mc_loop_digests(const mc_loop *l, mc_trace_digest out[MC_LOOP_CORES])
{
    for (uint32_t i = 0; i < MC_LOOP_CORES; i++)
        out[i].stage = i + 1;
    mc_engine_digest(&l->engine, out[0].digest);
    mc_detector_digest(&l->detector, out[1].digest);
    mc_decider_digest(&l->decider, out[2].digest);
    mc_approval_digest(&l->approval, out[3].digest);
}

/* A refused input: counted (see loop.h). Out of memory and broken
 * invariants stop the run. */
static mc_status input_result(mc_loop *l, mc_status st, const char *what, mc_error *e,
                              mc_error *err)
{
    if (st == MC_OK)
        return MC_OK;
    if (st == MC_ERR_NOMEM || st == MC_ERR_INTERNAL)
        return mc_error_set(err, st, "%s: %s", what, e->msg);
    l->input_errors++;
    snprintf(l->last_input_error, sizeof l->last_input_error, "tick %llu: %s: %s",
             (unsigned long long)l->tick + 1, what, e->msg);
    return MC_OK;
}

static mc_status emit(mc_loop *l, const mc_loop_sink *sink, uint32_t stage, const mc_outbox_msg *m,
                      mc_error *err)
{
    uint64_t tick = l->tick + 1;
    const mc_subject_info *si = mc_subject_lookup(m->subject);
    if (!si || si->stage != stage)
        return mc_error_set(err, MC_ERR_INTERNAL, "%s emitted on unexpected subject \"%s\"",
                            mc_stage_name(stage), m->subject);
    if (m->tick != tick)
        return mc_error_set(err, MC_ERR_INTERNAL,
                            "%s emitted %s stamped tick %llu while closing tick %llu",
                            mc_stage_name(stage), m->subject, (unsigned long long)m->tick,
                            (unsigned long long)tick);
    if (!sink || !sink->record)
        return MC_OK;
    return sink->record(sink->ctx, m->tick, stage, m->subject, si->producer, m->producer_seq,
                        m->payload, m->len, err);
}

static mc_status apply_script(mc_loop *l, uint64_t tick, mc_error *err)
{
    if (!l->script)
        return MC_OK;
    while (l->script_next < l->script->count && l->script->items[l->script_next].tick < tick)
        l->script_next++; /* a tick the run never reached a decision for */
    while (l->script_next < l->script->count && l->script->items[l->script_next].tick == tick) {
        mc_script_decision *d = &l->script->items[l->script_next++];
        /* Collect the matching ids first: deciding changes the pending list
         * the cursor walks. */
        size_t cap = 64, n_ids = 0;
        char(*ids)[MC_APPROVAL_ID_MAX] = malloc(cap * sizeof *ids);
        if (!ids)
            return mc_error_set(err, MC_ERR_NOMEM, "decisions: out of memory");
        char cursor[MC_APPROVAL_CURSOR_MAX] = "";
        mc_approval_action page[32];
        for (;;) {
            size_t n = 0;
            char next[MC_APPROVAL_CURSOR_MAX];
            mc_status st = mc_approval_list_pending(&l->approval, cursor, page, 32, &n, next, err);
            if (st != MC_OK) {
                free(ids);
                return st;
            }
            for (size_t i = 0; i < n; i++) {
                if (!mc_script_matches(d, (int)page[i].action_type, page[i].target_id))
                    continue;
                if (n_ids == cap) {
                    char(*ni)[MC_APPROVAL_ID_MAX] = realloc(ids, cap * 2 * sizeof *ids);
                    if (!ni) {
                        free(ids);
                        return mc_error_set(err, MC_ERR_NOMEM, "decisions: out of memory");
                    }
                    ids = ni;
                    cap *= 2;
                }
                memcpy(ids[n_ids++], page[i].id, MC_APPROVAL_ID_MAX);
            }
            if (!next[0])
                break;
            memcpy(cursor, next, sizeof cursor);
        }
        for (size_t i = 0; i < n_ids; i++) {
            mc_error e = {0};
            mc_status st =
                mc_approval_on_human_decision(&l->approval, ids[i], d->approve, MC_SCRIPT_ACTOR,
                                              d->reason, &l->out_orch, NULL, &e);
            if (st == MC_OK)
                d->applied++;
            else if ((st = input_result(l, st, "human decision", &e, err)) != MC_OK) {
                free(ids);
                return st;
            }
        }
        free(ids);
    }
    return MC_OK;
}

mc_status mc_loop_step(mc_loop *l, const mc_loop_sink *sink, mc_error *err)
{
    const uint64_t tick = l->tick + 1;
    mc_status st = MC_OK;
    mc_error e = {0};
    mc_outbox_clear(&l->out_engine);
    mc_outbox_clear(&l->out_detector);
    mc_outbox_clear(&l->out_agent);
    mc_outbox_clear(&l->out_orch);

    if ((st = mc_engine_step(&l->engine, &l->out_engine, err)) != MC_OK)
        return mc_error_wrap(err, "engine step %llu", (unsigned long long)tick);
    if (mc_engine_tick(&l->engine) != tick)
        return mc_error_set(err, MC_ERR_INTERNAL, "engine stepped to %llu, expected %llu",
                            (unsigned long long)mc_engine_tick(&l->engine),
                            (unsigned long long)tick);

    /* Stage 1: engine messages to the detector, decider and approval. */
    for (size_t i = 0; i < l->out_engine.len && st == MC_OK; i++) {
        const mc_outbox_msg *m = &l->out_engine.items[i];
        if ((st = emit(l, sink, COMMON__V1__STAGE__STAGE_ENGINE, m, err)) != MC_OK)
            break;
        ProtobufCMessage *pm = mc_subject_unpack(m->subject, m->payload, m->len);
        if (!pm)
            return mc_error_set(err, MC_ERR_INTERNAL, "engine emitted undecodable %s", m->subject);
        if (strcmp(m->subject, "sim.metrics") == 0) {
            st = input_result(l,
                              mc_detector_on_snapshot(&l->detector, (Sim__V1__MetricSnapshot *)pm,
                                                      &l->out_detector, &e),
                              "detector snapshot", &e, err);
        } else if (strcmp(m->subject, "sim.events") == 0) {
            const Sim__V1__SimulationEvent *ev = (const Sim__V1__SimulationEvent *)pm;
            st = input_result(l, mc_decider_on_event(&l->decider, ev, &l->out_agent, &e),
                              "decider event", &e, err);
            if (st == MC_OK)
                st = input_result(l, mc_approval_on_event(&l->approval, ev, &l->out_orch, &e),
                                  "approval event", &e, err);
        } else {
            const Ops__V1__Watermark *wm = (const Ops__V1__Watermark *)pm;
            st = mc_detector_on_tick_end(&l->detector, wm->tick, &l->out_detector, err);
        }
        protobuf_c_message_free_unpacked(pm, NULL);
    }
    if (st != MC_OK)
        return st;

    /* Stage 2: incidents to the decider and approval; the watermark closes
     * the decider's tick. */
    for (size_t i = 0; i < l->out_detector.len && st == MC_OK; i++) {
        const mc_outbox_msg *m = &l->out_detector.items[i];
        if ((st = emit(l, sink, COMMON__V1__STAGE__STAGE_DETECTOR, m, err)) != MC_OK)
            break;
        ProtobufCMessage *pm = mc_subject_unpack(m->subject, m->payload, m->len);
        if (!pm)
            return mc_error_set(err, MC_ERR_INTERNAL, "detector emitted undecodable %s",
                                m->subject);
        if (strcmp(m->subject, "ops.incidents") == 0) {
            const Ops__V1__Incident *inc = (const Ops__V1__Incident *)pm;
            st = input_result(l, mc_decider_on_incident(&l->decider, inc, &l->out_agent, &e),
                              "decider incident", &e, err);
            if (st == MC_OK)
                st = input_result(l, mc_approval_on_incident(&l->approval, inc, &l->out_orch, &e),
                                  "approval incident", &e, err);
        } else {
            st = mc_decider_on_tick_end(&l->decider, ((Ops__V1__Watermark *)pm)->tick,
                                        &l->out_agent, err);
        }
        protobuf_c_message_free_unpacked(pm, NULL);
    }
    if (st != MC_OK)
        return st;

    /* Stage 3: proposals to the approval; on the agent's watermark the
     * script's decisions of this tick, then the approval's tick end. */
    for (size_t i = 0; i < l->out_agent.len && st == MC_OK; i++) {
        const mc_outbox_msg *m = &l->out_agent.items[i];
        if ((st = emit(l, sink, COMMON__V1__STAGE__STAGE_AGENT, m, err)) != MC_OK)
            break;
        ProtobufCMessage *pm = mc_subject_unpack(m->subject, m->payload, m->len);
        if (!pm)
            return mc_error_set(err, MC_ERR_INTERNAL, "decider emitted undecodable %s", m->subject);
        if (strcmp(m->subject, "ops.actions") == 0) {
            st = input_result(
                l, mc_approval_on_action(&l->approval, (Ops__V1__Action *)pm, &l->out_orch, &e),
                "approval action", &e, err);
        } else {
            uint64_t wt = ((Ops__V1__Watermark *)pm)->tick;
            st = apply_script(l, tick, err);
            if (st == MC_OK)
                st = mc_approval_on_tick_end(&l->approval, wt, &l->out_orch, err);
        }
        protobuf_c_message_free_unpacked(pm, NULL);
    }
    if (st != MC_OK)
        return st;

    /* Stage 4: decisions back to the decider, commands to the engine. */
    for (size_t i = 0; i < l->out_orch.len && st == MC_OK; i++) {
        const mc_outbox_msg *m = &l->out_orch.items[i];
        if ((st = emit(l, sink, COMMON__V1__STAGE__STAGE_ORCHESTRATOR, m, err)) != MC_OK)
            break;
        if (strcmp(m->subject, "ops.watermark.orchestrator") == 0)
            continue;
        ProtobufCMessage *pm = mc_subject_unpack(m->subject, m->payload, m->len);
        if (!pm)
            return mc_error_set(err, MC_ERR_INTERNAL, "approval emitted undecodable %s",
                                m->subject);
        if (strcmp(m->subject, "ops.decisions") == 0)
            st = input_result(l,
                              mc_decider_on_decision(&l->decider, (Ops__V1__ApprovalDecision *)pm,
                                                     &l->out_agent, &e),
                              "decider decision", &e, err);
        else
            st = input_result(
                l, mc_engine_apply_command(&l->engine, (Ops__V1__ApplyActionCommand *)pm, &e),
                "engine command", &e, err);
        protobuf_c_message_free_unpacked(pm, NULL);
    }
    if (st != MC_OK)
        return st;

    l->tick = tick;
    if (sink && sink->checkpoint) {
        mc_trace_digest d[MC_LOOP_CORES];
        mc_loop_digests(l, d);
        st = sink->checkpoint(sink->ctx, tick, d, MC_LOOP_CORES, err);
    }
    return st;
}
