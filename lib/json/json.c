#include "json/json.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* State shared by one encode or decode call: the options, where errors go,
 * and the JSON path of the value being worked on, so that every error can
 * say where it happened. */
typedef struct ctx {
    const mc_json_options *opt;
    unsigned max_depth;
    mc_error *err;
    size_t path_len;
    char path[256];
} ctx;

static const mc_json_options default_options = {0};

static void ctx_init(ctx *c, const mc_json_options *opt, mc_error *err)
{
    c->opt = opt != NULL ? opt : &default_options;
    c->max_depth = c->opt->max_depth != 0 ? c->opt->max_depth : MC_JSON_DEFAULT_MAX_DEPTH;
    c->err = err;
    c->path[0] = '$';
    c->path[1] = '\0';
    c->path_len = 1;
}

/* ---- paths and errors ---- */

static void path_putc(ctx *c, char ch)
{
    /* A path too long for the buffer is cut; the leading part is the more
     * useful one when reading an error. */
    if (c->path_len + 1 < sizeof c->path) {
        c->path[c->path_len++] = ch;
        c->path[c->path_len] = '\0';
    }
}

static bool is_identifier(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
        if (!alpha && !(i > 0 && ch >= '0' && ch <= '9'))
            return false;
    }
    return true;
}

/* Appends an object key to the path: ".name" for identifiers, ["..."]
 * otherwise. Returns the previous length for path_pop. */
static size_t path_push_key(ctx *c, const char *key, size_t n)
{
    size_t saved = c->path_len;
    size_t shown = n > 64 ? 64 : n;
    if (is_identifier(key, n)) {
        path_putc(c, '.');
        for (size_t i = 0; i < shown; i++)
            path_putc(c, key[i]);
        if (shown < n)
            for (int i = 0; i < 3; i++)
                path_putc(c, '.');
    } else {
        path_putc(c, '[');
        path_putc(c, '"');
        for (size_t i = 0; i < shown; i++) {
            unsigned char ch = (unsigned char)key[i];
            /* Control characters and quotes would make the message
             * ambiguous or break a log line. */
            path_putc(c, ch < 0x20 || ch == '"' || ch == '\\' ? '?' : (char)ch);
        }
        if (shown < n)
            for (int i = 0; i < 3; i++)
                path_putc(c, '.');
        path_putc(c, '"');
        path_putc(c, ']');
    }
    return saved;
}

static size_t path_push_index(ctx *c, size_t i)
{
    size_t saved = c->path_len;
    char buf[32];
    snprintf(buf, sizeof buf, "[%zu]", i);
    for (const char *p = buf; *p != '\0'; p++)
        path_putc(c, *p);
    return saved;
}

static void path_pop(ctx *c, size_t saved)
{
    c->path_len = saved;
    c->path[saved] = '\0';
}

__attribute__((format(printf, 2, 3))) static mc_status fail(ctx *c, const char *fmt, ...)
{
    char buf[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* A full path buffer means the path was cut; say so. */
    bool cut = c->path_len + 1 >= sizeof c->path;
    return mc_error_set(c->err, MC_ERR_INVALID, "%s%s: %s", c->path, cut ? "..." : "", buf);
}

static mc_status nomem(ctx *c)
{
    return mc_error_set(c->err, MC_ERR_NOMEM, "%s: out of memory", c->path);
}

/* A short rendering of a JSON value for error messages: strings quoted and
 * cut at a character boundary, containers named rather than printed. */
static const char *describe(const json_t *j, char *buf, size_t cap)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
    case JSON_INTEGER:
        snprintf(buf, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
        return buf;
    case JSON_REAL: {
        /* The shortest form that reads back as the same double, so 1e39
         * shows as written rather than as 9.9999999999999994e+38. */
        double d = json_real_value(j);
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(buf, cap, "%.*g", prec, d);
            if (strtod(buf, NULL) == d)
                break;
        }
        return buf;
    }
    case JSON_STRING: break;
    }
    const char *s = json_string_value(j);
    size_t n = json_string_length(j);
    size_t limit = cap > 8 ? cap - 8 : 0;
    size_t take = n < limit ? n : limit;
    /* Back off to the start of a UTF-8 sequence so the message stays valid
     * UTF-8. */
    if (take < n)
        while (take > 0 && ((unsigned char)s[take] & 0xC0) == 0x80)
            take--;
    size_t o = 0;
    buf[o++] = '"';
    for (size_t i = 0; i < take; i++) {
        unsigned char ch = (unsigned char)s[i];
        buf[o++] = ch < 0x20 ? '?' : (char)ch;
    }
    if (take < n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static mc_status fail_type(ctx *c, const char *expected, const json_t *got)
{
    char buf[64];
    return fail(c, "expected %s, got %s", expected, describe(got, buf, sizeof buf));
}

static mc_status fail_range(ctx *c, const char *expected, const json_t *got)
{
    char buf[64];
    return fail(c, "expected %s, got %s (out of range)", expected, describe(got, buf, sizeof buf));
}

/* ---- descriptor helpers ---- */

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return sizeof(uint32_t);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return sizeof(uint64_t);
    case PROTOBUF_C_TYPE_FLOAT: return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    /* protobuf-c forces every generated enum to the size of an int. */
    case PROTOBUF_C_TYPE_ENUM: return sizeof(int);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    }
    return 0;
}

