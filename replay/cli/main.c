/* microcloud: run the closed loop (sim) and check, compare, read and
 * re-publish recorded runs (replay ...). Every subcommand takes --help. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config/config.h"
#include "trace/writer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: microcloud <command> [options]\n"
            "\n"
            "commands:\n"
            "  sim              run the closed loop (engine, detector, agent, orchestrator) in\n"
            "                   lockstep, with no NATS or PostgreSQL; record a trace; print a "
            "scorecard\n"
            "  replay verify    check a trace's integrity, re-drive its cores and compare\n"
            "  replay diff      compare two traces: first divergence, digests, decisions\n"
            "  replay inspect   print a trace's records as JSON lines, or a summary\n"
            "  replay publish   re-publish a trace into JetStream (stamps marked replayed)\n"
            "  version          print the build id\n"
            "\n"
            "Run `microcloud <command> --help` for a command's options.\n"
            "Exit codes: 0 success or identical, 1 diverged, 2 damaged, incompatible or failed,\n"
            "64 bad usage.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MC_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return MC_EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("microcloud %s (%s)\n", mc_trace_build_id(), mc_trace_compiler());
        return MC_EXIT_OK;
    }
    if (strcmp(cmd, "sim") == 0)
        return mc_cmd_sim(argc - 1, argv + 1);
    if (strcmp(cmd, "replay") == 0) {
        if (argc < 3 || strcmp(argv[2], "--help") == 0 || strcmp(argv[2], "-h") == 0) {
            printf(
                "usage: microcloud replay verify|diff|inspect|publish ... (each takes --help)\n");
            return argc < 3 ? MC_EXIT_USAGE : MC_EXIT_OK;
        }
        const char *sub = argv[2];
        if (strcmp(sub, "verify") == 0)
            return mc_cmd_verify(argc - 2, argv + 2);
        if (strcmp(sub, "diff") == 0)
            return mc_cmd_diff(argc - 2, argv + 2);
        if (strcmp(sub, "inspect") == 0)
            return mc_cmd_inspect(argc - 2, argv + 2);
        if (strcmp(sub, "publish") == 0)
            return mc_cmd_publish(argc - 2, argv + 2);
        fprintf(stderr, "microcloud replay: unknown subcommand \"%s\"\n", sub);
        return MC_EXIT_USAGE;
    }
    fprintf(stderr, "microcloud: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return MC_EXIT_USAGE;
}
