/* PostgreSQL storage through libpq. See store.h for the contract. */
#include "store/store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "log/log.h"

/* The session-level advisory lock held around a migration run. Any constant
 * works as long as every build uses the same one. */
#define MIGRATION_LOCK_SQL "SELECT pg_advisory_lock(7236784531001)"
#define MIGRATION_UNLOCK_SQL "SELECT pg_advisory_unlock(7236784531001)"

/* Microseconds between the Unix epoch and the PostgreSQL epoch
 * (2000-01-01), the zero of binary timestamptz. */
#define PG_EPOCH_UNIX_MS INT64_C(946684800000)

/* Largest piece handed to PQputCopyData at once. */
#define COPY_CHUNK_BYTES ((size_t)1 << 20)
/* Bound of a batch's encoded size: far above any sane batch, far below
 * libpq's and our size_t arithmetic limits. */
#define BATCH_MAX_BYTES ((size_t)1 << 30)

struct mc_store {
    PGconn *conn;
    uint32_t attempts;
    uint32_t backoff_initial_ms;
    uint32_t backoff_max_ms;
    char *compress_after;
    char *retention;
    uint64_t reconnects;
    /* The server reported the session as ending (e.g. 57P01 after
     * pg_terminate_backend or a shutdown) before libpq saw the socket close:
     * treat the connection as lost and reset it before the next use. */
    bool broken;
};

/* ---------------------------------------------------------------- helpers */

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *dup_str(const char *s)
{
    if (s == NULL)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* Copies a libpq message without its trailing newline(s). */
static void copy_trimmed(char *out, size_t n, const char *msg)
{
    snprintf(out, n, "%s", msg ? msg : "");
    size_t len = strlen(out);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
        out[--len] = '\0';
}

static bool conn_lost(const mc_store *s)
{
    return s->conn == NULL || s->broken || PQstatus(s->conn) == CONNECTION_BAD;
}

/* Turns a failed result (or a failed libpq call, res NULL) into a status:
 * connection problems are UNAVAILABLE, data exceptions and constraint
 * violations are INVALID (the caller's value was refused), the rest IO. */
static mc_status pq_error(mc_store *s, const PGresult *res, const char *what, mc_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char msg[384];
    copy_trimmed(msg, sizeof msg, primary ? primary : PQerrorMessage(s->conn));
    if (msg[0] == '\0')
        snprintf(msg, sizeof msg, "%s", res ? PQresStatus(PQresultStatus(res)) : "no result");
    mc_status st = MC_ERR_IO;
    if (conn_lost(s) ||
        (state != NULL && (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0))) {
        st = MC_ERR_UNAVAILABLE;
        s->broken = true;
    }
    else if (state != NULL && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0))
        st = MC_ERR_INVALID;
    if (state != NULL)
        return mc_error_set(err, st, "%s: %s (SQLSTATE %s)", what, msg, state);
    return mc_error_set(err, st, "%s: %s", what, msg);
}

/* Runs one statement with text parameters (NULL entries are SQL NULL).
 * Success is PGRES_COMMAND_OK or PGRES_TUPLES_OK; then *out (when not NULL)
 * owns the result. */
static mc_status q(mc_store *s, const char *what, const char *sql, int n,
                   const char *const *vals, PGresult **out, mc_error *err)
{
    if (out != NULL)
        *out = NULL;
    PGresult *res = PQexecParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0);
    ExecStatusType rs = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        mc_status st = pq_error(s, res, what, err);
        PQclear(res);
        return st;
    }
    if (out != NULL)
        *out = res;
    else
        PQclear(res);
    return MC_OK;
}

static mc_status q0(mc_store *s, const char *what, const char *sql, mc_error *err)
{
    return q(s, what, sql, 0, NULL, NULL, err);
}

/* Leaves any open transaction (after a failure) so the connection is ready
 * for the next operation. Errors are ignored: if this fails the connection
 * is gone and the next operation resets it. */
static void tx_abort(mc_store *s)
{
    if (s->conn == NULL || conn_lost(s))
        return;
    PGTransactionStatusType ts = PQtransactionStatus(s->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        PGresult *res = PQexec(s->conn, "ROLLBACK");
        PQclear(res);
    }
}

static void u64_text(char out[24], uint64_t v)
{
    snprintf(out, 24, "%" PRIu64, v);
}

static void i64_text(char out[24], int64_t v)
{
    snprintf(out, 24, "%" PRId64, v);
}

/* Shortest text that reads back as the same double. */
static void f64_text(char out[40], double v)
{
    if (v != v)
        snprintf(out, 40, "NaN");
    else if (v > 1.7976931348623157e308)
        snprintf(out, 40, "Infinity");
    else if (v < -1.7976931348623157e308)
        snprintf(out, 40, "-Infinity");
    else
        snprintf(out, 40, "%.17g", v);
}

static uint64_t get_u64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoull(PQgetvalue(res, row, col), NULL, 10);
}

static int64_t get_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static double get_f64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtod(PQgetvalue(res, row, col), NULL);
}

