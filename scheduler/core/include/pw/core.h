/* core.h — the pure scheduling core: pools, VMs, leases, hosts, placement, reconcile.
 *
 * The core does no I/O, reads no clock, starts no thread and has no globals. Every entry point
 * takes `now` (milliseconds on the caller's monotonic clock) and may queue actions: commands to
 * agents, answers to acquires, rows to persist, metrics. The caller drains them with
 * pw_core_next_action() after each call and executes them (prewarmd with libuv/NNG/libpq,
 * prewarm-replay against simulated agents in virtual time). So the policy measured on traces is
 * the policy shipped, and the core is tested without sockets.
 *
 * Threads: a core belongs to one thread; nothing here is thread-safe.
 * Lifecycle and state machines: docs/core.md. */
#ifndef PW_CORE_H
#define PW_CORE_H

#include "pw/placer.h"
#include "pw/proto.h"
#include "pw/util.h"

#include <stdint.h>

struct pw_core; /* opaque */

/* ---- configuration ---- */

#define PW_POLICY_MAP(X)                                                          \
    X(FIXED, "fixed")         /* keep `min` idle; idle beyond min expire after keepalive */ \
    X(KEEPALIVE, "keepalive") /* no prewarm: a VM stays warm `keepalive` after use; `min` VMs total */ \
    X(PREDICTIVE, "predictive") /* the predictor sets a floor each minute (quantile of forecast
                                   demand); above it VMs stay `keepalive` after use; `min` total */

enum pw_policy_kind {
#define PW_POLICY_ENUM(n, s) PW_POLICY_##n,
    PW_POLICY_MAP(PW_POLICY_ENUM)
#undef PW_POLICY_ENUM
    PW_POLICY__COUNT
};
const char *pw_policy_str(enum pw_policy_kind k);
int pw_policy_parse(const char *s); /* -1 when unknown */

#define PW_POOL_HARD_MAX 10000 /* no pool may exceed this many VMs */

struct pw_pool_policy {
    enum pw_policy_kind kind;
    uint32_t min;         /* fixed: idle VMs kept ready; keepalive: VMs kept in total */
    uint32_t max;         /* cap on VMs (restoring + idle + leased); 1..PW_POOL_HARD_MAX */
    int64_t keepalive_ms; /* idle time after which a VM above the floor is destroyed */
    double quantile;      /* predictive: quantile of forecast demand the floor covers, [0.5, 1) */
};

struct pw_function_spec {
    char name[PW_NAME_MAX];
    char image[PW_IMAGE_MAX]; /* image or golden snapshot reference, opaque to the core */
    uint32_t memory_mb;       /* 1..1048576 */
    uint32_t vcpus;           /* 1..256 */
    struct pw_pool_policy pool;
    struct pw_placement_spec placement; /* where its VMs may go (placer.h); zero = anywhere */
};

/* pw_function_spec_validate checks ranges (name, memory, vcpus, min <= max <= hard max,
 * keepalive >= 0). Returns PW_OK or PW_ERR_INVAL with a reason in errbuf. Pure. */
int pw_function_spec_validate(const struct pw_function_spec *spec, char *errbuf, size_t errlen);
/* pw_pool_policy_default fills the defaults: fixed, min 0, max 100, keepalive 60 s, quantile
 * 0.99. */
void pw_pool_policy_default(struct pw_pool_policy *p);

struct pw_core_config {
    uint64_t epoch;             /* fencing epoch of this scheduler, > 0 */
    uint64_t id_base;           /* VM and lease ids start above this (unique per process run) */
    int64_t heartbeat_ms;       /* agents report at least this often; dead after 3 missed */
    int32_t dead_after_beats;   /* default 3 */
    int64_t lease_ttl_ms;       /* a lease not released within this is reclaimed */
    int64_t adopt_grace_ms;     /* after start, do not create pool VMs for this long (agents
                                   re-hello and their VMs are adopted first); 0 = none */
    uint32_t max_waiters_per_fn; /* parked acquires per function; more get PW_ERR_LIMIT */
    uint32_t max_cmds_per_host;  /* unacknowledged commands per agent (lease notes: a quarter more) */
    int lease_notes;             /* tell agents of leases (for adoption after a restart); default 1 */
    int64_t cordon_ms;           /* self-healing: first cordon of an anomalous host (doubles on
                                    repeats); 0 turns it off; default 30000 (health.c) */
    struct pw_placer_config placement; /* weights and search bounds (placer.h) */
};
void pw_core_config_default(struct pw_core_config *c);

