/* agent.c — the node agent's core: one libuv loop owns the VM inventory, the event outbox, the
 * driver and the NNG req link to the scheduler. NNG completions arrive on NNG threads; they are
 * queued under a mutex and handled on the loop, so no state is shared across threads. */
#include "pw/agent.h"

#include "agent_metrics.h"

#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/numabind.h"
#include "pw/proto.h"
#include "pw/tlsid.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define AGENT_COMP "agent"
#define LINK_COMP "link"
#define HEARTBEAT_MIN_MS 100
#define HEARTBEAT_MAX_MS (10 * 60 * 1000)
#define RESEND_NEVER_MS (24 * 3600 * 1000) /* we retry ourselves; req0 must not */

/* States of the link to the scheduler. Exactly one request is outstanding in SENDING and
 * RECEIVING; the aio is idle otherwise. */
#define LINK_STATE_MAP(X)                                                      \
    X(IDLE, "idle")           /* no request: not started, or backing off */     \
    X(SENDING, "sending")     /* the aio carries the request to a pipe */       \
    X(RECEIVING, "receiving") /* the aio waits for the reply (the long poll) */ \
    X(CLOSED, "closed")       /* shutting down; nothing more is sent */

enum link_state {
#define LINK_ENUM(n, s) LINK_##n,
    LINK_STATE_MAP(LINK_ENUM)
#undef LINK_ENUM
};

static const char *const link_state_names[] = {
#define LINK_STR(n, s) s,
    LINK_STATE_MAP(LINK_STR)
#undef LINK_STR
};

/* What the agent knows of a topology node's NUMA binding (made at its first prewarm). */
enum bind_state {
    BIND_UNKNOWN = 0, /* not tried yet */
    BIND_OK,          /* pw_agent.binds[i] is usable */
    BIND_NONE,        /* cannot be bound on this machine (logged once) */
};

/* One VM as the agent reports it. The driver holds its own object for the same vm_id. */
struct agent_vm {
    struct pw_hnode hnode; /* in pw_agent.vms by vm_id */
    uint64_t vm_id;
    char function[PW_NAME_MAX];
    enum pw_avm_state state; /* RESTORING, RUNNING or STOPPING */
    int32_t numa_node;
    uint32_t memory_mb;
    uint32_t vcpus;
    uint64_t lease_id;
    int64_t lease_expiry_ms; /* monotonic */
    char address[PW_LABEL_VALUE_MAX];
};

/* One event waiting for the scheduler's acknowledgement. */
struct outbox_ev {
    struct pw_list link; /* in pw_agent.outbox, oldest first */
    struct pw_agent_event ev;
};

/* One NNG completion handed from an NNG thread to the loop. */
struct link_done {
    struct pw_list link;
    int phase; /* LINK_SENDING or LINK_RECEIVING: what completed */
    int rv;    /* NNG error, 0 on success */
    nng_msg *msg; /* the reply, or our request returned by a failed send; may be NULL */
};

struct pw_agent {
    struct pw_agent_config cfg;
    uv_loop_t loop;
    struct pw_topology topo;
    struct pw_driver driver;
    int driver_up;
    char boot_id[PW_NAME_MAX];

    /* Link (loop thread). */
    struct pw_tlsid *tlsid; /* TLS link: signs the hello (tlsid.h); NULL on a plain link */
    int nurls;              /* scheduler replicas dialled */
    /* The connections up now (NNG threads add and remove them under pipes_mu), so that a
     * request unanswered with several replicas can drop them all and redial. */
    pthread_mutex_t pipes_mu;
    nng_pipe pipes[16];
    int npipes;
    nng_socket sock;
    nng_ctx ctx;
    nng_aio *aio;
    int nng_up;
    enum link_state link;
    int aio_phase;          /* read by the NNG callback; written before each op starts */
    int canceling;          /* nng_aio_cancel issued for the outstanding request */
    int need_hello;         /* next request is a hello */
    int req_is_hello;       /* the outstanding request is a hello */
    int want_inventory;     /* next report carries the full inventory */
    uint64_t report_seq;
    uint64_t sent_event_seq; /* newest event seq the outstanding request carries */
    uint64_t epoch;          /* highest scheduler epoch seen */
    uint64_t cmd_ack;        /* highest command id executed in that epoch */
    int64_t heartbeat_ms;
    int load_warned;

    /* Draining and golden snapshots (loop thread). The snapshot list leaves with a report only
     * when it differs from the one the scheduler has seen (acked: carried by the last hello or
     * report that got a reply); sent is what the outstanding request carries. */
    int draining;
    int sent_draining;        /* the value the outstanding request carries */
    int req_has_snaps;        /* the outstanding request carries snap_sent */
    int snap_acked_valid;
    char (*snap_now)[PW_NAME_MAX]; /* scratch: the driver's list; PW_PROTO_MAX_SNAPSHOTS slots */
    char (*snap_sent)[PW_NAME_MAX];
    char (*snap_acked)[PW_NAME_MAX];
    size_t nsnap_sent, nsnap_acked;

    /* NUMA bindings per topology node (index as in topo.nodes). */
    struct pw_numabind binds[PW_PROTO_MAX_NUMA];
    unsigned char bind_state[PW_PROTO_MAX_NUMA];

    /* Events and VMs (loop thread). */
    struct pw_list outbox;
    size_t noutbox;
    uint64_t event_seq; /* last seq assigned */
    int overflowed;
    struct pw_htab vms;

    /* /metrics (loop thread). */
    struct pw_agent_metrics metrics;
    int connected; /* the last request got an answer from the scheduler */

    /* Handles. */
    uv_async_t async;
    uv_timer_t backoff_timer;
    uv_timer_t flush_timer;
    uv_signal_t sigint, sigterm, sigusr1;
    int handles_up;
    int shut;

    /* Shared with NNG threads and pw_agent_stop callers, under mu. */
    pthread_mutex_t mu;
    struct pw_list done_q;
    int stop_requested;
    int drain_requested; /* -1, or the value pw_agent_set_draining asked for */
    int async_closed;
};

static void send_next(struct pw_agent *a);
static void on_flush(uv_timer_t *t);
static void on_backoff(uv_timer_t *t);

static void link_set_state(struct pw_agent *a, enum link_state to)
{
    if (a->link == to)
        return;
    pw_log_debug(LINK_COMP, "link %s -> %s", link_state_names[a->link], link_state_names[to]);
    a->link = to;
}

/* ---- VM inventory ---- */

static int vm_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct agent_vm, hnode)->vm_id == *(const uint64_t *)key;
}

static struct agent_vm *vm_find(struct pw_agent *a, uint64_t vm_id)
{
    struct pw_hnode *n = pw_htab_find(&a->vms, pw_hash_u64(vm_id), &vm_id, vm_eq);
    return n != NULL ? pw_container_of(n, struct agent_vm, hnode) : NULL;
}

/* vm_set_state is the only place an inventory VM changes state. The driver is the judge of
 * what happens to a VM, so an unexpected transition is logged, not fatal: a RUNNING report
 * after STOPPING (restore finished just as the destroy came) keeps STOPPING. */
