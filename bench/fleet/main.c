/* bench-fleet — many SIMULATED node agents in one process, for the fleet benchmark
 * (docs/fleet-bench.md, scripts/bench-fleet.sh).
 *
 * What is simulated: the hosts. There are no VMs, no topology discovery and no VMM; a prewarm
 * "restores" after a timer and a destroy "stops" after another. What is real: every agent has its
 * own NNG req socket and TCP connection to prewarmd's agent URL, and speaks the wire protocol
 * (docs/protocol.md) through pw_common's codec, with the real agent's cadence (agents/src/agent.c):
 * hello, then a report long poll that the scheduler answers at the heartbeat or with commands,
 * the next report sent at once; new events cancel the held report and leave in a fresh one.
 *
 * One libuv loop owns every agent. NNG completions arrive on NNG threads; they are queued under a
 * mutex with their completion time and handled on the loop (as agent.c does), so the latency
 * measured is send -> answer at the NNG level, not including this loop's own lag.
 *
 * Each request (hello or report) gets exactly one outcome: answered, superseded (we cancelled
 * or abandoned it to send news, as the real agent does), timed out, failed, or unanswered at the
 * end. lost = timed out + failed + unanswered at the end.
 *
 * Threads and ownership: every function here runs on the loop thread, except on_aio (an NNG
 * thread; it only hands the completion over) and watchdog. Messages built for the codec are owned
 * by their builder and released with pw_msg_fini; an NNG message belongs to the aio while an
 * operation runs and to link_done once it is handed over. */
#include "pw/error.h"
#include "pw/log.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#define TICK_MS 10
#define NNODES 2
#define OUTBOX_MAX 4096
#define SNAPS_MAX 64
#define RESEND_NEVER_MS (24 * 3600 * 1000) /* we retry ourselves, like the real agent */
#define ERROR_BACKOFF_MS 1000
#define WATCHDOG_S 20 /* closing thousands of sockets must not hang the benchmark */

/* ---- latency histograms: log-linear, < 1.6 % relative error, mergeable by bucket index ---- */

#define HIST_SUB 64
#define HIST_SHIFTS 40
#define HIST_N (2 * HIST_SUB + HIST_SHIFTS * HIST_SUB)

struct hist {
    uint64_t n, sum_us, max_us;
    uint64_t b[HIST_N];
};

/* hist_index maps microseconds to a bucket: exact below 128, then 64 buckets per power of two.
 * scripts/bench-fleet.sh merges processes by these indices (same formula in its Python). */
static size_t hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (size_t)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    if (shift > HIST_SHIFTS)
        return HIST_N - 1;
    uint64_t mant = v >> shift;
    return (size_t)(2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)(mant - HIST_SUB));
}

/* hist_value is a bucket's representative value (its middle). */
static double hist_value(size_t i)
{
    if (i < 2 * HIST_SUB)
        return (double)i;
    size_t k = i - 2 * HIST_SUB;
    int shift = (int)(k / HIST_SUB) + 1;
    uint64_t low = (uint64_t)(HIST_SUB + k % HIST_SUB) << shift;
    return (double)low + (double)((uint64_t)1 << shift) / 2.0;
}

static void hist_add(struct hist *h, uint64_t us)
{
    h->n++;
    h->sum_us += us;
    if (us > h->max_us)
        h->max_us = us;
    h->b[hist_index(us)]++;
}

static double hist_pct(const struct hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(p * (double)h->n + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < HIST_N; i++) {
        seen += h->b[i];
        if (seen >= rank)
            return PW_MIN(hist_value(i), (double)h->max_us);
    }
    return (double)h->max_us;
}

/* ---- the simulated agents ---- */

/* States of one agent's link, as in agent.c. Exactly one request is outstanding in SENDING and
 * RECEIVING. */
enum link_state {
    LINK_OFF,       /* not started yet (connections are spread over the first seconds) */
    LINK_IDLE,      /* no request: backing off after an error, or stopped */
    LINK_SENDING,   /* the aio carries the request to a pipe */
    LINK_RECEIVING, /* the aio waits for the answer (the long poll) */
};

/* One simulated VM. due_ms is when its pending transition (restore done, stop done) happens. */
struct fvm {
    uint64_t vm_id;
    char function[PW_NAME_MAX];
    enum pw_avm_state state; /* RESTORING, RUNNING or STOPPING */
    int32_t node;
    uint32_t memory_mb, vcpus;
    uint64_t lease_id;
    int64_t lease_expiry_ms;
    int64_t due_ms; /* 0: nothing pending */
    int32_t restore_ms;
};

struct fleet;

struct fagent {
    struct fleet *f;
    unsigned idx;
    char id[PW_NAME_MAX];
    char boot_id[PW_NAME_MAX];
    char zone[32];

    nng_socket sock;
    nng_ctx ctx;
    nng_aio *aio;
    int nng_up;
    enum link_state link;
    int aio_phase;        /* LINK_SENDING or LINK_RECEIVING: read by the NNG callback */
    int canceling;        /* nng_aio_cancel issued for news */
    int need_hello;
    int outstanding;      /* a request was started and has no outcome yet */
    int req_is_hello;
    int req_snap_version; /* snapshot version the request carries, -1 if none */
    uint64_t sent_event_seq;
    uint64_t t_send_ns;
    int64_t hb_at_send;
    int64_t start_at_ms;  /* when to dial and say hello */
    int64_t retry_at_ms;  /* backoff: when to send again (0: not backing off) */
    int hello_ok;

    /* Completion handed from an NNG thread (one aio, so at most one at a time). */
    struct pw_list qlink;
    int done_phase, done_rv;
    nng_msg *done_msg;
    uint64_t t_done_ns;

    /* Protocol state. */
    uint64_t report_seq, epoch, cmd_ack, event_seq;
    int64_t heartbeat_ms;
    int want_inventory;
    struct pw_agent_event *outbox; /* unacknowledged events, oldest first */
    size_t noutbox;

