/* The orchestrator service: wiring, consumers, the core's outputs, database
 * jobs, health and shutdown (see orch.h). */
#include "orch.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "http/auth.h"
#include "http/sse.h"
#include "json/json.h"
#include "log/log.h"
#include "orch_internal.h"

/* ---- Configuration ---- */

static const char *const approval_modes[] = {"manual", "auto", "auto-low-risk", NULL};

static const mc_config_var vars[] = {
    MC_CONFIG_VARS_NATS(mc_orch_config, nats),
    MC_CONFIG_VARS_DB(mc_orch_config, db),
    MC_CONFIG_VARS_LOG(mc_orch_config, log),
    {"ADDR", MC_CFG_ADDR, ":8081", "HTTP listen address (host:port or :port)",
     offsetof(mc_orch_config, addr)},
    {"SIM_ENGINE_URL", MC_CFG_URL, "http://localhost:8080",
     "Base URL of the simulation engine's SimulationService", offsetof(mc_orch_config, sim_engine_url),
     .choices = mc_config_http_schemes},
    {"SIM_ENGINE_TIMEOUT", MC_CFG_DURATION_MS, "5s", "Timeout of one call to the engine",
     offsetof(mc_orch_config, sim_engine_timeout_ms), .min = 1, .max = 600000},
    {"API_TOKEN", MC_CFG_STRING, NULL,
     "Bearer token for mutating calls (API_TOKEN_FILE wins when both are set)",
     offsetof(mc_orch_config, api_token), .secret = true},
    {"API_TOKEN_FILE", MC_CFG_STRING, NULL,
     "File holding the bearer token; missing or unreadable stops the start",
     offsetof(mc_orch_config, api_token_file)},
    {"READ_REQUIRES_TOKEN", MC_CFG_BOOL, "false",
     "Require the token for reads and the event stream too", offsetof(mc_orch_config, read_requires_token)},
    {"CORS_ORIGINS", MC_CFG_STRING, "http://localhost:3000",
     "Comma-separated origins allowed to call the API from a browser (\"*\": any)",
     offsetof(mc_orch_config, cors_origins)},
    {"APPROVAL_MODE", MC_CFG_ENUM, "manual", "manual, auto or auto-low-risk",
     offsetof(mc_orch_config, approval_mode), .choices = approval_modes},
    {"ACTION_EXPIRY_TICKS", MC_CFG_UINT, "30", "Ticks after its proposal a pending action expires (0: never)",
     offsetof(mc_orch_config, action_expiry_ticks), .min = 0, .max = 1e12},
    {"WEB_DIR", MC_CFG_STRING, "web/out", "Dashboard build served at / when the folder exists",
     offsetof(mc_orch_config, web_dir)},
    {"BUS_STREAM_PREFIX", MC_CFG_STRING, NULL, "Prefix of the JetStream stream names (tests)",
     offsetof(mc_orch_config, bus_stream_prefix)},
    {"BUS_STREAM_REPLICAS", MC_CFG_UINT, "1",
     "Copies of the SIM and OPS streams in a JetStream cluster (1..5), when they are created",
     offsetof(mc_orch_config, bus_stream_replicas), .min = 1, .max = 5},
    {"BUS_SUBJECT_PREFIX", MC_CFG_STRING, NULL, "Prefix of every subject, e.g. \"t1.\" (tests)",
     offsetof(mc_orch_config, bus_subject_prefix)},
    {"CONSUMER_NAME", MC_CFG_STRING, "orchestrator", "Durable consumer name prefix",
     offsetof(mc_orch_config, consumer_name)},
    {"TICK_MAX_SERVICES", MC_CFG_UINT, "50",
     "Services per SSE tick event before downsampling to the worst ones",
     offsetof(mc_orch_config, tick_max_services), .min = 1, .max = 100000},
    {"SSE_HISTORY", MC_CFG_UINT, "1024", "Events kept for SSE resume",
     offsetof(mc_orch_config, sse_history), .min = 1, .max = 1000000},
    {"SSE_MAX_CLIENTS", MC_CFG_UINT, "1024", "Event stream clients at once",
     offsetof(mc_orch_config, sse_max_clients), .min = 1, .max = 100000},
    {"SSE_MAX_UNSENT_BYTES", MC_CFG_UINT, "1048576",
     "Bytes a stream client may lag behind before it is disconnected",
     offsetof(mc_orch_config, sse_max_unsent_bytes), .min = 1024, .max = 1e9},
    {"HTTP_SEND_BUFFER_BYTES", MC_CFG_UINT, "0",
     "SO_SNDBUF of accepted connections (0: the OS default; small values let tests see slow clients)",
     offsetof(mc_orch_config, http_send_buffer_bytes), .min = 0, .max = 1 << 30},
    {"SHUTDOWN_TIMEOUT", MC_CFG_DURATION_MS, "10s", "Graceful shutdown bound",
     offsetof(mc_orch_config, shutdown_timeout_ms), .min = 1, .max = 600000},
};

const mc_config_var *mc_orch_config_vars(size_t *n)
{
    *n = sizeof vars / sizeof vars[0];
    return vars;
}

static mc_status load_token(mc_orch *o, mc_error *err)
{
    const mc_orch_config *c = o->cfg;
    o->token[0] = '\0';
    o->token_len = 0;
    if (c->api_token_file != NULL && c->api_token_file[0] != '\0') {
        FILE *f = fopen(c->api_token_file, "rb");
        if (f == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "API_TOKEN_FILE=%s: %s", c->api_token_file,
                                strerror(errno));
        size_t n = fread(o->token, 1, sizeof o->token - 1, f);
        bool more = fgetc(f) != EOF;
        bool bad = ferror(f) != 0;
        fclose(f);
        if (bad)
            return mc_error_set(err, MC_ERR_INVALID, "API_TOKEN_FILE=%s: read error",
                                c->api_token_file);
        if (more)
            return mc_error_set(err, MC_ERR_INVALID, "API_TOKEN_FILE=%s: longer than %zu bytes",
                                c->api_token_file, sizeof o->token - 1);
        while (n > 0 && (o->token[n - 1] == '\n' || o->token[n - 1] == '\r' ||
                         o->token[n - 1] == ' ' || o->token[n - 1] == '\t'))
            n--;
        o->token[n] = '\0';
        if (n == 0)
            return mc_error_set(err, MC_ERR_INVALID, "API_TOKEN_FILE=%s: the file is empty",
                                c->api_token_file);
        o->token_len = n;
        return MC_OK;
    }
    if (c->api_token != NULL && c->api_token[0] != '\0') {
        size_t n = strlen(c->api_token);
        if (n >= sizeof o->token)
            return mc_error_set(err, MC_ERR_INVALID, "API_TOKEN: longer than %zu bytes",
                                sizeof o->token - 1);
        memcpy(o->token, c->api_token, n + 1);
        o->token_len = n;
    }
    return MC_OK;
}

