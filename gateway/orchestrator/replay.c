/* Restart: rebuild the approval core from the streams (see orch.h).
 *
 * Reads OPS (every subject) and SIM's sim.events from the start with
 * ordered consumers on a private nats.c connection, keeping only the
 * messages of the newest run, then re-drives the core the way the replay
 * harness does (approval.h, "Replay"): the recorded HUMAN decisions are fed
 * through mc_approval_replay_decision whenever the next one is due, before
 * each input and once more at the end. The engine's command events are fed
 * after the OPS inputs: they only move APPROVED actions to EXECUTED or
 * FAILED and emit nothing, so their place does not change what is emitted.
 *
 * What the replay re-emits and the stream already holds (producer_seq at
 * or below the highest one recorded) is not published again; anything
 * above it (decisions made but lost in a crash before publishing) is. The
 * database is not rewritten: the previous process stored each transition
 * before acking its input. The known gap: an input consumed by the previous
 * process whose transition was not yet stored when it died is in the core
 * after the replay but its history row is missing. */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "orch_internal.h"

mc_status orch_feed_ops(mc_orch *o, const char *subject, const uint8_t *data, size_t len,
                        mc_error *err);
mc_status orch_feed_event(mc_orch *o, const uint8_t *data, size_t len, mc_error *err);

typedef struct rmsg {
    uint64_t seq;
    char subject[MC_SUBJECT_MAX];
    uint8_t *data;
    size_t len;
} rmsg;

typedef struct rlist {
    rmsg *items;
    size_t n, cap;
    char run[MC_APPROVAL_RUN_ID_MAX];
    uint64_t last_seq; /* of every message read, kept or not */
} rlist;

static void rlist_clear(rlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].data);
    l->n = 0;
}

static void rlist_free(rlist *l)
{
    rlist_clear(l);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* The run id of a message we care about; NULL when it has none. The
 * returned string lives in *scratch_msg (freed by the caller). */
static const char *run_of(const char *subject, const uint8_t *data, size_t len,
                          ProtobufCMessage **scratch)
{
    *scratch = NULL;
    const Common__V1__Stamp *st = NULL;
    if (strcmp(subject, "ops.actions") == 0) {
        Ops__V1__Action *m = ops__v1__action__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    } else if (strcmp(subject, "ops.incidents") == 0) {
        Ops__V1__Incident *m = ops__v1__incident__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    } else if (strcmp(subject, "ops.watermark.agent") == 0 ||
               strcmp(subject, MC_APPROVAL_SUBJECT_WATERMARK) == 0) {
        Ops__V1__Watermark *m = ops__v1__watermark__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    } else if (strcmp(subject, MC_APPROVAL_SUBJECT_DECISIONS) == 0) {
        Ops__V1__ApprovalDecision *m = ops__v1__approval_decision__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    } else if (strcmp(subject, MC_APPROVAL_SUBJECT_COMMANDS) == 0) {
        Ops__V1__ApplyActionCommand *m = ops__v1__apply_action_command__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    } else if (strcmp(subject, "sim.events") == 0) {
        Sim__V1__SimulationEvent *m = sim__v1__simulation_event__unpack(NULL, len, data);
        *scratch = (ProtobufCMessage *)m;
        st = m ? m->stamp : NULL;
    }
    if (st == NULL || st->run_id == NULL || st->run_id[0] == '\0')
        return NULL;
    return st->run_id;
}

static mc_status rlist_add(rlist *l, uint64_t seq, const char *subject, const uint8_t *data,
                           size_t len)
{
    if (seq > l->last_seq)
        l->last_seq = seq;
    ProtobufCMessage *scratch;
    const char *run = run_of(subject, data, len, &scratch);
    if (run == NULL) {
        if (scratch)
            protobuf_c_message_free_unpacked(scratch, NULL);
        return MC_OK;
    }
    if (strcmp(run, l->run) != 0) {
        /* A newer run starts: what was kept belongs to an older one. */
        rlist_clear(l);
        snprintf(l->run, sizeof l->run, "%s", run);
    }
    protobuf_c_message_free_unpacked(scratch, NULL);
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 1024;
        rmsg *ni = realloc(l->items, nc * sizeof *ni);
        if (ni == NULL)
            return MC_ERR_NOMEM;
        l->items = ni;
        l->cap = nc;
    }
    rmsg *m = &l->items[l->n];
    m->seq = seq;
    snprintf(m->subject, sizeof m->subject, "%s", subject);
    m->data = malloc(len ? len : 1);
    if (m->data == NULL)
        return MC_ERR_NOMEM;
    memcpy(m->data, data, len);
    m->len = len;
    l->n++;
    return MC_OK;
}

