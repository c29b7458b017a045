/* main.c — prewarm-replay: replays an invocation trace against pool policies and prints cold
 * starts and wasted memory per policy (table on stdout, optional JSON). docs/replay.md. */
#include "replay.h"

#include "pw/forecast.h"

#include "pw/error.h"
#include "pw/log.h"
#include "pw/util.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_POLICIES 64

static void usage(FILE *out)
{
    fprintf(out,
            "usage: prewarm-replay --trace DIR --policy P [--policy P2 ...] [options]\n"
            "\n"
            "Replays DIR (invocations_per_minute.csv, durations_ms.csv, memory_mb.csv in the layout of\n"
            "the Azure Functions 2019 trace) in virtual time. Pool mode runs the REAL scheduling core\n"
            "against SIMULATED agents (a few hosts of unlimited capacity that restore a VM in R ms and\n"
            "destroy one at once); instance mode is Shahrad et al.'s one-instance-per-app model.\n"
            "\n"
            "policies: none | keepalive:<duration> (10m, 30s, 2h) | hybrid | reactive |\n"
            "          predictive[:<quantile>[:<grace>[:<keep-one-cost>]]] | oracle\n"
            "options:\n"
            "  --seed N                arrival and duration draws (default 1)\n"
            "  --mode pool|instance    default pool\n"
            "  --restore-ms R          simulated restore time (default 200)\n"
            "  --json OUT              write the results as JSON\n"
            "  --no-timing             leave wall and CPU times out of the JSON (byte-identical runs)\n"
            "  --model PATH|none       predictive model (default models/default.json; none: heuristic)\n"
            "  --quantile Q            predictive pool quantile (default 0.99)\n"
            "  --grace DUR             predictive keep-alive above the floor (default 1m)\n"
            "  --keep-one-cost K       predictive: keep a quiet function's last VM when P(arrival) per GB\n"
            "                          per daily invocation exceeds K (default 0.0003; 0: when P > 1 - quantile)\n"
            "  --per-function PREFIX   write PREFIX.<policy>.csv with each function's results\n"
            "  --functions N           replay the first N functions only\n"
            "  --minutes A:B           replay minutes [A, B) (0-based)\n"
            "  --max-vms N             pool cap per function (default 10000)\n"
            "  --hybrid-min-samples N  idle times before a histogram counts (default 10)\n"
            "  --hybrid-cv X           bin-count CV a histogram needs (default 2.0)\n"
            "  --spread uniform|start  arrivals spread in the minute, or all at its start (tests)\n");
}

static void print_table(const struct replay_result *r, size_t n, int instance)
{
    printf("%-22s %10s %9s %7s %7s %7s %7s %7s %12s %7s %9s %7s %9s %8s\n", "policy", "invocations", "cold",
           "cold%", "fn_p50", "fn_p75", "fn_p90", "fn_p99", "waste_GB-s", "waste%", "mean_vms", "peak", "pol_us/s",
           "wall_s");
    for (size_t i = 0; i < n; i++) {
        char mean[32], peak[32], pol[32];
        if (instance || isnan(r[i].mean_vms)) {
            snprintf(mean, sizeof(mean), "-");
            snprintf(peak, sizeof(peak), "-");
        } else {
            snprintf(mean, sizeof(mean), "%.1f", r[i].mean_vms);
            snprintf(peak, sizeof(peak), "%llu", (unsigned long long)r[i].peak_vms);
        }
        if (isnan(r[i].policy_us_per_tick))
            snprintf(pol, sizeof(pol), "-");
        else
            snprintf(pol, sizeof(pol), "%.2f", r[i].policy_us_per_tick);
        printf("%-22s %10llu %9llu %7.3f %7.2f %7.2f %7.2f %7.2f %12.0f %7.1f %9s %7s %9s %8.1f\n",
               r[i].policy.label, (unsigned long long)r[i].invocations, (unsigned long long)r[i].cold, r[i].cold_pct,
               r[i].fn_pct[0], r[i].fn_pct[1], r[i].fn_pct[2], r[i].fn_pct[3], r[i].waste_gbs, r[i].waste_norm,
               mean, peak, pol, r[i].wall_s);
    }
}

