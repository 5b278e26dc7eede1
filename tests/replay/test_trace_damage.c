/* replay/trace: every kind of damage is detected and named (frame, record,
 * byte offset); a torn tail is told apart from damage and the records before
 * it stay usable; an unknown version is refused with the readable ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "trace/reader.h"
#include "trace/writer.h"
#include "trace_util.h"

/* The layout of a clean trace, read back with the reader. */
typedef struct frame_info {
    mc_trace_kind kind;
    uint64_t offset;
    uint32_t len; /* whole frame */
    uint32_t body_len;
    uint64_t sequence;
    size_t payload_off; /* file offset of the payload (records) */
    size_t payload_len;
} frame_info;

typedef struct fixture {
    char dir[512];
    char path[600];
    uint8_t *data;
    size_t len;
    frame_info frames[512];
    size_t nframes;
} fixture;

static void layout(fixture *f)
{
    mc_trace_reader *r = NULL;
    mc_error err = {0};
    assert_int_equal(mc_trace_reader_open_buffer(f->data, f->len, NULL, &r, &err), MC_OK);
    size_t hlen = 0;
    (void)mc_trace_reader_header_bytes(r, &hlen);
    f->frames[0] = (frame_info){.kind = MC_TRACE_KIND_HEADER,
                                .offset = MC_TRACE_PREAMBLE_LEN,
                                .body_len = (uint32_t)hlen + 1,
                                .len = (uint32_t)hlen + 1 + MC_TRACE_FRAME_OVERHEAD};
    f->nframes = 1;
    mc_trace_record rec;
    while (mc_trace_reader_next(r, &rec, &err) == MC_OK && rec.kind != MC_TRACE_KIND_NONE) {
        assert_true(f->nframes < 512);
        frame_info *fi = &f->frames[f->nframes++];
        fi->kind = rec.kind;
        fi->offset = rec.offset;
        fi->len = rec.frame_len;
        fi->body_len = rec.body_len;
        fi->sequence = rec.sequence;
        if (rec.kind == MC_TRACE_KIND_RECORD) {
            fi->payload_off = (size_t)(rec.payload - f->data);
            fi->payload_len = rec.payload_len;
        }
    }
    assert_int_equal(mc_trace_reader_state(r), MC_TRACE_CLEAN);
    mc_trace_reader_free(r);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    tmpdir_make(f->dir, sizeof f->dir);
    path_in(f->path, sizeof f->path, f->dir, "clean.trace");
    sample_spec spec = {.ticks = 6, .metrics_per_tick = 3, .start_time_ms = 5};
    mc_error err = {0};
    if (sample_write(f->path, &spec, NULL, &err) != MC_OK)
        return -1;
    f->data = file_read(f->path, &f->len);
    layout(f);
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

/* Outcome of reading a (damaged) trace from memory to its end. */
typedef struct outcome {
    mc_status open_status;
    mc_status status; /* of the last next() */
    mc_trace_state state;
    mc_trace_problem problem;
    uint64_t records; /* records handed out */
    char msg[512];
} outcome;

static outcome read_all(const uint8_t *data, size_t len, const uint8_t *pk)
{
    outcome o = {0};
    mc_error err = {0};
    mc_trace_reader *r = NULL;
    mc_trace_reader_opts opts = {.public_key = pk};
    o.open_status = mc_trace_reader_open_buffer(data, len, &opts, &r, &err);
    if (o.open_status != MC_OK) {
        snprintf(o.msg, sizeof o.msg, "%s", err.msg);
        return o;
    }
    mc_trace_record rec;
    /* Bounded: at most one step per byte. */
    for (size_t steps = 0; steps <= len; steps++) {
        o.status = mc_trace_reader_next(r, &rec, &err);
        if (o.status != MC_OK || rec.kind == MC_TRACE_KIND_NONE)
            break;
        if (rec.kind == MC_TRACE_KIND_RECORD)
            o.records++;
    }
    o.state = mc_trace_reader_state(r);
    if (mc_trace_reader_problem(r) != NULL)
        o.problem = *mc_trace_reader_problem(r);
    snprintf(o.msg, sizeof o.msg, "%s", err.msg);
    mc_trace_reader_free(r);
    return o;
}

static uint8_t *copy_of(const fixture *f)
{
    uint8_t *c = malloc(f->len);
    memcpy(c, f->data, f->len);
    return c;
}

/* The k-th frame of a kind. */
static size_t nth(const fixture *f, mc_trace_kind kind, size_t k)
{
    for (size_t i = 0; i < f->nframes; i++)
        if (f->frames[i].kind == kind && k-- == 0)
            return i;
    fail_msg("no such frame");
    return 0;
}

/* Damage at frame (whose clean layout is fi). The record number is checked
 * when the reader could know it: a damaged length hides the frame's kind. */
static void expect_damage(const outcome *o, size_t frame, const frame_info *fi, const char *what)
{
    bool knows_seq = what == NULL || strstr(what, "length") == NULL;
    assert_int_equal(o->open_status, MC_OK);
    assert_int_equal(o->status, MC_ERR_CORRUPT);
    assert_int_equal(o->state, MC_TRACE_DAMAGED);
    assert_int_equal(o->problem.frame, frame);
    assert_int_equal(o->problem.offset, fi->offset);
    if (knows_seq)
        assert_int_equal(o->problem.sequence, fi->sequence);
    if (fi->kind == MC_TRACE_KIND_RECORD)
        assert_int_equal(o->records, fi->sequence - 1);
    char where[96];
    snprintf(where, sizeof where, "frame %zu", frame);
    assert_non_null(strstr(o->msg, where));
    snprintf(where, sizeof where, "byte offset %llu", (unsigned long long)fi->offset);
    assert_non_null(strstr(o->msg, where));
    if (knows_seq && fi->sequence > 0) {
        snprintf(where, sizeof where, "(record %llu)", (unsigned long long)fi->sequence);
        assert_non_null(strstr(o->msg, where));
    }
    if (what != NULL && strstr(o->msg, what) == NULL)
        fail_msg("expected '%s' in: %s", what, o->msg);
}

static void test_flipped_payload_byte(void **state)
{
    fixture *f = *state;
    size_t i = nth(f, MC_TRACE_KIND_RECORD, 9);
    while (f->frames[i].payload_len < 10)
        i++;
    uint8_t *d = copy_of(f);
    d[f->frames[i].payload_off + 7] ^= 0x10;
    outcome o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "checksum mismatch");
    free(d);
}