static bool get_bool(const PGresult *res, int row, int col)
{
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

/* Server notices (e.g. the migration's WARNING when TimescaleDB is listed
 * but unusable) go to the log instead of libpq's default stderr print. */
static void notice_receiver(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    char msg[400];
    copy_trimmed(msg, sizeof msg, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
    if (sev != NULL && strcmp(sev, "WARNING") == 0)
        MC_LOG_WARN("postgresql warning", MC_LF_STR("msg", msg));
    else
        MC_LOG_DEBUG("postgresql notice", MC_LF_STR("severity", sev ? sev : ""),
                     MC_LF_STR("msg", msg));
}

/* ------------------------------------------------------ connection, retry */

/* Connects (first time) or resets the connection, up to s->attempts tries
 * with doubling waits in between. */
static mc_status store_connect(mc_store *s, const char *conninfo, const char *dbname,
                               mc_error *err)
{
    uint32_t wait_ms = s->backoff_initial_ms;
    char last[384] = "";
    bool had_conn = s->conn != NULL;
    for (uint32_t attempt = 1; attempt <= s->attempts; attempt++) {
        if (s->conn == NULL) {
            /* Earlier keywords are defaults the connection string may
             * override; later ones override it. */
            const char *keys[8] = {"connect_timeout", "fallback_application_name", "dbname",
                                   "client_encoding", NULL, NULL};
            const char *vals[8] = {"10", "microcloud", conninfo, "UTF8", NULL, NULL};
            if (dbname != NULL && dbname[0] != '\0') {
                keys[4] = "dbname";
                vals[4] = dbname;
            }
            s->conn = PQconnectdbParams(keys, vals, 1);
            if (s->conn == NULL)
                return mc_error_set(err, MC_ERR_NOMEM, "PostgreSQL connect: out of memory");
        } else {
            PQreset(s->conn);
        }
        if (PQstatus(s->conn) == CONNECTION_OK) {
            s->broken = false;
            PQsetNoticeReceiver(s->conn, notice_receiver, NULL);
            if (had_conn) {
                s->reconnects++;
                MC_LOG_INFO("reconnected to PostgreSQL", MC_LF_UINT("attempt", attempt));
            }
            return MC_OK;
        }
        copy_trimmed(last, sizeof last, PQerrorMessage(s->conn));
        if (attempt < s->attempts) {
            MC_LOG_WARN("PostgreSQL connection failed; retrying", MC_LF_UINT("attempt", attempt),
                        MC_LF_UINT("wait_ms", wait_ms), MC_LF_STR("error", last));
            sleep_ms(wait_ms);
            wait_ms = wait_ms * 2 > s->backoff_max_ms ? s->backoff_max_ms : wait_ms * 2;
        }
    }
    return mc_error_set(err, MC_ERR_UNAVAILABLE, "PostgreSQL unreachable after %u attempts: %s",
                        (unsigned)s->attempts, last);
}

/* Before each operation: a broken connection is reset, a transaction left
 * open by an earlier failure is rolled back. */
static mc_status store_ensure(mc_store *s, mc_error *err)
{
    if (conn_lost(s))
        return store_connect(s, NULL, NULL, err);
    tx_abort(s);
    return MC_OK;
}

typedef struct op_state {
    bool commit_sent; /* COMMIT went to the server: the outcome may be either */
} op_state;

typedef mc_status (*op_fn)(mc_store *s, void *ctx, op_state *os, mc_error *err);

/* Runs an operation; see "Connection loss" in store.h. */
static mc_status store_run(mc_store *s, const char *what, bool idempotent, op_fn fn, void *ctx,
                           mc_error *err)
{
    mc_error e = {0};
    mc_status st = MC_OK;
    for (int round = 0; round < 2; round++) {
        mc_error_clear(&e);
        st = store_ensure(s, &e);
        if (st != MC_OK) {
            mc_error_wrap(&e, "%s", what);
            break;
        }
        op_state os = {0};
        st = fn(s, ctx, &os, &e);
        if (st == MC_OK)
            break;
        if (!conn_lost(s)) {
            tx_abort(s);
            break;
        }
        if (!idempotent && os.commit_sent) {
            char cause[400];
            copy_trimmed(cause, sizeof cause, e.msg);
            mc_error_set(&e, MC_ERR_UNAVAILABLE,
                         "%s: connection lost while committing; the outcome is unknown (%s)",
                         what, cause);
            st = MC_ERR_UNAVAILABLE;
            break;
        }
        st = MC_ERR_UNAVAILABLE;
        e.status = st;
        if (round == 0)
            MC_LOG_WARN("PostgreSQL connection lost; reconnecting and retrying",
                        MC_LF_STR("op", what), MC_LF_STR("error", e.msg));
    }
    if (err != NULL)
        *err = e;
    return st;
}

mc_status mc_store_open(const mc_store_options *opts, mc_store **out, mc_error *err)
{
    if (out == NULL || opts == NULL || opts->conninfo == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "mc_store_open: options and conninfo are required");
    *out = NULL;
    mc_store *s = calloc(1, sizeof *s);
    if (s == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "mc_store_open: out of memory");
    s->attempts = opts->connect_attempts ? opts->connect_attempts : 8;
    s->backoff_initial_ms = opts->backoff_initial_ms ? opts->backoff_initial_ms : 100;
    s->backoff_max_ms = opts->backoff_max_ms ? opts->backoff_max_ms : 2000;
    if (s->backoff_max_ms < s->backoff_initial_ms)
        s->backoff_max_ms = s->backoff_initial_ms;
    const char *ca = opts->metrics.metrics_compress_after;
    const char *rt = opts->metrics.metrics_retention;
    s->compress_after = dup_str(ca && ca[0] ? ca : MC_STORE_DEFAULT_COMPRESS_AFTER);
    s->retention = dup_str(rt && rt[0] ? rt : MC_STORE_DEFAULT_RETENTION);
    if (s->compress_after == NULL || s->retention == NULL) {
        mc_store_free(s);
        return mc_error_set(err, MC_ERR_NOMEM, "mc_store_open: out of memory");
    }
    mc_status st = store_connect(s, opts->conninfo, opts->dbname, err);
    if (st != MC_OK) {
        mc_store_free(s);
        return st;
    }
    *out = s;
    return MC_OK;
}

mc_status mc_store_open_config(const mc_db_config *db, const mc_store_config *cfg, mc_store **out,
                               mc_error *err)
{
    if (db == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "mc_store_open_config: db and out are required");
    char conninfo[2048];
    if (mc_db_config_conninfo(db, conninfo, sizeof conninfo) != MC_OK)
        return mc_error_set(err, MC_ERR_LIMIT, "DATABASE_URL / DB_* settings are too long");
    mc_store_options o = {.conninfo = conninfo};
    if (cfg != NULL)
        o.metrics = *cfg;
    mc_status st = mc_store_open(&o, out, err);
    /* The connection string may hold the password: do not leave it on the
     * stack. */
    sodium_memzero(conninfo, sizeof conninfo);
    return st;
}

void mc_store_free(mc_store *s)
{
    if (s == NULL)
        return;
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->compress_after);
    free(s->retention);
    free(s);
}

void *mc_store_conn(mc_store *s)
{
    return s ? s->conn : NULL;
}

uint64_t mc_store_reconnects(const mc_store *s)
{
    return s ? s->reconnects : 0;
}

/* -------------------------------------------------------------- migrations */

const char *mc_store_metrics_storage_name(mc_store_metrics_storage m)
{
    switch (m) {
    case MC_STORE_METRICS_PLAIN:
        return "plain";
    case MC_STORE_METRICS_HYPERTABLE:
        return "hypertable";
    default:
        return "unknown";
    }
}

void mc_store_migration_checksum(const mc_store_migration *m, char out[65])
{
    unsigned char h[crypto_hash_sha256_BYTES];
    const char *sql = m && m->sql ? m->sql : "";
    crypto_hash_sha256(h, (const unsigned char *)sql, strlen(sql));
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof h; i++) {
        out[2 * i] = hex[h[i] >> 4];
        out[2 * i + 1] = hex[h[i] & 15];
    }
    out[64] = '\0';
}

typedef struct migrate_ctx {
    const mc_store_migration *migs;
    size_t n;
    mc_store_schema_info info;
} migrate_ctx;

/* Returns the index of version v among the applied rows, or -1. */
static int applied_index(const PGresult *res, uint32_t v)
{
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        if (get_u64(res, i, 0) == v)
            return i;
    }
    return -1;
}

static mc_status apply_one(mc_store *s, const mc_store_migration *m, const char *sum,
                           mc_error *err)
{
    char what[160];
    snprintf(what, sizeof what, "migration %s", m->name);
    mc_status st = q0(s, what, "BEGIN", err);
    if (st != MC_OK)
        return st;
    /* The migration's own text holds several statements and no values, so
     * it goes through the simple query protocol. */
    PGresult *res = PQexec(s->conn, m->sql);
    ExecStatusType rs = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        st = pq_error(s, res, what, err);
        PQclear(res);
        return st;
    }
    PQclear(res);
    char ver[24];
    u64_text(ver, m->version);
    const char *vals[3] = {ver, m->name, sum};
    st = q(s, what,
           "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::int, $2, $3)", 3,
           vals, NULL, err);
    if (st != MC_OK)
        return st;
    return q0(s, what, "COMMIT", err);
}

/* Reports whether metrics is a hypertable, and sets its policies if so. */
static mc_status metrics_storage_setup(mc_store *s, mc_store_metrics_storage *out, mc_error *err)
{
    PGresult *res = NULL;
    const char *vals[2] = {s->compress_after, s->retention};
    /* Checked everywhere, so a typo is caught before it matters. */
    mc_status st = q(s, "METRICS_COMPRESS_AFTER/METRICS_RETENTION",
                     "SELECT $1::interval, $2::interval", 2, vals, NULL, err);
    if (st != MC_OK) {
        char cause[400];
        copy_trimmed(cause, sizeof cause, err ? err->msg : "");
        return mc_error_set(err, MC_ERR_INVALID,
                            "METRICS_COMPRESS_AFTER=%s / METRICS_RETENTION=%s: expected "
                            "PostgreSQL intervals such as '7 days' (%s)",
                            s->compress_after, s->retention, cause);
    }
    st = q(s, "timescaledb check",
           "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')", 0, NULL,
           &res, err);
    if (st != MC_OK)
        return st;
    bool ts = get_bool(res, 0, 0);
    PQclear(res);
    *out = MC_STORE_METRICS_PLAIN;
    if (!ts)
        return MC_OK;
    /* Only reached with the extension installed: these names exist then. */
    st = q(s, "hypertable check",
           "SELECT count(*) FROM timescaledb_information.hypertables "
           "WHERE hypertable_name = 'metrics' AND hypertable_schema = current_schema()",
           0, NULL, &res, err);
    if (st != MC_OK)
        return st;
    bool hyper = get_u64(res, 0, 0) > 0;
    PQclear(res);
    if (!hyper)
        return MC_OK;
    *out = MC_STORE_METRICS_HYPERTABLE;
    /* Policies are configuration: replaced on every start so a changed
     * interval takes effect. */
    if ((st = q0(s, "metrics policies", "BEGIN", err)) != MC_OK ||
        (st = q0(s, "metrics policies",
                 "SELECT remove_compression_policy('metrics', if_exists => true)", err)) != MC_OK ||
        (st = q(s, "metrics compression policy",
                "SELECT add_compression_policy('metrics', $1::interval)", 1, vals, NULL, err)) !=
            MC_OK ||
        (st = q0(s, "metrics policies",
                 "SELECT remove_retention_policy('metrics', if_exists => true)", err)) != MC_OK ||
        (st = q(s, "metrics retention policy",
                "SELECT add_retention_policy('metrics', $1::interval)", 1, vals + 1, NULL, err)) !=
            MC_OK ||
        (st = q0(s, "metrics policies", "COMMIT", err)) != MC_OK)
        return st;
    return MC_OK;
}

