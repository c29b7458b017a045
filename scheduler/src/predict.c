/* predict.c — per-minute forecasts for prewarmd's predictive pools; see predict.h. */
#include "predict.h"

#include "daemon.h"

#include "pw/error.h"
#include "pw/forecast.h"
#include "pw/log.h"
#include "pw/model.h"
#include "pw/sizing.h"
#include "pw/train.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define HISTORY_MINUTES 180 /* reloaded from the store at start */
#define MAX_CONTRIBS 8

/* One function the predictor knows, by dense index. */
struct pfn {
    struct pw_hnode hnode;
    char name[PW_NAME_MAX];
    size_t index;
    uint32_t count;      /* invocations in the current minute */
    double dur_ms;       /* average execution time, from releases */
    uint64_t durations;  /* how many releases folded in */
    double lambda;       /* latest forecast: invocations per minute */
    uint32_t floor;      /* latest floor set on the pool */
    int64_t minute;      /* of the latest forecast; -1 none */
    uint16_t *ring;      /* the last retrain_minutes counts, for retraining (NULL when off) */
    int64_t ring_first;  /* first minute recorded in ring; -1 none */
};

struct pw_predict {
    struct pw_daemon *d;
    struct pw_model *model;
    char model_path[512];
    struct pw_forecaster *fc;
    struct pw_forecast_params params;
    struct pw_htab by_name;
    struct pfn **fns; /* by index */
    size_t nfns, cap;
    int64_t minute;   /* the wall minute being counted */
    /* A forecast in the worker. */
    uv_work_t work;
    int busy;
    int64_t work_minute;
    size_t work_n;
    uint32_t *targets;
    double *lambdas;
    int work_rv;
    double last_tick_ms;
    /* Background retraining: a snapshot of the rings is trained in a worker; the new model
     * replaces the old between forecasts. */
    int64_t retrain_every_ms;   /* 0: never */
    size_t retrain_minutes;     /* ring length */
    int64_t next_retrain_ms;    /* wall clock */
    int training;
    uv_work_t train_work;
    struct pw_series *series;
    uint32_t *series_counts;
    size_t nseries;
    struct pw_model *trained;   /* result, or waiting to be swapped in */
    int train_rv;
    size_t train_rows;
    double train_secs;
    uint64_t retrains;
    char model_save[512];
    struct pw_predict_error err; /* forecast against the counts that came */
};

static int pfn_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct pfn, hnode)->name, key) == 0;
}

static struct pfn *pfn_find(struct pw_predict *p, const char *name)
{
    struct pw_hnode *n = pw_htab_find(&p->by_name, pw_hash_str(name), name, pfn_eq);
    return n ? pw_container_of(n, struct pfn, hnode) : NULL;
}

/* pfn_get finds or adds fn (never while a forecast runs: the worker owns the forecaster). */
static struct pfn *pfn_get(struct pw_predict *p, const char *name)
{
    struct pfn *e = pfn_find(p, name);
    if (e != NULL || p->busy)
        return e;
    struct pw_function_spec spec;
    struct pw_fn_static st = {.dur_ms = 1000.0, .mem_mb = 128.0};
    if (pw_core_function_get(p->d->core, name, &spec) == PW_OK)
        st.mem_mb = spec.memory_mb;
    size_t index;
    if (pw_forecaster_add(p->fc, &st, &index) != PW_OK)
        return NULL;
    e = pw_xcalloc(1, sizeof(*e));
    pw_strlcpy(e->name, name, sizeof(e->name));
    e->index = index;
    e->dur_ms = st.dur_ms;
    e->minute = -1;
    e->ring_first = -1;
    if (p->retrain_minutes > 0)
        e->ring = pw_xcalloc(p->retrain_minutes, sizeof(*e->ring));
    pw_htab_insert(&p->by_name, &e->hnode, pw_hash_str(e->name));
    if (p->nfns == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->fns = pw_xrealloc(p->fns, p->cap * sizeof(*p->fns));
    }
    p->fns[p->nfns++] = e;
    return e;
}

static void load_row(void *arg, const char *fn, int64_t minute, uint64_t count)
{
    struct pw_predict *p = arg;
    struct pfn *e = pfn_get(p, fn);
    if (e != NULL)
        pw_forecaster_observe(p->fc, e->index, minute, count > UINT32_MAX ? UINT32_MAX : (uint32_t)count);
}

