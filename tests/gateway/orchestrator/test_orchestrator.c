/* Integration tests of the orchestrator binary against a real nats-server
 * and PostgreSQL (scripts/with-services): each test starts the binary as a
 * child process with its own bus prefixes, feeds it through the bus and
 * talks to it over HTTP with curl, buf curl and a raw SSE client. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "orch_test_util.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"

#define TOKEN "test-token"
static const char auth_header[] = "Authorization: Bearer test-token";
#define APPROVE "/ops.v1.ActionService/ApproveAction"
#define REJECT "/ops.v1.ActionService/RejectAction"
#define LIST "/ops.v1.ActionService/ListPendingActions"
#define HISTORY "/ops.v1.ActionService/GetActionHistory"

static uint32_t g_ids = 1;

static void new_id(char out[37])
{
    th_uuid(out, g_ids++);
}

/* Waits until ListPendingActions lists n actions. */
static void wait_pending(const th_orch *o, int n)
{
    char want[32];
    uint64_t deadline = th_now_ms() + 10000;
    for (;;) {
        th_resp r;
        th_post_json(o, LIST, "{}", NULL, NULL, &r);
        assert_int_equal(r.status, 200);
        int count = 0;
        for (const char *p = r.body; (p = strstr(p, "\"proposedAtTick\"")) != NULL; p++)
            count++;
        th_resp_free(&r);
        if (count == n)
            return;
        if (th_now_ms() > deadline) {
            snprintf(want, sizeof want, "%d pending", n);
            fail_msg("timed out waiting for %s (have %d)", want, count);
        }
        usleep(50000);
    }
}

static void approve(const th_orch *o, const char *id, const char *token, th_resp *r)
{
    char body[256];
    snprintf(body, sizeof body, "{\"actionId\":\"%s\",\"actor\":\"alice\",\"reason\":\"ok\"}", id);
    th_post_json(o, APPROVE, body, token, NULL, r);
}

/* ---- Approve, reject, list, history ---- */

