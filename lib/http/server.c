/* HTTP/1.1 server: connections, parsing, limits, timeouts, routing and
 * shutdown. See server.h for the behaviour; comments here say why. */
#include "http/server.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <llhttp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "http/cors.h"
#include "http/internal.h"
#include "http/metrics.h"
#include "log/log.h"

#define MAX_ROUTES 256
#define READ_BUF_BYTES 65536
#define MAX_RESP_HEADER_BYTES 8192
#define MEM_OUT_MAX (1u << 20)
/* After the last response on a connection that will close, the server
 * keeps reading (and discarding) for this long after sending FIN: closing
 * with unread input makes the kernel send RST, which can destroy the
 * response before the client reads it (a 413 to a client still sending its
 * body). */
#define LINGER_MS 2000
#define LINGER_MAX_BYTES (1u << 20)

typedef enum { TIMER_NONE, TIMER_IDLE, TIMER_READ, TIMER_LINGER, TIMER_STREAM } timer_mode;

typedef struct hdr_span {
    size_t name_off, name_len, value_off, value_len;
} hdr_span;

struct mc_http_request {
    mc_http_server *srv;
    mc_http_conn *conn; /* NULL once the connection is gone */
    mc_http_request *live_prev, *live_next;
    unsigned method_bit;
    uint8_t llmethod;
    uint8_t http_minor;
    bool keep_alive;
    bool dispatched;
    bool upgrade;
    char *arena; /* url \0 name \0 value \0 ... */
    size_t arena_len, arena_cap;
    size_t url_off, url_len;
    hdr_span *hdr;
    size_t nhdr, hdr_cap;
    int last_cb; /* 0 none, 1 header field, 2 header value */
    char *path, *query;
    uint8_t *body;
    size_t body_len, body_cap;
    char *resp_hdrs;
    size_t resp_len;
    void *user;
    uint64_t dispatch_ns; /* uv_hrtime at dispatch, for the latency histogram */
};

typedef struct write_req {
    uv_write_t w;
    mc_http_conn *conn;
    uv_buf_t bufs[2];
    void *owned[2];
    mc_http_blob *blob;
    size_t total;
} write_req;

struct mc_http_conn {
    mc_http_server *srv;
    mc_http_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    bool mem;
    llhttp_t parser;
    mc_http_request *cur;    /* being parsed */
    mc_http_request *active; /* with its handler */
    uint8_t *in;
    size_t in_len, in_cap;
    size_t queued; /* bytes in uv_write requests not yet completed */
    unsigned writes;
    timer_mode tmode;
    bool closing;
    bool close_after; /* close once the current response is written */
    bool lingering;
    bool reading;
    bool processing;
    bool eof;
    bool in_message; /* a request has begun and is not complete */
    int error_status; /* set by a parser callback that hit a limit */
    size_t linger_bytes;
    /* Streaming response (SSE). */
    const mc_http_stream_ops *sops;
    void *stream;
    uint64_t tick_ms;
    /* Memory connections. */
    uint8_t *mem_out;
    size_t mem_len, mem_cap, mem_dropped;
};

typedef struct route {
    unsigned methods;
    bool prefix;
    char *path;
    size_t path_len;
    mc_http_handler_fn fn;
    void *ctx;
} route;

typedef struct cleanup {
    void (*fn)(void *);
    void *ptr;
} cleanup;

typedef struct srv_metrics {
    mc_http_counter *responses[6];
    mc_http_counter *accepted, *refused, *timeouts, *limits, *parse_errors, *sse_slow;
    mc_http_gauge *active, *sse_active, *in_flight;
    mc_http_histogram *duration;
} srv_metrics;

struct mc_http_server {
    uv_loop_t *loop;
    mc_http_server_config cfg;
    char host[64];
    bool bound;
    uv_tcp_t listener;
    uv_timer_t shutdown_timer;
    uv_signal_t sigint, sigterm;
    bool signals_on;
    int open_handles; /* server-level handles being closed */
    llhttp_settings_t settings;
    route routes[MAX_ROUTES];
    size_t nroutes;
    cleanup *cleanups;
    size_t ncleanups;
    mc_http_conn *conns;
    size_t nconns; /* including connections being closed */
    mc_http_request *live; /* dispatched, not responded */
    mc_http_server_stats stats;
    const mc_http_cors *cors;
    mc_http_metrics *metrics;
    srv_metrics m;
    char *token;
    size_t token_len;
    bool shutting_down, done_called, free_requested;
    mc_http_done_fn done;
    void *done_ctx;
    mc_http_ready_fn ready;
    void *ready_ctx;
    uint8_t read_buf[READ_BUF_BYTES];
    bool read_buf_busy;
    time_t date_sec;
    char date[40];
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static void *xrealloc_grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(p, nc * elem);
    if (np == NULL)
        return NULL;
    *cap = nc;
    return np;
}

mc_http_blob *mc_http__blob_new(const void *data, size_t len)
{
    mc_http_blob *b = malloc(sizeof *b + len);
    if (b == NULL)
        return NULL;
    b->refs = 1;
    b->len = len;
    if (len > 0)
        memcpy(b->data, data, len);
    return b;
}

void mc_http__blob_unref(mc_http_blob *b)
{
    if (b != NULL && --b->refs == 0)
        free(b);
}

const char *mc_http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

static unsigned method_bit_of(uint8_t m)
{
    switch (m) {
    case HTTP_GET: return MC_HTTP_GET;
    case HTTP_HEAD: return MC_HTTP_HEAD;
    case HTTP_POST: return MC_HTTP_POST;
    case HTTP_PUT: return MC_HTTP_PUT;
    case HTTP_DELETE: return MC_HTTP_DELETE;
    case HTTP_OPTIONS: return MC_HTTP_OPTIONS;
    case HTTP_PATCH: return MC_HTTP_PATCH;
    default: return MC_HTTP_OTHER;
    }
}

static const char *http_date(mc_http_server *srv)
{
    time_t now = time(NULL);
    if (now != srv->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(srv->date, sizeof srv->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        srv->date_sec = now;
    }
    return srv->date;
}

static void srv_count_response(mc_http_server *srv, int status)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    srv->stats.responses_by_class[cls]++;
    mc_http_counter_inc(srv->m.responses[cls]);
}

static void srv_set_gauges(mc_http_server *srv)
{
    mc_http_gauge_set(srv->m.active, (double)srv->stats.connections_active);
    mc_http_gauge_set(srv->m.sse_active, (double)srv->stats.sse_active);
    mc_http_gauge_set(srv->m.in_flight, (double)srv->stats.requests_in_flight);
}

static void srv_check_done(mc_http_server *srv);
static void srv_maybe_free(mc_http_server *srv);
static void srv_close_handle(mc_http_server *srv, uv_handle_t *h);

/* ------------------------------------------------------------------ */
/* Requests                                                             */

static mc_http_request *req_new(mc_http_server *srv, mc_http_conn *conn)
{
    mc_http_request *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    return r;
}

static void req_free(mc_http_request *r)
{
    if (r == NULL)
        return;
    free(r->arena);
    free(r->hdr);
    free(r->path);
    free(r->query);
    free(r->body);
    free(r->resp_hdrs);
    free(r);
}