/* ---- Small helpers ---- */

void orch_subject(const mc_orch *o, const char *subject, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", o->subject_prefix, subject);
}

const char *orch_unprefix(const mc_orch *o, const char *subject)
{
    if (subject == NULL || strncmp(subject, o->subject_prefix, o->prefix_len) != 0)
        return NULL;
    return subject + o->prefix_len;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool orch_query_param(const char *query, const char *name, char *out, size_t cap)
{
    if (query == NULL || cap == 0)
        return false;
    size_t nl = strlen(name);
    const char *p = query;
    while (*p != '\0') {
        const char *amp = strchr(p, '&');
        size_t seg = amp ? (size_t)(amp - p) : strlen(p);
        if (seg > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            const char *v = p + nl + 1;
            size_t vl = seg - nl - 1, k = 0;
            for (size_t i = 0; i < vl && k + 1 < cap; i++) {
                if (v[i] == '%' && i + 2 < vl && hexval(v[i + 1]) >= 0 && hexval(v[i + 2]) >= 0) {
                    out[k++] = (char)(hexval(v[i + 1]) * 16 + hexval(v[i + 2]));
                    i += 2;
                } else if (v[i] == '+') {
                    out[k++] = ' ';
                } else {
                    out[k++] = v[i];
                }
            }
            out[k] = '\0';
            return true;
        }
        p += seg;
        if (*p == '&')
            p++;
    }
    return false;
}

/* Where a failed attempt came from, for the log line. */
static const char *client_hint(mc_http_request *req)
{
    const char *xff = mc_http_request_header(req, "X-Forwarded-For");
    return xff ? xff : "";
}

static void auth_failed(mc_orch *o, mc_http_request *req, const char *what, const char *why)
{
    mc_http_counter_inc(o->m_auth_failures);
    MC_LOG_WARN("authentication failed", MC_LF_STR("call", what), MC_LF_STR("reason", why),
                MC_LF_STR("forwarded_for", client_hint(req)));
}

bool orch_auth_ok(mc_orch *o, mc_http_request *req, const char *what)
{
    if (req == NULL)
        return false;
    mc_http_auth_result r = mc_http_auth_bearer_check(req, o->token, o->token_len);
    if (r == MC_HTTP_AUTH_OK)
        return true;
    auth_failed(o, req, what,
                o->token_len == 0            ? "no API token is configured"
                : r == MC_HTTP_AUTH_MISSING ? "missing bearer token"
                                            : "invalid bearer token");
    return false;
}

bool orch_read_auth_ok(mc_orch *o, mc_http_request *req, const char *what)
{
    if (!o->cfg->read_requires_token)
        return true;
    char tok[1024];
    if (mc_http_request_header(req, "Authorization") == NULL &&
        orch_query_param(mc_http_request_query(req), "access_token", tok, sizeof tok)) {
        if (o->token_len > 0 && mc_http_auth_token_equal(tok, strlen(tok), o->token, o->token_len))
            return true;
        auth_failed(o, req, what, "invalid access_token");
        return false;
    }
    return orch_auth_ok(o, req, what);
}

/* ---- The core ---- */

mc_status orch_core_reset(mc_orch *o, const char *run_id, mc_error *err)
{
    if (o->core_ready)
        mc_approval_deinit(&o->core);
    o->core_ready = false;
    mc_approval_config cc;
    mc_approval_config_default(&cc);
    cc.mode = (mc_approval_mode)o->cfg->approval_mode;
    cc.expiry_ticks = o->cfg->action_expiry_ticks;
    cc.run_id = run_id;
    mc_status st = mc_approval_init(&o->core, &cc, err);
    if (st != MC_OK)
        return st;
    o->core_ready = true;
    return MC_OK;
}

/* ---- Database jobs ---- */

orch_job *orch_job_new(mc_orch *o, enum orch_job_kind kind)
{
    orch_job *j = calloc(1, sizeof *j);
    if (j == NULL)
        return NULL;
    j->o = o;
    j->kind = kind;
    return j;
}

static mc_status history_work(mc_store *s, orch_job *j);
extern mc_status orch_api_history_work(mc_store *s, orch_job *j);

static mc_status job_work(mc_store *s, mc_dbq_job *base)
{
    orch_job *j = (orch_job *)base;
    switch (j->kind) {
    case ORCH_JOB_BARRIER:
        return MC_OK;
    case ORCH_JOB_INSERT_ACTION: {
        Ops__V1__Action *a = ops__v1__action__unpack(NULL, j->pb_len, j->pb);
        if (a == NULL)
            return mc_error_set(&j->base.err, MC_ERR_INTERNAL, "cannot unpack the action");
        bool inserted;
        mc_status st = mc_store_action_insert(s, a, &inserted, &j->base.err);
        ops__v1__action__free_unpacked(a, NULL);
        return st;
    }
    case ORCH_JOB_TRANSITION: {
        mc_store_action_transition t = {
            .action_id = j->action_id,
            .expected_status = (Common__V1__ActionStatus)j->from_status,
            .to_status = (Common__V1__ActionStatus)j->to_status,
            .actor = j->actor,
            .decided_by = j->decided_by[0] ? j->decided_by : NULL,
            .tick = j->tick,
            .reason = j->reason,
        };
        mc_status st = mc_store_action_status_update(s, &t, NULL, &j->base.err);
        if (st == MC_ERR_STATE) {
            /* Already applied (a replay after a restart re-makes stored
             * transitions): the compare-and-set refuses, nothing changes. */
            mc_error_clear(&j->base.err);
            return MC_OK;
        }
        return st;
    }
    case ORCH_JOB_INCIDENT: {
        Ops__V1__Incident *inc = ops__v1__incident__unpack(NULL, j->pb_len, j->pb);
        if (inc == NULL)
            return mc_error_set(&j->base.err, MC_ERR_INTERNAL, "cannot unpack the incident");
        mc_status st = mc_store_incident_upsert(s, inc, &j->base.err);
        ops__v1__incident__free_unpacked(inc, NULL);
        return st;
    }
    case ORCH_JOB_HISTORY:
        return history_work(s, j);
    case ORCH_JOB_PING: {
        uint64_t seq;
        return mc_store_position_get(s, "orchestrator-health", &seq, &j->base.err);
    }
    }
    return MC_ERR_INTERNAL;
}

static mc_status history_work(mc_store *s, orch_job *j)
{
    return orch_api_history_work(s, j);
}

static void job_done(mc_dbq_job *base)
{
    orch_job *j = (orch_job *)base;
    mc_orch *o = j->o;
    if (j->base.status != MC_OK && j->kind != ORCH_JOB_HISTORY && j->kind != ORCH_JOB_PING) {
        mc_http_counter_inc(o->m_db_errors);
        MC_LOG_ERROR("database write failed", MC_LF_STR("action_id", j->action_id),
                     MC_LF_STR("error", j->base.err.msg));
    }
    if (j->batch != NULL) {
        mc_error err = {0};
        if (mc_bus_batch_ack_all(j->batch, &err) != MC_OK)
            MC_LOG_WARN("ack failed", MC_LF_STR("error", err.msg));
        mc_bus_batch_free(j->batch);
        j->batch = NULL;
    }
    if (j->hook != NULL)
        j->hook(j);
    free(j->pb);
    free(j);
}

void orch_job_submit(mc_orch *o, orch_job *j)
{
    j->base.work = job_work;
    j->base.done = job_done;
    mc_error err = {0};
    mc_status st = o->dbq ? mc_dbq_submit(o->dbq, &j->base, &err)
                          : mc_error_set(&err, MC_ERR_STATE, "no database worker");
    if (st != MC_OK) {
        j->base.status = st;
        j->base.err = err;
        job_done(&j->base);
    }
}

/* ---- Feed helpers ---- */

static void feed_message(mc_orch *o, const char *event, const ProtobufCMessage *m)
{
    char *json = NULL;
    size_t len = 0;
    mc_error err = {0};
    if (mc_json_encode(m, &json, &len, &err) != MC_OK) {
        MC_LOG_WARN("cannot encode a feed event", MC_LF_STR("event", event),
                    MC_LF_STR("error", err.msg));
        return;
    }
    if (mc_feed_publish(o->feed, event, json, len) == MC_OK)
        mc_http_counter_inc(o->m_sse_events);
    free(json);
}

void orch_feed_action(mc_orch *o, const char *action_id)
{
    mc_approval_action v;
    if (mc_approval_get(&o->core, action_id, &v, NULL) != MC_OK)
        return;
    Ops__V1__Action a;
    mc_approval_action_to_proto(&v, &a);
    feed_message(o, "action", &a.base);
}

void orch_incident_seen(mc_orch *o, const Ops__V1__Incident *inc, bool send)
{
    if (inc->id == NULL || inc->id[0] == '\0')
        return;
    char *json = NULL;
    size_t len = 0;
    if (mc_json_encode(&inc->base, &json, &len, NULL) != MC_OK)
        return;
    if (send && mc_feed_publish(o->feed, "incident", json, len) == MC_OK)
        mc_http_counter_inc(o->m_sse_events);
    size_t i = 0;
    while (i < o->n_incidents && strcmp(o->incidents[i].id, inc->id) != 0)
        i++;
    if (inc->resolved) {
        if (i < o->n_incidents) {
            free(o->incidents[i].json);
            o->incidents[i] = o->incidents[--o->n_incidents];
        }
        free(json);
        return;
    }
    if (i == o->n_incidents) {
        if (o->n_incidents == ORCH_MAX_OPEN_INCIDENTS) {
            /* Forget the least recently updated one. */
            size_t old = 0;
            for (size_t k = 1; k < o->n_incidents; k++)
                if (o->incidents[k].updated_at_tick < o->incidents[old].updated_at_tick)
                    old = k;
            free(o->incidents[old].json);
            o->incidents[old] = o->incidents[--o->n_incidents];
            i = o->n_incidents;
        }
        o->n_incidents++;
        memset(&o->incidents[i], 0, sizeof o->incidents[i]);
        snprintf(o->incidents[i].id, sizeof o->incidents[i].id, "%s", inc->id);
    } else if (inc->updated_at_tick < o->incidents[i].updated_at_tick) {
        free(json); /* an older update arriving late */
        return;
    }
    snprintf(o->incidents[i].target, sizeof o->incidents[i].target, "%s",
             inc->target_id ? inc->target_id : "");
    o->incidents[i].updated_at_tick = inc->updated_at_tick;
    free(o->incidents[i].json);
    o->incidents[i].json = json;
}

/* ---- After a core call ---- */

mc_status orch_after_core(mc_orch *o, const uint8_t *proposal_pb, size_t proposal_len)
{
    mc_status result = MC_OK;
    const char *run = mc_approval_run_id(&o->core);
    for (size_t i = 0; i < o->outbox.len; i++) {
        const mc_outbox_msg *m = &o->outbox.items[i];
        bool publish = !(o->replaying && m->producer_seq <= o->replay_published_seq);
        if (publish) {
            char subject[MC_SUBJECT_MAX + 64];
            orch_subject(o, m->subject, subject, sizeof subject);
            mc_error err = {0};
            mc_status st = mc_bus_publish_stamped(o->bus, subject, run, m->tick, m->producer_seq,
                                                  m->payload, m->len, &err);
            if (st != MC_OK) {
                /* The bus retries acked publishes itself; a refusal here
                 * (too many in flight) is logged and the message is lost
                 * for this run: say so loudly. */
                MC_LOG_ERROR("publish failed", MC_LF_STR("subject", subject),
                             MC_LF_UINT("producer_seq", m->producer_seq),
                             MC_LF_STR("error", err.msg));
                result = st;
            }
        }
        if (strcmp(m->subject, MC_APPROVAL_SUBJECT_COMMANDS) == 0) {
            if (publish)
                mc_http_counter_inc(o->m_commands);
        } else if (strcmp(m->subject, MC_APPROVAL_SUBJECT_DECISIONS) == 0) {
            if (publish)
                mc_http_counter_inc(o->m_decisions);
            if (!o->replaying) {
                Ops__V1__ApprovalDecision *d =
                    ops__v1__approval_decision__unpack(NULL, m->len, m->payload);
                if (d != NULL) {
                    feed_message(o, "decision", &d->base);
                    ops__v1__approval_decision__free_unpacked(d, NULL);
                }
            }
        }
    }
    mc_outbox_clear(&o->outbox);

    size_t n = 0;
    const mc_approval_transition *t = mc_approval_transitions(&o->core, &n);
    if (o->replaying)
        n = 0; /* stored by the previous process (replay.c) */
    orch_job *lastjob = NULL;
    for (size_t i = 0; i < n; i++) {
        orch_job *j;
        if (t[i].from_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_UNSPECIFIED) {
            j = orch_job_new(o, ORCH_JOB_INSERT_ACTION);
            if (j == NULL)
                return MC_ERR_NOMEM;
            /* The stored row is the core's view (with its expiry), stamped
             * like the proposal. */
            mc_approval_action v;
            Ops__V1__Action *orig =
                proposal_pb ? ops__v1__action__unpack(NULL, proposal_len, proposal_pb) : NULL;
            if (mc_approval_get(&o->core, t[i].action_id, &v, NULL) == MC_OK) {
                Ops__V1__Action a;
                mc_approval_action_to_proto(&v, &a);
                a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
                a.decided_by = (char *)"";
                a.status_reason = (char *)"";
                a.updated_at_tick = v.proposed_at_tick;
                Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
                stamp.run_id = (char *)run;
                if (orig != NULL && orig->stamp != NULL)
                    a.stamp = orig->stamp;
                else
                    a.stamp = &stamp;
                j->pb_len = ops__v1__action__get_packed_size(&a);
                j->pb = malloc(j->pb_len ? j->pb_len : 1);
                if (j->pb != NULL)
                    ops__v1__action__pack(&a, j->pb);
            }
            if (orig != NULL)
                ops__v1__action__free_unpacked(orig, NULL);
            snprintf(j->action_id, sizeof j->action_id, "%s", t[i].action_id);
            if (j->pb == NULL) {
                free(j);
                continue;
            }
        } else {
            j = orch_job_new(o, ORCH_JOB_TRANSITION);
            if (j == NULL)
                return MC_ERR_NOMEM;
            snprintf(j->action_id, sizeof j->action_id, "%s", t[i].action_id);
            j->from_status = t[i].from_status;
            j->to_status = t[i].to_status;
            snprintf(j->actor, sizeof j->actor, "%s", t[i].actor);
            bool decision =
                t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED ||
                t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED ||
                t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_EXPIRED ||
                t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_SUPERSEDED;
            if (decision)
                snprintf(j->decided_by, sizeof j->decided_by, "%s", t[i].actor);
            j->tick = t[i].tick;
            snprintf(j->reason, sizeof j->reason, "%s", t[i].reason);
            if (t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED)
                mc_http_counter_inc(o->m_approvals);
            else if (t[i].to_status == COMMON__V1__ACTION_STATUS__ACTION_STATUS_REJECTED)
                mc_http_counter_inc(o->m_rejections);
        }
        if (lastjob != NULL)
            orch_job_submit(o, lastjob);
        lastjob = j;
        if (!o->replaying) {
            /* Send the action once, after its last change in this call. */
            bool later = false;
            for (size_t k = i + 1; k < n; k++)
                if (strcmp(t[k].action_id, t[i].action_id) == 0)
                    later = true;
            if (!later)
                orch_feed_action(o, t[i].action_id);
        }
    }
    if (lastjob != NULL)
        orch_job_submit(o, lastjob);
    uint32_t counts[MC_APPROVAL_STATUS_COUNT];
    mc_approval_counts(&o->core, counts);
    mc_http_gauge_set(o->g_pending, counts[COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING]);
    return result;
}

/* ---- Consumers ---- */

static bool stamp_run_differs(mc_orch *o, const Common__V1__Stamp *stamp)
{
    const char *cur = mc_approval_run_id(&o->core);
    return stamp != NULL && stamp->run_id != NULL && stamp->run_id[0] != '\0' && cur[0] != '\0' &&
           strcmp(stamp->run_id, cur) != 0;
}

/* A stamped input of another run: the engine started a new run. */
static void maybe_new_run(mc_orch *o, const Common__V1__Stamp *stamp)
{
    if (!stamp_run_differs(o, stamp))
        return;
    MC_LOG_INFO("new run: the approval core starts over",
                MC_LF_STR("previous", mc_approval_run_id(&o->core)),
                MC_LF_STR("run_id", stamp->run_id));
    mc_error err = {0};
    if (orch_core_reset(o, stamp->run_id, &err) != MC_OK)
        MC_LOG_ERROR("cannot re-initialize the approval core", MC_LF_STR("error", err.msg));
    for (size_t i = 0; i < o->n_incidents; i++)
        free(o->incidents[i].json);
    o->n_incidents = 0;
    if (!o->replaying)
        orch_engine_refresh(o);
}

static void deadletter(mc_orch *o, mc_bus_msg *m, const char *why)
{
    mc_http_counter_inc(o->m_invalid_inputs);
    mc_error err = {0};
    if (mc_bus_msg_deadletter(m, why, &err) != MC_OK)
        MC_LOG_ERROR("dead-letter failed", MC_LF_STR("error", err.msg));
}

/* Feeds one OPS message to the core; false when the caller should not
 * count it as handled (it was dead-lettered or nak'ed). Also used by the
 * replay with m NULL. */
mc_status orch_feed_ops(mc_orch *o, const char *subject, const uint8_t *data, size_t len,
                        mc_error *err);
mc_status orch_feed_ops(mc_orch *o, const char *subject, const uint8_t *data, size_t len,
                        mc_error *err)
{
    mc_status st = MC_OK;
    if (strcmp(subject, "ops.actions") == 0) {
        Ops__V1__Action *a = ops__v1__action__unpack(NULL, len, data);
        if (a == NULL)
            return mc_error_set(err, MC_ERR_PARSE, "undecodable ops.v1.Action");
        maybe_new_run(o, a->stamp);
        st = mc_approval_on_action(&o->core, a, &o->outbox, err);
        ops__v1__action__free_unpacked(a, NULL);
        if (st == MC_OK)
            st = orch_after_core(o, data, len);
    } else if (strcmp(subject, "ops.incidents") == 0) {
        Ops__V1__Incident *inc = ops__v1__incident__unpack(NULL, len, data);
        if (inc == NULL)
            return mc_error_set(err, MC_ERR_PARSE, "undecodable ops.v1.Incident");
        maybe_new_run(o, inc->stamp);
        st = mc_approval_on_incident(&o->core, inc, &o->outbox, err);
        if (st == MC_OK) {
            orch_incident_seen(o, inc, !o->replaying);
            orch_job *j = o->replaying ? NULL : orch_job_new(o, ORCH_JOB_INCIDENT);
            if (j != NULL) {
                j->pb = malloc(len ? len : 1);
                j->pb_len = len;
                if (j->pb != NULL) {
                    memcpy(j->pb, data, len);
                    snprintf(j->action_id, sizeof j->action_id, "incident %s",
                             inc->id ? inc->id : "");
                    orch_job_submit(o, j);
                } else {
                    free(j);
                }
            }
            st = orch_after_core(o, NULL, 0);
        }
        ops__v1__incident__free_unpacked(inc, NULL);
    } else if (strcmp(subject, "ops.watermark.agent") == 0) {
        Ops__V1__Watermark *w = ops__v1__watermark__unpack(NULL, len, data);
        if (w == NULL)
            return mc_error_set(err, MC_ERR_PARSE, "undecodable ops.v1.Watermark");
        maybe_new_run(o, w->stamp);
        uint64_t last;
        bool closed = mc_approval_last_closed_tick(&o->core, &last);
        if (closed && w->tick <= last) {
            st = MC_OK; /* a redelivered watermark: the tick is closed already */
        } else {
            if (mc_approval_run_id(&o->core)[0] == '\0' && w->stamp && w->stamp->run_id &&
                w->stamp->run_id[0]) {
                /* The core learns its run from its first stamped input;
                 * a watermark is not one, so tell it explicitly. */
                orch_core_reset(o, w->stamp->run_id, NULL);
            }
            st = mc_approval_on_tick_end(&o->core, w->tick, &o->outbox, err);
            if (st == MC_OK)
                st = orch_after_core(o, NULL, 0);
        }
        ops__v1__watermark__free_unpacked(w, NULL);
    }
    return st;
}

mc_status orch_feed_event(mc_orch *o, const uint8_t *data, size_t len, mc_error *err);
mc_status orch_feed_event(mc_orch *o, const uint8_t *data, size_t len, mc_error *err)
{
    Sim__V1__SimulationEvent *e = sim__v1__simulation_event__unpack(NULL, len, data);
    if (e == NULL)
        return mc_error_set(err, MC_ERR_PARSE, "undecodable sim.v1.SimulationEvent");
    mc_status st = MC_OK;
    if (e->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_APPLIED ||
        e->kind == SIM__V1__SIMULATION_EVENT_KIND__SIMULATION_EVENT_KIND_COMMAND_REFUSED) {
        if (!stamp_run_differs(o, e->stamp)) {
            st = mc_approval_on_event(&o->core, e, &o->outbox, err);
            if (st == MC_OK)
                st = orch_after_core(o, NULL, 0);
        }
    }
    sim__v1__simulation_event__free_unpacked(e, NULL);
    return st;
}

/* Handles a batch of a durable consumer; acks it once the database jobs it
 * caused have run (a barrier job behind them). */
static void handle_batch(mc_orch *o, mc_bus_batch *b, bool ops)
{
    size_t n = mc_bus_batch_count(b);
    uint64_t skip = ops ? o->ops_replayed_seq : o->sim_replayed_seq;
    for (size_t i = 0; i < n; i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        mc_http_counter_inc(o->m_consumed);
        if (mc_bus_msg_stream_seq(m) <= skip)
            continue;
        const char *subject = orch_unprefix(o, mc_bus_msg_subject(m));
        if (subject == NULL)
            continue;
        mc_error err = {0};
        mc_status st = ops ? orch_feed_ops(o, subject, mc_bus_msg_data(m), mc_bus_msg_len(m), &err)
                           : orch_feed_event(o, mc_bus_msg_data(m), mc_bus_msg_len(m), &err);
        if (st == MC_ERR_PARSE || st == MC_ERR_INVALID) {
            MC_LOG_WARN("refused input", MC_LF_STR("subject", subject),
                        MC_LF_UINT("seq", mc_bus_msg_stream_seq(m)), MC_LF_STR("error", err.msg));
            deadletter(o, m, err.msg);
        } else if (st == MC_ERR_LIMIT) {
            MC_LOG_WARN("core full, retrying later", MC_LF_STR("subject", subject),
                        MC_LF_STR("error", err.msg));
            mc_bus_msg_nak(m, 1000, NULL);
        } else if (st != MC_OK) {
            MC_LOG_ERROR("input failed", MC_LF_STR("subject", subject),
                         MC_LF_STR("status", mc_status_name(st)), MC_LF_STR("error", err.msg));
        }
    }
    orch_job *j = orch_job_new(o, ORCH_JOB_BARRIER);
    if (j == NULL) {
        mc_bus_batch_free(b); /* redelivered after ack_wait */
        return;
    }
    j->batch = b;
    orch_job_submit(o, j);
}

static void on_ops_batch(void *ctx, mc_bus_batch *b)
{
    handle_batch(ctx, b, true);
}

static void on_events_batch(void *ctx, mc_bus_batch *b)
{
    handle_batch(ctx, b, false);
}

static void on_sim_batch(void *ctx, mc_bus_batch *b)
{
    mc_orch *o = ctx;
    size_t n = mc_bus_batch_count(b);
    for (size_t i = 0; i < n; i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        const char *subject = orch_unprefix(o, mc_bus_msg_subject(m));
        if (subject != NULL)
            orch_ticks_on_sim(o, subject, mc_bus_msg_data(m), mc_bus_msg_len(m));
    }
    mc_bus_batch_free(b);
}

/* ---- HTTP: stream, health ---- */

static void stream_handler(mc_http_request *req, void *ctx)
{
    mc_orch *o = ctx;
    if (!orch_read_auth_ok(o, req, "stream")) {
        mc_http_response_header_add(req, "WWW-Authenticate", "Bearer");
        mc_http_respond_text(req, 401, "application/json",
                             "{\"code\":\"unauthenticated\",\"message\":\"bearer token required\"}");
        return;
    }
    char last[64];
    bool have = orch_query_param(mc_http_request_query(req), "last_event_id", last, sizeof last);
    mc_feed_subscribe(o->feed, req, have ? last : NULL);
}

static bool ready_fn(void *ctx, const char **reason)
{
    mc_orch *o = ctx;
    if (o->shutting_down) {
        *reason = "shutting down";
        return false;
    }
    if (!o->nats_ok) {
        *reason = "NATS JetStream unreachable";
        return false;
    }
    if (!mc_dbq_reachable(o->dbq)) {
        *reason = "PostgreSQL unreachable";
        return false;
    }
    return true;
}

static void health_work(uv_work_t *w)
{
    mc_orch *o = w->data;
    /* The connection state (no JetStream round trip every probe). */
    o->nats_ok = mc_bus_connected(o->bus);
}

static void health_after(uv_work_t *w, int status)
{
    mc_orch *o = w->data;
    (void)status;
    o->health_inflight = false;
    if (o->free_bus_after_health) {
        mc_bus_free(o->bus);
        o->bus = NULL;
    }
}

static void on_health_timer(uv_timer_t *t)
{
    mc_orch *o = t->data;
    if (o->shutting_down)
        return;
    if (!o->health_inflight) {
        o->health_inflight = true;
        o->health_work.data = o;
        if (uv_queue_work(o->loop, &o->health_work, health_work, health_after) != 0)
            o->health_inflight = false;
    }
    orch_job *j = orch_job_new(o, ORCH_JOB_PING);
    if (j != NULL)
        orch_job_submit(o, j);
    mc_http_gauge_set(o->g_sse_clients, (double)mc_feed_clients(o->feed));
    mc_http_gauge_set(o->g_db_queue, (double)mc_dbq_depth(o->dbq));
    mc_http_gauge_set(o->g_acks_pending, (double)mc_bus_acks_pending(o->bus));
    uint64_t consumed = mc_bus_consumer_delivered(o->ops_consumer) +
                        mc_bus_consumer_delivered(o->events_consumer);
    (void)consumed;
    mc_http_gauge_set(o->g_consumer_lag, (double)mc_dbq_depth(o->dbq));
}

static void metrics_handler(mc_http_request *req, void *ctx)
{
    mc_orch *o = ctx;
    mc_http_gauge_set(o->g_sse_clients, (double)mc_feed_clients(o->feed));
    mc_http_gauge_set(o->g_db_queue, (double)mc_dbq_depth(o->dbq));
    mc_http_gauge_set(o->g_acks_pending, (double)mc_bus_acks_pending(o->bus));
    mc_http_metrics_handler(req, o->metrics);
}

static mc_status register_metrics(mc_orch *o, mc_error *err)
{
    static const char *const rpc[] = {"ListPendingActions", "ApproveAction", "RejectAction",
                                      "GetActionHistory"};
    mc_status st = MC_OK;
    for (size_t i = 0; i < 4 && st == MC_OK; i++) {
        mc_http_metric_label l[] = {{"method", rpc[i]}};
        st = mc_http_metrics_counter(o->metrics, "orchestrator_rpc_requests_total",
                                     "ActionService calls by method", l, 1, &o->m_rpc[i], err);
    }
#define C(field, name, help)                                                                       \
    if (st == MC_OK)                                                                               \
        st = mc_http_metrics_counter(o->metrics, name, help, NULL, 0, &o->field, err);
#define G(field, name, help)                                                                       \
    if (st == MC_OK)                                                                               \
        st = mc_http_metrics_gauge(o->metrics, name, help, NULL, 0, &o->field, err);
    C(m_approvals, "orchestrator_approvals_total", "Actions approved (people and policy)")
    C(m_rejections, "orchestrator_rejections_total", "Actions rejected by people")
    C(m_commands, "orchestrator_commands_published_total", "ApplyActionCommand messages published")
    C(m_decisions, "orchestrator_decisions_published_total", "ApprovalDecision messages published")
    C(m_auth_failures, "orchestrator_auth_failures_total", "Failed authentication attempts")
    C(m_consumed, "orchestrator_messages_consumed_total", "Messages from the durable consumers")
    C(m_db_errors, "orchestrator_db_errors_total", "Database writes that failed")
    C(m_proxy_calls, "orchestrator_engine_calls_total", "Calls forwarded to the engine")
    C(m_proxy_unavailable, "orchestrator_engine_unavailable_total",
      "Engine calls that failed to reach it")
    C(m_sse_events, "orchestrator_sse_events_total", "Events published on the dashboard stream")
    C(m_invalid_inputs, "orchestrator_invalid_inputs_total", "Consumed messages dead-lettered")
    G(g_sse_clients, "orchestrator_sse_clients", "Dashboard stream clients connected")
    G(g_pending, "orchestrator_pending_actions", "Actions waiting for a decision")
    G(g_db_queue, "orchestrator_db_queue_depth", "Database jobs waiting or running")
    G(g_acks_pending, "orchestrator_publish_acks_pending", "Publishes awaiting a JetStream ack")
    G(g_consumer_lag, "orchestrator_consumer_lag",
      "Consumed messages whose durable work is not done yet (database jobs queued)")
#undef C
#undef G
    return st;
}

/* ---- Start and shutdown ---- */

static void close_handle_if(uv_handle_t *h)
{
    if (h->loop != NULL && !uv_is_closing(h))
        uv_close(h, NULL);
}

static void flush_work(uv_work_t *w)
{
    mc_orch *o = w->data;
    mc_error err = {0};
    if (mc_bus_flush(o->bus, 5000, &err) != MC_OK)
        MC_LOG_WARN("publishes not all confirmed at shutdown", MC_LF_STR("error", err.msg));
}

static uv_work_t flush_req;

static void flush_after(uv_work_t *w, int status)
{
    mc_orch *o = w->data;
    (void)status;
    MC_LOG_INFO("shutdown complete", MC_LF_UINT("published", mc_bus_published(o->bus)));
    close_handle_if((uv_handle_t *)&o->health_timer);
    close_handle_if((uv_handle_t *)&o->engine_timer);
    /* A health check may still be using the bus on the thread pool. */
    if (o->health_inflight) {
        o->free_bus_after_health = true;
        return;
    }
    mc_bus_free(o->bus);
    o->bus = NULL;
}

static void on_db_closed(void *ctx)
{
    mc_orch *o = ctx;
    flush_req.data = o;
    if (uv_queue_work(o->loop, &flush_req, flush_work, flush_after) != 0)
        flush_after(&flush_req, 0);
}

static void on_http_done(mc_http_server *srv, bool forced, void *ctx)
{
    (void)srv;
    mc_orch *o = ctx;
    MC_LOG_INFO("HTTP server stopped", MC_LF_BOOL("forced", forced));
    mc_dbq_close(o->dbq, on_db_closed, o);
}

static uv_signal_t sig_int, sig_term;

static void on_signal(uv_signal_t *s, int signum)
{
    mc_orch *o = s->data;
    if (o->shutting_down)
        return;
    o->shutting_down = true;
    MC_LOG_INFO("shutting down", MC_LF_INT("signal", signum));
    uv_signal_stop(&sig_int);
    uv_signal_stop(&sig_term);
    close_handle_if((uv_handle_t *)&sig_int);
    close_handle_if((uv_handle_t *)&sig_term);
    uv_timer_stop(&o->health_timer);
    uv_timer_stop(&o->engine_timer);
    /* Stop consuming first: nothing new reaches the core. (Closing the
     * ordered consumer currently blocks the loop for up to 5 s inside
     * lib/bus: it waits for an unsubscribe that only this loop can
     * complete.) */
    mc_bus_consumer_close(o->ops_consumer);
    mc_bus_consumer_close(o->events_consumer);
    mc_bus_consumer_close(o->sim_consumer);
    o->ops_consumer = o->events_consumer = o->sim_consumer = NULL;
    mc_feed_close_all(o->feed);
    mc_http_server_shutdown(o->srv, on_http_done, o);
}

static mc_status open_store(mc_orch *o, mc_store **out, mc_error *err)
{
    char conninfo[2048];
    if (mc_db_config_conninfo(&o->cfg->db, conninfo, sizeof conninfo) != MC_OK)
        return mc_error_set(err, MC_ERR_INVALID, "database settings too long");
    mc_store_options so = {.conninfo = conninfo};
    mc_status st = mc_store_open(&so, out, err);
    if (st != MC_OK)
        return st;
    st = mc_store_migrate(*out, NULL, err);
    if (st != MC_OK) {
        mc_store_free(*out);
        *out = NULL;
    }
    return st;
}

static void on_publish_error(void *ctx, const mc_bus_publish_failure *f)
{
    (void)ctx;
    MC_LOG_ERROR("publish finally failed", MC_LF_STR("subject", f->subject),
                 MC_LF_STR("msg_id", f->msg_id), MC_LF_STR("error", f->error));
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static mc_status start(mc_orch *o, mc_error *err)
{
    const mc_orch_config *c = o->cfg;
    mc_status st = load_token(o, err);
    if (st != MC_OK)
        return st;
    if (o->token_len == 0)
        MC_LOG_WARN("no API_TOKEN or API_TOKEN_FILE: every mutating call will be refused",
                    MC_LF_STR("addr", c->addr.host));
    snprintf(o->subject_prefix, sizeof o->subject_prefix, "%s",
             c->bus_subject_prefix ? c->bus_subject_prefix : "");
    o->prefix_len = strlen(o->subject_prefix);
    st = mc_hc_target_parse(c->sim_engine_url, &o->engine, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "SIM_ENGINE_URL");
    if ((st = mc_outbox_init(&o->outbox, 1u << 16)) != MC_OK)
        return mc_error_set(err, st, "outbox: out of memory");
    if ((st = orch_core_reset(o, NULL, err)) != MC_OK)
        return st;
    if ((st = orch_ticks_init(&o->ticks, err)) != MC_OK)
        return st;

    mc_bus_options bo = {0};
    bo.name = "orchestrator";
    bo.stream_prefix = c->bus_stream_prefix;
    bo.replicas = (uint32_t)c->bus_stream_replicas;
    bo.subject_prefix = c->bus_subject_prefix;
    bo.on_publish_error = on_publish_error;
    bo.on_publish_error_ctx = o;
    bo.max_pending_acks = 65536;
    if ((st = mc_bus_open(o->loop, &c->nats, &bo, &o->bus, err)) != MC_OK)
        return mc_error_wrap(err, "NATS");
    o->nats_ok = true;

    mc_store *store = NULL;
    if ((st = open_store(o, &store, err)) != MC_OK)
        return mc_error_wrap(err, "PostgreSQL");
    if ((st = mc_dbq_new(o->loop, store, 1u << 16, &o->dbq, err)) != MC_OK) {
        mc_store_free(store);
        return st;
    }

    if ((st = mc_http_metrics_new(&o->metrics, err)) != MC_OK ||
        (st = register_metrics(o, err)) != MC_OK)
        return st;
    mc_feed_options fo = {.history_events = c->sse_history,
                          .max_clients = c->sse_max_clients,
                          .id_base = wall_ms() * 1000u};
    if ((st = mc_feed_new(&fo, orch_snapshot, o, &o->feed, err)) != MC_OK)
        return st;

    /* Rebuild the core before serving anything. */
    if ((st = orch_replay(o, err)) != MC_OK)
        return mc_error_wrap(err, "restart replay");

    mc_http_server_config hc = {0};
    hc.host = c->addr.host;
    hc.port = c->addr.port;
    hc.sse_max_unsent_bytes = c->sse_max_unsent_bytes;
    hc.shutdown_timeout_ms = c->shutdown_timeout_ms;
    hc.max_connections = c->sse_max_clients + 256;
    hc.send_buffer_bytes = (int)c->http_send_buffer_bytes;
    if ((st = mc_http_server_new(o->loop, &hc, &o->srv, err)) != MC_OK)
        return mc_error_wrap(err, "ADDR");
    if (o->token_len > 0 && (st = mc_http_server_set_bearer_token(o->srv, o->token, err)) != MC_OK)
        return st;
    if ((st = mc_http_cors_new(c->cors_origins, &o->cors, err)) != MC_OK)
        return mc_error_wrap(err, "CORS_ORIGINS");
    mc_http_server_set_cors(o->srv, o->cors);
    if ((st = mc_http_server_register_metrics(o->srv, o->metrics, err)) != MC_OK ||
        (st = mc_http_server_add_health(o->srv, ready_fn, o, err)) != MC_OK ||
        (st = mc_http_server_route(o->srv, MC_HTTP_GET | MC_HTTP_HEAD, "/metrics",
                                   metrics_handler, o, err)) != MC_OK ||
        (st = mc_http_server_route(o->srv, MC_HTTP_GET, "/api/stream", stream_handler, o,
                                   err)) != MC_OK ||
        (st = orch_api_register(o, err)) != MC_OK || (st = orch_control_register(o, err)) != MC_OK)
        return st;
    struct stat sb;
    if (c->web_dir != NULL && c->web_dir[0] != '\0' && stat(c->web_dir, &sb) == 0 &&
        S_ISDIR(sb.st_mode)) {
        if ((st = mc_http_static_new(c->web_dir, NULL, &o->web, err)) != MC_OK)
            return mc_error_wrap(err, "WEB_DIR");
        if ((st = mc_http_server_route_prefix(o->srv, MC_HTTP_GET | MC_HTTP_HEAD, "/",
                                              mc_http_static_handler, o->web, err)) != MC_OK)
            return st;
        MC_LOG_INFO("serving the dashboard", MC_LF_STR("web_dir", c->web_dir));
    } else {
        MC_LOG_INFO("no dashboard build to serve", MC_LF_STR("web_dir", c->web_dir ? c->web_dir : ""));
    }

    char durable[256];
    snprintf(durable, sizeof durable, "%s-ops", c->consumer_name);
    mc_bus_pull_options po = {.stream = MC_BUS_STREAM_OPS,
                              .durable = durable,
                              .batch_size = 256,
                              .fetch_wait_ms = 200,
                              .on_batch = on_ops_batch,
                              .ctx = o};
    if ((st = mc_bus_pull_open(o->bus, &po, &o->ops_consumer, err)) != MC_OK)
        return st;
    char durable2[256], filter[128];
    snprintf(durable2, sizeof durable2, "%s-events", c->consumer_name);
    orch_subject(o, "sim.events", filter, sizeof filter);
    mc_bus_pull_options pe = {.stream = MC_BUS_STREAM_SIM,
                              .durable = durable2,
                              .filter_subject = filter,
                              .batch_size = 256,
                              .fetch_wait_ms = 200,
                              .on_batch = on_events_batch,
                              .ctx = o};
    if ((st = mc_bus_pull_open(o->bus, &pe, &o->events_consumer, err)) != MC_OK)
        return st;
    mc_bus_ordered_options oo = {.stream = MC_BUS_STREAM_SIM, .on_batch = on_sim_batch, .ctx = o};
    if ((st = mc_bus_ordered_open(o->bus, &oo, &o->sim_consumer, err)) != MC_OK)
        return st;

    uv_timer_init(o->loop, &o->health_timer);
    o->health_timer.data = o;
    uv_timer_start(&o->health_timer, on_health_timer, 0, 2000);
    uv_timer_init(o->loop, &o->engine_timer);
    o->engine_timer.data = o;
    orch_engine_refresh(o);

    uv_signal_init(o->loop, &sig_int);
    uv_signal_init(o->loop, &sig_term);
    sig_int.data = sig_term.data = o;
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    MC_LOG_INFO("orchestrator listening", MC_LF_STR("host", c->addr.host),
                MC_LF_UINT("port", mc_http_server_port(o->srv)),
                MC_LF_STR("approval_mode", mc_approval_mode_name((mc_approval_mode)c->approval_mode)),
                MC_LF_STR("sim_engine_url", c->sim_engine_url), MC_LF_STR("build", mc_build_id()));
    return MC_OK;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void teardown(mc_orch *o)
{
    mc_bus_consumer_close(o->ops_consumer);
    mc_bus_consumer_close(o->events_consumer);
    mc_bus_consumer_close(o->sim_consumer);
    mc_feed_free(o->feed);
    o->feed = NULL;
    if (o->dbq != NULL) {
        mc_dbq_close(o->dbq, NULL, NULL);
    }
    mc_bus_free(o->bus);
    o->bus = NULL;
    mc_http_server_free(o->srv);
    o->srv = NULL;
    /* Let libuv finish closing what is left. */
    uv_walk(o->loop, walk_close, NULL);
    uv_run(o->loop, UV_RUN_DEFAULT);
    mc_dbq_free(o->dbq);
    mc_http_cors_free(o->cors);
    mc_http_static_free(o->web);
    mc_http_metrics_free(o->metrics);
    if (o->core_ready)
        mc_approval_deinit(&o->core);
    mc_outbox_deinit(&o->outbox);
    orch_ticks_deinit(&o->ticks);
    for (size_t i = 0; i < o->n_incidents; i++)
        free(o->incidents[i].json);
    if (o->engine_state != NULL)
        sim__v1__simulation_state__free_unpacked(o->engine_state, NULL);
    if (o->topology != NULL)
        json_decref(o->topology);
}

mc_status mc_orch_run(const mc_orch_config *cfg, mc_error *err)
{
    mc_orch *o = calloc(1, sizeof *o);
    if (o == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    uv_loop_t loop;
    uv_loop_init(&loop);
    o->loop = &loop;
    o->cfg = cfg;
    mc_status st = start(o, err);
    if (st == MC_OK) {
        uv_run(&loop, UV_RUN_DEFAULT);
        /* The feed and server are closed; free what remains. */
        mc_feed_free(o->feed);
        o->feed = NULL;
    }
    teardown(o);
    uv_loop_close(&loop);
    free(o);
    return st;
}
