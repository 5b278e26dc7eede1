#include "detector/rulefile.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

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
    return mc_text_copy(dst, cap, src) ? MC_OK : MC_ERR_RANGE;
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

mc_status mc_rulefile_set_name(char *dst, const char *value, const char **why)
{
    if (!mc_rulefile_name_ok(value, MC_RULEFILE_NAME_MAX)) {
        *why = "must be 1..47 characters of [A-Za-z0-9_.-]";
        return MC_ERR_INVALID;
    }
    return mc_rulefile_copy(dst, MC_RULEFILE_NAME_MAX, value);
}

/* Every rule starts with its name (see rulefile.h). */
static const char *rule_name(const mc_rulefile_schema *s, const void *rules, size_t i)
{
    return (const char *)rules + i * s->rule_size;
}

/* The index of the rule called name in rules[0..count), or count. */
static size_t rule_find(const mc_rulefile_schema *s, const void *rules, size_t count,
                        const char *name)
{
    size_t i = 0;
    while (i < count && strcmp(rule_name(s, rules, i), name) != 0)
        i++;
    return i;
}

mc_status mc_rulefile_rules_validate(const mc_rulefile_schema *s, const void *rules,
                                     size_t count, mc_error *err)
{
    if (rules == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "%s: NULL rule set", s->what);
    if (count > s->rule_cap)
        return mc_error_set(err, MC_ERR_LIMIT, "%s: %zu rules, at most %zu", s->what, count,
                            s->rule_cap);
    if (count == 0)
        return mc_error_set(err, MC_ERR_INVALID, "%s: no rule", s->what);
    for (size_t i = 0; i < count; i++) {
        mc_status st = s->validate(rule_name(s, rules, i), s->what, 0, err);
        if (st != MC_OK)
            return st;
        if (rule_find(s, rules, i, rule_name(s, rules, i)) < i)
            return mc_error_set(err, MC_ERR_EXISTS, "%s: rule \"%s\" is defined twice",
                                s->what, rule_name(s, rules, i));
    }
    return MC_OK;
}

/* The [rule] section being read. */
typedef struct rule_builder {
    void *rule; /* the caller's scratch rule */
    unsigned seen;
    uint32_t line; /* of the [rule] header */
    /* "#<ordinal>" until the name is read: names the rule in errors. */
    char label[MC_RULEFILE_NAME_MAX + 8];
} rule_builder;

static void builder_start(const mc_rulefile_schema *s, rule_builder *b, uint32_t line,
                          size_t ordinal)
{
    memset(b->rule, 0, s->rule_size);
    b->seen = 0;
    b->line = line;
    if (s->start != NULL)
        s->start(b->rule);
    snprintf(b->label, sizeof b->label, "#%zu", ordinal);
}

static mc_status builder_set(const mc_rulefile_schema *s, rule_builder *b, const mc_rulefile *f,
                             mc_error *err)
{
    unsigned flag = 0;
    for (size_t i = 0; i < s->field_count; i++)
        if (strcmp(f->key, s->fields[i].key) == 0)
            flag = s->fields[i].flag;
    if (flag == 0)
        return mc_rulefile_error(err, MC_ERR_INVALID, f->file, f->line, b->label, f->key,
                                 "unknown field (see RULES.md)");
    if (b->seen & flag)
        return mc_rulefile_error(err, MC_ERR_INVALID, f->file, f->line, b->label, f->key,
                                 "set twice in one rule");
    b->seen |= flag;
    const char *why = "";
    mc_status st = s->set(b->rule, flag, f->value, &why);
    if (st != MC_OK)
        return mc_rulefile_error(err, st, f->file, f->line, b->label, f->key, "\"%.64s\" %s",
                                 f->value, why);
    if (flag == s->name_flag)
        snprintf(b->label, sizeof b->label, "%s", f->value);
    return MC_OK;
}

