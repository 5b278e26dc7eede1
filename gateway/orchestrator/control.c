/* Simulation control for the dashboard: SimulationService calls forwarded to
 * the engine unchanged (body, content type, status), the engine's state and
 * topology as last seen, and the snapshot that opens every event stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "log/log.h"
#include "orch_internal.h"

#define SIM_SERVICE "/sim.v1.SimulationService/"

static const struct {
    const char *name;
    bool mutating;
} sim_methods[] = {
    {"Play", true},      {"Pause", true},       {"SetSpeed", true}, {"GetState", false},
    {"SetScenario", true}, {"InjectFault", true}, {"Reset", true},    {"GetTopology", false},
};

typedef struct proxy_call {
    mc_orch *o;
    mc_http_request *req;
    bool mutating;
} proxy_call;

static void respond_connect_error(mc_http_request *req, int http, const char *code,
                                  const char *message)
{
    json_t *j = json_pack("{s:s, s:s}", "code", code, "message", message);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        mc_http_respond_text(req, http, "application/json", "{\"code\":\"internal\"}");
        return;
    }
    mc_http_respond_text(req, http, "application/json", text);
    free(text);
}

static void proxy_done(void *ctx, mc_status st, const mc_hc_response *resp, const char *error)
{
    proxy_call *pc = ctx;
    mc_orch *o = pc->o;
    if (st != MC_OK) {
        mc_http_counter_inc(o->m_proxy_unavailable);
        MC_LOG_WARN("engine call failed", MC_LF_STR("path", mc_http_request_path(pc->req)),
                    MC_LF_STR("error", error));
        char msg[400];
        snprintf(msg, sizeof msg, "simulation engine unavailable: %s", error);
        respond_connect_error(pc->req, 503, "unavailable", msg);
    } else {
        mc_http_respond(pc->req, resp->status, resp->content_type[0] ? resp->content_type : NULL,
                        resp->body, resp->len);
        if (pc->mutating && resp->status >= 200 && resp->status < 300 && !o->shutting_down) {
            /* Tell the dashboards what the call changed. */
            o->engine_announce = true;
            orch_engine_refresh(o);
        }
    }
    free(pc);
}

static void proxy_handler(mc_http_request *req, void *ctx)
{
    mc_orch *o = ctx;
    const char *path = mc_http_request_path(req);
    const char *method = path + strlen(SIM_SERVICE);
    bool mutating = true;
    bool known = false;
    for (size_t i = 0; i < sizeof sim_methods / sizeof sim_methods[0]; i++)
        if (strcmp(method, sim_methods[i].name) == 0) {
            mutating = sim_methods[i].mutating;
            known = true;
        }
    if (!known) {
        respond_connect_error(req, 501, "unimplemented", "unknown SimulationService method");
        return;
    }
    bool ok = mutating ? orch_auth_ok(o, req, method) : orch_read_auth_ok(o, req, method);
    if (!ok) {
        mc_http_response_header_add(req, "WWW-Authenticate", "Bearer");
        respond_connect_error(req, 401, "unauthenticated", "a valid bearer token is required");
        return;
    }
    mc_http_counter_inc(o->m_proxy_calls);
    mc_hc_header hs[3];
    size_t nh = 0;
    const char *ct = mc_http_request_header(req, "Content-Type");
    hs[nh++] = (mc_hc_header){"Content-Type", ct ? ct : "application/json"};
    const char *pv = mc_http_request_header(req, "Connect-Protocol-Version");
    if (pv != NULL)
        hs[nh++] = (mc_hc_header){"Connect-Protocol-Version", pv};
    const char *to = mc_http_request_header(req, "Connect-Timeout-Ms");
    if (to != NULL)
        hs[nh++] = (mc_hc_header){"Connect-Timeout-Ms", to};
    size_t len;
    const uint8_t *body = mc_http_request_body(req, &len);
    proxy_call *pc = calloc(1, sizeof *pc);
    if (pc == NULL) {
        respond_connect_error(req, 500, "resource_exhausted", "out of memory");
        return;
    }
    pc->o = o;
    pc->req = req;
    pc->mutating = mutating;
    mc_error err = {0};
    mc_status st = mc_hc_request(o->loop, &o->engine, "POST", path, hs, nh, body, len,
                                 o->cfg->sim_engine_timeout_ms, proxy_done, pc, &err);
    if (st != MC_OK) {
        free(pc);
        mc_http_counter_inc(o->m_proxy_unavailable);
        char msg[600];
        snprintf(msg, sizeof msg, "simulation engine unavailable: %s", err.msg);
        respond_connect_error(req, 503, "unavailable", msg);
    }
}

