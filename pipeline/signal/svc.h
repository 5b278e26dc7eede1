/* Shell helpers shared by the pipeline services (signal-service and
 * agent-service): the parts of a service that are the same in both and hold
 * no decision logic.
 *
 *  - mc_svc_held: consumed messages kept unacked until the work they fed is
 *    durable (a database commit, a closed tick whose outputs are published),
 *    then acked in stream order.
 *  - mc_svc_lane: a FIFO of blocking jobs (libpq, publish-and-flush) run one
 *    at a time on the libuv thread pool, each with its own completion on
 *    the loop thread. One lane owns one mc_store, which is not thread-safe;
 *    running its jobs one at a time is what makes that safe.
 *  - mc_svc_admin: the admin HTTP port (GET /health, /ready, /metrics) and
 *    the readiness probe (NATS: the streams answer; PostgreSQL: a query
 *    answers), probed from the thread pool every few seconds.
 *  - mc_svc_publish_outbox: publishes a core's outbox with its stamps and
 *    waits until JetStream stored every message, retrying with the same
 *    message ids (server-side de-duplication makes the retry harmless).
 *
 * Threading: everything here is called on the loop thread except the lane
 * job's work function (a pool thread) and mc_svc_publish_outbox (a pool
 * thread: mc_bus_flush may not run on the loop thread). */
#ifndef MC_PIPELINE_SIGNAL_SVC_H
#define MC_PIPELINE_SIGNAL_SVC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "bus/bus.h"
#include "config/config.h"
#include "core/outbox.h"
#include "http/metrics.h"
#include "http/server.h"
#include "status/status.h"
#include "store/store.h"

/* ---- Held messages ---- */

typedef struct mc_svc_held_entry mc_svc_held_entry;

/* Batches handed over by a consumer and not yet fully acked, oldest first.
 * Messages are numbered 0, 1, 2, ... in the order they were pushed; a
 * "mark" is such a number, and acking "before mark" acks every held message
 * numbered below it. Zero-initialise. */
typedef struct mc_svc_held {
    mc_svc_held_entry *head, *tail;
    uint64_t pushed;  /* messages pushed so far (the next message's number) */
    uint64_t acked;   /* every message numbered below this was acked or released */
    size_t batches;   /* batches held */
} mc_svc_held;

/* Takes ownership of b; returns the number of its first message. On
 * allocation failure the batch is freed unacked (its messages are
 * redelivered) and UINT64_MAX is returned. */
uint64_t mc_svc_held_push(mc_svc_held *h, mc_bus_batch *b);

/* The held message numbered number, or NULL when it is not held (acked
 * already, or not pushed yet). Walks the held batches: O(batches). */
mc_bus_msg *mc_svc_held_msg(const mc_svc_held *h, uint64_t number);

/* Acks every held message numbered below mark and frees the batches that
 * are then fully acked. Ack failures are logged and counted in *failed (may
 * be NULL): the server redelivers those messages, which the services handle
 * as duplicates. */
void mc_svc_held_ack_before(mc_svc_held *h, uint64_t mark, uint64_t *failed);

/* Frees every held batch without acking what is left (the server
 * redelivers it). For shutdown. */
void mc_svc_held_release(mc_svc_held *h);

/* ---- Lanes of blocking jobs ---- */

typedef struct mc_svc_job mc_svc_job;
/* Runs on a pool thread with the lane's store (may be NULL). */
typedef void (*mc_svc_work_fn)(mc_svc_job *job, mc_store *store);
/* Runs on the loop thread after work; owns (and frees) the job. */
typedef void (*mc_svc_done_fn)(mc_svc_job *job);

/* Embed as the first member of a job struct. */
struct mc_svc_job {
    mc_svc_work_fn work;
    mc_svc_done_fn done;
    mc_svc_job *next;
};

