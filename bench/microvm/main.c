/* bench-microvm — real QEMU microVMs on this machine, in one run: cold boot to ready, restore
 * from a golden snapshot to running, to the identity the agent waits for, and to a first HTTP
 * answer (each at least 10 samples, sequential, on an otherwise idle set of VMs), then N VMs
 * restored at once with their memory (PSS from /proc/PID/smaps_rollup) while all are alive,
 * and the ratio cold boot / restore. Uses the qemu_vm primitives the agent's driver uses.
 *
 *   bench-microvm [--image DIR] [--samples N] [--vms N] [--accel auto|kvm|tcg] [--json FILE]
 *                 [--isolation UID]
 *
 * Without --image it builds a static-handler guest with agents/guest/build-guest.sh. With
 * --isolation (as root) the restores and the memory are measured again, in the same run, the
 * way the agent's --qemu-uids runs VMs: a golden with private RAM booted as uid UID, and each
 * restore as a uid of its own from UID+1 (docs/qemu.md, "Isolation"). */
#include "pw/error.h"
#include "pw/qemu_vm.h"
#include "pw/util.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#define FN "bench-hello"
#define BODY "hello from bench"
#define BUILDER PW_SOURCE_DIR "/agents/guest/build-guest.sh"

struct stats {
    double median, p90, max, min, mean;
    size_t n;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* summarize: median, p90 (nearest rank) and max of v[0..n). */
static struct stats summarize(const double *v, size_t n)
{
    struct stats s = {0};
    if (n == 0)
        return s;
    double *c = pw_xmalloc(n * sizeof(*c));
    memcpy(c, v, n * sizeof(*c));
    qsort(c, n, sizeof(*c), cmp_double);
    s.n = n;
    s.min = c[0];
    s.max = c[n - 1];
    s.median = n % 2 ? c[n / 2] : (c[n / 2 - 1] + c[n / 2]) / 2;
    size_t rank = (size_t)ceil(0.9 * (double)n);
    s.p90 = c[rank > 0 ? rank - 1 : 0];
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c[i];
    s.mean = sum / (double)n;
    free(c);
    return s;
}

static void die(const char *what, int rv, const char *err)
{
    fprintf(stderr, "bench-microvm: %s: %s: %s\n", what, pw_strerror(rv), err);
    exit(1);
}

static int build_image(char *out, size_t outlen)
{
    FILE *p = popen("bash '" BUILDER "' function " FN " --static '" BODY "'", "r");
    if (p == NULL)
        return -1;
    char line[PATH_MAX];
    out[0] = '\0';
    while (fgets(line, sizeof(line), p) != NULL)
        if (line[0] == '/')
            snprintf(out, outlen, "%.*s", (int)strcspn(line, "\n"), line);
    return pclose(p) == 0 && out[0] != '\0' ? 0 : -1;
}

/* smaps_kb reads Pss and Rss of pid from /proc/PID/smaps_rollup, in KiB. */
static int smaps_kb(pid_t pid, long *pss, long *rss)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return -1;
    *pss = *rss = -1;
    while (fgets(line, sizeof(line), fp) != NULL) {
        sscanf(line, "Pss: %ld kB", pss);
        sscanf(line, "Rss: %ld kB", rss);
    }
    fclose(fp);
    return *pss >= 0 && *rss >= 0 ? 0 : -1;
}

struct restore_arg {
    const struct pw_qemu_config *cfg;
    const struct pw_qemu_snapshot *snap;
    uint64_t vm_id;
    uint32_t uid; /* 0: as this process */
    struct pw_qemu_vm *vm;
    struct pw_qemu_times t;
    int rv;
    char err[600];
};

static void *restore_thread(void *p)
{
    struct restore_arg *a = p;
    struct pw_qemu_vm_spec spec = {.vm_id = a->vm_id, .function = FN, .numa_node = -1,
                                   .uid = a->uid};
    char inst[32];
    snprintf(inst, sizeof(inst), "bench-%" PRIx64, a->vm_id);
    a->rv = pw_qemu_restore(a->cfg, a->snap, &spec, inst, PW_QEMU_PROBE_HTTP,
                            pw_now_mono_ms() + 120000, &a->vm, &a->t, a->err, sizeof(a->err));
    return NULL;
}

