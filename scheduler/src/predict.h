/* predict.h — the predictor inside prewarmd.
 *
 * Counts every acquire per function per wall-clock minute; at each minute boundary feeds the
 * minute that ended to the forecaster, runs the forecast for every function in a libuv worker
 * thread, and back on the loop sets each 'predictive' pool's floor (its quantile of forecast
 * demand over the restore time and the function's measured duration) through
 * pw_core_set_dynamic. On start it reloads recent minutes from PostgreSQL so a restart does not
 * forget the history. It keeps the last retrain_minutes of counts per function (2 bytes each)
 * for training; the model registry (models.h) trains from them, on schedule or when asked, and
 * hands models in with pw_predict_use_model. The forecaster is touched by the worker only while
 * a forecast runs; a model handed in meanwhile waits for the forecast to end.
 *
 * Threads: every function here runs on the loop thread. */
#ifndef PW_PREDICT_H
#define PW_PREDICT_H

#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pw/train.h"

struct pw_daemon;
struct pw_predict;
struct pw_model;
struct pw_models;

/* pw_predict_new makes the model registry (pw_models_new: the registry's active model, else
 * the file at model_path, else the recent-rate heuristic, with a warning) and loads the last
 * history minutes from the store. The caller owns the result (pw_predict_free after the loop
 * stopped). */
struct pw_predict *pw_predict_new(struct pw_daemon *d, const char *model_path, int64_t restore_ms);
void pw_predict_free(struct pw_predict *p);

/* pw_predict_stop cancels background work (training, activation) at shutdown (call before the
 * loop's last run). */
void pw_predict_stop(struct pw_predict *p);

/* pw_predict_invocation counts one invocation of fn now. */
void pw_predict_invocation(struct pw_predict *p, const char *fn);
/* pw_predict_duration folds one measured execution time of fn into its average. */
void pw_predict_duration(struct pw_predict *p, const char *fn, int64_t duration_ms);
/* pw_predict_tick closes minutes and starts forecasts; call it from the daemon's tick. */
void pw_predict_tick(struct pw_predict *p, int64_t wall_ms);

/* pw_predict_forecast_json appends fn's latest forecast as a JSON object to b: minute, lambda,
 * floor, quantile, the model in use and the top feature contributions. Returns PW_ERR_NOTFOUND
 * when fn has no forecast yet. */
int pw_predict_forecast_json(struct pw_predict *p, const char *fn, struct pw_buf *b);

/* pw_predict_model_loaded tells /readyz whether a model (not the heuristic) is in use. */
int pw_predict_model_loaded(const struct pw_predict *p);

/* Forecast against actual, summed over every closed minute that had a forecast: per function,
 * |forecast rate - invocations counted| in invocations per minute. */
struct pw_predict_error {
    uint64_t minutes;          /* closed minutes that had at least one forecast */
    uint64_t function_minutes; /* (function, minute) pairs compared */
    double abs_error_sum;      /* sum of |forecast - actual|, invocations */
    double actual_sum;         /* sum of actual invocations over the same pairs */
    double last_minute_ratio;  /* the latest such minute: sum |error| / sum actual (0 if none) */
};
/* pw_predict_error_stats copies the running totals out. */
void pw_predict_error_stats(const struct pw_predict *p, struct pw_predict_error *out);
/* pw_predict_model_name returns the name of the model in use (its registry version, or the
 * file's path if it could not be registered; "" for the recent-rate heuristic; owned by p,
 * valid until the next model swap) and, when swaps is not NULL, how many models were swapped
 * in since start (retrained or activated). */
const char *pw_predict_model_name(const struct pw_predict *p, uint64_t *swaps);

/* pw_predict_use_model makes m (owned by p from now on) the model in use, named name (copied),
 * at once or, while a forecast runs, when it ends. */
void pw_predict_use_model(struct pw_predict *p, struct pw_model *m, const char *name);

/* Training data: one series per function with history, the last retrain_minutes at most. */
struct pw_predict_series {
    struct pw_series *series; /* n entries; counts point into .counts */
    uint32_t *counts;
    size_t n;
    size_t minutes;           /* the longest series */
};
/* pw_predict_series copies the training rings into out (the caller's: pw_predict_series_fini,
 * also on error). Returns PW_OK, or PW_ERR_NOTFOUND when no function has history. */
int pw_predict_series(struct pw_predict *p, struct pw_predict_series *out);
void pw_predict_series_fini(struct pw_predict_series *s);

/* pw_predict_models returns the model registry (owned by p). */
struct pw_models *pw_predict_models(struct pw_predict *p);

#endif
