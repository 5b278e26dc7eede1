/* Helpers for the orchestrator's integration tests: a fresh database, the
 * orchestrator binary as a child process with its environment, curl and buf
 * runs, a raw SSE client, a stand-in engine, and a bus client to publish
 * inputs and collect what the orchestrator publishes. */
#ifndef MC_ORCH_TEST_UTIL_H
#define MC_ORCH_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bus/bus.h"
#include "ops/v1/actions.pb-c.h"

/* ---- Process helpers ---- */

/* Runs argv (argv[0] searched in PATH), captures stdout (and stderr when
 * merge_stderr) into a malloc'd string, waits up to timeout_ms. Returns the
 * exit status (or -1). */
int th_run(char *const argv[], char **out, bool merge_stderr, int timeout_ms);

/* ---- The orchestrator as a child ---- */

typedef struct th_orch {
    pid_t pid;
    uint16_t port;
    char prefix_stream[64];
    char prefix_subject[64];
    char dbname[64];
    char log_path[256];
    char extra[16][256]; /* KEY=VALUE */
    size_t n_extra;
} th_orch;

/* A fresh database for this test run (created once, name returned). */
const char *th_database(void);

/* Prepares o with a unique bus prefix (tag names it) and the run's
 * database. Add environment with th_orch_env before starting. */
void th_orch_init(th_orch *o, const char *tag);
void th_orch_env(th_orch *o, const char *kv);
/* Starts the binary and waits until GET /ready answers 200 (asserts). */
void th_orch_start(th_orch *o);
/* SIGTERM and wait; returns the exit status (-1 on timeout, then killed). */
int th_orch_stop(th_orch *o);

/* ---- HTTP ---- */

typedef struct th_resp {
    int status;
    char *body;    /* malloc'd, NUL-terminated */
    char *headers; /* malloc'd raw header block (curl -D) */
} th_resp;

void th_resp_free(th_resp *r);

/* curl -X POST with a JSON body on the orchestrator; token may be NULL.
 * extra_header may be NULL. */
void th_post_json(const th_orch *o, const char *path, const char *json, const char *token,
                  const char *extra_header, th_resp *r);
/* curl with arbitrary extra args (method, headers) on path. */
void th_curl(const th_orch *o, const char *path, const char *const *args, size_t n,
             th_resp *r);

/* ---- SSE over a raw socket ---- */

typedef struct th_sse {
    int fd;
    char *buf;
    size_t len, cap;
} th_sse;

typedef struct th_event {
    char id[32];
    char type[32];
    char *data;
} th_event;

/* Connects and sends GET path with optional extra header lines ("K: v").
 * Returns the HTTP status. rcvbuf > 0 sets SO_RCVBUF first. */
int th_sse_open(th_sse *s, uint16_t port, const char *path, const char *header, int rcvbuf);
/* Next event within timeout_ms (comments skipped); false on timeout/EOF. */
bool th_sse_next(th_sse *s, th_event *ev, int timeout_ms);
void th_event_free(th_event *ev);
void th_sse_close(th_sse *s);

/* ---- The bus ---- */

typedef struct th_bus th_bus;

/* A thread-mode bus with o's prefixes, and an ordered consumer collecting
 * everything published on OPS from now on. */
th_bus *th_bus_open(const th_orch *o);
void th_bus_close(th_bus *b);
/* Publishes a packed message on prefix+subject (synchronously). */
void th_bus_publish(th_bus *b, const char *subject, const ProtobufCMessage *m, const char *run,
                    uint64_t tick, uint64_t seq);
/* Number of collected messages on prefix+subject so far. */
size_t th_bus_count(th_bus *b, const char *subject);
/* Waits until th_bus_count(subject) >= n or timeout; returns the count. */
size_t th_bus_wait(th_bus *b, const char *subject, size_t n, int timeout_ms);
/* The i-th collected message on subject, unpacked with desc (caller frees
 * with protobuf_c_message_free_unpacked), NULL when absent. */
ProtobufCMessage *th_bus_get(th_bus *b, const char *subject, size_t i,
                             const ProtobufCMessageDescriptor *desc);

/* Publishes a PENDING action proposal. */
void th_publish_action(th_bus *b, const char *run, const char *id, const char *target,
                       uint64_t tick, uint64_t seq);
/* Publishes the agent's watermark for tick. */
void th_publish_agent_watermark(th_bus *b, const char *run, uint64_t tick, uint64_t seq);

/* ---- Database ---- */

/* SELECT count(*) FROM action_history WHERE action_id = id. */
long th_history_rows(const char *action_id);
/* The stored status of an action (ActionStatus number), -1 if absent. */
int th_action_status(const char *action_id);

/* ---- A stand-in engine ---- */

typedef struct th_engine th_engine;
/* Listens on a free port; answers every request with status and body
 * (content type application/json) and records the last request. */
th_engine *th_engine_start(int status, const char *body);
uint16_t th_engine_port(const th_engine *e);
/* The last forwarded request's path, content type and body (the
 * orchestrator's own GetState/GetTopology refreshes are not recorded). */
void th_engine_last(th_engine *e, char *path, char *ctype, char *body, size_t cap);
int th_engine_requests(th_engine *e);
void th_engine_stop(th_engine *e);

/* A unique uuid-looking id from a counter. */
void th_uuid(char out[37], uint32_t n);

/* Milliseconds of a monotonic clock. */
uint64_t th_now_ms(void);

#endif