    /* Simulated host. */
    struct fvm *vms;
    size_t nvms, capvms;
    int64_t next_due_ms; /* earliest fvm.due_ms, 0 if none */
    uint64_t used_mb[NNODES];
    int32_t used_vcpus[NNODES];
    char snaps[SNAPS_MAX][PW_NAME_MAX];
    size_t nsnaps;
    int snap_version, snap_acked_version;
};

struct counts {
    uint64_t reports_sent, reports_answered, reports_superseded, reports_timed_out,
        reports_failed, reports_unanswered_at_end;
    uint64_t hellos_sent, hellos_answered, hellos_superseded, hellos_timed_out, hellos_failed,
        hellos_unanswered_at_end;
    uint64_t rehello, error_replies, bad_replies, stale_epoch;
    uint64_t cmds[PW_CMD__COUNT], cmds_dup;
    uint64_t ev_running, ev_gone, ev_failed, ev_acked, outbox_overflow;
    uint64_t replies_with_cmds, replies_with_inventory_request;
};

struct fleet {
    uv_loop_t loop;
    uv_async_t async;
    uv_timer_t tick;
    pthread_mutex_t mu;
    struct pw_list done_q;

    /* Options. */
    const char *url;
    const char *prefix;
    const char *json_path;
    unsigned nagents, first;
    int64_t seconds, restore_ms, stop_ms, spread_ms, initial_hb_ms;
    uint64_t rng;

    struct fagent *agents;
    struct pw_buf enc; /* encoder scratch (loop thread) */
    int64_t t0_ms, end_ms, drain_deadline_ms;
    int64_t wall_start_ms, wall_end_ms;
    int stopping, finished;
    uint64_t vm_seq;
    struct counts c;
    struct hist rtt, overshoot, cmd_rtt, hello_rtt;
};

static uint64_t rng_next(struct fleet *f)
{
    /* xorshift64*: deterministic per seed, no libc state shared with NNG's threads. */
    f->rng ^= f->rng >> 12;
    f->rng ^= f->rng << 25;
    f->rng ^= f->rng >> 27;
    return f->rng * 2685821657736338717ULL;
}

static int64_t now_ms(struct fleet *f) { return (int64_t)uv_now(&f->loop); }

static void send_next(struct fagent *a);

/* ---- request outcomes ---- */

enum outcome { OUT_ANSWERED, OUT_SUPERSEDED, OUT_TIMED_OUT, OUT_FAILED, OUT_UNANSWERED };

/* req_outcome closes the outstanding request with exactly one outcome. */
static void req_outcome(struct fagent *a, enum outcome o)
{
    struct counts *c = &a->f->c;
    if (!a->outstanding)
        return;
    a->outstanding = 0;
    if (a->req_is_hello) {
        uint64_t *t[] = {&c->hellos_answered, &c->hellos_superseded, &c->hellos_timed_out,
                         &c->hellos_failed, &c->hellos_unanswered_at_end};
        (*t[o])++;
    } else {
        uint64_t *t[] = {&c->reports_answered, &c->reports_superseded, &c->reports_timed_out,
                         &c->reports_failed, &c->reports_unanswered_at_end};
        (*t[o])++;
    }
    if (o == OUT_TIMED_OUT || o == OUT_FAILED)
        pw_log_warn("fleet", "agent %s: %s %s", a->id, a->req_is_hello ? "hello" : "report",
                    o == OUT_TIMED_OUT ? "timed out" : "failed");
}

/* ---- the simulated host ---- */

static struct fvm *vm_find(struct fagent *a, uint64_t vm_id)
{
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].vm_id == vm_id)
            return &a->vms[i];
    return NULL;
}

static void vm_remove(struct fagent *a, struct fvm *vm)
{
    a->used_mb[vm->node] -= vm->memory_mb;
    a->used_vcpus[vm->node] -= (int32_t)vm->vcpus;
    *vm = a->vms[--a->nvms];
}

static void snap_add(struct fagent *a, const char *fn)
{
    if (!pw_name_valid(fn))
        return;
    for (size_t i = 0; i < a->nsnaps; i++)
        if (strcmp(a->snaps[i], fn) == 0)
            return;
    if (a->nsnaps == SNAPS_MAX)
        return;
    pw_strlcpy(a->snaps[a->nsnaps++], fn, PW_NAME_MAX);
    a->snap_version++;
}

static void recompute_due(struct fagent *a)
{
    a->next_due_ms = 0;
    for (size_t i = 0; i < a->nvms; i++)
        if (a->vms[i].due_ms != 0 && (a->next_due_ms == 0 || a->vms[i].due_ms < a->next_due_ms))
            a->next_due_ms = a->vms[i].due_ms;
}

static void emit_event(struct fagent *a, uint64_t vm_id, enum pw_avm_state state, const char *fn,
                       int32_t node, int32_t restore_ms, const char *address)
{
    struct counts *c = &a->f->c;
    if (a->noutbox == OUTBOX_MAX) {
        /* The scheduler is not acknowledging: drop the oldest, send the inventory (agent.c). */
        memmove(a->outbox, a->outbox + 1, (OUTBOX_MAX - 1) * sizeof(*a->outbox));
        a->noutbox--;
        a->want_inventory = 1;
        c->outbox_overflow++;
    }
    struct pw_agent_event *e = &a->outbox[a->noutbox++];
    memset(e, 0, sizeof(*e));
    e->seq = ++a->event_seq;
    e->vm_id = vm_id;
    e->state = state;
    pw_strlcpy(e->function, fn, sizeof(e->function));
    e->numa_node = node;
    e->restore_ms = restore_ms;
    if (address != NULL)
        pw_strlcpy(e->address, address, sizeof(e->address));
    if (state == PW_AVM_RUNNING)
        c->ev_running++;
    else if (state == PW_AVM_GONE)
        c->ev_gone++;
    else if (state == PW_AVM_FAILED)
        c->ev_failed++;
}

static void ack_events(struct fagent *a, uint64_t ack)
{
    size_t k = 0;
    while (k < a->noutbox && a->outbox[k].seq <= ack)
        k++;
    if (k > 0) {
        memmove(a->outbox, a->outbox + k, (a->noutbox - k) * sizeof(*a->outbox));
        a->noutbox -= k;
        a->f->c.ev_acked += k;
    }
}