/* Removes a dispatched request from the server's live list. */
static void req_unlive(mc_http_request *r)
{
    mc_http_server *srv = r->srv;
    if (!r->dispatched || srv == NULL)
        return;
    if (r->live_prev)
        r->live_prev->live_next = r->live_next;
    else
        srv->live = r->live_next;
    if (r->live_next)
        r->live_next->live_prev = r->live_prev;
    r->live_prev = r->live_next = NULL;
    r->dispatched = false;
    srv->stats.requests_in_flight--;
    srv_set_gauges(srv);
}

/* Appends to the request's arena. The byte after the data is always a NUL
 * (not counted), so the last piece is a C string even when no separator
 * follows it (chunked trailers arrive after the headers were closed). */
static bool arena_append(mc_http_request *r, const char *at, size_t len)
{
    char *na = xrealloc_grow(r->arena, &r->arena_cap, r->arena_len + len + 1, 1);
    if (na == NULL)
        return false;
    r->arena = na;
    memcpy(r->arena + r->arena_len, at, len);
    r->arena_len += len;
    r->arena[r->arena_len] = '\0';
    return true;
}

static bool arena_nul(mc_http_request *r)
{
    return arena_append(r, "", 1);
}

const char *mc_http_request_method(const mc_http_request *req)
{
    return llhttp_method_name((llhttp_method_t)req->llmethod);
}

unsigned mc_http_request_method_bit(const mc_http_request *req)
{
    return req->method_bit;
}

const char *mc_http_request_path(const mc_http_request *req)
{
    return req->path ? req->path : "/";
}

const char *mc_http_request_query(const mc_http_request *req)
{
    return req->query ? req->query : "";
}

const char *mc_http_request_header(const mc_http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nhdr; i++)
        if (strcasecmp(req->arena + req->hdr[i].name_off, name) == 0)
            return req->arena + req->hdr[i].value_off;
    return NULL;
}

size_t mc_http_request_header_count(const mc_http_request *req)
{
    return req->nhdr;
}

void mc_http_request_header_at(const mc_http_request *req, size_t i, const char **name,
                               const char **value)
{
    if (i >= req->nhdr) {
        *name = *value = NULL;
        return;
    }
    *name = req->arena + req->hdr[i].name_off;
    *value = req->arena + req->hdr[i].value_off;
}

const uint8_t *mc_http_request_body(const mc_http_request *req, size_t *len)
{
    static const uint8_t empty[1];
    *len = req->body_len;
    return req->body ? req->body : empty;
}

mc_http_server *mc_http_request_server(const mc_http_request *req)
{
    return req->srv;
}

bool mc_http_request_detached(const mc_http_request *req)
{
    return req->conn == NULL || req->conn->closing;
}

void mc_http_request_set_user(mc_http_request *req, void *user)
{
    req->user = user;
}

void *mc_http_request_user(const mc_http_request *req)
{
    return req->user;
}

static bool token_ok(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++)
        if (*s <= 32 || *s >= 127 || *s == ':')
            return false;
    return true;
}

mc_status mc_http_response_header_add(mc_http_request *req, const char *name, const char *value)
{
    if (!token_ok(name) || strpbrk(value, "\r\n") != NULL)
        return MC_ERR_INVALID;
    size_t add = strlen(name) + 2 + strlen(value) + 2;
    if (req->resp_len + add > MAX_RESP_HEADER_BYTES)
        return MC_ERR_LIMIT;
    char *n = realloc(req->resp_hdrs, req->resp_len + add + 1);
    if (n == NULL)
        return MC_ERR_NOMEM;
    req->resp_hdrs = n;
    snprintf(n + req->resp_len, add + 1, "%s: %s\r\n", name, value);
    req->resp_len += add;
    return MC_OK;
}

/* ------------------------------------------------------------------ */
/* Connections: writes, timers, closing                                 */

static void conn_process(mc_http_conn *c);
static void conn_update_reading(mc_http_conn *c);
static void conn_arm_timer(mc_http_conn *c, timer_mode mode);

static void conn_handle_closed(uv_handle_t *h)
{
    mc_http_conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    mc_http_server *srv = c->srv;
    free(c->in);
    free(c);
    srv->nconns--;
    srv_check_done(srv);
    srv_maybe_free(srv);
}

void mc_http__conn_close(mc_http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    mc_http_server *srv = c->srv;
    req_free(c->cur);
    c->cur = NULL;
    if (c->active != NULL) {
        /* The handler still holds it: detach, it is freed when answered. */
        c->active->conn = NULL;
        c->active = NULL;
    }
    if (c->sops != NULL) {
        const mc_http_stream_ops *ops = c->sops;
        c->sops = NULL;
        srv->stats.sse_active--;
        ops->on_close(c->stream);
        c->stream = NULL;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->stats.connections_active--;
    srv_set_gauges(srv);
    if (c->mem)
        return; /* freed by mc_http_conn_mem_free */
    uv_timer_stop(&c->timer);
    c->open_handles = 2;
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
}

size_t mc_http__conn_queued(const mc_http_conn *c)
{
    return c->queued;
}

static void linger_shutdown_cb(uv_shutdown_t *s, int status)
{
    mc_http_conn *c = s->data;
    free(s);
    /* A canceled shutdown means the connection is being closed already. */
    if (status == UV_ECANCELED || c->closing)
        return;
    if (status != 0 || c->eof)
        mc_http__conn_close(c);
}

/* Starts the end of a connection whose last response is queued: FIN after
 * the writes, then discard input until EOF or LINGER_MS. */
static void conn_begin_linger(mc_http_conn *c)
{
    if (c->closing || c->lingering)
        return;
    c->lingering = true;
    if (c->mem) {
        mc_http__conn_close(c);
        return;
    }
    uv_shutdown_t *s = malloc(sizeof *s);
    if (s != NULL)
        s->data = c;
    if (s == NULL || uv_shutdown(s, (uv_stream_t *)&c->tcp, linger_shutdown_cb) != 0) {
        free(s);
        mc_http__conn_close(c);
        return;
    }
    conn_arm_timer(c, TIMER_LINGER);
    conn_update_reading(c);
}

static size_t conn_unsent(mc_http_conn *c);

/* Records the largest backlog libuv held for any connection: the bound the
 * SSE test checks. */
static void note_queue(mc_http_conn *c)
{
    size_t u = conn_unsent(c);
    if (u > c->srv->stats.max_write_queue_seen)
        c->srv->stats.max_write_queue_seen = u;
}

static void write_done(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    mc_http_conn *c = wr->conn;
    c->queued -= wr->total;
    c->writes--;
    free(wr->owned[0]);
    free(wr->owned[1]);
    mc_http__blob_unref(wr->blob);
    free(wr);
    if (c->closing)
        return;
    if (status != 0) {
        mc_http__conn_close(c);
        return;
    }
}

/* Queues up to two buffers. owned[i] (may be NULL) are freed after the
 * write, blob is unreferenced. Returns false (and frees what it was given)
 * when the connection is closing or the write failed; the connection is
 * then closed. */
static bool conn_write(mc_http_conn *c, const void *b0, size_t l0, void *own0, const void *b1,
                       size_t l1, void *own1, mc_http_blob *blob)
{
    if (c->closing) {
        free(own0);
        free(own1);
        mc_http__blob_unref(blob);
        return false;
    }
    if (c->mem) {
        const void *bs[2] = {b0, b1};
        size_t ls[2] = {l0, l1};
        for (int i = 0; i < 2; i++) {
            size_t room = MEM_OUT_MAX - c->mem_len;
            size_t n = ls[i] < room ? ls[i] : room;
            if (n > 0) {
                uint8_t *no = xrealloc_grow(c->mem_out, &c->mem_cap, c->mem_len + n, 1);
                if (no != NULL) {
                    c->mem_out = no;
                    memcpy(c->mem_out + c->mem_len, bs[i], n);
                    c->mem_len += n;
                } else {
                    n = 0;
                }
            }
            c->mem_dropped += ls[i] - n;
        }
        free(own0);
        free(own1);
        mc_http__blob_unref(blob);
        return true;
    }
    write_req *wr = calloc(1, sizeof *wr);
    if (wr == NULL) {
        free(own0);
        free(own1);
        mc_http__blob_unref(blob);
        mc_http__conn_close(c);
        return false;
    }
    wr->conn = c;
    unsigned n = 0;
    if (l0 > 0)
        wr->bufs[n++] = uv_buf_init((char *)b0, (unsigned)l0);
    if (l1 > 0)
        wr->bufs[n++] = uv_buf_init((char *)b1, (unsigned)l1);
    wr->owned[0] = own0;
    wr->owned[1] = own1;
    wr->blob = blob;
    wr->total = l0 + l1;
    if (n == 0) {
        free(own0);
        free(own1);
        mc_http__blob_unref(blob);
        free(wr);
        return true;
    }
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, wr->bufs, n, write_done);
    if (rc != 0) {
        free(own0);
        free(own1);
        mc_http__blob_unref(blob);
        free(wr);
        mc_http__conn_close(c);
        return false;
    }
    c->writes++;
    c->queued += wr->total;
    note_queue(c);
    return true;
}

