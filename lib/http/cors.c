/* CORS allow-list: see cors.h. */
#include "http/cors.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/server.h"

#define MAX_ORIGINS 64

struct mc_http_cors {
    bool any;
    size_t n;
    char *origins[MAX_ORIGINS];
};

void mc_http_cors_free(mc_http_cors *cors)
{
    if (cors == NULL)
        return;
    for (size_t i = 0; i < cors->n; i++)
        free(cors->origins[i]);
    free(cors);
}

/* scheme://host[:port] with nothing after (no path, query or userinfo). */
static bool origin_ok(const char *o)
{
    const char *p = strstr(o, "://");
    if (p == NULL || p == o)
        return false;
    for (const char *s = o; s < p; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '+' || *s == '-' ||
              *s == '.'))
            return false;
    p += 3;
    if (*p == '\0')
        return false;
    for (; *p; p++)
        if (*p == '/' || *p == '?' || *p == '#' || *p == '@' || *p == ' ' || *p == ',')
            return false;
    return true;
}

mc_status mc_http_cors_new(const char *origins_csv, mc_http_cors **out, mc_error *err)
{
    *out = NULL;
    mc_http_cors *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "cors: out of memory");
    const char *s = origins_csv ? origins_csv : "";
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (*s == '\0')
            break;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        size_t n = (size_t)(e - s);
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n > 0 && s[n - 1] == '/')
            n--;
        char *o = strndup(s, n);
        if (o == NULL) {
            mc_http_cors_free(c);
            return mc_error_set(err, MC_ERR_NOMEM, "cors: out of memory");
        }
        if (strcmp(o, "*") == 0) {
            c->any = true;
            free(o);
        } else if (!origin_ok(o)) {
            mc_error_set(err, MC_ERR_INVALID,
                         "CORS_ORIGINS: \"%s\" is not an origin (scheme://host[:port])", o);
            free(o);
            mc_http_cors_free(c);
            return MC_ERR_INVALID;
        } else if (c->n >= MAX_ORIGINS) {
            free(o);
            mc_http_cors_free(c);
            return mc_error_set(err, MC_ERR_LIMIT, "CORS_ORIGINS: more than %d origins",
                                MAX_ORIGINS);
        } else {
            c->origins[c->n++] = o;
        }
        s = e;
    }
    *out = c;
    return MC_OK;
}

bool mc_http_cors_origin_allowed(const mc_http_cors *cors, const char *origin)
{
    if (cors == NULL || origin == NULL || origin[0] == '\0')
        return false;
    if (cors->any)
        return true;
    /* Scheme and host are case-insensitive; browsers send them lower-case. */
    for (size_t i = 0; i < cors->n; i++)
        if (strcasecmp(cors->origins[i], origin) == 0)
            return true;
    return false;
}

bool mc_http_cors_handle(const mc_http_cors *cors, struct mc_http_request *req)
{
    const char *origin = mc_http_request_header(req, "Origin");
    bool allowed = mc_http_cors_origin_allowed(cors, origin);
    bool preflight = mc_http_request_method_bit(req) == MC_HTTP_OPTIONS && origin != NULL &&
                     mc_http_request_header(req, "Access-Control-Request-Method") != NULL;
    if (preflight) {
        mc_http_response_header_add(req, "Vary",
                                    "Origin, Access-Control-Request-Method, "
                                    "Access-Control-Request-Headers");
        if (allowed) {
            mc_http_response_header_add(req, "Access-Control-Allow-Origin", origin);
            mc_http_response_header_add(req, "Access-Control-Allow-Methods",
                                        MC_HTTP_CORS_ALLOW_METHODS);
            mc_http_response_header_add(req, "Access-Control-Allow-Headers",
                                        MC_HTTP_CORS_ALLOW_HEADERS);
            mc_http_response_header_add(req, "Access-Control-Max-Age", "7200");
        }
        mc_http_respond(req, 204, NULL, NULL, 0);
        return true;
    }
    mc_http_response_header_add(req, "Vary", "Origin");
    if (allowed)
        mc_http_response_header_add(req, "Access-Control-Allow-Origin", origin);
    return false;
}