static mc_status migrate_locked(mc_store *s, migrate_ctx *c, mc_error *err)
{
    mc_status st = q0(s, "schema_migrations",
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version int PRIMARY KEY,"
                      " name text NOT NULL,"
                      " checksum text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      err);
    if (st != MC_OK)
        return st;
    PGresult *res = NULL;
    st = q(s, "schema_migrations", "SELECT version, name, checksum FROM schema_migrations "
           "ORDER BY version", 0, NULL, &res, err);
    if (st != MC_OK)
        return st;
    /* First verify everything already applied, so a changed migration stops
     * the run before anything new is applied on top of it. */
    for (size_t i = 0; i < c->n; i++) {
        const mc_store_migration *m = &c->migs[i];
        int row = applied_index(res, m->version);
        if (row < 0)
            continue;
        char sum[65];
        mc_store_migration_checksum(m, sum);
        if (strcmp(sum, PQgetvalue(res, row, 2)) != 0) {
            st = mc_error_set(err, MC_ERR_CORRUPT,
                              "migration %s (version %u) was changed after it was applied: "
                              "checksum %.12s... in the database (applied as %s), %.12s... in "
                              "this build; restore the file and add a new migration instead",
                              m->name, (unsigned)m->version, PQgetvalue(res, row, 2),
                              PQgetvalue(res, row, 1), sum);
            PQclear(res);
            return st;
        }
    }
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        uint64_t v = get_u64(res, r, 0);
        bool known = false;
        for (size_t i = 0; i < c->n && !known; i++)
            known = c->migs[i].version == v;
        if (!known)
            MC_LOG_WARN("database has a migration this build does not know (a newer build ran)",
                        MC_LF_UINT("version", v), MC_LF_STR("name", PQgetvalue(res, r, 1)));
    }
    for (size_t i = 0; i < c->n; i++) {
        const mc_store_migration *m = &c->migs[i];
        if (applied_index(res, m->version) >= 0)
            continue;
        char sum[65];
        mc_store_migration_checksum(m, sum);
        st = apply_one(s, m, sum, err);
        if (st != MC_OK) {
            PQclear(res);
            return st;
        }
        c->info.applied_now++;
        MC_LOG_INFO("migration applied", MC_LF_STR("name", m->name),
                    MC_LF_UINT("version", m->version));
    }
    PQclear(res);
    st = q(s, "schema_migrations", "SELECT count(*), coalesce(max(version), 0) "
           "FROM schema_migrations", 0, NULL, &res, err);
    if (st != MC_OK)
        return st;
    c->info.total = (uint32_t)get_u64(res, 0, 0);
    c->info.latest_version = (uint32_t)get_u64(res, 0, 1);
    PQclear(res);
    return metrics_storage_setup(s, &c->info.metrics_storage, err);
}

static mc_status migrate_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    migrate_ctx *c = ctx;
    c->info = (mc_store_schema_info){0};
    /* Held for the whole run: a second starter waits here and then finds
     * every migration applied. Session-level, so it spans the per-migration
     * transactions, and the server drops it if this connection dies. */
    mc_status st = q0(s, "migration lock", MIGRATION_LOCK_SQL, err);
    if (st != MC_OK)
        return st;
    st = migrate_locked(s, c, err);
    tx_abort(s);
    if (!conn_lost(s)) {
        mc_error e2 = {0};
        mc_status ust = q0(s, "migration unlock", MIGRATION_UNLOCK_SQL, &e2);
        if (st == MC_OK && ust != MC_OK) {
            if (err != NULL)
                *err = e2;
            st = ust;
        }
    }
    return st;
}

mc_status mc_store_migrate_with(mc_store *s, const mc_store_migration *migrations, size_t n,
                                mc_store_schema_info *info, mc_error *err)
{
    if (s == NULL || (migrations == NULL && n > 0))
        return mc_error_set(err, MC_ERR_INVALID, "mc_store_migrate: store and migrations required");
    for (size_t i = 0; i < n; i++) {
        const mc_store_migration *m = &migrations[i];
        if (m->version == 0 || m->name == NULL || m->sql == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "migration #%zu: version, name and sql are "
                                "required", i);
        if (i > 0 && m->version <= migrations[i - 1].version)
            return mc_error_set(err, MC_ERR_INVALID, "migration %s: versions must increase "
                                "(%u after %u)", m->name, (unsigned)m->version,
                                (unsigned)migrations[i - 1].version);
        if (m->version > INT32_MAX)
            return mc_error_set(err, MC_ERR_RANGE, "migration %s: version too large", m->name);
    }
    migrate_ctx c = {.migs = migrations, .n = n};
    mc_status st = store_run(s, "migrations", true, migrate_op, &c, err);
    if (st != MC_OK)
        return st;
    MC_LOG_INFO("database schema ready", MC_LF_UINT("applied_now", c.info.applied_now),
                MC_LF_UINT("version", c.info.latest_version),
                MC_LF_STR("metrics_storage", mc_store_metrics_storage_name(c.info.metrics_storage)));
    if (info != NULL)
        *info = c.info;
    return MC_OK;
}

mc_status mc_store_migrate(mc_store *s, mc_store_schema_info *info, mc_error *err)
{
    size_t n = 0;
    const mc_store_migration *m = mc_store_migrations_builtin(&n);
    return mc_store_migrate_with(s, m, n, info, err);
}

/* ------------------------------------------------------------- metrics batch */

typedef struct batch_seg {
    uint64_t seq;
    size_t off; /* byte offset of its first row in buf */
    size_t rows;
} batch_seg;

struct mc_store_metrics_batch {
    unsigned char *buf;
    size_t len, cap;
    batch_seg *segs;
    size_t nsegs, segcap;
    size_t rows, max_rows;
};

mc_status mc_store_metrics_batch_new(size_t max_rows, mc_store_metrics_batch **out, mc_error *err)
{
    if (out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "metrics batch: out is required");
    *out = NULL;
    if (max_rows < 1 || max_rows > 10000000)
        return mc_error_set(err, MC_ERR_RANGE, "metrics batch: max_rows %zu not in 1..10000000",
                            max_rows);
    mc_store_metrics_batch *b = calloc(1, sizeof *b);
    if (b == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "metrics batch: out of memory");
    b->max_rows = max_rows;
    *out = b;
    return MC_OK;
}

void mc_store_metrics_batch_free(mc_store_metrics_batch *b)
{
    if (b == NULL)
        return;
    free(b->buf);
    free(b->segs);
    free(b);
}

void mc_store_metrics_batch_reset(mc_store_metrics_batch *b)
{
    if (b == NULL)
        return;
    b->len = 0;
    b->nsegs = 0;
    b->rows = 0;
}

size_t mc_store_metrics_batch_rows(const mc_store_metrics_batch *b)
{
    return b ? b->rows : 0;
}

uint64_t mc_store_metrics_batch_last_seq(const mc_store_metrics_batch *b)
{
    return b && b->nsegs ? b->segs[b->nsegs - 1].seq : 0;
}

static bool buf_reserve(mc_store_metrics_batch *b, size_t extra)
{
    if (extra > BATCH_MAX_BYTES || b->len + extra > BATCH_MAX_BYTES)
        return false;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < need)
        cap *= 2;
    unsigned char *p = realloc(b->buf, cap);
    if (p == NULL)
        return false;
    b->buf = p;
    b->cap = cap;
    return true;
}

static void put_be16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* Bytes of s as a JSON string body (without quotes). */
static size_t json_escaped_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            n += 2;
        else if (*p < 0x20)
            n += 6;
        else
            n += 1;
    }
    return n;
}

