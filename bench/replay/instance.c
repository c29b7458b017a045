/* instance.c — instance mode: Shahrad et al.'s model (ATC '20 §5) for checking the baselines
 * against the paper's shape. One instance per application (each function is its own app in
 * this trace); an invocation is cold when the instance is not loaded and ready at its arrival;
 * the instance serves any number of invocations at once. No core: the paper's model is per-app
 * timing only. The same arrivals, durations and restore time R as pool mode. */
#include "replay.h"

#include "pw/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ifn {
    int loaded_once;   /* an execution has happened (busy_until is meaningful) */
    int64_t busy_until; /* end of the latest execution */
    double waste_ms;    /* loaded, not executing */
    uint64_t inv, cold;
    struct pw_hybrid hy;
};

/* clip adds the part of [from, to) inside the replay window to f's waste. */
static void waste(struct ifn *f, const struct replay_opts *o, int64_t from, int64_t to)
{
    if (to > o->t_end)
        to = o->t_end;
    if (from < o->t0)
        from = o->t0;
    if (to > from)
        f->waste_ms += (double)(to - from);
}

/* What the policy keeps loaded after the instance goes idle at time i (the end of its last
 * execution): nothing until i + prewarm, then a load that is ready R later and stays until
 * i + prewarm + keepalive; prewarm 0 means the instance simply stays until i + keepalive.
 * The oracle is handled apart. */
static void idle_plan(const struct replay_opts *o, const struct replay_policy *pol, struct ifn *f, int64_t *prewarm,
                      int64_t *keepalive)
{
    *prewarm = 0;
    switch (pol->kind) {
    case REPLAY_NONE: *keepalive = 0; break;
    case REPLAY_KEEPALIVE: *keepalive = pol->keepalive_ms; break;
    case REPLAY_REACTIVE: *keepalive = o->kpa.scale_to_zero_ms; break;
    case REPLAY_HYBRID: {
        struct pw_hybrid_windows w;
        pw_hybrid_windows(&f->hy, &o->hybrid, &w);
        *prewarm = w.prewarm_ms;
        *keepalive = w.keepalive_ms;
        break;
    }
    default: *keepalive = 0; break;
    }
}

/* gap accounts the idle gap from f->busy_until to `until` (the next arrival, or the end of the
 * replay when next is 0) and returns 1 when an arrival at `until` finds the instance ready. */
static int gap(const struct replay_opts *o, const struct replay_policy *pol, struct ifn *f, int64_t until, int next)
{
    int64_t i = f->busy_until, r = o->restore_ms;
    if (pol->kind == REPLAY_ORACLE) {
        /* Kept through gaps up to R, else unloaded and reloaded R before the arrival. */
        if (!next)
            return 0;
        waste(f, o, i, until - i <= r ? until : i + r);
        return 1;
    }
    int64_t pw, ka;
    idle_plan(o, pol, f, &pw, &ka);
    if (pw == 0) {
        int warm = next && until < i + ka;
        waste(f, o, i, PW_MIN(until, i + ka));
        return warm;
    }
    int64_t p = i + pw, u = i + pw + ka;
    if (until <= p)
        return 0;
    waste(f, o, p, PW_MIN(until, u));
    return next && until >= p + r && until < u;
}

int replay_instance_run(const struct pw_trace *t, const struct replay_opts *o, const struct replay_policy *pol,
                        struct replay_result *out, char *err, size_t errlen)
{
    double w0 = replay_wall_s();
    memset(out, 0, sizeof(*out));
    out->policy = *pol;
    if (pol->kind == REPLAY_PREDICTIVE) {
        snprintf(err, errlen, "predictive runs in pool mode only (instance mode checks the baselines against the paper)");
        return -1;
    }
    size_t n = o->nfns;
    struct ifn *fns = pw_xcalloc(n ? n : 1, sizeof(*fns));
    if (pol->kind == REPLAY_HYBRID)
        for (size_t i = 0; i < n; i++)
            pw_hybrid_init(&fns[i].hy, &o->hybrid);
    struct replay_gen g;
    replay_gen_init(&g, t, n, o->seed, o->spread_start);
    struct replay_arrival *buf = NULL;
    size_t cap = 0;
    double policy_us = 0;
    for (size_t m = o->minute0; m < o->minute1; m++) {
        size_t k = replay_gen_minute(&g, m, &buf, &cap);
        for (size_t j = 0; j < k; j++) {
            const struct replay_arrival *a = &buf[j];
            struct ifn *f = &fns[a->fn];
            f->inv++;
            int64_t start = a->t;
            if (f->loaded_once && a->t < f->busy_until) {
                /* The instance is executing: concurrency is ignored. */
            } else {
                int warm;
                if (!f->loaded_once) {
                    warm = pol->kind == REPLAY_ORACLE && a->t - o->t0 >= o->restore_ms;
                    if (warm)
                        waste(f, o, a->t - o->restore_ms, a->t);
                } else {
                    int hy = pol->kind == REPLAY_HYBRID;
                    double t1 = hy ? replay_cpu_us() : 0;
                    warm = gap(o, pol, f, a->t, 1);
                    if (hy) {
                        pw_hybrid_observe(&f->hy, &o->hybrid, a->t - f->busy_until);
                        policy_us += replay_cpu_us() - t1;
                    }
                }
                if (!warm) {
                    f->cold++;
                    waste(f, o, a->t, a->t + o->restore_ms); /* the load counts as waste */
                    start = a->t + o->restore_ms;
                }
            }
            int64_t end = start + a->dur_ms;
            if (!f->loaded_once || end > f->busy_until)
                f->busy_until = end;
            f->loaded_once = 1;
        }
    }
    uint64_t *inv = pw_xcalloc(n ? n : 1, sizeof(*inv));
    uint64_t *cold = pw_xcalloc(n ? n : 1, sizeof(*cold));
    double waste_mb_ms = 0;
    for (size_t i = 0; i < n; i++) {
        struct ifn *f = &fns[i];
        if (f->loaded_once && f->busy_until < o->t_end)
            (void)gap(o, pol, f, o->t_end, 0);
        waste_mb_ms += f->waste_ms * t->fns[i].mem_mb;
        inv[i] = f->inv;
        cold[i] = f->cold;
        out->invocations += f->inv;
        out->cold += f->cold;
        if (pol->kind == REPLAY_HYBRID)
            pw_hybrid_fini(&f->hy);
    }
    out->cold_pct = out->invocations ? 100.0 * (double)out->cold / (double)out->invocations : 0;
    replay_fn_percentiles(out, inv, cold, n);
    out->waste_gbs = waste_mb_ms / 1024.0 / 1000.0;
    out->mean_vms = NAN;
    out->peak_vms = 0;
    out->policy_us_per_tick = policy_us / ((double)(o->t_end - o->t0) / 1000.0);
    free(inv);
    free(cold);
    free(buf);
    free(fns);
    replay_gen_fini(&g);
    out->wall_s = replay_wall_s() - w0;
    return 0;
}
