/* placement.c — where a new VM of a function goes.
 *
 * Filter: alive hosts whose outbox has room, and a single NUMA node with free memory and vCPU
 * slots for the whole VM (a VM never straddles nodes). Score: fewest VMs of the same function
 * on the host first (spread, so one host's death takes few of a pool), then best fit on the
 * node (least memory left over, less fragmentation), then lower load. This scans every host;
 * the indexed placer with labels, constraints and cost is docs/placement.md's later work. */
#include "core_internal.h"

#include <stdint.h>
#include <stdlib.h>

struct hostfn_key {
    const struct host *h;
    const struct fn *f;
};

static uint64_t hostfn_hash(const struct host *h, const struct fn *f)
{
    return pw_hash_u64((uint64_t)(uintptr_t)h * 31 + (uint64_t)(uintptr_t)f);
}

static int hostfn_eq(const struct pw_hnode *n, const void *key)
{
    const struct hostfn *e = pw_container_of(n, struct hostfn, hnode);
    const struct hostfn_key *k = key;
    return e->h == k->h && e->f == k->f;
}

uint32_t pw_core_hostfn_count(const struct pw_core *c, const struct host *h, const struct fn *f)
{
    struct hostfn_key k = {h, f};
    struct pw_hnode *n = pw_htab_find(&c->hostfns, hostfn_hash(h, f), &k, hostfn_eq);
    return n ? pw_container_of(n, struct hostfn, hnode)->n : 0;
}

void pw_core_hostfn_add(struct pw_core *c, const struct host *h, const struct fn *f, int delta)
{
    struct hostfn_key k = {h, f};
    uint64_t hash = hostfn_hash(h, f);
    struct pw_hnode *n = pw_htab_find(&c->hostfns, hash, &k, hostfn_eq);
    struct hostfn *e = n ? pw_container_of(n, struct hostfn, hnode) : NULL;
    if (e == NULL) {
        if (delta <= 0)
            return;
        e = pw_xcalloc(1, sizeof(*e));
        e->h = h;
        e->f = f;
        pw_htab_insert(&c->hostfns, &e->hnode, hash);
    }
    e->n = (uint32_t)((int64_t)e->n + delta);
    if (e->n == 0) {
        pw_htab_remove(&c->hostfns, &e->hnode);
        free(e);
    }
}

int pw_core_place(const struct pw_core *c, const struct fn *f, struct host **out_host, size_t *out_numa)
{
    struct host *best = NULL;
    size_t best_numa = 0;
    uint32_t best_count = UINT32_MAX;
    uint64_t best_left = UINT64_MAX;
    double best_load = 0;
    const struct pw_list *it;
    pw_list_foreach(it, &c->host_list)
    {
        struct host *h = pw_container_of(it, struct host, link);
        if (h->state != PW_HOST_ALIVE || h->ncmds - h->nnotes >= c->cfg.max_cmds_per_host)
            continue;
        uint32_t count = UINT32_MAX;
        for (size_t i = 0; i < h->nnuma; i++) {
            const struct numa *nd = &h->numa[i];
            if (nd->mem_used_mb + f->spec.memory_mb > nd->info.mem_total_mb)
                continue;
            if (nd->vcpu_used + (int32_t)f->spec.vcpus > nd->info.vcpu_total)
                continue;
            if (count == UINT32_MAX)
                count = pw_core_hostfn_count(c, h, f);
            uint64_t left = nd->info.mem_total_mb - nd->mem_used_mb - f->spec.memory_mb;
            int better = best == NULL || count < best_count ||
                         (count == best_count && (left < best_left || (left == best_left && h->load < best_load)));
            if (better) {
                best = h;
                best_numa = i;
                best_count = count;
                best_left = left;
                best_load = h->load;
            }
        }
    }
    if (best == NULL)
        return 0;
    *out_host = best;
    *out_numa = best_numa;
    return 1;
}
