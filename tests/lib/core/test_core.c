/* lib/core: counter-based RNG, canonical digests, derived ids, outbox,
 * sorted tables, bounded string copies. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/stamp.pb-c.h"
#include "core/digest.h"
#include "core/ids.h"
#include "core/outbox.h"
#include "core/rng.h"
#include "core/table.h"
#include "core/text.h"

static void test_rng_is_a_pure_function_of_its_key(void **state)
{
    (void)state;
    uint64_t a = mc_rng_u64(42, MC_RNG_STREAM_TEST, 7, 3, 0);
    /* Draws in between must not change a later draw. */
    for (int i = 0; i < 100; i++)
        (void)mc_rng_u64(42, MC_RNG_STREAM_TEST, (uint64_t)i, 1, 2);
    assert_true(a == mc_rng_u64(42, MC_RNG_STREAM_TEST, 7, 3, 0));
    /* Each key component matters. */
    assert_true(a != mc_rng_u64(43, MC_RNG_STREAM_TEST, 7, 3, 0));
    assert_true(a != mc_rng_u64(42, MC_RNG_STREAM_LOAD_NOISE, 7, 3, 0));
    assert_true(a != mc_rng_u64(42, MC_RNG_STREAM_TEST, 8, 3, 0));
    assert_true(a != mc_rng_u64(42, MC_RNG_STREAM_TEST, 7, 4, 0));
    assert_true(a != mc_rng_u64(42, MC_RNG_STREAM_TEST, 7, 3, 1));
}

static void test_rng_pinned_values(void **state)
{
    (void)state;
    /* Pinned: a change to the mixing function changes every recorded run
     * and every golden trace, so it must be a deliberate, visible change. */
    assert_true(mc_rng_u64(1, 2, 3, 4, 5) == UINT64_C(0x0d3c90b0c030a276));
    assert_true(mc_rng_u64(42, MC_RNG_STREAM_TEST, 0, 0, 0) == UINT64_C(0x054b698336d96ea7));
    assert_true(mc_rng_unit(1, 2, 3, 4, 5) == 0.051705401565586673);
}

static void test_rng_unit_distribution(void **state)
{
    (void)state;
    /* Mean and variance of 100k uniforms, and bucket counts, within loose
     * statistical bounds (fixed keys, so this is deterministic). */
    enum { N = 100000, BUCKETS = 10 };
    int buckets[BUCKETS] = {0};
    double sum = 0, sumsq = 0;
    for (uint64_t i = 0; i < N; i++) {
        double u = mc_rng_unit(99, MC_RNG_STREAM_TEST, i, 0, 0);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        sumsq += u * u;
        buckets[(int)(u * BUCKETS)]++;
    }
    double mean = sum / N, var = sumsq / N - mean * mean;
    assert_true(fabs(mean - 0.5) < 0.01);
    assert_true(fabs(var - 1.0 / 12.0) < 0.005);
    for (int b = 0; b < BUCKETS; b++)
        assert_true(buckets[b] > N / BUCKETS * 0.95 && buckets[b] < N / BUCKETS * 1.05);
    double nsum = 0, nsq = 0;
    for (uint64_t i = 0; i < 20000; i++) {
        double z = mc_rng_normal(5, MC_RNG_STREAM_TEST, i, 9, 0);
        assert_true(z >= -6.0 && z <= 6.0);
        nsum += z;
        nsq += z * z;
    }
    assert_true(fabs(nsum / 20000) < 0.05);
    assert_true(fabs(nsq / 20000 - 1.0) < 0.05);
}

