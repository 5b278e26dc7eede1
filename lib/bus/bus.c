/* NATS JetStream for the services. See bus.h for the model; this file keeps
 * to it with these internal rules:
 *  - bus->nc is the data connection (on the service's loop in loop mode);
 *    bus->ctl_nc is the control connection for blocking requests (the same
 *    connection in thread mode).
 *  - Every async publish counts in bus->pending from the moment it is
 *    accepted until it is acked or finally fails; retries stay counted.
 *  - A consumer is freed when its handle is closed, its uv handle (loop
 *    mode) has closed and every batch it handed over is freed (refs). */
#include "bus/bus.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include <nats/nats.h>

#include "core/ids.h"
#include "log/log.h"

/* ---- Defaults ---- */
#define DEF_NAME "microcloud"
#define DEF_SIM_MAX_AGE_MS (24ull * 3600 * 1000)
#define DEF_OPS_MAX_AGE_MS (7ull * 24 * 3600 * 1000)
#define DEF_MAX_BYTES (1ull << 30)
#define DEF_DUP_WINDOW_MS (120ull * 1000)
#define DEF_MAX_PENDING 4096u
#define DEF_STALL_WAIT_MS 10000ull
#define DEF_ACK_TIMEOUT_MS 5000ull
#define DEF_PUBLISH_ATTEMPTS 10u
#define DEF_RETRY_BACKOFF_MS 100ull
/* Retry delays double up to this (or retry_backoff_ms when larger). */
#define RETRY_BACKOFF_CAP_MS 2000ull
#define DEF_REQUEST_TIMEOUT_MS 5000ull
#define DEF_CONNECT_TIMEOUT_MS 2000ull
#define DEF_RECONNECT_MAX_MS 5000ull
#define DEF_BATCH 256u
#define DEF_FETCH_WAIT_MS 1000ull
#define DEF_ACK_WAIT_MS 30000ull
#define DEF_ORDERED_INFLIGHT 1024u
#define ORDERED_BATCH_CAP 256u
/* Failure notices queued for the loop beyond this are logged and counted
 * but not handed to the callback, so a loop that never runs cannot make the
 * queue grow without bound. */
#define MAX_QUEUED_FAILURES 65536u
#define MAX_URLS 16
#define MAX_REPLICAS 5

#define NS_PER_MS 1000000ll

/* ---- Internal types ---- */

/* A publish that failed at least once: its attempts so far and, while
 * waiting for a resend, when that is due. Kept in bus->retries until the
 * message is acked or finally fails. */
typedef struct retry_entry {
    natsMsg *msg;
    uint32_t attempts;
    bool queued; /* waiting for the retry thread (not in flight) */
    uint64_t due_ms;
    struct retry_entry *next;
} retry_entry;

/* A thread finishing the close of a loop-mode consumer (unsubscribe, join
 * the worker, wait for nats.c's last callback): those steps may wait for
 * replies that only the loop reads, so they never run on the loop thread.
 * Kept in bus->reapers until joined (by the next close or by mc_bus_free). */
typedef struct reaper {
    pthread_t thread;
    mc_bus_consumer *c;
    _Atomic bool done;
    struct reaper *next;
} reaper;

/* A final publish failure waiting to be handed to the loop. */
typedef struct failure_note {
    char *subject;
    char *msg_id;
    char *error;
    mc_status status;
    uint32_t attempts;
    struct failure_note *next;
} failure_note;

struct mc_bus_msg {
    natsMsg *nm;
    mc_bus_batch *batch;
    uint64_t stream_seq;
    uint64_t num_delivered;
    bool settled;
};

struct mc_bus_batch {
    mc_bus_consumer *c;
    mc_bus_batch *next;
    size_t count;
    size_t cap;
    mc_bus_msg *msgs;
};

struct mc_bus_consumer {
    mc_bus *bus;
    bool ordered;
    mc_bus_stream stream;
    char *durable;
    char *subject; /* filter subject or the stream's wildcard */
    bool has_filter;
    uint32_t batch_size;
    uint64_t fetch_wait_ms;
    uint32_t max_batches_inflight;
    uint32_t max_msgs_inflight;
    uint64_t start_seq;
    uint64_t ack_wait_ms;  /* pull: the durable's settings, kept to create it later */
    int64_t max_deliver;
    bool needs_create;     /* pull, loop mode: creating the durable is still to do */
    mc_bus_batch_fn on_batch;
    void *ctx;

    pthread_mutex_t mu;
    pthread_cond_t cond;
    natsSubscription *sub;
    bool closing;
    bool sub_complete;
    int refs;
    uint32_t batches_inflight;
    uint32_t msgs_inflight;
    mc_bus_batch *ready_head;
    mc_bus_batch *ready_tail;
    pthread_t worker;
    bool worker_started;
    uv_async_t async;
    _Atomic uint64_t delivered;
    mc_bus_consumer *next_open; /* bus->consumers list, under bus->mu */
};

struct mc_bus {
    uv_loop_t *loop;
    uv_thread_t loop_thread;
    natsConnection *nc;
    natsConnection *ctl_nc;
    jsCtx *js;
    jsCtx *ctl_js;

    char *name;
    char *stream_names[MC_BUS_STREAM_COUNT];
    char *stream_subjects[MC_BUS_STREAM_COUNT]; /* "<prefix>sim.>" */
    char *deadletter_subject;
    mc_bus_options o; /* defaults applied; string fields not used after open */

    pthread_mutex_t mu;
    pthread_cond_t cond;
    uint64_t pending;
    uint64_t failures_since_flush;
    char first_failure[256];
    retry_entry *retries;
    bool closing;
    pthread_t retry_thread;
    bool retry_started;
    mc_bus_consumer *consumers;
    reaper *reapers; /* loop mode: consumer closes still finishing, under mu */

    uv_async_t fail_async;
    bool fail_async_ready;
    failure_note *fail_head;
    failure_note *fail_tail;
    uint32_t fail_queued;

    _Atomic int cb_active; /* publish-ack callbacks running now */
    _Atomic uint64_t published, duplicates, failures, retried, consumed, redelivered,
        deadlettered;
};

/* ---- Small helpers ---- */

static char *dup_str(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static char *cat_str(const char *a, const char *b)
{
    size_t na = a ? strlen(a) : 0, nb = b ? strlen(b) : 0;
    char *d = malloc(na + nb + 1);
    if (d == NULL)
        return NULL;
    if (na)
        memcpy(d, a, na);
    if (nb)
        memcpy(d + na, b, nb);
    d[na + nb] = '\0';
    return d;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timespec deadline_in(uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000u);
    ts.tv_nsec += (long)(ms % 1000u) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec += 1;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Condition variables wait on the monotonic clock so a wall-clock jump
 * neither shortens nor stretches a timeout. */
static int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return -1;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return rc;
}

static bool on_loop_thread(const mc_bus *bus)
{
    if (bus->loop == NULL)
        return false;
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &bus->loop_thread) != 0;
}

static mc_status status_from_nats(natsStatus s)
{
    switch (s) {
    case NATS_OK:
        return MC_OK;
    case NATS_TIMEOUT:
        return MC_ERR_TIMEOUT;
    case NATS_NO_RESPONDERS:
    case NATS_NO_SERVER:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_STALE_CONNECTION:
    case NATS_NOT_PERMITTED:
        return MC_ERR_UNAVAILABLE;
    case NATS_NO_MEMORY:
        return MC_ERR_NOMEM;
    case NATS_NOT_FOUND:
        return MC_ERR_NOT_FOUND;
    case NATS_INVALID_ARG:
    case NATS_INVALID_SUBJECT:
        return MC_ERR_INVALID;
    case NATS_INSUFFICIENT_BUFFER:
    case NATS_MAX_PAYLOAD:
        return MC_ERR_LIMIT;
    default:
        return MC_ERR_IO;
    }
}

/* Text for a failed nats.c call: the status, nats.c's own detail for this
 * thread when it adds something, and the JetStream error code. */
static void nats_error_text(char *out, size_t n, natsStatus s, jsErrCode jerr)
{
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    const char *base = natsStatus_GetText(s);
    if (s == NATS_NO_RESPONDERS)
        base = "no responders: no stream captures the subject, or JetStream is unavailable";
    if (detail != NULL && detail[0] != '\0' && strcmp(detail, natsStatus_GetText(s)) != 0)
        snprintf(out, n, "%s (%s)", base, detail);
    else
        snprintf(out, n, "%s", base);
    if (jerr != 0) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, " [JetStream error %d]", (int)jerr);
    }
}

static mc_status nats_fail(mc_error *err, natsStatus s, jsErrCode jerr, const char *what)
{
    char text[400];
    nats_error_text(text, sizeof text, s, jerr);
    return mc_error_set(err, status_from_nats(s), "%s: %s", what, text);
}

/* ---- Connection ---- */

static void on_disconnected(natsConnection *nc, void *closure)
{
    /* nats.c also reports a disconnect when the connection is closed on
     * purpose; only a lost connection is worth a warning. */
    if (natsConnection_IsClosed(nc))
        return;
    MC_LOG_WARN("nats disconnected; reconnecting", MC_LF_STR("conn", closure ? "control" : "data"));
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    MC_LOG_INFO("nats reconnected", MC_LF_STR("conn", closure ? "control" : "data"),
                MC_LF_STR("url", url));
}

static void on_async_error(natsConnection *nc, natsSubscription *sub, natsStatus s, void *closure)
{
    const char *subj = sub ? natsSubscription_GetSubject(sub) : NULL;
    MC_LOG_WARN("nats asynchronous error", MC_LF_STR("error", natsStatus_GetText(s)),
                MC_LF_STR("subject", subj ? subj : ""));
}

/* Exponential reconnect backoff: 100 ms doubling up to the cap carried in
 * the closure pointer itself (so no bus memory is touched by nats.c's
 * threads after the bus is gone), plus up to 20 % jitter so a fleet of
 * services does not reconnect in lockstep. */
static int64_t reconnect_delay(natsConnection *nc, int attempts, void *closure)
{
    int64_t cap = (int64_t)(uintptr_t)closure;
    int shift = attempts <= 1 ? 0 : (attempts > 11 ? 10 : attempts - 1);
    int64_t d = (int64_t)DEF_RETRY_BACKOFF_MS << shift;
    if (d > cap)
        d = cap;
    int64_t jitter = d / 5;
    if (jitter > 0)
        d += nats_Now() % (jitter + 1);
    return d;
}

/* Base32 (RFC 4648, no padding) as used by NKeys. */
static const char b32_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static int b32_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = strchr(b32_alpha, in[i]);
        if (p == NULL || in[i] == '\0')
            return -1;
        acc = (acc << 5) | (uint32_t)(p - b32_alpha);
        bits += 5;
        if (bits >= 8) {
            if (o >= cap)
                return -1;
            out[o++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
    }
    return (int)o;
}

static void b32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[o++] = b32_alpha[(acc >> (bits - 5)) & 31u];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[o++] = b32_alpha[(acc << (5 - bits)) & 31u];
    out[o] = '\0';
}

/* CRC-16/XMODEM, the checksum of NKey strings. */
static uint16_t crc16_xmodem(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
    }
    return crc;
}

/* nats.c signs the server's nonce with the seed file itself but must be
 * told the public key, which NATS_NKEY_SEED_FILE does not give: derive it
 * (Ed25519 public key of the seed, encoded as an NKey). */
