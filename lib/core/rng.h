/* Counter-based randomness for the cores (DESIGN.md, determinism rule 2).
 *
 * A draw is a pure function of (seed, stream, tick, entity, draw): no state
 * is carried between calls, so the value a core sees never depends on how
 * many draws other code made before it, on iteration order, or on restarts.
 * The mixing function is a 64-bit finalizer chain (SplitMix64 constants);
 * it is not cryptographic, it only has to be fast, well distributed and the
 * same on every machine. */
#ifndef MC_CORE_RNG_H
#define MC_CORE_RNG_H

#include <stdint.h>

/* Streams keep independent uses of randomness apart. Add new ones at the end:
 * renumbering changes every run. */
typedef enum mc_rng_stream {
    MC_RNG_STREAM_LOAD_NOISE = 1,
    MC_RNG_STREAM_BURST = 2,
    MC_RNG_STREAM_LATENCY_NOISE = 3,
    MC_RNG_STREAM_ERROR_NOISE = 4,
    MC_RNG_STREAM_CRASH = 5,
    MC_RNG_STREAM_PLACEMENT = 6,
    MC_RNG_STREAM_TOPOLOGY = 7,
    MC_RNG_STREAM_MEMORY = 8,
    MC_RNG_STREAM_TEST = 99
} mc_rng_stream;

/* 64 uniformly distributed bits. */
uint64_t mc_rng_u64(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw);

/* A double in [0, 1) with 53 random bits. */
double mc_rng_unit(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw);

/* An approximately standard normal value (mean 0, variance 1), as the sum of
 * 12 uniforms minus 6 (Irwin-Hall). Bounded to [-6, 6]; uses only + and -,
 * so it is exact across compilers and libm versions. Uses draws
 * draw*12 .. draw*12+11 of the same key. */
double mc_rng_normal(uint64_t seed, uint32_t stream, uint64_t tick, uint64_t entity, uint32_t draw);

/* A 64-bit hash of a string, for turning ids into entity numbers. */
uint64_t mc_rng_hash_str(const char *s);

#endif
