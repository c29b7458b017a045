/* test_predictor.c — history, features, sizing math, the XGBoost model round trip, explanations,
 * and the forecaster's promise never to look at the future. */
#include "pw/error.h"
#include "pw/features.h"
#include "pw/forecast.h"
#include "pw/history.h"
#include "pw/model.h"
#include "pw/sizing.h"
#include "pw/train.h"
#include "pw/util.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Not in forecast.h yet (see forecast.c). */
int pw_forecaster_add(struct pw_forecaster *f, const struct pw_fn_static *st, size_t *index);
void pw_forecaster_set_static(struct pw_forecaster *f, size_t fn, const struct pw_fn_static *st);

#define assert_float_near(a, b, eps) assert_float_equal((double)(a), (double)(b), (eps))

/* ---- history and features ---- */

/* Series: first observed minute 0; counts 2 at minutes 0, 50 and 95, 7 at 99, 1 at 98; all
 * others zero; forecast for minute 100. Active minutes 0, 50, 95, 98, 99: gaps 49, 44, 2, 0. */
static void fill_series(struct pw_history *h, int64_t upto)
{
    pw_history_init(h);
    for (int64_t m = 0; m < upto; m++) {
        uint32_t c = (m == 0 || m == 50 || m == 95) ? 2 : m == 98 ? 1 : m == 99 ? 7 : 0;
        assert_int_equal(pw_history_add(h, m, c), PW_OK);
    }
}

static void test_features_hand(void **state)
{
    struct pw_history h;
    float x[PW_FEAT_COUNT];
    struct pw_fn_static st = {.dur_ms = 99.0, .mem_mb = 255.0};
    fill_series(&h, 100);
    pw_features_compute(&h, 100, &st, x);

    assert_float_near(x[PW_FEAT_LAG1], 7, 0);
    assert_float_near(x[PW_FEAT_LAG2], 1, 0);
    assert_float_near(x[PW_FEAT_LAG3], 0, 0);
    assert_float_near(x[PW_FEAT_LAG5], 2, 0);
    assert_float_near(x[PW_FEAT_LAG10], 0, 0);
    assert_float_near(x[PW_FEAT_LAG60], 0, 0);
    assert_float_near(x[PW_FEAT_MEAN5], (7 + 1 + 2) / 5.0, 1e-6);
    assert_float_near(x[PW_FEAT_MEAN15], 10 / 15.0, 1e-6);
    assert_float_near(x[PW_FEAT_MEAN60], 12 / 60.0, 1e-6);   /* 50, 95, 98, 99 */
    assert_float_near(x[PW_FEAT_MEAN120], 14 / 120.0, 1e-6); /* plus minute 0 */
    assert_float_near(x[PW_FEAT_MAX5], 7, 0);
    assert_float_near(x[PW_FEAT_MAX120], 7, 0);
    assert_float_near(x[PW_FEAT_ACTIVE60], 4 / 60.0, 1e-6);
    assert_float_near(x[PW_FEAT_ACTIVE120], 5 / 120.0, 1e-6);
    assert_float_near(x[PW_FEAT_MEANALL], 14 / 100.0, 1e-6);
    assert_float_near(x[PW_FEAT_SINCE], 1, 0);
    /* Gaps sorted 0, 2, 44, 49: nearest-rank p50 is the 2nd, p90 the 4th. */
    assert_float_near(x[PW_FEAT_GAP50], 2, 0);
    assert_float_near(x[PW_FEAT_GAP90], 49, 0);
    assert_float_near(x[PW_FEAT_TODSIN], sin(2 * M_PI * 100 / 1440), 1e-6);
    assert_float_near(x[PW_FEAT_TODCOS], cos(2 * M_PI * 100 / 1440), 1e-6);
    assert_float_near(x[PW_FEAT_LOGDUR], log(100.0), 1e-6);
    assert_float_near(x[PW_FEAT_LOGMEM], log(256.0), 1e-6);

    /* Nine idle minutes later (not observed: skipped minutes are zero). */
    pw_features_compute(&h, 109, &st, x);
    assert_float_near(x[PW_FEAT_LAG10], 7, 0);
    assert_float_near(x[PW_FEAT_LAG1], 0, 0);
    assert_float_near(x[PW_FEAT_SINCE], 10, 0);

    /* A function never seen has capped idle features and zero counts. */
    struct pw_history empty;
    pw_history_init(&empty);
    pw_features_compute(&empty, 5000, NULL, x);
    assert_float_near(x[PW_FEAT_SINCE], PW_FEAT_CAP_MIN, 0);
    assert_float_near(x[PW_FEAT_GAP50], PW_FEAT_CAP_MIN, 0);
    assert_float_near(x[PW_FEAT_MAX120], 0, 0);
    assert_float_near(x[PW_FEAT_MEANALL], 0, 0);
}