static const char *expected_name(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return "a 32-bit integer";
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return "an unsigned 32-bit integer";
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: return "a 64-bit integer";
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return "an unsigned 64-bit integer";
    case PROTOBUF_C_TYPE_FLOAT: return "a 32-bit float";
    case PROTOBUF_C_TYPE_DOUBLE: return "a number";
    case PROTOBUF_C_TYPE_BOOL: return "a boolean";
    case PROTOBUF_C_TYPE_ENUM: return "an enum name or number";
    case PROTOBUF_C_TYPE_STRING: return "a string";
    case PROTOBUF_C_TYPE_BYTES: return "a base64 string";
    case PROTOBUF_C_TYPE_MESSAGE: return "an object";
    }
    return "a value";
}

static char ascii_upper(char ch) { return ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch; }

/* The JSON name protoc derives from a field name: underscores dropped, the
 * character after each one upper-cased ("producer_seq" -> "producerSeq"). */
static size_t json_name_into(const char *name, char *out)
{
    size_t o = 0;
    bool up = false;
    for (const char *p = name; *p != '\0'; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        out[o++] = up ? ascii_upper(*p) : *p;
        up = false;
    }
    out[o] = '\0';
    return o;
}

static bool json_name_matches(const char *name, const char *key, size_t klen)
{
    size_t k = 0;
    bool up = false;
    for (const char *p = name; *p != '\0'; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        char ch = up ? ascii_upper(*p) : *p;
        up = false;
        if (k >= klen || key[k] != ch)
            return false;
        k++;
    }
    return k == klen;
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *key, size_t klen)
{
    /* Keys with an embedded NUL cannot name a field, and the descriptor
     * lookups below compare C strings. */
    if (strlen(key) != klen)
        return NULL;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
    if (f != NULL)
        return f;
    for (unsigned i = 0; i < d->n_fields; i++)
        if (json_name_matches(d->fields[i].name, key, klen))
            return &d->fields[i];
    return NULL;
}

static bool valid_map_key_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_MESSAGE:
    case PROTOBUF_C_TYPE_ENUM: return false;
    default: return true;
    }
}

/* protobuf-c does not mark map entry types, so a map is recognised by the
 * shape protoc gives it: a repeated field of the nested message
 * "<Parent>.<FieldInUpperCamelCase>Entry" with exactly the fields key = 1
 * and value = 2. */
static bool is_map_field(const ProtobufCMessageDescriptor *parent,
                         const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || e->fields[0].id != 1 || e->fields[1].id != 2 ||
        strcmp(e->fields[0].name, "key") != 0 || strcmp(e->fields[1].name, "value") != 0 ||
        e->fields[0].label == PROTOBUF_C_LABEL_REPEATED ||
        e->fields[1].label == PROTOBUF_C_LABEL_REPEATED || !valid_map_key_type(e->fields[0].type))
        return false;
    size_t plen = strlen(parent->name);
    if (strncmp(e->name, parent->name, plen) != 0 || e->name[plen] != '.')
        return false;
    const char *s = e->name + plen + 1;
    bool up = true;
    for (const char *p = f->name; *p != '\0'; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        if (*s != (up ? ascii_upper(*p) : *p))
            return false;
        s++;
        up = false;
    }
    return strcmp(s, "Entry") == 0;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF;
 * the same rules jansson applies to the strings it parses. */
static bool utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned char b = s[i];
        if (b < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if ((b & 0xE0) == 0xC0) {
            len = 2, cp = b & 0x1Fu, min = 0x80;
        } else if ((b & 0xF0) == 0xE0) {
            len = 3, cp = b & 0x0Fu, min = 0x800;
        } else if ((b & 0xF8) == 0xF0) {
            len = 4, cp = b & 0x07u, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* ---- encoding ---- */

/* Mirrors protobuf-c's notion of an unset proto3 scalar, so a field is
 * printed exactly when protobuf_c_message_pack would write it. */
static bool is_zeroish(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p == 0;
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT: return *(const float *)p == 0;
    case PROTOBUF_C_TYPE_DOUBLE: return *(const double *)p == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(const ProtobufCMessage *const *)p == NULL;
    }
    return true;
}

/* Whether a singular field is printed; again the same rule as packing. */
static bool field_present(const ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m)
{
    const char *base = (const char *)m;
    const void *p = base + f->offset;
    bool pointer = f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING;
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
        if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
            return false;
        if (pointer) {
            const void *ptr = *(const void *const *)p;
            return ptr != NULL && ptr != f->default_value;
        }
        return true;
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED: return true;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (pointer) {
            const void *ptr = *(const void *const *)p;
            return ptr != NULL && ptr != f->default_value;
        }
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
    case PROTOBUF_C_LABEL_NONE:
        if (f->type == PROTOBUF_C_TYPE_MESSAGE)
            return *(const ProtobufCMessage *const *)p != NULL;
        return c->opt->emit_defaults || !is_zeroish(f, p);
    case PROTOBUF_C_LABEL_REPEATED: break;
    }
    return false;
}

