/* qemu_vm.h — QEMU microvm primitives for the agent's qemu driver: build the command line,
 * start QEMU, boot a golden VM and snapshot it, restore VMs from the snapshot, destroy them,
 * and find VMs left running by an agent that died (docs/qemu.md).
 *
 * Everything here blocks (process start, QMP round trips, console reads) and takes an absolute
 * deadline on the pw_now_mono_ms() clock. It is meant for worker threads, never the agent's
 * libuv loop. Thread rules: a struct pw_qemu_vm is used by one thread at a time; different VMs
 * may be driven from different threads at once; the config is read-only once resolved and may
 * be shared. VMs are started with fork/exec from any thread (the child only makes system
 * calls before exec). The VMs are our children until the agent exits, so nothing else in the
 * process may reap them: no waitpid(-1) and no SIGCHLD set to SIG_IGN.
 *
 * VMs outlive the agent on purpose: QEMU runs in its own session and process group, without a
 * parent-death signal. Each VM has a directory <run_dir>/<vm id as 16 hex digits>/ with its
 * metadata (vm.json: pid, start time, function, port, sockets), its QMP and console sockets and
 * its logs, so a restarted agent finds it with pw_qemu_scan and adopts or cleans it. */
#ifndef PW_QEMU_VM_H
#define PW_QEMU_VM_H

#include "pw/util.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pw_numabind;
struct pw_qmp;

/* Guest command line of the Prewarm guest images; " tsc_early_khz=<host kHz>" is appended. */
#define PW_QEMU_DEFAULT_CMDLINE "console=ttyS0 reboot=t panic=-1 quiet tsc=reliable"
/* The port the guest's HTTP server listens on, forwarded from 127.0.0.1:<port> on the host. */
#define PW_QEMU_GUEST_PORT 8080
/* A VM directory holds unix sockets, whose paths must fit sockaddr_un (108 bytes): the run
 * directory may be at most this long. */
#define PW_QEMU_RUN_DIR_MAX 72
/* Instance ids given to restored guests: 1..64 characters of [A-Za-z0-9._:-]. */
#define PW_QEMU_INSTANCE_MAX 65

/* X(name, string) */
#define PW_QEMU_ACCEL_MAP(X) \
    X(AUTO, "auto")          \
    X(KVM, "kvm")            \
    X(TCG, "tcg")

enum pw_qemu_accel {
#define PW_QEMU_ACCEL_ENUM(name, str) PW_QEMU_ACCEL_##name,
    PW_QEMU_ACCEL_MAP(PW_QEMU_ACCEL_ENUM)
#undef PW_QEMU_ACCEL_ENUM
};

/* pw_qemu_accel_name returns "auto", "kvm" or "tcg"; pw_qemu_accel_parse is its inverse
 * (PW_ERR_INVAL for anything else). */
const char *pw_qemu_accel_name(enum pw_qemu_accel a);
int pw_qemu_accel_parse(const char *s, enum pw_qemu_accel *out);

/* How guest RAM is held. X(name, string) */
#define PW_QEMU_RAM_MAP(X) \
    X(FILE, "file")        \
    X(PRIVATE, "private")

enum pw_qemu_ram {
    /* FILE: the golden's RAM is a file in mem_dir (share=on at boot); restores map it
     * copy-on-write (share=off) and migrate with x-ignore-shared, so the stream carries no RAM.
     * QEMU 7.2 opens that file read-write, so every QEMU can write it.
     * PRIVATE: anonymous RAM (memory-backend-ram) everywhere; the migration stream (the state
     * file, which QEMU gets only as a read-only descriptor) carries the RAM, and restores copy
     * it into their own memory. For VMs that must not share a writable file (isolation). */
#define PW_QEMU_RAM_ENUM(name, str) PW_QEMU_RAM_##name,
    PW_QEMU_RAM_MAP(PW_QEMU_RAM_ENUM)
#undef PW_QEMU_RAM_ENUM
};

/* pw_qemu_ram_name returns "file" or "private"; pw_qemu_ram_parse is its inverse
 * (PW_ERR_INVAL for anything else). */
const char *pw_qemu_ram_name(enum pw_qemu_ram r);
int pw_qemu_ram_parse(const char *s, enum pw_qemu_ram *out);

