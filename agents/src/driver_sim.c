/* driver_sim.c — the "sim" VMM driver: a SIMULATOR, not a hypervisor. It runs no guest and
 * opens no port. It models what the scheduler can observe of a host: restore latency (a
 * configurable time with seeded jitter), per-NUMA-node memory and vCPU accounting, stop time,
 * and injected restore failures. Each VM is a uv timer on the agent's loop; its object is freed
 * only in the timer's close callback. */
#include "pw/agent_config.h"
#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_COMP "sim"
#define SIM_PORT_BASE 20000u
#define SIM_PORT_SPAN 40000u

/* States of a simulated VM. */
#define SIM_STATE_MAP(X)                                                  \
    X(RESTORING, "restoring") /* restore timer armed */                    \
    X(RUNNING, "running")     /* restored; holds its memory and vCPUs */   \
    X(STOPPING, "stopping")   /* stop timer armed; still holds resources */ \
    X(CLOSING, "closing")     /* released, out of the table, handle closing */

enum sim_state {
#define SIM_ENUM(n, s) SIM_##n,
    SIM_STATE_MAP(SIM_ENUM)
#undef SIM_ENUM
};

static const char *const sim_state_names[] = {
#define SIM_STR(n, s) s,
    SIM_STATE_MAP(SIM_STR)
#undef SIM_STR
};

struct sim;

struct sim_vm {
    struct pw_hnode hnode; /* in sim.vms, keyed by vm_id, until CLOSING */
    struct sim *sim;
    uint64_t vm_id;
    enum sim_state state;
    int32_t node;
    uint32_t memory_mb;
    uint32_t vcpus;
    int will_fail;       /* failure injection decided at prewarm */
    uint64_t started_ms; /* loop time when the restore began */
    uv_timer_t timer;    /* restore or stop timer; freed with the VM in its close callback */
};

struct sim {
    struct pw_driver *d;
    uv_loop_t *loop;
    struct pw_htab vms;
    size_t live; /* VM objects not yet freed (including CLOSING ones) */
    int finishing;
    uint64_t rng;
    int64_t restore_ms, jitter_ms, stop_max_ms;
    double fail_rate;
    size_t nnodes;
    uint64_t cap_mb[PW_PROTO_MAX_NUMA]; /* memory the sim offers: MemFree at start */
    uint64_t used_mb[PW_PROTO_MAX_NUMA];
    int32_t cap_vcpus[PW_PROTO_MAX_NUMA];
    int32_t used_vcpus[PW_PROTO_MAX_NUMA];
};

/* splitmix64: small, seedable, good enough for jitter and failure draws. */
static uint64_t sim_rand(struct sim *s)
{
    uint64_t z = (s->rng += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static double sim_rand01(struct sim *s) { return (double)(sim_rand(s) >> 11) * 0x1.0p-53; }

static int vm_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct sim_vm, hnode)->vm_id == *(const uint64_t *)key;
}

static struct sim_vm *vm_find(struct sim *s, uint64_t vm_id)
{
    struct pw_hnode *n = pw_htab_find(&s->vms, pw_hash_u64(vm_id), &vm_id, vm_eq);
    return n != NULL ? pw_container_of(n, struct sim_vm, hnode) : NULL;
}

/* vm_set_state is the only place a VM changes state. */
static void vm_set_state(struct sim_vm *vm, enum sim_state to)
{
    static const unsigned char legal[4][4] = {
        /* to:          RESTORING RUNNING STOPPING CLOSING */
        [SIM_RESTORING] = {0, 1, 1, 1},
        [SIM_RUNNING] = {0, 0, 1, 1}, /* -> CLOSING: forced by fini */
        [SIM_STOPPING] = {0, 0, 0, 1},
        [SIM_CLOSING] = {0, 0, 0, 0},
    };
    if (!legal[vm->state][to]) {
        pw_log_error(SIM_COMP, "vm %llu: illegal transition %s -> %s",
                     (unsigned long long)vm->vm_id, sim_state_names[vm->state],
                     sim_state_names[to]);
        abort();
    }
    pw_log_debug(SIM_COMP, "vm %llu: %s -> %s", (unsigned long long)vm->vm_id,
                 sim_state_names[vm->state], sim_state_names[to]);
    vm->state = to;
}

static void sim_maybe_free(struct sim *s)
{
    if (s->finishing && s->live == 0) {
        pw_htab_fini(&s->vms);
        free(s);
    }
}

static void on_vm_closed(uv_handle_t *h)
{
    struct sim_vm *vm = pw_container_of((uv_timer_t *)(void *)h, struct sim_vm, timer);
    struct sim *s = vm->sim;
    free(vm);
    s->live--;
    sim_maybe_free(s);
}

