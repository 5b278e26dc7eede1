/* The orchestrator's database worker: one thread that owns the mc_store
 * (libpq is blocking and the store is not thread-safe) and runs jobs in the
 * order they were submitted, so the transitions of an action reach the
 * database in the order the approval core made them. Each job's done
 * callback then runs on the loop thread (uv_async), where the shell acks
 * the consumed messages or answers the API call that waited for the write.
 *
 * Bounded: at most max_jobs jobs wait; submitting more is MC_ERR_LIMIT. */
#ifndef MC_ORCH_DBQ_H
#define MC_ORCH_DBQ_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "status/status.h"
#include "store/store.h"

typedef struct mc_dbq mc_dbq;

/* A job; embed it first in the caller's job struct. work runs on the worker
 * thread with the store (it may be NULL: a barrier); done runs on the loop
 * thread afterwards and owns the job (frees it). status is what work
 * returned. */
typedef struct mc_dbq_job mc_dbq_job;
typedef mc_status (*mc_dbq_work_fn)(mc_store *store, mc_dbq_job *job);
typedef void (*mc_dbq_done_fn)(mc_dbq_job *job);

struct mc_dbq_job {
    mc_dbq_work_fn work;
    mc_dbq_done_fn done;
    mc_status status;
    mc_error err;
    mc_dbq_job *next; /* private */
};

/* Takes ownership of store (freed by mc_dbq_free) and starts the worker.
 * Call on the loop thread. */
mc_status mc_dbq_new(uv_loop_t *loop, mc_store *store, size_t max_jobs, mc_dbq **out,
                     mc_error *err);

/* Queues job (work then done). MC_ERR_LIMIT when full, MC_ERR_STATE after
 * mc_dbq_close; on error the job is not taken. Loop thread. */
mc_status mc_dbq_submit(mc_dbq *q, mc_dbq_job *job, mc_error *err);

/* Jobs queued or running, not yet done. */
size_t mc_dbq_depth(const mc_dbq *q);

/* True when the last job that talked to the database succeeded in reaching
 * it (not MC_ERR_UNAVAILABLE). */
bool mc_dbq_reachable(const mc_dbq *q);

/* Lets queued jobs finish (their done callbacks run on the loop as usual),
 * then stops the thread; further submits fail. cb runs on the loop thread
 * once the worker has stopped and every done callback ran. */
void mc_dbq_close(mc_dbq *q, void (*cb)(void *ctx), void *ctx);

/* Joins the thread, frees the store and the queue. Call after close's
 * callback ran (or the loop ended); NULL-safe. */
void mc_dbq_free(mc_dbq *q);

#endif
