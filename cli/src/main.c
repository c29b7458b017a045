/* main.c — prewarmctl: noun-verb commands over prewarmd's HTTP API. Global flags, dispatch to
 * the nouns, and the option and error conventions every command follows (docs/cli.md). */
#include "cli.h"

#include "pw/util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: prewarmctl [flags] NOUN VERB [ARGS] [flags]\n"
    "\n"
    "Commands:\n"
    "  functions list                      every function\n"
    "  functions get FN                    one function\n"
    "  functions put FN [--image I] [--memory-mb N] [--vcpus N] [pool and placement flags]\n"
    "  functions put [FN] --file SPEC.json (- for stdin)\n"
    "  functions delete FN                 delete a function and its pool\n"
    "  pool get FN                         a function's pool: policy, sizes, counters\n"
    "  pool set FN [--policy P] [--min N] [--max N] [--keepalive D] [--quantile Q]\n"
    "  hosts list                          every host\n"
    "  hosts get ID                        one host\n"
    "  hosts drain ID | hosts undrain ID   stop / resume placing VMs on a host\n"
    "  forecast get FN                     the latest forecast and its top feature contributions\n"
    "  model list | model get VERSION      the predictor's model registry\n"
    "  model train [--activate] [--wait]   train a model now from recent invocations\n"
    "  model activate VERSION              make a registered model the one in use\n"
    "  top [--interval S] [--once]         a live view of pools and hosts\n"
    "  completion bash                     a bash completion script\n"
    "\n"
    "Flags (before or after the command):\n" PW_CLI_COMMON_HELP "\n"
    "Exit status: 0 ok, 1 error, 2 usage error. 'prewarmctl NOUN VERB --help' for each command.\n";

int pw_cli_usage(const struct pw_cli *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "prewarmctl: %s; try 'prewarmctl %s%s--help'\n", msg, c->cmd, c->cmd[0] ? " " : "");
    return PW_CLI_USAGE;
}

int pw_cli_fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* One line, whatever the server or the system said. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fprintf(stderr, "prewarmctl: %s\n", msg);
    return PW_CLI_ERR;
}

int pw_cli_parse_int(const struct pw_cli *c, const char *flag, const char *s, long long min, long long max,
                     long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        pw_cli_usage(c, "%s must be an integer in %lld..%lld, not \"%s\"", flag, min, max, s);
        return 0;
    }
    *out = v;
    return 1;
}

int pw_cli_parse_double(const struct pw_cli *c, const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v)) {
        pw_cli_usage(c, "%s must be a number, not \"%s\"", flag, s);
        return 0;
    }
    *out = v;
    return 1;
}

int pw_cli_common_opt(struct pw_cli *c, int opt, const char *arg, char *const argv[], const char *help)
{
    double secs;
    switch (opt) {
    case OPT_OUTPUT:
        if (strcmp(arg, "table") == 0)
            c->out = PW_OUT_TABLE;
        else if (strcmp(arg, "json") == 0)
            c->out = PW_OUT_JSON;
        else if (strcmp(arg, "names") == 0)
            c->out = PW_OUT_NAMES;
        else
            return pw_cli_usage(c, "-o must be table or json (or names for a list), not \"%s\"", arg);
        return PW_CLI_GO_ON;
    case OPT_HELP:
        fputs(help, stdout);
        return PW_CLI_HELP;
    case OPT_SERVER:
        c->server_flag = arg;
        return PW_CLI_GO_ON;
    case OPT_TOKEN:
        c->token_flag = arg;
        return PW_CLI_GO_ON;
    case OPT_TIMEOUT:
        if (!pw_cli_parse_double(c, "--timeout", arg, &secs))
            return PW_CLI_USAGE;
        if (secs <= 0 || secs > 3600)
            return pw_cli_usage(c, "--timeout must be in (0, 3600] seconds");
        c->timeout_ms = (int)ceil(secs * 1000);
        return PW_CLI_GO_ON;
    case ':':
    case '?': {
        /* A long option is named by its word (glibc sets optopt to its value), a short one by
         * its letter. */
        const char *w = optind > 0 ? argv[optind - 1] : "";
        char name[64];
        if (strncmp(w, "--", 2) == 0)
            snprintf(name, sizeof(name), "%.*s", (int)strcspn(w, "="), w);
        else
            snprintf(name, sizeof(name), "-%c", optopt > 0 && optopt < 128 ? optopt : '?');
        if (opt == ':')
            return pw_cli_usage(c, "option '%s' needs a value", name);
        if (strchr(w, '=') != NULL && strncmp(w, "--", 2) == 0 && optopt != 0)
            return pw_cli_usage(c, "option '%s' takes no value", name);
        return pw_cli_usage(c, "unknown option '%s'", name);
    }
    default:
        return PW_CLI_NOT_MINE;
    }
}

struct noun {
    const char *name, *alias;
    int (*run)(struct pw_cli *, int, char **);
};

static const struct noun nouns[] = {
    {"functions", "function", pw_cmd_functions}, {"pool", "pools", pw_cmd_pool},
    {"hosts", "host", pw_cmd_hosts},             {"forecast", "forecasts", pw_cmd_forecast},
    {"model", "models", pw_cmd_model},          {"top", NULL, pw_cmd_top},
    {"completion", NULL, pw_cmd_completion},
};

int main(int argc, char **argv)
{
    struct pw_cli c;
    memset(&c, 0, sizeof(c));
    c.timeout_ms = 10000;
    static const struct option opts[] = {PW_CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    opterr = 0;
    int o;
    /* '+': stop at the noun; the command parses the rest, flags anywhere. */
    while ((o = getopt_long(argc, argv, "+:" PW_CLI_COMMON_SHORT, opts, NULL)) != -1) {
        int rv = pw_cli_common_opt(&c, o, optarg, argv, usage_text);
        if (rv == PW_CLI_HELP)
            return PW_CLI_OK;
        if (rv != PW_CLI_GO_ON)
            return rv == PW_CLI_NOT_MINE ? PW_CLI_USAGE : rv;
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return PW_CLI_USAGE;
    }
    const char *noun = argv[optind];
    if (strcmp(noun, "help") == 0) {
        fputs(usage_text, stdout);
        return PW_CLI_OK;
    }
    for (size_t i = 0; i < PW_ARRAY_LEN(nouns); i++) {
        if (strcmp(noun, nouns[i].name) == 0 || (nouns[i].alias && strcmp(noun, nouns[i].alias) == 0)) {
            pw_strlcpy(c.cmd, nouns[i].name, sizeof(c.cmd));
            int rv = nouns[i].run(&c, argc - optind, argv + optind);
            return rv == PW_CLI_HELP ? PW_CLI_OK : rv;
        }
    }
    return pw_cli_usage(&c, "unknown command '%s'", noun);
}