mc_status mc_bus_nkey_public_from_seed(const char *seed, char out[64], mc_error *err)
{
    uint8_t raw[40];
    size_t n = strlen(seed);
    if (n < 50 || n > 64 || seed[0] != 'S')
        return mc_error_set(err, MC_ERR_INVALID, "not an NKey seed (expected 58 characters S...)");
    int len = b32_decode(seed, n, raw, sizeof raw);
    if (len != 36) {
        sodium_memzero(raw, sizeof raw);
        return mc_error_set(err, MC_ERR_INVALID, "not an NKey seed (bad base32 or length)");
    }
    uint16_t want = (uint16_t)(raw[34] | (raw[35] << 8));
    if (crc16_xmodem(raw, 34) != want || (raw[0] & 0xF8u) != (18u << 3)) {
        sodium_memzero(raw, sizeof raw);
        return mc_error_set(err, MC_ERR_INVALID, "not an NKey seed (checksum or prefix mismatch)");
    }
    uint8_t type = (uint8_t)(((raw[0] & 7u) << 5) | ((raw[1] & 0xF8u) >> 3));
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    if (sodium_init() < 0 || crypto_sign_seed_keypair(pk, sk, raw + 2) != 0) {
        sodium_memzero(raw, sizeof raw);
        return mc_error_set(err, MC_ERR_INTERNAL, "libsodium failed to derive the NKey");
    }
    sodium_memzero(raw, sizeof raw);
    sodium_memzero(sk, sizeof sk);
    uint8_t pub[35];
    pub[0] = type;
    memcpy(pub + 1, pk, 32);
    uint16_t crc = crc16_xmodem(pub, 33);
    pub[33] = (uint8_t)(crc & 0xFFu);
    pub[34] = (uint8_t)(crc >> 8);
    b32_encode(pub, sizeof pub, out);
    return MC_OK;
}

static mc_status nkey_public_from_file(const char *path, char out[64], mc_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "NATS_NKEY_SEED_FILE=%s: %s", path,
                            strerror(errno));
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The seed is the first token that looks like one (a bare seed file or
     * a credentials file both work). */
    mc_status st = mc_error_set(err, MC_ERR_INVALID, "NATS_NKEY_SEED_FILE=%s: no NKey seed found",
                                path);
    for (char *p = buf; *p; p++) {
        if (p[0] == 'S' && (p[1] == 'U' || p[1] == 'A' || p[1] == 'O' || p[1] == 'N')) {
            size_t k = strspn(p, b32_alpha);
            if (k >= 56 && k <= 64) {
                char seed[65];
                memcpy(seed, p, k);
                seed[k] = '\0';
                st = mc_bus_nkey_public_from_seed(seed, out, err);
                sodium_memzero(seed, sizeof seed);
                if (st != MC_OK)
                    mc_error_wrap(err, "NATS_NKEY_SEED_FILE=%s", path);
                break;
            }
        }
    }
    sodium_memzero(buf, sizeof buf);
    return st;
}

/* The URL list without credentials, for messages. */
static void redact_urls(const char *urls, char *out, size_t n)
{
    size_t o = 0;
    const char *p = urls;
    while (*p && o + 1 < n) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *scheme = strstr(p, "://");
        const char *at = memchr(p, '@', len);
        if (scheme && at && scheme < at && scheme < p + len) {
            o += (size_t)snprintf(out + o, n - o, "%.*s***%.*s", (int)(scheme + 3 - p), p,
                                  (int)(p + len - at), at);
        } else {
            o += (size_t)snprintf(out + o, n - o, "%.*s", (int)len, p);
        }
        if (o >= n)
            break;
        if (!end)
            break;
        o += (size_t)snprintf(out + o, n - o, ",");
        p = end + 1;
    }
    if (o >= n && n > 0)
        out[n - 1] = '\0';
}

/* ---- Event loop adapter ----
 *
 * nats.c drives a connection's socket through four callbacks (attach, read
 * and write interest on/off, detach). nats.c calls them from any of its
 * threads, with the connection's lock held; libuv may only be touched on the
 * loop thread. Calls made off the loop thread are queued and applied by the
 * loop (uv_async_send); calls made ON the loop thread first apply whatever
 * is queued, in order, and then themselves at once.
 *
 * The "at once" part is why this is ours rather than nats.c's own libuv
 * adapter, which queues a loop-thread call whenever anything is queued. A
 * connection closed on the loop thread before the loop ever ran (a start-up
 * that fails, a quick shutdown) then has its poll stop queued behind earlier
 * updates while nats.c closes the socket at once; the next uv_run arms a
 * poll on the closed descriptor, and libuv aborts. Applied at once, the poll
 * handle is stopped and closed before close returns. */
typedef enum { EVL_ATTACH, EVL_READ, EVL_WRITE, EVL_DETACH } evl_kind;

typedef struct evl_op {
    evl_kind kind;
    bool add;
    natsSock sock;
    struct evl_op *next;
} evl_op;

typedef struct evl {
    uv_loop_t *loop;
    uv_thread_t loop_thread;
    natsConnection *nc;
    uv_poll_t *poll; /* the current socket's; replaced on reconnect */
    uv_async_t async;
    int events;
    bool detached;
    int handles; /* async + current poll not yet closed; freed at 0 */
    pthread_mutex_t mu;
    evl_op *head, *tail;
} evl;

static void evl_release(evl *e)
{
    if (--e->handles > 0)
        return;
    while (e->head) {
        evl_op *op = e->head;
        e->head = op->next;
        free(op);
    }
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static void evl_old_poll_closed(uv_handle_t *h)
{
    free(h);
}

static void evl_poll_closed(uv_handle_t *h)
{
    evl *e = h->data;
    free(h);
    evl_release(e);
}

static void evl_async_closed(uv_handle_t *h)
{
    evl_release(h->data);
}

static void evl_poll_cb(uv_poll_t *h, int status, int events)
{
    evl *e = h->data;
    /* An error is handled as a read: nats.c sees the socket fail and
     * reconnects. Reading may close or detach; nats.c checks its own
     * state before a write. */
    if (status < 0 || (events & UV_READABLE))
        natsConnection_ProcessReadEvent(e->nc);
    if (status == 0 && (events & UV_WRITABLE))
        natsConnection_ProcessWriteEvent(e->nc);
}

/* Applies one operation; on the loop thread only. */
static natsStatus evl_apply(evl *e, evl_kind kind, bool add, natsSock sock)
{
    if (e->detached)
        return NATS_OK;
    int rc = 0;
    switch (kind) {
    case EVL_ATTACH: {
        if (e->poll != NULL) {
            uv_close((uv_handle_t *)e->poll, evl_old_poll_closed);
            e->poll = NULL;
            e->handles--;
        }
        uv_poll_t *p = calloc(1, sizeof *p);
        if (p == NULL)
            return NATS_NO_MEMORY;
        rc = uv_poll_init_socket(e->loop, p, sock);
        if (rc != 0) {
            free(p);
            break;
        }
        p->data = e;
        e->poll = p;
        e->handles++;
        e->events = UV_READABLE;
        rc = uv_poll_start(p, e->events, evl_poll_cb);
        break;
    }
    case EVL_READ:
    case EVL_WRITE: {
        int bit = kind == EVL_READ ? UV_READABLE : UV_WRITABLE;
        e->events = add ? (e->events | bit) : (e->events & ~bit);
        if (e->poll != NULL)
            rc = e->events ? uv_poll_start(e->poll, e->events, evl_poll_cb)
                           : uv_poll_stop(e->poll);
        break;
    }
    case EVL_DETACH:
        e->detached = true;
        if (e->poll != NULL) {
            uv_poll_stop(e->poll);
            uv_close((uv_handle_t *)e->poll, evl_poll_closed);
            e->poll = NULL;
        }
        uv_close((uv_handle_t *)&e->async, evl_async_closed);
        break;
    }
    if (rc != 0) {
        MC_LOG_ERROR("nats event loop adapter: libuv refused a socket update",
                     MC_LF_STR("error", uv_strerror(rc)), MC_LF_INT("op", (int64_t)kind));
        return NATS_ERR;
    }
    return NATS_OK;
}

/* Applies the queued operations in order; on the loop thread only. */
static void evl_drain(evl *e)
{
    for (;;) {
        pthread_mutex_lock(&e->mu);
        evl_op *op = e->head;
        if (op != NULL) {
            e->head = op->next;
            if (e->head == NULL)
                e->tail = NULL;
        }
        pthread_mutex_unlock(&e->mu);
        if (op == NULL)
            return;
        evl_apply(e, op->kind, op->add, op->sock);
        free(op);
    }
}

static void evl_async_cb(uv_async_t *h)
{
    evl_drain(h->data);
}

static bool evl_on_loop(const evl *e)
{
    uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &e->loop_thread) != 0;
}

/* From nats.c: applied now on the loop thread, else queued for it. The
 * wake-up is sent inside the callback, i.e. under nats.c's connection lock,
 * so it always precedes the detach (which closes the async handle). */
static natsStatus evl_submit(evl *e, evl_kind kind, bool add, natsSock sock)
{
    if (e == NULL)
        return NATS_OK;
    if (evl_on_loop(e)) {
        evl_drain(e);
        return evl_apply(e, kind, add, sock);
    }
    evl_op *op = calloc(1, sizeof *op);
    if (op == NULL)
        return NATS_NO_MEMORY;
    op->kind = kind;
    op->add = add;
    op->sock = sock;
    pthread_mutex_lock(&e->mu);
    if (e->tail)
        e->tail->next = op;
    else
        e->head = op;
    e->tail = op;
    pthread_mutex_unlock(&e->mu);
    return uv_async_send(&e->async) == 0 ? NATS_OK : NATS_ERR;
}

static natsStatus evl_attach(void **user_data, void *loop, natsConnection *nc, natsSock socket)
{
    evl *e = *user_data;
    if (e != NULL) /* a reconnect, from nats.c's reconnect thread */
        return evl_submit(e, EVL_ATTACH, true, socket);
    /* The first attach happens inside natsConnection_Connect, which the bus
     * calls on the loop thread. */
    e = calloc(1, sizeof *e);
    if (e == NULL)
        return NATS_NO_MEMORY;
    e->loop = loop;
    e->loop_thread = uv_thread_self();
    e->nc = nc;
    pthread_mutex_init(&e->mu, NULL);
    if (uv_async_init(e->loop, &e->async, evl_async_cb) != 0) {
        pthread_mutex_destroy(&e->mu);
        free(e);
        return NATS_ERR;
    }
    e->async.data = e;
    e->handles = 1;
    natsStatus s = evl_apply(e, EVL_ATTACH, true, socket);
    if (s != NATS_OK) {
        evl_apply(e, EVL_DETACH, true, socket);
        return s;
    }
    *user_data = e;
    return NATS_OK;
}

static natsStatus evl_read(void *user_data, bool add)
{
    return evl_submit(user_data, EVL_READ, add, (natsSock)-1);
}

static natsStatus evl_write(void *user_data, bool add)
{
    return evl_submit(user_data, EVL_WRITE, add, (natsSock)-1);
}

static natsStatus evl_detach(void *user_data)
{
    return evl_submit(user_data, EVL_DETACH, true, (natsSock)-1);
}

static mc_status connect_one(mc_bus *bus, const mc_nats_config *cfg, uv_loop_t *loop, bool control,
                             natsConnection **out, mc_error *err)
{
    natsOptions *no = NULL;
    natsStatus s = natsOptions_Create(&no);
    if (s != NATS_OK)
        return nats_fail(err, s, 0, "nats options");

    /* Split the comma-separated URL list. */
    char *urls = dup_str(cfg->url);
    const char *servers[MAX_URLS];
    int nservers = 0;
    bool tls = false;
    if (urls == NULL) {
        natsOptions_Destroy(no);
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    }
    for (char *save = NULL, *tok = strtok_r(urls, ",", &save); tok && nservers < MAX_URLS;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok == '\0')
            continue;
        if (strncmp(tok, "tls://", 6) == 0)
            tls = true;
        servers[nservers++] = tok;
    }
    char name[300];
    snprintf(name, sizeof name, "%s%s", bus->name, control ? "-control" : "");
    if (nservers == 0)
        s = NATS_INVALID_ARG;
    if (s == NATS_OK)
        s = natsOptions_SetServers(no, servers, nservers);
    if (s == NATS_OK)
        s = natsOptions_SetName(no, name);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(no, (int64_t)bus->o.connect_timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(no, -1);
    if (s == NATS_OK)
        s = natsOptions_SetCustomReconnectDelay(no, reconnect_delay,
                                                (void *)(uintptr_t)bus->o.reconnect_wait_max_ms);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(no, on_disconnected, control ? (void *)1 : NULL);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(no, on_reconnected, control ? (void *)1 : NULL);
    if (s == NATS_OK)
        s = natsOptions_SetErrorHandler(no, on_async_error, NULL);
    if (s == NATS_OK && cfg->user && cfg->user[0])
        s = natsOptions_SetUserInfo(no, cfg->user, cfg->password ? cfg->password : "");
    if (s == NATS_OK && cfg->token && cfg->token[0])
        s = natsOptions_SetToken(no, cfg->token);
    if (s == NATS_OK && tls)
        s = natsOptions_SetSecure(no, true);
    if (s == NATS_OK && cfg->nkey_seed_file && cfg->nkey_seed_file[0]) {
        char pub[64];
        mc_status st = nkey_public_from_file(cfg->nkey_seed_file, pub, err);
        if (st != MC_OK) {
            free(urls);
            natsOptions_Destroy(no);
            return st;
        }
        s = natsOptions_SetNKeyFromSeed(no, pub, cfg->nkey_seed_file);
    }
    if (s == NATS_OK && loop != NULL)
        s = natsOptions_SetEventLoop(no, loop, evl_attach, evl_read, evl_write, evl_detach);
    free(urls);
    if (s != NATS_OK) {
        natsOptions_Destroy(no);
        return nats_fail(err, s, 0, "nats options (NATS_URL and credentials)");
    }
    s = natsConnection_Connect(out, no);
    natsOptions_Destroy(no);
    if (s != NATS_OK) {
        char where[512];
        redact_urls(cfg->url, where, sizeof where);
        char text[400];
        nats_error_text(text, sizeof text, s, 0);
        return mc_error_set(err, MC_ERR_UNAVAILABLE, "cannot connect to NATS at %s: %s", where,
                            text);
    }
    return MC_OK;
}

