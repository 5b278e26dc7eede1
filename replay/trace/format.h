/* The trace file format (FORMAT.md, version 1): constants, frame kinds, the
 * canonical record order and the checksums shared by the writer and the
 * reader. The layout is documented byte by byte in replay/trace/FORMAT.md;
 * the constants here must match it. */
#ifndef MC_TRACE_FORMAT_H
#define MC_TRACE_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* "MCTRACE" and a NUL: the first 8 bytes of every trace. */
#define MC_TRACE_MAGIC     "MCTRACE"
#define MC_TRACE_MAGIC_LEN 8
/* The version this build writes. */
#define MC_TRACE_FORMAT_VERSION 1u
/* Magic and u32 version. */
#define MC_TRACE_PREAMBLE_LEN 12
/* u32 body_len, u32 len_check. */
#define MC_TRACE_FRAME_PREFIX_LEN 8
/* u32 crc, 32-byte chain hash. */
#define MC_TRACE_FRAME_TRAILER_LEN 36
#define MC_TRACE_FRAME_OVERHEAD    (MC_TRACE_FRAME_PREFIX_LEN + MC_TRACE_FRAME_TRAILER_LEN)
/* A body longer than this is damage; nobody allocates it. */
#define MC_TRACE_MAX_BODY   (64u * 1024u * 1024u)
#define MC_TRACE_HASH_BYTES 32
/* Kind, stage, subject_len, producer_len, sequence, tick, producer_seq. */
#define MC_TRACE_RECORD_FIXED 28
/* Longest subject or producer name. */
#define MC_TRACE_NAME_MAX 255
/* Kind, algorithm, public key, signature. */
#define MC_TRACE_SIG_BODY_LEN    98
#define MC_TRACE_SIG_ALG_ED25519 1
/* Prefix of the signed message: these 12 bytes, then the footer's chain. */
#define MC_TRACE_SIG_DOMAIN     "MCTRACE-SIG1"
#define MC_TRACE_SIG_DOMAIN_LEN 12

/* The record stage of inputs from outside the cores that are not messages
 * of a stage (FORMAT.md "Inputs"): after every stage of their tick. */
#define MC_TRACE_STAGE_INPUTS 5

typedef enum mc_trace_kind {
    MC_TRACE_KIND_NONE = 0, /* not a frame: the end of the trace */
    MC_TRACE_KIND_HEADER = 1,
    MC_TRACE_KIND_RECORD = 2,
    MC_TRACE_KIND_CHECKPOINT = 3,
    MC_TRACE_KIND_FOOTER = 4,
    MC_TRACE_KIND_SIGNATURE = 5
} mc_trace_kind;

/* Short name of a kind ("record"); never NULL. */
const char *mc_trace_kind_name(mc_trace_kind kind);

/* Whether this build reads format version v, and the list of versions it
 * reads as text ("1"), for the message that refuses another. */
bool mc_trace_version_readable(uint32_t v);
const char *mc_trace_readable_versions(void);

/* The canonical order of records: (tick, stage, producer_seq). */
typedef struct mc_trace_key {
    uint64_t tick;
    uint32_t stage;
    uint64_t producer_seq;
} mc_trace_key;

/* <0, 0, >0 like strcmp. */
int mc_trace_key_cmp(const mc_trace_key *a, const mc_trace_key *b);

/* CRC-32C (Castagnoli). Start with crc = 0 and feed the result back in to
 * continue over more bytes: crc32c(crc32c(0, a), b) == crc32c(0, a ‖ b). */
uint32_t mc_trace_crc32c(uint32_t crc, const void *data, size_t len);
/* True when a checkpoint digest says something: 32 bytes, not all zero. An
 * all-zero digest means "not recorded" (FORMAT.md, CHECKPOINT) and is never
 * compared. */
bool mc_trace_digest_present(const uint8_t *digest, size_t len);
/* The table-driven version mc_trace_crc32c falls back to without SSE4.2
 * (exposed so tests can check both agree). */
uint32_t mc_trace_crc32c_portable(uint32_t crc, const void *data, size_t len);

/* chain_-1: BLAKE2b-256 of the 12-byte preamble of the given version. */
void mc_trace_chain_start(uint32_t version, uint8_t out[MC_TRACE_HASH_BYTES]);

/* Whether name is a valid subject or producer: 1..255 bytes of 0x21..0x7E. */
bool mc_trace_name_valid(const char *name, size_t len);

/* Little-endian helpers for the fixed-width fields. */
static inline void mc_trace_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void mc_trace_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t mc_trace_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t mc_trace_get_u64(const uint8_t *p)
{
    return (uint64_t)mc_trace_get_u32(p) | ((uint64_t)mc_trace_get_u32(p + 4) << 32);
}

#endif
