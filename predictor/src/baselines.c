/* baselines.c — hybrid histogram (Shahrad et al., ATC '20) and KPA-like reactive scaling as
 * pure state machines; see baselines.h for the rules and docs/replay.md for the reasoning. */
#include "pw/baselines.h"

#include "pw/util.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- hybrid histogram ---- */

static const char *const hybrid_reason_names[] = {
#define PW_HYBRID_REASON_STR(n, s) s,
    PW_HYBRID_REASON_MAP(PW_HYBRID_REASON_STR)
#undef PW_HYBRID_REASON_STR
};

const char *pw_hybrid_reason_str(enum pw_hybrid_reason r)
{
    return (unsigned)r < PW_HYBRID__COUNT ? hybrid_reason_names[r] : "unknown";
}

void pw_hybrid_params_default(struct pw_hybrid_params *p)
{
    p->bin_ms = 60 * 1000;
    p->nbins = 240;
    p->head_pct = 5.0;
    p->tail_pct = 99.0;
    p->margin = 0.10;
    p->min_samples = 10;
    p->cv_min = 2.0;
}

void pw_hybrid_init(struct pw_hybrid *h, const struct pw_hybrid_params *p)
{
    assert(p->nbins > 0 && p->nbins <= PW_HYBRID_MAX_BINS && p->bin_ms > 0);
    memset(h, 0, sizeof(*h));
    h->nbins = p->nbins;
    h->bins = pw_xcalloc(p->nbins, sizeof(*h->bins));
}

void pw_hybrid_fini(struct pw_hybrid *h)
{
    free(h->bins);
    memset(h, 0, sizeof(*h));
}

void pw_hybrid_observe(struct pw_hybrid *h, const struct pw_hybrid_params *p, int64_t idle_ms)
{
    if (idle_ms < 0)
        return;
    int64_t b = idle_ms / p->bin_ms;
    if (b >= (int64_t)h->nbins) {
        h->oob++;
        return;
    }
    if (h->bins[b] < UINT32_MAX)
        h->bins[b]++;
    h->samples++;
}

double pw_hybrid_bin_cv(const struct pw_hybrid *h)
{
    if (h->samples == 0 || h->nbins == 0)
        return 0;
    double mean = (double)h->samples / h->nbins, ss = 0;
    for (uint32_t i = 0; i < h->nbins; i++) {
        double d = h->bins[i] - mean;
        ss += d * d;
    }
    return sqrt(ss / h->nbins) / mean;
}

/* pct_bin returns the first bin at which the cumulative count reaches pct % of the samples. */
static uint32_t pct_bin(const struct pw_hybrid *h, double pct)
{
    double need = ceil(pct / 100.0 * (double)h->samples);
    if (need < 1)
        need = 1;
    uint64_t cum = 0;
    for (uint32_t i = 0; i < h->nbins; i++) {
        cum += h->bins[i];
        if ((double)cum >= need)
            return i;
    }
    return h->nbins - 1;
}

void pw_hybrid_windows(const struct pw_hybrid *h, const struct pw_hybrid_params *p, struct pw_hybrid_windows *out)
{
    int64_t range = (int64_t)h->nbins * p->bin_ms;
    out->prewarm_ms = 0;
    out->keepalive_ms = range;
    if (h->oob > h->samples) {
        out->reason = PW_HYBRID_OOB;
        return;
    }
    if (h->samples < p->min_samples) {
        out->reason = PW_HYBRID_FEW_SAMPLES;
        return;
    }
    if (pw_hybrid_bin_cv(h) < p->cv_min) {
        out->reason = PW_HYBRID_LOW_CV;
        return;
    }
    int64_t head = (int64_t)pct_bin(h, p->head_pct) * p->bin_ms;
    int64_t tail = ((int64_t)pct_bin(h, p->tail_pct) + 1) * p->bin_ms;
    /* Rounded to the millisecond: 31 min * 1.1 is 2046000.0000000002 in binary. */
    int64_t prewarm = llround((double)head * (1.0 - p->margin));
    int64_t until = llround((double)tail * (1.0 + p->margin));
    out->prewarm_ms = prewarm;
    out->keepalive_ms = until - prewarm;
    out->reason = PW_HYBRID_HISTOGRAM;
}

/* ---- reactive (KPA-like) ---- */

void pw_kpa_params_default(struct pw_kpa_params *p)
{
    p->bucket_ms = 1000;
    p->stable_ms = 60 * 1000;
    p->panic_ms = 6 * 1000;
    p->eval_ms = 2 * 1000;
    p->scale_to_zero_ms = 30 * 1000;
    p->target = 1.0;
    p->panic_threshold = 2.0;
}

