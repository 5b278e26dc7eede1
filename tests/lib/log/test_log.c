/* lib/log: levels, both formats, escaping, truncation, thread safety. */
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "log/log.h"

/* Captures what the logger writes into a memory stream. */
typedef struct capture {
    char *buf;
    size_t len;
    FILE *f;
} capture;

static void capture_open(capture *c, mc_log_level level, mc_log_format format)
{
    memset(c, 0, sizeof *c);
    c->f = open_memstream(&c->buf, &c->len);
    assert_non_null(c->f);
    mc_log_init("test-svc", level, format, c->f);
}

static void capture_close(capture *c)
{
    mc_log_init("test-svc", MC_LOG_INFO, MC_LOG_FORMAT_JSON, NULL);
    fclose(c->f);
    free(c->buf);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_json_record_has_fields(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_DEBUG, MC_LOG_FORMAT_JSON);
    MC_LOG_INFO("connected", MC_LF_STR("url", "nats://x:1"), MC_LF_INT("port", -5),
                MC_LF_UINT("big", UINT64_C(1) << 40), MC_LF_DOUBLE("ratio", 0.25), MC_LF_BOOL("ok", true));
    fflush(c.f);
    json_error_t jerr;
    json_t *j = json_loads(c.buf, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "test-svc");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "connected");
    assert_string_equal(json_string_value(json_object_get(j, "url")), "nats://x:1");
    assert_int_equal(json_integer_value(json_object_get(j, "port")), -5);
    assert_true(json_real_value(json_object_get(j, "ratio")) == 0.25);
    assert_int_equal(json_integer_value(json_object_get(j, "big")), INT64_C(1) << 40);
    assert_true(json_is_true(json_object_get(j, "ok")));
    const char *ts = json_string_value(json_object_get(j, "ts"));
    assert_non_null(ts);
    assert_int_equal(strlen(ts), strlen("2026-11-27T17:00:00.000Z"));
    assert_int_equal(ts[strlen(ts) - 1], 'Z');
    json_decref(j);
    capture_close(&c);
}

static void test_json_escapes_and_nonfinite(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_DEBUG, MC_LOG_FORMAT_JSON);
    MC_LOG_WARN("a \"quoted\"\nline\twith \\ and \x01", MC_LF_DOUBLE("nan", 0.0 / 0.0),
                MC_LF_STR("null", NULL));
    fflush(c.f);
    assert_int_equal(count_lines(c.buf), 1);
    json_error_t jerr;
    json_t *j = json_loads(c.buf, 0, &jerr);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "a \"quoted\"\nline\twith \\ and \x01");
    assert_string_equal(json_string_value(json_object_get(j, "nan")), "NaN");
    assert_string_equal(json_string_value(json_object_get(j, "null")), "");
    json_decref(j);
    capture_close(&c);
}

static void test_level_filter(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_WARN, MC_LOG_FORMAT_JSON);
    MC_LOG_DEBUG("dropped");
    MC_LOG_INFO("dropped too");
    MC_LOG_WARN("kept");
    MC_LOG_ERROR("kept too");
    fflush(c.f);
    assert_int_equal(count_lines(c.buf), 2);
    assert_null(strstr(c.buf, "dropped"));
    assert_false(mc_log_enabled(MC_LOG_INFO));
    assert_true(mc_log_enabled(MC_LOG_ERROR));
    capture_close(&c);
}

static void test_text_format(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_INFO, MC_LOG_FORMAT_TEXT);
    MC_LOG_ERROR("publish failed", MC_LF_STR("subject", "sim.metrics"),
                 MC_LF_STR("reason", "no responders"), MC_LF_INT("attempt", 3));
    fflush(c.f);
    assert_non_null(strstr(c.buf, " ERROR test-svc publish failed subject=sim.metrics "
                                  "reason=\"no responders\" attempt=3\n"));
    capture_close(&c);
}

static void test_truncation_keeps_valid_json(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_INFO, MC_LOG_FORMAT_JSON);
    size_t n = 20000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    MC_LOG_INFO("big", MC_LF_STR("before", "kept"), MC_LF_STR("value", big));
    fflush(c.f);
    free(big);
    assert_int_equal(count_lines(c.buf), 1);
    assert_true(c.len <= 8192);
    assert_int_equal(c.buf[c.len - 1], '\n');
    /* The field that did not fit is dropped whole: the line stays JSON. */
    json_error_t jerr;
    json_t *j = json_loads(c.buf, 0, &jerr);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_string_equal(json_string_value(json_object_get(j, "before")), "kept");
    assert_null(json_object_get(j, "value"));
    json_decref(j);
    capture_close(&c);
}

static void test_parse_level_and_format(void **state)
{
    (void)state;
    mc_log_level l;
    assert_int_equal(mc_log_level_parse("debug", &l), MC_OK);
    assert_int_equal(l, MC_LOG_DEBUG);
    assert_int_equal(mc_log_level_parse("WARN", &l), MC_OK);
    assert_int_equal(l, MC_LOG_WARN);
    assert_int_equal(mc_log_level_parse("loud", &l), MC_ERR_INVALID);
    assert_int_equal(mc_log_level_parse(NULL, &l), MC_ERR_INVALID);
    mc_log_format f;
    assert_int_equal(mc_log_format_parse("text", &f), MC_OK);
    assert_int_equal(f, MC_LOG_FORMAT_TEXT);
    assert_int_equal(mc_log_format_parse("xml", &f), MC_ERR_INVALID);
}

#define THREADS 4
#define PER_THREAD 500

static void *writer(void *arg)
{
    long id = (long)(size_t)arg;
    for (int i = 0; i < PER_THREAD; i++)
        MC_LOG_INFO("from thread", MC_LF_INT("thread", id), MC_LF_INT("i", i),
                    MC_LF_STR("pad", "0123456789012345678901234567890123456789"));
    return NULL;
}

static void test_threads_never_interleave(void **state)
{
    (void)state;
    capture c;
    capture_open(&c, MC_LOG_INFO, MC_LOG_FORMAT_JSON);
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, writer, (void *)(size_t)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    fflush(c.f);
    assert_int_equal(count_lines(c.buf), THREADS * PER_THREAD);
    /* Every line must parse on its own. */
    char *save = NULL;
    size_t parsed = 0;
    for (char *line = strtok_r(c.buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        assert_non_null(j);
        json_decref(j);
        parsed++;
    }
    assert_int_equal(parsed, THREADS * PER_THREAD);
    capture_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_record_has_fields),
        cmocka_unit_test(test_json_escapes_and_nonfinite),
        cmocka_unit_test(test_level_filter),
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_truncation_keeps_valid_json),
        cmocka_unit_test(test_parse_level_and_format),
        cmocka_unit_test(test_threads_never_interleave),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
