/* driver_qemu.c — the "qemu" VMM driver: real microVMs (docs/agent.md, docs/qemu.md). Each
 * function gets a golden snapshot, a guest booted once from its image, stopped, its device
 * state written to a file and its RAM kept in a file on tmpfs. Each VM is a QEMU restored from
 * that snapshot with its own port, MAC and instance id.
 *
 * QEMU operations block for milliseconds to seconds, so they run as jobs on libuv's worker
 * threads (uv_queue_work, at most qemu_jobs at once). A job works on copies and on a VM handle
 * that nothing else touches meanwhile; its result is applied on the loop in the after-work
 * callback. Everything else (the VM and function tables, accounting, events) belongs to the
 * agent's loop thread. Golden boots are serialised per function, and a prewarm whose snapshot
 * is missing or being made waits for it.
 *
 * With isolation (--qemu-uids) each QEMU, golden boots included, runs as a uid of its own
 * from a range the loop hands out (uid_alloc) and takes back once the process is gone; the
 * snapshots then hold private RAM (docs/qemu.md, "Isolation"). */
#include "pw/agent_config.h"
#include "pw/driver.h"
#include "pw/error.h"
#include "pw/log.h"
#include "pw/numabind.h"
#include "pw/qemu_vm.h"
#include "pw/topology.h"
#include "pw/util.h"

#include <cjson/cJSON.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define QD_COMP "qemu"
#define TICK_MS 1000
#define LOGS_EVERY_TICKS 10
/* A golden boot that failed is not tried again for the same image and shape before this;
 * prewarms meanwhile fail after DOOMED_MS, not at once: the scheduler restores again after
 * each failure, and the pause keeps that from becoming a busy loop. */
#define GOLDEN_RETRY_MS 10000
#define DOOMED_MS 1000
/* Golden VM ids: this byte on top, the agent's tag below it (so files of other agents sharing
 * a memory directory are never swept), then a sequence number. The probe uses 0xff. */
#define GOLDEN_ID_TOP UINT64_C(0xfe)
/* A port picked free can be taken before QEMU binds it: try again with another. */
#define PORT_TRIES 3
#define RESOLVE_MS 15000
#define ADOPT_MS 5000

/* What a snapshot is made from: the function's image and shape. */
struct src {
    char image[PW_IMAGE_MAX];
    uint32_t memory_mb;
    uint32_t vcpus;
};

/* States of a VM in the driver. */
#define QVM_STATE_MAP(X)                                                                   \
    X(WAITING, "waiting")     /* accepted; waits for its function's golden snapshot */      \
    X(RESTORING, "restoring") /* a restore job has it */                                    \
    X(RUNNING, "running")     /* restored or adopted; the loop holds its handle */          \
    X(STOPPING, "stopping")   /* a destroy job has it (or is queued); GONE/FAILED follows */

enum qvm_state {
#define QVM_ENUM(n, s) QVM_##n,
    QVM_STATE_MAP(QVM_ENUM)
#undef QVM_ENUM
};

static const char *const qvm_state_names[] = {
#define QVM_STR(n, s) s,
    QVM_STATE_MAP(QVM_STR)
#undef QVM_STR
};

struct qd;
struct qfn;
struct job;

struct qvm {
    struct pw_hnode hnode;     /* qd.vms by vm_id */
    struct pw_list wait_link;  /* fn->waiters (or qd.doomed) while WAITING */
    struct qd *qd;
    struct qfn *fn;
    uint64_t vm_id;
    enum qvm_state state;
    struct src src;
    size_t node_idx;           /* index into the topology */
    int32_t node;              /* its id */
    int has_bind;
    struct pw_numabind bind;
    struct pw_qemu_vm *h;      /* RUNNING: the handle, owned by the loop; else NULL */
    struct job *job;           /* the job working on it, or NULL */
    int destroy_wanted;        /* a destroy came while RESTORING */
    int adopted;               /* taken over from an earlier agent */
    uint32_t uid;              /* isolation: the uid its QEMU runs as, held from the prewarm
                                * until the VM is released; 0: none */
    int64_t doomed_at_ms;      /* WAITING on qd.doomed: fails then (its golden boot failed) */
    char address[64];
    char failure[PW_ERRMSG_MAX]; /* STOPPING because it died: reported as FAILED */
};

struct qfn {
    struct pw_hnode hnode; /* qd.fns by name */
    char name[PW_NAME_MAX];
    int have_snap;
    struct pw_qemu_snapshot snap;
    struct src src;             /* what snap was made from */
    struct job *golden;         /* the golden job in flight, or NULL */
    int want;                   /* a snapshot command asks for want_src */
    struct src want_src;
    int32_t want_node;
    struct pw_list waiters;     /* WAITING VMs, oldest first */
    unsigned nrestoring;        /* restore jobs from snap in flight */
    int failed;                 /* the last golden boot of failed_src failed */
    struct src failed_src;
    int64_t failed_at_ms;
    char failed_why[PW_ERRMSG_MAX];
};

enum job_kind { JOB_GOLDEN, JOB_RESTORE, JOB_DESTROY };

/* One blocking QEMU operation. The worker reads the fields set before it was queued and
 * writes only its results; the loop touches it again only in the after-work callback (but
 * for cancel, which is atomic). */
struct job {
    uv_work_t req;
    struct pw_list link; /* qd.queue until started, then qd.running */
    struct qd *qd;
    enum job_kind kind;
    atomic_int cancel;
    /* inputs */
    struct qvm *vm;      /* RESTORE, DESTROY (for the loop only) */
    struct qfn *fn;      /* GOLDEN (for the loop only) */
    char function[PW_NAME_MAX];
    struct src src;
    uint64_t vm_id;
    uint32_t uid;        /* isolation: the uid QEMU runs as (GOLDEN: the job holds it) */
    int32_t node;
    int has_bind;
    struct pw_numabind bind;
    char instance[PW_QEMU_INSTANCE_MAX];
    char mac[18];
    struct pw_qemu_snapshot snap; /* RESTORE: restore from it; GOLDEN: the one made */
    /* RESTORE result, or DESTROY input: owned by the job while it runs */
    struct pw_qemu_vm *h;
    /* results */
    int rv;
    char err[PW_ERRMSG_MAX * 2];
    struct pw_qemu_times t;
    int snap_gone; /* RESTORE: the snapshot's files are gone */
};

/* An event waiting for the flush timer: drivers never report from inside their own ops. */
struct pending_ev {
    struct pw_list link;
    uint64_t vm_id;
    enum pw_avm_state state;
    int32_t restore_ms;
    char address[64];
    char error[PW_ERRMSG_MAX];
};

struct qd {
    struct pw_driver *d;
    uv_loop_t *loop;
    /* Set in init, read-only afterwards: workers read them. */
    struct pw_qemu_config qcfg;
    char snap_root[PATH_MAX];
    char accel_why[512];
    int64_t boot_ms, restore_ms, stop_ms;
    uint64_t log_max_bytes;
    unsigned max_jobs;
    int keep_vms;
    uint32_t tag;
    uint32_t uid_base, nuids;  /* isolation: the uid range; nuids 0: off */
    /* Loop thread. */
    unsigned char *uid_used;   /* nuids flags: the uid base + i is some QEMU's */
    uint32_t uid_next;         /* where uid_alloc looks first (round robin) */
    uint32_t golden_seq;
    uint64_t mac_salt;
    struct pw_htab vms, fns;
    struct pw_list queue, running;
    unsigned nrunning;
    struct pw_list outq;
    struct pw_list doomed;     /* WAITING VMs of a failed golden boot, oldest first */
    uv_timer_t tick, flush;
    unsigned ticks;
    int finishing;
    unsigned live; /* open timers + jobs not yet completed: freed at 0 once finishing */
    size_t nnodes;
    uint64_t cap_mb[PW_PROTO_MAX_NUMA], used_mb[PW_PROTO_MAX_NUMA];
    int32_t cap_vcpus[PW_PROTO_MAX_NUMA], used_vcpus[PW_PROTO_MAX_NUMA];
    unsigned char bind_state[PW_PROTO_MAX_NUMA]; /* 0 unknown, 1 binds[i] ok, 2 none */
    struct pw_numabind binds[PW_PROTO_MAX_NUMA];
};

static void fn_kick(struct qd *qd, struct qfn *fn);
static void job_pump(struct qd *qd);
static void on_flush(uv_timer_t *t);

static int src_eq(const struct src *a, const struct src *b)
{
    return strcmp(a->image, b->image) == 0 && a->memory_mb == b->memory_mb &&
           a->vcpus == b->vcpus;
}

