/* bench-placement — what one placement decision costs: the indexed placer (pw_placer_place)
 * against the naive full scan (pw_placer_place_scan), on a synthetic cluster of 10,000 hosts
 * with 2-4 NUMA nodes each, 1,000 functions and 100,000 placements and removals mixed.
 *
 * The cluster is filled to ~70% first (by the indexed placer itself), then the same operation
 * sequence, drawn from its own seeded stream and so independent of what the placers decide,
 * runs from identical copies of that state: once timed with each placer, and once more untimed
 * with the indexed placer to compare every Nth decision with the naive optimum on the same
 * state. Each decision is timed with the monotonic clock and with the thread CPU clock, and the
 * whole phase with getrusage, so hypervisor stalls and preemption in the wall-clock tail can be
 * told apart from real cost (docs/placement-bench.md). */
#include "pw/error.h"
#include "pw/placer.h"
#include "pw/util.h"

#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define TARGET_P99_US 50.0
#define TARGET_DECISIONS_PER_S 20000.0
#define MAX_NODES 4
#define ZIPF_S 0.8       /* popularity of functions: rank^-s */
#define SCORE_EPS 1e-9   /* scores this close are the same optimum */
#define FILL_MAX_FAILS 1000 /* consecutive failed fill placements before giving up */
#define LOAD_PER_VCPU 0.25  /* host load added per vCPU of a VM on it */

/* ---- deterministic random numbers (splitmix64) ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static uint32_t rng_below(uint64_t *s, uint32_t n) { return (uint32_t)(rng_unit(s) * n); }

/* ---- clocks ---- */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* thread_cpu_ns reads this thread's CPU time: a system call (~0.2 µs), but blind to time the
 * thread was not running, whether preempted or stolen by the hypervisor. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ---- the synthetic cluster ---- */

/* Instance types: per-node memory and vCPU slots, price per GiB-hour (memory-optimised hosts are
 * cheaper per GiB), share of the fleet. */
struct itype {
    const char *name;
    uint32_t mem_gib, slots;
    double cost;
    double weight;
};

static const struct itype ITYPES[] = {
    {"gp.metal", 128, 48, 0.0050, 0.40},
    {"cpu.metal", 64, 64, 0.0060, 0.20},
    {"mem.metal", 256, 64, 0.0040, 0.25},
    {"hmem.metal", 192, 32, 0.0045, 0.15},
};

struct cloud_def {
    const char *name;
    double price; /* multiplier on the instance price */
    const char *regions[2];
    size_t nregions;
};

static const struct cloud_def CLOUDS[] = {
    {"cloud-a", 1.0, {"a-east", "a-west"}, 2},
    {"cloud-b", 1.1, {"b-central"}, 1},
};

struct zone_def {
    size_t cloud, region; /* region: index into CLOUDS[cloud].regions */
    char name[PW_NAME_MAX];
};

#define MAX_ZONES 9

struct bhost {
    uint32_t zone, itype, nnodes;
    uint32_t ncpus;
    int eligible;   /* not draining */
    int outbox_ok;  /* host_ok: the agent's outbox has room */
    double base_load; /* busy fraction of its CPUs without our VMs */
    struct pw_numa_node numa[MAX_NODES];
};

struct bfn {
    char name[PW_NAME_MAX];
    uint64_t hash;
    uint32_t memory_mb, vcpus;
    int constrained;
    uint32_t snap_hosts; /* golden snapshot copies drawn (a host may be drawn twice) */
    struct pw_placement_spec spec;
};

struct cluster {
    struct zone_def zones[MAX_ZONES];
    size_t nzones;
    struct bhost *hosts;
    size_t nhosts;
    struct bfn *fns;
    size_t nfns;
    double *fn_cdf; /* popularity, cumulative */
    uint64_t *snaps; /* hosts' snapshot hashes, host h at snaps[snap_off[h] .. snap_off[h + 1]] */
    size_t *snap_off;
    uint64_t mem_total, vcpu_total;
    size_t nnodes, neligible, nconstrained, nsnapfns;
};

/* host_ok_calls counts the placer's host_ok calls: it asks once per node that passed the capacity
 * and spread checks, just before scoring it, so this is the number of nodes scored. */
static uint64_t host_ok_calls;

static int host_ok(void *owner)
{
    host_ok_calls++;
    return ((const struct bhost *)owner)->outbox_ok;
}

static uint32_t pick_fn(const struct cluster *c, uint64_t *rng)
{
    double u = rng_unit(rng);
    size_t lo = 0, hi = c->nfns - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c->fn_cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (uint32_t)lo;
}

static void make_spec(const struct cluster *c, struct bfn *f, size_t rank, uint64_t *rng)
{
    struct pw_placement_spec *s = &f->spec;
    memset(s, 0, sizeof(*s));
    double u = rng_unit(rng);
    /* Location constraints only below the top 1%: a single zone cannot hold the most popular. */
    if (rank >= c->nfns / 100) {
        if (u < 0.10) {
            size_t want = 1 + rng_below(rng, 3);
            while (s->nzones < want) {
                const char *z = c->zones[rng_below(rng, (uint32_t)c->nzones)].name;
                int dup = 0;
                for (size_t i = 0; i < s->nzones; i++)
                    dup |= strcmp(s->zones[i], z) == 0;
                if (!dup)
                    pw_strlcpy(s->zones[s->nzones++], z, PW_NAME_MAX);
            }
        } else if (u < 0.18) {
            pw_strlcpy(s->clouds[s->nclouds++], CLOUDS[rng_below(rng, PW_ARRAY_LEN(CLOUDS))].name, PW_NAME_MAX);
        } else if (u < 0.23) {
            const struct cloud_def *cd = &CLOUDS[rng_below(rng, PW_ARRAY_LEN(CLOUDS))];
            pw_strlcpy(s->regions[s->nregions++], cd->regions[rng_below(rng, (uint32_t)cd->nregions)], PW_NAME_MAX);
        }
    }
    static const double host_shares[] = {0.05, 0.1, 0.25, 0.5};
    static const double zone_shares[] = {0.3, 0.4, 0.5};
    if (rng_unit(rng) < 0.25)
        s->max_host_share = host_shares[rng_below(rng, PW_ARRAY_LEN(host_shares))];
    if (rng_unit(rng) < 0.10)
        s->max_zone_share = zone_shares[rng_below(rng, PW_ARRAY_LEN(zone_shares))];
    f->constrained = s->nzones || s->nclouds || s->nregions || s->max_host_share > 0 || s->max_zone_share > 0;
}

