/* Derived ids (DESIGN.md, determinism rule 6): a UUID is BLAKE2b of the
 * fields that identify the thing, so the same run produces the same ids and
 * a re-published message keeps its id. */
#ifndef MC_CORE_IDS_H
#define MC_CORE_IDS_H

#include <stdint.h>

#define MC_UUID_STR_LEN 37 /* 36 characters and the NUL */

/* Fills out with a UUID (version 8, RFC 9562 "custom") derived from the
 * parts. Any string part may be NULL (hashed like ""). */
void mc_id_uuid(char out[MC_UUID_STR_LEN], const char *kind, const char *run_id, uint64_t tick,
                const char *target, const char *extra);

/* The JetStream de-duplication id of a published message:
 * "<run>:<subject>:<tick>:<producer_seq>", cut to fit out. */
void mc_id_msg(char *out, unsigned long n, const char *run_id, const char *subject, uint64_t tick,
               uint64_t producer_seq);

/* A run id derived from the scenario, seed and how many times the run was
 * reset: "run-<16 hex digits>". out must hold 21 bytes. */
void mc_id_run(char out[21], const char *scenario, uint64_t seed, uint64_t reset_count);

#endif
