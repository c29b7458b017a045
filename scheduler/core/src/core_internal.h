/* core_internal.h — the core's private structures, shared by its .c files only. */
#ifndef PW_CORE_INTERNAL_H
#define PW_CORE_INTERNAL_H

#include "pw/core.h"

#include <stdint.h>

struct fn {
    struct pw_hnode hnode; /* core->fns by name (absent once deleted) */
    struct pw_list link;   /* core->fn_list, or core->dying once deleted */
    struct pw_function_spec spec;
    struct pw_list idle;    /* idle VMs; head = most recently idled, tail = oldest */
    struct pw_list waiters; /* parked acquires, oldest first */
    uint32_t n[PW_VM__COUNT];
    uint32_t nwaiters;
    int deleted; /* no new VMs; freed when its last VM is gone */
    /* A policy engine's overlay (pw_core_set_dynamic). */
    int dyn_set;
    uint32_t dyn_floor;
    int64_t dyn_keepalive_ms; /* -1: the pool's own */
    uint64_t acquires, warm, cold, timeouts;
    uint64_t name_hash; /* pw_hash_str(spec.name): the placer's snapshot key */
    /* VMs being moved off draining hosts (they have a replacement), by state: reconcile
     * counts the replacement instead. */
    uint32_t moving[PW_VM__COUNT];
    /* Restores that failed in a row, and until when new restores wait (a bad image must not
     * become a tight loop of failing restores). */
    uint32_t fail_streak;
    int64_t retry_at;
    /* The last placement that found no room: at placer generation nocap_gen (0: none) with
     * nocap_total VMs of the function. Until the generation moves, a placement with no more
     * VMs fails too, and is answered without a search (pw_placer_generation). */
    uint64_t nocap_gen;
    uint32_t nocap_total;
};

struct numa {
    struct pw_numa_node info; /* as reported in hello (totals) and report (free); what the core
                                 has placed on it lives in the placer */
};

/* Restore health of a host (health.c). */
#define HEALTH_RING 16
enum { PW_CORDON_NONE, PW_CORDON_FAILURES, PW_CORDON_SLOW };
struct pw_health {
    double ring[HEALTH_RING]; /* restore ms, or -1 for a failure */
    size_t n, pos;
    int cordoned;   /* no new VMs, unless on probation */
    int probation;  /* cordoned, but eligible again to prove itself */
    int reason;     /* PW_CORDON_* */
    int64_t since, until, backoff_ms;
};

struct host {
    struct pw_hnode hnode; /* core->hosts by id */
    struct pw_list link;   /* core->host_list */
    struct pw_list drain_link; /* core->draining while draining */
    struct pw_core *core;
    struct pw_phost *ph;   /* its entry in core->placer */
    int draining;          /* operator drain */
    int agent_draining;    /* the agent says it drains */
    char id[PW_NAME_MAX];
    char boot_id[PW_NAME_MAX];
    char driver[32];
    enum pw_host_state state;
    int64_t last_seen;
    double load;
    struct pw_label labels[PW_PROTO_MAX_LABELS];
    size_t nlabels;
    struct numa *numa;
    size_t nnuma;
    struct pw_list vms; /* struct vm.host_link */
    uint32_t nvms;
    int expected; /* known alive before a restart, not yet said hello */
    /* Outbox: every command not yet acknowledged, ids ascending. */
    struct pw_cmd *cmds;
    size_t ncmds, capcmds;
    size_t nnotes;          /* of which lease notes (best-effort, bounded apart) */
    uint64_t next_cmd_id;
    uint64_t event_applied; /* highest agent event seq applied */
    int urgent;             /* the outbox holds a command worth waking the agent for */
    /* Leases with a smaller id ended when the host was declared dead: its next hello may
     * still list them (the agent was only silent), but they are not honoured again. */
    uint64_t revoked_below;
    struct pw_health health;
};

struct lease;

struct vm {
    struct pw_hnode hnode;     /* core->vms by id */
    struct pw_list fn_link;    /* fn->idle while idle */
    struct pw_list host_link;  /* host->vms */
    uint64_t id;
    struct fn *fn;
    struct host *host;
    size_t numa_idx; /* index into host->numa */
    enum pw_vm_state state;
    int64_t since;      /* when it entered state */
    int64_t idle_since; /* when it last became idle */
    struct lease *lease;
    uint32_t memory_mb;
    uint32_t vcpus;
    char address[PW_LABEL_VALUE_MAX];
    /* Drain: a VM on a draining host and the VM restored elsewhere to take its place. */
    struct vm *repl;    /* set on the VM being moved */
    struct vm *repl_of; /* set on its replacement */
    /* The id of its latest lease note queued in host->cmds (0: none). It may be stale (acked
     * since): pw_core_host_cmd checks it against the outbox, so dedupe needs no scan. */
    uint64_t note_cmd;
};

struct lease {
    struct pw_hnode hnode; /* core->leases by id */
    struct pw_list link;   /* core->lease_list, ordered by expires_at */
    uint64_t id;
    struct vm *vm;
    int64_t granted_at;
    int64_t expires_at;
};

struct waiter {
    struct pw_hnode hnode;  /* core->waiters by req_id */
    struct pw_list fn_link; /* fn->waiters */
    struct pw_list link;    /* core->waiter_list, arrival order */
    uint64_t req_id;
    struct fn *fn;
    int64_t since;
    int64_t deadline;
};

