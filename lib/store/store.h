/* PostgreSQL storage for the services (libpq): connection with reconnect,
 * versioned migrations, COPY ingest of metrics with the consumer position in
 * the same transaction, and the incident and action repositories.
 *
 * One mc_store owns one libpq connection and is NOT thread-safe: give each
 * thread that talks to the database its own store. Every call is blocking.
 *
 * Connection loss. Each operation first makes sure the connection is up
 * (PQreset with exponential backoff, a bounded number of attempts, then
 * MC_ERR_UNAVAILABLE). When the connection drops during an operation, the
 * server rolls the open transaction back, so nothing is half-applied; the
 * store reconnects and runs the operation once more when that is safe: it is
 * always safe for idempotent operations (metrics commit, position read,
 * incident upsert, action insert, reads), and for the action status update
 * only when the drop happened before COMMIT was sent. When COMMIT itself was
 * in flight the outcome is unknown and the call returns MC_ERR_UNAVAILABLE
 * saying so. So after a server restart the next operation succeeds.
 *
 * SQL. Every value goes to the server as a parameter (PQexecParams) or in the
 * COPY stream; no value is ever pasted into SQL text.
 *
 * Errors. MC_ERR_UNAVAILABLE: the server cannot be reached. MC_ERR_INVALID:
 * bad argument, or the server rejected a value (e.g. an id that is not a
 * UUID). MC_ERR_NOT_FOUND, MC_ERR_STATE (compare-and-set refused), and
 * MC_ERR_IO for any other server error, with the server's message.
 */
#ifndef MC_STORE_STORE_H
#define MC_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "ops/v1/actions.pb-c.h"
#include "ops/v1/incidents.pb-c.h"
#include "sim/v1/metrics.pb-c.h"
#include "status/status.h"

typedef struct mc_store mc_store;

/* ---- Configuration ---- */

/* Settings of the metrics table that only apply with TimescaleDB. Both are
 * PostgreSQL interval texts ("7 days", "12 hours"); they are checked by the
 * server (`$1::interval`) when migrations run, on every start, so a bad value
 * is refused even where TimescaleDB is absent. */
typedef struct mc_store_config {
    const char *metrics_compress_after; /* METRICS_COMPRESS_AFTER */
    const char *metrics_retention;      /* METRICS_RETENTION */
} mc_store_config;

#define MC_STORE_DEFAULT_COMPRESS_AFTER "7 days"
#define MC_STORE_DEFAULT_RETENTION "30 days"

/* Table rows for a service's config table, next to MC_CONFIG_VARS_DB. */
#define MC_STORE_CONFIG_VARS(T, m)                                                                 \
    {"METRICS_COMPRESS_AFTER", MC_CFG_STRING, MC_STORE_DEFAULT_COMPRESS_AFTER,                     \
     "Compress metrics chunks older than this interval (TimescaleDB only)",                        \
     offsetof(T, m.metrics_compress_after)},                                                       \
    {"METRICS_RETENTION", MC_CFG_STRING, MC_STORE_DEFAULT_RETENTION,                               \
     "Drop metrics older than this interval (TimescaleDB only)", offsetof(T, m.metrics_retention)}

typedef struct mc_store_options {
    /* libpq connection string or URL (see mc_db_config_conninfo). Required.
     * Borrowed for the call to mc_store_open only. */
    const char *conninfo;
    /* When set, connects to this database instead of the one in conninfo
     * (tests use a fresh database each). */
    const char *dbname;
    /* Connection attempts per (re)connect before MC_ERR_UNAVAILABLE; 0
     * means 8. */
    uint32_t connect_attempts;
    /* First wait between attempts, doubled after each, capped by
     * backoff_max_ms; 0 means 100 and 2000. */
    uint32_t backoff_initial_ms;
    uint32_t backoff_max_ms;
    /* Metrics settings; NULL fields take the defaults above. */
    mc_store_config metrics;
} mc_store_options;

/* Opens a connection (with the bounded retry above). On success *out owns
 * the store; free it with mc_store_free. Does not run migrations. */
mc_status mc_store_open(const mc_store_options *opts, mc_store **out, mc_error *err);

