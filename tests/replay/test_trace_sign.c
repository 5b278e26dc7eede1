/* replay/trace: Ed25519 signing of the final hash, verification with a
 * public key (verified, wrong key, bad signature, missing signature) and the
 * key file formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "trace/keys.h"
#include "trace/reader.h"
#include "trace/writer.h"
#include "trace_util.h"

typedef struct fixture {
    char dir[512];
    char seed_path[600], sk_path[600], pub_path[600], other_pub_path[600];
    uint8_t pk[32], sk[64], other_pk[32];
    char signed_path[600];
    uint8_t *data;
    size_t len;
    mc_trace_footer_info info;
} fixture;

static void write_text(const char *path, const char *text)
{
    assert_int_equal(file_write(path, (const uint8_t *)text, strlen(text)), 0);
}

static void hex_file(const char *path, const uint8_t *bin, size_t n, int upper)
{
    char hex[257];
    sodium_bin2hex(hex, sizeof hex, bin, n);
    if (upper)
        for (char *p = hex; *p; p++)
            if (*p >= 'a' && *p <= 'f')
                *p = (char)(*p - 'a' + 'A');
    char text[300];
    snprintf(text, sizeof text, "  %s\n", hex);
    write_text(path, text);
}

static int setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    fixture *f = calloc(1, sizeof *f);
    tmpdir_make(f->dir, sizeof f->dir);
    uint8_t seed[32];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 11 + 3);
    crypto_sign_seed_keypair(f->pk, f->sk, seed);
    uint8_t other_sk[64];
    seed[0] ^= 1;
    crypto_sign_seed_keypair(f->other_pk, other_sk, seed);
    path_in(f->seed_path, sizeof f->seed_path, f->dir, "seed.key");
    path_in(f->sk_path, sizeof f->sk_path, f->dir, "secret.key");
    path_in(f->pub_path, sizeof f->pub_path, f->dir, "public.key");
    path_in(f->other_pub_path, sizeof f->other_pub_path, f->dir, "other.pub");
    hex_file(f->seed_path, f->sk, 32, 0); /* the seed is the first half */
    hex_file(f->sk_path, f->sk, 64, 1);
    hex_file(f->pub_path, f->pk, 32, 0);
    hex_file(f->other_pub_path, f->other_pk, 32, 0);
    path_in(f->signed_path, sizeof f->signed_path, f->dir, "signed.trace");
    sample_spec spec = {.ticks = 4, .metrics_per_tick = 2, .signing_key_path = f->seed_path};
    mc_error err = {0};
    if (sample_write(f->signed_path, &spec, &f->info, &err) != MC_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    f->data = file_read(f->signed_path, &f->len);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    tmpdir_remove(f->dir);
    free(f->data);
    free(f);
    return 0;
}

static mc_status verify_mem(const uint8_t *d, size_t len, const uint8_t *pk, mc_trace_summary *s,
                            mc_error *err)
{
    return mc_trace_verify_buffer(d, len, pk, s, err);
}

