/* lib/http CORS, bearer auth and Prometheus metrics (checked with
 * promtool). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/auth.h"
#include "http/cors.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http_test_util.h"

/* ---- CORS ---- */

static mc_http_cors *g_cors;

static void h_hello(mc_http_request *req, void *ctx)
{
    mc_http_respond_text(req, 200, "text/plain", "hello");
}

static void setup_cors(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_cors_new(" http://localhost:3000 , https://ops.example.com/", &g_cors,
                                      &err), MC_OK);
    mc_http_server_set_cors(ts->srv, g_cors);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET | MC_HTTP_POST, "/hello", h_hello,
                                          NULL, &err), MC_OK);
}

static void test_cors_config(void **state)
{
    mc_http_cors *c;
    mc_error err;
    assert_int_equal(mc_http_cors_new("localhost:3000", &c, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "CORS_ORIGINS"));
    assert_int_equal(mc_http_cors_new("http://a/path", &c, &err), MC_ERR_INVALID);
    assert_int_equal(mc_http_cors_new("", &c, &err), MC_OK);
    assert_false(mc_http_cors_origin_allowed(c, "http://a"));
    mc_http_cors_free(c);
    assert_int_equal(mc_http_cors_new("*", &c, &err), MC_OK);
    assert_true(mc_http_cors_origin_allowed(c, "http://anything:1"));
    assert_false(mc_http_cors_origin_allowed(c, NULL));
    mc_http_cors_free(c);
    assert_int_equal(mc_http_cors_new("http://a:1,https://b", &c, &err), MC_OK);
    assert_true(mc_http_cors_origin_allowed(c, "http://a:1"));
    assert_true(mc_http_cors_origin_allowed(c, "https://b"));
    assert_false(mc_http_cors_origin_allowed(c, "http://a:2"));
    assert_false(mc_http_cors_origin_allowed(c, "http://b"));
    assert_false(mc_http_cors_origin_allowed(c, "https://b.evil"));
    mc_http_cors_free(c);
}

static bool raw(uint16_t port, const char *req, response *r)
{
    client c;
    cl_connect(&c, port, 0);
    cl_send_str(&c, req);
    bool ok = cl_read_response(&c, r);
    cl_close(&c);
    return ok;
}

