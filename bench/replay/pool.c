/* pool.c — pool mode: the real scheduling core (scheduler/core) driven in virtual time by a
 * discrete-event loop, against simulated agents that restore a VM in R ms and destroy one at
 * once. Policies steer the core only through pw_core_set_dynamic, as prewarmd's predictor does.
 *
 * Sources of events, merged by (time, priority, sequence): a binary heap (invocation ends,
 * restore completions, oracle and hybrid timers), the current minute's sorted arrivals, the
 * minute boundary (arrival generation, predictive decisions) and the 1 s core tick. Nothing on
 * the hot path allocates once the arrays have grown to their working size. */
#include "replay.h"

#include "pw/core.h"
#include "pw/error.h"
#include "pw/forecast.h"
#include "pw/history.h"
#include "pw/log.h"
#include "pw/model.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NHOSTS 4
#define DEADLINE_FAR (INT64_MAX / 4)
#define NO_SLOT UINT32_MAX

/* Heap events. Priorities order events at the same millisecond: a VM released or restored
 * at t serves an arrival at t; policy decisions at t precede arrivals at t. */
enum ev_type { EV_END, EV_RESTORED, EV_ORACLE_POINT, EV_ORACLE_CHECK, EV_TIMER };
#define PRIO_END 0
#define PRIO_RESTORED 1
#define PRIO_ORACLE 2
#define PRIO_MINUTE 3
#define PRIO_TIMER 4
#define PRIO_ARRIVAL 5
#define PRIO_TICK 6
#define PRIO_SHIFT 56

struct ev {
    int64_t t;
    uint64_t key; /* prio << 56 | sequence */
    uint64_t a;   /* END: slot; RESTORED: vm id; ORACLE_POINT: point time*2+is_arrival; TIMER: gen*2+phase */
    uint32_t fn;
    uint32_t type;
};

/* One point of the oracle's sliding-window maximum (a monotonic deque): in-flight count v from
 * time s until `end` (the next point's time). */
struct opoint {
    int64_t s, end;
    int32_t v;
};

struct pfn {
    struct pw_hnode hnode; /* sim->by_name */
    const char *name;
    double mem_mb;
    /* accounting */
    uint32_t alive;     /* VMs from PREWARM to DESTROY */
    int64_t alive_at;   /* last change of alive */
    int64_t alive_area; /* VM x ms */
    int64_t exec_ms;
    uint64_t inv, cold;
    /* policy state */
    uint32_t inflight; /* arrived and not ended (waiting or running) */
    int64_t idle_since;
    int ever_idle;
    int dyn_valid;
    uint32_t dyn_floor;
    int64_t dyn_ka;
    struct pw_hybrid hy;
    uint32_t gen;
    struct pw_kpa *kpa;
    int kpa_listed;
    struct opoint *op;
    uint32_t op_head, op_len, op_cap;
    int32_t a_r;
    int o_dirty;
};

struct slot {
    int64_t arrival;
    uint64_t lease;
    uint32_t fn;
    uint32_t dur_ms;
    uint32_t next_free;
    int answered;
};

struct sim_host {
    char id[PW_NAME_MAX];
    uint64_t cmd_ack, seq;
    struct pw_agent_event *evs;
    size_t nevs, capevs;
    int dirty;
};

/* Open-addressing map vm id -> host index for VMs restoring on the simulated agents. */
struct vmap {
    uint64_t *keys;
    uint8_t *vals;
    size_t cap, n;
};

struct sim {
    const struct replay_opts *o;
    const struct replay_policy *pol;
    const struct pw_trace *t;
    struct pw_core *c;
    struct pfn *fns;
    size_t nfns;
    struct pw_htab by_name;
    struct ev *heap;
    size_t nheap, capheap;
    uint64_t seq;
    struct slot *slots;
    size_t nslots, capslots;
    uint32_t free_slot;
    struct sim_host hosts[NHOSTS];
    struct vmap restoring;
    int64_t now;
    uint64_t alive_total, peak, samples, restores;
    double alive_sum;
    double policy_us;
    /* oracle: functions touched by the oracle events of the current millisecond */
    uint32_t *o_dirty;
    size_t no_dirty;
    /* reactive */
    uint32_t *active;
    size_t nactive;
    /* predictive */
    struct pw_forecaster *fc;
    struct pw_model *model;
    uint32_t *targets;
    int64_t grace_ms;
    /* arrivals: current minute and the next (the oracle looks R ahead) */
    struct replay_gen gen;
    struct replay_arrival *cur, *next;
    size_t ncur, capcur, nnext, capnext, icur;
};

/* ---- small containers ---- */

static void vmap_grow(struct vmap *m);

static size_t vmap_home(const struct vmap *m, uint64_t k)
{
    return (size_t)pw_hash_u64(k) & (m->cap - 1);
}

