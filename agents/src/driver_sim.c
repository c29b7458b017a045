/* driver_sim.c — the "sim" VMM driver: a SIMULATOR, not a hypervisor. It runs no guest and
 * opens no port. It models what the scheduler can observe of a host: restore latency (a
 * configurable time with seeded jitter), per-NUMA-node memory and vCPU accounting, stop time,
 * injected restore failures, and local golden snapshots. Each VM is a uv timer on the agent's
 * loop; its object is freed only in the timer's close callback. With sim_process, each VM also
 * has a real placeholder process, bound to the VM's NUMA node, so that bindings can be seen. */
#include "pw/agent_config.h"
#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/numabind.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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
    pid_t pid;           /* placeholder process (sim_process), 0 when none or reaped */
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
    int process; /* sim_process: one placeholder process per VM */
    /* Functions with a golden snapshot "on disk": the configured ones and every function
     * prewarmed once. Ascending, no duplicates, at most PW_PROTO_MAX_SNAPSHOTS. */
    char (*snaps)[PW_NAME_MAX];
    size_t nsnaps;
    int snaps_full_warned;
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
        free(s->snaps);
        free(s);
    }
}

/* ---- golden snapshots ---- */

/* snapshot_add records that fn now has a golden snapshot on this (simulated) host. */
static void snapshot_add(struct sim *s, const char *fn)
{
    size_t lo = 0, hi = s->nsnaps;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->snaps[mid], fn);
        if (c == 0)
            return;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (s->nsnaps == PW_PROTO_MAX_SNAPSHOTS) {
        if (!s->snaps_full_warned)
            pw_log_warn(SIM_COMP, "%d golden snapshots: no more are listed (%s is not)",
                        PW_PROTO_MAX_SNAPSHOTS, fn);
        s->snaps_full_warned = 1;
        return;
    }
    memmove(s->snaps[lo + 1], s->snaps[lo], (s->nsnaps - lo) * sizeof(s->snaps[0]));
    pw_strlcpy(s->snaps[lo], fn, sizeof(s->snaps[lo]));
    s->nsnaps++;
}

/* ---- placeholder processes (sim_process) ---- */

/* close_from closes every descriptor >= lowfd. */
static void close_from(int lowfd)
{
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0)
        return;
    long max = sysconf(_SC_OPEN_MAX); /* a plain getrlimit in glibc: fine after fork */
    for (long fd = lowfd; fd < (max > 0 && max < 65536 ? max : 65536); fd++)
        close((int)fd);
}

/* placeholder_child is the child side of a placeholder: it dies with the agent, drops what it
 * inherited (signal handlers, blocked signals, descriptors), applies the binding, reports the
 * outcome on fd ('b' bound, 'u' unbound, 'f' binding failed, then the reason), and waits to be
 * killed. The agent is multi-threaded, so only system calls and async-signal-safe functions run
 * here. Never returns. */
static void placeholder_child(int fd, pid_t agent, const char *name,
                              const struct pw_numabind *bind)
{
    char why[PW_ERRMSG_MAX] = "";
    char status = 'u';
    /* Raw prctl: a sanitizer's wrapper may take a lock that another agent thread held at fork. */
    syscall(SYS_prctl, PR_SET_PDEATHSIG, (unsigned long)SIGKILL, 0UL, 0UL, 0UL);
    if (getppid() != agent) /* the agent died before prctl took effect */
        _exit(0);
    syscall(SYS_prctl, PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        sigaction(sig, &dfl, NULL); /* SIGKILL, SIGSTOP and libc's own ones refuse: fine */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
    }
    if (bind != NULL)
        status = pw_numabind_self(bind, why, sizeof(why)) == PW_OK ? 'b' : 'f';
    ssize_t ignored = write(fd, &status, 1);
    ignored = write(fd, why, strlen(why));
    (void)ignored;
    close_from(3); /* fd included: the agent reads up to end of file */
    for (;;)
        pause();
}

/* placeholder_reap kills and reaps the VM's placeholder process, if any. SIGKILL ends a
 * pause()d process at once, so the wait is short. */
static void placeholder_reap(struct sim_vm *vm)
{
    if (vm->pid <= 0)
        return;
    kill(vm->pid, SIGKILL);
    int st;
    while (waitpid(vm->pid, &st, 0) < 0 && errno == EINTR)
        ;
    pw_log_debug(SIM_COMP, "vm %llu: placeholder process %d reaped", (unsigned long long)vm->vm_id,
                 (int)vm->pid);
    vm->pid = 0;
}

/* placeholder_start forks the VM's placeholder process bound by bind (NULL: unbound) and waits
 * for the child to say whether the binding took. A binding that fails leaves the process
 * running unbound, with a warning. Returns PW_OK or PW_ERR_UNAVAIL (nothing left running). */
