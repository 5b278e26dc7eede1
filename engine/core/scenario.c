#include "scenario.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/table.h"
#include "sim/v1/events.pb-c.h"
#include "sort.h"

/* ---------------------------------------------------------------------------
 * Fault types
 * ------------------------------------------------------------------------- */

static const char *const fault_names[] = {
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH] = "node_crash",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_DEGRADATION] = "node_degradation",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_MEMORY_LEAK] = "memory_leak",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_CPU_HOG] = "cpu_hog",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_TRAFFIC_SPIKE] = "traffic_spike",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_DEPENDENCY_LATENCY] = "dependency_latency",
    [SIM__V1__FAULT_TYPE__FAULT_TYPE_ERROR_BURST] = "error_burst",
};
#define FAULT_TYPE_MAX SIM__V1__FAULT_TYPE__FAULT_TYPE_ERROR_BURST

const char *mc_scenario_fault_type_name(int type)
{
    if (type < 1 || type > FAULT_TYPE_MAX)
        return NULL;
    return fault_names[type];
}

int mc_scenario_fault_type_parse(const char *name)
{
    for (int t = 1; t <= FAULT_TYPE_MAX; t++)
        if (strcmp(fault_names[t], name) == 0)
            return t;
    return 0;
}

mc_target_kind mc_scenario_fault_target_kind(int type)
{
    switch (type) {
    case SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH:
    case SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_DEGRADATION:
        return MC_TARGET_NODE;
    case SIM__V1__FAULT_TYPE__FAULT_TYPE_CPU_HOG:
        return MC_TARGET_NONE;
    default:
        return MC_TARGET_SERVICE;
    }
}

const char *mc_scenario_fault_intensity_check(int type, double intensity)
{
    if (!isfinite(intensity))
        return "a finite number";
    switch (type) {
    case SIM__V1__FAULT_TYPE__FAULT_TYPE_NODE_CRASH:
        /* A crash is all or nothing; the intensity is not used. */
        return intensity >= 0.0 && intensity <= 1.0 ? NULL : "a number from 0 to 1";
    case SIM__V1__FAULT_TYPE__FAULT_TYPE_TRAFFIC_SPIKE:
        return intensity > 0.0 && intensity <= 100.0 ? NULL
                                                     : "a load multiplier above 0, at most 100";
    default:
        return intensity > 0.0 && intensity <= 1.0 ? NULL : "a number above 0, at most 1";
    }
}

/* ---------------------------------------------------------------------------
 * Dependency order
 * ------------------------------------------------------------------------- */

/* A binary min-heap of service indices keyed by rank. */
static void heap_push(uint32_t *heap, size_t *n, const uint32_t *rank, uint32_t v)
{
    size_t i = (*n)++;
    heap[i] = v;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (rank[heap[p]] <= rank[heap[i]])
            break;
        uint32_t t = heap[p];
        heap[p] = heap[i];
        heap[i] = t;
        i = p;
    }
}

static uint32_t heap_pop(uint32_t *heap, size_t *n, const uint32_t *rank)
{
    uint32_t top = heap[0];
    heap[0] = heap[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && rank[heap[l]] < rank[heap[m]])
            m = l;
        if (r < *n && rank[heap[r]] < rank[heap[m]])
            m = r;
        if (m == i)
            break;
        uint32_t t = heap[m];
        heap[m] = heap[i];
        heap[i] = t;
        i = m;
    }
    return top;
}

mc_status mc_scenario_dep_order(size_t n, const uint32_t *dep_first, const uint32_t *dep_count,
                                const uint32_t *dep_target, const uint32_t *rank, uint32_t *order,
                                uint32_t *cycle, size_t *cycle_len)
{
    *cycle_len = 0;
    if (n == 0)
        return MC_OK;
    size_t n_edges = 0;
    for (size_t i = 0; i < n; i++)
        n_edges += dep_count[i];
    /* Reverse adjacency (who calls t) as compressed rows, plus pending
     * dependency counts and the ready heap. */
    uint32_t *pending = calloc(n, sizeof *pending);
    uint32_t *rev_first = calloc(n + 1, sizeof *rev_first);
    uint32_t *rev = calloc(n_edges ? n_edges : 1, sizeof *rev);
    uint32_t *heap = calloc(n, sizeof *heap);
    uint32_t *fill = calloc(n, sizeof *fill);
    if (!pending || !rev_first || !rev || !heap || !fill) {
        free(pending);
        free(rev_first);
        free(rev);
        free(heap);
        free(fill);
        return MC_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        pending[i] = dep_count[i];
        for (uint32_t k = 0; k < dep_count[i]; k++)
            rev_first[dep_target[dep_first[i] + k] + 1]++;
    }
    for (size_t i = 0; i < n; i++)
        rev_first[i + 1] += rev_first[i];
    for (size_t i = 0; i < n; i++)
        for (uint32_t k = 0; k < dep_count[i]; k++) {
            uint32_t t = dep_target[dep_first[i] + k];
            rev[rev_first[t] + fill[t]++] = (uint32_t)i;
        }
    size_t hn = 0, placed = 0;
    for (size_t i = 0; i < n; i++)
        if (pending[i] == 0)
            heap_push(heap, &hn, rank, (uint32_t)i);
    while (hn > 0) {
        uint32_t s = heap_pop(heap, &hn, rank);
        order[placed++] = s;
        for (uint32_t k = rev_first[s]; k < rev_first[s + 1]; k++)
            if (--pending[rev[k]] == 0)
                heap_push(heap, &hn, rank, rev[k]);
    }
    mc_status st = MC_OK;
    if (placed < n) {
        /* Every service left over still waits on a dependency that is also
         * left over, so walking "first pending dependency" from any of them
         * must come back to a service already seen: that loop is a cycle.
         * fill[] is reused as "position on the walk + 1". */
        st = MC_ERR_INVALID;
        memset(fill, 0, n * sizeof *fill);
        uint32_t cur = UINT32_MAX;
        for (size_t i = 0; i < n; i++)
            if (pending[i] > 0 && (cur == UINT32_MAX || rank[i] < rank[cur]))
                cur = (uint32_t)i;
        size_t steps = 0;
        while (fill[cur] == 0 && steps < n) {
            order[steps] = cur; /* order is scratch now */
            fill[cur] = (uint32_t)++steps;
            uint32_t next = cur;
            for (uint32_t k = 0; k < dep_count[cur]; k++) {
                uint32_t t = dep_target[dep_first[cur] + k];
                if (pending[t] > 0) {
                    next = t;
                    break;
                }
            }
            cur = next;
        }
        size_t from = fill[cur] ? fill[cur] - 1 : 0;
        for (size_t i = from; i < steps; i++)
            cycle[(*cycle_len)++] = order[i];
    }
    free(pending);
    free(rev_first);
    free(rev);
    free(heap);
    free(fill);
    return st;
}

