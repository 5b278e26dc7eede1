/* The libuv HTTP/1.1 client (see http_client.h). */
#include "http_client.h"

#include <llhttp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

mc_status mc_hc_target_parse(const char *url, mc_hc_target *t, mc_error *err)
{
    memset(t, 0, sizeof *t);
    if (url == NULL || url[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "empty URL");
    const char *p = url;
    if (strncasecmp(p, "http://", 7) == 0) {
        p += 7;
    } else if (strstr(p, "://") != NULL) {
        return mc_error_set(err, MC_ERR_INVALID, "%s: only http:// URLs are supported", url);
    }
    const char *slash = strchr(p, '/');
    size_t hostport_len = slash ? (size_t)(slash - p) : strlen(p);
    if (hostport_len == 0)
        return mc_error_set(err, MC_ERR_INVALID, "%s: no host", url);
    char hp[300];
    if (hostport_len >= sizeof hp)
        return mc_error_set(err, MC_ERR_INVALID, "%s: host too long", url);
    memcpy(hp, p, hostport_len);
    hp[hostport_len] = '\0';
    char *host = hp;
    char *port = NULL;
    if (hp[0] == '[') { /* [v6]:port */
        char *close = strchr(hp, ']');
        if (close == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "%s: unterminated IPv6 address", url);
        *close = '\0';
        host = hp + 1;
        if (close[1] == ':')
            port = close + 2;
        else if (close[1] != '\0')
            return mc_error_set(err, MC_ERR_INVALID, "%s: bad host", url);
    } else {
        char *colon = strrchr(hp, ':');
        if (colon != NULL) {
            *colon = '\0';
            port = colon + 1;
        }
    }
    if (host[0] == '\0' || strlen(host) >= sizeof t->host)
        return mc_error_set(err, MC_ERR_INVALID, "%s: bad host", url);
    snprintf(t->host, sizeof t->host, "%s", host);
    t->port = 80;
    if (port != NULL) {
        char *end;
        unsigned long v = strtoul(port, &end, 10);
        if (port[0] == '\0' || *end != '\0' || v == 0 || v > 65535)
            return mc_error_set(err, MC_ERR_INVALID, "%s: bad port", url);
        t->port = (uint16_t)v;
    }
    if (slash != NULL) {
        size_t n = strlen(slash);
        while (n > 0 && slash[n - 1] == '/')
            n--;
        if (n >= sizeof t->prefix)
            return mc_error_set(err, MC_ERR_INVALID, "%s: path too long", url);
        memcpy(t->prefix, slash, n);
        t->prefix[n] = '\0';
    }
    return MC_OK;
}

typedef struct hc_req {
    uv_loop_t *loop;
    uv_getaddrinfo_t gai;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t timer;
    struct addrinfo *ai;
    struct addrinfo *cur;
    char host[256];
    char port[8];
    char *out; /* the request bytes */
    size_t out_len;
    llhttp_t parser;
    llhttp_settings_t settings;
    char content_type[256];
    bool in_content_type;
    bool header_value_pending;
    char header_field[64];
    size_t header_field_len;
    uint8_t *body;
    size_t body_len, body_cap;
    bool complete;
    bool too_big;
    /* Outstanding libuv callbacks: the request is freed when it is
     * finished and none is left. */
    int pending;
    bool tcp_open;
    bool finished;
    mc_hc_done_fn done;
    void *ctx;
    char last_error[256];
} hc_req;

static void hc_maybe_free(hc_req *r)
{
    if (!r->finished || r->pending > 0)
        return;
    if (r->ai != NULL)
        uv_freeaddrinfo(r->ai);
    free(r->out);
    free(r->body);
    free(r);
}

static void hc_on_closed(uv_handle_t *h)
{
    hc_req *r = h->data;
    r->pending--;
    hc_maybe_free(r);
}

static void hc_close_tcp(hc_req *r, uv_close_cb cb)
{
    if (!r->tcp_open)
        return;
    r->tcp_open = false;
    r->pending++;
    uv_close((uv_handle_t *)&r->tcp, cb);
}

/* Calls done once and starts closing everything. */
static void hc_finish(hc_req *r, mc_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void hc_finish(hc_req *r, mc_status st, const char *fmt, ...)
{
    if (r->finished)
        return;
    r->finished = true;
    char msg[320] = "";
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
    }
    uv_timer_stop(&r->timer);
    r->pending++;
    uv_close((uv_handle_t *)&r->timer, hc_on_closed);
    hc_close_tcp(r, hc_on_closed);
    if (st == MC_OK) {
        mc_hc_response resp = {(int)r->parser.status_code, r->content_type,
                               r->body ? r->body : (const uint8_t *)"", r->body_len};
        r->done(r->ctx, MC_OK, &resp, "");
    } else {
        r->done(r->ctx, st, NULL, msg);
    }
    hc_maybe_free(r);
}

static void hc_on_timeout(uv_timer_t *t)
{
    hc_req *r = t->data;
    /* A resolution in progress cannot be interrupted reliably; its callback
     * still runs later and only frees the result. */
    uv_cancel((uv_req_t *)&r->gai);
    hc_finish(r, MC_ERR_TIMEOUT, "no answer from %s:%s within the timeout", r->host, r->port);
}

/* ---- Response parsing ---- */

static int hc_on_header_field(llhttp_t *p, const char *at, size_t len)
{
    hc_req *r = p->data;
    if (r->header_value_pending) {
        r->header_value_pending = false;
        r->header_field_len = 0;
    }
    size_t room = sizeof r->header_field - 1 - r->header_field_len;
    size_t n = len < room ? len : room;
    memcpy(r->header_field + r->header_field_len, at, n);
    r->header_field_len += n;
    r->header_field[r->header_field_len] = '\0';
    return 0;
}

static int hc_on_header_value(llhttp_t *p, const char *at, size_t len)
{
    hc_req *r = p->data;
    if (!r->header_value_pending) {
        r->header_value_pending = true;
        r->in_content_type = strcasecmp(r->header_field, "Content-Type") == 0;
        if (r->in_content_type)
            r->content_type[0] = '\0';
    }
    if (r->in_content_type) {
        size_t have = strlen(r->content_type);
        size_t room = sizeof r->content_type - 1 - have;
        size_t n = len < room ? len : room;
        memcpy(r->content_type + have, at, n);
        r->content_type[have + n] = '\0';
    }
    return 0;
}

static int hc_on_headers_complete(llhttp_t *p)
{
    hc_req *r = p->data;
    r->header_value_pending = false;
    r->header_field_len = 0;
    return 0;
}

static int hc_on_body(llhttp_t *p, const char *at, size_t len)
{
    hc_req *r = p->data;
    if (r->body_len + len > MC_HC_MAX_RESPONSE_BYTES) {
        r->too_big = true;
        return -1;
    }
    if (r->body_len + len > r->body_cap) {
        size_t nc = r->body_cap ? r->body_cap : 4096;
        while (nc < r->body_len + len)
            nc *= 2;
        uint8_t *nb = realloc(r->body, nc);
        if (nb == NULL) {
            r->too_big = true;
            return -1;
        }
        r->body = nb;
        r->body_cap = nc;
    }
    memcpy(r->body + r->body_len, at, len);
    r->body_len += len;
    return 0;
}

static int hc_on_message_complete(llhttp_t *p)
{
    hc_req *r = p->data;
    r->complete = true;
    /* Stop at the end of the (only) response. */
    return HPE_PAUSED;
}

static void hc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char unused;
    buf->base = malloc(16384);
    buf->len = buf->base ? 16384 : 0;
    if (buf->base == NULL)
        buf->base = &unused;
}

