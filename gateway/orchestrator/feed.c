/* The dashboard feed (see feed.h). */
#include "feed.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/sse.h"
#include "log/log.h"

typedef struct feed_ev {
    uint64_t id;
    char type[16];
    char *data;
    size_t len;
} feed_ev;

struct mc_feed {
    mc_feed_options opt;
    mc_feed_snapshot_fn snapshot;
    void *ctx;
    uint64_t last_id;
    feed_ev *ring;
    size_t head, count, bytes;
    mc_http_sse **clients;
    size_t nclients, cap;
    int fanning;
    bool dirty;
    uint64_t published, resets;
};

mc_status mc_feed_new(const mc_feed_options *opt, mc_feed_snapshot_fn snapshot, void *ctx,
                      mc_feed **out, mc_error *err)
{
    *out = NULL;
    mc_feed *f = calloc(1, sizeof *f);
    if (f == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "feed: out of memory");
    if (opt != NULL)
        f->opt = *opt;
    if (f->opt.history_events == 0)
        f->opt.history_events = 1024;
    if (f->opt.history_bytes == 0)
        f->opt.history_bytes = 4u << 20;
    if (f->opt.max_clients == 0)
        f->opt.max_clients = 1024;
    f->last_id = f->opt.id_base;
    f->snapshot = snapshot;
    f->ctx = ctx;
    f->ring = calloc(f->opt.history_events, sizeof *f->ring);
    f->cap = 64;
    f->clients = calloc(f->cap, sizeof *f->clients);
    if (f->ring == NULL || f->clients == NULL) {
        free(f->ring);
        free(f->clients);
        free(f);
        return mc_error_set(err, MC_ERR_NOMEM, "feed: out of memory");
    }
    *out = f;
    return MC_OK;
}

static void drop_oldest(mc_feed *f)
{
    feed_ev *e = &f->ring[f->head];
    f->bytes -= e->len;
    free(e->data);
    e->data = NULL;
    f->head = (f->head + 1) % f->opt.history_events;
    f->count--;
}

static void compact(mc_feed *f)
{
    size_t k = 0;
    for (size_t i = 0; i < f->nclients; i++)
        if (f->clients[i] != NULL)
            f->clients[k++] = f->clients[i];
    f->nclients = k;
    f->dirty = false;
}

void mc_feed_close_all(mc_feed *f)
{
    if (f == NULL)
        return;
    f->fanning++;
    for (size_t i = 0; i < f->nclients; i++)
        if (f->clients[i] != NULL)
            mc_http_sse_close(f->clients[i]);
    f->fanning--;
    compact(f);
}

void mc_feed_free(mc_feed *f)
{
    if (f == NULL)
        return;
    mc_feed_close_all(f);
    while (f->count > 0)
        drop_oldest(f);
    free(f->ring);
    free(f->clients);
    free(f);
}

static void on_client_close(mc_http_sse *s, void *ctx)
{
    mc_feed *f = ctx;
    for (size_t i = 0; i < f->nclients; i++)
        if (f->clients[i] == s) {
            f->clients[i] = NULL;
            break;
        }
    if (f->fanning > 0)
        f->dirty = true;
    else
        compact(f);
}

mc_status mc_feed_publish(mc_feed *f, const char *event, const char *data, size_t len)
{
    if (strlen(event) >= sizeof f->ring[0].type || strpbrk(event, "\r\n") != NULL)
        return MC_ERR_INVALID;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return MC_ERR_NOMEM;
    memcpy(copy, data, len);
    copy[len] = '\0';
    uint64_t id = ++f->last_id;
    f->published++;
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%" PRIu64, id);

    f->fanning++;
    for (size_t i = 0; i < f->nclients; i++)
        if (f->clients[i] != NULL)
            (void)mc_http_sse_send(f->clients[i], idbuf, event, copy, len);
    f->fanning--;
    if (f->dirty && f->fanning == 0)
        compact(f);

    if (len > f->opt.history_bytes) {
        /* Too big to keep: the history must stay gap-free, so nothing
         * before this event can be resumed any more. */
        while (f->count > 0)
            drop_oldest(f);
        free(copy);
        return MC_OK;
    }
    while (f->count > 0 &&
           (f->count == f->opt.history_events || f->bytes + len > f->opt.history_bytes))
        drop_oldest(f);
    feed_ev *e = &f->ring[(f->head + f->count) % f->opt.history_events];
    e->id = id;
    snprintf(e->type, sizeof e->type, "%s", event);
    e->data = copy;
    e->len = len;
    f->count++;
    f->bytes += len;
    return MC_OK;
}