static void test_cors_requests(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_cors, NULL);
    response r;
    char v[256];
    /* Allowed origin: echoed, with Vary. */
    assert_true(raw(ts.port, "GET /hello HTTP/1.1\r\nOrigin: http://localhost:3000\r\n\r\n", &r));
    assert_int_equal(r.status, 200);
    assert_true(resp_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    assert_string_equal(v, "http://localhost:3000");
    assert_true(resp_header(&r, "Vary", v, sizeof v));
    assert_string_equal(v, "Origin");
    resp_free(&r);
    /* Disallowed origin: served, but no CORS header. */
    assert_true(raw(ts.port, "GET /hello HTTP/1.1\r\nOrigin: http://evil.example\r\n\r\n", &r));
    assert_int_equal(r.status, 200);
    assert_false(resp_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    assert_true(resp_header(&r, "Vary", v, sizeof v));
    resp_free(&r);
    /* Preflight from an allowed origin. */
    assert_true(raw(ts.port,
                    "OPTIONS /ops.v1.ActionService/ApproveAction HTTP/1.1\r\n"
                    "Origin: https://ops.example.com\r\nAccess-Control-Request-Method: POST\r\n"
                    "Access-Control-Request-Headers: content-type,authorization,"
                    "connect-protocol-version\r\n\r\n",
                    &r));
    assert_int_equal(r.status, 204);
    assert_true(resp_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    assert_string_equal(v, "https://ops.example.com");
    assert_true(resp_header(&r, "Access-Control-Allow-Methods", v, sizeof v));
    assert_non_null(strstr(v, "POST"));
    assert_true(resp_header(&r, "Access-Control-Allow-Headers", v, sizeof v));
    const char *need[] = {"Authorization", "Content-Type", "Connect-Protocol-Version",
                          "Last-Event-ID"};
    for (size_t i = 0; i < 4; i++)
        assert_non_null(strstr(v, need[i]));
    assert_true(resp_header(&r, "Access-Control-Max-Age", v, sizeof v));
    assert_true(resp_header(&r, "Vary", v, sizeof v));
    assert_non_null(strstr(v, "Origin"));
    resp_free(&r);
    /* Preflight from elsewhere: no CORS headers at all. */
    assert_true(raw(ts.port,
                    "OPTIONS /hello HTTP/1.1\r\nOrigin: http://evil.example\r\n"
                    "Access-Control-Request-Method: POST\r\n\r\n",
                    &r));
    assert_int_equal(r.status, 204);
    assert_false(resp_header(&r, "Access-Control-Allow-Origin", v, sizeof v));
    assert_false(resp_header(&r, "Access-Control-Allow-Headers", v, sizeof v));
    resp_free(&r);
    /* A plain OPTIONS (not a preflight) is routed as usual. */
    assert_true(raw(ts.port, "OPTIONS /hello HTTP/1.1\r\n\r\n", &r));
    assert_int_equal(r.status, 405);
    resp_free(&r);
    ts_stop(&ts);
    mc_http_cors_free(g_cors);
}

/* ---- Auth ---- */

static void h_auth(mc_http_request *req, void *ctx)
{
    switch (mc_http_request_check_bearer(req)) {
    case MC_HTTP_AUTH_OK: mc_http_respond_text(req, 200, "text/plain", "ok"); break;
    case MC_HTTP_AUTH_MISSING: mc_http_respond_text(req, 401, "text/plain", "missing"); break;
    case MC_HTTP_AUTH_INVALID: mc_http_respond_text(req, 401, "text/plain", "invalid"); break;
    }
}

static void setup_auth(test_server *ts, void *arg)
{
    mc_error err;
    if (arg != NULL)
        assert_int_equal(mc_http_server_set_bearer_token(ts->srv, arg, &err), MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/private", h_auth, NULL, &err),
                     MC_OK);
}

static const char *auth_get(uint16_t port, const char *hdr, char *buf, size_t cap)
{
    response r;
    assert_true(http_get(port, "/private", hdr, &r));
    snprintf(buf, cap, "%d %s", r.status, r.body);
    resp_free(&r);
    return buf;
}

static void test_bearer(void **state)
{
    assert_true(mc_http_auth_token_equal("abc", 3, "abc", 3));
    assert_false(mc_http_auth_token_equal("abc", 3, "abd", 3));
    assert_false(mc_http_auth_token_equal("abc", 3, "abcd", 4));
    assert_false(mc_http_auth_token_equal("", 0, "a", 1));
    test_server ts;
    ts_start(&ts, NULL, setup_auth, "tok-123");
    char b[64];
    assert_string_equal(auth_get(ts.port, NULL, b, sizeof b), "401 missing");
    assert_string_equal(auth_get(ts.port, "Authorization: Basic dG9rLTEyMw==\r\n", b, sizeof b),
                        "401 missing");
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer \r\n", b, sizeof b),
                        "401 missing");
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer tok-124\r\n", b, sizeof b),
                        "401 invalid");
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer tok-12\r\n", b, sizeof b),
                        "401 invalid");
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer tok-1234\r\n", b, sizeof b),
                        "401 invalid");
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer tok-123\r\n", b, sizeof b),
                        "200 ok");
    assert_string_equal(auth_get(ts.port, "Authorization: bearer   tok-123 \r\n", b, sizeof b),
                        "200 ok");
    ts_stop(&ts);
    /* No token configured: fail closed. */
    ts_start(&ts, NULL, setup_auth, NULL);
    assert_string_equal(auth_get(ts.port, "Authorization: Bearer anything\r\n", b, sizeof b),
                        "401 invalid");
    ts_stop(&ts);
}

/* ---- Metrics ---- */