static void test_digest_canonical(void **state)
{
    (void)state;
    uint8_t a[MC_DIGEST_BYTES], b[MC_DIGEST_BYTES], c[MC_DIGEST_BYTES];
    mc_digest d;
    mc_digest_init(&d, "test");
    mc_digest_f64(&d, -0.0);
    mc_digest_f64(&d, NAN);
    mc_digest_str(&d, "ab");
    mc_digest_final(&d, a);
    mc_digest_init(&d, "test");
    mc_digest_f64(&d, 0.0);
    mc_digest_f64(&d, -NAN);
    mc_digest_str(&d, "ab");
    mc_digest_final(&d, b);
    assert_memory_equal(a, b, MC_DIGEST_BYTES);
    /* Length prefixes: ("a","b") and ("ab","") differ. */
    mc_digest_init(&d, "test");
    mc_digest_str(&d, "a");
    mc_digest_str(&d, "b");
    mc_digest_final(&d, a);
    mc_digest_init(&d, "test");
    mc_digest_str(&d, "ab");
    mc_digest_str(&d, "");
    mc_digest_final(&d, b);
    assert_memory_not_equal(a, b, MC_DIGEST_BYTES);
    /* The domain separates. */
    mc_digest_init(&d, "other");
    mc_digest_str(&d, "a");
    mc_digest_str(&d, "b");
    mc_digest_final(&d, c);
    assert_memory_not_equal(a, c, MC_DIGEST_BYTES);
    char hex[2 * MC_DIGEST_BYTES + 1];
    mc_digest_hex(c, hex);
    assert_int_equal(strlen(hex), 64);
}

static void test_ids_are_derived(void **state)
{
    (void)state;
    char a[MC_UUID_STR_LEN], b[MC_UUID_STR_LEN], c[MC_UUID_STR_LEN];
    mc_id_uuid(a, "incident", "run-1", 10, "database", "error_rate");
    mc_id_uuid(b, "incident", "run-1", 10, "database", "error_rate");
    mc_id_uuid(c, "incident", "run-1", 11, "database", "error_rate");
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 36);
    assert_int_equal(a[14], '8'); /* version 8 */
    assert_true(strchr("89ab", a[19]) != NULL);
    char m[128];
    mc_id_msg(m, sizeof m, "run-1", "sim.metrics", 5, 17);
    assert_string_equal(m, "run-1:sim.metrics:5:17");
    char r1[21], r2[21];
    mc_id_run(r1, "cascade_failure", 42, 0);
    mc_id_run(r2, "cascade_failure", 42, 1);
    assert_int_equal(strlen(r1), 20);
    assert_string_not_equal(r1, r2);
}

static void test_outbox_bounds_and_bytes(void **state)
{
    (void)state;
    mc_outbox o;
    mc_outbox_init(&o, 3);
    Common__V1__Stamp s = COMMON__V1__STAMP__INIT;
    s.run_id = "run-x";
    s.tick = 9;
    s.producer_seq = 1;
    assert_int_equal(mc_outbox_push(&o, "sim.events", 9, 1, &s.base), MC_OK);
    uint8_t raw[3] = {1, 2, 3};
    assert_int_equal(mc_outbox_push_bytes(&o, "sim.events", 9, 2, raw, 3), MC_OK);
    assert_int_equal(mc_outbox_push_bytes(&o, "sim.events", 9, 3, NULL, 0), MC_OK);
    assert_int_equal(mc_outbox_push_bytes(&o, "sim.events", 9, 4, raw, 3), MC_ERR_LIMIT);
    assert_int_equal(o.len, 3);
    Common__V1__Stamp *back = common__v1__stamp__unpack(NULL, o.items[0].len, o.items[0].payload);
    assert_non_null(back);
    assert_string_equal(back->run_id, "run-x");
    assert_true(back->tick == 9);
    common__v1__stamp__free_unpacked(back, NULL);
    assert_memory_equal(o.items[1].payload, raw, 3);
    char long_subject[MC_SUBJECT_MAX + 8];
    memset(long_subject, 'a', sizeof long_subject - 1);
    long_subject[sizeof long_subject - 1] = '\0';
    mc_outbox_clear(&o);
    assert_int_equal(o.len, 0);
    assert_int_equal(mc_outbox_push_bytes(&o, long_subject, 1, 1, raw, 3), MC_ERR_INVALID);
    assert_int_equal(o.len, 0);
    mc_outbox_deinit(&o);
    mc_outbox_deinit(NULL);
}

typedef struct table_rec {
    int weight;
    char id[8];
} table_rec;

