/* NATS JetStream for the services (nats.c 3.4.1), on a libuv loop or not.
 *
 * A service is one libuv event loop. mc_bus_open(loop, ...) connects with
 * the bus's own libuv adapter for nats.c, so the connection's socket I/O
 * runs on that loop,
 * and provisions the two streams of the project: SIM (captures `sim.>`) and
 * OPS (captures `ops.>`). Everything the bus hands to the service (batches of
 * consumed messages, final publish failures) is delivered ON THE LOOP THREAD
 * through a bounded queue and uv_async_send, because nats.c itself delivers
 * on its own threads (PLATFORM.md).
 *
 * Threading model, in one place (each declaration repeats what applies):
 *  - Loop mode (loop != NULL). Open, free and open/close consumers on the
 *    loop thread. Callbacks run on the loop thread. Publishing and acking
 *    are allowed from any thread. Nothing the bus does on the loop thread
 *    waits for a reply on the loop-driven connection: such a reply could
 *    never be read while the loop is blocked. Blocking JetStream API
 *    requests (stream and consumer management, the synchronous publish, the
 *    dead-letter copy) therefore go through a second "control" connection
 *    driven by nats.c's own threads; they block the caller for one round
 *    trip, which is why they are for start-up and low-rate paths only.
 *  - Thread mode (loop == NULL), for CLI tools and tests: one connection on
 *    nats.c's own threads; callbacks run on the consumer's worker thread or
 *    on nats.c's delivery thread; every call may be made from any thread.
 *
 * Delivery guarantees. Publishing is at-least-once with server-side
 * de-duplication: every message carries a Nats-Msg-Id (mc_id_msg of the
 * stamp), so a re-publish after a crash or a retry after a lost ack is
 * stored once. A publish that finally fails is never dropped silently: it
 * is counted, logged, reported to the publish-error callback, and makes the
 * next mc_bus_flush fail. Pull consumers are durable with explicit acks: a
 * message is acked only when the service says so (after its own durable
 * work), so a crash before the ack means redelivery, not loss.
 */
#ifndef MC_BUS_BUS_H
#define MC_BUS_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "config/config.h"
#include "status/status.h"

typedef struct mc_bus mc_bus;
typedef struct mc_bus_consumer mc_bus_consumer;
typedef struct mc_bus_batch mc_bus_batch;
typedef struct mc_bus_msg mc_bus_msg;

/* The two streams of the project. */
typedef enum mc_bus_stream {
    MC_BUS_STREAM_SIM = 0, /* captures <subject_prefix>sim.> */
    MC_BUS_STREAM_OPS = 1  /* captures <subject_prefix>ops.> */
} mc_bus_stream;

#define MC_BUS_STREAM_COUNT 2
#define MC_BUS_DEADLETTER_SUBJECT "ops.deadletter"
/* Headers of a dead-letter copy. */
#define MC_BUS_HDR_DL_SUBJECT "Mc-Dl-Subject"
#define MC_BUS_HDR_DL_SEQUENCE "Mc-Dl-Sequence"
#define MC_BUS_HDR_DL_ERROR "Mc-Dl-Error"
#define MC_BUS_HDR_DL_STREAM "Mc-Dl-Stream"

/* Retention limits of one stream (retention policy "limits": the oldest
 * messages go first once a limit is reached). 0 means unlimited. */
typedef struct mc_bus_stream_limits {
    uint64_t max_age_ms;
    uint64_t max_bytes;
    uint64_t max_msgs;
} mc_bus_stream_limits;

/* One publish that finally failed: which message, why, after how many
 * attempts. Strings are valid during the callback only. */
typedef struct mc_bus_publish_failure {
    const char *subject;
    const char *msg_id;
    mc_status status;  /* MC_ERR_TIMEOUT, MC_ERR_UNAVAILABLE, MC_ERR_IO, ... */
    const char *error; /* one line, e.g. "no responders: no stream captures ..." */
    uint32_t attempts;
} mc_bus_publish_failure;

/* Called once per publish that finally failed. Loop mode: on the loop
 * thread. Thread mode: on a nats.c or bus thread; it must not call
 * mc_bus_flush or mc_bus_free. */
typedef void (*mc_bus_publish_error_fn)(void *ctx, const mc_bus_publish_failure *failure);