/* ---- Publish acks, retries and failures ---- */

static retry_entry *retry_find_locked(mc_bus *bus, natsMsg *m, retry_entry ***link)
{
    for (retry_entry **pp = &bus->retries; *pp; pp = &(*pp)->next) {
        if ((*pp)->msg == m) {
            if (link)
                *link = pp;
            return *pp;
        }
    }
    return NULL;
}

static void retry_remove_locked(mc_bus *bus, natsMsg *m)
{
    retry_entry **link = NULL;
    retry_entry *e = retry_find_locked(bus, m, &link);
    if (e != NULL) {
        *link = e->next;
        free(e);
    }
}

static void pending_done_locked(mc_bus *bus)
{
    if (bus->pending > 0)
        bus->pending--;
    pthread_cond_broadcast(&bus->cond);
}

static void fail_async_cb(uv_async_t *h);

/* Reports a final failure: log, counters, first-failure text for the next
 * flush, and the callback (directly in thread mode, via the loop in loop
 * mode). With release_pending, the message also stops counting as pending
 * in the same critical section that records the failure, and only after a
 * thread-mode callback has returned: whoever sees the pending count drop
 * (mc_bus_flush) must also see the failure. Called without bus->mu held. */
static void report_failure(mc_bus *bus, const char *subject, const char *msg_id, mc_status st,
                           const char *text, uint32_t attempts, bool notify, bool release_pending)
{
    MC_LOG_ERROR("publish failed", MC_LF_STR("subject", subject), MC_LF_STR("msg_id", msg_id),
                 MC_LF_STR("error", text), MC_LF_UINT("attempts", attempts));
    if (notify && bus->o.on_publish_error && bus->loop == NULL) {
        mc_bus_publish_failure f = {subject, msg_id, st, text, attempts};
        bus->o.on_publish_error(bus->o.on_publish_error_ctx, &f);
    }
    failure_note *n = NULL;
    if (notify && bus->o.on_publish_error && bus->loop != NULL)
        n = calloc(1, sizeof *n);
    if (n != NULL) {
        n->subject = dup_str(subject);
        n->msg_id = dup_str(msg_id);
        n->error = dup_str(text);
        n->status = st;
        n->attempts = attempts;
    }
    atomic_fetch_add(&bus->failures, 1);
    pthread_mutex_lock(&bus->mu);
    if (bus->failures_since_flush++ == 0)
        snprintf(bus->first_failure, sizeof bus->first_failure, "%s (msg id %s): %s", subject,
                 msg_id, text);
    bool queued = false;
    if (n != NULL && bus->fail_async_ready && bus->fail_queued < MAX_QUEUED_FAILURES) {
        if (bus->fail_tail)
            bus->fail_tail->next = n;
        else
            bus->fail_head = n;
        bus->fail_tail = n;
        bus->fail_queued++;
        queued = true;
    }
    if (release_pending)
        pending_done_locked(bus);
    pthread_mutex_unlock(&bus->mu);
    if (queued) {
        uv_async_send(&bus->fail_async);
    } else if (n != NULL) {
        MC_LOG_WARN("publish failure not handed to the loop (queue full or closing)",
                    MC_LF_STR("msg_id", msg_id));
        free(n->subject);
        free(n->msg_id);
        free(n->error);
        free(n);
    }
}

static void fail_async_cb(uv_async_t *h)
{
    mc_bus *bus = h->data;
    pthread_mutex_lock(&bus->mu);
    failure_note *n = bus->fail_head;
    bus->fail_head = bus->fail_tail = NULL;
    bus->fail_queued = 0;
    pthread_mutex_unlock(&bus->mu);
    while (n) {
        failure_note *next = n->next;
        mc_bus_publish_failure f = {n->subject ? n->subject : "", n->msg_id ? n->msg_id : "",
                                    n->status, n->error ? n->error : "", n->attempts};
        if (bus->o.on_publish_error)
            bus->o.on_publish_error(bus->o.on_publish_error_ctx, &f);
        free(n->subject);
        free(n->msg_id);
        free(n->error);
        free(n);
        n = next;
    }
}

static bool retryable(natsStatus s, jsErrCode jerr)
{
    if (jerr != 0)
        return false; /* the server answered and said no */
    switch (s) {
    case NATS_TIMEOUT:
    case NATS_NO_RESPONDERS:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NO_SERVER:
    case NATS_STALE_CONNECTION:
    case NATS_INSUFFICIENT_BUFFER:
        return true;
    default:
        return false;
    }
}

/* One attempt of msg failed (the library gives the message back to us).
 * Either queue it for the retry thread or fail it for good. */
static void attempt_failed(mc_bus *bus, natsMsg *msg, natsStatus s, jsErrCode jerr,
                           const char *errtext)
{
    pthread_mutex_lock(&bus->mu);
    retry_entry *e = retry_find_locked(bus, msg, NULL);
    if (e == NULL) {
        e = calloc(1, sizeof *e);
        if (e != NULL) {
            e->msg = msg;
            e->attempts = 1;
            e->next = bus->retries;
            bus->retries = e;
        }
    }
    if (e != NULL && !bus->closing && e->attempts < bus->o.publish_attempts && retryable(s, jerr)) {
        uint32_t shift = e->attempts - 1 > 16 ? 16 : e->attempts - 1;
        e->queued = true;
        uint64_t delay = bus->o.retry_backoff_ms << shift;
        uint64_t cap = bus->o.retry_backoff_ms > RETRY_BACKOFF_CAP_MS ? bus->o.retry_backoff_ms
                                                                      : RETRY_BACKOFF_CAP_MS;
        e->due_ms = now_ms() + (delay < cap ? delay : cap);
        pthread_cond_broadcast(&bus->cond);
        pthread_mutex_unlock(&bus->mu);
        return;
    }
    uint32_t attempts = e ? e->attempts : 1;
    retry_remove_locked(bus, msg);
    pthread_mutex_unlock(&bus->mu);

    char text[400];
    if (errtext != NULL && errtext[0] != '\0' && s != NATS_NO_RESPONDERS)
        snprintf(text, sizeof text, "%s", errtext);
    else
        nats_error_text(text, sizeof text, s, 0);
    if (jerr != 0) {
        size_t l = strlen(text);
        snprintf(text + l, sizeof text - l, " [JetStream error %d]", (int)jerr);
    }
    const char *id = NULL;
    if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) != NATS_OK)
        id = "";
    const char *subj = natsMsg_GetSubject(msg);
    report_failure(bus, subj ? subj : "", id ? id : "", status_from_nats(s), text, attempts, true,
                   true);
    natsMsg_Destroy(msg);
}

static void on_pub_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    mc_bus *bus = closure;
    atomic_fetch_add(&bus->cb_active, 1);
    if (pae == NULL || pae->Err == NATS_OK) { /* acked */
        atomic_fetch_add(&bus->published, 1);
        if (pa != NULL && pa->Duplicate)
            atomic_fetch_add(&bus->duplicates, 1);
        pthread_mutex_lock(&bus->mu);
        if (bus->retries != NULL)
            retry_remove_locked(bus, msg);
        pending_done_locked(bus);
        pthread_mutex_unlock(&bus->mu);
        natsMsg_Destroy(msg);
    } else {
        attempt_failed(bus, msg, pae->Err, pae->ErrCode, pae->ErrText);
    }
    atomic_fetch_sub(&bus->cb_active, 1);
}

/* Resends queued messages when their backoff is due. Runs until close. */
static void *retry_main(void *arg)
{
    mc_bus *bus = arg;
    pthread_mutex_lock(&bus->mu);
    while (!bus->closing) {
        retry_entry *due = NULL;
        uint64_t earliest = UINT64_MAX, now = now_ms();
        for (retry_entry *e = bus->retries; e; e = e->next) {
            if (!e->queued)
                continue;
            if (e->due_ms <= now) {
                due = e;
                break;
            }
            if (e->due_ms < earliest)
                earliest = e->due_ms;
        }
        if (due == NULL) {
            if (earliest == UINT64_MAX) {
                pthread_cond_wait(&bus->cond, &bus->mu);
            } else {
                struct timespec ts = deadline_in(earliest - now);
                pthread_cond_timedwait(&bus->cond, &bus->mu, &ts);
            }
            continue;
        }
        due->queued = false;
        due->attempts++;
        natsMsg *msg = due->msg;
        pthread_mutex_unlock(&bus->mu);

        atomic_fetch_add(&bus->retried, 1);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = (int64_t)bus->o.ack_timeout_ms;
        natsMsg *m = msg;
        natsStatus s = js_PublishMsgAsync(bus->js, &m, &po);
        if (s != NATS_OK) {
            char text[400];
            nats_error_text(text, sizeof text, s, 0);
            attempt_failed(bus, msg, s, 0, text);
        }
        pthread_mutex_lock(&bus->mu);
    }
    pthread_mutex_unlock(&bus->mu);
    return NULL;
}

/* ---- Streams ---- */

static int64_t limit_or_unlimited(uint64_t v)
{
    return v == 0 ? -1 : (v > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)v);
}

static const char *storage_name(jsStorageType t)
{
    return t == js_MemoryStorage ? "memory" : "file";
}

static const char *retention_name(jsRetentionPolicy r)
{
    switch (r) {
    case js_LimitsPolicy:
        return "limits";
    case js_InterestPolicy:
        return "interest";
    case js_WorkQueuePolicy:
        return "workqueue";
    }
    return "unknown";
}

