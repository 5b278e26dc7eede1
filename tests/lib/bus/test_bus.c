/* lib/bus against the real nats-server from NATS_URL (scripts/with-services).
 *
 * Every test uses its own stream prefix ("T<pid>x<n>_") and subject prefix
 * ("t<pid>x<n>.") so it cannot collide with other tests or services sharing
 * the server, and deletes its streams at the end. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "bus/bus.h"
#include "log/log.h"

static int g_case;

typedef struct fixture {
    char stream_prefix[64];
    char subject_prefix[64];
    mc_nats_config nats;
} fixture;

static void fixture_init(fixture *f)
{
    memset(f, 0, sizeof *f);
    g_case++;
    snprintf(f->stream_prefix, sizeof f->stream_prefix, "T%dx%d_", (int)getpid(), g_case);
    snprintf(f->subject_prefix, sizeof f->subject_prefix, "t%dx%d.", (int)getpid(), g_case);
    f->nats.url = getenv("NATS_URL");
    if (f->nats.url == NULL || f->nats.url[0] == '\0')
        fail_msg("NATS_URL is not set: run under scripts/with-services");
}

static void subj(const fixture *f, char *out, size_t n, const char *rest)
{
    snprintf(out, n, "%s%s", f->subject_prefix, rest);
}

static mc_bus_options base_opts(const fixture *f)
{
    mc_bus_options o = {0};
    o.name = "test-bus";
    o.stream_prefix = f->stream_prefix;
    o.subject_prefix = f->subject_prefix;
    return o;
}

static mc_bus *open_bus(const fixture *f, uv_loop_t *loop, const mc_bus_options *o)
{
    mc_bus *bus = NULL;
    mc_error err = {0};
    mc_bus_options def = base_opts(f);
    mc_status st = mc_bus_open(loop, &f->nats, o ? o : &def, &bus, &err);
    if (st != MC_OK)
        fail_msg("mc_bus_open: %s", err.msg);
    return bus;
}

static void cleanup_bus(mc_bus *bus)
{
    mc_error err = {0};
    assert_int_equal(mc_bus_streams_delete(bus, &err), MC_OK);
    mc_bus_free(bus);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A thread-safe collector of consumed messages (copies), used by the
 * thread-mode tests. Acks according to the mode. */
typedef enum { ACK_ALL, ACK_NONE, ACK_DEADLETTER_POISON } ack_mode;

typedef struct rec {
    char subject[128];
    uint8_t data[256];
    size_t len;
    uint64_t seq;
    uint64_t delivered;
    bool redelivered;
    char msg_id[128];
    char dl_subject[128], dl_seq[32], dl_error[256], dl_stream[64];
} rec;

typedef struct collector {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    rec *recs;
    size_t n, cap;
    ack_mode mode;
    int ack_errors;
    bool on_loop_checked;
    uv_thread_t loop_thread;
    int wrong_thread;
    uv_loop_t *stop_loop; /* loop mode: uv_stop when `want` reached */
    size_t want;
} collector;

static void collector_init(collector *c, size_t cap, ack_mode mode)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->recs = calloc(cap, sizeof *c->recs);
    c->cap = cap;
    c->mode = mode;
}

static void collector_free(collector *c)
{
    free(c->recs);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
}

static void on_batch(void *ctx, mc_bus_batch *b)
{
    collector *c = ctx;
    if (c->on_loop_checked) {
        uv_thread_t self = uv_thread_self();
        if (!uv_thread_equal(&self, &c->loop_thread))
            c->wrong_thread++;
    }
    for (size_t i = 0; i < mc_bus_batch_count(b); i++) {
        mc_bus_msg *m = mc_bus_batch_msg(b, i);
        pthread_mutex_lock(&c->mu);
        if (c->n < c->cap) {
            rec *r = &c->recs[c->n++];
            snprintf(r->subject, sizeof r->subject, "%s", mc_bus_msg_subject(m));
            r->len = mc_bus_msg_len(m) < sizeof r->data ? mc_bus_msg_len(m) : sizeof r->data;
            memcpy(r->data, mc_bus_msg_data(m), r->len);
            r->seq = mc_bus_msg_stream_seq(m);
            r->delivered = mc_bus_msg_num_delivered(m);
            r->redelivered = mc_bus_msg_redelivered(m);
            const char *id = mc_bus_msg_header(m, "Nats-Msg-Id");
            snprintf(r->msg_id, sizeof r->msg_id, "%s", id ? id : "");
            const char *h = mc_bus_msg_header(m, MC_BUS_HDR_DL_SUBJECT);
            snprintf(r->dl_subject, sizeof r->dl_subject, "%s", h ? h : "");
            h = mc_bus_msg_header(m, MC_BUS_HDR_DL_SEQUENCE);
            snprintf(r->dl_seq, sizeof r->dl_seq, "%s", h ? h : "");
            h = mc_bus_msg_header(m, MC_BUS_HDR_DL_ERROR);
            snprintf(r->dl_error, sizeof r->dl_error, "%s", h ? h : "");
            h = mc_bus_msg_header(m, MC_BUS_HDR_DL_STREAM);
            snprintf(r->dl_stream, sizeof r->dl_stream, "%s", h ? h : "");
        }
        pthread_mutex_unlock(&c->mu);
        mc_error err = {0};
        mc_status st = MC_OK;
        if (c->mode == ACK_ALL) {
            st = mc_bus_msg_ack(m, &err);
        } else if (c->mode == ACK_DEADLETTER_POISON) {
            if (mc_bus_msg_len(m) == 6 && memcmp(mc_bus_msg_data(m), "POISON", 6) == 0)
                st = mc_bus_msg_deadletter(m, "decode: truncated protobuf\nat byte 3", &err);
            else
                st = mc_bus_msg_ack(m, &err);
        }
        if (st != MC_OK) {
            fprintf(stderr, "ack failed: %s\n", err.msg);
            pthread_mutex_lock(&c->mu);
            c->ack_errors++;
            pthread_mutex_unlock(&c->mu);
        }
    }
    mc_bus_batch_free(b);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cond);
    bool stop = c->stop_loop && c->n >= c->want;
    pthread_mutex_unlock(&c->mu);
    if (stop)
        uv_stop(c->stop_loop);
}

