/* commands.c — prewarmctl's nouns over the API: functions, pool, hosts, forecast and model. Each verb
 * parses its flags with getopt_long, makes one or two requests and prints the answer as a table
 * or as the server's JSON. */
#include "cli.h"

#include "cmd.h"
#include "table.h"

#include "pw/error.h"
#include "pw/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- shared verb plumbing ---- */

int pw_cli_dispatch(struct pw_cli *c, int argc, char **argv, const struct pw_verb *verbs, size_t n,
                    const char *help)
{
    if (argc < 2)
        return pw_cli_usage(c, "'%s' needs a verb", c->cmd);
    const char *v = argv[1];
    if (strcmp(v, "-h") == 0 || strcmp(v, "--help") == 0 || strcmp(v, "help") == 0) {
        fputs(help, stdout);
        return PW_CLI_OK;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v, verbs[i].name) == 0) {
            size_t len = strlen(c->cmd);
            snprintf(c->cmd + len, sizeof(c->cmd) - len, " %s", v);
            return verbs[i].run(c, argc - 1, argv + 1);
        }
    }
    return pw_cli_usage(c, "unknown verb '%s' for '%s'", v, c->cmd);
}

int pw_cli_next_opt(struct pw_cli *c, int argc, char **argv, const struct option *opts, const char *help, int *opt,
                    int *rv)
{
    for (;;) {
        int o = getopt_long(argc, argv, ":" PW_CLI_COMMON_SHORT, opts, NULL);
        if (o == -1)
            return 0;
        int r = pw_cli_common_opt(c, o, optarg, argv, help);
        if (r == PW_CLI_GO_ON)
            continue;
        if (r == PW_CLI_NOT_MINE) {
            *opt = o;
            return 1;
        }
        *rv = r;
        return -1;
    }
}

int pw_cli_args(struct pw_cli *c, int argc, char **argv, int min, int max, const char *what)
{
    int n = argc - optind;
    if (n < min)
        return pw_cli_usage(c, "missing %s", what);
    if (n > max)
        return pw_cli_usage(c, "unexpected argument '%s'", argv[optind + max]);
    return PW_CLI_OK;
}

/* name_arg checks a function or host name taken from the command line. */
static int name_arg(struct pw_cli *c, const char *kind, const char *s)
{
    if (!pw_name_valid(s))
        return pw_cli_usage(c, "invalid %s name '%s' (1-63 characters of [A-Za-z0-9._-])", kind, s);
    return PW_CLI_OK;
}

/* A verb with no flags of its own and exactly nargs positional names. */
static int simple_args(struct pw_cli *c, int argc, char **argv, int nargs, const char *kind, const char *help)
{
    static const struct option opts[] = {PW_CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    int o, rv = PW_CLI_OK;
    optind = 0;
    int r = pw_cli_next_opt(c, argc, argv, opts, help, &o, &rv);
    if (r < 0)
        return rv;
    if (r > 0)
        return pw_cli_usage(c, "unexpected option");
    if ((rv = pw_cli_args(c, argc, argv, nargs, nargs, kind)) != PW_CLI_OK)
        return rv;
    if (nargs > 0 && (rv = name_arg(c, kind, argv[optind])) != PW_CLI_OK)
        return rv;
    return pw_cli_config_resolve(c);
}

/* flatten adds one FIELD VALUE row per scalar of o, with dotted keys; skip names a top-level
 * key printed elsewhere. */
static void flatten(struct pw_table *t, const cJSON *o, const char *prefix, const char *skip)
{
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, o) {
        char key[256], val[1024];
        if (cJSON_IsArray(o))
            snprintf(key, sizeof(key), "%s[%d]", prefix, i++);
        else if (skip != NULL && prefix[0] == '\0' && strcmp(it->string, skip) == 0)
            continue;
        else
            snprintf(key, sizeof(key), "%s%s%s", prefix, prefix[0] ? "." : "", it->string);
        int nested = cJSON_IsObject(it) || (cJSON_IsArray(it) && cJSON_GetArraySize(it) > 0 &&
                                            (cJSON_IsObject(it->child) || cJSON_IsArray(it->child)));
        if (nested) {
            flatten(t, it, key, NULL);
            continue;
        }
        const char *row[2] = {key, pw_cli_fmt(it, val, sizeof(val))};
        pw_table_row(t, row);
    }
}

