/* forecast.c — the predictive pool policy: observe minutes into histories, then per tick one
 * batch of feature rows, one XGBoost call, and a Poisson sizing per function. */
#include "pw/forecast.h"

#include "pw/error.h"
#include "pw/features.h"
#include "pw/history.h"
#include "pw/model.h"
#include "pw/sizing.h"
#include "pw/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEURISTIC_WINDOW 10

struct pw_forecaster {
    size_t nfns, cap;
    struct pw_fn_static *statics; /* nfns, copied */
    struct pw_history *hist;      /* nfns */
    float *rows;                  /* nfns * PW_FEAT_COUNT, reused every tick (model only) */
    float *pred;                  /* nfns expected counts (model only) */
    const struct pw_model *model; /* not owned; NULL: heuristic */
    struct pw_forecast_params p;
};

void pw_forecast_params_default(struct pw_forecast_params *p)
{
    p->quantile = 0.99;
    p->restore_ms = 200.0;
    p->horizon_min = 1;
    p->max_target = 1000;
    p->keep_one_cost = 0.0003; /* chosen on the Azure 2019 sample: docs/predictor.md */
}

struct pw_forecaster *pw_forecaster_new(size_t nfns, const struct pw_fn_static *statics, const struct pw_model *model,
                                        const struct pw_forecast_params *p)
{
    struct pw_forecaster *f = pw_xcalloc(1, sizeof(*f));
    f->nfns = nfns;
    f->cap = nfns ? nfns : 1;
    f->statics = pw_xcalloc(nfns ? nfns : 1, sizeof(*f->statics));
    if (statics)
        memcpy(f->statics, statics, nfns * sizeof(*statics));
    f->hist = pw_xmalloc((nfns ? nfns : 1) * sizeof(*f->hist));
    for (size_t i = 0; i < nfns; i++)
        pw_history_init(&f->hist[i]);
    if (model) {
        f->rows = pw_xmalloc((nfns ? nfns : 1) * PW_FEAT_COUNT * sizeof(float));
        f->pred = pw_xmalloc((nfns ? nfns : 1) * sizeof(float));
    }
    f->model = model;
    if (p)
        f->p = *p;
    else
        pw_forecast_params_default(&f->p);
    return f;
}

int pw_forecaster_add(struct pw_forecaster *f, const struct pw_fn_static *st, size_t *index)
{
    if (f->nfns == f->cap) {
        f->cap *= 2;
        f->statics = pw_xrealloc(f->statics, f->cap * sizeof(*f->statics));
        f->hist = pw_xrealloc(f->hist, f->cap * sizeof(*f->hist));
        if (f->model) {
            f->rows = pw_xrealloc(f->rows, f->cap * PW_FEAT_COUNT * sizeof(float));
            f->pred = pw_xrealloc(f->pred, f->cap * sizeof(float));
        }
    }
    size_t i = f->nfns++;
    if (st)
        f->statics[i] = *st;
    else
        memset(&f->statics[i], 0, sizeof(f->statics[i]));
    pw_history_init(&f->hist[i]);
    *index = i;
    return PW_OK;
}

void pw_forecaster_set_model(struct pw_forecaster *f, const struct pw_model *model)
{
    if (model != NULL && f->rows == NULL) {
        f->rows = pw_xmalloc(f->cap * PW_FEAT_COUNT * sizeof(float));
        f->pred = pw_xmalloc(f->cap * sizeof(float));
    }
    f->model = model;
}

void pw_forecaster_set_static(struct pw_forecaster *f, size_t fn, const struct pw_fn_static *st)
{
    if (fn < f->nfns)
        f->statics[fn] = *st;
}

void pw_forecaster_free(struct pw_forecaster *f)
{
    if (!f)
        return;
    free(f->statics);
    free(f->hist);
    free(f->rows);
    free(f->pred);
    free(f);
}

void pw_forecaster_observe(struct pw_forecaster *f, size_t fn, int64_t minute, uint32_t count)
{
    if (fn >= f->nfns)
        return;
    /* A minute older than the latest is the caller's mistake; the history ignores it. */
    (void)pw_history_add(&f->hist[fn], minute, count);
}

/* heuristic_lambda is the no-model forecast: max(mean of the last 10 minutes, last minute). */
static double heuristic_lambda(const struct pw_history *h, int64_t minute)
{
    uint32_t sum = 0, last = pw_history_count_at(h, minute, minute - 1);
    for (int k = 1; k <= HEURISTIC_WINDOW; k++)
        sum += pw_history_count_at(h, minute, minute - k);
    double mean = (double)sum / HEURISTIC_WINDOW;
    return mean > last ? mean : (double)last;
}

