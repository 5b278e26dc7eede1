/* Fuzz target: arbitrary bytes opened as a trace from memory. The reader
 * must reject or accept them with a status, never crash, read out of
 * bounds, allocate for a length it has not seen, or leak. Each input is read
 * twice: without a key and with the corpus generator's public key, so the
 * signature paths are reached too; then once more with every checksum and
 * chain recomputed, so mutations reach the checks behind them (protobuf
 * bodies, sequence, order, footer) instead of stopping at the crc. */
#include <sodium.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace/reader.h"
#include "trace_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_all(const uint8_t *data, size_t size, const uint8_t *pk)
{
    mc_trace_reader *r = NULL;
    mc_error err = {0};
    mc_trace_reader_opts o = {.public_key = pk};
    if (mc_trace_reader_open_buffer(data, size, &o, &r, &err) != MC_OK)
        return;
    size_t hlen = 0;
    const uint8_t *hb = mc_trace_reader_header_bytes(r, &hlen);
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(r);
    volatile size_t sink =
        hlen + (hb != NULL ? hb[0] : 0) + (h->scenario ? strlen(h->scenario) : 0);
    mc_trace_record rec;
    /* Every call consumes a frame of at least 45 bytes or ends. */
    for (size_t steps = 0; steps <= size; steps++) {
        if (mc_trace_reader_next(r, &rec, &err) != MC_OK || rec.kind == MC_TRACE_KIND_NONE)
            break;
        /* Touch what the record points to, so a bad pointer shows. */
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            sink += strlen(rec.subject) + strlen(rec.producer);
            if (rec.payload_len > 0)
                sink += rec.payload[0] + rec.payload[rec.payload_len - 1];
        } else if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            for (size_t i = 0; i < rec.checkpoint->n_digests; i++)
                sink += rec.checkpoint->digests[i]->digest.data[31];
        } else if (rec.kind == MC_TRACE_KIND_SIGNATURE) {
            sink += rec.signer_key[31];
        }
        sink += rec.body[rec.body_len - 1] + rec.chain[31];
    }
    (void)sink;
    (void)mc_trace_reader_problem(r);
    mc_trace_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t pk[32];
    static int ready;
    if (!ready) {
        /* The generator's key: seed bytes i * 11 + 3. */
        uint8_t seed[32], sk[64];
        for (int i = 0; i < 32; i++)
            seed[i] = (uint8_t)(i * 11 + 3);
        if (sodium_init() < 0)
            return 0;
        crypto_sign_seed_keypair(pk, sk, seed);
        ready = 1;
    }
    read_all(data, size, NULL);
    read_all(data, size, pk);
    mc_trace_summary s;
    mc_error err = {0};
    (void)mc_trace_verify_buffer(data, size, NULL, &s, &err);
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (copy == NULL)
        return 0;
    if (size > 0)
        memcpy(copy, data, size);
    if (size >= 12)
        trace_rechain(copy, size);
    read_all(copy, size, NULL);
    read_all(copy, size, pk);
    free(copy);
    return 0;
}
