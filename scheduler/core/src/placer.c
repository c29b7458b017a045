/* placer.c — the placement index and scoring (placer.h has the rules). */
#include "pw/placer.h"

#include "pw/error.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Free-memory buckets: 16 exact ones below 16 MiB, then 16 per power of two up to 2^42 MiB. */
#define SUB_BITS 4
#define SUB (1u << SUB_BITS)
#define NBUCKETS (SUB + (42 - SUB_BITS) * SUB)
#define NWORDS ((NBUCKETS + 63) / 64)
#define SNAP_CANDIDATES 32 /* snapshot holders looked at per decision */
#define REAP_INELIGIBLE 1000.0
#define REAP_OVER_LIMIT 100.0

struct pnode {
    struct pw_phost *h;
    uint64_t mem_total, mem_used;
    int32_t vcpu_total, vcpu_used;
    struct pnode *bnext, *bprev; /* bucket list of its class */
    int bucket;                  /* -1: not in the index */
};

struct zone {
    struct pw_hnode hnode; /* p->zones by names */
    char cloud[PW_NAME_MAX], region[PW_NAME_MAX], name[PW_NAME_MAX];
    uint32_t refs; /* hosts in it */
};

struct pclass {
    struct pw_hnode hnode; /* p->classes by (zone, cost) */
    struct zone *z;
    double cost;
    uint32_t refs; /* hosts in it */
    struct pnode *bucket[NBUCKETS];
    uint64_t bits[NWORDS];
};

/* A count of one function's VMs on a host (link on the host) or in a zone. */
struct cnt {
    struct pw_hnode hnode;
    struct pw_list link; /* host's entries (host counts only) */
    const void *where;
    const void *fn;
    uint32_t n;
};

/* One function's VM counts per host, in one flat open-addressing table (linear probing,
 * backward-shift deletion): a decision finds it once and then looks up each candidate host in
 * a few contiguous cache lines, instead of walking a global chained table per node. */
struct fnslot {
    const struct pw_phost *h; /* NULL: empty */
    uint32_t n;
};

struct fntab {
    struct pw_hnode hnode; /* p->fntabs by fn */
    const void *fn;
    struct fnslot *slots;
    uint32_t mask, used; /* capacity mask + 1 is a power of two */
};

struct snapset {
    struct pw_hnode hnode; /* p->snaps by fn hash */
    uint64_t fn_hash;
    struct pw_phost **hosts;
    size_t n, cap;
};

struct pw_phost {
    struct pw_list link; /* p->hosts */
    void *owner;
    char cloud[PW_NAME_MAX], region[PW_NAME_MAX], zone[PW_NAME_MAX], itype[PW_NAME_MAX];
    double cost;
    struct pclass *cls;
    struct pnode *nodes;
    size_t nnodes;
    uint32_t ncpus;
    int eligible;
    double load;
    uint64_t *snaps; /* sorted */
    size_t nsnaps;
    struct pw_list fns; /* struct cnt.link */
};

struct pw_placer {
    struct pw_placer_config cfg;
    pw_placer_host_ok_fn host_ok;
    struct pw_list hosts;
    struct pw_htab zones, classes, hostfn, zonefn, snaps, fntabs;
    struct pclass **sorted; /* classes by cost ascending */
    size_t nsorted, capsorted;
    double max_cost;
    struct pw_placer_stats stats;
    uint64_t gen; /* bumped by every change that can turn "no room" into room (placer.h) */
};

/* ---- config ---- */

void pw_placer_config_default(struct pw_placer_config *c)
{
    memset(c, 0, sizeof(*c));
    c->w.cost = 4;
    c->w.fit = 1;
    c->w.spread = 1;
    c->w.snapshot = 0.5;
    c->w.load = 0.5;
    c->candidates = 8;
    c->scan_budget = 64;
}

int pw_placer_config_validate(const struct pw_placer_config *c, char *errbuf, size_t errlen)
{
    const double w[] = {c->w.cost, c->w.fit, c->w.spread, c->w.snapshot, c->w.load};
    for (size_t i = 0; i < PW_ARRAY_LEN(w); i++) {
        if (!isfinite(w[i]) || w[i] < 0 || w[i] > 1e6) {
            pw_errf(errbuf, errlen, "placement weights must be numbers in [0, 1e6]");
            return PW_ERR_INVAL;
        }
    }
    if (c->candidates == 0 || c->candidates > 4096 || c->scan_budget < c->candidates || c->scan_budget > 1u << 20) {
        pw_errf(errbuf, errlen, "placement candidates must be 1..4096 and scan_budget candidates..1048576");
        return PW_ERR_INVAL;
    }
    return PW_OK;
}

static int sel_valid(const char (*v)[PW_NAME_MAX], size_t n, const char *what, char *errbuf, size_t errlen)
{
    if (n > PW_PLACE_MAX_SEL) {
        pw_errf(errbuf, errlen, "placement %s: at most %d entries", what, PW_PLACE_MAX_SEL);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (!pw_name_valid(v[i])) {
            pw_errf(errbuf, errlen, "placement %s: \"%.63s\" is not a valid name", what, v[i]);
            return 0;
        }
    }
    return 1;
}

