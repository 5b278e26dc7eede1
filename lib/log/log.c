#include "log/log.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Longest record written; longer messages and values are cut, and the cut
 * is marked so nobody mistakes a truncated line for the whole story. */
#define MC_LOG_LINE_MAX 8192

static struct {
    pthread_mutex_t lock;
    char service[64];
    mc_log_level level;
    mc_log_format format;
    FILE *out;
} g_log = {PTHREAD_MUTEX_INITIALIZER, "microcloud", MC_LOG_INFO, MC_LOG_FORMAT_JSON, NULL};

void mc_log_init(const char *service, mc_log_level level, mc_log_format format, FILE *out)
{
    pthread_mutex_lock(&g_log.lock);
    snprintf(g_log.service, sizeof g_log.service, "%s", service ? service : "microcloud");
    g_log.level = level;
    g_log.format = format;
    g_log.out = out;
    pthread_mutex_unlock(&g_log.lock);
}

mc_status mc_log_level_parse(const char *s, mc_log_level *out)
{
    static const struct {
        const char *name;
        mc_log_level level;
    } names[] = {{"debug", MC_LOG_DEBUG}, {"info", MC_LOG_INFO},  {"warn", MC_LOG_WARN},
                 {"warning", MC_LOG_WARN}, {"error", MC_LOG_ERROR}};
    if (s == NULL)
        return MC_ERR_INVALID;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcasecmp(s, names[i].name) == 0) {
            *out = names[i].level;
            return MC_OK;
        }
    }
    return MC_ERR_INVALID;
}

mc_status mc_log_format_parse(const char *s, mc_log_format *out)
{
    if (s != NULL && strcasecmp(s, "json") == 0) {
        *out = MC_LOG_FORMAT_JSON;
        return MC_OK;
    }
    if (s != NULL && strcasecmp(s, "text") == 0) {
        *out = MC_LOG_FORMAT_TEXT;
        return MC_OK;
    }
    return MC_ERR_INVALID;
}

const char *mc_log_level_name(mc_log_level level)
{
    switch (level) {
    case MC_LOG_DEBUG: return "debug";
    case MC_LOG_INFO: return "info";
    case MC_LOG_WARN: return "warn";
    case MC_LOG_ERROR: return "error";
    }
    return "info";
}

bool mc_log_enabled(mc_log_level level)
{
    pthread_mutex_lock(&g_log.lock);
    bool on = level >= g_log.level;
    pthread_mutex_unlock(&g_log.lock);
    return on;
}

/* A bounded string builder: appends never overflow, and a full buffer is
 * remembered so the record can be marked as truncated. */
typedef struct line {
    char buf[MC_LOG_LINE_MAX];
    size_t len;
    bool full;
} line;

static void line_putc(line *l, char c)
{
    /* Keep room for the truncation mark, the closing brace and the newline,
     * which line_puts_reserved writes into it. */
    if (l->len + 64 >= sizeof l->buf) {
        l->full = true;
        return;
    }
    l->buf[l->len++] = c;
}

static void line_puts(line *l, const char *s)
{
    for (; *s; s++)
        line_putc(l, *s);
}

/* Appends into the reserved tail; only for the short closing marks. */
static void line_puts_reserved(line *l, const char *s)
{
    for (; *s && l->len + 2 < sizeof l->buf; s++)
        l->buf[l->len++] = *s;
}

static void line_printf(line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_printf(line *l, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    line_puts(l, tmp);
}

/* JSON string escaping (RFC 8259): quotes, backslash and control bytes.
 * Other bytes pass through, so UTF-8 stays UTF-8. */
static void line_json_str(line *l, const char *s)
{
    line_putc(l, '"');
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': line_puts(l, "\\\""); break;
        case '\\': line_puts(l, "\\\\"); break;
        case '\n': line_puts(l, "\\n"); break;
        case '\r': line_puts(l, "\\r"); break;
        case '\t': line_puts(l, "\\t"); break;
        default:
            if (*p < 0x20)
                line_printf(l, "\\u%04x", *p);
            else
                line_putc(l, (char)*p);
        }
    }
    line_putc(l, '"');
}

/* Text values are quoted only when they contain spaces, quotes, '=' or
 * control bytes, so simple values stay readable. */