static void test_approve_reject_history(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "flow");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    char a[37], c[37], d[37];
    new_id(a);
    new_id(c);
    new_id(d);
    th_publish_action(b, "run-flow", a, "svc-a", 5, 1);
    th_publish_action(b, "run-flow", c, "svc-b", 5, 2);
    th_publish_action(b, "run-flow", d, "svc-c", 6, 3);
    wait_pending(&o, 3);

    /* Approve: 200, APPROVED, one decision and one command, history rows. */
    th_resp r;
    approve(&o, a, TOKEN, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "ACTION_STATUS_APPROVED"));
    assert_non_null(strstr(r.body, "alice"));
    th_resp_free(&r);
    assert_int_equal(th_bus_wait(b, "ops.commands", 1, 5000), 1);
    assert_int_equal(th_bus_wait(b, "ops.decisions", 1, 5000), 1);
    Ops__V1__ApplyActionCommand *cmd = (Ops__V1__ApplyActionCommand *)th_bus_get(
        b, "ops.commands", 0, &ops__v1__apply_action_command__descriptor);
    assert_non_null(cmd);
    assert_string_equal(cmd->action_id, a);
    assert_string_equal(cmd->target_id, "svc-a");
    assert_string_equal(cmd->stamp->run_id, "run-flow");
    protobuf_c_message_free_unpacked(&cmd->base, NULL);
    Ops__V1__ApprovalDecision *dec = (Ops__V1__ApprovalDecision *)th_bus_get(
        b, "ops.decisions", 0, &ops__v1__approval_decision__descriptor);
    assert_non_null(dec);
    assert_true(dec->approved);
    assert_int_equal(dec->source, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_HUMAN);
    assert_string_equal(dec->actor, "alice");
    protobuf_c_message_free_unpacked(&dec->base, NULL);
    uint64_t deadline = th_now_ms() + 5000;
    while (th_history_rows(a) < 2 && th_now_ms() < deadline)
        usleep(50000);
    assert_int_equal(th_history_rows(a), 2);
    assert_int_equal(th_action_status(a), COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED);

    /* A second approval of the same action: failed_precondition naming it. */
    approve(&o, a, TOKEN, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "failed_precondition"));
    assert_non_null(strstr(r.body, "APPROVED"));
    th_resp_free(&r);

    /* Unknown id: not_found. */
    char unknown[37];
    new_id(unknown);
    approve(&o, unknown, TOKEN, &r);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.body, "not_found"));
    th_resp_free(&r);

    /* Reject needs a reason. */
    char body[256];
    snprintf(body, sizeof body, "{\"actionId\":\"%s\"}", c);
    th_post_json(&o, REJECT, body, TOKEN, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "invalid_argument"));
    th_resp_free(&r);
    snprintf(body, sizeof body, "{\"actionId\":\"%s\",\"reason\":\"not now\",\"actor\":\"bob\"}", c);
    th_post_json(&o, REJECT, body, TOKEN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "ACTION_STATUS_REJECTED"));
    th_resp_free(&r);
    assert_int_equal(th_bus_wait(b, "ops.decisions", 2, 5000), 2);
    usleep(300000);
    assert_int_equal(th_bus_count(b, "ops.commands"), 1); /* a rejection sends no command */
    wait_pending(&o, 1);

    /* History: filters and paging. */
    th_post_json(&o, HISTORY, "{\"statuses\":[\"ACTION_STATUS_REJECTED\"]}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, c));
    assert_null(strstr(r.body, a));
    assert_non_null(strstr(r.body, "not now"));
    th_resp_free(&r);
    th_post_json(&o, HISTORY, "{\"targetId\":\"svc-a\"}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, a));
    assert_null(strstr(r.body, c));
    th_resp_free(&r);
    th_post_json(&o, HISTORY, "{\"fromTick\":\"6\",\"toTick\":\"6\"}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, d));
    assert_null(strstr(r.body, a));
    th_resp_free(&r);
    th_post_json(&o, HISTORY, "{\"pageSize\":2}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    char *tok = strstr(r.body, "\"nextPageToken\":\"");
    assert_non_null(tok);
    tok += strlen("\"nextPageToken\":\"");
    char token[128];
    size_t tl = strcspn(tok, "\"");
    memcpy(token, tok, tl);
    token[tl] = '\0';
    /* Newest first: d (tick 6) then one of tick 5. */
    assert_non_null(strstr(r.body, d));
    th_resp_free(&r);
    snprintf(body, sizeof body, "{\"pageSize\":2,\"pageToken\":\"%s\"}", token);
    th_post_json(&o, HISTORY, body, NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, d));
    assert_null(strstr(r.body, "nextPageToken"));
    th_resp_free(&r);
    th_post_json(&o, HISTORY, "{\"pageToken\":\"garbage\"}", NULL, NULL, &r);
    assert_int_equal(r.status, 400);
    th_resp_free(&r);

    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* The same calls through buf curl (Connect protocol, the real schema). */
static void test_buf_curl(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "buf");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    char a[37];
    new_id(a);
    th_publish_action(b, "run-buf", a, "svc-x", 3, 1);
    wait_pending(&o, 1);
    char url[256], data[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)o.port, LIST);
    char *argv1[] = {BUF_BIN, "curl", "--protocol", "connect", "--schema", PROTO_DIR,
                     "--data", "{}", url, NULL};
    char *out = NULL;
    int rc = th_run(argv1, &out, true, 60000);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, a));
    free(out);
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)o.port, APPROVE);
    snprintf(data, sizeof data, "{\"action_id\":\"%s\",\"actor\":\"buf\"}", a);
    char *argv2[] = {BUF_BIN, "curl", "--protocol", "connect", "--schema", PROTO_DIR,
                     "--header", (char *)auth_header, "--data", data, url, NULL};
    rc = th_run(argv2, &out, true, 60000);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "ACTION_STATUS_APPROVED"));
    free(out);
    /* Without the token buf reports unauthenticated. */
    char *argv3[] = {BUF_BIN, "curl", "--protocol", "connect", "--schema", PROTO_DIR,
                     "--data", data, url, NULL};
    rc = th_run(argv3, &out, true, 60000);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(out, "unauthenticated"));
    free(out);
    assert_int_equal(th_bus_wait(b, "ops.commands", 1, 5000), 1);
    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* Two approvals of one action at the same time: one command, one refusal. */