static void vmap_put(struct vmap *m, uint64_t k, uint8_t v)
{
    if ((m->n + 1) * 2 > m->cap)
        vmap_grow(m);
    size_t i = vmap_home(m, k);
    while (m->keys[i] != 0)
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = k;
    m->vals[i] = v;
    m->n++;
}

static void vmap_grow(struct vmap *m)
{
    struct vmap old = *m;
    m->cap = old.cap ? old.cap * 2 : 1024;
    m->keys = pw_xcalloc(m->cap, sizeof(*m->keys));
    m->vals = pw_xcalloc(m->cap, sizeof(*m->vals));
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.keys[i] != 0)
            vmap_put(m, old.keys[i], old.vals[i]);
    free(old.keys);
    free(old.vals);
}

/* vmap_take removes k; returns its value, or -1 when absent. Backward-shift deletion keeps
 * probe chains intact without tombstones. */
static int vmap_take(struct vmap *m, uint64_t k)
{
    if (m->cap == 0)
        return -1;
    size_t mask = m->cap - 1, i = vmap_home(m, k);
    while (m->keys[i] != k) {
        if (m->keys[i] == 0)
            return -1;
        i = (i + 1) & mask;
    }
    int v = m->vals[i];
    m->keys[i] = 0;
    m->n--;
    for (size_t j = (i + 1) & mask; m->keys[j] != 0; j = (j + 1) & mask) {
        size_t h = vmap_home(m, m->keys[j]);
        /* Move j back into the hole at i unless its home lies cyclically in (i, j]. */
        int stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!stays) {
            m->keys[i] = m->keys[j];
            m->vals[i] = m->vals[j];
            m->keys[j] = 0;
            i = j;
        }
    }
    return v;
}

static int ev_less(const struct ev *x, const struct ev *y)
{
    return x->t < y->t || (x->t == y->t && x->key < y->key);
}

static void heap_push(struct sim *s, int64_t t, int prio, uint64_t order, enum ev_type type, uint32_t fn, uint64_t a)
{
    if (s->nheap == s->capheap) {
        s->capheap = s->capheap ? s->capheap * 2 : 4096;
        s->heap = pw_xrealloc(s->heap, s->capheap * sizeof(*s->heap));
    }
    struct ev e = {.t = t, .key = ((uint64_t)prio << PRIO_SHIFT) | order, .a = a, .fn = fn, .type = type};
    size_t i = s->nheap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!ev_less(&e, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static void push_ev(struct sim *s, int64_t t, int prio, enum ev_type type, uint32_t fn, uint64_t a)
{
    heap_push(s, t, prio, ++s->seq, type, fn, a);
}

static struct ev heap_pop(struct sim *s)
{
    struct ev top = s->heap[0];
    struct ev last = s->heap[--s->nheap];
    size_t i = 0, n = s->nheap;
    for (;;) {
        size_t l = 2 * i + 1;
        if (l >= n)
            break;
        size_t m = l + 1 < n && ev_less(&s->heap[l + 1], &s->heap[l]) ? l + 1 : l;
        if (!ev_less(&s->heap[m], &last))
            break;
        s->heap[i] = s->heap[m];
        i = m;
    }
    if (n > 0)
        s->heap[i] = last;
    return top;
}

static int name_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct pfn, hnode)->name, key) == 0;
}

static struct pfn *fn_by_name(struct sim *s, const char *name)
{
    struct pw_hnode *n = pw_htab_find(&s->by_name, pw_hash_str(name), name, name_eq);
    assert(n != NULL);
    return pw_container_of(n, struct pfn, hnode);
}

static uint32_t fn_index(const struct sim *s, const struct pfn *f)
{
    return (uint32_t)(f - s->fns);
}

static double fast_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

/* ---- simulated agents ---- */

static void fatal(const char *what, int rv)
{
    fprintf(stderr, "prewarm-replay: %s: %s\n", what, pw_strerror(rv));
    abort();
}

static void host_event(struct sim_host *h, uint64_t vm_id, enum pw_avm_state st, const char *fn, int32_t restore_ms)
{
    if (h->nevs == h->capevs) {
        h->capevs = h->capevs ? h->capevs * 2 : 64;
        h->evs = pw_xrealloc(h->evs, h->capevs * sizeof(*h->evs));
    }
    struct pw_agent_event *e = &h->evs[h->nevs++];
    memset(e, 0, sizeof(*e));
    e->seq = ++h->seq;
    e->vm_id = vm_id;
    e->state = st;
    pw_strlcpy(e->function, fn, sizeof(e->function));
    e->restore_ms = restore_ms;
    h->dirty = 1;
}

static void alive_change(struct sim *s, struct pfn *f, int delta)
{
    f->alive_area += (int64_t)f->alive * (s->now - f->alive_at);
    f->alive_at = s->now;
    f->alive = (uint32_t)((int64_t)f->alive + delta);
    s->alive_total = (uint64_t)((int64_t)s->alive_total + delta);
}

