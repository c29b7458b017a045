/* core.c — pools, VMs, leases and parked acquires: the pure decision code of the scheduler.
 *
 * Events come in through the pw_core_* entry points with the caller's time; decisions go out
 * as actions. See core.h for the contract and docs/core.md for the state machines. */
#include "core_internal.h"

#include "pw/error.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#define RESTORE_BACKOFF_MS 100    /* the first wait after a failed restore */
#define RESTORE_BACKOFF_MAX_MS 30000
/* ---- names ---- */

static const char *policy_names[] = {
#define PW_POLICY_NAME(n, s) s,
    PW_POLICY_MAP(PW_POLICY_NAME)
#undef PW_POLICY_NAME
};
static const char *vm_state_names[] = {
#define PW_VM_NAME(n, s) s,
    PW_VM_STATE_MAP(PW_VM_NAME)
#undef PW_VM_NAME
};
static const char *host_state_names[] = {
#define PW_HOST_NAME(n, s) s,
    PW_HOST_STATE_MAP(PW_HOST_NAME)
#undef PW_HOST_NAME
};
static const char *metric_names[] = {
#define PW_METRIC_NAME(n, s) s,
    PW_METRIC_MAP(PW_METRIC_NAME)
#undef PW_METRIC_NAME
};

const char *pw_policy_str(enum pw_policy_kind k)
{
    return (unsigned)k < PW_POLICY__COUNT ? policy_names[k] : "unknown";
}

int pw_policy_parse(const char *s)
{
    for (int i = 0; i < PW_POLICY__COUNT; i++)
        if (strcmp(s, policy_names[i]) == 0)
            return i;
    return -1;
}

const char *pw_vm_state_str(enum pw_vm_state s)
{
    return (unsigned)s < PW_VM__COUNT ? vm_state_names[s] : "unknown";
}

const char *pw_host_state_str(enum pw_host_state s)
{
    return (unsigned)s < PW_HOST__COUNT ? host_state_names[s] : "unknown";
}

const char *pw_metric_str(enum pw_metric_id m)
{
    return (unsigned)m < PW_METRIC__COUNT ? metric_names[m] : "unknown";
}

/* ---- configuration ---- */

void pw_pool_policy_default(struct pw_pool_policy *p)
{
    p->kind = PW_POLICY_FIXED;
    p->min = 0;
    p->max = 100;
    p->keepalive_ms = 60000;
    p->quantile = 0.99;
}

int pw_function_spec_validate(const struct pw_function_spec *s, char *errbuf, size_t errlen)
{
    const char *why = NULL;
    if (!pw_name_valid(s->name))
        why = "name must be 1-63 characters of [A-Za-z0-9._-] starting with a letter or digit";
    else if (s->memory_mb < 1 || s->memory_mb > 1048576)
        why = "memory_mb must be in 1..1048576";
    else if (s->vcpus < 1 || s->vcpus > 256)
        why = "vcpus must be in 1..256";
    else if ((unsigned)s->pool.kind >= PW_POLICY__COUNT)
        why = "unknown pool policy";
    else if (s->pool.max < 1 || s->pool.max > PW_POOL_HARD_MAX)
        why = "pool max must be in 1..10000";
    else if (s->pool.min > s->pool.max)
        why = "pool min must not exceed max";
    else if (s->pool.keepalive_ms < 0 || s->pool.keepalive_ms > 7 * 24 * 3600 * 1000LL)
        why = "pool keepalive_ms must be in 0..604800000";
    else if (!(s->pool.quantile >= 0.5 && s->pool.quantile < 1.0))
        why = "pool quantile must be in [0.5, 1)";
    if (why == NULL)
        return pw_placement_spec_validate(&s->placement, errbuf, errlen);
    if (errbuf != NULL && errlen > 0)
        pw_strlcpy(errbuf, why, errlen);
    return PW_ERR_INVAL;
}

void pw_core_config_default(struct pw_core_config *c)
{
    memset(c, 0, sizeof(*c));
    c->epoch = 1;
    c->id_base = 0;
    c->heartbeat_ms = 1000;
    c->dead_after_beats = 3;
    c->lease_ttl_ms = 60000;
    c->adopt_grace_ms = 3000;
    c->max_waiters_per_fn = 1000;
    c->max_cmds_per_host = 1024;
    c->lease_notes = 1;
    c->cordon_ms = 30000;
    pw_placer_config_default(&c->placement);
}

/* ---- hash helpers ---- */

static int fn_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct fn, hnode)->spec.name, key) == 0;
}
static int vm_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct vm, hnode)->id == *(const uint64_t *)key;
}
static int lease_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct lease, hnode)->id == *(const uint64_t *)key;
}
static int waiter_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct waiter, hnode)->req_id == *(const uint64_t *)key;
}

struct fn *pw_core_fn_find(const struct pw_core *c, const char *name)
{
    struct pw_hnode *n = pw_htab_find(&c->fns, pw_hash_str(name), name, fn_eq);
    return n ? pw_container_of(n, struct fn, hnode) : NULL;
}

struct vm *pw_core_vm_find(const struct pw_core *c, uint64_t id)
{
    struct pw_hnode *n = pw_htab_find(&c->vms, pw_hash_u64(id), &id, vm_eq);
    return n ? pw_container_of(n, struct vm, hnode) : NULL;
}

static struct lease *lease_find(const struct pw_core *c, uint64_t id)
{
    struct pw_hnode *n = pw_htab_find(&c->leases, pw_hash_u64(id), &id, lease_eq);
    return n ? pw_container_of(n, struct lease, hnode) : NULL;
}

static struct waiter *waiter_find(const struct pw_core *c, uint64_t req_id)
{
    struct pw_hnode *n = pw_htab_find(&c->waiters, pw_hash_u64(req_id), &req_id, waiter_eq);
    return n ? pw_container_of(n, struct waiter, hnode) : NULL;
}

