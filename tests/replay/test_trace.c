/* replay/trace: writer/reader round trips, byte-identical output, the
 * canonical order the writer enforces, following a growing file, verify,
 * compare and the reorder buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "trace/reader.h"
#include "trace/reorder.h"
#include "trace/writer.h"
#include "trace_util.h"

static char dir[512];

static int setup(void **state)
{
    (void)state;
    tmpdir_make(dir, sizeof dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    tmpdir_remove(dir);
    return 0;
}

static void test_crc32c_check_value(void **state)
{
    (void)state;
    /* The standard check value, and incremental use. */
    assert_int_equal(mc_trace_crc32c(0, "123456789", 9), 0xE3069283u);
    uint32_t c = mc_trace_crc32c(0, "1234", 4);
    assert_int_equal(mc_trace_crc32c(c, "56789", 5), 0xE3069283u);
    assert_int_equal(mc_trace_crc32c(0, "", 0), 0u);
    assert_int_equal(mc_trace_crc32c_portable(0, "123456789", 9), 0xE3069283u);
    /* The hardware and table versions agree on every length and split. */
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 151 + 17);
    for (size_t n = 0; n <= sizeof buf; n += 7) {
        uint32_t a = mc_trace_crc32c(0, buf, n);
        assert_int_equal(a, mc_trace_crc32c_portable(0, buf, n));
        size_t half = n / 3;
        assert_int_equal(mc_trace_crc32c(mc_trace_crc32c(0, buf, half), buf + half, n - half), a);
    }
}

static void test_round_trip_all_fields(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "rt.trace");
    sample_spec spec = {.ticks = 12, .metrics_per_tick = 5, .start_time_ms = 1700000000123};
    mc_error err = {0};
    mc_trace_footer_info info;
    assert_int_equal(sample_write(path, &spec, &info, &err), MC_OK);
    size_t n = sample_records(&spec, NULL, 0);
    sample_rec *want = calloc(n, sizeof *want);
    sample_records(&spec, want, n);
    assert_int_equal(info.record_count, n);
    assert_int_equal(info.checkpoint_count, 12);
    assert_int_equal(info.last_tick, 12);
    assert_false(info.is_signed);

    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open(path, NULL, &r, &err), MC_OK);
    const Trace__V1__TraceHeader *h = mc_trace_reader_header(r);
    assert_int_equal(h->format_version, MC_TRACE_FORMAT_VERSION);
    assert_string_equal(h->build_id, "test-build");
    assert_string_equal(h->compiler, "test-cc -O0");
    assert_int_equal(h->seed, 42);
    assert_string_equal(h->scenario, "cascade_failure");
    assert_int_equal(h->topology_digest.len, 32);
    assert_int_equal(h->topology_digest.data[1], 2);
    assert_int_equal(h->config_digest.data[0], 9);
    assert_true(h->start_time_unix_ms == 1700000000123);
    assert_string_equal(h->run_id, "run-0123456789abcdef");
    assert_string_equal(h->mode, "lockstep");
    assert_string_equal(h->approval_mode, "manual");

    size_t got = 0, cps = 0;
    uint64_t prev_offset = 0;
    mc_trace_record rec;
    uint64_t frame = 1;
    for (;;) {
        assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
        if (rec.kind == MC_TRACE_KIND_NONE)
            break;
        assert_int_equal(rec.frame, frame);
        frame++;
        assert_true(rec.offset > prev_offset);
        prev_offset = rec.offset;
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            assert_true(got < n);
            const sample_rec *w = &want[got];
            assert_int_equal(rec.sequence, got + 1);
            assert_int_equal(rec.tick, w->tick);
            assert_int_equal(rec.stage, w->stage);
            assert_string_equal(rec.subject, w->subject);
            assert_string_equal(rec.producer, w->producer);
            assert_int_equal(rec.producer_seq, w->producer_seq);
            assert_int_equal(rec.payload_len, w->len);
            if (w->len > 0)
                assert_memory_equal(rec.payload, w->payload, w->len);
            got++;
        } else if (rec.kind == MC_TRACE_KIND_CHECKPOINT) {
            cps++;
            assert_int_equal(rec.tick, cps);
            /* Every record of the tick came before its checkpoint. */
            assert_true(got == n || want[got].tick > rec.tick);
            mc_trace_digest d[4];
            sample_digests(rec.tick, d);
            assert_int_equal(rec.checkpoint->n_digests, 4);
            for (size_t i = 0; i < 4; i++) {
                assert_int_equal(rec.checkpoint->digests[i]->stage, d[i].stage);
                assert_memory_equal(rec.checkpoint->digests[i]->digest.data, d[i].digest, 32);
            }
        } else {
            assert_int_equal(rec.kind, MC_TRACE_KIND_FOOTER);
            assert_int_equal(rec.footer->record_count, n);
            assert_int_equal(rec.footer->checkpoint_count, 12);
            assert_memory_equal(rec.footer->final_hash.data, info.final_hash, 32);
        }
    }
    assert_int_equal(got, n);
    assert_int_equal(cps, 12);
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    assert_int_equal(mc_trace_reader_signature(r), MC_TRACE_SIG_NONE);
    assert_null(mc_trace_reader_problem(r));
    uint8_t chain[32];
    mc_trace_reader_chain(r, chain);
    assert_memory_equal(chain, info.footer_hash, 32);
    /* The end is sticky. */
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_NONE);
    mc_trace_reader_free(r);

    /* The same bytes read from memory give the same result. */
    size_t len = 0;
    uint8_t *data = file_read(path, &len);
    assert_int_equal(len, info.bytes);
    mc_trace_summary s;
    assert_int_equal(mc_trace_verify_buffer(data, len, NULL, &s, &err), MC_OK);
    assert_int_equal(s.state, MC_TRACE_CLEAN);
    assert_int_equal(s.records, n);
    free(data);
    free(want);
}