static int has_news(const struct fagent *a)
{
    return a->noutbox > 0 && a->outbox[a->noutbox - 1].seq > a->sent_event_seq;
}

/* flush sends news now: at once when idle, else by cancelling the held report (agent.c). */
static void flush(struct fagent *a)
{
    if (a->f->stopping || !has_news(a))
        return;
    if (a->link == LINK_IDLE && a->retry_at_ms == 0) {
        send_next(a);
    } else if ((a->link == LINK_SENDING || a->link == LINK_RECEIVING) && !a->canceling) {
        a->canceling = 1;
        nng_aio_cancel(a->aio);
    }
}

/* vm_step runs the pending transitions that are due: restores finish, stops complete. */
static void vm_step(struct fagent *a, int64_t now)
{
    for (size_t i = 0; i < a->nvms;) {
        struct fvm *vm = &a->vms[i];
        if (vm->due_ms == 0 || vm->due_ms > now) {
            i++;
            continue;
        }
        vm->due_ms = 0;
        if (vm->state == PW_AVM_RESTORING) {
            char addr[64];
            snprintf(addr, sizeof(addr), "10.%u.%u.%u:%u", (a->idx >> 16) & 255, (a->idx >> 8) & 255,
                     a->idx & 255, (unsigned)(10000 + vm->vm_id % 50000));
            vm->state = PW_AVM_RUNNING;
            emit_event(a, vm->vm_id, PW_AVM_RUNNING, vm->function, vm->node, vm->restore_ms, addr);
            i++;
        } else if (vm->state == PW_AVM_STOPPING) {
            emit_event(a, vm->vm_id, PW_AVM_GONE, vm->function, vm->node, 0, NULL);
            vm_remove(a, vm); /* the last VM moved into slot i: look at it next */
        } else {
            i++;
        }
    }
    recompute_due(a);
}

static void cmd_prewarm(struct fagent *a, const struct pw_cmd *cmd)
{
    struct fleet *f = a->f;
    if (vm_find(a, cmd->vm_id) != NULL)
        return;
    int32_t node = cmd->numa_node;
    if (node < 0 || node >= NNODES)
        node = a->used_mb[0] <= a->used_mb[1] ? 0 : 1;
    if (a->nvms == a->capvms) {
        a->capvms = a->capvms ? 2 * a->capvms : 8;
        a->vms = pw_xrealloc(a->vms, a->capvms * sizeof(*a->vms));
    }
    struct fvm *vm = &a->vms[a->nvms++];
    memset(vm, 0, sizeof(*vm));
    vm->vm_id = cmd->vm_id;
    pw_strlcpy(vm->function, cmd->function, sizeof(vm->function));
    vm->state = PW_AVM_RESTORING;
    vm->node = node;
    vm->memory_mb = cmd->memory_mb;
    vm->vcpus = cmd->vcpus;
    /* restore_ms +/- 50 % */
    int64_t d = f->restore_ms / 2 + (int64_t)(rng_next(f) % (uint64_t)(f->restore_ms + 1));
    vm->restore_ms = (int32_t)d;
    vm->due_ms = now_ms(f) + d;
    a->used_mb[node] += vm->memory_mb;
    a->used_vcpus[node] += (int32_t)vm->vcpus;
    snap_add(a, cmd->function); /* a first restore leaves a golden snapshot (as the sim driver) */
}

static void cmd_destroy(struct fagent *a, const struct pw_cmd *cmd)
{
    struct fleet *f = a->f;
    struct fvm *vm = vm_find(a, cmd->vm_id);
    if (vm == NULL) {
        emit_event(a, cmd->vm_id, PW_AVM_GONE, cmd->function, -1, 0, NULL); /* idempotent */
        return;
    }
    if (vm->state == PW_AVM_STOPPING)
        return;
    vm->state = PW_AVM_STOPPING;
    vm->due_ms = now_ms(f) + (int64_t)(rng_next(f) % (uint64_t)(f->stop_ms + 1));
}

static void execute(struct fagent *a, const struct pw_cmd *cmd)
{
    a->f->c.cmds[cmd->type]++;
    switch (cmd->type) {
    case PW_CMD_PREWARM:
        cmd_prewarm(a, cmd);
        break;
    case PW_CMD_DESTROY:
        cmd_destroy(a, cmd);
        break;
    case PW_CMD_LEASE:
    case PW_CMD_UNLEASE: {
        struct fvm *vm = vm_find(a, cmd->vm_id);
        if (vm != NULL) {
            vm->lease_id = cmd->type == PW_CMD_LEASE ? cmd->lease_id : 0;
            vm->lease_expiry_ms = cmd->type == PW_CMD_LEASE ? now_ms(a->f) + cmd->lease_ttl_ms : 0;
        }
        break;
    }
    case PW_CMD_SNAPSHOT:
        snap_add(a, cmd->function);
        break;
    default:
        break;
    }
}

/* apply_reply is agent.c's: epoch fencing, acknowledgements, then each new command once. */
static void apply_reply(struct fagent *a, const struct pw_msg_reply *r)
{
    if (r->epoch < a->epoch) {
        a->f->c.stale_epoch++;
        return;
    }
    if (r->epoch > a->epoch) {
        a->epoch = r->epoch;
        a->cmd_ack = 0;
    }
    if (r->heartbeat_ms > 0)
        a->heartbeat_ms = r->heartbeat_ms;
    ack_events(a, r->event_ack);
    if (r->want_inventory) {
        a->want_inventory = 1;
        a->f->c.replies_with_inventory_request++;
    }
    if (r->ncmds > 0)
        a->f->c.replies_with_cmds++;
    for (size_t i = 0; i < r->ncmds; i++) {
        if (r->cmds[i].id <= a->cmd_ack) {
            a->f->c.cmds_dup++;
            continue;
        }
        execute(a, &r->cmds[i]);
        a->cmd_ack = r->cmds[i].id;
    }
    recompute_due(a);
}

/* ---- building requests ---- */

