/* Canonical state digests for the cores: BLAKE2b-256 over an explicit,
 * byte-exact encoding (little-endian integers, IEEE-754 bit patterns,
 * length-prefixed strings). Never hash a struct's memory: padding and
 * pointers would leak in. */
#ifndef MC_CORE_DIGEST_H
#define MC_CORE_DIGEST_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#define MC_DIGEST_BYTES 32

typedef struct mc_digest {
    crypto_generichash_state state;
} mc_digest;

/* Starts a digest; domain separates digests of different kinds of state
 * (e.g. "engine/v1"). */
void mc_digest_init(mc_digest *d, const char *domain);
void mc_digest_u64(mc_digest *d, uint64_t v);
void mc_digest_i64(mc_digest *d, int64_t v);
void mc_digest_u32(mc_digest *d, uint32_t v);
void mc_digest_bool(mc_digest *d, int v);
/* The IEEE-754 bit pattern; -0.0 and every NaN are canonicalized first so
 * equal states hash equal. */
void mc_digest_f64(mc_digest *d, double v);
/* Length-prefixed; NULL hashes like "". */
void mc_digest_str(mc_digest *d, const char *s);
void mc_digest_bytes(mc_digest *d, const void *p, size_t n);
void mc_digest_final(mc_digest *d, uint8_t out[MC_DIGEST_BYTES]);

/* Lowercase hex of a digest into out (65 bytes with the NUL). */
void mc_digest_hex(const uint8_t digest[MC_DIGEST_BYTES], char out[2 * MC_DIGEST_BYTES + 1]);

#endif
