/* cmd.h — plumbing shared by prewarmctl's command files: verb dispatch, option loops and the
 * common table printers. */
#ifndef PW_CLI_CMD_H
#define PW_CLI_CMD_H

#include "cli.h"

struct pw_verb {
    const char *name;
    int (*run)(struct pw_cli *c, int argc, char **argv); /* argv[0] is the verb */
};

/* pw_cli_dispatch runs the verb argv[1] of the noun c->cmd (appending it to c->cmd), prints
 * help for -h/--help/help, or returns a usage error. */
int pw_cli_dispatch(struct pw_cli *c, int argc, char **argv, const struct pw_verb *verbs, size_t n,
                    const char *help);
/* pw_cli_next_opt returns 1 with the next command-specific option in *opt (optarg set), 0 at
 * the end of the options, or -1 with an exit code in *rv (help or a usage error). Set optind = 0
 * before the first call. */
int pw_cli_next_opt(struct pw_cli *c, int argc, char **argv, const struct option *opts, const char *help, int *opt,
                    int *rv);
/* pw_cli_args checks that between min and max positional arguments remain at optind. */
int pw_cli_args(struct pw_cli *c, int argc, char **argv, int min, int max, const char *what);
/* pw_cli_print_object prints o as FIELD VALUE rows with dotted keys, leaving out key skip. */
void pw_cli_print_object(const cJSON *o, const char *skip);
/* pw_cli_print_hosts prints an array of host objects as the hosts table. */
void pw_cli_print_hosts(const cJSON *arr);
/* pw_cli_host_draining says who drains host h: "operator", "agent", "operator+agent" or "no". */
const char *pw_cli_host_draining(const cJSON *h);

#endif
