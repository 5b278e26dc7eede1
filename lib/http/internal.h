/* Private interface between the files of lib/http (not installed, not for
 * services): streaming responses for SSE, shared write buffers, the bearer
 * token and server-owned cleanups. */
#ifndef MC_HTTP_INTERNAL_H
#define MC_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/server.h"

/* A reference-counted byte buffer, so one SSE event is formatted once and
 * written to every subscriber without a copy each. */
typedef struct mc_http_blob {
    size_t refs;
    size_t len;
    uint8_t data[];
} mc_http_blob;

mc_http_blob *mc_http__blob_new(const void *data, size_t len);
void mc_http__blob_unref(mc_http_blob *b);

/* Callbacks of a streaming response (SSE). on_close is called once when
 * the connection closes for any reason; the stream must not touch the
 * connection after it. on_tick is called every tick_ms while open. */
typedef struct mc_http_stream_ops {
    void (*on_close)(void *stream);
    void (*on_tick)(void *stream);
} mc_http_stream_ops;

/* Answers req with a response head without Content-Length (the body lasts
 * until the connection closes), releases req and hands the connection to
 * the stream. Reads from then on are discarded, timeouts no longer apply.
 * Returns NULL (and releases req) when the connection is already gone. */
mc_http_conn *mc_http__stream_begin(mc_http_request *req, int status, const char *content_type,
                                    const mc_http_stream_ops *ops, void *stream,
                                    uint64_t tick_ms);
/* Queues bytes on a streaming connection (the blob gains a reference).
 * When the unsent bytes would pass max_unsent the connection is closed
 * instead (on_close runs) and false is returned; the close is counted as a
 * slow-client disconnect. */
bool mc_http__stream_write(mc_http_conn *conn, mc_http_blob *b, size_t max_unsent);
/* Closes a connection; on_close of its stream runs. */
void mc_http__conn_close(mc_http_conn *conn);
/* Bytes handed to the socket and not yet written out. */
size_t mc_http__conn_queued(const mc_http_conn *conn);

const mc_http_server_config *mc_http__server_config(const mc_http_server *srv);
/* The configured bearer token or NULL; its length in *len. */
const char *mc_http__server_token(const mc_http_server *srv, size_t *len);
/* Calls fn(ptr) when the server is freed (owned route contexts). */
mc_status mc_http__server_on_free(mc_http_server *srv, void (*fn)(void *), void *ptr);

#endif
