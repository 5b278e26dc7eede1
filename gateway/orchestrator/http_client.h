/* A small HTTP/1.1 client on libuv, for the orchestrator's calls to the
 * simulation engine (the Connect unary SimulationService).
 *
 * One request per connection (Connection: close), so there is no pool to
 * manage and a slow or broken engine cannot poison later calls. The host
 * name is resolved with uv_getaddrinfo (on libuv's thread pool), then every
 * address is tried in turn with uv_tcp_connect; the response is parsed by
 * llhttp in response mode. A timer bounds the whole exchange (resolve,
 * connect, write, read): when it fires the request fails with
 * MC_ERR_TIMEOUT. Nothing blocks the loop.
 *
 * Everything runs on the loop thread: start requests there, and the done
 * callback is called there, exactly once per started request. */
#ifndef MC_ORCH_HTTP_CLIENT_H
#define MC_ORCH_HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "status/status.h"

/* A parsed base URL: "http://host[:port][/prefix]". https is refused. */
typedef struct mc_hc_target {
    char host[256];
    uint16_t port;
    char prefix[256]; /* path prefix without a trailing '/', "" for none */
} mc_hc_target;

/* Parses url into t. MC_ERR_INVALID names what is wrong. */
mc_status mc_hc_target_parse(const char *url, mc_hc_target *t, mc_error *err);

/* A request header to send (name and value copied when the request starts). */
typedef struct mc_hc_header {
    const char *name;
    const char *value;
} mc_hc_header;

/* The response, valid during the done callback only. */
typedef struct mc_hc_response {
    int status;
    const char *content_type; /* "" when absent */
    const uint8_t *body;
    size_t len;
} mc_hc_response;

/* st is MC_OK with resp set, or MC_ERR_UNAVAILABLE (cannot resolve or
 * connect, or the connection broke), MC_ERR_TIMEOUT, MC_ERR_PARSE (not an
 * HTTP response), MC_ERR_LIMIT (response larger than the bound); error is
 * one line saying what happened (never NULL). */
typedef void (*mc_hc_done_fn)(void *ctx, mc_status st, const mc_hc_response *resp,
                              const char *error);

/* Largest response body accepted. */
#define MC_HC_MAX_RESPONSE_BYTES (8u << 20)

/* Starts `method path` against t (the target's prefix is put before path),
 * with the headers given (Host, Content-Length and Connection are added)
 * and body (copied; may be NULL with len 0). timeout_ms bounds the whole
 * exchange (0: 5 s). On MC_OK the done callback will be called exactly
 * once, later (never from inside this call). On an error return it is not
 * called. */
mc_status mc_hc_request(uv_loop_t *loop, const mc_hc_target *t, const char *method,
                        const char *path, const mc_hc_header *headers, size_t n_headers,
                        const void *body, size_t len, uint64_t timeout_ms, mc_hc_done_fn done,
                        void *ctx, mc_error *err);

#endif