static void src_from_cmd(struct src *s, const struct pw_cmd *c)
{
    memset(s, 0, sizeof(*s));
    pw_strlcpy(s->image, c->image, sizeof(s->image));
    s->memory_mb = c->memory_mb;
    s->vcpus = c->vcpus;
}

/* ---- tables ---- */

static int vm_eq(const struct pw_hnode *n, const void *key)
{
    return pw_container_of(n, struct qvm, hnode)->vm_id == *(const uint64_t *)key;
}

static struct qvm *vm_find(struct qd *qd, uint64_t vm_id)
{
    struct pw_hnode *n = pw_htab_find(&qd->vms, pw_hash_u64(vm_id), &vm_id, vm_eq);
    return n != NULL ? pw_container_of(n, struct qvm, hnode) : NULL;
}

static int fn_eq(const struct pw_hnode *n, const void *key)
{
    return strcmp(pw_container_of(n, struct qfn, hnode)->name, key) == 0;
}

static struct qfn *fn_find(struct qd *qd, const char *name)
{
    struct pw_hnode *n = pw_htab_find(&qd->fns, pw_hash_str(name), name, fn_eq);
    return n != NULL ? pw_container_of(n, struct qfn, hnode) : NULL;
}

static struct qfn *fn_get(struct qd *qd, const char *name)
{
    struct qfn *fn = fn_find(qd, name);
    if (fn == NULL) {
        fn = pw_xcalloc(1, sizeof(*fn));
        pw_strlcpy(fn->name, name, sizeof(fn->name));
        pw_list_init(&fn->waiters);
        pw_htab_insert(&qd->fns, &fn->hnode, pw_hash_str(name));
    }
    return fn;
}

/* node_index maps a NUMA node id to its index in the topology; qd->nnodes when unknown. */
static size_t node_index(const struct qd *qd, int32_t id)
{
    size_t i = 0;
    while (i < qd->nnodes && qd->d->topo->nodes[i].id != id)
        i++;
    return i;
}

/* uid_alloc hands out a free uid of the isolation range, or 0 when isolation is off or every
 * uid is taken. Round robin, so a uid just freed is the last to be reused. */
static uint32_t uid_alloc(struct qd *qd)
{
    for (uint32_t k = 0; k < qd->nuids; k++) {
        uint32_t i = (qd->uid_next + k) % qd->nuids;
        if (!qd->uid_used[i]) {
            qd->uid_used[i] = 1;
            qd->uid_next = (i + 1) % qd->nuids;
            return qd->uid_base + i;
        }
    }
    return 0;
}

/* uid_mark marks uid taken (or free); uids outside the range are not ours to track. */
static void uid_mark(struct qd *qd, uint32_t uid, int used)
{
    if (uid >= qd->uid_base && uid - qd->uid_base < qd->nuids)
        qd->uid_used[uid - qd->uid_base] = (unsigned char)used;
}

/* uid_recover marks the uids that own VM directories in the run directory: QEMUs an earlier
 * agent left (and whose directories are not gone yet). */
static void uid_recover(struct qd *qd)
{
    if (qd->nuids == 0)
        return;
    memset(qd->uid_used, 0, qd->nuids);
    DIR *d = opendir(qd->qcfg.run_dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        struct stat st;
        if (strlen(e->d_name) == 16 && strspn(e->d_name, "0123456789abcdef") == 16 &&
            fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
            uid_mark(qd, (uint32_t)st.st_uid, 1);
    }
    if (d != NULL)
        closedir(d);
}

/* vm_set_state is the only place a VM changes state. */
static void vm_set_state(struct qvm *vm, enum qvm_state to)
{
    static const unsigned char legal[4][4] = {
        /* to:           WAITING RESTORING RUNNING STOPPING */
        [QVM_WAITING] = {0, 1, 0, 0},
        [QVM_RESTORING] = {1, 0, 1, 1}, /* -> WAITING: its snapshot vanished; wait for a new one */
        [QVM_RUNNING] = {0, 0, 0, 1},
        [QVM_STOPPING] = {0, 0, 0, 0},
    };
    if (!legal[vm->state][to]) {
        pw_log_error(QD_COMP, "vm %llu: illegal transition %s -> %s",
                     (unsigned long long)vm->vm_id, qvm_state_names[vm->state],
                     qvm_state_names[to]);
        abort();
    }
    pw_log_debug(QD_COMP, "vm %llu: %s -> %s", (unsigned long long)vm->vm_id,
                 qvm_state_names[vm->state], qvm_state_names[to]);
    vm->state = to;
}

/* vm_release gives the VM's resources back and frees it. Its job, if any, is done. */
static void vm_release(struct qd *qd, struct qvm *vm)
{
    if (vm->node_idx < qd->nnodes) {
        qd->used_mb[vm->node_idx] -= vm->src.memory_mb;
        qd->used_vcpus[vm->node_idx] -= (int32_t)vm->src.vcpus;
    }
    uid_mark(qd, vm->uid, 0);
    if (pw_list_linked(&vm->wait_link))
        pw_list_remove(&vm->wait_link);
    pw_htab_remove(&qd->vms, &vm->hnode);
    free(vm);
}

/* ---- events ---- */

static void emit(struct qd *qd, uint64_t vm_id, enum pw_avm_state state, int32_t restore_ms,
                 const char *address, const char *error)
{
    if (qd->finishing)
        return;
    struct pending_ev *e = pw_xcalloc(1, sizeof(*e));
    e->vm_id = vm_id;
    e->state = state;
    e->restore_ms = restore_ms;
    pw_strlcpy(e->address, address != NULL ? address : "", sizeof(e->address));
    pw_strlcpy(e->error, error != NULL ? error : "", sizeof(e->error));
    pw_list_push_tail(&qd->outq, &e->link);
    if (!uv_is_active((uv_handle_t *)&qd->flush))
        uv_timer_start(&qd->flush, on_flush, 0, 0);
}

/* ---- small file helpers (loop thread at init, or workers) ---- */

static int mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    if (pw_strlcpy(tmp, path, sizeof(tmp)) >= sizeof(tmp))
        return -1;
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = c;
            if (c == '\0')
                return 0;
        }
    }
}

/* rm_dir_files removes the plain files in dir and then dir itself (not recursive). */
static void rm_dir_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            (void)unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
    (void)rmdir(dir);
}

/* ---- jobs: the worker side ---- */

/* port_taken tells whether QEMU gave up because the forwarded port was taken meanwhile. */
static int port_taken(int rv, const char *err)
{
    return rv == PW_ERR_UNAVAIL && strstr(err, "host forwarding") != NULL;
}

static void golden_work(struct job *j)
{
    const struct qd *qd = j->qd;
    struct pw_qemu_image img;
    char dir[PATH_MAX + PW_NAME_MAX + 2];
    j->rv = pw_qemu_image_load(j->src.image, &img, j->err, sizeof(j->err));
    if (j->rv != PW_OK)
        return;
    if (strcmp(img.name, j->function) != 0) {
        pw_errf(j->err, sizeof(j->err), "image %s is of function \"%s\", not \"%s\"",
                j->src.image, img.name, j->function);
        j->rv = PW_ERR_INVAL;
        return;
    }
    snprintf(dir, sizeof(dir), "%s/%s", qd->snap_root, j->function);
    struct pw_qemu_guest g = {
        .kernel = img.kernel,
        .initrd = img.initrd,
        .cmdline = img.cmdline,
        .memory_mb = j->src.memory_mb,
        .vcpus = j->src.vcpus,
        .image = j->src.image, /* as the scheduler names it: that is what prewarms compare */
        .image_hash = img.hash,
    };
    struct pw_qemu_vm_spec spec = {
        .vm_id = j->vm_id,
        .function = j->function,
        .bind = j->has_bind ? &j->bind : NULL,
        .numa_node = j->node,
        .cancel = &j->cancel,
        .uid = j->uid,
    };
    if (qd->nuids > 0 && j->uid == 0) {
        pw_errf(j->err, sizeof(j->err), "no free VM uid: all %u of --qemu-uids are in use",
                (unsigned)qd->nuids);
        j->rv = PW_ERR_NOCAP;
        return;
    }
    for (int i = 0; i < PORT_TRIES; i++) {
        j->rv = pw_qemu_golden(&qd->qcfg, &g, &spec, dir, pw_now_mono_ms() + qd->boot_ms,
                               &j->snap, &j->t, j->err, sizeof(j->err));
        if (!port_taken(j->rv, j->err))
            break;
        spec.vm_id++; /* its directory and RAM file may not be reused at once */
    }
}