static mc_status provision_one(mc_bus *bus, mc_bus_stream which, mc_error *err)
{
    const char *name = bus->stream_names[which];
    const char *subject = bus->stream_subjects[which];
    const mc_bus_stream_limits *lim = which == MC_BUS_STREAM_SIM ? &bus->o.sim_limits
                                                                 : &bus->o.ops_limits;
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[1] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = js_LimitsPolicy;
    cfg.Storage = bus->o.memory_storage ? js_MemoryStorage : js_FileStorage;
    cfg.Discard = js_DiscardOld;
    cfg.Replicas = (int64_t)bus->o.replicas;
    cfg.MaxAge = lim->max_age_ms ? (int64_t)lim->max_age_ms * NS_PER_MS : 0;
    cfg.MaxBytes = limit_or_unlimited(lim->max_bytes);
    cfg.MaxMsgs = limit_or_unlimited(lim->max_msgs);
    /* jsStreamConfig.Duplicates is in nanoseconds; the server refuses a
     * window longer than the maximum age. */
    uint64_t dup_ms = bus->o.duplicate_window_ms;
    if (lim->max_age_ms && dup_ms > lim->max_age_ms)
        dup_ms = lim->max_age_ms;
    cfg.Duplicates = (int64_t)dup_ms * NS_PER_MS;

    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, bus->ctl_js, name, NULL, &jerr);
    if (s == NATS_NOT_FOUND || (s == NATS_OK && si == NULL) || jerr == JSStreamNotFoundErr) {
        jsStreamInfo_Destroy(si);
        si = NULL;
        jerr = 0;
        s = js_AddStream(&si, bus->ctl_js, &cfg, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK) {
            char what[300];
            if (jerr == JSStreamSubjectOverlapErr) {
                return mc_error_set(err, MC_ERR_STATE,
                                    "stream %s: its subjects %s overlap with another stream's; "
                                    "use a different subject prefix or delete the other stream",
                                    name, subject);
            }
            snprintf(what, sizeof what, "creating stream %s (subjects %s)", name, subject);
            return nats_fail(err, s, jerr, what);
        }
        MC_LOG_INFO("stream created", MC_LF_STR("stream", name), MC_LF_STR("subjects", subject),
                    MC_LF_STR("storage", storage_name(cfg.Storage)),
                    MC_LF_INT("replicas", cfg.Replicas));
        return MC_OK;
    }
    if (s != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "looking up stream %s", name);
        return nats_fail(err, s, jerr, what);
    }

    /* The stream exists: settings that change what it holds or how are
     * incompatible; limits are updated in place. */
    const jsStreamConfig *have = si->Config;
    mc_status st = MC_OK;
    if (have == NULL) {
        st = mc_error_set(err, MC_ERR_STATE, "stream %s: the server returned no configuration",
                          name);
    } else if (have->SubjectsLen != 1 || strcmp(have->Subjects[0], subject) != 0) {
        char list[256] = "";
        size_t l = 0;
        for (int i = 0; i < have->SubjectsLen && l < sizeof list; i++)
            l += (size_t)snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "",
                                  have->Subjects[i]);
        st = mc_error_set(err, MC_ERR_STATE,
                          "stream %s exists with incompatible setting subjects=[%s] (expected "
                          "[%s]); it is not recreated automatically: delete or rename it",
                          name, list, subject);
    } else if (have->Storage != cfg.Storage) {
        st = mc_error_set(err, MC_ERR_STATE,
                          "stream %s exists with incompatible setting storage=%s (expected %s); "
                          "it is not recreated automatically: delete or rename it",
                          name, storage_name(have->Storage), storage_name(cfg.Storage));
    } else if (have->Retention != cfg.Retention) {
        st = mc_error_set(err, MC_ERR_STATE,
                          "stream %s exists with incompatible setting retention=%s (expected "
                          "%s); it is not recreated automatically: delete or rename it",
                          name, retention_name(have->Retention), retention_name(cfg.Retention));
    }
    bool update = st == MC_OK &&
                  (have->MaxAge != cfg.MaxAge || have->MaxBytes != cfg.MaxBytes ||
                   have->MaxMsgs != cfg.MaxMsgs || have->Duplicates != cfg.Duplicates);
    /* The replica count is the creator's: a service started with another
     * value (or the default) must not shrink or grow a stream the cluster
     * was set up with; moving replicas is an operator's decision. */
    if (st == MC_OK && have->Replicas != cfg.Replicas && (have->Replicas > 1 || cfg.Replicas > 1))
        MC_LOG_WARN("stream exists with another replica count; kept as it is",
                    MC_LF_STR("stream", name), MC_LF_INT("replicas", have->Replicas),
                    MC_LF_INT("configured", cfg.Replicas));
    if (update)
        cfg.Replicas = have->Replicas;
    jsStreamInfo_Destroy(si);
    if (st != MC_OK)
        return st;
    if (update) {
        si = NULL;
        jerr = 0;
        s = js_UpdateStream(&si, bus->ctl_js, &cfg, NULL, &jerr);
        jsStreamInfo_Destroy(si);
        if (s != NATS_OK) {
            char what[300];
            snprintf(what, sizeof what, "updating the limits of stream %s", name);
            return nats_fail(err, s, jerr, what);
        }
        MC_LOG_INFO("stream limits updated", MC_LF_STR("stream", name));
    }
    return MC_OK;
}

mc_status mc_bus_provision(mc_bus *bus, mc_error *err)
{
    if (bus == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "mc_bus_provision: bus is NULL");
    for (int i = 0; i < MC_BUS_STREAM_COUNT; i++) {
        mc_status st = provision_one(bus, (mc_bus_stream)i, err);
        if (st != MC_OK)
            return st;
    }
    return MC_OK;
}

bool mc_bus_connected(const mc_bus *bus)
{
    if (bus == NULL || bus->nc == NULL || bus->ctl_nc == NULL)
        return false;
    return natsConnection_Status(bus->nc) == NATS_CONN_STATUS_CONNECTED &&
           natsConnection_Status(bus->ctl_nc) == NATS_CONN_STATUS_CONNECTED;
}

mc_status mc_bus_streams_delete(mc_bus *bus, mc_error *err)
{
    if (bus == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "mc_bus_streams_delete: bus is NULL");
    for (int i = 0; i < MC_BUS_STREAM_COUNT; i++) {
        jsErrCode jerr = 0;
        natsStatus s = js_DeleteStream(bus->ctl_js, bus->stream_names[i], NULL, &jerr);
        if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSStreamNotFoundErr) {
            char what[300];
            snprintf(what, sizeof what, "deleting stream %s", bus->stream_names[i]);
            return nats_fail(err, s, jerr, what);
        }
    }
    return MC_OK;
}

const char *mc_bus_stream_name(const mc_bus *bus, mc_bus_stream stream)
{
    if (bus == NULL || (int)stream < 0 || stream >= MC_BUS_STREAM_COUNT)
        return "";
    return bus->stream_names[stream];
}

const char *mc_bus_deadletter_subject(const mc_bus *bus)
{
    return bus ? bus->deadletter_subject : "";
}

/* ---- Open and free ---- */

static void apply_defaults(mc_bus_options *o)
{
    if (o->sim_limits.max_age_ms == 0 && o->sim_limits.max_bytes == 0 &&
        o->sim_limits.max_msgs == 0) {
        o->sim_limits.max_age_ms = DEF_SIM_MAX_AGE_MS;
        o->sim_limits.max_bytes = DEF_MAX_BYTES;
    }
    if (o->ops_limits.max_age_ms == 0 && o->ops_limits.max_bytes == 0 &&
        o->ops_limits.max_msgs == 0) {
        o->ops_limits.max_age_ms = DEF_OPS_MAX_AGE_MS;
        o->ops_limits.max_bytes = DEF_MAX_BYTES;
    }
    if (!o->duplicate_window_ms)
        o->duplicate_window_ms = DEF_DUP_WINDOW_MS;
    if (!o->max_pending_acks)
        o->max_pending_acks = DEF_MAX_PENDING;
    if (!o->stall_wait_ms)
        o->stall_wait_ms = DEF_STALL_WAIT_MS;
    if (!o->ack_timeout_ms)
        o->ack_timeout_ms = DEF_ACK_TIMEOUT_MS;
    if (!o->publish_attempts)
        o->publish_attempts = DEF_PUBLISH_ATTEMPTS;
    if (!o->retry_backoff_ms)
        o->retry_backoff_ms = DEF_RETRY_BACKOFF_MS;
    if (!o->request_timeout_ms)
        o->request_timeout_ms = DEF_REQUEST_TIMEOUT_MS;
    if (!o->connect_timeout_ms)
        o->connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
    if (!o->reconnect_wait_max_ms)
        o->reconnect_wait_max_ms = DEF_RECONNECT_MAX_MS;
    if (!o->replicas)
        o->replicas = 1;
}

static void bus_release_memory(mc_bus *bus)
{
    free(bus->name);
    for (int i = 0; i < MC_BUS_STREAM_COUNT; i++) {
        free(bus->stream_names[i]);
        free(bus->stream_subjects[i]);
    }
    free(bus->deadletter_subject);
    while (bus->fail_head) {
        failure_note *n = bus->fail_head;
        bus->fail_head = n->next;
        free(n->subject);
        free(n->msg_id);
        free(n->error);
        free(n);
    }
    pthread_cond_destroy(&bus->cond);
    pthread_mutex_destroy(&bus->mu);
    free(bus);
}

static void fail_async_closed(uv_handle_t *h)
{
    bus_release_memory(h->data);
}

static void reapers_join(mc_bus *bus, bool wait_all);

/* Closes connections and frees everything; used by open's failure path and
 * by mc_bus_free. */
static void bus_teardown(mc_bus *bus)
{
    if (bus->retry_started) {
        pthread_mutex_lock(&bus->mu);
        bus->closing = true;
        pthread_cond_broadcast(&bus->cond);
        pthread_mutex_unlock(&bus->mu);
        pthread_join(bus->retry_thread, NULL);
        bus->retry_started = false;
    }
    pthread_mutex_lock(&bus->mu);
    bus->closing = true;
    pthread_mutex_unlock(&bus->mu);

    /* Messages still waiting for a resend fail now: they will not be sent. */
    uint64_t lost_retries = 0;
    for (;;) {
        pthread_mutex_lock(&bus->mu);
        retry_entry *e = bus->retries;
        natsMsg *m = NULL;
        if (e != NULL && e->queued) {
            m = e->msg;
            bus->retries = e->next;
            free(e);
        } else if (e != NULL) {
            /* In flight inside nats.c; its context frees it below. */
            bus->retries = e->next;
            free(e);
        }
        pthread_mutex_unlock(&bus->mu);
        if (e == NULL)
            break;
        if (m != NULL) {
            const char *id = "";
            natsMsgHeader_Get(m, "Nats-Msg-Id", &id);
            const char *subj = natsMsg_GetSubject(m);
            report_failure(bus, subj ? subj : "", id ? id : "", MC_ERR_STATE,
                           "bus closed before the retry was sent", 0, false, true);
            natsMsg_Destroy(m);
            lost_retries++;
        }
    }
    if (bus->js != NULL) {
        jsCtx_Destroy(bus->js);
        bus->js = NULL;
    }
    if (bus->ctl_js != NULL) {
        jsCtx_Destroy(bus->ctl_js);
        bus->ctl_js = NULL;
    }
    if (bus->nc != NULL)
        natsConnection_Close(bus->nc);
    if (bus->ctl_nc != NULL && bus->ctl_nc != bus->nc)
        natsConnection_Close(bus->ctl_nc);
    /* With the connections closed, nothing a reaper waits for needs the
     * loop any more (requests, fetches and subscribes fail at once), so
     * joining them here is short even on the loop thread. */
    reapers_join(bus, true);
    /* An ack callback that started before the close may still be running on
     * nats.c's delivery thread; wait for it before the memory goes. */
    for (int i = 0; i < 2000 && atomic_load(&bus->cb_active) > 0; i++)
        nats_Sleep(1);
    pthread_mutex_lock(&bus->mu);
    uint64_t unacked = bus->pending;
    bus->pending = 0;
    pthread_mutex_unlock(&bus->mu);
    if (unacked > 0) {
        MC_LOG_ERROR("bus closed with publishes not acked; they may or may not be stored",
                     MC_LF_UINT("count", unacked));
        atomic_fetch_add(&bus->failures, unacked);
    }
    if (bus->ctl_nc != NULL && bus->ctl_nc != bus->nc)
        natsConnection_Destroy(bus->ctl_nc);
    if (bus->nc != NULL)
        natsConnection_Destroy(bus->nc);
    bus->nc = bus->ctl_nc = NULL;
    (void)lost_retries;

    if (bus->fail_async_ready) {
        bus->fail_async_ready = false;
        uv_close((uv_handle_t *)&bus->fail_async, fail_async_closed);
    } else {
        bus_release_memory(bus);
    }
}