/* ---- lifecycle ---- */

/* pw_core_new creates a core starting at time now. The caller owns it; free with
 * pw_core_free. cfg is copied. */
struct pw_core *pw_core_new(const struct pw_core_config *cfg, int64_t now);
void pw_core_free(struct pw_core *c);

/* ---- events in ---- */

/* pw_core_function_put creates or updates a function (spec already validated and persisted by
 * the caller). Pools reconcile at once. Returns PW_OK or PW_ERR_INVAL. */
int pw_core_function_put(struct pw_core *c, int64_t now, const struct pw_function_spec *spec);
/* pw_core_function_delete destroys the function's VMs; leased ones when released. Parked
 * acquires fail with PW_ERR_NOTFOUND. Returns PW_ERR_NOTFOUND if unknown. */
int pw_core_function_delete(struct pw_core *c, int64_t now, const char *name);
/* pw_core_function_get copies the spec out. Returns PW_ERR_NOTFOUND if unknown. */
int pw_core_function_get(const struct pw_core *c, const char *name, struct pw_function_spec *out);

/* pw_core_set_dynamic lays a policy engine's current wish for fn over the operator's pool (the
 * predictor in prewarmd, a baseline policy in prewarm-replay): keep at least `floor` VMs alive
 * (restoring, idle or leased), and destroy idle VMs above the pool's floor once they have been
 * idle for keepalive_ms (-1: the pool's own keepalive_ms). The operator's min and max still
 * bound it: the effective floor is max(floor, the pool's own floor) clamped to max. Reconciles
 * at once. Returns PW_ERR_NOTFOUND for an unknown function. A function_put keeps the overlay;
 * pw_core_clear_dynamic removes it. */
int pw_core_set_dynamic(struct pw_core *c, int64_t now, const char *fn, uint32_t floor, int64_t keepalive_ms);
int pw_core_clear_dynamic(struct pw_core *c, int64_t now, const char *fn);

/* pw_core_expect_host tells the core a host was alive before a restart, so the adoption grace
 * can end early once every expected host has said hello. */
void pw_core_expect_host(struct pw_core *c, const char *host_id);

/* pw_core_host_drain sets (drain = 1) or clears an operator's drain on a host: no new VMs go
 * there; each of its idle VMs gets a replacement restored elsewhere and is destroyed once that
 * replacement is ready; its restoring VMs are destroyed (the pool restores them elsewhere);
 * leased VMs finish their lease, then are replaced the same way. While a host drains, a pool
 * may exceed its max by the VMs still on it. An agent can also report draining itself (either
 * source drains). Returns PW_OK or PW_ERR_NOTFOUND for an unknown host. */
int pw_core_host_drain(struct pw_core *c, int64_t now, const char *host_id, int drain);
/* pw_core_cordon_reason_str names a cordon reason of struct pw_host_view (health.c). */
const char *pw_core_cordon_reason_str(int reason);
/* pw_core_host_remember_drain records a persisted operator drain for a host that has not said
 * hello yet (prewarmd at start), so it never receives a VM in between. */
void pw_core_host_remember_drain(struct pw_core *c, const char *host_id);

/* pw_core_agent_hello registers (or re-registers) an agent with its topology and inventory,
 * adopting VMs the core does not know and forgetting ones the agent no longer has. Fills
 * reply (owned by the caller: free with pw_msg_fini). Returns PW_OK or PW_ERR_PROTO. */
int pw_core_agent_hello(struct pw_core *c, int64_t now, const struct pw_msg_hello *h, struct pw_msg *reply);
/* pw_core_agent_report applies a report's events and acknowledgements. Fills reply with every
 * unacknowledged command, or an error "rehello" when the core does not know this agent session.
 * Returns PW_OK, or PW_ERR_PROTO for a report that does not fit (reply then holds an error). */