/* vm_release returns the VM's resources, takes it out of the table and closes its handle. */
static void vm_release(struct sim_vm *vm)
{
    struct sim *s = vm->sim;
    s->used_mb[vm->node] -= vm->memory_mb;
    s->used_vcpus[vm->node] -= (int32_t)vm->vcpus;
    pw_htab_remove(&s->vms, &vm->hnode);
    vm_set_state(vm, SIM_CLOSING);
    uv_close((uv_handle_t *)&vm->timer, on_vm_closed);
}

static void emit(struct sim *s, uint64_t vm_id, enum pw_avm_state state, int32_t restore_ms,
                 const char *address, const char *error)
{
    struct pw_driver_event ev = {
        .vm_id = vm_id,
        .state = state,
        .restore_ms = restore_ms,
        .address = address,
        .error = error,
    };
    s->d->event_cb(s->d, &ev, s->d->event_arg);
}

static void restore_done(struct sim_vm *vm)
{
    struct sim *s = vm->sim;
    uint64_t id = vm->vm_id;
    if (vm->will_fail) {
        char why[PW_ERRMSG_MAX];
        snprintf(why, sizeof(why), "injected restore failure (sim, --sim-fail-rate)");
        vm_release(vm);
        emit(s, id, PW_AVM_FAILED, 0, NULL, why);
        return;
    }
    vm_set_state(vm, SIM_RUNNING);
    char addr[64];
    /* A made-up address so callers have something to show: nothing listens there. */
    snprintf(addr, sizeof(addr), "127.0.0.1:%u",
             SIM_PORT_BASE + (unsigned)(id % SIM_PORT_SPAN));
    int64_t took = (int64_t)(uv_now(s->loop) - vm->started_ms);
    emit(s, id, PW_AVM_RUNNING, (int32_t)PW_MIN(took, INT32_MAX), addr, NULL);
}

static void stop_done(struct sim_vm *vm)
{
    struct sim *s = vm->sim;
    uint64_t id = vm->vm_id;
    vm_release(vm);
    emit(s, id, PW_AVM_GONE, 0, NULL, NULL);
}

static void on_vm_timer(uv_timer_t *t)
{
    struct sim_vm *vm = pw_container_of(t, struct sim_vm, timer);
    if (vm->state == SIM_RESTORING)
        restore_done(vm);
    else if (vm->state == SIM_STOPPING)
        stop_done(vm);
}

static int sim_init(struct pw_driver *d, uv_loop_t *loop, const struct pw_agent_config *cfg,
                    char *errbuf, size_t errlen)
{
    struct sim *s = pw_xcalloc(1, sizeof(*s));
    s->d = d;
    s->loop = loop;
    pw_htab_init(&s->vms);
    s->rng = cfg->sim_seed;
    s->restore_ms = cfg->sim_restore_ms;
    s->jitter_ms = cfg->sim_jitter_ms;
    s->stop_max_ms = cfg->sim_stop_max_ms;
    s->fail_rate = cfg->sim_fail_rate;
    if (s->restore_ms < 0 || s->jitter_ms < 0 || s->stop_max_ms < 0 || s->fail_rate < 0 ||
        s->fail_rate > 1) {
        pw_errf(errbuf, errlen, "sim: parameters out of range");
        pw_htab_fini(&s->vms);
        free(s);
        return PW_ERR_INVAL;
    }
    s->nnodes = d->topo->nnodes;
    for (size_t i = 0; i < s->nnodes; i++) {
        s->cap_mb[i] = d->topo->nodes[i].mem_free_mb;
        s->cap_vcpus[i] = d->topo->nodes[i].vcpu_total;
    }
    d->impl = s;
    pw_log_info(SIM_COMP,
                "simulated VMM: restore %lld ms +/- %lld ms, stop 0..%lld ms, fail rate %g, "
                "seed %llu (no real VMs are started)",
                (long long)s->restore_ms, (long long)s->jitter_ms, (long long)s->stop_max_ms,
                s->fail_rate, (unsigned long long)cfg->sim_seed);
    return PW_OK;
}

static void sim_fini(struct pw_driver *d)
{
    struct sim *s = d->impl;
    if (s == NULL)
        return;
    d->impl = NULL;
    s->finishing = 1;
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&s->vms, &bucket, &it)) != NULL) {
        struct sim_vm *vm = pw_container_of(n, struct sim_vm, hnode);
        s->used_mb[vm->node] -= vm->memory_mb;
        s->used_vcpus[vm->node] -= (int32_t)vm->vcpus;
        pw_htab_remove(&s->vms, n);
        vm_set_state(vm, SIM_CLOSING);
        uv_close((uv_handle_t *)&vm->timer, on_vm_closed);
    }
    sim_maybe_free(s);
}

/* fits tells whether a node has room for mem and vcpus. */
static int fits(const struct sim *s, size_t node, uint32_t mem, uint32_t vcpus)
{
    return s->used_mb[node] + mem <= s->cap_mb[node] &&
           (int64_t)s->used_vcpus[node] + vcpus <= (int64_t)s->cap_vcpus[node];
}

