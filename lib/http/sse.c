/* Server-Sent Events and the broadcast hub: see sse.h. */
#include "http/sse.h"

#include <inttypes.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "log/log.h"

struct mc_http_sse {
    mc_http_conn *conn;
    mc_http_sse_close_fn on_close;
    void *ctx;
    size_t max_unsent;
};

static void stream_closed(void *p)
{
    mc_http_sse *s = p;
    s->conn = NULL;
    if (s->on_close != NULL)
        s->on_close(s, s->ctx);
    free(s);
}

static void stream_tick(void *p)
{
    mc_http_sse *s = p;
    static const char ping[] = ": ping\n\n";
    mc_http_blob *b = mc_http__blob_new(ping, sizeof ping - 1);
    if (b == NULL)
        return;
    mc_http__stream_write(s->conn, b, s->max_unsent);
    mc_http__blob_unref(b);
}

static const mc_http_stream_ops stream_ops = {stream_closed, stream_tick};

mc_status mc_http_sse_start(mc_http_request *req, mc_http_sse_close_fn on_close, void *ctx,
                            mc_http_sse **out)
{
    *out = NULL;
    mc_http_server *srv = mc_http_request_server(req);
    mc_http_sse *s = calloc(1, sizeof *s);
    if (s == NULL || srv == NULL) {
        free(s);
        mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "unavailable\n");
        return MC_ERR_UNAVAILABLE;
    }
    const mc_http_server_config *cfg = mc_http__server_config(srv);
    s->on_close = on_close;
    s->ctx = ctx;
    s->max_unsent = cfg->sse_max_unsent_bytes;
    mc_http_response_header_add(req, "Cache-Control", "no-cache");
    /* Tells nginx-style proxies not to buffer the stream. */
    mc_http_response_header_add(req, "X-Accel-Buffering", "no");
    s->conn = mc_http__stream_begin(req, 200, "text/event-stream; charset=utf-8", &stream_ops, s,
                                    cfg->sse_heartbeat_ms);
    if (s->conn == NULL) {
        free(s);
        return MC_ERR_UNAVAILABLE;
    }
    *out = s;
    return MC_OK;
}

static bool field_ok(const char *v)
{
    return v == NULL || strpbrk(v, "\r\n") == NULL;
}

mc_status mc_http_sse_format(const char *id, const char *event, const char *data, size_t len,
                             char **out, size_t *out_len)
{
    *out = NULL;
    if (!field_ok(id) || !field_ok(event))
        return MC_ERR_INVALID;
    /* Worst case every byte is a line break: "data: \n" per byte. */
    size_t cap = 32 + (id ? strlen(id) : 0) + (event ? strlen(event) : 0) + len * 8;
    char *b = malloc(cap);
    if (b == NULL)
        return MC_ERR_NOMEM;
    size_t n = 0;
    if (id != NULL)
        n += (size_t)snprintf(b + n, cap - n, "id: %s\n", id);
    if (event != NULL)
        n += (size_t)snprintf(b + n, cap - n, "event: %s\n", event);
    size_t i = 0;
    for (;;) {
        /* One data line per line of the payload; CRLF, CR and LF all end
         * a line, as the EventSource parser reads them. */
        size_t j = i;
        while (j < len && data[j] != '\n' && data[j] != '\r')
            j++;
        memcpy(b + n, "data: ", 6);
        n += 6;
        memcpy(b + n, data + i, j - i);
        n += j - i;
        b[n++] = '\n';
        if (j >= len)
            break;
        if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
            j++;
        i = j + 1;
        if (i == len) {
            /* A trailing line break: an empty last line keeps it. */
            memcpy(b + n, "data: \n", 7);
            n += 7;
            break;
        }
    }
    b[n++] = '\n';
    b[n] = '\0';
    *out = b;
    *out_len = n;
    return MC_OK;
}

static mc_status write_blob(mc_http_sse *s, mc_http_blob *b)
{
    if (s->conn == NULL)
        return MC_ERR_UNAVAILABLE;
    return mc_http__stream_write(s->conn, b, s->max_unsent) ? MC_OK : MC_ERR_UNAVAILABLE;
}

mc_status mc_http_sse_send(mc_http_sse *s, const char *id, const char *event, const char *data,
                           size_t len)
{
    char *text;
    size_t n;
    mc_status st = mc_http_sse_format(id, event, data ? data : "", data ? len : 0, &text, &n);
    if (st != MC_OK)
        return st;
    mc_http_blob *b = mc_http__blob_new(text, n);
    free(text);
    if (b == NULL)
        return MC_ERR_NOMEM;
    st = write_blob(s, b);
    mc_http__blob_unref(b);
    return st;
}