int pw_placement_spec_validate(const struct pw_placement_spec *s, char *errbuf, size_t errlen)
{
    if (!sel_valid(s->clouds, s->nclouds, "clouds", errbuf, errlen) ||
        !sel_valid(s->regions, s->nregions, "regions", errbuf, errlen) ||
        !sel_valid(s->zones, s->nzones, "zones", errbuf, errlen))
        return PW_ERR_INVAL;
    if (!(s->max_host_share >= 0 && s->max_host_share <= 1) || !(s->max_zone_share >= 0 && s->max_zone_share <= 1)) {
        pw_errf(errbuf, errlen, "placement max_host_share and max_zone_share must be in [0, 1]");
        return PW_ERR_INVAL;
    }
    return PW_OK;
}

/* ---- small helpers ---- */

static unsigned bucket_of(uint64_t mb)
{
    if (mb < SUB)
        return (unsigned)mb;
    unsigned e = 63u - (unsigned)__builtin_clzll(mb); /* >= SUB_BITS */
    unsigned b = SUB + (e - SUB_BITS) * SUB + (unsigned)((mb >> (e - SUB_BITS)) & (SUB - 1));
    return b < NBUCKETS ? b : NBUCKETS - 1;
}

/* next_bucket returns the first non-empty bucket >= b, or -1. */
static int next_bucket(const struct pclass *k, unsigned b)
{
    if (b >= NBUCKETS)
        return -1;
    unsigned w = b / 64;
    uint64_t bits = k->bits[w] & (~0ull << (b % 64));
    for (;;) {
        if (bits != 0)
            return (int)(w * 64 + (unsigned)__builtin_ctzll(bits));
        if (++w >= NWORDS)
            return -1;
        bits = k->bits[w];
    }
}

static uint64_t ptr_hash(const void *a, const void *b)
{
    return pw_hash_u64((uint64_t)(uintptr_t)a * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)b);
}

struct cnt_key {
    const void *where, *fn;
};

static int cnt_eq(const struct pw_hnode *n, const void *key)
{
    const struct cnt *c = pw_container_of(n, struct cnt, hnode);
    const struct cnt_key *k = key;
    return c->where == k->where && c->fn == k->fn;
}

static struct cnt *cnt_find(const struct pw_htab *t, const void *where, const void *fn)
{
    struct cnt_key k = {where, fn};
    struct pw_hnode *n = pw_htab_find(t, ptr_hash(where, fn), &k, cnt_eq);
    return n ? pw_container_of(n, struct cnt, hnode) : NULL;
}

/* cnt_add changes a count; entries are created at the first VM and freed at the last. */
static void cnt_add(struct pw_htab *t, const void *where, const void *fn, int64_t delta, struct pw_list *host_list)
{
    struct cnt *c = cnt_find(t, where, fn);
    if (c == NULL) {
        if (delta <= 0)
            return;
        c = pw_xcalloc(1, sizeof(*c));
        c->where = where;
        c->fn = fn;
        pw_htab_insert(t, &c->hnode, ptr_hash(where, fn));
        if (host_list != NULL)
            pw_list_push_tail(host_list, &c->link);
    }
    int64_t n = (int64_t)c->n + delta;
    c->n = n > 0 ? (uint32_t)n : 0;
    if (c->n == 0) {
        pw_htab_remove(t, &c->hnode);
        if (pw_list_linked(&c->link))
            pw_list_remove(&c->link);
        free(c);
    }
}

/* ---- per-function host counts ---- */

static uint32_t slot_of(const struct fntab *ft, const struct pw_phost *h)
{
    return (uint32_t)(pw_hash_u64((uint64_t)(uintptr_t)h) & ft->mask);
}

static int fntab_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct fntab, hnode)->fn == key;
}

static struct fntab *fntab_find(const struct pw_placer *p, const void *fn)
{
    struct pw_hnode *n = pw_htab_find(&p->fntabs, pw_hash_u64((uint64_t)(uintptr_t)fn), fn, fntab_eq);
    return n ? pw_container_of(n, struct fntab, hnode) : NULL;
}

static uint32_t fntab_get(const struct fntab *ft, const struct pw_phost *h)
{
    if (ft == NULL)
        return 0;
    for (uint32_t i = slot_of(ft, h);; i = (i + 1) & ft->mask) {
        if (ft->slots[i].h == h)
            return ft->slots[i].n;
        if (ft->slots[i].h == NULL)
            return 0;
    }
}

static void fntab_put(struct fntab *ft, const struct pw_phost *h, uint32_t n)
{
    uint32_t i = slot_of(ft, h);
    while (ft->slots[i].h != NULL && ft->slots[i].h != h)
        i = (i + 1) & ft->mask;
    if (ft->slots[i].h == NULL)
        ft->used++;
    ft->slots[i].h = h;
    ft->slots[i].n = n;
}

static void fntab_grow(struct fntab *ft, uint32_t cap)
{
    struct fnslot *old = ft->slots;
    uint32_t oldcap = old ? ft->mask + 1 : 0;
    ft->slots = pw_xcalloc(cap, sizeof(*ft->slots));
    ft->mask = cap - 1;
    ft->used = 0;
    for (uint32_t i = 0; i < oldcap; i++)
        if (old[i].h != NULL)
            fntab_put(ft, old[i].h, old[i].n);
    free(old);
}

