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
};

struct numa {
    struct pw_numa_node info; /* as reported in hello (totals) and report (free) */
    uint64_t mem_used_mb;     /* by VMs the core has on this node */
    int32_t vcpu_used;
};

struct host {
    struct pw_hnode hnode; /* core->hosts by id */
    struct pw_list link;   /* core->host_list */
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
};

/* How many VMs of one function one host runs, for spread scoring in O(1). */
struct hostfn {
    struct pw_hnode hnode; /* core->hostfns by (host, fn) */
    const struct host *h;
    const struct fn *f;
    uint32_t n;
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
    struct pw_htab fns, hosts, vms, leases, waiters, hostfns;
    struct pw_list fn_list, dying, host_list, lease_list, waiter_list;
    uint64_t next_id; /* VM and lease ids */
    uint64_t metrics[PW_METRIC__COUNT];
    int64_t last_expiry_scan;
    /* Action queue: a ring that grows as needed. */
    struct pw_action *acts;
    size_t acts_head, acts_len, acts_cap;
};

/* core.c */
struct pw_action *pw_core_push_action(struct pw_core *c, enum pw_act_type type);
void pw_core_metric(struct pw_core *c, enum pw_metric_id id, const struct fn *f, double value);
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
void pw_core_reconcile(struct pw_core *c, struct fn *f, int64_t now);
int pw_core_in_grace(const struct pw_core *c, int64_t now);

/* agents.c */
struct host *pw_core_host_get(const struct pw_core *c, const char *id);
/* Queues a command; returns 0 when the outbox is full (notes are then dropped). */
int pw_core_host_cmd(struct pw_core *c, struct host *h, const struct pw_cmd *cmd);
void pw_core_host_check_liveness(struct pw_core *c, int64_t now);
void pw_core_host_free(struct host *h);

/* placement.c */
uint32_t pw_core_hostfn_count(const struct pw_core *c, const struct host *h, const struct fn *f);
void pw_core_hostfn_add(struct pw_core *c, const struct host *h, const struct fn *f, int delta);
/* pw_core_place picks a host and NUMA node with room for one VM of f. Returns 0 if none. */
int pw_core_place(const struct pw_core *c, const struct fn *f, struct host **out_host, size_t *out_numa);

#endif