/* Waits until n records arrived or timeout; returns the count. */
static size_t collector_wait(collector *c, size_t n, uint64_t timeout_ms)
{
    uint64_t end = mono_ms() + timeout_ms;
    pthread_mutex_lock(&c->mu);
    while (c->n < n && mono_ms() < end) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&c->cond, &c->mu, &ts);
    }
    size_t got = c->n;
    pthread_mutex_unlock(&c->mu);
    return got;
}

static mc_bus_consumer *open_pull(mc_bus *bus, mc_bus_stream stream, const char *durable,
                                  const char *filter, uint64_t ack_wait_ms, collector *c)
{
    mc_bus_pull_options po = {0};
    po.stream = stream;
    po.durable = durable;
    po.filter_subject = filter;
    po.batch_size = 32;
    po.fetch_wait_ms = 200;
    po.ack_wait_ms = ack_wait_ms;
    po.on_batch = on_batch;
    po.ctx = c;
    mc_bus_consumer *cons = NULL;
    mc_error err = {0};
    if (mc_bus_pull_open(bus, &po, &cons, &err) != MC_OK)
        fail_msg("mc_bus_pull_open: %s", err.msg);
    return cons;
}

/* ---- Tests ---- */

static void test_nkey_public_from_seed(void **state)
{
    /* The pair from the NATS documentation (nk -gen user -pubout). */
    char pub[64];
    mc_error err = {0};
    assert_int_equal(
        mc_bus_nkey_public_from_seed("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY",
                                     pub, &err),
        MC_OK);
    assert_string_equal(pub, "UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4");
    /* One character changed breaks the checksum. */
    assert_int_equal(
        mc_bus_nkey_public_from_seed("SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VA",
                                     pub, &err),
        MC_ERR_INVALID);
    assert_int_equal(mc_bus_nkey_public_from_seed("hello", pub, &err), MC_ERR_INVALID);
}

static void test_open_bad_url(void **state)
{
    mc_nats_config nc = {.url = "nats://127.0.0.1:1"};
    mc_bus_options o = {0};
    o.connect_timeout_ms = 300;
    mc_bus *bus = NULL;
    mc_error err = {0};
    assert_int_equal(mc_bus_open(NULL, &nc, &o, &bus, &err), MC_ERR_UNAVAILABLE);
    assert_null(bus);
    assert_non_null(strstr(err.msg, "127.0.0.1:1"));
}

/* Replicas: 1..5; a single server refuses more than one copy, clearly. */
static void test_replicas_option(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus_options o = base_opts(&f);
    mc_bus *bus = NULL;
    mc_error err = {0};
    o.replicas = 6;
    assert_int_equal(mc_bus_open(NULL, &f.nats, &o, &bus, &err), MC_ERR_INVALID);
    assert_null(bus);
    assert_non_null(strstr(err.msg, "replicas 6"));
    o.replicas = 3;
    assert_int_not_equal(mc_bus_open(NULL, &f.nats, &o, &bus, &err), MC_OK);
    assert_null(bus);
    assert_non_null(strstr(err.msg, f.stream_prefix));
    o.replicas = 1;
    bus = open_bus(&f, NULL, &o);
    cleanup_bus(bus);
}

static void test_provision_idempotent_and_incompatible(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char name[128];
    snprintf(name, sizeof name, "%sSIM", f.stream_prefix);
    assert_string_equal(mc_bus_stream_name(bus, MC_BUS_STREAM_SIM), name);

    /* Again on the same bus, and from a second bus: both fine. */
    assert_int_equal(mc_bus_provision(bus, &err), MC_OK);
    mc_bus *again = open_bus(&f, NULL, NULL);
    mc_bus_free(again);

    /* Changed limits are applied in place, not refused. */
    mc_bus_options lim = base_opts(&f);
    lim.sim_limits.max_age_ms = 3600 * 1000;
    lim.duplicate_window_ms = 60 * 1000;
    again = open_bus(&f, NULL, &lim);
    mc_bus_free(again);

    /* Same stream names, other subjects: refused, naming stream and setting. */
    mc_bus_options other = base_opts(&f);
    char other_prefix[80];
    snprintf(other_prefix, sizeof other_prefix, "other%s", f.subject_prefix);
    other.subject_prefix = other_prefix;
    mc_bus *bad = NULL;
    assert_int_equal(mc_bus_open(NULL, &f.nats, &other, &bad, &err), MC_ERR_STATE);
    assert_null(bad);
    assert_non_null(strstr(err.msg, name));
    assert_non_null(strstr(err.msg, "subjects"));

    /* Same names and subjects, other storage: refused too. */
    mc_bus_options mem = base_opts(&f);
    mem.memory_storage = true;
    assert_int_equal(mc_bus_open(NULL, &f.nats, &mem, &bad, &err), MC_ERR_STATE);
    assert_non_null(strstr(err.msg, "storage"));
    assert_non_null(strstr(err.msg, name));

    /* The stream was not recreated: a message stored before is still there. */
    char s1[128];
    subj(&f, s1, sizeof s1, "sim.metrics");
    mc_bus_pub_ack ack = {0};
    assert_int_equal(mc_bus_publish(bus, s1, "x", 1, "keep-1", &ack, &err), MC_OK);
    assert_int_equal(ack.stream_seq, 1);
    bad = NULL;
    assert_int_equal(mc_bus_open(NULL, &f.nats, &mem, &bad, &err), MC_ERR_STATE);
    assert_int_equal(mc_bus_publish(bus, s1, "y", 1, "keep-2", &ack, &err), MC_OK);
    assert_int_equal(ack.stream_seq, 2);

    cleanup_bus(bus);
}

