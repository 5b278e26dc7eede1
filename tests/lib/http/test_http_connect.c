/* lib/http Connect unary: JSON and binary codecs, the error mapping, auth,
 * deadlines, async handlers, and interop with a real Connect client
 * (buf curl). The test service is ops.v1.ActionService with stub handlers. */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/connect.h"
#include "http/server.h"
#include "http_test_util.h"
#include "ops/v1/action_service.pb-c.h"

#ifndef MC_SOURCE_DIR
#define MC_SOURCE_DIR "."
#endif

/* ---- Stub handlers ---- */

static void on_list(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__ListPendingActionsRequest *req = (const void *)m;
    Ops__V1__ListPendingActionsResponse resp = OPS__V1__LIST_PENDING_ACTIONS_RESPONSE__INIT;
    Ops__V1__Action actions[4];
    Ops__V1__Action *ptrs[4];
    char ids[4][16];
    size_t n = req->page_size > 4 ? 4 : req->page_size;
    for (size_t i = 0; i < n; i++) {
        ops__v1__action__init(&actions[i]);
        snprintf(ids[i], sizeof ids[i], "a%zu", i + 1);
        actions[i].id = ids[i];
        actions[i].status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
        actions[i].proposed_at_tick = 10 + i;
        ptrs[i] = &actions[i];
    }
    resp.n_actions = n;
    resp.actions = ptrs;
    char tok[64];
    snprintf(tok, sizeof tok, "%sx", req->page_token);
    resp.next_page_token = tok;
    mc_http_connect_respond(call, &resp.base);
}

typedef struct later {
    uv_timer_t t;
    mc_http_connect_call *call;
    char id[64];
} later;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void answer_approve(mc_http_connect_call *call, const char *id)
{
    Ops__V1__ApproveActionResponse resp = OPS__V1__APPROVE_ACTION_RESPONSE__INIT;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    a.id = (char *)id;
    a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED;
    resp.action = &a;
    mc_http_connect_respond(call, &resp.base);
}

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    answer_approve(l->call, l->id);
    uv_close((uv_handle_t *)&l->t, later_closed);
}

static void on_approve(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__ApproveActionRequest *req = (const void *)m;
    if (strcmp(req->action_id, "missing") == 0) {
        mc_http_connect_fail(call, MC_CONNECT_NOT_FOUND, "action %s not found", req->action_id);
        return;
    }
    if (strcmp(req->action_id, "decided") == 0) {
        mc_http_connect_fail(call, MC_CONNECT_FAILED_PRECONDITION, "action is not pending");
        return;
    }
    if (strcmp(req->action_id, "down") == 0) {
        mc_http_connect_fail(call, mc_http_connect_code_from_status(MC_ERR_UNAVAILABLE),
                             "database unavailable");
        return;
    }
    if (strncmp(req->action_id, "async", 5) == 0 || strncmp(req->action_id, "slow", 4) == 0) {
        later *l = calloc(1, sizeof *l);
        l->call = call;
        snprintf(l->id, sizeof l->id, "%s", req->action_id);
        uv_timer_init(mc_http_server_loop(mc_http_request_server(mc_http_connect_call_request(call))),
                      &l->t);
        l->t.data = l;
        uv_timer_start(&l->t, later_fire, req->action_id[0] == 'a' ? 100 : 400, 0);
        return;
    }
    answer_approve(call, req->action_id);
}

static void on_reject(mc_http_connect_call *call, const ProtobufCMessage *m, void *ctx)
{
    const Ops__V1__RejectActionRequest *req = (const void *)m;
    if (req->reason[0] == '\0') {
        mc_http_connect_fail(call, MC_CONNECT_INVALID_ARGUMENT, "reason is required");
        return;
    }
    /* Answers with the wrong type on purpose when asked: an internal error. */
    if (strcmp(req->reason, "wrong-type") == 0) {
        Ops__V1__ApproveActionResponse wrong = OPS__V1__APPROVE_ACTION_RESPONSE__INIT;
        mc_http_connect_respond(call, &wrong.base);
        return;
    }
    Ops__V1__RejectActionResponse resp = OPS__V1__REJECT_ACTION_RESPONSE__INIT;
    mc_http_connect_respond(call, &resp.base);
}