/* fntab_add changes fn's count on h; the table goes when its last host does. */
static void fntab_add(struct pw_placer *p, const void *fn, const struct pw_phost *h, int64_t delta)
{
    struct fntab *ft = fntab_find(p, fn);
    if (ft == NULL) {
        if (delta <= 0)
            return;
        ft = pw_xcalloc(1, sizeof(*ft));
        ft->fn = fn;
        fntab_grow(ft, 8);
        pw_htab_insert(&p->fntabs, &ft->hnode, pw_hash_u64((uint64_t)(uintptr_t)fn));
    }
    uint32_t i = slot_of(ft, h);
    while (ft->slots[i].h != NULL && ft->slots[i].h != h)
        i = (i + 1) & ft->mask;
    int64_t n = (ft->slots[i].h == h ? (int64_t)ft->slots[i].n : 0) + delta;
    if (n > 0) {
        if (ft->slots[i].h == NULL) {
            if ((ft->used + 1) * 4 > (ft->mask + 1) * 3) {
                fntab_grow(ft, (ft->mask + 1) * 2);
                fntab_put(ft, h, (uint32_t)n);
                return;
            }
            ft->used++;
            ft->slots[i].h = h;
        }
        ft->slots[i].n = (uint32_t)n;
        return;
    }
    if (ft->slots[i].h != h)
        return;
    /* Remove slot i, shifting back later entries of its probe run. */
    ft->slots[i].h = NULL;
    ft->used--;
    for (uint32_t j = (i + 1) & ft->mask; ft->slots[j].h != NULL; j = (j + 1) & ft->mask) {
        uint32_t home = slot_of(ft, ft->slots[j].h);
        /* j's entry may move to i when i lies cyclically in [home, j). */
        if (((j - home) & ft->mask) >= ((j - i) & ft->mask)) {
            ft->slots[i] = ft->slots[j];
            ft->slots[j].h = NULL;
            i = j;
        }
    }
    if (ft->used == 0) {
        pw_htab_remove(&p->fntabs, &ft->hnode);
        free(ft->slots);
        free(ft);
    }
}

/* ---- zones and classes ---- */

struct zone_key {
    const char *cloud, *region, *name;
};

static uint64_t zone_hash(const char *cloud, const char *region, const char *name)
{
    return pw_hash_u64(pw_hash_str(cloud) * 31 + pw_hash_str(region) * 7 + pw_hash_str(name));
}

static int zone_eq(const struct pw_hnode *n, const void *key)
{
    const struct zone *z = pw_container_of(n, struct zone, hnode);
    const struct zone_key *k = key;
    return strcmp(z->cloud, k->cloud) == 0 && strcmp(z->region, k->region) == 0 && strcmp(z->name, k->name) == 0;
}

static struct zone *zone_ref(struct pw_placer *p, const char *cloud, const char *region, const char *name)
{
    struct zone_key k = {cloud, region, name};
    uint64_t hash = zone_hash(cloud, region, name);
    struct pw_hnode *n = pw_htab_find(&p->zones, hash, &k, zone_eq);
    struct zone *z = n ? pw_container_of(n, struct zone, hnode) : NULL;
    if (z == NULL) {
        z = pw_xcalloc(1, sizeof(*z));
        pw_strlcpy(z->cloud, cloud, sizeof(z->cloud));
        pw_strlcpy(z->region, region, sizeof(z->region));
        pw_strlcpy(z->name, name, sizeof(z->name));
        pw_htab_insert(&p->zones, &z->hnode, hash);
    }
    z->refs++;
    return z;
}

static void zone_unref(struct pw_placer *p, struct zone *z)
{
    if (--z->refs == 0) {
        pw_htab_remove(&p->zones, &z->hnode);
        free(z);
    }
}

struct class_key {
    const struct zone *z;
    double cost;
};

static uint64_t class_hash(const struct zone *z, double cost)
{
    uint64_t bits;
    memcpy(&bits, &cost, sizeof(bits));
    return ptr_hash(z, (const void *)(uintptr_t)bits);
}

static int class_eq(const struct pw_hnode *n, const void *key)
{
    const struct pclass *c = pw_container_of(n, struct pclass, hnode);
    const struct class_key *k = key;
    return c->z == k->z && c->cost == k->cost;
}

static int class_cmp(const void *a, const void *b)
{
    const struct pclass *x = *(struct pclass *const *)a, *y = *(struct pclass *const *)b;
    return (x->cost > y->cost) - (x->cost < y->cost);
}

static void classes_changed(struct pw_placer *p)
{
    qsort(p->sorted, p->nsorted, sizeof(*p->sorted), class_cmp);
    p->max_cost = p->nsorted > 0 ? p->sorted[p->nsorted - 1]->cost : 0;
}

static struct pclass *class_ref(struct pw_placer *p, struct zone *z, double cost)
{
    struct class_key k = {z, cost};
    uint64_t hash = class_hash(z, cost);
    struct pw_hnode *n = pw_htab_find(&p->classes, hash, &k, class_eq);
    struct pclass *c = n ? pw_container_of(n, struct pclass, hnode) : NULL;
    if (c == NULL) {
        c = pw_xcalloc(1, sizeof(*c));
        c->z = z;
        z->refs++;
        c->cost = cost;
        pw_htab_insert(&p->classes, &c->hnode, hash);
        if (p->nsorted == p->capsorted) {
            p->capsorted = p->capsorted ? p->capsorted * 2 : 16;
            p->sorted = pw_xrealloc(p->sorted, p->capsorted * sizeof(*p->sorted));
        }
        p->sorted[p->nsorted++] = c;
        classes_changed(p);
    }
    c->refs++;
    return c;
}

static void class_unref(struct pw_placer *p, struct pclass *c)
{
    if (--c->refs > 0)
        return;
    for (size_t i = 0; i < p->nsorted; i++) {
        if (p->sorted[i] == c) {
            p->sorted[i] = p->sorted[--p->nsorted];
            break;
        }
    }
    classes_changed(p);
    pw_htab_remove(&p->classes, &c->hnode);
    zone_unref(p, c->z);
    free(c);
}