void pw_cli_print_object(const cJSON *o, const char *skip)
{
    static const char *const hdr[] = {"FIELD", "VALUE"};
    struct pw_table t;
    pw_table_init(&t, 2, hdr);
    flatten(&t, o, "", skip);
    pw_table_print(&t, stdout);
    pw_table_fini(&t);
}

/* print_rows prints arr (an array of objects) with one column per key in cols, cells formatted
 * by pw_cli_fmt, or by fmt when it is non-NULL and returns non-NULL. */
typedef const char *(*cell_fn)(const cJSON *row, const char *col, char *buf, size_t size);
static void print_rows(const cJSON *arr, const char *const *hdr, const char *const *cols, int ncols, cell_fn fmt)
{
    struct pw_table t;
    pw_table_init(&t, ncols, hdr);
    const cJSON *row;
    cJSON_ArrayForEach(row, arr) {
        char bufs[16][1024];
        const char *cells[16];
        for (int i = 0; i < ncols && i < 16; i++) {
            cells[i] = fmt ? fmt(row, cols[i], bufs[i], sizeof(bufs[i])) : NULL;
            if (cells[i] == NULL)
                cells[i] = pw_cli_fmt(cJSON_GetObjectItemCaseSensitive(row, cols[i]), bufs[i], sizeof(bufs[i]));
        }
        pw_table_row(&t, cells);
    }
    pw_table_print(&t, stdout);
    pw_table_fini(&t);
}

/* ---- functions ---- */

static const char functions_help[] =
    "usage: prewarmctl functions list|get|put|delete ...\n"
    "\n"
    "  functions list [-o table|json|names]\n"
    "  functions get FN\n"
    "  functions put FN [--image I] [--memory-mb N] [--vcpus N]\n"
    "                   [--policy fixed|keepalive|predictive] [--min N] [--max N] [--keepalive D] [--quantile Q]\n"
    "                   [--clouds a,b] [--regions a,b] [--zones a,b] [--max-host-share X] [--max-zone-share X]\n"
    "  functions put [FN] --file SPEC.json   (- reads stdin; flags override the file)\n"
    "  functions delete FN\n"
    "\n"
    "A put creates the function or changes the fields given; the others keep their values (a new\n"
    "function: image = its name, 128 MB, 1 vCPU). Any placement flag replaces the whole placement.\n"
    "Durations: 500ms, 30s, 10m, 2h or seconds.\n"
    "\n"
    "Flags:\n" PW_CLI_COMMON_HELP;

static const char *const fn_hdr[] = {"NAME", "IMAGE", "MEMORY_MB", "VCPUS", "POLICY", "MIN", "MAX", "KEEPALIVE_MS",
                                     "QUANTILE", "PLACEMENT"};
static const char *const fn_cols[] = {"name", "image", "memory_mb", "vcpus", "policy", "min", "max", "keepalive_ms",
                                      "quantile", "placement"};

static const char *fn_cell(const cJSON *row, const char *col, char *buf, size_t size)
{
    const cJSON *pool = cJSON_GetObjectItemCaseSensitive(row, "pool");
    if (strcmp(col, "placement") == 0) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(row, "placement");
        size_t len = 0;
        const char *keys[] = {"clouds", "regions", "zones", "max_host_share", "max_zone_share"};
        buf[0] = '\0';
        for (size_t i = 0; i < PW_ARRAY_LEN(keys); i++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, keys[i]);
            if (v == NULL || (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 0) || (cJSON_IsNumber(v) && v->valuedouble == 0))
                continue;
            char one[1024];
            pw_cli_fmt(v, one, sizeof(one));
            if (len < size)
                len += (size_t)snprintf(buf + len, size - len, "%s%s=%s", len ? ";" : "", keys[i], one);
        }
        return buf[0] ? buf : "-";
    }
    if (cJSON_GetObjectItemCaseSensitive(row, col) == NULL && pool != NULL)
        return pw_cli_fmt(cJSON_GetObjectItemCaseSensitive(pool, col), buf, size);
    return NULL;
}

