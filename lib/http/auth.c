/* Bearer tokens: see auth.h. */
#include "http/auth.h"

#include <sodium.h>
#include <string.h>
#include <strings.h>

#include "http/internal.h"
#include "http/server.h"

bool mc_http_auth_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char ha[32], hb[32];
    crypto_generichash(ha, sizeof ha, (const unsigned char *)a, alen, NULL, 0);
    crypto_generichash(hb, sizeof hb, (const unsigned char *)b, blen, NULL, 0);
    /* Equal digests of different lengths would be a BLAKE2b collision; the
     * length test comes after the constant-time compare so it adds no
     * early exit on content. */
    int same = sodium_memcmp(ha, hb, sizeof ha);
    return same == 0 && alen == blen;
}

mc_http_auth_result mc_http_auth_bearer_check(const struct mc_http_request *req,
                                              const char *expected, size_t len)
{
    const char *h = mc_http_request_header(req, "Authorization");
    if (h == NULL)
        return MC_HTTP_AUTH_MISSING;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return MC_HTTP_AUTH_MISSING;
    h += 6;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n > 0 && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    if (n == 0)
        return MC_HTTP_AUTH_MISSING;
    if (expected == NULL || len == 0)
        return MC_HTTP_AUTH_INVALID;
    return mc_http_auth_token_equal(h, n, expected, len) ? MC_HTTP_AUTH_OK : MC_HTTP_AUTH_INVALID;
}

mc_http_auth_result mc_http_request_check_bearer(const struct mc_http_request *req)
{
    size_t len = 0;
    const mc_http_server *srv = mc_http_request_server(req);
    if (srv == NULL)
        return MC_HTTP_AUTH_INVALID; /* the server is gone: refuse */
    const char *tok = mc_http__server_token(srv, &len);
    return mc_http_auth_bearer_check(req, tok, len);
}