static uint64_t new_id(struct pw_core *c)
{
    return ++c->next_id;
}

/* ---- actions ---- */

struct pw_action *pw_core_push_action(struct pw_core *c, enum pw_act_type type)
{
    if (c->acts_len == c->acts_cap) {
        size_t cap = c->acts_cap ? c->acts_cap * 2 : 64;
        struct pw_action *a = pw_xmalloc(cap * sizeof(*a));
        for (size_t i = 0; i < c->acts_len; i++)
            a[i] = c->acts[(c->acts_head + i) % c->acts_cap];
        free(c->acts);
        c->acts = a;
        c->acts_cap = cap;
        c->acts_head = 0;
    }
    struct pw_action *a = &c->acts[(c->acts_head + c->acts_len++) % c->acts_cap];
    memset(a, 0, offsetof(struct pw_action, u));
    a->type = type;
    return a;
}

int pw_core_next_action(struct pw_core *c, struct pw_action *out)
{
    if (c->acts_len == 0)
        return 0;
    *out = c->acts[c->acts_head];
    c->acts_head = (c->acts_head + 1) % c->acts_cap;
    c->acts_len--;
    return 1;
}

void pw_core_metric_n(struct pw_core *c, enum pw_metric_id id, const struct fn *f, double value, uint32_t n)
{
    c->metrics[id] += n;
    struct pw_action *a = pw_core_push_action(c, PW_ACT_METRIC);
    if (f != NULL)
        pw_strlcpy(a->function, f->spec.name, sizeof(a->function));
    a->u.metric.id = id;
    a->u.metric.value = value;
    a->u.metric.count = n;
}

void pw_core_metric(struct pw_core *c, enum pw_metric_id id, const struct fn *f, double value)
{
    pw_core_metric_n(c, id, f, value, 1);
}

/* ---- lifecycle ---- */

struct pw_core *pw_core_new(const struct pw_core_config *cfg, int64_t now)
{
    struct pw_core *c = pw_xcalloc(1, sizeof(*c));
    c->cfg = *cfg;
    if (c->cfg.dead_after_beats <= 0)
        c->cfg.dead_after_beats = 3;
    if (c->cfg.max_cmds_per_host == 0)
        c->cfg.max_cmds_per_host = 1024;
    if (c->cfg.max_waiters_per_fn == 0)
        c->cfg.max_waiters_per_fn = 1000;
    c->started_at = now;
    c->grace_until = now + c->cfg.adopt_grace_ms;
    c->next_id = cfg->id_base;
    pw_htab_init(&c->fns);
    pw_htab_init(&c->hosts);
    pw_htab_init(&c->vms);
    pw_htab_init(&c->leases);
    pw_htab_init(&c->waiters);
    if (c->cfg.placement.candidates == 0)
        pw_placer_config_default(&c->cfg.placement);
    c->placer = pw_core_placer_new(&c->cfg);
    pw_list_init(&c->draining);
    pw_list_init(&c->fn_list);
    pw_list_init(&c->dying);
    pw_list_init(&c->host_list);
    pw_list_init(&c->lease_list);
    pw_list_init(&c->waiter_list);
    c->last_expiry_scan = now;
    return c;
}

void pw_core_free(struct pw_core *c)
{
    if (c == NULL)
        return;
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &c->waiter_list) free(pw_container_of(it, struct waiter, link));
    pw_list_foreach_safe(it, tmp, &c->lease_list) free(pw_container_of(it, struct lease, link));
    pw_list_foreach_safe(it, tmp, &c->host_list)
    {
        struct host *h = pw_container_of(it, struct host, link);
        struct pw_list *vi, *vt;
        pw_list_foreach_safe(vi, vt, &h->vms) free(pw_container_of(vi, struct vm, host_link));
        pw_core_host_free(h);
    }
    pw_list_foreach_safe(it, tmp, &c->fn_list) free(pw_container_of(it, struct fn, link));
    pw_list_foreach_safe(it, tmp, &c->dying) free(pw_container_of(it, struct fn, link));
    pw_htab_fini(&c->fns);
    pw_htab_fini(&c->hosts);
    pw_htab_fini(&c->vms);
    pw_htab_fini(&c->leases);
    pw_htab_fini(&c->waiters);
    pw_placer_free(c->placer);
    free(c->acts);
    free(c);
}

int pw_core_in_grace(const struct pw_core *c, int64_t now)
{
    return c->expected_pending > 0 && now < c->grace_until;
}

/* ---- functions ---- */

static void fn_maybe_free(struct pw_core *c, struct fn *f)
{
    if (!f->deleted)
        return;
    for (int s = 0; s < PW_VM__COUNT; s++)
        if (f->n[s] != 0)
            return;
    pw_list_remove(&f->link);
    free(f);
    (void)c;
}

static void request_snapshot(struct pw_core *c, struct fn *f)
{
    struct host *h;
    size_t numa_idx;
    if (!pw_core_place(c, f, 0, &h, &numa_idx))
        return;
    struct pw_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PW_CMD_SNAPSHOT;
    pw_strlcpy(cmd.function, f->spec.name, sizeof(cmd.function));
    pw_strlcpy(cmd.image, f->spec.image, sizeof(cmd.image));
    cmd.memory_mb = f->spec.memory_mb;
    cmd.vcpus = f->spec.vcpus;
    cmd.numa_node = h->numa[numa_idx].info.id;
    pw_core_host_cmd(c, h, &cmd);
}

