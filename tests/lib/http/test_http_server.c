/* lib/http server: keep-alive, pipelining, limits, timeouts, connection
 * bound, async responses, graceful shutdown, routing, memory connections.
 * Real sockets on 127.0.0.1 with the server loop in a thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "http/server.h"
#include "http_test_util.h"

/* ---- Handlers ---- */

static void h_hello(mc_http_request *req, void *ctx)
{
    mc_http_respond_text(req, 200, "text/plain", "hello");
}

static void h_echo(mc_http_request *req, void *ctx)
{
    size_t n;
    const uint8_t *b = mc_http_request_body(req, &n);
    mc_http_respond(req, 200, "application/octet-stream", b, n);
}

typedef struct later {
    uv_timer_t t;
    mc_http_request *req;
    char body[64];
} later;

static void later_closed(uv_handle_t *h)
{
    free(h->data);
}

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    mc_http_respond_text(l->req, 200, "text/plain", l->body);
    uv_close((uv_handle_t *)&l->t, later_closed);
}

/* Answers after ctx milliseconds (async handler). */
static void h_async(mc_http_request *req, void *ctx)
{
    later *l = calloc(1, sizeof *l);
    l->req = req;
    snprintf(l->body, sizeof l->body, "async %s", mc_http_request_query(req));
    uv_timer_init(mc_http_server_loop(mc_http_request_server(req)), &l->t);
    l->t.data = l;
    uv_timer_start(&l->t, later_fire, (uint64_t)(uintptr_t)ctx, 0);
}

static void setup_routes(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET | MC_HTTP_HEAD, "/hello", h_hello,
                                          NULL, &err), MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_POST, "/echo", h_echo, NULL, &err),
                     MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/async", h_async,
                                          (void *)(uintptr_t)100, &err), MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/slow", h_async,
                                          (void *)(uintptr_t)400, &err), MC_OK);
    assert_int_equal(mc_http_server_route(ts->srv, MC_HTTP_GET, "/hello", h_hello, NULL, &err),
                     MC_ERR_EXISTS);
    assert_int_equal(mc_http_server_add_health(ts->srv, NULL, NULL, &err), MC_OK);
}

static mc_http_server_config small_cfg(void)
{
    return (mc_http_server_config){
        .max_body_bytes = 64 * 1024,
        .max_header_bytes = 16 * 1024,
        .max_header_count = 64,
        .read_timeout_ms = 300,
        .idle_timeout_ms = 600,
        .shutdown_timeout_ms = 3000,
    };
}

/* ---- Tests ---- */

static void test_keep_alive(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    client c;
    cl_connect(&c, ts.port, 0);
    response r;
    for (int i = 0; i < 3; i++) {
        cl_send_str(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_true(cl_read_response(&c, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        char v[64];
        assert_false(resp_header(&r, "Connection", v, sizeof v)); /* keep-alive is the default */
        assert_true(resp_header(&r, "Date", v, sizeof v));
        resp_free(&r);
    }
    /* HTTP/1.0 with keep-alive asked for gets it said back. */
    cl_send_str(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(cl_read_response(&c, &r));
    char v[64];
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "keep-alive");
    resp_free(&r);
    /* Connection: close is honoured. */
    cl_send_str(&c, "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_true(cl_read_response(&c, &r));
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 3000));
    cl_close(&c);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.connections_accepted, 1);
    assert_int_equal(st.requests, 5);
    ts_stop(&ts);
}

static void test_pipelining_in_order(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    client c;
    cl_connect(&c, ts.port, 0);
    /* The slow async one first: the later ones must wait behind it. */
    cl_send_str(&c, "GET /async?one HTTP/1.1\r\nHost: x\r\n\r\n"
                    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\ntwo!!"
                    "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
                    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nfou\r\n1\r\nr\r\n0\r\n\r\n");
    response r;
    const char *want[] = {"async one", "two!!", "hello", "four"};
    for (int i = 0; i < 4; i++) {
        assert_true(cl_read_response(&c, &r));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, want[i]);
        resp_free(&r);
    }
    cl_close(&c);
    ts_stop(&ts);
}

static void test_body_too_large_413(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    /* Declared length over the limit: refused before the body is read. */
    client c;
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
    char chunk[16384];
    memset(chunk, 'a', sizeof chunk);
    for (int i = 0; i < 8; i++)
        cl_send(&c, chunk, sizeof chunk);
    response r;
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 413);
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 4000));
    cl_close(&c);
    /* Chunked body growing past the limit. */
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    char line[32];
    for (int i = 0; i < 6; i++) {
        snprintf(line, sizeof line, "%zx\r\n", sizeof chunk);
        cl_send_str(&c, line);
        cl_send(&c, chunk, sizeof chunk);
        cl_send_str(&c, "\r\n");
    }
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 413);
    resp_free(&r);
    cl_close(&c);
    /* A body under the limit goes through. */
    cl_connect(&c, ts.port, 0);
    char head[128];
    snprintf(head, sizeof head, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n",
             sizeof chunk);
    cl_send_str(&c, head);
    cl_send(&c, chunk, sizeof chunk);
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, sizeof chunk);
    resp_free(&r);
    cl_close(&c);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.limit_rejections, 2);
    ts_stop(&ts);
}

