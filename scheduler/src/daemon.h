/* daemon.h — prewarmd: the shell around the pure core.
 *
 * One libuv loop thread owns the core and all mutable state. It feeds the core events (HTTP
 * API calls, agent messages, a 100 ms tick) with uv_now() as the time, and executes the actions
 * the core queues: answers to parked acquires, commands to agents (answering their held long
 * poll at once), telemetry rows to the store, metric counters. */
#ifndef PW_DAEMON_H
#define PW_DAEMON_H

#include "agentlink.h"
#include "config.h"
#include "leader.h"
#include "metrics.h"
#include "store.h"

#include "pw/core.h"
#include "pw/http.h"
#include "pw/prom.h"
#include "pw/util.h"

#include <uv.h>

/* A long poll held for an agent until it has commands or the heartbeat passes. */
struct held_poll {
    struct pw_hnode hnode; /* d->held by agent id */
    struct pw_list qlink;  /* d->held_q: by deadline, since every hold lasts one heartbeat */
    char agent_id[PW_NAME_MAX];
    struct pw_agentlink_req *req;
    int64_t until;
};

/* An acquire waiting for the core's answer. */
struct parked {
    struct pw_hnode hnode; /* d->parked by req_id */
    uint64_t req_id;
    struct pw_http_req *http;
};

/* A config write waiting for the store; the core changes only once it is committed. */
struct pending_write {
    struct pw_daemon *d;
    struct pw_http_req *http;
    int kind;      /* WRITE_PUT, WRITE_DELETE, WRITE_DRAIN (api.c) */
    int pool_only; /* PUT .../pool: answer with the pool object */
    struct pw_function_spec spec; /* WRITE_PUT, WRITE_DELETE */
    int existed;
    char host[PW_NAME_MAX];       /* WRITE_DRAIN: the host */
    int drain;                    /* WRITE_DRAIN: 1 drain, 0 undrain */
};

struct pw_daemon {
    uv_loop_t *loop;
    struct pw_sched_config cfg;
    struct pw_core *core;
    struct pw_store *store;
    struct pw_http_server *http;
    struct pw_agentlink *link;
    struct pw_predict *predict;
    struct pw_leader *leader; /* election (leader.h); core, predict and link exist once elected */
    struct pw_tlsfront *https; /* optional TLS in front of the HTTP API (tlsfront.h) */
    int leading;              /* elected: the core, predictor, agent link and tick are up */
    int exit_code;            /* of pw_daemon_run: 3 when deposed */
    uv_timer_t tick;
    uv_timer_t held_timer; /* armed for the first held poll's deadline (once leading) */
    uv_signal_t sigint, sigterm;
    uint64_t epoch;
    struct pw_htab held;
    struct pw_list held_q; /* the same held polls, oldest (first due) first */
    struct pw_htab parked;
    uint64_t next_req_id;
    int stopping;
    /* Metrics the shell counts from actions. */
    uint64_t metrics[PW_METRIC__COUNT];
    uint64_t acquire_errors[4]; /* not found, limit, bad request, store */
    uint64_t auth_failures[PW_AUTH_FAIL__COUNT]; /* API requests refused, by enum pw_auth_fail */
    uint64_t functions_refused; /* PUTs of a new function beyond --max-functions */
    uint64_t cordons[2];        /* self-healing cordons: restore_failures, restore_slow */
    uint64_t wakeups;           /* held polls answered early with commands */
    int64_t started_wall_ms;
    /* Observations for /metrics (metrics.c), all on the loop thread. */
    struct pw_prom_hist acquire_hist[3];  /* acquire wait in seconds: warm, cold, timeout */
    struct pw_prom_hist restore_hist;     /* agent-measured restore time in seconds */
    struct pw_prom_hist placement_hist;   /* core steps that placed a VM, in seconds */
    uint64_t cold_no_capacity;            /* NO_CAPACITY while the function had waiters */
    uint64_t prewarm_cmds;                /* prewarm commands queued by the core */
    size_t metrics_top_n;                 /* functions with their own pool series */
};

/* pw_daemon_metrics_init sets up the histograms and reads PREWARM_METRICS_TOP_FUNCTIONS. */
void pw_daemon_metrics_init(struct pw_daemon *d);

/* pw_daemon_run builds everything from cfg, runs the loop until SIGINT/SIGTERM, tears down.
 * Returns the process exit code. */
int pw_daemon_run(const struct pw_sched_config *cfg);

/* Executes every action the core has queued (called after each core entry point). */
void pw_daemon_drain(struct pw_daemon *d);
int64_t pw_daemon_now(const struct pw_daemon *d);

/* api.c: the HTTP handler. */
void pw_api_handle(void *arg, struct pw_http_req *req);
/* api.c: answer a parked acquire from a core action. */
void pw_api_answer(struct pw_daemon *d, const struct pw_action *a);
/* api.c: drop parked acquires whose client went away. */
void pw_api_sweep(struct pw_daemon *d);

#endif