mc_status mc_http_sse_comment(mc_http_sse *s, const char *text)
{
    if (!field_ok(text))
        return MC_ERR_INVALID;
    size_t n = strlen(text) + 4;
    char *line = malloc(n + 1);
    if (line == NULL)
        return MC_ERR_NOMEM;
    snprintf(line, n + 1, ": %s\n\n", text);
    mc_http_blob *b = mc_http__blob_new(line, n);
    free(line);
    if (b == NULL)
        return MC_ERR_NOMEM;
    mc_status st = write_blob(s, b);
    mc_http__blob_unref(b);
    return st;
}

void mc_http_sse_close(mc_http_sse *s)
{
    if (s != NULL && s->conn != NULL)
        mc_http__conn_close(s->conn);
}

/* ---- Hub ---- */

typedef struct ring_ev {
    uint64_t seq;
    mc_http_blob *blob;
} ring_ev;

struct mc_http_sse_hub {
    mc_http_sse_hub_options opt;
    uint64_t seq;
    ring_ev *ring;
    size_t head, count, bytes;
    mc_http_sse **subs;
    size_t nsubs, subs_cap;
    int fanning;
    bool dirty;
    bool freeing;
};

mc_status mc_http_sse_hub_new(const mc_http_sse_hub_options *opt, mc_http_sse_hub **out,
                              mc_error *err)
{
    *out = NULL;
    mc_http_sse_hub *h = calloc(1, sizeof *h);
    if (h == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "sse: out of memory");
    if (opt != NULL)
        h->opt = *opt;
    if (h->opt.ring_events == 0)
        h->opt.ring_events = 1024;
    if (h->opt.ring_bytes == 0)
        h->opt.ring_bytes = 1u << 20;
    if (h->opt.max_subscribers == 0)
        h->opt.max_subscribers = 1024;
    while (h->opt.epoch == 0)
        h->opt.epoch = randombytes_random();
    h->ring = calloc(h->opt.ring_events, sizeof *h->ring);
    if (h->ring == NULL) {
        free(h);
        return mc_error_set(err, MC_ERR_NOMEM, "sse: out of memory");
    }
    *out = h;
    return MC_OK;
}

static void ring_drop_oldest(mc_http_sse_hub *h)
{
    ring_ev *e = &h->ring[h->head];
    h->bytes -= e->blob->len;
    mc_http__blob_unref(e->blob);
    e->blob = NULL;
    h->head = (h->head + 1) % h->opt.ring_events;
    h->count--;
}

void mc_http_sse_hub_free(mc_http_sse_hub *hub)
{
    if (hub == NULL)
        return;
    hub->freeing = true;
    for (size_t i = 0; i < hub->nsubs; i++)
        if (hub->subs[i] != NULL)
            mc_http_sse_close(hub->subs[i]);
    while (hub->count > 0)
        ring_drop_oldest(hub);
    free(hub->ring);
    free(hub->subs);
    free(hub);
}

static void compact(mc_http_sse_hub *h)
{
    size_t k = 0;
    for (size_t i = 0; i < h->nsubs; i++)
        if (h->subs[i] != NULL)
            h->subs[k++] = h->subs[i];
    h->nsubs = k;
    h->dirty = false;
}

static void hub_on_close(mc_http_sse *s, void *ctx)
{
    mc_http_sse_hub *h = ctx;
    for (size_t i = 0; i < h->nsubs; i++)
        if (h->subs[i] == s) {
            h->subs[i] = NULL;
            break;
        }
    /* While a fan-out walks the array, slots are only cleared. */
    if (h->fanning > 0 || h->freeing)
        h->dirty = true;
    else
        compact(h);
}

static void format_id(const mc_http_sse_hub *h, uint64_t seq, char *out, size_t cap)
{
    snprintf(out, cap, "%08" PRIx32 "-%" PRIu64, h->opt.epoch, seq);
}

mc_status mc_http_sse_hub_publish(mc_http_sse_hub *hub, const char *event, const char *data,
                                  size_t len, char *id_out)
{
    char id[32];
    format_id(hub, hub->seq + 1, id, sizeof id);
    char *text;
    size_t n;
    mc_status st = mc_http_sse_format(id, event, data ? data : "", data ? len : 0, &text, &n);
    if (st != MC_OK)
        return st;
    mc_http_blob *b = mc_http__blob_new(text, n);
    free(text);
    if (b == NULL)
        return MC_ERR_NOMEM;
    hub->seq++;
    if (id_out != NULL)
        memcpy(id_out, id, strlen(id) + 1);
    if (n > hub->opt.ring_bytes) {
        /* Too big to keep: the ring must stay gap-free, so older events
         * can no longer be resumed past this one. */
        while (hub->count > 0)
            ring_drop_oldest(hub);
    } else {
        while (hub->count > 0 &&
               (hub->count == hub->opt.ring_events || hub->bytes + n > hub->opt.ring_bytes))
            ring_drop_oldest(hub);
        size_t slot = (hub->head + hub->count) % hub->opt.ring_events;
        hub->ring[slot] = (ring_ev){hub->seq, b};
        b->refs++;
        hub->count++;
        hub->bytes += n;
    }
    hub->fanning++;
    for (size_t i = 0; i < hub->nsubs; i++)
        if (hub->subs[i] != NULL)
            write_blob(hub->subs[i], b);
    hub->fanning--;
    if (hub->dirty && hub->fanning == 0)
        compact(hub);
    mc_http__blob_unref(b);
    return MC_OK;
}