static void test_empty_run_and_defaults(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "empty.trace");
    Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    assert_int_equal(mc_trace_writer_open(path, &h, NULL, &w, &err), MC_OK);
    /* Refuses to overwrite by default. */
    mc_trace_writer *w2 = NULL;
    assert_int_equal(mc_trace_writer_open(path, &h, NULL, &w2, &err), MC_ERR_EXISTS);
    assert_null(w2);
    mc_trace_footer_info info;
    assert_int_equal(mc_trace_writer_close(&w, &info, &err), MC_OK);
    assert_null(w);
    assert_int_equal(info.record_count, 0);
    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open(path, NULL, &r, &err), MC_OK);
    /* An empty build id and compiler are filled with this build's. */
    assert_string_equal(mc_trace_reader_header(r)->build_id, mc_trace_build_id());
    assert_string_equal(mc_trace_reader_header(r)->compiler, mc_trace_compiler());
    mc_trace_record rec;
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_FOOTER);
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_NONE);
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    mc_trace_reader_free(r);

    /* A header asking for another version is refused. */
    h.format_version = 7;
    assert_int_equal(
        mc_trace_writer_open(path, &h, &(mc_trace_writer_opts){.overwrite = true}, &w, &err),
        MC_ERR_UNSUPPORTED);
}