mc_status orch_control_register(mc_orch *o, mc_error *err)
{
    for (size_t i = 0; i < sizeof sim_methods / sizeof sim_methods[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, SIM_SERVICE "%s", sim_methods[i].name);
        mc_status st = mc_http_server_route(o->srv, MC_HTTP_POST, path, proxy_handler, o, err);
        if (st != MC_OK)
            return st;
    }
    return MC_OK;
}

/* ---- The engine's state and topology ---- */

static void on_engine_timer(uv_timer_t *t)
{
    orch_engine_refresh(t->data);
}

static void retry_later(mc_orch *o)
{
    if (!o->shutting_down && o->engine_timer.loop != NULL)
        uv_timer_start(&o->engine_timer, on_engine_timer, 2000, 0);
}

static void topology_done(void *ctx, mc_status st, const mc_hc_response *resp, const char *error)
{
    mc_orch *o = ctx;
    (void)error;
    if (st != MC_OK || resp->status != 200)
        return;
    json_error_t je;
    json_t *root = json_loadb((const char *)resp->body, resp->len, 0, &je);
    json_t *topo = root ? json_object_get(root, "topology") : NULL;
    if (topo != NULL) {
        if (o->topology != NULL)
            json_decref(o->topology);
        o->topology = json_incref(topo);
    }
    json_decref(root);
}

static void state_done(void *ctx, mc_status st, const mc_hc_response *resp, const char *error)
{
    mc_orch *o = ctx;
    o->engine_refresh_inflight = false;
    if (st != MC_OK || resp->status != 200) {
        MC_LOG_DEBUG("engine state unavailable", MC_LF_STR("error", st != MC_OK ? error : "status"));
        if (o->engine_state == NULL)
            retry_later(o);
        return;
    }
    mc_json_options jo = {.ignore_unknown = true};
    ProtobufCMessage *m = NULL;
    mc_error err = {0};
    if (mc_json_decode_ex(&sim__v1__get_state_response__descriptor, (const char *)resp->body,
                          resp->len, &jo, &m, &err) != MC_OK) {
        MC_LOG_WARN("engine state undecodable", MC_LF_STR("error", err.msg));
        return;
    }
    Sim__V1__GetStateResponse *r = (Sim__V1__GetStateResponse *)m;
    if (r->state == NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
        return;
    }
    bool run_changed = o->engine_state == NULL ||
                       strcmp(o->engine_state->run_id ? o->engine_state->run_id : "",
                              r->state->run_id ? r->state->run_id : "") != 0;
    if (o->engine_state != NULL)
        sim__v1__simulation_state__free_unpacked(o->engine_state, NULL);
    o->engine_state = r->state;
    r->state = NULL;
    protobuf_c_message_free_unpacked(m, NULL);
    if (run_changed || o->engine_announce) {
        char *json = NULL;
        size_t len = 0;
        if (mc_json_encode(&o->engine_state->base, &json, &len, NULL) == MC_OK) {
            mc_feed_publish(o->feed, "state", json, len);
            mc_http_counter_inc(o->m_sse_events);
            free(json);
        }
    }
    o->engine_announce = false;
    if (run_changed || o->topology == NULL) {
        static const char empty[] = "{}";
        mc_hc_header h = {"Content-Type", "application/json"};
        (void)mc_hc_request(o->loop, &o->engine, "POST", SIM_SERVICE "GetTopology", &h, 1, empty,
                            2, o->cfg->sim_engine_timeout_ms, topology_done, o, NULL);
    }
}

void orch_engine_refresh(mc_orch *o)
{
    if (o->engine_refresh_inflight || o->shutting_down)
        return;
    static const char empty[] = "{}";
    mc_hc_header h = {"Content-Type", "application/json"};
    if (mc_hc_request(o->loop, &o->engine, "POST", SIM_SERVICE "GetState", &h, 1, empty, 2,
                      o->cfg->sim_engine_timeout_ms, state_done, o, NULL) == MC_OK)
        o->engine_refresh_inflight = true;
    else
        retry_later(o);
}

/* ---- Snapshot ---- */

static json_t *action_json(const mc_approval_action *v)
{
    Ops__V1__Action a;
    mc_approval_action_to_proto(v, &a);
    json_t *j = NULL;
    if (mc_json_from_message(&a.base, &j, NULL) != MC_OK)
        return NULL;
    return j;
}

static json_t *parse_or_null(const char *text)
{
    if (text == NULL)
        return json_null();
    json_t *j = json_loads(text, 0, NULL);
    return j ? j : json_null();
}

