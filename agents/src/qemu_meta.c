/* qemu_meta.c — the records of the QEMU microvm primitives: vm.json of each VM, the snapshot
 * manifest (snapshot.json), and the VMs an earlier agent left behind (scan, adopt, clean).
 *
 * Each VM keeps its metadata in <run_dir>/<id>/vm.json, written before QEMU starts (pid 0) and
 * again once its pid is known, so a VM is never running without a record that leads back to
 * it. */
#include "qemu_internal.h"

#include "pw/error.h"
#include "pw/qmp.h"
#include "pw/util.h"

#include <cjson/cJSON.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- the VM record ---- */

struct pw_qemu_vm *pw_qemu_vm_alloc(uint64_t vm_id, enum pw_qemu_vm_kind kind)
{
    struct pw_qemu_vm *vm = pw_xcalloc(1, sizeof(*vm));
    vm->vm_id = vm_id;
    vm->kind = kind;
    vm->console_fd = -1;
    vm->numa_node = -1;
    vm->exited = true; /* until a process exists */
    return vm;
}

int pw_qemu_vm_paths(struct pw_qemu_vm *vm, const char *run_dir, char *errbuf, size_t errlen)
{
    int rv = pw_qemu_fmt_path(vm->dir, sizeof(vm->dir), errbuf, errlen, "%s/%016" PRIx64,
                              run_dir, vm->vm_id);
    if (rv == PW_OK)
        rv = pw_qemu_fmt_path(vm->qmp_path, sizeof(vm->qmp_path), errbuf, errlen, "%s/qmp.sock",
                              vm->dir);
    if (rv == PW_OK)
        rv = pw_qemu_fmt_path(vm->console_path, sizeof(vm->console_path), errbuf, errlen,
                              "%s/console.sock", vm->dir);
    return rv;
}

static const char *kind_name(enum pw_qemu_vm_kind k)
{
    return k == PW_QEMU_VM_GOLDEN ? "golden" : "restored";
}

int pw_qemu_meta_write(const struct pw_qemu_vm *vm, char *errbuf, size_t errlen)
{
    char id[17], path[PATH_MAX];
    snprintf(id, sizeof(id), "%016" PRIx64, vm->vm_id);
    int rv = pw_qemu_fmt_path(path, sizeof(path), errbuf, errlen, "%s/" PW_QEMU_META_FILE, vm->dir);
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
    cJSON_AddNumberToObject(o, "numa_node", vm->numa_node);
    cJSON_AddNumberToObject(o, "memory_mb", vm->snap.memory_mb);
    cJSON_AddNumberToObject(o, "vcpus", vm->snap.vcpus);
    if (vm->uid != 0)
        cJSON_AddNumberToObject(o, "uid", vm->uid);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (text == NULL)
        abort(); /* cJSON fails to print only for lack of memory */
    rv = pw_qemu_write_file_atomic(path, text, strlen(text), false, errbuf, errlen);
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
    if (!pw_qemu_mac_valid(out->mac)) {
        pw_strlcpy(why, "\"mac\" is not a unicast MAC address", sizeof(why));
        goto fail;
    }
    if (out->instance[0] != '\0' && !pw_qemu_instance_valid(out->instance)) {
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
    /* Recorded since the driver adopts VMs; absent in older records. */
    out->numa_node = -1;
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(o, "numa_node");
    if (node != NULL) {
        if (!cJSON_IsNumber(node) || node->valuedouble < -1 || node->valuedouble > 1023 ||
            node->valuedouble != (double)(int)node->valuedouble) {
            rv = PW_ERR_PARSE;
            pw_strlcpy(why, "\"numa_node\" is not an integer in -1..1023", sizeof(why));
            goto fail;
        }
        out->numa_node = (int32_t)node->valuedouble;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "memory_mb") != NULL) {
        if ((rv = json_uint(o, "memory_mb", 1024 * 1024, &v, why, sizeof(why))) != PW_OK)
            goto fail;
        out->memory_mb = (uint32_t)v;
    }
    if (cJSON_GetObjectItemCaseSensitive(o, "vcpus") != NULL) {
        if ((rv = json_uint(o, "vcpus", 255, &v, why, sizeof(why))) != PW_OK)
            goto fail;
        out->vcpus = (uint32_t)v;
    }
    /* Only isolated VMs record one. */
    if (cJSON_GetObjectItemCaseSensitive(o, "uid") != NULL) {
        if ((rv = json_uint(o, "uid", UINT32_MAX - 1, &v, why, sizeof(why))) != PW_OK)
            goto fail;
        out->uid = (uint32_t)v;
    }
    cJSON_Delete(o);
    return PW_OK;

fail:
    cJSON_Delete(o);
    memset(out, 0, sizeof(*out));
    pw_errf(errbuf, errlen, "%s: %s", PW_QEMU_META_FILE, why);
    return PW_ERR_PARSE;
}