int pw_core_function_put(struct pw_core *c, int64_t now, const struct pw_function_spec *spec)
{
    if (pw_function_spec_validate(spec, NULL, 0) != PW_OK)
        return PW_ERR_INVAL;
    struct fn *f = pw_core_fn_find(c, spec->name);
    if (f == NULL) {
        f = pw_xcalloc(1, sizeof(*f));
        pw_list_init(&f->idle);
        pw_list_init(&f->waiters);
        pw_htab_insert(&c->fns, &f->hnode, pw_hash_str(spec->name));
        pw_list_push_tail(&c->fn_list, &f->link);
    }
    /* A new function, or a new image or shape, gets its golden snapshot made at once on the
     * host its first VM would go to, so the first restore does not wait for a boot. Other
     * hosts make theirs at their first restore. */
    int fresh = f->spec.name[0] == '\0' || strcmp(f->spec.image, spec->image) != 0 ||
                f->spec.memory_mb != spec->memory_mb || f->spec.vcpus != spec->vcpus;
    /* Memory and vCPUs of running VMs stay what they were placed with; only new VMs use the
     * new shape. */
    f->spec = *spec;
    f->name_hash = pw_hash_str(spec->name);
    f->nocap_gen = 0; /* a new shape or new constraints: ask the placer again */
    if (fresh)
        request_snapshot(c, f);
    pw_core_reconcile(c, f, now);
    return PW_OK;
}

static void answer(struct pw_core *c, struct waiter *w, int err, struct vm *v, int64_t now);

int pw_core_function_delete(struct pw_core *c, int64_t now, const char *name)
{
    struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    pw_htab_remove(&c->fns, &f->hnode);
    pw_list_remove(&f->link);
    pw_list_push_tail(&c->dying, &f->link);
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &f->waiters)
    {
        answer(c, pw_container_of(it, struct waiter, fn_link), PW_ERR_NOTFOUND, NULL, now);
    }
    /* Destroy every VM not serving an invocation; leased ones go when released or expired. */
    pw_list_foreach_safe(it, tmp, &c->host_list)
    {
        struct host *h = pw_container_of(it, struct host, link);
        struct pw_list *vi, *vt;
        pw_list_foreach_safe(vi, vt, &h->vms)
        {
            struct vm *v = pw_container_of(vi, struct vm, host_link);
            if (v->fn == f && v->state != PW_VM_LEASED && v->state != PW_VM_STOPPING)
                pw_core_vm_destroy(c, v, now);
        }
    }
    /* Marked only now, so no VM leaving above frees f while this loop still compares to it. */
    f->deleted = 1;
    fn_maybe_free(c, f);
    return PW_OK;
}

int pw_core_set_dynamic(struct pw_core *c, int64_t now, const char *name, uint32_t floor, int64_t keepalive_ms)
{
    struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    int changed = !f->dyn_set || f->dyn_floor != floor || f->dyn_keepalive_ms != keepalive_ms;
    f->dyn_set = 1;
    f->dyn_floor = floor;
    f->dyn_keepalive_ms = keepalive_ms < 0 ? -1 : keepalive_ms;
    if (changed)
        pw_core_reconcile(c, f, now);
    return PW_OK;
}

int pw_core_clear_dynamic(struct pw_core *c, int64_t now, const char *name)
{
    struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    if (f->dyn_set) {
        f->dyn_set = 0;
        pw_core_reconcile(c, f, now);
    }
    return PW_OK;
}

int pw_core_function_get(const struct pw_core *c, const char *name, struct pw_function_spec *out)
{
    const struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    *out = f->spec;
    return PW_OK;
}

size_t pw_core_function_count(const struct pw_core *c)
{
    return c->fns.count;
}

void pw_core_function_each(const struct pw_core *c, pw_core_function_cb cb, void *arg)
{
    const struct pw_list *it;
    pw_list_foreach(it, &c->fn_list) cb(arg, &pw_container_of(it, struct fn, link)->spec);
}

/* ---- VMs ---- */

static int vm_live(enum pw_vm_state s)
{
    return s == PW_VM_RESTORING || s == PW_VM_IDLE || s == PW_VM_LEASED;
}

struct vm *pw_core_vm_new(struct pw_core *c, int64_t now, uint64_t id, struct fn *f, struct host *h,
                          size_t numa_idx, enum pw_vm_state state, uint32_t memory_mb, uint32_t vcpus)
{
    struct vm *v = pw_xcalloc(1, sizeof(*v));
    v->id = id;
    v->fn = f;
    v->host = h;
    v->numa_idx = numa_idx;
    v->state = state;
    v->since = now;
    v->idle_since = now;
    v->memory_mb = memory_mb;
    v->vcpus = vcpus;
    pw_htab_insert(&c->vms, &v->hnode, pw_hash_u64(id));
    pw_list_push_tail(&h->vms, &v->host_link);
    h->nvms++;
    if (vm_live(state))
        pw_placer_fn_count(c->placer, h->ph, f, 1);
    pw_placer_node_use(c->placer, h->ph, numa_idx, memory_mb, vcpus, 1);
    f->n[state]++;
    if (state == PW_VM_IDLE)
        pw_list_push_head(&f->idle, &v->fn_link);
    return v;
}

static int transition_legal(enum pw_vm_state from, enum pw_vm_state to)
{
    switch (from) {
    case PW_VM_RESTORING: return to == PW_VM_IDLE || to == PW_VM_FAILED || to == PW_VM_STOPPING || to == PW_VM_GONE;
    case PW_VM_IDLE: return to == PW_VM_LEASED || to == PW_VM_STOPPING || to == PW_VM_GONE;
    case PW_VM_LEASED: return to == PW_VM_IDLE || to == PW_VM_STOPPING || to == PW_VM_GONE;
    case PW_VM_STOPPING: return to == PW_VM_GONE;
    case PW_VM_FAILED: return to == PW_VM_STOPPING || to == PW_VM_GONE;
    default: return 0;
    }
}