/* ---- the index ---- */

static void node_unindex(struct pnode *n)
{
    if (n->bucket < 0)
        return;
    struct pclass *c = n->h->cls;
    if (n->bprev != NULL)
        n->bprev->bnext = n->bnext;
    else
        c->bucket[n->bucket] = n->bnext;
    if (n->bnext != NULL)
        n->bnext->bprev = n->bprev;
    if (c->bucket[n->bucket] == NULL)
        c->bits[n->bucket / 64] &= ~(1ull << (n->bucket % 64));
    n->bnext = n->bprev = NULL;
    n->bucket = -1;
}

/* node_reindex files n under its free memory, or leaves it out when it can take nothing. */
static void node_reindex(struct pnode *n)
{
    node_unindex(n);
    struct pw_phost *h = n->h;
    if (!h->eligible || h->cls == NULL || n->mem_used >= n->mem_total || n->vcpu_used >= n->vcpu_total)
        return;
    struct pclass *c = h->cls;
    unsigned b = bucket_of(n->mem_total - n->mem_used);
    n->bucket = (int)b;
    n->bnext = c->bucket[b];
    n->bprev = NULL;
    if (n->bnext != NULL)
        n->bnext->bprev = n;
    c->bucket[b] = n;
    c->bits[b / 64] |= 1ull << (b % 64);
}

static void host_unindex(struct pw_phost *h)
{
    for (size_t i = 0; i < h->nnodes; i++)
        node_unindex(&h->nodes[i]);
}

static void host_reindex(struct pw_phost *h)
{
    for (size_t i = 0; i < h->nnodes; i++)
        node_reindex(&h->nodes[i]);
}

/* ---- lifecycle ---- */

struct pw_placer *pw_placer_new(const struct pw_placer_config *cfg, pw_placer_host_ok_fn host_ok)
{
    struct pw_placer *p = pw_xcalloc(1, sizeof(*p));
    if (cfg != NULL)
        p->cfg = *cfg;
    else
        pw_placer_config_default(&p->cfg);
    if (p->cfg.candidates == 0)
        p->cfg.candidates = 1;
    if (p->cfg.scan_budget < p->cfg.candidates)
        p->cfg.scan_budget = p->cfg.candidates;
    p->host_ok = host_ok;
    p->gen = 1;
    pw_list_init(&p->hosts);
    pw_htab_init(&p->zones);
    pw_htab_init(&p->classes);
    pw_htab_init(&p->hostfn);
    pw_htab_init(&p->zonefn);
    pw_htab_init(&p->snaps);
    pw_htab_init(&p->fntabs);
    return p;
}

void pw_placer_free(struct pw_placer *p)
{
    if (p == NULL)
        return;
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &p->hosts)
    {
        pw_placer_host_remove(p, pw_container_of(it, struct pw_phost, link));
    }
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(&p->zonefn, &b, &n)) != NULL)
        free(pw_container_of(e, struct cnt, hnode));
    pw_htab_fini(&p->zones);
    pw_htab_fini(&p->classes);
    pw_htab_fini(&p->hostfn);
    pw_htab_fini(&p->zonefn);
    pw_htab_fini(&p->snaps);
    b = 0;
    n = NULL;
    while ((e = pw_htab_next(&p->fntabs, &b, &n)) != NULL) {
        struct fntab *ft = pw_container_of(e, struct fntab, hnode);
        free(ft->slots);
        free(ft);
    }
    pw_htab_fini(&p->fntabs);
    free(p->sorted);
    free(p);
}

/* ---- hosts ---- */

static void host_place_in(struct pw_placer *p, struct pw_phost *h)
{
    struct zone *z = zone_ref(p, h->cloud, h->region, h->zone);
    h->cls = class_ref(p, z, h->cost);
    zone_unref(p, z); /* the class holds it */
}

struct pw_phost *pw_placer_host_add(struct pw_placer *p, void *owner)
{
    struct pw_phost *h = pw_xcalloc(1, sizeof(*h));
    h->owner = owner;
    pw_list_init(&h->fns);
    pw_list_push_tail(&p->hosts, &h->link);
    host_place_in(p, h);
    p->gen++;
    return h;
}

static void snap_unlink(struct pw_placer *p, struct pw_phost *h, uint64_t fh);

void pw_placer_host_remove(struct pw_placer *p, struct pw_phost *h)
{
    p->gen++;
    host_unindex(h);
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &h->fns)
    {
        struct cnt *c = pw_container_of(it, struct cnt, link);
        if (h->eligible)
            cnt_add(&p->zonefn, h->cls->z, c->fn, -(int64_t)c->n, NULL);
        fntab_add(p, c->fn, h, -(int64_t)c->n);
        cnt_add(&p->hostfn, h, c->fn, -(int64_t)c->n, NULL);
    }
    for (size_t i = 0; i < h->nsnaps; i++)
        snap_unlink(p, h, h->snaps[i]);
    class_unref(p, h->cls);
    pw_list_remove(&h->link);
    free(h->snaps);
    free(h->nodes);
    free(h);
}

void *pw_placer_host_owner(const struct pw_phost *h) { return h->owner; }

static const char *label(const struct pw_label *labels, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(labels[i].key, key) == 0)
            return labels[i].value;
    return "";
}

