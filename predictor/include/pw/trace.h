/* trace.h — invocation traces in the layout of the Azure Functions 2019 trace.
 *
 * A trace directory holds invocations_per_minute.csv (HashFunction,HashApp,HashOwner,1..N: the
 * invocations started in each minute), durations_ms.csv (per function: Count, Average,
 * Minimum, Maximum, percentile_Average_{0,1,25,50,75,99,100}) and memory_mb.csv (per app:
 * SampleCount, AverageAllocatedMb and its percentiles). Functions without a durations row get
 * the trace's median duration; apps without a memory row get the median memory; both are
 * counted in the load report. Rows are parsed strictly: a malformed file is an error naming the
 * file and line, never a silent skip.
 *
 * Threads: a loaded trace is read-only and may be shared. The RNG helpers are pure. */
#ifndef PW_TRACE_H
#define PW_TRACE_H

#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>

#define PW_TRACE_MAX_MINUTES (31 * 1440)
#define PW_TRACE_MAX_FUNCTIONS 1000000

/* Duration percentiles as in durations_ms.csv: 0, 1, 25, 50, 75, 99, 100. */
#define PW_TRACE_NPCT 7
extern const double pw_trace_pct_points[PW_TRACE_NPCT];

struct pw_trace_fn {
    char name[PW_NAME_MAX]; /* "f" + the first 24 hex digits of HashFunction: a valid pw name */
    char hash[65];          /* HashFunction as in the file (up to 64 characters) */
    char app[65];           /* HashApp */
    uint32_t *minutes;      /* nminutes counts, owned by the trace */
    uint64_t total;         /* sum of minutes */
    double dur_avg_ms;
    double dur_pct_ms[PW_TRACE_NPCT]; /* non-decreasing */
    double mem_mb;          /* the app's AverageAllocatedMb */
    int dur_known, mem_known;
};

struct pw_trace {
    struct pw_trace_fn *fns; /* nfns entries, in file order */
    size_t nfns;
    size_t nminutes;
    uint64_t total;            /* all invocations */
    size_t dur_missing, mem_missing;
};

/* pw_trace_load reads dir. On PW_OK the caller owns *out (pw_trace_free). On error (PW_ERR_IO,
 * PW_ERR_PARSE, PW_ERR_TOOBIG) nothing is allocated and errbuf names the file and line. Single
 * thread; takes a second or two for the 2019 sample. */
int pw_trace_load(const char *dir, struct pw_trace *out, char *errbuf, size_t errlen);
void pw_trace_free(struct pw_trace *t);

/* pw_trace_parse_line splits one CSV line (no quotes in these files) into at most max fields,
 * writing NUL terminators into line. Returns the number of fields. Exposed for the fuzz
 * target and tests. */
size_t pw_trace_split(char *line, char **fields, size_t max);

/* Deterministic random numbers (splitmix64): same seed, same stream, on every machine. */
uint64_t pw_rng_next(uint64_t *state);
double pw_rng_unit(uint64_t *state); /* [0, 1) */

/* pw_trace_draw_duration_ms draws one execution time of f from its percentiles, linear
 * between the points (inverse CDF), using u in [0, 1). */
double pw_trace_draw_duration_ms(const struct pw_trace_fn *f, double u);

#endif