/* The one place a VM changes state. GONE frees it (and its lease), so callers must not touch
 * v afterwards. Illegal transitions are our bugs: assert. */
void pw_core_vm_set_state(struct pw_core *c, struct vm *v, enum pw_vm_state to, int64_t now)
{
    enum pw_vm_state from = v->state;
    if (from == to)
        return;
    assert(transition_legal(from, to));
    struct fn *f = v->fn;
    if (from == PW_VM_IDLE)
        pw_list_remove(&v->fn_link);
    /* Spread counts cover live VMs; memory stays used until the VM is gone. */
    if (vm_live(from) && !vm_live(to))
        pw_placer_fn_count(c->placer, v->host->ph, f, -1);
    f->n[from]--;
    if (v->repl != NULL) {
        f->moving[from]--;
        if (to != PW_VM_GONE)
            f->moving[to]++;
    }
    v->state = to;
    v->since = now;
    if (to == PW_VM_IDLE) {
        v->idle_since = now;
        pw_list_push_head(&f->idle, &v->fn_link);
    }
    if (from == PW_VM_LEASED && v->lease != NULL)
        pw_core_lease_drop(c, v->lease);
    if (to != PW_VM_GONE) {
        f->n[to]++;
        return;
    }
    struct host *h = v->host;
    if (v->repl != NULL) {
        v->repl->repl_of = NULL;
        v->repl = NULL;
    }
    if (v->repl_of != NULL)
        pw_core_vm_unlink_repl(v);
    pw_placer_node_use(c->placer, h->ph, v->numa_idx, v->memory_mb, v->vcpus, -1);
    pw_list_remove(&v->host_link);
    h->nvms--;
    pw_htab_remove(&c->vms, &v->hnode);
    free(v);
    fn_maybe_free(c, f);
}

/* pw_core_vm_destroy asks the agent to stop v and marks it stopping. */
void pw_core_vm_destroy(struct pw_core *c, struct vm *v, int64_t now)
{
    if (v->state == PW_VM_STOPPING)
        return;
    struct pw_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PW_CMD_DESTROY;
    cmd.vm_id = v->id;
    pw_strlcpy(cmd.function, v->fn->spec.name, sizeof(cmd.function));
    if (!pw_core_host_cmd(c, v->host, &cmd)) {
        /* The agent is not taking commands: it will report the VM in its next inventory, and
         * the VM is destroyed then. Forget it here so pools stay truthful. */
        pw_core_vm_set_state(c, v, PW_VM_GONE, now);
        return;
    }
    pw_core_vm_set_state(c, v, PW_VM_STOPPING, now);
}

/* ---- leases and answers ---- */

struct lease *pw_core_lease_new(struct pw_core *c, struct vm *v, uint64_t id, int64_t now, int64_t expires_at)
{
    struct lease *l = pw_xcalloc(1, sizeof(*l));
    l->id = id;
    l->vm = v;
    l->granted_at = now;
    l->expires_at = expires_at;
    v->lease = l;
    pw_htab_insert(&c->leases, &l->hnode, pw_hash_u64(id));
    /* Keep lease_list sorted by expiry; with one TTL this appends at the tail. */
    struct pw_list *pos = c->lease_list.prev;
    while (pos != &c->lease_list && pw_container_of(pos, struct lease, link)->expires_at > expires_at)
        pos = pos->prev;
    pw_list_push_head(pos, &l->link);
    return l;
}

void pw_core_lease_drop(struct pw_core *c, struct lease *l)
{
    pw_htab_remove(&c->leases, &l->hnode);
    pw_list_remove(&l->link);
    if (l->vm != NULL)
        l->vm->lease = NULL;
    free(l);
}

static void lease_note(struct pw_core *c, struct vm *v, enum pw_cmd_type type)
{
    struct pw_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = type;
    cmd.vm_id = v->id;
    if (type == PW_CMD_LEASE && v->lease != NULL) {
        cmd.lease_id = v->lease->id;
        cmd.lease_ttl_ms = c->cfg.lease_ttl_ms;
    }
    pw_core_host_cmd(c, v->host, &cmd);
}

/* grant leases idle VM v to the request and queues the answer. */
static void grant(struct pw_core *c, struct vm *v, uint64_t req_id, int cold, int64_t since, int64_t now)
{
    pw_core_vm_set_state(c, v, PW_VM_LEASED, now);
    struct lease *l = pw_core_lease_new(c, v, new_id(c), now, now + c->cfg.lease_ttl_ms);
    lease_note(c, v, PW_CMD_LEASE);
    struct fn *f = v->fn;
    if (cold)
        f->cold++;
    else
        f->warm++;
    struct pw_action *a = pw_core_push_action(c, PW_ACT_ACQUIRE_ANSWER);
    pw_strlcpy(a->function, f->spec.name, sizeof(a->function));
    a->u.answer.req_id = req_id;
    a->u.answer.err = PW_OK;
    a->u.answer.lease.lease_id = l->id;
    a->u.answer.lease.vm_id = v->id;
    pw_strlcpy(a->u.answer.lease.host, v->host->id, sizeof(a->u.answer.lease.host));
    pw_strlcpy(a->u.answer.lease.address, v->address, sizeof(a->u.answer.lease.address));
    a->u.answer.lease.cold = cold;
    a->u.answer.lease.wait_ms = now - since;
    a->u.answer.lease.expires_at = l->expires_at;
    pw_core_metric(c, cold ? PW_METRIC_ACQUIRE_COLD : PW_METRIC_ACQUIRE_WARM, f, (double)(now - since));
}

static void waiter_free(struct pw_core *c, struct waiter *w)
{
    pw_htab_remove(&c->waiters, &w->hnode);
    pw_list_remove(&w->fn_link);
    pw_list_remove(&w->link);
    w->fn->nwaiters--;
    free(w);
}