void pw_placer_host_set_labels(struct pw_placer *p, struct pw_phost *h, const struct pw_label *labels, size_t n)
{
    char cloud[PW_NAME_MAX], region[PW_NAME_MAX], zone[PW_NAME_MAX];
    pw_strlcpy(cloud, label(labels, n, PW_LABEL_CLOUD), sizeof(cloud));
    pw_strlcpy(region, label(labels, n, PW_LABEL_REGION), sizeof(region));
    pw_strlcpy(zone, label(labels, n, PW_LABEL_ZONE), sizeof(zone));
    pw_strlcpy(h->itype, label(labels, n, PW_LABEL_INSTANCE_TYPE), sizeof(h->itype));
    const char *cs = label(labels, n, PW_LABEL_COST);
    char *end;
    double cost = cs[0] ? strtod(cs, &end) : 0;
    if (cs[0] == '\0' || *end != '\0' || !isfinite(cost) || cost < 0 || cost > 1e9)
        cost = 0;
    if (strcmp(cloud, h->cloud) == 0 && strcmp(region, h->region) == 0 && strcmp(zone, h->zone) == 0 &&
        cost == h->cost)
        return;
    p->gen++;
    host_unindex(h);
    struct pclass *old = h->cls;
    pw_strlcpy(h->cloud, cloud, sizeof(h->cloud));
    pw_strlcpy(h->region, region, sizeof(h->region));
    pw_strlcpy(h->zone, zone, sizeof(h->zone));
    h->cost = cost;
    host_place_in(p, h);
    if (h->cls->z != old->z && h->eligible) {
        struct pw_list *it;
        pw_list_foreach(it, &h->fns)
        {
            struct cnt *c = pw_container_of(it, struct cnt, link);
            cnt_add(&p->zonefn, old->z, c->fn, -(int64_t)c->n, NULL);
            cnt_add(&p->zonefn, h->cls->z, c->fn, c->n, NULL);
        }
    }
    class_unref(p, old);
    host_reindex(h);
}

void pw_placer_host_set_topology(struct pw_placer *p, struct pw_phost *h, const struct pw_numa_node *numa, size_t n)
{
    p->gen++;
    host_unindex(h);
    free(h->nodes);
    h->nodes = n ? pw_xcalloc(n, sizeof(*h->nodes)) : NULL;
    h->nnodes = n;
    h->ncpus = 0;
    for (size_t i = 0; i < n; i++) {
        struct pnode *nd = &h->nodes[i];
        nd->h = h;
        nd->bucket = -1;
        nd->mem_total = numa[i].mem_total_mb;
        nd->vcpu_total = numa[i].vcpu_total > 0 ? numa[i].vcpu_total : 0;
        h->ncpus += (uint32_t)(numa[i].ncpus > 0 ? numa[i].ncpus : 0);
    }
    host_reindex(h);
}

void pw_placer_host_set_eligible(struct pw_placer *p, struct pw_phost *h, int eligible)
{
    eligible = eligible != 0;
    if (h->eligible == eligible)
        return;
    p->gen++;
    h->eligible = eligible;
    /* Zone counts cover hosts that take VMs: what a drained host holds is on its way out. */
    struct pw_list *it;
    pw_list_foreach(it, &h->fns)
    {
        struct cnt *c = pw_container_of(it, struct cnt, link);
        cnt_add(&p->zonefn, h->cls->z, c->fn, eligible ? (int64_t)c->n : -(int64_t)c->n, NULL);
    }
    host_reindex(h);
}

void pw_placer_host_set_load(struct pw_placer *p, struct pw_phost *h, double load)
{
    (void)p;
    h->load = isfinite(load) && load > 0 ? load : 0;
}

struct snap_key {
    uint64_t fh;
};

static int snap_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct snapset, hnode)->fn_hash == ((const struct snap_key *)key)->fh;
}

static struct snapset *snap_find(const struct pw_placer *p, uint64_t fh)
{
    struct snap_key k = {fh};
    struct pw_hnode *n = pw_htab_find(&p->snaps, pw_hash_u64(fh), &k, snap_eq);
    return n ? pw_container_of(n, struct snapset, hnode) : NULL;
}

static void snap_unlink(struct pw_placer *p, struct pw_phost *h, uint64_t fh)
{
    struct snapset *s = snap_find(p, fh);
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        if (s->hosts[i] == h) {
            s->hosts[i] = s->hosts[--s->n];
            break;
        }
    }
    if (s->n == 0) {
        pw_htab_remove(&p->snaps, &s->hnode);
        free(s->hosts);
        free(s);
    }
}

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void pw_placer_host_set_snapshots(struct pw_placer *p, struct pw_phost *h, const uint64_t *fn_hashes, size_t n)
{
    for (size_t i = 0; i < h->nsnaps; i++)
        snap_unlink(p, h, h->snaps[i]);
    free(h->snaps);
    h->snaps = NULL;
    h->nsnaps = 0;
    if (n == 0)
        return;
    h->snaps = pw_xmalloc(n * sizeof(*h->snaps));
    memcpy(h->snaps, fn_hashes, n * sizeof(*h->snaps));
    qsort(h->snaps, n, sizeof(*h->snaps), u64_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || h->snaps[k - 1] != h->snaps[i])
            h->snaps[k++] = h->snaps[i];
    h->nsnaps = k;
    for (size_t i = 0; i < k; i++) {
        struct snapset *s = snap_find(p, h->snaps[i]);
        if (s == NULL) {
            s = pw_xcalloc(1, sizeof(*s));
            s->fn_hash = h->snaps[i];
            pw_htab_insert(&p->snaps, &s->hnode, pw_hash_u64(s->fn_hash));
        }
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 4;
            s->hosts = pw_xrealloc(s->hosts, s->cap * sizeof(*s->hosts));
        }
        s->hosts[s->n++] = h;
    }
}

