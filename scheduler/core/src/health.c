/* health.c — self-healing: hosts whose restores fail, or take far longer than the fleet's, are
 * cordoned (no new VMs) and put on probation later.
 *
 * Each host keeps its last HEALTH_RING restore outcomes (agent-measured restore time, or a
 * failure). The fleet is every other alive host. A host is an anomaly against the fleet's own
 * distribution, never against a fixed number:
 *   - failures: its last HEALTH_FAIL_RUN outcomes all failed while the rest of the fleet
 *     succeeded in at least (1 - HEALTH_FLEET_FAIL_MAX) of its recent restores (when everyone
 *     fails, the image or the function is broken, not the host);
 *   - slow: the median of its last successes exceeds the fleet's median by more than
 *     HEALTH_SLOW_MADS robust deviations (1.4826 MAD) and is at least HEALTH_SLOW_RATIO times it.
 * Either needs the fleet to have HEALTH_FLEET_MIN outcomes from at least two other hosts.
 *
 * A cordoned host takes no new VMs (its pools are refilled elsewhere by the reconcile); its
 * VMs already running stay. After cordon_ms (doubling on each repeat, up to HEALTH_MAX_MS) it
 * is on probation: eligible again with a clean record; HEALTH_FAIL_RUN good outcomes uncordon
 * it, a new anomaly cordons it again. Cordons and uncordons are counted (PW_METRIC_HOST_*)
 * with the host and reason in the action. */
#include "core_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HEALTH_FAIL_RUN 3
#define HEALTH_FLEET_MIN 6
#define HEALTH_FLEET_FAIL_MAX 0.34
#define HEALTH_SLOW_MADS 5.0
#define HEALTH_SLOW_RATIO 2.0
#define HEALTH_MIN_MS 5000
#define HEALTH_MAX_MS (10 * 60 * 1000)

static const char *const reason_names[] = {"", "restore_failures", "restore_slow"};