static void on_answer(struct sim *s, const struct pw_action *a)
{
    if (a->u.answer.err != PW_OK)
        fatal("acquire answered with an error", a->u.answer.err);
    struct slot *sl = &s->slots[a->u.answer.req_id - 1];
    assert(!sl->answered);
    sl->answered = 1;
    sl->lease = a->u.answer.lease.lease_id;
    struct pfn *f = &s->fns[sl->fn];
    if (a->u.answer.lease.cold)
        f->cold++;
    int64_t end = s->now + sl->dur_ms;
    f->exec_ms += (end < s->o->t_end ? end : s->o->t_end) - s->now;
    if (end < s->o->t_end)
        push_ev(s, end, PRIO_END, EV_END, sl->fn, a->u.answer.req_id - 1);
}

static void on_cmd(struct sim *s, const struct pw_action *a)
{
    int hi = a->host[4] - '0';
    assert(hi >= 0 && hi < NHOSTS);
    struct sim_host *h = &s->hosts[hi];
    if (a->u.cmd.id > h->cmd_ack)
        h->cmd_ack = a->u.cmd.id;
    h->dirty = 1;
    struct pfn *f = fn_by_name(s, a->u.cmd.function);
    if (a->u.cmd.type == PW_CMD_PREWARM) {
        alive_change(s, f, +1);
        s->restores++;
        vmap_put(&s->restoring, a->u.cmd.vm_id, (uint8_t)hi);
        push_ev(s, s->now + s->o->restore_ms, PRIO_RESTORED, EV_RESTORED, fn_index(s, f), a->u.cmd.vm_id);
    } else if (a->u.cmd.type == PW_CMD_DESTROY) {
        alive_change(s, f, -1);
        (void)vmap_take(&s->restoring, a->u.cmd.vm_id); /* a restore in progress is cancelled */
        host_event(h, a->u.cmd.vm_id, PW_AVM_GONE, f->name, 0);
    }
}

/* flush_reports sends each simulated agent's pending events and command acknowledgement. */
static void flush_reports(struct sim *s)
{
    for (int i = 0; i < NHOSTS; i++) {
        struct sim_host *h = &s->hosts[i];
        if (!h->dirty)
            continue;
        struct pw_msg_report r;
        memset(&r, 0, sizeof(r));
        pw_strlcpy(r.agent_id, h->id, sizeof(r.agent_id));
        pw_strlcpy(r.boot_id, "replay", sizeof(r.boot_id));
        r.epoch = 1;
        r.cmd_ack = h->cmd_ack;
        r.events = h->evs;
        r.nevents = h->nevs;
        struct pw_msg reply;
        int rv = pw_core_agent_report(s->c, s->now, &r, &reply);
        if (rv != PW_OK || reply.type != PW_MSG_REPLY)
            fatal("simulated agent report refused", rv != PW_OK ? rv : PW_ERR_PROTO);
        pw_msg_fini(&reply);
        h->nevs = 0;
        h->dirty = 0;
    }
}

/* drain executes every action the core queued, feeding the simulated agents' answers back
 * until the core is quiet. */
static void drain(struct sim *s)
{
    for (;;) {
        struct pw_action a;
        while (pw_core_next_action(s->c, &a)) {
            if (a.type == PW_ACT_AGENT_CMD)
                on_cmd(s, &a);
            else if (a.type == PW_ACT_ACQUIRE_ANSWER)
                on_answer(s, &a);
        }
        int dirty = 0;
        for (int i = 0; i < NHOSTS; i++)
            dirty |= s->hosts[i].dirty;
        if (!dirty)
            return;
        flush_reports(s);
    }
}

static void on_restored(struct sim *s, const struct ev *e)
{
    int hi = vmap_take(&s->restoring, e->a);
    if (hi < 0)
        return; /* destroyed while restoring */
    host_event(&s->hosts[hi], e->a, PW_AVM_RUNNING, s->fns[e->fn].name, (int32_t)s->o->restore_ms);
    flush_reports(s);
    drain(s);
}

static void set_dyn(struct sim *s, struct pfn *f, uint32_t floor, int64_t ka)
{
    if (f->dyn_valid && f->dyn_floor == floor && f->dyn_ka == ka)
        return;
    f->dyn_valid = 1;
    f->dyn_floor = floor;
    f->dyn_ka = ka;
    int rv = pw_core_set_dynamic(s->c, s->now, f->name, floor, ka);
    if (rv != PW_OK)
        fatal("set_dynamic", rv);
    drain(s);
}

/* ---- oracle ---- */