static void fill_numa(struct fagent *a, struct pw_numa_node *n)
{
    for (int i = 0; i < NNODES; i++) {
        n[i].id = i;
        snprintf(n[i].cpulist, sizeof(n[i].cpulist), "%d-%d", 16 * i, 16 * i + 15);
        n[i].ncpus = 16;
        n[i].mem_total_mb = 65536;
        n[i].mem_free_mb = 65536 - PW_MIN(a->used_mb[i], (uint64_t)65536);
        n[i].vcpu_total = 256;
        n[i].vcpu_free = PW_MAX(0, 256 - a->used_vcpus[i]);
    }
}

static size_t fill_inventory(struct fagent *a, struct pw_vm_info **out)
{
    size_t n = PW_MIN(a->nvms, (size_t)PW_PROTO_MAX_VMS);
    struct pw_vm_info *v = pw_xcalloc(n > 0 ? n : 1, sizeof(*v));
    int64_t now = now_ms(a->f);
    for (size_t i = 0; i < n; i++) {
        const struct fvm *vm = &a->vms[i];
        v[i].vm_id = vm->vm_id;
        pw_strlcpy(v[i].function, vm->function, sizeof(v[i].function));
        v[i].state = vm->state;
        v[i].numa_node = vm->node;
        v[i].memory_mb = vm->memory_mb;
        v[i].vcpus = vm->vcpus;
        v[i].lease_id = vm->lease_id;
        v[i].lease_left_ms = vm->lease_id != 0 ? PW_MAX(0, vm->lease_expiry_ms - now) : 0;
        if (vm->state == PW_AVM_RUNNING)
            snprintf(v[i].address, sizeof(v[i].address), "10.%u.%u.%u:%u", (a->idx >> 16) & 255,
                     (a->idx >> 8) & 255, a->idx & 255, (unsigned)(10000 + vm->vm_id % 50000));
    }
    *out = v;
    return n;
}

static void carry_snaps(struct fagent *a, char (**out)[PW_NAME_MAX], size_t *nout)
{
    *out = pw_xcalloc(a->nsnaps > 0 ? a->nsnaps : 1, sizeof(**out));
    memcpy(*out, a->snaps, a->nsnaps * sizeof(**out));
    *nout = a->nsnaps;
    a->req_snap_version = a->snap_version;
}

static void build_hello(struct fagent *a, struct pw_msg *m)
{
    pw_msg_init(m, PW_MSG_HELLO);
    struct pw_msg_hello *h = &m->u.hello;
    pw_strlcpy(h->agent_id, a->id, sizeof(h->agent_id));
    pw_strlcpy(h->boot_id, a->boot_id, sizeof(h->boot_id));
    pw_strlcpy(h->version, PW_VERSION_STRING, sizeof(h->version));
    pw_strlcpy(h->driver, "sim", sizeof(h->driver));
    h->epoch = a->epoch;
    h->cmd_ack = a->cmd_ack;
    h->event_seq = a->event_seq;
    static const char *const keys[] = {PW_LABEL_CLOUD, PW_LABEL_REGION, PW_LABEL_ZONE,
                                       PW_LABEL_INSTANCE_TYPE, PW_LABEL_COST, "simulated"};
    const char *vals[] = {"fleetsim", "fleet-region-1", a->zone, "sim.8xlarge", "0.0100", "bench-fleet"};
    h->nlabels = PW_ARRAY_LEN(keys);
    h->labels = pw_xcalloc(h->nlabels, sizeof(*h->labels));
    for (size_t i = 0; i < h->nlabels; i++) {
        pw_strlcpy(h->labels[i].key, keys[i], sizeof(h->labels[i].key));
        pw_strlcpy(h->labels[i].value, vals[i], sizeof(h->labels[i].value));
    }
    h->nnuma = NNODES;
    h->numa = pw_xcalloc(NNODES, sizeof(*h->numa));
    fill_numa(a, h->numa);
    h->nvms = fill_inventory(a, &h->vms);
    carry_snaps(a, &h->snapshots, &h->nsnapshots);
}

static void build_report(struct fagent *a, struct pw_msg *m)
{
    pw_msg_init(m, PW_MSG_REPORT);
    struct pw_msg_report *r = &m->u.report;
    pw_strlcpy(r->agent_id, a->id, sizeof(r->agent_id));
    pw_strlcpy(r->boot_id, a->boot_id, sizeof(r->boot_id));
    r->seq = a->report_seq + 1;
    r->epoch = a->epoch;
    r->cmd_ack = a->cmd_ack;
    r->load = 0.5;
    r->nnuma = NNODES;
    r->numa = pw_xcalloc(NNODES, sizeof(*r->numa));
    fill_numa(a, r->numa);
    r->nevents = a->noutbox;
    r->events = pw_xcalloc(a->noutbox > 0 ? a->noutbox : 1, sizeof(*r->events));
    memcpy(r->events, a->outbox, a->noutbox * sizeof(*r->events));
    if (a->want_inventory) {
        r->has_inventory = 1;
        r->nvms = fill_inventory(a, &r->vms);
    }
    a->req_snap_version = -1;
    if (a->snap_version != a->snap_acked_version) {
        r->has_snapshots = 1;
        carry_snaps(a, &r->snapshots, &r->nsnapshots);
    }
}

/* ---- the link ---- */

/* on_aio runs on an NNG thread: note the result and its time, queue the agent for the loop. */
static void on_aio(void *arg)
{
    struct fagent *a = arg;
    struct fleet *f = a->f;
    a->t_done_ns = uv_hrtime();
    a->done_phase = a->aio_phase;
    a->done_rv = nng_aio_result(a->aio);
    a->done_msg = NULL;
    if (a->done_phase == LINK_RECEIVING ? a->done_rv == 0 : a->done_rv != 0) {
        a->done_msg = nng_aio_get_msg(a->aio);
        nng_aio_set_msg(a->aio, NULL);
    }
    pthread_mutex_lock(&f->mu);
    pw_list_push_tail(&f->done_q, &a->qlink);
    pthread_mutex_unlock(&f->mu);
    uv_async_send(&f->async);
}

static int64_t request_timeout_ms(const struct fagent *a) { return a->heartbeat_ms * 2 + 1000; }