static void restore_work(struct job *j)
{
    const struct qd *qd = j->qd;
    struct stat st;
    if ((j->snap.ram == PW_QEMU_RAM_FILE &&
         (stat(j->snap.mem_path, &st) != 0 ||
          (uint64_t)st.st_size != (uint64_t)j->snap.memory_mb << 20)) ||
        stat(j->snap.state_path, &st) != 0) {
        /* QEMU would create a missing RAM file empty and restore onto zeroes. */
        pw_errf(j->err, sizeof(j->err), "the golden snapshot's files are gone (%s)",
                j->snap.ram == PW_QEMU_RAM_FILE ? j->snap.mem_path : j->snap.state_path);
        j->rv = PW_ERR_NOTFOUND;
        j->snap_gone = 1;
        return;
    }
    struct pw_qemu_vm_spec spec = {
        .vm_id = j->vm_id,
        .function = j->function,
        .mac = j->mac,
        .bind = j->has_bind ? &j->bind : NULL,
        .numa_node = j->node,
        .cancel = &j->cancel,
        .uid = j->uid,
    };
    for (int i = 0; i < PORT_TRIES; i++) {
        j->rv = pw_qemu_restore(&qd->qcfg, &j->snap, &spec, j->instance, 0,
                                pw_now_mono_ms() + qd->restore_ms, &j->h, &j->t, j->err,
                                sizeof(j->err));
        if (!port_taken(j->rv, j->err) || atomic_load(&j->cancel))
            break;
    }
}

static void destroy_work(struct job *j)
{
    j->rv = pw_qemu_destroy(j->h, pw_now_mono_ms() + j->qd->stop_ms, 0, j->err, sizeof(j->err));
    pw_qemu_vm_free(j->h);
    j->h = NULL;
}

static void on_work(uv_work_t *req)
{
    struct job *j = pw_container_of(req, struct job, req);
    switch (j->kind) {
    case JOB_GOLDEN:
        golden_work(j);
        break;
    case JOB_RESTORE:
        restore_work(j);
        break;
    case JOB_DESTROY:
        destroy_work(j);
        break;
    }
}

/* ---- jobs: the loop side ---- */

static struct job *job_new(struct qd *qd, enum job_kind kind)
{
    struct job *j = pw_xcalloc(1, sizeof(*j));
    j->qd = qd;
    j->kind = kind;
    atomic_init(&j->cancel, 0);
    j->node = -1;
    qd->live++;
    return j;
}

static void job_submit(struct qd *qd, struct job *j)
{
    pw_list_push_tail(&qd->queue, &j->link);
    job_pump(qd);
}

static void qd_maybe_free(struct qd *qd)
{
    if (!qd->finishing || qd->live != 0)
        return;
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->fns, &bucket, &it)) != NULL) {
        pw_htab_remove(&qd->fns, n);
        free(pw_container_of(n, struct qfn, hnode));
    }
    pw_htab_fini(&qd->fns);
    pw_htab_fini(&qd->vms);
    free(qd->uid_used);
    free(qd);
}

static void start_destroy(struct qd *qd, struct qvm *vm)
{
    struct job *j = job_new(qd, JOB_DESTROY);
    j->vm = vm;
    j->vm_id = vm->vm_id;
    j->h = vm->h;
    vm->h = NULL;
    vm->job = j;
    job_submit(qd, j);
}

static void golden_done(struct qd *qd, struct job *j)
{
    struct qfn *fn = j->fn;
    fn->golden = NULL;
    uid_mark(qd, j->uid, 0); /* its QEMU is gone, whatever happened */
    if (qd->finishing)
        return; /* a snapshot made stays on disk for the next agent */
    if (j->rv == PW_OK) {
        fn->have_snap = 1;
        fn->snap = j->snap;
        fn->src = j->src;
        fn->failed = 0;
        pw_log_info(QD_COMP,
                    "golden snapshot of %s made: boot to ready %.0f ms, snapshot %.1f ms "
                    "(image %s, %u MB, %u vCPUs, %s)",
                    fn->name, j->t.ready_ms, j->t.snapshot_ms, j->src.image, j->src.memory_mb,
                    j->src.vcpus, qd->qcfg.accel == PW_QEMU_ACCEL_KVM ? "kvm" : "tcg");
    } else {
        fn->failed = 1;
        fn->failed_src = j->src;
        fn->failed_at_ms = pw_now_mono_ms();
        pw_errf(fn->failed_why, sizeof(fn->failed_why), "golden snapshot of %s failed: %s",
                fn->name, j->err);
        pw_log_warn(QD_COMP, "%s", fn->failed_why);
        struct pw_list *pos, *tmp;
        pw_list_foreach_safe(pos, tmp, &fn->waiters)
        {
            struct qvm *vm = pw_container_of(pos, struct qvm, wait_link);
            if (!src_eq(&vm->src, &j->src))
                continue;
            emit(qd, vm->vm_id, PW_AVM_FAILED, 0, NULL, fn->failed_why);
            vm_release(qd, vm);
        }
    }
    if (fn->want && src_eq(&fn->want_src, &j->src))
        fn->want = 0;
    fn_kick(qd, fn);
}

static void restore_done(struct qd *qd, struct job *j)
{
    struct qvm *vm = j->vm;
    struct qfn *fn = vm->fn;
    fn->nrestoring--;
    vm->job = NULL;
    if (j->rv == PW_OK) {
        vm->h = j->h;
        j->h = NULL;
        if (qd->finishing && qd->keep_vms) {
            pw_log_info(QD_COMP, "vm %llu: restored while stopping; left running",
                        (unsigned long long)vm->vm_id);
            pw_qemu_vm_free(vm->h);
            vm_release(qd, vm);
            return;
        }
        if (qd->finishing || vm->destroy_wanted) {
            vm_set_state(vm, QVM_STOPPING);
            start_destroy(qd, vm);
            return;
        }
        vm_set_state(vm, QVM_RUNNING);
        snprintf(vm->address, sizeof(vm->address), "127.0.0.1:%u", (unsigned)vm->h->port);
        pw_log_info(QD_COMP,
                    "vm %llu (%s): restored in %.0f ms (QMP %.0f, cont %.0f, identity %.0f ms), "
                    "serving on %s, pid %d, instance %s",
                    (unsigned long long)vm->vm_id, fn->name, j->t.id_ms, j->t.qmp_ms,
                    j->t.cont_ms, j->t.id_ms, vm->address, (int)vm->h->pid, vm->h->instance);
        double ms = j->t.id_ms >= 0 ? j->t.id_ms : 0;
        emit(qd, vm->vm_id, PW_AVM_RUNNING, (int32_t)PW_MIN(lround(ms), INT32_MAX), vm->address,
             NULL);
    } else if (qd->finishing) {
        vm_release(qd, vm);
        return;
    } else if (vm->destroy_wanted) {
        emit(qd, vm->vm_id, PW_AVM_GONE, 0, NULL, NULL);
        vm_release(qd, vm);
    } else if (j->snap_gone && fn->have_snap &&
               fn->snap.golden_vm_id == j->snap.golden_vm_id) {
        /* Someone removed the snapshot's files: make a new one and restore from that. */
        pw_log_warn(QD_COMP, "%s: %s; making a new one", fn->name, j->err);
        fn->have_snap = 0;
        vm_set_state(vm, QVM_WAITING);
        pw_list_push_tail(&fn->waiters, &vm->wait_link);
    } else {
        char why[PW_ERRMSG_MAX];
        pw_errf(why, sizeof(why), "restore failed: %s", j->err);
        pw_log_warn(QD_COMP, "vm %llu (%s): %s", (unsigned long long)vm->vm_id, fn->name, why);
        emit(qd, vm->vm_id, PW_AVM_FAILED, 0, NULL, why);
        vm_release(qd, vm);
    }
    fn_kick(qd, fn);
}

static void destroy_done(struct qd *qd, struct job *j)
{
    struct qvm *vm = j->vm;
    vm->job = NULL;
    if (j->rv != PW_OK)
        pw_log_error(QD_COMP, "vm %llu: destroy: %s", (unsigned long long)vm->vm_id, j->err);
    if (j->rv == PW_ERR_UNAVAIL && vm->uid != 0) {
        /* Its QEMU may still run: never give its uid to another VM. */
        pw_log_error(QD_COMP, "vm %llu: uid %u stays taken", (unsigned long long)vm->vm_id,
                     (unsigned)vm->uid);
        vm->uid = 0;
    }
    else
        pw_log_debug(QD_COMP, "vm %llu: destroyed", (unsigned long long)vm->vm_id);
    if (vm->failure[0] != '\0')
        emit(qd, vm->vm_id, PW_AVM_FAILED, 0, NULL, vm->failure);
    else
        emit(qd, vm->vm_id, PW_AVM_GONE, 0, NULL, NULL);
    vm_release(qd, vm);
}

