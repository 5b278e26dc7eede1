/* The database worker thread (see dbq.h). */
#include "dbq.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

struct mc_dbq {
    uv_loop_t *loop;
    mc_store *store;
    size_t max_jobs;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Waiting for the worker. */
    mc_dbq_job *todo_head, *todo_tail;
    /* Finished, waiting for the loop. */
    mc_dbq_job *done_head, *done_tail;
    size_t depth; /* submitted and not yet done */
    bool stopping;
    bool stopped; /* the worker left its loop */
    atomic_bool reachable;
    uv_async_t async;
    bool closing;
    void (*close_cb)(void *);
    void *close_ctx;
    bool close_cb_called;
};

static void *worker_main(void *arg)
{
    mc_dbq *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->todo_head == NULL && !q->stopping)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->todo_head == NULL && q->stopping)
            break;
        mc_dbq_job *j = q->todo_head;
        q->todo_head = j->next;
        if (q->todo_head == NULL)
            q->todo_tail = NULL;
        pthread_mutex_unlock(&q->mu);

        mc_error_clear(&j->err);
        j->status = j->work ? j->work(q->store, j) : MC_OK;
        if (j->work != NULL)
            atomic_store(&q->reachable, j->status != MC_ERR_UNAVAILABLE);

        pthread_mutex_lock(&q->mu);
        j->next = NULL;
        if (q->done_tail)
            q->done_tail->next = j;
        else
            q->done_head = j;
        q->done_tail = j;
        uv_async_send(&q->async);
    }
    q->stopped = true;
    pthread_mutex_unlock(&q->mu);
    uv_async_send(&q->async);
    return NULL;
}

static void on_async_closed(uv_handle_t *h)
{
    mc_dbq *q = h->data;
    if (q->close_cb != NULL && !q->close_cb_called) {
        q->close_cb_called = true;
        q->close_cb(q->close_ctx);
    }
}

static void on_async(uv_async_t *a)
{
    mc_dbq *q = a->data;
    pthread_mutex_lock(&q->mu);
    mc_dbq_job *list = q->done_head;
    q->done_head = q->done_tail = NULL;
    pthread_mutex_unlock(&q->mu);
    while (list != NULL) {
        mc_dbq_job *j = list;
        list = j->next;
        pthread_mutex_lock(&q->mu);
        q->depth--;
        pthread_mutex_unlock(&q->mu);
        j->done(j);
    }
    pthread_mutex_lock(&q->mu);
    bool finished = q->stopped && q->done_head == NULL;
    pthread_mutex_unlock(&q->mu);
    if (finished && q->closing && !uv_is_closing((uv_handle_t *)&q->async))
        uv_close((uv_handle_t *)&q->async, on_async_closed);
}

mc_status mc_dbq_new(uv_loop_t *loop, mc_store *store, size_t max_jobs, mc_dbq **out,
                     mc_error *err)
{
    *out = NULL;
    mc_dbq *q = calloc(1, sizeof *q);
    if (q == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "dbq: out of memory");
    q->loop = loop;
    q->store = store;
    q->max_jobs = max_jobs ? max_jobs : 65536;
    atomic_init(&q->reachable, true);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    uv_async_init(loop, &q->async, on_async);
    q->async.data = q;
    if (pthread_create(&q->thread, NULL, worker_main, q) != 0) {
        q->stopped = true;
        q->closing = true;
        uv_close((uv_handle_t *)&q->async, NULL);
        q->store = NULL; /* the caller keeps it on failure */
        return mc_error_set(err, MC_ERR_IO, "dbq: cannot start the database thread");
    }
    q->thread_started = true;
    *out = q;
    return MC_OK;
}

mc_status mc_dbq_submit(mc_dbq *q, mc_dbq_job *job, mc_error *err)
{
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return mc_error_set(err, MC_ERR_STATE, "database worker is stopping");
    }
    if (q->depth >= q->max_jobs) {
        pthread_mutex_unlock(&q->mu);
        return mc_error_set(err, MC_ERR_LIMIT, "database queue full (%zu jobs)", q->max_jobs);
    }
    job->next = NULL;
    if (q->todo_tail)
        q->todo_tail->next = job;
    else
        q->todo_head = job;
    q->todo_tail = job;
    q->depth++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return MC_OK;
}

size_t mc_dbq_depth(const mc_dbq *q)
{
    mc_dbq *m = (mc_dbq *)q;
    pthread_mutex_lock(&m->mu);
    size_t d = m->depth;
    pthread_mutex_unlock(&m->mu);
    return d;
}

bool mc_dbq_reachable(const mc_dbq *q)
{
    return atomic_load(&((mc_dbq *)q)->reachable);
}

void mc_dbq_close(mc_dbq *q, void (*cb)(void *ctx), void *ctx)
{
    if (q == NULL || q->closing)
        return;
    q->closing = true;
    q->close_cb = cb;
    q->close_ctx = ctx;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    /* The worker wakes the loop once it has stopped. */
    uv_async_send(&q->async);
}

void mc_dbq_free(mc_dbq *q)
{
    if (q == NULL)
        return;
    if (q->thread_started) {
        pthread_mutex_lock(&q->mu);
        q->stopping = true;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
        pthread_join(q->thread, NULL);
    }
    mc_store_free(q->store);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}
