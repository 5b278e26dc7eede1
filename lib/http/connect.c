/* Connect unary RPCs: see connect.h. */
#include "http/connect.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/auth.h"
#include "http/internal.h"
#include "json/json.h"

typedef struct method_entry {
    mc_http_connect_method m;
    char *name;
    char *procedure; /* "/svc/Method" */
    void *ctx;
} method_entry;

typedef struct service_entry {
    char *prefix; /* "/svc/" */
    char *name;
} service_entry;

struct mc_http_connect_call {
    mc_http_request *req;
    const method_entry *me;
    ProtobufCMessage *msg;
    bool json;
    bool has_timer;
    uv_timer_t timer;
};

static const struct {
    const char *name;
    int status;
} code_table[17] = {
    [0] = {"unknown", 500},
    [MC_CONNECT_CANCELED] = {"canceled", 499},
    [MC_CONNECT_UNKNOWN] = {"unknown", 500},
    [MC_CONNECT_INVALID_ARGUMENT] = {"invalid_argument", 400},
    [MC_CONNECT_DEADLINE_EXCEEDED] = {"deadline_exceeded", 504},
    [MC_CONNECT_NOT_FOUND] = {"not_found", 404},
    [MC_CONNECT_ALREADY_EXISTS] = {"already_exists", 409},
    [MC_CONNECT_PERMISSION_DENIED] = {"permission_denied", 403},
    [MC_CONNECT_RESOURCE_EXHAUSTED] = {"resource_exhausted", 429},
    [MC_CONNECT_FAILED_PRECONDITION] = {"failed_precondition", 400},
    [MC_CONNECT_ABORTED] = {"aborted", 409},
    [MC_CONNECT_OUT_OF_RANGE] = {"out_of_range", 400},
    [MC_CONNECT_UNIMPLEMENTED] = {"unimplemented", 501},
    [MC_CONNECT_INTERNAL] = {"internal", 500},
    [MC_CONNECT_UNAVAILABLE] = {"unavailable", 503},
    [MC_CONNECT_DATA_LOSS] = {"data_loss", 500},
    [MC_CONNECT_UNAUTHENTICATED] = {"unauthenticated", 401},
};

const char *mc_http_connect_code_name(mc_http_connect_code code)
{
    return (int)code >= 1 && (int)code <= 16 ? code_table[code].name : "unknown";
}

int mc_http_connect_code_http_status(mc_http_connect_code code)
{
    return (int)code >= 1 && (int)code <= 16 ? code_table[code].status : 500;
}

mc_http_connect_code mc_http_connect_code_from_status(mc_status st)
{
    switch (st) {
    case MC_ERR_INVALID:
    case MC_ERR_PARSE: return MC_CONNECT_INVALID_ARGUMENT;
    case MC_ERR_NOT_FOUND: return MC_CONNECT_NOT_FOUND;
    case MC_ERR_EXISTS: return MC_CONNECT_ALREADY_EXISTS;
    case MC_ERR_RANGE: return MC_CONNECT_OUT_OF_RANGE;
    case MC_ERR_STATE: return MC_CONNECT_FAILED_PRECONDITION;
    case MC_ERR_LIMIT: return MC_CONNECT_RESOURCE_EXHAUSTED;
    case MC_ERR_TIMEOUT: return MC_CONNECT_DEADLINE_EXCEEDED;
    case MC_ERR_UNAVAILABLE: return MC_CONNECT_UNAVAILABLE;
    case MC_ERR_UNSUPPORTED: return MC_CONNECT_UNIMPLEMENTED;
    case MC_ERR_CORRUPT: return MC_CONNECT_DATA_LOSS;
    default: return MC_CONNECT_INTERNAL;
    }
}

/* Error bodies are JSON whatever the request's codec (the protocol says
 * so). jansson refuses strings that are not UTF-8, and a message may quote
 * client input, so such bytes are replaced. */
static void send_error(mc_http_request *req, mc_http_connect_code code, const char *msg)
{
    json_t *o = json_object();
    json_object_set_new(o, "code", json_string(mc_http_connect_code_name(code)));
    if (msg != NULL && msg[0] != '\0') {
        json_t *m = json_string(msg);
        if (m == NULL) {
            char *clean = strdup(msg);
            if (clean != NULL) {
                for (char *p = clean; *p; p++)
                    if ((unsigned char)*p >= 0x80)
                        *p = '?';
                m = json_string(clean);
                free(clean);
            }
        }
        if (m != NULL)
            json_object_set_new(o, "message", m);
    }
    char *body = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    int status = mc_http_connect_code_http_status(code);
    if (body == NULL) {
        mc_http_respond_text(req, status, "application/json", "{\"code\":\"internal\"}");
        return;
    }
    mc_http_respond_owned(req, status, "application/json", body, strlen(body));
}