static void test_round_trip_100(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    for (int i = 0; i < 100; i++) {
        uint8_t payload[64];
        int n = snprintf((char *)payload, sizeof payload, "message-%03d", i);
        payload[n] = 0x00; /* binary bytes survive, NUL included */
        payload[n + 1] = 0xFF;
        assert_int_equal(
            mc_bus_publish_stamped(bus, s, "run-1", (uint64_t)i / 10, (uint64_t)i + 1, payload,
                                   (size_t)n + 2, &err),
            MC_OK);
    }
    assert_int_equal(mc_bus_flush(bus, 10000, &err), MC_OK);
    assert_int_equal(mc_bus_published(bus), 100);
    assert_int_equal(mc_bus_acks_pending(bus), 0);

    collector c;
    collector_init(&c, 200, ACK_ALL);
    mc_bus_consumer *cons = open_pull(bus, MC_BUS_STREAM_SIM, "rt", NULL, 0, &c);
    assert_int_equal(collector_wait(&c, 100, 10000), 100);
    mc_bus_consumer_close(cons);
    assert_int_equal(c.ack_errors, 0);
    assert_int_equal(c.n, 100);
    for (int i = 0; i < 100; i++) {
        char want[64];
        int n = snprintf(want, sizeof want, "message-%03d", i);
        rec *r = &c.recs[i];
        assert_int_equal(r->seq, (uint64_t)i + 1);
        assert_int_equal(r->len, (size_t)n + 2);
        assert_memory_equal(r->data, want, (size_t)n);
        assert_int_equal(r->data[n], 0x00);
        assert_int_equal(r->data[n + 1], 0xFF);
        assert_string_equal(r->subject, s);
        assert_int_equal(r->delivered, 1);
        assert_false(r->redelivered);
        char id[128];
        snprintf(id, sizeof id, "run-1:%s:%d:%d", s, i / 10, i + 1);
        assert_string_equal(r->msg_id, id);
    }
    assert_int_equal(mc_bus_consumed(bus), 100);
    assert_int_equal(mc_bus_redelivered(bus), 0);

    /* Everything was acked: a new consumer on the same durable gets nothing. */
    collector c2;
    collector_init(&c2, 10, ACK_ALL);
    cons = open_pull(bus, MC_BUS_STREAM_SIM, "rt", NULL, 0, &c2);
    assert_int_equal(collector_wait(&c2, 1, 700), 0);
    mc_bus_consumer_close(cons);

    /* The durable may be reopened with other settings (here ack_wait): the
     * server updates it in place (whatever it refuses is MC_ERR_STATE). */
    collector c3;
    collector_init(&c3, 10, ACK_ALL);
    cons = open_pull(bus, MC_BUS_STREAM_SIM, "rt", NULL, 5000, &c3);
    assert_int_equal(collector_wait(&c3, 1, 500), 0);
    mc_bus_consumer_close(cons);
    collector_free(&c3);

    collector_free(&c);
    collector_free(&c2);
    cleanup_bus(bus);
}

static void test_dedup(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "ops.incidents");
    mc_bus_pub_ack a1 = {0}, a2 = {0};
    assert_int_equal(mc_bus_publish(bus, s, "one", 3, "run-9:ops.incidents:5:1", &a1, &err), MC_OK);
    assert_false(a1.duplicate);
    /* The same Msg-Id again (a re-publish after a crash): one stored message. */
    assert_int_equal(mc_bus_publish(bus, s, "one", 3, "run-9:ops.incidents:5:1", &a2, &err), MC_OK);
    assert_true(a2.duplicate);
    assert_int_equal(a2.stream_seq, a1.stream_seq);
    /* And asynchronously, twice more. */
    assert_int_equal(mc_bus_publish_async(bus, s, "one", 3, "run-9:ops.incidents:5:1", &err),
                     MC_OK);
    assert_int_equal(mc_bus_publish_async(bus, s, "one", 3, "run-9:ops.incidents:5:1", &err),
                     MC_OK);
    assert_int_equal(mc_bus_flush(bus, 5000, &err), MC_OK);
    assert_int_equal(mc_bus_publish_duplicates(bus), 3);
    /* A different id is a new message. */
    assert_int_equal(mc_bus_publish(bus, s, "two", 3, "run-9:ops.incidents:5:2", &a2, &err), MC_OK);
    assert_int_equal(a2.stream_seq, a1.stream_seq + 1);

    collector c;
    collector_init(&c, 10, ACK_ALL);
    mc_bus_consumer *cons = open_pull(bus, MC_BUS_STREAM_OPS, "dd", NULL, 0, &c);
    assert_int_equal(collector_wait(&c, 2, 5000), 2);
    assert_int_equal(collector_wait(&c, 3, 500), 2); /* and nothing more */
    mc_bus_consumer_close(cons);
    assert_memory_equal(c.recs[0].data, "one", 3);
    assert_memory_equal(c.recs[1].data, "two", 3);
    collector_free(&c);
    cleanup_bus(bus);
}

static void test_redelivery_after_kill(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.events");
    for (int i = 0; i < 5; i++) {
        char p[16];
        snprintf(p, sizeof p, "ev-%d", i);
        assert_int_equal(mc_bus_publish_stamped(bus, s, "run-r", 1, (uint64_t)i + 1, p, strlen(p),
                                                &err),
                         MC_OK);
    }
    assert_int_equal(mc_bus_flush(bus, 5000, &err), MC_OK);

    /* The service takes the batch and "dies" before acking. */
    collector c;
    collector_init(&c, 20, ACK_NONE);
    mc_bus_consumer *cons = open_pull(bus, MC_BUS_STREAM_SIM, "worker", NULL, 1000, &c);
    assert_int_equal(collector_wait(&c, 5, 5000), 5);
    mc_bus_consumer_close(cons);
    mc_bus_free(bus);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(c.recs[i].delivered, 1);
        assert_false(c.recs[i].redelivered);
    }

    /* A new process: same durable, gets the same messages again, flagged. */
    bus = open_bus(&f, NULL, NULL);
    collector c2;
    collector_init(&c2, 20, ACK_ALL);
    uint64_t t0 = mono_ms();
    cons = open_pull(bus, MC_BUS_STREAM_SIM, "worker", NULL, 1000, &c2);
    assert_int_equal(collector_wait(&c2, 5, 10000), 5);
    assert_int_equal(collector_wait(&c2, 6, 1500), 5); /* acked now: not again */
    mc_bus_consumer_close(cons);
    (void)t0;
    for (int i = 0; i < 5; i++) {
        char p[16];
        snprintf(p, sizeof p, "ev-%d", i);
        assert_int_equal(c2.recs[i].seq, c.recs[i].seq);
        assert_memory_equal(c2.recs[i].data, p, strlen(p));
        assert_int_equal(c2.recs[i].delivered, 2);
        assert_true(c2.recs[i].redelivered);
    }
    assert_int_equal(mc_bus_redelivered(bus), 5);
    collector_free(&c);
    collector_free(&c2);
    cleanup_bus(bus);
}

