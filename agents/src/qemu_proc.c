/* qemu_proc.c — the process side of the QEMU microvm primitives: fork/exec of QEMU, /proc,
 * waiting and killing, the QMP and console sockets, the HTTP probe and file clean-up
 * (qemu_internal.h). */
#include "qemu_internal.h"

#include "pw/error.h"
#include "pw/numabind.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* ---- small helpers ---- */

int64_t pw_qemu_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double pw_qemu_since_ms(int64_t t0_us) { return (double)(pw_qemu_now_us() - t0_us) / 1000.0; }

bool pw_qemu_cancelled(const struct pw_qemu_vm *vm)
{
    return vm != NULL && vm->cancel != NULL && atomic_load(vm->cancel) != 0;
}

void pw_qemu_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int pw_qemu_fmt_path(char *dst, size_t size, char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size) {
        pw_errf(errbuf, errlen, "path too long: %s...", dst);
        return PW_ERR_INVAL;
    }
    return PW_OK;
}

int pw_qemu_mkdir_p(const char *path, char *errbuf, size_t errlen)
{
    char tmp[PATH_MAX];
    if (pw_strlcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp)) {
        pw_errf(errbuf, errlen, "path too long: %s", path);
        return PW_ERR_INVAL;
    }
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST) {
                pw_errf(errbuf, errlen, "mkdir %s: %s", tmp, strerror(errno));
                return PW_ERR_IO;
            }
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return PW_OK;
}

/* write_file_atomic writes data to path through path.tmp and rename, so readers see the old
 * or the new file whole. */
int pw_qemu_write_file_atomic(const char *path, const char *data, size_t len, bool sync,
                              char *errbuf, size_t errlen)
{
    char tmp[PATH_MAX];
    int rv = pw_qemu_fmt_path(tmp, sizeof(tmp), errbuf, errlen, "%s.tmp", path);
    if (rv != PW_OK)
        return rv;
    /* A fresh file, never one found there: an isolated VM owns the directory its vm.json is
     * in and could leave a link to a file of root's under the temporary name. */
    (void)unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        pw_errf(errbuf, errlen, "open %s: %s", tmp, strerror(errno));
        return PW_ERR_IO;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            pw_errf(errbuf, errlen, "write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return PW_ERR_IO;
        }
        off += (size_t)n;
    }
    if ((sync && fsync(fd) != 0) || close(fd) != 0) {
        pw_errf(errbuf, errlen, "write %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return PW_ERR_IO;
    }
    if (rename(tmp, path) != 0) {
        pw_errf(errbuf, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return PW_ERR_IO;
    }
    return PW_OK;
}

/* read_file reads at most max bytes of path into a NUL-terminated heap buffer.
 * PW_ERR_NOTFOUND when it does not exist, PW_ERR_TOOBIG when it is longer. */
int pw_qemu_read_file(const char *path, size_t max, char **out, size_t *len, char *errbuf,
                      size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        pw_errf(errbuf, errlen, "open %s: %s", path, strerror(errno));
        return errno == ENOENT ? PW_ERR_NOTFOUND : PW_ERR_IO;
    }
    char *buf = pw_xmalloc(max + 2);
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            pw_errf(errbuf, errlen, "read %s: %s", path, strerror(errno));
            close(fd);
            free(buf);
            return PW_ERR_IO;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max) {
            pw_errf(errbuf, errlen, "%s is larger than %zu bytes", path, max);
            close(fd);
            free(buf);
            return PW_ERR_TOOBIG;
        }
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return PW_OK;
}

/* one_line copies s into out as one printable line (control characters become spaces). */
void pw_qemu_one_line(char *out, size_t outlen, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < n && j + 1 < outlen; i++) {
        unsigned char c = (unsigned char)s[i];
        out[j++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    while (j > 0 && out[j - 1] == ' ')
        j--;
    if (outlen > 0)
        out[j] = '\0';
}

bool pw_qemu_mac_valid(const char *s)
{
    if (s == NULL || strlen(s) != 17)
        return false;
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
            return false;
    }
    int first = (int)strtol(s, NULL, 16);
    return (first & 1) == 0; /* unicast */
}

bool pw_qemu_instance_valid(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    if (n == 0 || n >= PW_QEMU_INSTANCE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != ':' && c != '-')
            return false;
    }
    return true;
}

