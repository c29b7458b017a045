/* prom.h — writing metrics in the Prometheus text exposition format 0.0.4.
 *
 * A pw_prom writer appends to a capped pw_buf: a family header (HELP and TYPE), then samples
 * with escaped labels. Histograms keep per-bucket counts with fixed upper bounds (seconds for
 * latencies) and are written cumulatively as _bucket{le=...}, _sum and _count, ending with
 * le="+Inf". The first error (the buffer cap) sticks: later calls do nothing, and the caller
 * checks pw_prom_err() once at the end. Pure: no I/O, no clock.
 *
 * Threads: a writer and a histogram belong to one thread. */
#ifndef PW_PROM_H
#define PW_PROM_H

#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>

/* The content type of the text format, for the HTTP answer. */
#define PW_PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#define PW_PROM_MAX_BOUNDS 24 /* finite bucket bounds per histogram (plus +Inf) */
#define PW_PROM_MAX_LABELS 8  /* labels per sample */

struct pw_prom_label {
    const char *name;  /* [a-zA-Z_][a-zA-Z0-9_]*, not checked */
    const char *value; /* any UTF-8; escaped on output */
};

/* A writer borrows b (the caller owns it and its cap). */
struct pw_prom {
    struct pw_buf *b;
    int err; /* PW_OK or the first error */
};

enum pw_prom_type { PW_PROM_COUNTER, PW_PROM_GAUGE, PW_PROM_HISTOGRAM };

/* A histogram: counts[i] counts observations v with bounds[i-1] < v <= bounds[i]; counts[n]
 * those above the last bound. Embedded, no allocation. */
struct pw_prom_hist {
    size_t nbounds;
    double bounds[PW_PROM_MAX_BOUNDS]; /* strictly increasing */
    uint64_t counts[PW_PROM_MAX_BOUNDS + 1];
    double sum;
    uint64_t count;
};

/* Bucket bounds in seconds for latencies from 1 ms to 60 s. */
extern const double pw_prom_latency_bounds[];
extern const size_t pw_prom_latency_nbounds;

void pw_prom_init(struct pw_prom *w, struct pw_buf *b);
/* pw_prom_err returns PW_OK or the first error (PW_ERR_TOOBIG when the buffer cap was hit). */
int pw_prom_err(const struct pw_prom *w);

/* pw_prom_family writes "# HELP name help" (help escaped) and "# TYPE name type". Write it once
 * per metric name, before its samples. */
void pw_prom_family(struct pw_prom *w, const char *name, enum pw_prom_type type, const char *help);
/* pw_prom_sample writes one sample line: name{labels} value. nlabels may be 0 (labels NULL).
 * pw_prom_sample_u64 writes an integer value exactly. NaN and infinities are written as NaN,
 * +Inf and -Inf. */
void pw_prom_sample(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                    double value);
void pw_prom_sample_u64(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                        uint64_t value);
/* pw_prom_hist_write writes h's name_bucket lines (cumulative, one per bound, then le="+Inf"),
 * name_sum and name_count, each with labels plus le for the buckets. */
void pw_prom_hist_write(struct pw_prom *w, const char *name, const struct pw_prom_label *labels, size_t nlabels,
                        const struct pw_prom_hist *h);

/* pw_prom_escape_label appends s to b escaped as a label value (backslash, double quote and
 * newline); pw_prom_escape_help the same for HELP text (backslash and newline). Return PW_OK or
 * PW_ERR_TOOBIG. */
int pw_prom_escape_label(struct pw_buf *b, const char *s);
int pw_prom_escape_help(struct pw_buf *b, const char *s);

/* pw_prom_hist_init sets up an empty histogram with n bounds (n <= PW_PROM_MAX_BOUNDS,
 * strictly increasing; asserted). */
void pw_prom_hist_init(struct pw_prom_hist *h, const double *bounds, size_t n);
/* pw_prom_hist_observe counts one value (NaN is ignored). */
void pw_prom_hist_observe(struct pw_prom_hist *h, double v);

#endif
