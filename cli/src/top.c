/* top.c — prewarmctl top: a refreshing view of every pool (idle, leased, restoring, target,
 * acquires, hit rate, cold starts, timeouts) and every host. Each frame is built in memory and
 * drawn with one write after clearing the screen; --once (or a stdout that is not a terminal)
 * prints a single frame. */
#include "cli.h"

#include "cmd.h"
#include "table.h"

#include "pw/util.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char top_help[] =
    "usage: prewarmctl top [--interval S] [--once]\n"
    "\n"
    "A live view of the cluster, redrawn every S seconds (default 2) until Ctrl-C: per pool the\n"
    "policy, idle / leased / restoring VMs, the idle target, acquires, hit rate (warm / acquires),\n"
    "cold starts and timeouts; per host its state, zone, VMs, load and drain. --once prints one\n"
    "frame and exits, as does a stdout that is not a terminal. -o json prints one frame as\n"
    "{\"server\",\"pools\":[...],\"hosts\":[...]} with the API's pool and host objects.\n"
    "\n"
    "Flags:\n"
    "      --interval S   seconds between frames (default 2)\n"
    "      --once         print one frame and exit\n" PW_CLI_COMMON_HELP;

enum { T_INTERVAL = OPT_CMD_BASE, T_ONCE };

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* snapshot fetches the pools and hosts into a new {"server","pools","hosts"} object. Returns
 * NULL with err set when a request fails. */
static cJSON *snapshot(const struct pw_cli *c, char *err, size_t errlen)
{
    cJSON *fns = NULL, *hosts = NULL;
    int st = pw_cli_call(c, "GET", "/v1/functions", NULL, &fns, err, errlen);
    if (st < 0)
        return NULL;
    if (st != 200 || fns == NULL) {
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(fns, "error");
        pw_errf(err, errlen, "GET /v1/functions: %s (HTTP %d)", e ? pw_cli_str(e, "message") : "no answer", st);
        cJSON_Delete(fns);
        return NULL;
    }
    cJSON *snap = cJSON_CreateObject();
    cJSON_AddStringToObject(snap, "server", c->server);
    cJSON *pools = cJSON_AddArrayToObject(snap, "pools");
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(fns, "functions")) {
        char path[128];
        snprintf(path, sizeof(path), "/v1/functions/%s/pool", pw_cli_str(f, "name"));
        cJSON *p = NULL;
        st = pw_cli_call(c, "GET", path, NULL, &p, err, errlen);
        if (st < 0) {
            cJSON_Delete(fns);
            cJSON_Delete(snap);
            return NULL;
        }
        if (st == 200 && p != NULL)
            cJSON_AddItemToArray(pools, p); /* a function deleted meanwhile is left out */
        else
            cJSON_Delete(p);
    }
    cJSON_Delete(fns);
    st = pw_cli_call(c, "GET", "/v1/hosts", NULL, &hosts, err, errlen);
    if (st != 200 || hosts == NULL) {
        if (st >= 0)
            pw_errf(err, errlen, "GET /v1/hosts: HTTP %d", st);
        cJSON_Delete(hosts);
        cJSON_Delete(snap);
        return NULL;
    }
    cJSON *harr = cJSON_DetachItemFromObjectCaseSensitive(hosts, "hosts");
    cJSON_AddItemToObject(snap, "hosts", harr ? harr : cJSON_CreateArray());
    cJSON_Delete(hosts);
    return snap;
}

static void hit_rate(double warm, double acquires, char *buf, size_t size)
{
    if (acquires <= 0)
        snprintf(buf, size, "-");
    else
        snprintf(buf, size, "%.1f%%", 100.0 * warm / acquires);
}