/* An option value QEMU splits at commas must not hold one; paths that reach such options
 * are checked here rather than escaped. */
int pw_qemu_check_opt_path(const char *what, const char *p, char *errbuf, size_t errlen)
{
    if (p[0] != '/' || strchr(p, ',') != NULL || strchr(p, '\n') != NULL) {
        pw_errf(errbuf, errlen, "%s \"%s\" must be an absolute path without commas", what, p);
        return PW_ERR_INVAL;
    }
    return PW_OK;
}


/* ---- /proc ---- */

/* proc_stat reads the start time (field 22) and state (field 3) of pid.
 * PW_ERR_NOTFOUND when there is no such process. */
int pw_qemu_proc_stat(pid_t pid, uint64_t *start_time, char *state)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return PW_ERR_NOTFOUND;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return PW_ERR_NOTFOUND;
    buf[n] = '\0';
    /* The command name in parentheses may hold anything, parentheses included. */
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ')
        return PW_ERR_PARSE;
    p += 2;
    if (state != NULL)
        *state = *p;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return PW_ERR_PARSE;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (errno != 0 || end == p)
        return PW_ERR_PARSE;
    *start_time = v;
    return PW_OK;
}

/* proc_has_marker tells whether /proc/PID/cmdline holds "-name" "prewarm-<id>". */
bool pw_qemu_proc_has_marker(pid_t pid, uint64_t vm_id)
{
    char path[64], want[32];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    snprintf(want, sizeof(want), "prewarm-%016" PRIx64, vm_id);
    char *buf;
    size_t len;
    if (pw_qemu_read_file(path, 16 * 1024, &buf, &len, NULL, 0) != PW_OK)
        return false;
    bool found = false;
    bool prev_name = false;
    for (size_t i = 0; i < len;) {
        const char *arg = buf + i;
        size_t n = strnlen(arg, len - i);
        if (prev_name && strcmp(arg, want) == 0) {
            found = true;
            break;
        }
        prev_name = strcmp(arg, "-name") == 0;
        i += n + 1;
    }
    free(buf);
    return found;
}

/* proc_find_marker looks through every process for the marker of vm_id; 0 when none. */
pid_t pw_qemu_proc_find_marker(uint64_t vm_id, uint64_t *start_time)
{
    DIR *d = opendir("/proc");
    if (d == NULL)
        return 0;
    pid_t found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        char state = 0;
        if (pid > 0 && pw_qemu_proc_has_marker(pid, vm_id) &&
            pw_qemu_proc_stat(pid, start_time, &state) == PW_OK && state != 'Z') {
            found = pid;
            break;
        }
    }
    closedir(d);
    return found;
}


/* ---- processes ---- */

/* child_fail reports why the child could not exec, with system calls only (we are between
 * fork and exec of a possibly multi-threaded process), and exits. */
static void child_fail(int errfd, const char *what, int err)
{
    char buf[320];
    size_t n = 0;
    char num[16];
    size_t k = 0;
    unsigned u = (unsigned)err;
    do {
        num[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0 && k < sizeof(num));
    while (k > 0)
        buf[n++] = num[--k];
    buf[n++] = ' ';
    for (const char *p = what; *p != '\0' && n < sizeof(buf) - 1; p++)
        buf[n++] = *p;
    ssize_t w = write(errfd, buf, n);
    (void)w;
    _exit(127);
}

static void close_from(int lo, int hi)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)lo, (unsigned)hi, 0) == 0)
        return;
#endif
    for (int fd = lo; fd <= hi && fd < 65536; fd++)
        close(fd);
}

/* child_drop makes the child the VM's own unprivileged user: no supplementary groups, gid
 * and uid (real, effective, saved) uid, and no way back up through exec (no_new_privs).
 * Raw system calls: glibc's set*id wrappers synchronise all threads of the process, which
 * after fork in a multi-threaded parent is not a safe thing to ask of it. */
static void child_drop(int errfd, uint32_t uid)
{
    if (syscall(SYS_setgroups, 0, NULL) != 0)
        child_fail(errfd, "setgroups", errno);
    if (syscall(SYS_setresgid, (gid_t)uid, (gid_t)uid, (gid_t)uid) != 0)
        child_fail(errfd, "setresgid", errno);
    if (syscall(SYS_setresuid, (uid_t)uid, (uid_t)uid, (uid_t)uid) != 0)
        child_fail(errfd, "setresuid", errno);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        child_fail(errfd, "prctl(PR_SET_NO_NEW_PRIVS)", errno);
}

