/* Tests of lib/json: round trips of every message type, the exact output
 * format, the accepted input forms, and every kind of bad input with the
 * status and the JSON path of the error. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/v1/stamp.pb-c.h"
#include "json/json.h"
#include "json_test_types.h"
#include "jsontest.pb-c.h"
#include "ops/v1/action_service.pb-c.h"
#include "ops/v1/actions.pb-c.h"
#include "sim/v1/events.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "trace/v1/trace.pb-c.h"

static const ProtobufCMessageDescriptor *const test_types[] = {
    &mcjsontest__v1__scalars__descriptor, &mcjsontest__v1__repeateds__descriptor,
    &mcjsontest__v1__maps__descriptor,    &mcjsontest__v1__tree__descriptor,
    &mcjsontest__v1__names__descriptor,   &mcjsontest__v1__empty__descriptor,
};

/* ---- helpers ---- */

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len != 0 ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

static void assert_same_packed(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    size_t na, nb;
    uint8_t *pa = pack(a, &na);
    uint8_t *pb = pack(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    free(pa);
    free(pb);
}

static char *encode_ok(const ProtobufCMessage *m, const mc_json_options *opt)
{
    char *text = NULL;
    size_t len = 0;
    mc_error err = {0};
    mc_status st = mc_json_encode_ex(m, opt, &text, &len, &err);
    if (st != MC_OK)
        fail_msg("encode %s: %s", m->descriptor->name, err.msg);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

static ProtobufCMessage *decode_ok(const ProtobufCMessageDescriptor *d, const char *json,
                                   const mc_json_options *opt)
{
    ProtobufCMessage *m = NULL;
    mc_error err = {0};
    mc_status st = mc_json_decode_ex(d, json, strlen(json), opt, &m, &err);
    if (st != MC_OK)
        fail_msg("decode %s from %s: %s", d->name, json, err.msg);
    assert_non_null(m);
    return m;
}

/* Decodes json as d, expects status st and an error message equal to msg
 * (or, with a trailing '*', starting with it). */
static void expect_error(const ProtobufCMessageDescriptor *d, const char *json, mc_status st,
                         const char *msg)
{
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    mc_error err = {0};
    mc_status got = mc_json_decode(d, json, strlen(json), &m, &err);
    if (got != st)
        fail_msg("decode %s from %s: status %s, want %s (%s)", d->name, json, mc_status_name(got),
                 mc_status_name(st), err.msg);
    assert_null(m);
    assert_int_equal(err.status, st);
    size_t n = strlen(msg);
    if (n > 0 && msg[n - 1] == '*') {
        if (strncmp(err.msg, msg, n - 1) != 0)
            fail_msg("error for %s:\n  got  %s\n  want %s", json, err.msg, msg);
    } else if (strcmp(err.msg, msg) != 0) {
        fail_msg("error for %s:\n  got  %s\n  want %s", json, err.msg, msg);
    }
}

/* message -> JSON -> message gives the same packed bytes, and the second
 * encoding is the same text; also through the jansson value API and from
 * the message protobuf-c unpacks from the packed bytes. */
static void roundtrip(const ProtobufCMessage *m, const mc_json_options *opt)
{
    char *text = encode_ok(m, opt);
    if (opt == NULL || opt->indent == 0)
        assert_null(strchr(text, '\n'));
    ProtobufCMessage *back = decode_ok(m->descriptor, text, opt);
    assert_same_packed(m, back);
    char *again = encode_ok(back, opt);
    assert_string_equal(text, again);

    json_t *j = NULL;
    mc_error err = {0};
    assert_int_equal(mc_json_from_message_ex(m, opt, &j, &err), MC_OK);
    ProtobufCMessage *back2 = NULL;
    if (mc_json_to_message_ex(m->descriptor, j, opt, &back2, &err) != MC_OK)
        fail_msg("to_message %s: %s", m->descriptor->name, err.msg);
    assert_same_packed(m, back2);

    size_t n;
    uint8_t *bin = pack(m, &n);
    ProtobufCMessage *unpacked = protobuf_c_message_unpack(m->descriptor, NULL, n, bin);
    assert_non_null(unpacked);
    char *from_unpacked = encode_ok(unpacked, opt);
    assert_string_equal(text, from_unpacked);

    free(from_unpacked);
    protobuf_c_message_free_unpacked(unpacked, NULL);
    free(bin);
    protobuf_c_message_free_unpacked(back2, NULL);
    json_decref(j);
    free(again);
    protobuf_c_message_free_unpacked(back, NULL);
    free(text);
}

static void roundtrip_filled(const ProtobufCMessageDescriptor *d)
{
    /* Nine variants cycle every value table and select every member of a
     * seven-member oneof. */
    for (unsigned variant = 0; variant < 9; variant++) {
        ProtobufCMessage *m = json_fill_message(d, variant);
        /* Every field is set, so every field (one per oneof) is printed. */
        json_t *j = NULL;
        mc_error err = {0};
        assert_int_equal(mc_json_from_message(m, &j, &err), MC_OK);
        if (json_object_size(j) != json_fill_expected_keys(d))
            fail_msg("%s: %zu keys, want %zu", d->name, json_object_size(j),
                     json_fill_expected_keys(d));
        json_decref(j);

        roundtrip(m, NULL);
        mc_json_options pretty = {.indent = 2};
        roundtrip(m, &pretty);
        mc_json_options proto_names = {.proto_names = true};
        roundtrip(m, &proto_names);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    /* The empty message too, with and without defaults printed. */
    ProtobufCMessage *empty = malloc(d->sizeof_message);
    assert_non_null(empty);
    protobuf_c_message_init(d, empty);
    char *text = encode_ok(empty, NULL);
    assert_string_equal(text, "{}");
    free(text);
    mc_json_options defaults = {.emit_defaults = true};
    roundtrip(empty, &defaults);
    roundtrip(empty, NULL);
    free(empty);
}

/* ---- round trips ---- */

static void test_roundtrip_every_proto_type(void **state)
{
    (void)state;
    /* proto/ has 37 messages today; the list is generated, so this only
     * guards against the generator finding nothing. */
    assert_true(mc_json_proto_types_count >= 37);
    for (size_t i = 0; i < mc_json_proto_types_count; i++)
        roundtrip_filled(mc_json_proto_types[i]);
}

static void test_roundtrip_test_types(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof test_types / sizeof test_types[0]; i++)
        roundtrip_filled(test_types[i]);
}

/* ---- exact output ---- */

static void test_action_exact_text(void **state)
{
    (void)state;
    Common__V1__Stamp stamp = COMMON__V1__STAMP__INIT;
    stamp.run_id = "run-1";
    stamp.tick = 42;
    stamp.producer = "agent-service";
    stamp.producer_seq = 7;
    Ops__V1__Action a = OPS__V1__ACTION__INIT;
    a.stamp = &stamp;
    a.id = "act-1";
    a.incident_id = "inc-1";
    a.action_type = COMMON__V1__ACTION_TYPE__ACTION_TYPE_SCALE_UP;
    a.target_id = "svc-api";
    a.status = COMMON__V1__ACTION_STATUS__ACTION_STATUS_PENDING;
    a.reason = "p99 latency 850 ms > 500 ms";
    a.proposed_at_tick = 42;
    a.updated_at_tick = 42;
    a.supersedes_action_id = "";
    a.escalation_level = 1;
    char *text = encode_ok(&a.base, NULL);
    assert_string_equal(
        text, "{\"stamp\":{\"runId\":\"run-1\",\"tick\":\"42\",\"producer\":\"agent-service\","
              "\"producerSeq\":\"7\"},\"id\":\"act-1\",\"incidentId\":\"inc-1\","
              "\"actionType\":\"ACTION_TYPE_SCALE_UP\",\"targetId\":\"svc-api\","
              "\"status\":\"ACTION_STATUS_PENDING\",\"reason\":\"p99 latency 850 ms > 500 ms\","
              "\"proposedAtTick\":\"42\",\"updatedAtTick\":\"42\",\"escalationLevel\":1}");
    free(text);

    mc_json_options opt = {.proto_names = true, .emit_defaults = true};
    Common__V1__Stamp s2 = COMMON__V1__STAMP__INIT;
    s2.tick = UINT64_MAX;
    text = encode_ok(&s2.base, &opt);
    assert_string_equal(text, "{\"run_id\":\"\",\"tick\":\"18446744073709551615\",\"producer\":\"\","
                              "\"producer_seq\":\"0\",\"replayed\":false}");
    free(text);

    opt = (mc_json_options){.indent = 2};
    text = encode_ok(&s2.base, &opt);
    assert_string_equal(text, "{\n  \"tick\": \"18446744073709551615\"\n}");
    free(text);
}

static void test_snapshot_exact_text(void **state)
{
    (void)state;
    Sim__V1__MetricSample__LabelsEntry l1 = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    l1.key = "zone";
    l1.value = "eu-1";
    Sim__V1__MetricSample__LabelsEntry l2 = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    l2.key = "tier";
    l2.value = "wéb";
    Sim__V1__MetricSample__LabelsEntry *labels[] = {&l1, &l2};
    Sim__V1__MetricSample s1 = SIM__V1__METRIC_SAMPLE__INIT;
    s1.node_id = "node-1";
    s1.metric_name = "cpu_usage";
    s1.metric_value = 0.5;
    s1.n_labels = 2;
    s1.labels = labels;
    Sim__V1__MetricSample s2 = SIM__V1__METRIC_SAMPLE__INIT;
    s2.metric_name = "p99_latency_ms";
    s2.metric_value = NAN;
    Sim__V1__MetricSample s3 = SIM__V1__METRIC_SAMPLE__INIT;
    s3.metric_value = -INFINITY;
    Sim__V1__MetricSample s4 = SIM__V1__METRIC_SAMPLE__INIT;
    s4.metric_value = 0.1;
    Sim__V1__MetricSample *samples[] = {&s1, &s2, &s3, &s4};
    Sim__V1__MetricSnapshot snap = SIM__V1__METRIC_SNAPSHOT__INIT;
    snap.sim_time_unix_ms = INT64_MIN;
    snap.chunk_count = 1;
    snap.n_samples = 4;
    snap.samples = samples;
    char *text = encode_ok(&snap.base, NULL);
    assert_string_equal(text,
                        "{\"simTimeUnixMs\":\"-9223372036854775808\",\"chunkCount\":1,\"samples\":["
                        "{\"nodeId\":\"node-1\",\"metricName\":\"cpu_usage\",\"metricValue\":0.5,"
                        "\"labels\":{\"zone\":\"eu-1\",\"tier\":\"wéb\"}},"
                        "{\"metricName\":\"p99_latency_ms\",\"metricValue\":\"NaN\"},"
                        "{\"metricValue\":\"-Infinity\"},"
                        "{\"metricValue\":0.10000000000000001}]}");
    roundtrip(&snap.base, NULL);
    free(text);
}

static void test_bytes_and_oneof_text(void **state)
{
    (void)state;
    uint8_t digest[] = {0xfb, 0xff, 0xfe, 0x00};
    Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
    h.topology_digest.data = digest;
    h.topology_digest.len = 4;
    h.config_digest.data = digest;
    h.config_digest.len = 1;
    char *text = encode_ok(&h.base, NULL);
    assert_string_equal(text, "{\"topologyDigest\":\"+//+AA==\",\"configDigest\":\"+w==\"}");
    free(text);

    /* A oneof member is printed even when it holds its default value. */
    Mcjsontest__V1__Tree t = MCJSONTEST__V1__TREE__INIT;
    t.payload_case = MCJSONTEST__V1__TREE__PAYLOAD_NUMBER;
    t.number = 0;
    text = encode_ok(&t.base, NULL);
    assert_string_equal(text, "{\"number\":\"0\"}");
    free(text);
    roundtrip(&t.base, NULL);

    Mcjsontest__V1__Names n = MCJSONTEST__V1__NAMES__INIT;
    n.foo_bar = 1;
    n.foo_bar_baz2 = 2;
    n.x_1_y = 3;
    n.camelcase = 4;
    n.trailing_ = 5;
    text = encode_ok(&n.base, NULL);
    assert_string_equal(text,
                        "{\"fooBar\":1,\"fooBarBaz2\":2,\"x1Y\":3,\"camelCase\":4,\"trailing\":5}");
    free(text);
}

/* ---- accepted input forms ---- */

static void test_accepts_both_name_styles(void **state)
{
    (void)state;
    const char *camel = "{\"stamp\":{\"runId\":\"r\",\"producerSeq\":\"5\"},\"incidentId\":\"i\","
                        "\"actionType\":\"ACTION_TYPE_DRAIN_NODE\",\"proposedAtTick\":\"9\"}";
    const char *snake = "{\"stamp\":{\"run_id\":\"r\",\"producer_seq\":\"5\"},\"incident_id\":\"i\","
                        "\"action_type\":\"ACTION_TYPE_DRAIN_NODE\",\"proposed_at_tick\":\"9\"}";
    ProtobufCMessage *a = decode_ok(&ops__v1__action__descriptor, camel, NULL);
    ProtobufCMessage *b = decode_ok(&ops__v1__action__descriptor, snake, NULL);
    assert_same_packed(a, b);
    const Ops__V1__Action *act = (const Ops__V1__Action *)a;
    assert_string_equal(act->stamp->run_id, "r");
    assert_int_equal(act->stamp->producer_seq, 5);
    assert_int_equal(act->action_type, COMMON__V1__ACTION_TYPE__ACTION_TYPE_DRAIN_NODE);
    assert_int_equal(act->proposed_at_tick, 9);
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);

    ProtobufCMessage *n = decode_ok(&mcjsontest__v1__names__descriptor,
                                    "{\"foo_bar\":1,\"fooBarBaz2\":2,\"x_1_y\":3,\"camelCase\":4,"
                                    "\"trailing_\":5}",
                                    NULL);
    const Mcjsontest__V1__Names *names = (const Mcjsontest__V1__Names *)n;
    assert_int_equal(names->foo_bar + names->foo_bar_baz2 + names->x_1_y + names->camelcase +
                         names->trailing_,
                     15);
    protobuf_c_message_free_unpacked(n, NULL);
}

static void test_accepts_other_forms(void **state)
{
    (void)state;
    /* Enum numbers, 64-bit numbers, 32-bit strings, integral reals, number
     * strings for doubles, null for "not set", URL-safe unpadded base64. */
    ProtobufCMessage *m = decode_ok(
        &mcjsontest__v1__scalars__descriptor,
        "{\"i32\":\"-5\",\"i64\":-9223372036854775807,\"u32\":1e3,\"u64\":\"18446744073709551615\","
        "\"s64\":\"-9223372036854775808\",\"f32\":4294967295,\"flt\":\"Infinity\",\"dbl\":\"1.5e3\","
        "\"flag\":true,\"text\":null,\"data\":\"-_-_\",\"color\":-1,\"nested\":{\"color\":2}}",
        NULL);
    const Mcjsontest__V1__Scalars *s = (const Mcjsontest__V1__Scalars *)m;
    assert_int_equal(s->i32, -5);
    assert_true(s->i64 == -INT64_MAX);
    assert_int_equal(s->u32, 1000);
    assert_true(s->u64 == UINT64_MAX);
    assert_true(s->s64 == INT64_MIN);
    assert_int_equal(s->f32, UINT32_MAX);
    assert_true(isinf(s->flt) && s->flt > 0);
    assert_true(s->dbl == 1500.0);
    assert_true(s->flag);
    assert_string_equal(s->text, "");
    assert_int_equal(s->data.len, 3);
    assert_memory_equal(s->data.data, "\xfb\xff\xbf", 3);
    assert_int_equal(s->color, MCJSONTEST__V1__COLOR__COLOR_MINUS_ONE);
    assert_non_null(s->nested);
    assert_int_equal(s->nested->color, MCJSONTEST__V1__COLOR__COLOR_GREEN);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Padded and unpadded standard base64 decode to the same bytes. */
    ProtobufCMessage *a = decode_ok(&trace__v1__trace_footer__descriptor,
                                    "{\"finalHash\":\"+w==\",\"recordCount\":null}", NULL);
    ProtobufCMessage *b = decode_ok(&trace__v1__trace_footer__descriptor,
                                    "{\"finalHash\":\"+w\"}", NULL);
    assert_same_packed(a, b);
    protobuf_c_message_free_unpacked(a, NULL);
    protobuf_c_message_free_unpacked(b, NULL);

    /* Maps with integer and bool keys; entries keep their order. */
    m = decode_ok(&mcjsontest__v1__maps__descriptor,
                  "{\"byInt32\":{\"-7\":\"a\",\"0\":\"b\"},\"byBool\":{\"true\":\"t\",\"false\":\"f\"},"
                  "\"byUint64\":{\"18446744073709551615\":\"AQ==\"},\"bySint64\":{\"1\":\"NaN\"}}",
                  NULL);
    const Mcjsontest__V1__Maps *maps = (const Mcjsontest__V1__Maps *)m;
    assert_int_equal(maps->n_by_int32, 2);
    assert_int_equal(maps->by_int32[0]->key, -7);
    assert_string_equal(maps->by_int32[1]->value, "b");
    assert_int_equal(maps->n_by_bool, 2);
    assert_true(maps->by_bool[0]->key);
    assert_true(maps->by_uint64[0]->key == UINT64_MAX);
    assert_true(isnan(maps->by_sint64[0]->value));
    char *text = encode_ok(m, NULL);
    assert_string_equal(text, "{\"byInt32\":{\"-7\":\"a\",\"0\":\"b\"},"
                              "\"byUint64\":{\"18446744073709551615\":\"AQ==\"},"
                              "\"bySint64\":{\"1\":\"NaN\"},"
                              "\"byBool\":{\"true\":\"t\",\"false\":\"f\"}}");
    free(text);
    protobuf_c_message_free_unpacked(m, NULL);

    /* Unknown fields can be skipped on request. */
    mc_json_options lenient = {.ignore_unknown = true};
    m = decode_ok(&common__v1__stamp__descriptor, "{\"tick\":\"3\",\"later\":{\"x\":[1,2]}}",
                  &lenient);
    assert_int_equal(((const Common__V1__Stamp *)m)->tick, 3);
    protobuf_c_message_free_unpacked(m, NULL);
}

/* ---- bad input ---- */

static void test_rejects_wrong_types(void **state)
{
    (void)state;
    expect_error(&ops__v1__action__descriptor, "{\"stamp\":{\"tick\":\"abc\"}}", MC_ERR_INVALID,
                 "$.stamp.tick: expected an unsigned 64-bit integer, got \"abc\"");
    expect_error(&sim__v1__metric_snapshot__descriptor,
                 "{\"samples\":[{},{\"labels\":{}},{\"labels\":[]}]}", MC_ERR_INVALID,
                 "$.samples[2].labels: expected an object, got an array");
    expect_error(&sim__v1__metric_snapshot__descriptor, "{\"samples\":{}}", MC_ERR_INVALID,
                 "$.samples: expected an array, got an object");
    expect_error(&sim__v1__metric_snapshot__descriptor, "{\"samples\":[1]}", MC_ERR_INVALID,
                 "$.samples[0]: expected an object, got 1");
    expect_error(&sim__v1__metric_snapshot__descriptor, "{\"samples\":[null]}", MC_ERR_INVALID,
                 "$.samples[0]: null is not allowed in a repeated field");
    expect_error(&sim__v1__metric_sample__descriptor, "{\"labels\":{\"a\":1}}", MC_ERR_INVALID,
                 "$.labels.a: expected a string, got 1");
    expect_error(&sim__v1__metric_sample__descriptor, "{\"labels\":{\"a b\":null}}",
                 MC_ERR_INVALID, "$.labels[\"a b\"]: null is not allowed as a map value");
    expect_error(&sim__v1__metric_sample__descriptor, "{\"metricValue\":true}", MC_ERR_INVALID,
                 "$.metricValue: expected a number, got true");
    expect_error(&sim__v1__metric_sample__descriptor, "{\"metricValue\":\"nan\"}",
                 MC_ERR_INVALID, "$.metricValue: expected a number, got \"nan\"");
    expect_error(&sim__v1__metric_sample__descriptor, "{\"metricValue\":\" 1\"}", MC_ERR_INVALID,
                 "$.metricValue: expected a number, got \" 1\"");
    expect_error(&common__v1__stamp__descriptor, "{\"replayed\":1}", MC_ERR_INVALID,
                 "$.replayed: expected a boolean, got 1");
    expect_error(&common__v1__stamp__descriptor, "{\"runId\":7}", MC_ERR_INVALID,
                 "$.runId: expected a string, got 7");
    expect_error(&common__v1__stamp__descriptor, "{\"tick\":1.5}", MC_ERR_INVALID,
                 "$.tick: expected an unsigned 64-bit integer, got 1.5");
    expect_error(&common__v1__stamp__descriptor, "{\"tick\":\"01\"}", MC_ERR_INVALID,
                 "$.tick: expected an unsigned 64-bit integer, got \"01\"");
    expect_error(&ops__v1__action__descriptor, "{\"actionType\":{}}", MC_ERR_INVALID,
                 "$.actionType: expected a common.v1.ActionType name or number, got an object");
    expect_error(&common__v1__stamp__descriptor, "[1]", MC_ERR_INVALID,
                 "$: expected an object, got an array");
    expect_error(&common__v1__stamp__descriptor, "null", MC_ERR_INVALID,
                 "$: expected an object, got null");
    expect_error(&ops__v1__action__descriptor, "{\"stamp\":\"x\"}", MC_ERR_INVALID,
                 "$.stamp: expected an object, got \"x\"");
}

static void test_rejects_unknown_and_duplicate_fields(void **state)
{
    (void)state;
    expect_error(&sim__v1__metric_snapshot__descriptor, "{\"chunkIndex\":1,\"foo\":1}",
                 MC_ERR_INVALID, "$.foo: unknown field \"foo\" in sim.v1.MetricSnapshot");
    expect_error(&sim__v1__metric_snapshot__descriptor, "{\"samples\":[{\"metric\":1}]}",
                 MC_ERR_INVALID, "$.samples[0].metric: unknown field \"metric\" in sim.v1.MetricSample");
    /* Case matters, as in every proto3 JSON implementation. */
    expect_error(&common__v1__stamp__descriptor, "{\"RunId\":\"x\"}", MC_ERR_INVALID,
                 "$.RunId: unknown field \"RunId\" in common.v1.Stamp");
    expect_error(&common__v1__stamp__descriptor, "{\"runId\":\"a\",\"run_id\":\"b\"}",
                 MC_ERR_INVALID, "$.run_id: field run_id is given twice");
    expect_error(&common__v1__stamp__descriptor, "{\"runId\":\"a\",\"runId\":\"b\"}", MC_ERR_PARSE,
                 "invalid JSON at line 1, column *");
    expect_error(&mcjsontest__v1__tree__descriptor, "{\"text\":\"a\",\"number\":1}", MC_ERR_INVALID,
                 "$.number: field number is in the same oneof as text, which is set already");
    /* null leaves a oneof unset, so another member may follow. */
    ProtobufCMessage *m = decode_ok(&mcjsontest__v1__tree__descriptor,
                                    "{\"text\":null,\"number\":1}", NULL);
    assert_int_equal(((Mcjsontest__V1__Tree *)m)->payload_case, MCJSONTEST__V1__TREE__PAYLOAD_NUMBER);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_rejects_bad_enums(void **state)
{
    (void)state;
    expect_error(&ops__v1__action__descriptor, "{\"actionType\":\"ACTION_TYPE_NOPE\"}",
                 MC_ERR_INVALID,
                 "$.actionType: unknown value \"ACTION_TYPE_NOPE\" for enum common.v1.ActionType");
    expect_error(&ops__v1__action__descriptor, "{\"actionType\":\"action_type_scale_up\"}",
                 MC_ERR_INVALID,
                 "$.actionType: unknown value \"action_type_scale_up\" for enum common.v1.ActionType");
    expect_error(&ops__v1__action__descriptor, "{\"actionType\":99}", MC_ERR_INVALID,
                 "$.actionType: unknown value 99 for enum common.v1.ActionType");
    expect_error(&ops__v1__action__descriptor, "{\"status\":-1}", MC_ERR_INVALID,
                 "$.status: unknown value -1 for enum common.v1.ActionStatus");
    expect_error(&ops__v1__action__descriptor, "{\"status\":4294967297}", MC_ERR_INVALID,
                 "$.status: unknown value 4294967297 for enum common.v1.ActionStatus");
    expect_error(&ops__v1__get_action_history_request__descriptor,
                 "{\"statuses\":[\"ACTION_STATUS_PENDING\",12]}", MC_ERR_INVALID,
                 "$.statuses[1]: unknown value 12 for enum common.v1.ActionStatus");
}

static void test_rejects_out_of_range(void **state)
{
    (void)state;
    expect_error(&ops__v1__action__descriptor, "{\"escalationLevel\":4294967296}", MC_ERR_INVALID,
                 "$.escalationLevel: expected an unsigned 32-bit integer, got 4294967296 (out of "
                 "range)");
    expect_error(&ops__v1__action__descriptor, "{\"escalationLevel\":-1}", MC_ERR_INVALID,
                 "$.escalationLevel: expected an unsigned 32-bit integer, got -1 (out of range)");
    expect_error(&ops__v1__action__descriptor, "{\"proposedAtTick\":\"18446744073709551616\"}",
                 MC_ERR_INVALID,
                 "$.proposedAtTick: expected an unsigned 64-bit integer, got "
                 "\"18446744073709551616\" (out of range)");
    expect_error(&ops__v1__action__descriptor, "{\"proposedAtTick\":\"-1\"}", MC_ERR_INVALID,
                 "$.proposedAtTick: expected an unsigned 64-bit integer, got \"-1\" (out of range)");
    expect_error(&ops__v1__action_history_entry__descriptor,
                 "{\"recordedAtUnixMs\":\"9223372036854775808\"}", MC_ERR_INVALID,
                 "$.recordedAtUnixMs: expected a 64-bit integer, got \"9223372036854775808\" (out "
                 "of range)");
    expect_error(&ops__v1__action_history_entry__descriptor,
                 "{\"recordedAtUnixMs\":9.3e18}", MC_ERR_INVALID,
                 "$.recordedAtUnixMs: expected a 64-bit integer, got 9.3e+18 (out of range)");
    expect_error(&mcjsontest__v1__scalars__descriptor, "{\"i32\":2147483648}", MC_ERR_INVALID,
                 "$.i32: expected a 32-bit integer, got 2147483648 (out of range)");
    expect_error(&mcjsontest__v1__scalars__descriptor, "{\"sf32\":\"-2147483649\"}",
                 MC_ERR_INVALID,
                 "$.sf32: expected a 32-bit integer, got \"-2147483649\" (out of range)");
    expect_error(&mcjsontest__v1__scalars__descriptor, "{\"flt\":1e39}", MC_ERR_INVALID,
                 "$.flt: expected a 32-bit float, got 1e+39 (out of range)");
    expect_error(&mcjsontest__v1__scalars__descriptor, "{\"dbl\":\"1e400\"}", MC_ERR_INVALID,
                 "$.dbl: expected a number, got \"1e400\" (out of range)");
    /* A JSON number beyond long long fails in jansson's parser already. */
    expect_error(&mcjsontest__v1__scalars__descriptor, "{\"u64\":18446744073709551615}",
                 MC_ERR_PARSE, "invalid JSON at line 1, column *");
    expect_error(&mcjsontest__v1__maps__descriptor, "{\"byInt32\":{\"2147483648\":\"x\"}}",
                 MC_ERR_INVALID,
                 "$.byInt32[\"2147483648\"]: map key must be a 32-bit integer in canonical decimal "
                 "form, got \"2147483648\" (out of range)");
    expect_error(&mcjsontest__v1__maps__descriptor, "{\"byInt32\":{\"01\":\"x\"}}", MC_ERR_INVALID,
                 "$.byInt32[\"01\"]: map key must be a 32-bit integer in canonical decimal form, "
                 "got \"01\"");
    expect_error(&mcjsontest__v1__maps__descriptor, "{\"byInt64\":{\"-0\":\"1\"}}", MC_ERR_INVALID,
                 "$.byInt64[\"-0\"]: map key must be a 64-bit integer in canonical decimal form, "
                 "got \"-0\"");
    expect_error(&mcjsontest__v1__maps__descriptor, "{\"byBool\":{\"True\":\"x\"}}", MC_ERR_INVALID,
                 "$.byBool.True: map key must be \"true\" or \"false\", got \"True\"");
}

static void test_rejects_bad_base64(void **state)
{
    (void)state;
    expect_error(&trace__v1__trace_header__descriptor, "{\"topologyDigest\":\"!!!\"}",
                 MC_ERR_INVALID,
                 "$.topologyDigest: expected a base64 string, got \"!!!\" (invalid base64)");
    const char *bad[] = {
        "{\"finalHash\":\"abcde\"}",   /* impossible length */
        "{\"finalHash\":\"ab=\"}",     /* padding that does not complete a group */
        "{\"finalHash\":\"a===\"}",    /* too much padding */
        "{\"finalHash\":\"ab+_\"}",    /* both alphabets */
        "{\"finalHash\":\"ab=c\"}",    /* padding inside */
        "{\"finalHash\":\"ab c\"}",    /* white space */
        "{\"finalHash\":\"/x==\"}",    /* non-zero trailing bits */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_error(&trace__v1__trace_footer__descriptor, bad[i], MC_ERR_INVALID,
                     "$.finalHash: expected a base64 string, got *");
    expect_error(&trace__v1__trace_footer__descriptor, "{\"finalHash\":[]}", MC_ERR_INVALID,
                 "$.finalHash: expected a base64 string, got an array");
}

static void test_rejects_bad_json(void **state)
{
    (void)state;
    expect_error(&ops__v1__action__descriptor, "{\"id\":\"a", MC_ERR_PARSE,
                 "invalid JSON at line 1, column 8: *");
    expect_error(&ops__v1__action__descriptor, "{\"id\":\"a\",\n\"x\":}", MC_ERR_PARSE,
                 "invalid JSON at line 2, column 5: *");
    expect_error(&ops__v1__action__descriptor, "", MC_ERR_PARSE, "invalid JSON at line *");
    expect_error(&ops__v1__action__descriptor, "{} {}", MC_ERR_PARSE, "invalid JSON at line *");
    /* Invalid UTF-8 and escaped NUL in strings are jansson's to refuse. */
    expect_error(&ops__v1__action__descriptor, "{\"id\":\"\xff\"}", MC_ERR_PARSE,
                 "invalid JSON at line *");
    expect_error(&ops__v1__action__descriptor, "{\"id\":\"a\\u0000b\"}", MC_ERR_PARSE,
                 "invalid JSON at line *");

    /* Text that is not NUL-terminated is read up to len only. */
    ProtobufCMessage *m = NULL;
    mc_error err = {0};
    assert_int_equal(mc_json_decode(&common__v1__stamp__descriptor, "{\"tick\":\"1\"}garbage", 12,
                                    &m, &err),
                     MC_OK);
    assert_int_equal(((Common__V1__Stamp *)m)->tick, 1);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_rejects_too_deep(void **state)
{
    (void)state;
    /* 70 nested trees: deeper than the default bound of 64. */
    char json[1024] = "";
    for (int i = 0; i < 70; i++)
        strcat(json, "{\"child\":");
    strcat(json, "{}");
    for (int i = 0; i < 70; i++)
        strcat(json, "}");
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    mc_error err = {0};
    assert_int_equal(mc_json_decode(&mcjsontest__v1__tree__descriptor, json, strlen(json), &m, &err),
                     MC_ERR_INVALID);
    assert_null(m);
    assert_non_null(strstr(err.msg, ": message nesting is deeper than 64"));
    assert_int_equal(strncmp(err.msg, "$.child.child.child.", 20), 0);

    /* 64 levels are fine. */
    json[0] = '\0';
    for (int i = 0; i < 64; i++)
        strcat(json, "{\"child\":");
    strcat(json, "{}");
    for (int i = 0; i < 64; i++)
        strcat(json, "}");
    m = decode_ok(&mcjsontest__v1__tree__descriptor, json, NULL);
    /* Encoding with a lower bound fails the same way. */
    mc_json_options low = {.max_depth = 10};
    char *text = NULL;
    assert_int_equal(mc_json_encode_ex(m, &low, &text, NULL, &err), MC_ERR_INVALID);
    assert_null(text);
    assert_non_null(strstr(err.msg, ": message nesting is deeper than 10"));
    roundtrip(m, NULL);
    protobuf_c_message_free_unpacked(m, NULL);

    /* The bound applies at the path where it is crossed. */
    mc_json_options one = {.max_depth = 1};
    m = (ProtobufCMessage *)1;
    const char *hist = "{\"actions\":[{\"stamp\":{\"tick\":\"1\"}}]}";
    assert_int_equal(mc_json_decode_ex(&ops__v1__get_action_history_response__descriptor, hist,
                                       strlen(hist), &one, &m, &err),
                     MC_ERR_INVALID);
    assert_null(m);
    assert_string_equal(err.msg, "$.actions[0].stamp: message nesting is deeper than 1");
}

static void test_encode_rejects_invalid_utf8(void **state)
{
    (void)state;
    Common__V1__Stamp s = COMMON__V1__STAMP__INIT;
    s.run_id = "ok";
    s.producer = "bad \xc3\x28 byte";
    char *text = (char *)1;
    mc_error err = {0};
    assert_int_equal(mc_json_encode(&s.base, &text, NULL, &err), MC_ERR_INVALID);
    assert_null(text);
    assert_string_equal(err.msg, "$.producer: string is not valid UTF-8");

    Sim__V1__MetricSample__LabelsEntry l = SIM__V1__METRIC_SAMPLE__LABELS_ENTRY__INIT;
    l.key = "\xed\xa0\x80"; /* a UTF-16 surrogate */
    l.value = "v";
    Sim__V1__MetricSample__LabelsEntry *labels[] = {&l};
    Sim__V1__MetricSample ms = SIM__V1__METRIC_SAMPLE__INIT;
    ms.n_labels = 1;
    ms.labels = labels;
    assert_int_equal(mc_json_encode(&ms.base, &text, NULL, &err), MC_ERR_INVALID);
    assert_string_equal(err.msg, "$.labels: map key is not valid UTF-8");
}

static void test_null_arguments(void **state)
{
    (void)state;
    mc_error err = {0};
    ProtobufCMessage *m = NULL;
    assert_int_equal(mc_json_decode(NULL, "{}", 2, &m, &err), MC_ERR_INVALID);
    assert_int_equal(mc_json_decode(&common__v1__stamp__descriptor, "{}", 2, NULL, &err),
                     MC_ERR_INVALID);
    assert_int_equal(mc_json_to_message(&common__v1__stamp__descriptor, NULL, &m, NULL),
                     MC_ERR_INVALID);
    char *text = NULL;
    assert_int_equal(mc_json_encode(NULL, &text, NULL, &err), MC_ERR_INVALID);
    assert_null(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_proto_type),
        cmocka_unit_test(test_roundtrip_test_types),
        cmocka_unit_test(test_action_exact_text),
        cmocka_unit_test(test_snapshot_exact_text),
        cmocka_unit_test(test_bytes_and_oneof_text),
        cmocka_unit_test(test_accepts_both_name_styles),
        cmocka_unit_test(test_accepts_other_forms),
        cmocka_unit_test(test_rejects_wrong_types),
        cmocka_unit_test(test_rejects_unknown_and_duplicate_fields),
        cmocka_unit_test(test_rejects_bad_enums),
        cmocka_unit_test(test_rejects_out_of_range),
        cmocka_unit_test(test_rejects_bad_base64),
        cmocka_unit_test(test_rejects_bad_json),
        cmocka_unit_test(test_rejects_too_deep),
        cmocka_unit_test(test_encode_rejects_invalid_utf8),
        cmocka_unit_test(test_null_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