static void hc_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    hc_req *r = s->data;
    bool owned = buf->len > 0;
    if (r->finished) {
        if (owned)
            free(buf->base);
        return;
    }
    if (nread > 0) {
        llhttp_errno_t e = llhttp_execute(&r->parser, buf->base, (size_t)nread);
        if (owned)
            free(buf->base);
        if (r->complete) {
            hc_finish(r, MC_OK, NULL);
        } else if (r->too_big) {
            hc_finish(r, MC_ERR_LIMIT, "response from %s:%s larger than %u bytes", r->host,
                      r->port, MC_HC_MAX_RESPONSE_BYTES);
        } else if (e != HPE_OK) {
            hc_finish(r, MC_ERR_PARSE, "bad HTTP response from %s:%s: %s", r->host, r->port,
                      llhttp_errno_name(e));
        }
        return;
    }
    if (owned)
        free(buf->base);
    if (nread == 0)
        return;
    if (nread == UV_EOF) {
        /* A response delimited by the end of the connection ends here. */
        (void)llhttp_finish(&r->parser);
        if (r->complete)
            hc_finish(r, MC_OK, NULL);
        else
            hc_finish(r, MC_ERR_UNAVAILABLE,
                      "%s:%s closed the connection before the response was complete", r->host,
                      r->port);
        return;
    }
    hc_finish(r, MC_ERR_UNAVAILABLE, "reading from %s:%s: %s", r->host, r->port,
              uv_strerror((int)nread));
}

