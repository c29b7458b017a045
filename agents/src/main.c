/* main.c — prewarm-agent: flags, environment and config file into a pw_agent_config, then the
 * agent loop until SIGINT/SIGTERM (SIGUSR1 toggles draining). */
#include "pw/agent.h"
#include "pw/agent_config.h"
#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: prewarm-agent --id NAME [options]\n"
            "\n"
            "The Prewarm node agent: reports this host's NUMA topology and VMs to the scheduler\n"
            "and executes its prewarm/destroy commands through a VMM driver.\n"
            "\n"
            "Options (flags win over environment, environment over --config):\n"
            "  --id NAME              host name, [A-Za-z0-9._-]{1,63} (env PREWARM_AGENT_ID)\n"
            "  --scheduler URL        NNG URL of prewarmd (env PREWARM_SCHEDULER;\n"
            "                         default %s)\n"
            "  --driver NAME          VMM driver: qemu (real microVMs) or sim (env\n"
            "                         PREWARM_DRIVER; default sim)\n"
            "  --topology-root DIR    read sys/ and proc/ under DIR (default /)\n"
            "  --label KEY=VALUE      host label, repeatable; placement reads cloud, region,\n"
            "                         zone, instance_type, cost_per_gib_hour (a number >= 0)\n"
            "  --vcpu-overcommit F    vCPU slots per host CPU (default 1)\n"
            "  --draining             start draining: ask for no new VMs (SIGUSR1 toggles it)\n"
            "  --config FILE          JSON object with the same keys: id, scheduler, driver,\n"
            "                         topology_root, labels {k: v}, vcpu_overcommit, log_level,\n"
            "                         draining, sim_restore_ms, sim_jitter_ms, sim_stop_ms,\n"
            "                         sim_fail_rate, sim_seed, sim_snapshots [names],\n"
            "                         sim_process, and the qemu_* keys below (with _)\n"
            "  --log-level LEVEL      debug, info, warn, error (default info)\n"
            "  --metrics-listen HOST:PORT  serve Prometheus /metrics there (default: off)\n"
            "  --tls-cert FILE        with a tls+tcp:// scheduler: this agent's certificate and\n"
            "                         key, one PEM file; the certificate must name the agent id\n"
            "  --tls-ca FILE          the CA of the scheduler's certificate\n"
            "  --tls-server-name N    the name in the scheduler's certificate (default: URL host)\n"
            "  --help, --version\n"
            "\n"
            "QEMU microVM options (driver qemu; docs/agent.md):\n"
            "  --qemu-accel A         auto (default: KVM when a guest boots under it in time,\n"
            "                         else TCG), kvm or tcg\n"
            "  --qemu-probe-image DIR guest image that proves KVM for auto (default: the image\n"
            "                         of a local golden snapshot, if any)\n"
            "  --qemu-run-dir DIR     per-VM state (default /run/prewarm/<id> as root, else\n"
            "                         $XDG_RUNTIME_DIR/prewarm/<id>, else\n"
            "                         /tmp/prewarm-<uid>/<id>)\n"
            "  --qemu-snapshot-dir DIR  golden snapshots (default <run dir>/snapshots)\n"
            "  --qemu-mem-dir DIR     golden RAM files, tmpfs (default /dev/shm/prewarm-<id>)\n"
            "  --qemu-bin PATH        QEMU (default qemu-system-x86_64 in PATH)\n"
            "  --qemu-boot-timeout-ms N     golden boot + snapshot deadline (default 60000)\n"
            "  --qemu-restore-timeout-ms N  restore deadline (default 30000)\n"
            "  --qemu-probe-timeout-ms N    KVM proof boot deadline (default 3000)\n"
            "  --qemu-stop-timeout-ms N     QMP quit until SIGKILL (default 3000)\n"
            "  --qemu-log-max-kb N    cap of each VM log; one older copy kept (default 1024)\n"
            "  --qemu-jobs N          QEMU operations at once (default 4)\n"
            "  --qemu-keep-vms        at SIGTERM/SIGINT leave the VMs running for the next\n"
            "                         agent to adopt (default: destroy them)\n"
            "  --qemu-uids COUNT      isolation: each QEMU runs as its own uid/gid from\n"
            "                         [base, base+COUNT), seccomp -sandbox required, private\n"
            "                         RAM, VM directories mode 0700; at most COUNT VMs at once;\n"
            "                         the agent must run as root (default 0: off; docs/qemu.md)\n"
            "  --qemu-uid-base N      the first of those uids (needed with --qemu-uids)\n"
            "\n"
            "Simulator options (driver sim):\n"
            "  --sim-restore-ms N     simulated restore time (default 200)\n"
            "  --sim-jitter-ms N      restore time varies by +/- N ms (default 0)\n"
            "  --sim-stop-ms N        stop time is uniform in 0..N ms (default 10)\n"
            "  --sim-fail-rate F      probability 0..1 that a restore fails (default 0)\n"
            "  --sim-seed N           PRNG seed for jitter, stop time, failures (default 1)\n"
            "  --sim-snapshots LIST   functions with a golden snapshot on disk from the start,\n"
            "                         comma-separated (every prewarmed function adds one)\n"
            "  --sim-process          one real placeholder process per VM, bound to the VM's\n"
            "                         NUMA node (runs unbound, with a warning, if it cannot be)\n"
            "\n"
            "Drivers:\n",
            PW_AGENT_DEFAULT_SCHEDULER);
    for (const struct pw_driver_ops *const *d = pw_driver_list(); *d != NULL; d++)
        fprintf(out, "  %-6s %s\n", (*d)->name, (*d)->summary);
    fprintf(out,
            "\n"
            "NOTE: the sim driver is a SIMULATOR. It starts no virtual machine; the addresses it\n"
            "reports (127.0.0.1:<port>) are made up and nothing listens on them. The qemu driver\n"
            "runs real guests; their addresses answer HTTP.\n");
}