static json_t *double_to_json(double d)
{
    /* JSON has no NaN or infinities; the proto3 mapping spells them as
     * strings. */
    if (isnan(d))
        return json_string("NaN");
    if (isinf(d))
        return json_string(d > 0 ? "Infinity" : "-Infinity");
    return json_real(d);
}

static mc_status enc_message(ctx *c, const ProtobufCMessage *m, unsigned depth, json_t **out);

static mc_status enc_value(ctx *c, const ProtobufCFieldDescriptor *f, const void *p,
                           unsigned depth, json_t **out)
{
    json_t *v = NULL;
    char buf[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: v = json_integer(*(const int32_t *)p); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: v = json_integer(*(const uint32_t *)p); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        /* 64-bit integers are strings: JavaScript numbers lose precision
         * above 2^53. */
        snprintf(buf, sizeof buf, "%" PRId64, *(const int64_t *)p);
        v = json_string(buf);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, sizeof buf, "%" PRIu64, *(const uint64_t *)p);
        v = json_string(buf);
        break;
    case PROTOBUF_C_TYPE_FLOAT: v = double_to_json(*(const float *)p); break;
    case PROTOBUF_C_TYPE_DOUBLE: v = double_to_json(*(const double *)p); break;
    case PROTOBUF_C_TYPE_BOOL: v = json_boolean(*(const protobuf_c_boolean *)p != 0); break;
    case PROTOBUF_C_TYPE_ENUM: {
        int x = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, x);
        /* A proto3 enum is open: a value this build does not know (read
         * from a newer peer's binary message) is printed as its number. */
        v = ev != NULL ? json_string(ev->name) : json_integer(x);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        if (s == NULL)
            s = "";
        size_t n = strlen(s);
        if (!utf8_valid(s, n))
            return fail(c, "string is not valid UTF-8");
        v = json_stringn_nocheck(s, n);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        size_t cap = sodium_base64_ENCODED_LEN(bd->len, sodium_base64_VARIANT_ORIGINAL);
        char *b = malloc(cap);
        if (b == NULL)
            return nomem(c);
        sodium_bin2base64(b, cap, bd->data, bd->len, sodium_base64_VARIANT_ORIGINAL);
        v = json_string_nocheck(b);
        free(b);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sm = *(const ProtobufCMessage *const *)p;
        /* Only a map value or a repeated element can get here unset; its
         * value is the empty message. */
        if (sm == NULL) {
            if (depth + 1 > c->max_depth)
                return fail(c, "message nesting is deeper than %u", c->max_depth);
            v = json_object();
            break;
        }
        return enc_message(c, sm, depth + 1, out);
    }
    }
    if (v == NULL)
        return nomem(c);
    *out = v;
    return MC_OK;
}

static mc_status enc_array(ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                           unsigned depth, json_t **out)
{
    const char *base = (const char *)m;
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(const char *const *)(base + f->offset);
    size_t size = elem_size(f->type);
    json_t *a = json_array();
    if (a == NULL)
        return nomem(c);
    for (size_t i = 0; i < n; i++) {
        size_t saved = path_push_index(c, i);
        json_t *v = NULL;
        mc_status st = enc_value(c, f, arr + i * size, depth, &v);
        if (st == MC_OK && json_array_append_new(a, v) != 0)
            st = nomem(c);
        path_pop(c, saved);
        if (st != MC_OK) {
            json_decref(a);
            return st;
        }
    }
    *out = a;
    return MC_OK;
}

/* The JSON key of a map entry: string keys as they are, integers in
 * decimal, bools as "true"/"false". */
static mc_status map_key_text(ctx *c, const ProtobufCFieldDescriptor *kf, const void *p,
                              char *buf, size_t cap, const char **key)
{
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(const char *const *)p;
        if (s == NULL)
            s = "";
        if (!utf8_valid(s, strlen(s)))
            return fail(c, "map key is not valid UTF-8");
        *key = s;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_BOOL:
        *key = *(const protobuf_c_boolean *)p != 0 ? "true" : "false";
        return MC_OK;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: snprintf(buf, cap, "%" PRId32, *(const int32_t *)p); break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: snprintf(buf, cap, "%" PRIu32, *(const uint32_t *)p); break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: snprintf(buf, cap, "%" PRId64, *(const int64_t *)p); break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: snprintf(buf, cap, "%" PRIu64, *(const uint64_t *)p); break;
    default: return mc_error_set(c->err, MC_ERR_INTERNAL, "%s: bad map key type", c->path);
    }
    *key = buf;
    return MC_OK;
}