/* ---------------------------------------------------------------------------
 * Parser
 * ------------------------------------------------------------------------- */

typedef enum section {
    SEC_NONE = 0,
    SEC_SCENARIO,
    SEC_TRAFFIC,
    SEC_NODE,
    SEC_SERVICE,
    SEC_FAULT
} section;

static const char *const section_names[] = {"", "scenario", "traffic", "node", "service", "fault"};

typedef enum field_type {
    T_ID,    /* an identifier */
    T_TEXT,  /* free text */
    T_POS,   /* a number > 0, at most max */
    T_NUM,   /* a number in [min, max] */
    T_UINT,  /* a uint32 in [min, max] */
    T_U64,   /* a uint64 in [min, max] */
    T_I64,   /* an int64 */
    T_FTYPE, /* a fault type name */
    T_DEPS   /* the dependency list */
} field_type;

typedef struct field_def {
    const char *name;
    field_type type;
    int required;
    size_t offset;
    double min, max;
} field_def;

#define FIELDS_MAX 16

#define SC(f) offsetof(mc_scenario, f)
static const field_def scenario_fields[] = {
    {"name", T_ID, 1, SC(name), 0, 0},
    {"description", T_TEXT, 0, SC(description), 0, 0},
    {"start_time_unix_ms", T_I64, 0, SC(start_time_unix_ms), 0, 0},
    {"tick_ms", T_UINT, 0, SC(tick_ms), 1, 86400000},
    {NULL, 0, 0, 0, 0, 0}};

#define TR(f) offsetof(mc_scenario_traffic, f)
static const field_def traffic_fields[] = {
    {"day_ticks", T_UINT, 0, TR(day_ticks), 2, 100000000},
    {"day_phase", T_NUM, 0, TR(day_phase), 0, 1},
    {"daily_amplitude", T_NUM, 0, TR(daily_amplitude), 0, 1},
    {"noise", T_NUM, 0, TR(noise), 0, 1},
    {"burst_probability", T_NUM, 0, TR(burst_probability), 0, 1},
    {"burst_multiplier", T_NUM, 0, TR(burst_multiplier), 1, 100},
    {"ramp_start_tick", T_U64, 0, TR(ramp_start_tick), 0, 1e12},
    {"ramp_ticks", T_UINT, 0, TR(ramp_ticks), 0, 100000000},
    {"ramp_multiplier", T_POS, 0, TR(ramp_multiplier), 0, 100},
    {"blocking_factor", T_NUM, 0, TR(blocking_factor), 0, 10},
    {NULL, 0, 0, 0, 0, 0}};

#define ND(f) offsetof(mc_scenario_node, f)
static const field_def node_fields[] = {
    {"id", T_ID, 1, ND(id), 0, 0},
    {"cpu_cores", T_POS, 1, ND(cpu_cores), 0, 1e6},
    {"memory_mb", T_POS, 1, ND(memory_mb), 0, 1e9},
    {NULL, 0, 0, 0, 0, 0}};

#define SV(f) offsetof(mc_scenario_service, f)
enum { SV_F_REPLICAS = 9, SV_F_MAX_REPLICAS = 10, SV_F_MEM_LIMIT = 5 };
static const field_def service_fields[] = {
    {"id", T_ID, 1, SV(id), 0, 0},
    {"external_rps", T_NUM, 0, SV(external_rps), 0, 1e7},
    {"cpu_ms_per_request", T_POS, 1, SV(cpu_ms_per_request), 0, 1e6},
    {"cpu_cores_per_replica", T_POS, 0, SV(cpu_cores_per_replica), 0, 1e4},
    {"memory_baseline_mb", T_POS, 0, SV(memory_baseline_mb), 0, 1e7},
    {"memory_limit_mb", T_POS, 0, SV(memory_limit_mb), 0, 1e7},
    {"base_latency_ms", T_POS, 0, SV(base_latency_ms), 0, 1e6},
    {"timeout_ms", T_POS, 0, SV(timeout_ms), 0, 1e7},
    {"depends_on", T_DEPS, 0, 0, 0, 0},
    {"replicas", T_UINT, 0, SV(replicas), 1, 1000},
    {"max_replicas", T_UINT, 0, SV(max_replicas), 1, 1000},
    {"warmup_ticks", T_UINT, 0, SV(warmup_ticks), 1, 10000},
    {"restart_ticks", T_UINT, 0, SV(restart_ticks), 1, 10000},
    {NULL, 0, 0, 0, 0, 0}};