static void test_history_rules(void **state)
{
    struct pw_history h;
    pw_history_init(&h);
    assert_int_equal(pw_history_add(&h, 10, 70000), PW_OK); /* saturates in the ring */
    assert_int_equal(pw_history_add(&h, 10, 5), PW_OK);
    assert_int_equal(pw_history_count_at(&h, 11, 10), UINT16_MAX);
    assert_int_equal(h.total, 70005);
    assert_int_equal(pw_history_add(&h, 9, 1), PW_ERR_INVAL);
    /* A jump longer than the ring clears it. */
    assert_int_equal(pw_history_add(&h, 10 + 3 * PW_HISTORY_MINUTES, 1), PW_OK);
    assert_int_equal(pw_history_count_at(&h, 10 + 3 * PW_HISTORY_MINUTES + 1, 10 + 2 * PW_HISTORY_MINUTES), 0);
}

/* Features for minute m must not change when minute m (or later) has been observed. */
static void test_features_no_future(void **state)
{
    struct pw_history a, b;
    float xa[PW_FEAT_COUNT], xb[PW_FEAT_COUNT];
    fill_series(&a, 100);
    fill_series(&b, 100);
    assert_int_equal(pw_history_add(&b, 100, 5000), PW_OK);
    assert_int_equal(pw_history_add(&b, 103, 9), PW_OK);
    pw_features_compute(&a, 100, NULL, xa);
    pw_features_compute(&b, 100, NULL, xb);
    for (int i = 0; i < PW_FEAT_COUNT; i++) {
        if (xa[i] != xb[i])
            fail_msg("feature %s: %g without the future, %g with it", pw_feat_names[i], xa[i], xb[i]);
    }
}

/* ---- sizing ---- */