static void oracle_push(struct pfn *f, int64_t pt, int delta)
{
    f->a_r += delta;
    if (f->op_len > 0) {
        f->op[(f->op_head + f->op_len - 1) & (f->op_cap - 1)].end = pt;
        while (f->op_len > 0 && f->op[(f->op_head + f->op_len - 1) & (f->op_cap - 1)].v <= f->a_r)
            f->op_len--;
    }
    if (f->op_len == f->op_cap) {
        uint32_t cap = f->op_cap ? f->op_cap * 2 : 8;
        struct opoint *n = pw_xmalloc(cap * sizeof(*n));
        for (uint32_t i = 0; i < f->op_len; i++)
            n[i] = f->op[(f->op_head + i) & (f->op_cap - 1)];
        free(f->op);
        f->op = n;
        f->op_cap = cap;
        f->op_head = 0;
    }
    f->op[(f->op_head + f->op_len++) & (f->op_cap - 1)] = (struct opoint){.s = pt, .end = INT64_MAX, .v = f->a_r};
}

/* oracle_update sets the floor to max in-flight over [now, now + R]. */
static void oracle_update(struct sim *s, struct pfn *f)
{
    while (f->op_len > 1 && f->op[f->op_head].end <= s->now) {
        f->op_head = (f->op_head + 1) & (f->op_cap - 1);
        f->op_len--;
    }
    int32_t w = f->op_len ? f->op[f->op_head].v : 0;
    set_dyn(s, f, (uint32_t)(w > 0 ? w : 0), 0);
}

/* on_oracle applies one oracle event. The floor is set only after every oracle event of this
 * millisecond, so a window that drops and rises again at the same instant never destroys and
 * restores a VM in between. */
static void on_oracle(struct sim *s, const struct ev *e)
{
    struct pfn *f = &s->fns[e->fn];
    if (e->type == EV_ORACLE_POINT)
        oracle_push(f, (int64_t)(e->a / 2), (e->a & 1) ? +1 : -1);
    if (!f->o_dirty) {
        f->o_dirty = 1;
        s->o_dirty[s->no_dirty++] = e->fn;
    }
    if (s->nheap > 0 && s->heap[0].t == s->now && (s->heap[0].key >> PRIO_SHIFT) == PRIO_ORACLE)
        return;
    for (size_t i = 0; i < s->no_dirty; i++) {
        struct pfn *g = &s->fns[s->o_dirty[i]];
        g->o_dirty = 0;
        oracle_update(s, g);
    }
    s->no_dirty = 0;
}

/* oracle_plan schedules the oracle's view of a minute's invocations: each occupies a VM from
 * its arrival a to a + duration (the oracle never has a cold start). Points enter the window R
 * before they happen; the same-time order is by point time, ends before arrivals. */
static void oracle_plan(struct sim *s, const struct replay_arrival *a, size_t n)
{
    int64_t r = s->o->restore_ms;
    for (size_t i = 0; i < n; i++) {
        int64_t e = a[i].t + a[i].dur_ms;
        int64_t ta = a[i].t - r < s->now ? s->now : a[i].t - r;
        heap_push(s, ta, PRIO_ORACLE, (uint64_t)a[i].t * 2 + 1, EV_ORACLE_POINT, a[i].fn, (uint64_t)a[i].t * 2 + 1);
        if (e >= s->o->t_end)
            continue;
        int64_t te = e - r < s->now ? s->now : e - r;
        heap_push(s, te, PRIO_ORACLE, (uint64_t)e * 2, EV_ORACLE_POINT, a[i].fn, (uint64_t)e * 2);
        push_ev(s, e, PRIO_ORACLE, EV_ORACLE_CHECK, a[i].fn, 0);
    }
}

/* ---- hybrid ---- */

static void hybrid_idle(struct sim *s, struct pfn *f)
{
    double t0 = fast_us();
    struct pw_hybrid_windows w;
    pw_hybrid_windows(&f->hy, &s->o->hybrid, &w);
    f->gen++;
    s->policy_us += fast_us() - t0;
    if (w.prewarm_ms == 0) {
        set_dyn(s, f, 0, w.keepalive_ms);
        return;
    }
    set_dyn(s, f, 0, 0);
    push_ev(s, s->now + w.prewarm_ms, PRIO_TIMER, EV_TIMER, fn_index(s, f), (uint64_t)f->gen * 2 + 1);
    push_ev(s, s->now + w.prewarm_ms + w.keepalive_ms, PRIO_TIMER, EV_TIMER, fn_index(s, f), (uint64_t)f->gen * 2);
}

static void on_timer(struct sim *s, const struct ev *e)
{
    struct pfn *f = &s->fns[e->fn];
    if (e->a / 2 != f->gen)
        return; /* the function ran since: this window is void */
    set_dyn(s, f, (uint32_t)(e->a & 1), 0);
}

/* ---- reactive ---- */