/* The bytes libuv could not hand to the kernel yet. */
static size_t conn_unsent(mc_http_conn *c)
{
    if (c->mem)
        return 0;
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

static void timer_cb(uv_timer_t *t)
{
    mc_http_conn *c = t->data;
    mc_http_server *srv = c->srv;
    if (c->closing)
        return;
    switch (c->tmode) {
    case TIMER_IDLE:
        srv->stats.timeouts++;
        mc_http_counter_inc(srv->m.timeouts);
        mc_http__conn_close(c);
        break;
    case TIMER_READ: {
        /* A slow client (slowloris): tell it, then close. */
        srv->stats.timeouts++;
        mc_http_counter_inc(srv->m.timeouts);
        static const char resp[] = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                                   "Content-Type: text/plain\r\nContent-Length: 16\r\n\r\n"
                                   "request timeout\n";
        srv_count_response(srv, 408);
        req_free(c->cur);
        c->cur = NULL;
        c->in_message = false;
        c->close_after = true;
        c->in_len = 0;
        conn_write(c, resp, sizeof resp - 1, NULL, NULL, 0, NULL, NULL);
        conn_begin_linger(c);
        break;
    }
    case TIMER_LINGER:
        mc_http__conn_close(c);
        break;
    case TIMER_STREAM:
        if (c->sops != NULL && c->sops->on_tick != NULL)
            c->sops->on_tick(c->stream);
        break;
    case TIMER_NONE:
        break;
    }
}

static void conn_arm_timer(mc_http_conn *c, timer_mode mode)
{
    c->tmode = mode;
    if (c->mem || c->closing)
        return;
    const mc_http_server_config *cfg = &c->srv->cfg;
    switch (mode) {
    case TIMER_NONE: uv_timer_stop(&c->timer); break;
    case TIMER_IDLE: uv_timer_start(&c->timer, timer_cb, cfg->idle_timeout_ms, 0); break;
    case TIMER_READ: uv_timer_start(&c->timer, timer_cb, cfg->read_timeout_ms, 0); break;
    case TIMER_LINGER: uv_timer_start(&c->timer, timer_cb, LINGER_MS, 0); break;
    case TIMER_STREAM:
        if (c->tick_ms > 0)
            uv_timer_start(&c->timer, timer_cb, c->tick_ms, c->tick_ms);
        else
            uv_timer_stop(&c->timer);
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Responses                                                            */

/* Finishes the request in flight on c: the next pipelined request may go. */
static void conn_after_response(mc_http_conn *c)
{
    if (c->closing)
        return;
    if (c->close_after) {
        conn_begin_linger(c);
        return;
    }
    if (c->queued > c->srv->cfg.max_write_queue_bytes && conn_unsent(c) > c->srv->cfg.max_write_queue_bytes) {
        /* A client that sends requests and never reads the answers. */
        mc_http__conn_close(c);
        return;
    }
    conn_arm_timer(c, TIMER_IDLE);
    if (!c->processing)
        conn_process(c);
    conn_update_reading(c);
}

static size_t format_head(mc_http_request *req, mc_http_conn *c, int status,
                          const char *content_type, bool has_length, size_t len, bool keep,
                          char **out)
{
    mc_http_server *srv = req->srv;
    size_t cap = 512 + req->resp_len + (content_type ? strlen(content_type) : 0);
    char *h = malloc(cap);
    if (h == NULL)
        return 0;
    int n = snprintf(h, cap, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, mc_http_status_reason(status),
                     http_date(srv));
    if (content_type != NULL)
        n += snprintf(h + n, cap - (size_t)n, "Content-Type: %s\r\n", content_type);
    if (has_length)
        n += snprintf(h + n, cap - (size_t)n, "Content-Length: %zu\r\n", len);
    if (!keep)
        n += snprintf(h + n, cap - (size_t)n, "Connection: close\r\n");
    else if (req->http_minor == 0)
        n += snprintf(h + n, cap - (size_t)n, "Connection: keep-alive\r\n");
    if (req->resp_len > 0) {
        memcpy(h + n, req->resp_hdrs, req->resp_len);
        n += (int)req->resp_len;
    }
    memcpy(h + n, "\r\n", 2);
    n += 2;
    (void)c;
    *out = h;
    return (size_t)n;
}

static void respond_impl(mc_http_request *req, int status, const char *content_type,
                         const void *body, size_t len, void *owned)
{
    if (req == NULL) {
        free(owned);
        return;
    }
    mc_http_server *srv = req->srv;
    mc_http_conn *c = req->conn;
    req_unlive(req);
    if (c == NULL || c->closing || srv == NULL) {
        free(owned);
        req_free(req);
        if (srv != NULL) {
            srv_check_done(srv);
        }
        return;
    }
    if (status < 100 || status > 999)
        status = 500;
    bool keep = req->keep_alive && !req->upgrade && !c->close_after && !srv->shutting_down;
    if (!keep)
        c->close_after = true;
    bool no_body = req->method_bit == MC_HTTP_HEAD || status == 204 || status == 304 ||
                   status < 200;
    char *head = NULL;
    size_t hl = format_head(req, c, status, content_type, status != 204 && status != 304, len,
                            keep, &head);
    srv_count_response(srv, status);
    if (srv->m.duration != NULL)
        mc_http_histogram_observe(srv->m.duration,
                                  (double)(uv_hrtime() - req->dispatch_ns) / 1e9);
    c->active = NULL;
    if (hl == 0) {
        free(owned);
        req_free(req);
        mc_http__conn_close(c);
        srv_check_done(srv);
        return;
    }
    if (no_body || len == 0) {
        free(owned);
        conn_write(c, head, hl, head, NULL, 0, NULL, NULL);
    } else if (owned != NULL) {
        conn_write(c, head, hl, head, owned, len, owned, NULL);
    } else {
        /* Small bodies go in one buffer with the head; large ones are
         * copied once into their own buffer. */
        char *nh = realloc(head, hl + len);
        if (nh == NULL) {
            free(head);
            req_free(req);
            mc_http__conn_close(c);
            srv_check_done(srv);
            return;
        }
        memcpy(nh + hl, body, len);
        conn_write(c, nh, hl + len, nh, NULL, 0, NULL, NULL);
    }
    /* Freed only now: body may point into the request (an echo). */
    req_free(req);
    conn_after_response(c);
    srv_check_done(srv);
}

void mc_http_respond(mc_http_request *req, int status, const char *content_type, const void *body,
                     size_t len)
{
    respond_impl(req, status, content_type, body, len, NULL);
}

void mc_http_respond_owned(mc_http_request *req, int status, const char *content_type, void *body,
                           size_t len)
{
    respond_impl(req, status, content_type, body, len, body);
}

void mc_http_respond_text(mc_http_request *req, int status, const char *content_type,
                          const char *body)
{
    respond_impl(req, status, content_type, body, body ? strlen(body) : 0, NULL);
}

/* Responses the server makes itself for a request it could not parse or
 * accept; the connection closes after them. */
static void conn_send_error(mc_http_conn *c, int status, const char *msg)
{
    mc_http_server *srv = c->srv;
    char buf[512];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\nConnection: close\r\n"
                     "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %zu\r\n\r\n%s\n",
                     status, mc_http_status_reason(status), http_date(srv), strlen(msg) + 1, msg);
    srv_count_response(srv, status);
    req_free(c->cur);
    c->cur = NULL;
    c->in_message = false;
    c->in_len = 0;
    c->close_after = true;
    char *copy = malloc((size_t)n);
    if (copy == NULL) {
        mc_http__conn_close(c);
        return;
    }
    memcpy(copy, buf, (size_t)n);
    conn_write(c, copy, (size_t)n, copy, NULL, 0, NULL, NULL);
    conn_begin_linger(c);
}

/* ------------------------------------------------------------------ */
/* Parser callbacks                                                     */

static mc_http_conn *pconn(llhttp_t *p)
{
    return p->data;
}

static int limit_hit(mc_http_conn *c, int status)
{
    c->error_status = status;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    mc_http_conn *c = pconn(p);
    req_free(c->cur);
    c->cur = req_new(c->srv, c);
    if (c->cur == NULL)
        return limit_hit(c, 503);
    c->in_message = true;
    conn_arm_timer(c, TIMER_READ);
    return 0;
}

static bool header_budget(mc_http_conn *c, size_t add)
{
    return c->cur->arena_len + add <= c->srv->cfg.max_header_bytes;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    mc_http_conn *c = pconn(p);
    if (!header_budget(c, len))
        return limit_hit(c, 431);
    if (!arena_append(c->cur, at, len))
        return limit_hit(c, 503);
    c->cur->url_len += len;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    mc_http_conn *c = pconn(p);
    mc_http_request *r = c->cur;
    if (!header_budget(c, len + 2))
        return limit_hit(c, 431);
    if (r->last_cb != 1) {
        if (r->nhdr >= c->srv->cfg.max_header_count)
            return limit_hit(c, 431);
        /* Terminate the URL or the previous value. */
        if (!arena_nul(r))
            return limit_hit(c, 503);
        hdr_span *nh = xrealloc_grow(r->hdr, &r->hdr_cap, r->nhdr + 1, sizeof *r->hdr);
        if (nh == NULL)
            return limit_hit(c, 503);
        r->hdr = nh;
        r->hdr[r->nhdr] = (hdr_span){.name_off = r->arena_len};
        r->nhdr++;
        r->last_cb = 1;
    }
    if (!arena_append(r, at, len))
        return limit_hit(c, 503);
    r->hdr[r->nhdr - 1].name_len += len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    mc_http_conn *c = pconn(p);
    mc_http_request *r = c->cur;
    if (!header_budget(c, len + 2))
        return limit_hit(c, 431);
    if (r->nhdr == 0)
        return limit_hit(c, 400); /* a value before any name: llhttp never does this */
    if (r->last_cb != 2) {
        if (!arena_nul(r))
            return limit_hit(c, 503);
        r->hdr[r->nhdr - 1].value_off = r->arena_len;
        r->last_cb = 2;
    }
    if (!arena_append(r, at, len))
        return limit_hit(c, 503);
    r->hdr[r->nhdr - 1].value_len += len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    mc_http_conn *c = pconn(p);
    mc_http_request *r = c->cur;
    /* Terminate the last piece; names and values are now C strings. */
    if (!arena_nul(r))
        return limit_hit(c, 503);
    if (r->last_cb == 1 && r->nhdr > 0) {
        /* A name without a value cannot come from llhttp, but be safe. */
        r->hdr[r->nhdr - 1].value_off = r->arena_len - 1;
    }
    r->llmethod = (uint8_t)llhttp_get_method(p);
    r->method_bit = method_bit_of(r->llmethod);
    r->http_minor = llhttp_get_http_minor(p);
    /* The target: origin-form "/path?query", or absolute-form
     * "http://host/path?query" which proxies send. */
    const char *url = r->arena + r->url_off;
    size_t ulen = r->url_len;
    if (ulen >= 7 && (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0)) {
        const char *s = strchr(url + 8 > url + ulen ? url + ulen : url + 7, '/');
        if (s == NULL || s >= url + ulen) {
            url = "/";
            ulen = 1;
        } else {
            ulen -= (size_t)(s - url);
            url = s;
        }
    }
    const char *q = memchr(url, '?', ulen);
    size_t plen = q ? (size_t)(q - url) : ulen;
    r->path = strndup(url, plen);
    r->query = q ? strndup(q + 1, ulen - plen - 1) : strdup("");
    if (r->path == NULL || r->query == NULL)
        return limit_hit(c, 503);
    if (p->flags & F_CONTENT_LENGTH) {
        if (p->content_length > c->srv->cfg.max_body_bytes)
            return limit_hit(c, 413);
    }
    const char *expect = mc_http_request_header(r, "Expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && r->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write(c, cont, sizeof cont - 1, NULL, NULL, 0, NULL, NULL);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    mc_http_conn *c = pconn(p);
    mc_http_request *r = c->cur;
    if (r->body_len + len > c->srv->cfg.max_body_bytes)
        return limit_hit(c, 413);
    uint8_t *nb = xrealloc_grow(r->body, &r->body_cap, r->body_len + len, 1);
    if (nb == NULL)
        return limit_hit(c, 503);
    r->body = nb;
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    mc_http_conn *c = pconn(p);
    c->cur->keep_alive = llhttp_should_keep_alive(p) != 0;
    c->cur->upgrade = llhttp_get_upgrade(p) != 0;
    c->in_message = false;
    /* Stop here: the request is dispatched before the next one is parsed,
     * so pipelined requests run one at a time and in order. */
    return HPE_PAUSED;
}

/* ------------------------------------------------------------------ */
/* Routing and dispatch                                                 */

static void add_cors_and_dispatch(mc_http_conn *c, mc_http_request *r);

static void dispatch(mc_http_conn *c)
{
    mc_http_request *r = c->cur;
    c->cur = NULL;
    mc_http_server *srv = c->srv;
    c->active = r;
    r->dispatched = true;
    r->live_next = srv->live;
    if (srv->live)
        srv->live->live_prev = r;
    srv->live = r;
    r->dispatch_ns = uv_hrtime();
    srv->stats.requests++;
    srv->stats.requests_in_flight++;
    srv_set_gauges(srv);
    conn_arm_timer(c, TIMER_NONE);
    add_cors_and_dispatch(c, r);
}

static void respond_405(mc_http_request *r, unsigned allowed)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{MC_HTTP_GET, "GET"},         {MC_HTTP_HEAD, "HEAD"}, {MC_HTTP_POST, "POST"},
                 {MC_HTTP_PUT, "PUT"},         {MC_HTTP_DELETE, "DELETE"},
                 {MC_HTTP_OPTIONS, "OPTIONS"}, {MC_HTTP_PATCH, "PATCH"}};
    char allow[128] = "";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (allowed & names[i].bit) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, names[i].name);
        }
    }
    mc_http_response_header_add(r, "Allow", allow);
    mc_http_respond_text(r, 405, "text/plain; charset=utf-8", "method not allowed\n");
}