static mc_status builder_finish(const mc_rulefile_schema *s, rule_builder *b, const char *file,
                                void *rules, size_t *count, mc_error *err)
{
    for (size_t i = 0; i < s->field_count; i++)
        if (s->fields[i].required && !(b->seen & s->fields[i].flag))
            return mc_rulefile_error(err, MC_ERR_INVALID, file, b->line, b->label,
                                     s->fields[i].key, "required field missing");
    if (s->complete != NULL)
        s->complete(b->rule, b->seen);
    mc_status st = s->validate(b->rule, file, b->line, err);
    if (st != MC_OK)
        return st;
    if (rule_find(s, rules, *count, b->rule) < *count)
        return mc_rulefile_error(err, MC_ERR_EXISTS, file, b->line, b->label, "name",
                                 "a rule of this name is defined earlier in the file");
    if (*count >= s->rule_cap)
        return mc_rulefile_error(err, MC_ERR_LIMIT, file, b->line, b->label, NULL,
                                 "more than %zu rules", s->rule_cap);
    memcpy((char *)rules + *count * s->rule_size, b->rule, s->rule_size);
    (*count)++;
    return MC_OK;
}

mc_status mc_rulefile_rules_parse(const mc_rulefile_schema *s, const char *buf, size_t len,
                                  const char *file_name, void *rules, size_t *count,
                                  void *scratch, mc_rules_mode *mode, mc_error *err)
{
    memset(rules, 0, s->rule_cap * s->rule_size);
    *count = 0;
    *mode = MC_RULES_MODE_EXTEND;
    mc_rulefile f;
    mc_rulefile_init(&f, buf, len, file_name);
    rule_builder b = {.rule = scratch};
    int in_rule = 0, mode_seen = 0;
    size_t ordinal = 0;
    /* Each iteration consumes one item; mc_rulefile_next ends with the
     * buffer. */
    for (;;) {
        mc_rulefile_item item;
        mc_status st = mc_rulefile_next(&f, &item, err);
        if (st != MC_OK)
            return st;
        if (item == MC_RULEFILE_END)
            break;
        if (item == MC_RULEFILE_SECTION) {
            if (strcmp(f.section, "rule") != 0)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, NULL,
                                         "unknown section [%s] (only [rule])", f.section);
            if (in_rule && (st = builder_finish(s, &b, f.file, rules, count, err)) != MC_OK)
                return st;
            builder_start(s, &b, f.line, ++ordinal);
            in_rule = 1;
            continue;
        }
        if (!in_rule) {
            if (strcmp(f.key, "mode") != 0)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, f.key,
                                         "only \"mode\" may come before the first [rule]");
            if (mode_seen)
                return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, NULL, "mode",
                                         "set twice");
            if (mc_rulefile_parse_mode(f.value, mode) != MC_OK)
                return mc_rulefile_error(err, MC_ERR_PARSE, f.file, f.line, NULL, "mode",
                                         "\"%.64s\" must be extend or replace", f.value);
            mode_seen = 1;
            continue;
        }
        if (strcmp(f.key, "mode") == 0)
            return mc_rulefile_error(err, MC_ERR_INVALID, f.file, f.line, b.label, "mode",
                                     "mode must come before the first [rule]");
        if ((st = builder_set(s, &b, &f, err)) != MC_OK)
            return st;
    }
    if (in_rule)
        return builder_finish(s, &b, f.file, rules, count, err);
    return MC_OK;
}

mc_status mc_rulefile_rules_apply(const mc_rulefile_schema *s, void *rules, size_t *count,
                                  const void *file_rules, size_t file_count, mc_rules_mode mode,
                                  const char *file_name, mc_error *err)
{
    const char *file = file_name ? file_name : "<rules>";
    if (mode == MC_RULES_MODE_REPLACE) {
        memcpy(rules, file_rules, s->rule_cap * s->rule_size);
        *count = file_count;
    } else {
        for (size_t i = 0; i < file_count; i++) {
            const char *name = rule_name(s, file_rules, i);
            size_t j = rule_find(s, rules, *count, name);
            if (j == *count && *count >= s->rule_cap)
                return mc_error_set(err, MC_ERR_LIMIT,
                                    "%s: rule \"%s\": more than %zu rules with the built-ins",
                                    file, name, s->rule_cap);
            memcpy((char *)rules + j * s->rule_size, name, s->rule_size);
            if (j == *count)
                (*count)++;
        }
    }
    mc_status st = mc_rulefile_rules_validate(s, rules, *count, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "%s", file);
    return MC_OK;
}
