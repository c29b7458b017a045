/* history.c — the per-function minute ring and idle-gap record behind the features. */
#include "pw/history.h"

#include "pw/error.h"

#include <string.h>

#define H PW_HISTORY_MINUTES
#define K PW_HISTORY_GAPS

void pw_history_init(struct pw_history *h)
{
    memset(h, 0, sizeof(*h));
    h->first_minute = PW_HISTORY_NONE;
    h->last_minute = PW_HISTORY_NONE;
    h->last_active = PW_HISTORY_NONE;
}

static size_t slot(int64_t t)
{
    int64_t s = t % H;
    return (size_t)(s < 0 ? s + H : s);
}

static uint16_t sat_add(uint16_t a, uint32_t b)
{
    uint32_t s = (uint32_t)a + b;
    return s > UINT16_MAX || s < b ? UINT16_MAX : (uint16_t)s;
}

/* gap_at returns the i-th newest remembered gap (i < ngaps). */
static uint16_t gap_at(const struct pw_history *h, size_t i)
{
    return h->gaps[(h->gap_head + K - 1 - i) % K];
}

int pw_history_add(struct pw_history *h, int64_t minute, uint32_t count)
{
    if (h->last_minute == PW_HISTORY_NONE) {
        h->first_minute = minute;
        h->ring[slot(minute)] = 0;
    } else if (minute < h->last_minute) {
        return PW_ERR_INVAL;
    } else if (minute > h->last_minute) {
        /* Skipped minutes count as zero; clearing more than one lap is pointless. */
        int64_t from = minute - h->last_minute > H ? minute - H + 1 : h->last_minute + 1;
        for (int64_t t = from; t <= minute; t++)
            h->ring[slot(t)] = 0;
    }
    h->last_minute = minute;
    h->ring[slot(minute)] = sat_add(h->ring[slot(minute)], count);
    h->total += count;
    if (count == 0 || h->last_active == minute)
        return PW_OK;
    if (h->last_active != PW_HISTORY_NONE) {
        int64_t gap = minute - h->last_active - 1;
        h->gaps[h->gap_head] = gap > UINT16_MAX ? UINT16_MAX : (uint16_t)gap;
        h->gap_head = (uint8_t)((h->gap_head + 1) % K);
        if (h->ngaps < K)
            h->ngaps++;
    }
    h->last_active = minute;
    return PW_OK;
}

uint32_t pw_history_count_at(const struct pw_history *h, int64_t now, int64_t t)
{
    if (t >= now || h->last_minute == PW_HISTORY_NONE || t > h->last_minute || t < h->first_minute ||
        t <= h->last_minute - H)
        return 0;
    return h->ring[slot(t)];
}

/* skip_future walks the active minutes back from last_active (each gap ends at an active
 * minute) until one lies before now. Returns that minute or PW_HISTORY_NONE, and in *skipped
 * how many of the newest gaps end at or after now. */
static int64_t skip_future(const struct pw_history *h, int64_t now, size_t *skipped)
{
    int64_t a = h->last_active;
    size_t i = 0;
    while (a != PW_HISTORY_NONE && a >= now) {
        if (i >= h->ngaps) {
            a = PW_HISTORY_NONE;
            break;
        }
        a = a - gap_at(h, i) - 1;
        i++;
    }
    *skipped = i;
    return a;
}

int64_t pw_history_last_active_before(const struct pw_history *h, int64_t now)
{
    size_t skipped;
    int64_t a = skip_future(h, now, &skipped);
    if (a != PW_HISTORY_NONE || h->last_active == PW_HISTORY_NONE)
        return a;
    /* The gap record ran out while skipping the future: fall back to the ring. */
    for (int64_t t = now - 1; t > now - 1 - H; t--)
        if (pw_history_count_at(h, now, t) > 0)
            return t;
    return PW_HISTORY_NONE;
}

size_t pw_history_gaps_before(const struct pw_history *h, int64_t now, uint16_t *out)
{
    size_t skipped, n = 0;
    if (skip_future(h, now, &skipped) == PW_HISTORY_NONE)
        return 0;
    for (size_t i = skipped; i < h->ngaps; i++)
        out[n++] = gap_at(h, i);
    return n;
}

double pw_history_mean_before(const struct pw_history *h, int64_t now)
{
    if (h->first_minute == PW_HISTORY_NONE || now <= h->first_minute)
        return 0.0;
    uint64_t total = h->total;
    /* Take back what was observed at or after now (only the ring can hold such minutes). */
    for (int64_t t = now > h->last_minute - H + 1 ? now : h->last_minute - H + 1; t <= h->last_minute; t++)
        if (t >= h->first_minute) {
            uint32_t c = h->ring[slot(t)];
            total = total >= c ? total - c : 0;
        }
    return (double)total / (double)(now - h->first_minute);
}
