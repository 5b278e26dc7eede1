#include "core/digest.h"

#include <math.h>
#include <string.h>

void mc_digest_init(mc_digest *d, const char *domain)
{
    crypto_generichash_init(&d->state, NULL, 0, MC_DIGEST_BYTES);
    mc_digest_str(d, domain);
}

void mc_digest_u64(mc_digest *d, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(&d->state, b, sizeof b);
}

void mc_digest_i64(mc_digest *d, int64_t v) { mc_digest_u64(d, (uint64_t)v); }

void mc_digest_u32(mc_digest *d, uint32_t v)
{
    uint8_t b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    crypto_generichash_update(&d->state, b, sizeof b);
}

void mc_digest_bool(mc_digest *d, int v)
{
    uint8_t b = v ? 1 : 0;
    crypto_generichash_update(&d->state, &b, 1);
}

void mc_digest_f64(mc_digest *d, double v)
{
    if (v == 0.0)
        v = 0.0; /* folds -0.0 into +0.0 */
    uint64_t bits;
    if (isnan(v))
        bits = UINT64_C(0x7ff8000000000000);
    else
        memcpy(&bits, &v, sizeof bits);
    mc_digest_u64(d, bits);
}

void mc_digest_str(mc_digest *d, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    mc_digest_u64(d, (uint64_t)n);
    if (n)
        crypto_generichash_update(&d->state, (const unsigned char *)s, n);
}

void mc_digest_bytes(mc_digest *d, const void *p, size_t n)
{
    mc_digest_u64(d, (uint64_t)n);
    if (n)
        crypto_generichash_update(&d->state, p, n);
}

void mc_digest_final(mc_digest *d, uint8_t out[MC_DIGEST_BYTES])
{
    crypto_generichash_final(&d->state, out, MC_DIGEST_BYTES);
}

void mc_digest_hex(const uint8_t digest[MC_DIGEST_BYTES], char out[2 * MC_DIGEST_BYTES + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < MC_DIGEST_BYTES; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 15];
    }
    out[2 * MC_DIGEST_BYTES] = '\0';
}
