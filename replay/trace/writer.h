/* The trace writer: appends a run's messages to a trace file in canonical
 * order (FORMAT.md). One writer per file, used from one thread.
 *
 * Output is buffered (a write buffer of opts.buffer_bytes) and written out
 * when the buffer fills and at every checkpoint, so each completed tick
 * reaches the file and a reader following the file sees it. fsync runs at
 * close and, when asked, every opts.fsync_every_ticks checkpoints.
 *
 * Deterministic: the same header, appends and checkpoints (and key) give a
 * byte-identical file. The header's start_time_unix_ms is the only wall-clock
 * value and comes from the caller. */
#ifndef MC_TRACE_WRITER_H
#define MC_TRACE_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"
#include "trace/format.h"
#include "trace/v1/trace.pb-c.h"

typedef struct mc_trace_writer mc_trace_writer;

typedef struct mc_trace_writer_opts {
    /* Size of the write buffer; 0 means 1 MiB. At least 4 KiB is used. */
    size_t buffer_bytes;
    /* fsync after every this many checkpoints; 0: only at close. */
    uint32_t fsync_every_ticks;
    /* Replace an existing file; by default an existing file is refused
     * (MC_ERR_EXISTS) so a recording never overwrites another. */
    bool overwrite;
    /* Path of an Ed25519 secret key file (FORMAT.md "Keys", the value of
     * TRACE_SIGNING_KEY) or NULL for an unsigned trace. Read at open. */
    const char *signing_key_path;
} mc_trace_writer_opts;

/* One core's digest in a checkpoint. */
typedef struct mc_trace_digest {
    uint32_t stage; /* common.v1.Stage, 1..255 */
    uint8_t digest[MC_TRACE_HASH_BYTES];
} mc_trace_digest;

/* What close wrote. */
typedef struct mc_trace_footer_info {
    uint64_t record_count;
    uint64_t checkpoint_count;
    uint64_t last_tick;
    uint64_t bytes;                           /* file size */
    uint8_t final_hash[MC_TRACE_HASH_BYTES];  /* as in the footer */
    uint8_t footer_hash[MC_TRACE_HASH_BYTES]; /* the footer's chain: what is signed */
    bool is_signed;
    uint8_t public_key[32]; /* the signer's, when is_signed */
} mc_trace_footer_info;

/* Creates path and writes the preamble and the header frame (flushed at
 * once, so a reader can open the file right away). header is copied as
 * packed bytes; the caller keeps it. header->format_version must be 0 (filled
 * in) or MC_TRACE_FORMAT_VERSION. An empty build_id or compiler is filled
 * with this build's (mc_trace_build_id, mc_trace_compiler). opts may be
 * NULL. On success *out owns the open file; free it with close or free. */
mc_status mc_trace_writer_open(const char *path, const Trace__V1__TraceHeader *header,
                               const mc_trace_writer_opts *opts, mc_trace_writer **out,
                               mc_error *err);

/* Appends one record: the message published on subject by producer with
 * its stamp's tick and producer_seq, payload being the bytes exactly as
 * published (copied; NULL allowed when len is 0). A record out of canonical
 * order (FORMAT.md) is refused with MC_ERR_INVALID naming both positions and
 * leaves the writer usable; a bad subject/producer/stage is MC_ERR_INVALID,
 * a payload over the frame limit MC_ERR_LIMIT. An I/O failure is MC_ERR_IO
 * and the writer refuses everything after it (MC_ERR_STATE). */
mc_status mc_trace_writer_append(mc_trace_writer *w, uint64_t tick, uint32_t stage,
                                 const char *subject, const char *producer, uint64_t producer_seq,
                                 const uint8_t *payload, size_t len, mc_error *err);

/* Appends the checkpoint of tick (the end of the tick: no record of tick or
 * earlier may follow) with n digests, stages strictly increasing, and writes
 * the buffer out. */
mc_status mc_trace_writer_checkpoint(mc_trace_writer *w, uint64_t tick,
                                     const mc_trace_digest *digests, size_t n, mc_error *err);

/* Writes the buffer out now. */
mc_status mc_trace_writer_flush(mc_trace_writer *w, mc_error *err);

/* Writes the footer (and the signature when a key was given), flushes,
 * fsyncs and closes; fills *info when not NULL. Always frees the writer and
 * sets *w to NULL, even on failure. */
mc_status mc_trace_writer_close(mc_trace_writer **w, mc_trace_footer_info *info, mc_error *err);

/* Writes out what is buffered and closes the file without a footer (the
 * trace then reads as torn), then frees. For error paths. NULL-safe. */
void mc_trace_writer_free(mc_trace_writer *w);

/* Records and checkpoints appended so far, and the current chain value. */
uint64_t mc_trace_writer_records(const mc_trace_writer *w);
void mc_trace_writer_chain(const mc_trace_writer *w, uint8_t out[MC_TRACE_HASH_BYTES]);

/* This build's id (MC_BUILD_ID) and compiler and flags, for the header. */
const char *mc_trace_build_id(void);
const char *mc_trace_compiler(void);

#endif