/* The usual start of a service: connects with the DB_* / DATABASE_URL
 * settings of its config table (MC_CONFIG_VARS_DB) and the metrics settings
 * (MC_STORE_CONFIG_VARS; cfg may be NULL for the defaults), with the default
 * retry bounds. Then call mc_store_migrate.
 *
 *     mc_store *st = NULL;
 *     if (mc_store_open_config(&cfg.db, &cfg.store, &st, &err) != MC_OK ||
 *         mc_store_migrate(st, NULL, &err) != MC_OK) { log err.msg; exit }
 */
mc_status mc_store_open_config(const mc_db_config *db, const mc_store_config *cfg, mc_store **out,
                               mc_error *err);

/* Closes the connection and frees the store. NULL-safe. */
void mc_store_free(mc_store *s);

/* The raw libpq connection (a PGconn *), for tests and tools that need to
 * run their own statements. Borrowed; it changes nothing about ownership
 * and may be reset by the store's next operation. */
void *mc_store_conn(mc_store *s);

/* Number of successful reconnects since open (tests and metrics). */
uint64_t mc_store_reconnects(const mc_store *s);

/* ---- Migrations ---- */

/* One migration: version (from the file name 0001_...), name (the file name
 * without .sql) and the SQL text, run inside one transaction. The text may
 * hold several statements but no transaction control (BEGIN/COMMIT) and
 * nothing that cannot run in a transaction (CREATE INDEX CONCURRENTLY,
 * VACUUM). See lib/store/migrations/README.md. */
typedef struct mc_store_migration {
    uint32_t version;
    const char *name;
    const char *sql;
} mc_store_migration;

/* How the metrics table is stored. */
typedef enum mc_store_metrics_storage {
    MC_STORE_METRICS_UNKNOWN = 0,
    MC_STORE_METRICS_PLAIN = 1,      /* plain table with a BRIN index on time */
    MC_STORE_METRICS_HYPERTABLE = 2  /* TimescaleDB hypertable with policies */
} mc_store_metrics_storage;

/* What mc_store_migrate found and did. */
typedef struct mc_store_schema_info {
    uint32_t applied_now;   /* migrations applied by this call */
    uint32_t total;         /* migrations recorded in schema_migrations */
    uint32_t latest_version;
    mc_store_metrics_storage metrics_storage;
} mc_store_schema_info;

/* The migrations embedded in the library at build time (from
 * lib/store/migrations/NNNN_name.sql), in version order. */
const mc_store_migration *mc_store_migrations_builtin(size_t *n);

/* "plain" or "hypertable" ("unknown" otherwise). */
const char *mc_store_metrics_storage_name(mc_store_metrics_storage m);

/* Lowercase hex SHA-256 of a migration's SQL: what schema_migrations.checksum
 * holds (the same as `sha256sum` of the file). */
void mc_store_migration_checksum(const mc_store_migration *m, char out[65]);

/* Applies the built-in migrations, then sets up the metrics storage and
 * logs which one it got. See mc_store_migrate_with. info may be NULL. */
mc_status mc_store_migrate(mc_store *s, mc_store_schema_info *info, mc_error *err);

/* Applies migrations[0..n) in order (versions strictly increasing), under
 * pg_advisory_lock so concurrent starters do not race: the first applies,
 * the others wait and then find nothing to do. Each migration runs in its own
 * transaction together with its schema_migrations row (version, name,
 * checksum, applied_at). An already applied migration whose checksum differs
 * is refused with MC_ERR_CORRUPT naming it; nothing after it is applied. A
 * failing migration is rolled back and reported with the server's message
 * (MC_ERR_IO). Versions in the database that are not in the list (a newer
 * build migrated it) are logged as a warning. */
mc_status mc_store_migrate_with(mc_store *s, const mc_store_migration *migrations, size_t n,
                                mc_store_schema_info *info, mc_error *err);

/* ---- Metrics ingest ---- */

/* A batch of metric rows ready for COPY (PostgreSQL binary COPY format),
 * each group of rows tagged with the stream sequence of the message it came
 * from. Sequences must be appended in non-decreasing order. */
typedef struct mc_store_metrics_batch mc_store_metrics_batch;