static int placeholder_start(struct sim_vm *vm, const struct pw_numabind *bind,
                             const char *unbound_why, char *errbuf, size_t errlen)
{
    char name[16], cpus[256] = "";
    snprintf(name, sizeof(name), "pw-sim-%llu", (unsigned long long)vm->vm_id);
    if (bind != NULL)
        pw_numabind_format_cpus(&bind->cpus, cpus, sizeof(cpus));
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        pw_errf(errbuf, errlen, "placeholder process: pipe: %s", strerror(errno));
        return PW_ERR_UNAVAIL;
    }
    pid_t agent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int err = errno;
        close(pfd[0]);
        close(pfd[1]);
        pw_errf(errbuf, errlen, "placeholder process: fork: %s", strerror(err));
        return PW_ERR_UNAVAIL;
    }
    if (pid == 0)
        placeholder_child(pfd[1], agent, name, bind);
    close(pfd[1]);
    char msg[1 + PW_ERRMSG_MAX];
    size_t got = 0;
    for (;;) {
        ssize_t n = read(pfd[0], msg + got, sizeof(msg) - 1 - got);
        if (n > 0 && (got += (size_t)n) < sizeof(msg) - 1)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    close(pfd[0]);
    msg[got] = '\0';
    vm->pid = pid;
    if (got == 0) {
        placeholder_reap(vm);
        pw_errf(errbuf, errlen, "placeholder process %d exited at start", (int)pid);
        return PW_ERR_UNAVAIL;
    }
    if (msg[0] == 'b')
        pw_log_info(SIM_COMP, "vm %llu: placeholder process %d bound to CPUs %s, memory node %d",
                    (unsigned long long)vm->vm_id, (int)pid, cpus, bind->node);
    else if (msg[0] == 'f')
        pw_log_warn(SIM_COMP, "vm %llu: placeholder process %d runs unbound: binding to node %d "
                    "failed: %s",
                    (unsigned long long)vm->vm_id, (int)pid, bind->node, msg + 1);
    else
        pw_log_warn(SIM_COMP, "vm %llu: placeholder process %d runs unbound: %s",
                    (unsigned long long)vm->vm_id, (int)pid, unbound_why);
    return PW_OK;
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
    placeholder_reap(vm);
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
    s->process = cfg->sim_process;
    if (s->restore_ms < 0 || s->jitter_ms < 0 || s->stop_max_ms < 0 || s->fail_rate < 0 ||
        s->fail_rate > 1 || cfg->nsim_snapshots > PW_AGENT_SIM_SNAPSHOTS_MAX) {
        pw_errf(errbuf, errlen, "sim: parameters out of range");
        pw_htab_fini(&s->vms);
        free(s);
        return PW_ERR_INVAL;
    }
    s->snaps = pw_xcalloc(PW_PROTO_MAX_SNAPSHOTS, sizeof(*s->snaps));
    for (size_t i = 0; i < cfg->nsim_snapshots; i++) {
        if (!pw_name_valid(cfg->sim_snapshots[i])) {
            pw_errf(errbuf, errlen, "sim: snapshot %zu is not a valid function name", i);
            pw_htab_fini(&s->vms);
            free(s->snaps);
            free(s);
            return PW_ERR_INVAL;
        }
        snapshot_add(s, cfg->sim_snapshots[i]);
    }
    s->nnodes = d->topo->nnodes;
    for (size_t i = 0; i < s->nnodes; i++) {
        s->cap_mb[i] = d->topo->nodes[i].mem_free_mb;
        s->cap_vcpus[i] = d->topo->nodes[i].vcpu_total;
    }
    d->impl = s;
    pw_log_info(SIM_COMP,
                "simulated VMM: restore %lld ms +/- %lld ms, stop 0..%lld ms, fail rate %g, "
                "seed %llu, %zu golden snapshot(s) (no real VMs are started%s)",
                (long long)s->restore_ms, (long long)s->jitter_ms, (long long)s->stop_max_ms,
                s->fail_rate, (unsigned long long)cfg->sim_seed, s->nsnaps,
                s->process ? "; one placeholder process per VM" : "");
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
        placeholder_reap(vm);
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

static int sim_prewarm(struct pw_driver *d, const struct pw_cmd *cmd,
                       const struct pw_numabind *bind, int32_t *numa_node, char *errbuf,
                       size_t errlen)
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
    if (s->process) {
        /* The agent binds only a node it was told; a node picked here is bound here. */
        struct pw_numabind picked;
        char why[PW_ERRMSG_MAX];
        pw_errf(why, sizeof(why), "no binding for node %d on this machine (see the agent's "
                "warning)", node);
        if (bind == NULL && cmd->numa_node < 0 &&
            pw_numabind_for_node(&picked, d->topo, node, why, sizeof(why)) == PW_OK)
            bind = &picked;
        int rv = placeholder_start(vm, bind, why, errbuf, errlen);
        if (rv != PW_OK) {
            free(vm);
            return rv;
        }
    }
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
    if (pw_name_valid(cmd->function))
        snapshot_add(s, cmd->function); /* a first restore leaves a golden snapshot behind */
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

static size_t sim_snapshots(struct pw_driver *d, char (*out)[PW_NAME_MAX], size_t max)
{
    struct sim *s = d->impl;
    size_t n = PW_MIN(s->nsnaps, max);
    memcpy(out, s->snaps, n * sizeof(s->snaps[0]));
    return n;
}

/* sim_snapshot: a simulated golden snapshot exists at once. */
static int sim_snapshot(struct pw_driver *d, const struct pw_cmd *cmd, char *errbuf, size_t errlen)
{
    (void)errbuf;
    (void)errlen;
    snapshot_add(d->impl, cmd->function);
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
               "stop time, injected failures and golden snapshots",
    .init = sim_init,
    .fini = sim_fini,
    .prewarm = sim_prewarm,
    .destroy = sim_destroy,
    .usage = sim_usage,
    .snapshots = sim_snapshots,
    .snapshot = sim_snapshot,
};