static void line_text_str(line *l, const char *s)
{
    s = s ? s : "";
    bool plain = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\')
            plain = false;
    }
    if (plain)
        line_puts(l, s);
    else
        line_json_str(l, s);
}

static void line_double(line *l, double d, bool json)
{
    if (isfinite(d))
        line_printf(l, "%.17g", d);
    else if (json) /* JSON has no NaN or Infinity: write them as strings. */
        line_printf(l, "\"%s\"", isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
    else
        line_puts(l, isnan(d) ? "NaN" : (d > 0 ? "Infinity" : "-Infinity"));
}

static void line_value(line *l, const mc_log_field *f, bool json)
{
    switch (f->type) {
    case MC_LF_T_STR:
        if (json)
            line_json_str(l, f->v.s);
        else
            line_text_str(l, f->v.s);
        break;
    case MC_LF_T_INT: line_printf(l, "%" PRId64, f->v.i); break;
    case MC_LF_T_UINT: line_printf(l, "%" PRIu64, f->v.u); break;
    case MC_LF_T_DOUBLE: line_double(l, f->v.d, json); break;
    case MC_LF_T_BOOL: line_puts(l, f->v.b ? "true" : "false"); break;
    case MC_LF_T_NONE: line_puts(l, "null"); break;
    }
}

static void format_ts(char *out, size_t n)
{
    /* Log timestamps are wall time on purpose: logs are for people and are
     * never part of a decision or a trace. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03ldZ", base, ts.tv_nsec / 1000000L);
}

void mc_log_emit(mc_log_level level, const char *msg, const mc_log_field *fields, size_t n)
{
    pthread_mutex_lock(&g_log.lock);
    mc_log_level min = g_log.level;
    mc_log_format format = g_log.format;
    char service[sizeof g_log.service];
    memcpy(service, g_log.service, sizeof service);
    pthread_mutex_unlock(&g_log.lock);
    if (level < min)
        return;

    static _Thread_local line l;
    l.len = 0;
    l.full = false;
    char ts[48];
    format_ts(ts, sizeof ts);

    if (format == MC_LOG_FORMAT_JSON) {
        line_puts(&l, "{\"ts\":\"");
        line_puts(&l, ts);
        line_puts(&l, "\",\"level\":\"");
        line_puts(&l, mc_log_level_name(level));
        line_puts(&l, "\",\"service\":");
        line_json_str(&l, service);
        /* A field that does not fit is dropped whole (rolled back to where it
         * started), so a cut line is still one valid JSON object. */
        size_t mark = l.len;
        line_puts(&l, ",\"msg\":");
        line_json_str(&l, msg);
        if (l.full) {
            l.len = mark;
            l.full = false;
            line_puts(&l, ",\"msg\":\"\"");
            l.full = true;
        }
        for (size_t i = 0; i < n && !l.full; i++) {
            mark = l.len;
            line_putc(&l, ',');
            line_json_str(&l, fields[i].key);
            line_putc(&l, ':');
            line_value(&l, &fields[i], true);
            if (l.full)
                l.len = mark;
        }
        if (l.full)
            line_puts_reserved(&l, ",\"truncated\":true");
        l.buf[l.len++] = '}';
    } else {
        char upper[8];
        const char *name = mc_log_level_name(level);
        size_t k = 0;
        for (; name[k] && k < sizeof upper - 1; k++)
            upper[k] = (char)(name[k] - 'a' + 'A');
        upper[k] = '\0';
        line_printf(&l, "%s %-5s %s ", ts, upper, service);
        line_puts(&l, msg ? msg : "");
        for (size_t i = 0; i < n; i++) {
            line_putc(&l, ' ');
            line_puts(&l, fields[i].key ? fields[i].key : "");
            line_putc(&l, '=');
            line_value(&l, &fields[i], false);
        }
        if (l.full) {
            line_puts_reserved(&l, " [truncated]");
        }
    }
    l.buf[l.len++] = '\n';

    pthread_mutex_lock(&g_log.lock);
    FILE *out = g_log.out ? g_log.out : stderr;
    fwrite(l.buf, 1, l.len, out);
    fflush(out);
    pthread_mutex_unlock(&g_log.lock);
}