static void reactive_eval(struct sim *s)
{
    double t0 = replay_cpu_us();
    size_t k = 0;
    for (size_t i = 0; i < s->nactive; i++) {
        struct pfn *f = &s->fns[s->active[i]];
        uint32_t want = pw_kpa_evaluate(f->kpa, &s->o->kpa, s->now, f->alive);
        set_dyn(s, f, want, 0);
        if (pw_kpa_quiet(f->kpa, s->now))
            f->kpa_listed = 0;
        else
            s->active[k++] = s->active[i];
    }
    s->nactive = k;
    s->policy_us += replay_cpu_us() - t0;
}

/* ---- predictive ---- */

static void predictive_minute(struct sim *s, size_t m)
{
    double t0 = replay_cpu_us();
    if (m > s->o->minute0)
        for (size_t i = 0; i < s->nfns; i++)
            pw_forecaster_observe(s->fc, i, (int64_t)m - 1, s->t->fns[i].minutes[m - 1]);
    int rv = pw_forecaster_tick(s->fc, (int64_t)m, s->targets, NULL);
    if (rv != PW_OK)
        fatal("forecaster tick", rv);
    s->policy_us += replay_cpu_us() - t0;
    for (size_t i = 0; i < s->nfns; i++)
        set_dyn(s, &s->fns[i], s->targets[i], s->grace_ms);
}

/* ---- invocations ---- */

static void on_arrival(struct sim *s, const struct replay_arrival *a)
{
    struct pfn *f = &s->fns[a->fn];
    int64_t active_ka = -1;
    f->inv++;
    if (s->pol->kind == REPLAY_HYBRID && f->inflight == 0) {
        double t0 = fast_us();
        if (f->ever_idle)
            pw_hybrid_observe(&f->hy, &s->o->hybrid, s->now - f->idle_since);
        f->gen++; /* cancels pending windows */
        struct pw_hybrid_windows w;
        pw_hybrid_windows(&f->hy, &s->o->hybrid, &w);
        s->policy_us += fast_us() - t0;
        active_ka = w.keepalive_ms;
    } else if (s->pol->kind == REPLAY_REACTIVE) {
        pw_kpa_request_start(f->kpa, &s->o->kpa, s->now);
        if (!f->kpa_listed) {
            f->kpa_listed = 1;
            s->active[s->nactive++] = a->fn;
        }
    }
    f->inflight++;
    if (s->free_slot == NO_SLOT) {
        if (s->nslots == s->capslots) {
            s->capslots = s->capslots ? s->capslots * 2 : 4096;
            s->slots = pw_xrealloc(s->slots, s->capslots * sizeof(*s->slots));
        }
        s->slots[s->nslots].next_free = NO_SLOT;
        s->free_slot = (uint32_t)s->nslots++;
    }
    uint32_t si = s->free_slot;
    struct slot *sl = &s->slots[si];
    s->free_slot = sl->next_free;
    sl->arrival = s->now;
    sl->fn = a->fn;
    sl->dur_ms = a->dur_ms;
    sl->answered = 0;
    sl->lease = 0;
    int rv = pw_core_acquire(s->c, s->now, f->name, (uint64_t)si + 1, DEADLINE_FAR);
    if (rv != PW_OK)
        fatal("acquire", rv);
    drain(s);
    /* Hybrid: while the function runs its VMs stay loaded (the paper unloads only once the
     * app is idle), so VMs freed during a burst are kept for the keep-alive window. Applied
     * after the acquire, so a shorter window never destroys the VM this arrival takes. */
    if (active_ka >= 0)
        set_dyn(s, f, 0, active_ka);
}

static void on_end(struct sim *s, const struct ev *e)
{
    struct slot *sl = &s->slots[e->a];
    struct pfn *f = &s->fns[sl->fn];
    assert(f->inflight > 0);
    f->inflight--;
    if (s->pol->kind == REPLAY_REACTIVE)
        pw_kpa_request_end(f->kpa, &s->o->kpa, s->now);
    if (f->inflight == 0) {
        f->idle_since = s->now;
        f->ever_idle = 1;
        if (s->pol->kind == REPLAY_HYBRID)
            hybrid_idle(s, f);
    }
    int rv = pw_core_release(s->c, s->now, sl->lease, sl->dur_ms, PW_RELEASE_OK);
    if (rv != PW_OK)
        fatal("release", rv);
    sl->next_free = s->free_slot;
    s->free_slot = (uint32_t)e->a;
    drain(s);
}

static void on_tick(struct sim *s)
{
    s->alive_sum += (double)s->alive_total;
    s->samples++;
    if (s->alive_total > s->peak)
        s->peak = s->alive_total;
    if (s->pol->kind == REPLAY_REACTIVE && (s->now - s->o->t0) % s->o->kpa.eval_ms == 0)
        reactive_eval(s);
    pw_core_tick(s->c, s->now);
    drain(s);
}

