/* Trace throughput: write and read (with full verification) of 1 KiB
 * records, and the verifying reader against a raw read of the same file
 * (read(2) and a walk over the frame lengths, no checks) as the baseline
 * measured in the same run. Also the two hashes alone, for context.
 *
 * Usage: bench_trace [RECORDS] [RUNS]  (defaults 100000 and 5). The file
 * goes to $TMPDIR (or /tmp) and is removed. Prints medians. */
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "trace/reader.h"
#include "trace/writer.h"

#define PAYLOAD  1024
#define PER_TICK 100
#define MAX_RUNS 15

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, const mc_error *err)
{
    fprintf(stderr, "bench_trace: %s: %s\n", what, err != NULL ? err->msg : "");
    exit(1);
}

static double write_trace(const char *path, long records, uint64_t *bytes)
{
    Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
    h.scenario = "bench";
    h.run_id = "run-bench";
    h.mode = "lockstep";
    uint8_t payload[PAYLOAD];
    for (int i = 0; i < PAYLOAD; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    unlink(path);
    double t0 = now_s();
    if (mc_trace_writer_open(path, &h, NULL, &w, &err) != MC_OK)
        die("open", &err);
    mc_trace_digest d[4] = {{.stage = 1}, {.stage = 2}, {.stage = 3}, {.stage = 4}};
    for (long i = 0; i < records; i++) {
        uint64_t tick = (uint64_t)(i / PER_TICK) + 1;
        payload[0] = (uint8_t)i;
        if (mc_trace_writer_append(w, tick, 1, "sim.metrics", "sim-engine", (uint64_t)i + 1,
                                   payload, sizeof payload, &err) != MC_OK)
            die("append", &err);
        if ((i + 1) % PER_TICK == 0 && mc_trace_writer_checkpoint(w, tick, d, 4, &err) != MC_OK)
            die("checkpoint", &err);
    }
    mc_trace_footer_info info;
    if (mc_trace_writer_close(&w, &info, &err) != MC_OK)
        die("close", &err);
    double t = now_s() - t0;
    *bytes = info.bytes;
    return t;
}

static double read_verified(const char *path, long records)
{
    double t0 = now_s();
    mc_trace_reader *r = NULL;
    mc_error err = {0};
    if (mc_trace_reader_open(path, NULL, &r, &err) != MC_OK)
        die("reader open", &err);
    mc_trace_record rec;
    long n = 0;
    while (mc_trace_reader_next(r, &rec, &err) == MC_OK && rec.kind != MC_TRACE_KIND_NONE)
        n += rec.kind == MC_TRACE_KIND_RECORD;
    if (mc_trace_reader_state(r) != MC_TRACE_CLEAN || n != records)
        die("read", &err);
    mc_trace_reader_free(r);
    return now_s() - t0;
}

/* The baseline: the same bytes read with read(2) into a 1 MiB buffer,
 * walking the frames by their lengths without checking anything. */
static double read_raw(const char *path, long records)
{
    double t0 = now_s();
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("raw open", NULL);
    size_t cap = 1 << 20, len = 0, pos = 0;
    uint8_t *buf = malloc(cap);
    long frames = 0;
    if (read(fd, buf, MC_TRACE_PREAMBLE_LEN) != MC_TRACE_PREAMBLE_LEN)
        die("raw read: preamble", NULL);
    /* Bounded by the file: every pass reads more or stops. */
    for (;;) {
        if (pos > 0) {
            memmove(buf, buf + pos, len - pos);
            len -= pos;
            pos = 0;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r > 0)
            len += (size_t)r;
        while (pos + MC_TRACE_FRAME_PREFIX_LEN <= len) {
            size_t f = (size_t)mc_trace_get_u32(buf + pos) + MC_TRACE_FRAME_OVERHEAD;
            if (pos + f > len)
                break;
            pos += f;
            frames++;
        }
        if (r <= 0)
            break;
    }
    close(fd);
    free(buf);
    if (frames < records)
        die("raw read: fewer frames than records", NULL);
    return now_s() - t0;
}

int main(int argc, char **argv)
{
    long records = argc > 1 ? atol(argv[1]) : 100000;
    int runs = argc > 2 ? atoi(argv[2]) : 5;
    if (records < PER_TICK || runs < 1 || runs > MAX_RUNS) {
        fprintf(stderr, "usage: bench_trace [RECORDS>=%d] [RUNS 1..%d]\n", PER_TICK, MAX_RUNS);
        return 2;
    }
    if (sodium_init() < 0)
        die("sodium_init", NULL);
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/bench-trace-%ld.trace", tmp != NULL ? tmp : "/tmp",
             (long)getpid());

    double tw[MAX_RUNS], tv[MAX_RUNS], tr[MAX_RUNS], ratio[MAX_RUNS];
    uint64_t bytes = 0;
    for (int i = 0; i < runs; i++) {
        tw[i] = write_trace(path, records, &bytes);
        /* Alternate the order so neither read always comes second. */
        if (i % 2) {
            tr[i] = read_raw(path, records);
            tv[i] = read_verified(path, records);
        } else {
            tv[i] = read_verified(path, records);
            tr[i] = read_raw(path, records);
        }
        ratio[i] = tv[i] / tr[i];
    }
    unlink(path);

    /* The hashes alone over 64 MiB in memory. */
    size_t hn = 64u << 20;
    uint8_t *hb = malloc(hn);
    for (size_t i = 0; i < hn; i++)
        hb[i] = (uint8_t)(i * 2654435761u >> 11);
    double t0 = now_s();
    volatile uint32_t crc = mc_trace_crc32c(0, hb, hn);
    double tcrc = now_s() - t0;
    uint8_t out[32];
    t0 = now_s();
    crypto_generichash(out, sizeof out, hb, hn, NULL, 0);
    double tb2 = now_s() - t0;
    (void)crc;
    free(hb);

    double mb = (double)bytes / 1e6;
    double w = median(tw, runs), v = median(tv, runs), r = median(tr, runs);
    printf("trace: %ld records of %d B payload, %.1f MB file, median of %d runs\n", records,
           PAYLOAD, mb, runs);
    printf("  write (incl. fsync at close): %10.0f records/s %8.1f MB/s\n", records / w, mb / w);
    printf("  read, verified:               %10.0f records/s %8.1f MB/s\n", records / v, mb / v);
    printf("  read, raw (baseline):         %10.0f records/s %8.1f MB/s\n", records / r, mb / r);
    printf("  verified / raw time ratio:    %10.2f\n", median(ratio, runs));
    printf("  crc32c alone: %.0f MB/s, blake2b alone: %.0f MB/s\n", (double)hn / 1e6 / tcrc,
           (double)hn / 1e6 / tb2);
    return 0;
}