static void test_flipped_header_field(void **state)
{
    fixture *f = *state;
    uint8_t *d = copy_of(f);
    /* Inside the packed TraceHeader (its build_id bytes). */
    d[MC_TRACE_PREAMBLE_LEN + MC_TRACE_FRAME_PREFIX_LEN + 4] ^= 0x01;
    outcome o = read_all(d, f->len, NULL);
    assert_int_equal(o.open_status, MC_ERR_CORRUPT);
    assert_non_null(strstr(o.msg, "frame 0 at byte offset 12"));
    assert_non_null(strstr(o.msg, "checksum mismatch"));
    free(d);
}

static void test_flipped_length(void **state)
{
    fixture *f = *state;
    size_t i = nth(f, MC_TRACE_KIND_RECORD, 4);
    /* Low byte (a plausible length) and high byte (a huge one). */
    for (int b = 0; b < 4; b += 3) {
        uint8_t *d = copy_of(f);
        d[f->frames[i].offset + (size_t)b] ^= 0x04;
        outcome o = read_all(d, f->len, NULL);
        expect_damage(&o, i, &f->frames[i], "length field is damaged");
        free(d);
    }
    /* A flipped length in the last frame, where it could point past the
     * end of the file, is still damage, not a torn tail. */
    size_t last = f->nframes - 1;
    uint8_t *d = copy_of(f);
    d[f->frames[last].offset] ^= 0x40;
    outcome o = read_all(d, f->len, NULL);
    expect_damage(&o, last, &f->frames[last], "length field is damaged");
    free(d);
}

static void test_flipped_checksum_and_chain(void **state)
{
    fixture *f = *state;
    size_t i = nth(f, MC_TRACE_KIND_CHECKPOINT, 2);
    const frame_info *fi = &f->frames[i];
    uint8_t *d = copy_of(f);
    d[fi->offset + MC_TRACE_FRAME_PREFIX_LEN + fi->body_len + 1] ^= 0x80; /* crc */
    outcome o = read_all(d, f->len, NULL);
    expect_damage(&o, i, fi, "checksum mismatch");
    free(d);

    i = nth(f, MC_TRACE_KIND_RECORD, 20);
    fi = &f->frames[i];
    d = copy_of(f);
    d[fi->offset + fi->len - 5] ^= 0x02; /* inside the chain hash */
    o = read_all(d, f->len, NULL);
    expect_damage(&o, i, fi, "hash chain mismatch");
    free(d);
}