static mc_status enc_map(ctx *c, const ProtobufCFieldDescriptor *f, const ProtobufCMessage *m,
                         unsigned depth, json_t **out)
{
    const char *base = (const char *)m;
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const ProtobufCMessage *const *entries = *(const ProtobufCMessage *const *const *)(base + f->offset);
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    const ProtobufCFieldDescriptor *vf = &ed->fields[1];
    json_t *o = json_object();
    if (o == NULL)
        return nomem(c);
    for (size_t i = 0; i < n; i++) {
        const char *e = (const char *)entries[i];
        if (e == NULL)
            continue;
        char buf[32];
        const char *key = NULL;
        mc_status st = map_key_text(c, kf, e + kf->offset, buf, sizeof buf, &key);
        if (st != MC_OK) {
            json_decref(o);
            return st;
        }
        size_t klen = strlen(key);
        size_t saved = path_push_key(c, key, klen);
        json_t *v = NULL;
        /* The value is printed even when it is the default: an entry that
         * is present must show up with its value. */
        st = enc_value(c, vf, e + vf->offset, depth, &v);
        /* A repeated key in a binary map means the last entry wins, which
         * is what replacing the value under the same key does. */
        if (st == MC_OK && json_object_setn_new_nocheck(o, key, klen, v) != 0)
            st = nomem(c);
        path_pop(c, saved);
        if (st != MC_OK) {
            json_decref(o);
            return st;
        }
    }
    *out = o;
    return MC_OK;
}

static mc_status enc_message(ctx *c, const ProtobufCMessage *m, unsigned depth, json_t **out)
{
    if (depth > c->max_depth)
        return fail(c, "message nesting is deeper than %u", c->max_depth);
    const ProtobufCMessageDescriptor *d = m->descriptor;
    json_t *obj = json_object();
    if (obj == NULL)
        return nomem(c);
    /* protobuf-c keeps fields sorted by number, which is the canonical
     * output order. */
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
        if (repeated) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            if (n == 0 && !c->opt->emit_defaults)
                continue;
        } else if (!field_present(c, f, m)) {
            continue;
        }
        char small[128];
        char *name = small;
        size_t nlen = strlen(f->name);
        if (nlen >= sizeof small && (name = malloc(nlen + 1)) == NULL) {
            json_decref(obj);
            return nomem(c);
        }
        if (c->opt->proto_names)
            memcpy(name, f->name, nlen + 1);
        else
            nlen = json_name_into(f->name, name);
        size_t saved = path_push_key(c, name, nlen);
        json_t *v = NULL;
        mc_status st;
        if (repeated)
            st = is_map_field(d, f) ? enc_map(c, f, m, depth, &v) : enc_array(c, f, m, depth, &v);
        else
            st = enc_value(c, f, (const char *)m + f->offset, depth, &v);
        if (st == MC_OK && json_object_setn_new_nocheck(obj, name, nlen, v) != 0)
            st = nomem(c);
        path_pop(c, saved);
        if (name != small)
            free(name);
        if (st != MC_OK) {
            json_decref(obj);
            return st;
        }
    }
    *out = obj;
    return MC_OK;
}

mc_status mc_json_from_message_ex(const ProtobufCMessage *msg, const mc_json_options *opt,
                                  json_t **out, mc_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (msg == NULL || out == NULL || msg->descriptor == NULL ||
        msg->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return mc_error_set(err, MC_ERR_INVALID, "json encode: no message or no output");
    ctx c;
    ctx_init(&c, opt, err);
    return enc_message(&c, msg, 0, out);
}

mc_status mc_json_from_message(const ProtobufCMessage *msg, json_t **out, mc_error *err)
{
    return mc_json_from_message_ex(msg, NULL, out, err);
}

typedef struct out_buf {
    char *p;
    size_t len, cap;
} out_buf;

static int out_buf_append(const char *data, size_t size, void *arg)
{
    out_buf *b = arg;
    if (size + 1 > b->cap - b->len) {
        size_t cap = b->cap != 0 ? b->cap : 256;
        while (size + 1 > cap - b->len) {
            if (cap > SIZE_MAX / 2)
                return -1;
            cap *= 2;
        }
        char *np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, size);
    b->len += size;
    b->p[b->len] = '\0';
    return 0;
}

mc_status mc_json_encode_ex(const ProtobufCMessage *msg, const mc_json_options *opt, char **out,
                            size_t *len, mc_error *err)
{
    if (out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "json encode: no output");
    *out = NULL;
    if (len != NULL)
        *len = 0;
    json_t *j = NULL;
    mc_status st = mc_json_from_message_ex(msg, opt, &j, err);
    if (st != MC_OK)
        return st;
    int indent = opt != NULL ? opt->indent : 0;
    if (indent > 31)
        indent = 31;
    /* 17 significant digits make every double read back bit-identically. */
    size_t flags = JSON_REAL_PRECISION(17) | (indent > 0 ? JSON_INDENT(indent) : JSON_COMPACT);
    out_buf b = {0};
    /* The text is gathered in a buffer of our own, so the caller frees it
     * with free() whatever allocator jansson was given. */
    int rc = json_dump_callback(j, out_buf_append, &b, flags);
    json_decref(j);
    if (rc != 0 || b.p == NULL) {
        free(b.p);
        return mc_error_set(err, MC_ERR_NOMEM, "json encode: out of memory");
    }
    *out = b.p;
    if (len != NULL)
        *len = b.len;
    return MC_OK;
}

mc_status mc_json_encode(const ProtobufCMessage *msg, char **out, size_t *len, mc_error *err)
{
    return mc_json_encode_ex(msg, NULL, out, len, err);
}

/* ---- decoding ---- */

/* Parses a decimal integer written the way JSON writes numbers:
 * -?(0|[1-9][0-9]*). Returns false when the text is not of that form;
 * sets *overflow when the magnitude does not fit 64 bits. */
static bool parse_decimal(const char *s, size_t n, bool *neg, uint64_t *mag, bool *overflow)
{
    size_t i = 0;
    *neg = false;
    *overflow = false;
    *mag = 0;
    if (i < n && s[i] == '-') {
        *neg = true;
        i++;
    }
    if (i == n)
        return false;
    if (s[i] == '0' && i + 1 < n)
        return false;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned digit = (unsigned)(s[i] - '0');
        if (*mag > (UINT64_MAX - digit) / 10)
            *overflow = true;
        else
            *mag = *mag * 10 + digit;
    }
    return true;
}