int pw_core_agent_report(struct pw_core *c, int64_t now, const struct pw_msg_report *r, struct pw_msg *reply);
/* pw_core_agent_reply rebuilds the reply for a known agent (used when a held long poll is
 * answered later). Returns PW_ERR_NOTFOUND for an unknown or dead agent. */
int pw_core_agent_reply(struct pw_core *c, const char *host_id, struct pw_msg *reply);
/* pw_core_agent_has_cmds returns nonzero when the agent has commands worth waking it for. */
int pw_core_agent_has_cmds(const struct pw_core *c, const char *host_id);
/* pw_core_agent_lost declares an agent dead now (e.g. the link knows it is gone). */
void pw_core_agent_lost(struct pw_core *c, int64_t now, const char *host_id);

/* pw_core_acquire asks for a lease on an idle VM of fn for request req_id (the caller's id,
 * echoed in the answer). The answer comes as a PW_ACT_ACQUIRE_ANSWER action: at once when a VM
 * is idle, else when a restore completes or a lease is released, or at deadline with
 * PW_ERR_TIMEOUT. Returns PW_OK when accepted (an answer will follow), or an error with no
 * action queued: PW_ERR_NOTFOUND (unknown function), PW_ERR_LIMIT (too many parked). */
int pw_core_acquire(struct pw_core *c, int64_t now, const char *fn, uint64_t req_id, int64_t deadline);
/* pw_core_acquire_cancel forgets a parked acquire (its caller went away). No answer follows. */
void pw_core_acquire_cancel(struct pw_core *c, int64_t now, uint64_t req_id);

enum pw_release_outcome { PW_RELEASE_OK, PW_RELEASE_ERROR /* VM is recycled (destroyed) */ };
/* pw_core_release ends a lease; the VM becomes idle (or is destroyed on error/over target).
 * Returns PW_OK or PW_ERR_NOTFOUND (unknown or expired lease). */
int pw_core_release(struct pw_core *c, int64_t now, uint64_t lease_id, int64_t duration_ms,
                    enum pw_release_outcome outcome);

/* pw_core_tick runs housekeeping: parked acquire deadlines, lease expiry, agent liveness,
 * keep-alive expiry and pool reconcile. Call it every 100 ms or so, and at
 * pw_core_next_deadline(). */
void pw_core_tick(struct pw_core *c, int64_t now);
/* pw_core_next_deadline returns the earliest time tick has work for, or INT64_MAX. */
int64_t pw_core_next_deadline(const struct pw_core *c);

/* ---- actions out ---- */

#define PW_ACT_TYPE_MAP(X)                                                         \
    X(AGENT_CMD, "agent_cmd")           /* a command was queued for an agent */     \
    X(ACQUIRE_ANSWER, "acquire_answer") /* answer to a pw_core_acquire */           \
    X(STORE_HOST, "store_host")         /* persist a host row (hello, death) */     \
    X(STORE_INVOCATION, "store_invocation") /* count one invocation of fn */        \
    X(METRIC, "metric")                 /* count or observe something */

enum pw_act_type {
#define PW_ACT_ENUM(n, s) PW_ACT_##n,
    PW_ACT_TYPE_MAP(PW_ACT_ENUM)
#undef PW_ACT_ENUM
    PW_ACT__COUNT
};

#define PW_METRIC_MAP(X)                                                     \
    X(ACQUIRE_WARM, "acquire_warm")       /* value: wait ms (0) */           \
    X(ACQUIRE_COLD, "acquire_cold")       /* value: wait ms */               \
    X(ACQUIRE_TIMEOUT, "acquire_timeout") /* value: wait ms */               \
    X(COLD_START, "cold_start")           /* a restore placed for a parked acquire */ \
    X(RESTORE_DONE, "restore_done")       /* value: restore ms (agent-measured) */ \
    X(RESTORE_FAILED, "restore_failed")                                      \
    X(LEASE_EXPIRED, "lease_expired")                                        \
    X(VM_EXPIRED, "vm_expired")           /* idle VM destroyed by keep-alive */ \
    X(VM_LOST, "vm_lost")                 /* VM gone without our asking */   \
    X(AGENT_DEAD, "agent_dead")                                              \
    X(NO_CAPACITY, "no_capacity")         /* placement found no room */      \
    X(VM_MOVED, "vm_moved")               /* an idle VM on a draining host was replaced */ \
    X(HOST_CORDONED, "host_cordoned")     /* host + reason (in function); value: evidence */ \
    X(HOST_UNCORDONED, "host_uncordoned") /* host; value: ms cordoned */      \
    X(AGENT_PROTO_ERROR, "agent_proto_error")