static void child_exec(char **argv, int nullfd, int logfd, int errfd,
                       const struct pw_numabind *bind, uint32_t uid, const int *pass,
                       size_t npass)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &dfl, NULL);
    /* Its own session and process group: signals to the agent's group (a terminal's ^C)
     * do not reach it, and it can be killed as a group. */
    if (setsid() < 0)
        child_fail(errfd, "setsid", errno);
    if (bind != NULL) {
        char why[256];
        why[0] = '\0';
        if (pw_numabind_self(bind, why, sizeof(why)) != PW_OK)
            child_fail(errfd, why, 0);
    }
    if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0)
        child_fail(errfd, "dup2", errno);
    /* pass[] and errfd sit above PW_QEMU_PASS_FD0 + PW_QEMU_PASS_MAX (spawn made sure), so
     * these dup2s clobber none of them; dup2 clears close-on-exec on the copies. */
    for (size_t i = 0; i < npass; i++)
        if (dup2(pass[i], PW_QEMU_PASS_FD0 + (int)i) < 0)
            child_fail(errfd, "dup2", errno);
    if (uid != 0)
        child_drop(errfd, uid);
    close_from(PW_QEMU_PASS_FD0 + (int)npass, errfd - 1);
    close_from(errfd + 1, INT32_MAX);
    execve(argv[0], argv, environ);
    child_fail(errfd, "execve", errno);
}

/* The lowest descriptor high_fd leaves: above the standard ones and the passed ones. */
#define HIGH_FD_MIN (PW_QEMU_PASS_FD0 + PW_QEMU_PASS_MAX)

/* high_fd moves fd above the standard and passed descriptors (close-on-exec), so the child's
 * dup2 onto 0..HIGH_FD_MIN-1 cannot clobber it. */
static int high_fd(int fd)
{
    if (fd < 0 || fd >= HIGH_FD_MIN)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD_MIN);
    close(fd);
    return h;
}

/* spawn starts argv with stdin from /dev/null and stdout/stderr appended to <dir>/qemu.log. */
int pw_qemu_spawn(struct pw_qemu_vm *vm, char **argv, const struct pw_numabind *bind,
                  const int *pass, size_t npass, char *errbuf, size_t errlen)
{
    if (npass > PW_QEMU_PASS_MAX || (npass > 0 && vm->uid == 0)) {
        pw_errf(errbuf, errlen, "descriptors are passed to isolated VMs only (at most %d)",
                PW_QEMU_PASS_MAX);
        return PW_ERR_INVAL;
    }
    int hpass[PW_QEMU_PASS_MAX] = {-1, -1};
    char logpath[PATH_MAX];
    int rv = pw_qemu_fmt_path(logpath, sizeof(logpath), errbuf, errlen, "%s/qemu.log", vm->dir);
    if (rv != PW_OK)
        return rv;
    /* O_NOFOLLOW: an isolated VM owns its directory and could leave a link there. */
    int logfd = high_fd(open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW,
                             0644));
    int nullfd = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int pfd[2] = {-1, -1};
    bool pass_ok = true;
    for (size_t i = 0; i < npass; i++) {
        hpass[i] = pass[i] >= HIGH_FD_MIN ? pass[i] : fcntl(pass[i], F_DUPFD_CLOEXEC, HIGH_FD_MIN);
        pass_ok = pass_ok && hpass[i] >= 0;
    }
    if (logfd < 0 || nullfd < 0 || !pass_ok || pipe2(pfd, O_CLOEXEC) != 0) {
        pw_errf(errbuf, errlen, "before starting QEMU: %s", strerror(errno));
        rv = PW_ERR_IO;
        goto out;
    }
    pfd[0] = high_fd(pfd[0]);
    pfd[1] = high_fd(pfd[1]);
    vm->started_us = pw_qemu_now_us();
    pid_t pid = fork();
    if (pid < 0) {
        pw_errf(errbuf, errlen, "fork: %s", strerror(errno));
        rv = PW_ERR_IO;
        goto out;
    }
    if (pid == 0)
        child_exec(argv, nullfd, logfd, pfd[1], bind, vm->uid, hpass, npass);
    close(pfd[1]);
    pfd[1] = -1;
    /* The pipe closes at exec; anything read from it is the child's reason for failing. */
    char buf[320];
    ssize_t n;
    do
        n = read(pfd[0], buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        buf[n] = '\0';
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        char *sp = strchr(buf, ' ');
        int e = atoi(buf);
        pw_errf(errbuf, errlen, "starting %s: %s%s%s", argv[0], sp != NULL ? sp + 1 : buf,
                e != 0 ? ": " : "", e != 0 ? strerror(e) : "");
        rv = PW_ERR_UNAVAIL;
        goto out;
    }
    vm->pid = pid;
    vm->is_child = true;
    vm->exited = false;
    if (pw_qemu_proc_stat(pid, &vm->start_time, NULL) != PW_OK)
        vm->start_time = 0;
    rv = PW_OK;
