/* HTTP/1.1 server on llhttp and libuv.
 *
 * One server owns a listening socket on a libuv loop and every connection
 * accepted from it. Everything runs on the loop thread: handlers are called
 * there and every function of this header must be called there too (a NATS
 * or worker thread hands its result to the loop with uv_async_send first).
 *
 * Requests are parsed by llhttp with hard bounds on the request line and
 * headers (431), the header count (431) and the body (413); a request that
 * is not complete within read_timeout_ms of its first byte gets 408 and the
 * connection is closed, and a keep-alive connection idle for
 * idle_timeout_ms is closed. Beyond max_connections a new connection gets a
 * canned 503 and is closed at once.
 *
 * A connection handles one request at a time, in order: while a request is
 * with its handler the server stops reading from that connection, so
 * pipelined requests wait (in at most one read buffer) and are answered in
 * the order they were sent, and a client cannot make the server buffer more
 * than that.
 *
 * Handlers may respond at once or later (after NATS or database work): the
 * mc_http_request stays valid until mc_http_respond (or a helper that
 * responds) is called on it, even if the client went away meanwhile — the
 * response is then dropped. Every request must be responded to exactly
 * once.
 *
 * Routing: exact (method set, path) routes first, then the longest matching
 * prefix route (static files). A known path with another method gets 405
 * with Allow; anything else 404.
 *
 * A connection can also be driven without a socket (mc_http_conn_mem_*),
 * which is how the fuzz target feeds raw bytes through parse, route and
 * dispatch. */
#ifndef MC_HTTP_SERVER_H
#define MC_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "status/status.h"

typedef struct mc_http_server mc_http_server;
typedef struct mc_http_request mc_http_request;
typedef struct mc_http_cors mc_http_cors;
typedef struct mc_http_metrics mc_http_metrics;

/* Methods as a bit set, so a route can accept several. */
enum {
    MC_HTTP_GET = 1u << 0,
    MC_HTTP_HEAD = 1u << 1,
    MC_HTTP_POST = 1u << 2,
    MC_HTTP_PUT = 1u << 3,
    MC_HTTP_DELETE = 1u << 4,
    MC_HTTP_OPTIONS = 1u << 5,
    MC_HTTP_PATCH = 1u << 6,
    MC_HTTP_OTHER = 1u << 7, /* any method not listed above */
    MC_HTTP_ANY = 0xffu
};

/* Server settings. Zero for any field means its default (in brackets). */
typedef struct mc_http_server_config {
    const char *host;             /* listen address ["127.0.0.1"]; "0.0.0.0" for all */
    uint16_t port;                /* 0 picks a free port; see mc_http_server_port */
    size_t max_connections;       /* open connections at once [1024] */
    size_t max_header_bytes;      /* request line + header names and values [16 KiB] */
    size_t max_header_count;      /* header fields per request [64] */
    size_t max_body_bytes;        /* request body [1 MiB] */
    uint64_t read_timeout_ms;     /* first byte to complete request [10 s] */
    uint64_t idle_timeout_ms;     /* keep-alive idle time [60 s] */
    uint64_t shutdown_timeout_ms; /* graceful shutdown before forcing [10 s] */
    size_t max_write_queue_bytes; /* unsent response bytes before closing [8 MiB] */
    size_t sse_max_unsent_bytes;  /* unsent SSE bytes before disconnecting [256 KiB] */
    uint64_t sse_heartbeat_ms;    /* ": ping" comment interval on SSE streams [15 s] */
    int send_buffer_bytes;        /* SO_SNDBUF of accepted sockets; 0 keeps the OS default */
} mc_http_server_config;

/* Counters of the server's life, for tests and /metrics. */
typedef struct mc_http_server_stats {
    uint64_t connections_accepted;
    uint64_t connections_refused; /* over max_connections: 503 */
    uint64_t connections_active;
    uint64_t requests;            /* requests dispatched to a route */
    uint64_t responses_by_class[6]; /* [1]=1xx .. [5]=5xx */
    uint64_t timeouts;            /* read (408) and idle timeouts */
    uint64_t limit_rejections;    /* 413 and 431 */
    uint64_t parse_errors;        /* 400 from the parser */
    uint64_t sse_active;
    uint64_t sse_slow_disconnects;
    uint64_t max_write_queue_seen; /* largest unsent byte count of any connection */
    uint64_t requests_in_flight;  /* dispatched, not yet responded */
} mc_http_server_stats;