static int open_link(struct fagent *a)
{
    int rv = nng_req0_open(&a->sock);
    if (rv != 0)
        goto fail;
    if ((rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 100)) != 0 ||
        (rv = nng_socket_set_ms(a->sock, NNG_OPT_RECONNMAXT, 2000)) != 0 ||
        (rv = nng_socket_set_size(a->sock, NNG_OPT_RECVMAXSZ, PW_PROTO_MAX_MSG)) != 0 ||
        (rv = nng_socket_set_ms(a->sock, NNG_OPT_REQ_RESENDTIME, RESEND_NEVER_MS)) != 0 ||
        (rv = nng_ctx_open(&a->ctx, a->sock)) != 0)
        goto fail_sock;
    nng_ctx_set_ms(a->ctx, NNG_OPT_REQ_RESENDTIME, RESEND_NEVER_MS);
    if ((rv = nng_aio_alloc(&a->aio, on_aio, a)) != 0)
        goto fail_ctx;
    if ((rv = nng_dial(a->sock, a->f->url, NULL, NNG_FLAG_NONBLOCK)) != 0)
        goto fail_aio;
    a->nng_up = 1;
    return PW_OK;
fail_aio:
    nng_aio_free(a->aio);
fail_ctx:
    nng_ctx_close(a->ctx);
fail_sock:
    nng_close(a->sock);
fail:
    pw_log_error("fleet", "agent %s: cannot open its link to %s: %s", a->id, a->f->url, nng_strerror(rv));
    return PW_ERR_IO;
}

static void backoff(struct fagent *a)
{
    a->link = LINK_IDLE;
    a->retry_at_ms = now_ms(a->f) + ERROR_BACKOFF_MS;
}

/* send_next encodes the next hello or report and starts it. Loop thread. */
static void send_next(struct fagent *a)
{
    struct fleet *f = a->f;
    a->retry_at_ms = 0;
    if (f->stopping) {
        a->link = LINK_IDLE;
        return;
    }
    struct pw_msg m;
    if (a->need_hello)
        build_hello(a, &m);
    else
        build_report(a, &m);
    pw_buf_reset(&f->enc);
    int rv = pw_proto_encode(&m, &f->enc);
    pw_msg_fini(&m);
    if (rv != PW_OK) {
        pw_log_error("fleet", "agent %s: cannot encode: %s", a->id, pw_strerror(rv));
        backoff(a);
        return;
    }
    nng_msg *msg;
    if (nng_msg_alloc(&msg, 0) != 0 || nng_msg_append(msg, f->enc.data, f->enc.len) != 0) {
        pw_log_error("fleet", "nng_msg_alloc failed");
        abort();
    }
    a->req_is_hello = a->need_hello;
    a->outstanding = 1;
    if (a->need_hello) {
        f->c.hellos_sent++;
        a->sent_event_seq = a->event_seq;
    } else {
        f->c.reports_sent++;
        a->report_seq++;
        a->want_inventory = 0;
        a->sent_event_seq = a->noutbox > 0 ? a->outbox[a->noutbox - 1].seq : 0;
    }
    a->canceling = 0;
    a->hb_at_send = a->heartbeat_ms;
    a->link = LINK_SENDING;
    a->aio_phase = LINK_SENDING;
    a->t_send_ns = uv_hrtime();
    nng_aio_set_msg(a->aio, msg);
    nng_aio_set_timeout(a->aio, (nng_duration)request_timeout_ms(a));
    nng_ctx_send(a->ctx, a->aio);
}

static void start_recv(struct fagent *a)
{
    a->link = LINK_RECEIVING;
    a->aio_phase = LINK_RECEIVING;
    nng_aio_set_timeout(a->aio, (nng_duration)request_timeout_ms(a));
    nng_ctx_recv(a->ctx, a->aio);
}

/* handle_reply takes an answer: records its latency, applies it, sends the next request. */
static void handle_reply(struct fagent *a, nng_msg *msg)
{
    struct fleet *f = a->f;
    uint64_t us = (a->t_done_ns - a->t_send_ns) / 1000;
    struct pw_msg m;
    char why[256];
    int rv = pw_proto_decode(nng_msg_body(msg), nng_msg_len(msg), &m, why, sizeof(why));
    if (rv != PW_OK) {
        f->c.bad_replies++;
        pw_log_warn("fleet", "agent %s: bad reply: %s", a->id, why);
        req_outcome(a, OUT_FAILED);
        backoff(a);
        return;
    }
    req_outcome(a, OUT_ANSWERED);
    if (m.type == PW_MSG_REPLY) {
        if (a->req_is_hello) {
            hist_add(&f->hello_rtt, us);
            a->need_hello = 0;
            a->hello_ok = 1;
        } else {
            hist_add(&f->rtt, us);
            if (m.u.reply.ncmds > 0) {
                hist_add(&f->cmd_rtt, us);
            } else {
                /* Held to the heartbeat: how late past it did the answer come? */
                int64_t over = (int64_t)us - a->hb_at_send * 1000;
                hist_add(&f->overshoot, over > 0 ? (uint64_t)over : 0);
            }
        }
        if (a->req_snap_version >= 0)
            a->snap_acked_version = a->req_snap_version;
        apply_reply(a, &m.u.reply);
        pw_msg_fini(&m);
        send_next(a);
        return;
    }
    if (m.type == PW_MSG_ERROR && strcmp(m.u.error.code, "rehello") == 0) {
        f->c.rehello++;
        pw_log_warn("fleet", "agent %s: scheduler asks for hello: %s", a->id, m.u.error.message);
        a->need_hello = 1;
        pw_msg_fini(&m);
        send_next(a);
        return;
    }
    f->c.error_replies++;
    pw_log_warn("fleet", "agent %s: scheduler answered %s %s: %s", a->id, pw_msg_type_str(m.type),
                m.type == PW_MSG_ERROR ? m.u.error.code : "", m.type == PW_MSG_ERROR ? m.u.error.message : "");
    pw_msg_fini(&m);
    backoff(a);
}