/* Options of mc_bus_open. Zero-initialise ({0}) and set what differs: every
 * zero field means its default. Strings are copied by mc_bus_open. */
typedef struct mc_bus_options {
    const char *name;           /* connection name seen by the server; NULL: "microcloud" */
    const char *stream_prefix;  /* "T123_" gives streams T123_SIM and T123_OPS; NULL: none */
    const char *subject_prefix; /* "t123." makes the streams capture t123.sim.> and
                                   t123.ops.>, and the dead-letter subject
                                   t123.ops.deadletter; publishers then use full
                                   subjects. Lets tests share a server. NULL: none */
    bool skip_provision;        /* true: do not create or check the streams at open */
    mc_bus_stream_limits sim_limits; /* default: 24 h, 1 GiB */
    mc_bus_stream_limits ops_limits; /* default: 7 days, 1 GiB */
    bool memory_storage;        /* streams in memory instead of files (never in production) */
    uint32_t replicas;          /* copies of each stream in a JetStream cluster, 1..5 (an
                                   odd number survives losing a minority of the
                                   servers), when the bus creates it; default 1 */
    uint64_t duplicate_window_ms; /* de-duplication window; default 2 min */
    uint32_t max_pending_acks;  /* async publishes not yet acked; default 4096 */
    uint64_t stall_wait_ms;     /* thread mode: how long mc_bus_publish_async waits when
                                   max_pending_acks are in flight; default 10 s */
    uint64_t ack_timeout_ms;    /* a publish not acked within this is retried; default 5 s */
    uint32_t publish_attempts;  /* attempts before a publish finally fails; default 10 */
    uint64_t retry_backoff_ms;  /* first retry delay, doubled each attempt up to 2 s (or this
                                   value if larger); default 100 ms. With the defaults
                                   a refused publish is retried for about 11 s, longer
                                   than a JetStream cluster takes to elect a new stream
                                   leader after losing one (it answers "no responders"
                                   meanwhile) */
    uint64_t request_timeout_ms; /* JetStream API and synchronous publish; default 5 s */
    uint64_t connect_timeout_ms; /* per connection attempt; default 2 s */
    uint64_t reconnect_wait_max_ms; /* reconnect backoff cap (100 ms doubling); default 5 s */
    mc_bus_publish_error_fn on_publish_error; /* optional */
    void *on_publish_error_ctx;
} mc_bus_options;

/* ---- Connection ---- */

/* Connects to nats->url (comma-separated URLs; tls:// turns TLS on) with the
 * credentials of nats (user/password, token or NKey seed file), reconnecting
 * forever with exponential backoff, and provisions the streams unless
 * opts->skip_provision (see mc_bus_provision). opts may be NULL (defaults).
 *
 * loop NULL: thread mode. loop non-NULL: must be called on the thread that
 * runs (or will run) uv_run(loop); the loop need not be running yet.
 * On success *out owns the bus (mc_bus_free). Errors: MC_ERR_UNAVAILABLE
 * (cannot connect), MC_ERR_INVALID (bad option or seed file), MC_ERR_STATE
 * (a stream exists with incompatible settings). */
mc_status mc_bus_open(uv_loop_t *loop, const mc_nats_config *nats, const mc_bus_options *opts,
                      mc_bus **out, mc_error *err);

/* Closes consumers that are still open, waits up to 2 s for pending publish
 * acks (thread mode only; in loop mode call mc_bus_flush from another thread
 * first or accept that pending acks are reported as failures), closes the
 * connections and frees the bus. NULL-safe. Loop mode: call on the loop
 * thread, then let uv_run return (run the loop until it has no more active
 * handles) so the adapter and the bus can close their handles. Does not
 * wait for the loop: consumer closes still finishing are completed once the
 * connections are closed (which ends their waits at once). */
void mc_bus_free(mc_bus *bus);

/* Whether the bus is connected to a server now: both its data and its
 * control connection (false while either reconnects, and after close).
 * Reads nats.c's connection state, no round trip, no allocation: cheap
 * enough for every /ready probe. Any thread. NULL: false. */
bool mc_bus_connected(const mc_bus *bus);

/* Creates SIM and OPS if missing; checks existing ones. Subjects, storage
 * type and retention policy must match (otherwise MC_ERR_STATE with a
 * message naming the stream and the setting: the stream is never silently
 * recreated); limits and the de-duplication window are updated in place.
 * The replica count is used when a stream is created (more replicas than
 * servers: the server's error); an existing stream keeps its own (a
 * warning says when it differs).
 * Idempotent. Blocks for a few round trips; any thread. */