mc_status mc_bus_open(uv_loop_t *loop, const mc_nats_config *nats, const mc_bus_options *opts,
                      mc_bus **out, mc_error *err)
{
    if (out == NULL || nats == NULL || nats->url == NULL || nats->url[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "mc_bus_open: NATS_URL is empty");
    *out = NULL;
    mc_bus *bus = calloc(1, sizeof *bus);
    if (bus == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    if (opts != NULL)
        bus->o = *opts;
    apply_defaults(&bus->o);
    pthread_mutex_init(&bus->mu, NULL);
    cond_init_monotonic(&bus->cond);
    bus->loop = loop;

    const char *sp = opts && opts->stream_prefix ? opts->stream_prefix : "";
    const char *subp = opts && opts->subject_prefix ? opts->subject_prefix : "";
    bus->name = dup_str(opts && opts->name && opts->name[0] ? opts->name : DEF_NAME);
    bus->stream_names[MC_BUS_STREAM_SIM] = cat_str(sp, "SIM");
    bus->stream_names[MC_BUS_STREAM_OPS] = cat_str(sp, "OPS");
    bus->stream_subjects[MC_BUS_STREAM_SIM] = cat_str(subp, "sim.>");
    bus->stream_subjects[MC_BUS_STREAM_OPS] = cat_str(subp, "ops.>");
    bus->deadletter_subject = cat_str(subp, MC_BUS_DEADLETTER_SUBJECT);
    if (!bus->name || !bus->stream_names[0] || !bus->stream_names[1] || !bus->stream_subjects[0] ||
        !bus->stream_subjects[1] || !bus->deadletter_subject) {
        bus_teardown(bus);
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    }
    if (bus->o.replicas > MAX_REPLICAS) {
        uint32_t r = bus->o.replicas;
        bus_teardown(bus);
        return mc_error_set(err, MC_ERR_INVALID,
                            "stream replicas %u: JetStream allows 1 to %d", (unsigned)r,
                            MAX_REPLICAS);
    }
    for (const char *p = sp; *p; p++) {
        if (*p == '.' || *p == '*' || *p == '>' || *p == ' ' || *p == '/' || *p == '\\') {
            bus_teardown(bus);
            return mc_error_set(err, MC_ERR_INVALID,
                                "stream prefix '%s': a stream name cannot contain '%c'", sp, *p);
        }
    }

    jsOptions cj;
    jsOptions_Init(&cj);
    cj.Wait = (int64_t)bus->o.request_timeout_ms;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = (int64_t)bus->o.request_timeout_ms;
    /* Our own bound (max_pending_acks) is checked before nats.c's; nats.c's
     * is set a little higher so its stall (which would block the loop
     * thread) never triggers, and its stall wait is long for the retry
     * thread, which may wait. */
    jo.PublishAsync.MaxPending = (int64_t)bus->o.max_pending_acks + 64;
    jo.PublishAsync.StallWait = (int64_t)bus->o.stall_wait_ms;
    jo.PublishAsync.AckHandler = on_pub_ack;
    jo.PublishAsync.AckHandlerClosure = bus;

    /* The control connection first, and the streams provisioned on it, so a
     * failure leaves nothing attached to the loop. In thread mode it is the
     * only connection. */
    mc_status st = connect_one(bus, nats, NULL, loop != NULL, &bus->ctl_nc, err);
    natsStatus s = NATS_OK;
    if (st == MC_OK) {
        s = natsConnection_JetStream(&bus->ctl_js, bus->ctl_nc, &cj);
        if (s != NATS_OK)
            st = nats_fail(err, s, 0, "JetStream context");
    }
    if (st == MC_OK && !bus->o.skip_provision)
        st = mc_bus_provision(bus, err);
    if (st == MC_OK && loop != NULL) {
        /* The first attach of the adapter happens here, on the loop thread. */
        bus->loop_thread = uv_thread_self();
        st = connect_one(bus, nats, loop, false, &bus->nc, err);
    } else if (st == MC_OK) {
        bus->nc = bus->ctl_nc;
    }
    if (st == MC_OK) {
        s = natsConnection_JetStream(&bus->js, bus->nc, &jo);
        if (s != NATS_OK)
            st = nats_fail(err, s, 0, "JetStream context");
    }
    if (st == MC_OK) {
        if (pthread_create(&bus->retry_thread, NULL, retry_main, bus) != 0)
            st = mc_error_set(err, MC_ERR_INTERNAL, "cannot start the publish retry thread");
        else
            bus->retry_started = true;
    }
    if (st == MC_OK && loop != NULL) {
        if (uv_async_init(loop, &bus->fail_async, fail_async_cb) != 0) {
            st = mc_error_set(err, MC_ERR_INTERNAL, "uv_async_init failed");
        } else {
            bus->fail_async.data = bus;
            bus->fail_async_ready = true;
        }
    }
    if (st != MC_OK) {
        bus_teardown(bus);
        return st;
    }
    char where[512];
    redact_urls(nats->url, where, sizeof where);
    MC_LOG_INFO("bus connected", MC_LF_STR("url", where), MC_LF_STR("name", bus->name),
                MC_LF_BOOL("loop", loop != NULL),
                MC_LF_STR("sim_stream", bus->stream_names[MC_BUS_STREAM_SIM]),
                MC_LF_STR("ops_stream", bus->stream_names[MC_BUS_STREAM_OPS]));
    *out = bus;
    return MC_OK;
}

static void consumer_close_internal(mc_bus_consumer *c);

void mc_bus_free(mc_bus *bus)
{
    if (bus == NULL)
        return;
    for (;;) {
        pthread_mutex_lock(&bus->mu);
        mc_bus_consumer *c = bus->consumers;
        pthread_mutex_unlock(&bus->mu);
        if (c == NULL)
            break;
        consumer_close_internal(c);
    }
    if (!on_loop_thread(bus)) {
        mc_error e;
        if (mc_bus_flush(bus, 2000, &e) != MC_OK && e.status == MC_ERR_TIMEOUT)
            MC_LOG_WARN("closing the bus with acks pending", MC_LF_STR("error", e.msg));
    }
    bus_teardown(bus);
}

/* ---- Publishing ---- */

static mc_status check_publish_args(mc_bus *bus, const char *subject, const void *data,
                                    size_t len, const char *msg_id, mc_error *err)
{
    if (bus == NULL || subject == NULL || subject[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "publish: empty subject");
    if (msg_id == NULL || msg_id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID,
                            "publish to %s: a msg id is required for de-duplication", subject);
    if (data == NULL && len > 0)
        return mc_error_set(err, MC_ERR_INVALID, "publish to %s: data is NULL", subject);
    if (len > (size_t)INT_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "publish to %s: %zu bytes is too large", subject,
                            len);
    return MC_OK;
}

mc_status mc_bus_publish_async(mc_bus *bus, const char *subject, const void *data, size_t len,
                               const char *msg_id, mc_error *err)
{
    mc_status st = check_publish_args(bus, subject, data, len, msg_id, err);
    if (st != MC_OK)
        return st;
    pthread_mutex_lock(&bus->mu);
    if (bus->pending >= bus->o.max_pending_acks) {
        if (on_loop_thread(bus)) {
            uint64_t p = bus->pending;
            pthread_mutex_unlock(&bus->mu);
            return mc_error_set(err, MC_ERR_LIMIT,
                                "publish to %s: %" PRIu64 " acks pending (max_pending_acks); "
                                "publish again once acks arrive",
                                subject, p);
        }
        struct timespec ts = deadline_in(bus->o.stall_wait_ms);
        int rc = 0;
        while (bus->pending >= bus->o.max_pending_acks && !bus->closing && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&bus->cond, &bus->mu, &ts);
        if (bus->pending >= bus->o.max_pending_acks) {
            uint64_t p = bus->pending;
            pthread_mutex_unlock(&bus->mu);
            return mc_error_set(err, MC_ERR_TIMEOUT,
                                "publish to %s: stalled for %" PRIu64 " ms with %" PRIu64
                                " acks pending",
                                subject, bus->o.stall_wait_ms, p);
        }
    }
    if (bus->closing) {
        pthread_mutex_unlock(&bus->mu);
        return mc_error_set(err, MC_ERR_STATE, "publish to %s: the bus is closing", subject);
    }
    bus->pending++;
    pthread_mutex_unlock(&bus->mu);

    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, (const char *)data, (int)len);
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msg_id;
        po.MaxWait = (int64_t)bus->o.ack_timeout_ms;
        s = js_PublishMsgAsync(bus->js, &m, &po);
    }
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        pthread_mutex_lock(&bus->mu);
        pending_done_locked(bus);
        pthread_mutex_unlock(&bus->mu);
        char what[400];
        snprintf(what, sizeof what, "publish to %s (msg id %s)", subject, msg_id);
        return nats_fail(err, s, 0, what);
    }
    return MC_OK;
}

mc_status mc_bus_publish_stamped(mc_bus *bus, const char *subject, const char *run_id,
                                 uint64_t tick, uint64_t producer_seq, const void *data,
                                 size_t len, mc_error *err)
{
    char id[256];
    if (subject == NULL || run_id == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "publish: subject and run id are required");
    mc_id_msg(id, sizeof id, run_id, subject, tick, producer_seq);
    return mc_bus_publish_async(bus, subject, data, len, id, err);
}

mc_status mc_bus_publish(mc_bus *bus, const char *subject, const void *data, size_t len,
                         const char *msg_id, mc_bus_pub_ack *ack, mc_error *err)
{
    mc_status st = check_publish_args(bus, subject, data, len, msg_id, err);
    if (st != MC_OK)
        return st;
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = msg_id;
    po.MaxWait = (int64_t)bus->o.request_timeout_ms;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&pa, bus->ctl_js, subject, data, (int)len, &po, &jerr);
    if (s != NATS_OK) {
        jsPubAck_Destroy(pa);
        char what[400];
        snprintf(what, sizeof what, "publish to %s (msg id %s)", subject, msg_id);
        return nats_fail(err, s, jerr, what);
    }
    atomic_fetch_add(&bus->published, 1);
    if (pa && pa->Duplicate)
        atomic_fetch_add(&bus->duplicates, 1);
    if (ack != NULL) {
        ack->stream_seq = pa ? pa->Sequence : 0;
        ack->duplicate = pa ? pa->Duplicate : false;
    }
    jsPubAck_Destroy(pa);
    return MC_OK;
}

mc_status mc_bus_flush(mc_bus *bus, uint64_t timeout_ms, mc_error *err)
{
    if (bus == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "mc_bus_flush: bus is NULL");
    if (on_loop_thread(bus))
        return mc_error_set(err, MC_ERR_STATE,
                            "mc_bus_flush on the loop thread would wait for acks that only "
                            "this loop can read; poll mc_bus_acks_pending from a timer instead");
    pthread_mutex_lock(&bus->mu);
    struct timespec ts = deadline_in(timeout_ms);
    int rc = 0;
    while (bus->pending > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&bus->cond, &bus->mu, &ts);
    uint64_t pending = bus->pending;
    uint64_t failed = bus->failures_since_flush;
    char first[sizeof bus->first_failure];
    memcpy(first, bus->first_failure, sizeof first);
    bus->failures_since_flush = 0;
    bus->first_failure[0] = '\0';
    pthread_mutex_unlock(&bus->mu);
    if (failed > 0)
        return mc_error_set(err, MC_ERR_IO,
                            "%" PRIu64 " publish(es) failed since the last flush; first: %s",
                            failed, first);
    if (pending > 0)
        return mc_error_set(err, MC_ERR_TIMEOUT,
                            "%" PRIu64 " publish ack(s) still pending after %" PRIu64 " ms",
                            pending, timeout_ms);
    return MC_OK;
}

/* ---- Consumers ---- */

/* The consumer whose callback this thread is running in thread mode, so a
 * callback that closes its own consumer does not wait for itself. */
static _Thread_local mc_bus_consumer *tls_in_callback;

static void call_on_batch(mc_bus_consumer *c, mc_bus_batch *b)
{
    mc_bus_consumer *outer = tls_in_callback;
    tls_in_callback = c;
    c->on_batch(c->ctx, b);
    tls_in_callback = outer;
}

static void consumer_destroy(mc_bus_consumer *c)
{
    if (c->sub != NULL)
        natsSubscription_Destroy(c->sub);
    free(c->durable);
    free(c->subject);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Drops one reference; frees the consumer on the last. */
static void consumer_unref(mc_bus_consumer *c)
{
    pthread_mutex_lock(&c->mu);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        consumer_destroy(c);
}

static mc_bus_batch *batch_new(mc_bus_consumer *c, size_t cap)
{
    mc_bus_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->msgs = calloc(cap ? cap : 1, sizeof *b->msgs);
    if (b->msgs == NULL) {
        free(b);
        return NULL;
    }
    b->cap = cap;
    b->c = c;
    return b;
}

/* Fills m from nm (taking ownership) and counts it. */
static void msg_init(mc_bus_consumer *c, mc_bus_batch *b, mc_bus_msg *m, natsMsg *nm)
{
    memset(m, 0, sizeof *m);
    m->nm = nm;
    m->batch = b;
    m->settled = c->ordered; /* ordered consumers have no acks */
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, nm) == NATS_OK && meta != NULL) {
        m->stream_seq = meta->Sequence.Stream;
        m->num_delivered = meta->NumDelivered;
        jsMsgMetaData_Destroy(meta);
    }
    atomic_fetch_add(&c->bus->consumed, 1);
    atomic_fetch_add(&c->delivered, 1);
    if (m->num_delivered > 1)
        atomic_fetch_add(&c->bus->redelivered, 1);
}