static void cluster_make(struct cluster *c, size_t nhosts, size_t nfns, uint64_t seed)
{
    uint64_t rng = seed;
    memset(c, 0, sizeof(*c));
    /* 2 clouds, 3 regions, 2-3 zones per region: 6-9 zones. */
    for (size_t ci = 0; ci < PW_ARRAY_LEN(CLOUDS); ci++) {
        for (size_t ri = 0; ri < CLOUDS[ci].nregions; ri++) {
            size_t nz = 2 + rng_below(&rng, 2);
            for (size_t k = 0; k < nz; k++) {
                struct zone_def *z = &c->zones[c->nzones++];
                z->cloud = ci;
                z->region = ri;
                snprintf(z->name, sizeof(z->name), "%s-%zu", CLOUDS[ci].regions[ri], k + 1);
            }
        }
    }

    c->nhosts = nhosts;
    c->hosts = pw_xcalloc(nhosts, sizeof(*c->hosts));
    for (size_t i = 0; i < nhosts; i++) {
        struct bhost *h = &c->hosts[i];
        h->zone = rng_below(&rng, (uint32_t)c->nzones);
        double u = rng_unit(&rng), acc = 0;
        h->itype = PW_ARRAY_LEN(ITYPES) - 1;
        for (size_t t = 0; t < PW_ARRAY_LEN(ITYPES); t++) {
            acc += ITYPES[t].weight;
            if (u < acc) {
                h->itype = (uint32_t)t;
                break;
            }
        }
        h->nnodes = 2 + rng_below(&rng, 3);
        h->eligible = rng_unit(&rng) >= 0.01;
        h->outbox_ok = rng_unit(&rng) >= 0.005;
        h->base_load = 0.4 * rng_unit(&rng);
        const struct itype *t = &ITYPES[h->itype];
        for (uint32_t k = 0; k < h->nnodes; k++) {
            struct pw_numa_node *n = &h->numa[k];
            n->id = (int32_t)k;
            /* Node 0 keeps some memory and CPUs for the host itself. */
            n->mem_total_mb = (uint64_t)(t->mem_gib - (k == 0 ? 8 : 0)) * 1024;
            n->vcpu_total = (int32_t)(t->slots - (k == 0 ? 4 : 0));
            n->ncpus = n->vcpu_total / 2;
            n->mem_free_mb = n->mem_total_mb;
            n->vcpu_free = n->vcpu_total;
            h->ncpus += (uint32_t)n->ncpus;
            c->mem_total += n->mem_total_mb;
            c->vcpu_total += (uint64_t)n->vcpu_total;
        }
        c->nnodes += h->nnodes;
        c->neligible += (size_t)h->eligible;
    }

    c->nfns = nfns;
    c->fns = pw_xcalloc(nfns, sizeof(*c->fns));
    c->fn_cdf = pw_xmalloc(nfns * sizeof(*c->fn_cdf));
    static const uint32_t mems[] = {128, 256, 512, 1024, 2048, 4096, 8192};
    static const double mem_w[] = {0.15, 0.20, 0.20, 0.15, 0.12, 0.10, 0.08};
    double total_w = 0;
    for (size_t i = 0; i < nfns; i++) {
        struct bfn *f = &c->fns[i];
        snprintf(f->name, sizeof(f->name), "fn-%05zu", i);
        f->hash = pw_hash_str(f->name);
        double u = rng_unit(&rng), acc = 0;
        f->memory_mb = mems[PW_ARRAY_LEN(mems) - 1];
        for (size_t k = 0; k < PW_ARRAY_LEN(mems); k++) {
            acc += mem_w[k];
            if (u < acc) {
                f->memory_mb = mems[k];
                break;
            }
        }
        if (f->memory_mb <= 1024)
            f->vcpus = rng_unit(&rng) < 0.8 ? 1 : 2;
        else if (f->memory_mb <= 2048)
            f->vcpus = 1 + rng_below(&rng, 2);
        else
            f->vcpus = 2 + rng_below(&rng, 3);
        make_spec(c, f, i, &rng);
        char err[256];
        if (pw_placement_spec_validate(&f->spec, err, sizeof(err)) != PW_OK) {
            fprintf(stderr, "bench-placement: generated spec of %s is invalid: %s\n", f->name, err);
            exit(1);
        }
        c->nconstrained += (size_t)f->constrained;
        total_w += pow((double)(i + 1), -ZIPF_S);
        c->fn_cdf[i] = total_w;
    }
    for (size_t i = 0; i < nfns; i++)
        c->fn_cdf[i] /= total_w;

    /* Golden snapshots: the top 2% on 64-256 hosts, half of the rest on 2-32 hosts. */
    size_t *cnt = pw_xcalloc(nhosts + 1, sizeof(*cnt));
    uint32_t *pairs_h = NULL, *pairs_f = NULL;
    size_t npairs = 0, cap = 0;
    for (size_t i = 0; i < nfns; i++) {
        size_t k = 0;
        if (i < nfns / 50 + 1)
            k = 64 + rng_below(&rng, 193);
        else if (rng_unit(&rng) < 0.5)
            k = 2 + rng_below(&rng, 31);
        if (k > nhosts)
            k = nhosts;
        c->nsnapfns += k > 0;
        c->fns[i].snap_hosts = (uint32_t)k;
        for (size_t j = 0; j < k; j++) {
            if (npairs == cap) {
                cap = cap ? cap * 2 : 1024;
                pairs_h = pw_xrealloc(pairs_h, cap * sizeof(*pairs_h));
                pairs_f = pw_xrealloc(pairs_f, cap * sizeof(*pairs_f));
            }
            pairs_h[npairs] = rng_below(&rng, (uint32_t)nhosts);
            pairs_f[npairs] = (uint32_t)i;
            cnt[pairs_h[npairs]]++;
            npairs++;
        }
    }
    c->snap_off = pw_xcalloc(nhosts + 1, sizeof(*c->snap_off));
    for (size_t h = 0; h < nhosts; h++)
        c->snap_off[h + 1] = c->snap_off[h] + cnt[h];
    c->snaps = pw_xmalloc((npairs ? npairs : 1) * sizeof(*c->snaps));
    memset(cnt, 0, (nhosts + 1) * sizeof(*cnt));
    for (size_t j = 0; j < npairs; j++)
        c->snaps[c->snap_off[pairs_h[j]] + cnt[pairs_h[j]]++] = c->fns[pairs_f[j]].hash;
    free(cnt);
    free(pairs_h);
    free(pairs_f);
}

static void cluster_free(struct cluster *c)
{
    free(c->hosts);
    free(c->fns);
    free(c->fn_cdf);
    free(c->snaps);
    free(c->snap_off);
}

/* ---- one placer and what is placed on it ---- */

struct vm {
    uint32_t fn, host, node;
};

struct state {
    const struct cluster *c;
    struct pw_placer *p;
    struct pw_phost **ph;
    uint32_t *host_vcpus; /* vCPUs of our VMs per host, for its load */
    uint32_t *fn_vms;
    struct vm *live;
    size_t nlive, cap;
    uint64_t mem_used, vcpu_used;
};

