#include "detector/rulefile.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mc_rulefile_init(mc_rulefile *f, const char *buf, size_t len, const char *file_name)
{
    memset(f, 0, sizeof *f);
    f->buf = buf;
    f->len = buf ? len : 0;
    f->file = file_name ? file_name : "<rules>";
}

mc_status mc_rulefile_error(mc_error *err, mc_status st, const char *file, uint32_t line,
                            const char *rule, const char *field, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char where[160] = "";
    size_t n = 0;
    if (rule != NULL)
        n += (size_t)snprintf(where + n, sizeof where - n, " rule \"%.48s\":", rule);
    if (field != NULL && n < sizeof where)
        snprintf(where + n, sizeof where - n, " field \"%.48s\":", field);
    return mc_error_set(err, st, "%.80s:%u:%s %s", file ? file : "<rules>", line, where, msg);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

/* Trims [*b, *e) in place. */
static void trim(const char **b, const char **e)
{
    while (*b < *e && is_space(**b))
        (*b)++;
    while (*e > *b && is_space((*e)[-1]))
        (*e)--;
}

mc_status mc_rulefile_next(mc_rulefile *f, mc_rulefile_item *item, mc_error *err)
{
    *item = MC_RULEFILE_END;
    /* Each iteration consumes one line; the loop ends with the buffer. */
    while (f->pos < f->len) {
        f->line++;
        const char *start = f->buf + f->pos;
        const char *nl = memchr(start, '\n', f->len - f->pos);
        const char *end = nl ? nl : f->buf + f->len;
        f->pos = (size_t)(end - f->buf) + (nl ? 1 : 0);
        size_t raw = (size_t)(end - start);
        if (raw >= MC_RULEFILE_LINE_MAX)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "line longer than %d bytes", MC_RULEFILE_LINE_MAX - 1);
        if (memchr(start, '\0', raw) != NULL)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "NUL byte in line");
        const char *b = start, *e = end;
        trim(&b, &e);
        if (b == e || *b == '#' || *b == ';')
            continue;
        if (*b == '[') {
            if (e[-1] != ']')
                return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                         "section header must end with ']'");
            const char *sb = b + 1, *se = e - 1;
            trim(&sb, &se);
            size_t n = (size_t)(se - sb);
            if (n == 0 || n >= sizeof f->section)
                return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                         "bad section name");
            memcpy(f->section, sb, n);
            f->section[n] = '\0';
            f->in_section = 1;
            *item = MC_RULEFILE_SECTION;
            return MC_OK;
        }
        const char *eq = memchr(b, '=', (size_t)(e - b));
        if (eq == NULL)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "expected \"key = value\" or \"[section]\"");
        const char *kb = b, *ke = eq, *vb = eq + 1, *ve = e;
        trim(&kb, &ke);
        trim(&vb, &ve);
        size_t kn = (size_t)(ke - kb), vn = (size_t)(ve - vb);
        if (kn == 0)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "empty key before '='");
        if (kn >= sizeof f->key)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "key longer than %zu bytes", sizeof f->key - 1);
        if (vn >= sizeof f->value)
            return mc_rulefile_error(err, MC_ERR_PARSE, f->file, f->line, NULL, NULL,
                                     "value longer than %zu bytes", sizeof f->value - 1);
        memcpy(f->key, kb, kn);
        f->key[kn] = '\0';
        memcpy(f->value, vb, vn);
        f->value[vn] = '\0';
        *item = MC_RULEFILE_PAIR;
        return MC_OK;
    }
    return MC_OK;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* Case-insensitive equality, optionally after skipping a prefix. */
static int name_eq(const char *s, const char *prefix, const char *name)
{
    size_t pl = strlen(prefix);
    int has_prefix = strlen(s) > pl;
    for (size_t i = 0; has_prefix && i < pl; i++)
        if (lower(s[i]) != lower(prefix[i]))
            has_prefix = 0;
    if (has_prefix)
        s += pl;
    for (; *s && *name; s++, name++)
        if (lower(*s) != lower(*name))
            return 0;
    return *s == '\0' && *name == '\0';
}

mc_status mc_rulefile_parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    if (s == NULL || *s == '\0')
        return MC_ERR_PARSE;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (!is_digit(*p))
            return MC_ERR_PARSE;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max)
            return MC_ERR_RANGE;
    }
    *out = (uint32_t)v;
    return MC_OK;
}