static void vm_set_state(struct agent_vm *vm, enum pw_avm_state to)
{
    if (vm->state == to)
        return;
    int legal = (vm->state == PW_AVM_RESTORING && to == PW_AVM_RUNNING) ||
                (vm->state == PW_AVM_RESTORING && to == PW_AVM_STOPPING) ||
                (vm->state == PW_AVM_RUNNING && to == PW_AVM_STOPPING);
    if (!legal) {
        pw_log_warn(AGENT_COMP, "vm %llu: ignoring transition %s -> %s",
                    (unsigned long long)vm->vm_id, pw_avm_state_str(vm->state),
                    pw_avm_state_str(to));
        return;
    }
    pw_log_debug(AGENT_COMP, "vm %llu: %s -> %s", (unsigned long long)vm->vm_id,
                 pw_avm_state_str(vm->state), pw_avm_state_str(to));
    vm->state = to;
}

static void vm_remove(struct pw_agent *a, struct agent_vm *vm)
{
    pw_htab_remove(&a->vms, &vm->hnode);
    free(vm);
}

/* ---- events ---- */

static void flush_soon(struct pw_agent *a)
{
    /* A zero timer runs after the callbacks of this loop iteration, so events produced together
     * (several restores finishing at once) leave in one report. */
    if (a->link != LINK_CLOSED && !uv_is_active((uv_handle_t *)&a->flush_timer))
        uv_timer_start(&a->flush_timer, on_flush, 0, 0);
}

static void emit_event(struct pw_agent *a, uint64_t vm_id, enum pw_avm_state state,
                       const char *function, int32_t numa_node, int32_t restore_ms,
                       const char *address, const char *error)
{
    struct outbox_ev *e = pw_xcalloc(1, sizeof(*e));
    e->ev.seq = ++a->event_seq;
    e->ev.vm_id = vm_id;
    e->ev.state = state;
    pw_strlcpy(e->ev.function, function != NULL ? function : "", sizeof(e->ev.function));
    e->ev.numa_node = numa_node;
    e->ev.restore_ms = restore_ms;
    pw_strlcpy(e->ev.address, address != NULL ? address : "", sizeof(e->ev.address));
    pw_strlcpy(e->ev.error, error != NULL ? error : "", sizeof(e->ev.error));
    pw_list_push_tail(&a->outbox, &e->link);
    a->noutbox++;
    if (a->noutbox > a->cfg.outbox_max) {
        /* The scheduler is not acknowledging. Drop the oldest; the full inventory in the next
         * report tells it the current truth instead. */
        struct outbox_ev *old = pw_container_of(pw_list_head(&a->outbox), struct outbox_ev, link);
        pw_list_remove(&old->link);
        free(old);
        a->noutbox--;
        a->want_inventory = 1;
        if (!a->overflowed)
            pw_log_warn(AGENT_COMP, "event outbox full (%zu): dropping oldest events",
                        a->cfg.outbox_max);
        a->overflowed = 1;
    }
    pw_log_info(AGENT_COMP, "event %llu: vm %llu %s%s%s", (unsigned long long)e->ev.seq,
                (unsigned long long)vm_id, pw_avm_state_str(state), error != NULL ? ": " : "",
                error != NULL ? error : "");
    flush_soon(a);
}

static void ack_events(struct pw_agent *a, uint64_t event_ack)
{
    struct pw_list *pos, *tmp;
    pw_list_foreach_safe(pos, tmp, &a->outbox)
    {
        struct outbox_ev *e = pw_container_of(pos, struct outbox_ev, link);
        if (e->ev.seq > event_ack)
            break;
        pw_list_remove(&e->link);
        free(e);
        a->noutbox--;
    }
    if (a->noutbox == 0)
        a->overflowed = 0;
}

static uint64_t newest_event_seq(const struct pw_agent *a)
{
    struct pw_list *t = pw_list_tail(&a->outbox);
    return t != NULL ? pw_container_of(t, struct outbox_ev, link)->ev.seq : 0;
}

/* has_news tells whether the scheduler must hear from us before the held report returns:
 * events it has not been sent, or a change of draining. */
static int has_news(const struct pw_agent *a)
{
    return newest_event_seq(a) > a->sent_event_seq || a->draining != a->sent_draining;
}

/* set_draining is the only place draining changes; the change cuts the long poll short. */
static void set_draining(struct pw_agent *a, int draining, const char *why)
{
    draining = draining != 0;
    if (a->draining == draining)
        return;
    pw_log_info(AGENT_COMP, "draining %s -> %s (%s)", a->draining ? "on" : "off",
                draining ? "on" : "off", why);
    a->draining = draining;
    flush_soon(a);
}

/* ---- driver events ---- */

static void on_driver_event(struct pw_driver *d, const struct pw_driver_event *ev, void *arg)
{
    struct pw_agent *a = arg;
    (void)d;
    struct agent_vm *vm = vm_find(a, ev->vm_id);
    const char *function = vm != NULL ? vm->function : "";
    int32_t node = vm != NULL ? vm->numa_node : -1;
    switch (ev->state) {
    case PW_AVM_RUNNING:
        if (vm != NULL) {
            vm_set_state(vm, PW_AVM_RUNNING);
            pw_strlcpy(vm->address, ev->address != NULL ? ev->address : "", sizeof(vm->address));
        }
        emit_event(a, ev->vm_id, PW_AVM_RUNNING, function, node, ev->restore_ms, ev->address,
                   NULL);
        a->metrics.restores++;
        pw_prom_hist_observe(&a->metrics.restore_hist, (double)ev->restore_ms / 1000.0);
        break;
    case PW_AVM_FAILED:
    case PW_AVM_GONE:
        if (ev->state == PW_AVM_FAILED)
            a->metrics.restore_failures++;
        else
            a->metrics.vms_gone++;
        emit_event(a, ev->vm_id, ev->state, function, node, 0, NULL, ev->error);
        if (vm != NULL)
            vm_remove(a, vm);
        break;
    default:
        pw_log_warn(AGENT_COMP, "driver reported vm %llu %s: ignored",
                    (unsigned long long)ev->vm_id, pw_avm_state_str(ev->state));
        break;
    }
}

/* ---- commands ---- */

/* binding_for returns the NUMA binding for topology node `node`, made at its first use, or
 * NULL for -1, an unknown node or a node that cannot be bound on this machine (logged once). */
static const struct pw_numabind *binding_for(struct pw_agent *a, int32_t node)
{
    size_t i = 0;
    while (i < a->topo.nnodes && a->topo.nodes[i].id != node)
        i++;
    if (node < 0 || i == a->topo.nnodes)
        return NULL;
    if (a->bind_state[i] == BIND_UNKNOWN) {
        char why[PW_ERRMSG_MAX], cpus[PW_CPULIST_MAX];
        if (pw_numabind_make(&a->binds[i], node, a->topo.nodes[i].cpulist, why, sizeof(why)) ==
            PW_OK) {
            a->bind_state[i] = BIND_OK;
            pw_numabind_format_cpus(&a->binds[i].cpus, cpus, sizeof(cpus));
            pw_log_info(AGENT_COMP, "NUMA node %d: VMs there are bound to CPUs %s and its memory",
                        node, cpus);
        } else {
            a->bind_state[i] = BIND_NONE;
            pw_log_warn(AGENT_COMP, "%s; the driver gets no binding for VMs on node %d", why,
                        node);
        }
    }
    return a->bind_state[i] == BIND_OK ? &a->binds[i] : NULL;
}