enum pw_qemu_sandbox {
    PW_QEMU_SANDBOX_AUTO, /* on when this QEMU supports it (pw_qemu_config_resolve decides) */
    PW_QEMU_SANDBOX_ON,   /* -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,
                           * resourcecontrol=deny */
    PW_QEMU_SANDBOX_OFF,
};

/* Host-wide settings shared by every VM of an agent. Plain data: copy freely. */
struct pw_qemu_config {
    char qemu_bin[PATH_MAX];            /* a path, or a name looked up in PATH at resolve */
    char mem_dir[PATH_MAX];             /* golden RAM files (tmpfs: restores map them) */
    char run_dir[PW_QEMU_RUN_DIR_MAX];  /* one subdirectory per VM */
    enum pw_qemu_accel accel;           /* KVM or TCG for new VMs; AUTO is resolved with
                                         * pw_qemu_probe_accel before any VM starts */
    enum pw_qemu_sandbox sandbox;       /* AUTO until resolved, then ON or OFF */
    uint64_t tsc_khz;                   /* host TSC for tsc_early_khz; 0: read at resolve */
    char qemu_version[64];              /* "7.2.22", filled at resolve */
    enum pw_qemu_ram ram;               /* of golden boots and the snapshots restores accept;
                                         * default FILE */
};

/* pw_qemu_config_init fills c with the defaults: qemu_bin "qemu-system-x86_64", mem_dir
 * "/dev/shm", run_dir as given (it must exist or be creatable), accel AUTO, sandbox AUTO,
 * tsc_khz 0, ram FILE. Returns PW_OK or PW_ERR_INVAL when run_dir is empty or longer than
 * PW_QEMU_RUN_DIR_MAX - 1. Any thread. */
int pw_qemu_config_init(struct pw_qemu_config *c, const char *run_dir, char *errbuf,
                        size_t errlen);

/* pw_qemu_config_resolve makes c ready to start VMs: qemu_bin becomes an absolute path (an
 * executable found in PATH), run_dir and mem_dir are created if missing, tsc_khz is read from
 * "cpu MHz" in /proc/cpuinfo when 0 (left 0, and tsc_early_khz then left out, where the file
 * has no such line), and QEMU is started once with -machine none to learn its version and,
 * when sandbox is AUTO, whether -sandbox works (then ON, else OFF; *why says why when not
 * NULL). accel is left as is. Returns PW_OK; PW_ERR_NOTFOUND when QEMU cannot be found;
 * PW_ERR_IO for directories; PW_ERR_UNAVAIL when QEMU does not start (errbuf has its own
 * words). Blocking, up to deadline_ms. */
int pw_qemu_config_resolve(struct pw_qemu_config *c, int64_t deadline_ms, char *why,
                           size_t whylen, char *errbuf, size_t errlen);

/* What a golden VM boots: a Prewarm guest image. Strings are borrowed for the call. */
struct pw_qemu_guest {
    const char *kernel;  /* uncompressed vmlinux (booted through PVH) */
    const char *initrd;  /* initramfs */
    const char *cmdline; /* NULL: PW_QEMU_DEFAULT_CMDLINE */
    uint32_t memory_mb;  /* 0: 128 */
    uint32_t vcpus;      /* 0: 1 */
    const char *image;      /* NULL, or the image directory it comes from: recorded in the
                             * snapshot, so its owner can tell what it was made from */
    const char *image_hash; /* NULL, or that image's content hash (image.json "hash") */
};

/* A guest image directory as agents/guest/build-guest.sh makes it: image.json, the kernel and
 * the initramfs. Plain data. */
struct pw_qemu_image {
    char dir[PATH_MAX];      /* the directory, absolute */
    char name[PW_NAME_MAX];  /* the function the guest announces ("PREWARM-READY <name>") */
    char kernel[PATH_MAX];   /* absolute: image.json's "kernel", relative to dir */
    char initrd[PATH_MAX];   /* absolute: image.json's "initrd", relative to dir */
    char cmdline[400];       /* image.json's "cmdline", or PW_QEMU_DEFAULT_CMDLINE */
    char hash[72];           /* image.json's "hash" ("" when absent) */
};