static mc_bus_consumer *open_pull_at(mc_bus *bus, const char *durable, const char *filter,
                                     uint64_t start_seq, collector *c)
{
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.durable = durable;
    po.filter_subject = filter;
    po.batch_size = 32;
    po.fetch_wait_ms = 200;
    po.ack_wait_ms = 30000; /* long: anything arriving early was not an ack-wait redelivery */
    po.start_seq = start_seq;
    po.on_batch = on_batch;
    po.ctx = c;
    mc_bus_consumer *cons = NULL;
    mc_error err = {0};
    if (mc_bus_pull_open(bus, &po, &cons, &err) != MC_OK)
        fail_msg("mc_bus_pull_open(start_seq %llu): %s", (unsigned long long)start_seq, err.msg);
    return cons;
}

static void publish_n(mc_bus *bus, const char *subject, int from, int to)
{
    mc_error err = {0};
    for (int i = from; i < to; i++) {
        char id[32], p[16];
        snprintf(id, sizeof id, "sp-%s-%d", subject, i);
        int n = snprintf(p, sizeof p, "m%d", i);
        assert_int_equal(mc_bus_publish(bus, subject, p, (size_t)n, id, NULL, &err), MC_OK);
    }
}

/* A durable placed at a stream sequence: new at n, recreated at n when it
 * exists (where it already is, ahead or behind); and resumed from its own
 * ack floor, where the messages a "crashed" instance held come again at
 * once (not after the 30 s ack wait) and in order. Filtered, with other
 * subjects in between. */
static void test_pull_start_seq(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    char metrics[128], events[128];
    subj(&f, metrics, sizeof metrics, "sim.metrics");
    subj(&f, events, sizeof events, "sim.events");
    /* seq 1..10: metrics on odd sequences, events on even ones. */
    for (int i = 0; i < 5; i++) {
        publish_n(bus, metrics, i, i + 1);
        publish_n(bus, events, i, i + 1);
    }

    /* New durable at 4: the first metrics message from 4 on is seq 5. */
    collector a;
    collector_init(&a, 50, ACK_ALL);
    mc_bus_consumer *cons = open_pull_at(bus, "placed", metrics, 4, &a);
    assert_int_equal(collector_wait(&a, 3, 5000), 3);
    mc_bus_consumer_close(cons);
    assert_int_equal(a.recs[0].seq, 5);
    assert_int_equal(a.recs[1].seq, 7);
    assert_int_equal(a.recs[2].seq, 9);

    /* Everything acked, floor 9: placed at 10 it goes on from there. */
    usleep(200000);
    publish_n(bus, metrics, 5, 7); /* seq 11, 12 */
    collector b;
    collector_init(&b, 50, ACK_ALL);
    cons = open_pull_at(bus, "placed", metrics, 10, &b);
    assert_int_equal(collector_wait(&b, 2, 5000), 2);
    assert_int_equal(collector_wait(&b, 3, 500), 2);
    mc_bus_consumer_close(cons);
    assert_int_equal(b.recs[0].seq, 11);
    assert_int_equal(b.recs[1].seq, 12);
    assert_int_equal(b.recs[0].delivered, 1);

    /* Behind: placed at 3 it delivers 3.. again. */
    usleep(200000);
    collector c;
    collector_init(&c, 50, ACK_ALL);
    cons = open_pull_at(bus, "placed", metrics, 3, &c);
    assert_int_equal(collector_wait(&c, 6, 5000), 6);
    mc_bus_consumer_close(cons);
    uint64_t want_c[] = {3, 5, 7, 9, 11, 12};
    for (int i = 0; i < 6; i++)
        assert_int_equal(c.recs[i].seq, want_c[i]);

    /* A "crashed" instance fetches 13..15 and never acks them. */
    usleep(200000);
    publish_n(bus, metrics, 7, 10); /* seq 13, 14, 15 */
    collector d;
    collector_init(&d, 50, ACK_NONE);
    cons = open_pull_at(bus, "placed", metrics, 0, &d);
    assert_int_equal(collector_wait(&d, 3, 5000), 3);
    mc_bus_consumer_close(cons);
    assert_int_equal(d.recs[0].seq, 13);
    publish_n(bus, metrics, 10, 11); /* seq 16, newer than the held ones */

    /* From the ack floor: 13, 14, 15, 16 at once and in order. */
    collector e;
    collector_init(&e, 50, ACK_ALL);
    uint64_t t0 = mono_ms();
    cons = open_pull_at(bus, "placed", metrics, MC_BUS_PULL_FROM_ACK_FLOOR, &e);
    assert_int_equal(collector_wait(&e, 4, 5000), 4);
    assert_true(mono_ms() - t0 < 5000);
    mc_bus_consumer_close(cons);
    for (int i = 0; i < 4; i++)
        assert_int_equal(e.recs[i].seq, 13 + (uint64_t)i);

    /* Ahead: at 100 nothing comes until the stream gets there. */
    usleep(200000);
    collector g;
    collector_init(&g, 50, ACK_ALL);
    cons = open_pull_at(bus, "placed", metrics, 100, &g);
    assert_int_equal(collector_wait(&g, 1, 800), 0);
    mc_bus_consumer_close(cons);

    /* Bad input: a durable name is still required. */
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.start_seq = 5;
    po.on_batch = on_batch;
    mc_error err = {0};
    mc_bus_consumer *none = NULL;
    assert_int_equal(mc_bus_pull_open(bus, &po, &none, &err), MC_ERR_INVALID);

    collector_free(&a);
    collector_free(&b);
    collector_free(&c);
    collector_free(&d);
    collector_free(&e);
    collector_free(&g);
    cleanup_bus(bus);
}