static void on_work_done(uv_work_t *req, int status)
{
    struct job *j = pw_container_of(req, struct job, req);
    struct qd *qd = j->qd;
    (void)status; /* jobs are never cancelled through libuv */
    pw_list_remove(&j->link);
    qd->nrunning--;
    switch (j->kind) {
    case JOB_GOLDEN:
        golden_done(qd, j);
        break;
    case JOB_RESTORE:
        restore_done(qd, j);
        break;
    case JOB_DESTROY:
        destroy_done(qd, j);
        break;
    }
    if (j->h != NULL) /* a result nobody took: cannot happen, but never leak a handle */
        pw_qemu_vm_free(j->h);
    free(j);
    qd->live--;
    job_pump(qd);
    qd_maybe_free(qd);
}

/* job_pump starts queued jobs while fewer than max_jobs run. */
static void job_pump(struct qd *qd)
{
    while (qd->nrunning < qd->max_jobs && !pw_list_empty(&qd->queue)) {
        struct job *j = pw_container_of(pw_list_head(&qd->queue), struct job, link);
        pw_list_remove(&j->link);
        pw_list_push_tail(&qd->running, &j->link);
        qd->nrunning++;
        int rv = uv_queue_work(qd->loop, &j->req, on_work, on_work_done);
        if (rv != 0) {
            /* libuv refuses only a NULL callback: our bug. */
            pw_log_error(QD_COMP, "uv_queue_work: %s", uv_strerror(rv));
            abort();
        }
    }
}

/* ---- snapshots and restores ---- */

/* binding_for_index returns the binding of topology node i, made at first use, or NULL when
 * the node cannot be bound on this machine. */
static const struct pw_numabind *binding_for_index(struct qd *qd, size_t i)
{
    if (i >= qd->nnodes)
        return NULL;
    if (qd->bind_state[i] == 0) {
        char why[PW_ERRMSG_MAX];
        qd->bind_state[i] = pw_numabind_for_node(&qd->binds[i], qd->d->topo,
                                                 qd->d->topo->nodes[i].id, why,
                                                 sizeof(why)) == PW_OK ? 1 : 2;
        if (qd->bind_state[i] == 2)
            pw_log_warn(QD_COMP, "%s; VMs the driver places on node %d run unbound", why,
                        qd->d->topo->nodes[i].id);
    }
    return qd->bind_state[i] == 1 ? &qd->binds[i] : NULL;
}

static void start_golden(struct qd *qd, struct qfn *fn, const struct src *src, int32_t node,
                         const struct pw_numabind *bind)
{
    struct job *j = job_new(qd, JOB_GOLDEN);
    j->fn = fn;
    pw_strlcpy(j->function, fn->name, sizeof(j->function));
    j->src = *src;
    j->vm_id = (GOLDEN_ID_TOP << 56) | ((uint64_t)qd->tag << 32) | qd->golden_seq;
    qd->golden_seq += PORT_TRIES;
    j->uid = uid_alloc(qd); /* 0 with isolation on: the job fails, no uid is free */
    j->node = node;
    if (bind != NULL) {
        j->has_bind = 1;
        j->bind = *bind;
    }
    fn->golden = j;
    pw_log_info(QD_COMP, "golden snapshot of %s: booting %s (%u MB, %u vCPUs, node %d)",
                fn->name, src->image, src->memory_mb, src->vcpus, node);
    job_submit(qd, j);
}

static void start_restore(struct qd *qd, struct qfn *fn, struct qvm *vm)
{
    pw_list_remove(&vm->wait_link);
    vm_set_state(vm, QVM_RESTORING);
    fn->nrestoring++;
    struct job *j = job_new(qd, JOB_RESTORE);
    j->vm = vm;
    pw_strlcpy(j->function, fn->name, sizeof(j->function));
    j->vm_id = vm->vm_id;
    j->uid = vm->uid;
    j->node = vm->node;
    j->has_bind = vm->has_bind;
    j->bind = vm->bind;
    j->snap = fn->snap;
    /* Restored guests are copies: each gets its own instance id and MAC. */
    snprintf(j->instance, sizeof(j->instance), "%016" PRIx64, vm->vm_id);
    uint64_t h = pw_hash_u64(vm->vm_id ^ qd->mac_salt);
    snprintf(j->mac, sizeof(j->mac), "52:54:%02x:%02x:%02x:%02x", (unsigned)(h >> 24) & 0xff,
             (unsigned)(h >> 16) & 0xff, (unsigned)(h >> 8) & 0xff, (unsigned)h & 0xff);
    vm->job = j;
    job_submit(qd, j);
}

/* fn_kick moves fn on: restores for waiters the snapshot fits, then a golden boot when one is
 * wanted (a snapshot command, or waiters the snapshot does not fit) and nothing restores from
 * the current snapshot meanwhile (the new one replaces its files). */
static void fn_kick(struct qd *qd, struct qfn *fn)
{
    if (fn->golden != NULL || qd->finishing)
        return;
    struct pw_list *pos, *tmp;
    if (fn->have_snap) {
        pw_list_foreach_safe(pos, tmp, &fn->waiters)
        {
            struct qvm *vm = pw_container_of(pos, struct qvm, wait_link);
            if (src_eq(&vm->src, &fn->src))
                start_restore(qd, fn, vm);
        }
    }
    if (fn->want && fn->have_snap && src_eq(&fn->want_src, &fn->src))
        fn->want = 0;
    const struct src *need = NULL;
    int32_t node = -1;
    const struct pw_numabind *bind = NULL;
    if (fn->want) {
        need = &fn->want_src;
        node = fn->want_node;
        bind = binding_for_index(qd, node_index(qd, node));
    } else if (!pw_list_empty(&fn->waiters)) {
        struct qvm *first = pw_container_of(pw_list_head(&fn->waiters), struct qvm, wait_link);
        need = &first->src;
        node = first->node;
        bind = first->has_bind ? &first->bind : NULL;
    }
    if (need == NULL || fn->nrestoring > 0)
        return;
    start_golden(qd, fn, need, node, bind);
}

/* ---- the tick ---- */

static void died(struct qd *qd, struct qvm *vm)
{
    char why[PW_ERRMSG_MAX * 2];
    pw_qemu_exit_reason(vm->h, why, sizeof(why), "on its own");
    pw_errf(vm->failure, sizeof(vm->failure), "%s", why);
    pw_log_warn(QD_COMP, "vm %llu (%s): %s", (unsigned long long)vm->vm_id, vm->fn->name, why);
    vm_set_state(vm, QVM_STOPPING);
    start_destroy(qd, vm);
}

static void on_tick(uv_timer_t *t)
{
    struct qd *qd = t->data;
    int logs = ++qd->ticks % LOGS_EVERY_TICKS == 0;
    int64_t now = pw_now_mono_ms();
    while (!pw_list_empty(&qd->doomed)) {
        struct qvm *vm = pw_container_of(pw_list_head(&qd->doomed), struct qvm, wait_link);
        if (vm->doomed_at_ms > now)
            break;
        emit(qd, vm->vm_id, PW_AVM_FAILED, 0, NULL, vm->failure);
        vm_release(qd, vm);
    }
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->vms, &bucket, &it)) != NULL) {
        struct qvm *vm = pw_container_of(n, struct qvm, hnode);
        if (vm->state != QVM_RUNNING)
            continue;
        if (!pw_qemu_alive(vm->h)) {
            died(qd, vm);
            continue;
        }
        /* A stat of two files per VM, and rarely a copy of one log: cheap enough for the
         * loop, and a VM's directory changes only on the loop while it runs. */
        if (logs && pw_qemu_logs_cap(vm->h->dir, qd->log_max_bytes) > 0)
            pw_log_info(QD_COMP, "vm %llu: logs over %llu KiB rotated",
                        (unsigned long long)vm->vm_id,
                        (unsigned long long)(qd->log_max_bytes >> 10));
    }
}

static void on_flush(uv_timer_t *t)
{
    struct qd *qd = t->data;
    while (!pw_list_empty(&qd->outq) && !qd->finishing) {
        struct pending_ev *e = pw_container_of(pw_list_head(&qd->outq), struct pending_ev, link);
        pw_list_remove(&e->link);
        struct pw_driver_event ev = {
            .vm_id = e->vm_id,
            .state = e->state,
            .restore_ms = e->restore_ms,
            .address = e->address[0] != '\0' ? e->address : NULL,
            .error = e->error[0] != '\0' ? e->error : NULL,
        };
        qd->d->event_cb(qd->d, &ev, qd->d->event_arg);
        free(e);
    }
}