/* link_done is the loop's half of a completion (agent.c's state machine). */
static void link_done(struct fagent *a)
{
    int rv = a->done_rv;
    nng_msg *msg = a->done_msg;
    a->done_msg = NULL;
    int urgent = a->canceling || has_news(a);
    a->canceling = 0;
    if (rv == 0 && a->done_phase == LINK_SENDING) {
        if (urgent && !a->f->stopping) {
            /* Sent, but news came: abandon it for a fresh report (req0 drops the old answer). */
            req_outcome(a, OUT_SUPERSEDED);
            send_next(a);
        } else {
            start_recv(a);
        }
        return;
    }
    if (rv == 0) {
        handle_reply(a, msg);
        nng_msg_free(msg);
        return;
    }
    if (msg != NULL)
        nng_msg_free(msg);
    switch (rv) {
    case NNG_ECANCELED:
        req_outcome(a, OUT_SUPERSEDED);
        send_next(a);
        break;
    case NNG_ETIMEDOUT:
        req_outcome(a, OUT_TIMED_OUT);
        send_next(a);
        break;
    default:
        pw_log_warn("fleet", "agent %s: request failed: %s", a->id, nng_strerror(rv));
        req_outcome(a, OUT_FAILED);
        backoff(a);
        break;
    }
}

/* ---- the loop ---- */

static void write_summary(struct fleet *f);

static void on_async(uv_async_t *h)
{
    struct fleet *f = h->data;
    struct pw_list q;
    pw_list_init(&q);
    pthread_mutex_lock(&f->mu);
    while (!pw_list_empty(&f->done_q)) {
        struct pw_list *e = pw_list_head(&f->done_q);
        pw_list_remove(e);
        pw_list_push_tail(&q, e);
    }
    pthread_mutex_unlock(&f->mu);
    while (!pw_list_empty(&q)) {
        struct fagent *a = pw_container_of(pw_list_head(&q), struct fagent, qlink);
        pw_list_remove(&a->qlink);
        link_done(a);
    }
}

static int fleet_idle(const struct fleet *f)
{
    for (unsigned i = 0; i < f->nagents; i++)
        if (f->agents[i].outstanding)
            return 0;
    return 1;
}

static void finish(struct fleet *f)
{
    f->finished = 1;
    for (unsigned i = 0; i < f->nagents; i++)
        req_outcome(&f->agents[i], OUT_UNANSWERED);
    f->wall_end_ms = pw_now_wall_ms();
    write_summary(f);
    uv_timer_stop(&f->tick);
    uv_stop(&f->loop);
}

/* on_tick starts agents on their schedule, runs due VM transitions, retries after backoff,
 * and ends the run: at end_ms no new request starts; the outstanding ones get until the drain
 * deadline (two heartbeats and a bit) to be answered. */
static void on_tick(uv_timer_t *t)
{
    struct fleet *f = t->data;
    int64_t now = now_ms(f);
    if (!f->stopping && now >= f->end_ms) {
        f->stopping = 1;
        f->drain_deadline_ms = now + 2 * f->initial_hb_ms + 1500;
        pw_log_info("fleet", "window over: draining outstanding requests");
    }
    if (f->stopping) {
        if (fleet_idle(f) || now >= f->drain_deadline_ms)
            finish(f);
        return;
    }
    for (unsigned i = 0; i < f->nagents; i++) {
        struct fagent *a = &f->agents[i];
        if (a->link == LINK_OFF) {
            if (now >= a->start_at_ms) {
                if (open_link(a) == PW_OK) {
                    a->link = LINK_IDLE;
                    send_next(a);
                } else {
                    a->start_at_ms = now + ERROR_BACKOFF_MS;
                }
            }
            continue;
        }
        if (a->next_due_ms != 0 && a->next_due_ms <= now) {
            vm_step(a, now);
            flush(a);
        }
        if (a->retry_at_ms != 0 && a->retry_at_ms <= now)
            send_next(a);
    }
}

/* ---- the summary ---- */

static cJSON *hist_json(const struct hist *h)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "count", (double)h->n);
    cJSON_AddNumberToObject(o, "sum_us", (double)h->sum_us);
    cJSON_AddNumberToObject(o, "max_us", (double)h->max_us);
    cJSON_AddNumberToObject(o, "p50_us", hist_pct(h, 0.50));
    cJSON_AddNumberToObject(o, "p99_us", hist_pct(h, 0.99));
    cJSON_AddNumberToObject(o, "p999_us", hist_pct(h, 0.999));
    cJSON *b = cJSON_AddArrayToObject(o, "buckets");
    for (size_t i = 0; i < HIST_N; i++) {
        if (h->b[i] == 0)
            continue;
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)i));
        cJSON_AddItemToArray(pair, cJSON_CreateNumber((double)h->b[i]));
        cJSON_AddItemToArray(b, pair);
    }
    return o;
}

#define ADD(o, name, v) cJSON_AddNumberToObject((o), (name), (double)(v))

