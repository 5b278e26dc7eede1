/* The `microcloud` command line: shared helpers of the subcommands. */
#ifndef MC_CLI_CLI_H
#define MC_CLI_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "harness/setup.h"

/* Exit codes. */
#define MC_EXIT_OK       0
#define MC_EXIT_DIVERGED 1 /* replay verify/diff: the runs differ */
#define MC_EXIT_DAMAGED  2 /* damaged, torn or incompatible trace; or the run failed */
#define MC_EXIT_USAGE    64

int mc_cmd_sim(int argc, char **argv);
int mc_cmd_verify(int argc, char **argv);
int mc_cmd_inspect(int argc, char **argv);
int mc_cmd_diff(int argc, char **argv);
int mc_cmd_publish(int argc, char **argv);

/* A progress bar on stderr, drawn only when stderr is a terminal. */
typedef struct mc_progress {
    bool on;
    uint64_t total;
    int last_permille;
    const char *label;
} mc_progress;
void mc_progress_start(mc_progress *p, const char *label, uint64_t total);
void mc_progress_update(mc_progress *p, uint64_t done);
void mc_progress_end(mc_progress *p);

/* Appends s to buf (of cap bytes) quoted for a POSIX shell when needed,
 * preceded by a space unless buf is empty. */
void mc_shell_append(char *buf, size_t cap, const char *s);

/* The `microcloud sim` command that records the run of header h over ticks
 * ticks (seed, scenario and knobs, approval mode; rules flags and decision
 * files are not in the header). */
struct Trace__V1__TraceHeader;
void mc_sim_command(const struct Trace__V1__TraceHeader *h, uint64_t ticks, char *buf, size_t cap);

/* Prints j as one line of JSON on stdout and drops the reference. */
void mc_json_print_line(json_t *j);

/* The default scenario folder: $MC_SCENARIO_DIR, else the source tree's. */
const char *mc_default_scenario_dir(void);

/* The program name for reproduce commands ("microcloud" or argv[0]). */
extern const char *mc_prog;

#endif
