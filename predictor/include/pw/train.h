/* train.h — training the forecast model from minute series (prewarmd's background retraining).
 *
 * Each series is one function's invocations per minute over a contiguous range, with its
 * statics. Rows are built exactly as the forecaster builds its features (history, then
 * features at each minute, then the minute's count as the target), from the feature window on;
 * rows whose whole window and target are zero are sampled at zero_keep with weight 1/zero_keep
 * (unbiased loss, fewer rows). prewarm-train does the same from a trace directory, with
 * held-out evaluation. Pure computation plus XGBoost; any thread. */
#ifndef PW_TRAIN_H
#define PW_TRAIN_H

#include "pw/forecast.h"
#include "pw/model.h"

#include <stddef.h>
#include <stdint.h>

struct pw_series {
    const uint32_t *counts; /* n minutes, the first at first_minute; not owned */
    size_t n;
    int64_t first_minute;
    struct pw_fn_static st;
};

struct pw_train_opts {
    struct pw_model_params model;
    double zero_keep;   /* (0, 1]; default 0.25 */
    uint64_t seed;
    size_t min_rows;    /* fewer non-zero rows than this: PW_ERR_INVAL (not enough to learn) */
};
void pw_train_opts_default(struct pw_train_opts *o);

/* pw_train_series trains a model from n series. On PW_OK *out is the caller's (pw_model_free)
 * and *rows (if not NULL) the number of training rows. */
int pw_train_series(const struct pw_series *s, size_t n, const struct pw_train_opts *o, struct pw_model **out,
                    size_t *rows);

#endif