static void cmd_prewarm(struct pw_agent *a, const struct pw_cmd *c)
{
    if (vm_find(a, c->vm_id) != NULL) {
        pw_log_warn(AGENT_COMP, "cmd %llu: vm %llu already exists: prewarm ignored",
                    (unsigned long long)c->id, (unsigned long long)c->vm_id);
        return;
    }
    char why[PW_ERRMSG_MAX] = "";
    int32_t node = c->numa_node;
    int rv = a->driver.ops->prewarm(&a->driver, c, binding_for(a, c->numa_node), &node, why,
                                    sizeof(why));
    if (rv != PW_OK) {
        emit_event(a, c->vm_id, PW_AVM_FAILED, c->function, c->numa_node, 0, NULL,
                   why[0] != '\0' ? why : pw_strerror(rv));
        return;
    }
    struct agent_vm *vm = pw_xcalloc(1, sizeof(*vm));
    vm->vm_id = c->vm_id;
    pw_strlcpy(vm->function, c->function, sizeof(vm->function));
    vm->state = PW_AVM_RESTORING;
    vm->numa_node = node;
    vm->memory_mb = c->memory_mb;
    vm->vcpus = c->vcpus;
    pw_htab_insert(&a->vms, &vm->hnode, pw_hash_u64(vm->vm_id));
    pw_log_info(AGENT_COMP, "cmd %llu: prewarm vm %llu (%s, %u MB, %u vCPUs, node %d)",
                (unsigned long long)c->id, (unsigned long long)c->vm_id, c->function,
                c->memory_mb, c->vcpus, node);
}

static void cmd_destroy(struct pw_agent *a, const struct pw_cmd *c)
{
    struct agent_vm *vm = vm_find(a, c->vm_id);
    pw_log_info(AGENT_COMP, "cmd %llu: destroy vm %llu", (unsigned long long)c->id,
                (unsigned long long)c->vm_id);
    if (vm == NULL) {
        /* Already gone (or never here): say so again, destroy is idempotent. */
        emit_event(a, c->vm_id, PW_AVM_GONE, c->function, -1, 0, NULL, NULL);
        return;
    }
    int rv = a->driver.ops->destroy(&a->driver, c->vm_id);
    if (rv == PW_ERR_NOTFOUND) {
        emit_event(a, c->vm_id, PW_AVM_GONE, vm->function, vm->numa_node, 0, NULL, NULL);
        vm_remove(a, vm);
        return;
    }
    vm_set_state(vm, PW_AVM_STOPPING);
}

static void cmd_lease(struct pw_agent *a, const struct pw_cmd *c, int lease)
{
    struct agent_vm *vm = vm_find(a, c->vm_id);
    if (vm == NULL) {
        pw_log_warn(AGENT_COMP, "cmd %llu: %s of unknown vm %llu ignored",
                    (unsigned long long)c->id, pw_cmd_type_str(c->type),
                    (unsigned long long)c->vm_id);
        return;
    }
    if (lease) {
        vm->lease_id = c->lease_id;
        vm->lease_expiry_ms = pw_now_mono_ms() + (c->lease_ttl_ms > 0 ? c->lease_ttl_ms : 0);
    } else {
        vm->lease_id = 0;
        vm->lease_expiry_ms = 0;
    }
}

static void execute(struct pw_agent *a, const struct pw_cmd *c)
{
    a->metrics.commands++;
    switch (c->type) {
    case PW_CMD_PREWARM:
        cmd_prewarm(a, c);
        break;
    case PW_CMD_DESTROY:
        cmd_destroy(a, c);
        break;
    case PW_CMD_LEASE:
        cmd_lease(a, c, 1);
        break;
    case PW_CMD_UNLEASE:
        cmd_lease(a, c, 0);
        break;
    case PW_CMD_SNAPSHOT:
        if (a->driver.ops->snapshot != NULL) {
            char err[PW_ERRMSG_MAX] = "";
            if (a->driver.ops->snapshot(&a->driver, c, err, sizeof(err)) != PW_OK)
                pw_log_warn(AGENT_COMP, "cmd %llu: snapshot of %s failed: %s", (unsigned long long)c->id, c->function,
                            err);
        }
        break;
    default:
        pw_log_warn(AGENT_COMP, "cmd %llu: unknown type %d ignored", (unsigned long long)c->id,
                    (int)c->type);
        break;
    }
}

/* apply_reply takes a scheduler reply: epoch fencing, acknowledgements, then commands. */
static void apply_reply(struct pw_agent *a, const struct pw_msg_reply *r)
{
    if (r->epoch < a->epoch) {
        pw_log_warn(AGENT_COMP, "reply from epoch %llu < %llu: %zu commands refused",
                    (unsigned long long)r->epoch, (unsigned long long)a->epoch, r->ncmds);
        return;
    }
    if (r->epoch > a->epoch) {
        pw_log_info(AGENT_COMP, "scheduler epoch %llu -> %llu", (unsigned long long)a->epoch,
                    (unsigned long long)r->epoch);
        a->epoch = r->epoch;
        a->cmd_ack = 0;
    }
    if (r->heartbeat_ms > 0)
        a->heartbeat_ms = PW_MAX(HEARTBEAT_MIN_MS, PW_MIN(r->heartbeat_ms, HEARTBEAT_MAX_MS));
    ack_events(a, r->event_ack);
    if (r->want_inventory)
        a->want_inventory = 1;
    for (size_t i = 0; i < r->ncmds; i++) {
        const struct pw_cmd *c = &r->cmds[i];
        if (c->id <= a->cmd_ack) {
            pw_log_debug(AGENT_COMP, "cmd %llu: already executed", (unsigned long long)c->id);
            continue;
        }
        execute(a, c);
        a->cmd_ack = c->id;
    }
}

/* ---- building requests ---- */

static size_t fill_inventory(struct pw_agent *a, struct pw_vm_info **out)
{
    size_t n = PW_MIN(a->vms.count, (size_t)PW_PROTO_MAX_VMS);
    if (a->vms.count > n)
        pw_log_warn(AGENT_COMP, "%zu VMs: inventory truncated to %zu", a->vms.count, n);
    struct pw_vm_info *vms = pw_xcalloc(n > 0 ? n : 1, sizeof(*vms));
    int64_t now = pw_now_mono_ms();
    size_t bucket = 0, i = 0;
    struct pw_hnode *it = NULL, *h;
    while (i < n && (h = pw_htab_next(&a->vms, &bucket, &it)) != NULL) {
        struct agent_vm *vm = pw_container_of(h, struct agent_vm, hnode);
        struct pw_vm_info *v = &vms[i++];
        v->vm_id = vm->vm_id;
        pw_strlcpy(v->function, vm->function, sizeof(v->function));
        v->state = vm->state;
        v->numa_node = vm->numa_node;
        v->memory_mb = vm->memory_mb;
        v->vcpus = vm->vcpus;
        v->lease_id = vm->lease_id;
        v->lease_left_ms = vm->lease_id != 0 ? PW_MAX(0, vm->lease_expiry_ms - now) : 0;
        pw_strlcpy(v->address, vm->address, sizeof(v->address));
    }
    *out = vms;
    return i;
}

