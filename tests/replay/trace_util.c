#include "trace_util.h"

#include <dirent.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint8_t topo[32] = {1, 2, 3};
static uint8_t conf[32] = {9, 8, 7};

void sample_header(Trace__V1__TraceHeader *h, int64_t start_time_ms)
{
    trace__v1__trace_header__init(h);
    h->build_id = "test-build";
    h->compiler = "test-cc -O0";
    h->seed = 42;
    h->scenario = "cascade_failure";
    h->topology_digest.data = topo;
    h->topology_digest.len = sizeof topo;
    h->config_digest.data = conf;
    h->config_digest.len = sizeof conf;
    h->start_time_unix_ms = start_time_ms;
    h->run_id = "run-0123456789abcdef";
    h->mode = "lockstep";
    h->approval_mode = "manual";
}

static void fill_payload(sample_rec *r, uint64_t salt)
{
    /* Lengths vary (0 included) so frames are not all alike. */
    r->len = (size_t)((r->tick * 131 + r->producer_seq * 37 + salt) % sizeof r->payload);
    if (r->producer_seq % 17 == 0)
        r->len = 0;
    for (size_t i = 0; i < r->len; i++)
        r->payload[i] = (uint8_t)((i * 7 + r->tick * 13 + r->producer_seq * 3 + salt) & 0xFF);
}

size_t sample_records(const sample_spec *spec, sample_rec *out, size_t cap)
{
    size_t n = 0;
    uint64_t engine_seq = 0, detector_seq = 0, agent_seq = 0;
    for (uint64_t t = 1; t <= spec->ticks; t++) {
        for (uint32_t i = 0; i < spec->metrics_per_tick + 2; i++) {
            sample_rec r = {
                .tick = t, .stage = 1, .producer = "sim-engine", .producer_seq = ++engine_seq};
            r.subject = i < spec->metrics_per_tick    ? "sim.metrics"
                        : i == spec->metrics_per_tick ? "sim.events"
                                                      : "sim.watermark";
            if (out != NULL && n < cap) {
                out[n] = r;
                fill_payload(&out[n], i);
            }
            n++;
        }
        if (t % 2 == 0) {
            sample_rec r = {.tick = t,
                            .stage = 2,
                            .subject = "ops.incidents",
                            .producer = "detector",
                            .producer_seq = ++detector_seq};
            if (out != NULL && n < cap) {
                out[n] = r;
                fill_payload(&out[n], 5);
            }
            n++;
        }
        sample_rec r = {.tick = t,
                        .stage = 3,
                        .subject = "ops.watermark.agent",
                        .producer = "agent",
                        .producer_seq = ++agent_seq};
        if (out != NULL && n < cap) {
            out[n] = r;
            fill_payload(&out[n], 9);
        }
        n++;
    }
    return n;
}

void sample_digests(uint64_t tick, mc_trace_digest out[4])
{
    for (uint32_t s = 0; s < 4; s++) {
        out[s].stage = s + 1;
        for (int i = 0; i < 32; i++)
            out[s].digest[i] = (uint8_t)(tick * 31 + s * 7 + (uint64_t)i);
    }
}

mc_status sample_write(const char *path, const sample_spec *spec, mc_trace_footer_info *info,
                       mc_error *err)
{
    Trace__V1__TraceHeader h;
    sample_header(&h, spec->start_time_ms);
    mc_trace_writer_opts o = {
        .overwrite = true, .signing_key_path = spec->signing_key_path, .buffer_bytes = 8192};
    mc_trace_writer *w = NULL;
    mc_status st = mc_trace_writer_open(path, &h, &o, &w, err);
    if (st != MC_OK)
        return st;
    size_t n = sample_records(spec, NULL, 0);
    sample_rec *recs = malloc(n * sizeof *recs);
    if (recs == NULL) {
        mc_trace_writer_free(w);
        return MC_ERR_NOMEM;
    }
    sample_records(spec, recs, n);
    size_t i = 0;
    for (uint64_t t = 1; t <= spec->ticks && st == MC_OK; t++) {
        for (; i < n && recs[i].tick == t && st == MC_OK; i++)
            st = mc_trace_writer_append(w, recs[i].tick, recs[i].stage, recs[i].subject,
                                        recs[i].producer, recs[i].producer_seq, recs[i].payload,
                                        recs[i].len, err);
        mc_trace_digest d[4];
        sample_digests(t, d);
        if (st == MC_OK)
            st = mc_trace_writer_checkpoint(w, t, d, 4, err);
    }
    free(recs);
    if (st != MC_OK || spec->no_footer) {
        mc_trace_writer_free(w);
        return st;
    }
    return mc_trace_writer_close(&w, info, err);
}

void tmpdir_make(char *dir, size_t n)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, n, "%s/mc-trace-XXXXXX", base != NULL ? base : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
}

void tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

void path_in(char *out, size_t n, const char *dir, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

uint8_t *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)sz + 1);
    if (buf != NULL && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)sz;
    return buf;
}

int file_write(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}

/* Recomputes every frame's length check, crc and chain, as a forger who
 * knows the format would: only order, sequence and signature checks are left
 * to catch what was changed. */
void trace_rechain(uint8_t *d, size_t len)
{
    uint8_t chain[32];
    mc_trace_chain_start(mc_trace_get_u32(d + 8), chain);
    size_t o = MC_TRACE_PREAMBLE_LEN;
    while (o + MC_TRACE_FRAME_PREFIX_LEN <= len) {
        uint32_t n = mc_trace_get_u32(d + o);
        size_t covered = MC_TRACE_FRAME_PREFIX_LEN + n;
        if (o + covered + MC_TRACE_FRAME_TRAILER_LEN > len)
            break;
        mc_trace_put_u32(d + o + 4, mc_trace_crc32c(0, d + o, 4));
        mc_trace_put_u32(d + o + covered, mc_trace_crc32c(0, d + o, covered));
        crypto_generichash_state hs;
        crypto_generichash_init(&hs, NULL, 0, 32);
        crypto_generichash_update(&hs, chain, 32);
        crypto_generichash_update(&hs, d + o, covered + 4);
        crypto_generichash_final(&hs, chain, 32);
        memcpy(d + o + covered + 4, chain, 32);
        o += covered + MC_TRACE_FRAME_TRAILER_LEN;
    }
}
