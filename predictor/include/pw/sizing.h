/* sizing.h — from an expected arrival rate to a number of warm VMs.
 *
 * Concurrent invocations in steady state (M/G/inf) are Poisson with mean rate x duration; the
 * arrivals during one restore must also find a VM. So N ~ Poisson(mu) with
 * mu = lambda / 60000 * (dur_ms + restore_ms), and the target is the smallest k with
 * P(N <= k) >= quantile. Rare functions would always get 0 by that rule, yet they dominate the
 * per-function cold-start percentage: one VM is kept whenever the chance of at least one arrival
 * within the horizon, 1 - exp(-lambda * horizon_min), exceeds 1 - quantile. Pure functions. */
#ifndef PW_SIZING_H
#define PW_SIZING_H

#include "pw/forecast.h"

#include <stdint.h>

/* pw_sizing_poisson_quantile returns the smallest k with P(N <= k) >= q for N ~ Poisson(mu),
 * or cap if that k is larger. mu <= 0 gives 0; q must be in (0, 1). */
uint32_t pw_sizing_poisson_quantile(double mu, double q, uint32_t cap);

/* What sizing knows of one function this minute. */
struct pw_sizing_in {
    double lambda;  /* expected invocations in the coming minute */
    double dur_ms;  /* execution time */
    double mem_mb;  /* memory per VM */
    double per_day; /* invocations per day so far (0: unknown) */
};

/* pw_sizing_floor returns the VM floor. Busy functions (two VMs or more by the concurrency
 * quantile) get that quantile; functions expecting at least one arrival in the horizon keep at
 * least one VM. A quiet function's one VM (fewer arrivals expected) is a different trade: the value of
 * keeping it warm for the coming minute is the chance of an arrival, P1 = 1 - exp(-lambda),
 * and each avoided cold start matters more the fewer invocations the function has (the
 * per-function cold-start share is cold / invocations), while the cost is its memory. With
 * keep_one_cost > 0 one VM is kept when P1 / (max(per_day, 1) * mem_gb) > keep_one_cost;
 * otherwise (keep_one_cost == 0) when P1 > 1 - quantile. */
uint32_t pw_sizing_floor(const struct pw_sizing_in *in, const struct pw_forecast_params *p);

/* pw_sizing_target returns the VM floor for a function with lambda expected invocations per
 * minute and execution time dur_ms, under p (quantile, restore_ms, horizon_min, max_target). */
uint32_t pw_sizing_target(double lambda, double dur_ms, const struct pw_forecast_params *p);

#endif
