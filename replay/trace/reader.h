/* The trace reader: opens a trace (a file, or bytes in memory), verifies
 * every frame (checksum, hash chain, sequence, canonical order, footer,
 * signature) and hands out records one at a time, so a replay harness can
 * iterate a run tick by tick and `replay inspect` can print it.
 *
 *   mc_trace_reader *r;
 *   if (mc_trace_reader_open(path, NULL, &r, &err) != MC_OK) ...
 *   mc_trace_record rec;
 *   while ((st = mc_trace_reader_next(r, &rec, &err)) == MC_OK &&
 *          rec.kind != MC_TRACE_KIND_NONE) { ... }
 *   st != MC_OK: damage (MC_ERR_CORRUPT), err says frame, offset and what.
 *   otherwise mc_trace_reader_state(r) is MC_TRACE_CLEAN or MC_TRACE_TORN.
 *
 * A torn trace (ends inside a frame, or has no footer: a crash, or a file
 * still being written) is not an error: every record handed out before the
 * end was fully verified. On a file, calling next again after a torn end
 * reads the frames appended since, so a reader can follow a live recording.
 * One reader is used from one thread. */
#ifndef MC_TRACE_READER_H
#define MC_TRACE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"
#include "trace/format.h"
#include "trace/v1/trace.pb-c.h"

typedef struct mc_trace_reader mc_trace_reader;

typedef struct mc_trace_reader_opts {
    /* Ed25519 public key (32 bytes) the trace must be signed with, or NULL
     * to accept an unsigned trace (a signature present is then checked
     * against the key it names). */
    const uint8_t *public_key;
} mc_trace_reader_opts;

typedef enum mc_trace_state {
    MC_TRACE_READING = 0, /* not at the end yet */
    MC_TRACE_CLEAN,       /* footer (and signature, if any or required) verified */
    MC_TRACE_TORN,        /* ends inside a frame or without a footer */
    MC_TRACE_DAMAGED      /* an integrity or format failure; see the problem */
} mc_trace_state;

typedef enum mc_trace_sig_state {
    MC_TRACE_SIG_NONE = 0,  /* not signed, and no key was required */
    MC_TRACE_SIG_VERIFIED,  /* signed with the required key, valid */
    MC_TRACE_SIG_UNCHECKED, /* signed and valid for the key it names; no key given */
    MC_TRACE_SIG_MISSING,   /* a key was given but the trace is not signed */
    MC_TRACE_SIG_WRONG_KEY, /* signed by another key than the one given */
    MC_TRACE_SIG_BAD        /* the signature does not verify */
} mc_trace_sig_state;

const char *mc_trace_state_name(mc_trace_state s);
const char *mc_trace_sig_state_name(mc_trace_sig_state s);

/* Where reading stopped, when torn or damaged. */
typedef struct mc_trace_problem {
    uint64_t frame;    /* 0-based frame index (the header is 0) */
    uint64_t sequence; /* the record's sequence when known, else 0 */
    uint64_t offset;   /* byte offset of the frame's first byte */
    char what[256];
} mc_trace_problem;

/* One verified frame. Pointers are owned by the reader and valid until the
 * next call to next or free. */
typedef struct mc_trace_record {
    mc_trace_kind kind; /* RECORD, CHECKPOINT, FOOTER, SIGNATURE; NONE at the end */
    uint64_t frame;     /* 0-based frame index */
    uint64_t offset;    /* byte offset of the frame in the file */
    uint32_t frame_len; /* bytes of the whole frame */
    /* RECORD */
    uint64_t sequence;
    uint64_t tick; /* RECORD, CHECKPOINT; FOOTER: last_tick */
    uint32_t stage;
    const char *subject;  /* NUL-terminated */
    const char *producer; /* NUL-terminated */
    uint64_t producer_seq;
    const uint8_t *payload; /* the bytes as published */
    size_t payload_len;
    /* CHECKPOINT */
    const Trace__V1__Checkpoint *checkpoint;
    /* FOOTER */
    const Trace__V1__TraceFooter *footer;
    /* SIGNATURE */
    const uint8_t *signer_key; /* 32 bytes */
    /* Every kind: the body as stored (kind byte first) and the chain value
     * after this frame (32 bytes). */
    const uint8_t *body;
    uint32_t body_len;
    const uint8_t *chain;
} mc_trace_record;

