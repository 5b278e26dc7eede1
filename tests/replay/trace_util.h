/* Helpers shared by the trace tests, the corpus generator and the
 * benchmark: a deterministic sample run written through the writer, and
 * small file utilities. */
#ifndef MC_TESTS_TRACE_UTIL_H
#define MC_TESTS_TRACE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "trace/writer.h"

/* One record of the sample run, as appended. */
typedef struct sample_rec {
    uint64_t tick;
    uint32_t stage;
    const char *subject;
    const char *producer;
    uint64_t producer_seq;
    uint8_t payload[1500];
    size_t len;
} sample_rec;

typedef struct sample_spec {
    uint64_t ticks;            /* ticks 1..ticks */
    uint32_t metrics_per_tick; /* sim.metrics chunks per tick */
    int64_t start_time_ms;
    const char *signing_key_path; /* NULL: unsigned */
    int no_footer;                /* 1: free the writer instead of closing it */
} sample_spec;

/* Fills h (strings are static) for the sample run. */
void sample_header(Trace__V1__TraceHeader *h, int64_t start_time_ms);

/* The i-th record of a run of spec; returns the record count when
 * out is NULL. Records are generated in canonical order. */
size_t sample_records(const sample_spec *spec, sample_rec *out, size_t cap);

/* The digests of tick t's checkpoint (4 stages). */
void sample_digests(uint64_t tick, mc_trace_digest out[4]);

/* Writes the sample run to path (overwriting); fills info when closed. */
mc_status sample_write(const char *path, const sample_spec *spec, mc_trace_footer_info *info,
                       mc_error *err);

/* A fresh temporary directory (removed by tmpdir_remove) and a path in it. */
void tmpdir_make(char *dir, size_t n);
void tmpdir_remove(const char *dir);
void path_in(char *out, size_t n, const char *dir, const char *name);

/* Whole-file read (malloc'd) and write. */
uint8_t *file_read(const char *path, size_t *len);
int file_write(const char *path, const uint8_t *data, size_t len);

/* Recomputes every frame's length check, crc and chain in place, as a
 * forger who knows the format would: only order, sequence, footer and
 * signature checks are left to catch what was changed. */
void trace_rechain(uint8_t *d, size_t len);

#endif