static void route_request(mc_http_server *srv, mc_http_request *r)
{
    const char *path = mc_http_request_path(r);
    size_t plen = strlen(path);
    unsigned allowed = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        route *rt = &srv->routes[i];
        if (rt->prefix || rt->path_len != plen || memcmp(rt->path, path, plen) != 0)
            continue;
        if (rt->methods & r->method_bit) {
            rt->fn(r, rt->ctx);
            return;
        }
        allowed |= rt->methods;
    }
    if (allowed != 0) {
        respond_405(r, allowed);
        return;
    }
    route *best = NULL;
    for (size_t i = 0; i < srv->nroutes; i++) {
        route *rt = &srv->routes[i];
        if (!rt->prefix || rt->path_len > plen || memcmp(rt->path, path, rt->path_len) != 0)
            continue;
        if (!(rt->methods & r->method_bit)) {
            allowed |= rt->methods;
            continue;
        }
        if (best == NULL || rt->path_len > best->path_len)
            best = rt;
    }
    if (best != NULL) {
        best->fn(r, best->ctx);
        return;
    }
    if (allowed != 0) {
        respond_405(r, allowed);
        return;
    }
    mc_http_respond_text(r, 404, "text/plain; charset=utf-8", "not found\n");
}

static void add_cors_and_dispatch(mc_http_conn *c, mc_http_request *r)
{
    mc_http_server *srv = c->srv;
    if (srv->cors != NULL) {
        if (mc_http_cors_handle(srv->cors, r))
            return; /* a preflight, answered */
    }
    route_request(srv, r);
}

