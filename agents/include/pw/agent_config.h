/* agent_config.h — the agent's configuration and its three sources.
 *
 * Precedence: built-in defaults < JSON config file (--config) < environment (PREWARM_*) <
 * command-line flags. Every source goes through pw_agent_config_set, so a key means the same
 * thing everywhere and is validated once. */
#ifndef PW_AGENT_CONFIG_H
#define PW_AGENT_CONFIG_H

#include "pw/log.h"
#include "pw/proto.h"

#include <stddef.h>
#include <stdint.h>

#define PW_AGENT_URL_MAX 256
#define PW_AGENT_PATH_MAX 1024
#define PW_AGENT_DEFAULT_SCHEDULER "tcp://127.0.0.1:7070"
#define PW_AGENT_SIM_SNAPSHOTS_MAX 256 /* pre-seeded snapshots of the sim driver */

struct pw_agent_config {
    char id[PW_NAME_MAX];                  /* required: this host's name */
    char scheduler_url[PW_AGENT_URL_MAX];  /* NNG URL the agent dials */
    char driver[32];                       /* VMM driver name, "sim" */
    char topology_root[PW_AGENT_PATH_MAX]; /* "/" on a real host; fixture trees in tests */
    struct pw_label labels[PW_PROTO_MAX_LABELS]; /* well-known keys: PW_LABEL_* in proto.h */
    size_t nlabels;
    double vcpu_overcommit;   /* vCPU slots per host CPU, > 0; default 1 */
    enum pw_log_level log_level;
    int draining;             /* start draining (no new VMs wanted); SIGUSR1 toggles; default 0 */
    /* sim driver */
    int64_t sim_restore_ms;   /* nominal restore time; default 200 */
    int64_t sim_jitter_ms;    /* restore time varies uniformly by +/- this; default 0 */
    int64_t sim_stop_max_ms;  /* stop takes uniformly 0..this; default 10 */
    double sim_fail_rate;     /* probability in [0,1] that a restore fails; default 0 */
    uint64_t sim_seed;        /* PRNG seed for jitter, stop time and failures; default 1 */
    /* Functions with a golden snapshot on disk from the start (ascending, no duplicates). */
    char sim_snapshots[PW_AGENT_SIM_SNAPSHOTS_MAX][PW_NAME_MAX];
    size_t nsim_snapshots;
    int sim_process;          /* one real placeholder process per VM, NUMA-bound; default 0 */
    /* qemu driver (docs/agent.md, "The qemu driver") */
    char qemu_bin[PW_AGENT_PATH_MAX];          /* a path or a name in PATH;
                                                * default "qemu-system-x86_64" */
    char qemu_accel[8];                        /* "auto" (default), "kvm" or "tcg" */
    char qemu_run_dir[PW_AGENT_PATH_MAX];      /* per-VM state; "": the default
                                                * (pw_agent_config_qemu_dirs) */
    char qemu_snapshot_dir[PW_AGENT_PATH_MAX]; /* golden snapshots; "": <run dir>/snapshots */
    char qemu_mem_dir[PW_AGENT_PATH_MAX];      /* golden RAM files (tmpfs);
                                                * "": /dev/shm/prewarm-<id> */
    char qemu_probe_image[PW_AGENT_PATH_MAX];  /* guest image that proves KVM for "auto"; "":
                                                * the image of a local snapshot, if any */
    int64_t qemu_boot_timeout_ms;    /* golden boot + snapshot deadline; default 60000 */
    int64_t qemu_restore_timeout_ms; /* restore deadline; default 30000 */
    int64_t qemu_probe_timeout_ms;   /* the KVM proof boot's deadline; default 3000 */
    int64_t qemu_stop_timeout_ms;    /* QMP quit until SIGKILL; default 3000 */
    int64_t qemu_log_max_kb;         /* per VM log (qemu.log, console.log); default 1024 */
    int qemu_jobs;                   /* QEMU operations at once (worker threads); default 4 */
    int qemu_keep_vms;               /* at a clean stop, leave the VMs running for the next
                                      * agent to adopt; default 0: destroy them */
    /* VM isolation (docs/qemu.md, "Isolation"): with qemu_uids > 0 every QEMU runs as its own
     * uid/gid from [qemu_uid_base, qemu_uid_base + qemu_uids), with private RAM, and the
     * agent must run as root. qemu_uids also caps the VMs (golden boots included) at once. */
    uint32_t qemu_uid_base;          /* the first uid; 1..4294967294, needed with qemu_uids;
                                      * default 0 (unset) */
    uint32_t qemu_uids;              /* 0..65536; default 0: isolation off */
    /* TLS agent link (scheduler URL tls+tcp://): this agent's certificate and key (one PEM
     * file; its common name or a DNS name must be the agent id), the CA that signed the
     * scheduler's certificate, and the name to expect in it ("": the URL's host). */
    char tls_cert[PW_AGENT_PATH_MAX];
    char tls_ca[PW_AGENT_PATH_MAX];
    char tls_server_name[256];
    /* Prometheus /metrics listener (agent_metrics.c); off while metrics_port is 0 */
    char metrics_host[64];
    int metrics_port;
    /* link tuning (not exposed as flags; tests shorten them) */
    int64_t initial_heartbeat_ms; /* until the first reply says otherwise; default 1000 */
    int64_t error_backoff_ms;     /* after an error reply; default 1000 */
    size_t outbox_max;            /* unacknowledged events kept; default 4096 */
    int handle_signals;           /* 1: SIGINT/SIGTERM stop the agent; default 1 */
};