void mc_bus_batch_free(mc_bus_batch *b)
{
    if (b == NULL)
        return;
    mc_bus_consumer *c = b->c;
    for (size_t i = 0; i < b->count; i++)
        natsMsg_Destroy(b->msgs[i].nm);
    size_t n = b->count;
    free(b->msgs);
    free(b);
    pthread_mutex_lock(&c->mu);
    if (c->batches_inflight > 0)
        c->batches_inflight--;
    c->msgs_inflight = c->msgs_inflight >= n ? c->msgs_inflight - (uint32_t)n : 0;
    pthread_cond_broadcast(&c->cond);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        consumer_destroy(c);
}

/* Hands a full batch over: to the loop (queue + uv_async_send) or, in
 * thread mode, straight to the callback on this thread. The caller has
 * counted it in batches_inflight and refs. In loop mode the wake-up is sent
 * under c->mu and only while the consumer is open: close sets closing under
 * the same lock before it closes the handle, so no thread ever signals a
 * closing handle. */
static void hand_over(mc_bus_consumer *c, mc_bus_batch *b)
{
    if (c->bus->loop != NULL) {
        pthread_mutex_lock(&c->mu);
        if (c->closing) {
            pthread_mutex_unlock(&c->mu);
            mc_bus_batch_free(b); /* unacked: redelivered after ack_wait */
            return;
        }
        if (c->ready_tail)
            c->ready_tail->next = b;
        else
            c->ready_head = b;
        c->ready_tail = b;
        uv_async_send(&c->async);
        pthread_mutex_unlock(&c->mu);
    } else {
        call_on_batch(c, b);
    }
}

static void consumer_async_cb(uv_async_t *h)
{
    mc_bus_consumer *c = h->data;
    pthread_mutex_lock(&c->mu);
    mc_bus_batch *b = c->ready_head;
    c->ready_head = c->ready_tail = NULL;
    c->refs++; /* keeps c alive while its batches are handed over */
    pthread_mutex_unlock(&c->mu);
    while (b) {
        mc_bus_batch *next = b->next;
        b->next = NULL;
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (closing)
            mc_bus_batch_free(b);
        else
            c->on_batch(c->ctx, b);
        b = next;
    }
    consumer_unref(c);
}

static void consumer_async_closed(uv_handle_t *h)
{
    consumer_unref(h->data);
}

/* Sleeps up to ms unless the consumer is closing. Returns true if closing. */
static bool consumer_pause(mc_bus_consumer *c, uint64_t ms)
{
    pthread_mutex_lock(&c->mu);
    struct timespec ts = deadline_in(ms);
    int rc = 0;
    while (!c->closing && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    bool closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    return closing;
}

/* Binds a pull subscription to the existing durable (created on the control
 * connection). Binding, rather than letting nats.c create the consumer,
 * matters: nats.c deletes a consumer it created itself when the
 * subscription is unsubscribed, durable or not. */
static natsStatus pull_bind(mc_bus_consumer *c, natsSubscription **sub, jsErrCode *jerr)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->bus->stream_names[c->stream];
    so.Consumer = c->durable;
    so.ManualAck = true;
    return js_PullSubscribe(sub, c->bus->js, c->subject, c->durable, NULL, &so, jerr);
}

static void ordered_msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure);
static void ordered_complete_cb(void *closure);

static natsStatus ordered_subscribe(mc_bus_consumer *c, natsSubscription **sub, jsErrCode *jerr)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = c->bus->stream_names[c->stream];
    so.Ordered = true;
    if (c->start_seq > 0) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = c->start_seq;
    } else {
        so.Config.DeliverPolicy = js_DeliverNew;
    }
    natsStatus s = js_Subscribe(sub, c->bus->js, c->subject, ordered_msg_cb, c, NULL, &so, jerr);
    if (s == NATS_OK) {
        /* Lets close wait until nats.c has returned from the last callback. */
        pthread_mutex_lock(&c->mu);
        c->refs++;
        pthread_mutex_unlock(&c->mu);
        if (natsSubscription_SetOnCompleteCB(*sub, ordered_complete_cb, c) != NATS_OK) {
            pthread_mutex_lock(&c->mu);
            c->refs--;
            c->sub_complete = true;
            pthread_mutex_unlock(&c->mu);
        }
    }
    return s;
}

/* Makes the subscription, retrying with backoff until it works or the
 * consumer closes (loop mode: the reply is read by the loop, so this runs
 * on a worker thread). Returns false if closing. */
static bool worker_subscribe(mc_bus_consumer *c)
{
    uint64_t backoff = 200;
    for (;;) {
        natsSubscription *sub = NULL;
        jsErrCode jerr = 0;
        natsStatus s = c->ordered ? ordered_subscribe(c, &sub, &jerr) : pull_bind(c, &sub, &jerr);
        if (s == NATS_OK) {
            pthread_mutex_lock(&c->mu);
            bool closing = c->closing;
            if (!closing)
                c->sub = sub;
            pthread_mutex_unlock(&c->mu);
            if (closing) {
                natsSubscription_Unsubscribe(sub);
                pthread_mutex_lock(&c->mu);
                c->sub = sub; /* destroyed with the consumer */
                pthread_mutex_unlock(&c->mu);
                return false;
            }
            return true;
        }
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (closing)
            return false; /* the failure is the close itself */
        char text[400];
        nats_error_text(text, sizeof text, s, jerr);
        MC_LOG_WARN("consumer subscribe failed; retrying",
                    MC_LF_STR("stream", c->bus->stream_names[c->stream]),
                    MC_LF_STR("consumer", c->durable ? c->durable : "(ordered)"),
                    MC_LF_STR("error", text), MC_LF_UINT("retry_ms", backoff));
        if (consumer_pause(c, backoff))
            return false;
        if (backoff < 5000)
            backoff *= 2;
    }
}

static mc_status pull_create(mc_bus_consumer *c, mc_error *err);
static void *pull_worker_loop(mc_bus_consumer *c);

/* The worker holds a reference, so a callback that closes its own consumer
 * (and therefore cannot join this thread) leaves it valid until we exit. */
static void *pull_worker(void *arg)
{
    mc_bus_consumer *c = arg;
    pull_worker_loop(c);
    consumer_unref(c);
    return NULL;
}

/* Creates the durable that pull_open could not (the server did not answer
 * then), retrying with backoff until it works or the consumer closes: a
 * service must go on consuming after an outage, however long. Returns
 * false if closing. */
static bool worker_create(mc_bus_consumer *c)
{
    uint64_t backoff = 200;
    for (unsigned attempt = 1;; attempt++) {
        mc_error err = {0};
        if (pull_create(c, &err) == MC_OK) {
            MC_LOG_INFO("durable consumer created",
                        MC_LF_STR("stream", c->bus->stream_names[c->stream]),
                        MC_LF_STR("consumer", c->durable), MC_LF_UINT("attempts", attempt));
            return true;
        }
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (closing)
            return false;
        /* Bounded noise: the first failures, then one in ten (every ~50 s). */
        if (attempt <= 5 || attempt % 10 == 0)
            MC_LOG_WARN("creating the durable consumer failed; retrying",
                        MC_LF_STR("stream", c->bus->stream_names[c->stream]),
                        MC_LF_STR("consumer", c->durable), MC_LF_STR("error", err.msg),
                        MC_LF_UINT("attempt", attempt), MC_LF_UINT("retry_ms", backoff));
        if (consumer_pause(c, backoff))
            return false;
        if (backoff < 5000)
            backoff *= 2;
    }
}

static void *pull_worker_loop(mc_bus_consumer *c)
{
    if (c->needs_create && !worker_create(c))
        return NULL;
    if (c->sub == NULL && !worker_subscribe(c))
        return NULL;
    uint64_t backoff = 100;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        while (!c->closing && c->batches_inflight >= c->max_batches_inflight)
            pthread_cond_wait(&c->cond, &c->mu);
        bool closing = c->closing;
        natsSubscription *sub = c->sub;
        pthread_mutex_unlock(&c->mu);
        if (closing)
            break;

        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, sub, (int)c->batch_size,
                                              (int64_t)c->fetch_wait_ms, &jerr);
        if (s != NATS_OK || list.Count == 0) {
            natsMsgList_Destroy(&list);
            if (s == NATS_OK || s == NATS_TIMEOUT)
                continue;
            pthread_mutex_lock(&c->mu);
            closing = c->closing;
            pthread_mutex_unlock(&c->mu);
            if (closing)
                break;
            char text[400];
            nats_error_text(text, sizeof text, s, jerr);
            MC_LOG_WARN("fetch failed; retrying",
                        MC_LF_STR("stream", c->bus->stream_names[c->stream]),
                        MC_LF_STR("consumer", c->durable), MC_LF_STR("error", text));
            if (consumer_pause(c, backoff))
                break;
            if (backoff < 5000)
                backoff *= 2;
            continue;
        }
        backoff = 100;
        mc_bus_batch *b = batch_new(c, (size_t)list.Count);
        if (b == NULL) {
            /* Unacked, so the server redelivers them after ack_wait. */
            natsMsgList_Destroy(&list);
            MC_LOG_ERROR("out of memory for a batch; messages will be redelivered",
                         MC_LF_STR("consumer", c->durable));
            consumer_pause(c, 1000);
            continue;
        }
        for (int i = 0; i < list.Count; i++) {
            msg_init(c, b, &b->msgs[b->count++], list.Msgs[i]);
            list.Msgs[i] = NULL;
        }
        natsMsgList_Destroy(&list);
        pthread_mutex_lock(&c->mu);
        closing = c->closing;
        if (!closing) {
            c->batches_inflight++;
            c->msgs_inflight += (uint32_t)b->count;
            c->refs++;
        }
        pthread_mutex_unlock(&c->mu);
        if (closing) {
            /* Dropped unacked: redelivered later. Not counted as inflight. */
            for (size_t i = 0; i < b->count; i++)
                natsMsg_Destroy(b->msgs[i].nm);
            free(b->msgs);
            free(b);
            break;
        }
        hand_over(c, b);
    }
    return NULL;
}

static void *ordered_worker(void *arg)
{
    worker_subscribe(arg);
    consumer_unref(arg);
    return NULL;
}

static void ordered_complete_cb(void *closure)
{
    mc_bus_consumer *c = closure;
    pthread_mutex_lock(&c->mu);
    c->sub_complete = true;
    pthread_cond_broadcast(&c->cond);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (last)
        consumer_destroy(c);
}

static void ordered_msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    mc_bus_consumer *c = closure;
    pthread_mutex_lock(&c->mu);
    while (!c->closing && c->msgs_inflight >= c->max_msgs_inflight)
        pthread_cond_wait(&c->cond, &c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        natsMsg_Destroy(msg);
        return;
    }
    if (c->bus->loop != NULL) {
        /* Append to the newest batch the loop has not taken yet, so a burst
         * is handed over as a few batches rather than one wake-up each. */
        mc_bus_batch *b = c->ready_tail;
        if (b == NULL || b->count == b->cap) {
            b = batch_new(c, ORDERED_BATCH_CAP);
            if (b == NULL) {
                pthread_mutex_unlock(&c->mu);
                MC_LOG_ERROR("out of memory; ordered message dropped",
                             MC_LF_STR("subject", natsMsg_GetSubject(msg)));
                natsMsg_Destroy(msg);
                return;
            }
            c->batches_inflight++;
            c->refs++;
            if (c->ready_tail)
                c->ready_tail->next = b;
            else
                c->ready_head = b;
            c->ready_tail = b;
        }
        msg_init(c, b, &b->msgs[b->count], msg);
        b->count++;
        c->msgs_inflight++;
        uv_async_send(&c->async); /* under c->mu: see hand_over */
        pthread_mutex_unlock(&c->mu);
        return;
    }
    pthread_mutex_unlock(&c->mu);
    mc_bus_batch *b = batch_new(c, 1);
    if (b == NULL) {
        MC_LOG_ERROR("out of memory; ordered message dropped",
                     MC_LF_STR("subject", natsMsg_GetSubject(msg)));
        natsMsg_Destroy(msg);
        return;
    }
    msg_init(c, b, &b->msgs[0], msg);
    b->count = 1;
    pthread_mutex_lock(&c->mu);
    c->batches_inflight++;
    c->msgs_inflight++;
    c->refs++;
    pthread_mutex_unlock(&c->mu);
    call_on_batch(c, b);
}

