/* features.h — the model's input row for one function and one forecast minute.
 *
 * The order is fixed (models are trained against it and store the names; pw_model_load refuses
 * a model whose names differ). Every feature is computed from minutes strictly before the
 * forecast minute. Counts are raw (trees do not care about monotone transforms); "minutes since
 * last" and gap percentiles are capped at PW_FEAT_CAP_MIN, which is also their value when
 * nothing is known. */
#ifndef PW_FEATURES_H
#define PW_FEATURES_H

#include "pw/forecast.h"
#include "pw/history.h"

#include <stdint.h>

#define PW_FEAT_CAP_MIN 1440.0f
#define PW_FEAT_WINDOW 120 /* the longest look-back, minutes; also the training warm-up */

/* X(id, name, meaning) */
#define PW_FEAT_MAP(X)                                                            \
    X(LAG1, "lag1", "count of minute m-1")                                        \
    X(LAG2, "lag2", "count of minute m-2")                                        \
    X(LAG3, "lag3", "count of minute m-3")                                        \
    X(LAG5, "lag5", "count of minute m-5")                                        \
    X(LAG10, "lag10", "count of minute m-10")                                     \
    X(LAG15, "lag15", "count of minute m-15")                                     \
    X(LAG30, "lag30", "count of minute m-30")                                     \
    X(LAG60, "lag60", "count of minute m-60")                                     \
    X(MEAN5, "mean5", "mean count over m-5..m-1")                                 \
    X(MEAN15, "mean15", "mean count over m-15..m-1")                              \
    X(MEAN60, "mean60", "mean count over m-60..m-1")                              \
    X(MEAN120, "mean120", "mean count over m-120..m-1")                           \
    X(MAX5, "max5", "max count over m-5..m-1")                                    \
    X(MAX15, "max15", "max count over m-15..m-1")                                 \
    X(MAX60, "max60", "max count over m-60..m-1")                                 \
    X(MAX120, "max120", "max count over m-120..m-1")                              \
    X(ACTIVE60, "active60", "fraction of minutes with a count > 0 in m-60..m-1")  \
    X(ACTIVE120, "active120", "fraction of active minutes in m-120..m-1")         \
    X(MEANALL, "mean_all", "mean count per minute since first observed")          \
    X(SINCE, "since_last", "minutes since the last active minute (capped)")       \
    X(GAP50, "gap_p50", "median of the last idle gaps, minutes (capped)")         \
    X(GAP90, "gap_p90", "90th percentile of the last idle gaps, minutes (capped)") \
    X(TODSIN, "tod_sin", "sin(2 pi minute-of-day / 1440)")                        \
    X(TODCOS, "tod_cos", "cos(2 pi minute-of-day / 1440)")                        \
    X(LOGDUR, "log_dur", "ln(1 + duration ms)")                                   \
    X(LOGMEM, "log_mem", "ln(1 + memory MB)")

enum pw_feat {
#define PW_FEAT_ENUM(id, name, meaning) PW_FEAT_##id,
    PW_FEAT_MAP(PW_FEAT_ENUM)
#undef PW_FEAT_ENUM
    PW_FEAT_COUNT
};

/* Static names, indexed by enum pw_feat. */
extern const char *const pw_feat_names[PW_FEAT_COUNT];

/* pw_features_compute writes the PW_FEAT_COUNT features of h for a forecast of minute `now`
 * into out. st may be NULL (duration and memory then count as 0). Pure; any thread. */
void pw_features_compute(const struct pw_history *h, int64_t now, const struct pw_fn_static *st, float *out);

#endif