/* pw_qemu_image_parse reads the text of an image.json found in directory dir (absolute) into
 * *out. Required: "name" (pw_name_valid), "kernel" and "initrd" (paths relative to dir, without
 * ".." components, or absolute). Optional: "cmdline" (one line, < 400 bytes), "hash",
 * "http_port" (must be PW_QEMU_GUEST_PORT: that is the port the agent forwards), "ready_line"
 * (must be "PREWARM-READY <name>"); other keys are ignored. PW_OK, or PW_ERR_PARSE with
 * errbuf naming the field. Pure; any thread. */
int pw_qemu_image_parse(const char *dir, const char *text, size_t len, struct pw_qemu_image *out,
                        char *errbuf, size_t errlen);

/* pw_qemu_image_load reads <dir>/image.json (at most 64 KiB) with pw_qemu_image_parse and
 * checks that its kernel and initrd are regular files. dir must be an absolute path. PW_OK;
 * PW_ERR_INVAL (dir is not absolute); PW_ERR_NOTFOUND (no such directory, image.json,
 * kernel or initrd); PW_ERR_PARSE; PW_ERR_IO. errbuf names the file. Any thread. */
int pw_qemu_image_load(const char *dir, struct pw_qemu_image *out, char *errbuf, size_t errlen);

/* One VM to start. Borrowed for the call. */
struct pw_qemu_vm_spec {
    uint64_t vm_id;                 /* unique among the agent's VMs: names its directory and
                                     * its QEMU process (-name prewarm-<16 hex digits>) */
    const char *function;           /* pw_name_valid */
    uint16_t port;                  /* host port on 127.0.0.1 forwarded to the guest's :8080;
                                     * 0: pick a free one (pw_qemu_free_port) */
    const char *mac;                /* the guest's MAC "52:54:00:12:34:56"; NULL: derived from
                                     * vm_id (52:54 and its low 32 bits) */
    const struct pw_numabind *bind; /* applied to QEMU before exec (pw_numabind_self); NULL:
                                     * no binding */
    int32_t numa_node;              /* the NUMA node the VM is accounted to, recorded in vm.json
                                     * for a later adoption (-1: none); bind->node wins when
                                     * bind is set */
    const atomic_int *cancel;       /* NULL, or a flag another thread may set (nonzero) to make
                                     * a boot or restore give up within about 50 ms, as at its
                                     * deadline (PW_ERR_TIMEOUT, "cancelled"); borrowed for the
                                     * call */
    uint32_t uid;                   /* 0: QEMU runs as the caller. Else (the caller must be
                                     * root) QEMU runs as uid and gid uid, without supplementary
                                     * groups and with no_new_privs; its directory is owned by
                                     * uid, mode 0700, and the kernel and initrd of a boot are
                                     * passed as descriptors the agent opened. Unique among
                                     * running VMs: that is what keeps them apart */
};

/* What a golden snapshot is: its files and every command-line parameter a restore must repeat
 * exactly. Stored as snapshot.json in its directory. Plain data. */
struct pw_qemu_snapshot {
    char dir[PATH_MAX];         /* the snapshot directory */
    char function[PW_NAME_MAX];
    uint64_t golden_vm_id;
    enum pw_qemu_ram ram;       /* FILE, or PRIVATE (then mem_path is "" and the state file
                                 * holds the RAM) */
    char mem_path[PATH_MAX];    /* golden RAM file (share=on at boot, share=off at restore) */
    char state_path[PATH_MAX];  /* device state written by migrate */
    char accel[8];              /* "kvm" or "tcg": a snapshot restores under its own only */
    char cpu[16];               /* "max" (tcg) or "host" (kvm) */
    char machine[160];          /* the -machine value */
    uint32_t memory_mb;
    uint32_t vcpus;
    char mac[18];               /* the golden's MAC, repeated on the restore command line */
    char kernel[PATH_MAX];
    char initrd[PATH_MAX];
    char cmdline[512];          /* as given to the guest, tsc_early_khz included */
    char qemu_version[64];
    int64_t created_ms;         /* wall clock */
    double boot_ms;             /* process start -> ready line */
    double snapshot_ms;         /* stop -> migration completed */
    char image[PATH_MAX];       /* the guest's image directory ("" when not given) */
    char image_hash[72];        /* its content hash ("" when not given) */
};