static mc_status consumer_alloc(mc_bus *bus, bool ordered, mc_bus_stream stream,
                                const char *durable, const char *filter, mc_bus_batch_fn on_batch,
                                void *ctx, mc_bus_consumer **out, mc_error *err)
{
    if (bus == NULL || (int)stream < 0 || stream >= MC_BUS_STREAM_COUNT || on_batch == NULL)
        return mc_error_set(err, MC_ERR_INVALID,
                            "consumer: bus, a valid stream and on_batch are required");
    if (bus->loop != NULL && !on_loop_thread(bus))
        return mc_error_set(err, MC_ERR_STATE,
                            "consumer: open it on the loop thread of a loop-mode bus");
    mc_bus_consumer *c = calloc(1, sizeof *c);
    if (c == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    c->bus = bus;
    c->ordered = ordered;
    c->stream = stream;
    c->on_batch = on_batch;
    c->ctx = ctx;
    c->refs = 1;
    c->has_filter = filter && filter[0];
    c->durable = durable ? dup_str(durable) : NULL;
    c->subject = dup_str(c->has_filter ? filter : bus->stream_subjects[stream]);
    pthread_mutex_init(&c->mu, NULL);
    cond_init_monotonic(&c->cond);
    if (c->subject == NULL || (durable && c->durable == NULL)) {
        consumer_destroy(c);
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory");
    }
    *out = c;
    return MC_OK;
}

/* Registers c with the bus, sets up its loop handle and starts its thread.
 * On failure c is destroyed. */
static mc_status consumer_start(mc_bus_consumer *c, void *(*worker)(void *), mc_error *err)
{
    mc_bus *bus = c->bus;
    if (bus->loop != NULL) {
        if (uv_async_init(bus->loop, &c->async, consumer_async_cb) != 0) {
            if (c->sub)
                natsSubscription_Unsubscribe(c->sub);
            consumer_destroy(c);
            return mc_error_set(err, MC_ERR_INTERNAL, "uv_async_init failed");
        }
        c->async.data = c;
        c->refs++; /* dropped when the handle has closed */
    }
    if (worker != NULL) {
        c->refs++; /* the worker's, dropped when it exits */
        if (pthread_create(&c->worker, NULL, worker, c) != 0) {
            c->refs--;
            mc_error_set(err, MC_ERR_INTERNAL, "cannot start the consumer thread");
            if (c->sub)
                natsSubscription_Unsubscribe(c->sub);
            if (bus->loop != NULL)
                uv_close((uv_handle_t *)&c->async, consumer_async_closed);
            consumer_unref(c);
            return MC_ERR_INTERNAL;
        }
        c->worker_started = true;
    }
    pthread_mutex_lock(&bus->mu);
    c->next_open = bus->consumers;
    bus->consumers = c;
    pthread_mutex_unlock(&bus->mu);
    return MC_OK;
}

/* Makes the durable cc->Durable deliver from `start` (see bus.h): deletes
 * an existing durable and sets cc to create it again at the wanted
 * sequence (*placed true: cc->OptStartSeq is that sequence); a new durable
 * starts there too. */
static mc_status pull_place_start(mc_bus *bus, const char *sname, jsConsumerConfig *cc,
                                  uint64_t start, bool *placed, mc_error *err)
{
    *placed = false;
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, bus->ctl_js, sname, cc->Durable, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || (s == NATS_OK && ci == NULL)) {
        jsConsumerInfo_Destroy(ci);
        if (start != MC_BUS_PULL_FROM_ACK_FLOOR && start > 1) {
            cc->DeliverPolicy = js_DeliverByStartSequence;
            cc->OptStartSeq = start;
            *placed = true;
        }
        return MC_OK;
    }
    if (s != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "looking up durable consumer %s on stream %s", cc->Durable,
                 sname);
        return nats_fail(err, s, jerr, what);
    }
    uint64_t floor = ci->AckFloor.Stream;
    uint64_t want = start == MC_BUS_PULL_FROM_ACK_FLOOR ? floor + 1 : start;
    /* Recreated even when it looks exactly there (nothing outstanding, floor
     * want - 1): pull requests of a previous instance that died live on in
     * the old durable until they expire (fetch_wait), and a message the
     * server hands to one of them comes back only after ack_wait, behind
     * newer ones. Deleting the durable drops those requests with it. */
    MC_LOG_INFO("durable consumer recreated to start at a stream sequence",
                MC_LF_STR("stream", sname), MC_LF_STR("consumer", cc->Durable),
                MC_LF_UINT("start_seq", want), MC_LF_UINT("ack_floor", floor),
                MC_LF_UINT("delivered", ci->Delivered.Stream),
                MC_LF_INT("ack_pending", ci->NumAckPending));
    jsConsumerInfo_Destroy(ci);
    jerr = 0;
    s = js_DeleteConsumer(bus->ctl_js, sname, cc->Durable, NULL, &jerr);
    if (s != NATS_OK && s != NATS_NOT_FOUND && jerr != JSConsumerNotFoundErr) {
        char what[300];
        snprintf(what, sizeof what, "deleting durable consumer %s on stream %s to restart it at %" PRIu64,
                 cc->Durable, sname, want);
        return nats_fail(err, s, jerr, what);
    }
    cc->DeliverPolicy = js_DeliverByStartSequence;
    cc->OptStartSeq = want;
    *placed = true;
    return MC_OK;
}

/* Creates or updates c's durable (pull_open's options are in c), on the
 * control connection: a request whose reply the loop would otherwise have
 * to read. Any thread. */
static mc_status pull_create(mc_bus_consumer *c, mc_error *err)
{
    mc_bus *bus = c->bus;
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = c->durable;
    cc.AckPolicy = js_AckExplicit;
    cc.DeliverPolicy = js_DeliverAll;
    cc.AckWait = (int64_t)c->ack_wait_ms * NS_PER_MS;
    cc.MaxDeliver = c->max_deliver;
    if (c->has_filter)
        cc.FilterSubject = c->subject;
    const char *sname = bus->stream_names[c->stream];
    if (c->start_seq != 0) {
        bool placed = false;
        mc_status st = pull_place_start(bus, sname, &cc, c->start_seq, &placed, err);
        if (st != MC_OK)
            return st;
        /* Once the durable was deleted to be recreated at a sequence, a
         * retry after a failed create (an outage, in the background) must
         * create it at that same sequence: the ack floor it was computed
         * from is gone with the old durable. */
        if (placed)
            c->start_seq = cc.OptStartSeq;
    }
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddConsumer(&ci, bus->ctl_js, sname, &cc, NULL, &jerr);
    if (s != NATS_OK && jerr != 0 && jerr != JSStreamNotFoundErr) {
        /* It exists with other settings: update what may change. Where it
         * starts cannot change and does not matter any more (it resumes
         * after its ack floor): keep its own start settings. */
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        jsErrCode jerr2 = 0;
        if (js_GetConsumerInfo(&ci, bus->ctl_js, sname, c->durable, NULL, &jerr2) == NATS_OK &&
            ci != NULL && ci->Config != NULL) {
            cc.DeliverPolicy = ci->Config->DeliverPolicy;
            cc.OptStartSeq = ci->Config->OptStartSeq;
            cc.OptStartTime = ci->Config->OptStartTime;
        }
        jsConsumerInfo_Destroy(ci);
        ci = NULL;
        jerr2 = 0;
        s = js_UpdateConsumer(&ci, bus->ctl_js, sname, &cc, NULL, &jerr2);
        if (s != NATS_OK && jerr2 == 0) {
            /* No answer (the server went away meanwhile): not a refusal. */
            char what[300];
            jsConsumerInfo_Destroy(ci);
            snprintf(what, sizeof what, "updating durable consumer %s on stream %s", c->durable,
                     sname);
            return nats_fail(err, s, jerr2, what);
        }
        if (s != NATS_OK) {
            char text[400];
            nats_error_text(text, sizeof text, s, jerr2);
            jsConsumerInfo_Destroy(ci);
            return mc_error_set(err, MC_ERR_STATE,
                                "durable consumer %s on stream %s exists with incompatible "
                                "settings: %s",
                                c->durable, sname, text);
        }
    }
    jsConsumerInfo_Destroy(ci);
    if (s != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "creating durable consumer %s on stream %s", c->durable, sname);
        return nats_fail(err, s, jerr, what);
    }
    return MC_OK;
}

