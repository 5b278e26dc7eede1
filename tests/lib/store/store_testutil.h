/* Helpers for the store's integration tests: each test gets its own
 * database (mc_test_<random>) on the PostgreSQL named by DATABASE_URL or
 * DB_*, created at setup and dropped at teardown. */
#ifndef MC_TESTS_STORE_TESTUTIL_H
#define MC_TESTS_STORE_TESTUTIL_H

#include <stdint.h>

#include <libpq-fe.h>

#include "store/store.h"

typedef struct st_db {
    char conninfo[1024]; /* the server's conninfo (its own database) */
    char dbname[64];     /* the test's database */
} st_db;

/* Creates a fresh database; fails the test on error. */
void st_db_create(st_db *db);
/* Drops it (WITH (FORCE), so leftover sessions do not block). */
void st_db_drop(st_db *db);
/* Opens a store on the test database with small backoffs. */
mc_store *st_open(const st_db *db, uint32_t attempts);
/* Opens a store and applies the built-in migrations. */
mc_store *st_open_migrated(const st_db *db);
/* A raw libpq connection to the test database. */
PGconn *st_pq(const st_db *db);
/* Runs sql (no parameters) and returns the first column of the first row
 * as an integer (0 for no row); fails the test on error. */
int64_t st_scalar(PGconn *c, const char *sql);
/* Runs sql; fails the test on error. */
void st_exec(PGconn *c, const char *sql);
/* A UUID text derived from n (deterministic, for readable tests). */
void st_uuid(char out[37], uint32_t kind, uint32_t n);

#endif