struct pw_predict *pw_predict_new(struct pw_daemon *d, const char *model_path, int64_t restore_ms)
{
    struct pw_predict *p = pw_xcalloc(1, sizeof(*p));
    p->d = d;
    p->retrain_every_ms = d->cfg.retrain_every_ms;
    p->retrain_minutes = d->cfg.retrain_every_ms > 0 ? d->cfg.retrain_minutes : 0;
    p->next_retrain_ms = pw_now_wall_ms() + d->cfg.retrain_every_ms;
    pw_strlcpy(p->model_save, d->cfg.model_save, sizeof(p->model_save));
    pw_htab_init(&p->by_name);
    pw_forecast_params_default(&p->params);
    p->params.restore_ms = (double)restore_ms;
    struct stat sb;
    if (model_path != NULL && model_path[0] != '\0') {
        if (stat(model_path, &sb) != 0) {
            pw_log_warn("predict", "model %s not found: forecasting with the recent-rate heuristic", model_path);
        } else if (pw_model_load(model_path, &p->model) != PW_OK) {
            pw_log_warn("predict", "model %s does not load: forecasting with the recent-rate heuristic", model_path);
            p->model = NULL;
        } else {
            pw_model_set_nthread(p->model, 1);
            pw_strlcpy(p->model_path, model_path, sizeof(p->model_path));
            pw_log_info("predict", "model %s loaded", model_path);
        }
    } else {
        pw_log_warn("predict", "no model configured: forecasting with the recent-rate heuristic");
    }
    p->fc = pw_forecaster_new(0, NULL, p->model, &p->params);
    p->minute = pw_now_wall_ms() / 60000;
    int64_t since = p->minute - HISTORY_MINUTES;
    if (pw_store_load_invocations(d->store, since, load_row, p) == PW_OK)
        pw_log_info("predict", "history: %zu functions since minute %" PRId64, p->nfns, since);
    return p;
}

void pw_predict_free(struct pw_predict *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nfns; i++) {
        free(p->fns[i]->ring);
        free(p->fns[i]);
    }
    free(p->fns);
    free(p->series);
    free(p->series_counts);
    pw_model_free(p->trained);
    pw_htab_fini(&p->by_name);
    pw_forecaster_free(p->fc);
    pw_model_free(p->model);
    free(p->targets);
    free(p->lambdas);
    free(p);
}

void pw_predict_invocation(struct pw_predict *p, const char *fn)
{
    struct pfn *e = pfn_get(p, fn);
    if (e != NULL && e->count < UINT32_MAX)
        e->count++;
}

void pw_predict_duration(struct pw_predict *p, const char *fn, int64_t duration_ms)
{
    struct pfn *e = pfn_find(p, fn);
    if (e == NULL || duration_ms <= 0)
        return;
    /* A running mean for the first releases, then an exponential average that follows change. */
    e->durations++;
    double w = e->durations < 100 ? 1.0 / (double)e->durations : 0.01;
    e->dur_ms += w * ((double)duration_ms - e->dur_ms);
}

/* ---- the forecast in a worker ---- */

static void work_cb(uv_work_t *w)
{
    struct pw_predict *p = w->data;
    int64_t t0 = pw_now_mono_ms();
    p->work_rv = pw_forecaster_tick(p->fc, p->work_minute, p->targets, p->lambdas);
    p->last_tick_ms = (double)(pw_now_mono_ms() - t0);
}

static void swap_in_trained(struct pw_predict *p);

static void after_work_cb(uv_work_t *w, int status)
{
    struct pw_predict *p = w->data;
    p->busy = 0;
    if (p->trained != NULL && !p->training)
        swap_in_trained(p);
    if (status != 0 || p->work_rv != PW_OK) {
        pw_log_warn("predict", "forecast for minute %" PRId64 " failed (%d/%d)", p->work_minute, status, p->work_rv);
        return;
    }
    struct pw_daemon *d = p->d;
    int64_t now = pw_daemon_now(d);
    size_t applied = 0;
    for (size_t i = 0; i < p->work_n; i++) {
        struct pfn *e = p->fns[i];
        e->lambda = p->lambdas[i];
        e->minute = p->work_minute;
        struct pw_function_spec spec;
        if (pw_core_function_get(d->core, e->name, &spec) != PW_OK || spec.pool.kind != PW_POLICY_PREDICTIVE)
            continue;
        struct pw_forecast_params fp = p->params;
        fp.quantile = spec.pool.quantile;
        fp.max_target = spec.pool.max;
        struct pw_sizing_in in = {.lambda = e->lambda,
                                  .dur_ms = e->dur_ms,
                                  .mem_mb = spec.memory_mb,
                                  .per_day = pw_forecaster_per_day(p->fc, e->index, p->work_minute)};
        e->floor = pw_sizing_floor(&in, &fp);
        /* Above the floor VMs live the pool's keep-alive after use: a grace for bursts the
         * forecast missed. */
        pw_core_set_dynamic(d->core, now, e->name, e->floor, spec.pool.keepalive_ms);
        applied++;
    }
    pw_daemon_drain(d);
    pw_log_debug("predict", "minute %" PRId64 ": %zu functions forecast in %.0f ms, %zu predictive pools sized",
                 p->work_minute, p->work_n, p->last_tick_ms, applied);
}