/* max_rows bounds the batch (1..10,000,000); appending past it is
 * MC_ERR_LIMIT and leaves the batch as it was. */
mc_status mc_store_metrics_batch_new(size_t max_rows, mc_store_metrics_batch **out, mc_error *err);
/* NULL-safe. */
void mc_store_metrics_batch_free(mc_store_metrics_batch *b);
/* Empties the batch, keeping its memory, for the next round. */
void mc_store_metrics_batch_reset(mc_store_metrics_batch *b);
size_t mc_store_metrics_batch_rows(const mc_store_metrics_batch *b);
/* Highest stream sequence appended; 0 when empty. */
uint64_t mc_store_metrics_batch_last_seq(const mc_store_metrics_batch *b);

/* Appends every sample of snap with time = sim_time_unix_ms and tick_id =
 * stamp.tick, tagged with stream_seq (the JetStream stream sequence of the
 * message, >= 1). All or nothing: on error the batch is unchanged. */
mc_status mc_store_metrics_batch_append_snapshot(mc_store_metrics_batch *b,
                                                 const Sim__V1__MetricSnapshot *snap,
                                                 uint64_t stream_seq, mc_error *err);

/* Appends one sample; the primitive under append_snapshot. */
mc_status mc_store_metrics_batch_append_sample(mc_store_metrics_batch *b, uint64_t stream_seq,
                                               int64_t time_unix_ms, uint64_t tick,
                                               const Sim__V1__MetricSample *sample,
                                               mc_error *err);

/* What a commit did. */
typedef struct mc_store_commit_result {
    uint64_t rows_written;  /* rows COPYed */
    uint64_t rows_skipped;  /* rows of sequences at or below the stored position */
    uint64_t position;      /* the consumer's position after the commit */
} mc_store_commit_result;

/* In one transaction: locks the consumer's position row (creating it at 0),
 * COPYs the rows whose sequence is above the stored position (rows of
 * already committed sequences, e.g. a redelivery, are skipped), and raises
 * the position to last_seq when it is higher. last_seq must be >= the
 * batch's highest sequence (it may be higher: messages without rows count
 * as consumed too). A consumer is bound to one stream; a different stream
 * name for a known consumer is MC_ERR_STATE. On any failure nothing is
 * written. The batch is not modified. res may be NULL. */
mc_status mc_store_metrics_commit(mc_store *s, const mc_store_metrics_batch *batch,
                                  const char *consumer, const char *stream, uint64_t last_seq,
                                  mc_store_commit_result *res, mc_error *err);

/* The last committed stream sequence of consumer; 0 when it has none yet
 * (start from the beginning of the stream). */
mc_status mc_store_position_get(mc_store *s, const char *consumer, uint64_t *seq, mc_error *err);

/* ---- Incidents ---- */

/* Inserts the incident when it is new (any state) and otherwise updates the
 * fields that change over its life (severity, title, description, observed
 * value, threshold, updated_at_tick, resolved, resolved_at_tick), unless the
 * stored row is already newer (updated_at_tick greater): a redelivered older
 * update never overwrites a newer one. run_id comes from the stamp; tick_id
 * and opened_at_tick are the opening tick; detected_at is
 * detected_at_unix_ms. inc->id must be a UUID. */
mc_status mc_store_incident_upsert(mc_store *s, const Ops__V1__Incident *inc, mc_error *err);

/* Reads an incident. *out is allocated; free it with
 * ops__v1__incident__free_unpacked(*out, NULL). MC_ERR_NOT_FOUND when absent.
 * The fields read back: id, severity, title, description, rule_name,
 * target_id, metric_name, observed_value, threshold, opened_at_tick,
 * updated_at_tick, resolved, resolved_at_tick, detected_at_unix_ms,
 * stamp.run_id (node_id, service_id, notes and state are not stored). */
mc_status mc_store_incident_get(mc_store *s, const char *id, Ops__V1__Incident **out,
                                mc_error *err);

/* ---- Actions ---- */

/* Inserts a proposed action (all fields of the message; stamp.run_id as
 * run_id) with its first history row (UNSPECIFIED -> status, actor "agent"),
 * or does nothing when the id exists (redelivery). *inserted (may be NULL)
 * says which. */
