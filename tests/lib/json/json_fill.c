#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_test_types.h"

/* Deep enough to nest every message of proto/ fully (the deepest chain is
 * three messages) while keeping recursive test types small. */
#define FILL_MAX_DEPTH 4

static void *xmalloc(size_t n)
{
    void *p = malloc(n != 0 ? n : 1);
    if (p == NULL)
        abort();
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

static const char *const strings[] = {
    "héllo wörld ✓ 𝄞 (BMP and astral)",
    "quote \" backslash \\ slash / newline \n tab \t bell \x07 del \x7f end",
    "日本語のテキスト",
    "plain-ascii",
    "ключ — \u2028 line separator",
};
#define N_STRINGS (sizeof strings / sizeof strings[0])

static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->name);
    return n > 5 && strcmp(d->name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
           strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return 8;
    case PROTOBUF_C_TYPE_DOUBLE: return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(ProtobufCMessage *);
    default: return 4;
    }
}

static ProtobufCMessage *fill(const ProtobufCMessageDescriptor *d, unsigned variant, unsigned depth);

static void fill_bytes(ProtobufCBinaryData *bd, unsigned v)
{
    static const uint8_t b1[] = {0xfb, 0xff, 0xfe};
    static const uint8_t b2[] = {0x00};
    static const uint8_t b3[] = {0xff, 0x00, 0x80, 0x7f, 0x01};
    switch (v % 4) {
    case 0:
        bd->len = 256;
        bd->data = xmalloc(256);
        for (size_t i = 0; i < 256; i++)
            bd->data[i] = (uint8_t)i;
        return;
    case 1: bd->len = sizeof b1, bd->data = memcpy(xmalloc(sizeof b1), b1, sizeof b1); return;
    case 2: bd->len = sizeof b2, bd->data = memcpy(xmalloc(sizeof b2), b2, sizeof b2); return;
    default: bd->len = sizeof b3, bd->data = memcpy(xmalloc(sizeof b3), b3, sizeof b3); return;
    }
}

static int pick_enum(const ProtobufCEnumDescriptor *ed, unsigned v)
{
    unsigned nonzero = 0;
    for (unsigned i = 0; i < ed->n_values; i++)
        nonzero += ed->values[i].value != 0;
    if (nonzero == 0)
        return 0;
    unsigned want = v % nonzero;
    for (unsigned i = 0; i < ed->n_values; i++)
        if (ed->values[i].value != 0 && want-- == 0)
            return ed->values[i].value;
    return 0;
}

static void fill_value(const ProtobufCFieldDescriptor *f, void *p, unsigned v, unsigned depth)
{
    static const int32_t i32[] = {INT32_MIN, INT32_MAX, -1, 123456789};
    static const uint32_t u32[] = {UINT32_MAX, 1, 4000000000u, 77};
    static const int64_t i64[] = {INT64_MIN, INT64_MAX, -1, 9007199254740993};
    static const uint64_t u64[] = {UINT64_MAX, 1, UINT64_MAX - 1, 9007199254740993u};
    const float flt[] = {NAN, INFINITY, -INFINITY, 0.1f, FLT_MAX, -FLT_TRUE_MIN, 3.5f};
    const double dbl[] = {NAN, INFINITY, -INFINITY, 0.1, DBL_MAX, 4.9406564584124654e-324,
                          -2.5, 1e21, 1.0 / 3};
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: *(int32_t *)p = i32[v % 4]; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *(uint32_t *)p = u32[v % 4]; break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: *(int64_t *)p = i64[v % 4]; break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: *(uint64_t *)p = u64[v % 4]; break;
    case PROTOBUF_C_TYPE_FLOAT: *(float *)p = flt[v % 7]; break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)p = dbl[v % 9]; break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = 1; break;
    case PROTOBUF_C_TYPE_ENUM: *(int *)p = pick_enum(f->descriptor, v); break;
    case PROTOBUF_C_TYPE_STRING: *(char **)p = xstrdup(strings[v % N_STRINGS]); break;
    case PROTOBUF_C_TYPE_BYTES: fill_bytes(p, v); break;
    case PROTOBUF_C_TYPE_MESSAGE: *(ProtobufCMessage **)p = fill(f->descriptor, v + 1, depth + 1); break;
    }
}