static int sim_prewarm(struct pw_driver *d, const struct pw_cmd *cmd, int32_t *numa_node,
                       char *errbuf, size_t errlen)
{
    struct sim *s = d->impl;
    if (vm_find(s, cmd->vm_id) != NULL) {
        pw_errf(errbuf, errlen, "vm %llu already exists", (unsigned long long)cmd->vm_id);
        return PW_ERR_EXISTS;
    }
    int32_t node = cmd->numa_node;
    if (node < 0) {
        /* The driver picks: the node with the most free memory that fits the whole VM. */
        uint64_t best_free = 0;
        for (size_t i = 0; i < s->nnodes; i++) {
            uint64_t free_mb = s->cap_mb[i] - s->used_mb[i];
            if (fits(s, i, cmd->memory_mb, cmd->vcpus) && (node < 0 || free_mb > best_free)) {
                node = (int32_t)i;
                best_free = free_mb;
            }
        }
        if (node < 0) {
            pw_errf(errbuf, errlen, "no node has room for %u MB and %u vCPUs", cmd->memory_mb,
                    cmd->vcpus);
            return PW_ERR_NOCAP;
        }
    } else if ((size_t)node >= s->nnodes) {
        pw_errf(errbuf, errlen, "no NUMA node %d on this host", node);
        return PW_ERR_INVAL;
    }
    if (s->used_mb[node] + cmd->memory_mb > s->cap_mb[node]) {
        pw_errf(errbuf, errlen, "no memory on node %d (%u MB asked, %llu MB free)", node,
                cmd->memory_mb, (unsigned long long)(s->cap_mb[node] - s->used_mb[node]));
        return PW_ERR_NOCAP;
    }
    if ((int64_t)s->used_vcpus[node] + cmd->vcpus > (int64_t)s->cap_vcpus[node]) {
        pw_errf(errbuf, errlen, "no vCPUs on node %d (%u asked, %d free)", node, cmd->vcpus,
                s->cap_vcpus[node] - s->used_vcpus[node]);
        return PW_ERR_NOCAP;
    }

    struct sim_vm *vm = pw_xcalloc(1, sizeof(*vm));
    vm->sim = s;
    vm->vm_id = cmd->vm_id;
    vm->state = SIM_RESTORING;
    vm->node = node;
    vm->memory_mb = cmd->memory_mb;
    vm->vcpus = cmd->vcpus;
    vm->will_fail = s->fail_rate > 0 && sim_rand01(s) < s->fail_rate;
    int64_t delay = s->restore_ms;
    if (s->jitter_ms > 0)
        delay += (int64_t)(sim_rand(s) % (uint64_t)(2 * s->jitter_ms + 1)) - s->jitter_ms;
    if (delay < 0)
        delay = 0;
    uv_update_time(s->loop);
    vm->started_ms = uv_now(s->loop);
    uv_timer_init(s->loop, &vm->timer);
    uv_timer_start(&vm->timer, on_vm_timer, (uint64_t)delay, 0);
    s->used_mb[node] += vm->memory_mb;
    s->used_vcpus[node] += (int32_t)vm->vcpus;
    pw_htab_insert(&s->vms, &vm->hnode, pw_hash_u64(vm->vm_id));
    s->live++;
    *numa_node = node;
    pw_log_debug(SIM_COMP, "vm %llu: restoring %s on node %d in %lld ms%s",
                 (unsigned long long)vm->vm_id, cmd->function, node, (long long)delay,
                 vm->will_fail ? " (will fail)" : "");
    return PW_OK;
}

static int sim_destroy(struct pw_driver *d, uint64_t vm_id)
{
    struct sim *s = d->impl;
    struct sim_vm *vm = vm_find(s, vm_id);
    if (vm == NULL)
        return PW_ERR_NOTFOUND;
    if (vm->state == SIM_STOPPING)
        return PW_OK;
    uv_timer_stop(&vm->timer);
    vm_set_state(vm, SIM_STOPPING);
    uint64_t delay = s->stop_max_ms > 0 ? sim_rand(s) % (uint64_t)(s->stop_max_ms + 1) : 0;
    uv_timer_start(&vm->timer, on_vm_timer, delay, 0);
    return PW_OK;
}

static void sim_usage(struct pw_driver *d, struct pw_numa_node *nodes, size_t n)
{
    struct sim *s = d->impl;
    for (size_t i = 0; i < n && i < s->nnodes; i++) {
        nodes[i].mem_free_mb = s->cap_mb[i] - s->used_mb[i];
        nodes[i].vcpu_free = s->cap_vcpus[i] - s->used_vcpus[i];
    }
}

const struct pw_driver_ops pw_driver_sim = {
    .name = "sim",
    .summary = "simulator: no real VMs; models restore time, NUMA memory/vCPU accounting, "
               "stop time and injected failures",
    .init = sim_init,
    .fini = sim_fini,
    .prewarm = sim_prewarm,
    .destroy = sim_destroy,
    .usage = sim_usage,
};