static void hc_on_write(uv_write_t *w, int status)
{
    hc_req *r = w->data;
    r->pending--;
    if (status < 0 && !r->finished)
        hc_finish(r, MC_ERR_UNAVAILABLE, "writing to %s:%s: %s", r->host, r->port,
                  uv_strerror(status));
    hc_maybe_free(r);
}

static void hc_try_connect(hc_req *r);

static void hc_on_closed_try_next(uv_handle_t *h)
{
    hc_req *r = h->data;
    r->pending--;
    if (r->finished) {
        hc_maybe_free(r);
        return;
    }
    r->cur = r->cur ? r->cur->ai_next : NULL;
    hc_try_connect(r);
}

static void hc_on_connect(uv_connect_t *c, int status)
{
    hc_req *r = c->data;
    r->pending--;
    if (r->finished) {
        hc_maybe_free(r);
        return;
    }
    if (status < 0) {
        snprintf(r->last_error, sizeof r->last_error, "%s", uv_strerror(status));
        hc_close_tcp(r, hc_on_closed_try_next);
        return;
    }
    uv_buf_t b = uv_buf_init(r->out, (unsigned)r->out_len);
    r->write.data = r;
    if (uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, hc_on_write) == 0)
        r->pending++;
    else {
        hc_finish(r, MC_ERR_UNAVAILABLE, "writing to %s:%s failed", r->host, r->port);
        return;
    }
    int rc = uv_read_start((uv_stream_t *)&r->tcp, hc_alloc, hc_on_read);
    if (rc < 0)
        hc_finish(r, MC_ERR_UNAVAILABLE, "reading from %s:%s: %s", r->host, r->port,
                  uv_strerror(rc));
}

static void hc_try_connect(hc_req *r)
{
    while (r->cur != NULL) {
        int rc = uv_tcp_init(r->loop, &r->tcp);
        if (rc < 0) {
            hc_finish(r, MC_ERR_UNAVAILABLE, "socket: %s", uv_strerror(rc));
            return;
        }
        r->tcp.data = r;
        r->tcp_open = true;
        r->connect.data = r;
        rc = uv_tcp_connect(&r->connect, &r->tcp, r->cur->ai_addr, hc_on_connect);
        if (rc == 0) {
            r->pending++;
            return;
        }
        snprintf(r->last_error, sizeof r->last_error, "%s", uv_strerror(rc));
        hc_close_tcp(r, hc_on_closed_try_next);
        return;
    }
    hc_finish(r, MC_ERR_UNAVAILABLE, "cannot connect to %s:%s: %s", r->host, r->port,
              r->last_error[0] ? r->last_error : "no address");
}

