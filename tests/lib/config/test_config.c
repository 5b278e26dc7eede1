/* lib/config: defaults, every type, every bad value, conninfo quoting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"

typedef struct svc_config {
    mc_nats_config nats;
    mc_db_config db;
    mc_log_config log;
    mc_addr addr;
    double speed;
    int64_t offset;
    uint64_t ticks;
    bool flag;
    int mode;
    uint64_t delay_ms;
    const char *engine_url;
} svc_config;

static const char *const modes[] = {"lockstep", "realtime", NULL};

static const mc_config_var vars[] = {
    MC_CONFIG_VARS_NATS(svc_config, nats),
    MC_CONFIG_VARS_DB(svc_config, db),
    MC_CONFIG_VARS_LOG(svc_config, log),
    {"ADDR", MC_CFG_ADDR, ":8080", "HTTP listen address", offsetof(svc_config, addr)},
    {"SPEED", MC_CFG_DOUBLE, "1", "Ticks per second", offsetof(svc_config, speed), .min = 0.001,
     .max = 1000},
    {"OFFSET", MC_CFG_INT, "-3", "An offset", offsetof(svc_config, offset), .min = -10, .max = 10},
    {"TICKS", MC_CFG_UINT, "600", "Ticks", offsetof(svc_config, ticks)},
    {"FLAG", MC_CFG_BOOL, "false", "A flag", offsetof(svc_config, flag)},
    {"SIM_MODE", MC_CFG_ENUM, "lockstep", "Mode", offsetof(svc_config, mode), .choices = modes},
    {"DELAY", MC_CFG_DURATION_MS, "250ms", "Delay", offsetof(svc_config, delay_ms)},
    {"SIM_ENGINE_URL", MC_CFG_URL, "http://localhost:8080", "Engine",
     offsetof(svc_config, engine_url), .choices = mc_config_http_schemes},
};
#define NVARS (sizeof vars / sizeof vars[0])

/* A fake environment: NULL-terminated name/value pairs. */
static const char *fake_getenv(void *ctx, const char *name)
{
    const char *const *kv = ctx;
    for (size_t i = 0; kv && kv[i]; i += 2) {
        if (strcmp(kv[i], name) == 0)
            return kv[i + 1];
    }
    return NULL;
}

static mc_status load(const char *const *env, svc_config *cfg, mc_error *err)
{
    memset(cfg, 0, sizeof *cfg);
    mc_error_clear(err);
    return mc_config_load(vars, NVARS, cfg, fake_getenv, (void *)env, err);
}

static void test_defaults_are_the_seeds(void **state)
{
    (void)state;
    svc_config c;
    mc_error err;
    assert_int_equal(load(NULL, &c, &err), MC_OK);
    assert_string_equal(c.nats.url, "nats://localhost:4222");
    assert_null(c.nats.user);
    assert_null(c.db.database_url);
    assert_string_equal(c.db.host, "localhost");
    assert_int_equal(c.db.port, 5432);
    assert_string_equal(c.db.name, "microcloud");
    assert_string_equal(c.db.user, "microcloud");
    assert_string_equal(c.db.password, "microcloud");
    assert_int_equal(c.log.level, MC_LOG_INFO);
    assert_int_equal(c.log.format, MC_LOG_FORMAT_JSON);
    assert_string_equal(c.addr.host, "0.0.0.0");
    assert_int_equal(c.addr.port, 8080);
    assert_true(c.speed == 1.0);
    assert_int_equal(c.offset, -3);
    assert_int_equal(c.ticks, 600);
    assert_false(c.flag);
    assert_int_equal(c.mode, 0);
    assert_int_equal(c.delay_ms, 250);
}

static void test_values_are_parsed(void **state)
{
    (void)state;
    const char *env[] = {"NATS_URL", "nats://a:1,tls://b:2", "ADDR", "127.0.0.1:9000", "DB_PORT",
                         "6543", "LOG_LEVEL", "debug", "LOG_FORMAT", "text", "SPEED", "0.5",
                         "OFFSET", "10", "TICKS", "18446744073709551615", "FLAG", "yes",
                         "SIM_MODE", "REALTIME", "DELAY", "2m", "DB_HOST", "", NULL};
    svc_config c;
    mc_error err;
    assert_int_equal(load(env, &c, &err), MC_OK);
    assert_string_equal(c.nats.url, "nats://a:1,tls://b:2");
    assert_string_equal(c.addr.host, "127.0.0.1");
    assert_int_equal(c.addr.port, 9000);
    assert_int_equal(c.db.port, 6543);
    assert_int_equal(c.log.level, MC_LOG_DEBUG);
    assert_int_equal(c.log.format, MC_LOG_FORMAT_TEXT);
    assert_true(c.speed == 0.5);
    assert_int_equal(c.offset, 10);
    assert_true(c.ticks == UINT64_MAX);
    assert_true(c.flag);
    assert_int_equal(c.mode, 1);
    assert_int_equal(c.delay_ms, 120000);
    /* An empty value counts as unset: the default applies. */
    assert_string_equal(c.db.host, "localhost");
}