static void test_deadletter(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    assert_int_equal(mc_bus_publish(bus, s, "good-1", 6, "m1", NULL, &err), MC_OK);
    mc_bus_pub_ack poison = {0};
    assert_int_equal(mc_bus_publish(bus, s, "POISON", 6, "m2", &poison, &err), MC_OK);
    assert_int_equal(mc_bus_publish(bus, s, "good-2", 6, "m3", NULL, &err), MC_OK);

    collector c;
    collector_init(&c, 20, ACK_DEADLETTER_POISON);
    mc_bus_consumer *cons = open_pull(bus, MC_BUS_STREAM_SIM, "ingest", NULL, 1000, &c);
    assert_int_equal(collector_wait(&c, 3, 5000), 3);
    /* The stream moved on: nothing is redelivered after ack_wait. */
    assert_int_equal(collector_wait(&c, 4, 1600), 3);
    mc_bus_consumer_close(cons);
    assert_int_equal(c.ack_errors, 0);
    assert_memory_equal(c.recs[0].data, "good-1", 6);
    assert_memory_equal(c.recs[1].data, "POISON", 6);
    assert_memory_equal(c.recs[2].data, "good-2", 6);
    assert_int_equal(mc_bus_deadlettered(bus), 1);

    /* The copy is on the dead-letter subject, with its headers. */
    collector d;
    collector_init(&d, 10, ACK_ALL);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_OPS;
    oo.filter_subject = mc_bus_deadletter_subject(bus);
    oo.start_seq = 1;
    oo.on_batch = on_batch;
    oo.ctx = &d;
    mc_bus_consumer *oc = NULL;
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &oc, &err), MC_OK);
    assert_int_equal(collector_wait(&d, 1, 5000), 1);
    mc_bus_consumer_close(oc);
    char dl[128];
    subj(&f, dl, sizeof dl, "ops.deadletter");
    assert_string_equal(d.recs[0].subject, dl);
    assert_int_equal(d.recs[0].len, 6);
    assert_memory_equal(d.recs[0].data, "POISON", 6);
    assert_string_equal(d.recs[0].dl_subject, s);
    char seq[32];
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)poison.stream_seq);
    assert_string_equal(d.recs[0].dl_seq, seq);
    assert_string_equal(d.recs[0].dl_stream, mc_bus_stream_name(bus, MC_BUS_STREAM_SIM));
    /* The reason is kept on one line. */
    assert_string_equal(d.recs[0].dl_error, "decode: truncated protobuf at byte 3");
    collector_free(&d);
    collector_free(&c);
    cleanup_bus(bus);
}

/* ---- The libuv path ---- */

typedef struct loop_ctx {
    uv_loop_t *loop;
    collector *pull;
    collector *ordered;
    size_t want_pull, want_ordered;
    uint64_t deadline;
    bool timed_out;
    /* helper publisher */
    mc_bus *bus;
    const char *subject;
    int helper_n;
    mc_status helper_publish_st;
    mc_status helper_flush_st;
    char helper_err[512];
    uv_async_t helper_done;
    bool helper_finished;
} loop_ctx;

static void poll_cb(uv_timer_t *t)
{
    loop_ctx *lc = t->data;
    bool done = lc->helper_finished;
    pthread_mutex_lock(&lc->pull->mu);
    done = done && lc->pull->n >= lc->want_pull;
    pthread_mutex_unlock(&lc->pull->mu);
    pthread_mutex_lock(&lc->ordered->mu);
    done = done && lc->ordered->n >= lc->want_ordered;
    pthread_mutex_unlock(&lc->ordered->mu);
    if (done)
        uv_stop(lc->loop);
    else if (mono_ms() > lc->deadline) {
        lc->timed_out = true;
        uv_stop(lc->loop);
    }
}

static void helper_done_cb(uv_async_t *h)
{
    loop_ctx *lc = h->data;
    lc->helper_finished = true;
}

/* Publishes from a thread other than the loop's while the loop runs:
 * async publishes may stall there, and mc_bus_flush is allowed. */
static void *helper_main(void *arg)
{
    loop_ctx *lc = arg;
    mc_error err = {0};
    lc->helper_publish_st = MC_OK;
    for (int i = 0; i < lc->helper_n; i++) {
        char p[32];
        int n = snprintf(p, sizeof p, "helper-%05d", i);
        mc_status st = mc_bus_publish_stamped(lc->bus, lc->subject, "run-h", 2, (uint64_t)i + 1, p,
                                              (size_t)n, &err);
        if (st != MC_OK) {
            lc->helper_publish_st = st;
            snprintf(lc->helper_err, sizeof lc->helper_err, "%s", err.msg);
            break;
        }
    }
    lc->helper_flush_st = mc_bus_flush(lc->bus, 60000, &err);
    if (lc->helper_flush_st != MC_OK)
        snprintf(lc->helper_err, sizeof lc->helper_err, "%s", err.msg);
    uv_async_send(&lc->helper_done);
    return NULL;
}