static void test_headers_too_many_or_large_431(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    client c;
    response r;
    /* 100 headers, limit 64. */
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++) {
        char h[64];
        snprintf(h, sizeof h, "X-H%d: v\r\n", i);
        cl_send_str(&c, h);
    }
    cl_send_str(&c, "\r\n");
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 431);
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 4000));
    cl_close(&c);
    /* One 20 KB header, limit 16 KB. */
    cl_connect(&c, ts.port, 0);
    char *big = malloc(20001);
    memset(big, 'b', 20000);
    big[20000] = '\0';
    cl_send_str(&c, "GET /hello HTTP/1.1\r\nX-Big: ");
    cl_send_str(&c, big);
    cl_send_str(&c, "\r\n\r\n");
    free(big);
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 431);
    resp_free(&r);
    cl_close(&c);
    /* 60 headers are fine. */
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\n");
    for (int i = 0; i < 60; i++) {
        char h[64];
        snprintf(h, sizeof h, "X-H%d: v\r\n", i);
        cl_send_str(&c, h);
    }
    cl_send_str(&c, "\r\n");
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cl_close(&c);
    ts_stop(&ts);
}

static void test_slowloris_read_timeout(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    client c;
    cl_connect(&c, ts.port, 0);
    /* Half a request, then a header line every 60 ms: the timeout (300 ms)
     * counts from the first byte, so trickling does not keep the
     * connection alive. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n");
    bool got = false;
    for (int i = 0; i < 30 && !got; i++) {
        usleep(60 * 1000);
        cl_send_str(&c, "X-Trickle: 1\r\n");
        got = cl_read_until(&c, "\r\n\r\n", 1);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    assert_true(got);
    /* Well before the 30 × 60 ms of trickling would end. */
    if (ms > 1000)
        fail_msg("408 after %ld ms of trickling", ms);
    response r;
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 408);
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 4000));
    cl_close(&c);
    /* An idle keep-alive connection is closed after the idle timeout. */
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\n\r\n");
    assert_true(cl_read_response(&c, &r));
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 3000));
    cl_close(&c);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.timeouts, 2);
    assert_int_equal(st.connections_active, 0);
    ts_stop(&ts);
}

static void test_max_connections_503(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    cfg.max_connections = 2;
    cfg.idle_timeout_ms = 5000;
    ts_start(&ts, &cfg, setup_routes, NULL);
    client a, b, c;
    response r;
    cl_connect(&a, ts.port, 0);
    cl_connect(&b, ts.port, 0);
    cl_send_str(&a, "GET /hello HTTP/1.1\r\n\r\n");
    cl_send_str(&b, "GET /hello HTTP/1.1\r\n\r\n");
    assert_true(cl_read_response(&a, &r));
    resp_free(&r);
    assert_true(cl_read_response(&b, &r));
    resp_free(&r);
    cl_connect(&c, ts.port, 0);
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 503);
    resp_free(&r);
    assert_true(cl_wait_closed(&c, 3000));
    cl_close(&c);
    /* Room again once one leaves. */
    cl_close(&a);
    usleep(100 * 1000);
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\n\r\n");
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cl_close(&c);
    cl_close(&b);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.connections_refused, 1);
    ts_stop(&ts);
}

