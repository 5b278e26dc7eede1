#include "core/rng.h"

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t mc_rng_u64(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw)
{
    /* Each input goes through the finalizer before the next is folded in, so
     * nearby keys (tick, tick+1) give unrelated outputs. */
    const uint64_t golden = UINT64_C(0x9e3779b97f4a7c15);
    uint64_t h = mix64(seed + golden);
    h = mix64(h ^ ((uint64_t)stream + golden * 2));
    h = mix64(h ^ (tick + golden * 3));
    h = mix64(h ^ (entity + golden * 4));
    h = mix64(h ^ ((uint64_t)draw + golden * 5));
    return h;
}

double mc_rng_unit(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw)
{
    return (double)(mc_rng_u64(seed, stream, tick, entity, draw) >> 11) * 0x1.0p-53;
}

double mc_rng_normal(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw)
{
    double sum = 0.0;
    for (uint32_t i = 0; i < 12; i++)
        sum += mc_rng_unit(seed, stream, tick, entity, draw * 12u + i);
    return sum - 6.0;
}

uint64_t mc_rng_hash_str(const char *s)
{
    /* FNV-1a, then the finalizer for better low bits. */
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= UINT64_C(0x100000001b3);
    }
    return mix64(h);
}