/* Parses "<epoch>-<seq>" of this hub; false for anything else. */
static bool parse_id(const mc_http_sse_hub *h, const char *s, uint64_t *seq)
{
    char *end;
    if (strlen(s) < 10 || s[8] != '-')
        return false;
    unsigned long long ep = strtoull(s, &end, 16);
    if (end != s + 8 || ep != h->opt.epoch)
        return false;
    const char *p = s + 9;
    if (*p < '0' || *p > '9')
        return false;
    unsigned long long v = strtoull(p, &end, 10);
    if (*end != '\0')
        return false;
    *seq = v;
    return true;
}

mc_status mc_http_sse_hub_subscribe(mc_http_sse_hub *hub, mc_http_request *req)
{
    if (hub->nsubs >= hub->opt.max_subscribers) {
        mc_http_response_header_add(req, "Retry-After", "5");
        mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "too many event streams\n");
        return MC_ERR_LIMIT;
    }
    const char *last = mc_http_request_header(req, "Last-Event-ID");
    bool reset = false;
    uint64_t from = hub->seq; /* replay events with seq > from */
    if (last != NULL && last[0] != '\0') {
        uint64_t n;
        if (!parse_id(hub, last, &n) || n > hub->seq) {
            reset = true;
        } else if (n < hub->seq) {
            uint64_t oldest = hub->count > 0 ? hub->ring[hub->head].seq : hub->seq + 1;
            if (oldest > n + 1) {
                reset = true;
            } else {
                from = n;
            }
        }
    }
    mc_http_server *srv = mc_http_request_server(req);
    size_t max_unsent = srv ? mc_http__server_config(srv)->sse_max_unsent_bytes : 0;
    size_t replay_bytes = 0;
    for (size_t k = 0; !reset && k < hub->count; k++) {
        const ring_ev *e = &hub->ring[(hub->head + k) % hub->opt.ring_events];
        if (e->seq > from)
            replay_bytes += e->blob->len;
    }
    /* A replay larger than the client can take at once would only get it
     * disconnected as slow: tell it to reload instead. */
    if (replay_bytes > max_unsent / 2)
        reset = true;
    mc_http_sse **ns = hub->subs;
    if (hub->nsubs == hub->subs_cap) {
        size_t nc = hub->subs_cap ? hub->subs_cap * 2 : 16;
        ns = realloc(hub->subs, nc * sizeof *ns);
        if (ns == NULL) {
            mc_http_respond_text(req, 503, "text/plain; charset=utf-8", "out of memory\n");
            return MC_ERR_NOMEM;
        }
        hub->subs = ns;
        hub->subs_cap = nc;
    }
    mc_http_sse *s;
    mc_status st = mc_http_sse_start(req, hub_on_close, hub, &s);
    if (st != MC_OK)
        return st;
    hub->subs[hub->nsubs++] = s;
    if (reset) {
        char id[32], data[128];
        format_id(hub, hub->seq, id, sizeof id);
        snprintf(data, sizeof data, "{\"reason\":\"history unavailable\",\"lastEventId\":\"%s\"}",
                 id);
        return mc_http_sse_send(s, id, "reset", data, strlen(data));
    }
    hub->fanning++;
    for (size_t k = 0; k < hub->count; k++) {
        const ring_ev *e = &hub->ring[(hub->head + k) % hub->opt.ring_events];
        if (e->seq > from && write_blob(s, e->blob) != MC_OK)
            break;
    }
    hub->fanning--;
    if (hub->dirty && hub->fanning == 0)
        compact(hub);
    return MC_OK;
}

size_t mc_http_sse_hub_subscriber_count(const mc_http_sse_hub *hub)
{
    size_t n = 0;
    for (size_t i = 0; i < hub->nsubs; i++)
        n += hub->subs[i] != NULL;
    return n;
}

void mc_http_sse_hub_handler(mc_http_request *req, void *ctx)
{
    mc_http_sse_hub_subscribe(ctx, req);
}
