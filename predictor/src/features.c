/* features.c — one model row per function and forecast minute, from its history only. */
#include "pw/features.h"

#include <math.h>
#include <string.h>

const char *const pw_feat_names[PW_FEAT_COUNT] = {
#define PW_FEAT_NAME(id, name, meaning) name,
    PW_FEAT_MAP(PW_FEAT_NAME)
#undef PW_FEAT_NAME
};

static float capped(double v)
{
    return v > PW_FEAT_CAP_MIN ? PW_FEAT_CAP_MIN : (float)v;
}

/* pct returns the nearest-rank q-quantile of the n sorted values v. */
static float pct(const uint16_t *v, size_t n, double q)
{
    size_t r = (size_t)ceil(q * (double)n);
    return (float)v[r == 0 ? 0 : r - 1];
}

void pw_features_compute(const struct pw_history *h, int64_t now, const struct pw_fn_static *st, float *out)
{
    /* c[k - 1] is the count of minute now - k. */
    uint32_t c[PW_FEAT_WINDOW];
    for (int k = 1; k <= PW_FEAT_WINDOW; k++)
        c[k - 1] = pw_history_count_at(h, now, now - k);

    static const int lags[] = {1, 2, 3, 5, 10, 15, 30, 60};
    for (size_t i = 0; i < sizeof(lags) / sizeof(lags[0]); i++)
        out[PW_FEAT_LAG1 + i] = (float)c[lags[i] - 1];

    /* One pass accumulates the nested windows 5 < 15 < 60 < 120. */
    static const int wins[] = {5, 15, 60, 120};
    double sum = 0;
    uint32_t max = 0, active = 0;
    int w = 0;
    for (int k = 1; k <= PW_FEAT_WINDOW; k++) {
        sum += c[k - 1];
        if (c[k - 1] > max)
            max = c[k - 1];
        if (c[k - 1] > 0)
            active++;
        if (k == wins[w]) {
            out[PW_FEAT_MEAN5 + w] = (float)(sum / k);
            out[PW_FEAT_MAX5 + w] = (float)max;
            if (k == 60)
                out[PW_FEAT_ACTIVE60] = (float)active / 60.0f;
            if (k == 120)
                out[PW_FEAT_ACTIVE120] = (float)active / 120.0f;
            w++;
        }
    }

    out[PW_FEAT_MEANALL] = (float)pw_history_mean_before(h, now);
    int64_t last = pw_history_last_active_before(h, now);
    out[PW_FEAT_SINCE] = last == PW_HISTORY_NONE ? PW_FEAT_CAP_MIN : capped((double)(now - last));

    uint16_t gaps[PW_HISTORY_GAPS];
    size_t ng = pw_history_gaps_before(h, now, gaps);
    /* Insertion sort: at most 16 values. */
    for (size_t i = 1; i < ng; i++) {
        uint16_t v = gaps[i];
        size_t j = i;
        for (; j > 0 && gaps[j - 1] > v; j--)
            gaps[j] = gaps[j - 1];
        gaps[j] = v;
    }
    out[PW_FEAT_GAP50] = ng ? capped(pct(gaps, ng, 0.5)) : PW_FEAT_CAP_MIN;
    out[PW_FEAT_GAP90] = ng ? capped(pct(gaps, ng, 0.9)) : PW_FEAT_CAP_MIN;

    int64_t mod = now % 1440;
    double a = 2.0 * M_PI * (double)(mod < 0 ? mod + 1440 : mod) / 1440.0;
    out[PW_FEAT_TODSIN] = (float)sin(a);
    out[PW_FEAT_TODCOS] = (float)cos(a);
    out[PW_FEAT_LOGDUR] = st ? (float)log1p(st->dur_ms > 0 ? st->dur_ms : 0) : 0.0f;
    out[PW_FEAT_LOGMEM] = st ? (float)log1p(st->mem_mb > 0 ? st->mem_mb : 0) : 0.0f;
}