/* ------------------------------------------------------------------ */
/* Input processing                                                     */

static void conn_update_reading(mc_http_conn *c)
{
    if (c->mem || c->closing)
        return;
    bool want = !c->eof && (c->active == NULL || c->lingering || c->sops != NULL);
    if (c->close_after && !c->lingering)
        want = false;
    if (want && !c->reading) {
        extern void mc_http__on_read_start(mc_http_conn *);
        mc_http__on_read_start(c);
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void conn_parse_error(mc_http_conn *c, llhttp_errno_t e)
{
    mc_http_server *srv = c->srv;
    int st = c->error_status;
    if (st == 413 || st == 431) {
        srv->stats.limit_rejections++;
        mc_http_counter_inc(srv->m.limits);
        conn_send_error(c, st, st == 413 ? "request body too large" : "request headers too large");
        return;
    }
    if (st == 503) {
        conn_send_error(c, 503, "out of memory");
        return;
    }
    srv->stats.parse_errors++;
    mc_http_counter_inc(srv->m.parse_errors);
    char msg[160];
    snprintf(msg, sizeof msg, "bad request: %s", llhttp_errno_name(e));
    conn_send_error(c, 400, msg);
}

static void conn_process(mc_http_conn *c)
{
    if (c->processing)
        return;
    c->processing = true;
    while (!c->closing && !c->close_after && c->active == NULL && c->sops == NULL &&
           c->in_len > 0) {
        llhttp_errno_t e = llhttp_execute(&c->parser, (const char *)c->in, c->in_len);
        size_t used;
        if (e == HPE_OK) {
            used = c->in_len;
        } else if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - (const char *)c->in);
        } else {
            conn_parse_error(c, e);
            break;
        }
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        if (e == HPE_PAUSED) {
            llhttp_resume(&c->parser);
            dispatch(c);
        } else if (e == HPE_PAUSED_UPGRADE) {
            /* No protocol upgrades here: answer the request, then close
             * (what follows on the wire is not HTTP). */
            c->in_len = 0;
            if (c->cur != NULL && !c->in_message) {
                c->cur->upgrade = true;
                dispatch(c);
            } else {
                c->close_after = true;
                if (c->active == NULL)
                    conn_begin_linger(c);
            }
        }
    }
    c->processing = false;
    if (!c->closing && c->eof && c->active == NULL && c->sops == NULL && !c->lingering) {
        /* The client finished sending: a partial request can never
         * complete, and everything complete has been answered. Close once
         * the answers are written. */
        conn_begin_linger(c);
        return;
    }
    if (!c->closing && c->active == NULL && c->sops == NULL && !c->lingering &&
        !c->close_after) {
        /* The read timer runs from the first byte of a request (armed in
         * on_message_begin) and is never restarted by later bytes, so a
         * client trickling a request cannot hold the connection. */
        if (c->in_message) {
            if (c->tmode != TIMER_READ)
                conn_arm_timer(c, TIMER_READ);
        } else if (c->in_len == 0 && c->tmode != TIMER_IDLE)
            conn_arm_timer(c, TIMER_IDLE);
    }
}

