/* CORS for an allow-list of origins (the CORS_ORIGINS setting).
 *
 * Attached to a server with mc_http_server_set_cors, it runs before
 * routing: a preflight (OPTIONS with Origin and
 * Access-Control-Request-Method) is answered 204 — with the allow headers
 * when the origin is on the list, without any CORS header otherwise — and
 * every other request from an allowed origin gets Access-Control-Allow-Origin
 * on its response. Responses always carry Vary: Origin so a cache never
 * serves one origin's answer to another. */
#ifndef MC_HTTP_CORS_H
#define MC_HTTP_CORS_H

#include <stdbool.h>

#include "status/status.h"

typedef struct mc_http_cors mc_http_cors;
struct mc_http_request;

/* Headers a browser may send cross-origin (the preflight allow list). */
#define MC_HTTP_CORS_ALLOW_HEADERS                                                                 \
    "Authorization, Content-Type, Connect-Protocol-Version, Connect-Timeout-Ms, Last-Event-ID"
#define MC_HTTP_CORS_ALLOW_METHODS "GET, HEAD, POST, OPTIONS"

/* origins_csv: comma-separated origins such as
 * "http://localhost:3000,https://ops.example.com" (spaces around commas are
 * ignored, a trailing '/' is dropped); "*" allows any origin. NULL or ""
 * allows none. MC_ERR_INVALID for an entry that is not
 * scheme://host[:port]. */
mc_status mc_http_cors_new(const char *origins_csv, mc_http_cors **out, mc_error *err);
void mc_http_cors_free(mc_http_cors *cors);

bool mc_http_cors_origin_allowed(const mc_http_cors *cors, const char *origin);

/* Applies CORS to req: adds the response headers, and answers a preflight
 * (returns true: req is released). Returns false when the request should
 * go on to routing. */
bool mc_http_cors_handle(const mc_http_cors *cors, struct mc_http_request *req);

#endif
