/* cli.h — what prewarmctl's commands share: the invocation context (server, token, output
 * format), exit codes, one-line errors, option parsing helpers and the API calls. */
#ifndef PW_CLI_H
#define PW_CLI_H

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stddef.h>

#define PW_CLI_DEFAULT_SERVER "http://127.0.0.1:8080"

/* Exit codes: 0 done, 1 an error (server, connection, input), 2 a usage error. PW_CLI_HELP
 * means "help was printed, stop here": main turns it into 0. */
enum { PW_CLI_OK = 0, PW_CLI_ERR = 1, PW_CLI_USAGE = 2, PW_CLI_HELP = 3 };

enum pw_cli_output { PW_OUT_TABLE, PW_OUT_JSON, PW_OUT_NAMES };

struct pw_cli {
    const char *server_flag;   /* --server, or NULL */
    const char *token_flag;    /* --token, or NULL */
    char server[1024];         /* resolved by pw_cli_config_resolve */
    char token[1024];
    enum pw_cli_output out;
    int timeout_ms;
    char cmd[64];              /* "pool set": names the command in messages */
};

/* Options every command takes, to splice into its getopt_long table; ids above 255. */
enum { OPT_OUTPUT = 'o', OPT_HELP = 'h', OPT_SERVER = 1000, OPT_TOKEN, OPT_TIMEOUT, OPT_CMD_BASE = 1100 };
#define PW_CLI_COMMON_OPTS                                                                     \
    {"output", required_argument, NULL, OPT_OUTPUT}, {"help", no_argument, NULL, OPT_HELP},      \
        {"server", required_argument, NULL, OPT_SERVER}, {"token", required_argument, NULL, OPT_TOKEN}, \
        {"timeout", required_argument, NULL, OPT_TIMEOUT}
#define PW_CLI_COMMON_SHORT "o:h"
#define PW_CLI_COMMON_HELP                                                                       \
    "  -o, --output FMT   table (default) or json\n"                                             \
    "      --server URL   prewarmd's HTTP API (over $PREWARM_SERVER, the config file, " PW_CLI_DEFAULT_SERVER ")\n" \
    "      --token T      bearer token (over $PREWARM_TOKEN and the config file)\n"              \
    "      --timeout S    seconds to wait for an answer (default 10)\n"                          \
    "  -h, --help         this help\n"

/* pw_cli_usage prints "prewarmctl: <message>; try 'prewarmctl <cmd> --help'" on stderr and
 * returns PW_CLI_USAGE. */
int pw_cli_usage(const struct pw_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* pw_cli_fail prints "prewarmctl: <message>" on stderr and returns PW_CLI_ERR. */
int pw_cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* What pw_cli_common_opt returns besides an exit code. */
enum { PW_CLI_NOT_MINE = -1, PW_CLI_GO_ON = -2 };

/* pw_cli_common_opt handles an option of PW_CLI_COMMON_OPTS or a getopt error (opt is what
 * getopt_long returned with an optstring starting with ':'). Returns PW_CLI_GO_ON when handled,
 * PW_CLI_NOT_MINE when opt is none of them, or a code to return at once (help printed on
 * stdout: PW_CLI_HELP; usage error printed: PW_CLI_USAGE). help is the command's whole help text. */
int pw_cli_common_opt(struct pw_cli *c, int opt, const char *arg, char *const argv[], const char *help);

/* pw_cli_parse_int / pw_cli_parse_double parse a flag's value, or return 0 after printing a
 * usage error (the caller returns PW_CLI_USAGE). */
int pw_cli_parse_int(const struct pw_cli *c, const char *flag, const char *s, long long min, long long max, long long *out);
int pw_cli_parse_double(const struct pw_cli *c, const char *flag, const char *s, double *out);

/* pw_cli_config_resolve fills c->server and c->token: flags over $PREWARM_SERVER and
 * $PREWARM_TOKEN over the config file ($PREWARM_CONFIG or ~/.config/prewarm/prewarmctl.json)
 * over the default. Returns PW_CLI_OK or PW_CLI_ERR after printing why. */
int pw_cli_config_resolve(struct pw_cli *c);

/* pw_cli_call sends one request and parses the JSON answer. Returns the HTTP status with
 * *out the parsed JSON (caller frees with cJSON_Delete; NULL for an empty or non-JSON body), or
 * -1 after writing a one-line reason into err (connection refused, timeout, ...). */
int pw_cli_call(const struct pw_cli *c, const char *method, const char *path, const char *body, cJSON **out,
                char *err, size_t errlen);

/* pw_cli_api is pw_cli_call for commands: a 2xx answer returns PW_CLI_OK with *out set;
 * anything else prints the one-line error ("prewarmctl: <message> (<code>, HTTP <status>)")
 * and returns PW_CLI_ERR with *out NULL. */
int pw_cli_api(const struct pw_cli *c, const char *method, const char *path, const char *body, cJSON **out);

/* pw_cli_print_json prints j indented, keys in the order the server sent them. */
void pw_cli_print_json(const cJSON *j);

/* Small accessors that tolerate missing keys: "" / 0 / NULL. */
const char *pw_cli_str(const cJSON *o, const char *key);
double pw_cli_num(const cJSON *o, const char *key);
int pw_cli_bool(const cJSON *o, const char *key);
/* pw_cli_fmt formats a JSON value for a table cell into buf (numbers shortest, lists joined
 * with ",", null and missing as "-"). */
const char *pw_cli_fmt(const cJSON *v, char *buf, size_t size);

/* Commands: argc/argv start at the verb's arguments (argv[0] is the verb). */
int pw_cmd_functions(struct pw_cli *c, int argc, char **argv);
int pw_cmd_pool(struct pw_cli *c, int argc, char **argv);
int pw_cmd_hosts(struct pw_cli *c, int argc, char **argv);
int pw_cmd_forecast(struct pw_cli *c, int argc, char **argv);
int pw_cmd_model(struct pw_cli *c, int argc, char **argv);
int pw_cmd_top(struct pw_cli *c, int argc, char **argv);
int pw_cmd_completion(struct pw_cli *c, int argc, char **argv);

#endif