static void test_same_inputs_same_bytes(void **state)
{
    (void)state;
    char a[600], b[600], c[600], d[600];
    path_in(a, sizeof a, dir, "a.trace");
    path_in(b, sizeof b, dir, "b.trace");
    path_in(c, sizeof c, dir, "c.trace");
    path_in(d, sizeof d, dir, "d.trace");
    sample_spec spec = {.ticks = 6, .metrics_per_tick = 3, .start_time_ms = 1000};
    mc_error err = {0};
    assert_int_equal(sample_write(a, &spec, NULL, &err), MC_OK);
    assert_int_equal(sample_write(b, &spec, NULL, &err), MC_OK);
    size_t la, lb;
    uint8_t *da = file_read(a, &la), *db = file_read(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db, la);
    free(db);

    /* Another start time: different bytes, but the same recording. */
    spec.start_time_ms = 2000;
    assert_int_equal(sample_write(c, &spec, NULL, &err), MC_OK);
    size_t lc;
    uint8_t *dc = file_read(c, &lc);
    assert_int_equal(la, lc);
    assert_memory_not_equal(da, dc, la);
    mc_trace_diff diff;
    assert_int_equal(mc_trace_compare(a, c, &diff, &err), MC_OK);
    assert_true(diff.equal);

    /* Another seed: the headers differ. */
    free(dc);
    Trace__V1__TraceHeader h;
    sample_header(&h, 1000);
    h.seed = 43;
    mc_trace_writer *w = NULL;
    assert_int_equal(mc_trace_writer_open(d, &h, NULL, &w, &err), MC_OK);
    assert_int_equal(mc_trace_writer_close(&w, NULL, &err), MC_OK);
    assert_int_equal(mc_trace_compare(a, d, &diff, &err), MC_OK);
    assert_false(diff.equal);
    assert_int_equal(diff.frame, 0);

    /* One payload byte changed (and the file rewritten consistently): the
     * compare names that record. */
    unlink(d);
    sample_header(&h, 1000);
    assert_int_equal(mc_trace_writer_open(d, &h, NULL, &w, &err), MC_OK);
    size_t n = sample_records(&spec, NULL, 0);
    sample_rec *recs = calloc(n, sizeof *recs);
    sample_records(&spec, recs, n);
    size_t i = 0;
    uint64_t changed_seq = 0;
    for (uint64_t t = 1; t <= spec.ticks; t++) {
        for (; i < n && recs[i].tick == t; i++) {
            if (t == 4 && changed_seq == 0 && recs[i].len > 0) {
                recs[i].payload[0] ^= 1;
                changed_seq = i + 1;
            }
            assert_int_equal(mc_trace_writer_append(w, t, recs[i].stage, recs[i].subject,
                                                    recs[i].producer, recs[i].producer_seq,
                                                    recs[i].payload, recs[i].len, &err),
                             MC_OK);
        }
        mc_trace_digest dg[4];
        sample_digests(t, dg);
        assert_int_equal(mc_trace_writer_checkpoint(w, t, dg, 4, &err), MC_OK);
    }
    assert_int_equal(mc_trace_writer_close(&w, NULL, &err), MC_OK);
    assert_int_equal(mc_trace_compare(a, d, &diff, &err), MC_OK);
    assert_false(diff.equal);
    char want[64];
    snprintf(want, sizeof want, "record %llu differs", (unsigned long long)changed_seq);
    assert_non_null(strstr(diff.what, want));
    /* Frames before it: one per record and one checkpoint per tick so far. */
    assert_int_equal(diff.frame, changed_seq + 3);
    free(recs);
    free(da);
}