const char *pw_core_cordon_reason_str(int reason)
{
    return reason >= 0 && reason < (int)(sizeof(reason_names) / sizeof(reason_names[0])) ? reason_names[reason] : "";
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* emit counts a cordon event as a metric action and adds the host and the reason to it. */
/* ---- the fleet's restore times, kept as a histogram ---- */

static size_t hist_bucket(double ms)
{
    double b = 4.0 * log2(ms + 1.0);
    return b < 0 ? 0 : b > 63 ? 63 : (size_t)b;
}

static void hist_add(struct pw_core *c, double ms, int sign)
{
    if (ms < 0)
        return; /* a failure */
    size_t b = hist_bucket(ms);
    if (sign > 0) {
        c->restore_hist[b]++;
        c->restore_hist_n++;
    } else if (c->restore_hist[b] > 0) {
        c->restore_hist[b]--;
        c->restore_hist_n--;
    }
}

/* ring_clear forgets a host's record (and its share of the histogram). */
static void ring_clear(struct pw_core *c, struct pw_health *hh)
{
    for (size_t i = 0; i < hh->n; i++)
        hist_add(c, hh->ring[i], -1);
    hh->n = hh->pos = 0;
}

/* fleet_median_floor is a lower bound of the fleet's median restore time (the lower edge of
 * its bucket), 0 with no data. */
static double fleet_median_floor(const struct pw_core *c)
{
    uint64_t seen = 0;
    for (size_t b = 0; b < 64; b++) {
        seen += c->restore_hist[b];
        if (2 * seen >= c->restore_hist_n && c->restore_hist_n > 0)
            return exp2((double)b / 4.0) - 1.0;
    }
    return 0;
}

static void emit(struct pw_core *c, struct host *h, enum pw_metric_id id, double value)
{
    pw_core_metric(c, id, NULL, value);
    struct pw_action *a = &c->acts[(c->acts_head + c->acts_len - 1) % c->acts_cap];
    pw_strlcpy(a->host, h->id, sizeof(a->host));
    pw_strlcpy(a->function, pw_core_cordon_reason_str(h->health.reason), sizeof(a->function));
}

/* fleet_stats gathers the other alive hosts' recent outcomes. */
static void fleet_stats(const struct pw_core *c, const struct host *self, double *ms, size_t *nms, size_t *fails,
                        size_t *total, size_t *hosts)
{
    *nms = *fails = *total = *hosts = 0;
    const struct pw_list *it;
    for (it = c->host_list.next; it != &c->host_list; it = it->next) {
        const struct host *h = pw_container_of(it, struct host, link);
        if (h == self || h->state != PW_HOST_ALIVE || h->health.n == 0)
            continue;
        (*hosts)++;
        for (size_t i = 0; i < h->health.n; i++) {
            double x = h->health.ring[i];
            (*total)++;
            if (x < 0)
                (*fails)++;
            else
                ms[(*nms)++] = x;
        }
    }
}

static void cordon(struct pw_core *c, struct host *h, int reason, int64_t now, double value)
{
    struct pw_health *hh = &h->health;
    hh->cordoned = 1;
    hh->probation = 0;
    hh->reason = reason;
    hh->since = now;
    hh->backoff_ms = hh->backoff_ms ? hh->backoff_ms * 2 : c->cfg.cordon_ms;
    if (hh->backoff_ms > HEALTH_MAX_MS)
        hh->backoff_ms = HEALTH_MAX_MS;
    hh->until = now + hh->backoff_ms;
    ring_clear(c, hh);
    pw_core_host_sync_eligible(c, h);
    emit(c, h, PW_METRIC_HOST_CORDONED, value);
    pw_core_reconcile_all(c, now); /* refill its pools elsewhere */
}

void pw_core_health_observe(struct pw_core *c, struct host *h, double restore_ms, int64_t now)
{
    if (c->cfg.cordon_ms <= 0 || h->state != PW_HOST_ALIVE)
        return;
    struct pw_health *hh = &h->health;
    if (hh->n == HEALTH_RING)
        hist_add(c, hh->ring[hh->pos], -1); /* the outcome this one replaces */
    hist_add(c, restore_ms, +1);
    hh->ring[hh->pos] = restore_ms;
    hh->pos = (hh->pos + 1) % HEALTH_RING;
    if (hh->n < HEALTH_RING)
        hh->n++;
    if (hh->cordoned && !hh->probation)
        return; /* a restore started before the cordon */

    /* The host's latest outcomes, newest first. */
    size_t run_fail = 0, run_ok = 0;
    for (size_t k = 0; k < hh->n; k++) {
        double x = hh->ring[(hh->pos + HEALTH_RING - 1 - k) % HEALTH_RING];
        if (x < 0 && run_ok == 0)
            run_fail++;
        else if (x >= 0 && run_fail == 0)
            run_ok++;
        else
            break;
    }
    /* The host's recent successes. */
    double mine[HEALTH_RING];
    size_t nm = 0;
    for (size_t k = 0; k < hh->n; k++)
        if (hh->ring[k] >= 0)
            mine[nm++] = hh->ring[k];
    double my = nm > 0 ? median(mine, nm) : 0;
    /* Most outcomes are unremarkable: only a run of failures, or a median at least
     * HEALTH_SLOW_RATIO times the fleet's (from the histogram, a lower bound), is worth
     * gathering every other host's record for. */
    int maybe_slow = nm >= HEALTH_FAIL_RUN && restore_ms >= 0 && my >= HEALTH_SLOW_RATIO * fleet_median_floor(c);
    if (run_fail < HEALTH_FAIL_RUN && !maybe_slow)
        goto healthy;
    size_t nh = 1;
    for (const struct pw_list *it = c->host_list.next; it != &c->host_list; it = it->next)
        nh++;
    double *fleet = pw_xmalloc(sizeof(double) * HEALTH_RING * nh);
    size_t nms, fails, total, hosts;
    fleet_stats(c, h, fleet, &nms, &fails, &total, &hosts);
    int enough = total >= HEALTH_FLEET_MIN && hosts >= 2;
    if (enough && run_fail >= HEALTH_FAIL_RUN && (double)fails <= HEALTH_FLEET_FAIL_MAX * (double)total) {
        free(fleet);
        cordon(c, h, PW_CORDON_FAILURES, now, (double)run_fail);
        return;
    }
    /* Slow: the median of this host's recent successes against the fleet's. */
    if (enough && maybe_slow && nms >= HEALTH_FLEET_MIN) {
        double m = median(fleet, nms);
        for (size_t i = 0; i < nms; i++)
            fleet[i] = fabs(fleet[i] - m);
        double mad = 1.4826 * median(fleet, nms);
        if (my > m + HEALTH_SLOW_MADS * mad && my >= HEALTH_SLOW_RATIO * m && my > 0) {
            free(fleet);
            cordon(c, h, PW_CORDON_SLOW, now, my);
            return;
        }
    }
    free(fleet);
healthy:
    if (hh->probation && run_ok >= HEALTH_FAIL_RUN) {
        hh->cordoned = hh->probation = 0;
        hh->backoff_ms = 0;
        emit(c, h, PW_METRIC_HOST_UNCORDONED, (double)(now - hh->since));
        hh->reason = 0;
    }
}

void pw_core_health_tick(struct pw_core *c, int64_t now)
{
    if (c->cfg.cordon_ms <= 0)
        return;
    struct pw_list *it;
    for (it = c->host_list.next; it != &c->host_list; it = it->next) {
        struct host *h = pw_container_of(it, struct host, link);
        struct pw_health *hh = &h->health;
        if (hh->cordoned && !hh->probation && now >= hh->until) {
            /* Probation: new VMs may go there again; the next outcomes decide. */
            hh->probation = 1;
            ring_clear(c, hh);
            pw_core_host_sync_eligible(c, h);
            pw_core_reconcile_all(c, now);
        }
    }
}

int pw_core_health_blocks(const struct host *h)
{
    return h->health.cordoned && !h->health.probation;
}
