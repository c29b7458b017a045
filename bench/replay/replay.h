/* replay.h — prewarm-replay's private interface: policies, options, the per-minute arrival
 * generator shared by both modes, and the two simulations (pool: the real core against
 * simulated agents; instance: Shahrad et al.'s one-instance-per-app model). */
#ifndef PW_REPLAY_H
#define PW_REPLAY_H

#include "pw/baselines.h"
#include "pw/trace.h"

#include <stddef.h>
#include <stdint.h>

#define REPLAY_POLICY_MAP(X)                                                   \
    X(NONE, "none")             /* keep-alive 0: every VM goes as soon as idle */ \
    X(KEEPALIVE, "keepalive")   /* fixed keep-alive after each use */           \
    X(HYBRID, "hybrid")         /* Shahrad et al. hybrid histogram */           \
    X(REACTIVE, "reactive")     /* Knative KPA-like */                          \
    X(PREDICTIVE, "predictive") /* ours: forecaster floor + grace */            \
    X(ORACLE, "oracle")         /* knows the future: the lower bound */

enum replay_policy_kind {
#define REPLAY_POLICY_ENUM(n, s) REPLAY_##n,
    REPLAY_POLICY_MAP(REPLAY_POLICY_ENUM)
#undef REPLAY_POLICY_ENUM
    REPLAY__COUNT
};

struct replay_policy {
    enum replay_policy_kind kind;
    char label[64];       /* as given on the command line, e.g. "keepalive:10m" */
    int64_t keepalive_ms; /* KEEPALIVE */
    double quantile;      /* PREDICTIVE: < 0 means --quantile */
    int64_t grace_ms;     /* PREDICTIVE: < 0 means --grace */
    double keep_one_cost; /* PREDICTIVE: < 0 means --keep-one-cost */
};

/* replay_policy_parse parses none | keepalive:<dur> | hybrid | reactive |
 * predictive[:<quantile>[:<grace>[:<keep-one-cost>]]] | oracle. Returns 0 on success, -1 with a reason in err. */
int replay_policy_parse(const char *s, struct replay_policy *out, char *err, size_t errlen);

enum replay_mode { REPLAY_MODE_POOL, REPLAY_MODE_INSTANCE };

struct replay_opts {
    uint64_t seed;
    enum replay_mode mode;
    int64_t restore_ms;     /* simulated restore latency R */
    int64_t t0, t_end;      /* virtual time window (ms): minutes [A, B) */
    size_t minute0, minute1;
    size_t nfns;            /* functions replayed: the first nfns of the trace */
    uint32_t max_vms;       /* pool max per function */
    double quantile;        /* predictive default */
    int64_t grace_ms;       /* predictive default */
    double keep_one_cost;   /* predictive default (pw_forecast_params.keep_one_cost) */
    const char *model_path; /* NULL: no model (heuristic forecast) */
    int spread_start;       /* arrivals at the minute's first millisecond (tests) */
    const char *per_fn_path; /* NULL, or a CSV of per-function results (pool mode) */
    struct pw_hybrid_params hybrid;
    struct pw_kpa_params kpa;
};

/* Everything reported for one policy. Times are wall/CPU and excluded from determinism. */
struct replay_result {
    struct replay_policy policy;
    uint64_t invocations, cold;
    double cold_pct;     /* invocation-weighted */
    double fn_pct[4];    /* per-function cold-start % at p50, p75, p90, p99 */
    size_t fns_invoked;  /* functions with >= 1 invocation */
    double waste_gbs;    /* GB-seconds, GB = 1024 MB */
    double waste_norm;   /* keepalive:10m = 100 */
    double mean_vms;     /* alive VMs sampled each virtual second */
    uint64_t peak_vms;
    uint64_t restores;   /* VMs created */
    double policy_us_per_tick; /* policy decision CPU per virtual second */
    double wall_s;
};

/* ---- arrivals ---- */

struct replay_arrival {
    int64_t t;        /* ms */
    uint32_t fn;      /* index in the trace */
    uint32_t dur_ms;  /* execution time, >= 1 */
};

/* The generator draws each function's arrivals from its own stream (seeded from the seed and the
 * function's index), minute by minute in order, so every policy and both modes see the same
 * invocations. */
struct replay_gen {
    const struct pw_trace *trace;
    size_t nfns;
    uint64_t *rng; /* nfns */
    int spread_start;
};
void replay_gen_init(struct replay_gen *g, const struct pw_trace *t, size_t nfns, uint64_t seed, int spread_start);
void replay_gen_fini(struct replay_gen *g);
/* replay_gen_minute writes minute m's arrivals (sorted by time, then function) into *buf
 * (grown with pw_xrealloc; *cap its capacity) and returns how many. Minutes must be asked for
 * in increasing order. */
size_t replay_gen_minute(struct replay_gen *g, size_t m, struct replay_arrival **buf, size_t *cap);

/* ---- simulations ---- */

/* replay_pool_run replays policy pol in pool mode with the real core. Returns 0, or -1 with a
 * reason in err (e.g. the predictive model cannot be loaded). */
int replay_pool_run(const struct pw_trace *t, const struct replay_opts *o, const struct replay_policy *pol,
                    struct replay_result *out, char *err, size_t errlen);
/* replay_instance_run replays pol in instance mode (no core). Same contract. */
int replay_instance_run(const struct pw_trace *t, const struct replay_opts *o, const struct replay_policy *pol,
                        struct replay_result *out, char *err, size_t errlen);

/* ---- shared helpers ---- */

/* replay_fn_percentiles fills r->fn_pct and r->fns_invoked from per-function counts (linear
 * interpolation between closest ranks, over functions with >= 1 invocation). */
void replay_fn_percentiles(struct replay_result *r, const uint64_t *inv, const uint64_t *cold, size_t n);
/* replay_cpu_us returns this process's user + system CPU time in microseconds (getrusage). */
double replay_cpu_us(void);
double replay_wall_s(void);

#endif
