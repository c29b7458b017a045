/* proto.h — the agent wire protocol: message structs and their JSON codec.
 *
 * Agents send requests (hello, report) over NNG req/rep; the scheduler answers each with a
 * reply (commands, acknowledgements) or an error. Every message is a JSON object with "v" (the
 * protocol version) and "type". The full description lives in docs/protocol.md.
 *
 * Reliability over req/rep: both directions are sequenced and acknowledged.
 *  - Agent events carry a per-boot increasing seq; a report repeats every event the scheduler
 *    has not acknowledged yet (reply.event_ack), and the scheduler applies each seq once.
 *  - Commands carry (epoch, id), ids increasing per agent within an epoch; a reply repeats every
 *    command the agent has not acknowledged yet (report.cmd_ack), and the agent executes each id
 *    once. A command from an epoch lower than the highest the agent has seen is refused.
 * So a lost, duplicated or reordered message changes nothing; only progress is delayed.
 *
 * Decoding never trusts input: sizes, counts and strings are bounded, unknown types and
 * missing fields are errors. The codec is pure (no I/O) and may be called from any thread
 * (cJSON records its last parse error in a static, which nothing here reads). */
#ifndef PW_PROTO_H
#define PW_PROTO_H

#include "pw/util.h"

#include <stddef.h>
#include <stdint.h>

#define PW_PROTO_VERSION 1
#define PW_PROTO_MAX_MSG (1024 * 1024) /* bytes; larger messages are refused */
#define PW_PROTO_MAX_NUMA 64
#define PW_PROTO_MAX_LABELS 32
#define PW_PROTO_MAX_VMS 4096    /* inventory entries per message */
#define PW_PROTO_MAX_EVENTS 4096 /* events per report */
#define PW_PROTO_MAX_CMDS 1024   /* commands per reply */
#define PW_LABEL_VALUE_MAX 128
#define PW_IMAGE_MAX 256
#define PW_ERRMSG_MAX 256
#define PW_CPULIST_MAX 256
#define PW_PROTO_MAX_SNAPSHOTS 1024 /* local golden snapshots listed per message */

/* Host labels with a meaning to placement (docs/placement.md). Other labels are kept and shown
 * but not interpreted. cost_per_gib_hour is a decimal number >= 0 (e.g. "0.0125"). */
#define PW_LABEL_CLOUD "cloud"
#define PW_LABEL_REGION "region"
#define PW_LABEL_ZONE "zone"
#define PW_LABEL_INSTANCE_TYPE "instance_type"
#define PW_LABEL_COST "cost_per_gib_hour"

/* VM states as an agent sees them. The scheduler adds idle/leased on top of RUNNING. */
#define PW_AVM_STATE_MAP(X)                                    \
    X(RESTORING, "restoring") /* being restored from snapshot */ \
    X(RUNNING, "running")     /* restored and ready to serve */  \
    X(STOPPING, "stopping")   /* destroy in progress */          \
    X(GONE, "gone")           /* destroyed; only in events */    \
    X(FAILED, "failed")       /* restore or run failed */

enum pw_avm_state {
#define PW_AVM_ENUM(n, s) PW_AVM_##n,
    PW_AVM_STATE_MAP(PW_AVM_ENUM)
#undef PW_AVM_ENUM
    PW_AVM__COUNT
};
const char *pw_avm_state_str(enum pw_avm_state s);
/* Returns the state for a string, or -1. */
int pw_avm_state_parse(const char *s);

struct pw_label {
    char key[PW_NAME_MAX];
    char value[PW_LABEL_VALUE_MAX];
};

/* One NUMA node of a host. In hello all fields are set; in report only id and the free_*
 * fields are meaningful. */
struct pw_numa_node {
    int32_t id;
    char cpulist[PW_CPULIST_MAX]; /* kernel cpulist syntax, e.g. "0-3,8-11" */
    int32_t ncpus;
    uint64_t mem_total_mb;
    uint64_t mem_free_mb;
    int32_t vcpu_total; /* vCPU slots the agent offers on this node */
    int32_t vcpu_free;
};

/* One VM in an agent's inventory. */
struct pw_vm_info {
    uint64_t vm_id;
    char function[PW_NAME_MAX];
    enum pw_avm_state state;
    int32_t numa_node;
    uint32_t memory_mb;
    uint32_t vcpus;
    uint64_t lease_id;     /* 0 when the agent knows of no lease on it */
    int64_t lease_left_ms; /* time left on that lease when the message was sent */
    char address[PW_LABEL_VALUE_MAX]; /* where the VM serves, "host:port"; may be empty */
};

/* One agent event: a VM changed state. */
struct pw_agent_event {
    uint64_t seq;
    uint64_t vm_id;
    enum pw_avm_state state; /* the new state */
    char function[PW_NAME_MAX];
    int32_t numa_node;
    int32_t restore_ms; /* for RUNNING after a restore: how long it took; else 0 */
    char address[PW_LABEL_VALUE_MAX];
    char error[PW_ERRMSG_MAX]; /* for FAILED: why */
};

#define PW_CMD_TYPE_MAP(X)                                            \
    X(PREWARM, "prewarm") /* restore a new VM of a function */         \
    X(DESTROY, "destroy") /* stop and remove a VM */                  \
    X(LEASE, "lease")     /* note: the VM is leased (for adoption) */ \
    X(UNLEASE, "unlease") /* note: the VM is idle again */    \
    X(SNAPSHOT, "snapshot") /* make the function's golden snapshot (vm_id 0) */