int pw_placer_host_has_snapshot(const struct pw_phost *h, uint64_t fn_hash)
{
    return h->nsnaps > 0 && bsearch(&fn_hash, h->snaps, h->nsnaps, sizeof(*h->snaps), u64_cmp) != NULL;
}

void pw_placer_host_info(const struct pw_phost *h, struct pw_phost_info *out)
{
    out->cloud = h->cloud;
    out->region = h->region;
    out->zone = h->zone;
    out->instance_type = h->itype;
    out->cost_per_gib_hour = h->cost;
    out->eligible = h->eligible;
    out->nsnapshots = h->nsnaps;
}

/* ---- usage ---- */

void pw_placer_node_use(struct pw_placer *p, struct pw_phost *h, size_t node, uint32_t memory_mb, uint32_t vcpus,
                        int sign)
{
    if (node >= h->nnodes)
        return;
    struct pnode *n = &h->nodes[node];
    if (sign > 0) {
        n->mem_used += memory_mb;
        n->vcpu_used += (int32_t)vcpus;
    } else {
        p->gen++;
        n->mem_used = n->mem_used > memory_mb ? n->mem_used - memory_mb : 0;
        n->vcpu_used = n->vcpu_used > (int32_t)vcpus ? n->vcpu_used - (int32_t)vcpus : 0;
    }
    node_reindex(n);
}

int pw_placer_node_used(const struct pw_phost *h, size_t node, uint64_t *mem_mb, int32_t *vcpus)
{
    if (node >= h->nnodes)
        return 0;
    *mem_mb = h->nodes[node].mem_used;
    *vcpus = h->nodes[node].vcpu_used;
    return 1;
}

void pw_placer_fn_count(struct pw_placer *p, struct pw_phost *h, const void *fn, int delta)
{
    if (delta < 0)
        p->gen++; /* spread limits loosen */
    cnt_add(&p->hostfn, h, fn, delta, &h->fns);
    fntab_add(p, fn, h, delta);
    if (h->eligible)
        cnt_add(&p->zonefn, h->cls->z, fn, delta, NULL);
}

uint32_t pw_placer_host_fn(const struct pw_placer *p, const struct pw_phost *h, const void *fn)
{
    return fntab_get(fntab_find(p, fn), h);
}

uint32_t pw_placer_zone_fn(const struct pw_placer *p, const struct pw_phost *h, const void *fn)
{
    const struct cnt *c = cnt_find(&p->zonefn, h->cls->z, fn);
    return c ? c->n : 0;
}

/* ---- decisions ---- */

static int sel_has(const char (*v)[PW_NAME_MAX], size_t n, const char *s)
{
    if (n == 0)
        return 1;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return 1;
    return 0;
}

static uint32_t share_limit(double share, uint32_t total)
{
    if (!(share > 0) || share >= 1)
        return UINT32_MAX;
    double lim = ceil(share * (double)(total + 1) - 1e-9);
    return lim < 1 ? 1 : (uint32_t)lim;
}

/* A decision in progress: what is the same for every candidate. */
struct dec {
    const struct pw_placer *p;
    const struct pw_place_req *r;
    uint32_t host_limit, zone_limit;
    double inv_total;
    struct pw_place_result best;
    int found;
    const struct pclass *zone_cls; /* the class whose zone count is cached */
    uint32_t zone_n;
    const struct fntab *ft; /* the function's host counts (NULL: none yet) */
    uint64_t scored;
};

static int zone_allowed(const struct pw_place_req *r, const struct zone *z)
{
    const struct pw_placement_spec *s = r->spec;
    return s == NULL || (sel_has(s->clouds, s->nclouds, z->cloud) && sel_has(s->regions, s->nregions, z->region) &&
                         sel_has(s->zones, s->nzones, z->name));
}

/* class_open checks a class against the constraints and the zone spread limit and caches the
 * zone's count. Returns 0 when nothing in it may take the VM. */
static int class_open(struct dec *d, const struct pclass *c)
{
    if (!zone_allowed(d->r, c->z))
        return 0;
    const struct cnt *zc = cnt_find(&d->p->zonefn, c->z, d->r->fn);
    d->zone_cls = c;
    d->zone_n = zc ? zc->n : 0;
    return d->zone_n + 1 <= d->zone_limit;
}

static double cost_term(const struct pw_placer *p, double cost)
{
    return p->max_cost > 0 ? cost / p->max_cost : 0;
}

/* consider scores node n for the decision (class already open) and keeps the best. Returns 1
 * when the node passed the filter. */
static int consider(struct dec *d, const struct pnode *n, size_t idx)
{
    const struct pw_placer *p = d->p;
    const struct pw_place_req *r = d->r;
    const struct pw_phost *h = n->h;
    if (n->mem_used + r->memory_mb > n->mem_total || n->vcpu_used + (int32_t)r->vcpus > n->vcpu_total)
        return 0;
    uint32_t host_n = fntab_get(d->ft, h);
    if (host_n + 1 > d->host_limit)
        return 0;
    if (p->host_ok != NULL && !p->host_ok(h->owner))
        return 0;
    d->scored++;
    const struct pw_placer_weights *w = &p->cfg.w;
    double fit = (double)(n->mem_total - n->mem_used - r->memory_mb) / (double)n->mem_total;
    double spread = 0.5 * ((double)host_n + (double)d->zone_n) * d->inv_total;
    double load = h->ncpus > 0 ? h->load / h->ncpus : h->load;
    double s = w->cost * cost_term(p, h->cost) + w->fit * fit + w->spread * spread +
               w->snapshot * (pw_placer_host_has_snapshot(h, r->fn_hash) ? 0 : 1) + w->load * (load < 1 ? load : 1);
    if (!d->found || s < d->best.score) {
        d->found = 1;
        d->best.host = (struct pw_phost *)h;
        d->best.node = idx;
        d->best.score = s;
    }
    return 1;
}

