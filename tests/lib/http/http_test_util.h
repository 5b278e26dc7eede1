/* Test harness for lib/http: a server running its loop in a thread, and a
 * blocking socket client that speaks just enough HTTP/1.1 to check
 * responses byte by byte. */
#ifndef MC_TEST_HTTP_UTIL_H
#define MC_TEST_HTTP_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/server.h"

typedef struct test_server test_server;
typedef void (*ts_fn)(test_server *ts, void *arg);

struct test_server {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    mc_http_server *srv;
    uint16_t port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ts_fn call_fn;
    void *call_arg;
    bool call_pending;
    bool done;        /* shutdown completed */
    bool done_forced;
    void *user;       /* for the test */
};

/* Creates the server with cfg (port 0 on 127.0.0.1), runs setup(ts, arg) to
 * add routes, then runs the loop in a thread. */
void ts_start(test_server *ts, const mc_http_server_config *cfg, ts_fn setup, void *arg);
/* Runs fn(ts, arg) on the loop thread and waits for it. */
void ts_call(test_server *ts, ts_fn fn, void *arg);
/* Starts a graceful shutdown on the loop thread (returns at once). */
void ts_shutdown_async(test_server *ts);
/* Waits until the shutdown's done callback ran (up to timeout_ms). */
bool ts_wait_done(test_server *ts, int timeout_ms);
/* Graceful shutdown (if not started), joins the thread, frees everything. */
void ts_stop(test_server *ts);
void ts_stats(test_server *ts, mc_http_server_stats *out);

typedef struct client {
    int fd;
    char *buf;
    size_t len, cap;
} client;

typedef struct response {
    int status;
    char head[16384];
    char *body;
    size_t body_len;
} response;

/* Connects to 127.0.0.1:port; receive timeout 5 s. rcvbuf > 0 sets
 * SO_RCVBUF before connecting. */
void cl_connect(client *c, uint16_t port, int rcvbuf);
void cl_send(client *c, const void *data, size_t len);
void cl_send_str(client *c, const char *s);
/* Reads one response (Content-Length or close-delimited). Returns false on
 * EOF/timeout before a complete response. */
bool cl_read_response(client *c, response *r);
/* Reads whatever comes until the peer closes; true when it closed (EOF or
 * reset) within timeout_ms. */
bool cl_wait_closed(client *c, int timeout_ms);
/* Reads until the buffered input contains needle or timeout; returns true
 * when found. The buffer keeps everything read. */
bool cl_read_until(client *c, const char *needle, int timeout_ms);
void cl_close(client *c);
void resp_free(response *r);
/* Copies the value of a response header (case-insensitive) into out;
 * false when absent. */
bool resp_header(const response *r, const char *name, char *out, size_t cap);

/* One request on a fresh connection. */
bool http_get(uint16_t port, const char *path, const char *extra_headers, response *r);

/* Memory usage helper: current RSS of this process in KiB. */
long rss_kib(void);

#endif
