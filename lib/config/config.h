/* Typed configuration from the environment (12-factor, as in the seed).
 *
 * A service describes its variables in a table of mc_config_var (name,
 * type, default, description, where the value goes in its config struct)
 * and loads them once at start. A bad value stops the program with one line
 * naming the variable, the value and what is expected, and exit status 2;
 * nothing falls back silently. An empty value counts as unset.
 *
 *     static const mc_config_var vars[] = {
 *         MC_CONFIG_VAR_NATS(my_cfg, common),
 *         {"SPEED", MC_CFG_DOUBLE, "1", "Ticks per second", offsetof(my_cfg, speed),
 *          .min = 0.001, .max = 1000},
 *     };
 *     mc_config_load_or_exit(argc, argv, "sim-engine", "...", vars, n, &cfg);
 */
#ifndef MC_CONFIG_CONFIG_H
#define MC_CONFIG_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "log/log.h"
#include "status/status.h"

typedef enum mc_config_type {
    MC_CFG_STRING,      /* const char * (borrowed from the environment or the default) */
    MC_CFG_INT,         /* int64_t, within [min, max] when min < max */
    MC_CFG_UINT,        /* uint64_t, within [min, max] when min < max */
    MC_CFG_DOUBLE,      /* double, finite, within [min, max] when min < max */
    MC_CFG_BOOL,        /* bool: true/false, 1/0, yes/no, on/off */
    MC_CFG_ENUM,        /* int: index into choices */
    MC_CFG_PORT,        /* uint16_t: 1..65535 */
    MC_CFG_ADDR,        /* mc_addr: "host:port" or ":port" */
    MC_CFG_URL,         /* const char *: comma-separated URLs, schemes from choices */
    MC_CFG_DURATION_MS, /* uint64_t milliseconds: "250ms", "5s", "2m", "1h" or plain ms */
    MC_CFG_LOG_LEVEL,   /* mc_log_level */
    MC_CFG_LOG_FORMAT   /* mc_log_format */
} mc_config_type;

/* A listen address. host is "0.0.0.0" when the value was ":port". */
typedef struct mc_addr {
    char host[256];
    uint16_t port;
} mc_addr;

typedef struct mc_config_var {
    const char *name;
    mc_config_type type;
    const char *default_value; /* NULL: optional, unset leaves the field zero/NULL */
    const char *description;
    size_t offset;               /* offset of the field in the caller's struct */
    const char *const *choices;  /* ENUM names or URL schemes, NULL-terminated */
    double min, max;             /* bounds for INT/UINT/DOUBLE, used when min < max */
    bool secret;                 /* never printed by --help or in errors */
} mc_config_var;

/* Reads a variable; returns NULL when unset. */
typedef const char *(*mc_config_getenv_fn)(void *ctx, const char *name);

/* Loads every variable of the table into out. getenv_fn NULL reads the
 * process environment. On a bad value returns MC_ERR_INVALID with err naming
 * the variable, the value and what is expected; out may then be partly
 * filled. */
mc_status mc_config_load(const mc_config_var *vars, size_t n, void *out,
                         mc_config_getenv_fn getenv_fn, void *ctx, mc_error *err);

/* Prints usage and the variables with their defaults. */
void mc_config_print_help(FILE *f, const char *program, const char *summary,
                          const mc_config_var *vars, size_t n);

/* The start of every binary: handles --help/-h and --version, refuses
 * unknown arguments, loads the table, and on any problem prints one line
 * "<program>: <what is wrong>" to stderr and exits with status 2. */
void mc_config_load_or_exit(int argc, char **argv, const char *program, const char *summary,
                            const mc_config_var *vars, size_t n, void *out);

/* Parses "host:port" / ":port" into out. */
mc_status mc_addr_parse(const char *s, mc_addr *out);

/* The build id stamped into every binary ("0.1.0+<git>.<config>"). */
const char *mc_build_id(void);