static void test_table_find_id(void **state)
{
    (void)state;
    /* Sorted directly, and the same records reached through an index. */
    const table_rec recs[] = {{1, "b"}, {2, "d"}, {3, "f"}, {4, "h"}};
    const table_rec shuffled[] = {{3, "f"}, {1, "b"}, {4, "h"}, {2, "d"}};
    const uint32_t index[] = {1, 3, 0, 2};
    const char *probe[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
    for (size_t k = 0; k < 9; k++) {
        bool found = true;
        size_t pos = mc_table_find_id(recs, sizeof recs[0], offsetof(table_rec, id), NULL, 4,
                                      probe[k], &found);
        /* Odd probes are present at k/2; even ones go before the next. */
        assert_int_equal(found, k % 2 == 1);
        assert_int_equal(pos, k / 2);
        bool found2 = !found;
        size_t pos2 = mc_table_find_id(shuffled, sizeof shuffled[0], offsetof(table_rec, id),
                                       index, 4, probe[k], &found2);
        assert_int_equal(found2, found);
        assert_int_equal(pos2, pos);
        if (found)
            assert_int_equal(shuffled[index[pos2]].weight, recs[pos].weight);
    }
    bool found = true;
    assert_int_equal(mc_table_find_id(NULL, sizeof recs[0], offsetof(table_rec, id), NULL, 0, "x",
                                      &found),
                     0);
    assert_false(found);
}

static void test_table_open_close(void **state)
{
    (void)state;
    uint32_t a[6] = {10, 20, 30, 40, 99, 99};
    mc_table_open(a, sizeof a[0], 4, 1);
    a[1] = 15;
    assert_memory_equal(a, ((uint32_t[]){10, 15, 20, 30, 40, 99}), sizeof a);
    mc_table_open(a, sizeof a[0], 5, 5); /* at the end: nothing moves */
    a[5] = 50;
    assert_memory_equal(a, ((uint32_t[]){10, 15, 20, 30, 40, 50}), sizeof a);
    mc_table_close(a, sizeof a[0], 6, 0);
    assert_memory_equal(a, ((uint32_t[]){15, 20, 30, 40, 50, 50}), sizeof a);
    mc_table_close(a, sizeof a[0], 5, 4); /* the last: nothing moves */
    assert_memory_equal(a, ((uint32_t[]){15, 20, 30, 40, 50, 50}), sizeof a);
    mc_table_close(a, sizeof a[0], 4, 2);
    assert_memory_equal(a, ((uint32_t[]){15, 20, 40, 40, 50, 50}), sizeof a);
}

static void test_text_copy_whole_or_refused(void **state)
{
    (void)state;
    char buf[4] = "xyz";
    assert_true(mc_text_fits("abc", 4));
    assert_false(mc_text_fits("abcd", 4));
    assert_true(mc_text_fits(NULL, 1));
    assert_false(mc_text_copy(buf, sizeof buf, "abcd"));
    assert_string_equal(buf, "xyz"); /* refused: unchanged */
    assert_true(mc_text_copy(buf, sizeof buf, "ab"));
    assert_string_equal(buf, "ab");
    assert_true(mc_text_copy(buf, sizeof buf, NULL));
    assert_string_equal(buf, "");
}

static void test_text_copy_cut_at_utf8_boundary(void **state)
{
    (void)state;
    char buf[5];
    mc_text_copy_cut(buf, sizeof buf, "abcdef");
    assert_string_equal(buf, "abcd");
    /* "ab" + e-acute (2 bytes) + euro sign (3 bytes): a cut after 4 bytes
     * keeps the e-acute, one after 3 would split it and drops it whole. */
    mc_text_copy_cut(buf, sizeof buf, "ab\xC3\xA9\xE2\x82\xAC");
    assert_string_equal(buf, "ab\xC3\xA9");
    mc_text_copy_cut(buf, 4, "ab\xC3\xA9");
    assert_string_equal(buf, "ab");
    mc_text_copy_cut(buf, sizeof buf, NULL);
    assert_string_equal(buf, "");
    mc_text_copy_cut(buf, 1, "abc");
    assert_string_equal(buf, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_is_a_pure_function_of_its_key),
        cmocka_unit_test(test_rng_pinned_values),
        cmocka_unit_test(test_rng_unit_distribution),
        cmocka_unit_test(test_digest_canonical),
        cmocka_unit_test(test_ids_are_derived),
        cmocka_unit_test(test_outbox_bounds_and_bytes),
        cmocka_unit_test(test_table_find_id),
        cmocka_unit_test(test_table_open_close),
        cmocka_unit_test(test_text_copy_whole_or_refused),
        cmocka_unit_test(test_text_copy_cut_at_utf8_boundary),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