static void on_minute(struct sim *s, size_t m)
{
    /* Minute m's arrivals were generated a minute ago; generate m + 1 now. */
    struct replay_arrival *tb = s->cur;
    size_t tc = s->capcur;
    s->cur = s->next;
    s->capcur = s->capnext;
    s->ncur = s->nnext;
    s->icur = 0;
    s->next = tb;
    s->capnext = tc;
    s->nnext = 0;
    if (m + 1 < s->o->minute1) {
        s->nnext = replay_gen_minute(&s->gen, m + 1, &s->next, &s->capnext);
        if (s->pol->kind == REPLAY_ORACLE)
            oracle_plan(s, s->next, s->nnext);
    }
    if (s->pol->kind == REPLAY_PREDICTIVE)
        predictive_minute(s, m);
}

/* ---- setup and the loop ---- */

static int64_t pool_keepalive(const struct replay_policy *p)
{
    return p->kind == REPLAY_KEEPALIVE ? p->keepalive_ms : 0;
}

static void hello_all(struct sim *s)
{
    for (int i = 0; i < NHOSTS; i++) {
        struct sim_host *h = &s->hosts[i];
        snprintf(h->id, sizeof(h->id), "sim-%d", i);
        struct pw_numa_node node;
        memset(&node, 0, sizeof(node));
        node.id = 0;
        pw_strlcpy(node.cpulist, "0", sizeof(node.cpulist));
        node.ncpus = 1;
        /* Effectively unlimited: replay measures pools, not placement. */
        node.mem_total_mb = node.mem_free_mb = 1ULL << 40;
        node.vcpu_total = node.vcpu_free = INT32_MAX / 2;
        struct pw_msg_hello hm;
        memset(&hm, 0, sizeof(hm));
        pw_strlcpy(hm.agent_id, h->id, sizeof(hm.agent_id));
        pw_strlcpy(hm.boot_id, "replay", sizeof(hm.boot_id));
        pw_strlcpy(hm.version, "replay", sizeof(hm.version));
        pw_strlcpy(hm.driver, "sim", sizeof(hm.driver));
        hm.numa = &node;
        hm.nnuma = 1;
        struct pw_msg reply;
        int rv = pw_core_agent_hello(s->c, s->now, &hm, &reply);
        if (rv != PW_OK)
            fatal("simulated agent hello", rv);
        pw_msg_fini(&reply);
    }
    drain(s);
}