enum {
    OPT_ID = 256,
    OPT_SCHEDULER,
    OPT_DRIVER,
    OPT_TOPOLOGY_ROOT,
    OPT_LABEL,
    OPT_SIM_RESTORE,
    OPT_SIM_JITTER,
    OPT_SIM_STOP,
    OPT_SIM_FAIL,
    OPT_SIM_SEED,
    OPT_SIM_SNAPSHOTS,
    OPT_SIM_PROCESS,
    OPT_DRAINING,
    OPT_OVERCOMMIT,
    OPT_LOG_LEVEL,
    OPT_CONFIG,
    OPT_QEMU_ACCEL,
    OPT_QEMU_PROBE_IMAGE,
    OPT_QEMU_RUN_DIR,
    OPT_QEMU_SNAPSHOT_DIR,
    OPT_QEMU_MEM_DIR,
    OPT_QEMU_BIN,
    OPT_QEMU_BOOT_TIMEOUT,
    OPT_QEMU_RESTORE_TIMEOUT,
    OPT_QEMU_PROBE_TIMEOUT,
    OPT_QEMU_STOP_TIMEOUT,
    OPT_QEMU_LOG_MAX,
    OPT_QEMU_JOBS,
    OPT_QEMU_KEEP_VMS,
    OPT_QEMU_UID_BASE,
    OPT_QEMU_UIDS,
    OPT_METRICS_LISTEN,
    OPT_TLS_CERT,
    OPT_TLS_CA,
    OPT_TLS_SERVER_NAME,
    OPT_HELP,
    OPT_VERSION,
};

static const struct option options[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"scheduler", required_argument, NULL, OPT_SCHEDULER},
    {"driver", required_argument, NULL, OPT_DRIVER},
    {"topology-root", required_argument, NULL, OPT_TOPOLOGY_ROOT},
    {"label", required_argument, NULL, OPT_LABEL},
    {"sim-restore-ms", required_argument, NULL, OPT_SIM_RESTORE},
    {"sim-jitter-ms", required_argument, NULL, OPT_SIM_JITTER},
    {"sim-stop-ms", required_argument, NULL, OPT_SIM_STOP},
    {"sim-fail-rate", required_argument, NULL, OPT_SIM_FAIL},
    {"sim-seed", required_argument, NULL, OPT_SIM_SEED},
    {"sim-snapshots", required_argument, NULL, OPT_SIM_SNAPSHOTS},
    {"sim-process", no_argument, NULL, OPT_SIM_PROCESS},
    {"draining", no_argument, NULL, OPT_DRAINING},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-ca", required_argument, NULL, OPT_TLS_CA},
    {"tls-server-name", required_argument, NULL, OPT_TLS_SERVER_NAME},
    {"vcpu-overcommit", required_argument, NULL, OPT_OVERCOMMIT},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"qemu-accel", required_argument, NULL, OPT_QEMU_ACCEL},
    {"qemu-probe-image", required_argument, NULL, OPT_QEMU_PROBE_IMAGE},
    {"qemu-run-dir", required_argument, NULL, OPT_QEMU_RUN_DIR},
    {"qemu-snapshot-dir", required_argument, NULL, OPT_QEMU_SNAPSHOT_DIR},
    {"qemu-mem-dir", required_argument, NULL, OPT_QEMU_MEM_DIR},
    {"qemu-bin", required_argument, NULL, OPT_QEMU_BIN},
    {"qemu-boot-timeout-ms", required_argument, NULL, OPT_QEMU_BOOT_TIMEOUT},
    {"qemu-restore-timeout-ms", required_argument, NULL, OPT_QEMU_RESTORE_TIMEOUT},
    {"qemu-probe-timeout-ms", required_argument, NULL, OPT_QEMU_PROBE_TIMEOUT},
    {"qemu-stop-timeout-ms", required_argument, NULL, OPT_QEMU_STOP_TIMEOUT},
    {"qemu-log-max-kb", required_argument, NULL, OPT_QEMU_LOG_MAX},
    {"qemu-jobs", required_argument, NULL, OPT_QEMU_JOBS},
    {"qemu-keep-vms", no_argument, NULL, OPT_QEMU_KEEP_VMS},
    {"qemu-uid-base", required_argument, NULL, OPT_QEMU_UID_BASE},
    {"qemu-uids", required_argument, NULL, OPT_QEMU_UIDS},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* The config key each flag sets (a flag without a value sets its key to "true"). */