out:
    if (logfd >= 0)
        close(logfd);
    if (nullfd >= 0)
        close(nullfd);
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    for (size_t i = 0; i < npass; i++)
        if (hpass[i] >= 0 && hpass[i] != pass[i])
            close(hpass[i]);
    return rv;
}

bool pw_qemu_alive(struct pw_qemu_vm *vm)
{
    if (vm->exited || vm->pid <= 0)
        return false;
    int st;
    if (vm->is_child) {
        pid_t r = waitpid(vm->pid, &st, WNOHANG);
        if (r == vm->pid) {
            vm->wait_status = st;
            vm->exited = true;
        } else if (r < 0 && errno == ECHILD) {
            vm->exited = true; /* reaped elsewhere, against the rules in qemu_vm.h */
        }
        return !vm->exited;
    }
    uint64_t start;
    char state = 0;
    if (pw_qemu_proc_stat(vm->pid, &start, &state) != PW_OK || start != vm->start_time) {
        vm->exited = true;
    } else if (state == 'Z' || state == 'X') {
        /* An adopted VM may still be our child (adopted in the same process): then it is
         * gone once reaped, and waitpid says 0 while its other threads are still exiting. */
        pid_t r = waitpid(vm->pid, &st, WNOHANG);
        if (r == vm->pid || (r < 0 && errno == ECHILD))
            vm->exited = true;
    }
    return !vm->exited;
}

bool pw_qemu_wait_exit(struct pw_qemu_vm *vm, int64_t deadline_ms)
{
    int64_t step = 1;
    while (pw_qemu_alive(vm)) {
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0)
            return false;
        pw_qemu_sleep_ms(PW_MIN(step, left));
        step = PW_MIN(step * 2, 20);
    }
    return true;
}

/* kill_vm makes sure the process is gone: SIGKILL to its group and to it, then wait. */
bool pw_qemu_kill(struct pw_qemu_vm *vm)
{
    if (!pw_qemu_alive(vm))
        return true;
    /* pw_qemu_alive just checked an adopted VM's start time: the PID is still our QEMU. */
    kill(-vm->pid, SIGKILL);
    kill(vm->pid, SIGKILL);
    return pw_qemu_wait_exit(vm, pw_now_mono_ms() + PW_QEMU_KILL_GRACE_MS);
}

/* log_tail puts the last lines of QEMU's own log into out, on one line. */
static void log_tail(const struct pw_qemu_vm *vm, char *out, size_t outlen)
{
    char path[PATH_MAX];
    out[0] = '\0';
    if (snprintf(path, sizeof(path), "%s/qemu.log", vm->dir) >= (int)sizeof(path))
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return;
    char buf[400];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return;
    pw_qemu_one_line(out, outlen, buf, (size_t)n);
}

void pw_qemu_exit_reason(struct pw_qemu_vm *vm, char *errbuf, size_t errlen, const char *during)
{
    char tail[400], how[64] = "exited";
    log_tail(vm, tail, sizeof(tail));
    if (vm->is_child && WIFEXITED(vm->wait_status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(vm->wait_status));
    else if (vm->is_child && WIFSIGNALED(vm->wait_status))
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(vm->wait_status));
    pw_errf(errbuf, errlen, "QEMU %s %s%s%s", how, during, tail[0] ? ": " : "", tail);
}