/* ---- background retraining ---- */

static void train_work_cb(uv_work_t *w)
{
    struct pw_predict *p = w->data;
    int64_t t0 = pw_now_mono_ms();
    struct pw_train_opts o;
    pw_train_opts_default(&o);
    p->trained = NULL;
    p->train_rows = 0;
    p->train_rv = pw_train_series(p->series, p->nseries, &o, &p->trained, &p->train_rows);
    if (p->train_rv == PW_OK && p->model_save[0] != '\0' && pw_model_save(p->trained, p->model_save) != PW_OK)
        pw_log_warn("predict", "cannot save the retrained model to %s", p->model_save);
    p->train_secs = (double)(pw_now_mono_ms() - t0) / 1000.0;
}

static void swap_in_trained(struct pw_predict *p)
{
    pw_forecaster_set_model(p->fc, p->trained);
    pw_model_free(p->model);
    p->model = p->trained;
    p->trained = NULL;
    p->retrains++;
    snprintf(p->model_path, sizeof(p->model_path), "retrained #%llu (%zu rows)", (unsigned long long)p->retrains,
             p->train_rows);
    pw_log_info("predict", "model retrained on %zu functions, %zu rows in %.1f s: now in use", p->nseries,
                p->train_rows, p->train_secs);
}

static void train_after_cb(uv_work_t *w, int status)
{
    struct pw_predict *p = w->data;
    p->training = 0;
    if (status != 0 || p->train_rv != PW_OK) {
        pw_log_info("predict", "retraining skipped (%s); the current model stays",
                    status != 0 ? "cancelled" : pw_strerror((enum pw_err)p->train_rv));
        pw_model_free(p->trained);
        p->trained = NULL;
        return;
    }
    if (!p->busy)
        swap_in_trained(p); /* else at the end of the running forecast */
}

/* maybe_retrain starts a retraining when one is due: the rings are copied into series (the
 * worker owns the copy), so the loop keeps counting meanwhile. */
static void maybe_retrain(struct pw_predict *p, int64_t wall_ms)
{
    if (p->retrain_every_ms <= 0 || p->training || p->trained != NULL || wall_ms < p->next_retrain_ms)
        return;
    p->next_retrain_ms = wall_ms + p->retrain_every_ms;
    size_t w = p->retrain_minutes;
    free(p->series);
    free(p->series_counts);
    p->series = pw_xcalloc(p->nfns ? p->nfns : 1, sizeof(*p->series));
    p->series_counts = pw_xcalloc((p->nfns ? p->nfns : 1) * w, sizeof(*p->series_counts));
    p->nseries = 0;
    int64_t last = p->minute - 1; /* the minute just closed */
    for (size_t i = 0; i < p->nfns; i++) {
        struct pfn *e = p->fns[i];
        if (e->ring == NULL || e->ring_first < 0)
            continue;
        int64_t first = last - (int64_t)w + 1;
        if (first < e->ring_first)
            first = e->ring_first;
        uint32_t *dst = p->series_counts + p->nseries * w;
        size_t n = 0;
        for (int64_t m = first; m <= last; m++)
            dst[n++] = e->ring[(size_t)(m % (int64_t)w)];
        struct pw_function_spec spec;
        struct pw_fn_static st = {.dur_ms = e->dur_ms, .mem_mb = 128.0};
        if (pw_core_function_get(p->d->core, e->name, &spec) == PW_OK)
            st.mem_mb = spec.memory_mb;
        p->series[p->nseries++] = (struct pw_series){.counts = dst, .n = n, .first_minute = first, .st = st};
    }
    p->train_work.data = p;
    p->training = 1;
    if (uv_queue_work(p->d->loop, &p->train_work, train_work_cb, train_after_cb) != 0) {
        p->training = 0;
        pw_log_warn("predict", "cannot queue the retraining");
    }
}

void pw_predict_stop(struct pw_predict *p)
{
    /* A retraining not yet started is dropped; one running finishes (seconds) before the loop
     * ends, and its model is freed with the predictor. */
    if (p != NULL && p->training)
        uv_cancel((uv_req_t *)&p->train_work);
    if (p != NULL)
        p->retrain_every_ms = 0;
}

