/* main.c — prewarm-gateway: flags, the loop, signals. */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "gateway.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

static struct pw_gateway *gw;
static uv_signal_t sig_term, sig_int;

static void usage(FILE *f)
{
    fprintf(f, "usage: prewarm-gateway [flags]\n"
               "  --listen HOST:PORT          front door (default 127.0.0.1:8090; port 0 picks one)\n"
               "  --scheduler-url URL         prewarmd's HTTP API, http://IP:PORT (default http://127.0.0.1:8080)\n"
               "  --acquire-timeout-ms N      how long prewarmd may wait for a VM (default 5000)\n"
               "  --vm-timeout-ms N           the VM's answer head, then each wait for more of its body (default 30000)\n"
               "  --max-body-bytes N          request body cap; answers are streamed (default 8388608)\n"
               "  --max-inflight N            invocations at once (default 4096)\n"
               "  --token-file FILE           bearer token for prewarmd's API (a gateway-role token), first line\n"
               "                              of FILE; PREWARM_TOKEN also sets it (default: none)\n"
               "  --log-level L               debug, info, warn or error (default info)\n");
}

static void on_signal(uv_signal_t *s, int signum)
{
    pw_log_info("gateway", "signal %d: stopping", signum);
    if (gw != NULL) {
        pw_gateway_close(gw);
        gw = NULL;
    }
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
}

/* read_token takes the first line of path, without surrounding blanks, as the bearer token. */
static int read_token(const char *path, char *out, size_t n)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "prewarm-gateway: --token-file %s: cannot open it\n", path);
        return -1;
    }
    char line[512] = "";
    int ok = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    char *s = line;
    while (*s == ' ' || *s == '\t')
        s++;
    size_t len = strcspn(s, " \t\r\n");
    if (!ok || len == 0 || len >= n) {
        fprintf(stderr, "prewarm-gateway: --token-file %s: no token of 1-%zu characters on its first line\n", path,
                n - 1);
        return -1;
    }
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return 0;
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"scheduler-url", required_argument, NULL, 's'},
        {"acquire-timeout-ms", required_argument, NULL, 'a'},
        {"vm-timeout-ms", required_argument, NULL, 'v'},
        {"max-body-bytes", required_argument, NULL, 'b'},
        {"max-inflight", required_argument, NULL, 'i'},
        {"log-level", required_argument, NULL, 'L'},
        {"token-file", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct pw_gateway_cfg cfg;
    pw_gateway_cfg_default(&cfg);
    pw_log_set_process("prewarm-gateway");
    const char *env_token = getenv("PREWARM_TOKEN");
    if (env_token != NULL && pw_strlcpy(cfg.token, env_token, sizeof(cfg.token)) >= sizeof(cfg.token)) {
        fprintf(stderr, "prewarm-gateway: PREWARM_TOKEN is longer than %zu characters\n", sizeof(cfg.token) - 1);
        return 2;
    }
    int c;
    int64_t n;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': {
            const char *colon = strrchr(optarg, ':');
            if (colon == NULL || (size_t)(colon - optarg) >= sizeof(cfg.listen_host) ||
                !parse_int(colon + 1, 0, 65535, &n)) {
                fprintf(stderr, "prewarm-gateway: --listen wants HOST:PORT\n");
                return 2;
            }
            memcpy(cfg.listen_host, optarg, (size_t)(colon - optarg));
            cfg.listen_host[colon - optarg] = '\0';
            cfg.listen_port = (int)n;
            break;
        }
        case 's': {
            const char *p = strncmp(optarg, "http://", 7) == 0 ? optarg + 7 : optarg;
            size_t len = strcspn(p, "/");
            if (len == 0 || len >= sizeof(cfg.scheduler)) {
                fprintf(stderr, "prewarm-gateway: --scheduler-url wants http://IP:PORT\n");
                return 2;
            }
            memcpy(cfg.scheduler, p, len);
            cfg.scheduler[len] = '\0';
            break;
        }
        case 'a':
        case 'v':
            if (!parse_int(optarg, 1, 3600000, &n)) {
                fprintf(stderr, "prewarm-gateway: %s wants 1..3600000 ms\n", c == 'a' ? "--acquire-timeout-ms" : "--vm-timeout-ms");
                return 2;
            }
            *(c == 'a' ? &cfg.acquire_timeout_ms : &cfg.vm_timeout_ms) = n;
            break;
        case 'b':
        case 'i':
            if (!parse_int(optarg, 1, INT64_C(1) << 32, &n)) {
                fprintf(stderr, "prewarm-gateway: bad number %s\n", optarg);
                return 2;
            }
            *(c == 'b' ? &cfg.max_body : &cfg.max_inflight) = (size_t)n;
            break;
        case 'L': {
            int lvl = pw_log_parse_level(optarg);
            if (lvl < 0) {
                fprintf(stderr, "prewarm-gateway: unknown log level %s\n", optarg);
                return 2;
            }
            pw_log_set_level((enum pw_log_level)lvl);
            break;
        }
        case 't':
            if (read_token(optarg, cfg.token, sizeof(cfg.token)) != 0)
                return 2;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    char err[256] = "";
    if (pw_gateway_new(loop, &cfg, &gw, err, sizeof(err)) != PW_OK) {
        pw_log_error("gateway", "%s", err);
        return 1;
    }
    pw_log_info("gateway", "listening on %s:%d, prewarmd at %s", cfg.listen_host, pw_gateway_port(gw), cfg.scheduler);
    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_run(loop, UV_RUN_DEFAULT);
    int rv = uv_loop_close(loop);
    pw_log_info("gateway", "stopped%s", rv == 0 ? "" : " (handles left open)");
    return 0;
}