/* A decimal id, nothing else. */
static bool parse_id(const char *s, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9' || strlen(s) > 20)
        return false;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return false;
    *out = v;
    return true;
}

static mc_status send_snapshot(mc_feed *f, mc_http_sse *s, bool with_id)
{
    char *json = NULL;
    size_t len = 0;
    mc_status st = f->snapshot(f->ctx, &json, &len);
    if (st != MC_OK) {
        MC_LOG_ERROR("feed: cannot build the snapshot", MC_LF_STR("status", mc_status_name(st)));
        mc_http_sse_close(s);
        return st;
    }
    char idbuf[24];
    snprintf(idbuf, sizeof idbuf, "%" PRIu64, f->last_id);
    st = mc_http_sse_send(s, with_id ? idbuf : NULL, "snapshot", json, len);
    free(json);
    return st;
}

void mc_feed_subscribe(mc_feed *f, mc_http_request *req, const char *last_event_id)
{
    if (f->nclients >= f->opt.max_clients) {
        mc_http_response_header_add(req, "Retry-After", "5");
        mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "too many event streams\n");
        return;
    }
    if (f->nclients == f->cap) {
        size_t nc = f->cap * 2;
        mc_http_sse **n = realloc(f->clients, nc * sizeof *n);
        if (n == NULL) {
            mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "out of memory\n");
            return;
        }
        f->clients = n;
        f->cap = nc;
    }
    const char *last = last_event_id;
    if (last == NULL || last[0] == '\0')
        last = mc_http_request_header(req, "Last-Event-ID");
    enum { FRESH, RESUME, RESET } mode = FRESH;
    uint64_t from = 0;
    const char *why = "";
    if (last != NULL && last[0] != '\0') {
        uint64_t n;
        uint64_t oldest = f->count > 0 ? f->ring[f->head].id : f->last_id + 1;
        if (!parse_id(last, &n)) {
            mode = RESET;
            why = "unreadable Last-Event-ID";
        } else if (n > f->last_id || n < f->opt.id_base) {
            mode = RESET;
            why = "Last-Event-ID from another run of the orchestrator";
        } else if (n + 1 < oldest) {
            mode = RESET;
            why = "Last-Event-ID older than the history";
        } else {
            mode = RESUME;
            from = n;
        }
    }
    mc_http_sse *s;
    if (mc_http_sse_start(req, on_client_close, f, &s) != MC_OK)
        return;
    f->clients[f->nclients++] = s;
    f->fanning++;
    mc_status st = MC_OK;
    if (mode == RESET) {
        f->resets++;
        char data[160];
        snprintf(data, sizeof data, "{\"reason\":\"%s\"}", why);
        st = mc_http_sse_send(s, NULL, "reset", data, strlen(data));
    }
    if (st == MC_OK)
        st = send_snapshot(f, s, mode != RESUME);
    if (st == MC_OK && mode == RESUME) {
        for (size_t k = 0; k < f->count; k++) {
            const feed_ev *e = &f->ring[(f->head + k) % f->opt.history_events];
            if (e->id <= from)
                continue;
            char idbuf[24];
            snprintf(idbuf, sizeof idbuf, "%" PRIu64, e->id);
            if (mc_http_sse_send(s, idbuf, e->type, e->data, e->len) != MC_OK)
                break;
        }
    }
    f->fanning--;
    if (f->dirty && f->fanning == 0)
        compact(f);
}

size_t mc_feed_clients(const mc_feed *f)
{
    size_t n = 0;
    for (size_t i = 0; i < f->nclients; i++)
        n += f->clients[i] != NULL;
    return n;
}

uint64_t mc_feed_last_id(const mc_feed *f)
{
    return f->last_id;
}

uint64_t mc_feed_published(const mc_feed *f)
{
    return f->published;
}

uint64_t mc_feed_resets(const mc_feed *f)
{
    return f->resets;
}