static unsigned char *json_escape(unsigned char *o, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            *o++ = '\\';
            *o++ = *p;
        } else if (*p < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = (unsigned char)hex[*p >> 4];
            o[5] = (unsigned char)hex[*p & 15];
            o += 6;
        } else {
            *o++ = *p;
        }
    }
    return o;
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* Size of the labels object as JSON text. */
static size_t labels_json_len(const Sim__V1__MetricSample *m)
{
    size_t n = 2; /* {} */
    for (size_t i = 0; i < m->n_labels; i++) {
        const Sim__V1__MetricSample__LabelsEntry *e = m->labels[i];
        if (e == NULL)
            continue;
        n += (n > 2 ? 1 : 0) + 2 + json_escaped_len(nz(e->key)) + 1 + 2 +
             json_escaped_len(nz(e->value));
    }
    return n;
}

static unsigned char *labels_json(unsigned char *o, const Sim__V1__MetricSample *m)
{
    *o++ = '{';
    bool first = true;
    for (size_t i = 0; i < m->n_labels; i++) {
        const Sim__V1__MetricSample__LabelsEntry *e = m->labels[i];
        if (e == NULL)
            continue;
        if (!first)
            *o++ = ',';
        first = false;
        *o++ = '"';
        o = json_escape(o, nz(e->key));
        *o++ = '"';
        *o++ = ':';
        *o++ = '"';
        o = json_escape(o, nz(e->value));
        *o++ = '"';
    }
    *o++ = '}';
    return o;
}

/* Field count, then 7 fields each with a 4-byte length. */
#define ROW_FIXED_BYTES (2 + 7 * 4 + 8 + 8 + 8 + 1)

mc_status mc_store_metrics_batch_append_sample(mc_store_metrics_batch *b, uint64_t stream_seq,
                                               int64_t time_unix_ms, uint64_t tick,
                                               const Sim__V1__MetricSample *sample,
                                               mc_error *err)
{
    if (b == NULL || sample == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "metrics batch: batch and sample are required");
    if (stream_seq == 0 || stream_seq > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "metrics batch: stream sequence %" PRIu64
                            " not in 1..2^63-1", stream_seq);
    if (b->nsegs > 0 && stream_seq < b->segs[b->nsegs - 1].seq)
        return mc_error_set(err, MC_ERR_INVALID, "metrics batch: stream sequence %" PRIu64
                            " after %" PRIu64 " (sequences must not decrease)", stream_seq,
                            b->segs[b->nsegs - 1].seq);
    /* +-2^50 ms is +-35,000 years: far beyond any scenario, and keeps the
     * microsecond arithmetic below free of overflow. */
    if (time_unix_ms > (INT64_C(1) << 50) || time_unix_ms < -(INT64_C(1) << 50))
        return mc_error_set(err, MC_ERR_RANGE, "metrics batch: time %" PRId64 " ms out of range",
                            time_unix_ms);
    if (tick > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "metrics batch: tick %" PRIu64 " out of range",
                            tick);
    if (b->rows >= b->max_rows)
        return mc_error_set(err, MC_ERR_LIMIT, "metrics batch: full (%zu rows)", b->max_rows);
    const char *node = nz(sample->node_id), *svc = nz(sample->service_id),
               *name = nz(sample->metric_name);
    size_t ln = strlen(node), ls = strlen(svc), lm = strlen(name);
    size_t lj = labels_json_len(sample);
    if (ln > (1u << 20) || ls > (1u << 20) || lm > (1u << 20) || lj > (1u << 24))
        return mc_error_set(err, MC_ERR_LIMIT, "metrics batch: a field of the sample is too long");
    size_t need = ROW_FIXED_BYTES + ln + ls + lm + lj;
    bool new_seg = b->nsegs == 0 || b->segs[b->nsegs - 1].seq != stream_seq;
    if (new_seg && b->nsegs == b->segcap) {
        size_t cap = b->segcap ? b->segcap * 2 : 64;
        batch_seg *p = realloc(b->segs, cap * sizeof *p);
        if (p == NULL)
            return mc_error_set(err, MC_ERR_NOMEM, "metrics batch: out of memory");
        b->segs = p;
        b->segcap = cap;
    }
    if (!buf_reserve(b, need))
        return mc_error_set(err, MC_ERR_LIMIT, "metrics batch: buffer limit reached (%zu bytes)",
                            b->len);
    unsigned char *o = b->buf + b->len;
    put_be16(o, 7);
    o += 2;
    put_be32(o, 8);
    put_be64(o + 4, (uint64_t)((time_unix_ms - PG_EPOCH_UNIX_MS) * 1000));
    o += 12;
    put_be32(o, 8);
    put_be64(o + 4, tick);
    o += 12;
    const char *txt[3] = {node, svc, name};
    size_t tl[3] = {ln, ls, lm};
    for (int i = 0; i < 3; i++) {
        put_be32(o, (uint32_t)tl[i]);
        memcpy(o + 4, txt[i], tl[i]);
        o += 4 + tl[i];
    }
    uint64_t bits;
    double v = sample->metric_value;
    memcpy(&bits, &v, sizeof bits);
    put_be32(o, 8);
    put_be64(o + 4, bits);
    o += 12;
    /* jsonb binary input: a version byte (1) followed by the JSON text. */
    put_be32(o, (uint32_t)(lj + 1));
    o[4] = 1;
    o = labels_json(o + 5, sample);
    size_t written = (size_t)(o - (b->buf + b->len));
    if (written != need)
        return mc_error_set(err, MC_ERR_INTERNAL, "metrics batch: row size %zu != %zu", written,
                            need);
    if (new_seg) {
        b->segs[b->nsegs] = (batch_seg){.seq = stream_seq, .off = b->len, .rows = 0};
        b->nsegs++;
    }
    b->segs[b->nsegs - 1].rows++;
    b->len += need;
    b->rows++;
    return MC_OK;
}

mc_status mc_store_metrics_batch_append_snapshot(mc_store_metrics_batch *b,
                                                 const Sim__V1__MetricSnapshot *snap,
                                                 uint64_t stream_seq, mc_error *err)
{
    if (b == NULL || snap == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "metrics batch: batch and snapshot are required");
    if (b->rows + snap->n_samples > b->max_rows)
        return mc_error_set(err, MC_ERR_LIMIT, "metrics batch: %zu more rows do not fit "
                            "(%zu of %zu used)", snap->n_samples, b->rows, b->max_rows);
    size_t len = b->len, rows = b->rows, nsegs = b->nsegs;
    size_t last_rows = nsegs ? b->segs[nsegs - 1].rows : 0;
    uint64_t tick = snap->stamp ? snap->stamp->tick : 0;
    for (size_t i = 0; i < snap->n_samples; i++) {
        if (snap->samples[i] == NULL)
            continue;
        mc_status st = mc_store_metrics_batch_append_sample(b, stream_seq, snap->sim_time_unix_ms,
                                                            tick, snap->samples[i], err);
        if (st != MC_OK) {
            /* All or nothing: put the batch back as it was. */
            b->len = len;
            b->rows = rows;
            b->nsegs = nsegs;
            if (nsegs)
                b->segs[nsegs - 1].rows = last_rows;
            return mc_error_wrap(err, "sample %zu of snapshot seq %" PRIu64, i, stream_seq);
        }
    }
    return MC_OK;
}

/* ------------------------------------------------------------ metrics commit */

typedef struct commit_ctx {
    const mc_store_metrics_batch *b;
    const char *consumer, *stream;
    uint64_t last_seq;
    mc_store_commit_result res;
} commit_ctx;