static size_t fill_numa(struct pw_agent *a, struct pw_numa_node **out)
{
    size_t n = a->topo.nnodes;
    struct pw_numa_node *nodes = pw_xcalloc(n > 0 ? n : 1, sizeof(*nodes));
    memcpy(nodes, a->topo.nodes, n * sizeof(*nodes));
    a->driver.ops->usage(&a->driver, nodes, n);
    *out = nodes;
    return n;
}

/* take_snapshots asks the driver for its snapshot list (into snap_now); returns the count. */
static size_t take_snapshots(struct pw_agent *a)
{
    if (a->driver.ops->snapshots == NULL)
        return 0;
    size_t n = a->driver.ops->snapshots(&a->driver, a->snap_now, PW_PROTO_MAX_SNAPSHOTS);
    return PW_MIN(n, (size_t)PW_PROTO_MAX_SNAPSHOTS);
}

static int same_names(char (*x)[PW_NAME_MAX], size_t nx, char (*y)[PW_NAME_MAX], size_t ny)
{
    if (nx != ny)
        return 0;
    for (size_t i = 0; i < nx; i++)
        if (strcmp(x[i], y[i]) != 0)
            return 0;
    return 1;
}

/* carry_snapshots copies the n names in snap_now into a message array (*out, *nout) and
 * remembers them as what the request carries. */
static void carry_snapshots(struct pw_agent *a, size_t n, char (**out)[PW_NAME_MAX],
                            size_t *nout)
{
    *out = pw_xcalloc(n > 0 ? n : 1, sizeof(**out));
    memcpy(*out, a->snap_now, n * sizeof(**out));
    *nout = n;
    memcpy(a->snap_sent, a->snap_now, n * sizeof(a->snap_sent[0]));
    a->nsnap_sent = n;
    a->req_has_snaps = 1;
}

static void build_hello(struct pw_agent *a, struct pw_msg *m)
{
    pw_msg_init(m, PW_MSG_HELLO);
    struct pw_msg_hello *h = &m->u.hello;
    pw_strlcpy(h->agent_id, a->cfg.id, sizeof(h->agent_id));
    pw_strlcpy(h->boot_id, a->boot_id, sizeof(h->boot_id));
    pw_strlcpy(h->version, PW_VERSION_STRING, sizeof(h->version));
    pw_strlcpy(h->driver, a->driver.ops->name, sizeof(h->driver));
    h->epoch = a->epoch;
    h->cmd_ack = a->cmd_ack;
    h->event_seq = a->event_seq;
    h->nlabels = a->cfg.nlabels;
    h->labels = pw_xcalloc(h->nlabels > 0 ? h->nlabels : 1, sizeof(*h->labels));
    memcpy(h->labels, a->cfg.labels, h->nlabels * sizeof(*h->labels));
    h->nnuma = fill_numa(a, &h->numa);
    h->nvms = fill_inventory(a, &h->vms);
    carry_snapshots(a, take_snapshots(a), &h->snapshots, &h->nsnapshots);
    h->draining = a->draining;
    if (a->tlsid != NULL) {
        /* Proof that this connection is the agent its certificate names (tlsid.h). */
        h->auth_ts_ms = pw_now_wall_ms();
        pw_strlcpy(h->auth_cert, pw_tlsid_cert_pem(a->tlsid), sizeof(h->auth_cert));
        if (pw_tlsid_sign_hello(a->tlsid, h->agent_id, h->boot_id, h->auth_ts_ms, h->auth_sig) != PW_OK)
            pw_log_error(AGENT_COMP, "cannot sign the hello with the TLS key: the scheduler will refuse it");
    }
}

/* build_report fills a report carrying at most max_events of the oldest unacknowledged events;
 * *last_seq receives the newest seq it carries. */
static void build_report(struct pw_agent *a, struct pw_msg *m, size_t max_events,
                         uint64_t *last_seq)
{
    pw_msg_init(m, PW_MSG_REPORT);
    struct pw_msg_report *r = &m->u.report;
    pw_strlcpy(r->agent_id, a->cfg.id, sizeof(r->agent_id));
    pw_strlcpy(r->boot_id, a->boot_id, sizeof(r->boot_id));
    r->seq = a->report_seq + 1;
    r->epoch = a->epoch;
    r->cmd_ack = a->cmd_ack;
    double load = 0;
    if (pw_topology_read_load(a->cfg.topology_root, &load) != PW_OK && !a->load_warned) {
        pw_log_warn(AGENT_COMP, "cannot read proc/loadavg under %s: reporting load 0",
                    a->cfg.topology_root);
        a->load_warned = 1;
    }
    r->load = load;
    r->nnuma = fill_numa(a, &r->numa);
    size_t n = PW_MIN(PW_MIN(a->noutbox, max_events), (size_t)PW_PROTO_MAX_EVENTS);
    r->events = pw_xcalloc(n > 0 ? n : 1, sizeof(*r->events));
    *last_seq = 0;
    struct pw_list *pos;
    pw_list_foreach(pos, &a->outbox)
    {
        if (r->nevents == n)
            break;
        struct outbox_ev *e = pw_container_of(pos, struct outbox_ev, link);
        r->events[r->nevents++] = e->ev;
        *last_seq = e->ev.seq;
    }
    if (a->want_inventory) {
        r->has_inventory = 1;
        r->nvms = fill_inventory(a, &r->vms);
    }
    size_t nsnaps = take_snapshots(a);
    a->req_has_snaps = 0;
    if (!a->snap_acked_valid || !same_names(a->snap_now, nsnaps, a->snap_acked, a->nsnap_acked)) {
        r->has_snapshots = 1;
        carry_snapshots(a, nsnaps, &r->snapshots, &r->nsnapshots);
    }
    r->draining = a->draining;
}

/* encode_request builds the next hello or report into out. A report that would not fit
 * PW_PROTO_MAX_MSG carries fewer events; the rest follow in the next reports. */
static int encode_request(struct pw_agent *a, struct pw_buf *out, uint64_t *last_seq)
{
    struct pw_msg m;
    int rv;
    if (a->need_hello) {
        build_hello(a, &m);
        rv = pw_proto_encode(&m, out);
        pw_msg_fini(&m);
        *last_seq = a->event_seq;
        return rv;
    }
    size_t max_events = PW_PROTO_MAX_EVENTS;
    for (;;) {
        build_report(a, &m, max_events, last_seq);
        size_t carried = m.u.report.nevents;
        rv = pw_proto_encode(&m, out);
        pw_msg_fini(&m);
        if (rv != PW_ERR_TOOBIG || carried == 0)
            return rv;
        max_events = carried / 2;
        pw_buf_reset(out);
    }
}

