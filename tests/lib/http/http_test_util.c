#include "http_test_util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "test harness: %s\n", what);
    abort();
}

static void async_cb(uv_async_t *a)
{
    test_server *ts = a->data;
    pthread_mutex_lock(&ts->mu);
    ts_fn fn = ts->call_fn;
    void *arg = ts->call_arg;
    bool pending = ts->call_pending;
    pthread_mutex_unlock(&ts->mu);
    if (!pending)
        return;
    fn(ts, arg);
    pthread_mutex_lock(&ts->mu);
    ts->call_pending = false;
    pthread_cond_broadcast(&ts->cv);
    pthread_mutex_unlock(&ts->mu);
}

static void *loop_main(void *arg)
{
    test_server *ts = arg;
    uv_run(&ts->loop, UV_RUN_DEFAULT);
    return NULL;
}

void ts_start(test_server *ts, const mc_http_server_config *cfg, ts_fn setup, void *arg)
{
    memset(ts, 0, sizeof *ts);
    pthread_mutex_init(&ts->mu, NULL);
    pthread_cond_init(&ts->cv, NULL);
    if (uv_loop_init(&ts->loop) != 0)
        die("uv_loop_init");
    uv_async_init(&ts->loop, &ts->async, async_cb);
    ts->async.data = ts;
    mc_http_server_config c = cfg ? *cfg : (mc_http_server_config){0};
    c.host = "127.0.0.1";
    c.port = 0;
    mc_error err = {0};
    if (mc_http_server_new(&ts->loop, &c, &ts->srv, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        die("server");
    }
    ts->port = mc_http_server_port(ts->srv);
    if (setup)
        setup(ts, arg);
    pthread_create(&ts->thread, NULL, loop_main, ts);
}

void ts_call(test_server *ts, ts_fn fn, void *arg)
{
    pthread_mutex_lock(&ts->mu);
    while (ts->call_pending)
        pthread_cond_wait(&ts->cv, &ts->mu);
    ts->call_fn = fn;
    ts->call_arg = arg;
    ts->call_pending = true;
    uv_async_send(&ts->async);
    while (ts->call_pending)
        pthread_cond_wait(&ts->cv, &ts->mu);
    pthread_mutex_unlock(&ts->mu);
}

static void on_done(mc_http_server *srv, bool forced, void *ctx)
{
    test_server *ts = ctx;
    pthread_mutex_lock(&ts->mu);
    ts->done = true;
    ts->done_forced = forced;
    pthread_cond_broadcast(&ts->cv);
    pthread_mutex_unlock(&ts->mu);
}

static void do_shutdown(test_server *ts, void *arg)
{
    mc_http_server_shutdown(ts->srv, on_done, ts);
}

void ts_shutdown_async(test_server *ts)
{
    ts_call(ts, do_shutdown, NULL);
}

bool ts_wait_done(test_server *ts, int timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&ts->mu);
    while (!ts->done) {
        if (pthread_cond_timedwait(&ts->cv, &ts->mu, &dl) == ETIMEDOUT)
            break;
    }
    bool d = ts->done;
    pthread_mutex_unlock(&ts->mu);
    return d;
}

static void close_async(test_server *ts, void *arg)
{
    uv_close((uv_handle_t *)&ts->async, NULL);
}

void ts_stop(test_server *ts)
{
    ts_shutdown_async(ts);
    if (!ts_wait_done(ts, 15000))
        die("shutdown did not finish");
    /* The async handle is closed from the loop; the loop then ends. */
    pthread_mutex_lock(&ts->mu);
    ts->call_fn = close_async;
    ts->call_arg = NULL;
    ts->call_pending = true;
    uv_async_send(&ts->async);
    pthread_mutex_unlock(&ts->mu);
    pthread_join(ts->thread, NULL);
    mc_http_server_free(ts->srv);
    uv_run(&ts->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&ts->loop) != 0)
        die("loop has open handles");
}

static void get_stats(test_server *ts, void *arg)
{
    mc_http_server_stats_get(ts->srv, arg);
}

void ts_stats(test_server *ts, mc_http_server_stats *out)
{
    ts_call(ts, get_stats, out);
}

