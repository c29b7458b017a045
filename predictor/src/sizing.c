/* sizing.c — Poisson quantiles for the pool target (see sizing.h for the model). */
#include "pw/sizing.h"

#include <math.h>

uint32_t pw_sizing_poisson_quantile(double mu, double q, uint32_t cap)
{
    if (!(mu > 0) || cap == 0)
        return 0;
    /* Start the cumulative sum where the mass below is negligible (< 1e-25 past 12 sigma), so
     * large means neither underflow exp(-mu) nor walk from zero. */
    double k0 = 0;
    if (mu > 500)
        k0 = floor(mu - 12.0 * sqrt(mu));
    double p = exp(-mu + k0 * log(mu) - lgamma(k0 + 1.0));
    double cdf = p;
    double k = k0;
    while (cdf < q) {
        if (k >= cap)
            return cap;
        k += 1.0;
        p *= mu / k;
        cdf += p;
        /* Past the mean, a vanishing term means rounding holds the sum just below q. */
        if (k > mu && p < 1e-17)
            break;
    }
    return k >= cap ? cap : (uint32_t)k;
}

uint32_t pw_sizing_floor(const struct pw_sizing_in *in, const struct pw_forecast_params *p)
{
    double lambda = in->lambda;
    if (!(lambda > 0))
        return 0;

    double busy_ms = (in->dur_ms > 0 ? in->dur_ms : 0) + (p->restore_ms > 0 ? p->restore_ms : 0);
    double mu = lambda / 60000.0 * busy_ms;
    uint32_t k = pw_sizing_poisson_quantile(mu, p->quantile, p->max_target);
    if (k >= 2)
        return k;
    int32_t horizon = p->horizon_min > 0 ? p->horizon_min : 1;
    /* At least one arrival expected in the horizon: not quiet; one VM at least. */
    if (lambda * horizon >= 1.0)
        return p->max_target >= 1 ? 1 : 0;
    double p1 = -expm1(-lambda * horizon);
    if (p->keep_one_cost > 0) {
        double per_day = in->per_day > 1.0 ? in->per_day : 1.0;
        double mem_gb = in->mem_mb > 0 ? in->mem_mb / 1024.0 : 1.0;
        k = p1 / (per_day * mem_gb) > p->keep_one_cost ? 1 : 0;
    } else if (k == 0 && p1 > 1.0 - p->quantile) {
        k = 1;
    }
    return k > p->max_target ? p->max_target : k;
}

uint32_t pw_sizing_target(double lambda, double dur_ms, const struct pw_forecast_params *p)
{
    struct pw_sizing_in in = {.lambda = lambda, .dur_ms = dur_ms};
    return pw_sizing_floor(&in, p);
}