static void test_concurrent_double_approval(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "dbl");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    for (int round = 0; round < 5; round++) {
        char a[37];
        new_id(a);
        th_publish_action(b, "run-dbl", a, "svc-d", (uint64_t)round + 1, (uint64_t)round + 1);
        wait_pending(&o, 1);
        char body[256], url[128];
        snprintf(body, sizeof body, "{\"actionId\":\"%s\"}", a);
        snprintf(url, sizeof url, "http://127.0.0.1:%u%s", (unsigned)o.port, APPROVE);
        pid_t pids[2];
        for (int k = 0; k < 2; k++) {
            pids[k] = fork();
            if (pids[k] == 0) {
                char *argv[] = {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X",
                                "POST", "-H", "Content-Type: application/json", "-H",
                                (char *)auth_header, "--data-binary", body, url, NULL};
                char *out = NULL;
                th_run(argv, &out, false, 20000);
                int code = out ? atoi(out) : 0;
                free(out);
                _exit(code == 200 ? 0 : code == 400 ? 1 : 2);
            }
        }
        int ok = 0, refused = 0;
        for (int k = 0; k < 2; k++) {
            int st;
            waitpid(pids[k], &st, 0);
            int code = WIFEXITED(st) ? WEXITSTATUS(st) : 3;
            ok += code == 0;
            refused += code == 1;
        }
        assert_int_equal(ok, 1);
        assert_int_equal(refused, 1);
        assert_int_equal(th_bus_wait(b, "ops.commands", (size_t)round + 1, 5000),
                         (size_t)round + 1);
    }
    usleep(500000);
    assert_int_equal(th_bus_count(b, "ops.commands"), 5);
    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* ---- Auth and CORS ---- */

static bool has_header(const th_resp *r, const char *h)
{
    return strcasestr(r->headers, h) != NULL;
}

static void test_auth_and_cors(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "auth");
    th_orch_env(&o, "CORS_ORIGINS=http://allowed.example:3000");
    th_orch_start(&o);
    char id[37];
    new_id(id);
    th_resp r;
    approve(&o, id, NULL, &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "unauthenticated"));
    th_resp_free(&r);
    approve(&o, id, "wrong-token", &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "unauthenticated"));
    th_resp_free(&r);
    approve(&o, id, TOKEN, &r);
    assert_int_equal(r.status, 404); /* authenticated; the action is unknown */
    th_resp_free(&r);
    /* Reads are open. */
    th_post_json(&o, LIST, "{}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    /* Failed attempts are counted, and the token never reaches the log. */
    const char *margs[] = {"-X", "GET"};
    th_curl(&o, "/metrics", margs, 2, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "orchestrator_auth_failures_total 2"));
    th_resp_free(&r);

    /* CORS: an allowed origin gets the header, another does not. */
    th_post_json(&o, LIST, "{}", NULL, "Origin: http://allowed.example:3000", &r);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, "Access-Control-Allow-Origin: http://allowed.example:3000"));
    th_resp_free(&r);
    th_post_json(&o, LIST, "{}", NULL, "Origin: http://evil.example", &r);
    assert_false(has_header(&r, "Access-Control-Allow-Origin"));
    th_resp_free(&r);
    const char *pre[] = {"-X", "OPTIONS", "-H", "Origin: http://allowed.example:3000", "-H",
                         "Access-Control-Request-Method: POST", "-H",
                         "Access-Control-Request-Headers: authorization, content-type"};
    th_curl(&o, APPROVE, pre, 8, &r);
    assert_int_equal(r.status, 204);
    assert_true(has_header(&r, "Access-Control-Allow-Origin: http://allowed.example:3000"));
    assert_true(has_header(&r, "Access-Control-Allow-Headers"));
    th_resp_free(&r);
    const char *pre2[] = {"-X", "OPTIONS", "-H", "Origin: http://evil.example", "-H",
                          "Access-Control-Request-Method: POST"};
    th_curl(&o, APPROVE, pre2, 6, &r);
    assert_false(has_header(&r, "Access-Control-Allow-Origin"));
    th_resp_free(&r);
    assert_int_equal(th_orch_stop(&o), 0);
    /* The log never holds the token. */
    FILE *f = fopen(o.log_path, "r");
    assert_non_null(f);
    char line[4096];
    while (fgets(line, sizeof line, f) != NULL)
        assert_null(strstr(line, "wrong-token"));
    fclose(f);

    /* READ_REQUIRES_TOKEN: reads and the stream need the token. */
    th_orch o2;
    th_orch_init(&o2, "rtok");
    th_orch_env(&o2, "READ_REQUIRES_TOKEN=true");
    th_orch_start(&o2);
    th_post_json(&o2, LIST, "{}", NULL, NULL, &r);
    assert_int_equal(r.status, 401);
    th_resp_free(&r);
    th_post_json(&o2, LIST, "{}", TOKEN, NULL, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    th_sse s;
    assert_int_equal(th_sse_open(&s, o2.port, "/api/stream", NULL, 0), 401);
    th_sse_close(&s);
    assert_int_equal(th_sse_open(&s, o2.port, "/api/stream?access_token=nope", NULL, 0), 401);
    th_sse_close(&s);
    assert_int_equal(th_sse_open(&s, o2.port, "/api/stream?access_token=" TOKEN, NULL, 0), 200);
    th_event ev;
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    th_event_free(&ev);
    th_sse_close(&s);
    assert_int_equal(th_orch_stop(&o2), 0);
}