static int functions_list(struct pw_cli *c, int argc, char **argv)
{
    int rv = simple_args(c, argc, argv, 0, "", functions_help);
    if (rv != PW_CLI_OK)
        return rv;
    cJSON *j;
    if ((rv = pw_cli_api(c, "GET", "/v1/functions", NULL, &j)) != PW_CLI_OK)
        return rv;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "functions"), *f;
    if (c->out == PW_OUT_JSON) {
        pw_cli_print_json(j);
    } else if (c->out == PW_OUT_NAMES) {
        cJSON_ArrayForEach(f, arr) printf("%s\n", pw_cli_str(f, "name"));
    } else {
        print_rows(arr, fn_hdr, fn_cols, (int)PW_ARRAY_LEN(fn_cols), fn_cell);
    }
    cJSON_Delete(j);
    return PW_CLI_OK;
}

/* show prints a single object answer (table: FIELD VALUE rows) and frees it. */
static int show(struct pw_cli *c, cJSON *j)
{
    if (c->out == PW_OUT_JSON)
        pw_cli_print_json(j);
    else
        pw_cli_print_object(j, NULL);
    cJSON_Delete(j);
    return PW_CLI_OK;
}

/* name_request takes the one argument (a function or host name), sends method to
 * prefix/NAME/suffix and hands the answer to *out (the caller deletes it). */
static int name_request(struct pw_cli *c, int argc, char **argv, const char *what, const char *help,
                        const char *method, const char *prefix, const char *suffix, cJSON **out)
{
    int rv = simple_args(c, argc, argv, 1, what, help);
    if (rv != PW_CLI_OK)
        return rv;
    char path[256];
    snprintf(path, sizeof(path), "%s/%s%s", prefix, argv[optind], suffix);
    return pw_cli_api(c, method, path, NULL, out);
}

static int functions_get(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "function", functions_help, "GET", "/v1/functions", "", &j);
    if (rv != PW_CLI_OK)
        return rv;
    return show(c, j);
}

static int functions_delete(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "function", functions_help, "DELETE", "/v1/functions", "", &j);
    if (rv != PW_CLI_OK)
        return rv;
    if (c->out == PW_OUT_JSON)
        pw_cli_print_json(j);
    else
        printf("deleted function %s\n", pw_cli_str(j, "deleted"));
    cJSON_Delete(j);
    return PW_CLI_OK;
}

/* Flags of functions put and pool set. */
enum {
    F_IMAGE = OPT_CMD_BASE, F_MEMORY, F_VCPUS, F_POLICY, F_MIN, F_MAX, F_KEEPALIVE, F_QUANTILE, F_CLOUDS, F_REGIONS,
    F_ZONES, F_HOST_SHARE, F_ZONE_SHARE, F_FILE
};
#define POOL_OPTS                                                                                             \
    {"policy", required_argument, NULL, F_POLICY}, {"min", required_argument, NULL, F_MIN},                   \
        {"max", required_argument, NULL, F_MAX}, {"keepalive", required_argument, NULL, F_KEEPALIVE},           \
        {"quantile", required_argument, NULL, F_QUANTILE}

/* replace sets obj[key] = v, replacing what was there. */
static void replace(cJSON *obj, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(obj, key) != NULL)
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static cJSON *child_obj(cJSON *obj, const char *key)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsObject(v)) {
        v = cJSON_CreateObject();
        replace(obj, key, v);
    }
    return v;
}

/* pool_flag applies one pool flag to the pool object; returns PW_CLI_OK or a usage error. */
static int pool_flag(struct pw_cli *c, int o, const char *arg, cJSON *pool)
{
    long long n;
    double q;
    int64_t ms;
    switch (o) {
    case F_POLICY:
        if (strcmp(arg, "fixed") != 0 && strcmp(arg, "keepalive") != 0 && strcmp(arg, "predictive") != 0)
            return pw_cli_usage(c, "--policy must be fixed, keepalive or predictive, not \"%s\"", arg);
        replace(pool, "policy", cJSON_CreateString(arg));
        return PW_CLI_OK;
    case F_MIN:
    case F_MAX:
        if (!pw_cli_parse_int(c, o == F_MIN ? "--min" : "--max", arg, 0, 1000000, &n))
            return PW_CLI_USAGE;
        replace(pool, o == F_MIN ? "min" : "max", cJSON_CreateNumber((double)n));
        return PW_CLI_OK;
    case F_KEEPALIVE:
        if (pw_parse_duration_ms(arg, &ms) != PW_OK)
            return pw_cli_usage(c, "--keepalive must be a duration (500ms, 30s, 10m, 2h), not \"%s\"", arg);
        replace(pool, "keepalive_ms", cJSON_CreateNumber((double)ms));
        return PW_CLI_OK;
    case F_QUANTILE:
        if (!pw_cli_parse_double(c, "--quantile", arg, &q))
            return PW_CLI_USAGE;
        replace(pool, "quantile", cJSON_CreateNumber(q));
        return PW_CLI_OK;
    default:
        return pw_cli_usage(c, "unexpected option");
    }
}