static mc_status copy_in(mc_store *s, const mc_store_metrics_batch *b, size_t first_seg,
                         uint64_t *rows_out, mc_error *err)
{
    static const char what[] = "metrics COPY";
    PGresult *res = PQexec(s->conn, "COPY metrics (time, tick_id, node_id, service_id, "
                                    "metric_name, metric_value, labels) FROM STDIN (FORMAT binary)");
    if (res == NULL || PQresultStatus(res) != PGRES_COPY_IN) {
        mc_status st = pq_error(s, res, what, err);
        PQclear(res);
        return st;
    }
    PQclear(res);
    /* Binary COPY header: signature, flags (0), header extension length (0). */
    static const char header[19] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', '\377', '\r', '\n', '\0',
                                    0, 0, 0, 0, 0, 0, 0, 0};
    static const char trailer[2] = {'\377', '\377'};
    bool ok = PQputCopyData(s->conn, header, (int)sizeof header) == 1;
    size_t off = b->segs[first_seg].off;
    while (ok && off < b->len) {
        size_t n = b->len - off < COPY_CHUNK_BYTES ? b->len - off : COPY_CHUNK_BYTES;
        ok = PQputCopyData(s->conn, (const char *)b->buf + off, (int)n) == 1;
        off += n;
    }
    if (ok)
        ok = PQputCopyData(s->conn, trailer, (int)sizeof trailer) == 1;
    /* On a send failure, end the COPY with an error so the server discards
     * it; the result below then carries the reason. */
    int end = PQputCopyEnd(s->conn, ok ? NULL : "client failed to send COPY data");
    mc_status st = MC_OK;
    bool first = true;
    while ((res = PQgetResult(s->conn)) != NULL) {
        if (first) {
            if (PQresultStatus(res) != PGRES_COMMAND_OK)
                st = pq_error(s, res, what, err);
            else
                *rows_out = strtoull(PQcmdTuples(res), NULL, 10);
            first = false;
        }
        PQclear(res);
        if (conn_lost(s))
            break;
    }
    if (st == MC_OK && (first || end != 1 || !ok))
        st = pq_error(s, NULL, what, err);
    return st;
}

static mc_status commit_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    commit_ctx *c = ctx;
    c->res = (mc_store_commit_result){0};
    static const char what[] = "metrics commit";
    char seq[24];
    u64_text(seq, c->last_seq);
    const char *vals[2] = {c->consumer, c->stream};
    PGresult *res = NULL;
    mc_status st = q0(s, what, "BEGIN", err);
    if (st != MC_OK)
        return st;
    st = q(s, what, "INSERT INTO consumer_positions (consumer, stream, last_seq) "
           "VALUES ($1, $2, 0) ON CONFLICT (consumer) DO NOTHING", 2, vals, NULL, err);
    if (st != MC_OK)
        return st;
    /* The row lock serializes committers of the same consumer, so two
     * instances cannot both write the rows of one sequence. */
    st = q(s, what, "SELECT stream, last_seq FROM consumer_positions WHERE consumer = $1 "
           "FOR UPDATE", 1, vals, &res, err);
    if (st != MC_OK)
        return st;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mc_error_set(err, MC_ERR_INTERNAL, "%s: position row of %s missing", what,
                            c->consumer);
    }
    if (strcmp(PQgetvalue(res, 0, 0), c->stream) != 0) {
        st = mc_error_set(err, MC_ERR_STATE, "%s: consumer %s reads stream %s, not %s", what,
                          c->consumer, PQgetvalue(res, 0, 0), c->stream);
        PQclear(res);
        return st;
    }
    uint64_t stored = get_u64(res, 0, 1);
    PQclear(res);
    const mc_store_metrics_batch *b = c->b;
    size_t first = 0;
    while (first < b->nsegs && b->segs[first].seq <= stored)
        c->res.rows_skipped += b->segs[first++].rows;
    if (first < b->nsegs) {
        st = copy_in(s, b, first, &c->res.rows_written, err);
        if (st != MC_OK)
            return st;
    }
    c->res.position = stored;
    if (c->last_seq > stored) {
        const char *uv[2] = {c->consumer, seq};
        st = q(s, what, "UPDATE consumer_positions SET last_seq = $2::bigint, updated_at = now() "
               "WHERE consumer = $1", 2, uv, NULL, err);
        if (st != MC_OK)
            return st;
        c->res.position = c->last_seq;
    }
    os->commit_sent = true;
    return q0(s, what, "COMMIT", err);
}

mc_status mc_store_metrics_commit(mc_store *s, const mc_store_metrics_batch *batch,
                                  const char *consumer, const char *stream, uint64_t last_seq,
                                  mc_store_commit_result *res, mc_error *err)
{
    if (s == NULL || batch == NULL || consumer == NULL || consumer[0] == '\0' || stream == NULL ||
        stream[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID,
                            "metrics commit: store, batch, consumer and stream are required");
    if (last_seq > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "metrics commit: last_seq %" PRIu64 " too large",
                            last_seq);
    if (last_seq < mc_store_metrics_batch_last_seq(batch))
        return mc_error_set(err, MC_ERR_INVALID, "metrics commit: last_seq %" PRIu64
                            " is below the batch's highest sequence %" PRIu64, last_seq,
                            mc_store_metrics_batch_last_seq(batch));
    commit_ctx c = {.b = batch, .consumer = consumer, .stream = stream, .last_seq = last_seq};
    /* Idempotent: a retry after an unknown COMMIT outcome finds the position
     * raised and skips what was written. */
    mc_status st = store_run(s, "metrics commit", true, commit_op, &c, err);
    if (st == MC_OK && res != NULL)
        *res = c.res;
    return st;
}

typedef struct position_ctx {
    const char *consumer;
    uint64_t seq;
} position_ctx;

static mc_status position_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    position_ctx *c = ctx;
    PGresult *res = NULL;
    const char *vals[1] = {c->consumer};
    mc_status st = q(s, "consumer position",
                     "SELECT last_seq FROM consumer_positions WHERE consumer = $1", 1, vals, &res,
                     err);
    if (st != MC_OK)
        return st;
    c->seq = PQntuples(res) == 1 ? get_u64(res, 0, 0) : 0;
    PQclear(res);
    return MC_OK;
}

mc_status mc_store_position_get(mc_store *s, const char *consumer, uint64_t *seq, mc_error *err)
{
    if (s == NULL || consumer == NULL || seq == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "position get: store, consumer and seq required");
    position_ctx c = {.consumer = consumer};
    mc_status st = store_run(s, "consumer position", true, position_op, &c, err);
    if (st == MC_OK)
        *seq = c.seq;
    return st;
}

/* --------------------------------------------------------------- incidents */

typedef struct incident_ctx {
    const Ops__V1__Incident *in;
    const char *id;
    Ops__V1__Incident *out;
} incident_ctx;

static mc_status incident_upsert_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    const Ops__V1__Incident *in = ((incident_ctx *)ctx)->in;
    char detected[24], opened[24], updated[24], resolved_at[24], sev[24], obs[40], thr[40];
    uint64_t open_tick = in->opened_at_tick ? in->opened_at_tick
                                            : (in->stamp ? in->stamp->tick : 0);
    uint64_t upd_tick = in->updated_at_tick ? in->updated_at_tick : open_tick;
    i64_text(detected, in->detected_at_unix_ms);
    u64_text(opened, open_tick);
    u64_text(updated, upd_tick);
    u64_text(resolved_at, in->resolved_at_tick);
    i64_text(sev, in->severity);
    f64_text(obs, in->observed_value);
    f64_text(thr, in->threshold);
    const char *vals[14] = {
        in->id,          detected,
        opened,          sev,
        nz(in->title),   nz(in->description),
        nz(in->rule_name), in->resolved ? "true" : "false",
        nz(in->target_id), nz(in->metric_name),
        obs,             thr,
        updated,         in->resolved_at_tick ? resolved_at : NULL,
    };
    const char *run_id = in->stamp ? nz(in->stamp->run_id) : "";
    const char *all[15];
    memcpy(all, vals, sizeof vals);
    all[14] = run_id;
    /* A row is only overwritten by an update of a later tick, or of the same
     * tick while it is still open: a late redelivery never undoes a
     * resolution or a newer value. */
    return q(s, "incident upsert",
             "INSERT INTO incidents (id, detected_at, tick_id, severity, title, description,"
             " rule_name, resolved, target_id, metric_name, observed_value, threshold,"
             " opened_at_tick, updated_at_tick, resolved_at_tick, run_id)"
             " VALUES ($1::uuid, 'epoch'::timestamptz + $2::bigint * interval '1 millisecond',"
             " $3::bigint, $4::int, $5, $6, $7, $8::boolean, $9, $10, $11::float8, $12::float8,"
             " $3::bigint, $13::bigint, $14::bigint, $15)"
             " ON CONFLICT (id) DO UPDATE SET severity = excluded.severity,"
             " title = excluded.title, description = excluded.description,"
             " observed_value = excluded.observed_value, threshold = excluded.threshold,"
             " updated_at_tick = excluded.updated_at_tick, resolved = excluded.resolved,"
             " resolved_at_tick = excluded.resolved_at_tick"
             " WHERE incidents.updated_at_tick < excluded.updated_at_tick"
             " OR (incidents.updated_at_tick = excluded.updated_at_tick AND NOT incidents.resolved)",
             15, all, NULL, err);
}