static void state_init(struct state *st, const struct cluster *c, const struct pw_placer_config *cfg)
{
    memset(st, 0, sizeof(*st));
    st->c = c;
    st->p = pw_placer_new(cfg, host_ok);
    st->ph = pw_xcalloc(c->nhosts, sizeof(*st->ph));
    st->host_vcpus = pw_xcalloc(c->nhosts, sizeof(*st->host_vcpus));
    st->fn_vms = pw_xcalloc(c->nfns, sizeof(*st->fn_vms));
    for (size_t i = 0; i < c->nhosts; i++) {
        struct bhost *h = &c->hosts[i];
        const struct zone_def *z = &c->zones[h->zone];
        const struct itype *t = &ITYPES[h->itype];
        struct pw_label l[5];
        memset(l, 0, sizeof(l));
        const char *keys[] = {PW_LABEL_CLOUD, PW_LABEL_REGION, PW_LABEL_ZONE, PW_LABEL_INSTANCE_TYPE, PW_LABEL_COST};
        for (size_t k = 0; k < PW_ARRAY_LEN(keys); k++)
            pw_strlcpy(l[k].key, keys[k], sizeof(l[k].key));
        pw_strlcpy(l[0].value, CLOUDS[z->cloud].name, sizeof(l[0].value));
        pw_strlcpy(l[1].value, CLOUDS[z->cloud].regions[z->region], sizeof(l[1].value));
        pw_strlcpy(l[2].value, z->name, sizeof(l[2].value));
        pw_strlcpy(l[3].value, t->name, sizeof(l[3].value));
        snprintf(l[4].value, sizeof(l[4].value), "%.5f", t->cost * CLOUDS[z->cloud].price);
        st->ph[i] = pw_placer_host_add(st->p, h);
        pw_placer_host_set_labels(st->p, st->ph[i], l, PW_ARRAY_LEN(l));
        pw_placer_host_set_topology(st->p, st->ph[i], h->numa, h->nnodes);
        pw_placer_host_set_snapshots(st->p, st->ph[i], c->snaps + c->snap_off[i], c->snap_off[i + 1] - c->snap_off[i]);
        pw_placer_host_set_load(st->p, st->ph[i], h->base_load * h->ncpus);
        pw_placer_host_set_eligible(st->p, st->ph[i], h->eligible);
    }
}

static void state_fini(struct state *st)
{
    pw_placer_free(st->p);
    free(st->ph);
    free(st->host_vcpus);
    free(st->fn_vms);
    free(st->live);
}

/* host_load is what the host's next report would say: its own base load plus a quarter of a CPU
 * per vCPU of our VMs (warm VMs mostly idle; some serve). */
static double host_load(const struct state *st, uint32_t h)
{
    const struct bhost *bh = &st->c->hosts[h];
    return bh->base_load * bh->ncpus + LOAD_PER_VCPU * st->host_vcpus[h];
}

/* commit records a VM as prewarmd does after a placement: node usage, the function's counts,
 * and the host's load as its next report would carry it. Returns the ns spent in the placer. */
static uint64_t commit(struct state *st, uint32_t fn, uint32_t h, uint32_t node)
{
    const struct bfn *f = &st->c->fns[fn];
    st->host_vcpus[h] += f->vcpus;
    uint64_t t0 = now_ns();
    pw_placer_node_use(st->p, st->ph[h], node, f->memory_mb, f->vcpus, 1);
    pw_placer_fn_count(st->p, st->ph[h], f, 1);
    pw_placer_host_set_load(st->p, st->ph[h], host_load(st, h));
    uint64_t t1 = now_ns();
    if (st->nlive == st->cap) {
        st->cap = st->cap ? st->cap * 2 : 4096;
        st->live = pw_xrealloc(st->live, st->cap * sizeof(*st->live));
    }
    st->live[st->nlive++] = (struct vm){fn, h, node};
    st->fn_vms[fn]++;
    st->mem_used += f->memory_mb;
    st->vcpu_used += f->vcpus;
    return t1 - t0;
}

/* remove_vm forgets live VM i (the last one takes its slot). Returns the ns spent in the placer. */
static uint64_t remove_vm(struct state *st, size_t i)
{
    struct vm v = st->live[i];
    const struct bfn *f = &st->c->fns[v.fn];
    st->host_vcpus[v.host] -= f->vcpus;
    uint64_t t0 = now_ns();
    pw_placer_node_use(st->p, st->ph[v.host], v.node, f->memory_mb, f->vcpus, -1);
    pw_placer_fn_count(st->p, st->ph[v.host], f, -1);
    pw_placer_host_set_load(st->p, st->ph[v.host], host_load(st, v.host));
    uint64_t t1 = now_ns();
    st->live[i] = st->live[--st->nlive];
    st->fn_vms[v.fn]--;
    st->mem_used -= f->memory_mb;
    st->vcpu_used -= f->vcpus;
    return t1 - t0;
}

static void make_req(const struct state *st, uint32_t fn, struct pw_place_req *r)
{
    const struct bfn *f = &st->c->fns[fn];
    *r = (struct pw_place_req){
        .fn = f,
        .fn_hash = f->hash,
        .memory_mb = f->memory_mb,
        .vcpus = f->vcpus,
        .fn_total = st->fn_vms[fn],
        .spec = &f->spec,
    };
}

static uint32_t host_index(const struct state *st, const struct pw_phost *ph)
{
    return (uint32_t)((const struct bhost *)pw_placer_host_owner(ph) - st->c->hosts);
}

static double fill_frac(const struct state *st)
{
    double m = (double)st->mem_used / (double)st->c->mem_total;
    double v = (double)st->vcpu_used / (double)st->c->vcpu_total;
    return m > v ? m : v;
}

/* fill places VMs of functions drawn by popularity until the fuller of memory and vCPU slots
 * reaches `target`: with the indexed placer (the state it produces itself) or at random
 * feasible nodes. Returns the number of placements that found no room. */
static size_t fill(struct state *st, double target, int random_mode, uint64_t seed)
{
    uint64_t rng = seed;
    size_t fails = 0, streak = 0;
    const struct cluster *c = st->c;
    while (fill_frac(st) < target && streak < FILL_MAX_FAILS) {
        uint32_t fn = pick_fn(c, &rng);
        struct pw_place_req r;
        make_req(st, fn, &r);
        int ok = 0;
        if (random_mode) {
            for (int tries = 0; tries < 64 && !ok; tries++) {
                uint32_t h = rng_below(&rng, (uint32_t)c->nhosts);
                uint32_t node = rng_below(&rng, c->hosts[h].nnodes);
                if (pw_placer_score(st->p, st->ph[h], node, &r) >= 0) {
                    commit(st, fn, h, node);
                    ok = 1;
                }
            }
        } else {
            struct pw_place_result res;
            if (pw_placer_place(st->p, &r, &res)) {
                commit(st, fn, host_index(st, res.host), (uint32_t)res.node);
                ok = 1;
            }
        }
        if (ok) {
            streak = 0;
        } else {
            fails++;
            streak++;
        }
    }
    return fails;
}

/* ---- the measured phase ---- */

