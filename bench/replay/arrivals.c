/* arrivals.c — per-minute invocation arrivals from trace counts, deterministic per seed, and
 * the small helpers both simulations share. */
#include "replay.h"

#include "pw/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void replay_gen_init(struct replay_gen *g, const struct pw_trace *t, size_t nfns, uint64_t seed, int spread_start)
{
    g->trace = t;
    g->nfns = nfns;
    g->spread_start = spread_start;
    g->rng = pw_xmalloc((nfns ? nfns : 1) * sizeof(*g->rng));
    for (size_t i = 0; i < nfns; i++) {
        /* Decorrelate the streams: one splitmix step over seed and index. */
        uint64_t s = seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1));
        g->rng[i] = pw_rng_next(&s);
    }
}

void replay_gen_fini(struct replay_gen *g)
{
    free(g->rng);
    g->rng = NULL;
}

static int cmp_arrival(const void *a, const void *b)
{
    const struct replay_arrival *x = a, *y = b;
    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->fn != y->fn)
        return x->fn < y->fn ? -1 : 1;
    return (x->dur_ms > y->dur_ms) - (x->dur_ms < y->dur_ms);
}

size_t replay_gen_minute(struct replay_gen *g, size_t m, struct replay_arrival **buf, size_t *cap)
{
    size_t n = 0;
    for (size_t i = 0; i < g->nfns; i++)
        n += g->trace->fns[i].minutes[m];
    if (n > *cap) {
        *cap = n + n / 4;
        *buf = pw_xrealloc(*buf, *cap * sizeof(**buf));
    }
    struct replay_arrival *a = *buf;
    size_t k = 0;
    int64_t base = (int64_t)m * 60000;
    for (size_t i = 0; i < g->nfns; i++) {
        const struct pw_trace_fn *f = &g->trace->fns[i];
        uint32_t cnt = f->minutes[m];
        for (uint32_t j = 0; j < cnt; j++) {
            double u = pw_rng_unit(&g->rng[i]);
            double d = pw_trace_draw_duration_ms(f, pw_rng_unit(&g->rng[i]));
            a[k].t = g->spread_start ? base : base + (int64_t)(u * 60000.0);
            a[k].fn = (uint32_t)i;
            double r = floor(d + 0.5);
            a[k].dur_ms = r < 1 ? 1 : r > 4e9 ? 4000000000u : (uint32_t)r;
            k++;
        }
    }
    if (k > 1)
        qsort(a, k, sizeof(*a), cmp_arrival);
    return k;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void replay_fn_percentiles(struct replay_result *r, const uint64_t *inv, const uint64_t *cold, size_t n)
{
    static const double pts[4] = {50, 75, 90, 99};
    double *v = pw_xmalloc((n ? n : 1) * sizeof(*v));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (inv[i] > 0)
            v[k++] = 100.0 * (double)cold[i] / (double)inv[i];
    qsort(v, k, sizeof(*v), cmp_double);
    r->fns_invoked = k;
    for (int p = 0; p < 4; p++) {
        if (k == 0) {
            r->fn_pct[p] = 0;
            continue;
        }
        double pos = pts[p] / 100.0 * (double)(k - 1);
        size_t lo = (size_t)floor(pos);
        size_t hi = lo + 1 < k ? lo + 1 : lo;
        r->fn_pct[p] = v[lo] + (v[hi] - v[lo]) * (pos - (double)lo);
    }
    free(v);
}

double replay_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

double replay_wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int replay_policy_parse(const char *s, struct replay_policy *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->quantile = -1;
    out->grace_ms = -1;
    out->keep_one_cost = -1;
    pw_strlcpy(out->label, s, sizeof(out->label));
    if (strcmp(s, "none") == 0) {
        out->kind = REPLAY_NONE;
    } else if (strncmp(s, "keepalive:", 10) == 0) {
        out->kind = REPLAY_KEEPALIVE;
        if (pw_parse_duration_ms(s + 10, &out->keepalive_ms) != 0 || out->keepalive_ms < 0)
            goto bad;
    } else if (strcmp(s, "hybrid") == 0) {
        out->kind = REPLAY_HYBRID;
    } else if (strcmp(s, "reactive") == 0) {
        out->kind = REPLAY_REACTIVE;
    } else if (strcmp(s, "oracle") == 0) {
        out->kind = REPLAY_ORACLE;
    } else if (strncmp(s, "predictive", 10) == 0 && (s[10] == '\0' || s[10] == ':')) {
        out->kind = REPLAY_PREDICTIVE;
        if (s[10] == ':') {
            char buf[64];
            pw_strlcpy(buf, s + 11, sizeof(buf));
            char *grace = strchr(buf, ':');
            if (grace != NULL)
                *grace++ = '\0';
            char *k1 = grace != NULL ? strchr(grace, ':') : NULL;
            if (k1 != NULL)
                *k1++ = '\0';
            char *end;
            out->quantile = strtod(buf, &end);
            if (end == buf || *end != '\0' || !(out->quantile > 0 && out->quantile < 1))
                goto bad;
            if (grace != NULL && (pw_parse_duration_ms(grace, &out->grace_ms) != 0 || out->grace_ms < 0))
                goto bad;
            if (k1 != NULL) {
                out->keep_one_cost = strtod(k1, &end);
                if (end == k1 || *end != '\0' || !(out->keep_one_cost >= 0))
                    goto bad;
            }
        }
    } else {
        goto bad;
    }
    return 0;
bad:
    snprintf(err, errlen,
             "bad policy \"%s\": none | keepalive:<duration> | hybrid | reactive | "
             "predictive[:<quantile>[:<grace>[:<keep-one-cost>]]] | oracle",
             s);
    return -1;
}