/* ---- sockets ---- */

/* connect_unix connects to a socket QEMU creates shortly after it starts, retrying while it is
 * not there yet, and giving up early when QEMU has exited. */
static int connect_unix(struct pw_qemu_vm *vm, const char *path, int64_t deadline_ms, int *out,
                        char *errbuf, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    pw_strlcpy(sa.sun_path, path, sizeof(sa.sun_path));
    int64_t step = 1;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            pw_errf(errbuf, errlen, "socket: %s", strerror(errno));
            return PW_ERR_IO;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
            /* An isolated VM owns the directory its sockets are in and could leave a link to
             * another VM's socket there: the peer must be the VM's own uid. */
            struct ucred cred;
            socklen_t cl = sizeof(cred);
            if (vm != NULL && vm->uid != 0 &&
                (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
                 cred.uid != (uid_t)vm->uid)) {
                pw_errf(errbuf, errlen, "%s: the peer is not the VM's uid %u", path,
                        (unsigned)vm->uid);
                close(fd);
                return PW_ERR_IO;
            }
            *out = fd;
            return PW_OK;
        }
        int e = errno;
        close(fd);
        if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN && e != EINTR) {
            pw_errf(errbuf, errlen, "connect %s: %s", path, strerror(e));
            return PW_ERR_IO;
        }
        if (vm != NULL && !pw_qemu_alive(vm)) {
            pw_qemu_exit_reason(vm, errbuf, errlen, "before its sockets were up");
            return PW_ERR_UNAVAIL;
        }
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (pw_qemu_cancelled(vm)) {
            pw_errf(errbuf, errlen, "connect %s: cancelled", path);
            return PW_ERR_TIMEOUT;
        }
        if (left <= 0) {
            pw_errf(errbuf, errlen, "connect %s: %s until the deadline", path, strerror(e));
            return PW_ERR_TIMEOUT;
        }
        pw_qemu_sleep_ms(PW_MIN(step, left));
        step = PW_MIN(step * 2, 10);
    }
}