/* ---- init: configuration, accelerator, what an earlier agent left ---- */

/* load_snapshots reads every <snap_root>/<function>/snapshot.json. Unusable ones (unreadable,
 * for another accelerator or QEMU, without the image they were made from) are deleted. */
static void load_snapshots(struct qd *qd)
{
    DIR *d = opendir(qd->snap_root);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || !pw_name_valid(e->d_name))
            continue;
        char dir[2 * PATH_MAX], why[400];
        snprintf(dir, sizeof(dir), "%s/%s", qd->snap_root, e->d_name);
        struct pw_qemu_snapshot s;
        const char *accel = pw_qemu_accel_name(qd->qcfg.accel);
        int rv = pw_qemu_snapshot_load(dir, &s, why, sizeof(why));
        if (rv == PW_OK && strcmp(s.function, e->d_name) != 0) {
            snprintf(why, sizeof(why), "it is of function %s", s.function);
            rv = PW_ERR_PARSE;
        } else if (rv == PW_OK && s.image[0] == '\0') {
            snprintf(why, sizeof(why), "it does not say which image it was made from");
            rv = PW_ERR_STATE;
        } else if (rv == PW_OK && strcmp(s.accel, accel) != 0) {
            snprintf(why, sizeof(why), "it was made under %s, the agent runs %s", s.accel,
                     accel);
            rv = PW_ERR_STATE;
        } else if (rv == PW_OK && s.ram != qd->qcfg.ram) {
            snprintf(why, sizeof(why), "it holds %s RAM, the agent runs with %s RAM%s",
                     pw_qemu_ram_name(s.ram), pw_qemu_ram_name(qd->qcfg.ram),
                     qd->nuids > 0 ? " (isolation)" : "");
            rv = PW_ERR_STATE;
        } else if (rv == PW_OK && strcmp(s.qemu_version, qd->qcfg.qemu_version) != 0) {
            snprintf(why, sizeof(why), "it was made by QEMU %s, this is QEMU %s",
                     s.qemu_version, qd->qcfg.qemu_version);
            rv = PW_ERR_STATE;
        }
        if (rv != PW_OK) {
            pw_log_warn(QD_COMP, "golden snapshot in %s deleted: %s", dir, why);
            if (rv != PW_ERR_NOTFOUND && rv != PW_ERR_PARSE)
                (void)pw_qemu_snapshot_delete(&s, why, sizeof(why));
            rm_dir_files(dir);
            continue;
        }
        struct qfn *fn = fn_get(qd, e->d_name);
        fn->have_snap = 1;
        fn->snap = s;
        pw_strlcpy(fn->src.image, s.image, sizeof(fn->src.image));
        fn->src.memory_mb = s.memory_mb;
        fn->src.vcpus = s.vcpus;
        pw_log_info(QD_COMP, "golden snapshot of %s found (%s, image %s, %u MB, %u vCPUs)",
                    fn->name, s.accel, s.image, s.memory_mb, s.vcpus);
    }
    closedir(d);
}

/* probe_guest finds an image to prove KVM with: the configured one, else the kernel and
 * initrd of a local snapshot (whose guest announces its function). */
static int probe_guest(struct qd *qd, const struct pw_agent_config *cfg,
                       struct pw_qemu_image *img)
{
    char why[400];
    if (cfg->qemu_probe_image[0] != '\0') {
        if (pw_qemu_image_load(cfg->qemu_probe_image, img, why, sizeof(why)) == PW_OK)
            return PW_OK;
        pw_log_warn(QD_COMP, "probe image: %s", why);
        return PW_ERR_NOTFOUND;
    }
    DIR *d = opendir(qd->snap_root);
    if (d == NULL)
        return PW_ERR_NOTFOUND;
    struct dirent *e;
    int rv = PW_ERR_NOTFOUND;
    while (rv != PW_OK && (e = readdir(d)) != NULL) {
        char dir[PATH_MAX + PW_NAME_MAX + 2];
        struct pw_qemu_snapshot s;
        if (e->d_name[0] == '.' ||
            snprintf(dir, sizeof(dir), "%s/%s", qd->snap_root, e->d_name) >= (int)sizeof(dir) ||
            pw_qemu_snapshot_load(dir, &s, why, sizeof(why)) != PW_OK ||
            access(s.kernel, R_OK) != 0 || access(s.initrd, R_OK) != 0)
            continue;
        memset(img, 0, sizeof(*img));
        pw_strlcpy(img->name, s.function, sizeof(img->name));
        pw_strlcpy(img->kernel, s.kernel, sizeof(img->kernel));
        pw_strlcpy(img->initrd, s.initrd, sizeof(img->initrd));
        pw_strlcpy(img->cmdline, PW_QEMU_DEFAULT_CMDLINE, sizeof(img->cmdline));
        rv = PW_OK;
    }
    closedir(d);
    return rv;
}

static void decide_accel(struct qd *qd, const struct pw_agent_config *cfg)
{
    if (qd->qcfg.accel != PW_QEMU_ACCEL_AUTO) {
        snprintf(qd->accel_why, sizeof(qd->accel_why), "%s: configured",
                 pw_qemu_accel_name(qd->qcfg.accel));
        return;
    }
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(qd->accel_why, sizeof(qd->accel_why), "tcg: /dev/kvm: %s", strerror(errno));
        qd->qcfg.accel = PW_QEMU_ACCEL_TCG;
        return;
    }
    close(fd);
    struct pw_qemu_image img;
    if (probe_guest(qd, cfg, &img) != PW_OK) {
        snprintf(qd->accel_why, sizeof(qd->accel_why),
                 "tcg: /dev/kvm opens, but without a guest image KVM cannot be proven "
                 "(set --qemu-probe-image)");
        qd->qcfg.accel = PW_QEMU_ACCEL_TCG;
        return;
    }
    struct pw_qemu_guest g = {.kernel = img.kernel, .initrd = img.initrd, .cmdline = img.cmdline};
    enum pw_qemu_accel a = PW_QEMU_ACCEL_TCG;
    char why[480];
    int64_t t0 = pw_now_mono_ms();
    /* Isolated VMs must be able to use KVM as their own user: the probe runs as one. */
    uint32_t uid = uid_alloc(qd);
    if (qd->nuids > 0 && uid == 0) {
        snprintf(qd->accel_why, sizeof(qd->accel_why),
                 "tcg: no free VM uid to prove KVM with");
        qd->qcfg.accel = PW_QEMU_ACCEL_TCG;
        return;
    }
    if (pw_qemu_probe_accel(&qd->qcfg, &g, img.name, uid, cfg->qemu_probe_timeout_ms, &a, why,
                            sizeof(why)) != PW_OK)
        a = PW_QEMU_ACCEL_TCG;
    uid_mark(qd, uid, 0);
    qd->qcfg.accel = a;
    snprintf(qd->accel_why, sizeof(qd->accel_why), "%s (probe took %lld ms)", why,
             (long long)(pw_now_mono_ms() - t0));
}

/* adopt_orphans takes over the restored VMs an earlier agent left running and cleans up
 * everything else in the run directory (golden boots it was making, dead VMs, bad records). */