static void hc_on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    hc_req *r = g->data;
    r->pending--;
    if (r->finished) {
        if (res != NULL)
            uv_freeaddrinfo(res);
        hc_maybe_free(r);
        return;
    }
    if (status < 0) {
        hc_finish(r, MC_ERR_UNAVAILABLE, "cannot resolve %s: %s", r->host, uv_strerror(status));
        return;
    }
    r->ai = res;
    r->cur = res;
    hc_try_connect(r);
}

static bool header_ok(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") == NULL;
}

mc_status mc_hc_request(uv_loop_t *loop, const mc_hc_target *t, const char *method,
                        const char *path, const mc_hc_header *headers, size_t n_headers,
                        const void *body, size_t len, uint64_t timeout_ms, mc_hc_done_fn done,
                        void *ctx, mc_error *err)
{
    if (loop == NULL || t == NULL || method == NULL || path == NULL || done == NULL ||
        (body == NULL && len > 0))
        return mc_error_set(err, MC_ERR_INVALID, "http client: missing argument");
    if (!header_ok(method) || !header_ok(path) || path[0] != '/')
        return mc_error_set(err, MC_ERR_INVALID, "http client: bad method or path");
    size_t head_cap = 512 + strlen(t->host) + strlen(t->prefix) + strlen(path);
    for (size_t i = 0; i < n_headers; i++) {
        if (!header_ok(headers[i].name) || !header_ok(headers[i].value))
            return mc_error_set(err, MC_ERR_INVALID, "http client: bad header");
        head_cap += strlen(headers[i].name) + strlen(headers[i].value) + 4;
    }
    hc_req *r = calloc(1, sizeof *r);
    if (r == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "http client: out of memory");
    r->out = malloc(head_cap + len);
    if (r->out == NULL) {
        free(r);
        return mc_error_set(err, MC_ERR_NOMEM, "http client: out of memory");
    }
    int n = snprintf(r->out, head_cap, "%s %s%s HTTP/1.1\r\nHost: %s:%u\r\n", method, t->prefix,
                     path, t->host, (unsigned)t->port);
    size_t off = (size_t)n;
    for (size_t i = 0; i < n_headers; i++)
        off += (size_t)snprintf(r->out + off, head_cap - off, "%s: %s\r\n", headers[i].name,
                                headers[i].value);
    off += (size_t)snprintf(r->out + off, head_cap - off,
                            "Content-Length: %zu\r\nConnection: close\r\n\r\n", len);
    if (len > 0)
        memcpy(r->out + off, body, len);
    r->out_len = off + len;
    r->loop = loop;
    r->done = done;
    r->ctx = ctx;
    snprintf(r->host, sizeof r->host, "%s", t->host);
    snprintf(r->port, sizeof r->port, "%u", (unsigned)t->port);
    llhttp_settings_init(&r->settings);
    r->settings.on_header_field = hc_on_header_field;
    r->settings.on_header_value = hc_on_header_value;
    r->settings.on_headers_complete = hc_on_headers_complete;
    r->settings.on_body = hc_on_body;
    r->settings.on_message_complete = hc_on_message_complete;
    llhttp_init(&r->parser, HTTP_RESPONSE, &r->settings);
    r->parser.data = r;

    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, hc_on_timeout, timeout_ms ? timeout_ms : 5000, 0);

    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    r->gai.data = r;
    int rc = uv_getaddrinfo(loop, &r->gai, hc_on_resolved, r->host, r->port, &hints);
    if (rc < 0) {
        uv_timer_stop(&r->timer);
        /* The timer handle must be closed before the memory goes; the
         * request is marked finished without calling done. */
        r->finished = true;
        r->pending++;
        uv_close((uv_handle_t *)&r->timer, hc_on_closed);
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "cannot resolve %s: %s", t->host,
                            uv_strerror(rc));
    }
    r->pending++;
    return MC_OK;
}