static void json_num(FILE *f, const char *key, double v, int comma)
{
    if (isnan(v))
        fprintf(f, "\"%s\": null%s", key, comma ? ", " : "");
    else
        fprintf(f, "\"%s\": %.10g%s", key, v, comma ? ", " : "");
}

static int write_json(const char *path, const struct replay_opts *o, const char *trace, const struct replay_result *r,
                      size_t n, double ref, int timing)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        fprintf(stderr, "prewarm-replay: %s: cannot write\n", path);
        return -1;
    }
    struct pw_buf b;
    pw_buf_init(&b, 8192);
    pw_buf_add_json_str(&b, trace);
    fprintf(f, "{\n  \"trace\": %s,\n", b.data);
    pw_buf_fini(&b);
    fprintf(f, "  \"mode\": \"%s\", \"seed\": %llu, \"restore_ms\": %lld, \"minutes\": [%zu, %zu], \"functions\": %zu,\n",
            o->mode == REPLAY_MODE_POOL ? "pool" : "instance", (unsigned long long)o->seed, (long long)o->restore_ms,
            o->minute0, o->minute1, o->nfns);
    fprintf(f, "  \"hybrid_min_samples\": %u, \"hybrid_cv\": %g, \"reference_waste_gbs\": %.10g,\n",
            o->hybrid.min_samples, o->hybrid.cv_min, ref);
    fprintf(f, "  \"policies\": [\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "    {\"policy\": \"%s\", \"invocations\": %llu, \"cold\": %llu, ", r[i].policy.label,
                (unsigned long long)r[i].invocations, (unsigned long long)r[i].cold);
        json_num(f, "cold_pct", r[i].cold_pct, 1);
        fprintf(f, "\"functions_invoked\": %zu, ", r[i].fns_invoked);
        json_num(f, "fn_cold_pct_p50", r[i].fn_pct[0], 1);
        json_num(f, "fn_cold_pct_p75", r[i].fn_pct[1], 1);
        json_num(f, "fn_cold_pct_p90", r[i].fn_pct[2], 1);
        json_num(f, "fn_cold_pct_p99", r[i].fn_pct[3], 1);
        json_num(f, "waste_gb_s", r[i].waste_gbs, 1);
        json_num(f, "waste_norm", r[i].waste_norm, 1);
        json_num(f, "mean_vms", o->mode == REPLAY_MODE_POOL ? r[i].mean_vms : NAN, 1);
        fprintf(f, "\"peak_vms\": %llu, \"restores\": %llu", (unsigned long long)r[i].peak_vms,
                (unsigned long long)r[i].restores);
        if (timing) {
            fprintf(f, ", \"timing\": {");
            json_num(f, "policy_us_per_tick", r[i].policy_us_per_tick, 1);
            json_num(f, "wall_s", r[i].wall_s, 0);
            fprintf(f, "}");
        }
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (*s == '\0' || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* default_model finds models/default.json from the working directory or the source tree. */
static const char *default_model(void)
{
    static char path[4096];
    if (access("models/default.json", R_OK) == 0)
        return "models/default.json";
#ifdef PW_SOURCE_DIR
    snprintf(path, sizeof(path), "%s/models/default.json", PW_SOURCE_DIR);
    if (access(path, R_OK) == 0)
        return path;
#endif
    return NULL;
}

int main(int argc, char **argv)
{
    struct replay_opts o;
    memset(&o, 0, sizeof(o));
    o.seed = 1;
    o.mode = REPLAY_MODE_POOL;
    o.restore_ms = 200;
    o.max_vms = 10000;
    o.quantile = 0.99;
    o.grace_ms = 60 * 1000;
    {
        struct pw_forecast_params fpd;
        pw_forecast_params_default(&fpd);
        o.keep_one_cost = fpd.keep_one_cost;
    }
    pw_hybrid_params_default(&o.hybrid);
    pw_kpa_params_default(&o.kpa);
    const char *trace_dir = NULL, *json = NULL, *model = NULL, *minutes = NULL;
    uint64_t nfns = 0;
    int timing = 1;
    struct replay_policy pols[MAX_POLICIES];
    size_t npols = 0;
    char err[512];

    static const struct option opts[] = {
        {"trace", required_argument, NULL, 't'},     {"policy", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, 's'},      {"mode", required_argument, NULL, 'm'},
        {"restore-ms", required_argument, NULL, 'r'}, {"json", required_argument, NULL, 'j'},
        {"model", required_argument, NULL, 'M'},     {"quantile", required_argument, NULL, 'q'},
        {"grace", required_argument, NULL, 'g'},     {"functions", required_argument, NULL, 'f'},
        {"minutes", required_argument, NULL, 'w'},   {"max-vms", required_argument, NULL, 'x'},
        {"hybrid-min-samples", required_argument, NULL, 'H'}, {"hybrid-cv", required_argument, NULL, 'C'},
        {"spread", required_argument, NULL, 'S'},    {"no-timing", no_argument, NULL, 'T'},
        {"per-function", required_argument, NULL, 'F'},
        {"keep-one-cost", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},            {NULL, 0, NULL, 0},
    };
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 't': trace_dir = optarg; break;
        case 'p':
            if (npols == MAX_POLICIES || replay_policy_parse(optarg, &pols[npols], err, sizeof(err)) != 0) {
                fprintf(stderr, "prewarm-replay: %s\n", npols == MAX_POLICIES ? "too many policies" : err);
                return 2;
            }
            npols++;
            break;
        case 's':
            if (parse_u64(optarg, &o.seed) != 0)
                goto bad;
            break;
        case 'm':
            if (strcmp(optarg, "pool") == 0)
                o.mode = REPLAY_MODE_POOL;
            else if (strcmp(optarg, "instance") == 0)
                o.mode = REPLAY_MODE_INSTANCE;
            else
                goto bad;
            break;
        case 'r':
            if (parse_u64(optarg, &v) != 0 || v >= 60000)
                goto bad;
            o.restore_ms = (int64_t)v;
            break;
        case 'j': json = optarg; break;
        case 'F': o.per_fn_path = optarg; break;
        case 'K':
            o.keep_one_cost = strtod(optarg, NULL);
            if (!(o.keep_one_cost >= 0))
                goto bad;
            break;
        case 'M': model = optarg; break;
        case 'q':
            o.quantile = strtod(optarg, NULL);
            if (!(o.quantile > 0 && o.quantile < 1))
                goto bad;
            break;
        case 'g':
            if (pw_parse_duration_ms(optarg, &o.grace_ms) != PW_OK || o.grace_ms < 0)
                goto bad;
            break;
        case 'f':
            if (parse_u64(optarg, &nfns) != 0 || nfns == 0)
                goto bad;
            break;
        case 'w': minutes = optarg; break;
        case 'x':
            if (parse_u64(optarg, &v) != 0 || v == 0 || v > 10000)
                goto bad;
            o.max_vms = (uint32_t)v;
            break;
        case 'H':
            if (parse_u64(optarg, &v) != 0 || v > UINT32_MAX)
                goto bad;
            o.hybrid.min_samples = (uint32_t)v;
            break;
        case 'C': o.hybrid.cv_min = strtod(optarg, NULL); break;
        case 'S':
            if (strcmp(optarg, "start") == 0)
                o.spread_start = 1;
            else if (strcmp(optarg, "uniform") != 0)
                goto bad;
            break;
        case 'T': timing = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (trace_dir == NULL || npols == 0 || optind != argc) {
        usage(stderr);
        return 2;
    }
    pw_log_set_level(PW_LOG_WARN);

    int want_predictive = 0;
    for (size_t i = 0; i < npols; i++)
        want_predictive |= pols[i].kind == REPLAY_PREDICTIVE;
    if (want_predictive && o.mode == REPLAY_MODE_POOL) {
        if (model == NULL) {
            model = default_model();
            if (model == NULL) {
                fprintf(stderr, "prewarm-replay: predictive: models/default.json not found; give --model PATH, "
                                "or --model none for the forecaster's no-model heuristic\n");
                return 1;
            }
        }
        o.model_path = strcmp(model, "none") == 0 ? NULL : model;
    }

    struct pw_trace t;
    double l0 = replay_wall_s();
    if (pw_trace_load(trace_dir, &t, err, sizeof(err)) != PW_OK) {
        fprintf(stderr, "prewarm-replay: %s\n", err);
        return 1;
    }
    o.nfns = nfns && nfns < t.nfns ? (size_t)nfns : t.nfns;
    o.minute0 = 0;
    o.minute1 = t.nminutes;
    if (minutes != NULL) {
        unsigned long a, b;
        char tail;
        if (sscanf(minutes, "%lu:%lu%c", &a, &b, &tail) != 2 || a >= b || b > t.nminutes) {
            fprintf(stderr, "prewarm-replay: --minutes A:B needs 0 <= A < B <= %zu\n", t.nminutes);
            pw_trace_free(&t);
            return 2;
        }
        o.minute0 = a;
        o.minute1 = b;
    }
    o.t0 = (int64_t)o.minute0 * 60000;
    o.t_end = (int64_t)o.minute1 * 60000;
    fprintf(stderr, "prewarm-replay: %zu functions x minutes [%zu, %zu) of %s (loaded in %.1f s), seed %llu, %s mode, R %lld ms\n",
            o.nfns, o.minute0, o.minute1, trace_dir, replay_wall_s() - l0, (unsigned long long)o.seed,
            o.mode == REPLAY_MODE_POOL ? "pool" : "instance", (long long)o.restore_ms);

    /* keepalive:10m is the reference of the normalised waste; run it first if not asked for. */
    struct replay_result *res = pw_xcalloc(npols + 1, sizeof(*res));
    struct replay_result ref_res;
    double ref = -1;
    int rc = 0;
    for (size_t i = 0; i < npols && ref < 0; i++)
        if (pols[i].kind == REPLAY_KEEPALIVE && pols[i].keepalive_ms == 600000)
            ref = 0; /* computed in order below */
    if (ref < 0) {
        struct replay_policy rp;
        replay_policy_parse("keepalive:10m", &rp, err, sizeof(err));
        int rv = o.mode == REPLAY_MODE_POOL ? replay_pool_run(&t, &o, &rp, &ref_res, err, sizeof(err))
                                            : replay_instance_run(&t, &o, &rp, &ref_res, err, sizeof(err));
        if (rv != 0) {
            fprintf(stderr, "prewarm-replay: keepalive:10m reference: %s\n", err);
            rc = 1;
            goto out;
        }
        ref = ref_res.waste_gbs;
        fprintf(stderr, "prewarm-replay: reference keepalive:10m wasted %.0f GB-s (%.1f s)\n", ref, ref_res.wall_s);
    } else {
        ref = -1;
    }
    for (size_t i = 0; i < npols; i++) {
        int rv = o.mode == REPLAY_MODE_POOL ? replay_pool_run(&t, &o, &pols[i], &res[i], err, sizeof(err))
                                            : replay_instance_run(&t, &o, &pols[i], &res[i], err, sizeof(err));
        if (rv != 0) {
            fprintf(stderr, "prewarm-replay: %s: %s\n", pols[i].label, err);
            rc = 1;
            goto out;
        }
        fprintf(stderr, "prewarm-replay: %s done in %.1f s\n", pols[i].label, res[i].wall_s);
        if (ref < 0 && pols[i].kind == REPLAY_KEEPALIVE && pols[i].keepalive_ms == 600000)
            ref = res[i].waste_gbs;
    }
    for (size_t i = 0; i < npols; i++)
        res[i].waste_norm = ref > 0 ? 100.0 * res[i].waste_gbs / ref : NAN;
    print_table(res, npols, o.mode == REPLAY_MODE_INSTANCE);
    printf("wasted memory normalised to keepalive:10m = 100 (%.0f GB-s)\n", ref);
    if (json != NULL && write_json(json, &o, trace_dir, res, npols, ref, timing) != 0)
        rc = 1;
out:
    free(res);
    pw_trace_free(&t);
    return rc;
bad:
    fprintf(stderr, "prewarm-replay: bad option value \"%s\"\n", optarg ? optarg : "");
    usage(stderr);
    return 2;
}