static void adopt_orphans(struct qd *qd)
{
    struct pw_qemu_orphan *o = NULL;
    size_t n = 0;
    char why[512];
    if (pw_qemu_scan(qd->qcfg.run_dir, &o, &n, why, sizeof(why)) != PW_OK) {
        pw_log_warn(QD_COMP, "scan: %s", why);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const struct pw_qemu_meta *m = &o[i].meta;
        struct pw_qemu_vm *h = NULL;
        const char *what = o[i].why;
        if (o[i].state == PW_QEMU_ORPHAN_RUNNING && m->kind == PW_QEMU_VM_RESTORED &&
            vm_find(qd, m->vm_id) == NULL) {
            if (pw_qemu_adopt(&o[i], pw_now_mono_ms() + ADOPT_MS, &h, why, sizeof(why)) ==
                PW_OK) {
                struct qvm *vm = pw_xcalloc(1, sizeof(*vm));
                vm->qd = qd;
                vm->vm_id = m->vm_id;
                vm->fn = fn_get(qd, m->function);
                vm->state = QVM_RUNNING;
                vm->adopted = 1;
                vm->h = h;
                vm->uid = h->uid;
                vm->src.memory_mb = h->snap.memory_mb != 0 ? h->snap.memory_mb : 128;
                vm->src.vcpus = h->snap.vcpus != 0 ? h->snap.vcpus : 1;
                vm->node_idx = node_index(qd, m->numa_node);
                if (vm->node_idx >= qd->nnodes)
                    vm->node_idx = 0;
                vm->node = qd->d->topo->nodes[vm->node_idx].id;
                snprintf(vm->address, sizeof(vm->address), "127.0.0.1:%u", (unsigned)h->port);
                pw_htab_insert(&qd->vms, &vm->hnode, pw_hash_u64(vm->vm_id));
                /* Capacity is MemFree at start, which these already use. */
                qd->cap_mb[vm->node_idx] += vm->src.memory_mb;
                qd->used_mb[vm->node_idx] += vm->src.memory_mb;
                qd->used_vcpus[vm->node_idx] += (int32_t)vm->src.vcpus;
                pw_log_info(QD_COMP, "vm %llu (%s): adopted from an earlier agent: pid %d, %s, "
                            "node %d, instance %s", (unsigned long long)vm->vm_id, m->function,
                            (int)h->pid, vm->address, vm->node, h->instance);
                continue;
            }
            what = why;
        } else if (o[i].state == PW_QEMU_ORPHAN_RUNNING) {
            what = m->kind == PW_QEMU_VM_GOLDEN ? "a golden boot the earlier agent did not finish"
                                                : "a duplicate VM id";
        }
        char err[400];
        int rv = pw_qemu_orphan_clean(&o[i], pw_now_mono_ms() + qd->stop_ms, err, sizeof(err));
        pw_log_info(QD_COMP, "vm %016" PRIx64 " (%s) left by an earlier agent cleaned up (%s)%s%s",
                    m->vm_id, m->function[0] != '\0' ? m->function : "?", what,
                    rv != PW_OK ? ": " : "", rv != PW_OK ? err : "");
    }
    free(o);
}

/* golden_id_ours tells whether a golden VM id was made by this agent (any incarnation). */
static int golden_id_ours(const struct qd *qd, uint64_t id)
{
    return (id >> 56) == GOLDEN_ID_TOP && ((id >> 32) & 0xffffff) == qd->tag;
}

/* sweep removes our golden RAM files and state files that no snapshot refers to any more
 * (left by a crash between the steps of a golden boot), and probe directories of dead
 * agents. */
static void sweep(struct qd *qd)
{
    DIR *d = opendir(qd->qcfg.mem_dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "prewarm-", 8) != 0 || len < 8 + 22 ||
            strcmp(e->d_name + len - 4, ".mem") != 0 || e->d_name[len - 21] != '-')
            continue;
        char hex[17];
        memcpy(hex, e->d_name + len - 20, 16);
        hex[16] = '\0';
        if (strspn(hex, "0123456789abcdef") != 16 || !golden_id_ours(qd, strtoull(hex, NULL, 16)))
            continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof(path), "%s/%s", qd->qcfg.mem_dir, e->d_name);
        int used = 0;
        size_t bucket = 0;
        struct pw_hnode *it = NULL, *n;
        while (!used && (n = pw_htab_next(&qd->fns, &bucket, &it)) != NULL) {
            struct qfn *fn = pw_container_of(n, struct qfn, hnode);
            used = fn->have_snap && strcmp(fn->snap.mem_path, path) == 0;
        }
        if (!used && unlink(path) == 0)
            pw_log_info(QD_COMP, "removed %s: no snapshot refers to it", path);
    }
    if (d != NULL)
        closedir(d);
    /* State files next to manifests that no longer name them. */
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->fns, &bucket, &it)) != NULL) {
        struct qfn *fn = pw_container_of(n, struct qfn, hnode);
        if (!fn->have_snap || (d = opendir(fn->snap.dir)) == NULL)
            continue;
        while ((e = readdir(d)) != NULL) {
            char path[PATH_MAX + 256];
            snprintf(path, sizeof(path), "%s/%s", fn->snap.dir, e->d_name);
            if (strncmp(e->d_name, "state-", 6) == 0 && strcmp(path, fn->snap.state_path) != 0 &&
                unlink(path) == 0)
                pw_log_info(QD_COMP, "removed %s: no snapshot refers to it", path);
        }
        closedir(d);
    }
    /* QEMU version probes (probe-<pid>-<n>) of agents that died during their start. */
    if ((d = opendir(qd->qcfg.run_dir)) == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        int pid = 0;
        if (sscanf(e->d_name, "probe-%d-", &pid) != 1 || pid <= 0 || pid == (int)getpid() ||
            kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof(path), "%s/%s", qd->qcfg.run_dir, e->d_name);
        rm_dir_files(path);
    }
    closedir(d);
}

static void qd_free_early(struct qd *qd)
{
    size_t bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->vms, &bucket, &it)) != NULL) {
        struct qvm *vm = pw_container_of(n, struct qvm, hnode);
        pw_htab_remove(&qd->vms, n);
        pw_qemu_vm_free(vm->h); /* adopted ones keep running for the next try */
        free(vm);
    }
    qd->finishing = 1;
    qd_maybe_free(qd);
}

