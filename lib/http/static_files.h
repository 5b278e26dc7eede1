/* Static files from a directory (the dashboard's exported build).
 *
 * Route it as a prefix route, usually the catch-all:
 *     mc_http_server_route_prefix(srv, MC_HTTP_GET | MC_HTTP_HEAD, "/",
 *                                 mc_http_static_handler, st, err);
 *
 * A request path is percent-decoded and resolved inside the root: "/x/"
 * and directories serve their index.html, "/foo" falls back to
 * "/foo.html" (what a Next.js static export emits). Anything that could
 * leave the root is a 404: ".." or "." segments (also percent-encoded),
 * encoded slashes or backslashes (%2f, %5c), NUL bytes, dotfiles, and
 * symlinks whose target is outside the root (every candidate goes through
 * realpath and a prefix check).
 *
 * Responses carry the content type for the extension, an ETag and
 * Last-Modified (If-None-Match / If-Modified-Since give 304), and
 * Cache-Control: "public, max-age=31536000, immutable" under the
 * immutable prefix (content-hashed assets, /_next/static/), "no-cache"
 * for everything else (HTML must be revalidated). A missing file serves
 * the root's 404.html with status 404 when there is one.
 *
 * Files are read with plain blocking reads on the loop thread, bounded by
 * max_file_bytes: meant for a small local build output that sits in the
 * page cache, not for large or remote files. */
#ifndef MC_HTTP_STATIC_FILES_H
#define MC_HTTP_STATIC_FILES_H

#include <stddef.h>

#include "status/status.h"

typedef struct mc_http_static mc_http_static;
struct mc_http_request;

typedef struct mc_http_static_options {
    size_t max_file_bytes;        /* larger files get 500 [32 MiB] */
    const char *immutable_prefix; /* URL prefix of hashed assets ["/_next/static/"] */
} mc_http_static_options;

/* root must be an existing directory; it is resolved with realpath once.
 * opt may be NULL. */
mc_status mc_http_static_new(const char *root, const mc_http_static_options *opt,
                             mc_http_static **out, mc_error *err);
void mc_http_static_free(mc_http_static *st);

/* Route handler; ctx is the mc_http_static. */
void mc_http_static_handler(struct mc_http_request *req, void *ctx);

/* Resolves a request path (as sent, percent-encoded, without query) to the
 * real path of a regular file inside the root. MC_ERR_NOT_FOUND for
 * anything missing or refused, MC_ERR_LIMIT when out is too small. */
mc_status mc_http_static_resolve(const mc_http_static *st, const char *url_path, char *out,
                                 size_t cap);

/* The Content-Type for a file name by its extension. Never NULL. */
const char *mc_http_static_content_type(const char *name);

#endif