void pw_kpa_init(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now)
{
    assert(p->bucket_ms > 0 && p->stable_ms % p->bucket_ms == 0 && p->panic_ms % p->bucket_ms == 0);
    assert(p->stable_ms / p->bucket_ms < PW_KPA_MAX_BUCKETS && p->panic_ms <= p->stable_ms);
    memset(k, 0, sizeof(*k));
    /* One slot more than the window: on a bucket edge the window is the n buckets before the
     * current, still empty one. */
    k->nbuckets = (uint32_t)(p->stable_ms / p->bucket_ms) + 1;
    k->bucket_end = (now / p->bucket_ms + 1) * p->bucket_ms;
    k->last = now;
    k->last_active = INT64_MIN / 2;
    k->panic_until = INT64_MIN / 2;
}

/* advance integrates the in-flight count from k->last up to now, rolling buckets. */
static void advance(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now)
{
    if (now <= k->last)
        return;
    if (now - k->bucket_end > (int64_t)k->nbuckets * p->bucket_ms) {
        /* A long quiet (or steady) stretch: every bucket of the window holds the same value. */
        int64_t full = (int64_t)k->inflight * p->bucket_ms;
        for (uint32_t i = 0; i < k->nbuckets; i++)
            k->buckets[i] = full;
        k->bucket_end = (now / p->bucket_ms + 1) * p->bucket_ms;
        k->cur = 0;
        k->buckets[0] = (int64_t)k->inflight * (now - (k->bucket_end - p->bucket_ms));
        k->last = now;
        return;
    }
    while (k->bucket_end <= now) {
        k->buckets[k->cur] += (int64_t)k->inflight * (k->bucket_end - k->last);
        k->last = k->bucket_end;
        k->cur = (k->cur + 1) % k->nbuckets;
        k->buckets[k->cur] = 0;
        k->bucket_end += p->bucket_ms;
    }
    k->buckets[k->cur] += (int64_t)k->inflight * (now - k->last);
    k->last = now;
}

void pw_kpa_request_start(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now)
{
    advance(k, p, now);
    k->inflight++;
    k->last_active = now;
}

void pw_kpa_request_end(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now)
{
    advance(k, p, now);
    assert(k->inflight > 0);
    k->inflight--;
    k->last_active = now;
}

/* window_avg is the average concurrency over the n buckets' time that ends at now: the current
 * (partial) bucket plus the buckets before it, n whole buckets back when now is on a bucket
 * edge (where evaluations fall, and the current bucket is still empty). */
static double window_avg(const struct pw_kpa *k, const struct pw_kpa_params *p, uint32_t n, int64_t now)
{
    int64_t partial = now - (k->bucket_end - p->bucket_ms);
    uint32_t back = partial > 0 ? n - 1 : n;
    int64_t sum = k->buckets[k->cur];
    for (uint32_t i = 1; i <= back; i++)
        sum += k->buckets[(k->cur + k->nbuckets - i) % k->nbuckets];
    return (double)sum / (double)((int64_t)n * p->bucket_ms);
}

uint32_t pw_kpa_evaluate(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now, uint32_t ready)
{
    advance(k, p, now);
    if (k->inflight == 0 && now - k->last_active >= p->scale_to_zero_ms) {
        k->panic_until = INT64_MIN / 2;
        k->desired = 0;
        return 0;
    }
    double stable = window_avg(k, p, k->nbuckets - 1, now);
    double panic = window_avg(k, p, (uint32_t)(p->panic_ms / p->bucket_ms), now);
    /* A tiny epsilon keeps exact integers (2.0 concurrency) from rounding up through float error. */
    uint32_t want_stable = (uint32_t)ceil(stable / p->target - 1e-9);
    uint32_t want_panic = (uint32_t)ceil(panic / p->target - 1e-9);
    uint32_t base = ready > 0 ? ready : 1;
    if ((double)want_panic >= p->panic_threshold * base)
        k->panic_until = now + p->stable_ms;
    if (now < k->panic_until)
        k->desired = PW_MAX(want_panic, k->desired);
    else
        k->desired = want_stable;
    /* While a request is in flight the function has at least one VM in use. */
    if (k->desired == 0 && k->inflight > 0)
        k->desired = 1;
    return k->desired;
}

int pw_kpa_quiet(const struct pw_kpa *k, int64_t now)
{
    return k->desired == 0 && k->inflight == 0 && now >= k->panic_until;
}