/* answer ends a parked acquire: with v (leased to it) when err is PW_OK, else with err. */
static void answer(struct pw_core *c, struct waiter *w, int err, struct vm *v, int64_t now)
{
    if (err == PW_OK) {
        grant(c, v, w->req_id, 1, w->since, now);
    } else {
        struct pw_action *a = pw_core_push_action(c, PW_ACT_ACQUIRE_ANSWER);
        pw_strlcpy(a->function, w->fn->spec.name, sizeof(a->function));
        a->u.answer.req_id = w->req_id;
        a->u.answer.err = err;
        if (err == PW_ERR_TIMEOUT) {
            w->fn->timeouts++;
            pw_core_metric(c, PW_METRIC_ACQUIRE_TIMEOUT, w->fn, (double)(now - w->since));
        }
    }
    waiter_free(c, w);
}

/* pw_core_vm_ready: a restoring VM is running. It serves the oldest parked acquire, or idles. */
void pw_core_restore_failed(struct pw_core *c, struct fn *f, int64_t now)
{
    (void)c;
    /* One failure is retried at once (a host may just have been unlucky); from the second in
     * a row, restores wait. */
    f->fail_streak++;
    if (f->fail_streak < 2)
        return;
    int64_t delay = (int64_t)RESTORE_BACKOFF_MS << (f->fail_streak < 11 ? f->fail_streak - 2 : 9);
    f->retry_at = now + (delay < RESTORE_BACKOFF_MAX_MS ? delay : RESTORE_BACKOFF_MAX_MS);
}

void pw_core_vm_ready(struct pw_core *c, struct vm *v, int64_t now, const char *address)
{
    v->fn->fail_streak = 0;
    v->fn->retry_at = 0;
    if (address != NULL && address[0] != '\0')
        pw_strlcpy(v->address, address, sizeof(v->address));
    pw_core_vm_set_state(c, v, PW_VM_IDLE, now);
    struct fn *f = v->fn;
    if (f->deleted) {
        pw_core_vm_destroy(c, v, now);
        return;
    }
    struct pw_list *wl = pw_list_head(&f->waiters);
    if (wl != NULL)
        answer(c, pw_container_of(wl, struct waiter, fn_link), PW_OK, v, now);
    /* A replacement for a VM on a draining host: the old one goes now if it is idle. */
    if (v->repl_of != NULL && v->repl_of->state == PW_VM_IDLE)
        pw_core_drain_vm(c, v->repl_of, now);
    else if (v->state == PW_VM_IDLE && pw_core_host_out(v->host))
        pw_core_drain_vm(c, v, now);
    pw_core_reconcile(c, f, now);
}

int pw_core_acquire(struct pw_core *c, int64_t now, const char *name, uint64_t req_id, int64_t deadline)
{
    struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    if (waiter_find(c, req_id) != NULL)
        return PW_ERR_EXISTS;
    f->acquires++;
    struct pw_action *inv = pw_core_push_action(c, PW_ACT_STORE_INVOCATION);
    pw_strlcpy(inv->function, f->spec.name, sizeof(inv->function));
    inv->u.invocation.at = now;
    /* Most recently idled VM first: its caches are warmest, and the oldest idle ones are left
     * to expire. */
    struct pw_list *il = pw_list_head(&f->idle);
    if (il != NULL) {
        grant(c, pw_container_of(il, struct vm, fn_link), req_id, 0, now, now);
        pw_core_reconcile(c, f, now);
        return PW_OK;
    }
    if (f->nwaiters >= c->cfg.max_waiters_per_fn) {
        f->acquires--;
        return PW_ERR_LIMIT;
    }
    struct waiter *w = pw_xcalloc(1, sizeof(*w));
    w->req_id = req_id;
    w->fn = f;
    w->since = now;
    w->deadline = deadline;
    pw_htab_insert(&c->waiters, &w->hnode, pw_hash_u64(req_id));
    pw_list_push_tail(&f->waiters, &w->fn_link);
    pw_list_push_tail(&c->waiter_list, &w->link);
    f->nwaiters++;
    pw_core_reconcile(c, f, now);
    return PW_OK;
}

void pw_core_acquire_cancel(struct pw_core *c, int64_t now, uint64_t req_id)
{
    struct waiter *w = waiter_find(c, req_id);
    if (w != NULL)
        waiter_free(c, w);
    (void)now;
}

int pw_core_release(struct pw_core *c, int64_t now, uint64_t lease_id, int64_t duration_ms,
                    enum pw_release_outcome outcome)
{
    struct lease *l = lease_find(c, lease_id);
    if (l == NULL)
        return PW_ERR_NOTFOUND;
    struct vm *v = l->vm;
    struct fn *f = v->fn;
    (void)duration_ms;
    if (outcome == PW_RELEASE_ERROR || f->deleted) {
        pw_core_vm_destroy(c, v, now);
    } else {
        pw_core_vm_set_state(c, v, PW_VM_IDLE, now);
        struct pw_list *wl = pw_list_head(&f->waiters);
        if (wl != NULL)
            answer(c, pw_container_of(wl, struct waiter, fn_link), PW_OK, v, now);
        else
            lease_note(c, v, PW_CMD_UNLEASE);
        if (v->state == PW_VM_IDLE && pw_core_host_out(v->host))
            pw_core_drain_vm(c, v, now);
    }
    if (!f->deleted)
        pw_core_reconcile(c, f, now);
    return PW_OK;
}

/* ---- reconcile ---- */

static uint32_t live_count(const struct fn *f)
{
    return f->n[PW_VM_RESTORING] + f->n[PW_VM_IDLE] + f->n[PW_VM_LEASED];
}

/* The pool as reconcile sees it: a VM being moved off a draining host is counted through its
 * replacement, not itself. */