static void destroy(struct pw_qemu_vm *vm)
{
    char err[300];
    int rv = pw_qemu_destroy(vm, pw_now_mono_ms() + 5000, 0, err, sizeof(err));
    if (rv != PW_OK)
        fprintf(stderr, "bench-microvm: destroy: %s\n", err);
    pw_qemu_vm_free(vm);
}

/* What the restores of one snapshot measure (steps 2 and 3). */
struct restores {
    struct stats cont, ident, http, conc, pss, rss;
    double all_ms;
};

/* measure_restores restores snap samples times, one VM alive at a time, then nvms at once,
 * and reads their memory while all are alive. VM ids from idbase; uids (when uid0 != 0) uid0,
 * uid0 + 1, ... */
static void measure_restores(const struct pw_qemu_config *cfg, const struct pw_qemu_snapshot *snap,
                             uint64_t idbase, uint32_t uid0, int samples, int nvms,
                             struct restores *out)
{
    double *cont = pw_xcalloc((size_t)samples, sizeof(double));
    double *ident = pw_xcalloc((size_t)samples, sizeof(double));
    double *http = pw_xcalloc((size_t)samples, sizeof(double));
    for (int i = 0; i < samples; i++) {
        struct restore_arg a = {.cfg = cfg, .snap = snap, .vm_id = idbase | (uint64_t)(0x2000 + i),
                                .uid = uid0};
        restore_thread(&a);
        if (a.rv != PW_OK)
            die("restore", a.rv, a.err);
        cont[i] = a.t.cont_ms;
        ident[i] = a.t.id_ms;
        http[i] = a.t.http_ms;
        fprintf(stderr, "  restore %2d: running %.0f ms, identity %.0f ms, first HTTP %.0f ms\n",
                i, a.t.cont_ms, a.t.id_ms, a.t.http_ms);
        destroy(a.vm);
    }

    /* N restores at once; all alive: their memory. */
    struct restore_arg *va = pw_xcalloc((size_t)nvms, sizeof(*va));
    pthread_t *th = pw_xcalloc((size_t)nvms, sizeof(*th));
    int64_t t0 = pw_now_mono_ms();
    for (int i = 0; i < nvms; i++) {
        va[i] = (struct restore_arg){.cfg = cfg, .snap = snap,
                                     .vm_id = idbase | (uint64_t)(0x3000 + i),
                                     .uid = uid0 != 0 ? uid0 + (uint32_t)i : 0};
        if (pthread_create(&th[i], NULL, restore_thread, &va[i]) != 0)
            die("pthread_create", PW_ERR_INTERNAL, strerror(errno));
    }
    for (int i = 0; i < nvms; i++)
        pthread_join(th[i], NULL);
    out->all_ms = (double)(pw_now_mono_ms() - t0);
    double *conc = pw_xcalloc((size_t)nvms, sizeof(double));
    double *pss = pw_xcalloc((size_t)nvms, sizeof(double));
    double *rss = pw_xcalloc((size_t)nvms, sizeof(double));
    int failed = 0;
    for (int i = 0; i < nvms; i++) {
        if (va[i].rv != PW_OK) {
            fprintf(stderr, "bench-microvm: concurrent restore %d: %s\n", i, va[i].err);
            failed++;
            continue;
        }
        conc[i] = va[i].t.http_ms;
    }
    if (failed > 0)
        die("concurrent restores", PW_ERR_UNAVAIL, "see above");
    /* Let the guests settle (the first answers touched their pages) before reading memory. */
    sleep(1);
    for (int i = 0; i < nvms; i++) {
        long p, r;
        if (smaps_kb(va[i].vm->pid, &p, &r) != 0)
            die("smaps_rollup", PW_ERR_IO, strerror(errno));
        pss[i] = (double)p / 1024.0;
        rss[i] = (double)r / 1024.0;
    }
    for (int i = 0; i < nvms; i++)
        destroy(va[i].vm);
    out->cont = summarize(cont, (size_t)samples);
    out->ident = summarize(ident, (size_t)samples);
    out->http = summarize(http, (size_t)samples);
    out->conc = summarize(conc, (size_t)nvms);
    out->pss = summarize(pss, (size_t)nvms);
    out->rss = summarize(rss, (size_t)nvms);
    free(cont);
    free(ident);
    free(http);
    free(conc);
    free(pss);
    free(rss);
    free(va);
    free(th);
}