static const char *flag_key(int opt)
{
    switch (opt) {
    case OPT_ID: return "id";
    case OPT_SCHEDULER: return "scheduler";
    case OPT_DRIVER: return "driver";
    case OPT_TOPOLOGY_ROOT: return "topology_root";
    case OPT_LABEL: return "label";
    case OPT_SIM_RESTORE: return "sim_restore_ms";
    case OPT_SIM_JITTER: return "sim_jitter_ms";
    case OPT_SIM_STOP: return "sim_stop_ms";
    case OPT_SIM_FAIL: return "sim_fail_rate";
    case OPT_SIM_SEED: return "sim_seed";
    case OPT_SIM_SNAPSHOTS: return "sim_snapshots";
    case OPT_SIM_PROCESS: return "sim_process";
    case OPT_DRAINING: return "draining";
    case OPT_OVERCOMMIT: return "vcpu_overcommit";
    case OPT_LOG_LEVEL: return "log_level";
    case OPT_QEMU_ACCEL: return "qemu_accel";
    case OPT_QEMU_PROBE_IMAGE: return "qemu_probe_image";
    case OPT_QEMU_RUN_DIR: return "qemu_run_dir";
    case OPT_QEMU_SNAPSHOT_DIR: return "qemu_snapshot_dir";
    case OPT_QEMU_MEM_DIR: return "qemu_mem_dir";
    case OPT_QEMU_BIN: return "qemu_bin";
    case OPT_QEMU_BOOT_TIMEOUT: return "qemu_boot_timeout_ms";
    case OPT_QEMU_RESTORE_TIMEOUT: return "qemu_restore_timeout_ms";
    case OPT_QEMU_PROBE_TIMEOUT: return "qemu_probe_timeout_ms";
    case OPT_QEMU_STOP_TIMEOUT: return "qemu_stop_timeout_ms";
    case OPT_QEMU_LOG_MAX: return "qemu_log_max_kb";
    case OPT_QEMU_JOBS: return "qemu_jobs";
    case OPT_QEMU_KEEP_VMS: return "qemu_keep_vms";
    case OPT_QEMU_UID_BASE: return "qemu_uid_base";
    case OPT_QEMU_UIDS: return "qemu_uids";
    case OPT_METRICS_LISTEN: return "metrics_listen";
    case OPT_TLS_CERT: return "tls_cert";
    case OPT_TLS_CA: return "tls_ca";
    case OPT_TLS_SERVER_NAME: return "tls_server_name";
    default: return NULL;
    }
}

static int fail_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "prewarm-agent: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, " (see --help)\n");
    return 2;
}

int main(int argc, char **argv)
{
    pw_log_set_process("prewarm-agent");
    struct pw_agent_config cfg;
    pw_agent_config_init(&cfg);
    char why[512];

    /* Pass 1: --help, --version, --config and syntax errors; values are applied in pass 2 so
     * that flags win over the environment, which wins over the file. */
    const char *config_path = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        if (opt == OPT_HELP) {
            usage(stdout);
            return 0;
        }
        if (opt == OPT_VERSION) {
            printf("prewarm-agent %s (protocol v%d)\n", PW_VERSION_STRING, PW_PROTO_VERSION);
            return 0;
        }
        if (opt == OPT_CONFIG)
            config_path = optarg;
        else if (opt == ':')
            return fail_usage("%s needs a value%s", argv[optind - 1], "");
        else if (opt == '?')
            return fail_usage("unknown option %s%s", argv[optind - 1], "");
    }
    if (optind < argc)
        return fail_usage("unexpected argument \"%s\"%s", argv[optind], "");

    if (config_path != NULL &&
        pw_agent_config_load_file(&cfg, config_path, why, sizeof(why)) != PW_OK)
        return fail_usage("%s%s", why, "");
    if (pw_agent_config_load_env(&cfg, why, sizeof(why)) != PW_OK)
        return fail_usage("%s%s", why, "");

    optind = 1;
    while ((opt = getopt_long(argc, argv, ":", options, NULL)) != -1) {
        const char *key = flag_key(opt);
        const char *value = optarg != NULL ? optarg : "true";
        if (key != NULL && pw_agent_config_set(&cfg, key, value, why, sizeof(why)) != PW_OK)
            return fail_usage("%s%s", why, "");
    }
    if (pw_agent_config_check(&cfg, why, sizeof(why)) != PW_OK)
        return fail_usage("%s%s", why, "");

    pw_log_set_level(cfg.log_level);
    struct pw_agent *a = pw_agent_new(&cfg, why, sizeof(why));
    if (a == NULL) {
        pw_log_error("agent", "cannot start: %s", why);
        fprintf(stderr, "prewarm-agent: %s\n", why);
        return 1;
    }
    int rv = pw_agent_run(a);
    pw_agent_free(a);
    return rv == PW_OK ? 0 : 1;
}