/* ---- SSE ---- */

static void publish_tick(th_bus *b, const char *run, uint64_t tick, uint64_t seq)
{
    Common__V1__Stamp st = COMMON__V1__STAMP__INIT;
    st.run_id = (char *)run;
    st.tick = tick;
    st.producer = "engine";
    st.producer_seq = seq;
    Sim__V1__MetricSample s1 = SIM__V1__METRIC_SAMPLE__INIT, s2 = SIM__V1__METRIC_SAMPLE__INIT,
                          s3 = SIM__V1__METRIC_SAMPLE__INIT;
    s1.service_id = "api";
    s1.metric_name = "error_rate";
    s1.metric_value = 12.5;
    s2.service_id = "api";
    s2.metric_name = "requests_per_second";
    s2.metric_value = 100;
    s3.node_id = "node-1";
    s3.metric_name = "cpu_usage";
    s3.metric_value = 40;
    Sim__V1__MetricSample *samples[] = {&s1, &s2, &s3};
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    snap.stamp = &st;
    snap.chunk_count = 1;
    snap.n_samples = 3;
    snap.samples = samples;
    snap.sim_time_unix_ms = 1000 + (int64_t)tick;
    th_bus_publish(b, "sim.metrics", &snap.base, run, tick, seq);
    Common__V1__Stamp st2 = st;
    st2.producer_seq = seq + 1;
    Ops__V1__Watermark w = OPS__V1__WATERMARK__INIT;
    w.stamp = &st2;
    w.stage = COMMON__V1__STAGE__STAGE_ENGINE;
    w.tick = tick;
    w.message_count = 1;
    th_bus_publish(b, "sim.watermark", &w.base, run, tick, seq + 1);
}

static void expect_event(th_sse *s, const char *type, th_event *ev)
{
    for (int i = 0; i < 20; i++) {
        assert_true(th_sse_next(s, ev, 5000));
        if (strcmp(ev->type, type) == 0)
            return;
        th_event_free(ev);
    }
    fail_msg("no %s event", type);
}