/* ---- snapshots ---- */

char *pw_qemu_manifest_text(const struct pw_qemu_snapshot *s)
{
    char id[17];
    snprintf(id, sizeof(id), "%016" PRIx64, s->golden_vm_id);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "format", 1);
    cJSON_AddStringToObject(o, "function", s->function);
    cJSON_AddStringToObject(o, "golden_vm_id", id);
    /* Written for private RAM only, so manifests of file RAM stay as they were. */
    if (s->ram != PW_QEMU_RAM_FILE)
        cJSON_AddStringToObject(o, "ram", pw_qemu_ram_name(s->ram));
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
    cJSON_AddStringToObject(o, "image", s->image);
    cJSON_AddStringToObject(o, "image_hash", s->image_hash);
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
    char ram[16];
    if ((rv = json_str(o, "ram", ram, sizeof(ram), false, why, sizeof(why))) != PW_OK)
        goto fail;
    s->ram = PW_QEMU_RAM_FILE; /* absent in manifests from before private RAM */
    if (ram[0] != '\0' && pw_qemu_ram_parse(ram, &s->ram) != PW_OK) {
        pw_strlcpy(why, "\"ram\" is neither \"file\" nor \"private\"", sizeof(why));
        rv = PW_ERR_PARSE;
        goto fail;
    }
    bool file_ram = s->ram == PW_QEMU_RAM_FILE;
    if ((rv = json_str(o, "function", s->function, sizeof(s->function), true, why,
                       sizeof(why))) != PW_OK ||
        (rv = json_hex64(o, "golden_vm_id", &s->golden_vm_id, why, sizeof(why))) != PW_OK ||
        (rv = json_path(o, "mem_path", s->mem_path, sizeof(s->mem_path), file_ram, why,
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
        (rv = json_uint(o, "created_ms", INT64_MAX, &v, why, sizeof(why))) != PW_OK ||
        (rv = json_path(o, "image", s->image, sizeof(s->image), false, why, sizeof(why))) !=
            PW_OK ||
        (rv = json_str(o, "image_hash", s->image_hash, sizeof(s->image_hash), false, why,
                       sizeof(why))) != PW_OK)
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
    } else if (!pw_qemu_mac_valid(s->mac)) {
        pw_strlcpy(why, "\"mac\" is not a unicast MAC address", sizeof(why));
    } else if (file_ram ? s->mem_path[0] == '\0' : s->mem_path[0] != '\0') {
        pw_strlcpy(why, "\"mem_path\" must name a file exactly when \"ram\" is \"file\"",
                   sizeof(why));
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
    pw_errf(errbuf, errlen, "%s: %s", PW_QEMU_MANIFEST_FILE, why);
    return PW_ERR_PARSE;
}

int pw_qemu_snapshot_load(const char *snap_dir, struct pw_qemu_snapshot *out, char *errbuf,
                          size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char path[PATH_MAX];
    int rv = pw_qemu_fmt_path(path, sizeof(path), errbuf, errlen, "%s/" PW_QEMU_MANIFEST_FILE,
                              snap_dir);
    if (rv != PW_OK)
        return rv;
    char *text;
    size_t len;
    char why[300];
    rv = pw_qemu_read_file(path, PW_QEMU_MAX_JSON_FILE, &text, &len, why, sizeof(why));
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
    if (out->ram == PW_QEMU_RAM_FILE &&
        (stat(out->mem_path, &st) != 0 || (uint64_t)st.st_size != (uint64_t)out->memory_mb << 20)) {
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
    int rv = pw_qemu_fmt_path(manifest, sizeof(manifest), errbuf, errlen,
                              "%s/" PW_QEMU_MANIFEST_FILE, snap->dir);
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
        pid_t pid = pw_qemu_proc_find_marker(m->vm_id, &start);
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
    if (pw_qemu_proc_stat(m->pid, &start, &state) != PW_OK) {
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
    } else if (!pw_qemu_proc_has_marker(m->pid, m->vm_id)) {
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
        snprintf(path, sizeof(path), "%s/" PW_QEMU_META_FILE, o->dir);
        /* An isolated VM owns its directory and could put a vm.json of its own there: only
         * one the agent's user wrote counts. */
        struct stat mst;
        int rv = PW_OK;
        if (lstat(path, &mst) == 0 && (!S_ISREG(mst.st_mode) || mst.st_uid != geteuid())) {
            snprintf(why, sizeof(why), "%s is not a file of uid %u", PW_QEMU_META_FILE,
                     (unsigned)geteuid());
            rv = PW_ERR_PARSE;
        }
        if (rv == PW_OK)
            rv = pw_qemu_read_file(path, PW_QEMU_MAX_JSON_FILE, &text, &len, why, sizeof(why));
        if (rv == PW_OK)
            rv = pw_qemu_meta_parse(text, len, &o->meta, why, sizeof(why));
        /* A directory owned by another user is an isolated VM's, whose uid it is. */
        if (st.st_uid != geteuid() && rv == PW_OK && o->meta.uid == 0)
            o->meta.uid = (uint32_t)st.st_uid;
        free(text);
        if (rv == PW_OK && o->meta.vm_id != id) {
            snprintf(why, sizeof(why), "%s: \"vm_id\" %016" PRIx64 " is not its directory's",
                     PW_QEMU_META_FILE, o->meta.vm_id);
            rv = PW_ERR_PARSE;
        }
        if (rv != PW_OK) {
            /* Still kill what runs under this id, if anything does. */
            memset(&o->meta, 0, sizeof(o->meta));
            o->meta.vm_id = id;
            if (st.st_uid != geteuid())
                o->meta.uid = (uint32_t)st.st_uid;
            o->state = PW_QEMU_ORPHAN_BAD;
            pw_strlcpy(o->why, why, sizeof(o->why));
            uint64_t start = 0;
            pid_t pid = pw_qemu_proc_find_marker(id, &start);
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
    struct pw_qemu_vm *vm = pw_qemu_vm_alloc(m->vm_id, m->kind);
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
    vm->numa_node = m->numa_node;
    vm->uid = m->uid;
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
    /* The shape it was restored with, which a newer snapshot of the function may not share. */
    if (o->meta.memory_mb != 0)
        vm->snap.memory_mb = o->meta.memory_mb;
    if (o->meta.vcpus != 0)
        vm->snap.vcpus = o->meta.vcpus;
    int rv = pw_qemu_qmp_open(vm, deadline_ms, errbuf, errlen);
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

/* ---- guest images ---- */

/* image_path resolves an image.json path field against dir. */
static int image_path(const cJSON *o, const char *key, const char *dir, char *dst, size_t size,
                      char *errbuf, size_t errlen)
{
    char rel[PATH_MAX];
    int rv = json_str(o, key, rel, sizeof(rel), true, errbuf, errlen);
    if (rv != PW_OK)
        return rv;
    if (rel[0] == '\0') {
        pw_errf(errbuf, errlen, "\"%s\" is empty", key);
        return PW_ERR_PARSE;
    }
    for (const char *p = rel; (p = strstr(p, "..")) != NULL; p += 2) {
        bool starts = p == rel || p[-1] == '/';
        bool ends = p[2] == '\0' || p[2] == '/';
        if (starts && ends) {
            pw_errf(errbuf, errlen, "\"%s\" \"%s\" has a \"..\" component", key, rel);
            return PW_ERR_PARSE;
        }
    }
    int n = rel[0] == '/' ? snprintf(dst, size, "%s", rel) : snprintf(dst, size, "%s/%s", dir, rel);
    if (n < 0 || (size_t)n >= size) {
        pw_errf(errbuf, errlen, "\"%s\" makes a path that is too long", key);
        return PW_ERR_PARSE;
    }
    return PW_OK;
}

int pw_qemu_image_parse(const char *dir, const char *text, size_t len, struct pw_qemu_image *out,
                        char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char why[300] = "not a JSON object";
    int rv = PW_ERR_PARSE;
    cJSON *o = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(o))
        goto fail;
    if (dir == NULL || dir[0] != '/' || strlen(dir) >= sizeof(out->dir)) {
        pw_strlcpy(why, "the image directory is not an absolute path", sizeof(why));
        goto fail;
    }
    pw_strlcpy(out->dir, dir, sizeof(out->dir));
    if ((rv = json_str(o, "name", out->name, sizeof(out->name), true, why, sizeof(why))) !=
            PW_OK ||
        (rv = image_path(o, "kernel", dir, out->kernel, sizeof(out->kernel), why,
                         sizeof(why))) != PW_OK ||
        (rv = image_path(o, "initrd", dir, out->initrd, sizeof(out->initrd), why,
                         sizeof(why))) != PW_OK ||
        (rv = json_str(o, "cmdline", out->cmdline, sizeof(out->cmdline), false, why,
                       sizeof(why))) != PW_OK ||
        (rv = json_str(o, "hash", out->hash, sizeof(out->hash), false, why, sizeof(why))) !=
            PW_OK)
        goto fail;
    rv = PW_ERR_PARSE;
    if (!pw_name_valid(out->name)) {
        pw_strlcpy(why, "\"name\" is not a valid function name", sizeof(why));
        goto fail;
    }
    if (out->cmdline[0] == '\0')
        pw_strlcpy(out->cmdline, PW_QEMU_DEFAULT_CMDLINE, sizeof(out->cmdline));
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(o, "http_port");
    if (port != NULL && (!cJSON_IsNumber(port) || port->valuedouble != PW_QEMU_GUEST_PORT)) {
        snprintf(why, sizeof(why), "\"http_port\" is not %d, the port the agent forwards to",
                 PW_QEMU_GUEST_PORT);
        goto fail;
    }
    const cJSON *ready = cJSON_GetObjectItemCaseSensitive(o, "ready_line");
    if (ready != NULL) {
        char want[PW_NAME_MAX + 16];
        snprintf(want, sizeof(want), "PREWARM-READY %s", out->name);
        if (!cJSON_IsString(ready) || strcmp(ready->valuestring, want) != 0) {
            snprintf(why, sizeof(why), "\"ready_line\" is not \"%s\"", want);
            goto fail;
        }
    }
    cJSON_Delete(o);
    return PW_OK;

fail:
    cJSON_Delete(o);
    memset(out, 0, sizeof(*out));
    pw_errf(errbuf, errlen, "image.json: %s", why);
    return PW_ERR_PARSE;
}

int pw_qemu_image_load(const char *dir, struct pw_qemu_image *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (dir == NULL || dir[0] != '/') {
        pw_errf(errbuf, errlen, "image \"%s\" is not an absolute path", dir != NULL ? dir : "");
        return PW_ERR_INVAL;
    }
    char path[PATH_MAX], why[400], *text = NULL;
    size_t len = 0;
    int rv = pw_qemu_fmt_path(path, sizeof(path), errbuf, errlen, "%s/image.json", dir);
    if (rv != PW_OK)
        return rv;
    rv = pw_qemu_read_file(path, PW_QEMU_MAX_JSON_FILE, &text, &len, why, sizeof(why));
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "image %s: %s", dir, why);
        return rv == PW_ERR_TOOBIG ? PW_ERR_PARSE : rv;
    }
    rv = pw_qemu_image_parse(dir, text, len, out, why, sizeof(why));
    free(text);
    if (rv != PW_OK) {
        pw_errf(errbuf, errlen, "image %s: %s", dir, why);
        return rv;
    }
    const char *files[] = {out->kernel, out->initrd};
    for (size_t i = 0; i < PW_ARRAY_LEN(files); i++) {
        struct stat st;
        int e = stat(files[i], &st) != 0 ? errno : 0;
        if (e != 0 || !S_ISREG(st.st_mode)) {
            pw_errf(errbuf, errlen, "image %s: %s: %s", dir, files[i],
                    e != 0 ? strerror(e) : "not a regular file");
            memset(out, 0, sizeof(*out));
            return PW_ERR_NOTFOUND;
        }
    }
    return PW_OK;
}