int pw_qemu_qmp_open(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    int fd = -1;
    int rv = connect_unix(vm, vm->qmp_path, deadline_ms, &fd, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    rv = pw_qmp_open_fd(&vm->qmp, fd, deadline_ms, errbuf, errlen);
    /* A connection that breaks is most often QEMU exiting: give it a moment to be reaped. */
    if (rv != PW_OK && rv != PW_ERR_TIMEOUT)
        (void)pw_qemu_wait_exit(vm, pw_now_mono_ms() + 1000);
    if (rv != PW_OK && !pw_qemu_alive(vm)) {
        pw_qemu_exit_reason(vm, errbuf, errlen, "during the QMP handshake");
        rv = PW_ERR_UNAVAIL;
    }
    return rv;
}

int pw_qemu_console_open(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf,
                         size_t errlen)
{
    if (vm->console_fd >= 0)
        return PW_OK;
    vm->clen = 0;
    return connect_unix(vm, vm->console_path, deadline_ms, &vm->console_fd, errbuf, errlen);
}

void pw_qemu_console_close(struct pw_qemu_vm *vm)
{
    if (vm->console_fd >= 0)
        close(vm->console_fd);
    vm->console_fd = -1;
    vm->clen = 0;
}

/* console_line returns the next complete console line (without "\r\n"). While waiting it
 * watches the process, in slices of 50 ms. */
static int console_line(struct pw_qemu_vm *vm, int64_t deadline_ms, char *line, size_t linelen,
                        char *errbuf, size_t errlen)
{
    for (;;) {
        char *nl = memchr(vm->cbuf, '\n', vm->clen);
        size_t n = nl != NULL ? (size_t)(nl - vm->cbuf) : vm->clen;
        if (nl != NULL || vm->clen == sizeof(vm->cbuf)) {
            /* A line longer than the buffer is cut into pieces. */
            pw_qemu_one_line(line, linelen, vm->cbuf, n);
            size_t used = nl != NULL ? n + 1 : n;
            memmove(vm->cbuf, vm->cbuf + used, vm->clen - used);
            vm->clen -= used;
            if (line[0] != '\0')
                pw_strlcpy(vm->last_line, line, sizeof(vm->last_line));
            return PW_OK;
        }
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0 || pw_qemu_cancelled(vm)) {
            pw_errf(errbuf, errlen, "%s", left <= 0 ? "deadline passed" : "cancelled");
            return PW_ERR_TIMEOUT;
        }
        struct pollfd p = {.fd = vm->console_fd, .events = POLLIN};
        int r = poll(&p, 1, (int)PW_MIN(left, 50));
        if (r < 0 && errno != EINTR) {
            pw_errf(errbuf, errlen, "console: poll: %s", strerror(errno));
            return PW_ERR_IO;
        }
        if (r > 0) {
            ssize_t got = recv(vm->console_fd, vm->cbuf + vm->clen, sizeof(vm->cbuf) - vm->clen, 0);
            if (got > 0) {
                vm->clen += (size_t)got;
                continue;
            }
            if (got < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            /* The console closes when QEMU exits: give the process a moment to be reaped. */
            pw_qemu_wait_exit(vm, pw_now_mono_ms() + 1000);
            if (!pw_qemu_alive(vm)) {
                pw_qemu_exit_reason(vm, errbuf, errlen, "while the host waited on its console");
                return PW_ERR_UNAVAIL;
            }
            pw_errf(errbuf, errlen, "QEMU closed the console");
            return PW_ERR_IO;
        }
        if (!pw_qemu_alive(vm)) {
            pw_qemu_exit_reason(vm, errbuf, errlen, "while the host waited on its console");
            return PW_ERR_UNAVAIL;
        }
    }
}

/* has_token tells whether line holds "<word> <arg>" followed by the end, a space or ':'. */
static bool has_token(const char *line, const char *word, const char *arg)
{
    size_t wl = strlen(word), al = strlen(arg);
    for (const char *p = strstr(line, word); p != NULL; p = strstr(p + 1, word)) {
        const char *q = p + wl;
        if (*q == ' ' && strncmp(q + 1, arg, al) == 0) {
            char c = q[1 + al];
            if (c == '\0' || c == ' ' || c == ':')
                return true;
        }
    }
    return false;
}

/* console_wait reads lines until one holds "<ok> <arg>" (PW_OK) or "<bad> <arg>" (the guest
 * gave up: PW_ERR_UNAVAIL with its line). */
int pw_qemu_console_wait(struct pw_qemu_vm *vm, const char *ok, const char *bad,
                         const char *arg, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    char line[512], why[512];
    for (;;) {
        int rv = console_line(vm, deadline_ms, line, sizeof(line), why, sizeof(why));
        if (rv == PW_ERR_TIMEOUT) {
            pw_errf(errbuf, errlen, "no \"%s %s\" on the console %s (last line: \"%s\")", ok,
                    arg,
                    pw_qemu_cancelled(vm) ? "before the wait was cancelled" : "by the deadline",
                    vm->last_line);
            return rv;
        }
        if (rv != PW_OK) {
            pw_errf(errbuf, errlen, "%s", why);
            return rv;
        }
        if (has_token(line, ok, arg))
            return PW_OK;
        if (bad != NULL && has_token(line, bad, arg)) {
            pw_errf(errbuf, errlen, "the guest said: %s", line);
            return PW_ERR_UNAVAIL;
        }
    }
}

int pw_qemu_console_write(struct pw_qemu_vm *vm, const char *s, int64_t deadline_ms,
                          char *errbuf, size_t errlen)
{
    size_t len = strlen(s), off = 0;
    while (off < len) {
        ssize_t n = send(vm->console_fd, s + off, len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int64_t left = deadline_ms - pw_now_mono_ms();
            if (left <= 0) {
                pw_errf(errbuf, errlen, "console write: deadline passed");
                return PW_ERR_TIMEOUT;
            }
            struct pollfd p = {.fd = vm->console_fd, .events = POLLOUT};
            (void)poll(&p, 1, (int)PW_MIN(left, 50));
            continue;
        }
        pw_errf(errbuf, errlen, "console write: %s", strerror(errno));
        return PW_ERR_IO;
    }
    return PW_OK;
}

uint16_t pw_qemu_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    int e = errno;
    close(fd);
    errno = e;
    return port;
}

/* http_answers tells whether a GET on 127.0.0.1:port gets the start of an HTTP answer
 * before deadline_ms. QEMU's user network accepts the TCP connection itself, so only an
 * answer from the guest counts. */
