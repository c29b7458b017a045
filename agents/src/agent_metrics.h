/* agent_metrics.h — the agent's own Prometheus /metrics: counters the agent keeps as it runs,
 * a snapshot of its state taken when scraped, and an optional HTTP listener on the agent's
 * loop (--metrics-listen). docs/metrics.md lists every metric.
 *
 * Threads: everything on the agent's loop thread. */
#ifndef PW_AGENT_METRICS_H
#define PW_AGENT_METRICS_H

#include "pw/http.h"
#include "pw/prom.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The agent's state when scraped, filled by the agent's snapshot callback. Strings are owned by
 * the agent and valid during the render. */
struct pw_agent_metrics_state {
    const char *id, *driver, *accelerator, *version;
    uint64_t vms[PW_AVM__COUNT]; /* inventory VMs by state (restoring, running, stopping) */
    const char *link_state;     /* idle, sending, receiving or closed */
    int connected;              /* the last request to the scheduler got an answer */
    int draining;
    uint64_t outbox;            /* events waiting for the scheduler's acknowledgement */
};

typedef void (*pw_agent_metrics_state_fn)(void *arg, struct pw_agent_metrics_state *out);

/* Counters, embedded in the agent (init, then close once at shutdown). */
struct pw_agent_metrics {
    struct pw_prom_hist restore_hist; /* restore time of VMs that came up, seconds */
    uint64_t restores, restore_failures, vms_gone;
    uint64_t hellos_sent, reports_sent, replies, link_errors, commands;
    struct pw_http_server *http;      /* NULL while no listener */
    pw_agent_metrics_state_fn state_fn;
    void *state_arg;
};

void pw_agent_metrics_init(struct pw_agent_metrics *m, pw_agent_metrics_state_fn fn, void *arg);

/* pw_agent_metrics_listen serves GET /metrics on host:port on loop. Returns PW_OK, or an error
 * with a reason in errbuf. */
int pw_agent_metrics_listen(struct pw_agent_metrics *m, uv_loop_t *loop, const char *host, int port,
                            char *errbuf, size_t errlen);
/* pw_agent_metrics_close stops the listener (freed as the loop runs its close callbacks). */
void pw_agent_metrics_close(struct pw_agent_metrics *m);

/* pw_agent_metrics_render appends the exposition of m and st to b. Pure. Returns PW_OK or
 * PW_ERR_TOOBIG. */
int pw_agent_metrics_render(const struct pw_agent_metrics *m, const struct pw_agent_metrics_state *st,
                            struct pw_buf *b);

#endif