static void test_signed_trace_verifies(void **state)
{
    fixture *f = *state;
    assert_true(f->info.is_signed);
    assert_memory_equal(f->info.public_key, f->pk, 32);
    uint8_t pk[32];
    mc_error err = {0};
    assert_int_equal(mc_trace_key_load_public(f->pub_path, pk, &err), MC_OK);
    assert_memory_equal(pk, f->pk, 32);

    mc_trace_summary s;
    assert_int_equal(mc_trace_verify(f->signed_path, pk, &s, &err), MC_OK);
    assert_int_equal(s.state, MC_TRACE_CLEAN);
    assert_int_equal(s.signature, MC_TRACE_SIG_VERIFIED);
    /* Without a key the signature is checked against the key it names. */
    assert_int_equal(mc_trace_verify(f->signed_path, NULL, &s, &err), MC_OK);
    assert_int_equal(s.signature, MC_TRACE_SIG_UNCHECKED);

    /* The reader hands out the signature frame after the footer. */
    mc_trace_reader *r = NULL;
    assert_int_equal(
        mc_trace_reader_open(f->signed_path, &(mc_trace_reader_opts){.public_key = pk}, &r, &err),
        MC_OK);
    mc_trace_record rec, prev = {0};
    while (mc_trace_reader_next(r, &rec, &err) == MC_OK && rec.kind != MC_TRACE_KIND_NONE)
        prev = rec;
    assert_int_equal(prev.kind, MC_TRACE_KIND_SIGNATURE);
    assert_int_equal(mc_trace_reader_signature(r), MC_TRACE_SIG_VERIFIED);
    mc_trace_reader_free(r);

    /* The 64-byte key file signs identically: same inputs, same bytes. */
    char other[700];
    path_in(other, sizeof other, f->dir, "signed2.trace");
    sample_spec spec = {.ticks = 4, .metrics_per_tick = 2, .signing_key_path = f->sk_path};
    assert_int_equal(sample_write(other, &spec, NULL, &err), MC_OK);
    size_t len2;
    uint8_t *d2 = file_read(other, &len2);
    assert_int_equal(len2, f->len);
    assert_memory_equal(d2, f->data, f->len);
    free(d2);
}