static uint32_t live_eff(const struct fn *f)
{
    return live_count(f) - f->moving[PW_VM_RESTORING] - f->moving[PW_VM_IDLE] - f->moving[PW_VM_LEASED];
}

static uint32_t idle_eff(const struct fn *f)
{
    return f->n[PW_VM_IDLE] - f->moving[PW_VM_IDLE];
}

#define REAP_SCAN 256 /* idle VMs compared when choosing which to remove */

/* total_floor is the number of VMs kept alive whatever the traffic: the keepalive policy's min,
 * raised by a policy engine's overlay, never above max. */
static uint32_t total_floor(const struct fn *f)
{
    uint32_t floor = f->spec.pool.kind != PW_POLICY_FIXED ? f->spec.pool.min : 0;
    if (f->dyn_set && f->dyn_floor > floor)
        floor = f->dyn_floor;
    return floor < f->spec.pool.max ? floor : f->spec.pool.max;
}

static uint32_t target_idle(const struct fn *f)
{
    return f->spec.pool.kind == PW_POLICY_FIXED ? f->spec.pool.min : 0;
}

struct vm *pw_core_place_restore(struct pw_core *c, struct fn *f, int64_t now, int for_waiter, int replacing)
{
    struct host *h;
    size_t numa_idx;
    if (!pw_core_place(c, f, replacing, &h, &numa_idx)) {
        pw_core_metric(c, PW_METRIC_NO_CAPACITY, f, 0);
        return NULL;
    }
    struct vm *v = pw_core_vm_new(c, now, new_id(c), f, h, numa_idx, PW_VM_RESTORING, f->spec.memory_mb,
                                  f->spec.vcpus);
    struct pw_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.type = PW_CMD_PREWARM;
    cmd.vm_id = v->id;
    pw_strlcpy(cmd.function, f->spec.name, sizeof(cmd.function));
    pw_strlcpy(cmd.image, f->spec.image, sizeof(cmd.image));
    cmd.memory_mb = f->spec.memory_mb;
    cmd.vcpus = f->spec.vcpus;
    cmd.numa_node = h->numa[numa_idx].info.id;
    if (!pw_core_host_cmd(c, h, &cmd)) {
        pw_core_vm_set_state(c, v, PW_VM_GONE, now);
        return NULL;
    }
    if (for_waiter)
        pw_core_metric(c, PW_METRIC_COLD_START, f, 0);
    return v;
}

/* pw_core_reconcile brings f's pool toward its policy: restores for parked acquires and the
 * floor, capped by max; expired idle VMs above the floor and VMs above max are destroyed. */
void pw_core_reconcile(struct pw_core *c, struct fn *f, int64_t now)
{
    if (f->deleted)
        return;
    const struct pw_pool_policy *p = &f->spec.pool;
    uint32_t max = p->max;

    /* Above max (max was lowered): idle VMs go, worst placed first (placer.h). */
    while (live_eff(f) > max) {
        struct vm *v = pw_core_pick_victim(c, f, now, 0, 0, REAP_SCAN);
        if (v == NULL)
            break;
        pw_core_vm_destroy(c, v, now);
    }

    /* Restores: every parked acquire needs a VM on its way; in grace, agents are still coming
     * back with VMs we would otherwise duplicate, so only parked acquires get restores. */
    uint32_t restoring = f->n[PW_VM_RESTORING];
    uint32_t want = f->nwaiters > restoring ? f->nwaiters - restoring : 0;
    uint32_t cold = want;
    uint32_t floor_total = total_floor(f);
    if (!pw_core_in_grace(c, now)) {
        uint32_t live = live_eff(f);
        uint32_t floor_need = floor_total > live ? floor_total - live : 0;
        if (p->kind == PW_POLICY_FIXED) {
            /* future idle = idle + restores not promised to a waiter */
            uint32_t spare = restoring > f->nwaiters ? restoring - f->nwaiters : 0;
            uint32_t future_idle = idle_eff(f) + spare;
            uint32_t idle_need = p->min > future_idle ? p->min - future_idle : 0;
            floor_need = PW_MAX(floor_need, idle_need);
        }
        want += floor_need;
    }
    uint32_t live = live_eff(f);
    uint32_t room = max > live ? max - live : 0;
    if (want > room)
        want = room;
    if (now < f->retry_at)
        want = 0; /* restores keep failing: wait (parked acquires wait or time out) */
    for (uint32_t i = 0; i < want; i++) {
        if (pw_core_place_restore(c, f, now, i < cold, 0) != NULL || !pw_core_place_known_full(c, f, 0))
            continue;
        /* No room, and nothing changes before the next try: the rest fail alike. */
        if (want - i - 1 > 0)
            pw_core_metric_n(c, PW_METRIC_NO_CAPACITY, f, 0, want - i - 1);
        break;
    }

    /* Keep-alive: idle VMs above the floor that sat idle for keepalive_ms are destroyed; when
     * the floor keeps some of them, the worst placed go first (placer.h). */
    int64_t keepalive = f->dyn_set && f->dyn_keepalive_ms >= 0 ? f->dyn_keepalive_ms : p->keepalive_ms;
    for (;;) {
        if (p->kind == PW_POLICY_FIXED && idle_eff(f) <= p->min)
            break;
        if (live_eff(f) <= floor_total)
            break;
        struct vm *v = pw_core_pick_victim(c, f, now, 1, keepalive, REAP_SCAN);
        if (v == NULL)
            break;
        pw_core_metric(c, PW_METRIC_VM_EXPIRED, f, (double)(now - v->idle_since));
        pw_core_vm_destroy(c, v, now);
    }
}

void pw_core_reconcile_all(struct pw_core *c, int64_t now)
{
    struct pw_list *it, *tmp;
    pw_list_foreach_safe(it, tmp, &c->fn_list) pw_core_reconcile(c, pw_container_of(it, struct fn, link), now);
}