static void test_writer_refuses_out_of_order(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "order.trace");
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    assert_int_equal(
        mc_trace_writer_open(path, &h, &(mc_trace_writer_opts){.overwrite = true}, &w, &err),
        MC_OK);
    const uint8_t p[3] = {1, 2, 3};
    assert_int_equal(mc_trace_writer_append(w, 5, 2, "ops.incidents", "detector", 7, p, 3, &err),
                     MC_OK);
    assert_int_equal(mc_trace_writer_append(w, 5, 2, "ops.incidents", "detector", 8, p, 3, &err),
                     MC_OK);
    /* Same key: a duplicate. */
    assert_int_equal(mc_trace_writer_append(w, 5, 2, "ops.incidents", "detector", 8, p, 3, &err),
                     MC_ERR_INVALID);
    /* The message names the refused record and the previous one, with positions. */
    assert_non_null(strstr(err.msg, "(tick 5, stage 2, producer_seq 8)"));
    assert_non_null(strstr(err.msg, "record 3 at byte offset"));
    assert_non_null(strstr(err.msg, "after record 2"));
    /* An earlier stage of the same tick. */
    assert_int_equal(mc_trace_writer_append(w, 5, 1, "sim.events", "sim-engine", 99, p, 3, &err),
                     MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "stage 1"));
    /* An earlier tick. */
    assert_int_equal(mc_trace_writer_append(w, 4, 4, "ops.commands", "orchestrator", 1, p, 3, &err),
                     MC_ERR_INVALID);
    /* A lower producer_seq in the same stage. */
    assert_int_equal(mc_trace_writer_append(w, 5, 2, "ops.incidents", "detector", 6, p, 3, &err),
                     MC_ERR_INVALID);
    /* Bad names and stages. */
    assert_int_equal(mc_trace_writer_append(w, 6, 0, "x", "y", 1, p, 3, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trace_writer_append(w, 6, 1, "has space", "y", 1, p, 3, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_trace_writer_append(w, 6, 1, "", "y", 1, p, 3, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trace_writer_append(w, 6, 1, "x", NULL, 1, p, 3, &err), MC_ERR_INVALID);
    /* A later stage of the same tick is fine. */
    assert_int_equal(mc_trace_writer_append(w, 5, 3, "ops.actions", "agent", 1, NULL, 0, &err),
                     MC_OK);
    /* Checkpoint ordering: not before the last record's tick. */
    assert_int_equal(mc_trace_writer_checkpoint(w, 4, NULL, 0, &err), MC_ERR_INVALID);
    mc_trace_digest d[2] = {{.stage = 2}, {.stage = 1}};
    assert_int_equal(mc_trace_writer_checkpoint(w, 5, d, 2, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trace_writer_checkpoint(w, 5, d, 1, &err), MC_OK);
    /* After the checkpoint of tick 5, tick 5 is closed. */
    assert_int_equal(mc_trace_writer_append(w, 5, 4, "ops.commands", "orchestrator", 1, p, 3, &err),
                     MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "checkpoint of tick 5"));
    assert_int_equal(mc_trace_writer_checkpoint(w, 5, d, 1, &err), MC_ERR_INVALID);
    /* A tick with no records may still have a checkpoint. */
    assert_int_equal(mc_trace_writer_checkpoint(w, 7, NULL, 0, &err), MC_OK);
    assert_int_equal(mc_trace_writer_append(w, 8, 1, "sim.events", "sim-engine", 1, p, 3, &err),
                     MC_OK);
    assert_int_equal(mc_trace_writer_records(w), 4);
    mc_trace_footer_info info;
    assert_int_equal(mc_trace_writer_close(&w, &info, &err), MC_OK);
    assert_int_equal(info.last_tick, 8);

    /* The refusals left the writer consistent: the file verifies. */
    mc_trace_summary s;
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_OK);
    assert_int_equal(s.records, 4);
    assert_int_equal(s.checkpoints, 2);
    assert_int_equal(s.ticks, 3); /* 5, 7, 8 */
    assert_int_equal(s.first_tick, 5);
    assert_int_equal(s.last_tick, 8);
}

static void test_verify_summary(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "sum.trace");
    sample_spec spec = {.ticks = 10, .metrics_per_tick = 4};
    mc_error err = {0};
    mc_trace_footer_info info;
    assert_int_equal(sample_write(path, &spec, &info, &err), MC_OK);
    mc_trace_summary s;
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_OK);
    assert_int_equal(s.state, MC_TRACE_CLEAN);
    assert_int_equal(s.signature, MC_TRACE_SIG_NONE);
    assert_true(s.has_footer);
    assert_int_equal(s.format_version, 1);
    assert_int_equal(s.records, info.record_count);
    assert_int_equal(s.checkpoints, 10);
    assert_int_equal(s.frames, 1 + info.record_count + 10 + 1);
    assert_int_equal(s.ticks, 10);
    assert_int_equal(s.first_tick, 1);
    assert_int_equal(s.last_tick, 10);
    assert_int_equal(s.valid_bytes, info.bytes);
    assert_memory_equal(s.final_hash, info.footer_hash, 32);
    /* Subjects sorted, with counts. */
    assert_int_equal(s.subject_count, 5);
    assert_string_equal(s.subjects[0].subject, "ops.incidents");
    assert_int_equal(s.subjects[0].records, 5);
    assert_string_equal(s.subjects[1].subject, "ops.watermark.agent");
    assert_int_equal(s.subjects[1].records, 10);
    assert_string_equal(s.subjects[2].subject, "sim.events");
    assert_string_equal(s.subjects[3].subject, "sim.metrics");
    assert_int_equal(s.subjects[3].records, 40);
    assert_string_equal(s.subjects[4].subject, "sim.watermark");
    assert_int_equal(s.other_records, 0);
}