/* ---- the link ---- */

static void drop_pipes(struct pw_agent *a);

static int64_t request_timeout_ms(const struct pw_agent *a) { return a->heartbeat_ms * 2 + 1000; }

static void backoff(struct pw_agent *a)
{
    link_set_state(a, LINK_IDLE);
    uv_timer_start(&a->backoff_timer, on_backoff, (uint64_t)a->cfg.error_backoff_ms, 0);
}

/* link_request_msg copies an encoded request into a new NNG message (the caller's on success).
 * It is a function of its own, never inlined, because tests/lsan.supp names it: NNG 1.5 can lose
 * a request that is in flight on a pipe when the socket closes at shutdown, after the message
 * has become NNG's to free. */
__attribute__((noinline)) static int link_request_msg(const struct pw_buf *b, nng_msg **out)
{
    nng_msg *msg;
    int nrv = nng_msg_alloc(&msg, 0);
    if (nrv == 0 && (nrv = nng_msg_append(msg, b->data, b->len)) != 0)
        nng_msg_free(msg);
    if (nrv == 0)
        *out = msg;
    return nrv;
}

static void send_next(struct pw_agent *a)
{
    if (a->link == LINK_CLOSED)
        return;
    uv_timer_stop(&a->backoff_timer);
    struct pw_buf b;
    pw_buf_init(&b, PW_PROTO_MAX_MSG);
    uint64_t last_seq = 0;
    int rv = encode_request(a, &b, &last_seq);
    if (rv != PW_OK) {
        pw_log_error(LINK_COMP, "cannot encode %s: %s", a->need_hello ? "hello" : "report",
                     pw_strerror(rv));
        pw_buf_fini(&b);
        backoff(a);
        return;
    }
    nng_msg *msg = NULL;
    int nrv = link_request_msg(&b, &msg);
    pw_buf_fini(&b);
    if (nrv != 0) {
        pw_log_error(LINK_COMP, "nng_msg: %s", nng_strerror(nrv));
        backoff(a);
        return;
    }
    a->req_is_hello = a->need_hello;
    a->sent_draining = a->draining;
    if (!a->need_hello) {
        a->report_seq++;
        a->want_inventory = 0;
    }
    a->sent_event_seq = last_seq;
    a->canceling = 0;
    pw_log_debug(LINK_COMP, "sending %s (seq %llu, epoch %llu, cmd_ack %llu, events to %llu)",
                 a->req_is_hello ? "hello" : "report", (unsigned long long)a->report_seq,
                 (unsigned long long)a->epoch, (unsigned long long)a->cmd_ack,
                 (unsigned long long)last_seq);
    if (a->req_is_hello)
        a->metrics.hellos_sent++;
    else
        a->metrics.reports_sent++;
    link_set_state(a, LINK_SENDING);
    a->aio_phase = LINK_SENDING;
    nng_aio_set_msg(a->aio, msg);
    nng_aio_set_timeout(a->aio, (nng_duration)request_timeout_ms(a));
    nng_ctx_send(a->ctx, a->aio);
}

static void start_recv(struct pw_agent *a)
{
    link_set_state(a, LINK_RECEIVING);
    a->aio_phase = LINK_RECEIVING;
    nng_aio_set_timeout(a->aio, (nng_duration)request_timeout_ms(a));
    nng_ctx_recv(a->ctx, a->aio);
}

static void handle_reply(struct pw_agent *a, nng_msg *msg)
{
    struct pw_msg m;
    char why[256];
    int rv = pw_proto_decode(nng_msg_body(msg), nng_msg_len(msg), &m, why, sizeof(why));
    if (rv != PW_OK) {
        pw_log_warn(LINK_COMP, "bad reply from scheduler: %s", why);
        backoff(a);
        return;
    }
    a->metrics.replies++;
    a->connected = 1;
    switch (m.type) {
    case PW_MSG_REPLY:
        if (a->req_is_hello) {
            a->need_hello = 0;
            pw_log_info(LINK_COMP, "hello accepted (epoch %llu, heartbeat %d ms)",
                        (unsigned long long)m.u.reply.epoch, m.u.reply.heartbeat_ms);
        }
        if (a->req_has_snaps) {
            /* The scheduler has seen this list; reports leave it out until it changes. */
            memcpy(a->snap_acked, a->snap_sent, a->nsnap_sent * sizeof(a->snap_acked[0]));
            a->nsnap_acked = a->nsnap_sent;
            a->snap_acked_valid = 1;
            a->req_has_snaps = 0;
        }
        apply_reply(a, &m.u.reply);
        pw_msg_fini(&m);
        /* The scheduler does the waiting: report again at once. */
        send_next(a);
        return;
    case PW_MSG_ERROR:
        if (strcmp(m.u.error.code, "rehello") == 0) {
            pw_log_info(LINK_COMP, "scheduler asks for hello: %s", m.u.error.message);
            a->need_hello = 1;
            pw_msg_fini(&m);
            send_next(a);
            return;
        }
        pw_log_warn(LINK_COMP, "scheduler error %s: %s; retrying in %lld ms", m.u.error.code,
                    m.u.error.message, (long long)a->cfg.error_backoff_ms);
        break;
    default:
        pw_log_warn(LINK_COMP, "unexpected %s message from scheduler",
                    pw_msg_type_str(m.type));
        break;
    }
    pw_msg_fini(&m);
    backoff(a);
}

/* link_done is the loop's half of an NNG completion. */
static void link_done(struct pw_agent *a, struct link_done *d)
{
    if (a->link == LINK_CLOSED)
        return;
    int urgent = a->canceling || has_news(a);
    a->canceling = 0;
    if (d->rv == 0 && d->phase == LINK_SENDING) {
        /* A cancel that lost the race with the send still means: resend with the news. */
        if (urgent)
            send_next(a);
        else
            start_recv(a);
        return;
    }
    if (d->rv == 0) {
        nng_msg *msg = d->msg;
        d->msg = NULL;
        handle_reply(a, msg);
        nng_msg_free(msg);
        return;
    }
    switch (d->rv) {
    case NNG_ECANCELED:
        send_next(a);
        break;
    case NNG_ETIMEDOUT:
        a->metrics.link_errors++;
        a->connected = 0;
        pw_log_warn(LINK_COMP, "no %s in %lld ms: sending a new request",
                    d->phase == LINK_SENDING ? "connection" : "reply",
                    (long long)request_timeout_ms(a));
        if (a->nurls > 1)
            drop_pipes(a);
        send_next(a);
        break;
    default:
        a->metrics.link_errors++;
        a->connected = 0;
        pw_log_warn(LINK_COMP, "request failed: %s; retrying in %lld ms", nng_strerror(d->rv),
                    (long long)a->cfg.error_backoff_ms);
        backoff(a);
        break;
    }
}

