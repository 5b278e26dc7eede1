/* Fuzz target for mc_json_decode. The input names the message type and
 * the JSON text follows:
 *   "@sim.v1.MetricSnapshot\n{...}" decodes strictly,
 *   "?sim.v1.MetricSnapshot\n{...}" skips unknown fields;
 * the seed corpus uses this form, so it keeps its meaning when message
 * types are added. Any other input is picked apart by its first byte, which
 * selects the type (every message of proto/ plus the test types) and
 * whether unknown fields are skipped; the rest is the JSON text. Whatever decodes must
 * survive a round trip unchanged: encode, decode again, and the two
 * messages must pack to the same bytes and encode to the same text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json/json.h"
#include "json_test_types.h"
#include "jsontest.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const test_types[] = {
    &mcjsontest__v1__scalars__descriptor, &mcjsontest__v1__repeateds__descriptor,
    &mcjsontest__v1__maps__descriptor,    &mcjsontest__v1__tree__descriptor,
    &mcjsontest__v1__names__descriptor,   &mcjsontest__v1__empty__descriptor,
};
#define N_TEST_TYPES (sizeof test_types / sizeof test_types[0])

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len != 0 ? *len : 1);
    if (buf == NULL)
        abort();
    protobuf_c_message_pack(m, buf);
    return buf;
}

static void die(const char *what, const ProtobufCMessageDescriptor *d, const char *detail)
{
    fprintf(stderr, "fuzz_json_decode: %s (%s): %s\n", what, d->name, detail);
    abort();
}

static const ProtobufCMessageDescriptor *type_at(size_t i)
{
    return i < mc_json_proto_types_count ? mc_json_proto_types[i]
                                         : test_types[i - mc_json_proto_types_count];
}

/* "@name\n" or "?name\n" at the start of the input: the type by name. */
static const ProtobufCMessageDescriptor *named_type(const uint8_t *data, size_t size, size_t *skip)
{
    if (size < 2 || (data[0] != '@' && data[0] != '?'))
        return NULL;
    const uint8_t *nl = memchr(data, '\n', size);
    if (nl == NULL)
        return NULL;
    size_t n = (size_t)(nl - data) - 1;
    for (size_t i = 0; i < mc_json_proto_types_count + N_TEST_TYPES; i++) {
        const char *name = type_at(i)->name;
        if (strlen(name) == n && memcmp(name, data + 1, n) == 0) {
            *skip = n + 2;
            return type_at(i);
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t ntypes = mc_json_proto_types_count + N_TEST_TYPES;
    size_t skip = 0;
    mc_json_options opt = {0};
    const ProtobufCMessageDescriptor *d = named_type(data, size, &skip);
    if (d != NULL) {
        opt.ignore_unknown = data[0] == '?';
    } else {
        d = type_at(data[0] % ntypes);
        opt.ignore_unknown = (data[0] / ntypes) % 2 == 1;
        skip = 1;
    }
    const char *json = (const char *)data + skip;
    size_t len = size - skip;

    ProtobufCMessage *m1 = NULL;
    mc_error err = {0};
    mc_status st = mc_json_decode_ex(d, json, len, &opt, &m1, &err);
    if (st != MC_OK) {
        if (m1 != NULL)
            die("failed decode returned a message", d, err.msg);
        if (st != MC_ERR_INVALID && st != MC_ERR_PARSE)
            die("unexpected status", d, err.msg);
        if (err.msg[0] == '\0')
            die("error without a message", d, mc_status_name(st));
        return 0;
    }

    char *t1 = NULL, *t2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (mc_json_encode(m1, &t1, &n1, &err) != MC_OK)
        die("decoded message does not encode", d, err.msg);
    ProtobufCMessage *m2 = NULL;
    if (mc_json_decode(d, t1, n1, &m2, &err) != MC_OK)
        die("encoded text does not decode", d, err.msg);
    if (mc_json_encode(m2, &t2, &n2, &err) != MC_OK)
        die("second encode failed", d, err.msg);
    if (n1 != n2 || memcmp(t1, t2, n1) != 0)
        die("re-encoding differs", d, t1);

    size_t p1, p2;
    uint8_t *b1 = pack(m1, &p1);
    uint8_t *b2 = pack(m2, &p2);
    if (p1 != p2 || memcmp(b1, b2, p1) != 0)
        die("round trip changed the message", d, t1);

    free(b1);
    free(b2);
    free(t1);
    free(t2);
    protobuf_c_message_free_unpacked(m1, NULL);
    protobuf_c_message_free_unpacked(m2, NULL);
    return 0;
}