typedef enum num_result { NUM_OK, NUM_TYPE, NUM_RANGE } num_result;

static num_result signed_from_text(const char *s, size_t n, int64_t min, int64_t max, int64_t *out)
{
    bool neg, overflow;
    uint64_t mag;
    if (!parse_decimal(s, n, &neg, &mag, &overflow))
        return NUM_TYPE;
    if (overflow || mag > (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX))
        return NUM_RANGE;
    int64_t x = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
    if (x < min || x > max)
        return NUM_RANGE;
    *out = x;
    return NUM_OK;
}

static num_result unsigned_from_text(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    bool neg, overflow;
    uint64_t mag;
    if (!parse_decimal(s, n, &neg, &mag, &overflow))
        return NUM_TYPE;
    if (overflow || (neg && mag != 0) || mag > max)
        return NUM_RANGE;
    *out = mag;
    return NUM_OK;
}

/* A JSON real is accepted for an integer field when it is integral, e.g.
 * 1e3 or 5.0. The bounds are powers of two, exact as doubles. */
static num_result signed_from_json(const json_t *v, int64_t min, int64_t max, int64_t *out)
{
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != trunc(d))
            return NUM_TYPE;
        if (!(d >= -0x1p63 && d < 0x1p63))
            return NUM_RANGE;
        x = (int64_t)d;
    } else if (json_is_string(v)) {
        return signed_from_text(json_string_value(v), json_string_length(v), min, max, out);
    } else {
        return NUM_TYPE;
    }
    if (x < min || x > max)
        return NUM_RANGE;
    *out = x;
    return NUM_OK;
}

static num_result unsigned_from_json(const json_t *v, uint64_t max, uint64_t *out)
{
    uint64_t x;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0)
            return NUM_RANGE;
        x = (uint64_t)i;
    } else if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d != trunc(d))
            return NUM_TYPE;
        if (!(d >= 0 && d < 0x1p64))
            return NUM_RANGE;
        x = (uint64_t)d;
    } else if (json_is_string(v)) {
        return unsigned_from_text(json_string_value(v), json_string_length(v), max, out);
    } else {
        return NUM_TYPE;
    }
    if (x > max)
        return NUM_RANGE;
    *out = x;
    return NUM_OK;
}

static mc_status num_fail(ctx *c, num_result r, const ProtobufCFieldDescriptor *f, const json_t *v)
{
    return r == NUM_RANGE ? fail_range(c, expected_name(f), v) : fail_type(c, expected_name(f), v);
}

/* A double from a number or from a string: "NaN", "Infinity", "-Infinity",
 * or a number in JSON syntax, which jansson reads for us. */
static num_result double_from_json(const json_t *v, double *out)
{
    if (json_is_integer(v)) {
        *out = (double)json_integer_value(v);
        return NUM_OK;
    }
    if (json_is_real(v)) {
        *out = json_real_value(v);
        return NUM_OK;
    }
    if (!json_is_string(v))
        return NUM_TYPE;
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (strcmp(s, "NaN") == 0 && n == 3) {
        *out = NAN;
        return NUM_OK;
    }
    if (strcmp(s, "Infinity") == 0 && n == 8) {
        *out = INFINITY;
        return NUM_OK;
    }
    if (strcmp(s, "-Infinity") == 0 && n == 9) {
        *out = -INFINITY;
        return NUM_OK;
    }
    /* Only a bare number: jansson would also skip surrounding white space
     * and accept other JSON values. */
    if (n == 0 || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')) || s[n - 1] < '0' ||
        s[n - 1] > '9')
        return NUM_TYPE;
    json_error_t je;
    json_t *num = json_loadb(s, n, JSON_DECODE_ANY, &je);
    if (num == NULL)
        return json_error_code(&je) == json_error_numeric_overflow ? NUM_RANGE : NUM_TYPE;
    num_result r = NUM_OK;
    if (json_is_integer(num))
        *out = (double)json_integer_value(num);
    else if (json_is_real(num))
        *out = json_real_value(num);
    else
        r = NUM_TYPE;
    json_decref(num);
    return r;
}

