/* Structured logging to stderr (or any FILE), one line per record.
 *
 * LOG_FORMAT=json writes one JSON object per line with ts, level, service,
 * msg and the record's key/value fields; LOG_FORMAT=text writes
 * "ts LEVEL service msg key=value ...". Records below LOG_LEVEL are dropped.
 * Safe to call from any thread: each record is formatted into a local buffer
 * and written with one locked write, so lines never interleave.
 *
 *     MC_LOG_INFO("connected", MC_LF_STR("url", url), MC_LF_INT("port", 4222));
 */
#ifndef MC_LOG_LOG_H
#define MC_LOG_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "status/status.h"

typedef enum mc_log_level {
    MC_LOG_DEBUG = 0,
    MC_LOG_INFO = 1,
    MC_LOG_WARN = 2,
    MC_LOG_ERROR = 3
} mc_log_level;

typedef enum mc_log_format { MC_LOG_FORMAT_JSON = 0, MC_LOG_FORMAT_TEXT = 1 } mc_log_format;

typedef enum mc_log_field_type {
    MC_LF_T_NONE = 0,
    MC_LF_T_STR,
    MC_LF_T_INT,
    MC_LF_T_UINT,
    MC_LF_T_DOUBLE,
    MC_LF_T_BOOL
} mc_log_field_type;

/* One key/value field of a record. Strings are borrowed for the call. */
typedef struct mc_log_field {
    const char *key;
    mc_log_field_type type;
    union {
        const char *s;
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
} mc_log_field;

#define MC_LF_STR(k, x) ((mc_log_field){.key = (k), .type = MC_LF_T_STR, .v.s = (x)})
#define MC_LF_INT(k, x) ((mc_log_field){.key = (k), .type = MC_LF_T_INT, .v.i = (int64_t)(x)})
#define MC_LF_UINT(k, x) ((mc_log_field){.key = (k), .type = MC_LF_T_UINT, .v.u = (uint64_t)(x)})
#define MC_LF_DOUBLE(k, x) ((mc_log_field){.key = (k), .type = MC_LF_T_DOUBLE, .v.d = (double)(x)})
#define MC_LF_BOOL(k, x) ((mc_log_field){.key = (k), .type = MC_LF_T_BOOL, .v.b = (bool)(x)})

/* Configures the process-wide logger. service is copied. out NULL means
 * stderr. May be called again (tests do); not concurrently with logging. */
void mc_log_init(const char *service, mc_log_level level, mc_log_format format, FILE *out);

/* Parses "debug|info|warn|error" (and "warning"); MC_ERR_INVALID otherwise. */
mc_status mc_log_level_parse(const char *s, mc_log_level *out);
/* Parses "json|text"; MC_ERR_INVALID otherwise. */
mc_status mc_log_format_parse(const char *s, mc_log_format *out);
const char *mc_log_level_name(mc_log_level level);

/* True when records of this level are written. */
bool mc_log_enabled(mc_log_level level);

/* Writes one record with n fields. msg and fields are escaped as needed. */
void mc_log_emit(mc_log_level level, const char *msg, const mc_log_field *fields, size_t n);

/* The leading {0} element makes the array non-empty when no field is given;
 * it is skipped. */
#define MC_LOG(level, msg, ...)                                                                    \
    mc_log_emit((level), (msg), ((const mc_log_field[]){{0}, __VA_ARGS__}) + 1,                    \
                sizeof((const mc_log_field[]){{0}, __VA_ARGS__}) / sizeof(mc_log_field) - 1)
#define MC_LOG_DEBUG(msg, ...) MC_LOG(MC_LOG_DEBUG, msg, __VA_ARGS__)
#define MC_LOG_INFO(msg, ...) MC_LOG(MC_LOG_INFO, msg, __VA_ARGS__)
#define MC_LOG_WARN(msg, ...) MC_LOG(MC_LOG_WARN, msg, __VA_ARGS__)
#define MC_LOG_ERROR(msg, ...) MC_LOG(MC_LOG_ERROR, msg, __VA_ARGS__)

#endif
