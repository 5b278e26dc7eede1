/* The outbox: where a core appends the messages it emits while handling an
 * input. The shell publishes them in order; the replay harness compares them
 * with the recorded ones. Payloads are the packed protobuf bytes exactly as
 * they will be published (and recorded), so nothing is serialized twice.
 *
 * Bounded: pushing past max_items returns MC_ERR_LIMIT and leaves the outbox
 * unchanged, so a runaway core is an error, never unbounded memory. */
#ifndef MC_CORE_OUTBOX_H
#define MC_CORE_OUTBOX_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

#define MC_SUBJECT_MAX 64

typedef struct mc_outbox_msg {
    char subject[MC_SUBJECT_MAX]; /* e.g. "ops.incidents" */
    uint64_t tick;
    uint64_t producer_seq;
    uint8_t *payload; /* owned by the outbox */
    size_t len;
} mc_outbox_msg;

typedef struct mc_outbox {
    mc_outbox_msg *items;
    size_t len;
    size_t cap;
    size_t max_items;
} mc_outbox;

mc_status mc_outbox_init(mc_outbox *o, size_t max_items);
/* Frees every payload and the array. NULL-safe. */
void mc_outbox_deinit(mc_outbox *o);
/* Drops the messages (after the shell has published them); keeps capacity. */
void mc_outbox_clear(mc_outbox *o);

/* Packs msg and appends it. The caller keeps msg. */
mc_status mc_outbox_push(mc_outbox *o, const char *subject, uint64_t tick, uint64_t producer_seq,
                         const ProtobufCMessage *msg);

/* Appends already packed bytes (copied). */
mc_status mc_outbox_push_bytes(mc_outbox *o, const char *subject, uint64_t tick,
                               uint64_t producer_seq, const uint8_t *payload, size_t len);

#endif