struct dist {
    double mean, p50, p99, p999, max; /* µs */
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* pct returns the nearest-rank q-quantile of n sorted values. */
static uint64_t pct(const uint64_t *sorted, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    k = k < 1 ? 1 : k > n ? n : k;
    return sorted[k - 1];
}

/* dist_of sorts ns[0..n) and summarises it in µs. */
static struct dist dist_of(uint64_t *ns, size_t n)
{
    struct dist d = {0};
    if (n == 0)
        return d;
    qsort(ns, n, sizeof(*ns), cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)ns[i];
    d.mean = sum / (double)n / 1e3;
    d.p50 = (double)pct(ns, n, 0.50) / 1e3;
    d.p99 = (double)pct(ns, n, 0.99) / 1e3;
    d.p999 = (double)pct(ns, n, 0.999) / 1e3;
    d.max = (double)ns[n - 1] / 1e3;
    return d;
}

/* One timed decision. */
struct sample {
    uint64_t ns;
    uint64_t cpu_ns; /* thread CPU time of the call (0 with --no-call-cpu) */
    uint32_t scanned, scored; /* nodes looked at; nodes that passed capacity and spread */
    uint8_t vcpus;
    uint8_t flags; /* S_* */
};

enum { S_FALLBACK = 1, S_SNAPFN = 2, S_CONSTRAINED = 4, S_NOROOM = 8 };

/* Slices of the decisions, to see where the time goes. */
static int g_all(const struct sample *s, uint64_t slow) { return 1; }
static int g_v1(const struct sample *s, uint64_t slow) { return s->vcpus == 1; }
static int g_v2(const struct sample *s, uint64_t slow) { return s->vcpus == 2; }
static int g_v3(const struct sample *s, uint64_t slow) { return s->vcpus == 3; }
static int g_v4(const struct sample *s, uint64_t slow) { return s->vcpus >= 4; }
static int g_snap(const struct sample *s, uint64_t slow) { return (s->flags & S_SNAPFN) != 0; }
static int g_nosnap(const struct sample *s, uint64_t slow) { return (s->flags & S_SNAPFN) == 0; }
static int g_con(const struct sample *s, uint64_t slow) { return (s->flags & S_CONSTRAINED) != 0; }
static int g_free(const struct sample *s, uint64_t slow) { return (s->flags & S_CONSTRAINED) == 0; }
static int g_fb(const struct sample *s, uint64_t slow) { return (s->flags & S_FALLBACK) != 0; }
static int g_noroom(const struct sample *s, uint64_t slow) { return (s->flags & S_NOROOM) != 0; }
static int g_slow(const struct sample *s, uint64_t slow) { return s->ns >= slow; }

static const struct slice {
    const char *name;
    int (*in)(const struct sample *s, uint64_t slow_ns);
} SLICES[] = {
    {"all decisions", g_all},
    {"1 vCPU", g_v1},
    {"2 vCPUs", g_v2},
    {"3 vCPUs", g_v3},
    {"4 vCPUs", g_v4},
    {"fn with snapshots", g_snap},
    {"fn without snapshots", g_nosnap},
    {"constrained fn", g_con},
    {"unconstrained fn", g_free},
    {"took the full pass", g_fb},
    {"found no room", g_noroom},
    {"slowest 1%", g_slow},
};
#define NSLICES PW_ARRAY_LEN(SLICES)

struct group {
    size_t n;
    struct dist d;
    double scanned, scored; /* means */
    double time_share;      /* of all decision time */
};

struct quality {
    size_t samples, both_room, same_score, same_node; /* the rest only over both_room */
    double gap_sum, gap_max, rel_gap_sum, rel_gap_max;
    size_t feasibility_mismatch; /* one placer found room, the other did not */
    size_t below_optimum;        /* indexed score below the full scan's: impossible */
    size_t score_mismatch;       /* result score != pw_placer_score of the chosen node */
    size_t snapshot_missed;      /* the optimum is on a snapshot host, the indexed choice is not */
};

struct result {
    const char *name;
    size_t decisions, placed, nocap, removals;
    double cpu_s, wall_s; /* the whole phase */
    struct dist commit, remove;
    struct dist call_cpu;    /* per-call thread CPU time */
    struct group g[NSLICES]; /* g[0]: all decisions */
    double scanned_p50, scanned_p99, scanned_max;
    struct pw_placer_stats st; /* summed over the timed decisions */
    uint64_t scored;           /* host_ok calls in the timed decisions */
    double score_sum;          /* of the chosen nodes */
    size_t on_snapshot;        /* placed on a host holding the function's snapshot */
    double fill_end;
    size_t same_as_indexed; /* same host and node as the timed indexed run */
    long first_diff;        /* first placement that differs from it, -1 none */
    int check_ok;
    char check_err[256];
};

static void stats_add(struct pw_placer_stats *acc, const struct pw_placer_stats *a, const struct pw_placer_stats *b)
{
    acc->decisions += b->decisions - a->decisions;
    acc->classes_visited += b->classes_visited - a->classes_visited;
    acc->nodes_scanned += b->nodes_scanned - a->nodes_scanned;
    acc->nodes_scored += b->nodes_scored - a->nodes_scored;
    acc->fallbacks += b->fallbacks - a->fallbacks;
}

struct run_opts {
    size_t ops;
    double place_share;
    uint64_t ops_seed;
    size_t quality_every; /* 0: no comparison */
    int verify;           /* pw_placer_check at the end */
    int call_cpu;         /* also read the thread CPU clock around each decision */
};

/* compare_with_scan scores the indexed decision against the naive optimum on the same state. */
static void compare_with_scan(struct state *st, const struct pw_place_req *r, int ok, const struct pw_place_result *out,
                              struct quality *q)
{
    struct pw_place_result best;
    int bok = pw_placer_place_scan(st->p, r, &best);
    q->samples++;
    if (ok != bok) {
        q->feasibility_mismatch++;
        return;
    }
    if (!ok)
        return;
    q->both_room++;
    double gap = out->score - best.score;
    if (gap < -SCORE_EPS)
        q->below_optimum++;
    if (gap < 0)
        gap = 0;
    double rel = best.score > 0 ? gap / best.score : 0;
    q->gap_sum += gap;
    q->rel_gap_sum += rel;
    q->gap_max = gap > q->gap_max ? gap : q->gap_max;
    q->rel_gap_max = rel > q->rel_gap_max ? rel : q->rel_gap_max;
    q->same_score += gap <= SCORE_EPS;
    q->same_node += out->host == best.host && out->node == best.node;
    q->snapshot_missed +=
        pw_placer_host_has_snapshot(best.host, r->fn_hash) && !pw_placer_host_has_snapshot(out->host, r->fn_hash);
    if (fabs(pw_placer_score(st->p, out->host, out->node, r) - out->score) > SCORE_EPS)
        q->score_mismatch++;
}

static void summarise(struct result *res, struct sample *sm, size_t n, uint64_t *tmp)
{
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        tmp[i] = sm[i].scanned;
        total += (double)sm[i].ns;
    }
    qsort(tmp, n, sizeof(*tmp), cmp_u64);
    res->scanned_p50 = (double)pct(tmp, n, 0.50);
    res->scanned_p99 = (double)pct(tmp, n, 0.99);
    res->scanned_max = n ? (double)tmp[n - 1] : 0;
    for (size_t i = 0; i < n; i++)
        tmp[i] = sm[i].ns;
    qsort(tmp, n, sizeof(*tmp), cmp_u64);
    uint64_t slow = n ? pct(tmp, n, 0.99) : 0;
    for (size_t g = 0; g < NSLICES; g++) {
        struct group *gr = &res->g[g];
        double scanned = 0, scored = 0, sum = 0;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (SLICES[g].in(&sm[i], slow)) {
                tmp[k++] = sm[i].ns;
                scanned += sm[i].scanned;
                scored += sm[i].scored;
                sum += (double)sm[i].ns;
            }
        }
        gr->n = k;
        gr->scanned = k ? scanned / (double)k : 0;
        gr->scored = k ? scored / (double)k : 0;
        gr->time_share = total > 0 ? sum / total : 0;
        gr->d = dist_of(tmp, k);
    }
}

