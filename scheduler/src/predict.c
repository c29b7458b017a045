/* predict.c — per-minute forecasts for prewarmd's predictive pools; see predict.h. */
#include "predict.h"

#include "daemon.h"
#include "models.h"

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
    uint16_t *ring;      /* the last ring_minutes counts, for training */
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
    size_t ring_minutes;        /* per-function history kept for training */
    /* A model handed in while a forecast ran: swapped in when it ends. */
    struct pw_model *next_model;
    char next_name[PW_NAME_MAX];
    uint64_t swaps;
    struct pw_models *models;
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
    e->ring = pw_xcalloc(p->ring_minutes, sizeof(*e->ring));
    pw_htab_insert(&p->by_name, &e->hnode, pw_hash_str(e->name));
    if (p->nfns == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->fns = pw_xrealloc(p->fns, p->cap * sizeof(*p->fns));
    }
    p->fns[p->nfns++] = e;
    return e;
}

/* load_row feeds one stored minute to the forecaster (the last HISTORY_MINUTES) and to the
 * function's training ring. Rows come ordered by function, then minute. */
static void load_row(void *arg, const char *fn, int64_t minute, uint64_t count)
{
    struct pw_predict *p = arg;
    if (minute >= p->minute)
        return; /* the open minute is counted live */
    struct pfn *e = pfn_get(p, fn);
    if (e == NULL)
        return;
    if (minute >= p->minute - HISTORY_MINUTES)
        pw_forecaster_observe(p->fc, e->index, minute, count > UINT32_MAX ? UINT32_MAX : (uint32_t)count);
    if (minute >= p->minute - (int64_t)p->ring_minutes) {
        if (e->ring_first < 0 || minute < e->ring_first)
            e->ring_first = minute;
        e->ring[(size_t)(minute % (int64_t)p->ring_minutes)] = count > UINT16_MAX ? UINT16_MAX : (uint16_t)count;
    }
}

struct pw_predict *pw_predict_new(struct pw_daemon *d, const char *model_path, int64_t restore_ms)
{
    struct pw_predict *p = pw_xcalloc(1, sizeof(*p));
    p->d = d;
    p->ring_minutes = d->cfg.retrain_minutes > 0 ? d->cfg.retrain_minutes : 1;
    pw_htab_init(&p->by_name);
    pw_forecast_params_default(&p->params);
    p->params.restore_ms = (double)restore_ms;
    /* The registry picks the model to start with: its active one, else the configured file. */
    char name[PW_NAME_MAX] = "";
    p->models = pw_models_new(d, p, model_path, &p->model, name);
    if (p->model != NULL) {
        pw_model_set_nthread(p->model, 1);
        pw_strlcpy(p->model_path, name, sizeof(p->model_path));
    }
    p->fc = pw_forecaster_new(0, NULL, p->model, &p->params);
    p->minute = pw_now_wall_ms() / 60000;
    int64_t keep = (int64_t)p->ring_minutes > HISTORY_MINUTES ? (int64_t)p->ring_minutes : HISTORY_MINUTES;
    int64_t since = p->minute - keep;
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
    pw_models_free(p->models);
    pw_model_free(p->next_model);
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

static void swap_in(struct pw_predict *p)
{
    pw_forecaster_set_model(p->fc, p->next_model);
    pw_model_free(p->model);
    p->model = p->next_model;
    p->next_model = NULL;
    pw_strlcpy(p->model_path, p->next_name, sizeof(p->model_path));
    p->swaps++;
    pw_log_info("predict", "model %s now in use", p->model_path);
}

static void after_work_cb(uv_work_t *w, int status)
{
    struct pw_predict *p = w->data;
    p->busy = 0;
    if (p->next_model != NULL)
        swap_in(p);
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

/* ---- models in and series out ---- */

void pw_predict_use_model(struct pw_predict *p, struct pw_model *m, const char *name)
{
    pw_model_set_nthread(m, 1);
    pw_model_free(p->next_model);
    p->next_model = m;
    pw_strlcpy(p->next_name, name, sizeof(p->next_name));
    if (!p->busy)
        swap_in(p); /* else when the running forecast ends: the worker holds the forecaster */
}

int pw_predict_series(struct pw_predict *p, struct pw_predict_series *out)
{
    memset(out, 0, sizeof(*out));
    size_t w = p->ring_minutes;
    out->series = pw_xcalloc(p->nfns ? p->nfns : 1, sizeof(*out->series));
    out->counts = pw_xcalloc((p->nfns ? p->nfns : 1) * w, sizeof(*out->counts));
    int64_t last = p->minute - 1; /* the minute closed last */
    for (size_t i = 0; i < p->nfns; i++) {
        struct pfn *e = p->fns[i];
        if (e->ring_first < 0)
            continue;
        int64_t first = last - (int64_t)w + 1;
        if (first < e->ring_first)
            first = e->ring_first;
        if (first > last)
            continue;
        uint32_t *dst = out->counts + out->n * w;
        size_t n = 0;
        for (int64_t m = first; m <= last; m++)
            dst[n++] = e->ring[(size_t)(m % (int64_t)w)];
        struct pw_function_spec spec;
        struct pw_fn_static st = {.dur_ms = e->dur_ms, .mem_mb = 128.0};
        if (pw_core_function_get(p->d->core, e->name, &spec) == PW_OK)
            st.mem_mb = spec.memory_mb;
        out->series[out->n++] = (struct pw_series){.counts = dst, .n = n, .first_minute = first, .st = st};
        if (n > out->minutes)
            out->minutes = n;
    }
    return out->n > 0 ? PW_OK : PW_ERR_NOTFOUND;
}

void pw_predict_series_fini(struct pw_predict_series *s)
{
    free(s->series);
    free(s->counts);
    memset(s, 0, sizeof(*s));
}

struct pw_models *pw_predict_models(struct pw_predict *p)
{
    return p->models;
}

void pw_predict_stop(struct pw_predict *p)
{
    if (p != NULL)
        pw_models_stop(p->models);
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
        int64_t w = (int64_t)p->ring_minutes;
        if (e->ring_first < 0)
            e->ring_first = p->minute;
        e->ring[(size_t)(p->minute % w)] = e->count > UINT16_MAX ? UINT16_MAX : (uint16_t)e->count;
        /* Minutes skipped since the last close (a stalled loop) are zeros. */
        for (int64_t m = p->minute + 1; m < minute && m < p->minute + 1 + w; m++)
            e->ring[(size_t)(m % w)] = 0;
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
    pw_models_tick(p->models, wall_ms);
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
    pw_buf_printf(b, ",\"model_swaps\":%llu", (unsigned long long)p->swaps);
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

const char *pw_predict_model_name(const struct pw_predict *p, uint64_t *swaps)
{
    if (swaps != NULL)
        *swaps = p->swaps;
    return p->model != NULL ? p->model_path : "";
}