static void test_sse_stream(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "sse");
    th_orch_env(&o, "SSE_MAX_UNSENT_BYTES=8192");
    th_orch_env(&o, "HTTP_SEND_BUFFER_BYTES=4096");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    th_sse s;
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", NULL, 0), 200);
    th_event ev;
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    assert_true(ev.id[0] != '\0');
    unsigned long long snap_id = strtoull(ev.id, NULL, 10);
    assert_non_null(strstr(ev.data, "\"pendingActions\":[]"));
    th_event_free(&ev);

    /* Events in order with ids increasing by one. */
    char a[37];
    new_id(a);
    th_publish_action(b, "run-sse", a, "api", 1, 1);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "action");
    assert_non_null(strstr(ev.data, a));
    assert_non_null(strstr(ev.data, "ACTION_STATUS_PENDING"));
    assert_int_equal(strtoull(ev.id, NULL, 10), snap_id + 1);
    th_event_free(&ev);
    publish_tick(b, "run-sse", 1, 1);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "tick");
    assert_int_equal(strtoull(ev.id, NULL, 10), snap_id + 2);
    assert_non_null(strstr(ev.data, "\"tick\":1"));
    assert_non_null(strstr(ev.data, "\"id\":\"api\""));
    assert_non_null(strstr(ev.data, "\"errorRate\":12.5"));
    assert_non_null(strstr(ev.data, "\"id\":\"node-1\""));
    th_event_free(&ev);
    th_resp r;
    approve(&o, a, TOKEN, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "decision");
    assert_int_equal(strtoull(ev.id, NULL, 10), snap_id + 3);
    th_event_free(&ev);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "action");
    assert_non_null(strstr(ev.data, "ACTION_STATUS_APPROVED"));
    char last_id[32];
    snprintf(last_id, sizeof last_id, "%s", ev.id);
    th_event_free(&ev);
    th_sse_close(&s);

    /* Missed events come back after a resume with Last-Event-ID. */
    char c[37];
    new_id(c);
    th_publish_action(b, "run-sse", c, "db", 2, 2);
    wait_pending(&o, 1);
    char hdr[64];
    snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", last_id);
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", hdr, 0), 200);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    assert_string_equal(ev.id, ""); /* the resume point does not move */
    assert_non_null(strstr(ev.data, c));
    th_event_free(&ev);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "action");
    assert_non_null(strstr(ev.data, c));
    assert_int_equal(strtoull(ev.id, NULL, 10), strtoull(last_id, NULL, 10) + 1);
    th_event_free(&ev);
    th_sse_close(&s);
    /* The same through the query parameter. */
    char path[128];
    snprintf(path, sizeof path, "/api/stream?last_event_id=%s", last_id);
    assert_int_equal(th_sse_open(&s, o.port, path, NULL, 0), 200);
    expect_event(&s, "action", &ev);
    assert_non_null(strstr(ev.data, c));
    th_event_free(&ev);
    th_sse_close(&s);

    /* An id from before this process: reset, then a fresh snapshot. */
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", "Last-Event-ID: 5", 0), 200);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "reset");
    th_event_free(&ev);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    assert_true(ev.id[0] != '\0');
    th_event_free(&ev);
    th_sse_close(&s);

    /* A reader that never reads is dropped; a reading one stays. */
    th_sse slow, good;
    assert_int_equal(th_sse_open(&slow, o.port, "/api/stream", NULL, 2048), 200);
    assert_int_equal(th_sse_open(&good, o.port, "/api/stream", NULL, 0), 200);
    assert_true(th_sse_next(&good, &ev, 5000));
    th_event_free(&ev);
    for (uint64_t t = 10; t < 400; t++) {
        publish_tick(b, "run-sse", t, t * 2);
        while (th_sse_next(&good, &ev, 1)) /* keep the good one drained */
            th_event_free(&ev);
    }
    uint64_t deadline = th_now_ms() + 10000;
    bool dropped = false;
    while (!dropped && th_now_ms() < deadline) {
        const char *margs[] = {"-X", "GET"};
        th_curl(&o, "/metrics", margs, 2, &r);
        const char *m = strstr(r.body, "\nhttp_sse_slow_disconnects_total ");
        dropped = m != NULL && atoi(m + strlen("\nhttp_sse_slow_disconnects_total ")) >= 1;
        th_resp_free(&r);
        while (th_sse_next(&good, &ev, 1))
            th_event_free(&ev);
        if (!dropped)
            usleep(100000);
    }
    assert_true(dropped);
    publish_tick(b, "run-sse", 500, 1000);
    expect_event(&good, "tick", &ev);
    th_event_free(&ev);
    th_sse_close(&slow);
    th_sse_close(&good);
    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* ---- APPROVAL_MODE=auto ---- */

