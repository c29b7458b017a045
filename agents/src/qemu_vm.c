/* qemu_vm.c — QEMU microvm primitives (qemu_vm.h): the configuration, the command line, golden
 * boot and snapshot, restore, destroy and the accelerator probe (docs/qemu.md). Processes and
 * sockets live in qemu_proc.c, the on-disk records and orphans in qemu_meta.c.
 *
 * The command line of a golden boot and of its restores comes from one function fed by one
 * struct pw_qemu_snapshot, so what must match between them cannot drift. */
#include "qemu_internal.h"

#include "pw/error.h"
#include "pw/numabind.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

static const char *const ram_names[] = {
#define PW_QEMU_RAM_NAME(name, str) str,
    PW_QEMU_RAM_MAP(PW_QEMU_RAM_NAME)
#undef PW_QEMU_RAM_NAME
};

const char *pw_qemu_ram_name(enum pw_qemu_ram r)
{
    return (size_t)r < PW_ARRAY_LEN(ram_names) ? ram_names[r] : "unknown";
}

int pw_qemu_ram_parse(const char *s, enum pw_qemu_ram *out)
{
    for (size_t i = 0; s != NULL && i < PW_ARRAY_LEN(ram_names); i++) {
        if (strcmp(s, ram_names[i]) == 0) {
            *out = (enum pw_qemu_ram)i;
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
    c->ram = PW_QEMU_RAM_FILE;
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
    bool file_ram = snap->ram == PW_QEMU_RAM_FILE;
    if ((file_ram &&
         (rv = pw_qemu_check_opt_path("RAM file", snap->mem_path, errbuf, errlen)) != PW_OK) ||
        (rv = pw_qemu_check_opt_path("VM directory", vm->dir, errbuf, errlen)) != PW_OK)
        return rv;
    if (!pw_qemu_mac_valid(snap->mac) || snap->memory_mb == 0 || snap->vcpus == 0 ||
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
    if (file_ram)
        argv_add(&a, "memory-backend-file,id=mem0,size=%" PRIu32 "M,mem-path=%s,share=%s",
                 snap->memory_mb, snap->mem_path, golden ? "on" : "off");
    else
        argv_add(&a, "memory-backend-ram,id=mem0,size=%" PRIu32 "M", snap->memory_mb);
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
    if (golden && vm->uid != 0) {
        /* An isolated QEMU may not be able to reach the image: the agent opens the files and
         * QEMU reopens the descriptors it inherits (start_vm). */
        argv_add(&a, "-kernel");
        argv_add(&a, "/proc/self/fd/%d", PW_QEMU_PASS_FD0);
        argv_add(&a, "-initrd");
        argv_add(&a, "/proc/self/fd/%d", PW_QEMU_PASS_FD0 + 1);
        argv_add(&a, "-append");
        argv_add(&a, "%s", snap->cmdline);
    } else if (golden) {
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
        argv_add(&a, PW_QEMU_SANDBOX_OPTS);
    }
    *argv = a.v;
    return PW_OK;
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
    int pass[2] = {-1, -1};
    size_t npass = 0;
    if (mkdir(vm->dir, vm->uid != 0 ? 0700 : 0755) != 0) {
        pw_errf(errbuf, errlen, "mkdir %s: %s", vm->dir, strerror(errno));
        rv = errno == EEXIST ? PW_ERR_EXISTS : PW_ERR_IO;
        /* Not ours: keep abandon away from it. */
        vm->dir[0] = '\0';
        goto out;
    }
    if ((rv = pw_qemu_meta_write(vm, errbuf, errlen)) != PW_OK)
        goto out;
    if (vm->uid != 0) {
        /* The VM's own directory: its sockets and console log, and nobody else's. */
        if (chown(vm->dir, (uid_t)vm->uid, (gid_t)vm->uid) != 0) {
            pw_errf(errbuf, errlen, "chown %s to %u: %s", vm->dir, (unsigned)vm->uid,
                    strerror(errno));
            rv = PW_ERR_IO;
            goto out;
        }
        if (golden) {
            const char *files[] = {vm->snap.kernel, vm->snap.initrd};
            for (; npass < 2; npass++) {
                pass[npass] = open(files[npass], O_RDONLY | O_CLOEXEC);
                if (pass[npass] < 0) {
                    pw_errf(errbuf, errlen, "open %s: %s", files[npass], strerror(errno));
                    rv = PW_ERR_IO;
                    goto out;
                }
            }
        }
    }
    if ((rv = pw_qemu_spawn(vm, argv, bind, pass, npass, errbuf, errlen)) != PW_OK)
        goto out;
    if ((rv = pw_qemu_meta_write(vm, errbuf, errlen)) != PW_OK)
        goto out;
    if ((rv = pw_qemu_qmp_open(vm, deadline_ms, errbuf, errlen)) != PW_OK)
        goto out;
    if (t != NULL)
        t->qmp_ms = pw_qemu_since_ms(vm->started_us);
    rv = pw_qemu_console_open(vm, deadline_ms, errbuf, errlen);
out:
    for (size_t i = 0; i < 2; i++)
        if (pass[i] >= 0)
            close(pass[i]);
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
    if (spec->mac != NULL && !pw_qemu_mac_valid(spec->mac)) {
        pw_errf(errbuf, errlen, "MAC \"%s\" is not a unicast aa:bb:cc:dd:ee:ff", spec->mac);
        return NULL;
    }
    struct pw_qemu_vm *vm = pw_qemu_vm_alloc(spec->vm_id, kind);
    pw_strlcpy(vm->function, spec->function, sizeof(vm->function));
    vm->numa_node = spec->bind != NULL ? spec->bind->node : spec->numa_node;
    vm->uid = spec->uid;
    vm->cancel = spec->cancel;
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
    if (pw_qemu_vm_paths(vm, cfg->run_dir, errbuf, errlen) != PW_OK) {
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
    const char *image = g->image != NULL ? g->image : "";
    const char *hash = g->image_hash != NULL ? g->image_hash : "";
    if (pw_strlcpy(s->image, image, sizeof(s->image)) >= sizeof(s->image) ||
        pw_strlcpy(s->image_hash, hash, sizeof(s->image_hash)) >= sizeof(s->image_hash)) {
        pw_errf(errbuf, errlen, "image path or hash too long");
        goto fail_early;
    }
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
    pw_strlcpy(s->machine, PW_QEMU_MACHINE_OPTS, sizeof(s->machine));
    pw_strlcpy(s->mac, vm->mac, sizeof(s->mac));
    pw_strlcpy(s->qemu_version, cfg->qemu_version, sizeof(s->qemu_version));
    s->ram = cfg->ram;
    const char *cmdline = g->cmdline != NULL ? g->cmdline : PW_QEMU_DEFAULT_CMDLINE;
    int n = cfg->tsc_khz != 0
                ? snprintf(s->cmdline, sizeof(s->cmdline), "%s tsc_early_khz=%" PRIu64, cmdline,
                           cfg->tsc_khz)
                : snprintf(s->cmdline, sizeof(s->cmdline), "%s", cmdline);
    if (n < 0 || (size_t)n >= sizeof(s->cmdline)) {
        pw_errf(errbuf, errlen, "guest command line longer than %zu bytes", sizeof(s->cmdline) - 1);
        goto fail_early;
    }
    if (s->ram == PW_QEMU_RAM_FILE) {
        if ((rv = pw_qemu_fmt_path(s->mem_path, sizeof(s->mem_path), errbuf, errlen,
                                   "%s/prewarm-%s-%016" PRIx64 ".mem", cfg->mem_dir,
                                   spec->function, spec->vm_id)) != PW_OK)
            goto fail_early;
        if (access(s->mem_path, F_OK) == 0) {
            pw_errf(errbuf, errlen, "RAM file %s exists already", s->mem_path);
            rv = PW_ERR_EXISTS;
            goto fail_early;
        }
        pw_strlcpy(vm->owned[0], s->mem_path, sizeof(vm->owned[0]));
    }

    rv = start_vm(cfg, vm, true, spec->bind, deadline_ms, t, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    rv = pw_qemu_console_wait(vm, "PREWARM-READY", "PREWARM-FAILED", vm->function, deadline_ms,
                              errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    s->boot_ms = pw_qemu_since_ms(vm->started_us);
    if (t != NULL)
        t->ready_ms = s->boot_ms;
    pw_qemu_console_close(vm);
    vm->cancel = NULL; /* borrowed for the call only */
    *out = vm;
    return PW_OK;

fail_early:
    pw_qemu_vm_free(vm);
    return rv;
fail:
    pw_qemu_abandon(vm);
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
        if (pw_qemu_cancelled(vm)) {
            pw_errf(errbuf, errlen, "migration: cancelled (status \"%s\")", s);
            cJSON_Delete(r);
            return PW_ERR_TIMEOUT;
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
    int rv = pw_qemu_mkdir_p(snap_dir, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    if (realpath(snap_dir, s->dir) == NULL) {
        pw_errf(errbuf, errlen, "%s: %s", snap_dir, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }
    /* An isolated golden's snapshot is for the agent's eyes only: its QEMU and the restores
     * get the state file as a descriptor. */
    if (vm->uid != 0 && chmod(s->dir, 0700) != 0) {
        pw_errf(errbuf, errlen, "chmod %s: %s", s->dir, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }
    if ((rv = pw_qemu_fmt_path(s->state_path, sizeof(s->state_path), errbuf, errlen,
                               "%s/state-%016" PRIx64 ".bin", s->dir, vm->vm_id)) != PW_OK)
        goto fail;
    pw_strlcpy(vm->owned[1], s->state_path, sizeof(vm->owned[1]));
    if ((rv = pw_qemu_meta_write(vm, errbuf, errlen)) != PW_OK)
        goto fail;
    fd = open(s->state_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
              vm->uid != 0 ? 0600 : 0644);
    if (fd < 0) {
        pw_errf(errbuf, errlen, "open %s: %s", s->state_path, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }

    int64_t t0 = pw_qemu_now_us();
    /* With private RAM the stream carries it: no x-ignore-shared. */
    bool file_ram = s->ram == PW_QEMU_RAM_FILE;
    if ((rv = pw_qmp_execute(vm->qmp, "stop", NULL, NULL, deadline_ms, errbuf, errlen)) != PW_OK ||
        (file_ram && (rv = pw_qmp_execute(vm->qmp, "migrate-set-capabilities",
                                          ignore_shared_args, NULL, deadline_ms, errbuf,
                                          errlen)) != PW_OK) ||
        (rv = pw_qmp_execute_fd(vm->qmp, "getfd", "{\"fdname\":\"snap\"}", fd, NULL,
                                deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate", "{\"uri\":\"fd:snap\"}", NULL, deadline_ms,
                             errbuf, errlen)) != PW_OK ||
        (rv = migrate_wait(vm, deadline_ms, errbuf, errlen)) != PW_OK)
        goto fail;
    s->snapshot_ms = pw_qemu_since_ms(t0);
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
    if (!pw_qemu_wait_exit(vm, deadline_ms) && !pw_qemu_kill(vm)) {
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
    if ((rv = pw_qemu_meta_write(vm, errbuf, errlen)) != PW_OK)
        goto fail;
    char manifest[PATH_MAX];
    char *text = pw_qemu_manifest_text(s);
    rv = pw_qemu_fmt_path(manifest, sizeof(manifest), errbuf, errlen,
                          "%s/" PW_QEMU_MANIFEST_FILE, s->dir);
    if (rv == PW_OK)
        rv = pw_qemu_write_file_atomic(manifest, text, strlen(text), true, errbuf, errlen);
    free(text);
    if (rv != PW_OK) {
        pw_strlcpy(vm->owned[0], s->mem_path, sizeof(vm->owned[0]));
        pw_strlcpy(vm->owned[1], s->state_path, sizeof(vm->owned[1]));
        goto fail;
    }
    if (had_old) {
        if (old.mem_path[0] != '\0' && strcmp(old.mem_path, s->mem_path) != 0)
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
    if (pw_qemu_kill(vm)) {
        for (size_t i = 0; i < PW_ARRAY_LEN(vm->owned); i++)
            if (vm->owned[i][0] != '\0')
                unlink(vm->owned[i]);
        vm->owned[0][0] = vm->owned[1][0] = '\0';
        (void)pw_qemu_meta_write(vm, NULL, 0);
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
    if (!pw_qemu_instance_valid(instance)) {
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
    if (snap->ram != cfg->ram) {
        pw_errf(errbuf, errlen, "snapshot %s holds %s RAM, this configuration restores %s RAM",
                snap->dir, pw_qemu_ram_name(snap->ram), pw_qemu_ram_name(cfg->ram));
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
    bool file_ram = snap->ram == PW_QEMU_RAM_FILE;
    if ((rv = start_vm(cfg, vm, false, spec->bind, deadline_ms, t, errbuf, errlen)) != PW_OK ||
        (file_ram && (rv = pw_qmp_execute(vm->qmp, "migrate-set-capabilities",
                                          ignore_shared_args, NULL, deadline_ms, errbuf,
                                          errlen)) != PW_OK) ||
        (rv = pw_qmp_execute_fd(vm->qmp, "getfd", "{\"fdname\":\"state\"}", sfd, NULL,
                                deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "migrate-incoming", "{\"uri\":\"fd:state\"}", NULL,
                             deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = migrate_wait(vm, deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qmp_execute(vm->qmp, "cont", NULL, NULL, deadline_ms, errbuf, errlen)) != PW_OK)
        goto fail;
    if (t != NULL)
        t->cont_ms = pw_qemu_since_ms(vm->started_us);
    close(sfd);
    sfd = -1;

    /* Restored guests are identical copies until each gets its own identity. */
    snprintf(line, sizeof(line), "PREWARM-ID %s %s %" PRId64 "\n", instance, vm->mac,
             pw_now_wall_ms() / 1000);
    if ((rv = pw_qemu_console_write(vm, line, deadline_ms, errbuf, errlen)) != PW_OK ||
        (rv = pw_qemu_console_wait(vm, "PREWARM-ID-OK", "PREWARM-ID-ERR", instance, deadline_ms,
                                   errbuf, errlen)) != PW_OK)
        goto fail;
    if (t != NULL)
        t->id_ms = pw_qemu_since_ms(vm->started_us);
    pw_qemu_console_close(vm);
    if (flags & PW_QEMU_PROBE_HTTP) {
        int64_t step = 2;
        while (!pw_qemu_http_answers(vm, vm->port, deadline_ms)) {
            if (!pw_qemu_alive(vm)) {
                pw_qemu_exit_reason(vm, errbuf, errlen, "before its first HTTP answer");
                rv = PW_ERR_UNAVAIL;
                goto fail;
            }
            if (pw_now_mono_ms() >= deadline_ms || pw_qemu_cancelled(vm)) {
                pw_errf(errbuf, errlen, "no HTTP answer on 127.0.0.1:%u %s", (unsigned)vm->port,
                        pw_qemu_cancelled(vm) ? "before the wait was cancelled"
                                              : "by the deadline");
                rv = PW_ERR_TIMEOUT;
                goto fail;
            }
            pw_qemu_sleep_ms(step);
            step = PW_MIN(step * 2, 20);
        }
        if (t != NULL)
            t->http_ms = pw_qemu_since_ms(vm->started_us);
    }
    vm->cancel = NULL; /* borrowed for the call only */
    *out = vm;
    return PW_OK;

fail:
    if (sfd >= 0)
        close(sfd);
    pw_qemu_abandon(vm);
    return rv;
}

int pw_qemu_destroy(struct pw_qemu_vm *vm, int64_t deadline_ms, unsigned flags, char *errbuf,
                    size_t errlen)
{
    pw_qemu_console_close(vm);
    if (pw_qemu_alive(vm)) {
        char why[256];
        if (vm->qmp == NULL)
            (void)pw_qemu_qmp_open(vm, PW_MIN(deadline_ms, pw_now_mono_ms() + 500), why,
                                   sizeof(why));
        if (vm->qmp != NULL)
            (void)pw_qmp_quit(vm->qmp, deadline_ms, why, sizeof(why));
        (void)pw_qemu_wait_exit(vm, deadline_ms);
    }
    pw_qmp_close(vm->qmp);
    vm->qmp = NULL;
    if (!pw_qemu_kill(vm)) {
        pw_errf(errbuf, errlen, "QEMU pid %d survived SIGKILL for %d ms", (int)vm->pid,
                PW_QEMU_KILL_GRACE_MS);
        return PW_ERR_UNAVAIL;
    }
    if (vm->dir[0] == '\0')
        return PW_OK;
    return pw_qemu_remove_files(vm->dir, vm->owned, PW_ARRAY_LEN(vm->owned),
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


/* ---- resolving the configuration ---- */

static atomic_uint probe_seq;

/* run_probe starts QEMU with -machine none (and -sandbox when asked), asks its version over
 * QMP and quits it. */
static int run_probe(const struct pw_qemu_config *c, bool sandbox, int64_t deadline_ms,
                     char *version, size_t versionlen, char *errbuf, size_t errlen)
{
    struct pw_qemu_vm *vm = pw_qemu_vm_alloc(0, PW_QEMU_VM_GOLDEN);
    unsigned seq = atomic_fetch_add(&probe_seq, 1);
    int rv = pw_qemu_fmt_path(vm->dir, sizeof(vm->dir), errbuf, errlen, "%s/probe-%d-%u",
                              c->run_dir, (int)getpid(), seq);
    if (rv == PW_OK)
        rv = pw_qemu_fmt_path(vm->qmp_path, sizeof(vm->qmp_path), errbuf, errlen, "%s/qmp.sock",
                              vm->dir);
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
        argv_add(&a, PW_QEMU_SANDBOX_OPTS);
    }
    rv = pw_qemu_spawn(vm, a.v, NULL, NULL, 0, errbuf, errlen);
    pw_qemu_argv_free(a.v);
    cJSON *r = NULL;
    if (rv == PW_OK)
        rv = pw_qemu_qmp_open(vm, deadline_ms, errbuf, errlen);
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
    if (!pw_qemu_wait_exit(vm, PW_MIN(deadline_ms, pw_now_mono_ms() + 2000)))
        (void)pw_qemu_kill(vm);
    (void)pw_qemu_remove_files(vm->dir, vm->owned, 0, false, NULL, 0);
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
    if ((rv = pw_qemu_check_opt_path("run directory", c->run_dir, errbuf, errlen)) != PW_OK ||
        (rv = pw_qemu_check_opt_path("memory directory", c->mem_dir, errbuf, errlen)) != PW_OK ||
        (rv = pw_qemu_mkdir_p(c->run_dir, errbuf, errlen)) != PW_OK ||
        (rv = pw_qemu_mkdir_p(c->mem_dir, errbuf, errlen)) != PW_OK)
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
                        const char *function, uint32_t uid, int64_t timeout_ms,
                        enum pw_qemu_accel *out, char *why, size_t whylen)
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
        .uid = uid,
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