/* ---- tick ---- */

void pw_core_tick(struct pw_core *c, int64_t now)
{
    struct pw_list *it, *tmp;
    /* Parked acquires past their deadline. */
    pw_list_foreach_safe(it, tmp, &c->waiter_list)
    {
        struct waiter *w = pw_container_of(it, struct waiter, link);
        if (w->deadline <= now)
            answer(c, w, PW_ERR_TIMEOUT, NULL, now);
    }
    /* Leases past their TTL: the gateway died or forgot. The VM's state is unknown, so it is
     * recycled rather than handed out again. */
    while (!pw_list_empty(&c->lease_list)) {
        struct lease *l = pw_container_of(c->lease_list.next, struct lease, link);
        if (l->expires_at > now)
            break;
        struct vm *v = l->vm;
        pw_core_metric(c, PW_METRIC_LEASE_EXPIRED, v->fn, (double)(now - l->granted_at));
        pw_core_vm_destroy(c, v, now);
    }
    pw_core_host_check_liveness(c, now);
    pw_core_health_tick(c, now);
    pw_core_drain_tick(c, now);
    pw_core_reconcile_all(c, now);
}

int64_t pw_core_next_deadline(const struct pw_core *c)
{
    int64_t next = INT64_MAX;
    const struct pw_list *it;
    pw_list_foreach(it, &c->waiter_list)
    {
        const struct waiter *w = pw_container_of(it, struct waiter, link);
        if (w->deadline < next)
            next = w->deadline;
    }
    if (!pw_list_empty(&c->lease_list)) {
        const struct lease *l = pw_container_of(c->lease_list.next, struct lease, link);
        if (l->expires_at < next)
            next = l->expires_at;
    }
    if (c->expected_pending > 0 && c->grace_until < next)
        next = c->grace_until;
    return next;
}

/* ---- views ---- */

int pw_core_pool_view(const struct pw_core *c, const char *name, struct pw_pool_view *out)
{
    const struct fn *f = pw_core_fn_find(c, name);
    if (f == NULL)
        return PW_ERR_NOTFOUND;
    memset(out, 0, sizeof(*out));
    out->spec = f->spec;
    out->restoring = f->n[PW_VM_RESTORING];
    out->idle = f->n[PW_VM_IDLE];
    out->leased = f->n[PW_VM_LEASED];
    out->stopping = f->n[PW_VM_STOPPING];
    out->failed = f->n[PW_VM_FAILED];
    out->waiters = f->nwaiters;
    out->restore_failures = f->fail_streak;
    for (int s = 0; s < PW_VM__COUNT; s++)
        out->outgoing += f->moving[s];
    out->target_idle = target_idle(f);
    out->floor = total_floor(f);
    out->dynamic = f->dyn_set;
    out->acquires = f->acquires;
    out->warm = f->warm;
    out->cold = f->cold;
    out->timeouts = f->timeouts;
    return PW_OK;
}

uint32_t pw_core_pool_waiters(const struct pw_core *c, const char *name)
{
    const struct fn *f = pw_core_fn_find(c, name);
    return f != NULL ? f->nwaiters : 0;
}

static void vm_view(const struct vm *v, struct pw_vm_view *out)
{
    const struct host *h = v->host;
    memset(out, 0, sizeof(*out));
    out->vm_id = v->id;
    pw_strlcpy(out->function, v->fn->spec.name, sizeof(out->function));
    pw_strlcpy(out->host, h->id, sizeof(out->host));
    out->numa_node = v->numa_idx < h->nnuma ? h->numa[v->numa_idx].info.id : -1;
    out->state = v->state;
    out->lease_id = v->lease ? v->lease->id : 0;
}

void pw_core_vm_each(const struct pw_core *c, pw_core_vm_cb cb, void *arg)
{
    struct pw_vm_view view;
    const struct pw_list *hi, *vi;
    pw_list_foreach(hi, &c->host_list)
    {
        pw_list_foreach(vi, &pw_container_of(hi, struct host, link)->vms)
        {
            vm_view(pw_container_of(vi, struct vm, host_link), &view);
            cb(arg, &view);
        }
    }
}

int pw_core_vm_at(const struct pw_core *c, size_t i, struct pw_vm_view *out)
{
    size_t k = 0;
    const struct pw_list *hi;
    pw_list_foreach(hi, &c->host_list)
    {
        const struct host *h = pw_container_of(hi, struct host, link);
        if (i >= k + h->nvms) {
            k += h->nvms;
            continue;
        }
        const struct pw_list *vi;
        pw_list_foreach(vi, &h->vms)
        {
            if (k++ != i)
                continue;
            vm_view(pw_container_of(vi, struct vm, host_link), out);
            return 1;
        }
    }
    return 0;
}

int pw_core_lease_find(const struct pw_core *c, uint64_t lease_id, struct pw_vm_view *out)
{
    const struct lease *l = lease_find(c, lease_id);
    if (l == NULL)
        return PW_ERR_NOTFOUND;
    vm_view(l->vm, out);
    return PW_OK;
}

void pw_core_stats(const struct pw_core *c, struct pw_core_stats *out)
{
    memset(out, 0, sizeof(*out));
    const struct pw_list *it;
    pw_list_foreach(it, &c->host_list)
    {
        if (pw_container_of(it, struct host, link)->state == PW_HOST_ALIVE)
            out->hosts_alive++;
        else
            out->hosts_dead++;
    }
    out->functions = c->fns.count;
    out->vms = c->vms.count;
    out->leases = c->leases.count;
    out->waiters = c->waiters.count;
    memcpy(out->metrics, c->metrics, sizeof(out->metrics));
    out->in_grace = c->expected_pending > 0;
}

/* ---- invariants ---- */