mc_status mc_rulefile_parse_double(const char *s, double *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    const char *p = s;
    if (*p == '+' || *p == '-')
        p++;
    size_t digits = 0;
    while (is_digit(*p)) {
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (is_digit(*p)) {
            p++;
            digits++;
        }
    }
    if (digits == 0)
        return MC_ERR_PARSE;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!is_digit(*p))
            return MC_ERR_PARSE;
        while (is_digit(*p))
            p++;
    }
    if (*p != '\0' || (size_t)(p - s) > 64)
        return MC_ERR_PARSE;
    /* The syntax is checked above, so strtod sees only a plain decimal and
     * rounds it correctly. */
    char *end = NULL;
    double v = strtod(s, &end);
    if (end == NULL || *end != '\0')
        return MC_ERR_PARSE;
    if (!isfinite(v))
        return MC_ERR_RANGE;
    *out = v;
    return MC_OK;
}

static const char *const severity_names[] = {NULL, "info", "warning", "error", "critical"};

mc_status mc_rulefile_parse_severity(const char *s, int *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    for (int i = 1; i <= 4; i++) {
        if (name_eq(s, "INCIDENT_SEVERITY_", severity_names[i])) {
            *out = i;
            return MC_OK;
        }
    }
    uint32_t v = 0;
    mc_status st = mc_rulefile_parse_u32(s, 4, &v);
    if (st == MC_OK && v == 0)
        st = MC_ERR_RANGE;
    if (st == MC_OK)
        *out = (int)v;
    return st == MC_OK ? MC_OK : MC_ERR_PARSE;
}

static const char *const action_names[] = {NULL, "RESTART_SERVICE", "SCALE_UP", "SCALE_DOWN",
                                           "DRAIN_NODE", "REBALANCE_TRAFFIC"};

mc_status mc_rulefile_parse_action_type(const char *s, int *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    for (int i = 1; i <= 5; i++) {
        if (name_eq(s, "ACTION_TYPE_", action_names[i])) {
            *out = i;
            return MC_OK;
        }
    }
    return MC_ERR_PARSE;
}

mc_status mc_rulefile_parse_target(const char *s, mc_rule_target *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    if (name_eq(s, "", "any"))
        *out = MC_RULE_TARGET_ANY;
    else if (name_eq(s, "", "service"))
        *out = MC_RULE_TARGET_SERVICE;
    else if (name_eq(s, "", "node"))
        *out = MC_RULE_TARGET_NODE;
    else
        return MC_ERR_PARSE;
    return MC_OK;
}

mc_status mc_rulefile_parse_mode(const char *s, mc_rules_mode *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    if (name_eq(s, "", "extend"))
        *out = MC_RULES_MODE_EXTEND;
    else if (name_eq(s, "", "replace"))
        *out = MC_RULES_MODE_REPLACE;
    else
        return MC_ERR_PARSE;
    return MC_OK;
}

mc_status mc_rulefile_parse_bool(const char *s, int *out)
{
    if (s == NULL)
        return MC_ERR_PARSE;
    if (name_eq(s, "", "yes") || name_eq(s, "", "true") || name_eq(s, "", "1"))
        *out = 1;
    else if (name_eq(s, "", "no") || name_eq(s, "", "false") || name_eq(s, "", "0"))
        *out = 0;
    else
        return MC_ERR_PARSE;
    return MC_OK;
}

int mc_rulefile_name_ok(const char *s, size_t max)
{
    if (s == NULL || *s == '\0')
        return 0;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
                 c == '.' || c == '-';
        if (!ok || n + 1 >= max)
            return 0;
    }
    return 1;
}

mc_status mc_rulefile_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        return MC_ERR_RANGE;
    memcpy(dst, src, n + 1);
    return MC_OK;
}

const char *mc_rulefile_severity_name(int severity)
{
    static const char *const upper[] = {"UNSPECIFIED", "INFO", "WARNING", "ERROR", "CRITICAL"};
    return (severity >= 0 && severity <= 4) ? upper[severity] : "?";
}

const char *mc_rulefile_action_type_name(int action_type)
{
    return (action_type >= 1 && action_type <= 5) ? action_names[action_type] : "?";
}

const char *mc_rulefile_target_name(mc_rule_target t)
{
    switch (t) {
    case MC_RULE_TARGET_ANY:
        return "any";
    case MC_RULE_TARGET_SERVICE:
        return "service";
    case MC_RULE_TARGET_NODE:
        return "node";
    }
    return "?";
}
