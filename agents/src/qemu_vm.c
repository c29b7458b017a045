/* qemu_vm.c — QEMU microvm primitives (qemu_vm.h): the command line, fork/exec, golden boot and
 * snapshot, restore, destroy, and the VMs an earlier agent left behind (docs/qemu.md).
 *
 * The command line of a golden boot and of its restores comes from one function fed by one
 * struct pw_qemu_snapshot, so what must match between them cannot drift. Each VM keeps its
 * metadata in <run_dir>/<id>/vm.json, written before QEMU starts (pid 0) and again once its
 * pid is known, so a VM is never running without a record that leads back to it. */
#include "pw/qemu_vm.h"

#include "pw/error.h"
#include "pw/numabind.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <cjson/cJSON.h>

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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MACHINE_OPTS \
    "microvm,x-option-roms=off,isa-serial=on,rtc=on,pit=on,pic=on,memory-backend=mem0"
#define SANDBOX_OPTS "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
#define META_FILE "vm.json"
#define MANIFEST_FILE "snapshot.json"
#define MAX_JSON_FILE (64 * 1024)
/* After SIGKILL a process is gone within milliseconds unless stuck in the kernel. */
#define KILL_GRACE_MS 5000

/* ---- small helpers ---- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double since_ms(int64_t t0_us) { return (double)(now_us() - t0_us) / 1000.0; }

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* fmt_path writes a path and fails when it does not fit. */
static int fmt_path(char *dst, size_t size, char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int fmt_path(char *dst, size_t size, char *errbuf, size_t errlen, const char *fmt, ...)
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

static int mkdir_p(const char *path, char *errbuf, size_t errlen)
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
static int write_file_atomic(const char *path, const char *data, size_t len, bool sync,
                             char *errbuf, size_t errlen)
{
    char tmp[PATH_MAX];
    int rv = fmt_path(tmp, sizeof(tmp), errbuf, errlen, "%s.tmp", path);
    if (rv != PW_OK)
        return rv;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
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
static int read_file(const char *path, size_t max, char **out, size_t *len, char *errbuf,
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
static void one_line(char *out, size_t outlen, const char *s, size_t n)
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

static bool mac_valid(const char *s)
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

static bool instance_valid(const char *s)
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
static int check_opt_path(const char *what, const char *p, char *errbuf, size_t errlen)
{
    if (p[0] != '/' || strchr(p, ',') != NULL || strchr(p, '\n') != NULL) {
        pw_errf(errbuf, errlen, "%s \"%s\" must be an absolute path without commas", what, p);
        return PW_ERR_INVAL;
    }
    return PW_OK;
}

/* ---- names and config ---- */

static const char *const accel_names[] = {
#define PW_QEMU_ACCEL_NAME(name, str) str,
    PW_QEMU_ACCEL_MAP(PW_QEMU_ACCEL_NAME)
#undef PW_QEMU_ACCEL_NAME
};

const char *pw_qemu_accel_name(enum pw_qemu_accel a)
{
    return (size_t)a < PW_ARRAY_LEN(accel_names) ? accel_names[a] : "unknown";
}

int pw_qemu_accel_parse(const char *s, enum pw_qemu_accel *out)
{
    for (size_t i = 0; s != NULL && i < PW_ARRAY_LEN(accel_names); i++) {
        if (strcmp(s, accel_names[i]) == 0) {
            *out = (enum pw_qemu_accel)i;
            return PW_OK;
        }
    }
    return PW_ERR_INVAL;
}

int pw_qemu_config_init(struct pw_qemu_config *c, const char *run_dir, char *errbuf,
                        size_t errlen)
{
    memset(c, 0, sizeof(*c));
    pw_strlcpy(c->qemu_bin, "qemu-system-x86_64", sizeof(c->qemu_bin));
    pw_strlcpy(c->mem_dir, "/dev/shm", sizeof(c->mem_dir));
    c->accel = PW_QEMU_ACCEL_AUTO;
    c->sandbox = PW_QEMU_SANDBOX_AUTO;
    if (run_dir == NULL || run_dir[0] == '\0' || strlen(run_dir) >= sizeof(c->run_dir)) {
        pw_errf(errbuf, errlen, "run directory \"%s\" is empty or longer than %d bytes",
                run_dir != NULL ? run_dir : "", PW_QEMU_RUN_DIR_MAX - 1);
        return PW_ERR_INVAL;
    }
    pw_strlcpy(c->run_dir, run_dir, sizeof(c->run_dir));
    return PW_OK;
}

static uint64_t read_tsc_khz(void)
{
    FILE *f = fopen("/proc/cpuinfo", "re");
    if (f == NULL)
        return 0;
    char line[256];
    uint64_t khz = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "cpu MHz", 7) != 0)
            continue;
        const char *colon = strchr(line, ':');
        if (colon == NULL)
            break;
        /* "2445.428" -> 2445428, without going through a double. */
        const char *p = colon + 1;
        while (*p == ' ' || *p == '\t')
            p++;
        uint64_t mhz = 0, frac = 0;
        int fdigits = 0;
        while (isdigit((unsigned char)*p))
            mhz = mhz * 10 + (uint64_t)(*p++ - '0');
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p) && fdigits < 3) {
                frac = frac * 10 + (uint64_t)(*p++ - '0');
                fdigits++;
            }
        }
        while (fdigits++ < 3)
            frac *= 10;
        khz = mhz * 1000 + frac;
        break;
    }
    fclose(f);
    return khz;
}

static int find_in_path(const char *name, char *out, size_t outlen, char *errbuf, size_t errlen)
{
    if (strchr(name, '/') != NULL) {
        if (access(name, X_OK) != 0) {
            pw_errf(errbuf, errlen, "%s: %s", name, strerror(errno));
            return PW_ERR_NOTFOUND;
        }
        if (realpath(name, out) == NULL || strlen(out) >= outlen) {
            pw_errf(errbuf, errlen, "%s: cannot resolve", name);
            return PW_ERR_NOTFOUND;
        }
        return PW_OK;
    }
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    while (*path != '\0') {
        const char *colon = strchr(path, ':');
        size_t n = colon != NULL ? (size_t)(colon - path) : strlen(path);
        char cand[PATH_MAX];
        if (n > 0 && (size_t)snprintf(cand, sizeof(cand), "%.*s/%s", (int)n, path, name) <
                         sizeof(cand) && access(cand, X_OK) == 0) {
            pw_strlcpy(out, cand, outlen);
            return PW_OK;
        }
        path += n + (colon != NULL);
    }
    pw_errf(errbuf, errlen, "%s not found in PATH (apt-get install qemu-system-x86)", name);
    return PW_ERR_NOTFOUND;
}

/* ---- /proc ---- */

/* proc_stat reads the start time (field 22) and state (field 3) of pid.
 * PW_ERR_NOTFOUND when there is no such process. */
static int proc_stat(pid_t pid, uint64_t *start_time, char *state)
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
static bool proc_has_marker(pid_t pid, uint64_t vm_id)
{
    char path[64], want[32];
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    snprintf(want, sizeof(want), "prewarm-%016" PRIx64, vm_id);
    char *buf;
    size_t len;
    if (read_file(path, 16 * 1024, &buf, &len, NULL, 0) != PW_OK)
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
static pid_t proc_find_marker(uint64_t vm_id, uint64_t *start_time)
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
        if (pid > 0 && proc_has_marker(pid, vm_id) &&
            proc_stat(pid, start_time, &state) == PW_OK && state != 'Z') {
            found = pid;
            break;
        }
    }
    closedir(d);
    return found;
}

/* ---- the VM record ---- */

static struct pw_qemu_vm *vm_alloc(uint64_t vm_id, enum pw_qemu_vm_kind kind)
{
    struct pw_qemu_vm *vm = pw_xcalloc(1, sizeof(*vm));
    vm->vm_id = vm_id;
    vm->kind = kind;
    vm->console_fd = -1;
    vm->exited = true; /* until a process exists */
    return vm;
}

static int vm_paths(struct pw_qemu_vm *vm, const char *run_dir, char *errbuf, size_t errlen)
{
    int rv = fmt_path(vm->dir, sizeof(vm->dir), errbuf, errlen, "%s/%016" PRIx64, run_dir,
                      vm->vm_id);
    if (rv == PW_OK)
        rv = fmt_path(vm->qmp_path, sizeof(vm->qmp_path), errbuf, errlen, "%s/qmp.sock",
                      vm->dir);
    if (rv == PW_OK)
        rv = fmt_path(vm->console_path, sizeof(vm->console_path), errbuf, errlen,
                      "%s/console.sock", vm->dir);
    return rv;
}

static const char *kind_name(enum pw_qemu_vm_kind k)
{
    return k == PW_QEMU_VM_GOLDEN ? "golden" : "restored";
}