/* write_summary writes the JSON summary (to --json, else stdout) and a human line to stderr. */
static void write_summary(struct fleet *f)
{
    const struct counts *c = &f->c;
    unsigned connected = 0, pending_events = 0;
    uint64_t vms = 0;
    for (unsigned i = 0; i < f->nagents; i++) {
        connected += f->agents[i].hello_ok != 0;
        pending_events += (unsigned)f->agents[i].noutbox;
        vms += f->agents[i].nvms;
    }
    uint64_t lost = c->reports_timed_out + c->reports_failed + c->reports_unanswered_at_end;
    uint64_t hello_lost = c->hellos_timed_out + c->hellos_failed + c->hellos_unanswered_at_end;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                   (double)ru.ru_stime.tv_usec / 1e6;

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "note", "agents are SIMULATED (no VMs); each has its own real NNG connection and "
                                       "speaks the real wire protocol");
    ADD(o, "agents", f->nagents);
    ADD(o, "first_index", f->first);
    cJSON_AddStringToObject(o, "prefix", f->prefix);
    ADD(o, "agents_connected", connected);
    ADD(o, "seconds", f->seconds);
    ADD(o, "window_start_wall_ms", f->wall_start_ms);
    ADD(o, "window_end_wall_ms", f->wall_start_ms + f->seconds * 1000);
    ADD(o, "finished_wall_ms", f->wall_end_ms);
    ADD(o, "process_cpu_s", cpu_s);
    ADD(o, "process_maxrss_kb", ru.ru_maxrss);
    cJSON *r = cJSON_AddObjectToObject(o, "reports");
    ADD(r, "sent", c->reports_sent);
    ADD(r, "answered", c->reports_answered);
    ADD(r, "superseded", c->reports_superseded);
    ADD(r, "timed_out", c->reports_timed_out);
    ADD(r, "failed", c->reports_failed);
    ADD(r, "unanswered_at_end", c->reports_unanswered_at_end);
    ADD(r, "lost", lost);
    cJSON *h = cJSON_AddObjectToObject(o, "hellos");
    ADD(h, "sent", c->hellos_sent);
    ADD(h, "answered", c->hellos_answered);
    ADD(h, "superseded", c->hellos_superseded);
    ADD(h, "lost", hello_lost);
    cJSON *e = cJSON_AddObjectToObject(o, "errors");
    ADD(e, "rehello", c->rehello);
    ADD(e, "error_replies", c->error_replies);
    ADD(e, "bad_replies", c->bad_replies);
    ADD(e, "stale_epoch_replies", c->stale_epoch);
    ADD(e, "outbox_overflows", c->outbox_overflow);
    cJSON *cm = cJSON_AddObjectToObject(o, "commands");
    uint64_t total = 0;
    for (int i = 0; i < PW_CMD__COUNT; i++) {
        ADD(cm, pw_cmd_type_str((enum pw_cmd_type)i), c->cmds[i]);
        total += c->cmds[i];
    }
    ADD(cm, "total", total);
    ADD(cm, "repeated_ignored", c->cmds_dup);
    ADD(cm, "replies_with_cmds", c->replies_with_cmds);
    ADD(cm, "inventory_requests", c->replies_with_inventory_request);
    cJSON *ev = cJSON_AddObjectToObject(o, "vm_events");
    ADD(ev, "running", c->ev_running);
    ADD(ev, "gone", c->ev_gone);
    ADD(ev, "failed", c->ev_failed);
    ADD(ev, "total", c->ev_running + c->ev_gone + c->ev_failed);
    ADD(ev, "acked", c->ev_acked);
    ADD(ev, "unacked_at_end", pending_events);
    ADD(o, "vms_at_end", vms);
    cJSON *l = cJSON_AddObjectToObject(o, "latency");
    cJSON_AddItemToObject(l, "report_rtt", hist_json(&f->rtt));
    cJSON_AddItemToObject(l, "heartbeat_overshoot", hist_json(&f->overshoot));
    cJSON_AddItemToObject(l, "cmd_reply_rtt", hist_json(&f->cmd_rtt));
    cJSON_AddItemToObject(l, "hello_rtt", hist_json(&f->hello_rtt));
    char *txt = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    FILE *out = stdout;
    if (f->json_path != NULL && (out = fopen(f->json_path, "w")) == NULL) {
        pw_log_error("fleet", "cannot write %s: %s", f->json_path, strerror(errno));
        out = stdout;
    }
    fprintf(out, "%s\n", txt);
    if (out != stdout)
        fclose(out);
    free(txt);
    fprintf(stderr,
            "bench-fleet %s[%u..%u): %u SIMULATED agents (real NNG connections), %u connected, %llds: "
            "reports sent %llu answered %llu superseded %llu lost %llu (timed out %llu, failed %llu, "
            "unanswered %llu); rehello %llu; cmds %llu; vm events %llu; heartbeat overshoot p50 %.0f "
            "p99 %.0f max %llu us; cpu %.1f s\n",
            f->prefix, f->first, f->first + f->nagents, f->nagents, connected, (long long)f->seconds,
            (unsigned long long)c->reports_sent, (unsigned long long)c->reports_answered,
            (unsigned long long)c->reports_superseded, (unsigned long long)lost,
            (unsigned long long)c->reports_timed_out, (unsigned long long)c->reports_failed,
            (unsigned long long)c->reports_unanswered_at_end, (unsigned long long)c->rehello,
            (unsigned long long)total, (unsigned long long)(c->ev_running + c->ev_gone + c->ev_failed),
            hist_pct(&f->overshoot, 0.5), hist_pct(&f->overshoot, 0.99), (unsigned long long)f->overshoot.max_us,
            cpu_s);
}