static void test_loop_delivery_on_loop_thread(void **state)
{
    fixture f;
    fixture_init(&f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mc_bus_options o = base_opts(&f);
    o.max_pending_acks = 64;
    mc_bus *bus = open_bus(&f, &loop, &o);
    mc_error err = {0};

    /* On the loop thread, waiting for acks is refused (only the loop reads
     * them), and so is exceeding max_pending_acks. */
    assert_int_equal(mc_bus_flush(bus, 10, &err), MC_ERR_STATE);
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    for (int i = 0; i < 64; i++) {
        char p[32];
        int n = snprintf(p, sizeof p, "loop-%02d", i);
        assert_int_equal(mc_bus_publish_stamped(bus, s, "run-l", 1, (uint64_t)i + 1, p, (size_t)n,
                                                &err),
                         MC_OK);
    }
    assert_int_equal(mc_bus_publish_stamped(bus, s, "run-l", 1, 65, "x", 1, &err), MC_ERR_LIMIT);
    assert_int_equal(mc_bus_acks_pending(bus), 64);

    collector pc, oc;
    collector_init(&pc, 20000, ACK_ALL);
    collector_init(&oc, 20000, ACK_ALL);
    pc.on_loop_checked = oc.on_loop_checked = true;
    pc.loop_thread = oc.loop_thread = uv_thread_self();

    mc_bus_consumer *pull = open_pull(bus, MC_BUS_STREAM_SIM, "looper", NULL, 0, &pc);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.start_seq = 1;
    oo.on_batch = on_batch;
    oo.ctx = &oc;
    mc_bus_consumer *ord = NULL;
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &ord, &err), MC_OK);

    /* Meanwhile 10,000 more from another thread, all to be acked. */
    loop_ctx lc = {0};
    lc.loop = &loop;
    lc.pull = &pc;
    lc.ordered = &oc;
    lc.want_pull = lc.want_ordered = 64 + 10000;
    lc.deadline = mono_ms() + 90000;
    lc.bus = bus;
    lc.subject = s;
    lc.helper_n = 10000;
    assert_int_equal(uv_async_init(&loop, &lc.helper_done, helper_done_cb), 0);
    lc.helper_done.data = &lc;
    uv_timer_t poll;
    uv_timer_init(&loop, &poll);
    poll.data = &lc;
    uv_timer_start(&poll, poll_cb, 20, 20);
    pthread_t helper;
    assert_int_equal(pthread_create(&helper, NULL, helper_main, &lc), 0);

    uv_run(&loop, UV_RUN_DEFAULT);
    pthread_join(helper, NULL);

    assert_false(lc.timed_out);
    if (lc.helper_publish_st != MC_OK || lc.helper_flush_st != MC_OK)
        fail_msg("helper: %s", lc.helper_err);
    assert_int_equal(mc_bus_published(bus), 64 + 10000);
    assert_int_equal(mc_bus_acks_pending(bus), 0);
    assert_int_equal(mc_bus_publish_failures(bus), 0);
    assert_int_equal(pc.wrong_thread, 0);
    assert_int_equal(oc.wrong_thread, 0);
    assert_int_equal(pc.n, 64 + 10000);
    assert_int_equal(oc.n, 64 + 10000);
    for (size_t i = 0; i < pc.n; i++) {
        assert_int_equal(pc.recs[i].seq, i + 1);
        assert_int_equal(oc.recs[i].seq, i + 1);
    }
    assert_memory_equal(pc.recs[0].data, "loop-00", 7);
    assert_memory_equal(oc.recs[64].data, "helper-00000", 12);
    assert_int_equal(pc.ack_errors, 0);

    mc_bus_consumer_close(pull);
    mc_bus_consumer_close(ord);
    uv_timer_stop(&poll);
    uv_close((uv_handle_t *)&poll, NULL);
    uv_close((uv_handle_t *)&lc.helper_done, NULL);
    assert_int_equal(mc_bus_streams_delete(bus, &err), MC_OK);
    mc_bus_free(bus);
    /* Let the bus and nats.c's adapter close their handles. */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    collector_free(&pc);
    collector_free(&oc);
}

static void test_async_10000_acked(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    uint8_t payload[100];
    memset(payload, 0xAB, sizeof payload);
    for (int i = 0; i < 10000; i++) {
        if (mc_bus_publish_stamped(bus, s, "run-a", (uint64_t)i / 100, (uint64_t)i + 1, payload,
                                   sizeof payload, &err) != MC_OK)
            fail_msg("publish %d: %s", i, err.msg);
    }
    assert_int_equal(mc_bus_flush(bus, 60000, &err), MC_OK);
    assert_int_equal(mc_bus_published(bus), 10000);
    assert_int_equal(mc_bus_publish_failures(bus), 0);
    assert_int_equal(mc_bus_publish_duplicates(bus), 0);
    assert_int_equal(mc_bus_acks_pending(bus), 0);
    /* All 10,000 are stored: the next message gets sequence 10,001. */
    mc_bus_pub_ack ack = {0};
    assert_int_equal(mc_bus_publish(bus, s, "end", 3, "run-a:end", &ack, &err), MC_OK);
    assert_int_equal(ack.stream_seq, 10001);
    cleanup_bus(bus);
}

static void guard_cb(uv_timer_t *t)
{
    uv_stop(t->data);
}

typedef struct fail_rec {
    int calls;
    char subject[128];
    char msg_id[128];
    char error[256];
    mc_status status;
    uint32_t attempts;
    bool on_loop;
    uv_thread_t loop_thread;
    uv_loop_t *stop_loop;
} fail_rec;

static void on_fail(void *ctx, const mc_bus_publish_failure *pf)
{
    fail_rec *r = ctx;
    r->calls++;
    snprintf(r->subject, sizeof r->subject, "%s", pf->subject);
    snprintf(r->msg_id, sizeof r->msg_id, "%s", pf->msg_id);
    snprintf(r->error, sizeof r->error, "%s", pf->error);
    r->status = pf->status;
    r->attempts = pf->attempts;
    uv_thread_t self = uv_thread_self();
    r->on_loop = uv_thread_equal(&self, &r->loop_thread) != 0;
    if (r->stop_loop)
        uv_stop(r->stop_loop);
}