static mc_status dec_bytes(ctx *c, const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v))
        return fail_type(c, "a base64 string", v);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    bool url = false, std = false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '-' || s[i] == '_')
            url = true;
        else if (s[i] == '+' || s[i] == '/')
            std = true;
    }
    size_t pad = 0;
    while (pad < n && s[n - 1 - pad] == '=')
        pad++;
    /* Padding, when present, must complete the last group of four. */
    bool ok = !(url && std) && pad <= 2 && (pad == 0 || n % 4 == 0);
    size_t body = n - pad;
    size_t maxlen = body / 4 * 3 + 2;
    uint8_t *data = ok ? malloc(maxlen) : NULL;
    if (ok && data == NULL)
        return nomem(c);
    size_t got = 0;
    /* libsodium rejects characters outside the alphabet, impossible
     * lengths and non-zero trailing bits, so each byte string has exactly
     * one accepted encoding per alphabet. */
    if (ok && sodium_base642bin(data, maxlen, s, body, NULL, &got, NULL,
                                url ? sodium_base64_VARIANT_URLSAFE_NO_PADDING
                                    : sodium_base64_VARIANT_ORIGINAL_NO_PADDING) != 0)
        ok = false;
    if (!ok) {
        free(data);
        char buf[64];
        return fail(c, "expected a base64 string, got %s (invalid base64)",
                    describe(v, buf, sizeof buf));
    }
    if (got == 0) {
        free(data);
        data = NULL;
    }
    out->data = data;
    out->len = got;
    return MC_OK;
}

static mc_status dec_string(ctx *c, const json_t *v, char **out)
{
    if (!json_is_string(v))
        return fail_type(c, "a string", v);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    /* protobuf-c strings end at the first NUL; a value built by a caller
     * with json_stringn could hide one. */
    if (memchr(s, '\0', n) != NULL)
        return fail(c, "string contains a NUL character");
    if (!utf8_valid(s, n))
        return fail(c, "string is not valid UTF-8");
    char *copy = malloc(n + 1);
    if (copy == NULL)
        return nomem(c);
    memcpy(copy, s, n + 1);
    *out = copy;
    return MC_OK;
}

static mc_status dec_enum(ctx *c, const ProtobufCFieldDescriptor *f, const json_t *v, int *out)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    const ProtobufCEnumValue *ev = NULL;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strlen(s) == json_string_length(v))
            ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
        if (ev == NULL) {
            char buf[64];
            return fail(c, "unknown value %s for enum %s", describe(v, buf, sizeof buf), ed->name);
        }
    } else if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x >= INT32_MIN && x <= INT32_MAX)
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)x);
        if (ev == NULL)
            return fail(c, "unknown value %" JSON_INTEGER_FORMAT " for enum %s", x, ed->name);
    } else {
        char buf[64];
        return fail(c, "expected a %s name or number, got %s", ed->name,
                    describe(v, buf, sizeof buf));
    }
    *out = ev->value;
    return MC_OK;
}

static mc_status dec_message(ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
                             unsigned depth, ProtobufCMessage **out);

/* Decodes one value of field f into the memory at p. Nothing is written
 * at p unless the whole value decoded, so a failure leaves the message
 * consistent for protobuf_c_message_free_unpacked. */
