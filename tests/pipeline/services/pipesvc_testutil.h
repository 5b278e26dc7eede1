/* Helpers of the pipeline service tests: a fresh database and private stream
 * and subject prefixes per test, the service binaries spawned as children,
 * messages built and published the way the engine does, and inspection of
 * the streams and tables. Failures end the test through cmocka. */
#ifndef MC_TESTS_PIPESVC_TESTUTIL_H
#define MC_TESTS_PIPESVC_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libpq-fe.h>
#include <nats/nats.h>

#include "bus/bus.h"

typedef struct pt_env {
    char nats_url[512];
    char conninfo[1024]; /* the server, any database */
    char dbname[64];
    char stream_prefix[64];
    char subject_prefix[64];
    char run_id[64];
    mc_bus *bus; /* thread mode, for publishing */
    natsConnection *nc;
    jsCtx *js;
    PGconn *pg; /* to dbname */
    uint64_t producer_seq[4];
} pt_env;

/* Fresh prefixes ("T<pid>x<n>_", "t<pid>x<n>."), a fresh database, the
 * streams provisioned. */
void pt_env_init(pt_env *e);
/* Deletes the streams and drops the database. */
void pt_env_cleanup(pt_env *e);

/* ---- Children ---- */

/* Spawns binary with the environment of the test plus NATS_URL, DB_NAME
 * (DATABASE_URL removed), the prefixes, ADMIN_ADDR=127.0.0.1:<admin_port>,
 * LOG_FORMAT=text, CONSUMER_ACK_WAIT=2s and extra ("K=V" strings, NULL-terminated; may be NULL).
 * stdout and stderr go to log_path. */
pid_t pt_spawn(const pt_env *e, const char *binary, uint16_t admin_port,
               const char *const *extra, const char *log_path);
/* Waits up to timeout_ms for pid to exit; returns its exit status, 128+sig
 * when killed by a signal, or -1 on timeout (the child is then killed). */
int pt_wait(pid_t pid, int timeout_ms);
/* Kills (SIGKILL) and reaps every spawned child not waited for yet: a
 * cmocka teardown, so a failed test leaves no service running. */
int pt_kill_children(void **state);
/* A port that was free a moment ago. */
uint16_t pt_free_port(void);
/* GET http://127.0.0.1:port/path; returns the status (0 when it could not
 * connect) and copies the body into body (may be NULL). */
int pt_http_get(uint16_t port, const char *path, char *body, size_t n);
/* Waits until GET /ready answers 200. */
bool pt_wait_ready(uint16_t port, int timeout_ms);
/* The file's contents (at most n-1 bytes). */
void pt_read_log(const char *path, char *out, size_t n);

/* ---- Messages ---- */

/* One service-level or node-level sample. */
typedef struct pt_sample {
    const char *service_id;
    const char *node_id;
    const char *metric;
    double value;
} pt_sample;

/* Publishes a MetricSnapshot of tick (sim time = T0 + tick seconds) with
 * the samples, stamped by the engine, on <prefix>sim.metrics. */
void pt_publish_snapshot(pt_env *e, uint64_t tick, uint32_t chunk_index, uint32_t chunk_count,
                         const pt_sample *samples, size_t n);
/* Publishes the engine's watermark of tick on <prefix>sim.watermark. */
void pt_publish_engine_watermark(pt_env *e, uint64_t tick, uint32_t message_count);
/* Publishes raw bytes on <prefix><subject> with the given message id. */
void pt_publish_raw(pt_env *e, const char *subject, const void *data, size_t len,
                    const char *msg_id);
/* Waits until every publish is stored. */
void pt_flush(pt_env *e);

/* ---- Inspection ---- */

/* Messages stored on <prefix><subject> in the stream that captures it. */
uint64_t pt_subject_count(pt_env *e, const char *subject);
/* Deletes a durable consumer (SIM or OPS stream), so a service that starts
 * again gets the whole stream redelivered. */
void pt_delete_consumer(pt_env *e, bool ops_stream, const char *durable);
/* The last message on <prefix><subject>; caller destroys. NULL when none. */
natsMsg *pt_last_msg(pt_env *e, bool ops_stream, const char *subject);

int64_t pt_scalar(pt_env *e, const char *sql);
/* Polls sql until it returns at least want, up to timeout_ms; returns the
 * last value. */
int64_t pt_wait_scalar(pt_env *e, const char *sql, int64_t want, int timeout_ms);

void pt_sleep_ms(int ms);

#endif
