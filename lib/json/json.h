/* Proto3 canonical JSON for any protobuf-c message.
 *
 * The mapping follows the proto3 JSON specification and is driven entirely by
 * the protobuf-c descriptors, so every message type of proto/ (and any added
 * later) works without per-type code. jansson parses and prints the JSON
 * text; this module maps between jansson values and protobuf-c messages.
 *
 *   - Field names are lowerCamelCase (derived from the proto name the way
 *     protoc derives json_name; protobuf-c 1.4 does not expose json_name, so
 *     a custom json_name option in a .proto is not honoured). On input both
 *     the lowerCamelCase and the original snake_case names are accepted.
 *   - Fields are printed in field-number order; fields holding their default
 *     value (0, "", false, enum 0, empty repeated or map, unset message) are
 *     left out, except the selected member of a oneof.
 *   - int64, uint64, sint64, fixed64 and sfixed64 are JSON strings on output;
 *     numbers and decimal strings are accepted on input. 32-bit integers are
 *     numbers; decimal strings are accepted too. Values are range-checked,
 *     never truncated. Note that jansson itself rejects JSON numbers outside
 *     the range of long long ("too big integer"), so a uint64 above
 *     INT64_MAX must be given as a string, which is what the encoder prints.
 *   - float and double are numbers, printed with 17 significant digits so
 *     every value reads back bit-identically; NaN and the infinities are the
 *     strings "NaN", "Infinity" and "-Infinity".
 *   - Enums are printed by name (by number when the value is not in the
 *     enum); names and numbers of known values are accepted.
 *   - bytes are standard base64 with padding; standard and URL-safe base64,
 *     padded or not, are accepted.
 *   - Maps are JSON objects; integer and bool keys are written as decimal
 *     strings and "true"/"false", and must be written that way on input
 *     (canonically: no leading zeros, no "+", no "-0"). A field is taken for
 *     a map when its type is the nested "<Field>Entry" message with fields
 *     key = 1 and value = 2 that protoc generates for map<K, V>.
 *   - JSON null for a field means "not set".
 *
 * Errors name the JSON path of the offending value, e.g.
 *   $.stamp.tick: expected an unsigned 64-bit integer, got "abc"
 *   $.samples[2].labels: expected an object, got an array
 *   $.foo: unknown field "foo" in sim.v1.MetricSnapshot
 * Syntax errors return MC_ERR_PARSE with jansson's line and column; every
 * other problem with the input returns MC_ERR_INVALID. Message nesting is
 * bounded (MC_JSON_DEFAULT_MAX_DEPTH) in both directions.
 *
 * Strings handed out (*out of the encoders) are allocated with malloc and
 * freed with free. Decoded messages are allocated with malloc, as
 * protobuf_c_message_unpack would with the default allocator, and are freed
 * with protobuf_c_message_free_unpacked(msg, NULL). Nothing is allocated when
 * a call fails. */
#ifndef MC_JSON_JSON_H
#define MC_JSON_JSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "status/status.h"

/* Deepest message nesting accepted or produced: the top-level message is at
 * depth 0, a message in one of its fields at depth 1, and so on. */
#define MC_JSON_DEFAULT_MAX_DEPTH 64

typedef struct mc_json_options {
    /* Encoding: also print fields that hold their default value (scalars,
     * empty repeated fields and maps). Unset message fields and unselected
     * oneof members are still left out. */
    bool emit_defaults;
    /* Encoding: print the original proto field names instead of
     * lowerCamelCase. */
    bool proto_names;
    /* Encoding: pretty-print with this many spaces per level (at most 31);
     * 0 prints compactly on one line. */
    int indent;
    /* Decoding: skip fields the message type does not know instead of
     * failing. Unknown enum names still fail. */
    bool ignore_unknown;
    /* Both: deepest message nesting; 0 means MC_JSON_DEFAULT_MAX_DEPTH. */
    unsigned max_depth;
} mc_json_options;

/* Encodes msg as proto3 canonical JSON (compact, one line). *out is
 * malloc'd, NUL-terminated; caller frees. len may be NULL. Fails with
 * MC_ERR_INVALID when the message cannot be represented (a string that is
 * not valid UTF-8, nesting deeper than the limit). */
mc_status mc_json_encode(const ProtobufCMessage *msg, char **out, size_t *len, mc_error *err);
mc_status mc_json_encode_ex(const ProtobufCMessage *msg, const mc_json_options *opt, char **out,
                            size_t *len, mc_error *err);

/* Same, into a jansson value (new reference). */
mc_status mc_json_from_message(const ProtobufCMessage *msg, json_t **out, mc_error *err);
mc_status mc_json_from_message_ex(const ProtobufCMessage *msg, const mc_json_options *opt,
                                  json_t **out, mc_error *err);

/* Decodes JSON text (len bytes, need not be NUL-terminated) into a new
 * message of type desc. *out is freed with
 * protobuf_c_message_free_unpacked(*out, NULL). */
mc_status mc_json_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                         ProtobufCMessage **out, mc_error *err);
mc_status mc_json_decode_ex(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                            const mc_json_options *opt, ProtobufCMessage **out, mc_error *err);

/* Same, from a jansson value; j is not modified. */
mc_status mc_json_to_message(const ProtobufCMessageDescriptor *desc, const json_t *j,
                             ProtobufCMessage **out, mc_error *err);
mc_status mc_json_to_message_ex(const ProtobufCMessageDescriptor *desc, const json_t *j,
                                const mc_json_options *opt, ProtobufCMessage **out,
                                mc_error *err);

#endif