/* Each bad value must fail with a message naming the variable, the value
 * and what was expected. */
static void expect_bad(const char *name, const char *value, const char *expected_fragment)
{
    const char *env[] = {name, value, NULL};
    svc_config c;
    mc_error err;
    assert_int_equal(load(env, &c, &err), MC_ERR_INVALID);
    char want[256];
    snprintf(want, sizeof want, "invalid %s=\"%s\": expected ", name, value);
    if (strstr(err.msg, want) == NULL || strstr(err.msg, expected_fragment) == NULL)
        fail_msg("for %s=%s got message: %s", name, value, err.msg);
}

static void test_bad_values_are_named(void **state)
{
    (void)state;
    expect_bad("ADDR", ":abc", "host:port");
    expect_bad("ADDR", "8080", "host:port");
    expect_bad("ADDR", ":0", "port from 1 to 65535");
    expect_bad("ADDR", ":65536", "port from 1 to 65535");
    expect_bad("ADDR", "bad host:80", "host:port");
    expect_bad("DB_PORT", "x", "port number from 1 to 65535");
    expect_bad("DB_PORT", "-1", "port number");
    expect_bad("DB_PORT", "5432x", "port number");
    expect_bad("LOG_LEVEL", "loud", "debug, info, warn, error");
    expect_bad("LOG_FORMAT", "xml", "json or text");
    expect_bad("NATS_URL", "localhost:4222", "nats://host:port");
    expect_bad("NATS_URL", "http://x:1", "nats://");
    expect_bad("NATS_URL", "nats://a:1,", "nats://");
    expect_bad("SIM_ENGINE_URL", "ftp://x", "http://host:port");
    expect_bad("SPEED", "fast", "a number");
    expect_bad("SPEED", "0", "from 0.001 to 1000");
    expect_bad("SPEED", "nan", "a number");
    expect_bad("SPEED", "inf", "a number");
    expect_bad("OFFSET", "11", "from -10 to 10");
    expect_bad("OFFSET", "1.5", "an integer");
    expect_bad("TICKS", "-1", "non-negative integer");
    expect_bad("TICKS", "18446744073709551616", "non-negative integer");
    expect_bad("FLAG", "maybe", "true or false");
    expect_bad("SIM_MODE", "turbo", "one of lockstep, realtime");
    expect_bad("DELAY", "5 s", "duration");
    expect_bad("DELAY", "5d", "duration");
}

static void test_secrets_are_not_echoed(void **state)
{
    (void)state;
    const char *env[] = {"DATABASE_URL", "mysql://root:hunter2@x/db", NULL};
    svc_config c;
    mc_error err;
    assert_int_equal(load(env, &c, &err), MC_ERR_INVALID);
    assert_non_null(strstr(err.msg, "DATABASE_URL"));
    assert_null(strstr(err.msg, "hunter2"));
}

static void test_conninfo(void **state)
{
    (void)state;
    mc_db_config db = {.host = "/tmp/sock dir", .port = 5433, .name = "mc", .user = "o'brien",
                       .password = "p\\w"};
    char buf[512];
    assert_int_equal(mc_db_config_conninfo(&db, buf, sizeof buf), MC_OK);
    assert_string_equal(buf, "host='/tmp/sock dir' port='5433' dbname='mc' user='o\\'brien' "
                             "password='p\\\\w' application_name='microcloud'");
    char small[16];
    assert_int_equal(mc_db_config_conninfo(&db, small, sizeof small), MC_ERR_LIMIT);
    db.database_url = "postgresql://u@h/db";
    assert_int_equal(mc_db_config_conninfo(&db, buf, sizeof buf), MC_OK);
    assert_string_equal(buf, "postgresql://u@h/db");
}

static void test_addr_forms(void **state)
{
    (void)state;
    mc_addr a;
    assert_int_equal(mc_addr_parse("[::1]:8081", &a), MC_OK);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 8081);
    assert_int_equal(mc_addr_parse("localhost:80", &a), MC_OK);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(mc_addr_parse("", &a), MC_ERR_INVALID);
    assert_int_equal(mc_addr_parse(NULL, &a), MC_ERR_INVALID);
}

static void test_help_lists_every_variable(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    mc_config_print_help(f, "svc", "A service.", vars, NVARS);
    fclose(f);
    for (size_t i = 0; i < NVARS; i++)
        assert_non_null(strstr(buf, vars[i].name));
    assert_non_null(strstr(buf, "nats://localhost:4222"));
    /* The default password is a secret: shown as set, not printed. */
    assert_null(strstr(buf, "microcloud Database password"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_the_seeds),
        cmocka_unit_test(test_values_are_parsed),
        cmocka_unit_test(test_bad_values_are_named),
        cmocka_unit_test(test_secrets_are_not_echoed),
        cmocka_unit_test(test_conninfo),
        cmocka_unit_test(test_addr_forms),
        cmocka_unit_test(test_help_lists_every_variable),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