static cJSON *name_list(const char *s)
{
    cJSON *a = cJSON_CreateArray();
    char *copy = pw_xstrdup(s), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save))
        if (t[0] != '\0')
            cJSON_AddItemToArray(a, cJSON_CreateString(t));
    free(copy);
    return a;
}

/* read_spec reads a JSON object from path ("-": stdin) into *out. */
static int read_spec(const char *path, cJSON **out)
{
    *out = NULL;
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (f == NULL)
        return pw_cli_fail("cannot read %s: %s", path, strerror(errno));
    struct pw_buf b;
    pw_buf_init(&b, 1 << 20);
    char tmp[8192];
    size_t n;
    int rv = PW_CLI_OK;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) {
        if (pw_buf_add(&b, tmp, n) != PW_OK) {
            rv = pw_cli_fail("%s is larger than 1 MiB", path);
            break;
        }
    }
    if (rv == PW_CLI_OK && ferror(f))
        rv = pw_cli_fail("cannot read %s", path);
    if (f != stdin)
        fclose(f);
    if (rv == PW_CLI_OK) {
        *out = cJSON_ParseWithLength(b.data ? b.data : "", b.len);
        if (!cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            rv = pw_cli_fail("%s: not a JSON object", strcmp(path, "-") == 0 ? "stdin" : path);
        }
    }
    pw_buf_fini(&b);
    return rv;
}

static int functions_put(struct pw_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"image", required_argument, NULL, F_IMAGE},
                                         {"memory-mb", required_argument, NULL, F_MEMORY},
                                         {"vcpus", required_argument, NULL, F_VCPUS},
                                         POOL_OPTS,
                                         {"clouds", required_argument, NULL, F_CLOUDS},
                                         {"regions", required_argument, NULL, F_REGIONS},
                                         {"zones", required_argument, NULL, F_ZONES},
                                         {"max-host-share", required_argument, NULL, F_HOST_SHARE},
                                         {"max-zone-share", required_argument, NULL, F_ZONE_SHARE},
                                         {"file", required_argument, NULL, F_FILE},
                                         PW_CLI_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    cJSON *flags = cJSON_CreateObject(); /* what the flags set, merged over the file */
    const char *file = NULL;
    int o, rv = PW_CLI_OK, r;
    long long n;
    double x;
    optind = 0;
    while ((r = pw_cli_next_opt(c, argc, argv, opts, functions_help, &o, &rv)) > 0) {
        switch (o) {
        case F_IMAGE:
            replace(flags, "image", cJSON_CreateString(optarg));
            break;
        case F_MEMORY:
        case F_VCPUS:
            if (!pw_cli_parse_int(c, o == F_MEMORY ? "--memory-mb" : "--vcpus", optarg, 1, 1048576, &n))
                rv = PW_CLI_USAGE;
            else
                replace(flags, o == F_MEMORY ? "memory_mb" : "vcpus", cJSON_CreateNumber((double)n));
            break;
        case F_CLOUDS:
        case F_REGIONS:
        case F_ZONES:
            replace(child_obj(flags, "placement"), o == F_CLOUDS ? "clouds" : o == F_REGIONS ? "regions" : "zones",
                    name_list(optarg));
            break;
        case F_HOST_SHARE:
        case F_ZONE_SHARE:
            if (!pw_cli_parse_double(c, o == F_HOST_SHARE ? "--max-host-share" : "--max-zone-share", optarg, &x))
                rv = PW_CLI_USAGE;
            else
                replace(child_obj(flags, "placement"), o == F_HOST_SHARE ? "max_host_share" : "max_zone_share",
                        cJSON_CreateNumber(x));
            break;
        case F_FILE:
            file = optarg;
            break;
        default:
            rv = pool_flag(c, o, optarg, child_obj(flags, "pool"));
            break;
        }
        if (rv != PW_CLI_OK)
            break;
    }
    if (r < 0 || rv != PW_CLI_OK)
        goto out;
    if ((rv = pw_cli_args(c, argc, argv, file ? 0 : 1, 1, "function name")) != PW_CLI_OK)
        goto out;
    cJSON *spec = NULL;
    if (file != NULL && (rv = read_spec(file, &spec)) != PW_CLI_OK)
        goto out;
    if (spec == NULL)
        spec = cJSON_CreateObject();
    /* The name: the argument, else the file's "name"; the two must agree. */
    const char *fname = pw_cli_str(spec, "name");
    const char *name = optind < argc ? argv[optind] : fname;
    if (name[0] == '\0') {
        rv = pw_cli_usage(c, "missing function name (an argument or \"name\" in the file)");
    } else if (fname[0] != '\0' && strcmp(fname, name) != 0) {
        rv = pw_cli_usage(c, "the file names function '%s', the argument '%s'", fname, name);
    } else if ((rv = name_arg(c, "function", name)) == PW_CLI_OK) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/functions/%s", name);
        cJSON_DeleteItemFromObjectCaseSensitive(spec, "name");
        /* Flags over the file; pool and placement merge key by key. */
        cJSON *it;
        cJSON_ArrayForEach(it, flags) {
            if (cJSON_IsObject(it)) {
                cJSON *dst = child_obj(spec, it->string), *sub;
                cJSON_ArrayForEach(sub, it) replace(dst, sub->string, cJSON_Duplicate(sub, 1));
            } else {
                replace(spec, it->string, cJSON_Duplicate(it, 1));
            }
        }
        char *body = cJSON_PrintUnformatted(spec);
        cJSON *j = NULL;
        if ((rv = pw_cli_config_resolve(c)) == PW_CLI_OK && (rv = pw_cli_api(c, "PUT", path, body, &j)) == PW_CLI_OK)
            rv = show(c, j);
        cJSON_free(body);
    }
    cJSON_Delete(spec);
