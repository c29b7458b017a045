/* forecast.h — the predictive pool policy: per-function minute history, features, one global
 * XGBoost model, and pool sizing, behind one object used by prewarmd and prewarm-replay.
 *
 * Functions are dense indices 0..nfns-1 (the caller maps names to indices). Time is in whole
 * minutes. Each minute the caller reports the invocations each function started in the minute
 * that just ended (pw_forecaster_observe), then asks for the targets of the minute that starts
 * (pw_forecaster_tick): a floor of VMs to keep alive for each function. Nothing here looks at
 * the future: a target for minute m uses only observations of minutes < m.
 *
 * Threads: a forecaster belongs to one thread at a time (prewarmd runs tick in a worker
 * thread and hands the results back to the loop). Models are read-only once loaded and may be
 * shared. */
#ifndef PW_FORECAST_H
#define PW_FORECAST_H

#include <stddef.h>
#include <stdint.h>

struct pw_model; /* model.h */
struct pw_forecaster;

/* What the forecaster knows of a function besides its history. */
struct pw_fn_static {
    double dur_ms;  /* typical execution time (the trace's average, or measured) */
    double mem_mb;  /* memory per VM */
};

struct pw_forecast_params {
    double quantile;     /* pool target quantile of concurrent demand, e.g. 0.99 */
    double restore_ms;   /* time to restore a VM: arrivals during it count toward the target */
    int32_t horizon_min; /* minutes ahead the target covers (>= 1) */
    uint32_t max_target; /* cap per function (the operator's max applies on top) */
    /* The last warm VM of a quiet function: kept for the coming minute when the chance of an
     * arrival, per GB of memory and per invocation the function gets in a day, exceeds this
     * (see sizing.h). 0: kept whenever that chance exceeds 1 - quantile. */
    double keep_one_cost;
};
void pw_forecast_params_default(struct pw_forecast_params *p);

/* One feature's share of a forecast (XGBoost's SHAP-style contribution, in log space). */
struct pw_contrib {
    const char *feature; /* static name */
    float value;         /* the feature's value */
    float contrib;       /* its contribution to the prediction */
};

/* pw_forecaster_new makes a forecaster for nfns functions (statics copied). model may be NULL:
 * then the forecast is a documented heuristic (recent rate), which tests and a cold start of
 * prewarmd use. The forecaster does not own model; it must outlive the forecaster. */
struct pw_forecaster *pw_forecaster_new(size_t nfns, const struct pw_fn_static *statics, const struct pw_model *model,
                                        const struct pw_forecast_params *p);
void pw_forecaster_free(struct pw_forecaster *f);

/* pw_forecaster_add appends a function (statics copied) and returns its index in *index; its
 * history starts empty. pw_forecaster_set_static replaces fn's statics (e.g. a measured
 * duration). Neither may run while a tick runs in another thread. */
int pw_forecaster_add(struct pw_forecaster *f, const struct pw_fn_static *st, size_t *index);
void pw_forecaster_set_static(struct pw_forecaster *f, size_t fn, const struct pw_fn_static *st);

/* pw_forecaster_set_model replaces the model (NULL: the heuristic); the history is kept. The
 * forecaster does not own it. Not while a tick runs. */
void pw_forecaster_set_model(struct pw_forecaster *f, const struct pw_model *model);

/* pw_forecaster_observe records that fn started count invocations in minute. Minutes of one
 * function must not go backwards; skipped minutes count as zero. */
void pw_forecaster_observe(struct pw_forecaster *f, size_t fn, int64_t minute, uint32_t count);

/* pw_forecaster_tick forecasts every function for the minute that starts at `minute` and writes
 * the VM floor for each into targets[nfns] and, if not NULL, the expected invocations per
 * minute into lambda[nfns]. Returns PW_OK or an error from the model. */
int pw_forecaster_tick(struct pw_forecaster *f, int64_t minute, uint32_t *targets, double *lambda);

/* pw_forecaster_explain fills up to max contributions (largest magnitude first) of fn's latest
 * forecast; returns how many. 0 without a model. */
size_t pw_forecaster_explain(struct pw_forecaster *f, size_t fn, int64_t minute, struct pw_contrib *out, size_t max);

/* pw_forecaster_per_day is fn's invocations per day as observed up to minute (0 before any). */
double pw_forecaster_per_day(const struct pw_forecaster *f, size_t fn, int64_t minute);

/* Memory the forecaster keeps per function, for sizing at 100,000 functions. */
size_t pw_forecaster_bytes_per_function(void);

#endif