enum role {
    TIMED_INDEXED, /* pw_placer_place; records its choices */
    TIMED_NAIVE,   /* pw_placer_place_scan; compares its choices with the indexed run's */
    QUALITY,       /* pw_placer_place again, with the naive optimum on the same state every Nth
                    * decision; a separate run because a full scan evicts the caches, and the
                    * decision after it would pay for that */
};

/* run_phase runs the operation sequence on st. `choices` holds one entry per placement: the
 * timed indexed run writes it, the other runs compare with it. */
static void run_phase(struct state *st, enum role role, const struct run_opts *o, int64_t *choices, size_t nchoices,
                      struct result *res, struct quality *q)
{
    struct sample *sm = pw_xcalloc(o->ops + 1, sizeof(*sm));
    uint64_t *com_ns = pw_xmalloc((o->ops + 1) * sizeof(*com_ns));
    uint64_t *rem_ns = pw_xmalloc((o->ops + 1) * sizeof(*rem_ns));
    size_t ncom = 0;
    uint64_t rng = o->ops_seed;
    int (*place)(struct pw_placer *, const struct pw_place_req *, struct pw_place_result *) =
        role == TIMED_NAIVE ? pw_placer_place_scan : pw_placer_place;
    res->first_diff = -1;

    double c0 = cpu_s();
    uint64_t w0 = now_ns();
    for (size_t op = 0; op < o->ops; op++) {
        /* Three draws per operation whatever it is: both runs see the same sequence. */
        double u = rng_unit(&rng);
        uint32_t fn = pick_fn(st->c, &rng);
        double v = rng_unit(&rng);
        if (u >= o->place_share) {
            if (st->nlive > 0) {
                size_t i = (size_t)(v * (double)st->nlive);
                rem_ns[res->removals++] = remove_vm(st, i < st->nlive ? i : st->nlive - 1);
            }
            continue;
        }
        struct pw_place_req r;
        make_req(st, fn, &r);
        struct pw_place_result out;
        struct pw_placer_stats sa, sb;
        pw_placer_stats(st->p, &sa);
        uint64_t calls = host_ok_calls;
        uint64_t k0 = o->call_cpu ? thread_cpu_ns() : 0;
        uint64_t t0 = now_ns();
        int ok = place(st->p, &r, &out);
        uint64_t t1 = now_ns();
        uint64_t k1 = o->call_cpu ? thread_cpu_ns() : 0;
        uint64_t scored = host_ok_calls - calls;
        pw_placer_stats(st->p, &sb);
        stats_add(&res->st, &sa, &sb);
        res->scored += scored;
        size_t d = res->decisions++;
        const struct bfn *f = &st->c->fns[fn];
        sm[d] = (struct sample){
            .ns = t1 - t0,
            .cpu_ns = k1 - k0,
            .scanned = (uint32_t)(sb.nodes_scanned - sa.nodes_scanned),
            .scored = (uint32_t)scored,
            .vcpus = (uint8_t)(f->vcpus < 4 ? f->vcpus : 4),
            .flags = (uint8_t)((sb.fallbacks != sa.fallbacks ? S_FALLBACK : 0) | (f->snap_hosts ? S_SNAPFN : 0) |
                               (f->constrained ? S_CONSTRAINED : 0) | (ok ? 0 : S_NOROOM)),
        };

        if (role == QUALITY && o->quality_every > 0 && d % o->quality_every == 0)
            compare_with_scan(st, &r, ok, &out, q);

        int64_t choice = -1;
        if (ok) {
            uint32_t h = host_index(st, out.host);
            choice = (int64_t)h * MAX_NODES + (int64_t)out.node;
            res->placed++;
            res->score_sum += out.score;
            res->on_snapshot += (size_t)pw_placer_host_has_snapshot(out.host, r.fn_hash);
            com_ns[ncom++] = commit(st, fn, h, (uint32_t)out.node);
        } else {
            res->nocap++;
        }
        if (d < nchoices) {
            if (role == TIMED_INDEXED)
                choices[d] = choice;
            else if (choices[d] == choice)
                res->same_as_indexed++;
            else if (res->first_diff < 0)
                res->first_diff = (long)d;
        }
    }
    res->wall_s = (double)(now_ns() - w0) / 1e9;
    res->cpu_s = cpu_s() - c0;
    res->fill_end = fill_frac(st);
    res->commit = dist_of(com_ns, ncom);
    res->remove = dist_of(rem_ns, res->removals);
    summarise(res, sm, res->decisions, com_ns);
    if (o->call_cpu) {
        for (size_t i = 0; i < res->decisions; i++)
            com_ns[i] = sm[i].cpu_ns;
        res->call_cpu = dist_of(com_ns, res->decisions);
    }
    free(sm);
    free(com_ns);
    free(rem_ns);

    res->check_ok = 1;
    if (o->verify)
        res->check_ok = pw_placer_check(st->p, res->check_err, sizeof(res->check_err)) == PW_OK;
}

/* ---- reporting ---- */

static double per_s(const struct result *r) { return r->cpu_s > 0 ? (double)r->decisions / r->cpu_s : 0; }
static double cpu_us(const struct result *r) { return r->decisions ? r->cpu_s * 1e6 / (double)r->decisions : 0; }
static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static void print_row(const struct result *r)
{
    const struct dist *d = &r->g[0].d;
    printf("%-8s | %9zu | %17.0f | %7.2f | %7.2f | %8.2f | %8.1f | %15.2f | %22.1f\n", r->name, r->decisions,
           per_s(r), d->p50, d->p99, d->p999, d->max, cpu_us(r), r->g[0].scanned);
}

static void print_summary(const struct result *r, int verify)
{
    printf("%-8s placed %zu, found no room %zu, removals %zu; phase wall %.2f s, CPU %.2f s; decision mean %.2f µs; "
           "commit mean %.2f / p99 %.2f µs; removal mean %.2f / p99 %.2f µs\n",
           r->name, r->placed, r->nocap, r->removals, r->wall_s, r->cpu_s, r->g[0].d.mean, r->commit.mean,
           r->commit.p99, r->remove.mean, r->remove.p99);
    printf("%-8s per decision: nodes scanned %.1f (p50 %.0f, p99 %.0f, max %.0f), nodes scored %.1f, classes visited "
           "%.1f; full passes %" PRIu64 "\n",
           r->name, r->g[0].scanned, r->scanned_p50, r->scanned_p99, r->scanned_max, r->g[0].scored,
           r->decisions ? (double)r->st.classes_visited / (double)r->decisions : 0, r->st.fallbacks);
    printf("%-8s chosen nodes: mean score %.4f, on a host with the function's snapshot %.1f%%; fill at end %.1f%%%s\n",
           r->name, r->placed ? r->score_sum / (double)r->placed : 0,
           r->placed ? 100.0 * (double)r->on_snapshot / (double)r->placed : 0, 100 * r->fill_end,
           !verify ? "" : r->check_ok ? "; pw_placer_check ok" : "; PW_PLACER_CHECK FAILED");
    if (!r->check_ok)
        printf("%-8s pw_placer_check: %s\n", r->name, r->check_err);
}