static void test_auto_mode(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "auto");
    th_orch_env(&o, "APPROVAL_MODE=auto");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    char a[37];
    new_id(a);
    th_publish_action(b, "run-auto", a, "svc-auto", 3, 1);
    wait_pending(&o, 1);
    usleep(300000);
    assert_int_equal(th_bus_count(b, "ops.commands"), 0); /* not before the tick ends */
    th_publish_agent_watermark(b, "run-auto", 3, 2);
    assert_int_equal(th_bus_wait(b, "ops.commands", 1, 5000), 1);
    assert_int_equal(th_bus_wait(b, "ops.watermark.orchestrator", 1, 5000), 1);
    Ops__V1__ApprovalDecision *d = (Ops__V1__ApprovalDecision *)th_bus_get(
        b, "ops.decisions", 0, &ops__v1__approval_decision__descriptor);
    assert_non_null(d);
    assert_int_equal(d->source, OPS__V1__DECISION_SOURCE__DECISION_SOURCE_POLICY);
    assert_int_equal(d->effective_tick, 3);
    protobuf_c_message_free_unpacked(&d->base, NULL);
    Ops__V1__Watermark *w = (Ops__V1__Watermark *)th_bus_get(b, "ops.watermark.orchestrator", 0,
                                                             &ops__v1__watermark__descriptor);
    assert_non_null(w);
    assert_int_equal(w->tick, 3);
    protobuf_c_message_free_unpacked(&w->base, NULL);
    wait_pending(&o, 0);
    uint64_t deadline = th_now_ms() + 5000;
    while (th_action_status(a) != COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED &&
           th_now_ms() < deadline)
        usleep(50000);
    assert_int_equal(th_action_status(a), COMMON__V1__ACTION_STATUS__ACTION_STATUS_APPROVED);
    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* ---- Simulation control proxy ---- */

