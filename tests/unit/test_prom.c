/* test_prom.c — the Prometheus text exposition writer: families, labels, histograms, caps. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "pw/error.h"
#include "pw/prom.h"
#include "pw/util.h"

static void test_family_and_samples(void **state)
{
    (void)state;
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    struct pw_prom w;
    pw_prom_init(&w, &b);
    pw_prom_family(&w, "prewarm_x_total", PW_PROM_COUNTER, "Things, with a \\ and a\nnewline.");
    struct pw_prom_label l[] = {{"result", "warm"}, {"fn", "a"}};
    pw_prom_sample_u64(&w, "prewarm_x_total", l, 2, 18446744073709551615ull);
    pw_prom_family(&w, "prewarm_g", PW_PROM_GAUGE, "A gauge.");
    pw_prom_sample(&w, "prewarm_g", NULL, 0, 0.25);
    pw_prom_sample(&w, "prewarm_g", l, 1, NAN);
    pw_prom_sample(&w, "prewarm_g", l + 1, 1, INFINITY);
    pw_prom_sample(&w, "prewarm_g", l, 0, -INFINITY);
    assert_int_equal(pw_prom_err(&w), PW_OK);
    assert_string_equal(b.data, "# HELP prewarm_x_total Things, with a \\\\ and a\\nnewline.\n"
                                "# TYPE prewarm_x_total counter\n"
                                "prewarm_x_total{result=\"warm\",fn=\"a\"} 18446744073709551615\n"
                                "# HELP prewarm_g A gauge.\n# TYPE prewarm_g gauge\n"
                                "prewarm_g 0.25\n"
                                "prewarm_g{result=\"warm\"} NaN\n"
                                "prewarm_g{fn=\"a\"} +Inf\n"
                                "prewarm_g -Inf\n");
    pw_buf_fini(&b);
}

static void test_label_escaping(void **state)
{
    (void)state;
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    struct pw_prom w;
    pw_prom_init(&w, &b);
    struct pw_prom_label l[] = {{"v", "a\"b\\c\nd"}, {"e", ""}, {"n", NULL}};
    pw_prom_sample_u64(&w, "m", l, 3, 1);
    assert_int_equal(pw_prom_err(&w), PW_OK);
    assert_string_equal(b.data, "m{v=\"a\\\"b\\\\c\\nd\",e=\"\",n=\"\"} 1\n");
    /* HELP text keeps double quotes as they are. */
    pw_buf_reset(&b);
    assert_int_equal(pw_prom_escape_help(&b, "say \"hi\"\\"), PW_OK);
    assert_string_equal(b.data, "say \"hi\"\\\\");
    pw_buf_fini(&b);
}

static void test_histogram_cumulative(void **state)
{
    (void)state;
    static const double bounds[] = {0.1, 0.5, 1};
    struct pw_prom_hist h;
    pw_prom_hist_init(&h, bounds, 3);
    double obs[] = {0.05, 0.1, 0.3, 0.7, 0.9, 2.0, 100.0, NAN};
    for (size_t i = 0; i < PW_ARRAY_LEN(obs); i++)
        pw_prom_hist_observe(&h, obs[i]);
    assert_int_equal(h.count, 7);
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    struct pw_prom w;
    pw_prom_init(&w, &b);
    pw_prom_family(&w, "lat_seconds", PW_PROM_HISTOGRAM, "Latency.");
    struct pw_prom_label l[] = {{"fn", "a"}};
    pw_prom_hist_write(&w, "lat_seconds", l, 1, &h);
    assert_int_equal(pw_prom_err(&w), PW_OK);
    assert_string_equal(b.data, "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
                                "lat_seconds_bucket{fn=\"a\",le=\"0.1\"} 2\n"
                                "lat_seconds_bucket{fn=\"a\",le=\"0.5\"} 3\n"
                                "lat_seconds_bucket{fn=\"a\",le=\"1\"} 5\n"
                                "lat_seconds_bucket{fn=\"a\",le=\"+Inf\"} 7\n"
                                "lat_seconds_sum{fn=\"a\"} 104.05\n"
                                "lat_seconds_count{fn=\"a\"} 7\n");
    pw_buf_fini(&b);
}

static void test_histogram_empty_no_labels(void **state)
{
    (void)state;
    struct pw_prom_hist h;
    pw_prom_hist_init(&h, pw_prom_latency_bounds, pw_prom_latency_nbounds);
    struct pw_buf b;
    pw_buf_init(&b, 4096);
    struct pw_prom w;
    pw_prom_init(&w, &b);
    pw_prom_hist_write(&w, "h", NULL, 0, &h);
    assert_int_equal(pw_prom_err(&w), PW_OK);
    assert_non_null(strstr(b.data, "h_bucket{le=\"0.001\"} 0\n"));
    assert_non_null(strstr(b.data, "h_bucket{le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(b.data, "h_bucket{le=\"60\"} 0\nh_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"));
    pw_buf_fini(&b);
}

static void test_cap_is_sticky_and_whole_lines(void **state)
{
    (void)state;
    struct pw_buf b;
    pw_buf_init(&b, 40);
    struct pw_prom w;
    pw_prom_init(&w, &b);
    pw_prom_sample_u64(&w, "short", NULL, 0, 1);
    pw_prom_sample_u64(&w, "a_rather_long_metric_name_that_overflows", NULL, 0, 2);
    assert_int_equal(pw_prom_err(&w), PW_ERR_TOOBIG);
    pw_prom_sample_u64(&w, "s", NULL, 0, 3);
    assert_string_equal(b.data, "short 1\n");
    pw_buf_fini(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_samples),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_histogram_cumulative),
        cmocka_unit_test(test_histogram_empty_no_labels),
        cmocka_unit_test(test_cap_is_sticky_and_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
