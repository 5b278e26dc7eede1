#include "recorder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/v1/enums.pb-c.h"
#include "trace/reorder.h"

/* Engine digests kept for checkpoints not yet written. Lockstep releases a
 * tick right after the engine stepped it and realtime releases ticks at most
 * a few dozen behind, so a small ring is plenty; a tick whose digest fell
 * out of it gets a checkpoint without digests. */
#define DIGEST_RING 256

typedef struct digest_slot {
    uint64_t tick; /* 0: empty */
    uint8_t digest[MC_TRACE_HASH_BYTES];
} digest_slot;

struct mc_simrec {
    mc_trace_writer *w;
    mc_trace_reorder *ro;
    char path[4096];
    uint64_t released;     /* last released tick, 0 before any */
    uint64_t checkpointed; /* last tick with its checkpoint written */
    uint64_t engine_tick;  /* last tick the engine stepped */
    bool defer;            /* checkpoints wait for mc_simrec_checkpoint */
    digest_slot ring[DIGEST_RING];
    mc_simrec_stats stats;
};

/* Creates dir and its parents, like mkdir -p. */
static mc_status make_dirs(const char *dir, mc_error *err)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf)
        return mc_error_set(err, MC_ERR_INVALID, "TRACE_DIR: path is empty or too long");
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return mc_error_set(err, MC_ERR_IO, "TRACE_DIR: cannot create %s: %s", buf,
                                strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return mc_error_set(err, MC_ERR_IO, "TRACE_DIR: %s is not a directory", dir);
    return MC_OK;
}

mc_status mc_simrec_open(const mc_simrec_run *run, mc_simrec **out, mc_error *err)
{
    *out = NULL;
    mc_status st = make_dirs(run->dir, err);
    if (st != MC_OK)
        return st;
    mc_simrec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "out of memory for the trace recorder");
    r->defer = run->defer_checkpoints;
    st = mc_trace_reorder_new(NULL, &r->ro, err);
    if (st != MC_OK) {
        free(r);
        return st;
    }

    Trace__V1__TraceHeader h = TRACE__V1__TRACE_HEADER__INIT;
    h.seed = run->seed;
    h.scenario = (char *)run->scenario;
    h.run_id = (char *)run->run_id;
    h.mode = (char *)run->mode;
    h.approval_mode = (char *)(run->approval_mode ? run->approval_mode : "");
    h.n_settings = run->settings ? run->n_settings : 0;
    h.settings = (char **)run->settings;
    h.topology_digest.data = (uint8_t *)run->topology_digest;
    h.topology_digest.len = MC_TRACE_HASH_BYTES;
    h.config_digest.data = (uint8_t *)run->config_digest;
    h.config_digest.len = MC_TRACE_HASH_BYTES;
    h.start_time_unix_ms = run->start_time_unix_ms;
    mc_trace_writer_opts opts = {0};
    opts.signing_key_path =
        run->signing_key_path != NULL && run->signing_key_path[0] != '\0' ? run->signing_key_path
                                                                           : NULL;
    /* The run id is derived from (scenario, seed, reset count), so a restarted
     * process records the same run again: keep the earlier file and number
     * the new one. */
    for (int attempt = 1; attempt <= 100; attempt++) {
        int w;
        if (attempt == 1)
            w = snprintf(r->path, sizeof r->path, "%s/%s-seed%llu-%s.trace", run->dir,
                         run->scenario, (unsigned long long)run->seed, run->run_id);
        else
            w = snprintf(r->path, sizeof r->path, "%s/%s-seed%llu-%s-%d.trace", run->dir,
                         run->scenario, (unsigned long long)run->seed, run->run_id, attempt);
        if (w < 0 || (size_t)w >= sizeof r->path) {
            st = mc_error_set(err, MC_ERR_INVALID, "TRACE_DIR: trace path too long");
            break;
        }
        st = mc_trace_writer_open(r->path, &h, &opts, &r->w, err);
        if (st != MC_ERR_EXISTS)
            break;
    }
    if (st != MC_OK) {
        mc_trace_reorder_free(r->ro);
        free(r);
        return st;
    }
    *out = r;
    return MC_OK;
}

uint32_t mc_simrec_stage_of(const char *subject)
{
    if (strncmp(subject, "sim.", 4) == 0)
        return COMMON__V1__STAGE__STAGE_ENGINE;
    if (strcmp(subject, "ops.incidents") == 0 || strcmp(subject, "ops.watermark.detector") == 0)
        return COMMON__V1__STAGE__STAGE_DETECTOR;
    if (strcmp(subject, "ops.actions") == 0 || strcmp(subject, "ops.watermark.agent") == 0)
        return COMMON__V1__STAGE__STAGE_AGENT;
    if (strcmp(subject, "ops.decisions") == 0 || strcmp(subject, "ops.commands") == 0 ||
        strcmp(subject, "ops.watermark.orchestrator") == 0)
        return COMMON__V1__STAGE__STAGE_ORCHESTRATOR;
    return 0;
}

mc_status mc_simrec_add(mc_simrec *r, uint64_t tick, uint32_t stage, const char *subject,
                        const char *producer, uint64_t producer_seq, const uint8_t *payload,
                        size_t len, mc_error *err)
{
    if (r->released != 0 && tick <= r->released) {
        r->stats.late++;
        return MC_OK;
    }
    mc_status st =
        mc_trace_reorder_add(r->ro, tick, stage, subject, producer, producer_seq, payload, len, err);
    if (st != MC_OK)
        r->stats.refused++;
    return st;
}