mc_status mc_store_incident_upsert(mc_store *s, const Ops__V1__Incident *inc, mc_error *err)
{
    if (s == NULL || inc == NULL || inc->id == NULL || inc->id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "incident upsert: store and incident id required");
    if (inc->severity < 1 || inc->severity > 4)
        return mc_error_set(err, MC_ERR_INVALID, "incident %s: severity %d not in 1..4", inc->id,
                            (int)inc->severity);
    incident_ctx c = {.in = inc};
    return store_run(s, "incident upsert", true, incident_upsert_op, &c, err);
}

/* Every string field of the messages we build is heap-allocated, even when
 * empty, so ops__v1__*__free_unpacked(msg, NULL) frees them uniformly. */
static Common__V1__Stamp *new_stamp(const char *run_id)
{
    Common__V1__Stamp *st = malloc(sizeof *st);
    if (st == NULL)
        return NULL;
    common__v1__stamp__init(st);
    st->run_id = dup_str(run_id);
    st->producer = dup_str("");
    if (st->run_id == NULL || st->producer == NULL) {
        common__v1__stamp__free_unpacked(st, NULL);
        return NULL;
    }
    return st;
}

static mc_status incident_get_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    incident_ctx *c = ctx;
    PGresult *res = NULL;
    const char *vals[1] = {c->id};
    mc_status st = q(s, "incident get",
                     "SELECT id::text, severity, title, description, rule_name, target_id,"
                     " metric_name, observed_value, threshold, opened_at_tick, updated_at_tick,"
                     " resolved, coalesce(resolved_at_tick, 0),"
                     " (extract(epoch FROM detected_at) * 1000)::bigint, run_id"
                     " FROM incidents WHERE id = $1::uuid",
                     1, vals, &res, err);
    if (st != MC_OK)
        return st;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mc_error_set(err, MC_ERR_NOT_FOUND, "incident %s not found", c->id);
    }
    Ops__V1__Incident *m = malloc(sizeof *m);
    if (m == NULL) {
        PQclear(res);
        return mc_error_set(err, MC_ERR_NOMEM, "incident get: out of memory");
    }
    ops__v1__incident__init(m);
    m->id = dup_str(PQgetvalue(res, 0, 0));
    m->severity = (Common__V1__IncidentSeverity)get_i64(res, 0, 1);
    m->title = dup_str(PQgetvalue(res, 0, 2));
    m->description = dup_str(PQgetvalue(res, 0, 3));
    m->rule_name = dup_str(PQgetvalue(res, 0, 4));
    m->target_id = dup_str(PQgetvalue(res, 0, 5));
    m->node_id = dup_str("");
    m->service_id = dup_str("");
    m->metric_name = dup_str(PQgetvalue(res, 0, 6));
    m->observed_value = get_f64(res, 0, 7);
    m->threshold = get_f64(res, 0, 8);
    m->opened_at_tick = get_u64(res, 0, 9);
    m->updated_at_tick = get_u64(res, 0, 10);
    m->resolved = get_bool(res, 0, 11);
    m->resolved_at_tick = get_u64(res, 0, 12);
    m->detected_at_unix_ms = get_i64(res, 0, 13);
    m->stamp = new_stamp(PQgetvalue(res, 0, 14));
    PQclear(res);
    if (!m->id || !m->title || !m->description || !m->rule_name || !m->target_id || !m->node_id ||
        !m->service_id || !m->metric_name || !m->stamp) {
        ops__v1__incident__free_unpacked(m, NULL);
        return mc_error_set(err, MC_ERR_NOMEM, "incident get: out of memory");
    }
    c->out = m;
    return MC_OK;
}

mc_status mc_store_incident_get(mc_store *s, const char *id, Ops__V1__Incident **out,
                                mc_error *err)
{
    if (s == NULL || id == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "incident get: store, id and out required");
    *out = NULL;
    incident_ctx c = {.id = id};
    mc_status st = store_run(s, "incident get", true, incident_get_op, &c, err);
    if (st == MC_OK)
        *out = c.out;
    return st;
}

/* ----------------------------------------------------------------- actions */

const char *mc_store_action_status_name(int status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&common__v1__action_status__descriptor, status);
    return v ? v->name : "?";
}

#define ACTION_COLS                                                                                \
    "id::text, incident_id::text, proposed_at_tick, action_type, target_id, status, reason,"      \
    " run_id, updated_at_tick, decided_by, status_reason, expires_at_tick, escalation_level,"     \
    " coalesce(supersedes_action_id::text, '')"

static Ops__V1__Action *action_from_row(const PGresult *res, int r)
{
    Ops__V1__Action *a = malloc(sizeof *a);
    if (a == NULL)
        return NULL;
    ops__v1__action__init(a);
    a->id = dup_str(PQgetvalue(res, r, 0));
    a->incident_id = dup_str(PQgetvalue(res, r, 1));
    a->proposed_at_tick = get_u64(res, r, 2);
    a->action_type = (Common__V1__ActionType)get_i64(res, r, 3);
    a->target_id = dup_str(PQgetvalue(res, r, 4));
    a->status = (Common__V1__ActionStatus)get_i64(res, r, 5);
    a->reason = dup_str(PQgetvalue(res, r, 6));
    a->stamp = new_stamp(PQgetvalue(res, r, 7));
    a->updated_at_tick = get_u64(res, r, 8);
    a->decided_by = dup_str(PQgetvalue(res, r, 9));
    a->status_reason = dup_str(PQgetvalue(res, r, 10));
    a->expires_at_tick = get_u64(res, r, 11);
    a->escalation_level = (uint32_t)get_u64(res, r, 12);
    a->supersedes_action_id = dup_str(PQgetvalue(res, r, 13));
    if (!a->id || !a->incident_id || !a->target_id || !a->reason || !a->stamp || !a->decided_by ||
        !a->status_reason || !a->supersedes_action_id) {
        ops__v1__action__free_unpacked(a, NULL);
        return NULL;
    }
    return a;
}

typedef struct action_ctx {
    const Ops__V1__Action *in;
    const mc_store_action_transition *t;
    const char *id;
    bool inserted;
    Ops__V1__Action *out;
} action_ctx;

static mc_status action_insert_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    action_ctx *c = ctx;
    const Ops__V1__Action *a = c->in;
    char proposed[24], type[24], status[24], updated[24], expires[24], esc[24];
    u64_text(proposed, a->proposed_at_tick);
    i64_text(type, a->action_type);
    i64_text(status, a->status);
    u64_text(updated, a->updated_at_tick ? a->updated_at_tick : a->proposed_at_tick);
    u64_text(expires, a->expires_at_tick);
    u64_text(esc, a->escalation_level);
    const char *sup = a->supersedes_action_id && a->supersedes_action_id[0]
                          ? a->supersedes_action_id
                          : NULL;
    const char *vals[14] = {a->id,           nz(a->incident_id),
                            proposed,        type,
                            nz(a->target_id), status,
                            nz(a->reason),   a->stamp ? nz(a->stamp->run_id) : "",
                            updated,         nz(a->decided_by),
                            nz(a->status_reason), expires,
                            esc,             sup};
    PGresult *res = NULL;
    /* One statement: the action and its first history row exist together or
     * not at all, and a redelivery inserts neither. */
    mc_status st = q(s, "action insert",
                     "WITH ins AS ("
                     " INSERT INTO actions (id, incident_id, proposed_at_tick, action_type,"
                     " target_id, status, reason, run_id, updated_at_tick, decided_by,"
                     " status_reason, expires_at_tick, escalation_level, supersedes_action_id)"
                     " VALUES ($1::uuid, $2::uuid, $3::bigint, $4::int, $5, $6::int, $7, $8,"
                     " $9::bigint, $10, $11, $12::bigint, $13::int, $14::uuid)"
                     " ON CONFLICT (id) DO NOTHING"
                     " RETURNING id, status, proposed_at_tick, reason)"
                     " INSERT INTO action_history (action_id, from_status, to_status, actor, tick,"
                     " reason) SELECT id, 0, status, 'agent', proposed_at_tick, reason FROM ins",
                     14, vals, &res, err);
    if (st != MC_OK)
        return st;
    c->inserted = strtoull(PQcmdTuples(res), NULL, 10) > 0;
    PQclear(res);
    return MC_OK;
}