static void test_follow_a_growing_file(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "live.trace");
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    /* fsync every 2 ticks: the recorder's durability option. */
    assert_int_equal(
        mc_trace_writer_open(
            path, &h, &(mc_trace_writer_opts){.overwrite = true, .fsync_every_ticks = 2}, &w, &err),
        MC_OK);
    /* The header is on disk at once: a reader can open the file. */
    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open(path, NULL, &r, &err), MC_OK);
    mc_trace_record rec;
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_NONE);
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_TORN);

    uint8_t p[100] = {0};
    uint64_t seq = 0, seen = 0;
    for (uint64_t t = 1; t <= 5; t++) {
        for (int i = 0; i < 3; i++) {
            p[0] = (uint8_t)++seq;
            assert_int_equal(mc_trace_writer_append(w, t, 1, "sim.metrics", "sim-engine", seq, p,
                                                    sizeof p, &err),
                             MC_OK);
        }
        /* The checkpoint writes the tick out; the reader sees it all. */
        assert_int_equal(mc_trace_writer_checkpoint(w, t, NULL, 0, &err), MC_OK);
        for (;;) {
            assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
            if (rec.kind == MC_TRACE_KIND_NONE)
                break;
            if (rec.kind == MC_TRACE_KIND_RECORD) {
                seen++;
                assert_int_equal(rec.sequence, seen);
                assert_int_equal(rec.payload[0], (uint8_t)seen);
            }
        }
        assert_int_equal(seen, seq);
        assert_int_equal(mc_trace_reader_state(r), MC_TRACE_TORN);
    }
    assert_int_equal(mc_trace_writer_close(&w, NULL, &err), MC_OK);
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_FOOTER);
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_NONE);
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    mc_trace_reader_free(r);
}

static void test_big_payload_and_limits(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "big.trace");
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    /* A payload far bigger than the write buffer goes through it in pieces. */
    assert_int_equal(
        mc_trace_writer_open(
            path, &h, &(mc_trace_writer_opts){.overwrite = true, .buffer_bytes = 4096}, &w, &err),
        MC_OK);
    size_t big = 3 * 1024 * 1024 + 17;
    uint8_t *p = malloc(big);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 2654435761u >> 13);
    assert_int_equal(mc_trace_writer_append(w, 1, 1, "sim.metrics", "sim-engine", 1, p, big, &err),
                     MC_OK);
    /* Over the frame limit: refused, not written. */
    assert_int_equal(
        mc_trace_writer_append(w, 1, 1, "sim.metrics", "sim-engine", 2, p, MC_TRACE_MAX_BODY, &err),
        MC_ERR_LIMIT);
    assert_int_equal(mc_trace_writer_close(&w, NULL, &err), MC_OK);
    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open(path, NULL, &r, &err), MC_OK);
    mc_trace_record rec;
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_RECORD);
    assert_int_equal(rec.payload_len, big);
    assert_memory_equal(rec.payload, p, big);
    assert_int_equal(mc_trace_reader_next(r, &rec, &err), MC_OK);
    assert_int_equal(rec.kind, MC_TRACE_KIND_FOOTER);
    mc_trace_reader_free(r);
    free(p);
}