static void test_metrics_registration_rules(void **state)
{
    mc_http_metrics *reg;
    mc_error err;
    assert_int_equal(mc_http_metrics_new(&reg, &err), MC_OK);
    mc_http_counter *c;
    mc_http_gauge *g;
    mc_http_histogram *h;
    mc_http_metric_label l1 = {"stage", "detector"}, l2 = {"stage", "agent"};
    assert_int_equal(mc_http_metrics_counter(reg, "x_total", "X", &l1, 1, &c, &err), MC_OK);
    assert_int_equal(mc_http_metrics_counter(reg, "x_total", "X", &l2, 1, &c, &err), MC_OK);
    assert_int_equal(mc_http_metrics_counter(reg, "x_total", "X", &l1, 1, &c, &err),
                     MC_ERR_EXISTS);
    assert_int_equal(mc_http_metrics_counter(reg, "x_total", "other help", &l1, 1, &c, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_http_metrics_gauge(reg, "x_total", "X", NULL, 0, &g, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_http_metrics_counter(reg, "no_suffix", "X", NULL, 0, &c, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_http_metrics_counter(reg, "9bad_total", "X", NULL, 0, &c, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_http_metrics_counter(reg, "ok_total", "", NULL, 0, &c, &err),
                     MC_ERR_INVALID);
    mc_http_metric_label bad = {"bad-name", "v"};
    assert_int_equal(mc_http_metrics_gauge(reg, "g", "G", &bad, 1, &g, &err), MC_ERR_INVALID);
    mc_http_metric_label le = {"le", "1"};
    double bounds[] = {0.1, 1};
    assert_int_equal(mc_http_metrics_histogram(reg, "h_seconds", "H", &le, 1, bounds, 2, &h, &err),
                     MC_ERR_INVALID);
    double unsorted[] = {1, 0.1};
    assert_int_equal(
        mc_http_metrics_histogram(reg, "h_seconds", "H", NULL, 0, unsorted, 2, &h, &err),
        MC_ERR_INVALID);
    assert_int_equal(mc_http_metrics_histogram(reg, "h_seconds", "H", NULL, 0, bounds, 2, &h, &err),
                     MC_OK);
    assert_int_equal(mc_http_metrics_gauge(reg, "h_seconds_count", "C", NULL, 0, &g, &err),
                     MC_ERR_INVALID);
    mc_http_metrics_free(reg);
}

static void test_metrics_render_exact(void **state)
{
    mc_http_metrics *reg;
    mc_error err;
    assert_int_equal(mc_http_metrics_new(&reg, &err), MC_OK);
    mc_http_counter *c;
    mc_http_gauge *g;
    mc_http_histogram *h;
    mc_http_metric_label l = {"path", "a\"b\\c\nd"};
    assert_int_equal(mc_http_metrics_counter(reg, "req_total", "Requests\nhandled \\ here", &l, 1,
                                             &c, &err), MC_OK);
    assert_int_equal(mc_http_metrics_gauge(reg, "temp_celsius", "Temperature", NULL, 0, &g, &err),
                     MC_OK);
    double bounds[] = {0.1, 0.5, 2.5};
    assert_int_equal(
        mc_http_metrics_histogram(reg, "lat_seconds", "Latency", NULL, 0, bounds, 3, &h, &err),
        MC_OK);
    mc_http_counter_add(c, 41);
    mc_http_counter_inc(c);
    mc_http_gauge_set(g, 21.5);
    mc_http_gauge_add(g, -1);
    mc_http_histogram_observe(h, 0.05);
    mc_http_histogram_observe(h, 0.1);
    mc_http_histogram_observe(h, 0.3);
    mc_http_histogram_observe(h, 10);
    char *text;
    size_t len;
    assert_int_equal(mc_http_metrics_render(reg, &text, &len, &err), MC_OK);
    assert_string_equal(text,
                        "# HELP req_total Requests\\nhandled \\\\ here\n"
                        "# TYPE req_total counter\n"
                        "req_total{path=\"a\\\"b\\\\c\\nd\"} 42\n"
                        "# HELP temp_celsius Temperature\n"
                        "# TYPE temp_celsius gauge\n"
                        "temp_celsius 20.5\n"
                        "# HELP lat_seconds Latency\n"
                        "# TYPE lat_seconds histogram\n"
                        "lat_seconds_bucket{le=\"0.1\"} 2\n"
                        "lat_seconds_bucket{le=\"0.5\"} 3\n"
                        "lat_seconds_bucket{le=\"2.5\"} 3\n"
                        "lat_seconds_bucket{le=\"+Inf\"} 4\n"
                        "lat_seconds_sum 10.45\n"
                        "lat_seconds_count 4\n");
    assert_int_equal(len, strlen(text));
    free(text);
    mc_http_metrics_free(reg);
}

typedef struct thr_arg {
    mc_http_counter *c;
    mc_http_histogram *h;
    mc_http_gauge *g;
} thr_arg;

static void *hammer(void *p)
{
    thr_arg *a = p;
    for (int i = 0; i < 100000; i++) {
        mc_http_counter_inc(a->c);
        mc_http_histogram_observe(a->h, 1.0);
        mc_http_gauge_add(a->g, 1.0);
    }
    return NULL;
}

static void test_metrics_thread_safe(void **state)
{
    mc_http_metrics *reg;
    mc_error err;
    assert_int_equal(mc_http_metrics_new(&reg, &err), MC_OK);
    thr_arg a;
    double bounds[] = {0.5, 2};
    assert_int_equal(mc_http_metrics_counter(reg, "n_total", "N", NULL, 0, &a.c, &err), MC_OK);
    assert_int_equal(mc_http_metrics_histogram(reg, "v", "V", NULL, 0, bounds, 2, &a.h, &err), MC_OK);
    assert_int_equal(mc_http_metrics_gauge(reg, "g", "G", NULL, 0, &a.g, &err), MC_OK);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, hammer, &a);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(mc_http_counter_value(a.c), 400000);
    assert_true(mc_http_gauge_value(a.g) == 400000.0);
    char *text;
    assert_int_equal(mc_http_metrics_render(reg, &text, NULL, &err), MC_OK);
    assert_non_null(strstr(text, "v_bucket{le=\"2\"} 400000\n"));
    assert_non_null(strstr(text, "v_sum 400000\n"));
    free(text);
    mc_http_metrics_free(reg);
}

static mc_http_metrics *g_reg;

static void setup_metrics(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_metrics_new(&g_reg, &err), MC_OK);
    assert_int_equal(mc_http_server_register_metrics(ts->srv, g_reg, &err), MC_OK);
    mc_http_histogram *h;
    double b[] = {0.005, 0.01, 0.1, 1};
    mc_http_metric_label l[] = {{"stage", "detector"}, {"rule", "cpu \"high\""}};
    assert_int_equal(mc_http_metrics_histogram(g_reg, "microcloud_tick_seconds",
                                               "Time to close a tick", l, 2, b, 4, &h, &err),
                     MC_OK);
    mc_http_histogram_observe(h, 0.007);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/metrics",
                                          mc_http_metrics_handler, g_reg, &err), MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/hello", h_hello, NULL, &err),
                     MC_OK);
}

