/* Writes the seed corpus of fuzz_trace_reader (tests/fuzz/trace_reader/):
 * a few small valid traces and damaged variants of them. Run by hand when
 * the format changes: gen_trace_corpus OUT_DIR. Deterministic: the same
 * build writes the same files. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/writer.h"
#include "trace_util.h"

static const char *out_dir;
static char tmp_dir[512];

static void die(const char *what, const mc_error *err)
{
    fprintf(stderr, "gen_trace_corpus: %s: %s\n", what, err != NULL ? err->msg : "");
    exit(1);
}

/* A small run: ticks ticks, a few short records each. */
static void small_trace(const char *path, uint64_t ticks, int close, const char *key)
{
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    h.build_id = "corpus";
    h.compiler = "cc";
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    mc_trace_writer_opts o = {.overwrite = true, .signing_key_path = key};
    if (mc_trace_writer_open(path, &h, &o, &w, &err) != MC_OK)
        die(path, &err);
    static const char *subj[] = {"sim.metrics", "sim.events", "sim.watermark", "ops.incidents"};
    static const char *prod[] = {"sim-engine", "sim-engine", "sim-engine", "detector"};
    uint64_t seq[4] = {0};
    for (uint64_t t = 1; t <= ticks; t++) {
        for (int i = 0; i < 4; i++) {
            uint32_t stage = i < 3 ? 1 : 2;
            uint64_t *s = &seq[stage - 1];
            uint8_t p[24];
            size_t len = (size_t)((t * 5 + (uint64_t)i * 3) % sizeof p);
            for (size_t k = 0; k < len; k++)
                p[k] = (uint8_t)(t + (uint64_t)k * 17);
            if (mc_trace_writer_append(w, t, stage, subj[i], prod[i], ++*s, p, len, &err) != MC_OK)
                die("append", &err);
        }
        mc_trace_digest d[2] = {{.stage = 1}, {.stage = 2}};
        memset(d[0].digest, (int)t, 32);
        memset(d[1].digest, (int)(t + 100), 32);
        if (mc_trace_writer_checkpoint(w, t, d, 2, &err) != MC_OK)
            die("checkpoint", &err);
    }
    if (!close) {
        mc_trace_writer_free(w);
        return;
    }
    if (mc_trace_writer_close(&w, NULL, &err) != MC_OK)
        die("close", &err);
}

static void emit(const char *name, const uint8_t *d, size_t len)
{
    char path[1024];
    path_in(path, sizeof path, out_dir, name);
    if (file_write(path, d, len) != 0)
        die(path, NULL);
    printf("%s: %zu bytes\n", name, len);
}

static uint8_t *load(const char *name, size_t *len)
{
    char path[1024];
    path_in(path, sizeof path, tmp_dir, name);
    uint8_t *d = file_read(path, len);
    if (d == NULL)
        die(path, NULL);
    return d;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_trace_corpus OUT_DIR\n");
        return 2;
    }
    out_dir = argv[1];
    if (sodium_init() < 0)
        die("sodium_init", NULL);
    tmpdir_make(tmp_dir, sizeof tmp_dir);
    char p[1024], key[1024];

    /* The key the fuzz target also knows. */
    uint8_t seed[32], pk[32], sk[64];
    for (int i = 0; i < 32; i++)
        seed[i] = (uint8_t)(i * 11 + 3);
    crypto_sign_seed_keypair(pk, sk, seed);
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, seed, 32);
    path_in(key, sizeof key, tmp_dir, "seed.key");
    file_write(key, (const uint8_t *)hex, 64);

    path_in(p, sizeof p, tmp_dir, "clean");
    small_trace(p, 3, 1, NULL);
    path_in(p, sizeof p, tmp_dir, "signed");
    small_trace(p, 2, 1, key);
    path_in(p, sizeof p, tmp_dir, "crashed");
    small_trace(p, 2, 0, NULL);
    path_in(p, sizeof p, tmp_dir, "empty");
    small_trace(p, 0, 1, NULL);

    size_t len;
    uint8_t *d = load("clean", &len);
    emit("valid-3ticks.trace", d, len);
    uint8_t *c = malloc(len);

    memcpy(c, d, len);
    c[len / 2] ^= 0x20;
    emit("damaged-flipped-byte.trace", c, len);
    emit("torn-mid-frame.trace", d, len * 2 / 3);
    memcpy(c, d, len);
    c[8] = 9; /* version */
    emit("bad-version.trace", c, len);
    /* A length that passes its check but exceeds the limit. */
    memcpy(c, d, len);
    size_t first = MC_TRACE_PREAMBLE_LEN + MC_TRACE_FRAME_OVERHEAD + mc_trace_get_u32(d + 12);
    mc_trace_put_u32(c + first, 0x7FFFFFFFu);
    mc_trace_put_u32(c + first + 4, mc_trace_crc32c(0, c + first, 4));
    emit("huge-length.trace", c, len);
    /* The first two records swapped and re-chained. */
    memcpy(c, d, len);
    uint32_t a = mc_trace_get_u32(d + first) + MC_TRACE_FRAME_OVERHEAD;
    uint32_t b = mc_trace_get_u32(d + first + a) + MC_TRACE_FRAME_OVERHEAD;
    memcpy(c + first, d + first + a, b);
    memcpy(c + first + b, d + first, a);
    trace_rechain(c, len);
    emit("reordered-rechained.trace", c, len);
    free(c);
    free(d);

    d = load("signed", &len);
    emit("valid-signed.trace", d, len);
    c = malloc(len);
    memcpy(c, d, len);
    c[len - 40] ^= 1;
    trace_rechain(c, len);
    emit("bad-signature.trace", c, len);
    free(c);
    free(d);

    d = load("crashed", &len);
    emit("torn-no-footer.trace", d, len);
    free(d);
    d = load("empty", &len);
    emit("valid-no-records.trace", d, len);
    /* Preamble and header frame: a run that crashed before its first tick. */
    emit("header-only.trace", d,
         MC_TRACE_PREAMBLE_LEN + MC_TRACE_FRAME_OVERHEAD + mc_trace_get_u32(d + 12));
    emit("preamble-only.trace", d, MC_TRACE_PREAMBLE_LEN);
    free(d);
    tmpdir_remove(tmp_dir);
    return 0;
}