double pw_forecaster_per_day(const struct pw_forecaster *f, size_t fn, int64_t minute)
{
    if (fn >= f->nfns)
        return 0;
    const struct pw_history *h = &f->hist[fn];
    if (h->first_minute == PW_HISTORY_NONE || minute <= h->first_minute)
        return 0;
    /* Only what was observed before minute: later minutes already recorded are taken out. */
    double total = (double)h->total;
    for (int64_t t = minute; t <= h->last_minute && t - minute < PW_HISTORY_MINUTES; t++)
        total -= (double)h->ring[((t % PW_HISTORY_MINUTES) + PW_HISTORY_MINUTES) % PW_HISTORY_MINUTES];
    if (total < 0)
        total = 0;
    return total * 1440.0 / (double)(minute - h->first_minute);
}

/* size_one sizes fn from its forecast and what its history says of its daily volume. */
static uint32_t size_one(const struct pw_forecaster *f, size_t i, int64_t minute, double lambda)
{
    struct pw_sizing_in in = {.lambda = lambda,
                              .dur_ms = f->statics[i].dur_ms,
                              .mem_mb = f->statics[i].mem_mb,
                              .per_day = pw_forecaster_per_day(f, i, minute)};
    return pw_sizing_floor(&in, &f->p);
}

int pw_forecaster_tick(struct pw_forecaster *f, int64_t minute, uint32_t *targets, double *lambda)
{
    if (!f->model) {
        for (size_t i = 0; i < f->nfns; i++) {
            double l = heuristic_lambda(&f->hist[i], minute);
            targets[i] = size_one(f, i, minute, l);
            if (lambda)
                lambda[i] = l;
        }
        return PW_OK;
    }
    for (size_t i = 0; i < f->nfns; i++)
        pw_features_compute(&f->hist[i], minute, &f->statics[i], f->rows + i * PW_FEAT_COUNT);
    int rv = pw_model_predict(f->model, f->rows, f->nfns, 0, f->pred);
    if (rv != PW_OK)
        return rv;
    for (size_t i = 0; i < f->nfns; i++) {
        double l = f->pred[i];
        targets[i] = size_one(f, i, minute, l);
        if (lambda)
            lambda[i] = l;
    }
    return PW_OK;
}

static int cmp_contrib(const void *a, const void *b)
{
    float x = fabsf(((const struct pw_contrib *)a)->contrib), y = fabsf(((const struct pw_contrib *)b)->contrib);
    return x < y ? 1 : x > y ? -1 : 0;
}

size_t pw_forecaster_explain(struct pw_forecaster *f, size_t fn, int64_t minute, struct pw_contrib *out, size_t max)
{
    float row[PW_FEAT_COUNT], contrib[PW_FEAT_COUNT + 1];
    struct pw_contrib all[PW_FEAT_COUNT + 1];

    if (!f->model || fn >= f->nfns || max == 0)
        return 0;
    pw_features_compute(&f->hist[fn], minute, &f->statics[fn], row);
    if (pw_model_contribs(f->model, row, 1, contrib) != PW_OK)
        return 0;
    for (size_t i = 0; i < PW_FEAT_COUNT; i++)
        all[i] = (struct pw_contrib){.feature = pw_feat_names[i], .value = row[i], .contrib = contrib[i]};
    /* The bias (expected margin over the training data) is listed too, so the entries sum to the
     * forecast's log rate. */
    all[PW_FEAT_COUNT] = (struct pw_contrib){.feature = "bias", .value = 0.0f, .contrib = contrib[PW_FEAT_COUNT]};
    qsort(all, PW_FEAT_COUNT + 1, sizeof(all[0]), cmp_contrib);
    size_t n = max < PW_FEAT_COUNT + 1 ? max : PW_FEAT_COUNT + 1;
    memcpy(out, all, n * sizeof(*out));
    return n;
}

size_t pw_forecaster_bytes_per_function(void)
{
    /* History and statics always; with a model also the feature row, the copied prediction and
     * XGBoost's own output buffer for the batch. */
    return sizeof(struct pw_history) + sizeof(struct pw_fn_static) + PW_FEAT_COUNT * sizeof(float) +
           2 * sizeof(float);
}