/* Timings in milliseconds (with fractions) on the monotonic clock, counted from the moment
 * QEMU was started (fork); -1 where a step did not happen. */
struct pw_qemu_times {
    double qmp_ms;      /* QMP connected and negotiated */
    double ready_ms;    /* boot: the guest printed PREWARM-READY */
    double snapshot_ms; /* snapshot: from stop to migration completed (not from start) */
    double cont_ms;     /* restore: cont returned; the guest runs */
    double id_ms;       /* restore: the guest answered PREWARM-ID-OK */
    double http_ms;     /* restore with PW_QEMU_PROBE_HTTP: first HTTP answer on the port */
};

enum pw_qemu_vm_kind {
    PW_QEMU_VM_GOLDEN,   /* booted with share=on; becomes a snapshot */
    PW_QEMU_VM_RESTORED, /* started from a snapshot with share=off */
};

/* A running (or stopped but not yet destroyed) VM. Fields are read-only for callers. */
struct pw_qemu_vm {
    uint64_t vm_id;
    enum pw_qemu_vm_kind kind;
    char function[PW_NAME_MAX];
    pid_t pid;                /* QEMU; also its process group */
    uint64_t start_time;      /* field 22 of /proc/PID/stat: guards against PID reuse */
    bool is_child;            /* started by this process (reaped with waitpid); false when
                               * adopted */
    bool exited;              /* the process is gone (reaped when is_child) */
    int wait_status;          /* waitpid status once exited and is_child */
    uint16_t port;
    char mac[18];
    char instance[PW_QEMU_INSTANCE_MAX]; /* restored: the identity given to the guest */
    char dir[PATH_MAX];       /* <run_dir>/<vm id> */
    char qmp_path[108];
    char console_path[108];
    char owned[2][PATH_MAX];  /* files this VM owns outside dir (a golden's RAM and state
                               * files until its snapshot is published), deleted with it */
    int32_t numa_node;        /* as in the spec (recorded in vm.json); -1: none */
    uint32_t uid;             /* as in the spec (recorded in vm.json); 0: the agent's */
    const atomic_int *cancel; /* the spec's cancel flag during boot and restore, else NULL */
    struct pw_qmp *qmp;       /* connected QMP, or NULL */
    int console_fd;           /* connected console socket, or -1 */
    char cbuf[4096];          /* console bytes not yet split into lines */
    size_t clen;
    char last_line[256];      /* the last complete console line, for error messages */
    int64_t started_us;       /* monotonic time of the fork in microseconds; 0 when adopted */
    struct pw_qemu_snapshot snap; /* golden: the parameters it booted with (its snapshot to
                                   * be); restored: the snapshot it came from */
};

/* pw_qemu_free_port returns a TCP port on 127.0.0.1 that was free a moment ago (bind to port
 * 0), or 0 with errno set. Any thread. */
uint16_t pw_qemu_free_port(void);

/* pw_qemu_build_argv writes QEMU's argument vector for vm into *argv (NULL-terminated; free
 * each string and the array with pw_qemu_argv_free). golden: share=on, the kernel booted;
 * otherwise share=off and -incoming defer. The machine, -m, -smp, -accel, -cpu, the memory
 * backend (but for share) and the devices come from snap in both cases, so they cannot differ
 * between a golden boot and its restores. Returns PW_OK or PW_ERR_INVAL (a value that QEMU's
 * option syntax cannot carry). Pure; any thread. */
int pw_qemu_build_argv(const struct pw_qemu_config *cfg, const struct pw_qemu_snapshot *snap,
                       const struct pw_qemu_vm *vm, bool golden, char ***argv, char *errbuf,
                       size_t errlen);
void pw_qemu_argv_free(char **argv);