mc_status mc_store_action_insert(mc_store *s, const Ops__V1__Action *a, bool *inserted,
                                 mc_error *err);

/* A status change of one action. */
typedef struct mc_store_action_transition {
    const char *action_id;
    /* Compare-and-set: the change happens only when the current status is
     * this one; ACTION_STATUS_UNSPECIFIED (0) changes it whatever it is. */
    Common__V1__ActionStatus expected_status;
    Common__V1__ActionStatus to_status;
    const char *actor;      /* history actor: user, "policy:<mode>", "engine", ... */
    const char *decided_by; /* NULL keeps the stored decided_by */
    uint64_t tick;          /* updated_at_tick and the history tick */
    const char *reason;     /* status_reason and the history reason; may be NULL */
} mc_store_action_transition;

/* Changes the status and appends the history row in one transaction.
 * MC_ERR_NOT_FOUND when the action does not exist; MC_ERR_STATE when the
 * current status is not expected_status, with err naming the current status
 * (e.g. "... is ACTION_STATUS_APPROVED, expected ACTION_STATUS_PENDING").
 * When out is not NULL it receives the updated action (free with
 * ops__v1__action__free_unpacked(*out, NULL)). */
mc_status mc_store_action_status_update(mc_store *s, const mc_store_action_transition *t,
                                        Ops__V1__Action **out, mc_error *err);

/* Reads an action; *out as above; MC_ERR_NOT_FOUND when absent. */
mc_status mc_store_action_get(mc_store *s, const char *id, Ops__V1__Action **out, mc_error *err);

/* A list of actions; items are owned by the list. */
typedef struct mc_store_action_page {
    Ops__V1__Action **items;
    size_t n;
    /* Token for the next page; "" when this was the last page. */
    char next_page_token[96];
} mc_store_action_page;

/* Frees the items and zeroes the list. NULL-safe. */
void mc_store_action_page_clear(mc_store_action_page *l);

#define MC_STORE_PAGE_MAX 1000
#define MC_STORE_PAGE_DEFAULT 50

/* Filters of mc_store_action_list; a zero field does not filter. */
typedef struct mc_store_action_filter {
    uint32_t status_mask;   /* bit (1u << status) for each status wanted */
    const char *target_id;
    Common__V1__ActionType action_type;
    uint64_t tick_min;      /* proposed_at_tick >= tick_min */
    uint64_t tick_max;      /* proposed_at_tick <= tick_max when not 0 */
    const char *run_id;
} mc_store_action_filter;

/* Lists matching actions newest first (proposed_at_tick desc, then id desc),
 * page_size of them (0 means MC_STORE_PAGE_DEFAULT; at most
 * MC_STORE_PAGE_MAX), starting after page_token (NULL or "" for the first
 * page). Keyset paging: rows inserted meanwhile never shift a page, so pages
 * have no gaps or repeats. The token is opaque; a malformed one is
 * MC_ERR_INVALID. *out must be zeroed or cleared; it is replaced. */
mc_status mc_store_action_list(mc_store *s, const mc_store_action_filter *f, uint32_t page_size,
                               const char *page_token, mc_store_action_page *out, mc_error *err);

/* Lists pending actions oldest first (proposed_at_tick, id), at most limit
 * (0: MC_STORE_PAGE_DEFAULT, at most MC_STORE_PAGE_MAX). No token. */
mc_status mc_store_action_list_pending(mc_store *s, uint32_t limit, mc_store_action_page *out,
                                       mc_error *err);

/* History rows; items owned by the list. */
typedef struct mc_store_history_list {
    Ops__V1__ActionHistoryEntry **items;
    size_t n;
} mc_store_history_list;

void mc_store_history_list_clear(mc_store_history_list *l);

/* The history of the given actions (n at most MC_STORE_PAGE_MAX ids), by
 * action id and then in the order it was recorded. */
mc_status mc_store_action_history(mc_store *s, const char *const *action_ids, size_t n,
                                  mc_store_history_list *out, mc_error *err);

/* The name of an action status ("ACTION_STATUS_PENDING"), or "?" */
const char *mc_store_action_status_name(int status);

#endif