static void test_routing_404_405_head_health(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    response r;
    assert_true(http_get(ts.port, "/nope", NULL, &r));
    assert_int_equal(r.status, 404);
    resp_free(&r);
    assert_true(http_get(ts.port, "/echo", NULL, &r));
    assert_int_equal(r.status, 405);
    char v[128];
    assert_true(resp_header(&r, "Allow", v, sizeof v));
    assert_string_equal(v, "POST");
    resp_free(&r);
    assert_true(http_get(ts.port, "/hello?x=1", NULL, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_true(http_get(ts.port, "/health", NULL, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    resp_free(&r);
    assert_true(http_get(ts.port, "/ready", NULL, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    client c;
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "HEAD /hello HTTP/1.1\r\n\r\nGET /hello HTTP/1.1\r\n\r\n");
    /* HEAD: Content-Length of the body, no body bytes; the next response
     * follows directly. */
    char buf[2048] = "";
    assert_true(cl_read_until(&c, "hello", 3000));
    assert_non_null(strstr(c.buf, "Content-Length: 5\r\n"));
    const char *second = strstr(c.buf + 4, "HTTP/1.1 200");
    assert_non_null(second);
    snprintf(buf, sizeof buf, "%.*s", (int)(second - c.buf), c.buf);
    assert_null(strstr(buf, "hello"));
    cl_close(&c);
    /* Garbage gets 400 and a close. */
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /hello HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_true(cl_read_response(&c, &r));
    assert_int_equal(r.status, 400);
    resp_free(&r);
    cl_close(&c);
    ts_stop(&ts);
}

static bool not_ready(void *ctx, const char **reason)
{
    *reason = "db \"down\"";
    return false;
}

static void setup_not_ready(test_server *ts, void *arg)
{
    mc_error err;
    assert_int_equal(mc_http_server_add_health(ts->srv, not_ready, NULL, &err), MC_OK);
}

static void test_ready_hook(void **state)
{
    test_server ts;
    ts_start(&ts, NULL, setup_not_ready, NULL);
    response r;
    assert_true(http_get(ts.port, "/ready", NULL, &r));
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "{\"status\":\"not_ready\",\"reason\":\"db \\\"down\\\"\"}");
    resp_free(&r);
    ts_stop(&ts);
}

static void test_async_and_client_gone(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    response r;
    assert_true(http_get(ts.port, "/async?x", NULL, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "async x");
    resp_free(&r);
    /* The client leaves while the handler works: the late response is
     * dropped and the request released. */
    client c;
    cl_connect(&c, ts.port, 0);
    cl_send_str(&c, "GET /slow HTTP/1.1\r\n\r\n");
    usleep(50 * 1000);
    cl_close(&c);
    usleep(600 * 1000);
    mc_http_server_stats st;
    ts_stats(&ts, &st);
    assert_int_equal(st.requests_in_flight, 0);
    assert_int_equal(st.connections_active, 0);
    ts_stop(&ts);
}

static void test_graceful_shutdown(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, setup_routes, NULL);
    client busy, idle;
    cl_connect(&idle, ts.port, 0);
    cl_send_str(&idle, "GET /hello HTTP/1.1\r\n\r\n");
    response r;
    assert_true(cl_read_response(&idle, &r));
    resp_free(&r);
    cl_connect(&busy, ts.port, 0);
    cl_send_str(&busy, "GET /slow HTTP/1.1\r\n\r\n");
    usleep(100 * 1000);
    ts_shutdown_async(&ts);
    /* The idle keep-alive connection is closed at once. */
    assert_true(cl_wait_closed(&idle, 2000));
    assert_false(ts.done);
    /* The request in flight completes, told that the connection closes. */
    assert_true(cl_read_response(&busy, &r));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "async ");
    char v[32];
    assert_true(resp_header(&r, "Connection", v, sizeof v));
    assert_string_equal(v, "close");
    resp_free(&r);
    assert_true(cl_wait_closed(&busy, 3000));
    assert_true(ts_wait_done(&ts, 3000));
    assert_false(ts.done_forced);
    cl_close(&busy);
    cl_close(&idle);
    ts_stop(&ts);
}

static void on_signal_done(mc_http_server *srv, bool forced, void *ctx)
{
    test_server *ts = ctx;
    pthread_mutex_lock(&ts->mu);
    ts->done = true;
    pthread_cond_broadcast(&ts->cv);
    pthread_mutex_unlock(&ts->mu);
}

static void install_signals_done(test_server *ts, void *arg)
{
    mc_error err;
    setup_routes(ts, arg);
    assert_int_equal(mc_http_server_handle_signals(ts->srv, on_signal_done, ts, &err), MC_OK);
}

static void test_sigterm_graceful(void **state)
{
    test_server ts;
    mc_http_server_config cfg = small_cfg();
    ts_start(&ts, &cfg, install_signals_done, NULL);
    client busy;
    cl_connect(&busy, ts.port, 0);
    cl_send_str(&busy, "GET /slow HTTP/1.1\r\n\r\n");
    usleep(100 * 1000);
    kill(getpid(), SIGTERM);
    /* The request in flight still completes; then the server is done and
     * refuses new connections. */
    response r;
    assert_true(cl_read_response(&busy, &r));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    assert_true(ts_wait_done(&ts, 3000));
    cl_close(&busy);
    ts_stop(&ts);
}

static void h_header_x(mc_http_request *req, void *ctx)
{
    const char *v = mc_http_request_header(req, "X-T");
    mc_http_respond_text(req, 200, "text/plain", v ? v : "(none)");
}

static void test_memory_connection(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    mc_http_server *srv;
    mc_error err;
    assert_int_equal(mc_http_server_new_unbound(&loop, NULL, &srv, &err), MC_OK);
    assert_int_equal(mc_http_server_route(srv, MC_HTTP_GET, "/hello", h_hello, NULL, &err), MC_OK);
    mc_http_conn *c;
    assert_int_equal(mc_http_conn_mem_new(srv, &c, &err), MC_OK);
    const char req[] = "GET /hello HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
    /* Byte by byte: the parser must cope with every split. */
    for (size_t i = 0; i < sizeof req - 1; i++)
        mc_http_conn_mem_feed(c, req + i, 1);
    size_t n;
    const uint8_t *out = mc_http_conn_mem_output(c, &n);
    char *s = strndup((const char *)out, n);
    assert_non_null(strstr(s, "HTTP/1.1 200 OK"));
    assert_non_null(strstr(s, "HTTP/1.1 404 Not Found"));
    assert_true(strstr(s, "200 OK") < strstr(s, "404"));
    free(s);
    assert_false(mc_http_conn_mem_closed(c));
    /* A chunked body with a trailer field: readable like a header. */
    assert_int_equal(mc_http_server_route(srv, MC_HTTP_POST, "/t", h_header_x, NULL, &err), MC_OK);
    const char chunked[] = "POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "2\r\nab\r\n0\r\nX-T: trailer-value\r\n\r\n";
    mc_http_conn_mem_feed(c, chunked, sizeof chunked - 1);
    out = mc_http_conn_mem_output(c, &n);
    s = strndup((const char *)out, n);
    assert_non_null(strstr(s, "\r\n\r\ntrailer-value"));
    free(s);
    mc_http_conn_mem_feed(c, "\x01garbage", 8);
    assert_true(mc_http_conn_mem_closed(c));
    mc_http_conn_mem_free(c);
    mc_http_server_free(srv);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_body_too_large_413),
        cmocka_unit_test(test_headers_too_many_or_large_431),
        cmocka_unit_test(test_slowloris_read_timeout),
        cmocka_unit_test(test_max_connections_503),
        cmocka_unit_test(test_routing_404_405_head_health),
        cmocka_unit_test(test_ready_hook),
        cmocka_unit_test(test_async_and_client_gone),
        cmocka_unit_test(test_graceful_shutdown),
        cmocka_unit_test(test_sigterm_graceful),
        cmocka_unit_test(test_memory_connection),
    };
    return cmocka_run_group_tests_name("http_server", tests, NULL, NULL);
}