/* pw_qemu_boot starts a golden VM of function spec->function from guest g and waits until its
 * console says "PREWARM-READY <function>" (so spec->function must be the name the image
 * announces). With cfg->ram FILE, RAM lives in a share=on file in cfg->mem_dir that the
 * VM owns until pw_qemu_snapshot publishes it; with PRIVATE it is anonymous memory. On PW_OK *out is the running VM (the caller
 * owns it: pw_qemu_snapshot, pw_qemu_destroy, pw_qemu_vm_free) and t, when not NULL, has
 * qmp_ms and ready_ms. On failure QEMU is killed, its files are gone, *out is NULL, and:
 * PW_ERR_TIMEOUT (no ready line by deadline_ms: errbuf quotes the last console line),
 * PW_ERR_UNAVAIL (QEMU exited, or the guest printed PREWARM-FAILED: errbuf quotes QEMU's log
 * or the guest), PW_ERR_INVAL (a bad spec or guest), PW_ERR_EXISTS (the VM's directory
 * exists), PW_ERR_IO. Blocking. */
int pw_qemu_boot(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                 const struct pw_qemu_vm_spec *spec, int64_t deadline_ms,
                 struct pw_qemu_vm **out, struct pw_qemu_times *t, char *errbuf, size_t errlen);

/* pw_qemu_snapshot turns the golden VM vm (running, from pw_qemu_boot) into a snapshot in
 * snap_dir (created if missing): stop, migrate-set-capabilities x-ignore-shared (FILE RAM
 * only: with PRIVATE the stream carries the RAM), the device state through getfd + "fd:" into
 * state-<vm id>.bin (of an isolated VM, spec uid != 0: mode 0600 in a snap_dir made 0700), query-migrate until completed, quit,
 * reap. Then snapshot.json is written (atomically: the snapshot exists once it does) and
 * the files of a snapshot it replaces are deleted (restored VMs that map the old RAM file keep
 * it: it is unlinked, not truncated). On PW_OK *out describes the snapshot, t->snapshot_ms is
 * set, and vm has exited. On failure the VM is killed and the files it owns (RAM, state) are
 * deleted. Either way pw_qemu_destroy then removes its directory. Blocking. */
int pw_qemu_snapshot(struct pw_qemu_vm *vm, const char *snap_dir, int64_t deadline_ms,
                     struct pw_qemu_snapshot *out, struct pw_qemu_times *t, char *errbuf,
                     size_t errlen);

/* pw_qemu_golden is boot + snapshot + destroy: a golden snapshot of g in snap_dir. t, when not
 * NULL, gets qmp_ms, ready_ms and snapshot_ms. Errors as pw_qemu_boot and pw_qemu_snapshot;
 * nothing is left running either way. Blocking. */
int pw_qemu_golden(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                   const struct pw_qemu_vm_spec *spec, const char *snap_dir,
                   int64_t deadline_ms, struct pw_qemu_snapshot *out, struct pw_qemu_times *t,
                   char *errbuf, size_t errlen);

/* pw_qemu_snapshot_load reads <snap_dir>/snapshot.json into *out and checks that its RAM file
 * (of the recorded size; FILE RAM only) and state file exist. PW_OK; PW_ERR_NOTFOUND (no snapshot there);
 * PW_ERR_PARSE (a malformed manifest: errbuf names the field); PW_ERR_IO. Any thread. */
int pw_qemu_snapshot_load(const char *snap_dir, struct pw_qemu_snapshot *out, char *errbuf,
                          size_t errlen);

/* pw_qemu_snapshot_delete removes a snapshot's manifest, state and RAM files and its
 * directory when empty. VMs restored from it keep running (they hold the RAM file open).
 * Returns PW_OK or PW_ERR_IO (errbuf lists what stayed). Any thread. */
int pw_qemu_snapshot_delete(const struct pw_qemu_snapshot *snap, char *errbuf, size_t errlen);

/* Flags of pw_qemu_restore. */
#define PW_QEMU_PROBE_HTTP 0x1u /* wait for a first HTTP answer on the port (t->http_ms) */

