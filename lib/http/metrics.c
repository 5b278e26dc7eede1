/* Prometheus registry: see metrics.h. */
#include "http/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/server.h"

#define MAX_BOUNDS 32
#define MAX_LABELS 16

typedef enum { T_COUNTER, T_GAUGE, T_HISTOGRAM } mtype;

struct mc_http_counter {
    _Atomic uint64_t v;
};

struct mc_http_gauge {
    _Atomic uint64_t bits; /* the double's bit pattern */
};

struct mc_http_histogram {
    size_t n_bounds;
    double bounds[MAX_BOUNDS];
    _Atomic uint64_t buckets[MAX_BOUNDS + 1]; /* non-cumulative; last is +Inf */
    _Atomic uint64_t sum_bits;
};

typedef struct series {
    char *labels; /* rendered: a="x",b="y" (no braces), "" for none */
    union {
        mc_http_counter c;
        mc_http_gauge g;
        mc_http_histogram h;
    } u;
} series;

typedef struct family {
    char *name;
    char *help;
    mtype type;
    series **s;
    size_t n;
} family;

struct mc_http_metrics {
    pthread_mutex_t mu;
    family *f;
    size_t n;
};

static uint64_t dbits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bitsd(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

mc_status mc_http_metrics_new(mc_http_metrics **out, mc_error *err)
{
    mc_http_metrics *r = calloc(1, sizeof *r);
    if (r == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    *out = r;
    return MC_OK;
}

void mc_http_metrics_free(mc_http_metrics *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->n; i++) {
        for (size_t k = 0; k < reg->f[i].n; k++) {
            free(reg->f[i].s[k]->labels);
            free(reg->f[i].s[k]);
        }
        free(reg->f[i].s);
        free(reg->f[i].name);
        free(reg->f[i].help);
    }
    free(reg->f);
    pthread_mutex_destroy(&reg->mu);
    free(reg);
}

static bool name_ok(const char *s, bool colon)
{
    if (s == NULL || *s == '\0')
        return false;
    for (size_t i = 0; s[i]; i++) {
        char ch = s[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                     (colon && ch == ':');
        if (!alpha && !(i > 0 && ch >= '0' && ch <= '9'))
            return false;
    }
    return true;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* Appends s to a growing buffer; false on allocation failure. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 1024;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (np == NULL) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Label values escape backslash, double quote and newline; HELP escapes
 * backslash and newline (the exposition format's rules). */
static void sb_escaped(sbuf *b, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            sb_str(b, "\\\\");
        else if (*s == '\n')
            sb_str(b, "\\n");
        else if (quote && *s == '"')
            sb_str(b, "\\\"");
        else
            sb_put(b, s, 1);
    }
}

/* The shortest decimal that reads back as the same double. */
static void fmt_double(char *out, size_t n, double v)
{
    if (isnan(v)) {
        snprintf(out, n, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, n, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Whole numbers (counts, sums of whole observations) print plainly
     * rather than as 4e+05. */
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        snprintf(out, n, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, n, "%.*g", prec, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

static mc_status add_series(mc_http_metrics *reg, const char *name, const char *help, mtype type,
                            const mc_http_metric_label *labels, size_t nl, series **out,
                            mc_error *err)
{
    if (!name_ok(name, true))
        return mc_error_set(err, MC_ERR_INVALID, "metrics: bad metric name \"%s\"",
                            name ? name : "(null)");
    if (help == NULL || help[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "metrics: %s needs a HELP text", name);
    if (type == T_COUNTER && !ends_with(name, "_total"))
        return mc_error_set(err, MC_ERR_INVALID, "metrics: counter %s must end in _total", name);
    if (type != T_COUNTER && ends_with(name, "_total"))
        return mc_error_set(err, MC_ERR_INVALID, "metrics: only counters end in _total: %s",
                            name);
    if (nl > MAX_LABELS)
        return mc_error_set(err, MC_ERR_LIMIT, "metrics: %s: more than %d labels", name,
                            MAX_LABELS);
    sbuf lb = {0};
    sb_str(&lb, "");
    for (size_t i = 0; i < nl; i++) {
        const char *ln = labels[i].name;
        if (!name_ok(ln, false) || strncmp(ln, "__", 2) == 0 ||
            (type == T_HISTOGRAM && strcmp(ln, "le") == 0) || labels[i].value == NULL) {
            free(lb.p);
            return mc_error_set(err, MC_ERR_INVALID, "metrics: %s: bad label name \"%s\"", name,
                                ln ? ln : "(null)");
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(labels[k].name, ln) == 0) {
                free(lb.p);
                return mc_error_set(err, MC_ERR_INVALID, "metrics: %s: label %s twice", name, ln);
            }
        if (i > 0)
            sb_str(&lb, ",");
        sb_str(&lb, ln);
        sb_str(&lb, "=\"");
        sb_escaped(&lb, labels[i].value, true);
        sb_str(&lb, "\"");
    }
    if (lb.oom) {
        free(lb.p);
        return mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
    }
    pthread_mutex_lock(&reg->mu);
    family *f = NULL;
    for (size_t i = 0; i < reg->n; i++)
        if (strcmp(reg->f[i].name, name) == 0)
            f = &reg->f[i];
    mc_status st = MC_OK;
    if (f != NULL) {
        if (f->type != type || strcmp(f->help, help) != 0)
            st = mc_error_set(err, MC_ERR_INVALID,
                              "metrics: %s is registered with another type or help", name);
        for (size_t k = 0; st == MC_OK && k < f->n; k++)
            if (strcmp(f->s[k]->labels, lb.p) == 0)
                st = mc_error_set(err, MC_ERR_EXISTS, "metrics: %s{%s} is registered already",
                                  name, lb.p);
    } else {
        /* Histogram series names (_bucket, _sum, _count) must not collide
         * with other families. */
        for (size_t i = 0; st == MC_OK && i < reg->n; i++) {
            family *o = &reg->f[i];
            size_t ol = strlen(o->name), nlen = strlen(name);
            bool clash = false;
            if (o->type == T_HISTOGRAM && nlen > ol && strncmp(name, o->name, ol) == 0)
                clash = !strcmp(name + ol, "_bucket") || !strcmp(name + ol, "_sum") ||
                        !strcmp(name + ol, "_count");
            if (type == T_HISTOGRAM && ol > nlen && strncmp(o->name, name, nlen) == 0)
                clash = !strcmp(o->name + nlen, "_bucket") || !strcmp(o->name + nlen, "_sum") ||
                        !strcmp(o->name + nlen, "_count");
            if (clash)
                st = mc_error_set(err, MC_ERR_INVALID, "metrics: %s clashes with %s", name,
                                  o->name);
        }
        if (st == MC_OK) {
            family *nf = realloc(reg->f, (reg->n + 1) * sizeof *nf);
            if (nf == NULL) {
                st = mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
            } else {
                reg->f = nf;
                f = &reg->f[reg->n];
                *f = (family){.name = strdup(name), .help = strdup(help), .type = type};
                if (f->name == NULL || f->help == NULL) {
                    free(f->name);
                    free(f->help);
                    st = mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
                } else {
                    reg->n++;
                }
            }
        }
    }
    series *s = NULL;
    if (st == MC_OK) {
        s = calloc(1, sizeof *s);
        series **ns = s ? realloc(f->s, (f->n + 1) * sizeof *ns) : NULL;
        if (ns == NULL) {
            free(s);
            st = mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
        } else {
            f->s = ns;
            s->labels = lb.p;
            lb.p = NULL;
            f->s[f->n++] = s;
        }
    }
    pthread_mutex_unlock(&reg->mu);
    free(lb.p);
    *out = s;
    return st;
}

mc_status mc_http_metrics_counter(mc_http_metrics *reg, const char *name, const char *help,
                                  const mc_http_metric_label *labels, size_t n_labels,
                                  mc_http_counter **out, mc_error *err)
{
    series *s;
    mc_status st = add_series(reg, name, help, T_COUNTER, labels, n_labels, &s, err);
    *out = st == MC_OK ? &s->u.c : NULL;
    return st;
}

mc_status mc_http_metrics_gauge(mc_http_metrics *reg, const char *name, const char *help,
                                const mc_http_metric_label *labels, size_t n_labels,
                                mc_http_gauge **out, mc_error *err)
{
    series *s;
    mc_status st = add_series(reg, name, help, T_GAUGE, labels, n_labels, &s, err);
    *out = st == MC_OK ? &s->u.g : NULL;
    return st;
}

mc_status mc_http_metrics_histogram(mc_http_metrics *reg, const char *name, const char *help,
                                    const mc_http_metric_label *labels, size_t n_labels,
                                    const double *bounds, size_t n_bounds,
                                    mc_http_histogram **out, mc_error *err)
{
    *out = NULL;
    if (n_bounds == 0 || n_bounds > MAX_BOUNDS || bounds == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "metrics: %s needs 1..%d bucket bounds",
                            name ? name : "(null)", MAX_BOUNDS);
    for (size_t i = 0; i < n_bounds; i++)
        if (!isfinite(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])))
            return mc_error_set(err, MC_ERR_INVALID,
                                "metrics: %s: bounds must be finite and increasing", name);
    series *s;
    mc_status st = add_series(reg, name, help, T_HISTOGRAM, labels, n_labels, &s, err);
    if (st != MC_OK)
        return st;
    s->u.h.n_bounds = n_bounds;
    memcpy(s->u.h.bounds, bounds, n_bounds * sizeof *bounds);
    *out = &s->u.h;
    return MC_OK;
}

void mc_http_counter_inc(mc_http_counter *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->v, 1, memory_order_relaxed);
}

void mc_http_counter_add(mc_http_counter *c, uint64_t n)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

uint64_t mc_http_counter_value(const mc_http_counter *c)
{
    return c ? atomic_load_explicit(&((mc_http_counter *)c)->v, memory_order_relaxed) : 0;
}

void mc_http_gauge_set(mc_http_gauge *g, double v)
{
    if (g != NULL)
        atomic_store_explicit(&g->bits, dbits(v), memory_order_relaxed);
}

static void atomic_add_double(_Atomic uint64_t *a, double d)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, dbits(bitsd(old) + d),
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

void mc_http_gauge_add(mc_http_gauge *g, double d)
{
    if (g != NULL)
        atomic_add_double(&g->bits, d);
}

double mc_http_gauge_value(const mc_http_gauge *g)
{
    return g ? bitsd(atomic_load_explicit(&((mc_http_gauge *)g)->bits, memory_order_relaxed))
             : 0.0;
}

void mc_http_histogram_observe(mc_http_histogram *h, double v)
{
    if (h == NULL || isnan(v))
        return;
    size_t i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_add_double(&h->sum_bits, v);
}

static void put_sample(sbuf *b, const char *name, const char *suffix, const char *labels,
                       const char *extra, const char *value)
{
    sb_str(b, name);
    sb_str(b, suffix);
    if (labels[0] || extra) {
        sb_str(b, "{");
        sb_str(b, labels);
        if (extra) {
            if (labels[0])
                sb_str(b, ",");
            sb_str(b, extra);
        }
        sb_str(b, "}");
    }
    sb_str(b, " ");
    sb_str(b, value);
    sb_str(b, "\n");
}

mc_status mc_http_metrics_render(mc_http_metrics *reg, char **out, size_t *len, mc_error *err)
{
    static const char *const tnames[] = {"counter", "gauge", "histogram"};
    sbuf b = {0};
    sb_str(&b, "");
    char num[64], extra[96];
    pthread_mutex_lock(&reg->mu);
    for (size_t i = 0; i < reg->n; i++) {
        family *f = &reg->f[i];
        sb_str(&b, "# HELP ");
        sb_str(&b, f->name);
        sb_str(&b, " ");
        sb_escaped(&b, f->help, false);
        sb_str(&b, "\n# TYPE ");
        sb_str(&b, f->name);
        sb_str(&b, " ");
        sb_str(&b, tnames[f->type]);
        sb_str(&b, "\n");
        for (size_t k = 0; k < f->n; k++) {
            series *s = f->s[k];
            switch (f->type) {
            case T_COUNTER:
                snprintf(num, sizeof num, "%llu",
                         (unsigned long long)mc_http_counter_value(&s->u.c));
                put_sample(&b, f->name, "", s->labels, NULL, num);
                break;
            case T_GAUGE:
                fmt_double(num, sizeof num, mc_http_gauge_value(&s->u.g));
                put_sample(&b, f->name, "", s->labels, NULL, num);
                break;
            case T_HISTOGRAM: {
                mc_http_histogram *h = &s->u.h;
                uint64_t cum = 0;
                char le[48];
                for (size_t j = 0; j <= h->n_bounds; j++) {
                    cum += atomic_load_explicit(&h->buckets[j], memory_order_relaxed);
                    if (j < h->n_bounds)
                        fmt_double(le, sizeof le, h->bounds[j]);
                    else
                        snprintf(le, sizeof le, "+Inf");
                    snprintf(extra, sizeof extra, "le=\"%s\"", le);
                    snprintf(num, sizeof num, "%llu", (unsigned long long)cum);
                    put_sample(&b, f->name, "_bucket", s->labels, extra, num);
                }
                fmt_double(num, sizeof num,
                           bitsd(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
                put_sample(&b, f->name, "_sum", s->labels, NULL, num);
                snprintf(num, sizeof num, "%llu", (unsigned long long)cum);
                put_sample(&b, f->name, "_count", s->labels, NULL, num);
                break;
            }
            }
        }
    }
    pthread_mutex_unlock(&reg->mu);
    if (b.oom) {
        free(b.p);
        return mc_error_set(err, MC_ERR_NOMEM, "metrics: out of memory");
    }
    *out = b.p;
    if (len)
        *len = b.len;
    return MC_OK;
}

void mc_http_metrics_handler(struct mc_http_request *req, void *ctx)
{
    char *text = NULL;
    size_t len = 0;
    if (mc_http_metrics_render(ctx, &text, &len, NULL) != MC_OK) {
        mc_http_respond_text(req, 500, "text/plain; charset=utf-8", "metrics unavailable\n");
        return;
    }
    mc_http_respond_owned(req, 200, MC_HTTP_METRICS_CONTENT_TYPE, text, len);
}