static int setup(struct sim *s, char *err, size_t errlen)
{
    const struct replay_opts *o = s->o;
    struct pw_core_config cfg;
    pw_core_config_default(&cfg);
    cfg.epoch = 1;
    cfg.id_base = 1ULL << 40;
    cfg.heartbeat_ms = INT32_MAX; /* simulated agents never die */
    cfg.lease_ttl_ms = INT64_MAX / 4;
    cfg.adopt_grace_ms = 0;
    cfg.lease_notes = 0;
    cfg.max_cmds_per_host = 1u << 24;
    cfg.max_waiters_per_fn = 1u << 30;
    s->now = o->t0;
    s->c = pw_core_new(&cfg, s->now);
    hello_all(s);

    s->fns = pw_xcalloc(s->nfns ? s->nfns : 1, sizeof(*s->fns));
    pw_htab_init(&s->by_name);
    for (size_t i = 0; i < s->nfns; i++) {
        const struct pw_trace_fn *tf = &s->t->fns[i];
        struct pfn *f = &s->fns[i];
        f->name = tf->name;
        f->mem_mb = tf->mem_mb;
        f->alive_at = s->now;
        pw_htab_insert(&s->by_name, &f->hnode, pw_hash_str(f->name));
        struct pw_function_spec spec;
        memset(&spec, 0, sizeof(spec));
        pw_strlcpy(spec.name, tf->name, sizeof(spec.name));
        pw_strlcpy(spec.image, "replay", sizeof(spec.image));
        double mb = floor(tf->mem_mb + 0.5);
        spec.memory_mb = mb < 1 ? 1 : mb > 1048576 ? 1048576 : (uint32_t)mb;
        spec.vcpus = 1;
        pw_pool_policy_default(&spec.pool);
        spec.pool.kind = PW_POLICY_KEEPALIVE;
        spec.pool.min = 0;
        spec.pool.max = o->max_vms;
        spec.pool.keepalive_ms = pool_keepalive(s->pol);
        char why[256] = "";
        int rv = pw_function_spec_validate(&spec, why, sizeof(why));
        if (rv == PW_OK)
            rv = pw_core_function_put(s->c, s->now, &spec);
        if (rv != PW_OK) {
            snprintf(err, errlen, "function %s refused by the core: %s %s", tf->name, pw_strerror(rv), why);
            return -1;
        }
        if (s->pol->kind == REPLAY_HYBRID)
            pw_hybrid_init(&f->hy, &o->hybrid);
        if (s->pol->kind == REPLAY_REACTIVE) {
            f->kpa = pw_xmalloc(sizeof(*f->kpa));
            pw_kpa_init(f->kpa, &o->kpa, s->now);
        }
    }
    drain(s);
    if (s->pol->kind == REPLAY_ORACLE)
        s->o_dirty = pw_xmalloc((s->nfns ? s->nfns : 1) * sizeof(*s->o_dirty));
    if (s->pol->kind == REPLAY_REACTIVE)
        s->active = pw_xmalloc((s->nfns ? s->nfns : 1) * sizeof(*s->active));
    if (s->pol->kind == REPLAY_PREDICTIVE) {
        if (o->model_path != NULL) {
            int rv = pw_model_load(o->model_path, &s->model);
            if (rv != PW_OK) {
                snprintf(err, errlen, "predictive: cannot load model %s: %s", o->model_path, pw_strerror(rv));
                return -1;
            }
        }
        struct pw_fn_static *st = pw_xcalloc(s->nfns ? s->nfns : 1, sizeof(*st));
        for (size_t i = 0; i < s->nfns; i++) {
            st[i].dur_ms = s->t->fns[i].dur_avg_ms;
            st[i].mem_mb = s->t->fns[i].mem_mb;
        }
        struct pw_forecast_params fp;
        pw_forecast_params_default(&fp);
        fp.quantile = s->pol->quantile >= 0 ? s->pol->quantile : o->quantile;
        fp.restore_ms = (double)o->restore_ms;
        fp.max_target = o->max_vms;
        s->grace_ms = s->pol->grace_ms >= 0 ? s->pol->grace_ms : o->grace_ms;
        fp.keep_one_cost = s->pol->keep_one_cost >= 0 ? s->pol->keep_one_cost : o->keep_one_cost;
        s->fc = pw_forecaster_new(s->nfns, st, s->model, &fp);
        /* A window that starts late in the trace: the forecaster may know the trace's past (as
         * prewarmd knows its own history), never its future. */
        size_t from = o->minute0 > PW_HISTORY_MINUTES ? o->minute0 - PW_HISTORY_MINUTES : 0;
        for (size_t m = from; m < o->minute0; m++)
            for (size_t i = 0; i < s->nfns; i++)
                pw_forecaster_observe(s->fc, i, (int64_t)m, s->t->fns[i].minutes[m]);
        free(st);
        s->targets = pw_xcalloc(s->nfns ? s->nfns : 1, sizeof(*s->targets));
    }
    s->free_slot = NO_SLOT;
    replay_gen_init(&s->gen, s->t, s->nfns, o->seed, o->spread_start);
    /* Minute A and A + 1 ahead; on_minute(A) shifts them into place. */
    s->nnext = replay_gen_minute(&s->gen, o->minute0, &s->next, &s->capnext);
    if (s->pol->kind == REPLAY_ORACLE)
        oracle_plan(s, s->next, s->nnext);
    return 0;
}

static void teardown(struct sim *s)
{
    for (size_t i = 0; i < s->nfns; i++) {
        if (s->fns[i].hy.bins != NULL)
            pw_hybrid_fini(&s->fns[i].hy);
        free(s->fns[i].kpa);
        free(s->fns[i].op);
    }
    for (int i = 0; i < NHOSTS; i++)
        free(s->hosts[i].evs);
    free(s->fns);
    pw_htab_fini(&s->by_name);
    free(s->heap);
    free(s->slots);
    free(s->restoring.keys);
    free(s->restoring.vals);
    free(s->active);
    free(s->o_dirty);
    free(s->targets);
    pw_forecaster_free(s->fc);
    pw_model_free(s->model);
    replay_gen_fini(&s->gen);
    free(s->cur);
    free(s->next);
    pw_core_free(s->c);
}

/* The loop's event sources, merged by (time, priority). */
enum src { SRC_HEAP, SRC_ARRIVAL, SRC_MINUTE, SRC_TICK, SRC_NONE };