/* pw_agent_config_init fills c with the defaults. */
void pw_agent_config_init(struct pw_agent_config *c);

/* pw_agent_config_set sets one key from its text form. Keys: "id", "scheduler", "driver",
 * "topology_root", "label" ("key=value", appends or replaces; "cost_per_gib_hour" must be a
 * decimal number >= 0), "vcpu_overcommit", "log_level", "draining" (true/false, 1/0, yes/no,
 * on/off), "sim_restore_ms", "sim_jitter_ms", "sim_stop_ms", "sim_fail_rate", "sim_seed",
 * "sim_snapshots" (comma-separated function names; replaces the list; "" empties it),
 * "sim_process" (a boolean like draining), and the qemu driver's "qemu_bin", "qemu_accel"
 * (auto, kvm, tcg), "qemu_run_dir", "qemu_snapshot_dir", "qemu_mem_dir", "qemu_probe_image"
 * (absolute paths; run and memory directories without commas), "qemu_boot_timeout_ms",
 * "qemu_restore_timeout_ms", "qemu_probe_timeout_ms", "qemu_stop_timeout_ms",
 * "qemu_log_max_kb", "qemu_jobs" (1..64), "qemu_keep_vms" (a boolean), "qemu_uid_base"
 * (1..4294967294), "qemu_uids" (0..65536), and "metrics_listen"
 * (HOST:PORT for the /metrics listener, port 1..65535; "" turns it off). Returns PW_OK, or
 * PW_ERR_INVAL with a one-line reason in errbuf (c unchanged). Loop or main thread only. */
int pw_agent_config_set(struct pw_agent_config *c, const char *key, const char *value,
                        char *errbuf, size_t errlen);

/* pw_agent_config_load_file applies a JSON object of the same keys ("labels" may be an object
 * of key -> string; "sim_snapshots" an array of strings or a comma-separated string; numbers
 * and booleans may be JSON numbers, booleans or strings). Returns PW_OK, PW_ERR_IO,
 * PW_ERR_PARSE or PW_ERR_INVAL with a reason in errbuf (c unchanged on error). */
int pw_agent_config_load_file(struct pw_agent_config *c, const char *path, char *errbuf,
                              size_t errlen);

/* pw_agent_config_load_env applies PREWARM_AGENT_ID, PREWARM_SCHEDULER and PREWARM_DRIVER when
 * set and non-empty. Returns like pw_agent_config_set. */
int pw_agent_config_load_env(struct pw_agent_config *c, char *errbuf, size_t errlen);

/* pw_agent_config_qemu_dirs writes the qemu driver's directories, defaults filled in:
 * run_dir is qemu_run_dir or /run/prewarm/<id> (as root), $XDG_RUNTIME_DIR/prewarm/<id> (when
 * set), else /tmp/prewarm-<uid>/<id>; snap_dir is qemu_snapshot_dir or <run_dir>/snapshots;
 * mem_dir is qemu_mem_dir or /dev/shm/prewarm-<id>. Each buffer holds PW_AGENT_PATH_MAX bytes.
 * PW_ERR_INVAL when the run directory would be too long for QEMU's sockets (errbuf names the
 * key to set). Any thread. */
int pw_agent_config_qemu_dirs(const struct pw_agent_config *c, char *run_dir, char *snap_dir,
                              char *mem_dir, char *errbuf, size_t errlen);

/* pw_agent_config_check verifies what a single key cannot (the id is set, the driver exists,
 * qemu_uids > 0 has a qemu_uid_base and the range ends below 4294967295).
 * Returns PW_OK or PW_ERR_INVAL with a reason. */
int pw_agent_config_check(const struct pw_agent_config *c, char *errbuf, size_t errlen);

#endif