mc_status mc_store_action_insert(mc_store *s, const Ops__V1__Action *a, bool *inserted,
                                 mc_error *err)
{
    if (s == NULL || a == NULL || a->id == NULL || a->id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "action insert: store and action id required");
    if (a->action_type <= 0 || a->status <= 0)
        return mc_error_set(err, MC_ERR_INVALID, "action %s: action_type and status must be set",
                            a->id);
    if (a->proposed_at_tick > INT64_MAX || a->updated_at_tick > INT64_MAX ||
        a->expires_at_tick > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "action %s: tick out of range", a->id);
    action_ctx c = {.in = a};
    mc_status st = store_run(s, "action insert", true, action_insert_op, &c, err);
    if (st == MC_OK && inserted != NULL)
        *inserted = c.inserted;
    return st;
}

static mc_status action_update_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    action_ctx *c = ctx;
    const mc_store_action_transition *t = c->t;
    static const char what[] = "action status update";
    PGresult *res = NULL;
    mc_status st = q0(s, what, "BEGIN", err);
    if (st != MC_OK)
        return st;
    const char *idv[1] = {t->action_id};
    /* The row lock makes the check and the change one step: a concurrent
     * updater waits and then sees the new status. */
    st = q(s, what, "SELECT status FROM actions WHERE id = $1::uuid FOR UPDATE", 1, idv, &res,
           err);
    if (st != MC_OK)
        return st;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mc_error_set(err, MC_ERR_NOT_FOUND, "action %s not found", t->action_id);
    }
    int cur = (int)get_i64(res, 0, 0);
    PQclear(res);
    if (t->expected_status != 0 && cur != (int)t->expected_status)
        return mc_error_set(err, MC_ERR_STATE, "action %s is %s, expected %s", t->action_id,
                            mc_store_action_status_name(cur),
                            mc_store_action_status_name((int)t->expected_status));
    char to[24], from[24], tick[24];
    i64_text(to, t->to_status);
    i64_text(from, cur);
    u64_text(tick, t->tick);
    const char *uv[5] = {t->action_id, to, tick, nz(t->reason), t->decided_by};
    st = q(s, what,
           "UPDATE actions SET status = $2::int, updated_at_tick = $3::bigint,"
           " status_reason = $4, decided_by = coalesce($5, decided_by), updated_at = now()"
           " WHERE id = $1::uuid RETURNING " ACTION_COLS,
           5, uv, &res, err);
    if (st != MC_OK)
        return st;
    const char *hv[6] = {t->action_id, from, to, nz(t->actor), tick, nz(t->reason)};
    st = q(s, what,
           "INSERT INTO action_history (action_id, from_status, to_status, actor, tick, reason)"
           " VALUES ($1::uuid, $2::int, $3::int, $4, $5::bigint, $6)",
           6, hv, NULL, err);
    if (st != MC_OK) {
        PQclear(res);
        return st;
    }
    os->commit_sent = true;
    st = q0(s, what, "COMMIT", err);
    if (st == MC_OK && c->out == NULL && PQntuples(res) == 1) {
        c->out = action_from_row(res, 0);
        if (c->out == NULL)
            st = mc_error_set(err, MC_ERR_NOMEM, "%s: committed, but out of memory reading it "
                              "back", what);
    }
    PQclear(res);
    return st;
}

mc_status mc_store_action_status_update(mc_store *s, const mc_store_action_transition *t,
                                        Ops__V1__Action **out, mc_error *err)
{
    if (out != NULL)
        *out = NULL;
    if (s == NULL || t == NULL || t->action_id == NULL || t->action_id[0] == '\0')
        return mc_error_set(err, MC_ERR_INVALID, "action status update: store and id required");
    if (t->to_status <= 0 || t->expected_status < 0)
        return mc_error_set(err, MC_ERR_INVALID, "action %s: to_status must be set",
                            t->action_id);
    if (t->tick > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "action %s: tick out of range", t->action_id);
    action_ctx c = {.t = t};
    /* Not idempotent: retried only when the connection dropped before
     * COMMIT (store_run checks). */
    mc_status st = store_run(s, "action status update", false, action_update_op, &c, err);
    if (st == MC_OK && out != NULL)
        *out = c.out;
    else
        ops__v1__action__free_unpacked(c.out, NULL);
    return st;
}

static mc_status action_get_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    action_ctx *c = ctx;
    PGresult *res = NULL;
    const char *vals[1] = {c->id};
    mc_status st = q(s, "action get", "SELECT " ACTION_COLS " FROM actions WHERE id = $1::uuid",
                     1, vals, &res, err);
    if (st != MC_OK)
        return st;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mc_error_set(err, MC_ERR_NOT_FOUND, "action %s not found", c->id);
    }
    c->out = action_from_row(res, 0);
    PQclear(res);
    return c->out ? MC_OK : mc_error_set(err, MC_ERR_NOMEM, "action get: out of memory");
}

mc_status mc_store_action_get(mc_store *s, const char *id, Ops__V1__Action **out, mc_error *err)
{
    if (s == NULL || id == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "action get: store, id and out required");
    *out = NULL;
    action_ctx c = {.id = id};
    mc_status st = store_run(s, "action get", true, action_get_op, &c, err);
    if (st == MC_OK)
        *out = c.out;
    return st;
}

