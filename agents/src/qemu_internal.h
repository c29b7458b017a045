/* qemu_internal.h — what the QEMU microvm primitives (qemu_vm.c, qemu_proc.c, qemu_meta.c)
 * share and nothing else sees: file names, limits, and the helpers for processes, sockets,
 * the console and the on-disk records. Thread rules as in qemu_vm.h: a VM is used by one
 * thread at a time; everything else here may run on any thread. */
#ifndef PW_QEMU_INTERNAL_H
#define PW_QEMU_INTERNAL_H

#include "pw/qemu_vm.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define PW_QEMU_MACHINE_OPTS \
    "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on,memory-backend=mem0"
#define PW_QEMU_SANDBOX_OPTS \
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#define PW_QEMU_META_FILE "vm.json"
#define PW_QEMU_MANIFEST_FILE "snapshot.json"
#define PW_QEMU_MAX_JSON_FILE (64 * 1024)
/* After SIGKILL a process is gone within milliseconds unless stuck in the kernel. */
#define PW_QEMU_KILL_GRACE_MS 5000

/* ---- small helpers (qemu_proc.c) ---- */

/* pw_qemu_now_us is the monotonic clock in microseconds; pw_qemu_since_ms the milliseconds
 * since t0_us on it. */
int64_t pw_qemu_now_us(void);
double pw_qemu_since_ms(int64_t t0_us);
/* pw_qemu_sleep_ms sleeps ms milliseconds, resuming after signals. */
void pw_qemu_sleep_ms(int64_t ms);
/* pw_qemu_cancelled tells whether the VM's operation was asked to give up (its spec's
 * cancel flag is set). */
