/* main.c — prewarmd: the Prewarm scheduler. */
#include "config.h"
#include "daemon.h"

#include "pw/log.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    pw_log_set_process("prewarmd");
    struct pw_sched_config cfg;
    char err[512] = "";
    int rv = pw_sched_config_load(&cfg, argc, argv, err, sizeof(err));
    if (rv < 0)
        return 0;
    if (rv != 0) {
        fprintf(stderr, "prewarmd: %s\n", err);
        return 2;
    }
    pw_log_set_level((enum pw_log_level)cfg.log_level);
    return pw_daemon_run(&cfg);
}