out:
    cJSON_Delete(flags);
    return rv;
}

static const struct pw_verb function_verbs[] = {
    {"list", functions_list}, {"get", functions_get}, {"put", functions_put}, {"delete", functions_delete}};

int pw_cmd_functions(struct pw_cli *c, int argc, char **argv)
{
    return pw_cli_dispatch(c, argc, argv, function_verbs, PW_ARRAY_LEN(function_verbs), functions_help);
}

/* ---- pool ---- */

static const char pool_help[] =
    "usage: prewarmctl pool get|set FN ...\n"
    "\n"
    "  pool get FN\n"
    "  pool set FN [--policy fixed|keepalive|predictive] [--min N] [--max N] [--keepalive D] [--quantile Q]\n"
    "\n"
    "pool set changes only the fields given (at least one) and prints the pool. Durations: 500ms,\n"
    "30s, 10m, 2h or seconds. The quantile (predictive pools) is in [0.5, 1).\n"
    "\n"
    "Flags:\n" PW_CLI_COMMON_HELP;

static int pool_get(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "function", pool_help, "GET", "/v1/functions", "/pool", &j);
    if (rv != PW_CLI_OK)
        return rv;
    return show(c, j);
}

static int pool_set(struct pw_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {POOL_OPTS, PW_CLI_COMMON_OPTS, {NULL, 0, NULL, 0}};
    cJSON *pool = cJSON_CreateObject();
    int o, rv = PW_CLI_OK, r;
    optind = 0;
    while ((r = pw_cli_next_opt(c, argc, argv, opts, pool_help, &o, &rv)) > 0)
        if ((rv = pool_flag(c, o, optarg, pool)) != PW_CLI_OK)
            break;
    if (r < 0 || rv != PW_CLI_OK)
        goto out;
    if ((rv = pw_cli_args(c, argc, argv, 1, 1, "function name")) != PW_CLI_OK ||
        (rv = name_arg(c, "function", argv[optind])) != PW_CLI_OK)
        goto out;
    if (pool->child == NULL) {
        rv = pw_cli_usage(c, "nothing to set: give --policy, --min, --max, --keepalive or --quantile");
        goto out;
    }
    char path[128];
    snprintf(path, sizeof(path), "/v1/functions/%s/pool", argv[optind]);
    char *body = cJSON_PrintUnformatted(pool);
    cJSON *j = NULL;
    if ((rv = pw_cli_config_resolve(c)) == PW_CLI_OK && (rv = pw_cli_api(c, "PUT", path, body, &j)) == PW_CLI_OK)
        rv = show(c, j);
    cJSON_free(body);
out:
    cJSON_Delete(pool);
    return rv;
}