static void test_every_byte_flip_is_detected_where_it_is(void **state)
{
    fixture *f = *state;
    /* Every byte of the file, flipped: never clean, and the damage is
     * reported at the frame holding the byte. */
    uint8_t *d = copy_of(f);
    size_t frame = 0;
    for (size_t b = 0; b < f->len; b++) {
        while (frame + 1 < f->nframes && b >= f->frames[frame + 1].offset)
            frame++;
        d[b] ^= 0xA5;
        outcome o = read_all(d, f->len, NULL);
        d[b] ^= 0xA5;
        if (b < MC_TRACE_MAGIC_LEN) {
            assert_int_equal(o.open_status, MC_ERR_PARSE);
            continue;
        }
        if (b < MC_TRACE_PREAMBLE_LEN) {
            assert_int_equal(o.open_status, MC_ERR_UNSUPPORTED);
            continue;
        }
        if (frame == 0) {
            assert_int_equal(o.open_status, MC_ERR_CORRUPT);
            assert_non_null(strstr(o.msg, "frame 0 at byte offset 12"));
            continue;
        }
        if (o.state != MC_TRACE_DAMAGED || o.problem.frame != frame)
            fail_msg("byte %zu (frame %zu): state %s, frame %llu: %s", b, frame,
                     mc_trace_state_name(o.state), (unsigned long long)o.problem.frame, o.msg);
        assert_int_equal(o.problem.offset, f->frames[frame].offset);
    }
    free(d);
}

static void test_truncation_is_torn_and_keeps_earlier_records(void **state)
{
    fixture *f = *state;
    /* Cut at every length: never clean; before the header's end the open
     * fails; after it the trace is torn at the frame the cut falls in (or
     * right after the last whole frame), and every record before is handed
     * out. */
    size_t frame = 0;
    uint64_t whole_records = 0;
    for (size_t cut = 0; cut < f->len; cut++) {
        while (frame + 1 < f->nframes && cut >= f->frames[frame + 1].offset) {
            frame++;
            if (f->frames[frame - 1].kind == MC_TRACE_KIND_RECORD)
                whole_records++;
        }
        outcome o = read_all(f->data, cut, NULL);
        if (cut < f->frames[0].offset + f->frames[0].len) {
            assert_int_equal(o.open_status, MC_ERR_CORRUPT);
            assert_non_null(strstr(o.msg, "torn"));
            continue;
        }
        assert_int_equal(o.open_status, MC_OK);
        if (o.status != MC_OK || o.state != MC_TRACE_TORN)
            fail_msg("cut at %zu: %s %s", cut, mc_trace_state_name(o.state), o.msg);
        assert_int_equal(o.problem.frame, frame);
        assert_int_equal(o.problem.offset, f->frames[frame].offset);
        assert_int_equal(o.records, whole_records);
        if (cut == f->frames[frame].offset)
            assert_non_null(strstr(o.problem.what, "without a footer"));
    }
}

static void test_torn_file_verify_and_open(void **state)
{
    fixture *f = *state;
    char path[700];
    path_in(path, sizeof path, f->dir, "torn.trace");
    size_t i = nth(f, MC_TRACE_KIND_RECORD, 12);
    size_t cut = f->frames[i].offset + 30;
    assert_int_equal(file_write(path, f->data, cut), 0);
    mc_trace_summary s;
    mc_error err = {0};
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_TORN);
    assert_non_null(strstr(err.msg, "torn"));
    assert_int_equal(s.records, 12);
    assert_int_equal(s.problem.frame, i);
    assert_int_equal(s.valid_bytes, f->frames[i].offset);
    assert_false(s.has_footer);

    /* A writer that stopped without closing (a crash) leaves a torn trace
     * whose every tick up to the last checkpoint is there. */
    sample_spec spec = {.ticks = 4, .metrics_per_tick = 2, .no_footer = 1};
    assert_int_equal(sample_write(path, &spec, NULL, &err), MC_OK);
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_TORN);
    assert_int_equal(s.checkpoints, 4);
    assert_int_equal(s.records, sample_records(&spec, NULL, 0));
    assert_non_null(strstr(s.problem.what, "without a footer"));
}