/* on_aio runs on an NNG thread: queue the result for the loop, nothing else. */
static void on_aio(void *arg)
{
    struct pw_agent *a = arg;
    struct link_done *d = pw_xcalloc(1, sizeof(*d));
    d->phase = a->aio_phase;
    d->rv = nng_aio_result(a->aio);
    if (d->phase == LINK_RECEIVING ? d->rv == 0 : d->rv != 0) {
        d->msg = nng_aio_get_msg(a->aio);
        nng_aio_set_msg(a->aio, NULL);
    }
    pthread_mutex_lock(&a->mu);
    pw_list_push_tail(&a->done_q, &d->link);
    if (!a->async_closed)
        uv_async_send(&a->async);
    pthread_mutex_unlock(&a->mu);
}

static void free_done(struct link_done *d)
{
    if (d->msg != NULL)
        nng_msg_free(d->msg);
    free(d);
}

/* ---- shutdown ---- */

static void on_closed(uv_handle_t *h) { (void)h; }

/* NNG 1.5 can block forever in nng_close when the scheduler goes away at the same moment
 * (a pipe dropped mid-send). By then the VMs are stopped and nothing is left to save, so a
 * watchdog ends the process if closing the link takes longer than this. */
#define LINK_CLOSE_DEADLINE_S 5

static volatile sig_atomic_t link_closed;

static void *link_close_watchdog(void *arg)
{
    (void)arg;
    for (int i = 0; i < LINK_CLOSE_DEADLINE_S * 10 && !link_closed; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!link_closed) {
        static const char msg[] = "{\"level\":\"error\",\"component\":\"agent\",\"msg\":\"closing the scheduler "
                                  "link hung; exiting (VMs were already stopped)\"}\n";
        ssize_t n = write(2, msg, sizeof(msg) - 1);
        (void)n;
        _exit(0);
    }
    return NULL;
}

/* shutdown stops the VMs, the link and every handle; the loop then runs dry. */
static void agent_shutdown(struct pw_agent *a)
{
    if (a->shut)
        return;
    a->shut = 1;
    link_set_state(a, LINK_CLOSED);
    pw_agent_metrics_close(&a->metrics);
    if (a->driver_up) {
        a->driver.ops->fini(&a->driver);
        a->driver_up = 0;
    }
    if (a->nng_up) {
        pthread_t wd;
        link_closed = 0;
        int wd_up = pthread_create(&wd, NULL, link_close_watchdog, NULL) == 0;
        /* After nng_aio_stop no callback runs any more, so the async can close safely. */
        nng_aio_stop(a->aio);
        nng_ctx_close(a->ctx);
        nng_close(a->sock);
        nng_aio_free(a->aio);
        a->nng_up = 0;
        link_closed = 1;
        if (wd_up)
            pthread_join(wd, NULL);
    }
    pthread_mutex_lock(&a->mu);
    a->async_closed = 1;
    pthread_mutex_unlock(&a->mu);
    if (a->handles_up) {
        uv_close((uv_handle_t *)&a->async, on_closed);
        uv_close((uv_handle_t *)&a->backoff_timer, on_closed);
        uv_close((uv_handle_t *)&a->flush_timer, on_closed);
        uv_close((uv_handle_t *)&a->sigint, on_closed);
        uv_close((uv_handle_t *)&a->sigterm, on_closed);
        uv_close((uv_handle_t *)&a->sigusr1, on_closed);
        a->handles_up = 0;
    }
}

/* ---- loop callbacks (thin) ---- */

static void on_async(uv_async_t *h)
{
    struct pw_agent *a = h->data;
    struct pw_list q;
    pw_list_init(&q);
    pthread_mutex_lock(&a->mu);
    int stop = a->stop_requested;
    int drain = a->drain_requested;
    a->drain_requested = -1;
    while (!pw_list_empty(&a->done_q)) {
        struct pw_list *e = pw_list_head(&a->done_q);
        pw_list_remove(e);
        pw_list_push_tail(&q, e);
    }
    pthread_mutex_unlock(&a->mu);
    while (!pw_list_empty(&q)) {
        struct link_done *d = pw_container_of(pw_list_head(&q), struct link_done, link);
        pw_list_remove(&d->link);
        if (!stop)
            link_done(a, d);
        free_done(d);
    }
    if (stop) {
        pw_log_info(AGENT_COMP, "stop requested");
        agent_shutdown(a);
    } else if (drain >= 0) {
        set_draining(a, drain, "requested");
    }
}

static void on_backoff(uv_timer_t *t) { send_next(t->data); }

static void on_flush(uv_timer_t *t)
{
    struct pw_agent *a = t->data;
    if (!has_news(a))
        return;
    if (a->link == LINK_IDLE) {
        send_next(a);
    } else if ((a->link == LINK_SENDING || a->link == LINK_RECEIVING) && !a->canceling) {
        /* The scheduler may hold the outstanding report for a whole heartbeat; new events
         * must not wait that long. Cancel it; the completion sends a fresh report. */
        pw_log_debug(LINK_COMP, "news: cancelling the outstanding request");
        a->canceling = 1;
        nng_aio_cancel(a->aio);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    pw_log_info(AGENT_COMP, "signal %d: stopping", signum);
    agent_shutdown(s->data);
}

static void on_sigusr1(uv_signal_t *s, int signum)
{
    struct pw_agent *a = s->data;
    (void)signum;
    set_draining(a, !a->draining, "SIGUSR1");
}

/* ---- setup ---- */

static void make_boot_id(char *out, size_t outlen)
{
    unsigned char raw[8];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, raw, sizeof(raw)) : -1;
    if (fd >= 0)
        close(fd);
    if (n != (ssize_t)sizeof(raw)) {
        /* No urandom (odd chroot): time and pid are unique enough for a boot id. */
        uint64_t x = pw_hash_u64((uint64_t)pw_now_wall_ms() ^ ((uint64_t)getpid() << 32) ^
                                 (uint64_t)pw_now_mono_ms());
        memcpy(raw, &x, sizeof(raw));
    }
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < sizeof(raw) && 2 * i + 2 < outlen; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * i] = '\0';
}

/* driver_extras takes what the driver found out in init: automatic host labels (a configured
 * key wins) and the VMs it adopted from an earlier agent, which join the inventory. */