void cl_connect(client *c, uint16_t port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        die("socket");
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
}

void cl_send(client *c, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return; /* the server may have closed; the test checks that */
        p += n;
        len -= (size_t)n;
    }
}

void cl_send_str(client *c, const char *s)
{
    cl_send(c, s, strlen(s));
}

/* Reads more bytes into the buffer; returns bytes read, 0 on EOF, -1 on
 * error or timeout. */
static ssize_t cl_fill(client *c)
{
    if (c->cap - c->len < 65536) {
        size_t nc = c->cap ? c->cap * 2 : 131072;
        while (nc - c->len < 65536)
            nc *= 2;
        char *nb = realloc(c->buf, nc);
        if (nb == NULL)
            die("oom");
        c->buf = nb;
        c->cap = nc;
    }
    ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
    if (n > 0) {
        c->len += (size_t)n;
        c->buf[c->len] = '\0';
    }
    return n;
}

static void cl_consume(client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
    if (c->buf)
        c->buf[c->len] = '\0';
}

static const char *memfind(const char *h, size_t hl, const char *n)
{
    size_t nl = strlen(n);
    if (nl > hl)
        return NULL;
    for (size_t i = 0; i + nl <= hl; i++)
        if (memcmp(h + i, n, nl) == 0)
            return h + i;
    return NULL;
}

bool resp_header(const response *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *line = strstr(r->head, "\r\n");
    while (line != NULL && line[2] != '\0') {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = e ? (size_t)(e - v) : strlen(v);
            if (n >= cap)
                n = cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

bool cl_read_response(client *c, response *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        const char *end = c->buf ? memfind(c->buf, c->len, "\r\n\r\n") : NULL;
        if (end != NULL) {
            size_t hl = (size_t)(end - c->buf) + 4;
            if (hl >= sizeof r->head)
                die("response head too long");
            memcpy(r->head, c->buf, hl);
            r->head[hl] = '\0';
            if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
                return false;
            cl_consume(c, hl);
            if (r->status >= 100 && r->status < 200)
                return cl_read_response(c, r); /* skip 100 Continue */
            break;
        }
        if (cl_fill(c) <= 0)
            return false;
    }
    char v[64];
    bool has_len = resp_header(r, "Content-Length", v, sizeof v);
    size_t want = has_len ? strtoull(v, NULL, 10) : 0;
    if (!has_len) {
        /* Close-delimited (or 204/304): read until EOF only if the server
         * says it closes. */
        char conn[32] = "";
        resp_header(r, "Connection", conn, sizeof conn);
        if (strcasecmp(conn, "close") != 0 || r->status == 204 || r->status == 304) {
            r->body = calloc(1, 1);
            return true;
        }
        while (cl_fill(c) > 0) {
        }
        want = c->len;
    }
    while (c->len < want)
        if (cl_fill(c) <= 0)
            return false;
    r->body = malloc(want + 1);
    memcpy(r->body, c->buf, want);
    r->body[want] = '\0';
    r->body_len = want;
    cl_consume(c, want);
    return true;
}

bool cl_wait_closed(client *c, int timeout_ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= timeout_ms)
            return false;
        if (poll(&p, 1, (int)(timeout_ms - el)) <= 0)
            return false;
        ssize_t n = cl_fill(c);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
    }
}

bool cl_read_until(client *c, const char *needle, int timeout_ms)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        if (c->buf && strstr(c->buf, needle))
            return true;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long el = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= timeout_ms)
            return false;
        if (poll(&p, 1, (int)(timeout_ms - el)) <= 0)
            return false;
        if (cl_fill(c) <= 0)
            return c->buf && strstr(c->buf, needle);
    }
}

void cl_close(client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

void resp_free(response *r)
{
    free(r->body);
    r->body = NULL;
}

bool http_get(uint16_t port, const char *path, const char *extra_headers, response *r)
{
    client c;
    cl_connect(&c, port, 0);
    char req[8192];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n", path,
             extra_headers ? extra_headers : "");
    cl_send_str(&c, req);
    bool ok = cl_read_response(&c, r);
    cl_close(&c);
    return ok;
}

long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}