mc_status mc_bus_provision(mc_bus *bus, mc_error *err);

/* Deletes both streams (and their consumers). For tests and tools that
 * clean up after themselves; a missing stream is not an error. Blocking. */
mc_status mc_bus_streams_delete(mc_bus *bus, mc_error *err);

/* The full name of a stream ("T123_SIM") and the dead-letter subject of
 * this bus. Valid until mc_bus_free. */
const char *mc_bus_stream_name(const mc_bus *bus, mc_bus_stream stream);
const char *mc_bus_deadletter_subject(const mc_bus *bus);

/* ---- Publishing ---- */

/* Publishes len bytes (a packed protobuf message) on subject with the
 * de-duplication id msg_id (required, non-empty; normally mc_id_msg of the
 * message's stamp). Returns once the message is handed to the connection;
 * the ack is awaited asynchronously. A publish that is not acked within
 * ack_timeout_ms, or that the server refuses transiently (no responders,
 * e.g. during a restart), is retried with exponential backoff; after
 * publish_attempts it finally fails (counted, logged, reported to
 * on_publish_error and by the next mc_bus_flush). The bytes are copied.
 *
 * Any thread. When max_pending_acks publishes are in flight: thread mode
 * waits up to stall_wait_ms (then MC_ERR_TIMEOUT); on the loop thread of a
 * loop-mode bus it returns MC_ERR_LIMIT at once, because waiting would
 * block the very loop that reads the acks: publish again later (for
 * instance from a timer) or raise max_pending_acks. */
mc_status mc_bus_publish_async(mc_bus *bus, const char *subject, const void *data, size_t len,
                               const char *msg_id, mc_error *err);

/* mc_bus_publish_async with msg_id = mc_id_msg(run_id, subject, tick,
 * producer_seq). */
mc_status mc_bus_publish_stamped(mc_bus *bus, const char *subject, const char *run_id,
                                 uint64_t tick, uint64_t producer_seq, const void *data,
                                 size_t len, mc_error *err);

/* Acknowledgement of a synchronous publish. */
typedef struct mc_bus_pub_ack {
    uint64_t stream_seq; /* sequence of the stored message */
    bool duplicate;      /* the server had this msg_id already (nothing new stored) */
} mc_bus_pub_ack;

/* Publishes and waits for the ack (request_timeout_ms), for low-rate
 * callers. ack may be NULL. No retries: the caller sees the error. Errors:
 * MC_ERR_UNAVAILABLE (no stream captures the subject, or JetStream is
 * down), MC_ERR_TIMEOUT, MC_ERR_IO (refused by the server). Any thread; uses
 * the control connection, so on a loop thread it blocks for one round trip. */
mc_status mc_bus_publish(mc_bus *bus, const char *subject, const void *data, size_t len,
                         const char *msg_id, mc_bus_pub_ack *ack, mc_error *err);

/* Waits until every async publish is acked or has finally failed (retries
 * included), up to timeout_ms. Returns MC_ERR_TIMEOUT if acks are still
 * pending, MC_ERR_IO if any publish finally failed since the previous
 * flush (err names the first), MC_OK otherwise. Any thread except the loop
 * thread of a loop-mode bus (MC_ERR_STATE: it would wait for acks that only
 * that loop can read). */
mc_status mc_bus_flush(mc_bus *bus, uint64_t timeout_ms, mc_error *err);

/* ---- Consuming ---- */

/* A batch of consumed messages handed to the service. The callback owns it
 * and must eventually call mc_bus_batch_free (from any thread, possibly much
 * later, e.g. after a database commit). Loop mode: called on the loop
 * thread. Thread mode: on the consumer's worker thread (pull) or nats.c's
 * delivery thread (ordered). */
typedef void (*mc_bus_batch_fn)(void *ctx, mc_bus_batch *batch);