static void test_control_proxy(void **state)
{
    (void)state;
    const char *engine_body = "{\"state\":{\"tick\":\"7\",\"runId\":\"run-e\",\"scenario\":"
                              "\"normal\",\"seed\":\"42\",\"running\":true}}";
    th_engine *e = th_engine_start(200, engine_body);
    th_orch o;
    th_orch_init(&o, "ctl");
    char env[128];
    snprintf(env, sizeof env, "SIM_ENGINE_URL=http://127.0.0.1:%u", (unsigned)th_engine_port(e));
    th_orch_env(&o, env);
    th_orch_start(&o);
    th_resp r;
    th_post_json(&o, "/sim.v1.SimulationService/GetState", "{}", NULL, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, engine_body);
    th_resp_free(&r);
    /* Mutating calls need the token. */
    th_post_json(&o, "/sim.v1.SimulationService/SetSpeed", "{\"ticksPerSecond\":5}", NULL, NULL,
                 &r);
    assert_int_equal(r.status, 401);
    assert_non_null(strstr(r.body, "unauthenticated"));
    th_resp_free(&r);
    int before = th_engine_requests(e);
    th_post_json(&o, "/sim.v1.SimulationService/SetSpeed", "{\"ticksPerSecond\":5}", TOKEN, NULL,
                 &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, engine_body);
    th_resp_free(&r);
    assert_true(th_engine_requests(e) > before);
    /* The body and content type went through unchanged (the last request
     * may be the follow-up GetState, so look at it right after). */
    th_sse s;
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", NULL, 0), 200);
    th_event ev;
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    assert_non_null(strstr(ev.data, "\"runId\":\"run-e\""));
    assert_non_null(strstr(ev.data, "\"seed\":\"42\""));
    th_event_free(&ev);
    th_post_json(&o, "/sim.v1.SimulationService/Play", "{}", TOKEN, NULL, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    expect_event(&s, "state", &ev); /* a control call announces the state */
    assert_non_null(strstr(ev.data, "run-e"));
    th_event_free(&ev);
    th_sse_close(&s);
    const char *args[] = {"-X", "POST", "-H", "Content-Type: application/proto", "-H",
                          auth_header, "--data-binary", "\x08\x01"};
    th_curl(&o, "/sim.v1.SimulationService/Reset", args, 8, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    char path[256], ctype[256], body[256];
    th_engine_last(e, path, ctype, body, sizeof path);
    assert_string_equal(path, "/sim.v1.SimulationService/Reset");
    assert_string_equal(ctype, "application/proto");
    assert_string_equal(body, "\x08\x01");
    th_engine_stop(e);

    /* An engine error is passed on unchanged. */
    th_engine *e2 = th_engine_start(400, "{\"code\":\"invalid_argument\",\"message\":\"bad\"}");
    th_orch o2;
    th_orch_init(&o2, "ctl2");
    snprintf(env, sizeof env, "SIM_ENGINE_URL=http://127.0.0.1:%u", (unsigned)th_engine_port(e2));
    th_orch_env(&o2, env);
    th_orch_start(&o2);
    th_post_json(&o2, "/sim.v1.SimulationService/InjectFault", "{\"fault\":{}}", TOKEN, NULL, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\"code\":\"invalid_argument\",\"message\":\"bad\"}");
    th_resp_free(&r);
    th_engine_last(e2, path, ctype, body, sizeof path);
    assert_string_equal(path, "/sim.v1.SimulationService/InjectFault");
    assert_string_equal(ctype, "application/json");
    assert_string_equal(body, "{\"fault\":{}}");
    th_engine_stop(e2);
    /* Nothing listens any more: unavailable. */
    th_post_json(&o2, "/sim.v1.SimulationService/GetState", "{}", NULL, NULL, &r);
    assert_int_equal(r.status, 503);
    assert_non_null(strstr(r.body, "unavailable"));
    th_resp_free(&r);
    assert_int_equal(th_orch_stop(&o2), 0);
    assert_int_equal(th_orch_stop(&o), 0);
}

/* ---- Restart ---- */

static void test_restart_keeps_pending(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "rst");
    th_orch_start(&o);
    th_bus *b = th_bus_open(&o);
    char a[37], c[37];
    new_id(a);
    new_id(c);
    th_publish_action(b, "run-rst", a, "svc-1", 4, 1);
    th_publish_action(b, "run-rst", c, "svc-2", 4, 2);
    wait_pending(&o, 2);
    th_resp r;
    approve(&o, a, TOKEN, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_bus_wait(b, "ops.commands", 1, 5000), 1);
    assert_int_equal(th_orch_stop(&o), 0);

    /* A new process with the same streams and database. */
    th_orch_start(&o);
    wait_pending(&o, 1);
    th_post_json(&o, LIST, "{}", NULL, NULL, &r);
    assert_non_null(strstr(r.body, c));
    assert_null(strstr(r.body, a));
    th_resp_free(&r);
    approve(&o, a, TOKEN, &r); /* still known as approved */
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "APPROVED"));
    th_resp_free(&r);
    approve(&o, c, TOKEN, &r);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_bus_wait(b, "ops.commands", 2, 5000), 2);
    usleep(500000);
    assert_int_equal(th_bus_count(b, "ops.commands"), 2); /* nothing re-published */
    /* The producer sequence continued: the new decision is number 3. */
    Ops__V1__ApprovalDecision *d = (Ops__V1__ApprovalDecision *)th_bus_get(
        b, "ops.decisions", 1, &ops__v1__approval_decision__descriptor);
    assert_non_null(d);
    assert_string_equal(d->action_id, c);
    assert_int_equal(d->stamp->producer_seq, 3);
    protobuf_c_message_free_unpacked(&d->base, NULL);
    th_bus_close(b);
    assert_int_equal(th_orch_stop(&o), 0);
}