/* ---- reorder ---- */

typedef struct collected {
    mc_trace_key keys[64];
    char subjects[64][32];
    size_t n;
    size_t fail_at; /* emit fails on this call number (1-based); 0 never */
    size_t calls;
} collected;

static mc_status collect(void *ctx, const mc_trace_reorder_entry *e, mc_error *err)
{
    collected *c = ctx;
    c->calls++;
    if (c->fail_at != 0 && c->calls == c->fail_at)
        return mc_error_set(err, MC_ERR_IO, "emit failed");
    c->keys[c->n] = (mc_trace_key){e->tick, e->stage, e->producer_seq};
    snprintf(c->subjects[c->n], sizeof c->subjects[0], "%s", e->subject);
    c->n++;
    return MC_OK;
}

static void test_reorder_releases_in_canonical_order(void **state)
{
    (void)state;
    mc_trace_reorder *ro = NULL;
    mc_error err = {0};
    assert_int_equal(mc_trace_reorder_new(NULL, &ro, &err), MC_OK);
    const uint8_t p[2] = {7, 8};
    /* Arrival order mixes ticks and stages. */
    assert_int_equal(mc_trace_reorder_add(ro, 2, 1, "sim.metrics", "sim-engine", 4, p, 2, &err),
                     MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 2, "ops.incidents", "detector", 1, p, 2, &err),
                     MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "sim.events", "sim-engine", 2, p, 1, &err),
                     MC_OK);
    assert_int_equal(
        mc_trace_reorder_add(ro, 1, 4, "ops.commands", "orchestrator", 1, NULL, 0, &err), MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "sim.metrics", "sim-engine", 1, p, 2, &err),
                     MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "sim.watermark", "sim-engine", 3, p, 2, &err),
                     MC_OK);
    /* A redelivery is dropped; a conflicting message with the same key is not. */
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "sim.events", "sim-engine", 2, p, 1, &err),
                     MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "sim.events", "sim-engine", 2, p, 2, &err),
                     MC_ERR_EXISTS);
    assert_int_equal(mc_trace_reorder_pending(ro), 6);
    assert_int_equal(mc_trace_reorder_pending_bytes(ro), 9);

    collected c = {0};
    assert_int_equal(mc_trace_reorder_release(ro, 1, collect, &c, &err), MC_OK);
    assert_int_equal(c.n, 5);
    assert_string_equal(c.subjects[0], "sim.metrics");
    assert_string_equal(c.subjects[1], "sim.events");
    assert_string_equal(c.subjects[2], "sim.watermark");
    assert_string_equal(c.subjects[3], "ops.incidents");
    assert_string_equal(c.subjects[4], "ops.commands");
    for (size_t i = 1; i < c.n; i++)
        assert_true(mc_trace_key_cmp(&c.keys[i - 1], &c.keys[i]) < 0);
    assert_int_equal(mc_trace_reorder_pending(ro), 1);
    uint64_t last = 0;
    assert_true(mc_trace_reorder_released_any(ro, &last));
    assert_int_equal(last, 1);

    /* A late record for the released tick is refused. */
    assert_int_equal(mc_trace_reorder_add(ro, 1, 3, "ops.actions", "agent", 1, p, 2, &err),
                     MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "released"));
    /* Releasing backwards is refused; the same tick again is a no-op. */
    assert_int_equal(mc_trace_reorder_release(ro, 0, collect, &c, &err), MC_ERR_INVALID);
    assert_int_equal(mc_trace_reorder_release(ro, 1, collect, &c, &err), MC_OK);
    assert_int_equal(c.n, 5);

    /* A failing emit keeps the rest; a retry of the same tick delivers it. */
    assert_int_equal(mc_trace_reorder_add(ro, 2, 2, "ops.incidents", "detector", 2, p, 2, &err),
                     MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 2, 3, "ops.actions", "agent", 2, p, 2, &err), MC_OK);
    c.fail_at = c.calls + 2;
    assert_int_equal(mc_trace_reorder_release(ro, 2, collect, &c, &err), MC_ERR_IO);
    assert_int_equal(c.n, 6);
    assert_int_equal(mc_trace_reorder_pending(ro), 2);
    assert_true(mc_trace_reorder_released_any(ro, &last));
    assert_int_equal(last, 1);
    assert_int_equal(mc_trace_reorder_release(ro, 2, collect, &c, &err), MC_OK);
    assert_int_equal(c.n, 8);
    assert_string_equal(c.subjects[6], "ops.incidents");
    assert_string_equal(c.subjects[7], "ops.actions");
    assert_int_equal(mc_trace_reorder_pending(ro), 0);
    assert_int_equal(mc_trace_reorder_pending_bytes(ro), 0);
    mc_trace_reorder_free(ro);
}

