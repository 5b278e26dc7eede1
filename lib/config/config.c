#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#ifndef MC_BUILD_ID
#define MC_BUILD_ID "unknown"
#endif

const char *const mc_config_nats_schemes[] = {"nats", "tls", "ws", "wss", NULL};
const char *const mc_config_pg_schemes[] = {"postgres", "postgresql", NULL};
const char *const mc_config_http_schemes[] = {"http", "https", NULL};

const char *mc_build_id(void) { return MC_BUILD_ID; }

static const char *env_getenv(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

static mc_status bad(mc_error *err, const mc_config_var *v, const char *value, const char *expected)
{
    if (v->secret)
        return mc_error_set(err, MC_ERR_INVALID, "invalid %s (value hidden): expected %s", v->name,
                            expected);
    return mc_error_set(err, MC_ERR_INVALID, "invalid %s=\"%s\": expected %s", v->name, value,
                        expected);
}

static bool bounded(const mc_config_var *v) { return v->min < v->max; }

static mc_status parse_int(const char *s, int64_t *out)
{
    errno = 0;
    char *end = NULL;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || isspace((unsigned char)*s))
        return MC_ERR_INVALID;
    *out = (int64_t)x;
    return MC_OK;
}

static mc_status parse_uint(const char *s, uint64_t *out)
{
    if (*s == '-' || *s == '+' || isspace((unsigned char)*s))
        return MC_ERR_INVALID;
    errno = 0;
    char *end = NULL;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return MC_ERR_INVALID;
    *out = (uint64_t)x;
    return MC_OK;
}

static mc_status parse_port(const char *s, uint16_t *out)
{
    uint64_t p = 0;
    if (parse_uint(s, &p) != MC_OK || p < 1 || p > 65535)
        return MC_ERR_INVALID;
    *out = (uint16_t)p;
    return MC_OK;
}

mc_status mc_addr_parse(const char *s, mc_addr *out)
{
    if (s == NULL)
        return MC_ERR_INVALID;
    const char *colon = strrchr(s, ':');
    if (colon == NULL)
        return MC_ERR_INVALID;
    size_t hlen = (size_t)(colon - s);
    const char *host = s;
    /* "[::1]:8080" names an IPv6 host; strip the brackets. */
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
        host = s + 1;
        hlen -= 2;
    }
    if (hlen >= sizeof out->host)
        return MC_ERR_INVALID;
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (!(isalnum(c) || c == '.' || c == '-' || c == ':' || c == '_'))
            return MC_ERR_INVALID;
    }
    mc_addr a;
    memset(&a, 0, sizeof a);
    if (hlen == 0)
        snprintf(a.host, sizeof a.host, "0.0.0.0");
    else
        memcpy(a.host, host, hlen);
    if (parse_port(colon + 1, &a.port) != MC_OK)
        return MC_ERR_INVALID;
    *out = a;
    return MC_OK;
}

static mc_status parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"true", "1", "yes", "on"};
    static const char *no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return MC_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return MC_OK;
        }
    }
    return MC_ERR_INVALID;
}

static mc_status parse_duration_ms(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!isdigit((unsigned char)*s))
        return MC_ERR_INVALID;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return MC_ERR_INVALID;
    uint64_t mul;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return MC_ERR_INVALID;
    if (x > UINT64_MAX / mul)
        return MC_ERR_INVALID;
    *out = (uint64_t)x * mul;
    return MC_OK;
}

/* One URL: "<scheme>://<rest>" with an allowed scheme and a non-empty rest
 * without whitespace. */
static bool url_ok(const char *s, size_t len, const char *const *schemes)
{
    const char *sep = NULL;
    for (size_t i = 0; i + 2 < len; i++) {
        if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
            sep = s + i;
            break;
        }
    }
    if (sep == NULL || sep == s)
        return false;
    size_t slen = (size_t)(sep - s);
    bool scheme_ok = schemes == NULL;
    for (size_t i = 0; schemes && schemes[i]; i++) {
        if (strlen(schemes[i]) == slen && strncasecmp(s, schemes[i], slen) == 0)
            scheme_ok = true;
    }
    if (!scheme_ok)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (isspace((unsigned char)s[i]) || iscntrl((unsigned char)s[i]))
            return false;
    }
    return true;
}

static mc_status parse_urls(const char *s, const char *const *schemes)
{
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (!url_ok(p, len, schemes))
            return MC_ERR_INVALID;
        if (comma == NULL)
            return MC_OK;
        p = comma + 1;
    }
}

