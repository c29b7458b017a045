/* predict.h — the predictor inside prewarmd.
 *
 * Counts every acquire per function per wall-clock minute; at each minute boundary feeds the
 * minute that ended to the forecaster, runs the forecast for every function in a libuv worker
 * thread, and back on the loop sets each 'predictive' pool's floor (its quantile of forecast
 * demand over the restore time and the function's measured duration) through
 * pw_core_set_dynamic. On start it reloads recent minutes from PostgreSQL so a restart does not
 * forget the history. With retraining on, it keeps the last retrain_minutes of counts per
 * function and, every retrain_every_ms, trains a new model from them in another worker and swaps
 * it in between two forecasts. The forecaster is touched by the worker only while a forecast runs; the
 * loop waits for the next minute rather than share it.
 *
 * Threads: every function here runs on the loop thread. */
#ifndef PW_PREDICT_H
#define PW_PREDICT_H

#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_daemon;
struct pw_predict;

/* pw_predict_new loads the model at model_path ("" or a missing file: the recent-rate
 * heuristic, with a warning) and the last history minutes from the store. The caller owns the
 * result (pw_predict_free after the loop stopped). */
struct pw_predict *pw_predict_new(struct pw_daemon *d, const char *model_path, int64_t restore_ms);
void pw_predict_free(struct pw_predict *p);

/* pw_predict_stop cancels background work at shutdown (call before the loop's last run). */
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
/* pw_predict_model_name returns the path of the model in use ("" for the recent-rate
 * heuristic; owned by p, valid until the next model swap) and, when retrains is not NULL, how
 * many retrained models were swapped in. */
const char *pw_predict_model_name(const struct pw_predict *p, uint64_t *retrains);

#endif