static void test_zero_filled_tail_is_torn(void **state)
{
    fixture *f = *state;
    /* A crash that left the last ticks as zeros: torn where the zeros
     * start, from memory and from a file. */
    size_t i = nth(f, MC_TRACE_KIND_CHECKPOINT, 3);
    size_t cut = f->frames[i + 1].offset;
    size_t len = cut + 10000;
    uint8_t *d = calloc(1, len);
    memcpy(d, f->data, cut);
    outcome o = read_all(d, len, NULL);
    assert_int_equal(o.status, MC_OK);
    assert_int_equal(o.state, MC_TRACE_TORN);
    assert_int_equal(o.problem.frame, i + 1);
    assert_non_null(strstr(o.problem.what, "zero bytes"));
    char path[700];
    path_in(path, sizeof path, f->dir, "zeros.trace");
    assert_int_equal(file_write(path, d, len), 0);
    mc_trace_summary s;
    mc_error err = {0};
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_TORN);
    assert_int_equal(s.valid_bytes, cut);
    /* Zeros with anything after them are damage. */
    d[len - 1] = 1;
    o = read_all(d, len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, i + 1);
    assert_int_equal(file_write(path, d, len), 0);
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_DAMAGED);
    free(d);
}

/* d with frames i and i+1 swapped. */
static uint8_t *swapped(const fixture *f, size_t i)
{
    uint8_t *d = copy_of(f);
    const frame_info *a = &f->frames[i], *b = &f->frames[i + 1];
    memcpy(d + a->offset, f->data + b->offset, b->len);
    memcpy(d + a->offset + b->len, f->data + a->offset, a->len);
    return d;
}

static void test_reordered_frames(void **state)
{
    fixture *f = *state;
    size_t i = nth(f, MC_TRACE_KIND_RECORD, 7);
    assert_int_equal(f->frames[i + 1].kind, MC_TRACE_KIND_RECORD);
    /* Swapped as they are: the chain breaks at the first of them. */
    uint8_t *d = swapped(f, i);
    outcome o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "hash chain mismatch");
    /* Swapped and re-chained: the sequence numbers give it away. */
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, i);
    assert_non_null(strstr(o.msg, "record sequence"));
    /* Sequence numbers rewritten too: the canonical order does. */
    mc_trace_put_u64(d + f->frames[i].offset + MC_TRACE_FRAME_PREFIX_LEN + 4,
                     f->frames[i].sequence);
    mc_trace_put_u64(d + f->frames[i].offset + f->frames[i + 1].len + MC_TRACE_FRAME_PREFIX_LEN + 4,
                     f->frames[i + 1].sequence);
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, i + 1);
    assert_non_null(strstr(o.msg, "out of canonical order"));
    free(d);

    /* A record moved after its tick's checkpoint. */
    size_t c = nth(f, MC_TRACE_KIND_CHECKPOINT, 1);
    d = swapped(f, c - 1);
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, c);
    assert_non_null(strstr(o.msg, "after the checkpoint"));
    free(d);

    /* A frame removed (and the rest re-chained): the sequence breaks, and
     * with the last record removed the footer's count does. */
    i = nth(f, MC_TRACE_KIND_RECORD, 3);
    d = copy_of(f);
    size_t flen = f->frames[i].len;
    memmove(d + f->frames[i].offset, d + f->frames[i].offset + flen,
            f->len - f->frames[i].offset - flen);
    trace_rechain(d, f->len - flen);
    o = read_all(d, f->len - flen, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, i);
    assert_non_null(strstr(o.msg, "record sequence 5 where 4 was expected"));
    free(d);
}