struct pw_core {
    struct pw_core_config cfg;
    int64_t started_at;
    int64_t grace_until;       /* adoption grace ends at this time ... */
    uint32_t expected_pending; /* ... or once no expected host is missing */
    struct pw_htab fns, hosts, vms, leases, waiters;
    struct pw_list fn_list, dying, host_list, lease_list, waiter_list;
    struct pw_list draining; /* hosts draining (struct host.drain_link) */
    struct pw_placer *placer;
    uint64_t next_id; /* VM and lease ids */
    uint64_t metrics[PW_METRIC__COUNT];
    /* health.c: every host's recent successful restore times, log-bucketed (4 per octave), so
     * a restore can be compared with the fleet without gathering every host's record. */
    uint32_t restore_hist[64];
    uint64_t restore_hist_n;
    int64_t last_expiry_scan;
    /* Action queue: a ring that grows as needed. */
    struct pw_action *acts;
    size_t acts_head, acts_len, acts_cap;
};

/* health.c */
void pw_core_health_observe(struct pw_core *c, struct host *h, double restore_ms, int64_t now);
void pw_core_health_tick(struct pw_core *c, int64_t now);
int pw_core_health_blocks(const struct host *h);

/* core.c */
struct pw_action *pw_core_push_action(struct pw_core *c, enum pw_act_type type);
void pw_core_metric(struct pw_core *c, enum pw_metric_id id, const struct fn *f, double value);
/* pw_core_metric_n records n occurrences at once (one action with count n). */
void pw_core_metric_n(struct pw_core *c, enum pw_metric_id id, const struct fn *f, double value, uint32_t n);
struct fn *pw_core_fn_find(const struct pw_core *c, const char *name);
struct vm *pw_core_vm_find(const struct pw_core *c, uint64_t id);
struct vm *pw_core_vm_new(struct pw_core *c, int64_t now, uint64_t id, struct fn *f, struct host *h,
                          size_t numa_idx, enum pw_vm_state state, uint32_t memory_mb, uint32_t vcpus);
void pw_core_vm_set_state(struct pw_core *c, struct vm *v, enum pw_vm_state to, int64_t now);
void pw_core_vm_ready(struct pw_core *c, struct vm *v, int64_t now, const char *address);
void pw_core_vm_destroy(struct pw_core *c, struct vm *v, int64_t now);
struct lease *pw_core_lease_new(struct pw_core *c, struct vm *v, uint64_t id, int64_t now, int64_t expires_at);
void pw_core_lease_drop(struct pw_core *c, struct lease *l);
void pw_core_reconcile_all(struct pw_core *c, int64_t now);
/* pw_core_restore_failed records a failed restore of f: from the second failure in a row,
 * restores wait 100 ms, doubling per failure up to 30 s; a VM becoming ready resets it. */
void pw_core_restore_failed(struct pw_core *c, struct fn *f, int64_t now);
/* pw_core_place_restore places one VM of f and queues its restore; NULL when there is no room
 * or the agent's outbox is full. for_waiter counts it as a cold start. */
struct vm *pw_core_place_restore(struct pw_core *c, struct fn *f, int64_t now, int for_waiter, int replacing);
struct pw_placer *pw_core_placer_new(const struct pw_core_config *cfg);
void pw_core_reconcile(struct pw_core *c, struct fn *f, int64_t now);
int pw_core_in_grace(const struct pw_core *c, int64_t now);

/* agents.c */
struct host *pw_core_host_get(const struct pw_core *c, const char *id);
/* Queues a command; returns 0 when the outbox is full (notes are then dropped). */
int pw_core_host_cmd(struct pw_core *c, struct host *h, const struct pw_cmd *cmd);
void pw_core_host_check_liveness(struct pw_core *c, int64_t now);
void pw_core_host_free(struct host *h);

/* placement.c */
/* pw_core_place picks a host and NUMA node with room for one VM of f (placer.h). Returns 0 if
 * none. Spread limits are taken against the pool as it will be once the moves off draining
 * hosts are done (replacing: this VM replaces one of them). */
int pw_core_place(struct pw_core *c, struct fn *f, int replacing, struct host **out_host, size_t *out_numa);
/* pw_core_place_known_full says whether pw_core_place would answer "no room" from f's memory
 * of its last failed placement (nocap_gen), without a search. */
int pw_core_place_known_full(const struct pw_core *c, const struct fn *f, int replacing);
/* pw_core_pick_victim returns the idle VM of f (not on a draining host) to remove first, the
 * worst placed among the `scan` oldest. With only_expired, it returns NULL unless the oldest has
 * been idle for keepalive_ms; the victim may be another VM, which then hands its age to the
 * oldest (expiry decides how many go, placement which). NULL if none. */
struct vm *pw_core_pick_victim(struct pw_core *c, struct fn *f, int64_t now, int only_expired, int64_t keepalive_ms,
                               size_t scan);
/* Drain (placement.c): the host's eligibility follows its state and drain flags. */
void pw_core_host_sync_eligible(struct pw_core *c, struct host *h);
/* pw_core_host_set_draining applies a change of h's operator or agent drain flag. */
void pw_core_host_update_drain(struct pw_core *c, struct host *h, int64_t now);
/* pw_core_drain_vm moves one VM of a draining host along: restores are cancelled, idle VMs get
 * a replacement and are destroyed once it is ready. */
void pw_core_drain_vm(struct pw_core *c, struct vm *v, int64_t now);
void pw_core_drain_tick(struct pw_core *c, int64_t now);
/* pw_core_vm_unlink_repl breaks v's drain links (v is leaving). */
void pw_core_vm_unlink_repl(struct vm *v);
static inline int pw_core_host_out(const struct host *h) { return h->draining || h->agent_draining; }

#endif