static mc_status dec_value(ctx *c, const ProtobufCFieldDescriptor *f, const json_t *v, void *p,
                           unsigned depth)
{
    num_result r;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: {
        int64_t x = 0;
        if ((r = signed_from_json(v, INT32_MIN, INT32_MAX, &x)) != NUM_OK)
            return num_fail(c, r, f, v);
        *(int32_t *)p = (int32_t)x;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: {
        int64_t x = 0;
        if ((r = signed_from_json(v, INT64_MIN, INT64_MAX, &x)) != NUM_OK)
            return num_fail(c, r, f, v);
        *(int64_t *)p = x;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: {
        uint64_t x = 0;
        if ((r = unsigned_from_json(v, UINT32_MAX, &x)) != NUM_OK)
            return num_fail(c, r, f, v);
        *(uint32_t *)p = (uint32_t)x;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t x = 0;
        if ((r = unsigned_from_json(v, UINT64_MAX, &x)) != NUM_OK)
            return num_fail(c, r, f, v);
        *(uint64_t *)p = x;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_FLOAT: {
        double d = 0;
        if ((r = double_from_json(v, &d)) != NUM_OK)
            return num_fail(c, r, f, v);
        /* A finite value beyond the float range would silently become
         * infinity. */
        if (isfinite(d) && fabs(d) > FLT_MAX)
            return fail_range(c, expected_name(f), v);
        *(float *)p = (float)d;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        double d = 0;
        if ((r = double_from_json(v, &d)) != NUM_OK)
            return num_fail(c, r, f, v);
        *(double *)p = d;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v))
            return fail_type(c, "a boolean", v);
        *(protobuf_c_boolean *)p = json_is_true(v) ? 1 : 0;
        return MC_OK;
    case PROTOBUF_C_TYPE_ENUM: return dec_enum(c, f, v, (int *)p);
    case PROTOBUF_C_TYPE_STRING: return dec_string(c, v, (char **)p);
    case PROTOBUF_C_TYPE_BYTES: return dec_bytes(c, v, (ProtobufCBinaryData *)p);
    case PROTOBUF_C_TYPE_MESSAGE: return dec_message(c, f->descriptor, v, depth + 1, (ProtobufCMessage **)p);
    }
    return mc_error_set(c->err, MC_ERR_INTERNAL, "%s: unknown field type %d", c->path, (int)f->type);
}

static mc_status dec_array(ctx *c, const ProtobufCFieldDescriptor *f, const json_t *v,
                           ProtobufCMessage *m, unsigned depth)
{
    if (!json_is_array(v))
        return fail_type(c, "an array", v);
    size_t n = json_array_size(v);
    if (n == 0)
        return MC_OK;
    size_t size = elem_size(f->type);
    char *arr = calloc(n, size);
    if (arr == NULL)
        return nomem(c);
    /* The array is hooked into the message at once with a count of the
     * elements decoded so far, so freeing the message on a later error
     * frees exactly what was made. */
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(char **)((char *)m + f->offset) = arr;
    *count = 0;
    for (size_t i = 0; i < n; i++) {
        size_t saved = path_push_index(c, i);
        const json_t *e = json_array_get(v, i);
        mc_status st = json_is_null(e) ? fail(c, "null is not allowed in a repeated field")
                                       : dec_value(c, f, e, arr + i * size, depth);
        path_pop(c, saved);
        if (st != MC_OK)
            return st;
        (*count)++;
    }
    return MC_OK;
}

/* Map keys are strings in JSON. Integer and bool keys must be written
 * canonically, so that two distinct JSON keys never name the same map key. */
static mc_status dec_map_key(ctx *c, const ProtobufCFieldDescriptor *kf, const char *key,
                             size_t klen, void *p)
{
    if (strlen(key) != klen)
        return fail(c, "map key contains a NUL character");
    int64_t s = 0;
    uint64_t u = 0;
    num_result r = NUM_OK;
    const char *what = NULL;
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING: {
        if (!utf8_valid(key, klen))
            return fail(c, "map key is not valid UTF-8");
        char *copy = malloc(klen + 1);
        if (copy == NULL)
            return nomem(c);
        memcpy(copy, key, klen + 1);
        *(char **)p = copy;
        return MC_OK;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (strcmp(key, "true") == 0)
            *(protobuf_c_boolean *)p = 1;
        else if (strcmp(key, "false") == 0)
            *(protobuf_c_boolean *)p = 0;
        else
            return fail(c, "map key must be \"true\" or \"false\", got \"%.40s\"", key);
        return MC_OK;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        what = "a 32-bit integer";
        r = signed_from_text(key, klen, INT32_MIN, INT32_MAX, &s);
        if (r == NUM_OK)
            *(int32_t *)p = (int32_t)s;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        what = "a 64-bit integer";
        r = signed_from_text(key, klen, INT64_MIN, INT64_MAX, &s);
        if (r == NUM_OK)
            *(int64_t *)p = s;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        what = "an unsigned 32-bit integer";
        r = unsigned_from_text(key, klen, UINT32_MAX, &u);
        if (r == NUM_OK)
            *(uint32_t *)p = (uint32_t)u;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        what = "an unsigned 64-bit integer";
        r = unsigned_from_text(key, klen, UINT64_MAX, &u);
        if (r == NUM_OK)
            *(uint64_t *)p = u;
        break;
    default: return mc_error_set(c->err, MC_ERR_INTERNAL, "%s: bad map key type", c->path);
    }
    if (r == NUM_OK && strcmp(key, "-0") == 0)
        r = NUM_TYPE;
    if (r != NUM_OK)
        return fail(c, "map key must be %s in canonical decimal form, got \"%.40s\"%s", what, key,
                    r == NUM_RANGE ? " (out of range)" : "");
    return MC_OK;
}

static mc_status dec_map(ctx *c, const ProtobufCFieldDescriptor *f, const json_t *v,
                         ProtobufCMessage *m, unsigned depth)
{
    if (!json_is_object(v))
        return fail_type(c, "an object", v);
    size_t n = json_object_size(v);
    if (n == 0)
        return MC_OK;
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    const ProtobufCFieldDescriptor *vf = &ed->fields[1];
    ProtobufCMessage **arr = calloc(n, sizeof *arr);
    if (arr == NULL)
        return nomem(c);
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
    *count = 0;
    /* jansson keeps object keys in input order, so the entries keep the
     * order they were written in. */
    json_t *obj = (json_t *)v; /* jansson's iterator API is not const-correct. */
    for (void *it = json_object_iter(obj); it != NULL; it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *val = json_object_iter_value(it);
        size_t saved = path_push_key(c, key, klen);
        mc_status st = MC_OK;
        ProtobufCMessage *e = malloc(ed->sizeof_message);
        if (e == NULL) {
            st = nomem(c);
        } else {
            protobuf_c_message_init(ed, e);
            st = dec_map_key(c, kf, key, klen, (char *)e + kf->offset);
            if (st == MC_OK && json_is_null(val))
                st = fail(c, "null is not allowed as a map value");
            if (st == MC_OK)
                st = dec_value(c, vf, val, (char *)e + vf->offset, depth);
        }
        path_pop(c, saved);
        if (st != MC_OK) {
            if (e != NULL)
                protobuf_c_message_free_unpacked(e, NULL);
            return st;
        }
        arr[(*count)++] = e;
    }
    return MC_OK;
}

static mc_status dec_field(ctx *c, const ProtobufCMessageDescriptor *d,
                           const ProtobufCFieldDescriptor *f, const json_t *v, ProtobufCMessage *m,
                           unsigned depth)
{
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED)
        return is_map_field(d, f) ? dec_map(c, f, v, m, depth) : dec_array(c, f, v, m, depth);
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
        uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
        if (*which != 0) {
            const ProtobufCFieldDescriptor *other = protobuf_c_message_descriptor_get_field(d, *which);
            return fail(c, "field %s is in the same oneof as %s, which is set already", f->name,
                        other != NULL ? other->name : "another field");
        }
        mc_status st = dec_value(c, f, v, base + f->offset, depth);
        if (st == MC_OK)
            *which = f->id;
        return st;
    }
    mc_status st = dec_value(c, f, v, base + f->offset, depth);
    /* Proto2-style optional scalars carry a has_ flag; strings and messages
     * are present when their pointer is set. */
    if (st == MC_OK && f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
        f->type != PROTOBUF_C_TYPE_MESSAGE)
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    return st;
}

