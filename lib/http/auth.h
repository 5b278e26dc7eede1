/* Bearer-token authentication: `Authorization: Bearer <token>`.
 *
 * The comparison takes the same time whatever the presented token is: both
 * tokens are hashed (BLAKE2b-256) and the digests compared with
 * sodium_memcmp, so neither the content nor the length of the expected
 * token leaks through timing. Tokens are never logged. */
#ifndef MC_HTTP_AUTH_H
#define MC_HTTP_AUTH_H

#include <stdbool.h>
#include <stddef.h>

struct mc_http_request;

typedef enum mc_http_auth_result {
    MC_HTTP_AUTH_OK = 0,
    MC_HTTP_AUTH_MISSING, /* no Authorization header, or not the Bearer scheme */
    MC_HTTP_AUTH_INVALID  /* a bearer token that does not match (or none is configured) */
} mc_http_auth_result;

/* Checks req against the expected token (len bytes). An empty or NULL
 * expected token refuses everything. */
mc_http_auth_result mc_http_auth_bearer_check(const struct mc_http_request *req,
                                              const char *expected, size_t len);

/* The same against the server's token (mc_http_server_set_bearer_token). */
mc_http_auth_result mc_http_request_check_bearer(const struct mc_http_request *req);

/* Compares two byte strings in time independent of their content. */
bool mc_http_auth_token_equal(const char *a, size_t alen, const char *b, size_t blen);

#endif