static void conn_input(mc_http_conn *c, const uint8_t *data, size_t len)
{
    if (c->closing || len == 0)
        return;
    if (c->lingering || c->sops != NULL) {
        c->linger_bytes += len;
        if (c->lingering && c->linger_bytes > LINGER_MAX_BYTES)
            mc_http__conn_close(c);
        return;
    }
    if (c->close_after)
        return;
    if (c->in_len + len > 4 * READ_BUF_BYTES) {
        /* Only a memory connection fed while a handler works gets here
         * (sockets stop reading); keep the bound all the same. */
        mc_http__conn_close(c);
        return;
    }
    uint8_t *ni = xrealloc_grow(c->in, &c->in_cap, c->in_len + len, 1);
    if (ni == NULL) {
        mc_http__conn_close(c);
        return;
    }
    c->in = ni;
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
    conn_process(c);
    conn_update_reading(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mc_http_conn *c = h->data;
    mc_http_server *srv = c->srv;
    /* libuv calls read_cb right after alloc_cb, so one buffer serves every
     * connection of the loop. */
    if (srv->read_buf_busy) {
        *buf = uv_buf_init(NULL, 0);
        return;
    }
    srv->read_buf_busy = true;
    *buf = uv_buf_init((char *)srv->read_buf, sizeof srv->read_buf);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mc_http_conn *c = s->data;
    mc_http_server *srv = c->srv;
    if (buf->base == (char *)srv->read_buf)
        srv->read_buf_busy = false;
    if (nread > 0) {
        conn_input(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (nread == 0)
        return;
    /* EOF or error. */
    if (c->closing)
        return;
    uv_read_stop(s);
    c->reading = false;
    c->eof = true;
    if (nread != UV_EOF || c->sops != NULL) {
        mc_http__conn_close(c);
        return;
    }
    if (c->lingering) {
        /* Done once our last bytes are out (linger_shutdown_cb). */
        if (c->writes == 0)
            mc_http__conn_close(c);
        return;
    }
    if (c->active == NULL)
        conn_process(c); /* ends the connection when nothing is left to answer */
}

void mc_http__on_read_start(mc_http_conn *c);
void mc_http__on_read_start(mc_http_conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
        c->reading = true;
    else
        mc_http__conn_close(c);
}

/* ------------------------------------------------------------------ */
/* Accepting                                                            */

static mc_http_conn *conn_alloc(mc_http_server *srv, bool mem)
{
    mc_http_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->srv = srv;
    c->mem = mem;
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    c->parser.data = c;
    return c;
}

static void conn_link(mc_http_server *srv, mc_http_conn *c)
{
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    srv->stats.connections_active++;
    srv->stats.connections_accepted++;
    mc_http_counter_inc(srv->m.accepted);
    srv_set_gauges(srv);
}

static void refused_closed(uv_handle_t *h)
{
    free(h);
}

static void on_connection(uv_stream_t *server, int status)
{
    mc_http_server *srv = server->data;
    if (status != 0 || srv->shutting_down)
        return;
    if (srv->stats.connections_active >= srv->cfg.max_connections) {
        /* Over the bound: a short 503 written without queueing (whatever
         * the socket does not take is dropped) and close. */
        uv_tcp_t *t = malloc(sizeof *t);
        if (t == NULL)
            return;
        uv_tcp_init(srv->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0) {
            static const char resp[] =
                "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
                "Content-Type: text/plain\r\nContent-Length: 21\r\n\r\ntoo many connections\n";
            uv_buf_t b = uv_buf_init((char *)resp, sizeof resp - 1);
            uv_try_write((uv_stream_t *)t, &b, 1);
        }
        srv->stats.connections_refused++;
        mc_http_counter_inc(srv->m.refused);
        srv_count_response(srv, 503);
        uv_close((uv_handle_t *)t, refused_closed);
        return;
    }
    mc_http_conn *c = conn_alloc(srv, false);
    if (c == NULL)
        return;
    uv_tcp_init(srv->loop, &c->tcp);
    uv_timer_init(srv->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    conn_link(srv, c);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        mc_http__conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (srv->cfg.send_buffer_bytes > 0) {
        int v = srv->cfg.send_buffer_bytes;
        uv_send_buffer_size((uv_handle_t *)&c->tcp, &v);
    }
    conn_arm_timer(c, TIMER_IDLE);
    conn_update_reading(c);
}

/* ------------------------------------------------------------------ */
/* Streaming responses                                                  */

mc_http_conn *mc_http__stream_begin(mc_http_request *req, int status, const char *content_type,
                                    const mc_http_stream_ops *ops, void *stream,
                                    uint64_t tick_ms)
{
    mc_http_conn *c = req->conn;
    mc_http_server *srv = req->srv;
    if (srv != NULL && srv->shutting_down) {
        mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "shutting down\n");
        return NULL;
    }
    req_unlive(req);
    if (c == NULL || c->closing || srv == NULL) {
        req_free(req);
        if (srv)
            srv_check_done(srv);
        return NULL;
    }
    char *head = NULL;
    /* The body lasts until the connection closes, which the head says. */
    size_t hl = format_head(req, c, status, content_type, false, 0, false, &head);
    srv_count_response(srv, status);
    c->active = NULL;
    req_free(req);
    if (hl == 0) {
        mc_http__conn_close(c);
        return NULL;
    }
    c->in_len = 0;
    if (!conn_write(c, head, hl, head, NULL, 0, NULL, NULL))
        return NULL;
    /* Attached only once the head is queued, so a failure above never
     * calls on_close of a stream the caller is still setting up. */
    c->sops = ops;
    c->stream = stream;
    c->tick_ms = tick_ms;
    srv->stats.sse_active++;
    srv_set_gauges(srv);
    conn_arm_timer(c, TIMER_STREAM);
    conn_update_reading(c);
    return c;
}

bool mc_http__stream_write(mc_http_conn *c, mc_http_blob *b, size_t max_unsent)
{
    if (c->closing)
        return false;
    if (conn_unsent(c) + b->len > max_unsent) {
        mc_http_server *srv = c->srv;
        srv->stats.sse_slow_disconnects++;
        mc_http_counter_inc(srv->m.sse_slow);
        MC_LOG_WARN("http: SSE client too slow, disconnecting",
                    MC_LF_UINT("unsent_bytes", conn_unsent(c)));
        mc_http__conn_close(c);
        return false;
    }
    b->refs++;
    return conn_write(c, b->data, b->len, NULL, NULL, 0, NULL, b);
}

/* ------------------------------------------------------------------ */
/* Server life                                                          */

static void apply_defaults(mc_http_server_config *c)
{
    if (c->max_connections == 0)
        c->max_connections = 1024;
    if (c->max_header_bytes == 0)
        c->max_header_bytes = 16 * 1024;
    if (c->max_header_count == 0)
        c->max_header_count = 64;
    if (c->max_body_bytes == 0)
        c->max_body_bytes = 1024 * 1024;
    if (c->read_timeout_ms == 0)
        c->read_timeout_ms = 10000;
    if (c->idle_timeout_ms == 0)
        c->idle_timeout_ms = 60000;
    if (c->shutdown_timeout_ms == 0)
        c->shutdown_timeout_ms = 10000;
    if (c->max_write_queue_bytes == 0)
        c->max_write_queue_bytes = 8u * 1024 * 1024;
    if (c->sse_max_unsent_bytes == 0)
        c->sse_max_unsent_bytes = 256 * 1024;
    if (c->sse_heartbeat_ms == 0)
        c->sse_heartbeat_ms = 15000;
}

static mc_status server_alloc(uv_loop_t *loop, const mc_http_server_config *cfg,
                              mc_http_server **out, mc_error *err)
{
    *out = NULL;
    if (loop == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "http: no loop");
    mc_http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "http: out of memory");
    srv->loop = loop;
    if (cfg != NULL)
        srv->cfg = *cfg;
    snprintf(srv->host, sizeof srv->host, "%s", cfg && cfg->host ? cfg->host : "127.0.0.1");
    srv->cfg.host = srv->host;
    apply_defaults(&srv->cfg);
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_body = on_body;
    srv->settings.on_message_complete = on_message_complete;
    *out = srv;
    return MC_OK;
}

static void srv_handle_closed(uv_handle_t *h)
{
    mc_http_server *srv = h->data;
    srv->open_handles--;
    srv_check_done(srv);
    srv_maybe_free(srv);
}

mc_status mc_http_server_new_unbound(uv_loop_t *loop, const mc_http_server_config *cfg,
                                     mc_http_server **out, mc_error *err)
{
    return server_alloc(loop, cfg, out, err);
}

mc_status mc_http_server_new(uv_loop_t *loop, const mc_http_server_config *cfg,
                             mc_http_server **out, mc_error *err)
{
    mc_http_server *srv;
    mc_status st = server_alloc(loop, cfg, &srv, err);
    if (st != MC_OK)
        return st;
    struct sockaddr_storage addr;
    int rc = uv_ip4_addr(srv->host, srv->cfg.port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        rc = uv_ip6_addr(srv->host, srv->cfg.port, (struct sockaddr_in6 *)&addr);
    if (rc != 0) {
        free(srv);
        return mc_error_set(err, MC_ERR_INVALID, "http: bad listen address %s", srv->host);
    }
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    srv->bound = true;
    rc = uv_tcp_bind(&srv->listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
    if (rc != 0) {
        st = mc_error_set(err, MC_ERR_IO, "http: cannot listen on %s:%u: %s", srv->host,
                          (unsigned)srv->cfg.port, uv_strerror(rc));
        srv->free_requested = true;
        srv->shutting_down = true;
        srv->done_called = true;
        srv->bound = false;
        srv_close_handle(srv, (uv_handle_t *)&srv->listener);
        /* Freed when the loop runs the close callback. */
        return st;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    if (uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen) == 0) {
        if (bound.ss_family == AF_INET)
            srv->cfg.port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        else
            srv->cfg.port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    }
    *out = srv;
    return MC_OK;
}

uint16_t mc_http_server_port(const mc_http_server *srv)
{
    return srv->cfg.port;
}

uv_loop_t *mc_http_server_loop(const mc_http_server *srv)
{
    return srv->loop;
}

void mc_http_server_stats_get(const mc_http_server *srv, mc_http_server_stats *out)
{
    *out = srv->stats;
}

const mc_http_server_config *mc_http__server_config(const mc_http_server *srv)
{
    return &srv->cfg;
}

const char *mc_http__server_token(const mc_http_server *srv, size_t *len)
{
    *len = srv->token_len;
    return srv->token;
}

mc_status mc_http__server_on_free(mc_http_server *srv, void (*fn)(void *), void *ptr)
{
    cleanup *nc = realloc(srv->cleanups, (srv->ncleanups + 1) * sizeof *nc);
    if (nc == NULL)
        return MC_ERR_NOMEM;
    srv->cleanups = nc;
    nc[srv->ncleanups++] = (cleanup){fn, ptr};
    return MC_OK;
}

static mc_status add_route(mc_http_server *srv, unsigned methods, const char *path, bool prefix,
                           mc_http_handler_fn fn, void *ctx, mc_error *err)
{
    if (path == NULL || path[0] != '/' || fn == NULL || methods == 0)
        return mc_error_set(err, MC_ERR_INVALID, "http: a route needs a path starting with '/', "
                                                 "methods and a handler");
    for (size_t i = 0; i < srv->nroutes; i++) {
        route *rt = &srv->routes[i];
        if (rt->prefix == prefix && strcmp(rt->path, path) == 0 && (rt->methods & methods))
            return mc_error_set(err, MC_ERR_EXISTS, "http: route %s is already registered",
                                path);
    }
    if (srv->nroutes >= MAX_ROUTES)
        return mc_error_set(err, MC_ERR_LIMIT, "http: more than %d routes", MAX_ROUTES);
    char *p = strdup(path);
    if (p == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "http: out of memory");
    srv->routes[srv->nroutes++] = (route){.methods = methods, .prefix = prefix, .path = p,
                                          .path_len = strlen(p), .fn = fn, .ctx = ctx};
    return MC_OK;
}

mc_status mc_http_server_route(mc_http_server *srv, unsigned methods, const char *path,
                               mc_http_handler_fn fn, void *ctx, mc_error *err)
{
    return add_route(srv, methods, path, false, fn, ctx, err);
}

mc_status mc_http_server_route_prefix(mc_http_server *srv, unsigned methods, const char *prefix,
                                      mc_http_handler_fn fn, void *ctx, mc_error *err)
{
    return add_route(srv, methods, prefix, true, fn, ctx, err);
}

void mc_http_server_set_cors(mc_http_server *srv, const mc_http_cors *cors)
{
    srv->cors = cors;
}

mc_status mc_http_server_set_bearer_token(mc_http_server *srv, const char *token, mc_error *err)
{
    if (srv->token != NULL) {
        sodium_memzero(srv->token, srv->token_len);
        free(srv->token);
    }
    srv->token = NULL;
    srv->token_len = 0;
    if (token == NULL || token[0] == '\0')
        return MC_OK;
    srv->token = strdup(token);
    if (srv->token == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "http: out of memory");
    srv->token_len = strlen(token);
    return MC_OK;
}

mc_status mc_http_server_register_metrics(mc_http_server *srv, mc_http_metrics *reg,
                                          mc_error *err)
{
    static const char *const classes[6] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
    mc_status st = MC_OK;
    for (int i = 1; i <= 5 && st == MC_OK; i++) {
        mc_http_metric_label l = {"code", classes[i]};
        st = mc_http_metrics_counter(reg, "http_responses_total",
                                     "HTTP responses sent, by status class", &l, 1,
                                     &srv->m.responses[i], err);
    }
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_connections_accepted_total",
                                     "TCP connections accepted", NULL, 0, &srv->m.accepted, err);
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_connections_refused_total",
                                     "Connections refused over the connection limit", NULL, 0,
                                     &srv->m.refused, err);
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_timeouts_total",
                                     "Connections closed by the read or idle timeout", NULL, 0,
                                     &srv->m.timeouts, err);
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_limit_rejections_total",
                                     "Requests refused for size limits (413, 431)", NULL, 0,
                                     &srv->m.limits, err);
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_parse_errors_total",
                                     "Requests that could not be parsed (400)", NULL, 0,
                                     &srv->m.parse_errors, err);
    if (st == MC_OK)
        st = mc_http_metrics_counter(reg, "http_sse_slow_disconnects_total",
                                     "SSE clients disconnected for not reading", NULL, 0,
                                     &srv->m.sse_slow, err);
    if (st == MC_OK)
        st = mc_http_metrics_gauge(reg, "http_connections", "Open HTTP connections", NULL, 0,
                                   &srv->m.active, err);
    if (st == MC_OK)
        st = mc_http_metrics_gauge(reg, "http_sse_streams", "Open SSE streams", NULL, 0,
                                   &srv->m.sse_active, err);
    if (st == MC_OK)
        st = mc_http_metrics_gauge(reg, "http_requests_in_flight",
                                   "Requests dispatched and not yet answered", NULL, 0,
                                   &srv->m.in_flight, err);
    if (st == MC_OK) {
        /* From dispatch to the response being queued: handler time,
         * including asynchronous work; SSE streams are not counted. */
        static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,   0.25,   0.5,   1,    2.5, 5, 10};
        st = mc_http_metrics_histogram(reg, "http_request_duration_seconds",
                                       "Time from a request's dispatch to its response", NULL, 0,
                                       bounds, sizeof bounds / sizeof bounds[0], &srv->m.duration,
                                       err);
    }
    if (st == MC_OK) {
        srv->metrics = reg;
        srv_set_gauges(srv);
    }
    return st;
}

