/* metrics.h — prewarmd's /metrics: everything the daemon knows, in the Prometheus text format
 * (docs/metrics.md lists every metric).
 *
 * Threads: the loop thread, like everything that reads the core. */
#ifndef PW_METRICS_H
#define PW_METRICS_H

#include "pw/util.h"

#include <stddef.h>

struct pw_daemon;

/* Most agents given their own prewarm_agent_up series (the rest are counted in
 * prewarm_agents only), and the most functions with their own pool series. */
#define PW_METRICS_MAX_AGENTS 256
#define PW_METRICS_MAX_TOP_FUNCTIONS 1000
/* The whole exposition stays below this. */
#define PW_METRICS_MAX_BYTES (2u << 20)

/* pw_metrics_render appends the exposition to b (the caller owns b; init it with a cap of at
 * least PW_METRICS_MAX_BYTES). Returns PW_OK or PW_ERR_TOOBIG. */
int pw_metrics_render(struct pw_daemon *d, struct pw_buf *b);

#endif