void mc_store_action_page_clear(mc_store_action_page *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        ops__v1__action__free_unpacked(l->items[i], NULL);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Fills out with rows [0, n) of res. */
static mc_status actions_from_result(const PGresult *res, size_t n, mc_store_action_page *out,
                                     mc_error *err)
{
    if (n == 0)
        return MC_OK;
    out->items = calloc(n, sizeof *out->items);
    if (out->items == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "action list: out of memory");
    for (size_t i = 0; i < n; i++) {
        out->items[i] = action_from_row(res, (int)i);
        if (out->items[i] == NULL) {
            mc_store_action_page_clear(out);
            return mc_error_set(err, MC_ERR_NOMEM, "action list: out of memory");
        }
        out->n = i + 1;
    }
    return MC_OK;
}

typedef struct list_ctx {
    const mc_store_action_filter *f;
    uint32_t limit;
    bool has_after;
    uint64_t after_tick;
    char after_id[37];
    mc_store_action_page out;
} list_ctx;

#define TOKEN_PREFIX "a1."

static bool is_uuid_text(const char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-')
                return false;
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* Token: "a1.<tick>.<uuid>", the sort key of the last row of the page. */
static mc_status token_parse(const char *tok, list_ctx *c, mc_error *err)
{
    size_t pl = strlen(TOKEN_PREFIX);
    if (strncmp(tok, TOKEN_PREFIX, pl) != 0)
        goto bad;
    const char *p = tok + pl;
    if (*p < '0' || *p > '9')
        goto bad;
    errno = 0;
    char *end = NULL;
    unsigned long long t = strtoull(p, &end, 10);
    if (errno != 0 || end == NULL || *end != '.' || t > INT64_MAX)
        goto bad;
    if (!is_uuid_text(end + 1))
        goto bad;
    c->has_after = true;
    c->after_tick = t;
    memcpy(c->after_id, end + 1, 37);
    return MC_OK;
bad:
    return mc_error_set(err, MC_ERR_INVALID, "page token is not valid (use the one a list "
                        "returned)");
}

static mc_status action_list_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    list_ctx *c = ctx;
    const mc_store_action_filter *f = c->f;
    char statuses[160] = "", type[24], tmin[24], tmax[24], after_tick[24], lim[24];
    if (f->status_mask != 0) {
        size_t off = 0;
        off += (size_t)snprintf(statuses + off, sizeof statuses - off, "{");
        for (int b = 0; b < 32; b++) {
            if (f->status_mask & (1u << b))
                off += (size_t)snprintf(statuses + off, sizeof statuses - off, "%s%d",
                                        off > 1 ? "," : "", b);
        }
        snprintf(statuses + off, sizeof statuses - off, "}");
    }
    i64_text(type, f->action_type);
    u64_text(tmin, f->tick_min);
    u64_text(tmax, f->tick_max);
    u64_text(after_tick, c->after_tick);
    u64_text(lim, (uint64_t)c->limit + 1);
    const char *vals[9] = {
        f->status_mask ? statuses : NULL,
        f->target_id && f->target_id[0] ? f->target_id : NULL,
        f->action_type ? type : NULL,
        tmin,
        f->tick_max ? tmax : NULL,
        f->run_id && f->run_id[0] ? f->run_id : NULL,
        c->has_after ? after_tick : NULL,
        c->has_after ? c->after_id : NULL,
        lim,
    };
    PGresult *res = NULL;
    /* Unnamed statements are planned with the actual values, so the
     * "$n IS NULL OR ..." arms fold away and the indexes apply. */
    mc_status st = q(s, "action list",
                     "SELECT " ACTION_COLS " FROM actions"
                     " WHERE ($1::int[] IS NULL OR status = ANY ($1::int[]))"
                     " AND ($2::text IS NULL OR target_id = $2::text)"
                     " AND ($3::int IS NULL OR action_type = $3::int)"
                     " AND proposed_at_tick >= $4::bigint"
                     " AND ($5::bigint IS NULL OR proposed_at_tick <= $5::bigint)"
                     " AND ($6::text IS NULL OR run_id = $6::text)"
                     " AND ($7::bigint IS NULL OR (proposed_at_tick, id) < ($7::bigint, $8::uuid))"
                     " ORDER BY proposed_at_tick DESC, id DESC LIMIT $9::int",
                     9, vals, &res, err);
    if (st != MC_OK)
        return st;
    size_t rows = (size_t)PQntuples(res);
    size_t n = rows > c->limit ? c->limit : rows;
    st = actions_from_result(res, n, &c->out, err);
    if (st == MC_OK && rows > c->limit && n > 0)
        snprintf(c->out.next_page_token, sizeof c->out.next_page_token, TOKEN_PREFIX "%s.%s",
                 PQgetvalue(res, (int)n - 1, 2), PQgetvalue(res, (int)n - 1, 0));
    PQclear(res);
    return st;
}

static uint32_t page_limit(uint32_t n)
{
    if (n == 0)
        return MC_STORE_PAGE_DEFAULT;
    return n > MC_STORE_PAGE_MAX ? MC_STORE_PAGE_MAX : n;
}

mc_status mc_store_action_list(mc_store *s, const mc_store_action_filter *f, uint32_t page_size,
                               const char *page_token, mc_store_action_page *out, mc_error *err)
{
    if (s == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "action list: store and out required");
    mc_store_action_page_clear(out);
    static const mc_store_action_filter none = {0};
    list_ctx c = {.f = f ? f : &none, .limit = page_limit(page_size)};
    if (c.f->tick_min > INT64_MAX || c.f->tick_max > INT64_MAX)
        return mc_error_set(err, MC_ERR_RANGE, "action list: tick bound out of range");
    if (page_token != NULL && page_token[0] != '\0') {
        mc_status st = token_parse(page_token, &c, err);
        if (st != MC_OK)
            return st;
    }
    mc_status st = store_run(s, "action list", true, action_list_op, &c, err);
    if (st == MC_OK)
        *out = c.out;
    else
        mc_store_action_page_clear(&c.out);
    return st;
}

static mc_status pending_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    list_ctx *c = ctx;
    char lim[24];
    u64_text(lim, c->limit);
    const char *vals[1] = {lim};
    PGresult *res = NULL;
    mc_status st = q(s, "pending actions",
                     "SELECT " ACTION_COLS " FROM actions WHERE status = 1"
                     " ORDER BY proposed_at_tick, id LIMIT $1::int",
                     1, vals, &res, err);
    if (st != MC_OK)
        return st;
    st = actions_from_result(res, (size_t)PQntuples(res), &c->out, err);
    PQclear(res);
    return st;
}

mc_status mc_store_action_list_pending(mc_store *s, uint32_t limit, mc_store_action_page *out,
                                       mc_error *err)
{
    if (s == NULL || out == NULL)
        return mc_error_set(err, MC_ERR_INVALID, "pending actions: store and out required");
    mc_store_action_page_clear(out);
    list_ctx c = {.limit = page_limit(limit)};
    mc_status st = store_run(s, "pending actions", true, pending_op, &c, err);
    if (st == MC_OK)
        *out = c.out;
    else
        mc_store_action_page_clear(&c.out);
    return st;
}

void mc_store_history_list_clear(mc_store_history_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        ops__v1__action_history_entry__free_unpacked(l->items[i], NULL);
    free(l->items);
    memset(l, 0, sizeof *l);
}

typedef struct history_ctx {
    const char *array; /* the ids as a PostgreSQL array literal */
    mc_store_history_list out;
} history_ctx;

static mc_status history_op(mc_store *s, void *ctx, op_state *os, mc_error *err)
{
    (void)os;
    history_ctx *c = ctx;
    const char *vals[1] = {c->array};
    PGresult *res = NULL;
    mc_status st = q(s, "action history",
                     "SELECT action_id::text, from_status, to_status, actor, tick, reason,"
                     " (extract(epoch FROM recorded_at) * 1000)::bigint"
                     " FROM action_history WHERE action_id = ANY ($1::uuid[])"
                     " ORDER BY action_id, id",
                     1, vals, &res, err);
    if (st != MC_OK)
        return st;
    size_t n = (size_t)PQntuples(res);
    if (n > 0) {
        c->out.items = calloc(n, sizeof *c->out.items);
        if (c->out.items == NULL) {
            PQclear(res);
            return mc_error_set(err, MC_ERR_NOMEM, "action history: out of memory");
        }
    }
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        Ops__V1__ActionHistoryEntry *h = malloc(sizeof *h);
        if (h == NULL)
            break;
        ops__v1__action_history_entry__init(h);
        c->out.items[i] = h;
        c->out.n = i + 1;
        h->action_id = dup_str(PQgetvalue(res, r, 0));
        h->from_status = (Common__V1__ActionStatus)get_i64(res, r, 1);
        h->to_status = (Common__V1__ActionStatus)get_i64(res, r, 2);
        h->actor = dup_str(PQgetvalue(res, r, 3));
        h->tick = get_u64(res, r, 4);
        h->reason = dup_str(PQgetvalue(res, r, 5));
        h->recorded_at_unix_ms = get_i64(res, r, 6);
        if (!h->action_id || !h->actor || !h->reason)
            break;
    }
    PQclear(res);
    bool complete = c->out.n == n;
    for (size_t i = 0; complete && i < n; i++) {
        const Ops__V1__ActionHistoryEntry *h = c->out.items[i];
        complete = h->action_id && h->actor && h->reason;
    }
    if (!complete) {
        mc_store_history_list_clear(&c->out);
        return mc_error_set(err, MC_ERR_NOMEM, "action history: out of memory");
    }
    return MC_OK;
}

mc_status mc_store_action_history(mc_store *s, const char *const *action_ids, size_t n,
                                  mc_store_history_list *out, mc_error *err)
{
    if (s == NULL || out == NULL || (action_ids == NULL && n > 0))
        return mc_error_set(err, MC_ERR_INVALID, "action history: store, ids and out required");
    mc_store_history_list_clear(out);
    if (n > MC_STORE_PAGE_MAX)
        return mc_error_set(err, MC_ERR_LIMIT, "action history: %zu ids (at most %d)", n,
                            MC_STORE_PAGE_MAX);
    if (n == 0)
        return MC_OK;
    /* The ids travel as one array parameter. Each element is double-quoted
     * with " and \ escaped, so no id can change the array's shape. */
    size_t cap = 3;
    for (size_t i = 0; i < n; i++) {
        if (action_ids[i] == NULL)
            return mc_error_set(err, MC_ERR_INVALID, "action history: id %zu is NULL", i);
        cap += 2 * strlen(action_ids[i]) + 3;
    }
    char *arr = malloc(cap);
    if (arr == NULL)
        return mc_error_set(err, MC_ERR_NOMEM, "action history: out of memory");
    size_t off = 0;
    arr[off++] = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            arr[off++] = ',';
        arr[off++] = '"';
        for (const char *p = action_ids[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                arr[off++] = '\\';
            arr[off++] = *p;
        }
        arr[off++] = '"';
    }
    arr[off++] = '}';
    arr[off] = '\0';
    history_ctx c = {.array = arr};
    mc_status st = store_run(s, "action history", true, history_op, &c, err);
    free(arr);
    if (st == MC_OK)
        *out = c.out;
    return st;
}
