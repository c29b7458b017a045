/* driver.h — the VMM driver table: what the agent needs from anything that runs microVMs.
 *
 * A driver restores, tracks and destroys VMs on the agent's libuv loop and reports every
 * state change asynchronously through pw_driver_event_cb. Drivers: "qemu" (QEMU microvm
 * guests restored from golden snapshots, docs/agent.md and docs/qemu.md) and "sim" (a
 * simulator for tests, demos and load tests). */
#ifndef PW_DRIVER_H
#define PW_DRIVER_H

#include "pw/numabind.h"
#include "pw/proto.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pw_agent_config;
struct pw_topology;
struct pw_driver;

/* One state change of a VM, as reported by a driver. Strings are borrowed for the call. */
struct pw_driver_event {
    uint64_t vm_id;
    enum pw_avm_state state; /* RUNNING, FAILED or GONE */
    int32_t restore_ms;      /* RUNNING after a restore: how long it took */
    const char *address;     /* RUNNING: "host:port" where the VM serves; else NULL */
    const char *error;       /* FAILED: why; else NULL */
};

/* pw_driver_event_cb is called on the loop thread, never from inside a driver op. */
typedef void (*pw_driver_event_cb)(struct pw_driver *d, const struct pw_driver_event *ev,
                                   void *arg);

struct pw_driver_ops {
    const char *name;    /* "qemu", "sim" */
    const char *summary; /* one line for --help and logs */
    /* init prepares the driver for d->topo on loop. Returns PW_OK or an error with errbuf. */
    int (*init)(struct pw_driver *d, uv_loop_t *loop, const struct pw_agent_config *cfg,
                char *errbuf, size_t errlen);
    /* fini stops every VM (no events) and releases the driver. Handles are closed; memory is
     * freed in their close callbacks, and a driver whose VMs take time to stop (qemu) finishes
     * that on the loop, so the loop must run until it is empty. A driver may leave its VMs
     * running on purpose when configured to (qemu_keep_vms: the next agent adopts them). */
    void (*fini)(struct pw_driver *d);
    /* prewarm starts restoring cmd->vm_id with cmd's function, image, memory and vCPUs on
     * cmd->numa_node (-1: the driver picks; *numa_node receives the node used). bind is the
     * agent's NUMA binding for cmd->numa_node (CPUs and memory node, numabind.h), borrowed for
     * the call; NULL when cmd->numa_node is -1 (a driver that picks a node and wants a binding
     * makes it with pw_numabind_for_node) or when that node cannot be bound on this machine
     * (the agent has logged why). A driver that starts processes applies it in the child with
     * pw_numabind_self; what it does without one is its own decision. PW_OK: RUNNING or FAILED
     * follows through the callback. An error (PW_ERR_NOCAP, PW_ERR_INVAL, PW_ERR_EXISTS,
     * PW_ERR_UNAVAIL) means nothing started and no event follows; errbuf says why. */
    int (*prewarm)(struct pw_driver *d, const struct pw_cmd *cmd, const struct pw_numabind *bind,
                   int32_t *numa_node, char *errbuf, size_t errlen);
    /* destroy stops vm_id; GONE follows through the callback. PW_ERR_NOTFOUND when the driver
     * does not know the VM (no event follows). Destroying a VM already stopping is PW_OK. */
    int (*destroy)(struct pw_driver *d, uint64_t vm_id);
    /* usage writes mem_free_mb and vcpu_free of each node of d->topo into nodes[0..n). */
    void (*usage)(struct pw_driver *d, struct pw_numa_node *nodes, size_t n);
    /* snapshots (optional; NULL: the driver knows of none) writes the names of the functions
     * whose golden snapshot is on this host's disk into out[0..max), in ascending strcmp
     * order and without duplicates (so two lists compare entry by entry), and returns how many
     * it wrote (<= max). Every name is pw_name_valid. The agent calls it whenever it builds a
     * hello or report: a change made inside prewarm leaves with the report that follows the
     * commands; a change made elsewhere waits for the next report (one heartbeat at most). */
    size_t (*snapshots)(struct pw_driver *d, char (*out)[PW_NAME_MAX], size_t max);
    /* snapshot (optional; NULL: the command is acknowledged and ignored) starts making the
     * golden snapshot of cmd->function from cmd->image (memory_mb, vcpus), replacing an older
     * one. It may finish later: the new snapshot shows in snapshots() once it is usable.
     * Returns PW_OK when started (or already there), or an error with a reason. */
    int (*snapshot)(struct pw_driver *d, const struct pw_cmd *cmd, char *errbuf, size_t errlen);
    /* adopted (optional; NULL: none) writes the VMs the driver took over in init — left
     * running by an earlier agent on this host — into out[0..max) and returns how many. The
     * agent calls it once, right after init, and puts them into its inventory (their state,
     * function, node, shape and address as written); no event is reported for them. */
    size_t (*adopted)(struct pw_driver *d, struct pw_vm_info *out, size_t max);
    /* labels (optional; NULL: none) writes host labels the driver found out in init (e.g.
     * "accelerator": "tcg") into out[0..max) and returns how many. The agent adds each to its
     * hello unless the configuration sets the same key. Called once, right after init. */
    size_t (*labels)(struct pw_driver *d, struct pw_label *out, size_t max);
};

struct pw_driver {
    const struct pw_driver_ops *ops;
    const struct pw_topology *topo; /* borrowed from the agent; outlives the driver */
    pw_driver_event_cb event_cb;
    void *event_arg;
    void *impl; /* the driver's own state */
};

/* pw_driver_find returns the table registered under name, or NULL. */
const struct pw_driver_ops *pw_driver_find(const char *name);
/* pw_driver_list returns the NULL-terminated list of registered drivers. */
const struct pw_driver_ops *const *pw_driver_list(void);

/* The built-in drivers. */
extern const struct pw_driver_ops pw_driver_sim;
extern const struct pw_driver_ops pw_driver_qemu;

#endif