/* ---- Shutdown ---- */

static void srv_close_handle(mc_http_server *srv, uv_handle_t *h)
{
    if (uv_is_closing(h))
        return;
    h->data = srv;
    srv->open_handles++;
    uv_close(h, srv_handle_closed);
}

static void srv_close_aux_handles(mc_http_server *srv)
{
    if (srv->signals_on) {
        srv->signals_on = false;
        srv_close_handle(srv, (uv_handle_t *)&srv->sigint);
        srv_close_handle(srv, (uv_handle_t *)&srv->sigterm);
    }
    if (srv->shutdown_timer.type == UV_TIMER)
        srv_close_handle(srv, (uv_handle_t *)&srv->shutdown_timer);
}

static void srv_finish(mc_http_server *srv, bool forced)
{
    if (srv->done_called)
        return;
    srv->done_called = true;
    srv_close_aux_handles(srv);
    if (srv->done != NULL)
        srv->done(srv, forced, srv->done_ctx);
}

static void srv_check_done(mc_http_server *srv)
{
    if (!srv->shutting_down || srv->done_called)
        return;
    if (srv->nconns == 0 && srv->stats.requests_in_flight == 0)
        srv_finish(srv, false);
}

static void srv_really_free(mc_http_server *srv)
{
    for (size_t i = 0; i < srv->ncleanups; i++)
        srv->cleanups[i].fn(srv->cleanups[i].ptr);
    free(srv->cleanups);
    for (size_t i = 0; i < srv->nroutes; i++)
        free(srv->routes[i].path);
    if (srv->token) {
        sodium_memzero(srv->token, srv->token_len);
        free(srv->token);
    }
    free(srv);
}

