/* The dashboard feed behind GET /api/stream (CONTRACTS.md, "SSE stream").
 *
 * Every event gets the next decimal id (increasing by 1) and goes to every
 * connected client and into a bounded history (count and bytes). lib/http's
 * SSE hub is not used for this: its ids are "<epoch>-<seq>" and it cannot
 * send a per-connection snapshot first, both of which the contract needs;
 * the feed is built on the same lib/http SSE streams (mc_http_sse_start /
 * mc_http_sse_send), so heartbeats and the slow-client cut-off
 * (sse_max_unsent_bytes) are lib/http's.
 *
 * Ids. The first id of a process is id_base + 1, where id_base is chosen at
 * start (the orchestrator uses the wall clock in milliseconds times 1000),
 * so an id from an earlier process is always below this process's history
 * and is answered with `reset`, never mistaken for a recent id.
 *
 * A connection gets, in order:
 *   - no Last-Event-ID (header or ?last_event_id=): `snapshot` with id = the
 *     last id published (the state it shows includes every event up to it),
 *     then live events;
 *   - a Last-Event-ID still in the history: `snapshot` (without an id, so the
 *     client's resume point does not move), then every event after that id
 *     in order (the missed decisions and engine events, which a snapshot
 *     does not carry), then live events;
 *   - a Last-Event-ID that is older than the history, newer than the last
 *     id, or not a number: `reset` {"reason": ...}, then `snapshot` with the
 *     last id, then live events.
 * Everything runs on the loop thread. */
#ifndef MC_ORCH_FEED_H
#define MC_ORCH_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "status/status.h"

typedef struct mc_feed mc_feed;

/* Builds the snapshot JSON (one line, malloc'd) for a new connection. */
typedef mc_status (*mc_feed_snapshot_fn)(void *ctx, char **json, size_t *len);

typedef struct mc_feed_options {
    size_t history_events; /* events kept for resume [1024] */
    size_t history_bytes;  /* and their size at most [4 MiB] */
    size_t max_clients;    /* beyond: 503 [1024] */
    uint64_t id_base;      /* the first event gets id_base + 1 */
} mc_feed_options;

mc_status mc_feed_new(const mc_feed_options *opt, mc_feed_snapshot_fn snapshot, void *ctx,
                      mc_feed **out, mc_error *err);
/* Closes every client and frees the feed. NULL-safe. */
void mc_feed_free(mc_feed *f);

/* Sends an event (type without CR/LF, data one line) to every client and
 * keeps it in the history. */
mc_status mc_feed_publish(mc_feed *f, const char *event, const char *data, size_t len);

/* Takes over req as a stream (see above). last_event_id may be NULL (then
 * the Last-Event-ID header is used). */
void mc_feed_subscribe(mc_feed *f, mc_http_request *req, const char *last_event_id);

/* Closes every client stream (shutdown). */
void mc_feed_close_all(mc_feed *f);

size_t mc_feed_clients(const mc_feed *f);
uint64_t mc_feed_last_id(const mc_feed *f);
/* Events published so far, and resets sent. */
uint64_t mc_feed_published(const mc_feed *f);
uint64_t mc_feed_resets(const mc_feed *f);

#endif