static int meta_write(const struct pw_qemu_vm *vm, char *errbuf, size_t errlen)
{
    char id[17], path[PATH_MAX];
    snprintf(id, sizeof(id), "%016" PRIx64, vm->vm_id);
    int rv = fmt_path(path, sizeof(path), errbuf, errlen, "%s/" META_FILE, vm->dir);
    if (rv != PW_OK)
        return rv;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "format", 1);
    cJSON_AddStringToObject(o, "vm_id", id);
    cJSON_AddStringToObject(o, "kind", kind_name(vm->kind));
    cJSON_AddStringToObject(o, "function", vm->function);
    cJSON_AddNumberToObject(o, "pid", vm->exited ? 0 : vm->pid);
    cJSON_AddNumberToObject(o, "start_time", (double)vm->start_time);
    cJSON_AddNumberToObject(o, "port", vm->port);
    cJSON_AddStringToObject(o, "mac", vm->mac);
    cJSON_AddStringToObject(o, "instance", vm->instance);
    cJSON_AddStringToObject(o, "qmp", vm->qmp_path);
    cJSON_AddStringToObject(o, "console", vm->console_path);
    cJSON_AddStringToObject(o, "snapshot", vm->kind == PW_QEMU_VM_RESTORED ? vm->snap.dir : "");
    cJSON *owned = cJSON_AddArrayToObject(o, "owned");
    for (size_t i = 0; i < PW_ARRAY_LEN(vm->owned); i++)
        if (vm->owned[i][0] != '\0')
            cJSON_AddItemToArray(owned, cJSON_CreateString(vm->owned[i]));
    cJSON_AddNumberToObject(o, "created_ms", (double)pw_now_wall_ms());
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (text == NULL)
        abort(); /* cJSON fails to print only for lack of memory */
    rv = write_file_atomic(path, text, strlen(text), false, errbuf, errlen);
    free(text);
    return rv;
}

/* JSON field readers for the metadata and the manifest: each names the field it rejects. */
static int json_str(const cJSON *o, const char *key, char *dst, size_t size, bool required,
                    char *errbuf, size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL && !required) {
        dst[0] = '\0';
        return PW_OK;
    }
    if (!cJSON_IsString(v)) {
        pw_errf(errbuf, errlen, "\"%s\" is missing or not a string", key);
        return PW_ERR_PARSE;
    }
    if (strlen(v->valuestring) >= size || strchr(v->valuestring, '\n') != NULL) {
        pw_errf(errbuf, errlen, "\"%s\" is longer than %zu bytes or has a newline", key, size - 1);
        return PW_ERR_PARSE;
    }
    pw_strlcpy(dst, v->valuestring, size);
    return PW_OK;
}

static int json_uint(const cJSON *o, const char *key, uint64_t max, uint64_t *out, char *errbuf,
                     size_t errlen)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    /* Integers up to 2^53 travel exactly as JSON numbers. */
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
        v->valuedouble > 9007199254740992.0 || v->valuedouble != (double)(uint64_t)v->valuedouble) {
        pw_errf(errbuf, errlen, "\"%s\" is missing or not an integer in 0..%" PRIu64, key, max);
        return PW_ERR_PARSE;
    }
    *out = (uint64_t)v->valuedouble;
    return PW_OK;
}