static void test_footer_and_trailing_data(void **state)
{
    fixture *f = *state;
    size_t foot = f->nframes - 1;
    assert_int_equal(f->frames[foot].kind, MC_TRACE_KIND_FOOTER);
    /* Bytes after the footer. */
    uint8_t *d = malloc(f->len + f->frames[1].len + 100);
    memcpy(d, f->data, f->len);
    memcpy(d + f->len, f->data + f->frames[1].offset, 100);
    outcome o = read_all(d, f->len + 100, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.offset, f->len);
    /* A whole record frame appended after the footer (re-chained). */
    memcpy(d + f->len, f->data + f->frames[1].offset, f->frames[1].len);
    trace_rechain(d, f->len + f->frames[1].len);
    o = read_all(d, f->len + f->frames[1].len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_non_null(strstr(o.msg, "after the footer"));
    free(d);

    /* A footer that lies about the count (re-chained): caught. */
    d = copy_of(f);
    const frame_info *fi = &f->frames[foot];
    uint8_t *body = d + fi->offset + MC_TRACE_FRAME_PREFIX_LEN;
    assert_int_equal(body[1], 0x08); /* field 1, varint: record_count */
    body[2] ^= 0x01;
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    assert_int_equal(o.state, MC_TRACE_DAMAGED);
    assert_int_equal(o.problem.frame, foot);
    assert_non_null(strstr(o.msg, "footer counts"));
    free(d);
}

static void test_bad_frames(void **state)
{
    fixture *f = *state;
    size_t i = nth(f, MC_TRACE_KIND_RECORD, 2);
    uint8_t *d = copy_of(f);
    uint8_t *body = d + f->frames[i].offset + MC_TRACE_FRAME_PREFIX_LEN;
    /* An unknown kind. */
    body[0] = 9;
    trace_rechain(d, f->len);
    outcome o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &(frame_info){.offset = f->frames[i].offset}, "unknown frame kind 9");
    /* A stage of 0, a subject with a space, names overrunning the body. */
    memcpy(d, f->data, f->len);
    body[1] = 0;
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "stage 0");
    memcpy(d, f->data, f->len);
    body[MC_TRACE_RECORD_FIXED + 1] = ' ';
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "subject");
    memcpy(d, f->data, f->len);
    body[2] = 255;
    body[3] = 255;
    trace_rechain(d, f->len);
    o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "overrun");
    free(d);

    /* A length over the limit with a valid check: damage, and nothing of
     * that size is allocated (a file of a few KiB is read). */
    d = copy_of(f);
    size_t off = f->frames[i].offset;
    mc_trace_put_u32(d + off, MC_TRACE_MAX_BODY + 1);
    mc_trace_put_u32(d + off + 4, mc_trace_crc32c(0, d + off, 4));
    o = read_all(d, f->len, NULL);
    expect_damage(&o, i, &f->frames[i], "frame length");
    /* A big but legal length in a small file is a torn tail, read from a
     * file without allocating the 60 MiB. */
    mc_trace_put_u32(d + off, 60u * 1024 * 1024);
    mc_trace_put_u32(d + off + 4, mc_trace_crc32c(0, d + off, 4));
    char path[700];
    path_in(path, sizeof path, f->dir, "biglen.trace");
    assert_int_equal(file_write(path, d, f->len), 0);
    mc_trace_summary s;
    mc_error err = {0};
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_CORRUPT);
    assert_int_equal(s.state, MC_TRACE_TORN);
    assert_int_equal(s.problem.frame, i);
    free(d);
}

static void test_unknown_version_and_not_a_trace(void **state)
{
    fixture *f = *state;
    uint8_t *d = copy_of(f);
    mc_trace_put_u32(d + MC_TRACE_MAGIC_LEN, 2);
    outcome o = read_all(d, f->len, NULL);
    assert_int_equal(o.open_status, MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(o.msg, "format version 2 is not supported"));
    assert_non_null(strstr(o.msg, "reads version(s) 1"));
    /* From a file, too, through verify. */
    char path[700];
    path_in(path, sizeof path, f->dir, "v2.trace");
    assert_int_equal(file_write(path, d, f->len), 0);
    mc_trace_summary s;
    mc_error err = {0};
    assert_int_equal(mc_trace_verify(path, NULL, &s, &err), MC_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "reads version(s) 1"));
    free(d);

    const char *junk = "{\"not\": \"a trace\"}";
    o = read_all((const uint8_t *)junk, strlen(junk), NULL);
    assert_int_equal(o.open_status, MC_ERR_PARSE);
    assert_non_null(strstr(o.msg, "not a Microcloud trace"));
    o = read_all(NULL, 0, NULL);
    assert_int_equal(o.open_status, MC_ERR_CORRUPT);
    assert_non_null(strstr(o.msg, "torn"));
    assert_int_equal(mc_trace_verify("/nonexistent/x.trace", NULL, &s, &err), MC_ERR_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flipped_payload_byte),
        cmocka_unit_test(test_flipped_header_field),
        cmocka_unit_test(test_flipped_length),
        cmocka_unit_test(test_flipped_checksum_and_chain),
        cmocka_unit_test(test_every_byte_flip_is_detected_where_it_is),
        cmocka_unit_test(test_truncation_is_torn_and_keeps_earlier_records),
        cmocka_unit_test(test_torn_file_verify_and_open),
        cmocka_unit_test(test_zero_filled_tail_is_torn),
        cmocka_unit_test(test_reordered_frames),
        cmocka_unit_test(test_footer_and_trailing_data),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_unknown_version_and_not_a_trace),
    };
    return cmocka_run_group_tests_name("replay/trace damage", tests, setup, teardown);
}