/* Options of a durable pull consumer (explicit acks). Zero means default. */
typedef struct mc_bus_pull_options {
    mc_bus_stream stream;
    const char *durable;        /* required: [A-Za-z0-9_-]+ */
    const char *filter_subject; /* NULL: every subject of the stream */
    uint32_t batch_size;        /* messages per fetch; default 256 */
    uint64_t fetch_wait_ms;     /* how long one fetch waits for messages; default 1 s */
    uint64_t ack_wait_ms;       /* unacked messages are redelivered after; default 30 s */
    int64_t max_deliver;        /* deliveries before the server gives up; default unlimited */
    uint32_t max_batches_inflight; /* batches handed over and not yet freed before the
                                      worker stops fetching; default 1 */
    uint64_t start_seq;         /* where delivery starts, see below; 0: where the durable is */
    mc_bus_batch_fn on_batch;   /* required */
    void *ctx;
} mc_bus_pull_options;

/* start_seq of a pull consumer that resumes from its own ack floor. */
#define MC_BUS_PULL_FROM_ACK_FLOOR UINT64_MAX

/* Creates the durable consumer (explicit acks, from the start of the
 * stream) or updates it in place when it exists with other settings, and
 * starts its worker thread, which fetches batches and hands them over; it
 * does not fetch again while max_batches_inflight batches are not yet freed
 * (backpressure). A consumer created here is never deleted by the bus:
 * durables outlive restarts. Errors: MC_ERR_INVALID (options), MC_ERR_STATE
 * (the server refuses the settings for the existing durable; the message
 * names durable and stream), MC_ERR_UNAVAILABLE/MC_ERR_TIMEOUT. Loop mode:
 * call on the loop thread (it blocks for the create request on the control
 * connection); batches arrive on the loop thread once the loop runs. On
 * success *out owns the consumer (mc_bus_consumer_close). */
mc_status mc_bus_pull_open(mc_bus *bus, const mc_bus_pull_options *opts, mc_bus_consumer **out,
                           mc_error *err);

/* Starting a durable at a given place (start_seq), for a service that keeps
 * its own committed position or that must see messages in stream order
 * after a restart. A durable resumes after its ack floor, but messages a
 * previous instance fetched and never acked (a crash, a fetch in flight at
 * a stop) come back only after ack_wait, behind newer ones; so does a
 * message the server hands to a pull request the dead instance left
 * waiting (it lives until its fetch_wait expires).
 *  - start_seq n >= 1: delivery starts at stream sequence n (e.g. a
 *    position committed in a database, plus 1).
 *  - MC_BUS_PULL_FROM_ACK_FLOOR: delivery starts right after the durable's
 *    ack floor, so the unacked messages come again at once and in order.
 * An existing durable is deleted and created again (DeliverByStartSequence
 * n), which drops its outstanding deliveries and waiting requests with it;
 * a new one starts at n. Only for a durable one process consumes at a
 * time, opened once per process start. */

/* Options of an ordered consumer: an ephemeral push consumer that delivers
 * the stream in order with no acks (nats.c resets it on a gap), for readers
 * like the dashboard feed. */
typedef struct mc_bus_ordered_options {
    mc_bus_stream stream;
    const char *filter_subject; /* NULL: every subject of the stream */
    uint64_t start_seq;         /* 0: only messages published from now on;
                                   n >= 1: from stream sequence n */
    uint32_t max_inflight;      /* messages handed over and not yet freed before
                                   delivery waits; default 1024 */
    mc_bus_batch_fn on_batch;   /* required */
    void *ctx;
} mc_bus_ordered_options;

/* Starts an ordered consumer. Loop mode: call on the loop thread; the
 * subscription is made from a helper thread (it needs a reply the loop
 * reads), so the first batch arrives once the loop runs. Thread mode:
 * subscribes before returning. */
mc_status mc_bus_ordered_open(mc_bus *bus, const mc_bus_ordered_options *opts,
                              mc_bus_consumer **out, mc_error *err);

/* Stops the consumer: no callback runs after it returns (a callback may
 * close its own consumer); messages fetched but not yet handed over are
 * dropped unacked (the server redelivers them after ack_wait). Batches the
 * service still holds stay valid and can be acked until freed (free them
 * before mc_bus_free). The durable consumer stays on the server. NULL-safe.
 * Loop mode: on the loop thread, and it does not block: the parts that wait
 * (unsubscribing, which for an ordered consumer deletes it on the server
 * with a request the loop answers; the worker's end) finish on a helper
 * thread while the loop runs, and mc_bus_free completes them. Works before
 * the loop ever ran. Thread mode: waits for the worker (up to fetch_wait_ms)
 * and for nats.c's last callback. */