static const struct pw_verb pool_verbs[] = {{"get", pool_get}, {"set", pool_set}};

int pw_cmd_pool(struct pw_cli *c, int argc, char **argv)
{
    return pw_cli_dispatch(c, argc, argv, pool_verbs, PW_ARRAY_LEN(pool_verbs), pool_help);
}

/* ---- hosts ---- */

static const char hosts_help[] =
    "usage: prewarmctl hosts list|get|drain|undrain ...\n"
    "\n"
    "  hosts list [-o table|json|names]\n"
    "  hosts get ID\n"
    "  hosts drain ID      no new VMs on the host; its VMs are replaced elsewhere\n"
    "  hosts undrain ID    place VMs on the host again\n"
    "\n"
    "DRAINING is 'operator' (hosts drain), 'agent' (the agent's own) or both. HEALTH is 'ok',\n"
    "or 'cordoned:REASON' / 'probation:REASON' when self-healing keeps new VMs off the host\n"
    "(REASON restore_failures or restore_slow).\n"
    "\n"
    "Flags:\n" PW_CLI_COMMON_HELP;

static const char *const host_hdr[] = {"ID",   "STATE",    "DRIVER", "CLOUD",     "ZONE",
                                       "VMS",  "LOAD",     "DRAINING", "HEALTH", "SNAPSHOTS"};
static const char *const host_cols[] = {"id",  "state", "driver",   "cloud",  "zone",
                                        "vms", "load",  "draining", "health", "snapshots"};

const char *pw_cli_host_draining(const cJSON *h)
{
    int op = pw_cli_bool(h, "draining"), ag = pw_cli_bool(h, "agent_draining");
    return op && ag ? "operator+agent" : op ? "operator" : ag ? "agent" : "no";
}

static const char *host_cell(const cJSON *row, const char *col, char *buf, size_t size)
{
    if (strcmp(col, "draining") == 0)
        return pw_cli_host_draining(row);
    if (strcmp(col, "health") == 0) {
        /* Self-healing: cordoned hosts with the reason; "probation" while proving themselves. */
        if (!pw_cli_bool(row, "cordoned"))
            return "ok";
        snprintf(buf, size, "%s:%s", pw_cli_bool(row, "cordon_probation") ? "probation" : "cordoned",
                 pw_cli_str(row, "cordon_reason"));
        return buf;
    }
    if (strcmp(col, "load") == 0) {
        snprintf(buf, size, "%.2f", pw_cli_num(row, "load"));
        return buf;
    }
    return NULL;
}

void pw_cli_print_hosts(const cJSON *arr)
{
    print_rows(arr, host_hdr, host_cols, (int)PW_ARRAY_LEN(host_cols), host_cell);
}

static int hosts_list(struct pw_cli *c, int argc, char **argv)
{
    int rv = simple_args(c, argc, argv, 0, "", hosts_help);
    if (rv != PW_CLI_OK)
        return rv;
    cJSON *j;
    if ((rv = pw_cli_api(c, "GET", "/v1/hosts", NULL, &j)) != PW_CLI_OK)
        return rv;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "hosts"), *h;
    if (c->out == PW_OUT_JSON)
        pw_cli_print_json(j);
    else if (c->out == PW_OUT_NAMES)
        cJSON_ArrayForEach(h, arr) printf("%s\n", pw_cli_str(h, "id"));
    else
        pw_cli_print_hosts(arr);
    cJSON_Delete(j);
    return PW_CLI_OK;
}

static int hosts_get(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "host", hosts_help, "GET", "/v1/hosts", "", &j);
    if (rv != PW_CLI_OK)
        return rv;
    return show(c, j);
}

static int hosts_drain_verb(struct pw_cli *c, int argc, char **argv, const char *verb)
{
    char suffix[32];
    snprintf(suffix, sizeof(suffix), "/%s", verb);
    cJSON *j;
    int rv = name_request(c, argc, argv, "host", hosts_help, "POST", "/v1/hosts", suffix, &j);
    if (rv != PW_CLI_OK)
        return rv;
    if (c->out == PW_OUT_JSON) {
        pw_cli_print_json(j);
    } else {
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemReferenceToArray(arr, j);
        pw_cli_print_hosts(arr);
        cJSON_Delete(arr);
    }
    cJSON_Delete(j);
    return PW_CLI_OK;
}