/* ---- Variables shared by the services, with the seed's defaults. ---- */

/* NATS connection. */
typedef struct mc_nats_config {
    const char *url;           /* NATS_URL */
    const char *user;          /* NATS_USER */
    const char *password;      /* NATS_PASSWORD */
    const char *token;         /* NATS_TOKEN */
    const char *nkey_seed_file; /* NATS_NKEY_SEED_FILE */
} mc_nats_config;

/* PostgreSQL connection: DATABASE_URL wins over the DB_* variables. */
typedef struct mc_db_config {
    const char *database_url; /* DATABASE_URL */
    const char *host;         /* DB_HOST (a directory means a Unix socket) */
    uint16_t port;            /* DB_PORT */
    const char *name;         /* DB_NAME */
    const char *user;         /* DB_USER */
    const char *password;     /* DB_PASSWORD */
} mc_db_config;

/* Logging. */
typedef struct mc_log_config {
    mc_log_level level;   /* LOG_LEVEL */
    mc_log_format format; /* LOG_FORMAT */
} mc_log_config;

extern const char *const mc_config_nats_schemes[];
extern const char *const mc_config_pg_schemes[];
extern const char *const mc_config_http_schemes[];

/* Table rows for the shared variables; use inside a service's table. */
#define MC_CONFIG_VARS_NATS(T, m)                                                                  \
    {"NATS_URL", MC_CFG_URL, "nats://localhost:4222", "NATS server URL(s), comma-separated",     \
     offsetof(T, m.url), .choices = mc_config_nats_schemes},                                       \
    {"NATS_USER", MC_CFG_STRING, NULL, "NATS user name", offsetof(T, m.user)},                     \
    {"NATS_PASSWORD", MC_CFG_STRING, NULL, "NATS password", offsetof(T, m.password),               \
     .secret = true},                                                                              \
    {"NATS_TOKEN", MC_CFG_STRING, NULL, "NATS token", offsetof(T, m.token), .secret = true},      \
    {"NATS_NKEY_SEED_FILE", MC_CFG_STRING, NULL, "File holding an NKey seed",                      \
     offsetof(T, m.nkey_seed_file)}

#define MC_CONFIG_VARS_DB(T, m)                                                                    \
    {"DATABASE_URL", MC_CFG_URL, NULL, "PostgreSQL URL; overrides the DB_* variables",            \
     offsetof(T, m.database_url), .choices = mc_config_pg_schemes, .secret = true},                \
    {"DB_HOST", MC_CFG_STRING, "localhost", "TimescaleDB/PostgreSQL host or socket directory",     \
     offsetof(T, m.host)},                                                                         \
    {"DB_PORT", MC_CFG_PORT, "5432", "TimescaleDB/PostgreSQL port", offsetof(T, m.port)},         \
    {"DB_NAME", MC_CFG_STRING, "microcloud", "Database name", offsetof(T, m.name)},                \
    {"DB_USER", MC_CFG_STRING, "microcloud", "Database user", offsetof(T, m.user)},                \
    {"DB_PASSWORD", MC_CFG_STRING, "microcloud", "Database password", offsetof(T, m.password),     \
     .secret = true}

#define MC_CONFIG_VARS_LOG(T, m)                                                                   \
    {"LOG_LEVEL", MC_CFG_LOG_LEVEL, "info", "Logging level: debug, info, warn, error",             \
     offsetof(T, m.level)},                                                                        \
    {"LOG_FORMAT", MC_CFG_LOG_FORMAT, "json", "Log format: json or text", offsetof(T, m.format)}

/* Builds a libpq connection string (keyword=value, values quoted) from the
 * DB_* fields, or copies DATABASE_URL when it is set. MC_ERR_LIMIT when it
 * does not fit in n bytes. */
mc_status mc_db_config_conninfo(const mc_db_config *db, char *out, size_t n);

#endif
