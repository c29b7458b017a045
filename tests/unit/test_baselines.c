/* test_baselines.c — the hybrid histogram's window math and the KPA-like state machine, on
 * hand-computed cases. */
#include "pw/baselines.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MIN_MS (60 * 1000LL)

static void observe_n(struct pw_hybrid *h, const struct pw_hybrid_params *p, int64_t idle_ms, int n)
{
    for (int i = 0; i < n; i++)
        pw_hybrid_observe(h, p, idle_ms);
}

/* All idle times in bin 30 (30 min): head = 30 min, tail = 31 min. Pre-warm 30 * 0.9 = 27
 * min; kept until 31 * 1.1 = 34.1 min, so keep-alive = 7.1 min. */
static void test_hybrid_single_bin(void **state)
{
    (void)state;
    struct pw_hybrid_params p;
    pw_hybrid_params_default(&p);
    struct pw_hybrid h;
    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 30 * MIN_MS + 5000, 20);
    struct pw_hybrid_windows w;
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_HISTOGRAM);
    assert_int_equal(w.prewarm_ms, 27 * MIN_MS);
    assert_int_equal(w.keepalive_ms, 2046000 - 27 * MIN_MS);
    pw_hybrid_fini(&h);
}

/* 100 samples: 5 in bin 2, 94 in bin 10, 1 in bin 50. The 5th percentile (5th sample) is in
 * bin 2: head 2 min, pre-warm 1.8 min. The 99th (99th sample) is in bin 10: tail 11 min, kept
 * until 12.1 min. The one outlier at 50 min is above the 99th percentile and ignored. */
static void test_hybrid_percentiles_and_margins(void **state)
{
    (void)state;
    struct pw_hybrid_params p;
    pw_hybrid_params_default(&p);
    struct pw_hybrid h;
    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 2 * MIN_MS + 1, 5);
    observe_n(&h, &p, 10 * MIN_MS + 30000, 94);
    observe_n(&h, &p, 50 * MIN_MS, 1);
    struct pw_hybrid_windows w;
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_HISTOGRAM);
    assert_int_equal(w.prewarm_ms, 108000);
    assert_int_equal(w.prewarm_ms + w.keepalive_ms, 726000);
    pw_hybrid_fini(&h);
}

/* Head in bin 0: no pre-warm, the VM stays until tail * 1.1. */
static void test_hybrid_head_zero(void **state)
{
    (void)state;
    struct pw_hybrid_params p;
    pw_hybrid_params_default(&p);
    struct pw_hybrid h;
    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 20000, 10);
    observe_n(&h, &p, 9 * MIN_MS + 1, 10);
    struct pw_hybrid_windows w;
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_HISTOGRAM);
    assert_int_equal(w.prewarm_ms, 0);
    assert_int_equal(w.keepalive_ms, 11 * MIN_MS);
    pw_hybrid_fini(&h);
}

/* Not representative: too few samples, a flat histogram, or mostly out of range. Each falls
 * back to keeping the VM for the histogram's range (4 h) with no pre-warm. */
static void test_hybrid_fallbacks(void **state)
{
    (void)state;
    struct pw_hybrid_params p;
    pw_hybrid_params_default(&p);
    struct pw_hybrid_windows w;
    struct pw_hybrid h;

    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 30 * MIN_MS, 9);
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_FEW_SAMPLES);
    assert_int_equal(w.prewarm_ms, 0);
    assert_int_equal(w.keepalive_ms, 240 * MIN_MS);
    observe_n(&h, &p, 30 * MIN_MS, 1); /* the 10th sample makes it count */
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_HISTOGRAM);
    pw_hybrid_fini(&h);

    pw_hybrid_init(&h, &p);
    for (int b = 0; b < 240; b++)
        pw_hybrid_observe(&h, &p, b * MIN_MS + 1);
    assert_true(pw_hybrid_bin_cv(&h) < 1e-9);
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_LOW_CV);
    assert_int_equal(w.keepalive_ms, 240 * MIN_MS);
    pw_hybrid_fini(&h);

    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 5 * MIN_MS, 15);
    observe_n(&h, &p, 300 * MIN_MS, 16);
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_OOB);
    assert_int_equal(w.prewarm_ms, 0);
    assert_int_equal(w.keepalive_ms, 240 * MIN_MS);
    pw_hybrid_fini(&h);

    /* min_samples is a parameter. */
    p.min_samples = 3;
    pw_hybrid_init(&h, &p);
    observe_n(&h, &p, 30 * MIN_MS, 3);
    pw_hybrid_windows(&h, &p, &w);
    assert_int_equal(w.reason, PW_HYBRID_HISTOGRAM);
    pw_hybrid_fini(&h);
}

