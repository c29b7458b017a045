/* bench-predictor-cost — how long pw_forecaster_tick takes for 100,000 functions, with the
 * shipped model (XGBoost on one thread) and with the no-model heuristic as the baseline.
 *
 * Functions come in four seeded shapes: steady (Poisson), periodic (a burst every P minutes),
 * bursty (on/off), idle (rare single calls). 180 minutes of history are fed, then each of 20
 * ticks observes one more minute and forecasts the next. */
#include "pw/error.h"
#include "pw/forecast.h"
#include "pw/model.h"
#include "pw/trace.h"
#include "pw/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define WARM_MINUTES 180
#define TICKS 20

enum shape { STEADY, PERIODIC, BURSTY, IDLE };

struct synth {
    uint8_t shape, on;
    uint16_t period;
    float rate;
};

static uint32_t poisson(uint64_t *rng, double mu)
{
    if (mu > 50) {
        double u1 = pw_rng_unit(rng) + 1e-12, u2 = pw_rng_unit(rng);
        double v = mu + sqrt(mu) * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
        return v < 0 ? 0 : (uint32_t)(v + 0.5);
    }
    double l = exp(-mu), p = 1.0;
    uint32_t k = 0;
    do {
        k++;
        p *= pw_rng_unit(rng);
    } while (p > l);
    return k - 1;
}

static uint32_t draw(struct synth *s, int64_t minute, uint64_t *rng)
{
    switch (s->shape) {
    case STEADY:
        return poisson(rng, s->rate);
    case PERIODIC:
        return minute % s->period == 0 ? poisson(rng, s->rate) : 0;
    case BURSTY:
        if (pw_rng_unit(rng) < (s->on ? 0.1 : 0.02))
            s->on = !s->on;
        return s->on ? poisson(rng, s->rate) : 0;
    default:
        return pw_rng_unit(rng) < 0.002 ? 1 : 0;
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run(const char *label, size_t n, const struct pw_model *model, uint64_t seed)
{
    struct pw_fn_static *st = pw_xmalloc(n * sizeof(*st));
    struct synth *sy = pw_xmalloc(n * sizeof(*sy));
    uint32_t *targets = pw_xmalloc(n * sizeof(*targets));
    double *lambda = pw_xmalloc(n * sizeof(*lambda));
    uint64_t rng = seed;
    for (size_t i = 0; i < n; i++) {
        double u = pw_rng_unit(&rng);
        sy[i].shape = u < 0.2 ? STEADY : u < 0.4 ? PERIODIC : u < 0.6 ? BURSTY : IDLE;
        sy[i].on = 0;
        sy[i].period = (uint16_t)(5 + pw_rng_next(&rng) % 60);
        sy[i].rate = (float)exp(pw_rng_unit(&rng) * log(200.0));
        st[i].dur_ms = exp(2 + pw_rng_unit(&rng) * 7);
        st[i].mem_mb = 128.0 * (double)(1 + pw_rng_next(&rng) % 8);
    }
    struct pw_forecast_params fp;
    pw_forecast_params_default(&fp);
    struct pw_forecaster *f = pw_forecaster_new(n, st, model, &fp);
    for (int64_t m = 0; m < WARM_MINUTES; m++)
        for (size_t i = 0; i < n; i++)
            pw_forecaster_observe(f, i, m, draw(&sy[i], m, &rng));

    double wall[TICKS], wall_sum = 0, cpu_sum = 0, vms = 0;
    int rv = PW_OK;
    for (int t = 0; t < TICKS && rv == PW_OK; t++) {
        int64_t m = WARM_MINUTES + t;
        double w0 = now_s(), c0 = cpu_s();
        rv = pw_forecaster_tick(f, m, targets, lambda);
        wall[t] = now_s() - w0;
        cpu_sum += cpu_s() - c0;
        wall_sum += wall[t];
        for (size_t i = 0; i < n; i++) {
            vms += targets[i];
            pw_forecaster_observe(f, i, m, draw(&sy[i], m, &rng));
        }
    }
    if (rv == PW_OK) {
        qsort(wall, TICKS, sizeof(wall[0]), cmp_double);
        printf("%-10s %zu functions x %d ticks: %.3f us/function/tick wall, %.3f us CPU; tick p50 %.1f ms, "
               "max %.1f ms; mean target %.2f VMs/function\n",
               label, n, TICKS, wall_sum / TICKS / (double)n * 1e6, cpu_sum / TICKS / (double)n * 1e6,
               wall[TICKS / 2] * 1e3, wall[TICKS - 1] * 1e3, vms / TICKS / (double)n);
    } else {
        fprintf(stderr, "%s: tick failed: %s\n", label, pw_strerror(rv));
    }
    pw_forecaster_free(f);
    free(st);
    free(sy);
    free(targets);
    free(lambda);
    return rv;
}

int main(int argc, char **argv)
{
    const char *path = PW_SOURCE_DIR "/models/default.json";
    size_t n = 100000;
    uint64_t seed = 42;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--functions"))
            n = strtoul(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--seed"))
            seed = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: bench-predictor-cost [--model FILE] [--functions N] [--seed N]\n");
            return 2;
        }
    }
    struct pw_model *model = NULL;
    int rv = pw_model_load(path, &model);
    if (rv == PW_OK)
        rv = pw_model_set_nthread(model, 1);
    if (rv != PW_OK) {
        fprintf(stderr, "bench-predictor-cost: model %s: %s\n", path, pw_strerror(rv));
        return 1;
    }
    printf("model %s (XGBoost nthread 1); %zu bytes per function\n", path, pw_forecaster_bytes_per_function());
    rv = run("model", n, model, seed);
    if (rv == PW_OK)
        rv = run("heuristic", n, NULL, seed);
    pw_model_free(model);
    return rv == PW_OK ? 0 : 1;
}
