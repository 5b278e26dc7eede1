#include "harness/setup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "engine/core/engine.h"

void mc_setup_init(mc_run_setup *s)
{
    memset(s, 0, sizeof *s);
    s->approval_mode = MC_APPROVAL_MODE_AUTO;
    mc_detector_rules_builtin(&s->det_rules);
    mc_decider_rules_builtin(&s->dec_rules);
}

void mc_setup_deinit(mc_run_setup *s)
{
    if (s)
        mc_scenario_free(&s->sc);
}

mc_status mc_read_file(const char *path, size_t max, char **out, size_t *len, mc_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return mc_error_set(err, errno == ENOENT ? MC_ERR_NOT_FOUND : MC_ERR_IO, "%s: %s", path,
                            strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        fclose(f);
        return mc_error_set(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            if (cap >= max) {
                free(buf);
                fclose(f);
                return mc_error_set(err, MC_ERR_LIMIT, "%s: larger than %zu bytes", path, max);
            }
            size_t ncap = cap * 2 > max ? max : cap * 2;
            char *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                fclose(f);
                return mc_error_set(err, MC_ERR_NOMEM, "%s: out of memory", path);
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mc_error_set(err, MC_ERR_IO, "%s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return MC_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

mc_status mc_setup_load_scenario(mc_run_setup *s, const char *dir, const char *name_or_path,
                                 mc_error *err)
{
    char path[512];
    if (strchr(name_or_path, '/') || ends_with(name_or_path, ".scenario"))
        snprintf(path, sizeof path, "%s", name_or_path);
    else
        snprintf(path, sizeof path, "%s/%s.scenario", dir ? dir : ".", name_or_path);
    char *buf = NULL;
    size_t len = 0;
    mc_status st = mc_read_file(path, MC_SCENARIO_MAX_BYTES, &buf, &len, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "scenario \"%s\"", name_or_path);
    const char *base = strrchr(path, '/');
    mc_scenario_free(&s->sc);
    st = mc_scenario_parse(buf, len, base ? base + 1 : path, &s->sc, err);
    if (st == MC_OK) {
        mc_setup_scenario_digest(buf, len, s->scenario_file_digest);
        snprintf(s->scenario_name, sizeof s->scenario_name, "%s", s->sc.name);
        snprintf(s->scenario_arg, sizeof s->scenario_arg, "%s", name_or_path);
    }
    free(buf);
    return st;
}

void mc_setup_scenario_digest(const void *bytes, size_t len, uint8_t out[32])
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/scenario-file/v1");
    mc_digest_bytes(&d, bytes, len);
    mc_digest_final(&d, out);
}

/* The settings: names, defaults and ranges as the services declare them
 * (sim-engine, signal-service, agent-service, orchestrator --help). */
static const struct {
    const char *name;
    uint64_t def; /* MC_SETTING_TICK_DURATION_MS: the scenario's */
    uint64_t min, max;
} k_settings[MC_SETTING_COUNT] = {
    [MC_SETTING_CHUNK_SAMPLES] = {"METRICS_CHUNK_SAMPLES", MC_ENGINE_DEFAULT_CHUNK_SAMPLES, 1,
                                  100000},
    [MC_SETTING_TICK_DURATION_MS] = {"TICK_DURATION_MS", 1000, 1, 3600000},
    [MC_SETTING_DETECTOR_MAX_TARGETS] = {"DETECTOR_MAX_TARGETS", 20000, 1, 1000000},
    [MC_SETTING_AGENT_MAX_IN_FLIGHT] = {"AGENT_MAX_IN_FLIGHT", 5, 1, 100000},
    [MC_SETTING_AGENT_TARGET_COOLDOWN] = {"AGENT_TARGET_COOLDOWN_TICKS", 5, 0, 1000000},
    [MC_SETTING_AGENT_ACTION_EXPIRY] = {"AGENT_ACTION_EXPIRY_TICKS", 30, 0, 1000000},
    [MC_SETTING_ACTION_EXPIRY] = {"ACTION_EXPIRY_TICKS", MC_APPROVAL_DEFAULT_EXPIRY_TICKS, 0,
                                  1000000000000ull},
};

const char *mc_setup_setting_name(size_t i)
{
    return i < MC_SETTING_COUNT ? k_settings[i].name : NULL;
}

mc_status mc_setup_setting(mc_run_setup *s, const char *kv, mc_error *err)
{
    const char *eq = strchr(kv, '=');
    size_t nlen = eq ? (size_t)(eq - kv) : 0;
    for (size_t i = 0; eq && i < MC_SETTING_COUNT; i++) {
        if (strlen(k_settings[i].name) != nlen || strncmp(k_settings[i].name, kv, nlen) != 0)
            continue;
        const char *v = eq + 1;
        char *end = NULL;
        errno = 0;
        unsigned long long x = (*v >= '0' && *v <= '9') ? strtoull(v, &end, 10) : 0;
        if (end == NULL || end == v || *end != '\0' || errno != 0 || x < k_settings[i].min ||
            x > k_settings[i].max)
            return mc_error_set(err, MC_ERR_INVALID,
                                "setting %s: \"%s\" is not a whole number in %llu..%llu",
                                k_settings[i].name, v, (unsigned long long)k_settings[i].min,
                                (unsigned long long)k_settings[i].max);
        s->setting_value[i] = x;
        s->setting_set[i] = true;
        return MC_OK;
    }
    return mc_error_set(err, eq ? MC_ERR_NOT_FOUND : MC_ERR_INVALID,
                        "setting \"%s\": expected NAME=VALUE with NAME one of METRICS_CHUNK_SAMPLES, "
                        "TICK_DURATION_MS, DETECTOR_MAX_TARGETS, AGENT_MAX_IN_FLIGHT, "
                        "AGENT_TARGET_COOLDOWN_TICKS, AGENT_ACTION_EXPIRY_TICKS, "
                        "ACTION_EXPIRY_TICKS",
                        kv);
}

static uint64_t setting_default(const mc_run_setup *s, size_t i)
{
    if (i == MC_SETTING_TICK_DURATION_MS && s->sc.tick_ms != 0)
        return s->sc.tick_ms;
    return k_settings[i].def;
}

uint64_t mc_setup_setting_get(const mc_run_setup *s, size_t i)
{
    if (i >= MC_SETTING_COUNT)
        return 0;
    return s->setting_set[i] ? s->setting_value[i] : setting_default(s, i);
}

size_t mc_setup_settings_format(const mc_run_setup *s,
                                char out[MC_SETTING_COUNT][MC_SETUP_SETTING_MAX])
{
    size_t n = 0;
    for (size_t i = 0; i < MC_SETTING_COUNT; i++) {
        if (!s->setting_set[i] || s->setting_value[i] == setting_default(s, i))
            continue;
        snprintf(out[n++], MC_SETUP_SETTING_MAX, "%s=%llu", k_settings[i].name,
                 (unsigned long long)s->setting_value[i]);
    }
    return n;
}

static mc_status load_rules_file(const char *path, char **buf, size_t *len, mc_error *err)
{
    *buf = NULL;
    *len = 0;
    if (!path)
        return MC_OK;
    return mc_read_file(path, 1u << 20, buf, len, err);
}

static void flags_add(mc_run_setup *s, const char *flag, const char *value)
{
    size_t n = strlen(s->flags);
    snprintf(s->flags + n, sizeof s->flags - n, " %s '%s'", flag, value);
}

mc_status mc_setup_rules_files(mc_run_setup *s, const char *detector_path, const char *decider_path,
                               mc_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    mc_status st = load_rules_file(detector_path, &buf, &len, err);
    if (st != MC_OK)
        return st;
    if (detector_path) {
        st = mc_detector_rules_load(buf, len, detector_path, &s->det_rules, err);
        free(buf);
        if (st != MC_OK)
            return st;
        flags_add(s, "--detector-rules", detector_path);
    }
    st = load_rules_file(decider_path, &buf, &len, err);
    if (st != MC_OK)
        return st;
    if (decider_path) {
        st = mc_decider_rules_load(buf, len, decider_path, &s->dec_rules, err);
        free(buf);
        if (st != MC_OK)
            return st;
        flags_add(s, "--decider-rules", decider_path);
    }
    return MC_OK;
}

static mc_status parse_u32(const char *kv, const char *v, uint32_t *out, mc_error *err)
{
    if (mc_rulefile_parse_u32(v, UINT32_MAX, out) != MC_OK)
        return mc_error_set(err, MC_ERR_INVALID, "--override %s: \"%s\" is not a whole number", kv,
                            v);
    return MC_OK;
}

mc_status mc_setup_override(mc_run_setup *s, const char *kv, mc_error *err)
{
    char key[160];
    const char *eq = strchr(kv, '=');
    if (!eq || (size_t)(eq - kv) >= sizeof key)
        return mc_error_set(err, MC_ERR_INVALID,
                            "--override %s: expected detector.<rule>[.<field>]=<value> or "
                            "decider.<rule>.<field>=<value>",
                            kv);
    memcpy(key, kv, (size_t)(eq - kv));
    key[eq - kv] = '\0';
    const char *value = eq + 1;
    char *dot = strchr(key, '.');
    if (!dot)
        return mc_error_set(err, MC_ERR_INVALID,
                            "--override %s: no component (detector. or decider.)", kv);
    *dot = '\0';
    char *rule = dot + 1;
    char *field = strchr(rule, '.');
    if (field)
        *field++ = '\0';
    mc_status st = MC_OK;
    if (strcmp(key, "detector") == 0) {
        mc_detector_rule *r = NULL;
        for (size_t i = 0; i < s->det_rules.count; i++)
            if (strcmp(s->det_rules.rules[i].name, rule) == 0)
                r = &s->det_rules.rules[i];
        if (!r)
            return mc_error_set(err, MC_ERR_NOT_FOUND, "--override %s: no detection rule \"%s\"",
                                kv, rule);
        if (!field || strcmp(field, "threshold") == 0) {
            if (mc_rulefile_parse_double(value, &r->threshold) != MC_OK)
                return mc_error_set(err, MC_ERR_INVALID, "--override %s: \"%s\" is not a number",
                                    kv, value);
        } else if (strcmp(field, "window_seconds") == 0) {
            st = parse_u32(kv, value, &r->window_seconds, err);
        } else if (strcmp(field, "for_ticks") == 0) {
            st = parse_u32(kv, value, &r->for_ticks, err);
        } else if (strcmp(field, "clear_ticks") == 0) {
            st = parse_u32(kv, value, &r->clear_ticks, err);
        } else if (strcmp(field, "severity") == 0) {
            if (mc_rulefile_parse_severity(value, &r->severity) != MC_OK)
                return mc_error_set(err, MC_ERR_INVALID, "--override %s: bad severity", kv);
        } else {
            return mc_error_set(err, MC_ERR_INVALID,
                                "--override %s: unknown detector field \"%s\" (threshold, "
                                "window_seconds, for_ticks, clear_ticks, severity)",
                                kv, field);
        }
        if (st == MC_OK)
            st = mc_detector_rules_validate(&s->det_rules, err);
    } else if (strcmp(key, "decider") == 0) {
        mc_decider_rule *r = NULL;
        for (size_t i = 0; i < s->dec_rules.count; i++)
            if (strcmp(s->dec_rules.rules[i].name, rule) == 0)
                r = &s->dec_rules.rules[i];
        if (!r)
            return mc_error_set(err, MC_ERR_NOT_FOUND, "--override %s: no decision rule \"%s\"", kv,
                                rule);
        if (!field)
            return mc_error_set(err, MC_ERR_INVALID,
                                "--override %s: decider overrides name a field", kv);
        if (strcmp(field, "cooldown_ticks") == 0) {
            st = parse_u32(kv, value, &r->cooldown_ticks, err);
        } else if (strcmp(field, "min_open_ticks") == 0) {
            st = parse_u32(kv, value, &r->min_open_ticks, err);
        } else if (strcmp(field, "escalate_after_ticks") == 0) {
            st = parse_u32(kv, value, &r->escalate_after_ticks, err);
        } else if (strcmp(field, "action") == 0) {
            if (mc_rulefile_parse_action_type(value, &r->action) != MC_OK)
                return mc_error_set(err, MC_ERR_INVALID, "--override %s: bad action type", kv);
        } else {
            return mc_error_set(err, MC_ERR_INVALID,
                                "--override %s: unknown decider field \"%s\" (cooldown_ticks, "
                                "min_open_ticks, escalate_after_ticks, action)",
                                kv, field);
        }
        if (st == MC_OK)
            st = mc_decider_rules_validate(&s->dec_rules, err);
    } else {
        return mc_error_set(err, MC_ERR_INVALID,
                            "--override %s: component must be detector or decider", kv);
    }
    if (st == MC_OK)
        flags_add(s, "--override", kv);
    return st;
}

void mc_setup_digests(mc_run_setup *s)
{
    mc_digest d;
    mc_digest_init(&d, "microcloud/topology/v1");
    mc_digest_bytes(&d, s->scenario_file_digest, sizeof s->scenario_file_digest);
    mc_digest_u32(&d, s->node_count);
    mc_digest_u32(&d, s->service_count);
    mc_digest_final(&d, s->topology_digest);

    /* v2: the core settings joined the digest (v1 had none). */
    mc_digest_init(&d, "microcloud/config/v2");
    mc_digest_u32(&d, (uint32_t)s->approval_mode);
    {
        char set[MC_SETTING_COUNT][MC_SETUP_SETTING_MAX];
        size_t n = mc_setup_settings_format(s, set);
        mc_digest_u64(&d, n);
        for (size_t i = 0; i < n; i++)
            mc_digest_str(&d, set[i]);
    }
    mc_digest_u64(&d, s->det_rules.count);
    for (size_t i = 0; i < s->det_rules.count; i++) {
        const mc_detector_rule *r = &s->det_rules.rules[i];
        mc_digest_str(&d, r->name);
        mc_digest_str(&d, r->metric);
        mc_digest_str(&d, r->group);
        mc_digest_str(&d, r->title);
        mc_digest_u32(&d, (uint32_t)r->op);
        mc_digest_f64(&d, r->threshold);
        mc_digest_u32(&d, r->window_seconds);
        mc_digest_u32(&d, (uint32_t)r->agg);
        mc_digest_u32(&d, r->for_ticks);
        mc_digest_u32(&d, r->clear_ticks);
        mc_digest_u32(&d, (uint32_t)r->severity);
        mc_digest_u32(&d, (uint32_t)r->target);
    }
    mc_digest_u64(&d, s->dec_rules.count);
    for (size_t i = 0; i < s->dec_rules.count; i++) {
        const mc_decider_rule *r = &s->dec_rules.rules[i];
        mc_digest_str(&d, r->name);
        mc_digest_str(&d, r->metric);
        mc_digest_str(&d, r->incident_rule);
        mc_digest_u32(&d, (uint32_t)r->target);
        mc_digest_u32(&d, (uint32_t)r->min_severity);
        mc_digest_u32(&d, (uint32_t)r->max_severity);
        mc_digest_str(&d, r->requires_open);
        mc_digest_str(&d, r->unless_open);
        mc_digest_u32(&d, r->min_open_ticks);
        mc_digest_u32(&d, (uint32_t)r->action);
        mc_digest_u32(&d, r->cooldown_ticks);
        mc_digest_u32(&d, (uint32_t)r->escalate_to);
        mc_digest_u32(&d, r->escalate_after_ticks);
        mc_digest_str(&d, r->reason);
    }
    mc_digest_final(&d, s->config_digest);
}

void mc_setup_spec_format(const mc_run_setup *s, char out[MC_SETUP_SPEC_MAX])
{
    int n = snprintf(out, MC_SETUP_SPEC_MAX, "%s", s->scenario_name);
    if (s->node_count && n > 0 && n < MC_SETUP_SPEC_MAX)
        n += snprintf(out + n, MC_SETUP_SPEC_MAX - (size_t)n, ";nodes=%u", s->node_count);
    if (s->service_count && n > 0 && n < MC_SETUP_SPEC_MAX)
        snprintf(out + n, MC_SETUP_SPEC_MAX - (size_t)n, ";services=%u", s->service_count);
}

mc_status mc_setup_spec_parse(const char *spec, char name[MC_SCENARIO_ID_MAX], uint32_t *nodes,
                              uint32_t *services, mc_error *err)
{
    *nodes = 0;
    *services = 0;
    const char *semi = strchr(spec, ';');
    size_t nlen = semi ? (size_t)(semi - spec) : strlen(spec);
    if (nlen == 0 || nlen >= MC_SCENARIO_ID_MAX)
        return mc_error_set(err, MC_ERR_INVALID, "scenario spec \"%s\": bad scenario name", spec);
    memcpy(name, spec, nlen);
    name[nlen] = '\0';
    while (semi) {
        const char *item = semi + 1;
        semi = strchr(item, ';');
        char buf[64];
        size_t ilen = semi ? (size_t)(semi - item) : strlen(item);
        if (ilen >= sizeof buf)
            return mc_error_set(err, MC_ERR_INVALID, "scenario spec \"%s\": item too long", spec);
        memcpy(buf, item, ilen);
        buf[ilen] = '\0';
        char *eq = strchr(buf, '=');
        uint32_t v = 0;
        if (!eq || mc_rulefile_parse_u32(eq + 1, UINT32_MAX, &v) != MC_OK)
            return mc_error_set(err, MC_ERR_INVALID, "scenario spec \"%s\": bad item \"%s\"", spec,
                                buf);
        *eq = '\0';
        if (strcmp(buf, "nodes") == 0)
            *nodes = v;
        else if (strcmp(buf, "services") == 0)
            *services = v;
        else
            return mc_error_set(err, MC_ERR_UNSUPPORTED,
                                "scenario spec \"%s\": unknown knob \"%s\"", spec, buf);
    }
    return MC_OK;
}