static void json_stats(FILE *f, const char *key, const struct stats *s, int last)
{
    fprintf(f,
            "    \"%s\": {\"n\": %zu, \"median\": %.1f, \"p90\": %.1f, \"max\": %.1f, "
            "\"min\": %.1f, \"mean\": %.1f}%s\n",
            key, s->n, s->median, s->p90, s->max, s->min, s->mean, last ? "" : ",");
}

static void row(const char *what, const struct stats *s, const char *unit)
{
    printf("| %-52s | %8.1f | %8.1f | %8.1f | %3zu |%s\n", what, s->median, s->p90, s->max, s->n,
           unit);
}

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: bench-microvm [--image DIR] [--samples N] [--vms N] [--accel A] [--json FILE]\n"
            "  --image DIR    guest image (agents/guest/build-guest.sh function ...); default:\n"
            "                 build a static-handler image \"" FN "\"\n"
            "  --samples N    samples per sequential measurement (default 10, at least 10)\n"
            "  --vms N        VMs restored at once and alive for the memory measurement (10)\n"
            "  --accel A      auto (default: KVM only if a guest boots under it in 3 s), kvm, tcg\n"
            "  --json FILE    also write the results as JSON\n"
            "  --isolation UID  (root) also measure isolated VMs: private RAM, a golden as uid\n"
            "                 UID, restores as UID+1.. (UID+--vms must be unused uids)\n");
}