/* pw_qemu_restore starts a VM from snapshot snap: QEMU with share=off on the golden RAM file
 * (a private copy-on-write mapping: the file is never written) and -incoming defer; over QMP
 * x-ignore-shared, migrate-incoming from the state file (passed with getfd), query-migrate
 * until completed, cont. Then the guest gets its identity on the console,
 * "PREWARM-ID <instance> <mac> <unix time>", and must answer "PREWARM-ID-OK <instance>".
 * With PRIVATE RAM (snap->ram, which must be cfg->ram) there is no RAM file and no
 * x-ignore-shared: the migration copies the RAM from the state file into the VM's own memory.
 * instance: 1..64 of [A-Za-z0-9._:-]. cfg->accel must be the snapshot's. On PW_OK *out is the
 * running VM (the caller owns it) and t, when not NULL, has qmp_ms, cont_ms, id_ms and, with
 * PW_QEMU_PROBE_HTTP, http_ms. On failure QEMU is killed, its files are gone, *out is NULL:
 * PW_ERR_TIMEOUT, PW_ERR_UNAVAIL (QEMU exited or refused: errbuf has its words),
 * PW_ERR_INVAL, PW_ERR_EXISTS, PW_ERR_STATE (a snapshot for another accelerator, QEMU
 * version or RAM mode), PW_ERR_IO. Blocking. */
int pw_qemu_restore(const struct pw_qemu_config *cfg, const struct pw_qemu_snapshot *snap,
                    const struct pw_qemu_vm_spec *spec, const char *instance, unsigned flags,
                    int64_t deadline_ms, struct pw_qemu_vm **out, struct pw_qemu_times *t,
                    char *errbuf, size_t errlen);

/* Flags of pw_qemu_destroy. */
#define PW_QEMU_KEEP_LOGS 0x1u /* keep qemu.log and console.log (and so the directory) */

/* pw_qemu_destroy stops vm and removes its files: QMP quit, wait for the process to end until
 * deadline_ms, then SIGKILL to its process group and the process (an adopted VM is checked
 * against its start time first), reap it, and delete its sockets, metadata, logs (unless
 * PW_QEMU_KEEP_LOGS), the files it owns and its directory. Snapshots are not touched. PW_OK
 * when the process is gone; PW_ERR_IO when files could not be deleted; PW_ERR_UNAVAIL when
 * the process survived SIGKILL for 5 s (files are then kept). vm stays allocated: release it
 * with pw_qemu_vm_free. Blocking. */
int pw_qemu_destroy(struct pw_qemu_vm *vm, int64_t deadline_ms, unsigned flags, char *errbuf,
                    size_t errlen);

/* pw_qemu_vm_free closes vm's QMP and console connections and frees it. It does not stop the
 * VM: one freed while running can be found again with pw_qemu_scan. NULL is a no-op. */
void pw_qemu_vm_free(struct pw_qemu_vm *vm);

/* pw_qemu_alive tells whether vm's process still runs (reaping it when it is our child and
 * has exited). Never blocks. */
bool pw_qemu_alive(struct pw_qemu_vm *vm);

/* pw_qemu_exit_reason writes how vm's process ended, "QEMU exited with status 1 <during>:
 * <the tail of qemu.log>", into errbuf. For a VM pw_qemu_alive has found gone. Reads the log;
 * any thread that owns vm. */
void pw_qemu_exit_reason(struct pw_qemu_vm *vm, char *errbuf, size_t errlen, const char *during);

/* pw_qemu_logs_cap keeps the logs of the VM directory dir (qemu.log, console.log) under
 * max_bytes each: a longer log is copied to <name>.1 (replacing the older copy) and truncated
 * in place, which QEMU's append-mode descriptors follow. Lines written between the copy and
 * the truncation are lost. Returns how many logs it rotated. Any thread; blocking (file I/O). */
int pw_qemu_logs_cap(const char *dir, uint64_t max_bytes);

/* pw_qemu_console_open connects vm's console socket (until deadline_ms) unless connected.
 * Boot and restore close it when they are done: with no client QEMU drops the guest's output
 * (it still goes to console.log), whereas a connected client that does not read would stall
 * the guest's serial port. PW_OK, PW_ERR_TIMEOUT, PW_ERR_IO. */
int pw_qemu_console_open(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf,
                         size_t errlen);
/* pw_qemu_console_close disconnects the console (no-op when not connected). */
void pw_qemu_console_close(struct pw_qemu_vm *vm);

/* ---- VMs left by an earlier agent ---- */