static const mc_http_connect_method methods[] = {
    {"ListPendingActions", &ops__v1__list_pending_actions_request__descriptor,
     &ops__v1__list_pending_actions_response__descriptor, on_list, false},
    {"ApproveAction", &ops__v1__approve_action_request__descriptor,
     &ops__v1__approve_action_response__descriptor, on_approve, true},
    {"RejectAction", &ops__v1__reject_action_request__descriptor,
     &ops__v1__reject_action_response__descriptor, on_reject, false},
};
static const mc_http_connect_service service = {"ops.v1.ActionService", methods, 3};

static void setup(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_connect_register(ts->srv, &service, NULL, &err), MC_OK);
    assert_int_equal(mc_http_server_set_bearer_token(ts->srv, "s3cret-token", &err), MC_OK);
    /* Registering twice collides. */
    assert_int_equal(mc_http_connect_register(ts->srv, &service, NULL, &err), MC_ERR_EXISTS);
}

/* ---- Client helpers ---- */

static bool post(uint16_t port, const char *path, const char *ctype, const char *extra,
                 const void *body, size_t len, response *r)
{
    client c;
    cl_connect(&c, port, 0);
    char head[2048];
    snprintf(head, sizeof head,
             "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: %s\r\n%sContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             path, ctype, extra ? extra : "", len);
    cl_send_str(&c, head);
    cl_send(&c, body, len);
    bool ok = cl_read_response(&c, r);
    cl_close(&c);
    return ok;
}

static json_t *post_json(uint16_t port, const char *method, const char *extra, const char *body,
                         int want_status)
{
    char path[256];
    snprintf(path, sizeof path, "/ops.v1.ActionService/%s", method);
    response r;
    assert_true(post(port, path, "application/json", extra, body, strlen(body), &r));
    if (r.status != want_status)
        fail_msg("%s %s: status %d, want %d, body %s", method, body, r.status, want_status,
                 r.body);
    char ct[128];
    assert_true(resp_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    json_error_t je;
    json_t *j = json_loads(r.body, 0, &je);
    if (j == NULL)
        fail_msg("not JSON: %s", r.body);
    resp_free(&r);
    return j;
}

static void expect_error(json_t *j, const char *code, const char *msg_part)
{
    const char *c = json_string_value(json_object_get(j, "code"));
    assert_non_null(c);
    assert_string_equal(c, code);
    if (msg_part != NULL) {
        const char *m = json_string_value(json_object_get(j, "message"));
        assert_non_null(m);
        if (strstr(m, msg_part) == NULL)
            fail_msg("message \"%s\" lacks \"%s\"", m, msg_part);
    }
    json_decref(j);
}

#define AUTH "Authorization: Bearer s3cret-token\r\n"

/* ---- Tests ---- */

static void test_code_table(void **state)
{
    static const struct {
        mc_http_connect_code c;
        const char *name;
        int status;
    } want[] = {
        {MC_CONNECT_CANCELED, "canceled", 499},
        {MC_CONNECT_UNKNOWN, "unknown", 500},
        {MC_CONNECT_INVALID_ARGUMENT, "invalid_argument", 400},
        {MC_CONNECT_DEADLINE_EXCEEDED, "deadline_exceeded", 504},
        {MC_CONNECT_NOT_FOUND, "not_found", 404},
        {MC_CONNECT_ALREADY_EXISTS, "already_exists", 409},
        {MC_CONNECT_PERMISSION_DENIED, "permission_denied", 403},
        {MC_CONNECT_RESOURCE_EXHAUSTED, "resource_exhausted", 429},
        {MC_CONNECT_FAILED_PRECONDITION, "failed_precondition", 400},
        {MC_CONNECT_ABORTED, "aborted", 409},
        {MC_CONNECT_OUT_OF_RANGE, "out_of_range", 400},
        {MC_CONNECT_UNIMPLEMENTED, "unimplemented", 501},
        {MC_CONNECT_INTERNAL, "internal", 500},
        {MC_CONNECT_UNAVAILABLE, "unavailable", 503},
        {MC_CONNECT_DATA_LOSS, "data_loss", 500},
        {MC_CONNECT_UNAUTHENTICATED, "unauthenticated", 401},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(mc_http_connect_code_name(want[i].c), want[i].name);
        assert_int_equal(mc_http_connect_code_http_status(want[i].c), want[i].status);
    }
    assert_string_equal(mc_http_connect_code_name((mc_http_connect_code)99), "unknown");
}

static void test_json_unary(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    json_t *j = post_json(ts.port, "ListPendingActions", "Connect-Protocol-Version: 1\r\n",
                          "{\"pageSize\": 2, \"pageToken\": \"t\"}", 200);
    json_t *acts = json_object_get(j, "actions");
    assert_int_equal(json_array_size(acts), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(acts, 1), "id")), "a2");
    assert_string_equal(json_string_value(json_object_get(json_array_get(acts, 1), "status")),
                        "ACTION_STATUS_PENDING");
    /* uint64 is a string in proto3 JSON. */
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(acts, 0), "proposedAtTick")), "10");
    assert_string_equal(json_string_value(json_object_get(j, "nextPageToken")), "tx");
    json_decref(j);
    /* snake_case input names and an empty body work too. */
    j = post_json(ts.port, "ListPendingActions", NULL, "{\"page_size\": 1}", 200);
    assert_int_equal(json_array_size(json_object_get(j, "actions")), 1);
    json_decref(j);
    j = post_json(ts.port, "ListPendingActions", NULL, "", 200);
    assert_int_equal(json_array_size(json_object_get(j, "actions")), 0);
    json_decref(j);
    /* Content-Type parameters are fine. */
    response r;
    const char *b = "{\"pageSize\":1}";
    assert_true(post(ts.port, "/ops.v1.ActionService/ListPendingActions",
                     "application/json; charset=utf-8", NULL, b, strlen(b), &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    ts_stop(&ts);
}

static void test_binary_unary(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    Ops__V1__ListPendingActionsRequest req = OPS__V1__LIST_PENDING_ACTIONS_REQUEST__INIT;
    req.page_size = 3;
    req.page_token = "p";
    uint8_t buf[128];
    size_t n = ops__v1__list_pending_actions_request__pack(&req, buf);
    response r;
    assert_true(post(ts.port, "/ops.v1.ActionService/ListPendingActions", "application/proto",
                     NULL, buf, n, &r));
    assert_int_equal(r.status, 200);
    char ct[64];
    assert_true(resp_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/proto");
    Ops__V1__ListPendingActionsResponse *resp =
        ops__v1__list_pending_actions_response__unpack(NULL, r.body_len, (uint8_t *)r.body);
    assert_non_null(resp);
    assert_int_equal(resp->n_actions, 3);
    assert_string_equal(resp->actions[2]->id, "a3");
    assert_int_equal(resp->actions[2]->proposed_at_tick, 12);
    assert_string_equal(resp->next_page_token, "px");
    ops__v1__list_pending_actions_response__free_unpacked(resp, NULL);
    resp_free(&r);
    /* Bytes that are not a protobuf message: invalid_argument. */
    assert_true(post(ts.port, "/ops.v1.ActionService/ListPendingActions", "application/proto",
                     NULL, "\xff\xff\xff\xff", 4, &r));
    assert_int_equal(r.status, 400);
    assert_true(resp_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    assert_non_null(strstr(r.body, "\"invalid_argument\""));
    resp_free(&r);
    ts_stop(&ts);
}

static void test_protocol_errors(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    /* A method the service does not have: 501 unimplemented. */
    expect_error(post_json(ts.port, "GetActionHistory", NULL, "{}", 501), "unimplemented",
                 "ops.v1.ActionService/GetActionHistory");
    /* A service nobody registered: the router's 404. */
    response r;
    assert_true(post(ts.port, "/ops.v1.Nope/Do", "application/json", NULL, "{}", 2, &r));
    assert_int_equal(r.status, 404);
    resp_free(&r);
    /* Wrong content type: 415. */
    assert_true(post(ts.port, "/ops.v1.ActionService/ListPendingActions", "text/plain", NULL,
                     "{}", 2, &r));
    assert_int_equal(r.status, 415);
    char v[128];
    assert_true(resp_header(&r, "Accept-Post", v, sizeof v));
    resp_free(&r);
    /* GET on a method: 405. */
    assert_true(http_get(ts.port, "/ops.v1.ActionService/ListPendingActions", NULL, &r));
    assert_int_equal(r.status, 405);
    resp_free(&r);
    /* Bad JSON: invalid_argument naming the field. */
    expect_error(post_json(ts.port, "ListPendingActions", NULL, "{\"pageSize\": \"abc\"}", 400),
                 "invalid_argument", "$.pageSize");
    expect_error(post_json(ts.port, "ListPendingActions", NULL, "{\"nope\": 1}", 400),
                 "invalid_argument", "nope");
    expect_error(post_json(ts.port, "ListPendingActions", NULL, "{\"pageSize\": ", 400),
                 "invalid_argument", NULL);
    expect_error(post_json(ts.port, "ListPendingActions", NULL, "[1,2]", 400), "invalid_argument",
                 NULL);
    /* Protocol headers. */
    expect_error(post_json(ts.port, "ListPendingActions", "Connect-Protocol-Version: 2\r\n", "{}",
                           400),
                 "invalid_argument", "connect-protocol-version");
    expect_error(post_json(ts.port, "ListPendingActions", "Connect-Timeout-Ms: soon\r\n", "{}",
                           400),
                 "invalid_argument", "connect-timeout-ms");
    expect_error(post_json(ts.port, "ListPendingActions", "Connect-Timeout-Ms: 12345678901\r\n",
                           "{}", 400),
                 "invalid_argument", NULL);
    expect_error(post_json(ts.port, "ListPendingActions", "Content-Encoding: gzip\r\n", "{}", 501),
                 "unimplemented", "identity");
    json_decref(post_json(ts.port, "ListPendingActions", "Content-Encoding: identity\r\n", "{}",
                          200));
    ts_stop(&ts);
}

static void test_handler_errors_and_auth(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    expect_error(post_json(ts.port, "ApproveAction", NULL, "{\"actionId\":\"x\"}", 401),
                 "unauthenticated", "missing");
    expect_error(post_json(ts.port, "ApproveAction", "Authorization: Bearer wrong\r\n",
                           "{\"actionId\":\"x\"}", 401),
                 "unauthenticated", "invalid");
    expect_error(post_json(ts.port, "ApproveAction", "Authorization: Basic czNjcmV0LXRva2Vu\r\n",
                           "{\"actionId\":\"x\"}", 401),
                 "unauthenticated", NULL);
    expect_error(post_json(ts.port, "ApproveAction", "Authorization: Bearer s3cret-token-and-more\r\n",
                           "{\"actionId\":\"x\"}", 401),
                 "unauthenticated", NULL);
    json_t *j = post_json(ts.port, "ApproveAction", AUTH, "{\"actionId\":\"x\"}", 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "action"), "status")),
                        "ACTION_STATUS_APPROVED");
    json_decref(j);
    expect_error(post_json(ts.port, "ApproveAction", AUTH, "{\"actionId\":\"missing\"}", 404),
                 "not_found", "action missing not found");
    expect_error(post_json(ts.port, "ApproveAction", AUTH, "{\"actionId\":\"decided\"}", 400),
                 "failed_precondition", "not pending");
    expect_error(post_json(ts.port, "ApproveAction", AUTH, "{\"actionId\":\"down\"}", 503),
                 "unavailable", NULL);
    expect_error(post_json(ts.port, "RejectAction", NULL, "{\"actionId\":\"x\"}", 400),
                 "invalid_argument", "reason is required");
    expect_error(post_json(ts.port, "RejectAction", NULL, "{\"reason\":\"wrong-type\"}", 500),
                 "internal", "wrong type");
    ts_stop(&ts);
}