enum pw_metric_id {
#define PW_METRIC_ENUM(n, s) PW_METRIC_##n,
    PW_METRIC_MAP(PW_METRIC_ENUM)
#undef PW_METRIC_ENUM
    PW_METRIC__COUNT
};
const char *pw_metric_str(enum pw_metric_id m);

struct pw_lease_info {
    uint64_t lease_id;
    uint64_t vm_id;
    char host[PW_NAME_MAX];
    char address[PW_LABEL_VALUE_MAX];
    int cold;           /* 1 when the request waited for a restore */
    int64_t wait_ms;
    int64_t expires_at; /* core time */
};

/* An action: a self-contained copy, owned by whoever popped it. */
struct pw_action {
    enum pw_act_type type;
    char host[PW_NAME_MAX];     /* AGENT_CMD, STORE_HOST: the agent */
    char function[PW_NAME_MAX]; /* ACQUIRE_ANSWER, STORE_INVOCATION, METRIC ("" if none) */
    union {
        struct pw_cmd cmd;  /* AGENT_CMD (a copy) */
        struct {
            uint64_t req_id;
            int err;        /* PW_OK, PW_ERR_TIMEOUT, PW_ERR_NOTFOUND, PW_ERR_NOCAP */
            struct pw_lease_info lease; /* when err == PW_OK */
        } answer;
        struct {
            int alive;
            int64_t at;     /* core time */
        } host;
        struct {
            int64_t at;
        } invocation;
        struct {
            enum pw_metric_id id;
            double value;
            uint32_t count; /* occurrences with this value (>= 1): a full cluster's failed
                               placements of one reconcile come as one action */
        } metric;
    } u;
};

/* pw_core_next_action pops the oldest queued action into *out; returns 0 when none remain. */
int pw_core_next_action(struct pw_core *c, struct pw_action *out);

/* ---- views (read-only snapshots for the API, metrics and tests) ---- */

/* Scheduler-side VM states. Legal transitions (checked by one set_state):
 *   restoring -> idle | failed | stopping | gone
 *   idle      -> leased | stopping | gone
 *   leased    -> idle | stopping | gone
 *   stopping  -> gone
 *   failed    -> stopping | gone
 * gone means the VM object is freed. */
#define PW_VM_STATE_MAP(X)                                         \
    X(RESTORING, "restoring") /* prewarm sent; not ready yet */     \
    X(IDLE, "idle")           /* running, ready, no lease */        \
    X(LEASED, "leased")       /* running, serving one invocation */ \
    X(STOPPING, "stopping")   /* destroy sent */                    \
    X(FAILED, "failed")       /* agent reported failure */          \
    X(GONE, "gone")           /* freed */

enum pw_vm_state {
#define PW_VM_ENUM(n, s) PW_VM_##n,
    PW_VM_STATE_MAP(PW_VM_ENUM)
#undef PW_VM_ENUM
    PW_VM__COUNT
};
const char *pw_vm_state_str(enum pw_vm_state s);

struct pw_pool_view {
    struct pw_function_spec spec;
    uint32_t restoring, idle, leased, stopping, failed;
    uint32_t waiters;
    uint32_t outgoing;    /* of the above, VMs on draining hosts (replaced, then destroyed) */
    uint32_t restore_failures; /* restores failed in a row; from the second, new ones back off
                                  (100 ms doubling to 30 s) until a VM becomes ready */
    uint32_t target_idle; /* what reconcile aims for now */
    uint32_t floor;       /* VMs kept alive whatever the traffic (policy min or dynamic overlay) */
    int dynamic;          /* a policy engine's overlay is set */
    uint64_t acquires, warm, cold, timeouts;
};
int pw_core_pool_view(const struct pw_core *c, const char *fn, struct pw_pool_view *out);
/* pw_core_pool_waiters is pw_pool_view's waiters alone (0 for an unknown function), without
 * copying the view: the daemon asks it per "no capacity" metric. */