static void draw(FILE *f, const cJSON *snap)
{
    const cJSON *pools = cJSON_GetObjectItemCaseSensitive(snap, "pools");
    const cJSON *hosts = cJSON_GetObjectItemCaseSensitive(snap, "hosts");
    double acq = 0, warm = 0, cold = 0, tmo = 0;
    int alive = 0, nhosts = 0;
    const cJSON *p, *h;
    cJSON_ArrayForEach(p, pools) {
        acq += pw_cli_num(p, "acquires");
        warm += pw_cli_num(p, "warm");
        cold += pw_cli_num(p, "cold");
        tmo += pw_cli_num(p, "timeouts");
    }
    cJSON_ArrayForEach(h, hosts) {
        nhosts++;
        alive += strcmp(pw_cli_str(h, "state"), "alive") == 0;
    }
    char when[64], hr[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&now, &tm));
    hit_rate(warm, acq, hr, sizeof(hr));
    fprintf(f, "prewarm top  %s  %s\n", pw_cli_str(snap, "server"), when);
    fprintf(f, "pools %d  acquires %.0f  hit rate %s  cold %.0f  timeouts %.0f  hosts %d alive / %d\n\n",
            cJSON_GetArraySize(pools), acq, hr, cold, tmo, alive, nhosts);

    static const char *const phdr[] = {"FUNCTION", "POLICY", "IDLE", "LEASED", "RESTORING", "TARGET",
                                       "ACQUIRES", "HIT_RATE", "COLD", "TIMEOUTS"};
    struct pw_table t;
    pw_table_init(&t, (int)PW_ARRAY_LEN(phdr), phdr);
    cJSON_ArrayForEach(p, pools) {
        char b[8][32];
        snprintf(b[0], 32, "%.0f", pw_cli_num(p, "idle"));
        snprintf(b[1], 32, "%.0f", pw_cli_num(p, "leased"));
        snprintf(b[2], 32, "%.0f", pw_cli_num(p, "restoring"));
        snprintf(b[3], 32, "%.0f", pw_cli_num(p, "target_idle"));
        snprintf(b[4], 32, "%.0f", pw_cli_num(p, "acquires"));
        hit_rate(pw_cli_num(p, "warm"), pw_cli_num(p, "acquires"), b[5], 32);
        snprintf(b[6], 32, "%.0f", pw_cli_num(p, "cold"));
        snprintf(b[7], 32, "%.0f", pw_cli_num(p, "timeouts"));
        const char *row[] = {pw_cli_str(p, "function"), pw_cli_str(p, "policy"), b[0], b[1], b[2], b[3], b[4], b[5],
                             b[6], b[7]};
        pw_table_row(&t, row);
    }
    pw_table_print(&t, f);
    pw_table_fini(&t);
    fprintf(f, "\n");

    static const char *const hhdr[] = {"HOST", "STATE", "ZONE", "VMS", "LOAD", "DRAINING"};
    pw_table_init(&t, (int)PW_ARRAY_LEN(hhdr), hhdr);
    cJSON_ArrayForEach(h, hosts) {
        char vms[32], load[32];
        snprintf(vms, sizeof(vms), "%.0f", pw_cli_num(h, "vms"));
        snprintf(load, sizeof(load), "%.2f", pw_cli_num(h, "load"));
        const char *zone = pw_cli_str(h, "zone");
        const char *row[] = {pw_cli_str(h, "id"), pw_cli_str(h, "state"), zone[0] ? zone : "-", vms, load,
                             pw_cli_host_draining(h)};
        pw_table_row(&t, row);
    }
    pw_table_print(&t, f);
    pw_table_fini(&t);
}

int pw_cmd_top(struct pw_cli *c, int argc, char **argv)
{
    static const struct option opts[] = {{"interval", required_argument, NULL, T_INTERVAL},
                                         {"once", no_argument, NULL, T_ONCE},
                                         PW_CLI_COMMON_OPTS,
                                         {NULL, 0, NULL, 0}};
    double interval = 2;
    int once = 0, o, rv = PW_CLI_OK, r;
    optind = 0;
    while ((r = pw_cli_next_opt(c, argc, argv, opts, top_help, &o, &rv)) > 0) {
        if (o == T_ONCE) {
            once = 1;
        } else if (o == T_INTERVAL) {
            if (!pw_cli_parse_double(c, "--interval", optarg, &interval))
                return PW_CLI_USAGE;
            if (interval < 0.1 || interval > 3600)
                return pw_cli_usage(c, "--interval must be between 0.1 and 3600 seconds");
        }
    }
    if (r < 0)
        return rv;
    if ((rv = pw_cli_args(c, argc, argv, 0, 0, "")) != PW_CLI_OK)
        return rv;
    if ((rv = pw_cli_config_resolve(c)) != PW_CLI_OK)
        return rv;
    if (c->out == PW_OUT_JSON || !isatty(STDOUT_FILENO))
        once = 1;

    char err[512];
    if (once) {
        cJSON *snap = snapshot(c, err, sizeof(err));
        if (snap == NULL)
            return pw_cli_fail("%s", err);
        if (c->out == PW_OUT_JSON)
            pw_cli_print_json(snap);
        else
            draw(stdout, snap);
        cJSON_Delete(snap);
        return PW_CLI_OK;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    while (!stop_requested) {
        char *frame = NULL;
        size_t len = 0;
        FILE *mf = open_memstream(&frame, &len);
        if (mf == NULL)
            return pw_cli_fail("open_memstream: out of memory");
        cJSON *snap = snapshot(c, err, sizeof(err));
        if (snap != NULL)
            draw(mf, snap);
        else
            fprintf(mf, "prewarm top  %s\n\nprewarmctl: %s (retrying every %.1f s)\n", c->server, err, interval);
        cJSON_Delete(snap);
        fclose(mf);
        /* Home, clear, then the whole frame in one write. */
        fputs("\033[H\033[2J", stdout);
        fwrite(frame, 1, len, stdout);
        fflush(stdout);
        free(frame);
        struct timespec ts = {(time_t)interval, (long)((interval - floor(interval)) * 1e9)};
        while (!stop_requested && nanosleep(&ts, &ts) != 0)
            ;
    }
    return PW_CLI_OK;
}