static int hosts_drain(struct pw_cli *c, int argc, char **argv)
{
    return hosts_drain_verb(c, argc, argv, "drain");
}

static int hosts_undrain(struct pw_cli *c, int argc, char **argv)
{
    return hosts_drain_verb(c, argc, argv, "undrain");
}

static const struct pw_verb host_verbs[] = {
    {"list", hosts_list}, {"get", hosts_get}, {"drain", hosts_drain}, {"undrain", hosts_undrain}};

int pw_cmd_hosts(struct pw_cli *c, int argc, char **argv)
{
    return pw_cli_dispatch(c, argc, argv, host_verbs, PW_ARRAY_LEN(host_verbs), hosts_help);
}

/* ---- forecast ---- */

static const char forecast_help[] =
    "usage: prewarmctl forecast get FN\n"
    "\n"
    "The latest forecast of a function: invocations per minute, the pool floor it set, the\n"
    "quantile and model, and the features that contributed most. A forecast is made each minute\n"
    "for functions with invocations; before the first one this fails with no_forecast_yet.\n"
    "\n"
    "Flags:\n" PW_CLI_COMMON_HELP;

static int forecast_get(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "function", forecast_help, "GET", "/v1/functions", "/forecast", &j);
    if (rv != PW_CLI_OK)
        return rv;
    if (c->out == PW_OUT_JSON) {
        pw_cli_print_json(j);
    } else {
        pw_cli_print_object(j, "contributions");
        const cJSON *contrib = cJSON_GetObjectItemCaseSensitive(j, "contributions");
        printf("\n");
        if (cJSON_GetArraySize(contrib) == 0) {
            printf("no feature contributions (no model loaded, or the model is busy retraining)\n");
        } else {
            static const char *const hdr[] = {"FEATURE", "VALUE", "CONTRIBUTION"};
            static const char *const cols[] = {"feature", "value", "contribution"};
            print_rows(contrib, hdr, cols, 3, NULL);
        }
    }
    cJSON_Delete(j);
    return PW_CLI_OK;
}

static const struct pw_verb forecast_verbs[] = {{"get", forecast_get}};

int pw_cmd_forecast(struct pw_cli *c, int argc, char **argv)
{
    return pw_cli_dispatch(c, argc, argv, forecast_verbs, PW_ARRAY_LEN(forecast_verbs), forecast_help);
}

/* ---- model ---- */

static const char model_help[] =
    "usage: prewarmctl model list|get|train|activate ...\n"
    "\n"
    "  model list [-o table|json|names]   the registry: every model, which is active, which is in use\n"
    "  model get VERSION\n"
    "  model train [--activate] [--wait]  train a model now from the last hours of invocations\n"
    "                                     (--retrain-minutes); --activate: use it when done;\n"
    "                                     --wait: wait for the training and print its outcome\n"
    "  model activate VERSION             check the model's file and make it the one in use\n"
    "\n"
    "Flags:\n" PW_CLI_COMMON_HELP;

static const char *const model_hdr[] = {"VERSION", "SOURCE", "ACTIVE", "IN-USE", "CREATED", "ROWS", "FUNCTIONS",
                                        "SHA256"};
static const char *const model_cols[] = {"version", "source", "active", "in_use", "created_at_ms", "rows",
                                         "functions", "sha256"};

static const char *model_cell(const cJSON *row, const char *col, char *buf, size_t size)
{
    if (strcmp(col, "active") == 0 || strcmp(col, "in_use") == 0)
        return pw_cli_bool(row, col) ? "yes" : "no";
    if (strcmp(col, "sha256") == 0) {
        snprintf(buf, size, "%.12s", pw_cli_str(row, col));
        return buf;
    }
    if (strcmp(col, "created_at_ms") == 0) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, col);
        if (!cJSON_IsNumber(v))
            return "-";
        time_t t = (time_t)(v->valuedouble / 1000.0);
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, size, "%Y-%m-%d %H:%M:%SZ", &tm);
        return buf;
    }
    if (strcmp(col, "rows") == 0 || strcmp(col, "functions") == 0) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(row, col);
        return cJSON_IsNumber(v) ? NULL : "-";
    }
    return NULL;
}

