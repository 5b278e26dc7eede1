#include "core/outbox.h"

#include <stdlib.h>
#include <string.h>

mc_status mc_outbox_init(mc_outbox *o, size_t max_items)
{
    memset(o, 0, sizeof *o);
    o->max_items = max_items;
    return MC_OK;
}

void mc_outbox_clear(mc_outbox *o)
{
    if (o == NULL)
        return;
    for (size_t i = 0; i < o->len; i++)
        free(o->items[i].payload);
    o->len = 0;
}

void mc_outbox_deinit(mc_outbox *o)
{
    if (o == NULL)
        return;
    mc_outbox_clear(o);
    free(o->items);
    memset(o, 0, sizeof *o);
}

static mc_status reserve(mc_outbox *o)
{
    if (o->len >= o->max_items)
        return MC_ERR_LIMIT;
    if (o->len < o->cap)
        return MC_OK;
    size_t cap = o->cap ? o->cap * 2 : 16;
    if (cap > o->max_items)
        cap = o->max_items;
    mc_outbox_msg *items = realloc(o->items, cap * sizeof *items);
    if (items == NULL)
        return MC_ERR_NOMEM;
    o->items = items;
    o->cap = cap;
    return MC_OK;
}

static mc_status append(mc_outbox *o, const char *subject, uint64_t tick, uint64_t producer_seq,
                        uint8_t *payload, size_t len)
{
    if (strlen(subject) >= MC_SUBJECT_MAX)
        return MC_ERR_INVALID;
    mc_outbox_msg *m = &o->items[o->len++];
    memset(m, 0, sizeof *m);
    memcpy(m->subject, subject, strlen(subject) + 1);
    m->tick = tick;
    m->producer_seq = producer_seq;
    m->payload = payload;
    m->len = len;
    return MC_OK;
}

mc_status mc_outbox_push(mc_outbox *o, const char *subject, uint64_t tick, uint64_t producer_seq,
                         const ProtobufCMessage *msg)
{
    mc_status st = reserve(o);
    if (st != MC_OK)
        return st;
    size_t len = protobuf_c_message_get_packed_size(msg);
    /* malloc(0) may return NULL; always allocate at least one byte. */
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return MC_ERR_NOMEM;
    size_t packed = protobuf_c_message_pack(msg, buf);
    if (packed != len) {
        free(buf);
        return MC_ERR_INTERNAL;
    }
    st = append(o, subject, tick, producer_seq, buf, len);
    if (st != MC_OK)
        free(buf);
    return st;
}

mc_status mc_outbox_push_bytes(mc_outbox *o, const char *subject, uint64_t tick,
                               uint64_t producer_seq, const uint8_t *payload, size_t len)
{
    mc_status st = reserve(o);
    if (st != MC_OK)
        return st;
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return MC_ERR_NOMEM;
    if (len)
        memcpy(buf, payload, len);
    st = append(o, subject, tick, producer_seq, buf, len);
    if (st != MC_OK)
        free(buf);
    return st;
}