static void send_errorf(mc_http_request *req, mc_http_connect_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_errorf(mc_http_request *req, mc_http_connect_code code, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    send_error(req, code, msg);
}

/* ---- Calls ---- */

static void call_closed(uv_handle_t *h)
{
    free(h->data);
}

static void call_release(mc_http_connect_call *call)
{
    if (call->msg != NULL)
        protobuf_c_message_free_unpacked(call->msg, NULL);
    call->msg = NULL;
    if (call->has_timer) {
        uv_timer_stop(&call->timer);
        uv_close((uv_handle_t *)&call->timer, call_closed);
        return;
    }
    free(call);
}

static void deadline_fired(uv_timer_t *t)
{
    mc_http_connect_call *call = t->data;
    if (call->req == NULL)
        return;
    mc_http_request *req = call->req;
    call->req = NULL;
    send_errorf(req, MC_CONNECT_DEADLINE_EXCEEDED, "%s: the deadline passed before the answer",
                call->me->procedure + 1);
}

mc_http_request *mc_http_connect_call_request(const mc_http_connect_call *call)
{
    return call->req;
}

bool mc_http_connect_call_cancelled(const mc_http_connect_call *call)
{
    return call->req == NULL || mc_http_request_detached(call->req);
}

const char *mc_http_connect_call_procedure(const mc_http_connect_call *call)
{
    return call->me->procedure;
}

void mc_http_connect_respond(mc_http_connect_call *call, const ProtobufCMessage *response)
{
    if (call == NULL)
        return;
    mc_http_request *req = call->req;
    call->req = NULL;
    if (req != NULL) {
        if (response == NULL || response->descriptor != call->me->m.output) {
            send_errorf(req, MC_CONNECT_INTERNAL, "%s: the handler answered with the wrong type",
                        call->me->procedure + 1);
        } else if (call->json) {
            char *out = NULL;
            size_t len = 0;
            mc_error err = {0};
            if (mc_json_encode(response, &out, &len, &err) != MC_OK)
                send_errorf(req, MC_CONNECT_INTERNAL, "encoding the response: %s", err.msg);
            else
                mc_http_respond_owned(req, 200, "application/json", out, len);
        } else {
            size_t len = protobuf_c_message_get_packed_size(response);
            uint8_t *out = malloc(len ? len : 1);
            if (out == NULL) {
                send_error(req, MC_CONNECT_RESOURCE_EXHAUSTED, "out of memory");
            } else {
                protobuf_c_message_pack(response, out);
                mc_http_respond_owned(req, 200, "application/proto", out, len);
            }
        }
    }
    call_release(call);
}

void mc_http_connect_fail(mc_http_connect_call *call, mc_http_connect_code code, const char *fmt,
                          ...)
{
    if (call == NULL)
        return;
    mc_http_request *req = call->req;
    call->req = NULL;
    if (req != NULL) {
        char msg[768] = "";
        if (fmt != NULL) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(msg, sizeof msg, fmt, ap);
            va_end(ap);
        }
        send_error(req, code, msg);
    }
    call_release(call);
}

/* ---- Dispatch ---- */

