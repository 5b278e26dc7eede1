#include "trace/format.h"

#include <pthread.h>
#include <sodium.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

const char *mc_trace_kind_name(mc_trace_kind kind)
{
    switch (kind) {
    case MC_TRACE_KIND_NONE: return "end";
    case MC_TRACE_KIND_HEADER: return "header";
    case MC_TRACE_KIND_RECORD: return "record";
    case MC_TRACE_KIND_CHECKPOINT: return "checkpoint";
    case MC_TRACE_KIND_FOOTER: return "footer";
    case MC_TRACE_KIND_SIGNATURE: return "signature";
    }
    return "unknown";
}

bool mc_trace_version_readable(uint32_t v)
{
    return v == 1;
}

const char *mc_trace_readable_versions(void)
{
    return "1";
}

int mc_trace_key_cmp(const mc_trace_key *a, const mc_trace_key *b)
{
    if (a->tick != b->tick)
        return a->tick < b->tick ? -1 : 1;
    if (a->stage != b->stage)
        return a->stage < b->stage ? -1 : 1;
    if (a->producer_seq != b->producer_seq)
        return a->producer_seq < b->producer_seq ? -1 : 1;
    return 0;
}

/* CRC-32C, slicing by 8: eight 256-entry tables let the loop consume eight
 * bytes per step, several times faster than the byte-wise loop, which
 * matters because every trace byte is checksummed on write and on read. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw_ok;

#if defined(__x86_64__)
/* SSE4.2 has a CRC-32C instruction (the same polynomial, bit-reflected like
 * the table version): about ten times the table's speed, so checksumming
 * stops mattering next to the BLAKE2b chain. Chosen at run time. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t len)
{
    uint64_t c64 = c;
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8); /* little-endian: byte order as the instruction wants */
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        len -= 8;
    }
    c = (uint32_t)c64;
    while (len-- > 0)
        c = _mm_crc32_u8(c, *p++);
    return c;
}
#endif

static void crc_init(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    crc_hw_ok = __builtin_cpu_supports("sse4.2");
#endif
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFFu] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

uint32_t mc_trace_crc32c(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
#if defined(__x86_64__)
    if (crc_hw_ok)
        return ~crc_hw(~crc, data, len);
#endif
    return mc_trace_crc32c_portable(crc, data, len);
}

uint32_t mc_trace_crc32c_portable(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
                           ((uint32_t)p[3] << 24));
        uint32_t hi = (uint32_t)p[4] | ((uint32_t)p[5] << 8) | ((uint32_t)p[6] << 16) |
                      ((uint32_t)p[7] << 24);
        c = crc_table[7][lo & 0xFFu] ^ crc_table[6][(lo >> 8) & 0xFFu] ^
            crc_table[5][(lo >> 16) & 0xFFu] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFFu] ^
            crc_table[2][(hi >> 8) & 0xFFu] ^ crc_table[1][(hi >> 16) & 0xFFu] ^
            crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFFu] ^ (c >> 8);
    return ~c;
}

void mc_trace_chain_start(uint32_t version, uint8_t out[MC_TRACE_HASH_BYTES])
{
    uint8_t pre[MC_TRACE_PREAMBLE_LEN];
    memcpy(pre, MC_TRACE_MAGIC, MC_TRACE_MAGIC_LEN); /* includes the NUL */
    mc_trace_put_u32(pre + MC_TRACE_MAGIC_LEN, version);
    crypto_generichash(out, MC_TRACE_HASH_BYTES, pre, sizeof pre, NULL, 0);
}

bool mc_trace_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > MC_TRACE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch < 0x21 || ch > 0x7E)
            return false;
    }
    return true;
}

bool mc_trace_digest_present(const uint8_t *digest, size_t len)
{
    if (digest == NULL || len != MC_TRACE_HASH_BYTES)
        return false;
    for (size_t i = 0; i < len; i++)
        if (digest[i] != 0)
            return true;
    return false;
}