#define FT(f) offsetof(mc_scenario_fault, f)
enum { FT_F_TARGET = 1, FT_F_INTENSITY = 2 };
static const field_def fault_fields[] = {
    {"type", T_FTYPE, 1, FT(type), 0, 0},
    {"target", T_ID, 1, FT(target_id), 0, 0},
    {"intensity", T_NUM, 1, FT(intensity), 0, 100},
    {"start_tick", T_U64, 0, FT(start_tick), 0, 1e12},
    {"duration_ticks", T_UINT, 0, FT(duration_ticks), 0, 100000000},
    {NULL, 0, 0, 0, 0, 0}};

static const field_def *const section_fields[] = {NULL, scenario_fields, traffic_fields,
                                                  node_fields, service_fields, fault_fields};

/* A dependency as written, resolved to an index after the whole file is read
 * (a service may call one defined further down). */
typedef struct pending_dep {
    char name[MC_SCENARIO_ID_MAX];
    uint32_t line;
} pending_dep;

typedef struct parser {
    const char *file;
    mc_error *err;
    mc_scenario *sc;
    /* The section being read. */
    section sec;
    uint32_t sec_line;
    uint32_t field_line[FIELDS_MAX]; /* 0 when the field was not given */
    mc_scenario_node node;
    mc_scenario_service service;
    mc_scenario_fault fault;
    uint32_t scenario_line, traffic_line;
    /* Growing arrays and their capacities. */
    size_t cap_nodes, cap_services, cap_deps, cap_faults;
    pending_dep *pdeps;         /* parallel to sc->deps */
    uint32_t *svc_deps_line;    /* parallel to sc->services */
    uint32_t *fault_target_line, *fault_intensity_line; /* parallel to sc->faults */
} parser;

static mc_status fail(parser *p, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static mc_status fail(parser *p, uint32_t line, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (line > 0)
        return mc_error_set(p->err, MC_ERR_PARSE, "%s:%u: %s", p->file, line, msg);
    return mc_error_set(p->err, MC_ERR_PARSE, "%s: %s", p->file, msg);
}

/* Shows a value in an error message: cut so the line stays readable. */
static void shown(char out[72], const char *v)
{
    size_t n = strlen(v);
    if (n <= 64) {
        memcpy(out, v, n + 1);
        return;
    }
    memcpy(out, v, 61);
    memcpy(out + 61, "...", 4);
}

static mc_status bad_value(parser *p, uint32_t line, const char *field, const char *expected,
                           const char *value)
{
    char v[72];
    shown(v, value);
    return fail(p, line, "field \"%s\": expected %s, got \"%s\"", field, expected, v);
}

static int is_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

static int valid_id(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n >= MC_SCENARIO_ID_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_id_char(v[i]))
            return 0;
    return 1;
}

static int parse_double(const char *v, double *out)
{
    if (*v == '\0')
        return 0;
    /* Only plain decimal notation: strtod would also take "nan", "inf" and
     * hex floats, which no scenario needs. */
    for (const char *c = v; *c; c++)
        if (!((*c >= '0' && *c <= '9') || *c == '.' || *c == '-' || *c == '+' || *c == 'e' ||
              *c == 'E'))
            return 0;
    char *end = NULL;
    double d = strtod(v, &end);
    if (end == v || *end != '\0' || !isfinite(d))
        return 0;
    *out = d;
    return 1;
}

static int parse_u64(const char *v, uint64_t *out)
{
    if (*v == '\0')
        return 0;
    uint64_t x = 0;
    for (const char *c = v; *c; c++) {
        if (*c < '0' || *c > '9')
            return 0;
        uint64_t d = (uint64_t)(*c - '0');
        if (x > (UINT64_MAX - d) / 10)
            return 0;
        x = x * 10 + d;
    }
    *out = x;
    return 1;
}

