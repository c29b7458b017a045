/* history.h — what the predictor remembers of one function: the last PW_HISTORY_MINUTES
 * per-minute counts in a ring, the last PW_HISTORY_GAPS idle gaps, and running totals.
 *
 * Sized for 100,000 functions: sizeof(struct pw_history) is 328 bytes on LP64. Counts saturate
 * at UINT16_MAX per minute (the Azure 2019 sample peaks at 12,956), totals do not.
 *
 * Threads: a history belongs to its forecaster's thread. */
#ifndef PW_HISTORY_H
#define PW_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define PW_HISTORY_MINUTES 128 /* ring length; features look back at most 120 minutes */
#define PW_HISTORY_GAPS 16     /* idle gaps remembered for the gap percentiles */
#define PW_HISTORY_NONE INT64_MIN

struct pw_history {
    int64_t first_minute; /* first observed minute, PW_HISTORY_NONE before any observation */
    int64_t last_minute;  /* latest observed minute (its count sits in ring[last_minute % H]) */
    int64_t last_active;  /* latest minute with a count > 0, or PW_HISTORY_NONE */
    uint64_t total;       /* all invocations observed, uncapped */
    uint16_t ring[PW_HISTORY_MINUTES];
    /* Idle minutes between consecutive active minutes, newest at gaps[(gap_head - 1) % K]. The
     * newest gap ends at last_active, so the minute every gap ends at can be recomputed. */
    uint16_t gaps[PW_HISTORY_GAPS];
    uint8_t ngaps, gap_head;
};

/* pw_history_init empties h (no allocation). */
void pw_history_init(struct pw_history *h);

/* pw_history_add records count invocations started in minute. Minutes not added since the
 * previous one count as zero; adding the same minute again adds to it. Returns PW_OK, or
 * PW_ERR_INVAL (h unchanged) when minute is older than the latest minute added. */
int pw_history_add(struct pw_history *h, int64_t minute, uint32_t count);

/* pw_history_count_at returns the count of minute t as seen from a forecast for minute `now`:
 * 0 for t >= now (the future), for minutes never observed, or older than the ring. */
uint32_t pw_history_count_at(const struct pw_history *h, int64_t now, int64_t t);

/* pw_history_last_active_before returns the latest active minute < now, or PW_HISTORY_NONE
 * when none is remembered. */
int64_t pw_history_last_active_before(const struct pw_history *h, int64_t now);

/* pw_history_gaps_before copies into out[PW_HISTORY_GAPS] the remembered idle gaps that ended
 * before now (newest first); returns how many. */
size_t pw_history_gaps_before(const struct pw_history *h, int64_t now, uint16_t *out);

/* pw_history_mean_before returns the mean count per minute over [first_minute, now), or 0. */
double pw_history_mean_before(const struct pw_history *h, int64_t now);

#endif