static void expected_schemes(char *buf, size_t n, const char *const *schemes)
{
    size_t off = (size_t)snprintf(buf, n, "a URL like ");
    for (size_t i = 0; schemes && schemes[i] && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, "%s%s://host:port", i ? " or " : "", schemes[i]);
}

static mc_status load_one(const mc_config_var *v, const char *value, void *out, mc_error *err)
{
    char *field = (char *)out + v->offset;
    char expected[256];
    switch (v->type) {
    case MC_CFG_STRING:
        *(const char **)field = value;
        return MC_OK;
    case MC_CFG_URL:
        if (value == NULL) {
            *(const char **)field = NULL;
            return MC_OK;
        }
        if (parse_urls(value, v->choices) != MC_OK) {
            expected_schemes(expected, sizeof expected, v->choices);
            return bad(err, v, value, expected);
        }
        *(const char **)field = value;
        return MC_OK;
    default: break;
    }
    if (value == NULL) /* optional, unset: leave the zeroed field */
        return MC_OK;
    switch (v->type) {
    case MC_CFG_INT: {
        int64_t x = 0;
        if (parse_int(value, &x) != MC_OK)
            return bad(err, v, value, "an integer");
        if (bounded(v) && ((double)x < v->min || (double)x > v->max)) {
            snprintf(expected, sizeof expected, "an integer from %.0f to %.0f", v->min, v->max);
            return bad(err, v, value, expected);
        }
        *(int64_t *)field = x;
        return MC_OK;
    }
    case MC_CFG_UINT: {
        uint64_t x = 0;
        if (parse_uint(value, &x) != MC_OK)
            return bad(err, v, value, "a non-negative integer");
        if (bounded(v) && ((double)x < v->min || (double)x > v->max)) {
            snprintf(expected, sizeof expected, "an integer from %.0f to %.0f", v->min, v->max);
            return bad(err, v, value, expected);
        }
        *(uint64_t *)field = x;
        return MC_OK;
    }
    case MC_CFG_DOUBLE: {
        errno = 0;
        char *end = NULL;
        double x = strtod(value, &end);
        if (errno != 0 || end == value || *end != '\0' || !isfinite(x) ||
            isspace((unsigned char)*value))
            return bad(err, v, value, "a number");
        if (bounded(v) && (x < v->min || x > v->max)) {
            snprintf(expected, sizeof expected, "a number from %g to %g", v->min, v->max);
            return bad(err, v, value, expected);
        }
        *(double *)field = x;
        return MC_OK;
    }
    case MC_CFG_BOOL:
        if (parse_bool(value, (bool *)field) != MC_OK)
            return bad(err, v, value, "true or false");
        return MC_OK;
    case MC_CFG_ENUM:
        for (int i = 0; v->choices && v->choices[i]; i++) {
            if (strcasecmp(value, v->choices[i]) == 0) {
                *(int *)field = i;
                return MC_OK;
            }
        }
        {
            size_t off = (size_t)snprintf(expected, sizeof expected, "one of ");
            for (int i = 0; v->choices && v->choices[i] && off < sizeof expected; i++)
                off += (size_t)snprintf(expected + off, sizeof expected - off, "%s%s",
                                        i ? ", " : "", v->choices[i]);
        }
        return bad(err, v, value, expected);
    case MC_CFG_PORT:
        if (parse_port(value, (uint16_t *)field) != MC_OK)
            return bad(err, v, value, "a port number from 1 to 65535");
        return MC_OK;
    case MC_CFG_ADDR:
        if (mc_addr_parse(value, (mc_addr *)field) != MC_OK)
            return bad(err, v, value, "host:port or :port with a port from 1 to 65535");
        return MC_OK;
    case MC_CFG_DURATION_MS:
        if (parse_duration_ms(value, (uint64_t *)field) != MC_OK)
            return bad(err, v, value, "a duration like 250ms, 5s, 2m or 1h");
        return MC_OK;
    case MC_CFG_LOG_LEVEL:
        if (mc_log_level_parse(value, (mc_log_level *)field) != MC_OK)
            return bad(err, v, value, "one of debug, info, warn, error");
        return MC_OK;
    case MC_CFG_LOG_FORMAT:
        if (mc_log_format_parse(value, (mc_log_format *)field) != MC_OK)
            return bad(err, v, value, "json or text");
        return MC_OK;
    case MC_CFG_STRING:
    case MC_CFG_URL: break;
    }
    return mc_error_set(err, MC_ERR_INTERNAL, "%s: unknown config type %d", v->name, (int)v->type);
}