static mc_status connect_nats(const mc_orch *o, natsConnection **nc, mc_error *err)
{
    const mc_nats_config *c = &o->cfg->nats;
    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    char urls[2048];
    snprintf(urls, sizeof urls, "%s", c->url ? c->url : "nats://localhost:4222");
    const char *servers[32];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(urls, ",", &save); tok && n < 32;
         tok = strtok_r(NULL, ",", &save))
        servers[n++] = tok;
    if (s == NATS_OK)
        s = natsOptions_SetServers(opts, servers, n);
    if (s == NATS_OK && c->user != NULL)
        s = natsOptions_SetUserInfo(opts, c->user, c->password);
    if (s == NATS_OK && c->token != NULL)
        s = natsOptions_SetToken(opts, c->token);
    if (s == NATS_OK && c->nkey_seed_file != NULL && c->nkey_seed_file[0] != '\0') {
        char seed[256] = "";
        FILE *f = fopen(c->nkey_seed_file, "r");
        if (f != NULL) {
            if (fgets(seed, sizeof seed, f) == NULL)
                seed[0] = '\0';
            fclose(f);
        }
        seed[strcspn(seed, "\r\n ")] = '\0';
        char pub[64];
        if (mc_bus_nkey_public_from_seed(seed, pub, err) != MC_OK) {
            natsOptions_Destroy(opts);
            return mc_error_wrap(err, "NATS_NKEY_SEED_FILE");
        }
        s = natsOptions_SetNKeyFromSeed(opts, pub, c->nkey_seed_file);
    }
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, "orchestrator-replay");
    if (s == NATS_OK)
        s = natsConnection_Connect(nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK)
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "replay connection: %s",
                            natsStatus_GetText(s));
    return MC_OK;
}

/* Reads every message of stream matching filter, in order, into l. */
static mc_status read_stream(mc_orch *o, jsCtx *js, const char *stream, const char *filter,
                             rlist *l, mc_error *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, &jerr);
    if (s != NATS_OK)
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "stream %s: %s", stream,
                            natsStatus_GetText(s));
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    if (msgs == 0)
        return MC_OK;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    so.Config.DeliverPolicy = js_DeliverAll;
    natsSubscription *sub = NULL;
    s = js_SubscribeSync(&sub, js, filter, NULL, &so, &jerr);
    if (s != NATS_OK)
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "replay subscription on %s: %s", stream,
                            natsStatus_GetText(s));
    jsConsumerInfo *ci = NULL;
    uint64_t pending = 1;
    if (natsSubscription_GetConsumerInfo(&ci, sub, NULL, &jerr) == NATS_OK) {
        pending = ci->NumPending + ci->NumAckPending + ci->Delivered.Consumer;
        jsConsumerInfo_Destroy(ci);
    }
    mc_status st = MC_OK;
    uint64_t count = 0;
    while (pending > 0) {
        natsMsg *m = NULL;
        s = natsSubscription_NextMsg(&m, sub, 5000);
        if (s == NATS_TIMEOUT) {
            /* Nothing more arrives: whatever NumPending said, we are done. */
            break;
        }
        if (s != NATS_OK) {
            st = mc_error_set(err, MC_ERR_UNAVAILABLE, "replay read on %s: %s", stream,
                              natsStatus_GetText(s));
            break;
        }
        jsMsgMetaData *meta = NULL;
        if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
            const char *subject = orch_unprefix(o, natsMsg_GetSubject(m));
            if (subject != NULL) {
                st = rlist_add(l, meta->Sequence.Stream, subject,
                               (const uint8_t *)natsMsg_GetData(m),
                               (size_t)natsMsg_GetDataLength(m));
            } else if (meta->Sequence.Stream > l->last_seq) {
                l->last_seq = meta->Sequence.Stream;
            }
            pending = meta->NumPending;
            jsMsgMetaData_Destroy(meta);
            count++;
        }
        natsMsg_Destroy(m);
        if (st != MC_OK) {
            mc_error_set(err, st, "replay: out of memory");
            break;
        }
    }
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub);
    MC_LOG_INFO("replay read", MC_LF_STR("stream", stream), MC_LF_UINT("messages", count),
                MC_LF_UINT("kept", l->n), MC_LF_STR("run_id", l->run));
    return st;
}

static void feed_due(mc_orch *o, Ops__V1__ApprovalDecision **humans, size_t n, size_t *next)
{
    while (*next < n && mc_approval_replay_due(&o->core, humans[*next])) {
        mc_error err = {0};
        mc_status st =
            mc_approval_replay_decision(&o->core, humans[*next], &o->outbox, NULL, &err);
        if (st != MC_OK && st != MC_ERR_STATE && st != MC_ERR_NOT_FOUND)
            MC_LOG_WARN("replay: human decision refused", MC_LF_STR("error", err.msg));
        (void)orch_after_core(o, NULL, 0);
        (*next)++;
    }
}