#define CHECK(cond, ...)                                 \
    do {                                                 \
        if (!(cond)) {                                   \
            if (errbuf != NULL && errlen > 0)            \
                snprintf(errbuf, errlen, __VA_ARGS__);   \
            return PW_ERR_INTERNAL;                      \
        }                                                \
    } while (0)

static int check_fn(const struct fn *f, char *errbuf, size_t errlen)
{
    uint32_t idle = 0;
    const struct pw_list *it;
    pw_list_foreach(it, &f->idle)
    {
        const struct vm *v = pw_container_of(it, struct vm, fn_link);
        CHECK(v->state == PW_VM_IDLE, "fn %s: VM %" PRIx64 " on idle list in state %s", f->spec.name, v->id,
              pw_vm_state_str(v->state));
        CHECK(v->fn == f, "fn %s: foreign VM on idle list", f->spec.name);
        idle++;
    }
    CHECK(idle == f->n[PW_VM_IDLE], "fn %s: idle list %u != count %u", f->spec.name, idle, f->n[PW_VM_IDLE]);
    uint32_t w = 0;
    pw_list_foreach(it, &f->waiters) w++;
    CHECK(w == f->nwaiters, "fn %s: waiters %u != %u", f->spec.name, w, f->nwaiters);
    CHECK(!(f->nwaiters > 0 && f->n[PW_VM_IDLE] > 0), "fn %s: parked acquires while VMs idle", f->spec.name);
    CHECK(f->deleted || live_eff(f) <= f->spec.pool.max || f->n[PW_VM_LEASED] > f->spec.pool.max,
          "fn %s: %u live VMs above max %u", f->spec.name, live_eff(f), f->spec.pool.max);
    return PW_OK;
}

int pw_core_check(const struct pw_core *c, char *errbuf, size_t errlen)
{
    uint32_t counts_by_fn_total = 0, moving_total[PW_VM__COUNT] = {0}, moving[PW_VM__COUNT] = {0};
    const struct pw_list *it;
    pw_list_foreach(it, &c->fn_list)
    {
        const struct fn *f = pw_container_of(it, struct fn, link);
        int rv = check_fn(f, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
        for (int s = 0; s < PW_VM__COUNT; s++) {
            counts_by_fn_total += f->n[s];
            moving_total[s] += f->moving[s];
        }
    }
    pw_list_foreach(it, &c->dying)
    {
        const struct fn *f = pw_container_of(it, struct fn, link);
        for (int s = 0; s < PW_VM__COUNT; s++) {
            counts_by_fn_total += f->n[s];
            moving_total[s] += f->moving[s];
        }
    }
    int rv = pw_placer_check(c->placer, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    size_t vms = 0;
    pw_list_foreach(it, &c->host_list)
    {
        const struct host *h = pw_container_of(it, struct host, link);
        uint32_t n = 0;
        uint64_t *mem = pw_xcalloc(h->nnuma ? h->nnuma : 1, sizeof(*mem));
        const struct pw_list *vi;
        pw_list_foreach(vi, &h->vms)
        {
            const struct vm *v = pw_container_of(vi, struct vm, host_link);
            n++;
            if ((v->repl != NULL && v->repl->repl_of != v) || (v->repl_of != NULL && v->repl_of->repl != v)) {
                free(mem);
                CHECK(0, "VM %" PRIx64 ": drain replacement links disagree", v->id);
            }
            if (v->repl != NULL)
                moving[v->state]++;
            if (v->numa_idx < h->nnuma)
                mem[v->numa_idx] += v->memory_mb;
            if (v->state == PW_VM_LEASED && (v->lease == NULL || v->lease->vm != v)) {
                free(mem);
                CHECK(0, "VM %" PRIx64 " leased without a lease", v->id);
            }
            if (v->state != PW_VM_LEASED && v->lease != NULL) {
                free(mem);
                CHECK(0, "VM %" PRIx64 " in state %s holds a lease", v->id, pw_vm_state_str(v->state));
            }
            if (h->state == PW_HOST_DEAD) {
                free(mem);
                CHECK(0, "VM %" PRIx64 " on dead host %s", v->id, h->id);
            }
        }
        for (size_t i = 0; i < h->nnuma; i++) {
            uint64_t used = 0;
            int32_t vused = 0;
            pw_placer_node_used(h->ph, i, &used, &vused);
            if (mem[i] != used) {
                uint64_t got = mem[i];
                free(mem);
                CHECK(0, "host %s node %zu: used %" PRIu64 " != sum %" PRIu64, h->id, i, used, got);
            }
        }
        free(mem);
        CHECK(n == h->nvms, "host %s: %u VMs listed, count %u", h->id, n, h->nvms);
        vms += n;
    }
    CHECK(vms == c->vms.count, "VMs on hosts %zu != table %zu", vms, c->vms.count);
    CHECK(vms == counts_by_fn_total, "VMs on hosts %zu != per-function counts %u", vms, counts_by_fn_total);
    for (int s = 0; s < PW_VM__COUNT; s++)
        CHECK(moving[s] == moving_total[s], "VMs being moved in state %s: %u, counted %u", pw_vm_state_str((enum pw_vm_state)s),
              moving[s], moving_total[s]);
    size_t leases = 0;
    pw_list_foreach(it, &c->lease_list)
    {
        const struct lease *l = pw_container_of(it, struct lease, link);
        CHECK(l->vm != NULL && l->vm->lease == l && l->vm->state == PW_VM_LEASED, "lease %" PRIx64 " dangling", l->id);
        if (it->next != &c->lease_list)
            CHECK(l->expires_at <= pw_container_of(it->next, struct lease, link)->expires_at,
                  "lease list not sorted by expiry");
        leases++;
    }
    CHECK(leases == c->leases.count, "lease list %zu != table %zu", leases, c->leases.count);
    return PW_OK;
}
