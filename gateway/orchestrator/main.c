/* The orchestrator binary: configuration from the environment, then the
 * service until SIGINT/SIGTERM (orch.h). */
#include <stdio.h>
#include <stdlib.h>

#include "config/config.h"
#include "log/log.h"
#include "orch.h"

int main(int argc, char **argv)
{
    mc_orch_config cfg;
    size_t n;
    const mc_config_var *vars = mc_orch_config_vars(&n);
    mc_config_load_or_exit(argc, argv, "orchestrator",
                           "The Microcloud gateway: approval workflow (ActionService), "
                           "simulation control proxy, dashboard event stream (/api/stream).",
                           vars, n, &cfg);
    mc_log_init("orchestrator", cfg.log.level, cfg.log.format, stderr);
    mc_error err = {0};
    mc_status st = mc_orch_run(&cfg, &err);
    if (st != MC_OK) {
        MC_LOG_ERROR("orchestrator failed", MC_LF_STR("status", mc_status_name(st)),
                     MC_LF_STR("error", err.msg));
        fprintf(stderr, "orchestrator: %s\n", err.msg);
        return st == MC_ERR_INVALID ? 2 : 1;
    }
    return 0;
}