static void run_loop(struct sim *s)
{
    const struct replay_opts *o = s->o;
    size_t minute = o->minute0;
    int64_t next_minute = o->t0, next_tick = o->t0 + 1000;
    for (;;) {
        enum src best = SRC_NONE;
        int64_t bt = INT64_MAX;
        uint64_t bp = UINT64_MAX;
#define CONSIDER(src_, t_, p_)                                          \
        do {                                                             \
            int64_t tt_ = (t_);                                          \
            uint64_t pp_ = (p_);                                         \
            if (tt_ < bt || (tt_ == bt && pp_ < bp)) {                   \
                best = (src_);                                           \
                bt = tt_;                                                \
                bp = pp_;                                                \
            }                                                            \
        } while (0)
        if (s->nheap > 0)
            CONSIDER(SRC_HEAP, s->heap[0].t, s->heap[0].key);
        if (s->icur < s->ncur)
            CONSIDER(SRC_ARRIVAL, s->cur[s->icur].t, (uint64_t)PRIO_ARRIVAL << PRIO_SHIFT);
        if (minute < o->minute1)
            CONSIDER(SRC_MINUTE, next_minute, (uint64_t)PRIO_MINUTE << PRIO_SHIFT);
        CONSIDER(SRC_TICK, next_tick, (uint64_t)PRIO_TICK << PRIO_SHIFT);
#undef CONSIDER
        if (bt >= o->t_end)
            break;
        s->now = bt;
        switch (best) {
        case SRC_HEAP: {
            struct ev e = heap_pop(s);
            switch ((enum ev_type)e.type) {
            case EV_END: on_end(s, &e); break;
            case EV_RESTORED: on_restored(s, &e); break;
            case EV_ORACLE_POINT:
            case EV_ORACLE_CHECK: on_oracle(s, &e); break;
            case EV_TIMER: on_timer(s, &e); break;
            }
            break;
        }
        case SRC_ARRIVAL: on_arrival(s, &s->cur[s->icur++]); break;
        case SRC_MINUTE:
            on_minute(s, minute);
            minute++;
            next_minute += 60000;
            break;
        case SRC_TICK:
            on_tick(s);
            next_tick += 1000;
            break;
        case SRC_NONE: return;
        }
    }
}

static void finish(struct sim *s, struct replay_result *out)
{
    const struct replay_opts *o = s->o;
    uint64_t *inv = pw_xcalloc(s->nfns ? s->nfns : 1, sizeof(*inv));
    uint64_t *cold = pw_xcalloc(s->nfns ? s->nfns : 1, sizeof(*cold));
    double waste_mb_ms = 0;
    for (size_t i = 0; i < s->nfns; i++) {
        struct pfn *f = &s->fns[i];
        s->now = o->t_end;
        alive_change(s, f, 0);
        waste_mb_ms += (double)(f->alive_area - f->exec_ms) * f->mem_mb;
        inv[i] = f->inv;
        cold[i] = f->cold;
        out->invocations += f->inv;
    }
    /* Invocations still parked at the end arrived with no idle VM: cold. Slots on the free
     * list are done; the others are in use, and the unanswered among them are parked. */
    uint8_t *freed = pw_xcalloc(s->nslots ? s->nslots : 1, 1);
    for (uint32_t k = s->free_slot; k != NO_SLOT; k = s->slots[k].next_free)
        freed[k] = 1;
    for (size_t i = 0; i < s->nslots; i++)
        if (!freed[i] && !s->slots[i].answered)
            cold[s->slots[i].fn]++;
    free(freed);
    for (size_t i = 0; i < s->nfns; i++)
        out->cold += cold[i];
    if (o->per_fn_path != NULL) {
        /* One file per policy: the policy's label is appended to the name. */
        char path[1024];
        snprintf(path, sizeof(path), "%s.%s.csv", o->per_fn_path, s->pol->label);
        FILE *pf = fopen(path, "w");
        if (pf != NULL) {
            fprintf(pf, "function,invocations,cold,mem_mb,waste_gb_s,exec_s,alive_vm_s\n");
            for (size_t i = 0; i < s->nfns; i++) {
                const struct pfn *f = &s->fns[i];
                fprintf(pf, "%s,%llu,%llu,%.0f,%.3f,%.3f,%.3f\n", f->name, (unsigned long long)inv[i],
                        (unsigned long long)cold[i], f->mem_mb,
                        (double)(f->alive_area - f->exec_ms) * f->mem_mb / 1024.0 / 1000.0, (double)f->exec_ms / 1000.0,
                        (double)f->alive_area / 1000.0);
            }
            fclose(pf);
        }
    }
    out->cold_pct = out->invocations ? 100.0 * (double)out->cold / (double)out->invocations : 0;
    replay_fn_percentiles(out, inv, cold, s->nfns);
    out->waste_gbs = waste_mb_ms / 1024.0 / 1000.0;
    out->mean_vms = s->samples ? s->alive_sum / (double)s->samples : 0;
    out->peak_vms = s->peak;
    out->restores = s->restores;
    double secs = (double)(o->t_end - o->t0) / 1000.0;
    out->policy_us_per_tick = s->pol->kind == REPLAY_ORACLE ? NAN : s->policy_us / secs;
    free(inv);
    free(cold);
}

int replay_pool_run(const struct pw_trace *t, const struct replay_opts *o, const struct replay_policy *pol,
                    struct replay_result *out, char *err, size_t errlen)
{
    double w0 = replay_wall_s();
    struct sim *s = pw_xcalloc(1, sizeof(*s));
    s->o = o;
    s->pol = pol;
    s->t = t;
    s->nfns = o->nfns;
    memset(out, 0, sizeof(*out));
    out->policy = *pol;
    int rv = setup(s, err, errlen);
    if (rv == 0) {
        run_loop(s);
        finish(s, out);
    }
    teardown(s);
    free(s);
    out->wall_s = replay_wall_s() - w0;
    return rv;
}