/* Distinct keys, so that no entry hides another. */
static void fill_key(const ProtobufCFieldDescriptor *f, void *p, unsigned k)
{
    static const char *const keys[] = {"", "ключ ✓", "k\"2"};
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: *(int32_t *)p = k == 0 ? INT32_MIN : k == 1 ? -1 : INT32_MAX; break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: *(uint32_t *)p = k == 0 ? 0 : k == 1 ? 1 : UINT32_MAX; break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64: *(int64_t *)p = k == 0 ? INT64_MIN : k == 1 ? -1 : INT64_MAX; break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: *(uint64_t *)p = k == 0 ? 0 : k == 1 ? 1 : UINT64_MAX; break;
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)p = k == 0; break;
    case PROTOBUF_C_TYPE_STRING: *(char **)p = xstrdup(keys[k % 3]); break;
    default: abort();
    }
}

/* The position of a oneof member within its oneof and the oneof's size. */
static void oneof_rank(const ProtobufCMessageDescriptor *d, unsigned i, unsigned *rank, unsigned *size)
{
    *rank = *size = 0;
    for (unsigned k = 0; k < d->n_fields; k++) {
        const ProtobufCFieldDescriptor *o = &d->fields[k];
        if ((o->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) == 0 ||
            o->quantifier_offset != d->fields[i].quantifier_offset)
            continue;
        if (k < i)
            (*rank)++;
        (*size)++;
    }
}

static ProtobufCMessage *fill(const ProtobufCMessageDescriptor *d, unsigned variant, unsigned depth)
{
    ProtobufCMessage *m = xmalloc(d->sizeof_message);
    protobuf_c_message_init(d, m);
    if (depth >= FILL_MAX_DEPTH)
        return m;
    char *base = (char *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        unsigned v = variant + i;
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
            unsigned rank, size;
            oneof_rank(d, i, &rank, &size);
            if (rank != variant % size)
                continue;
            fill_value(f, base + f->offset, v, depth);
            *(uint32_t *)(base + f->quantifier_offset) = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            const ProtobufCMessageDescriptor *ed = f->descriptor;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && is_map_entry(ed)) {
                size_t n = ed->fields[0].type == PROTOBUF_C_TYPE_BOOL ? 2 : 3;
                ProtobufCMessage **arr = xmalloc(n * sizeof *arr);
                for (size_t k = 0; k < n; k++) {
                    ProtobufCMessage *e = xmalloc(ed->sizeof_message);
                    protobuf_c_message_init(ed, e);
                    fill_key(&ed->fields[0], (char *)e + ed->fields[0].offset, (unsigned)k);
                    fill_value(&ed->fields[1], (char *)e + ed->fields[1].offset, v + (unsigned)k, depth);
                    arr[k] = e;
                }
                *(ProtobufCMessage ***)(base + f->offset) = arr;
                *(size_t *)(base + f->quantifier_offset) = n;
            } else {
                size_t n = 3, size = elem_size(f->type);
                char *arr = xmalloc(n * size);
                memset(arr, 0, n * size);
                for (size_t k = 0; k < n; k++)
                    fill_value(f, arr + k * size, v + (unsigned)k, depth);
                *(char **)(base + f->offset) = arr;
                *(size_t *)(base + f->quantifier_offset) = n;
            }
        } else {
            fill_value(f, base + f->offset, v, depth);
            if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
                f->type != PROTOBUF_C_TYPE_MESSAGE)
                *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
    }
    return m;
}

ProtobufCMessage *json_fill_message(const ProtobufCMessageDescriptor *d, unsigned variant)
{
    return fill(d, variant, 0);
}

size_t json_fill_expected_keys(const ProtobufCMessageDescriptor *d)
{
    size_t n = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        unsigned rank, size;
        if ((d->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) == 0) {
            n++;
            continue;
        }
        oneof_rank(d, i, &rank, &size);
        n += rank == 0;
    }
    return n;
}