static void test_sizing_math(void **state)
{
    /* Poisson(1): P(0)=.3679 P(<=1)=.7358 P(<=2)=.9197 P(<=3)=.9810 P(<=4)=.9963 */
    assert_int_equal(pw_sizing_poisson_quantile(1.0, 0.5, 100), 1);
    assert_int_equal(pw_sizing_poisson_quantile(1.0, 0.9, 100), 2);
    assert_int_equal(pw_sizing_poisson_quantile(1.0, 0.99, 100), 4);
    assert_int_equal(pw_sizing_poisson_quantile(1.0, 0.99, 3), 3);
    assert_int_equal(pw_sizing_poisson_quantile(0.0, 0.99, 100), 0);
    /* Poisson(0.01): P(0) = .99005 >= .99 */
    assert_int_equal(pw_sizing_poisson_quantile(0.01, 0.99, 100), 0);
    /* Large means use the shifted start: the median of Poisson(10000) is 10000. */
    assert_int_equal(pw_sizing_poisson_quantile(10000.0, 0.5, 100000), 10000);
    /* 0.99 quantile of Poisson(10000) ~ 10000 + 2.326 * 100 = 10233 (+- a few). */
    uint32_t k = pw_sizing_poisson_quantile(10000.0, 0.99, 100000);
    assert_in_range(k, 10228, 10238);

    struct pw_forecast_params p = {.quantile = 0.99, .restore_ms = 0, .horizon_min = 1, .max_target = 1000};
    /* 60/min x 1000 ms = mean concurrency 1 -> 4 VMs at 0.99. */
    assert_int_equal(pw_sizing_target(60.0, 1000.0, &p), 4);
    /* The restore adds its arrivals: 60/min x (500 + 500) ms is the same mu. */
    p.restore_ms = 500;
    assert_int_equal(pw_sizing_target(60.0, 500.0, &p), 4);
    /* Rare functions: 0.02/min -> P(arrival in 1 min) = .0198 > .01 -> 1 VM; 0.005/min -> 0. */
    assert_int_equal(pw_sizing_target(0.02, 100.0, &p), 1);
    assert_int_equal(pw_sizing_target(0.005, 100.0, &p), 0);
    /* A longer horizon makes 0.005/min worth a VM: 1 - exp(-0.005 * 5) = .0247. */
    p.horizon_min = 5;
    assert_int_equal(pw_sizing_target(0.005, 100.0, &p), 1);
    assert_int_equal(pw_sizing_target(0.0, 100.0, &p), 0);
    /* Clamp. */
    p.max_target = 3;
    assert_int_equal(pw_sizing_target(6000.0, 1000.0, &p), 3);
}

/* ---- model ---- */

static void synth_rows(float *X, float *y, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < PW_FEAT_COUNT; j++) {
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            X[i * PW_FEAT_COUNT + j] = (float)((seed >> 33) % 1000) / 100.0f;
        }
        y[i] = floorf(X[i * PW_FEAT_COUNT + PW_FEAT_LAG1] + 0.5f * X[i * PW_FEAT_COUNT + PW_FEAT_MEAN5]);
    }
}

static struct pw_model *train_tiny(void)
{
    enum { N = 600 };
    static float X[N * PW_FEAT_COUNT], y[N];
    struct pw_model_params mp;
    struct pw_model *m = NULL;
    synth_rows(X, y, N, 7);
    pw_model_params_default(&mp);
    mp.trees = 20;
    mp.depth = 4;
    mp.eta = 0.3;
    mp.max_delta_step = 2;
    mp.nthread = 1;
    assert_int_equal(pw_model_train(X, N, PW_FEAT_COUNT, y, NULL, &mp, &m), PW_OK);
    return m;
}

static void test_model_roundtrip(void **state)
{
    enum { N = 200 };
    float X[N * PW_FEAT_COUNT], y[N], p1[N], p2[N], m1[N];
    struct pw_model *m = train_tiny(), *back = NULL;
    const char *path = PW_BINARY_DIR "/test_predictor_model.json";

    synth_rows(X, y, N, 99);
    assert_int_equal(pw_model_predict(m, X, N, 0, p1), PW_OK);
    assert_int_equal(pw_model_predict(m, X, N, 1, m1), PW_OK);
    /* The model learned something: predictions follow the target. */
    double err = 0, base = 0, mean = 0;
    for (size_t i = 0; i < N; i++)
        mean += y[i] / N;
    for (size_t i = 0; i < N; i++) {
        err += fabs(p1[i] - y[i]);
        base += fabs(mean - y[i]);
        assert_float_near(logf(p1[i]), m1[i], 1e-4);
    }
    assert_true(err < 0.6 * base);

    assert_int_equal(pw_model_save(m, path), PW_OK);
    assert_int_equal(pw_model_load(path, &back), PW_OK);
    assert_int_equal(pw_model_predict(back, X, N, 0, p2), PW_OK);
    for (size_t i = 0; i < N; i++)
        if (p1[i] != p2[i])
            fail_msg("row %zu: %.9g before save, %.9g after load", i, p1[i], p2[i]);
    pw_model_free(back);
    pw_model_free(m);
    remove(path);

    assert_int_equal(pw_model_load(PW_BINARY_DIR "/no-such-model.json", &back), PW_ERR_IO);
    assert_int_not_equal(pw_model_train(X, N, PW_FEAT_COUNT - 1, y, NULL, &(struct pw_model_params){0}, &back),
                         PW_OK);
}