static void test_wrong_key(void **state)
{
    fixture *f = *state;
    mc_trace_summary s;
    mc_error err = {0};
    assert_int_equal(mc_trace_verify(f->signed_path, f->other_pk, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_DAMAGED);
    assert_int_equal(s.signature, MC_TRACE_SIG_WRONG_KEY);
    assert_non_null(strstr(err.msg, "not by the public key given"));
    /* Every record was still verified and counted. */
    assert_int_equal(s.records, f->info.record_count);
}

static void test_bad_signature(void **state)
{
    fixture *f = *state;
    mc_trace_summary s;
    mc_error err = {0};
    uint8_t *d = malloc(f->len);
    /* A flipped signature byte: the frame's crc catches it first. */
    memcpy(d, f->data, f->len);
    d[f->len - 40] ^= 1;
    assert_int_equal(verify_mem(d, f->len, f->pk, &s, &err), MC_ERR_CORRUPT);
    assert_non_null(strstr(err.msg, "checksum mismatch"));
    /* Flipped and re-chained: the signature itself fails. */
    trace_rechain(d, f->len);
    assert_int_equal(verify_mem(d, f->len, f->pk, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.signature, MC_TRACE_SIG_BAD);
    assert_non_null(strstr(err.msg, "signature does not verify"));
    /* Without a key too (checked against the key it names). */
    assert_int_equal(verify_mem(d, f->len, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.signature, MC_TRACE_SIG_BAD);

    /* A forger changes a payload and fixes every crc, chain and the
     * footer's final hash: only the signature tells. */
    memcpy(d, f->data, f->len);
    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open_buffer(d, f->len, NULL, &r, &err), MC_OK);
    mc_trace_record rec;
    size_t payload_off = 0, footer_off = 0, footer_body = 0;
    while (mc_trace_reader_next(r, &rec, &err) == MC_OK && rec.kind != MC_TRACE_KIND_NONE) {
        if (rec.kind == MC_TRACE_KIND_RECORD && payload_off == 0 && rec.payload_len > 0)
            payload_off = (size_t)(rec.payload - d);
        if (rec.kind == MC_TRACE_KIND_FOOTER) {
            footer_off = rec.offset;
            footer_body = (size_t)(rec.body - d);
        }
    }
    mc_trace_reader_free(r);
    assert_true(payload_off > 0 && footer_off > 0);
    d[payload_off] ^= 0x55;
    trace_rechain(d, f->len);
    /* The chain before the footer is the footer frame's predecessor's. */
    const uint8_t *pred_chain = d + footer_off - 32;
    uint8_t *fh = memmem(d + footer_body, footer_off + 100 - footer_body, f->info.final_hash, 32);
    assert_non_null(fh);
    memcpy(fh, pred_chain, 32);
    trace_rechain(d, f->len);
    /* Unsigned verification is fooled, as it must be without a key ... */
    mc_trace_summary s2;
    assert_int_equal(
        verify_mem(d, f->len - MC_TRACE_SIG_BODY_LEN - MC_TRACE_FRAME_OVERHEAD, NULL, &s2, &err),
        MC_OK);
    /* ... but the signature is not. */
    assert_int_equal(verify_mem(d, f->len, f->pk, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.signature, MC_TRACE_SIG_BAD);
    free(d);
}

static void test_missing_signature(void **state)
{
    fixture *f = *state;
    mc_trace_summary s;
    mc_error err = {0};
    /* The signature frame stripped. */
    size_t stripped = f->len - MC_TRACE_SIG_BODY_LEN - MC_TRACE_FRAME_OVERHEAD;
    assert_int_equal(verify_mem(f->data, stripped, f->pk, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_DAMAGED);
    assert_int_equal(s.signature, MC_TRACE_SIG_MISSING);
    assert_non_null(strstr(err.msg, "not signed, but a public key was given"));
    assert_int_equal(verify_mem(f->data, stripped, NULL, &s, &err), MC_OK);
    assert_int_equal(s.signature, MC_TRACE_SIG_NONE);
    /* Cut inside the signature frame: torn (a crash while closing). */
    assert_int_equal(verify_mem(f->data, stripped + 50, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_TORN);
    assert_true(s.has_footer);
    /* An unsigned trace with a key required. */
    char path[700];
    path_in(path, sizeof path, f->dir, "unsigned.trace");
    sample_spec spec = {.ticks = 2, .metrics_per_tick = 1};
    assert_int_equal(sample_write(path, &spec, NULL, &err), MC_OK);
    assert_int_equal(mc_trace_verify(path, f->pk, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.signature, MC_TRACE_SIG_MISSING);
}

static void test_key_files(void **state)
{
    fixture *f = *state;
    uint8_t sk[64], pk[32];
    mc_error err = {0};
    assert_int_equal(mc_trace_key_load_secret(f->sk_path, sk, &err), MC_OK);
    assert_memory_equal(sk, f->sk, 64);
    assert_int_equal(mc_trace_key_load_secret(f->seed_path, sk, &err), MC_OK);
    assert_memory_equal(sk, f->sk, 64);
    mc_trace_key_public(sk, pk);
    assert_memory_equal(pk, f->pk, 32);

    /* Wrong lengths, non-hex, a secret key whose halves disagree. */
    const char *bad[] = {"", "abc", "zz", "0011",
                         "g000000000000000000000000000000000000000000000000000000000000000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mc_trace_key_parse_secret(bad[i], strlen(bad[i]), sk, &err),
                         MC_ERR_INVALID);
    char hex[129];
    uint8_t mixed[64];
    memcpy(mixed, f->sk, 32);
    memcpy(mixed + 32, f->other_pk, 32);
    sodium_bin2hex(hex, sizeof hex, mixed, 64);
    assert_int_equal(mc_trace_key_parse_secret(hex, 128, sk, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "does not match its seed"));
    assert_int_equal(mc_trace_key_parse_public(hex, 128, pk, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trace_key_load_public("/nonexistent/k.pub", pk, &err), MC_ERR_NOT_FOUND);

    /* The writer refuses a bad key before creating the file. */
    char badkey[700], path[700];
    path_in(badkey, sizeof badkey, f->dir, "bad.key");
    path_in(path, sizeof path, f->dir, "never.trace");
    write_text(badkey, "not a key\n");
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    mc_trace_writer *w = NULL;
    assert_int_equal(mc_trace_writer_open(
                         path, &h, &(mc_trace_writer_opts){.signing_key_path = badkey}, &w, &err),
                     MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "signing key"));
    assert_null(w);
    assert_int_not_equal(access(path, F_OK), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signed_trace_verifies),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_missing_signature),
        cmocka_unit_test(test_key_files),
    };
    return cmocka_run_group_tests_name("replay/trace signing", tests, setup, teardown);
}