bool pw_qemu_http_answers(const struct pw_qemu_vm *vm, uint16_t port, int64_t deadline_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    static const char req[] = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    char buf[8];
    size_t have = 0, sent = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS)
        goto out;
    while (have < 5) {
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0 || pw_qemu_cancelled(vm))
            goto out;
        struct pollfd p = {.fd = fd, .events = sent < sizeof(req) - 1 ? POLLOUT : POLLIN};
        int r = poll(&p, 1, (int)PW_MIN(left, 100));
        if (r <= 0)
            continue;
        if (sent < sizeof(req) - 1) {
            ssize_t n = send(fd, req + sent, sizeof(req) - 1 - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN)
                goto out;
            if (n > 0)
                sent += (size_t)n;
            continue;
        }
        ssize_t n = recv(fd, buf + have, 5 - have, 0);
        if (n <= 0 && !(n < 0 && errno == EAGAIN))
            goto out;
        if (n > 0)
            have += (size_t)n;
    }
    ok = memcmp(buf, "HTTP/", 5) == 0;
out:
    close(fd);
    return ok;
}

/* ---- starting and stopping ---- */

/* remove_vm_files deletes the VM's directory (but its logs when keep_logs) and the files it
 * owns. */
int pw_qemu_remove_files(const char *dir, char (*owned)[PATH_MAX], size_t nowned,
                         bool keep_logs, char *errbuf, size_t errlen)
{
    int rv = PW_OK;
    for (size_t i = 0; i < nowned; i++) {
        if (owned[i][0] != '\0' && unlink(owned[i]) != 0 && errno != ENOENT) {
            pw_errf(errbuf, errlen, "unlink %s: %s", owned[i], strerror(errno));
            rv = PW_ERR_IO;
        }
    }
    DIR *d = opendir(dir);
    if (d == NULL)
        return errno == ENOENT ? rv : PW_ERR_IO;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (keep_logs && (strcmp(e->d_name, "qemu.log") == 0 ||
                          strcmp(e->d_name, "console.log") == 0))
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT) {
            pw_errf(errbuf, errlen, "unlink %s/%s: %s", dir, e->d_name, strerror(errno));
            rv = PW_ERR_IO;
        }
    }
    closedir(d);
    if (!keep_logs && rmdir(dir) != 0 && errno != ENOENT) {
        pw_errf(errbuf, errlen, "rmdir %s: %s", dir, strerror(errno));
        rv = PW_ERR_IO;
    }
    return rv;
}

/* abandon kills a VM that failed to start and removes everything it had. */
void pw_qemu_abandon(struct pw_qemu_vm *vm)
{
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    pw_qemu_console_close(vm);
    if (pw_qemu_kill(vm))
        (void)pw_qemu_remove_files(vm->dir, vm->owned, PW_ARRAY_LEN(vm->owned), false, NULL, 0);
    pw_qemu_vm_free(vm);
}

/* cap_one rotates dir/name when it is longer than max_bytes: copy to name.1, truncate. */
static int cap_one(const char *dir, const char *name, uint64_t max_bytes)
{
    char path[PATH_MAX], old[PATH_MAX + 2];
    struct stat st;
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path) ||
        lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size <= max_bytes)
        return 0;
    snprintf(old, sizeof(old), "%s.1", path);
    /* An isolated VM owns its directory: never follow a link it may have put there (the
     * agent is root), and truncate through the descriptor, not the name. */
    int in = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (in >= 0 && (fstat(in, &st) != 0 || !S_ISREG(st.st_mode))) {
        close(in);
        return 0;
    }
    if (in >= 0)
        (void)unlink(old);
    int out = in >= 0 ? open(old, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644)
                      : -1;
    if (out >= 0) {
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0) {
            if (write(out, buf, (size_t)n) != n)
                break;
        }
        close(out);
    }
    if (in < 0)
        return 0;
    /* QEMU writes with O_APPEND: after the truncation its next line lands at the new end. */
    int r = ftruncate(in, 0) == 0 ? 1 : 0;
    close(in);
    return r;
}

int pw_qemu_logs_cap(const char *dir, uint64_t max_bytes)
{
    return cap_one(dir, "qemu.log", max_bytes) + cap_one(dir, "console.log", max_bytes);
}