uint32_t pw_core_pool_waiters(const struct pw_core *c, const char *fn);

#define PW_HOST_STATE_MAP(X)          \
    X(ALIVE, "alive") /* reporting */ \
    X(DEAD, "dead")   /* silent for too long; its VMs are forgotten */

enum pw_host_state {
#define PW_HOST_ENUM(n, s) PW_HOST_##n,
    PW_HOST_STATE_MAP(PW_HOST_ENUM)
#undef PW_HOST_ENUM
    PW_HOST__COUNT
};
const char *pw_host_state_str(enum pw_host_state s);

struct pw_host_view {
    char id[PW_NAME_MAX];
    enum pw_host_state state;
    char driver[32];
    int64_t last_seen;
    double load;
    size_t nnuma;
    struct pw_numa_node numa[PW_PROTO_MAX_NUMA]; /* free_* = what the core has not placed */
    uint32_t vms;
    struct pw_label labels[PW_PROTO_MAX_LABELS];
    size_t nlabels;
    int draining;       /* an operator drain (pw_core_host_drain) */
    int agent_draining; /* the agent reports draining */
    int cordoned;       /* self-healing: restores here failed or were slow against the fleet */
    int cordon_probation; /* cordoned, but taking VMs again to prove itself */
    char cordon_reason[24]; /* "restore_failures", "restore_slow" or "" */
    int64_t cordoned_since;
    char cloud[PW_NAME_MAX], region[PW_NAME_MAX], zone[PW_NAME_MAX], instance_type[PW_NAME_MAX];
    double cost_per_gib_hour;
    size_t nsnapshots; /* local golden snapshots */
};
/* Iteration in O(n) over everything: cb is called once per host / function / VM with a view
 * valid during the call; cb must not call into the core. Order: registration order for hosts
 * and functions, by host then placement for VMs. */
struct pw_vm_view;
typedef void (*pw_core_host_cb)(void *arg, const struct pw_host_view *h);
typedef void (*pw_core_function_cb)(void *arg, const struct pw_function_spec *f);
typedef void (*pw_core_vm_cb)(void *arg, const struct pw_vm_view *v);
void pw_core_host_each(const struct pw_core *c, pw_core_host_cb cb, void *arg);
void pw_core_function_each(const struct pw_core *c, pw_core_function_cb cb, void *arg);
int pw_core_host_find(const struct pw_core *c, const char *id, struct pw_host_view *out);
size_t pw_core_function_count(const struct pw_core *c);

struct pw_vm_view {
    uint64_t vm_id;
    char function[PW_NAME_MAX];
    char host[PW_NAME_MAX];
    int32_t numa_node;
    enum pw_vm_state state;
    uint64_t lease_id;
};
/* pw_core_lease_find describes the VM a lease holds. Returns PW_ERR_NOTFOUND when the lease is
 * unknown or over. */
int pw_core_lease_find(const struct pw_core *c, uint64_t lease_id, struct pw_vm_view *out);

/* pw_core_vm_at is the i-th VM of pw_core_vm_each's order; O(n) per call: for tests. */
int pw_core_vm_at(const struct pw_core *c, size_t i, struct pw_vm_view *out);
void pw_core_vm_each(const struct pw_core *c, pw_core_vm_cb cb, void *arg);

struct pw_core_stats {
    uint64_t hosts_alive, hosts_dead, functions, vms, leases, waiters;
    uint64_t metrics[PW_METRIC__COUNT];
    int in_grace;
};
void pw_core_stats(const struct pw_core *c, struct pw_core_stats *out);

/* pw_core_check verifies internal invariants (counts match lists, capacity sums, leases point
 * at leased VMs). Returns PW_OK or PW_ERR_INTERNAL with the first violation in errbuf. For
 * tests; O(everything). */
int pw_core_check(const struct pw_core *c, char *errbuf, size_t errlen);

#endif