/* A single spike has CV sqrt(nbins - 1). */
static void test_hybrid_cv(void **state)
{
    (void)state;
    struct pw_hybrid_params p;
    pw_hybrid_params_default(&p);
    struct pw_hybrid h;
    pw_hybrid_init(&h, &p);
    assert_true(pw_hybrid_bin_cv(&h) == 0);
    observe_n(&h, &p, 1000, 7);
    double cv = pw_hybrid_bin_cv(&h);
    assert_true(cv > 15.45 && cv < 15.46); /* sqrt(239) = 15.459 */
    pw_hybrid_fini(&h);
}

/* ---- KPA ---- */

/* Three requests in flight for a minute: stable average 3, no panic (3 < 2 * 3 ready). */
static void test_kpa_steady(void **state)
{
    (void)state;
    struct pw_kpa_params p;
    pw_kpa_params_default(&p);
    struct pw_kpa k;
    pw_kpa_init(&k, &p, 0);
    for (int i = 0; i < 3; i++)
        pw_kpa_request_start(&k, &p, 0);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 60000, 3), 3);
    assert_true(k.panic_until < 60000);
    /* One ends at 60 s; the stable window at 90 s averages (3 * 30 + 2 * 30) / 60 = 2.5. */
    pw_kpa_request_end(&k, &p, 60000);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 90000, 3), 3);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 120000, 3), 2);
}

/* A burst of 10 from one VM panics (10 >= 2 * 1): desired 10 at once, and no scale-down
 * while panicking even though the burst ended; scale to zero still wins after 30 s quiet. */
static void test_kpa_panic(void **state)
{
    (void)state;
    struct pw_kpa_params p;
    pw_kpa_params_default(&p);
    struct pw_kpa k;
    pw_kpa_init(&k, &p, 0);
    pw_kpa_request_start(&k, &p, 100000);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 160000, 1), 1);
    for (int i = 0; i < 9; i++)
        pw_kpa_request_start(&k, &p, 160000);
    /* Panic window at 166 s: 10 in flight for the whole 6 s. Stable window: (1*54+10*6)/60. */
    assert_int_equal(pw_kpa_evaluate(&k, &p, 166000, 1), 10);
    assert_true(k.panic_until == 166000 + 60000);
    for (int i = 0; i < 10; i++)
        pw_kpa_request_end(&k, &p, 166000);
    /* Stable average now (1*48 + 10*6) / 60 = 1.8 -> 2, but panic keeps 10. */
    assert_int_equal(pw_kpa_evaluate(&k, &p, 172000, 10), 10);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 194000, 10), 10);
    /* 30 s after the last request ended: zero, and the panic is over. */
    assert_int_equal(pw_kpa_evaluate(&k, &p, 196000, 10), 0);
    assert_true(pw_kpa_quiet(&k, 196000));
}

/* One request from 0 to 1 s: desired 1 while the stable average is above zero, 0 from 30 s
 * after the request ended. */
static void test_kpa_scale_to_zero(void **state)
{
    (void)state;
    struct pw_kpa_params p;
    pw_kpa_params_default(&p);
    struct pw_kpa k;
    pw_kpa_init(&k, &p, 0);
    pw_kpa_request_start(&k, &p, 0);
    pw_kpa_request_end(&k, &p, 1000);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 2000, 1), 1);
    assert_false(pw_kpa_quiet(&k, 2000));
    assert_int_equal(pw_kpa_evaluate(&k, &p, 30000, 1), 1);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 31000, 1), 0);
    assert_true(pw_kpa_quiet(&k, 31000));
    /* A long quiet stretch rolls the whole window at once. */
    pw_kpa_request_start(&k, &p, 10 * 60000);
    assert_int_equal(pw_kpa_evaluate(&k, &p, 10 * 60000 + 2000, 0), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hybrid_single_bin),
        cmocka_unit_test(test_hybrid_percentiles_and_margins),
        cmocka_unit_test(test_hybrid_head_zero),
        cmocka_unit_test(test_hybrid_fallbacks),
        cmocka_unit_test(test_hybrid_cv),
        cmocka_unit_test(test_kpa_steady),
        cmocka_unit_test(test_kpa_panic),
        cmocka_unit_test(test_kpa_scale_to_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