void pw_predict_tick(struct pw_predict *p, int64_t wall_ms)
{
    int64_t minute = wall_ms / 60000;
    if (minute <= p->minute)
        return;
    if (p->busy) {
        /* The last forecast is still running: keep counting into the open minute. */
        return;
    }
    /* Close the minute(s) that ended: their counts go to the history (skipped minutes are 0). */
    double minute_abs = 0, minute_actual = 0;
    size_t minute_fns = 0;
    for (size_t i = 0; i < p->nfns; i++) {
        struct pfn *e = p->fns[i];
        if (e->minute == p->minute) {
            /* This minute had a forecast: how far it was from what came. */
            minute_abs += fabs(e->lambda - (double)e->count);
            minute_actual += (double)e->count;
            minute_fns++;
        }
        pw_forecaster_observe(p->fc, e->index, p->minute, e->count);
        if (e->ring != NULL) {
            if (e->ring_first < 0)
                e->ring_first = p->minute;
            /* Minutes skipped since the last close (a stalled loop) are zeros. */
            e->ring[(size_t)(p->minute % (int64_t)p->retrain_minutes)] = e->count > UINT16_MAX ? UINT16_MAX : (uint16_t)e->count;
        }
        e->count = 0;
    }
    if (minute_fns > 0) {
        p->err.function_minutes += minute_fns;
        p->err.abs_error_sum += minute_abs;
        p->err.actual_sum += minute_actual;
        p->err.last_minute_ratio = minute_actual > 0 ? minute_abs / minute_actual : (minute_abs > 0 ? 1.0 : 0.0);
        p->err.minutes++;
    }
    p->minute = minute;
    maybe_retrain(p, wall_ms);
    if (p->nfns == 0)
        return;
    p->targets = pw_xrealloc(p->targets, p->nfns * sizeof(*p->targets));
    p->lambdas = pw_xrealloc(p->lambdas, p->nfns * sizeof(*p->lambdas));
    /* The statics follow the measured durations. */
    for (size_t i = 0; i < p->nfns; i++) {
        struct pw_fn_static st = {.dur_ms = p->fns[i]->dur_ms, .mem_mb = 128.0};
        struct pw_function_spec spec;
        if (pw_core_function_get(p->d->core, p->fns[i]->name, &spec) == PW_OK)
            st.mem_mb = spec.memory_mb;
        pw_forecaster_set_static(p->fc, p->fns[i]->index, &st);
    }
    p->work_minute = minute;
    p->work_n = p->nfns;
    p->work.data = p;
    p->busy = 1;
    if (uv_queue_work(p->d->loop, &p->work, work_cb, after_work_cb) != 0) {
        p->busy = 0;
        pw_log_warn("predict", "cannot queue the forecast");
    }
}

int pw_predict_forecast_json(struct pw_predict *p, const char *fn, struct pw_buf *b)
{
    struct pfn *e = pfn_find(p, fn);
    if (e == NULL || e->minute < 0)
        return PW_ERR_NOTFOUND;
    struct pw_function_spec spec;
    int have_spec = pw_core_function_get(p->d->core, fn, &spec) == PW_OK;
    pw_buf_adds(b, "{\"function\":");
    pw_buf_add_json_str(b, fn);
    pw_buf_printf(b,
                  ",\"minute\":%" PRId64 ",\"lambda_per_min\":%.4f,\"duration_ms\":%.1f,\"restore_ms\":%.0f,"
                  "\"floor\":%u,\"policy\":\"%s\",\"quantile\":%g,\"model\":",
                  e->minute, e->lambda, e->dur_ms, p->params.restore_ms, e->floor,
                  have_spec ? pw_policy_str(spec.pool.kind) : "unknown", have_spec ? spec.pool.quantile : 0.0);
    if (p->model != NULL)
        pw_buf_add_json_str(b, p->model_path);
    else
        pw_buf_adds(b, "null");
    pw_buf_printf(b, ",\"retrains\":%llu", (unsigned long long)p->retrains);
    pw_buf_adds(b, ",\"contributions\":[");
    if (!p->busy) {
        struct pw_contrib c[MAX_CONTRIBS];
        size_t n = pw_forecaster_explain(p->fc, e->index, e->minute, c, MAX_CONTRIBS);
        for (size_t i = 0; i < n; i++) {
            pw_buf_printf(b, "%s{\"feature\":", i ? "," : "");
            pw_buf_add_json_str(b, c[i].feature);
            pw_buf_printf(b, ",\"value\":%.4g,\"contribution\":%.4g}", (double)c[i].value, (double)c[i].contrib);
        }
    }
    pw_buf_adds(b, "]}");
    return PW_OK;
}

int pw_predict_model_loaded(const struct pw_predict *p)
{
    return p->model != NULL;
}

void pw_predict_error_stats(const struct pw_predict *p, struct pw_predict_error *out)
{
    *out = p->err;
}

const char *pw_predict_model_name(const struct pw_predict *p, uint64_t *retrains)
{
    if (retrains != NULL)
        *retrains = p->retrains;
    return p->model != NULL ? p->model_path : "";
}
