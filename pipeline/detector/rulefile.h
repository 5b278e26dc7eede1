/* The line scanner shared by the detection and decision rule files, and the
 * strict value parsers both use. The format is INI-like:
 *
 *     # a comment (whole line; ';' works too)
 *     mode = extend
 *
 *     [rule]
 *     name = cpu_high
 *     threshold = 85
 *
 * Pure: it reads a caller's buffer and never opens a file. Every error it
 * reports starts with "<file>:<line>:" so a person can find the spot. */
#ifndef MC_PIPELINE_RULEFILE_H
#define MC_PIPELINE_RULEFILE_H

#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

#define MC_RULEFILE_LINE_MAX 1024
#define MC_RULEFILE_KEY_MAX 48
#define MC_RULEFILE_VALUE_MAX 512
#define MC_RULEFILE_SECTION_MAX 32
/* Rule, group and metric names, with the NUL (both rule kinds use it). */
#define MC_RULEFILE_NAME_MAX 48

/* What mc_rulefile_next found. */
typedef enum mc_rulefile_item {
    MC_RULEFILE_END = 0, /* the buffer is exhausted */
    MC_RULEFILE_SECTION, /* a "[name]" line: section holds the name */
    MC_RULEFILE_PAIR     /* a "key = value" line: key and value are set */
} mc_rulefile_item;

/* Which kind of target a rule applies to (A detection target is a service
 * when the sample names one, else a node). */
typedef enum mc_rule_target {
    MC_RULE_TARGET_ANY = 0,
    MC_RULE_TARGET_SERVICE = 1,
    MC_RULE_TARGET_NODE = 2
} mc_rule_target;

/* What a rules file does with the built-in table. */
typedef enum mc_rules_mode {
    MC_RULES_MODE_EXTEND = 0, /* add to the built-ins; same name replaces one */
    MC_RULES_MODE_REPLACE = 1 /* use only the file's rules */
} mc_rules_mode;

typedef struct mc_rulefile {
    const char *buf; /* not owned */
    size_t len;
    size_t pos;
    const char *file; /* not owned; the name used in messages */
    uint32_t line;    /* line of the item last returned, from 1 */
    int in_section;   /* a section header was seen */
    char section[MC_RULEFILE_SECTION_MAX];
    char key[MC_RULEFILE_KEY_MAX];
    char value[MC_RULEFILE_VALUE_MAX];
} mc_rulefile;

/* Starts scanning buf (len bytes, need not be NUL-terminated). file_name
 * may be NULL ("<rules>"). Both must outlive the scanner. */
void mc_rulefile_init(mc_rulefile *f, const char *buf, size_t len, const char *file_name);

/* Reads the next item into *item. Blank lines and comments are skipped.
 * A malformed line (no '=', empty key, overlong line or value, NUL byte,
 * unterminated "[") is MC_ERR_PARSE with "<file>:<line>: ..." in err. */
mc_status mc_rulefile_next(mc_rulefile *f, mc_rulefile_item *item, mc_error *err);

/* Sets err to "<file>:<line>: rule \"<rule>\": field \"<field>\": <message>"
 * and returns st. rule and field may be NULL (the parts are left out). */
