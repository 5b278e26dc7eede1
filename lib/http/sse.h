/* Server-Sent Events (text/event-stream) and a broadcast hub.
 *
 * A stream takes over the connection of a GET request: the response head
 * is sent at once and events follow as `id:`, `event:` and `data:` lines
 * (data split on every line break, so multi-line data arrives intact), with
 * a `: ping` comment every sse_heartbeat_ms so proxies and browsers keep
 * the connection. A client that does not read is never allowed to block
 * the loop or grow memory: when the bytes the socket has not taken pass
 * sse_max_unsent_bytes (server config) the stream is closed and counted as
 * a slow-client disconnect. Server shutdown closes every stream.
 *
 * The hub fans each published event out to all its subscribers and keeps a
 * bounded ring of recent events. A client reconnecting with Last-Event-ID
 * gets the events it missed; when that id is older than the ring (or from
 * another run of the server, or unreadable) it gets one `reset` event
 * instead and should reload its state. Ids are "<epoch>-<seq>": the epoch
 * is random per hub, so ids of a previous process are recognised as
 * foreign.
 *
 * Everything here runs on the loop thread (publish from other threads by
 * handing the event to the loop first). */
#ifndef MC_HTTP_SSE_H
#define MC_HTTP_SSE_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "status/status.h"

typedef struct mc_http_sse mc_http_sse;

/* Called once when the stream ends (client gone, too slow, closed,
 * shutdown). The stream is freed right after: do not use it again. */
typedef void (*mc_http_sse_close_fn)(mc_http_sse *s, void *ctx);

/* Answers req with 200 text/event-stream and returns the stream; req is
 * released. MC_ERR_UNAVAILABLE (and *out NULL) when the client is gone
 * or the server is shutting down (it then answered 503). on_close may be
 * NULL. */
mc_status mc_http_sse_start(mc_http_request *req, mc_http_sse_close_fn on_close, void *ctx,
                            mc_http_sse **out);

/* Sends one event. id and event may be NULL; they must not contain CR, LF
 * or NUL (MC_ERR_INVALID). data may be empty. MC_ERR_UNAVAILABLE when the
 * stream closed during the call (too slow: on_close ran, s is gone). */
mc_status mc_http_sse_send(mc_http_sse *s, const char *id, const char *event, const char *data,
                           size_t len);
/* Sends a comment line (": text"). */
mc_status mc_http_sse_comment(mc_http_sse *s, const char *text);
/* Closes the stream; on_close runs. */
void mc_http_sse_close(mc_http_sse *s);

/* Formats one event as it goes on the wire; *out is malloc'd and
 * NUL-terminated (*out_len excludes the NUL). */
mc_status mc_http_sse_format(const char *id, const char *event, const char *data, size_t len,
                             char **out, size_t *out_len);

/* ---- Broadcast hub ---- */

typedef struct mc_http_sse_hub mc_http_sse_hub;

typedef struct mc_http_sse_hub_options {
    size_t ring_events;     /* recent events kept for resume [1024] */
    size_t ring_bytes;      /* and their formatted size at most [1 MiB] */
    size_t max_subscribers; /* beyond: 503 [1024] */
    uint32_t epoch;         /* id epoch; 0 picks a random one */
} mc_http_sse_hub_options;

mc_status mc_http_sse_hub_new(const mc_http_sse_hub_options *opt, mc_http_sse_hub **out,
                              mc_error *err);
/* Closes every subscriber and frees the hub. NULL-safe. */
void mc_http_sse_hub_free(mc_http_sse_hub *hub);

/* Appends an event to the ring and sends it to every subscriber; slow
 * subscribers are dropped on the way. event must not contain CR/LF. The
 * id given is written to *id_out when not NULL (at least 32 bytes). */
mc_status mc_http_sse_hub_publish(mc_http_sse_hub *hub, const char *event, const char *data,
                                  size_t len, char *id_out);

/* Starts a stream on req and subscribes it, replaying after the request's
 * Last-Event-ID header (or sending `reset`, see above). 503 beyond
 * max_subscribers. */
mc_status mc_http_sse_hub_subscribe(mc_http_sse_hub *hub, mc_http_request *req);

size_t mc_http_sse_hub_subscriber_count(const mc_http_sse_hub *hub);
/* Route handler: ctx is the hub. */
void mc_http_sse_hub_handler(mc_http_request *req, void *ctx);

#endif