static void dec_init(struct dec *d, const struct pw_placer *p, const struct pw_place_req *r)
{
    memset(d, 0, sizeof(*d));
    d->p = p;
    d->r = r;
    d->host_limit = r->spec ? share_limit(r->spec->max_host_share, r->fn_total) : UINT32_MAX;
    d->zone_limit = r->spec ? share_limit(r->spec->max_zone_share, r->fn_total) : UINT32_MAX;
    d->inv_total = 1.0 / ((double)r->fn_total + 1);
    d->ft = fntab_find(p, r->fn);
}

/* scan_class looks at the class's nodes that can fit the VM, smallest free memory first.
 * Limits of 0 mean unbounded. Returns the number of nodes looked at. */
static uint64_t scan_class(struct dec *d, const struct pclass *c, uint32_t want, uint32_t budget)
{
    uint64_t scanned = 0;
    uint32_t feasible = 0;
    for (int b = next_bucket(c, bucket_of(d->r->memory_mb)); b >= 0; b = next_bucket(c, (unsigned)b + 1)) {
        for (const struct pnode *n = c->bucket[b]; n != NULL; n = n->bnext) {
            scanned++;
            if (consider(d, n, (size_t)(n - n->h->nodes)))
                feasible++;
            if ((want && feasible >= want) || (budget && scanned >= budget))
                return scanned;
        }
    }
    return scanned;
}

int pw_placer_place(struct pw_placer *p, const struct pw_place_req *r, struct pw_place_result *out)
{
    struct dec d;
    dec_init(&d, p, r);
    p->stats.decisions++;
    /* Hosts holding the function's snapshot first: they may be few among many. */
    const struct snapset *ss = snap_find(p, r->fn_hash);
    if (ss != NULL) {
        /* With many holders, the window moves with the size of the function's pool, so
         * successive placements of it see successive windows (and the same state always gives
         * the same decision). */
        size_t lim = ss->n < SNAP_CANDIDATES ? ss->n : SNAP_CANDIDATES;
        size_t start = ss->n > SNAP_CANDIDATES ? ((size_t)r->fn_total * SNAP_CANDIDATES) % ss->n : 0;
        for (size_t j = 0; j < lim; j++) {
            const struct pw_phost *h = ss->hosts[(start + j) % ss->n];
            if (!h->eligible || !class_open(&d, h->cls))
                continue;
            for (size_t k = 0; k < h->nnodes; k++) {
                p->stats.nodes_scanned++;
                consider(&d, &h->nodes[k], k);
            }
        }
    }
    const struct pw_placer_weights *w = &p->cfg.w;
    /* A node's score is at least its class's cost term, plus the snapshot term when no host
     * holds the function's snapshot. */
    double floor_extra = ss == NULL ? w->snapshot : 0;
    for (size_t i = 0; i < p->nsorted; i++) {
        const struct pclass *c = p->sorted[i];
        if (d.found && w->cost * cost_term(p, c->cost) + floor_extra >= d.best.score)
            break; /* every later class costs at least this much */
        if (!class_open(&d, c))
            continue;
        p->stats.classes_visited++;
        p->stats.nodes_scanned += scan_class(&d, c, p->cfg.candidates, p->cfg.scan_budget);
    }
    if (!d.found) {
        /* The bounded search found nothing: be exact before saying there is no room. */
        p->stats.fallbacks++;
        for (size_t i = 0; i < p->nsorted; i++) {
            const struct pclass *c = p->sorted[i];
            if (class_open(&d, c))
                p->stats.nodes_scanned += scan_class(&d, c, 0, 0);
        }
    }
    p->stats.nodes_scored += d.scored;
    if (!d.found)
        return 0;
    *out = d.best;
    return 1;
}

int pw_placer_place_scan(struct pw_placer *p, const struct pw_place_req *r, struct pw_place_result *out)
{
    struct dec d;
    dec_init(&d, p, r);
    p->stats.decisions++;
    const struct pw_list *it;
    pw_list_foreach(it, &p->hosts)
    {
        const struct pw_phost *h = pw_container_of(it, struct pw_phost, link);
        if (!h->eligible)
            continue;
        if (d.zone_cls != h->cls && !class_open(&d, h->cls)) {
            d.zone_cls = NULL;
            continue;
        }
        for (size_t k = 0; k < h->nnodes; k++) {
            p->stats.nodes_scanned++;
            consider(&d, &h->nodes[k], k);
        }
    }
    p->stats.nodes_scored += d.scored;
    if (!d.found)
        return 0;
    *out = d.best;
    return 1;
}

double pw_placer_score(const struct pw_placer *p, const struct pw_phost *h, size_t node, const struct pw_place_req *r)
{
    struct dec d;
    dec_init(&d, p, r);
    if (!h->eligible || node >= h->nnodes || !class_open(&d, h->cls) || !consider(&d, &h->nodes[node], node))
        return -1;
    return d.best.score;
}