static void test_publish_without_stream_fails_clearly(void **state)
{
    fixture f;
    fixture_init(&f);
    fail_rec fr = {0};
    mc_bus_options o = base_opts(&f);
    o.publish_attempts = 3;
    o.retry_backoff_ms = 50;
    o.on_publish_error = on_fail;
    o.on_publish_error_ctx = &fr;
    mc_bus *bus = open_bus(&f, NULL, &o);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "nostream.here");

    assert_int_equal(mc_bus_publish_async(bus, s, "lost?", 5, "nostream-1", &err), MC_OK);
    assert_int_equal(mc_bus_flush(bus, 10000, &err), MC_ERR_IO);
    assert_non_null(strstr(err.msg, s));
    assert_non_null(strstr(err.msg, "nostream-1"));
    assert_non_null(strstr(err.msg, "no stream captures"));
    assert_int_equal(fr.calls, 1);
    assert_string_equal(fr.subject, s);
    assert_string_equal(fr.msg_id, "nostream-1");
    assert_int_equal(fr.status, MC_ERR_UNAVAILABLE);
    assert_int_equal(fr.attempts, 3);
    assert_int_equal(mc_bus_publish_failures(bus), 1);
    assert_int_equal(mc_bus_publish_retries(bus), 2);
    assert_int_equal(mc_bus_acks_pending(bus), 0);
    /* Reported once: the next flush is clean. */
    assert_int_equal(mc_bus_flush(bus, 1000, &err), MC_OK);

    /* The synchronous publish says so at once. */
    assert_int_equal(mc_bus_publish(bus, s, "lost?", 5, "nostream-2", NULL, &err),
                     MC_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.msg, s));
    cleanup_bus(bus);

    /* Loop mode: the failure is reported on the loop thread. */
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    fail_rec lr = {0};
    lr.loop_thread = uv_thread_self();
    lr.stop_loop = &loop;
    o.on_publish_error_ctx = &lr;
    bus = open_bus(&f, &loop, &o);
    assert_int_equal(mc_bus_publish_async(bus, s, "lost?", 5, "nostream-3", &err), MC_OK);
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    guard.data = &loop;
    uv_timer_start(&guard, guard_cb, 10000, 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(lr.calls, 1);
    assert_true(lr.on_loop);
    assert_string_equal(lr.msg_id, "nostream-3");
    uv_close((uv_handle_t *)&guard, NULL);
    assert_int_equal(mc_bus_streams_delete(bus, &err), MC_OK);
    mc_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* A callback may close its own consumer (thread mode: on the very thread
 * close would otherwise wait for). */
typedef struct self_close {
    mc_bus_consumer *cons;
    int batches;
    pthread_mutex_t mu;
} self_close;

static void close_self_cb(void *ctx, mc_bus_batch *b)
{
    self_close *sc = ctx;
    mc_bus_batch_ack_all(b, NULL);
    mc_bus_batch_free(b);
    pthread_mutex_lock(&sc->mu);
    sc->batches++;
    mc_bus_consumer *c = sc->cons;
    sc->cons = NULL;
    pthread_mutex_unlock(&sc->mu);
    mc_bus_consumer_close(c);
}

static void test_close_from_own_callback(void **state)
{
    fixture f;
    fixture_init(&f);
    mc_bus *bus = open_bus(&f, NULL, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.events");
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "sc-%d", i);
        assert_int_equal(mc_bus_publish(bus, s, "x", 1, id, NULL, &err), MC_OK);
    }
    self_close pc = {0}, oc = {0};
    pthread_mutex_init(&pc.mu, NULL);
    pthread_mutex_init(&oc.mu, NULL);
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.durable = "selfclose";
    po.batch_size = 1;
    po.fetch_wait_ms = 200;
    po.on_batch = close_self_cb;
    po.ctx = &pc;
    pthread_mutex_lock(&pc.mu);
    assert_int_equal(mc_bus_pull_open(bus, &po, &pc.cons, &err), MC_OK);
    pthread_mutex_unlock(&pc.mu);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.start_seq = 1;
    oo.on_batch = close_self_cb;
    oo.ctx = &oc;
    pthread_mutex_lock(&oc.mu);
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &oc.cons, &err), MC_OK);
    pthread_mutex_unlock(&oc.mu);
    uint64_t end = mono_ms() + 5000;
    for (;;) {
        pthread_mutex_lock(&pc.mu);
        pthread_mutex_lock(&oc.mu);
        bool done = pc.cons == NULL && oc.cons == NULL;
        pthread_mutex_unlock(&oc.mu);
        pthread_mutex_unlock(&pc.mu);
        if (done || mono_ms() > end)
            break;
        usleep(10000);
    }
    usleep(300000); /* nothing more may arrive after the close */
    assert_int_equal(pc.batches, 1);
    assert_int_equal(oc.batches, 1);
    pthread_mutex_destroy(&pc.mu);
    pthread_mutex_destroy(&oc.mu);
    cleanup_bus(bus);
}

/* ---- Closing on the loop thread is quick ---- */

typedef struct quick_ctx {
    uv_loop_t *loop;
    collector *pull;
    collector *ordered;
    uint64_t deadline;
    bool timed_out;
} quick_ctx;

static void quick_poll_cb(uv_timer_t *t)
{
    quick_ctx *q = t->data;
    pthread_mutex_lock(&q->pull->mu);
    bool done = q->pull->n >= 3;
    pthread_mutex_unlock(&q->pull->mu);
    pthread_mutex_lock(&q->ordered->mu);
    done = done && q->ordered->n >= 3;
    pthread_mutex_unlock(&q->ordered->mu);
    if (done || mono_ms() > q->deadline) {
        q->timed_out = !done;
        uv_stop(q->loop);
    }
}

/* Counts callbacks that run after the close returned (must stay 0). */
typedef struct late_ctx {
    collector *c;
    bool closed;
    int late;
} late_ctx;

static void late_on_batch(void *ctx, mc_bus_batch *b)
{
    late_ctx *l = ctx;
    if (l->closed)
        l->late++;
    on_batch(l->c, b);
}

/* Closing a pull and an ordered consumer on the loop thread, after they
 * delivered, does not wait for replies only the loop can read: each close
 * returns in well under the request timeout, no callback runs after it, and
 * the loop then winds down (the teardown finishes asynchronously). */