bool pw_qemu_cancelled(const struct pw_qemu_vm *vm);
/* pw_qemu_fmt_path writes a path into dst and fails with PW_ERR_INVAL when it does not fit. */
int pw_qemu_fmt_path(char *dst, size_t size, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* pw_qemu_mkdir_p creates path and its missing parents (0755). */
int pw_qemu_mkdir_p(const char *path, char *errbuf, size_t errlen);
/* pw_qemu_write_file_atomic writes data to path through path.tmp and rename, so readers see
 * the old or the new file whole; with sync, fsync before the rename. */
int pw_qemu_write_file_atomic(const char *path, const char *data, size_t len, bool sync,
                              char *errbuf, size_t errlen);
/* pw_qemu_read_file reads at most max bytes of path into a NUL-terminated heap buffer *out
 * (the caller frees it). PW_ERR_NOTFOUND when it does not exist, PW_ERR_TOOBIG when it is
 * longer, PW_ERR_IO. */
int pw_qemu_read_file(const char *path, size_t max, char **out, size_t *len, char *errbuf,
                      size_t errlen);
/* pw_qemu_one_line copies n bytes of s into out as one printable line. */
void pw_qemu_one_line(char *out, size_t outlen, const char *s, size_t n);
/* pw_qemu_mac_valid: a unicast "aa:bb:cc:dd:ee:ff". pw_qemu_instance_valid: 1..64 of
 * [A-Za-z0-9._:-]. */
bool pw_qemu_mac_valid(const char *s);
bool pw_qemu_instance_valid(const char *s);
/* pw_qemu_check_opt_path refuses a path that QEMU's comma-separated options cannot carry. */
int pw_qemu_check_opt_path(const char *what, const char *p, char *errbuf, size_t errlen);

/* ---- /proc (qemu_proc.c) ---- */

/* pw_qemu_proc_stat reads the start time (field 22) and state (field 3, when state is not
 * NULL) of pid. PW_ERR_NOTFOUND when there is no such process. */
int pw_qemu_proc_stat(pid_t pid, uint64_t *start_time, char *state);
/* pw_qemu_proc_has_marker tells whether /proc/PID/cmdline holds "-name" "prewarm-<id>". */
bool pw_qemu_proc_has_marker(pid_t pid, uint64_t vm_id);
/* pw_qemu_proc_find_marker looks through every process for the marker of vm_id; 0 when none. */
pid_t pw_qemu_proc_find_marker(uint64_t vm_id, uint64_t *start_time);

/* ---- processes (qemu_proc.c) ---- */

/* The descriptors pw_qemu_spawn passes to an isolated QEMU land at PW_QEMU_PASS_FD0 and up
 * (the command line names them /proc/self/fd/<n>). */
#define PW_QEMU_PASS_FD0 3
#define PW_QEMU_PASS_MAX 2

/* pw_qemu_spawn starts argv (fork + execve) with stdin from /dev/null and stdout/stderr
 * appended to <vm->dir>/qemu.log, bound by bind when not NULL. With vm->uid != 0 the child
 * drops to uid/gid vm->uid (no supplementary groups, no_new_privs) before exec, and pass[0..
 * npass) (borrowed; still the caller's to close) become its descriptors PW_QEMU_PASS_FD0...
 * On PW_OK vm->pid, start_time, is_child and started_us are set. */
int pw_qemu_spawn(struct pw_qemu_vm *vm, char **argv, const struct pw_numabind *bind,
                  const int *pass, size_t npass, char *errbuf, size_t errlen);
/* pw_qemu_wait_exit waits until vm's process is gone or deadline_ms passes; true when gone. */
bool pw_qemu_wait_exit(struct pw_qemu_vm *vm, int64_t deadline_ms);
/* pw_qemu_kill makes sure the process is gone: SIGKILL to its group and to it, then wait up
 * to PW_QEMU_KILL_GRACE_MS. false when it survived. */
bool pw_qemu_kill(struct pw_qemu_vm *vm);

/* ---- sockets and the console (qemu_proc.c) ---- */

/* pw_qemu_qmp_open connects vm->qmp (retrying while QEMU starts; QEMU exiting is
 * PW_ERR_UNAVAIL with its last words). */
int pw_qemu_qmp_open(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf, size_t errlen);
/* pw_qemu_console_wait reads console lines until one holds "<ok> <arg>" (PW_OK) or
 * "<bad> <arg>" (the guest gave up: PW_ERR_UNAVAIL with its line). */
int pw_qemu_console_wait(struct pw_qemu_vm *vm, const char *ok, const char *bad,
                         const char *arg, int64_t deadline_ms, char *errbuf, size_t errlen);
/* pw_qemu_console_write writes s whole on the connected console. */
int pw_qemu_console_write(struct pw_qemu_vm *vm, const char *s, int64_t deadline_ms,
                          char *errbuf, size_t errlen);
/* pw_qemu_http_answers tells whether a GET on 127.0.0.1:port gets the start of an HTTP answer
 * before deadline_ms (or until vm, when not NULL, is cancelled). */
bool pw_qemu_http_answers(const struct pw_qemu_vm *vm, uint16_t port, int64_t deadline_ms);

/* ---- files (qemu_proc.c) ---- */

/* pw_qemu_remove_files deletes a VM's directory (but its logs when keep_logs) and the files it
 * owns. */
int pw_qemu_remove_files(const char *dir, char (*owned)[PATH_MAX], size_t nowned, bool keep_logs,
                         char *errbuf, size_t errlen);
/* pw_qemu_abandon kills a VM that failed to start, removes everything it had and frees it. */
void pw_qemu_abandon(struct pw_qemu_vm *vm);

/* ---- records (qemu_meta.c) ---- */

/* pw_qemu_vm_alloc returns a zeroed VM record with no process (exited) and no console. */
struct pw_qemu_vm *pw_qemu_vm_alloc(uint64_t vm_id, enum pw_qemu_vm_kind kind);
/* pw_qemu_vm_paths sets vm->dir, qmp_path and console_path under run_dir. */
int pw_qemu_vm_paths(struct pw_qemu_vm *vm, const char *run_dir, char *errbuf, size_t errlen);
/* pw_qemu_meta_write writes <vm->dir>/vm.json atomically. */
int pw_qemu_meta_write(const struct pw_qemu_vm *vm, char *errbuf, size_t errlen);
/* pw_qemu_manifest_text returns snapshot.json's text for s (heap; the caller frees it). */
char *pw_qemu_manifest_text(const struct pw_qemu_snapshot *s);

#endif