static void test_reorder_bounds(void **state)
{
    (void)state;
    mc_trace_reorder *ro = NULL;
    mc_error err = {0};
    mc_trace_reorder_limits lim = {.max_records = 3, .max_bytes = 10, .max_ticks_ahead = 2};
    assert_int_equal(mc_trace_reorder_new(&lim, &ro, &err), MC_OK);
    uint8_t p[8] = {0};
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "a", "e", 1, p, 8, &err), MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "a", "e", 2, p, 3, &err), MC_ERR_LIMIT);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "a", "e", 2, p, 1, &err), MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "a", "e", 3, p, 0, &err), MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 1, 1, "a", "e", 4, p, 0, &err), MC_ERR_LIMIT);
    assert_int_equal(mc_trace_reorder_pending(ro), 3);
    collected c = {0};
    assert_int_equal(mc_trace_reorder_release(ro, 1, collect, &c, &err), MC_OK);
    assert_int_equal(c.n, 3);
    /* Open ticks are bounded past the released one. */
    assert_int_equal(mc_trace_reorder_add(ro, 3, 1, "a", "e", 5, p, 0, &err), MC_OK);
    assert_int_equal(mc_trace_reorder_add(ro, 4, 1, "a", "e", 6, p, 0, &err), MC_ERR_LIMIT);
    mc_trace_reorder_free(ro);
    mc_trace_reorder_free(NULL);
}

/* The reorder buffer feeding the writer: arrival order in, a verified
 * canonical trace out. */
static mc_status to_writer(void *ctx, const mc_trace_reorder_entry *e, mc_error *err)
{
    return mc_trace_writer_append(ctx, e->tick, e->stage, e->subject, e->producer, e->producer_seq,
                                  e->payload, e->len, err);
}

