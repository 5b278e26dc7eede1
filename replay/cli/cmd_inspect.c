#include "cli.h"
int mc_cmd_inspect(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "not yet\n");
    return MC_EXIT_USAGE;
}
