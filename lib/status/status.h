/* Status codes and error context shared by every module.
 *
 * Functions return an mc_status; when they can fail for a reason worth
 * telling a person, they also take an `mc_error *err` (which may be NULL)
 * and fill it with one line of context. The shell that finally handles the
 * error logs that line once. */
#ifndef MC_STATUS_STATUS_H
#define MC_STATUS_STATUS_H

#include <stdarg.h>
#include <stddef.h>

typedef enum mc_status {
    MC_OK = 0,
    MC_ERR_INVALID,     /* bad argument or input (a config value, a message) */
    MC_ERR_NOMEM,       /* allocation failed */
    MC_ERR_IO,          /* a system call or file operation failed */
    MC_ERR_NOT_FOUND,   /* the thing asked for does not exist */
    MC_ERR_EXISTS,      /* the thing to create exists already */
    MC_ERR_RANGE,       /* a value is out of its allowed range */
    MC_ERR_STATE,       /* the operation is not allowed in the current state */
    MC_ERR_LIMIT,       /* a bound (queue, buffer, count) was reached */
    MC_ERR_TIMEOUT,     /* a wait ran out of time */
    MC_ERR_UNAVAILABLE, /* a server or dependency cannot be reached */
    MC_ERR_PARSE,       /* input could not be parsed */
    MC_ERR_CORRUPT,     /* stored data failed an integrity check */
    MC_ERR_UNSUPPORTED, /* a version or feature this build does not handle */
    MC_ERR_INTERNAL     /* a bug: an invariant did not hold */
} mc_status;

/* Context of the last failure: the status and one human-readable line. */
typedef struct mc_error {
    mc_status status;
    char msg[512];
} mc_error;

/* Short stable name of a status, e.g. "invalid". Never NULL. */
const char *mc_status_name(mc_status st);

/* Sets *err (when err is not NULL) to st and the printf-formatted message,
 * truncated to fit. Returns st, so a failure path reads
 * `return mc_error_set(err, MC_ERR_INVALID, "DB_PORT=%s: ...", v);`. */
mc_status mc_error_set(mc_error *err, mc_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
mc_status mc_error_vset(mc_error *err, mc_status st, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Prepends "prefix: " to err's message, keeping its status; returns it. */
mc_status mc_error_wrap(mc_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clears err to MC_OK with an empty message. NULL-safe. */
void mc_error_clear(mc_error *err);

#endif