static void test_async_and_deadline(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    json_t *j = post_json(ts.port, "ApproveAction", AUTH, "{\"actionId\":\"async-1\"}", 200);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "action"), "id")),
                        "async-1");
    json_decref(j);
    /* The handler takes 400 ms, the client allows 100: deadline_exceeded,
     * and the handler's late answer is dropped without harm. */
    expect_error(post_json(ts.port, "ApproveAction", AUTH "Connect-Timeout-Ms: 100\r\n",
                           "{\"actionId\":\"slow\"}", 504),
                 "deadline_exceeded", NULL);
    usleep(500 * 1000);
    /* A generous deadline does not interfere. */
    j = post_json(ts.port, "ApproveAction", AUTH "Connect-Timeout-Ms: 5000\r\n",
                  "{\"actionId\":\"async-2\"}", 200);
    json_decref(j);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.requests_in_flight, 0);
    ts_stop(&ts);
}

/* buf curl, a real Connect client, over HTTP/1.1 with the binary codec
 * (buf curl's choice), and plain curl for the JSON codec. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    return pclose(p);
}

static void test_interop_buf_curl(void **state)
{
    char buf_bin[512];
    snprintf(buf_bin, sizeof buf_bin, "%s/node_modules/.bin/buf", MC_SOURCE_DIR);
    if (access(buf_bin, X_OK) != 0) {
        fprintf(stderr, "buf not installed (%s): skipping (make test installs it)\n", buf_bin);
        skip();
    }
    test_server ts;
    ts_start(&ts, NULL, setup, NULL);
    char cmd[2048], out[8192];
    snprintf(cmd, sizeof cmd,
             "cd %s && %s curl --schema proto --protocol connect "
             "-d '{\"pageSize\":2,\"pageToken\":\"b\"}' "
             "http://127.0.0.1:%u/ops.v1.ActionService/ListPendingActions 2>&1",
             MC_SOURCE_DIR, buf_bin, ts.port);
    int rc = run(cmd, out, sizeof out);
    if (rc != 0)
        fail_msg("buf curl failed (%d): %s", rc, out);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    if (j == NULL)
        fail_msg("buf curl output is not JSON: %s", out);
    assert_int_equal(json_array_size(json_object_get(j, "actions")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "nextPageToken")), "bx");
    json_decref(j);
    /* An error comes back as a Connect error. */
    snprintf(cmd, sizeof cmd,
             "cd %s && %s curl --schema proto --protocol connect "
             "-H 'Authorization: Bearer s3cret-token' -d '{\"actionId\":\"missing\"}' "
             "http://127.0.0.1:%u/ops.v1.ActionService/ApproveAction 2>&1",
             MC_SOURCE_DIR, buf_bin, ts.port);
    rc = run(cmd, out, sizeof out);
    assert_int_not_equal(rc, 0);
    if (strstr(out, "not_found") == NULL)
        fail_msg("buf curl error output: %s", out);
    /* Authenticated success through the client. */
    snprintf(cmd, sizeof cmd,
             "cd %s && %s curl --schema proto --protocol connect "
             "-H 'Authorization: Bearer s3cret-token' -d '{\"actionId\":\"ok-1\"}' "
             "http://127.0.0.1:%u/ops.v1.ActionService/ApproveAction 2>&1",
             MC_SOURCE_DIR, buf_bin, ts.port);
    rc = run(cmd, out, sizeof out);
    if (rc != 0 || strstr(out, "ACTION_STATUS_APPROVED") == NULL)
        fail_msg("buf curl approve (%d): %s", rc, out);
    /* JSON codec with curl, headers as a Connect-Web client sends them. */
    snprintf(cmd, sizeof cmd,
             "curl -sS -X POST -H 'Content-Type: application/json' "
             "-H 'Connect-Protocol-Version: 1' -d '{\"pageSize\":1}' "
             "http://127.0.0.1:%u/ops.v1.ActionService/ListPendingActions 2>&1",
             ts.port);
    rc = run(cmd, out, sizeof out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "\"actions\":[{\"id\":\"a1\""));
    ts_stop(&ts);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_code_table),
        cmocka_unit_test(test_json_unary),
        cmocka_unit_test(test_binary_unary),
        cmocka_unit_test(test_protocol_errors),
        cmocka_unit_test(test_handler_errors_and_auth),
        cmocka_unit_test(test_async_and_deadline),
        cmocka_unit_test(test_interop_buf_curl),
    };
    return cmocka_run_group_tests_name("http_connect", tests, NULL, NULL);
}