static int parse_i64(const char *v, int64_t *out)
{
    int neg = 0;
    if (*v == '-') {
        neg = 1;
        v++;
    }
    uint64_t u;
    if (!parse_u64(v, &u) || u > (uint64_t)INT64_MAX)
        return 0;
    *out = neg ? -(int64_t)u : (int64_t)u;
    return 1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static void *grow(void *arr, size_t *cap, size_t len, size_t elem, size_t max)
{
    if (len < *cap)
        return arr;
    size_t ncap = *cap ? *cap * 2 : 16;
    if (ncap > max)
        ncap = max;
    void *n = realloc(arr, ncap * elem);
    if (n != NULL)
        *cap = ncap;
    return n;
}

static mc_status parse_deps(parser *p, uint32_t line, char *v)
{
    mc_scenario *sc = p->sc;
    char original[MC_SCENARIO_MAX_LINE + 1];
    memcpy(original, v, strlen(v) + 1);
    p->service.dep_first = (uint32_t)sc->n_deps;
    char *save = NULL;
    for (char *tok = strtok_r(v, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        char *t = trim(tok);
        if (*t == '\0')
            return bad_value(p, line, "depends_on",
                             "a comma-separated list of service ids, each with an optional "
                             "\":ratio\"",
                             original);
        double ratio = 1.0;
        char *colon = strchr(t, ':');
        if (colon != NULL) {
            *colon = '\0';
            char *r = trim(colon + 1);
            if (!parse_double(r, &ratio) || ratio <= 0.0 || ratio > 100.0)
                return bad_value(p, line, "depends_on",
                                 "a call ratio above 0, at most 100, after the ':'", r);
            t = trim(t);
        }
        if (!valid_id(t))
            return bad_value(p, line, "depends_on",
                             "a service id of letters, digits, '-', '_' or '.'", t);
        if (p->service.dep_count >= MC_SCENARIO_MAX_DEPS)
            return fail(p, line, "field \"depends_on\": more than %d dependencies",
                        MC_SCENARIO_MAX_DEPS);
        for (uint32_t k = 0; k < p->service.dep_count; k++)
            if (strcmp(p->pdeps[p->service.dep_first + k].name, t) == 0)
                return fail(p, line, "field \"depends_on\": \"%s\" is listed twice", t);
        size_t cap = p->cap_deps;
        mc_scenario_dep *nd = grow(sc->deps, &cap, sc->n_deps, sizeof *nd,
                                   (size_t)MC_SCENARIO_MAX_SERVICES * MC_SCENARIO_MAX_DEPS);
        if (nd == NULL)
            return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        sc->deps = nd;
        if (cap != p->cap_deps) {
            pending_dep *pd = realloc(p->pdeps, cap * sizeof *pd);
            if (pd == NULL)
                return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
            p->pdeps = pd;
            p->cap_deps = cap;
        }
        memset(&sc->deps[sc->n_deps], 0, sizeof sc->deps[0]);
        sc->deps[sc->n_deps].ratio = ratio;
        memset(&p->pdeps[sc->n_deps], 0, sizeof p->pdeps[0]);
        memcpy(p->pdeps[sc->n_deps].name, t, strlen(t) + 1);
        p->pdeps[sc->n_deps].line = line;
        sc->n_deps++;
        p->service.dep_count++;
    }
    return MC_OK;
}

/* Stores one "key = value" of the current section. */
static mc_status set_field(parser *p, uint32_t line, const char *key, char *value)
{
    const field_def *defs = section_fields[p->sec];
    int idx = -1;
    for (int i = 0; defs[i].name != NULL; i++)
        if (strcmp(defs[i].name, key) == 0)
            idx = i;
    if (idx < 0) {
        char k[72];
        shown(k, key);
        return fail(p, line, "unknown field \"%s\" in [%s]", k, section_names[p->sec]);
    }
    const field_def *f = &defs[idx];
    if (p->field_line[idx] != 0)
        return fail(p, line, "field \"%s\": given twice in this [%s] (first on line %u)", f->name,
                    section_names[p->sec], p->field_line[idx]);
    char *base = NULL;
    switch (p->sec) {
    case SEC_SCENARIO: base = (char *)p->sc; break;
    case SEC_TRAFFIC: base = (char *)&p->sc->traffic; break;
    case SEC_NODE: base = (char *)&p->node; break;
    case SEC_SERVICE: base = (char *)&p->service; break;
    case SEC_FAULT: base = (char *)&p->fault; break;
    default: return fail(p, line, "internal: no section");
    }
    char *dst = base + f->offset;
    char expect[96];
    switch (f->type) {
    case T_ID:
        if (!valid_id(value))
            return bad_value(p, line, f->name,
                             "an id of letters, digits, '-', '_' or '.' (1 to 63 characters)",
                             value);
        memcpy(dst, value, strlen(value) + 1);
        break;
    case T_TEXT:
        if (strlen(value) >= MC_SCENARIO_DESC_MAX)
            return bad_value(p, line, f->name, "at most 255 characters", value);
        memcpy(dst, value, strlen(value) + 1);
        break;
    case T_POS: {
        double d;
        if (!parse_double(value, &d) || d <= 0.0)
            return bad_value(p, line, f->name, "a positive number", value);
        if (d > f->max) {
            snprintf(expect, sizeof expect, "a positive number up to %g", f->max);
            return bad_value(p, line, f->name, expect, value);
        }
        memcpy(dst, &d, sizeof d);
        break;
    }
    case T_NUM: {
        double d;
        if (!parse_double(value, &d) || d < f->min || d > f->max) {
            snprintf(expect, sizeof expect, "a number from %g to %g", f->min, f->max);
            return bad_value(p, line, f->name, expect, value);
        }
        memcpy(dst, &d, sizeof d);
        break;
    }
    case T_UINT:
    case T_U64: {
        uint64_t u;
        if (!parse_u64(value, &u) || (double)u < f->min || (double)u > f->max) {
            if (f->min >= 1)
                snprintf(expect, sizeof expect, "a whole number from %.0f to %.0f", f->min,
                         f->max);
            else
                snprintf(expect, sizeof expect, "a whole number from 0 to %.0f", f->max);
            return bad_value(p, line, f->name, expect, value);
        }
        if (f->type == T_UINT) {
            uint32_t u32 = (uint32_t)u;
            memcpy(dst, &u32, sizeof u32);
        } else {
            memcpy(dst, &u, sizeof u);
        }
        break;
    }
    case T_I64: {
        int64_t i;
        if (!parse_i64(value, &i))
            return bad_value(p, line, f->name, "a whole number", value);
        memcpy(dst, &i, sizeof i);
        break;
    }
    case T_FTYPE: {
        int t = mc_scenario_fault_type_parse(value);
        if (t == 0)
            return bad_value(p, line, f->name,
                             "one of node_crash, node_degradation, memory_leak, cpu_hog, "
                             "traffic_spike, dependency_latency, error_burst",
                             value);
        memcpy(dst, &t, sizeof t);
        break;
    }
    case T_DEPS: {
        mc_status st = parse_deps(p, line, value);
        if (st != MC_OK)
            return st;
        break;
    }
    }
    p->field_line[idx] = line;
    return MC_OK;
}

static void section_defaults(parser *p)
{
    memset(p->field_line, 0, sizeof p->field_line);
    memset(&p->node, 0, sizeof p->node);
    memset(&p->service, 0, sizeof p->service);
    memset(&p->fault, 0, sizeof p->fault);
    mc_scenario_service *s = &p->service;
    s->cpu_cores_per_replica = 1.0;
    s->memory_baseline_mb = 256.0;
    s->memory_limit_mb = 1024.0;
    s->base_latency_ms = 10.0;
    s->timeout_ms = 3000.0;
    s->replicas = 2;
    s->max_replicas = 10;
    s->warmup_ticks = 3;
    s->restart_ticks = 3;
}

/* Closes the current section: checks required fields and appends the
 * record. */
static mc_status finish_section(parser *p)
{
    if (p->sec == SEC_NONE)
        return MC_OK;
    const field_def *defs = section_fields[p->sec];
    for (int i = 0; defs[i].name != NULL; i++)
        if (defs[i].required && p->field_line[i] == 0)
            return fail(p, p->sec_line, "[%s] is missing field \"%s\"", section_names[p->sec],
                        defs[i].name);
    mc_scenario *sc = p->sc;
    switch (p->sec) {
    case SEC_NODE: {
        if (sc->n_nodes >= MC_SCENARIO_MAX_NODES)
            return fail(p, p->sec_line, "too many [node] sections (at most %d)",
                        MC_SCENARIO_MAX_NODES);
        mc_scenario_node *n =
            grow(sc->nodes, &p->cap_nodes, sc->n_nodes, sizeof *n, MC_SCENARIO_MAX_NODES);
        if (n == NULL)
            return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        sc->nodes = n;
        p->node.line = p->sec_line;
        sc->nodes[sc->n_nodes++] = p->node;
        break;
    }
    case SEC_SERVICE: {
        mc_scenario_service *s = &p->service;
        if (s->max_replicas < s->replicas) {
            char v[24];
            snprintf(v, sizeof v, "%u", s->max_replicas);
            char expect[64];
            snprintf(expect, sizeof expect, "at least replicas (%u)", s->replicas);
            return bad_value(p,
                             p->field_line[SV_F_MAX_REPLICAS] ? p->field_line[SV_F_MAX_REPLICAS]
                                                              : p->sec_line,
                             "max_replicas", expect, v);
        }
        if (s->memory_limit_mb < s->memory_baseline_mb) {
            char v[32];
            snprintf(v, sizeof v, "%g", s->memory_limit_mb);
            char expect[80];
            snprintf(expect, sizeof expect, "at least memory_baseline_mb (%g)",
                     s->memory_baseline_mb);
            return bad_value(p,
                             p->field_line[SV_F_MEM_LIMIT] ? p->field_line[SV_F_MEM_LIMIT]
                                                           : p->sec_line,
                             "memory_limit_mb", expect, v);
        }
        if (sc->n_services >= MC_SCENARIO_MAX_SERVICES)
            return fail(p, p->sec_line, "too many [service] sections (at most %d)",
                        MC_SCENARIO_MAX_SERVICES);
        size_t cap = p->cap_services;
        mc_scenario_service *ns =
            grow(sc->services, &cap, sc->n_services, sizeof *ns, MC_SCENARIO_MAX_SERVICES);
        if (ns == NULL)
            return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        sc->services = ns;
        if (cap != p->cap_services) {
            uint32_t *dl = realloc(p->svc_deps_line, cap * sizeof *dl);
            if (dl == NULL)
                return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
            p->svc_deps_line = dl;
            p->cap_services = cap;
        }
        s->line = p->sec_line;
        if (s->dep_count == 0)
            s->dep_first = (uint32_t)sc->n_deps;
        p->svc_deps_line[sc->n_services] = p->field_line[8] ? p->field_line[8] : p->sec_line;
        sc->services[sc->n_services++] = *s;
        break;
    }
    case SEC_FAULT: {
        if (sc->n_faults >= MC_SCENARIO_MAX_FAULTS)
            return fail(p, p->sec_line, "too many [fault] sections (at most %d)",
                        MC_SCENARIO_MAX_FAULTS);
        size_t cap = p->cap_faults;
        mc_scenario_fault *nf =
            grow(sc->faults, &cap, sc->n_faults, sizeof *nf, MC_SCENARIO_MAX_FAULTS);
        if (nf == NULL)
            return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        sc->faults = nf;
        if (cap != p->cap_faults) {
            uint32_t *a = realloc(p->fault_target_line, cap * sizeof *a);
            if (a != NULL)
                p->fault_target_line = a;
            uint32_t *b = realloc(p->fault_intensity_line, cap * sizeof *b);
            if (b != NULL)
                p->fault_intensity_line = b;
            if (a == NULL || b == NULL)
                return mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
            p->cap_faults = cap;
        }
        p->fault.line = p->sec_line;
        p->fault_target_line[sc->n_faults] = p->field_line[FT_F_TARGET];
        p->fault_intensity_line[sc->n_faults] = p->field_line[FT_F_INTENSITY];
        sc->faults[sc->n_faults++] = p->fault;
        break;
    }
    default:
        break;
    }
    p->sec = SEC_NONE;
    return MC_OK;
}

static mc_status start_section(parser *p, uint32_t line, char *name)
{
    mc_status st = finish_section(p);
    if (st != MC_OK)
        return st;
    section s = SEC_NONE;
    for (int i = 1; i <= SEC_FAULT; i++)
        if (strcmp(section_names[i], name) == 0)
            s = (section)i;
    if (s == SEC_NONE) {
        char v[72];
        shown(v, name);
        return fail(p, line,
                    "unknown section [%s] (expected [scenario], [traffic], [node], [service] or "
                    "[fault])",
                    v);
    }
    if (s == SEC_SCENARIO) {
        if (p->scenario_line)
            return fail(p, line, "a second [scenario] section (the first is on line %u)",
                        p->scenario_line);
        p->scenario_line = line;
    }
    if (s == SEC_TRAFFIC) {
        if (p->traffic_line)
            return fail(p, line, "a second [traffic] section (the first is on line %u)",
                        p->traffic_line);
        p->traffic_line = line;
    }
    section_defaults(p);
    p->sec = s;
    p->sec_line = line;
    return MC_OK;
}

static mc_status parse_line(parser *p, uint32_t line, char *raw)
{
    /* A '#' at the start of a line or after a blank starts a comment. */
    for (char *c = raw; *c; c++)
        if (*c == '#' && (c == raw || c[-1] == ' ' || c[-1] == '\t')) {
            *c = '\0';
            break;
        }
    char *s = trim(raw);
    if (*s == '\0')
        return MC_OK;
    if (*s == '[') {
        size_t n = strlen(s);
        if (s[n - 1] != ']') {
            char v[72];
            shown(v, s);
            return fail(p, line, "expected a section header like [node], got \"%s\"", v);
        }
        s[n - 1] = '\0';
        return start_section(p, line, trim(s + 1));
    }
    char *eq = strchr(s, '=');
    if (eq == NULL) {
        char v[72];
        shown(v, s);
        return fail(p, line, "expected \"key = value\" or a [section] header, got \"%s\"", v);
    }
    *eq = '\0';
    char *key = trim(s);
    char *value = trim(eq + 1);
    if (*key == '\0')
        return fail(p, line, "expected a field name before '='");
    if (p->sec == SEC_NONE) {
        char k[72];
        shown(k, key);
        return fail(p, line, "field \"%s\" comes before any [section] header", k);
    }
    return set_field(p, line, key, value);
}

/* Orders service (or node) indices by id, for binary search and duplicate
 * detection. */
static int cmp_service_id(const void *ctx, uint32_t a, uint32_t b)
{
    const mc_scenario *sc = ctx;
    int c = strcmp(sc->services[a].id, sc->services[b].id);
    return c != 0 ? c : (a < b ? -1 : a > b);
}

static int cmp_node_id(const void *ctx, uint32_t a, uint32_t b)
{
    const mc_scenario *sc = ctx;
    int c = strcmp(sc->nodes[a].id, sc->nodes[b].id);
    return c != 0 ? c : (a < b ? -1 : a > b);
}

static long find_sorted_service(const mc_scenario *sc, const uint32_t *by_id, const char *id)
{
    bool found = false;
    size_t pos = mc_table_find_id(sc->services, sizeof *sc->services,
                                  offsetof(mc_scenario_service, id), by_id, sc->n_services, id,
                                  &found);
    return found ? (long)by_id[pos] : -1;
}

static long find_sorted_node(const mc_scenario *sc, const uint32_t *by_id, const char *id)
{
    bool found = false;
    size_t pos = mc_table_find_id(sc->nodes, sizeof *sc->nodes, offsetof(mc_scenario_node, id),
                                  by_id, sc->n_nodes, id, &found);
    return found ? (long)by_id[pos] : -1;
}

/* Cross-section checks once the whole file is read: unique ids, resolved
 * dependencies, no cycle, fault targets. */
static mc_status resolve(parser *p)
{
    mc_scenario *sc = p->sc;
    if (p->scenario_line == 0)
        return fail(p, 0, "missing [scenario] section (with at least \"name = ...\")");
    if (sc->n_nodes == 0)
        return fail(p, 0, "a scenario needs at least one [node]");
    if (sc->n_services == 0)
        return fail(p, 0, "a scenario needs at least one [service]");
    size_t n = sc->n_services > sc->n_nodes ? sc->n_services : sc->n_nodes;
    uint32_t *svc_by_id = calloc(sc->n_services, sizeof *svc_by_id);
    uint32_t *node_by_id = calloc(sc->n_nodes, sizeof *node_by_id);
    uint32_t *scratch = calloc(n, sizeof *scratch);
    uint32_t *dep_first = calloc(sc->n_services, sizeof *dep_first);
    uint32_t *dep_count = calloc(sc->n_services, sizeof *dep_count);
    uint32_t *dep_target = calloc(sc->n_deps ? sc->n_deps : 1, sizeof *dep_target);
    uint32_t *rank = calloc(sc->n_services, sizeof *rank);
    uint32_t *order = calloc(sc->n_services, sizeof *order);
    uint32_t *cycle = calloc(sc->n_services, sizeof *cycle);
    mc_status st = MC_OK;
    if (!svc_by_id || !node_by_id || !scratch || !dep_first || !dep_count || !dep_target ||
        !rank || !order || !cycle) {
        st = mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        goto out;
    }
    for (size_t i = 0; i < sc->n_services; i++)
        svc_by_id[i] = (uint32_t)i;
    for (size_t i = 0; i < sc->n_nodes; i++)
        node_by_id[i] = (uint32_t)i;
    mc_sort_u32(svc_by_id, sc->n_services, scratch, cmp_service_id, sc);
    mc_sort_u32(node_by_id, sc->n_nodes, scratch, cmp_node_id, sc);
    for (size_t i = 1; i < sc->n_services; i++) {
        const mc_scenario_service *a = &sc->services[svc_by_id[i - 1]];
        const mc_scenario_service *b = &sc->services[svc_by_id[i]];
        if (strcmp(a->id, b->id) == 0) {
            st = fail(p, b->line, "field \"id\": duplicate service id \"%s\" (first on line %u)",
                      b->id, a->line);
            goto out;
        }
    }
    for (size_t i = 1; i < sc->n_nodes; i++) {
        const mc_scenario_node *a = &sc->nodes[node_by_id[i - 1]];
        const mc_scenario_node *b = &sc->nodes[node_by_id[i]];
        if (strcmp(a->id, b->id) == 0) {
            st = fail(p, b->line, "field \"id\": duplicate node id \"%s\" (first on line %u)",
                      b->id, a->line);
            goto out;
        }
    }
    for (size_t i = 0; i < sc->n_nodes; i++) {
        long s = find_sorted_service(sc, svc_by_id, sc->nodes[i].id);
        if (s >= 0) {
            st = fail(p, sc->nodes[i].line,
                      "field \"id\": \"%s\" names both a node and a service (line %u); fault "
                      "targets must be unambiguous",
                      sc->nodes[i].id, sc->services[s].line);
            goto out;
        }
    }
    for (size_t d = 0; d < sc->n_deps; d++) {
        long s = find_sorted_service(sc, svc_by_id, p->pdeps[d].name);
        if (s < 0) {
            st = fail(p, p->pdeps[d].line, "field \"depends_on\": unknown service \"%s\"",
                      p->pdeps[d].name);
            goto out;
        }
        sc->deps[d].service = (uint32_t)s;
        dep_target[d] = (uint32_t)s;
    }
    for (size_t i = 0; i < sc->n_services; i++) {
        dep_first[i] = sc->services[i].dep_first;
        dep_count[i] = sc->services[i].dep_count;
        rank[i] = (uint32_t)i;
    }
    size_t cycle_len = 0;
    st = mc_scenario_dep_order(sc->n_services, dep_first, dep_count, dep_target, rank, order,
                               cycle, &cycle_len);
    if (st == MC_ERR_NOMEM) {
        st = mc_error_set(p->err, MC_ERR_NOMEM, "%s: out of memory", p->file);
        goto out;
    }
    if (st != MC_OK) {
        char path[300];
        size_t used = 0;
        path[0] = '\0';
        for (size_t i = 0; i <= cycle_len && used < sizeof path - 8; i++) {
            const char *id = sc->services[cycle[i % cycle_len]].id;
            int w = snprintf(path + used, sizeof path - used, "%s%s", i ? " -> " : "", id);
            if (w < 0)
                break;
            used += (size_t)w;
        }
        if (used >= sizeof path - 8)
            memcpy(path + sizeof path - 8, " ...", 5);
        st = fail(p, p->svc_deps_line[cycle[0]], "field \"depends_on\": dependency cycle %s",
                  path);
        goto out;
    }
    for (size_t f = 0; f < sc->n_faults; f++) {
        mc_scenario_fault *ft = &sc->faults[f];
        long s = find_sorted_service(sc, svc_by_id, ft->target_id);
        long nd = find_sorted_node(sc, node_by_id, ft->target_id);
        mc_target_kind need = mc_scenario_fault_target_kind(ft->type);
        const char *tname = mc_scenario_fault_type_name(ft->type);
        if (s < 0 && nd < 0) {
            st = fail(p, p->fault_target_line[f], "field \"target\": unknown node or service \"%s\"",
                      ft->target_id);
            goto out;
        }
        if (need == MC_TARGET_NODE && nd < 0) {
            st = fail(p, p->fault_target_line[f],
                      "field \"target\": %s needs a node, \"%s\" is a service", tname,
                      ft->target_id);
            goto out;
        }
        if (need == MC_TARGET_SERVICE && s < 0) {
            st = fail(p, p->fault_target_line[f],
                      "field \"target\": %s needs a service, \"%s\" is a node", tname,
                      ft->target_id);
            goto out;
        }
        ft->target_kind = s >= 0 ? MC_TARGET_SERVICE : MC_TARGET_NODE;
        ft->target_index = (uint32_t)(s >= 0 ? s : nd);
        const char *range = mc_scenario_fault_intensity_check(ft->type, ft->intensity);
        if (range != NULL) {
            char v[32], expect[96];
            snprintf(v, sizeof v, "%g", ft->intensity);
            snprintf(expect, sizeof expect, "%s for %s", range, tname);
            st = bad_value(p, p->fault_intensity_line[f], "intensity", expect, v);
            goto out;
        }
    }
out:
    free(svc_by_id);
    free(node_by_id);
    free(scratch);
    free(dep_first);
    free(dep_count);
    free(dep_target);
    free(rank);
    free(order);
    free(cycle);
    return st;
}

static void scenario_defaults(mc_scenario *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->start_time_unix_ms = INT64_C(1767225600000); /* 2026-01-01T00:00:00Z */
    sc->tick_ms = 1000;
    sc->traffic.day_ticks = 1440;
    sc->traffic.daily_amplitude = 0.2;
    sc->traffic.noise = 0.05;
    sc->traffic.burst_probability = 0.0;
    sc->traffic.burst_multiplier = 1.5;
    sc->traffic.ramp_multiplier = 1.0;
    sc->traffic.blocking_factor = 0.2;
}

mc_status mc_scenario_parse(const char *buf, size_t len, const char *file_name, mc_scenario *out,
                            mc_error *err)
{
    parser p;
    memset(&p, 0, sizeof p);
    p.file = file_name ? file_name : "<scenario>";
    p.err = err;
    p.sc = out;
    scenario_defaults(out);
    mc_status st = MC_OK;
    char *line_buf = NULL;
    if (buf == NULL && len > 0) {
        st = fail(&p, 0, "no data");
        goto done;
    }
    if (len > MC_SCENARIO_MAX_BYTES) {
        st = fail(&p, 0, "file too large (%zu bytes, at most %u)", len, MC_SCENARIO_MAX_BYTES);
        goto done;
    }
    line_buf = malloc(MC_SCENARIO_MAX_LINE + 1);
    if (line_buf == NULL) {
        st = mc_error_set(err, MC_ERR_NOMEM, "%s: out of memory", p.file);
        goto done;
    }
    uint32_t line = 0;
    size_t pos = 0;
    while (pos < len) {
        line++;
        size_t end = pos;
        while (end < len && buf[end] != '\n')
            end++;
        size_t n = end - pos;
        if (n > MC_SCENARIO_MAX_LINE) {
            st = fail(&p, line, "line longer than %d characters", MC_SCENARIO_MAX_LINE);
            goto done;
        }
        if (memchr(buf + pos, '\0', n) != NULL) {
            st = fail(&p, line, "NUL byte in the line (is this a text file?)");
            goto done;
        }
        memcpy(line_buf, buf + pos, n);
        line_buf[n] = '\0';
        st = parse_line(&p, line, line_buf);
        if (st != MC_OK)
            goto done;
        pos = end + 1;
    }
    st = finish_section(&p);
    if (st == MC_OK)
        st = resolve(&p);
done:
    free(line_buf);
    free(p.pdeps);
    free(p.svc_deps_line);
    free(p.fault_target_line);
    free(p.fault_intensity_line);
    if (st != MC_OK)
        mc_scenario_free(out);
    return st;
}

static void *dup_array(const void *src, size_t n, size_t elem, int *fail_flag)
{
    if (n == 0)
        return NULL;
    void *d = malloc(n * elem);
    if (d == NULL) {
        *fail_flag = 1;
        return NULL;
    }
    memcpy(d, src, n * elem);
    return d;
}

mc_status mc_scenario_copy(mc_scenario *dst, const mc_scenario *src, mc_error *err)
{
    int failed = 0;
    *dst = *src;
    dst->nodes = dup_array(src->nodes, src->n_nodes, sizeof *src->nodes, &failed);
    dst->services = dup_array(src->services, src->n_services, sizeof *src->services, &failed);
    dst->deps = dup_array(src->deps, src->n_deps, sizeof *src->deps, &failed);
    dst->faults = dup_array(src->faults, src->n_faults, sizeof *src->faults, &failed);
    if (failed) {
        mc_scenario_free(dst);
        return mc_error_set(err, MC_ERR_NOMEM, "scenario copy: out of memory");
    }
    return MC_OK;
}

void mc_scenario_free(mc_scenario *sc)
{
    if (sc == NULL)
        return;
    free(sc->nodes);
    free(sc->services);
    free(sc->deps);
    free(sc->faults);
    memset(sc, 0, sizeof *sc);
}

long mc_scenario_service_find(const mc_scenario *sc, const char *id)
{
    for (size_t i = 0; i < sc->n_services; i++)
        if (strcmp(sc->services[i].id, id) == 0)
            return (long)i;
    return -1;
}

long mc_scenario_node_find(const mc_scenario *sc, const char *id)
{
    for (size_t i = 0; i < sc->n_nodes; i++)
        if (strcmp(sc->nodes[i].id, id) == 0)
            return (long)i;
    return -1;
}