static int qemu_init(struct pw_driver *d, uv_loop_t *loop, const struct pw_agent_config *cfg,
                     char *errbuf, size_t errlen)
{
    struct qd *qd = pw_xcalloc(1, sizeof(*qd));
    int rv = PW_OK;
    qd->d = d;
    qd->loop = loop;
    pw_htab_init(&qd->vms);
    pw_htab_init(&qd->fns);
    pw_list_init(&qd->queue);
    pw_list_init(&qd->running);
    pw_list_init(&qd->outq);
    pw_list_init(&qd->doomed);
    qd->boot_ms = cfg->qemu_boot_timeout_ms;
    qd->restore_ms = cfg->qemu_restore_timeout_ms;
    qd->stop_ms = cfg->qemu_stop_timeout_ms;
    qd->log_max_bytes = (uint64_t)cfg->qemu_log_max_kb << 10;
    qd->max_jobs = cfg->qemu_jobs > 0 ? (unsigned)cfg->qemu_jobs : 1;
    /* libuv's pool has 4 threads unless UV_THREADPOOL_SIZE says more when it first starts,
     * which is at the first job: before that, this process runs nothing that reads it. */
    if (qd->max_jobs > 4 && getenv("UV_THREADPOOL_SIZE") == NULL) {
        char n[16];
        snprintf(n, sizeof(n), "%u", qd->max_jobs);
        setenv("UV_THREADPOOL_SIZE", n, 0);
    }
    qd->keep_vms = cfg->qemu_keep_vms;
    qd->tag = (uint32_t)(pw_hash_str(cfg->id) & 0xffffff);
    if (cfg->qemu_uids > 0) {
        if (geteuid() != 0) {
            pw_errf(errbuf, errlen, "--qemu-uids (VM isolation) needs the agent to run as root, "
                    "to start each QEMU as its own user; it runs as uid %u",
                    (unsigned)geteuid());
            rv = PW_ERR_INVAL;
            goto fail;
        }
        qd->uid_base = cfg->qemu_uid_base;
        qd->nuids = cfg->qemu_uids;
        qd->uid_used = pw_xcalloc(qd->nuids, 1);
    }
    if (getrandom(&qd->golden_seq, sizeof(qd->golden_seq), 0) != sizeof(qd->golden_seq))
        qd->golden_seq = (uint32_t)pw_now_wall_ms();
    qd->golden_seq &= 0x7fffffff; /* room to count up */
    if (getrandom(&qd->mac_salt, sizeof(qd->mac_salt), 0) != sizeof(qd->mac_salt))
        qd->mac_salt = pw_hash_u64((uint64_t)pw_now_wall_ms());
    qd->nnodes = PW_MIN(d->topo->nnodes, (size_t)PW_PROTO_MAX_NUMA);
    for (size_t i = 0; i < qd->nnodes; i++) {
        qd->cap_mb[i] = d->topo->nodes[i].mem_free_mb;
        qd->cap_vcpus[i] = d->topo->nodes[i].vcpu_total;
    }

    char run_dir[PW_AGENT_PATH_MAX], snap_dir[PW_AGENT_PATH_MAX], mem_dir[PW_AGENT_PATH_MAX];
    char why[600];
    enum pw_qemu_accel accel;
    rv = pw_agent_config_qemu_dirs(cfg, run_dir, snap_dir, mem_dir, errbuf, errlen);
    if (rv == PW_OK)
        rv = pw_qemu_config_init(&qd->qcfg, run_dir, errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    if (pw_strlcpy(qd->qcfg.mem_dir, mem_dir, sizeof(qd->qcfg.mem_dir)) >=
            sizeof(qd->qcfg.mem_dir) ||
        pw_strlcpy(qd->qcfg.qemu_bin, cfg->qemu_bin, sizeof(qd->qcfg.qemu_bin)) >=
            sizeof(qd->qcfg.qemu_bin) ||
        pw_strlcpy(qd->snap_root, snap_dir, sizeof(qd->snap_root)) >= sizeof(qd->snap_root) ||
        pw_qemu_accel_parse(cfg->qemu_accel, &accel) != PW_OK) {
        pw_errf(errbuf, errlen, "qemu settings out of range");
        rv = PW_ERR_INVAL;
        goto fail;
    }
    qd->qcfg.accel = accel;
    if (qd->nuids > 0) {
        /* Isolated VMs: the seccomp sandbox is a must (a QEMU without it fails the start),
         * and no RAM file every QEMU could write. */
        qd->qcfg.sandbox = PW_QEMU_SANDBOX_ON;
        qd->qcfg.ram = PW_QEMU_RAM_PRIVATE;
    }
    rv = pw_qemu_config_resolve(&qd->qcfg, pw_now_mono_ms() + RESOLVE_MS, why, sizeof(why),
                                errbuf, errlen);
    if (rv != PW_OK)
        goto fail;
    struct stat rst;
    if (qd->nuids > 0 && stat(qd->qcfg.run_dir, &rst) == 0 &&
        (rst.st_mode & (S_IXGRP | S_IXOTH)) != (S_IXGRP | S_IXOTH)) {
        /* Each QEMU must reach its own directory in there (and only that one: they are 0700),
         * so the run directory must be searchable, though not readable, by the VMs' uids. */
        if (chmod(qd->qcfg.run_dir, (rst.st_mode & 07777) | S_IXGRP | S_IXOTH) != 0) {
            pw_errf(errbuf, errlen, "chmod %s: %s", qd->qcfg.run_dir, strerror(errno));
            rv = PW_ERR_IO;
            goto fail;
        }
        pw_log_info(QD_COMP, "isolation: run directory %s made searchable for the VMs' uids",
                    qd->qcfg.run_dir);
    }
    if (mkdirs(qd->snap_root) != 0) {
        pw_errf(errbuf, errlen, "snapshot directory %s: %s", qd->snap_root, strerror(errno));
        rv = PW_ERR_IO;
        goto fail;
    }
    pw_log_info(QD_COMP, "QEMU %s (%s), sandbox %s%s%s; run dir %s, snapshots %s, RAM files %s",
                qd->qcfg.qemu_version, qd->qcfg.qemu_bin,
                qd->qcfg.sandbox == PW_QEMU_SANDBOX_ON ? "on" : "off", why[0] ? ": " : "", why,
                qd->qcfg.run_dir, qd->snap_root, qd->qcfg.mem_dir);

    if (qd->nuids > 0)
        pw_log_info(QD_COMP, "isolation: each QEMU as its own uid/gid in %u..%u, seccomp sandbox, "
                    "no_new_privs, private RAM, VM directories 0700",
                    (unsigned)qd->uid_base, (unsigned)(qd->uid_base + qd->nuids - 1));
    uid_recover(qd);
    decide_accel(qd, cfg);
    pw_log_info(QD_COMP, "accelerator %s (asked for %s): %s",
                pw_qemu_accel_name(qd->qcfg.accel), cfg->qemu_accel, qd->accel_why);
    load_snapshots(qd);
    adopt_orphans(qd);
    sweep(qd);
    /* What is left in the run directory now is the adopted VMs (and whatever could not be
     * cleaned): their uids stay taken. */
    uid_recover(qd);

    uv_timer_init(loop, &qd->tick);
    qd->tick.data = qd;
    uv_timer_init(loop, &qd->flush);
    qd->flush.data = qd;
    qd->live += 2;
    uv_timer_start(&qd->tick, on_tick, TICK_MS, TICK_MS);
    d->impl = qd;
    size_t nsnaps = 0, bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->fns, &bucket, &it)) != NULL)
        nsnaps += pw_container_of(n, struct qfn, hnode)->have_snap != 0;
    pw_log_info(QD_COMP, "real microVMs under %s: %zu golden snapshot(s), %zu VM(s) adopted, at "
                "most %u QEMU operations at once, VMs %s at a clean stop",
                pw_qemu_accel_name(qd->qcfg.accel), nsnaps, qd->vms.count, qd->max_jobs,
                qd->keep_vms ? "kept running" : "destroyed");
    return PW_OK;

fail:
    qd_free_early(qd);
    return rv;
}

/* ---- the ops ---- */

static void on_timer_closed(uv_handle_t *h)
{
    struct qd *qd = h->data;
    qd->live--;
    qd_maybe_free(qd);
}

static void qemu_fini(struct pw_driver *d)
{
    struct qd *qd = d->impl;
    if (qd == NULL)
        return;
    d->impl = NULL;
    qd->finishing = 1;
    /* Jobs not started yet: a restore or golden boot is no longer wanted; destroys still run. */
    struct pw_list *pos, *tmp;
    pw_list_foreach_safe(pos, tmp, &qd->queue)
    {
        struct job *j = pw_container_of(pos, struct job, link);
        if (j->kind == JOB_DESTROY)
            continue;
        pw_list_remove(&j->link);
        if (j->kind == JOB_RESTORE) {
            j->vm->fn->nrestoring--;
            vm_release(qd, j->vm);
        } else {
            j->fn->golden = NULL;
        }
        free(j);
        qd->live--;
    }
    /* Jobs running: restores and golden boots give up within about 50 ms. */
    pw_list_foreach(pos, &qd->running)
    {
        struct job *j = pw_container_of(pos, struct job, link);
        if (j->kind != JOB_DESTROY)
            atomic_store(&j->cancel, 1);
    }
    size_t stopping = 0, kept = 0, bucket = 0;
    struct pw_hnode *it = NULL, *n;
    while ((n = pw_htab_next(&qd->vms, &bucket, &it)) != NULL) {
        struct qvm *vm = pw_container_of(n, struct qvm, hnode);
        if (vm->state == QVM_WAITING) {
            vm_release(qd, vm);
        } else if (vm->state == QVM_RUNNING && qd->keep_vms) {
            pw_qemu_vm_free(vm->h); /* closes our sockets; QEMU runs on */
            vm->h = NULL;
            vm_release(qd, vm);
            kept++;
        } else if (vm->state == QVM_RUNNING) {
            vm_set_state(vm, QVM_STOPPING);
            start_destroy(qd, vm);
            stopping++;
        }
    }
    while (!pw_list_empty(&qd->outq)) {
        struct pending_ev *e = pw_container_of(pw_list_head(&qd->outq), struct pending_ev, link);
        pw_list_remove(&e->link);
        free(e);
    }
    pw_log_info(QD_COMP, "stopping: %zu VM(s) destroyed, %zu left running for the next agent, "
                "%u operation(s) finishing", stopping, kept, qd->nrunning);
    uv_close((uv_handle_t *)&qd->tick, on_timer_closed);
    uv_close((uv_handle_t *)&qd->flush, on_timer_closed);
}

