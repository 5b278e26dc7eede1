/* A field-level diff of two recorded messages of one subject: both are
 * decoded (subjects.h) and turned into proto3 JSON (lib/json, with default
 * values printed so a field that went to zero shows), then compared
 * path by path. Floats are shown as %a and as decimal, since two doubles can
 * print alike in decimal and still differ in their last bit. */
#ifndef MC_HARNESS_MSGDIFF_H
#define MC_HARNESS_MSGDIFF_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Returns a new JSON array of at most max_diffs entries
 *   {"path": "$.samples[3].metricValue", "expected": V, "actual": V,
 *    "expectedHex": "0x1.8p+3", "actualHex": ...}   (hex for numbers only)
 * with "expected"/"actual" left out where the side has no such field. A
 * payload that does not decode gives one entry with path "$" and the
 * reason. Either side may be NULL (a missing message). */
json_t *mc_msgdiff(const char *subject, const uint8_t *expected, size_t expected_len,
                   const uint8_t *actual, size_t actual_len, size_t max_diffs);

/* Prints the entries one per line, each after prefix, naming the sides
 * with the two labels (e.g. "recorded"/"got", "A"/"B"). */
void mc_msgdiff_print(const json_t *diffs, FILE *f, const char *prefix, const char *label_expected,
                      const char *label_actual);

/* The message as proto3 JSON (new reference), or NULL when it does not
 * decode. */
json_t *mc_msg_to_json(const char *subject, const uint8_t *payload, size_t len);

#endif