void mc_bus_consumer_close(mc_bus_consumer *c);

/* Messages handed to the consumer callbacks so far. */
uint64_t mc_bus_consumer_delivered(const mc_bus_consumer *c);

/* Number of messages and the i-th message (i < count). The message is owned
 * by the batch. Any thread. */
size_t mc_bus_batch_count(const mc_bus_batch *b);
mc_bus_msg *mc_bus_batch_msg(mc_bus_batch *b, size_t i);

/* Acks every message of the batch that was not acked, nak'ed, terminated
 * or dead-lettered yet. Returns the first error. Any thread. */
mc_status mc_bus_batch_ack_all(mc_bus_batch *b, mc_error *err);

/* Frees the batch and its messages. Messages not acked are redelivered by
 * the server after ack_wait (pull consumers). Lets the worker fetch again.
 * NULL-safe; any thread. */
void mc_bus_batch_free(mc_bus_batch *b);

/* Accessors of a consumed message; valid until its batch is freed. */
const char *mc_bus_msg_subject(const mc_bus_msg *m);
const uint8_t *mc_bus_msg_data(const mc_bus_msg *m);
size_t mc_bus_msg_len(const mc_bus_msg *m);
uint64_t mc_bus_msg_stream_seq(const mc_bus_msg *m);
uint64_t mc_bus_msg_num_delivered(const mc_bus_msg *m);
/* True when the server delivered this message before (num_delivered > 1):
 * the service may have handled it already and must be idempotent. */
bool mc_bus_msg_redelivered(const mc_bus_msg *m);
/* The first value of header key, or NULL when absent. */
const char *mc_bus_msg_header(const mc_bus_msg *m, const char *key);

/* Acknowledges the message (the service has done its durable work). A no-op
 * for ordered consumers and for a message already settled. Any thread. */
mc_status mc_bus_msg_ack(mc_bus_msg *m, mc_error *err);
/* Asks for redelivery after delay_ms (0: at once). Any thread. */
mc_status mc_bus_msg_nak(mc_bus_msg *m, uint64_t delay_ms, mc_error *err);

/* Handles a message that cannot be decoded: logs it with its subject and
 * sequence, counts it, copies its bytes to the dead-letter subject with
 * headers Mc-Dl-Subject, Mc-Dl-Sequence, Mc-Dl-Stream and Mc-Dl-Error
 * (reason) and, once the copy is stored, acks the original so the stream
 * moves on. A message consumed from the dead-letter subject itself is
 * logged, counted and acked but not copied again (no loop). If the copy
 * cannot be stored, the original is not acked (it will be redelivered) and
 * the error is returned. Any thread; blocks for one round trip on the
 * control connection. */
mc_status mc_bus_msg_deadletter(mc_bus_msg *m, const char *reason, mc_error *err);

/* ---- Counters for /metrics (monotonic except acks_pending). Any thread. ---- */
uint64_t mc_bus_published(const mc_bus *bus);        /* async and sync publishes acked */
uint64_t mc_bus_publish_duplicates(const mc_bus *bus); /* acked as duplicates */
uint64_t mc_bus_publish_failures(const mc_bus *bus); /* publishes that finally failed */
uint64_t mc_bus_publish_retries(const mc_bus *bus);  /* re-sends after a failed attempt */
uint64_t mc_bus_acks_pending(const mc_bus *bus);     /* async publishes awaiting an ack */
uint64_t mc_bus_consumed(const mc_bus *bus);         /* messages handed to callbacks */
uint64_t mc_bus_redelivered(const mc_bus *bus);      /* of which redeliveries */
uint64_t mc_bus_deadlettered(const mc_bus *bus);     /* messages dead-lettered */

/* The NKey public key ("U...") of an NKey seed ("SU..."): nats.c needs it
 * beside NATS_NKEY_SEED_FILE. out holds at least 57 bytes. MC_ERR_INVALID
 * when seed is not a well-formed seed (base32, prefix, checksum). */
mc_status mc_bus_nkey_public_from_seed(const char *seed, char out[64], mc_error *err);

/* Releases nats.c's global state (threads, pools), waiting up to
 * timeout_ms. Call once at process exit after every bus is freed (tests
 * do, so leak checkers stay quiet). */
void mc_bus_library_shutdown(uint64_t timeout_ms);

#endif