static void print_slices(const struct result *r)
{
    printf("\nwhere the %s placer's time goes (wall clock per decision; scanned: nodes looked at, scored: nodes "
           "that passed capacity and spread)\n",
           r->name);
    printf("%-22s | %9s | %7s | %7s | %7s | %7s | %7s | %7s\n", "slice", "decisions", "time %", "mean µs", "p50 µs",
           "p99 µs", "scanned", "scored");
    for (size_t g = 0; g < NSLICES; g++) {
        const struct group *gr = &r->g[g];
        printf("%-22s | %9zu | %7.1f | %7.2f | %7.2f | %7.2f | %7.1f | %7.1f\n", SLICES[g].name, gr->n,
               100 * gr->time_share, gr->d.mean, gr->d.p50, gr->d.p99, gr->scanned, gr->scored);
    }
}

static void json_dist(FILE *f, const char *name, const struct dist *d)
{
    fprintf(f, "\"%s\": {\"mean_us\": %.4f, \"p50_us\": %.4f, \"p99_us\": %.4f, \"p999_us\": %.4f, \"max_us\": %.4f}",
            name, d->mean, d->p50, d->p99, d->p999, d->max);
}

static void json_result(FILE *f, const struct result *r)
{
    fprintf(f, "    {\"placer\": \"%s\", \"decisions\": %zu, \"placed\": %zu, \"no_room\": %zu, \"removals\": %zu,\n",
            r->name, r->decisions, r->placed, r->nocap, r->removals);
    fprintf(f, "     \"cpu_s\": %.6f, \"wall_s\": %.6f, \"decisions_per_s_cpu\": %.1f, \"cpu_us_per_decision\": %.4f,\n",
            r->cpu_s, r->wall_s, per_s(r), cpu_us(r));
    fprintf(f, "     ");
    json_dist(f, "decision", &r->g[0].d);
    fprintf(f, ",\n     ");
    json_dist(f, "commit", &r->commit);
    fprintf(f, ",\n     ");
    json_dist(f, "removal", &r->remove);
    fprintf(f, ",\n     ");
    json_dist(f, "decision_thread_cpu", &r->call_cpu);
    fprintf(f, ",\n     \"nodes_scanned_per_decision\": %.3f, \"nodes_scanned_p50\": %.0f, \"nodes_scanned_p99\": %.0f, "
               "\"nodes_scanned_max\": %.0f, \"nodes_scored_per_decision\": %.3f,\n",
            r->g[0].scanned, r->scanned_p50, r->scanned_p99, r->scanned_max, r->g[0].scored);
    fprintf(f, "     \"classes_visited_per_decision\": %.3f, \"full_passes\": %" PRIu64 ", \"mean_score\": %.6f, "
               "\"on_snapshot_host\": %zu, \"fill_end\": %.4f, \"index_check\": %s,\n",
            r->decisions ? (double)r->st.classes_visited / (double)r->decisions : 0, r->st.fallbacks,
            r->placed ? r->score_sum / (double)r->placed : 0, r->on_snapshot, r->fill_end,
            r->check_ok ? "true" : "false");
    fprintf(f, "     \"slices\": [");
    for (size_t g = 0; g < NSLICES; g++) {
        const struct group *gr = &r->g[g];
        fprintf(f, "%s\n       {\"slice\": \"%s\", \"decisions\": %zu, \"time_share\": %.4f, \"scanned\": %.2f, "
                   "\"scored\": %.2f, ",
                g ? "," : "", SLICES[g].name, gr->n, gr->time_share, gr->scanned, gr->scored);
        json_dist(f, "wall", &gr->d);
        fprintf(f, "}");
    }
    fprintf(f, "]}");
}

static void usage(FILE *to)
{
    fprintf(to, "usage: bench-placement [--hosts N] [--functions N] [--ops N] [--seed N] [--fill F]\n"
                "                       [--fill-mode placer|random] [--place-share P] [--quality-every N]\n"
                "                       [--no-quality] [--candidates N] [--scan-budget N] [--verify|--no-verify]\n"
                "                       [--no-naive] [--no-call-cpu] [--json FILE] [--check]\n");
}