mc_status orch_replay(mc_orch *o, mc_error *err)
{
    natsConnection *nc = NULL;
    mc_status st = connect_nats(o, &nc, err);
    if (st != MC_OK)
        return st;
    jsCtx *js = NULL;
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK) {
        natsConnection_Destroy(nc);
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "replay: no JetStream context");
    }
    rlist ops = {0}, events = {0};
    char filter[128];
    orch_subject(o, "ops.>", filter, sizeof filter);
    st = read_stream(o, js, mc_bus_stream_name(o->bus, MC_BUS_STREAM_OPS), filter, &ops, err);
    if (st == MC_OK) {
        orch_subject(o, "sim.events", filter, sizeof filter);
        st = read_stream(o, js, mc_bus_stream_name(o->bus, MC_BUS_STREAM_SIM), filter, &events,
                         err);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    if (st != MC_OK) {
        rlist_free(&ops);
        rlist_free(&events);
        return st;
    }
    o->ops_replayed_seq = ops.last_seq;
    o->sim_replayed_seq = events.last_seq;
    if (ops.n == 0) {
        rlist_free(&ops);
        rlist_free(&events);
        return MC_OK;
    }

    /* The recorded human decisions and the last sequence already published. */
    Ops__V1__ApprovalDecision **humans = calloc(ops.n, sizeof *humans);
    size_t nh = 0;
    uint64_t published = 0;
    for (size_t i = 0; i < ops.n && humans != NULL; i++) {
        const rmsg *m = &ops.items[i];
        bool ours = strcmp(m->subject, MC_APPROVAL_SUBJECT_DECISIONS) == 0 ||
                    strcmp(m->subject, MC_APPROVAL_SUBJECT_COMMANDS) == 0 ||
                    strcmp(m->subject, MC_APPROVAL_SUBJECT_WATERMARK) == 0;
        if (!ours)
            continue;
        ProtobufCMessage *pm;
        (void)run_of(m->subject, m->data, m->len, &pm);
        if (pm == NULL)
            continue;
        const Common__V1__Stamp *stamp = NULL;
        if (strcmp(m->subject, MC_APPROVAL_SUBJECT_DECISIONS) == 0) {
            Ops__V1__ApprovalDecision *d = (Ops__V1__ApprovalDecision *)pm;
            stamp = d->stamp;
            if (stamp != NULL && stamp->producer_seq > published)
                published = stamp->producer_seq;
            if (d->source == OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN) {
                humans[nh++] = d;
                continue;
            }
        } else if (strcmp(m->subject, MC_APPROVAL_SUBJECT_COMMANDS) == 0) {
            stamp = ((Ops__V1__ApplyActionCommand *)pm)->stamp;
        } else {
            stamp = ((Ops__V1__Watermark *)pm)->stamp;
        }
        if (stamp != NULL && stamp->producer_seq > published)
            published = stamp->producer_seq;
        protobuf_c_message_free_unpacked(pm, NULL);
    }

    st = orch_core_reset(o, ops.run, err);
    if (st == MC_OK) {
        o->replaying = true;
        o->replay_published_seq = published;
        size_t next = 0, inputs = 0;
        for (size_t i = 0; i < ops.n; i++) {
            const rmsg *m = &ops.items[i];
            if (strcmp(m->subject, "ops.actions") != 0 && strcmp(m->subject, "ops.incidents") != 0 &&
                strcmp(m->subject, "ops.watermark.agent") != 0)
                continue;
            feed_due(o, humans, nh, &next);
            mc_error e2 = {0};
            mc_status fs = orch_feed_ops(o, m->subject, m->data, m->len, &e2);
            if (fs != MC_OK)
                MC_LOG_WARN("replay: input refused", MC_LF_STR("subject", m->subject),
                            MC_LF_UINT("seq", m->seq), MC_LF_STR("error", e2.msg));
            inputs++;
        }
        feed_due(o, humans, nh, &next);
        if (next < nh)
            MC_LOG_WARN("replay: recorded human decisions never became due",
                        MC_LF_UINT("left", nh - next));
        if (strcmp(events.run, ops.run) == 0) {
            for (size_t i = 0; i < events.n; i++) {
                mc_error e2 = {0};
                (void)orch_feed_event(o, events.items[i].data, events.items[i].len, &e2);
            }
        }
        o->replaying = false;
        uint32_t counts[MC_APPROVAL_STATUS_COUNT];
        uint32_t total = mc_approval_counts(&o->core, counts);
        MC_LOG_INFO("replay done: approval core rebuilt", MC_LF_STR("run_id", ops.run),
                    MC_LF_UINT("inputs", inputs), MC_LF_UINT("human_decisions", nh),
                    MC_LF_UINT("actions", total),
                    MC_LF_UINT("pending", counts[COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING]),
                    MC_LF_UINT("next_seq", mc_approval_next_seq(&o->core)));
    }
    for (size_t i = 0; i < nh; i++)
        ops__v1__approval_decision__free_unpacked(humans[i], NULL);
    free(humans);
    rlist_free(&ops);
    rlist_free(&events);
    return st;
}