static void srv_maybe_free(mc_http_server *srv)
{
    if (srv->free_requested && srv->open_handles == 0 && srv->nconns == 0)
        srv_really_free(srv);
}

static void shutdown_timeout(uv_timer_t *t)
{
    mc_http_server *srv = t->data;
    MC_LOG_WARN("http: shutdown timeout, closing remaining connections",
                MC_LF_UINT("connections", srv->stats.connections_active),
                MC_LF_UINT("requests_in_flight", srv->stats.requests_in_flight));
    while (srv->conns != NULL)
        mc_http__conn_close(srv->conns);
    srv_finish(srv, true);
}

void mc_http_server_shutdown(mc_http_server *srv, mc_http_done_fn done, void *ctx)
{
    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    srv->done = done;
    srv->done_ctx = ctx;
    if (srv->bound)
        srv_close_handle(srv, (uv_handle_t *)&srv->listener);
    srv->bound = false;
    mc_http_conn *c = srv->conns;
    while (c != NULL) {
        mc_http_conn *next = c->next;
        if (c->sops != NULL) {
            mc_http__conn_close(c); /* SSE streams end now */
        } else if (c->active == NULL && !c->in_message && c->in_len == 0 && !c->mem) {
            /* Idle keep-alive: close, after the last answer is out. */
            if (c->writes == 0)
                mc_http__conn_close(c);
            else
                conn_begin_linger(c);
        }
        /* A request in progress (being read or with its handler) finishes:
         * its response says Connection: close because shutting_down is
         * set, and the connection ends after it. */
        c = next;
    }
    uv_timer_init(srv->loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    uv_timer_start(&srv->shutdown_timer, shutdown_timeout, srv->cfg.shutdown_timeout_ms, 0);
    srv_check_done(srv);
}

static void on_signal(uv_signal_t *s, int signum)
{
    mc_http_server *srv = s->data;
    MC_LOG_INFO("http: signal received, shutting down", MC_LF_INT("signal", signum));
    mc_http_server_shutdown(srv, srv->done, srv->done_ctx);
}

mc_status mc_http_server_handle_signals(mc_http_server *srv, mc_http_done_fn done, void *ctx,
                                        mc_error *err)
{
    if (srv->signals_on)
        return MC_OK;
    srv->done = done;
    srv->done_ctx = ctx;
    uv_signal_init(srv->loop, &srv->sigint);
    uv_signal_init(srv->loop, &srv->sigterm);
    srv->sigint.data = srv;
    srv->sigterm.data = srv;
    int rc = uv_signal_start(&srv->sigint, on_signal, SIGINT);
    if (rc == 0)
        rc = uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    srv->signals_on = true;
    if (rc != 0) {
        srv_close_aux_handles(srv);
        return mc_error_set(err, MC_ERR_IO, "http: cannot install signal handlers: %s",
                            uv_strerror(rc));
    }
    return MC_OK;
}

void mc_http_server_free(mc_http_server *srv)
{
    if (srv == NULL)
        return;
    srv->free_requested = true;
    srv->shutting_down = true;
    srv->done_called = true;
    if (srv->bound) {
        srv->bound = false;
        srv_close_handle(srv, (uv_handle_t *)&srv->listener);
    }
    srv_close_aux_handles(srv);
    for (mc_http_conn *c = srv->conns; c != NULL;) {
        mc_http_conn *next = c->next;
        if (!c->mem)
            mc_http__conn_close(c);
        c = next;
    }
    /* Requests a handler still holds outlive the server. */
    for (mc_http_request *r = srv->live; r != NULL;) {
        mc_http_request *next = r->live_next;
        r->srv = NULL;
        r->conn = NULL;
        r->dispatched = false;
        r->live_prev = r->live_next = NULL;
        r = next;
    }
    srv->live = NULL;
    srv_maybe_free(srv);
}

/* ---- Health ---- */

static void health_handler(mc_http_request *req, void *ctx)
{
    mc_http_respond_text(req, 200, "application/json", "{\"status\":\"ok\"}");
}

static void ready_handler(mc_http_request *req, void *ctx)
{
    mc_http_server *srv = ctx;
    const char *reason = NULL;
    if (srv->shutting_down) {
        mc_http_respond_text(req, 503, "application/json",
                             "{\"status\":\"not_ready\",\"reason\":\"shutting down\"}");
        return;
    }
    if (srv->ready == NULL || srv->ready(srv->ready_ctx, &reason)) {
        mc_http_respond_text(req, 200, "application/json", "{\"status\":\"ready\"}");
        return;
    }
    /* The reason is the service's own text: escape it for JSON. */
    char body[600];
    size_t n = (size_t)snprintf(body, sizeof body, "{\"status\":\"not_ready\",\"reason\":\"");
    for (const char *s = reason ? reason : "not ready"; *s && n < sizeof body - 16; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            n += (size_t)snprintf(body + n, sizeof body - n, "\\%c", ch);
        else if (ch < 0x20)
            n += (size_t)snprintf(body + n, sizeof body - n, "\\u%04x", ch);
        else
            body[n++] = (char)ch;
    }
    snprintf(body + n, sizeof body - n, "\"}");
    mc_http_respond_text(req, 503, "application/json", body);
}

mc_status mc_http_server_add_health(mc_http_server *srv, mc_http_ready_fn ready, void *ctx,
                                    mc_error *err)
{
    srv->ready = ready;
    srv->ready_ctx = ctx;
    mc_status st = mc_http_server_route(srv, MC_HTTP_GET | MC_HTTP_HEAD, "/health", health_handler,
                                        srv, err);
    if (st == MC_OK)
        st = mc_http_server_route(srv, MC_HTTP_GET | MC_HTTP_HEAD, "/ready", ready_handler, srv,
                                  err);
    return st;
}

/* ---- Memory connections ---- */

mc_status mc_http_conn_mem_new(mc_http_server *srv, mc_http_conn **out, mc_error *err)
{
    mc_http_conn *c = conn_alloc(srv, true);
    if (c == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "http: out of memory");
    conn_link(srv, c);
    *out = c;
    return MC_OK;
}

void mc_http_conn_mem_feed(mc_http_conn *conn, const void *data, size_t len)
{
    conn_input(conn, data, len);
}

const uint8_t *mc_http_conn_mem_output(const mc_http_conn *conn, size_t *len)
{
    *len = conn->mem_len;
    return conn->mem_out;
}

bool mc_http_conn_mem_closed(const mc_http_conn *conn)
{
    return conn->closing || conn->lingering;
}

void mc_http_conn_mem_free(mc_http_conn *conn)
{
    if (conn == NULL)
        return;
    mc_http__conn_close(conn);
    mc_http_server *srv = conn->srv;
    free(conn->in);
    free(conn->mem_out);
    free(conn);
    srv->nconns--;
    srv_check_done(srv);
    srv_maybe_free(srv);
}