/* What vm.json says about a VM. */
struct pw_qemu_meta {
    uint64_t vm_id;
    enum pw_qemu_vm_kind kind;
    char function[PW_NAME_MAX];
    pid_t pid;              /* 0: the agent stopped between creating the directory and
                             * starting QEMU */
    uint64_t start_time;
    uint16_t port;
    char mac[18];
    char instance[PW_QEMU_INSTANCE_MAX];
    char qmp_path[108];
    char console_path[108];
    char snapshot_dir[PATH_MAX]; /* restored: the snapshot it came from; golden: "" */
    char owned[2][PATH_MAX];
    int64_t created_ms;
    int32_t numa_node;      /* -1 when not recorded */
    uint32_t memory_mb;     /* the VM's shape (0 when not recorded) */
    uint32_t vcpus;
    uint32_t uid;           /* the uid QEMU runs as; 0: the agent's (or not recorded) */
};

enum pw_qemu_orphan_state {
    PW_QEMU_ORPHAN_RUNNING, /* its QEMU runs: adopt it (pw_qemu_adopt) or clean it */
    PW_QEMU_ORPHAN_DEAD,    /* no process of ours: clean it */
    PW_QEMU_ORPHAN_BAD,     /* the metadata is missing or malformed: clean it. meta holds
                             * only vm_id (from the directory name), and pid and start_time
                             * when a QEMU process with its marker runs */
};

struct pw_qemu_orphan {
    char dir[PATH_MAX];
    enum pw_qemu_orphan_state state;
    char why[256];          /* DEAD and BAD: the reason, one line */
    struct pw_qemu_meta meta; /* valid unless BAD */
};

/* pw_qemu_scan lists the VM directories under run_dir (names of 16 hex digits; anything else
 * is ignored) and says for each whether its QEMU still runs: /proc/PID/stat must show the
 * recorded start time (else the PID was reused) and not a zombie, and /proc/PID/cmdline
 * must name "-name prewarm-<vm id>". A directory whose metadata has pid 0 is matched by that
 * marker among all processes. On PW_OK *out is an array of *n entries in ascending vm id order
 * (free() it; NULL when none). PW_ERR_IO when run_dir cannot be read. Any thread. */
int pw_qemu_scan(const char *run_dir, struct pw_qemu_orphan **out, size_t *n, char *errbuf,
                 size_t errlen);

/* pw_qemu_meta_parse parses the text of a vm.json. PW_OK or PW_ERR_PARSE with errbuf naming
 * the field. Pure; any thread. */
int pw_qemu_meta_parse(const char *text, size_t len, struct pw_qemu_meta *out, char *errbuf,
                       size_t errlen);

/* pw_qemu_adopt takes over a RUNNING orphan: a VM handle (is_child false) with QMP connected
 * and the VM checked to be running or paused. The caller owns *out. PW_OK; PW_ERR_STATE when
 * the orphan is not RUNNING; QMP errors as pw_qmp_connect. Blocking. */
int pw_qemu_adopt(const struct pw_qemu_orphan *o, int64_t deadline_ms, struct pw_qemu_vm **out,
                  char *errbuf, size_t errlen);

/* pw_qemu_orphan_clean kills a RUNNING orphan (QMP quit, then SIGKILL, as pw_qemu_destroy)
 * and removes the directory and owned files of any orphan. PW_OK or as pw_qemu_destroy.
 * Blocking. */
int pw_qemu_orphan_clean(const struct pw_qemu_orphan *o, int64_t deadline_ms, char *errbuf,
                         size_t errlen);

/* ---- the accelerator ---- */

/* pw_qemu_probe_accel decides what AUTO means on this host: /dev/kvm must open, and a golden
 * boot of g (whose guest announces itself as function) under KVM must reach its ready line
 * within timeout_ms (a /dev/kvm backed by a
 * slow nested implementation boots too slowly or not at all). *out is KVM or TCG; why says
 * what was found ("kvm: guest ready in 812 ms" or "tcg: /dev/kvm: No such file or
 * directory"). The probe VM uses a directory under cfg->run_dir and is gone afterwards; it
 * runs as uid as pw_qemu_vm_spec says (0: as the caller), so KVM is chosen only when the
 * VMs' user can use it. Returns PW_OK (TCG is always a valid answer) or PW_ERR_INVAL for a
 * bad guest. Blocking. */
int pw_qemu_probe_accel(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                        const char *function, uint32_t uid, int64_t timeout_ms,
                        enum pw_qemu_accel *out, char *why, size_t whylen);

#endif