mc_status orch_snapshot(void *ctx, char **out, size_t *len)
{
    mc_orch *o = ctx;
    json_t *root = json_object();
    if (root == NULL)
        return MC_ERR_NOMEM;
    const Sim__V1__SimulationState *es = o->engine_state;
    uint64_t tick = o->ticks.last_tick;
    int64_t sim_ms = o->ticks.last_sim_time_unix_ms;
    if (o->ticks.emitted == 0 && es != NULL) {
        tick = es->tick;
        sim_ms = es->sim_time_unix_ms;
    }
    json_object_set_new(root, "tick", json_integer((json_int_t)tick));
    json_object_set_new(root, "simTimeUnixMs", json_integer((json_int_t)sim_ms));
    if (es != NULL) {
        char seed[24];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)es->seed);
        const char *mode = es->mode == SIM__V1__SIMULATION_MODE__SIMULATION_MODE_LOCKSTEP
                               ? "SIMULATION_MODE_LOCKSTEP"
                           : es->mode == SIM__V1__SIMULATION_MODE__SIMULATION_MODE_REALTIME
                               ? "SIMULATION_MODE_REALTIME"
                               : "SIMULATION_MODE_UNSPECIFIED";
        json_t *run = json_pack("{s:s, s:s, s:s, s:s, s:f, s:b, s:b, s:b}", "runId",
                                es->run_id ? es->run_id : "", "scenario",
                                es->scenario ? es->scenario : "", "seed", seed, "mode", mode,
                                "speed", es->speed, "maxSpeed", es->max_speed, "running",
                                es->running, "replayed", 0);
        json_object_set_new(root, "run", run ? run : json_null());
    } else {
        json_object_set_new(root, "run", json_null());
    }
    json_object_set_new(root, "topology", o->topology ? json_incref(o->topology) : json_null());

    json_t *incs = json_array();
    for (size_t i = 0; i < o->n_incidents; i++) {
        json_t *j = parse_or_null(o->incidents[i].json);
        if (!json_is_null(j))
            json_array_append_new(incs, j);
        else
            json_decref(j);
    }
    json_object_set_new(root, "openIncidents", incs);

    /* Pending actions, oldest first, and the most recent actions, newest
     * first, read from the core page by page. */
    enum { CHUNK = 128 };
    mc_approval_action *buf = malloc(CHUNK * sizeof *buf);
    mc_approval_action *recent = malloc(ORCH_RECENT_ACTIONS * sizeof *recent);
    json_t *pending = json_array();
    json_t *recent_j = json_array();
    if (buf != NULL && recent != NULL) {
        char cursor[MC_APPROVAL_CURSOR_MAX] = "", next[MC_APPROVAL_CURSOR_MAX];
        for (;;) {
            size_t n = 0;
            if (mc_approval_list_pending(&o->core, cursor, buf, CHUNK, &n, next, NULL) != MC_OK)
                break;
            for (size_t i = 0; i < n; i++) {
                json_t *j = action_json(&buf[i]);
                if (j != NULL)
                    json_array_append_new(pending, j);
            }
            if (next[0] == '\0')
                break;
            memcpy(cursor, next, sizeof cursor);
        }
        size_t kept = 0, head = 0; /* a ring of the last ORCH_RECENT_ACTIONS */
        cursor[0] = '\0';
        for (;;) {
            size_t n = 0;
            if (mc_approval_list(&o->core, 0, cursor, buf, CHUNK, &n, next, NULL) != MC_OK)
                break;
            for (size_t i = 0; i < n; i++) {
                recent[(head + kept) % ORCH_RECENT_ACTIONS] = buf[i];
                if (kept < ORCH_RECENT_ACTIONS)
                    kept++;
                else
                    head = (head + 1) % ORCH_RECENT_ACTIONS;
            }
            if (next[0] == '\0')
                break;
            memcpy(cursor, next, sizeof cursor);
        }
        for (size_t k = kept; k > 0; k--) {
            json_t *j = action_json(&recent[(head + k - 1) % ORCH_RECENT_ACTIONS]);
            if (j != NULL)
                json_array_append_new(recent_j, j);
        }
    }
    free(buf);
    free(recent);
    json_object_set_new(root, "pendingActions", pending);
    json_object_set_new(root, "recentActions", recent_j);
    json_t *svc = o->ticks.last_services_json ? json_loads(o->ticks.last_services_json, 0, NULL)
                                              : NULL;
    json_t *nodes =
        o->ticks.last_nodes_json ? json_loads(o->ticks.last_nodes_json, 0, NULL) : NULL;
    json_object_set_new(root, "services", svc ? svc : json_array());
    json_object_set_new(root, "nodes", nodes ? nodes : json_array());
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (text == NULL)
        return MC_ERR_NOMEM;
    *out = text;
    *len = strlen(text);
    return MC_OK;
}