static void test_metrics_endpoint_passes_promtool(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_metrics, NULL);
    response r;
    assert_true(http_get(ts.port, "/hello", NULL, &r));
    resp_free(&r);
    assert_true(http_get(ts.port, "/nope", NULL, &r));
    resp_free(&r);
    assert_true(http_get(ts.port, "/metrics", NULL, &r));
    assert_int_equal(r.status, 200);
    char v[128];
    assert_true(resp_header(&r, "Content-Type", v, sizeof v));
    assert_string_equal(v, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r.body, "http_responses_total{code=\"2xx\"} 1\n"));
    assert_non_null(strstr(r.body, "http_responses_total{code=\"4xx\"} 1\n"));
    assert_non_null(strstr(r.body, "http_connections_accepted_total 3\n"));
    assert_non_null(strstr(r.body, "http_requests_in_flight 1\n")); /* this very request */
    assert_non_null(strstr(r.body, "http_request_duration_seconds_count 2\n"));
    if (access("/usr/bin/promtool", X_OK) != 0) {
        resp_free(&r);
        ts_stop(&ts);
        mc_http_metrics_free(g_reg);
        skip();
    }
    char path[] = "/tmp/mc-http-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, r.body, r.body_len), (ssize_t)r.body_len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    unlink(path);
    if (rc != 0)
        fail_msg("promtool check metrics failed (%d): %s\n--- input ---\n%s", rc, out, r.body);
    resp_free(&r);
    ts_stop(&ts);
    mc_http_metrics_free(g_reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cors_config),
        cmocka_unit_test(test_cors_requests),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_metrics_registration_rules),
        cmocka_unit_test(test_metrics_render_exact),
        cmocka_unit_test(test_metrics_thread_safe),
        cmocka_unit_test(test_metrics_endpoint_passes_promtool),
    };
    return cmocka_run_group_tests_name("http_misc", tests, NULL, NULL);
}