static void test_shipped_model_loads(void **state)
{
    struct pw_model *m = NULL;
    assert_int_equal(pw_model_load(PW_SOURCE_DIR "/models/default.json", &m), PW_OK);
    pw_model_free(m);
}

/* ---- forecaster ---- */

static struct pw_forecaster *make_fc(const struct pw_model *m, int spike)
{
    struct pw_fn_static st[3] = {{100, 128}, {2000, 512}, {50, 256}};
    struct pw_forecaster *f = pw_forecaster_new(3, st, m, NULL);
    for (int64_t t = 0; t < 150; t++) {
        pw_forecaster_observe(f, 0, t, (uint32_t)(t % 7 == 0 ? 3 : 0));
        pw_forecaster_observe(f, 1, t, 20 + (uint32_t)(t % 5));
        if (t == 140)
            pw_forecaster_observe(f, 2, t, 1);
    }
    if (spike) {
        pw_forecaster_observe(f, 0, 150, 900);
        pw_forecaster_observe(f, 1, 150, 9000);
        pw_forecaster_observe(f, 2, 151, 40);
    }
    return f;
}

static void check_no_future(const struct pw_model *m)
{
    struct pw_forecaster *a = make_fc(m, 0), *b = make_fc(m, 1);
    uint32_t ta[3], tb[3];
    double la[3], lb[3];
    assert_int_equal(pw_forecaster_tick(a, 150, ta, la), PW_OK);
    assert_int_equal(pw_forecaster_tick(b, 150, tb, lb), PW_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ta[i], tb[i]);
        if (la[i] != lb[i])
            fail_msg("fn %d: lambda %g without the spike, %g with it", i, la[i], lb[i]);
    }
    pw_forecaster_free(a);
    pw_forecaster_free(b);
}

static void test_forecaster_no_future(void **state)
{
    struct pw_model *m = train_tiny();
    check_no_future(NULL);
    check_no_future(m);
    pw_model_free(m);
}

static void test_forecaster_heuristic(void **state)
{
    struct pw_forecaster *f = make_fc(NULL, 0);
    uint32_t t[5];
    double l[5];
    assert_int_equal(pw_forecaster_tick(f, 150, t, l), PW_OK);
    /* fn 0: 3 at minutes 147 and 140 -> mean10 = 0.6, last (149) = 0 -> 0.6 */
    assert_float_near(l[0], 0.6, 1e-9);
    /* fn 1: last = 20 + 149 % 5 = 24, mean10 = 22 -> 24 */
    assert_float_near(l[1], 24.0, 1e-9);
    /* fn 2: one call at 140 -> 0.1/min; P(arrival) = .095 > .01 -> 1 VM */
    assert_float_near(l[2], 0.1, 1e-9);
    assert_int_equal(t[2], 1);
    struct pw_contrib c[4];
    assert_int_equal(pw_forecaster_explain(f, 0, 150, c, 4), 0);
    pw_forecaster_free(f);
    assert_true(pw_forecaster_bytes_per_function() < 1024);

    /* Growing from zero functions. */
    f = pw_forecaster_new(0, NULL, NULL, NULL);
    for (size_t i = 0; i < 5; i++) {
        size_t idx = 99;
        assert_int_equal(pw_forecaster_add(f, &(struct pw_fn_static){100, 128}, &idx), PW_OK);
        assert_int_equal(idx, i);
        pw_forecaster_observe(f, idx, 10, (uint32_t)i);
    }
    pw_forecaster_set_static(f, 4, &(struct pw_fn_static){60000, 128});
    assert_int_equal(pw_forecaster_tick(f, 11, t, l), PW_OK);
    assert_float_near(l[4], 4.0, 1e-9);
    pw_forecaster_free(f);
}