typedef void (*mc_http_handler_fn)(mc_http_request *req, void *ctx);
/* Called once when a graceful shutdown has finished. forced is true when
 * shutdown_timeout_ms passed and the remaining connections were closed. */
typedef void (*mc_http_done_fn)(mc_http_server *srv, bool forced, void *ctx);

/* Creates a server bound and listening on cfg's address. loop is borrowed
 * and must outlive the server. cfg NULL uses every default. */
mc_status mc_http_server_new(uv_loop_t *loop, const mc_http_server_config *cfg,
                             mc_http_server **out, mc_error *err);

/* Like mc_http_server_new but without a listening socket: for driving
 * connections from memory (fuzzing, tests). */
mc_status mc_http_server_new_unbound(uv_loop_t *loop, const mc_http_server_config *cfg,
                                     mc_http_server **out, mc_error *err);

/* The bound port (useful with port 0). */
uint16_t mc_http_server_port(const mc_http_server *srv);
uv_loop_t *mc_http_server_loop(const mc_http_server *srv);
void mc_http_server_stats_get(const mc_http_server *srv, mc_http_server_stats *out);

/* Routes. path is copied. methods is a set of MC_HTTP_*. An exact route
 * matches the path (before '?') exactly; a prefix route matches any path
 * starting with prefix, the longest prefix winning. MC_ERR_EXISTS when the
 * same path is already routed, MC_ERR_LIMIT beyond 256 routes. */
mc_status mc_http_server_route(mc_http_server *srv, unsigned methods, const char *path,
                               mc_http_handler_fn fn, void *ctx, mc_error *err);
mc_status mc_http_server_route_prefix(mc_http_server *srv, unsigned methods, const char *prefix,
                                      mc_http_handler_fn fn, void *ctx, mc_error *err);

/* Applies CORS (see cors.h) to every request: preflights are answered
 * before routing, and allowed origins get the CORS headers on every
 * response. cors is borrowed and must outlive the server. */
void mc_http_server_set_cors(mc_http_server *srv, const mc_http_cors *cors);

/* Registers the server's own series (responses by class, request latency,
 * connections, timeouts, limit and parse rejections, SSE streams and
 * slow-client disconnects) in reg and keeps them current. reg must outlive
 * the server. */
mc_status mc_http_server_register_metrics(mc_http_server *srv, mc_http_metrics *reg,
                                          mc_error *err);

/* The bearer token that Connect methods with requires_auth (and
 * mc_http_request_check_bearer in auth.h) compare against. Copied, never
 * logged. With no token set (NULL or ""), every call that requires
 * authentication is refused: the check fails closed. */
mc_status mc_http_server_set_bearer_token(mc_http_server *srv, const char *token,
                                          mc_error *err);

/* Graceful shutdown: stops accepting, closes idle keep-alive connections
 * and SSE streams, lets requests in progress finish (their connections
 * close after the response), and calls done once every connection is
 * closed and every dispatched request was responded to — or, after
 * shutdown_timeout_ms, closes what is left and calls done with forced =
 * true. Calling it again is a no-op. done may be NULL. */
void mc_http_server_shutdown(mc_http_server *srv, mc_http_done_fn done, void *ctx);

/* Installs SIGINT and SIGTERM handlers (uv_signal) on the server's loop
 * that start mc_http_server_shutdown(srv, done, ctx). The handles are
 * closed when shutdown completes, so the loop can end. */
mc_status mc_http_server_handle_signals(mc_http_server *srv, mc_http_done_fn done, void *ctx,
                                        mc_error *err);

/* Frees the server. Call after the loop ran the shutdown to completion
 * (done was called) or for an unbound server after its memory connections
 * were freed; requests a handler still holds are detached and freed when
 * it responds. NULL-safe. The loop must be run once more (uv_run) after
 * this so libuv can finish closing handles. */