/* Opens path, checks the preamble and reads the header frame. An unknown
 * version is MC_ERR_UNSUPPORTED (the message lists the versions this build
 * reads), not a trace at all MC_ERR_PARSE, a damaged or torn header
 * MC_ERR_CORRUPT. opts may be NULL. */
mc_status mc_trace_reader_open(const char *path, const mc_trace_reader_opts *opts,
                               mc_trace_reader **out, mc_error *err);

/* The same over len bytes at data, which are not copied and must outlive
 * the reader. */
mc_status mc_trace_reader_open_buffer(const uint8_t *data, size_t len,
                                      const mc_trace_reader_opts *opts, mc_trace_reader **out,
                                      mc_error *err);

/* The unpacked header, and its body bytes as stored (after the kind byte). */
const Trace__V1__TraceHeader *mc_trace_reader_header(const mc_trace_reader *r);
const uint8_t *mc_trace_reader_header_bytes(const mc_trace_reader *r, size_t *len);

/* Reads and verifies the next frame into *rec. Returns MC_OK with
 * rec->kind == MC_TRACE_KIND_NONE at the end (state CLEAN or TORN), and
 * MC_ERR_CORRUPT on damage (state DAMAGED; the same error again on every
 * later call). */
mc_status mc_trace_reader_next(mc_trace_reader *r, mc_trace_record *rec, mc_error *err);

mc_trace_state mc_trace_reader_state(const mc_trace_reader *r);
/* Why the reader stopped (torn or damaged); NULL while reading or clean. */
const mc_trace_problem *mc_trace_reader_problem(const mc_trace_reader *r);
mc_trace_sig_state mc_trace_reader_signature(const mc_trace_reader *r);
/* Chain value of the last verified frame. */
void mc_trace_reader_chain(const mc_trace_reader *r, uint8_t out[MC_TRACE_HASH_BYTES]);

/* NULL-safe. */
void mc_trace_reader_free(mc_trace_reader *r);

/* Records per subject in a summary; further subjects are counted in
 * other_records. */
#define MC_TRACE_SUMMARY_SUBJECTS 32

typedef struct mc_trace_subject_count {
    char subject[MC_TRACE_NAME_MAX + 1];
    uint64_t records;
    uint64_t payload_bytes;
} mc_trace_subject_count;

typedef struct mc_trace_summary {
    mc_trace_state state;
    mc_trace_sig_state signature;
    mc_trace_problem problem; /* when torn or damaged */
    uint32_t format_version;
    uint64_t frames; /* verified frames, header included */
    uint64_t records;
    uint64_t checkpoints;
    uint64_t ticks; /* distinct ticks seen in records and checkpoints */
    uint64_t first_tick, last_tick;
    uint64_t valid_bytes; /* end of the last verified frame */
    bool has_footer;
    uint8_t final_hash[MC_TRACE_HASH_BYTES]; /* chain of the last verified frame */
    mc_trace_subject_count subjects[MC_TRACE_SUMMARY_SUBJECTS]; /* sorted by subject */
    size_t subject_count;
    uint64_t other_records;
} mc_trace_summary;

/* Reads the whole trace at path and fills *summary. public_key as in the
 * reader options. Returns MC_OK only for a clean trace; a torn one is
 * MC_ERR_CORRUPT with summary->state TORN ("torn: ..."), a damaged one
 * MC_ERR_CORRUPT with state DAMAGED; an unreadable one the open error. */
mc_status mc_trace_verify(const char *path, const uint8_t *public_key, mc_trace_summary *summary,
                          mc_error *err);

/* The same over bytes in memory. */
mc_status mc_trace_verify_buffer(const uint8_t *data, size_t len, const uint8_t *public_key,
                                 mc_trace_summary *summary, mc_error *err);

typedef struct mc_trace_diff {
    bool equal;
    uint64_t frame; /* first differing frame */
    uint64_t offset_a, offset_b;
    char what[256];
} mc_trace_diff;

/* Compares two traces as recordings: headers equal except
 * start_time_unix_ms, then every frame's body equal (the footer's
 * final_hash, the chains and any signature are not compared: they depend on
 * the start time). Both traces are verified (no key); a damaged or torn one
 * is an error. diff->equal tells the result. */
mc_status mc_trace_compare(const char *path_a, const char *path_b, mc_trace_diff *diff,
                           mc_error *err);

#endif
