#include "svc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log/log.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"

/* ---- Held messages ---- */

struct mc_svc_held_entry {
    mc_bus_batch *batch;
    uint64_t base;   /* number of its first message */
    size_t count;
    size_t next;     /* messages [0, next) were acked */
    mc_svc_held_entry *link;
};

uint64_t mc_svc_held_push(mc_svc_held *h, mc_bus_batch *b)
{
    mc_svc_held_entry *e = calloc(1, sizeof *e);
    if (e == NULL) {
        MC_LOG_ERROR("out of memory holding a batch; its messages will be redelivered",
                     MC_LF_UINT("messages", mc_bus_batch_count(b)));
        mc_bus_batch_free(b);
        return UINT64_MAX;
    }
    e->batch = b;
    e->base = h->pushed;
    e->count = mc_bus_batch_count(b);
    h->pushed += e->count;
    if (h->tail)
        h->tail->link = e;
    else
        h->head = e;
    h->tail = e;
    h->batches++;
    return e->base;
}

mc_bus_msg *mc_svc_held_msg(const mc_svc_held *h, uint64_t number)
{
    for (mc_svc_held_entry *e = h->head; e != NULL; e = e->link) {
        if (number < e->base)
            return NULL;
        if (number - e->base < e->count)
            return mc_bus_batch_msg(e->batch, (size_t)(number - e->base));
    }
    return NULL;
}

static void held_pop(mc_svc_held *h)
{
    mc_svc_held_entry *e = h->head;
    h->head = e->link;
    if (h->head == NULL)
        h->tail = NULL;
    h->batches--;
    mc_bus_batch_free(e->batch);
    free(e);
}

void mc_svc_held_ack_before(mc_svc_held *h, uint64_t mark, uint64_t *failed)
{
    while (h->head != NULL && h->head->base < mark) {
        mc_svc_held_entry *e = h->head;
        uint64_t upto = mark - e->base;
        size_t end = upto < e->count ? (size_t)upto : e->count;
        for (size_t i = e->next; i < end; i++) {
            mc_error err = {0};
            mc_bus_msg *m = mc_bus_batch_msg(e->batch, i);
            if (mc_bus_msg_ack(m, &err) != MC_OK) {
                if (failed)
                    (*failed)++;
                MC_LOG_WARN("ack failed; the message will be redelivered and handled as a "
                            "duplicate",
                            MC_LF_STR("error", err.msg));
            }
        }
        e->next = end;
        if (e->next < e->count)
            break;
        held_pop(h);
    }
    if (mark > h->acked)
        h->acked = mark;
}

void mc_svc_held_release(mc_svc_held *h)
{
    while (h->head != NULL)
        held_pop(h);
    h->acked = h->pushed;
}

/* ---- Lanes ---- */

static void lane_kick(mc_svc_lane *l);

static void lane_work(uv_work_t *req)
{
    mc_svc_lane *l = req->data;
    l->running->work(l->running, l->store);
}

static void lane_after(uv_work_t *req, int status)
{
    (void)status; /* jobs are never cancelled */
    mc_svc_lane *l = req->data;
    mc_svc_job *job = l->running;
    l->running = NULL;
    l->queued--;
    job->done(job);
    lane_kick(l);
    if (mc_svc_lane_idle(l) && l->on_idle)
        l->on_idle(l->idle_ctx);
}

static void lane_kick(mc_svc_lane *l)
{
    if (l->running != NULL || l->head == NULL)
        return;
    mc_svc_job *job = l->head;
    l->head = job->next;
    if (l->head == NULL)
        l->tail = NULL;
    job->next = NULL;
    l->running = job;
    l->req.data = l;
    int rc = uv_queue_work(l->loop, &l->req, lane_work, lane_after);
    if (rc != 0) {
        /* uv_queue_work only fails for a NULL work callback; keep the job
         * rather than lose it, and say so. */
        MC_LOG_ERROR("uv_queue_work failed", MC_LF_STR("error", uv_strerror(rc)));
        l->running = NULL;
        job->next = l->head;
        l->head = job;
        if (l->tail == NULL)
            l->tail = job;
    }
}

void mc_svc_lane_init(mc_svc_lane *l, uv_loop_t *loop, mc_store *store)
{
    memset(l, 0, sizeof *l);
    l->loop = loop;
    l->store = store;
}

void mc_svc_lane_submit(mc_svc_lane *l, mc_svc_job *job)
{
    job->next = NULL;
    if (l->tail)
        l->tail->next = job;
    else
        l->head = job;
    l->tail = job;
    l->queued++;
    lane_kick(l);
}

bool mc_svc_lane_idle(const mc_svc_lane *l)
{
    return l->queued == 0;
}

/* ---- Publishing ---- */

const char *mc_svc_subject_rest(const char *subject, const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    if (subject == NULL)
        return NULL;
    if (n == 0)
        return subject;
    return strncmp(subject, prefix, n) == 0 ? subject + n : NULL;
}