void mc_simrec_engine_tick(mc_simrec *r, uint64_t tick, const uint8_t digest[MC_TRACE_HASH_BYTES])
{
    digest_slot *slot = &r->ring[tick % DIGEST_RING];
    slot->tick = tick;
    memcpy(slot->digest, digest, MC_TRACE_HASH_BYTES);
    if (tick > r->engine_tick)
        r->engine_tick = tick;
}

static mc_status emit_record(void *ctx, const mc_trace_reorder_entry *e, mc_error *err)
{
    mc_simrec *r = ctx;
    mc_status st = mc_trace_writer_append(r->w, e->tick, e->stage, e->subject, e->producer,
                                          e->producer_seq, e->payload, e->len, err);
    if (st == MC_ERR_INVALID || st == MC_ERR_LIMIT) {
        /* A record the writer refuses (bad name, oversized payload) would
         * block every later tick if it stayed buffered: skip it, counted. */
        r->stats.refused++;
        return MC_OK;
    }
    if (st == MC_OK)
        r->stats.records++;
    return st;
}

/* Writes checkpoint t: with digest when given, else the digest its step
 * left (none when it fell out of the ring). */
static mc_status write_checkpoint(mc_simrec *r, uint64_t t, const uint8_t *digest, mc_error *err)
{
    mc_trace_digest d;
    size_t n = 0;
    const digest_slot *slot = &r->ring[t % DIGEST_RING];
    if (digest != NULL || slot->tick == t) {
        d.stage = COMMON__V1__STAGE__STAGE_ENGINE;
        memcpy(d.digest, digest != NULL ? digest : slot->digest, MC_TRACE_HASH_BYTES);
        n = 1;
    }
    mc_status st = mc_trace_writer_checkpoint(r->w, t, &d, n, err);
    if (st != MC_OK)
        return st;
    r->stats.checkpoints++;
    r->checkpointed = t;
    return MC_OK;
}

mc_status mc_simrec_release(mc_simrec *r, uint64_t tick, mc_error *err)
{
    if (tick > r->engine_tick)
        tick = r->engine_tick;
    /* Tick by tick, so each checkpoint follows its own tick's records and
     * precedes the next tick's (FORMAT.md, canonical order rule 3). */
    while (r->released < tick) {
        uint64_t t = r->released + 1;
        mc_status st;
        /* A deferred checkpoint the shell never handed over (the engine
         * stepped on without it) still comes before the next tick. */
        if (r->defer && r->checkpointed < r->released &&
            (st = write_checkpoint(r, r->released, NULL, err)) != MC_OK)
            return st;
        st = mc_trace_reorder_release(r->ro, t, emit_record, r, err);
        if (st != MC_OK)
            return st;
        r->released = t;
        if (!r->defer && (st = write_checkpoint(r, t, NULL, err)) != MC_OK)
            return st;
    }
    return MC_OK;
}

mc_status mc_simrec_checkpoint(mc_simrec *r, uint64_t tick,
                               const uint8_t digest[MC_TRACE_HASH_BYTES], mc_error *err)
{
    if (tick > r->released)
        tick = r->released;
    while (r->checkpointed < tick) {
        uint64_t t = r->checkpointed + 1;
        mc_status st = write_checkpoint(r, t, t == tick ? digest : NULL, err);
        if (st != MC_OK)
            return st;
    }
    return MC_OK;
}

mc_status mc_simrec_input(mc_simrec *r, uint64_t tick, const char *subject, const char *producer,
                          uint64_t producer_seq, const uint8_t *payload, size_t len,
                          mc_error *err)
{
    if (r->released == 0 || tick > r->released)
        return mc_simrec_add(r, tick, MC_TRACE_STAGE_INPUTS, subject, producer, producer_seq,
                             payload, len, err);
    if (tick == r->released && r->checkpointed < tick) {
        /* Its tick's records are written; the input sorts after all of them
         * (stage MC_TRACE_STAGE_INPUTS) and before the checkpoint. */
        mc_status st = mc_trace_writer_append(r->w, tick, MC_TRACE_STAGE_INPUTS, subject, producer,
                                              producer_seq, payload, len, err);
        if (st == MC_OK)
            r->stats.records++;
        else
            r->stats.refused++;
        return st;
    }
    r->stats.late++;
    return MC_OK;
}

uint64_t mc_simrec_released(const mc_simrec *r) { return r->released; }

const char *mc_simrec_path(const mc_simrec *r) { return r->path; }

void mc_simrec_stats_get(const mc_simrec *r, mc_simrec_stats *out) { *out = r->stats; }

mc_status mc_simrec_close(mc_simrec **rp, mc_trace_footer_info *info, mc_error *err)
{
    if (rp == NULL || *rp == NULL)
        return MC_OK;
    mc_simrec *r = *rp;
    *rp = NULL;
    mc_error rel_err;
    mc_error_clear(&rel_err);
    mc_status st = mc_simrec_release(r, r->engine_tick, &rel_err);
    if (st == MC_OK)
        st = mc_simrec_checkpoint(r, r->released, NULL, &rel_err);
    mc_status cst = mc_trace_writer_close(&r->w, info, err);
    if (st != MC_OK && err != NULL)
        *err = rel_err;
    mc_trace_reorder_free(r->ro);
    free(r);
    return st != MC_OK ? st : cst;
}

void mc_simrec_free(mc_simrec *r)
{
    if (r == NULL)
        return;
    mc_trace_writer_free(r->w);
    mc_trace_reorder_free(r->ro);
    free(r);
}
