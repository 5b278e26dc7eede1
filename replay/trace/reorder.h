/* The reorder buffer for live recording: messages of a run arrive from the
 * bus in any order across subjects, but the trace wants them in canonical
 * order (tick, stage, producer_seq). The recorder adds each message for an
 * open tick as it arrives; when the orchestrator's watermark says a tick is
 * complete it releases that tick (and any earlier one), and the buffer hands
 * the records out in canonical order, ready for mc_trace_writer_append.
 *
 * Bounded in records, bytes and open ticks: past a bound, add refuses
 * (MC_ERR_LIMIT) and keeps what it holds. A record for a tick already
 * released is refused (MC_ERR_INVALID): it would break the trace's order. A
 * redelivered duplicate (same key, same subject, producer and bytes, as
 * JetStream may redeliver) is dropped silently; the same key with different
 * content is MC_ERR_EXISTS. Pure and single-threaded. */
#ifndef MC_TRACE_REORDER_H
#define MC_TRACE_REORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

typedef struct mc_trace_reorder mc_trace_reorder;

typedef struct mc_trace_reorder_limits {
    size_t max_records;       /* records held at once; 0: 65536 */
    size_t max_bytes;         /* payload bytes held at once; 0: 256 MiB */
    uint64_t max_ticks_ahead; /* a record's tick may be at most this far past
                                 the last released tick; 0: 64 */
} mc_trace_reorder_limits;

/* One buffered record, as handed to the release callback. The pointers are
 * valid during the callback only. */
typedef struct mc_trace_reorder_entry {
    uint64_t tick;
    uint32_t stage;
    uint64_t producer_seq;
    const char *subject;
    const char *producer;
    const uint8_t *payload;
    size_t len;
} mc_trace_reorder_entry;

/* Called once per released record, in canonical order. A non-OK return
 * stops the release; that record and the later ones stay buffered (so a
 * retry after fixing the cause loses nothing). */
typedef mc_status (*mc_trace_reorder_emit_fn)(void *ctx, const mc_trace_reorder_entry *e,
                                              mc_error *err);

/* limits may be NULL (defaults). The first released tick may be any tick;
 * before any release, every tick is open. */
mc_status mc_trace_reorder_new(const mc_trace_reorder_limits *limits, mc_trace_reorder **out,
                               mc_error *err);
/* NULL-safe; drops what is still buffered. */
void mc_trace_reorder_free(mc_trace_reorder *ro);

/* Copies a record in. */
mc_status mc_trace_reorder_add(mc_trace_reorder *ro, uint64_t tick, uint32_t stage,
                               const char *subject, const char *producer, uint64_t producer_seq,
                               const uint8_t *payload, size_t len, mc_error *err);

/* Declares every tick <= tick complete and emits their records in canonical
 * order. The released mark moves to tick only when every record was
 * emitted, so a release that failed in the callback can be retried with the
 * same tick. Releasing a tick below the released mark is MC_ERR_INVALID;
 * releasing it again is a no-op. */
mc_status mc_trace_reorder_release(mc_trace_reorder *ro, uint64_t tick,
                                   mc_trace_reorder_emit_fn emit, void *ctx, mc_error *err);

/* Records buffered, payload bytes buffered, whether any tick was released
 * and the last released tick. */
size_t mc_trace_reorder_pending(const mc_trace_reorder *ro);
size_t mc_trace_reorder_pending_bytes(const mc_trace_reorder *ro);
bool mc_trace_reorder_released_any(const mc_trace_reorder *ro, uint64_t *last_tick);

#endif