static void test_explain_sums_to_margin(void **state)
{
    struct pw_model *m = train_tiny();
    struct pw_forecaster *f = make_fc(m, 0);
    struct pw_contrib c[PW_FEAT_COUNT + 1];
    float row[PW_FEAT_COUNT], margin;
    struct pw_history h;

    size_t n = pw_forecaster_explain(f, 1, 150, c, PW_ARRAY_LEN(c));
    assert_int_equal(n, PW_FEAT_COUNT + 1);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += c[i].contrib;
        if (i > 0 && fabsf(c[i].contrib) > fabsf(c[i - 1].contrib))
            fail_msg("contributions not sorted at %zu", i);
    }
    /* Rebuild fn 1's row independently and ask for the raw margin. */
    pw_history_init(&h);
    for (int64_t t = 0; t < 150; t++)
        pw_history_add(&h, t, 20 + (uint32_t)(t % 5));
    pw_features_compute(&h, 150, &(struct pw_fn_static){2000, 512}, row);
    assert_int_equal(pw_model_predict(m, row, 1, 1, &margin), PW_OK);
    assert_float_near(sum, margin, 1e-4);
    assert_int_equal(pw_forecaster_explain(f, 1, 150, c, 3), 3);
    pw_forecaster_free(f);
    pw_model_free(m);
}

/* The keep-one rule: a quiet function's last VM is kept when the chance of an arrival per GB
 * and per daily invocation pays for it; busy functions keep their quantile whatever it says. */
static void test_keep_one_rule(void **state)
{
    (void)state;
    struct pw_forecast_params p;
    pw_forecast_params_default(&p);
    p.keep_one_cost = 0.0002;
    /* P1 = 1 - exp(-0.01) = 0.00995 */
    struct pw_sizing_in in = {.lambda = 0.01, .dur_ms = 100, .mem_mb = 1024, .per_day = 5};
    assert_int_equal(pw_sizing_floor(&in, &p), 1);   /* 0.00995 / 5 / 1 GB = 0.00199 > 0.0002 */
    in.per_day = 100;
    assert_int_equal(pw_sizing_floor(&in, &p), 0);   /* 0.0000995 < 0.0002 */
    in.per_day = 40;
    in.mem_mb = 256;
    assert_int_equal(pw_sizing_floor(&in, &p), 1);   /* 0.00995 / 40 / 0.25 = 0.000995 */
    in.mem_mb = 4096;
    assert_int_equal(pw_sizing_floor(&in, &p), 0);   /* 0.00995 / 40 / 4 = 0.0000622 */
    in.per_day = 0;                                  /* unknown counts as one a day */
    assert_int_equal(pw_sizing_floor(&in, &p), 1);
    /* Busy: 600/min x 1.2 s = Poisson(12); its 0.99 quantile is 21 (hand: P(N<=20) = 0.9884,
     * P(N<=21) = 0.9939), kept however costly one VM looks. */
    struct pw_sizing_in busy = {.lambda = 600, .dur_ms = 1000, .mem_mb = 1 << 20, .per_day = 1e6};
    assert_int_equal(pw_sizing_floor(&busy, &p), 21);
    /* keep_one_cost 0 is the plain rule: keep one when P1 > 1 - quantile. */
    p.keep_one_cost = 0;
    in.lambda = 0.02; /* P1 = 0.0198 > 0.01 */
    assert_int_equal(pw_sizing_floor(&in, &p), 1);
    in.lambda = 0.005;
    assert_int_equal(pw_sizing_floor(&in, &p), 0);
}

/* The model is an offset Poisson regression: trained on levels up to ~15 per minute, it still
 * forecasts a function at 5,000 per minute near its own level instead of capping at the
 * largest leaf (the failure of a plain tree model on a busier day or function). */
