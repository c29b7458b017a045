/* placement.c — the core's side of placement: asking the placer (placer.h) where a VM goes,
 * which idle VM to remove first, and draining hosts.
 *
 * Drain: a draining host takes no new VMs. Each of its idle VMs gets a replacement restored on
 * another host (linked both ways: vm.repl / vm.repl_of); once the replacement is ready the old
 * VM is destroyed, or when its lease ends if it was leased meanwhile. While a VM has a
 * replacement, reconcile counts the replacement instead of it (fn.moving), so the pool neither
 * restores twice nor reaps the replacement. Restores still under way on a draining host are
 * cancelled: the pool restores them elsewhere. */
#include "core_internal.h"

#include "pw/error.h"

#include <stdint.h>
#include <stdlib.h>

static int host_ok(void *owner)
{
    const struct host *h = owner;
    return h->state == PW_HOST_ALIVE && h->ncmds - h->nnotes < h->core->cfg.max_cmds_per_host;
}

struct pw_placer *pw_core_placer_new(const struct pw_core_config *cfg)
{
    return pw_placer_new(&cfg->placement, host_ok);
}

static uint32_t place_total(const struct fn *f, int replacing)
{
    uint32_t live = f->n[PW_VM_RESTORING] + f->n[PW_VM_IDLE] + f->n[PW_VM_LEASED];
    uint32_t going = f->moving[PW_VM_IDLE] + f->moving[PW_VM_LEASED] + (replacing ? 1u : 0u);
    return live > going ? live - going : 0;
}

int pw_core_place_known_full(const struct pw_core *c, const struct fn *f, int replacing)
{
    return f->nocap_gen == pw_placer_generation(c->placer) && place_total(f, replacing) <= f->nocap_total;
}

int pw_core_place(struct pw_core *c, struct fn *f, int replacing, struct host **out_host, size_t *out_numa)
{
    /* A full cluster is asked again at every acquire that dips below the pool's floor: nothing
     * that could make room has happened since the last "no room", so the answer is the same. */
    if (pw_core_place_known_full(c, f, replacing))
        return 0;
    struct pw_place_req r = {
        .fn = f,
        .fn_hash = f->name_hash,
        .memory_mb = f->spec.memory_mb,
        .vcpus = f->spec.vcpus,
        .fn_total = place_total(f, replacing),
        .spec = &f->spec.placement,
    };
    struct pw_place_result res;
    if (!pw_placer_place(c->placer, &r, &res)) {
        f->nocap_gen = pw_placer_generation(c->placer);
        f->nocap_total = r.fn_total;
        return 0;
    }
    *out_host = pw_placer_host_owner(res.host);
    *out_numa = res.node;
    return 1;
}

struct vm *pw_core_pick_victim(struct pw_core *c, struct fn *f, int64_t now, int only_expired, int64_t keepalive_ms,
                               size_t scan)
{
    struct vm *best = NULL, *oldest = NULL;
    double best_score = 0;
    uint32_t live = f->n[PW_VM_RESTORING] + f->n[PW_VM_IDLE] + f->n[PW_VM_LEASED];
    uint32_t going = f->moving[PW_VM_IDLE] + f->moving[PW_VM_LEASED];
    uint32_t total = live > going ? live - going : 0;
    size_t seen = 0;
    /* The idle list is ordered by idle_since, newest at the head: walk from the oldest. */
    for (struct pw_list *it = f->idle.prev; it != &f->idle && seen < scan; it = it->prev) {
        struct vm *v = pw_container_of(it, struct vm, fn_link);
        if (pw_core_host_out(v->host))
            continue; /* the drain takes care of it */
        if (oldest == NULL) {
            oldest = v;
            if (only_expired && now - v->idle_since < keepalive_ms)
                return NULL; /* nothing has expired */
        }
        seen++;
        double s = pw_placer_reap_score(c->placer, v->host->ph, f, total, &f->spec.placement);
        if (best == NULL || s > best_score) {
            best = v;
            best_score = s;
        }
    }
    if (best != NULL && best != oldest && only_expired) {
        /* Expiry says how many go, placement says which: the oldest VM stays and takes the
         * victim's age (and place in the list), so the ages of the VMs that remain are the
         * ones they would have had. */
        pw_list_remove(&oldest->fn_link);
        pw_list_push_tail(&best->fn_link, &oldest->fn_link);
        oldest->idle_since = best->idle_since;
    }
    return best;
}