/* The media type without parameters, compared case-insensitively. */
static bool media_is(const char *ct, const char *want)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen(want);
    if (strncasecmp(ct, want, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

static bool parse_timeout(const char *s, uint64_t *ms)
{
    size_t n = strlen(s);
    if (n == 0 || n > 10)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *ms = v;
    return true;
}

static void connect_dispatch(mc_http_request *req, void *ctx)
{
    const method_entry *me = ctx;
    const char *ct = mc_http_request_header(req, "Content-Type");
    bool json;
    if (ct != NULL && media_is(ct, "application/json")) {
        json = true;
    } else if (ct != NULL && media_is(ct, "application/proto")) {
        json = false;
    } else {
        mc_http_response_header_add(req, "Accept-Post", "application/json, application/proto");
        json_t *o = json_pack("{s:s,s:s}", "code", "unimplemented", "message",
                              "unsupported content type; use application/json or "
                              "application/proto");
        char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (body == NULL)
            mc_http_respond_text(req, 415, "application/json", "{\"code\":\"unimplemented\"}");
        else
            mc_http_respond_owned(req, 415, "application/json", body, strlen(body));
        return;
    }
    const char *ce = mc_http_request_header(req, "Content-Encoding");
    if (ce != NULL && strcasecmp(ce, "identity") != 0) {
        send_errorf(req, MC_CONNECT_UNIMPLEMENTED,
                    "content encoding is not supported; supported encodings: identity");
        return;
    }
    const char *ver = mc_http_request_header(req, "Connect-Protocol-Version");
    if (ver != NULL && strcmp(ver, "1") != 0) {
        send_errorf(req, MC_CONNECT_INVALID_ARGUMENT,
                    "connect-protocol-version must be \"1\"");
        return;
    }
    uint64_t timeout_ms = 0;
    const char *to = mc_http_request_header(req, "Connect-Timeout-Ms");
    if (to != NULL && !parse_timeout(to, &timeout_ms)) {
        send_errorf(req, MC_CONNECT_INVALID_ARGUMENT,
                    "connect-timeout-ms must be a positive integer of at most 10 digits");
        return;
    }
    if (me->m.requires_auth) {
        mc_http_auth_result ar = mc_http_request_check_bearer(req);
        if (ar != MC_HTTP_AUTH_OK) {
            send_error(req, MC_CONNECT_UNAUTHENTICATED,
                       ar == MC_HTTP_AUTH_MISSING ? "missing bearer token"
                                                  : "invalid bearer token");
            return;
        }
    }
    size_t len;
    const uint8_t *body = mc_http_request_body(req, &len);
    ProtobufCMessage *msg = NULL;
    if (len == 0) {
        /* An empty body is the empty message in both codecs. */
        msg = protobuf_c_message_unpack(me->m.input, NULL, 0, body);
    } else if (json) {
        mc_error err = {0};
        if (mc_json_decode(me->m.input, (const char *)body, len, &msg, &err) != MC_OK) {
            send_errorf(req, MC_CONNECT_INVALID_ARGUMENT, "%s", err.msg);
            return;
        }
    } else {
        msg = protobuf_c_message_unpack(me->m.input, NULL, len, body);
        if (msg == NULL) {
            send_errorf(req, MC_CONNECT_INVALID_ARGUMENT, "cannot decode %s from application/proto",
                        me->m.input->name);
            return;
        }
    }
    if (msg == NULL) {
        send_error(req, MC_CONNECT_INTERNAL, "cannot create the request message");
        return;
    }
    mc_http_connect_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        protobuf_c_message_free_unpacked(msg, NULL);
        send_error(req, MC_CONNECT_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    call->req = req;
    call->me = me;
    call->msg = msg;
    call->json = json;
    mc_http_request_set_user(req, call);
    if (to != NULL) {
        if (timeout_ms == 0) {
            call->req = NULL;
            send_errorf(req, MC_CONNECT_DEADLINE_EXCEEDED, "connect-timeout-ms is 0");
            call_release(call);
            return;
        }
        uv_timer_init(mc_http_server_loop(mc_http_request_server(req)), &call->timer);
        call->timer.data = call;
        call->has_timer = true;
        uv_timer_start(&call->timer, deadline_fired, timeout_ms, 0);
    }
    me->m.handler(call, msg, me->ctx);
}

static void unimplemented_handler(mc_http_request *req, void *ctx)
{
    const char *path = mc_http_request_path(req);
    send_errorf(req, MC_CONNECT_UNIMPLEMENTED, "%s is not implemented", path + 1);
}

static void method_entry_free(void *p)
{
    method_entry *me = p;
    free(me->name);
    free(me->procedure);
    free(me);
}

static void service_entry_free(void *p)
{
    service_entry *se = p;
    free(se->prefix);
    free(se->name);
    free(se);
}

static bool ident_ok(const char *s, bool dots)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || (dots && *s == '.')))
            return false;
    return true;
}

mc_status mc_http_connect_register(mc_http_server *srv, const mc_http_connect_service *svc,
                                   void *ctx, mc_error *err)
{
    if (svc == NULL || !ident_ok(svc->name, true) || (svc->n_methods > 0 && svc->methods == NULL))
        return mc_error_set(err, MC_ERR_INVALID, "connect: bad service name");
    for (size_t i = 0; i < svc->n_methods; i++) {
        const mc_http_connect_method *m = &svc->methods[i];
        if (!ident_ok(m->name, false) || m->handler == NULL || m->input == NULL ||
            m->output == NULL || m->input->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC ||
            m->output->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
            return mc_error_set(err, MC_ERR_INVALID, "connect: %s: method %zu is incomplete",
                                svc->name, i);
    }
    for (size_t i = 0; i < svc->n_methods; i++) {
        const mc_http_connect_method *m = &svc->methods[i];
        method_entry *me = calloc(1, sizeof *me);
        if (me == NULL)
            return mc_error_set(err, MC_ERR_NOMEM, "connect: out of memory");
        me->m = *m;
        me->ctx = ctx;
        me->name = strdup(m->name);
        size_t plen = strlen(svc->name) + strlen(m->name) + 3;
        me->procedure = malloc(plen);
        if (me->name == NULL || me->procedure == NULL) {
            method_entry_free(me);
            return mc_error_set(err, MC_ERR_NOMEM, "connect: out of memory");
        }
        me->m.name = me->name;
        snprintf(me->procedure, plen, "/%s/%s", svc->name, m->name);
        if (mc_http__server_on_free(srv, method_entry_free, me) != MC_OK) {
            method_entry_free(me);
            return mc_error_set(err, MC_ERR_NOMEM, "connect: out of memory");
        }
        mc_status st =
            mc_http_server_route(srv, MC_HTTP_POST, me->procedure, connect_dispatch, me, err);
        if (st != MC_OK)
            return st;
    }
    service_entry *se = calloc(1, sizeof *se);
    if (se == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "connect: out of memory");
    size_t plen = strlen(svc->name) + 3;
    se->prefix = malloc(plen);
    se->name = strdup(svc->name);
    if (se->prefix == NULL || se->name == NULL ||
        mc_http__server_on_free(srv, service_entry_free, se) != MC_OK) {
        service_entry_free(se);
        return mc_error_set(err, MC_ERR_NOMEM, "connect: out of memory");
    }
    snprintf(se->prefix, plen, "/%s/", svc->name);
    return mc_http_server_route_prefix(srv, MC_HTTP_POST, se->prefix, unimplemented_handler, se,
                                       err);
}