mc_status mc_rulefile_error(mc_error *err, mc_status st, const char *file, uint32_t line,
                            const char *rule, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* Strict value parsers. They accept the whole string or nothing and return
 * MC_ERR_PARSE (not a value of the kind) or MC_ERR_RANGE (out of bounds);
 * on failure *out is unchanged. */

/* Unsigned decimal, at most max. */
mc_status mc_rulefile_parse_u32(const char *s, uint32_t max, uint32_t *out);
/* A finite decimal number: [+-]digits[.digits][e[+-]digits]. No hex, no
 * inf/nan, so a rules file means the same on every machine. */
mc_status mc_rulefile_parse_double(const char *s, double *out);
/* "info", "warning", "error", "critical" (any case, with or without the
 * INCIDENT_SEVERITY_ prefix) or 1..4. */
mc_status mc_rulefile_parse_severity(const char *s, int *out);
/* RESTART_SERVICE, SCALE_UP, SCALE_DOWN, DRAIN_NODE, REBALANCE_TRAFFIC (any
 * case, with or without the ACTION_TYPE_ prefix). */
mc_status mc_rulefile_parse_action_type(const char *s, int *out);
/* "any", "service" or "node". */
mc_status mc_rulefile_parse_target(const char *s, mc_rule_target *out);
/* "extend" or "replace". */
mc_status mc_rulefile_parse_mode(const char *s, mc_rules_mode *out);
/* "yes"/"no"/"true"/"false"/"1"/"0". */
mc_status mc_rulefile_parse_bool(const char *s, int *out);

/* True when s is a usable rule, group or metric name: 1..max-1 characters
 * of [A-Za-z0-9_.-]. */
int mc_rulefile_name_ok(const char *s, size_t max);

/* Copies a value known to fit (checked by the caller) or fails with
 * MC_ERR_RANGE when it does not. */
mc_status mc_rulefile_copy(char *dst, size_t cap, const char *src);

/* Stores a name field (mc_rulefile_name_ok) into dst, which holds
 * MC_RULEFILE_NAME_MAX bytes; on failure sets *why as the set hook of
 * mc_rulefile_schema does. */
mc_status mc_rulefile_set_name(char *dst, const char *value, const char **why);

/* Short names, e.g. "WARNING", "SCALE_UP", "service"; "?" for unknown. */
const char *mc_rulefile_severity_name(int severity);
const char *mc_rulefile_action_type_name(int action_type);
const char *mc_rulefile_target_name(mc_rule_target t);

/* The [rule]-section reader both rule kinds share. Each kind describes its
 * rules once (which keys a section may set, how a value is stored, how a
 * finished rule is checked) and this reader does the rest the same way for
 * both: the "mode" line, the section headers, unknown and repeated keys,
 * required fields, duplicate names, the table limit and, when loading, how
 * a file's rules are laid over the built-ins. So the two rule files accept
 * the same syntax and report errors in the same words.
 *
 * A kind's rule table is an array of rule_size-byte structs whose first
 * member is the NUL-terminated rule name. */

/* One key a [rule] section may set. */
typedef struct mc_rulefile_field {
    const char *key;
    unsigned flag; /* one bit, distinct within the kind */
    int required;  /* the section is rejected when the key is missing */
} mc_rulefile_field;

typedef struct mc_rulefile_schema {
    const char *what; /* "detection rules": the prefix of set-level errors */
    const mc_rulefile_field *fields;
    size_t field_count;
    unsigned name_flag; /* the field holding the rule's name (labels errors) */
    size_t rule_size;
    size_t rule_cap; /* how many rules a table holds */
    /* Sets the defaults of a rule about to be read (already zeroed); may be
     * NULL. */
    void (*start)(void *rule);
    /* Stores value for the field flag; on failure returns MC_ERR_PARSE,
     * MC_ERR_RANGE or MC_ERR_INVALID and sets *why to what a value must be. */
    mc_status (*set)(void *rule, unsigned flag, const char *value, const char **why);
    /* Fills fields that default from others, given the flags seen; may be
     * NULL. */
    void (*complete)(void *rule, unsigned seen);
    /* Checks one rule; line is where it was defined (0 for a table). */
    mc_status (*validate)(const void *rule, const char *file, uint32_t line, mc_error *err);
} mc_rulefile_schema;

/* Checks a rule table: count in 1..rule_cap, each rule valid, names
 * unique. Errors start with schema->what. */
mc_status mc_rulefile_rules_validate(const mc_rulefile_schema *schema, const void *rules,
                                     size_t count, mc_error *err);

/* Parses a rules file from buf (len bytes) into rules (zeroed first, so
 * rule_cap entries) and *count, and the file's mode into *mode. scratch is
 * room for one rule, used while a section is read. */
mc_status mc_rulefile_rules_parse(const mc_rulefile_schema *schema, const char *buf, size_t len,
                                  const char *file_name, void *rules, size_t *count,
                                  void *scratch, mc_rules_mode *mode, mc_error *err);

/* Lays file_count rules read from file_name over the table (rules, *count)
 * in mode: replace takes the file's table (all rule_cap entries of
 * file_rules), extend replaces a rule of the same name in place and appends
 * the others. The result is validated; errors name the file. */
mc_status mc_rulefile_rules_apply(const mc_rulefile_schema *schema, void *rules, size_t *count,
                                  const void *file_rules, size_t file_count, mc_rules_mode mode,
                                  const char *file_name, mc_error *err);

#endif