typedef struct mc_svc_lane {
    uv_loop_t *loop;
    mc_store *store; /* borrowed; used by one job at a time */
    uv_work_t req;
    mc_svc_job *head, *tail; /* waiting */
    mc_svc_job *running;
    size_t queued; /* waiting + running */
    /* Called on the loop thread whenever the lane becomes idle; may be NULL. */
    void (*on_idle)(void *ctx);
    void *idle_ctx;
} mc_svc_lane;

void mc_svc_lane_init(mc_svc_lane *l, uv_loop_t *loop, mc_store *store);
/* Queues job (ownership passes to the lane until done is called). */
void mc_svc_lane_submit(mc_svc_lane *l, mc_svc_job *job);
bool mc_svc_lane_idle(const mc_svc_lane *l);

/* ---- Publishing a core's outbox ---- */

/* The run id in the stamp of a packed message published by a pipeline core
 * (ops.incidents, ops.actions, ops.watermark.*), looked up by the subject's
 * last parts. MC_ERR_INVALID if the subject is unknown or the bytes do not
 * decode. */
mc_status mc_svc_outbox_run_id(const mc_outbox_msg *m, char *out, size_t n, mc_error *err);

/* Publishes every message of out (subjects get subject_prefix in front)
 * with mc_bus_publish_stamped, then waits with mc_bus_flush until all are
 * stored. A failure is retried (the whole outbox, same message ids: the
 * server stores each once) up to attempts times with a growing pause, or
 * until *stop is set. Pool thread only. */
mc_status mc_svc_publish_outbox(mc_bus *bus, const char *subject_prefix, const mc_outbox *out,
                                uint32_t attempts, const atomic_bool *stop, mc_error *err);

/* ---- Admin port ---- */

typedef struct mc_svc_admin {
    uv_loop_t *loop;
    mc_http_server *srv;
    mc_http_metrics *reg;
    mc_bus *bus;                 /* borrowed, probed for readiness */
    const mc_db_config *db;      /* borrowed; the probe opens its own store */
    mc_store *probe_store;       /* used by the probe job only */
    uv_timer_t timer;
    uv_work_t probe_req;
    bool probing;
    bool stopping;
    atomic_bool nats_ok;
    atomic_bool db_ok;
    char nats_why[256]; /* written by the probe, read in done (loop thread) */
    char db_why[256];
    char reason[300];   /* what /ready says, loop thread */
    mc_http_gauge *g_nats_up;
    mc_http_gauge *g_db_up;
} mc_svc_admin;

/* Creates the registry, listens on addr with /health, /ready and /metrics,
 * and starts probing every probe_ms. bus and db are borrowed. */
mc_status mc_svc_admin_start(mc_svc_admin *a, uv_loop_t *loop, const mc_addr *addr, mc_bus *bus,
                             const mc_db_config *db, uint64_t probe_ms, mc_error *err);

/* Stops the probe timer and shuts the HTTP server down (graceful). The
 * loop must keep running until the shutdown completes. */
void mc_svc_admin_stop(mc_svc_admin *a);

/* Frees the server, the registry and the probe's store. After the loop
 * ended. */
void mc_svc_admin_free(mc_svc_admin *a);

/* Registration shortcuts that turn a failure into MC_ERR_INVALID with the
 * name (a programming error in the service's table). */
mc_status mc_svc_counter(mc_svc_admin *a, const char *name, const char *help,
                         mc_http_counter **out, mc_error *err);
mc_status mc_svc_gauge(mc_svc_admin *a, const char *name, const char *help, mc_http_gauge **out,
                       mc_error *err);

/* ---- Files ---- */

/* Reads a whole file (at most max_bytes) into a malloc'd, NUL-terminated
 * buffer. Errors name the path. */
mc_status mc_svc_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                           mc_error *err);

/* Strips prefix from subject; returns NULL when subject does not start
 * with it. */
const char *mc_svc_subject_rest(const char *subject, const char *prefix);

#endif
