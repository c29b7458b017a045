/* train.c — model training from minute series; see train.h. */
#include "pw/train.h"

#include "pw/error.h"
#include "pw/features.h"
#include "pw/history.h"
#include "pw/log.h"
#include "pw/trace.h"

#include <stdlib.h>
#include <string.h>

void pw_train_opts_default(struct pw_train_opts *o)
{
    memset(o, 0, sizeof(*o));
    pw_model_params_default(&o->model);
    o->model.eta = 0.3; /* as the shipped model (models/MODEL_CARD.md) */
    o->model.max_delta_step = 0.7;
    o->model.nthread = 1;
    o->zero_keep = 0.25;
    o->seed = 1;
    o->min_rows = 1000;
}

struct rowbuf {
    float *x, *y, *w;
    size_t n, cap;
};

static void push(struct rowbuf *r, const float *x, float y, float w)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 4096;
        r->x = pw_xrealloc(r->x, r->cap * PW_FEAT_COUNT * sizeof(float));
        r->y = pw_xrealloc(r->y, r->cap * sizeof(float));
        r->w = pw_xrealloc(r->w, r->cap * sizeof(float));
    }
    memcpy(r->x + r->n * PW_FEAT_COUNT, x, PW_FEAT_COUNT * sizeof(float));
    r->y[r->n] = y;
    r->w[r->n] = w;
    r->n++;
}

int pw_train_series(const struct pw_series *s, size_t n, const struct pw_train_opts *o, struct pw_model **out,
                    size_t *rows)
{
    if (!(o->zero_keep > 0 && o->zero_keep <= 1))
        return PW_ERR_INVAL;
    struct rowbuf r = {0};
    size_t active = 0;
    uint64_t rng = o->seed;
    float x[PW_FEAT_COUNT];
    for (size_t i = 0; i < n; i++) {
        struct pw_history h;
        pw_history_init(&h);
        for (size_t k = 0; k < s[i].n; k++) {
            int64_t m = s[i].first_minute + (int64_t)k;
            if (k >= PW_FEAT_WINDOW) {
                pw_features_compute(&h, m, &s[i].st, x);
                float y = (float)s[i].counts[k];
                if (x[PW_FEAT_MAX120] == 0 && y == 0) {
                    if (pw_rng_unit(&rng) < o->zero_keep)
                        push(&r, x, y, (float)(1.0 / o->zero_keep));
                } else {
                    push(&r, x, y, 1.0f);
                    active++;
                }
            }
            pw_history_add(&h, m, s[i].counts[k]);
        }
    }
    int rv = PW_ERR_INVAL;
    if (active < o->min_rows) {
        pw_log_info("predictor", "training skipped: %zu active rows, fewer than %zu", active, o->min_rows);
    } else {
        rv = pw_model_train(r.x, r.n, PW_FEAT_COUNT, r.y, r.w, &o->model, out);
        if (rv == PW_OK && rows != NULL)
            *rows = r.n;
    }
    free(r.x);
    free(r.y);
    free(r.w);
    return rv;
}