static int qemu_prewarm(struct pw_driver *d, const struct pw_cmd *cmd,
                        const struct pw_numabind *bind, int32_t *numa_node, char *errbuf,
                        size_t errlen)
{
    struct qd *qd = d->impl;
    if (vm_find(qd, cmd->vm_id) != NULL) {
        pw_errf(errbuf, errlen, "vm %llu already exists", (unsigned long long)cmd->vm_id);
        return PW_ERR_EXISTS;
    }
    if (!pw_name_valid(cmd->function) || cmd->image[0] != '/' || cmd->memory_mb == 0 ||
        cmd->vcpus == 0 || cmd->vcpus > 255) {
        pw_errf(errbuf, errlen, "function %s: image \"%s\" is not an absolute path to a guest "
                "image directory, or the shape (%u MB, %u vCPUs) is out of range",
                cmd->function, cmd->image, cmd->memory_mb, cmd->vcpus);
        return PW_ERR_INVAL;
    }
    size_t idx;
    if (cmd->numa_node < 0) {
        /* The driver picks: the node with the most free memory that fits the whole VM. */
        idx = qd->nnodes;
        for (size_t i = 0; i < qd->nnodes; i++) {
            if (qd->used_mb[i] + cmd->memory_mb <= qd->cap_mb[i] &&
                (int64_t)qd->used_vcpus[i] + cmd->vcpus <= (int64_t)qd->cap_vcpus[i] &&
                (idx == qd->nnodes ||
                 qd->cap_mb[i] - qd->used_mb[i] > qd->cap_mb[idx] - qd->used_mb[idx]))
                idx = i;
        }
        if (idx == qd->nnodes) {
            pw_errf(errbuf, errlen, "no node has room for %u MB and %u vCPUs", cmd->memory_mb,
                    cmd->vcpus);
            return PW_ERR_NOCAP;
        }
        bind = binding_for_index(qd, idx);
    } else {
        idx = node_index(qd, cmd->numa_node);
        if (idx == qd->nnodes) {
            pw_errf(errbuf, errlen, "no NUMA node %d on this host", cmd->numa_node);
            return PW_ERR_INVAL;
        }
    }
    if (qd->used_mb[idx] + cmd->memory_mb > qd->cap_mb[idx]) {
        pw_errf(errbuf, errlen, "no memory on node %d (%u MB asked, %llu MB free)",
                d->topo->nodes[idx].id, cmd->memory_mb,
                (unsigned long long)(qd->cap_mb[idx] - qd->used_mb[idx]));
        return PW_ERR_NOCAP;
    }
    if ((int64_t)qd->used_vcpus[idx] + cmd->vcpus > (int64_t)qd->cap_vcpus[idx]) {
        pw_errf(errbuf, errlen, "no vCPUs on node %d (%u asked, %d free)", d->topo->nodes[idx].id,
                cmd->vcpus, qd->cap_vcpus[idx] - qd->used_vcpus[idx]);
        return PW_ERR_NOCAP;
    }
    uint32_t uid = uid_alloc(qd);
    if (qd->nuids > 0 && uid == 0) {
        pw_errf(errbuf, errlen, "no free VM uid: all %u of --qemu-uids are in use",
                (unsigned)qd->nuids);
        return PW_ERR_NOCAP;
    }
    struct src src;
    src_from_cmd(&src, cmd);
    struct qfn *fn = fn_get(qd, cmd->function);
    int fits_snap = fn->have_snap && src_eq(&fn->src, &src);
    int64_t since = pw_now_mono_ms() - fn->failed_at_ms;
    int doomed = !fits_snap && fn->failed && src_eq(&fn->failed_src, &src) &&
                 since < GOLDEN_RETRY_MS && (fn->golden == NULL || !src_eq(&fn->golden->src, &src));
    struct qvm *vm = pw_xcalloc(1, sizeof(*vm));
    vm->qd = qd;
    vm->fn = fn;
    vm->vm_id = cmd->vm_id;
    vm->uid = uid;
    vm->state = QVM_WAITING;
    vm->src = src;
    vm->node_idx = idx;
    vm->node = d->topo->nodes[idx].id;
    if (bind != NULL) {
        vm->has_bind = 1;
        vm->bind = *bind;
    }
    qd->used_mb[idx] += src.memory_mb;
    qd->used_vcpus[idx] += (int32_t)src.vcpus;
    pw_htab_insert(&qd->vms, &vm->hnode, pw_hash_u64(vm->vm_id));
    *numa_node = vm->node;
    if (doomed) {
        pw_errf(vm->failure, sizeof(vm->failure), "%s (%lld s ago; tried again after %d s)",
                fn->failed_why, (long long)(since / 1000), GOLDEN_RETRY_MS / 1000);
        vm->doomed_at_ms = pw_now_mono_ms() + DOOMED_MS;
        pw_list_push_tail(&qd->doomed, &vm->wait_link);
        return PW_OK;
    }
    pw_list_push_tail(&fn->waiters, &vm->wait_link);
    pw_log_debug(QD_COMP, "vm %llu (%s): accepted on node %d%s%s",
                 (unsigned long long)vm->vm_id, fn->name, vm->node,
                 vm->has_bind ? "" : " (unbound)",
                 fits_snap ? "" : "; waits for a golden snapshot");
    fn_kick(qd, fn);
    return PW_OK;
}

static int qemu_destroy(struct pw_driver *d, uint64_t vm_id)
{
    struct qd *qd = d->impl;
    struct qvm *vm = vm_find(qd, vm_id);
    if (vm == NULL)
        return PW_ERR_NOTFOUND;
    switch (vm->state) {
    case QVM_WAITING:
        emit(qd, vm_id, PW_AVM_GONE, 0, NULL, NULL);
        vm_release(qd, vm);
        break;
    case QVM_RESTORING:
        /* Stop the restore early; its completion reports GONE (or destroys what it made). */
        vm->destroy_wanted = 1;
        atomic_store(&vm->job->cancel, 1);
        break;
    case QVM_RUNNING:
        vm_set_state(vm, QVM_STOPPING);
        start_destroy(qd, vm);
        break;
    case QVM_STOPPING:
        break;
    }
    return PW_OK;
}

static void qemu_usage(struct pw_driver *d, struct pw_numa_node *nodes, size_t n)
{
    struct qd *qd = d->impl;
    for (size_t i = 0; i < n && i < qd->nnodes; i++) {
        nodes[i].mem_free_mb = qd->cap_mb[i] > qd->used_mb[i] ? qd->cap_mb[i] - qd->used_mb[i] : 0;
        nodes[i].vcpu_free = PW_MAX(0, qd->cap_vcpus[i] - qd->used_vcpus[i]);
    }
}

static int cmp_name(const void *a, const void *b) { return strcmp(a, b); }

static size_t qemu_snapshots(struct pw_driver *d, char (*out)[PW_NAME_MAX], size_t max)
{
    struct qd *qd = d->impl;
    size_t n = 0, bucket = 0;
    struct pw_hnode *it = NULL, *h;
    while (n < max && (h = pw_htab_next(&qd->fns, &bucket, &it)) != NULL) {
        struct qfn *fn = pw_container_of(h, struct qfn, hnode);
        if (fn->have_snap)
            pw_strlcpy(out[n++], fn->name, PW_NAME_MAX);
    }
    qsort(out, n, sizeof(out[0]), cmp_name);
    return n;
}

static int qemu_snapshot(struct pw_driver *d, const struct pw_cmd *cmd, char *errbuf,
                         size_t errlen)
{
    struct qd *qd = d->impl;
    if (!pw_name_valid(cmd->function) || cmd->image[0] != '/' || cmd->memory_mb == 0 ||
        cmd->vcpus == 0 || cmd->vcpus > 255) {
        pw_errf(errbuf, errlen, "image \"%s\" is not an absolute path to a guest image "
                "directory, or the shape (%u MB, %u vCPUs) is out of range", cmd->image,
                cmd->memory_mb, cmd->vcpus);
        return PW_ERR_INVAL;
    }
    struct src src;
    src_from_cmd(&src, cmd);
    struct qfn *fn = fn_get(qd, cmd->function);
    if ((fn->have_snap && src_eq(&fn->src, &src)) ||
        (fn->golden != NULL && src_eq(&fn->golden->src, &src))) {
        pw_log_debug(QD_COMP, "snapshot of %s: already there or being made", fn->name);
        return PW_OK;
    }
    fn->want = 1;
    fn->want_src = src;
    fn->want_node = cmd->numa_node;
    fn_kick(qd, fn);
    return PW_OK;
}

static size_t qemu_adopted(struct pw_driver *d, struct pw_vm_info *out, size_t max)
{
    struct qd *qd = d->impl;
    size_t n = 0, bucket = 0;
    struct pw_hnode *it = NULL, *h;
    while (n < max && (h = pw_htab_next(&qd->vms, &bucket, &it)) != NULL) {
        struct qvm *vm = pw_container_of(h, struct qvm, hnode);
        if (!vm->adopted || vm->state != QVM_RUNNING)
            continue;
        struct pw_vm_info *v = &out[n++];
        memset(v, 0, sizeof(*v));
        v->vm_id = vm->vm_id;
        pw_strlcpy(v->function, vm->fn->name, sizeof(v->function));
        v->state = PW_AVM_RUNNING;
        v->numa_node = vm->node;
        v->memory_mb = vm->src.memory_mb;
        v->vcpus = vm->src.vcpus;
        pw_strlcpy(v->address, vm->address, sizeof(v->address));
    }
    return n;
}

static size_t qemu_labels(struct pw_driver *d, struct pw_label *out, size_t max)
{
    struct qd *qd = d->impl;
    if (max == 0)
        return 0;
    pw_strlcpy(out[0].key, "accelerator", sizeof(out[0].key));
    pw_strlcpy(out[0].value, pw_qemu_accel_name(qd->qcfg.accel), sizeof(out[0].value));
    return 1;
}

const struct pw_driver_ops pw_driver_qemu = {
    .name = "qemu",
    .summary = "QEMU microvm guests restored from golden snapshots (KVM, or TCG where KVM "
               "cannot be proven to work)",
    .init = qemu_init,
    .fini = qemu_fini,
    .prewarm = qemu_prewarm,
    .destroy = qemu_destroy,
    .usage = qemu_usage,
    .snapshots = qemu_snapshots,
    .snapshot = qemu_snapshot,
    .adopted = qemu_adopted,
    .labels = qemu_labels,
};