static void test_model_extrapolates_scale(void **state)
{
    (void)state;
    struct pw_model *m = train_tiny();
    float row[PW_FEAT_COUNT];
    for (size_t j = 0; j < PW_FEAT_COUNT; j++)
        row[j] = 5.0f;
    row[PW_FEAT_LAG1] = 5000.0f;
    row[PW_FEAT_MEAN5] = 5000.0f;
    row[PW_FEAT_MEAN15] = 5000.0f;
    row[PW_FEAT_MEAN60] = 5000.0f;
    float lam;
    assert_int_equal(pw_model_predict(m, row, 1, 0, &lam), PW_OK);
    if (!(lam > 2500.0f && lam < 20000.0f))
        fail_msg("forecast %g for a function at 5000/min", (double)lam);
    pw_model_free(m);
}

/* Background retraining's trainer: from minute series, the same features as the forecaster;
 * too little activity is refused rather than trained on. */
static void test_train_series(void **state)
{
    (void)state;
    enum { N = 400 };
    static uint32_t a[N], b[N], c[N];
    for (size_t k = 0; k < N; k++) {
        a[k] = 40 + (uint32_t)(k % 7);    /* busy */
        b[k] = k % 30 == 0 ? 5 : 0;       /* periodic */
        c[k] = 0;                         /* idle */
    }
    struct pw_series s[3] = {
        {.counts = a, .n = N, .first_minute = 1000, .st = {200, 256}},
        {.counts = b, .n = N, .first_minute = 1000, .st = {200, 256}},
        {.counts = c, .n = N, .first_minute = 1000, .st = {200, 256}},
    };
    struct pw_train_opts o;
    pw_train_opts_default(&o);
    o.model.trees = 20;
    o.min_rows = 100000; /* more than the series have */
    struct pw_model *m = NULL;
    size_t rows = 0;
    assert_int_equal(pw_train_series(s, 3, &o, &m, &rows), PW_ERR_INVAL);
    assert_null(m);
    o.min_rows = 100;
    assert_int_equal(pw_train_series(s, 3, &o, &m, &rows), PW_OK);
    assert_true(rows > 2 * (N - PW_FEAT_WINDOW) / 2);
    /* The busy function's next minute is forecast near its level, the idle one's near zero. */
    struct pw_forecaster *f = pw_forecaster_new(3, (struct pw_fn_static[]){{200, 256}, {200, 256}, {200, 256}}, m,
                                                NULL);
    for (size_t k = 0; k < N; k++)
        for (size_t i = 0; i < 3; i++)
            pw_forecaster_observe(f, i, 1000 + (int64_t)k, s[i].counts[k]);
    uint32_t t[3];
    double l[3];
    assert_int_equal(pw_forecaster_tick(f, 1000 + N, t, l), PW_OK);
    if (!(l[0] > 30 && l[0] < 60 && l[2] < 0.05))
        fail_msg("forecasts %g (busy, ~43) and %g (idle)", l[0], l[2]);
    /* A model swapped in later is used from the next tick on. */
    pw_forecaster_set_model(f, NULL);
    assert_int_equal(pw_forecaster_tick(f, 1000 + N, t, l), PW_OK);
    assert_true(l[0] >= 40); /* the heuristic: max(mean of 10 minutes, last minute) */
    pw_forecaster_free(f);
    pw_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_hand),
        cmocka_unit_test(test_history_rules),
        cmocka_unit_test(test_features_no_future),
        cmocka_unit_test(test_sizing_math),
        cmocka_unit_test(test_model_roundtrip),
        cmocka_unit_test(test_shipped_model_loads),
        cmocka_unit_test(test_forecaster_no_future),
        cmocka_unit_test(test_forecaster_heuristic),
        cmocka_unit_test(test_explain_sums_to_margin),
        cmocka_unit_test(test_keep_one_rule),
        cmocka_unit_test(test_model_extrapolates_scale),
        cmocka_unit_test(test_train_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
