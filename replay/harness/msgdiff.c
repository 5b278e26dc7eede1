#include "harness/msgdiff.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness/subjects.h"
#include "json/json.h"

json_t *mc_msg_to_json(const char *subject, const uint8_t *payload, size_t len)
{
    ProtobufCMessage *m = mc_subject_unpack(subject, payload, len);
    if (!m)
        return NULL;
    mc_json_options opt = {0};
    opt.emit_defaults = true;
    json_t *j = NULL;
    mc_error err = {0};
    if (mc_json_from_message_ex(m, &opt, &j, &err) != MC_OK)
        j = NULL;
    protobuf_c_message_free_unpacked(m, NULL);
    return j;
}

static void add_value(json_t *entry, const char *key, json_t *v)
{
    if (!v)
        return;
    json_object_set(entry, key, v);
    if (json_is_number(v)) {
        double d = json_number_value(v);
        char hex[64], dec[64], k[32];
        snprintf(hex, sizeof hex, "%a", d);
        snprintf(dec, sizeof dec, "%.17g", d);
        snprintf(k, sizeof k, "%sHex", key);
        json_object_set_new(entry, k, json_string(hex));
        snprintf(k, sizeof k, "%sDecimal", key);
        json_object_set_new(entry, k, json_string(dec));
    }
}

static void add_diff(json_t *out, size_t max, const char *path, json_t *a, json_t *b)
{
    if (json_array_size(out) >= max)
        return;
    json_t *e = json_object();
    json_object_set_new(e, "path", json_string(path));
    add_value(e, "expected", a);
    add_value(e, "actual", b);
    json_array_append_new(out, e);
}

static void walk(json_t *out, size_t max, const char *path, json_t *a, json_t *b)
{
    if (json_array_size(out) >= max)
        return;
    if (!a || !b) {
        add_diff(out, max, path, a, b);
        return;
    }
    char sub[512];
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v)
        {
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            walk(out, max, sub, v, json_object_get(b, k));
        }
        json_object_foreach(b, k, v)
        {
            if (json_object_get(a, k))
                continue;
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            walk(out, max, sub, NULL, v);
        }
        return;
    }
    if (json_is_array(a) && json_is_array(b)) {
        size_t na = json_array_size(a), nb = json_array_size(b);
        for (size_t i = 0; i < na || i < nb; i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            walk(out, max, sub, i < na ? json_array_get(a, i) : NULL,
                 i < nb ? json_array_get(b, i) : NULL);
        }
        return;
    }
    if (json_is_real(a) && json_is_real(b)) {
        double x = json_real_value(a), y = json_real_value(b);
        if (memcmp(&x, &y, sizeof x) != 0)
            add_diff(out, max, path, a, b);
        return;
    }
    if (!json_equal(a, b))
        add_diff(out, max, path, a, b);
}

json_t *mc_msgdiff(const char *subject, const uint8_t *expected, size_t expected_len,
                   const uint8_t *actual, size_t actual_len, size_t max_diffs)
{
    json_t *out = json_array();
    json_t *a = expected ? mc_msg_to_json(subject, expected, expected_len) : NULL;
    json_t *b = actual ? mc_msg_to_json(subject, actual, actual_len) : NULL;
    if ((expected && !a) || (actual && !b)) {
        json_t *e = json_object();
        json_object_set_new(e, "path", json_string("$"));
        json_object_set_new(e, "problem",
                            json_string(expected && !a ? "the recorded payload does not decode"
                                                       : "the emitted payload does not decode"));
        json_array_append_new(out, e);
    } else {
        walk(out, max_diffs ? max_diffs : 1, "$", a, b);
    }
    json_decref(a);
    json_decref(b);
    return out;
}

static void print_value(FILE *f, const json_t *e, const char *key)
{
    json_t *v = json_object_get(e, key);
    if (!v) {
        fprintf(f, "(absent)");
        return;
    }
    char k[32];
    snprintf(k, sizeof k, "%sHex", key);
    json_t *hex = json_object_get(e, k);
    if (hex) {
        snprintf(k, sizeof k, "%sDecimal", key);
        fprintf(f, "%s (%s)", json_string_value(json_object_get(e, k)), json_string_value(hex));
        return;
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    fprintf(f, "%s", s ? s : "?");
    free(s);
}

void mc_msgdiff_print(const json_t *diffs, FILE *f, const char *prefix, const char *label_expected,
                      const char *label_actual)
{
    size_t i;
    json_t *e;
    json_array_foreach(diffs, i, e)
    {
        json_t *problem = json_object_get(e, "problem");
        fprintf(f, "%s%s: ", prefix, json_string_value(json_object_get(e, "path")));
        if (problem) {
            fprintf(f, "%s\n", json_string_value(problem));
            continue;
        }
        fprintf(f, "%s ", label_expected);
        print_value(f, e, "expected");
        fprintf(f, ", %s ", label_actual);
        print_value(f, e, "actual");
        fprintf(f, "\n");
    }
}