#ifdef SIM_ENGINE_BIN
/* Against the real sim-engine: control through the proxy, run info in the
 * snapshot, tick events from its metrics. */
static void test_real_engine(void **state)
{
    (void)state;
    th_orch o;
    th_orch_init(&o, "eng");
    uint16_t eport = (uint16_t)(o.port + 1);
    pid_t pid = fork();
    if (pid == 0) {
        char buf[64];
        snprintf(buf, sizeof buf, "127.0.0.1:%u", (unsigned)eport);
        setenv("ADDR", buf, 1);
        setenv("BUS_STREAM_PREFIX", o.prefix_stream, 1);
        setenv("BUS_SUBJECT_PREFIX", o.prefix_subject, 1);
        setenv("SCENARIO", "normal", 1);
        setenv("SCENARIO_DIR", SCENARIO_DIR, 1);
        setenv("SIM_MODE", "realtime", 1);
        setenv("SPEED", "10", 1);
        setenv("LOG_LEVEL", "warn", 1);
        execl(SIM_ENGINE_BIN, "sim-engine", (char *)NULL);
        _exit(127);
    }
    char env[128];
    snprintf(env, sizeof env, "SIM_ENGINE_URL=http://127.0.0.1:%u", (unsigned)eport);
    th_orch_env(&o, env);
    th_orch_start(&o);
    th_resp r;
    uint64_t deadline = th_now_ms() + 10000;
    for (;;) {
        th_post_json(&o, "/sim.v1.SimulationService/GetState", "{}", NULL, NULL, &r);
        if (r.status == 200 || th_now_ms() > deadline)
            break;
        th_resp_free(&r);
        usleep(100000);
    }
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"runId\""));
    th_resp_free(&r);
    th_sse s;
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", NULL, 0), 200);
    th_event ev;
    expect_event(&s, "tick", &ev);
    assert_non_null(strstr(ev.data, "\"services\":[{"));
    th_event_free(&ev);
    th_sse_close(&s);
    th_post_json(&o, "/sim.v1.SimulationService/Pause", "{}", TOKEN, NULL, &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"state\""));
    th_resp_free(&r);
    assert_int_equal(th_sse_open(&s, o.port, "/api/stream", NULL, 0), 200);
    assert_true(th_sse_next(&s, &ev, 5000));
    assert_string_equal(ev.type, "snapshot");
    assert_non_null(strstr(ev.data, "\"scenario\":\"normal\""));
    th_event_free(&ev);
    th_sse_close(&s);
    assert_int_equal(th_orch_stop(&o), 0);
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
}
#endif

/* A missing API_TOKEN_FILE stops the start with status 2. */
static void test_token_file_missing(void **state)
{
    (void)state;
    char *argv[] = {"env", "API_TOKEN_FILE=/nonexistent/token", "NATS_URL=nats://127.0.0.1:9",
                    ORCH_BIN, NULL};
    char *out = NULL;
    int rc = th_run(argv, &out, true, 20000);
    assert_int_equal(rc, 2);
    assert_non_null(strstr(out, "API_TOKEN_FILE"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_file_missing),
        cmocka_unit_test(test_approve_reject_history),
        cmocka_unit_test(test_buf_curl),
        cmocka_unit_test(test_concurrent_double_approval),
        cmocka_unit_test(test_auth_and_cors),
        cmocka_unit_test(test_sse_stream),
        cmocka_unit_test(test_auto_mode),
        cmocka_unit_test(test_control_proxy),
        cmocka_unit_test(test_restart_keeps_pending),
#ifdef SIM_ENGINE_BIN
        cmocka_unit_test(test_real_engine),
#endif
    };
    /* ORCH_TEST_FILTER=test_sse* runs a subset. */
    if (getenv("ORCH_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("ORCH_TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mc_bus_library_shutdown(2000);
    return rc;
}