static int json_hex64(const cJSON *o, const char *key, uint64_t *out, char *errbuf,
                      size_t errlen)
{
    char s[17];
    int rv = json_str(o, key, s, sizeof(s), true, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    char *end;
    errno = 0;
    *out = strtoull(s, &end, 16);
    if (errno != 0 || strlen(s) != 16 || *end != '\0' || !isxdigit((unsigned char)s[0])) {
        pw_errf(errbuf, errlen, "\"%s\" is not 16 hex digits", key);
        return PW_ERR_PARSE;
    }
    return PW_OK;
}

static int json_path(const cJSON *o, const char *key, char *dst, size_t size, bool required,
                     char *errbuf, size_t errlen)
{
    int rv = json_str(o, key, dst, size, required, errbuf, errlen);
    if (rv == PW_OK && dst[0] != '\0' && dst[0] != '/') {
        pw_errf(errbuf, errlen, "\"%s\" is not an absolute path", key);
        rv = PW_ERR_PARSE;
    }
    return rv;
}

int pw_qemu_meta_parse(const char *text, size_t len, struct pw_qemu_meta *out, char *errbuf,
                       size_t errlen)
{
    memset(out, 0, sizeof(*out));
    cJSON *o = cJSON_ParseWithLength(text, len);
    char why[200] = "";
    int rv = PW_ERR_PARSE;
    uint64_t v;
    char kind[16];
    if (!cJSON_IsObject(o)) {
        pw_strlcpy(why, "not a JSON object", sizeof(why));
        goto fail;
    }
    if ((rv = json_uint(o, "format", UINT32_MAX, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    if (v != 1) {
        rv = PW_ERR_PARSE;
        snprintf(why, sizeof(why), "unknown format %" PRIu64, v);
        goto fail;
    }
    if ((rv = json_hex64(o, "vm_id", &out->vm_id, why, sizeof(why))) != PW_OK ||
        (rv = json_str(o, "kind", kind, sizeof(kind), true, why, sizeof(why))) != PW_OK ||
        (rv = json_str(o, "function", out->function, sizeof(out->function), true, why,
                       sizeof(why))) != PW_OK)
        goto fail;
    rv = PW_ERR_PARSE;
    if (strcmp(kind, "golden") == 0) {
        out->kind = PW_QEMU_VM_GOLDEN;
    } else if (strcmp(kind, "restored") == 0) {
        out->kind = PW_QEMU_VM_RESTORED;
    } else {
        pw_strlcpy(why, "\"kind\" is neither \"golden\" nor \"restored\"", sizeof(why));
        goto fail;
    }
    if (!pw_name_valid(out->function)) {
        pw_strlcpy(why, "\"function\" is not a valid name", sizeof(why));
        goto fail;
    }
    if ((rv = json_uint(o, "pid", INT32_MAX, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    out->pid = (pid_t)v;
    if ((rv = json_uint(o, "start_time", UINT64_MAX, &out->start_time, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_uint(o, "port", 65535, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    out->port = (uint16_t)v;
    if ((rv = json_str(o, "mac", out->mac, sizeof(out->mac), true, why, sizeof(why))) != PW_OK ||
        (rv = json_str(o, "instance", out->instance, sizeof(out->instance), false, why,
                       sizeof(why))) != PW_OK ||
        (rv = json_path(o, "qmp", out->qmp_path, sizeof(out->qmp_path), true, why,
                        sizeof(why))) != PW_OK ||
        (rv = json_path(o, "console", out->console_path, sizeof(out->console_path), true, why,
                        sizeof(why))) != PW_OK ||
        (rv = json_path(o, "snapshot", out->snapshot_dir, sizeof(out->snapshot_dir), false, why,
                        sizeof(why))) != PW_OK)
        goto fail;
    rv = PW_ERR_PARSE;
    if (!mac_valid(out->mac)) {
        pw_strlcpy(why, "\"mac\" is not a unicast MAC address", sizeof(why));
        goto fail;
    }
    if (out->instance[0] != '\0' && !instance_valid(out->instance)) {
        pw_strlcpy(why, "\"instance\" is not a valid instance id", sizeof(why));
        goto fail;
    }
    const cJSON *owned = cJSON_GetObjectItemCaseSensitive(o, "owned");
    if (owned != NULL) {
        if (!cJSON_IsArray(owned) || cJSON_GetArraySize(owned) > (int)PW_ARRAY_LEN(out->owned)) {
            pw_strlcpy(why, "\"owned\" is not an array of at most 2 paths", sizeof(why));
            goto fail;
        }
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, owned)
        {
            if (!cJSON_IsString(e) || e->valuestring[0] != '/' ||
                strlen(e->valuestring) >= sizeof(out->owned[0])) {
                pw_strlcpy(why, "\"owned\" holds something that is not an absolute path",
                           sizeof(why));
                goto fail;
            }
            pw_strlcpy(out->owned[i++], e->valuestring, sizeof(out->owned[0]));
        }
    }
    if ((rv = json_uint(o, "created_ms", INT64_MAX, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    out->created_ms = (int64_t)v;
    cJSON_Delete(o);
    return PW_OK;

fail:
    cJSON_Delete(o);
    memset(out, 0, sizeof(*out));
    pw_errf(errbuf, errlen, "%s: %s", META_FILE, why);
    return PW_ERR_PARSE;
}

/* ---- the command line ---- */

struct argv_list {
    char **v;
    size_t n, cap;
};

static void argv_add(struct argv_list *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void argv_add(struct argv_list *a, const char *fmt, ...)
{
    if (a->n + 2 > a->cap) {
        a->cap = a->cap ? a->cap * 2 : 48;
        a->v = pw_xrealloc(a->v, a->cap * sizeof(char *));
    }
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        abort(); /* vasprintf fails only for lack of memory */
    va_end(ap);
    a->v[a->n++] = s;
    a->v[a->n] = NULL;
}

void pw_qemu_argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (char **p = argv; *p != NULL; p++)
        free(*p);
    free(argv);
}

int pw_qemu_build_argv(const struct pw_qemu_config *cfg, const struct pw_qemu_snapshot *snap,
                       const struct pw_qemu_vm *vm, bool golden, char ***argv, char *errbuf,
                       size_t errlen)
{
    *argv = NULL;
    int rv;
    if ((rv = check_opt_path("RAM file", snap->mem_path, errbuf, errlen)) != PW_OK ||
        (rv = check_opt_path("VM directory", vm->dir, errbuf, errlen)) != PW_OK)
        return rv;
    if (!mac_valid(snap->mac) || snap->memory_mb == 0 || snap->vcpus == 0 ||
        strchr(snap->machine, ' ') != NULL || snap->accel[0] == '\0' || snap->cpu[0] == '\0') {
        pw_errf(errbuf, errlen, "snapshot parameters are incomplete or malformed");
        return PW_ERR_INVAL;
    }
    struct argv_list a = {0};
    argv_add(&a, "%s", cfg->qemu_bin);
    argv_add(&a, "-name");
    argv_add(&a, "prewarm-%016" PRIx64, vm->vm_id);
    /* What the migration stream must find identical on both sides. */
    argv_add(&a, "-machine");
    argv_add(&a, "%s", snap->machine);
    argv_add(&a, "-m");
    argv_add(&a, "%" PRIu32 "M", snap->memory_mb);
    argv_add(&a, "-smp");
    argv_add(&a, "%" PRIu32, snap->vcpus);
    argv_add(&a, "-object");
    argv_add(&a, "memory-backend-file,id=mem0,size=%" PRIu32 "M,mem-path=%s,share=%s",
             snap->memory_mb, snap->mem_path, golden ? "on" : "off");
    argv_add(&a, "-accel");
    argv_add(&a, "%s", snap->accel);
    argv_add(&a, "-cpu");
    argv_add(&a, "%s", snap->cpu);
    argv_add(&a, "-nodefaults");
    argv_add(&a, "-no-user-config");
    argv_add(&a, "-display");
    argv_add(&a, "none");
    /* Per VM: its control sockets, console log and forwarded port. */
    argv_add(&a, "-qmp");
    argv_add(&a, "unix:%s,server=on,wait=off", vm->qmp_path);
    argv_add(&a, "-chardev");
    argv_add(&a, "socket,id=con0,path=%s,server=on,wait=off,logfile=%s/console.log,logappend=on",
             vm->console_path, vm->dir);
    argv_add(&a, "-serial");
    argv_add(&a, "chardev:con0");
    argv_add(&a, "-netdev");
    argv_add(&a, "user,id=n0,hostfwd=tcp:127.0.0.1:%u-:%d", (unsigned)vm->port,
             PW_QEMU_GUEST_PORT);
    /* The golden's MAC even on restores: the device is part of the migrated state, and each
     * restored guest sets its own MAC when it gets its identity. */
    argv_add(&a, "-device");
    argv_add(&a, "virtio-net-device,netdev=n0,mac=%s", snap->mac);
    if (golden) {
        argv_add(&a, "-kernel");
        argv_add(&a, "%s", snap->kernel);
        argv_add(&a, "-initrd");
        argv_add(&a, "%s", snap->initrd);
        argv_add(&a, "-append");
        argv_add(&a, "%s", snap->cmdline);
    } else {
        argv_add(&a, "-incoming");
        argv_add(&a, "defer");
    }
    if (cfg->sandbox == PW_QEMU_SANDBOX_ON) {
        argv_add(&a, "-sandbox");
        argv_add(&a, SANDBOX_OPTS);
    }
    *argv = a.v;
    return PW_OK;
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

static void child_exec(char **argv, int nullfd, int logfd, int errfd,
                       const struct pw_numabind *bind)
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
    close_from(3, errfd - 1);
    close_from(errfd + 1, INT32_MAX);
    execve(argv[0], argv, environ);
    child_fail(errfd, "execve", errno);
}

/* high_fd moves fd above the standard descriptors (close-on-exec), so the child's dup2 onto
 * 0..2 cannot clobber it. */
static int high_fd(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int h = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return h;
}

/* spawn starts argv with stdin from /dev/null and stdout/stderr appended to <dir>/qemu.log. */
static int spawn(struct pw_qemu_vm *vm, char **argv, const struct pw_numabind *bind,
                 char *errbuf, size_t errlen)
{
    char logpath[PATH_MAX];
    int rv = fmt_path(logpath, sizeof(logpath), errbuf, errlen, "%s/qemu.log", vm->dir);
    if (rv != PW_OK)
        return rv;
    int logfd = high_fd(open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    int nullfd = high_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int pfd[2] = {-1, -1};
    if (logfd < 0 || nullfd < 0 || pipe2(pfd, O_CLOEXEC) != 0) {
        pw_errf(errbuf, errlen, "before starting QEMU: %s", strerror(errno));
        rv = PW_ERR_IO;
        goto out;
    }
    pfd[0] = high_fd(pfd[0]);
    pfd[1] = high_fd(pfd[1]);
    vm->started_us = now_us();
    pid_t pid = fork();
    if (pid < 0) {
        pw_errf(errbuf, errlen, "fork: %s", strerror(errno));
        rv = PW_ERR_IO;
        goto out;
    }
    if (pid == 0)
        child_exec(argv, nullfd, logfd, pfd[1], bind);
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
    if (proc_stat(pid, &vm->start_time, NULL) != PW_OK)
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
    if (proc_stat(vm->pid, &start, &state) != PW_OK || start != vm->start_time) {
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

static bool wait_exit(struct pw_qemu_vm *vm, int64_t deadline_ms)
{
    int64_t step = 1;
    while (pw_qemu_alive(vm)) {
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0)
            return false;
        sleep_ms(PW_MIN(step, left));
        step = PW_MIN(step * 2, 20);
    }
    return true;
}

/* kill_vm makes sure the process is gone: SIGKILL to its group and to it, then wait. */
static bool kill_vm(struct pw_qemu_vm *vm)
{
    if (!pw_qemu_alive(vm))
        return true;
    /* pw_qemu_alive just checked an adopted VM's start time: the PID is still our QEMU. */
    kill(-vm->pid, SIGKILL);
    kill(vm->pid, SIGKILL);
    return wait_exit(vm, pw_now_mono_ms() + KILL_GRACE_MS);
}

/* log_tail puts the last lines of QEMU's own log into out, on one line. */
static void log_tail(const struct pw_qemu_vm *vm, char *out, size_t outlen)
{
    char path[PATH_MAX];
    out[0] = '\0';
    if (snprintf(path, sizeof(path), "%s/qemu.log", vm->dir) >= (int)sizeof(path))
        return;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    char buf[400];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0;
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, from);
    close(fd);
    if (n <= 0)
        return;
    one_line(out, outlen, buf, (size_t)n);
}

/* exit_reason describes how vm ended, with QEMU's last words. */
static void exit_reason(struct pw_qemu_vm *vm, char *errbuf, size_t errlen, const char *during)
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
            exit_reason(vm, errbuf, errlen, "before its sockets were up");
            return PW_ERR_UNAVAIL;
        }
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0) {
            pw_errf(errbuf, errlen, "connect %s: %s until the deadline", path, strerror(e));
            return PW_ERR_TIMEOUT;
        }
        sleep_ms(PW_MIN(step, left));
        step = PW_MIN(step * 2, 10);
    }
}

static int qmp_open(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    int fd = -1;
    int rv = connect_unix(vm, vm->qmp_path, deadline_ms, &fd, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    rv = pw_qmp_open_fd(&vm->qmp, fd, deadline_ms, errbuf, errlen);
    /* A connection that breaks is most often QEMU exiting: give it a moment to be reaped. */
    if (rv != PW_OK && rv != PW_ERR_TIMEOUT)
        (void)wait_exit(vm, pw_now_mono_ms() + 1000);
    if (rv != PW_OK && !pw_qemu_alive(vm)) {
        exit_reason(vm, errbuf, errlen, "during the QMP handshake");
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
            one_line(line, linelen, vm->cbuf, n);
            size_t used = nl != NULL ? n + 1 : n;
            memmove(vm->cbuf, vm->cbuf + used, vm->clen - used);
            vm->clen -= used;
            if (line[0] != '\0')
                pw_strlcpy(vm->last_line, line, sizeof(vm->last_line));
            return PW_OK;
        }
        int64_t left = deadline_ms - pw_now_mono_ms();
        if (left <= 0) {
            pw_errf(errbuf, errlen, "deadline passed");
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
            wait_exit(vm, pw_now_mono_ms() + 1000);
            if (!pw_qemu_alive(vm)) {
                exit_reason(vm, errbuf, errlen, "while the host waited on its console");
                return PW_ERR_UNAVAIL;
            }
            pw_errf(errbuf, errlen, "QEMU closed the console");
            return PW_ERR_IO;
        }
        if (!pw_qemu_alive(vm)) {
            exit_reason(vm, errbuf, errlen, "while the host waited on its console");
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
static int console_wait(struct pw_qemu_vm *vm, const char *ok, const char *bad, const char *arg,
                        int64_t deadline_ms, char *errbuf, size_t errlen)
{
    char line[512], why[512];
    for (;;) {
        int rv = console_line(vm, deadline_ms, line, sizeof(line), why, sizeof(why));
        if (rv == PW_ERR_TIMEOUT) {
            pw_errf(errbuf, errlen,
                    "no \"%s %s\" on the console by the deadline (last line: \"%s\")", ok, arg,
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

static int console_write(struct pw_qemu_vm *vm, const char *s, int64_t deadline_ms,
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
static bool http_answers(uint16_t port, int64_t deadline_ms)
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
        if (left <= 0)
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
static int remove_vm_files(const char *dir, char (*owned)[PATH_MAX], size_t nowned,
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
static void abandon(struct pw_qemu_vm *vm)
{
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    pw_qemu_console_close(vm);
    if (kill_vm(vm))
        (void)remove_vm_files(vm->dir, vm->owned, PW_ARRAY_LEN(vm->owned), false, NULL, 0);
    pw_qemu_vm_free(vm);
}

static int check_config(const struct pw_qemu_config *cfg, char *errbuf, size_t errlen)
{
    if (cfg->accel == PW_QEMU_ACCEL_AUTO || cfg->sandbox == PW_QEMU_SANDBOX_AUTO ||
        cfg->qemu_bin[0] != '/') {
        pw_errf(errbuf, errlen,
                "the QEMU configuration is not resolved (accelerator, sandbox or binary path)");
        return PW_ERR_INVAL;
    }
    return PW_OK;
}

/* start_vm creates the VM's directory and metadata, starts QEMU and connects QMP and the
 * console. On failure the caller abandons vm. */
static int start_vm(const struct pw_qemu_config *cfg, struct pw_qemu_vm *vm, bool golden,
                    const struct pw_numabind *bind, int64_t deadline_ms,
                    struct pw_qemu_times *t, char *errbuf, size_t errlen)
{
    char **argv = NULL;
    int rv = pw_qemu_build_argv(cfg, &vm->snap, vm, golden, &argv, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    if (mkdir(vm->dir, 0755) != 0) {
        pw_errf(errbuf, errlen, "mkdir %s: %s", vm->dir, strerror(errno));
        rv = errno == EEXIST ? PW_ERR_EXISTS : PW_ERR_IO;
        /* Not ours: keep abandon away from it. */
        vm->dir[0] = '\0';
        goto out;
    }
    if ((rv = meta_write(vm, errbuf, errlen)) != PW_OK)
        goto out;
    if ((rv = spawn(vm, argv, bind, errbuf, errlen)) != PW_OK)
        goto out;
    if ((rv = meta_write(vm, errbuf, errlen)) != PW_OK)
        goto out;
    if ((rv = qmp_open(vm, deadline_ms, errbuf, errlen)) != PW_OK)
        goto out;
    if (t != NULL)
        t->qmp_ms = since_ms(vm->started_us);
    rv = pw_qemu_console_open(vm, deadline_ms, errbuf, errlen);
out:
    pw_qemu_argv_free(argv);
    return rv;
}

static void times_init(struct pw_qemu_times *t)
{
    if (t != NULL)
        *t = (struct pw_qemu_times){-1, -1, -1, -1, -1, -1};
}

static struct pw_qemu_vm *vm_for_spec(const struct pw_qemu_config *cfg,
                                      const struct pw_qemu_vm_spec *spec,
                                      enum pw_qemu_vm_kind kind, char *errbuf, size_t errlen)
{
    if (spec->function == NULL || !pw_name_valid(spec->function)) {
        pw_errf(errbuf, errlen, "function name \"%s\" is not valid",
                spec->function != NULL ? spec->function : "");
        return NULL;
    }
    if (spec->mac != NULL && !mac_valid(spec->mac)) {
        pw_errf(errbuf, errlen, "MAC \"%s\" is not a unicast aa:bb:cc:dd:ee:ff", spec->mac);
        return NULL;
    }
    struct pw_qemu_vm *vm = vm_alloc(spec->vm_id, kind);
    pw_strlcpy(vm->function, spec->function, sizeof(vm->function));
    if (spec->mac != NULL)
        pw_strlcpy(vm->mac, spec->mac, sizeof(vm->mac));
    else
        snprintf(vm->mac, sizeof(vm->mac), "52:54:%02x:%02x:%02x:%02x",
                 (unsigned)(spec->vm_id >> 24) & 0xff, (unsigned)(spec->vm_id >> 16) & 0xff,
                 (unsigned)(spec->vm_id >> 8) & 0xff, (unsigned)spec->vm_id & 0xff);
    vm->port = spec->port != 0 ? spec->port : pw_qemu_free_port();
    if (vm->port == 0) {
        pw_errf(errbuf, errlen, "no free TCP port on 127.0.0.1: %s", strerror(errno));
        pw_qemu_vm_free(vm);
        return NULL;
    }
    if (vm_paths(vm, cfg->run_dir, errbuf, errlen) != PW_OK) {
        pw_qemu_vm_free(vm);
        return NULL;
    }
    return vm;
}

int pw_qemu_boot(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                 const struct pw_qemu_vm_spec *spec, int64_t deadline_ms,
                 struct pw_qemu_vm **out, struct pw_qemu_times *t, char *errbuf, size_t errlen)
{
    *out = NULL;
    times_init(t);
    int rv = check_config(cfg, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    struct pw_qemu_vm *vm = vm_for_spec(cfg, spec, PW_QEMU_VM_GOLDEN, errbuf, errlen);
    if (vm == NULL)
        return PW_ERR_INVAL;
    struct pw_qemu_snapshot *s = &vm->snap;
    rv = PW_ERR_INVAL;
    if (g->kernel == NULL || realpath(g->kernel, s->kernel) == NULL) {
        pw_errf(errbuf, errlen, "kernel %s: %s", g->kernel ? g->kernel : "(none)", strerror(errno));
        goto fail_early;
    }
    if (g->initrd == NULL || realpath(g->initrd, s->initrd) == NULL) {
        pw_errf(errbuf, errlen, "initrd %s: %s", g->initrd ? g->initrd : "(none)", strerror(errno));
        goto fail_early;
    }
    pw_strlcpy(s->function, spec->function, sizeof(s->function));
    s->golden_vm_id = spec->vm_id;
    s->memory_mb = g->memory_mb != 0 ? g->memory_mb : 128;
    s->vcpus = g->vcpus != 0 ? g->vcpus : 1;
    if (s->memory_mb > 1024 * 1024 || s->vcpus > 255) {
        pw_errf(errbuf, errlen, "memory %" PRIu32 " MiB or %" PRIu32 " vCPUs out of range",
                s->memory_mb, s->vcpus);
        goto fail_early;
    }
    pw_strlcpy(s->accel, pw_qemu_accel_name(cfg->accel), sizeof(s->accel));
    pw_strlcpy(s->cpu, cfg->accel == PW_QEMU_ACCEL_KVM ? "host" : "max", sizeof(s->cpu));
    pw_strlcpy(s->machine, MACHINE_OPTS, sizeof(s->machine));
    pw_strlcpy(s->mac, vm->mac, sizeof(s->mac));
    pw_strlcpy(s->qemu_version, cfg->qemu_version, sizeof(s->qemu_version));
    const char *cmdline = g->cmdline != NULL ? g->cmdline : PW_QEMU_DEFAULT_CMDLINE;
    int n = cfg->tsc_khz != 0
                ? snprintf(s->cmdline, sizeof(s->cmdline), "%s tsc_early_khz=%" PRIu64, cmdline,
                           cfg->tsc_khz)
                : snprintf(s->cmdline, sizeof(s->cmdline), "%s", cmdline);
    if (n < 0 || (size_t)n >= sizeof(s->cmdline)) {
        pw_errf(errbuf, errlen, "guest command line longer than %zu bytes", sizeof(s->cmdline) - 1);
        goto fail_early;
    }
    if ((rv = fmt_path(s->mem_path, sizeof(s->mem_path), errbuf, errlen,
                       "%s/prewarm-%s-%016" PRIx64 ".mem", cfg->mem_dir, spec->function,
                       spec->vm_id)) != PW_OK)
        goto fail_early;
    if (access(s->mem_path, F_OK) == 0) {
        pw_errf(errbuf, errlen, "RAM file %s exists already", s->mem_path);
        rv = PW_ERR_EXISTS;
        goto fail_early;
    }
    pw_strlcpy(vm->owned[0], s->mem_path, sizeof(vm->owned[0]));

    rv = start_vm(cfg, vm, true, spec->bind, deadline_ms, t, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    rv = console_wait(vm, "PREWARM-READY", "PREWARM-FAILED", vm->function, deadline_ms, errbuf,
                      errlen);
    if (rv != PW_OK)
        goto fail;
    s->boot_ms = since_ms(vm->started_us);
    if (t != NULL)
        t->ready_ms = s->boot_ms;
    pw_qemu_console_close(vm);
    *out = vm;
    return PW_OK;

fail_early:
    pw_qemu_vm_free(vm);
    return rv;
fail:
    abandon(vm);
    return rv;
}

/* migrate_wait polls query-migrate until the migration completes. */
static int migrate_wait(struct pw_qemu_vm *vm, int64_t deadline_ms, char *errbuf, size_t errlen)
{
    int64_t step_us = 200;
    for (;;) {
        cJSON *r = NULL;
        int rv = pw_qmp_execute(vm->qmp, "query-migrate", NULL, &r, deadline_ms, errbuf, errlen);
        if (rv != PW_OK)
            return rv;
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "status");
        const char *s = cJSON_IsString(st) ? st->valuestring : "";
        if (strcmp(s, "completed") == 0) {
            cJSON_Delete(r);
            return PW_OK;
        }
        if (strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0) {
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "error-desc");
            pw_errf(errbuf, errlen, "migration %s: %s", s,
                    cJSON_IsString(d) ? d->valuestring : "no reason given");
            cJSON_Delete(r);
            return PW_ERR_UNAVAIL;
        }
        cJSON_Delete(r);
        if (pw_now_mono_ms() >= deadline_ms) {
            pw_errf(errbuf, errlen, "migration not completed by the deadline (status \"%s\")", s);
            return PW_ERR_TIMEOUT;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = step_us * 1000};
        nanosleep(&ts, NULL);
        step_us = PW_MIN(step_us * 2, 5000);
    }
}

static const char ignore_shared_args[] =
    "{\"capabilities\":[{\"capability\":\"x-ignore-shared\",\"state\":true}]}";

/* ---- snapshots ---- */

static char *manifest_text(const struct pw_qemu_snapshot *s)
{
    char id[17];
    snprintf(id, sizeof(id), "%016" PRIx64, s->golden_vm_id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "format", 1);
    cJSON_AddStringToObject(o, "function", s->function);
    cJSON_AddStringToObject(o, "golden_vm_id", id);
    cJSON_AddStringToObject(o, "mem_path", s->mem_path);
    cJSON_AddStringToObject(o, "state_path", s->state_path);
    cJSON_AddStringToObject(o, "accel", s->accel);
    cJSON_AddStringToObject(o, "cpu", s->cpu);
    cJSON_AddStringToObject(o, "machine", s->machine);
    cJSON_AddNumberToObject(o, "memory_mb", s->memory_mb);
    cJSON_AddNumberToObject(o, "vcpus", s->vcpus);
    cJSON_AddStringToObject(o, "mac", s->mac);
    cJSON_AddStringToObject(o, "kernel", s->kernel);
    cJSON_AddStringToObject(o, "initrd", s->initrd);
    cJSON_AddStringToObject(o, "cmdline", s->cmdline);
    cJSON_AddStringToObject(o, "qemu_version", s->qemu_version);
    cJSON_AddNumberToObject(o, "created_ms", (double)s->created_ms);
    cJSON_AddNumberToObject(o, "boot_ms", s->boot_ms);
    cJSON_AddNumberToObject(o, "snapshot_ms", s->snapshot_ms);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (text == NULL)
        abort(); /* cJSON fails to print only for lack of memory */
    return text;
}

static int manifest_parse(const char *text, size_t len, struct pw_qemu_snapshot *s,
                          char *errbuf, size_t errlen)
{
    cJSON *o = cJSON_ParseWithLength(text, len);
    char why[200] = "not a JSON object";
    uint64_t v;
    int rv = PW_ERR_PARSE;
    if (!cJSON_IsObject(o))
        goto fail;
    if ((rv = json_uint(o, "format", UINT32_MAX, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    if (v != 1) {
        snprintf(why, sizeof(why), "unknown format %" PRIu64, v);
        rv = PW_ERR_PARSE;
        goto fail;
    }
    if ((rv = json_str(o, "function", s->function, sizeof(s->function), true, why,
                       sizeof(why))) != PW_OK ||
        (rv = json_hex64(o, "golden_vm_id", &s->golden_vm_id, why, sizeof(why))) != PW_OK ||
        (rv = json_path(o, "mem_path", s->mem_path, sizeof(s->mem_path), true, why,
                        sizeof(why))) != PW_OK ||
        (rv = json_path(o, "state_path", s->state_path, sizeof(s->state_path), true, why,
                        sizeof(why))) != PW_OK ||
        (rv = json_str(o, "accel", s->accel, sizeof(s->accel), true, why, sizeof(why))) != PW_OK ||
        (rv = json_str(o, "cpu", s->cpu, sizeof(s->cpu), true, why, sizeof(why))) != PW_OK ||
        (rv = json_str(o, "machine", s->machine, sizeof(s->machine), true, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_uint(o, "memory_mb", 1024 * 1024, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    s->memory_mb = (uint32_t)v;
    if ((rv = json_uint(o, "vcpus", 255, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    s->vcpus = (uint32_t)v;
    if ((rv = json_str(o, "mac", s->mac, sizeof(s->mac), true, why, sizeof(why))) != PW_OK ||
        (rv = json_path(o, "kernel", s->kernel, sizeof(s->kernel), true, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_path(o, "initrd", s->initrd, sizeof(s->initrd), true, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_str(o, "cmdline", s->cmdline, sizeof(s->cmdline), true, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_str(o, "qemu_version", s->qemu_version, sizeof(s->qemu_version), false, why,
                       sizeof(why))) != PW_OK ||
        (rv = json_uint(o, "created_ms", INT64_MAX, &v, why, sizeof(why))) != PW_OK)
        goto fail;
    s->created_ms = (int64_t)v;
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "boot_ms");
    const cJSON *sn = cJSON_GetObjectItemCaseSensitive(o, "snapshot_ms");
    s->boot_ms = cJSON_IsNumber(b) ? b->valuedouble : -1;
    s->snapshot_ms = cJSON_IsNumber(sn) ? sn->valuedouble : -1;
    rv = PW_ERR_PARSE;
    enum pw_qemu_accel acc;
    if (!pw_name_valid(s->function)) {
        pw_strlcpy(why, "\"function\" is not a valid name", sizeof(why));
    } else if (pw_qemu_accel_parse(s->accel, &acc) != PW_OK || acc == PW_QEMU_ACCEL_AUTO) {
        pw_strlcpy(why, "\"accel\" is neither \"kvm\" nor \"tcg\"", sizeof(why));
    } else if (!mac_valid(s->mac)) {
        pw_strlcpy(why, "\"mac\" is not a unicast MAC address", sizeof(why));
    } else if (s->memory_mb == 0 || s->vcpus == 0) {
        pw_strlcpy(why, "\"memory_mb\" and \"vcpus\" must be positive", sizeof(why));
    } else if (strchr(s->machine, ' ') != NULL || strchr(s->mem_path, ',') != NULL) {
        pw_strlcpy(why, "\"machine\" or \"mem_path\" cannot be passed to QEMU", sizeof(why));
    } else {
        cJSON_Delete(o);
        return PW_OK;
    }
fail:
    cJSON_Delete(o);
    pw_errf(errbuf, errlen, "%s: %s", MANIFEST_FILE, why);
    return PW_ERR_PARSE;
}

int pw_qemu_snapshot_load(const char *snap_dir, struct pw_qemu_snapshot *out, char *errbuf,
                          size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char path[PATH_MAX];
    int rv = fmt_path(path, sizeof(path), errbuf, errlen, "%s/" MANIFEST_FILE, snap_dir);
    if (rv != PW_OK)
        return rv;
    char *text;
    size_t len;
    char why[300];
    rv = read_file(path, MAX_JSON_FILE, &text, &len, why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "snapshot %s: %s", snap_dir, why);
        return rv == PW_ERR_TOOBIG ? PW_ERR_PARSE : rv;
    }
    rv = manifest_parse(text, len, out, why, sizeof(why));
    free(text);
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "snapshot %s: %s", snap_dir, why);
        memset(out, 0, sizeof(*out));
        return rv;
    }
    pw_strlcpy(out->dir, snap_dir, sizeof(out->dir));
    struct stat st;
    if (stat(out->mem_path, &st) != 0 || (uint64_t)st.st_size != (uint64_t)out->memory_mb << 20) {
        pw_errf(errbuf, errlen, "snapshot %s: RAM file %s is missing or not %" PRIu32 " MiB",
                snap_dir, out->mem_path, out->memory_mb);
        memset(out, 0, sizeof(*out));
        return PW_ERR_NOTFOUND;
    }
    if (stat(out->state_path, &st) != 0 || st.st_size == 0) {
        pw_errf(errbuf, errlen, "snapshot %s: state file %s is missing or empty", snap_dir,
                out->state_path);
        memset(out, 0, sizeof(*out));
        return PW_ERR_NOTFOUND;
    }
    return PW_OK;
}

int pw_qemu_snapshot_delete(const struct pw_qemu_snapshot *snap, char *errbuf, size_t errlen)
{
    char manifest[PATH_MAX];
    int rv = fmt_path(manifest, sizeof(manifest), errbuf, errlen, "%s/" MANIFEST_FILE, snap->dir);
    if (rv != PW_OK)
        return rv;
    /* The manifest goes first: without it the snapshot no longer exists for anyone. */
    const char *files[] = {manifest, snap->state_path, snap->mem_path};
    for (size_t i = 0; i < PW_ARRAY_LEN(files); i++) {
        if (files[i][0] != '\0' && unlink(files[i]) != 0 && errno != ENOENT) {
            pw_errf(errbuf, errlen, "unlink %s: %s", files[i], strerror(errno));
            rv = PW_ERR_IO;
        }
    }
    if (rmdir(snap->dir) != 0 && errno != ENOENT && errno != ENOTEMPTY && errno != EEXIST) {
        pw_errf(errbuf, errlen, "rmdir %s: %s", snap->dir, strerror(errno));
        rv = PW_ERR_IO;
    }
    return rv;
}

int pw_qemu_snapshot(struct pw_qemu_vm *vm, const char *snap_dir, int64_t deadline_ms,
                     struct pw_qemu_snapshot *out, struct pw_qemu_times *t, char *errbuf,
                     size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (vm->kind != PW_QEMU_VM_GOLDEN || vm->qmp == NULL || !pw_qemu_alive(vm)) {
        pw_errf(errbuf, errlen, "VM %016" PRIx64 " is not a running golden VM", vm->vm_id);
        return PW_ERR_STATE;
    }
    struct pw_qemu_snapshot *s = &vm->snap;
    int fd = -1;
    int rv = mkdir_p(snap_dir, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    if (realpath(snap_dir, s->dir) == NULL) {
        pw_errf(errbuf, errlen, "%s: %s", snap_dir, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }
    if ((rv = fmt_path(s->state_path, sizeof(s->state_path), errbuf, errlen,
                       "%s/state-%016" PRIx64 ".bin", s->dir, vm->vm_id)) != PW_OK)
        goto fail;
    pw_strlcpy(vm->owned[1], s->state_path, sizeof(vm->owned[1]));
    if ((rv = meta_write(vm, errbuf, errlen)) != PW_OK)
        goto fail;
    fd = open(s->state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        pw_errf(errbuf, errlen, "open %s: %s", s->state_path, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }

    int64_t t0 = now_us();
    if ((rv = pw_qmp_execute(vm->qmp, "stop", NULL, NULL, deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate-set-capabilities", ignore_shared_args, NULL,
                             deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute_fd(vm->qmp, "getfd", "{\"fdname\":\"snap\"}", fd, NULL,
                                deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate", "{\"uri\":\"fd:snap\"}", NULL, deadline_ms,
                             errbuf, errlen)) != PW_OK ||
        (rv = migrate_wait(vm, deadline_ms, errbuf, errlen)) != PW_OK)
        goto fail;
    s->snapshot_ms = since_ms(t0);
    if (t != NULL)
        t->snapshot_ms = s->snapshot_ms;
    if (fsync(fd) != 0) {
        pw_errf(errbuf, errlen, "fsync %s: %s", s->state_path, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }
    close(fd);
    fd = -1;

    /* The RAM file is complete once the VM is stopped; quit and make sure QEMU is gone
     * before the file is handed to restores. */
    rv = pw_qmp_quit(vm->qmp, deadline_ms, errbuf, errlen);
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    if (rv != PW_OK)
        goto fail;
    if (!wait_exit(vm, deadline_ms) && !kill_vm(vm)) {
        pw_errf(errbuf, errlen, "QEMU did not exit after quit");
        rv = PW_ERR_UNAVAIL;
        goto fail;
    }

    struct pw_qemu_snapshot old;
    char ignored[200];
    bool had_old = pw_qemu_snapshot_load(s->dir, &old, ignored, sizeof(ignored)) == PW_OK;
    s->created_ms = pw_now_wall_ms();
    /* Hand the files over to the snapshot: from here on a crash leaks them rather than
     * leaving a manifest whose files an orphan clean-up deleted. */
    vm->owned[0][0] = vm->owned[1][0] = '\0';
    if ((rv = meta_write(vm, errbuf, errlen)) != PW_OK)
        goto fail;
    char manifest[PATH_MAX];
    char *text = manifest_text(s);
    rv = fmt_path(manifest, sizeof(manifest), errbuf, errlen, "%s/" MANIFEST_FILE, s->dir);
    if (rv == PW_OK)
        rv = write_file_atomic(manifest, text, strlen(text), true, errbuf, errlen);
    free(text);
    if (rv != PW_OK) {
        pw_strlcpy(vm->owned[0], s->mem_path, sizeof(vm->owned[0]));
        pw_strlcpy(vm->owned[1], s->state_path, sizeof(vm->owned[1]));
        goto fail;
    }
    if (had_old) {
        if (strcmp(old.mem_path, s->mem_path) != 0)
            unlink(old.mem_path);
        if (strcmp(old.state_path, s->state_path) != 0)
            unlink(old.state_path);
    }
    *out = *s;
    return PW_OK;

fail:
    if (fd >= 0)
        close(fd);
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    if (kill_vm(vm)) {
        for (size_t i = 0; i < PW_ARRAY_LEN(vm->owned); i++)
            if (vm->owned[i][0] != '\0')
                unlink(vm->owned[i]);
        vm->owned[0][0] = vm->owned[1][0] = '\0';
        (void)meta_write(vm, NULL, 0);
    }
    return rv;
}

int pw_qemu_golden(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                   const struct pw_qemu_vm_spec *spec, const char *snap_dir,
                   int64_t deadline_ms, struct pw_qemu_snapshot *out, struct pw_qemu_times *t,
                   char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    struct pw_qemu_vm *vm = NULL;
    int rv = pw_qemu_boot(cfg, g, spec, deadline_ms, &vm, t, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    rv = pw_qemu_snapshot(vm, snap_dir, deadline_ms, out, t, errbuf, errlen);
    char derr[256];
    int drv = pw_qemu_destroy(vm, PW_MAX(deadline_ms, pw_now_mono_ms() + 2000), 0, derr,
                              sizeof(derr));
    pw_qemu_vm_free(vm);
    if (rv == PW_OK && drv != PW_OK) {
        pw_errf(errbuf, errlen, "snapshot made, but the golden VM was not cleaned up: %s", derr);
        rv = drv;
    }
    return rv;
}

int pw_qemu_restore(const struct pw_qemu_config *cfg, const struct pw_qemu_snapshot *snap,
                    const struct pw_qemu_vm_spec *spec, const char *instance, unsigned flags,
                    int64_t deadline_ms, struct pw_qemu_vm **out, struct pw_qemu_times *t,
                    char *errbuf, size_t errlen)
{
    *out = NULL;
    times_init(t);
    int rv = check_config(cfg, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    if (!instance_valid(instance)) {
        pw_errf(errbuf, errlen, "instance id \"%s\" is not 1-64 characters of [A-Za-z0-9._:-]",
                instance != NULL ? instance : "");
        return PW_ERR_INVAL;
    }
    if (strcmp(snap->accel, pw_qemu_accel_name(cfg->accel)) != 0) {
        pw_errf(errbuf, errlen, "snapshot %s was made under %s and cannot restore under %s",
                snap->dir, snap->accel, pw_qemu_accel_name(cfg->accel));
        return PW_ERR_STATE;
    }
    if (snap->qemu_version[0] != '\0' && cfg->qemu_version[0] != '\0' &&
        strcmp(snap->qemu_version, cfg->qemu_version) != 0) {
        pw_errf(errbuf, errlen, "snapshot %s was made by QEMU %s, this is QEMU %s", snap->dir,
                snap->qemu_version, cfg->qemu_version);
        return PW_ERR_STATE;
    }
    struct pw_qemu_vm_spec sp = *spec;
    if (sp.function == NULL)
        sp.function = snap->function;
    if (strcmp(sp.function, snap->function) != 0) {
        pw_errf(errbuf, errlen, "snapshot %s is of function %s, not %s", snap->dir,
                snap->function, sp.function);
        return PW_ERR_INVAL;
    }
    int sfd = open(snap->state_path, O_RDONLY | O_CLOEXEC);
    if (sfd < 0) {
        pw_errf(errbuf, errlen, "snapshot state %s: %s", snap->state_path, strerror(errno));
        return errno == ENOENT ? PW_ERR_NOTFOUND : PW_ERR_IO;
    }
    struct pw_qemu_vm *vm = vm_for_spec(cfg, &sp, PW_QEMU_VM_RESTORED, errbuf, errlen);
    if (vm == NULL) {
        close(sfd);
        return PW_ERR_INVAL;
    }
    vm->snap = *snap;
    pw_strlcpy(vm->instance, instance, sizeof(vm->instance));

    char line[160];
    if ((rv = start_vm(cfg, vm, false, spec->bind, deadline_ms, t, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate-set-capabilities", ignore_shared_args, NULL,
                             deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute_fd(vm->qmp, "getfd", "{\"fdname\":\"state\"}", sfd, NULL,
                                deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate-incoming", "{\"uri\":\"fd:state\"}", NULL,
                             deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = migrate_wait(vm, deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "cont", NULL, NULL, deadline_ms, errbuf, errlen)) != PW_OK)
        goto fail;
    if (t != NULL)
        t->cont_ms = since_ms(vm->started_us);
    close(sfd);
    sfd = -1;

    /* Restored guests are identical copies until each gets its own identity. */
    snprintf(line, sizeof(line), "PREWARM-ID %s %s %" PRId64 "\n", instance, vm->mac,
             pw_now_wall_ms() / 1000);
    if ((rv = console_write(vm, line, deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = console_wait(vm, "PREWARM-ID-OK", "PREWARM-ID-ERR", instance, deadline_ms, errbuf,
                           errlen)) != PW_OK)
        goto fail;
    if (t != NULL)
        t->id_ms = since_ms(vm->started_us);
    pw_qemu_console_close(vm);
    if (flags & PW_QEMU_PROBE_HTTP) {
        int64_t step = 2;
        while (!http_answers(vm->port, deadline_ms)) {
            if (!pw_qemu_alive(vm)) {
                exit_reason(vm, errbuf, errlen, "before its first HTTP answer");
                rv = PW_ERR_UNAVAIL;
                goto fail;
            }
            if (pw_now_mono_ms() >= deadline_ms) {
                pw_errf(errbuf, errlen, "no HTTP answer on 127.0.0.1:%u by the deadline",
                        (unsigned)vm->port);
                rv = PW_ERR_TIMEOUT;
                goto fail;
            }
            sleep_ms(step);
            step = PW_MIN(step * 2, 20);
        }
        if (t != NULL)
            t->http_ms = since_ms(vm->started_us);
    }
    *out = vm;
    return PW_OK;

fail:
    if (sfd >= 0)
        close(sfd);
    abandon(vm);
    return rv;
}

int pw_qemu_destroy(struct pw_qemu_vm *vm, int64_t deadline_ms, unsigned flags, char *errbuf,
                    size_t errlen)
{
    pw_qemu_console_close(vm);
    if (pw_qemu_alive(vm)) {
        char why[256];
        if (vm->qmp == NULL)
            (void)qmp_open(vm, PW_MIN(deadline_ms, pw_now_mono_ms() + 500), why, sizeof(why));
        if (vm->qmp != NULL)
            (void)pw_qmp_quit(vm->qmp, deadline_ms, why, sizeof(why));
        (void)wait_exit(vm, deadline_ms);
    }
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    if (!kill_vm(vm)) {
        pw_errf(errbuf, errlen, "QEMU pid %d survived SIGKILL for %d ms", (int)vm->pid,
                KILL_GRACE_MS);
        return PW_ERR_UNAVAIL;
    }
    if (vm->dir[0] == '\0')
        return PW_OK;
    return remove_vm_files(vm->dir, vm->owned, PW_ARRAY_LEN(vm->owned),
                           (flags & PW_QEMU_KEEP_LOGS) != 0, errbuf, errlen);
}

void pw_qemu_vm_free(struct pw_qemu_vm *vm)
{
    if (vm == NULL)
        return;
    pw_qmp_close(vm->qmp);
    pw_qemu_console_close(vm);
    free(vm);
}

/* ---- VMs left by an earlier agent ---- */

static int cmp_orphan(const void *a, const void *b)
{
    const struct pw_qemu_orphan *x = a, *y = b;
    return x->meta.vm_id < y->meta.vm_id ? -1 : x->meta.vm_id > y->meta.vm_id;
}

static void classify(struct pw_qemu_orphan *o)
{
    struct pw_qemu_meta *m = &o->meta;
    uint64_t start = 0;
    char state = 0;
    if (m->pid == 0) {
        pid_t pid = proc_find_marker(m->vm_id, &start);
        if (pid == 0) {
            o->state = PW_QEMU_ORPHAN_DEAD;
            snprintf(o->why, sizeof(o->why), "QEMU was never recorded as started and none runs");
            return;
        }
        m->pid = pid;
        m->start_time = start;
        o->state = PW_QEMU_ORPHAN_RUNNING;
        return;
    }
    if (proc_stat(m->pid, &start, &state) != PW_OK) {
        o->state = PW_QEMU_ORPHAN_DEAD;
        snprintf(o->why, sizeof(o->why), "no process %d", (int)m->pid);
    } else if (start != m->start_time) {
        o->state = PW_QEMU_ORPHAN_DEAD;
        snprintf(o->why, sizeof(o->why),
                 "process %d started at %" PRIu64 ", not %" PRIu64 ": the PID was reused",
                 (int)m->pid, start, m->start_time);
    } else if (state == 'Z' || state == 'X') {
        o->state = PW_QEMU_ORPHAN_DEAD;
        snprintf(o->why, sizeof(o->why), "process %d has exited", (int)m->pid);
    } else if (!proc_has_marker(m->pid, m->vm_id)) {
        o->state = PW_QEMU_ORPHAN_DEAD;
        snprintf(o->why, sizeof(o->why), "process %d is not prewarm-%016" PRIx64, (int)m->pid,
                 m->vm_id);
    } else {
        o->state = PW_QEMU_ORPHAN_RUNNING;
    }
}

int pw_qemu_scan(const char *run_dir, struct pw_qemu_orphan **out, size_t *n, char *errbuf,
                 size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(run_dir);
    if (d == NULL) {
        pw_errf(errbuf, errlen, "opendir %s: %s", run_dir, strerror(errno));
        return PW_ERR_IO;
    }
    struct pw_qemu_orphan *v = NULL;
    size_t cnt = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strlen(e->d_name) != 16 || strspn(e->d_name, "0123456789abcdef") != 16)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 8;
            v = pw_xrealloc(v, cap * sizeof(*v));
        }
        struct pw_qemu_orphan *o = &v[cnt];
        memset(o, 0, sizeof(*o));
        if (snprintf(o->dir, sizeof(o->dir), "%s/%s", run_dir, e->d_name) >= (int)sizeof(o->dir))
            continue;
        struct stat st;
        if (stat(o->dir, &st) != 0 || !S_ISDIR(st.st_mode))
            continue;
        cnt++;
        uint64_t id = strtoull(e->d_name, NULL, 16);
        char path[PATH_MAX + 16], *text = NULL, why[300];
        size_t len;
        snprintf(path, sizeof(path), "%s/" META_FILE, o->dir);
        int rv = read_file(path, MAX_JSON_FILE, &text, &len, why, sizeof(why));
        if (rv == PW_OK)
            rv = pw_qemu_meta_parse(text, len, &o->meta, why, sizeof(why));
        free(text);
        if (rv == PW_OK && o->meta.vm_id != id) {
            snprintf(why, sizeof(why), "%s: \"vm_id\" %016" PRIx64 " is not its directory's",
                     META_FILE, o->meta.vm_id);
            rv = PW_ERR_PARSE;
        }
        if (rv != PW_OK) {
            /* Still kill what runs under this id, if anything does. */
            memset(&o->meta, 0, sizeof(o->meta));
            o->meta.vm_id = id;
            o->state = PW_QEMU_ORPHAN_BAD;
            pw_strlcpy(o->why, why, sizeof(o->why));
            uint64_t start = 0;
            pid_t pid = proc_find_marker(id, &start);
            if (pid != 0) {
                o->meta.pid = pid;
                o->meta.start_time = start;
            }
            continue;
        }
        classify(o);
    }
    closedir(d);
    if (cnt > 0)
        qsort(v, cnt, sizeof(*v), cmp_orphan);
    else {
        free(v);
        v = NULL;
    }
    *out = v;
    *n = cnt;
    return PW_OK;
}

static struct pw_qemu_vm *vm_from_orphan(const struct pw_qemu_orphan *o)
{
    const struct pw_qemu_meta *m = &o->meta;
    struct pw_qemu_vm *vm = vm_alloc(m->vm_id, m->kind);
    pw_strlcpy(vm->function, m->function, sizeof(vm->function));
    pw_strlcpy(vm->dir, o->dir, sizeof(vm->dir));
    pw_strlcpy(vm->qmp_path, m->qmp_path, sizeof(vm->qmp_path));
    pw_strlcpy(vm->console_path, m->console_path, sizeof(vm->console_path));
    pw_strlcpy(vm->mac, m->mac, sizeof(vm->mac));
    pw_strlcpy(vm->instance, m->instance, sizeof(vm->instance));
    memcpy(vm->owned, m->owned, sizeof(vm->owned));
    vm->port = m->port;
    vm->pid = m->pid;
    vm->start_time = m->start_time;
    vm->is_child = false;
    vm->exited = m->pid == 0;
    return vm;
}

int pw_qemu_adopt(const struct pw_qemu_orphan *o, int64_t deadline_ms, struct pw_qemu_vm **out,
                  char *errbuf, size_t errlen)
{
    *out = NULL;
    if (o->state != PW_QEMU_ORPHAN_RUNNING) {
        pw_errf(errbuf, errlen, "VM %016" PRIx64 " is not running: %s", o->meta.vm_id, o->why);
        return PW_ERR_STATE;
    }
    struct pw_qemu_vm *vm = vm_from_orphan(o);
    if (vm->kind == PW_QEMU_VM_RESTORED && o->meta.snapshot_dir[0] != '\0') {
        char ignored[200];
        if (pw_qemu_snapshot_load(o->meta.snapshot_dir, &vm->snap, ignored, sizeof(ignored)) !=
            PW_OK)
            pw_strlcpy(vm->snap.dir, o->meta.snapshot_dir, sizeof(vm->snap.dir));
    }
    int rv = qmp_open(vm, deadline_ms, errbuf, errlen);
    cJSON *r = NULL;
    if (rv == PW_OK)
        rv = pw_qmp_execute(vm->qmp, "query-status", NULL, &r, deadline_ms, errbuf, errlen);
    if (rv == PW_OK) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(r, "status");
        const char *s = cJSON_IsString(st) ? st->valuestring : "?";
        if (strcmp(s, "running") != 0 && strcmp(s, "paused") != 0) {
            pw_errf(errbuf, errlen, "VM %016" PRIx64 " is %s, neither running nor paused",
                    vm->vm_id, s);
            rv = PW_ERR_STATE;
        }
    }
    cJSON_Delete(r);
    if (rv != PW_OK) {
        pw_qemu_vm_free(vm);
        return rv;
    }
    *out = vm;
    return PW_OK;
}

int pw_qemu_orphan_clean(const struct pw_qemu_orphan *o, int64_t deadline_ms, char *errbuf,
                         size_t errlen)
{
    struct pw_qemu_vm *vm = vm_from_orphan(o);
    /* DEAD orphans have no process of ours: never signal what their pid is now. */
    if (o->state == PW_QEMU_ORPHAN_DEAD)
        vm->exited = true;
    if (o->state == PW_QEMU_ORPHAN_BAD && vm->qmp_path[0] == '\0') {
        snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%.90s/qmp.sock", o->dir);
        vm->exited = o->meta.pid == 0;
    }
    int rv = pw_qemu_destroy(vm, deadline_ms, 0, errbuf, errlen);
    pw_qemu_vm_free(vm);
    return rv;
}

/* ---- resolving the configuration ---- */

static atomic_uint probe_seq;

/* run_probe starts QEMU with -machine none (and -sandbox when asked), asks its version over
 * QMP and quits it. */
static int run_probe(const struct pw_qemu_config *c, bool sandbox, int64_t deadline_ms,
                     char *version, size_t versionlen, char *errbuf, size_t errlen)
{
    struct pw_qemu_vm *vm = vm_alloc(0, PW_QEMU_VM_GOLDEN);
    unsigned seq = atomic_fetch_add(&probe_seq, 1);
    int rv = fmt_path(vm->dir, sizeof(vm->dir), errbuf, errlen, "%s/probe-%d-%u", c->run_dir,
                      (int)getpid(), seq);
    if (rv == PW_OK)
        rv = fmt_path(vm->qmp_path, sizeof(vm->qmp_path), errbuf, errlen, "%s/qmp.sock", vm->dir);
    if (rv != PW_OK) {
        pw_qemu_vm_free(vm);
        return rv;
    }
    if (mkdir(vm->dir, 0755) != 0 && errno != EEXIST) {
        pw_errf(errbuf, errlen, "mkdir %s: %s", vm->dir, strerror(errno));
        pw_qemu_vm_free(vm);
        return PW_ERR_IO;
    }
    struct argv_list a = {0};
    argv_add(&a, "%s", c->qemu_bin);
    argv_add(&a, "-machine");
    argv_add(&a, "none");
    argv_add(&a, "-nodefaults");
    argv_add(&a, "-no-user-config");
    argv_add(&a, "-display");
    argv_add(&a, "none");
    argv_add(&a, "-S");
    argv_add(&a, "-qmp");
    argv_add(&a, "unix:%s,server=on,wait=off", vm->qmp_path);
    if (sandbox) {
        argv_add(&a, "-sandbox");
        argv_add(&a, SANDBOX_OPTS);
    }
    rv = spawn(vm, a.v, NULL, errbuf, errlen);
    pw_qemu_argv_free(a.v);
    cJSON *r = NULL;
    if (rv == PW_OK)
        rv = qmp_open(vm, deadline_ms, errbuf, errlen);
    if (rv == PW_OK)
        rv = pw_qmp_execute(vm->qmp, "query-version", NULL, &r, deadline_ms, errbuf, errlen);
    if (rv == PW_OK) {
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(r, "qemu");
        const cJSON *ma = cJSON_GetObjectItemCaseSensitive(q, "major");
        const cJSON *mi = cJSON_GetObjectItemCaseSensitive(q, "minor");
        const cJSON *mc = cJSON_GetObjectItemCaseSensitive(q, "micro");
        if (cJSON_IsNumber(ma) && cJSON_IsNumber(mi) && cJSON_IsNumber(mc))
            snprintf(version, versionlen, "%d.%d.%d", ma->valueint, mi->valueint, mc->valueint);
        (void)pw_qmp_quit(vm->qmp, deadline_ms, NULL, 0);
    }
    cJSON_Delete(r);
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    if (!wait_exit(vm, PW_MIN(deadline_ms, pw_now_mono_ms() + 2000)))
        (void)kill_vm(vm);
    (void)remove_vm_files(vm->dir, vm->owned, 0, false, NULL, 0);
    pw_qemu_vm_free(vm);
    return rv;
}

int pw_qemu_config_resolve(struct pw_qemu_config *c, int64_t deadline_ms, char *why,
                           size_t whylen, char *errbuf, size_t errlen)
{
    if (why != NULL && whylen > 0)
        why[0] = '\0';
    char bin[PATH_MAX];
    int rv = find_in_path(c->qemu_bin, bin, sizeof(bin), errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    pw_strlcpy(c->qemu_bin, bin, sizeof(c->qemu_bin));
    if ((rv = check_opt_path("run directory", c->run_dir, errbuf, errlen)) != PW_OK ||
        (rv = check_opt_path("memory directory", c->mem_dir, errbuf, errlen)) != PW_OK ||
        (rv = mkdir_p(c->run_dir, errbuf, errlen)) != PW_OK ||
        (rv = mkdir_p(c->mem_dir, errbuf, errlen)) != PW_OK)
        return rv;
    if (c->tsc_khz == 0)
        c->tsc_khz = read_tsc_khz();
    char err1[400];
    if (c->sandbox != PW_QEMU_SANDBOX_OFF) {
        rv = run_probe(c, true, deadline_ms, c->qemu_version, sizeof(c->qemu_version), err1,
                       sizeof(err1));
        if (rv == PW_OK) {
            c->sandbox = PW_QEMU_SANDBOX_ON;
            return PW_OK;
        }
        if (c->sandbox == PW_QEMU_SANDBOX_ON) {
            pw_errf(errbuf, errlen, "QEMU with -sandbox: %s", err1);
            return PW_ERR_UNAVAIL;
        }
    }
    rv = run_probe(c, false, deadline_ms, c->qemu_version, sizeof(c->qemu_version), errbuf,
                   errlen);
    if (rv != PW_OK)
        return PW_ERR_UNAVAIL;
    if (c->sandbox == PW_QEMU_SANDBOX_AUTO) {
        pw_errf(why, whylen, "-sandbox is off: QEMU refused it: %s", err1);
        c->sandbox = PW_QEMU_SANDBOX_OFF;
    }
    return PW_OK;
}

int pw_qemu_probe_accel(const struct pw_qemu_config *cfg, const struct pw_qemu_guest *g,
                        const char *function, int64_t timeout_ms, enum pw_qemu_accel *out,
                        char *why, size_t whylen)
{
    *out = PW_QEMU_ACCEL_TCG;
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        pw_errf(why, whylen, "tcg: /dev/kvm: %s", strerror(errno));
        return PW_OK;
    }
    close(fd);
    struct pw_qemu_config c = *cfg;
    c.accel = PW_QEMU_ACCEL_KVM;
    /* A VM id of its own that no scheduler hands out (the top byte is never used by them). */
    struct pw_qemu_vm_spec spec = {
        .vm_id = UINT64_C(0xff00000000000000) | ((uint64_t)(uint32_t)getpid() << 16) |
                 (atomic_fetch_add(&probe_seq, 1) & 0xffff),
        .function = function,
    };
    struct pw_qemu_vm *vm = NULL;
    struct pw_qemu_times t;
    char err[400];
    int rv = pw_qemu_boot(&c, g, &spec, pw_now_mono_ms() + timeout_ms, &vm, &t, err, sizeof(err));
    if (rv == PW_ERR_INVAL) {
        pw_errf(why, whylen, "tcg: %s", err);
        return PW_ERR_INVAL;
    }
    if (rv != PW_OK) {
        pw_errf(why, whylen, "tcg: a KVM boot failed (%s): %s", pw_strerror(rv), err);
        return PW_OK;
    }
    *out = PW_QEMU_ACCEL_KVM;
    pw_errf(why, whylen, "kvm: guest ready in %.0f ms", t.ready_ms);
    (void)pw_qemu_destroy(vm, pw_now_mono_ms() + 2000, 0, err, sizeof(err));
    pw_qemu_vm_free(vm);
    return PW_OK;
}