/* ---- setup ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: bench-fleet --scheduler URL [options]\n"
            "Runs N SIMULATED agents in this process, each with its own real NNG connection to\n"
            "prewarmd, speaking the real agent protocol (hello, report long poll, commands, VM\n"
            "events). Writes a JSON summary. Options:\n"
            "  --scheduler URL     prewarmd's agent URL (tcp://127.0.0.1:PORT)\n"
            "  --agents N          agents in this process (default 250)\n"
            "  --first N           index of the first agent, for distinct ids (default 0)\n"
            "  --prefix S          agent id prefix (default fleet): ids are S-NNNNN\n"
            "  --seconds S         measurement window (default 300)\n"
            "  --spread-ms MS      start the agents spread over this time (default 2000)\n"
            "  --restore-ms MS     simulated restore time, +/- 50%% (default 100)\n"
            "  --stop-ms MS        simulated stop time, 0..MS (default 20)\n"
            "  --heartbeat-ms MS   heartbeat assumed until the first reply (default 1000)\n"
            "  --seed N            random seed (default 1)\n"
            "  --json FILE         write the summary there (default stdout)\n"
            "  --log-level L       debug|info|warn|error (default warn)\n");
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s || v < lo || v > hi)
        return PW_ERR_INVAL;
    *out = v;
    return PW_OK;
}

static void *watchdog(void *arg)
{
    (void)arg;
    sleep(WATCHDOG_S);
    static const char msg[] = "bench-fleet: closing the links hung; exiting (summary already written)\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    _exit(0);
    return NULL;
}

int main(int argc, char **argv)
{
    static struct fleet fl;
    struct fleet *f = &fl;
    f->prefix = "fleet";
    f->nagents = 250;
    f->seconds = 300;
    f->spread_ms = 2000;
    f->restore_ms = 100;
    f->stop_ms = 20;
    f->initial_hb_ms = 1000;
    int64_t seed = 1;
    pw_log_set_level(PW_LOG_WARN);
    pw_log_set_process("bench-fleet");
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (strcmp(k, "--help") == 0 || strcmp(k, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench-fleet: %s needs a value\n", k);
            return 2;
        }
        const char *v = argv[++i];
        int64_t n = 0;
        int bad = 0;
        if (strcmp(k, "--scheduler") == 0)
            f->url = v;
        else if (strcmp(k, "--prefix") == 0) {
            f->prefix = v;
            bad = !pw_name_valid(v) || strlen(v) > 40;
        }
        else if (strcmp(k, "--json") == 0)
            f->json_path = v;
        else if (strcmp(k, "--log-level") == 0) {
            enum pw_log_level lv = PW_LOG_WARN;
            if (strcmp(v, "debug") == 0)
                lv = PW_LOG_DEBUG;
            else if (strcmp(v, "info") == 0)
                lv = PW_LOG_INFO;
            else if (strcmp(v, "error") == 0)
                lv = PW_LOG_ERROR;
            else if (strcmp(v, "warn") != 0)
                bad = 1;
            pw_log_set_level(lv);
        } else if (strcmp(k, "--agents") == 0) {
            bad = parse_i64(v, 1, 100000, &n) != PW_OK;
            f->nagents = (unsigned)n;
        } else if (strcmp(k, "--first") == 0) {
            bad = parse_i64(v, 0, 10000000, &n) != PW_OK;
            f->first = (unsigned)n;
        } else if (strcmp(k, "--seconds") == 0)
            bad = parse_i64(v, 1, 86400, &f->seconds) != PW_OK;
        else if (strcmp(k, "--spread-ms") == 0)
            bad = parse_i64(v, 0, 600000, &f->spread_ms) != PW_OK;
        else if (strcmp(k, "--restore-ms") == 0)
            bad = parse_i64(v, 0, 600000, &f->restore_ms) != PW_OK;
        else if (strcmp(k, "--stop-ms") == 0)
            bad = parse_i64(v, 0, 600000, &f->stop_ms) != PW_OK;
        else if (strcmp(k, "--heartbeat-ms") == 0)
            bad = parse_i64(v, 50, 600000, &f->initial_hb_ms) != PW_OK;
        else if (strcmp(k, "--seed") == 0)
            bad = parse_i64(v, 0, INT64_MAX, &seed) != PW_OK;
        else {
            fprintf(stderr, "bench-fleet: unknown option %s\n", k);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "bench-fleet: bad value for %s: %s\n", k, v);
            return 2;
        }
    }
    if (f->url == NULL) {
        usage(stderr);
        return 2;
    }
    f->rng = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + f->first + 1;

    if (uv_loop_init(&f->loop) != 0) {
        fprintf(stderr, "bench-fleet: uv_loop_init failed\n");
        return 1;
    }
    pthread_mutex_init(&f->mu, NULL);
    pw_list_init(&f->done_q);
    uv_async_init(&f->loop, &f->async, on_async);
    f->async.data = f;
    uv_timer_init(&f->loop, &f->tick);
    f->tick.data = f;
    pw_buf_init(&f->enc, PW_PROTO_MAX_MSG);

    uv_update_time(&f->loop);
    f->t0_ms = now_ms(f);
    f->end_ms = f->t0_ms + f->seconds * 1000;
    f->wall_start_ms = pw_now_wall_ms();
    f->agents = pw_xcalloc(f->nagents, sizeof(*f->agents));
    for (unsigned i = 0; i < f->nagents; i++) {
        struct fagent *a = &f->agents[i];
        a->f = f;
        a->idx = f->first + i;
        snprintf(a->id, sizeof(a->id), "%s-%05u", f->prefix, a->idx);
        snprintf(a->boot_id, sizeof(a->boot_id), "%08x%08x", (unsigned)(rng_next(f) >> 32), (unsigned)getpid());
        snprintf(a->zone, sizeof(a->zone), "fleet-zone-%u", a->idx % 3);
        a->outbox = pw_xcalloc(OUTBOX_MAX, sizeof(*a->outbox));
        a->need_hello = 1;
        a->heartbeat_ms = f->initial_hb_ms;
        a->link = LINK_OFF;
        a->req_snap_version = -1;
        a->start_at_ms = f->t0_ms + (int64_t)((uint64_t)f->spread_ms * i / f->nagents);
    }
    fprintf(stderr, "bench-fleet: %u SIMULATED agents %s-%05u..%05u in one process (each a real NNG "
                    "connection to %s), %lld s\n",
            f->nagents, f->prefix, f->first, f->first + f->nagents - 1, f->url, (long long)f->seconds);
    uv_timer_start(&f->tick, on_tick, TICK_MS, TICK_MS);
    uv_run(&f->loop, UV_RUN_DEFAULT);

    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog, NULL) == 0)
        pthread_detach(wd);
    for (unsigned i = 0; i < f->nagents; i++) {
        struct fagent *a = &f->agents[i];
        if (a->nng_up) {
            nng_aio_stop(a->aio);
            nng_ctx_close(a->ctx);
            nng_close(a->sock);
            nng_aio_free(a->aio);
        }
    }
    /* Completions queued before the aios stopped still hold their messages. */
    while (!pw_list_empty(&f->done_q)) {
        struct fagent *a = pw_container_of(pw_list_head(&f->done_q), struct fagent, qlink);
        pw_list_remove(&a->qlink);
        if (a->done_msg != NULL)
            nng_msg_free(a->done_msg);
    }
    uv_close((uv_handle_t *)&f->async, NULL);
    uv_close((uv_handle_t *)&f->tick, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    for (unsigned i = 0; i < f->nagents; i++) {
        free(f->agents[i].outbox);
        free(f->agents[i].vms);
    }
    free(f->agents);
    pw_buf_fini(&f->enc);
    pthread_mutex_destroy(&f->mu);
    uint64_t lost = f->c.reports_timed_out + f->c.reports_failed + f->c.reports_unanswered_at_end;
    return lost == 0 && f->c.rehello == 0 ? 0 : 3;
}
