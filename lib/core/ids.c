#include "core/ids.h"

#include <inttypes.h>
#include <stdio.h>

#include "core/digest.h"

void mc_id_uuid(char out[MC_UUID_STR_LEN], const char *kind, const char *run_id, uint64_t tick,
                const char *target, const char *extra)
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/id/v1");
    mc_digest_str(&d, kind);
    mc_digest_str(&d, run_id);
    mc_digest_u64(&d, tick);
    mc_digest_str(&d, target);
    mc_digest_str(&d, extra);
    uint8_t h[MC_DIGEST_BYTES];
    mc_digest_final(&d, h);
    h[6] = (uint8_t)((h[6] & 0x0f) | 0x80); /* version 8 */
    h[8] = (uint8_t)((h[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, MC_UUID_STR_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", h[0], h[1],
             h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13], h[14],
             h[15]);
}

void mc_id_msg(char *out, unsigned long n, const char *run_id, const char *subject, uint64_t tick,
               uint64_t producer_seq)
{
    snprintf(out, n, "%s:%s:%" PRIu64 ":%" PRIu64, run_id ? run_id : "", subject ? subject : "",
             tick, producer_seq);
}

void mc_id_run(char out[21], const char *scenario, uint64_t seed, uint64_t reset_count)
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/run/v1");
    mc_digest_str(&d, scenario);
    mc_digest_u64(&d, seed);
    mc_digest_u64(&d, reset_count);
    uint8_t h[MC_DIGEST_BYTES];
    mc_digest_final(&d, h);
    snprintf(out, 21, "run-%02x%02x%02x%02x%02x%02x%02x%02x", h[0], h[1], h[2], h[3], h[4], h[5],
             h[6], h[7]);
}
