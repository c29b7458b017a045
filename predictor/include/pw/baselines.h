/* baselines.h — the baseline pool policies as pure per-function state machines: the hybrid
 * histogram of Shahrad et al. (USENIX ATC '20) and a Knative-KPA-like reactive autoscaler.
 *
 * They hold no clock and do no I/O: callers pass `now` in milliseconds and apply the decision
 * (prewarm-replay through pw_core_set_dynamic in virtual time; prewarmd may select them per
 * function). Exact rules and simplifications: docs/replay.md.
 *
 * Threads: one state object belongs to one thread; params are read-only and may be shared. */
#ifndef PW_BASELINES_H
#define PW_BASELINES_H

#include <stddef.h>
#include <stdint.h>

/* ---- hybrid histogram ---- */

#define PW_HYBRID_MAX_BINS 1440

struct pw_hybrid_params {
    int64_t bin_ms;       /* histogram bin width (1 minute) */
    uint32_t nbins;       /* bins: range = nbins * bin_ms (240: 4 hours); <= PW_HYBRID_MAX_BINS */
    double head_pct;      /* pre-warm percentile (5) */
    double tail_pct;      /* keep-alive percentile (99) */
    double margin;        /* 0.10: pre-warm shrinks by it, keep-alive grows by it */
    uint32_t min_samples; /* in-range idle times needed before the histogram counts (10) */
    double cv_min;        /* bin-count coefficient of variation needed (2.0) */
};
/* pw_hybrid_params_default fills the values in parentheses above. */
void pw_hybrid_params_default(struct pw_hybrid_params *p);

struct pw_hybrid {
    uint32_t *bins;   /* nbins counts of idle times, owned */
    uint32_t nbins;
    uint64_t samples; /* idle times inside the range */
    uint64_t oob;     /* idle times beyond the range */
};

/* Why a window was chosen. */
#define PW_HYBRID_REASON_MAP(X)                                              \
    X(HISTOGRAM, "histogram")     /* windows from the histogram's head and tail */ \
    X(FEW_SAMPLES, "few_samples") /* fewer than min_samples in range: fallback */  \
    X(LOW_CV, "low_cv")           /* flat histogram (CV < cv_min): fallback */     \
    X(OOB, "out_of_range")        /* most idle times beyond the range: fallback */

enum pw_hybrid_reason {
#define PW_HYBRID_REASON_ENUM(n, s) PW_HYBRID_##n,
    PW_HYBRID_REASON_MAP(PW_HYBRID_REASON_ENUM)
#undef PW_HYBRID_REASON_ENUM
    PW_HYBRID__COUNT
};
const char *pw_hybrid_reason_str(enum pw_hybrid_reason r);

/* The policy's decision after the function goes idle at time t: unload at once and restore a
 * VM at t + prewarm_ms, keeping it until t + prewarm_ms + keepalive_ms; or, when prewarm_ms is
 * 0, keep the warm VM until t + keepalive_ms. */
struct pw_hybrid_windows {
    int64_t prewarm_ms;
    int64_t keepalive_ms;
    enum pw_hybrid_reason reason;
};

/* pw_hybrid_init allocates h's bins for p (caller frees with pw_hybrid_fini). */
void pw_hybrid_init(struct pw_hybrid *h, const struct pw_hybrid_params *p);
void pw_hybrid_fini(struct pw_hybrid *h);
/* pw_hybrid_observe records one idle time (from the end of the function's last execution to
 * the next arrival). Negative values are ignored. */
void pw_hybrid_observe(struct pw_hybrid *h, const struct pw_hybrid_params *p, int64_t idle_ms);
/* pw_hybrid_windows computes the windows from the histogram so far:
 *  - more out-of-range than in-range idle times, fewer than min_samples in range, or a bin
 *    CV below cv_min: fallback, prewarm 0 and keep-alive = the range (nbins * bin_ms);
 *  - else head = lower edge of the bin holding the head_pct percentile, tail = upper edge of
 *    the bin holding the tail_pct percentile; prewarm = head * (1 - margin), and the VM is
 *    kept until tail * (1 + margin): keepalive = tail * (1 + margin) - prewarm. */
void pw_hybrid_windows(const struct pw_hybrid *h, const struct pw_hybrid_params *p, struct pw_hybrid_windows *out);
/* pw_hybrid_bin_cv returns the coefficient of variation (stddev / mean) of h's bin counts, 0
 * for an empty histogram. */
double pw_hybrid_bin_cv(const struct pw_hybrid *h);

/* ---- reactive (Knative KPA-like) ---- */

#define PW_KPA_MAX_BUCKETS 601

struct pw_kpa_params {
    int64_t bucket_ms;        /* concurrency is integrated per bucket (1 s) */
    int64_t stable_ms;        /* stable window (60 s); a multiple of bucket_ms */
    int64_t panic_ms;         /* panic window (6 s); a multiple of bucket_ms, <= stable_ms */
    int64_t eval_ms;          /* evaluation period (2 s) */
    int64_t scale_to_zero_ms; /* no request in flight or arriving for this long: 0 VMs (30 s) */
    double target;            /* concurrency per VM (1) */
    double panic_threshold;   /* panic when panic desired >= this * current VMs (2) */
};
void pw_kpa_params_default(struct pw_kpa_params *p);

struct pw_kpa {
    int64_t buckets[PW_KPA_MAX_BUCKETS]; /* concurrency x ms per bucket, ring */
    uint32_t nbuckets;                   /* ring slots: stable_ms / bucket_ms + 1 */
    uint32_t cur;                        /* bucket holding `last` */
    int64_t bucket_end;                  /* end of the current bucket */
    int64_t last;                        /* time integrated up to */
    uint32_t inflight;
    int64_t last_active; /* last time a request was in flight or arrived */
    int64_t panic_until; /* in panic while now < panic_until */
    uint32_t desired;    /* last decision */
};

/* pw_kpa_init starts an empty autoscaler at time now. */
void pw_kpa_init(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now);
/* pw_kpa_request_start / _end: a request arrived (counted in flight until it ends). Times must
 * not go backwards. */
void pw_kpa_request_start(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now);
void pw_kpa_request_end(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now);
/* pw_kpa_evaluate returns the desired VM count at now given the VMs the function has (ready):
 * stable = ceil(avg concurrency over stable_ms / target), panic = the same over panic_ms;
 * panic starts (or extends to now + stable_ms) when panic >= panic_threshold * max(ready, 1);
 * while panicking desired = max(panic, previous desired) (never scales down), else stable;
 * with nothing in flight and no arrival for scale_to_zero_ms the answer is 0. */
uint32_t pw_kpa_evaluate(struct pw_kpa *k, const struct pw_kpa_params *p, int64_t now, uint32_t ready);
/* pw_kpa_quiet returns nonzero when k needs no more evaluations until the next request:
 * desired 0, nothing in flight, not panicking. */
int pw_kpa_quiet(const struct pw_kpa *k, int64_t now);

#endif