enum pw_cmd_type {
#define PW_CMD_ENUM(n, s) PW_CMD_##n,
    PW_CMD_TYPE_MAP(PW_CMD_ENUM)
#undef PW_CMD_ENUM
    PW_CMD__COUNT
};
const char *pw_cmd_type_str(enum pw_cmd_type t);

struct pw_cmd {
    uint64_t id;
    enum pw_cmd_type type;
    uint64_t vm_id;
    /* PREWARM */
    char function[PW_NAME_MAX];
    char image[PW_IMAGE_MAX];
    uint32_t memory_mb;
    uint32_t vcpus;
    int32_t numa_node;
    /* LEASE */
    uint64_t lease_id;
    int64_t lease_ttl_ms;
};

#define PW_MSG_TYPE_MAP(X)          \
    X(HELLO, "hello")   /* agent */ \
    X(REPORT, "report") /* agent */ \
    X(REPLY, "reply")   /* sched */ \
    X(ERROR, "error")   /* sched */

enum pw_msg_type {
#define PW_MSG_ENUM(n, s) PW_MSG_##n,
    PW_MSG_TYPE_MAP(PW_MSG_ENUM)
#undef PW_MSG_ENUM
    PW_MSG__COUNT
};
const char *pw_msg_type_str(enum pw_msg_type t);

/* hello: sent once per connection (and again when the scheduler asks). Carries everything. */
struct pw_msg_hello {
    char agent_id[PW_NAME_MAX];
    char boot_id[PW_NAME_MAX];  /* new at every agent start */
    char version[32];
    char driver[32];            /* "sim", "qemu" */
    uint64_t epoch;             /* highest scheduler epoch this agent has seen, 0 if none */
    uint64_t cmd_ack;           /* highest command id executed in that epoch */
    uint64_t event_seq;         /* seq of the last event folded into this inventory */
    struct pw_label *labels;    /* nlabels entries */
    size_t nlabels;
    struct pw_numa_node *numa;  /* nnuma entries */
    size_t nnuma;
    struct pw_vm_info *vms;     /* full inventory */
    size_t nvms;
    /* Functions whose golden snapshot is on this host's disk (placement prefers them). */
    char (*snapshots)[PW_NAME_MAX]; /* nsnapshots entries, each a valid name */
    size_t nsnapshots;
    int draining;               /* the host's own operator asked it to take no new VMs */
    /* On a TLS agent link: the agent's certificate (PEM) and its key's signature over the agent
     * id, boot id and auth_ts_ms (tlsid.h). Empty on a plain link. */
    char auth_cert[4096];
    char auth_sig[512];
    int64_t auth_ts_ms;
};

/* report: the long poll. Repeats unacknowledged events; inventory only when asked. */
struct pw_msg_report {
    char agent_id[PW_NAME_MAX];
    char boot_id[PW_NAME_MAX];
    uint64_t seq;               /* report counter, for logs and duplicate detection */
    uint64_t epoch;
    uint64_t cmd_ack;
    double load;                /* 1-minute load average */
    struct pw_numa_node *numa;  /* free memory and vCPUs per node */
    size_t nnuma;
    struct pw_agent_event *events;
    size_t nevents;
    int has_inventory;
    struct pw_vm_info *vms;
    size_t nvms;
    /* The snapshot list, sent only when it changed since the last acknowledged report (and
     * then complete, possibly empty). */
    int has_snapshots;
    char (*snapshots)[PW_NAME_MAX];
    size_t nsnapshots;
    int draining; /* as in hello; every report carries the current value */
};

/* reply: the scheduler's answer to hello or report. */
struct pw_msg_reply {
    uint64_t epoch;
    uint64_t event_ack;     /* highest agent event seq applied */
    int32_t heartbeat_ms;   /* how often the agent must report at the latest */
    int want_inventory;     /* send the full inventory in the next report */
    struct pw_cmd *cmds;    /* every unacknowledged command, ids ascending */
    size_t ncmds;
};

/* error: the request was refused. code "rehello" asks the agent to say hello again. */
struct pw_msg_error {
    char code[PW_NAME_MAX];
    char message[PW_ERRMSG_MAX];
};

struct pw_msg {
    enum pw_msg_type type;
    union {
        struct pw_msg_hello hello;
        struct pw_msg_report report;
        struct pw_msg_reply reply;
        struct pw_msg_error error;
    } u;
};

/* pw_msg_init zeroes m as an empty message of the given type. */
void pw_msg_init(struct pw_msg *m, enum pw_msg_type type);
/* pw_msg_fini frees the arrays a message owns (from pw_proto_decode or filled by the caller
 * with pw_xmalloc'd arrays) and leaves m empty. Safe on a zeroed message. */
void pw_msg_fini(struct pw_msg *m);

/* pw_proto_encode appends m as JSON to out. Returns PW_OK; PW_ERR_TOOBIG when out's cap is
 * reached or a count exceeds its PW_PROTO_MAX_*; PW_ERR_INVAL for anything the decoder would
 * refuse (invalid name, out-of-range value, missing required field). On error out is left as
 * it was. Does not take ownership of m. */
int pw_proto_encode(const struct pw_msg *m, struct pw_buf *out);

/* pw_proto_decode parses len bytes (need not be NUL-terminated) into m. On PW_OK the caller
 * owns m's arrays and releases them with pw_msg_fini. On error (PW_ERR_PARSE, PW_ERR_PROTO,
 * PW_ERR_TOOBIG) m is left empty and errbuf (if not NULL) holds a one-line reason. */
int pw_proto_decode(const char *data, size_t len, struct pw_msg *m, char *errbuf, size_t errlen);

#endif