void mc_http_server_free(mc_http_server *srv);

/* ---- The request, as a handler sees it ---- */

/* "GET", "POST", ... */
const char *mc_http_request_method(const mc_http_request *req);
unsigned mc_http_request_method_bit(const mc_http_request *req);
/* The path as sent, without the query (percent-encoding kept). */
const char *mc_http_request_path(const mc_http_request *req);
/* The query without '?', or "" when there is none. */
const char *mc_http_request_query(const mc_http_request *req);
/* The value of the first header with this name (case-insensitive), or
 * NULL. Valid as long as the request. */
const char *mc_http_request_header(const mc_http_request *req, const char *name);
size_t mc_http_request_header_count(const mc_http_request *req);
void mc_http_request_header_at(const mc_http_request *req, size_t i, const char **name,
                               const char **value);
/* The body (may contain NULs); *len receives its length. Never NULL. */
const uint8_t *mc_http_request_body(const mc_http_request *req, size_t *len);
/* The server the request came to. */
mc_http_server *mc_http_request_server(const mc_http_request *req);
/* True when the client's connection is gone (the response will be
 * dropped); a slow handler may give up early. */
bool mc_http_request_detached(const mc_http_request *req);
/* Opaque per-request slot for a layer on top (Connect uses it). */
void mc_http_request_set_user(mc_http_request *req, void *user);
void *mc_http_request_user(const mc_http_request *req);

/* Adds a response header (copied) to be sent with the response. Must be
 * called before responding. MC_ERR_INVALID for CR/LF in name or value,
 * MC_ERR_LIMIT beyond 8 KiB of added headers. */
mc_status mc_http_response_header_add(mc_http_request *req, const char *name,
                                      const char *value);

/* Sends the response and releases req (it must not be used after).
 * content_type may be NULL (no Content-Type). body is copied. For HEAD
 * the body is not sent but Content-Length says its length (body may then
 * be NULL with len > 0). */
void mc_http_respond(mc_http_request *req, int status, const char *content_type,
                     const void *body, size_t len);
/* Same, taking ownership of a malloc'd body (no copy). */
void mc_http_respond_owned(mc_http_request *req, int status, const char *content_type,
                           void *body, size_t len);
/* A short response: body is a NUL-terminated string. */
void mc_http_respond_text(mc_http_request *req, int status, const char *content_type,
                          const char *body);

/* The reason phrase of a status ("Not Found"); "Unknown" if not known. */
const char *mc_http_status_reason(int status);

/* ---- Health ---- */

/* Returns true when the service can serve; on false may set *reason to a
 * static or ctx-owned string. */
typedef bool (*mc_http_ready_fn)(void *ctx, const char **reason);

/* GET /health: 200 {"status":"ok"} while the loop runs; GET /ready: 200
 * {"status":"ready"} when ready(ctx) says so, else 503
 * {"status":"not_ready","reason":...}. ready NULL means always ready. */
mc_status mc_http_server_add_health(mc_http_server *srv, mc_http_ready_fn ready, void *ctx,
                                    mc_error *err);

/* ---- Connections without a socket (fuzzing, tests) ---- */

typedef struct mc_http_conn mc_http_conn;

/* A connection whose output goes to memory (kept up to 1 MiB, the rest
 * counted and dropped). No timers run on it. */
mc_status mc_http_conn_mem_new(mc_http_server *srv, mc_http_conn **out, mc_error *err);
/* Feeds bytes as if they were read from the socket; handlers run inside. */
void mc_http_conn_mem_feed(mc_http_conn *conn, const void *data, size_t len);
/* Everything the server wrote so far. */
const uint8_t *mc_http_conn_mem_output(const mc_http_conn *conn, size_t *len);
/* True once the server decided to close this connection. */
bool mc_http_conn_mem_closed(const mc_http_conn *conn);
/* Closes (if not yet) and frees the connection. NULL-safe. */
void mc_http_conn_mem_free(mc_http_conn *conn);

#endif
