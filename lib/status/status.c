#include "status/status.h"

#include <stdio.h>
#include <string.h>

const char *mc_status_name(mc_status st)
{
    switch (st) {
    case MC_OK: return "ok";
    case MC_ERR_INVALID: return "invalid";
    case MC_ERR_NOMEM: return "out_of_memory";
    case MC_ERR_IO: return "io";
    case MC_ERR_NOT_FOUND: return "not_found";
    case MC_ERR_EXISTS: return "exists";
    case MC_ERR_RANGE: return "out_of_range";
    case MC_ERR_STATE: return "bad_state";
    case MC_ERR_LIMIT: return "limit";
    case MC_ERR_TIMEOUT: return "timeout";
    case MC_ERR_UNAVAILABLE: return "unavailable";
    case MC_ERR_PARSE: return "parse";
    case MC_ERR_CORRUPT: return "corrupt";
    case MC_ERR_UNSUPPORTED: return "unsupported";
    case MC_ERR_INTERNAL: return "internal";
    }
    return "unknown";
}

mc_status mc_error_vset(mc_error *err, mc_status st, const char *fmt, va_list ap)
{
    if (err == NULL)
        return st;
    err->status = st;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    return st;
}

mc_status mc_error_set(mc_error *err, mc_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mc_error_vset(err, st, fmt, ap);
    va_end(ap);
    return st;
}

mc_status mc_error_wrap(mc_error *err, const char *fmt, ...)
{
    if (err == NULL)
        return MC_ERR_INTERNAL;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
    return err->status;
}

void mc_error_clear(mc_error *err)
{
    if (err == NULL)
        return;
    err->status = MC_OK;
    err->msg[0] = '\0';
}
