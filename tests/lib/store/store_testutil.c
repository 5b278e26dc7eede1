#include "store_testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

typedef struct db_env {
    mc_db_config db;
} db_env;

static const mc_config_var db_vars[] = {MC_CONFIG_VARS_DB(db_env, db)};

static void server_conninfo(char *out, size_t n)
{
    db_env env;
    memset(&env, 0, sizeof env);
    mc_error err = {0};
    if (mc_config_load(db_vars, sizeof db_vars / sizeof db_vars[0], &env, NULL, NULL, &err) !=
        MC_OK)
        fail_msg("DB config: %s", err.msg);
    assert_int_equal(mc_db_config_conninfo(&env.db, out, n), MC_OK);
}

static PGconn *connect_to(const char *conninfo, const char *dbname)
{
    const char *keys[] = {"dbname", "dbname", NULL};
    const char *vals[] = {conninfo, dbname, NULL};
    if (dbname == NULL)
        keys[1] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK)
        fail_msg("connect %s: %s", dbname ? dbname : "(server)", PQerrorMessage(c));
    return c;
}

void st_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

int64_t st_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(c));
    int64_t v = PQntuples(r) > 0 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                         : 0;
    PQclear(r);
    return v;
}

void st_db_create(st_db *db)
{
    static unsigned counter;
    memset(db, 0, sizeof *db);
    server_conninfo(db->conninfo, sizeof db->conninfo);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(db->dbname, sizeof db->dbname, "mc_test_%x_%lx_%u", (unsigned)getpid(),
             (unsigned long)ts.tv_nsec, counter++);
    PGconn *c = connect_to(db->conninfo, NULL);
    char sql[160];
    /* The name is generated here from digits and letters only. */
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", db->dbname);
    st_exec(c, sql);
    PQfinish(c);
}

void st_db_drop(st_db *db)
{
    if (db->dbname[0] == '\0')
        return;
    PGconn *c = connect_to(db->conninfo, NULL);
    char sql[160];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db->dbname);
    st_exec(c, sql);
    PQfinish(c);
    db->dbname[0] = '\0';
}

mc_store *st_open(const st_db *db, uint32_t attempts)
{
    mc_store_options o = {.conninfo = db->conninfo,
                          .dbname = db->dbname,
                          .connect_attempts = attempts,
                          .backoff_initial_ms = 20,
                          .backoff_max_ms = 200};
    mc_store *s = NULL;
    mc_error err = {0};
    if (mc_store_open(&o, &s, &err) != MC_OK)
        fail_msg("mc_store_open: %s", err.msg);
    return s;
}

mc_store *st_open_migrated(const st_db *db)
{
    mc_store *s = st_open(db, 5);
    mc_error err = {0};
    if (mc_store_migrate(s, NULL, &err) != MC_OK)
        fail_msg("mc_store_migrate: %s", err.msg);
    return s;
}

PGconn *st_pq(const st_db *db)
{
    return connect_to(db->conninfo, db->dbname);
}

void st_uuid(char out[37], uint32_t kind, uint32_t n)
{
    snprintf(out, 37, "%08x-0000-4000-8000-%012x", kind, n);
}