int main(int argc, char **argv)
{
    const char *image = NULL, *json = NULL, *accel = "auto";
    int samples = 10, nvms = 10;
    unsigned long iso_uid = 0;
    static const struct option opts[] = {
        {"image", required_argument, NULL, 'i'}, {"samples", required_argument, NULL, 's'},
        {"vms", required_argument, NULL, 'v'},   {"accel", required_argument, NULL, 'a'},
        {"json", required_argument, NULL, 'j'},  {"help", no_argument, NULL, 'h'},
        {"isolation", required_argument, NULL, 'u'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'i': image = optarg; break;
        case 's': samples = atoi(optarg); break;
        case 'v': nvms = atoi(optarg); break;
        case 'a': accel = optarg; break;
        case 'j': json = optarg; break;
        case 'u': iso_uid = strtoul(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (samples < 10 || samples > 1000 || nvms < 1 || nvms > 200 || optind != argc ||
        iso_uid > 4000000000UL) {
        usage(stderr);
        return 2;
    }
    char built[PATH_MAX];
    if (image == NULL) {
        fprintf(stderr, "bench-microvm: building the guest image (cached after the first time)\n");
        if (build_image(built, sizeof(built)) != 0) {
            fprintf(stderr, "bench-microvm: %s failed\n", BUILDER);
            return 1;
        }
        image = built;
    }
    char err[600], why[600];
    struct pw_qemu_image img;
    int rv = pw_qemu_image_load(image, &img, err, sizeof(err));
    if (rv != PW_OK)
        die("image", rv, err);

    char run_dir[64], mem_dir[64], snap_dir[96];
    snprintf(run_dir, sizeof(run_dir), "/tmp/pw-bench-mv-%d", (int)getpid());
    snprintf(mem_dir, sizeof(mem_dir), "/dev/shm/pw-bench-mv-%d", (int)getpid());
    snprintf(snap_dir, sizeof(snap_dir), "%s/snap", run_dir);
    struct pw_qemu_config cfg;
    if ((rv = pw_qemu_config_init(&cfg, run_dir, err, sizeof(err))) != PW_OK)
        die("config", rv, err);
    pw_strlcpy(cfg.mem_dir, mem_dir, sizeof(cfg.mem_dir));
    if (pw_qemu_accel_parse(accel, &cfg.accel) != PW_OK) {
        usage(stderr);
        return 2;
    }
    if (iso_uid != 0)
        cfg.sandbox = PW_QEMU_SANDBOX_ON; /* the default mode is measured with it too */
    if ((rv = pw_qemu_config_resolve(&cfg, pw_now_mono_ms() + 15000, why, sizeof(why), err,
                                     sizeof(err))) != PW_OK)
        die("QEMU", rv, err);
    char accel_why[600] = "configured";
    if (cfg.accel == PW_QEMU_ACCEL_AUTO) {
        struct pw_qemu_guest pg = {.kernel = img.kernel, .initrd = img.initrd,
                                   .cmdline = img.cmdline};
        pw_qemu_probe_accel(&cfg, &pg, img.name, (uint32_t)iso_uid, 3000, &cfg.accel, accel_why, sizeof(accel_why));
    }
    struct utsname u;
    uname(&u);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench-microvm: QEMU %s, accelerator %s (%s), %ld CPUs, %s %s\n", cfg.qemu_version,
           pw_qemu_accel_name(cfg.accel), accel_why, ncpu, u.sysname, u.release);
    printf("bench-microvm: guest %s (%s), 128 MiB, 1 vCPU, %d samples, %d VMs at once\n",
           img.name, image, samples, nvms);

    /* 1. Cold boots: process start -> the guest's ready line; each is snapshotted (the last
     * snapshot is the one the restores use). */
    struct pw_qemu_guest g = {.kernel = img.kernel, .initrd = img.initrd, .cmdline = img.cmdline,
                              .memory_mb = 128, .vcpus = 1, .image = image};
    double *boot = pw_xcalloc((size_t)samples, sizeof(double));
    double *snapms = pw_xcalloc((size_t)samples, sizeof(double));
    struct pw_qemu_snapshot snap;
    uint64_t base = (uint64_t)(uint32_t)getpid() << 20;
    for (int i = 0; i < samples; i++) {
        struct pw_qemu_vm_spec spec = {.vm_id = base | (uint64_t)(0x1000 + i), .function = img.name,
                                       .numa_node = -1};
        struct pw_qemu_times t;
        rv = pw_qemu_golden(&cfg, &g, &spec, snap_dir, pw_now_mono_ms() + 120000, &snap, &t, err,
                            sizeof(err));
        if (rv != PW_OK)
            die("golden boot", rv, err);
        boot[i] = t.ready_ms;
        snapms[i] = t.snapshot_ms;
        fprintf(stderr, "  cold boot %2d: ready %.0f ms, snapshot %.1f ms\n", i, t.ready_ms,
                t.snapshot_ms);
    }

    /* 2. Sequential restores, one VM alive at a time; 3. N restores at once, their memory. */
    struct restores def;
    measure_restores(&cfg, &snap, base, 0, samples, nvms, &def);
    char ignored[300];
    (void)pw_qemu_snapshot_delete(&snap, ignored, sizeof(ignored));

    /* 4. The same restores, isolated: private RAM, one uid per QEMU. */
    struct restores iso;
    struct pw_qemu_snapshot isnap;
    if (iso_uid != 0) {
        struct pw_qemu_config icfg = cfg;
        icfg.ram = PW_QEMU_RAM_PRIVATE;
        struct pw_qemu_vm_spec spec = {.vm_id = base | 0x4000, .function = img.name,
                                       .numa_node = -1, .uid = (uint32_t)iso_uid};
        struct pw_qemu_times t;
        char isnap_dir[128];
        snprintf(isnap_dir, sizeof(isnap_dir), "%s/isnap", run_dir);
        rv = pw_qemu_golden(&icfg, &g, &spec, isnap_dir, pw_now_mono_ms() + 120000, &isnap, &t,
                            err, sizeof(err));
        if (rv != PW_OK)
            die("isolated golden boot", rv, err);
        struct stat sst;
        fprintf(stderr, "  isolated golden: ready %.0f ms, snapshot %.1f ms, state file %.1f MiB\n",
                t.ready_ms, t.snapshot_ms,
                stat(isnap.state_path, &sst) == 0 ? (double)sst.st_size / 1048576.0 : -1.0);
        measure_restores(&icfg, &isnap, base, (uint32_t)iso_uid + 1, samples, nvms, &iso);
        (void)pw_qemu_snapshot_delete(&isnap, ignored, sizeof(ignored));
        rmdir(isnap_dir);
    }
    rmdir(snap_dir);
    rmdir(run_dir);
    rmdir(mem_dir);

    struct stats sb = summarize(boot, (size_t)samples), ss = summarize(snapms, (size_t)samples);
    struct stats sc = def.cont, si = def.ident, sh = def.http, sx = def.conc, sp = def.pss;
    struct stats sr = def.rss;
    double all_ms = def.all_ms;
    double pss_total = sp.mean * (double)nvms;
    printf("\n| measurement (ms, or MiB) | median | p90 | max | n |\n"
           "|---|---|---|---|---|\n");
    row("cold boot: process start -> guest ready", &sb, "");
    row("snapshot: stop -> device state written", &ss, "");
    row("restore: process start -> running (cont returned)", &sc, "");
    row("restore: -> identity applied (the agent's RUNNING)", &si, "");
    row("restore: -> first HTTP answer", &sh, "");
    char what[128];
    snprintf(what, sizeof(what), "%d restores at once: each -> first HTTP answer", nvms);
    row(what, &sx, "");
    snprintf(what, sizeof(what), "PSS per VM, %d restored VMs alive (MiB)", nvms);
    row(what, &sp, "");
    snprintf(what, sizeof(what), "RSS per VM, %d restored VMs alive (MiB)", nvms);
    row(what, &sr, "");
    printf("\n%d restores at once: all answering after %.0f ms; PSS of all %d: %.0f MiB\n", nvms,
           all_ms, nvms, pss_total);
    printf("ratio cold boot / restore (medians): %.1fx to running, %.1fx to identity, "
           "%.1fx to first HTTP answer\n",
           sb.median / sc.median, sb.median / si.median, sb.median / sh.median);
    if (iso_uid != 0) {
        printf("\nisolation (--isolation %lu): the same restores, each QEMU its own uid, private "
               "RAM read from the state file\n\n"
               "| measurement (ms, or MiB), median (p90) | default (file RAM) | isolated "
               "(private RAM) |\n|---|---|---|\n", iso_uid);
        const struct {
            const char *what;
            const struct stats *a, *b;
        } rows[] = {
            {"restore: process start -> running", &def.cont, &iso.cont},
            {"restore: -> identity applied", &def.ident, &iso.ident},
            {"restore: -> first HTTP answer", &def.http, &iso.http},
            {"restores at once: each -> first HTTP answer", &def.conc, &iso.conc},
            {"PSS per VM, all alive (MiB)", &def.pss, &iso.pss},
            {"RSS per VM, all alive (MiB)", &def.rss, &iso.rss},
        };
        for (size_t i = 0; i < PW_ARRAY_LEN(rows); i++)
            printf("| %s | %.1f (%.1f) | %.1f (%.1f) |\n", rows[i].what, rows[i].a->median,
                   rows[i].a->p90, rows[i].b->median, rows[i].b->p90);
        printf("| PSS of all %d VMs (MiB) | %.0f | %.0f |\n", nvms, def.pss.mean * nvms,
               iso.pss.mean * nvms);
    }

    if (json != NULL) {
        FILE *f = fopen(json, "w");
        if (f == NULL) {
            fprintf(stderr, "bench-microvm: %s: %s\n", json, strerror(errno));
            return 1;
        }
        fprintf(f, "{\n  \"qemu\": \"%s\",\n  \"accelerator\": \"%s\",\n  \"cpus\": %ld,\n"
                   "  \"guest_memory_mb\": 128,\n  \"samples\": %d,\n  \"vms\": %d,\n  \"ms\": {\n",
                cfg.qemu_version, pw_qemu_accel_name(cfg.accel), ncpu, samples, nvms);
        json_stats(f, "cold_boot_to_ready", &sb, 0);
        json_stats(f, "snapshot", &ss, 0);
        json_stats(f, "restore_to_running", &sc, 0);
        json_stats(f, "restore_to_identity", &si, 0);
        json_stats(f, "restore_to_first_http", &sh, 0);
        json_stats(f, "concurrent_restore_to_first_http", &sx, 1);
        fprintf(f, "  },\n  \"concurrent_all_answering_ms\": %.0f,\n  \"mib\": {\n", all_ms);
        json_stats(f, "pss_per_vm", &sp, 0);
        json_stats(f, "rss_per_vm", &sr, 1);
        fprintf(f, "  },\n  \"ratio_boot_over_restore\": {\"to_running\": %.2f, "
                   "\"to_identity\": %.2f, \"to_first_http\": %.2f}",
                sb.median / sc.median, sb.median / si.median, sb.median / sh.median);
        if (iso_uid != 0) {
            fprintf(f, ",\n  \"isolated\": {\n");
            json_stats(f, "restore_to_running", &iso.cont, 0);
            json_stats(f, "restore_to_identity", &iso.ident, 0);
            json_stats(f, "restore_to_first_http", &iso.http, 0);
            json_stats(f, "concurrent_restore_to_first_http", &iso.conc, 0);
            json_stats(f, "pss_per_vm_mib", &iso.pss, 0);
            json_stats(f, "rss_per_vm_mib", &iso.rss, 1);
            fprintf(f, "  }");
        }
        fprintf(f, "\n}\n");
        fclose(f);
    }
    free(boot);
    free(snapms);
    return 0;
}
