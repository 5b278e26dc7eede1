#include "trace/reorder.h"

#include <stdlib.h>
#include <string.h>

#include "trace/format.h"

#define DEFAULT_RECORDS 65536u
#define DEFAULT_BYTES   (256u * 1024u * 1024u)
#define DEFAULT_AHEAD   64u

typedef struct entry {
    mc_trace_key key;
    char *subject;
    char *producer;
    uint8_t *payload;
    size_t len;
} entry;

struct mc_trace_reorder {
    mc_trace_reorder_limits lim;
    entry *items; /* sorted by key, ascending */
    size_t len, cap;
    size_t bytes;
    bool released_any;
    uint64_t released; /* every tick <= this is closed */
};

static void entry_free(entry *e)
{
    free(e->subject);
    free(e->producer);
    free(e->payload);
}

mc_status mc_trace_reorder_new(const mc_trace_reorder_limits *limits, mc_trace_reorder **out,
                               mc_error *err)
{
    if (out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace reorder: out is required");
    mc_trace_reorder *ro = calloc(1, sizeof *ro);
    if (ro == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "trace reorder: out of memory");
    if (limits != NULL)
        ro->lim = *limits;
    if (ro->lim.max_records == 0)
        ro->lim.max_records = DEFAULT_RECORDS;
    if (ro->lim.max_bytes == 0)
        ro->lim.max_bytes = DEFAULT_BYTES;
    if (ro->lim.max_ticks_ahead == 0)
        ro->lim.max_ticks_ahead = DEFAULT_AHEAD;
    *out = ro;
    return MC_OK;
}

void mc_trace_reorder_free(mc_trace_reorder *ro)
{
    if (ro == NULL)
        return;
    for (size_t i = 0; i < ro->len; i++)
        entry_free(&ro->items[i]);
    free(ro->items);
    free(ro);
}

/* Index of the first entry whose key is >= key. */
static size_t lower_bound(const mc_trace_reorder *ro, const mc_trace_key *key)
{
    /* Messages mostly arrive in order: check the end first. */
    if (ro->len == 0 || mc_trace_key_cmp(&ro->items[ro->len - 1].key, key) < 0)
        return ro->len;
    size_t lo = 0, hi = ro->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mc_trace_key_cmp(&ro->items[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

mc_status mc_trace_reorder_add(mc_trace_reorder *ro, uint64_t tick, uint32_t stage,
                               const char *subject, const char *producer, uint64_t producer_seq,
                               const uint8_t *payload, size_t len, mc_error *err)
{
    if (ro == NULL || subject == NULL || producer == NULL || (payload == NULL && len > 0))
        return mc_error_set(err, MC_ERR_INVALID, "trace reorder: missing argument");
    if (ro->released_any && tick <= ro->released)
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace reorder: %s (tick %llu, producer_seq %llu) arrived after tick "
                            "%llu was released; it cannot be recorded in canonical order",
                            subject, (unsigned long long)tick, (unsigned long long)producer_seq,
                            (unsigned long long)ro->released);
    if (ro->released_any && tick - ro->released > ro->lim.max_ticks_ahead)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "trace reorder: %s of tick %llu is more than %llu ticks past the last "
                            "released tick %llu",
                            subject, (unsigned long long)tick,
                            (unsigned long long)ro->lim.max_ticks_ahead,
                            (unsigned long long)ro->released);
    mc_trace_key key = {.tick = tick, .stage = stage, .producer_seq = producer_seq};
    size_t at = lower_bound(ro, &key);
    if (at < ro->len && mc_trace_key_cmp(&ro->items[at].key, &key) == 0) {
        const entry *e = &ro->items[at];
        if (e->len == len && strcmp(e->subject, subject) == 0 &&
            strcmp(e->producer, producer) == 0 &&
            (len == 0 || memcmp(e->payload, payload, len) == 0))
            return MC_OK; /* a redelivery: already held */
        return mc_error_set(err, MC_ERR_EXISTS,
                            "trace reorder: two different messages with the key (tick %llu, "
                            "stage %u, producer_seq %llu): %s and %s",
                            (unsigned long long)tick, stage, (unsigned long long)producer_seq,
                            e->subject, subject);
    }
    if (ro->len >= ro->lim.max_records || len > ro->lim.max_bytes - ro->bytes)
        return mc_error_set(err, MC_ERR_LIMIT,
                            "trace reorder: full (%zu records, %zu bytes held; limits %zu, %zu)",
                            ro->len, ro->bytes, ro->lim.max_records, ro->lim.max_bytes);
    if (ro->len == ro->cap) {
        size_t ncap = ro->cap ? ro->cap * 2 : 64;
        if (ncap > ro->lim.max_records)
            ncap = ro->lim.max_records;
        entry *ni = realloc(ro->items, ncap * sizeof *ni);
        if (ni == NULL)
            return mc_error_set(err, MC_ERR_NOMEM, "trace reorder: out of memory");
        ro->items = ni;
        ro->cap = ncap;
    }
    entry e = {.key = key, .len = len};
    e.subject = strdup(subject);
    e.producer = strdup(producer);
    e.payload = malloc(len > 0 ? len : 1);
    if (e.subject == NULL || e.producer == NULL || e.payload == NULL) {
        entry_free(&e);
        return mc_error_set(err, MC_ERR_NOMEM, "trace reorder: out of memory");
    }
    if (len > 0)
        memcpy(e.payload, payload, len);
    memmove(&ro->items[at + 1], &ro->items[at], (ro->len - at) * sizeof *ro->items);
    ro->items[at] = e;
    ro->len++;
    ro->bytes += len;
    return MC_OK;
}

mc_status mc_trace_reorder_release(mc_trace_reorder *ro, uint64_t tick,
                                   mc_trace_reorder_emit_fn emit, void *ctx, mc_error *err)
{
    if (ro == NULL || emit == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "trace reorder: missing argument");
    if (ro->released_any && tick < ro->released)
        return mc_error_set(err, MC_ERR_INVALID,
                            "trace reorder: release of tick %llu, but tick %llu is already "
                            "released",
                            (unsigned long long)tick, (unsigned long long)ro->released);
    size_t n = 0;
    mc_status st = MC_OK;
    while (n < ro->len && ro->items[n].key.tick <= tick) {
        const entry *e = &ro->items[n];
        mc_trace_reorder_entry out = {.tick = e->key.tick,
                                      .stage = e->key.stage,
                                      .producer_seq = e->key.producer_seq,
                                      .subject = e->subject,
                                      .producer = e->producer,
                                      .payload = e->payload,
                                      .len = e->len};
        st = emit(ctx, &out, err);
        if (st != MC_OK)
            break;
        n++;
    }
    for (size_t i = 0; i < n; i++) {
        ro->bytes -= ro->items[i].len;
        entry_free(&ro->items[i]);
    }
    if (n > 0) {
        memmove(ro->items, ro->items + n, (ro->len - n) * sizeof *ro->items);
        ro->len -= n;
    }
    if (st != MC_OK)
        return st;
    ro->released_any = true;
    ro->released = tick;
    return MC_OK;
}

size_t mc_trace_reorder_pending(const mc_trace_reorder *ro)
{
    return ro->len;
}

size_t mc_trace_reorder_pending_bytes(const mc_trace_reorder *ro)
{
    return ro->bytes;
}

bool mc_trace_reorder_released_any(const mc_trace_reorder *ro, uint64_t *last_tick)
{
    if (last_tick != NULL)
        *last_tick = ro->released;
    return ro->released_any;
}
