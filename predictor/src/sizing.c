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

uint32_t pw_sizing_target(double lambda, double dur_ms, const struct pw_forecast_params *p)
{
    if (!(lambda > 0))
        return 0;
    double busy_ms = (dur_ms > 0 ? dur_ms : 0) + (p->restore_ms > 0 ? p->restore_ms : 0);
    double mu = lambda / 60000.0 * busy_ms;
    uint32_t k = pw_sizing_poisson_quantile(mu, p->quantile, p->max_target);
    int32_t horizon = p->horizon_min > 0 ? p->horizon_min : 1;
    if (k == 0 && -expm1(-lambda * horizon) > 1.0 - p->quantile)
        k = 1;
    return k > p->max_target ? p->max_target : k;
}