static void driver_extras(struct pw_agent *a)
{
    if (a->driver.ops->labels != NULL) {
        struct pw_label l[PW_PROTO_MAX_LABELS];
        size_t n = a->driver.ops->labels(&a->driver, l, PW_ARRAY_LEN(l));
        for (size_t i = 0; i < n && i < PW_ARRAY_LEN(l); i++) {
            size_t k = 0;
            while (k < a->cfg.nlabels && strcmp(a->cfg.labels[k].key, l[i].key) != 0)
                k++;
            if (k < a->cfg.nlabels) {
                pw_log_info(AGENT_COMP, "label %s=%s configured; the driver's %s not used",
                            l[i].key, a->cfg.labels[k].value, l[i].value);
            } else if (a->cfg.nlabels == PW_PROTO_MAX_LABELS) {
                pw_log_warn(AGENT_COMP, "%d labels already: %s=%s not added",
                            PW_PROTO_MAX_LABELS, l[i].key, l[i].value);
            } else {
                a->cfg.labels[a->cfg.nlabels++] = l[i];
                pw_log_info(AGENT_COMP, "label %s=%s (from the driver)", l[i].key, l[i].value);
            }
        }
    }
    if (a->driver.ops->adopted != NULL) {
        struct pw_vm_info *v = pw_xcalloc(PW_PROTO_MAX_VMS, sizeof(*v));
        size_t n = PW_MIN(a->driver.ops->adopted(&a->driver, v, PW_PROTO_MAX_VMS),
                          (size_t)PW_PROTO_MAX_VMS);
        for (size_t i = 0; i < n; i++) {
            if (vm_find(a, v[i].vm_id) != NULL)
                continue;
            struct agent_vm *vm = pw_xcalloc(1, sizeof(*vm));
            vm->vm_id = v[i].vm_id;
            pw_strlcpy(vm->function, v[i].function, sizeof(vm->function));
            vm->state = v[i].state;
            vm->numa_node = v[i].numa_node;
            vm->memory_mb = v[i].memory_mb;
            vm->vcpus = v[i].vcpus;
            pw_strlcpy(vm->address, v[i].address, sizeof(vm->address));
            pw_htab_insert(&a->vms, &vm->hnode, pw_hash_u64(vm->vm_id));
        }
        if (n > 0)
            pw_log_info(AGENT_COMP, "%zu VM(s) adopted from an earlier agent join the inventory",
                        n);
        free(v);
    }
}

/* NNG thread: keep the list of connections. */
static void on_pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct pw_agent *a = arg;
    pthread_mutex_lock(&a->pipes_mu);
    if (ev == NNG_PIPE_EV_ADD_POST && a->npipes < (int)PW_ARRAY_LEN(a->pipes)) {
        a->pipes[a->npipes++] = p;
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        for (int i = 0; i < a->npipes; i++)
            if (nng_pipe_id(a->pipes[i]) == nng_pipe_id(p)) {
                a->pipes[i] = a->pipes[--a->npipes];
                break;
            }
    }
    pthread_mutex_unlock(&a->pipes_mu);
}

/* drop_pipes closes every connection; the dialers redial. With several replicas a request
 * may sit on the connection of one that stopped without closing it (SIGSTOP, a hang): only
 * live replicas complete the handshake again, so the next request reaches the leader. */
static void drop_pipes(struct pw_agent *a)
{
    nng_pipe copy[16];
    pthread_mutex_lock(&a->pipes_mu);
    int n = a->npipes;
    memcpy(copy, a->pipes, sizeof(copy));
    pthread_mutex_unlock(&a->pipes_mu);
    for (int i = 0; i < n; i++)
        nng_pipe_close(copy[i]);
    pw_log_info(LINK_COMP, "dropped %d scheduler connection(s) to redial every replica", n);
}