/* ---- drain ---- */

void pw_core_host_sync_eligible(struct pw_core *c, struct host *h)
{
    pw_placer_host_set_eligible(c->placer, h->ph,
                                h->state == PW_HOST_ALIVE && !pw_core_host_out(h) && !pw_core_health_blocks(h));
}

void pw_core_vm_unlink_repl(struct vm *v)
{
    if (v->repl != NULL) {
        v->fn->moving[v->state]--;
        v->repl->repl_of = NULL;
        v->repl = NULL;
    }
    if (v->repl_of != NULL) {
        struct vm *o = v->repl_of;
        o->fn->moving[o->state]--;
        o->repl = NULL;
        v->repl_of = NULL;
    }
}

static int vm_ready(const struct vm *v)
{
    return v->state == PW_VM_IDLE || v->state == PW_VM_LEASED;
}

void pw_core_drain_vm(struct pw_core *c, struct vm *v, int64_t now)
{
    struct fn *f = v->fn;
    switch (v->state) {
    case PW_VM_RESTORING:
        pw_core_vm_destroy(c, v, now);
        if (!f->deleted)
            pw_core_reconcile(c, f, now);
        break;
    case PW_VM_IDLE:
        if (v->repl != NULL) {
            if (vm_ready(v->repl)) {
                pw_core_metric(c, PW_METRIC_VM_MOVED, f, 0);
                pw_core_vm_destroy(c, v, now);
            }
            break;
        }
        if (f->deleted)
            break;
        struct vm *r = pw_core_place_restore(c, f, now, 0, 1);
        if (r != NULL) {
            v->repl = r;
            r->repl_of = v;
            f->moving[v->state]++;
        }
        break;
    default:
        break; /* leased VMs finish first; stopping and failed ones are on their way out */
    }
}

void pw_core_drain_tick(struct pw_core *c, int64_t now)
{
    struct pw_list *hit, *htmp;
    pw_list_foreach_safe(hit, htmp, &c->draining)
    {
        struct host *h = pw_container_of(hit, struct host, drain_link);
        if (h->state != PW_HOST_ALIVE)
            continue;
        struct pw_list *it, *tmp;
        pw_list_foreach_safe(it, tmp, &h->vms) pw_core_drain_vm(c, pw_container_of(it, struct vm, host_link), now);
    }
}

void pw_core_host_update_drain(struct pw_core *c, struct host *h, int64_t now)
{
    int out = pw_core_host_out(h);
    int listed = pw_list_linked(&h->drain_link);
    pw_core_host_sync_eligible(c, h);
    if (out && !listed) {
        pw_list_push_tail(&c->draining, &h->drain_link);
        struct pw_list *it, *tmp;
        pw_list_foreach_safe(it, tmp, &h->vms) pw_core_drain_vm(c, pw_container_of(it, struct vm, host_link), now);
    } else if (!out && listed) {
        /* Undrained: moves under way stop; replacements already made stay in the pool and
         * the surplus ages out by keep-alive. */
        pw_list_remove(&h->drain_link);
        struct pw_list *it;
        pw_list_foreach(it, &h->vms)
        {
            struct vm *v = pw_container_of(it, struct vm, host_link);
            if (v->repl != NULL)
                pw_core_vm_unlink_repl(v);
        }
        pw_core_reconcile_all(c, now);
    }
}

int pw_core_host_drain(struct pw_core *c, int64_t now, const char *host_id, int drain)
{
    struct host *h = pw_core_host_get(c, host_id);
    if (h == NULL)
        return PW_ERR_NOTFOUND;
    h->draining = drain != 0;
    pw_core_host_update_drain(c, h, now);
    return PW_OK;
}