double pw_placer_reap_score(const struct pw_placer *p, const struct pw_phost *h, const void *fn, uint32_t fn_total,
                            const struct pw_placement_spec *spec)
{
    const struct pw_placer_weights *w = &p->cfg.w;
    double inv = fn_total > 0 ? 1.0 / fn_total : 1;
    double load = h->ncpus > 0 ? h->load / h->ncpus : h->load;
    uint32_t host_n = pw_placer_host_fn(p, h, fn), zone_n = pw_placer_zone_fn(p, h, fn);
    double spread = 0.5 * ((double)host_n + (double)zone_n) * inv;
    double s = w->cost * cost_term(p, h->cost) + w->load * (load < 1 ? load : 1) + w->spread * spread;
    if (spec != NULL && fn_total >= 2) {
        /* Were a VM removed elsewhere, would this place hold too many of the smaller pool? */
        uint32_t after = fn_total - 1;
        if (host_n > share_limit(spec->max_host_share, after - 1) || zone_n > share_limit(spec->max_zone_share, after - 1))
            s += REAP_OVER_LIMIT;
    }
    return h->eligible ? s : s + REAP_INELIGIBLE;
}

/* ---- checks and stats ---- */

int pw_placer_check(const struct pw_placer *p, char *errbuf, size_t errlen)
{
    size_t indexed = 0;
    const struct pw_list *it;
    pw_list_foreach(it, &p->hosts)
    {
        const struct pw_phost *h = pw_container_of(it, struct pw_phost, link);
        for (size_t k = 0; k < h->nnodes; k++) {
            const struct pnode *n = &h->nodes[k];
            int want = h->eligible && n->mem_used < n->mem_total && n->vcpu_used < n->vcpu_total;
            if (want != (n->bucket >= 0)) {
                pw_errf(errbuf, errlen, "node %zu: indexed %d, should be %d", k, n->bucket >= 0, want);
                return PW_ERR_INTERNAL;
            }
            if (want && (unsigned)n->bucket != bucket_of(n->mem_total - n->mem_used)) {
                pw_errf(errbuf, errlen, "node %zu: in bucket %d, free memory says %u", k, n->bucket,
                        bucket_of(n->mem_total - n->mem_used));
                return PW_ERR_INTERNAL;
            }
            indexed += want;
        }
    }
    size_t listed = 0;
    for (size_t i = 0; i < p->nsorted; i++) {
        const struct pclass *c = p->sorted[i];
        if (i > 0 && p->sorted[i - 1]->cost > c->cost) {
            pw_errf(errbuf, errlen, "classes not sorted by cost");
            return PW_ERR_INTERNAL;
        }
        for (unsigned b = 0; b < NBUCKETS; b++) {
            int bit = (c->bits[b / 64] >> (b % 64)) & 1;
            if (bit != (c->bucket[b] != NULL)) {
                pw_errf(errbuf, errlen, "bucket %u: bitmap %d disagrees with its list", b, bit);
                return PW_ERR_INTERNAL;
            }
            for (const struct pnode *n = c->bucket[b]; n != NULL; n = n->bnext) {
                if (n->h->cls != c || n->bucket != (int)b) {
                    pw_errf(errbuf, errlen, "bucket %u holds a node of another class or bucket", b);
                    return PW_ERR_INTERNAL;
                }
                listed++;
            }
        }
    }
    if (listed != indexed) {
        pw_errf(errbuf, errlen, "%zu nodes listed in buckets, %zu indexed", listed, indexed);
        return PW_ERR_INTERNAL;
    }
    /* The per-function tables hold exactly the per-host counts. */
    size_t entries = 0, slots = 0;
    pw_list_foreach(it, &p->hosts)
    {
        const struct pw_phost *h = pw_container_of(it, struct pw_phost, link);
        const struct pw_list *ci;
        pw_list_foreach(ci, &h->fns)
        {
            const struct cnt *c = pw_container_of(ci, struct cnt, link);
            if (fntab_get(fntab_find(p, c->fn), h) != c->n) {
                pw_errf(errbuf, errlen, "function table says %u VMs on a host, host count %u",
                        fntab_get(fntab_find(p, c->fn), h), c->n);
                return PW_ERR_INTERNAL;
            }
            entries++;
        }
    }
    size_t fb = 0;
    struct pw_hnode *fnode = NULL, *fe;
    while ((fe = pw_htab_next(&p->fntabs, &fb, &fnode)) != NULL)
        slots += pw_container_of(fe, struct fntab, hnode)->used;
    if (slots != entries) {
        pw_errf(errbuf, errlen, "function tables hold %zu host entries, hosts %zu", slots, entries);
        return PW_ERR_INTERNAL;
    }
    /* Zone counts are the sums of host counts. */
    size_t b = 0;
    struct pw_hnode *n = NULL, *e;
    while ((e = pw_htab_next(&p->zonefn, &b, &n)) != NULL) {
        const struct cnt *zc = pw_container_of(e, struct cnt, hnode);
        uint64_t sum = 0;
        pw_list_foreach(it, &p->hosts)
        {
            const struct pw_phost *h = pw_container_of(it, struct pw_phost, link);
            if (h->cls->z == zc->where && h->eligible)
                sum += pw_placer_host_fn(p, h, zc->fn);
        }
        if (sum != zc->n) {
            pw_errf(errbuf, errlen, "zone count %u != sum of its hosts' %" PRIu64, zc->n, sum);
            return PW_ERR_INTERNAL;
        }
    }
    return PW_OK;
}

void pw_placer_stats(const struct pw_placer *p, struct pw_placer_stats *out) { *out = p->stats; }

uint64_t pw_placer_generation(const struct pw_placer *p) { return p->gen; }

void pw_placer_touch(struct pw_placer *p) { p->gen++; }