mc_status mc_bus_pull_open(mc_bus *bus, const mc_bus_pull_options *o, mc_bus_consumer **out,
                           mc_error *err)
{
    if (out == NULL || o == NULL || o->durable == NULL || o->durable[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "pull consumer: a durable name is required");
    *out = NULL;
    for (const char *p = o->durable; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            return mc_error_set(err, MC_ERR_INVALID,
                                "pull consumer: durable name '%s' may only hold letters, digits, "
                                "'_' and '-'",
                                o->durable);
    }
    mc_bus_consumer *c = NULL;
    mc_status st = consumer_alloc(bus, false, o->stream, o->durable, o->filter_subject, o->on_batch,
                                  o->ctx, &c, err);
    if (st != MC_OK)
        return st;
    c->batch_size = o->batch_size ? o->batch_size : DEF_BATCH;
    if (c->batch_size > 65536)
        c->batch_size = 65536;
    c->fetch_wait_ms = o->fetch_wait_ms ? o->fetch_wait_ms : DEF_FETCH_WAIT_MS;
    c->max_batches_inflight = o->max_batches_inflight ? o->max_batches_inflight : 1;

    c->ack_wait_ms = o->ack_wait_ms ? o->ack_wait_ms : DEF_ACK_WAIT_MS;
    c->max_deliver = o->max_deliver > 0 ? o->max_deliver : -1;
    c->start_seq = o->start_seq;
    st = pull_create(c, err);
    if (st != MC_OK) {
        /* A request that found no server (an outage, a leader election) is
         * no reason to fail: in loop mode the worker creates the durable
         * once the server answers, however long that takes, as it does for
         * the subscription. Refused settings are still reported here. */
        if (bus->loop == NULL || (st != MC_ERR_TIMEOUT && st != MC_ERR_UNAVAILABLE)) {
            consumer_destroy(c);
            return st;
        }
        MC_LOG_WARN("creating the durable consumer failed; retrying in the background",
                    MC_LF_STR("stream", bus->stream_names[o->stream]),
                    MC_LF_STR("consumer", o->durable), MC_LF_STR("error", err ? err->msg : ""));
        mc_error_clear(err);
        c->needs_create = true;
    }
    const char *sname = bus->stream_names[o->stream];
    jsErrCode jerr = 0;
    natsStatus s = NATS_OK;
    if (bus->loop == NULL) {
        jerr = 0;
        s = pull_bind(c, &c->sub, &jerr);
        if (s != NATS_OK) {
            char what[300];
            snprintf(what, sizeof what, "binding to durable consumer %s on stream %s", o->durable,
                     sname);
            consumer_destroy(c);
            return nats_fail(err, s, jerr, what);
        }
    }
    st = consumer_start(c, pull_worker, err);
    if (st == MC_OK)
        *out = c;
    return st;
}

mc_status mc_bus_ordered_open(mc_bus *bus, const mc_bus_ordered_options *o,
                              mc_bus_consumer **out, mc_error *err)
{
    if (out == NULL || o == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "ordered consumer: options are required");
    *out = NULL;
    mc_bus_consumer *c = NULL;
    mc_status st = consumer_alloc(bus, true, o->stream, NULL, o->filter_subject, o->on_batch,
                                  o->ctx, &c, err);
    if (st != MC_OK)
        return st;
    c->start_seq = o->start_seq;
    c->max_msgs_inflight = o->max_inflight ? o->max_inflight : DEF_ORDERED_INFLIGHT;
    if (bus->loop == NULL) {
        jsErrCode jerr = 0;
        natsSubscription *sub = NULL;
        natsStatus s = ordered_subscribe(c, &sub, &jerr);
        if (s != NATS_OK) {
            char what[300];
            snprintf(what, sizeof what, "ordered consumer on stream %s (%s)",
                     bus->stream_names[o->stream], c->subject);
            consumer_destroy(c);
            return nats_fail(err, s, jerr, what);
        }
        pthread_mutex_lock(&c->mu);
        c->sub = sub;
        pthread_mutex_unlock(&c->mu);
        st = consumer_start(c, NULL, err);
    } else {
        st = consumer_start(c, ordered_worker, err);
    }
    if (st == MC_OK)
        *out = c;
    return st;
}

/* The blocking half of a close: wakes and joins the worker and, for an
 * ordered consumer, waits until nats.c has returned from its last callback
 * (unsubscribing an ordered consumer also deletes its ephemeral consumer on
 * the server, a request whose reply the loop reads). self: called from the
 * consumer's own callback in thread mode. Drops the close's reference. */
static void consumer_finish_close(mc_bus_consumer *c, bool self)
{
    pthread_mutex_lock(&c->mu);
    natsSubscription *sub = c->sub;
    pthread_mutex_unlock(&c->mu);
    /* Unsubscribing wakes a fetch in progress; the subscription object stays
     * until the last batch is freed, so its messages can still be acked. */
    if (sub != NULL)
        natsSubscription_Unsubscribe(sub);
    if (c->worker_started) {
        if (self && pthread_equal(pthread_self(), c->worker))
            pthread_detach(c->worker); /* it exits once this callback returns */
        else
            pthread_join(c->worker, NULL);
        c->worker_started = false;
    }
    pthread_mutex_lock(&c->mu);
    sub = c->sub;
    pthread_mutex_unlock(&c->mu);
    if (c->ordered && sub != NULL && !self) {
        /* No callback may run after close returns (thread mode), and none
         * may touch c after it is freed (both modes). */
        pthread_mutex_lock(&c->mu);
        struct timespec ts = deadline_in(5000);
        int rc = 0;
        while (!c->sub_complete && rc != ETIMEDOUT)
            rc = pthread_cond_timedwait(&c->cond, &c->mu, &ts);
        pthread_mutex_unlock(&c->mu);
    }
    consumer_unref(c);
}

static void *reaper_main(void *arg)
{
    reaper *r = arg;
    consumer_finish_close(r->c, false);
    atomic_store(&r->done, true);
    return NULL;
}

/* Joins the reapers that have finished (all of them with wait_all: only
 * after the connections are closed, when none can wait for the loop). */
static void reapers_join(mc_bus *bus, bool wait_all)
{
    pthread_mutex_lock(&bus->mu);
    reaper *list = bus->reapers, *keep = NULL;
    bus->reapers = NULL;
    pthread_mutex_unlock(&bus->mu);
    while (list) {
        reaper *next = list->next;
        if (wait_all || atomic_load(&list->done)) {
            pthread_join(list->thread, NULL);
            free(list);
        } else {
            list->next = keep;
            keep = list;
        }
        list = next;
    }
    if (keep != NULL) {
        pthread_mutex_lock(&bus->mu);
        reaper *tail = keep;
        while (tail->next)
            tail = tail->next;
        tail->next = bus->reapers;
        bus->reapers = keep;
        pthread_mutex_unlock(&bus->mu);
    }
}

static void consumer_close_internal(mc_bus_consumer *c)
{
    mc_bus *bus = c->bus;
    pthread_mutex_lock(&bus->mu);
    for (mc_bus_consumer **pp = &bus->consumers; *pp; pp = &(*pp)->next_open) {
        if (*pp == c) {
            *pp = c->next_open;
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);

    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_cond_broadcast(&c->cond);
    mc_bus_batch *b = c->ready_head;
    c->ready_head = c->ready_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    while (b) {
        mc_bus_batch *next = b->next;
        mc_bus_batch_free(b);
        b = next;
    }

    if (bus->loop != NULL) {
        /* Loop mode: callbacks only run on this (the loop) thread and check
         * closing first, and no thread signals the handle once closing is
         * set, so it can close now and no callback runs after this returns.
         * The rest waits on nats.c and possibly on the loop itself: a reaper
         * thread finishes it while the loop keeps running. */
        uv_close((uv_handle_t *)&c->async, consumer_async_closed);
        reapers_join(bus, false);
        reaper *r = calloc(1, sizeof *r);
        if (r != NULL) {
            r->c = c;
            if (pthread_create(&r->thread, NULL, reaper_main, r) == 0) {
                pthread_mutex_lock(&bus->mu);
                r->next = bus->reapers;
                bus->reapers = r;
                pthread_mutex_unlock(&bus->mu);
                return;
            }
            free(r);
        }
        MC_LOG_WARN("no thread for the consumer close; finishing it on the loop thread",
                    MC_LF_STR("consumer", c->durable ? c->durable : "(ordered)"));
        consumer_finish_close(c, false);
        return;
    }
    consumer_finish_close(c, tls_in_callback == c);
}

void mc_bus_consumer_close(mc_bus_consumer *c)
{
    if (c != NULL)
        consumer_close_internal(c);
}

uint64_t mc_bus_consumer_delivered(const mc_bus_consumer *c)
{
    return c ? atomic_load(&c->delivered) : 0;
}

/* ---- Batches and messages ---- */

size_t mc_bus_batch_count(const mc_bus_batch *b)
{
    return b ? b->count : 0;
}

mc_bus_msg *mc_bus_batch_msg(mc_bus_batch *b, size_t i)
{
    return (b && i < b->count) ? &b->msgs[i] : NULL;
}

mc_status mc_bus_batch_ack_all(mc_bus_batch *b, mc_error *err)
{
    mc_status first = MC_OK;
    for (size_t i = 0; b && i < b->count; i++) {
        mc_error e;
        mc_status st = mc_bus_msg_ack(&b->msgs[i], &e);
        if (st != MC_OK && first == MC_OK) {
            first = st;
            if (err)
                *err = e;
        }
    }
    return first;
}

const char *mc_bus_msg_subject(const mc_bus_msg *m)
{
    const char *s = m ? natsMsg_GetSubject(m->nm) : NULL;
    return s ? s : "";
}

const uint8_t *mc_bus_msg_data(const mc_bus_msg *m)
{
    return m ? (const uint8_t *)natsMsg_GetData(m->nm) : NULL;
}

size_t mc_bus_msg_len(const mc_bus_msg *m)
{
    int n = m ? natsMsg_GetDataLength(m->nm) : 0;
    return n > 0 ? (size_t)n : 0;
}

uint64_t mc_bus_msg_stream_seq(const mc_bus_msg *m)
{
    return m ? m->stream_seq : 0;
}

uint64_t mc_bus_msg_num_delivered(const mc_bus_msg *m)
{
    return m ? m->num_delivered : 0;
}

bool mc_bus_msg_redelivered(const mc_bus_msg *m)
{
    return m && m->num_delivered > 1;
}

const char *mc_bus_msg_header(const mc_bus_msg *m, const char *key)
{
    const char *v = NULL;
    if (m == NULL || key == NULL || natsMsgHeader_Get(m->nm, key, &v) != NATS_OK)
        return NULL;
    return v;
}

mc_status mc_bus_msg_ack(mc_bus_msg *m, mc_error *err)
{
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "ack: message is NULL");
    if (m->settled)
        return MC_OK;
    natsStatus s = natsMsg_Ack(m->nm, NULL);
    if (s != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "ack of %s seq %" PRIu64, mc_bus_msg_subject(m),
                 m->stream_seq);
        return nats_fail(err, s, 0, what);
    }
    m->settled = true;
    return MC_OK;
}

mc_status mc_bus_msg_nak(mc_bus_msg *m, uint64_t delay_ms, mc_error *err)
{
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "nak: message is NULL");
    if (m->settled)
        return MC_OK;
    natsStatus s = delay_ms ? natsMsg_NakWithDelay(m->nm, (int64_t)delay_ms, NULL)
                            : natsMsg_Nak(m->nm, NULL);
    if (s != NATS_OK) {
        char what[300];
        snprintf(what, sizeof what, "nak of %s seq %" PRIu64, mc_bus_msg_subject(m),
                 m->stream_seq);
        return nats_fail(err, s, 0, what);
    }
    m->settled = true;
    return MC_OK;
}

mc_status mc_bus_msg_deadletter(mc_bus_msg *m, const char *reason, mc_error *err)
{
    if (m == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "deadletter: message is NULL");
    mc_bus_consumer *c = m->batch->c;
    mc_bus *bus = c->bus;
    const char *subject = mc_bus_msg_subject(m);
    const char *stream = bus->stream_names[c->stream];
    /* Header values end at a line break: keep the reason on one line. */
    char why[512];
    snprintf(why, sizeof why, "%s", reason && reason[0] ? reason : "undecodable");
    for (char *p = why; *p; p++)
        if (*p == '\r' || *p == '\n')
            *p = ' ';
    MC_LOG_ERROR("undecodable message dead-lettered", MC_LF_STR("subject", subject),
                 MC_LF_STR("stream", stream), MC_LF_UINT("seq", m->stream_seq),
                 MC_LF_STR("error", why));

    if (strcmp(subject, bus->deadletter_subject) != 0) {
        natsMsg *dl = NULL;
        char seq[32], id[300];
        snprintf(seq, sizeof seq, "%" PRIu64, m->stream_seq);
        /* Keyed by the original's place in the stream, so a redelivered poison
         * message (crash between copy and ack) is stored once. */
        snprintf(id, sizeof id, "dl:%s:%" PRIu64, stream, m->stream_seq);
        natsStatus s = natsMsg_Create(&dl, bus->deadletter_subject, NULL,
                                      (const char *)mc_bus_msg_data(m), (int)mc_bus_msg_len(m));
        if (s == NATS_OK)
            s = natsMsgHeader_Set(dl, MC_BUS_HDR_DL_SUBJECT, subject);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(dl, MC_BUS_HDR_DL_SEQUENCE, seq);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(dl, MC_BUS_HDR_DL_STREAM, stream);
        if (s == NATS_OK)
            s = natsMsgHeader_Set(dl, MC_BUS_HDR_DL_ERROR, why);
        jsErrCode jerr = 0;
        if (s == NATS_OK) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MsgId = id;
            po.MaxWait = (int64_t)bus->o.request_timeout_ms;
            s = js_PublishMsg(NULL, bus->ctl_js, dl, &po, &jerr);
        }
        natsMsg_Destroy(dl);
        if (s != NATS_OK) {
            char what[400];
            snprintf(what, sizeof what,
                     "dead-lettering %s seq %" PRIu64 " to %s (not acked; it will be redelivered)",
                     subject, m->stream_seq, bus->deadletter_subject);
            return nats_fail(err, s, jerr, what);
        }
    }
    atomic_fetch_add(&bus->deadlettered, 1);
    return mc_bus_msg_ack(m, err);
}

/* ---- Counters ---- */

uint64_t mc_bus_published(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->published) : 0;
}
uint64_t mc_bus_publish_duplicates(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->duplicates) : 0;
}
uint64_t mc_bus_publish_failures(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->failures) : 0;
}
uint64_t mc_bus_publish_retries(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->retried) : 0;
}
uint64_t mc_bus_acks_pending(const mc_bus *bus)
{
    if (bus == NULL)
        return 0;
    pthread_mutex_lock((pthread_mutex_t *)&bus->mu);
    uint64_t p = bus->pending;
    pthread_mutex_unlock((pthread_mutex_t *)&bus->mu);
    return p;
}
uint64_t mc_bus_consumed(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->consumed) : 0;
}
uint64_t mc_bus_redelivered(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->redelivered) : 0;
}
uint64_t mc_bus_deadlettered(const mc_bus *bus)
{
    return bus ? atomic_load(&bus->deadlettered) : 0;
}

void mc_bus_library_shutdown(uint64_t timeout_ms)
{
    nats_CloseAndWait((int64_t)timeout_ms);
}