static void test_reorder_into_writer(void **state)
{
    (void)state;
    char path[600];
    path_in(path, sizeof path, dir, "reorder.trace");
    Trace__V1__TraceHeader h;
    sample_header(&h, 0);
    mc_trace_writer *w = NULL;
    mc_error err = {0};
    assert_int_equal(
        mc_trace_writer_open(path, &h, &(mc_trace_writer_opts){.overwrite = true}, &w, &err),
        MC_OK);
    mc_trace_reorder *ro = NULL;
    assert_int_equal(mc_trace_reorder_new(NULL, &ro, &err), MC_OK);
    sample_spec spec = {.ticks = 8, .metrics_per_tick = 3};
    size_t n = sample_records(&spec, NULL, 0);
    sample_rec *recs = calloc(n, sizeof *recs);
    sample_records(&spec, recs, n);
    /* Feed each tick in reverse, with the next tick's first records early. */
    size_t start = 0;
    for (uint64_t t = 1; t <= spec.ticks; t++) {
        size_t end = start;
        while (end < n && recs[end].tick == t)
            end++;
        for (size_t i = end; i > start; i--) {
            const sample_rec *r = &recs[i - 1];
            assert_int_equal(mc_trace_reorder_add(ro, r->tick, r->stage, r->subject, r->producer,
                                                  r->producer_seq, r->payload, r->len, &err),
                             MC_OK);
        }
        assert_int_equal(mc_trace_reorder_release(ro, t, to_writer, w, &err), MC_OK);
        assert_int_equal(mc_trace_writer_checkpoint(w, t, NULL, 0, &err), MC_OK);
        start = end;
    }
    assert_int_equal(mc_trace_writer_close(&w, NULL, &err), MC_OK);
    mc_trace_reorder_free(ro);
    mc_trace_reader *r = NULL;
    assert_int_equal(mc_trace_reader_open(path, NULL, &r, &err), MC_OK);
    mc_trace_record rec;
    size_t i = 0;
    while (mc_trace_reader_next(r, &rec, &err) == MC_OK && rec.kind != MC_TRACE_KIND_NONE) {
        if (rec.kind != MC_TRACE_KIND_RECORD)
            continue;
        assert_int_equal(rec.producer_seq, recs[i].producer_seq);
        assert_string_equal(rec.subject, recs[i].subject);
        i++;
    }
    assert_int_equal(i, n);
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    mc_trace_reader_free(r);
    free(recs);
}

/* The committed fuzz corpus still means what its names say: a format
 * change that forgets to regenerate it (gen_trace_corpus) shows here. */
static void test_corpus_files_classify(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        mc_status st;
        mc_trace_state state;
    } want[] = {
        {"valid-3ticks.trace", MC_OK, MC_TRACE_CLEAN},
        {"valid-signed.trace", MC_OK, MC_TRACE_CLEAN},
        {"valid-no-records.trace", MC_OK, MC_TRACE_CLEAN},
        {"damaged-flipped-byte.trace", MC_ERR_CORRUPT, MC_TRACE_DAMAGED},
        {"huge-length.trace", MC_ERR_CORRUPT, MC_TRACE_DAMAGED},
        {"reordered-rechained.trace", MC_ERR_CORRUPT, MC_TRACE_DAMAGED},
        {"bad-signature.trace", MC_ERR_CORRUPT, MC_TRACE_DAMAGED},
        {"torn-mid-frame.trace", MC_ERR_CORRUPT, MC_TRACE_TORN},
        {"torn-no-footer.trace", MC_ERR_CORRUPT, MC_TRACE_TORN},
        {"header-only.trace", MC_ERR_CORRUPT, MC_TRACE_TORN},
        {"bad-version.trace", MC_ERR_UNSUPPORTED, MC_TRACE_DAMAGED},
        {"preamble-only.trace", MC_ERR_CORRUPT, MC_TRACE_DAMAGED},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", MC_TRACE_CORPUS_DIR, want[i].name);
        mc_trace_summary s;
        mc_error err = {0};
        mc_status st = mc_trace_verify(path, NULL, &s, &err);
        if (st != want[i].st || s.state != want[i].state)
            fail_msg("%s: %s, %s: %s", want[i].name, mc_status_name(st),
                     mc_trace_state_name(s.state), err.msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_check_value),
        cmocka_unit_test(test_round_trip_all_fields),
        cmocka_unit_test(test_empty_run_and_defaults),
        cmocka_unit_test(test_same_inputs_same_bytes),
        cmocka_unit_test(test_writer_refuses_out_of_order),
        cmocka_unit_test(test_verify_summary),
        cmocka_unit_test(test_follow_a_growing_file),
        cmocka_unit_test(test_big_payload_and_limits),
        cmocka_unit_test(test_reorder_releases_in_canonical_order),
        cmocka_unit_test(test_reorder_bounds),
        cmocka_unit_test(test_reorder_into_writer),
        cmocka_unit_test(test_corpus_files_classify),
    };
    return cmocka_run_group_tests_name("replay/trace", tests, setup, teardown);
}