static void copy_run(char *out, size_t n, const Common__V1__Stamp *s)
{
    snprintf(out, n, "%s", s && s->run_id ? s->run_id : "");
}

mc_status mc_svc_outbox_run_id(const mc_outbox_msg *m, char *out, size_t n, mc_error *err)
{
    const char *s = m->subject;
    if (strcmp(s, "ops.incidents") == 0) {
        Ops__V1__Incident *x = ops__v1__incident__unpack(NULL, m->len, m->payload);
        if (x == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "outbox: %s message does not decode", s);
        copy_run(out, n, x->stamp);
        ops__v1__incident__free_unpacked(x, NULL);
        return MC_OK;
    }
    if (strcmp(s, "ops.actions") == 0) {
        Ops__V1__Action *x = ops__v1__action__unpack(NULL, m->len, m->payload);
        if (x == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "outbox: %s message does not decode", s);
        copy_run(out, n, x->stamp);
        ops__v1__action__free_unpacked(x, NULL);
        return MC_OK;
    }
    if (strncmp(s, "ops.watermark.", 14) == 0) {
        Ops__V1__Watermark *x = ops__v1__watermark__unpack(NULL, m->len, m->payload);
        if (x == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "outbox: %s message does not decode", s);
        copy_run(out, n, x->stamp);
        ops__v1__watermark__free_unpacked(x, NULL);
        return MC_OK;
    }
    return mc_error_set(err, MC_ERR_INVALID, "outbox: unknown subject %s", s);
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static mc_status publish_once(mc_bus *bus, const char *prefix, const mc_outbox *out,
                              mc_error *err)
{
    for (size_t i = 0; i < out->len; i++) {
        const mc_outbox_msg *m = &out->items[i];
        char run[128];
        mc_status st = mc_svc_outbox_run_id(m, run, sizeof run, err);
        if (st != MC_OK)
            return st;
        char subject[MC_SUBJECT_MAX + 128];
        snprintf(subject, sizeof subject, "%s%s", prefix ? prefix : "", m->subject);
        st = mc_bus_publish_stamped(bus, subject, run, m->tick, m->producer_seq, m->payload,
                                    m->len, err);
        if (st != MC_OK)
            return st;
    }
    return mc_bus_flush(bus, 60000, err);
}

mc_status mc_svc_publish_outbox(mc_bus *bus, const char *subject_prefix, const mc_outbox *out,
                                uint32_t attempts, const atomic_bool *stop, mc_error *err)
{
    if (out->len == 0)
        return MC_OK;
    uint64_t pause = 200;
    for (uint32_t a = 1;; a++) {
        mc_status st = publish_once(bus, subject_prefix, out, err);
        if (st == MC_OK || st == MC_ERR_INVALID)
            return st;
        if (a >= attempts || (stop != NULL && atomic_load(stop)))
            return st;
        MC_LOG_WARN("publishing the outbox failed; retrying with the same message ids",
                    MC_LF_UINT("attempt", a), MC_LF_UINT("messages", out->len),
                    MC_LF_STR("error", err->msg));
        sleep_ms(pause);
        if (pause < 5000)
            pause *= 2;
    }
}

/* ---- Admin port ---- */

static bool admin_ready(void *ctx, const char **reason)
{
    mc_svc_admin *a = ctx;
    if (atomic_load(&a->nats_ok) && atomic_load(&a->db_ok))
        return true;
    *reason = a->reason[0] ? a->reason : "starting: dependencies not probed yet";
    return false;
}

static void probe_work(uv_work_t *req)
{
    mc_svc_admin *a = req->data;
    mc_error err = {0};
    /* The connection state, not a JetStream round trip: the streams were
     * provisioned at start, and a lost server shows as a reconnect. */
    if (mc_bus_connected(a->bus)) {
        atomic_store(&a->nats_ok, true);
        a->nats_why[0] = '\0';
    } else {
        atomic_store(&a->nats_ok, false);
        snprintf(a->nats_why, sizeof a->nats_why, "NATS: not connected (reconnecting)");
    }
    mc_status st = MC_OK;
    if (a->probe_store == NULL) {
        char conninfo[1024];
        if (mc_db_config_conninfo(a->db, conninfo, sizeof conninfo) != MC_OK) {
            st = mc_error_set(&err, MC_ERR_LIMIT, "database settings too long");
        } else {
            /* One quick attempt: the probe runs again in a few seconds. */
            mc_store_options o = {.conninfo = conninfo, .connect_attempts = 1};
            st = mc_store_open(&o, &a->probe_store, &err);
        }
    }
    if (st == MC_OK) {
        uint64_t seq = 0;
        st = mc_store_position_get(a->probe_store, "ready-probe", &seq, &err);
    }
    if (st == MC_OK) {
        atomic_store(&a->db_ok, true);
        a->db_why[0] = '\0';
    } else {
        atomic_store(&a->db_ok, false);
        snprintf(a->db_why, sizeof a->db_why, "PostgreSQL: %s", err.msg);
    }
}

static void probe_after(uv_work_t *req, int status)
{
    (void)status;
    mc_svc_admin *a = req->data;
    a->probing = false;
    bool n = atomic_load(&a->nats_ok), d = atomic_load(&a->db_ok);
    mc_http_gauge_set(a->g_nats_up, n ? 1 : 0);
    mc_http_gauge_set(a->g_db_up, d ? 1 : 0);
    snprintf(a->reason, sizeof a->reason, "%s%s%s", a->nats_why,
             a->nats_why[0] && a->db_why[0] ? "; " : "", a->db_why);
}

static void probe_tick(uv_timer_t *t)
{
    mc_svc_admin *a = t->data;
    if (a->probing || a->stopping)
        return;
    a->probing = true;
    a->probe_req.data = a;
    if (uv_queue_work(a->loop, &a->probe_req, probe_work, probe_after) != 0)
        a->probing = false;
}

mc_status mc_svc_counter(mc_svc_admin *a, const char *name, const char *help,
                         mc_http_counter **out, mc_error *err)
{
    if (mc_http_metrics_counter(a->reg, name, help, NULL, 0, out, err) != MC_OK)
        return mc_error_wrap(err, "registering %s", name);
    return MC_OK;
}

mc_status mc_svc_gauge(mc_svc_admin *a, const char *name, const char *help, mc_http_gauge **out,
                       mc_error *err)
{
    if (mc_http_metrics_gauge(a->reg, name, help, NULL, 0, out, err) != MC_OK)
        return mc_error_wrap(err, "registering %s", name);
    return MC_OK;
}

mc_status mc_svc_admin_start(mc_svc_admin *a, uv_loop_t *loop, const mc_addr *addr, mc_bus *bus,
                             const mc_db_config *db, uint64_t probe_ms, mc_error *err)
{
    memset(a, 0, sizeof *a);
    a->loop = loop;
    a->bus = bus;
    a->db = db;
    atomic_init(&a->nats_ok, false);
    atomic_init(&a->db_ok, false);
    mc_status st = mc_http_metrics_new(&a->reg, err);
    if (st != MC_OK)
        return st;
    mc_http_server_config hc = {0};
    hc.host = addr->host;
    hc.port = addr->port;
    hc.shutdown_timeout_ms = 2000;
    st = mc_http_server_new(loop, &hc, &a->srv, err);
    if (st != MC_OK)
        return mc_error_wrap(err, "admin port %s:%u", addr->host, (unsigned)addr->port);
    if ((st = mc_http_server_add_health(a->srv, admin_ready, a, err)) != MC_OK ||
        (st = mc_http_server_route(a->srv, MC_HTTP_GET | MC_HTTP_HEAD, "/metrics",
                                   mc_http_metrics_handler, a->reg, err)) != MC_OK ||
        (st = mc_http_server_register_metrics(a->srv, a->reg, err)) != MC_OK ||
        (st = mc_svc_gauge(a, "microcloud_nats_up", "1 when connected to NATS at the last probe",
                           &a->g_nats_up, err)) != MC_OK ||
        (st = mc_svc_gauge(a, "microcloud_postgres_up", "1 when PostgreSQL answered the last probe",
                           &a->g_db_up, err)) != MC_OK)
        return st;
    uv_timer_init(loop, &a->timer);
    a->timer.data = a;
    uv_timer_start(&a->timer, probe_tick, 0, probe_ms ? probe_ms : 2000);
    return MC_OK;
}

void mc_svc_admin_stop(mc_svc_admin *a)
{
    if (a->stopping)
        return;
    a->stopping = true;
    if (a->srv != NULL) {
        uv_timer_stop(&a->timer);
        uv_close((uv_handle_t *)&a->timer, NULL);
        mc_http_server_shutdown(a->srv, NULL, NULL);
    }
}

void mc_svc_admin_free(mc_svc_admin *a)
{
    if (a->srv != NULL) {
        mc_http_server_free(a->srv);
        a->srv = NULL;
        uv_run(a->loop, UV_RUN_DEFAULT);
    }
    mc_http_metrics_free(a->reg);
    a->reg = NULL;
    mc_store_free(a->probe_store);
    a->probe_store = NULL;
}

/* ---- Files ---- */

mc_status mc_svc_read_file(const char *path, size_t max_bytes, char **out, size_t *len,
                           mc_error *err)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return mc_error_set(err, MC_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = malloc(max_bytes + 1);
    if (buf == NULL) {
        fclose(f);
        return mc_error_set(err, MC_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, max_bytes + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mc_error_set(err, MC_ERR_IO, "%s: read error", path);
    }
    if (n > max_bytes) {
        free(buf);
        return mc_error_set(err, MC_ERR_LIMIT, "%s: larger than %zu bytes", path, max_bytes);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return MC_OK;
}