static mc_status dec_message(ctx *c, const ProtobufCMessageDescriptor *d, const json_t *j,
                             unsigned depth, ProtobufCMessage **out)
{
    if (!json_is_object(j))
        return fail_type(c, "an object", j);
    if (depth > c->max_depth)
        return fail(c, "message nesting is deeper than %u", c->max_depth);
    ProtobufCMessage *m = malloc(d->sizeof_message);
    bool *seen = calloc(d->n_fields != 0 ? d->n_fields : 1, sizeof *seen);
    if (m == NULL || seen == NULL) {
        free(m);
        free(seen);
        return nomem(c);
    }
    protobuf_c_message_init(d, m);
    mc_status st = MC_OK;
    json_t *obj = (json_t *)j; /* jansson's iterator API is not const-correct. */
    for (void *it = json_object_iter(obj); it != NULL && st == MC_OK;
         it = json_object_iter_next(obj, it)) {
        const char *key = json_object_iter_key(it);
        size_t klen = json_object_iter_key_len(it);
        const json_t *v = json_object_iter_value(it);
        size_t saved = path_push_key(c, key, klen);
        const ProtobufCFieldDescriptor *f = find_field(d, key, klen);
        if (f == NULL) {
            if (!c->opt->ignore_unknown)
                st = fail(c, "unknown field \"%.64s\" in %s", key, d->name);
        } else if (seen[f - d->fields]) {
            /* Both spellings of one name, e.g. "producerSeq" and
             * "producer_seq": which should win is anyone's guess. */
            st = fail(c, "field %s is given twice", f->name);
        } else {
            seen[f - d->fields] = true;
            if (!json_is_null(v))
                st = dec_field(c, d, f, v, m, depth);
        }
        path_pop(c, saved);
    }
    free(seen);
    if (st != MC_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return st;
    }
    *out = m;
    return MC_OK;
}

mc_status mc_json_to_message_ex(const ProtobufCMessageDescriptor *desc, const json_t *j,
                                const mc_json_options *opt, ProtobufCMessage **out,
                                mc_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (desc == NULL || j == NULL || out == NULL ||
        desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC)
        return mc_error_set(err, MC_ERR_INVALID, "json decode: no descriptor, input or output");
    ctx c;
    ctx_init(&c, opt, err);
    return dec_message(&c, desc, j, 0, out);
}

mc_status mc_json_to_message(const ProtobufCMessageDescriptor *desc, const json_t *j,
                             ProtobufCMessage **out, mc_error *err)
{
    return mc_json_to_message_ex(desc, j, NULL, out, err);
}

mc_status mc_json_decode_ex(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                            const mc_json_options *opt, ProtobufCMessage **out, mc_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (desc == NULL || out == NULL || (json == NULL && len != 0))
        return mc_error_set(err, MC_ERR_INVALID, "json decode: no descriptor, input or output");
    json_error_t je;
    /* Duplicate keys are refused: proto3 JSON gives them no meaning, and
     * silently keeping one would hide a bug in the sender. Any top-level
     * value is parsed so that a non-object gets a typed error below. */
    json_t *j = json_loadb(json != NULL ? json : "", len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (j == NULL) {
        if (json_error_code(&je) == json_error_out_of_memory)
            return mc_error_set(err, MC_ERR_NOMEM, "json decode: out of memory");
        return mc_error_set(err, MC_ERR_PARSE, "invalid JSON at line %d, column %d: %s", je.line,
                            je.column, je.text);
    }
    mc_status st = mc_json_to_message_ex(desc, j, opt, out, err);
    json_decref(j);
    return st;
}

mc_status mc_json_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                         ProtobufCMessage **out, mc_error *err)
{
    return mc_json_decode_ex(desc, json, len, NULL, out, err);
}