int main(int argc, char **argv)
{
    size_t nhosts = 10000, nfns = 1000, ops = 100000, quality_every = 100;
    uint64_t seed = 1;
    double fill_target = 0.70, place_share = 0.60;
    int random_fill = 0, check = 0, verify = -1, run_naive = 1, call_cpu = 1;
    long candidates = -1, scan_budget = -1;
    const char *json = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--check")) {
            check = 1;
        } else if (!strcmp(a, "--no-quality")) {
            quality_every = 0;
        } else if (!strcmp(a, "--quality")) {
            quality_every = quality_every ? quality_every : 100;
        } else if (!strcmp(a, "--verify")) {
            verify = 1;
        } else if (!strcmp(a, "--no-verify")) {
            verify = 0;
        } else if (!strcmp(a, "--no-call-cpu")) {
            call_cpu = 0;
        } else if (!strcmp(a, "--no-naive")) {
            run_naive = 0;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (v == NULL) {
            usage(stderr);
            return 2;
        } else {
            i++;
            if (!strcmp(a, "--hosts"))
                nhosts = strtoul(v, NULL, 10);
            else if (!strcmp(a, "--functions"))
                nfns = strtoul(v, NULL, 10);
            else if (!strcmp(a, "--ops"))
                ops = strtoul(v, NULL, 10);
            else if (!strcmp(a, "--seed"))
                seed = strtoull(v, NULL, 10);
            else if (!strcmp(a, "--fill"))
                fill_target = strtod(v, NULL);
            else if (!strcmp(a, "--place-share"))
                place_share = strtod(v, NULL);
            else if (!strcmp(a, "--quality-every"))
                quality_every = strtoul(v, NULL, 10);
            else if (!strcmp(a, "--candidates"))
                candidates = strtol(v, NULL, 10);
            else if (!strcmp(a, "--scan-budget"))
                scan_budget = strtol(v, NULL, 10);
            else if (!strcmp(a, "--json"))
                json = v;
            else if (!strcmp(a, "--fill-mode") && (!strcmp(v, "placer") || !strcmp(v, "random")))
                random_fill = !strcmp(v, "random");
            else {
                usage(stderr);
                return 2;
            }
        }
    }
    if (nhosts == 0 || nhosts > UINT32_MAX / MAX_NODES || nfns == 0 || nfns > UINT32_MAX ||
        !(fill_target >= 0 && fill_target < 1) || !(place_share >= 0 && place_share <= 1)) {
        fprintf(stderr, "bench-placement: --hosts and --functions must be > 0, --fill in [0, 1), "
                        "--place-share in [0, 1]\n");
        return 2;
    }
    if (verify < 0)
        verify = nhosts <= 2000; /* pw_placer_check is O(zones x functions x hosts) */

    struct pw_placer_config cfg;
    pw_placer_config_default(&cfg);
    if (candidates > 0)
        cfg.candidates = (uint32_t)candidates;
    if (scan_budget > 0)
        cfg.scan_budget = (uint32_t)scan_budget;
    char err[256];
    if (pw_placer_config_validate(&cfg, err, sizeof(err)) != PW_OK) {
        fprintf(stderr, "bench-placement: %s\n", err);
        return 2;
    }

    /* Where we run and what a clock read costs. */
    cpu_set_t set;
    int ncpu_allowed = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : -1;
    uint64_t tstart = now_ns(), tend = tstart;
    for (int i = 0; i < 100000; i++)
        tend = now_ns();
    double timer_ns = (double)(tend - tstart) / 100000;
    tstart = now_ns();
    for (int i = 0; i < 100000; i++)
        (void)thread_cpu_ns();
    double cpu_timer_ns = (double)(now_ns() - tstart) / 100000;

    struct cluster c;
    double t0 = cpu_s();
    cluster_make(&c, nhosts, nfns, seed);
    printf("bench-placement: synthetic cluster, seed %" PRIu64 "\n", seed);
    printf("  %zu hosts (%zu eligible), %zu NUMA nodes, %zu zones in %zu clouds / 3 regions, %zu instance types\n",
           c.nhosts, c.neligible, c.nnodes, c.nzones, PW_ARRAY_LEN(CLOUDS), PW_ARRAY_LEN(ITYPES));
    printf("  capacity %.1f TiB, %" PRIu64 " vCPU slots; %zu functions (%zu constrained, %zu with snapshots)\n",
           (double)c.mem_total / (1024.0 * 1024.0), c.vcpu_total, c.nfns, c.nconstrained, c.nsnapfns);
    printf("  placer: weights cost %g fit %g spread %g snapshot %g load %g, candidates %u, scan_budget %u\n",
           cfg.w.cost, cfg.w.fit, cfg.w.spread, cfg.w.snapshot, cfg.w.load, cfg.candidates, cfg.scan_budget);
    printf("  CPUs allowed: %d%s; a clock read costs %.0f ns (monotonic), %.0f ns (thread CPU%s)\n", ncpu_allowed,
           ncpu_allowed == 1 ? " (pinned)" : " (not pinned: run under taskset -c N for stable numbers)", timer_ns,
           cpu_timer_ns, call_cpu ? ", read twice per decision" : ", not used");

    /* The starting state: filled once, then copied into a second placer call by call. */
    struct state a, b;
    state_init(&a, &c, &cfg);
    double fc = cpu_s();
    size_t fill_fails = fill(&a, fill_target, random_fill, seed ^ 0x5eedf111ull);
    double fill_cpu = cpu_s() - fc;
    state_init(&b, &c, &cfg);
    for (size_t i = 0; i < a.nlive; i++)
        commit(&b, a.live[i].fn, a.live[i].host, a.live[i].node);
    struct vm *fill_list = pw_xmalloc((a.nlive + 1) * sizeof(*fill_list));
    size_t nfill = a.nlive;
    if (nfill > 0)
        memcpy(fill_list, a.live, nfill * sizeof(*fill_list));
    int same_start = a.nlive == b.nlive;
    for (size_t h = 0; h < c.nhosts && same_start; h++) {
        for (uint32_t k = 0; k < c.hosts[h].nnodes; k++) {
            uint64_t ma, mb;
            int32_t va, vb;
            pw_placer_node_used(a.ph[h], k, &ma, &va);
            pw_placer_node_used(b.ph[h], k, &mb, &vb);
            same_start &= ma == mb && va == vb;
        }
    }
    if (!same_start) {
        fprintf(stderr, "bench-placement: the two starting states differ\n");
        return 1;
    }
    size_t start_vms = a.nlive;
    double start_mem = (double)a.mem_used / (double)c.mem_total;
    double start_vcpu = (double)a.vcpu_used / (double)c.vcpu_total;
    printf("  fill (%s): %zu VMs, memory %.1f%%, vCPU slots %.1f%% (%zu placements found no room; %.2f s CPU; "
           "setup %.2f s CPU)\n",
           random_fill ? "random feasible nodes" : "indexed placer", start_vms, 100 * start_mem, 100 * start_vcpu,
           fill_fails, fill_cpu, cpu_s() - t0);

    struct run_opts o = {
        .ops = ops,
        .place_share = place_share,
        .ops_seed = seed ^ 0x0b5eedull,
        .quality_every = quality_every,
        .verify = verify,
        .call_cpu = call_cpu,
    };
    int64_t *choices = pw_xmalloc((ops + 1) * sizeof(*choices));
    struct result ri = {.name = "indexed"}, rn = {.name = "naive", .check_ok = 1};
    struct result rq = {.name = "quality", .check_ok = 1};
    struct quality q = {0};
    run_phase(&a, TIMED_INDEXED, &o, choices, ops, &ri, NULL);
    state_fini(&a);
    if (quality_every > 0) {
        struct state qs;
        state_init(&qs, &c, &cfg);
        for (size_t i = 0; i < nfill; i++)
            commit(&qs, fill_list[i].fn, fill_list[i].host, fill_list[i].node);
        struct run_opts qo = o;
        qo.verify = 0;
        qo.call_cpu = 0;
        run_phase(&qs, QUALITY, &qo, choices, ri.decisions, &rq, &q);
        state_fini(&qs);
    }
    free(fill_list);
    if (run_naive)
        run_phase(&b, TIMED_NAIVE, &o, choices, ri.decisions, &rn, NULL);
    state_fini(&b);
    free(choices);

    printf("\n%zu operations (%.0f%% placements, %.0f%% removals of a random live VM), the same sequence for %s\n\n",
           ops, 100 * place_share, 100 * (1 - place_share), run_naive ? "both placers" : "the indexed placer");
    printf("placer   | decisions | decisions/s (CPU) |  p50 µs |  p99 µs | p99.9 µs |   max µs | CPU µs/decision | "
           "nodes scanned/decision\n");
    printf("---------|-----------|-------------------|---------|---------|----------|----------|-----------------|"
           "-----------------------\n");
    print_row(&ri);
    if (run_naive) {
        print_row(&rn);
        printf("\nratio naive/indexed: CPU µs/decision %.1fx, p50 %.1fx, p99 %.1fx, nodes scanned %.1fx\n",
               ratio(cpu_us(&rn), cpu_us(&ri)), ratio(rn.g[0].d.p50, ri.g[0].d.p50),
               ratio(rn.g[0].d.p99, ri.g[0].d.p99), ratio(rn.g[0].scanned, ri.g[0].scanned));
    }
    printf("\nPercentiles: wall clock per placement call (CLOCK_MONOTONIC). CPU µs/decision: CPU time of the whole\n"
           "phase (getrusage: placements, commits, removals, clock reads) / placements.\n");
    if (call_cpu) {
        printf("Thread CPU time per call (CLOCK_THREAD_CPUTIME_ID, blind to preemption and stolen time; includes\n"
               "about one clock read):\n");
        const struct result *both[] = {&ri, &rn};
        for (size_t i = 0; i < (run_naive ? 2u : 1u); i++)
            printf("%-8s CPU per call: mean %.2f, p50 %.2f, p99 %.2f, p99.9 %.2f, max %.1f µs\n", both[i]->name,
                   both[i]->call_cpu.mean, both[i]->call_cpu.p50, both[i]->call_cpu.p99, both[i]->call_cpu.p999,
                   both[i]->call_cpu.max);
    }
    printf("\n");
    print_summary(&ri, verify);
    if (run_naive)
        print_summary(&rn, verify);
    if (run_naive && rn.first_diff >= 0)
        printf("states: the naive run chose the same host and node as the indexed run for %zu of %zu placements "
               "(%.1f%%); the first difference is at placement %ld, and the two states diverge from there\n",
               rn.same_as_indexed, rn.decisions,
               rn.decisions ? 100.0 * (double)rn.same_as_indexed / (double)rn.decisions : 0, rn.first_diff);
    else if (run_naive)
        printf("states: the naive run chose the same host and node as the indexed run for every placement\n");
    size_t qn = q.both_room;
    if (quality_every > 0) {
        printf("quality: 1 in %zu indexed decisions against the naive optimum on the same state (%zu samples, %zu with "
               "room, in a separate untimed replay): same-score optimum %.1f%%, same node %.1f%%; score gap mean %.4f, max %.4f "
               "(relative mean %.2f%%, max %.2f%%); optimum on a snapshot host but the indexed choice not: %zu\n",
               quality_every, q.samples, qn, qn ? 100.0 * (double)q.same_score / (double)qn : 0,
               qn ? 100.0 * (double)q.same_node / (double)qn : 0, qn ? q.gap_sum / (double)qn : 0, q.gap_max,
               qn ? 100 * q.rel_gap_sum / (double)qn : 0, 100 * q.rel_gap_max, q.snapshot_missed);
        if (rq.same_as_indexed != rq.decisions)
            printf("NOT REPRODUCIBLE: the untimed replay of the indexed run chose differently at placement %ld\n",
                   rq.first_diff);
    }
    int bug = q.feasibility_mismatch || q.below_optimum || q.score_mismatch || !ri.check_ok || !rn.check_ok ||
              rq.same_as_indexed != rq.decisions;
    if (bug)
        printf("PLACER DISAGREEMENT: room found by one placer only %zu, indexed score below the optimum %zu, "
               "result score != pw_placer_score %zu, index check %s, replay %s\n",
               q.feasibility_mismatch, q.below_optimum, q.score_mismatch, ri.check_ok && rn.check_ok ? "ok" : "failed",
               rq.same_as_indexed == rq.decisions ? "identical" : "differs");
    print_slices(&ri);

    int p99_ok = ri.g[0].d.p99 < TARGET_P99_US, rate_ok = per_s(&ri) >= TARGET_DECISIONS_PER_S;
    printf("\n%s: indexed p99 %.2f µs per decision (target < %.0f µs, wall clock)\n", p99_ok ? "PASS" : "FAIL",
           ri.g[0].d.p99, TARGET_P99_US);
    printf("%s: indexed %.0f decisions/s on one core (target >= %.0f, CPU time)\n", rate_ok ? "PASS" : "FAIL",
           per_s(&ri), TARGET_DECISIONS_PER_S);
    if (call_cpu)
        printf("(for reference, not a target: indexed p99 of thread CPU time per call %.2f µs)\n", ri.call_cpu.p99);

    if (json != NULL) {
        FILE *f = fopen(json, "w");
        if (f == NULL) {
            perror(json);
            return 1;
        }
        fprintf(f, "{\n  \"config\": {\"hosts\": %zu, \"functions\": %zu, \"ops\": %zu, \"seed\": %" PRIu64
                   ", \"fill\": %.4f, \"fill_mode\": \"%s\", \"place_share\": %.4f, \"quality_every\": %zu, "
                   "\"candidates\": %u, \"scan_budget\": %u, \"cpus_allowed\": %d, \"clock_read_ns\": %.1f, "
                   "\"thread_cpu_clock_read_ns\": %.1f, \"call_cpu\": %s},\n",
                nhosts, nfns, ops, seed, fill_target, random_fill ? "random" : "placer", place_share, quality_every,
                cfg.candidates, cfg.scan_budget, ncpu_allowed, timer_ns, cpu_timer_ns, call_cpu ? "true" : "false");
        fprintf(f, "  \"cluster\": {\"nodes\": %zu, \"eligible_hosts\": %zu, \"zones\": %zu, \"mem_total_mb\": %" PRIu64
                   ", \"vcpu_slots\": %" PRIu64 ", \"constrained_functions\": %zu, \"functions_with_snapshots\": %zu, "
                   "\"start_vms\": %zu, \"start_mem_frac\": %.4f, \"start_vcpu_frac\": %.4f},\n",
                c.nnodes, c.neligible, c.nzones, c.mem_total, c.vcpu_total, c.nconstrained, c.nsnapfns, start_vms,
                start_mem, start_vcpu);
        fprintf(f, "  \"placers\": [\n");
        json_result(f, &ri);
        if (run_naive) {
            fprintf(f, ",\n");
            json_result(f, &rn);
        }
        fprintf(f, "\n  ],\n");
        if (run_naive) {
            fprintf(f, "  \"ratio_naive_indexed\": {\"cpu_us_per_decision\": %.3f, \"p50\": %.3f, \"p99\": %.3f, "
                       "\"nodes_scanned\": %.3f},\n",
                    ratio(cpu_us(&rn), cpu_us(&ri)), ratio(rn.g[0].d.p50, ri.g[0].d.p50),
                    ratio(rn.g[0].d.p99, ri.g[0].d.p99), ratio(rn.g[0].scanned, ri.g[0].scanned));
            fprintf(f, "  \"divergence\": {\"same_as_indexed\": %zu, \"first_difference\": %ld},\n",
                    rn.same_as_indexed, rn.first_diff);
        }
        fprintf(f, "  \"quality\": {\"samples\": %zu, \"both_room\": %zu, \"same_score\": %zu, \"same_node\": %zu, \"gap_mean\": %.6f, "
                   "\"gap_max\": %.6f, \"rel_gap_mean\": %.6f, \"rel_gap_max\": %.6f, \"feasibility_mismatch\": %zu, "
                   "\"below_optimum\": %zu, \"score_mismatch\": %zu, \"snapshot_missed\": %zu},\n",
                q.samples, q.both_room, q.same_score, q.same_node, qn ? q.gap_sum / (double)qn : 0, q.gap_max,
                qn ? q.rel_gap_sum / (double)qn : 0, q.rel_gap_max, q.feasibility_mismatch, q.below_optimum,
                q.score_mismatch, q.snapshot_missed);
        fprintf(f, "  \"targets\": {\"p99_us\": %.1f, \"decisions_per_s\": %.1f, \"p99_pass\": %s, \"rate_pass\": %s},\n",
                TARGET_P99_US, TARGET_DECISIONS_PER_S, p99_ok ? "true" : "false", rate_ok ? "true" : "false");
        fprintf(f, "  \"placer_disagreement\": %s\n}\n", bug ? "true" : "false");
        if (fclose(f) != 0) {
            perror(json);
            return 1;
        }
    }
    cluster_free(&c);
    if (bug)
        return 1; /* a wrong answer is never a benchmark result */
    return check && !(p99_ok && rate_ok) ? 1 : 0;
}