mc_status mc_config_load(const mc_config_var *vars, size_t n, void *out,
                         mc_config_getenv_fn getenv_fn, void *ctx, mc_error *err)
{
    if (getenv_fn == NULL)
        getenv_fn = env_getenv;
    for (size_t i = 0; i < n; i++) {
        const mc_config_var *v = &vars[i];
        const char *value = getenv_fn(ctx, v->name);
        if (value != NULL && value[0] == '\0')
            value = NULL;
        if (value == NULL)
            value = v->default_value;
        mc_status st = load_one(v, value, out, err);
        if (st != MC_OK)
            return st;
    }
    return MC_OK;
}

void mc_config_print_help(FILE *f, const char *program, const char *summary,
                          const mc_config_var *vars, size_t n)
{
    fprintf(f, "Usage: %s [--help] [--version]\n\n%s\n\n", program, summary ? summary : "");
    fprintf(f, "Configuration comes from environment variables (an empty value counts as unset):\n\n");
    /* Columns as wide as their widest entry, so long names stay aligned. */
    int wname = 8, wdef = 7;
    for (size_t i = 0; i < n; i++) {
        int ln = (int)strlen(vars[i].name);
        int ld = vars[i].default_value ? (int)strlen(vars[i].default_value) : 7;
        wname = ln > wname ? ln : wname;
        wdef = ld > wdef ? ld : wdef;
    }
    wdef = wdef > 32 ? 32 : wdef;
    fprintf(f, "  %-*s  %-*s  %s\n", wname, "VARIABLE", wdef, "DEFAULT", "DESCRIPTION");
    for (size_t i = 0; i < n; i++) {
        const char *def = vars[i].default_value ? vars[i].default_value : "(unset)";
        if (vars[i].secret && vars[i].default_value)
            def = "(set)";
        fprintf(f, "  %-*s  %-*s  %s\n", wname, vars[i].name, wdef, def, vars[i].description);
    }
}

void mc_config_load_or_exit(int argc, char **argv, const char *program, const char *summary,
                            const mc_config_var *vars, size_t n, void *out)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            mc_config_print_help(stdout, program, summary, vars, n);
            exit(0);
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("%s %s\n", program, mc_build_id());
            exit(0);
        }
        fprintf(stderr, "%s: unknown argument \"%s\" (configuration comes from the environment; see --help)\n",
                program, argv[i]);
        exit(2);
    }
    mc_error err;
    mc_error_clear(&err);
    if (mc_config_load(vars, n, out, NULL, NULL, &err) != MC_OK) {
        fprintf(stderr, "%s: configuration error: %s\n", program, err.msg);
        exit(2);
    }
}

/* Appends key='value' with libpq's quoting rules (backslash before ' and \). */
static bool conninfo_put(char *out, size_t n, size_t *off, const char *key, const char *value)
{
    if (value == NULL || value[0] == '\0')
        return true;
    int w = snprintf(out + *off, n - *off, "%s%s='", *off ? " " : "", key);
    if (w < 0 || (size_t)w >= n - *off)
        return false;
    *off += (size_t)w;
    for (const char *p = value; *p; p++) {
        if (*p == '\'' || *p == '\\') {
            if (*off + 1 >= n)
                return false;
            out[(*off)++] = '\\';
        }
        if (*off + 1 >= n)
            return false;
        out[(*off)++] = *p;
    }
    if (*off + 2 > n)
        return false;
    out[(*off)++] = '\'';
    out[*off] = '\0';
    return true;
}

mc_status mc_db_config_conninfo(const mc_db_config *db, char *out, size_t n)
{
    if (n == 0)
        return MC_ERR_LIMIT;
    out[0] = '\0';
    if (db->database_url != NULL && db->database_url[0] != '\0') {
        if (strlen(db->database_url) >= n)
            return MC_ERR_LIMIT;
        memcpy(out, db->database_url, strlen(db->database_url) + 1);
        return MC_OK;
    }
    size_t off = 0;
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)db->port);
    if (!conninfo_put(out, n, &off, "host", db->host) ||
        !conninfo_put(out, n, &off, "port", db->port ? port : NULL) ||
        !conninfo_put(out, n, &off, "dbname", db->name) ||
        !conninfo_put(out, n, &off, "user", db->user) ||
        !conninfo_put(out, n, &off, "password", db->password) ||
        !conninfo_put(out, n, &off, "application_name", "microcloud"))
        return MC_ERR_LIMIT;
    return MC_OK;
}