static int open_link(struct pw_agent *a, char *errbuf, size_t errlen)
{
    int rv = nng_req0_open(&a->sock);
    if (rv != 0) {
        pw_errf(errbuf, errlen, "nng_req0_open: %s", nng_strerror(rv));
        return PW_ERR_INTERNAL;
    }
    /* Our own retries (timeouts, cancel on news) replace req0's automatic resend. */
    if ((rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 100)) != 0 ||
        (rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMAXT, 2000)) != 0 ||
        (rv = nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, PW_PROTO_MAX_MSG)) != 0 ||
        (rv = nng_socket_set_ms(a->sock, NNG_OPT_REQ_RESENDTIME, RESEND_NEVER_MS)) != 0) {
        pw_errf(errbuf, errlen, "nng socket options: %s", nng_strerror(rv));
        goto fail_sock;
    }
    if ((rv = nng_ctx_open(&a->ctx, a->sock)) != 0) {
        pw_errf(errbuf, errlen, "nng_ctx_open: %s", nng_strerror(rv));
        goto fail_sock;
    }
    nng_ctx_set_ms(a->ctx, NNG_OPT_REQ_RESENDTIME, RESEND_NEVER_MS);
    if ((rv = nng_aio_alloc(&a->aio, on_aio, a)) != 0) {
        pw_errf(errbuf, errlen, "nng_aio_alloc: %s", nng_strerror(rv));
        goto fail_ctx;
    }
    if (strncmp(a->cfg.scheduler_url, "tls+tcp://", 10) == 0) {
        char why[512];
        if (pw_tlsid_load(a->cfg.tls_cert, &a->tlsid, why, sizeof(why)) != PW_OK) {
            pw_errf(errbuf, errlen, "--tls-cert %s", why);
            goto fail_aio;
        }
    }
    /* One dialer per scheduler replica (comma-separated URLs): only the leader listens, so
     * requests go to it; when another replica takes over, its dialer connects. */
    char urls[PW_AGENT_URL_MAX];
    pw_strlcpy(urls, a->cfg.scheduler_url, sizeof(urls));
    char *save = NULL;
    if ((rv = nng_pipe_notify(a->sock, NNG_PIPE_EV_ADD_POST, on_pipe_event, a)) != 0 ||
        (rv = nng_pipe_notify(a->sock, NNG_PIPE_EV_REM_POST, on_pipe_event, a)) != 0) {
        pw_errf(errbuf, errlen, "nng_pipe_notify: %s", nng_strerror(rv));
        goto fail_aio;
    }
    a->nurls = 0;
    for (char *url = strtok_r(urls, ",", &save); url != NULL; url = strtok_r(NULL, ",", &save)) {
        a->nurls++;
        nng_dialer dialer;
        if ((rv = nng_dialer_create(&dialer, a->sock, url)) != 0) {
            pw_errf(errbuf, errlen, "cannot dial %s: %s", url, nng_strerror(rv));
            goto fail_aio;
        }
        if (a->tlsid != NULL &&
            ((rv = nng_dialer_set_string(dialer, NNG_OPT_TLS_CA_FILE, a->cfg.tls_ca)) != 0 ||
             (rv = nng_dialer_set_string(dialer, NNG_OPT_TLS_CERT_KEY_FILE, a->cfg.tls_cert)) != 0 ||
             (rv = nng_dialer_set_int(dialer, NNG_OPT_TLS_AUTH_MODE, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
             (a->cfg.tls_server_name[0] != '\0' &&
              (rv = nng_dialer_set_string(dialer, NNG_OPT_TLS_SERVER_NAME, a->cfg.tls_server_name)) != 0))) {
            pw_errf(errbuf, errlen, "TLS settings (--tls-ca %s, --tls-cert %s): %s", a->cfg.tls_ca, a->cfg.tls_cert,
                    nng_strerror(rv));
            goto fail_aio;
        }
        /* Non-blocking: a scheduler that is not up yet is dialled again and again in the
         * background, between RECONNMINT and RECONNMAXT. */
        if ((rv = nng_dialer_start(dialer, NNG_FLAG_NONBLOCK)) != 0) {
            pw_errf(errbuf, errlen, "cannot dial %s: %s", url, nng_strerror(rv));
            goto fail_aio;
        }
    }
    a->nng_up = 1;
    return PW_OK;
fail_aio:
    pw_tlsid_free(a->tlsid);
    a->tlsid = NULL;
    nng_aio_free(a->aio);
fail_ctx:
    nng_ctx_close(a->ctx);
fail_sock:
    nng_close(a->sock);
    return PW_ERR_INVAL;
}

/* metrics_state describes the agent for a /metrics scrape (agent_metrics.c). */
static void metrics_state(void *arg, struct pw_agent_metrics_state *out)
{
    struct pw_agent *a = arg;
    out->id = a->cfg.id;
    out->driver = a->cfg.driver;
    out->accelerator = "none";
    for (size_t i = 0; i < a->cfg.nlabels; i++)
        if (strcmp(a->cfg.labels[i].key, "accelerator") == 0)
            out->accelerator = a->cfg.labels[i].value;
    out->version = PW_VERSION_STRING;
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *h;
    while ((h = pw_htab_next(&a->vms, &bucket, &it)) != NULL) {
        const struct agent_vm *vm = pw_container_of(h, struct agent_vm, hnode);
        if ((size_t)vm->state < PW_ARRAY_LEN(out->vms))
            out->vms[vm->state]++;
    }
    out->link_state = link_state_names[a->link];
    out->connected = a->connected;
    out->draining = a->draining;
    out->outbox = a->noutbox;
}

struct pw_agent *pw_agent_new(const struct pw_agent_config *cfg, char *errbuf, size_t errlen)
{
    char why[256];
    if (pw_agent_config_check(cfg, why, sizeof(why)) != PW_OK) {
        pw_errf(errbuf, errlen, "%s", why);
        return NULL;
    }
    struct pw_agent *a = pw_xcalloc(1, sizeof(*a));
    a->cfg = *cfg;
    a->link = LINK_IDLE;
    a->need_hello = 1;
    a->heartbeat_ms = cfg->initial_heartbeat_ms;
    a->draining = cfg->draining != 0;
    a->drain_requested = -1;
    a->snap_now = pw_xcalloc(PW_PROTO_MAX_SNAPSHOTS, sizeof(*a->snap_now));
    a->snap_sent = pw_xcalloc(PW_PROTO_MAX_SNAPSHOTS, sizeof(*a->snap_sent));
    a->snap_acked = pw_xcalloc(PW_PROTO_MAX_SNAPSHOTS, sizeof(*a->snap_acked));
    pw_list_init(&a->outbox);
    pw_list_init(&a->done_q);
    pw_htab_init(&a->vms);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->pipes_mu, NULL);
    make_boot_id(a->boot_id, sizeof(a->boot_id));
    pw_agent_metrics_init(&a->metrics, metrics_state, a);

    int rv = pw_topology_load(&a->topo, cfg->topology_root, cfg->vcpu_overcommit, why,
                              sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "topology: %s", why);
        goto fail;
    }
    if (uv_loop_init(&a->loop) != 0) {
        pw_errf(errbuf, errlen, "uv_loop_init failed");
        goto fail;
    }
    uv_async_init(&a->loop, &a->async, on_async);
    a->async.data = a;
    uv_timer_init(&a->loop, &a->backoff_timer);
    a->backoff_timer.data = a;
    uv_timer_init(&a->loop, &a->flush_timer);
    a->flush_timer.data = a;
    uv_signal_init(&a->loop, &a->sigint);
    a->sigint.data = a;
    uv_signal_init(&a->loop, &a->sigterm);
    a->sigterm.data = a;
    uv_signal_init(&a->loop, &a->sigusr1);
    a->sigusr1.data = a;
    a->handles_up = 1;

    a->driver.ops = pw_driver_find(cfg->driver);
    a->driver.topo = &a->topo;
    a->driver.event_cb = on_driver_event;
    a->driver.event_arg = a;
    rv = a->driver.ops->init(&a->driver, &a->loop, cfg, why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "driver %s: %s", cfg->driver, why);
        goto fail_loop;
    }
    a->driver_up = 1;
    driver_extras(a);
    if (open_link(a, why, sizeof(why)) != PW_OK) {
        pw_errf(errbuf, errlen, "%s", why);
        goto fail_loop;
    }
    if (cfg->metrics_port > 0 &&
        pw_agent_metrics_listen(&a->metrics, &a->loop, cfg->metrics_host, cfg->metrics_port, why, sizeof(why)) !=
            PW_OK) {
        pw_errf(errbuf, errlen, "%s", why);
        goto fail_loop;
    }
    pw_log_info(AGENT_COMP, "agent %s boot %s: %zu NUMA node(s)%s, driver %s, scheduler %s%s",
                cfg->id, a->boot_id, a->topo.nnodes,
                a->topo.from_fallback ? " (no NUMA sysfs: one node)" : "", cfg->driver,
                cfg->scheduler_url, a->draining ? ", draining" : "");
    return a;

fail_loop:
    agent_shutdown(a);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
fail:
    pw_htab_fini(&a->vms);
    pw_tlsid_free(a->tlsid);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->pipes_mu);
    free(a->snap_now);
    free(a->snap_sent);
    free(a->snap_acked);
    free(a);
    return NULL;
}

int pw_agent_run(struct pw_agent *a)
{
    if (a->cfg.handle_signals) {
        uv_signal_start(&a->sigint, on_signal, SIGINT);
        uv_signal_start(&a->sigterm, on_signal, SIGTERM);
        uv_signal_start(&a->sigusr1, on_sigusr1, SIGUSR1);
    }
    send_next(a);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    agent_shutdown(a);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    pw_log_info(AGENT_COMP, "stopped");
    return PW_OK;
}

void pw_agent_stop(struct pw_agent *a)
{
    pthread_mutex_lock(&a->mu);
    a->stop_requested = 1;
    if (!a->async_closed)
        uv_async_send(&a->async);
    pthread_mutex_unlock(&a->mu);
}

void pw_agent_set_draining(struct pw_agent *a, int draining)
{
    pthread_mutex_lock(&a->mu);
    a->drain_requested = draining != 0;
    if (!a->async_closed)
        uv_async_send(&a->async);
    pthread_mutex_unlock(&a->mu);
}

void pw_agent_free(struct pw_agent *a)
{
    if (a == NULL)
        return;
    agent_shutdown(a);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
    while (!pw_list_empty(&a->done_q)) {
        struct link_done *d = pw_container_of(pw_list_head(&a->done_q), struct link_done, link);
        pw_list_remove(&d->link);
        free_done(d);
    }
    while (!pw_list_empty(&a->outbox)) {
        struct outbox_ev *e = pw_container_of(pw_list_head(&a->outbox), struct outbox_ev, link);
        pw_list_remove(&e->link);
        free(e);
    }
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *h;
    while ((h = pw_htab_next(&a->vms, &bucket, &it)) != NULL) {
        pw_htab_remove(&a->vms, h);
        free(pw_container_of(h, struct agent_vm, hnode));
    }
    pw_htab_fini(&a->vms);
    pw_tlsid_free(a->tlsid);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->pipes_mu);
    free(a->snap_now);
    free(a->snap_sent);
    free(a->snap_acked);
    free(a);
}