static void test_loop_close_is_quick(void **state)
{
    fixture f;
    fixture_init(&f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mc_bus *bus = open_bus(&f, &loop, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    for (int i = 0; i < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "q-%d", i);
        assert_int_equal(mc_bus_publish(bus, s, "x", 1, id, NULL, &err), MC_OK);
    }
    collector pc, oc;
    collector_init(&pc, 100, ACK_ALL);
    collector_init(&oc, 100, ACK_ALL);
    late_ctx pl = {&pc, false, 0}, ol = {&oc, false, 0};
    mc_bus_pull_options po = {0};
    po.stream = MC_BUS_STREAM_SIM;
    po.durable = "quick";
    po.fetch_wait_ms = 1000;
    po.on_batch = late_on_batch;
    po.ctx = &pl;
    mc_bus_consumer *pull = NULL;
    assert_int_equal(mc_bus_pull_open(bus, &po, &pull, &err), MC_OK);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.start_seq = 1;
    oo.on_batch = late_on_batch;
    oo.ctx = &ol;
    mc_bus_consumer *ord = NULL;
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &ord, &err), MC_OK);

    quick_ctx q = {&loop, &pc, &oc, mono_ms() + 20000, false};
    uv_timer_t poll;
    uv_timer_init(&loop, &poll);
    poll.data = &q;
    uv_timer_start(&poll, quick_poll_cb, 10, 10);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_false(q.timed_out);
    uv_timer_stop(&poll);
    uv_close((uv_handle_t *)&poll, NULL);

    /* More traffic, so the consumers have messages in flight at the close. */
    for (int i = 3; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof id, "q-%d", i);
        assert_int_equal(mc_bus_publish(bus, s, "y", 1, id, NULL, &err), MC_OK);
    }
    uint64_t t0 = mono_ms();
    mc_bus_consumer_close(ord);
    ol.closed = true;
    uint64_t t1 = mono_ms();
    mc_bus_consumer_close(pull);
    pl.closed = true;
    uint64_t t2 = mono_ms();
    if (t1 - t0 > 1000 || t2 - t1 > 1500)
        fail_msg("close blocked the loop: ordered %llu ms, pull %llu ms",
                 (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1));
    assert_int_equal(mc_bus_streams_delete(bus, &err), MC_OK);
    uint64_t t3 = mono_ms();
    mc_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t t4 = mono_ms();
    if (t4 - t3 > 3000)
        fail_msg("bus shutdown took %llu ms", (unsigned long long)(t4 - t3));
    assert_int_equal(pl.late, 0);
    assert_int_equal(ol.late, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    collector_free(&pc);
    collector_free(&oc);
}

/* Consumers opened and closed before the loop ever ran (a start-up that
 * fails half way): close is quick, nothing is delivered, and freeing the
 * bus and running the loop once cleans everything up. Also the shutdown
 * path of mc_bus_free with consumers still open. */
static void test_loop_close_before_loop_ran(void **state)
{
    fixture f;
    fixture_init(&f);
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    mc_bus *bus = open_bus(&f, &loop, NULL);
    mc_error err = {0};
    char s[128];
    subj(&f, s, sizeof s, "sim.metrics");
    assert_int_equal(mc_bus_publish(bus, s, "x", 1, "b-1", NULL, &err), MC_OK);
    collector pc, oc;
    collector_init(&pc, 100, ACK_ALL);
    collector_init(&oc, 100, ACK_ALL);
    mc_bus_consumer *pull = open_pull(bus, MC_BUS_STREAM_SIM, "early", NULL, 0, &pc);
    mc_bus_ordered_options oo = {0};
    oo.stream = MC_BUS_STREAM_SIM;
    oo.start_seq = 1;
    oo.on_batch = on_batch;
    oo.ctx = &oc;
    mc_bus_consumer *ord = NULL;
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &ord, &err), MC_OK);
    usleep(100000); /* the helper threads are now waiting for the loop */
    uint64_t t0 = mono_ms();
    mc_bus_consumer_close(ord);
    mc_bus_consumer_close(pull);
    uint64_t t1 = mono_ms();
    if (t1 - t0 > 1000)
        fail_msg("close before the loop ran took %llu ms", (unsigned long long)(t1 - t0));

    /* mc_bus_free closes consumers still open, also before the loop ran. */
    mc_bus_consumer *pull2 = open_pull(bus, MC_BUS_STREAM_SIM, "early2", NULL, 0, &pc);
    mc_bus_consumer *ord2 = NULL;
    assert_int_equal(mc_bus_ordered_open(bus, &oo, &ord2, &err), MC_OK);
    (void)pull2;
    usleep(100000);
    assert_int_equal(mc_bus_streams_delete(bus, &err), MC_OK);
    uint64_t t2 = mono_ms();
    mc_bus_free(bus);
    uv_run(&loop, UV_RUN_DEFAULT);
    uint64_t t3 = mono_ms();
    if (t3 - t2 > 3000)
        fail_msg("bus shutdown took %llu ms", (unsigned long long)(t3 - t2));
    assert_int_equal(pc.n, 0);
    assert_int_equal(oc.n, 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    collector_free(&pc);
    collector_free(&oc);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_nkey_public_from_seed),
    cmocka_unit_test(test_open_bad_url),
    cmocka_unit_test(test_replicas_option),
    cmocka_unit_test(test_provision_idempotent_and_incompatible),
    cmocka_unit_test(test_round_trip_100),
    cmocka_unit_test(test_dedup),
    cmocka_unit_test(test_redelivery_after_kill),
    cmocka_unit_test(test_deadletter),
    cmocka_unit_test(test_pull_start_seq),
    cmocka_unit_test(test_loop_delivery_on_loop_thread),
    cmocka_unit_test(test_async_10000_acked),
    cmocka_unit_test(test_publish_without_stream_fails_clearly),
    cmocka_unit_test(test_close_from_own_callback),
    cmocka_unit_test(test_loop_close_is_quick),
    cmocka_unit_test(test_loop_close_before_loop_ran),
};

int main(void)
{
    mc_log_init("test_bus", MC_LOG_WARN, MC_LOG_FORMAT_TEXT, NULL);
    /* MC_TEST_FILTER=test_dedup runs matching tests only (debugging). */
    const char *filter = getenv("MC_TEST_FILTER");
    if (filter != NULL && filter[0] != '\0')
        cmocka_set_test_filter(filter);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mc_bus_library_shutdown(5000);
    return rc;
}