static int model_list(struct pw_cli *c, int argc, char **argv)
{
    int rv = simple_args(c, argc, argv, 0, "", model_help);
    if (rv != PW_CLI_OK)
        return rv;
    cJSON *j;
    if ((rv = pw_cli_api(c, "GET", "/v1/models", NULL, &j)) != PW_CLI_OK)
        return rv;
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "models"), *m;
    if (c->out == PW_OUT_JSON) {
        pw_cli_print_json(j);
    } else if (c->out == PW_OUT_NAMES) {
        cJSON_ArrayForEach(m, arr) printf("%s\n", pw_cli_str(m, "version"));
    } else {
        print_rows(arr, model_hdr, model_cols, (int)PW_ARRAY_LEN(model_cols), model_cell);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "training");
        const char *in_use = pw_cli_str(j, "in_use");
        printf("\nin use: %s; last training: %s", in_use[0] ? in_use : "(recent-rate heuristic, no model)",
               pw_cli_str(t, "state"));
        if (pw_cli_str(t, "version")[0] != '\0')
            printf(" (%s)", pw_cli_str(t, "version"));
        if (pw_cli_str(t, "message")[0] != '\0')
            printf(": %s", pw_cli_str(t, "message"));
        printf("\n");
    }
    cJSON_Delete(j);
    return PW_CLI_OK;
}

static int model_get(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "model version", model_help, "GET", "/v1/models", "", &j);
    if (rv != PW_CLI_OK)
        return rv;
    return show(c, j);
}

static int model_activate(struct pw_cli *c, int argc, char **argv)
{
    cJSON *j;
    int rv = name_request(c, argc, argv, "model version", model_help, "POST", "/v1/models", "/activate", &j);
    if (rv != PW_CLI_OK)
        return rv;
    return show(c, j);
}

enum { OPT_ACTIVATE = OPT_CMD_BASE, OPT_WAIT };

static int model_train(struct pw_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"activate", no_argument, NULL, OPT_ACTIVATE},
                                         {"wait", no_argument, NULL, OPT_WAIT},
                                         PW_CLI_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    int o, rv = PW_CLI_OK, r, activate = 0, wait = 0;
    optind = 0;
    while ((r = pw_cli_next_opt(c, argc, argv, opts, model_help, &o, &rv)) > 0)
        activate |= o == OPT_ACTIVATE, wait |= o == OPT_WAIT;
    if (r < 0)
        return rv;
    if ((rv = pw_cli_args(c, argc, argv, 0, 0, "")) != PW_CLI_OK || (rv = pw_cli_config_resolve(c)) != PW_CLI_OK)
        return rv;
    cJSON *j;
    if ((rv = pw_cli_api(c, "POST", "/v1/models/train", activate ? "{\"activate\":true}" : "{}", &j)) != PW_CLI_OK)
        return rv;
    if (!wait)
        return show(c, j);
    cJSON_Delete(j);
    /* Training takes seconds to minutes; poll the registry until it is no longer running. */
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 250 * 1000 * 1000};
        nanosleep(&ts, NULL);
        cJSON *all;
        if ((rv = pw_cli_api(c, "GET", "/v1/models", NULL, &all)) != PW_CLI_OK)
            return rv;
        cJSON *t = cJSON_DetachItemFromObjectCaseSensitive(all, "training");
        cJSON_Delete(all);
        const char *state = pw_cli_str(t, "state");
        if (strcmp(state, "running") == 0) {
            cJSON_Delete(t);
            continue;
        }
        int ok = strcmp(state, "succeeded") == 0;
        if (!ok && c->out != PW_OUT_JSON) {
            rv = pw_cli_fail("training failed: %s", pw_cli_str(t, "message"));
            cJSON_Delete(t);
            return rv;
        }
        show(c, t);
        return ok ? PW_CLI_OK : PW_CLI_ERR;
    }
}

static const struct pw_verb model_verbs[] = {
    {"list", model_list}, {"get", model_get}, {"train", model_train}, {"activate", model_activate}};

int pw_cmd_model(struct pw_cli *c, int argc, char **argv)
{
    return pw_cli_dispatch(c, argc, argv, model_verbs, PW_ARRAY_LEN(model_verbs), model_help);
}
